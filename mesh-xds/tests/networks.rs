//! Multi-network endpoints (Istio's `meshNetworks`) on the translated output, istiod's split
//! horizon: a proxy gets the endpoints of its own network and of networks without a gateway;
//! an endpoint behind another network's gateway is replaced by that network's gateways (with
//! `tlsMode: istio`, reached over mTLS, the weight split evenly over the gateways), or left out
//! when it does not accept mTLS. An endpoint without a `network` is placed by the networks'
//! `fromCidr` rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;
use mesh_model::{ConfigStore, MeshConfig, parse_mesh_networks, parse_str};
use mesh_xds::{Proxy, PushContext, translate};

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints:
  - {address: 10.1.0.1, network: east}
  - {address: 10.2.0.1, network: west}
  - {address: 10.3.0.1, network: north}
  - {address: 192.168.7.1}
  - {address: 172.16.0.1}
"#;

const NETWORKS: &str = r#"
networks:
  east:
    endpoints: [{fromRegistry: east-cluster}]
    gateways: [{address: 203.0.113.1, port: 15443}]
  west:
    endpoints: [{fromCidr: 192.168.0.0/16}]
    gateways: [{address: 203.0.113.2, port: 15443}]
  north:
    endpoints: [{fromRegistry: north-cluster}]
"#;

/// The endpoint addresses of the db cluster for a proxy in `network`, with or without the
/// mesh networks.
fn addresses(network: &str, with_networks: bool) -> Vec<String> {
    let store = ConfigStore::new();
    let report = store.apply_all(parse_str(CONFIG, "db.yaml"));
    assert!(report.rejected.is_empty(), "{report:?}");
    let mut ctx = PushContext::new(MeshConfig::default(), store.snapshot());
    if with_networks {
        let (networks, warnings) = parse_mesh_networks(NETWORKS).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        ctx = ctx.with_networks(networks);
    }
    let proxy = Proxy {
        namespace: "shop".into(),
        network: network.into(),
        ..Default::default()
    };
    let out = translate(&ctx, &proxy);
    out.consistent().unwrap();
    let cla = &out.endpoints["outbound|5432||db.shop.svc.cluster.local"];
    let mut found: Vec<String> = cla
        .endpoints
        .iter()
        .flat_map(|g| &g.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                match ep.address.as_ref()?.address.as_ref()? {
                    address::Address::SocketAddress(s) => Some(s.address.clone()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    found.sort();
    found
}

#[test]
fn endpoints_behind_another_networks_gateway_are_left_out() {
    // In east: its own endpoint, north (no gateway), and the unplaced one; west (by network
    // and by CIDR) is behind a gateway.
    assert_eq!(
        addresses("east", true),
        ["10.1.0.1", "10.3.0.1", "172.16.0.1"]
    );
    // In west: its own, including the one placed there by fromCidr.
    assert_eq!(
        addresses("west", true),
        ["10.2.0.1", "10.3.0.1", "172.16.0.1", "192.168.7.1"]
    );
    // A proxy on no network is outside every network with a gateway.
    assert_eq!(addresses("", true), ["10.3.0.1", "172.16.0.1"]);
}

#[test]
fn without_mesh_networks_every_endpoint_is_direct() {
    assert_eq!(
        addresses("east", false),
        [
            "10.1.0.1",
            "10.2.0.1",
            "10.3.0.1",
            "172.16.0.1",
            "192.168.7.1"
        ]
    );
}

/// Endpoints with identities (so they accept mTLS): two in east (one gateway), one in west
/// (two gateways), one local.
const WITH_IDENTITIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.1.0.1, network: east, serviceAccount: api}
  - {address: 10.1.0.2, network: east, serviceAccount: api}
  - {address: 10.2.0.1, network: west, serviceAccount: api}
  - {address: 10.9.0.1, network: south, serviceAccount: api}
"#;

const TWO_GATEWAYS: &str = r#"
networks:
  east:
    endpoints: [{fromRegistry: east-cluster}]
    gateways: [{address: 203.0.113.1, port: 15443}]
  west:
    endpoints: [{fromRegistry: west-cluster}]
    gateways: [{address: 203.0.113.2, port: 15443}, {address: 203.0.113.3, port: 15443}]
"#;

#[test]
fn remote_endpoints_are_reached_through_their_networks_gateways() {
    let store = ConfigStore::new();
    assert!(
        store
            .apply_all(parse_str(WITH_IDENTITIES, "api.yaml"))
            .rejected
            .is_empty()
    );
    let (networks, _) = parse_mesh_networks(TWO_GATEWAYS).unwrap();
    let ctx = PushContext::new(MeshConfig::default(), store.snapshot()).with_networks(networks);
    let proxy = Proxy {
        namespace: "shop".into(),
        network: "south".into(),
        ..Default::default()
    };
    let out = translate(&ctx, &proxy);
    out.consistent().unwrap();
    let cla = &out.endpoints["outbound|8080||api.shop.svc.cluster.local"];
    let mut found: Vec<(String, u32, u32, bool)> = cla
        .endpoints
        .iter()
        .flat_map(|g| &g.lb_endpoints)
        .filter_map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                return None;
            };
            let Some(address::Address::SocketAddress(s)) = ep.address.as_ref()?.address.as_ref()
            else {
                return None;
            };
            let port = match s.port_specifier {
                Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            let mtls = format!("{:?}", e.metadata).contains("tlsMode");
            Some((s.address.clone(), port, e.load_balancing_weight?.value, mtls))
        })
        .collect();
    found.sort();
    // Scale 2 (the LCM of 1 and 2 gateways): the local endpoint weighs 2; east's gateway stands
    // for two endpoints (2 + 2); west's endpoint (2) splits over its two gateways.
    assert_eq!(
        found,
        [
            ("10.9.0.1".to_string(), 8080, 2, true),
            ("203.0.113.1".to_string(), 15443, 4, true),
            ("203.0.113.2".to_string(), 15443, 1, true),
            ("203.0.113.3".to_string(), 15443, 1, true),
        ]
    );
}
