//! CUSTOM-action providers: the `meshConfig.extensionProviders[]` entries of type
//! `envoyExtAuthzHttp` / `envoyExtAuthzGrpc`, resolved into the ext_authz filter configs istiod
//! builds for them (`pilot/pkg/security/authz/builder/extauthz.go`).
//!
//! Differences from istiod: istiod also looks the provider's `service` up in its service registry
//! (`model.LookupCluster`) and rejects the provider when no Service has that host; this builder
//! has no registry, so it takes the host part of `service` (`ns/host` or `host`) as the hostname
//! and builds `outbound|<port>||<host>` from it. Callers with a registry can check the host first.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, GrpcService, HeaderValue, HttpUri, grpc_service, http_uri,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as http;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as network;
use envoy_types::pb::envoy::r#type::matcher::v3::{ListStringMatcher, StringMatcher};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use mesh_model::validate::{is_dns1123_label, is_valid_host};
use mesh_model::{Duration, MeshConfig};
use serde::{Deserialize, Deserializer};

use crate::naming;
use crate::pb::{dur, string_matcher};

/// The ext_authz filter configs of one provider; `filter_enabled_metadata` is left for the caller
/// (it names the provider's RBAC policies).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Provider {
    /// The HTTP filter config.
    pub(super) http: http::ExtAuthz,
    /// The network filter config (gRPC providers only).
    pub(super) tcp: Option<network::ExtAuthz>,
}

/// istiod's default ext_authz timeout when the provider sets none.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Every ext_authz provider of the mesh by name, with its filter configs or why it cannot be
/// used (istiod's `processExtensionProvider`). Entries of other provider types are skipped; a
/// name used twice makes the later ext_authz entry invalid, and it replaces the earlier one.
pub(super) fn resolve(mesh: &MeshConfig) -> BTreeMap<String, Result<Provider, String>> {
    let mut resolved: BTreeMap<String, Result<Provider, String>> = BTreeMap::new();
    for (i, entry) in mesh.extension_providers.iter().enumerate() {
        let name = entry
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let parsed = if let Some(v) = entry.get("envoyExtAuthzHttp") {
            HttpConfig::deserialize(v)
                .map_err(|e| vec![format!("envoyExtAuthzHttp: {e}")])
                .and_then(|c| c.build())
        } else if let Some(v) = entry.get("envoyExtAuthzGrpc") {
            GrpcConfig::deserialize(v)
                .map_err(|e| vec![format!("envoyExtAuthzGrpc: {e}")])
                .and_then(|c| c.build())
        } else {
            continue;
        };
        let mut errors = Vec::new();
        if name.is_empty() {
            errors.push(format!(
                "extension provider name must not be empty, found empty at index: {i}"
            ));
        } else {
            if resolved.contains_key(&name) {
                errors.push(format!(
                    "extension provider name must be unique, found duplicate: {name}"
                ));
            }
            if let Err(e) = check_name(&name) {
                errors.push(format!("invalid provider name {name:?}: {e}"));
            }
        }
        let result = match parsed {
            Ok(p) if errors.is_empty() => Ok(p),
            Ok(_) => Err(errors.join("; ")),
            Err(e) => {
                errors.extend(e);
                Err(errors.join("; "))
            }
        };
        resolved.insert(name, result);
    }
    resolved
}

/// Provider names end up in metadata keys and policy names: a DNS-1123 label of at most 63
/// characters (istiod's `validateProviderName`).
fn check_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!(
            "provider name too long (max 63 characters): {}",
            name.len()
        ));
    }
    if let Some((i, c)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(if c.is_ascii_uppercase() {
            format!(
                "uppercase letters not allowed (use lowercase): character {c:?} at position {i}"
            )
        } else {
            format!(
                "invalid character {c:?} at position {i} (only lowercase letters, digits, and hyphens allowed)"
            )
        });
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("provider name cannot start or end with hyphen".into());
    }
    Ok(())
}

/// `envoyExtAuthzHttp` (istio.mesh.v1alpha1 `EnvoyExternalAuthorizationHttpProvider`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct HttpConfig {
    service: String,
    #[serde(deserialize_with = "u32_or_string")]
    port: u32,
    timeout: Option<Duration>,
    path_prefix: String,
    fail_open: bool,
    status_on_error: String,
    include_request_headers_in_check: Vec<String>,
    include_headers_in_check: Vec<String>,
    include_additional_headers_in_check: BTreeMap<String, String>,
    include_request_body_in_check: Option<RequestBody>,
    headers_to_upstream_on_allow: Vec<String>,
    headers_to_downstream_on_deny: Vec<String>,
    headers_to_downstream_on_allow: Vec<String>,
}

/// `envoyExtAuthzGrpc` (`EnvoyExternalAuthorizationGrpcProvider`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GrpcConfig {
    service: String,
    #[serde(deserialize_with = "u32_or_string")]
    port: u32,
    timeout: Option<Duration>,
    fail_open: bool,
    status_on_error: String,
    include_request_body_in_check: Option<RequestBody>,
}

/// `includeRequestBodyInCheck`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RequestBody {
    #[serde(deserialize_with = "u32_or_string")]
    max_request_bytes: u32,
    allow_partial_message: bool,
    pack_as_bytes: bool,
}

/// Proto3 JSON writes `uint32` as a number but accepts a decimal string too.
fn u32_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| D::Error::custom(format!("{n} is not a uint32"))),
        serde_json::Value::String(s) => s
            .parse()
            .map_err(|_| D::Error::custom(format!("{s:?} is not a uint32"))),
        other => Err(D::Error::custom(format!("{other} is not a uint32"))),
    }
}

impl HttpConfig {
    fn build(self) -> Result<Provider, Vec<String>> {
        let mut errors = Vec::new();
        let host = check_target(&self.service, self.port, &mut errors);
        let status = parse_status(&self.status_on_error, &mut errors);
        if !self.path_prefix.is_empty() && !self.path_prefix.starts_with('/') {
            errors.push(format!(
                "pathPrefix must begin with `/`, found: {:?}",
                self.path_prefix
            ));
        }
        for (field, values) in [
            (
                "includeRequestHeadersInCheck",
                &self.include_request_headers_in_check,
            ),
            ("includeHeadersInCheck", &self.include_headers_in_check),
            (
                "headersToDownstreamOnDeny",
                &self.headers_to_downstream_on_deny,
            ),
            (
                "headersToDownstreamOnAllow",
                &self.headers_to_downstream_on_allow,
            ),
            (
                "headersToUpstreamOnAllow",
                &self.headers_to_upstream_on_allow,
            ),
        ] {
            if values.iter().any(|v| v == "*") {
                errors.push(format!(
                    "a single wildcard (\"*\") is not supported, change it to either prefix or suffix match: {field}"
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let headers_to_add: Vec<HeaderValue> = self
            .include_additional_headers_in_check
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .collect();
        let authorization_response = (!self.headers_to_upstream_on_allow.is_empty()
            || !self.headers_to_downstream_on_deny.is_empty()
            || !self.headers_to_downstream_on_allow.is_empty())
        .then(|| http::AuthorizationResponse {
            allowed_upstream_headers: header_list(&self.headers_to_upstream_on_allow),
            allowed_client_headers: header_list(&self.headers_to_downstream_on_deny),
            allowed_client_headers_on_success: header_list(&self.headers_to_downstream_on_allow),
            ..Default::default()
        });
        let service = http::HttpService {
            path_prefix: self.path_prefix,
            server_uri: Some(HttpUri {
                // Required by Envoy but unused by ext_authz.
                uri: format!("http://{host}"),
                timeout: Some(timeout(self.timeout)),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                    naming::outbound_cluster(self.port, "", host),
                )),
            }),
            authorization_request: (!headers_to_add.is_empty()).then(|| {
                http::AuthorizationRequest {
                    headers_to_add,
                    ..Default::default()
                }
            }),
            authorization_response,
            ..Default::default()
        };
        // The deprecated includeHeadersInCheck counts only when the new field is unset.
        let allowed_headers = header_list(&self.include_request_headers_in_check)
            .or_else(|| header_list(&self.include_headers_in_check));
        Ok(Provider {
            http: http::ExtAuthz {
                status_on_error: status,
                failure_mode_allow: self.fail_open,
                transport_api_version: ApiVersion::V3 as i32,
                services: Some(http::ext_authz::Services::HttpService(service)),
                with_request_body: self.include_request_body_in_check.map(buffer),
                allowed_headers,
                ..Default::default()
            },
            tcp: None,
        })
    }
}

impl GrpcConfig {
    fn build(self) -> Result<Provider, Vec<String>> {
        let mut errors = Vec::new();
        let host = check_target(&self.service, self.port, &mut errors);
        let status = parse_status(&self.status_on_error, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let grpc = GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: naming::outbound_cluster(self.port, "", host),
                    authority: host.to_string(),
                    ..Default::default()
                },
            )),
            timeout: Some(timeout(self.timeout)),
            ..Default::default()
        };
        Ok(Provider {
            http: http::ExtAuthz {
                status_on_error: status,
                failure_mode_allow: self.fail_open,
                services: Some(http::ext_authz::Services::GrpcService(grpc.clone())),
                transport_api_version: ApiVersion::V3 as i32,
                with_request_body: self.include_request_body_in_check.map(buffer),
                ..Default::default()
            },
            tcp: Some(network::ExtAuthz {
                stat_prefix: "tcp.".into(),
                failure_mode_allow: self.fail_open,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_service: Some(grpc),
                ..Default::default()
            }),
        })
    }
}

/// Checks `service` and `port` (istiod's `validateExtensionProviderService` and port check) and
/// returns the host: `service` itself, or the part after `ns/`.
fn check_target<'s>(service: &'s str, port: u32, errors: &mut Vec<String>) -> &'s str {
    if !(1..=65535).contains(&port) {
        errors.push(format!(
            "port must be in the range [1, 65535], found: {port}"
        ));
    }
    if service.is_empty() {
        errors.push("service must not be empty".into());
        return service;
    }
    let (ok, host) = match service.split_once('/') {
        None => (
            service.parse::<IpAddr>().is_ok() || (!service.contains('*') && is_valid_host(service)),
            service,
        ),
        Some((ns, host)) => (
            (ns == "*" || ns == "." || is_dns1123_label(ns))
                && !host.contains('/')
                && is_valid_host(host),
            host,
        ),
    };
    if !ok {
        errors.push(format!("invalid service fmt {service}"));
    }
    host
}

/// `statusOnError`: empty → none; otherwise one of Envoy's `StatusCode` values.
fn parse_status(status: &str, errors: &mut Vec<String>) -> Option<HttpStatus> {
    if status.is_empty() {
        return None;
    }
    match status.parse::<i32>() {
        Ok(code) if StatusCode::try_from(code).is_ok() => Some(HttpStatus { code }),
        Ok(_) => {
            errors.push(format!("unsupported statusOnError {status}"));
            None
        }
        Err(_) => {
            errors.push(format!("invalid statusOnError {status:?}"));
            None
        }
    }
}

fn timeout(t: Option<Duration>) -> envoy_types::pb::google::protobuf::Duration {
    dur(&t.unwrap_or(Duration::from_std(DEFAULT_TIMEOUT)))
}

fn buffer(b: RequestBody) -> http::BufferSettings {
    http::BufferSettings {
        max_request_bytes: b.max_request_bytes,
        allow_partial_message: b.allow_partial_message,
        pack_as_bytes: b.pack_as_bytes,
    }
}

/// Header names as case-insensitive matchers: `*x` → suffix, `x*` → prefix, else exact
/// (istiod's `generateHeaders`); none for an empty list.
fn header_list(headers: &[String]) -> Option<ListStringMatcher> {
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    use mesh_model::StringMatch;
    if headers.is_empty() {
        return None;
    }
    let patterns = headers
        .iter()
        .map(|h| {
            if let Some(rest) = h.strip_prefix('*') {
                StringMatcher {
                    match_pattern: Some(MatchPattern::Suffix(rest.to_string())),
                    ignore_case: true,
                }
            } else if let Some(rest) = h.strip_suffix('*') {
                string_matcher(&StringMatch::Prefix(rest.to_string()), true)
            } else {
                string_matcher(&StringMatch::Exact(h.clone()), true)
            }
        })
        .collect();
    Some(ListStringMatcher { patterns })
}
