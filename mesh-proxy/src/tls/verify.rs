//! Peer verification with Envoy's rules, which differ from a browser's: with a validation
//! context the peer's chain must lead to `trusted_ca`, and then *only* the SAN matchers decide
//! the name (no hostname check unless `auto_san_validation` asks for the SNI); without a
//! validation context the peer is not verified at all.
//!
//! The material is read at every handshake, so a rotated `ROOTCA` applies to the next
//! connection without rebuilding anything.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::material::{ValidationMaterial, ip_string};
use crate::config::matcher::{StringMatcher, StringPattern};
use crate::config::tls::{SanMatcher, SanType};
use crate::secret::SecretEntry;

/// A context's peer validation: a static part, an SDS part, or both (`combined`).
#[derive(Debug, Clone)]
pub(crate) struct Validator {
    pub(crate) default: Option<Arc<ValidationMaterial>>,
    pub(crate) sds: Option<Arc<SecretEntry>>,
}

/// An error of our own in a rustls `CertificateError::Other`.
#[derive(Debug)]
struct VerifyError(String);

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyError {}

fn other(msg: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        VerifyError(msg),
    ))))
}

impl Validator {
    /// Verifies a peer: the chain against the trust anchors, then the SANs (plus `sni` as a
    /// DNS SAN when given).
    pub(crate) fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        client: bool,
        sni: Option<&str>,
    ) -> Result<(), rustls::Error> {
        let dynamic = match &self.sds {
            None => None,
            Some(e) => Some(e.validation().ok_or_else(|| {
                other(format!(
                    "validation context {:?} has not arrived over SDS",
                    e.name()
                ))
            })?),
        };
        // The secret's trust anchors replace the default's (MergeFrom of a set field); the
        // SAN matchers of both apply.
        let layers: Vec<&ValidationMaterial> = self
            .default
            .iter()
            .map(|d| &**d)
            .chain(dynamic.as_deref())
            .collect();
        let trust = layers.iter().rev().find(|l| l.roots.is_some());
        let accept_untrusted = layers.iter().any(|l| l.accept_untrusted);
        if let Some(trust) = trust {
            // A certificate that is itself a trust anchor is trusted as it is (BoringSSL
            // accepts a self-signed server certificate listed in `trusted_ca`; webpki would
            // refuse it as a CA used as an end entity).
            let is_anchor = trust
                .roots
                .as_ref()
                .is_some_and(|r| r.iter().any(|c| c.as_ref() == end_entity.as_ref()));
            if is_anchor && !within_validity(end_entity, now) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
            }
            if !accept_untrusted && !is_anchor {
                let ee = webpki::EndEntityCert::try_from(end_entity)
                    .map_err(|e| other(format!("bad certificate: {e}")))?;
                let usage = if client {
                    webpki::KeyUsage::client_auth()
                } else {
                    webpki::KeyUsage::server_auth()
                };
                ee.verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &trust.anchors,
                    intermediates,
                    now,
                    usage,
                    None,
                    None,
                )
                .map_err(|e| other(format!("{e:?}")))?;
            }
        }
        let mut matchers: Vec<&SanMatcher> = layers.iter().flat_map(|l| l.sans.iter()).collect();
        let sni_matcher = sni.map(|sni| SanMatcher {
            kind: SanType::Dns,
            matcher: StringMatcher::exact(sni),
        });
        matchers.extend(sni_matcher.as_ref());
        if !matchers.is_empty() && !sans_match(end_entity, &matchers) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
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

/// Whether a certificate carries a SAN that one of `matchers` accepts.
fn sans_match(cert: &CertificateDer<'_>, matchers: &[&SanMatcher]) -> bool {
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
                ip_string(b).is_some_and(|ip| m.matcher.matches(&ip))
            }
            _ => false,
        })
    })
}

/// DNS SANs: an exact matcher also accepts a wildcard certificate name (RFC 6125).
pub(crate) fn dns_san_matches(san: &str, m: &StringMatcher) -> bool {
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

/// Verifies servers (upstream TLS).
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub(crate) validator: Option<Validator>,
    pub(crate) auto_san: Option<String>,
    pub(crate) provider: Arc<CryptoProvider>,
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
        if let Some(v) = &self.validator {
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

/// Verifies clients (downstream mTLS).
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub(crate) validator: Validator,
    pub(crate) required: bool,
    pub(crate) provider: Arc<CryptoProvider>,
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
        self.validator
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
