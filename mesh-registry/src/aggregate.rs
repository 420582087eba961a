//! [`Aggregate`]: registries merged into one [`ServiceRegistry`], as istiod's aggregate
//! controller merges its registries.
//!
//! Merge rules (reference: registries §5.1–5.2):
//! - Registries are consulted in the order they were added; for a host declared by several,
//!   the first declaration wins wherever one is chosen ([`ServiceRegistry::visible`] prefers
//!   a declaration in the proxy's own namespace, then the first). Add Kubernetes registries
//!   before ServiceEntries so that a Kubernetes Service wins over a ServiceEntry of the same
//!   host, as in istiod.
//! - Services of one host and namespace from several Kubernetes registries (clusters) are one
//!   service: the first cluster's ports and settings, the addresses of every cluster, and the
//!   endpoints of every cluster (endpoints are kept per registry, istiod's endpoint shards, so
//!   one cluster's update never touches another's).
//! - Endpoints written before their service are held until it exists.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mesh_model::service::{Endpoint, Service, ServiceRegistry};
use thiserror::Error;
use tokio::sync::{Notify, watch};

use crate::registry::{Provider, Registry, RegistryId};
use crate::sink::{RegistrySink, ServiceKey, Shard};

/// Errors of the aggregate's own operations.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AggregateError {
    /// Two registries with one ID (a second kubeconfig for a cluster ID already in use, say).
    #[error("registry {0} is already part of the aggregate; give each registry its own cluster ID")]
    Duplicate(RegistryId),
}

/// One registry's state, for debug output and readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryStatus {
    /// Which registry.
    pub id: RegistryId,
    /// Whether its first full read is done.
    pub synced: bool,
    /// Whether its adapter is still running (false once it returned).
    pub running: bool,
    /// Services it holds.
    pub services: usize,
    /// Endpoints it holds, over all its services.
    pub endpoints: usize,
    /// Writes that changed something.
    pub updates: u64,
    /// Failures reported.
    pub errors: u64,
    /// The last failure, until the source answers again.
    pub last_error: Option<String>,
}

type Other<'a> = (&'a Arc<Service>, Option<&'a Arc<[Endpoint]>>);
type Built = BTreeMap<(usize, ServiceKey), (Arc<Service>, Arc<[Endpoint]>, Arc<Service>)>;

pub(crate) struct Inner {
    pub(crate) shards: Mutex<Vec<Shard>>,
    notify: Notify,
    tx: watch::Sender<Arc<ServiceRegistry>>,
    /// Whether every registry has synced, as of the last merge.
    ready: watch::Sender<bool>,
    /// Shard generations of the published registry, and the services built for it.
    published: Mutex<(Vec<u64>, Built)>,
    /// The endpoints of services that have none (one allocation, shared).
    no_endpoints: Arc<[Endpoint]>,
}

impl Inner {
    pub(crate) fn dirty(&self) {
        self.notify.notify_one();
    }

    /// Merges the shards again if any moved, and publishes the result if it differs.
    fn publish(&self) {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let generations: Vec<u64> = shards.iter().map(|s| s.generation).collect();
        let ready = shards.iter().all(|s| s.synced);
        // Sent on every merge (not only on a change), so that a waiter that subscribed while
        // the value was stale is woken to look at the shards again.
        self.ready.send_replace(ready);
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if published.0 == generations {
            return;
        }
        let (registry, built) = merge(&shards, &published.1, &self.no_endpoints);
        drop(shards);
        *published = (generations, built);
        let registry = Arc::new(registry);
        self.tx.send_if_modified(|cur| {
            if **cur == *registry {
                false
            } else {
                *cur = registry;
                true
            }
        });
        // Released only now: a concurrent `publish` (from `Aggregate::snapshot`) that finds
        // these generations already merged must also find the result sent.
        drop(published);
    }
}

/// The merged registry, reusing the services built last time whose service and endpoints
/// are unchanged (so an endpoint change rebuilds one service, not all of them).
///
/// `empty` stands for the endpoints of every service that has none, so that the reuse check
/// (pointer equality) holds for those too.
fn merge(shards: &[Shard], before: &Built, empty: &Arc<[Endpoint]>) -> (ServiceRegistry, Built) {
    let mut registry = ServiceRegistry::new();
    let mut built = Built::new();
    // Kubernetes services already merged into the first cluster's declaration.
    let mut kube_done: std::collections::BTreeSet<&ServiceKey> = Default::default();
    for (i, shard) in shards.iter().enumerate().filter(|(_, s)| !s.removed) {
        let kube = shard.id.provider == Provider::Kubernetes;
        for (key, svc) in &shard.services {
            let svc = &svc.value;
            let eps: Arc<[Endpoint]> = shard
                .endpoints
                .get(key)
                .map_or_else(|| empty.clone(), |e| e.value.clone());
            if kube {
                if !kube_done.insert(key) {
                    continue;
                }
                // The same service in later Kubernetes clusters.
                let others: Vec<Other<'_>> = shards[i + 1..]
                    .iter()
                    .filter(|s| s.id.provider == Provider::Kubernetes && !s.removed)
                    .filter_map(|s| {
                        let o = s.services.get(key)?;
                        Some((&o.value, s.endpoints.get(key).map(|e| &e.value)))
                    })
                    .collect();
                if !others.is_empty() {
                    let mut merged = Service::clone(svc);
                    merged.endpoints = eps.to_vec();
                    for (o, oeps) in others {
                        for a in &o.addresses {
                            if !merged.addresses.contains(a) {
                                merged.addresses.push(a.clone());
                            }
                        }
                        merged
                            .endpoints
                            .extend(oeps.into_iter().flat_map(|e| e.iter().cloned()));
                    }
                    merged.endpoints.sort();
                    merged.endpoints.dedup();
                    registry.insert(merged);
                    continue;
                }
            }
            let k = (i, key.clone());
            let service = match before.get(&k) {
                Some((s, e, done)) if Arc::ptr_eq(s, svc) && Arc::ptr_eq(e, &eps) => done.clone(),
                _ => {
                    let mut full = Service::clone(svc);
                    full.endpoints = eps.to_vec();
                    Arc::new(full)
                }
            };
            registry.insert(service.clone());
            built.insert(k, (svc.clone(), eps, service));
        }
    }
    (registry, built)
}

/// Registries merged into one [`ServiceRegistry`], published on a `watch` channel whenever it
/// changes (writes are coalesced: a burst of them publishes once). Feed it to
/// `mesh_xds::cache::ViewCache::set_services`; a change to endpoints only is then pushed to
/// proxies as EDS alone.
///
/// Create it inside a Tokio runtime: it runs its adapters and its publisher as tasks, which
/// stop when it is dropped.
pub struct Aggregate {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<(RegistryId, tokio::task::JoinHandle<()>)>>,
    publisher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Aggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregate")
            .field("registries", &self.status())
            .finish()
    }
}

impl Aggregate {
    /// An aggregate of no registries (an empty registry until one is added).
    pub fn new() -> Aggregate {
        let inner = Arc::new(Inner {
            shards: Mutex::new(Vec::new()),
            notify: Notify::new(),
            tx: watch::channel(Arc::new(ServiceRegistry::new())).0,
            ready: watch::channel(true).0,
            published: Mutex::new((Vec::new(), Built::new())),
            no_endpoints: Arc::from(Vec::new()),
        });
        let shared = inner.clone();
        // Aborted when the aggregate is dropped.
        let publisher = tokio::spawn(async move {
            loop {
                shared.notify.notified().await;
                let inner = shared.clone();
                // Merging is CPU work proportional to the mesh: off the async workers.
                let _ = tokio::task::spawn_blocking(move || inner.publish()).await;
            }
        });
        Aggregate {
            inner,
            tasks: Mutex::new(Vec::new()),
            publisher,
        }
    }

    /// Adds a registry and starts its adapter. When the adapter returns, its data stays (as
    /// its last good state) and its status says it stopped; an error is logged.
    pub fn add(&self, registry: Box<dyn Registry>) -> Result<(), AggregateError> {
        let id = registry.id();
        let sink = self.sink(id.clone())?;
        let handle = tokio::spawn(async move {
            let result = registry.run(sink.clone()).await;
            if let Err(e) = &result {
                tracing::error!("registry stopped: {e}");
                sink.report_error(e);
            }
            let mut shards = sink
                .inner
                .shards
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = shards.get_mut(sink.index) {
                s.running = false;
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, handle));
        Ok(())
    }

    /// A sink for a registry that is driven from outside (no [`Registry::run`]): whatever
    /// holds it writes services and endpoints as an adapter would.
    pub fn sink(&self, id: RegistryId) -> Result<RegistrySink, AggregateError> {
        let mut shards = self
            .inner
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shards.iter().any(|s| s.id == id && !s.removed) {
            return Err(AggregateError::Duplicate(id));
        }
        shards.push(Shard::new(id));
        let index = shards.len() - 1;
        drop(shards);
        self.inner.dirty();
        Ok(RegistrySink {
            inner: self.inner.clone(),
            index,
        })
    }

    /// Stops a registry and removes everything it held (a remote cluster taken out of the
    /// mesh). Returns whether it was there. Writes through its sinks are ignored from now on;
    /// a registry with the same ID may be added again.
    pub fn remove(&self, id: &RegistryId) -> bool {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|(t, h)| {
            if t == id {
                h.abort();
                false
            } else {
                true
            }
        });
        drop(tasks);
        let mut shards = self
            .inner
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(shard) = shards.iter_mut().find(|s| &s.id == id && !s.removed) else {
            return false;
        };
        // The slot stays (sinks index into the list) but holds nothing, counts as synced, and
        // takes no more writes.
        shard.services.clear();
        shard.endpoints.clear();
        shard.generation += 1;
        shard.synced = true;
        shard.running = false;
        shard.removed = true;
        drop(shards);
        self.inner.dirty();
        true
    }

    /// The merged registries, from now on: the current value, then every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServiceRegistry>> {
        self.inner.tx.subscribe()
    }

    /// The merged registry last published (writes not merged yet are not in it; see
    /// [`Aggregate::snapshot`]). Costs a pointer copy: for debug handlers and other readers on
    /// async threads.
    pub fn current(&self) -> Arc<ServiceRegistry> {
        self.inner.tx.borrow().clone()
    }

    /// The merged registry as of every write made so far, merging now on the caller's thread
    /// if the publisher has not yet (work proportional to the mesh).
    pub fn snapshot(&self) -> Arc<ServiceRegistry> {
        self.inner.publish();
        self.inner.tx.borrow().clone()
    }

    /// Every registry's state, in merge order.
    pub fn status(&self) -> Vec<RegistryStatus> {
        self.inner
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| !s.removed)
            .map(|s| RegistryStatus {
                id: s.id.clone(),
                synced: s.synced,
                running: s.running,
                services: s.services.len(),
                endpoints: s.endpoints.values().map(|e| e.value.len()).sum(),
                updates: s.updates,
                errors: s.errors,
                last_error: s.last_error.clone(),
            })
            .collect()
    }

    /// Whether every registry has finished its first full read.
    pub fn synced(&self) -> bool {
        self.inner
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .all(|s| s.synced)
    }

    /// Waits until every registry has synced, or `timeout` passes (istiod serves after a
    /// timeout even when a remote cluster never syncs); returns whether they all did.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut ready = self.inner.ready.subscribe();
        let wait = async {
            // Sync changes move a shard's generation, so the publisher merges and updates
            // `ready`; the shards themselves are the truth.
            while !self.synced() {
                if ready.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.synced()
    }
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate::new()
    }
}

impl Drop for Aggregate {
    fn drop(&mut self) {
        self.publisher.abort();
        for (_, h) in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            h.abort();
        }
    }
}
