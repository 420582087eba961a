//! rustls configs from Envoy TLS contexts (certificates from files or inline).
//!
//! Envoy's verification rules, which differ from a browser's: with a validation context the
//! peer's chain must lead to `trusted_ca`, and then *only* the SAN matchers decide the name (no
//! hostname check unless `auto_san_validation` asks for the SNI); without a validation context
//! the peer is not verified at all.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::matcher::{StringMatcher, StringPattern};
use crate::config::tls::{
    CommonTls, DataSource, DownstreamTls, SanMatcher, SanType, SecretSource, TlsVersion,
    UpstreamTls, Validation,
};

/// Why a TLS context cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file or environment variable could not be read.
    #[error("{what}: {source}")]
    Read {
        /// What was read.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// PEM that does not parse, or holds nothing usable.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// SDS secrets are not served yet (the security issue's seam).
    #[error("SDS secret {0:?} is not supported yet")]
    Sds(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a data source.
pub fn read(ds: &DataSource) -> Result<Vec<u8>, TlsError> {
    match ds {
        DataSource::Inline(b) => Ok(b.to_vec()),
        DataSource::File(p) => std::fs::read(p).map_err(|e| TlsError::Read {
            what: p.display().to_string(),
            source: e,
        }),
        DataSource::Env(name) => {
            std::env::var(name)
                .map(String::into_bytes)
                .map_err(|e| TlsError::Read {
                    what: format!("${name}"),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, e),
                })
        }
    }
}

fn certs(ds: &DataSource) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(ds)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn key(ds: &DataSource) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(ds)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem(format!("private key: {e}")))
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

/// Trust anchors and SAN rules of a validation context.
#[derive(Debug, Clone)]
struct Verify {
    roots: Option<Vec<CertificateDer<'static>>>,
    sans: Vec<SanMatcher>,
    accept_untrusted: bool,
    provider: Arc<CryptoProvider>,
}

impl Verify {
    fn new(v: Option<&SecretSource<Validation>>) -> Result<Option<Verify>, TlsError> {
        let Some(v) = v else {
            return Ok(None);
        };
        let v = match v {
            SecretSource::Static(v) => v,
            SecretSource::Sds(name) => return Err(TlsError::Sds(name.clone())),
        };
        let roots = v.trusted_ca.as_ref().map(certs).transpose()?;
        Ok(Some(Verify {
            roots,
            sans: v.sans.clone(),
            accept_untrusted: v.accept_untrusted,
            provider: provider(),
        }))
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        client: bool,
        sni: Option<&str>,
    ) -> Result<(), rustls::Error> {
        // A certificate that is itself a trust anchor is trusted as it is (BoringSSL accepts
        // a self-signed server certificate listed in `trusted_ca`; webpki would refuse it as
        // a CA used as an end entity).
        let is_anchor = self
            .roots
            .as_ref()
            .is_some_and(|r| r.iter().any(|c| c.as_ref() == end_entity.as_ref()));
        if is_anchor && !within_validity(end_entity, now) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            ));
        }
        if !self.accept_untrusted
            && !is_anchor
            && let Some(roots) = &self.roots
        {
            let anchors = roots
                .iter()
                .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| rustls::Error::General(format!("bad trust anchor: {e}")))?;
            let ee = webpki::EndEntityCert::try_from(end_entity)
                .map_err(|e| rustls::Error::General(format!("bad certificate: {e}")))?;
            let usage = if client {
                webpki::KeyUsage::client_auth()
            } else {
                webpki::KeyUsage::server_auth()
            };
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                intermediates,
                now,
                usage,
                None,
                None,
            )
            .map_err(|e| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(WebpkiError(format!("{e:?}")))),
                ))
            })?;
        }
        let mut matchers = self.sans.clone();
        if let Some(sni) = sni {
            matchers.push(SanMatcher {
                kind: SanType::Dns,
                matcher: StringMatcher::exact(sni),
            });
        }
        if !matchers.is_empty() && !sans_match(end_entity, &matchers) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(())
    }
}

/// Whether `now` is within the certificate's validity period.
fn within_validity(cert: &CertificateDer<'_>, now: UnixTime) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let v = parsed.validity();
    v.not_before.timestamp() <= now && now <= v.not_after.timestamp()
}

#[derive(Debug)]
struct WebpkiError(String);

impl std::fmt::Display for WebpkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WebpkiError {}

/// Whether a certificate carries a SAN that one of `matchers` accepts.
fn sans_match(cert: &CertificateDer<'_>, matchers: &[SanMatcher]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|gn| {
        matchers.iter().any(|m| match (gn, m.kind) {
            (GeneralName::DNSName(d), SanType::Dns) => dns_san_matches(d, &m.matcher),
            (GeneralName::URI(u), SanType::Uri) => m.matcher.matches(u),
            (GeneralName::RFC822Name(e), SanType::Email) => m.matcher.matches(e),
            (GeneralName::IPAddress(b), SanType::Ip) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    _ => None,
                };
                ip.is_some_and(|ip| m.matcher.matches(&ip.to_string()))
            }
            _ => false,
        })
    })
}

/// DNS SANs: an exact matcher also accepts a wildcard certificate name (RFC 6125).
fn dns_san_matches(san: &str, m: &StringMatcher) -> bool {
    if m.matches(san) {
        return true;
    }
    if let (StringPattern::Exact(want), Some(suffix)) = (&m.pattern, san.strip_prefix("*."))
        && let Some((first, rest)) = want.split_once('.')
    {
        return !first.is_empty() && rest.eq_ignore_ascii_case(suffix);
    }
    false
}

#[derive(Debug)]
struct ServerVerifier {
    verify: Option<Verify>,
    auto_san: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(v) = &self.verify {
            v.check(
                end_entity,
                intermediates,
                now,
                false,
                self.auto_san.as_deref(),
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Debug)]
struct ClientVerifier {
    verify: Verify,
    required: bool,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify
            .check(end_entity, intermediates, now, true, None)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.verify.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.verify.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verify
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn certified(
    common: &CommonTls,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    match common.certificates.first() {
        None => Ok(None),
        Some(SecretSource::Sds(name)) => Err(TlsError::Sds(name.clone())),
        Some(SecretSource::Static(c)) => Ok(Some((certs(&c.chain)?, key(&c.key)?))),
    }
}

/// A client config for an upstream TLS context. `alpn` replaces the context's ALPN list when
/// given (the upstream protocol decides it, as Envoy's HTTP pools do).
pub fn client_config(
    t: &UpstreamTls,
    alpn: Option<&[&str]>,
    sni_for_san: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let p = provider();
    let verifier = Arc::new(ServerVerifier {
        verify: Verify::new(t.common.validation.as_ref())?,
        auto_san: if t.auto_san_validation {
            sni_for_san.map(str::to_string)
        } else {
            None
        },
        provider: p.clone(),
    });
    let b = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&versions(&t.common))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match certified(&t.common)? {
        Some((chain, key)) => b.with_client_auth_cert(chain, key)?,
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = match alpn {
        Some(a) => a.iter().map(|s| s.as_bytes().to_vec()).collect(),
        None => t
            .common
            .alpn
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
    };
    cfg.enable_sni = true;
    Ok(Arc::new(cfg))
}

/// A server config for a downstream TLS context.
pub fn server_config(t: &DownstreamTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let p = provider();
    let b = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&versions(&t.common))?;
    let b = match Verify::new(t.common.validation.as_ref())? {
        Some(v) => b.with_client_cert_verifier(Arc::new(ClientVerifier {
            verify: v,
            required: t.require_client_certificate,
        })),
        None => b.with_no_client_auth(),
    };
    let Some((chain, key)) = certified(&t.common)? else {
        return Err(TlsError::Pem(
            "a downstream TLS context needs a certificate".into(),
        ));
    };
    let mut cfg = b.with_single_cert(chain, key)?;
    cfg.alpn_protocols = t
        .common
        .alpn
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_dns_sans() {
        let m = StringMatcher::exact("a.example.com");
        assert!(dns_san_matches("*.example.com", &m));
        assert!(dns_san_matches("a.example.com", &m));
        assert!(!dns_san_matches("*.other.com", &m));
        assert!(!dns_san_matches("*.a.example.com", &m));
    }
}
