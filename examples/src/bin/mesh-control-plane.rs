//! `mesh-control-plane`: a control plane composed from the mesh crates.
//!
//! Reads every manifest in `--config DIR` (ServiceEntries and WorkloadEntries are the service
//! registry), watches the directory, translates per proxy view and serves ADS (SotW and delta)
//! on `--xds-addr`. Invalid resources are logged with their errors and never reach a proxy;
//! everything else keeps flowing. Debug HTTP on `--debug-addr`: `/debug/syncz`,
//! `/debug/config_dump?proxyID=ID`, `/metrics`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use mesh_model::parse::ParseOutput;
use mesh_model::{ConfigStore, MeshConfig};
use mesh_xds::resource;
use mesh_xds::server::{AdsServer, Connections, Debounce, PushEvent, ViewCache};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Parser)]
#[command(
    name = "mesh-control-plane",
    version,
    about = "An Istio-compatible control plane built from the mesh crates"
)]
struct Args {
    /// Directory of Istio manifests (read recursively, watched for changes).
    #[arg(long)]
    config: PathBuf,
    /// ADS (gRPC) listen address.
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds_addr: SocketAddr,
    /// Debug and metrics HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    debug_addr: SocketAddr,
    /// MeshConfig file (plain or the `istio` ConfigMap); Istio's defaults otherwise.
    #[arg(long)]
    mesh_config: Option<PathBuf>,
    /// Istio's meshNetworks (YAML or JSON, or a ConfigMap with `data.meshNetworks`): proxies
    /// then get only the endpoints they reach without another network's gateway.
    #[arg(long)]
    mesh_networks: Option<PathBuf>,
    /// How often the config directory is checked for changes.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Serve Istio's CA API (`IstioCertificateService`) on the gRPC address, signing with the
    /// root kept in this directory (generated on first start), or with Istio's `cacerts` layout
    /// when `ca-cert.pem` is there. The trust domain is the mesh config's.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// JWKS of the service-account token issuer; callers authenticate with those tokens
    /// (audience `istio-ca`). Without it only renewals with a valid SVID are accepted.
    #[arg(long, requires = "ca_dir")]
    ca_jwks: Option<PathBuf>,
    /// The issuer (`iss`) service-account tokens must carry.
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local")]
    ca_issuer: String,
    /// Serve the gRPC port (xDS and CA) over TLS with a certificate from the CA for these DNS
    /// names (comma-separated); clients verify it with the CA's root. Plaintext otherwise.
    #[arg(long, value_delimiter = ',', requires = "ca_dir")]
    tls_dns_names: Vec<String>,
    /// Lifetime of the gRPC port's certificate; it is re-issued at half of it, without a
    /// restart or dropped connections.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    tls_cert_ttl: Duration,
    /// INSECURE, development only: issue certificates for whatever identity a caller claims
    /// (`mesh-agent --identity`). Off by default; tokens and SVIDs are still checked first.
    #[arg(long, requires = "ca_dir")]
    ca_insecure_identity_claims: bool,
}

/// The CA service from the `--ca-*` flags, if asked for, and the TLS config of the gRPC port
/// if `--tls-dns-names` is given.
fn ca_service(
    args: &Args,
    trust_domain: &str,
) -> anyhow::Result<(
    Option<mesh_identity::ca::api::CaService>,
    Option<std::sync::Arc<rustls::ServerConfig>>,
)> {
    use mesh_identity::ca::auth::{AnyOf, Authenticator, JwtAuthenticator, SvidAuthenticator};
    use mesh_identity::ca::{CaConfig, CertificateAuthority};
    use mesh_identity::serving::ServingCert;
    let Some(dir) = &args.ca_dir else {
        return Ok((None, None));
    };
    let td = mesh_identity::spiffe::TrustDomain::new(trust_domain)
        .with_context(|| format!("trust domain {trust_domain:?}"))?;
    let config = CaConfig::new(td.clone());
    let ca = if dir.join("ca-cert.pem").exists() {
        CertificateAuthority::from_cacerts(dir, config)
    } else {
        CertificateAuthority::self_signed(dir, config)
    }
    .with_context(|| format!("CA in {}", dir.display()))?;
    let ca = std::sync::Arc::new(ca);
    let mut auth: Vec<Box<dyn Authenticator>> = Vec::new();
    if let Some(jwks) = &args.ca_jwks {
        let text =
            std::fs::read_to_string(jwks).with_context(|| format!("reading {}", jwks.display()))?;
        auth.push(Box::new(
            JwtAuthenticator::from_jwks(&text, args.ca_issuer.clone(), td.clone())
                .with_context(|| format!("{}", jwks.display()))?,
        ));
    }
    auth.push(Box::new(SvidAuthenticator::from_ca(ca.clone())));
    if args.ca_insecure_identity_claims {
        tracing::warn!(
            "INSECURE: the CA issues certificates for claimed identities without proof \
             (--ca-insecure-identity-claims); never use this in production"
        );
        auth.push(Box::new(
            mesh_identity::ca::auth::InsecureClaimAuthenticator::new(td.clone()),
        ));
    }
    let tls = if args.tls_dns_names.is_empty() {
        None
    } else {
        // The control plane's own identity, as istiod's, with the DNS names clients dial.
        let id = mesh_identity::spiffe::SpiffeId::istio(td, "istio-system", "istiod")
            .context("control plane identity")?;
        let cert = ServingCert::issue(&ca, &args.tls_dns_names, &id, args.tls_cert_ttl)
            .context("serving certificate")?;
        // Re-issued at half of its lifetime; each new handshake gets the current one.
        cert.keep_renewed(ca.clone(), 0.5);
        tracing::info!(
            "gRPC over TLS for {} (certificate renewed every {:?})",
            args.tls_dns_names.join(", "),
            args.tls_cert_ttl / 2
        );
        Some(std::sync::Arc::new(
            mesh_identity::serving::server_config(cert, ca.clone())
                .context("TLS on the gRPC port")?,
        ))
    };
    tracing::info!("CA for {trust_domain} from {}", dir.display());
    Ok((
        Some(mesh_identity::ca::api::CaService::new(ca, AnyOf(auth))),
        tls,
    ))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<mesh_model::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

/// istiod's metric names, where there is one.
struct Metrics {
    registry: Registry,
    connected: Gauge,
    pushes: Family<TypeLabel, Counter>,
    rejects: Family<TypeLabel, Counter>,
    total_rejects: Counter,
    push_time: Histogram,
    convergence: Histogram,
    config_errors: Gauge,
    views: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let connected = Gauge::default();
        let pushes = Family::<TypeLabel, Counter>::default();
        let rejects = Family::<TypeLabel, Counter>::default();
        let total_rejects = Counter::default();
        let push_time = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let convergence = Histogram::new([0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]);
        let config_errors = Gauge::default();
        let views = Gauge::default();
        registry.register("pilot_xds", "Connected xDS streams", connected.clone());
        registry.register(
            "pilot_xds_pushes",
            "xDS responses sent, by type",
            pushes.clone(),
        );
        registry.register(
            "pilot_xds_rejects",
            "xDS responses NACKed, by type",
            rejects.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses NACKed",
            total_rejects.clone(),
        );
        registry.register(
            "pilot_xds_push_time_seconds",
            "Time to translate and encode every view for one push",
            push_time.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time_seconds",
            "Time from a config change to its ACK by a proxy",
            convergence.clone(),
        );
        registry.register(
            "mesh_config_rejected_resources",
            "Resources rejected by validation at the last load",
            config_errors.clone(),
        );
        registry.register(
            "mesh_xds_views",
            "Distinct proxy views (translations shared by proxies)",
            views.clone(),
        );
        Metrics {
            registry,
            connected,
            pushes,
            rejects,
            total_rejects,
            push_time,
            convergence,
            config_errors,
            views,
        }
    }
}

/// A fingerprint of every manifest file: changes when a file is added, removed or modified.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    mesh_model::parse::manifest_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let (t, len) = m.map(|m| (m.modified().ok(), m.len())).unwrap_or((None, 0));
            (p, t, len)
        })
        .collect()
}

fn load(dir: &Path, store: &ConfigStore, metrics: &Metrics) {
    let parsed: ParseOutput = match mesh_model::parse_path(dir) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(
                "reading {}: {e}; keeping the current configuration",
                dir.display()
            );
            return;
        }
    };
    let resources = parsed.resources.len();
    let report = store.sync(parsed);
    for r in &report.rejected {
        for f in &r.findings {
            tracing::warn!("rejected: {f}");
        }
    }
    for w in &report.warnings {
        tracing::info!("{w}");
    }
    metrics
        .config_errors
        .set(i64::try_from(report.rejected.len()).unwrap_or(i64::MAX));
    tracing::info!(
        resources,
        changed = report.changed.len(),
        deleted = report.deleted.len(),
        rejected = report.rejected.len(),
        revision = store.revision(),
        "loaded {}",
        dir.display()
    );
}

/// Translation allocates and frees millions of small prost strings and vectors per push on a
/// large mesh; with mimalloc a 10,000-service translation is about a third faster than with
/// glibc's malloc (`cargo bench -p mesh-benches --bench translate_mimalloc`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let args = Args::parse();
    anyhow::ensure!(
        args.config.is_dir(),
        "--config {}: not a directory",
        args.config.display()
    );
    let mesh = match &args.mesh_config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let (mesh, warnings) = mesh_model::parse_mesh_config(&text)
                .map_err(|f| anyhow::anyhow!("{}: {f}", p.display()))?;
            for w in warnings {
                tracing::warn!("{}: {w}", p.display());
            }
            let errors = mesh_model::validate::validate_mesh_config(&mesh);
            anyhow::ensure!(
                errors.iter().all(|f| !f.is_error()),
                "{}: {:?}",
                p.display(),
                errors
            );
            mesh
        }
        None => MeshConfig::default(),
    };
    let (ca, tls) = ca_service(&args, &mesh.trust_domain)?;
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(ConfigStore::new());
    load(&args.config, &store, &metrics);

    let cache = ViewCache::new(store.clone(), mesh);
    if let Some(p) = &args.mesh_networks {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let (networks, warnings) = mesh_model::parse_mesh_networks(&text)
            .map_err(|f| anyhow::anyhow!("{}: {f}", p.display()))?;
        for w in warnings {
            tracing::warn!("{}: {w}", p.display());
        }
        tracing::info!(
            "{} network(s) from {}",
            networks.networks.len(),
            p.display()
        );
        cache.set_networks(networks);
    }
    tokio::spawn(
        cache
            .clone()
            .run_debounced(store.subscribe(), Debounce::default()),
    );

    // Convergence: from the first config change after a push to the ACK of the next push.
    let change_started: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let push_started: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::new(Mutex::new(BTreeMap::new()));
    {
        let mut events = store.subscribe();
        let change_started = change_started.clone();
        tokio::spawn(async move {
            while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) =
                events.recv().await
            {
                change_started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(Instant::now);
            }
        });
    }
    {
        let mut pushes = cache.subscribe_pushes();
        let metrics = metrics.clone();
        let change_started = change_started.clone();
        let push_started = push_started.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            while let Ok(p) = pushes.recv().await {
                metrics.push_time.observe(p.elapsed.as_secs_f64());
                metrics
                    .views
                    .set(i64::try_from(cache.view_count()).unwrap_or(i64::MAX));
                if let Some(t) = change_started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    let mut m = push_started.lock().unwrap_or_else(|e| e.into_inner());
                    m.insert(p.version.to_string(), t);
                    while m.len() > 64 {
                        m.pop_first();
                    }
                }
                tracing::debug!(
                    version = p.version,
                    views = p.views,
                    changed = p.changed,
                    "pushed in {:?}",
                    p.elapsed
                );
            }
        });
    }

    let server = AdsServer::new(cache.clone());
    let connections = server.connections();
    {
        let mut events = connections.subscribe();
        let metrics = metrics.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            loop {
                let e = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                match e {
                    PushEvent::Sent { type_url, .. } => {
                        metrics
                            .pushes
                            .get_or_create(&TypeLabel {
                                r#type: resource::short_name(&type_url).into(),
                            })
                            .inc();
                    }
                    PushEvent::Nacked {
                        type_url,
                        node_id,
                        detail,
                    } => {
                        metrics
                            .rejects
                            .get_or_create(&TypeLabel {
                                r#type: resource::short_name(&type_url).into(),
                            })
                            .inc();
                        metrics.total_rejects.inc();
                        tracing::warn!(
                            "{node_id} rejected {}: {detail}",
                            resource::short_name(&type_url)
                        );
                    }
                    PushEvent::Acked { version, .. } => {
                        if let Some(t) = push_started
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&version)
                        {
                            metrics.convergence.observe(t.elapsed().as_secs_f64());
                        }
                    }
                    PushEvent::Connected | PushEvent::Disconnected => {
                        metrics
                            .connected
                            .set(i64::try_from(connections.len()).unwrap_or(i64::MAX));
                    }
                    _ => {}
                }
            }
        });
    }

    // Watch the config directory.
    {
        let dir = args.config.clone();
        let store = store.clone();
        let metrics = metrics.clone();
        let interval = args.poll_interval;
        tokio::spawn(async move {
            let mut last = fingerprint(&dir);
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let now = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || fingerprint(&dir)
                })
                .await
                .unwrap_or_default();
                if now != last {
                    last = now;
                    let (dir, store, metrics) = (dir.clone(), store.clone(), metrics.clone());
                    let _ = tokio::task::spawn_blocking(move || load(&dir, &store, &metrics)).await;
                }
            }
        });
    }

    let debug_listener = tokio::net::TcpListener::bind(args.debug_addr)
        .await
        .with_context(|| format!("binding {}", args.debug_addr))?;
    tracing::info!("debug HTTP on http://{}", debug_listener.local_addr()?);
    {
        let (metrics, connections, cache) = (metrics.clone(), connections.clone(), cache.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = debug_listener.accept().await else {
                    continue;
                };
                let (metrics, connections, cache) =
                    (metrics.clone(), connections.clone(), cache.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let r = debug_response(&req, &metrics, &connections, &cache);
                            async move { Ok::<_, Infallible>(r) }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }

    let xds = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("binding {}", args.xds_addr))?;
    tracing::info!("ADS on {}", xds.local_addr()?);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(server.into_service())
        .add_optional_service(ca);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(mesh_identity::serving::incoming(xds, tls), shutdown)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(xds),
                    shutdown,
                )
                .await?
        }
    }
    Ok(())
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn query_param(req: &Request<hyper::body::Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn debug_response(
    req: &Request<hyper::body::Incoming>,
    metrics: &Metrics,
    connections: &Connections,
    cache: &ViewCache,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let mut out = String::new();
            if prometheus_client::encoding::text::encode(&mut out, &metrics.registry).is_err() {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding metrics failed\n".into(),
                );
            }
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                out,
            )
        }
        "/debug/syncz" => {
            let list: Vec<serde_json::Value> = connections
                .list()
                .into_iter()
                .map(|c| {
                    let types: serde_json::Map<String, serde_json::Value> = resource::PUSH_ORDER
                        .iter()
                        .map(|t| {
                            let s = c.types.get(*t).cloned().unwrap_or_default();
                            let v = serde_json::json!({
                                "status": s.status(),
                                "sent_version": s.sent_version, "sent_nonce": s.sent_nonce,
                                "acked_version": s.acked_version, "acked_nonce": s.acked_nonce,
                                "nack": s.nack, "pushes": s.pushes, "nacks": s.nacks,
                            });
                            (resource::short_name(t).to_string(), v)
                        })
                        .collect();
                    serde_json::json!({
                        "proxy": c.node_id, "stream_id": c.stream_id, "protocol": c.protocol,
                        "istio_version": c.node.as_ref().map(|n| mesh_xds::Proxy::from_node(n).istio_version).unwrap_or_default(),
                        "types": types,
                    })
                })
                .collect();
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&list).unwrap_or_default() + "\n",
            )
        }
        "/debug/config_dump" => {
            let Some(id) = query_param(req, "proxyID") else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "proxyID is required\n".into(),
                );
            };
            let Some(node) = connections
                .list()
                .into_iter()
                .find(|c| c.node_id == id)
                .and_then(|c| c.node)
            else {
                return reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    format!("no connected proxy {id:?}\n"),
                );
            };
            let snapshot = cache.snapshot_for(&mesh_xds::Proxy::from_node(&node));
            match mesh_xds::dump::config_dump(&snapshot) {
                Ok(v) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        "/debug" | "/debug/" | "/debug/list" => reply(
            StatusCode::OK,
            "text/plain",
            "/debug/syncz\n/debug/config_dump?proxyID=ID\n/metrics\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; see /debug/list\n".into(),
        ),
    }
}
