//! Incremental (delta) ADS streams.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use crate::resource::{self, PUSH_ORDER};
use crate::server::SnapshotSource;
use crate::server::sotw::changed;
use crate::server::status::{Connections, PushEvent};
use crate::snapshot::Snapshot;

#[derive(Debug, Default)]
struct TypeState {
    requested: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client holds: name → version.
    client: BTreeMap<String, String>,
    /// What the client held before the last response, restored if it is NACKed.
    before_last: Option<BTreeMap<String, String>>,
    nonce: String,
    /// The desired state the client rejected; not re-sent unchanged.
    nacked: Option<BTreeMap<String, String>>,
}

pub(crate) struct DeltaStream<S> {
    source: Arc<S>,
    connections: Arc<Connections>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    types: BTreeMap<String, TypeState>,
    snapshots: Option<watch::Receiver<Arc<Snapshot>>>,
    id: Option<u64>,
    node_id: String,
    counter: u64,
}

impl<S: SnapshotSource> DeltaStream<S> {
    pub(crate) fn new(
        source: Arc<S>,
        connections: Arc<Connections>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Self {
        DeltaStream {
            source,
            connections,
            tx,
            types: BTreeMap::new(),
            snapshots: None,
            id: None,
            node_id: String::new(),
            counter: 0,
        }
    }

    pub(crate) async fn run(mut self, mut requests: Streaming<DeltaDiscoveryRequest>) {
        loop {
            let keep_going = tokio::select! {
                req = requests.message() => match req {
                    Ok(Some(r)) => self.on_request(r).await,
                    Ok(None) | Err(_) => false,
                },
                changed = changed(&mut self.snapshots) => match changed {
                    true => self.push_changes().await,
                    false => false,
                },
            };
            if !keep_going {
                break;
            }
        }
        if let Some(id) = self.id {
            self.connections.remove(id);
        }
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> bool {
        if self.snapshots.is_none() {
            let Some(node) = &req.node else {
                let _ = self
                    .tx
                    .send(Err(Status::invalid_argument(
                        "the first request must carry node",
                    )))
                    .await;
                return false;
            };
            self.node_id = node.id.clone();
            self.snapshots = Some(self.source.watch(node));
            self.id = Some(self.connections.register(node, "delta"));
        }
        let type_url = req.type_url.clone();
        if type_url.is_empty() {
            return true;
        }
        let id = self.id.unwrap_or_default();
        let t = self.types.entry(type_url.clone()).or_default();
        let first = !t.requested;
        t.requested = true;
        if first {
            // Reconnect: the client tells us what it already holds.
            t.client = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if req.resource_names_subscribe.is_empty() && resource::is_wildcard_type(&type_url) {
                t.wildcard = true;
            }
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                t.wildcard = true;
            } else {
                t.names.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                t.wildcard = false;
            } else {
                t.names.remove(n);
                t.client.remove(n);
            }
        }
        if !req.response_nonce.is_empty() {
            if req.response_nonce != t.nonce {
                // Stale: a newer response is in flight.
                return true;
            }
            match &req.error_detail {
                Some(err) => {
                    if let Some(prev) = t.before_last.take() {
                        // The client kept its old config.
                        t.nacked = Some(std::mem::replace(&mut t.client, prev));
                    }
                    let detail = err.message.clone();
                    self.connections.update(id, &type_url, |s| {
                        s.nack = Some(detail.clone());
                        s.nacks += 1;
                    });
                    self.connections.emit(PushEvent::Nacked {
                        type_url,
                        node_id: self.node_id.clone(),
                        detail,
                    });
                    return true;
                }
                None => {
                    t.before_last = None;
                    let nonce = req.response_nonce.clone();
                    let mut version = String::new();
                    self.connections.update(id, &type_url, |s| {
                        s.acked_version = s.sent_version.clone();
                        s.acked_nonce = nonce;
                        s.nack = None;
                        version = s.sent_version.clone();
                    });
                    self.connections.emit(PushEvent::Acked {
                        type_url: type_url.clone(),
                        node_id: self.node_id.clone(),
                        version,
                    });
                }
            }
        }
        self.send(&type_url, first).await
    }

    async fn push_changes(&mut self) -> bool {
        for type_url in PUSH_ORDER {
            if self.types.get(type_url).is_some_and(|t| t.requested)
                && !self.send(type_url, false).await
            {
                return false;
            }
        }
        true
    }

    /// Sends what changed for a type: resources whose version differs from what the client
    /// holds, and removals for what it holds that no longer exists.
    async fn send(&mut self, type_url: &str, first: bool) -> bool {
        let Some(rx) = &self.snapshots else {
            return true;
        };
        let snapshot = rx.borrow().clone();
        let Some(t) = self.types.get_mut(type_url) else {
            return true;
        };
        let all = snapshot.of_type(type_url);
        let desired: BTreeMap<&String, &Arc<crate::resource::EncodedResource>> = match all {
            None => BTreeMap::new(),
            Some(m) if t.wildcard => m.iter().collect(),
            Some(m) => m.iter().filter(|(n, _)| t.names.contains(*n)).collect(),
        };
        let desired_versions: BTreeMap<String, String> = desired
            .iter()
            .map(|(n, r)| ((*n).clone(), r.version.clone()))
            .collect();
        if t.nacked.as_ref() == Some(&desired_versions) {
            return true;
        }
        let updated: Vec<Resource> = desired
            .iter()
            .filter(|(n, r)| t.client.get(**n) != Some(&r.version))
            .map(|(n, r)| Resource {
                name: (*n).clone(),
                version: r.version.clone(),
                resource: Some(r.any.clone()),
                ..Default::default()
            })
            .collect();
        let removed: Vec<String> = t
            .client
            .keys()
            .filter(|n| {
                !desired.contains_key(n)
                    && (t.wildcard
                        || t.names.contains(*n)
                        || all.is_some_and(|m| !m.contains_key(*n)))
            })
            .cloned()
            .collect();
        if updated.is_empty() && removed.is_empty() && !first {
            return true;
        }
        self.counter += 1;
        let nonce = format!("{}-{}", self.id.unwrap_or_default(), self.counter);
        t.before_last = Some(t.client.clone());
        for r in &updated {
            t.client.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            t.client.remove(n);
        }
        t.nacked = None;
        t.nonce = nonce.clone();
        let bytes = updated
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .map(|a| a.value.len())
            .sum();
        let version = snapshot.version.clone();
        let resp = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: updated,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..Default::default()
        };
        let id = self.id.unwrap_or_default();
        self.connections.update(id, type_url, |s| {
            s.sent_version = version.clone();
            s.sent_nonce = nonce;
            s.pushes += 1;
        });
        self.connections.emit(PushEvent::Sent {
            type_url: type_url.to_string(),
            bytes,
            version,
        });
        self.tx.send(Ok(resp)).await.is_ok()
    }
}
