//! Views shared between proxies, pushes only to changed views, and istiod-style debouncing
//! (on paused tokio time).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_test_support::node;
use mesh_xds::server::{Debounce, SnapshotSource, ViewCache};

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

/// A mesh for the incremental EDS tests: STATIC services with subsets (one also behind an
/// AUTO_PASSTHROUGH gateway), a DNS service, and a routing rule.
fn eds_mesh(a_endpoints: &str, dns_endpoint: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a, namespace: shop}}
spec:
  hosts: [a.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 443, name: tls, protocol: TLS}}]
  endpoints: {a_endpoints}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b, namespace: shop}}
spec:
  hosts: [b.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.0.1.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: shop}}
spec:
  hosts: [ext.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: {dns_endpoint}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: a, namespace: shop}}
spec:
  host: a.shop.svc.cluster.local
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: cross, namespace: shop}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: 15443, name: tls, protocol: TLS}}
    hosts: ["*.shop.svc.cluster.local"]
    tls: {{mode: AUTO_PASSTHROUGH}}
"#
    )
}

fn gateway_node() -> Node {
    let mut n = node(
        "router~10.0.9.9~gw.shop~shop.svc.cluster.local",
        "shop",
        "gw",
    );
    let labels = Struct {
        fields: [(
            "istio".to_string(),
            Value {
                kind: Some(value::Kind::StringValue("eastwestgateway".into())),
            },
        )]
        .into(),
    };
    n.metadata.as_mut().unwrap().fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(value::Kind::StructValue(labels)),
        },
    );
    n
}

const A_BEFORE: &str =
    "[{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]";
const A_AFTER: &str = "[{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.3, labels: {version: v2}}, {address: 10.0.0.4, labels: {version: v2}}]";

/// The view's resources must be exactly what a full translation of the store gives now.
fn assert_full_translation(
    store: &ConfigStore,
    mesh: &MeshConfig,
    node: &Node,
    snap: &mesh_xds::Snapshot,
) {
    let ctx = mesh_xds::PushContext::new(mesh.clone(), store.snapshot());
    let full = mesh_xds::translate_snapshot(&ctx, &mesh_xds::Proxy::from_node(node), "full", None);
    let names = |s: &mesh_xds::Snapshot| -> Vec<(String, String, String)> {
        s.resources
            .iter()
            .flat_map(|(t, m)| {
                m.iter()
                    .map(|(n, r)| (t.clone(), n.clone(), r.version.clone()))
            })
            .collect()
    };
    assert_eq!(names(snap), names(&full));
    assert_eq!(snap.resources, full.resources);
}

#[test]
fn an_endpoint_only_change_translates_only_eds_and_gives_what_a_full_translation_gives() {
    let store = Arc::new(ConfigStore::new());
    let report = store.apply_all(parse_str(&eds_mesh(A_BEFORE, "ext.example.com"), "x"));
    assert!(report.rejected.is_empty(), "{report:?}");
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    let sidecar = node("sidecar~1~p.shop~shop.svc.cluster.local", "shop", "web");
    let gateway = gateway_node();
    let mut views = [cache.watch(&sidecar), cache.watch(&gateway)];
    // Nothing changed since the views were translated: nothing to translate, nobody woken.
    let idle = cache.push_changes();
    assert!(idle.eds_only);
    assert_eq!(idle.changed, 0);
    let before: Vec<_> = views
        .iter_mut()
        .map(|v| v.borrow_and_update().clone())
        .collect();
    assert!(
        before[1]
            .get(
                mesh_xds::resource::ENDPOINT,
                "outbound_.80_.v2_.a.shop.svc.cluster.local"
            )
            .is_some(),
        "the gateway has SNI-DNAT assignments"
    );

    store.apply_all(parse_str(&eds_mesh(A_AFTER, "ext.example.com"), "x"));
    let summary = cache.push_changes();
    assert!(summary.eds_only, "{summary:?}");
    assert_eq!((summary.views, summary.changed), (2, 2));
    for (i, (view, node)) in views.iter_mut().zip([&sidecar, &gateway]).enumerate() {
        let after = view.borrow_and_update().clone();
        assert_full_translation(&store, &MeshConfig::default(), node, &after);
        // Clusters, listeners and routes are the previous push's own allocations.
        for t in [
            mesh_xds::resource::CLUSTER,
            mesh_xds::resource::LISTENER,
            mesh_xds::resource::ROUTE,
        ] {
            // The type's map itself is shared, so streams skip it without looking inside.
            match (before[i].shared_type(t), after.shared_type(t)) {
                (Some(a), Some(b)) => assert!(Arc::ptr_eq(a, b), "{t} map copied"),
                (a, b) => assert_eq!(a.is_none(), b.is_none()),
            }
            let (old, new) = (before[i].of_type(t), after.of_type(t));
            assert_eq!(old.map(|m| m.len()), new.map(|m| m.len()));
            for (name, r) in new.into_iter().flatten() {
                assert!(
                    Arc::ptr_eq(r, &old.unwrap()[name]),
                    "{t} {name} was re-encoded"
                );
            }
        }
        // b's assignment did not change either.
        let eds = mesh_xds::resource::ENDPOINT;
        let b = "outbound|80||b.shop.svc.cluster.local";
        assert!(Arc::ptr_eq(
            before[i].get(eds, b).unwrap(),
            after.get(eds, b).unwrap()
        ));
    }
    // The same store again: nothing to push.
    let again = cache.push_changes();
    assert!(again.eds_only);
    assert_eq!(again.changed, 0);
}

#[test]
fn changes_beyond_static_endpoints_translate_every_resource() {
    let store = Arc::new(ConfigStore::new());
    store.apply_all(parse_str(&eds_mesh(A_BEFORE, "ext.example.com"), "x"));
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    let sidecar = node("sidecar~1~p.shop~shop.svc.cluster.local", "shop", "web");
    let mut view = cache.watch(&sidecar);
    cache.push_changes();
    let mut check = |what: &str, mesh: &MeshConfig, change: &dyn Fn()| {
        change();
        let summary = cache.push_changes();
        assert!(!summary.eds_only, "{what}: {summary:?}");
        assert_eq!(summary.changed, 1, "{what}");
        assert_full_translation(&store, mesh, &sidecar, &view.borrow_and_update());
    };
    let default = MeshConfig::default();
    // A DNS service's endpoints live in its cluster.
    check("DNS endpoints", &default, &|| {
        store.apply_all(parse_str(&eds_mesh(A_BEFORE, "ext2.example.com"), "x"));
    });
    // A new port.
    check("ports", &default, &|| {
        let yaml = eds_mesh(A_BEFORE, "ext2.example.com").replace(
            "[{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.1.1}]",
            "[{number: 80, name: http, protocol: HTTP}, {number: 81, name: http2, protocol: HTTP}]\n  endpoints: [{address: 10.0.1.1}]",
        );
        store.apply_all(parse_str(&yaml, "x"));
    });
    // A DestinationRule, together with endpoints.
    check("DestinationRule", &default, &|| {
        let yaml =
            eds_mesh(A_AFTER, "ext2.example.com").replace("name: v2, labels", "name: v3, labels");
        store.apply_all(parse_str(&yaml, "x"));
    });
    // Mesh settings.
    let mesh = MeshConfig {
        connect_timeout: mesh_model::duration::Duration::from_secs(3),
        ..Default::default()
    };
    check("mesh settings", &mesh, &|| cache.set_mesh(mesh.clone()));
}

#[test]
fn each_view_is_compared_with_what_it_was_translated_from() {
    let store = Arc::new(ConfigStore::new());
    store.apply_all(parse_str(&eds_mesh(A_BEFORE, "ext.example.com"), "x"));
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    let old_node = node("sidecar~1~p.shop~shop.svc.cluster.local", "shop", "web");
    let mut old_view = cache.watch(&old_node);
    // A DestinationRule changes before the second view is first translated.
    let renamed =
        eds_mesh(A_BEFORE, "ext.example.com").replace("name: v2, labels", "name: v3, labels");
    store.apply_all(parse_str(&renamed, "x"));
    let new_node = node("sidecar~2~q.shop~shop.svc.cluster.local", "shop", "api");
    let mut new_view = cache.watch(&new_node);
    // Then only endpoints change: the second view needs EDS alone, the first everything.
    let moved =
        eds_mesh(A_AFTER, "ext.example.com").replace("name: v2, labels", "name: v3, labels");
    store.apply_all(parse_str(&moved, "x"));
    let summary = cache.push_changes();
    assert!(
        !summary.eds_only,
        "the first view must be translated in full"
    );
    assert_eq!(summary.changed, 2);
    let mesh = MeshConfig::default();
    assert_full_translation(&store, &mesh, &old_node, &old_view.borrow_and_update());
    assert_full_translation(&store, &mesh, &new_node, &new_view.borrow_and_update());
    // Both are now translated from the same store: the next endpoint change is EDS-only.
    store.apply_all(parse_str(
        &eds_mesh(A_BEFORE, "ext.example.com").replace("name: v2, labels", "name: v3, labels"),
        "x",
    ));
    let summary = cache.push_changes();
    assert!(summary.eds_only, "{summary:?}");
    assert_full_translation(&store, &mesh, &old_node, &old_view.borrow_and_update());
    assert_full_translation(&store, &mesh, &new_node, &new_view.borrow_and_update());
}
