//! The aggregate and its adapters: merge rules, resyncs, the ServiceEntry adapter, and a custom
//! adapter written against the trait as a user would, end to end to a real Envoy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mesh_model::service::{Endpoint, Service, ServicePort, ServiceRegistry};
use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_registry::{
    Aggregate, AggregateError, Provider, Registry, RegistryId, RegistrySink, RunFuture,
    ServiceEntries, ServiceKey,
};
use mesh_test_support::wait::eventually;
use tokio::sync::mpsc;

const ORDERS: &str = "orders.shop.svc.cluster.local";

fn orders(ports: &[u32], ips: &[&str]) -> Service {
    let mut s = Service::new(ORDERS, "shop");
    s.ports = ports
        .iter()
        .map(|p| ServicePort::new(format!("http-{p}"), *p, "HTTP"))
        .collect();
    s.endpoints = ips.iter().map(|ip| Endpoint::new(*ip)).collect();
    s
}

fn addresses(r: &ServiceRegistry, host: &str) -> Vec<String> {
    r.get(host)
        .map(|s| s.endpoints.iter().map(|e| e.address.clone()).collect())
        .unwrap_or_default()
}

/// Waits until the aggregate publishes a registry `done` accepts.
async fn published(
    rx: &mut tokio::sync::watch::Receiver<Arc<ServiceRegistry>>,
    what: &str,
    done: impl Fn(&ServiceRegistry) -> bool,
) -> Arc<ServiceRegistry> {
    let r = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| done(r)))
        .await
        .unwrap_or_else(|_| panic!("{what}: not published within 5 s"))
        .expect("the aggregate is alive");
    r.clone()
}

#[tokio::test]
async fn a_resync_removes_what_it_did_not_see_and_nothing_else() {
    let agg = Aggregate::new();
    let sink = agg.sink(RegistryId::new(Provider::Consul, "dc1")).unwrap();
    let epoch = sink.begin_resync();
    sink.upsert(orders(&[80], &["10.0.0.1"]));
    let mut pay = Service::new("pay.shop.svc.cluster.local", "shop");
    pay.endpoints.push(Endpoint::new("10.0.0.9"));
    sink.upsert(pay);
    assert!(!agg.synced(), "not synced before the first resync ends");
    sink.end_resync(epoch);
    assert!(agg.synced());
    assert_eq!(agg.snapshot().len(), 2);
    // A relist that sees only `orders` (pay vanished while the adapter was not looking).
    let epoch = sink.begin_resync();
    sink.upsert(orders(&[80], &["10.0.0.1"]));
    // Mid-resync nothing is removed yet.
    assert_eq!(agg.snapshot().len(), 2);
    sink.end_resync(epoch);
    let r = agg.snapshot();
    assert_eq!(r.len(), 1);
    assert_eq!(addresses(&r, ORDERS), ["10.0.0.1"]);
    // An abandoned resync (another began) sweeps nothing.
    let old = sink.begin_resync();
    let _new = sink.begin_resync();
    sink.end_resync(old);
    assert_eq!(agg.snapshot().len(), 1);
}

#[tokio::test]
async fn writing_the_same_thing_again_publishes_nothing() {
    let agg = Aggregate::new();
    let sink = agg.sink(RegistryId::new(Provider::Consul, "dc1")).unwrap();
    sink.upsert(orders(&[80], &["10.0.0.1", "10.0.0.2"]));
    let mut rx = agg.subscribe();
    published(&mut rx, "orders", |r| r.get(ORDERS).is_some()).await;
    let first = agg.snapshot();
    let updates = agg.status()[0].updates;
    // The same service, endpoints in another order: no change anywhere.
    sink.upsert(orders(&[80], &["10.0.0.2", "10.0.0.1"]));
    assert_eq!(agg.status()[0].updates, updates);
    assert!(Arc::ptr_eq(&first, &agg.snapshot()));
    // An endpoint change publishes a registry that differs in that service's endpoints only.
    sink.set_endpoints(
        ServiceKey::new(ORDERS, "shop"),
        vec![Endpoint::new("10.0.0.3")],
    );
    let next = published(&mut rx, "new endpoints", |r| {
        addresses(r, ORDERS) == ["10.0.0.3"]
    })
    .await;
    assert_eq!(
        next.endpoint_changes(&first),
        Some([ORDERS.to_string()].into_iter().collect())
    );
}

#[tokio::test]
async fn endpoints_before_their_service_wait_for_it() {
    let agg = Aggregate::new();
    let sink = agg
        .sink(RegistryId::new(Provider::Kubernetes, "Kubernetes"))
        .unwrap();
    let key = ServiceKey::new(ORDERS, "shop");
    sink.set_endpoints(key.clone(), vec![Endpoint::new("10.0.0.1")]);
    assert!(agg.snapshot().get(ORDERS).is_none());
    sink.upsert_service(orders(&[80], &[]));
    assert_eq!(addresses(&agg.snapshot(), ORDERS), ["10.0.0.1"]);
    // A service update (new port) keeps the endpoints it does not carry.
    sink.upsert_service(orders(&[80, 81], &[]));
    let r = agg.snapshot();
    assert_eq!(r.get(ORDERS).unwrap().ports.len(), 2);
    assert_eq!(addresses(&r, ORDERS), ["10.0.0.1"]);
    sink.remove_service(&key);
    assert!(agg.snapshot().is_empty());
}

#[tokio::test]
async fn kubernetes_clusters_merge_one_service_and_the_first_cluster_wins_ports() {
    let agg = Aggregate::new();
    let c1 = agg
        .sink(RegistryId::new(Provider::Kubernetes, "c1"))
        .unwrap();
    let c2 = agg
        .sink(RegistryId::new(Provider::Kubernetes, "c2"))
        .unwrap();
    let se = agg
        .sink(RegistryId::new(Provider::External, "Kubernetes"))
        .unwrap();
    let mut one = orders(&[80], &["10.1.0.1"]);
    one.addresses = vec!["10.96.0.10".into()];
    let mut two = orders(&[80, 9090], &["10.2.0.1", "10.2.0.2"]);
    two.addresses = vec!["10.97.0.10".into()];
    c2.upsert(two);
    c1.upsert(one);
    // A ServiceEntry of the same host and namespace comes after the Kubernetes service.
    se.upsert(orders(&[443], &["192.0.2.1"]));
    let r = agg.snapshot();
    let svc = r.get(ORDERS).unwrap();
    assert_eq!(svc.ports.len(), 1, "c1's ports");
    assert_eq!(svc.ports[0].number, 80);
    assert_eq!(svc.addresses, ["10.96.0.10", "10.97.0.10"]);
    assert_eq!(addresses(&r, ORDERS), ["10.1.0.1", "10.2.0.1", "10.2.0.2"]);
    let decls: Vec<u32> = r.declarations().map(|s| s.ports[0].number).collect();
    assert_eq!(
        decls,
        [80, 443],
        "one merged Kubernetes service, then the ServiceEntry"
    );
    // One cluster's endpoints change; the other's stay.
    c2.set_endpoints(ServiceKey::new(ORDERS, "shop"), Vec::new());
    assert_eq!(addresses(&agg.snapshot(), ORDERS), ["10.1.0.1"]);
    // A cluster taken out of the mesh takes its data with it; its ID cannot be added twice.
    assert!(matches!(
        agg.sink(RegistryId::new(Provider::Kubernetes, "c1")),
        Err(AggregateError::Duplicate(_))
    ));
    assert!(agg.remove(&RegistryId::new(Provider::Kubernetes, "c1")));
    let r = agg.snapshot();
    assert_eq!(r.get(ORDERS).unwrap().ports.len(), 2, "c2's ports now");
    assert_eq!(agg.status().len(), 2);
    // The removed registry's sink writes nowhere; the ID can be added again, empty.
    c1.upsert(orders(&[7], &["10.9.9.9"]));
    let decls: Vec<u32> = agg
        .snapshot()
        .declarations()
        .map(|s| s.ports[0].number)
        .collect();
    assert_eq!(
        decls,
        [80, 443],
        "c2's service and the ServiceEntry, nothing of c1's"
    );
    assert!(!agg.remove(&RegistryId::new(Provider::Kubernetes, "c1")));
    let again = agg
        .sink(RegistryId::new(Provider::Kubernetes, "c1"))
        .unwrap();
    again.set_endpoints(
        ServiceKey::new(ORDERS, "shop"),
        vec![Endpoint::new("10.1.0.9")],
    );
    assert_eq!(agg.status().len(), 3);
    // Its endpoints wait for its own declaration of the service (c2 now has none).
    assert_eq!(addresses(&agg.snapshot(), ORDERS), Vec::<String>::new());
    again.upsert_service(orders(&[80], &[]));
    let r = agg.snapshot();
    assert_eq!(addresses(&r, ORDERS), ["10.1.0.9"]);
    assert_eq!(r.get(ORDERS).unwrap().ports.len(), 2, "c2 comes first now");
}

const ENTRIES: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: orders, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hosts: [orders.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: orders-newer, namespace: shop, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  hosts: [orders.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 81, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.2}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_entry_adapter_follows_the_store() {
    let store = Arc::new(ConfigStore::new());
    store.apply_all(parse_str(ENTRIES, "se.yaml"));
    let agg = Aggregate::new();
    agg.add(Box::new(ServiceEntries::new(store.clone())))
        .unwrap();
    assert!(agg.wait_synced(Duration::from_secs(5)).await);
    let mut rx = agg.subscribe();
    let r = published(&mut rx, "the entries", |r| r.get(ORDERS).is_some()).await;
    // Two entries of one namespace for one host: the older one's.
    assert_eq!(r.declarations().count(), 1);
    assert_eq!(r.get(ORDERS).unwrap().ports[0].number, 80);
    assert_eq!(agg.status()[0].id.to_string(), "External/Kubernetes");
    // A WorkloadEntry selected by an entry becomes its endpoint (the adapter converts again on
    // WorkloadEntry changes, not only ServiceEntry ones).
    store.apply_all(parse_str(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pay, namespace: shop}
spec:
  hosts: [pay.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: pay}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pay, namespace: shop}
spec:
  hosts: [pay.shop.svc.cluster.local]
  http: [{route: [{destination: {host: pay.shop.svc.cluster.local}}]}]
"#,
        "pay.yaml",
    ));
    published(&mut rx, "pay without endpoints", |r| {
        r.get("pay.shop.svc.cluster.local").is_some()
    })
    .await;
    store.apply_all(parse_str(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: pay-1, namespace: shop}\nspec: {address: 10.0.0.7, labels: {app: pay}}\n",
        "we.yaml",
    ));
    published(&mut rx, "the workload entry as pay's endpoint", |r| {
        addresses(r, "pay.shop.svc.cluster.local") == ["10.0.0.7"]
    })
    .await;
    let pay = mesh_model::ResourceKey::new(mesh_model::Kind::ServiceEntry, "shop", "pay");
    store.delete(&pay).unwrap();
    // The older entry deleted: the newer one takes over.
    let key = mesh_model::ResourceKey::new(mesh_model::Kind::ServiceEntry, "shop", "orders");
    store.delete(&key).unwrap();
    published(&mut rx, "the newer entry", |r| {
        r.get(ORDERS).is_some_and(|s| s.ports[0].number == 81)
    })
    .await;
    let key = mesh_model::ResourceKey::new(mesh_model::Kind::ServiceEntry, "shop", "orders-newer");
    store.delete(&key).unwrap();
    published(&mut rx, "no service", |r| r.is_empty()).await;
}

/// An adapter as a user writes one: services pushed to it over a channel, each message a full
/// list (so every message is a resync).
struct Inventory {
    updates: mpsc::Receiver<Vec<Service>>,
}

impl Registry for Inventory {
    fn id(&self) -> RegistryId {
        RegistryId::new(Provider::Custom("inventory".into()), "dc1")
    }

    fn run(mut self: Box<Self>, sink: RegistrySink) -> RunFuture {
        Box::pin(async move {
            while let Some(services) = self.updates.recv().await {
                let epoch = sink.begin_resync();
                for s in services {
                    sink.upsert(s);
                }
                sink.end_resync(epoch);
            }
            Ok(())
        })
    }
}

/// A custom adapter and the ServiceEntry adapter, aggregated, feeding the view cache that
/// serves a real Envoy: the adapter's service becomes a cluster with its endpoints; an
/// endpoint change is pushed as EDS alone; the service's removal removes the cluster, and the
/// ServiceEntry's service stays throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_adapter_reaches_a_real_envoy() {
    use mesh_test_support::{Api, Proxy, ProxyKind, serve_source};
    use mesh_xds::server::ViewCache;
    let store = Arc::new(ConfigStore::new());
    store.apply_all(parse_str(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pay, namespace: shop}
spec:
  hosts: [pay.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.9}]
"#,
        "pay.yaml",
    ));
    let (tx, updates) = mpsc::channel(4);
    let agg = Aggregate::new();
    agg.add(Box::new(Inventory { updates })).unwrap();
    agg.add(Box::new(ServiceEntries::new(store.clone())))
        .unwrap();
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    cache.set_services(agg.subscribe());
    let mut pushes = cache.subscribe_pushes();
    let _push = tokio::spawn(
        cache
            .clone()
            .run_debounced(store.subscribe(), Default::default()),
    );
    let (xds, _conns) = serve_source(cache.clone()).await;
    tx.send(vec![orders(&[8080], &["127.0.0.1", "127.0.0.2"])])
        .await
        .unwrap();
    assert!(agg.wait_synced(Duration::from_secs(5)).await);
    let node = r#"{id: "sidecar~127.0.0.5~web.shop~shop.svc.cluster.local", cluster: web, metadata: {NAMESPACE: shop}}"#;
    let envoy = Proxy::start(ProxyKind::Envoy, xds, Api::Sotw, node).await;
    envoy.wait_live().await;
    let orders_cluster = format!("outbound|8080||{ORDERS}");
    let pay_cluster = "outbound|8080||pay.shop.svc.cluster.local";
    eventually(
        "Envoy has both services",
        Duration::from_secs(20),
        async || {
            let clusters = envoy.clusters().await;
            (clusters.contains(&orders_cluster) && clusters.iter().any(|c| c == pay_cluster))
                .then_some(())
        },
    )
    .await;
    eventually("orders' endpoints", Duration::from_secs(20), async || {
        (envoy.cluster_hosts(&orders_cluster).await == ["127.0.0.1:8080", "127.0.0.2:8080"])
            .then_some(())
    })
    .await;
    // Endpoints only: an EDS-only push.
    while pushes.try_recv().is_ok() {}
    tx.send(vec![orders(&[8080], &["127.0.0.3"])])
        .await
        .unwrap();
    eventually(
        "orders' new endpoint",
        Duration::from_secs(20),
        async || (envoy.cluster_hosts(&orders_cluster).await == ["127.0.0.3:8080"]).then_some(()),
    )
    .await;
    let summary = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let s = pushes.recv().await.unwrap();
            if s.changed > 0 {
                return s;
            }
        }
    })
    .await
    .expect("a push that changed the view");
    assert!(summary.eds_only, "{summary:?}");
    // The adapter's next full list lacks orders: its cluster goes, pay stays.
    tx.send(Vec::new()).await.unwrap();
    eventually("orders removed", Duration::from_secs(20), async || {
        let clusters = envoy.clusters().await;
        (!clusters.contains(&orders_cluster) && clusters.iter().any(|c| c == pay_cluster))
            .then_some(())
    })
    .await;
    assert_eq!(envoy.rejections().await, 0, "{}", envoy.log());
}

/// A registry that never syncs (a remote cluster that is down) does not hold the others back:
/// waiting for sync gives up at its deadline, the others' services are served, and its
/// reported error shows in its status.
#[tokio::test]
async fn a_registry_that_never_syncs_only_delays_readiness() {
    let agg = Aggregate::new();
    let up = agg
        .sink(RegistryId::new(Provider::Kubernetes, "c1"))
        .unwrap();
    let down = agg
        .sink(RegistryId::new(Provider::Kubernetes, "c2"))
        .unwrap();
    let epoch = up.begin_resync();
    up.upsert(orders(&[80], &["10.0.0.1"]));
    up.end_resync(epoch);
    down.report_error("connecting to https://c2.example:6443: connection refused");
    assert!(!agg.wait_synced(Duration::from_millis(200)).await);
    assert_eq!(addresses(&agg.snapshot(), ORDERS), ["10.0.0.1"]);
    let status = agg.status();
    assert_eq!(
        (status[0].synced, status[1].synced, status[1].errors),
        (true, false, 1)
    );
    assert!(
        status[1]
            .last_error
            .as_deref()
            .unwrap()
            .contains("connection refused")
    );
    // It comes back: ready at once, and the error is cleared.
    let epoch = down.begin_resync();
    down.clear_error();
    down.end_resync(epoch);
    assert!(agg.wait_synced(Duration::from_secs(5)).await);
    assert_eq!(agg.status()[1].last_error, None);
}
