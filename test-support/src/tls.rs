//! TLS peers for tests: from the openssl CLI (which `scripts/test.sh` installs), self-signed
//! certificates, `s_server` upstreams and `s_client` fetches; with rustls, a mesh client
//! presenting a workload certificate ([`mesh_request`]).

use std::time::Duration;

/// An `openssl s_server` upstream (TLS, `-www`), killed when dropped.
pub struct TlsUpstream(std::process::Child);

impl TlsUpstream {
    /// Serves TLS on `port` with `cert`/`key`; `extra` adds s_server options (client
    /// verification).
    pub fn start(port: u16, cert: &std::path::Path, key: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_at(&port.to_string(), cert, key, extra)
    }

    /// [`TlsUpstream::start`] on an `-accept` address of openssl's (`PORT` or `HOST:PORT`).
    pub fn start_at(
        accept: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        TlsUpstream(
            std::process::Command::new("openssl")
                .args(["s_server", "-quiet", "-www", "-accept", accept])
                .arg("-cert")
                .arg(cert)
                .arg("-key")
                .arg(key)
                .args(extra)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed P-256 certificate for `host`, made with the openssl CLI in a fresh temp dir:
/// returns (dir, cert, key).
pub fn self_signed(
    tag: &str,
    host: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            &format!("/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, cert, key)
}

/// One HTTP/1.0 GET over TLS to `addr` with `sni`, by `openssl s_client` (no certificate
/// checks: the tests look at which backend answered); what came back, or nothing after 5 s.
pub async fn tls_get(addr: &str, sni: &str) -> String {
    tls_get_alpn(addr, sni, None).await
}

/// [`tls_get`] offering the ALPN protocols `alpn` (comma-separated, as `openssl s_client
/// -alpn` takes them; for instance `istio` as an Istio mTLS client offers).
pub async fn tls_get_alpn(addr: &str, sni: &str, alpn: Option<&str>) -> String {
    use tokio::io::AsyncWriteExt;
    let mut args = vec!["s_client", "-quiet", "-connect", addr, "-servername", sni];
    if let Some(alpn) = alpn {
        args.extend(["-alpn", alpn]);
    }
    let mut child = tokio::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    }
    match tokio::time::timeout(Duration::from_secs(5), child.wait_with_output()).await {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => String::new(),
    }
}

/// One HTTP/1.1 request over mutual TLS to `addr`, as a mesh workload holding `cert` would
/// send it: `cert`'s chain is presented, the server must hold the SPIFFE ID `server` (a
/// `spiffe://` URI, verified
/// against `cert`'s roots; DNS names play no part), `sni` is sent. An error when the
/// handshake or the request fails (a refused client certificate shows up here: with TLS 1.3
/// the server's alert arrives after the client's side of the handshake is done).
pub async fn mesh_request(
    addr: std::net::SocketAddr,
    sni: &str,
    cert: &mesh_identity::agent::WorkloadCert,
    server: &str,
    host: &str,
    path: &str,
) -> std::io::Result<crate::upstream::Reply> {
    use mesh_identity::tls::{IdentitySource, PeerPolicy, client_config};
    let server: mesh_identity::spiffe::SpiffeId = server.parse().map_err(std::io::Error::other)?;
    let source = IdentitySource::new();
    source.update(cert).map_err(std::io::Error::other)?;
    let mut config =
        client_config(&source, PeerPolicy::Ids([server].into())).map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name =
        rustls_pki_types::ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(std::io::Error::other)??;
    tokio::time::timeout(
        Duration::from_secs(5),
        crate::upstream::request_on(tls, "GET", host, path, &[]),
    )
    .await
    .map_err(std::io::Error::other)?
}
