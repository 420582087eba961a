//! The node agent's certificate side: for one workload identity, generate the key locally, send
//! a CSR to the CA with the workload's token, keep the result, and renew before expiry (at half
//! of the lifetime by default; over mTLS with the current certificate when the CA is on TLS),
//! retrying with backoff while the CA is unreachable and keeping the current certificate
//! meanwhile. Certificates are published on a `watch` channel, which the SDS
//! server and rustls configs read.
//!
//! The CA's address is Istio's `CA_ADDR` form `host:port` or a URL ([`crate::addr`]); a bare
//! `host:port` is dialled over TLS when the config has a root to verify the CA with
//! ([`AgentConfig::ca_root`]), in plaintext otherwise. Over TLS the CA is verified with that
//! root and with the trust bundle of the last certificate, which the CA sent over the verified
//! channel: after a root rotation the agent keeps trusting the CA when its serving certificate
//! comes from the new root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::addr::{AddrError, GrpcAddr, Scheme};
use crate::ca::api::{CREATE_CERTIFICATE, IstioCertificateRequest, IstioCertificateResponse};

/// A workload's certificate and key, and the roots it trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkloadCert {
    /// PEM certificates, leaf first (the CA's chain without its root).
    pub chain: Vec<String>,
    /// PEM PKCS#8 private key.
    pub key: String,
    /// PEM trusted roots.
    pub roots: Vec<String>,
    /// When the leaf stops being valid.
    pub not_after: SystemTime,
    /// When it was issued (for the renewal point).
    pub issued_at: SystemTime,
}

impl std::fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("WorkloadCert")
            .field("chain", &self.chain.len())
            .field("roots", &self.roots.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The token file could not be read.
    #[error("reading token {path}: {source}")]
    Token {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Key or CSR generation failed.
    #[error("key generation: {0}")]
    Key(#[from] rcgen::Error),
    /// An address (the CA's, or another given to [`AgentConfig::endpoint`]) cannot be used.
    #[error("'{addr}': {source}")]
    Address {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        #[source]
        source: AddrError,
    },
    /// A TLS address, but no root to verify the server with.
    #[error(
        "'{addr}' is TLS (https) but there is no root to verify the server with: set the CA's root (AgentConfig::ca_root, mesh-agent --ca-root FILE), or write http://host:port for plaintext"
    )]
    NoRoot {
        /// The address as given.
        addr: String,
    },
    /// The CA could not be reached.
    #[error("CA at {addr} unreachable: {reason}")]
    Unreachable {
        /// Its address, as dialled (`http://127.0.0.1:15010`).
        addr: String,
        /// Why, in words and then with the error's whole source chain (`connection refused,
        /// nothing listens there (transport error: tcp connect error: Connection refused (os
        /// error 111))`).
        reason: String,
    },
    /// The CA refused the request.
    #[error("CA refused: {0}")]
    Refused(tonic::Status),
    /// The CA's answer is not a usable chain.
    #[error("bad CA response: {0}")]
    BadResponse(String),
}

/// Settings of an agent.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The CA's gRPC address: Istio's `CA_ADDR` form `host:port` (TLS when `ca_root` is set,
    /// plaintext otherwise) or `http://host:port` / `https://host:port`. See [`crate::addr`].
    pub ca_addr: String,
    /// A file holding the workload's service-account token, read at every request (Kubernetes
    /// rotates it in place).
    pub token: Option<PathBuf>,
    /// Requested lifetime; `None` takes the CA's default.
    pub ttl: Option<Duration>,
    /// PEM root (or roots) to verify the CA's TLS certificate with; the CA's name in the address
    /// must be one of the certificate's DNS names. With it a bare `host:port` means TLS.
    pub ca_root: Option<String>,
    /// Fraction of the lifetime after which the certificate is renewed.
    pub renew_at: f64,
    /// First retry delay while the CA fails; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Renew over mTLS with the current certificate while it is valid, instead of the token
    /// (needs a TLS CA address; the CA must accept SVID renewals). On by default: a workload
    /// keeps its identity even after its token file goes away.
    pub renew_with_svid: bool,
    /// Insecure development mode: claim this identity instead of proving it with a token. Only
    /// a CA that was explicitly told to trust such claims accepts them.
    pub insecure_identity: Option<String>,
}

impl AgentConfig {
    /// An agent for the CA at `ca_addr`, authenticating with the token in `token`.
    pub fn new(ca_addr: impl Into<String>, token: Option<PathBuf>) -> AgentConfig {
        AgentConfig {
            ca_addr: ca_addr.into(),
            token,
            ttl: None,
            ca_root: None,
            renew_at: 0.5,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            renew_with_svid: true,
            insecure_identity: None,
        }
    }

    /// The scheme of a bare `host:port`: https when there is a root to verify the server with
    /// ([`ca_root`](Self::ca_root)), http otherwise.
    pub fn default_scheme(&self) -> Scheme {
        if self.ca_root.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// Parses a control plane address (`host:port` with [`default_scheme`](Self::default_scheme),
    /// or a URL) and checks that this config can dial it: a TLS address needs `ca_root`.
    pub fn parse_addr(&self, addr: &str) -> Result<GrpcAddr, AgentError> {
        let parsed =
            GrpcAddr::parse(addr, self.default_scheme()).map_err(|source| AgentError::Address {
                addr: addr.to_string(),
                source,
            })?;
        if parsed.is_tls() && self.ca_root.is_none() {
            return Err(AgentError::NoRoot {
                addr: addr.to_string(),
            });
        }
        Ok(parsed)
    }

    /// The gRPC endpoint of `addr` (see [`parse_addr`](Self::parse_addr)) under this config's
    /// TLS settings, presenting `client` (a certificate chain and key, PEM) if given. A TLS
    /// server is verified with `ca_root` and with `client`'s trust bundle.
    pub fn endpoint(
        &self,
        addr: &str,
        client: Option<&WorkloadCert>,
    ) -> Result<tonic::transport::Endpoint, AgentError> {
        let bundle = client.map(|c| c.roots.as_slice()).unwrap_or_default();
        self.endpoint_trusting(addr, client, bundle)
    }

    /// [`endpoint`](Self::endpoint), verifying a TLS server with `ca_root` and the PEM roots
    /// in `bundle` (the trust bundle the CA sent with the last certificate, which lists the new
    /// root during a root rotation).
    pub fn endpoint_trusting(
        &self,
        addr: &str,
        client: Option<&WorkloadCert>,
        bundle: &[String],
    ) -> Result<tonic::transport::Endpoint, AgentError> {
        let target = self.parse_addr(addr)?;
        let unreachable = |e: &(dyn std::error::Error + 'static)| AgentError::Unreachable {
            addr: target.to_string(),
            reason: describe(e),
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(target.to_string())
            .map_err(|e| unreachable(&e))?
            .connect_timeout(Duration::from_secs(5));
        if let (true, Some(root)) = (target.is_tls(), &self.ca_root) {
            let mut roots = root.trim_end().to_string();
            for r in bundle {
                roots.push('\n');
                roots.push_str(r.trim_end());
            }
            roots.push('\n');
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(roots));
            if let Some(cert) = client {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    cert.chain.concat(),
                    &cert.key,
                ));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| unreachable(&e))?;
        }
        Ok(endpoint)
    }

    /// Asks for this lifetime.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> AgentConfig {
        self.ttl = Some(ttl);
        self
    }
}

/// Fetches one certificate: a fresh ECDSA P-256 key, a CSR, one call to the CA.
pub async fn fetch(config: &AgentConfig) -> Result<WorkloadCert, AgentError> {
    fetch_with(config, None).await
}

/// Fetches a certificate, renewing with `current` (over mTLS, without the token) when the
/// config allows it and `current` is still valid.
pub async fn fetch_with(
    config: &AgentConfig,
    current: Option<&WorkloadCert>,
) -> Result<WorkloadCert, AgentError> {
    let target = config.parse_addr(&config.ca_addr)?;
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    // An SVID proves an identity only over TLS.
    let svid = current.filter(|c| {
        config.renew_with_svid
            && target.is_tls()
            && c.not_after > SystemTime::now() + Duration::from_secs(1)
    });
    let token = match (&config.token, svid) {
        (Some(path), None) => Some(
            tokio::fs::read_to_string(path)
                .await
                .map_err(|source| AgentError::Token {
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
        _ => None,
    };
    let unreachable = |reason: String| AgentError::Unreachable {
        addr: target.to_string(),
        reason,
    };
    let bundle = current.map(|c| c.roots.as_slice()).unwrap_or_default();
    let channel = config
        .endpoint_trusting(&config.ca_addr, svid, bundle)?
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| unreachable(describe(&e)))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| unreachable(describe(&e)))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: config
            .ttl
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
        metadata: None,
    });
    if let Some(t) = token {
        let value = format!("Bearer {t}")
            .parse()
            .map_err(|_| AgentError::BadResponse("token is not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    if svid.is_none()
        && let Some(id) = &config.insecure_identity
    {
        let value = id
            .parse()
            .map_err(|_| AgentError::BadResponse("identity is not a valid header value".into()))?;
        request
            .metadata_mut()
            .insert(crate::ca::auth::INSECURE_IDENTITY_HEADER, value);
    }
    let codec =
        tonic_prost::ProstCodec::<IstioCertificateRequest, IstioCertificateResponse>::default();
    let issued_at = SystemTime::now();
    let resp = grpc
        .unary(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE),
            codec,
        )
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                unreachable(describe_status(&s))
            }
            // A status made from a transport error is the connection's, not the CA's answer.
            _ if std::error::Error::source(&s).is_some() => unreachable(describe_status(&s)),
            _ => AgentError::Refused(s),
        })?;
    let bundle = resp
        .metadata()
        .get_bin(crate::ca::api::TRUST_BUNDLE_METADATA)
        .and_then(|v| v.to_bytes().ok())
        .map(|b| split_pem(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let mut chain = resp.into_inner().cert_chain;
    if chain.len() < 2 {
        return Err(AgentError::BadResponse(format!(
            "expected a leaf and a root, got {} certificates",
            chain.len()
        )));
    }
    let root = chain.pop().unwrap_or_default();
    let not_after = leaf_not_after(&chain[0])?;
    // The whole trust bundle when the CA sends it (root rotation), and always the chain's root.
    let mut roots = bundle;
    if !roots.iter().any(|r| r.trim() == root.trim()) {
        roots.insert(0, root);
    }
    Ok(WorkloadCert {
        chain,
        key: key.serialize_pem(),
        roots,
        not_after,
        issued_at,
    })
}

/// An error and its sources in one line, led by what it means in plain words when that is
/// known: `connection refused, nothing listens there (transport error: tcp connect error:
/// Connection refused (os error 111))`. A source whose message ends its parent's (an error
/// that shows its source) is left out.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let hint = explain(e, &mut parts);
    with_hint(hint, &parts)
}

/// A gRPC status as [`describe`] words an error: its code and message, then its sources.
fn describe_status(s: &tonic::Status) -> String {
    let head = if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    };
    let Some(source) = std::error::Error::source(s) else {
        return head;
    };
    let mut parts = vec![head];
    let hint = explain(source, &mut parts);
    // hyper's HTTP/2 errors come as INTERNAL: typically a TLS port that got a plaintext
    // HTTP/2 preface and answered with TLS.
    let hint = hint.or((s.code() == tonic::Code::Internal)
        .then_some("the HTTP/2 connection failed (a TLS port dialled in plaintext?)"));
    with_hint(hint, &parts)
}

/// Appends the messages of `e` and its sources to `parts`, each unless the one before ends
/// with it, and returns the plain-words reading of the first error that has one.
fn explain(e: &(dyn std::error::Error + 'static), parts: &mut Vec<String>) -> Option<&'static str> {
    let mut hint = None;
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|p| p.ends_with(&text)) {
            parts.push(text);
        }
        hint = hint.or_else(|| plain_words(err));
        next = err.source();
    }
    hint
}

fn with_hint(hint: Option<&str>, parts: &[String]) -> String {
    let chain = parts.join(": ");
    match hint {
        Some(h) => format!("{h} ({chain})"),
        None => chain,
    }
}

/// What the usual connection failures mean for someone reading the log.
fn plain_words(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind;
        // An io::Error shows its inner error but gives its source as the inner's source.
        if let Some(inner) = io.get_ref()
            && let Some(hint) = plain_words(inner)
        {
            return Some(hint);
        }
        return match io.kind() {
            ErrorKind::ConnectionRefused => Some("connection refused, nothing listens there"),
            ErrorKind::TimedOut => Some("timed out connecting"),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Some("the server closed the connection (a TLS port dialled in plaintext?)")
            }
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                Some("no route to the host")
            }
            _ => None,
        };
    }
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(match tls {
            rustls::Error::InvalidCertificate(_) => {
                "the server's TLS certificate does not verify with the configured root and name"
            }
            _ => "the TLS handshake failed",
        });
    }
    None
}

/// The certificates of a PEM bundle, each as its own PEM string; anything that is not a
/// certificate is left out.
fn split_pem(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(END)
        .filter_map(|part| {
            let start = part.find("-----BEGIN CERTIFICATE-----")?;
            let pem = format!("{}\n", &part[start..]);
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .ok()
                .map(|_| pem)
        })
        .collect()
}

fn leaf_not_after(pem: &str) -> Result<SystemTime, AgentError> {
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| AgentError::BadResponse(e.to_string()))?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
        .map_err(|e| AgentError::BadResponse(e.to_string()))?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// When to renew a certificate.
fn renew_point(cert: &WorkloadCert, fraction: f64) -> SystemTime {
    let life = cert
        .not_after
        .duration_since(cert.issued_at)
        .unwrap_or_default();
    cert.issued_at + life.mul_f64(fraction.clamp(0.05, 0.95))
}

/// Keeps a workload's certificate fresh: fetches one, then renews at the configured fraction of
/// its lifetime, retrying with backoff on failure and keeping the current certificate. Stops
/// when every receiver is gone.
pub fn spawn(config: AgentConfig) -> watch::Receiver<Option<Arc<WorkloadCert>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut backoff = config.min_backoff;
        let mut current: Option<Arc<WorkloadCert>> = None;
        loop {
            match fetch_with(&config, current.as_deref()).await {
                Ok(cert) => {
                    backoff = config.min_backoff;
                    let at = renew_point(&cert, config.renew_at);
                    tracing::info!(not_after = ?cert.not_after, "certificate issued");
                    let cert = Arc::new(cert);
                    current = Some(cert.clone());
                    if tx.send(Some(cert)).is_err() {
                        return;
                    }
                    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = tx.closed() => return,
                    }
                }
                Err(e) => {
                    tracing::warn!("certificate request failed, retrying in {backoff:?}: {e}");
                    if matches!(e, AgentError::Refused(_)) {
                        // A CA that refuses the SVID renewal may still take the token.
                        current = None;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a source, whose message may or may not repeat the source's.
    #[derive(Debug)]
    struct Wrapping(&'static str, std::io::Error);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn connection_errors_are_worded_with_their_whole_chain() {
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = Wrapping("tcp connect error", refused());
        assert_eq!(
            describe(&e),
            format!(
                "connection refused, nothing listens there (tcp connect error: {})",
                refused()
            )
        );
        // A message that already carries its source's is not repeated.
        let shown = Wrapping("connection refused", std::io::Error::other("refused"));
        assert_eq!(describe(&shown), "connection refused");
        // A rustls error inside an io::Error is found.
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(
            describe(&tls).starts_with("the server's TLS certificate does not verify"),
            "{}",
            describe(&tls)
        );
        let status = tonic::Status::unavailable("transport error");
        assert_eq!(describe_status(&status), "Unavailable: transport error");
    }
}
