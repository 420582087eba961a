//! `mesh-agent`: the node agent. Fetches the workload's certificate from the CA with its
//! service-account token, renews it before expiry (over mTLS with the current certificate when
//! the CA is on TLS), and serves it to Envoy over SDS (`default` and `ROOTCA`) on a Unix
//! socket, and optionally on a TCP address. With `--xds-socket` it also proxies Envoy's ADS
//! stream to the control plane, so Envoy only talks to local sockets.
//!
//! ```text
//! mesh-agent --ca-addr https://istiod.example:15012 --ca-root /etc/mesh/root-cert.pem \
//!            --token /var/run/secrets/tokens/istio-token \
//!            --sds-socket /var/run/mesh/sds.sock --xds-socket /var/run/mesh/xds.sock
//! ```
//!
//! `--ca-addr` (and `--xds-addr`) take Istio's `CA_ADDR` form `host:port` as well as a URL:
//! a bare `host:port` is dialled over TLS when `--ca-root` gives a root to verify the CA with,
//! in plaintext otherwise (Istio: 15012 is TLS, 15010 plaintext), so
//! `--ca-addr istiod.istio-system.svc:15012 --ca-root root-cert.pem` and
//! `--ca-addr 127.0.0.1:15010` both do what they say. An address the agent cannot use (no port,
//! an unknown scheme, a host that does not resolve, TLS without `--ca-root`) stops it at start
//! with a message saying what to write instead.
//!
//! Over TLS the agent verifies the control plane with `--ca-root` and with the trust bundle
//! the CA sent with the last certificate, so a root rotation on the control plane
//! (`mesh-control-plane`'s `/debug/ca/rotate-root`) needs no new `--ca-root` file: the CA
//! connection and the xDS proxy follow the bundle, and Envoy gets it as `ROOTCA`.
//!
//! With `--xds-socket` over TLS the agent authenticates Envoy's ADS streams to the control
//! plane as Istio's agent does: over mTLS with the (first) workload certificate once it has
//! one, with the (first) token in `authorization: Bearer` before that. `mesh-control-plane`
//! with `--tls-dns-names` refuses streams without either.
//!
//! `--identity ID` replaces the token with an unproven claim, for development only: the CA
//! must have been started with `--ca-insecure-identity-claims` to believe it. Such an agent has
//! no token for the control plane's xDS port, so its proxy's streams are refused until the
//! first certificate arrives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_identity::addr::GrpcAddr;
use mesh_identity::agent::{self, AgentConfig};
use mesh_identity::sds::SdsServer;
use mesh_identity::xds_proxy::XdsProxy;

/// How long a control plane's host name may take to resolve at start.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The mesh node agent: certificates from the CA, served to Envoy over SDS.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The CA's gRPC address (mesh-control-plane's, with `--ca-dir`): Istio's `CA_ADDR` form
    /// `host:port` (`istiod.istio-system.svc:15012`), or `http://host:port` or
    /// `https://host:port`. A bare `host:port` is TLS (https) when `--ca-root` is given, and
    /// plaintext (http) otherwise.
    #[arg(long, default_value = "http://127.0.0.1:15010")]
    ca_addr: String,
    /// The workload's service-account token (audience `istio-ca`), re-read whenever it is
    /// needed (the first request, and renewals that cannot use the current certificate).
    /// Repeat it for several workload identities: the first is SDS `default`, and each is also
    /// served under its SPIFFE ID.
    #[arg(long, required_unless_present = "identity")]
    token: Vec<PathBuf>,
    /// INSECURE, development only: claim this SPIFFE ID instead of proving an identity with a
    /// token (repeatable). Only a CA started with `--ca-insecure-identity-claims` accepts it.
    #[arg(long, conflicts_with = "token")]
    identity: Vec<String>,
    /// Where to serve SDS for Envoy.
    #[arg(long)]
    sds_socket: PathBuf,
    /// Also serve SDS on this TCP address.
    #[arg(long)]
    sds_addr: Option<SocketAddr>,
    /// Requested certificate lifetime (the CA's default, 24 h, otherwise), e.g. `1h`.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// The CA's root (PEM; several roots may be listed) to verify the CA's TLS certificate
    /// with. With it a bare `host:port` address means TLS.
    #[arg(long)]
    ca_root: Option<PathBuf>,
    /// Fraction of the lifetime after which the certificate is renewed.
    #[arg(long, default_value_t = 0.5)]
    renew_at: f64,
    /// Proxy Envoy's ADS stream from this Unix socket to the control plane. Over TLS the
    /// streams present the first identity's certificate (mTLS) once the agent has one, and its
    /// token (`authorization: Bearer`) until then.
    #[arg(long)]
    xds_socket: Option<PathBuf>,
    /// The control plane's xDS address for `--xds-socket` (the CA's address by default), in
    /// the same forms as `--ca-addr`: `host:port` (TLS when `--ca-root` is given), or
    /// `http(s)://host:port`. TLS is verified with `--ca-root` and the CA's trust bundle.
    #[arg(long, requires = "xds_socket")]
    xds_addr: Option<String>,
}

/// `given` as `flag`'s address: parsed, dialable with `config` (TLS needs `--ca-root`), and
/// resolving; otherwise an error that names the flag and says what to write instead.
async fn usable_addr(config: &AgentConfig, flag: &str, given: &str) -> anyhow::Result<GrpcAddr> {
    // The error starts with the quoted address: "--ca-addr 'foo': expected host:port ...".
    let addr = config
        .parse_addr(given)
        .map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
    addr.resolve(RESOLVE_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("{flag} '{given}': {e}"))?;
    let how = match (given.contains("://"), addr.is_tls()) {
        (false, true) => " (host:port with --ca-root: TLS)",
        (false, false) => " (host:port without --ca-root: plaintext)",
        (true, false) if config.ca_root.is_some() => {
            tracing::warn!(
                "{flag} {given} is plaintext: --ca-root is not used for it (write https://... or host:port for TLS)"
            );
            ""
        }
        (true, _) => "",
    };
    tracing::info!("{flag} {addr}{how}");
    Ok(addr)
}

/// A certificate lifetime: positive (a zero TTL would ask for certificates already expired).
fn parse_duration(s: &str) -> Result<Duration, String> {
    match s
        .parse::<mesh_model::Duration>()
        .map_err(|e| e.to_string())?
        .as_std()
    {
        d if d.is_zero() => Err(format!(
            "{s:?} is zero; write a positive duration such as 1h or 24h"
        )),
        d => Ok(d),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let args = Args::parse();
    for token in &args.token {
        anyhow::ensure!(token.is_file(), "--token {}: not a file", token.display());
    }
    let mut config = AgentConfig::new(args.ca_addr.clone(), None);
    config.renew_at = args.renew_at;
    if let Some(root) = &args.ca_root {
        config.ca_root = Some(
            std::fs::read_to_string(root).with_context(|| format!("reading {}", root.display()))?,
        );
    }
    if let Some(ttl) = args.ttl {
        config = config.with_ttl(ttl);
    }
    // Every address is checked before anything starts.
    config.ca_addr = usable_addr(&config, "--ca-addr", &args.ca_addr)
        .await?
        .to_string();
    let xds = match (&args.xds_socket, &args.xds_addr) {
        (None, _) => None,
        (Some(path), Some(given)) => Some((
            path.clone(),
            usable_addr(&config, "--xds-addr", given).await?,
        )),
        (Some(path), None) => Some((path.clone(), config.parse_addr(&config.ca_addr)?)),
    };
    // One agent per identity, each with its own key, renewals and backoff.
    let mut certs = Vec::new();
    for token in &args.token {
        let mut c = config.clone();
        c.token = Some(token.clone());
        certs.push(agent::spawn(c));
    }
    for id in &args.identity {
        let id: mesh_identity::spiffe::SpiffeId =
            id.parse().with_context(|| format!("--identity {id}"))?;
        tracing::warn!(
            "INSECURE development mode: claiming {id} without proof; never use this in production"
        );
        let mut c = config.clone();
        c.insecure_identity = Some(id.to_string());
        certs.push(agent::spawn(c));
    }
    // The first identity's trust bundle (clap asks for at least one identity).
    if let (Some((path, addr)), Some(first)) = (xds, certs.first()) {
        xds_proxy(
            &config,
            path,
            addr,
            args.token.first().cloned(),
            first.clone(),
        )?;
    }
    let sds = SdsServer::with_identities(certs);
    if let Some(addr) = args.sds_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let tcp = sds.clone();
        tracing::info!("SDS on {addr}");
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(tcp.into_service())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
    }
    tracing::info!("SDS on {}", args.sds_socket.display());
    tokio::select! {
        r = sds.serve_unix(&args.sds_socket) => {
            r.with_context(|| format!("serving SDS on {}", args.sds_socket.display()))?;
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    let _ = std::fs::remove_file(&args.sds_socket);
    if let Some(path) = &args.xds_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Proxies Envoy's ADS stream from the Unix socket `path` to the control plane at `addr`.
///
/// Over TLS the agent authenticates to the control plane as Istio's agent does: with the first
/// identity's certificate (mTLS) once it has one, and with that identity's token (`token`, as
/// `authorization: Bearer`) until then. The upstream channel is rebuilt whenever the
/// certificate is renewed or the trust bundle changes (so that new streams present the current
/// certificate and verify a control plane whose certificate comes from a rotated root); open
/// streams stay on the channel they opened on.
fn xds_proxy(
    config: &AgentConfig,
    path: PathBuf,
    addr: GrpcAddr,
    token: Option<PathBuf>,
    mut certs: tokio::sync::watch::Receiver<Option<std::sync::Arc<agent::WorkloadCert>>>,
) -> anyhow::Result<()> {
    let url = addr.to_string();
    let channel = {
        let config = config.clone();
        let url = url.clone();
        move |client: Option<&agent::WorkloadCert>, bundle: &[String]| {
            config.endpoint_trusting(&url, client, bundle).map(|e| {
                e.http2_keep_alive_interval(Duration::from_secs(30))
                    .connect_lazy()
            })
        }
    };
    let (upstream, following) = tokio::sync::watch::channel(
        channel(None, &[]).with_context(|| format!("--xds-addr {url}"))?,
    );
    // Tokens go over TLS only, and only until the channel presents a certificate.
    let (token_tx, token_rx) =
        tokio::sync::watch::channel(if addr.is_tls() { token } else { None });
    if addr.is_tls() {
        let configured = config.ca_root.clone().unwrap_or_default();
        tokio::spawn(async move {
            // The bundle's roots beyond --ca-root, and the chain the channel presents.
            let mut extra: Vec<String> = Vec::new();
            let mut presented: Option<Vec<String>> = None;
            while certs.changed().await.is_ok() {
                let cert = certs.borrow_and_update().clone();
                let Some(cert) = cert else { continue };
                let bundle: Vec<String> = cert
                    .roots
                    .iter()
                    .filter(|r| !configured.contains(r.trim()))
                    .cloned()
                    .collect();
                if bundle == extra && presented.as_ref() == Some(&cert.chain) {
                    continue;
                }
                match channel(Some(&cert), &bundle) {
                    Ok(c) => {
                        if presented.is_none() {
                            tracing::info!(
                                "xDS proxy: new streams present the workload certificate (mTLS)"
                            );
                        }
                        if bundle != extra {
                            tracing::info!(
                                "xDS proxy: new streams also trust {} root(s) from the CA's trust bundle",
                                bundle.len()
                            );
                        }
                        extra = bundle;
                        presented = Some(cert.chain.clone());
                        if upstream.send(c).is_err() {
                            return;
                        }
                        let _ = token_tx.send(None);
                    }
                    Err(e) => tracing::warn!("xDS proxy: keeping the current channel: {e}"),
                }
            }
        });
    }
    tracing::info!("xDS proxy on {} to {url}", path.display());
    tokio::spawn(async move {
        if let Err(e) = XdsProxy::following(following)
            .with_token(token_rx)
            .serve_unix(&path)
            .await
        {
            tracing::error!("xDS proxy on {}: {e}", path.display());
        }
    });
    Ok(())
}
