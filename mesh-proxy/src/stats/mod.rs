//! Stats with Envoy's names (`cluster.NAME.upstream_rq_total`, `http.PREFIX.downstream_rq_2xx`,
//! `listener_manager.lds.update_success`, ...), so the same assertions read Envoy's admin API
//! and ours.
//!
//! Counters and gauges are shared atomics: the hot path holds them directly (a cluster keeps
//! its counters as fields) and the [`Store`] keeps them by name for `/stats`.

use std::collections::{HashMap, HashSet};
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
///
/// Names are kept split at their last dot: the prefix (`cluster.NAME.`) once per group and the
/// last part (`upstream_rq_total`) interned across groups, since ten thousand clusters repeat
/// the same seventy names. A stat costs a few words instead of its whole name.
#[derive(Debug, Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    groups: HashMap<Box<str>, Vec<(Arc<str>, Stat)>>,
    suffixes: HashSet<Arc<str>>,
}

impl Inner {
    fn entry(&mut self, name: &str, make: impl FnOnce() -> Stat) -> Stat {
        let (prefix, suffix) = match name.rfind('.') {
            Some(i) => name.split_at(i + 1),
            None => ("", name),
        };
        if let Some(group) = self.groups.get(prefix)
            && let Some((_, s)) = group.iter().find(|(n, _)| &**n == suffix)
        {
            return s.clone();
        }
        let suffix: Arc<str> = match self.suffixes.get(suffix) {
            Some(s) => s.clone(),
            None => {
                let s: Arc<str> = Arc::from(suffix);
                self.suffixes.insert(s.clone());
                s
            }
        };
        let stat = make();
        self.groups
            .entry(Box::from(prefix))
            .or_default()
            .push((suffix, stat.clone()));
        stat
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counter called `name`, created at zero if new.
    pub fn counter(&self, name: impl AsRef<str>) -> Counter {
        match self
            .lock()
            .entry(name.as_ref(), || Stat::Counter(Counter::default()))
        {
            Stat::Counter(c) => c,
            // A name used as a gauge before: keep the gauge, hand out a detached counter.
            Stat::Gauge(_) => Counter::default(),
        }
    }

    /// The gauge called `name`, created at zero if new.
    pub fn gauge(&self, name: impl AsRef<str>) -> Gauge {
        match self
            .lock()
            .entry(name.as_ref(), || Stat::Gauge(Gauge::default()))
        {
            Stat::Gauge(g) => g,
            Stat::Counter(_) => Gauge::default(),
        }
    }

    /// Removes every stat whose name starts with `prefix` (a removed cluster's). `prefix`
    /// should end at a dot, as stat prefixes do.
    pub fn remove_prefix(&self, prefix: &str) {
        let mut inner = self.lock();
        inner.groups.retain(|p, group| {
            if p.starts_with(prefix) {
                return false;
            }
            if prefix.starts_with(&**p) {
                let rest = &prefix[p.len()..];
                group.retain(|(n, _)| !n.starts_with(rest));
            }
            !group.is_empty()
        });
    }

    /// The stats whose names `filter` matches (all without one), sorted by name:
    /// `(name, value, is_counter)`. Names are tested before they are kept, so a filtered read
    /// of a large store allocates only what it returns.
    pub fn values_matching(&self, filter: Option<&regex::Regex>) -> Vec<(String, i64, bool)> {
        let Some(f) = filter else {
            return self.values();
        };
        let inner = self.lock();
        let mut out = Vec::new();
        let mut name = String::new();
        for (p, group) in &inner.groups {
            for (n, s) in group {
                name.clear();
                name.push_str(p);
                name.push_str(n);
                if f.is_match(&name) {
                    out.push(match s {
                        Stat::Counter(c) => (
                            name.clone(),
                            i64::try_from(c.get()).unwrap_or(i64::MAX),
                            true,
                        ),
                        Stat::Gauge(g) => (name.clone(), g.get(), false),
                    });
                }
            }
        }
        drop(inner);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every stat with its value, sorted by name: `(name, value, is_counter)`.
    pub fn values(&self) -> Vec<(String, i64, bool)> {
        let inner = self.lock();
        let mut out: Vec<(String, i64, bool)> = inner
            .groups
            .iter()
            .flat_map(|(p, group)| {
                group.iter().map(move |(n, s)| {
                    let name = format!("{p}{n}");
                    match s {
                        Stat::Counter(c) => {
                            (name, i64::try_from(c.get()).unwrap_or(i64::MAX), true)
                        }
                        Stat::Gauge(g) => (name, g.get(), false),
                    }
                })
            })
            .collect();
        drop(inner);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
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
        s.counter("cluster.xy.upstream_rq_total").inc();
        s.counter("clusterless").inc();
        s.remove_prefix("cluster.x.");
        assert_eq!(
            s.values(),
            vec![
                ("cluster.xy.upstream_rq_total".to_string(), 1, true),
                ("clusterless".to_string(), 1, true),
            ]
        );
    }
}
