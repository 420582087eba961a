//! Stats with Envoy's names (`cluster.NAME.upstream_rq_total`, `http.PREFIX.downstream_rq_2xx`,
//! `listener_manager.lds.update_success`, ...), so the same assertions read Envoy's admin API
//! and ours.
//!
//! Counters and gauges are shared atomics: the hot path holds them directly (a cluster keeps
//! its counters as fields) and the [`Store`] keeps them by name for `/stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A stat by name.
#[derive(Clone, Debug)]
pub enum Stat {
    /// A counter.
    Counter(Counter),
    /// A gauge.
    Gauge(Gauge),
}

/// Every stat of the proxy, by Envoy name.
#[derive(Debug, Default)]
pub struct Store {
    stats: Mutex<BTreeMap<String, Stat>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The counter called `name`, created at zero if new.
    pub fn counter(&self, name: impl Into<String>) -> Counter {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        match stats
            .entry(name.into())
            .or_insert_with(|| Stat::Counter(Counter::default()))
        {
            Stat::Counter(c) => c.clone(),
            // A name used as a gauge before: keep the gauge, hand out a detached counter.
            Stat::Gauge(_) => Counter::default(),
        }
    }

    /// The gauge called `name`, created at zero if new.
    pub fn gauge(&self, name: impl Into<String>) -> Gauge {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        match stats
            .entry(name.into())
            .or_insert_with(|| Stat::Gauge(Gauge::default()))
        {
            Stat::Gauge(g) => g.clone(),
            Stat::Counter(_) => Gauge::default(),
        }
    }

    /// Removes every stat whose name starts with `prefix` (a removed cluster's).
    pub fn remove_prefix(&self, prefix: &str) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.retain(|k, _| !k.starts_with(prefix));
    }

    /// Every stat with its value, sorted by name: `(name, value, is_counter)`.
    pub fn values(&self) -> Vec<(String, i64, bool)> {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats
            .iter()
            .map(|(k, s)| match s {
                Stat::Counter(c) => (k.clone(), i64::try_from(c.get()).unwrap_or(i64::MAX), true),
                Stat::Gauge(g) => (k.clone(), g.get(), false),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_stats_are_shared() {
        let s = Store::new();
        let a = s.counter("cluster.x.upstream_rq_total");
        a.inc();
        s.counter("cluster.x.upstream_rq_total").add(2);
        let g = s.gauge("cluster.x.upstream_rq_active");
        g.inc();
        g.inc();
        g.dec();
        assert_eq!(
            s.values(),
            vec![
                ("cluster.x.upstream_rq_active".to_string(), 1, false),
                ("cluster.x.upstream_rq_total".to_string(), 3, true),
            ]
        );
        s.remove_prefix("cluster.x.");
        assert!(s.values().is_empty());
    }
}
