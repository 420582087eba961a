//! Listeners, filter chains and network filters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::http::HttpConnectionManager;
use super::matcher::Cidr;
use super::tls::{DownstreamTransport, SdsSecret, SecretKind};

/// A listener (LDS resource or static).
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// Name (`0.0.0.0_8080`, `virtualOutbound`, ...).
    pub name: String,
    /// Address it owns.
    pub address: SocketAddr,
    /// Whether it opens a socket; `false` listeners only receive connections handed over by a
    /// `use_original_dst` listener (Istio's per-port and per-VIP outbound listeners).
    pub bind_to_port: bool,
    /// Hand accepted connections to the listener that owns their original destination.
    pub use_original_dst: bool,
    /// Listener filters, in order.
    pub listener_filters: ListenerFilters,
    /// How long listener filters may wait for bytes; `None` = forever.
    pub listener_filters_timeout: Option<Duration>,
    /// On that timeout, go on with what is known instead of closing.
    pub continue_on_listener_filters_timeout: bool,
    /// Filter chains.
    pub filter_chains: Vec<Arc<FilterChain>>,
    /// The chain for connections no chain matches; `None` = close them.
    pub default_filter_chain: Option<Arc<FilterChain>>,
    /// Bytes buffered per connection (soft).
    pub per_connection_buffer_limit: u32,
    /// `INBOUND` or `OUTBOUND`, for stats and drains.
    pub direction: TrafficDirection,
}

impl Listener {
    /// The SDS secrets its filter chains need (deduplicated), which it warms on.
    pub fn sds_secrets(&self) -> Vec<(SecretKind, &SdsSecret)> {
        let mut v: Vec<_> = self
            .filter_chains
            .iter()
            .chain(self.default_filter_chain.iter())
            .flat_map(|c| c.transport.sds_secrets())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `traffic_direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrafficDirection {
    /// Unspecified.
    #[default]
    Unspecified,
    /// Inbound.
    Inbound,
    /// Outbound.
    Outbound,
}

/// The listener filters a listener runs (each at most once, in Envoy's effective order:
/// original destination first, then the inspectors, which only peek).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListenerFilters {
    /// `envoy.filters.listener.original_dst`: the local address becomes the pre-redirect
    /// destination.
    pub original_dst: bool,
    /// `envoy.filters.listener.tls_inspector`: transport protocol `tls`, SNI and ALPN from a
    /// ClientHello.
    pub tls_inspector: bool,
    /// `envoy.filters.listener.http_inspector`: application protocol `http/1.0`, `http/1.1`
    /// or `h2c` from plaintext.
    pub http_inspector: bool,
    /// `filter_disabled` of the original destination filter (against the accepted socket's
    /// local address).
    pub original_dst_disabled: Option<FilterPredicate>,
    /// `filter_disabled` of the TLS inspector (against the destination after
    /// `original_dst`).
    pub tls_inspector_disabled: Option<FilterPredicate>,
    /// `filter_disabled` of the HTTP inspector.
    pub http_inspector_disabled: Option<FilterPredicate>,
}

impl ListenerFilters {
    /// Whether the TLS inspector runs for a connection to `destination_port`.
    pub fn tls_inspector_for(&self, destination_port: u16) -> bool {
        self.tls_inspector && !disabled(&self.tls_inspector_disabled, destination_port)
    }

    /// Whether the HTTP inspector runs for a connection to `destination_port`.
    pub fn http_inspector_for(&self, destination_port: u16) -> bool {
        self.http_inspector && !disabled(&self.http_inspector_disabled, destination_port)
    }

    /// Whether the original destination filter runs for a socket on `local_port`.
    pub fn original_dst_for(&self, local_port: u16) -> bool {
        self.original_dst && !disabled(&self.original_dst_disabled, local_port)
    }
}

fn disabled(p: &Option<FilterPredicate>, port: u16) -> bool {
    p.as_ref().is_some_and(|p| p.matches(port))
}

/// `ListenerFilterChainMatchPredicate`: when a listener filter is skipped (`filter_disabled`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterPredicate {
    /// `any_match: true`.
    Any,
    /// `not_match`.
    Not(Box<FilterPredicate>),
    /// `and_match` (all of them; an empty list matches).
    And(Vec<FilterPredicate>),
    /// `or_match` (any of them).
    Or(Vec<FilterPredicate>),
    /// `destination_port_range`: `[start, end)`.
    DestinationPortRange {
        /// First port.
        start: u32,
        /// One past the last port.
        end: u32,
    },
}

impl FilterPredicate {
    /// Whether a connection to `destination_port` matches.
    pub fn matches(&self, destination_port: u16) -> bool {
        match self {
            FilterPredicate::Any => true,
            FilterPredicate::Not(p) => !p.matches(destination_port),
            FilterPredicate::And(ps) => ps.iter().all(|p| p.matches(destination_port)),
            FilterPredicate::Or(ps) => ps.iter().any(|p| p.matches(destination_port)),
            FilterPredicate::DestinationPortRange { start, end } => {
                (*start..*end).contains(&u32::from(destination_port))
            }
        }
    }
}

/// A filter chain.
#[derive(Debug, PartialEq)]
pub struct FilterChain {
    /// Name (for stats, dumps and drains).
    pub name: String,
    /// When it applies.
    pub filter_chain_match: FilterChainMatch,
    /// Downstream TLS or plaintext.
    pub transport: DownstreamTransport,
    /// Network filters that run before the terminal one, in order (the slot where network
    /// RBAC will go).
    pub filters: Vec<NetworkFilter>,
    /// The filter that owns the connection.
    pub terminal: TerminalFilter,
}

/// Non-terminal network filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkFilter {
    /// `envoy.filters.network.sni_dynamic_forward_proxy`: resolve the SNI and connect to it on
    /// `port` (the TCP proxy's cluster must be a dynamic forward proxy cluster).
    SniDynamicForwardProxy {
        /// Upstream port.
        port: u16,
    },
}

/// The filter that handles a connection's bytes.
#[derive(Debug, PartialEq)]
pub enum TerminalFilter {
    /// `envoy.filters.network.http_connection_manager`.
    Http(Arc<HttpConnectionManager>),
    /// `envoy.filters.network.tcp_proxy`.
    Tcp(Arc<TcpProxy>),
}

/// `FilterChainMatch`. Unset criteria match anything; Envoy narrows candidate chains one
/// criterion at a time in the order of the fields below.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FilterChainMatch {
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Destination IP ranges (longest prefix wins).
    pub prefix_ranges: Vec<Cidr>,
    /// SNI: exact names and `*.suffix` wildcards.
    pub server_names: Vec<String>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: Option<String>,
    /// ALPN values (`http/1.1`, `h2c`, `istio-peer-exchange`, ...).
    pub application_protocols: Vec<String>,
    /// Direct source IP ranges.
    pub direct_source_prefix_ranges: Vec<Cidr>,
    /// Source type.
    pub source_type: SourceType,
    /// Source IP ranges.
    pub source_prefix_ranges: Vec<Cidr>,
    /// Source ports.
    pub source_ports: Vec<u16>,
}

/// `FilterChainMatch.source_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SourceType {
    /// Any source.
    #[default]
    Any,
    /// The source is the local address or loopback.
    SameIpOrLoopback,
    /// Anything else.
    External,
}

/// `envoy.filters.network.tcp_proxy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpProxy {
    /// Stats prefix (`tcp.PREFIX.`).
    pub stat_prefix: String,
    /// The upstream cluster, or a weighted choice made once per connection.
    pub cluster: TcpCluster,
    /// Close after this long without bytes either way; `None` = never (Envoy: 1 h by default).
    pub idle_timeout: Option<Duration>,
    /// Connect attempts (to different hosts when possible).
    pub max_connect_attempts: u32,
    /// Close the downstream connection after this long.
    pub max_downstream_connection_duration: Option<Duration>,
}

/// A TCP proxy's destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpCluster {
    /// One cluster.
    Cluster(String),
    /// Weighted clusters: `(name, weight)`, weights ≥ 1.
    Weighted(Vec<(String, u32)>),
}
