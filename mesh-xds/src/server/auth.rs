//! Who may open an ADS stream: a pluggable authentication hook, run once per stream on its first
//! request (the one that carries the node), and istiod's identity check after it.
//!
//! istiod (`pilot/pkg/xds/auth.go`, `pkg/security/authentication.go`) authenticates every ADS
//! stream on its TLS port with its authenticators (the client certificate, a Kubernetes
//! service-account token in `authorization: Bearer`); a caller none of them accepts gets
//! `UNAUTHENTICATED`. With identities in hand it checks that the node acts only for a namespace
//! (and service account) it has an identity for (`checkConnectionIdentity`,
//! `PILOT_ENABLE_XDS_IDENTITY_CHECK`, on by default); a node that claims another gets
//! `PERMISSION_DENIED`. Plaintext streams (port 15010) are not authenticated at all.
//!
//! Here the same happens when the server has an [`Authenticate`] hook
//! ([`AdsServer::with_authenticator`](crate::server::AdsServer::with_authenticator)):
//!
//! 1. The hook gets the [`Caller`]: request metadata, the TLS client certificates, the peer's
//!    address, and the node of the first request. It returns the caller's identities (SPIFFE
//!    IDs), or an [`AuthError`], which ends the stream with `UNAUTHENTICATED`. An empty list
//!    lets the caller in without identity (what `()` does, and what a hook should answer for
//!    plaintext development ports).
//! 2. [`check_identity`] then requires one identity whose namespace is the namespace the node's
//!    config is translated for (and whose service account is the node's `SERVICE_ACCOUNT`
//!    metadata, when it sends one); otherwise the stream ends with `PERMISSION_DENIED` and a
//!    message naming the node, what it claims, and the identities it has.
//!
//! A refused stream is never registered in [`Connections`](crate::server::Connections) and gets
//! no snapshot; other streams are not affected. Without a hook nothing is checked (today's
//! behaviour, and istiod's on its plaintext port).
//!
//! ```
//! use mesh_xds::server::auth::{AuthError, Caller};
//!
//! // Callers must send a token; a real hook would verify it and map it to an identity.
//! let hook = |caller: &Caller<'_>| match caller.bearer_token() {
//!     Some("secret") => Ok(vec!["spiffe://cluster.local/ns/shop/sa/default".to_string()]),
//!     Some(_) => Err(AuthError::Invalid("unknown token".into())),
//!     None => Err(AuthError::NoCredentials("no token and no client certificate".into())),
//! };
//! # fn takes(_: impl mesh_xds::server::auth::Authenticate) {}
//! # takes(hook);
//! ```

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use rustls_pki_types::CertificateDer;
use tonic::codegen::http::{Extensions, HeaderMap};

/// What an ADS caller presented, and the node its first request claims to be.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Caller<'a> {
    /// The request headers (gRPC metadata: `authorization`, ...).
    pub metadata: &'a HeaderMap,
    /// The request extensions, as tonic's transport (or a server in front of it) left them:
    /// connection info, or client certificates of a TLS layer of the caller's own.
    pub extensions: &'a Extensions,
    /// The client certificate chain of a TLS connection served by tonic, leaf first, as the
    /// TLS handshake verified it (`None` on plaintext, when the client sent none, or without
    /// this crate's `tls` feature).
    pub peer_certificates: Option<&'a [CertificateDer<'static>]>,
    /// Whether the connection is TLS (always false without the `tls` feature).
    pub tls: bool,
    /// The peer's address, when the transport knows it.
    pub remote_addr: Option<SocketAddr>,
    /// The node of the first request.
    pub node: &'a Node,
}

impl<'a> Caller<'a> {
    /// The token of an `authorization: Bearer TOKEN` header, if there is one.
    pub fn bearer_token(&self) -> Option<&'a str> {
        self.metadata
            .get_all("authorization")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// Why a caller is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The caller presented nothing the hook accepts as credentials (`UNAUTHENTICATED`).
    #[error("no credentials: {0}")]
    NoCredentials(String),
    /// The caller's credentials are not valid: bad signature, expired, untrusted root, ...
    /// (`UNAUTHENTICATED`). Never carries the credential itself.
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// The caller is authenticated, but none of its identities may act as the node it claims
    /// to be (`PERMISSION_DENIED`).
    #[error(
        "node {node:?} claims namespace {namespace:?}{} but its identities are {identities:?}",
        service_account.as_ref().map(|sa| format!(" and service account {sa:?}")).unwrap_or_default()
    )]
    IdentityMismatch {
        /// The node's id.
        node: String,
        /// The namespace the node's config is translated for.
        namespace: String,
        /// The node's `SERVICE_ACCOUNT` metadata, when it sends one.
        service_account: Option<String>,
        /// The caller's identities.
        identities: Vec<String>,
    },
}

impl AuthError {
    /// The gRPC status code istiod answers with: `UNAUTHENTICATED` for missing or invalid
    /// credentials, `PERMISSION_DENIED` for an identity that does not match the node.
    pub fn code(&self) -> tonic::Code {
        match self {
            AuthError::NoCredentials(_) | AuthError::Invalid(_) => tonic::Code::Unauthenticated,
            AuthError::IdentityMismatch { .. } => tonic::Code::PermissionDenied,
        }
    }
}

/// Authenticates ADS callers. Implemented for closures `Fn(&Caller) -> Result<Vec<String>,
/// AuthError>` and for `()` (everyone in, without identity).
pub trait Authenticate: Send + Sync + 'static {
    /// The caller's identities (SPIFFE IDs such as `spiffe://cluster.local/ns/NS/sa/SA`); an
    /// empty list lets the caller in without identity (no [`check_identity`]); an error refuses
    /// it with `UNAUTHENTICATED`.
    fn authenticate(&self, caller: &Caller<'_>) -> Result<Vec<String>, AuthError>;
}

impl<F> Authenticate for F
where
    F: Fn(&Caller<'_>) -> Result<Vec<String>, AuthError> + Send + Sync + 'static,
{
    fn authenticate(&self, caller: &Caller<'_>) -> Result<Vec<String>, AuthError> {
        self(caller)
    }
}

impl Authenticate for () {
    fn authenticate(&self, _caller: &Caller<'_>) -> Result<Vec<String>, AuthError> {
        Ok(Vec::new())
    }
}

/// The node's `SERVICE_ACCOUNT` metadata (Istio's `ISTIO_META_SERVICE_ACCOUNT`), if non-empty.
fn service_account(node: &Node) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let v = node.metadata.as_ref()?.fields.get("SERVICE_ACCOUNT")?;
    match &v.kind {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// `(namespace, service account)` of an Istio SPIFFE ID `spiffe://TD/ns/NS/sa/SA`.
fn istio_identity(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/');
    let (_td, ns_seg, ns, sa_seg, sa) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (parts.next().is_none() && ns_seg == "ns" && sa_seg == "sa").then_some((ns, sa))
}

/// istiod's `checkConnectionIdentity`: the first of `identities` that is an Istio SPIFFE ID of
/// the namespace the node's config is translated for ([`Proxy::from_node`]'s namespace:
/// `NAMESPACE` metadata, else from the node id `TYPE~IP~POD.NS~NS.svc.DOMAIN`, else
/// `default`) and, when the node sends `SERVICE_ACCOUNT` metadata, of that service account.
/// Other identities (not SPIFFE, or not Istio's `ns/NS/sa/SA` form) never match.
///
/// Unlike istiod, a node that names no namespace is checked against `default`, the namespace
/// it is then served as (istiod skips the check when it knows no namespace).
///
/// [`Proxy::from_node`]: crate::Proxy::from_node
///
/// ```
/// use envoy_types::pb::envoy::config::core::v3::Node;
/// use mesh_xds::server::auth::check_identity;
///
/// let node = Node { id: "sidecar~10.0.0.1~app-1.a~a.svc.cluster.local".into(), ..Default::default() };
/// let a = "spiffe://cluster.local/ns/a/sa/app".to_string();
/// let b = "spiffe://cluster.local/ns/b/sa/app".to_string();
/// assert_eq!(check_identity(&node, &[b.clone(), a.clone()]).unwrap(), a);
/// let err = check_identity(&node, &[b]).unwrap_err();
/// assert_eq!(err.code(), tonic::Code::PermissionDenied);
/// assert!(err.to_string().contains("claims namespace \"a\""), "{err}");
/// ```
pub fn check_identity(node: &Node, identities: &[String]) -> Result<String, AuthError> {
    let namespace = crate::Proxy::from_node(node).namespace;
    let sa = service_account(node);
    identities
        .iter()
        .find(|id| {
            istio_identity(id).is_some_and(|(ns, s)| {
                ns == namespace && sa.as_deref().is_none_or(|want| want == s)
            })
        })
        .cloned()
        .ok_or_else(|| AuthError::IdentityMismatch {
            node: node.id.clone(),
            namespace,
            service_account: sa,
            identities: identities.to_vec(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

    fn node(id: &str, meta: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            metadata: Some(Struct {
                fields: meta
                    .iter()
                    .map(|(k, v)| {
                        (
                            (*k).to_string(),
                            Value {
                                kind: Some(Kind::StringValue((*v).to_string())),
                            },
                        )
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    }

    const ID: &str = "sidecar~10.0.0.1~app-1.a~a.svc.cluster.local";

    #[test]
    fn the_namespace_comes_from_metadata_then_the_node_id() {
        let a = vec!["spiffe://cluster.local/ns/a/sa/app".to_string()];
        assert!(check_identity(&node(ID, &[]), &a).is_ok());
        assert!(check_identity(&node(ID, &[("NAMESPACE", "a")]), &a).is_ok());
        // The metadata wins over the id: a node claiming b with an identity in a is refused.
        let err = check_identity(&node(ID, &[("NAMESPACE", "b")]), &a).unwrap_err();
        assert_eq!(
            err,
            AuthError::IdentityMismatch {
                node: ID.into(),
                namespace: "b".into(),
                service_account: None,
                identities: a.clone(),
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "node \"{ID}\" claims namespace \"b\" but its identities are [\"spiffe://cluster.local/ns/a/sa/app\"]"
            )
        );
        // No namespace anywhere: served (and checked) as `default`.
        assert!(check_identity(&node("anything", &[]), &a).is_err());
    }

    #[test]
    fn a_service_account_in_the_metadata_must_match_too() {
        let n = node(ID, &[("NAMESPACE", "a"), ("SERVICE_ACCOUNT", "app")]);
        let ok = "spiffe://cluster.local/ns/a/sa/app".to_string();
        let other = "spiffe://cluster.local/ns/a/sa/other".to_string();
        assert_eq!(check_identity(&n, &[other.clone(), ok.clone()]), Ok(ok));
        let err = check_identity(&n, std::slice::from_ref(&other)).unwrap_err();
        assert!(err.to_string().contains("service account \"app\""), "{err}");
    }

    #[test]
    fn only_istio_spiffe_ids_match() {
        let n = node(ID, &[]);
        for id in [
            "a",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/app/extra",
            "spiffe://cluster.local/namespace/a/sa/app",
            "https://cluster.local/ns/a/sa/app",
        ] {
            assert!(check_identity(&n, &[id.to_string()]).is_err(), "{id}");
        }
        assert!(check_identity(&n, &[]).is_err());
    }

    #[test]
    fn bearer_tokens_are_read_from_authorization() {
        let n = node(ID, &[]);
        let mut headers = HeaderMap::new();
        let ext = Extensions::new();
        let caller = |h: &HeaderMap| {
            Caller {
                metadata: h,
                extensions: &ext,
                peer_certificates: None,
                tls: false,
                remote_addr: None,
                node: &n,
            }
            .bearer_token()
            .map(str::to_string)
        };
        assert_eq!(caller(&headers), None);
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(caller(&headers), None);
        headers.append("authorization", "Bearer tok".parse().unwrap());
        assert_eq!(caller(&headers).as_deref(), Some("tok"));
        let mut empty = HeaderMap::new();
        empty.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(caller(&empty), None);
    }

    #[test]
    fn codes_follow_istiod() {
        assert_eq!(
            AuthError::NoCredentials(String::new()).code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            AuthError::Invalid(String::new()).code(),
            tonic::Code::Unauthenticated
        );
    }

    fn _obj_safe(_: &dyn Authenticate) {}
}
