//! One push (`PushContext::new` + `translate_snapshot` for a sidecar that sees every service,
//! then dropping the result) in a function valgrind can count on its own, for deterministic
//! figures on a noisy machine:
//!
//! ```sh
//! cargo build --release -p mesh-benches --bin push_instructions
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*counted_push*' \
//!     target/release/push_instructions 10000 secure
//! callgrind_annotate callgrind.out.* | head -40
//! ```
//!
//! Arguments: the number of services (default 10,000) and `plain` or `secure` (the mesh of
//! [`mesh_benches::secure_mesh`]; default). The first push runs uncounted (warm-up); the second
//! is the one counted. mimalloc is the allocator, as in the `translate_mimalloc` benchmark.

use std::hint::black_box;
use std::sync::Arc;

use mesh_model::{MeshConfig, store::Snapshot};
use mesh_xds::{Proxy, PushContext, translate_snapshot};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[inline(always)]
fn push_once(snapshot: &Arc<Snapshot>, proxy: &Proxy) -> usize {
    let ctx = PushContext::new(MeshConfig::default(), snapshot.clone());
    let s = translate_snapshot(&ctx, proxy, "1", None);
    let count = s.resources.values().map(|m| m.len()).sum();
    drop(black_box(s));
    count
}

/// The push valgrind counts (`--toggle-collect='*counted_push*'`): a copy of its own, so the
/// warm-up is not counted with it.
#[inline(never)]
fn counted_push(snapshot: &Arc<Snapshot>, proxy: &Proxy) -> usize {
    push_once(snapshot, proxy)
}

/// The uncounted first push.
#[inline(never)]
fn warm_up(snapshot: &Arc<Snapshot>, proxy: &Proxy) -> usize {
    push_once(snapshot, proxy)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n = match args.next() {
        None => 10_000,
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("push_instructions: the first argument is a service count, not {a:?}");
            std::process::exit(2)
        }),
    };
    let store = match args.next().as_deref() {
        None | Some("secure") => mesh_benches::secure_store(n),
        Some("plain") => mesh_benches::store(n),
        Some(other) => {
            eprintln!("push_instructions: the second argument is plain or secure, not {other:?}");
            std::process::exit(2)
        }
    };
    let snapshot = store.snapshot();
    let proxy = Proxy::default();
    black_box(warm_up(&snapshot, &proxy));
    let started = std::time::Instant::now();
    let resources = counted_push(&snapshot, &proxy);
    println!(
        "{n} services: {resources} resources in {:?}",
        started.elapsed()
    );
}
