//! A TLS context's stats, as Envoy names them under the listener's or cluster's scope
//! (`listener.127.0.0.1_8443.ssl.handshake`, `cluster.NAME.ssl.fail_verify_san`).
//!
//! Envoy counts a failed handshake once: `fail_verify_san`, `fail_verify_error` or
//! `fail_verify_no_cert` when certificate verification was the reason, `connection_error`
//! otherwise (BoringSSL's error queue, `SslSocket::drainErrorQueue`).

use std::sync::Arc;

use rustls::{CertificateError, CommonState, Error, HandshakeKind, ProtocolVersion};

use crate::stats::{Counter, Store};

/// Why a handshake failed, as the stats tell it apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer's certificate has no SAN the matchers accept (`ssl.fail_verify_san`).
    San,
    /// The peer's chain does not verify (`ssl.fail_verify_error`).
    Verify,
    /// A required client certificate was not sent (`ssl.fail_verify_no_cert`).
    NoCert,
    /// Anything else: garbage, alerts, versions, no shared cipher (`ssl.connection_error`).
    Connection,
}

impl HandshakeFailure {
    /// Classifies a handshake's IO error (tokio-rustls wraps rustls' error in it).
    pub fn of(e: &std::io::Error) -> HandshakeFailure {
        match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            Some(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => HandshakeFailure::San,
            Some(Error::InvalidCertificate(_)) => HandshakeFailure::Verify,
            Some(Error::NoCertificatesPresented) => HandshakeFailure::NoCert,
            _ => HandshakeFailure::Connection,
        }
    }
}

/// `…ssl.*` counters of one context.
#[derive(Clone, Debug)]
pub struct SslStats {
    prefix: Arc<str>,
    store: Arc<Store>,
    /// `handshake`.
    pub handshake: Counter,
    /// `connection_error`.
    pub connection_error: Counter,
    /// `fail_verify_san`.
    pub fail_verify_san: Counter,
    /// `fail_verify_error`.
    pub fail_verify_error: Counter,
    /// `fail_verify_no_cert`.
    pub fail_verify_no_cert: Counter,
    /// `no_certificate`: handshakes where the peer sent no certificate.
    pub no_certificate: Counter,
    /// `session_reused`.
    pub session_reused: Counter,
}

impl SslStats {
    /// The stats under `scope` (`listener.ADDR.` or `cluster.NAME.`).
    pub fn new(store: &Arc<Store>, scope: &str) -> SslStats {
        let prefix: Arc<str> = Arc::from(format!("{scope}ssl."));
        let c = |s: &str| store.counter(format!("{prefix}{s}"));
        SslStats {
            handshake: c("handshake"),
            connection_error: c("connection_error"),
            fail_verify_san: c("fail_verify_san"),
            fail_verify_error: c("fail_verify_error"),
            fail_verify_no_cert: c("fail_verify_no_cert"),
            no_certificate: c("no_certificate"),
            session_reused: c("session_reused"),
            store: store.clone(),
            prefix,
        }
    }

    /// Counts a failed handshake.
    pub fn failed(&self, e: &std::io::Error) -> HandshakeFailure {
        let f = HandshakeFailure::of(e);
        match f {
            HandshakeFailure::San => self.fail_verify_san.inc(),
            HandshakeFailure::Verify => self.fail_verify_error.inc(),
            HandshakeFailure::NoCert => self.fail_verify_no_cert.inc(),
            HandshakeFailure::Connection => self.connection_error.inc(),
        }
        f
    }

    /// Counts a completed handshake: `handshake`, `versions.TLSv1.x`, `ciphers.NAME`,
    /// `no_certificate`, `session_reused`.
    pub fn succeeded(&self, conn: &CommonState) {
        self.handshake.inc();
        if conn.peer_certificates().is_none_or(|c| c.is_empty()) {
            self.no_certificate.inc();
        }
        if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            self.session_reused.inc();
        }
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
            Some(ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
            _ => None,
        };
        if let Some(v) = version {
            self.store
                .counter(format!("{}versions.{v}", self.prefix))
                .inc();
        }
        if let Some(name) = conn
            .negotiated_cipher_suite()
            .and_then(|s| cipher_name(s.suite()))
        {
            self.store
                .counter(format!("{}ciphers.{name}", self.prefix))
                .inc();
        }
    }
}

/// BoringSSL's name of a cipher suite (what Envoy's `ssl.ciphers.*` stats carry).
fn cipher_name(s: rustls::CipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    Some(match s {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}
