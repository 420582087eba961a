//! Istio's CA API over real gRPC (tonic client and server on loopback): service-account JWTs
//! checked against a JWKS, the certificate carrying exactly the authenticated identity, and the
//! refusals with their status codes; renewal with an SVID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mesh_identity::ca::api::IstioCertificateRequest;
use mesh_identity::ca::auth::{Authenticator, Credentials, SvidAuthenticator};
use mesh_identity::ca::{CaConfig, CertificateAuthority};
use mesh_identity::spiffe::SpiffeId;
use mesh_test_support::TempDir;
use mesh_test_support::identity::{Issuer, ca_call, csr, der, serve_ca, td};

struct Server {
    addr: std::net::SocketAddr,
    ca: Arc<CertificateAuthority>,
    _dir: TempDir,
}

async fn serve(issuer: &Issuer, tag: &str) -> Server {
    let dir = TempDir::new(&format!("ca-api-{tag}"));
    let config = CaConfig::new(td()).with_max_ttl(Duration::from_secs(48 * 3600));
    let ca = Arc::new(CertificateAuthority::self_signed(&dir.0, config).unwrap());
    Server {
        addr: serve_ca(ca.clone(), issuer).await,
        ca,
        _dir: dir,
    }
}

fn request(csr: &str, ttl: i64) -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: ttl,
        metadata: None,
    }
}

#[tokio::test]
async fn a_service_account_token_gets_a_certificate_for_exactly_its_identity() {
    let k = Issuer::new("k1");
    let s = serve(&k, "ok").await;
    let resp = ca_call(
        s.addr,
        Some(&k.token("shop", "web", |_| {})),
        request(&csr(), 3600),
    )
    .await
    .unwrap();
    assert_eq!(resp.cert_chain.len(), 2, "leaf and root");
    assert_eq!(resp.cert_chain[1].trim(), s.ca.roots()[0].trim());
    let roots: Vec<_> = s.ca.roots().iter().map(|p| der(p)).collect();
    let id = mesh_identity::svid::verify(
        &[der(&resp.cert_chain[0])],
        &roots,
        rustls_pki_types::UnixTime::now(),
        true,
        Some(&td()),
    )
    .unwrap();
    assert_eq!(id, SpiffeId::istio(td(), "shop", "web").unwrap());
}

#[tokio::test]
async fn refusals_carry_the_right_status_and_never_the_token() {
    let k = Issuer::new("k1");
    let stranger = Issuer::new("k1");
    let s = serve(&k, "refusals").await;
    let good = k.token("shop", "web", |_| {});
    let cases: Vec<(&str, Option<String>, IstioCertificateRequest, tonic::Code)> = vec![
        (
            "no token",
            None,
            request(&csr(), 0),
            tonic::Code::Unauthenticated,
        ),
        (
            "signed by another key",
            Some(stranger.token("shop", "web", |_| {})),
            request(&csr(), 0),
            tonic::Code::Unauthenticated,
        ),
        (
            "another audience",
            Some(k.token("shop", "web", |c| {
                c["aud"] = serde_json::json!(["kubernetes"])
            })),
            request(&csr(), 0),
            tonic::Code::Unauthenticated,
        ),
        (
            "another issuer",
            Some(k.token("shop", "web", |c| c["iss"] = "https://evil.example".into())),
            request(&csr(), 0),
            tonic::Code::Unauthenticated,
        ),
        (
            "expired",
            Some(k.token("shop", "web", |c| c["exp"] = 1_000_000.into())),
            request(&csr(), 0),
            tonic::Code::Unauthenticated,
        ),
        (
            "not a service account",
            Some(k.token("shop", "web", |c| c["sub"] = "alice".into())),
            request(&csr(), 0),
            tonic::Code::Unauthenticated,
        ),
        (
            "claims disagree with the subject",
            Some(k.token("shop", "web", |c| {
                c["kubernetes.io"]["namespace"] = "other".into()
            })),
            request(&csr(), 0),
            tonic::Code::Unauthenticated,
        ),
        (
            "TTL above the maximum",
            Some(good.clone()),
            request(&csr(), 49 * 3600),
            tonic::Code::InvalidArgument,
        ),
        (
            "malformed CSR",
            Some(good.clone()),
            request(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                0,
            ),
            tonic::Code::InvalidArgument,
        ),
        (
            "impersonation",
            Some(good.clone()),
            IstioCertificateRequest {
                metadata: Some(prost_types_struct(
                    "spiffe://cluster.local/ns/kube-system/sa/admin",
                )),
                ..request(&csr(), 0)
            },
            tonic::Code::PermissionDenied,
        ),
    ];
    for (what, bearer, req, code) in cases {
        let err = ca_call(s.addr, bearer.as_deref(), req).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(!err.message().is_empty(), "{what}: a reason");
        if let Some(t) = &bearer {
            assert!(!err.message().contains(t.as_str()), "{what}: token leaked");
        }
    }
    // The good token still works.
    assert!(
        ca_call(s.addr, Some(&good), request(&csr(), 0))
            .await
            .is_ok()
    );
}

fn prost_types_struct(identity: &str) -> prost_types::Struct {
    prost_types::Struct {
        fields: [(
            "ImpersonatedIdentity".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(identity.into())),
            },
        )]
        .into(),
    }
}

#[tokio::test]
async fn renewal_with_a_valid_svid_from_this_ca() {
    let k = Issuer::new("k1");
    let s = serve(&k, "renew").await;
    let issued =
        s.ca.sign_csr(&csr(), &SpiffeId::istio(td(), "shop", "web").unwrap(), None)
            .unwrap();
    let roots: Vec<_> = s.ca.roots().iter().map(|p| der(p)).collect();
    let auth = SvidAuthenticator::new(roots, td());
    let chain = vec![der(&issued.chain[0])];
    let id = auth
        .authenticate(&Credentials {
            peer_certificates: Some(&chain),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
    // A certificate from another CA is refused; no certificate is not this authenticator's.
    let other_dir = std::env::temp_dir().join(format!("mesh-ca-api-other-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other_dir);
    let other = CertificateAuthority::self_signed(&other_dir, CaConfig::new(td())).unwrap();
    let foreign = vec![der(&other
        .sign_csr(&csr(), &SpiffeId::istio(td(), "shop", "web").unwrap(), None)
        .unwrap()
        .chain[0])];
    assert!(matches!(
        auth.authenticate(&Credentials {
            peer_certificates: Some(&foreign),
            ..Default::default()
        }),
        Err(mesh_identity::ca::auth::AuthError::Invalid(_))
    ));
    assert!(matches!(
        auth.authenticate(&Credentials::default()),
        Err(mesh_identity::ca::auth::AuthError::NoCredentials)
    ));
    std::fs::remove_dir_all(&other_dir).unwrap();
}
