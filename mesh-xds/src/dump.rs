//! Debug dumps of snapshots.
//!
//! Each resource is listed with its type, name, content version and encoded size, and its
//! decoded message. The message is rendered with Rust's `Debug` (every field, nested), not
//! proto3 JSON: that needs Envoy's descriptor set, which the `envoy-types` crate ships but does
//! not expose.

use prost::Message;
use serde_json::{Value, json};

use crate::resource;
use crate::snapshot::Snapshot;

/// A dump failed: a resource did not decode as its declared type.
#[derive(Debug, thiserror::Error)]
#[error("resource {name:?} of {type_url} does not decode: {source}")]
pub struct DumpError {
    /// Resource name.
    pub name: String,
    /// Declared type.
    pub type_url: String,
    /// Decoder error.
    #[source]
    pub source: prost::DecodeError,
}

fn decoded(type_url: &str, bytes: &[u8]) -> Result<String, prost::DecodeError> {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    Ok(match type_url {
        resource::CLUSTER => format!("{:#?}", Cluster::decode(bytes)?),
        resource::ENDPOINT => format!("{:#?}", ClusterLoadAssignment::decode(bytes)?),
        resource::LISTENER => format!("{:#?}", Listener::decode(bytes)?),
        resource::ROUTE => format!("{:#?}", RouteConfiguration::decode(bytes)?),
        _ => String::new(),
    })
}

/// The snapshot as JSON: `{version, resources: {cds: [{name, version, bytes, @type, message}]}}`.
pub fn snapshot_json(s: &Snapshot) -> Result<Value, DumpError> {
    let mut types = serde_json::Map::new();
    for (type_url, resources) in &s.resources {
        let mut list = Vec::new();
        for (name, r) in resources {
            let message = decoded(type_url, r.value()).map_err(|source| DumpError {
                name: name.clone(),
                type_url: type_url.clone(),
                source,
            })?;
            list.push(json!({
                "@type": type_url,
                "name": name,
                "version": r.version,
                "bytes": r.value().len(),
                "message": message,
            }));
        }
        types.insert(
            resource::short_name(type_url).to_string(),
            Value::Array(list),
        );
    }
    Ok(json!({"version": s.version, "resources": types}))
}
