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

    /// Adds or replaces several clusters at once.
    pub fn insert_many(&self, rts: Vec<Arc<ClusterRuntime>>) {
        self.active.rcu(|cur| {
            let mut next = HashMap::clone(cur);
            for rt in &rts {
                next.insert(rt.name().to_string(), rt.clone());
            }
            next
        });
    }

    /// Removes several clusters at once; returns those that were active.
    pub fn remove_many(&self, names: &[String]) -> Vec<Arc<ClusterRuntime>> {
        if names.is_empty() {
            return Vec::new();
        }
        let cur = self.active.load_full();
        let gone: Vec<Arc<ClusterRuntime>> =
            names.iter().filter_map(|n| cur.get(n).cloned()).collect();
        self.active.rcu(|cur| {
            let mut next = HashMap::clone(cur);
            for n in names {
                next.remove(n);
            }
            next
        });
        gone
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
