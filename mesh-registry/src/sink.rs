//! [`RegistrySink`]: where an adapter writes, and the per-registry state behind it.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use mesh_model::service::{Endpoint, Service};

use crate::aggregate::Inner;
use crate::registry::RegistryId;

/// A service's key within one registry: its host name and namespace (istiod's).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Fully qualified host name.
    pub hostname: String,
    /// Namespace.
    pub namespace: String,
}

impl ServiceKey {
    /// A key.
    pub fn new(hostname: impl Into<String>, namespace: impl Into<String>) -> ServiceKey {
        ServiceKey {
            hostname: hostname.into(),
            namespace: namespace.into(),
        }
    }

    /// The key of a service.
    pub fn of(service: &Service) -> ServiceKey {
        ServiceKey::new(service.hostname.clone(), service.namespace.clone())
    }
}

/// A resync, from [`RegistrySink::begin_resync`] to [`RegistrySink::end_resync`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Epoch(pub(crate) u64);

#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub(crate) value: T,
    /// The epoch it was last written or re-asserted in.
    epoch: u64,
}

/// What one registry has told the aggregate.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) id: RegistryId,
    /// Services, without endpoints.
    pub(crate) services: BTreeMap<ServiceKey, Entry<Arc<Service>>>,
    /// Endpoints, per service (kept while the service is unknown, published once it is).
    pub(crate) endpoints: BTreeMap<ServiceKey, Entry<Arc<[Endpoint]>>>,
    /// The epoch writes are stamped with; a resync bumps it.
    epoch: u64,
    /// The open resync, if any.
    resync: Option<u64>,
    pub(crate) synced: bool,
    pub(crate) last_error: Option<String>,
    pub(crate) errors: u64,
    /// Writes that changed something.
    pub(crate) updates: u64,
    /// Bumped by every change; the aggregate rebuilds when it moves.
    pub(crate) generation: u64,
    pub(crate) running: bool,
    /// Taken out of the aggregate ([`crate::Aggregate::remove`]): merged no more, and its
    /// sinks' writes are ignored.
    pub(crate) removed: bool,
}

impl Shard {
    pub(crate) fn new(id: RegistryId) -> Shard {
        Shard {
            id,
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            epoch: 0,
            resync: None,
            synced: false,
            last_error: None,
            errors: 0,
            updates: 0,
            generation: 0,
            running: true,
            removed: false,
        }
    }

    fn changed(&mut self) {
        self.updates += 1;
        self.generation += 1;
    }

    fn put<T: PartialEq>(
        map: &mut BTreeMap<ServiceKey, Entry<T>>,
        key: ServiceKey,
        value: T,
        epoch: u64,
    ) -> bool {
        match map.get_mut(&key) {
            Some(e) if e.value == value => {
                e.epoch = epoch;
                false
            }
            Some(e) => {
                e.value = value;
                e.epoch = epoch;
                true
            }
            None => {
                map.insert(key, Entry { value, epoch });
                true
            }
        }
    }
}

/// Where an adapter writes what it sees: services and their endpoints, each replaced whole per
/// [`ServiceKey`] (writing the same value again changes nothing), with resync brackets that
/// remove whatever a full read no longer saw.
///
/// Writes are cheap and never block on consumers: the aggregate coalesces them and publishes
/// merged registries on its own (see [`crate::Aggregate::subscribe`]). Cloning a sink gives
/// another handle to the same registry.
#[derive(Clone)]
pub struct RegistrySink {
    pub(crate) inner: Arc<Inner>,
    pub(crate) index: usize,
}

impl std::fmt::Debug for RegistrySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.with(|s| s.id.clone());
        f.debug_struct("RegistrySink").field("id", &id).finish()
    }
}

impl RegistrySink {
    fn with<R>(&self, f: impl FnOnce(&mut Shard) -> R) -> R {
        let mut shards = self
            .inner
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let shard = &mut shards[self.index];
        if shard.removed {
            // A removed registry's sink writes into a scratch shard that nothing reads.
            let mut scratch = Shard::new(shard.id.clone());
            drop(shards);
            return f(&mut scratch);
        }
        let before = shard.generation;
        let r = f(shard);
        let moved = shard.generation != before;
        drop(shards);
        if moved {
            self.inner.dirty();
        }
        r
    }

    /// The registry this sink writes for.
    pub fn id(&self) -> RegistryId {
        self.with(|s| s.id.clone())
    }

    /// Starts a full read of the source: every key written (or re-asserted by writing it
    /// again) until [`RegistrySink::end_resync`] stays; every other key is then removed.
    /// Starting a resync while one is open abandons the open one.
    pub fn begin_resync(&self) -> Epoch {
        self.with(|s| {
            s.epoch += 1;
            s.resync = Some(s.epoch);
            Epoch(s.epoch)
        })
    }

    /// Ends a resync: removes the services and endpoints it did not see, and marks the
    /// registry synced. An epoch that is not the open resync's (an abandoned one) does
    /// nothing.
    pub fn end_resync(&self, epoch: Epoch) {
        self.with(|s| {
            if s.resync != Some(epoch.0) {
                return;
            }
            s.resync = None;
            let (services, endpoints) = (s.services.len(), s.endpoints.len());
            s.services.retain(|_, e| e.epoch >= epoch.0);
            s.endpoints.retain(|_, e| e.epoch >= epoch.0);
            if s.services.len() != services || s.endpoints.len() != endpoints {
                s.changed();
            }
            if !s.synced {
                s.synced = true;
                s.generation += 1;
            }
        })
    }

    /// Adds or replaces a service, without its endpoints (`service.endpoints` is ignored; see
    /// [`RegistrySink::set_endpoints`] and [`RegistrySink::upsert`]).
    pub fn upsert_service(&self, mut service: Service) {
        service.endpoints.clear();
        let key = ServiceKey::of(&service);
        let service = Arc::new(service);
        self.with(|s| {
            let epoch = s.epoch;
            if Shard::put(&mut s.services, key, service, epoch) {
                s.changed();
            }
        })
    }

    /// Adds or replaces a service and its endpoints (those in `service.endpoints`), as a
    /// ServiceEntry defines both.
    pub fn upsert(&self, mut service: Service) {
        let endpoints = std::mem::take(&mut service.endpoints);
        let key = ServiceKey::of(&service);
        self.upsert_service(service);
        self.set_endpoints(key, endpoints);
    }

    /// Removes a service and its endpoints.
    pub fn remove_service(&self, key: &ServiceKey) {
        self.with(|s| {
            let a = s.services.remove(key).is_some();
            let b = s.endpoints.remove(key).is_some();
            if a || b {
                s.changed();
            }
        })
    }

    /// Replaces every endpoint of a service (empty: it has none). Endpoints may come before
    /// their service; they are published once it exists.
    pub fn set_endpoints(&self, key: ServiceKey, mut endpoints: Vec<Endpoint>) {
        endpoints.sort();
        endpoints.dedup();
        let endpoints: Arc<[Endpoint]> = endpoints.into();
        self.with(|s| {
            let epoch = s.epoch;
            if Shard::put(&mut s.endpoints, key, endpoints, epoch) {
                s.changed();
            }
        })
    }

    /// Marks the registry synced (or not): the aggregate is ready when every registry is.
    /// [`RegistrySink::end_resync`] marks it synced too.
    pub fn set_synced(&self, synced: bool) {
        self.with(|s| {
            if s.synced != synced {
                s.synced = synced;
                s.generation += 1;
            }
        })
    }

    /// Reports a failure to read the source (kept as the registry's last error, counted, and
    /// logged); never fatal. The registry's data stays as it was.
    pub fn report_error(&self, error: impl std::fmt::Display) {
        let message = error.to_string();
        self.with(|s| {
            tracing::warn!(registry = %s.id, "{message}");
            s.errors += 1;
            s.last_error = Some(message);
        })
    }

    /// Clears the last error, once the source answers again.
    pub fn clear_error(&self) {
        self.with(|s| s.last_error = None)
    }
}
