//! RequestAuthentication → `envoy.filters.http.jwt_authn`, as istiod builds it in its default
//! JWKS mode (`PILOT_JWT_ENABLE_REMOTE_JWKS=false`: keys inlined), reference §4
//! (`pilot/pkg/security/authn/policy_applier.go convertToEnvoyJwtConfig`).
//!
//! The filter validates a token when one is present and lets token-less requests through;
//! requiring a token is AuthorizationPolicy's job (`requestPrincipals: ["*"]`). Verified
//! payloads land in dynamic metadata `envoy.filters.http.jwt_authn` → `payload`, where the RBAC
//! filters of [`super::authz`] read them.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RequirementRule, jwt_provider, jwt_requirement,
    requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Empty};
use mesh_model::security::request_authentication::{JwtRule, RequestAuthentication};
use prost::Message;

use super::{JWT_AUTHN, JWT_PAYLOAD, encode_sorted_map};
use crate::pb::type_url;

/// The JWKS used when a rule's keys cannot be had (no inline `jwks`, and the `jwks` callback of
/// [`jwt_filter`] returns nothing): a well-formed JWKS holding one RSA-2048 public key whose
/// private key nobody has, so every token fails verification (401) while token-less requests
/// still pass. This is what istiod ≥ 1.30 does with its own `PublicOnlyJwks`.
///
/// The key was made once for this crate with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out k.pem`; `n` is the
/// base64url (unpadded) big-endian modulus from `openssl rsa -in k.pem -noout -modulus`, `e` is
/// 65537, and `k.pem` was deleted right after. It differs from istiod's key, so a byte-for-byte
/// comparison with istiod's output differs in this one string.
pub(crate) const PUBLIC_ONLY_JWKS: &str = concat!(
    r#"{"keys":[{"kty":"RSA","e":"AQAB","n":""#,
    "qq7F6jrUj0b7AzbrBxALh8RmQ7N2G8g4RDupxMA3sC5bjsMt62bE0ltY3C13zP9M19FFJTAawkNSwmoXj-dECNN2U2W6",
    "NPsi68Okjg91hapLvjhsXfC_ZiqLtcsHFyAFLtjMr-H2tWygs91lBEG2LyeplV_pjITYJrrzsHBcueH_Rz1uqLXnRwUh",
    "v7iPRclJjBIpjDNeu7bfEsq9R8cLErxQoCGywMFK3cTXbf9cClwMXNKCwkBIxDFVQ0NMluAGKaOWNIzL0fBnypwP3yV0",
    "YURGpEmwL9csm1QmAjFYLz6jCt4IP4BpSSYb0ynWJX66PuL2fOl-g-xW8V_aWDHekQ",
    r#""}]}"#,
);

/// Claims whose string values are space-separated lists, always (istiod adds these to
/// `spaceDelimitedClaims`).
const DEFAULT_SPACE_DELIMITED: [&str; 2] = ["permission", "scope"];

/// The `jwt_authn` filter for the RequestAuthentications that apply to a workload (in
/// [`super::applicable`] order), or `None` when they have no JWT rules.
///
/// * All `jwtRules` are concatenated, stably sorted by issuer (not deduplicated) and named
///   `origins-<i>`.
/// * `gateway` sets `clear_route_cache` on every provider, so that routes can match on claims.
/// * Keys: the rule's inline `jwks` when set; else whatever `jwks` returns for the rule (the
///   caller fetches `jwksUri`, or discovers it from `<issuer>/.well-known/openid-configuration`,
///   as istiod does); else [`PUBLIC_ONLY_JWKS`] (fail closed).
/// * One rule for all paths: a token, if present, must be valid for one provider
///   (`requires_any [origins-0, allow_missing]`; with several providers
///   `requires_any [origins-0, …, requires_all [requires_any [origins-k, allow_missing]…]]`),
///   and CORS preflights bypass the check.
pub(crate) fn jwt_filter(
    policies: &[&RequestAuthentication],
    gateway: bool,
    jwks: &dyn Fn(&JwtRule) -> Option<String>,
) -> Option<HttpFilter> {
    let mut rules: Vec<&JwtRule> = policies
        .iter()
        .flat_map(|p| p.spec.jwt_rules.iter())
        .collect();
    if rules.is_empty() {
        return None;
    }
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));

    let mut providers = BTreeMap::new();
    let mut each = Vec::new();
    let mut any_of = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(name.clone(), provider(rule, gateway, jwks));
        each.push(requires_any(vec![
            provider_name(&name),
            JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
            },
        ]));
        any_of.push(provider_name(&name));
    }
    let requires = if each.len() == 1 {
        each.remove(0)
    } else {
        // The outer alternatives let a token through when providers share its location (the
        // inner AND would then fail on the provider the token is not for).
        any_of.push(JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::RequiresAll(
                JwtRequirementAndList { requirements: each },
            )),
        });
        requires_any(any_of)
    };
    let config = JwtAuthentication {
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    };
    Some(HttpFilter {
        name: JWT_AUTHN.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(jwt_any(
            config, &providers,
        ))),
        ..Default::default()
    })
}

/// One `origins-<i>` provider.
fn provider(
    rule: &JwtRule,
    gateway: bool,
    jwks: &dyn Fn(&JwtRule) -> Option<String>,
) -> JwtProvider {
    let keys = rule
        .jwks
        .clone()
        .filter(|k| !k.is_empty())
        .or_else(|| jwks(rule))
        .unwrap_or_else(|| PUBLIC_ONLY_JWKS.to_string());
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token.unwrap_or(false),
        forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
        payload_in_metadata: JWT_PAYLOAD.into(),
        normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
            space_delimited_claims: space_delimited_claims(&rule.space_delimited_claims),
        }),
        clear_route_cache: gateway,
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone().unwrap_or_default(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(keys)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `[permission, scope]`, or the sorted union with the rule's own (istiod's
/// `buildSpaceDelimitedClaims`).
fn space_delimited_claims(own: &[String]) -> Vec<String> {
    let mut all: Vec<String> = own
        .iter()
        .cloned()
        .chain(DEFAULT_SPACE_DELIMITED.iter().map(|c| c.to_string()))
        .collect();
    if !own.is_empty() {
        all.sort();
        all.dedup();
    }
    all
}

fn provider_name(name: &str) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.into())),
    }
}

fn requires_any(requirements: Vec<JwtRequirement>) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
            JwtRequirementOrList { requirements },
        )),
    }
}

/// Packs the config with `providers` (field 1) in name order.
fn jwt_any(config: JwtAuthentication, providers: &BTreeMap<String, JwtProvider>) -> Any {
    let mut value = config.encode_to_vec();
    encode_sorted_map(1, providers, &mut value);
    Any {
        type_url: type_url::<JwtAuthentication>(),
        value,
    }
}
