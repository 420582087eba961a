//! End to end with real Envoy: our CA signs, our agents fetch certificates with service-account
//! tokens and serve them over SDS on Unix sockets, a client Envoy originates mTLS to a server
//! Envoy that requires client certificates and checks SANs, and traffic flows. Peers from
//! another trust domain, or with another identity, are refused. With a TTL of a few seconds the
//! certificates rotate under a steady request loop that sees no failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_identity::agent::{self, AgentConfig};
use mesh_identity::ca::{CaConfig, CertificateAuthority};
use mesh_identity::sds::SdsServer;
use mesh_identity::spiffe::{SpiffeId, TrustDomain};
use mesh_test_support::identity::{Issuer, key_and_csr, serve_ca, td};
use mesh_test_support::{Proxy, ProxyKind, TempDir, eventually, free_port, upstream};

/// The SDS cluster and the two SDS secret references, as Istio's bootstrap has them.
fn sds_cluster(socket: &Path) -> String {
    format!(
        r#"
  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: sds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: "{}"}}}}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}"#,
        socket.display()
    )
}

fn tls_context(peer: &str) -> String {
    let sds = "{api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, resource_api_version: V3}";
    format!(
        r#"common_tls_context:
            tls_certificate_sds_secret_configs: [{{name: default, sds_config: {sds}}}]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: "{peer}"}}}}]
              validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {sds}}}"#
    )
}

const ADMIN: &str = "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";

/// The server side: TLS on `port` requiring a client certificate for `peer`, routing to `app`.
fn server_bootstrap(port: u16, app: u16, socket: &Path, peer: &str) -> String {
    format!(
        r#"node: {{id: server, cluster: server}}
static_resources:
  listeners:
  - name: inbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          {tls}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          route_config: {{virtual_hosts: [{{name: app, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: app}}}}]}}]}}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}}}]}}]
{sds}
{ADMIN}"#,
        tls = tls_context(peer),
        sds = sds_cluster(socket),
    )
}

/// The client side: plain HTTP on `port`, mTLS to the server Envoy on `server`, which must be
/// `peer`.
fn client_bootstrap(port: u16, server: u16, socket: &Path, peer: &str) -> String {
    format!(
        r#"node: {{id: client, cluster: client}}
static_resources:
  listeners:
  - name: outbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config: {{virtual_hosts: [{{name: server, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: server}}}}]}}]}}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
  clusters:
  - name: server
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: server
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {server}}}}}}}}}]}}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        {tls}
{sds}
{ADMIN}"#,
        tls = tls_context(peer).replace("\n            ", "\n          "),
        sds = sds_cluster(socket),
    )
}

/// An agent for `ns/sa` with its token file, serving SDS on `socket`.
fn start_agent(dir: &Path, ca: SocketAddr, issuer: &Issuer, sa: &str, socket: &Path) {
    let token = dir.join(format!("{sa}.token"));
    std::fs::write(&token, issuer.token("shop", sa, |_| {})).unwrap();
    let certs = agent::spawn(AgentConfig::new(format!("http://{ca}"), Some(token)));
    let socket = socket.to_path_buf();
    tokio::spawn(async move { SdsServer::new(certs).serve_unix(&socket).await });
}

fn curl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/test.sh installs it)")
}

/// Serial numbers of the certificates an Envoy holds now (its admin `/certs`).
async fn serials(envoy: &Proxy) -> Vec<String> {
    let certs: serde_json::Value =
        serde_json::from_str(&envoy.admin_get("/certs").await.unwrap_or_default())
            .unwrap_or_default();
    let mut out: Vec<String> = certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_get_certificates_over_sds_and_talk_mtls_through_rotation() {
    let dir = TempDir::new("envoy-sds");
    let issuer = Issuer::new("k1");
    // Six-second certificates, renewed at half-life: several rotations within the test.
    let config = CaConfig::new(td()).with_default_ttl(Duration::from_secs(6));
    let ca = Arc::new(CertificateAuthority::self_signed(&dir.0.join("ca"), config).unwrap());
    let ca_addr = serve_ca(ca.clone(), &issuer).await;
    let (client_sock, server_sock) = (dir.0.join("client.sock"), dir.0.join("server.sock"));
    start_agent(&dir.0, ca_addr, &issuer, "client", &client_sock);
    start_agent(&dir.0, ca_addr, &issuer, "server", &server_sock);
    let app = upstream::start("app").await;
    let (server_port, client_port) = (free_port(), free_port());
    let client_id = SpiffeId::istio(td(), "shop", "client").unwrap().to_string();
    let server_id = SpiffeId::istio(td(), "shop", "server").unwrap().to_string();
    let server = Proxy::start_with_bootstrap(
        ProxyKind::Envoy,
        &server_bootstrap(server_port, app.port(), &server_sock, &client_id),
    )
    .await;
    let client = Proxy::start_with_bootstrap(
        ProxyKind::Envoy,
        &client_bootstrap(client_port, server_port, &client_sock, &server_id),
    )
    .await;
    let through: SocketAddr = format!("127.0.0.1:{client_port}").parse().unwrap();
    let r = eventually(
        "mTLS between the Envoys",
        Duration::from_secs(30),
        async || {
            let r = upstream::get(through, "app", "/", &[]).await.ok()?;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(r.body, "app");

    // A certificate of the right trust domain and identity gets through (the control for the
    // refusals below)...
    let files = TempDir::new("envoy-sds-peers");
    let write_cert = |name: &str, ca: &CertificateAuthority, id: &SpiffeId| {
        let (key, req) = key_and_csr();
        let issued = ca.sign_csr(&req, id, None).unwrap();
        std::fs::write(files.0.join(format!("{name}.pem")), issued.chain.concat()).unwrap();
        std::fs::write(files.0.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        (
            files.0.join(format!("{name}.pem")).display().to_string(),
            files.0.join(format!("{name}.key")).display().to_string(),
        )
    };
    let url = format!("https://127.0.0.1:{server_port}/");
    let (cert, key) = write_cert(
        "good",
        &ca,
        &SpiffeId::istio(td(), "shop", "client").unwrap(),
    );
    let out = curl(&["-k", "--cert", &cert, "--key", &key, &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app");
    // ...a peer from another trust domain does not, nor another identity of this one, nor a
    // client without a certificate.
    let other_td = TrustDomain::new("other.example").unwrap();
    let other_dir = TempDir::new("envoy-sds-other-ca");
    let other_ca =
        CertificateAuthority::self_signed(&other_dir.0, CaConfig::new(other_td.clone())).unwrap();
    let (cert, key) = write_cert(
        "foreign",
        &other_ca,
        &SpiffeId::istio(other_td, "shop", "client").unwrap(),
    );
    assert!(
        !curl(&["-k", "--cert", &cert, "--key", &key, &url])
            .status
            .success()
    );
    let (cert, key) = write_cert(
        "intruder",
        &ca,
        &SpiffeId::istio(td(), "shop", "intruder").unwrap(),
    );
    assert!(
        !curl(&["-k", "--cert", &cert, "--key", &key, &url])
            .status
            .success()
    );
    assert!(!curl(&["-k", &url]).status.success());

    // Rotation under load: a bounded request loop (at most 20 s) until both Envoys have shown
    // two new certificates; every request must succeed.
    let (first_client, first_server) = (serials(&client).await, serials(&server).await);
    assert!(!first_client.is_empty() && !first_server.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut seen_client, mut seen_server) = (vec![first_client], vec![first_server]);
    let mut requests = 0;
    while Instant::now() < deadline && (seen_client.len() < 3 || seen_server.len() < 3) {
        let r = upstream::get(through, "app", "/", &[]).await.unwrap();
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "app"),
            "request {requests}"
        );
        requests += 1;
        for (envoy, seen) in [(&client, &mut seen_client), (&server, &mut seen_server)] {
            let now = serials(envoy).await;
            if !now.is_empty() && seen.last() != Some(&now) {
                seen.push(now);
            }
        }
    }
    assert!(
        seen_client.len() >= 3 && seen_server.len() >= 3,
        "certificates seen: client {seen_client:?}, server {seen_server:?}"
    );
    assert!(requests > 50, "{requests} requests");
    // The server counted the refused handshakes: the wrong SAN, the foreign root, no cert.
    let ssl = server
        .stats(&format!("listener.127.0.0.1_{server_port}.ssl."))
        .await;
    let stat = |s: &str| {
        ssl.get(&format!("listener.127.0.0.1_{server_port}.ssl.{s}"))
            .copied()
    };
    assert_eq!(stat("fail_verify_san"), Some(1), "{ssl:?}");
    assert_eq!(stat("fail_verify_error"), Some(1), "{ssl:?}");
    assert_eq!(stat("fail_verify_no_cert"), Some(1), "{ssl:?}");
}
