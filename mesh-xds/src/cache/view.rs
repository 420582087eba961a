//! [`ViewCache`]: translation per proxy *view*, shared, and debounced pushes.
//!
//! Proxies that would get identical configuration (same type, namespace, labels, interception
//! mode, locality, network, proxyless or not) share one view: it is translated once, encoded
//! once, and every stream of that view reads the same `Arc`'d snapshot. A config change marks
//! the store dirty; [`ViewCache::run_debounced`] waits for a quiet period (istiod's defaults:
//! 100 ms, at most 10 s), re-translates every view once, and wakes only the streams whose
//! resources changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_model::store::ConfigEvent;
use mesh_model::{ConfigStore, Kind, MeshConfig};
use tokio::sync::{broadcast, watch};

use crate::cache::SnapshotSource;
use crate::proxy::Proxy;
use crate::registry::ServiceRegistry;
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
    /// Whether every view had only EDS assignments translated again (a change that touched
    /// nothing but the endpoints of STATIC services; istiod's incremental EDS push).
    pub eds_only: bool,
}

struct View {
    proxy: Proxy,
    tx: watch::Sender<Arc<Snapshot>>,
    /// What the view's current snapshot was translated from.
    from: Arc<Source>,
}

/// What a translation was made from: the store snapshot, its registry and the generation of
/// the mesh settings. A later push compares it with its own to find endpoint-only changes.
#[derive(Debug)]
struct Source {
    config: Arc<mesh_model::store::Snapshot>,
    registry: Arc<ServiceRegistry>,
    settings: u64,
}

impl Source {
    /// The hosts whose EDS assignments alone changed between `self` and `now`, if that is all
    /// that changed: every other resource of the store the same (shared, or equal), the same
    /// mesh settings, and a registry that differs only in endpoints of STATIC services.
    fn eds_changes(&self, now: &Source) -> Option<BTreeSet<String>> {
        fn others(
            s: &mesh_model::store::Snapshot,
        ) -> impl Iterator<Item = (&mesh_model::ResourceKey, &Arc<mesh_model::Config>)> {
            s.resources
                .iter()
                .filter(|(k, _)| !matches!(k.kind, Kind::ServiceEntry | Kind::WorkloadEntry))
        }
        if self.settings != now.settings {
            return None;
        }
        let (mut before, mut after) = (others(&self.config), others(&now.config));
        let same = loop {
            match (before.next(), after.next()) {
                (None, None) => break true,
                (Some((ka, a)), Some((kb, b))) if ka == kb && (Arc::ptr_eq(a, b) || a == b) => {}
                _ => break false,
            }
        };
        if !same {
            return None;
        }
        now.registry.endpoint_changes(&self.registry)
    }
}

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
    credentials: RwLock<Arc<crate::credentials::Credentials>>,
    jwks: RwLock<BTreeMap<String, String>>,
    views: Mutex<BTreeMap<String, View>>,
    version: AtomicU64,
    pushes: broadcast::Sender<PushSummary>,
    /// Bumped whenever the mesh settings or networks change (every view then needs
    /// translating again).
    settings: AtomicU64,
    /// The context of the latest store revision and settings, shared by the translations
    /// made from them.
    current: Mutex<Option<(Arc<PushContext>, Arc<Source>)>>,
    /// Services from registries outside the store (see [`ViewCache::set_services`]).
    services: Mutex<Option<watch::Receiver<Arc<ServiceRegistry>>>>,
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
            credentials: RwLock::default(),
            jwks: RwLock::default(),
            views: Mutex::new(BTreeMap::new()),
            version: AtomicU64::new(0),
            pushes: broadcast::channel(64).0,
            settings: AtomicU64::new(0),
            current: Mutex::new(None),
            services: Mutex::new(None),
        })
    }

    /// Takes the services from `registry` (each value a complete registry, as
    /// `mesh-registry`'s aggregate publishes them, ServiceEntries included) instead of the
    /// store's ServiceEntries and WorkloadEntries. A new value is seen by the next push, and
    /// wakes [`ViewCache::run_debounced`] as a config change does; a change to endpoints only
    /// is pushed as EDS alone ([`ViewCache::push_changes`]).
    pub fn set_services(&self, registry: watch::Receiver<Arc<ServiceRegistry>>) {
        *self.services.lock().unwrap_or_else(PoisonError::into_inner) = Some(registry);
    }

    fn external_services(&self) -> Option<Arc<ServiceRegistry>> {
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|rx| rx.borrow().clone())
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
        self.settings.fetch_add(1, Ordering::SeqCst);
    }

    /// Replaces the gateway credentials (`credentialName`s; takes effect at the next push).
    /// Nothing happens when they are the same as before; returns whether they changed.
    pub fn set_credentials(&self, credentials: crate::credentials::Credentials) -> bool {
        let mut current = self
            .credentials
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if **current == credentials {
            return false;
        }
        *current = Arc::new(credentials);
        self.settings.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Replaces the JWKS documents of RequestAuthentications' `jwksUri`s (takes effect at the
    /// next push); see [`PushContext::with_jwks`]. Nothing happens when they are the same;
    /// returns whether they changed.
    pub fn set_jwks(&self, jwks: BTreeMap<String, String>) -> bool {
        let mut current = self.jwks.write().unwrap_or_else(PoisonError::into_inner);
        if *current == jwks {
            return false;
        }
        *current = jwks;
        self.settings.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// The `jwksUri`s the current configuration needs fetched (see [`ViewCache::set_jwks`]).
    pub fn jwks_uris(&self) -> std::collections::BTreeSet<String> {
        self.source().0.jwks_uris()
    }

    /// Replaces the mesh settings (takes effect at the next push).
    pub fn set_mesh(&self, mesh: MeshConfig) {
        *self.mesh.write().unwrap_or_else(PoisonError::into_inner) = mesh;
        self.settings.fetch_add(1, Ordering::SeqCst);
    }

    /// How many views exist.
    pub fn view_count(&self) -> usize {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The context to translate with, and what it is made from. Translations of the same
    /// store revision under the same settings share one context (and one registry), so views
    /// first translated between two pushes do not each keep their own copy.
    fn source(&self) -> (Arc<PushContext>, Arc<Source>) {
        // The generation first: a settings change racing this read is seen by the next push.
        let settings = self.settings.load(Ordering::SeqCst);
        let config = self.store.snapshot();
        let services = self.external_services();
        if let Some((ctx, source)) = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            && source.config.revision == config.revision
            && source.settings == settings
            && services
                .as_ref()
                .is_none_or(|s| Arc::ptr_eq(s, &source.registry))
        {
            return (ctx.clone(), source.clone());
        }
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
        let credentials = self
            .credentials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let jwks = self
            .jwks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let ctx = match services {
            Some(services) => PushContext::with_services(mesh, config, services),
            None => PushContext::new(mesh, config),
        };
        let ctx = Arc::new(
            ctx.with_networks(networks)
                .with_credentials(credentials)
                .with_jwks(jwks),
        );
        let source = Arc::new(Source {
            config: ctx.snapshot.clone(),
            registry: ctx.registry.clone(),
            settings,
        });
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((ctx.clone(), source.clone()));
        (ctx, source)
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
        let (ctx, from) = self.source();
        let snap = self.build(&ctx, proxy, None, self.version.load(Ordering::SeqCst));
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        let v = views.entry(key).or_insert_with(|| View {
            proxy: proxy.clone(),
            tx: watch::channel(Arc::new(snap)).0,
            from,
        });
        v.tx.subscribe()
    }

    /// Re-translates every view once and wakes the streams whose resources changed. Views no
    /// stream watches any more are dropped.
    pub fn push_all(&self) -> PushSummary {
        self.push(false)
    }

    /// Pushes what changed: a view whose translation is older than the store only by the
    /// endpoints of STATIC services (every other resource of the store, and the mesh settings,
    /// are as they were) gets only those services' EDS assignments translated again and keeps
    /// every other resource as it is (istiod's incremental EDS push); any other view is
    /// translated again, as [`ViewCache::push_all`] does.
    pub fn push_changes(&self) -> PushSummary {
        self.push(true)
    }

    fn push(&self, incremental: bool) -> PushSummary {
        let start = Instant::now();
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let (ctx, now) = self.source();
        let targets: Vec<(String, Proxy, Arc<Snapshot>, Arc<Source>)> = {
            let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
            views.retain(|_, v| v.tx.receiver_count() > 0);
            views
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.proxy.clone(),
                        v.tx.borrow().clone(),
                        v.from.clone(),
                    )
                })
                .collect()
        };
        // Views translated from the same source share one comparison.
        let mut decided: Vec<(Arc<Source>, Option<BTreeSet<String>>)> = Vec::new();
        let (mut changed, mut eds_only) = (0, 0);
        for (key, proxy, prev, from) in &targets {
            let hosts = if incremental {
                let i = match decided.iter().position(|(s, _)| Arc::ptr_eq(s, from)) {
                    Some(i) => i,
                    None => {
                        decided.push((from.clone(), from.eds_changes(&now)));
                        decided.len() - 1
                    }
                };
                decided[i].1.as_ref()
            } else {
                None
            };
            let next = match hosts {
                Some(hosts) => {
                    eds_only += 1;
                    crate::snapshot::update_assignments(
                        &ctx,
                        proxy,
                        prev,
                        &|s| hosts.contains(&s.hostname),
                        version.to_string(),
                    )
                }
                None => self.build(&ctx, proxy, Some(prev), version),
            };
            let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(v) = views.get_mut(key) {
                v.from = now.clone();
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
            eds_only: !targets.is_empty() && eds_only == targets.len(),
        };
        let _ = self.pushes.send(summary.clone());
        summary
    }

    /// Pushes after config changes, debounced: waits for `d.after` without changes (but no
    /// longer than `d.max` since the first), then pushes once. Returns when `events` closes.
    ///
    /// New services from [`ViewCache::set_services`] (set before this is called) count as
    /// changes too.
    pub async fn run_debounced(
        self: Arc<Self>,
        mut events: broadcast::Receiver<ConfigEvent>,
        d: Debounce,
    ) {
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        loop {
            // Wait for the first change of a batch.
            if !next_change(&mut events, &mut services).await {
                return;
            }
            let first = tokio::time::Instant::now();
            loop {
                let deadline = (first + d.max).min(tokio::time::Instant::now() + d.after);
                match tokio::time::timeout_at(deadline, next_change(&mut events, &mut services))
                    .await
                {
                    Ok(true) => {
                        if tokio::time::Instant::now() >= first + d.max {
                            break;
                        }
                    }
                    Ok(false) => {
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

/// Waits for a config event or a new registry; false when the store's events are closed. A
/// registry whose sender is gone is not waited on again.
async fn next_change(
    events: &mut broadcast::Receiver<ConfigEvent>,
    services: &mut Option<watch::Receiver<Arc<ServiceRegistry>>>,
) -> bool {
    let registry = async {
        match services.as_mut() {
            Some(rx) => rx.changed().await.is_ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        e = events.recv() => !matches!(e, Err(broadcast::error::RecvError::Closed)),
        alive = registry => {
            if !alive {
                *services = None;
            }
            true
        }
    }
}

impl SnapshotSource for ViewCache {
    fn watch(&self, node: &Node) -> watch::Receiver<Arc<Snapshot>> {
        self.watch_proxy(&Proxy::from_node(node))
    }
}
