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
    agent_through_control_plane(false).await;
}

/// The same with the control plane's gRPC port on TLS (a certificate from its own CA for
/// `localhost`), the agent verifying it with the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_talks_to_the_ca_over_tls() {
    agent_through_control_plane(true).await;
}

async fn agent_through_control_plane(tls: bool) {
    let dir = TempDir::new(if tls { "agent-bin-tls" } else { "agent-bin" });
    let issuer = Issuer::new("k1");
    let config = dir.0.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(dir.0.join("jwks.json"), &issuer.jwks).unwrap();
    std::fs::write(dir.0.join("token"), issuer.token("shop", "web", |_| {})).unwrap();
    let (xds, debug) = (free_port(), free_port());
    let path = |p: &str| dir.0.join(p).display().to_string();
    let (xds_addr, debug_addr) = (format!("127.0.0.1:{xds}"), format!("127.0.0.1:{debug}"));
    let (ca_dir, jwks, config_dir) = (path("ca"), path("jwks.json"), path("config"));
    let mut cp_args = vec![
        "--config",
        &config_dir,
        "--xds-addr",
        &xds_addr,
        "--debug-addr",
        &debug_addr,
        "--ca-dir",
        &ca_dir,
        "--ca-jwks",
        &jwks,
    ];
    if tls {
        cp_args.extend(["--tls-dns-names", "localhost"]);
    }
    let _cp = spawn(env!("CARGO_BIN_EXE_mesh-control-plane"), &cp_args);
    let socket = dir.0.join("sds.sock");
    let (token, sock) = (path("token"), socket.display().to_string());
    let ca_addr = if tls {
        format!("https://localhost:{xds}")
    } else {
        format!("http://127.0.0.1:{xds}")
    };
    let root = path("ca/root-cert.pem");
    let mut agent_args = vec![
        "--ca-addr",
        &ca_addr,
        "--token",
        &token,
        "--sds-socket",
        &sock,
    ];
    if tls {
        // The root exists once the control plane has started.
        eventually("the CA root", Duration::from_secs(20), async || {
            std::path::Path::new(&root).exists().then_some(())
        })
        .await;
        agent_args.extend(["--ca-root", &root]);
        // Plaintext is refused on the TLS port: the call fails in the transport, before any
        // gRPC status the CA could give (a plaintext port answers UNAUTHENTICATED here).
        let code = match tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{xds}"))
            .unwrap()
            .connect()
            .await
        {
            Err(_) => None,
            Ok(channel) => {
                let mut grpc = tonic::client::Grpc::new(channel);
                let codec = tonic_prost::ProstCodec::<
                    mesh_identity::ca::api::IstioCertificateRequest,
                    mesh_identity::ca::api::IstioCertificateResponse,
                >::default();
                match grpc.ready().await {
                    Err(_) => None,
                    Ok(()) => grpc
                        .unary(
                            tonic::Request::new(Default::default()),
                            tonic::codegen::http::uri::PathAndQuery::from_static(
                                mesh_identity::ca::api::CREATE_CERTIFICATE,
                            ),
                            codec,
                        )
                        .await
                        .err()
                        .map(|e| e.code()),
                }
            }
        };
        assert_ne!(code, Some(tonic::Code::Unauthenticated));
        assert_ne!(code, Some(tonic::Code::Ok));
    }
    let _agent = spawn(env!("CARGO_BIN_EXE_mesh-agent"), &agent_args);
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
