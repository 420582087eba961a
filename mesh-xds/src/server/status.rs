//! Per-connection sync status: what each stream sent, what was ACKed, and NACKs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

/// The status of one xDS type on one connection, as `istioctl proxy-status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SyncStatus {
    /// The last response was ACKed.
    #[serde(rename = "SYNCED")]
    Synced,
    /// A response is waiting for its ACK.
    #[serde(rename = "STALE")]
    Stale,
    /// Nothing was sent.
    #[serde(rename = "NOT SENT")]
    NotSent,
    /// The last response was NACKed.
    #[serde(rename = "ERROR")]
    Error,
}

/// One type on one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// Version of the last response.
    pub sent_version: String,
    /// Nonce of the last response.
    pub sent_nonce: String,
    /// Version the client last ACKed.
    pub acked_version: String,
    /// Nonce the client last ACKed.
    pub acked_nonce: String,
    /// The NACK detail, while the last response stands rejected.
    pub nack: Option<String>,
    /// Responses sent.
    pub pushes: u64,
    /// NACKs received.
    pub nacks: u64,
}

impl TypeStatus {
    /// The istioctl-style status.
    pub fn status(&self) -> SyncStatus {
        if self.nack.is_some() {
            SyncStatus::Error
        } else if self.sent_nonce.is_empty() {
            SyncStatus::NotSent
        } else if self.acked_nonce == self.sent_nonce {
            SyncStatus::Synced
        } else {
            SyncStatus::Stale
        }
    }
}

/// One connected proxy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnectionInfo {
    /// Stream id (unique per server).
    pub stream_id: u64,
    /// `node.id`.
    pub node_id: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// When the stream connected.
    #[serde(skip)]
    pub connected_at: SystemTime,
    /// Per type URL.
    pub types: BTreeMap<String, TypeStatus>,
    /// The node as first sent (metadata included).
    #[serde(skip)]
    pub node: Option<envoy_types::pb::envoy::config::core::v3::Node>,
}

/// Something that happened on a stream, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushEvent {
    /// A response was sent.
    Sent {
        /// Type URL.
        type_url: String,
        /// Encoded size of the resources.
        bytes: usize,
        /// Snapshot version sent.
        version: String,
    },
    /// A response was ACKed.
    Acked {
        /// Type URL.
        type_url: String,
        /// Node id.
        node_id: String,
        /// Version ACKed.
        version: String,
    },
    /// A response was NACKed.
    Nacked {
        /// Type URL.
        type_url: String,
        /// Node id.
        node_id: String,
        /// The error the client reported.
        detail: String,
    },
    /// A stream connected.
    Connected,
    /// A stream went away.
    Disconnected,
}

/// Every connected stream.
#[derive(Debug)]
pub struct Connections {
    inner: Mutex<BTreeMap<u64, ConnectionInfo>>,
    next_id: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<PushEvent>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            inner: Mutex::new(BTreeMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            events: broadcast::channel(1024).0,
        }
    }
}

impl Connections {
    /// A snapshot of every connection's status.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// How many streams are connected.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no stream is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events for metrics (lossy if the subscriber lags).
    pub fn subscribe(&self) -> broadcast::Receiver<PushEvent> {
        self.events.subscribe()
    }

    pub(crate) fn register(
        self: &Arc<Self>,
        node: &envoy_types::pb::envoy::config::core::v3::Node,
        protocol: &'static str,
    ) -> u64 {
        let node_id = node.id.clone();
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                ConnectionInfo {
                    stream_id: id,
                    node_id,
                    protocol,
                    connected_at: SystemTime::now(),
                    types: BTreeMap::new(),
                    node: Some(node.clone()),
                },
            );
        let _ = self.events.send(PushEvent::Connected);
        id
    }

    pub(crate) fn remove(&self, id: u64) {
        if self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .is_some()
        {
            let _ = self.events.send(PushEvent::Disconnected);
        }
    }

    pub(crate) fn update(&self, id: u64, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(c) = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
        {
            f(c.types.entry(type_url.to_string()).or_default());
        }
    }

    pub(crate) fn emit(&self, e: PushEvent) {
        let _ = self.events.send(e);
    }
}
