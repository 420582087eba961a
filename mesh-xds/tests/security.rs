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
//! - CUSTOM AuthorizationPolicies against ext_authz servers the test runs (HTTP and gRPC, from
//!   MeshConfig `extensionProviders`), and providers whose server is down.
//! - Gateways: `credentialName` secrets over ADS (SIMPLE, MUTUAL, rotation), and ISTIO_MUTUAL
//!   with the gateway's own workload certificate.
//! - Invalid policies: refused with their field paths, changing nothing.
//!
//! No proxy rejects anything in any step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_model::MeshConfig;
use mesh_test_support::identity::{ISSUER, Issuer};
use mesh_test_support::{
    Api, ControlPlane, Proxy, ProxyKind, eventually, free_port, serve, upstream,
};
use mesh_xds::server::Connections;

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
    /// The ADS streams of the control plane.
    connections: Arc<Connections>,
    /// The manifests every step keeps ([`mesh`] and the scenario's own).
    base: String,
    app: upstream::Upstream,
    server: Proxy,
    sleep: Proxy,
    other: Proxy,
}

impl Rig {
    async fn start(kind: ProxyKind) -> Rig {
        Rig::start_with(kind, MeshConfig::default(), "").await
    }

    /// A rig whose control plane has `mesh_config` and, beside [`mesh`], the manifests
    /// `extra` (kept by every [`Rig::policies`] step).
    async fn start_with(kind: ProxyKind, mesh_config: MeshConfig, extra: &str) -> Rig {
        let app = upstream::start("httpbin").await;
        let ports = Ports {
            service: free_port(),
            inbound: free_port(),
            tcp_service: free_port(),
            tcp_inbound: free_port(),
            app: app.port(),
        };
        let base = format!("{}\n{extra}", mesh(ports));
        let cp = ControlPlane::with_mesh(&base, mesh_config);
        let (xds, connections) = serve(cp.clone()).await;
        // The three proxies start side by side.
        let (server, sleep, other) = tokio::join!(
            Proxy::start_workload(kind, xds, Api::Sotw, SERVER_NODE, "httpbin"),
            Proxy::start_workload(kind, xds, Api::Sotw, SLEEP_NODE, "sleep"),
            Proxy::start_workload(kind, xds, Api::Sotw, OTHER_NODE, "other"),
        );
        let rig = Rig {
            ports,
            cp,
            connections,
            base,
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
        let report = self.try_policies(yaml);
        assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
    }

    /// [`Rig::policies`], returning what the config store refused (and kept out).
    fn try_policies(&self, yaml: &str) -> mesh_model::store::ApplyReport {
        self.cp.replace(&format!("{}\n{yaml}", self.base))
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

/// A DestinationRule for `httpbin` with one request per client connection: a policy change
/// applies to the next request, instead of after the server's old filter chain drained the
/// clients' pooled connections (Envoy closes those gradually, over seconds).
fn one_request_per_connection() -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: httpbin, namespace: foo}}\nspec:\n  host: {HOST}\n  \
         trafficPolicy: {{connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}}}\n"
    )
}

/// The ServiceEntries of the ext_authz servers (namespace `foo`, which the server's sidecar
/// sees): the HTTP server on service port 8000, the gRPC one on 9000 (HTTP/2), and on 9001 an
/// address nobody listens on (a provider whose server is down).
fn authz_services(http: u16, grpc: u16, down: u16) -> String {
    let entry = |name: &str, port: &str, target: u16| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: {{name: {name}, namespace: foo}}\nspec:\n  hosts: [{name}.foo.svc.cluster.local]\n  \
             location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{port}]\n  \
             endpoints: [{{address: 127.0.0.1, ports: {{p: {target}}}}}]\n"
        )
    };
    [
        entry(
            "ext-authz-http",
            "{number: 8000, name: p, protocol: HTTP}",
            http,
        ),
        entry(
            "ext-authz-grpc",
            "{number: 9000, name: p, protocol: GRPC}",
            grpc,
        ),
        entry(
            "ext-authz-down",
            "{number: 9001, name: p, protocol: GRPC}",
            down,
        ),
    ]
    .concat()
}

/// MeshConfig `extensionProviders`: the HTTP server (sending only `x-ext-authz` of the
/// request's headers, passing only its result header upstream and its reason header to denied
/// clients), the gRPC server, and the server that is down, failing closed and open.
fn authz_providers() -> MeshConfig {
    use mesh_test_support::ext_authz::{DECISION_HEADER, REASON_HEADER, RESULT_HEADER};
    MeshConfig {
        extension_providers: vec![
            serde_json::json!({"name": "http-authz", "envoyExtAuthzHttp": {
                "service": "ext-authz-http.foo.svc.cluster.local", "port": 8000,
                "includeRequestHeadersInCheck": [DECISION_HEADER],
                "headersToUpstreamOnAllow": [RESULT_HEADER],
                "headersToDownstreamOnDeny": [REASON_HEADER],
            }}),
            serde_json::json!({"name": "grpc-authz", "envoyExtAuthzGrpc": {
                "service": "ext-authz-grpc.foo.svc.cluster.local", "port": 9000,
            }}),
            serde_json::json!({"name": "down-closed", "envoyExtAuthzGrpc": {
                "service": "ext-authz-down.foo.svc.cluster.local", "port": "9001",
            }}),
            serde_json::json!({"name": "down-open", "envoyExtAuthzGrpc": {
                "service": "ext-authz-down.foo.svc.cluster.local", "port": 9001, "failOpen": true,
            }}),
        ],
        ..Default::default()
    }
}

/// A CUSTOM policy sending requests under `/checked` to `provider`.
fn custom_policy(provider: &str) -> String {
    selector_policy(
        "ext-authz",
        &format!(
            "  action: CUSTOM\n  provider: {{name: {provider}}}\n  \
             rules: [{{to: [{{operation: {{paths: [\"/checked*\"]}}}}]}}]\n"
        ),
    )
}

/// CUSTOM AuthorizationPolicies against ext_authz servers the test runs (reference: security
/// §3.7): the server decides the requests the policy's rules select (a denial carries the
/// server's status, body and the headers the provider lets through; an allowed request reaches
/// the application with the headers the provider passes upstream), requests outside the rules
/// never reach it, and a provider whose server is down fails closed (403) or, with `failOpen`,
/// open. The HTTP and the gRPC protocol alike (the gRPC one on TCP ports too); Envoy's
/// ext_authz counters agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_policies_ask_ext_authz_servers() {
    envoy(custom_on).await;
}

async fn custom_on(kind: ProxyKind) {
    use mesh_test_support::ext_authz::{
        self, ALLOW, DECISION_HEADER, DENY_BODY, REASON_HEADER, RESULT_HEADER, UNLISTED_HEADER,
    };
    let (http_authz, grpc_authz) = tokio::join!(
        ext_authz::start_http("http-authz"),
        ext_authz::start_grpc("grpc-authz")
    );
    // The gRPC server denies with its own status, so its answers are told from the HTTP one's.
    grpc_authz.set_deny_status(401);
    let down = free_port(); // nothing listens there
    let (hp, gp) = (http_authz.port(), grpc_authz.port());
    let extra = format!(
        "{}{}",
        authz_services(hp, gp, down),
        one_request_per_connection()
    );
    let rig = Rig::start_with(kind, authz_providers(), &extra).await;
    let sleep = rig.sleep_at();
    let tcp: SocketAddr = format!("127.0.0.1:{}", rig.ports.tcp_service)
        .parse()
        .unwrap();
    let get = async |path: &str, headers: &[(&str, &str)]| {
        upstream::get(sleep, HOST, path, headers).await.unwrap()
    };
    // The ext_authz filter's counters on the inbound HTTP connection manager.
    let authz = async |name: &str| rig.http_stat(&format!("ext_authz.{name}")).await;
    let upstream_headers = || {
        rig.app
            .seen
            .headers
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap()
    };

    // --- the HTTP provider ---
    rig.policies(&custom_policy("http-authz"));
    wait_for(
        sleep,
        HOST,
        "GET",
        "/checked",
        403,
        "the HTTP server decides",
    )
    .await;
    let (checks, served) = (http_authz.count(), rig.app.count());
    let (ok, denied) = (authz("ok").await, authz("denied").await);
    // Denied: the server's status, body and reason header; the application saw nothing, and
    // of the request's headers the server got only the one the provider sends.
    let r = get("/checked/deny", &[("x-not-for-authz", "1")]).await;
    assert_eq!((r.status, r.body.as_str()), (403, DENY_BODY));
    assert_eq!(
        r.headers.get(REASON_HEADER).unwrap(),
        "denied by http-authz"
    );
    assert!(!r.headers.contains_key(UNLISTED_HEADER), "{:?}", r.headers);
    assert_eq!(http_authz.count(), checks + 1);
    assert_eq!(rig.app.count(), served);
    let check = http_authz.last().unwrap();
    assert_eq!(check.path, "/checked/deny");
    assert!(!check.headers.contains_key("x-not-for-authz"), "{check:?}");
    assert_eq!(authz("denied").await, denied + 1);
    // Allowed: the request reaches the application with the result header, and only that one.
    let r = get(
        "/checked/allow",
        &[(DECISION_HEADER, ALLOW), ("x-not-for-authz", "1")],
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "httpbin"));
    assert_eq!(http_authz.count(), checks + 2);
    let check = http_authz.last().unwrap();
    assert_eq!(check.headers.get(DECISION_HEADER).unwrap(), ALLOW);
    assert!(!check.headers.contains_key("x-not-for-authz"), "{check:?}");
    let seen = upstream_headers();
    assert_eq!(seen.get(RESULT_HEADER).unwrap(), "allowed by http-authz");
    assert!(!seen.contains_key(UNLISTED_HEADER), "{seen:?}");
    assert_eq!(authz("ok").await, ok + 1);
    // Outside the policy's rules: not checked at all (the CUSTOM rules' shadow engine did
    // not match, so the filter is disabled for the request).
    let disabled = authz("disabled").await;
    let r = get("/public", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "httpbin"));
    assert_eq!(http_authz.count(), checks + 2);
    assert_eq!(
        (authz("ok").await, authz("denied").await),
        (ok + 1, denied + 1)
    );
    assert_eq!(authz("disabled").await, disabled + 1);
    // An HTTP provider has nothing to say on TCP ports (§3.7): the TCP port is untouched.
    assert_eq!(status(tcp, HOST, "GET", "/checked", &[]).await, Some(200));
    assert_eq!(http_authz.count(), checks + 2);

    // --- the gRPC provider ---
    rig.policies(&custom_policy("grpc-authz"));
    wait_for(
        sleep,
        HOST,
        "GET",
        "/checked",
        401,
        "the gRPC server decides",
    )
    .await;
    let (checks, served, http_checks) = (grpc_authz.count(), rig.app.count(), http_authz.count());
    let (ok, denied) = (authz("ok").await, authz("denied").await);
    let r = get("/checked/deny", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (401, DENY_BODY));
    assert_eq!(
        r.headers.get(REASON_HEADER).unwrap(),
        "denied by grpc-authz"
    );
    assert_eq!(grpc_authz.count(), checks + 1);
    assert_eq!(rig.app.count(), served);
    // The check carries the request and the caller's mesh identity.
    let check = grpc_authz.last().unwrap();
    assert_eq!(check.path, "/checked/deny");
    assert_eq!(check.principal, "spiffe://cluster.local/ns/bar/sa/sleep");
    let r = get("/checked/allow", &[(DECISION_HEADER, ALLOW)]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "httpbin"));
    assert_eq!(grpc_authz.count(), checks + 2);
    assert_eq!(
        upstream_headers().get(RESULT_HEADER).unwrap(),
        "allowed by grpc-authz"
    );
    assert_eq!(
        (authz("ok").await, authz("denied").await),
        (ok + 1, denied + 1)
    );
    let r = get("/public", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(grpc_authz.count(), checks + 2);
    assert_eq!(http_authz.count(), http_checks, "the HTTP provider is out");
    // A gRPC provider also guards the TCP port, where the rule's HTTP-only `paths` clause
    // drops out and every connection is checked (§3.6): the check carries no HTTP request,
    // so the server denies and the connection is closed.
    let tcp_denied = "ext_authz.tcp..denied";
    eventually(
        "TCP connections are checked",
        Duration::from_secs(30),
        async || {
            status(tcp, HOST, "GET", "/", &[])
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    let check = grpc_authz.last().unwrap();
    assert_eq!(
        (check.path.as_str(), check.principal.as_str()),
        ("", "spiffe://cluster.local/ns/bar/sa/sleep")
    );
    let (checks, denied) = (grpc_authz.count(), stat(&rig.server, tcp_denied).await);
    assert_eq!(status(tcp, HOST, "GET", "/", &[]).await, None);
    assert_eq!(grpc_authz.count(), checks + 1);
    assert_eq!(stat(&rig.server, tcp_denied).await, denied + 1);

    // --- a provider whose server is down ---
    rig.policies(&custom_policy("down-closed"));
    wait_for(sleep, HOST, "GET", "/checked", 403, "failing closed").await;
    let (errors, served) = (authz("error").await, rig.app.count());
    let r = get("/checked", &[(DECISION_HEADER, ALLOW)]).await;
    assert_eq!(r.status, 403);
    assert_eq!(authz("error").await, errors + 1);
    assert_eq!(rig.app.count(), served);
    assert_eq!(get("/public", &[]).await.status, 200);
    rig.policies(&custom_policy("down-open"));
    wait_for(sleep, HOST, "GET", "/checked", 200, "failing open").await;
    let (allowed, served) = (authz("failure_mode_allowed").await, rig.app.count());
    assert_eq!(get("/checked", &[]).await.status, 200);
    assert_eq!(authz("failure_mode_allowed").await, allowed + 1);
    assert_eq!(rig.app.count(), served + 1);
    rig.no_rejections().await;
}

/// A gateway server with `tls.mode: ISTIO_MUTUAL` (reference: security §6.1): the gateway
/// presents its own workload certificate, which its agent serves over SDS (`default`,
/// `ROOTCA`), and takes clients holding a certificate of the mesh's CA; without a client
/// certificate, or with one from another CA (for the very same SPIFFE ID), the handshake is
/// refused. `subjectAltNames` narrows the clients to the listed identities. No RBAC or JWT
/// here, so it runs on every selected proxy (`MESH_PROXIES`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_istio_mutual_takes_mesh_certificates_only() {
    ProxyKind::each(gateway_istio_mutual_on).await;
}

async fn gateway_istio_mutual_on(kind: ProxyKind) {
    use mesh_test_support::identity::{foreign_workload, mesh_workload};
    use mesh_test_support::tls::{mesh_request, tls_get};
    let app = upstream::start("app").await;
    let (any_peer, only_sleep) = (free_port(), free_port());
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
metadata: {{name: mesh-edge, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {any_peer}, name: https-mesh, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: ["shop/app.example.com"]
    tls: {{mode: ISTIO_MUTUAL}}
  - port: {{number: {only_sleep}, name: https-sleep, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: ["shop/app.example.com"]
    tls: {{mode: ISTIO_MUTUAL, subjectAltNames: ["spiffe://cluster.local/ns/bar/sa/sleep"]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: shop}}
spec:
  hosts: [app.example.com]
  gateways: [mesh-edge]
  http: [{{route: [{{destination: {{host: app.shop.svc.cluster.local}}}}]}}]
"#,
        app = app.port()
    );
    let cp = ControlPlane::new(&config);
    let (xds, _) = serve(cp.clone()).await;
    let node = r#"{id: "router~127.0.0.1~gw-1.shop~shop.svc.cluster.local", cluster: gw, metadata: {NAMESPACE: shop, LABELS: {istio: ingressgateway}}}"#;
    let gw = Proxy::start_workload(kind, xds, Api::Sotw, node, "gateway").await;
    let gateway_id = "spiffe://cluster.local/ns/shop/sa/gateway";
    let at = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let listener = |port: u16, stat: &str| format!("listener.127.0.0.1_{port}.ssl.{stat}");
    let (sleep, other) = (mesh_workload("bar", "sleep"), mesh_workload("baz", "other"));
    let call = async |port: u16, cert| {
        mesh_request(
            at(port),
            "app.example.com",
            cert,
            gateway_id,
            "app.example.com",
            "/",
        )
        .await
        .ok()
        .map(|r| (r.status, r.body))
    };
    // A mesh client gets through (and verified the gateway's own SPIFFE ID).
    eventually(
        "the gateway takes a mesh certificate",
        Duration::from_secs(30),
        async || (call(any_peer, &sleep).await? == (200, "app".to_string())).then_some(()),
    )
    .await;
    assert_eq!(call(any_peer, &other).await, Some((200, "app".into())));
    let served = app.count();
    // No client certificate: refused at the handshake.
    let no_cert = stat(&gw, &listener(any_peer, "fail_verify_no_cert")).await;
    let out = tls_get(&at(any_peer).to_string(), "app.example.com").await;
    assert!(!out.contains("app"), "{out}");
    assert_eq!(
        stat(&gw, &listener(any_peer, "fail_verify_no_cert")).await,
        no_cert + 1
    );
    // A certificate for the same identity from another CA: refused.
    let verify_errors = stat(&gw, &listener(any_peer, "fail_verify_error")).await;
    let foreign = foreign_workload("bar", "sleep");
    assert_eq!(call(any_peer, &foreign).await, None);
    assert_eq!(
        stat(&gw, &listener(any_peer, "fail_verify_error")).await,
        verify_errors + 1
    );
    assert_eq!(app.count(), served, "refused clients reach nothing");
    // subjectAltNames: sleep only.
    eventually(
        "the pinned server takes sleep",
        Duration::from_secs(30),
        async || (call(only_sleep, &sleep).await?.0 == 200).then_some(()),
    )
    .await;
    let san = stat(&gw, &listener(only_sleep, "fail_verify_san")).await;
    assert_eq!(call(only_sleep, &other).await, None);
    assert_eq!(
        stat(&gw, &listener(only_sleep, "fail_verify_san")).await,
        san + 1
    );
    assert_eq!(gw.rejections().await, 0, "{}", gw.log());
}

/// The ADS streams by node, with their NACK counts.
fn streams(c: &Connections) -> Vec<(String, u64, u64)> {
    let mut v: Vec<(String, u64, u64)> = c
        .list()
        .into_iter()
        .map(|i| {
            let nacks = i.types.values().map(|t| t.nacks).sum();
            (i.node_id, i.stream_id, nacks)
        })
        .collect();
    v.sort();
    v
}

/// Whether every type on every stream is ACKed.
fn all_synced(c: &Connections) -> bool {
    c.list().iter().all(|i| {
        i.types
            .values()
            .all(|t| t.status() == mesh_xds::server::SyncStatus::Synced)
    })
}

/// Invalid security resources (reference: security §7.1) are refused by the config store, each
/// with its kind, namespace, name and field path, and change nothing: an invalid new version
/// of a policy leaves the previous one in force, other policies keep enforcing, no proxy sees
/// a NACK-worthy config or loses its stream. A valid CUSTOM policy whose provider the mesh
/// does not define is kept but cannot be translated as written: istiod reports it and turns
/// its rules into denials, which touch nothing outside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_and_change_nothing() {
    envoy(bad_policies_on).await;
}

async fn bad_policies_on(kind: ProxyKind) {
    let rig = Rig::start_with(kind, MeshConfig::default(), &one_request_per_connection()).await;
    let (sleep, other, direct) = (rig.sleep_at(), rig.other_at(), rig.direct());
    let allow_sleep = selector_policy(
        "allow-sleep",
        "  rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]\n",
    );
    rig.policies(&allow_sleep);
    wait_for(other, HOST, "GET", "/", 403, "the valid policy enforces").await;
    eventually("every proxy ACKed", Duration::from_secs(30), async || {
        all_synced(&rig.connections).then_some(())
    })
    .await;
    let before = streams(&rig.connections);
    assert_eq!(before.len(), 3, "{before:?}");

    // An invalid new version of allow-sleep (it would let everyone in), and invalid
    // resources of each security kind.
    let bad = [
        selector_policy("allow-sleep", "  rules: [{from: []}]\n"),
        selector_policy("deny-without-rules", "  action: DENY\n"),
        selector_policy(
            "bad-port",
            "  rules: [{to: [{operation: {ports: [\"99999\"]}}]}]\n",
        ),
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
         metadata: {name: bad-jwks, namespace: foo}\nspec:\n  \
         jwtRules: [{issuer: https://issuer.example, jwksUri: \"ftp://keys.example/jwks\"}]\n"
            .to_string(),
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: namespace-ports, namespace: foo}\nspec:\n  \
         mtls: {mode: STRICT}\n  portLevelMtls: {\"8080\": {mode: DISABLE}}\n"
            .to_string(),
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: bad-mode, namespace: foo}\nspec: {mtls: {mode: SUPERSTRICT}}\n"
            .to_string(),
    ]
    .concat();
    let report = rig.try_policies(&bad);
    let refused: Vec<String> = report
        .rejected
        .iter()
        .flat_map(|r| {
            r.findings
                .iter()
                .filter(|f| f.is_error())
                .map(move |f| format!("{} {}", r.resource, f.path))
        })
        .collect();
    let want = [
        "AuthorizationPolicy foo/allow-sleep spec.rules[0].from",
        "AuthorizationPolicy foo/deny-without-rules spec.rules",
        "AuthorizationPolicy foo/bad-port spec.rules[0].to[0].operation.ports[0]",
        "RequestAuthentication foo/bad-jwks spec.jwtRules[0].jwksUri",
        "PeerAuthentication foo/namespace-ports spec.portLevelMtls",
        "PeerAuthentication foo/bad-mode spec.mtls.mode",
    ];
    for w in want {
        assert!(refused.iter().any(|r| r == w), "{w} in {refused:#?}");
    }
    assert_eq!(report.rejected.len(), want.len(), "{refused:#?}");
    // The store kept exactly what it had, so there is nothing to push...
    assert!(
        report.changed.is_empty() && report.deleted.is_empty(),
        "{report:#?}"
    );
    // ...and the proxies agree: the last good allow-sleep still decides, no STRICT mode
    // refuses plaintext (its request is answered, by RBAC), and no proxy NACKed or reconnected.
    assert_eq!(status(sleep, HOST, "GET", "/", &[]).await, Some(200));
    assert_eq!(status(other, HOST, "GET", "/", &[]).await, Some(403));
    assert_eq!(status(direct, "httpbin", "GET", "/", &[]).await, Some(403));
    assert_eq!(streams(&rig.connections), before);

    // Valid, but its provider is not defined: kept and reported (policy, field path); its
    // rules deny, everything else is as before.
    let missing = selector_policy(
        "ext-missing",
        "  action: CUSTOM\n  provider: {name: missing}\n  \
         rules: [{to: [{operation: {paths: [\"/custom*\"]}}]}]\n",
    );
    let report = rig.try_policies(&format!("{bad}{missing}"));
    assert_eq!(report.rejected.len(), want.len());
    let diagnostics = rig.cp.push_context().policy_diagnostics();
    assert_eq!(
        diagnostics,
        [
            "AuthorizationPolicy foo/ext-missing: spec.provider.name: extension provider \"missing\" is not defined; its rules deny the request"
        ],
    );
    wait_for(
        sleep,
        HOST,
        "GET",
        "/custom",
        403,
        "the bad CUSTOM rules deny",
    )
    .await;
    let r = upstream::get(sleep, HOST, "/custom/x", &[]).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(status(sleep, HOST, "GET", "/", &[]).await, Some(200));
    assert_eq!(status(other, HOST, "GET", "/", &[]).await, Some(403));
    eventually("every proxy ACKed", Duration::from_secs(30), async || {
        all_synced(&rig.connections).then_some(())
    })
    .await;
    assert_eq!(streams(&rig.connections), before);
    rig.no_rejections().await;
}
