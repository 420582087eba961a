//! Hosts: one upstream endpoint of a cluster, with the live state that load balancing,
//! outlier detection and connection pooling share.
//!
//! A host lives as long as its cluster keeps an endpoint at its address: assignments that
//! only change weights or health update it in place, so its connections, active-request
//! count and outlier state survive EDS pushes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use tokio::time::Instant;

use crate::config::endpoint::{HealthStatus, Locality};

/// Health flags (a host is healthy when none is set).
mod flag {
    /// EDS says unhealthy, draining or timed out.
    pub(super) const EDS_UNHEALTHY: u8 = 1;
    /// Ejected by outlier detection.
    pub(super) const FAILED_OUTLIER_CHECK: u8 = 1 << 1;
    /// EDS says degraded.
    pub(super) const DEGRADED: u8 = 1 << 2;
}

/// An upstream host.
#[derive(Debug)]
pub struct Host {
    address: SocketAddr,
    hostname: String,
    hash_key: String,
    locality: Locality,
    priority: u32,
    /// Index into the cluster's `transport_socket_matches` (`None` = the default socket).
    transport_match: Option<usize>,
    weight: AtomicU32,
    health: AtomicU8,
    active_requests: AtomicU64,
    created: Instant,
    pools: super::pool::HostPools,
    rq_total: AtomicU64,
    rq_error: AtomicU64,
}

/// What a host is made from.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// Address.
    pub address: SocketAddr,
    /// `endpoint.hostname`.
    pub hostname: String,
    /// Key for hash rings: the `envoy.lb` `hash_key`, else the address.
    pub hash_key: Option<String>,
    /// Locality.
    pub locality: Locality,
    /// Priority.
    pub priority: u32,
    /// Transport socket match index.
    pub transport_match: Option<usize>,
    /// Weight (≥ 1).
    pub weight: u32,
    /// EDS health.
    pub health: HealthStatus,
}

impl Host {
    /// A new host, healthy unless `spec.health` says otherwise.
    pub fn new(spec: HostSpec) -> Host {
        let host = Host {
            hash_key: spec.hash_key.unwrap_or_else(|| spec.address.to_string()),
            address: spec.address,
            hostname: spec.hostname,
            locality: spec.locality,
            priority: spec.priority,
            transport_match: spec.transport_match,
            weight: AtomicU32::new(spec.weight.max(1)),
            health: AtomicU8::new(0),
            active_requests: AtomicU64::new(0),
            created: Instant::now(),
            pools: super::pool::HostPools::default(),
            rq_total: AtomicU64::new(0),
            rq_error: AtomicU64::new(0),
        };
        host.set_eds_health(spec.health);
        host
    }

    /// Whether `spec` describes this host with at most a new weight or health (which
    /// [`Host::update`] applies in place).
    pub fn same_identity(&self, spec: &HostSpec) -> bool {
        self.address == spec.address
            && self.hostname == spec.hostname
            && self.locality == spec.locality
            && self.priority == spec.priority
            && self.transport_match == spec.transport_match
            && spec
                .hash_key
                .as_deref()
                .unwrap_or(&self.address.to_string())
                == self.hash_key
    }

    /// Applies a new weight and EDS health.
    pub fn update(&self, spec: &HostSpec) {
        self.weight.store(spec.weight.max(1), Ordering::Relaxed);
        self.set_eds_health(spec.health);
    }

    fn set_eds_health(&self, h: HealthStatus) {
        let (unhealthy, degraded) = match h {
            HealthStatus::Unknown | HealthStatus::Healthy => (false, false),
            HealthStatus::Degraded => (false, true),
            HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout => {
                (true, false)
            }
        };
        self.set_flag(flag::EDS_UNHEALTHY, unhealthy);
        self.set_flag(flag::DEGRADED, degraded);
    }

    fn set_flag(&self, f: u8, on: bool) {
        if on {
            self.health.fetch_or(f, Ordering::Relaxed);
        } else {
            self.health.fetch_and(!f, Ordering::Relaxed);
        }
    }

    /// Address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `endpoint.hostname` (may be empty).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Key for hash rings.
    pub fn hash_key(&self) -> &str {
        &self.hash_key
    }

    /// Locality.
    pub fn locality(&self) -> &Locality {
        &self.locality
    }

    /// Priority level.
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// Transport socket match index.
    pub fn transport_match(&self) -> Option<usize> {
        self.transport_match
    }

    /// Load-balancing weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Healthy for load balancing: not unhealthy by EDS and not ejected.
    pub fn is_healthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) & (flag::EDS_UNHEALTHY | flag::FAILED_OUTLIER_CHECK)
            == 0
    }

    /// Degraded by EDS.
    pub fn is_degraded(&self) -> bool {
        self.health.load(Ordering::Relaxed) & flag::DEGRADED != 0
    }

    /// Ejected by outlier detection.
    pub fn is_ejected(&self) -> bool {
        self.health.load(Ordering::Relaxed) & flag::FAILED_OUTLIER_CHECK != 0
    }

    /// Unhealthy by EDS.
    pub fn is_eds_unhealthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) & flag::EDS_UNHEALTHY != 0
    }

    /// Marks the host ejected (or not) by outlier detection.
    pub fn set_ejected(&self, ejected: bool) {
        self.set_flag(flag::FAILED_OUTLIER_CHECK, ejected);
    }

    /// Requests in flight to this host.
    pub fn active_requests(&self) -> u64 {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start_request(self: &std::sync::Arc<Self>) -> ActiveRequest {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        self.rq_total.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }

    /// The host's connection pools.
    pub fn pools(&self) -> &super::pool::HostPools {
        &self.pools
    }

    /// Counts a request that ended in a 5xx or without a response (`rq_error`).
    pub fn count_error(&self) {
        self.rq_error.fetch_add(1, Ordering::Relaxed);
    }

    /// `(rq_total, rq_error)` as `/clusters` shows them.
    pub fn request_counts(&self) -> (u64, u64) {
        (
            self.rq_total.load(Ordering::Relaxed),
            self.rq_error.load(Ordering::Relaxed),
        )
    }

    /// When the host joined its cluster (for slow start).
    pub fn created(&self) -> Instant {
        self.created
    }
}

/// A request in flight to a host (see [`Host::start_request`]).
#[derive(Debug)]
pub struct ActiveRequest(std::sync::Arc<Host>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}
