//! A cluster at run time: its hosts, load balancer, pools, breakers and outlier detector.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response, Version};

use super::host::{Host, HostSpec};
use super::lb::{HostSet, LbContext, LbParams};
use super::outlier::{OutlierDetector, OutlierStats};
use super::pool::{
    Admission, ConnectParams, Permit, PoolProtocol, PoolStats, PooledBody, SendError,
};
use super::resources::{ResourceManager, ResourceStats};
use crate::classify::{Failure, Outcome};
use crate::config::cluster::{Cluster, Discovery, UpstreamProtocol};
use crate::config::endpoint::{EndpointAddress, LoadAssignment};
use crate::config::tls::UpstreamTransport;
use crate::http::Body;
use crate::stats::{Counter, Gauge, Store};

/// A cluster's request-level stats (`cluster.NAME.`).
#[derive(Clone, Debug)]
pub struct ClusterStats {
    /// `upstream_rq_total`.
    pub rq_total: Counter,
    /// `upstream_rq_active`.
    pub rq_active: Gauge,
    /// `upstream_rq_completed`.
    pub rq_completed: Counter,
    /// `upstream_rq_1xx` .. `upstream_rq_5xx` (index = class - 1).
    pub rq_class: [Counter; 5],
    /// `upstream_rq_timeout`.
    pub rq_timeout: Counter,
    /// `upstream_rq_rx_reset`.
    pub rq_rx_reset: Counter,
    /// `upstream_rq_tx_reset`.
    pub rq_tx_reset: Counter,
    /// `upstream_cx_none_healthy`.
    pub cx_none_healthy: Counter,
    /// `lb_healthy_panic`.
    pub lb_healthy_panic: Counter,
    /// `membership_total`.
    pub membership_total: Gauge,
    /// `membership_healthy`.
    pub membership_healthy: Gauge,
    /// `membership_degraded`.
    pub membership_degraded: Gauge,
    /// `membership_change`.
    pub membership_change: Counter,
    /// `update_success` (EDS).
    pub update_success: Counter,
    /// `update_rejected` (EDS).
    pub update_rejected: Counter,
    /// `update_attempt` (EDS).
    pub update_attempt: Counter,
    /// Retry stats.
    pub retry: crate::retry::RetryStats,
    /// Pool stats.
    pub pool: PoolStats,
    prefix: String,
    store: Arc<Store>,
    codes: Arc<std::sync::RwLock<Vec<(u16, Counter)>>>,
}

impl ClusterStats {
    /// Stats for a cluster named `name` (its `alt_stat_name` if set).
    pub fn new(store: &Arc<Store>, name: &str) -> ClusterStats {
        let p = format!("cluster.{name}.");
        let c = |s: &str| store.counter(format!("{p}{s}"));
        let g = |s: &str| store.gauge(format!("{p}{s}"));
        ClusterStats {
            rq_total: c("upstream_rq_total"),
            rq_active: g("upstream_rq_active"),
            rq_completed: c("upstream_rq_completed"),
            rq_class: [
                c("upstream_rq_1xx"),
                c("upstream_rq_2xx"),
                c("upstream_rq_3xx"),
                c("upstream_rq_4xx"),
                c("upstream_rq_5xx"),
            ],
            rq_timeout: c("upstream_rq_timeout"),
            rq_rx_reset: c("upstream_rq_rx_reset"),
            rq_tx_reset: c("upstream_rq_tx_reset"),
            cx_none_healthy: c("upstream_cx_none_healthy"),
            lb_healthy_panic: c("lb_healthy_panic"),
            membership_total: g("membership_total"),
            membership_healthy: g("membership_healthy"),
            membership_degraded: g("membership_degraded"),
            membership_change: c("membership_change"),
            update_success: c("update_success"),
            update_rejected: c("update_rejected"),
            update_attempt: c("update_attempt"),
            retry: crate::retry::RetryStats::new(store, &p),
            pool: PoolStats {
                cx_total: c("upstream_cx_total"),
                cx_active: g("upstream_cx_active"),
                cx_http1_total: c("upstream_cx_http1_total"),
                cx_http2_total: c("upstream_cx_http2_total"),
                cx_connect_fail: c("upstream_cx_connect_fail"),
                cx_connect_timeout: c("upstream_cx_connect_timeout"),
                cx_destroy: c("upstream_cx_destroy"),
                cx_idle_timeout: c("upstream_cx_idle_timeout"),
                cx_max_requests: c("upstream_cx_max_requests"),
                cx_max_duration_reached: c("upstream_cx_max_duration_reached"),
                cx_overflow: c("upstream_cx_overflow"),
                rq_pending_total: c("upstream_rq_pending_total"),
                rq_pending_active: g("upstream_rq_pending_active"),
                rq_pending_overflow: c("upstream_rq_pending_overflow"),
                cx_connect_ms: c("upstream_cx_connect_ms_total"),
            },
            prefix: p,
            store: store.clone(),
            codes: Arc::default(),
        }
    }

    /// Counts a response status (`upstream_rq_<code>` and its class).
    pub fn status(&self, code: u16) {
        if (100..600).contains(&code) {
            self.rq_class[usize::from(code / 100 - 1)].inc();
        }
        // The per-code counters a cluster sees are few: found under a read lock.
        {
            let codes = self.codes.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, c)) = codes.iter().find(|(k, _)| *k == code) {
                c.inc();
                return;
            }
        }
        let c = self
            .store
            .counter(format!("{}upstream_rq_{code}", self.prefix));
        c.inc();
        self.codes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((code, c));
    }
}

/// The transport socket of a set of hosts, ready to connect with.
#[derive(Debug, Clone)]
struct Transport {
    /// `None` = plaintext.
    tls: Option<Arc<crate::tls::ClientTls>>,
}

/// A cluster, live.
pub struct ClusterRuntime {
    config: Arc<Cluster>,
    stats: ClusterStats,
    hosts: ArcSwap<HostSet>,
    members: Mutex<Members>,
    resources: ResourceManager,
    outlier: Option<OutlierDetector>,
    transports: Vec<Transport>,
}

impl std::fmt::Debug for ClusterRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRuntime")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Members {
    by_addr: HashMap<SocketAddr, Arc<Host>>,
    assignment: Option<LoadAssignment>,
    /// ORIGINAL_DST and dynamic-forward-proxy hosts made on demand, with their last use.
    on_demand: HashMap<SocketAddr, (Arc<Host>, tokio::time::Instant)>,
}

/// What the router tells the cluster about a request, for host choice.
#[derive(Clone, Copy, Default)]
pub struct HostRequest<'a> {
    /// The hash policies' hash.
    pub hash: Option<u64>,
    /// The downstream connection's original destination (ORIGINAL_DST clusters).
    pub original_dst: Option<SocketAddr>,
    /// The already resolved address for a dynamic forward proxy cluster.
    pub resolved: Option<SocketAddr>,
    /// The retry host predicate.
    pub should_select_another: Option<&'a dyn Fn(&Host) -> bool>,
    /// Host selection attempts with the predicate.
    pub host_selection_retry_max_attempts: u32,
}

impl std::fmt::Debug for HostRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRequest")
            .field("hash", &self.hash)
            .field("original_dst", &self.original_dst)
            .field("resolved", &self.resolved)
            .finish_non_exhaustive()
    }
}

impl ClusterRuntime {
    /// Builds a cluster. Fails when its TLS material cannot be loaded (the resource is then
    /// rejected, as Envoy does); SDS secrets its transport sockets name are subscribed in
    /// `secrets` (the cluster warms until they arrive: [`ClusterRuntime::secrets_ready`]).
    pub fn new(
        config: Arc<Cluster>,
        store: &Arc<Store>,
        secrets: &crate::secret::SecretManager,
    ) -> Result<Arc<ClusterRuntime>, crate::tls::TlsError> {
        let stat_name = config
            .alt_stat_name
            .clone()
            .unwrap_or_else(|| config.name.clone());
        let stats = ClusterStats::new(store, &stat_name);
        // Every TLS transport socket counts under the cluster's `ssl.` scope, as in Envoy
        // (`transport_socket_matches` included); plaintext clusters have no `ssl.` stats.
        let scope = format!("cluster.{stat_name}.");
        let tls_of = |t: &UpstreamTransport| -> Result<Transport, crate::tls::TlsError> {
            Ok(Transport {
                tls: match t {
                    UpstreamTransport::Plain => None,
                    UpstreamTransport::Tls(t) => Some(Arc::new(crate::tls::ClientTls::new(
                        t,
                        secrets,
                        crate::tls::SslStats::new(store, &scope),
                    )?)),
                },
            })
        };
        let mut transports = vec![tls_of(&config.transport)?];
        for m in &config.transport_socket_matches {
            transports.push(tls_of(&m.transport)?);
        }
        let rt = ClusterRuntime {
            resources: ResourceManager::new(
                &config.circuit_breakers,
                ResourceStats::new(
                    store,
                    &format!("cluster.{stat_name}."),
                    config.circuit_breakers.track_remaining,
                ),
            ),
            outlier: config.outlier_detection.map(|od| {
                OutlierDetector::new(
                    od,
                    OutlierStats::new(store, &format!("cluster.{stat_name}.")),
                )
            }),
            hosts: ArcSwap::from_pointee(HostSet::new(Vec::new(), &LbParams::new(&config, None))),
            members: Mutex::new(Members::default()),
            transports,
            stats,
            config,
        };
        let rt = Arc::new(rt);
        match &rt.config.discovery {
            Discovery::Static(la) => rt.set_assignment(la.clone()),
            Discovery::StrictDns(_) | Discovery::LogicalDns(_) => {
                // Resolved by the cluster manager's DNS task.
            }
            _ => {}
        }
        Ok(rt)
    }

    /// The cluster's configuration.
    pub fn config(&self) -> &Arc<Cluster> {
        &self.config
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the SDS secrets of its transport sockets have all arrived (or stopped being
    /// waited for); until then the cluster warms.
    pub fn secrets_ready(&self) -> bool {
        self.transports
            .iter()
            .filter_map(|t| t.tls.as_ref())
            .all(|t| t.ready())
    }

    /// Its upstream TLS contexts (`/certs`).
    pub fn tls_contexts(&self) -> impl Iterator<Item = &crate::tls::ClientTls> {
        self.transports.iter().filter_map(|t| t.tls.as_deref())
    }

    /// Its stats.
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// Its circuit breakers.
    pub fn resources(&self) -> &ResourceManager {
        &self.resources
    }

    /// The hosts as the load balancer sees them now.
    pub fn host_set(&self) -> Arc<HostSet> {
        self.hosts.load_full()
    }

    /// The current assignment, for dumps.
    pub fn assignment(&self) -> Option<LoadAssignment> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .assignment
            .clone()
    }

    /// Applies an endpoint assignment: hosts at known addresses keep their state (pools,
    /// active requests, outlier history); weights and health are updated in place.
    pub fn set_assignment(&self, la: LoadAssignment) {
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::new();
        let mut hosts = Vec::new();
        for loc in &la.localities {
            for ep in &loc.endpoints {
                let EndpointAddress::Socket(addr) = ep.address else {
                    continue;
                };
                let spec = HostSpec {
                    address: addr,
                    hostname: ep.hostname.clone(),
                    hash_key: ep.hash_key.clone(),
                    locality: loc.locality.clone(),
                    priority: loc.priority,
                    transport_match: self.transport_match(&ep.transport_socket_match),
                    weight: ep.weight,
                    health: ep.health,
                };
                let host = match m.by_addr.get(&addr) {
                    Some(h) if h.same_identity(&spec) => {
                        h.update(&spec);
                        h.clone()
                    }
                    _ => Arc::new(Host::new(spec)),
                };
                if next.insert(addr, host.clone()).is_none() {
                    hosts.push(host);
                }
            }
        }
        let changed = next.len() != m.by_addr.len()
            || next
                .iter()
                .any(|(a, h)| m.by_addr.get(a).is_none_or(|old| !Arc::ptr_eq(old, h)));
        if changed {
            self.stats.membership_change.inc();
        }
        m.by_addr = next;
        m.assignment = Some(la);
        if let Some(od) = &self.outlier {
            od.set_hosts(&hosts);
        }
        self.rebuild(&m, hosts);
    }

    /// Sets hosts resolved by DNS (STRICT_DNS: every address; LOGICAL_DNS: the first).
    pub fn set_resolved(&self, la: LoadAssignment) {
        self.set_assignment(la);
    }

    fn rebuild(&self, m: &Members, hosts: Vec<Arc<Host>>) {
        let params = LbParams::new(&self.config, m.assignment.as_ref());
        let set = HostSet::new(hosts, &params);
        self.stats
            .membership_total
            .set(i64::try_from(set.hosts().len()).unwrap_or(i64::MAX));
        self.stats
            .membership_healthy
            .set(i64::try_from(set.healthy_count()).unwrap_or(i64::MAX));
        self.stats
            .membership_degraded
            .set(i64::try_from(set.degraded_count()).unwrap_or(i64::MAX));
        self.hosts.store(Arc::new(set));
    }

    /// Rebuilds the load balancer's view after a health change (outlier ejection).
    pub fn health_changed(&self) {
        let m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let hosts: Vec<Arc<Host>> = self.hosts.load().hosts().to_vec();
        self.rebuild(&m, hosts);
    }

    fn transport_match(&self, meta: &[(String, String)]) -> Option<usize> {
        self.config
            .transport_socket_matches
            .iter()
            .position(|m| m.match_fields.iter().all(|f| meta.contains(f)))
            .map(|i| i + 1)
    }

    /// Picks a host for a request (`None`: no healthy upstream).
    pub fn choose(&self, req: &HostRequest<'_>) -> Option<Arc<Host>> {
        match &self.config.discovery {
            Discovery::OriginalDst { .. } => req.original_dst.map(|a| self.on_demand(a)),
            Discovery::DynamicForwardProxy(_) => req.resolved.map(|a| self.on_demand(a)),
            _ => {
                let set = self.hosts.load();
                let mut ctx = LbContext {
                    hash: req.hash,
                    should_select_another: req.should_select_another,
                    host_selection_retry_max_attempts: req.host_selection_retry_max_attempts,
                };
                let h = set.choose(&mut ctx);
                if h.is_none() {
                    self.stats.cx_none_healthy.inc();
                }
                h
            }
        }
    }

    fn on_demand(&self, addr: SocketAddr) -> Arc<Host> {
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let cleanup = self.config.cleanup_interval;
        m.on_demand
            .retain(|_, (h, used)| now.duration_since(*used) < cleanup || h.active_requests() > 0);
        let entry = m.on_demand.entry(addr).or_insert_with(|| {
            (
                Arc::new(Host::new(HostSpec {
                    address: addr,
                    hostname: String::new(),
                    hash_key: None,
                    locality: Default::default(),
                    priority: 0,
                    transport_match: None,
                    weight: 1,
                    health: Default::default(),
                })),
                now,
            )
        });
        entry.1 = now;
        entry.0.clone()
    }

    /// Reports an attempt's outcome to outlier detection.
    pub fn report(&self, host: &Arc<Host>, outcome: &Outcome<'_>) {
        if let Some(od) = &self.outlier
            && od.report(host, outcome)
        {
            self.health_changed();
        }
    }

    /// Runs outlier detection's interval work; true when host health changed.
    pub fn outlier_tick(&self) {
        if let Some(od) = &self.outlier
            && od.tick(tokio::time::Instant::now())
        {
            self.health_changed();
        }
    }

    /// Outlier detection's interval, if enabled.
    pub fn outlier_interval(&self) -> Option<Duration> {
        self.config.outlier_detection.map(|o| o.interval)
    }

    /// Sends a request to `host`. `downstream` is the downstream request's version (for
    /// `use_downstream_protocol_config`); `sni` the server name when `auto_sni` applies.
    pub async fn send(
        &self,
        host: &Arc<Host>,
        req: Request<Body>,
        downstream: Version,
    ) -> Result<Response<PooledBody>, SendError> {
        let protocol = match self.config.http.protocol {
            UpstreamProtocol::Http1 => PoolProtocol::Http1,
            UpstreamProtocol::Http2 => PoolProtocol::Http2,
            UpstreamProtocol::Downstream if downstream == Version::HTTP_2 => PoolProtocol::Http2,
            UpstreamProtocol::Downstream => PoolProtocol::Http1,
            UpstreamProtocol::Auto => PoolProtocol::Http1,
        };
        let ti = host.transport_match().unwrap_or(0);
        let tls = self
            .transports
            .get(ti)
            .and_then(|t| t.tls.as_ref())
            .map(|t| t.settings());
        let sni = tls.and_then(|t| {
            if t.auto_sni {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| req.uri().host())
                    .map(|h| h.split(':').next().unwrap_or(h).to_string())
            } else if t.sni.is_empty() {
                None
            } else {
                Some(t.sni.clone())
            }
        });
        let pool = host.pools().get(protocol, sni.as_deref(), || {
            self.connect_params(ti, protocol, sni.as_deref())
        });
        let admission = ClusterAdmission(&self.resources);
        pool.send(host.address(), &admission, req).await
    }

    fn connect_params(
        &self,
        transport: usize,
        protocol: PoolProtocol,
        sni: Option<&str>,
    ) -> ConnectParams {
        let c = &self.config;
        let tls = self
            .transports
            .get(transport)
            .and_then(|t| t.tls.as_ref())
            .and_then(|t| {
                let alpn: Option<&[&str]> = if t.settings().common.alpn.is_empty() {
                    match protocol {
                        PoolProtocol::Http2 => Some(&["h2"]),
                        PoolProtocol::Http1 => None,
                    }
                } else {
                    None
                };
                tls_connect(t, alpn, sni)
            });
        ConnectParams {
            connect_timeout: c.connect_timeout,
            bind: c.upstream_bind,
            keepalive: c.tcp_keepalive,
            tls,
            idle_timeout: c.http.idle_timeout,
            max_requests_per_connection: c.http.max_requests_per_connection,
            max_connection_duration: c.http.max_connection_duration,
            http2: c.http.http2,
            stats: self.stats.pool.clone(),
        }
    }

    /// Starts a request (`upstream_rq_total`, `upstream_rq_active`, `max_requests`); `None`
    /// when the breaker is open (`upstream_rq_pending_overflow`, as Envoy counts it).
    pub fn start_request(&self) -> Option<RequestGuard> {
        let Some(permit) = self.resources.try_acquire_request() else {
            self.stats.pool.rq_pending_overflow.inc();
            return None;
        };
        self.stats.rq_total.inc();
        self.stats.rq_active.inc();
        Some(RequestGuard {
            _permit: Box::new(permit),
            active: self.stats.rq_active.clone(),
            completed: self.stats.rq_completed.clone(),
        })
    }

    /// Opens a connection to a host for the TCP proxy (`max_connections` applies), with the
    /// host's transport socket (TLS when its `transport_socket_matches` entry, or the
    /// cluster's socket, says so; ALPN and SNI from the context).
    pub async fn connect_tcp(
        &self,
        host: &Arc<Host>,
    ) -> Result<(Box<dyn UpstreamIo>, Permit), Failure> {
        let Some(permit) = self.resources.try_acquire_connection() else {
            self.stats.pool.cx_overflow.inc();
            return Err(Failure::Overflow);
        };
        let addr = host.address();
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|_| Failure::ConnectFailure)?;
        if let Some(b) = self.config.upstream_bind {
            socket.bind(b).map_err(|_| Failure::ConnectFailure)?;
        }
        match tokio::time::timeout(self.config.connect_timeout, socket.connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                self.stats.pool.cx_total.inc();
                self.stats.pool.cx_active.inc();
                let permit: Permit = Box::new(TcpPermit {
                    _permit: Box::new(permit),
                    active: self.stats.pool.cx_active.clone(),
                    destroy: self.stats.pool.cx_destroy.clone(),
                });
                let ti = host.transport_match().unwrap_or(0);
                let Some(tls) = self.transports.get(ti).and_then(|t| t.tls.as_ref()) else {
                    return Ok((Box::new(s), permit));
                };
                let sni = Some(tls.settings().sni.as_str()).filter(|s| !s.is_empty());
                let Some(c) = tls_connect(tls, None, sni) else {
                    self.stats.pool.cx_connect_fail.inc();
                    return Err(Failure::ConnectFailure);
                };
                match tokio::time::timeout(
                    self.config.connect_timeout,
                    c.connector.connect(c.name, s),
                )
                .await
                {
                    Ok(Ok(t)) => {
                        c.stats.succeeded(t.get_ref().1);
                        Ok((Box::new(t), permit))
                    }
                    Ok(Err(e)) => {
                        c.stats.failed(&e);
                        tracing::debug!(%addr, "upstream TLS handshake failed: {e}");
                        self.stats.pool.cx_connect_fail.inc();
                        Err(Failure::ConnectFailure)
                    }
                    Err(_) => {
                        self.stats.pool.cx_connect_timeout.inc();
                        self.stats.pool.cx_connect_fail.inc();
                        Err(Failure::ConnectTimeout)
                    }
                }
            }
            Ok(Err(_)) => {
                self.stats.pool.cx_connect_fail.inc();
                Err(Failure::ConnectFailure)
            }
            Err(_) => {
                self.stats.pool.cx_connect_timeout.inc();
                self.stats.pool.cx_connect_fail.inc();
                Err(Failure::ConnectTimeout)
            }
        }
    }

    /// Whether the cluster needs an assignment before it can serve (EDS).
    pub fn needs_assignment(&self) -> bool {
        matches!(self.config.discovery, Discovery::Eds { .. })
    }

    /// Removes this cluster's stats (it was removed).
    pub fn remove_stats(&self, store: &Store) {
        store.remove_prefix(&self.stats.prefix);
    }
}

/// How to open TLS to a host: the connector, the server name (the SNI, else an IP that
/// sends none) and the stats.
fn tls_connect(
    t: &crate::tls::ClientTls,
    alpn: Option<&[&str]>,
    sni: Option<&str>,
) -> Option<super::pool::TlsConnect> {
    let cfg = match t.config(alpn, sni) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("upstream TLS context unusable: {e}");
            return None;
        }
    };
    let name = sni
        .and_then(|s| rustls_pki_types::ServerName::try_from(s.to_string()).ok())
        .unwrap_or_else(|| {
            rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into())
        });
    Some(super::pool::TlsConnect {
        connector: tokio_rustls::TlsConnector::from(cfg),
        name,
        stats: t.stats.clone(),
    })
}

/// A TCP proxy's upstream connection: plaintext or TLS.
pub trait UpstreamIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> UpstreamIo for T {}

/// An upstream request in flight on a cluster.
pub struct RequestGuard {
    _permit: Permit,
    active: Gauge,
    completed: Counter,
}

impl std::fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestGuard")
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.active.dec();
        self.completed.inc();
    }
}

struct TcpPermit {
    _permit: Permit,
    active: Gauge,
    destroy: Counter,
}

impl Drop for TcpPermit {
    fn drop(&mut self) {
        self.active.dec();
        self.destroy.inc();
    }
}

struct ClusterAdmission<'a>(&'a ResourceManager);

impl Admission for ClusterAdmission<'_> {
    fn connection(&self) -> Option<Permit> {
        self.0
            .try_acquire_connection()
            .map(|p| Box::new(p) as Permit)
    }

    fn pending(&self) -> Option<Permit> {
        self.0
            .try_acquire_pending_request()
            .map(|p| Box::new(p) as Permit)
    }
}
