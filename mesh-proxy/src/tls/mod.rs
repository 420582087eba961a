//! TLS for listeners and clusters: rustls contexts built from Envoy's TLS contexts, with
//! certificates and trust anchors from files, inline bytes or SDS secrets.
//!
//! - [`context`]: a filter chain's [`ServerTls`] and a cluster transport's [`ClientTls`]. The
//!   certificate and the trust anchors are read at each handshake, so a secret rotated over
//!   SDS applies to new connections at once, without a listener or cluster rebuild.
//! - [`verify`]: Envoy's verification rules (trust anchors, then SAN matchers only).
//! - [`stats`]: Envoy's `ssl.*` stats, and how a failed handshake is classified.
//! - [`peer`]: what a terminated connection tells the HTTP layer: the peer's certificate, its
//!   authenticated principal (SPIFFE ID), this side's URI SANs for XFCC.
//! - [`material`]: certificates, keys and trust anchors parsed once.
//!
//! Not implemented (rejected where configured, or noted): CRLs are parsed but not checked;
//! only the first of several `tls_certificates` is presented; TLS 1.0/1.1; OCSP stapling;
//! session ticket keys.

pub mod context;
pub mod material;
pub mod peer;
pub mod stats;
pub(crate) mod verify;

pub use context::{ClientTls, ContextCerts, ServerTls};
pub use material::{CertInfo, CertMaterial, ValidationMaterial, read};
pub use peer::{PeerCertificate, TlsInfo};
pub use stats::{HandshakeFailure, SslStats};

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
    /// rustls refused the configuration (a key that does not match its certificate, no
    /// cipher suite for the versions allowed, ...).
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// An SDS secret cannot be subscribed to.
    #[error("{0}")]
    Sds(String),
}

#[cfg(test)]
mod tests;
