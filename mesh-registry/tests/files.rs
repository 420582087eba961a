//! Watched directories on real temp dirs: the file cases F1–F12 of the registries reference
//! (§7.5), asserting on the generations emitted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mesh_registry::files::{DirWatcher, ManifestGeneration, ManifestWatcher, WatchOptions};
use tokio::time::{Instant, timeout};

/// How long a test waits for the next generation.
const NEXT: Duration = Duration::from_secs(5);
/// A quiet period well beyond the test debounce (50 ms) and its retries, for "nothing is
/// emitted" assertions.
const QUIET: Duration = Duration::from_millis(500);

/// Events only: the rescan is too slow to hide a missed event.
fn opts() -> WatchOptions {
    WatchOptions::default()
        .with_debounce(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_rescan_interval(Duration::from_secs(600))
}

fn se(name: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{hosts: [{name}.example.com], ports: [{{number: 80, name: http, protocol: HTTP}}]}}\n"
    )
}

/// The resources of a generation, as `namespace/name`, in output order.
fn names(g: &ManifestGeneration) -> Vec<String> {
    g.output
        .resources
        .iter()
        .map(|r| {
            let k = r.config.key();
            format!("{}/{}", k.namespace, k.name)
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

/// Receives generations until one satisfies `done`, within [`NEXT`] of each other; returns
/// every generation received (the last satisfies `done`).
async fn until(
    w: &mut ManifestWatcher,
    done: impl Fn(&ManifestGeneration) -> bool,
) -> Vec<Arc<ManifestGeneration>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + NEXT * 2;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let g = timeout(left.min(NEXT), w.changed())
            .await
            .unwrap_or_else(|_| panic!("no matching generation in time; saw {seen:#?}"))
            .expect("watcher running");
        let ok = done(&g);
        seen.push(g);
        if ok {
            return seen;
        }
    }
}

/// Asserts nothing is emitted for [`QUIET`].
async fn quiet(w: &mut ManifestWatcher) {
    if let Ok(g) = timeout(QUIET, w.changed()).await {
        panic!("unexpected generation: {g:#?}");
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn f1_rename_over_replaces_the_file_in_one_generation() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), &se("a1"));
    let mut w = ManifestWatcher::new(dir.path(), opts()).unwrap();
    assert_eq!(names(&w.current()), strs(&["shop/a1"]));

    // An editor's atomic save: write a temporary name, rename it over the file.
    write(&dir.path().join("a.yaml.tmp"), &se("a2"));
    std::fs::rename(dir.path().join("a.yaml.tmp"), dir.path().join("a.yaml")).unwrap();
    let seen = until(&mut w, |g| names(g) == strs(&["shop/a2"])).await;
    for g in &seen {
        let n = names(g);
        assert!(n == strs(&["shop/a1"]) || n == strs(&["shop/a2"]), "{n:?}");
    }
    // The temporary file never counted, and the final generation lists one file.
    assert_eq!(seen.last().unwrap().files, vec![dir.path().join("a.yaml")]);
}

#[tokio::test]
async fn f2_truncate_then_write_never_flaps_to_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    write(&path, &se("a1"));
    let mut w = ManifestWatcher::new(dir.path(), opts()).unwrap();

    // Truncated, and left empty past the debounce: the empty file is a write in progress
    // and keeps what it held, so nothing is emitted during this quiet period.
    std::fs::File::create(&path).unwrap();
    quiet(&mut w).await;
    assert_eq!(names(&w.current()), strs(&["shop/a1"]));

    write(&path, &se("a2"));
    let seen = until(&mut w, |g| names(g) == strs(&["shop/a2"])).await;
    assert!(
        seen.iter().all(|g| !g.output.resources.is_empty()),
        "{seen:#?}"
    );
}

#[tokio::test]
async fn f4_delete_then_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    write(&path, &se("a1"));
    write(&dir.path().join("b.yaml"), &se("b"));
    let mut w = ManifestWatcher::new(dir.path(), opts()).unwrap();
    assert_eq!(names(&w.current()), strs(&["shop/a1", "shop/b"]));

    std::fs::remove_file(&path).unwrap();
    until(&mut w, |g| names(g) == strs(&["shop/b"])).await;
    write(&path, &se("a3"));
    until(&mut w, |g| names(g) == strs(&["shop/a3", "shop/b"])).await;
}

#[tokio::test]
async fn f5_new_sub_directories_are_read_and_watched() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), &se("a"));
    let mut w = ManifestWatcher::new(dir.path(), opts()).unwrap();

    let deeper = dir.path().join("sub").join("deeper");
    std::fs::create_dir_all(&deeper).unwrap();
    write(&deeper.join("b.yaml"), &se("b1"));
    until(&mut w, |g| sorted(names(g)) == strs(&["shop/a", "shop/b1"])).await;
    // A change inside the new directory alone is seen too (its watch was added).
    write(&deeper.join("b.yaml"), &se("b2"));
    until(&mut w, |g| sorted(names(g)) == strs(&["shop/a", "shop/b2"])).await;
}

/// Lays out a ConfigMap volume generation the way the kubelet's atomic writer does.
fn configmap_generation(root: &Path, ts: &str, files: &[(&str, String)]) {
    let d = root.join(ts);
    std::fs::create_dir(&d).unwrap();
    for (name, text) in files {
        write(&d.join(name), text);
    }
}

#[tokio::test]
async fn f6_configmap_swap_gives_one_consistent_generation() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let old = "..2026_01_01_00_00_00.1";
    configmap_generation(root, old, &[("a.yaml", se("a1"))]);
    std::os::unix::fs::symlink(old, root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/a.yaml", root.join("a.yaml")).unwrap();
    let mut w = ManifestWatcher::new(root, opts()).unwrap();
    // Read once, through ..data, under its top-level name.
    assert_eq!(names(&w.current()), strs(&["shop/a1"]));
    assert_eq!(w.current().files, vec![root.join("a.yaml")]);

    // The update: a new timestamped dir, ..data_tmp renamed over ..data, new top-level
    // links, the old dir removed.
    let new = "..2026_01_01_00_01_00.2";
    configmap_generation(root, new, &[("a.yaml", se("a2")), ("b.yaml", se("b"))]);
    std::os::unix::fs::symlink(new, root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/b.yaml", root.join("b.yaml")).unwrap();
    std::fs::remove_dir_all(root.join(old)).unwrap();

    let seen = until(&mut w, |g| names(g) == strs(&["shop/a2", "shop/b"])).await;
    // Every generation is one whole ConfigMap generation: never mixed, never duplicated.
    for g in &seen {
        let n = names(g);
        assert!(
            n == strs(&["shop/a1"]) || n == strs(&["shop/a2", "shop/b"]),
            "{n:?}"
        );
    }
    assert_eq!(
        seen.last().unwrap().files,
        vec![root.join("a.yaml"), root.join("b.yaml")]
    );
    // Settled: nothing more once the old directory is gone (quiet period).
    quiet(&mut w).await;
}

#[tokio::test]
async fn f7_invalid_yaml_keeps_the_files_last_good_resources_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    write(&a, &se("a1"));
    write(&dir.path().join("b.yaml"), &se("b"));
    let mut w = ManifestWatcher::new(dir.path(), opts()).unwrap();

    write(&a, "apiVersion: networking.istio.io/v1\nkind: [unclosed\n");
    let seen = until(&mut w, |g| !g.output.findings.is_empty()).await;
    let g = seen.last().unwrap();
    assert_eq!(names(g), strs(&["shop/a1", "shop/b"]));
    assert_eq!(g.output.findings.len(), 1, "{:#?}", g.output.findings);
    let f = &g.output.findings[0];
    assert!(f.is_error());
    assert_eq!(f.location.as_ref().unwrap().file, a);

    // Fixed: the new version replaces the last good one, and the error is gone.
    write(&a, &se("a2"));
    let seen = until(&mut w, |g| names(g) == strs(&["shop/a2", "shop/b"])).await;
    assert!(seen.last().unwrap().output.findings.is_empty());

    // A file that never parsed contributes only its finding.
    write(&dir.path().join("c.yaml"), "kind: [\n");
    let seen = until(&mut w, |g| !g.output.findings.is_empty()).await;
    assert_eq!(names(seen.last().unwrap()), strs(&["shop/a2", "shop/b"]));
}

#[tokio::test]
async fn f10_a_burst_of_200_files_gives_few_generations_and_a_complete_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut w =
        ManifestWatcher::new(dir.path(), opts().with_debounce(Duration::from_millis(100))).unwrap();
    let start = w.current().number;
    for i in 0..200 {
        write(
            &dir.path().join(format!("s{i:03}.yaml")),
            &se(&format!("s{i:03}")),
        );
    }
    let seen = until(&mut w, |g| g.output.resources.len() == 200).await;
    let last = seen.last().unwrap();
    let want: Vec<String> = (0..200).map(|i| format!("shop/s{i:03}")).collect();
    assert_eq!(names(last), want);
    assert!(
        last.number - start <= 5,
        "{} generations for one burst",
        last.number - start
    );
    quiet(&mut w).await;
}

#[tokio::test]
async fn f11_root_removed_and_recreated() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("conf");
    std::fs::create_dir(&root).unwrap();
    write(&root.join("a.yaml"), &se("a"));
    let mut w = ManifestWatcher::new(&root, opts()).unwrap();

    // The directory gone: the last generation stands (nothing emitted in the quiet period).
    std::fs::remove_dir_all(&root).unwrap();
    quiet(&mut w).await;
    assert_eq!(names(&w.current()), strs(&["shop/a"]));

    std::fs::create_dir(&root).unwrap();
    write(&root.join("c.yaml"), &se("c1"));
    until(&mut w, |g| names(g) == strs(&["shop/c1"])).await;
    // The new directory is watched, not merely rescanned.
    write(&root.join("c.yaml"), &se("c2"));
    until(&mut w, |g| names(g) == strs(&["shop/c2"])).await;
}

#[tokio::test]
async fn f12_a_change_no_event_reports_is_caught_by_the_rescan() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("x.yaml");
    write(&target, &se("x1"));
    // A file linked from elsewhere: writing its target raises no event in the directory.
    std::os::unix::fs::symlink(&target, dir.path().join("x.yaml")).unwrap();
    let mut events_only = ManifestWatcher::new(dir.path(), opts()).unwrap();
    let mut rescanning = ManifestWatcher::new(
        dir.path(),
        opts().with_rescan_interval(Duration::from_millis(300)),
    )
    .unwrap();
    assert_eq!(names(&rescanning.current()), strs(&["shop/x1"]));

    write(&target, &se("x2"));
    until(&mut rescanning, |g| names(g) == strs(&["shop/x2"])).await;
    // Without the rescan the change stays unseen (quiet period).
    quiet(&mut events_only).await;
    assert_eq!(names(&events_only.current()), strs(&["shop/x1"]));
}

#[tokio::test]
async fn dir_watcher_emits_on_content_changes_only() {
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("web");
    std::fs::create_dir(&cred).unwrap();
    write(&cred.join("tls.crt"), "one");
    let mut w = DirWatcher::new(dir.path(), opts()).unwrap();
    let first = w.current();
    assert_eq!(first.number, 1);
    assert_eq!(
        first.files.keys().collect::<Vec<_>>(),
        vec![&cred.join("tls.crt")]
    );

    // Same bytes again (a new mtime): no generation in the quiet period.
    write(&cred.join("tls.crt"), "one");
    if let Ok(g) = timeout(QUIET, w.changed()).await {
        panic!("no content changed, yet {g:?}");
    }

    write(&cred.join("tls.key"), "key");
    let g = timeout(NEXT, w.changed()).await.unwrap().unwrap();
    assert_eq!(g.number, 2);
    assert_eq!(
        g.files.keys().collect::<Vec<_>>(),
        vec![&cred.join("tls.crt"), &cred.join("tls.key")]
    );
    assert_eq!(
        g.files[&cred.join("tls.crt")],
        first.files[&cred.join("tls.crt")]
    );
}

#[tokio::test]
async fn f3_vim_backup_then_rename_never_loses_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    write(&path, &se("a1"));
    let mut w = ManifestWatcher::new(dir.path(), opts()).unwrap();

    // vim's default save: the file moved to a backup, the new one written, the backup
    // deleted; the backup name is not a manifest.
    let backup = dir.path().join("a.yaml~");
    std::fs::rename(&path, &backup).unwrap();
    write(&path, &se("a2"));
    std::fs::remove_file(&backup).unwrap();
    let seen = until(&mut w, |g| names(g) == strs(&["shop/a2"])).await;
    for g in &seen {
        let n = names(g);
        assert!(n == strs(&["shop/a1"]) || n == strs(&["shop/a2"]), "{n:?}");
    }
}

#[tokio::test]
async fn dropping_a_watcher_stops_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let w = DirWatcher::new(dir.path(), opts()).unwrap();
    assert_eq!(metrics.num_alive_tasks(), before + 1);
    drop(w);
    let deadline = Instant::now() + NEXT;
    while metrics.num_alive_tasks() > before {
        assert!(
            Instant::now() < deadline,
            "the watch task outlived its handle"
        );
        tokio::task::yield_now().await;
    }
}
