//! Waiting on conditions with deadlines, free ports, and temporary directories.

use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 for a listener the test configures (Envoy's, say), bound and
/// released here. It comes from below the kernel's ephemeral range (32768 and up on Linux), so
/// that no socket bound to port 0 in the meantime (upstream servers, client connections) can
/// take it before the test binds it; each test process walks its own slice of ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SLICE: u16 = 200;
    const SLICES: u32 = 60; // 20000..32000
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = FIRST + u16::try_from(std::process::id() % SLICES).unwrap_or(0) * SLICE;
    for _ in 0..SLICE {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % SLICE;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + SLICE);
}

/// A fresh directory `mesh-test-<tag>-<pid>` under the system's temp dir (emptied if it was
/// there), left in place.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A directory made by [`temp_dir`], removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Makes it with [`temp_dir`]`(tag)`.
    pub fn new(tag: &str) -> TempDir {
        TempDir(temp_dir(tag))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
