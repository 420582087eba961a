//! Incremental (delta) ADS streams.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::encoding::response::Response;
use crate::resource;
use crate::server::SnapshotSource;
use crate::server::status::{Connections, PushEvent};
use crate::server::stream::{Peer, Protocol, StreamCore, drive};
use crate::snapshot::TypedResources;

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
    /// Bumped whenever the subscription or what the client holds changes other than by a
    /// response of ours (a reconnect, (un)subscribing, a NACK).
    state: u64,
    /// The snapshot map and `state` the client was last brought up to date from: when both
    /// are the same, nothing needs to be compared again.
    synced_from: Option<(Option<Arc<TypedResources>>, u64)>,
}

pub(crate) struct DeltaStream<S> {
    core: StreamCore<S, Response>,
    types: BTreeMap<String, TypeState>,
}

impl<S: SnapshotSource> DeltaStream<S> {
    pub(crate) fn new(
        source: Arc<S>,
        connections: Arc<Connections>,
        tx: mpsc::Sender<Result<Response, Status>>,
        peer: Option<Peer>,
    ) -> Self {
        DeltaStream {
            core: StreamCore::new(source, connections, tx, peer),
            types: BTreeMap::new(),
        }
    }

    pub(crate) async fn run(self, requests: Streaming<DeltaDiscoveryRequest>) {
        drive(self, requests).await;
    }

    async fn handle_request(&mut self, req: DeltaDiscoveryRequest) -> bool {
        if !self.core.attach(req.node.as_ref(), "delta").await {
            return false;
        }
        let type_url = req.type_url.clone();
        if type_url.is_empty() {
            return true;
        }
        let id = self.core.id;
        let t = self.types.entry(type_url.clone()).or_default();
        let first = !t.requested;
        t.requested = true;
        if first
            || !req.resource_names_subscribe.is_empty()
            || !req.resource_names_unsubscribe.is_empty()
        {
            t.state += 1;
        }
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
                        t.state += 1;
                    }
                    let detail = err.message.clone();
                    self.core.connections.update(id, &type_url, |s| {
                        s.nack = Some(detail.clone());
                        s.nacks += 1;
                    });
                    self.core.connections.emit(PushEvent::Nacked {
                        type_url,
                        node_id: self.core.node_id.clone(),
                        detail,
                    });
                    return true;
                }
                None => {
                    t.before_last = None;
                    let nonce = req.response_nonce.clone();
                    let mut version = String::new();
                    self.core.connections.update(id, &type_url, |s| {
                        s.acked_version = s.sent_version.clone();
                        s.acked_nonce = nonce;
                        s.nack = None;
                        version = s.sent_version.clone();
                    });
                    self.core.connections.emit(PushEvent::Acked {
                        type_url: type_url.clone(),
                        node_id: self.core.node_id.clone(),
                        version,
                    });
                }
            }
        }
        self.send(&type_url, first).await
    }

    /// Sends what changed for a type: resources whose version differs from what the client
    /// holds, and removals for what it holds that no longer exists.
    async fn send(&mut self, type_url: &str, first: bool) -> bool {
        let Some(snapshot) = self.core.snapshot() else {
            return true;
        };
        let Some(t) = self.types.get_mut(type_url) else {
            return true;
        };
        let map = snapshot.shared_type(type_url);
        let from = (map.cloned(), t.state);
        if !first
            && t.synced_from
                .as_ref()
                .is_some_and(|s| crate::snapshot::same_source(s, &from))
        {
            // The client is up to date with this very map (an endpoint-only push leaves the
            // other types' maps shared): nothing to compare or send.
            return true;
        }
        t.synced_from = Some(from);
        let all = map.map(|m| m.as_ref());
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
        let updated: Vec<&Arc<crate::resource::EncodedResource>> = desired
            .iter()
            .filter(|(n, r)| t.client.get(**n) != Some(&r.version))
            .map(|(_, r)| *r)
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
        let nonce = self.core.next_nonce();
        t.before_last = Some(t.client.clone());
        for r in &updated {
            t.client.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            t.client.remove(n);
        }
        t.nacked = None;
        t.nonce = nonce.clone();
        let bytes = updated.iter().map(|r| r.value().len()).sum();
        let version = snapshot.version.clone();
        let resp = crate::encoding::response::delta_response(
            &version, type_url, &nonce, &updated, &removed,
        );
        self.core.send(type_url, version, nonce, bytes, resp).await
    }
}

impl<S: SnapshotSource> Protocol<S, Response> for DeltaStream<S> {
    type Request = DeltaDiscoveryRequest;

    fn core(&mut self) -> &mut StreamCore<S, Response> {
        &mut self.core
    }

    fn on_request(&mut self, req: DeltaDiscoveryRequest) -> impl Future<Output = bool> + Send {
        self.handle_request(req)
    }

    fn requested(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|t| t.requested)
    }

    fn push(&mut self, type_url: &str) -> impl Future<Output = bool> + Send {
        self.send(type_url, false)
    }
}
