//! rustls end to end over real TCP: a client and a server built from our configs complete mTLS
//! and each sees the other's SPIFFE ID; peers outside the policy or from another trust domain
//! are refused; a rotation in the middle of a connection loop drops nothing, open connections
//! keep working, and new connections present the new certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::agent::WorkloadCert;
use mesh_identity::ca::{CaConfig, CertificateAuthority};
use mesh_identity::spiffe::{SpiffeId, TrustDomain};
use mesh_identity::tls::{IdentitySource, PeerPolicy, client_config, peer_id, server_config};
use mesh_test_support::TempDir;
use mesh_test_support::identity::{td, workload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio(td(), "shop", sa).unwrap()
}

fn source(cert: &WorkloadCert) -> Arc<IdentitySource> {
    let s = IdentitySource::new();
    s.update(cert).unwrap();
    s
}

/// An echo server: every connection answers with the client's SPIFFE ID, then echoes.
async fn serve(config: rustls::ServerConfig) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = peer_id(tls.get_ref().1)
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                let _ = tls.write_all(format!("{peer}\n").as_bytes()).await;
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Connects, returns the stream, the server's ID as the client saw it, and the ID the server
/// saw for the client.
async fn connect(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    String,
    String,
)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("workload.invalid").unwrap();
    let mut tls = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?;
    let server = peer_id(tls.get_ref().1)
        .map(|i| i.to_string())
        .unwrap_or_default();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while tls.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    if line.is_empty() {
        return Err(std::io::Error::other("server closed the connection"));
    }
    Ok((tls, server, String::from_utf8(line).unwrap()))
}

fn serial(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
    cert.raw_serial().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_with_spiffe_ids_policies_and_rotation() {
    let dir = TempDir::new("rustls");
    let ca = CertificateAuthority::self_signed(&dir.0.join("ca"), CaConfig::new(td())).unwrap();
    let server_src = source(&workload(&ca, &id("web")));
    let client_src = source(&workload(&ca, &id("client")));
    let server = serve(server_config(&server_src, PeerPolicy::TrustDomain(td())).unwrap()).await;
    let mut only_web =
        client_config(&client_src, PeerPolicy::Ids(BTreeSet::from([id("web")]))).unwrap();
    // Full handshakes only, so that every connection shows the server's current certificate
    // (a resumed session keeps the certificate of the session it resumes).
    only_web.resumption = rustls::client::Resumption::disabled();
    let only_web = Arc::new(only_web);

    let (mut tls, seen_server, seen_client) = connect(server, &only_web).await.unwrap();
    assert_eq!(seen_server, id("web").to_string());
    assert_eq!(seen_client, id("client").to_string());
    tls.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    // The client refuses a server outside its policy.
    let only_db =
        Arc::new(client_config(&client_src, PeerPolicy::Ids(BTreeSet::from([id("db")]))).unwrap());
    assert!(connect(server, &only_db).await.is_err());
    // The server refuses a client from another trust domain's CA.
    let other_td = TrustDomain::new("other.example").unwrap();
    let other_ca =
        CertificateAuthority::self_signed(&dir.0.join("other"), CaConfig::new(other_td.clone()))
            .unwrap();
    let mut foreign = workload(
        &other_ca,
        &SpiffeId::istio(other_td, "shop", "client").unwrap(),
    );
    // It even trusts our root, so only the server's checks can refuse it.
    foreign.roots = vec![ca.roots()[0].clone()];
    let foreign_cfg =
        Arc::new(client_config(&source(&foreign), PeerPolicy::TrustDomain(td())).unwrap());
    assert!(connect(server, &foreign_cfg).await.is_err());

    // Rotation mid-run: a loop of new connections (bounded: 60) while the server's certificate
    // is replaced halfway; every connection succeeds, and the open one keeps echoing.
    let before = serial(&tls);
    let mut serials = BTreeSet::new();
    for i in 0..60 {
        if i == 30 {
            server_src.update(&workload(&ca, &id("web"))).unwrap();
        }
        let (conn, seen, _) = connect(server, &only_web)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(seen, id("web").to_string());
        serials.insert(serial(&conn));
    }
    assert_eq!(serials.len(), 2, "one certificate before, one after");
    assert!(serials.contains(&before));
    tls.write_all(b"pong").await.unwrap();
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");

    // Following the agent's channel: a new certificate on the channel is used next.
    let (tx, rx) = tokio::sync::watch::channel(None);
    let task = server_src.follow(rx);
    let next = workload(&ca, &id("web"));
    tx.send(Some(Arc::new(next))).unwrap();
    let followed = mesh_test_support::eventually(
        "the followed certificate",
        Duration::from_secs(10),
        async || {
            let (conn, _, _) = connect(server, &only_web).await.ok()?;
            let s = serial(&conn);
            (!serials.contains(&s)).then_some(s)
        },
    )
    .await;
    assert!(!followed.is_empty());
    // A broken certificate is refused and the previous one stays in use (follow() logs the
    // error and keeps going).
    let mut broken = workload(&ca, &id("web"));
    broken.key = "not a key".into();
    assert!(server_src.update(&broken).is_err());
    let (conn, _, _) = connect(server, &only_web).await.unwrap();
    assert_eq!(
        serial(&conn),
        followed,
        "the broken certificate replaced nothing"
    );
    drop(tx);
    task.await.unwrap();
}
