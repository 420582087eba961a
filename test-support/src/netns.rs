//! Tests that run inside a network namespace of their own (`unshare --net`), where only
//! loopback exists and iptables rules touch nothing outside the test.

use std::time::Duration;

/// A namespace run: the environment variable that marks the run inside, the shell script that
/// sets the namespace up (it ends with `exec "$@"`, which runs the test binary), what the
/// namespace needs (for the failure message) and how long the run may take.
#[derive(Clone, Copy, Debug)]
pub struct Namespace {
    /// Set to `1` in the run inside the namespace.
    pub marker: &'static str,
    /// `sh -c` script run inside the new namespace before the test binary.
    pub setup: &'static str,
    /// What the setup needs, named when the run fails (`root and ip`, ...).
    pub needs: &'static str,
    /// Deadline for the whole run inside.
    pub deadline: Duration,
}

impl Namespace {
    /// Runs the test named `name` of this test binary inside a fresh network namespace; true
    /// when this process already is that run (the caller then goes on with the test), false
    /// after the run inside passed (its output is printed). Panics with the run's output when
    /// it fails, or when it did not run exactly that one test.
    pub async fn run_inside(&self, name: &str) -> bool {
        if std::env::var_os(self.marker).is_some() {
            return true;
        }
        let exe = std::env::current_exe().unwrap();
        let child = tokio::process::Command::new("unshare")
            .args(["--net", "--", "sh", "-c", self.setup, "sh"])
            .arg(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(self.marker, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("unshare (util-linux) runs");
        let out = tokio::time::timeout(self.deadline, child.wait_with_output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the test inside the namespace ends within {:?}",
                    self.deadline
                )
            })
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "inside the network namespace (needs {}; scripts/test.sh installs them):\n{log}",
            self.needs
        );
        // The harness inside must have run this very test, not filtered it away.
        assert!(log.contains("1 passed"), "{log}");
        eprintln!("{log}");
        false
    }
}
