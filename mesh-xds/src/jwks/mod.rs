//! The public keys of RequestAuthentication rules that do not carry them inline, as istiod
//! resolves them (`pilot/pkg/model/jwks_resolver.go`, `PILOT_JWT_ENABLE_REMOTE_JWKS=false`):
//! the control plane fetches each rule's `jwksUri`, or, for a rule with an `issuer` and no
//! `jwksUri`, discovers it from `<issuer>/.well-known/openid-configuration`, and inlines the
//! document in the `jwt_authn` provider (`local_jwks`). Envoy itself never fetches.
//!
//! This module is always there and pure: [`JwksSource`] says where a rule's keys come from
//! and under which key translation looks its document up ([`PushContext::with_jwks`],
//! `ViewCache::set_jwks`), and [`sources`] lists every source of a config snapshot with the
//! RequestAuthentication fields that use it. A rule whose document is not there fails closed:
//! every token is rejected (401), token-less requests pass, as with istiod's fake JWKS.
//!
//! The `jwks` feature adds [`JwksResolver`] (module [`resolver`]), which fetches them over
//! HTTP and HTTPS, refreshes them, and feeds a `ViewCache`.
//!
//! ```
//! use mesh_model::{ConfigStore, parse_str};
//! use mesh_xds::jwks::{JwksSource, sources};
//!
//! let store = ConfigStore::new();
//! store.apply_all(parse_str(r#"
//! apiVersion: security.istio.io/v1
//! kind: RequestAuthentication
//! metadata: {name: jwt, namespace: shop}
//! spec:
//!   jwtRules:
//!   - issuer: https://issuer.example
//!     jwksUri: https://issuer.example/keys
//!   - issuer: https://accounts.example
//! "#, "ra.yaml"));
//! let found = sources(&store.snapshot());
//! let uri = JwksSource::Uri("https://issuer.example/keys".into());
//! let discovered = JwksSource::Discovery { issuer: "https://accounts.example".into() };
//! assert_eq!(found[&uri], ["RequestAuthentication shop/jwt jwtRules[0].jwksUri".to_string()].into());
//! assert_eq!(found[&discovered], ["RequestAuthentication shop/jwt jwtRules[1].issuer".to_string()].into());
//! assert_eq!(discovered.key(), "https://accounts.example/.well-known/openid-configuration");
//! ```
//!
//! [`PushContext::with_jwks`]: crate::PushContext::with_jwks

#[cfg(feature = "jwks")]
pub mod fetch;
#[cfg(feature = "jwks")]
pub mod resolver;

use std::collections::{BTreeMap, BTreeSet};

use mesh_model::security::request_authentication::JwtRule;
use mesh_model::store::Snapshot;
use mesh_model::{Config, Kind};

#[cfg(feature = "jwks")]
pub use resolver::{JwksConfig, JwksResolver};

/// OpenID Connect Discovery's path, appended to an issuer.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";

/// Where the keys of a JWT rule without inline `jwks` come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JwksSource {
    /// The rule's `jwksUri`.
    Uri(String),
    /// No `jwksUri`: the `jwks_uri` of the issuer's OpenID configuration
    /// (`<issuer>/.well-known/openid-configuration`), as istiod resolves it.
    Discovery {
        /// The rule's `issuer`.
        issuer: String,
    },
}

impl JwksSource {
    /// Where `rule`'s keys come from: `None` when they are inline (`jwks`), or when the rule
    /// has neither a `jwksUri` nor an `issuer` (validation refuses such rules).
    pub fn of(rule: &JwtRule) -> Option<JwksSource> {
        if rule.jwks.as_deref().is_some_and(|j| !j.is_empty()) {
            return None;
        }
        match rule.jwks_uri.as_deref().filter(|u| !u.is_empty()) {
            Some(uri) => Some(JwksSource::Uri(uri.to_string())),
            None if !rule.issuer.is_empty() => Some(JwksSource::Discovery {
                issuer: rule.issuer.clone(),
            }),
            None => None,
        }
    }

    /// The key of this source's document in the map given to
    /// [`PushContext::with_jwks`](crate::PushContext::with_jwks): the `jwksUri` itself, or, for
    /// discovery, the URL of the issuer's OpenID configuration (where the keys are found from).
    pub fn key(&self) -> String {
        match self {
            JwksSource::Uri(uri) => uri.clone(),
            JwksSource::Discovery { issuer } => discovery_url(issuer),
        }
    }

    /// The field that names this source, for messages (`jwksUri` or `issuer`).
    pub fn field(&self) -> &'static str {
        match self {
            JwksSource::Uri(_) => "jwksUri",
            JwksSource::Discovery { .. } => "issuer",
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Uri(uri) => f.write_str(uri),
            JwksSource::Discovery { issuer } => {
                write!(
                    f,
                    "{} (OpenID discovery of {issuer})",
                    discovery_url(issuer)
                )
            }
        }
    }
}

/// The OpenID configuration URL of `issuer`: `<issuer>/.well-known/openid-configuration`,
/// without doubling a trailing `/` (OpenID Connect Discovery §4; istiod concatenates as is).
pub fn discovery_url(issuer: &str) -> String {
    format!("{}{OPENID_CONFIGURATION}", issuer.trim_end_matches('/'))
}

/// Every JWKS source of the RequestAuthentications in `snapshot`, each with the fields that
/// use it (`RequestAuthentication NS/NAME jwtRules[i].jwksUri` or `... .issuer`).
pub fn sources(snapshot: &Snapshot) -> BTreeMap<JwksSource, BTreeSet<String>> {
    let mut out: BTreeMap<JwksSource, BTreeSet<String>> = BTreeMap::new();
    for config in snapshot.of_kind(Kind::RequestAuthentication) {
        let Config::RequestAuthentication(ra) = config.as_ref() else {
            continue;
        };
        for (i, rule) in ra.spec.jwt_rules.iter().enumerate() {
            if let Some(source) = JwksSource::of(rule) {
                let user = format!(
                    "RequestAuthentication {}/{} jwtRules[{i}].{}",
                    ra.metadata.namespace(),
                    ra.metadata.name,
                    source.field()
                );
                out.entry(source).or_default().insert(user);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(issuer: &str, uri: Option<&str>, jwks: Option<&str>) -> JwtRule {
        JwtRule {
            issuer: issuer.into(),
            jwks_uri: uri.map(Into::into),
            jwks: jwks.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn inline_keys_need_no_source_and_a_uri_wins_over_discovery() {
        assert_eq!(
            JwksSource::of(&rule("https://i", Some("https://k"), Some("{}"))),
            None
        );
        assert_eq!(
            JwksSource::of(&rule("https://i", Some("https://k"), Some(""))),
            Some(JwksSource::Uri("https://k".into()))
        );
        assert_eq!(
            JwksSource::of(&rule("https://i", Some(""), None)),
            Some(JwksSource::Discovery {
                issuer: "https://i".into()
            })
        );
        assert_eq!(JwksSource::of(&rule("", None, None)), None);
    }

    #[test]
    fn discovery_urls_do_not_double_the_slash() {
        assert_eq!(
            discovery_url("https://a.example/"),
            "https://a.example/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://a.example/tenant"),
            "https://a.example/tenant/.well-known/openid-configuration"
        );
    }
}
