//! The set of active clusters, shared by every worker.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::runtime::ClusterRuntime;

/// Active clusters by name. Reads are lock-free (one atomic load and a hash lookup per
/// request); writes come from the config manager only.
#[derive(Debug, Default)]
pub struct ClusterManager {
    active: ArcSwap<HashMap<String, Arc<ClusterRuntime>>>,
}

impl ClusterManager {
    /// No clusters.
    pub fn new() -> ClusterManager {
        ClusterManager::default()
    }

    /// The active cluster called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<ClusterRuntime>> {
        self.active.load().get(name).cloned()
    }

    /// Every active cluster.
    pub fn all(&self) -> Arc<HashMap<String, Arc<ClusterRuntime>>> {
        self.active.load_full()
    }

    /// Adds or replaces a cluster.
    pub fn insert(&self, rt: Arc<ClusterRuntime>) {
        self.active.rcu(|cur| {
            let mut next = HashMap::clone(cur);
            next.insert(rt.name().to_string(), rt.clone());
            next
        });
    }

    /// Removes a cluster; returns it.
    pub fn remove(&self, name: &str) -> Option<Arc<ClusterRuntime>> {
        let old = self.get(name)?;
        self.active.rcu(|cur| {
            let mut next = HashMap::clone(cur);
            next.remove(name);
            next
        });
        Some(old)
    }
}
