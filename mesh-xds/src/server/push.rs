//! [`ViewCache`]: translation per proxy *view*, shared, and debounced pushes.
//!
//! Proxies that would get identical configuration (same type, namespace, labels, interception
//! mode, locality, network, proxyless or not) share one view: it is translated once, encoded
//! once, and every stream of that view reads the same `Arc`'d snapshot. A config change marks
//! the store dirty; [`ViewCache::run_debounced`] waits for a quiet period (istiod's defaults:
//! 100 ms, at most 10 s), re-translates every view once, and wakes only the streams whose
//! resources changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_model::store::ConfigEvent;
use mesh_model::{ConfigStore, Kind, MeshConfig};
use tokio::sync::{broadcast, watch};

use crate::proxy::Proxy;
use crate::registry::ServiceRegistry;
use crate::server::SnapshotSource;
use crate::snapshot::Snapshot;
use crate::translate::PushContext;

/// Debounce settings (istiod's `PILOT_DEBOUNCE_AFTER` / `PILOT_DEBOUNCE_MAX`).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Debounce {
    /// Quiet period after the last change before pushing.
    pub after: Duration,
    /// Longest a push may be delayed while changes keep coming.
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// What one push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Snapshot version pushed.
    pub version: u64,
    /// Views translated.
    pub views: usize,
    /// Views whose resources changed (their streams were woken).
    pub changed: usize,
    /// Time spent translating and encoding.
    pub elapsed: Duration,
    /// Whether only EDS assignments were translated again (a change that touched nothing but
    /// the endpoints of STATIC services; istiod's incremental EDS push).
    pub eds_only: bool,
}

struct View {
    proxy: Proxy,
    tx: watch::Sender<Arc<Snapshot>>,
}

/// What the last push translated from.
type LastPush = (Arc<mesh_model::store::Snapshot>, Arc<ServiceRegistry>);

/// The key that decides which proxies share a view.
pub fn view_key(p: &Proxy) -> String {
    format!(
        "{:?}|{}|{:?}|{:?}|{}|{}|{}",
        p.proxy_type,
        p.namespace,
        p.labels,
        p.interception_mode,
        p.proxyless_grpc,
        p.locality.label(),
        p.network
    )
}

/// Views over a config store; a [`SnapshotSource`] for the ADS server.
pub struct ViewCache {
    store: Arc<ConfigStore>,
    mesh: RwLock<MeshConfig>,
    networks: RwLock<mesh_model::MeshNetworks>,
    views: Mutex<BTreeMap<String, View>>,
    version: AtomicU64,
    pushes: broadcast::Sender<PushSummary>,
    /// The store snapshot and registry of the last push, to find endpoint-only changes.
    last: Mutex<Option<Arc<LastPush>>>,
    /// Mesh settings or networks changed since the last push (every view needs translating).
    settings_changed: AtomicBool,
}

impl std::fmt::Debug for ViewCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCache")
            .field("views", &self.view_count())
            .finish()
    }
}

impl ViewCache {
    /// Views over `store` with `mesh` settings.
    pub fn new(store: Arc<ConfigStore>, mesh: MeshConfig) -> Arc<ViewCache> {
        Arc::new(ViewCache {
            store,
            mesh: RwLock::new(mesh),
            networks: RwLock::new(mesh_model::MeshNetworks::default()),
            views: Mutex::new(BTreeMap::new()),
            version: AtomicU64::new(0),
            pushes: broadcast::channel(64).0,
            last: Mutex::new(None),
            settings_changed: AtomicBool::new(false),
        })
    }

    /// Push summaries, for metrics and tests.
    pub fn subscribe_pushes(&self) -> broadcast::Receiver<PushSummary> {
        self.pushes.subscribe()
    }

    /// Replaces the mesh's networks (Istio's `meshNetworks`; takes effect at the next push).
    pub fn set_networks(&self, networks: mesh_model::MeshNetworks) {
        *self
            .networks
            .write()
            .unwrap_or_else(PoisonError::into_inner) = networks;
        self.settings_changed.store(true, Ordering::SeqCst);
    }

    /// Replaces the mesh settings (takes effect at the next push).
    pub fn set_mesh(&self, mesh: MeshConfig) {
        *self.mesh.write().unwrap_or_else(PoisonError::into_inner) = mesh;
        self.settings_changed.store(true, Ordering::SeqCst);
    }

    /// How many views exist.
    pub fn view_count(&self) -> usize {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn context(&self) -> PushContext {
        let mesh = self
            .mesh
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let networks = self
            .networks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        PushContext::new(mesh, self.store.snapshot()).with_networks(networks)
    }

    fn build(
        &self,
        ctx: &PushContext,
        proxy: &Proxy,
        previous: Option<&Snapshot>,
        version: u64,
    ) -> Snapshot {
        crate::snapshot::translate_snapshot(ctx, proxy, version.to_string(), previous)
    }

    /// The current snapshot for a proxy (its view's), translating on first use.
    pub fn snapshot_for(&self, proxy: &Proxy) -> Arc<Snapshot> {
        self.watch_proxy(proxy).borrow().clone()
    }

    fn watch_proxy(&self, proxy: &Proxy) -> watch::Receiver<Arc<Snapshot>> {
        let key = view_key(proxy);
        if let Some(v) = self
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return v.tx.subscribe();
        }
        // Translate outside the lock: a slow translation must not block other streams.
        let ctx = self.context();
        let snap = self.build(&ctx, proxy, None, self.version.load(Ordering::SeqCst));
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        let v = views.entry(key).or_insert_with(|| View {
            proxy: proxy.clone(),
            tx: watch::channel(Arc::new(snap)).0,
        });
        v.tx.subscribe()
    }

    /// Re-translates every view once and wakes the streams whose resources changed. Views no
    /// stream watches any more are dropped.
    pub fn push_all(&self) -> PushSummary {
        self.push(false)
    }

    /// Pushes what changed since the last push: when nothing changed but the endpoints of
    /// STATIC services (every other resource of the store, and the mesh settings, are as they
    /// were), only those services' EDS assignments are translated again and every other
    /// resource of each view is kept as it is (istiod's incremental EDS push); otherwise every
    /// view is translated again, as [`ViewCache::push_all`] does.
    pub fn push_changes(&self) -> PushSummary {
        self.push(true)
    }

    /// The hosts whose EDS assignments alone need translating again, if that is all that
    /// changed since the last push.
    fn eds_only(&self, ctx: &PushContext) -> Option<BTreeSet<String>> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let (old_config, old_registry) = (&last.0, &last.1);
        // Every resource but the registry's own kinds must be the same (shared, or equal).
        fn others(
            s: &mesh_model::store::Snapshot,
        ) -> impl Iterator<Item = (&mesh_model::ResourceKey, &Arc<mesh_model::Config>)> {
            s.resources
                .iter()
                .filter(|(k, _)| !matches!(k.kind, Kind::ServiceEntry | Kind::WorkloadEntry))
        }
        let mut before = others(old_config);
        let mut now = others(&ctx.snapshot);
        let same = loop {
            match (before.next(), now.next()) {
                (None, None) => break true,
                (Some((ka, a)), Some((kb, b))) if ka == kb && (Arc::ptr_eq(a, b) || a == b) => {}
                _ => break false,
            }
        };
        if !same {
            return None;
        }
        ctx.registry.endpoint_changes(old_registry)
    }

    fn push(&self, incremental: bool) -> PushSummary {
        let start = Instant::now();
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        // Read before the context, so that a settings change racing this push is not lost.
        let settings_changed = self.settings_changed.swap(false, Ordering::SeqCst);
        let ctx = self.context();
        let eds_hosts = if incremental && !settings_changed {
            self.eds_only(&ctx)
        } else {
            None
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new((ctx.snapshot.clone(), ctx.registry.clone())));
        let targets: Vec<(String, Proxy, Arc<Snapshot>)> = {
            let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
            views.retain(|_, v| v.tx.receiver_count() > 0);
            views
                .iter()
                .map(|(k, v)| (k.clone(), v.proxy.clone(), v.tx.borrow().clone()))
                .collect()
        };
        let mut changed = 0;
        for (key, proxy, prev) in &targets {
            let next = match &eds_hosts {
                Some(hosts) => crate::snapshot::update_assignments(
                    &ctx,
                    proxy,
                    prev,
                    &|s| hosts.contains(&s.hostname),
                    version.to_string(),
                ),
                None => self.build(&ctx, proxy, Some(prev), version),
            };
            let views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(v) = views.get(key) {
                let woke = v.tx.send_if_modified(|cur| {
                    if cur.resources == next.resources {
                        false
                    } else {
                        *cur = Arc::new(next);
                        true
                    }
                });
                if woke {
                    changed += 1;
                }
            }
        }
        let summary = PushSummary {
            version,
            views: targets.len(),
            changed,
            elapsed: start.elapsed(),
            eds_only: eds_hosts.is_some(),
        };
        let _ = self.pushes.send(summary.clone());
        summary
    }

    /// Pushes after config changes, debounced: waits for `d.after` without changes (but no
    /// longer than `d.max` since the first), then pushes once. Returns when `events` closes.
    pub async fn run_debounced(
        self: Arc<Self>,
        mut events: broadcast::Receiver<ConfigEvent>,
        d: Debounce,
    ) {
        loop {
            // Wait for the first change of a batch.
            match events.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
            let first = tokio::time::Instant::now();
            loop {
                let deadline = (first + d.max).min(tokio::time::Instant::now() + d.after);
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                        if tokio::time::Instant::now() >= first + d.max {
                            break;
                        }
                    }
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        self.push_changes();
                        return;
                    }
                    Err(_) => break,
                }
            }
            let me = self.clone();
            // Translation is CPU work: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.push_changes()).await;
        }
    }
}

impl SnapshotSource for ViewCache {
    fn watch(&self, node: &Node) -> watch::Receiver<Arc<Snapshot>> {
        self.watch_proxy(&Proxy::from_node(node))
    }
}
