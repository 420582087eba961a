//! Envoy's v3 bootstrap: the parts a sidecar needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::cluster::Cluster;
use super::listener::Listener;

/// A bootstrap, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    /// The node identity sent to the control plane.
    pub node: Node,
    /// Admin listener address (port 0 = any).
    pub admin: Option<SocketAddr>,
    /// `static_resources.clusters`.
    pub static_clusters: Vec<Cluster>,
    /// `static_resources.listeners`.
    pub static_listeners: Vec<Listener>,
    /// `dynamic_resources.ads_config`.
    pub ads: Option<AdsConfig>,
    /// `cds_config` is `{ads: {}}`.
    pub cds_over_ads: bool,
    /// `lds_config` is `{ads: {}}`.
    pub lds_over_ads: bool,
    /// `cds_config.initial_fetch_timeout` (15 s; `None` = wait forever).
    pub cds_initial_fetch_timeout: Option<Duration>,
    /// `lds_config.initial_fetch_timeout`.
    pub lds_initial_fetch_timeout: Option<Duration>,
    /// DNS servers from `typed_dns_resolver_config` (c-ares `resolvers`); empty = the
    /// system's.
    pub dns_resolvers: Vec<SocketAddr>,
}

/// `node`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Node {
    /// `id`.
    pub id: String,
    /// `cluster`.
    pub cluster: String,
    /// `metadata` as JSON-like values (sent back to the control plane as given).
    pub metadata: BTreeMap<String, MetadataValue>,
    /// `locality`.
    pub locality: super::endpoint::Locality,
}

/// A `google.protobuf.Value`.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    /// `null`.
    Null,
    /// A number.
    Number(f64),
    /// A string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A struct.
    Struct(BTreeMap<String, MetadataValue>),
    /// A list.
    List(Vec<MetadataValue>),
}

/// `dynamic_resources.ads_config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdsConfig {
    /// SotW or delta.
    pub api: AdsApi,
    /// The static cluster that reaches the control plane.
    pub cluster: String,
    /// Send `node` only on a stream's first request.
    pub set_node_on_first_message_only: bool,
}

/// `api_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdsApi {
    /// `GRPC`: state of the world.
    Sotw,
    /// `DELTA_GRPC`: incremental.
    Delta,
}
