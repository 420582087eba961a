//! Outlier detection for one cluster, with Envoy's semantics
//! (`source/common/upstream/outlier_detection_impl.cc`).
//!
//! **What is counted.** Every attempt's outcome is [reported](OutlierDetector::report) for the
//! host it went to, the way Envoy's router reports it:
//! - a response counts as its status code (for a gRPC response, `grpc-status` from the
//!   headers mapped to HTTP: 14 → 503, 4 → 504, 13 → 500, ...); it also means the connection
//!   succeeded;
//! - a per-try timeout counts as 504, after a successful connection;
//! - a reset, connection termination, refused stream or protocol error counts as 503 (Envoy's
//!   `LocalOriginConnectFailed`), after a successful connection;
//! - a connect failure or timeout counts as 503, with no successful connection;
//! - a circuit-breaker overflow or "no healthy upstream" is not counted (it says nothing
//!   about the host).
//!
//! Without `split_external_local_origin_errors`, local-origin failures are those HTTP codes,
//! so they count in the 5xx and gateway-failure streaks. With it, they only feed the
//! consecutive local-origin detector, and each successful connection resets that streak (so in
//! practice it counts connection failures).
//!
//! **Consecutive detectors** run inline: the report that makes a streak reach its threshold
//! (exactly; a streak past it does not fire again) counts `ejections_detected_*`, asks for an
//! ejection and resets that streak, unless the host is already ejected.
//!
//! **An ejection** happens only if `100 × (ejected + 1) / hosts ≤ max_ejection_percent` (with
//! `always_eject_one_host`, also whenever nothing is ejected); otherwise `ejections_overflow`.
//! With 2 hosts and the default 10%, nothing is ever ejected. Then the detector's
//! `enforcing_*` percentage is drawn: on success the host is ejected (`ejections_enforced_*`,
//! `ejections_active`), its ejection multiplier grows by one (while `base × multiplier <
//! max_ejection_time + base`), and it stays out for `min(base × multiplier,
//! max_ejection_time)`.
//!
//! **Each interval** ([`OutlierDetector::tick`]): hosts whose time is up come back (their
//! streaks reset); the success-rate and failure-percentage detectors run over the last
//! interval's counts; and the multiplier of every host that is in and came back at least one
//! interval ago drops by one. Hosts only come back on a tick, so an ejection lasts until the
//! first tick at or after its end.
//!
//! **Success rate**: with at least `success_rate_minimum_hosts` hosts that each had
//! `success_rate_request_volume` requests in the last interval, a host whose success rate is
//! below `mean − stdev × success_rate_stdev_factor / 1000` is an outlier. **Failure
//! percentage**: with `failure_percentage_minimum_hosts` hosts that each had
//! `failure_percentage_request_volume` requests, a host failing `failure_percentage_threshold`
//! percent or more is one. Both run for external outcomes and, in split mode, for
//! local-origin ones.
//!
//! The hot path ([`OutlierDetector::report`]) is a lock-free map lookup and a few atomic
//! increments; only a detection takes the detector's lock.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::host::Host;
use crate::classify::{Failure, Outcome};
use crate::config::cluster::OutlierDetection;
use crate::stats::{Counter, Gauge, Store};

/// Why a host is ejected (`envoy.data.cluster.v3.OutlierEjectionType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EjectionType {
    /// `consecutive_5xx`.
    Consecutive5xx,
    /// `consecutive_gateway_failure`.
    ConsecutiveGatewayFailure,
    /// `consecutive_local_origin_failure` (split mode).
    ConsecutiveLocalOriginFailure,
    /// Success rate of external outcomes.
    SuccessRate,
    /// Success rate of local-origin outcomes (split mode).
    SuccessRateLocalOrigin,
    /// Failure percentage of external outcomes.
    FailurePercentage,
    /// Failure percentage of local-origin outcomes (split mode).
    FailurePercentageLocalOrigin,
}

impl EjectionType {
    const ALL: [EjectionType; 7] = [
        EjectionType::Consecutive5xx,
        EjectionType::ConsecutiveGatewayFailure,
        EjectionType::ConsecutiveLocalOriginFailure,
        EjectionType::SuccessRate,
        EjectionType::SuccessRateLocalOrigin,
        EjectionType::FailurePercentage,
        EjectionType::FailurePercentageLocalOrigin,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The stat name suffix (`ejections_detected_<suffix>`).
    fn stat_suffix(self) -> &'static str {
        match self {
            EjectionType::Consecutive5xx => "consecutive_5xx",
            EjectionType::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            EjectionType::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
            EjectionType::SuccessRate => "success_rate",
            EjectionType::SuccessRateLocalOrigin => "local_origin_success_rate",
            EjectionType::FailurePercentage => "failure_percentage",
            EjectionType::FailurePercentageLocalOrigin => "local_origin_failure_percentage",
        }
    }
}

/// What an upstream user reports about a host (`Upstream::Outlier::Result`), for callers that
/// know more than an [`Outcome`] says (a TCP proxy, or a router that reports the pool's
/// connection events itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlierResult {
    /// A non-HTTP transaction completed (counts as 200).
    ExtOriginRequestSuccess,
    /// A non-HTTP transaction failed on the server (counts as 500, or 503 in split mode).
    ExtOriginRequestFailed,
    /// Connected; a higher protocol follows (not an HTTP code).
    LocalOriginConnectSuccess,
    /// Connected, and that is all the protocol does (TCP proxy; counts as 200).
    LocalOriginConnectSuccessFinal,
    /// Timed out (counts as 504).
    LocalOriginTimeout,
    /// Could not connect, or the stream broke (counts as 503).
    LocalOriginConnectFailed,
}

/// Outlier detection stats (`cluster.NAME.outlier_detection.`).
#[derive(Clone, Debug, Default)]
pub struct OutlierStats {
    /// `ejections_active`: hosts ejected now.
    pub ejections_active: Gauge,
    /// `ejections_enforced_total`.
    pub ejections_enforced_total: Counter,
    /// `ejections_overflow`: ejections refused by `max_ejection_percent`.
    pub ejections_overflow: Counter,
    /// `ejections_total` (deprecated; consecutive 5xx and success rate, enforced or not).
    pub ejections_total: Counter,
    /// `ejections_consecutive_5xx` (deprecated; consecutive 5xx detections).
    pub ejections_consecutive_5xx: Counter,
    /// `ejections_success_rate` (deprecated; success-rate detections).
    pub ejections_success_rate: Counter,
    /// `ejections_detected_*`, in [`EjectionType`] order.
    detected: [Counter; 7],
    /// `ejections_enforced_*`, in [`EjectionType`] order.
    enforced: [Counter; 7],
}

impl OutlierStats {
    /// The stats under `prefix` (`cluster.NAME.`) in `store`.
    pub fn new(store: &Store, prefix: &str) -> OutlierStats {
        let p = format!("{prefix}outlier_detection.");
        OutlierStats {
            ejections_active: store.gauge(format!("{p}ejections_active")),
            ejections_enforced_total: store.counter(format!("{p}ejections_enforced_total")),
            ejections_overflow: store.counter(format!("{p}ejections_overflow")),
            ejections_total: store.counter(format!("{p}ejections_total")),
            ejections_consecutive_5xx: store.counter(format!("{p}ejections_consecutive_5xx")),
            ejections_success_rate: store.counter(format!("{p}ejections_success_rate")),
            detected: EjectionType::ALL
                .map(|t| store.counter(format!("{p}ejections_detected_{}", t.stat_suffix()))),
            enforced: EjectionType::ALL
                .map(|t| store.counter(format!("{p}ejections_enforced_{}", t.stat_suffix()))),
        }
    }

    /// `ejections_detected_<type>`.
    pub fn detected(&self, t: EjectionType) -> &Counter {
        &self.detected[t.index()]
    }

    /// `ejections_enforced_<type>`.
    pub fn enforced(&self, t: EjectionType) -> &Counter {
        &self.enforced[t.index()]
    }
}

/// The outlier detector of one cluster (see the module docs).
pub struct OutlierDetector {
    config: OutlierDetection,
    stats: OutlierStats,
    monitors: ArcSwap<Monitors>,
    /// Serialises ejection decisions and host-set changes.
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    random: Box<dyn Fn() -> u64 + Send + Sync>,
}

#[derive(Default)]
struct Monitors {
    list: Vec<Arc<HostMonitor>>,
    /// Host pointer → index in `list`.
    index: HashMap<usize, usize>,
}

impl Monitors {
    fn get(&self, host: &Arc<Host>) -> Option<&Arc<HostMonitor>> {
        self.index
            .get(&host_key(host))
            .and_then(|&i| self.list.get(i))
    }
}

fn host_key(host: &Arc<Host>) -> usize {
    Arc::as_ptr(host) as usize
}

#[derive(Default)]
struct State {
    ejected: usize,
    /// `(average, ejection threshold)` of the last success-rate run, external and local
    /// (`-1` when it did not run).
    success_rate: [(f64, f64); 2],
}

/// Which success-rate monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    External = 0,
    Local = 1,
}

struct HostMonitor {
    host: Arc<Host>,
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failure: AtomicU32,
    consecutive_local_origin_failure: AtomicU32,
    /// External and local-origin success-rate monitors.
    success_rate: [SuccessRateMonitor; 2],
    /// Ejection bookkeeping; only changed with the detector's state lock held.
    ejection: Mutex<Ejection>,
}

struct Ejection {
    num_ejections: u32,
    /// The ejection time multiplier.
    backoff: u32,
    last_ejection: Option<Instant>,
    last_unejection: Option<Instant>,
    /// The last valid success rate, external and local (`None` when not enough requests).
    success_rate: [Option<f64>; 2],
}

/// Two buckets: one written during the interval, one read at its end.
#[derive(Default)]
struct SuccessRateMonitor {
    buckets: [Bucket; 2],
    current: AtomicUsize,
}

#[derive(Default)]
struct Bucket {
    success: AtomicU64,
    total: AtomicU64,
}

impl SuccessRateMonitor {
    fn writer(&self) -> &Bucket {
        &self.buckets[self.current.load(Ordering::Acquire) & 1]
    }

    fn inc_total(&self) {
        self.writer().total.fetch_add(1, Ordering::Relaxed);
    }

    fn inc_success(&self) {
        self.writer().success.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends the interval: the written bucket becomes the one read, the other is cleared and
    /// written next.
    fn swap(&self) {
        let next = (self.current.load(Ordering::Acquire) + 1) & 1;
        self.buckets[next].success.store(0, Ordering::Relaxed);
        self.buckets[next].total.store(0, Ordering::Relaxed);
        self.current.store(next, Ordering::Release);
    }

    /// `(success rate in percent, requests)` of the last interval, if it had any.
    fn rate_and_volume(&self) -> Option<(f64, u64)> {
        let read = &self.buckets[(self.current.load(Ordering::Acquire) + 1) & 1];
        let total = read.total.load(Ordering::Relaxed);
        (total > 0).then(|| {
            let success = read.success.load(Ordering::Relaxed);
            (success as f64 * 100.0 / total as f64, total)
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HostMonitor {
    fn new(host: Arc<Host>) -> HostMonitor {
        HostMonitor {
            host,
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failure: AtomicU32::new(0),
            consecutive_local_origin_failure: AtomicU32::new(0),
            success_rate: Default::default(),
            ejection: Mutex::new(Ejection {
                num_ejections: 0,
                backoff: 0,
                last_ejection: None,
                last_unejection: None,
                success_rate: [None; 2],
            }),
        }
    }

    fn reset_streak(&self, t: EjectionType) {
        let counter = match t {
            EjectionType::Consecutive5xx => &self.consecutive_5xx,
            EjectionType::ConsecutiveGatewayFailure => &self.consecutive_gateway_failure,
            EjectionType::ConsecutiveLocalOriginFailure => &self.consecutive_local_origin_failure,
            _ => return,
        };
        counter.store(0, Ordering::Relaxed);
    }
}

/// `Grpc::Utility::grpcToHttpStatus`.
fn grpc_to_http(status: u32) -> u16 {
    match status {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// The code Envoy reports for a response: `grpc-status` from the headers for gRPC responses
/// (`application/grpc*`), else the status.
fn response_code(outcome: &Outcome<'_>) -> Option<u16> {
    let Outcome::Response { status, headers } = outcome else {
        return None;
    };
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    Some(match outcome.grpc_status() {
        Some(code) if grpc => grpc_to_http(code),
        _ => status.as_u16(),
    })
}

impl OutlierDetector {
    /// A detector with `config`, publishing to `stats`. It tracks no host until
    /// [`OutlierDetector::set_hosts`].
    pub fn new(config: OutlierDetection, stats: OutlierStats) -> OutlierDetector {
        let (changes, _) = watch::channel(0);
        OutlierDetector {
            config,
            stats,
            monitors: ArcSwap::from_pointee(Monitors::default()),
            state: Mutex::new(State {
                ejected: 0,
                success_rate: [(-1.0, -1.0); 2],
            }),
            changes,
            random: Box::new(|| fastrand::u64(..)),
        }
    }

    /// Replaces the random source of the `enforcing_*` draws (for deterministic tests).
    #[must_use]
    pub fn with_random(mut self, random: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.random = Box::new(random);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierDetection {
        &self.config
    }

    /// The stats.
    pub fn stats(&self) -> &OutlierStats {
        &self.stats
    }

    /// A receiver whose value changes whenever a host is ejected or comes back, for the
    /// cluster to rebuild its load-balancing host set.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Tracks exactly `hosts` (all priorities): new ones start clean, kept ones keep their
    /// state, removed ones are forgotten (an ejected one leaves `ejections_active` and loses
    /// its ejected flag).
    pub fn set_hosts(&self, hosts: &[Arc<Host>]) {
        let mut state = lock(&self.state);
        let old = self.monitors.load_full();
        let mut list = Vec::with_capacity(hosts.len());
        let mut index = HashMap::with_capacity(hosts.len());
        for host in hosts {
            let key = host_key(host);
            if index.contains_key(&key) {
                continue;
            }
            let monitor = old
                .get(host)
                .cloned()
                .unwrap_or_else(|| Arc::new(HostMonitor::new(host.clone())));
            index.insert(key, list.len());
            list.push(monitor);
        }
        let mut changed = false;
        for m in &old.list {
            if !index.contains_key(&host_key(&m.host)) && m.host.is_ejected() {
                state.ejected = state.ejected.saturating_sub(1);
                m.host.set_ejected(false);
                changed = true;
            }
        }
        self.stats.ejections_active.set(gauge_value(state.ejected));
        self.monitors.store(Arc::new(Monitors { list, index }));
        drop(state);
        if changed {
            self.changed();
        }
    }

    /// Reports an attempt's outcome on `host` (see the module docs for how each outcome
    /// counts). Returns whether it ejected the host.
    pub fn report(&self, host: &Arc<Host>, outcome: &Outcome<'_>) -> bool {
        use OutlierResult::*;
        let monitors = self.monitors.load();
        let Some(m) = monitors.get(host) else {
            return false;
        };
        if let Some(code) = response_code(outcome) {
            self.put_result(m, LocalOriginConnectSuccess, None);
            return self.put_http_code(m, code);
        }
        let (connected, result, code) = match outcome {
            Outcome::Response { .. } => return false,
            Outcome::Failure(Failure::Overflow | Failure::NoHealthyUpstream) => return false,
            Outcome::Failure(Failure::ConnectFailure | Failure::ConnectTimeout) => {
                (false, LocalOriginConnectFailed, None)
            }
            Outcome::Failure(Failure::PerTryTimeout) => (true, LocalOriginTimeout, Some(504)),
            Outcome::Failure(
                Failure::Reset { .. }
                | Failure::ConnectionTermination { .. }
                | Failure::RefusedStream
                | Failure::ProtocolError,
            ) => (true, LocalOriginConnectFailed, None),
        };
        if connected {
            self.put_result(m, LocalOriginConnectSuccess, None);
        }
        self.put_result(m, result, code)
    }

    /// Reports an HTTP status code on `host` (Envoy's `putHttpResponseCode`, which counts in
    /// the external streaks whatever the split mode). Returns whether it ejected the host.
    pub fn report_http_code(&self, host: &Arc<Host>, code: u16) -> bool {
        let monitors = self.monitors.load();
        monitors
            .get(host)
            .is_some_and(|m| self.put_http_code(m, code))
    }

    /// Reports a result on `host` (Envoy's `putResult`); `code` is the HTTP code to count
    /// instead, outside split mode. Returns whether it ejected the host.
    pub fn report_result(
        &self,
        host: &Arc<Host>,
        result: OutlierResult,
        code: Option<u16>,
    ) -> bool {
        let monitors = self.monitors.load();
        monitors
            .get(host)
            .is_some_and(|m| self.put_result(m, result, code))
    }

    fn put_result(&self, m: &Arc<HostMonitor>, result: OutlierResult, code: Option<u16>) -> bool {
        use OutlierResult::*;
        if !self.config.split_external_local_origin_errors {
            let code = code.or(match result {
                ExtOriginRequestSuccess | LocalOriginConnectSuccessFinal => Some(200),
                LocalOriginTimeout => Some(504),
                LocalOriginConnectFailed => Some(503),
                ExtOriginRequestFailed => Some(500),
                LocalOriginConnectSuccess => None,
            });
            return code.is_some_and(|c| self.put_http_code(m, c));
        }
        match result {
            LocalOriginConnectSuccess | LocalOriginConnectSuccessFinal => {
                self.local_origin_success(m);
                false
            }
            LocalOriginTimeout | LocalOriginConnectFailed => self.local_origin_failure(m),
            ExtOriginRequestFailed => self.put_http_code(m, 503),
            ExtOriginRequestSuccess => {
                let ejected = self.put_http_code(m, 200);
                self.local_origin_success(m);
                ejected
            }
        }
    }

    fn put_http_code(&self, m: &Arc<HostMonitor>, code: u16) -> bool {
        let external = &m.success_rate[Origin::External as usize];
        external.inc_total();
        if !(500..600).contains(&code) {
            external.inc_success();
            m.consecutive_5xx.store(0, Ordering::Relaxed);
            m.consecutive_gateway_failure.store(0, Ordering::Relaxed);
            return false;
        }
        let mut ejected = false;
        if matches!(code, 502..=504) {
            let n = m
                .consecutive_gateway_failure
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if n == self.config.consecutive_gateway_failure {
                ejected |= self.on_consecutive(m, EjectionType::ConsecutiveGatewayFailure);
            }
        } else {
            m.consecutive_gateway_failure.store(0, Ordering::Relaxed);
        }
        let n = m.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.config.consecutive_5xx {
            ejected |= self.on_consecutive(m, EjectionType::Consecutive5xx);
        }
        ejected
    }

    fn local_origin_failure(&self, m: &Arc<HostMonitor>) -> bool {
        m.success_rate[Origin::Local as usize].inc_total();
        let n = m
            .consecutive_local_origin_failure
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        n == self.config.consecutive_local_origin_failure
            && self.on_consecutive(m, EjectionType::ConsecutiveLocalOriginFailure)
    }

    fn local_origin_success(&self, m: &HostMonitor) {
        let local = &m.success_rate[Origin::Local as usize];
        local.inc_total();
        local.inc_success();
        m.consecutive_local_origin_failure
            .store(0, Ordering::Relaxed);
    }

    /// A streak reached its threshold (Envoy's `onConsecutiveErrorWorker`).
    fn on_consecutive(&self, m: &Arc<HostMonitor>, t: EjectionType) -> bool {
        let mut state = lock(&self.state);
        // The host may have left the cluster, or been ejected by another report meanwhile.
        let tracked = self
            .monitors
            .load()
            .get(&m.host)
            .is_some_and(|cur| Arc::ptr_eq(cur, m));
        if !tracked || m.host.is_ejected() {
            return false;
        }
        self.stats.detected(t).inc();
        let ejected = self.eject(&mut state, m, t, Instant::now());
        if t == EjectionType::Consecutive5xx {
            self.stats.ejections_consecutive_5xx.inc();
        }
        m.reset_streak(t);
        drop(state);
        if ejected {
            self.changed();
        }
        ejected
    }

    fn enforcing(&self, t: EjectionType) -> u32 {
        let c = &self.config;
        match t {
            EjectionType::Consecutive5xx => c.enforcing_consecutive_5xx,
            EjectionType::ConsecutiveGatewayFailure => c.enforcing_consecutive_gateway_failure,
            EjectionType::ConsecutiveLocalOriginFailure => {
                c.enforcing_consecutive_local_origin_failure
            }
            EjectionType::SuccessRate => c.enforcing_success_rate,
            EjectionType::FailurePercentage => c.enforcing_failure_percentage,
            // Not in the runtime config: Envoy's defaults.
            EjectionType::SuccessRateLocalOrigin => 100,
            EjectionType::FailurePercentageLocalOrigin => 0,
        }
    }

    /// Envoy's `ejectHost`: the `max_ejection_percent` check, then the enforcing draw.
    fn eject(&self, state: &mut State, m: &HostMonitor, t: EjectionType, now: Instant) -> bool {
        let hosts = self.monitors.load().list.len().max(1);
        let max_percent = f64::from(self.config.max_ejection_percent.min(100));
        let percent = 100.0 * (state.ejected + 1) as f64 / hosts as f64;
        let mut allowed = percent <= max_percent;
        if self.config.always_eject_one_host {
            allowed |= state.ejected == 0;
        }
        if !allowed {
            self.stats.ejections_overflow.inc();
            return false;
        }
        if matches!(t, EjectionType::Consecutive5xx | EjectionType::SuccessRate) {
            self.stats.ejections_total.inc();
        }
        if (self.random)() % 100 >= u64::from(self.enforcing(t)) {
            return false;
        }
        state.ejected += 1;
        self.stats.ejections_active.set(gauge_value(state.ejected));
        self.stats.ejections_enforced_total.inc();
        self.stats.enforced(t).inc();
        m.host.set_ejected(true);
        let mut e = lock(&m.ejection);
        e.num_ejections += 1;
        e.last_ejection = Some(now);
        let base = self.config.base_ejection_time;
        if base.saturating_mul(e.backoff) < self.config.max_ejection_time.saturating_add(base) {
            e.backoff += 1;
        }
        true
    }

    fn uneject(&self, state: &mut State, m: &HostMonitor, now: Instant) {
        state.ejected = state.ejected.saturating_sub(1);
        self.stats.ejections_active.set(gauge_value(state.ejected));
        m.host.set_ejected(false);
        m.consecutive_5xx.store(0, Ordering::Relaxed);
        m.consecutive_gateway_failure.store(0, Ordering::Relaxed);
        m.consecutive_local_origin_failure
            .store(0, Ordering::Relaxed);
        lock(&m.ejection).last_unejection = Some(now);
    }

    /// Brings an ejected host back at once (a successful active health check, with
    /// `successful_active_health_check_uneject_host`). Returns whether it was ejected.
    pub fn uneject_host(&self, host: &Arc<Host>) -> bool {
        let mut state = lock(&self.state);
        let monitors = self.monitors.load();
        let Some(m) = monitors.get(host) else {
            return false;
        };
        if !m.host.is_ejected() {
            return false;
        }
        self.uneject(&mut state, m, Instant::now());
        drop(state);
        self.changed();
        true
    }

    /// The interval's work (see the module docs); the cluster calls it every `interval`
    /// ([`OutlierDetector::spawn`] does). Returns whether any host was ejected or came back.
    pub fn tick(&self, now: Instant) -> bool {
        let mut state = lock(&self.state);
        let monitors = self.monitors.load_full();
        let mut changed = false;
        for m in &monitors.list {
            changed |= self.check_uneject(&mut state, m, now);
            for sr in &m.success_rate {
                sr.swap();
            }
            lock(&m.ejection).success_rate = [None; 2];
        }
        changed |= self.success_rate_ejections(&mut state, &monitors, Origin::External, now);
        changed |= self.success_rate_ejections(&mut state, &monitors, Origin::Local, now);
        for m in &monitors.list {
            if m.host.is_ejected() {
                continue;
            }
            let mut e = lock(&m.ejection);
            let healthy_for_an_interval = e
                .last_unejection
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.interval);
            if healthy_for_an_interval && e.backoff > 0 {
                e.backoff -= 1;
            }
        }
        drop(state);
        if changed {
            self.changed();
        }
        changed
    }

    fn check_uneject(&self, state: &mut State, m: &HostMonitor, now: Instant) -> bool {
        if !m.host.is_ejected() {
            return false;
        }
        let (last, backoff) = {
            let e = lock(&m.ejection);
            match e.last_ejection {
                Some(last) => (last, e.backoff),
                // Flagged by someone else: not ours to bring back.
                None => return false,
            }
        };
        let ejection_time = self
            .config
            .base_ejection_time
            .saturating_mul(backoff)
            .min(self.config.max_ejection_time);
        if ejection_time > now.saturating_duration_since(last) {
            return false;
        }
        self.uneject(state, m, now);
        true
    }

    /// Envoy's `processSuccessRateEjections` for one origin.
    fn success_rate_ejections(
        &self,
        state: &mut State,
        monitors: &Monitors,
        origin: Origin,
        now: Instant,
    ) -> bool {
        let c = &self.config;
        let (sr_hosts, sr_volume) = (
            c.success_rate_minimum_hosts as usize,
            u64::from(c.success_rate_request_volume),
        );
        let (fp_hosts, fp_volume) = (
            c.failure_percentage_minimum_hosts as usize,
            u64::from(c.failure_percentage_request_volume),
        );
        state.success_rate[origin as usize] = (-1.0, -1.0);
        if monitors.list.len() < sr_hosts && monitors.list.len() < fp_hosts {
            return false;
        }
        let mut sr_valid: Vec<(&Arc<HostMonitor>, f64)> = Vec::new();
        let mut fp_valid: Vec<(&Arc<HostMonitor>, f64)> = Vec::new();
        let mut sum = 0.0;
        for m in &monitors.list {
            if m.host.is_ejected() {
                continue;
            }
            let Some((rate, volume)) = m.success_rate[origin as usize].rate_and_volume() else {
                continue;
            };
            if volume >= sr_volume.min(fp_volume) {
                lock(&m.ejection).success_rate[origin as usize] = Some(rate);
            }
            if volume >= sr_volume {
                sr_valid.push((m, rate));
                sum += rate;
            }
            if volume >= fp_volume {
                fp_valid.push((m, rate));
            }
        }
        let mut changed = false;
        if !sr_valid.is_empty() && sr_valid.len() >= sr_hosts {
            let n = sr_valid.len() as f64;
            let mean = sum / n;
            let variance = sr_valid
                .iter()
                .map(|(_, r)| (r - mean).powi(2))
                .sum::<f64>()
                / n;
            let factor = f64::from(c.success_rate_stdev_factor) / 1000.0;
            let threshold = mean - factor * variance.sqrt();
            state.success_rate[origin as usize] = (mean, threshold);
            let t = match origin {
                Origin::External => EjectionType::SuccessRate,
                Origin::Local => EjectionType::SuccessRateLocalOrigin,
            };
            for (m, rate) in &sr_valid {
                if *rate < threshold {
                    self.stats.ejections_success_rate.inc();
                    self.stats.detected(t).inc();
                    changed |= self.eject(state, m, t, now);
                }
            }
        }
        if !fp_valid.is_empty() && fp_valid.len() >= fp_hosts {
            let threshold = f64::from(c.failure_percentage_threshold);
            let t = match origin {
                Origin::External => EjectionType::FailurePercentage,
                Origin::Local => EjectionType::FailurePercentageLocalOrigin,
            };
            for (m, rate) in &fp_valid {
                // A host the success-rate pass just ejected is not ejected twice (Envoy
                // asserts against it).
                if 100.0 - rate >= threshold && !m.host.is_ejected() {
                    self.stats.detected(t).inc();
                    changed |= self.eject(state, m, t, now);
                }
            }
        }
        changed
    }

    /// Runs [`OutlierDetector::tick`] every `interval` on the current runtime until the
    /// detector is dropped (Envoy re-arms its timer after each run).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<OutlierDetector> = Arc::downgrade(self);
        let interval = self.config.interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(detector) = weak.upgrade() else {
                    return;
                };
                detector.tick(Instant::now());
            }
        })
    }

    /// Hosts ejected now.
    pub fn ejected_count(&self) -> usize {
        lock(&self.state).ejected
    }

    /// How many times `host` was ejected, and its current ejection multiplier.
    pub fn ejections(&self, host: &Arc<Host>) -> Option<(u32, u32)> {
        let monitors = self.monitors.load();
        let m = monitors.get(host)?;
        let e = lock(&m.ejection);
        Some((e.num_ejections, e.backoff))
    }

    /// `host`'s success rate over the last interval (`local` for local-origin outcomes), when
    /// it had enough requests (for `/clusters`).
    pub fn success_rate(&self, host: &Arc<Host>, local: bool) -> Option<f64> {
        let monitors = self.monitors.load();
        let m = monitors.get(host)?;
        lock(&m.ejection).success_rate[usize::from(local)]
    }

    /// The cluster's average success rate and ejection threshold from the last interval, when
    /// the success-rate detector ran.
    pub fn success_rate_threshold(&self, local: bool) -> Option<(f64, f64)> {
        let (mean, threshold) = lock(&self.state).success_rate[usize::from(local)];
        (mean >= 0.0).then_some((mean, threshold))
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl fmt::Debug for OutlierDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierDetector")
            .field("config", &self.config)
            .field("hosts", &self.monitors.load().list.len())
            .field("ejected", &self.ejected_count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::host::HostSpec;
    use crate::config::endpoint::{HealthStatus, Locality};
    use http::{HeaderMap, StatusCode};

    fn host(port: u16) -> Arc<Host> {
        Arc::new(Host::new(HostSpec {
            address: ([127, 0, 0, 1], port).into(),
            hostname: String::new(),
            hash_key: None,
            locality: Locality::default(),
            priority: 0,
            transport_match: None,
            weight: 1,
            health: HealthStatus::Healthy,
        }))
    }

    fn hosts(n: u16) -> Vec<Arc<Host>> {
        (0..n).map(|i| host(8000 + i)).collect()
    }

    /// C7's configuration: 3 consecutive 5xx, 1 s interval, 2 s base ejection.
    fn c7(max_ejection_percent: u32) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(2),
            max_ejection_percent,
            ..OutlierDetection::default()
        }
    }

    fn detector(config: OutlierDetection, hosts: &[Arc<Host>]) -> (OutlierDetector, Store) {
        let store = Store::new();
        let d = OutlierDetector::new(config, OutlierStats::new(&store, "cluster.c."));
        d.set_hosts(hosts);
        (d, store)
    }

    fn stat(store: &Store, name: &str) -> i64 {
        store
            .values()
            .into_iter()
            .find(|(n, _, _)| n == &format!("cluster.c.outlier_detection.{name}"))
            .map_or(-1, |(_, v, _)| v)
    }

    fn status(d: &OutlierDetector, h: &Arc<Host>, code: u16) -> bool {
        let headers = HeaderMap::new();
        d.report(
            h,
            &Outcome::Response {
                status: StatusCode::from_u16(code).unwrap(),
                headers: &headers,
            },
        )
    }

    fn failure(d: &OutlierDetector, h: &Arc<Host>, f: Failure) -> bool {
        d.report(h, &Outcome::Failure(f))
    }

    async fn advance_ms(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    /// C7: ejection after 3 failures, back when the time is up (on a tick), re-ejection
    /// doubles the time, `ejections_active` follows.
    #[tokio::test(start_paused = true)]
    async fn consecutive_5xx_ejects_and_reejection_doubles_the_time() {
        let hs = hosts(2);
        let (d, store) = detector(c7(50), &hs);
        let mut changes = d.subscribe();
        assert!(!status(&d, &hs[0], 500));
        assert!(!status(&d, &hs[0], 503));
        assert!(!hs[0].is_ejected());
        assert!(status(&d, &hs[0], 500));
        assert!(hs[0].is_ejected() && !hs[0].is_healthy());
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        assert_eq!(stat(&store, "ejections_active"), 1);
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 1);
        assert_eq!(stat(&store, "ejections_enforced_consecutive_5xx"), 1);
        assert_eq!(stat(&store, "ejections_enforced_total"), 1);
        assert_eq!(stat(&store, "ejections_total"), 1);
        // More failures while ejected detect nothing.
        for _ in 0..5 {
            assert!(!status(&d, &hs[0], 500));
        }
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 1);

        let start = Instant::now();
        advance_ms(1000).await;
        assert!(!d.tick(Instant::now()));
        assert!(hs[0].is_ejected());
        advance_ms(1000).await;
        assert!(d.tick(Instant::now()), "2 s are up");
        assert!(!hs[0].is_ejected());
        assert!(changes.has_changed().unwrap());
        assert_eq!(stat(&store, "ejections_active"), 0);
        assert_eq!(d.ejections(&hs[0]), Some((1, 1)));

        // Failing again before the next tick: the multiplier is still 1, so it becomes 2.
        advance_ms(500).await;
        for _ in 0..3 {
            status(&d, &hs[0], 502);
        }
        assert!(hs[0].is_ejected());
        assert_eq!(d.ejections(&hs[0]), Some((2, 2)));
        let second = Instant::now();
        for tick in 3..=6 {
            tokio::time::advance(start + Duration::from_secs(tick) - Instant::now()).await;
            d.tick(Instant::now());
            assert!(hs[0].is_ejected(), "still out at {tick} s (4 s from 2.5 s)");
        }
        advance_ms(1000).await;
        assert!(d.tick(Instant::now()));
        assert!(!hs[0].is_ejected());
        assert!(Instant::now() - second >= Duration::from_secs(4));
        assert_eq!(stat(&store, "ejections_enforced_consecutive_5xx"), 2);
        assert_eq!(stat(&store, "ejections_active"), 0);
        // The other host was never touched.
        assert!(!hs[1].is_ejected());
    }

    /// With 2 hosts, 10% allows no ejection at all (100 × 1 / 2 = 50 > 10): Envoy counts an
    /// overflow. `always_eject_one_host` ejects one anyway, but not a second.
    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_and_always_eject_one_host() {
        let hs = hosts(2);
        let (d, store) = detector(c7(10), &hs);
        for _ in 0..3 {
            status(&d, &hs[0], 500);
        }
        assert!(!hs[0].is_ejected());
        assert_eq!(stat(&store, "ejections_overflow"), 1);
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 1);
        assert_eq!(stat(&store, "ejections_enforced_total"), 0);

        let mut config = c7(10);
        config.always_eject_one_host = true;
        let (d, store) = detector(config, &hs);
        for _ in 0..3 {
            status(&d, &hs[0], 500);
            status(&d, &hs[1], 500);
        }
        assert!(hs[0].is_ejected());
        assert!(!hs[1].is_ejected());
        assert_eq!(stat(&store, "ejections_overflow"), 1);

        // 50% of 2 hosts: one may go, the second may not.
        let hs = hosts(2);
        let (d, store) = detector(c7(50), &hs);
        for _ in 0..3 {
            status(&d, &hs[0], 500);
            status(&d, &hs[1], 500);
        }
        assert!(hs[0].is_ejected() && !hs[1].is_ejected());
        assert_eq!(stat(&store, "ejections_overflow"), 1);
        // 10% of 10 hosts: exactly one.
        let hs = hosts(10);
        let (d, _) = detector(c7(10), &hs);
        for h in &hs[..2] {
            for _ in 0..3 {
                status(&d, h, 500);
            }
        }
        assert_eq!(d.ejected_count(), 1);
    }

    /// C8: `consecutive_gateway_failure` without `enforcing_consecutive_gateway_failure` is
    /// detected (each time the streak reaches it) but never ejects; the 5xx detector still
    /// does at 5.
    #[tokio::test(start_paused = true)]
    async fn gateway_failures_are_detected_but_not_enforced_by_default() {
        let hs = hosts(4);
        let config = OutlierDetection {
            consecutive_gateway_failure: 2,
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let (d, store) = detector(config, &hs);
        for _ in 0..4 {
            status(&d, &hs[0], 503);
        }
        assert!(!hs[0].is_ejected());
        assert_eq!(
            stat(&store, "ejections_detected_consecutive_gateway_failure"),
            2
        );
        assert_eq!(
            stat(&store, "ejections_enforced_consecutive_gateway_failure"),
            0
        );
        assert_eq!(stat(&store, "ejections_overflow"), 0);
        status(&d, &hs[0], 503);
        assert!(hs[0].is_ejected(), "the fifth 5xx");
        assert_eq!(stat(&store, "ejections_enforced_consecutive_5xx"), 1);

        // Enforced at 100, the gateway detector ejects by itself.
        let config = OutlierDetection {
            consecutive_gateway_failure: 2,
            enforcing_consecutive_gateway_failure: 100,
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let (d, store) = detector(config, &hs[1..]);
        status(&d, &hs[1], 504);
        status(&d, &hs[1], 502);
        assert!(hs[1].is_ejected());
        assert_eq!(
            stat(&store, "ejections_enforced_consecutive_gateway_failure"),
            1
        );
        assert_eq!(
            stat(&store, "ejections_total"),
            0,
            "only 5xx and success rate"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streaks_reset_like_envoy() {
        let hs = hosts(4);
        let config = OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 3,
            enforcing_consecutive_gateway_failure: 100,
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let (d, store) = detector(config, &hs);
        // A success resets both streaks.
        for code in [500, 500, 200, 500, 500] {
            status(&d, &hs[0], code);
        }
        assert!(!hs[0].is_ejected());
        // A 4xx is a success too.
        for code in [503, 503, 404, 503, 503] {
            status(&d, &hs[1], code);
        }
        assert!(!hs[1].is_ejected());
        // A non-gateway 5xx resets the gateway streak but not the 5xx one.
        for code in [503, 503, 500] {
            status(&d, &hs[2], code);
        }
        assert!(hs[2].is_ejected());
        assert_eq!(
            stat(&store, "ejections_detected_consecutive_gateway_failure"),
            0
        );
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 1);
    }

    /// Unsplit: "2 connect timeouts then a 500 counts as 3"; a per-try timeout is a 504.
    /// Overflow and no-healthy-upstream say nothing about the host.
    #[tokio::test(start_paused = true)]
    async fn local_origin_failures_count_as_5xx_without_split() {
        let hs = hosts(4);
        let (d, store) = detector(c7(100), &hs);
        failure(&d, &hs[0], Failure::ConnectTimeout);
        failure(&d, &hs[0], Failure::ConnectFailure);
        status(&d, &hs[0], 500);
        assert!(hs[0].is_ejected());

        failure(&d, &hs[1], Failure::PerTryTimeout);
        failure(
            &d,
            &hs[1],
            Failure::Reset {
                before_request: false,
            },
        );
        for _ in 0..10 {
            failure(&d, &hs[1], Failure::Overflow);
            failure(&d, &hs[1], Failure::NoHealthyUpstream);
        }
        assert!(!hs[1].is_ejected());
        failure(&d, &hs[1], Failure::RefusedStream);
        assert!(hs[1].is_ejected());
        assert_eq!(
            stat(
                &store,
                "ejections_detected_consecutive_local_origin_failure"
            ),
            0
        );
    }

    /// Split: local-origin failures feed their own detector only; a successful connection
    /// (any response, or a stream that broke after connecting) resets that streak.
    #[tokio::test(start_paused = true)]
    async fn split_mode_has_its_own_local_origin_detector() {
        let hs = hosts(4);
        let config = OutlierDetection {
            consecutive_5xx: 3,
            consecutive_local_origin_failure: 3,
            split_external_local_origin_errors: true,
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let (d, store) = detector(config, &hs);
        // Connect failures do not touch the 5xx streak.
        status(&d, &hs[0], 500);
        status(&d, &hs[0], 500);
        failure(&d, &hs[0], Failure::ConnectFailure);
        failure(&d, &hs[0], Failure::ConnectFailure);
        assert!(!hs[0].is_ejected());
        failure(&d, &hs[0], Failure::ConnectTimeout);
        assert!(hs[0].is_ejected(), "third connect failure in a row");
        assert_eq!(
            stat(
                &store,
                "ejections_enforced_consecutive_local_origin_failure"
            ),
            1
        );
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 0);

        // Resets happen after a successful connection: the streak never passes 1.
        for _ in 0..6 {
            failure(
                &d,
                &hs[1],
                Failure::Reset {
                    before_request: false,
                },
            );
            failure(&d, &hs[1], Failure::PerTryTimeout);
        }
        assert!(!hs[1].is_ejected());
        // A response between connect failures resets the streak.
        failure(&d, &hs[2], Failure::ConnectFailure);
        failure(&d, &hs[2], Failure::ConnectFailure);
        status(&d, &hs[2], 503);
        failure(&d, &hs[2], Failure::ConnectFailure);
        assert!(!hs[2].is_ejected());
        // 5xx responses still eject through the external detector.
        for _ in 0..3 {
            status(&d, &hs[3], 502);
        }
        assert!(hs[3].is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_status_in_headers_counts_as_its_http_code() {
        let hs = hosts(2);
        let (d, _) = detector(c7(100), &hs);
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("grpc-status", "14".parse().unwrap());
        let unavailable = Outcome::Response {
            status: StatusCode::OK,
            headers: &h,
        };
        d.report(&hs[0], &unavailable);
        d.report(&hs[0], &unavailable);
        assert!(d.report(&hs[0], &unavailable));
        // Without a gRPC content type, grpc-status is not looked at.
        let mut plain = h.clone();
        plain.remove("content-type");
        for _ in 0..3 {
            d.report(
                &hs[1],
                &Outcome::Response {
                    status: StatusCode::OK,
                    headers: &plain,
                },
            );
        }
        assert!(!hs[1].is_ejected());
        assert_eq!(grpc_to_http(4), 504);
        assert_eq!(grpc_to_http(8), 429);
        assert_eq!(grpc_to_http(0), 200);
        assert_eq!(grpc_to_http(99), 500);
    }

    /// The multiplier drops by one per interval once the host has been back for an interval,
    /// and is capped so the time never passes max_ejection_time.
    #[tokio::test(start_paused = true)]
    async fn multiplier_decays_and_is_capped() {
        let hs = hosts(2);
        let mut config = c7(50);
        config.max_ejection_time = Duration::from_secs(3);
        let (d, _) = detector(config, &hs);
        let eject = |d: &OutlierDetector| {
            for _ in 0..3 {
                status(d, &hs[0], 500);
            }
            assert!(hs[0].is_ejected());
        };
        let tick = |d: &OutlierDetector| d.tick(Instant::now());
        eject(&d);
        advance_ms(2000).await;
        tick(&d);
        assert!(!hs[0].is_ejected());
        assert_eq!(d.ejections(&hs[0]), Some((1, 1)));
        advance_ms(1000).await;
        tick(&d);
        assert_eq!(d.ejections(&hs[0]), Some((1, 0)), "back for one interval");
        // Ejected again: base time again (2 s).
        eject(&d);
        advance_ms(2000).await;
        tick(&d);
        assert!(!hs[0].is_ejected());
        // Quickly ejected three more times: 4 s, then 6 s, capped to 3 s; the multiplier grows
        // while base × multiplier < max + base, so it stops at 3.
        for _ in 0..3 {
            eject(&d);
            advance_ms(2000).await;
            tick(&d);
            assert!(hs[0].is_ejected(), "2 s is not enough any more");
            advance_ms(1000).await;
            tick(&d);
            assert!(!hs[0].is_ejected(), "3 s is the cap");
        }
        assert_eq!(d.ejections(&hs[0]), Some((5, 3)));
    }

    #[tokio::test(start_paused = true)]
    async fn host_set_changes() {
        let hs = hosts(3);
        let (d, store) = detector(c7(100), &hs);
        for _ in 0..3 {
            status(&d, &hs[0], 500);
        }
        status(&d, &hs[1], 500);
        status(&d, &hs[1], 500);
        assert_eq!(stat(&store, "ejections_active"), 1);
        let changes = d.subscribe();
        // hs[0] (ejected) leaves, hs[1] stays with its streak, a new host joins.
        let newcomer = host(9000);
        d.set_hosts(&[hs[1].clone(), hs[2].clone(), newcomer.clone()]);
        assert!(changes.has_changed().unwrap());
        assert_eq!(stat(&store, "ejections_active"), 0);
        assert!(!hs[0].is_ejected());
        assert!(!status(&d, &hs[0], 500), "no longer tracked");
        assert!(status(&d, &hs[1], 500), "kept its streak of 2");
        assert!(!status(&d, &newcomer, 500));
        assert_eq!(d.ejected_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn active_health_check_brings_a_host_back() {
        let hs = hosts(2);
        let (d, store) = detector(c7(50), &hs);
        for _ in 0..3 {
            status(&d, &hs[0], 500);
        }
        assert!(d.uneject_host(&hs[0]));
        assert!(!hs[0].is_ejected());
        assert!(!d.uneject_host(&hs[0]));
        assert_eq!(stat(&store, "ejections_active"), 0);
        // Streaks were reset.
        status(&d, &hs[0], 500);
        status(&d, &hs[0], 500);
        assert!(!hs[0].is_ejected());
    }

    fn traffic(d: &OutlierDetector, h: &Arc<Host>, ok: u32, failed: u32) {
        for _ in 0..ok {
            status(d, h, 200);
        }
        for _ in 0..failed {
            // 500s interleaved with successes never reach a streak here.
            d.report_http_code(h, 500);
            d.report_http_code(h, 200);
            d.report_http_code(h, 200);
        }
    }

    /// Envoy's example: success rates {50, 100, 100, 100, 100} give mean 90, stdev 20 and a
    /// threshold of 90 − 1.9 × 20 = 52, so the 50% host is an outlier.
    #[tokio::test(start_paused = true)]
    async fn success_rate_ejects_the_outlier_each_interval() {
        let hs = hosts(5);
        let config = OutlierDetection {
            max_ejection_percent: 20,
            ..OutlierDetection::default()
        };
        let (d, store) = detector(config, &hs);
        for h in &hs[1..] {
            traffic(&d, h, 100, 0);
        }
        for _ in 0..50 {
            d.report_http_code(&hs[0], 200);
            d.report_http_code(&hs[0], 503);
            d.report_http_code(&hs[0], 200);
        }
        // hs[0]: 100 of 150 → 66.7%? Make it exactly 50%: add 50 failures.
        for _ in 0..25 {
            d.report_http_code(&hs[0], 500);
            d.report_http_code(&hs[0], 500);
            d.report_http_code(&hs[0], 200);
            d.report_http_code(&hs[0], 500);
        }
        // 150 + 100 = 250 requests, 125 successes.
        assert!(d.tick(Instant::now()));
        assert!(hs[0].is_ejected());
        // Recorded before the ejection, as in Envoy.
        assert_eq!(d.success_rate(&hs[0], false), Some(50.0));
        let (mean, threshold) = d.success_rate_threshold(false).unwrap();
        assert!((mean - 90.0).abs() < 1e-9, "{mean}");
        assert!((threshold - 52.0).abs() < 1e-9, "{threshold}");
        assert_eq!(d.success_rate(&hs[1], false), Some(100.0));
        assert_eq!(stat(&store, "ejections_detected_success_rate"), 1);
        assert_eq!(stat(&store, "ejections_enforced_success_rate"), 1);
        assert_eq!(stat(&store, "ejections_success_rate"), 1);
        // The next interval had no traffic: nothing runs, and no rate is valid any more.
        advance_ms(10_000).await;
        assert!(!d.tick(Instant::now()));
        assert_eq!(d.success_rate_threshold(false), None);
        assert_eq!(d.success_rate(&hs[1], false), None);
        // Too few requests or hosts: nothing is judged.
        let (d, _) = detector(OutlierDetection::default(), &hs[..4]);
        for h in &hs[..4] {
            traffic(&d, h, 100, 0);
        }
        d.tick(Instant::now());
        assert_eq!(d.success_rate_threshold(false), None);
    }

    /// Failure percentage (enforcing 0 by default); with success rate detected but not
    /// enforced, failure percentage ejects.
    #[tokio::test(start_paused = true)]
    async fn failure_percentage() {
        let hs = hosts(5);
        let config = OutlierDetection {
            max_ejection_percent: 100,
            enforcing_success_rate: 0,
            consecutive_5xx: 1000,
            ..OutlierDetection::default()
        };
        let report = |d: &OutlierDetector| {
            // 120 requests each at 100%; hs[0]: 300 at 10% (90% failures).
            for h in &hs[1..] {
                traffic(d, h, 120, 0);
            }
            for _ in 0..30 {
                d.report_http_code(&hs[0], 200);
                for _ in 0..9 {
                    d.report_http_code(&hs[0], 500);
                }
            }
        };
        let (d, store) = detector(config, &hs);
        report(&d);
        d.tick(Instant::now());
        assert!(
            !hs[0].is_ejected(),
            "failure percentage is not enforced by default"
        );
        assert_eq!(stat(&store, "ejections_detected_failure_percentage"), 1);
        assert_eq!(stat(&store, "ejections_detected_success_rate"), 1);
        assert_eq!(stat(&store, "ejections_enforced_total"), 0);

        let config = OutlierDetection {
            enforcing_failure_percentage: 100,
            ..config
        };
        let (d, store) = detector(config, &hs);
        report(&d);
        d.tick(Instant::now());
        assert!(hs[0].is_ejected());
        assert_eq!(stat(&store, "ejections_enforced_failure_percentage"), 1);
        assert!(hs[1..].iter().all(|h| !h.is_ejected()));
    }

    #[tokio::test(start_paused = true)]
    async fn enforcing_percentages_are_drawn() {
        let hs = hosts(2);
        let config = OutlierDetection {
            enforcing_consecutive_5xx: 30,
            ..c7(100)
        };
        let store = Store::new();
        let draws = Arc::new(AtomicU64::new(0));
        let d =
            OutlierDetector::new(config, OutlierStats::new(&store, "cluster.c.")).with_random({
                let draws = draws.clone();
                // 29, 30: the first draw enforces (29 < 30), the second does not.
                move || 29 + draws.fetch_add(1, Ordering::SeqCst)
            });
        d.set_hosts(&hs);
        for _ in 0..3 {
            status(&d, &hs[1], 500);
        }
        assert!(hs[1].is_ejected());
        for _ in 0..3 {
            status(&d, &hs[0], 500);
        }
        assert!(!hs[0].is_ejected());
        assert_eq!(stat(&store, "ejections_detected_consecutive_5xx"), 2);
        assert_eq!(stat(&store, "ejections_enforced_consecutive_5xx"), 1);
    }

    /// The spawned interval task brings hosts back by itself, and stops with the detector.
    #[tokio::test(start_paused = true)]
    async fn spawned_interval_unejects() {
        let hs = hosts(2);
        let d = Arc::new(detector(c7(50), &hs).0);
        let task = d.spawn();
        for _ in 0..3 {
            status(&d, &hs[0], 500);
        }
        let mut changes = d.subscribe();
        changes.borrow_and_update();
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(!hs[0].is_ejected());
        drop(d);
        advance_ms(1500).await;
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    /// Many tasks reporting failures for one host at once: it is detected and ejected once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reports_eject_once() {
        let hs = hosts(2);
        let config = OutlierDetection {
            consecutive_5xx: 50,
            ..c7(50)
        };
        let (d, store) = detector(config, &hs);
        let d = Arc::new(d);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (d, h) = (d.clone(), hs[0].clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..100 {
                    status(&d, &h, 503);
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(hs[0].is_ejected());
        assert_eq!(stat(&store, "ejections_enforced_total"), 1);
        assert_eq!(stat(&store, "ejections_active"), 1);
    }
}
