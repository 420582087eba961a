//! Robustness, Envoy as the oracle: every scenario runs once per proxy ([`ProxyKind::each`],
//! Envoy then mesh-sidecar) and asserts what Envoy 1.40 does.
//!
//! - Bad input at the xDS edge: a NACKed listener (its port is taken) leaves the last good
//!   config serving a steady request loop without a single failure; the NACK names the
//!   listener in the control plane's connection status and `/config_dump` shows it under
//!   `dynamic_listeners[].error_state`.
//! - Bad input on the wire: garbage request lines, oversized or too many headers, invalid
//!   header values, HTTP/1.1 without Host, and a client that stops reading a large response.
//!   Each gets Envoy's status and connection handling, and other connections keep working.
//! - Updates under load: 100 pushes (route flips, clusters added and removed, endpoint
//!   changes) during a steady request loop on keep-alive connections, with zero failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_test_support::{
    Api, ControlPlane, Proxy, ProxyKind, eventually, free_port, serve_at, upstream,
};
use mesh_xds::resource;
use mesh_xds::server::{Connections, SyncStatus, TypeStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NODE_ID: &str = "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local";
const NODE: &str = r#"{id: "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local", cluster: client, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE, LABELS: {app: client}}}"#;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A Sidecar binding an egress listener on 127.0.0.1 for each of `ports` (no iptables),
/// importing the namespace, REGISTRY_ONLY.
fn sidecar(ports: &[u16]) -> String {
    let egress: String = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!(
                "  - port: {{number: {port}, name: http-{i}, protocol: HTTP}}\n    bind: 127.0.0.1\n    captureMode: NONE\n    hosts: [\"./*\"]\n"
            )
        })
        .collect();
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
{egress}  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
"#
    )
}

/// A STATIC ServiceEntry `name.shop.svc.cluster.local:port` with one endpoint per
/// `(upstream port, version label)`.
fn service(name: &str, port: u16, endpoints: &[(u16, &str)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(p, v)| {
            format!("  - {{address: 127.0.0.1, ports: {{http: {p}}}, labels: {{version: {v}}}}}\n")
        })
        .collect();
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
{eps}"#
    )
}

/// The control plane's status of `type_url` on the proxy's connection.
fn type_status(c: &Connections, type_url: &str) -> Option<TypeStatus> {
    c.list()
        .into_iter()
        .find(|x| x.node_id == NODE_ID)?
        .types
        .get(type_url)
        .cloned()
}

/// `(responses sent, every type ACKed)` over the proxy's connection.
fn sync_state(c: &Connections) -> Option<(u64, bool)> {
    let conn = c.list().into_iter().find(|x| x.node_id == NODE_ID)?;
    let pushes = conn.types.values().map(|t| t.pushes).sum();
    let synced = conn
        .types
        .values()
        .all(|t| matches!(t.status(), SyncStatus::Synced | SyncStatus::NotSent));
    Some((pushes, synced))
}

/// Sends a GET for `host` until one answers 200 with `body`.
async fn wait_body(listener: SocketAddr, host: &str, body: &str) {
    eventually(
        &format!("200 {body} from {host}"),
        Duration::from_secs(20),
        async || {
            let r = upstream::get(listener, host, "/", &[]).await.ok()?;
            (r.status == 200 && r.body == body).then_some(())
        },
    )
    .await;
}

/// The process is ours, still running (not a zombie), and its admin says LIVE.
async fn assert_alive(proxy: &Proxy) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid()))
        .unwrap_or_else(|e| panic!("{} (pid {}) is gone: {e}", proxy.kind, proxy.pid()));
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(
        !state.starts_with('Z') && !state.starts_with('X'),
        "{} exited: {state}\n{}",
        proxy.kind,
        proxy.log()
    );
    let ready = proxy.admin_get("/ready").await;
    assert_eq!(
        ready.as_deref().map(str::trim),
        Some("LIVE"),
        "{} /ready\n{}",
        proxy.kind,
        proxy.log()
    );
}

/// `dynamic_listeners` of the proxy's `/config_dump` (its `ListenersConfigDump`).
async fn dynamic_listeners(proxy: &Proxy) -> Vec<serde_json::Value> {
    let dump: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/config_dump").await.unwrap()).unwrap();
    let configs = dump["configs"].as_array().expect("configs");
    let listeners = configs
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ListenersConfigDump")
        .unwrap_or_else(|| panic!("a ListenersConfigDump in {configs:#?}"));
    listeners["dynamic_listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("dynamic_listeners in {listeners:#}"))
        .clone()
}

/// The proxy's resident set size in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A steady request loop over keep-alive connections
// ---------------------------------------------------------------------------------------------

/// What a [`RequestLoop`] saw.
#[derive(Default)]
struct LoopStats {
    ok: AtomicU64,
    /// Connections opened (the first ones included).
    connections: AtomicU64,
    failures: Mutex<Vec<String>>,
    bodies: Mutex<BTreeSet<String>>,
}

/// `conns` keep-alive HTTP/1.1 connections to `listener`, each sending a GET for `host` every
/// `every` until stopped; a response must be a 200 whose body is one of `expected`.
struct RequestLoop {
    stats: Arc<LoopStats>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl RequestLoop {
    fn start(
        listener: SocketAddr,
        host: &'static str,
        conns: usize,
        every: Duration,
        expected: &'static [&'static str],
    ) -> RequestLoop {
        let stats = Arc::new(LoopStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..conns)
            .map(|i| {
                let stats = stats.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    request_loop(i, listener, host, every, expected, &stats, &stop).await;
                })
            })
            .collect();
        RequestLoop {
            stats,
            stop,
            tasks,
            started: Instant::now(),
        }
    }

    /// Stops the loop and returns `(requests answered, failures, duration, stats)`.
    async fn stop(self) -> (u64, Vec<String>, Duration, Arc<LoopStats>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let elapsed = self.started.elapsed();
        let failures = self.stats.failures.lock().unwrap().clone();
        (
            self.stats.ok.load(Ordering::SeqCst),
            failures,
            elapsed,
            self.stats,
        )
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(listener: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(listener)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn request_loop(
    i: usize,
    listener: SocketAddr,
    host: &str,
    every: Duration,
    expected: &[&str],
    stats: &LoopStats,
    stop: &AtomicBool,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sender: Option<Sender> = None;
    let fail = |what: String| {
        stats
            .failures
            .lock()
            .unwrap()
            .push(format!("conn {i}: {what}"))
    };
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        // A connection the proxy closed cleanly (after `connection: close`, say) is replaced
        // before the next request; nothing was lost on it.
        if let Some(s) = sender.as_mut()
            && !matches!(
                tokio::time::timeout(Duration::from_secs(1), s.ready()).await,
                Ok(Ok(()))
            )
        {
            sender = None;
        }
        let s = match sender.take() {
            Some(s) => s,
            None => match connect(listener).await {
                Ok(s) => {
                    stats.connections.fetch_add(1, Ordering::SeqCst);
                    s
                }
                Err(e) => {
                    fail(e);
                    continue;
                }
            },
        };
        let mut s = s;
        let req = hyper::Request::get("/")
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(5), async {
            let resp = s
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = resp.status().as_u16();
            let close = resp
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned(), close))
        })
        .await;
        match sent {
            Err(_) => fail("no response within 5s".into()),
            Ok(Err(e)) => fail(e),
            Ok(Ok((status, body, close))) => {
                if status == 200 && expected.contains(&body.as_str()) {
                    stats.ok.fetch_add(1, Ordering::SeqCst);
                    stats.bodies.lock().unwrap().insert(body);
                } else {
                    fail(format!("{status} {body:?}"));
                }
                if !close {
                    sender = Some(s);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Bad input at the xDS edge
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_listener_keeps_the_last_good_config_serving() {
    ProxyKind::each(a_nacked_listener_keeps_the_last_good_config_serving_on).await;
}

async fn a_nacked_listener_keeps_the_last_good_config_serving_on(kind: ProxyKind) {
    eprintln!("--- {kind}: NACKed listener under a request loop");
    let a = upstream::start("a").await;
    let port = free_port();
    // A port the proxy cannot bind: valid Istio config the proxy must reject.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = blocker.local_addr().unwrap().port();
    let reviews = service("reviews", port, &[(a.port(), "a")]);
    let good = format!("{}{reviews}", sidecar(&[port]));
    let bad = format!("{}{reviews}", sidecar(&[port, busy]));
    let cp = ControlPlane::new(&good);
    let served = serve_at(cp.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(kind, served.addr, Api::Sotw, NODE).await;
    proxy.wait_live().await;
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_body(listener, "reviews", "a").await;

    let load = RequestLoop::start(listener, "reviews", 2, Duration::from_millis(5), &["a"]);
    // Some requests before the push.
    eventually(
        "requests before the push",
        Duration::from_secs(10),
        async || (load.stats.ok.load(Ordering::SeqCst) >= 50).then_some(()),
    )
    .await;

    cp.replace(&bad);
    let status = eventually("LDS NACK recorded", Duration::from_secs(10), async || {
        let s = type_status(&served.connections, resource::LISTENER)?;
        (s.status() == SyncStatus::Error).then_some(s)
    })
    .await;
    let detail = status.nack.clone().unwrap();
    eprintln!("{kind}: NACK detail: {detail:?}");
    let busy_name = format!("127.0.0.1_{busy}");
    assert!(
        detail.contains(&busy_name) && detail.contains(&busy.to_string()),
        "the NACK names the listener {busy_name}: {status:?}"
    );
    // Where the text differs from Envoy's; reported at the end, once the rest has been checked.
    let mut differences = Vec::new();
    let envoy_detail = format!(
        "Error adding/updating listener(s) {busy_name}: cannot bind '127.0.0.1:{busy}': Address already in use\n"
    );
    if detail != envoy_detail {
        differences.push(format!(
            "NACK error_detail: Envoy sends {envoy_detail:?}, got {detail:?}"
        ));
    }
    assert_eq!(
        proxy.stat("listener_manager.lds.update_rejected").await,
        Some(1),
        "{}",
        proxy.log()
    );

    // /config_dump: the rejected listener with its error_state, the good one still active.
    let listeners = dynamic_listeners(&proxy).await;
    let rejected = listeners
        .iter()
        .find(|l| l["name"] == busy_name.as_str())
        .unwrap_or_else(|| panic!("{busy_name} in dynamic_listeners: {listeners:#?}"));
    let details = rejected["error_state"]["details"]
        .as_str()
        .unwrap_or_else(|| panic!("error_state.details of {busy_name}: {rejected:#}"));
    eprintln!(
        "{kind}: rejected entry keys {:?}, error_state keys {:?}, details {details:?}",
        rejected.as_object().unwrap().keys().collect::<Vec<_>>(),
        rejected["error_state"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    assert!(
        details.contains(&busy.to_string()),
        "error_state.details names the port: {details}"
    );
    let envoy_details = format!("cannot bind '127.0.0.1:{busy}': Address already in use");
    if details != envoy_details {
        differences.push(format!(
            "error_state.details: Envoy shows {envoy_details:?}, got {details:?}"
        ));
    }
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .map(|o| o.keys().cloned().collect::<BTreeSet<_>>())
            .unwrap_or_default()
    };
    let entry_keys = keys(rejected);
    if entry_keys != ["error_state", "name"].map(String::from).into() {
        differences.push(format!(
            "the rejected dynamic_listeners entry: Envoy has fields [error_state, name], got {entry_keys:?}"
        ));
    }
    let state_keys = keys(&rejected["error_state"]);
    let envoy_state_keys: BTreeSet<String> =
        ["details", "failed_configuration", "last_update_attempt"]
            .map(String::from)
            .into();
    if state_keys != envoy_state_keys {
        differences.push(format!(
            "error_state: Envoy has fields {envoy_state_keys:?}, got {state_keys:?}"
        ));
    }
    assert_eq!(
        rejected["error_state"]["failed_configuration"]["address"]["socket_address"]["port_value"],
        busy,
        "{rejected:#}"
    );
    assert_eq!(
        rejected["error_state"]["failed_configuration"]["name"], busy_name,
        "error_state.failed_configuration is the rejected listener: {rejected:#}"
    );
    assert!(
        rejected["error_state"]["last_update_attempt"].is_string(),
        "{rejected:#}"
    );
    assert!(
        rejected.get("active_state").is_none(),
        "the rejected listener never became active: {rejected:#}"
    );
    let good_name = format!("127.0.0.1_{port}");
    let good_l = listeners
        .iter()
        .find(|l| l["name"] == good_name.as_str())
        .unwrap_or_else(|| panic!("{good_name} in dynamic_listeners: {listeners:#?}"));
    assert!(good_l["active_state"].is_object(), "{good_l:#}");
    assert!(good_l.get("error_state").is_none(), "{good_l:#}");

    // Keep the loop going on the last good config for a while after the NACK.
    let at_nack = load.stats.ok.load(Ordering::SeqCst);
    eventually(
        "requests after the NACK",
        Duration::from_secs(10),
        async || (load.stats.ok.load(Ordering::SeqCst) >= at_nack + 400).then_some(()),
    )
    .await;

    // Free the port. The rejected listener is not retried on its own (its content did not
    // change); the next LDS change (one more listener) brings it back, and both serve.
    drop(blocker);
    let third = free_port();
    cp.replace(&format!("{}{reviews}", sidecar(&[port, busy, third])));
    eventually("LDS synced again", Duration::from_secs(10), async || {
        (type_status(&served.connections, resource::LISTENER)?.status() == SyncStatus::Synced)
            .then_some(())
    })
    .await;
    // reviews has no port there: the listeners answer as REGISTRY_ONLY does for an unknown
    // host (502).
    for p in [busy, third] {
        let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
        let status = eventually(
            &format!("listener {p} answers"),
            Duration::from_secs(10),
            async || Some(upstream::get(addr, "reviews", "/", &[]).await.ok()?.status),
        )
        .await;
        eprintln!("{kind}: listener {p} answers {status}");
        assert_eq!(status, 502, "listener {p}");
    }
    let listeners = dynamic_listeners(&proxy).await;
    for p in [port, busy, third] {
        let name = format!("127.0.0.1_{p}");
        let l = listeners
            .iter()
            .find(|l| l["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} in dynamic_listeners: {listeners:#?}"));
        assert!(l["active_state"].is_object(), "{l:#}");
        assert!(l.get("error_state").is_none(), "{l:#}");
    }
    assert_eq!(
        proxy.stat("listener_manager.lds.update_rejected").await,
        Some(1),
        "{}",
        proxy.log()
    );

    let (ok, failures, elapsed, _) = load.stop().await;
    eprintln!("{kind}: {ok} requests in {elapsed:?} through the NACK, failures: {failures:?}");
    assert!(
        failures.is_empty(),
        "{kind}: failed requests: {failures:#?}"
    );
    assert_alive(&proxy).await;
    served.stop().await;
    assert!(
        differences.is_empty(),
        "{kind} differs from Envoy:\n{}",
        differences.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Bad input on the wire
// ---------------------------------------------------------------------------------------------

/// What the proxy did with one raw request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    /// The response's status, if one came.
    status: Option<u16>,
    /// Its body.
    body: String,
    /// Its `content-type`.
    content_type: Option<String>,
    /// Its `server`.
    server: Option<String>,
    /// Whether it said `connection: close`.
    close_header: bool,
    /// Whether the proxy closed the connection after it (a follow-up request on the same
    /// connection got no answer).
    closed: bool,
}

/// Reads one response head (and a `content-length` body) from `s`; `None` on EOF or reset
/// before a full head.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("a response or a close within 10s")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("the body within 10s")
            .ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((status, head, body))
}

const FOLLOW_UP: &[u8] = b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n";

/// Sends `request` on a fresh connection, reads the answer, then sends a valid request on the
/// same connection to learn whether the proxy closed it.
async fn send_raw(listener: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(listener).await.unwrap();
    // The proxy may answer and close before it read everything: a reset on write is fine.
    let _ = s.write_all(request).await;
    let first = read_response(&mut s).await;
    if let Some((status, head, body)) = &first {
        eprintln!(
            "    -> {status}, {} body bytes {:?}; head {head:?}",
            body.len(),
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    } else {
        eprintln!("    -> no response");
    }
    let closed = if s.write_all(FOLLOW_UP).await.is_err() {
        true
    } else {
        match read_response(&mut s).await {
            None => true,
            Some((status, _, body)) => {
                assert_eq!(
                    (status, body.as_slice()),
                    (200, &b"a"[..]),
                    "a follow-up request on a connection left open"
                );
                false
            }
        }
    };
    let header = |name: &str| {
        first.as_ref().and_then(|(_, head, _)| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        })
    };
    let close_header = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let (content_type, server) = (header("content-type"), header("server"));
    Answer {
        status: first.as_ref().map(|(s, _, _)| *s),
        body: first
            .map(|(_, _, b)| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        content_type,
        server,
        close_header,
        closed,
    }
}

/// One request on an already open keep-alive connection: must be `200 a`.
async fn bystander_request(s: &mut TcpStream, what: &str) {
    s.write_all(FOLLOW_UP).await.unwrap();
    let (status, _, body) = read_response(s)
        .await
        .unwrap_or_else(|| panic!("the bystander connection was closed ({what})"));
    assert_eq!((status, body.as_slice()), (200, &b"a"[..]), "{what}");
}

/// An upstream (no limits on what it reads) that answers every request with `200` and a
/// `size`-byte body of `x`s, counting the
/// bytes it managed to write and the connections that went away under it.
struct BigUpstream {
    port: u16,
    written: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    aborted: Arc<AtomicU64>,
}

async fn big_upstream(size: u64) -> BigUpstream {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let written = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let aborted = Arc::new(AtomicU64::new(0));
    let (w, r, a) = (written.clone(), requests.clone(), aborted.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (w, r, a) = (w.clone(), r.clone(), a.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request at a time: read a head, answer it.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..end);
                    r.fetch_add(1, Ordering::SeqCst);
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                    if s.write_all(head.as_bytes()).await.is_err() {
                        a.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let block = vec![b'x'; 64 * 1024];
                    let mut left = size;
                    while left > 0 {
                        let n = usize::try_from(left.min(block.len() as u64)).unwrap();
                        if s.write_all(&block[..n]).await.is_err() {
                            a.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        w.fetch_add(n as u64, Ordering::SeqCst);
                        left -= n as u64;
                    }
                }
            });
        }
    });
    BigUpstream {
        port,
        written,
        requests,
        aborted,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_envoys_answers_and_others_keep_working() {
    ProxyKind::each(bad_requests_get_envoys_answers_and_others_keep_working_on).await;
}

async fn bad_requests_get_envoys_answers_and_others_keep_working_on(kind: ProxyKind) {
    eprintln!("--- {kind}: bad input on the wire");
    let a = upstream::start("a").await;
    const BIG: u64 = 512 * 1024 * 1024;
    let big = big_upstream(BIG).await;
    let raw = big_upstream(2).await;
    let port = free_port();
    let config = format!(
        "{}{}{}{}",
        sidecar(&[port]),
        service("reviews", port, &[(a.port(), "a")]),
        service("big", port, &[(big.port, "big")]),
        service("raw", port, &[(raw.port, "raw")])
    );
    let cp = ControlPlane::new(&config);
    let served = serve_at(cp.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(kind, served.addr, Api::Sotw, NODE).await;
    proxy.wait_live().await;
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_body(listener, "reviews", "a").await;

    // A keep-alive connection that is used between the bad requests.
    let mut bystander = TcpStream::connect(listener).await.unwrap();
    bystander_request(&mut bystander, "before").await;

    // `n` headers in all, Host included, for `raw` (whose upstream has no header limit of its
    // own: the proxy adds headers, and hyper's limit is 100 too).
    let headers = |n: usize| {
        let extra: String = (1..n).map(|i| format!("x-h-{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: raw\r\n{extra}\r\n").into_bytes()
    };
    let served_ok = Answer {
        status: Some(200),
        body: "xx".into(),
        content_type: None,
        server: Some("envoy".into()),
        close_header: false,
        closed: false,
    };
    // Envoy's answer to a head its codec rejects: the status, its reason as a text body, and
    // the connection closes.
    let codec_error = |status: u16, body: &str| Answer {
        status: Some(status),
        body: body.into(),
        content_type: Some("text/plain".into()),
        server: Some("envoy".into()),
        close_header: true,
        closed: true,
    };
    let too_large = || codec_error(431, "Request Header Fields Too Large");
    let bad_request = || codec_error(400, "Bad Request");
    let cases: Vec<(&str, Vec<u8>, Answer)> = vec![
        (
            "garbage request line",
            b"\x01\x02GARBAGE NOT HTTP\r\n\r\n".to_vec(),
            bad_request(),
        ),
        (
            "request headers of 59 KiB (under the 60 KiB limit)",
            format!(
                "GET / HTTP/1.1\r\nHost: raw\r\nx-big: {}\r\n\r\n",
                "a".repeat(59 * 1024)
            )
            .into_bytes(),
            served_ok.clone(),
        ),
        (
            "request headers of 70 KiB",
            format!(
                "GET / HTTP/1.1\r\nHost: reviews\r\nx-big: {}\r\n\r\n",
                "a".repeat(70 * 1024)
            )
            .into_bytes(),
            too_large(),
        ),
        ("100 request headers (the limit)", headers(100), served_ok),
        ("101 request headers", headers(101), too_large()),
        ("150 request headers", headers(150), too_large()),
        (
            "a header value with a control character",
            b"GET / HTTP/1.1\r\nHost: reviews\r\nx-bad: a\x01b\r\n\r\n".to_vec(),
            bad_request(),
        ),
        (
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Answer {
                status: Some(400),
                body: String::new(),
                content_type: None,
                server: Some("envoy".into()),
                close_header: true,
                closed: true,
            },
        ),
    ];
    let mut differences = Vec::new();
    for (what, request, expected) in &cases {
        eprintln!("  {kind}: {what}");
        let got = send_raw(listener, request).await;
        if &got != expected {
            differences.push(format!("{what}: expected {expected:?}, got {got:?}"));
        }
        bystander_request(&mut bystander, &format!("after {what}")).await;
        assert_eq!(
            upstream::get(listener, "reviews", "/", &[])
                .await
                .map(|r| (r.status, r.body))
                .unwrap(),
            (200, "a".into()),
            "a fresh connection after {what}"
        );
        assert_alive(&proxy).await;
    }

    // A client that asks for a large response and stops reading it.
    eprintln!("  {kind}: a client that stops reading a {BIG}-byte response");
    let rss_before = rss_kib(proxy.pid());
    let mut slow = TcpStream::connect(listener).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: big\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut first))
        .await
        .expect("the response starts")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n.min(200)])
    );
    // Wait until the upstream is held back: nothing more written for a second.
    let mut last = (big.written.load(Ordering::SeqCst), Instant::now());
    let held = eventually(
        "the upstream held back by flow control",
        Duration::from_secs(30),
        async || {
            let now = big.written.load(Ordering::SeqCst);
            if now != last.0 {
                last = (now, Instant::now());
                return None;
            }
            (last.1.elapsed() >= Duration::from_secs(1)).then_some(now)
        },
    )
    .await;
    let rss_held = rss_kib(proxy.pid());
    eprintln!(
        "    -> upstream wrote {} KiB before being held back; proxy RSS {rss_before} KiB -> {rss_held} KiB",
        held / 1024
    );
    assert!(
        held < 64 * 1024 * 1024,
        "the proxy buffers what the client does not read: upstream wrote {held} of {BIG} bytes"
    );
    assert!(
        rss_held < rss_before + 128 * 1024,
        "proxy memory grew from {rss_before} KiB to {rss_held} KiB"
    );
    // Meanwhile other connections work.
    bystander_request(&mut bystander, "while a client stalls").await;
    assert_eq!(
        upstream::get(listener, "reviews", "/", &[])
            .await
            .map(|r| (r.status, r.body))
            .unwrap(),
        (200, "a".into()),
        "a fresh connection while a client stalls"
    );
    // The stalled client goes away: the proxy drops the upstream connection too.
    drop(slow);
    eventually(
        "the upstream connection closed after the client left",
        Duration::from_secs(20),
        async || (big.aborted.load(Ordering::SeqCst) == 1).then_some(()),
    )
    .await;
    assert_eq!(big.requests.load(Ordering::SeqCst), 1);
    bystander_request(&mut bystander, "after the stalled client left").await;
    assert_alive(&proxy).await;

    assert!(
        differences.is_empty(),
        "{kind} answers differently from Envoy:\n{}",
        differences.join("\n")
    );
    served.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Updates under load
// ---------------------------------------------------------------------------------------------

/// The configuration of push `i`: the reviews route flips between subsets and weights, an
/// `extra-N` service (a cluster) comes and goes, and reviews' endpoints change. Every variant
/// routes `reviews` to an upstream in `{a, b, c}`.
fn push_config(i: usize, port: u16, a: u16, b: u16, c: u16) -> String {
    let route = match i % 4 {
        0 => "[{destination: {host: reviews, subset: a}}]",
        1 => "[{destination: {host: reviews, subset: b}}]",
        2 => {
            "[{destination: {host: reviews, subset: a}, weight: 50}, {destination: {host: reviews, subset: b}, weight: 50}]"
        }
        _ => {
            "[{destination: {host: reviews, subset: a}, weight: 90}, {destination: {host: reviews, subset: b}, weight: 10}]"
        }
    };
    // c joins subset a on odd pushes.
    let mut eps = vec![(a, "a"), (b, "b")];
    if i % 2 == 1 {
        eps.push((c, "a"));
    }
    // A new extra service every third push, the previous one removed.
    let extra = service(&format!("extra-{}", i / 3), port, &[(a, "a")]);
    format!(
        r#"{}{}{extra}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets: [{{name: a, labels: {{version: a}}}}, {{name: b, labels: {{version: b}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews]
  http: [{{route: {route}}}]
"#,
        sidecar(&[port]),
        service("reviews", port, &eps),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pushes_under_load_fail_no_request() {
    ProxyKind::each(a_hundred_pushes_under_load_fail_no_request_on).await;
}

async fn a_hundred_pushes_under_load_fail_no_request_on(kind: ProxyKind) {
    for api in [Api::Sotw, Api::Delta] {
        pushes_under_load(kind, api).await;
    }
}

async fn pushes_under_load(kind: ProxyKind, api: Api) {
    eprintln!("--- {kind} ({api:?}): 100 pushes under load");
    const PUSHES: usize = 100;
    let a = upstream::start("a").await;
    let b = upstream::start("b").await;
    let c = upstream::start("c").await;
    let port = free_port();
    let cfg = |i| push_config(i, port, a.port(), b.port(), c.port());
    let cp = ControlPlane::new(&cfg(0));
    let served = serve_at(cp.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let proxy = Proxy::start(kind, served.addr, api, NODE).await;
    proxy.wait_live().await;
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_body(listener, "reviews", "a").await;
    eventually("synced", Duration::from_secs(10), async || {
        sync_state(&served.connections)?.1.then_some(())
    })
    .await;

    // 4 connections, one request every 10 ms each: up to 400 requests a second.
    let load = RequestLoop::start(
        listener,
        "reviews",
        4,
        Duration::from_millis(10),
        &["a", "b", "c"],
    );
    let pushes_before = sync_state(&served.connections).unwrap().0;
    let started = Instant::now();
    for i in 1..=PUSHES {
        let before = sync_state(&served.connections).unwrap().0;
        cp.replace(&cfg(i));
        // Each push is delivered and ACKed before the next one.
        eventually(
            &format!("push {i} ACKed"),
            Duration::from_secs(10),
            async || {
                let (pushes, synced) = sync_state(&served.connections)?;
                (pushes > before && synced).then_some(())
            },
        )
        .await;
    }
    let push_time = started.elapsed();
    // The last config is in force: push 100 routes to subset a only (i % 4 == 0), whose
    // endpoints are a alone (i is even).
    assert_eq!(PUSHES % 4, 0);
    let ok_at_end = load.stats.ok.load(Ordering::SeqCst);
    let (ok, failures, elapsed, stats) = load.stop().await;
    let responses = sync_state(&served.connections).unwrap().0 - pushes_before;
    eprintln!(
        "{kind} ({api:?}): {ok} requests in {elapsed:?} ({:.0} rps, {} connections opened) during {PUSHES} pushes ({responses} xDS responses, {push_time:?}); bodies {:?}; failures {}",
        ok as f64 / elapsed.as_secs_f64(),
        stats.connections.load(Ordering::SeqCst),
        stats.bodies.lock().unwrap(),
        failures.len()
    );
    assert!(ok_at_end > 0);
    assert!(
        failures.is_empty(),
        "{kind}: {} failed requests: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert_eq!(
        *stats.bodies.lock().unwrap(),
        ["a", "b", "c"].map(String::from).into(),
        "every upstream was reached along the way"
    );
    for _ in 0..20 {
        let r = upstream::get(listener, "reviews", "/", &[]).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "a"), "the last config");
    }
    // Clusters came and went: only the last extra service is left.
    let clusters = proxy.clusters().await;
    let extras: Vec<&String> = clusters.iter().filter(|c| c.contains("extra-")).collect();
    assert_eq!(
        extras,
        [&format!(
            "outbound|{port}||extra-{}.shop.svc.cluster.local",
            PUSHES / 3
        )],
        "{clusters:?}"
    );
    assert_eq!(proxy.rejections().await, 0, "{}", proxy.log());
    assert_alive(&proxy).await;
    served.stop().await;
}
