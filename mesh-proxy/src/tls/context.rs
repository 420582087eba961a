//! TLS contexts: a filter chain's [`ServerTls`] and a cluster transport's [`ClientTls`].
//!
//! A context is built once, when its chain or cluster is. Its certificate resolver and peer
//! verifier read the current material at every handshake, so a secret rotated over SDS is
//! used by the next connection with no listener or cluster rebuild (Envoy swaps its SSL
//! contexts in place the same way); connections already open keep the certificate they
//! negotiated.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme, SupportedCipherSuite};

use super::TlsError;
use super::material::{CertInfo, CertMaterial, ValidationMaterial};
use super::stats::SslStats;
use super::verify::{ClientVerifier, ServerVerifier, Validator};
use crate::config::tls::{
    CommonTls, DownstreamTls, EcdhCurve, SecretKind, SecretSource, Tls12Cipher, TlsVersion,
    UpstreamTls, ValidationSource,
};
use crate::secret::{SecretEntry, SecretManager};

/// A context's crypto: the ring provider, its suites in BoringSSL's order of preference
/// (AES-128 first, as Envoy negotiates them, so `ssl.ciphers.*` read the same), narrowed to
/// `tls_params`' cipher suites and curves.
fn provider(common: &CommonTls) -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite as cs, kx_group};
    let mut p = rustls::crypto::ring::default_provider();
    let tls13 = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    // Envoy's default TLS 1.2 list.
    let default12 = [
        Tls12Cipher::EcdheEcdsaAes128Gcm,
        Tls12Cipher::EcdheEcdsaChacha20,
        Tls12Cipher::EcdheRsaAes128Gcm,
        Tls12Cipher::EcdheRsaChacha20,
        Tls12Cipher::EcdheEcdsaAes256Gcm,
        Tls12Cipher::EcdheRsaAes256Gcm,
    ];
    {
        let list = common.cipher_suites.as_deref().unwrap_or(&default12);
        let mut suites: Vec<SupportedCipherSuite> = tls13.to_vec();
        suites.extend(list.iter().map(|c| match c {
            Tls12Cipher::EcdheEcdsaAes128Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            Tls12Cipher::EcdheEcdsaAes256Gcm => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            Tls12Cipher::EcdheEcdsaChacha20 => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            Tls12Cipher::EcdheRsaAes128Gcm => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            Tls12Cipher::EcdheRsaAes256Gcm => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            Tls12Cipher::EcdheRsaChacha20 => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        }));
        p.cipher_suites = suites;
    }
    if let Some(curves) = &common.ecdh_curves {
        p.kx_groups = curves
            .iter()
            .map(|c| match c {
                EcdhCurve::X25519 => kx_group::X25519,
                EcdhCurve::P256 => kx_group::SECP256R1,
                EcdhCurve::P384 => kx_group::SECP384R1,
            })
            .collect();
    }
    Arc::new(p)
}

fn versions(common: &CommonTls) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if common.min_version <= TlsVersion::V1_3 && common.max_version >= TlsVersion::V1_3 {
        v.push(&rustls::version::TLS13);
    }
    if common.min_version <= TlsVersion::V1_2 && common.max_version >= TlsVersion::V1_2 {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// Where a context's certificate comes from.
#[derive(Clone, Debug)]
enum CertSource {
    None,
    Static(Arc<CertMaterial>),
    Sds(Arc<SecretEntry>),
}

impl CertSource {
    fn current(&self) -> Option<Arc<CertMaterial>> {
        match self {
            CertSource::None => None,
            CertSource::Static(m) => Some(m.clone()),
            CertSource::Sds(e) => e.certificate(),
        }
    }
}

/// The parts of a `CommonTlsContext` a context keeps.
#[derive(Debug)]
struct Common {
    cert: CertSource,
    validator: Option<Validator>,
    provider: Arc<CryptoProvider>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// Every SDS secret the context uses (readiness, `/certs`).
    secrets: Vec<Arc<SecretEntry>>,
}

impl Common {
    fn new(c: &CommonTls, secrets: &SecretManager) -> Result<Common, TlsError> {
        let provider = provider(c);
        let mut used = Vec::new();
        let mut acquire = |kind, s| {
            let e = secrets.acquire(kind, s).map_err(TlsError::Sds)?;
            used.push(e.clone());
            Ok::<_, TlsError>(e)
        };
        let cert = match c.certificates.first() {
            None => CertSource::None,
            Some(SecretSource::Static(s)) => {
                CertSource::Static(Arc::new(CertMaterial::load(s, &provider)?))
            }
            Some(SecretSource::Sds(s)) => CertSource::Sds(acquire(SecretKind::Certificate, s)?),
        };
        let validator = match &c.validation {
            None => None,
            Some(ValidationSource::Static(v)) => Some(Validator {
                default: Some(Arc::new(ValidationMaterial::load(v)?)),
                sds: None,
            }),
            Some(ValidationSource::Sds(s)) => Some(Validator {
                default: None,
                sds: Some(acquire(SecretKind::Validation, s)?),
            }),
            Some(ValidationSource::Combined { default, sds }) => Some(Validator {
                default: Some(Arc::new(ValidationMaterial::load(default)?)),
                sds: Some(acquire(SecretKind::Validation, sds)?),
            }),
        };
        Ok(Common {
            cert,
            validator,
            versions: versions(c),
            provider,
            secrets: used,
        })
    }

    fn certs(&self) -> ContextCerts {
        let ca = self.validator.as_ref().and_then(|v| {
            v.sds
                .as_ref()
                .and_then(|e| e.validation())
                .and_then(|m| m.ca.clone())
                .or_else(|| v.default.as_ref().and_then(|m| m.ca.clone()))
        });
        ContextCerts {
            ca: ca.into_iter().collect(),
            chain: self
                .cert
                .current()
                .and_then(|m| m.leaf.clone())
                .into_iter()
                .collect(),
        }
    }
}

/// What `/certs` shows of a context.
#[derive(Clone, Debug, Default)]
pub struct ContextCerts {
    /// The trust anchor (`ca_cert`).
    pub ca: Vec<CertInfo>,
    /// The leaf of the certificate presented (`cert_chain`).
    pub chain: Vec<CertInfo>,
}

/// Presents the current certificate (`None` aborts the handshake, as a context without its
/// secret cannot serve).
#[derive(Debug)]
struct Resolver(CertSource);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|m| m.certified.clone())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|m| m.certified.clone())
    }

    fn has_certs(&self) -> bool {
        !matches!(self.0, CertSource::None)
    }
}

/// A filter chain's downstream TLS.
#[derive(Debug)]
pub struct ServerTls {
    with_alpn: Arc<ServerConfig>,
    without_alpn: Arc<ServerConfig>,
    alpn: Vec<Vec<u8>>,
    common: Common,
    /// `listener.ADDR.ssl.*`.
    pub stats: SslStats,
}

impl ServerTls {
    /// Builds a chain's context: static material is loaded now (an error rejects the
    /// listener), SDS secrets are subscribed.
    pub fn new(
        t: &DownstreamTls,
        secrets: &SecretManager,
        stats: SslStats,
    ) -> Result<ServerTls, TlsError> {
        let common = Common::new(&t.common, secrets)?;
        if matches!(common.cert, CertSource::None) {
            return Err(TlsError::Pem(
                "a downstream TLS context needs a certificate".into(),
            ));
        }
        let b = ServerConfig::builder_with_provider(common.provider.clone())
            .with_protocol_versions(&common.versions)?;
        let b = match &common.validator {
            Some(v) => b.with_client_cert_verifier(Arc::new(ClientVerifier {
                validator: v.clone(),
                required: t.require_client_certificate,
                provider: common.provider.clone(),
            })),
            None => b.with_no_client_auth(),
        };
        let mut without_alpn = b.with_cert_resolver(Arc::new(Resolver(common.cert.clone())));
        // The server's order of cipher suites decides, as in Envoy (`prefer_client_ciphers`
        // is false by default).
        without_alpn.ignore_client_order = true;
        let alpn: Vec<Vec<u8>> = t
            .common
            .alpn
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let mut with_alpn = without_alpn.clone();
        with_alpn.alpn_protocols = alpn.clone();
        Ok(ServerTls {
            with_alpn: Arc::new(with_alpn),
            without_alpn: Arc::new(without_alpn),
            alpn,
            common,
            stats,
        })
    }

    /// The config for a ClientHello. BoringSSL (Envoy) goes on without ALPN when the client
    /// offers none of the server's protocols (Istio's clients offer `istio`, its servers
    /// `h2, http/1.1`); rustls would refuse, so such a client gets a config without ALPN.
    pub fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let overlap = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| self.alpn.iter().any(|a| a == p)));
        if overlap {
            self.with_alpn.clone()
        } else {
            self.without_alpn.clone()
        }
    }

    /// The URI SANs of the certificate presented now (XFCC's `By=`).
    pub fn local_uri_sans(&self) -> Vec<String> {
        self.common
            .cert
            .current()
            .map(|m| m.uri_sans.clone())
            .unwrap_or_default()
    }

    /// Whether every SDS secret it uses has arrived (or stopped being waited for).
    pub fn ready(&self) -> bool {
        self.common.secrets.iter().all(|s| s.is_ready())
    }

    /// What `/certs` shows of it.
    pub fn certs(&self) -> ContextCerts {
        self.common.certs()
    }
}

/// A cluster transport's upstream TLS.
#[derive(Debug)]
pub struct ClientTls {
    tls: UpstreamTls,
    common: Common,
    /// `cluster.NAME.ssl.*`.
    pub stats: SslStats,
}

impl ClientTls {
    /// Builds a transport's context: static material is loaded now (an error rejects the
    /// cluster), SDS secrets are subscribed.
    pub fn new(
        t: &UpstreamTls,
        secrets: &SecretManager,
        stats: SslStats,
    ) -> Result<ClientTls, TlsError> {
        let common = Common::new(&t.common, secrets)?;
        let tls = ClientTls {
            tls: t.clone(),
            common,
            stats,
        };
        tls.config(None, None)?;
        Ok(tls)
    }

    /// The upstream TLS settings.
    pub fn settings(&self) -> &UpstreamTls {
        &self.tls
    }

    /// A client config. `alpn` replaces the context's ALPN list when given (the upstream
    /// protocol decides it, as Envoy's HTTP pools do); `sni_for_san` is checked as a DNS SAN
    /// when `auto_san_validation` is on.
    pub fn config(
        &self,
        alpn: Option<&[&str]>,
        sni_for_san: Option<&str>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let c = &self.common;
        let verifier = Arc::new(ServerVerifier {
            validator: c.validator.clone(),
            auto_san: if self.tls.auto_san_validation {
                sni_for_san.map(str::to_string)
            } else {
                None
            },
            provider: c.provider.clone(),
        });
        let b = ClientConfig::builder_with_provider(c.provider.clone())
            .with_protocol_versions(&c.versions)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut cfg = match &c.cert {
            CertSource::None => b.with_no_client_auth(),
            source => b.with_client_cert_resolver(Arc::new(Resolver(source.clone()))),
        };
        cfg.alpn_protocols = match alpn {
            Some(a) => a.iter().map(|s| s.as_bytes().to_vec()).collect(),
            None => self
                .tls
                .common
                .alpn
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        };
        cfg.enable_sni = true;
        Ok(Arc::new(cfg))
    }

    /// Whether every SDS secret it uses has arrived (or stopped being waited for).
    pub fn ready(&self) -> bool {
        self.common.secrets.iter().all(|s| s.is_ready())
    }

    /// What `/certs` shows of it.
    pub fn certs(&self) -> ContextCerts {
        self.common.certs()
    }
}
