//! The fake Kubernetes API server checked with real clients: kube-rs (list, pages, watcher,
//! streaming lists), kubectl (apply, get, chunked get, watch, delete), and raw HTTP for the
//! exact JSON shapes.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use mesh_test_support::kube_api::{DropMode, FakeApiServer, Status};
use mesh_test_support::upstream;
use serde_json::{Value, json};

fn service(ns: &str, name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"ports": [{"name": "http", "port": port, "protocol": "TCP"}], "selector": {"app": name}}
    })
}

async fn client(server: &FakeApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().expect("url"));
    kube::Client::try_from(config).expect("kube client")
}

async fn http_get(server: &FakeApiServer, path: &str) -> (u16, Value) {
    let reply = upstream::request(server.addr(), "GET", "fake", path, &[])
        .await
        .expect("request");
    let first = reply.body.lines().next().unwrap_or("").to_string();
    (
        reply.status,
        serde_json::from_str(&first).unwrap_or(Value::Null),
    )
}

type Events = tokio::sync::mpsc::UnboundedReceiver<Result<Event<Service>, watcher::Error>>;

/// Polls `stream` on a task of its own (a watcher only sends its next request when polled),
/// forwarding every event.
fn spawn_watcher<S>(mut stream: S) -> (Events, tokio::task::JoinHandle<()>)
where
    S: futures::Stream<Item = Result<Event<Service>, watcher::Error>> + Send + Unpin + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(e) = stream.next().await {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// The next watcher event within 5 s, panicking with `what` otherwise.
async fn next_event(events: &mut Events, what: &str) -> Result<Event<Service>, watcher::Error> {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("watcher ended waiting for {what}"))
}

fn name_of(e: &Event<Service>) -> String {
    match e {
        Event::Apply(s) | Event::Delete(s) | Event::InitApply(s) => {
            s.metadata.name.clone().unwrap_or_default()
        }
        Event::Init | Event::InitDone => String::new(),
    }
}

#[tokio::test]
async fn status_list_and_bookmark_shapes_over_http() {
    let server = FakeApiServer::start().await.expect("start");
    server.apply(service("default", "a", 80)).expect("apply a");
    server.apply(service("default", "b", 81)).expect("apply b");

    let (code, body) = http_get(&server, "/api/v1/namespaces/default/services/missing").await;
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::to_string(&body).expect("json"),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"services \"missing\" not found","reason":"NotFound","details":{"name":"missing","kind":"services"},"code":404}"#
    );

    let (code, list) = http_get(&server, "/api/v1/namespaces/default/services?&limit=1").await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        server.revision().to_string()
    );
    assert_eq!(list["metadata"]["remainingItemCount"], 1);
    assert!(
        list["items"][0].get("kind").is_none(),
        "list items carry no kind: {list}"
    );
    let token = list["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_string();

    let (code, body) = http_get(
        &server,
        &format!("/api/v1/namespaces/default/services?continue={token}&resourceVersion=5"),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (400, Some("BadRequest")),
        "{body}"
    );
    let (code, _) = http_get(&server, "/api/v1/services?continue=garbage").await;
    assert_eq!(code, 400);

    // Compaction past the snapshot's RV expires the token (reads at the floor itself still work).
    server.apply(service("default", "c", 82)).expect("apply c");
    server.compact();
    let (code, body) = http_get(
        &server,
        &format!("/api/v1/namespaces/default/services?continue={token}"),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (410, Some("Expired")),
        "{body}"
    );
    assert!(
        body["metadata"]["continue"].is_string(),
        "remainder token: {body}"
    );

    // An RV below the floor: 200, one ERROR 410, close.
    let reply = upstream::request(
        server.addr(),
        "GET",
        "fake",
        "/api/v1/services?watch=1&resourceVersion=1",
        &[],
    )
    .await
    .expect("watch");
    assert_eq!(reply.status, 200);
    let lines: Vec<Value> = reply
        .body
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");

    // A bookmark before timeoutSeconds ends, then a clean close.
    let rv = server.revision();
    let reply = upstream::request(
        server.addr(), "GET", "fake",
        &format!("/api/v1/services?&watch=true&timeoutSeconds=1&allowWatchBookmarks=true&resourceVersion={rv}"), &[],
    ).await.expect("watch");
    let lines: Vec<Value> = reply
        .body
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"type": "BOOKMARK", "object": {"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}}})
        ]
    );

    // Streaming list rejected when switched off, with the real reason.
    server.set_streaming_lists(false);
    let (code, body) = http_get(&server, "/api/v1/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true").await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );
}

#[tokio::test]
async fn kube_rs_lists_in_pages_from_one_snapshot() {
    let server = FakeApiServer::start().await.expect("start");
    for i in 0..7 {
        server
            .apply(service("default", &format!("svc-{i}"), 80 + i))
            .expect("apply");
    }
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let first = api
        .list(&ListParams::default().limit(3))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 3);
    let snapshot_rv = first.metadata.resource_version.clone();
    // A write between pages is not seen: pages come from one snapshot.
    server
        .apply(service("default", "svc-9", 99))
        .expect("apply");
    let mut names: Vec<String> = first
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let mut token = first.metadata.continue_.clone();
    let mut pages = 1;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        assert!(pages < 10, "too many pages");
        let page = api
            .list(&ListParams::default().limit(3).continue_token(&t))
            .await
            .expect("page");
        assert_eq!(page.metadata.resource_version, snapshot_rv);
        names.extend(page.items.iter().filter_map(|s| s.metadata.name.clone()));
        token = page.metadata.continue_.clone();
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        (0..7).map(|i| format!("svc-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.param("continue").is_some())
            .count(),
        2
    );

    let all = api
        .list(&ListParams::default().labels("app in (svc-1, svc-9)"))
        .await
        .expect("selector");
    let got: Vec<_> = all
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(got, vec!["svc-1", "svc-9"]);
}

#[tokio::test]
async fn kube_rs_watcher_init_then_changes_relist_on_410_and_resume_on_drop() {
    let server = FakeApiServer::start().await.expect("start");
    server.apply(service("default", "a", 80)).expect("apply");
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let (mut w, _task) =
        spawn_watcher(watcher::watcher(api, watcher::Config::default().timeout(10)).boxed());

    assert!(matches!(next_event(&mut w, "Init").await, Ok(Event::Init)));
    let e = next_event(&mut w, "InitApply").await.expect("ok");
    assert!(matches!(e, Event::InitApply(_)) && name_of(&e) == "a");
    assert!(matches!(
        next_event(&mut w, "InitDone").await,
        Ok(Event::InitDone)
    ));

    // The watch must be open before the write to be a watch event (not a list item).
    mesh_test_support::eventually("the watch request", Duration::from_secs(5), async || {
        (server.count("watch", "/services") == 1).then_some(())
    })
    .await;
    server.apply(service("default", "b", 81)).expect("apply b");
    let e = next_event(&mut w, "Apply b").await.expect("ok");
    assert!(matches!(e, Event::Apply(_)) && name_of(&e) == "b");
    server.delete("services", "default", "a").expect("delete a");
    let e = next_event(&mut w, "Delete a").await.expect("ok");
    assert!(matches!(e, Event::Delete(_)) && name_of(&e) == "a");

    // A dropped watch (mid-chunk): a new watch from the last RV, no relist.
    let rv_seen = server.revision();
    let lists_before = server.count("get", "/services");
    server.drop_watches(DropMode::MidChunk);
    mesh_test_support::eventually("a resumed watch", Duration::from_secs(5), async || {
        (server.count("watch", "/services") == 2).then_some(())
    })
    .await;
    let resumed = server
        .requests()
        .into_iter()
        .rfind(|r| r.verb == "watch")
        .expect("watch record");
    assert_eq!(resumed.param("resourceVersion"), Some(rv_seen.to_string()));
    server.apply(service("default", "c", 82)).expect("apply c");
    loop {
        // A transport error may surface first; events must still come, without Init.
        match next_event(&mut w, "Apply c").await {
            Ok(e @ Event::Apply(_)) => {
                assert_eq!(name_of(&e), "c");
                break;
            }
            Ok(other) => panic!("expected Apply c, got {other:?}"),
            Err(_) => continue,
        }
    }
    assert_eq!(
        server.count("get", "/services"),
        lists_before,
        "no relist after a dropped watch"
    );

    // An in-stream ERROR 410: the watcher relists.
    server.inject_watch_error(Status::new(410, "too old resource version: 1 (2)"));
    assert!(next_event(&mut w, "WatchError").await.is_err());
    assert!(matches!(next_event(&mut w, "Init").await, Ok(Event::Init)));
    let mut names = Vec::new();
    loop {
        match next_event(&mut w, "InitDone").await.expect("ok") {
            Event::InitApply(s) => names.push(s.metadata.name.unwrap_or_default()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, vec!["b", "c"]);
    assert_eq!(server.count("get", "/services"), lists_before + 1);
}

#[tokio::test]
async fn kube_rs_streaming_list_and_its_rejection() {
    let server = FakeApiServer::start().await.expect("start");
    server.apply(service("default", "a", 80)).expect("apply");
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    let (mut w, task) = spawn_watcher(
        watcher::watcher(
            api.clone(),
            watcher::Config::default().streaming_lists().timeout(10),
        )
        .boxed(),
    );
    assert!(matches!(next_event(&mut w, "Init").await, Ok(Event::Init)));
    let e = next_event(&mut w, "InitApply").await.expect("ok");
    assert_eq!(name_of(&e), "a");
    assert!(matches!(
        next_event(&mut w, "InitDone").await,
        Ok(Event::InitDone)
    ));
    server.apply(service("default", "b", 81)).expect("apply b");
    let e = next_event(&mut w, "Apply b").await.expect("ok");
    assert!(matches!(e, Event::Apply(_)) && name_of(&e) == "b");
    assert_eq!(
        server.count("get", "/services"),
        0,
        "no list request with streaming lists"
    );
    task.abort();

    server.set_streaming_lists(false);
    let (mut w, _task) = spawn_watcher(
        watcher::watcher(
            api,
            watcher::Config::default().streaming_lists().timeout(10),
        )
        .boxed(),
    );
    match next_event(&mut w, "WatchStartFailed").await {
        Err(watcher::Error::WatchStartFailed(kube::Error::Api(s))) => {
            assert_eq!(s.code, 422, "{s:?}")
        }
        other => panic!("expected WatchStartFailed 422, got {other:?}"),
    }
}

#[tokio::test]
async fn fail_knob_answers_the_next_request_only() {
    let server = FakeApiServer::start().await.expect("start");
    let api: Api<Service> = Api::all(client(&server).await);
    server.fail_next(
        None,
        "/services",
        1,
        Status::new(
            403,
            "services is forbidden: User \"x\" cannot list resource \"services\"",
        ),
    );
    let err = api.list(&ListParams::default()).await.expect_err("403");
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden")),
        other => panic!("{other:?}"),
    }
    assert!(
        api.list(&ListParams::default()).await.is_ok(),
        "only the next request fails"
    );
}

// === kubectl ===

struct Kubectl {
    kubeconfig: std::path::PathBuf,
    cache: std::path::PathBuf,
}

impl Kubectl {
    fn new(server: &FakeApiServer, dir: &std::path::Path) -> Kubectl {
        let kubeconfig = dir.join("kubeconfig");
        server.kubeconfig(&kubeconfig).expect("kubeconfig");
        Kubectl {
            kubeconfig,
            cache: dir.join("cache"),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        c.kill_on_drop(true).stdin(std::process::Stdio::null());
        c
    }

    /// Runs to completion (within 20 s): (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(Duration::from_secs(20), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn kubectl_apply_get_chunks_watch_delete_and_forbidden() {
    let server = FakeApiServer::start().await.expect("start");
    let dir = mesh_test_support::TempDir::new("kube-api-kubectl");
    let kubectl = Kubectl::new(&server, &dir.0);
    let docs = [
        service("default", "web", 80),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}}),
    ];
    let file = dir.0.join("objects.yaml");
    let text: Vec<String> = docs.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n---\n")).expect("write yaml");
    let (ok, stdout, stderr) = kubectl
        .run(&[
            "apply",
            "--validate=false",
            "-f",
            file.to_str().expect("utf-8"),
        ])
        .await;
    assert!(ok, "kubectl apply failed: {stdout} {stderr}");
    for (resource, name) in [
        ("services", "web"),
        ("pods", "web-0"),
        ("endpointslices", "web-abc"),
        ("virtualservices", "web"),
    ] {
        assert!(
            server
                .get(resource, "default", name)
                .expect("known")
                .is_some(),
            "{resource}/{name} stored; kubectl said {stdout}"
        );
    }

    let (ok, stdout, stderr) = kubectl
        .run(&[
            "get",
            "virtualservices.networking.istio.io",
            "web",
            "-o",
            "json",
        ])
        .await;
    assert!(ok, "{stderr}");
    let got: Value = serde_json::from_str(&stdout).expect("kubectl json");
    let stored = server
        .get("virtualservices", "default", "web")
        .expect("known")
        .expect("stored");
    assert_eq!(got, stored);

    for i in 0..5 {
        server
            .apply(service("default", &format!("extra-{i}"), 90 + i))
            .expect("apply");
    }
    server.clear_requests();
    let (ok, stdout, stderr) = kubectl
        .run(&["get", "services", "--chunk-size=2", "-o", "name"])
        .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == "get" && r.path == "/api/v1/namespaces/default/services")
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(
        lists
            .iter()
            .all(|r| r.param("limit").as_deref() == Some("2")),
        "{lists:?}"
    );
    assert_eq!(
        lists
            .iter()
            .filter(|r| r.param("continue").is_some())
            .count(),
        2,
        "{lists:?}"
    );

    // kubectl get -w sees an update and a delete made through the Rust API.
    let mut child = kubectl
        .command(&[
            "get",
            "services",
            "web",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name} {.object.spec.ports[0].port}{\"\\n\"}",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl -w");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ));
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("kubectl -w printed a line in time")
            .expect("read")
            .expect("kubectl -w still running")
    };
    assert_eq!(next_line().await, "ADDED web 80");
    mesh_test_support::eventually(
        "kubectl's watch request",
        Duration::from_secs(10),
        async || (server.count("watch", "/services") >= 1).then_some(()),
    )
    .await;
    server
        .apply(service("default", "web", 8080))
        .expect("update");
    assert_eq!(next_line().await, "MODIFIED web 8080");
    server.delete("services", "default", "web").expect("delete");
    assert_eq!(next_line().await, "DELETED web 8080");
    drop(child);

    let (ok, _, stderr) = kubectl.run(&["delete", "pod", "web-0"]).await;
    assert!(ok, "{stderr}");
    assert!(
        server
            .get("pods", "default", "web-0")
            .expect("known")
            .is_none()
    );

    server.fail_next(
        None,
        "/services",
        1,
        Status::new(
            403,
            "services is forbidden: User \"test\" cannot list resource \"services\"",
        ),
    );
    let (ok, _, stderr) = kubectl.run(&["get", "services"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("services is forbidden: User \"test\" cannot list resource \"services\""),
        "{stderr}"
    );
}
