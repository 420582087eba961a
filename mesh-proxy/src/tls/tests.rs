//! Handshakes between a chain's [`ServerTls`] and a cluster's [`ClientTls`] over an in-memory
//! pipe, with their material from SDS entries: mTLS, ALPN, rotation, and how failures count.

use std::sync::Arc;

use bytes::Bytes;
use rustls_pki_types::{CertificateDer, ServerName};

use super::*;
use crate::config::matcher::{StringMatcher, StringPattern};
use crate::config::tls::{
    CertificateSource, CommonTls, DataSource, DownstreamTls, SanMatcher, SanType, SdsConfig,
    SdsSecret, SdsSource, SecretKind, SecretSource, SecretValue, TlsVersion, UpstreamTls,
    Validation, ValidationSource,
};
use crate::secret::SecretManager;
use crate::stats::Store;

const SERVER: &str = "spiffe://cluster.local/ns/shop/sa/server";
const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/client";

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    root: String,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = p.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::from_ca_cert_pem(&root, key).unwrap(),
            root,
        }
    }

    /// `(chain, key)` PEM for `uri`.
    fn leaf(&self, uri: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        (
            p.signed_by(&key, &self.issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    }
}

fn ads(name: &str) -> SdsSecret {
    SdsSecret {
        name: name.into(),
        config: SdsConfig {
            source: SdsSource::Ads,
            initial_fetch_timeout: None,
        },
    }
}

fn inline(s: &str) -> DataSource {
    DataSource::Inline(Bytes::from(s.to_string()))
}

fn san(kind: SanType, pattern: StringPattern) -> SanMatcher {
    SanMatcher {
        kind,
        matcher: StringMatcher {
            pattern,
            ignore_case: false,
        },
    }
}

fn common(cert: &str, sans: Vec<SanMatcher>, alpn: &[&str]) -> CommonTls {
    CommonTls {
        certificates: vec![SecretSource::Sds(ads(cert))],
        validation: Some(ValidationSource::Combined {
            default: Validation {
                trusted_ca: None,
                sans,
                crl: None,
                accept_untrusted: false,
            },
            sds: ads("ROOTCA"),
        }),
        alpn: alpn.iter().map(|s| s.to_string()).collect(),
        min_version: TlsVersion::V1_2,
        max_version: TlsVersion::V1_3,
        cipher_suites: None,
        ecdh_curves: None,
    }
}

/// Secrets `server-cert`, `client-cert` and `ROOTCA` from `ca`.
struct World {
    secrets: SecretManager,
    store: Arc<Store>,
    ca: Ca,
    entries: Vec<Arc<crate::secret::SecretEntry>>,
}

impl World {
    fn new() -> World {
        let w = World {
            secrets: SecretManager::new(),
            store: Arc::new(Store::new()),
            ca: Ca::new(),
            entries: Vec::new(),
        };
        let mut w = w;
        let root = w
            .secrets
            .acquire(SecretKind::Validation, &ads("ROOTCA"))
            .unwrap();
        root.update(
            "1",
            Bytes::new(),
            SecretValue::Validation(Validation {
                trusted_ca: Some(inline(&w.ca.root)),
                sans: vec![],
                crl: None,
                accept_untrusted: false,
            }),
        )
        .unwrap();
        w.entries.push(root);
        w.issue("server-cert", SERVER);
        w.issue("client-cert", CLIENT);
        w
    }

    /// Serves a new certificate for `uri` as secret `name`; returns it.
    fn issue(&mut self, name: &str, uri: &str) -> CertificateDer<'static> {
        let (chain, key) = self.ca.leaf(uri);
        self.serve(name, &chain, &key);
        rustls_pki_types::pem::PemObject::from_pem_slice(chain.as_bytes()).unwrap()
    }

    fn serve(&mut self, name: &str, chain: &str, key: &str) {
        let e = self
            .secrets
            .acquire(SecretKind::Certificate, &ads(name))
            .unwrap();
        e.update(
            "1",
            Bytes::from(chain.to_string()),
            SecretValue::Certificate(CertificateSource {
                chain: inline(chain),
                key: inline(key),
            }),
        )
        .unwrap();
        self.entries.push(e);
    }

    fn server(&self, cert: &str) -> ServerTls {
        let t = DownstreamTls {
            common: common(
                cert,
                vec![san(
                    SanType::Uri,
                    StringPattern::Prefix("spiffe://cluster.local/".into()),
                )],
                &["h2", "http/1.1"],
            ),
            require_client_certificate: true,
        };
        ServerTls::new(&t, &self.secrets, SslStats::new(&self.store, "listener.l.")).unwrap()
    }

    fn client(&self, cert: &str, want: &str, alpn: &[&str]) -> ClientTls {
        let t = UpstreamTls {
            common: common(
                cert,
                vec![san(SanType::Uri, StringPattern::Exact(want.into()))],
                alpn,
            ),
            sni: "outbound_.8080_._.server.shop.svc.cluster.local".into(),
            auto_sni: false,
            auto_san_validation: false,
        };
        ClientTls::new(&t, &self.secrets, SslStats::new(&self.store, "cluster.c.")).unwrap()
    }

    fn stat(&self, name: &str) -> u64 {
        self.store.counter(name).get()
    }
}

/// What each side saw of one handshake.
struct Seen {
    server: Result<TlsInfo, HandshakeFailure>,
    client: Result<(Option<CertificateDer<'static>>, Option<String>), HandshakeFailure>,
}

async fn handshake(server: &ServerTls, client: &ClientTls) -> Seen {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = async {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), a)
            .await
            .map_err(|e| server.stats.failed(&e))?;
        let config = server.config_for(&start.client_hello());
        let s = start
            .into_stream(config)
            .await
            .map_err(|e| server.stats.failed(&e))?;
        let conn = s.get_ref().1;
        server.stats.succeeded(conn);
        let info = TlsInfo {
            peer: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(PeerCertificate::of),
            local_uri_sans: server.local_uri_sans(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into()),
            sni: conn.server_name().map(str::to_string),
        };
        Ok((info, s))
    };
    let connect = async {
        let name = ServerName::try_from(client.settings().sni.clone()).unwrap();
        let c = tokio_rustls::TlsConnector::from(client.config(None, None).unwrap())
            .connect(name, b)
            .await
            .map_err(|e| client.stats.failed(&e))?;
        let conn = c.get_ref().1;
        client.stats.succeeded(conn);
        let seen = (
            conn.peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned()),
            conn.alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into()),
        );
        Ok((seen, c))
    };
    // Both ends stay open until both are done (the server writes its session tickets after
    // the client is through).
    let (server, client) = tokio::join!(accept, connect);
    Seen {
        server: server.map(|(i, _)| i),
        client: client.map(|(c, _)| c),
    }
}

#[tokio::test]
async fn mutual_tls_exposes_the_peer_and_falls_back_to_no_alpn() {
    let w = World::new();
    let server = w.server("server-cert");
    assert!(server.ready());
    // Istio's client offers `istio`, which the server does not list: no ALPN, as BoringSSL.
    let seen = handshake(&server, &w.client("client-cert", SERVER, &["istio"])).await;
    let info = seen.server.unwrap();
    assert_eq!(info.authenticated_principal(), Some(CLIENT));
    assert_eq!(info.local_uri_sans, [SERVER]);
    assert_eq!(info.alpn, None);
    assert_eq!(
        info.sni.as_deref(),
        Some("outbound_.8080_._.server.shop.svc.cluster.local")
    );
    assert_eq!(seen.client.unwrap().1, None);
    // With `h2` among them, the server's preference wins.
    let seen = handshake(&server, &w.client("client-cert", SERVER, &["istio", "h2"])).await;
    assert_eq!(seen.server.unwrap().alpn.as_deref(), Some("h2"));
    assert_eq!(w.stat("listener.l.ssl.handshake"), 2);
    assert_eq!(w.stat("cluster.c.ssl.handshake"), 2);
    assert_eq!(w.stat("listener.l.ssl.versions.TLSv1.3"), 2);
}

#[tokio::test]
async fn a_rotated_certificate_is_presented_by_the_next_handshake() {
    let mut w = World::new();
    let server = w.server("server-cert");
    let client = w.client("client-cert", SERVER, &["istio"]);
    let first = handshake(&server, &client).await.client.unwrap().0.unwrap();
    let rotated = w.issue("server-cert", SERVER);
    assert_ne!(first, rotated);
    let next = handshake(&server, &client).await.client.unwrap().0.unwrap();
    assert_eq!(next, rotated, "the same context, the new certificate");
}

#[tokio::test]
async fn failed_handshakes_count_as_envoy_counts_them() {
    let mut w = World::new();
    let server = w.server("server-cert");
    // The client expects another identity: its SAN check fails.
    let seen = handshake(&server, &w.client("client-cert", "spiffe://x/other", &[])).await;
    assert_eq!(seen.client.err(), Some(HandshakeFailure::San));
    assert_eq!(w.stat("cluster.c.ssl.fail_verify_san"), 1);
    // A client certificate from another trust domain: the server's SAN prefix fails.
    w.issue("foreign-td", "spiffe://other.example/ns/shop/sa/client");
    let seen = handshake(&server, &w.client("foreign-td", SERVER, &[])).await;
    assert_eq!(seen.server.err(), Some(HandshakeFailure::San));
    assert_eq!(w.stat("listener.l.ssl.fail_verify_san"), 1);
    // A certificate from another CA: the chain does not verify.
    let other = Ca::new();
    let (chain, key) = other.leaf(CLIENT);
    w.serve("other-ca", &chain, &key);
    let seen = handshake(&server, &w.client("other-ca", SERVER, &[])).await;
    assert_eq!(seen.server.err(), Some(HandshakeFailure::Verify));
    assert_eq!(w.stat("listener.l.ssl.fail_verify_error"), 1);
    // No client certificate (a secret that never arrived presents nothing).
    let seen = handshake(&server, &w.client("missing", SERVER, &[])).await;
    assert_eq!(seen.server.err(), Some(HandshakeFailure::NoCert));
    assert_eq!(w.stat("listener.l.ssl.fail_verify_no_cert"), 1);
    assert_eq!(w.stat("listener.l.ssl.handshake"), 0);
}

#[tokio::test]
async fn a_server_without_its_certificate_refuses_handshakes() {
    let w = World::new();
    let server = w.server("not-yet");
    assert!(!server.ready());
    let seen = handshake(&server, &w.client("client-cert", SERVER, &[])).await;
    assert_eq!(seen.server.err(), Some(HandshakeFailure::Connection));
    assert_eq!(w.stat("listener.l.ssl.connection_error"), 1);
}

#[test]
fn subjects_read_as_rfc_2253() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CountryName, "US");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Sue, Grabbit and Runn");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "L. Eagle");
    let der = p.self_signed(&key).unwrap().der().clone();
    let peer = PeerCertificate::of(&der);
    assert_eq!(peer.subject, r"CN=L. Eagle,O=Sue\, Grabbit and Runn,C=US");
    assert_eq!(peer.principal(), Some(peer.subject.as_str()));
    assert_eq!(peer.sha256.len(), 64);
}
