//! What a terminated TLS connection tells the layers above it: the peer's certificate
//! (Envoy's `Ssl::ConnectionInfo`), this side's URI SANs, the negotiated ALPN.
//!
//! [`PeerCertificate::principal`] is Envoy's *authenticated principal* (`source.principal` in
//! Istio's authorization): the first URI SAN, else the first DNS SAN, else the subject.

use rustls_pki_types::CertificateDer;

use crate::config::tls::SanType;

/// The certificate a peer presented (and that verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// URI SANs (SPIFFE IDs), in order.
    pub uri_sans: Vec<String>,
    /// DNS SANs, in order.
    pub dns_sans: Vec<String>,
    /// The subject in RFC 2253 form (`CN=a,O=b`), empty when the certificate has none.
    pub subject: String,
    /// Lower-case hex SHA-256 of the DER certificate (XFCC's `Hash=`).
    pub sha256: String,
}

impl PeerCertificate {
    /// Reads a peer's leaf certificate.
    pub fn of(der: &CertificateDer<'_>) -> PeerCertificate {
        let sans = super::material::sans_of(der);
        let pick = |k: SanType| -> Vec<String> {
            sans.iter()
                .filter(|(t, _)| *t == k)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        PeerCertificate {
            uri_sans: pick(SanType::Uri),
            dns_sans: pick(SanType::Dns),
            subject: x509_parser::parse_x509_certificate(der.as_ref())
                .map(|(_, c)| rfc2253(c.subject()))
                .unwrap_or_default(),
            sha256: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Envoy's authenticated principal: the first URI SAN, else the first DNS SAN, else the
    /// subject (`None` when all are empty).
    pub fn principal(&self) -> Option<&str> {
        self.uri_sans
            .first()
            .or(self.dns_sans.first())
            .map(String::as_str)
            .or((!self.subject.is_empty()).then_some(self.subject.as_str()))
    }
}

/// A terminated TLS connection, as the HTTP layer sees it (in each request's extensions and
/// the connection's metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The peer's verified certificate, if it sent one.
    pub peer: Option<PeerCertificate>,
    /// This side's certificate's URI SANs (XFCC's `By=`).
    pub local_uri_sans: Vec<String>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// The SNI the client sent.
    pub sni: Option<String>,
}

impl TlsInfo {
    /// The peer's authenticated principal (see [`PeerCertificate::principal`]).
    pub fn authenticated_principal(&self) -> Option<&str> {
        self.peer.as_ref().and_then(PeerCertificate::principal)
    }
}

/// An X.500 name in RFC 2253 form, as BoringSSL's `X509_NAME_print_ex(XN_FLAG_RFC2253)`
/// writes it: the last RDN first, `,` between RDNs, `+` inside one, special characters
/// escaped.
pub(crate) fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type();
                    let key = match oid.to_id_string().as_str() {
                        "2.5.4.3" => "CN".to_string(),
                        "2.5.4.6" => "C".to_string(),
                        "2.5.4.7" => "L".to_string(),
                        "2.5.4.8" => "ST".to_string(),
                        "2.5.4.10" => "O".to_string(),
                        "2.5.4.11" => "OU".to_string(),
                        "2.5.4.9" => "street".to_string(),
                        "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                        "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                        "1.2.840.113549.1.9.1" => "emailAddress".to_string(),
                        other => x509_parser::objects::oid2sn(oid, registry)
                            .map(str::to_string)
                            .unwrap_or_else(|_| other.to_string()),
                    };
                    let value = match atv.as_str() {
                        Ok(s) => escape(s),
                        Err(_) => format!(
                            "#{}",
                            atv.attr_value()
                                .as_bytes()
                                .iter()
                                .map(|b| format!("{b:02X}"))
                                .collect::<String>()
                        ),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let n = s.chars().count();
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
