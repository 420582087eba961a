//! Full translation for 100, 1,000 and 10,000 services: `PushContext::new` + `translate` for a
//! sidecar that sees every service, and the encoding into a shared snapshot. Each iteration
//! also drops the previous output, as a push does. This target uses the system allocator;
//! `translate_mimalloc` runs the same with mimalloc.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_model::MeshConfig;
use mesh_xds::{Proxy, PushContext, Snapshot, translate};

const GROUP: &str = "translate";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for n in [100usize, 1_000, 10_000] {
        let store = mesh_benches::store(n);
        let proxy = Proxy::default();
        let snapshot = store.snapshot();
        group.bench_with_input(BenchmarkId::new("translate", n), &n, |b, _| {
            b.iter(|| {
                let ctx = PushContext::new(MeshConfig::default(), snapshot.clone());
                black_box(translate(&ctx, &proxy))
            })
        });
        let ctx = PushContext::new(MeshConfig::default(), snapshot.clone());
        let resources = translate(&ctx, &proxy);
        group.bench_with_input(BenchmarkId::new("translate+encode", n), &n, |b, _| {
            b.iter(|| {
                let ctx = PushContext::new(MeshConfig::default(), snapshot.clone());
                let r = translate(&ctx, &proxy);
                black_box(Snapshot::from_resources("1", &r, None))
            })
        });
        eprintln!(
            "{n} services: {} clusters, {} endpoint assignments, {} listeners, {} route configs",
            resources.clusters.len(),
            resources.endpoints.len(),
            resources.listeners.len(),
            resources.routes.len()
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
