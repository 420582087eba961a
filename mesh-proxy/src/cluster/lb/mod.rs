//! Load balancing with Envoy's semantics.
//!
//! A [`HostSet`] is an immutable snapshot of a cluster's hosts, built whenever membership or
//! health changes; [`HostSet::choose`] picks a host for one request. What it reproduces, and
//! from which Envoy sources:
//!
//! - **Priorities** (`LoadBalancerBase`): per level, health = `min(100, factor × healthy /
//!   total)` and the same for degraded hosts; loads cascade from P0 with Envoy's truncating
//!   integer arithmetic; the rounding remainder goes to the first level with health. Below 100%
//!   normalized availability, a level whose healthy + degraded share is under
//!   `healthy_panic_threshold` is in panic and balances over all its hosts; when every level is
//!   in panic, loads follow host counts. Threshold 0 disables panic. The level is drawn with
//!   `hash % 100` from a random number (ring/maglev: from the request hash).
//! - **Degraded hosts** (EDS `DEGRADED`) are kept apart as Envoy does: they take the load the
//!   healthy hosts of all levels leave, and are only picked through that degraded load.
//! - **Locality-weighted** (`LocalityWrr`): after the level, a locality is drawn from an EDF
//!   schedule with `weight × min(1, factor × eligible / total)`; ring and maglev instead scale
//!   host weights by the raw locality weights (Envoy's thread-aware LBs do not adjust them for
//!   health).
//! - **ROUND_ROBIN / LEAST_REQUEST** (`EdfLoadBalancerBase`): equal weights and no slow start
//!   → plain rotation from a random start / P2C over `choice_count` random hosts; otherwise an
//!   EDF schedule built with Envoy's `createWithPicks` from a random seed, with weights
//!   re-evaluated on each pick (least request: `weight / (active + 1)^bias`; slow start:
//!   `weight × max(min_weight, time_factor^(1/aggression))`).
//! - **RANDOM**: uniform over the source, ignoring weights, with the same random number that
//!   chose the level (as Envoy).
//! - **RING_HASH / MAGLEV** (`ring.rs`, `maglev.rs`): byte-exact tables, the same host as Envoy
//!   for the same hash and the same hosts.
//! - **CLUSTER_PROVIDED** clusters (ORIGINAL_DST, dynamic forward proxy) pick their host
//!   themselves; here they behave as RANDOM.
//! - **Retries**: `should_select_another` re-picks up to `host_selection_retry_max_attempts`
//!   times (a fresh pick each time; ring/maglev walk the table with the attempt number).

mod edf;
mod maglev;
mod priority;
mod ring;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::cluster::host::Host;
use crate::config::cluster::{Cluster, LbPolicy, SlowStart};
use crate::config::endpoint::{LoadAssignment, Locality};

use self::edf::Edf;
use self::maglev::Maglev;
use self::priority::{Availability, LevelCounts};
use self::ring::Ring;

/// Envoy's default overprovisioning factor (1.4).
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;
/// Envoy's largest `maximum_ring_size`.
pub const MAX_RING_SIZE: u64 = 8_388_608;
/// Envoy's largest priority (`LocalityLbEndpoints.priority`); hosts above it are not balanced.
pub const MAX_PRIORITY: u32 = 128;

/// What a [`HostSet`] is built with.
#[derive(Clone, Debug, PartialEq)]
pub struct LbParams {
    /// The algorithm.
    pub policy: LbPolicy,
    /// `healthy_panic_threshold` in percent (rounded to a whole percent as Envoy does; 0 disables
    /// panic).
    pub healthy_panic_threshold: f64,
    /// `locality_weighted_lb_config` is set.
    pub locality_weighted: bool,
    /// `overprovisioning_factor` in percent (140; 0 is taken as 140).
    pub overprovisioning_factor: u32,
    /// `weighted_priority_health`: level health from host weights instead of counts.
    pub weighted_priority_health: bool,
    /// Locality weights by (priority, locality) from the assignment; `None` (or a locality not
    /// listed) gives that locality no load under locality-weighted balancing. A locality listed
    /// twice at one priority takes the last weight.
    pub locality_weights: Vec<(u32, Locality, Option<u32>)>,
}

impl Default for LbParams {
    fn default() -> Self {
        LbParams {
            policy: LbPolicy::RoundRobin { slow_start: None },
            healthy_panic_threshold: 50.0,
            locality_weighted: false,
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
            weighted_priority_health: false,
            locality_weights: Vec::new(),
        }
    }
}

impl LbParams {
    /// Params from a cluster and (for EDS and static clusters) its current assignment.
    pub fn new(cluster: &Cluster, assignment: Option<&LoadAssignment>) -> LbParams {
        let params = LbParams {
            policy: cluster.lb_policy.clone(),
            healthy_panic_threshold: cluster.healthy_panic_threshold,
            locality_weighted: cluster.locality_weighted,
            ..LbParams::default()
        };
        match assignment {
            Some(cla) => params.with_assignment(cla),
            None => params,
        }
    }

    /// These params with the assignment's overprovisioning factor, `weighted_priority_health`
    /// and locality weights.
    pub fn with_assignment(mut self, cla: &LoadAssignment) -> LbParams {
        self.overprovisioning_factor = cla.overprovisioning_factor;
        self.weighted_priority_health = cla.weighted_priority_health;
        self.locality_weights = cla
            .localities
            .iter()
            .map(|l| (l.priority, l.locality.clone(), l.weight))
            .collect();
        self
    }
}

/// A policy that Envoy would reject.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid load balancing config: {0}")]
pub struct InvalidLbPolicy(pub String);

/// Checks a policy as Envoy's config validation does (ring sizes, prime maglev table of at
/// most 5,000,011, `choice_count` ≥ 2). [`HostSet::new`] clamps what this rejects.
pub fn validate(policy: &LbPolicy) -> Result<(), InvalidLbPolicy> {
    match policy {
        LbPolicy::RingHash {
            minimum_ring_size,
            maximum_ring_size,
            ..
        } => {
            if *maximum_ring_size > MAX_RING_SIZE || *minimum_ring_size > MAX_RING_SIZE {
                return Err(InvalidLbPolicy(format!(
                    "ring hash: ring sizes must be at most {MAX_RING_SIZE}"
                )));
            }
            if minimum_ring_size > maximum_ring_size {
                return Err(InvalidLbPolicy(format!(
                    "ring hash: minimum_ring_size ({minimum_ring_size}) > maximum_ring_size \
                     ({maximum_ring_size})"
                )));
            }
        }
        LbPolicy::Maglev { table_size } => {
            if *table_size > maglev::MAX_TABLE_SIZE {
                return Err(InvalidLbPolicy(format!(
                    "maglev: table_size must be at most {}",
                    maglev::MAX_TABLE_SIZE
                )));
            }
            if !maglev::is_prime(*table_size) {
                return Err(InvalidLbPolicy(
                    "The table size of maglev must be prime number".into(),
                ));
            }
        }
        LbPolicy::LeastRequest { choice_count, .. } if *choice_count < 2 => {
            return Err(InvalidLbPolicy(
                "least request: choice_count must be >= 2".into(),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Per-request inputs of a pick.
#[derive(Default)]
pub struct LbContext<'a> {
    /// The request hash (from the route's hash policies) for RING_HASH and MAGLEV; `None`
    /// picks a random point, as Envoy does.
    pub hash: Option<u64>,
    /// The retry host predicate (`previous_hosts`): `true` rejects a host.
    pub should_select_another: Option<&'a dyn Fn(&Host) -> bool>,
    /// How many times to re-pick after a rejected host (the last pick stands).
    pub host_selection_retry_max_attempts: u32,
}

impl std::fmt::Debug for LbContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbContext")
            .field("hash", &self.hash)
            .field(
                "should_select_another",
                &self.should_select_another.is_some(),
            )
            .field(
                "host_selection_retry_max_attempts",
                &self.host_selection_retry_max_attempts,
            )
            .finish()
    }
}

/// One priority level, for stats and `/clusters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriorityState {
    /// Hosts in the level.
    pub hosts: usize,
    /// Healthy hosts (not degraded, not unhealthy, not ejected).
    pub healthy: usize,
    /// Degraded hosts.
    pub degraded: usize,
    /// Percent of picks to its healthy hosts.
    pub healthy_load: u32,
    /// Percent of picks to its degraded hosts.
    pub degraded_load: u32,
    /// In panic (balancing over all its hosts).
    pub panic: bool,
}

/// An immutable view of a cluster's hosts for load balancing, rebuilt whenever membership or
/// health changes (EDS update, outlier ejection). Cheap to clone.
#[derive(Clone, Debug)]
pub struct HostSet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hosts: Vec<Arc<Host>>,
    levels: Vec<Level>,
    healthy_load: Vec<u32>,
    degraded_load: Vec<u32>,
    panic: Vec<bool>,
    algo: Algo,
    locality_weighted: bool,
    healthy: usize,
    degraded: usize,
}

#[derive(Debug)]
struct Level {
    counts: LevelCounts,
    pick: LevelPick,
}

#[derive(Debug)]
enum LevelPick {
    Ring(Ring),
    Maglev(Maglev),
    Sources(Box<Sources>),
}

/// Envoy's host sources of one level (all / healthy / degraded, whole or per locality).
#[derive(Debug)]
struct Sources {
    all: Source,
    healthy: Source,
    degraded: Source,
    healthy_localities: Vec<Source>,
    degraded_localities: Vec<Source>,
    healthy_wrr: Option<Mutex<LocalityWrr>>,
    degraded_wrr: Option<Mutex<LocalityWrr>>,
}

/// Hosts to pick from, with the rotation and EDF state for it.
#[derive(Debug)]
struct Source {
    hosts: Vec<Arc<Host>>,
    rr: AtomicU64,
    edf: Option<Mutex<Edf>>,
}

/// EDF over the localities of a level with positive effective weight.
#[derive(Debug)]
struct LocalityWrr {
    edf: Edf,
    /// Entry → (locality index, effective weight).
    entries: Vec<(usize, f64)>,
}

#[derive(Clone, Copy, Debug)]
struct SlowStartState {
    window_ms: u128,
    aggression: f64,
    min_weight: f64,
    /// While `now ≤ until` some host may be in slow start (Envoy's `noHostsAreInSlowStart`).
    until: Instant,
}

#[derive(Clone, Copy, Debug)]
enum Algo {
    RoundRobin {
        slow_start: Option<SlowStartState>,
    },
    LeastRequest {
        choice_count: u32,
        bias: f64,
        slow_start: Option<SlowStartState>,
    },
    Random,
    Hash,
}

/// A host's coarse health as Envoy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

fn health(host: &Host) -> Health {
    if !host.is_healthy() {
        Health::Unhealthy
    } else if host.is_degraded() {
        Health::Degraded
    } else {
        Health::Healthy
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A level's hosts, grouped as Envoy groups them.
struct Grouped {
    hosts: Vec<Arc<Host>>,
    healthy: Vec<Arc<Host>>,
    degraded: Vec<Arc<Host>>,
    /// Localities in Envoy's order (lexicographic by region, zone, sub-zone).
    localities: Vec<LocalityGroup>,
}

struct LocalityGroup {
    locality: Locality,
    weight: u32,
    hosts: Vec<Arc<Host>>,
    healthy: Vec<Arc<Host>>,
    degraded: Vec<Arc<Host>>,
}

impl HostSet {
    /// Builds the view. `hosts` should be in assignment order (Envoy's order, which ring
    /// construction depends on where weights round).
    pub fn new(hosts: Vec<Arc<Host>>, params: &LbParams) -> HostSet {
        let now = Instant::now();
        let overprovisioning = if params.overprovisioning_factor == 0 {
            DEFAULT_OVERPROVISIONING_FACTOR
        } else {
            params.overprovisioning_factor
        };
        let threshold = if params.healthy_panic_threshold.is_nan() {
            50
        } else {
            params.healthy_panic_threshold.round().clamp(0.0, 100.0) as u32
        };
        if hosts.iter().any(|h| h.priority() > MAX_PRIORITY) {
            tracing::warn!("hosts above priority {MAX_PRIORITY} are not load balanced");
        }
        let levels_n = hosts
            .iter()
            .filter(|h| h.priority() <= MAX_PRIORITY)
            .map(|h| h.priority() as usize + 1)
            .max()
            .unwrap_or(1);
        let mut locality_weights: HashMap<(u32, &Locality), u32> = HashMap::new();
        for (p, l, w) in &params.locality_weights {
            locality_weights.insert((*p, l), w.unwrap_or(0));
        }
        let mut grouped: Vec<Grouped> = (0..levels_n)
            .map(|_| Grouped {
                hosts: Vec::new(),
                healthy: Vec::new(),
                degraded: Vec::new(),
                localities: Vec::new(),
            })
            .collect();
        let mut counts = vec![LevelCounts::default(); levels_n];
        let (mut healthy_total, mut degraded_total) = (0, 0);
        // Health is read once per host, so that counts and groups agree.
        let classified: Vec<(&Arc<Host>, Health)> = hosts
            .iter()
            .filter(|h| h.priority() <= MAX_PRIORITY)
            .map(|h| (h, health(h)))
            .collect();
        let mut locality_index: Vec<HashMap<&Locality, usize>> = vec![HashMap::new(); levels_n];
        for (host, health) in &classified {
            let p = host.priority() as usize;
            let (g, c) = (&mut grouped[p], &mut counts[p]);
            let w = u64::from(host.weight());
            let at = *locality_index[p].entry(host.locality()).or_insert_with(|| {
                g.localities.push(LocalityGroup {
                    locality: host.locality().clone(),
                    weight: locality_weights
                        .get(&(p as u32, host.locality()))
                        .copied()
                        .unwrap_or(0),
                    hosts: Vec::new(),
                    healthy: Vec::new(),
                    degraded: Vec::new(),
                });
                g.localities.len() - 1
            });
            let l = &mut g.localities[at];
            g.hosts.push((*host).clone());
            l.hosts.push((*host).clone());
            c.hosts += 1;
            c.total_weight += w;
            match health {
                Health::Healthy => {
                    g.healthy.push((*host).clone());
                    l.healthy.push((*host).clone());
                    c.healthy += 1;
                    c.healthy_weight += w;
                    healthy_total += 1;
                }
                Health::Degraded => {
                    g.degraded.push((*host).clone());
                    l.degraded.push((*host).clone());
                    c.degraded += 1;
                    c.degraded_weight += w;
                    degraded_total += 1;
                }
                Health::Unhealthy => {}
            }
        }
        for g in &mut grouped {
            // Envoy orders localities lexicographically (region, zone, sub-zone).
            g.localities.sort_by(|a, b| a.locality.cmp(&b.locality));
        }

        let loads = priority::compute(
            &counts,
            overprovisioning,
            params.weighted_priority_health,
            threshold,
        );

        let seed = fastrand::u64(..);
        let algo = match &params.policy {
            LbPolicy::RoundRobin { slow_start } => Algo::RoundRobin {
                slow_start: slow_start_state(slow_start.as_ref(), &hosts),
            },
            LbPolicy::LeastRequest {
                choice_count,
                active_request_bias,
                slow_start,
            } => Algo::LeastRequest {
                choice_count: (*choice_count).max(1),
                bias: if *active_request_bias < 0.0 || active_request_bias.is_nan() {
                    1.0
                } else {
                    *active_request_bias
                },
                slow_start: slow_start_state(slow_start.as_ref(), &hosts),
            },
            LbPolicy::Random | LbPolicy::ClusterProvided => Algo::Random,
            LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. } => Algo::Hash,
        };

        let levels = grouped
            .into_iter()
            .zip(counts)
            .enumerate()
            .map(|(p, (g, counts))| {
                let in_panic = loads.panic[p];
                let pick = match &params.policy {
                    LbPolicy::RingHash {
                        minimum_ring_size,
                        maximum_ring_size,
                        murmur,
                    } => {
                        let (weights, min, _) = normalize(&g, in_panic, params.locality_weighted);
                        let max_size = (*maximum_ring_size).min(MAX_RING_SIZE);
                        let min_size = (*minimum_ring_size).min(max_size);
                        LevelPick::Ring(Ring::build(&weights, min, min_size, max_size, *murmur))
                    }
                    LbPolicy::Maglev { table_size } => {
                        let size = if *table_size <= maglev::MAX_TABLE_SIZE
                            && maglev::is_prime(*table_size)
                        {
                            *table_size
                        } else {
                            tracing::warn!(
                                table_size,
                                "maglev table size is not a prime of at most 5000011; using 65537"
                            );
                            maglev::DEFAULT_TABLE_SIZE
                        };
                        let (weights, _, max) = normalize(&g, in_panic, params.locality_weighted);
                        LevelPick::Maglev(Maglev::build(&weights, max, size))
                    }
                    _ => LevelPick::Sources(Box::new(Sources::build(
                        g,
                        &algo,
                        seed,
                        now,
                        params.locality_weighted,
                        overprovisioning,
                    ))),
                };
                Level { counts, pick }
            })
            .collect();

        HostSet {
            inner: Arc::new(Inner {
                hosts,
                levels,
                healthy_load: loads.healthy,
                degraded_load: loads.degraded,
                panic: loads.panic,
                algo,
                locality_weighted: params.locality_weighted,
                healthy: healthy_total,
                degraded: degraded_total,
            }),
        }
    }

    /// Picks a host. `ctx.hash` drives RING_HASH/MAGLEV (`None` → a random point, as Envoy
    /// does); `ctx.should_select_another` rejects a pick, which is retried up to
    /// `ctx.host_selection_retry_max_attempts` times before the last pick is used. Returns
    /// `None` when there is no host at all, or no healthy host and panic mode is disabled
    /// (threshold 0).
    pub fn choose(&self, ctx: &mut LbContext<'_>) -> Option<Arc<Host>> {
        let inner = &*self.inner;
        if inner.hosts.is_empty() {
            return None;
        }
        let attempts = ctx.host_selection_retry_max_attempts.saturating_add(1);
        let rejects = |h: &Host| ctx.should_select_another.is_some_and(|f| f(h));
        if let Algo::Hash = inner.algo {
            let hash = ctx.hash.unwrap_or_else(|| fastrand::u64(..));
            let (p, _) = priority::choose(hash, &inner.healthy_load, &inner.degraded_load);
            let level = inner.levels.get(p)?;
            let mut last = None;
            for attempt in 0..attempts {
                let host = match &level.pick {
                    LevelPick::Ring(ring) => ring.choose(hash, attempt),
                    LevelPick::Maglev(table) => table.choose(hash, attempt),
                    LevelPick::Sources(_) => None,
                }?;
                if !rejects(host) {
                    return Some(host.clone());
                }
                last = Some(host);
            }
            return last.cloned();
        }
        let mut last = None;
        for _ in 0..attempts {
            let host = inner.choose_once()?;
            if !rejects(&host) {
                return Some(host);
            }
            last = Some(host);
        }
        last
    }

    /// All hosts, in the order given.
    pub fn hosts(&self) -> &[Arc<Host>] {
        &self.inner.hosts
    }

    /// Hosts healthy for load balancing (not unhealthy, not ejected, not degraded).
    pub fn healthy_count(&self) -> usize {
        self.inner.healthy
    }

    /// Degraded hosts (EDS `DEGRADED`, not otherwise unhealthy).
    pub fn degraded_count(&self) -> usize {
        self.inner.degraded
    }

    /// Per priority: (hosts, healthy, load percent to the level, healthy and degraded).
    pub fn priority_loads(&self) -> Vec<(usize, usize, u32)> {
        self.priority_states()
            .into_iter()
            .map(|s| (s.hosts, s.healthy, s.healthy_load + s.degraded_load))
            .collect()
    }

    /// Per priority, in detail.
    pub fn priority_states(&self) -> Vec<PriorityState> {
        let inner = &*self.inner;
        inner
            .levels
            .iter()
            .enumerate()
            .map(|(p, l)| PriorityState {
                hosts: l.counts.hosts as usize,
                healthy: l.counts.healthy as usize,
                degraded: l.counts.degraded as usize,
                healthy_load: inner.healthy_load.get(p).copied().unwrap_or(0),
                degraded_load: inner.degraded_load.get(p).copied().unwrap_or(0),
                panic: inner.panic.get(p).copied().unwrap_or(false),
            })
            .collect()
    }

    /// Whether level `priority` is in panic.
    pub fn is_panic(&self, priority: usize) -> bool {
        self.inner.panic.get(priority).copied().unwrap_or(false)
    }
}

impl Inner {
    /// One pick for ROUND_ROBIN, LEAST_REQUEST and RANDOM (Envoy's `chooseHostOnce`).
    fn choose_once(&self) -> Option<Arc<Host>> {
        let random = fastrand::u64(..);
        let (p, availability) = priority::choose(random, &self.healthy_load, &self.degraded_load);
        let LevelPick::Sources(sources) = &self.levels.get(p)?.pick else {
            return None;
        };
        let source = if self.panic.get(p).copied().unwrap_or(false) {
            &sources.all
        } else {
            let (wrr, localities, whole) = match availability {
                Availability::Healthy => (
                    &sources.healthy_wrr,
                    &sources.healthy_localities,
                    &sources.healthy,
                ),
                Availability::Degraded => (
                    &sources.degraded_wrr,
                    &sources.degraded_localities,
                    &sources.degraded,
                ),
            };
            let locality = match wrr {
                Some(wrr) if self.locality_weighted => lock(wrr).pick(),
                _ => None,
            };
            match locality.and_then(|i| localities.get(i)) {
                Some(source) => source,
                None => whole,
            }
        };
        source.pick(&self.algo, random)
    }
}

impl LocalityWrr {
    /// Envoy's `LocalityWrr::rebuildLocalityScheduler` for one kind of eligible host.
    fn build(
        localities: &[LocalityGroup],
        eligible: impl Fn(&LocalityGroup) -> usize,
        overprovisioning: u32,
        seed: u64,
    ) -> Option<LocalityWrr> {
        if localities.iter().map(&eligible).sum::<usize>() == 0 {
            return None;
        }
        let entries: Vec<(usize, f64)> = localities
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let w = effective_locality_weight(l, eligible(l), overprovisioning);
                (w > 0.0).then_some((i, w))
            })
            .collect();
        if entries.is_empty() {
            return None;
        }
        let edf = Edf::with_picks(entries.len(), |e| entries[e as usize].1, seed as u32);
        Some(LocalityWrr { edf, entries })
    }

    fn pick(&mut self) -> Option<usize> {
        let entries = &self.entries;
        let e = self.edf.pick_and_add(|e| entries[e as usize].1)?;
        entries.get(e as usize).map(|(i, _)| *i)
    }
}

/// `weight × min(1, factor × eligible / hosts)`.
fn effective_locality_weight(l: &LocalityGroup, eligible: usize, overprovisioning: u32) -> f64 {
    if l.hosts.is_empty() {
        return 0.0;
    }
    let ratio = 1.0 * eligible as f64 / l.hosts.len() as f64;
    let effective = (f64::from(overprovisioning) / 100.0 * ratio).min(1.0);
    f64::from(l.weight) * effective
}

impl Sources {
    fn build(
        g: Grouped,
        algo: &Algo,
        seed: u64,
        now: Instant,
        locality_weighted: bool,
        overprovisioning: u32,
    ) -> Sources {
        let source = |hosts: Vec<Arc<Host>>| Source::new(hosts, algo, seed, now);
        let (mut healthy_localities, mut degraded_localities) = (Vec::new(), Vec::new());
        let (mut healthy_wrr, mut degraded_wrr) = (None, None);
        if locality_weighted {
            healthy_wrr = LocalityWrr::build(
                &g.localities,
                |l| l.healthy.len(),
                overprovisioning,
                fastrand::u64(..),
            )
            .map(Mutex::new);
            degraded_wrr = LocalityWrr::build(
                &g.localities,
                |l| l.degraded.len(),
                overprovisioning,
                fastrand::u64(..),
            )
            .map(Mutex::new);
            for l in &g.localities {
                healthy_localities.push(source(l.healthy.clone()));
                degraded_localities.push(source(l.degraded.clone()));
            }
        }
        Sources {
            all: source(g.hosts),
            healthy: source(g.healthy),
            degraded: source(g.degraded),
            healthy_localities,
            degraded_localities,
            healthy_wrr,
            degraded_wrr,
        }
    }
}

impl Source {
    fn new(hosts: Vec<Arc<Host>>, algo: &Algo, seed: u64, now: Instant) -> Source {
        let weighted = match algo {
            Algo::RoundRobin { slow_start } | Algo::LeastRequest { slow_start, .. } => {
                let equal = hosts.windows(2).all(|w| w[0].weight() == w[1].weight());
                let slow = slow_start.is_some_and(|s| now <= s.until);
                hosts.len() > 1 && (!equal || slow)
            }
            Algo::Random | Algo::Hash => false,
        };
        let edf = weighted.then(|| {
            let now = Some(now);
            Mutex::new(Edf::with_picks(
                hosts.len(),
                |i| host_weight(algo, &hosts[i as usize], now),
                seed as u32,
            ))
        });
        Source {
            hosts,
            rr: AtomicU64::new(seed),
            edf,
        }
    }

    fn pick(&self, algo: &Algo, random: u64) -> Option<Arc<Host>> {
        let n = self.hosts.len() as u64;
        if n == 0 {
            return None;
        }
        if let Some(edf) = &self.edf {
            let now = match algo {
                Algo::RoundRobin {
                    slow_start: Some(_),
                }
                | Algo::LeastRequest {
                    slow_start: Some(_),
                    ..
                } => Some(Instant::now()),
                _ => None,
            };
            let i = lock(edf).pick_and_add(|i| host_weight(algo, &self.hosts[i as usize], now))?;
            return self.hosts.get(i as usize).cloned();
        }
        let i = match algo {
            Algo::Random | Algo::Hash => random % n,
            Algo::RoundRobin { .. } => self.rr.fetch_add(1, Ordering::Relaxed) % n,
            Algo::LeastRequest { choice_count, .. } => {
                let mut candidate = fastrand::u64(..) % n;
                let mut least = self.hosts[candidate as usize].active_requests();
                for _ in 1..*choice_count {
                    let sampled = fastrand::u64(..) % n;
                    let active = self.hosts[sampled as usize].active_requests();
                    if active < least {
                        candidate = sampled;
                        least = active;
                    }
                }
                candidate
            }
        };
        self.hosts.get(i as usize).cloned()
    }
}

/// The EDF weight of a host (Envoy's `hostWeight`): its weight, over `(active + 1)^bias` for
/// least request, times the slow-start factor while some host may be warming up.
fn host_weight(algo: &Algo, host: &Host, now: Option<Instant>) -> f64 {
    let weight = f64::from(host.weight());
    let (weight, slow_start) = match algo {
        Algo::RoundRobin { slow_start } => (weight, slow_start),
        Algo::LeastRequest {
            bias, slow_start, ..
        } => {
            let active = host.active_requests();
            let active = if active == u64::MAX {
                active
            } else {
                active + 1
            };
            let weight = if *bias == 1.0 {
                weight / active as f64
            } else if *bias != 0.0 {
                weight / (active as f64).powf(*bias)
            } else {
                weight
            };
            (weight, slow_start)
        }
        Algo::Random | Algo::Hash => return weight,
    };
    match (slow_start, now) {
        (Some(s), Some(now)) if now <= s.until => apply_slow_start(weight, host, s, now),
        _ => weight,
    }
}

/// Envoy's `applySlowStartFactor`, with the host's join time as the start of its window.
fn apply_slow_start(weight: f64, host: &Host, s: &SlowStartState, now: Instant) -> f64 {
    if health(host) != Health::Healthy {
        return weight;
    }
    let elapsed_ms = now.saturating_duration_since(host.created()).as_millis();
    if elapsed_ms >= s.window_ms {
        return weight;
    }
    let time_factor = elapsed_ms.max(1) as f64 / s.window_ms as f64;
    let factor = if s.aggression == 1.0 || time_factor == 1.0 {
        time_factor
    } else {
        time_factor.powf(1.0 / s.aggression)
    };
    weight * factor.max(s.min_weight)
}

fn slow_start_state(config: Option<&SlowStart>, hosts: &[Arc<Host>]) -> Option<SlowStartState> {
    let config = config?;
    let window = config.window;
    if window.as_millis() == 0 {
        return None;
    }
    // Envoy's `latest_host_added_time_`: only hosts that join healthy start a window.
    let latest = hosts
        .iter()
        .filter(|h| health(h) == Health::Healthy)
        .map(|h| h.created())
        .max()?;
    let aggression = if config.aggression <= 0.0 || config.aggression.is_nan() {
        1.0
    } else {
        config.aggression
    };
    Some(SlowStartState {
        window_ms: window.as_millis(),
        aggression,
        min_weight: config.min_weight_percent / 100.0,
        until: latest + window,
    })
}

/// Envoy's thread-aware `normalizeWeights`: host weights scaled to sum to 1 over the level's
/// healthy hosts (all hosts in panic), or per locality by the raw locality weights. Returns the
/// weights in Envoy's order with the smallest and largest.
fn normalize(
    g: &Grouped,
    in_panic: bool,
    locality_weighted: bool,
) -> (Vec<(Arc<Host>, f64)>, f64, f64) {
    let mut out = Vec::new();
    let (mut min, mut max) = (1.0_f64, 0.0_f64);
    let mut push = |hosts: &[Arc<Host>], locality_weight: f64| {
        let sum: u64 = hosts.iter().map(|h| u64::from(h.weight())).sum();
        for h in hosts {
            let w = f64::from(h.weight()) * locality_weight / sum as f64;
            out.push((h.clone(), w));
            min = min.min(w);
            max = max.max(w);
        }
    };
    if !locality_weighted || g.localities.is_empty() {
        push(if in_panic { &g.hosts } else { &g.healthy }, 1.0);
    } else {
        let sum: u64 = g.localities.iter().map(|l| u64::from(l.weight)).sum();
        if sum > 0 {
            for l in &g.localities {
                if l.weight != 0 {
                    let lw = f64::from(l.weight) / sum as f64;
                    push(if in_panic { &l.hosts } else { &l.healthy }, lw);
                }
            }
        }
    }
    (out, min, max)
}
