//! Watched directories: manifests (or any files) that are re-read when they change.
//!
//! A watcher is level-triggered. Every filesystem event (through `notify`: inotify on Linux),
//! every watch error and every inotify overflow only marks the directory dirty; after a
//! trailing debounce ([`WatchOptions::with_debounce`], 100 ms by default, at most
//! [`WatchOptions::with_max_delay`] after the first event) the whole tree is re-read and
//! compared, by content hash, with the last generation. A new generation is published only
//! when some content differs. A periodic full rescan ([`WatchOptions::with_rescan_interval`],
//! 30 s by default) catches what events miss (NFS, overlayfs, exhausted inotify watches, a
//! symlinked file whose target lives elsewhere).
//!
//! How the tree is read:
//! - recursively; names starting with `.` are skipped (hidden files, editor swap files, and
//!   the `..data` / `..2026_...` entries of a Kubernetes ConfigMap or Secret volume), and
//!   symlinks are followed;
//! - a directory holding `..data` (a ConfigMap or Secret volume) is read through that link,
//!   resolved **once** per scan, so a scan sees exactly one generation of the volume and
//!   reads each file once (not also through its top-level link); files keep their top-level
//!   paths (`DIR/x.yaml`);
//! - a scan that meets a file vanishing under it, or a `..data` that moved while it read, is
//!   retried after the debounce rather than published;
//! - when the directory itself disappears nothing is published (the last generation stands),
//!   and the watch is re-armed when it comes back.
//!
//! Two layers: [`DirWatcher`] says "the content under DIR changed" (a [`Generation`]: every
//! file and its content hash), and [`ManifestWatcher`] yields a
//! [`ParseOutput`](mesh_model::parse::ParseOutput) per generation from the `*.yaml`, `*.yml`
//! and `*.json` files, with a per-file last-known-good: a file whose YAML no longer parses,
//! or that is empty (a write in progress), keeps contributing the resources it last held,
//! plus its error findings. Both stop their background task when dropped.
//!
//! ```
//! use std::time::Duration;
//! use mesh_registry::files::{ManifestWatcher, WatchOptions};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("web.yaml"), "
//! apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {name: web, namespace: shop}
//! spec: {hosts: [web.example.com], ports: [{number: 80, name: http, protocol: HTTP}]}
//! ").unwrap();
//!
//! let mut watcher = ManifestWatcher::new(dir.path(), WatchOptions::default()).unwrap();
//! let first = watcher.current();
//! assert_eq!(first.output.resources.len(), 1);
//!
//! std::fs::remove_file(dir.path().join("web.yaml")).unwrap();
//! let next = tokio::time::timeout(Duration::from_secs(5), watcher.changed())
//!     .await
//!     .expect("a generation within 5 s")
//!     .expect("the watcher runs");
//! assert!(next.number > first.number);
//! assert!(next.output.resources.is_empty());
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_model::parse::{ParseOutput, ParsedResource};
use mesh_model::validate::{Finding, SourceLocation};
use notify::Watcher as _;
use thiserror::Error;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Errors starting a watcher.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FilesError {
    /// The path to watch is not a directory (or does not exist).
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Timing of a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    debounce: Duration,
    max_delay: Duration,
    rescan_interval: Duration,
}

impl Default for WatchOptions {
    /// A 100 ms debounce, at most 2 s, and a full rescan every 30 s.
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            rescan_interval: Duration::from_secs(30),
        }
    }
}

impl WatchOptions {
    /// How long the directory must be quiet after an event before it is re-read.
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// The longest a re-read waits after the first event of a burst, however busy the
    /// directory stays.
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// How often the directory is re-read with no event at all (the safety net for missed
    /// events). Zero is taken as one millisecond.
    pub fn with_rescan_interval(mut self, interval: Duration) -> Self {
        self.rescan_interval = interval.max(Duration::from_millis(1));
        self
    }
}

/// One generation of a watched directory's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// Counts generations from 1 (the initial read); a watcher publishes only changes.
    pub number: u64,
    /// Every file (by its path under the directory as given, `..data` links resolved) and a
    /// hash of its content; `None` for a file that could not be read.
    pub files: BTreeMap<PathBuf, Option<u64>>,
}

/// One generation of a watched manifest directory.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestGeneration {
    /// Counts generations from 1 (the initial read).
    pub number: u64,
    /// The manifest files read, sorted.
    pub files: Vec<PathBuf>,
    /// What they hold, file by file in path order, each file's last good resources standing
    /// in for a file that does not parse now (whose findings are included).
    pub output: ParseOutput,
}

/// Watches a directory and publishes a [`Generation`] whenever its content changes.
///
/// Must be created inside a Tokio runtime (with the `time` driver). Dropping it stops the
/// watch.
#[derive(Debug)]
pub struct DirWatcher {
    inner: Handle<Generation>,
}

impl DirWatcher {
    /// Reads `dir` now (that is generation 1) and watches it.
    pub fn new(dir: impl AsRef<Path>, options: WatchOptions) -> Result<Self, FilesError> {
        Ok(DirWatcher {
            inner: Handle::start(dir.as_ref(), options, DirLayer::default())?,
        })
    }

    /// The latest generation.
    pub fn current(&self) -> Arc<Generation> {
        self.inner.current()
    }

    /// Waits for a generation newer than the last one this method returned (on the first
    /// call, newer than generation 1), skipping to the latest when several came meanwhile;
    /// `None` once the watch has stopped. It may return what [`current`](Self::current)
    /// already showed.
    pub async fn changed(&mut self) -> Option<Arc<Generation>> {
        self.inner.changed().await
    }
}

/// Watches a manifest directory and publishes a [`ManifestGeneration`] whenever a manifest's
/// content changes.
///
/// Must be created inside a Tokio runtime (with the `time` driver). Dropping it stops the
/// watch.
#[derive(Debug)]
pub struct ManifestWatcher {
    inner: Handle<ManifestGeneration>,
}

impl ManifestWatcher {
    /// Reads and parses `dir` now (that is generation 1) and watches it.
    pub fn new(dir: impl AsRef<Path>, options: WatchOptions) -> Result<Self, FilesError> {
        Ok(ManifestWatcher {
            inner: Handle::start(dir.as_ref(), options, ManifestLayer::default())?,
        })
    }

    /// The latest generation.
    pub fn current(&self) -> Arc<ManifestGeneration> {
        self.inner.current()
    }

    /// Waits for a generation newer than the last one this method returned (on the first
    /// call, newer than generation 1), skipping to the latest when several came meanwhile;
    /// `None` once the watch has stopped. It may return what [`current`](Self::current)
    /// already showed.
    pub async fn changed(&mut self) -> Option<Arc<ManifestGeneration>> {
        self.inner.changed().await
    }
}

// ---------------------------------------------------------------------------------------
// Scanning.

/// What a scan found in one file.
#[derive(Clone, Debug)]
enum Content {
    Bytes(Arc<[u8]>),
    Unreadable(String),
}

#[derive(Debug, Default)]
struct Scan {
    files: BTreeMap<PathBuf, Content>,
    /// Something moved while the scan ran: read again before believing it.
    unstable: bool,
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with('.'))
}

/// Reads the tree under `root`; `keep` chooses the files. An error only when `root` itself
/// cannot be read.
fn scan(root: &Path, keep: fn(&Path) -> bool) -> Result<Scan, FilesError> {
    let meta = std::fs::metadata(root).map_err(|source| FilesError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(FilesError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut out = Scan::default();
    let mut seen = BTreeSet::new();
    // (real directory to list, the logical path its entries get)
    let mut stack = vec![(root.to_path_buf(), root.to_path_buf())];
    let mut bound = 100_000usize;
    while let Some((real, logical)) = stack.pop() {
        bound = bound.saturating_sub(1);
        if bound == 0 {
            tracing::warn!("{}: too many directories; scan cut short", root.display());
            break;
        }
        let canonical = std::fs::canonicalize(&real).unwrap_or_else(|_| real.clone());
        if !seen.insert(canonical) {
            continue;
        }
        // A ConfigMap or Secret volume: read one generation, through `..data`, once.
        let data = real.join("..data");
        if std::fs::symlink_metadata(&data).is_ok() {
            match std::fs::canonicalize(&data) {
                Ok(target) => {
                    let before = std::fs::read_link(&data).ok();
                    let files_before = out.files.len();
                    read_tree(&target, &logical, keep, &mut out, &mut seen);
                    let after = std::fs::read_link(&data).ok();
                    if before != after {
                        out.unstable = true;
                    }
                    tracing::trace!(
                        "{}: {} file(s) through ..data",
                        logical.display(),
                        out.files.len() - files_before
                    );
                }
                // `..data` is being swapped or points nowhere: try again shortly.
                Err(_) => out.unstable = true,
            }
            continue;
        }
        list_dir(&real, &logical, keep, &mut out, &mut stack, root);
    }
    Ok(out)
}

/// Lists one directory: files are read, sub-directories pushed.
fn list_dir(
    real: &Path,
    logical: &Path,
    keep: fn(&Path) -> bool,
    out: &mut Scan,
    stack: &mut Vec<(PathBuf, PathBuf)>,
    root: &Path,
) {
    let entries = match std::fs::read_dir(real) {
        Ok(e) => e,
        Err(e) => {
            if real != root {
                // A sub-directory removed under the scan, or unreadable: look again soon.
                tracing::debug!("{}: {e}", real.display());
                out.unstable = true;
            }
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if is_hidden(&name) {
            continue;
        }
        let path = entry.path();
        let logical_path = logical.join(&name);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => stack.push((path, logical_path)),
            Ok(m) if m.is_file() => {
                if keep(&logical_path) {
                    read_file(&path, logical_path, out);
                }
            }
            Ok(_) => {}
            // A dangling link, or a file removed since the listing.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if std::fs::symlink_metadata(&path).is_err() {
                    out.unstable = true;
                }
            }
            Err(e) => {
                if keep(&logical_path) {
                    out.files
                        .insert(logical_path, Content::Unreadable(e.to_string()));
                }
            }
        }
    }
}

/// Reads a whole tree (the target of `..data`), giving its files logical paths.
fn read_tree(
    target: &Path,
    logical: &Path,
    keep: fn(&Path) -> bool,
    out: &mut Scan,
    seen: &mut BTreeSet<PathBuf>,
) {
    let mut stack = vec![(target.to_path_buf(), logical.to_path_buf())];
    let mut bound = 10_000usize;
    while let Some((real, logical)) = stack.pop() {
        bound = bound.saturating_sub(1);
        if bound == 0 {
            break;
        }
        let canonical = std::fs::canonicalize(&real).unwrap_or_else(|_| real.clone());
        if real != target && !seen.insert(canonical) {
            continue;
        }
        list_dir(&real, &logical, keep, out, &mut stack, Path::new(""));
    }
}

fn read_file(path: &Path, logical: PathBuf, out: &mut Scan) {
    match std::fs::read(path) {
        Ok(bytes) => {
            out.files.insert(logical, Content::Bytes(bytes.into()));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => out.unstable = true,
        Err(e) => {
            out.files
                .insert(logical, Content::Unreadable(e.to_string()));
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

// ---------------------------------------------------------------------------------------
// Layers: what a scan becomes.

/// Turns scans into published values.
trait Layer: Send + 'static {
    type Output: Send + Sync + 'static;
    /// Which files matter.
    fn keep(&self) -> fn(&Path) -> bool;
    /// The value for a scan, or `None` when nothing changed since the last one.
    fn step(&mut self, scan: &Scan, number: u64) -> Option<Self::Output>;
}

/// The generic layer: a generation whenever any file's hash changes.
#[derive(Default)]
struct DirLayer {
    last: Option<BTreeMap<PathBuf, Option<u64>>>,
}

impl Layer for DirLayer {
    type Output = Generation;
    fn keep(&self) -> fn(&Path) -> bool {
        |_| true
    }
    fn step(&mut self, scan: &Scan, number: u64) -> Option<Generation> {
        let files: BTreeMap<PathBuf, Option<u64>> = scan
            .files
            .iter()
            .map(|(p, c)| {
                let h = match c {
                    Content::Bytes(b) => Some(content_hash(b)),
                    Content::Unreadable(_) => None,
                };
                (p.clone(), h)
            })
            .collect();
        if self.last.as_ref() == Some(&files) {
            return None;
        }
        self.last = Some(files.clone());
        Some(Generation { number, files })
    }
}

/// The manifest layer's memory of one file.
struct FileState {
    /// The content's hash, or the error reading it.
    hash: Result<u64, String>,
    /// The resources of its last version that parsed.
    good: Option<Vec<ParsedResource>>,
    /// What it contributes now.
    contributes: ParseOutput,
}

#[derive(Default)]
struct ManifestLayer {
    files: BTreeMap<PathBuf, FileState>,
    /// What the last generation held.
    last: Option<(Vec<PathBuf>, ParseOutput)>,
}

impl ManifestLayer {
    fn read_one(prev: Option<FileState>, path: &Path, content: &Content) -> FileState {
        let good = prev.and_then(|p| p.good);
        match content {
            Content::Unreadable(e) => {
                let mut contributes = ParseOutput {
                    resources: good.clone().unwrap_or_default(),
                    ..ParseOutput::default()
                };
                contributes.findings.push(
                    Finding::error("", format!("cannot read: {e}")).with_location(SourceLocation {
                        file: path.to_path_buf(),
                        line: 1,
                    }),
                );
                FileState {
                    hash: Err(e.clone()),
                    good,
                    contributes,
                }
            }
            Content::Bytes(bytes) => {
                let hash = Ok(content_hash(bytes));
                // An empty file is a write in progress (istiod skips them too): it keeps
                // what it held.
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return FileState {
                        hash,
                        contributes: ParseOutput {
                            resources: good.clone().unwrap_or_default(),
                            ..ParseOutput::default()
                        },
                        good,
                    };
                }
                let parsed = mesh_model::parse::parse_reader(&bytes[..], path)
                    .unwrap_or_else(|_| ParseOutput::default());
                let broken = parsed
                    .findings
                    .iter()
                    .any(|f| f.is_error() && f.resource.is_none());
                match (broken, good) {
                    (true, Some(good)) => FileState {
                        hash,
                        contributes: ParseOutput {
                            resources: good.clone(),
                            skipped: Vec::new(),
                            findings: parsed.findings,
                        },
                        good: Some(good),
                    },
                    (true, None) => FileState {
                        hash,
                        good: None,
                        contributes: parsed,
                    },
                    (false, _) => FileState {
                        hash,
                        good: Some(parsed.resources.clone()),
                        contributes: parsed,
                    },
                }
            }
        }
    }
}

impl Layer for ManifestLayer {
    type Output = ManifestGeneration;
    fn keep(&self) -> fn(&Path) -> bool {
        is_manifest
    }
    fn step(&mut self, scan: &Scan, number: u64) -> Option<ManifestGeneration> {
        let mut old = std::mem::take(&mut self.files);
        let mut changed = old.len() != scan.files.len();
        for (path, content) in &scan.files {
            let prev = old.remove(path);
            let hash = match content {
                Content::Bytes(b) => Ok(content_hash(b)),
                Content::Unreadable(e) => Err(e.clone()),
            };
            let state = match prev {
                Some(p) if p.hash == hash => p,
                prev => {
                    changed = true;
                    Self::read_one(prev, path, content)
                }
            };
            self.files.insert(path.clone(), state);
        }
        if !changed && self.last.is_some() {
            return None;
        }
        let mut output = ParseOutput::default();
        for state in self.files.values() {
            output.extend(state.contributes.clone());
        }
        let files: Vec<PathBuf> = self.files.keys().cloned().collect();
        // An emptied file, or one broken the same way again, changes nothing.
        if self
            .last
            .as_ref()
            .is_some_and(|(f, o)| *f == files && *o == output)
        {
            return None;
        }
        self.last = Some((files.clone(), output.clone()));
        Some(ManifestGeneration {
            number,
            files,
            output,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The watch loop.

#[derive(Debug)]
struct Handle<T> {
    rx: watch::Receiver<Arc<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Send + Sync + 'static> Handle<T> {
    fn start<L: Layer<Output = T>>(
        dir: &Path,
        options: WatchOptions,
        mut layer: L,
    ) -> Result<Self, FilesError> {
        let root = std::path::absolute(dir).map_err(|source| FilesError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(FilesError::NotADirectory { path: root });
        }
        // Armed before the first read, so that nothing written after it goes unseen.
        let signal = Arc::new(Notify::new());
        let arming = Arming::new(&root, signal.clone());
        let first = scan(&root, layer.keep())?;
        // A layer's first step always yields (there is no last generation to equal); the
        // error is unreachable but keeps this free of panics.
        let value = layer
            .step(&first, 1)
            .ok_or_else(|| FilesError::NotADirectory { path: root.clone() })?;
        let (tx, rx) = watch::channel(Arc::new(value));
        let task = tokio::spawn(run(
            root,
            options,
            layer,
            tx,
            first.unstable,
            signal,
            arming,
        ));
        Ok(Handle { rx, task })
    }

    fn current(&self) -> Arc<T> {
        self.rx.borrow().clone()
    }

    async fn changed(&mut self) -> Option<Arc<T>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

/// The notify watcher and which directory instance it is armed on.
struct Arming {
    watcher: Option<notify::RecommendedWatcher>,
    root: PathBuf,
    /// (device, inode) of the watched root.
    armed: Option<(u64, u64)>,
    parent_armed: bool,
}

impl Arming {
    fn new(root: &Path, signal: Arc<Notify>) -> Self {
        let filter_root = root.to_path_buf();
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                // Opening and reading (our own scans do) changes nothing; a close after a
                // write does.
                let read_only = matches!(
                    event.kind,
                    notify::EventKind::Access(
                        notify::event::AccessKind::Open(_)
                            | notify::event::AccessKind::Read
                            | notify::event::AccessKind::Close(
                                notify::event::AccessMode::Read
                                    | notify::event::AccessMode::Execute
                            )
                    )
                );
                let relevant = event.need_rescan()
                    || (!read_only
                        && (event.paths.is_empty()
                            || event.paths.iter().any(|p| p.starts_with(&filter_root))));
                if relevant {
                    signal.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!("watching {}: {e}; rescanning", filter_root.display());
                signal.notify_one();
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} ({e}); relying on the periodic rescan",
                    root.display()
                );
                None
            }
        };
        let mut arming = Arming {
            watcher,
            root: root.to_path_buf(),
            armed: None,
            parent_armed: false,
        };
        arming.rearm();
        arming
    }

    /// Watches the root (again, when it was replaced) and its parent (to see it come back).
    fn rearm(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        if !self.parent_armed
            && let Some(parent) = self.root.parent()
        {
            match watcher.watch(parent, notify::RecursiveMode::NonRecursive) {
                Ok(()) => self.parent_armed = true,
                Err(e) => tracing::debug!("watching {}: {e}", parent.display()),
            }
        }
        let id = std::fs::metadata(&self.root)
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .map(|m| (m.dev(), m.ino()));
        if id == self.armed {
            return;
        }
        if self.armed.is_some() {
            let _ = watcher.unwatch(&self.root);
        }
        self.armed = None;
        if id.is_some() {
            match watcher.watch(&self.root, notify::RecursiveMode::Recursive) {
                Ok(()) => self.armed = id,
                Err(e) => tracing::warn!(
                    "watching {}: {e}; relying on the periodic rescan",
                    self.root.display()
                ),
            }
        }
    }
}

/// Consecutive unstable scans tolerated before one is published anyway.
const MAX_UNSTABLE: u32 = 5;

async fn run<L: Layer>(
    root: PathBuf,
    options: WatchOptions,
    layer: L,
    tx: watch::Sender<Arc<L::Output>>,
    first_unstable: bool,
    signal: Arc<Notify>,
    mut arming: Arming,
) {
    let mut layer = Some(layer);
    let mut number = 1u64;
    let mut unstable_rounds = 0u32;
    // (first event of the burst, latest event)
    let now = Instant::now();
    let mut pending: Option<(Instant, Instant)> = first_unstable.then_some((now, now));
    let mut next_rescan = now + options.rescan_interval;
    let mut root_missing = false;
    loop {
        let deadline = match pending {
            Some((first, last)) => (last + options.debounce).min(first + options.max_delay),
            None => next_rescan,
        };
        tokio::select! {
            () = signal.notified() => {
                let now = Instant::now();
                pending = Some((pending.map_or(now, |p| p.0), now));
                continue;
            }
            () = tx.closed() => return,
            () = tokio::time::sleep_until(deadline) => {}
        }
        let periodic = pending.is_none();
        pending = None;
        next_rescan = Instant::now() + options.rescan_interval;
        let Some(mut l) = layer.take() else { return };
        let scan_root = root.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let result = scan(&scan_root, l.keep()).map(|s| {
                let out = if s.unstable && unstable_rounds < MAX_UNSTABLE {
                    None
                } else {
                    l.step(&s, number + 1)
                };
                (s.unstable, out)
            });
            (l, result)
        })
        .await;
        let Ok((l, result)) = joined else {
            tracing::error!("watching {}: the scan panicked; stopping", root.display());
            return;
        };
        layer = Some(l);
        arming.rearm();
        match result {
            Err(e) => {
                if !root_missing {
                    tracing::warn!("{e}; keeping the last generation until it is back");
                }
                root_missing = true;
            }
            Ok((unstable, out)) => {
                if root_missing {
                    tracing::info!("{} is back", root.display());
                }
                root_missing = false;
                if unstable && out.is_none() {
                    unstable_rounds += 1;
                    let now = Instant::now();
                    pending = Some((now, now));
                    continue;
                }
                unstable_rounds = 0;
                if let Some(out) = out {
                    number += 1;
                    if periodic {
                        tracing::info!("{}: the periodic rescan found a change", root.display());
                    }
                    if tx.send(Arc::new(out)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
