//! Transport sockets: downstream and upstream TLS (`DownstreamTlsContext`,
//! `UpstreamTlsContext`) with certificates and validation contexts from files, inline bytes,
//! or SDS secrets ([`SdsSecret`]: over a gRPC stream of their own to a static cluster, or over
//! the ADS stream).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::bootstrap::AdsApi;
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

/// Where a certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource<T> {
    /// Given in the resource.
    Static(T),
    /// Fetched over SDS by name.
    Sds(SdsSecret),
}

/// A secret named in an SDS subscription (`SdsSecretConfig`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SdsSecret {
    /// The secret's name (`default`, `ROOTCA`, `kubernetes://cert`).
    pub name: String,
    /// Where it comes from.
    pub config: SdsConfig,
}

/// `SdsSecretConfig.sds_config`: the config source of a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SdsConfig {
    /// The stream that carries it.
    pub source: SdsSource,
    /// `initial_fetch_timeout` (15 s; `None` = `0s`: the listener or cluster waits for the
    /// secret for as long as it takes, as Envoy does).
    pub initial_fetch_timeout: Option<Duration>,
}

/// The stream a secret comes over.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SdsSource {
    /// `ads: {}`: the ADS stream (type `envoy.extensions.transport_sockets.tls.v3.Secret`).
    Ads,
    /// `api_config_source` with one Envoy gRPC service: `SecretDiscoveryService` over HTTP/2
    /// to a static cluster (Istio's `sds-grpc`, a Unix socket of the node agent).
    Grpc {
        /// The static cluster.
        cluster: String,
        /// `GRPC` (state of the world) is what is implemented.
        api: AdsApi,
        /// Send `node` only on a stream's first request.
        set_node_on_first_message_only: bool,
    },
}

/// The kind of secret a TLS context asks for: a reference is resolved into that kind only
/// (Envoy keeps certificate and validation context providers apart too, so a name used both
/// ways is two subscriptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretKind {
    /// `tls_certificate`.
    Certificate,
    /// `validation_context`.
    Validation,
}

/// The content of an SDS `Secret`, converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretValue {
    /// `tls_certificate`.
    Certificate(CertificateSource),
    /// `validation_context`.
    Validation(Validation),
}

impl SecretValue {
    /// Its kind.
    pub fn kind(&self) -> SecretKind {
        match self {
            SecretValue::Certificate(_) => SecretKind::Certificate,
            SecretValue::Validation(_) => SecretKind::Validation,
        }
    }
}

/// Where a validation context comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidationSource {
    /// `validation_context`.
    Static(Validation),
    /// `validation_context_sds_secret_config`.
    Sds(SdsSecret),
    /// `combined_validation_context`: the secret's context merged over the default one (the
    /// secret brings `trusted_ca`, the default the SAN matchers; Envoy merges them as
    /// protobuf's `MergeFrom` does: set fields of the secret win, lists add up).
    Combined {
        /// `default_validation_context`.
        default: Validation,
        /// `validation_context_sds_secret_config`.
        sds: SdsSecret,
    },
}

impl ValidationSource {
    /// The SDS secret it needs, if any.
    pub fn sds(&self) -> Option<&SdsSecret> {
        match self {
            ValidationSource::Static(_) => None,
            ValidationSource::Sds(s) | ValidationSource::Combined { sds: s, .. } => Some(s),
        }
    }
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

/// TLS 1.2 cipher suites this proxy can negotiate (`tls_params.cipher_suites`, by their
/// OpenSSL names). TLS 1.3 suites are not configurable, as in BoringSSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tls12Cipher {
    /// `ECDHE-ECDSA-AES128-GCM-SHA256`.
    EcdheEcdsaAes128Gcm,
    /// `ECDHE-ECDSA-AES256-GCM-SHA384`.
    EcdheEcdsaAes256Gcm,
    /// `ECDHE-ECDSA-CHACHA20-POLY1305`.
    EcdheEcdsaChacha20,
    /// `ECDHE-RSA-AES128-GCM-SHA256`.
    EcdheRsaAes128Gcm,
    /// `ECDHE-RSA-AES256-GCM-SHA384`.
    EcdheRsaAes256Gcm,
    /// `ECDHE-RSA-CHACHA20-POLY1305`.
    EcdheRsaChacha20,
}

/// Key-exchange groups (`tls_params.ecdh_curves`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EcdhCurve {
    /// `X25519`.
    X25519,
    /// `P-256`.
    P256,
    /// `P-384`.
    P384,
}

/// What both sides of TLS share (`CommonTlsContext`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonTls {
    /// Certificates to present (the first is used).
    pub certificates: Vec<SecretSource<CertificateSource>>,
    /// Peer validation; `None` = none.
    pub validation: Option<ValidationSource>,
    /// ALPN protocols offered (client) or accepted (server), in preference order.
    pub alpn: Vec<String>,
    /// Lowest version.
    pub min_version: TlsVersion,
    /// Highest version.
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites in preference order; `None` = the defaults.
    pub cipher_suites: Option<Vec<Tls12Cipher>>,
    /// Key-exchange groups in preference order; `None` = the defaults.
    pub ecdh_curves: Option<Vec<EcdhCurve>>,
}

impl CommonTls {
    /// The SDS secrets this context needs, with the kind each is used as.
    pub fn sds_secrets(&self) -> Vec<(SecretKind, &SdsSecret)> {
        let mut v: Vec<(SecretKind, &SdsSecret)> = self
            .certificates
            .iter()
            .filter_map(|c| match c {
                SecretSource::Sds(s) => Some((SecretKind::Certificate, s)),
                SecretSource::Static(_) => None,
            })
            .collect();
        if let Some(s) = self.validation.as_ref().and_then(ValidationSource::sds) {
            v.push((SecretKind::Validation, s));
        }
        v
    }
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

impl UpstreamTransport {
    /// The SDS secrets it needs.
    pub fn sds_secrets(&self) -> Vec<(SecretKind, &SdsSecret)> {
        match self {
            UpstreamTransport::Plain => Vec::new(),
            UpstreamTransport::Tls(t) => t.common.sds_secrets(),
        }
    }
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

impl DownstreamTransport {
    /// The SDS secrets it needs.
    pub fn sds_secrets(&self) -> Vec<(SecretKind, &SdsSecret)> {
        match self {
            DownstreamTransport::Plain => Vec::new(),
            DownstreamTransport::Tls(t) => t.common.sds_secrets(),
        }
    }
}
