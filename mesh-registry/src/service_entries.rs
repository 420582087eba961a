//! The registry that ServiceEntries and WorkloadEntries define, fed by a config store.

use std::collections::BTreeSet;
use std::sync::Arc;

use mesh_model::ConfigStore;
use mesh_model::service::ServiceRegistry;
use tokio::sync::broadcast::error::RecvError;

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
        for service in registry.declarations() {
            if seen.insert(ServiceKey::of(service)) {
                sink.upsert(service.as_ref().clone());
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
            let mut revision = None;
            loop {
                let now = self.store.revision();
                if revision != Some(now) {
                    revision = Some(now);
                    let (me, sink) = (self.clone(), sink.clone());
                    let _ = tokio::task::spawn_blocking(move || me.sync(&sink)).await;
                }
                match events.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return Ok(()),
                }
                // Coalesce a burst: everything queued is covered by the next conversion.
                while !matches!(
                    events.try_recv(),
                    Err(tokio::sync::broadcast::error::TryRecvError::Empty
                        | tokio::sync::broadcast::error::TryRecvError::Closed)
                ) {}
            }
        })
    }
}
