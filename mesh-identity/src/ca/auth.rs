//! Who is asking the CA: pluggable authenticators that turn a caller's credentials into the
//! SPIFFE ID its certificate will carry.
//!
//! - [`JwtAuthenticator`]: Kubernetes service-account tokens (`Authorization: Bearer ...`),
//!   verified against a JWKS with issuer and audience checks; `sub:
//!   system:serviceaccount:NS:SA` becomes `spiffe://TD/ns/NS/sa/SA`.
//! - [`SvidAuthenticator`]: renewal over mTLS with a still-valid SVID from this CA.
//! - [`InsecureClaimAuthenticator`]: development only; believes whatever identity the caller
//!   claims. Never enabled by default.
//!
//! [`AnyOf`] lets the first authenticator that finds credentials decide (the CA's rule);
//! [`FirstSuccess`] takes the first that succeeds (istiod's rule for ADS callers, which
//! `mesh-control-plane` uses for its xDS streams).

use std::collections::BTreeMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::spiffe::{SpiffeId, TrustDomain};

/// What a caller presented.
#[derive(Debug, Default)]
pub struct Credentials<'a> {
    /// The bearer token of the `authorization` header, without `Bearer `.
    pub bearer: Option<&'a str>,
    /// The client certificate chain of the TLS connection, leaf first.
    pub peer_certificates: Option<&'a [CertificateDer<'static>]>,
    /// An identity claimed without proof ([`INSECURE_IDENTITY_HEADER`]); only
    /// [`InsecureClaimAuthenticator`] accepts it.
    pub claimed_identity: Option<&'a str>,
}

/// The request header in which an agent in insecure development mode claims its identity.
pub const INSECURE_IDENTITY_HEADER: &str = "x-mesh-insecure-identity";

/// Why a caller is not authenticated. The token itself never appears here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The caller presented nothing this authenticator understands.
    #[error("no credentials")]
    NoCredentials,
    /// The credentials are invalid (bad signature, expired, wrong issuer or audience, ...).
    #[error("invalid credentials: {0}")]
    Invalid(String),
}

/// Turns credentials into an identity.
pub trait Authenticator: Send + Sync + 'static {
    /// The authenticated identity, or why not.
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError>;
}

/// Tries authenticators in order; the first that finds credentials it understands decides.
#[derive(Default)]
pub struct AnyOf(pub Vec<Box<dyn Authenticator>>);

impl Authenticator for AnyOf {
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        for a in &self.0 {
            match a.authenticate(credentials) {
                Err(AuthError::NoCredentials) => continue,
                decided => return decided,
            }
        }
        Err(AuthError::NoCredentials)
    }
}

/// Tries every authenticator in order and takes the first identity any of them authenticates,
/// as istiod's `authenticationManager` does for ADS callers: an agent that presents both an
/// SVID and a token is let in by whichever is valid. When none succeeds the error is
/// [`AuthError::NoCredentials`] if none found credentials, else [`AuthError::Invalid`] with
/// every reason (`name: reason; ...`).
#[derive(Default)]
pub struct FirstSuccess(pub Vec<(&'static str, Box<dyn Authenticator>)>);

impl Authenticator for FirstSuccess {
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        let mut reasons = Vec::new();
        for (name, a) in &self.0 {
            match a.authenticate(credentials) {
                Ok(id) => return Ok(id),
                Err(AuthError::NoCredentials) => {}
                Err(AuthError::Invalid(why)) => reasons.push(format!("{name}: {why}")),
            }
        }
        if reasons.is_empty() {
            Err(AuthError::NoCredentials)
        } else {
            Err(AuthError::Invalid(reasons.join("; ")))
        }
    }
}

/// Kubernetes service-account tokens checked against a JWKS.
pub struct JwtAuthenticator {
    keys: Vec<(Option<String>, DecodingKey, Algorithm)>,
    issuer: String,
    audience: String,
    trust_domain: TrustDomain,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Istio's audience for tokens sent to the CA.
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

impl JwtAuthenticator {
    /// From a JWKS document (`{"keys": [...]}`), the issuer (`iss`) tokens must carry, and the
    /// trust domain of the identities. The audience is `istio-ca`.
    pub fn from_jwks(
        jwks_json: &str,
        issuer: impl Into<String>,
        trust_domain: TrustDomain,
    ) -> Result<JwtAuthenticator, AuthError> {
        let set: JwkSet = serde_json::from_str(jwks_json)
            .map_err(|e| AuthError::Invalid(format!("JWKS does not parse: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| AuthError::Invalid(format!("unusable JWK: {e}")))?;
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => continue,
            };
            keys.push((jwk.common.key_id.clone(), key, alg));
        }
        if keys.is_empty() {
            return Err(AuthError::Invalid("JWKS has no RSA or EC key".into()));
        }
        Ok(JwtAuthenticator {
            keys,
            issuer: issuer.into(),
            audience: ISTIO_CA_AUDIENCE.into(),
            trust_domain,
        })
    }

    /// Overrides the required audience.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "kubernetes.io", default)]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(serde::Deserialize)]
struct KubernetesClaims {
    namespace: Option<String>,
    serviceaccount: Option<BTreeMap<String, serde_json::Value>>,
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        let Some(token) = credentials.bearer else {
            return Err(AuthError::NoCredentials);
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("token: {e}")))?;
        let mut last = AuthError::Invalid("no key matches the token".into());
        for (kid, key, alg) in &self.keys {
            if header.kid.is_some() && kid.is_some() && &header.kid != kid {
                continue;
            }
            if header.alg != *alg {
                continue;
            }
            let mut v = Validation::new(*alg);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => return self.identity(&data.claims),
                Err(e) => last = AuthError::Invalid(format!("token: {e}")),
            }
        }
        Err(last)
    }
}

impl JwtAuthenticator {
    fn identity(&self, claims: &Claims) -> Result<SpiffeId, AuthError> {
        let rest = claims
            .sub
            .strip_prefix("system:serviceaccount:")
            .ok_or_else(|| AuthError::Invalid("subject is not a service account".into()))?;
        let (ns, sa) = rest
            .split_once(':')
            .ok_or_else(|| AuthError::Invalid("subject is not NAMESPACE:NAME".into()))?;
        if let Some(k) = &claims.kubernetes {
            let sa_claim = k
                .serviceaccount
                .as_ref()
                .and_then(|m| m.get("name"))
                .and_then(|v| v.as_str());
            if k.namespace.as_deref().is_some_and(|n| n != ns) || sa_claim.is_some_and(|n| n != sa)
            {
                return Err(AuthError::Invalid(
                    "kubernetes.io claims disagree with the subject".into(),
                ));
            }
        }
        SpiffeId::istio(self.trust_domain.clone(), ns, sa)
            .map_err(|e| AuthError::Invalid(format!("subject: {e}")))
    }
}

/// Renewal over mTLS: a client certificate that is a valid SVID from trusted roots.
#[derive(Debug)]
pub struct SvidAuthenticator {
    roots: Roots,
    trust_domain: TrustDomain,
}

#[derive(Debug)]
enum Roots {
    Fixed(Vec<CertificateDer<'static>>),
    /// The CA's trust bundle as it is at each request (root rotation without restarts).
    Ca(std::sync::Arc<crate::ca::CertificateAuthority>),
}

impl SvidAuthenticator {
    /// Trusting `roots` (DER) for identities in `trust_domain`.
    pub fn new(roots: Vec<CertificateDer<'static>>, trust_domain: TrustDomain) -> Self {
        SvidAuthenticator {
            roots: Roots::Fixed(roots),
            trust_domain,
        }
    }

    /// Trusting the CA's current trust bundle, read at every request, so that a root added by
    /// [`add_root`](crate::ca::CertificateAuthority::add_root) is accepted at once and a
    /// retired one no longer is; identities in the CA's trust domain.
    pub fn from_ca(ca: std::sync::Arc<crate::ca::CertificateAuthority>) -> Self {
        SvidAuthenticator {
            trust_domain: ca.config().trust_domain.clone(),
            roots: Roots::Ca(ca),
        }
    }
}

impl Authenticator for SvidAuthenticator {
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        use rustls_pki_types::pem::PemObject;
        let Some(chain) = credentials.peer_certificates.filter(|c| !c.is_empty()) else {
            return Err(AuthError::NoCredentials);
        };
        let live;
        let roots = match &self.roots {
            Roots::Fixed(r) => r.as_slice(),
            Roots::Ca(ca) => {
                live = ca
                    .roots()
                    .iter()
                    .filter_map(|p| CertificateDer::from_pem_slice(p.as_bytes()).ok())
                    .collect::<Vec<_>>();
                live.as_slice()
            }
        };
        crate::svid::verify(
            chain,
            roots,
            UnixTime::now(),
            true,
            Some(&self.trust_domain),
        )
        .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

/// **Insecure; for development only.** Believes the identity a caller claims in the
/// [`INSECURE_IDENTITY_HEADER`] header, as long as it is a SPIFFE ID of the trust domain: anyone
/// who can reach the CA gets a certificate for any workload. Every issuance is logged as a
/// warning. Put it last in an [`AnyOf`] so that real credentials decide first.
#[derive(Debug)]
pub struct InsecureClaimAuthenticator {
    trust_domain: TrustDomain,
}

impl InsecureClaimAuthenticator {
    /// Believing claims of identities in `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        InsecureClaimAuthenticator { trust_domain }
    }
}

impl Authenticator for InsecureClaimAuthenticator {
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        let Some(claim) = credentials.claimed_identity else {
            return Err(AuthError::NoCredentials);
        };
        let id: SpiffeId = claim
            .parse()
            .map_err(|e| AuthError::Invalid(format!("claimed identity: {e}")))?;
        if id.trust_domain() != &self.trust_domain {
            return Err(AuthError::Invalid(format!(
                "claimed identity {id} is not in trust domain {}",
                self.trust_domain
            )));
        }
        tracing::warn!("INSECURE: issuing for the unproven claim {id}");
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<&'static str, AuthError>);

    impl Authenticator for Fixed {
        fn authenticate(&self, _: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
            self.0.clone().map(|id| id.parse().unwrap())
        }
    }

    #[test]
    fn the_first_success_wins_and_failures_are_all_reported() {
        let any = |v: Vec<(&'static str, Result<&'static str, AuthError>)>| {
            FirstSuccess(
                v.into_iter()
                    .map(|(n, r)| (n, Box::new(Fixed(r)) as Box<dyn Authenticator>))
                    .collect(),
            )
            .authenticate(&Credentials::default())
        };
        let id = "spiffe://cluster.local/ns/a/sa/b";
        // An invalid token does not hide a valid SVID (AnyOf would stop at the token).
        assert_eq!(
            any(vec![
                ("token", Err(AuthError::Invalid("expired".into()))),
                ("svid", Ok(id)),
            ])
            .unwrap()
            .to_string(),
            id
        );
        assert_eq!(
            any(vec![
                ("token", Err(AuthError::Invalid("expired".into()))),
                ("svid", Err(AuthError::NoCredentials)),
                ("other", Err(AuthError::Invalid("bad".into()))),
            ]),
            Err(AuthError::Invalid("token: expired; other: bad".into()))
        );
        assert_eq!(
            any(vec![("token", Err(AuthError::NoCredentials))]),
            Err(AuthError::NoCredentials)
        );
        assert_eq!(any(vec![]), Err(AuthError::NoCredentials));
    }

    #[test]
    fn insecure_claims_need_the_trust_domain_and_a_valid_id() {
        let td = TrustDomain::new("cluster.local").unwrap();
        let auth = InsecureClaimAuthenticator::new(td);
        let claim = |c: &'static str| Credentials {
            claimed_identity: Some(c),
            ..Default::default()
        };
        assert_eq!(
            auth.authenticate(&claim("spiffe://cluster.local/ns/a/sa/b"))
                .unwrap()
                .to_string(),
            "spiffe://cluster.local/ns/a/sa/b"
        );
        assert!(matches!(
            auth.authenticate(&claim("spiffe://other.td/ns/a/sa/b")),
            Err(AuthError::Invalid(m)) if m.contains("not in trust domain")
        ));
        assert!(matches!(
            auth.authenticate(&claim("https://cluster.local/x")),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(
            auth.authenticate(&Credentials::default()),
            Err(AuthError::NoCredentials)
        );
        // A token alone is not a claim.
        let token = Credentials {
            bearer: Some("x"),
            ..Default::default()
        };
        assert_eq!(auth.authenticate(&token), Err(AuthError::NoCredentials));
    }
}
