//! An in-process fake Kubernetes API server that speaks the real wire protocol (JSON over
//! HTTP/1.1 on `127.0.0.1:0`), for testing registry adapters with real clients (kube-rs,
//! kubectl) where no real kube-apiserver can be installed.
//!
//! **Faithful** (checked against the reference, `registries.md` §2):
//! - paths for core/v1 (namespaces, nodes, pods, services, secrets, configmaps),
//!   `discovery.k8s.io/v1` endpointslices and the Istio groups, namespaced and across
//!   namespaces; discovery documents (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`);
//! - one global revision; writes stamp `resourceVersion`, `uid`, `creationTimestamp` and
//!   `generation` (bumped when `spec` changes); a delete gets a new RV and a DELETED event with
//!   the last state; list items carry no `kind`/`apiVersion`, gets and watch events do;
//! - list: consistent snapshots at one RV across pages (`limit`/`continue`, the token holds
//!   the snapshot RV and the last key), 410 `Expired` with a remainder token once the snapshot
//!   is compacted, 400 for a bad token or `continue` with an RV, `resourceVersion` +
//!   `resourceVersionMatch` (`Exact` reads the past from the history), label and field selectors;
//! - watch: start semantics (unset/`0`: synthetic ADDED; N: events after N, silent while N is
//!   ahead), newline-delimited events, bookmarks (a settable period plus one shortly before
//!   `timeoutSeconds`), a clean close at `timeoutSeconds`, 200 + one ERROR 410 for an RV below
//!   the compaction floor, `sendInitialEvents` streaming lists ending in the
//!   `k8s.io/initial-events-end` bookmark, or a 422 as from a server without WatchList;
//! - `Status` bodies with the Go field order.
//!
//! **Not faithful**: no auth, admission, defaulting or schema validation; no protobuf, Table
//! or PartialObjectMetadata output (always JSON); strategic-merge patches are applied as JSON
//! merge patches (lists are replaced, not merged); no server-side apply, no `generateName`,
//! no finalizers or graceful deletion; a MODIFIED event that moves an object out of a watch's
//! selector is dropped rather than turned into DELETED; a list at an RV ahead of the server
//! answers 504 at once instead of waiting; subresources other than `status` are not served.

// `Status` errors are ~200 bytes; they are built once per failed request, so boxing buys nothing.
#![allow(clippy::result_large_err)]

mod http;
mod resources;
mod selector;
mod state;
mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

pub use resources::ResourceType;
pub use status::{Status, reason_for};

use state::{State, with_type};

/// What can go wrong driving the fake from Rust.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding the listener or writing the kubeconfig failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// No served resource type has this name (`services`, `endpointslices.discovery.k8s.io`).
    #[error("unknown resource {0:?}")]
    UnknownResource(String),
    /// No served resource type has this apiVersion and kind.
    #[error("unknown apiVersion/kind {api_version:?}/{kind:?}")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// The object lacks a field the server needs (path given).
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// The server refused the write, as it would over HTTP.
    #[error("{}: {} ({})", .0.code, .0.message, .0.reason)]
    Rejected(Status),
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (may start with `&`, as kube-rs sends it).
    pub query: String,
    /// `get` (includes list), `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: String,
}

impl RequestRecord {
    /// The decoded value of query parameter `key`, if present.
    pub fn param(&self, key: &str) -> Option<String> {
        http::parse_query(&self.query).remove(key)
    }
}

/// How [`FakeApiServer::drop_watches`] ends open watch streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// End each response cleanly (the final empty chunk), as at `timeoutSeconds`.
    Clean,
    /// Send half an event, then reset the connection (no final chunk).
    MidChunk,
}

/// What [`FakeApiServer::restart`] does besides closing every watch stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestartMode {
    /// Reset the revision counter to this value (it may be below what clients have seen);
    /// history is cleared and the floor set to it. Stored objects keep their RVs.
    pub revision: Option<u64>,
    /// Clear the event history (floor = current revision) so old RVs expire.
    pub clear_history: bool,
}

/// An injected failure: the next `remaining` requests matching it get `status`.
#[derive(Clone, Debug)]
struct FailRule {
    method: Option<Method>,
    path_contains: String,
    remaining: u32,
    status: Status,
}

/// The settable behaviour.
#[derive(Debug)]
struct Knobs {
    latency: Duration,
    bookmark_period: Duration,
    streaming_lists: bool,
    corrupt_lists: u32,
    fail: Vec<FailRule>,
}

/// Messages to open watch streams.
#[derive(Clone, Debug)]
enum Control {
    Drop { mid_chunk: bool },
    Error(Status),
    Line(String),
}

/// Shared between the Rust API, the accept loop and every connection.
struct Shared {
    addr: SocketAddr,
    types: Vec<ResourceType>,
    state: Mutex<State>,
    rev_tx: watch::Sender<u64>,
    stall: watch::Sender<bool>,
    control: broadcast::Sender<Control>,
    knobs: Mutex<Knobs>,
    log: Mutex<Vec<RequestRecord>>,
}

impl Shared {
    /// Runs a write and wakes every watch.
    fn write<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Status>) -> Result<T, Status> {
        let mut state = self.state.lock().expect("state lock");
        let out = f(&mut state)?;
        let rev = state.revision;
        drop(state);
        self.rev_tx.send_replace(rev);
        Ok(out)
    }

    fn take_failure(&self, method: &Method, path: &str) -> Option<Status> {
        let mut knobs = self.knobs.lock().expect("knobs lock");
        let rule = knobs.fail.iter_mut().find(|r| {
            r.remaining > 0
                && r.method.as_ref().is_none_or(|m| m == method)
                && path.contains(&r.path_contains)
        })?;
        rule.remaining -= 1;
        let s = rule.status.clone();
        knobs.fail.retain(|r| r.remaining > 0);
        Some(s)
    }

    fn take_corrupt_list(&self) -> bool {
        let mut knobs = self.knobs.lock().expect("knobs lock");
        if knobs.corrupt_lists > 0 {
            knobs.corrupt_lists -= 1;
            true
        } else {
            false
        }
    }

    fn resource(&self, name: &str) -> Result<ResourceType, Error> {
        let (plural, group) = name.split_once('.').unwrap_or((name, ""));
        self.types
            .iter()
            .find(|t| t.plural == plural && (group.is_empty() || t.group == group))
            .cloned()
            .ok_or_else(|| Error::UnknownResource(name.to_string()))
    }
}

/// The fake API server; it stops when dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.shared.control.send(Control::Drop { mid_chunk: false });
    }
}

impl FakeApiServer {
    /// Starts serving on `127.0.0.1:0` with the built-in resource types.
    pub async fn start() -> Result<FakeApiServer, Error> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| Error::Io {
                what: "binding 127.0.0.1:0".into(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "local_addr".into(),
            source,
        })?;
        let shared = Arc::new(Shared {
            addr,
            types: resources::builtin(),
            state: Mutex::new(State::default()),
            rev_tx: watch::channel(0).0,
            stall: watch::channel(false).0,
            control: broadcast::channel(1024).0,
            knobs: Mutex::new(Knobs {
                latency: Duration::ZERO,
                // About what the v1.34 watch cache sends (one a minute).
                bookmark_period: Duration::from_secs(60),
                streaming_lists: true,
                corrupt_lists: 0,
                fail: Vec::new(),
            }),
            log: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors, say: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| http::handle(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(FakeApiServer { shared, accept })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Writes a kubeconfig (context `fake`, namespace `default`, no credentials) for kubectl and kube-rs.
    pub fn kubeconfig(&self, path: &Path) -> Result<(), Error> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, text).map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    }

    /// The served resource types.
    pub fn resource_types(&self) -> &[ResourceType] {
        &self.shared.types
    }

    /// Creates or replaces `obj` (by its apiVersion, kind, namespace and name; namespace
    /// `default` if unset and namespaced). Returns the stored object with kind/apiVersion.
    pub fn apply(&self, obj: Value) -> Result<Value, Error> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or(Error::MissingField("apiVersion"))?;
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or(Error::MissingField("kind"))?;
        let t = self
            .shared
            .types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
            .ok_or_else(|| Error::UnknownKind {
                api_version: api_version.into(),
                kind: kind.into(),
            })?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or(Error::MissingField("metadata.name"))?
            .to_string();
        let ns = if t.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let mut obj = obj;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let stored = self
            .shared
            .write(|s| {
                if s.get(&t, &ns, &name).is_some() {
                    s.update(&t, &ns, &name, obj)
                } else {
                    s.create(&t, &ns, obj)
                }
            })
            .map_err(Error::Rejected)?;
        Ok(with_type(&stored, &t))
    }

    /// Deletes `resource` (`services`, `virtualservices.networking.istio.io`) `ns/name`
    /// (`ns` is ignored for cluster-scoped types). Returns the last state.
    pub fn delete(&self, resource: &str, ns: &str, name: &str) -> Result<Value, Error> {
        let t = self.shared.resource(resource)?;
        let ns = if t.namespaced { ns } else { "" };
        let last = self
            .shared
            .write(|s| s.delete(&t, ns, name))
            .map_err(Error::Rejected)?;
        Ok(with_type(&last, &t))
    }

    /// One object, with kind/apiVersion, or `None`.
    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Result<Option<Value>, Error> {
        let t = self.shared.resource(resource)?;
        let ns = if t.namespaced { ns } else { "" };
        let state = self.shared.state.lock().expect("state lock");
        Ok(state.get(&t, ns, name).map(|o| with_type(o, &t)))
    }

    /// Every object of `resource` (in `ns`, or all namespaces), sorted by namespace and name.
    pub fn list(&self, resource: &str, ns: Option<&str>) -> Result<Vec<Value>, Error> {
        let t = self.shared.resource(resource)?;
        let state = self.shared.state.lock().expect("state lock");
        Ok(state
            .objects
            .get(&(t.group, t.plural))
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| ns.is_none_or(|ns| k.0 == ns))
                    .map(|(_, o)| with_type(o, &t))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The current global revision.
    pub fn revision(&self) -> u64 {
        self.shared.state.lock().expect("state lock").revision
    }

    /// The compaction floor: watches and snapshots below it are expired.
    pub fn compaction_floor(&self) -> u64 {
        self.shared.state.lock().expect("state lock").floor
    }

    // === fault knobs ===

    /// Compacts history up to the current revision (every older RV and continue token expires).
    pub fn compact(&self) {
        let mut s = self.shared.state.lock().expect("state lock");
        let rv = s.revision;
        s.compact(rv);
    }

    /// Compacts history up to `rv`.
    pub fn compact_to(&self, rv: u64) {
        self.shared.state.lock().expect("state lock").compact(rv);
    }

    /// Ends every open watch stream.
    pub fn drop_watches(&self, mode: DropMode) {
        let _ = self.shared.control.send(Control::Drop {
            mid_chunk: mode == DropMode::MidChunk,
        });
    }

    /// Stalls (or resumes) every watch: while stalled, nothing is sent (no events, no
    /// bookmarks) and `timeoutSeconds` does not close the stream.
    pub fn stall_watches(&self, stalled: bool) {
        self.shared.stall.send_replace(stalled);
    }

    /// Sends an ERROR event with `status` on every open watch (which stays open).
    pub fn inject_watch_error(&self, status: Status) {
        let _ = self.shared.control.send(Control::Error(status));
    }

    /// Sends `line` (plus `\n`) verbatim on every open watch, e.g. a malformed event.
    pub fn inject_watch_line(&self, line: impl Into<String>) {
        let _ = self.shared.control.send(Control::Line(line.into()));
    }

    /// The next `n` list responses carry a malformed first item (wrong field types).
    pub fn corrupt_next_lists(&self, n: u32) {
        self.shared.knobs.lock().expect("knobs lock").corrupt_lists = n;
    }

    /// The next `n` requests whose path contains `path_contains` (and whose method is
    /// `method`, if given) get `status` instead of an answer. For 429, set
    /// [`FakeApiServer::fail_next_with_retry_after`].
    pub fn fail_next(&self, method: Option<Method>, path_contains: &str, n: u32, status: Status) {
        self.shared
            .knobs
            .lock()
            .expect("knobs lock")
            .fail
            .push(FailRule {
                method,
                path_contains: path_contains.into(),
                remaining: n,
                status,
            });
    }

    /// Like [`FakeApiServer::fail_next`] with a 429 carrying `Retry-After: secs` and
    /// `details.retryAfterSeconds`.
    pub fn fail_next_with_retry_after(&self, path_contains: &str, n: u32, secs: u32) {
        let s = Status::new(429, "Too many requests, please try again later.").with_details(
            json!({"causes": [{"message": "Too many requests"}], "retryAfterSeconds": secs}),
        );
        self.fail_next(None, path_contains, n, s);
    }

    /// Delays every response by `d`.
    pub fn set_latency(&self, d: Duration) {
        self.shared.knobs.lock().expect("knobs lock").latency = d;
    }

    /// How often watches with `allowWatchBookmarks` get a BOOKMARK (default 60 s); applies to
    /// watches started afterwards.
    pub fn set_bookmark_period(&self, d: Duration) {
        self.shared
            .knobs
            .lock()
            .expect("knobs lock")
            .bookmark_period = d;
    }

    /// Serve `sendInitialEvents` streaming lists (default) or reject them with 422 as a server
    /// without the WatchList feature does.
    pub fn set_streaming_lists(&self, enabled: bool) {
        self.shared
            .knobs
            .lock()
            .expect("knobs lock")
            .streaming_lists = enabled;
    }

    /// Closes every watch stream and applies `mode`.
    pub fn restart(&self, mode: RestartMode) {
        self.shared
            .state
            .lock()
            .expect("state lock")
            .restart(mode.revision, mode.clear_history);
        let _ = self.shared.control.send(Control::Drop { mid_chunk: false });
    }

    // === request log ===

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().expect("log lock").clone()
    }

    /// How many requests had this `verb` and a path ending in `path_suffix`.
    pub fn count(&self, verb: &str, path_suffix: &str) -> usize {
        self.shared
            .log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|r| r.verb == verb && r.path.ends_with(path_suffix))
            .count()
    }

    /// Clears the request log.
    pub fn clear_requests(&self) {
        self.shared.log.lock().expect("log lock").clear();
    }
}
