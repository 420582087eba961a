//! Clusters.

use std::path::PathBuf;
use std::time::Duration;

use super::endpoint::LoadAssignment;
use super::http::{DnsCacheConfig, Http2Options};
use super::tls::{SdsSecret, SecretKind, UpstreamTransport};

/// A cluster (CDS resource or static).
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// Name.
    pub name: String,
    /// Name used in stats instead of `name` (`alt_stat_name`).
    pub alt_stat_name: Option<String>,
    /// How hosts are found.
    pub discovery: Discovery,
    /// `connect_timeout` (5 s).
    pub connect_timeout: Duration,
    /// Load balancing.
    pub lb_policy: LbPolicy,
    /// `common_lb_config.healthy_panic_threshold` in percent (50; 0 disables panic).
    pub healthy_panic_threshold: f64,
    /// `common_lb_config.locality_weighted_lb_config` is set.
    pub locality_weighted: bool,
    /// Circuit breakers (DEFAULT priority; Envoy's defaults when unset).
    pub circuit_breakers: Thresholds,
    /// Outlier detection; `None` = off.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream HTTP protocol and its options.
    pub http: UpstreamHttp,
    /// The transport socket when no `transport_socket_matches` entry applies.
    pub transport: UpstreamTransport,
    /// `transport_socket_matches`: the first whose `match` is a subset of an endpoint's
    /// `envoy.transport_socket_match` metadata wins.
    pub transport_socket_matches: Vec<TransportSocketMatch>,
    /// `upstream_connection_options.tcp_keepalive`.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Source address to bind upstream connections to (`upstream_bind_config`; Istio's
    /// `InboundPassthroughCluster` binds 127.0.0.6).
    pub upstream_bind: Option<std::net::SocketAddr>,
    /// `per_connection_buffer_limit_bytes` (1 MiB).
    pub per_connection_buffer_limit: u32,
    /// DNS lookup family for DNS clusters.
    pub dns_lookup_family: DnsLookupFamily,
    /// DNS refresh rate (5 s).
    pub dns_refresh_rate: Duration,
    /// Keep ORIGINAL_DST hosts this long after their last use (5 s).
    pub cleanup_interval: Duration,
}

impl Cluster {
    /// The SDS secrets its transport sockets need (deduplicated), which it warms on.
    pub fn sds_secrets(&self) -> Vec<(SecretKind, &SdsSecret)> {
        let mut v = self.transport.sds_secrets();
        for m in &self.transport_socket_matches {
            v.extend(m.transport.sds_secrets());
        }
        v.sort();
        v.dedup();
        v
    }
}

/// How a cluster's hosts are found (`type` / `cluster_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum Discovery {
    /// `STATIC`: hosts in `load_assignment`.
    Static(LoadAssignment),
    /// `STRICT_DNS`: every address of every name in `load_assignment`.
    StrictDns(LoadAssignment),
    /// `LOGICAL_DNS`: the first address of the one name in `load_assignment`.
    LogicalDns(LoadAssignment),
    /// `EDS`: assignments come by name over ADS.
    Eds {
        /// The assignment's name (`eds_cluster_config.service_name`, else the cluster's).
        service_name: String,
    },
    /// `ORIGINAL_DST`: the connection's original destination.
    OriginalDst {
        /// Let `x-envoy-original-dst-host` choose the host.
        use_http_header: bool,
    },
    /// `envoy.clusters.dynamic_forward_proxy`: the request's host (or SNI) resolved in the
    /// DNS cache shared with the filter.
    DynamicForwardProxy(DnsCacheConfig),
}

impl Discovery {
    /// The EDS service name, for EDS clusters.
    pub fn eds_service_name(&self) -> Option<&str> {
        match self {
            Discovery::Eds { service_name } => Some(service_name),
            _ => None,
        }
    }
}

/// Load-balancing policies.
#[derive(Clone, Debug, PartialEq)]
pub enum LbPolicy {
    /// `ROUND_ROBIN` (weighted when weights differ).
    RoundRobin {
        /// Slow start.
        slow_start: Option<SlowStart>,
    },
    /// `LEAST_REQUEST`: P2C by active requests, weighted when weights differ.
    LeastRequest {
        /// `choice_count` (2).
        choice_count: u32,
        /// `active_request_bias` (1.0).
        active_request_bias: f64,
        /// Slow start.
        slow_start: Option<SlowStart>,
    },
    /// `RANDOM`.
    Random,
    /// `RING_HASH`.
    RingHash {
        /// `minimum_ring_size` (1024).
        minimum_ring_size: u64,
        /// `maximum_ring_size` (8 M).
        maximum_ring_size: u64,
        /// `hash_function`: `true` for MURMUR_HASH_2, else XX_HASH.
        murmur: bool,
    },
    /// `MAGLEV`.
    Maglev {
        /// `table_size` (65537).
        table_size: u64,
    },
    /// `CLUSTER_PROVIDED` (ORIGINAL_DST and dynamic forward proxy clusters).
    ClusterProvided,
}

/// `slow_start_config`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowStart {
    /// `slow_start_window`.
    pub window: Duration,
    /// `aggression` (1.0).
    pub aggression: f64,
    /// `min_weight_percent` (10).
    pub min_weight_percent: f64,
}

/// Circuit-breaker thresholds for one priority.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// `max_connections` (1024).
    pub max_connections: u32,
    /// `max_pending_requests` (1024).
    pub max_pending_requests: u32,
    /// `max_requests` (1024).
    pub max_requests: u32,
    /// `max_retries` (3).
    pub max_retries: u32,
    /// `retry_budget`: `(budget_percent, min_retry_concurrency)`; replaces `max_retries`.
    pub retry_budget: Option<(f64, u32)>,
    /// `track_remaining`.
    pub track_remaining: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
            track_remaining: false,
        }
    }
}

/// `outlier_detection`, with Envoy's defaults for unset fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutlierDetection {
    /// `consecutive_5xx` (5).
    pub consecutive_5xx: u32,
    /// `consecutive_gateway_failure` (5).
    pub consecutive_gateway_failure: u32,
    /// `consecutive_local_origin_failure` (5).
    pub consecutive_local_origin_failure: u32,
    /// `interval` (10 s).
    pub interval: Duration,
    /// `base_ejection_time` (30 s).
    pub base_ejection_time: Duration,
    /// `max_ejection_time` (max(300 s, base)).
    pub max_ejection_time: Duration,
    /// `max_ejection_percent` (10).
    pub max_ejection_percent: u32,
    /// `enforcing_consecutive_5xx` (100).
    pub enforcing_consecutive_5xx: u32,
    /// `enforcing_consecutive_gateway_failure` (0).
    pub enforcing_consecutive_gateway_failure: u32,
    /// `enforcing_consecutive_local_origin_failure` (100).
    pub enforcing_consecutive_local_origin_failure: u32,
    /// `enforcing_success_rate` (100).
    pub enforcing_success_rate: u32,
    /// `success_rate_minimum_hosts` (5).
    pub success_rate_minimum_hosts: u32,
    /// `success_rate_request_volume` (100).
    pub success_rate_request_volume: u32,
    /// `success_rate_stdev_factor` (1900).
    pub success_rate_stdev_factor: u32,
    /// `enforcing_failure_percentage` (0).
    pub enforcing_failure_percentage: u32,
    /// `failure_percentage_threshold` (85).
    pub failure_percentage_threshold: u32,
    /// `failure_percentage_minimum_hosts` (5).
    pub failure_percentage_minimum_hosts: u32,
    /// `failure_percentage_request_volume` (50).
    pub failure_percentage_request_volume: u32,
    /// `split_external_local_origin_errors`.
    pub split_external_local_origin_errors: bool,
    /// `always_eject_one_host`.
    pub always_eject_one_host: bool,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_failure_percentage: 0,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            split_external_local_origin_errors: false,
            always_eject_one_host: false,
        }
    }
}

/// The upstream HTTP protocol (`HttpProtocolOptions`).
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamHttp {
    /// Which protocol.
    pub protocol: UpstreamProtocol,
    /// `common_http_protocol_options.idle_timeout` (1 h).
    pub idle_timeout: Option<Duration>,
    /// `max_requests_per_connection` (unlimited).
    pub max_requests_per_connection: Option<u32>,
    /// `max_connection_duration`.
    pub max_connection_duration: Option<Duration>,
    /// `max_headers_count` (100).
    pub max_headers_count: u32,
    /// HTTP/2 settings.
    pub http2: Http2Options,
}

impl Default for UpstreamHttp {
    fn default() -> Self {
        UpstreamHttp {
            protocol: UpstreamProtocol::Http1,
            idle_timeout: Some(Duration::from_secs(3600)),
            max_requests_per_connection: None,
            max_connection_duration: None,
            max_headers_count: 100,
            http2: Http2Options::default(),
        }
    }
}

/// Upstream HTTP protocol choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge, or h2 by ALPN under TLS).
    Http2,
    /// The downstream request's protocol (`use_downstream_protocol_config`).
    Downstream,
    /// By ALPN (`auto_config`; HTTP/1.1 over plaintext).
    Auto,
}

/// One `transport_socket_matches` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TransportSocketMatch {
    /// Name (stats).
    pub name: String,
    /// String fields an endpoint's `envoy.transport_socket_match` metadata must carry.
    pub match_fields: Vec<(String, String)>,
    /// The socket.
    pub transport: UpstreamTransport,
}

/// `tcp_keepalive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Probes before the connection is dead.
    pub probes: Option<u32>,
    /// Idle time before probing.
    pub time: Option<Duration>,
    /// Between probes.
    pub interval: Option<Duration>,
}

/// `dns_lookup_family`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DnsLookupFamily {
    /// IPv4 first, else IPv6 (`AUTO` prefers IPv6 in Envoy; sidecars use V4_ONLY or ALL).
    #[default]
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 preferred.
    V4Preferred,
    /// Both.
    All,
}

/// A Unix socket path for `pipe` addresses.
pub type PipePath = PathBuf;
