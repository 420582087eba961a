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
//! `--identity ID` replaces the token with an unproven claim, for development only: the CA
//! must have been started with `--ca-insecure-identity-claims` to believe it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_identity::agent::{self, AgentConfig};
use mesh_identity::sds::SdsServer;
use mesh_identity::xds_proxy::XdsProxy;

/// The mesh node agent: certificates from the CA, served to Envoy over SDS.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The CA's gRPC address (mesh-control-plane's, with `--ca-dir`).
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
    /// The CA's root (PEM) to verify an `https://` CA address with.
    #[arg(long)]
    ca_root: Option<PathBuf>,
    /// Fraction of the lifetime after which the certificate is renewed.
    #[arg(long, default_value_t = 0.5)]
    renew_at: f64,
    /// Proxy Envoy's ADS stream from this Unix socket to the control plane.
    #[arg(long)]
    xds_socket: Option<PathBuf>,
    /// The control plane's xDS address for `--xds-socket` (the CA's address by default; an
    /// `https://` address is verified with `--ca-root`).
    #[arg(long, requires = "xds_socket")]
    xds_addr: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<mesh_model::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
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
    if let Some(path) = args.xds_socket.clone() {
        let addr = args
            .xds_addr
            .clone()
            .unwrap_or_else(|| args.ca_addr.clone());
        let upstream = config
            .endpoint(&addr, None)
            .with_context(|| format!("--xds-addr {addr}"))?
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy();
        tracing::info!("xDS proxy on {} to {addr}", path.display());
        tokio::spawn(async move {
            if let Err(e) = XdsProxy::new(upstream).serve_unix(&path).await {
                tracing::error!("xDS proxy on {}: {e}", path.display());
            }
        });
    }
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
