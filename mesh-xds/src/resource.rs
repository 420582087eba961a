//! xDS type URLs, and encoding resources once into shared, versioned `Any`s.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

/// `type.googleapis.com/envoy.config.cluster.v3.Cluster`.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// `type.googleapis.com/envoy.config.listener.v3.Listener`.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `type.googleapis.com/envoy.config.route.v3.RouteConfiguration`.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret`.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The xDS types this crate serves, in make-before-break push order (CDS, EDS, LDS, RDS).
pub const PUSH_ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Whether a type is requested as a wildcard (CDS, LDS) rather than by name.
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER
}

/// Short name of a type for metrics and debug output (`cds`, `eds`, `lds`, `rds`).
pub fn short_name(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER => "cds",
        ENDPOINT => "eds",
        LISTENER => "lds",
        ROUTE => "rds",
        SECRET => "sds",
        _ => "unknown",
    }
}

/// One encoded resource, shared by every proxy (and every stream) that sees the same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedResource {
    /// Resource name.
    pub name: String,
    /// Content version: a hash of the canonical encoding.
    pub version: String,
    /// The resource as `Any`.
    pub any: Any,
}

impl EncodedResource {
    /// Encodes a message canonically (see [`encode_canonical`]).
    pub fn new<M: Message + prost::Name>(name: &str, message: &M) -> Arc<EncodedResource> {
        Self::from_bytes(name, M::type_url(), message.encode_to_vec())
    }

    /// Wraps bytes that are already canonical.
    pub fn from_bytes(name: &str, type_url: String, value: Vec<u8>) -> Arc<EncodedResource> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut h);
        Arc::new(EncodedResource {
            name: name.to_string(),
            version: format!("{:016x}", h.finish()),
            any: Any { type_url, value },
        })
    }
}

fn put_field(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn encode_route(r: &Route) -> Vec<u8> {
    let mut r = r.clone();
    let map = std::mem::take(&mut r.typed_per_filter_config);
    let mut buf = r.encode_to_vec();
    // Map entries in key order, so the same route always has the same bytes.
    let sorted: BTreeMap<&String, &Any> = map.iter().collect();
    for (k, v) in sorted {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, k, &mut entry);
        prost::encoding::message::encode(2, v, &mut entry);
        put_field(13, &entry, &mut buf);
    }
    buf
}

fn encode_vhost(v: &VirtualHost) -> Vec<u8> {
    let mut v = v.clone();
    let routes = std::mem::take(&mut v.routes);
    let mut buf = v.encode_to_vec();
    for r in &routes {
        put_field(3, &encode_route(r), &mut buf);
    }
    buf
}

/// Encodes a route configuration with map fields in key order. Prost encodes `HashMap`s in
/// iteration order, which differs between runs; a route with both fault and CORS config
/// would otherwise get different bytes (and versions) each time it is translated.
pub fn encode_canonical(rc: &RouteConfiguration) -> Vec<u8> {
    let mut rc = rc.clone();
    let vhosts = std::mem::take(&mut rc.virtual_hosts);
    let mut buf = rc.encode_to_vec();
    for v in &vhosts {
        put_field(2, &encode_vhost(v), &mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn canonical_route_encoding_decodes_to_the_same_message_and_is_stable() {
        let mut route = Route {
            name: "r".into(),
            ..Default::default()
        };
        for k in ["z", "a", "m", "b", "q"] {
            route.typed_per_filter_config.insert(
                format!("envoy.filters.http.{k}"),
                Any {
                    type_url: "t".into(),
                    value: k.as_bytes().to_vec(),
                },
            );
        }
        let rc = RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![VirtualHost {
                name: "v".into(),
                domains: vec!["*".into()],
                routes: vec![route.clone(), route],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = encode_canonical(&rc);
        assert_eq!(RouteConfiguration::decode(bytes.as_slice()).unwrap(), rc);
        // Re-building the maps (new HashMap seeds) never changes the bytes.
        for _ in 0..20 {
            let mut again = rc.clone();
            for v in &mut again.virtual_hosts {
                for r in &mut v.routes {
                    r.typed_per_filter_config = r
                        .typed_per_filter_config
                        .clone()
                        .into_iter()
                        .collect::<HashMap<_, _>>();
                }
            }
            assert_eq!(encode_canonical(&again), bytes);
        }
    }
}
