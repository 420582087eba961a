//! mTLS with SDS secrets, Envoy and mesh-sidecar side by side.
//!
//! A real SDS server (mesh-identity's `SdsServer`, as the node agent serves it, on Unix
//! sockets) hands out Istio's two secrets, `default` and `ROOTCA`: one socket for the
//! server-side proxies (`spiffe://cluster.local/ns/shop/sa/server`), one for the client-side
//! ones (`.../sa/client`). Certificates come from a test CA made with rcgen.
//!
//! Every selected proxy kind runs as a server (Istio's inbound shapes: a STRICT listener with
//! one `tls` chain, a PERMISSIVE one with `tls`+mesh ALPNs, plain HTTP and TCP chains, TLS and
//! HTTP inspectors with `filter_disabled` predicates; `DownstreamTlsContext` with SDS
//! certificate, combined validation with `ROOTCA` and the trust-domain prefix, client
//! certificates required, Istio's `tls_params`; XFCC `APPEND_FORWARD`) and as a client (Istio's
//! outbound clusters: `transport_socket_matches` selected by endpoint metadata
//! `envoy.transport_socket_match: {tlsMode: istio}`, SDS certificate, exact SAN, SNI, ALPN
//! `istio` / `istio, h2`). Each client talks to each server, so Envoy and mesh-sidecar also
//! talk to each other. Checked on every proxy, with the same numbers for both kinds:
//!
//! - nothing serves before the secrets arrive (warming; `initial_fetch_timeout: 0s`), and the
//!   secrets show as warming in `/config_dump`;
//! - mTLS works between every pair; the app sees the client's SPIFFE ID in XFCC, byte for byte
//!   the same whichever proxies carried the request;
//! - a plaintext client to the `tls`-only chain is refused (`no_filter_chain_match`), a
//!   client without a certificate (`ssl.fail_verify_no_cert`), from another CA
//!   (`ssl.fail_verify_error`) or with another trust domain (`ssl.fail_verify_san`) too;
//! - a wrong server SAN fails at the client (`cluster.NAME.ssl.fail_verify_san`,
//!   `upstream_cx_connect_fail`, 503), an endpoint without `tlsMode` goes out in plaintext;
//! - rotating `default` changes the certificate of the next handshake, and `/certs` and the
//!   `SecretsConfigDump` read the same on both kinds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::agent::WorkloadCert;
use mesh_identity::sds::SdsServer;
use mesh_test_support::upstream::{self, Upstream};
use mesh_test_support::{Proxy, ProxyKind, TempDir, eventually, free_port};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const SNI: &str = "outbound_.8080_._.server.shop.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(30);

// === Certificates ===

/// A CA for the test.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    root: String,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, cn);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let root = p.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::from_ca_cert_pem(&root, key).unwrap(),
            root,
        }
    }

    /// A workload certificate for `uri` (and a subject when given), as the agent holds it.
    fn leaf(&self, uri: &str, subject: &[(rcgen::DnType, &str)]) -> WorkloadCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in subject {
            p.distinguished_name.push(t.clone(), *v);
        }
        p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        WorkloadCert {
            chain: vec![cert.pem()],
            key: key.serialize_pem(),
            roots: vec![self.root.clone()],
            not_after: SystemTime::now() + Duration::from_secs(86_400),
            issued_at: SystemTime::now(),
        }
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A certificate's serial as Envoy prints it (lower-case hex, no leading zero bytes).
fn serial(cert: &CertificateDer<'_>) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    let raw = c.raw_serial();
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw[start..].iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(cert: &CertificateDer<'_>) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Serves SDS on `socket` from what `certs` holds (nothing until the test publishes).
fn start_sds(socket: &Path) -> watch::Sender<Option<Arc<WorkloadCert>>> {
    let (tx, rx) = watch::channel(None);
    let socket = socket.to_path_buf();
    tokio::spawn(async move { SdsServer::new(rx).serve_unix(&socket).await });
    tx
}

// === Bootstraps ===

/// Istio's SDS config source (`sds-grpc`, wait for ever).
const SDS: &str = "{api_config_source: {api_type: GRPC, set_node_on_first_message_only: true, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, initial_fetch_timeout: 0s, resource_api_version: V3}";

const ADMIN: &str = "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";

/// Istio's bootstrap cluster for the agent's SDS socket.
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

/// Istio's inbound `DownstreamTlsContext` (§1.6 of the security reference).
fn downstream_tls() -> String {
    format!(
        r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3, cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, AES256-GCM-SHA384, AES128-GCM-SHA256]}}
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs: [{{name: default, sds_config: {SDS}}}]
            combined_validation_context:
              default_validation_context: {{match_subject_alt_names: [{{prefix: "spiffe://cluster.local/"}}]}}
              validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {SDS}}}"#
    )
}

/// An inbound HCM (`stat_prefix`) to the app, with Istio's XFCC settings.
fn inbound_hcm(stat_prefix: &str) -> String {
    format!(
        r#"
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          codec_type: AUTO
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: {{subject: true, uri: true, dns: true}}
          route_config: {{name: inbound, virtual_hosts: [{{name: app, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: app}}}}]}}]}}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]"#
    )
}

const TLS_INSPECTOR: &str = r#"{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}"#;
const HTTP_INSPECTOR: &str = r#"{"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}"#;

/// The server side: a STRICT listener on `strict` (one `tls` chain) and a PERMISSIVE one on
/// `permissive` (mesh TLS to the HCM, plain HTTP/1.1 to the HCM, other plaintext to a TCP
/// proxy). On `permissive` the TLS inspector is "enabled only on this port" (a `not_match`),
/// the HTTP inspector "disabled on these ports" (an `or_match` naming it), so plain HTTP is
/// not sniffed there and lands on the TCP chain.
fn server_bootstrap(strict: u16, permissive: u16, app: u16, socket: &Path) -> String {
    format!(
        r#"node: {{id: server, cluster: server}}
static_resources:
  listeners:
  - name: strict
    address: {{socket_address: {{address: 127.0.0.1, port_value: {strict}}}}}
    listener_filters:
    - {{name: envoy.filters.listener.tls_inspector, typed_config: {TLS_INSPECTOR}}}
    filter_chains:
    - name: strict-tls
      filter_chain_match: {{transport_protocol: tls}}{tls}{hcm_strict}
  - name: permissive
    address: {{socket_address: {{address: 127.0.0.1, port_value: {permissive}}}}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      filter_disabled: {{not_match: {{destination_port_range: {{start: {permissive}, end: {permissive_end}}}}}}}
      typed_config: {TLS_INSPECTOR}
    - name: envoy.filters.listener.http_inspector
      filter_disabled: {{or_match: {{rules: [{{destination_port_range: {{start: 1, end: 2}}}}, {{destination_port_range: {{start: {permissive}, end: {permissive_end}}}}}]}}}}
      typed_config: {HTTP_INSPECTOR}
    filter_chains:
    - name: permissive-tls
      filter_chain_match: {{transport_protocol: tls, application_protocols: [istio, istio-peer-exchange, istio-http/1.0, istio-http/1.1, istio-h2]}}{tls}{hcm_perm}
    - name: permissive-http
      filter_chain_match: {{transport_protocol: raw_buffer, application_protocols: [http/1.1, h2c]}}{hcm_plain}
    - name: permissive-tcp
      filter_chain_match: {{transport_protocol: raw_buffer}}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: permissive-tcp, cluster: app}}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}}}]}}]
{sds}
{ADMIN}"#,
        permissive_end = permissive + 1,
        tls = downstream_tls(),
        hcm_strict = inbound_hcm("strict"),
        hcm_perm = inbound_hcm("permissive"),
        hcm_plain = inbound_hcm("permissive-plain"),
        sds = sds_cluster(socket),
    )
}

/// An outbound cluster to `port` with Istio's auto-mTLS `transport_socket_matches`, the
/// endpoint labelled `tlsMode: istio` unless `plaintext`, expecting the server to be `san`.
fn outbound_cluster(name: &str, port: u16, san: &str, h2: bool, plaintext: bool) -> String {
    let metadata = if plaintext {
        String::new()
    } else {
        ", metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}".into()
    };
    let (alpn, protocol) = if h2 {
        (
            "[istio, h2]",
            r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}"#,
        )
    } else {
        ("[istio]", "")
    };
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}{metadata}}}]}}]{protocol}
    transport_socket_matches:
    - name: tlsMode-istio
      match: {{tlsMode: istio}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {SNI}
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}
            alpn_protocols: {alpn}
            tls_certificate_sds_secret_configs: [{{name: default, sds_config: {SDS}}}]
            combined_validation_context:
              default_validation_context: {{match_subject_alt_names: [{{exact: "{san}"}}]}}
              validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {SDS}}}
    - name: tlsMode-disabled
      match: {{}}
      transport_socket: {{name: envoy.transport_sockets.raw_buffer, typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}"#
    )
}

/// The clusters a client has to one server kind, by the Host that routes to each.
fn outbound_clusters(server: &Server) -> Vec<(String, String)> {
    let k = server.kind.name();
    vec![
        (
            format!("to-{k}"),
            outbound_cluster(&format!("to-{k}"), server.strict, SERVER_ID, false, false),
        ),
        (
            format!("h2-{k}"),
            outbound_cluster(&format!("h2-{k}"), server.strict, SERVER_ID, true, false),
        ),
        (
            format!("perm-{k}"),
            outbound_cluster(
                &format!("perm-{k}"),
                server.permissive,
                SERVER_ID,
                false,
                false,
            ),
        ),
        (
            format!("plain-{k}"),
            outbound_cluster(&format!("plain-{k}"), server.strict, SERVER_ID, false, true),
        ),
        (
            format!("wrongsan-{k}"),
            outbound_cluster(
                &format!("wrongsan-{k}"),
                server.strict,
                "spiffe://cluster.local/ns/shop/sa/nobody",
                false,
                false,
            ),
        ),
    ]
}

/// The client side: plain HTTP on `port`, routed by Host to a cluster of the same name.
fn client_bootstrap(port: u16, servers: &[Server], socket: &Path) -> String {
    let clusters: Vec<(String, String)> = servers.iter().flat_map(outbound_clusters).collect();
    let vhosts: Vec<String> = clusters
        .iter()
        .map(|(n, _)| {
            format!(
                "{{name: {n}, domains: [{n}], routes: [{{match: {{prefix: /}}, route: {{cluster: {n}}}}}]}}"
            )
        })
        .collect();
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
          route_config: {{name: outbound, virtual_hosts: [{vhosts}]}}
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
  clusters:{clusters}
{sds}
{ADMIN}"#,
        vhosts = vhosts.join(", "),
        clusters = clusters.into_iter().map(|(_, c)| c).collect::<String>(),
        sds = sds_cluster(socket),
    )
}

// === Proxies ===

struct Server {
    kind: ProxyKind,
    strict: u16,
    permissive: u16,
    proxy: Option<Proxy>,
}

impl Server {
    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().unwrap()
    }

    fn addr(&self, port: u16) -> SocketAddr {
        format!("127.0.0.1:{port}").parse().unwrap()
    }

    fn listener_stat(&self, port: u16, s: &str) -> String {
        format!("listener.127.0.0.1_{port}.{s}")
    }
}

struct Client {
    kind: ProxyKind,
    port: u16,
    proxy: Proxy,
}

impl Client {
    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

async fn stat(p: &Proxy, name: &str) -> u64 {
    p.stat(name).await.unwrap_or(0)
}

/// Waits until `name` on `p` has grown by `delta` since `before`, and returns the new value
/// (failing if it grew by more).
async fn grew(p: &Proxy, name: &str, before: u64, delta: u64) -> u64 {
    let now = eventually(&format!("{} {name} +{delta}", p.kind), WAIT, async || {
        let v = stat(p, name).await;
        (v >= before + delta).then_some(v)
    })
    .await;
    assert_eq!(now, before + delta, "{} {name}", p.kind);
    now
}

async fn config_dump(p: &Proxy) -> serde_json::Value {
    serde_json::from_str(&p.admin_get("/config_dump").await.unwrap()).unwrap()
}

/// The `SecretsConfigDump` section, its `last_updated`s blanked.
async fn secrets_dump(p: &Proxy) -> serde_json::Value {
    let dump = config_dump(p).await;
    let mut s = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump")
        .cloned()
        .unwrap_or_default();
    for list in ["dynamic_active_secrets", "dynamic_warming_secrets"] {
        if let Some(a) = s[list].as_array_mut() {
            for e in a {
                e["last_updated"] = "".into();
            }
        }
    }
    s
}

/// `/certs`, its contexts in a stable order.
async fn certs(p: &Proxy) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&p.admin_get("/certs").await.unwrap()).unwrap();
    let mut list = v["certificates"].as_array().cloned().unwrap_or_default();
    list.sort_by_key(|c| c.to_string());
    list
}

fn leaf_serials(certs: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = certs
        .iter()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v.dedup();
    v
}

// === A TLS client of our own ===

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a fresh TLS connection (no session resumption) saw: the server's leaf and the HTTP
/// answer to one GET (empty when the server closed).
struct Probe {
    served: Option<CertificateDer<'static>>,
    response: String,
}

async fn probe(addr: SocketAddr, cert: Option<&WorkloadCert>, alpn: &[&str]) -> Probe {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = match cert {
        Some(c) => b
            .with_client_auth_cert(
                c.chain.iter().map(|p| der(p)).collect(),
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(SNI).unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    else {
        return Probe {
            served: None,
            response: String::new(),
        };
    };
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let _ = tls
        .write_all(b"GET /probe HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    Probe {
        served,
        response: String::from_utf8_lossy(&buf).into_owned(),
    }
}

/// A plaintext HTTP request on a raw connection: what came back before the server closed.
async fn plaintext(addr: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp
        .write_all(b"GET /plain HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The XFCC header the app saw on the request for `path`.
fn xfcc_of(app: &Upstream, path: &str) -> Option<String> {
    let paths = app.seen.paths.lock().unwrap();
    let headers = app.seen.headers.lock().unwrap();
    let i = paths.iter().rposition(|p| p == path)?;
    headers[i].get("x-forwarded-client-cert").cloned()
}

// === The scenario ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_over_sds_side_by_side() {
    let kinds = ProxyKind::selected();
    let dir = TempDir::new("proxy-sds");
    let ca = Ca::new("mesh test root");
    let server_cert = ca.leaf(SERVER_ID, &[]);
    let client_cert = ca.leaf(
        CLIENT_ID,
        &[
            (rcgen::DnType::CommonName, "client"),
            (rcgen::DnType::OrganizationName, "mesh"),
        ],
    );
    let (server_sock, client_sock) = (dir.0.join("server.sock"), dir.0.join("client.sock"));
    let server_sds = start_sds(&server_sock);
    let client_sds = start_sds(&client_sock);
    let app = upstream::start("app").await;

    // Every proxy starts before any certificate exists.
    let mut servers: Vec<Server> = kinds
        .iter()
        .map(|k| Server {
            kind: *k,
            strict: free_port(),
            permissive: free_port(),
            proxy: None,
        })
        .collect();
    for s in &mut servers {
        s.proxy = Some(
            Proxy::start_with_bootstrap(
                s.kind,
                &server_bootstrap(s.strict, s.permissive, app.port(), &server_sock),
            )
            .await,
        );
    }
    let mut clients = Vec::new();
    for k in &kinds {
        let port = free_port();
        let proxy =
            Proxy::start_with_bootstrap(*k, &client_bootstrap(port, &servers, &client_sock)).await;
        clients.push(Client {
            kind: *k,
            port,
            proxy,
        });
    }
    let all: Vec<&Proxy> = servers
        .iter()
        .map(Server::proxy)
        .chain(clients.iter().map(|c| &c.proxy))
        .collect();

    // Warming: the SDS streams are open, but nothing has arrived; nothing is LIVE and the
    // secrets are listed as warming.
    for p in &all {
        let warming = eventually(
            &format!("{} lists its secrets as warming", p.kind),
            WAIT,
            async || {
                let s = secrets_dump(p).await;
                let names: Vec<String> = s["dynamic_warming_secrets"]
                    .as_array()?
                    .iter()
                    .filter_map(|e| e["name"].as_str().map(str::to_string))
                    .collect();
                (names.len() == 2).then_some(names)
            },
        )
        .await;
        assert_eq!(warming, ["default", "ROOTCA"], "{}", p.kind);
        assert_eq!(p.admin_get("/ready").await, None, "{} is not LIVE", p.kind);
    }
    let warming: Vec<serde_json::Value> = {
        let mut v = Vec::new();
        for p in &all {
            v.push(secrets_dump(p).await);
        }
        v
    };
    for (p, w) in all.iter().zip(&warming) {
        assert_eq!(
            w, &warming[0],
            "{} warming secrets read as {}'s",
            p.kind, all[0].kind
        );
    }

    server_sds.send_replace(Some(Arc::new(server_cert.clone())));
    client_sds.send_replace(Some(Arc::new(client_cert.clone())));
    for p in &all {
        p.wait_live().await;
    }

    // mTLS between every client and every server, HTTP/1.1 and HTTP/2; the app sees the
    // client's identity in XFCC, the same whichever proxies carried the request.
    let client_leaf = der(&client_cert.chain[0]);
    let want_xfcc = format!(
        "By={SERVER_ID};Hash={};Subject=\"O=mesh,CN=client\";URI={CLIENT_ID}",
        sha256_hex(&client_leaf)
    );
    for c in &clients {
        for s in &servers {
            for cluster in [format!("to-{}", s.kind), format!("h2-{}", s.kind)] {
                let path = format!("/{}/{cluster}", c.kind);
                let r = upstream::get(c.addr(), &cluster, &path, &[]).await.unwrap();
                assert_eq!((r.status, r.body.as_str()), (200, "app"), "{path}");
                assert_eq!(
                    xfcc_of(&app, &path).as_deref(),
                    Some(want_xfcc.as_str()),
                    "{path}"
                );
            }
            // PERMISSIVE: the mesh ALPN `istio` picks the TLS chain.
            let path = format!("/{}/perm-{}", c.kind, s.kind);
            let r = upstream::get(c.addr(), &format!("perm-{}", s.kind), &path, &[])
                .await
                .unwrap();
            assert_eq!((r.status, r.body.as_str()), (200, "app"), "{path}");
            assert_eq!(
                xfcc_of(&app, &path).as_deref(),
                Some(want_xfcc.as_str()),
                "{path}"
            );
        }
    }
    for c in &clients {
        for s in &servers {
            for cluster in ["to", "h2", "perm"] {
                let name = format!("cluster.{cluster}-{}.ssl.handshake", s.kind);
                assert_eq!(stat(&c.proxy, &name).await, 1, "{} {name}", c.kind);
            }
        }
    }
    let n = clients.len() as u64;
    for s in &servers {
        let p = s.proxy();
        // One connection per client for HTTP/1.1 and one for HTTP/2 on the STRICT port.
        assert_eq!(
            stat(p, &s.listener_stat(s.strict, "ssl.handshake")).await,
            2 * n,
            "{}",
            s.kind
        );
        assert_eq!(
            stat(p, &s.listener_stat(s.permissive, "ssl.handshake")).await,
            n,
            "{}",
            s.kind
        );
        assert_eq!(
            stat(p, "http.strict.downstream_cx_http2_total").await,
            n,
            "{}",
            s.kind
        );
        assert_eq!(
            stat(p, &s.listener_stat(s.strict, "ssl.versions.TLSv1.3")).await,
            2 * n,
            "{}",
            s.kind
        );
        assert_eq!(
            stat(
                p,
                &s.listener_stat(s.strict, "ssl.ciphers.TLS_AES_128_GCM_SHA256")
            )
            .await,
            2 * n,
            "{}",
            s.kind
        );
    }

    // A wrong server SAN fails at the client; an endpoint without `tlsMode` goes out in
    // plaintext and the STRICT chain refuses it.
    for c in &clients {
        for s in &servers {
            let cluster = format!("wrongsan-{}", s.kind);
            let r = upstream::get(c.addr(), &cluster, "/wrong-san", &[])
                .await
                .unwrap();
            assert_eq!(r.status, 503, "{} -> {cluster}", c.kind);
            grew(
                &c.proxy,
                &format!("cluster.{cluster}.ssl.fail_verify_san"),
                0,
                1,
            )
            .await;
            assert!(
                stat(
                    &c.proxy,
                    &format!("cluster.{cluster}.upstream_cx_connect_fail")
                )
                .await
                    >= 1,
                "{} {cluster}",
                c.kind
            );
            let before = stat(
                s.proxy(),
                &s.listener_stat(s.strict, "no_filter_chain_match"),
            )
            .await;
            let cluster = format!("plain-{}", s.kind);
            let r = upstream::get(c.addr(), &cluster, "/plain", &[])
                .await
                .unwrap();
            assert_eq!(r.status, 503, "{} -> {cluster}", c.kind);
            grew(
                s.proxy(),
                &s.listener_stat(s.strict, "no_filter_chain_match"),
                before,
                1,
            )
            .await;
            assert_eq!(
                stat(&c.proxy, &format!("cluster.{cluster}.ssl.handshake")).await,
                0,
                "{} {cluster} is plaintext",
                c.kind
            );
        }
    }

    // Peers the servers refuse, and one they accept; every server counts the same.
    let other_ca = Ca::new("another root");
    let foreign = other_ca.leaf(CLIENT_ID, &[]);
    let other_td = ca.leaf("spiffe://other.example/ns/shop/sa/client", &[]);
    for s in &servers {
        let p = s.proxy();
        let strict = s.addr(s.strict);
        assert_eq!(
            plaintext(strict).await,
            "",
            "{}: plaintext to a tls-only chain",
            s.kind
        );
        grew(p, &s.listener_stat(s.strict, "no_filter_chain_match"), n, 1).await;
        let refused = probe(strict, None, &["istio"]).await;
        assert!(!refused.response.contains("200 OK"), "{}", s.kind);
        grew(
            p,
            &s.listener_stat(s.strict, "ssl.fail_verify_no_cert"),
            0,
            1,
        )
        .await;
        let refused = probe(strict, Some(&foreign), &["istio"]).await;
        assert!(!refused.response.contains("200 OK"), "{}", s.kind);
        grew(p, &s.listener_stat(s.strict, "ssl.fail_verify_error"), 0, 1).await;
        let refused = probe(strict, Some(&other_td), &["istio"]).await;
        assert!(!refused.response.contains("200 OK"), "{}", s.kind);
        grew(p, &s.listener_stat(s.strict, "ssl.fail_verify_san"), 0, 1).await;
        let ok = probe(strict, Some(&client_cert), &["istio-http/1.1"]).await;
        assert!(
            ok.response.starts_with("HTTP/1.1 200 OK"),
            "{}: {}",
            s.kind,
            ok.response
        );
        assert_eq!(
            ok.served.as_ref().map(serial),
            Some(serial(&der(&server_cert.chain[0]))),
            "{}",
            s.kind
        );
        // The clients that refused the server's SAN aborted their handshakes.
        assert_eq!(
            stat(p, &s.listener_stat(s.strict, "ssl.connection_error")).await,
            n,
            "{}",
            s.kind
        );
        // PERMISSIVE: a TLS client without a mesh ALPN matches no chain; plain HTTP is not
        // sniffed (the HTTP inspector is disabled on this port) and goes through the TCP proxy.
        let before = stat(p, &s.listener_stat(s.permissive, "no_filter_chain_match")).await;
        let no_alpn = probe(s.addr(s.permissive), Some(&client_cert), &[]).await;
        assert!(no_alpn.served.is_none(), "{}", s.kind);
        grew(
            p,
            &s.listener_stat(s.permissive, "no_filter_chain_match"),
            before,
            1,
        )
        .await;
        let plain = plaintext(s.addr(s.permissive)).await;
        assert!(plain.starts_with("HTTP/1.1 200 OK"), "{}: {plain}", s.kind);
        assert_eq!(
            stat(p, "tcp.permissive-tcp.downstream_cx_total").await,
            1,
            "{}",
            s.kind
        );
        assert_eq!(
            stat(p, "http.permissive-plain.downstream_rq_total").await,
            0,
            "{}",
            s.kind
        );
    }

    // The secrets and certificates read the same on both kinds.
    let server_secrets = secrets_dump(servers[0].proxy()).await;
    let names: Vec<&str> = server_secrets["dynamic_active_secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["default", "ROOTCA"]);
    let default = &server_secrets["dynamic_active_secrets"][0]["secret"];
    assert_eq!(
        default["tls_certificate"]["private_key"],
        // Envoy's redaction keeps the kind of the value: bytes of `[redacted]`.
        serde_json::json!({"inline_bytes": "W3JlZGFjdGVkXQ=="})
    );
    for s in &servers[1..] {
        assert_eq!(secrets_dump(s.proxy()).await, server_secrets, "{}", s.kind);
    }
    let client_secrets = secrets_dump(&clients[0].proxy).await;
    for c in &clients[1..] {
        assert_eq!(secrets_dump(&c.proxy).await, client_secrets, "{}", c.kind);
    }
    let server_certs = certs(servers[0].proxy()).await;
    assert_eq!(
        leaf_serials(&server_certs),
        [serial(&der(&server_cert.chain[0]))]
    );
    for s in &servers[1..] {
        assert_eq!(certs(s.proxy()).await, server_certs, "{} /certs", s.kind);
    }
    let client_certs = certs(&clients[0].proxy).await;
    for c in &clients[1..] {
        assert_eq!(certs(&c.proxy).await, client_certs, "{} /certs", c.kind);
    }

    // Rotation: a new `default` for the servers is presented by the next handshake, with no
    // listener rebuilt; requests keep flowing.
    let rotated = ca.leaf(SERVER_ID, &[]);
    let rotated_serial = serial(&der(&rotated.chain[0]));
    server_sds.send_replace(Some(Arc::new(rotated)));
    for s in &servers {
        eventually(
            &format!("{} presents the rotated certificate", s.kind),
            WAIT,
            async || {
                let p = probe(s.addr(s.strict), Some(&client_cert), &["istio"]).await;
                (p.served.as_ref().map(serial) == Some(rotated_serial.clone())
                    && p.response.starts_with("HTTP/1.1 200 OK"))
                .then_some(())
            },
        )
        .await;
        assert_eq!(
            leaf_serials(&certs(s.proxy()).await),
            std::slice::from_ref(&rotated_serial)
        );
        assert_eq!(
            stat(s.proxy(), "listener_manager.listener_modified").await,
            0
        );
    }
    for c in &clients {
        for s in &servers {
            let r = upstream::get(c.addr(), &format!("to-{}", s.kind), "/after", &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{} -> {} after rotation", c.kind, s.kind);
        }
    }
    // And for the clients: their next handshakes present the new client certificate.
    let rotated_client = ca.leaf(CLIENT_ID, &[]);
    let rotated_client_serial = serial(&der(&rotated_client.chain[0]));
    client_sds.send_replace(Some(Arc::new(rotated_client)));
    for c in &clients {
        eventually(
            &format!("{} holds the rotated client certificate", c.kind),
            WAIT,
            async || {
                (leaf_serials(&certs(&c.proxy).await) == [rotated_client_serial.clone()])
                    .then_some(())
            },
        )
        .await;
    }
    let server_secrets = secrets_dump(servers[0].proxy()).await;
    for s in &servers[1..] {
        assert_eq!(secrets_dump(s.proxy()).await, server_secrets, "{}", s.kind);
    }
    for p in &all {
        let sds: BTreeMap<String, u64> = p.stats("sds.").await;
        assert_eq!(
            sds.get("sds.default.update_rejected").copied().unwrap_or(0),
            0,
            "{}: {sds:?}",
            p.kind
        );
        assert_eq!(p.rejections().await, 0, "{}", p.kind);
    }
}
