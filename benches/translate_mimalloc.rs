//! The translation benchmark with mimalloc as the global allocator (a common choice for Rust
//! control planes): the translator allocates many small strings and large prost messages, and
//! glibc's malloc spends much of the time freeing and consolidating them.

use criterion::{Criterion, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    mesh_benches::translate_benches(c, "translate_mimalloc");
}

criterion_group!(benches, bench);
criterion_main!(benches);
