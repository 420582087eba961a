//! The binaries together: `mesh-control-plane --ca-dir --ca-jwks` signs, `mesh-agent` fetches
//! with a service-account token and serves the certificate over SDS on a Unix socket, where an
//! SDS client (as Envoy would) finds `default` and `ROOTCA` for the token's identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use mesh_test_support::identity::{Issuer, served_leaf};
use mesh_test_support::{TempDir, eventually, free_port};
use prost::Message;

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
    std::fs::write(dir.0.join("token-db"), issuer.token("shop", "db", |_| {})).unwrap();
    let (xds, debug) = (free_port(), free_port());
    let path = |p: &str| dir.0.join(p).display().to_string();
    let (xds_addr, debug_addr) = (format!("127.0.0.1:{xds}"), format!("127.0.0.1:{debug}"));
    let (ca_dir, jwks, config_dir) = (path("ca"), path("jwks.json"), path("config"));
    let token_db = path("token-db");
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
    // Two workload identities: web (the first, `default`) and db.
    let mut agent_args = vec![
        "--ca-addr",
        &ca_addr,
        "--token",
        &token,
        "--token",
        &token_db,
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
                resource_names: vec![
                    "default".into(),
                    "ROOTCA".into(),
                    "spiffe://cluster.local/ns/shop/sa/db".into(),
                    // Not one of the agent's identities: no such secret.
                    "spiffe://cluster.local/ns/shop/sa/other".into(),
                ],
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
        (!secrets.is_empty()).then_some(secrets)
    })
    .await;
    let names: Vec<_> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["ROOTCA", "default", "spiffe://cluster.local/ns/shop/sa/db"]
    );
    let by_name = |n: &str| secrets.iter().find(|s| s.name == n).unwrap();
    let id_of = |name: &str| {
        let chain = match &by_name(name).r#type {
            Some(secret::Type::TlsCertificate(t)) => t.certificate_chain.clone().unwrap(),
            other => panic!("{other:?}"),
        };
        let Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(
            pem,
        )) = chain.specifier
        else {
            panic!("inline chain");
        };
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        mesh_identity::svid::spiffe_id_of(&der).unwrap().to_string()
    };
    assert_eq!(id_of("default"), "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(
        id_of("spiffe://cluster.local/ns/shop/sa/db"),
        "spiffe://cluster.local/ns/shop/sa/db"
    );
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

/// Istio's sidecar layout: Envoy only talks to local sockets. Its ADS stream goes to the
/// agent's `--xds-socket`, which forwards it to the control plane over TLS (verified with the
/// root). The control plane's serving certificate (4 s lifetime) is re-issued under the open
/// stream, and a configuration change made afterwards still reaches Envoy through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_xds_through_the_agents_proxy() {
    mesh_test_support::ProxyKind::each(xds_through_the_agents_proxy).await;
}

async fn xds_through_the_agents_proxy(kind: mesh_test_support::ProxyKind) {
    use mesh_test_support::proxy::{Bootstrap, XdsAt};
    use mesh_test_support::{Api, Proxy, upstream};
    let dir = TempDir::new("agent-xds-proxy");
    let issuer = Issuer::new("k1");
    let (a, b) = (upstream::start("a").await, upstream::start("b").await);
    let config = dir.0.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let listener_port = free_port();
    let mesh = |upstream_port: u16| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {listener_port}, name: http, protocol: HTTP}}
    captureMode: NONE
    hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {listener_port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {upstream_port}}}}}]
"#
        )
    };
    std::fs::write(config.join("mesh.yaml"), mesh(a.port())).unwrap();
    std::fs::write(dir.0.join("jwks.json"), &issuer.jwks).unwrap();
    std::fs::write(dir.0.join("token"), issuer.token("shop", "web", |_| {})).unwrap();
    let (xds, debug) = (free_port(), free_port());
    let path = |p: &str| dir.0.join(p).display().to_string();
    let (xds_addr, debug_addr) = (format!("127.0.0.1:{xds}"), format!("127.0.0.1:{debug}"));
    let _cp = spawn(
        env!("CARGO_BIN_EXE_mesh-control-plane"),
        &[
            "--config",
            &path("config"),
            "--xds-addr",
            &xds_addr,
            "--debug-addr",
            &debug_addr,
            "--ca-dir",
            &path("ca"),
            "--ca-jwks",
            &path("jwks.json"),
            "--tls-dns-names",
            "localhost",
            "--tls-cert-ttl",
            "4s",
        ],
    );
    let root = dir.0.join("ca/root-cert.pem");
    eventually("the CA root", Duration::from_secs(20), async || {
        root.exists().then_some(())
    })
    .await;
    let root_pem = std::fs::read_to_string(&root).unwrap();
    let first_leaf = eventually(
        "the control plane's TLS port",
        Duration::from_secs(20),
        async || served_leaf(("127.0.0.1", xds), &root_pem).await,
    )
    .await;
    let xds_socket = path("xds.sock");
    let _agent = spawn(
        env!("CARGO_BIN_EXE_mesh-agent"),
        &[
            "--ca-addr",
            &format!("https://localhost:{xds}"),
            "--ca-root",
            &root.display().to_string(),
            "--token",
            &path("token"),
            "--sds-socket",
            &path("sds.sock"),
            "--xds-socket",
            &xds_socket,
        ],
    );
    eventually(
        "the agent's xDS socket",
        Duration::from_secs(20),
        async || std::path::Path::new(&xds_socket).exists().then_some(()),
    )
    .await;
    // Istio's bootstrap: ADS to the agent's socket through the static cluster `xds-grpc`.
    let node = r#"{id: "sidecar~127.0.0.1~web.shop~shop.svc.cluster.local", cluster: web, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE}}"#;
    let bootstrap = Bootstrap {
        cluster: "xds-grpc",
        ..Bootstrap::ads(
            XdsAt::Pipe(std::path::Path::new(&xds_socket)),
            Api::Sotw,
            node,
        )
    };
    let envoy = Proxy::start_with_bootstrap(kind, &bootstrap.yaml()).await;
    envoy.wait_live().await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{listener_port}").parse().unwrap();
    let served_by = async |want: &str| {
        eventually(
            &format!("traffic to {want} through config from the proxy"),
            Duration::from_secs(20),
            async || {
                let r = upstream::get(addr, "reviews", "/", &[]).await.ok()?;
                (r.status == 200 && r.body == want).then_some(())
            },
        )
        .await
    };
    served_by("a").await;
    // The control plane's certificate is re-issued (4 s lifetime) while the stream is open.
    eventually(
        "a re-issued serving certificate",
        Duration::from_secs(20),
        async || {
            let leaf = served_leaf(("127.0.0.1", xds), &root_pem).await?;
            (leaf != first_leaf).then_some(())
        },
    )
    .await;
    std::fs::write(config.join("mesh.yaml"), mesh(b.port())).unwrap();
    served_by("b").await;
    assert_eq!(envoy.rejections().await, 0);
    // One ADS stream the whole time: the proxy forwards, it does not reconnect.
    assert_eq!(
        envoy.stat("cluster.xds-grpc.upstream_cx_total").await,
        Some(1)
    );
}

/// Development mode: `mesh-agent --identity` with no token gets a certificate for the claimed
/// identity from a control plane started with `--ca-insecure-identity-claims`, served over SDS
/// on the agent's TCP address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_identity_over_sds_on_tcp() {
    let dir = TempDir::new("agent-dev");
    std::fs::create_dir_all(dir.0.join("config")).unwrap();
    let (xds, debug, sds) = (free_port(), free_port(), free_port());
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
            "--ca-insecure-identity-claims",
        ],
    );
    let _agent = spawn(
        env!("CARGO_BIN_EXE_mesh-agent"),
        &[
            "--ca-addr",
            &format!("http://127.0.0.1:{xds}"),
            "--identity",
            "spiffe://cluster.local/ns/dev/sa/laptop",
            "--sds-socket",
            &path("sds.sock"),
            "--sds-addr",
            &format!("127.0.0.1:{sds}"),
        ],
    );
    let secret = eventually("SDS on TCP", Duration::from_secs(30), async || {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{sds}"))
            .unwrap()
            .connect()
            .await
            .ok()?;
        let resp = SecretDiscoveryServiceClient::new(channel)
            .fetch_secrets(DiscoveryRequest {
                resource_names: vec!["default".into()],
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        Some(Secret::decode(resp.resources.first()?.value.as_slice()).unwrap())
    })
    .await;
    let Some(secret::Type::TlsCertificate(t)) = secret.r#type else {
        panic!("a certificate");
    };
    let Some(envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(pem)) =
        t.certificate_chain.unwrap().specifier
    else {
        panic!("inline chain");
    };
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    assert_eq!(
        mesh_identity::svid::spiffe_id_of(&der).unwrap().to_string(),
        "spiffe://cluster.local/ns/dev/sa/laptop"
    );
    // The agent refuses to start with neither a token nor a claimed identity.
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
        .args(["--sds-socket", &path("other.sock")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}
