//! `mesh-agent`: the node agent. Fetches the workload's certificate from the CA with its
//! service-account token, renews it before expiry, and serves it to Envoy over SDS (`default`
//! and `ROOTCA`) on a Unix socket, and optionally on a TCP address.
//!
//! ```text
//! mesh-agent --ca-addr http://127.0.0.1:15010 --token /var/run/secrets/tokens/istio-token \
//!            --sds-socket /var/run/mesh/sds.sock
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mesh_identity::agent::{self, AgentConfig};
use mesh_identity::sds::SdsServer;

/// The mesh node agent: certificates from the CA, served to Envoy over SDS.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The CA's gRPC address (mesh-control-plane's, with `--ca-dir`).
    #[arg(long, default_value = "http://127.0.0.1:15010")]
    ca_addr: String,
    /// The workload's service-account token (audience `istio-ca`), re-read at every renewal.
    #[arg(long)]
    token: PathBuf,
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
    anyhow::ensure!(
        args.token.is_file(),
        "--token {}: not a file",
        args.token.display()
    );
    let mut config = AgentConfig::new(args.ca_addr.clone(), Some(args.token.clone()));
    config.renew_at = args.renew_at;
    if let Some(root) = &args.ca_root {
        config.ca_root = Some(
            std::fs::read_to_string(root).with_context(|| format!("reading {}", root.display()))?,
        );
    }
    if let Some(ttl) = args.ttl {
        config = config.with_ttl(ttl);
    }
    let certs = agent::spawn(config);
    let sds = SdsServer::new(certs);
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
    Ok(())
}
