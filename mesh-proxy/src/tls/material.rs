//! TLS material parsed once, when a context is built or a secret arrives: the certificate
//! with its signing key, and the trust anchors with the SAN rules. Handshakes only read it.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;
use crate::config::tls::{CertificateSource, DataSource, SanMatcher, SanType, Validation};

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

/// How `/certs` names where a certificate came from (Envoy: the file, else `<inline>`).
fn path_of(ds: &DataSource) -> String {
    match ds {
        DataSource::File(p) => p.display().to_string(),
        DataSource::Inline(_) | DataSource::Env(_) => "<inline>".into(),
    }
}

pub(crate) fn certs(ds: &DataSource, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(ds)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{what}: no certificate in PEM")));
    }
    Ok(certs)
}

fn key(ds: &DataSource) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(ds)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem(format!("private_key: {e}")))
}

/// What `/certs` shows of one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The file it was read from, or `<inline>`.
    pub path: String,
    /// Serial number, lower-case hex without leading zero bytes (as Envoy prints it).
    pub serial: String,
    /// Subject alternative names (DNS, URI, IP).
    pub sans: Vec<(SanType, String)>,
    /// `notBefore`, seconds since the epoch.
    pub not_before: i64,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
}

impl CertInfo {
    fn of(der: &CertificateDer<'_>, path: String) -> Option<CertInfo> {
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let raw = c.raw_serial();
        let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
        let mut serial: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
        if serial.is_empty() {
            serial.push('0');
        }
        Some(CertInfo {
            path,
            serial,
            sans: sans_of(der),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
        })
    }
}

/// The DNS, URI and IP SANs of a certificate, in order.
pub(crate) fn sans_of(der: &CertificateDer<'_>) -> Vec<(SanType, String)> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, c)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|gn| match gn {
            GeneralName::DNSName(d) => Some((SanType::Dns, d.to_string())),
            GeneralName::URI(u) => Some((SanType::Uri, u.to_string())),
            GeneralName::RFC822Name(e) => Some((SanType::Email, e.to_string())),
            GeneralName::IPAddress(b) => ip_string(b).map(|ip| (SanType::Ip, ip)),
            _ => None,
        })
        .collect()
}

pub(crate) fn ip_string(b: &[u8]) -> Option<String> {
    let ip = match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }?;
    Some(ip.to_string())
}

/// A certificate chain with its key, ready to present.
#[derive(Debug)]
pub struct CertMaterial {
    /// What rustls presents.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's URI SANs (XFCC's `By=`).
    pub uri_sans: Vec<String>,
    /// The leaf, for `/certs`.
    pub leaf: Option<CertInfo>,
}

impl CertMaterial {
    /// Loads a chain and its key (the key must match the leaf).
    pub fn load(
        c: &CertificateSource,
        provider: &CryptoProvider,
    ) -> Result<CertMaterial, TlsError> {
        let chain = certs(&c.chain, "certificate_chain")?;
        let key = key(&c.key)?;
        let certified = CertifiedKey::from_der(chain, key, provider)?;
        let leaf = certified.cert.first();
        let uri_sans = leaf
            .map(|l| {
                sans_of(l)
                    .into_iter()
                    .filter(|(k, _)| *k == SanType::Uri)
                    .map(|(_, v)| v)
                    .collect()
            })
            .unwrap_or_default();
        let leaf = leaf.and_then(|l| CertInfo::of(l, path_of(&c.chain)));
        Ok(CertMaterial {
            certified: Arc::new(certified),
            uri_sans,
            leaf,
        })
    }
}

/// A validation context, ready to verify with.
#[derive(Debug)]
pub struct ValidationMaterial {
    /// Trust anchors (`trusted_ca`), if given.
    pub roots: Option<Vec<CertificateDer<'static>>>,
    pub(crate) anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    /// SAN matchers.
    pub sans: Vec<SanMatcher>,
    /// `trust_chain_verification: ACCEPT_UNTRUSTED`.
    pub accept_untrusted: bool,
    /// The first trust anchor, for `/certs` (Envoy shows that one).
    pub ca: Option<CertInfo>,
}

impl ValidationMaterial {
    /// Loads a validation context's trust anchors.
    pub fn load(v: &Validation) -> Result<ValidationMaterial, TlsError> {
        let roots = v
            .trusted_ca
            .as_ref()
            .map(|ds| certs(ds, "trusted_ca"))
            .transpose()?;
        let anchors = roots
            .iter()
            .flatten()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(format!("trusted_ca: bad trust anchor: {e}")))?;
        let ca = match (&roots, &v.trusted_ca) {
            (Some(r), Some(ds)) => r.first().and_then(|c| CertInfo::of(c, path_of(ds))),
            _ => None,
        };
        Ok(ValidationMaterial {
            roots,
            anchors,
            sans: v.sans.clone(),
            accept_untrusted: v.accept_untrusted,
            ca,
        })
    }
}
