//! Outbound TCP and TLS services under iptables capture, on the translated output (traffic
//! through real Envoy with real iptables rules is in capture.rs): a service with a VIP gets
//! its own `VIP_PORT` listener, TLS services without one are told apart by SNI on
//! `0.0.0.0_PORT`, CIDR addresses by destination prefix, HTTP keeps the port's default chain,
//! and what matches nothing follows the outbound traffic policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_xds::proxy::InterceptionMode;
use mesh_xds::{Proxy, PushContext, Resources, translate};
use prost::Message;

const SERVICES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql, namespace: shop}
spec:
  hosts: [mysql.shop.svc.cluster.local]
  addresses: [240.240.0.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: tcp-mysql, protocol: TCP}]
  endpoints: [{address: 10.1.0.1, labels: {version: v1}}, {address: 10.1.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-tls, namespace: shop}
spec:
  hosts: [db.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-https, namespace: shop}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger, namespace: shop}
spec:
  hosts: [ledger.internal]
  addresses: [10.20.0.0/16]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache, namespace: shop}
spec:
  hosts: [cache.internal]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 6379, name: tcp-redis, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{number: 8080, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.internal]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 8080, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: queue, namespace: shop}
spec:
  hosts: [queue.internal]
  addresses: [240.240.0.11]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 8080, name: tcp, protocol: TCP}]
"#;

fn resources(extra: &str, mode: InterceptionMode) -> Resources {
    let store = ConfigStore::new();
    let report = store.apply_all(parse_str(&format!("{SERVICES}{extra}"), "capture.yaml"));
    assert!(report.rejected.is_empty(), "{report:?}");
    let ctx = PushContext::new(MeshConfig::default(), store.snapshot());
    let proxy = Proxy {
        namespace: "shop".into(),
        ip_addresses: vec!["10.0.0.7".into()],
        interception_mode: mode,
        ..Default::default()
    };
    let out = translate(&ctx, &proxy);
    out.consistent().unwrap();
    out
}

/// The TCP proxy of a chain: its cluster, or its weighted clusters as `name=weight`.
fn destination(chain: &FilterChain) -> Vec<String> {
    let filter = chain
        .filters
        .iter()
        .find(|f| f.name == "envoy.filters.network.tcp_proxy")
        .unwrap_or_else(|| panic!("no TCP proxy in {chain:?}"));
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        &filter.config_type
    else {
        panic!("untyped filter");
    };
    let tcp = TcpProxy::decode(any.value.as_slice()).unwrap();
    match tcp.cluster_specifier.unwrap() {
        tcp_proxy::ClusterSpecifier::Cluster(c) => vec![c],
        tcp_proxy::ClusterSpecifier::WeightedClusters(w) => w
            .clusters
            .iter()
            .map(|c| format!("{}={}", c.name, c.weight))
            .collect(),
    }
}

fn sni(chain: &FilterChain) -> Vec<String> {
    chain
        .filter_chain_match
        .as_ref()
        .map(|m| m.server_names.clone())
        .unwrap_or_default()
}

fn captured(out: &Resources, name: &str) -> Listener {
    let l = out
        .listeners
        .get(name)
        .unwrap_or_else(|| panic!("no listener {name}: {:?}", out.listeners.keys()));
    assert_eq!(
        l.bind_to_port.as_ref().map(|b| b.value),
        Some(false),
        "{name} must be reached from virtualOutbound, not bind"
    );
    l.clone()
}

fn has_tls_inspector(l: &Listener) -> bool {
    l.listener_filters
        .iter()
        .any(|f| f.name == "envoy.filters.listener.tls_inspector")
}

#[test]
fn a_tcp_service_with_a_vip_gets_its_own_listener() {
    let out = resources("", InterceptionMode::Redirect);
    let l = captured(&out, "240.240.0.10_3306");
    assert_eq!(l.filter_chains.len(), 1);
    assert_eq!(
        destination(&l.filter_chains[0]),
        ["outbound|3306||mysql.shop.svc.cluster.local"]
    );
    assert!(!has_tls_inspector(&l));
    // Nothing else on 3306: other destinations take virtualOutbound's catch-all.
    assert!(!out.listeners.contains_key("0.0.0.0_3306"));
}

#[test]
fn tls_services_without_a_vip_are_told_apart_by_sni_and_the_rest_passes_through() {
    let out = resources("", InterceptionMode::Redirect);
    let l = captured(&out, "0.0.0.0_443");
    assert!(has_tls_inspector(&l));
    let chains: Vec<(Vec<String>, Vec<String>)> = l
        .filter_chains
        .iter()
        .map(|c| (sni(c), destination(c)))
        .collect();
    assert_eq!(
        chains,
        [
            (
                vec!["api.example.com".to_string()],
                vec!["outbound|443||api.example.com".to_string()]
            ),
            (
                vec!["db.example.com".to_string()],
                vec!["outbound|443||db.example.com".to_string()]
            ),
            (vec![], vec!["PassthroughCluster".to_string()]),
        ]
    );
}

#[test]
fn registry_only_sends_unmatched_traffic_on_a_captured_port_to_the_black_hole() {
    let mesh = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#;
    let out = resources(mesh, InterceptionMode::Redirect);
    let l = captured(&out, "0.0.0.0_443");
    assert_eq!(
        destination(l.filter_chains.last().unwrap()),
        ["BlackHoleCluster"]
    );
    assert_eq!(
        destination(&out.listeners["0.0.0.0_5432"].filter_chains[1]),
        ["BlackHoleCluster"]
    );
}

#[test]
fn cidr_addresses_match_on_the_destination_prefix() {
    let out = resources("", InterceptionMode::Redirect);
    let l = captured(&out, "0.0.0.0_5432");
    assert_eq!(l.filter_chains.len(), 2);
    let m = l.filter_chains[0].filter_chain_match.as_ref().unwrap();
    assert_eq!(m.prefix_ranges.len(), 1);
    assert_eq!(m.prefix_ranges[0].address_prefix, "10.20.0.0");
    assert_eq!(m.prefix_ranges[0].prefix_len.as_ref().unwrap().value, 16);
    assert_eq!(
        destination(&l.filter_chains[0]),
        ["outbound|5432||ledger.internal"]
    );
    assert_eq!(destination(&l.filter_chains[1]), ["PassthroughCluster"]);
}

#[test]
fn a_tcp_service_without_a_vip_takes_its_port_unless_http_owns_it() {
    let out = resources("", InterceptionMode::Redirect);
    let l = captured(&out, "0.0.0.0_6379");
    assert_eq!(l.filter_chains.len(), 1);
    assert_eq!(
        destination(&l.filter_chains[0]),
        ["outbound|6379||cache.internal"]
    );
    // On 8080 HTTP keeps the wildcard listener; the TCP service with a VIP has its own.
    let http = captured(&out, "0.0.0.0_8080");
    assert_eq!(http.filter_chains.len(), 1);
    assert_eq!(
        http.filter_chains[0].filters[0].name,
        "envoy.filters.network.http_connection_manager"
    );
    assert!(out.routes.contains_key("8080"));
    let queue = captured(&out, "240.240.0.11_8080");
    assert_eq!(
        destination(&queue.filter_chains[0]),
        ["outbound|8080||queue.internal"]
    );
}

#[test]
fn virtual_service_tcp_and_tls_routes_apply_on_captured_listeners() {
    let routes = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mysql, namespace: shop}
spec:
  host: mysql.shop.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql, namespace: shop}
spec:
  hosts: [mysql.shop.svc.cluster.local]
  tcp:
  - route:
    - {destination: {host: mysql.shop.svc.cluster.local, subset: v1}, weight: 90}
    - {destination: {host: mysql.shop.svc.cluster.local, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-split, namespace: shop}
spec:
  hosts: [db.example.com]
  tls:
  - match: [{port: 443, sniHosts: [db.example.com]}]
    route: [{destination: {host: api.example.com}}]
"#;
    let out = resources(routes, InterceptionMode::Redirect);
    let mysql = captured(&out, "240.240.0.10_3306");
    assert_eq!(
        destination(&mysql.filter_chains[0]),
        [
            "outbound|3306|v1|mysql.shop.svc.cluster.local=90",
            "outbound|3306|v2|mysql.shop.svc.cluster.local=10"
        ]
    );
    let tls = captured(&out, "0.0.0.0_443");
    let db: Vec<_> = tls
        .filter_chains
        .iter()
        .filter(|c| sni(c) == ["db.example.com"])
        .collect();
    // One chain for the SNI (Envoy refuses two with one match): the VirtualService's.
    assert_eq!(db.len(), 1);
    assert_eq!(destination(db[0]), ["outbound|443||api.example.com"]);
}

#[test]
fn a_port_an_egress_listener_binds_is_not_captured_again() {
    let sidecar = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - port: {number: 3306, name: tcp-mysql, protocol: TCP}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
  - hosts: ["./*"]
"#;
    let out = resources(sidecar, InterceptionMode::Redirect);
    assert!(out.listeners.contains_key("127.0.0.1_3306"));
    assert!(!out.listeners.contains_key("240.240.0.10_3306"));
    // The catch-all still captures the other ports.
    captured(&out, "0.0.0.0_443");
    captured(&out, "240.240.0.11_8080");
}

#[test]
fn a_sidecar_scopes_captured_listeners_to_its_imports() {
    let sidecar = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - hosts: ["./mysql.shop.svc.cluster.local"]
"#;
    let out = resources(sidecar, InterceptionMode::Redirect);
    let outbound: Vec<&String> = out
        .listeners
        .keys()
        .filter(|n| !n.starts_with("virtual"))
        .collect();
    assert_eq!(outbound, ["240.240.0.10_3306"]);
}

#[test]
fn a_connection_made_to_virtual_outbound_itself_goes_nowhere() {
    let out = resources("", InterceptionMode::Redirect);
    let l = &out.listeners["virtualOutbound"];
    let names: Vec<&str> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["virtualOutbound-blackhole", "virtualOutbound-catchall-tcp"]
    );
    let m = l.filter_chains[0].filter_chain_match.as_ref().unwrap();
    assert_eq!(m.destination_port.as_ref().unwrap().value, 15001);
    assert_eq!(destination(&l.filter_chains[0]), ["BlackHoleCluster"]);
    // ALLOW_ANY: everything else passes through.
    assert_eq!(destination(&l.filter_chains[1]), ["PassthroughCluster"]);
}

#[test]
fn without_capture_there_are_no_captured_listeners() {
    let out = resources("", InterceptionMode::None);
    assert!(
        out.listeners
            .values()
            .all(|l| l.bind_to_port.as_ref().is_none_or(|b| b.value)),
        "{:?}",
        out.listeners.keys()
    );
    assert!(!out.listeners.contains_key("virtualOutbound"));
}

const SNIFFED: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders.shop.svc.cluster.local]
  addresses: [240.240.0.20]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7000, name: orders}]
  endpoints: [{address: 10.1.0.5}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: billing, namespace: shop}
spec:
  hosts: [billing.shop.svc.cluster.local]
  addresses: [240.240.0.21]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7000, name: billing}]
  endpoints: [{address: 10.1.0.6}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-auto, namespace: shop}
spec:
  hosts: [auto.internal]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 7001, name: auto}]
"#;

/// The HTTP connection manager's route config name in a chain, if it has one.
fn rds_of(chain: &FilterChain) -> Option<String> {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    let f = chain
        .filters
        .iter()
        .find(|f| f.name == "envoy.filters.network.http_connection_manager")?;
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        &f.config_type
    else {
        return None;
    };
    match HttpConnectionManager::decode(any.value.as_slice())
        .unwrap()
        .route_specifier?
    {
        RouteSpecifier::Rds(r) => Some(r.route_config_name),
        _ => None,
    }
}

fn has_http_inspector(l: &Listener) -> bool {
    l.listener_filters
        .iter()
        .any(|f| f.name == "envoy.filters.listener.http_inspector")
}

#[test]
fn a_port_without_protocol_is_sniffed_http_first_then_tcp() {
    let out = resources(SNIFFED, InterceptionMode::Redirect);
    let orders = captured(&out, "240.240.0.20_7000");
    assert!(has_http_inspector(&orders));
    // HTTP, then plaintext that is not HTTP, then everything else (TLS).
    assert_eq!(orders.filter_chains.len(), 3);
    let m = orders.filter_chains[0].filter_chain_match.as_ref().unwrap();
    assert_eq!(m.transport_protocol, "raw_buffer");
    assert_eq!(m.application_protocols, ["http/1.1", "h2c"]);
    assert_eq!(
        rds_of(&orders.filter_chains[0]).as_deref(),
        Some("orders.shop.svc.cluster.local:7000")
    );
    let m = orders.filter_chains[1].filter_chain_match.as_ref().unwrap();
    assert_eq!(m.transport_protocol, "raw_buffer");
    assert!(m.application_protocols.is_empty());
    for chain in &orders.filter_chains[1..] {
        assert_eq!(
            destination(chain),
            ["outbound|7000||orders.shop.svc.cluster.local"]
        );
    }
    // HTTP at a VIP reaches only the services at that VIP, not the port's other services.
    let rc = &out.routes["orders.shop.svc.cluster.local:7000"];
    let hosts: Vec<&str> = rc
        .virtual_hosts
        .iter()
        .filter(|v| v.name != "allow_any" && v.name != "block_all")
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(hosts, ["orders.shop.svc.cluster.local:7000"]);
    assert!(
        out.routes
            .contains_key("billing.shop.svc.cluster.local:7000")
    );
    // Without a VIP: the wildcard listener sniffs with route config "PORT", TCP by default.
    let auto = captured(&out, "0.0.0.0_7001");
    assert!(has_http_inspector(&auto));
    assert_eq!(rds_of(&auto.filter_chains[0]).as_deref(), Some("7001"));
    assert_eq!(
        destination(auto.filter_chains.last().unwrap()),
        ["outbound|7001||auto.internal"]
    );
    // The cluster forwards HTTP in the protocol it came in.
    let cluster = &out.clusters["outbound|7000||orders.shop.svc.cluster.local"];
    let options = format!("{:?}", cluster.typed_extension_protocol_options);
    assert!(options.contains("HttpProtocolOptions"), "{options}");
    // Ports with a protocol are not sniffed.
    assert!(!has_http_inspector(&captured(&out, "240.240.0.10_3306")));
}

#[test]
fn a_bound_egress_port_without_protocol_is_sniffed_too() {
    let sidecar = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - port: {number: 7001, name: auto}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
"#;
    let out = resources(&format!("{SNIFFED}{sidecar}"), InterceptionMode::Redirect);
    let l = &out.listeners["127.0.0.1_7001"];
    assert!(has_http_inspector(l));
    assert_eq!(rds_of(&l.filter_chains[0]).as_deref(), Some("7001"));
    assert_eq!(
        destination(l.filter_chains.last().unwrap()),
        ["outbound|7001||auto.internal"]
    );
}
