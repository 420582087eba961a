//! One secret's `StreamSecrets` stream (SDS, state of the world) to a static cluster.
//!
//! The stream asks for one name, as Envoy's SDS subscriptions do (each `SdsApi` has a stream
//! of its own). A response must hold exactly that secret (Envoy's checks and messages:
//! `Missing SDS resources for NAME in onConfigUpdate()`, `Unexpected SDS secrets length: N`,
//! `Unexpected SDS secret (expecting NAME): OTHER`); it is ACKed with its version, or NACKed
//! with the reason and the version held. A stream that fails is opened again after Envoy's
//! jittered back-off, asking for the version held.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status;
use prost::Message;
use tokio::sync::{mpsc, watch};

use super::{SdsAddress, SecretEntry, Targets};
use crate::xds::{XdsTransport, type_url};
use tonic::transport::Channel;

/// What a stream needs.
pub(super) struct Stream {
    pub(super) entry: Weak<SecretEntry>,
    pub(super) name: String,
    pub(super) cluster: String,
    pub(super) set_node_on_first_message_only: bool,
    pub(super) node: Arc<OnceLock<Node>>,
    pub(super) targets: Arc<OnceLock<Targets>>,
    pub(super) channels: super::Channels,
    /// Changes (errors) when the entry is dropped.
    pub(super) stop: watch::Receiver<()>,
}

/// First reconnect delay (Envoy's xDS back-off: 500 ms, doubling, jittered, at most 30 s).
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Keeps the secret's stream open until its entry is dropped.
pub(super) async fn run(s: Stream) {
    let mut stop = s.stop.clone();
    let mut version = String::new();
    let mut failures = 0u32;
    loop {
        let mut got_any = false;
        let end = tokio::select! {
            r = s.once(&mut version, &mut got_any) => r,
            _ = stop.changed() => return,
        };
        let Some(entry) = s.entry.upgrade() else {
            return;
        };
        entry.stats.update_failure.inc();
        drop(entry);
        if got_any {
            failures = 1;
        } else {
            failures = failures.saturating_add(1);
        }
        tracing::warn!(secret = %s.name, cluster = %s.cluster, "SDS stream closed: {end}");
        let delay = crate::xds::reconnect_delay(failures, BACKOFF_BASE, BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

impl Stream {
    /// One stream, until it fails.
    async fn once(&self, version: &mut String, got_any: &mut bool) -> String {
        let channel = match self.channel().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let mut client = SecretDiscoveryServiceClient::new(channel);
        let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
        let node = self.node.get().cloned().unwrap_or_default();
        let _ = tx.send(DiscoveryRequest {
            version_info: version.clone(),
            node: Some(node.clone()),
            resource_names: vec![self.name.clone()],
            type_url: type_url::SECRET.to_string(),
            ..Default::default()
        });
        let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut responses = match client.stream_secrets(requests).await {
            Ok(r) => r.into_inner(),
            Err(e) => return e.to_string(),
        };
        loop {
            let resp = match responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return "stream ended by the server".into(),
                Err(e) => return e.to_string(),
            };
            *got_any = true;
            let Some(entry) = self.entry.upgrade() else {
                return "unused".into();
            };
            entry.stats.update_attempt.inc();
            let error_detail = match self.apply(&entry, &resp) {
                Ok(()) => {
                    version.clone_from(&resp.version_info);
                    None
                }
                Err(message) => {
                    entry.stats.update_rejected.inc();
                    tracing::warn!(secret = %self.name, "SDS update rejected: {message}");
                    Some(Status {
                        code: 3,
                        message,
                        details: Vec::new(),
                    })
                }
            };
            drop(entry);
            let _ = tx.send(DiscoveryRequest {
                version_info: version.clone(),
                node: (!self.set_node_on_first_message_only).then(|| node.clone()),
                resource_names: vec![self.name.clone()],
                type_url: type_url::SECRET.to_string(),
                response_nonce: resp.nonce,
                error_detail,
                ..Default::default()
            });
        }
    }

    /// The cluster's shared channel (made, and its address resolved, by the first stream).
    async fn channel(&self) -> Result<Channel, String> {
        if let Some(c) = self.lock_channels().get(&self.cluster) {
            return Ok(c.clone());
        }
        let Some(target) = self.targets.get().and_then(|t| t(&self.cluster)) else {
            return Err(format!(
                "SDS cluster '{}' is not a static cluster with an endpoint",
                self.cluster
            ));
        };
        let transport = match &target.transport {
            SdsAddress::Resolved(t) => t.clone(),
            SdsAddress::Dns { host, port } => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(mut addrs) => match addrs.next() {
                        Some(a) => XdsTransport::Tcp(a),
                        None => return Err(format!("cannot resolve {host}")),
                    },
                    Err(e) => return Err(format!("cannot resolve {host}: {e}")),
                }
            }
        };
        let channel =
            crate::xds::lazy_channel(&transport, target.connect_timeout, target.connections);
        Ok(self
            .lock_channels()
            .entry(self.cluster.clone())
            .or_insert(channel)
            .clone())
    }

    fn lock_channels(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, entry: &SecretEntry, resp: &DiscoveryResponse) -> Result<(), String> {
        if resp.type_url != type_url::SECRET {
            return Err(format!(
                "unexpected type {} on an SDS stream",
                resp.type_url
            ));
        }
        let any = match resp.resources.as_slice() {
            [] => {
                return Err(format!(
                    "Missing SDS resources for {} in onConfigUpdate()",
                    self.name
                ));
            }
            [one] => one,
            many => return Err(format!("Unexpected SDS secrets length: {}", many.len())),
        };
        if any.type_url != type_url::SECRET {
            return Err(format!(
                "resource of type {} in an SDS response",
                any.type_url
            ));
        }
        let secret = Secret::decode(any.value.as_slice())
            .map_err(|e| format!("secret does not decode: {e}"))?;
        let (name, value) =
            crate::proto::secret(secret).map_err(|e| format!("{}: {e}", self.name))?;
        if name != self.name {
            return Err(format!(
                "Unexpected SDS secret (expecting {}): {name}",
                self.name
            ));
        }
        entry
            .update(&resp.version_info, any.value.clone().into(), value)
            .map_err(|e| format!("{}: {e}", self.name))
    }
}
