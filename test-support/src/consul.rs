//! An in-process fake Consul server (HTTP/1.1 on `127.0.0.1:0`) for testing a Consul registry
//! adapter, driven from tests through [`FakeConsul`] or by real clients through
//! `PUT /v1/catalog/register` and `/v1/catalog/deregister`.
//!
//! # Faithful to Consul's HTTP API
//!
//! - `GET /v1/catalog/services` (`{"name": [tags]}`), `GET /v1/catalog/service/:name` (`tag`,
//!   repeated tags must all match, case-insensitively; `dc`), `GET /v1/health/service/:name`
//!   (`passing`, `tag`, `dc`; entries `{Node, Service, Checks}`), `GET /v1/catalog/nodes`,
//!   `GET /v1/catalog/datacenters`, `GET /v1/status/leader`, `PUT /v1/catalog/register` and
//!   `PUT /v1/catalog/deregister` (request keys matched case-insensitively, as Consul's decoder
//!   does; both answer `true`). JSON field names and casing are Consul's.
//! - Like a real server, the catalog starts with the server's own node (`consul-server`, with
//!   the `consul` service on port 8300), and every node has the `serfHealth` node check, which
//!   applies to all of its services.
//! - One raft-like index: each write takes the next index and stamps what it changed
//!   (`CreateIndex`/`ModifyIndex`); an idempotent re-registration changes no `ModifyIndex`.
//!   `/catalog/services` reports the index of the last service write (deregistrations
//!   included); `/catalog/service/:name` and `/health/service/:name` report the last write that
//!   touched that service name (instances, their checks or their nodes), else the services
//!   index; `/catalog/nodes` the last node write. Never 0 (unless a knob says so).
//! - Blocking queries: `index` + `wait` (Go durations, `10s`, `600000ms`, `1m30s`, `1.5h`;
//!   default 5 min, clamped to 10 min, plus up to `wait/16` jitter, which
//!   [`FakeConsul::set_jitter`] switches off). A query returns as soon as its own index passes
//!   `index`, or at the wait limit with the unchanged result. A snapshot-like
//!   [`FakeConsul::reset_index`] wakes every blocked query at once (Consul abandons its state
//!   store), which then reports the lower index.
//! - Headers on the blocking endpoints: `X-Consul-Index`, `X-Consul-KnownLeader`,
//!   `X-Consul-LastContact`, `X-Consul-Effective-Consistency` (`leader`, `stale`,
//!   `consistent`). As in Consul, `/catalog/datacenters`, `/status/leader` and the writes carry
//!   none of them.
//! - Errors as plain text: 400 `Invalid wait time`, `Invalid index`,
//!   `Cannot specify ?stale with ?consistent, conflicting semantics.`; 403 `ACL not found`
//!   (unknown token) and `Permission denied` (anonymous write); 500 `No cluster leader` (with
//!   `X-Consul-KnownLeader: false`; `?stale` reads still succeed without a leader) and
//!   `No path to datacenter` (a `dc` other than `dc1`).
//! - ACL tokens from `X-Consul-Token`, `Authorization: Bearer` or `?token=`. With ACLs on and
//!   a default-deny policy, a request without a token reads as the anonymous token: empty
//!   results with `X-Consul-Results-Filtered-By-ACLs: true`.
//!
//! - Fault knobs: the index goes backwards ([`FakeConsul::reset_index`]), index 0
//!   ([`FakeConsul::set_zero_index`]), early return with the same index
//!   ([`FakeConsul::wake_blocked`]), no leader ([`FakeConsul::set_leader`]), 429 above N
//!   concurrent connections ([`FakeConsul::set_max_conns`]), slow answers
//!   ([`FakeConsul::set_delay`]), a connection dropped mid-body
//!   ([`FakeConsul::truncate_next`]); duplicate service IDs across nodes, an empty
//!   `ServiceAddress` and proxy or gateway kinds are plain registrations. The request log
//!   ([`FakeConsul::requests`]) lets tests count requests.
//!
//! # Not faithful
//!
//! - One datacenter (`dc1`), no namespaces or partitions (`ns`/`partition` are ignored), no
//!   `filter=` expressions, `node-meta=`, `near=`, KV, agent endpoints, sessions or connect.
//! - ACL tokens are all-or-nothing (a known token may do anything); no policies.
//! - Empty tag lists are `[]` (Consul may send `null`); tags in `/catalog/services` are sorted
//!   and deduplicated (Consul's order is unspecified).
//! - No consistency semantics beyond the headers: every mode reads the same state.

use std::collections::{BTreeMap, BTreeSet};

use crate::form;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

/// The fake's datacenter.
pub const DATACENTER: &str = "dc1";
/// The server's own node, registered at start.
pub const SERVER_NODE: &str = "consul-server";
/// Consul's default blocking wait.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul's maximum blocking wait.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// A check status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// `passing`.
    Passing,
    /// `warning`.
    Warning,
    /// `critical`.
    Critical,
}

impl Health {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Health> {
        match s {
            "passing" => Some(Health::Passing),
            "warning" => Some(Health::Warning),
            "critical" => Some(Health::Critical),
            _ => None,
        }
    }
}

/// A catalog node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its name (`Node`).
    pub name: String,
    /// Its IP (`Address`).
    pub address: String,
    /// `NodeMeta` / `Meta`.
    pub meta: BTreeMap<String, String>,
}

impl Node {
    /// A node without metadata.
    pub fn new(name: &str, address: &str) -> Node {
        Node {
            name: name.to_string(),
            address: address.to_string(),
            meta: BTreeMap::new(),
        }
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: &str, value: &str) -> Node {
        self.meta.insert(key.to_string(), value.to_string());
        self
    }
}

/// A service instance registered on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `ID` (unique per node).
    pub id: String,
    /// `Service` (the name).
    pub name: String,
    /// `Tags`.
    pub tags: Vec<String>,
    /// `Meta`.
    pub meta: BTreeMap<String, String>,
    /// `Address`; empty means "use the node's address".
    pub address: String,
    /// `Port`.
    pub port: u16,
    /// `Kind`: empty for a typical service, else `connect-proxy`, `mesh-gateway`, ….
    pub kind: String,
}

impl Service {
    /// A service with no tags, metadata or address of its own.
    pub fn new(id: &str, name: &str, port: u16) -> Service {
        Service {
            id: id.to_string(),
            name: name.to_string(),
            tags: Vec::new(),
            meta: BTreeMap::new(),
            address: String::new(),
            port,
            kind: String::new(),
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: &str) -> Service {
        self.tags.push(tag.to_string());
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: &str, value: &str) -> Service {
        self.meta.insert(key.to_string(), value.to_string());
        self
    }

    /// Sets the service's own address.
    pub fn address(mut self, address: &str) -> Service {
        self.address = address.to_string();
        self
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: &str) -> Service {
        self.kind = kind.to_string();
        self
    }
}

#[derive(Clone, Debug)]
struct Stamped<T> {
    value: T,
    create: u64,
    modify: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Check {
    id: String,
    name: String,
    status: Health,
    service_id: String,
}

#[derive(Default)]
struct State {
    index: u64,
    /// Bumped by [`FakeConsul::reset_index`] and [`FakeConsul::wake_blocked`]: blocked queries
    /// return at once.
    generation: u64,
    nodes: BTreeMap<String, Stamped<Node>>,
    /// Keyed by (node, service ID).
    services: BTreeMap<(String, String), Stamped<Service>>,
    /// Keyed by (node, check ID).
    checks: BTreeMap<(String, String), Stamped<Check>>,
    /// Index of the last write per table (`nodes`, `services`) and per `service:<name>`.
    tables: BTreeMap<String, u64>,
    leader: bool,
    last_contact_ms: u64,
    zero_index: bool,
    jitter: bool,
    /// Known tokens when ACLs are on.
    acl: Option<BTreeSet<String>>,
    log: Vec<String>,
    /// Open connections, and the cap above which new ones get 429.
    conns: usize,
    max_conns: Option<usize>,
    delay: Duration,
    /// How many more blocking-read answers lose their connection mid-body.
    truncate: usize,
}

impl State {
    fn next(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn touch(&mut self, table: &str, idx: u64) {
        self.tables.insert(table.to_string(), idx);
    }

    fn table(&self, table: &str) -> u64 {
        self.tables.get(table).copied().unwrap_or(0)
    }

    fn touch_service_name(&mut self, name: &str, idx: u64) {
        self.touch(&format!("service:{name}"), idx);
    }

    /// Names of services on `node`.
    fn names_on(&self, node: &str) -> BTreeSet<String> {
        self.services
            .iter()
            .filter(|((n, _), _)| n == node)
            .map(|(_, s)| s.value.name.clone())
            .collect()
    }

    fn upsert_node(&mut self, node: &Node) -> bool {
        if let Some(existing) = self.nodes.get(&node.name)
            && existing.value == *node
        {
            return false;
        }
        let idx = self.next();
        let create = self.nodes.get(&node.name).map_or(idx, |n| n.create);
        self.nodes.insert(
            node.name.clone(),
            Stamped {
                value: node.clone(),
                create,
                modify: idx,
            },
        );
        self.touch("nodes", idx);
        for name in self.names_on(&node.name) {
            self.touch_service_name(&name, idx);
        }
        self.checks
            .entry((node.name.clone(), "serfHealth".to_string()))
            .or_insert_with(|| Stamped {
                value: Check {
                    id: "serfHealth".to_string(),
                    name: "Serf Health Status".to_string(),
                    status: Health::Passing,
                    service_id: String::new(),
                },
                create: idx,
                modify: idx,
            });
        true
    }

    fn upsert_service(&mut self, node: &str, svc: &Service) {
        let key = (node.to_string(), svc.id.clone());
        if let Some(existing) = self.services.get(&key)
            && existing.value == *svc
        {
            return;
        }
        let idx = self.next();
        let (create, old_name) = match self.services.get(&key) {
            Some(s) => (s.create, Some(s.value.name.clone())),
            None => (idx, None),
        };
        self.services.insert(
            key,
            Stamped {
                value: svc.clone(),
                create,
                modify: idx,
            },
        );
        self.touch("services", idx);
        self.touch_service_name(&svc.name, idx);
        if let Some(old) = old_name {
            self.touch_service_name(&old, idx);
        }
    }

    fn upsert_check(&mut self, node: &str, check: Check) {
        let key = (node.to_string(), check.id.clone());
        if let Some(existing) = self.checks.get(&key)
            && existing.value == check
        {
            return;
        }
        let idx = self.next();
        let create = self.checks.get(&key).map_or(idx, |c| c.create);
        let touched: BTreeSet<String> = if check.service_id.is_empty() {
            self.names_on(node)
        } else {
            self.services
                .get(&(node.to_string(), check.service_id.clone()))
                .map(|s| s.value.name.clone())
                .into_iter()
                .collect()
        };
        self.checks.insert(
            key,
            Stamped {
                value: check,
                create,
                modify: idx,
            },
        );
        self.touch("checks", idx);
        for name in touched {
            self.touch_service_name(&name, idx);
        }
    }

    /// Removes one service instance and its checks.
    fn remove_service(&mut self, node: &str, id: &str) -> bool {
        let Some(old) = self.services.remove(&(node.to_string(), id.to_string())) else {
            return false;
        };
        let idx = self.next();
        self.checks
            .retain(|(n, _), c| !(n == node && c.value.service_id == id));
        self.touch("services", idx);
        self.touch("checks", idx);
        self.touch_service_name(&old.value.name, idx);
        true
    }

    fn remove_check(&mut self, node: &str, id: &str) -> bool {
        let Some(old) = self.checks.remove(&(node.to_string(), id.to_string())) else {
            return false;
        };
        let idx = self.next();
        self.touch("checks", idx);
        let names = if old.value.service_id.is_empty() {
            self.names_on(node)
        } else {
            self.services
                .get(&(node.to_string(), old.value.service_id.clone()))
                .map(|s| s.value.name.clone())
                .into_iter()
                .collect()
        };
        for name in names {
            self.touch_service_name(&name, idx);
        }
        true
    }

    fn remove_node(&mut self, node: &str) -> bool {
        if self.nodes.remove(node).is_none() {
            return false;
        }
        let names = self.names_on(node);
        let idx = self.next();
        self.services.retain(|(n, _), _| n != node);
        self.checks.retain(|(n, _), _| n != node);
        self.touch("nodes", idx);
        self.touch("services", idx);
        self.touch("checks", idx);
        for name in names {
            self.touch_service_name(&name, idx);
        }
        true
    }
}

/// Shared between the server task and the handle.
struct Shared {
    state: Mutex<State>,
    /// Sent to on every write (and reset) to wake blocked queries.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Consul's answer above `limits.http_max_conns_per_client`.
pub const TOO_MANY_CONNS: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls\n";

/// Counts a connection while it is open.
struct OpenConn(Arc<Shared>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.conns = s.conns.saturating_sub(1);
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn to_box(resp: Response<Full<Bytes>>) -> Response<Body> {
    resp.map(|b| b.map_err(|never| match never {}).boxed())
}

/// [`handle`], then the slow-response and truncation knobs.
async fn respond(shared: &Shared, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let resp = handle(shared, req).await;
    let (delay, truncate) = {
        let mut s = shared.lock();
        let truncate = s.truncate > 0 && resp.headers().contains_key("X-Consul-Index");
        if truncate {
            s.truncate -= 1;
        }
        (s.delay, truncate)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if !truncate {
        return to_box(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    // A declared length the body never reaches: the client sees the connection drop mid-body.
    parts.headers.insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(bytes.len()),
    );
    let half = bytes.slice(..bytes.len() / 2);
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = vec![
        Ok(hyper::body::Frame::data(half)),
        Err(std::io::Error::other("connection dropped by the fake")),
    ];
    let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
    Response::from_parts(parts, body.boxed())
}

/// A running fake Consul server; it stops when dropped.
pub struct FakeConsul {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// Dropped with the handle: every open connection (blocked queries too) ends.
    _stop: tokio::sync::watch::Sender<()>,
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeConsul {
    /// Starts a server on `127.0.0.1:0` with a leader, ACLs off, jitter on, and the server's
    /// own node and `consul` service registered.
    pub async fn start() -> std::io::Result<FakeConsul> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut state = State {
            leader: true,
            jitter: true,
            ..State::default()
        };
        state.upsert_node(&Node::new(SERVER_NODE, "127.0.0.1"));
        state.upsert_service(SERVER_NODE, &Service::new("consul", "consul", 8300));
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed,
        });
        let server = shared.clone();
        let (stop, stopped) = tokio::sync::watch::channel(());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let shared = server.clone();
                let mut stopped = stopped.clone();
                let over = {
                    let mut s = shared.lock();
                    s.conns += 1;
                    s.max_conns.is_some_and(|max| s.conns > max)
                };
                tokio::spawn(async move {
                    let _open = OpenConn(shared.clone());
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            if over {
                                return Ok::<_, Infallible>(to_box(text(
                                    StatusCode::TOO_MANY_REQUESTS,
                                    TOO_MANY_CONNS,
                                )));
                            }
                            Ok::<_, Infallible>(respond(&shared, req).await)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!over)
                        .serve_connection(io, svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(FakeConsul {
            addr,
            shared,
            task,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current raft index.
    pub fn index(&self) -> u64 {
        self.shared.lock().index
    }

    fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.shared.lock());
        self.shared.notify();
        out
    }

    /// Registers (or updates) `node` and `service` on it, as `PUT /v1/catalog/register`
    /// would; returns the raft index afterwards.
    pub fn register(&self, node: &Node, service: &Service) -> u64 {
        self.write(|s| {
            s.upsert_node(node);
            s.upsert_service(&node.name, service);
            s.index
        })
    }

    /// Removes every instance with this service ID (on any node) and its checks; returns the
    /// raft index afterwards.
    pub fn deregister(&self, service_id: &str) -> u64 {
        self.write(|s| {
            let keys: Vec<(String, String)> = s
                .services
                .keys()
                .filter(|(_, id)| id == service_id)
                .cloned()
                .collect();
            for (node, id) in keys {
                s.remove_service(&node, &id);
            }
            s.index
        })
    }

    /// Removes a node with all its services and checks.
    pub fn deregister_node(&self, node: &str) -> u64 {
        self.write(|s| {
            s.remove_node(node);
            s.index
        })
    }

    /// Sets the status of the check `service:<id>` on every instance with this service ID
    /// (creating it); returns the raft index afterwards.
    pub fn set_check(&self, service_id: &str, status: Health) -> u64 {
        self.write(|s| {
            let nodes: Vec<String> = s
                .services
                .keys()
                .filter(|(_, id)| id == service_id)
                .map(|(n, _)| n.clone())
                .collect();
            for node in nodes {
                s.upsert_check(
                    &node,
                    Check {
                        id: format!("service:{service_id}"),
                        name: format!("Service '{service_id}' check"),
                        status,
                        service_id: service_id.to_string(),
                    },
                );
            }
            s.index
        })
    }

    /// Sets the node's `serfHealth` check (critical: every service on it fails).
    pub fn set_node_health(&self, node: &str, status: Health) -> u64 {
        self.write(|s| {
            if s.nodes.contains_key(node) {
                s.upsert_check(
                    node,
                    Check {
                        id: "serfHealth".to_string(),
                        name: "Serf Health Status".to_string(),
                        status,
                        service_id: String::new(),
                    },
                );
            }
            s.index
        })
    }

    /// Fault: the index goes backwards (a snapshot restore). The raft index becomes `to`
    /// (at least 1), every stamp above it is lowered to it, and every blocked query returns at
    /// once.
    pub fn reset_index(&self, to: u64) {
        self.write(|s| {
            let to = to.max(1);
            s.index = to;
            s.generation += 1;
            let clamp = |v: &mut u64| *v = (*v).min(to);
            for n in s.nodes.values_mut() {
                clamp(&mut n.create);
                clamp(&mut n.modify);
            }
            for v in s.services.values_mut() {
                clamp(&mut v.create);
                clamp(&mut v.modify);
            }
            for c in s.checks.values_mut() {
                clamp(&mut c.create);
                clamp(&mut c.modify);
            }
            for v in s.tables.values_mut() {
                clamp(v);
            }
        });
    }

    /// Fault: with `false`, reads answer 500 `No cluster leader` with
    /// `X-Consul-KnownLeader: false` (`?stale` reads still answer) and `/status/leader` is `""`.
    pub fn set_leader(&self, leader: bool) {
        self.write(|s| s.leader = leader);
    }

    /// The `X-Consul-LastContact` value in milliseconds (0 by default).
    pub fn set_last_contact_ms(&self, ms: u64) {
        self.shared.lock().last_contact_ms = ms;
    }

    /// Fault: report `X-Consul-Index: 0` on every blocking endpoint (a known Consul bug).
    pub fn set_zero_index(&self, zero: bool) {
        self.shared.lock().zero_index = zero;
    }

    /// Switches the `wait/16` jitter on or off (on by default).
    pub fn set_jitter(&self, on: bool) {
        self.shared.lock().jitter = on;
    }

    /// Turns ACLs on (default deny) with these tokens known, or off with `None`.
    pub fn set_acl(&self, tokens: Option<&[&str]>) {
        self.shared.lock().acl = tokens.map(|t| t.iter().map(|s| s.to_string()).collect());
    }

    /// Fault: wakes every blocked query now; each answers with its unchanged index (what an
    /// idempotent write or a spurious wakeup looks like to a client).
    pub fn wake_blocked(&self) {
        self.write(|s| s.generation += 1);
    }

    /// Fault: connections beyond `max` open at once are answered 429 [`TOO_MANY_CONNS`] and
    /// closed (Consul's `limits.http_max_conns_per_client`; all clients here share one IP).
    /// `None` lifts the cap.
    pub fn set_max_conns(&self, max: Option<usize>) {
        self.shared.lock().max_conns = max;
    }

    /// Fault: every answer is held back this long (after a blocking query has decided).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Fault: the next `n` answers from blocking endpoints send their headers and half their
    /// body, then the connection drops.
    pub fn truncate_next(&self, n: usize) {
        self.shared.lock().truncate = n;
    }

    /// Every request so far, as `path?query` (the query as sent), oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    /// How many requests had this path (query ignored).
    pub fn request_count(&self, path: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.split('?').next() == Some(path))
            .count()
    }
}

/// Parses a Go duration (`time.ParseDuration`): `0`, or an optionally signed sequence of
/// decimal numbers with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`. Negative durations come
/// back as zero.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * nanos_per;
    }
    if !total.is_finite() || total > 9.2e18 {
        return None;
    }
    if neg {
        return Some(Duration::ZERO);
    }
    Some(Duration::from_nanos(total as u64))
}

/// The wait a blocking query gets for its `wait` parameter, before jitter: [`DEFAULT_WAIT`]
/// when absent, zero or negative, clamped to [`MAX_WAIT`]; `None` when it does not parse
/// (Consul answers 400 `Invalid wait time`).
pub fn blocking_wait(wait: Option<&str>) -> Option<Duration> {
    match wait {
        None => Some(DEFAULT_WAIT),
        Some(w) => match parse_go_duration(w)? {
            d if d.is_zero() => Some(DEFAULT_WAIT),
            d => Some(d.min(MAX_WAIT)),
        },
    }
}

/// The query's parameters, in order (a bare key has value `None`).
fn params(query: &str) -> Vec<(String, Option<String>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (form::decode(k), Some(form::decode(v))),
            None => (form::decode(p), None),
        })
        .collect()
}

struct Query {
    params: Vec<(String, Option<String>)>,
}

impl Query {
    fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
            .collect()
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_response(body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn set_header(resp: &mut Response<Full<Bytes>>, name: &'static str, value: String) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Who is asking, when ACLs are on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    Allowed,
    Anonymous,
}

fn token(req: &Request<hyper::body::Incoming>, q: &Query) -> Option<String> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    header("x-consul-token")
        .filter(|t| !t.is_empty())
        .or_else(|| {
            header("authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
        })
        .or_else(|| q.get("token").map(str::to_string))
        .filter(|t| !t.is_empty())
}

async fn handle(shared: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    shared.lock().log.push(if raw_query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{raw_query}")
    });
    let q = Query {
        params: params(&raw_query),
    };
    let caller = {
        let state = shared.lock();
        match (&state.acl, token(&req, &q)) {
            (None, _) => Caller::Allowed,
            (Some(_), None) => Caller::Anonymous,
            (Some(known), Some(t)) if known.contains(&t) => Caller::Allowed,
            (Some(_), Some(_)) => return text(StatusCode::FORBIDDEN, "ACL not found"),
        }
    };
    let method = req.method().clone();
    let route = path.strip_prefix("/v1/").unwrap_or("");
    let read = |m: &Method| m == Method::GET || m == Method::HEAD;
    match route {
        "catalog/register" | "catalog/deregister" => {
            if method != Method::PUT {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!("method {method} not allowed"),
                );
            }
            if caller == Caller::Anonymous {
                return text(StatusCode::FORBIDDEN, "Permission denied");
            }
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("Request decode failed: {e}"),
                    );
                }
            };
            let value: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("Request decode failed: {e}"),
                    );
                }
            };
            let result = if route == "catalog/register" {
                register_body(shared, &value)
            } else {
                deregister_body(shared, &value)
            };
            match result {
                Ok(()) => json_response(&json!(true)),
                Err(msg) => text(StatusCode::BAD_REQUEST, &msg),
            }
        }
        _ if !read(&method) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {method} not allowed"),
        ),
        "catalog/datacenters" => json_response(&json!([DATACENTER])),
        "status/leader" => {
            let leader = shared.lock().leader;
            json_response(&json!(if leader { "127.0.0.1:8300" } else { "" }))
        }
        "catalog/services" | "catalog/nodes" => {
            let kind = if route == "catalog/services" {
                Read::Services
            } else {
                Read::Nodes
            };
            blocking(shared, &q, caller, kind).await
        }
        _ => {
            if let Some(name) = route.strip_prefix("catalog/service/") {
                blocking(shared, &q, caller, Read::CatalogService(decode_path(name))).await
            } else if let Some(name) = route.strip_prefix("health/service/") {
                blocking(shared, &q, caller, Read::HealthService(decode_path(name))).await
            } else {
                text(StatusCode::NOT_FOUND, "404 page not found")
            }
        }
    }
}

fn decode_path(s: &str) -> String {
    form::decode(&s.replace('+', "%2B"))
}

/// The case-insensitive lookup Consul's request decoding gives.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn field_str(v: &Value, key: &str) -> String {
    field(v, key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn field_map(v: &Value, key: &str) -> BTreeMap<String, String> {
    field(v, key)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn check_dc(v: &Value) -> Result<(), String> {
    let dc = field_str(v, "Datacenter");
    if dc.is_empty() || dc == DATACENTER {
        Ok(())
    } else {
        Err("No path to datacenter".to_string())
    }
}

fn register_body(shared: &Shared, v: &Value) -> Result<(), String> {
    check_dc(v)?;
    let node_name = field_str(v, "Node");
    if node_name.is_empty() {
        return Err("Must provide node".to_string());
    }
    let address = field_str(v, "Address");
    if address.is_empty() {
        return Err("Must provide address".to_string());
    }
    let node = Node {
        name: node_name.clone(),
        address,
        meta: field_map(v, "NodeMeta"),
    };
    let service = match field(v, "Service").filter(|s| !s.is_null()) {
        Some(s) => {
            let name = field_str(s, "Service");
            if name.is_empty() {
                return Err("Must provide service name with ID".to_string());
            }
            let id = Some(field_str(s, "ID"))
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| name.clone());
            let port = field(s, "Port").and_then(Value::as_u64).unwrap_or(0);
            Some(Service {
                id,
                name,
                tags: field(s, "Tags")
                    .and_then(Value::as_array)
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                meta: field_map(s, "Meta"),
                address: field_str(s, "Address"),
                port: u16::try_from(port).map_err(|_| "Invalid service port".to_string())?,
                kind: field_str(s, "Kind"),
            })
        }
        None => None,
    };
    let mut checks = Vec::new();
    if let Some(c) = field(v, "Check").filter(|c| !c.is_null()) {
        checks.push(c.clone());
    }
    if let Some(cs) = field(v, "Checks").and_then(Value::as_array) {
        checks.extend(cs.iter().cloned());
    }
    let mut parsed = Vec::new();
    for c in &checks {
        let status = field_str(c, "Status");
        let status = if status.is_empty() {
            Health::Critical
        } else {
            Health::parse(&status).ok_or_else(|| format!("Invalid check status: '{status}'"))?
        };
        let id = Some(field_str(c, "CheckID"))
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| field_str(c, "Name"));
        if id.is_empty() {
            return Err("Missing check ID".to_string());
        }
        parsed.push(Check {
            name: Some(field_str(c, "Name"))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.clone()),
            id,
            status,
            service_id: field_str(c, "ServiceID"),
        });
    }
    let skip_node_update = field(v, "SkipNodeUpdate")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    {
        let mut s = shared.lock();
        if !(skip_node_update && s.nodes.contains_key(&node_name)) {
            s.upsert_node(&node);
        }
        if let Some(svc) = &service {
            s.upsert_service(&node_name, svc);
        }
        for c in parsed {
            s.upsert_check(&node_name, c);
        }
    }
    shared.notify();
    Ok(())
}

fn deregister_body(shared: &Shared, v: &Value) -> Result<(), String> {
    check_dc(v)?;
    let node = field_str(v, "Node");
    if node.is_empty() {
        return Err("Must provide node".to_string());
    }
    let service_id = field_str(v, "ServiceID");
    let check_id = field_str(v, "CheckID");
    {
        let mut s = shared.lock();
        if !service_id.is_empty() {
            s.remove_service(&node, &service_id);
        } else if !check_id.is_empty() {
            s.remove_check(&node, &check_id);
        } else {
            s.remove_node(&node);
        }
    }
    shared.notify();
    Ok(())
}

enum Read {
    Services,
    Nodes,
    CatalogService(String),
    HealthService(String),
}

/// Runs a blocking-capable read.
async fn blocking(shared: &Shared, q: &Query, caller: Caller, kind: Read) -> Response<Full<Bytes>> {
    let stale = q.has("stale");
    let consistent = q.has("consistent");
    if stale && consistent {
        return text(
            StatusCode::BAD_REQUEST,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        );
    }
    let Some(mut wait) = blocking_wait(q.get("wait")) else {
        return text(StatusCode::BAD_REQUEST, "Invalid wait time");
    };
    let min_index = match q.get("index") {
        Some(i) => match i.parse::<u64>() {
            Ok(i) => i,
            Err(_) => return text(StatusCode::BAD_REQUEST, "Invalid index"),
        },
        None => 0,
    };
    if let Some(dc) = q.get("dc")
        && !dc.is_empty()
        && dc != DATACENTER
    {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
    }
    let passing = match q.get("passing") {
        None => false,
        Some("") => true,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" => true,
            "0" | "f" | "false" => false,
            _ => return text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"),
        },
    };
    let tags: Vec<String> = q.all("tag").iter().map(|t| t.to_lowercase()).collect();
    let consistency = if stale {
        "stale"
    } else if consistent {
        "consistent"
    } else {
        "leader"
    };

    let mut rx = shared.changed.subscribe();
    let (generation, jitter) = {
        let s = shared.lock();
        (s.generation, s.jitter)
    };
    if min_index > 0 && jitter {
        wait += pseudo_random(wait / 16);
    }
    let deadline = tokio::time::Instant::now() + wait;
    // Bounded: each pass either answers or waits for a write or the deadline.
    loop {
        rx.borrow_and_update();
        let answer = {
            let s = shared.lock();
            if !s.leader && !stale {
                let mut resp = text(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader");
                set_header(&mut resp, "X-Consul-KnownLeader", "false".to_string());
                return resp;
            }
            let (body, index) = if caller == Caller::Anonymous {
                let empty = match kind {
                    Read::Services => json!({}),
                    _ => json!([]),
                };
                (empty, read(&s, &kind, &tags, passing).1)
            } else {
                read(&s, &kind, &tags, passing)
            };
            let index = index.max(1);
            let done = min_index == 0
                || index > min_index
                || s.generation != generation
                || tokio::time::Instant::now() >= deadline;
            done.then(|| {
                let mut resp = json_response(&body);
                let shown = if s.zero_index { 0 } else { index };
                set_header(&mut resp, "X-Consul-Index", shown.to_string());
                set_header(&mut resp, "X-Consul-KnownLeader", s.leader.to_string());
                set_header(
                    &mut resp,
                    "X-Consul-LastContact",
                    s.last_contact_ms.to_string(),
                );
                set_header(
                    &mut resp,
                    "X-Consul-Effective-Consistency",
                    consistency.to_string(),
                );
                if caller == Caller::Anonymous {
                    set_header(
                        &mut resp,
                        "X-Consul-Results-Filtered-By-ACLs",
                        "true".to_string(),
                    );
                }
                resp
            })
        };
        if let Some(resp) = answer {
            return resp;
        }
        tokio::select! {
            r = rx.changed() => { if r.is_err() { tokio::time::sleep_until(deadline).await; } }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// A duration in `[0, max)` from the clock (good enough for jitter).
fn pseudo_random(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let max_n = max.as_nanos().max(1);
    let x = (u128::from(nanos).wrapping_mul(6_364_136_223_846_793_005)) % max_n;
    Duration::from_nanos(u64::try_from(x).unwrap_or(0))
}

fn node_id(name: &str) -> String {
    // FNV-1a, twice, shaped as a UUID: stable per name.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let h2 = h.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xffff,
        h2 >> 48,
        h2 & 0xffff_ffff_ffff
    )
}

fn tagged(addr: &str) -> Value {
    json!({"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr})
}

fn node_json(n: &Stamped<Node>) -> Value {
    json!({
        "ID": node_id(&n.value.name),
        "Node": n.value.name,
        "Address": n.value.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": tagged(&n.value.address),
        "Meta": n.value.meta,
        "CreateIndex": n.create,
        "ModifyIndex": n.modify,
    })
}

fn proxy_json() -> Value {
    json!({"Mode": "", "MeshGateway": {}, "Expose": {}})
}

fn catalog_row(n: &Stamped<Node>, s: &Stamped<Service>) -> Value {
    let svc = &s.value;
    json!({
        "ID": node_id(&n.value.name),
        "Node": n.value.name,
        "Address": n.value.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": tagged(&n.value.address),
        "NodeMeta": n.value.meta,
        "ServiceKind": svc.kind,
        "ServiceID": svc.id,
        "ServiceName": svc.name,
        "ServiceTags": svc.tags,
        "ServiceAddress": svc.address,
        "ServiceWeights": {"Passing": 1, "Warning": 1},
        "ServiceMeta": svc.meta,
        "ServicePort": svc.port,
        "ServiceSocketPath": "",
        "ServiceEnableTagOverride": false,
        "ServiceProxy": proxy_json(),
        "ServiceConnect": {},
        "CreateIndex": s.create,
        "ModifyIndex": s.modify,
    })
}

fn service_json(s: &Stamped<Service>) -> Value {
    let svc = &s.value;
    let mut v = json!({
        "ID": svc.id,
        "Service": svc.name,
        "Tags": svc.tags,
        "Address": svc.address,
        "Meta": svc.meta,
        "Port": svc.port,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": false,
        "Proxy": proxy_json(),
        "Connect": {},
        "PeerName": "",
        "CreateIndex": s.create,
        "ModifyIndex": s.modify,
    });
    if !svc.kind.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.insert("Kind".to_string(), json!(svc.kind));
    }
    v
}

fn check_json(node: &str, c: &Stamped<Check>, svc: Option<&Service>) -> Value {
    json!({
        "Node": node,
        "CheckID": c.value.id,
        "Name": c.value.name,
        "Status": c.value.status.as_str(),
        "Notes": "",
        "Output": "",
        "ServiceID": c.value.service_id,
        "ServiceName": svc.map_or("", |s| s.name.as_str()),
        "ServiceTags": svc.map_or(Vec::new(), |s| s.tags.clone()),
        "Type": if c.value.id == "serfHealth" { "" } else { "ttl" },
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": c.create,
        "ModifyIndex": c.modify,
    })
}

fn tags_match(svc: &Service, tags: &[String]) -> bool {
    tags.iter()
        .all(|t| svc.tags.iter().any(|st| st.to_lowercase() == *t))
}

/// The body and index of one read.
fn read(s: &State, kind: &Read, tags: &[String], passing: bool) -> (Value, u64) {
    match kind {
        Read::Services => {
            let mut map: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for svc in s.services.values() {
                let entry = map.entry(svc.value.name.as_str()).or_default();
                entry.extend(svc.value.tags.iter().map(String::as_str));
            }
            (json!(map), s.table("services"))
        }
        Read::Nodes => {
            let rows: Vec<Value> = s.nodes.values().map(node_json).collect();
            (json!(rows), s.table("nodes"))
        }
        Read::CatalogService(name) | Read::HealthService(name) => {
            let index = match s.tables.get(&format!("service:{name}")) {
                Some(i) => *i,
                None => s.table("services"),
            };
            let mut rows = Vec::new();
            for ((node, id), svc) in &s.services {
                if svc.value.name != *name || !tags_match(&svc.value, tags) {
                    continue;
                }
                let Some(n) = s.nodes.get(node) else { continue };
                if matches!(kind, Read::CatalogService(_)) {
                    rows.push(catalog_row(n, svc));
                    continue;
                }
                let checks: Vec<&Stamped<Check>> = s
                    .checks
                    .iter()
                    .filter(|((cn, _), c)| {
                        cn == node && (c.value.service_id.is_empty() || c.value.service_id == *id)
                    })
                    .map(|(_, c)| c)
                    .collect();
                if passing && checks.iter().any(|c| c.value.status != Health::Passing) {
                    continue;
                }
                let checks: Vec<Value> = checks
                    .iter()
                    .map(|c| {
                        let svc = (!c.value.service_id.is_empty()).then_some(&svc.value);
                        check_json(node, c, svc)
                    })
                    .collect();
                rows.push(json!({
                    "Node": node_json(n),
                    "Service": service_json(svc),
                    "Checks": checks,
                }));
            }
            (json!(rows), index)
        }
    }
}
