//! mTLS handshakes per second with our SPIFFE rustls configs, next to the same rustls with its
//! stock webpki verifiers (chain validation only, no SPIFFE checks), on the same certificates.
//! Handshakes run in memory (no sockets), one at a time, so the rates are per core; both sides
//! of each handshake are counted. Run with `cargo bench -p mesh-benches --bench mtls`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_identity::agent::WorkloadCert;
use mesh_identity::ca::{CaConfig, CertificateAuthority};
use mesh_identity::spiffe::{SpiffeId, TrustDomain};
use mesh_identity::tls::{IdentitySource, PeerPolicy, client_config, server_config};
use mesh_test_support::identity::workload;
use rustls::{ClientConnection, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// One full handshake between fresh connections, in memory.
fn handshake(client: &Arc<rustls::ClientConfig>, server: &Arc<rustls::ServerConfig>) {
    let name = ServerName::try_from("workload.invalid").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().unwrap();
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    assert!(c.peer_certificates().is_some() && s.peer_certificates().is_some());
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("mesh-bench-mtls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let td = TrustDomain::new("cluster.local").unwrap();
    let ca = CertificateAuthority::self_signed(&dir, CaConfig::new(td.clone())).unwrap();
    let server_cert = workload(&ca, &SpiffeId::istio(td.clone(), "shop", "web").unwrap());
    let client_cert = workload(&ca, &SpiffeId::istio(td.clone(), "shop", "client").unwrap());

    // Ours. Resumption off on both sides: every handshake is a full one.
    let src = |w: &WorkloadCert| {
        let s = IdentitySource::new();
        s.update(w).unwrap();
        s
    };
    let mut ours_server =
        server_config(&src(&server_cert), PeerPolicy::TrustDomain(td.clone())).unwrap();
    ours_server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    ours_server.send_tls13_tickets = 0;
    let mut ours_client = client_config(&src(&client_cert), PeerPolicy::TrustDomain(td)).unwrap();
    ours_client.resumption = rustls::client::Resumption::disabled();

    // Plain rustls: the stock webpki verifiers over the same root and certificates.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.roots()[0].as_bytes()).unwrap())
        .unwrap();
    let roots = Arc::new(roots);
    let chain = |w: &WorkloadCert| -> Vec<CertificateDer<'static>> {
        w.chain
            .iter()
            .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).unwrap())
            .collect()
    };
    let key = |w: &WorkloadCert| PrivateKeyDer::from_pem_slice(w.key.as_bytes()).unwrap();
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut plain_server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain(&server_cert), key(&server_cert))
        .unwrap();
    plain_server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    plain_server.send_tls13_tickets = 0;
    // The stock server verifier checks DNS names; the plain client trusts our root and skips
    // only the name check (SPIFFE certificates carry no DNS name).
    #[derive(Debug)]
    struct NoName(Arc<rustls::client::WebPkiServerVerifier>);
    impl rustls::client::danger::ServerCertVerifier for NoName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ))
                | Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. },
                )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .unwrap();
    let mut plain_client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoName(server_verifier)))
        .with_client_auth_cert(chain(&client_cert), key(&client_cert))
        .unwrap();
    plain_client.resumption = rustls::client::Resumption::disabled();

    let (ours_client, ours_server) = (Arc::new(ours_client), Arc::new(ours_server));
    let (plain_client, plain_server) = (Arc::new(plain_client), Arc::new(plain_server));
    let mut g = c.benchmark_group("mtls_handshake");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("spiffe", |b| {
        b.iter(|| handshake(&ours_client, &ours_server))
    });
    g.bench_function("plain_rustls", |b| {
        b.iter(|| handshake(&plain_client, &plain_server))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
