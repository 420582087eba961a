//! rustls configs for SPIFFE mTLS that follow certificate rotation without a restart.
//!
//! An [`IdentitySource`] holds the workload's current certificate, key and trust bundle in an
//! `ArcSwap`; [`IdentitySource::follow`] keeps it in step with the agent's channel. Configs
//! built by [`server_config`] and [`client_config`] read it on every handshake, so a rotation
//! applies to the next connection and never drops an open one. Peers are verified with webpki
//! and then by the SPIFFE rules ([`crate::svid::verify`]) and a [`PeerPolicy`]; DNS names play
//! no part. [`peer_id`] gives the verified peer identity of a connection.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::sync::watch;

use crate::agent::WorkloadCert;
use crate::spiffe::{SpiffeId, TrustDomain};

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key does not parse.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// The key does not fit the certificate, or rustls refuses it.
    #[error("unusable key: {0}")]
    Key(#[from] rustls::Error),
    /// The certificate is not an SVID.
    #[error(transparent)]
    Svid(#[from] crate::svid::SvidError),
}

/// What is loaded now.
#[derive(Debug)]
struct Loaded {
    certified: Arc<CertifiedKey>,
    roots: Vec<CertificateDer<'static>>,
    id: SpiffeId,
}

/// The workload's current identity, swapped atomically on rotation.
#[derive(Debug)]
pub struct IdentitySource {
    current: ArcSwapOption<Loaded>,
    provider: Arc<CryptoProvider>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl IdentitySource {
    /// An empty source: handshakes fail until a certificate is loaded.
    pub fn new() -> Arc<IdentitySource> {
        Arc::new(IdentitySource {
            current: ArcSwapOption::empty(),
            provider: provider(),
        })
    }

    /// Loads a certificate (and its trust bundle), replacing the current one.
    pub fn update(&self, cert: &WorkloadCert) -> Result<SpiffeId, TlsError> {
        let chain = cert
            .chain
            .iter()
            .map(|p| {
                CertificateDer::from_pem_slice(p.as_bytes())
                    .map_err(|e| TlsError::Pem(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let roots = cert
            .roots
            .iter()
            .map(|p| {
                CertificateDer::from_pem_slice(p.as_bytes())
                    .map_err(|e| TlsError::Pem(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::Pem("empty certificate chain".into()))?;
        let id = crate::svid::spiffe_id_of(leaf)?;
        let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes())
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        let certified = CertifiedKey::from_der(chain, key, &self.provider)?;
        self.current.store(Some(Arc::new(Loaded {
            certified: Arc::new(certified),
            roots,
            id: id.clone(),
        })));
        Ok(id)
    }

    /// The current identity, if loaded.
    pub fn id(&self) -> Option<SpiffeId> {
        self.current.load().as_ref().map(|l| l.id.clone())
    }

    /// Follows the agent's channel: every new certificate is loaded as it arrives. The task
    /// ends when the channel closes.
    pub fn follow(
        self: &Arc<Self>,
        mut certs: watch::Receiver<Option<Arc<WorkloadCert>>>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let current = certs.borrow_and_update().clone();
                if let Some(cert) = current
                    && let Err(e) = me.update(&cert)
                {
                    tracing::warn!("rotated certificate not loaded, keeping the previous: {e}");
                }
                if certs.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    fn certified(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|l| l.certified.clone())
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .load()
            .as_ref()
            .map(|l| l.roots.clone())
            .unwrap_or_default()
    }
}

/// Which peers are accepted (after the SPIFFE checks).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerPolicy {
    /// Any SVID of this trust domain.
    TrustDomain(TrustDomain),
    /// Any SVID of one of these trust domains.
    TrustDomains(BTreeSet<TrustDomain>),
    /// Exactly these identities.
    Ids(BTreeSet<SpiffeId>),
}

impl PeerPolicy {
    fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            PeerPolicy::TrustDomain(td) => id.trust_domain() == td,
            PeerPolicy::TrustDomains(tds) => tds.contains(id.trust_domain()),
            PeerPolicy::Ids(ids) => ids.contains(id),
        }
    }
}

#[derive(Debug)]
struct Verifier {
    source: Arc<IdentitySource>,
    policy: PeerPolicy,
}

impl Verifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        client_auth: bool,
    ) -> Result<(), rustls::Error> {
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        let id = crate::svid::verify(&chain, &self.source.roots(), now, client_auth, None)
            .map_err(|e| rustls::Error::General(format!("peer SVID: {e}")))?;
        if !self.policy.allows(&id) {
            return Err(rustls::Error::General(format!("peer {id} is not allowed")));
        }
        Ok(())
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_signature(&self.source.provider, message, cert, dss)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.source.provider, message, cert, dss)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        signature_schemes(&self.source.provider)
    }
}

/// A TLS 1.2 handshake signature checked with the provider's algorithms.
pub(crate) fn tls12_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// A TLS 1.3 handshake signature checked with the provider's algorithms.
pub(crate) fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// The signature schemes the provider verifies.
pub(crate) fn signature_schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// The signature checks both verifier traits share.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.tls12(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.tls13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.schemes()
        }
    };
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, false)?;
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!();
}

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, true)?;
        Ok(ClientCertVerified::assertion())
    }

    signature_checks!();
}

#[derive(Debug)]
struct Resolver(Arc<IdentitySource>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified()
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.certified()
    }

    fn has_certs(&self) -> bool {
        self.0.certified().is_some()
    }
}

/// A server config presenting the source's current certificate and requiring client SVIDs
/// that `policy` allows.
pub fn server_config(
    source: &Arc<IdentitySource>,
    policy: PeerPolicy,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = Arc::new(Verifier {
        source: source.clone(),
        policy,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(source.provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Resolver(source.clone())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client config presenting the source's current certificate and accepting servers whose
/// SVID `policy` allows (the server name is not checked: SPIFFE identities replace it).
pub fn client_config(
    source: &Arc<IdentitySource>,
    policy: PeerPolicy,
) -> Result<rustls::ClientConfig, TlsError> {
    let verifier = Arc::new(Verifier {
        source: source.clone(),
        policy,
    });
    Ok(
        rustls::ClientConfig::builder_with_provider(source.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(Resolver(source.clone()))),
    )
}

/// The verified SPIFFE ID of a connection's peer.
pub fn peer_id(conn: &rustls::CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    crate::svid::spiffe_id_of(leaf).ok()
}
