//! security.istio.io → Envoy, with istiod's exact output (`shared/reference/security.md`):
//! PeerAuthentication ([`peer`]) decides the inbound chains' mutual TLS and, with auto mTLS,
//! the client side, over Istio's TLS contexts and the agent's SDS ([`tls`]);
//! AuthorizationPolicy → RBAC (+ ext_authz) and RequestAuthentication → `jwt_authn` (§3–§5).
//!
//! Everything here is a pure builder: policies and mesh config in, Envoy filters out. Which
//! policies apply to a workload is [`applicable`]; [`authz::http_filters`] /
//! [`authz::network_filters`] turn AuthorizationPolicies into the CUSTOM, AUDIT, DENY and ALLOW
//! filters of one HTTP or TCP filter chain; [`jwt::jwt_filter`] turns RequestAuthentications into
//! the `envoy.filters.http.jwt_authn` filter. Callers place them in the order of §5:
//!
//! ```text
//! HTTP: [CUSTOM rbac + ext_authz]* → jwt_authn → rbac AUDIT → rbac DENY → rbac ALLOW → … → router
//! TCP:  [CUSTOM rbac + ext_authz]*             → rbac AUDIT → rbac DENY → rbac ALLOW → tcp_proxy
//! ```
//!
//! (`authz::Built::into_http_filters` does that for HTTP.)
//!
//! What istiod logs and skips (a rule with an unknown `when` key, a bad CIDR or port, an invalid
//! CUSTOM provider, a bad `istio.io/dry-run` value) comes back as [`Diagnostic`]s next to the
//! filters; one bad rule never drops the other rules, exactly as in istiod.
//!
//! Wire-format note: several of these messages hold protobuf maps (`RBAC.policies`,
//! `JwtAuthentication.providers`), which prost keeps in `HashMap`s and encodes in iteration
//! order. The `Any`s built here encode map entries in key order instead (like
//! [`crate::resource::encode_canonical`] does for routes), so that equal inputs always give equal
//! bytes and hence equal resource versions.

pub(crate) mod authz;
mod ext_authz;
pub(crate) mod jwt;
mod matcher;
pub(crate) mod peer;
mod rule;
#[cfg(test)]
mod tests;
pub(crate) mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use envoy_types::pb::envoy::config::rbac::v3::Rbac as RbacRules;
use envoy_types::pb::google::protobuf::Any;
use mesh_model::security::WorkloadSelector;
use mesh_model::security::authorization_policy::AuthorizationPolicySpec;
use mesh_model::security::request_authentication::RequestAuthenticationSpec;
use mesh_model::{Config, Kind, Resource, Spec};
use prost::Message;

use crate::encoding as wire;
use crate::pb::type_url;

/// `envoy.filters.http.rbac`.
pub(crate) const HTTP_RBAC: &str = "envoy.filters.http.rbac";
/// `envoy.filters.network.rbac`.
pub(crate) const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
/// `envoy.filters.http.ext_authz`.
pub(crate) const HTTP_EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
/// `envoy.filters.network.ext_authz`.
pub(crate) const NETWORK_EXT_AUTHZ: &str = "envoy.filters.network.ext_authz";
/// `envoy.filters.http.jwt_authn` (also the dynamic-metadata namespace RBAC reads JWTs from).
pub(crate) const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
/// The key under [`JWT_AUTHN`] holding the verified payload (`payload_in_metadata`).
pub(crate) const JWT_PAYLOAD: &str = "payload";

// === selection ===

/// A security kind that selects workloads by `selector` (or attaches by `targetRef(s)`).
pub(crate) trait WorkloadPolicy: Spec {
    /// The typed resource, if `config` is of this kind.
    fn of(config: &Config) -> Option<&Resource<Self>>;
    /// `spec.selector`.
    fn selector(&self) -> Option<&WorkloadSelector>;
    /// Whether `spec.targetRef` or `spec.targetRefs` is set.
    fn has_target_refs(&self) -> bool;
    /// Whether istiod looks in the root namespace before the workload's own namespace. It does
    /// for AuthorizationPolicy (`ListAuthorizationPolicies`: `[root, ns]`) and not for
    /// RequestAuthentication (`getConfigsForWorkload`: `[ns, root]`).
    const ROOT_NAMESPACE_FIRST: bool;
}

impl WorkloadPolicy for AuthorizationPolicySpec {
    fn of(config: &Config) -> Option<&Resource<Self>> {
        match config {
            Config::AuthorizationPolicy(p) => Some(p),
            _ => None,
        }
    }
    fn selector(&self) -> Option<&WorkloadSelector> {
        self.selector.as_ref()
    }
    fn has_target_refs(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
    const ROOT_NAMESPACE_FIRST: bool = true;
}

impl WorkloadPolicy for RequestAuthenticationSpec {
    fn of(config: &Config) -> Option<&Resource<Self>> {
        match config {
            Config::RequestAuthentication(p) => Some(p),
            _ => None,
        }
    }
    fn selector(&self) -> Option<&WorkloadSelector> {
        self.selector.as_ref()
    }
    fn has_target_refs(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
    const ROOT_NAMESPACE_FIRST: bool = false;
}

/// The policies of kind `S` that apply to a sidecar (or ordinary gateway) workload in
/// `namespace` with `labels`, in istiod's order (§3.1, §4.1):
///
/// * only policies in the root namespace and in the workload's namespace are candidates;
/// * a policy with `targetRef`/`targetRefs` is ignored (those attach to Gateway API gateways and
///   waypoints, not to sidecars);
/// * otherwise it applies when its selector is absent or its `matchLabels` are a subset of
///   `labels` (so a root-namespace policy with a selector applies in every namespace);
/// * order: namespace by namespace (root first for AuthorizationPolicy, the workload's own first
///   for RequestAuthentication, see [`WorkloadPolicy::ROOT_NAMESPACE_FIRST`]), and within a
///   namespace by `creationTimestamp`, then name (istiod's `sortConfigByCreationTime`; a missing
///   timestamp sorts first, as Go's zero time does). Timestamps are compared as strings, which is
///   exact for the `YYYY-MM-DDThh:mm:ssZ` form the Kubernetes API server writes.
///
/// Configs of other kinds in `configs` are skipped. Workloads carrying the Gateway API label
/// `gateway.networking.k8s.io/gateway-name` follow other rules in istiod (targetRefs select
/// them); those are not covered here.
pub(crate) fn applicable<'a, S: WorkloadPolicy>(
    configs: &'a [Arc<Config>],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Resource<S>> {
    let order: &[&str] = if root_namespace == namespace {
        &[namespace]
    } else if S::ROOT_NAMESPACE_FIRST {
        &[root_namespace, namespace]
    } else {
        &[namespace, root_namespace]
    };
    let mut out = Vec::new();
    for ns in order {
        let mut found: Vec<&Resource<S>> = configs
            .iter()
            .filter_map(|c| S::of(c))
            .filter(|p| p.metadata.namespace() == *ns)
            .filter(|p| !p.spec.has_target_refs())
            .filter(|p| p.spec.selector().is_none_or(|s| s.matches(labels)))
            .collect();
        found.sort_by(|a, b| {
            (a.metadata.creation_timestamp.as_deref(), &a.metadata.name)
                .cmp(&(b.metadata.creation_timestamp.as_deref(), &b.metadata.name))
        });
        out.extend(found);
    }
    out
}

// === errors ===

/// Why istiod would skip (part of) a policy. Reported inside a [`Diagnostic`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// A `when` key that is not one of §3.4's attributes; the rule is skipped.
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// A `when` key of a known attribute with a malformed name part (`request.headers[x]`,
    /// `request.auth.claims[a][b]`, `experimental.envoy.filters.f[k]`).
    #[error("invalid key {key:?}: expecting {expected}")]
    InvalidKey {
        /// The key.
        key: String,
        /// The expected shape.
        expected: &'static str,
    },
    /// Not an IP address or CIDR block.
    #[error("invalid IP address or CIDR {0:?}")]
    InvalidCidr(String),
    /// Not a port number in 0..=65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// The `istio.io/dry-run` annotation is not a Go boolean; istiod treats the policy as
    /// enforced.
    #[error("invalid value {0:?}: not a boolean; the policy is enforced")]
    InvalidDryRun(String),
    /// A CUSTOM policy names a provider that `meshConfig.extensionProviders` does not define as
    /// an `envoyExtAuthzHttp`/`envoyExtAuthzGrpc` provider; its rules deny instead.
    #[error("extension provider {0:?} is not defined; its rules deny the request")]
    UnknownProvider(String),
    /// The CUSTOM provider is defined but invalid; its rules deny instead.
    #[error("extension provider {name:?} is invalid ({reason}); its rules deny the request")]
    InvalidProvider {
        /// The provider name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More than one CUSTOM provider applies to one workload, which istiod supports only with
    /// `PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS` (off by default); all CUSTOM rules deny.
    #[error(
        "more than one CUSTOM provider applies ({}); all CUSTOM rules deny the request",
        .0.join(", ")
    )]
    MultipleProviders(Vec<String>),
}

/// One problem found while building filters, located in the policy that has it.
///
/// Displays as `AuthorizationPolicy foo/httpbin: spec.rules[0].when[1].key: unknown key "x"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Diagnostic {
    /// The policy's kind.
    pub(crate) kind: Kind,
    /// The policy's namespace.
    pub(crate) namespace: String,
    /// The policy's name.
    pub(crate) name: String,
    /// The field path inside the resource, e.g. `spec.rules[0].when[1].key`.
    pub(crate) path: String,
    /// What is wrong.
    pub(crate) error: Error,
}

impl Diagnostic {
    /// A diagnostic about `policy` at `path`.
    pub(crate) fn new<S: Spec>(
        policy: &Resource<S>,
        path: impl Into<String>,
        error: Error,
    ) -> Self {
        Diagnostic {
            kind: S::KIND,
            namespace: policy.metadata.namespace().to_string(),
            name: policy.metadata.name.clone(),
            path: path.into(),
            error,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}: {}: {}",
            self.kind.name(),
            self.namespace,
            self.name,
            self.path,
            self.error
        )
    }
}

impl std::error::Error for Diagnostic {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

// === canonical encoding ===

/// Packs a message into `Any` whose nested `RBAC` fields (`rules` = 1, `shadow_rules` = 2 in both
/// the HTTP and the network filter) are encoded with their policies in name order. `split`
/// takes the two fields out of the message.
pub(crate) fn rbac_filter_any<M: Message + prost::Name>(
    mut m: M,
    split: impl FnOnce(&mut M) -> (Option<RbacRules>, Option<RbacRules>),
) -> Any {
    let (rules, shadow) = split(&mut m);
    let mut buf = m.encode_to_vec();
    for (tag, r) in [(1, rules), (2, shadow)] {
        if let Some(r) = r {
            wire::put_len(tag, r.encoded_len(), &mut buf);
            encode_rbac(r, &mut buf);
        }
    }
    Any {
        type_url: type_url::<M>(),
        value: buf,
    }
}

/// Appends `r` with its policies in name order: exactly `r.encoded_len()` bytes.
fn encode_rbac(mut r: RbacRules, buf: &mut Vec<u8>) {
    let policies: BTreeMap<_, _> = std::mem::take(&mut r.policies).into_iter().collect();
    buf.extend_from_slice(&r.encode_to_vec());
    encode_sorted_map(2, &policies, buf);
}

/// A `map<string, Message>` field in key order, entry by entry as prost writes them.
pub(crate) fn encode_sorted_map<V: Message + Default + PartialEq>(
    tag: u32,
    map: &BTreeMap<String, V>,
    buf: &mut Vec<u8>,
) {
    use prost::encoding::{btree_map, message, string};
    btree_map::encode(
        |t, k: &String, b: &mut Vec<u8>| string::encode(t, k, b),
        string::encoded_len,
        |t, v: &V, b: &mut Vec<u8>| message::encode(t, v, b),
        message::encoded_len,
        tag,
        map,
        buf,
    );
}
