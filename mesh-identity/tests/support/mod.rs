//! Test support: a service-account token issuer (key, JWKS, tokens), CSRs, and, from mesh-xds's
//! test support, real Envoy processes, upstream HTTP servers and waiting with deadlines.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../mesh-xds/tests/support/envoy.rs"]
pub(crate) mod envoy;
#[path = "../../../mesh-xds/tests/support/upstream.rs"]
pub(crate) mod upstream;
#[path = "../../../mesh-xds/tests/support/wait.rs"]
mod wait;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
#[allow(unused_imports)]
pub(crate) use wait::{eventually, free_port};

/// The issuer of test tokens.
pub(crate) const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A token signing key and its JWKS.
pub(crate) struct Issuer {
    pem: String,
    pub(crate) jwks: String,
    kid: String,
}

impl Issuer {
    pub(crate) fn new(kid: &str) -> Issuer {
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
    pub(crate) fn token(
        &self,
        ns: &str,
        sa: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> String {
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

/// A PEM CSR for a fresh P-256 key.
pub(crate) fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

/// A directory removed when dropped.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("mesh-identity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The CA API on loopback for `ca`, accepting tokens from `issuer` (trust domain of the CA).
pub(crate) async fn serve_ca(
    ca: std::sync::Arc<mesh_identity::ca::CertificateAuthority>,
    issuer: &Issuer,
) -> std::net::SocketAddr {
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
