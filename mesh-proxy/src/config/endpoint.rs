//! Endpoint assignments (`ClusterLoadAssignment`).

use std::net::SocketAddr;
use std::path::PathBuf;

/// A cluster's endpoints by locality and priority.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LoadAssignment {
    /// `cluster_name` (the EDS service name).
    pub cluster_name: String,
    /// Localities with their endpoints.
    pub localities: Vec<LocalityEndpoints>,
    /// `policy.overprovisioning_factor` (140, i.e. 1.4).
    pub overprovisioning_factor: u32,
    /// `policy.weighted_priority_health`.
    pub weighted_priority_health: bool,
}

/// `LocalityLbEndpoints`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LocalityEndpoints {
    /// Where.
    pub locality: Locality,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    /// `load_balancing_weight` (used under locality-weighted LB; `None` = no load there).
    pub weight: Option<u32>,
    /// Priority (0 is the highest).
    pub priority: u32,
}

/// A locality.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub sub_zone: String,
}

/// `LbEndpoint`.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Where to connect.
    pub address: EndpointAddress,
    /// `endpoint.hostname` (for `auto_host_rewrite` and hashing).
    pub hostname: String,
    /// `health_status`.
    pub health: HealthStatus,
    /// `load_balancing_weight` (1).
    pub weight: u32,
    /// String fields of the `envoy.transport_socket_match` metadata (Istio's `tlsMode`).
    pub transport_socket_match: Vec<(String, String)>,
    /// `envoy.lb` metadata `hash_key`, replacing the address in hash rings.
    pub hash_key: Option<String>,
}

/// An endpoint's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// An IP and port.
    Socket(SocketAddr),
    /// A DNS name and port (STRICT_DNS / LOGICAL_DNS clusters resolve it).
    Dns {
        /// Name.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket.
    Pipe(PathBuf),
}

impl std::fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointAddress::Socket(a) => write!(f, "{a}"),
            EndpointAddress::Dns { host, port } => write!(f, "{host}:{port}"),
            EndpointAddress::Pipe(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// `HealthStatus` (EDS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HealthStatus {
    /// Unknown (treated as healthy).
    #[default]
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
    /// Draining (unhealthy for new requests).
    Draining,
    /// Timeout (unhealthy).
    Timeout,
    /// Degraded.
    Degraded,
}

impl HealthStatus {
    /// Whether the load balancer may pick the host outside panic mode.
    pub fn is_healthy(self) -> bool {
        matches!(self, HealthStatus::Unknown | HealthStatus::Healthy)
    }
}
