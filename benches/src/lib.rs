//! Shared fixtures for the benchmarks: a synthetic mesh of N services shaped like the issue's
//! benchmark (2 ports, 2 subsets, one VirtualService per 10 services, 5 endpoints each).

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_model::networking::destination_rule::{DestinationRuleSpec, Subset};
use mesh_model::networking::service_entry::{Location, Resolution, ServiceEntrySpec, ServicePort};
use mesh_model::networking::virtual_service::{
    Destination, HttpRoute, HttpRouteDestination, PortSelector, VirtualServiceSpec,
};
use mesh_model::networking::workload::WorkloadEntrySpec;
use mesh_model::{Config, ConfigStore, ObjectMeta, Resource};

/// The namespace of every generated service.
pub const NAMESPACE: &str = "bench";

/// Host of service `i`.
pub fn host(i: usize) -> String {
    format!("svc-{i}.{NAMESPACE}.svc.cluster.local")
}

/// The address of endpoint `e` of service `i`.
pub fn endpoint_ip(i: usize, e: usize) -> String {
    format!("10.{}.{}.{}", (i / 250) % 250, i % 250, e + 1)
}

/// The resources of a mesh of `n` services.
pub fn mesh(n: usize) -> Vec<Config> {
    let mut out = Vec::with_capacity(n * 2 + n / 10);
    for i in 0..n {
        let meta = ObjectMeta::new(NAMESPACE, format!("svc-{i}"));
        let endpoints = (0..5)
            .map(|e| WorkloadEntrySpec {
                address: endpoint_ip(i, e),
                labels: BTreeMap::from([(
                    "version".to_string(),
                    if e < 3 { "v1" } else { "v2" }.to_string(),
                )]),
                locality: if e % 2 == 0 {
                    "us-east/a".into()
                } else {
                    "us-east/b".into()
                },
                ..Default::default()
            })
            .collect();
        out.push(Config::from(Resource::new(
            meta.clone(),
            ServiceEntrySpec {
                hosts: vec![host(i)],
                location: Location::MeshInternal,
                resolution: Resolution::Static,
                ports: vec![
                    ServicePort {
                        number: 80,
                        name: "http".into(),
                        protocol: "HTTP".into(),
                        target_port: Some(8080),
                    },
                    ServicePort {
                        number: 9090,
                        name: "grpc".into(),
                        protocol: "GRPC".into(),
                        target_port: None,
                    },
                ],
                endpoints,
                ..Default::default()
            },
        )));
        out.push(Config::from(Resource::new(
            meta.clone(),
            DestinationRuleSpec {
                host: host(i),
                subsets: ["v1", "v2"]
                    .iter()
                    .map(|v| Subset {
                        name: v.to_string(),
                        labels: BTreeMap::from([("version".to_string(), v.to_string())]),
                        traffic_policy: None,
                    })
                    .collect(),
                ..Default::default()
            },
        )));
        if i % 10 == 0 {
            let dest = |subset: &str, weight: i32| HttpRouteDestination {
                destination: Destination {
                    host: host(i),
                    subset: Some(subset.into()),
                    port: Some(PortSelector::new(80)),
                },
                weight: Some(weight),
                headers: None,
            };
            out.push(Config::from(Resource::new(
                meta,
                VirtualServiceSpec {
                    hosts: vec![host(i)],
                    http: vec![HttpRoute {
                        route: vec![dest("v1", 90), dest("v2", 10)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )));
        }
    }
    out
}

/// A store holding a mesh of `n` services (validated on the way in).
pub fn store(n: usize) -> Arc<ConfigStore> {
    let store = ConfigStore::new();
    for c in mesh(n) {
        store.apply(c).expect("generated config is valid");
    }
    Arc::new(store)
}

/// [`mesh`] with Istio's security kinds, as the benchmark has them: every endpoint
/// runs as service account `svc-I` with label `app: svc-I` (so clients originate mTLS and
/// check its identity), one PeerAuthentication (STRICT) and one AuthorizationPolicy per
/// namespace, and a selector AuthorizationPolicy (ALLOW by principal and path) per 10 services.
pub fn secure_mesh(n: usize) -> Vec<Config> {
    let mut out = mesh(n);
    for c in &mut out {
        if let Config::ServiceEntry(se) = c {
            let app = se.metadata.name.clone();
            for e in &mut se.spec.endpoints {
                e.service_account = app.clone();
                e.labels.insert("app".into(), app.clone());
            }
        }
    }
    let yaml = |s: String| mesh_model::parse_str(&s, "security.yaml").resources;
    let mut docs = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: default, namespace: {NAMESPACE}}}\nspec: {{mtls: {{mode: STRICT}}}}\n\
         ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: namespace, namespace: {NAMESPACE}}}\n\
         spec: {{action: DENY, rules: [{{to: [{{operation: {{paths: [/admin*]}}}}]}}]}}\n"
    );
    for i in (0..n).step_by(10) {
        docs.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: svc-{i}, namespace: {NAMESPACE}}}\nspec:\n  \
             selector: {{matchLabels: {{app: svc-{i}}}}}\n  \
             rules: [{{from: [{{source: {{principals: [cluster.local/ns/{NAMESPACE}/sa/svc-{}]}}}}], \
             to: [{{operation: {{paths: [/api/*]}}}}]}}]\n",
            (i + 1) % n.max(1)
        ));
    }
    out.extend(yaml(docs).into_iter().map(|r| r.config));
    out
}

/// A store holding [`secure_mesh`]`(n)`.
pub fn secure_store(n: usize) -> Arc<ConfigStore> {
    let store = ConfigStore::new();
    for c in secure_mesh(n) {
        store.apply(c).expect("generated config is valid");
    }
    Arc::new(store)
}

/// The translation benchmark body, for 100, 1,000 and 10,000 services and one sidecar that
/// sees every service; each iteration also drops its output (as a push drops the previous one):
/// - `snapshot`: `PushContext::new` + [`mesh_xds::translate_snapshot`], what the server does
///   on a push (every resource encoded as it is built);
/// - `typed`: `PushContext::new` + [`mesh_xds::translate`] into typed prost messages (for
///   inspection and tests; a large mesh holds hundreds of megabytes of them).
pub fn translate_benches(c: &mut criterion::Criterion, group: &str) {
    use std::hint::black_box;
    use std::time::Duration;

    use criterion::BenchmarkId;
    use mesh_model::MeshConfig;
    use mesh_xds::{Proxy, PushContext, translate, translate_snapshot};

    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for n in [100usize, 1_000, 10_000] {
        let store = store(n);
        let proxy = Proxy::default();
        let snapshot = store.snapshot();
        g.bench_with_input(BenchmarkId::new("snapshot", n), &n, |b, _| {
            b.iter(|| {
                let ctx = PushContext::new(MeshConfig::default(), snapshot.clone());
                black_box(translate_snapshot(&ctx, &proxy, "1", None))
            })
        });
        let secure = secure_store(n).snapshot();
        g.bench_with_input(BenchmarkId::new("snapshot+security", n), &n, |b, _| {
            b.iter(|| {
                let ctx = PushContext::new(MeshConfig::default(), secure.clone());
                black_box(translate_snapshot(&ctx, &proxy, "1", None))
            })
        });
        g.bench_with_input(BenchmarkId::new("typed", n), &n, |b, _| {
            b.iter(|| {
                let ctx = PushContext::new(MeshConfig::default(), snapshot.clone());
                black_box(translate(&ctx, &proxy))
            })
        });
        let s = translate_snapshot(
            &PushContext::new(MeshConfig::default(), snapshot.clone()),
            &proxy,
            "1",
            None,
        );
        let count = |t: &str| s.of_type(t).map_or(0, |m| m.len());
        let bytes: usize = s
            .resources
            .values()
            .flat_map(|m| m.values())
            .map(|r| r.value().len())
            .sum();
        eprintln!(
            "{n} services: {} clusters, {} endpoint assignments, {} listeners, {} route configs, \
             {} KiB encoded",
            count(mesh_xds::resource::CLUSTER),
            count(mesh_xds::resource::ENDPOINT),
            count(mesh_xds::resource::LISTENER),
            count(mesh_xds::resource::ROUTE),
            bytes / 1024
        );
    }
    g.finish();
}

/// Resident set size of this process, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
