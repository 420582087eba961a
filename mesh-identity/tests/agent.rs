//! The agent against the CA served over TLS by [`mesh_identity::serving`], in process and over
//! real sockets: renewals over mTLS with the current SVID once the token is gone, the insecure
//! development claim (refused unless the CA opts in), and the server certificate rotating under
//! open connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mesh_identity::agent::{self, AgentConfig, WorkloadCert};
use mesh_identity::ca::api::CaService;
use mesh_identity::ca::auth::{AnyOf, Authenticator, JwtAuthenticator, SvidAuthenticator};
use mesh_identity::ca::{CaConfig, CertificateAuthority};
use mesh_identity::serving::{self, ServingCert};
use mesh_identity::spiffe::SpiffeId;
use mesh_test_support::identity::{
    ISSUER, Issuer, ca_call_on, csr, der, key_and_csr, served_leaf, td,
};
use mesh_test_support::{TempDir, eventually};
use rustls_pki_types::CertificateDer;

fn serial(cert: &CertificateDer<'_>) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(cert).unwrap();
    c.raw_serial().to_vec()
}

struct TlsCa {
    ca: Arc<CertificateAuthority>,
    cert: Arc<ServingCert>,
    addr: std::net::SocketAddr,
    root: String,
    _dir: TempDir,
}

/// The CA API over TLS on loopback (certificate for `localhost`), with `auth`.
async fn tls_ca(tag: &str, auth: impl FnOnce(&Arc<CertificateAuthority>) -> AnyOf) -> TlsCa {
    let dir = TempDir::new(tag);
    let ca = Arc::new(CertificateAuthority::self_signed(&dir.0, CaConfig::new(td())).unwrap());
    let id = SpiffeId::istio(td(), "istio-system", "istiod").unwrap();
    let cert =
        ServingCert::issue(&ca, &["localhost".into()], &id, Duration::from_secs(3600)).unwrap();
    let config = Arc::new(serving::server_config(cert.clone(), ca.clone()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = CaService::new(ca.clone(), auth(&ca));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(serving::incoming(listener, config))
            .await
            .unwrap();
    });
    TlsCa {
        root: ca.roots().concat(),
        ca,
        cert,
        addr,
        _dir: dir,
    }
}

fn jwt_then_svid(issuer: &Issuer) -> impl FnOnce(&Arc<CertificateAuthority>) -> AnyOf {
    let jwks = issuer.jwks.clone();
    move |ca| {
        AnyOf(vec![
            Box::new(JwtAuthenticator::from_jwks(&jwks, ISSUER, td()).unwrap())
                as Box<dyn Authenticator>,
            Box::new(SvidAuthenticator::from_ca(ca.clone())),
        ])
    }
}

fn id_of(cert: &WorkloadCert) -> String {
    mesh_identity::svid::spiffe_id_of(&der(&cert.chain[0]))
        .unwrap()
        .to_string()
}

/// After the first certificate (with the token), the token file is deleted: renewals go on
/// over mTLS with the current certificate, for the same identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_use_the_current_svid_when_the_token_is_gone() {
    let issuer = Issuer::new("k1");
    let ca = tls_ca("agent-svid", jwt_then_svid(&issuer)).await;
    let token = ca._dir.0.join("token");
    std::fs::write(&token, issuer.token("shop", "web", |_| {})).unwrap();
    let mut config = AgentConfig::new(
        format!("https://localhost:{}", ca.addr.port()),
        Some(token.clone()),
    )
    .with_ttl(Duration::from_secs(4));
    config.ca_root = Some(ca.root.clone());
    config.min_backoff = Duration::from_millis(100);
    let mut certs = agent::spawn(config.clone());
    let first = eventually(
        "the first certificate",
        Duration::from_secs(20),
        async || certs.borrow_and_update().clone(),
    )
    .await;
    assert_eq!(id_of(&first), "spiffe://cluster.local/ns/shop/sa/web");
    std::fs::remove_file(&token).unwrap();
    // Without the SVID path a renewal needs the token, which is gone.
    let mut no_svid = config.clone();
    no_svid.renew_with_svid = false;
    assert!(matches!(
        agent::fetch_with(&no_svid, Some(&first)).await,
        Err(agent::AgentError::Token { .. })
    ));
    let renewed = eventually(
        "a renewal without the token",
        Duration::from_secs(20),
        async || {
            let c = certs.borrow_and_update().clone()?;
            (c.chain[0] != first.chain[0]).then_some(c)
        },
    )
    .await;
    assert_eq!(id_of(&renewed), id_of(&first));
    assert_ne!(renewed.key, first.key, "a fresh key for every certificate");
    // The renewed certificate chains to the CA and is in force now.
    mesh_identity::svid::verify(
        &[der(&renewed.chain[0])],
        &[der(&ca.root)],
        rustls_pki_types::UnixTime::now(),
        true,
        Some(&td()),
    )
    .unwrap();
}

/// An expired certificate is never presented: the renewal falls back to the token, and a CA
/// that does not take SVIDs makes the agent go back to its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_without_svid_renewals_gets_the_token() {
    let issuer = Issuer::new("k1");
    let jwks = issuer.jwks.clone();
    let ca = tls_ca("agent-jwt-only", move |_| {
        AnyOf(vec![Box::new(
            JwtAuthenticator::from_jwks(&jwks, ISSUER, td()).unwrap(),
        )])
    })
    .await;
    let token = ca._dir.0.join("token");
    std::fs::write(&token, issuer.token("shop", "web", |_| {})).unwrap();
    let mut config = AgentConfig::new(format!("https://localhost:{}", ca.addr.port()), Some(token))
        .with_ttl(Duration::from_secs(4));
    config.ca_root = Some(ca.root.clone());
    config.min_backoff = Duration::from_millis(100);
    let first = agent::fetch(&config).await.unwrap();
    // Presenting the SVID to this CA is refused (it only knows tokens)...
    let refused = agent::fetch_with(&config, Some(&first)).await;
    assert!(
        matches!(&refused, Err(agent::AgentError::Refused(s)) if s.code() == tonic::Code::Unauthenticated),
        "{refused:?}"
    );
    // ... so the running agent falls back to the token and keeps renewing.
    let mut certs = agent::spawn(config);
    let a = eventually("a certificate", Duration::from_secs(20), async || {
        certs.borrow_and_update().clone()
    })
    .await;
    let b = eventually("a renewal", Duration::from_secs(20), async || {
        let c = certs.borrow_and_update().clone()?;
        (c.chain[0] != a.chain[0]).then_some(c)
    })
    .await;
    assert_eq!(id_of(&b), "spiffe://cluster.local/ns/shop/sa/web");
}

/// The development claim: refused by a CA that did not opt in, honoured by one that did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_identity_claims_need_the_cas_consent() {
    let issuer = Issuer::new("k1");
    let strict = tls_ca("agent-claim-strict", jwt_then_svid(&issuer)).await;
    let lax = tls_ca("agent-claim-lax", |_| {
        AnyOf(vec![Box::new(
            mesh_identity::ca::auth::InsecureClaimAuthenticator::new(td()),
        )])
    })
    .await;
    let config = |ca: &TlsCa| {
        let mut c = AgentConfig::new(format!("https://localhost:{}", ca.addr.port()), None);
        c.ca_root = Some(ca.root.clone());
        c.insecure_identity = Some("spiffe://cluster.local/ns/dev/sa/laptop".into());
        c
    };
    let refused = agent::fetch(&config(&strict)).await;
    assert!(
        matches!(&refused, Err(agent::AgentError::Refused(s)) if s.code() == tonic::Code::Unauthenticated),
        "{refused:?}"
    );
    let cert = agent::fetch(&config(&lax)).await.unwrap();
    assert_eq!(id_of(&cert), "spiffe://cluster.local/ns/dev/sa/laptop");
    // A claim outside the trust domain is refused even there.
    let mut foreign = config(&lax);
    foreign.insecure_identity = Some("spiffe://other.example/ns/dev/sa/laptop".into());
    let refused = agent::fetch(&foreign).await;
    assert!(
        matches!(&refused, Err(agent::AgentError::Refused(s)) if s.code() == tonic::Code::Unauthenticated && s.message().contains("trust domain")),
        "{refused:?}"
    );
}

/// The serving certificate is replaced while a gRPC connection is open: new handshakes get the
/// new certificate (verified against the root for `localhost`), the open connection keeps
/// working, and `keep_renewed` renews on its own at the configured point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_rotates_under_open_connections() {
    let issuer = Issuer::new("k1");
    let ca = tls_ca("serving-rotation", jwt_then_svid(&issuer)).await;
    let before = served_leaf(ca.addr, &ca.root)
        .await
        .expect("the CA's TLS certificate");
    assert_eq!(before, ca.cert.leaf());
    // One HTTP/2 connection, used before and after the rotation.
    let token = ca._dir.0.join("token");
    std::fs::write(&token, issuer.token("shop", "web", |_| {})).unwrap();
    let mut config = AgentConfig::new(format!("https://localhost:{}", ca.addr.port()), Some(token));
    config.ca_root = Some(ca.root.clone());
    let channel = config
        .endpoint(&config.ca_addr, None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let call = |channel: tonic::transport::Channel| {
        let token = issuer.token("shop", "web", |_| {});
        async move {
            let req = mesh_identity::ca::api::IstioCertificateRequest {
                csr: csr(),
                ..Default::default()
            };
            ca_call_on(channel, Some(&token), req)
                .await
                .map(|r| r.cert_chain.len())
        }
    };
    assert_eq!(call(channel.clone()).await.unwrap(), 2);
    ca.cert.renew(&ca.ca).unwrap();
    let after = served_leaf(ca.addr, &ca.root)
        .await
        .expect("the CA's TLS certificate");
    assert_ne!(serial(&after), serial(&before));
    assert_eq!(after, ca.cert.leaf());
    assert_eq!(
        call(channel).await.unwrap(),
        2,
        "the open connection keeps working"
    );

    // Renewed by itself: a 4-second certificate renewed at half of its life.
    let short = ServingCert::issue(
        &ca.ca,
        &["localhost".into()],
        &SpiffeId::istio(td(), "istio-system", "istiod").unwrap(),
        Duration::from_secs(4),
    )
    .unwrap();
    let first = short.leaf();
    let task = short.keep_renewed(ca.ca.clone(), 0.5);
    eventually(
        "a renewed serving certificate",
        Duration::from_secs(20),
        async || (short.leaf() != first).then_some(()),
    )
    .await;
    task.abort();
}

/// Root rotation without restarts: a second root is added to the running CA; the trust bundle
/// agents receive carries both, an SVID from the new root is accepted for renewal (by the TLS
/// port and the authenticator alike), and once the root is retired it is refused again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_added_at_run_time_is_trusted_until_retired() {
    let issuer = Issuer::new("k1");
    let ca = tls_ca("root-rotation", jwt_then_svid(&issuer)).await;
    let other_dir = TempDir::new("root-rotation-new");
    let new_ca = CertificateAuthority::self_signed(&other_dir.0, CaConfig::new(td())).unwrap();
    let new_root = new_ca.roots()[0].clone();
    // A workload certificate from the new root.
    let (key, csr) = key_and_csr();
    let id = SpiffeId::istio(td(), "shop", "web").unwrap();
    let issued = new_ca.sign_csr(&csr, &id, None).unwrap();
    let from_new = WorkloadCert {
        chain: issued.chain[..1].to_vec(),
        key: key.serialize_pem(),
        roots: vec![new_root.clone()],
        not_after: issued.not_after,
        issued_at: std::time::SystemTime::now(),
    };
    let token = ca._dir.0.join("token");
    std::fs::write(&token, issuer.token("shop", "web", |_| {})).unwrap();
    let mut config = AgentConfig::new(format!("https://localhost:{}", ca.addr.port()), Some(token));
    config.ca_root = Some(ca.root.clone());
    let trimmed = |v: &[String]| v.iter().map(|r| r.trim().to_string()).collect::<Vec<_>>();

    assert!(agent::fetch_with(&config, Some(&from_new)).await.is_err());
    assert_eq!(
        trimmed(&agent::fetch(&config).await.unwrap().roots),
        trimmed(std::slice::from_ref(&ca.root))
    );

    ca.ca.add_root(&new_root);
    let both = agent::fetch(&config).await.unwrap();
    assert_eq!(
        trimmed(&both.roots),
        trimmed(&[ca.root.clone(), new_root.clone()]),
        "the bundle carries the old and the new root"
    );
    let renewed = agent::fetch_with(&config, Some(&from_new)).await.unwrap();
    assert_eq!(id_of(&renewed), id.to_string());

    ca.ca.retire_root(&new_root);
    assert!(agent::fetch_with(&config, Some(&from_new)).await.is_err());
    assert_eq!(
        trimmed(&agent::fetch(&config).await.unwrap().roots),
        trimmed(std::slice::from_ref(&ca.root))
    );
}
