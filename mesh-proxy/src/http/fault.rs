//! `envoy.filters.http.fault`: delays and aborts with fractional percentages.
//!
//! The most specific per-route config (route, then virtual host) replaces the filter-level
//! config. The delay runs first; the abort is decided after it, so a request can get both.
//! An unset percentage never fires.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::{Body, local_reply};
use crate::config::matcher::{FractionalPercent, PseudoHeaders};
use crate::config::route::{FaultAbortKind, FaultConfig, FaultDelayKind};
use crate::stats::{Counter, Gauge, Store};

/// The fault filter's stats (`http.PREFIX.fault.`).
#[derive(Clone, Debug)]
pub struct FaultStats {
    /// `delays_injected`.
    pub delays_injected: Counter,
    /// `aborts_injected`.
    pub aborts_injected: Counter,
    /// `faults_overflow`.
    pub faults_overflow: Counter,
    /// `active_faults`.
    pub active_faults: Gauge,
}

impl FaultStats {
    /// Stats under `http.{prefix}.fault.`.
    pub fn new(store: &Store, prefix: &str) -> FaultStats {
        let p = format!("http.{prefix}.fault.");
        FaultStats {
            delays_injected: store.counter(format!("{p}delays_injected")),
            aborts_injected: store.counter(format!("{p}aborts_injected")),
            faults_overflow: store.counter(format!("{p}faults_overflow")),
            active_faults: store.gauge(format!("{p}active_faults")),
        }
    }
}

/// What the fault filter decided for a request.
#[derive(Debug, Default)]
pub struct Decision {
    /// Wait this long first.
    pub delay: Option<Duration>,
    /// Then answer with this.
    pub abort: Option<Abort>,
}

/// An abort to send after the delay.
#[derive(Clone, Copy, Debug)]
pub enum Abort {
    /// An HTTP status.
    Http(StatusCode),
    /// A gRPC status.
    Grpc(u32),
}

impl Abort {
    /// The local reply.
    pub fn response(self) -> Response<Body> {
        match self {
            Abort::Http(s) => local_reply::fault_abort(s),
            Abort::Grpc(code) => {
                let mut r = local_reply::reply(StatusCode::OK, "", &["FI"], "fault_filter_abort");
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/grpc"));
                r.headers_mut()
                    .insert("grpc-status", HeaderValue::from(code));
                r.headers_mut().insert(
                    "grpc-message",
                    HeaderValue::from_static("fault filter abort"),
                );
                r
            }
        }
    }
}

/// Counts active faults for `max_active_faults`.
static ACTIVE: AtomicU64 = AtomicU64::new(0);

/// An active fault, counted until dropped.
#[derive(Debug)]
pub struct ActiveFault(Gauge);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
        self.0.dec();
    }
}

/// Decides the faults for a request. `cluster` is the route's cluster (for
/// `upstream_cluster`). Returns the decision and a guard counting the active fault.
pub fn decide(
    cfg: &FaultConfig,
    headers: &HeaderMap,
    pseudo: &PseudoHeaders<'_>,
    cluster: Option<&str>,
    stats: &FaultStats,
) -> (Decision, Option<ActiveFault>) {
    let mut d = Decision::default();
    if cfg.delay.is_none() && cfg.abort.is_none() {
        return (d, None);
    }
    if let Some(c) = &cfg.upstream_cluster
        && cluster != Some(c.as_str())
    {
        return (d, None);
    }
    if !cfg.downstream_nodes.is_empty() {
        let node = headers
            .get("x-envoy-downstream-service-node")
            .and_then(|v| v.to_str().ok());
        if !node.is_some_and(|n| cfg.downstream_nodes.iter().any(|x| x == n)) {
            return (d, None);
        }
    }
    if !cfg.headers.iter().all(|m| m.matches(headers, pseudo)) {
        return (d, None);
    }
    if let Some(delay) = &cfg.delay {
        let pct = if delay.kind == FaultDelayKind::Header {
            header_percentage(
                headers,
                "x-envoy-fault-delay-request-percentage",
                delay.percentage,
            )
        } else {
            delay.percentage
        };
        if pct.sample() {
            d.delay = match delay.kind {
                FaultDelayKind::Fixed(t) => Some(t),
                FaultDelayKind::Header => {
                    header_u64(headers, "x-envoy-fault-delay-request").map(Duration::from_millis)
                }
            };
        }
    }
    if let Some(abort) = &cfg.abort {
        let pct = if abort.kind == FaultAbortKind::Header {
            header_percentage(
                headers,
                "x-envoy-fault-abort-request-percentage",
                abort.percentage,
            )
        } else {
            abort.percentage
        };
        if pct.sample() {
            d.abort = match abort.kind {
                FaultAbortKind::Http(s) => StatusCode::from_u16(s).ok().map(Abort::Http),
                FaultAbortKind::Grpc(c) => Some(Abort::Grpc(c)),
                FaultAbortKind::Header => header_u64(headers, "x-envoy-fault-abort-request")
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|s| (200..600).contains(s))
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .map(Abort::Http)
                    .or_else(|| {
                        header_u64(headers, "x-envoy-fault-abort-grpc-request")
                            .and_then(|c| u32::try_from(c).ok())
                            .filter(|c| *c <= 16)
                            .map(Abort::Grpc)
                    }),
            };
        }
    }
    if d.delay.is_none() && d.abort.is_none() {
        return (d, None);
    }
    if let Some(max) = cfg.max_active_faults
        && ACTIVE.load(Ordering::Relaxed) >= u64::from(max)
    {
        stats.faults_overflow.inc();
        return (Decision::default(), None);
    }
    ACTIVE.fetch_add(1, Ordering::Relaxed);
    stats.active_faults.inc();
    if d.delay.is_some() {
        stats.delays_injected.inc();
    }
    (d, Some(ActiveFault(stats.active_faults.clone())))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A percentage from a request header, capped at the configured numerator (Envoy's rule for
/// header-controlled faults).
fn header_percentage(
    headers: &HeaderMap,
    name: &str,
    configured: FractionalPercent,
) -> FractionalPercent {
    match header_u64(headers, name).and_then(|n| u32::try_from(n).ok()) {
        Some(n) => FractionalPercent {
            numerator: n.min(configured.numerator),
            denominator: configured.denominator,
        },
        None => configured,
    }
}
