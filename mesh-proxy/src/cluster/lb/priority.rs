//! Priority loads and panic, as Envoy's `LoadBalancerBase` computes them
//! (`recalculatePerPriorityState`, `recalculatePerPriorityPanic`,
//! `recalculateLoadInTotalPanic`, `choosePriority`).
//!
//! All integer arithmetic is Envoy's: health and loads are truncated percentages.

/// What one priority level holds, for the load computation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LevelCounts {
    /// Hosts in the level.
    pub(crate) hosts: u64,
    /// Healthy hosts (not degraded).
    pub(crate) healthy: u64,
    /// Degraded (and otherwise healthy) hosts.
    pub(crate) degraded: u64,
    /// Sum of all host weights.
    pub(crate) total_weight: u64,
    /// Sum of healthy host weights.
    pub(crate) healthy_weight: u64,
    /// Sum of degraded host weights.
    pub(crate) degraded_weight: u64,
}

/// Per-level loads (percent; healthy and degraded together sum to 100) and panic flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Loads {
    pub(crate) healthy: Vec<u32>,
    pub(crate) degraded: Vec<u32>,
    pub(crate) panic: Vec<bool>,
}

/// Whether a pick targets a level's healthy or its degraded hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Availability {
    Healthy,
    Degraded,
}

/// Computes loads and panic. `overprovisioning` is in percent (140 = 1.4), `panic_threshold`
/// in whole percent (0 disables panic), `weighted` is `weighted_priority_health`.
pub(crate) fn compute(
    levels: &[LevelCounts],
    overprovisioning: u32,
    weighted: bool,
    panic_threshold: u32,
) -> Loads {
    let n = levels.len().max(1);
    let mut loads = Loads {
        healthy: vec![0; n],
        degraded: vec![0; n],
        panic: vec![false; n],
    };
    let factor = u64::from(overprovisioning);
    let mut health = vec![0u32; n];
    let mut degraded = vec![0u32; n];
    for (i, level) in levels.iter().enumerate() {
        if level.hosts == 0 {
            continue;
        }
        let (h, d, total) = if weighted {
            (
                level.healthy_weight,
                level.degraded_weight,
                level.total_weight,
            )
        } else {
            (level.healthy, level.degraded, level.hosts)
        };
        if total == 0 {
            continue;
        }
        health[i] = (factor * h / total).min(100) as u32;
        degraded[i] = (factor * d / total).min(100) as u32;
    }
    let normalized_total = normalized_total(&health, &degraded);
    if normalized_total > 0 {
        let (first_healthy, left) = distribute(&mut loads.healthy, &health, 100, normalized_total);
        let (first_degraded, left) =
            distribute(&mut loads.degraded, &degraded, left, normalized_total);
        if left != 0 {
            if let Some(i) = first_healthy {
                loads.healthy[i] += left;
            } else if let Some(i) = first_degraded {
                loads.degraded[i] += left;
            }
        }
    }

    let threshold = panic_threshold.min(100);
    if threshold == 0 && normalized_total == 0 {
        // Nothing will be picked (no panic, no healthy host), but loads must sum to 100.
        loads.healthy[0] = 100;
        return loads;
    }
    let mut total_panic = true;
    for i in 0..n {
        let level = levels.get(i).copied().unwrap_or_default();
        loads.panic[i] = normalized_total != 100 && in_panic(&level, threshold);
        total_panic &= loads.panic[i];
    }
    if total_panic {
        // Every level in panic: split by host counts, whatever the health.
        let total_hosts: u64 = levels.iter().map(|l| l.hosts).sum();
        loads.degraded.iter_mut().for_each(|d| *d = 0);
        if total_hosts == 0 {
            loads.healthy.iter_mut().for_each(|h| *h = 0);
            loads.healthy[0] = 100;
            return loads;
        }
        let mut left = 100u32;
        let mut first_non_empty = None;
        for i in 0..n {
            let hosts = levels.get(i).map_or(0, |l| l.hosts);
            if first_non_empty.is_none() && hosts != 0 {
                first_non_empty = Some(i);
            }
            let load = (100 * hosts / total_hosts) as u32;
            loads.healthy[i] = load;
            left -= load;
        }
        if let Some(i) = first_non_empty {
            loads.healthy[i] += left;
        }
    }
    loads
}

fn normalized_total(health: &[u32], degraded: &[u32]) -> u32 {
    let sum: u64 = health.iter().chain(degraded).map(|v| u64::from(*v)).sum();
    sum.min(100) as u32
}

/// Envoy's `distributeLoad`: each level in order takes `availability × 100 / total`, capped by
/// what is left. Returns the first level with availability and the load left.
fn distribute(
    loads: &mut [u32],
    availability: &[u32],
    mut total_load: u32,
    normalized_total: u32,
) -> (Option<usize>, u32) {
    let mut first = None;
    for (i, a) in availability.iter().enumerate() {
        if first.is_none() && *a > 0 {
            first = Some(i);
        }
        loads[i] = total_load.min(a * 100 / normalized_total);
        total_load -= loads[i];
    }
    (first, total_load)
}

/// Envoy's `isHostSetInPanic`: (healthy + degraded) percent of the level's hosts under the
/// threshold. An empty level counts as 0%.
fn in_panic(level: &LevelCounts, threshold: u32) -> bool {
    let (healthy, degraded) = if level.hosts == 0 {
        (0.0, 0.0)
    } else {
        (
            100.0 * level.healthy as f64 / level.hosts as f64,
            100.0 * level.degraded as f64 / level.hosts as f64,
        )
    };
    healthy + degraded < f64::from(threshold)
}

/// Envoy's `choosePriority`: `hash % 100 + 1` against the cumulative healthy loads, then the
/// cumulative degraded loads.
pub(crate) fn choose(hash: u64, healthy: &[u32], degraded: &[u32]) -> (usize, Availability) {
    let point = hash % 100 + 1;
    let mut acc = 0u64;
    for (i, load) in healthy.iter().enumerate() {
        acc += u64::from(*load);
        if point <= acc {
            return (i, Availability::Healthy);
        }
    }
    for (i, load) in degraded.iter().enumerate() {
        acc += u64::from(*load);
        if point <= acc {
            return (i, Availability::Degraded);
        }
    }
    (0, Availability::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A level of `hosts` hosts, `healthy` of them healthy and `degraded` degraded, weight 1.
    fn level(hosts: u64, healthy: u64, degraded: u64) -> LevelCounts {
        LevelCounts {
            hosts,
            healthy,
            degraded,
            total_weight: hosts,
            healthy_weight: healthy,
            degraded_weight: degraded,
        }
    }

    /// Table from Envoy's `panic_threshold.rst` and `priority.rst` (100 hosts per level so the
    /// percentages are host counts), with Envoy's integer arithmetic: health = 140 × h / n,
    /// load = health × 100 / min(100, Σ health), remainder of rounding to the first level.
    /// The docs round two rows differently from the code; the code is followed:
    /// 25%/100% gives 35/65 (health 35 and 100) and 5%/65% gives 8/92 (7 and 91 over 98:
    /// 7 + 92, the 1 left goes to P0).
    #[test]
    fn priority_table() {
        type Case<'a> = (&'a [(u64, u64)], &'a [u32], &'a [bool]);
        let cases: &[Case<'_>] = &[
            // (healthy per 100 hosts for P0, P1) → loads, panic
            (&[(100, 100), (100, 100)], &[100, 0], &[false, false]),
            (&[(100, 72), (100, 100)], &[100, 0], &[false, false]),
            (&[(100, 71), (100, 100)], &[99, 1], &[false, false]),
            (&[(100, 50), (100, 100)], &[70, 30], &[false, false]),
            (&[(100, 25), (100, 100)], &[35, 65], &[false, false]),
            (&[(100, 0), (100, 100)], &[0, 100], &[false, false]),
            (&[(100, 72), (100, 72)], &[100, 0], &[false, false]),
            (&[(100, 71), (100, 71)], &[99, 1], &[false, false]),
            (&[(100, 50), (100, 60)], &[70, 30], &[false, false]),
            // 25% + 25%: health 35 + 35 = 70 < 100, both under 50% → total panic, by hosts.
            (&[(100, 25), (100, 25)], &[50, 50], &[true, true]),
            (&[(100, 5), (100, 65)], &[8, 92], &[true, false]),
            // Four hosts: P0 keeps everything down to 3/4 (105 → 100), 2/4 → 70/30.
            (&[(4, 4), (4, 4)], &[100, 0], &[false, false]),
            (&[(4, 3), (4, 4)], &[100, 0], &[false, false]),
            (&[(4, 2), (4, 4)], &[70, 30], &[false, false]),
            (&[(4, 1), (4, 4)], &[35, 65], &[false, false]),
            (&[(4, 0), (4, 4)], &[0, 100], &[false, false]),
            // One level: never panics at 100%, panics under 50% of hosts when short.
            (&[(4, 2)], &[100], &[false]),
            (&[(4, 1)], &[100], &[true]),
            (&[(4, 0)], &[100], &[true]),
            // All unhealthy with a threshold: total panic, split by host counts (Envoy's
            // `recalculateLoadInTotalPanic`), 4 + 12 hosts → 25/75.
            (&[(4, 0), (12, 0)], &[25, 75], &[true, true]),
            // Rounding remainder goes to the first level with health: 3 levels of 3 hosts,
            // one healthy each: health 46 ×3 = 138 → 100; loads 46, 46, 8.
            (
                &[(3, 1), (3, 1), (3, 1)],
                &[46, 46, 8],
                &[false, false, false],
            ),
        ];
        for (levels, loads, panic) in cases {
            let counts: Vec<LevelCounts> = levels.iter().map(|(n, h)| level(*n, *h, 0)).collect();
            let got = compute(&counts, 140, false, 50);
            assert_eq!(&got.healthy[..], *loads, "loads for {levels:?}");
            assert_eq!(&got.panic[..], *panic, "panic for {levels:?}");
            assert_eq!(got.healthy.iter().sum::<u32>(), 100, "{levels:?}");
        }
    }

    #[test]
    fn threshold_zero_with_nothing_healthy_sends_p0_without_panic() {
        let got = compute(&[level(4, 0, 0), level(4, 0, 0)], 140, false, 0);
        assert_eq!(got.healthy, vec![100, 0]);
        assert_eq!(got.panic, vec![false, false]);
    }

    #[test]
    fn threshold_zero_never_panics() {
        let got = compute(&[level(4, 1, 0), level(4, 1, 0)], 140, false, 0);
        // 35 + 35 = 70: P0 50, P1 50, neither in panic.
        assert_eq!(got.healthy, vec![50, 50]);
        assert_eq!(got.panic, vec![false, false]);
    }

    #[test]
    fn degraded_hosts_take_the_load_left_by_healthy_ones() {
        // Envoy's comment example: health 10/20/10 and degraded 20/10/0 (in percent, here with
        // 100 hosts and overprovisioning 100) give healthy 16/28/14 and degraded 28/14/0.
        let levels = [level(100, 10, 20), level(100, 20, 10), level(100, 10, 0)];
        let got = compute(&levels, 100, false, 0);
        assert_eq!(got.healthy, vec![16, 28, 14]);
        assert_eq!(got.degraded, vec![28, 14, 0]);
        assert_eq!(got.panic, vec![false, false, false]);
        // With the default threshold all three (30%, 30%, 10% available) are in panic: total
        // panic splits by host counts, 33 each and the 1 left to P0.
        let got = compute(&levels, 100, false, 50);
        assert_eq!(got.healthy, vec![34, 33, 33]);
        assert_eq!(got.degraded, vec![0, 0, 0]);
        assert_eq!(got.panic, vec![true, true, true]);
    }

    #[test]
    fn degraded_loads_without_panic() {
        // P0: 2 healthy + 2 degraded of 4 → health 70, degraded 70, availability 100% → no
        // panic; healthy 70, degraded 30.
        let got = compute(&[level(4, 2, 2)], 140, false, 50);
        assert_eq!(got.healthy, vec![70]);
        assert_eq!(got.degraded, vec![30]);
        assert_eq!(got.panic, vec![false]);
        assert_eq!(
            choose(69, &got.healthy, &got.degraded).1,
            Availability::Healthy
        );
        assert_eq!(
            choose(70, &got.healthy, &got.degraded).1,
            Availability::Degraded
        );
    }

    #[test]
    fn weighted_priority_health_uses_weights() {
        // P0: 2 hosts, the healthy one weight 1 and the unhealthy one weight 3 → 140 × 1/4 = 35.
        let p0 = LevelCounts {
            hosts: 2,
            healthy: 1,
            degraded: 0,
            total_weight: 4,
            healthy_weight: 1,
            degraded_weight: 0,
        };
        let p1 = level(2, 2, 0);
        assert_eq!(compute(&[p0, p1], 140, true, 50).healthy, vec![35, 65]);
        // By host count instead: 140 × 1/2 = 70.
        assert_eq!(compute(&[p0, p1], 140, false, 50).healthy, vec![70, 30]);
    }

    #[test]
    fn overprovisioning_factor_changes_the_spill_point() {
        // Factor 100: any unhealthy host spills (3/4 → 75/25).
        assert_eq!(
            compute(&[level(4, 3, 0), level(4, 4, 0)], 100, false, 50).healthy,
            vec![75, 25]
        );
        // Factor 200: 2/4 still keeps 100%.
        assert_eq!(
            compute(&[level(4, 2, 0), level(4, 4, 0)], 200, false, 50).healthy,
            vec![100, 0]
        );
    }

    #[test]
    fn choose_priority_by_cumulative_load() {
        let healthy = [70, 30];
        let degraded = [0, 0];
        // hash % 100 + 1 ≤ 70 → P0.
        assert_eq!(choose(0, &healthy, &degraded), (0, Availability::Healthy));
        assert_eq!(choose(69, &healthy, &degraded), (0, Availability::Healthy));
        assert_eq!(choose(70, &healthy, &degraded), (1, Availability::Healthy));
        assert_eq!(choose(99, &healthy, &degraded), (1, Availability::Healthy));
        assert_eq!(choose(169, &healthy, &degraded), (0, Availability::Healthy));
        // u64::MAX % 100 = 15.
        assert_eq!(
            choose(u64::MAX, &healthy, &degraded),
            (0, Availability::Healthy)
        );
    }

    #[test]
    fn empty_levels_have_no_load() {
        let got = compute(&[level(0, 0, 0), level(4, 4, 0)], 140, false, 50);
        assert_eq!(got.healthy, vec![0, 100]);
        assert_eq!(got.panic, vec![false, false]);
        let none = compute(&[], 140, false, 50);
        assert_eq!(none.healthy, vec![100]);
        assert_eq!(none.panic, vec![true]);
    }
}
