//! Live updates with a real Envoy: config changes re-route without restarts, deleted services
//! disappear (SotW and delta, including a delta reconnect), invalid config never reaches the
//! proxy, and a NACKed push leaves Envoy on its last good config.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use mesh_test_support::{
    Api, ControlPlane, Proxy, ProxyKind, eventually, free_port, serve_at, upstream,
};
use mesh_xds::resource;
use mesh_xds::server::SyncStatus;

const NODE_ID: &str = "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local";
const NODE: &str = r#"{id: "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local", cluster: client, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE}}"#;

fn config(port: u16, services: &[(&str, &upstream::Upstream)], vs_subset: Option<&str>) -> String {
    let mut s = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    captureMode: NONE
    hosts: ["./*"]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
"#
    );
    for (name, up) in services {
        s.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: {}}}}}
"#,
            up.port(),
            up.name
        ));
    }
    if let Some(subset) = vs_subset {
        s.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets: [{{name: a, labels: {{version: a}}}}, {{name: b, labels: {{version: b}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: reviews, subset: {subset}}}}}]}}]
"#
        ));
    }
    s
}

async fn body(addr: SocketAddr, host: &str) -> Option<(u16, String)> {
    let r = upstream::get(addr, host, "/", &[]).await.ok()?;
    Some((r.status, r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_config_changes_and_deletions() {
    ProxyKind::each(routing_follows_config_changes_and_deletions_on).await;
}

async fn routing_follows_config_changes_and_deletions_on(kind: ProxyKind) {
    for api in [Api::Sotw, Api::Delta] {
        let a = upstream::start("a").await;
        let b = upstream::start("b").await;
        let ratings = upstream::start("ratings").await;
        let port = free_port();
        let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // reviews has two endpoints (a and b) through one ServiceEntry.
        let two = |subset: &str, with_ratings: bool| {
            let with: [(&str, &upstream::Upstream); 1] = [("ratings", &ratings)];
            let services: &[(&str, &upstream::Upstream)] = if with_ratings { &with } else { &[] };
            let mut c = config(port, services, Some(subset));
            c.push_str(&format!(
                r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: a}}}}
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: b}}}}
"#,
                a.port(),
                b.port()
            ));
            c
        };
        let cp = ControlPlane::new(&two("a", true));
        let served = serve_at(cp.clone(), "127.0.0.1:0".parse().unwrap()).await;
        let envoy = Proxy::start(kind, served.addr, api, NODE).await;
        envoy.wait_live().await;
        eventually("v=a", Duration::from_secs(20), async || {
            (body(listener, "reviews").await? == (200, "a".into())).then_some(())
        })
        .await;
        assert_eq!(
            body(listener, "ratings").await.unwrap(),
            (200, "ratings".into())
        );

        // Re-route without restarting Envoy.
        cp.replace(&two("b", true));
        eventually("v=b", Duration::from_secs(10), async || {
            (body(listener, "reviews").await? == (200, "b".into())).then_some(())
        })
        .await;

        // Delete ratings: its cluster goes away and the host is unknown.
        let ratings_cluster = format!("outbound|{port}||ratings.shop.svc.cluster.local");
        assert!(envoy.clusters().await.contains(&ratings_cluster));
        let report = cp.replace(&two("b", false));
        assert_eq!(report.deleted.len(), 1);
        eventually(
            "ratings cluster removed",
            Duration::from_secs(10),
            async || (!envoy.clusters().await.contains(&ratings_cluster)).then_some(()),
        )
        .await;
        // The route update follows the cluster removal in its own response: wait for it.
        eventually(
            "ratings unknown (502)",
            Duration::from_secs(10),
            async || (body(listener, "ratings").await?.0 == 502).then_some(()),
        )
        .await;

        if api == Api::Delta {
            // Control-plane restart: Envoy reconnects with initial_resource_versions; the new
            // server sends only what changed and removes what no longer exists.
            let addr = served.addr;
            served.stop().await;
            cp.replace(&two("a", false));
            let served = serve_at(cp.clone(), addr).await;
            eventually("reconnected and v=a", Duration::from_secs(30), async || {
                (body(listener, "reviews").await? == (200, "a".into())).then_some(())
            })
            .await;
            let conns = served.connections.list();
            assert_eq!(conns.len(), 1);
            assert_eq!(conns[0].protocol, "delta");
            served.stop().await;
        } else {
            served.stop().await;
        }
        assert_eq!(envoy.rejections().await, 0, "{}", envoy.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_listener_keeps_the_last_good_config_and_shows_error() {
    ProxyKind::each(a_nacked_listener_keeps_the_last_good_config_and_shows_error_on).await;
}

async fn a_nacked_listener_keeps_the_last_good_config_and_shows_error_on(kind: ProxyKind) {
    let ups = upstream::start("a").await;
    let good_port = free_port();
    // Hold a port so that Envoy cannot bind a listener there and must NACK it.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = blocker.local_addr().unwrap().port();
    let base = config(good_port, &[("reviews", &ups)], None);
    let cp = ControlPlane::new(&base);
    let served = serve_at(cp.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let envoy = Proxy::start(kind, served.addr, Api::Sotw, NODE).await;
    envoy.wait_live().await;
    let good: SocketAddr = format!("127.0.0.1:{good_port}").parse().unwrap();
    eventually("routable", Duration::from_secs(20), async || {
        (body(good, "reviews").await? == (200, "a".into())).then_some(())
    })
    .await;

    // A second egress listener on the busy port: valid Istio config, but Envoy cannot bind it.
    let with_busy = base.replacen(
        "  outboundTrafficPolicy",
        &format!("  - port: {{number: {busy_port}, name: http2, protocol: HTTP}}\n    captureMode: NONE\n    hosts: [\"./*\"]\n  outboundTrafficPolicy"),
        1,
    );
    let lds_pushes = |c: &std::sync::Arc<mesh_xds::server::Connections>| {
        c.list()
            .iter()
            .find(|x| x.node_id == NODE_ID)
            .and_then(|x| x.types.get(resource::LISTENER).cloned())
    };
    cp.replace(&with_busy);
    let status = eventually("LDS NACK recorded", Duration::from_secs(10), async || {
        let s = lds_pushes(&served.connections)?;
        (s.status() == SyncStatus::Error).then_some(s)
    })
    .await;
    assert!(
        status
            .nack
            .as_deref()
            .unwrap()
            .contains(&busy_port.to_string()),
        "{status:?}"
    );
    assert!(
        envoy
            .stat("listener_manager.lds.update_rejected")
            .await
            .unwrap()
            >= 1
    );
    // The proxy keeps serving its last good listener.
    assert_eq!(body(good, "reviews").await.unwrap(), (200, "a".into()));

    // An unrelated change (a new endpoint) is pushed, but the rejected listeners are not
    // re-sent in a loop.
    let pushes = status.pushes;
    let b = upstream::start("b").await;
    cp.replace(&format!(
        "{with_busy}{}",
        config(good_port, &[("extra", &b)], None)
            .split("---\n")
            .skip(1)
            .map(|d| format!("---\n{d}"))
            .collect::<String>()
    ));
    eventually(
        "extra service routable",
        Duration::from_secs(10),
        async || (body(good, "extra").await? == (200, "b".into())).then_some(()),
    )
    .await;
    let after = lds_pushes(&served.connections).unwrap();
    assert_eq!(after.status(), SyncStatus::Error);
    // One LDS push for the new service's vhost is allowed only if LDS content changed; it did
    // not (routes are RDS), so the count is unchanged.
    assert_eq!(after.pushes, pushes, "rejected LDS content is not re-sent");

    // Free the port: the next push is accepted and the status returns to SYNCED.
    drop(blocker);
    cp.replace(&base);
    eventually("LDS synced again", Duration::from_secs(10), async || {
        (lds_pushes(&served.connections)?.status() == SyncStatus::Synced).then_some(())
    })
    .await;
    served.stop().await;
}
