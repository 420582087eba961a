//! The JWKS resolver against real servers, and its documents in a real Envoy.
//!
//! - Resolver: documents over HTTP and HTTPS (a test root as the extra CA; without it the
//!   handshake fails), OpenID discovery, the last good document kept through failed refreshes
//!   (an error status, a body that is not a JWKS), a source never fetched left out, the size
//!   limit and the deadline.
//! - Envoy (a gateway with a RequestAuthentication whose `jwksUri` is a test HTTPS server, its
//!   config from a `ViewCache` fed by `JwksResolver::run`): a token signed by the served key
//!   gets through, one signed by another key gets 401; after the server's key is rotated the
//!   new key's tokens get through once the resolver has refreshed; with the server down from
//!   the start every token gets 401 (fail closed), token-less requests pass, and Envoy rejects
//!   nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_test_support::identity::{ISSUER, Issuer};
use mesh_test_support::{Api, Proxy, ProxyKind, eventually, free_port, upstream};
use mesh_xds::jwks::{JwksConfig, JwksResolver, JwksSource};
use mesh_xds::server::{AdsServer, ViewCache};
use tokio::time::Instant;

// === a JWKS server ===

/// What the server answers on a path: a status and a body, or nothing at all (it holds the
/// connection open).
#[derive(Clone)]
enum Reply {
    Answer(u16, String),
    Stall,
}

/// An HTTP(S) server on loopback answering from a table that tests change while it runs.
struct JwksServer {
    addr: SocketAddr,
    table: Arc<Mutex<BTreeMap<String, Reply>>>,
    /// The root that signed its certificate (PEM), when it is HTTPS.
    root: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(tls: bool) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let table: Arc<Mutex<BTreeMap<String, Reply>>> = Arc::default();
        let (acceptor, root) = if tls {
            let (config, root) = server_tls();
            (Some(tokio_rustls::TlsAcceptor::from(config)), Some(root))
        } else {
            (None, None)
        };
        let served = table.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (table, acceptor) = (served.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let reply = table
                            .lock()
                            .unwrap()
                            .get(req.uri().path())
                            .cloned()
                            .unwrap_or(Reply::Answer(404, "no such path".into()));
                        async move {
                            let (status, body) = match reply {
                                Reply::Answer(s, b) => (s, b),
                                Reply::Stall => std::future::pending().await,
                            };
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let io = hyper_util::rt::TokioIo::new(tls);
                                let _ = http.serve_connection(io, svc).await;
                            }
                        }
                        None => {
                            let io = hyper_util::rt::TokioIo::new(tcp);
                            let _ = http.serve_connection(io, svc).await;
                        }
                    }
                });
            }
        });
        JwksServer {
            addr,
            table,
            root,
            task,
        }
    }

    fn set(&self, path: &str, reply: Reply) {
        self.table.lock().unwrap().insert(path.into(), reply);
    }

    /// The URL of `path` (HTTPS under the certificate's name `localhost`).
    fn url(&self, path: &str) -> String {
        match self.root {
            Some(_) => format!("https://localhost:{}{path}", self.addr.port()),
            None => format!("http://{}{path}", self.addr),
        }
    }
}

/// A server config with a certificate for `localhost` from a fresh test root, and the root.
fn server_tls() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "mesh jwks test root");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (Arc::new(config), ca_cert.pem())
}

// === the resolver ===

fn users() -> std::collections::BTreeSet<String> {
    ["RequestAuthentication shop/jwt jwtRules[0].jwksUri".to_string()].into()
}

/// A resolver trusting `root` (no platform roots: the tests must not depend on them).
fn resolver(root: Option<&str>, edit: impl FnOnce(JwksConfig) -> JwksConfig) -> JwksResolver {
    let mut c = JwksConfig::default().with_native_roots(false);
    if let Some(r) = root {
        c = c.with_extra_roots_pem(r);
    }
    JwksResolver::new(edit(c)).unwrap()
}

/// Tracks one source and fetches it now; returns the documents.
async fn fetch_once(r: &mut JwksResolver, source: &JwksSource) -> BTreeMap<String, String> {
    let now = Instant::now();
    r.track([(source.clone(), users())].into(), now);
    r.refresh_due(now).await;
    r.documents()
}

/// Makes every tracked source due and refreshes; returns whether the documents changed.
async fn refresh_all(r: &mut JwksResolver) -> bool {
    let later = Instant::now() + r.config().max_retry_interval + r.config().refresh_interval;
    r.refresh_due(later).await
}

#[tokio::test]
async fn documents_over_http_survive_failed_refreshes() {
    let server = JwksServer::start(false).await;
    let k1 = Issuer::new("k1").jwks;
    server.set("/keys", Reply::Answer(200, k1.clone()));
    let uri = server.url("/keys");
    let source = JwksSource::Uri(uri.clone());
    let mut r = resolver(None, |c| c);
    assert_eq!(
        fetch_once(&mut r, &source).await,
        [(uri.clone(), k1.clone())].into()
    );
    // An error status, then a body that is not a JWKS: the last good document stays.
    server.set("/keys", Reply::Answer(503, "overloaded".into()));
    assert!(!refresh_all(&mut r).await);
    assert_eq!(r.documents()[&uri], k1);
    server.set(
        "/keys",
        Reply::Answer(200, "<html>maintenance</html>".into()),
    );
    assert!(!refresh_all(&mut r).await);
    assert_eq!(r.documents()[&uri], k1);
    // A new key replaces it.
    let k2 = Issuer::new("k2").jwks;
    server.set("/keys", Reply::Answer(200, k2.clone()));
    assert!(refresh_all(&mut r).await);
    assert_eq!(r.documents()[&uri], k2);
    // The same keys again: no change.
    assert!(!refresh_all(&mut r).await);
}

#[tokio::test]
async fn a_source_never_fetched_has_no_document() {
    let nothing = format!("http://127.0.0.1:{}/keys", free_port());
    let mut r = resolver(None, |c| c);
    let now = Instant::now();
    r.track([(JwksSource::Uri(nothing), users())].into(), now);
    assert!(!r.refresh_due(now).await);
    assert!(r.documents().is_empty());
    // The next attempt waits for the retry interval.
    assert!(r.next_due().unwrap() - now >= r.config().retry_interval);
}

#[tokio::test]
async fn https_needs_the_servers_root() {
    let server = JwksServer::start(true).await;
    let jwks = Issuer::new("k1").jwks;
    server.set("/keys", Reply::Answer(200, jwks.clone()));
    let source = JwksSource::Uri(server.url("/keys"));
    let mut trusting = resolver(server.root.as_deref(), |c| c);
    assert_eq!(
        fetch_once(&mut trusting, &source).await,
        [(server.url("/keys"), jwks)].into()
    );
    let mut stranger = resolver(None, |c| c);
    assert!(fetch_once(&mut stranger, &source).await.is_empty());
}

#[tokio::test]
async fn issuers_without_a_jwks_uri_are_discovered() {
    let server = JwksServer::start(true).await;
    let issuer = server.url("/tenant");
    let jwks = Issuer::new("k1").jwks;
    server.set(
        "/tenant/.well-known/openid-configuration",
        Reply::Answer(
            200,
            serde_json::json!({"issuer": issuer, "jwks_uri": server.url("/tenant/certs")})
                .to_string(),
        ),
    );
    server.set("/tenant/certs", Reply::Answer(200, jwks.clone()));
    let source = JwksSource::Discovery {
        issuer: issuer.clone(),
    };
    let mut r = resolver(server.root.as_deref(), |c| c);
    let docs = fetch_once(&mut r, &source).await;
    assert_eq!(
        docs,
        [(format!("{issuer}/.well-known/openid-configuration"), jwks)].into()
    );
}

#[tokio::test]
async fn large_and_slow_documents_are_refused() {
    let server = JwksServer::start(false).await;
    let big = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(4096));
    server.set("/big", Reply::Answer(200, big));
    server.set("/slow", Reply::Stall);
    let mut r = resolver(None, |c| {
        c.with_max_document_size(1024)
            .with_timeout(Duration::from_millis(300))
    });
    assert!(
        fetch_once(&mut r, &JwksSource::Uri(server.url("/big")))
            .await
            .is_empty()
    );
    let started = std::time::Instant::now();
    assert!(
        fetch_once(&mut r, &JwksSource::Uri(server.url("/slow")))
            .await
            .is_empty()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline ends the fetch"
    );
}

// === with Envoy ===

/// A gateway on `gw_port` routing `app.example.com` to `app`, with a RequestAuthentication
/// whose keys are at `jwks_uri`.
fn mesh(gw_port: u16, app: u16, jwks_uri: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: app, namespace: shop}}
spec:
  hosts: [app.shop.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {app}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: ["shop/app.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: shop}}
spec:
  hosts: [app.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: app.shop.svc.cluster.local}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: shop}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: {jwks_uri}
"#
    )
}

const GATEWAY: &str = r#"{id: "router~127.0.0.1~gw.shop~shop.svc.cluster.local", cluster: gw, metadata: {NAMESPACE: shop, LABELS: {istio: ingressgateway}}}"#;

/// A control plane as `mesh-control-plane` runs one: the store, a view cache pushed on
/// changes, ADS on loopback, and the JWKS resolver feeding the cache.
struct Rig {
    _app: upstream::Upstream,
    gateway: SocketAddr,
    envoy: Proxy,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Rig {
    async fn start(jwks_uri: &str, config: JwksConfig) -> Rig {
        let app = upstream::start("app").await;
        let gw_port = free_port();
        let store = Arc::new(ConfigStore::new());
        let report = store.apply_all(parse_str(&mesh(gw_port, app.port(), jwks_uri), "m.yaml"));
        assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
        let cache = ViewCache::new(store.clone(), MeshConfig::default());
        let mut tasks = vec![tokio::spawn(
            cache
                .clone()
                .run_debounced(store.subscribe(), Default::default()),
        )];
        tasks.push(tokio::spawn(
            JwksResolver::new(config).unwrap().run(store, cache.clone()),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let xds = listener.local_addr().unwrap();
        let server = AdsServer::new(cache);
        tasks.push(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(server.into_service())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        }));
        let envoy = Proxy::start(ProxyKind::Envoy, xds, Api::Sotw, GATEWAY).await;
        let gateway: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
        let rig = Rig {
            _app: app,
            gateway,
            envoy,
            _tasks: tasks,
        };
        eventually("the gateway routes", Duration::from_secs(30), async || {
            (rig.call(None).await? == 200).then_some(())
        })
        .await;
        rig
    }

    async fn call(&self, token: Option<&str>) -> Option<u16> {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("authorization", b))
            .into_iter()
            .collect();
        upstream::request(self.gateway, "GET", "app.example.com", "/", &headers)
            .await
            .ok()
            .map(|r| r.status)
    }

    /// Waits until a request with `token` gets `want`.
    async fn wait_for(&self, what: &str, token: &str, want: u16) {
        eventually(what, Duration::from_secs(30), async || {
            (self.call(Some(token)).await? == want).then_some(())
        })
        .await;
    }
}

fn token(issuer: &Issuer) -> String {
    issuer.token("shop", "client", |_| {})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_verifies_tokens_with_keys_fetched_over_https_and_follows_rotation() {
    let server = JwksServer::start(true).await;
    let (k1, k2) = (Issuer::new("k1"), Issuer::new("k2"));
    server.set("/keys", Reply::Answer(200, k1.jwks.clone()));
    let config = JwksConfig::default()
        .with_native_roots(false)
        .with_extra_roots_pem(server.root.clone().unwrap())
        .with_refresh_interval(Duration::from_millis(500));
    let rig = Rig::start(&server.url("/keys"), config).await;
    rig.wait_for("k1's token gets through", &token(&k1), 200)
        .await;
    assert_eq!(rig.call(Some(&token(&k2))).await, Some(401), "another key");
    assert_eq!(rig.call(None).await, Some(200), "no token");
    // Rotation: the server now serves k2 only.
    server.set("/keys", Reply::Answer(200, k2.jwks.clone()));
    rig.wait_for("k2's token after the refresh", &token(&k2), 200)
        .await;
    assert_eq!(rig.call(Some(&token(&k1))).await, Some(401), "the old key");
    // The server fails: the last keys stay in use.
    server.set("/keys", Reply::Answer(500, "down".into()));
    let refreshed = rig.envoy.stat("listener_manager.lds.update_success").await;
    // Three refresh intervals pass; k2's tokens keep working the whole time.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        assert_eq!(rig.call(Some(&token(&k2))).await, Some(200));
    }
    assert_eq!(
        rig.envoy.stat("listener_manager.lds.update_success").await,
        refreshed,
        "a failed refresh pushes nothing"
    );
    assert_eq!(rig.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_uri_fails_closed_without_a_nack() {
    let nothing = format!("http://127.0.0.1:{}/keys", free_port());
    let rig = Rig::start(&nothing, JwksConfig::default().with_native_roots(false)).await;
    let k1 = Issuer::new("k1");
    rig.wait_for("tokens are refused", &token(&k1), 401).await;
    assert_eq!(rig.call(None).await, Some(200), "no token passes");
    assert_eq!(rig.envoy.rejections().await, 0);
}
