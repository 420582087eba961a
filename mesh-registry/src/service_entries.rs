//! The registry that ServiceEntries and WorkloadEntries define, fed by a config store.

use std::collections::BTreeSet;
use std::sync::Arc;

use mesh_model::ConfigStore;
use mesh_model::Kind;
use mesh_model::service::ServiceRegistry;
use mesh_model::store::ConfigEvent;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::registry::{Provider, Registry, RegistryId, RunFuture};
use crate::sink::{RegistrySink, ServiceKey};

/// ServiceEntries and WorkloadEntries as a registry (istiod's `External` provider): every
/// change of the store is converted again ([`ServiceRegistry::from_snapshot`]) and written in
/// one resync, so that services whose entries went away are removed and unchanged ones cost
/// nothing downstream.
///
/// A host declared by two entries of one namespace is one service of this registry: the older
/// entry's (istiod's conflict order). Across namespaces each declaration is its own service.
#[derive(Debug, Clone)]
pub struct ServiceEntries {
    store: Arc<ConfigStore>,
    cluster: String,
}

impl ServiceEntries {
    /// The ServiceEntries of `store`, as the registry `External/Kubernetes` (istiod's default
    /// cluster ID).
    pub fn new(store: Arc<ConfigStore>) -> ServiceEntries {
        ServiceEntries {
            store,
            cluster: "Kubernetes".into(),
        }
    }

    /// With another cluster ID in its [`RegistryId`].
    #[must_use]
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> ServiceEntries {
        self.cluster = cluster.into();
        self
    }

    /// Writes the store's current services into `sink`, as one resync.
    pub fn sync(&self, sink: &RegistrySink) {
        let registry = ServiceRegistry::from_snapshot(&self.store.snapshot());
        let epoch = sink.begin_resync();
        let mut seen = BTreeSet::new();
        for service in registry.into_declarations() {
            if seen.insert(ServiceKey::of(&service)) {
                // The registry is ours alone: the service moves out without a copy.
                sink.upsert(Arc::unwrap_or_clone(service));
            }
        }
        sink.end_resync(epoch);
    }
}

impl Registry for ServiceEntries {
    fn id(&self) -> RegistryId {
        RegistryId::new(Provider::External, self.cluster.clone())
    }

    fn run(self: Box<Self>, sink: RegistrySink) -> RunFuture {
        Box::pin(async move {
            let mut events = self.store.subscribe();
            // Only ServiceEntries and WorkloadEntries make services; a lagged receiver may
            // have missed one, so it converts again too.
            let relevant = |e: &Result<ConfigEvent, RecvError>| match e {
                Ok(e) => matches!(e.key.kind, Kind::ServiceEntry | Kind::WorkloadEntry),
                Err(_) => true,
            };
            let mut convert = true;
            loop {
                if convert {
                    let (me, sink) = (self.clone(), sink.clone());
                    let _ = tokio::task::spawn_blocking(move || me.sync(&sink)).await;
                }
                let first = events.recv().await;
                if matches!(first, Err(RecvError::Closed)) {
                    return Ok(());
                }
                convert = relevant(&first);
                // Coalesce a burst: everything queued is covered by the next conversion.
                loop {
                    match events.try_recv() {
                        Ok(e) => convert |= relevant(&Ok(e)),
                        Err(TryRecvError::Lagged(_)) => convert = true,
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
            }
        })
    }
}
