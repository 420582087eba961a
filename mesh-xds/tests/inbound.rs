//! Sidecar ingress listeners on the translated output: under iptables capture they become
//! destination-port filter chains on `virtualInbound` (the bound-listener case runs through
//! real Envoy in envoy_routing.rs), inbound clusters connect from 127.0.0.6 so their traffic
//! is not captured again, and `tls` on an ingress listener terminates TLS there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_xds::proxy::InterceptionMode;
use mesh_xds::{Proxy, PushContext, translate};

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  ingress:
  - port: {number: 9080, name: http, protocol: HTTP}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9081, name: sniffed}
    defaultEndpoint: 127.0.0.1:8081
  - port: {number: 9443, name: https, protocol: HTTPS}
    defaultEndpoint: 127.0.0.1:8443
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem}
"#;

fn proxy(mode: InterceptionMode) -> Proxy {
    Proxy {
        namespace: "shop".into(),
        ip_addresses: vec!["10.0.0.7".into()],
        interception_mode: mode,
        ..Default::default()
    }
}

fn resources(mode: InterceptionMode) -> mesh_xds::Resources {
    let store = ConfigStore::new();
    let report = store.apply_all(parse_str(CONFIG, "sidecar.yaml"));
    assert!(report.rejected.is_empty(), "{report:?}");
    let ctx = PushContext::new(MeshConfig::default(), store.snapshot());
    let out = translate(&ctx, &proxy(mode));
    out.consistent().unwrap();
    out
}

#[test]
fn captured_ingress_ports_are_chains_on_virtual_inbound() {
    let out = resources(InterceptionMode::Redirect);
    let inbound = &out.listeners["virtualInbound"];
    let ports: Vec<u32> = inbound
        .filter_chains
        .iter()
        .filter_map(|c| {
            c.filter_chain_match
                .as_ref()?
                .destination_port
                .map(|p| p.value)
        })
        .collect();
    assert_eq!(ports, [9080, 9081, 9081, 9081, 9443]);
    // The catch-all stays last.
    assert_eq!(
        inbound.filter_chains.last().unwrap().name,
        "virtualInbound-catchall-tcp"
    );
    // No listener binds the ports itself.
    assert!(!out.listeners.contains_key("0.0.0.0_9080"));
    let cluster = &out.clusters["inbound|9080||"];
    let source = cluster.upstream_bind_config.as_ref().unwrap();
    assert_eq!(source.source_address.as_ref().unwrap().address, "127.0.0.6");
    // TLS is terminated on the HTTPS port's chain only.
    let https = inbound
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_9443")
        .unwrap();
    assert_eq!(
        https.transport_socket.as_ref().unwrap().name,
        "envoy.transport_sockets.tls"
    );
    let http = inbound
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_9080")
        .unwrap();
    assert!(http.transport_socket.is_none());
}

#[test]
fn without_capture_ingress_ports_are_bound_and_forward_to_the_default_endpoint() {
    let out = resources(InterceptionMode::None);
    assert!(!out.listeners.contains_key("virtualInbound"));
    let l = &out.listeners["0.0.0.0_9443"];
    assert!(l.filter_chains[0].transport_socket.is_some());
    let cluster = &out.clusters["inbound|9443||"];
    assert!(cluster.upstream_bind_config.is_none());
    let cla = cluster.load_assignment.as_ref().unwrap();
    let ep = format!("{:?}", cla.endpoints[0].lb_endpoints[0]);
    assert!(ep.contains("127.0.0.1") && ep.contains("8443"), "{ep}");
}

#[test]
fn an_ingress_port_without_protocol_is_sniffed() {
    let out = resources(InterceptionMode::Redirect);
    let inbound = &out.listeners["virtualInbound"];
    let names: Vec<&str> = inbound
        .filter_chains
        .iter()
        .filter(|c| c.name.starts_with("0.0.0.0_9081"))
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["0.0.0.0_9081-http", "0.0.0.0_9081-raw", "0.0.0.0_9081"]
    );
    let http = &inbound
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_9081-http")
        .unwrap();
    let m = http.filter_chain_match.as_ref().unwrap();
    assert_eq!(m.destination_port.as_ref().unwrap().value, 9081);
    assert_eq!(m.application_protocols, ["http/1.1", "h2c"]);
    assert_eq!(
        http.filters[0].name,
        "envoy.filters.network.http_connection_manager"
    );
    let filters: Vec<&str> = inbound
        .listener_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.listener.original_dst",
            "envoy.filters.listener.http_inspector"
        ]
    );
    // Without capture the bound listener sniffs by itself.
    let out = resources(InterceptionMode::None);
    let bound = &out.listeners["0.0.0.0_9081"];
    assert_eq!(bound.filter_chains.len(), 3);
    assert_eq!(
        bound.listener_filters[0].name,
        "envoy.filters.listener.http_inspector"
    );
}
