//! Request handling: routing, discovery, get/list/watch, writes, and the fault rules.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::state::{Key, with_type, without_type};
use super::status::Status;
use super::{Control, RequestRecord, Shared};

/// The response body: whole JSON documents, or a watch stream fed by a task.
pub(crate) enum ResBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, Aborted>>),
}

/// A watch stream cut on purpose (the connection is then reset, possibly mid-chunk).
#[derive(Debug, thiserror::Error)]
#[error("watch stream aborted by a fault knob")]
pub(crate) struct Aborted;

impl Body for ResBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match &mut *self {
            ResBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

type Res = Response<ResBody>;

fn json_response(code: u16, v: &Value) -> Res {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(ResBody::Full(Some(Bytes::from(body))))
        .unwrap_or_else(|_| Response::new(ResBody::Full(None)))
}

fn status_response(s: &Status) -> Res {
    let mut r = json_response(s.code, &s.to_json());
    if let Some(secs) = s
        .details
        .as_ref()
        .and_then(|d| d.get("retryAfterSeconds"))
        .and_then(Value::as_u64)
        && let Ok(v) = header::HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Query pairs; empty pairs (kube-rs starts with `&`) are skipped.
pub(crate) fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (crate::form::decode(k), crate::form::decode(v)),
            None => (crate::form::decode(p), String::new()),
        })
        .collect()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

/// A continue token: base64 of `{"rv":N,"start":[ns,name]}`.
fn encode_continue(rv: u64, last: &Key) -> String {
    let raw = json!({"rv": rv, "start": [last.0, last.1]}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(u64, Key), String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| format!("invalid continue token: {e}"))?;
    let v: Value =
        serde_json::from_slice(&raw).map_err(|e| format!("invalid continue token: {e}"))?;
    let rv = v
        .get("rv")
        .and_then(Value::as_u64)
        .ok_or("invalid continue token: no rv")?;
    let ns = v
        .pointer("/start/0")
        .and_then(Value::as_str)
        .ok_or("invalid continue token: no start key")?;
    let name = v
        .pointer("/start/1")
        .and_then(Value::as_str)
        .ok_or("invalid continue token: no start key")?;
    Ok((rv, (ns.to_string(), name.to_string())))
}

/// Where a path points.
enum Target {
    Version,
    Discovery(Value),
    Collection {
        t: ResourceType,
        ns: Option<String>,
    },
    Object {
        t: ResourceType,
        ns: String,
        name: String,
    },
}

fn route(shared: &Shared, path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Target::Version),
        ["api"] => {
            return Some(Target::Discovery(resources::api_versions(
                &shared.addr.to_string(),
            )));
        }
        ["apis"] => return Some(Target::Discovery(resources::api_group_list(&shared.types))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        shared
            .types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    };
    match rest {
        [] => resources::api_resource_list(&shared.types, group, version).map(Target::Discovery),
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|t| t.namespaced) => {
            let t = find(plural)?;
            match tail {
                [] => Some(Target::Collection {
                    t,
                    ns: Some(ns.to_string()),
                }),
                [name] | [name, "status"] => Some(Target::Object {
                    t,
                    ns: ns.to_string(),
                    name: name.to_string(),
                }),
                _ => None,
            }
        }
        [plural, tail @ ..] => {
            let t = find(plural)?;
            match tail {
                [] => Some(Target::Collection { t, ns: None }),
                [name] | [name, "status"] if !t.namespaced => Some(Target::Object {
                    t,
                    ns: String::new(),
                    name: name.to_string(),
                }),
                _ => None,
            }
        }
    }
}

fn not_found_page() -> Status {
    Status::new(404, "the server could not find the requested resource").with_details(json!({}))
}

/// Handles one request (never fails: errors become Status responses).
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Res, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query_raw = req.uri().query().unwrap_or("").to_string();
    let query = parse_query(&query_raw);
    let verb = verb_of(&method, &query);
    shared.log.lock().expect("log lock").push(RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query_raw.clone(),
        verb: verb.to_string(),
    });
    let latency = shared.knobs.lock().expect("knobs lock").latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(s) = shared.take_failure(&method, &path) {
        return Ok(status_response(&s));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(status_response(&Status::bad_request(&format!(
                "reading the request body: {e}"
            ))));
        }
    };
    Ok(
        match dispatch(&shared, &method, &path, &query, &content_type, &body) {
            Ok(Reply::Json(code, v)) => json_response(code, &v),
            Ok(Reply::Watch(w)) => start_watch(shared.clone(), w),
            Err(s) => status_response(&s),
        },
    )
}

fn verb_of(method: &Method, q: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if truthy(q, "watch") => "watch",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

enum Reply {
    Json(u16, Value),
    Watch(WatchReq),
}

fn dispatch(
    shared: &Shared,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, Status> {
    let target = route(shared, path).ok_or_else(not_found_page)?;
    let parse_body = || -> Result<Value, Status> {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            Status::bad_request(&format!("the request body is not a JSON object: {e}"))
        })?;
        if v.is_object() {
            Ok(v)
        } else {
            Err(Status::bad_request("the request body is not a JSON object"))
        }
    };
    match (target, method) {
        (Target::Version, &Method::GET) => Ok(Reply::Json(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-mesh-fake", "gitCommit": "0000000000000000000000000000000000000000",
                   "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        )),
        (Target::Discovery(v), &Method::GET) => Ok(Reply::Json(200, v)),
        (Target::Collection { t, ns }, &Method::GET) if truthy(q, "watch") => {
            Ok(Reply::Watch(watch_request(shared, t, ns, q)?))
        }
        (Target::Collection { t, ns }, &Method::GET) => {
            list(shared, &t, ns.as_deref(), q).map(|v| Reply::Json(200, v))
        }
        (Target::Collection { t, ns }, &Method::POST) => {
            let obj = parse_body()?;
            let ns = resolve_namespace(&t, ns.as_deref(), &obj)?;
            let created = shared.write(|s| s.create(&t, &ns, obj))?;
            Ok(Reply::Json(201, with_type(&created, &t)))
        }
        (Target::Object { t, ns, name }, &Method::GET) => {
            let state = shared.state.lock().expect("state lock");
            let obj = state
                .get(&t, &ns, &name)
                .ok_or_else(|| Status::not_found(&t, &name))?;
            Ok(Reply::Json(200, with_type(obj, &t)))
        }
        (Target::Object { t, ns, name }, &Method::PUT) => {
            let obj = parse_body()?;
            let updated = shared.write(|s| s.update(&t, &ns, &name, obj))?;
            Ok(Reply::Json(200, with_type(&updated, &t)))
        }
        (Target::Object { t, ns, name }, &Method::PATCH) => {
            let media = content_type.split(';').next().unwrap_or("").trim();
            if media != "application/merge-patch+json"
                && media != "application/strategic-merge-patch+json"
            {
                return Err(Status::new(
                    415,
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {media:?})"
                    ),
                ));
            }
            let patch = parse_body()?;
            let patched = shared.write(|s| {
                let mut obj = s
                    .get(&t, &ns, &name)
                    .cloned()
                    .ok_or_else(|| Status::not_found(&t, &name))?;
                merge_patch(&mut obj, &patch);
                s.update(&t, &ns, &name, obj)
            })?;
            Ok(Reply::Json(200, with_type(&patched, &t)))
        }
        (Target::Object { t, ns, name }, &Method::DELETE) => {
            let deleted = shared.write(|s| s.delete(&t, &ns, &name))?;
            Ok(Reply::Json(200, with_type(&deleted, &t)))
        }
        _ => Err(Status::new(
            405,
            format!(
                "the server does not allow this method on the requested resource: {method} {path}"
            ),
        )),
    }
}

fn resolve_namespace(
    t: &ResourceType,
    url_ns: Option<&str>,
    obj: &Value,
) -> Result<String, Status> {
    if !t.namespaced {
        return Ok(String::new());
    }
    let obj_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (url_ns, obj_ns) {
        (Some(u), Some(o)) if u != o => Err(Status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        (Some(u), _) => Ok(u.to_string()),
        (None, _) => Err(
            Status::new(404, "the server could not find the requested resource")
                .with_details(json!({})),
        ),
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

struct Selectors {
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn parse(
        t: &ResourceType,
        ns: Option<String>,
        q: &HashMap<String, String>,
    ) -> Result<Selectors, Status> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| Status::bad_request(&e))?;
        let fields =
            FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), t.plural)
                .map_err(|e| Status::bad_request(&e))?;
        Ok(Selectors { ns, labels, fields })
    }

    fn matches(&self, key: &Key, obj: &Value) -> bool {
        self.ns.as_ref().is_none_or(|ns| &key.0 == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

fn parse_rv(s: &str) -> Result<u64, Status> {
    s.parse::<u64>()
        .map_err(|_| Status::bad_request(&format!("invalid resource version: {s:?}")))
}

fn list(
    shared: &Shared,
    t: &ResourceType,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> Result<Value, Status> {
    let rv = q.get("resourceVersion").map_or("", String::as_str);
    let rvm = q.get("resourceVersionMatch").map_or("", String::as_str);
    let token = q.get("continue").map_or("", String::as_str);
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(0)) => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Err(Status::bad_request("limit must be a non-negative integer")),
    };
    if !rvm.is_empty() && rv.is_empty() {
        return Err(Status::new(
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if !rvm.is_empty() && rvm != "NotOlderThan" && rvm != "Exact" {
        return Err(Status::new(
            422,
            format!(
                "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: {rvm:?}: supported values: \"Exact\", \"NotOlderThan\""
            ),
        ));
    }
    if !token.is_empty() && !rv.is_empty() && rv != "0" {
        return Err(Status::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    let sel = Selectors::parse(t, ns.map(str::to_string), q)?;
    let state = shared.state.lock().expect("state lock");
    let (snap_rv, start) = if !token.is_empty() {
        let (snap, start) = decode_continue(token).map_err(|e| Status::bad_request(&e))?;
        if snap < state.floor {
            let mut s = Status::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into());
            s.metadata.insert(
                "continue".into(),
                json!(encode_continue(state.revision, &start)),
            );
            return Err(s);
        }
        (snap, Some(start))
    } else if rv.is_empty() || rv == "0" {
        (state.revision, None)
    } else {
        let n = parse_rv(rv)?;
        if rvm == "Exact" {
            (n, None)
        } else if n > state.revision {
            return Err(Status::new(504, format!("Too large resource version: {n}, current: {}", state.revision))
                .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})));
        } else {
            (state.revision, None)
        }
    };
    let snapshot = state.snapshot(t, snap_rv).ok_or_else(|| {
        Status::expired(format!(
            "too old resource version: {snap_rv} ({})",
            state.floor
        ))
    })?;
    drop(state);
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining = 0usize;
    for (key, obj) in snapshot
        .iter()
        .filter(|(k, _)| start.as_ref().is_none_or(|s| *k > s))
    {
        if !sel.matches(key, obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
            continue;
        }
        items.push(without_type(obj.clone()));
        next = Some(key.clone());
    }
    if shared.take_corrupt_list() {
        items.insert(0, json!({"metadata": {"name": 12345, "namespace": ["not", "a", "string"]}, "spec": "corrupt"}));
    }
    let mut meta = json!({"resourceVersion": snap_rv.to_string()});
    if remaining > 0
        && let Some(last) = &next
    {
        meta["continue"] = json!(encode_continue(snap_rv, last));
        meta["remainingItemCount"] = json!(remaining);
    }
    Ok(
        json!({"kind": format!("{}List", t.kind), "apiVersion": t.api_version(), "metadata": meta, "items": items}),
    )
}

/// A validated watch request.
pub(crate) struct WatchReq {
    t: ResourceType,
    sel: Selectors,
    /// `None`: send the current state first (rv unset/0, or sendInitialEvents).
    from: Option<u64>,
    initial_end_bookmark: bool,
    bookmarks: bool,
    timeout: Duration,
}

fn watch_request(
    shared: &Shared,
    t: ResourceType,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<WatchReq, Status> {
    let rv = q.get("resourceVersion").map_or("", String::as_str);
    let rvm = q.get("resourceVersionMatch").map_or("", String::as_str);
    let send_initial = q.get("sendInitialEvents").map(String::as_str);
    let bookmarks = truthy(q, "allowWatchBookmarks");
    let timeout = match q.get("timeoutSeconds") {
        None => Duration::from_secs(1800),
        Some(s) => Duration::from_secs(
            s.parse::<u64>()
                .map_err(|_| Status::bad_request(&format!("invalid timeoutSeconds: {s:?}")))?,
        ),
    };
    let sel = Selectors::parse(&t, ns, q)?;
    let from = match send_initial {
        Some(v) => {
            if !shared.knobs.lock().expect("knobs lock").streaming_lists {
                return Err(Status::new(
                    422,
                    "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                ));
            }
            if rvm != "NotOlderThan" {
                return Err(Status::new(
                    422,
                    format!(
                        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan (got {rvm:?})"
                    ),
                ));
            }
            if v == "true" {
                None
            } else {
                Some(if rv.is_empty() { 0 } else { parse_rv(rv)? })
            }
        }
        None => {
            if !rvm.is_empty() {
                return Err(Status::new(
                    422,
                    "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if rv.is_empty() || rv == "0" {
                None
            } else {
                Some(parse_rv(rv)?)
            }
        }
    };
    Ok(WatchReq {
        t,
        sel,
        from,
        initial_end_bookmark: send_initial == Some("true"),
        bookmarks,
        timeout,
    })
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(t: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": meta}),
    )
}

fn start_watch(shared: Arc<Shared>, w: WatchReq) -> Res {
    let (tx, rx) = mpsc::channel(256);
    let ctl = shared.control.subscribe();
    tokio::spawn(async move {
        let _ = run_watch(&shared, w, &tx, ctl).await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(ResBody::Stream(rx))
        .unwrap_or_else(|_| Response::new(ResBody::Full(None)))
}

type Tx = mpsc::Sender<Result<Bytes, Aborted>>;

/// Sends a line; `Err` when the client went away.
async fn send(tx: &Tx, b: Bytes) -> Result<(), ()> {
    tx.send(Ok(b)).await.map_err(|_| ())
}

async fn run_watch(
    shared: &Shared,
    w: WatchReq,
    tx: &Tx,
    mut ctl: broadcast::Receiver<Control>,
) -> Result<(), ()> {
    let start = Instant::now();
    let deadline = start + w.timeout;
    let final_bookmark_at = deadline - (w.timeout / 4).min(Duration::from_secs(2));
    let mut final_bookmark_sent = false;
    let mut rev_rx = shared.rev_tx.subscribe();
    let mut stall_rx = shared.stall.subscribe();
    // Decide the start under the lock, send after releasing it.
    let start_at = {
        let state = shared.state.lock().expect("state lock");
        match w.from {
            Some(rv) if rv < state.floor => Err(Status::expired(format!(
                "too old resource version: {rv} ({})",
                state.floor
            ))),
            Some(rv) => Ok((rv, None)),
            None => {
                let rv = state.revision;
                Ok((rv, Some(state.snapshot(&w.t, rv).unwrap_or_default())))
            }
        }
    };
    let mut cursor = match start_at {
        Err(s) => return send(tx, event_line("ERROR", &s.to_json())).await,
        Ok((rv, None)) => rv,
        Ok((rv, Some(objs))) => {
            for (k, o) in &objs {
                if w.sel.matches(k, o) {
                    send(tx, event_line("ADDED", &with_type(o, &w.t))).await?;
                }
            }
            if w.initial_end_bookmark && w.bookmarks {
                send(tx, bookmark(&w.t, rv, true)).await?;
            }
            rv
        }
    };
    let period = shared.knobs.lock().expect("knobs lock").bookmark_period;
    let mut next_bookmark = Instant::now() + period;
    for _ in 0..1_000_000u32 {
        let stalled = *stall_rx.borrow_and_update();
        if !stalled {
            let (events, revision, floor) = {
                let state = shared.state.lock().expect("state lock");
                (
                    state.events_after(&w.t, cursor),
                    state.revision,
                    state.floor,
                )
            };
            if cursor < floor && !events.is_empty() && events[0].rv > cursor + 1 {
                // Fell behind compaction while connected.
                let s = Status::expired(format!("too old resource version: {cursor} ({floor})"));
                return send(tx, event_line("ERROR", &s.to_json())).await;
            }
            for ev in events {
                if w.sel.matches(&ev.key, &ev.object) {
                    send(
                        tx,
                        event_line(ev.kind.as_str(), &with_type(&ev.object, &w.t)),
                    )
                    .await?;
                }
                cursor = ev.rv;
            }
            cursor = cursor.max(revision);
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
        let bookmark_due = if final_bookmark_sent {
            next_bookmark
        } else {
            next_bookmark.min(final_bookmark_at)
        };
        tokio::select! {
            _ = rev_rx.changed() => {}
            _ = stall_rx.changed() => {}
            c = ctl.recv() => match c {
                Ok(Control::Drop { mid_chunk }) => {
                    if mid_chunk {
                        let _ = tx.send(Ok(Bytes::from_static(b"{\"type\":\"MODIFIED\",\"object\":{\"kind\":"))).await;
                        let _ = tx.send(Err(Aborted)).await;
                    }
                    return Ok(());
                }
                Ok(Control::Line(line)) => {
                    let mut b = line.into_bytes();
                    b.push(b'\n');
                    send(tx, Bytes::from(b)).await?;
                }
                Ok(Control::Error(s)) => send(tx, event_line("ERROR", &s.to_json())).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tokio::time::sleep_until(bookmark_due), if !stalled => {
                if w.bookmarks {
                    send(tx, bookmark(&w.t, cursor, false)).await?;
                }
                if bookmark_due >= final_bookmark_at {
                    final_bookmark_sent = true;
                }
                if bookmark_due >= next_bookmark {
                    next_bookmark = Instant::now() + period;
                }
            }
            _ = tokio::time::sleep_until(deadline), if !stalled => return Ok(()),
            _ = tx.closed() => return Err(()),
        }
    }
    Ok(())
}
