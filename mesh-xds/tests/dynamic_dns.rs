//! DYNAMIC_DNS on the translated output (traffic through real Envoy is in envoy_routing.rs):
//! a VirtualService's TLS route for the same SNI replaces the dynamic forward proxy chain, so
//! the listener never has two chains with one match (which Envoy would refuse).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_xds::proxy::InterceptionMode;
use mesh_xds::{Proxy, PushContext, translate};

fn listener_chains(extra: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: anything, namespace: shop}}
spec:
  hosts: ["*.mesh.test"]
  location: MESH_EXTERNAL
  resolution: DYNAMIC_DNS
  ports: [{{number: 8443, name: tls, protocol: TLS}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: 8443, name: tls, protocol: TLS}}
    bind: 127.0.0.2
    captureMode: NONE
    hosts: ["./*"]
{extra}"#
    );
    let store = ConfigStore::new();
    let report = store.apply_all(parse_str(&config, "dfp.yaml"));
    assert!(report.rejected.is_empty(), "{report:?}");
    let ctx = PushContext::new(MeshConfig::default(), store.snapshot());
    let proxy = Proxy {
        namespace: "shop".into(),
        interception_mode: InterceptionMode::None,
        ..Default::default()
    };
    let out = translate(&ctx, &proxy);
    out.consistent().unwrap();
    out.listeners["127.0.0.2_8443"]
        .filter_chains
        .iter()
        .map(|c| {
            (
                c.filter_chain_match
                    .as_ref()
                    .map(|m| m.server_names.clone())
                    .unwrap_or_default(),
                c.filters.iter().map(|f| f.name.clone()).collect(),
            )
        })
        .collect()
}

#[test]
fn the_wildcard_sni_gets_the_dynamic_forward_proxy_and_the_default_is_not_it() {
    let chains = listener_chains("");
    assert_eq!(
        chains,
        [
            (
                vec!["*.mesh.test".to_string()],
                vec![
                    "envoy.filters.network.sni_dynamic_forward_proxy".to_string(),
                    "envoy.filters.network.tcp_proxy".to_string()
                ]
            ),
            (vec![], vec!["envoy.filters.network.tcp_proxy".to_string()]),
        ]
    );
}

#[test]
fn a_tls_route_for_the_same_sni_replaces_the_dynamic_forward_proxy_chain() {
    let vs = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pinned, namespace: shop}
spec:
  hosts: ["*.mesh.test"]
  tls:
  - match: [{port: 8443, sniHosts: ["*.mesh.test"]}]
    route: [{destination: {host: "*.mesh.test", port: {number: 8443}}}]
"#;
    let chains = listener_chains(vs);
    let wildcard: Vec<_> = chains
        .iter()
        .filter(|(names, _)| names.iter().any(|n| n == "*.mesh.test"))
        .collect();
    assert_eq!(wildcard.len(), 1, "{chains:?}");
    assert_eq!(wildcard[0].1, ["envoy.filters.network.tcp_proxy"]);
}
