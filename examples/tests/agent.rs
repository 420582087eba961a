//! The binaries together: `mesh-control-plane --ca-dir --ca-jwks` signs, `mesh-agent` fetches
//! with a service-account token and serves the certificate over SDS on a Unix socket, where an
//! SDS client (as Envoy would) finds `default` and `ROOTCA` for the token's identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../mesh-identity/tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use prost::Message;
use support::{Issuer, TempDir, eventually, free_port};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, args: &[&str]) -> Killed {
    Killed(
        Command::new(bin)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_the_control_planes_certificates_over_sds() {
    let dir = TempDir::new("agent-bin");
    let issuer = Issuer::new("k1");
    let config = dir.0.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(dir.0.join("jwks.json"), &issuer.jwks).unwrap();
    std::fs::write(dir.0.join("token"), issuer.token("shop", "web", |_| {})).unwrap();
    let (xds, debug) = (free_port(), free_port());
    let path = |p: &str| dir.0.join(p).display().to_string();
    let _cp = spawn(
        env!("CARGO_BIN_EXE_mesh-control-plane"),
        &[
            "--config",
            &path("config"),
            "--xds-addr",
            &format!("127.0.0.1:{xds}"),
            "--debug-addr",
            &format!("127.0.0.1:{debug}"),
            "--ca-dir",
            &path("ca"),
            "--ca-jwks",
            &path("jwks.json"),
        ],
    );
    let socket = dir.0.join("sds.sock");
    let _agent = spawn(
        env!("CARGO_BIN_EXE_mesh-agent"),
        &[
            "--ca-addr",
            &format!("http://127.0.0.1:{xds}"),
            "--token",
            &path("token"),
            "--sds-socket",
            &socket.display().to_string(),
        ],
    );
    let secrets = eventually("secrets over SDS", Duration::from_secs(30), async || {
        let s = socket.clone();
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let s = s.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(s).await?,
                    ))
                }
            }))
            .await
            .ok()?;
        let resp = SecretDiscoveryServiceClient::new(channel)
            .fetch_secrets(DiscoveryRequest {
                resource_names: vec!["default".into(), "ROOTCA".into()],
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        let secrets: Vec<Secret> = resp
            .resources
            .iter()
            .map(|a| Secret::decode(a.value.as_slice()).unwrap())
            .collect();
        (secrets.len() == 2).then_some(secrets)
    })
    .await;
    let by_name = |n: &str| secrets.iter().find(|s| s.name == n).unwrap();
    let chain = match &by_name("default").r#type {
        Some(secret::Type::TlsCertificate(t)) => t.certificate_chain.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    let Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(pem)) =
        chain.specifier
    else {
        panic!("inline chain");
    };
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let id = mesh_identity::svid::spiffe_id_of(&der).unwrap();
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
    // The CA's root is the one on disk.
    let root = std::fs::read_to_string(dir.0.join("ca/root-cert.pem")).unwrap();
    match &by_name("ROOTCA").r#type {
        Some(secret::Type::ValidationContext(v)) => {
            let ca = v.trusted_ca.clone().unwrap().specifier.unwrap();
            assert_eq!(
                ca,
                envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(
                    root.into_bytes()
                )
            );
        }
        other => panic!("{other:?}"),
    }
}
