//! Load balancing compared statistically between Envoy 1.40 and mesh-sidecar.
//!
//! Both proxies are connected to one control plane at once, each as its own node in its own
//! namespace (`lb-envoy`, `lb-mesh`) whose Sidecar binds the egress listeners on the proxy's
//! own loopback IP (Envoy 127.0.1.1, mesh-sidecar 127.0.2.1). One service per scenario, with
//! loopback upstreams that answer with their names:
//!
//! | scenario       | configuration                                       | expected shares      |
//! |----------------|-----------------------------------------------------|----------------------|
//! | round robin    | `simple: ROUND_ROBIN`, 4 endpoints                  | 1/4 each, ±2         |
//! | random         | `simple: RANDOM`, 4 endpoints                       | 1/4 each             |
//! | weighted split | VirtualService 10/30/60 over subsets v1, v2, v3     | 0.1, 0.3, 0.6        |
//! | least request  | `simple: LEAST_REQUEST`, 4 endpoints, one slow      | the slow one < 1/8   |
//! | ring hash      | `consistentHash: {httpHeaderName, ringHash: {}}`    | same host per key    |
//! | maglev         | `consistentHash: {httpHeaderName, maglev: {}}`      | same host per key    |
//!
//! Each proxy takes [`N`] requests per scenario (8 keep-alive clients at once, within
//! [`DEADLINE`]). The shares are checked with Pearson's chi-square:
//!
//! - goodness of fit of each proxy's counts to the expected shares (df = k − 1), and
//! - homogeneity of the two proxies' counts (a 2 × k contingency table, df = k − 1),
//!
//! against the critical value of the chi-square distribution computed here
//! ([`chi2_critical`], from its survival function) for the per-test level
//! `FAMILY_P / TESTS`: Bonferroni over the [`TESTS`] tests of the file, so the chance that a
//! correct pair of proxies fails this file by bad luck is at most [`FAMILY_P`] = 0.001.
//!
//! Ring hash and maglev are deterministic: 200 distinct header values, each sent 10 times to
//! each proxy, must each land on one upstream, **the same one in both proxies** (byte-exact
//! hashing of the same endpoints), and the keys must spread over the upstreams as a uniform
//! choice would (goodness of fit over keys).
//!
//! Least request is checked with one upstream answering 100 ms late while 8 clients keep
//! requests in flight, so requests pile up on it: both proxies must send it less than half of
//! its fair share, spread the rest evenly over the fast upstreams, and give it shares that do
//! not differ (homogeneity of slow/fast counts). Least request feeds back on itself (a host
//! with requests in flight gets fewer), which makes its counts less variable than independent
//! draws: the independent-draw bound is conservative there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mesh_test_support::upstream::{self, Upstream};
use mesh_test_support::{Api, ClientSide, ControlPlane, Proxy, eventually, free_port, serve_at};
use mesh_xds::server::SyncStatus;

/// Requests per proxy and scenario.
const N: usize = 2000;

/// Clients sending at once, each over its own keep-alive connection.
const CLIENTS: usize = 8;

/// How long one proxy may take for the requests of one scenario.
const DEADLINE: Duration = Duration::from_secs(120);

/// The chance that this file fails when both proxies balance as configured.
const FAMILY_P: f64 = 0.001;

/// The chi-square tests in this file (3 each for round robin, random, the weighted split and
/// least request; 1 each for ring hash and maglev).
const TESTS: u32 = 14;

/// Distinct header values for the hash scenarios, and how often each is sent.
const KEYS: usize = 200;

/// The upstream that answers late in the least-request scenario, and how late.
const SLOW_MS: u64 = 100;

const NS: &str = "lbtest";

/// Envoy and mesh-sidecar, each with its own client namespace and bind address.
const SIDES: [ClientSide; 2] = ClientSide::pair("lb-envoy", "lb-mesh");

// ---- statistics ----

/// The complementary error function (Numerical Recipes' `erfcc`, relative error below
/// 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// P(X > x) for X chi-square distributed with `df` degrees of freedom (closed forms for
/// integer degrees of freedom).
fn chi2_sf(x: f64, df: u32) -> f64 {
    assert!(df >= 1);
    if x <= 0.0 {
        return 1.0;
    }
    let h = x / 2.0;
    if df.is_multiple_of(2) {
        // e^{-h} Σ_{i<df/2} h^i / i!
        let mut term = 1.0;
        let mut sum = 1.0;
        for i in 1..df / 2 {
            term *= h / f64::from(i);
            sum += term;
        }
        (-h).exp() * sum
    } else {
        // erfc(√h) + e^{-h} Σ_{i<(df-1)/2} h^{i+1/2} / Γ(i+3/2)
        let mut sum = 0.0;
        let mut term = h.sqrt() / (std::f64::consts::PI.sqrt() / 2.0);
        for i in 0..(df - 1) / 2 {
            sum += term;
            term *= h / (f64::from(i) + 1.5);
        }
        erfc(h.sqrt()) + (-h).exp() * sum
    }
}

/// The x with P(X > x) = p for X chi-square with `df` degrees of freedom (bisection).
fn chi2_critical(p: f64, df: u32) -> f64 {
    let (mut lo, mut hi) = (0.0_f64, 1000.0_f64);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if chi2_sf(mid, df) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// The critical value every test of this file uses for `df` degrees of freedom.
fn bound(df: u32) -> f64 {
    chi2_critical(FAMILY_P / f64::from(TESTS), df)
}

/// Pearson's statistic of `counts` against `shares` (which sum to 1).
fn goodness_of_fit(counts: &[u64], shares: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .zip(shares)
        .map(|(&o, &s)| {
            let e = n as f64 * s;
            (o as f64 - e).powi(2) / e
        })
        .sum()
}

/// Pearson's statistic of the 2 × k table of two samples' counts (categories empty in both
/// are left out).
fn homogeneity(a: &[u64], b: &[u64]) -> f64 {
    let (na, nb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    let n = na + nb;
    a.iter()
        .zip(b)
        .filter(|(x, y)| **x + **y > 0)
        .map(|(&x, &y)| {
            let col = (x + y) as f64;
            let (ea, eb) = (na * col / n, nb * col / n);
            (x as f64 - ea).powi(2) / ea + (y as f64 - eb).powi(2) / eb
        })
        .sum()
}

#[test]
fn the_chi_square_bounds_match_the_tables() {
    // Table values of the 0.999 quantile.
    for (df, q) in [
        (1, 10.828),
        (2, 13.816),
        (3, 16.266),
        (4, 18.467),
        (5, 20.515),
    ] {
        let c = chi2_critical(0.001, df);
        assert!((c - q).abs() < 0.01, "df {df}: {c} vs {q}");
    }
    // And of the 0.95 quantile.
    for (df, q) in [(1, 3.841), (2, 5.991), (3, 7.815)] {
        let c = chi2_critical(0.05, df);
        assert!((c - q).abs() < 0.01, "df {df}: {c} vs {q}");
    }
    assert!(goodness_of_fit(&[25, 25, 25, 25], &[0.25; 4]).abs() < 1e-12);
    assert!((goodness_of_fit(&[30, 20], &[0.5, 0.5]) - 2.0).abs() < 1e-12);
    assert!(homogeneity(&[10, 20, 0], &[10, 20, 0]).abs() < 1e-12);
    // [[10, 20], [20, 10]]: expected 15 everywhere, (25/15) × 4.
    assert!((homogeneity(&[10, 20], &[20, 10]) - 100.0 / 15.0).abs() < 1e-9);
}

// ---- clients ----

/// A keep-alive HTTP/1.1 client of one proxy listener.
struct Client {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client { addr, sender: None }
    }

    /// One GET with `host` and `headers`: the status and the upstream that answered.
    async fn get(
        &mut self,
        host: &str,
        headers: &[(&str, String)],
    ) -> Result<(u16, String), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().unwrap();
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut req = hyper::Request::builder().uri("/").header("host", host);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let resp = match sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.to_string());
            }
        };
        let status = resp.status().as_u16();
        let upstream = resp
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!(
                "{status} {:?}",
                String::from_utf8_lossy(&body.to_bytes())
            ));
        }
        Ok((status, upstream))
    }
}

/// Sends [`N`] requests to `addr` from [`CLIENTS`] clients at once; request `i` carries the
/// header `x-key: key-<i % KEYS>`. Returns the upstream that answered each request, by index.
async fn load(addr: SocketAddr, host: &str, keyed: bool) -> Vec<String> {
    let host = Arc::new(host.to_string());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(addr);
            let mut out = Vec::new();
            for i in (c..N).step_by(CLIENTS) {
                let headers = if keyed {
                    vec![("x-key", format!("key-{}", i % KEYS))]
                } else {
                    Vec::new()
                };
                let (_, up) = client
                    .get(&host, &headers)
                    .await
                    .unwrap_or_else(|e| panic!("request {i} to {addr} ({host}): {e}"));
                out.push((i, up));
            }
            out
        }));
    }
    let mut answers = vec![String::new(); N];
    let all = tokio::time::timeout(DEADLINE, futures::future::join_all(tasks))
        .await
        .unwrap_or_else(|_| panic!("{N} requests to {addr} ({host}) within {DEADLINE:?}"));
    for r in all {
        for (i, up) in r.unwrap() {
            answers[i] = up;
        }
    }
    eprintln!("  {N} requests to {addr} in {:?}", started.elapsed());
    answers
}

fn counts(answers: &[String], names: &[String]) -> Vec<u64> {
    for a in answers {
        assert!(names.contains(a), "answer from unknown upstream {a:?}");
    }
    names
        .iter()
        .map(|n| answers.iter().filter(|a| *a == n).count() as u64)
        .collect()
}

// ---- the scenarios ----

/// A service `lb-<name>.lbtest.svc.cluster.local` on its own port with its own upstreams.
struct Service {
    name: &'static str,
    port: u16,
    ups: Vec<Upstream>,
}

impl Service {
    async fn start(name: &'static str, endpoints: usize) -> Service {
        let mut ups = Vec::new();
        for i in 1..=endpoints {
            ups.push(upstream::start(&format!("{name}-v{i}")).await);
        }
        Service {
            name,
            port: free_port(),
            ups,
        }
    }

    fn host(&self) -> String {
        format!("lb-{}.{NS}.svc.cluster.local", self.name)
    }

    fn names(&self) -> Vec<String> {
        self.ups.iter().map(|u| u.name.clone()).collect()
    }

    /// Its ServiceEntry (endpoint `i` labelled `version: v<i>`) and a DestinationRule with
    /// `traffic_policy` (YAML flow map) and subsets v1.. .
    fn config(&self, traffic_policy: &str) -> String {
        let eps: String = self
            .ups
            .iter()
            .enumerate()
            .map(|(i, u)| {
                format!(
                    "  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v{}}}}}\n",
                    u.port(),
                    i + 1
                )
            })
            .collect();
        let subsets: String = (1..=self.ups.len())
            .map(|i| format!("  - {{name: v{i}, labels: {{version: v{i}}}}}\n"))
            .collect();
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: lb-{name}, namespace: {NS}}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: lb-{name}, namespace: {NS}}}
spec:
  host: {host}
  trafficPolicy: {traffic_policy}
  subsets:
{subsets}"#,
            name = self.name,
            host = self.host(),
            port = self.port,
        )
    }
}

/// Checks counts of both proxies against `shares` and against each other; returns a line for
/// the summary.
fn check_shares(what: &str, names: &[String], per_proxy: &[Vec<u64>; 2], shares: &[f64]) -> String {
    let df = u32::try_from(shares.len() - 1).unwrap();
    let b = bound(df);
    let fits: Vec<f64> = per_proxy
        .iter()
        .map(|c| goodness_of_fit(c, shares))
        .collect();
    let h = homogeneity(&per_proxy[0], &per_proxy[1]);
    let mut line = format!("{what}: chi-square bound {b:.2} (df {df})");
    for ((side, c), x) in SIDES.iter().zip(per_proxy).zip(&fits) {
        line.push_str(&format!("; {} {c:?} fit {x:.2}", side.kind));
    }
    line.push_str(&format!("; homogeneity {h:.2}"));
    eprintln!("{line}");
    for ((side, c), x) in SIDES.iter().zip(per_proxy).zip(&fits) {
        assert!(
            *x < b,
            "{what}: {}'s counts {c:?} over {names:?} do not fit the shares {shares:?}: \
             chi-square {x:.2} >= {b:.2}",
            side.kind
        );
    }
    assert!(
        h < b,
        "{what}: envoy {:?} and mesh-sidecar {:?} over {names:?} differ: chi-square {h:.2} >= {b:.2}",
        per_proxy[0],
        per_proxy[1]
    );
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancing_matches_between_envoy_and_mesh_sidecar() {
    let started = Instant::now();
    let rr = Service::start("round-robin", 4).await;
    let random = Service::start("random", 4).await;
    let split = Service::start("split", 3).await;
    let least = Service::start("least-request", 4).await;
    let ring = Service::start("ring-hash", 4).await;
    let maglev = Service::start("maglev", 4).await;
    let services = [&rr, &random, &split, &least, &ring, &maglev];
    let ports: Vec<u16> = services.iter().map(|s| s.port).collect();
    let mut config = String::new();
    config.push_str(&rr.config("{loadBalancer: {simple: ROUND_ROBIN}}"));
    config.push_str(&random.config("{loadBalancer: {simple: RANDOM}}"));
    config.push_str(&split.config("{loadBalancer: {simple: ROUND_ROBIN}}"));
    config.push_str(&least.config("{loadBalancer: {simple: LEAST_REQUEST}}"));
    config.push_str(&ring.config(
        "{loadBalancer: {consistentHash: {httpHeaderName: x-key, ringHash: {minimumRingSize: 1024}}}}",
    ));
    config.push_str(&maglev.config(
        "{loadBalancer: {consistentHash: {httpHeaderName: x-key, maglev: {tableSize: 65537}}}}",
    ));
    config.push_str(&format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: lb-split, namespace: {NS}}}
spec:
  hosts: [{host}]
  http:
  - route:
    - {{destination: {{host: {host}, subset: v1}}, weight: 10}}
    - {{destination: {{host: {host}, subset: v2}}, weight: 30}}
    - {{destination: {{host: {host}, subset: v3}}, weight: 60}}
"#,
        host = split.host()
    ));
    for side in &SIDES {
        config.push_str(&side.sidecar_yaml(&ports));
    }
    let cp = ControlPlane::new(&config);
    let served = serve_at(cp.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let mut proxies = Vec::new();
    for side in &SIDES {
        let p = Proxy::start(side.kind, served.addr, Api::Sotw, &side.node_yaml()).await;
        p.wait_live().await;
        proxies.push(p);
    }
    // Both ACK everything, and every service answers through both.
    eventually(
        "both proxies in sync",
        Duration::from_secs(30),
        async || {
            let conns = served.connections.list();
            let ok = SIDES.iter().all(|side| {
                conns.iter().any(|c| {
                    c.node_id == side.node_id()
                        && c.types.len() == 4
                        && c.types.values().all(|t| t.status() == SyncStatus::Synced)
                })
            });
            ok.then_some(())
        },
    )
    .await;
    for s in &services {
        for side in &SIDES {
            eventually(
                &format!("{} through {}", s.host(), side.kind),
                Duration::from_secs(30),
                async || {
                    let r = upstream::get(side.addr(s.port), &s.host(), "/", &[])
                        .await
                        .ok()?;
                    (r.status == 200).then_some(())
                },
            )
            .await;
        }
    }
    let mut summary = Vec::new();

    // Round robin: the fit, and at most 2 off the even share per upstream.
    let mut per_proxy: [Vec<u64>; 2] = Default::default();
    for (i, side) in SIDES.iter().enumerate() {
        per_proxy[i] = counts(
            &load(side.addr(rr.port), &rr.host(), false).await,
            &rr.names(),
        );
        let even = (N / rr.ups.len()) as u64;
        assert!(
            per_proxy[i].iter().all(|c| c.abs_diff(even) <= 2),
            "round robin through {}: {:?}, not {even} each",
            side.kind,
            per_proxy[i]
        );
    }
    summary.push(check_shares(
        "round robin",
        &rr.names(),
        &per_proxy,
        &[0.25; 4],
    ));

    // Random.
    for (i, side) in SIDES.iter().enumerate() {
        per_proxy[i] = counts(
            &load(side.addr(random.port), &random.host(), false).await,
            &random.names(),
        );
    }
    summary.push(check_shares(
        "random",
        &random.names(),
        &per_proxy,
        &[0.25; 4],
    ));

    // The weighted split.
    for (i, side) in SIDES.iter().enumerate() {
        per_proxy[i] = counts(
            &load(side.addr(split.port), &split.host(), false).await,
            &split.names(),
        );
    }
    summary.push(check_shares(
        "weighted split 10/30/60",
        &split.names(),
        &per_proxy,
        &[0.1, 0.3, 0.6],
    ));

    // Least request, with the first upstream slow: it gets less than half its share, the
    // fast ones share the rest evenly, and both proxies give it a like share.
    least.ups[0].seen.delay_ms.store(SLOW_MS, Ordering::SeqCst);
    let k = least.ups.len();
    for (i, side) in SIDES.iter().enumerate() {
        per_proxy[i] = counts(
            &load(side.addr(least.port), &least.host(), false).await,
            &least.names(),
        );
    }
    least.ups[0].seen.delay_ms.store(0, Ordering::SeqCst);
    let b1 = bound(1);
    let b_fast = bound(u32::try_from(k - 2).unwrap());
    let slow_fast = |c: &[u64]| [c[0], c[1..].iter().sum::<u64>()];
    let h = homogeneity(&slow_fast(&per_proxy[0]), &slow_fast(&per_proxy[1]));
    let fast_fit = |c: &[u64]| goodness_of_fit(&c[1..], &vec![1.0 / (k - 1) as f64; k - 1]);
    let share = |c: &[u64]| c[0] as f64 / N as f64;
    let mut line = format!(
        "least request ({} {SLOW_MS} ms late): bounds {b1:.2} (df 1), {b_fast:.2} (df {})",
        least.ups[0].name,
        k - 2
    );
    for (side, c) in SIDES.iter().zip(&per_proxy) {
        line.push_str(&format!(
            "; {} {c:?} slow {:.1}% fast fit {:.2}",
            side.kind,
            share(c) * 100.0,
            fast_fit(c)
        ));
    }
    line.push_str(&format!("; slow/fast homogeneity {h:.2}"));
    eprintln!("{line}");
    for (side, c) in SIDES.iter().zip(&per_proxy) {
        assert!(
            share(c) < 0.5 / k as f64,
            "least request through {}: the slow upstream got {:.1}% ({c:?}), not under {:.1}%",
            side.kind,
            share(c) * 100.0,
            50.0 / k as f64
        );
        assert!(
            fast_fit(c) < b_fast,
            "least request through {}: the fast upstreams {:?} are not evenly used: \
             chi-square {:.2} >= {b_fast:.2}",
            side.kind,
            &c[1..],
            fast_fit(c)
        );
    }
    assert!(
        h < b1,
        "least request: the slow upstream's share differs: envoy {:?}, mesh-sidecar {:?}: \
         chi-square {h:.2} >= {b1:.2}",
        per_proxy[0],
        per_proxy[1]
    );
    summary.push(line);

    // Ring hash and maglev: one upstream per key, the same in both proxies, keys spread
    // evenly.
    for s in [&ring, &maglev] {
        let mut choice: [BTreeMap<String, BTreeSet<String>>; 2] = Default::default();
        for (i, side) in SIDES.iter().enumerate() {
            let answers = load(side.addr(s.port), &s.host(), true).await;
            for (n, up) in answers.into_iter().enumerate() {
                choice[i]
                    .entry(format!("key-{}", n % KEYS))
                    .or_default()
                    .insert(up);
            }
        }
        let mut differ = Vec::new();
        for (side, c) in SIDES.iter().zip(&choice) {
            let unstable: Vec<_> = c.iter().filter(|(_, ups)| ups.len() != 1).collect();
            assert!(
                unstable.is_empty(),
                "{}: {} sent a key to several upstreams: {unstable:?}",
                s.name,
                side.kind
            );
        }
        for (key, ups) in &choice[0] {
            if choice[1].get(key) != Some(ups) {
                differ.push(format!(
                    "{key}: envoy {ups:?}, mesh-sidecar {:?}",
                    choice[1].get(key)
                ));
            }
        }
        let names = s.names();
        let by_key: Vec<String> = choice[0]
            .values()
            .map(|u| u.iter().next().unwrap().clone())
            .collect();
        let c = counts(&by_key, &names);
        let b = bound(u32::try_from(names.len() - 1).unwrap());
        let x = goodness_of_fit(&c, &vec![1.0 / names.len() as f64; names.len()]);
        let line = format!(
            "{}: {KEYS} keys, {} chosen alike by both; envoy's keys per upstream {c:?} fit {x:.2} \
             (bound {b:.2})",
            s.name,
            KEYS - differ.len()
        );
        eprintln!("{line}");
        summary.push(line);
        assert!(
            differ.is_empty(),
            "{}: {} of {KEYS} keys go to another upstream in mesh-sidecar than in envoy:\n{}",
            s.name,
            differ.len(),
            differ.join("\n")
        );
        assert!(
            x < b,
            "{}: keys per upstream {c:?} are not spread evenly: chi-square {x:.2} >= {b:.2}",
            s.name
        );
    }

    for (side, p) in SIDES.iter().zip(&proxies) {
        assert_eq!(
            p.rejections().await,
            0,
            "{} rejected:\n{}",
            side.kind,
            p.log()
        );
    }
    for c in served.connections.list() {
        let nacks: u64 = c.types.values().map(|t| t.nacks).sum();
        assert_eq!(nacks, 0, "{}: {:#?}", c.node_id, c.types);
    }
    eprintln!(
        "load balancing, {N} requests per proxy and scenario, in {:?}:\n{}",
        started.elapsed(),
        summary.join("\n")
    );
}
