//! Snapshot caches, usable without the gRPC server: [`SnapshotCache`] (snapshots set by the
//! caller, keyed by a node hash, go-control-plane's shape) and [`ViewCache`] (snapshots
//! translated from a config store per proxy view, pushed again on every change, with
//! [`Debounce`]). Both hand snapshots out through [`SnapshotSource`]: a `tokio::sync::watch`
//! per view, which the ADS server in `server` reads, and which any other transport can read
//! too.
//!
//! Enabled by the `cache` feature (part of `server`).

mod snapshot_cache;
mod view;

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;

use crate::snapshot::Snapshot;

pub use snapshot_cache::SnapshotCache;
pub use view::{Debounce, PushSummary, ViewCache, view_key};

/// Where streams get their snapshots: one `watch` per node view.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Called once per stream with the node of its first request.
    fn watch(&self, node: &Node) -> watch::Receiver<Arc<Snapshot>>;
}

impl<T: SnapshotSource> SnapshotSource for Arc<T> {
    fn watch(&self, node: &Node) -> watch::Receiver<Arc<Snapshot>> {
        (**self).watch(node)
    }
}
