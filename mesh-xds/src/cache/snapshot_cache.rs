//! [`SnapshotCache`]: snapshots keyed by a node hash, each behind a `watch`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;

use crate::cache::SnapshotSource;
use crate::snapshot::Snapshot;

type NodeHash = dyn Fn(&Node) -> String + Send + Sync;

/// Snapshots by view key. Streams whose nodes hash to the same key share one snapshot (and
/// its encoded resources).
pub struct SnapshotCache {
    views: Mutex<BTreeMap<String, watch::Sender<Arc<Snapshot>>>>,
    node_hash: Box<NodeHash>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("views", &self.keys())
            .finish()
    }
}

impl SnapshotCache {
    /// A cache keying nodes with `node_hash` (go-control-plane's `NodeHash`).
    pub fn new(node_hash: impl Fn(&Node) -> String + Send + Sync + 'static) -> Self {
        SnapshotCache {
            views: Mutex::new(BTreeMap::new()),
            node_hash: Box::new(node_hash),
        }
    }

    /// A cache keying nodes by `node.id`.
    pub fn by_node_id() -> Self {
        SnapshotCache::new(|n: &Node| n.id.clone())
    }

    /// Sets the snapshot of a view; streams watching it are woken only if it changed.
    /// Returns whether it changed.
    pub fn set_snapshot(&self, key: &str, snapshot: Snapshot) -> bool {
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        match views.get(key) {
            Some(tx) => tx.send_if_modified(|cur| {
                if cur.resources == snapshot.resources {
                    false
                } else {
                    *cur = Arc::new(snapshot);
                    true
                }
            }),
            None => {
                views.insert(key.to_string(), watch::channel(Arc::new(snapshot)).0);
                true
            }
        }
    }

    /// The current snapshot of a view.
    pub fn snapshot(&self, key: &str) -> Option<Arc<Snapshot>> {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|tx| tx.borrow().clone())
    }

    /// Every view key.
    pub fn keys(&self) -> Vec<String> {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The key of a node.
    pub fn key_of(&self, node: &Node) -> String {
        (self.node_hash)(node)
    }

    /// Drops views nobody watches any more; returns how many were dropped.
    pub fn prune(&self) -> usize {
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        let before = views.len();
        views.retain(|_, tx| tx.receiver_count() > 0);
        before - views.len()
    }
}

impl SnapshotSource for SnapshotCache {
    fn watch(&self, node: &Node) -> watch::Receiver<Arc<Snapshot>> {
        let key = self.key_of(node);
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        views
            .entry(key)
            .or_insert_with(|| watch::channel(Arc::new(Snapshot::default())).0)
            .subscribe()
    }
}
