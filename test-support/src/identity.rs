//! Identity for tests: the trust domain, a service-account token issuer (key, JWKS, tokens),
//! CSRs and workload certificates, and the CA API on loopback with a client for it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use mesh_identity::agent::WorkloadCert;
use mesh_identity::ca::CertificateAuthority;
use mesh_identity::ca::api::{
    CREATE_CERTIFICATE, IstioCertificateRequest, IstioCertificateResponse,
};
use mesh_identity::spiffe::{SpiffeId, TrustDomain};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The trust domain tests use, `cluster.local`.
pub fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

/// The certificate in a PEM string (its first block).
pub fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// The issuer of test tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A token signing key and its JWKS.
pub struct Issuer {
    pem: String,
    /// The JWKS that verifies its tokens.
    pub jwks: String,
    kid: String,
}

impl Issuer {
    /// A fresh ES256 key with key ID `kid`.
    pub fn new(kid: &str) -> Issuer {
        let key = rcgen::KeyPair::generate().unwrap();
        let raw = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]})
        .to_string();
        Issuer {
            pem: key.serialize_pem(),
            jwks,
            kid: kid.to_string(),
        }
    }

    /// A Kubernetes service-account token for `ns/sa`, audience `istio-ca`, valid 10 minutes;
    /// `edit` changes the claims.
    pub fn token(&self, ns: &str, sa: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = serde_json::json!({
            "iss": ISSUER,
            "aud": ["istio-ca"],
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "exp": now + 600,
            "iat": now,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "1"}},
        });
        edit(&mut claims);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

/// A fresh P-256 key and a PEM CSR for it.
pub fn key_and_csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    (key, csr)
}

/// A PEM CSR for a fresh P-256 key.
pub fn csr() -> String {
    key_and_csr().1
}

/// The CA API on loopback for `ca`, accepting tokens from `issuer` (trust domain of the CA).
pub async fn serve_ca(ca: Arc<CertificateAuthority>, issuer: &Issuer) -> std::net::SocketAddr {
    let td = ca.config().trust_domain.clone();
    let auth =
        mesh_identity::ca::auth::JwtAuthenticator::from_jwks(&issuer.jwks, ISSUER, td).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = mesh_identity::ca::api::CaService::new(ca, auth);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

/// A certificate for `id` from `ca` (for a fresh key), as the agent would hold it: the chain
/// without the root, and the root apart.
pub fn workload(ca: &CertificateAuthority, id: &SpiffeId) -> WorkloadCert {
    let (key, csr) = key_and_csr();
    let mut issued = ca.sign_csr(&csr, id, None).unwrap();
    let root = issued.chain.pop().unwrap();
    WorkloadCert {
        chain: issued.chain,
        key: key.serialize_pem(),
        roots: vec![root],
        not_after: issued.not_after,
        issued_at: SystemTime::now(),
    }
}

/// One call of the CA API's `CreateCertificate` at `addr` (plain gRPC, a new connection),
/// with `bearer` as the `authorization: Bearer` token if given.
pub async fn ca_call(
    addr: std::net::SocketAddr,
    bearer: Option<&str>,
    req: IstioCertificateRequest,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ca_call_on(channel, bearer, req).await
}

/// [`ca_call`] on a channel of the caller's (an open connection, TLS, ...).
pub async fn ca_call_on(
    channel: tonic::transport::Channel,
    bearer: Option<&str>,
    req: IstioCertificateRequest,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(req);
    if let Some(t) = bearer {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let codec =
        tonic_prost::ProstCodec::<IstioCertificateRequest, IstioCertificateResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE);
    grpc.unary(request, path, codec)
        .await
        .map(|r| r.into_inner())
}

/// The certificate a TLS server at `addr` presents for `localhost`, verified against the
/// `root` PEM; nothing if it cannot be reached or does not verify.
pub async fn served_leaf(
    addr: impl tokio::net::ToSocketAddrs,
    root: &str,
) -> Option<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(root)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].clone())
}

/// The test mesh's CA (trust domain `cluster.local`), one per test process, its root kept in a
/// temporary directory.
pub fn mesh_ca() -> Arc<CertificateAuthority> {
    static CA: std::sync::OnceLock<Arc<CertificateAuthority>> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let dir = crate::temp_dir("mesh-test-ca");
        Arc::new(
            CertificateAuthority::self_signed(&dir, mesh_identity::ca::CaConfig::new(td()))
                .unwrap(),
        )
    })
    .clone()
}

/// Another CA with the mesh's trust domain, one per test process: it signs certificates that
/// look like the mesh's (same SPIFFE IDs) but that mesh proxies must refuse.
pub fn foreign_ca() -> Arc<CertificateAuthority> {
    static CA: std::sync::OnceLock<Arc<CertificateAuthority>> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let dir = crate::temp_dir("mesh-test-foreign-ca");
        Arc::new(
            CertificateAuthority::self_signed(&dir, mesh_identity::ca::CaConfig::new(td()))
                .unwrap(),
        )
    })
    .clone()
}

/// A certificate from [`mesh_ca`] for `spiffe://cluster.local/ns/NS/sa/SA`, as that
/// workload's agent would hold it.
pub fn mesh_workload(ns: &str, sa: &str) -> WorkloadCert {
    workload(&mesh_ca(), &SpiffeId::istio(td(), ns, sa).unwrap())
}

/// A certificate for the same identity as [`mesh_workload`] from [`foreign_ca`], trusting
/// [`mesh_ca`]'s root: a client holding it accepts mesh servers, which refuse it.
pub fn foreign_workload(ns: &str, sa: &str) -> WorkloadCert {
    let id = SpiffeId::istio(td(), ns, sa).unwrap();
    let mut cert = workload(&foreign_ca(), &id);
    cert.roots = workload(&mesh_ca(), &id).roots;
    cert
}

/// A workload's agent, as far as its proxy sees it: Istio's SDS (`default`, `ROOTCA`) on a
/// Unix socket, serving a certificate from [`mesh_ca`] for `spiffe://cluster.local/ns/NS/sa/SA`.
/// The server runs on the test's runtime; [`WorkloadSds::rotate`] issues a new certificate.
pub struct WorkloadSds {
    /// The socket (the `sds-grpc` cluster's pipe).
    pub socket: std::path::PathBuf,
    /// The workload's identity.
    pub id: SpiffeId,
    certs: tokio::sync::watch::Sender<Option<Arc<WorkloadCert>>>,
}

impl WorkloadSds {
    /// Starts serving for `ns/sa`.
    pub fn start(ns: &str, sa: &str) -> WorkloadSds {
        let id = SpiffeId::istio(td(), ns, sa).unwrap();
        let cert = workload(&mesh_ca(), &id);
        let (certs, rx) = tokio::sync::watch::channel(Some(Arc::new(cert)));
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let socket = crate::temp_dir(&format!("sds-{n}")).join("socket");
        // Bound before the proxy starts, so its first connection finds the socket.
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(mesh_identity::sds::SdsServer::new(rx).into_service())
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await;
        });
        WorkloadSds { socket, id, certs }
    }

    /// Issues and serves a new certificate for the same identity.
    pub fn rotate(&self) {
        let cert = workload(&mesh_ca(), &self.id);
        self.certs.send_replace(Some(Arc::new(cert)));
    }
}
