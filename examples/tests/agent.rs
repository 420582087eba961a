//! The binaries together: `mesh-control-plane --ca-dir --ca-jwks` signs, `mesh-agent` fetches
//! with a service-account token and serves the certificate over SDS on a Unix socket, where an
//! SDS client (as Envoy would) finds `default` and `ROOTCA` for the token's identity. The
//! agent takes Istio's `CA_ADDR` form `host:port` as well as URLs, refuses an address it cannot
//! use at start, and follows a root rotation made on the control plane's debug port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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

/// [`spawn`], keeping what the process logs (standard output) as it comes.
fn spawn_logged(bin: &str, args: &[&str]) -> (Killed, Arc<Mutex<String>>) {
    let mut child = Command::new(bin)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (Killed(child), log)
}

/// A gRPC channel over the Unix socket at `path`.
async fn unix_channel(path: &Path) -> Option<tonic::transport::Channel> {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .ok()
}

/// The secrets the agent serves over SDS on `socket`, as Envoy would fetch them.
async fn sds_secrets(socket: &Path, names: &[&str]) -> Option<Vec<Secret>> {
    let resp = SecretDiscoveryServiceClient::new(unix_channel(socket).await?)
        .fetch_secrets(DiscoveryRequest {
            resource_names: names.iter().map(|n| n.to_string()).collect(),
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
}

/// What the agent serves now: the `ROOTCA` bundle (PEM) and the `default` leaf.
async fn served(socket: &Path) -> Option<(String, rustls_pki_types::CertificateDer<'static>)> {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    let secrets = sds_secrets(socket, &["default", "ROOTCA"]).await?;
    let inline = |s: Option<Specifier>| match s {
        Some(Specifier::InlineBytes(b)) => Some(b),
        _ => None,
    };
    let mut bundle = None;
    let mut leaf = None;
    for s in secrets {
        match s.r#type {
            Some(secret::Type::ValidationContext(v)) => {
                bundle = inline(v.trusted_ca?.specifier);
            }
            Some(secret::Type::TlsCertificate(t)) => {
                leaf = inline(t.certificate_chain?.specifier);
            }
            _ => {}
        }
    }
    let leaf = rustls_pki_types::pem::PemObject::from_pem_slice(&leaf?).ok()?;
    Some((String::from_utf8(bundle?).ok()?, leaf))
}

/// Whether `leaf` chains to the PEM `root`.
fn issued_by(leaf: &rustls_pki_types::CertificateDer<'_>, root: &str) -> bool {
    let root = rustls_pki_types::pem::PemObject::from_pem_slice(root.as_bytes()).unwrap();
    mesh_identity::svid::verify(
        std::slice::from_ref(leaf),
        &[root],
        rustls_pki_types::UnixTime::now(),
        true,
        None,
    )
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_the_control_planes_certificates_over_sds() {
    agent_through_control_plane(false, false).await;
}

/// The same with the control plane's gRPC port on TLS (a certificate from its own CA for
/// `localhost`), the agent verifying it with the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_talks_to_the_ca_over_tls() {
    agent_through_control_plane(true, false).await;
}

/// Istio's `CA_ADDR` form: `--ca-addr 127.0.0.1:PORT` without `--ca-root` is plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_port_ca_addr_without_a_root_is_plaintext() {
    agent_through_control_plane(false, true).await;
}

/// `--ca-addr localhost:PORT` with `--ca-root` is TLS, verified with the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_port_ca_addr_with_a_root_is_tls() {
    agent_through_control_plane(true, true).await;
}

/// `bare`: the CA's address as Istio's `host:port`, else as a URL.
async fn agent_through_control_plane(tls: bool, bare: bool) {
    let dir = TempDir::new(&format!(
        "agent-bin-{}-{}",
        if tls { "tls" } else { "plain" },
        if bare { "host-port" } else { "url" }
    ));
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
    let ca_addr = match (tls, bare) {
        (true, false) => format!("https://localhost:{xds}"),
        (false, false) => format!("http://127.0.0.1:{xds}"),
        (true, true) => format!("localhost:{xds}"),
        (false, true) => format!("127.0.0.1:{xds}"),
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
        sds_secrets(
            &socket,
            &[
                "default",
                "ROOTCA",
                "spiffe://cluster.local/ns/shop/sa/db",
                // Not one of the agent's identities: no such secret.
                "spiffe://cluster.local/ns/shop/sa/other",
            ],
        )
        .await
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
    let (_agent, agent_log) = spawn_logged(
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
    // Istio's bootstrap: ADS to the agent's socket through the static cluster `xds-grpc`,
    // secrets from the agent's SDS socket through `sds-grpc`.
    let node = r#"{id: "sidecar~127.0.0.1~web.shop~shop.svc.cluster.local", cluster: web, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE}}"#;
    let sds_socket = path("sds.sock");
    let bootstrap = Bootstrap {
        cluster: "xds-grpc",
        sds: Some(std::path::Path::new(&sds_socket)),
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
    // The control plane authenticates ADS callers on its TLS port: Envoy's stream went with
    // the agent's token or, if the certificate came first, over mTLS; once the agent has its
    // certificate, new streams go over mTLS as shop/web (no token is sent any more), and may
    // act for namespace shop only.
    eventually(
        "the agent's xDS proxy on mTLS",
        Duration::from_secs(20),
        async || {
            agent_log
                .lock()
                .unwrap()
                .contains("new streams present the workload certificate")
                .then_some(())
        },
    )
    .await;
    let first_cds = async |ns: &str| {
        use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
        use tokio_stream::StreamExt;
        let channel = unix_channel(std::path::Path::new(&xds_socket))
            .await
            .unwrap();
        let request = DiscoveryRequest {
            node: Some(mesh_test_support::node(
                &format!("sidecar~127.0.0.1~web.{ns}~{ns}.svc.cluster.local"),
                ns,
                "web",
            )),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        };
        let requests = tokio_stream::iter([request]).chain(tokio_stream::pending());
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(requests)
            .await?
            .into_inner();
        responses.message().await
    };
    assert!(first_cds("shop").await.unwrap().is_some());
    let denied = first_cds("other").await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("claims namespace \"other\"")
            && denied
                .message()
                .contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{}",
        denied.message()
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

/// An address the agent cannot use stops it at start, before it serves anything, with a
/// message that names the flag and says what to write instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_address_stops_the_agent_at_start() {
    let dir = TempDir::new("agent-bad-addr");
    let socket = dir.0.join("sds.sock");
    let sock = socket.display().to_string();
    let expected = "expected host:port (Istio's CA_ADDR form) or http(s)://host:port";
    let cases: &[(&[&str], String)] = &[
        (
            &["--ca-addr", "nonsense"],
            format!("--ca-addr 'nonsense': {expected}"),
        ),
        (
            &["--ca-addr", "127.0.0.1"],
            format!("--ca-addr '127.0.0.1': {expected}"),
        ),
        (
            &["--ca-addr", "grpc://127.0.0.1:15010"],
            format!("--ca-addr 'grpc://127.0.0.1:15010': unknown scheme 'grpc://': {expected}"),
        ),
        (
            &["--ca-addr", "http://127.0.0.1"],
            "--ca-addr 'http://127.0.0.1': no port: ".into(),
        ),
        (
            &["--ca-addr", "127.0.0.1:99999"],
            "--ca-addr '127.0.0.1:99999': port '99999' is not a number from 1 to 65535".into(),
        ),
        (
            // `.invalid` never resolves (RFC 6761).
            &["--ca-addr", "nosuch.invalid:15012"],
            "--ca-addr 'nosuch.invalid:15012': host 'nosuch.invalid' does not resolve".into(),
        ),
        (
            &["--ca-addr", "https://localhost:15012"],
            "--ca-addr 'https://localhost:15012' is TLS (https) but there is no root to verify \
             the server with"
                .into(),
        ),
        (
            &[
                "--ca-addr",
                "127.0.0.1:15010",
                "--xds-socket",
                "/nonexistent/xds.sock",
                "--xds-addr",
                "localhost",
            ],
            format!("--xds-addr 'localhost': {expected}"),
        ),
    ];
    for (flags, message) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_mesh-agent"))
            .args(*flags)
            .args([
                "--identity",
                "spiffe://cluster.local/ns/dev/sa/laptop",
                "--sds-socket",
                &sock,
            ])
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(
            stderr.contains(message.as_str()),
            "{flags:?}: expected {message:?} in\n{stderr}"
        );
        assert!(!socket.exists(), "{flags:?} served SDS");
    }
}

/// When the CA is not there, the log says which address failed and why, in words and with
/// the error's source chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_logged_with_the_address_and_the_reason() {
    let dir = TempDir::new("agent-refused");
    let port = free_port(); // nothing listens there
    let (_agent, log) = spawn_logged(
        env!("CARGO_BIN_EXE_mesh-agent"),
        &[
            "--ca-addr",
            &format!("127.0.0.1:{port}"),
            "--identity",
            "spiffe://cluster.local/ns/dev/sa/laptop",
            "--sds-socket",
            &dir.0.join("sds.sock").display().to_string(),
        ],
    );
    let want = format!(
        "certificate request failed, retrying in 200ms: CA at http://127.0.0.1:{port} \
         unreachable: connection refused, nothing listens there (transport error: tcp connect \
         error: Connection refused"
    );
    eventually(
        "the refusal in the log",
        Duration::from_secs(20),
        async || log.lock().unwrap().contains(&want).then_some(()),
    )
    .await;
    assert!(
        log.lock().unwrap().contains(&format!(
            "--ca-addr http://127.0.0.1:{port} (host:port without --ca-root: plaintext)"
        )),
        "{}",
        log.lock().unwrap()
    );
}

/// Root rotation from outside, on plaintext: the control plane's debug port stages a new root,
/// switches signing to it and retires the old one, and a running agent (3 s certificates)
/// serves each step in `ROOTCA` and `default` without a restart. The CA's directory keeps the
/// rotation: a control plane restarted on it trusts and signs as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_follows_a_root_rotation() {
    root_rotation(false).await;
}

/// The same over TLS, with the agent's `--ca-root` left at the old root and the agent's xDS
/// proxy in use: the gRPC port's certificate comes from the new root once it signs, and the
/// agent keeps renewing (over mTLS) and proxying ADS because it also trusts the bundle the CA
/// sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_follows_a_root_rotation_over_tls() {
    root_rotation(true).await;
}

async fn root_rotation(tls: bool) {
    use mesh_test_support::upstream;
    let dir = TempDir::new(if tls { "rotation-tls" } else { "rotation" });
    let issuer = Issuer::new("k1");
    std::fs::create_dir_all(dir.0.join("config")).unwrap();
    std::fs::write(dir.0.join("jwks.json"), &issuer.jwks).unwrap();
    std::fs::write(dir.0.join("token"), issuer.token("shop", "web", |_| {})).unwrap();
    let path = |p: &str| dir.0.join(p).display().to_string();
    let (xds, debug) = (free_port(), free_port());
    let debug_addr: std::net::SocketAddr = format!("127.0.0.1:{debug}").parse().unwrap();
    let cp_args = |xds: u16, debug: u16| {
        let mut a = vec![
            "--config".to_string(),
            path("config"),
            "--xds-addr".into(),
            format!("127.0.0.1:{xds}"),
            "--debug-addr".into(),
            format!("127.0.0.1:{debug}"),
            "--ca-dir".into(),
            path("ca"),
            "--ca-jwks".into(),
            path("jwks.json"),
        ];
        if tls {
            a.extend(["--tls-dns-names".into(), "localhost".into()]);
        }
        a
    };
    let args = cp_args(xds, debug);
    let cp = spawn(
        env!("CARGO_BIN_EXE_mesh-control-plane"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let root_file = dir.0.join("ca/root-cert.pem");
    eventually("the CA root", Duration::from_secs(20), async || {
        root_file.exists().then_some(())
    })
    .await;
    let old = std::fs::read_to_string(&root_file).unwrap();
    // The agent's root file stays the old root throughout.
    std::fs::write(dir.0.join("agent-root.pem"), &old).unwrap();
    let socket = dir.0.join("sds.sock");
    let xds_socket = dir.0.join("xds.sock");
    let ca_addr = if tls {
        format!("localhost:{xds}")
    } else {
        format!("127.0.0.1:{xds}")
    };
    let (token, sock, root_arg, xsock) = (
        path("token"),
        socket.display().to_string(),
        path("agent-root.pem"),
        xds_socket.display().to_string(),
    );
    let mut agent_args = vec![
        "--ca-addr",
        &ca_addr,
        "--token",
        &token,
        "--sds-socket",
        &sock,
        "--ttl",
        "3s",
    ];
    if tls {
        agent_args.extend(["--ca-root", &root_arg, "--xds-socket", &xsock]);
    }
    let _agent = spawn(env!("CARGO_BIN_EXE_mesh-agent"), &agent_args);
    let debug_call = async |method: &str, path: &str| {
        let r = upstream::request(debug_addr, method, "cp", path, &[])
            .await
            .unwrap();
        (r.status, r.body)
    };
    let post = async |path: &str| {
        let (status, body) = debug_call("POST", path).await;
        assert_eq!(status, 200, "POST {path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    // An ADS request through the agent's xDS proxy gets an answer from the control plane.
    let ads_answers = async || {
        use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
        use tokio_stream::StreamExt;
        let channel = unix_channel(&xds_socket).await?;
        let request = DiscoveryRequest {
            node: Some(mesh_test_support::node(
                "sidecar~127.0.0.1~web.shop~shop.svc.cluster.local",
                "shop",
                "web",
            )),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        };
        let requests = tokio_stream::iter([request]).chain(tokio_stream::pending());
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(requests)
            .await
            .ok()?
            .into_inner();
        responses.message().await.ok()?.map(|_| ())
    };
    let trimmed = |s: &str| s.trim().to_string();

    // The first certificate, from the old root.
    let (bundle, _) = eventually("a certificate", Duration::from_secs(30), async || {
        served(&socket).await
    })
    .await;
    assert_eq!(trimmed(&bundle), trimmed(&old));

    // Stage: the agent serves both roots from its next renewal; the old root still signs.
    let staged = post("/debug/ca/rotate-root?stage=true").await;
    let new = staged["staged"]["pem"].as_str().unwrap().to_string();
    assert_ne!(trimmed(&new), trimmed(&old));
    let leaf = eventually(
        "ROOTCA with both roots",
        Duration::from_secs(20),
        async || {
            let (bundle, leaf) = served(&socket).await?;
            (bundle.contains(old.trim()) && bundle.contains(new.trim())).then_some(leaf)
        },
    )
    .await;
    assert!(
        issued_by(&leaf, &old),
        "the old root signs until the rotation"
    );

    // Rotate: certificates come from the new root; both stay trusted.
    let rotation = post("/debug/ca/rotate-root").await;
    assert_eq!(rotation["was_staged"], true, "{rotation}");
    assert_eq!(
        trimmed(rotation["signing"]["pem"].as_str().unwrap()),
        trimmed(&new)
    );
    let bundle = eventually(
        "a certificate from the new root",
        Duration::from_secs(20),
        async || {
            let (bundle, leaf) = served(&socket).await?;
            issued_by(&leaf, &new).then_some(bundle)
        },
    )
    .await;
    assert!(bundle.contains(old.trim()) && bundle.contains(new.trim()));
    if tls {
        // The gRPC port now serves a certificate from the new root, which the agent's
        // --ca-root (the old root) alone does not verify. The xDS proxy's first connection is
        // made now (a connection made before would carry on), so it must trust the bundle.
        assert!(served_leaf(("127.0.0.1", xds), &new).await.is_some());
        assert!(served_leaf(("127.0.0.1", xds), &old).await.is_none());
        eventually(
            "ADS through the agent after the rotation",
            Duration::from_secs(20),
            ads_answers,
        )
        .await;
    }

    // Retire the old root: the agent serves only the new one, and keeps renewing.
    let (status, body) = debug_call("GET", "/debug/ca/roots").await;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let roots = listed["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 2, "{listed}");
    assert_eq!(roots[0]["signing"], true);
    assert_eq!(trimmed(roots[0]["pem"].as_str().unwrap()), trimmed(&new));
    let old_sha = roots[1]["sha256"].as_str().unwrap().to_string();
    let new_sha = roots[0]["sha256"].as_str().unwrap().to_string();
    assert_eq!(
        debug_call("POST", &format!("/debug/ca/retire-root?sha256={new_sha}"))
            .await
            .0,
        409,
        "the signing root cannot be retired"
    );
    assert_eq!(debug_call("GET", "/debug/ca/rotate-root").await.0, 405);
    post(&format!("/debug/ca/retire-root?sha256={old_sha}")).await;
    let (_, before) = served(&socket).await.unwrap();
    eventually(
        "ROOTCA with only the new root, and a renewal",
        Duration::from_secs(20),
        async || {
            let (bundle, leaf) = served(&socket).await?;
            (trimmed(&bundle) == trimmed(&new) && leaf != before && issued_by(&leaf, &new))
                .then_some(())
        },
    )
    .await;
    if tls {
        eventually(
            "ADS through the agent after the retirement",
            Duration::from_secs(20),
            ads_answers,
        )
        .await;
    }

    // The directory holds the result: a control plane restarted on it lists the same roots.
    assert_eq!(
        trimmed(&std::fs::read_to_string(&root_file).unwrap()),
        trimmed(&new)
    );
    assert_eq!(
        trimmed(&std::fs::read_to_string(dir.0.join("ca/trust-bundle.pem")).unwrap()),
        trimmed(&new)
    );
    drop(cp);
    let (xds2, debug2) = (free_port(), free_port());
    let args = cp_args(xds2, debug2);
    let _cp = spawn(
        env!("CARGO_BIN_EXE_mesh-control-plane"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let debug2: std::net::SocketAddr = format!("127.0.0.1:{debug2}").parse().unwrap();
    let relisted = eventually(
        "the restarted control plane",
        Duration::from_secs(20),
        async || {
            let r = upstream::get(debug2, "cp", "/debug/ca/roots", &[])
                .await
                .ok()?;
            serde_json::from_str::<serde_json::Value>(&r.body).ok()
        },
    )
    .await;
    let roots = relisted["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{relisted}");
    assert_eq!(roots[0]["sha256"], new_sha.as_str());
    assert_eq!(roots[0]["signing"], true);
}
