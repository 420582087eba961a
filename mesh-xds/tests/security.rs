//! Istio's security kinds with real proxies (reference: security §8.3). Client sidecars `sleep`
//! (namespace `bar`, on 127.0.0.1) and `other` (namespace `baz`, on 127.0.0.2) call `httpbin`
//! (namespace `foo`) through the server's sidecar; each proxy gets its certificate from its
//! own agent's SDS (`sds-grpc`) and its config from our control plane. The server's inbound
//! listeners are bound (Sidecar ingress `captureMode: NONE`): the chains istiod puts on
//! `virtualInbound`, matched by destination port.
//!
//! - mTLS: PERMISSIVE accepts mTLS (the application sees the caller's SPIFFE ID) and
//!   plaintext; STRICT refuses plaintext (`no_filter_chain_match`); port-level DISABLE turns
//!   clients to plaintext (the endpoint loses `tlsMode`), and ISTIO_MUTUAL toward it fails;
//!   endpoints without an identity get plaintext from auto mTLS.
//! - AuthorizationPolicy: ALLOW by principal and by namespace, DENY by path and method, DENY
//!   over ALLOW, AUDIT, dry-run shadow counters, and a TCP port's network RBAC.
//! - RequestAuthentication: valid, expired, wrong-issuer, wrong-audience and missing tokens,
//!   and a policy on the token's principal.
//!
//! No proxy rejects anything in any step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_test_support::identity::{ISSUER, Issuer};
use mesh_test_support::{
    Api, ControlPlane, Proxy, ProxyKind, eventually, free_port, serve, upstream,
};

const SERVER_NODE: &str = r#"{id: "sidecar~127.0.0.1~httpbin-1.foo~foo.svc.cluster.local", cluster: httpbin, metadata: {NAMESPACE: foo, INTERCEPTION_MODE: NONE, LABELS: {app: httpbin}}}"#;
const SLEEP_NODE: &str = r#"{id: "sidecar~127.0.0.1~sleep-1.bar~bar.svc.cluster.local", cluster: sleep, metadata: {NAMESPACE: bar, INTERCEPTION_MODE: NONE, LABELS: {app: sleep}}}"#;
const OTHER_NODE: &str = r#"{id: "sidecar~127.0.0.2~other-1.baz~baz.svc.cluster.local", cluster: other, metadata: {NAMESPACE: baz, INTERCEPTION_MODE: NONE, LABELS: {app: other}}}"#;
const HOST: &str = "httpbin.foo.svc.cluster.local";

/// The ports of one run: the HTTP service port (the clients' egress listeners), the server's
/// HTTP and TCP inbound listeners, the TCP service port, and the application.
#[derive(Clone, Copy)]
struct Ports {
    service: u16,
    inbound: u16,
    tcp_service: u16,
    tcp_inbound: u16,
    app: u16,
}

/// The mesh: `httpbin` (HTTP, and TCP on its own port) backed by the server proxy's inbound
/// ports with the `httpbin` service account (so it accepts mTLS), `plain` backed by the same
/// HTTP port without an identity, the clients' bound egress listeners, the server's bound
/// ingress listeners (both forwarding to the application).
fn mesh(p: Ports) -> String {
    let client = |ns: &str, ip: &str| {
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: client, namespace: {ns}}}
spec:
  egress:
  - port: {{number: {service}, name: http, protocol: HTTP}}
    bind: {ip}
    captureMode: NONE
    hosts: ["foo/*"]
  - port: {{number: {tcp_service}, name: tcp, protocol: TCP}}
    bind: {ip}
    captureMode: NONE
    hosts: ["foo/*"]
"#,
            service = p.service,
            tcp_service = p.tcp_service,
        )
    };
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: foo}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {service}, name: http, protocol: HTTP}}, {{number: {tcp_service}, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {inbound}, tcp: {tcp_inbound}}}, serviceAccount: httpbin, labels: {{app: httpbin}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: plain, namespace: foo}}
spec:
  hosts: [plain.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {service}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {inbound}}}, labels: {{app: httpbin}}}}]
{sleep}{other}---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: server, namespace: foo}}
spec:
  workloadSelector: {{labels: {{app: httpbin}}}}
  ingress:
  - port: {{number: {inbound}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app}
  - port: {{number: {tcp_inbound}, name: tcp, protocol: TCP}}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app}
  egress: [{{hosts: ["./*"]}}]
"#,
        service = p.service,
        inbound = p.inbound,
        tcp_service = p.tcp_service,
        tcp_inbound = p.tcp_inbound,
        app = p.app,
        sleep = client("bar", "127.0.0.1"),
        other = client("baz", "127.0.0.2"),
    )
}

/// A control plane, the application, the server proxy and the two clients.
struct Rig {
    ports: Ports,
    cp: Arc<ControlPlane>,
    app: upstream::Upstream,
    server: Proxy,
    sleep: Proxy,
    other: Proxy,
}

impl Rig {
    async fn start(kind: ProxyKind) -> Rig {
        let app = upstream::start("httpbin").await;
        let ports = Ports {
            service: free_port(),
            inbound: free_port(),
            tcp_service: free_port(),
            tcp_inbound: free_port(),
            app: app.port(),
        };
        let cp = ControlPlane::new(&mesh(ports));
        let (xds, _) = serve(cp.clone()).await;
        let server = Proxy::start_workload(kind, xds, Api::Sotw, SERVER_NODE, "httpbin").await;
        let sleep = Proxy::start_workload(kind, xds, Api::Sotw, SLEEP_NODE, "sleep").await;
        let other = Proxy::start_workload(kind, xds, Api::Sotw, OTHER_NODE, "other").await;
        let rig = Rig {
            ports,
            cp,
            app,
            server,
            sleep,
            other,
        };
        for via in [rig.through("127.0.0.1"), rig.through("127.0.0.2")] {
            eventually("the mesh answers", Duration::from_secs(30), async || {
                (status(via, HOST, "GET", "/", &[]).await? == 200).then_some(())
            })
            .await;
        }
        rig
    }

    /// A client's egress listener (`127.0.0.1` is `sleep`, `127.0.0.2` is `other`).
    fn through(&self, ip: &str) -> SocketAddr {
        format!("{ip}:{}", self.ports.service).parse().unwrap()
    }

    fn sleep_at(&self) -> SocketAddr {
        self.through("127.0.0.1")
    }

    fn other_at(&self) -> SocketAddr {
        self.through("127.0.0.2")
    }

    /// The server's inbound port, for plaintext callers outside the mesh.
    fn direct(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.ports.inbound).parse().unwrap()
    }

    /// Applies manifests and pushes.
    fn apply(&self, yaml: &str) {
        self.cp.apply(yaml);
        self.cp.update();
    }

    /// Replaces the manifests beyond the mesh itself with `yaml`, and pushes.
    fn policies(&self, yaml: &str) {
        let report = self.cp.replace(&format!("{}\n{yaml}", mesh(self.ports)));
        assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
    }

    /// The server's HCM stat `name` (under istiod's inbound stat prefix).
    async fn http_stat(&self, name: &str) -> u64 {
        let prefix = format!("http.inbound_0.0.0.0_{};", self.ports.inbound);
        self.server
            .stat(&format!("{prefix}.{name}"))
            .await
            .unwrap_or(0)
    }

    async fn no_rejections(&self) {
        for proxy in [&self.server, &self.sleep, &self.other] {
            assert_eq!(
                proxy.rejections().await,
                0,
                "{} rejected config",
                proxy.kind
            );
        }
    }
}

/// Runs a scenario on real Envoy, the oracle of the translation. mesh-sidecar does not run
/// these yet: it has no RBAC, `jwt_authn` or ext_authz filters (it refuses them by name).
async fn envoy<F, Fut>(scenario: F)
where
    F: Fn(ProxyKind) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(ProxyKind::Envoy).await;
}

async fn status(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<u16> {
    upstream::request(addr, method, host, path, headers)
        .await
        .ok()
        .map(|r| r.status)
}

/// Waits until `method path` to `host` through `via` answers `want`.
async fn wait_for(via: SocketAddr, host: &str, method: &str, path: &str, want: u16, what: &str) {
    eventually(what, Duration::from_secs(30), async || {
        (status(via, host, method, path, &[]).await? == want).then_some(())
    })
    .await;
}

/// A stat, 0 when absent.
async fn stat(p: &Proxy, name: &str) -> u64 {
    p.stat(name).await.unwrap_or(0)
}

fn handshakes(host: &str, port: u16) -> String {
    format!("cluster.outbound|{port}||{host}.ssl.handshake")
}

fn selector_policy(name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n{body}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentication_modes_and_auto_mtls() {
    envoy(modes_on).await;
}

async fn modes_on(kind: ProxyKind) {
    let rig = Rig::start(kind).await;
    let (through, direct) = (rig.sleep_at(), rig.direct());
    let client_handshakes = handshakes(HOST, rig.ports.service);
    let server_handshakes = format!("listener.127.0.0.1_{}.ssl.handshake", rig.ports.inbound);

    // PERMISSIVE: mesh traffic is mTLS, and the application sees who called.
    assert!(
        stat(&rig.sleep, &client_handshakes).await >= 1,
        "client handshakes"
    );
    assert!(
        stat(&rig.server, &server_handshakes).await >= 1,
        "server handshakes"
    );
    let xfcc = rig
        .app
        .seen
        .headers
        .lock()
        .unwrap()
        .iter()
        .filter_map(|h| h.get("x-forwarded-client-cert").cloned())
        .collect::<Vec<_>>();
    assert!(
        xfcc.iter()
            .any(|x| x.contains("URI=spiffe://cluster.local/ns/bar/sa/sleep")),
        "XFCC at the app: {xfcc:?}"
    );
    // ...and plaintext is accepted too.
    assert_eq!(status(direct, "httpbin", "GET", "/", &[]).await, Some(200));
    // An endpoint without an identity gets plaintext from auto mTLS.
    let before = stat(&rig.server, &server_handshakes).await;
    let plain = "plain.foo.svc.cluster.local";
    wait_for(through, plain, "GET", "/", 200, "plaintext to plain").await;
    assert_eq!(
        stat(&rig.sleep, &handshakes(plain, rig.ports.service)).await,
        0
    );
    assert_eq!(stat(&rig.server, &server_handshakes).await, before);

    // STRICT: plaintext is refused before any filter chain runs; mesh traffic still flows.
    let no_chain = format!(
        "listener.127.0.0.1_{}.no_filter_chain_match",
        rig.ports.inbound
    );
    rig.apply(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: default, namespace: foo}\nspec: {mtls: {mode: STRICT}}\n",
    );
    eventually(
        "plaintext refused under STRICT",
        Duration::from_secs(30),
        async || {
            status(direct, "httpbin", "GET", "/", &[])
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        stat(&rig.server, &no_chain).await >= 1,
        "no_filter_chain_match"
    );
    // Mesh traffic still flows, and it is mTLS: the server's handshakes are all it accepts.
    for _ in 0..3 {
        assert_eq!(status(through, HOST, "GET", "/", &[]).await, Some(200));
    }

    // DISABLE on the workload port: the endpoint loses its tlsMode metadata, clients send
    // plaintext, which the server takes.
    rig.apply(&format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: httpbin, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  \
         mtls: {{mode: STRICT}}\n  portLevelMtls: {{\"{}\": {{mode: DISABLE}}}}\n",
        rig.ports.inbound
    ));
    eventually(
        "plaintext accepted on a DISABLE port",
        Duration::from_secs(30),
        async || (status(direct, "httpbin", "GET", "/", &[]).await? == 200).then_some(()),
    )
    .await;
    // Connections opened before the change may still be mTLS: wait for a plaintext one.
    eventually(
        "the client goes plaintext",
        Duration::from_secs(30),
        async || {
            let before = stat(&rig.sleep, &client_handshakes).await;
            for _ in 0..3 {
                (status(through, HOST, "GET", "/", &[]).await? == 200).then_some(())?;
            }
            (stat(&rig.sleep, &client_handshakes).await == before).then_some(())
        },
    )
    .await;
    // A DestinationRule forcing ISTIO_MUTUAL: the plaintext-only server cannot answer.
    rig.apply(&format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: httpbin, namespace: foo}}\nspec:\n  host: {HOST}\n  \
         trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}\n"
    ));
    wait_for(
        through,
        HOST,
        "GET",
        "/",
        503,
        "ISTIO_MUTUAL toward DISABLE",
    )
    .await;
    rig.no_rejections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_allow_deny_audit_and_dry_run() {
    envoy(authorization_on).await;
}

async fn authorization_on(kind: ProxyKind) {
    let rig = Rig::start(kind).await;
    let (sleep, other, direct) = (rig.sleep_at(), rig.other_at(), rig.direct());

    // ALLOW by principal: sleep gets in; another identity and plaintext get 403.
    rig.policies(&selector_policy(
        "allow-sleep",
        "  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]\n",
    ));
    wait_for(other, HOST, "GET", "/", 403, "other denied").await;
    let denied = rig.http_stat("rbac.denied").await;
    assert_eq!(status(sleep, HOST, "GET", "/", &[]).await, Some(200));
    let r = upstream::get(direct, "httpbin", "/", &[]).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(rig.http_stat("rbac.denied").await, denied + 1);

    // ALLOW by namespace: the same split.
    rig.policies(&selector_policy(
        "allow-bar",
        "  rules: [{from: [{source: {namespaces: [bar]}}]}]\n",
    ));
    wait_for(other, HOST, "GET", "/", 403, "other denied by namespace").await;
    assert_eq!(status(sleep, HOST, "GET", "/", &[]).await, Some(200));

    // Any mTLS peer: both clients, never plaintext.
    rig.policies(&selector_policy(
        "allow-peers",
        "  rules: [{from: [{source: {principals: [\"*\"]}}]}]\n",
    ));
    wait_for(other, HOST, "GET", "/", 200, "any peer allowed").await;
    assert_eq!(status(direct, "httpbin", "GET", "/", &[]).await, Some(403));

    // DENY by path and by method, over an ALLOW that matches everything.
    rig.policies(&format!(
        "{}{}{}",
        selector_policy("allow-all", "  rules: [{}]\n"),
        selector_policy(
            "deny-admin",
            "  action: DENY\n  rules: [{to: [{operation: {paths: [\"/admin*\"]}}]}]\n"
        ),
        selector_policy(
            "deny-delete",
            "  action: DENY\n  rules: [{to: [{operation: {methods: [DELETE]}}]}]\n"
        ),
    ));
    wait_for(sleep, HOST, "GET", "/admin/x", 403, "DENY by path").await;
    assert_eq!(status(sleep, HOST, "DELETE", "/", &[]).await, Some(403));
    assert_eq!(status(sleep, HOST, "GET", "/public", &[]).await, Some(200));

    // ALLOW with no rules: everything is denied.
    rig.policies(
        &selector_policy("allow-nothing", "  {}\n").replace("\n  {}\n", "\n  action: ALLOW\n"),
    );
    wait_for(sleep, HOST, "GET", "/", 403, "ALLOW without rules").await;

    // AUDIT never denies; every request passes one more RBAC filter (LOG counts as allowed).
    rig.policies(&format!(
        "{}{}",
        selector_policy("audit-all", "  action: AUDIT\n  rules: [{}]\n"),
        selector_policy("allow-all", "  rules: [{}]\n"),
    ));
    wait_for(sleep, HOST, "GET", "/audited", 200, "AUDIT passes").await;
    let allowed = rig.http_stat("rbac.allowed").await;
    assert_eq!(status(sleep, HOST, "GET", "/audited", &[]).await, Some(200));
    assert_eq!(
        rig.http_stat("rbac.allowed").await,
        allowed + 2,
        "AUDIT + ALLOW"
    );

    // Dry-run DENY: the request passes, the shadow engine counts a denial.
    rig.policies(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: dry, namespace: foo, annotations: {istio.io/dry-run: \"true\"}}\n\
         spec:\n  selector: {matchLabels: {app: httpbin}}\n  action: DENY\n  \
         rules: [{to: [{operation: {paths: [/dry]}}]}]\n",
    );
    let shadow = "rbac.istio_dry_run_deny_.shadow_denied";
    eventually(
        "the dry-run policy is in place",
        Duration::from_secs(30),
        async || {
            (status(sleep, HOST, "GET", "/dry", &[]).await? == 200).then_some(())?;
            (rig.http_stat(shadow).await > 0).then_some(())
        },
    )
    .await;
    let before = rig.http_stat(shadow).await;
    assert_eq!(status(sleep, HOST, "GET", "/dry", &[]).await, Some(200));
    assert_eq!(rig.http_stat(shadow).await, before + 1);
    assert_eq!(status(sleep, HOST, "GET", "/other", &[]).await, Some(200));
    assert_eq!(rig.http_stat(shadow).await, before + 1);
    rig.no_rejections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ports_get_the_network_rbac_filter() {
    envoy(tcp_on).await;
}

async fn tcp_on(kind: ProxyKind) {
    let rig = Rig::start(kind).await;
    let tcp =
        |ip: &str| -> SocketAddr { format!("{ip}:{}", rig.ports.tcp_service).parse().unwrap() };
    // HTTP over the TCP port reaches the application (a TCP proxy does not care).
    wait_for(
        tcp("127.0.0.1"),
        HOST,
        "GET",
        "/",
        200,
        "TCP through the mesh",
    )
    .await;
    rig.policies(&selector_policy(
        "allow-sleep",
        "  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]\n",
    ));
    eventually(
        "other's connections are closed",
        Duration::from_secs(30),
        async || {
            status(tcp("127.0.0.2"), HOST, "GET", "/", &[])
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(stat(&rig.server, "tcp.rbac.denied").await >= 1);
    assert_eq!(
        status(tcp("127.0.0.1"), HOST, "GET", "/", &[]).await,
        Some(200)
    );
    // An ALLOW rule with only HTTP fields allows no TCP connection at all.
    rig.policies(&selector_policy(
        "allow-get",
        "  rules: [{to: [{operation: {methods: [GET]}}]}]\n",
    ));
    eventually(
        "every TCP connection is closed",
        Duration::from_secs(30),
        async || {
            status(tcp("127.0.0.1"), HOST, "GET", "/", &[])
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    // ...while HTTP GETs are allowed on the HTTP port.
    assert_eq!(
        status(rig.sleep_at(), HOST, "GET", "/", &[]).await,
        Some(200)
    );
    rig.no_rejections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_authentication_checks_tokens_and_feeds_policies() {
    envoy(jwt_on).await;
}

async fn jwt_on(kind: ProxyKind) {
    let rig = Rig::start(kind).await;
    let sleep = rig.sleep_at();
    let issuer = Issuer::new("jwt-1");
    // The same key ID, another key: the signature does not verify.
    let stranger = Issuer::new("jwt-1");
    let jwks = issuer.jwks.replace('\'', "");
    let authn = format!(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
         metadata: {{name: jwt, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: httpbin}}}}\n  \
         jwtRules:\n  - issuer: {ISSUER}\n    audiences: [api]\n    jwks: '{jwks}'\n"
    );
    rig.policies(&authn);
    let token = |edit: &dyn Fn(&mut serde_json::Value)| {
        issuer.token("bar", "alice", |c| {
            c["aud"] = serde_json::json!(["api"]);
            c["sub"] = serde_json::json!("alice");
            edit(c);
        })
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let good = bearer(&token(&|_| {}));
    let expired = bearer(&token(&|c| c["exp"] = serde_json::json!(1_000_000)));
    let wrong_aud = bearer(&token(&|c| c["aud"] = serde_json::json!(["other"])));
    let wrong_iss = bearer(&token(&|c| {
        c["iss"] = serde_json::json!("https://elsewhere")
    }));
    let forged = bearer(&stranger.token("bar", "alice", |c| {
        c["aud"] = serde_json::json!(["api"]);
    }));
    let call = async |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        upstream::request(sleep, "GET", HOST, "/", &headers)
            .await
            .ok()
            .map(|r| (r.status, r.body))
    };
    eventually(
        "the JWT filter is in place",
        Duration::from_secs(30),
        async || (call(Some(&expired)).await?.0 == 401).then_some(()),
    )
    .await;
    assert_eq!(
        call(Some(&expired)).await.unwrap(),
        (401, "Jwt is expired".into())
    );
    assert_eq!(call(Some(&good)).await.unwrap().0, 200);
    assert_eq!(
        call(None).await.unwrap().0,
        200,
        "a missing token passes authentication"
    );
    assert_eq!(
        call(Some(&forged)).await.unwrap(),
        (401, "Jwt verification fails".into())
    );
    assert_eq!(call(Some(&wrong_iss)).await.unwrap().0, 401);
    assert_eq!(
        call(Some(&wrong_aud)).await.unwrap(),
        (403, "Audiences in Jwt are not allowed".into())
    );
    assert!(rig.http_stat("jwt_authn.denied").await >= 4);

    // Requiring a token is authorization's job: only alice's token gets in.
    rig.policies(&format!(
        "{authn}{}",
        selector_policy(
            "require-alice",
            &format!(
                "  rules: [{{from: [{{source: {{requestPrincipals: [\"{ISSUER}/alice\"]}}}}]}}]\n"
            ),
        )
    ));
    eventually("a token is required", Duration::from_secs(30), async || {
        (call(None).await?.0 == 403).then_some(())
    })
    .await;
    assert_eq!(call(Some(&good)).await.unwrap().0, 200);
    let bob = bearer(&token(&|c| c["sub"] = serde_json::json!("bob")));
    assert_eq!(call(Some(&bob)).await.unwrap().0, 403);
    rig.no_rejections().await;
}

/// A gateway terminating TLS with certificates the control plane serves over its ADS stream
/// (`credentialName`, SDS `kubernetes://NAME`): SIMPLE answers any client that trusts the
/// certificate, MUTUAL only clients with a certificate from the credential's CA; replacing the
/// credential rotates the served certificate without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_credentials_come_over_ads() {
    envoy(gateway_credentials_on).await;
}

async fn gateway_credentials_on(kind: ProxyKind) {
    use mesh_test_support::tls::self_signed;
    use mesh_xds::credentials::{Credential, Credentials};
    let app = upstream::start("app").await;
    let (simple, mutual) = (free_port(), free_port());
    let config = format!(
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
  - port: {{number: {simple}, name: https, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: ["shop/secure.example.com"]
    tls: {{mode: SIMPLE, credentialName: shop-cert}}
  - port: {{number: {mutual}, name: https-mutual, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: ["shop/secure.example.com"]
    tls: {{mode: MUTUAL, credentialName: shop-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: shop}}
spec:
  hosts: [secure.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: app.shop.svc.cluster.local}}}}]}}]
"#,
        app = app.port()
    );
    let cp = ControlPlane::new(&config);
    let (server_dir, cert, key) = self_signed("mesh-gw-cred", "secure.example.com");
    let (client_dir, client_cert, client_key) = self_signed("mesh-gw-client", "client.example.com");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let mut creds = Credentials::default();
    creds.insert(
        "shop-cert",
        Credential {
            cert_chain: read(&cert),
            key: read(&key),
            ca: Some(read(&client_cert)),
        },
    );
    cp.set_credentials(creds);
    let (xds, _) = serve(cp.clone()).await;
    let node = r#"{id: "router~127.0.0.1~gw.shop~shop.svc.cluster.local", cluster: gw, metadata: {NAMESPACE: shop, LABELS: {istio: ingressgateway}}}"#;
    let gw = Proxy::start(kind, xds, Api::Sotw, node).await;
    let curl = |port: u16, ca: &std::path::Path, client: bool| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "--max-time", "5", "--cacert"]).arg(ca);
        if client {
            cmd.arg("--cert")
                .arg(&client_cert)
                .arg("--key")
                .arg(&client_key);
        }
        cmd.args([
            "--resolve",
            &format!("secure.example.com:{port}:127.0.0.1"),
            &format!("https://secure.example.com:{port}/"),
        ])
        .output()
        .unwrap()
    };
    eventually(
        "HTTPS with a credential served over ADS",
        Duration::from_secs(30),
        async || {
            let out = curl(simple, &cert, false);
            (out.status.success() && out.stdout == b"app").then_some(())
        },
    )
    .await;
    // MUTUAL: a client certificate from the credential's CA is required.
    eventually(
        "MUTUAL with a client certificate",
        Duration::from_secs(30),
        async || {
            let out = curl(mutual, &cert, true);
            (out.status.success() && out.stdout == b"app").then_some(())
        },
    )
    .await;
    assert!(
        !curl(mutual, &cert, false).status.success(),
        "MUTUAL without a client certificate"
    );
    // A new certificate for the credential: new handshakes get it, with no restart.
    let (new_dir, new_cert, new_key) = self_signed("mesh-gw-cred-2", "secure.example.com");
    let mut creds = Credentials::default();
    creds.insert(
        "shop-cert",
        Credential {
            cert_chain: read(&new_cert),
            key: read(&new_key),
            ca: Some(read(&client_cert)),
        },
    );
    cp.set_credentials(creds);
    eventually(
        "the rotated credential",
        Duration::from_secs(30),
        async || {
            let out = curl(simple, &new_cert, false);
            (out.status.success() && out.stdout == b"app").then_some(())
        },
    )
    .await;
    assert!(
        !curl(simple, &cert, false).status.success(),
        "the old certificate is gone"
    );
    // The gateway's own AuthorizationPolicy applies on its HTTP connection managers.
    cp.apply(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: edge-deny, namespace: shop}\nspec:\n  \
         selector: {matchLabels: {istio: ingressgateway}}\n  action: DENY\n  \
         rules: [{to: [{operation: {paths: [\"/admin*\"]}}]}]\n",
    );
    cp.update();
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                "--cacert",
            ])
            .arg(&new_cert)
            .args([
                "--resolve",
                &format!("secure.example.com:{simple}:127.0.0.1"),
                &format!("https://secure.example.com:{simple}{path}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eventually("DENY on the gateway", Duration::from_secs(30), async || {
        (get("/admin/x") == "403").then_some(())
    })
    .await;
    assert_eq!(get("/public"), "200");
    assert_eq!(gw.rejections().await, 0, "{}", gw.log());
    for d in [server_dir, client_dir, new_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}
