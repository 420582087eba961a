//! Canonical encoding of route configurations: prost's, with map entries in key order.

use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::encoding::{put_bytes, put_len, tag};

fn encode_route(mut r: Route, buf: &mut Vec<u8>) {
    let map = std::mem::take(&mut r.typed_per_filter_config);
    let _ = r.encode(buf);
    // Map entries in key order, so the same route always has the same bytes.
    let mut sorted: Vec<(&String, &Any)> = map.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut entry = Vec::new();
    for (k, v) in sorted {
        entry.clear();
        prost::encoding::string::encode(tag::map_entry::KEY, k, &mut entry);
        prost::encoding::message::encode(tag::map_entry::VALUE, v, &mut entry);
        put_bytes(tag::route::TYPED_PER_FILTER_CONFIG, &entry, buf);
    }
}

fn encode_vhost(mut v: VirtualHost, buf: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    let routes = std::mem::take(&mut v.routes);
    let _ = v.encode(buf);
    for r in routes {
        if r.typed_per_filter_config.len() < 2 {
            // Nothing to order: encode in place.
            prost::encoding::message::encode(tag::virtual_host::ROUTES, &r, buf);
        } else {
            scratch.clear();
            encode_route(r, scratch);
            put_bytes(tag::virtual_host::ROUTES, scratch, buf);
        }
    }
}

/// Encodes a route configuration with map fields in key order. Prost encodes `HashMap`s in
/// iteration order, which differs between runs; a route with both fault and CORS config
/// would otherwise get different bytes (and versions) each time it is translated.
pub fn encode_canonical(rc: &RouteConfiguration) -> Vec<u8> {
    encode_canonical_owned(rc.clone())
}

/// [`encode_canonical`], consuming the route configuration (no copies of it are made).
pub fn encode_canonical_owned(rc: RouteConfiguration) -> Vec<u8> {
    let mut buf = Vec::with_capacity(rc.encoded_len());
    encode_canonical_into(rc, &mut buf);
    buf
}

/// Appends the canonical encoding of `rc` to `buf`: exactly `rc.encoded_len()` bytes (only the
/// order of map entries differs from prost's).
pub(crate) fn encode_canonical_into(mut rc: RouteConfiguration, buf: &mut Vec<u8>) {
    let vhosts = std::mem::take(&mut rc.virtual_hosts);
    let _ = rc.encode(buf);
    let mut scratch = Vec::new();
    for v in vhosts {
        encode_vhost_field(v, buf, &mut scratch);
    }
}

/// Appends one virtual host as a `virtual_hosts` field of a route configuration, canonically encoded.
pub(crate) fn encode_vhost_field(v: VirtualHost, buf: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    put_len(
        tag::route_configuration::VIRTUAL_HOSTS,
        v.encoded_len(),
        buf,
    );
    encode_vhost(v, buf, scratch);
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
