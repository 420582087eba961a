//! The translation benchmark with mimalloc as the global allocator (a common choice for Rust
//! control planes): the translator allocates many small strings and large prost messages, and
//! glibc's malloc spends much of the time freeing and consolidating them.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_model::MeshConfig;
use mesh_xds::{Proxy, PushContext, Snapshot, translate};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate_mimalloc");
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
        group.bench_with_input(BenchmarkId::new("translate+encode", n), &n, |b, _| {
            b.iter(|| {
                let ctx = PushContext::new(MeshConfig::default(), snapshot.clone());
                let r = translate(&ctx, &proxy);
                black_box(Snapshot::from_resources("1", &r, None))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
