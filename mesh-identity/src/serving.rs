//! The control plane's own TLS: a serving certificate for DNS names, issued by the mesh CA
//! and re-issued before it expires without a restart, and a TLS accept loop that hands tonic
//! connections whose client certificates reach the request (so the CA can authenticate SVID
//! renewals with [`tonic::Request::peer_certs`]).
//!
//! ```no_run
//! # async fn run(ca: std::sync::Arc<mesh_identity::ca::CertificateAuthority>) -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_identity::serving::{self, ServingCert};
//! use mesh_identity::spiffe::SpiffeId;
//!
//! let id = SpiffeId::istio(ca.config().trust_domain.clone(), "istio-system", "istiod")?;
//! let cert = ServingCert::issue(&ca, &["istiod.istio-system.svc".into()], &id, std::time::Duration::from_secs(86400))?;
//! let _renewals = cert.keep_renewed(ca.clone(), 0.5);
//! let config = serving::server_config(cert.clone(), ca.clone())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:15012").await?;
//! tonic::transport::Server::builder()
//!     // .add_service(...)
//!     # .add_service(mesh_identity::ca::api::CaService::new(ca.clone(), mesh_identity::ca::auth::AnyOf::default()))
//!     .serve_with_incoming(serving::incoming(listener, std::sync::Arc::new(config)))
//!     .await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::ca::{CaError, CertificateAuthority};
use crate::spiffe::SpiffeId;
use crate::tls::TlsError;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Current {
    certified: Arc<CertifiedKey>,
    issued_at: SystemTime,
    not_after: SystemTime,
}

/// A server certificate for DNS names that can be replaced while connections are open: each
/// handshake presents the certificate current at that moment.
#[derive(Debug)]
pub struct ServingCert {
    current: ArcSwap<Current>,
    dns_names: Vec<String>,
    id: SpiffeId,
    ttl: Duration,
    provider: Arc<CryptoProvider>,
}

/// Why a serving certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServingError {
    /// The CA refused to issue it.
    #[error("issuing the serving certificate: {0}")]
    Ca(#[from] CaError),
    /// rustls refused it.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ServingCert {
    /// Issues a certificate for `dns_names` (and the URI SAN `id`) valid for `ttl`.
    pub fn issue(
        ca: &CertificateAuthority,
        dns_names: &[String],
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<Arc<ServingCert>, ServingError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load(ca, dns_names, id, ttl, &provider)?;
        Ok(Arc::new(ServingCert {
            current: ArcSwap::from_pointee(current),
            dns_names: dns_names.to_vec(),
            id: id.clone(),
            ttl,
            provider,
        }))
    }

    /// Issues a fresh certificate and serves it from the next handshake on.
    pub fn renew(&self, ca: &CertificateAuthority) -> Result<(), ServingError> {
        let next = load(ca, &self.dns_names, &self.id, self.ttl, &self.provider)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// The leaf served now (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current.load().certified.cert[0].clone()
    }

    /// When the certificate served now expires.
    pub fn not_after(&self) -> SystemTime {
        self.current.load().not_after
    }

    /// Re-issues the certificate at `renew_at` (a fraction) of each lifetime, retrying every
    /// few seconds while the CA fails (the current certificate stays in use). Runs until the
    /// task is aborted.
    pub fn keep_renewed(
        self: &Arc<Self>,
        ca: Arc<CertificateAuthority>,
        renew_at: f64,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let at = {
                    let c = me.current.load();
                    let life = c.not_after.duration_since(c.issued_at).unwrap_or_default();
                    c.issued_at + life.mul_f64(renew_at.clamp(0.05, 0.95))
                };
                tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
                match me.renew(&ca) {
                    Ok(()) => {
                        tracing::info!(not_after = ?me.not_after(), "serving certificate renewed")
                    }
                    Err(e) => {
                        tracing::warn!("serving certificate not renewed, retrying: {e}");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        })
    }
}

fn load(
    ca: &CertificateAuthority,
    dns_names: &[String],
    id: &SpiffeId,
    ttl: Duration,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Current, ServingError> {
    let issued_at = SystemTime::now();
    let (issued, key) = ca.issue_serving(dns_names, id, ttl)?;
    let pem_err = |e: rustls_pki_types::pem::Error| TlsError::Pem(e.to_string());
    // Leaf and intermediates; the client has the root.
    let served = match issued.chain.as_slice() {
        [] => return Err(TlsError::Pem("the CA issued an empty chain".into()).into()),
        [leaf] => std::slice::from_ref(leaf),
        [rest @ .., _root] => rest,
    };
    let chain = served
        .iter()
        .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).map_err(pem_err))
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(pem_err)?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Key)?;
    Ok(Current {
        certified: Arc::new(certified),
        issued_at,
        not_after: issued.not_after,
    })
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }
}

/// A gRPC server config (ALPN `h2`) presenting `cert`. Client certificates are optional and,
/// when presented, must chain to the CA's trust bundle as it is at that handshake (a root added
/// or retired by root rotation takes effect without a restart): SVID renewals present one,
/// token holders and proxies need not.
pub fn server_config(
    cert: Arc<ServingCert>,
    ca: Arc<CertificateAuthority>,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = LiveRoots::new(ca, cert.provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(cert.provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// webpki client verification against the CA's current roots; the verifier is rebuilt when the
/// bundle changes.
#[derive(Debug)]
struct LiveRoots {
    ca: Arc<CertificateAuthority>,
    provider: Arc<CryptoProvider>,
    cached: ArcSwap<Cached>,
}

#[derive(Debug)]
struct Cached {
    roots: Vec<String>,
    verifier: Arc<dyn ClientCertVerifier>,
}

fn webpki_verifier(
    roots: &[String],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        store.add(der)?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Pem(format!("client roots: {e}")))
}

impl LiveRoots {
    fn new(ca: Arc<CertificateAuthority>, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let roots = ca.roots();
        let verifier = webpki_verifier(&roots, &provider)?;
        Ok(LiveRoots {
            ca,
            provider,
            cached: ArcSwap::from_pointee(Cached { roots, verifier }),
        })
    }

    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let roots = self.ca.roots();
        let cached = self.cached.load();
        if cached.roots == roots {
            return Ok(cached.verifier.clone());
        }
        let verifier = webpki_verifier(&roots, &self.provider)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        self.cached.store(Arc::new(Cached {
            roots,
            verifier: verifier.clone(),
        }));
        Ok(verifier)
    }
}

impl ClientCertVerifier for LiveRoots {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients send their certificate anyway, and the bundle may change.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::tls12_signature(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crate::tls::signature_schemes(&self.provider)
    }
}

/// Accepts TCP connections on `listener` and completes their TLS handshakes (each in its own
/// task, with a deadline, so a slow client delays nobody), yielding the established streams
/// for `tonic::transport::Server::serve_with_incoming`. tonic sees them as TLS connections:
/// `Request::peer_certs` gives the client's certificates. Failed handshakes are logged and
/// dropped. The accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
