//! The fake Consul server: driven by a real Consul client (py-consul, as Python child
//! processes), and over plain HTTP for the wire details (field sets, headers, index rules,
//! blocking, wait parsing, ACL and fault knobs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mesh_test_support::consul::{
    DEFAULT_WAIT, FakeConsul, Health, MAX_WAIT, Node, Service, TOO_MANY_CONNS, blocking_wait,
    parse_go_duration,
};
use mesh_test_support::eventually;
use mesh_test_support::upstream::{Reply, get, request};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MESH_PYTHON") {
        return PathBuf::from(p);
    }
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/envoy-venv/bin/python");
    assert!(
        p.exists(),
        "python with py-consul not found at {}: run `bash scripts/test.sh`",
        p.display()
    );
    p
}

/// Every snippet starts with a client `c` for the fake (port in argv[1], token in argv[2]).
const PRELUDE: &str = "import sys, json, time, consul\n\
c = consul.Consul(host='127.0.0.1', port=int(sys.argv[1]), token=(sys.argv[2] or None))\n";

fn snippet(fake: &FakeConsul, code: &str, token: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg("-c")
        .arg(format!("{PRELUDE}{code}"))
        .arg(fake.addr().port().to_string())
        .arg(token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a snippet to completion (10 s at most) and parses its last stdout line as JSON.
async fn py(fake: &FakeConsul, code: &str, token: &str) -> Value {
    let child = snippet(fake, code, token).spawn().expect("spawn python");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("python snippet timed out")
        .expect("python snippet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("python printed nothing");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON {last:?}: {e}"))
}

async fn http(fake: &FakeConsul, path: &str) -> Reply {
    get(fake.addr(), "consul", path, &[]).await.unwrap()
}

async fn http_with(fake: &FakeConsul, path: &str, headers: &[(&str, &str)]) -> Reply {
    get(fake.addr(), "consul", path, headers).await.unwrap()
}

fn body(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON {:?}: {e}", r.body))
}

fn index_of(r: &Reply) -> u64 {
    r.headers
        .get("x-consul-index")
        .unwrap_or_else(|| panic!("no X-Consul-Index in {:?}", r.headers))
        .parse()
        .unwrap()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set(items: &[&'static str]) -> BTreeSet<&'static str> {
    items.iter().copied().collect()
}

fn web(id: &str, port: u16) -> Service {
    Service::new(id, "web", port).tag("v1").meta("version", "1")
}

#[tokio::test]
async fn py_consul_registers_and_deregisters() {
    let fake = FakeConsul::start().await.unwrap();
    let start = fake.index();
    let out = py(
        &fake,
        "ok = c.catalog.register('n1', '10.0.0.1', service={'Service': 'web', 'ID': 'web-1', \
         'Tags': ['v1', 'canary'], 'Port': 8080, 'Address': '10.1.0.1', 'Meta': {'a': 'b'}}, \
         check={'CheckID': 'service:web-1', 'Name': 'web check', 'Status': 'warning', \
         'ServiceID': 'web-1'}, node_meta=None)\n\
         i, services = c.catalog.services()\n\
         _, rows = c.catalog.service('web')\n\
         hi, health = c.health.service('web')\n\
         print(json.dumps({'ok': ok, 'index': int(i), 'services': services, 'rows': rows, \
         'health': health, 'health_index': int(hi)}))",
        "",
    )
    .await;
    assert_eq!(out["ok"], true);
    assert_eq!(out["services"]["web"], serde_json::json!(["canary", "v1"]));
    assert_eq!(out["services"]["consul"], serde_json::json!([]));
    // The node, the service and its check are three writes; /catalog/services covers the
    // service's, the health of web all three.
    assert_eq!(fake.index(), start + 3);
    assert_eq!(out["index"], start + 2);
    assert_eq!(out["health_index"], start + 3);
    let row = &out["rows"][0];
    assert_eq!(out["rows"].as_array().unwrap().len(), 1);
    assert_eq!(row["Node"], "n1");
    assert_eq!(row["Address"], "10.0.0.1");
    assert_eq!(row["ServiceID"], "web-1");
    assert_eq!(row["ServiceAddress"], "10.1.0.1");
    assert_eq!(row["ServicePort"], 8080);
    assert_eq!(row["ServiceMeta"]["a"], "b");
    let checks = out["health"][0]["Checks"].as_array().unwrap();
    let statuses: BTreeSet<(&str, &str)> = checks
        .iter()
        .map(|c| {
            (
                c["CheckID"].as_str().unwrap(),
                c["Status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [("serfHealth", "passing"), ("service:web-1", "warning")]
            .into_iter()
            .collect()
    );

    let before = fake.index();
    let out = py(
        &fake,
        "ok = c.catalog.deregister('n1', service_id='web-1')\n\
         i, services = c.catalog.services()\n\
         _, health = c.health.service('web')\n\
         print(json.dumps({'ok': ok, 'index': int(i), 'services': services, 'health': health}))",
        "",
    )
    .await;
    assert_eq!(out["ok"], true);
    assert!(out["services"].get("web").is_none(), "{out}");
    assert_eq!(out["health"], serde_json::json!([]));
    assert!(out["index"].as_u64().unwrap() > before);
}

#[tokio::test]
async fn py_consul_blocking_services_wakes_on_a_rust_write() {
    let fake = FakeConsul::start().await.unwrap();
    fake.set_jitter(false);
    let mut child = snippet(
        &fake,
        "i, _ = c.catalog.services()\n\
         print(json.dumps({'start': int(i)}), flush=True)\n\
         t = time.monotonic()\n\
         j, services = c.catalog.services(index=i, wait='5s')\n\
         print(json.dumps({'index': int(j), 'services': services, \
         'elapsed': time.monotonic() - t}), flush=True)",
        "",
    )
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let read_line = async |lines: &mut tokio::io::Lines<_>| -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("python timed out")
            .unwrap()
            .expect("python ended early");
        serde_json::from_str(&line).unwrap()
    };
    let start = read_line(&mut lines).await["start"].as_u64().unwrap();
    // The blocking call is in flight once the fake has logged it.
    let blocking = format!("index={start}");
    eventually("the blocking query", Duration::from_secs(5), async || {
        fake.requests()
            .iter()
            .any(|r| r.starts_with("/v1/catalog/services?") && r.contains(&blocking))
            .then_some(())
    })
    .await;
    let written = fake.register(&Node::new("n1", "10.0.0.1"), &web("web-1", 80));
    let out = read_line(&mut lines).await;
    assert_eq!(out["index"].as_u64().unwrap(), written);
    assert!(written > start);
    assert_eq!(out["services"]["web"], serde_json::json!(["v1"]));
    assert!(
        out["elapsed"].as_f64().unwrap() < 4.0,
        "woke by timeout, not by the write: {out}"
    );
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn py_consul_health_passing_filters_by_check_status() {
    let fake = FakeConsul::start().await.unwrap();
    let n1 = Node::new("n1", "10.0.0.1");
    let n2 = Node::new("n2", "10.0.0.2");
    fake.register(&n1, &web("web-ok", 80));
    fake.register(&n1, &web("web-warn", 81));
    fake.register(&n2, &web("web-bad", 82));
    fake.register(&n2, &web("web-nocheck", 83));
    fake.set_check("web-ok", Health::Passing);
    fake.set_check("web-warn", Health::Warning);
    fake.set_check("web-bad", Health::Critical);
    let code = "_, all = c.health.service('web')\n\
                _, ok = c.health.service('web', passing=True)\n\
                ids = lambda rows: sorted(r['Service']['ID'] for r in rows)\n\
                print(json.dumps({'all': ids(all), 'passing': ids(ok)}))";
    let out = py(&fake, code, "").await;
    assert_eq!(
        out["all"],
        serde_json::json!(["web-bad", "web-nocheck", "web-ok", "web-warn"])
    );
    assert_eq!(out["passing"], serde_json::json!(["web-nocheck", "web-ok"]));

    // A failing node check fails every service on the node.
    fake.set_node_health("n2", Health::Critical);
    fake.set_check("web-bad", Health::Passing);
    let out = py(&fake, code, "").await;
    assert_eq!(out["passing"], serde_json::json!(["web-ok"]));
}

#[tokio::test]
async fn py_consul_unknown_token_is_refused() {
    let fake = FakeConsul::start().await.unwrap();
    fake.register(&Node::new("n1", "10.0.0.1"), &web("web-1", 80));
    fake.set_acl(Some(&["good-token"]));
    let code = "try:\n    _, s = c.catalog.services()\n    print(json.dumps({'services': s}))\n\
                except consul.ACLPermissionDenied as e:\n    \
                print(json.dumps({'denied': str(e)}))";
    let out = py(&fake, code, "bad-token").await;
    assert_eq!(out["denied"], "ACL not found", "{out}");
    let out = py(&fake, code, "good-token").await;
    assert_eq!(out["services"]["web"], serde_json::json!(["v1"]), "{out}");
    // With ACLs off, any token passes.
    fake.set_acl(None);
    let out = py(&fake, code, "bad-token").await;
    assert!(out.get("services").is_some(), "{out}");
}

#[tokio::test]
async fn json_field_sets_match_consul() {
    let fake = FakeConsul::start().await.unwrap();
    fake.register(
        &Node::new("n1", "10.0.0.1").meta("zone", "a"),
        &web("web-1", 80),
    );
    fake.set_check("web-1", Health::Passing);

    let r = http(&fake, "/v1/catalog/service/web").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let row = &body(&r)[0];
    assert_eq!(
        keys(row),
        set(&[
            "ID",
            "Node",
            "Address",
            "Datacenter",
            "TaggedAddresses",
            "NodeMeta",
            "ServiceKind",
            "ServiceID",
            "ServiceName",
            "ServiceTags",
            "ServiceAddress",
            "ServiceWeights",
            "ServiceMeta",
            "ServicePort",
            "ServiceSocketPath",
            "ServiceEnableTagOverride",
            "ServiceProxy",
            "ServiceConnect",
            "CreateIndex",
            "ModifyIndex",
        ])
    );
    assert_eq!(row["ServiceKind"], "");
    assert_eq!(row["ServiceAddress"], "", "empty means: use Address");
    assert_eq!(row["NodeMeta"]["zone"], "a");
    assert_eq!(row["Datacenter"], "dc1");
    assert_eq!(
        row["ServiceWeights"],
        serde_json::json!({"Passing": 1, "Warning": 1})
    );

    let entry = &body(&http(&fake, "/v1/health/service/web").await)[0];
    assert_eq!(keys(entry), set(&["Node", "Service", "Checks"]));
    assert_eq!(
        keys(&entry["Node"]),
        set(&[
            "ID",
            "Node",
            "Address",
            "Datacenter",
            "TaggedAddresses",
            "Meta",
            "CreateIndex",
            "ModifyIndex",
        ])
    );
    let svc_keys = keys(&entry["Service"]);
    for k in [
        "ID",
        "Service",
        "Tags",
        "Address",
        "Meta",
        "Port",
        "Weights",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(svc_keys.contains(k), "Service lacks {k}: {svc_keys:?}");
    }
    assert!(!svc_keys.contains("Kind"), "Kind is omitted when empty");
    let check_keys = keys(&entry["Checks"][1]);
    for k in [
        "Node",
        "CheckID",
        "Name",
        "Status",
        "Notes",
        "Output",
        "ServiceID",
        "ServiceName",
        "ServiceTags",
    ] {
        assert!(check_keys.contains(k), "Check lacks {k}: {check_keys:?}");
    }
    assert_eq!(entry["Checks"][0]["CheckID"], "serfHealth");
    assert_eq!(entry["Checks"][1]["ServiceName"], "web");

    // A proxy's kind shows in both shapes.
    fake.register(
        &Node::new("n1", "10.0.0.1").meta("zone", "a"),
        &Service::new("web-sidecar", "web", 21000).kind("connect-proxy"),
    );
    let rows = body(&http(&fake, "/v1/catalog/service/web").await);
    assert_eq!(rows[1]["ServiceKind"], "connect-proxy");
    let entries = body(&http(&fake, "/v1/health/service/web").await);
    assert_eq!(entries[1]["Service"]["Kind"], "connect-proxy");

    let services = body(&http(&fake, "/v1/catalog/services").await);
    assert_eq!(services, serde_json::json!({"consul": [], "web": ["v1"]}));
    let nodes = body(&http(&fake, "/v1/catalog/nodes").await);
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["consul-server", "n1"]);
    assert_eq!(
        body(&http(&fake, "/v1/catalog/datacenters").await),
        serde_json::json!(["dc1"])
    );
    assert_eq!(
        body(&http(&fake, "/v1/status/leader").await),
        serde_json::json!("127.0.0.1:8300")
    );
    // tag= filters (all must match, case-insensitively); an unknown dc has no path.
    let rows = body(&http(&fake, "/v1/catalog/service/web?tag=V1").await);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let rows = body(&http(&fake, "/v1/health/service/web?tag=v1&tag=nope").await);
    assert_eq!(rows, serde_json::json!([]));
    let r = http(&fake, "/v1/catalog/service/web?dc=dc2").await;
    assert_eq!((r.status, r.body.as_str()), (500, "No path to datacenter"));
    assert_eq!(http(&fake, "/v1/nope").await.status, 404);
}

#[tokio::test]
async fn headers_and_index_rules() {
    let fake = FakeConsul::start().await.unwrap();
    let n1 = Node::new("n1", "10.0.0.1");
    for path in [
        "/v1/catalog/services",
        "/v1/catalog/service/web",
        "/v1/health/service/web",
        "/v1/catalog/nodes",
    ] {
        let r = http(&fake, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(index_of(&r) >= 1, "{path}: index never 0");
        assert_eq!(r.headers["x-consul-knownleader"], "true", "{path}");
        assert_eq!(r.headers["x-consul-lastcontact"], "0", "{path}");
        assert_eq!(r.headers["x-consul-effective-consistency"], "leader");
    }
    let r = http(&fake, "/v1/catalog/services?stale").await;
    assert_eq!(r.headers["x-consul-effective-consistency"], "stale");
    fake.set_last_contact_ms(42);
    let r = http(&fake, "/v1/catalog/services").await;
    assert_eq!(r.headers["x-consul-lastcontact"], "42");

    let i1 = fake.register(&n1, &web("web-1", 80));
    let i2 = fake.register(&n1, &Service::new("db-1", "db", 5432));
    assert!(i2 > i1);
    // Each endpoint reports the max ModifyIndex it covers: web is untouched by db's write.
    let r = http(&fake, "/v1/catalog/service/web").await;
    assert_eq!(index_of(&r), i1);
    assert_eq!(body(&r)[0]["ModifyIndex"], i1);
    assert_eq!(index_of(&http(&fake, "/v1/health/service/web").await), i1);
    assert_eq!(index_of(&http(&fake, "/v1/catalog/services").await), i2);
    // An idempotent registration changes nothing; a changed one does.
    assert_eq!(fake.register(&n1, &web("web-1", 80)), i2);
    let i3 = fake.register(&n1, &web("web-1", 81));
    assert!(i3 > i2);
    let r = http(&fake, "/v1/catalog/service/web").await;
    assert_eq!(
        (index_of(&r), &body(&r)[0]["CreateIndex"]),
        (i3, &i1.into())
    );
    // A check write moves health (and the catalog row of that name), not /catalog/services.
    let i4 = fake.set_check("web-1", Health::Critical);
    assert_eq!(index_of(&http(&fake, "/v1/health/service/web").await), i4);
    assert_eq!(index_of(&http(&fake, "/v1/catalog/services").await), i3);
    // Deregistration moves the index forwards.
    let i5 = fake.deregister("web-1");
    assert!(i5 > i4);
    assert_eq!(index_of(&http(&fake, "/v1/catalog/services").await), i5);
    let r = http(&fake, "/v1/catalog/service/web").await;
    assert_eq!((index_of(&r), body(&r)), (i5, serde_json::json!([])));
    // Endpoints without blocking carry no index (as in Consul).
    let r = http(&fake, "/v1/catalog/datacenters").await;
    assert!(!r.headers.contains_key("x-consul-index"));
}

#[tokio::test]
async fn blocking_queries_wait_then_time_out_or_wake() {
    let fake = FakeConsul::start().await.unwrap();
    fake.set_jitter(false);
    let n1 = Node::new("n1", "10.0.0.1");
    let idx = fake.register(&n1, &web("web-1", 80));

    // Nothing changes: the wait runs out and the same index comes back.
    let t = Instant::now();
    let r = http(
        &fake,
        &format!("/v1/health/service/web?index={idx}&wait=200ms"),
    )
    .await;
    let took = t.elapsed();
    assert_eq!((r.status, index_of(&r)), (200, idx));
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // An older index answers at once.
    let t = Instant::now();
    let r = http(
        &fake,
        &format!("/v1/health/service/web?index={}&wait=5s", idx - 1),
    )
    .await;
    assert_eq!(index_of(&r), idx);
    assert!(t.elapsed() < Duration::from_secs(1));

    // A write to another service does not answer a query on web; a write to web does.
    let path = format!("/v1/health/service/web?index={idx}&wait=5s");
    let addr = fake.addr();
    let t = Instant::now();
    let query = tokio::spawn(async move { get(addr, "consul", &path, &[]).await.unwrap() });
    eventually("the blocking query", Duration::from_secs(5), async || {
        (fake.request_count("/v1/health/service/web") == 3).then_some(())
    })
    .await;
    fake.register(&n1, &Service::new("db-1", "db", 5432));
    tokio::time::sleep(Duration::from_millis(100)).await; // room for a wrong early answer
    assert!(!query.is_finished(), "woke on an unrelated write");
    let woke = fake.set_check("web-1", Health::Critical);
    let r = tokio::time::timeout(Duration::from_secs(3), query)
        .await
        .expect("the write did not wake the query")
        .unwrap();
    assert_eq!(index_of(&r), woke);
    assert_eq!(body(&r)[0]["Checks"][1]["Status"], "critical");
    assert!(t.elapsed() < Duration::from_secs(4));

    // With jitter on, the wait grows by at most wait/16.
    fake.set_jitter(true);
    let t = Instant::now();
    http(
        &fake,
        &format!("/v1/catalog/services?index={}&wait=320ms", fake.index()),
    )
    .await;
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(320), "{took:?}");
    assert!(took < Duration::from_millis(320 + 20 + 500), "{took:?}");
}

#[tokio::test]
async fn wait_and_index_parsing() {
    let ms = Duration::from_millis;
    for (s, d) in [
        ("10s", Duration::from_secs(10)),
        ("5m", Duration::from_secs(300)),
        ("600000ms", Duration::from_secs(600)),
        ("1m30s", Duration::from_secs(90)),
        ("1.5h", Duration::from_secs(5400)),
        ("200ms", ms(200)),
        ("250us", Duration::from_micros(250)),
        ("3µs", Duration::from_micros(3)),
        ("7ns", Duration::from_nanos(7)),
        (".5s", ms(500)),
        ("0", Duration::ZERO),
        ("-5s", Duration::ZERO),
    ] {
        assert_eq!(parse_go_duration(s), Some(d), "{s}");
    }
    for bad in ["", "10", "s", "1x", "1h-2m", "1..5s", "abc", "5 s", "+"] {
        assert_eq!(parse_go_duration(bad), None, "{bad:?}");
    }
    assert_eq!(blocking_wait(None), Some(DEFAULT_WAIT));
    assert_eq!(blocking_wait(Some("0ms")), Some(DEFAULT_WAIT));
    assert_eq!(blocking_wait(Some("20m")), Some(MAX_WAIT));
    assert_eq!(blocking_wait(Some("9m")), Some(Duration::from_secs(540)));
    assert_eq!(DEFAULT_WAIT, Duration::from_secs(300));
    assert_eq!(MAX_WAIT, Duration::from_secs(600));

    let fake = FakeConsul::start().await.unwrap();
    for (query, msg) in [
        ("index=1&wait=10", "Invalid wait time"),
        ("index=1&wait=abc", "Invalid wait time"),
        ("index=-1&wait=1s", "Invalid index"),
        ("index=x", "Invalid index"),
        (
            "stale&consistent",
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
    ] {
        let r = http(&fake, &format!("/v1/catalog/services?{query}")).await;
        assert_eq!((r.status, r.body.as_str()), (400, msg), "{query}");
        assert!(r.headers["content-type"].starts_with("text/plain"));
    }
    // Parameters are percent-decoded; the index (2 or more) is passed, so these answer at once.
    for query in ["index=1&wait=1m30s", "index=1&wait=1m30%73"] {
        let r = http(&fake, &format!("/v1/catalog/services?{query}")).await;
        assert_eq!(r.status, 200, "{query}");
    }
}

#[tokio::test]
async fn acl_tokens_from_header_bearer_and_query() {
    let fake = FakeConsul::start().await.unwrap();
    fake.register(&Node::new("n1", "10.0.0.1"), &web("web-1", 80));
    fake.set_acl(Some(&["t1"]));
    let ok = [
        ("/v1/catalog/services", vec![("x-consul-token", "t1")]),
        ("/v1/catalog/services", vec![("authorization", "Bearer t1")]),
        ("/v1/catalog/services?token=t1", vec![]),
    ];
    for (path, headers) in &ok {
        let r = http_with(&fake, path, headers).await;
        assert_eq!(r.status, 200, "{path} {headers:?}");
        assert!(body(&r).get("web").is_some());
    }
    let r = http_with(&fake, "/v1/health/service/web", &[("x-consul-token", "t2")]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "ACL not found"));
    assert!(r.headers["content-type"].starts_with("text/plain"));
    // Anonymous reads are filtered (default deny); anonymous writes are denied.
    let r = http(&fake, "/v1/catalog/services").await;
    assert_eq!((r.status, body(&r)), (200, serde_json::json!({})));
    assert_eq!(r.headers["x-consul-results-filtered-by-acls"], "true");
    let r = request(fake.addr(), "PUT", "consul", "/v1/catalog/deregister", &[])
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (403, "Permission denied"));
}

#[tokio::test]
async fn fault_knobs() {
    let fake = FakeConsul::start().await.unwrap();
    fake.set_jitter(false);
    let n1 = Node::new("n1", "10.0.0.1");
    fake.register(&n1, &web("web-1", 80));
    let high = fake.register(&n1, &web("web-2", 81));

    // The index goes backwards: a blocked query returns at once with the lower index.
    let addr = fake.addr();
    let path = format!("/v1/catalog/services?index={high}&wait=5s");
    let t = Instant::now();
    let query = tokio::spawn(async move { get(addr, "consul", &path, &[]).await.unwrap() });
    eventually("the blocking query", Duration::from_secs(5), async || {
        (fake.request_count("/v1/catalog/services") == 1).then_some(())
    })
    .await;
    fake.reset_index(2);
    let r = tokio::time::timeout(Duration::from_secs(3), query)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(index_of(&r), 2);
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(body(&r).get("web").is_some(), "the data survives the reset");
    assert_eq!(fake.index(), 2);
    assert!(fake.register(&n1, &web("web-3", 82)) == 3);

    // Index 0 as reported by a buggy server.
    fake.set_zero_index(true);
    assert_eq!(index_of(&http(&fake, "/v1/catalog/services").await), 0);
    fake.set_zero_index(false);

    // No leader: 500 with KnownLeader false; stale reads still answer.
    fake.set_leader(false);
    let r = http(&fake, "/v1/health/service/web").await;
    assert_eq!((r.status, r.body.as_str()), (500, "No cluster leader"));
    assert_eq!(r.headers["x-consul-knownleader"], "false");
    let r = http(&fake, "/v1/health/service/web?stale").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-consul-knownleader"], "false");
    assert_eq!(body(&http(&fake, "/v1/status/leader").await), "");
    fake.set_leader(true);
    assert_eq!(http(&fake, "/v1/health/service/web").await.status, 200);

    // The request log.
    let log = fake.requests();
    assert_eq!(log[0], format!("/v1/catalog/services?index={high}&wait=5s"));
    assert_eq!(fake.request_count("/v1/health/service/web"), 3);
}

#[tokio::test]
async fn dropping_the_server_ends_blocked_queries() {
    let fake = FakeConsul::start().await.unwrap();
    let addr = fake.addr();
    let path = format!("/v1/catalog/services?index={}&wait=10s", fake.index());
    let query = tokio::spawn(async move { get(addr, "consul", &path, &[]).await });
    eventually("the blocking query", Duration::from_secs(5), async || {
        (fake.request_count("/v1/catalog/services") == 1).then_some(())
    })
    .await;
    drop(fake);
    let r = tokio::time::timeout(Duration::from_secs(3), query)
        .await
        .expect("the blocked query outlived the server")
        .unwrap();
    assert!(r.is_err(), "answered instead of closing: {r:?}");
    eventually(
        "the listener to close",
        Duration::from_secs(3),
        async || {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn wakeups_connection_cap_delay_and_truncation() {
    let fake = FakeConsul::start().await.unwrap();
    fake.set_jitter(false);
    let idx = fake.index();
    let addr = fake.addr();
    let path = format!("/v1/catalog/services?index={idx}&wait=5s");

    // A spurious wakeup: the blocked query answers at once with the same index.
    let t = Instant::now();
    let p = path.clone();
    let query = tokio::spawn(async move { get(addr, "consul", &p, &[]).await.unwrap() });
    eventually("the blocking query", Duration::from_secs(5), async || {
        (fake.request_count("/v1/catalog/services") == 1).then_some(())
    })
    .await;
    fake.wake_blocked();
    let r = tokio::time::timeout(Duration::from_secs(3), query)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.status, index_of(&r)), (200, idx));
    assert!(t.elapsed() < Duration::from_secs(4));

    // Above the connection cap: 429 while one blocking query holds the only slot.
    fake.set_max_conns(Some(1));
    let p = path.clone();
    let held = tokio::spawn(async move { get(addr, "consul", &p, &[]).await.unwrap() });
    eventually("the held query", Duration::from_secs(5), async || {
        (fake.request_count("/v1/catalog/services") == 2).then_some(())
    })
    .await;
    let r = http(&fake, "/v1/catalog/services").await;
    assert_eq!((r.status, r.body.as_str()), (429, TOO_MANY_CONNS));
    fake.wake_blocked();
    assert_eq!(held.await.unwrap().status, 200);
    eventually("a free slot", Duration::from_secs(5), async || {
        (http(&fake, "/v1/catalog/services").await.status == 200).then_some(())
    })
    .await;
    fake.set_max_conns(None);

    // Slow answers.
    fake.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(http(&fake, "/v1/catalog/services").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    fake.set_delay(Duration::ZERO);

    // A connection dropped mid-body, once.
    fake.truncate_next(1);
    let r = get(addr, "consul", "/v1/catalog/services", &[]).await;
    assert!(r.is_err(), "a truncated body read as complete: {r:?}");
    let r = http(&fake, "/v1/catalog/services").await;
    assert_eq!(r.status, 200);
    assert!(body(&r).get("consul").is_some());
}
