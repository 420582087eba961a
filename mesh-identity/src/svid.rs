//! X.509-SVID verification per the SPIFFE X509-SVID specification: ordinary chain validation to
//! a trust bundle (webpki), then the SPIFFE rules on the leaf: exactly one URI SAN, which is a
//! SPIFFE ID in the expected trust domain; not a CA; no `keyCertSign` or `cRLSign`.

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Why a certificate chain is not a valid X.509-SVID.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// No certificate was presented.
    #[error("empty certificate chain")]
    Empty,
    /// The leaf is not a parseable X.509 certificate.
    #[error("leaf certificate does not parse: {0}")]
    Parse(String),
    /// The leaf has no URI SAN.
    #[error("leaf has no URI SAN")]
    NoUriSan,
    /// The leaf has more than one URI SAN.
    #[error("leaf has {0} URI SANs; an X.509-SVID has exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("URI SAN {uri:?} is not a SPIFFE ID: {source}")]
    NotSpiffe {
        /// The SAN.
        uri: String,
        /// Why.
        #[source]
        source: SpiffeIdError,
    },
    /// The leaf is a CA certificate.
    #[error("leaf is a CA certificate")]
    LeafIsCa,
    /// The leaf may sign certificates or CRLs.
    #[error("leaf has the keyCertSign or cRLSign key usage")]
    LeafCanSign,
    /// Chain validation failed (unknown issuer, expired, bad signature, wrong usage, ...).
    #[error("certificate chain does not verify: {0}")]
    Chain(String),
    /// The SPIFFE ID is in another trust domain.
    #[error("SPIFFE ID {id} is not in trust domain {expected}")]
    WrongTrustDomain {
        /// The peer's ID.
        id: SpiffeId,
        /// The trust domain expected.
        expected: TrustDomain,
    },
}

/// The SPIFFE ID of a leaf certificate, checking the SPIFFE rules on the leaf only (not the
/// chain).
pub fn spiffe_id_of(leaf: &CertificateDer<'_>) -> Result<SpiffeId, SvidError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf)
        .map_err(|e| SvidError::Parse(e.to_string()))?;
    let (mut uris, mut is_ca, mut can_sign) = (Vec::new(), false, false);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                uris.extend(san.general_names.iter().filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                }));
            }
            ParsedExtension::BasicConstraints(bc) => is_ca |= bc.ca,
            ParsedExtension::KeyUsage(ku) => can_sign |= ku.key_cert_sign() || ku.crl_sign(),
            _ => {}
        }
    }
    // In a fixed order, whatever the order of the extensions.
    if is_ca {
        return Err(SvidError::LeafIsCa);
    }
    if can_sign {
        return Err(SvidError::LeafCanSign);
    }
    match uris.as_slice() {
        [] => Err(SvidError::NoUriSan),
        [uri] => uri.parse().map_err(|source| SvidError::NotSpiffe {
            uri: uri.clone(),
            source,
        }),
        more => Err(SvidError::MultipleUriSans(more.len())),
    }
}

/// Verifies an X.509-SVID chain (leaf first, then intermediates) against trusted roots at time
/// `now`, for client or server authentication, and returns the leaf's SPIFFE ID. With
/// `trust_domain`, the ID must be in it.
pub fn verify(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    now: UnixTime,
    client_auth: bool,
    trust_domain: Option<&TrustDomain>,
) -> Result<SpiffeId, SvidError> {
    let (leaf, intermediates) = chain.split_first().ok_or(SvidError::Empty)?;
    let id = spiffe_id_of(leaf)?;
    let anchors = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SvidError::Chain(format!("bad trust anchor: {e}")))?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| SvidError::Chain(e.to_string()))?;
    let usage = if client_auth {
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
    .map_err(|e| SvidError::Chain(format!("{e:?}")))?;
    if let Some(td) = trust_domain
        && id.trust_domain() != td
    {
        return Err(SvidError::WrongTrustDomain {
            id,
            expected: td.clone(),
        });
    }
    Ok(id)
}
