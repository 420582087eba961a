//! Full translation for 100, 1,000 and 10,000 services (2 ports, 2 subsets, one
//! VirtualService per 10 services, 5 endpoints each): `PushContext::new` + `translate` for a
//! sidecar that sees every service, and the encoding into a shared snapshot. Each iteration
//! also drops the previous output, as a push does. System allocator; `translate_mimalloc`
//! runs the same with mimalloc.

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    mesh_benches::translate_benches(c, "translate");
}

criterion_group!(benches, bench);
criterion_main!(benches);
