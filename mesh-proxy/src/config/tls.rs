//! Transport sockets: downstream and upstream TLS (`DownstreamTlsContext`,
//! `UpstreamTlsContext`) with certificates from files or inline bytes.
//!
//! SDS secrets (`tls_certificate_sds_secret_configs`) are the seam for the security issue: the
//! types name them, the converter rejects them until the SDS subscription exists.

use std::path::PathBuf;

use bytes::Bytes;

use super::matcher::StringMatcher;

/// Envoy's `DataSource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Read from a file (at start and on every update of the resource).
    File(PathBuf),
    /// Inline bytes (or an inline string).
    Inline(Bytes),
    /// An environment variable.
    Env(String),
}

/// A certificate chain with its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSource {
    /// PEM certificate chain, leaf first.
    pub chain: DataSource,
    /// PEM private key.
    pub key: DataSource,
}

/// Where a certificate or a validation context comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource<T> {
    /// Given in the resource.
    Static(T),
    /// Fetched over SDS by name (the security issue's seam).
    Sds(String),
}

/// A SAN a peer certificate must carry (`match_typed_subject_alt_names`; any one matches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SanMatcher {
    /// The SAN kind.
    pub kind: SanType,
    /// The matcher for its value.
    pub matcher: StringMatcher,
}

/// Subject alternative name kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanType {
    /// `DNS`.
    Dns,
    /// `URI` (SPIFFE IDs).
    Uri,
    /// `IP_ADDRESS`.
    Ip,
    /// `EMAIL`.
    Email,
}

/// How peer certificates are verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// PEM trust anchors.
    pub trusted_ca: Option<DataSource>,
    /// Names the peer must carry; empty = any.
    pub sans: Vec<SanMatcher>,
    /// PEM CRL.
    pub crl: Option<DataSource>,
    /// Accept any certificate (`trust_chain_verification: ACCEPT_UNTRUSTED`).
    pub accept_untrusted: bool,
}

/// TLS protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// What both sides of TLS share (`CommonTlsContext`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonTls {
    /// Certificates to present (the first whose key type fits is used).
    pub certificates: Vec<SecretSource<CertificateSource>>,
    /// Peer validation; `None` = none.
    pub validation: Option<SecretSource<Validation>>,
    /// ALPN protocols offered (client) or accepted (server), in preference order.
    pub alpn: Vec<String>,
    /// Lowest version.
    pub min_version: TlsVersion,
    /// Highest version.
    pub max_version: TlsVersion,
}

/// Downstream TLS (a listener's filter chain terminates TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownstreamTls {
    /// Certificates, validation and ALPN.
    pub common: CommonTls,
    /// Clients must present a certificate.
    pub require_client_certificate: bool,
}

/// Upstream TLS (a cluster originates TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Certificates, validation and ALPN.
    pub common: CommonTls,
    /// SNI to send; empty = none.
    pub sni: String,
    /// Use the request's host as SNI (`auto_sni` on the HTTP protocol options).
    pub auto_sni: bool,
    /// Check the server's certificate against the SNI sent (`auto_san_validation`).
    pub auto_san_validation: bool,
}

/// A connection's transport socket.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum UpstreamTransport {
    /// Plain TCP (`raw_buffer`).
    #[default]
    Plain,
    /// TLS.
    Tls(Box<UpstreamTls>),
}

/// A downstream transport socket.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DownstreamTransport {
    /// Plain TCP (`raw_buffer`).
    #[default]
    Plain,
    /// TLS.
    Tls(Box<DownstreamTls>),
}
