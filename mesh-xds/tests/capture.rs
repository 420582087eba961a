//! Real iptables capture with real Envoy. The test runs itself again inside a new network
//! namespace (`unshare --net`, then `ip` and `iptables` as `scripts/test.sh` installs them),
//! where NAT rules send outbound connections to 127.10.0.0/16 to Envoy's `virtualOutbound`
//! (15001) and inbound connections to the pod address 127.20.0.1 to `virtualInbound` (15006),
//! as istio-iptables does for a pod. Nothing listens on those addresses: every answer comes
//! through Envoy, over listeners our control plane sent. The namespace, its rules and every
//! process in it end with the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use mesh_test_support::netns::Namespace;
use mesh_test_support::tls::{TlsUpstream, self_signed, tls_get};
use mesh_test_support::{Api, ControlPlane, Proxy, ProxyKind, eventually, serve, upstream};

/// The namespace the test runs in: loopback up and the capture rules (iptables' nf_tables
/// backend, else the legacy one).
const NAMESPACE: Namespace = Namespace {
    marker: "MESH_TEST_IN_CAPTURE_NETNS",
    setup: r#"set -e
PATH="$PATH:/usr/sbin:/sbin"
ip link set lo up
rules() {
  "$1" -t nat -A OUTPUT -p tcp -d 127.10.0.0/16 -j REDIRECT --to-ports 15001 &&
  "$1" -t nat -A OUTPUT -p tcp -d 127.20.0.1/32 -j REDIRECT --to-ports 15006
}
rules iptables 2>/dev/null || rules iptables-legacy
exec "$@"
"#,
    needs: "root, `ip` and `iptables`",
    deadline: Duration::from_secs(180),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_tcp_tls_http_and_inbound_traffic_follows_the_config() {
    if !NAMESPACE
        .run_inside("captured_tcp_tls_http_and_inbound_traffic_follows_the_config")
        .await
    {
        return;
    }
    ProxyKind::each(captured_on).await;
}

async fn captured_on(kind: ProxyKind) {
    let web = upstream::start("web").await;
    let mysql = upstream::start("mysql").await;
    let ledger = upstream::start("ledger").await;
    let app = upstream::start("app").await;
    let orders = upstream::start("orders").await;
    let (dir, cert, key) = self_signed("mesh-capture", "db.example.com");
    let tls_port = mesh_test_support::free_port();
    let _db = TlsUpstream::start_at(&format!("127.0.0.1:{tls_port}"), &cert, &key, &[]);
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  ingress:
  - port: {{number: 9080, name: http, protocol: HTTP}}
    defaultEndpoint: 127.0.0.1:{app}
  - port: {{number: 9081, name: sniffed}}
    defaultEndpoint: 127.0.0.1:{app}
  - port: {{number: 9443, name: sniffed-tls}}
    defaultEndpoint: 127.0.0.1:{tls_port}
  egress:
  - hosts: ["./*"]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [web.shop.svc.cluster.local]
  addresses: [127.10.0.2]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {web}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: mysql, namespace: shop}}
spec:
  hosts: [mysql.shop.svc.cluster.local]
  addresses: [127.10.0.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 3306, name: tcp-mysql, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp-mysql: {mysql}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ledger, namespace: shop}}
spec:
  hosts: [ledger.internal]
  addresses: [127.10.1.0/24]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 5432, name: tcp-pg, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp-pg: {ledger}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {tls_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: orders, namespace: shop}}
spec:
  hosts: [orders.shop.svc.cluster.local]
  addresses: [127.10.0.30]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7000, name: orders}}]
  endpoints: [{{address: 127.0.0.1, ports: {{orders: {orders}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: orders, namespace: shop}}
spec:
  hosts: [orders.shop.svc.cluster.local]
  http:
  - match: [{{headers: {{x-route: {{exact: web}}}}}}]
    route: [{{destination: {{host: web.shop.svc.cluster.local, port: {{number: 8080}}}}}}]
  - route: [{{destination: {{host: orders.shop.svc.cluster.local}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: vault, namespace: shop}}
spec:
  hosts: [vault.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 7443, name: vault}}]
  endpoints: [{{address: 127.0.0.1, ports: {{vault: {tls_port}}}}}]
"#,
        orders = orders.port(),
        app = app.port(),
        web = web.port(),
        mysql = mysql.port(),
        ledger = ledger.port(),
    );
    let cp = ControlPlane::new(&config);
    let (xds, _conns) = serve(cp.clone()).await;
    let node = r#"{id: "sidecar~127.20.0.1~app.shop~shop.svc.cluster.local", cluster: app, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: REDIRECT}}"#;
    let envoy = Proxy::start(kind, xds, Api::Sotw, node).await;
    envoy.wait_live().await;

    let body = async |addr: &str, host: &str| -> Option<String> {
        let addr: SocketAddr = addr.parse().unwrap();
        upstream::get(addr, host, "/", &[])
            .await
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.body)
    };
    // HTTP to the service VIP: 0.0.0.0_8080 and route config "8080".
    let got = eventually(
        "HTTP through the capture",
        Duration::from_secs(30),
        async || body("127.10.0.2:8080", "web.shop.svc.cluster.local").await,
    )
    .await;
    assert_eq!(got, "web");
    // TCP to the service VIP: its own 127.10.0.10_3306 listener.
    assert_eq!(
        body("127.10.0.10:3306", "whatever").await.as_deref(),
        Some("mysql")
    );
    // TCP to any address in the service's CIDR: the prefix chain of 0.0.0.0_5432.
    assert_eq!(
        body("127.10.1.77:5432", "whatever").await.as_deref(),
        Some("ledger")
    );
    // TLS without a VIP, by SNI on 0.0.0.0_443: the bytes reach the upstream untouched.
    assert!(
        tls_get("127.10.0.99:443", "db.example.com")
            .await
            .contains("s_server"),
        "{}",
        envoy.log()
    );
    // Inbound to the pod address: virtualInbound's chain for 9080, then the default endpoint.
    assert_eq!(
        body("127.20.0.1:9080", "app.shop").await.as_deref(),
        Some("app")
    );
    // Inbound ports without a protocol are sniffed too: HTTP through the HTTP connection
    // manager (which adds x-request-id), other bytes as TCP.
    assert_eq!(
        body("127.20.0.1:9081", "app.shop").await.as_deref(),
        Some("app")
    );
    let seen = app.seen.headers.lock().unwrap().last().cloned().unwrap();
    assert!(seen.contains_key("x-request-id"), "{seen:?}");
    assert!(
        tls_get("127.20.0.1:9443", "app.shop")
            .await
            .contains("s_server")
    );
    // A port without a protocol is sniffed: HTTP goes through the VirtualService's routes...
    assert_eq!(
        body("127.10.0.30:7000", "orders.shop.svc.cluster.local")
            .await
            .as_deref(),
        Some("orders")
    );
    let by_header = upstream::get(
        "127.10.0.30:7000".parse().unwrap(),
        "orders.shop.svc.cluster.local",
        "/",
        &[("x-route", "web")],
    )
    .await
    .unwrap();
    assert_eq!(by_header.body, "web");
    // ...and other bytes (TLS here, on a sniffed port without a VIP) are proxied as TCP.
    assert!(
        tls_get("127.10.0.97:7443", "vault.internal")
            .await
            .contains("s_server"),
        "{}",
        envoy.log()
    );
    // REGISTRY_ONLY: an unknown SNI on 443 and an unknown destination go nowhere.
    assert!(
        !tls_get("127.10.0.99:443", "evil.example.com")
            .await
            .contains("s_server")
    );
    assert_eq!(body("127.10.9.9:7777", "whatever").await, None);
    let blackholed = envoy
        .stat("cluster.BlackHoleCluster.upstream_cx_none_healthy")
        .await
        .unwrap_or(0);
    assert!(blackholed >= 2, "BlackHoleCluster saw {blackholed}");
    assert_eq!(
        (
            web.count(),
            mysql.count(),
            ledger.count(),
            app.count(),
            orders.count()
        ),
        (2, 1, 1, 2, 1)
    );
    assert_eq!(envoy.rejections().await, 0, "{}", envoy.log());
    let _ = std::fs::remove_dir_all(&dir);
}
