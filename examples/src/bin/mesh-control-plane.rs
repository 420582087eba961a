//! `mesh-control-plane`: a control plane composed from the mesh crates.
//!
//! Reads every manifest in `--config DIR` (ServiceEntries and WorkloadEntries are the service
//! registry), watches the directory, translates per proxy view and serves ADS (SotW and delta)
//! on `--xds-addr`. Invalid resources are logged with their errors and never reach a proxy;
//! everything else keeps flowing. Debug HTTP on `--debug-addr`: `/debug/syncz`,
//! `/debug/config_dump?proxyID=ID`, `/metrics`.
//!
//! RequestAuthentication keys are fetched as istiod fetches them (mesh_xds::jwks): each
//! `jwksUri`, or the `jwks_uri` of `<issuer>/.well-known/openid-configuration` for rules with
//! an issuer only, over http or https (the platform's roots and `--jwks-extra-ca`), inlined in
//! the proxies' `jwt_authn` filters and refreshed every `--jwks-refresh-interval` (istiod's
//! `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`). Keys that were never fetched fail closed (tokens get
//! 401); failures are logged with the URL and the RequestAuthentications that use it.
//!
//! With `--tls-dns-names` the gRPC port authenticates ADS callers as istiod's does: an SVID
//! from the CA over mTLS or a service-account token (`--ca-jwks`) in `authorization: Bearer`,
//! else the stream ends with UNAUTHENTICATED; a node whose namespace (`NAMESPACE` metadata, or
//! the node id `sidecar~IP~POD.NS~NS.svc.cluster.local`) is not its identity's ends with
//! PERMISSION_DENIED. Plaintext (no `--tls-dns-names`) is not authenticated.
//!
//! With `--ca-dir` the debug server also rotates the CA's root without a restart (the POSTs
//! are taken from loopback peers only, as the debug port has no authentication):
//!
//! - `GET /debug/ca/roots`: the trust bundle as JSON, each root with its SHA-256, subject,
//!   validity and whether it signs or is staged.
//! - `POST /debug/ca/rotate-root?stage=true`: a new root is generated and trusted at once, but
//!   does not sign yet. Every certificate response carries the trust bundle, so agents serve
//!   it in `ROOTCA` from their next renewal on.
//! - `POST /debug/ca/rotate-root`: the staged root (or, if none was staged, a new one, which
//!   workloads that have not renewed since do not trust yet) signs from now on; the old root
//!   stays trusted. With `--tls-dns-names` a staged root also re-issues the gRPC port's
//!   certificate at once; an unstaged one waits for its scheduled renewal, so that agents that
//!   only know the old root can still renew and learn the new one. With Istio's `cacerts`
//!   the files are re-read instead (the operator has replaced them).
//! - `POST /debug/ca/retire-root?sha256=HEX`: the root stops being trusted (not the signing
//!   one); the gRPC port's certificate is re-issued from the signing root.
//!
//! The self-signed CA keeps all of it in `--ca-dir` (`root-cert.pem` and `ca-key.pem` sign,
//! `trust-bundle.pem` lists every trusted root, `next-root-cert.pem` is the staged root), so
//! a restart resumes where the rotation was; clients that verify the gRPC port should use
//! `trust-bundle.pem`.
//!
//! ```text
//! curl -s -X POST 'http://127.0.0.1:15014/debug/ca/rotate-root?stage=true'  # trust the next root
//! # ... a renewal period later (12 h with 24 h certificates):
//! curl -s -X POST http://127.0.0.1:15014/debug/ca/rotate-root               # it signs
//! # ... once the old root's certificates have expired:
//! curl -s -X POST 'http://127.0.0.1:15014/debug/ca/retire-root?sha256=...'
//! ```

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
use mesh_identity::ca::{CertificateAuthority, TrustedRoot};
use mesh_identity::serving::ServingCert;
use mesh_model::parse::ParseOutput;
use mesh_model::{ConfigStore, MeshConfig};
use mesh_xds::jwks::{JwksConfig, JwksResolver};
use mesh_xds::resource;
use mesh_xds::server::auth::{AuthError as XdsAuthError, Authenticate, Caller};
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
    /// Gateway credentials for `credentialName`: one directory per credential,
    /// `DIR/NAME/{tls.crt,tls.key[,ca.crt]}` (Kubernetes' TLS secret layout), served to the
    /// gateways that name them over their ADS stream as `kubernetes://NAME` (and
    /// `kubernetes://NAME-cacert`), as istiod serves secrets. Watched.
    #[arg(long)]
    credentials_dir: Option<PathBuf>,
    /// How often the config and credentials directories are re-read in full, as a safety net:
    /// changes are seen as they happen (inotify, debounced by 100 ms), and the rescan catches
    /// what events miss (NFS, overlayfs, exhausted inotify watches).
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
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
    /// names (comma-separated); clients verify it with the CA's root. ADS callers must then
    /// authenticate (an SVID from the CA, or a `--ca-jwks` token) and may only act for their
    /// identity's namespace. Plaintext and unauthenticated otherwise.
    #[arg(long, value_delimiter = ',', requires = "ca_dir")]
    tls_dns_names: Vec<String>,
    /// Lifetime of the gRPC port's certificate; it is re-issued at half of it, without a
    /// restart or dropped connections.
    #[arg(long, default_value = "24h", value_parser = parse_positive_duration)]
    tls_cert_ttl: Duration,
    /// INSECURE, development only: issue certificates for whatever identity a caller claims
    /// (`mesh-agent --identity`). Off by default; tokens and SVIDs are still checked first.
    #[arg(long, requires = "ca_dir")]
    ca_insecure_identity_claims: bool,
    /// How often the keys of RequestAuthentications are fetched again: each `jwksUri`, or the
    /// `jwks_uri` discovered from `<issuer>/.well-known/openid-configuration` for rules with
    /// an issuer only (istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, 20m). New ones are
    /// fetched at once; a failed fetch is retried after 1m, doubling up to 1h, and the last
    /// good keys stay in use meanwhile. Keys never fetched fail closed: their tokens get 401.
    #[arg(long, default_value = "20m", value_parser = parse_positive_duration)]
    jwks_refresh_interval: Duration,
    /// Deadline of one JWKS fetch (istiod: 5s).
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration)]
    jwks_timeout: Duration,
    /// More CA certificates (PEM) to trust for https `jwksUri`s, besides the platform's roots
    /// (istiod's `/cacerts/extra.pem`): a private identity provider's root.
    #[arg(long)]
    jwks_extra_ca: Option<PathBuf>,
}

/// The CA from the `--ca-*` flags: its gRPC service, the TLS config of the gRPC port if
/// `--tls-dns-names` is given, and what root rotation on the debug server needs.
struct Ca {
    service: mesh_identity::ca::api::CaService,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// With TLS: who may open ADS streams (an SVID from this CA, or a service-account token).
    xds_auth: Option<mesh_identity::ca::auth::FirstSuccess>,
    admin: CaAdmin,
}

/// What the debug server's `/debug/ca/` endpoints act on.
#[derive(Clone)]
struct CaAdmin {
    ca: Arc<CertificateAuthority>,
    /// The gRPC port's certificate, re-issued when its root stops signing or being trusted.
    serving: Option<Arc<ServingCert>>,
}

/// The CA service from the `--ca-*` flags, if asked for.
fn ca_service(args: &Args, trust_domain: &str) -> anyhow::Result<Option<Ca>> {
    use mesh_identity::ca::CaConfig;
    use mesh_identity::ca::auth::{AnyOf, Authenticator, JwtAuthenticator, SvidAuthenticator};
    let Some(dir) = &args.ca_dir else {
        return Ok(None);
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
    // ADS callers on the TLS port, as istiod's: a token or an SVID, whichever is valid.
    let mut xds_auth: Vec<(&'static str, Box<dyn Authenticator>)> = Vec::new();
    if let Some(jwks) = &args.ca_jwks {
        let text =
            std::fs::read_to_string(jwks).with_context(|| format!("reading {}", jwks.display()))?;
        let jwt = || {
            JwtAuthenticator::from_jwks(&text, args.ca_issuer.clone(), td.clone())
                .with_context(|| format!("--ca-jwks {}", jwks.display()))
        };
        auth.push(Box::new(jwt()?));
        xds_auth.push(("service-account token", Box::new(jwt()?)));
    }
    auth.push(Box::new(SvidAuthenticator::from_ca(ca.clone())));
    xds_auth.push((
        "client certificate",
        Box::new(SvidAuthenticator::from_ca(ca.clone())),
    ));
    if args.ca_insecure_identity_claims {
        tracing::warn!(
            "INSECURE: the CA issues certificates for claimed identities without proof \
             (--ca-insecure-identity-claims); never use this in production"
        );
        auth.push(Box::new(
            mesh_identity::ca::auth::InsecureClaimAuthenticator::new(td.clone()),
        ));
    }
    let (tls, serving) = if args.tls_dns_names.is_empty() {
        (None, None)
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
        let config = mesh_identity::serving::server_config(cert.clone(), ca.clone())
            .context("TLS on the gRPC port")?;
        (Some(Arc::new(config)), Some(cert))
    };
    tracing::info!("CA for {trust_domain} from {}", dir.display());
    let xds_auth = tls.is_some().then(|| {
        tracing::info!(
            "ADS callers authenticate with an SVID from this CA{}; a node may only act for its \
             identity's namespace",
            if args.ca_jwks.is_some() {
                " or a service-account token"
            } else {
                ""
            }
        );
        mesh_identity::ca::auth::FirstSuccess(xds_auth)
    });
    Ok(Some(Ca {
        service: mesh_identity::ca::api::CaService::new(ca.clone(), AnyOf(auth)),
        tls,
        xds_auth,
        admin: CaAdmin { ca, serving },
    }))
}

/// mesh-identity's authenticators as the ADS server's hook: the caller's token and TLS client
/// certificates, checked by `auth`; its SPIFFE ID is then matched with the node's namespace
/// by the server (mesh_xds::server::auth::check_identity).
fn xds_authenticator(auth: mesh_identity::ca::auth::FirstSuccess) -> impl Authenticate {
    use mesh_identity::ca::auth::{AuthError as CaAuthError, Authenticator, Credentials};
    move |caller: &Caller<'_>| {
        let credentials = Credentials {
            bearer: caller.bearer_token(),
            peer_certificates: caller.peer_certificates,
            claimed_identity: None,
        };
        match auth.authenticate(&credentials) {
            Ok(id) => Ok(vec![id.to_string()]),
            Err(CaAuthError::NoCredentials) => Err(XdsAuthError::NoCredentials(
                "neither a client certificate from the mesh CA nor an authorization bearer token"
                    .into(),
            )),
            Err(CaAuthError::Invalid(why)) => Err(XdsAuthError::Invalid(why)),
            Err(other) => Err(XdsAuthError::Invalid(other.to_string())),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<mesh_model::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

/// [`parse_duration`] for intervals and deadlines, where zero cannot work (a zero refresh
/// interval would fetch in a loop; a zero deadline would fail every fetch).
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!(
            "{s:?} is zero; write a positive duration such as 30s, 5m or 1h"
        )),
        d => Ok(d),
    }
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

/// Reads the credentials directory now and whenever its content changes (watched with
/// `mesh_registry::files::DirWatcher`, rescanned every `rescan`), pushing every view when
/// the credentials differ. A broken credential is logged (once per change) and left out.
fn watch_credentials(dir: PathBuf, cache: Arc<ViewCache>, rescan: Duration) {
    // Watching starts before the first read, so that nothing written after it goes unseen.
    let options = mesh_registry::files::WatchOptions::default().with_rescan_interval(rescan);
    let watcher = match mesh_registry::files::DirWatcher::new(&dir, options) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!("watching --credentials-dir: {e}; read once, not watched");
            None
        }
    };
    let read = {
        let dir = dir.clone();
        move || mesh_xds::credentials::Credentials::read_dir(&dir)
    };
    let (initial, problems) = read();
    for p in &problems {
        tracing::error!("{p}");
    }
    tracing::info!(
        "{} credential(s) from {}",
        initial.names().count(),
        dir.display()
    );
    cache.set_credentials(initial);
    let Some(mut watcher) = watcher else { return };
    tokio::spawn(async move {
        let mut last_problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        while let Some(generation) = watcher.changed().await {
            tracing::debug!(generation = generation.number, "{} changed", dir.display());
            let Ok((creds, problems)) = tokio::task::spawn_blocking(read.clone()).await else {
                continue;
            };
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            if problems != last_problems {
                for p in &problems {
                    tracing::error!("{p}");
                }
                last_problems = problems;
            }
            let names: Vec<String> = creds.names().map(str::to_string).collect();
            if cache.set_credentials(creds) {
                tracing::info!("credentials changed: {names:?}");
                let cache = cache.clone();
                let _ = tokio::task::spawn_blocking(move || cache.push_all()).await;
            }
        }
    });
}

/// Makes the store hold one generation of the config directory.
fn sync(dir: &Path, parsed: ParseOutput, store: &ConfigStore, metrics: &Metrics) {
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
    let ca = ca_service(&args, &mesh.trust_domain)?;
    let ca_admin = ca.as_ref().map(|c| c.admin.clone());
    let (ca, tls, xds_auth) = match ca {
        Some(c) => (Some(c.service), c.tls, c.xds_auth),
        None => (None, None, None),
    };
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(ConfigStore::new());
    // The watcher's first generation is the first read of --config.
    let mut config_watcher = mesh_registry::files::ManifestWatcher::new(
        &args.config,
        mesh_registry::files::WatchOptions::default().with_rescan_interval(args.poll_interval),
    )
    .with_context(|| format!("watching --config {}", args.config.display()))?;
    sync(
        &args.config,
        config_watcher.current().output.clone(),
        &store,
        &metrics,
    );

    let cache = ViewCache::new(store.clone(), mesh);
    // Services come from the registries' aggregate; today that is the ServiceEntries and
    // WorkloadEntries of --config (mesh-registry's first adapter).
    let registries = Arc::new(mesh_registry::Aggregate::new());
    registries.add(Box::new(mesh_registry::ServiceEntries::new(store.clone())))?;
    cache.set_services(registries.subscribe());
    if !registries.wait_synced(Duration::from_secs(30)).await {
        tracing::warn!(
            "serving before every registry synced: {:?}",
            registries.status()
        );
    }
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
    {
        let mut jwks = JwksConfig::default()
            .with_refresh_interval(args.jwks_refresh_interval)
            .with_timeout(args.jwks_timeout);
        if let Some(p) = &args.jwks_extra_ca {
            jwks = jwks.with_extra_roots_pem(
                std::fs::read_to_string(p)
                    .with_context(|| format!("--jwks-extra-ca: reading {}", p.display()))?,
            );
        }
        let resolver = JwksResolver::new(jwks).with_context(|| {
            format!(
                "--jwks-extra-ca {}",
                args.jwks_extra_ca
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })?;
        tokio::spawn(resolver.run(store.clone(), cache.clone()));
    }
    if let Some(dir) = &args.credentials_dir {
        anyhow::ensure!(
            dir.is_dir(),
            "--credentials-dir {}: not a directory (write a directory holding one \
             NAME/tls.crt, NAME/tls.key and optional NAME/ca.crt per credential)",
            dir.display()
        );
        watch_credentials(dir.clone(), cache.clone(), args.poll_interval);
    }

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

    let mut server = AdsServer::new(cache.clone());
    if let Some(auth) = xds_auth {
        server = server.with_authenticator(xds_authenticator(auth));
    }
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

    // Follow the config directory: events (debounced), and a full rescan every
    // --poll-interval; each new generation is synced.
    {
        let dir = args.config.clone();
        let store = store.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            while let Some(generation) = config_watcher.changed().await {
                let (d, s, m) = (dir.clone(), store.clone(), metrics.clone());
                let parsed = generation.output.clone();
                let _ = tokio::task::spawn_blocking(move || sync(&d, parsed, &s, &m)).await;
            }
        });
    }

    let debug_listener = tokio::net::TcpListener::bind(args.debug_addr)
        .await
        .with_context(|| format!("binding {}", args.debug_addr))?;
    tracing::info!("debug HTTP on http://{}", debug_listener.local_addr()?);
    {
        let (metrics, connections, cache) = (metrics.clone(), connections.clone(), cache.clone());
        let registries = registries.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = debug_listener.accept().await else {
                    continue;
                };
                let (metrics, connections, cache, ca_admin, registries) = (
                    metrics.clone(),
                    connections.clone(),
                    cache.clone(),
                    ca_admin.clone(),
                    registries.clone(),
                );
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let ca_admin = ca_admin.clone();
                            let r = (!req.uri().path().starts_with("/debug/ca/")).then(|| {
                                debug_response(&req, &metrics, &connections, &cache, &registries)
                            });
                            async move {
                                Ok::<_, Infallible>(match r {
                                    Some(r) => r,
                                    None => ca_response(ca_admin, &req, peer).await,
                                })
                            }
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
    registries: &mesh_registry::Aggregate,
) -> Response<Full<Bytes>> {
    let pretty = |v: serde_json::Value| {
        reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
        )
    };
    match req.uri().path() {
        "/debug/registryz" => pretty(mesh_registry::debug::registryz(&registries.current())),
        "/debug/endpointz" => pretty(mesh_registry::debug::endpointz(&registries.current())),
        "/debug/registries" => pretty(mesh_registry::debug::registries(&registries.status())),
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
            "/debug/syncz\n/debug/config_dump?proxyID=ID\n/debug/registryz\n/debug/endpointz\n\
             /debug/registries\n/metrics\n\
             /debug/ca/roots\nPOST /debug/ca/rotate-root[?stage=true]\n\
             POST /debug/ca/retire-root?sha256=HEX\n"
                .into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; see /debug/list\n".into(),
        ),
    }
}

// === root rotation on the debug server ===

/// `/debug/ca/...`: the trust bundle, and root rotation (POSTs from loopback peers only).
async fn ca_response(
    admin: Option<CaAdmin>,
    req: &Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let text = |status, body: String| reply(status, "text/plain", body + "\n");
    let Some(admin) = admin else {
        return text(
            StatusCode::NOT_FOUND,
            "no CA here: start mesh-control-plane with --ca-dir DIR".into(),
        );
    };
    let path = req.uri().path();
    let post = match (path, req.method()) {
        ("/debug/ca/roots", &hyper::Method::GET) => {
            return json(
                StatusCode::OK,
                serde_json::json!({"roots": roots_json(&admin.ca)}),
            );
        }
        ("/debug/ca/roots", _) => return method_not_allowed("GET"),
        ("/debug/ca/rotate-root" | "/debug/ca/retire-root", &hyper::Method::POST) => path,
        ("/debug/ca/rotate-root" | "/debug/ca/retire-root", _) => {
            return method_not_allowed("POST");
        }
        _ => {
            return text(StatusCode::NOT_FOUND, "not found; see /debug/list".into());
        }
    };
    if !peer.ip().is_loopback() {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "{post} is taken from loopback only (the debug port has no authentication); \
                 ask from the control plane's host"
            ),
        );
    }
    let stage = query_param(req, "stage").is_some_and(|v| v == "true" || v == "1");
    let sha256 = query_param(req, "sha256");
    let post = post.to_string();
    // Key generation and fsyncs: off the async workers.
    tokio::task::spawn_blocking(move || match post.as_str() {
        "/debug/ca/rotate-root" if stage => stage_root(&admin),
        "/debug/ca/rotate-root" => rotate_root(&admin),
        _ => retire_root(&admin, sha256.as_deref()),
    })
    .await
    .unwrap_or_else(|e| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("root rotation failed: {e}"),
        )
    })
}

fn stage_root(admin: &CaAdmin) -> Response<Full<Bytes>> {
    match admin.ca.stage_root() {
        Ok(root) => {
            tracing::info!(
                sha256 = root.sha256,
                "CA root staged: trusted now, signs after POST /debug/ca/rotate-root"
            );
            json(
                StatusCode::OK,
                serde_json::json!({"staged": root_json(&root), "roots": roots_json(&admin.ca)}),
            )
        }
        Err(e) => ca_error(&e),
    }
}

fn rotate_root(admin: &CaAdmin) -> Response<Full<Bytes>> {
    let rotation = match admin.ca.rotate_root() {
        Ok(r) => r,
        Err(e) => return ca_error(&e),
    };
    let mut body = serde_json::json!({
        "signing": root_json(&rotation.signing),
        "previous": root_json(&rotation.previous),
        "was_staged": rotation.was_staged,
    });
    if rotation.was_staged {
        tracing::info!(
            sha256 = rotation.signing.sha256,
            previous = rotation.previous.sha256,
            "CA root rotated to the staged root; the previous root stays trusted until retired"
        );
        // The agents have had the time to learn the root: serve a certificate from it.
        if let Some(serving) = &admin.serving
            && let Err(e) = serving.renew(&admin.ca)
        {
            tracing::warn!("gRPC port certificate not re-issued: {e}");
        }
    } else {
        let warning = "the new root was not staged: workloads that have not renewed since do \
                       not trust certificates from it yet (stage first with \
                       POST /debug/ca/rotate-root?stage=true and wait a renewal period)";
        tracing::warn!(
            sha256 = rotation.signing.sha256,
            "CA root rotated; {warning}"
        );
        body["warning"] = warning.into();
    }
    body["roots"] = roots_json(&admin.ca);
    json(StatusCode::OK, body)
}

fn retire_root(admin: &CaAdmin, sha256: Option<&str>) -> Response<Full<Bytes>> {
    let text = |status, body: String| reply(status, "text/plain", body + "\n");
    let Some(sha256) = sha256.map(str::to_ascii_lowercase) else {
        return text(
            StatusCode::BAD_REQUEST,
            "sha256 is required: POST /debug/ca/retire-root?sha256=HEX, HEX from GET /debug/ca/roots"
                .into(),
        );
    };
    let Some(root) = admin
        .ca
        .trusted_roots()
        .into_iter()
        .find(|r| r.sha256 == sha256)
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no trusted root with sha256 {sha256}; see GET /debug/ca/roots"),
        );
    };
    if root.signing {
        return text(
            StatusCode::CONFLICT,
            format!(
                "root {sha256} signs: rotate to another root first (POST /debug/ca/rotate-root)"
            ),
        );
    }
    admin.ca.retire_root(&root.pem);
    if let Err(e) = admin.ca.save_trust_bundle() {
        return ca_error(&e);
    }
    // A certificate from the retired root would no longer verify.
    if let Some(serving) = &admin.serving
        && let Err(e) = serving.renew(&admin.ca)
    {
        tracing::warn!("gRPC port certificate not re-issued: {e}");
    }
    tracing::info!(sha256, "CA root retired");
    json(
        StatusCode::OK,
        serde_json::json!({"retired": root_json(&root), "roots": roots_json(&admin.ca)}),
    )
}

fn ca_error(e: &mesh_identity::ca::CaError) -> Response<Full<Bytes>> {
    use mesh_identity::ca::CaError;
    let status = match e {
        CaError::NotSelfSigned { .. } | CaError::Unchanged { .. } => StatusCode::CONFLICT,
        CaError::BadFile { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::warn!("root rotation refused: {e}");
    reply(status, "text/plain", format!("{e}\n"))
}

fn method_not_allowed(allow: &str) -> Response<Full<Bytes>> {
    let mut r = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        format!("use {allow}\n"),
    );
    if let Ok(v) = allow.parse() {
        r.headers_mut().insert(hyper::header::ALLOW, v);
    }
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    reply(
        status,
        "application/json",
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
    )
}

fn roots_json(ca: &CertificateAuthority) -> serde_json::Value {
    ca.trusted_roots().iter().map(root_json).collect()
}

fn root_json(r: &TrustedRoot) -> serde_json::Value {
    serde_json::json!({
        "sha256": r.sha256,
        "subject": r.subject,
        "not_before": r.not_before.map(rfc3339),
        "not_after": r.not_after.map(rfc3339),
        "signing": r.signing,
        "staged": r.staged,
        "pem": r.pem,
    })
}

/// UTC, to the second: `2035-01-31T12:00:00Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
