//! Envoy bootstraps from YAML or JSON text, through Envoy's proto3 JSON mapping (`@type` in
//! every `Any`, durations as `"1s"`, enums by name, proto or lowerCamelCase field names).
//!
//! YAML is read as YAML 1.2 (only `true`/`false` are booleans, duplicate keys are errors), as
//! `mesh-model` reads manifests. The text becomes a JSON value, the JSON value a
//! `DynamicMessage` of `envoy.config.bootstrap.v3.Bootstrap` in Envoy's descriptor pool (from
//! `mesh-xds`), and its encoding the `envoy-types` message. Unknown fields are errors that name
//! the field's path.

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor};
use serde_json::Value;

/// Why a bootstrap's text did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapParseError {
    /// Not YAML.
    #[error("bootstrap YAML{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Yaml {
        /// What is wrong.
        message: String,
        /// Line of the problem, when known.
        line: Option<usize>,
    },
    /// Not JSON (text starting with `{` is read as JSON).
    #[error("bootstrap JSON (line {line}, column {column}): {message}")]
    Json {
        /// What is wrong.
        message: String,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
    },
    /// Well-formed, but not a `Bootstrap` (an unknown field, a value of the wrong type, an
    /// `Any` of an unknown type).
    #[error("bootstrap{}: {message}", path.as_ref().map(|p| format!(" field {p}")).unwrap_or_default())]
    Proto {
        /// What is wrong.
        message: String,
        /// Path of the field, as proto field names from the root, when known.
        path: Option<String>,
    },
}

/// Parses a bootstrap from YAML or JSON text (Envoy's proto3 JSON mapping).
pub fn parse_bootstrap(text: &str) -> Result<Bootstrap, BootstrapParseError> {
    parse_yaml::<Bootstrap>(text)
}

/// Parses any Envoy message from YAML or JSON text (Envoy's proto3 JSON mapping): a route
/// configuration, a cluster, a listener, as they are written in Envoy's docs.
///
/// ```
/// use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
///
/// let rc: RouteConfiguration = mesh_proxy::proto::parse_yaml(
///     "name: local\nvirtual_hosts: [{name: all, domains: ['*']}]",
/// )
/// .unwrap();
/// assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
/// ```
pub fn parse_yaml<M: Message + Default + prost::Name>(
    text: &str,
) -> Result<M, BootstrapParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| BootstrapParseError::Json {
            message: e.to_string(),
            line: e.line(),
            column: e.column(),
        })?
    } else {
        let options = serde_saphyr::options! {
            strict_booleans: true,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        };
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let line = e
                .location()
                .and_then(|l| usize::try_from(l.line()).ok())
                .filter(|l| *l > 0);
            let message = e.without_snippet().to_string();
            let message = message
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            BootstrapParseError::Yaml { message, line }
        })?
    };
    let value = match value {
        // An empty document is an empty bootstrap.
        Value::Null => Value::Object(serde_json::Map::new()),
        v => v,
    };
    let proto =
        |message: String, path: Option<String>| BootstrapParseError::Proto { message, path };
    let pool = crate::descriptors::pool().map_err(|e| proto(e, None))?;
    let full_name = M::full_name();
    let descriptor = pool
        .get_message_by_name(&full_name)
        .ok_or_else(|| proto(format!("Envoy's descriptors have no {full_name}"), None))?;
    // Unknown fields first, for an error that says where they are.
    let mut path = String::new();
    if let Some((path, message)) = unknown_field(&descriptor, &value, &mut path) {
        return Err(proto(message, Some(path)));
    }
    let message =
        DynamicMessage::deserialize(descriptor, value).map_err(|e| proto(e.to_string(), None))?;
    M::decode(message.encode_to_vec().as_slice()).map_err(|e| proto(e.to_string(), None))
}

/// The first key in `v` that is not a field of `desc` (or of a nested message, or of the type
/// an `Any` names): its path and a message.
fn unknown_field(
    desc: &MessageDescriptor,
    v: &Value,
    path: &mut String,
) -> Option<(String, String)> {
    let Value::Object(map) = v else {
        return None;
    };
    match desc.full_name() {
        // Free-form JSON, or a scalar in JSON: nothing to check inside.
        "google.protobuf.Struct"
        | "google.protobuf.Value"
        | "google.protobuf.ListValue"
        | "google.protobuf.Duration"
        | "google.protobuf.Timestamp"
        | "google.protobuf.FieldMask" => return None,
        "google.protobuf.Any" => {
            let Some(Value::String(type_url)) = map.get("@type") else {
                return None;
            };
            let name = type_url.rsplit('/').next().unwrap_or(type_url);
            let inner = desc.parent_pool().get_message_by_name(name)?;
            if map.contains_key("value") && inner.full_name().starts_with("google.protobuf.") {
                return None;
            }
            let fields: serde_json::Map<String, Value> = map
                .iter()
                .filter(|(k, _)| *k != "@type")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            return unknown_field(&inner, &Value::Object(fields), path);
        }
        _ => {}
    }
    for (k, child) in map {
        let Some(field) = desc
            .get_field_by_name(k)
            .or_else(|| desc.get_field_by_json_name(k))
        else {
            let at = join(path, k);
            return Some((at, format!("unknown field `{k}` in {}", desc.full_name())));
        };
        let Kind::Message(m) = field.kind() else {
            continue;
        };
        let base = path.len();
        push(path, field.name());
        let found = if field.is_map() {
            let value_kind = m.map_entry_value_field().kind();
            match (value_kind, child) {
                (Kind::Message(vm), Value::Object(entries)) => {
                    entries.iter().find_map(|(key, e)| {
                        let base = path.len();
                        path.push_str(&format!("[\"{key}\"]"));
                        let found = unknown_field(&vm, e, path);
                        path.truncate(base);
                        found
                    })
                }
                _ => None,
            }
        } else if field.is_list() {
            match child {
                Value::Array(items) => items.iter().enumerate().find_map(|(i, e)| {
                    let base = path.len();
                    path.push_str(&format!("[{i}]"));
                    let found = unknown_field(&m, e, path);
                    path.truncate(base);
                    found
                }),
                _ => None,
            }
        } else {
            unknown_field(&m, child, path)
        };
        path.truncate(base);
        if found.is_some() {
            return found;
        }
    }
    None
}

fn push(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(name);
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}
