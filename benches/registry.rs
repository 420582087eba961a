//! mesh-registry's aggregate on a 10,000-service mesh (5 endpoints each): what one endpoint
//! change costs (the write, the merge that publishes a new registry, and the comparison the
//! view cache makes to find that only endpoints changed), and what a full resync that changes
//! nothing costs (the ServiceEntry adapter re-asserts every service on each store change).
//! Run with `cargo bench -p mesh-benches --bench registry`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_model::service::{Endpoint, Service, ServicePort};
use mesh_registry::{Aggregate, Provider, RegistryId, ServiceKey};

const SERVICES: usize = 10_000;

fn service(i: usize) -> Service {
    let mut s = Service::new(mesh_benches::host(i), mesh_benches::NAMESPACE);
    s.ports.push(ServicePort::new("http", 8080, "HTTP"));
    s.endpoints = (0..5)
        .map(|e| Endpoint::new(mesh_benches::endpoint_ip(i, e)))
        .collect();
    s
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let agg = Aggregate::new();
    let sink = agg
        .sink(RegistryId::new(Provider::Kubernetes, "Kubernetes"))
        .unwrap();
    let services: Vec<Service> = (0..SERVICES).map(service).collect();
    let epoch = sink.begin_resync();
    for s in &services {
        sink.upsert(s.clone());
    }
    sink.end_resync(epoch);
    let _ = agg.snapshot();

    let mut g = c.benchmark_group("registry/10000");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    let key = ServiceKey::of(&services[42]);
    let mut flip = false;
    g.bench_function("endpoint_change", |b| {
        b.iter(|| {
            flip = !flip;
            let before = agg.snapshot();
            let n = if flip { 4 } else { 5 };
            sink.set_endpoints(key.clone(), services[42].endpoints[..n].to_vec());
            let after = agg.snapshot();
            black_box(after.endpoint_changes(&before).unwrap());
        })
    });
    g.bench_function("unchanged_resync", |b| {
        b.iter(|| {
            let epoch = sink.begin_resync();
            for s in &services {
                sink.upsert(s.clone());
            }
            sink.end_resync(epoch);
            black_box(agg.snapshot());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
