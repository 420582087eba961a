//! Conformance with a real Envoy 1.40 over ADS: traffic is routed exactly as the Istio
//! configuration says, and Envoy rejects nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use mesh_test_support::tls::{TlsUpstream, self_signed, tls_get, tls_get_alpn};
use mesh_test_support::{
    Api, ControlPlane, Proxy, ProxyKind, eventually, free_port, serve, upstream,
};

const NODE: &str = r#"{id: "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local", cluster: client, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE, LABELS: {app: client}}}"#;

/// A Sidecar that binds `port` on 127.0.0.1 without iptables, importing the namespace.
fn sidecar(port: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
"#
    )
}

/// A STATIC ServiceEntry `name.shop.svc.cluster.local:port` with one endpoint per upstream,
/// labelled `version: <upstream name>`.
fn service(name: &str, port: u16, upstreams: &[&upstream::Upstream]) -> String {
    service_with_protocol(name, port, "HTTP", upstreams)
}

/// [`service`] with the port's protocol given (its port name is the protocol, lowercased).
fn service_with_protocol(
    name: &str,
    port: u16,
    protocol: &str,
    upstreams: &[&upstream::Upstream],
) -> String {
    let port_name = protocol.to_ascii_lowercase();
    let eps: String = upstreams
        .iter()
        .map(|u| {
            format!(
                "  - {{address: 127.0.0.1, ports: {{{port_name}: {}}}, labels: {{version: {}}}}}\n",
                u.port(),
                u.name
            )
        })
        .collect();
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: {port_name}, protocol: {protocol}}}]
  endpoints:
{eps}"#
    )
}

struct Harness {
    _cp: std::sync::Arc<ControlPlane>,
    envoy: Proxy,
    listener: SocketAddr,
}

async fn start(kind: ProxyKind, config: &str, port: u16, api: Api) -> Harness {
    let cp = ControlPlane::new(config);
    let (xds, _conns) = serve(cp.clone()).await;
    let envoy = Proxy::start(kind, xds, api, NODE).await;
    envoy.wait_live().await;
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Harness {
        _cp: cp,
        envoy,
        listener,
    }
}

/// Sends requests until one succeeds with 200 (the listener and routes are in place).
async fn wait_routable(h: &Harness, host: &str) {
    eventually("a 200 through envoy", Duration::from_secs(20), async || {
        let r = upstream::get(h.listener, host, "/", &[]).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entry_static_endpoints_are_all_reached() {
    ProxyKind::each(service_entry_static_endpoints_are_all_reached_on).await;
}

async fn service_entry_static_endpoints_are_all_reached_on(kind: ProxyKind) {
    let a = upstream::start("a").await;
    let b = upstream::start("b").await;
    let c = upstream::start("c").await;
    let port = free_port();
    let config = format!(
        "{}{}",
        sidecar(port),
        service("reviews", port, &[&a, &b, &c])
    );
    for api in [Api::Sotw, Api::Delta] {
        let h = start(kind, &config, port, api).await;
        wait_routable(&h, "reviews.shop.svc.cluster.local").await;
        let before = [a.count(), b.count(), c.count()];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..60 {
            let r = upstream::get(h.listener, "reviews", "/", &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            seen.insert(r.body);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["a", "b", "c"],
            "every endpoint is reached"
        );
        let after = [a.count(), b.count(), c.count()];
        assert!(after.iter().zip(before).all(|(x, y)| *x > y));
        // Short names from the same namespace, and unknown hosts under REGISTRY_ONLY.
        let r = upstream::get(h.listener, "reviews.shop", "/", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let r = upstream::get(h.listener, "unknown.example.com", "/", &[])
            .await
            .unwrap();
        assert_eq!(
            r.status, 502,
            "REGISTRY_ONLY answers unknown hosts with 502"
        );
        assert_eq!(h.envoy.rejections().await, 0, "{}", h.envoy.log());
        assert!(
            h.envoy
                .clusters()
                .await
                .contains(&format!("outbound|{port}||reviews.shop.svc.cluster.local"))
        );
    }
}

/// Three versions of `reviews` (v1, v2, v3) behind one ServiceEntry, with a DestinationRule
/// declaring a subset per version.
async fn reviews_versions(
    kind: ProxyKind,
    port: u16,
    extra: &str,
) -> (Harness, [upstream::Upstream; 3]) {
    let v1 = upstream::start("v1").await;
    let v2 = upstream::start("v2").await;
    let v3 = upstream::start("v3").await;
    let config = format!(
        r#"{}{}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: v3, labels: {{version: v3}}}}
{extra}"#,
        sidecar(port),
        service("reviews", port, &[&v1, &v2, &v3]),
    );
    let h = start(kind, &config, port, Api::Sotw).await;
    (h, [v1, v2, v3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_subsets_split_traffic() {
    ProxyKind::each(weighted_subsets_split_traffic_on).await;
}

async fn weighted_subsets_split_traffic_on(kind: ProxyKind) {
    let port = free_port();
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v3}, weight: 20}
"#;
    let (h, _ups) = reviews_versions(kind, port, vs).await;
    wait_routable(&h, "reviews").await;
    let n = 500;
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..n {
        let r = upstream::get(h.listener, "reviews", "/", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        *counts.entry(r.body).or_default() += 1;
    }
    let v1 = f64::from(counts.get("v1").copied().unwrap_or(0)) / f64::from(n);
    // Binomial(500, 0.8) has a standard deviation of 1.8%; 4 sigma is 7.2%.
    assert!((v1 - 0.8).abs() < 0.072, "v1 share {v1} from {counts:?}");
    assert!(!counts.contains_key("v2"), "{counts:?}");
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_cookie_and_uri_matches_pick_subsets() {
    ProxyKind::each(header_cookie_and_uri_matches_pick_subsets_on).await;
}

async fn header_cookie_and_uri_matches_pick_subsets_on(kind: ProxyKind) {
    let port = free_port();
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{headers: {cookie: {regex: "^(.*?;)?(canary=yes)(;.*)?$"}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {prefix: /v3/}}, {uri: {exact: /three}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {regex: "/only-v1/[0-9]+"}, queryParams: {debug: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /api/}}]
    route: [{destination: {host: reviews, subset: v1}}]
"#;
    let (h, _ups) = reviews_versions(kind, port, vs).await;
    let body = async |path: &str, headers: &[(&str, &str)]| {
        let r = upstream::get(h.listener, "reviews", path, headers)
            .await
            .unwrap();
        (r.status, r.body)
    };
    eventually("routes", Duration::from_secs(20), async || {
        let r = upstream::get(h.listener, "reviews", "/api/x", &[]).await;
        (r.ok()?.status == 200).then_some(())
    })
    .await;
    assert_eq!(
        body("/api/x", &[("end-user", "jason")]).await,
        (200, "v2".into())
    );
    assert_eq!(
        body("/api/x", &[("cookie", "canary=yes; a=b")]).await,
        (200, "v3".into())
    );
    assert_eq!(body("/v3/page", &[]).await, (200, "v3".into()));
    assert_eq!(body("/three", &[]).await, (200, "v3".into()));
    assert_eq!(body("/only-v1/42?debug=1", &[]).await, (200, "v1".into()));
    assert_eq!(body("/api/x", &[]).await, (200, "v1".into()));
    // No route matches: Envoy answers 404 (NR) for a known host.
    assert_eq!(body("/elsewhere", &[]).await.0, 404);
    assert_eq!(
        body("/only-v1/42", &[]).await.0,
        404,
        "query parameter missing"
    );
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_timeouts() {
    ProxyKind::each(faults_and_timeouts_on).await;
}

async fn faults_and_timeouts_on(kind: ProxyKind) {
    let port = free_port();
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /half}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 400ms, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 200ms
    retries: {attempts: 0}
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    let (h, ups) = reviews_versions(kind, port, vs).await;
    ups[1]
        .seen
        .delay_ms
        .store(2000, std::sync::atomic::Ordering::SeqCst);
    wait_routable(&h, "reviews").await;
    let get = async |p: &str| upstream::get(h.listener, "reviews", p, &[]).await.unwrap();
    let r = get("/abort").await;
    assert_eq!(r.status, 418);
    let before = ups[0].count();
    let mut aborted = 0;
    for _ in 0..200 {
        if get("/half").await.status == 503 {
            aborted += 1;
        }
    }
    assert!(
        (60..=140).contains(&aborted),
        "50% abort gave {aborted}/200"
    );
    assert_eq!(
        ups[0].count() - before,
        200 - aborted,
        "aborted requests never reach the upstream"
    );
    let t = std::time::Instant::now();
    assert_eq!(get("/delay").await.status, 200);
    // Envoy's timer may fire a little before our clock reads 400 ms; an undelayed request
    // through the same listener takes a few milliseconds.
    assert!(
        t.elapsed() >= Duration::from_millis(380),
        "delay injected: {:?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    let r = get("/slow").await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "timed out by Envoy: {:?}",
        t.elapsed()
    );
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_counted_at_the_upstream() {
    ProxyKind::each(retries_are_counted_at_the_upstream_on).await;
}

async fn retries_are_counted_at_the_upstream_on(kind: ProxyKind) {
    let port = free_port();
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /retry}}]
    retries: {attempts: 3, retryOn: "5xx", retryIgnorePreviousHosts: false}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /pertry}}]
    timeout: 5s
    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: "5xx,reset", retryIgnorePreviousHosts: false}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /none}}]
    retries: {attempts: 0}
    route: [{destination: {host: reviews, subset: v1}}]
"#;
    let (h, ups) = reviews_versions(kind, port, vs).await;
    eventually("routes", Duration::from_secs(20), async || {
        (upstream::get(h.listener, "reviews", "/retry", &[])
            .await
            .ok()?
            .status
            == 200)
            .then_some(())
    })
    .await;
    use std::sync::atomic::Ordering::SeqCst;
    // Fails twice, then succeeds: 3 requests at the upstream for 1 client request.
    ups[0].seen.fail_first.store(2, SeqCst);
    let before = ups[0].count();
    let r = upstream::get(h.listener, "reviews", "/retry", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(ups[0].count() - before, 3);
    // Fails more often than allowed: 1 + 3 attempts, then the 503 reaches the client.
    ups[0].seen.fail_first.store(10, SeqCst);
    let before = ups[0].count();
    let r = upstream::get(h.listener, "reviews", "/retry", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(ups[0].count() - before, 4);
    ups[0].seen.fail_first.store(0, SeqCst);
    // attempts: 0 disables retries.
    ups[0].seen.fail_first.store(1, SeqCst);
    let before = ups[0].count();
    assert_eq!(
        upstream::get(h.listener, "reviews", "/none", &[])
            .await
            .unwrap()
            .status,
        503
    );
    assert_eq!(ups[0].count() - before, 1);
    // Per-try timeout: every try of a slow upstream times out; 1 + 2 tries.
    ups[1].seen.delay_ms.store(1000, SeqCst);
    let before = ups[1].count();
    let r = upstream::get(h.listener, "reviews", "/pertry", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(ups[1].count() - before, 3);
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_direct_response_rewrite_headers_and_mirror() {
    ProxyKind::each(redirect_direct_response_rewrite_headers_and_mirror_on).await;
}

async fn redirect_direct_response_rewrite_headers_and_mirror_on(kind: ProxyKind) {
    let port = free_port();
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: new.example.com, redirectCode: 308}
  - match: [{uri: {prefix: /static}}]
    directResponse: {status: 203, body: {string: "from the proxy"}}
  - match: [{uri: {prefix: /binary}}]
    directResponse: {status: 200, body: {bytes: "aGVsbG8sIG1lc2g="}}
  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v2/, authority: rewritten.internal}
    route: [{destination: {host: reviews, subset: v1}}]
    headers:
      request: {set: {x-set: one}, add: {x-added: two}, remove: [x-drop]}
      response: {set: {x-resp: three}, remove: [x-upstream]}
  - match: [{uri: {prefix: /regex/}}]
    rewrite: {uriRegexRewrite: {match: "^/regex/([a-z]+)/(.*)$", rewrite: "/\\2/\\1"}}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v3}
    mirrorPercentage: {value: 100}
"#;
    let (h, ups) = reviews_versions(kind, port, vs).await;
    wait_routable(&h, "reviews").await;
    let r = upstream::get(h.listener, "reviews", "/old", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "http://new.example.com/new");
    let r = upstream::get(h.listener, "reviews", "/static/x", &[])
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (203, "from the proxy"));
    let r = upstream::get(h.listener, "reviews", "/binary", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "hello, mesh"),
        "base64 body decoded"
    );
    let r = upstream::get(
        h.listener,
        "reviews",
        "/api/v1/items?x=1",
        &[("x-drop", "gone"), ("x-added", "zero")],
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "v1"));
    assert_eq!(r.headers.get("x-resp").map(String::as_str), Some("three"));
    assert!(
        !r.headers.contains_key("x-upstream"),
        "response header removed"
    );
    let seen = ups[0].seen.headers.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        ups[0].seen.paths.lock().unwrap().last().unwrap(),
        "/v2/items?x=1"
    );
    assert_eq!(seen["host"], "rewritten.internal");
    assert_eq!(seen["x-set"], "one");
    assert!(
        seen["x-added"].contains("zero") && seen["x-added"].contains("two"),
        "{seen:?}"
    );
    assert!(!seen.contains_key("x-drop"));
    let _ = upstream::get(h.listener, "reviews", "/regex/abc/rest/of/path", &[])
        .await
        .unwrap();
    assert_eq!(
        ups[0].seen.paths.lock().unwrap().last().unwrap(),
        "/rest/of/path/abc"
    );
    // The mirror sees copies (with -shadow hosts) of default-route traffic.
    let before = ups[2].count();
    for _ in 0..5 {
        assert_eq!(
            upstream::get(h.listener, "reviews", "/mirrored", &[])
                .await
                .unwrap()
                .body,
            "v1"
        );
    }
    eventually("mirrored copies", Duration::from_secs(5), async || {
        (ups[2].count() - before >= 5).then_some(())
    })
    .await;
    let shadow = ups[2].seen.headers.lock().unwrap().last().cloned().unwrap();
    assert!(shadow["host"].ends_with("-shadow"), "{shadow:?}");
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pool_limits_overflow_with_503() {
    ProxyKind::each(connection_pool_limits_overflow_with_503_on).await;
}

async fn connection_pool_limits_overflow_with_503_on(kind: ProxyKind) {
    let port = free_port();
    let dr = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-limits, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 1, maxRequestsPerConnection: 1}
  subsets:
  - {name: v1, labels: {version: v1}}
"#;
    // reviews_versions adds its own DR for the same host; this one is older by name order and
    // carries the traffic policy, which merging keeps.
    let (h, ups) = reviews_versions(kind, port, dr).await;
    wait_routable(&h, "reviews").await;
    ups[0]
        .seen
        .delay_ms
        .store(600, std::sync::atomic::Ordering::SeqCst);
    let listener = h.listener;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move { upstream::get(listener, "reviews", "/", &[]).await.unwrap() })
        })
        .collect();
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(
                    r.headers.get("x-envoy-overloaded").map(String::as_str),
                    Some("true"),
                    "{r:?}"
                );
                overflow += 1;
            }
            s => panic!("unexpected {s}: {r:?}"),
        }
    }
    assert!(ok >= 1 && overflow >= 1, "ok={ok} overflow={overflow}");
    let name = format!(
        "cluster.outbound|{port}|v1|reviews.shop.svc.cluster.local.upstream_rq_pending_overflow"
    );
    assert!(
        h.envoy.stat(&name).await.unwrap_or(0) >= 1,
        "{:?}",
        h.envoy.stats("overflow").await
    );
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint() {
    ProxyKind::each(outlier_detection_ejects_a_failing_endpoint_on).await;
}

async fn outlier_detection_ejects_a_failing_endpoint_on(kind: ProxyKind) {
    let good = upstream::start("good").await;
    let bad = upstream::start("bad").await;
    bad.seen
        .fail_first
        .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    let port = free_port();
    let config = format!(
        r#"{}{}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: shop}}
spec:
  hosts: [ratings]
  http: [{{route: [{{destination: {{host: ratings}}}}], retries: {{attempts: 0}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: shop}}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {{simple: ROUND_ROBIN}}
    outlierDetection: {{consecutive5xxErrors: 2, interval: 100ms, baseEjectionTime: 60s, maxEjectionPercent: 100}}
"#,
        sidecar(port),
        service("ratings", port, &[&good, &bad])
    );
    let h = start(kind, &config, port, Api::Sotw).await;
    wait_routable(&h, "ratings").await;
    let stat = format!(
        "cluster.outbound|{port}||ratings.shop.svc.cluster.local.outlier_detection.ejections_active"
    );
    eventually(
        "the failing endpoint ejected",
        Duration::from_secs(20),
        async || {
            let _ = upstream::get(h.listener, "ratings", "/", &[]).await;
            (h.envoy.stat(&stat).await? >= 1).then_some(())
        },
    )
    .await;
    let before = bad.count();
    for _ in 0..20 {
        let r = upstream::get(h.listener, "ratings", "/", &[])
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "good"));
    }
    assert_eq!(
        bad.count(),
        before,
        "no traffic reaches the ejected endpoint"
    );
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_bound_virtual_services_on_a_loopback_port() {
    ProxyKind::each(gateway_serves_bound_virtual_services_on_a_loopback_port_on).await;
}

async fn gateway_serves_bound_virtual_services_on_a_loopback_port_on(kind: ProxyKind) {
    let v1 = upstream::start("v1").await;
    let gw_port = free_port();
    let svc_port = 9080;
    let config = format!(
        r#"{}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: ["shop/*.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop-edge, namespace: shop}}
spec:
  hosts: [shop.example.com]
  gateways: [edge]
  http:
  - match: [{{uri: {{prefix: /reviews}}}}]
    route: [{{destination: {{host: reviews, port: {{number: {svc_port}}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mesh-only, namespace: shop}}
spec:
  hosts: [other.example.com]
  http: [{{route: [{{destination: {{host: reviews}}}}]}}]
"#,
        service("reviews", svc_port, &[&v1])
    );
    let cp = ControlPlane::new(&config);
    let (xds, _conns) = serve(cp.clone()).await;
    let node = r#"{id: "router~127.0.0.1~gw.shop~shop.svc.cluster.local", cluster: gw, metadata: {NAMESPACE: shop, LABELS: {istio: ingressgateway}}}"#;
    let envoy = Proxy::start(kind, xds, Api::Delta, node).await;
    envoy.wait_live().await;
    let addr: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    let r = eventually("gateway route", Duration::from_secs(20), async || {
        let r = upstream::get(addr, "shop.example.com", "/reviews/1", &[])
            .await
            .ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.body, "v1");
    assert_eq!(
        upstream::get(addr, "shop.example.com", "/elsewhere", &[])
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        upstream::get(addr, "other.example.com", "/", &[])
            .await
            .unwrap()
            .status,
        404,
        "mesh-only VS is not on the gateway"
    );
    assert_eq!(
        upstream::get(addr, "nobody.example.com", "/", &[])
            .await
            .unwrap()
            .status,
        404
    );
    assert!(
        envoy
            .admin_get("/config_dump?resource=dynamic_listeners")
            .await
            .unwrap()
            .contains(&format!("127.0.0.1_{gw_port}"))
    );
    assert_eq!(envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_and_delegation() {
    ProxyKind::each(cors_and_delegation_on).await;
}

async fn cors_and_delegation_on(kind: ProxyKind) {
    let port = free_port();
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /d/}}]
    delegate: {name: reviews-delegate}
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews, subset: v1}}]
    corsPolicy:
      allowOrigins: [{exact: "https://ok.example.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      maxAge: 1h
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-delegate, namespace: shop}
spec:
  http:
  - match: [{uri: {prefix: /d/v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v3}}]
"#;
    let (h, _ups) = reviews_versions(kind, port, vs).await;
    eventually("routes", Duration::from_secs(20), async || {
        (upstream::get(h.listener, "reviews", "/api/x", &[])
            .await
            .ok()?
            .status
            == 200)
            .then_some(())
    })
    .await;
    // A preflight from an allowed origin is answered by Envoy's CORS filter.
    let pre = [
        ("origin", "https://ok.example.com"),
        ("access-control-request-method", "POST"),
    ];
    let r = upstream::request(h.listener, "OPTIONS", "reviews", "/api/x", &pre)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://ok.example.com"
    );
    assert!(r.headers["access-control-allow-methods"].contains("POST"));
    assert_eq!(r.headers["access-control-max-age"], "3600");
    let r = upstream::get(
        h.listener,
        "reviews",
        "/api/x",
        &[("origin", "https://ok.example.com")],
    )
    .await
    .unwrap();
    assert_eq!(
        r.headers
            .get("access-control-allow-origin")
            .map(String::as_str),
        Some("https://ok.example.com")
    );
    let r = upstream::get(
        h.listener,
        "reviews",
        "/api/x",
        &[("origin", "https://evil.example.com")],
    )
    .await
    .unwrap();
    assert!(
        !r.headers.contains_key("access-control-allow-origin"),
        "{r:?}"
    );
    // Delegation: the delegate's routes apply under the root's /d/ prefix.
    assert_eq!(
        upstream::get(h.listener, "reviews", "/d/v2/x", &[])
            .await
            .unwrap()
            .body,
        "v2"
    );
    assert_eq!(
        upstream::get(h.listener, "reviews", "/d/other", &[])
            .await
            .unwrap()
            .body,
        "v3"
    );
    assert_eq!(
        upstream::get(h.listener, "reviews", "/nowhere", &[])
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_terminates_https_with_certificate_files() {
    ProxyKind::each(gateway_terminates_https_with_certificate_files_on).await;
}

async fn gateway_terminates_https_with_certificate_files_on(kind: ProxyKind) {
    let (dir, cert, key) = self_signed("mesh-gw-tls", "secure.example.com");
    let v1 = upstream::start("v1").await;
    let gw_port = free_port();
    let config = format!(
        r#"{}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: https, protocol: HTTPS}}
    bind: 127.0.0.1
    hosts: ["shop/secure.example.com"]
    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: shop}}
spec:
  hosts: [secure.example.com]
  gateways: [edge]
  http: [{{route: [{{destination: {{host: reviews}}}}]}}]
"#,
        service("reviews", 9080, &[&v1]),
        cert.display(),
        key.display()
    );
    let cp = ControlPlane::new(&config);
    let (xds, _conns) = serve(cp.clone()).await;
    let node = r#"{id: "router~127.0.0.1~gw.shop~shop.svc.cluster.local", cluster: gw, metadata: {NAMESPACE: shop, LABELS: {istio: ingressgateway}}}"#;
    let envoy = Proxy::start(kind, xds, Api::Sotw, node).await;
    envoy.wait_live().await;
    let curl = |host: &str| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "5", "--cacert"])
            .arg(&cert)
            .args([
                "--resolve",
                &format!("{host}:{gw_port}:127.0.0.1"),
                &format!("https://{host}:{gw_port}/reviews"),
            ])
            .output()
            .unwrap()
    };
    eventually(
        "https through the gateway",
        Duration::from_secs(20),
        async || {
            let out = curl("secure.example.com");
            (out.status.success() && out.stdout == b"v1").then_some(())
        },
    )
    .await;
    assert_eq!(envoy.rejections().await, 0, "{}", envoy.log());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_passes_tls_through_by_sni() {
    ProxyKind::each(gateway_passes_tls_through_by_sni_on).await;
}

async fn gateway_passes_tls_through_by_sni_on(kind: ProxyKind) {
    let (dir, cert, key) = self_signed("mesh-gw-passthrough", "db.example.com");
    // The upstream terminates TLS itself: the gateway only routes the encrypted bytes by SNI.
    let backend_port = free_port();
    let _backend = TlsUpstream::start(backend_port, &cert, &key, &[]);
    let gw_port = free_port();
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {backend_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gw_port}, name: tls, protocol: TLS}}
    bind: 127.0.0.1
    hosts: ["shop/db.example.com"]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.example.com]
  gateways: [edge]
  tls:
  - match: [{{sniHosts: [db.example.com]}}]
    route: [{{destination: {{host: db.example.com, port: {{number: 443}}}}}}]
"#
    );
    let cp = ControlPlane::new(&config);
    let (xds, _conns) = serve(cp.clone()).await;
    let node = r#"{id: "router~127.0.0.1~gw.shop~shop.svc.cluster.local", cluster: gw, metadata: {NAMESPACE: shop, LABELS: {istio: ingressgateway}}}"#;
    let envoy = Proxy::start(kind, xds, Api::Delta, node).await;
    envoy.wait_live().await;
    let curl = |host: &str| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "5", "--cacert"])
            .arg(&cert)
            .args([
                "--resolve",
                &format!("{host}:{gw_port}:127.0.0.1"),
                &format!("https://{host}:{gw_port}/"),
            ])
            .output()
            .unwrap()
    };
    // The certificate the client verifies is the backend's: TLS was not terminated on the way.
    eventually(
        "TLS passed through to the backend",
        Duration::from_secs(20),
        async || {
            let out = curl("db.example.com");
            (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("s_server"))
                .then_some(())
        },
    )
    .await;
    // An SNI the gateway does not route is refused.
    assert!(!curl("other.example.com").status.success());
    assert_eq!(envoy.rejections().await, 0, "{}", envoy.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// AUTO_PASSTHROUGH (Istio's east-west gateway): the gateway routes TLS by the SNI-DNAT name
/// `outbound_.PORT_.SUBSET_.HOST` to that cluster without terminating it; subsets get their own
/// names (and only their endpoints), and an SNI for no cluster is refused. As with istiod, only
/// clients offering Istio's mTLS ALPN find a chain, and only endpoints that take Istio mTLS
/// (`security.istio.io/tlsMode: istio`) are reachable through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_auto_passthrough_routes_by_sni_dnat_names() {
    ProxyKind::each(gateway_auto_passthrough_routes_by_sni_dnat_names_on).await;
}

async fn gateway_auto_passthrough_routes_by_sni_dnat_names_on(kind: ProxyKind) {
    let (dir, cert, key) = self_signed("mesh-gw-auto-passthrough", "db.example.com");
    let (v1_port, v2_port, plain_port) = (free_port(), free_port(), free_port());
    let _v1 = TlsUpstream::start(v1_port, &cert, &key, &[]);
    let _v2 = TlsUpstream::start(v2_port, &cert, &key, &[]);
    let _plain = TlsUpstream::start(plain_port, &cert, &key, &[]);
    let gw_port = free_port();
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 5432, name: tls, protocol: TLS}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{tls: {v1_port}}}, labels: {{version: v1, security.istio.io/tlsMode: istio}}}}
  - {{address: 127.0.0.1, ports: {{tls: {v2_port}}}, labels: {{version: v2, security.istio.io/tlsMode: istio}}}}
  - {{address: 127.0.0.1, ports: {{tls: {plain_port}}}, labels: {{version: plain}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: shop}}
spec:
  host: db.shop.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: plain, labels: {{version: plain}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: eastwest, namespace: shop}}
spec:
  selector: {{istio: eastwestgateway}}
  servers:
  - port: {{number: {gw_port}, name: tls, protocol: TLS}}
    bind: 127.0.0.1
    hosts: ["*.local"]
    tls: {{mode: AUTO_PASSTHROUGH}}
"#
    );
    let cp = ControlPlane::new(&config);
    let (xds, _conns) = serve(cp.clone()).await;
    let node = r#"{id: "router~127.0.0.1~ew.shop~shop.svc.cluster.local", cluster: ew, metadata: {NAMESPACE: shop, LABELS: {istio: eastwestgateway}}}"#;
    let envoy = Proxy::start(kind, xds, Api::Sotw, node).await;
    envoy.wait_live().await;
    // openssl s_client with the SNI-DNAT name and Istio's mTLS ALPN; the backend's s_server
    // answers a GET with its status page, which names the port it accepted on.
    let gw = format!("127.0.0.1:{gw_port}");
    let fetch = async |sni: &str| tls_get_alpn(&gw, sni, Some("istio")).await;
    let all = "outbound_.5432_._.db.shop.svc.cluster.local";
    eventually(
        "TLS through the SNI-DNAT cluster",
        Duration::from_secs(20),
        async || fetch(all).await.contains("s_server").then_some(()),
    )
    .await;
    // Each subset name reaches only its own endpoint (s_server echoes its command line,
    // which holds its port).
    for _ in 0..3 {
        let v1 = fetch("outbound_.5432_.v1_.db.shop.svc.cluster.local").await;
        assert!(v1.contains(&format!("-accept {v1_port}")), "{v1}");
        let v2 = fetch("outbound_.5432_.v2_.db.shop.svc.cluster.local").await;
        assert!(v2.contains(&format!("-accept {v2_port}")), "{v2}");
    }
    // The all-endpoints cluster holds the two mTLS backends only.
    let mut mtls = vec![
        format!("127.0.0.1:{v1_port}"),
        format!("127.0.0.1:{v2_port}"),
    ];
    mtls.sort();
    assert_eq!(envoy.cluster_hosts(all).await, mtls);
    // No cluster has that name: the handshake gets nowhere.
    assert!(
        !fetch("outbound_.5432_.v3_.db.shop.svc.cluster.local")
            .await
            .contains("s_server")
    );
    // The plaintext backend's subset has its chain and cluster, but no endpoint.
    let plain = "outbound_.5432_.plain_.db.shop.svc.cluster.local";
    assert!(!fetch(plain).await.contains("s_server"));
    assert!(envoy.clusters().await.iter().any(|c| c == plain));
    assert_eq!(envoy.cluster_hosts(plain).await, Vec::<String>::new());
    // The right SNI without Istio's ALPN (a TLS client outside the mesh) finds no chain.
    assert!(!tls_get(&gw, all).await.contains("s_server"));
    assert_eq!(envoy.rejections().await, 0, "{}", envoy.log());
    // The SNI-DNAT clusters carry no TLS origination of their own.
    let clusters = envoy.clusters().await;
    assert!(
        clusters
            .iter()
            .any(|c| c == "outbound_.5432_.v1_.db.shop.svc.cluster.local")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// DYNAMIC_DNS: a wildcard ServiceEntry becomes Envoy's dynamic forward proxy (cluster and HTTP
/// filter): each request goes to whatever its Host resolves to, port included. Names are
/// resolved by a small DNS server on loopback that answers 127.0.0.1 and records the queries
/// (Envoy's c-ares resolver is pointed at it in the bootstrap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_dns_forwards_by_host_through_dns() {
    ProxyKind::each(dynamic_dns_forwards_by_host_through_dns_on).await;
}

async fn dynamic_dns_forwards_by_host_through_dns_on(kind: ProxyKind) {
    let dns = Dns::start().await;
    let (a, b) = (upstream::start("a").await, upstream::start("b").await);
    let listener_port = free_port();
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: anything, namespace: shop}}
spec:
  hosts: ["*.mesh.test"]
  location: MESH_EXTERNAL
  resolution: DYNAMIC_DNS
  # A TLS port as well (forwarded by SNI, see the next test): Envoy must accept its cluster.
  ports: [{{number: {listener_port}, name: http, protocol: HTTP}}, {{number: 8443, name: tls, protocol: TLS}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {listener_port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
"#
    );
    let cp = ControlPlane::new(&config);
    let (xds, _conns) = serve(cp.clone()).await;
    let envoy = dns.sidecar(kind, xds).await;
    let addr: SocketAddr = format!("127.0.0.1:{listener_port}").parse().unwrap();
    for (name, up) in [("a", &a), ("b", &b)] {
        let host = format!("{name}.mesh.test:{}", up.port());
        let r = eventually(
            &format!("{host} through the dynamic forward proxy"),
            Duration::from_secs(20),
            async || {
                let r = upstream::get(addr, &host, "/", &[]).await.ok()?;
                (r.status == 200).then_some(r)
            },
        )
        .await;
        assert_eq!(r.body, name, "the upstream the name and port lead to");
    }
    let asked = dns.queries();
    for name in ["a.mesh.test", "b.mesh.test"] {
        assert!(
            asked.iter().any(|q| q == name),
            "{name} resolved by DNS: {asked:?}"
        );
    }
    // A host outside the wildcard is not the dynamic forward proxy's (it falls to the
    // passthrough route instead and never reaches DNS).
    let _ = upstream::get(addr, "c.other.test", "/", &[]).await;
    assert!(!dns.queries().iter().any(|q| q == "c.other.test"));
    assert_eq!(envoy.rejections().await, 0, "{}", envoy.log());
    assert!(
        envoy
            .clusters()
            .await
            .iter()
            .any(|c| c == "outbound|8443||*.mesh.test")
    );
}

/// DYNAMIC_DNS on a TLS port: the sidecar's listener matches the wildcard host by SNI, the SNI
/// dynamic forward proxy resolves the SNI name over DNS and connects on the service port, and
/// TLS goes through untouched (the backend's `openssl s_server` answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_dns_forwards_tls_by_sni_through_dns() {
    ProxyKind::each(dynamic_dns_forwards_tls_by_sni_through_dns_on).await;
}

async fn dynamic_dns_forwards_tls_by_sni_through_dns_on(kind: ProxyKind) {
    let dns = Dns::start().await;
    let (dir, cert, key) = self_signed("mesh-dfp-tls", "db.mesh.test");
    // The backend listens on 127.0.0.1 and the sidecar on 127.0.0.2, on the same port: the
    // service port is where the dynamic forward proxy connects.
    let port = free_port();
    let _backend = TlsUpstream::start_at(&format!("127.0.0.1:{port}"), &cert, &key, &[]);
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: anything, namespace: shop}}
spec:
  hosts: ["*.mesh.test"]
  location: MESH_EXTERNAL
  resolution: DYNAMIC_DNS
  ports: [{{number: {port}, name: tls, protocol: TLS}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {port}, name: tls, protocol: TLS}}
    bind: 127.0.0.2
    captureMode: NONE
    hosts: ["./*"]
"#
    );
    let cp = ControlPlane::new(&config);
    let (xds, _conns) = serve(cp.clone()).await;
    let envoy = dns.sidecar(kind, xds).await;
    let sidecar = format!("127.0.0.2:{port}");
    let fetch = async |sni: &str| tls_get(&sidecar, sni).await;
    eventually(
        "TLS through the SNI dynamic forward proxy",
        Duration::from_secs(20),
        async || {
            fetch("db.mesh.test")
                .await
                .contains(&format!("127.0.0.1:{port}"))
                .then_some(())
        },
    )
    .await;
    assert!(
        dns.queries().iter().any(|q| q == "db.mesh.test"),
        "{:?}",
        dns.queries()
    );
    // An SNI outside the wildcard matches no chain.
    assert!(!fetch("db.other.test").await.contains("s_server"));
    assert!(!dns.queries().iter().any(|q| q == "db.other.test"));
    assert_eq!(envoy.rejections().await, 0, "{}", envoy.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A DNS server on loopback UDP that answers every A query with 127.0.0.1 (other types get an
/// empty answer) and records the names asked.
struct Dns {
    port: u16,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    async fn start() -> Dns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if let Some((name, reply)) = dns_answer(&buf[..n]) {
                    log.lock().unwrap().push(name);
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Dns { port, asked, task }
    }

    fn queries(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    /// A live sidecar Envoy (namespace shop, no capture) on `xds` whose c-ares resolver asks
    /// this server.
    async fn sidecar(&self, kind: ProxyKind, xds: SocketAddr) -> Proxy {
        let node = r#"{id: "sidecar~127.0.0.1~web.shop~shop.svc.cluster.local", cluster: web, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE}}"#;
        let resolver = format!(
            r#"typed_dns_resolver_config:
  name: envoy.network.dns_resolver.cares
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
    resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: {}, protocol: UDP}}}}]"#,
            self.port
        );
        let envoy = Proxy::start_with_extra(kind, xds, Api::Sotw, node, None, &resolver).await;
        envoy.wait_live().await;
        envoy
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The name asked in a DNS query and the reply (RFC 1035 layout: header, question, answer).
fn dns_answer(q: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).into_owned());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    let answers: u16 = u16::from(qtype == 1);
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q[0..2]); // id
    r.extend_from_slice(&[0x81, 0x80]); // response, recursion desired and available, no error
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    if qtype == 1 {
        r.extend_from_slice(&[0xc0, 12]); // the question's name
        r.extend_from_slice(&[0, 1, 0, 1]); // A, IN
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&[0, 4, 127, 0, 0, 1]);
    }
    Some((labels.join("."), r))
}

/// Sidecar ingress listeners without iptables: an HTTP port and a TCP port bound by Envoy, each
/// forwarding to its `defaultEndpoint` through an `inbound|PORT||` cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_ingress_listeners_forward_to_the_default_endpoint() {
    ProxyKind::each(sidecar_ingress_listeners_forward_to_the_default_endpoint_on).await;
}

async fn sidecar_ingress_listeners_forward_to_the_default_endpoint_on(kind: ProxyKind) {
    let app = upstream::start("app").await;
    let other = upstream::start("other").await;
    let (http_port, tcp_port, egress_port) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  ingress:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app_port}
  - port: {{number: {tcp_port}, name: tcp, protocol: TCP}}
    bind: 127.0.0.1
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app_port}
  egress:
  - port: {{number: {egress_port}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
{other_service}"#,
        app_port = app.port(),
        other_service = service("other", egress_port, &[&other]),
    );
    let h = start(kind, &config, egress_port, Api::Delta).await;
    for port in [http_port, tcp_port] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let r = eventually(
            "the inbound listener",
            Duration::from_secs(20),
            async || {
                let r = upstream::get(addr, "anything", "/", &[]).await.ok()?;
                (r.status == 200).then_some(r)
            },
        )
        .await;
        assert_eq!(r.body, "app", "port {port}");
    }
    // Outbound still goes where the registry says.
    wait_routable(&h, "other").await;
    assert_eq!(
        upstream::get(h.listener, "other", "/", &[])
            .await
            .unwrap()
            .body,
        "other"
    );
    let clusters = h.envoy.admin_get("/clusters").await.unwrap();
    assert!(clusters.contains(&format!("inbound|{http_port}||")));
    assert!(clusters.contains(&format!("inbound|{tcp_port}||")));
    assert_eq!(h.envoy.rejections().await, 0);
}

/// A sidecar's TCP port follows the mesh VirtualService's TCP route (here away from the port's
/// own service), and TLS routes become SNI filter chains that Envoy accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_tcp_routes_follow_the_virtual_service() {
    ProxyKind::each(sidecar_tcp_routes_follow_the_virtual_service_on).await;
}

async fn sidecar_tcp_routes_follow_the_virtual_service_on(kind: ProxyKind) {
    let primary = upstream::start("primary").await;
    let replica = upstream::start("replica").await;
    let port = free_port();
    let config = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {port}, name: tcp, protocol: TCP}}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./*"]
{}{}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  tls:
  - match: [{{port: {port}, sniHosts: [db.shop.svc.cluster.local]}}]
    route: [{{destination: {{host: db}}}}]
  tcp:
  - match: [{{port: {port}}}]
    route: [{{destination: {{host: db-replica}}}}]
"#,
        service_with_protocol("db", port, "TCP", &[&primary]),
        service_with_protocol("db-replica", port, "TCP", &[&replica]),
    );
    let h = start(kind, &config, port, Api::Sotw).await;
    let r = eventually("the TCP listener", Duration::from_secs(20), async || {
        let r = upstream::get(h.listener, "db", "/", &[]).await.ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.body, "replica");
    let listeners = h
        .envoy
        .admin_get("/config_dump?resource=dynamic_listeners")
        .await
        .unwrap();
    assert!(
        listeners.contains("\"db.shop.svc.cluster.local\""),
        "{listeners}"
    );
    assert!(listeners.contains("envoy.filters.listener.tls_inspector"));
    assert_eq!(h.envoy.rejections().await, 0);
}

/// Locality load balancing through a real Envoy in `us-east/a`: `distribute` splits traffic
/// 80/20 between two zones and drops the locality it does not list; `failoverPriority` puts
/// the endpoint matching the proxy's region and zone first (priority 0), the one matching only
/// the region next, and the other region last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_distribute_and_failover_priority() {
    ProxyKind::each(locality_distribute_and_failover_priority_on).await;
}

async fn locality_distribute_and_failover_priority_on(kind: ProxyKind) {
    let (a, b, c) = (
        upstream::start("a").await,
        upstream::start("b").await,
        upstream::start("c").await,
    );
    let port = free_port();
    let lb = |policy: &str| {
        format!(
            r#"{sidecar}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {pa}}}, locality: us-east/a}}
  - {{address: 127.0.0.1, ports: {{http: {pb}}}, locality: us-east/b}}
  - {{address: 127.0.0.1, ports: {{http: {pc}}}, locality: us-west/c}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  trafficPolicy:
{policy}"#,
            sidecar = sidecar(port),
            pa = a.port(),
            pb = b.port(),
            pc = c.port(),
        )
    };
    let distribute = lb(r#"    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        distribute:
        - from: us-east/a/*
          to: {"us-east/a/*": 80, "us-east/b/*": 20}
"#);
    let cp = ControlPlane::new(&distribute);
    let (xds, _conns) = serve(cp.clone()).await;
    let node = r#"{id: "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local", cluster: client, locality: {region: us-east, zone: a}, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE, LABELS: {app: client}}}"#;
    let envoy = Proxy::start(kind, xds, Api::Sotw, node).await;
    envoy.wait_live().await;
    let h = Harness {
        _cp: cp.clone(),
        envoy,
        listener: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    wait_routable(&h, "reviews").await;
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    let n = 400u32;
    for _ in 0..n {
        let r = upstream::get(h.listener, "reviews", "/", &[])
            .await
            .unwrap();
        *counts.entry(r.body).or_default() += 1;
    }
    // 80/20 within 4 standard deviations (σ = 8 for 400 requests); nothing to us-west.
    let got_a = counts.get("a").copied().unwrap_or(0);
    assert!((288..=352).contains(&got_a), "{counts:?}");
    assert_eq!(counts.get("c"), None, "{counts:?}");
    assert_eq!(
        got_a + counts.get("b").copied().unwrap_or(0),
        n,
        "{counts:?}"
    );

    cp.replace(&lb(
        r#"    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone]
"#,
    ));
    // Envoy's /clusters lists each host with its priority.
    let priority_of = |clusters: &str, port: u16| -> Option<String> {
        let prefix = format!(
            "outbound|{}||reviews.shop.svc.cluster.local::127.0.0.1:{port}::priority::",
            h.listener.port()
        );
        clusters
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    };
    let expected = [
        (a.port(), "0".to_string()),
        (b.port(), "1".to_string()),
        (c.port(), "2".to_string()),
    ];
    eventually("failover priorities", Duration::from_secs(20), async || {
        let clusters = h.envoy.admin_get("/clusters").await?;
        expected
            .iter()
            .all(|(p, want)| priority_of(&clusters, *p).as_ref() == Some(want))
            .then_some(())
    })
    .await;
    for _ in 0..20 {
        let r = upstream::get(h.listener, "reviews", "/", &[])
            .await
            .unwrap();
        assert_eq!(r.body, "a");
    }
    assert_eq!(h.envoy.rejections().await, 0);
}

/// DestinationRule client TLS with files, through a real Envoy to `openssl s_server`: SIMPLE
/// (server verified against the CA and SAN), MUTUAL (Envoy presents the client certificate the
/// server requires), and the failures: a wrong SAN, and SIMPLE against a server that requires a
/// client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_originates_tls_with_files() {
    ProxyKind::each(destination_rule_originates_tls_with_files_on).await;
}

async fn destination_rule_originates_tls_with_files_on(kind: ProxyKind) {
    let (_dir, cert, key) = self_signed("mesh-dr-tls-server", "secure.example.com");
    let (_cdir, client_cert, client_key) = self_signed("mesh-dr-tls-client", "client.example.com");
    let (simple_port, mutual_port) = (free_port(), free_port());
    let _simple = TlsUpstream::start(simple_port, &cert, &key, &[]);
    let client_ca = client_cert.display().to_string();
    let _mutual = TlsUpstream::start(
        mutual_port,
        &cert,
        &key,
        &[
            "-Verify",
            "1",
            "-verify_return_error",
            "-CAfile",
            &client_ca,
        ],
    );
    let port = free_port();
    let config = |simple_tls: &str, mutual_tls: &str| {
        let se = |name: &str, backend: u16| {
            format!(
                r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.shop.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend}}}}}]
"#
            )
        };
        let dr = |name: &str, tls: &str| {
            format!(
                r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: shop}}
spec:
  host: {name}
  trafficPolicy:
    tls: {tls}
"#
            )
        };
        format!(
            "{}{}{}{}{}",
            sidecar(port),
            se("simple", simple_port),
            se("mutual", mutual_port),
            dr("simple", simple_tls),
            dr("mutual", mutual_tls),
        )
    };
    let ca = cert.display().to_string();
    let (cc, ck) = (client_cert.display(), client_key.display());
    let good = config(
        &format!(
            "{{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [secure.example.com], sni: secure.example.com}}"
        ),
        &format!(
            "{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {cc}, privateKey: {ck}, sni: secure.example.com}}"
        ),
    );
    let h = start(kind, &good, port, Api::Sotw).await;
    for host in ["simple", "mutual"] {
        let r = eventually("TLS origination", Duration::from_secs(20), async || {
            let r = upstream::get(h.listener, host, "/", &[]).await.ok()?;
            (r.status == 200).then_some(r)
        })
        .await;
        // s_server -www answers with its status page, which names the negotiated cipher.
        assert!(r.body.contains("Cipher"), "{host}: {}", r.body);
    }
    assert_eq!(h.envoy.rejections().await, 0);

    // A SAN the server does not have, and no client certificate for the server that needs one:
    // both refused by the TLS handshake, so Envoy answers 503.
    h._cp.replace(&config(
        &format!("{{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [other.example.com]}}"),
        &format!("{{mode: SIMPLE, caCertificates: {ca}, sni: secure.example.com}}"),
    ));
    for host in ["simple", "mutual"] {
        eventually("handshake refused", Duration::from_secs(20), async || {
            let r = upstream::get(h.listener, host, "/", &[]).await.ok()?;
            (r.status == 503).then_some(())
        })
        .await;
    }
    assert_eq!(h.envoy.rejections().await, 0);
}

/// An upstream that accepts one WebSocket upgrade per connection and then echoes bytes.
async fn websocket_echo() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !head.contains("upgrade: websocket") {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n")
                    .await;
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    ProxyKind::each(websocket_upgrades_pass_through_on).await;
}

async fn websocket_upgrades_pass_through_on(kind: ProxyKind) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (echo_port, _echo) = websocket_echo().await;
    let port = free_port();
    let config = format!(
        r#"{}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: chat, namespace: shop}}
spec:
  hosts: [chat.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {echo_port}}}}}]
"#,
        sidecar(port)
    );
    let h = start(kind, &config, port, Api::Sotw).await;
    let upgrade = async || -> Option<String> {
        let mut c = tokio::net::TcpStream::connect(h.listener).await.ok()?;
        c.write_all(b"GET /chat HTTP/1.1\r\nhost: chat\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            .await
            .ok()?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if c.read(&mut b).await.ok()? == 0 {
                return None;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            return None;
        }
        // After the upgrade the connection carries raw bytes both ways.
        c.write_all(b"ping over the upgraded connection")
            .await
            .ok()?;
        let mut got = vec![0u8; 33];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&got).to_string())
    };
    let echoed = eventually("a WebSocket upgrade", Duration::from_secs(20), upgrade).await;
    assert_eq!(echoed, "ping over the upgraded connection");
    assert_eq!(h.envoy.rejections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_close_when_idle_or_too_old() {
    ProxyKind::each(upstream_connections_close_when_idle_or_too_old_on).await;
}

async fn upstream_connections_close_when_idle_or_too_old_on(kind: ProxyKind) {
    let idle_up = upstream::start("idle").await;
    let old_up = upstream::start("old").await;
    let port = free_port();
    let config = format!(
        r#"{}{}{}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: idle, namespace: shop}}
spec:
  host: idle
  trafficPolicy: {{connectionPool: {{http: {{idleTimeout: 1s}}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: old, namespace: shop}}
spec:
  host: old
  trafficPolicy: {{connectionPool: {{tcp: {{maxConnectionDuration: 1s}}}}}}
"#,
        sidecar(port),
        service("idle", port, &[&idle_up]),
        service("old", port, &[&old_up]),
    );
    let h = start(kind, &config, port, Api::Sotw).await;
    wait_routable(&h, "idle").await;
    wait_routable(&h, "old").await;
    let stat = |name: &str| {
        format!(
            "cluster.outbound|{port}||{name}.shop.svc.cluster.local.{}",
            ""
        )
    };
    // Idle: the connection closes about a second after the last request.
    eventually(
        "idle connection closed",
        Duration::from_secs(10),
        async || {
            let s = format!("{}upstream_cx_idle_timeout", stat("idle"));
            (h.envoy.stat(&s).await? >= 1).then_some(())
        },
    )
    .await;
    // Too old: the connection closes at its age limit even though it was just used.
    eventually(
        "old connection closed",
        Duration::from_secs(10),
        async || {
            let _ = upstream::get(h.listener, "old", "/", &[]).await;
            let s = format!("{}upstream_cx_max_duration_reached", stat("old"));
            (h.envoy.stat(&s).await? >= 1).then_some(())
        },
    )
    .await;
    // Both clusters keep answering with new connections.
    for host in ["idle", "old"] {
        let r = upstream::get(h.listener, host, "/", &[]).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, host));
    }
    assert_eq!(h.envoy.rejections().await, 0);
}
