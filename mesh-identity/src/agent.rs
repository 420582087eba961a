//! The node agent's certificate side: for one workload identity, generate the key locally, send
//! a CSR to the CA with the workload's token, keep the result, and renew before expiry (at half
//! of the lifetime by default; over mTLS with the current certificate when the CA is on TLS),
//! retrying with backoff while the CA is unreachable and keeping the current certificate
//! meanwhile. Certificates are published on a `watch` channel, which the SDS
//! server and rustls configs read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

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
    /// The CA could not be reached.
    #[error("CA at {addr} unreachable: {reason}")]
    Unreachable {
        /// Its address.
        addr: String,
        /// Why.
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
    /// The CA's gRPC address (`http://host:port`).
    pub ca_addr: String,
    /// A file holding the workload's service-account token, read at every request (Kubernetes
    /// rotates it in place).
    pub token: Option<PathBuf>,
    /// Requested lifetime; `None` takes the CA's default.
    pub ttl: Option<Duration>,
    /// PEM root to verify the CA's TLS certificate with (`https://` addresses); the CA's name in
    /// the address must be one of the certificate's DNS names.
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

    /// The gRPC endpoint of `addr` under this config's TLS settings (the CA's root), presenting
    /// `client` (a certificate chain and key, PEM) if given.
    pub fn endpoint(
        &self,
        addr: &str,
        client: Option<&WorkloadCert>,
    ) -> Result<tonic::transport::Endpoint, AgentError> {
        let unreachable = |e: &dyn std::fmt::Display| AgentError::Unreachable {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(addr.to_string())
            .map_err(|e| unreachable(&e))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(root) = &self.ca_root {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(root));
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
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let svid = current.filter(|c| {
        config.renew_with_svid
            && config.ca_root.is_some()
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
    let unreachable = |e: &dyn std::fmt::Display| AgentError::Unreachable {
        addr: config.ca_addr.clone(),
        reason: e.to_string(),
    };
    let channel = config
        .endpoint(&config.ca_addr, svid)?
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| unreachable(&e))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| unreachable(&e))?;
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
                unreachable(&s)
            }
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
