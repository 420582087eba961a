//! State-of-the-world ADS streams.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::encoding::response::Response;
use crate::resource;
use crate::server::SnapshotSource;
use crate::server::status::{Connections, PushEvent};
use crate::server::stream::{Peer, Protocol, StreamCore, drive};
use crate::snapshot::TypedResources;

/// What the stream knows about one type.
#[derive(Debug, Default)]
struct TypeState {
    /// The client asked for this type at least once.
    requested: bool,
    /// Wildcard subscription (CDS/LDS with no names, or `*`).
    wildcard: bool,
    /// Subscribed names (non-wildcard).
    names: BTreeSet<String>,
    /// Nonce of the last response.
    nonce: String,
    /// Hash of the (name, version) list last sent.
    sent_hash: Option<u64>,
    /// Hash of the content the client rejected; never re-sent unchanged.
    nacked_hash: Option<u64>,
    /// Answer the next request even if it looks like an ACK (a dependency changed, so the
    /// client is warming and waits for this type).
    always_respond: bool,
    /// Bumped whenever the subscription (names or wildcard) changes.
    subscription: u64,
    /// The snapshot map and subscription the last sent (or found unchanged) content came from:
    /// when both are the same, nothing needs to be looked at again.
    sent_from: Option<(Option<Arc<TypedResources>>, u64)>,
}

pub(crate) struct SotwStream<S> {
    core: StreamCore<S, Response>,
    types: BTreeMap<String, TypeState>,
}

impl<S: SnapshotSource> SotwStream<S> {
    pub(crate) fn new(
        source: Arc<S>,
        connections: Arc<Connections>,
        tx: mpsc::Sender<Result<Response, Status>>,
        peer: Option<Peer>,
    ) -> Self {
        SotwStream {
            core: StreamCore::new(source, connections, tx, peer),
            types: BTreeMap::new(),
        }
    }

    pub(crate) async fn run(self, requests: Streaming<DiscoveryRequest>) {
        drive(self, requests).await;
    }

    async fn handle_request(&mut self, req: DiscoveryRequest) -> bool {
        if !self.core.attach(req.node.as_ref(), "sotw").await {
            return false;
        }
        let type_url = req.type_url.clone();
        if type_url.is_empty() {
            return true;
        }
        let id = self.core.id;
        let t = self.types.entry(type_url.clone()).or_default();
        if let Some(err) = &req.error_detail {
            // NACK: remember what was rejected, keep the client on its last good config, and
            // never answer with the same rejected content.
            if req.response_nonce == t.nonce {
                t.nacked_hash = t.sent_hash;
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
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let wants_wildcard = names.contains("*")
            || (names.is_empty() && resource::is_wildcard_type(&type_url) && !t.requested);
        let initial = req.response_nonce.is_empty() || !t.requested;
        if !initial && req.response_nonce != t.nonce {
            // A stale nonce: a response crossed this request; the next one will be answered.
            return true;
        }
        if !initial {
            let version = req.version_info.clone();
            let nonce = req.response_nonce.clone();
            self.core.connections.update(id, &type_url, |s| {
                s.acked_version = version.clone();
                s.acked_nonce = nonce;
                s.nack = None;
            });
            self.core.connections.emit(PushEvent::Acked {
                type_url: type_url.clone(),
                node_id: self.core.node_id.clone(),
                version,
            });
            t.nacked_hash = None;
        }
        let added = names.iter().any(|n| !t.names.contains(n) && n != "*");
        let names_changed = names != t.names;
        t.requested = true;
        let was_wildcard = t.wildcard;
        if wants_wildcard || (t.wildcard && (names.is_empty() || names.contains("*"))) {
            t.wildcard = true;
            t.names.clear();
        } else {
            t.wildcard = false;
            t.names = names;
        }
        if names_changed || was_wildcard != t.wildcard {
            t.subscription += 1;
        }
        let respond = initial || t.always_respond || added || (names_changed && t.wildcard);
        if respond {
            let force = initial || t.always_respond;
            t.always_respond = false;
            return self.send(&type_url, force).await;
        }
        true
    }

    /// Sends the current resources of a type if they differ from what was last sent (or if
    /// `force`), but never content the client already rejected.
    async fn send(&mut self, type_url: &str, force: bool) -> bool {
        let Some(snapshot) = self.core.snapshot() else {
            return true;
        };
        let Some(t) = self.types.get_mut(type_url) else {
            return true;
        };
        let map = snapshot.shared_type(type_url);
        let from = (map.cloned(), t.subscription);
        if !force
            && t.sent_from
                .as_ref()
                .is_some_and(|s| crate::snapshot::same_source(s, &from))
        {
            // The very map and subscription the last response came from (an endpoint-only
            // push leaves the other types' maps shared): nothing to hash or send.
            return true;
        }
        let all = map.map(|m| m.as_ref());
        let chosen: Vec<&Arc<crate::resource::EncodedResource>> = match (t.wildcard, all) {
            (_, None) => Vec::new(),
            (true, Some(m)) => m.values().collect(),
            (false, Some(m)) => t.names.iter().filter_map(|n| m.get(n)).collect(),
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for r in &chosen {
            (&r.name, &r.version).hash(&mut h);
        }
        let hash = h.finish();
        if t.nacked_hash == Some(hash) {
            return true;
        }
        if !force && t.sent_hash == Some(hash) {
            t.sent_from = Some(from);
            return true;
        }
        t.sent_from = Some(from);
        let nonce = self.core.next_nonce();
        let version = snapshot.version.clone();
        let bytes = chosen.iter().map(|r| r.value().len()).sum();
        let resp = crate::encoding::response::sotw_response(&version, type_url, &nonce, &chosen);
        let changed = t.sent_hash != Some(hash);
        t.sent_hash = Some(hash);
        t.nonce = nonce.clone();
        if changed {
            // Make-before-break: a new cluster set waits for endpoints, a new listener set
            // for routes; answer the dependent type's next request even if it looks like an ACK.
            let dependent = resource::TypeUrl::from_url(type_url).and_then(|t| t.dependent());
            if let Some(d) = dependent {
                self.types
                    .entry(d.as_str().to_string())
                    .or_default()
                    .always_respond = true;
            }
        }
        self.core.send(type_url, version, nonce, bytes, resp).await
    }
}

impl<S: SnapshotSource> Protocol<S, Response> for SotwStream<S> {
    type Request = DiscoveryRequest;

    fn core(&mut self) -> &mut StreamCore<S, Response> {
        &mut self.core
    }

    fn on_request(&mut self, req: DiscoveryRequest) -> impl Future<Output = bool> + Send {
        self.handle_request(req)
    }

    fn requested(&self, type_url: &str) -> bool {
        self.types.get(type_url).is_some_and(|t| t.requested)
    }

    fn push(&mut self, type_url: &str) -> impl Future<Output = bool> + Send {
        self.send(type_url, false)
    }
}
