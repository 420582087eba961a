//! The config store: validation on write, last-good retention, events, snapshots, sync.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::Arc;

use mesh_model::store::{Change, ConfigEvent};
use mesh_model::{Config, ConfigStore, Kind, ResourceKey, parse_str};
use tokio::sync::broadcast::error::TryRecvError;

fn dr(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{host: \"{host}\"}}\n---\n"
    )
}

fn key(name: &str) -> ResourceKey {
    ResourceKey::new(Kind::DestinationRule, "shop", name)
}

fn host_of(c: &Config) -> String {
    match c {
        Config::DestinationRule(d) => d.spec.host.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<ConfigEvent>) -> Vec<(String, Change, u64)> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push((e.key.name, e.change, e.revision)),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn invalid_resources_are_rejected_and_valid_ones_kept() {
    let store = ConfigStore::new();
    let mut rx = store.subscribe();
    let text = format!("{}{}{}", dr("a", "a"), dr("bad", "a..b"), dr("c", "c"));
    let report = store.apply_all(parse_str(&text, "in.yaml"));
    assert_eq!(report.changed, [key("a"), key("c")]);
    assert_eq!(report.rejected.len(), 1);
    let rejected = &report.rejected[0];
    assert_eq!(rejected.resource.name, "bad");
    assert_eq!(rejected.findings[0].path, "spec.host");
    assert!(rejected.findings[0].location.is_some());
    assert_eq!(store.len(), 2);
    assert_eq!(
        drain(&mut rx),
        [
            ("a".into(), Change::Added, 1),
            ("c".into(), Change::Added, 2)
        ]
    );
}

#[test]
fn a_bad_update_keeps_the_last_good_version() {
    let store = ConfigStore::new();
    store.apply_all(parse_str(&dr("a", "good.example.com"), "1.yaml"));
    let mut rx = store.subscribe();
    let report = store.apply_all(parse_str(&dr("a", "*bad*"), "2.yaml"));
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(host_of(&store.get(&key("a")).unwrap()), "good.example.com");
    assert!(
        drain(&mut rx).is_empty(),
        "a rejected update announces nothing"
    );
}

#[test]
fn updates_deletes_and_no_op_writes() {
    let store = ConfigStore::new();
    let mut rx = store.subscribe();
    store.apply_all(parse_str(&dr("a", "one"), "x"));
    let again = store.apply_all(parse_str(&dr("a", "one"), "x"));
    assert_eq!(again.unchanged, [key("a")]);
    store.apply_all(parse_str(&dr("a", "two"), "x"));
    assert_eq!(host_of(&store.get(&key("a")).unwrap()), "two");
    assert!(store.delete(&key("a")).is_some());
    assert!(store.delete(&key("a")).is_none());
    assert_eq!(
        drain(&mut rx),
        [
            ("a".into(), Change::Added, 1),
            ("a".into(), Change::Updated, 2),
            ("a".into(), Change::Deleted, 3)
        ]
    );
    assert_eq!(store.revision(), 3);
    assert!(store.is_empty());
}

#[test]
fn apply_reports_warnings_and_rejects_errors() {
    let store = ConfigStore::new();
    let parsed = parse_str(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n  - route: [{destination: {host: b}}]\n",
        "w.yaml",
    );
    let config = parsed.resources[0].config.clone();
    let (change, warnings) = store.apply(config.clone()).unwrap();
    assert_eq!(change, Some(Change::Added));
    assert_eq!(
        warnings.len(),
        1,
        "the unreachable second route is a warning"
    );
    let mut broken = config;
    if let Config::VirtualService(vs) = &mut broken {
        vs.spec.hosts = vec!["*".into()];
    }
    let rejected = store.apply(broken).unwrap_err();
    assert!(rejected.findings.iter().any(|f| f.path == "spec.hosts[0]"));
}

#[test]
fn snapshots_are_immutable_and_shared_until_a_change() {
    let store = ConfigStore::new();
    store.apply_all(parse_str(&format!("{}{}", dr("a", "a"), dr("b", "b")), "x"));
    let s1 = store.snapshot();
    let s2 = store.snapshot();
    assert!(Arc::ptr_eq(&s1, &s2));
    store.delete(&key("a"));
    let s3 = store.snapshot();
    assert_eq!(s1.resources.len(), 2, "old snapshot unchanged");
    assert_eq!(s3.resources.len(), 1);
    assert_eq!(s3.revision, 3);
    assert_eq!(s3.of_kind(Kind::DestinationRule).count(), 1);
    assert_eq!(s3.of_kind(Kind::VirtualService).count(), 0);
}

#[test]
fn sync_deletes_what_disappeared_but_keeps_what_broke() {
    let store = ConfigStore::new();
    store.apply_all(parse_str(
        &format!("{}{}{}", dr("a", "a"), dr("b", "b"), dr("c", "c")),
        "x",
    ));
    // `a` is unchanged, `b` is now invalid (keep last good), `c` is gone.
    let report = store.sync(parse_str(
        &format!("{}{}", dr("a", "a"), dr("b", "b b")),
        "x",
    ));
    assert_eq!(report.unchanged, [key("a")]);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.deleted, [key("c")]);
    assert_eq!(host_of(&store.get(&key("b")).unwrap()), "b");
    // A document that no longer parses at all also keeps its last good version.
    let broken = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: shop}\nspec: {host: 5, subsets: 7}\n";
    let report = store.sync(parse_str(&format!("{broken}---\n{}", dr("b", "b")), "x"));
    assert_eq!(report.deleted, Vec::<ResourceKey>::new());
    assert!(store.get(&key("a")).is_some());
}

#[test]
fn sync_deletes_nothing_while_a_document_is_unreadable() {
    let store = ConfigStore::new();
    store.apply_all(parse_str(&format!("{}{}", dr("a", "a"), dr("b", "b")), "x"));
    // `b`'s file is being edited and does not parse: `b` must not disappear, and `a`'s update
    // still applies.
    let report = store.sync(parse_str(
        &format!("{}apiVersion: [unclosed\n---\n", dr("a", "a2")),
        "x",
    ));
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(host_of(&store.get(&key("a")).unwrap()), "a2");
    assert!(store.get(&key("b")).is_some());
    // Once the document is fixed (and `b` really gone), the deletion happens.
    let report = store.sync(parse_str(&dr("a", "a2"), "x"));
    assert_eq!(report.deleted, [key("b")]);
}

#[tokio::test]
async fn subscribers_see_changes_from_another_task() {
    let store = Arc::new(ConfigStore::new());
    let mut rx = store.subscribe();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                store.apply_all(parse_str(&dr(&format!("r{i}"), "h"), "x"));
            }
        })
    };
    let mut seen = 0;
    while seen < 50 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("events arrive")
            .unwrap();
        seen += 1;
        assert_eq!(e.revision, seen);
    }
    writer.await.unwrap();
}

#[test]
fn lagging_subscribers_are_told_to_resync() {
    let store = ConfigStore::new();
    let mut rx = store.subscribe();
    for i in 0..(mesh_model::store::EVENT_CAPACITY + 10) {
        store.apply_all(parse_str(&dr(&format!("r{i}"), "h"), "x"));
    }
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(10))));
    // The snapshot is the way back to a consistent view.
    assert_eq!(
        store.snapshot().resources.len(),
        mesh_model::store::EVENT_CAPACITY + 10
    );
}
