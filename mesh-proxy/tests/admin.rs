//! mesh-sidecar's admin API against Envoy's: both proxies run, one after the other, against
//! the same control plane (two services, subsets, a VirtualService; a node without
//! interception and a Sidecar egress port bound on 127.0.0.1), get the same traffic, and every
//! admin answer is compared structurally:
//!
//! - `/ready` and `/server_info` before the control plane answers (PRE_INITIALIZING) and
//!   after (LIVE);
//! - `/stats` (text, `format=json`, `filter=`, `usedonly`, `type=`) and `/stats/prometheus`:
//!   every stat we print exists in Envoy with the same value, save the differences listed in
//!   [`STAT_DIFFERENCES`] (each with its reason);
//! - `/clusters` (text and JSON): the same clusters, limits and per-host lines;
//! - `/config_dump`: the same sections; clusters, listeners, route configurations and (with
//!   `include_eds`) endpoints JSON-equal once `last_updated` is removed; `resource=`, `mask=`
//!   and `name_regex=` with the same answers and errors;
//! - then a second push with a warming cluster, a warming listener, a rejected cluster and a
//!   rejected listener: the same `dynamic_warming_clusters`, `warming_state` and
//!   `error_state`;
//! - `/listeners` and `/quitquitquit`.
//!
//! Needs Envoy (`MESH_ENVOY`) and mesh-sidecar (`MESH_SIDECAR`, built with
//! `cargo build -p mesh-examples --bin mesh-sidecar`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use mesh_test_support::identity::WorkloadSds;
use mesh_test_support::proxy::{Bootstrap, XdsAt};
use mesh_test_support::upstream::{self, Upstream};
use mesh_test_support::{Api, ControlPlane, Proxy, ProxyKind, eventually, free_port};
use mesh_xds::Snapshot;
use mesh_xds::resource::{self, EncodedResource};
use mesh_xds::server::{AdsServer, SnapshotSource};
use prost::{Message, Name};
use serde_json::{Value, json};
use tokio::sync::watch;

const NODE: &str = r#"{id: "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local", cluster: client, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE, LABELS: {app: client}}}"#;

const WAIT: Duration = Duration::from_secs(30);

fn config(port: u16, v1: &Upstream, v2: &Upstream, r1: &Upstream) -> String {
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
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings, namespace: shop}}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
"#,
        v1.port(),
        v2.port(),
        r1.port()
    )
}

/// Extra resources of the second push.
struct Extras {
    /// A port the warming listener binds.
    warming_port: u16,
    /// A port held by the test, which the rejected listener cannot bind.
    busy_port: u16,
}

/// A stream's view: the translation for its node, and where its snapshots go.
type Stream = (Arc<Snapshot>, watch::Sender<Arc<Snapshot>>);

/// A control plane whose pushes the test stages: the translation of the mesh config
/// (stage 1), then that plus [`Extras`] (stage 2). The snapshot version is the stage, so both
/// proxies see the same versions.
struct Staged {
    cp: Arc<ControlPlane>,
    extras: Extras,
    stage: Mutex<u32>,
    streams: Mutex<Vec<Stream>>,
}

fn ads_source() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        initial_fetch_timeout: Some(PbDuration {
            seconds: 0,
            nanos: 0,
        }),
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn socket(port: u16) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port.into())),
            ..Default::default()
        })),
    }
}

impl Extras {
    /// `(type URL, resource)` of the second push.
    fn resources(&self) -> Vec<(&'static str, Arc<EncodedResource>)> {
        let one_second = Some(PbDuration {
            seconds: 1,
            nanos: 0,
        });
        // An EDS cluster whose assignment never comes: it warms.
        let warming = cl::Cluster {
            name: "warming-eds".into(),
            connect_timeout: one_second,
            cluster_discovery_type: Some(cl::cluster::ClusterDiscoveryType::Type(
                cl::cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cl::cluster::EdsClusterConfig {
                eds_config: Some(ads_source()),
                service_name: String::new(),
            }),
            ..Default::default()
        };
        // An ORIGINAL_DST cluster with ROUND_ROBIN: valid as a message, rejected when the
        // cluster is built (a message that fails validation would fail the whole response).
        let bad = cl::Cluster {
            name: "rejected-cluster".into(),
            connect_timeout: one_second,
            cluster_discovery_type: Some(cl::cluster::ClusterDiscoveryType::Type(
                cl::cluster::DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: cl::cluster::LbPolicy::RoundRobin as i32,
            ..Default::default()
        };
        let router = hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(),
            ))),
            ..Default::default()
        };
        // A listener whose route configuration never comes: it warms.
        let manager = hcm::HttpConnectionManager {
            stat_prefix: "warming".into(),
            route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                hcm::Rds {
                    config_source: Some(ads_source()),
                    route_config_name: "missing-route".into(),
                },
            )),
            http_filters: vec![router],
            ..Default::default()
        };
        let chain = |name: &str, m: Any| lis::FilterChain {
            filters: vec![lis::Filter {
                name: name.into(),
                config_type: Some(lis::filter::ConfigType::TypedConfig(m)),
            }],
            ..Default::default()
        };
        let warming_listener = lis::Listener {
            name: "warming-listener".into(),
            address: Some(socket(self.warming_port)),
            filter_chains: vec![chain(
                "envoy.filters.network.http_connection_manager",
                any(&manager),
            )],
            ..Default::default()
        };
        // A listener on a port the test holds: rejected.
        let proxy = tcp::TcpProxy {
            stat_prefix: "busy".into(),
            cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(
                "BlackHoleCluster".into(),
            )),
            ..Default::default()
        };
        let busy_listener = lis::Listener {
            name: "busy-listener".into(),
            address: Some(socket(self.busy_port)),
            filter_chains: vec![chain("envoy.filters.network.tcp_proxy", any(&proxy))],
            ..Default::default()
        };
        vec![
            (
                resource::CLUSTER,
                EncodedResource::new("warming-eds", &warming),
            ),
            (
                resource::CLUSTER,
                EncodedResource::new("rejected-cluster", &bad),
            ),
            (
                resource::LISTENER,
                EncodedResource::new("warming-listener", &warming_listener),
            ),
            (
                resource::LISTENER,
                EncodedResource::new("busy-listener", &busy_listener),
            ),
        ]
    }
}

impl Staged {
    fn build(&self, base: &Snapshot, stage: u32) -> Snapshot {
        let mut s = base.clone();
        s.version = stage.to_string();
        if stage >= 2 {
            for (t, r) in self.extras.resources() {
                let mut m = s
                    .resources
                    .get(t)
                    .map(|m| (**m).clone())
                    .unwrap_or_default();
                m.insert(r.name.clone(), r);
                s.resources.insert(t.to_string(), Arc::new(m));
            }
        }
        s
    }

    fn set_stage(&self, stage: u32) {
        *self.stage.lock().unwrap() = stage;
        for (base, tx) in self.streams.lock().unwrap().iter() {
            tx.send_replace(Arc::new(self.build(base, stage)));
        }
    }
}

impl SnapshotSource for Staged {
    fn watch(
        &self,
        node: &envoy_types::pb::envoy::config::core::v3::Node,
    ) -> watch::Receiver<Arc<Snapshot>> {
        let base = self.cp.watch(node).borrow().clone();
        let stage = *self.stage.lock().unwrap();
        let (tx, rx) = watch::channel(Arc::new(self.build(&base, stage)));
        self.streams.lock().unwrap().push((base, tx));
        rx
    }
}

/// Serves ADS for `source` on `addr` until the sender is fired; the task ends once the
/// listener is closed.
async fn serve_staged(
    source: Arc<Staged>,
    addr: SocketAddr,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let incoming = futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AdsServer::new(source).into_service())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}

/// An admin answer.
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn get(p: &Proxy, path: &str) -> Answer {
    let r = upstream::get(p.admin, "admin", path, &[])
        .await
        .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", p.kind));
    Answer {
        status: r.status,
        content_type: r.headers.get("content-type").cloned().unwrap_or_default(),
        body: r.body,
    }
}

/// Everything one proxy answered.
#[derive(Default)]
struct Capture {
    answers: BTreeMap<String, Answer>,
}

impl Capture {
    async fn take(&mut self, p: &Proxy, tag: &str, path: &str) {
        let a = get(p, path).await;
        self.answers.insert(format!("{tag} {path}"), a);
    }

    fn get(&self, tag: &str, path: &str) -> &Answer {
        self.answers
            .get(&format!("{tag} {path}"))
            .unwrap_or_else(|| panic!("no capture of {tag} {path}"))
    }
}

/// Stat names (or `*`-patterns) whose value or presence differs between the proxies, and why.
const STAT_DIFFERENCES: &[(&str, &str)] = &[
    (
        "cluster.xds.*",
        "mesh-sidecar's ADS stream does not go through the xds cluster's pools (only upstream_cx_total is counted)",
    ),
    (
        "cluster.sds-grpc.*",
        "mesh-sidecar's SDS streams do not go through the sds-grpc cluster's pools, and it keeps no host for a pipe endpoint (only upstream_cx_total is counted)",
    ),
    (
        "*.circuit_breakers.default.remaining_cx_pools",
        "Envoy's unlimited is 2^64-1 minus the pools in use; ours is 2^63-1 and does not count pools",
    ),
    ("server.uptime", "time"),
];

fn differs_knowingly(name: &str) -> bool {
    STAT_DIFFERENCES.iter().any(|(p, _)| matches(p, name))
}

fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Values by name from `/stats?format=json` (readouts as strings, numbers as numbers).
fn stats_of(a: &Answer) -> BTreeMap<String, Value> {
    a.json()["stats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].clone())))
        .collect()
}

/// Values by name from the text form.
fn text_stats(a: &Answer) -> BTreeMap<String, Value> {
    assert_eq!(a.status, 200, "{a:?}");
    a.body
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(t) => Value::from(t),
                None => Value::from(v.parse::<u64>().ok()?),
            };
            Some((k.to_string(), v))
        })
        .collect()
}

/// Removes the fields whose value is a time (`last_updated`, `last_update_attempt`) or a
/// message written by each proxy in its own words (`details`).
fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "last_updated" | "last_update_attempt"))
                .map(|(k, v)| {
                    if k == "details" {
                        (k.clone(), Value::from("<details>"))
                    } else {
                        (k.clone(), without_times(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        v => v.clone(),
    }
}

/// Every path of keys in a JSON value (array elements as `[]`).
fn paths(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, at: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = format!("{at}.{k}");
                    out.insert(p.clone());
                    walk(v, &p, out);
                }
            }
            Value::Array(a) => {
                for v in a {
                    walk(v, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// The sections of a config dump by type.
fn sections(dump: &Value) -> BTreeMap<String, Value> {
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["@type"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}

/// Runs one proxy through the scenario and records its answers.
async fn run(
    kind: ProxyKind,
    source: &Arc<Staged>,
    port: u16,
    xds: SocketAddr,
    sds: &std::path::Path,
) -> Capture {
    let mut cap = Capture::default();
    source.set_stage(1);
    // Before the control plane answers: the proxy's connection is accepted and held without
    // a word, so nothing is applied (and no connection fails, whatever each proxy's back-off).
    let hold = tokio::net::TcpListener::bind(xds).await.unwrap();
    let bootstrap = Bootstrap {
        sds: Some(sds),
        ..Bootstrap::ads(XdsAt::Tcp(xds), Api::Sotw, NODE)
    };
    let p = Proxy::start_with_bootstrap(kind, &bootstrap.yaml()).await;
    let held = tokio::time::timeout(WAIT, hold.accept())
        .await
        .unwrap_or_else(|_| panic!("{kind} connects to the control plane"))
        .unwrap()
        .0;
    for path in ["/ready", "/server_info"] {
        cap.take(&p, "pre", path).await;
    }
    cap.take(&p, "pre", "/stats?filter=^server%5C.state$").await;
    // Then the control plane comes up and the held stream breaks: one failed attempt each,
    // and the next connection is served.
    drop(hold);
    let (stop, served) = serve_staged(source.clone(), xds).await;
    drop(held);
    p.wait_live().await;
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The same requests on both proxies, no probing: LIVE means the listener and its routes
    // are in place.
    let send = async |host: &str, headers: &[(&str, &str)], want: u16| {
        let r = upstream::get(listener, host, "/", headers)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {host}: {e}"));
        assert_eq!(r.status, want, "{kind}: {host} {headers:?}: {r:?}");
    };
    for _ in 0..5 {
        send("reviews", &[], 200).await;
    }
    for _ in 0..2 {
        send("reviews", &[("end-user", "jason")], 200).await;
    }
    for _ in 0..3 {
        send("ratings.shop.svc.cluster.local", &[], 200).await;
    }
    send("unknown.example.com", &[], 502).await;
    // Wait until every downstream connection is closed and counted.
    let prefix = format!("127.0.0.1_{port}");
    eventually(&format!("{kind}: quiet"), WAIT, async || {
        let s = p.stats(&format!("^http.{prefix}.downstream_")).await;
        let done = s.get(&format!("http.{prefix}.downstream_rq_completed")) == Some(&11)
            && s.get(&format!("http.{prefix}.downstream_cx_active")) == Some(&0)
            && s.get(&format!("http.{prefix}.downstream_rq_active")) == Some(&0);
        done.then_some(())
    })
    .await;
    for path in [
        "/ready",
        "/server_info",
        "/stats",
        "/stats?usedonly",
        "/stats?format=json",
        "/stats?format=json&usedonly",
        "/stats?filter=cluster_manager",
        "/stats?type=Counters&filter=%5Elistener_manager",
        "/stats?type=TextReadouts",
        "/stats?format=bogus",
        "/stats?filter=%5B",
        "/stats/prometheus",
        "/stats/prometheus?usedonly",
        "/stats?format=prometheus&filter=cds",
        "/stats/prometheus?text_readouts&filter=version_text",
        "/clusters",
        "/clusters?format=json",
        "/clusters?filter=ratings",
        "/clusters?filter=%5B",
        "/config_dump",
        "/config_dump?include_eds",
        "/config_dump?resource=dynamic_active_clusters",
        "/config_dump?resource=dynamic_warming_clusters",
        "/config_dump?resource=dynamic_listeners",
        "/config_dump?resource=static_listeners",
        "/config_dump?resource=static_clusters",
        "/config_dump?resource=dynamic_route_configs",
        "/config_dump?resource=dynamic_active_secrets",
        "/config_dump?resource=dynamic_endpoint_configs",
        "/config_dump?resource=dynamic_endpoint_configs&include_eds",
        "/config_dump?resource=static_endpoint_configs&include_eds",
        "/config_dump?resource=foo",
        "/config_dump?resource=version_info",
        "/config_dump?resource=bootstrap",
        "/config_dump?resource=dynamic_active_clusters&mask=cluster.name,version_info",
        "/config_dump?resource=dynamic_listeners&mask=name",
        "/config_dump?resource=dynamic_active_clusters&mask=cluster.nope",
        "/config_dump?mask=bootstrap.node.id",
        "/config_dump?name_regex=.*ratings.*",
        "/config_dump?name_regex=ratings",
        "/config_dump?resource=dynamic_active_clusters&name_regex=.*%7Cv2%7C.*",
        "/listeners",
        "/listeners?format=json",
        "/quitquitquit",
    ] {
        cap.take(&p, "live", path).await;
    }
    // The second push: a warming cluster and listener, a rejected cluster and listener.
    source.set_stage(2);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = p.stats("_manager.*(update_rejected%7Cwarming)").await;
        let done = s.get("cluster_manager.cds.update_rejected") == Some(&1)
            && s.get("listener_manager.lds.update_rejected") == Some(&1)
            && s.get("cluster_manager.warming_clusters") == Some(&1)
            && s.get("listener_manager.total_listeners_warming") == Some(&1);
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{kind}: the second push is not applied after {WAIT:?}: {s:#?}\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [
        "/ready",
        "/config_dump",
        "/config_dump?resource=dynamic_warming_clusters",
        "/config_dump?resource=dynamic_active_clusters&name_regex=rejected-cluster",
        "/stats?format=json",
        "/clusters",
        "/listeners",
    ] {
        cap.take(&p, "second", path).await;
    }
    // /quitquitquit ends the proxy.
    let r = upstream::request(p.admin, "POST", "admin", "/quitquitquit", &[])
        .await
        .unwrap();
    cap.answers.insert(
        "quit POST /quitquitquit".into(),
        Answer {
            status: r.status,
            content_type: String::new(),
            body: r.body,
        },
    );
    eventually(
        &format!("{kind}: exits after /quitquitquit"),
        WAIT,
        async || {
            upstream::get(p.admin, "admin", "/ready", &[])
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    drop(p);
    // Stop serving, and wait until the address is free for the next proxy's control plane.
    let _ = stop.send(());
    tokio::time::timeout(WAIT, served)
        .await
        .expect("the control plane stops")
        .unwrap();
    cap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_match_envoys() {
    let v1 = upstream::start("v1").await;
    let v2 = upstream::start("v2").await;
    let r1 = upstream::start("r1").await;
    let port = free_port();
    let busy = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let source = Arc::new(Staged {
        cp: ControlPlane::new(&config(port, &v1, &v2, &r1)),
        extras: Extras {
            warming_port: free_port(),
            busy_port: busy.local_addr().unwrap().port(),
        },
        stage: Mutex::new(1),
        streams: Mutex::new(Vec::new()),
    });
    // The same control-plane address for both (it is in the bootstrap, which is dumped).
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // One agent for both, so that they hold the same secrets (their dumps compare).
    let sds = WorkloadSds::start("shop", "default");
    let envoy = run(ProxyKind::Envoy, &source, port, xds, &sds.socket).await;
    let ours = run(ProxyKind::MeshSidecar, &source, port, xds, &sds.socket).await;
    drop(busy);
    // MESH_ADMIN_CAPTURE_DIR=DIR keeps every answer of both proxies there, for a closer look.
    if let Some(dir) = std::env::var_os("MESH_ADMIN_CAPTURE_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (kind, cap) in [("envoy", &envoy), ("mesh-sidecar", &ours)] {
            for (k, a) in &cap.answers {
                let file: String = k
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                std::fs::write(dir.join(format!("{kind}-{file}")), &a.body).unwrap();
            }
        }
    }
    let mut failures = Vec::new();
    compare(&envoy, &ours, port, &mut failures);
    assert!(
        failures.is_empty(),
        "mesh-sidecar's admin answers differ from Envoy's:\n- {}",
        failures.join("\n- ")
    );
}

/// Appends a failure unless `cond`.
macro_rules! check {
    ($f:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $f.push(format!($($msg)+));
        }
    };
}

fn compare(e: &Capture, m: &Capture, port: u16, f: &mut Vec<String>) {
    // Answers that must be byte-equal (status, content type and body).
    for key in [
        "pre /ready",
        "live /ready",
        "second /ready",
        "live /clusters?filter=%5B",
        "live /config_dump?resource=foo",
        "live /config_dump?resource=version_info",
        "live /config_dump?resource=bootstrap",
        "live /config_dump?resource=dynamic_endpoint_configs",
        "live /config_dump?resource=dynamic_warming_clusters",
        "live /config_dump?resource=static_listeners",
        "live /listeners",
        "live /listeners?format=json",
        "live /quitquitquit",
        "second /listeners",
        "second /config_dump?resource=dynamic_active_clusters&name_regex=rejected-cluster",
        "quit POST /quitquitquit",
    ] {
        let (a, b) = (&e.answers[key], &m.answers[key]);
        if key.contains("name_regex=ratings") {
            // Timestamps differ; compare without them.
            check!(
                f,
                a.status == b.status && without_times(&a.json()) == without_times(&b.json()),
                "{key}: Envoy {a:?}, ours {b:?}"
            );
            continue;
        }
        check!(f, a == b, "{key}: Envoy {a:?}\n  ours {b:?}");
    }
    // The secrets from the agent both share: the same but for the times they arrived.
    let key = "/config_dump?resource=dynamic_active_secrets";
    let (a, b) = (e.get("live", key), m.get("live", key));
    check!(
        f,
        a.status == b.status
            && without_times(&a.json()) == without_times(&b.json())
            && a.json()["configs"].as_array().is_some_and(|c| c.len() == 2),
        "{key}: Envoy {a:?}\n  ours {b:?}"
    );
    let (a, b) = (
        e.get("live", "/stats?format=bogus"),
        m.get("live", "/stats?format=bogus"),
    );
    check!(
        f,
        a.status == 400 && b.status == 400 && b.body.starts_with("usage: /stats?format="),
        "/stats?format=bogus: Envoy {a:?}, ours {b:?}"
    );
    // Errors whose text names a regex error in each library's words: status and start.
    let (a, b) = (
        e.get("live", "/stats?filter=%5B"),
        m.get("live", "/stats?filter=%5B"),
    );
    check!(
        f,
        a.status == 400 && b.status == 400 && b.body.starts_with("Invalid re2 regex"),
        "/stats?filter=[: Envoy {a:?}, ours {b:?}"
    );
    let key = "/config_dump?resource=dynamic_active_clusters&mask=cluster.nope";
    let (a, b) = (e.get("live", key), m.get("live", key));
    check!(
        f,
        a.status == 400 && b.status == 400 && b.body.contains("could not be successfully used"),
        "{key}: Envoy {a:?}, ours {b:?}"
    );
    compare_server_info(e, m, f);
    compare_stats(e, m, port, f);
    compare_clusters(e, m, f);
    compare_dumps(e, m, f);
}

fn compare_server_info(e: &Capture, m: &Capture, f: &mut Vec<String>) {
    for tag in ["pre", "live"] {
        let (a, b) = (
            e.get(tag, "/server_info").json(),
            m.get(tag, "/server_info").json(),
        );
        check!(
            f,
            a["state"] == b["state"],
            "{tag} /server_info state: Envoy {}, ours {}",
            a["state"],
            b["state"]
        );
        let keys =
            |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
        for part in ["", "command_line_options", "node"] {
            let (x, y) = if part.is_empty() {
                (&a, &b)
            } else {
                (&a[part], &b[part])
            };
            check!(
                f,
                keys(x) == keys(y),
                "{tag} /server_info {part} keys: Envoy {:?}, ours {:?}",
                keys(x),
                keys(y)
            );
        }
        for k in ["hot_restart_version", "hot_restart_initializing"] {
            check!(
                f,
                a[k] == b[k],
                "/server_info {k}: Envoy {}, ours {}",
                a[k],
                b[k]
            );
        }
        for k in [
            "concurrency",
            "disable_hot_restart",
            "log_level",
            "mode",
            "drain_time",
        ] {
            let (x, y) = (&a["command_line_options"][k], &b["command_line_options"][k]);
            check!(
                f,
                x == y,
                "/server_info command_line_options.{k}: Envoy {x}, ours {y}"
            );
        }
        for k in ["id", "cluster", "metadata"] {
            let (x, y) = (&a["node"][k], &b["node"][k]);
            check!(f, x == y, "/server_info node.{k}: Envoy {x}, ours {y}");
        }
        // Each extension entry has Envoy's fields.
        let ext = |v: &Value| keys(&v["node"]["extensions"][0]);
        check!(
            f,
            ext(&a) == ext(&b),
            "/server_info node.extensions[] keys: Envoy {:?}, ours {:?}",
            ext(&a),
            ext(&b)
        );
    }
    // Envoy sets its server.state gauge when it flushes stats (every 5 s), so it reads 0 until
    // then; ours follows the state at once (PRE_INITIALIZING is 2).
    let (a, b) = (
        e.get("pre", "/stats?filter=^server%5C.state$"),
        m.get("pre", "/stats?filter=^server%5C.state$"),
    );
    check!(
        f,
        a.body == "server.state: 0\n" && b.body == "server.state: 2\n",
        "server.state before initialisation: Envoy {a:?}, ours {b:?}"
    );
}

fn compare_stats(e: &Capture, m: &Capture, port: u16, f: &mut Vec<String>) {
    for tag in ["live", "second"] {
        let (a, b) = (
            stats_of(e.get(tag, "/stats?format=json")),
            stats_of(m.get(tag, "/stats?format=json")),
        );
        for (name, v) in &b {
            if differs_knowingly(name) {
                continue;
            }
            match a.get(name) {
                None => f.push(format!("{tag}: stat {name} ({v}) is not Envoy's")),
                Some(x) if x != v => f.push(format!("{tag}: {name}: Envoy {x}, ours {v}")),
                Some(_) => {}
            }
        }
    }
    // The stats the scenario is about exist, with the traffic's values.
    let a = stats_of(e.get("live", "/stats?format=json"));
    let b = stats_of(m.get("live", "/stats?format=json"));
    let p = format!("127.0.0.1_{port}");
    let svc = |sub: &str, host: &str| {
        format!("cluster.outbound|{port}|{sub}|{host}.shop.svc.cluster.local")
    };
    for (name, want) in [
        (
            format!("{}.upstream_rq_total", svc("v1", "reviews")),
            json!(5),
        ),
        (
            format!("{}.upstream_rq_total", svc("v2", "reviews")),
            json!(2),
        ),
        (
            format!("{}.upstream_rq_total", svc("", "ratings")),
            json!(3),
        ),
        (
            format!("{}.upstream_rq_total", svc("", "reviews")),
            json!(0),
        ),
        (
            format!("{}.upstream_rq_200", svc("v1", "reviews")),
            json!(5),
        ),
        (
            format!("{}.upstream_rq_2xx", svc("v2", "reviews")),
            json!(2),
        ),
        (format!("{}.membership_total", svc("", "reviews")), json!(2)),
        (format!("{}.update_attempt", svc("v1", "reviews")), json!(2)),
        (format!("{}.version_text", svc("v1", "reviews")), json!("1")),
        (format!("http.{p}.downstream_rq_2xx"), json!(10)),
        (format!("http.{p}.downstream_rq_5xx"), json!(1)),
        (format!("http.{p}.downstream_rq_total"), json!(11)),
        (format!("http.{p}.downstream_cx_total"), json!(11)),
        (format!("listener.{p}.downstream_cx_total"), json!(11)),
        ("listener_manager.lds.update_success".into(), json!(1)),
        ("listener_manager.lds.update_attempt".into(), json!(2)),
        ("listener_manager.lds.version_text".into(), json!("1")),
        ("cluster_manager.cds.update_success".into(), json!(1)),
        // Started, the held stream broke, the first update.
        ("cluster_manager.cds.update_attempt".into(), json!(3)),
        ("cluster_manager.cds.update_failure".into(), json!(1)),
        ("cluster_manager.cds.update_rejected".into(), json!(0)),
        ("cluster_manager.cds.version_text".into(), json!("1")),
        // The bootstrap's xds and sds-grpc, and the control plane's.
        ("cluster_manager.active_clusters".into(), json!(8)),
        ("control_plane.connected_state".into(), json!(1)),
        ("server.state".into(), json!(0)),
        ("server.live".into(), json!(1)),
    ] {
        check!(
            f,
            a.get(&name) == Some(&want),
            "Envoy's {name} is {:?}, the test expects {want}",
            a.get(&name)
        );
        check!(
            f,
            b.get(&name) == Some(&want),
            "our {name} is {:?}, Envoy's {want}",
            b.get(&name)
        );
    }
    // The text form lists what the JSON form lists.
    for cap in [e, m] {
        let t = text_stats(cap.get("live", "/stats"));
        let j = stats_of(cap.get("live", "/stats?format=json"));
        let names = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<BTreeSet<_>>();
        check!(
            f,
            names(&t) == names(&j),
            "/stats text and JSON list different stats"
        );
    }
    // usedonly: no zero counter, and what traffic touched is there on both.
    for (tag, cap) in [("Envoy", e), ("ours", m)] {
        let used = stats_of(cap.get("live", "/stats?format=json&usedonly"));
        check!(
            f,
            used.contains_key(&format!("http.{p}.downstream_rq_2xx"))
                && used.contains_key(&format!("{}.upstream_rq_total", svc("v1", "reviews")))
                && !used.contains_key(&format!("{}.upstream_rq_total", svc("", "reviews"))),
            "{tag}: usedonly lists {:?}",
            used.keys()
                .filter(|k| k.starts_with("http."))
                .collect::<Vec<_>>()
        );
        let used_text = text_stats(cap.get("live", "/stats?usedonly"));
        check!(
            f,
            used_text.keys().collect::<Vec<_>>() == used.keys().collect::<Vec<_>>(),
            "{tag}: usedonly text and JSON differ"
        );
    }
    // filter= and type=: the same selection of the stats both have.
    for path in [
        "/stats?filter=cluster_manager",
        "/stats?type=Counters&filter=%5Elistener_manager",
        "/stats?type=TextReadouts",
    ] {
        let (x, y) = (
            text_stats(e.get("live", path)),
            text_stats(m.get("live", path)),
        );
        for (name, v) in &y {
            if !differs_knowingly(name) && x.get(name) != Some(v) {
                f.push(format!("{path}: {name}: Envoy {:?}, ours {v}", x.get(name)));
            }
        }
        check!(f, !y.is_empty(), "{path}: we list nothing");
        let common: Vec<_> = x
            .keys()
            .filter(|k| a.contains_key(*k) && b.contains_key(*k))
            .collect();
        for k in common {
            check!(f, y.contains_key(k), "{path}: Envoy lists {k}, we do not");
        }
    }
    compare_prometheus(e, m, port, f);
}

/// `metric{labels}` → value of a Prometheus answer, and the `# TYPE` of each metric.
fn prom(a: &Answer) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    assert_eq!(a.status, 200, "{a:?}");
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for l in a.body.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let (m, k) = t.split_once(' ').unwrap();
            types.insert(m.to_string(), k.to_string());
        } else if let Some((k, v)) = l.rsplit_once(' ') {
            samples.insert(k.to_string(), v.to_string());
        }
    }
    (samples, types)
}

fn compare_prometheus(e: &Capture, m: &Capture, port: u16, f: &mut Vec<String>) {
    let (a, at) = prom(e.get("live", "/stats/prometheus"));
    let (b, bt) = prom(m.get("live", "/stats/prometheus"));
    // Every series of ours is one of Envoy's, save the stats that differ knowingly.
    for (k, v) in &b {
        if prom_differs_knowingly(k) {
            continue;
        }
        match a.get(k) {
            None => f.push(format!("prometheus series {k} ({v}) is not Envoy's")),
            Some(x) if x != v => f.push(format!("prometheus {k}: Envoy {x}, ours {v}")),
            Some(_) => {}
        }
    }
    for (metric, t) in &bt {
        check!(
            f,
            at.get(metric) == Some(t),
            "prometheus # TYPE {metric}: Envoy {:?}, ours {t}",
            at.get(metric)
        );
    }
    // The series the scenario is about.
    let p = port;
    for k in [
        format!("envoy_cluster_shop_svc_cluster_local_upstream_rq_total{{envoy_cluster_name=\"outbound|{p}|v1|reviews\"}}"),
        format!("envoy_cluster_shop_svc_cluster_local_upstream_rq{{envoy_response_code=\"200\",envoy_cluster_name=\"outbound|{p}||ratings\"}}"),
        "envoy_http_0_0_1_PORT_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"127\"}".replace("PORT", &p.to_string()),
        format!("envoy_listener_downstream_cx_total{{envoy_listener_address=\"127.0.0.1_{p}\"}}"),
        "envoy_listener_manager_lds_update_success{}".to_string(),
        "envoy_cluster_manager_cds_update_success{}".to_string(),
        "envoy_control_plane_connected_state{}".to_string(),
        "envoy_server_state{}".to_string(),
    ] {
        check!(
            f,
            a.contains_key(&k) && a.get(&k) == b.get(&k),
            "prometheus {k}: Envoy {:?}, ours {:?}",
            a.get(&k),
            b.get(&k)
        );
    }
    for path in [
        "/stats/prometheus?usedonly",
        "/stats?format=prometheus&filter=cds",
        "/stats/prometheus?text_readouts&filter=version_text",
    ] {
        let (a, _) = prom(e.get("live", path));
        let (b, bt) = prom(m.get("live", path));
        let used = path.contains("usedonly");
        for (k, v) in &b {
            if prom_differs_knowingly(k) {
                continue;
            }
            // usedonly: Envoy lists a gauge once it was set; we keep no such mark and list
            // every gauge, so only counters are compared there.
            let metric = k.split('{').next().unwrap();
            if used && bt.get(metric).is_some_and(|t| t == "gauge") {
                continue;
            }
            check!(
                f,
                a.get(k) == Some(v),
                "{path}: {k}: Envoy {:?}, ours {v}",
                a.get(k)
            );
        }
        // What Envoy lists and we have, we list too.
        let (full, _) = prom(m.get("live", "/stats/prometheus"));
        for k in a.keys() {
            if full.contains_key(k) && !prom_differs_knowingly(k) {
                check!(f, b.contains_key(k), "{path}: Envoy lists {k}, we do not");
            }
        }
        check!(f, !b.is_empty(), "{path}: we list nothing");
    }
}

/// Prometheus series of the stats in [`STAT_DIFFERENCES`].
fn prom_differs_knowingly(k: &str) -> bool {
    k.contains("envoy_cluster_name=\"xds\"")
        || k.contains("envoy_cluster_name=\"sds-grpc\"")
        || k.contains("_circuit_breakers_default_remaining_cx_pools{")
        || k.contains("_downstream_cx_http1_total{")
        || (k.contains("_rq_total{envoy_http_conn_manager_prefix")
            && !k.contains("_downstream_rq_total{"))
        || k.starts_with("envoy_server_uptime{")
}

/// `/clusters` text: per-cluster lines (`CLUSTER::STAT::VALUE`) and per-host lines
/// (`CLUSTER::HOST::STAT` → value).
fn cluster_lines(a: &Answer) -> (BTreeSet<String>, BTreeMap<String, String>) {
    assert_eq!(a.status, 200, "{a:?}");
    let mut clusters = BTreeSet::new();
    let mut hosts = BTreeMap::new();
    for l in a.body.lines() {
        let parts: Vec<&str> = l.split("::").collect();
        // A host is an IP address or a Unix socket (a pipe endpoint).
        let is_host = parts.len() >= 4
            && (parts[1].parse::<SocketAddr>().is_ok() || parts[1].starts_with('/'));
        if is_host {
            hosts.insert(parts[..3].join("::"), parts[3..].join("::"));
        } else {
            clusters.insert(l.to_string());
        }
    }
    (clusters, hosts)
}

/// Per-host stats Envoy keeps and our hosts do not.
const HOST_STATS_WE_LACK: &[&str] = &["rq_pending_active", "rq_timeout"];

fn compare_clusters(e: &Capture, m: &Capture, f: &mut Vec<String>) {
    for (tag, path) in [
        ("live", "/clusters"),
        ("live", "/clusters?filter=ratings"),
        ("second", "/clusters"),
    ] {
        let (ac, ah) = cluster_lines(e.get(tag, path));
        let (bc, bh) = cluster_lines(m.get(tag, path));
        check!(
            f,
            ac == bc,
            "{tag} {path} cluster lines: only Envoy {:?}, only ours {:?}",
            ac.difference(&bc).collect::<Vec<_>>(),
            bc.difference(&ac).collect::<Vec<_>>()
        );
        for (k, v) in &ah {
            let stat = k.rsplit("::").next().unwrap();
            if HOST_STATS_WE_LACK.contains(&stat) {
                check!(
                    f,
                    !bh.contains_key(k),
                    "{path}: we now have {k}: update HOST_STATS_WE_LACK"
                );
                continue;
            }
            // The SDS streams reach the agent's socket without a host (see STAT_DIFFERENCES).
            if k.starts_with("sds-grpc::") {
                continue;
            }
            // The ADS stream does not go through the xds host (its connection, its request,
            // Envoy's failed first connection as rq_error).
            if k.starts_with("xds::")
                && matches!(
                    stat,
                    "cx_active"
                        | "cx_total"
                        | "cx_connect_fail"
                        | "rq_active"
                        | "rq_total"
                        | "rq_error"
                        | "rq_success"
                )
            {
                continue;
            }
            check!(
                f,
                bh.get(k) == Some(v),
                "{tag} {path} {k}: Envoy {v}, ours {:?}",
                bh.get(k)
            );
        }
        for k in bh.keys() {
            check!(f, ah.contains_key(k), "{tag} {path} {k}: not Envoy's");
        }
    }
    // JSON: the same clusters with the same fields; hosts with the same address, health,
    // weight, locality and stat names.
    let (a, b) = (
        e.get("live", "/clusters?format=json").json(),
        m.get("live", "/clusters?format=json").json(),
    );
    let by_name = |v: &Value| -> BTreeMap<String, Value> {
        v["cluster_statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c.clone()))
            .collect()
    };
    let (a, b) = (by_name(&a), by_name(&b));
    check!(
        f,
        a.keys().collect::<Vec<_>>() == b.keys().collect::<Vec<_>>(),
        "/clusters?format=json clusters: Envoy {:?}, ours {:?}",
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>()
    );
    for (name, x) in &a {
        let Some(y) = b.get(name) else { continue };
        if name == "sds-grpc" {
            // No host for its pipe endpoint (see STAT_DIFFERENCES).
            continue;
        }
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(hs) = v.get_mut("host_statuses").and_then(Value::as_array_mut) {
                for h in hs {
                    h.as_object_mut().unwrap().remove("stats");
                }
            }
            v
        };
        check!(
            f,
            strip(x) == strip(y),
            "/clusters?format=json {name}: Envoy {x:#}\n  ours {y:#}"
        );
        let stat_names = |v: &Value| -> BTreeSet<String> {
            v["host_statuses"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|h| h["stats"].as_array().unwrap().iter())
                .map(|s| s["name"].as_str().unwrap().to_string())
                .filter(|n| !HOST_STATS_WE_LACK.contains(&n.as_str()))
                .collect()
        };
        check!(
            f,
            stat_names(x) == stat_names(y),
            "/clusters?format=json {name} host stats: Envoy {:?}, ours {:?}",
            stat_names(x),
            stat_names(y)
        );
        // rq_total and rq_success of the traffic.
        if name == "xds" {
            continue;
        }
        {
            let values = |v: &Value| -> BTreeMap<String, Value> {
                v["host_statuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|h| {
                        let a = h["address"]["socket_address"]["port_value"].clone();
                        h["stats"].as_array().unwrap().iter().map(move |s| {
                            (
                                format!("{a}/{}", s["name"].as_str().unwrap()),
                                s["value"].clone(),
                            )
                        })
                    })
                    .filter(|(k, _)| {
                        !HOST_STATS_WE_LACK
                            .iter()
                            .any(|s| k.ends_with(&format!("/{s}")))
                    })
                    .collect()
            };
            check!(
                f,
                values(x) == values(y),
                "/clusters?format=json {name} host stat values: Envoy {:?}, ours {:?}",
                values(x),
                values(y)
            );
        }
    }
}

fn compare_dumps(e: &Capture, m: &Capture, f: &mut Vec<String>) {
    for (tag, path) in [
        ("live", "/config_dump"),
        ("live", "/config_dump?include_eds"),
        ("second", "/config_dump"),
    ] {
        let (a, b) = (
            sections(&e.get(tag, path).json()),
            sections(&m.get(tag, path).json()),
        );
        check!(
            f,
            a.keys().collect::<Vec<_>>() == b.keys().collect::<Vec<_>>(),
            "{tag} {path} sections: Envoy {:?}, ours {:?}",
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>()
        );
        for (t, x) in &a {
            let Some(y) = b.get(t) else { continue };
            if t.ends_with("BootstrapConfigDump") {
                // Envoy's node carries its own build and extensions.
                let mut norm = |v: &Value| {
                    let mut v = without_times(v);
                    let node = v["bootstrap"]["node"].as_object_mut().unwrap();
                    for k in ["user_agent_name", "user_agent_build_version", "extensions"] {
                        check!(
                            f,
                            node.remove(k).is_some(),
                            "{tag} {path}: no bootstrap.node.{k}"
                        );
                    }
                    v
                };
                let (x, y) = (norm(x), norm(y));
                check!(
                    f,
                    x == y,
                    "{tag} {path} bootstrap: Envoy {x:#}\n  ours {y:#}"
                );
                continue;
            }
            let (x, y) = (without_times(x), without_times(y));
            if x != y {
                let (px, py) = (paths(&x), paths(&y));
                f.push(format!(
                    "{tag} {path} {t} differs: paths only Envoy {:?}, only ours {:?}; Envoy {x:#}\n  ours {y:#}",
                    px.difference(&py).collect::<Vec<_>>(),
                    py.difference(&px).collect::<Vec<_>>()
                ));
            }
        }
        // Every resource has its time, on both.
        for cap in [e, m] {
            let v = cap.get(tag, path).json();
            let with_time = |section: &str, field: &str| {
                sections(&v)
                    .get(&format!("type.googleapis.com/envoy.admin.v3.{section}"))
                    .and_then(|s| s[field].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .all(|r| r["last_updated"].is_string())
            };
            check!(
                f,
                with_time("ClustersConfigDump", "dynamic_active_clusters")
                    && with_time("RoutesConfigDump", "dynamic_route_configs"),
                "{tag} {path}: a resource without last_updated"
            );
        }
    }
    // resource=, mask= and name_regex=: equal without the times.
    for (tag, path) in [
        ("live", "/config_dump?resource=dynamic_active_clusters"),
        ("live", "/config_dump?resource=dynamic_listeners"),
        ("live", "/config_dump?resource=static_clusters"),
        ("live", "/config_dump?resource=dynamic_route_configs"),
        (
            "live",
            "/config_dump?resource=dynamic_endpoint_configs&include_eds",
        ),
        (
            "live",
            "/config_dump?resource=static_endpoint_configs&include_eds",
        ),
        (
            "live",
            "/config_dump?resource=dynamic_active_clusters&mask=cluster.name,version_info",
        ),
        ("live", "/config_dump?resource=dynamic_listeners&mask=name"),
        ("live", "/config_dump?mask=bootstrap.node.id"),
        ("live", "/config_dump?name_regex=.*ratings.*"),
        ("live", "/config_dump?name_regex=ratings"),
        (
            "live",
            "/config_dump?resource=dynamic_active_clusters&name_regex=.*%7Cv2%7C.*",
        ),
        ("second", "/config_dump?resource=dynamic_warming_clusters"),
    ] {
        let (a, b) = (e.get(tag, path), m.get(tag, path));
        if a.status != b.status {
            f.push(format!("{tag} {path}: Envoy {a:?}, ours {b:?}"));
            continue;
        }
        let norm = |v: &Value| {
            let mut v = without_times(v);
            // The bootstrap's node has each proxy's own build.
            for c in v["configs"].as_array_mut().into_iter().flatten() {
                if let Some(n) = c
                    .pointer_mut("/bootstrap/node")
                    .and_then(Value::as_object_mut)
                {
                    for k in ["user_agent_name", "user_agent_build_version", "extensions"] {
                        n.remove(k);
                    }
                }
            }
            v
        };
        let (x, y) = (norm(&a.json()), norm(&b.json()));
        check!(f, x == y, "{tag} {path}: Envoy {x:#}\n  ours {y:#}");
        check!(
            f,
            x.get("configs")
                .is_some_and(|c| c.as_array().is_some_and(|c| !c.is_empty())),
            "{tag} {path}: empty on Envoy: {x:#}"
        );
    }
    // The second push is what the test meant: warming and rejected resources on Envoy.
    let d = e.get("second", "/config_dump").json();
    let s = sections(&d);
    let l = &s["type.googleapis.com/envoy.admin.v3.ListenersConfigDump"]["dynamic_listeners"];
    let find = |n: &str| {
        l.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .cloned()
    };
    check!(
        f,
        find("warming-listener").is_some_and(|x| x.get("warming_state").is_some()),
        "Envoy has no warming listener: {l:#}"
    );
    check!(
        f,
        find("busy-listener").is_some_and(|x| x.get("error_state").is_some()),
        "Envoy has no rejected listener: {l:#}"
    );
}
