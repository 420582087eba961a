//! Multi-network endpoints (Istio's `meshNetworks`) on the translated output, istiod's split
//! horizon: a proxy gets the endpoints of its own network and of networks without a gateway;
//! an endpoint behind another network's gateway is replaced by that network's gateways (with
//! `tlsMode: istio`, reached over mTLS, the weight split evenly over the gateways), or left out
//! when it does not accept mTLS. An endpoint without a `network` is placed by the networks'
//! `fromCidr` rules.
//!
//! With real Envoys, [`cross_network_requests_go_through_the_east_west_gateway_over_mtls`]
//! follows one request over the split horizon: client sidecar → east-west gateway → server
//! sidecar → application.

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

/// Two networks with real Envoys (reference: security §6.3, §6.4): `httpbin`'s only endpoint
/// is a STRICT-mTLS sidecar in `network-2`, `plain`'s a plaintext application in `network-2`;
/// a client sidecar in `network-1`; `network-2`'s east-west gateway (an `AUTO_PASSTHROUGH`
/// server) at the address `meshNetworks` gives for it. Every proxy gets its certificate from
/// its own agent. Runs on every selected proxy (`MESH_PROXIES`).
struct CrossNetwork {
    app: mesh_test_support::upstream::Upstream,
    client: mesh_test_support::Proxy,
    server: mesh_test_support::Proxy,
    gateway: mesh_test_support::Proxy,
    /// `httpbin`'s (and `plain`'s) service port, the client's egress listener.
    service: u16,
    /// The server sidecar's inbound port.
    inbound: u16,
    /// The gateway's port.
    east_west: u16,
}

const HTTPBIN: &str = "httpbin.foo.svc.cluster.local";
const PLAIN: &str = "plain.foo.svc.cluster.local";

impl CrossNetwork {
    async fn start(kind: mesh_test_support::ProxyKind) -> CrossNetwork {
        use mesh_test_support::{Api, ControlPlane, Proxy, eventually, free_port, serve, upstream};
        use std::time::Duration;
        let app = upstream::start("httpbin").await;
        let (service, inbound, east_west) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: foo}}
spec:
  hosts: [{HTTPBIN}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {service}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {inbound}}}, network: network-2, serviceAccount: httpbin, labels: {{app: httpbin}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: plain, namespace: foo}}
spec:
  hosts: [{PLAIN}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {service}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {app}}}, network: network-2}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: foo}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: server, namespace: foo}}
spec:
  workloadSelector: {{labels: {{app: httpbin}}}}
  ingress:
  - port: {{number: {inbound}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app}
  egress: [{{hosts: ["./*"]}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: client, namespace: bar}}
spec:
  egress:
  - port: {{number: {service}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["foo/*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: cross-network, namespace: istio-system}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: {east_west}, name: tls, protocol: TLS}}
    bind: 127.0.0.1
    hosts: ["*.local"]
    tls: {{mode: AUTO_PASSTHROUGH}}
"#,
            app = app.port()
        );
        let cp = ControlPlane::new(&config);
        let (networks, warnings) = parse_mesh_networks(&format!(
            "networks:\n  network-1:\n    endpoints: [{{fromRegistry: cluster-1}}]\n  \
             network-2:\n    endpoints: [{{fromRegistry: cluster-2}}]\n    \
             gateways: [{{address: 127.0.0.1, port: {east_west}}}]\n"
        ))
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        cp.set_networks(networks);
        let (xds, _) = serve(cp.clone()).await;
        let client_node = r#"{id: "sidecar~127.0.0.1~sleep-1.bar~bar.svc.cluster.local", cluster: sleep, metadata: {NAMESPACE: bar, NETWORK: network-1, INTERCEPTION_MODE: NONE, LABELS: {app: sleep}}}"#;
        let server_node = r#"{id: "sidecar~127.0.0.1~httpbin-1.foo~foo.svc.cluster.local", cluster: httpbin, metadata: {NAMESPACE: foo, NETWORK: network-2, INTERCEPTION_MODE: NONE, LABELS: {app: httpbin}}}"#;
        let gateway_node = r#"{id: "router~127.0.0.1~eastwest-1.istio-system~istio-system.svc.cluster.local", cluster: eastwest, metadata: {NAMESPACE: istio-system, NETWORK: network-2, LABELS: {istio: eastwestgateway}}}"#;
        let (client, server, gateway) = tokio::join!(
            Proxy::start_workload(kind, xds, Api::Sotw, client_node, "sleep"),
            Proxy::start_workload(kind, xds, Api::Sotw, server_node, "httpbin"),
            Proxy::start_workload(kind, xds, Api::Sotw, gateway_node, "eastwest"),
        );
        let net = CrossNetwork {
            app,
            client,
            server,
            gateway,
            service,
            inbound,
            east_west,
        };
        eventually(
            "the request crosses the networks",
            Duration::from_secs(30),
            async || {
                let r = upstream::get(net.via(), HTTPBIN, "/", &[]).await.ok()?;
                (r.status == 200 && r.body == "httpbin").then_some(())
            },
        )
        .await;
        net
    }

    /// The client's egress listener.
    fn via(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.service).parse().unwrap()
    }

    fn gateway_addr(&self) -> String {
        format!("127.0.0.1:{}", self.east_west)
    }

    /// The SNI (and SNI-DNAT cluster name) of `host`'s service port.
    fn sni(&self, host: &str) -> String {
        format!("outbound_.{}_._.{host}", self.service)
    }

    /// The gateway's `no_filter_chain_match`.
    async fn no_chain(&self) -> u64 {
        let name = format!(
            "listener.127.0.0.1_{}.no_filter_chain_match",
            self.east_west
        );
        self.gateway.stat(&name).await.unwrap_or(0)
    }

    async fn no_rejections(&self) {
        for p in [&self.client, &self.server, &self.gateway] {
            assert_eq!(p.rejections().await, 0, "{}", p.log());
        }
    }
}

/// The endpoint addresses of `cluster` on `proxy` (its admin `/clusters`).
/// Across networks (reference: security §8.3 case 23): the client's EDS holds the gateway
/// instead of `httpbin`'s endpoint, so it opens mTLS to the gateway with the SNI
/// `outbound_.PORT_._.HOST` and the server's SANs; the gateway routes by that SNI to its
/// SNI-DNAT cluster without terminating TLS; the server sidecar terminates the client's mTLS
/// and tells the application the client's SPIFFE ID. Every hop counts the same connections. A
/// wrong SNI finds no chain on the gateway; plaintext to the server is refused; `plain` (no
/// mTLS, behind the gateway) is left out of the client's EDS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_network_requests_go_through_the_east_west_gateway_over_mtls() {
    mesh_test_support::ProxyKind::each(cross_network_on).await;
}

async fn cross_network_on(kind: mesh_test_support::ProxyKind) {
    use mesh_test_support::{Proxy, tls::tls_get, upstream};
    let net = CrossNetwork::start(kind).await;
    let (via, app) = (net.via(), &net.app);
    for _ in 0..3 {
        let r = upstream::get(via, HTTPBIN, "/", &[]).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "httpbin"));
    }
    // The server sidecar terminated the client's own mTLS: the application sees its SPIFFE ID.
    let xfcc: Vec<String> = app
        .seen
        .headers
        .lock()
        .unwrap()
        .iter()
        .map(|h| {
            h.get("x-forwarded-client-cert")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert!(
        xfcc.iter()
            .all(|x| x.contains("URI=spiffe://cluster.local/ns/bar/sa/sleep")),
        "XFCC at the app: {xfcc:?}"
    );
    // The client's only endpoint for httpbin is the gateway.
    let cluster = format!("outbound|{}||{HTTPBIN}", net.service);
    assert_eq!(
        net.client.cluster_hosts(&cluster).await,
        [net.gateway_addr()]
    );
    // Each hop carries the same new connections: three requests at once (the application
    // holds each answer a little) make the client open connections beside its pooled one, and
    // every one of them is a TLS handshake at the client, a passthrough connection by SNI at
    // the gateway (in and out) and a TLS handshake at the server.
    let stat = async |p: &Proxy, name: &str| p.stat(name).await.unwrap_or(0);
    let sni = net.sni(HTTPBIN);
    let hops = async || {
        (
            stat(&net.client, &format!("cluster.{cluster}.ssl.handshake")).await,
            stat(&net.gateway, &format!("tcp.{sni}.downstream_cx_total")).await,
            stat(&net.gateway, &format!("cluster.{sni}.upstream_cx_total")).await,
            stat(
                &net.server,
                &format!("listener.127.0.0.1_{}.ssl.handshake", net.inbound),
            )
            .await,
        )
    };
    let before = hops().await;
    let served = app.count();
    app.seen
        .delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let (a, b, c) = tokio::join!(
        upstream::get(via, HTTPBIN, "/", &[]),
        upstream::get(via, HTTPBIN, "/", &[]),
        upstream::get(via, HTTPBIN, "/", &[]),
    );
    app.seen
        .delay_ms
        .store(0, std::sync::atomic::Ordering::SeqCst);
    for r in [a, b, c] {
        assert_eq!(r.unwrap().status, 200);
    }
    assert_eq!(app.count(), served + 3);
    let after = hops().await;
    let new = after.0 - before.0;
    assert!(new >= 2, "new client connections: {before:?} → {after:?}");
    assert_eq!(
        (after.1 - before.1, after.2 - before.2, after.3 - before.3),
        (new, new, new),
        "gateway in, gateway out, server TLS: {before:?} → {after:?}"
    );
    assert_eq!(
        stat(
            &net.server,
            &format!("http.inbound_0.0.0.0_{};.downstream_rq_total", net.inbound)
        )
        .await,
        app.count(),
        "every request the app saw came through the server sidecar"
    );
    // A wrong SNI matches no chain of the gateway.
    let before = net.no_chain().await;
    let out = tls_get(
        &net.gateway_addr(),
        &net.sni("nothing.foo.svc.cluster.local"),
    )
    .await;
    assert!(out.is_empty(), "{out}");
    assert_eq!(net.no_chain().await, before + 1);
    // Plaintext to the server is refused (STRICT).
    let direct: std::net::SocketAddr = format!("127.0.0.1:{}", net.inbound).parse().unwrap();
    assert!(upstream::get(direct, HTTPBIN, "/", &[]).await.is_err());
    // plain has no mTLS and lives behind the gateway: the client has no endpoint for it.
    let plain = format!("outbound|{}||{PLAIN}", net.service);
    assert!(net.client.clusters().await.contains(&plain));
    assert_eq!(net.client.cluster_hosts(&plain).await, Vec::<String>::new());
    net.no_rejections().await;
}

/// What istiod's east-west gateway does beyond the above (`gateway.go
/// builtAutoPassthroughFilterChains`, `ep_filters.go EndpointsWithMTLSFilter`: "it should not
/// be possible for anyone to access a cluster without mTLS"): its AUTO_PASSTHROUGH chains also
/// match Istio's mTLS ALPNs (`allIstioMtlsALPNs`), so a TLS client outside the mesh finds no
/// chain even with the right SNI; and its SNI-DNAT clusters keep only mTLS endpoints, so
/// `plain`'s cluster on the gateway has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn east_west_gateway_takes_only_mesh_mtls() {
    mesh_test_support::ProxyKind::each(mesh_mtls_only_on).await;
}

async fn mesh_mtls_only_on(kind: mesh_test_support::ProxyKind) {
    use mesh_test_support::tls::tls_get;
    let net = CrossNetwork::start(kind).await;
    // The right SNI without a mesh ALPN (openssl offers none): no chain.
    let before = net.no_chain().await;
    let out = tls_get(&net.gateway_addr(), &net.sni(HTTPBIN)).await;
    assert!(out.is_empty(), "{out}");
    assert_eq!(net.no_chain().await, before + 1);
    // plain's SNI-DNAT cluster exists on the gateway but holds no endpoint.
    let plain = net.sni(PLAIN);
    assert!(net.gateway.clusters().await.contains(&plain));
    assert_eq!(
        net.gateway.cluster_hosts(&plain).await,
        Vec::<String>::new()
    );
    net.no_rejections().await;
}
