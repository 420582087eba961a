//! Circuit breakers: the cluster resource manager for the DEFAULT priority, with Envoy's
//! semantics (`source/common/upstream/resource_manager_impl.h`).
//!
//! Each resource (connections, pending requests, requests, retries, connection pools) is an
//! atomic count with a limit from [`Thresholds`]. [`ResourceManager::try_acquire`] never
//! waits: at the limit it returns `None` and the caller answers at once (Envoy's 503 `UO`, with
//! its overflow counter from [`ResourceStats`]); otherwise it returns a [`ResourceGuard`] that
//! gives the unit back when dropped.
//!
//! **Retries.** With `retry_budget` set, the retries allowed at once are
//! `max(min_retry_concurrency, budget_percent% × (active requests + pending requests))`,
//! recomputed on every check and truncated to a whole number, without a time window; without
//! it, `max_retries`.
//!
//! **Gauges** (`cluster.NAME.circuit_breakers.default.`): `cx_open`, `cx_pool_open`,
//! `rq_pending_open`, `rq_open`, `rq_retry_open` are 1 while the count is at (or above) its
//! limit, updated whenever a unit is taken or given back. With `track_remaining`,
//! `remaining_cx`, `remaining_cx_pools`, `remaining_pending`, `remaining_rq` and
//! `remaining_retries` hold `limit − count`. Two details follow Envoy exactly: with a retry
//! budget, `rq_retry_open` still compares against `max_retries`, and `remaining_retries` is 0
//! from the first retry check on (it starts at `max_retries`), since the budget's limit moves
//! with traffic.
//!
//! Envoy checks and then increments, so racing workers may overshoot a limit briefly; here the
//! check and the increment are one compare-and-swap, so a limit is never exceeded.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::cluster::Thresholds;
use crate::stats::{Counter, Gauge, Store};

/// A resource the circuit breakers limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Upstream connections (`max_connections`).
    Connection,
    /// Requests waiting for a pool connection (`max_pending_requests`).
    PendingRequest,
    /// Requests in flight (`max_requests`).
    Request,
    /// Retries in flight, back-off included (`max_retries` or `retry_budget`).
    Retry,
    /// Connection pools (`max_connection_pools`; unlimited, as the thresholds do not set it).
    ConnectionPool,
}

impl Resource {
    const ALL: [Resource; 5] = [
        Resource::Connection,
        Resource::PendingRequest,
        Resource::Request,
        Resource::Retry,
        Resource::ConnectionPool,
    ];

    fn index(self) -> usize {
        match self {
            Resource::Connection => 0,
            Resource::PendingRequest => 1,
            Resource::Request => 2,
            Resource::Retry => 3,
            Resource::ConnectionPool => 4,
        }
    }

    /// The names of its open and remaining gauges.
    fn gauge_names(self) -> (&'static str, &'static str) {
        match self {
            Resource::Connection => ("cx_open", "remaining_cx"),
            Resource::PendingRequest => ("rq_pending_open", "remaining_pending"),
            Resource::Request => ("rq_open", "remaining_rq"),
            Resource::Retry => ("rq_retry_open", "remaining_retries"),
            Resource::ConnectionPool => ("cx_pool_open", "remaining_cx_pools"),
        }
    }
}

/// The circuit-breaker stats of a cluster's DEFAULT priority, and the overflow counters the
/// callers increment when they are refused.
#[derive(Clone, Debug, Default)]
pub struct ResourceStats {
    /// `circuit_breakers.default.{cx_open, rq_pending_open, rq_open, rq_retry_open,
    /// cx_pool_open}`, in [`Resource`] order.
    open: [Gauge; 5],
    /// `circuit_breakers.default.remaining_*` (only with `track_remaining`).
    remaining: Option<[Gauge; 5]>,
    /// `upstream_cx_overflow`: a connection was refused by `max_connections`.
    pub upstream_cx_overflow: Counter,
    /// `upstream_rq_pending_overflow`: a request was refused by `max_pending_requests` or
    /// `max_requests` (Envoy counts both here).
    pub upstream_rq_pending_overflow: Counter,
    /// `upstream_rq_retry_overflow`: a retry was refused by `max_retries` or the budget
    /// (the retry state counts it; this is the same counter).
    pub upstream_rq_retry_overflow: Counter,
    /// `upstream_cx_pool_overflow`: a connection pool was refused.
    pub upstream_cx_pool_overflow: Counter,
}

impl ResourceStats {
    /// The stats under `prefix` (`cluster.NAME.`) in `store`. The `remaining_*` gauges are
    /// registered only when `track_remaining` is set, as in Envoy.
    pub fn new(store: &Store, prefix: &str, track_remaining: bool) -> ResourceStats {
        let cb = format!("{prefix}circuit_breakers.default.");
        let open = Resource::ALL.map(|r| store.gauge(format!("{cb}{}", r.gauge_names().0)));
        let remaining = track_remaining
            .then(|| Resource::ALL.map(|r| store.gauge(format!("{cb}{}", r.gauge_names().1))));
        ResourceStats {
            open,
            remaining,
            upstream_cx_overflow: store.counter(format!("{prefix}upstream_cx_overflow")),
            upstream_rq_pending_overflow: store
                .counter(format!("{prefix}upstream_rq_pending_overflow")),
            upstream_rq_retry_overflow: store
                .counter(format!("{prefix}upstream_rq_retry_overflow")),
            upstream_cx_pool_overflow: store.counter(format!("{prefix}upstream_cx_pool_overflow")),
        }
    }

    /// The `*_open` gauge of `resource`.
    pub fn open(&self, resource: Resource) -> &Gauge {
        &self.open[resource.index()]
    }

    /// The `remaining_*` gauge of `resource`, with `track_remaining`.
    pub fn remaining(&self, resource: Resource) -> Option<&Gauge> {
        self.remaining.as_ref().map(|r| &r[resource.index()])
    }
}

/// A cluster's resource manager. Cheap to clone (a handle).
#[derive(Clone)]
pub struct ResourceManager {
    inner: Arc<Inner>,
}

struct Inner {
    counts: [AtomicU64; 5],
    /// Fixed limits (for retries: `max_retries`).
    limits: [u64; 5],
    /// `retry_budget`: `(budget_percent, min_retry_concurrency)`.
    retry_budget: Option<(f64, u32)>,
    /// Whether `remaining_retries` was cleared for the budget already.
    budget_gauge_cleared: AtomicBool,
    stats: ResourceStats,
}

impl fmt::Debug for ResourceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResourceManager");
        for r in Resource::ALL {
            d.field(
                r.gauge_names().1,
                &format_args!("{}/{}", self.count(r), self.limit(r)),
            );
        }
        d.field("retry_budget", &self.inner.retry_budget).finish()
    }
}

impl ResourceManager {
    /// A manager with the limits of `thresholds`, publishing to `stats`.
    pub fn new(thresholds: &Thresholds, stats: ResourceStats) -> ResourceManager {
        let limits = [
            u64::from(thresholds.max_connections),
            u64::from(thresholds.max_pending_requests),
            u64::from(thresholds.max_requests),
            u64::from(thresholds.max_retries),
            u64::MAX,
        ];
        if let Some(remaining) = &stats.remaining {
            for (gauge, &limit) in remaining.iter().zip(&limits) {
                gauge.set(i64::try_from(limit).unwrap_or(i64::MAX));
            }
        }
        ResourceManager {
            inner: Arc::new(Inner {
                counts: Default::default(),
                limits,
                retry_budget: thresholds.retry_budget,
                budget_gauge_cleared: AtomicBool::new(false),
                stats,
            }),
        }
    }

    /// Takes one unit of `resource`, or `None` at the limit (never waits).
    pub fn try_acquire(&self, resource: Resource) -> Option<ResourceGuard> {
        let inner = &self.inner;
        let i = resource.index();
        let limit = self.limit(resource);
        let taken = inner.counts[i]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < limit).then_some(c + 1)
            })
            .is_ok();
        if !taken {
            return None;
        }
        inner.publish(resource);
        Some(ResourceGuard {
            inner: self.inner.clone(),
            resource,
        })
    }

    /// A connection (`max_connections`).
    pub fn try_acquire_connection(&self) -> Option<ResourceGuard> {
        self.try_acquire(Resource::Connection)
    }

    /// A pending request (`max_pending_requests`).
    pub fn try_acquire_pending_request(&self) -> Option<ResourceGuard> {
        self.try_acquire(Resource::PendingRequest)
    }

    /// A request in flight (`max_requests`).
    pub fn try_acquire_request(&self) -> Option<ResourceGuard> {
        self.try_acquire(Resource::Request)
    }

    /// A retry (`max_retries`, or the retry budget).
    pub fn try_acquire_retry(&self) -> Option<ResourceGuard> {
        self.try_acquire(Resource::Retry)
    }

    /// A connection pool (unlimited).
    pub fn try_acquire_connection_pool(&self) -> Option<ResourceGuard> {
        self.try_acquire(Resource::ConnectionPool)
    }

    /// Whether one more unit of `resource` would be granted now.
    pub fn can_create(&self, resource: Resource) -> bool {
        self.count(resource) < self.limit(resource)
    }

    /// Units of `resource` in use.
    pub fn count(&self, resource: Resource) -> u64 {
        self.inner.counts[resource.index()].load(Ordering::Acquire)
    }

    /// The current limit of `resource` (for retries under a budget, computed from the requests
    /// active and pending right now).
    pub fn limit(&self, resource: Resource) -> u64 {
        self.inner.limit(resource)
    }

    /// The stats.
    pub fn stats(&self) -> &ResourceStats {
        &self.inner.stats
    }
}

impl Inner {
    fn limit(&self, resource: Resource) -> u64 {
        match (resource, self.retry_budget) {
            (Resource::Retry, Some((percent, min_concurrency))) => {
                self.clear_budget_gauge();
                let active = self.counts[Resource::Request.index()].load(Ordering::Acquire)
                    + self.counts[Resource::PendingRequest.index()].load(Ordering::Acquire);
                // Truncated like Envoy's double-to-uint64 conversion.
                let budget = (percent / 100.0 * active as f64) as u64;
                budget.max(u64::from(min_concurrency))
            }
            _ => self.limits[resource.index()],
        }
    }

    /// With a budget, `remaining_retries` means nothing and Envoy zeroes it on every use.
    fn clear_budget_gauge(&self) {
        if self.retry_budget.is_some()
            && !self.budget_gauge_cleared.swap(true, Ordering::Relaxed)
            && let Some(g) = self.stats.remaining(Resource::Retry)
        {
            g.set(0);
        }
    }

    /// Updates the gauges of `resource` after its count changed.
    fn publish(&self, resource: Resource) {
        let i = resource.index();
        let count = self.counts[i].load(Ordering::Acquire);
        // The open gauge always compares with the fixed limit (`max_retries` for retries).
        let fixed = self.limits[i];
        self.stats.open[i].set(i64::from(count >= fixed));
        if resource == Resource::Retry && self.retry_budget.is_some() {
            return;
        }
        if let Some(remaining) = &self.stats.remaining {
            remaining[i].set(i64::try_from(fixed.saturating_sub(count)).unwrap_or(i64::MAX));
        }
    }
}

/// One unit of a resource, given back when dropped.
#[must_use = "the unit is given back as soon as the guard is dropped"]
pub struct ResourceGuard {
    inner: Arc<Inner>,
    resource: Resource,
}

impl ResourceGuard {
    /// Which resource it holds.
    pub fn resource(&self) -> Resource {
        self.resource
    }
}

impl fmt::Debug for ResourceGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResourceGuard")
            .field(&self.resource)
            .finish()
    }
}

impl Drop for ResourceGuard {
    fn drop(&mut self) {
        let i = self.resource.index();
        // Never below zero: every guard took exactly one unit.
        let _ = self.inner.counts[i]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
        if self.resource == Resource::Retry {
            self.inner.clear_budget_gauge();
        }
        self.inner.publish(self.resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(t: Thresholds) -> (ResourceManager, Store) {
        let store = Store::new();
        let stats = ResourceStats::new(&store, "cluster.c.", t.track_remaining);
        (ResourceManager::new(&t, stats), store)
    }

    fn stat(store: &Store, name: &str) -> Option<i64> {
        store
            .values()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| v)
    }

    #[test]
    fn limits_reject_at_once_and_guards_give_back() {
        let (m, store) = manager(Thresholds {
            max_connections: 2,
            max_pending_requests: 1,
            max_requests: 3,
            ..Thresholds::default()
        });
        let a = m.try_acquire_connection().unwrap();
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.cx_open"),
            Some(0)
        );
        let b = m.try_acquire_connection().unwrap();
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.cx_open"),
            Some(1)
        );
        assert!(m.try_acquire_connection().is_none());
        assert!(!m.can_create(Resource::Connection));
        drop(a);
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.cx_open"),
            Some(0)
        );
        assert_eq!(m.count(Resource::Connection), 1);
        let _c = m.try_acquire_connection().unwrap();
        drop(b);

        let p = m.try_acquire_pending_request().unwrap();
        assert!(m.try_acquire_pending_request().is_none());
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.rq_pending_open"),
            Some(1)
        );
        drop(p);
        let rs: Vec<_> = (0..3).map(|_| m.try_acquire_request().unwrap()).collect();
        assert!(m.try_acquire_request().is_none());
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.rq_open"),
            Some(1)
        );
        drop(rs);
        assert_eq!(m.count(Resource::Request), 0);
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.rq_open"),
            Some(0)
        );
        // Connection pools are unlimited.
        let pools: Vec<_> = (0..100)
            .map(|_| m.try_acquire_connection_pool().unwrap())
            .collect();
        assert_eq!(m.count(Resource::ConnectionPool), 100);
        drop(pools);
        // No remaining gauges without track_remaining; open gauges and counters exist.
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.remaining_cx"),
            None
        );
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.cx_pool_open"),
            Some(0)
        );
        assert_eq!(
            stat(&store, "cluster.c.upstream_rq_pending_overflow"),
            Some(0)
        );
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let (m, store) = manager(Thresholds {
            max_requests: 0,
            ..Thresholds::default()
        });
        assert!(m.try_acquire_request().is_none());
        // Envoy only refreshes the open gauge when a count changes.
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.rq_open"),
            Some(0)
        );
    }

    #[test]
    fn remaining_gauges_with_track_remaining() {
        let (m, store) = manager(Thresholds {
            max_connections: 4,
            max_retries: 2,
            track_remaining: true,
            ..Thresholds::default()
        });
        let g = |n: &str| stat(&store, &format!("cluster.c.circuit_breakers.default.{n}"));
        assert_eq!(g("remaining_cx"), Some(4));
        assert_eq!(g("remaining_pending"), Some(1024));
        assert_eq!(g("remaining_rq"), Some(1024));
        assert_eq!(g("remaining_retries"), Some(2));
        let a = m.try_acquire_connection().unwrap();
        let _b = m.try_acquire_connection().unwrap();
        assert_eq!(g("remaining_cx"), Some(2));
        drop(a);
        assert_eq!(g("remaining_cx"), Some(3));
        let r1 = m.try_acquire_retry().unwrap();
        let _r2 = m.try_acquire_retry().unwrap();
        assert_eq!(
            (g("remaining_retries"), g("rq_retry_open")),
            (Some(0), Some(1))
        );
        assert!(m.try_acquire_retry().is_none());
        drop(r1);
        assert_eq!(
            (g("remaining_retries"), g("rq_retry_open")),
            (Some(1), Some(0))
        );
    }

    #[test]
    fn retry_budget_follows_active_and_pending_requests() {
        let (m, store) = manager(Thresholds {
            max_retries: 1,
            retry_budget: Some((20.0, 3)),
            track_remaining: true,
            ..Thresholds::default()
        });
        let g = |n: &str| stat(&store, &format!("cluster.c.circuit_breakers.default.{n}"));
        // Before any retry check the gauge still shows max_retries, as in Envoy; the first
        // check zeroes it.
        assert_eq!(g("remaining_retries"), Some(1));
        assert!(m.can_create(Resource::Retry));
        assert_eq!(g("remaining_retries"), Some(0));
        // Nothing active: min_retry_concurrency.
        assert_eq!(m.limit(Resource::Retry), 3);
        // 20 active + 5 pending: 20% of 25 = 5.
        let rq: Vec<_> = (0..20).map(|_| m.try_acquire_request().unwrap()).collect();
        let pending: Vec<_> = (0..5)
            .map(|_| m.try_acquire_pending_request().unwrap())
            .collect();
        assert_eq!(m.limit(Resource::Retry), 5);
        let retries: Vec<_> = (0..5).map(|_| m.try_acquire_retry().unwrap()).collect();
        assert!(m.try_acquire_retry().is_none());
        // The open gauge compares with max_retries (1), not the budget; remaining stays 0.
        assert_eq!(
            (g("rq_retry_open"), g("remaining_retries")),
            (Some(1), Some(0))
        );
        // 24 active: 4.8 truncates to 4, so with 5 in flight none is allowed.
        drop(pending);
        let _more: Vec<_> = (0..4).map(|_| m.try_acquire_request().unwrap()).collect();
        assert_eq!(m.limit(Resource::Retry), 4);
        assert!(!m.can_create(Resource::Retry));
        drop(retries);
        assert_eq!(m.count(Resource::Retry), 0);
        assert_eq!(g("remaining_retries"), Some(0));
        drop(rq);
        // 2 active allows 3 (the minimum), as in envoyproxy/envoy#9069.
        let _two: Vec<_> = (0..2).map(|_| m.try_acquire_request().unwrap()).collect();
        assert_eq!(m.limit(Resource::Retry), 3);
        // 60 active: 12.
        let _sixty: Vec<_> = (0..58).map(|_| m.try_acquire_request().unwrap()).collect();
        assert_eq!(m.limit(Resource::Retry), 12);
    }

    #[test]
    fn overflow_counters_are_named_like_envoy() {
        let store = Store::new();
        let stats = ResourceStats::new(&store, "cluster.out.", false);
        stats.upstream_cx_overflow.inc();
        stats.upstream_rq_pending_overflow.add(2);
        stats.upstream_rq_retry_overflow.add(3);
        assert_eq!(stat(&store, "cluster.out.upstream_cx_overflow"), Some(1));
        assert_eq!(
            stat(&store, "cluster.out.upstream_rq_pending_overflow"),
            Some(2)
        );
        // The retry state's counter of the same name is the same counter.
        assert_eq!(
            store
                .counter("cluster.out.upstream_rq_retry_overflow")
                .get(),
            3
        );
    }

    /// Many tasks racing for 7 connections: never more than 7 held at once, every task that
    /// was refused saw the limit, and all units come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_acquire_never_exceeds_the_limit() {
        let (m, store) = manager(Thresholds {
            max_connections: 7,
            ..Thresholds::default()
        });
        let held = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (m, held, peak, refused) = (m.clone(), held.clone(), peak.clone(), refused.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    match m.try_acquire_connection() {
                        Some(g) => {
                            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            assert!(m.count(Resource::Connection) <= 7);
                            tokio::task::yield_now().await;
                            held.fetch_sub(1, Ordering::SeqCst);
                            drop(g);
                        }
                        None => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 7);
        assert!(peak.load(Ordering::SeqCst) >= 2, "the test did not race");
        assert!(
            refused.load(Ordering::SeqCst) > 0,
            "the limit was never reached"
        );
        assert_eq!(m.count(Resource::Connection), 0);
        assert_eq!(
            stat(&store, "cluster.c.circuit_breakers.default.cx_open"),
            Some(0)
        );
    }
}
