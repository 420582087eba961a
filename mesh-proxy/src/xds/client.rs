//! The ADS stream: requests out, responses in, per-type versions and nonces.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Handler, RawResource, Rejected, Update, type_url};
use crate::config::bootstrap::AdsApi;

/// Where the control plane is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdsTransport {
    /// Plaintext HTTP/2 over TCP.
    Tcp(SocketAddr),
    /// Plaintext HTTP/2 over a Unix socket (an agent's local xDS proxy, as Istio's
    /// bootstrap names with a `pipe` address).
    Unix(PathBuf),
}

/// How the client talks.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The node sent to the control plane.
    pub node: Node,
    /// SotW or delta.
    pub api: AdsApi,
    /// Send the node on the first request of a stream only.
    pub set_node_on_first_message_only: bool,
    /// Subscribe to clusters (wildcard).
    pub cds: bool,
    /// Subscribe to listeners (wildcard).
    pub lds: bool,
    /// Where to connect.
    pub transport: XdsTransport,
    /// Connect timeout (the xDS cluster's `connect_timeout`).
    pub connect_timeout: Duration,
    /// First reconnect delay (Envoy: 500 ms, jittered, doubling).
    pub backoff_base: Duration,
    /// Longest reconnect delay (Envoy: 30 s).
    pub backoff_max: Duration,
    /// Counts connections made to the control plane (the xDS cluster's `upstream_cx_total`).
    pub connections: Option<crate::stats::Counter>,
}

/// The ADS client. [`XdsClient::run`] keeps a stream open (reconnecting with back-off, keeping
/// every applied resource) until the task is dropped.
pub struct XdsClient {
    config: ClientConfig,
    handler: Arc<dyn Handler>,
}

/// What the stream loop needs to know about one type.
#[derive(Debug, Default)]
struct TypeState {
    /// Requested on this stream.
    requested: bool,
    /// Names subscribed (by-name types), as last sent.
    names: BTreeSet<String>,
    /// The last accepted version (SotW `version_info`).
    version: String,
    /// The last response's nonce.
    nonce: String,
    /// Delta: names held with their versions (for `initial_resource_versions`).
    held: BTreeMap<String, String>,
}

/// Why a stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// Could not connect or open the stream.
    Open(String),
    /// The stream broke after it was open (at least one response was received).
    Broken(String),
}

impl XdsClient {
    /// A client for `config`, applying what it receives to `handler`.
    pub fn new(config: ClientConfig, handler: Arc<dyn Handler>) -> XdsClient {
        XdsClient { config, handler }
    }

    fn channel(&self) -> Result<Channel, String> {
        Ok(lazy_channel(
            &self.config.transport,
            self.config.connect_timeout,
            self.config.connections.clone(),
        ))
    }

    /// Runs forever: connects, streams, and reconnects with jittered exponential back-off.
    /// Applied resources stay applied while disconnected.
    pub async fn run(self) {
        let channel = match self.channel() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("xDS client cannot be built: {e}");
                return;
            }
        };
        let mut states: HashMap<&'static str, TypeState> = HashMap::new();
        let mut failures = 0u32;
        loop {
            let end = match self.config.api {
                AdsApi::Sotw => self.sotw(channel.clone(), &mut states).await,
                AdsApi::Delta => self.delta(channel.clone(), &mut states).await,
            };
            self.handler.connected(false);
            match end {
                StreamEnd::Broken(e) => {
                    tracing::warn!("xDS stream closed: {e}");
                    failures = 1;
                }
                StreamEnd::Open(e) => {
                    tracing::warn!("xDS stream could not be opened: {e}");
                    failures = failures.saturating_add(1);
                }
            }
            let delay =
                reconnect_delay(failures, self.config.backoff_base, self.config.backoff_max);
            tokio::time::sleep(delay).await;
        }
    }

    /// The node for a request: on every request, or only the stream's first.
    fn node(&self, first: &mut bool) -> Option<Node> {
        let send = *first || !self.config.set_node_on_first_message_only;
        *first = false;
        send.then(|| self.config.node.clone())
    }

    /// Types to request when a stream opens, in Envoy's order (CDS first; LDS once the first
    /// CDS response is in — see `after_response`).
    fn initial_types(&self, states: &HashMap<&'static str, TypeState>) -> Vec<&'static str> {
        let mut types = Vec::new();
        if self.config.cds {
            types.push(type_url::CLUSTER);
        }
        // A reconnect re-requests what the previous stream had; secrets of the bootstrap's
        // static listeners and clusters are asked for from the start.
        for t in [
            type_url::ENDPOINT,
            type_url::LISTENER,
            type_url::ROUTE,
            type_url::SECRET,
        ] {
            let had = states.get(t).is_some_and(|s| s.requested);
            let wanted = (t == type_url::LISTENER && self.config.lds && !self.config.cds)
                || (t == type_url::SECRET && !self.handler.subscriptions(t).is_empty());
            if had || wanted {
                types.push(t);
            }
        }
        types
    }

    // === State of the world ===

    async fn sotw(
        &self,
        channel: Channel,
        states: &mut HashMap<&'static str, TypeState>,
    ) -> StreamEnd {
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
        let mut first = true;
        let initial = self.initial_types(states);
        for st in states.values_mut() {
            st.requested = false;
            st.nonce.clear();
        }
        for t in initial {
            let st = states.entry(t).or_default();
            let names = if type_url::is_wildcard(t) {
                BTreeSet::new()
            } else {
                self.handler.subscriptions(t)
            };
            st.requested = true;
            st.names = names.clone();
            let _ = tx.send(DiscoveryRequest {
                version_info: st.version.clone(),
                node: self.node(&mut first),
                resource_names: names.into_iter().collect(),
                type_url: t.to_string(),
                ..Default::default()
            });
        }
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut responses = match client.stream_aggregated_resources(stream).await {
            Ok(r) => r.into_inner(),
            Err(e) => return StreamEnd::Open(e.to_string()),
        };
        self.handler.connected(true);
        let mut got_any = false;
        loop {
            let resp: DiscoveryResponse = match responses.next().await {
                Some(Ok(r)) => r,
                Some(Err(e)) => return self.end(got_any, e.to_string()),
                None => return self.end(got_any, "stream ended by the server".into()),
            };
            got_any = true;
            let Some(t) = known_type(&resp.type_url) else {
                tracing::debug!("ignoring a response of unrequested type {}", resp.type_url);
                continue;
            };
            let mut resources = Vec::with_capacity(resp.resources.len());
            let mut rejected = Vec::new();
            for any in resp.resources {
                if any.type_url != t {
                    rejected.push(Rejected {
                        name: String::new(),
                        reason: format!("resource of type {} in a {t} response", any.type_url),
                    });
                    continue;
                }
                match resource_name(t, &any.value) {
                    Ok(name) => resources.push(RawResource {
                        name,
                        version: resp.version_info.clone(),
                        value: any.value.into(),
                    }),
                    Err(e) => rejected.push(Rejected {
                        name: String::new(),
                        reason: format!("resource does not decode: {e}"),
                    }),
                }
            }
            rejected.extend(
                self.handler
                    .apply(t, &resp.version_info, Update::State(resources)),
            );
            // Dependent subscriptions first (Envoy asks for EDS before it ACKs CDS).
            self.sotw_dependents(t, states, &tx, &mut first);
            let st = states.entry(t).or_default();
            st.nonce = resp.nonce.clone();
            let error_detail = if rejected.is_empty() {
                st.version = resp.version_info.clone();
                None
            } else {
                Some(nack_status_for(t, &rejected))
            };
            let _ = tx.send(DiscoveryRequest {
                version_info: st.version.clone(),
                node: self.node(&mut first),
                resource_names: st.names.iter().cloned().collect(),
                type_url: t.to_string(),
                response_nonce: resp.nonce,
                error_detail,
                ..Default::default()
            });
            if t == type_url::CLUSTER && self.config.lds {
                let lds = states.entry(type_url::LISTENER).or_default();
                if !lds.requested {
                    lds.requested = true;
                    let _ = tx.send(DiscoveryRequest {
                        version_info: lds.version.clone(),
                        node: self.node(&mut first),
                        type_url: type_url::LISTENER.to_string(),
                        ..Default::default()
                    });
                }
            }
        }
    }

    /// After a CDS or LDS response, (re)subscribes EDS or RDS names when they changed.
    fn sotw_dependents(
        &self,
        t: &str,
        states: &mut HashMap<&'static str, TypeState>,
        tx: &mpsc::UnboundedSender<DiscoveryRequest>,
        first: &mut bool,
    ) {
        for dep in dependents(t) {
            let names = self.handler.subscriptions(dep);
            let st = states.entry(dep).or_default();
            if (st.requested && st.names == names) || (!st.requested && names.is_empty()) {
                continue;
            }
            st.requested = true;
            st.names = names.clone();
            let _ = tx.send(DiscoveryRequest {
                version_info: st.version.clone(),
                node: self.node(first),
                resource_names: names.into_iter().collect(),
                type_url: dep.to_string(),
                response_nonce: st.nonce.clone(),
                ..Default::default()
            });
        }
    }

    // === Delta ===

    async fn delta(
        &self,
        channel: Channel,
        states: &mut HashMap<&'static str, TypeState>,
    ) -> StreamEnd {
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
        let mut first = true;
        let initial = self.initial_types(states);
        for st in states.values_mut() {
            st.requested = false;
        }
        for t in initial {
            let names = if type_url::is_wildcard(t) {
                BTreeSet::new()
            } else {
                self.handler.subscriptions(t)
            };
            self.delta_open_type(t, names, states, &tx, &mut first);
        }
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let mut responses = match client.delta_aggregated_resources(stream).await {
            Ok(r) => r.into_inner(),
            Err(e) => return StreamEnd::Open(e.to_string()),
        };
        self.handler.connected(true);
        let mut got_any = false;
        loop {
            let resp: DeltaDiscoveryResponse = match responses.next().await {
                Some(Ok(r)) => r,
                Some(Err(e)) => return self.end(got_any, e.to_string()),
                None => return self.end(got_any, "stream ended by the server".into()),
            };
            got_any = true;
            let Some(t) = known_type(&resp.type_url) else {
                continue;
            };
            let mut updated = Vec::with_capacity(resp.resources.len());
            let mut rejected = Vec::new();
            for r in resp.resources {
                let Some(any) = r.resource else {
                    rejected.push(Rejected {
                        name: r.name,
                        reason: "resource has no body".into(),
                    });
                    continue;
                };
                if any.type_url != t {
                    rejected.push(Rejected {
                        name: r.name,
                        reason: format!("resource of type {} in a {t} response", any.type_url),
                    });
                    continue;
                }
                updated.push(RawResource {
                    name: r.name,
                    version: r.version,
                    value: any.value.into(),
                });
            }
            let held: Vec<(String, String)> = updated
                .iter()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect();
            let removed = resp.removed_resources.clone();
            rejected.extend(self.handler.apply(
                t,
                &resp.system_version_info,
                Update::Delta {
                    updated,
                    removed: resp.removed_resources,
                },
            ));
            {
                let st = states.entry(t).or_default();
                let bad: BTreeSet<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
                for (name, version) in held {
                    if !bad.contains(name.as_str()) {
                        st.held.insert(name, version);
                    }
                }
                for name in removed {
                    st.held.remove(&name);
                }
            }
            self.delta_dependents(t, states, &tx, &mut first);
            let _ = tx.send(DeltaDiscoveryRequest {
                type_url: t.to_string(),
                response_nonce: resp.nonce,
                error_detail: (!rejected.is_empty()).then(|| nack_status_for(t, &rejected)),
                ..Default::default()
            });
            if t == type_url::CLUSTER && self.config.lds {
                let requested = states.get(type_url::LISTENER).is_some_and(|s| s.requested);
                if !requested {
                    self.delta_open_type(
                        type_url::LISTENER,
                        BTreeSet::new(),
                        states,
                        &tx,
                        &mut first,
                    );
                }
            }
        }
    }

    /// The first request of a type on a delta stream (with what we hold, on reconnects).
    fn delta_open_type(
        &self,
        t: &'static str,
        names: BTreeSet<String>,
        states: &mut HashMap<&'static str, TypeState>,
        tx: &mpsc::UnboundedSender<DeltaDiscoveryRequest>,
        first: &mut bool,
    ) {
        let st = states.entry(t).or_default();
        st.requested = true;
        st.names = names.clone();
        let _ = tx.send(DeltaDiscoveryRequest {
            node: self.node(first),
            type_url: t.to_string(),
            resource_names_subscribe: names.into_iter().collect(),
            initial_resource_versions: st.held.clone().into_iter().collect(),
            ..Default::default()
        });
    }

    fn delta_dependents(
        &self,
        t: &str,
        states: &mut HashMap<&'static str, TypeState>,
        tx: &mpsc::UnboundedSender<DeltaDiscoveryRequest>,
        first: &mut bool,
    ) {
        for dep in dependents(t) {
            let names = self.handler.subscriptions(dep);
            let requested = states.get(dep).is_some_and(|s| s.requested);
            if !requested {
                if !names.is_empty() {
                    self.delta_open_type(dep, names, states, tx, first);
                }
                continue;
            }
            let st = states.entry(dep).or_default();
            let subscribe: Vec<String> = names.difference(&st.names).cloned().collect();
            let unsubscribe: Vec<String> = st.names.difference(&names).cloned().collect();
            if subscribe.is_empty() && unsubscribe.is_empty() {
                continue;
            }
            for n in &unsubscribe {
                st.held.remove(n);
            }
            st.names = names;
            let _ = tx.send(DeltaDiscoveryRequest {
                node: self.node(first),
                type_url: dep.to_string(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            });
        }
    }

    fn end(&self, got_any: bool, why: String) -> StreamEnd {
        if got_any {
            StreamEnd::Broken(why)
        } else {
            StreamEnd::Open(why)
        }
    }
}

/// A plaintext HTTP/2 channel to `transport` that connects when first used (and again after
/// a failure), counting connections in `connections`.
pub(crate) fn lazy_channel(
    transport: &XdsTransport,
    connect_timeout: Duration,
    connections: Option<crate::stats::Counter>,
) -> Channel {
    let endpoint = Endpoint::from_static("http://xds")
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let count = move || {
        if let Some(c) = &connections {
            c.inc();
        }
    };
    match transport {
        XdsTransport::Tcp(addr) => {
            let addr = *addr;
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let count = count.clone();
                async move {
                    let s = tokio::net::TcpStream::connect(addr).await?;
                    let _ = s.set_nodelay(true);
                    count();
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
        }
        XdsTransport::Unix(path) => {
            let path = path.clone();
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                let count = count.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    count();
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
        }
    }
}

/// Envoy's jittered exponential back-off for the xDS stream: uniform in
/// `[0, min(base × 2^(n-1), max))` after the n-th failure in a row (never below 1 ms).
pub(crate) fn reconnect_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max)
        .max(Duration::from_millis(1));
    let ms = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(fastrand::u64(0..ms).max(1))
}

/// The by-name types a wildcard type's resources subscribe to.
fn dependents(t: &str) -> &'static [&'static str] {
    match t {
        type_url::CLUSTER => &[type_url::ENDPOINT, type_url::SECRET],
        type_url::LISTENER => &[type_url::ROUTE, type_url::SECRET],
        _ => &[],
    }
}

fn known_type(t: &str) -> Option<&'static str> {
    [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::ROUTE,
        type_url::SECRET,
    ]
    .into_iter()
    .find(|k| *k == t)
}

/// The name of a SotW resource (field 1 of every xDS type we use: `name` or `cluster_name`).
fn resource_name(_t: &str, value: &[u8]) -> Result<String, prost::DecodeError> {
    /// Just the first field of a resource.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Named {
        #[prost(string, tag = "1")]
        name: String,
    }
    Ok(<Named as prost::Message>::decode(value)?.name)
}

/// The `error_detail` of a NACK: INVALID_ARGUMENT with every rejected resource and why. LDS
/// and CDS NACKs read as Envoy's (`Error adding/updating listener(s) NAME: reason\n`).
fn nack_status_for(t: &str, rejected: &[Rejected]) -> Status {
    let line = |r: &Rejected| {
        if r.name.is_empty() {
            r.reason.clone()
        } else {
            format!("{}: {}", r.name, r.reason)
        }
    };
    match t {
        type_url::LISTENER => Status {
            code: 3,
            message: format!(
                "Error adding/updating listener(s) {}",
                rejected.iter().map(|r| line(r) + "\n").collect::<String>()
            ),
            details: Vec::new(),
        },
        type_url::CLUSTER => Status {
            code: 3,
            message: format!(
                "Error adding/updating cluster(s) {}",
                rejected.iter().map(line).collect::<Vec<_>>().join(", ")
            ),
            details: Vec::new(),
        },
        _ => nack_status(rejected),
    }
}

/// The `error_detail` of a NACK: INVALID_ARGUMENT with every rejected resource and why.
fn nack_status(rejected: &[Rejected]) -> Status {
    let message = rejected
        .iter()
        .map(|r| {
            if r.name.is_empty() {
                r.reason.clone()
            } else {
                format!("{}: {}", r.name, r.reason)
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    Status {
        code: 3,
        message,
        details: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_names_every_resource() {
        let s = nack_status(&[
            Rejected {
                name: "a".into(),
                reason: "x: bad".into(),
            },
            Rejected {
                name: String::new(),
                reason: "does not decode".into(),
            },
        ]);
        assert_eq!(s.code, 3);
        assert_eq!(s.message, "a: x: bad\ndoes not decode");
    }

    #[test]
    fn resource_names_come_from_field_one() {
        use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use prost::Message;
        let cla = ClusterLoadAssignment {
            cluster_name: "outbound|80||a".into(),
            ..Default::default()
        };
        assert_eq!(
            resource_name(type_url::ENDPOINT, &cla.encode_to_vec()).unwrap(),
            "outbound|80||a"
        );
    }
}
