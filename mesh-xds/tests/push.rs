//! Views shared between proxies, pushes only to changed views, and istiod-style debouncing
//! (on paused tokio time).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_xds::server::{Debounce, SnapshotSource, ViewCache};

fn node(id: &str, ns: &str, app: &str) -> Node {
    let labels = Struct {
        fields: [(
            "app".to_string(),
            Value {
                kind: Some(value::Kind::StringValue(app.into())),
            },
        )]
        .into(),
    };
    Node {
        id: id.into(),
        metadata: Some(Struct {
            fields: [
                (
                    "NAMESPACE".to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(ns.into())),
                    },
                ),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(value::Kind::StructValue(labels)),
                    },
                ),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

fn service(name: &str, ns: &str, ip: &str, export: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{hosts: [{name}.{ns}.svc.cluster.local], location: MESH_INTERNAL, resolution: STATIC, ports: [{{number: 80, name: http, protocol: HTTP}}], endpoints: [{{address: {ip}}}], exportTo: [\"{export}\"]}}\n---\n"
    )
}

#[test]
fn proxies_with_the_same_view_share_encoded_resources() {
    let store = Arc::new(ConfigStore::new());
    store.apply_all(parse_str(&service("a", "shop", "10.0.0.1", "*"), "x"));
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    let r1 = cache.watch(&node(
        "sidecar~10.0.0.1~p1.shop~shop.svc.cluster.local",
        "shop",
        "web",
    ));
    let r2 = cache.watch(&node(
        "sidecar~10.0.0.2~p2.shop~shop.svc.cluster.local",
        "shop",
        "web",
    ));
    let r3 = cache.watch(&node(
        "sidecar~10.0.0.3~p3.shop~shop.svc.cluster.local",
        "shop",
        "db",
    ));
    assert_eq!(cache.view_count(), 2);
    assert!(
        Arc::ptr_eq(&r1.borrow(), &r2.borrow()),
        "same view, same snapshot"
    );
    assert!(!Arc::ptr_eq(&r1.borrow(), &r3.borrow()));
}

#[test]
fn only_views_whose_output_changed_are_woken_and_unchanged_resources_are_reused() {
    let store = Arc::new(ConfigStore::new());
    store.apply_all(parse_str(
        &format!(
            "{}{}",
            service("a", "shop", "10.0.0.1", "."),
            service("b", "other", "10.0.0.2", ".")
        ),
        "x",
    ));
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    let mut shop = cache.watch(&node(
        "sidecar~1~p.shop~shop.svc.cluster.local",
        "shop",
        "web",
    ));
    let mut other = cache.watch(&node(
        "sidecar~2~q.other~other.svc.cluster.local",
        "other",
        "web",
    ));
    let before = shop.borrow_and_update().clone();
    other.borrow_and_update();
    // A change visible only in `shop`.
    store.apply_all(parse_str(&service("a", "shop", "10.0.0.9", "."), "x"));
    let summary = cache.push_all();
    assert_eq!((summary.views, summary.changed), (2, 1));
    assert!(shop.has_changed().unwrap());
    assert!(!other.has_changed().unwrap());
    let after = shop.borrow_and_update().clone();
    // Only the endpoint assignment changed; the cluster's encoded resource is the same Arc.
    let cluster = "outbound|80||a.shop.svc.cluster.local";
    let cds = mesh_xds::resource::CLUSTER;
    let eds = mesh_xds::resource::ENDPOINT;
    assert!(Arc::ptr_eq(
        before.get(cds, cluster).unwrap(),
        after.get(cds, cluster).unwrap()
    ));
    assert_ne!(
        before.get(eds, cluster).unwrap().version,
        after.get(eds, cluster).unwrap().version
    );
    // Views without watchers are dropped at the next push.
    drop(other);
    assert_eq!(cache.push_all().views, 1);
}

#[tokio::test(start_paused = true)]
async fn changes_are_debounced_like_istiod() {
    let store = Arc::new(ConfigStore::new());
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    let _watch = cache.watch(&node(
        "sidecar~1~p.shop~shop.svc.cluster.local",
        "shop",
        "web",
    ));
    let mut pushes = cache.subscribe_pushes();
    tokio::spawn(
        cache
            .clone()
            .run_debounced(store.subscribe(), Debounce::default()),
    );
    // A burst of three changes 30 ms apart: one push, 100 ms after the last.
    let t0 = tokio::time::Instant::now();
    for i in 0..3 {
        store.apply_all(parse_str(
            &service(&format!("s{i}"), "shop", "10.0.0.1", "*"),
            "x",
        ));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let p = pushes.recv().await.unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(160) && waited < Duration::from_millis(300),
        "{waited:?}"
    );
    assert_eq!(p.changed, 1);
    assert!(matches!(
        pushes.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
    // Changes every 50 ms never leave a quiet period: the 10 s maximum forces a push.
    let t1 = tokio::time::Instant::now();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                store.apply_all(parse_str(
                    &service(&format!("t{i}"), "shop", "10.0.0.1", "*"),
                    "x",
                ));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let _ = pushes.recv().await.unwrap();
    let waited = t1.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_200),
        "{waited:?}"
    );
    writer.abort();
}

#[test]
fn snapshot_cache_wakes_watchers_only_on_change() {
    use mesh_xds::server::SnapshotCache;
    let cache = SnapshotCache::new(|n: &Node| n.cluster.clone());
    let node = |id: &str, cluster: &str| Node {
        id: id.into(),
        cluster: cluster.into(),
        ..Default::default()
    };
    // Nodes hash by cluster: two nodes of one cluster share a view.
    let mut a = cache.watch(&node("a", "web"));
    let b = cache.watch(&node("b", "web"));
    assert_eq!(cache.keys(), ["web"]);
    let store = Arc::new(ConfigStore::new());
    store.apply_all(parse_str(&service("a", "shop", "10.0.0.1", "*"), "x"));
    let ctx = mesh_xds::PushContext::new(MeshConfig::default(), store.snapshot());
    let snap = mesh_xds::Snapshot::from_resources(
        "1",
        &mesh_xds::translate(&ctx, &mesh_xds::Proxy::default()),
        None,
    );
    assert!(cache.set_snapshot("web", snap.clone()));
    assert!(a.has_changed().unwrap());
    assert!(Arc::ptr_eq(&a.borrow_and_update(), &b.borrow()));
    // The same resources under a new version string wake nobody.
    let mut same = snap.clone();
    same.version = "2".into();
    assert!(!cache.set_snapshot("web", same));
    assert!(!a.has_changed().unwrap());
    // Views nobody watches are pruned.
    drop((a, b));
    assert_eq!(cache.prune(), 1);
    assert!(cache.keys().is_empty());
}

/// `ViewCache::set_networks` reaches the next push: an endpoint behind another network's
/// gateway leaves the proxy's assignment (the translation rules are in networks.rs).
#[test]
fn mesh_networks_apply_at_the_next_push() {
    let store = Arc::new(ConfigStore::new());
    store.apply_all(parse_str(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: shop}\nspec: {hosts: [a.shop.svc.cluster.local], location: MESH_INTERNAL, resolution: STATIC, ports: [{number: 80, name: http, protocol: HTTP}], endpoints: [{address: 10.0.0.1}, {address: 10.9.0.1, network: far}]}\n",
        "x",
    ));
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    let mut view = cache.watch(&node(
        "sidecar~1~p.shop~shop.svc.cluster.local",
        "shop",
        "web",
    ));
    let eds = mesh_xds::resource::ENDPOINT;
    let cluster = "outbound|80||a.shop.svc.cluster.local";
    let endpoints = |s: &mesh_xds::Snapshot| {
        let r = s.get(eds, cluster).unwrap();
        let cla = <envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment as prost::Message>::decode(r.value()).unwrap();
        cla.endpoints
            .iter()
            .map(|g| g.lb_endpoints.len())
            .sum::<usize>()
    };
    assert_eq!(endpoints(&view.borrow_and_update()), 2);
    let (networks, _) = mesh_model::parse_mesh_networks(
        "networks: {far: {gateways: [{address: 203.0.113.9, port: 15443}]}}",
    )
    .unwrap();
    cache.set_networks(networks);
    let summary = cache.push_all();
    assert_eq!(summary.changed, 1);
    assert_eq!(endpoints(&view.borrow_and_update()), 1);
}
