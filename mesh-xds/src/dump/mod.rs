//! Snapshots as proto3 JSON, shaped like Envoy's admin `/config_dump` (what `istioctl
//! proxy-config` and people reading Envoy dumps expect): one `ConfigDump` entry per xDS type,
//! each resource with its version, rendered with proto field names and `@type` on every `Any`.
//!
//! The JSON mapping needs Envoy's descriptors; `envoy.bin` holds them (generated from the
//! `envoy-types` crate by `scripts/envoy-descriptors.sh`, source info stripped).
//!
//! ```
//! use mesh_model::{ConfigStore, MeshConfig, parse_str};
//! use mesh_xds::{Proxy, PushContext, translate_snapshot};
//!
//! let store = ConfigStore::new();
//! store.apply_all(parse_str(include_str!("../../tests/fixtures/basic.yaml"), "basic.yaml"));
//! let ctx = PushContext::new(MeshConfig::default(), store.snapshot());
//! let snapshot = translate_snapshot(&ctx, &Proxy::default(), "1", None);
//! let dump = mesh_xds::dump::config_dump(&snapshot).unwrap();
//! let clusters = &dump["configs"][0];
//! assert_eq!(clusters["@type"], "type.googleapis.com/envoy.admin.v3.ClustersConfigDump");
//! let first = &clusters["dynamic_active_clusters"][0]["cluster"];
//! assert_eq!(first["@type"], "type.googleapis.com/envoy.config.cluster.v3.Cluster");
//! assert!(first["name"].is_string());
//! ```

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Value, json};

use crate::resource;
use crate::snapshot::Snapshot;

/// Envoy's descriptor set (see the module docs).
static ENVOY_DESCRIPTORS: &[u8] = include_bytes!("envoy.bin");

/// A dump failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// The embedded descriptor set does not load (a bad regeneration).
    #[error("Envoy descriptor set does not load: {0}")]
    Descriptors(String),
    /// A resource's type is not in the descriptor set.
    #[error("resource {name:?}: unknown type {type_url}")]
    UnknownType {
        /// Resource name.
        name: String,
        /// Its type URL.
        type_url: String,
    },
    /// A resource did not decode as its declared type.
    #[error("resource {name:?} of {type_url} does not decode: {source}")]
    Decode {
        /// Resource name.
        name: String,
        /// Declared type.
        type_url: String,
        /// Decoder error.
        #[source]
        source: prost::DecodeError,
    },
    /// A decoded message has no JSON form (an `Any` of a type outside the descriptor set).
    #[error("resource {name:?} has no JSON form: {source}")]
    Json {
        /// Resource name.
        name: String,
        /// Serializer error.
        #[source]
        source: serde_json::Error,
    },
}

/// Envoy's descriptor pool (every message of the `envoy-types` crate in use, with the well-known
/// types), loaded once from the embedded descriptor set. Other crates use it for Envoy's proto3
/// JSON mapping, e.g. to read a bootstrap from YAML or JSON into its message.
pub fn descriptor_pool() -> Result<&'static DescriptorPool, DumpError> {
    pool()
}

fn pool() -> Result<&'static DescriptorPool, DumpError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(ENVOY_DESCRIPTORS).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| DumpError::Descriptors(e.clone()))
}

/// The embedded descriptor set, for callers that build (and drop) their own pool: a decoded
/// pool takes tens of megabytes, which a long-running proxy need not keep.
pub fn descriptor_set() -> &'static [u8] {
    ENVOY_DESCRIPTORS
}

/// One resource as proto3 JSON (proto field names, `@type` first), like Envoy prints an `Any`.
pub fn resource_json(name: &str, type_url: &str, value: &[u8]) -> Result<Value, DumpError> {
    resource_json_in(pool()?, name, type_url, value)
}

/// [`resource_json`] with the caller's pool.
pub fn resource_json_in(
    pool: &DescriptorPool,
    name: &str,
    type_url: &str,
    value: &[u8],
) -> Result<Value, DumpError> {
    let full_name = type_url.rsplit('/').next().unwrap_or(type_url);
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| DumpError::UnknownType {
            name: name.to_string(),
            type_url: type_url.to_string(),
        })?;
    let message =
        DynamicMessage::decode(descriptor, value).map_err(|source| DumpError::Decode {
            name: name.to_string(),
            type_url: type_url.to_string(),
            source,
        })?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    let body = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| DumpError::Json {
            name: name.to_string(),
            source,
        })?;
    let mut out = serde_json::Map::new();
    out.insert("@type".into(), Value::String(type_url.to_string()));
    if let Value::Object(fields) = body {
        out.extend(fields);
    }
    Ok(Value::Object(out))
}

/// A snapshot as an Envoy admin `ConfigDump`: clusters, endpoints, listeners and routes, each
/// resource with its content version as `version_info`.
pub fn config_dump(s: &Snapshot) -> Result<Value, DumpError> {
    let each = |type_url: &str| -> Result<Vec<(String, &str, Value)>, DumpError> {
        s.of_type(type_url)
            .into_iter()
            .flatten()
            .map(|(name, r)| {
                Ok((
                    name.clone(),
                    r.version.as_str(),
                    resource_json(name, type_url, r.value())?,
                ))
            })
            .collect()
    };
    let clusters: Vec<Value> = each(resource::CLUSTER)?
        .into_iter()
        .map(|(_, v, c)| json!({"version_info": v, "cluster": c}))
        .collect();
    let endpoints: Vec<Value> = each(resource::ENDPOINT)?
        .into_iter()
        .map(|(_, v, e)| json!({"version_info": v, "endpoint_config": e}))
        .collect();
    let listeners: Vec<Value> = each(resource::LISTENER)?
        .into_iter()
        .map(|(n, v, l)| json!({"name": n, "active_state": {"version_info": v, "listener": l}}))
        .collect();
    let routes: Vec<Value> = each(resource::ROUTE)?
        .into_iter()
        .map(|(_, v, r)| json!({"version_info": v, "route_config": r}))
        .collect();
    Ok(json!({
        "version": s.version,
        "configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "version_info": s.version, "dynamic_active_clusters": clusters},
            {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
             "dynamic_endpoint_configs": endpoints},
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
             "version_info": s.version, "dynamic_listeners": listeners},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
             "dynamic_route_configs": routes},
        ]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_descriptors_cover_every_type_the_translator_packs() {
        let pool = pool().unwrap();
        for t in [
            resource::CLUSTER,
            resource::ENDPOINT,
            resource::LISTENER,
            resource::ROUTE,
            resource::SECRET,
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
            "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        ] {
            let name = t.rsplit('/').next().unwrap();
            assert!(pool.get_message_by_name(name).is_some(), "{name}");
        }
    }

    #[test]
    fn garbage_bytes_are_an_error_naming_the_resource() {
        let err = resource_json("c", resource::CLUSTER, &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.to_string().contains("\"c\""), "{err}");
        let err = resource_json("x", "type.googleapis.com/no.Such", &[]).unwrap_err();
        assert!(matches!(err, DumpError::UnknownType { .. }), "{err}");
    }
}
