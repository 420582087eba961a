//! Envoy's fully jittered exponential back-off between retries
//! (`JitteredExponentialBackOffStrategy`, `source/common/common/backoff_strategy.cc`).
//!
//! Retry `n` (1-based) waits a uniform random whole number of milliseconds in
//! `[0, interval(n))`, where `interval(1)` is the base and each following interval doubles
//! until doubling would pass half the cap, at which point it becomes the cap:
//!
//! | retry | base 25 ms, max 250 ms | base 100 ms, max 1 s |
//! |---|---|---|
//! | 1 | [0, 25) | [0, 100) |
//! | 2 | [0, 50) | [0, 200) |
//! | 3 | [0, 100) | [0, 400) |
//! | 4 | [0, 200) | [0, 800) |
//! | 5+ | [0, 250) | [0, 1000) |
//!
//! Envoy's router documentation states the range as `[0, (2^N − 1)·base)`; the source (read
//! for Envoy 1.40) uses `[0, 2^(N−1)·base)`, which is always inside the documented range. This
//! module follows the source.
//!
//! Unlike tower's `ExponentialBackoff`, the lower bound stays at zero ("full jitter").

use std::time::Duration;

use crate::config::route::RetryPolicy;

/// Envoy's default base interval (runtime `upstream.base_retry_backoff_ms`).
pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

/// The cap when none is configured: 10 × the base.
pub const DEFAULT_MAX_FACTOR: u32 = 10;

/// Envoy's back-off parameters, normalised the way its route config does: whole milliseconds
/// (sub-millisecond parts are truncated), at least 1 ms each, and `max ≥ base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    base_ms: u64,
    max_ms: u64,
}

impl BackoffConfig {
    /// Normalises `base` and `max`. A zero `base` means "unset" (25 ms); a zero `max` means
    /// "unset" (10 × base). Values under 1 ms become 1 ms, and a `max` below `base` is raised to
    /// `base` (Envoy rejects such a config; the converter reports it).
    pub fn new(base: Duration, max: Duration) -> BackoffConfig {
        let base_ms = if base.is_zero() {
            whole_ms(DEFAULT_BASE_INTERVAL)
        } else {
            whole_ms(base).max(1)
        };
        let max_ms = if max.is_zero() {
            base_ms.saturating_mul(u64::from(DEFAULT_MAX_FACTOR))
        } else {
            whole_ms(max).max(1)
        };
        BackoffConfig {
            base_ms,
            max_ms: max_ms.max(base_ms),
        }
    }

    /// The parameters of a route's retry policy.
    pub fn from_policy(policy: &RetryPolicy) -> BackoffConfig {
        BackoffConfig::new(policy.base_interval, policy.max_interval)
    }

    /// Base interval.
    pub fn base(&self) -> Duration {
        Duration::from_millis(self.base_ms)
    }

    /// Cap.
    pub fn max(&self) -> Duration {
        Duration::from_millis(self.max_ms)
    }

    /// The interval that follows `interval`: doubled while below half the cap, else the cap.
    fn next_interval(&self, interval: u64) -> u64 {
        if interval < self.max_ms / 2 {
            interval * 2
        } else {
            self.max_ms
        }
    }

    /// The exclusive upper bound, in milliseconds, of the wait before retry `retry` (1-based;
    /// 0 is treated as 1).
    pub fn interval_ms(&self, retry: u32) -> u64 {
        let mut interval = self.base_ms;
        for _ in 1..retry {
            if interval == self.max_ms {
                break;
            }
            interval = self.next_interval(interval);
        }
        interval
    }

    /// The wait before retry `retry` (1-based) for the random draw `random`: `random mod
    /// interval(retry)` milliseconds. Pure: the same inputs always give the same wait.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        Duration::from_millis(random % self.interval_ms(retry))
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig::new(DEFAULT_BASE_INTERVAL, Duration::ZERO)
    }
}

fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The back-off of one request's retries: each [`Backoff::next_backoff`] gives the wait before the
/// next retry and grows the interval.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    next_interval_ms: u64,
}

impl Backoff {
    /// A back-off whose first wait is drawn from `[0, base)`.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            next_interval_ms: config.base_ms,
        }
    }

    /// The parameters.
    pub fn config(&self) -> BackoffConfig {
        self.config
    }

    /// The exclusive upper bound of the next wait.
    pub fn current_interval(&self) -> Duration {
        Duration::from_millis(self.next_interval_ms)
    }

    /// The next wait, with a random draw from `fastrand`.
    pub fn next_backoff(&mut self) -> Duration {
        self.next_backoff_with(fastrand::u64(..))
    }

    /// The next wait for the random draw `random` (deterministic, for tests and replays).
    pub fn next_backoff_with(&mut self, random: u64) -> Duration {
        let interval = self.next_interval_ms;
        self.next_interval_ms = self.config.next_interval(interval);
        Duration::from_millis(random % interval)
    }

    /// Starts over from the base interval.
    pub fn reset(&mut self) {
        self.next_interval_ms = self.config.base_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn envoy_default_intervals() {
        let c = BackoffConfig::default();
        assert_eq!((c.base(), c.max()), (ms(25), ms(250)));
        let intervals: Vec<u64> = (1..=7).map(|n| c.interval_ms(n)).collect();
        assert_eq!(intervals, vec![25, 50, 100, 200, 250, 250, 250]);
        let mut b = Backoff::new(c);
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(b.current_interval());
            assert_eq!(
                b.next_backoff_with(u64::MAX),
                ms(u64::MAX % c.interval_ms(seen.len() as u32))
            );
        }
        assert_eq!(
            seen,
            vec![ms(25), ms(50), ms(100), ms(200), ms(250), ms(250)]
        );
    }

    #[test]
    fn doubling_limit_is_half_the_cap_rounded_down() {
        // 2 is not below 5 / 2 = 2, so the second interval is the cap (5), not 4.
        let c = BackoffConfig::new(ms(2), ms(5));
        assert_eq!(
            (c.interval_ms(1), c.interval_ms(2), c.interval_ms(3)),
            (2, 5, 5)
        );
        // base == max: always the cap.
        let c = BackoffConfig::new(ms(40), ms(40));
        assert_eq!((c.interval_ms(1), c.interval_ms(9)), (40, 40));
    }

    #[test]
    fn normalisation() {
        // Sub-millisecond values round up to 1 ms; fractions are truncated.
        let c = BackoffConfig::new(Duration::from_micros(300), Duration::from_micros(700));
        assert_eq!((c.base(), c.max()), (ms(1), ms(1)));
        let c = BackoffConfig::new(Duration::from_micros(25_900), Duration::ZERO);
        assert_eq!((c.base(), c.max()), (ms(25), ms(250)));
        // Unset base: 25 ms; max below base: raised to base.
        let c = BackoffConfig::new(Duration::ZERO, Duration::ZERO);
        assert_eq!((c.base(), c.max()), (ms(25), ms(250)));
        let c = BackoffConfig::new(ms(100), ms(10));
        assert_eq!((c.base(), c.max()), (ms(100), ms(100)));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BackoffConfig::new(ms(10), ms(1000)));
        b.next_backoff_with(1);
        b.next_backoff_with(1);
        assert_eq!(b.current_interval(), ms(40));
        b.reset();
        assert_eq!(b.current_interval(), ms(10));
        assert_eq!(b.next_backoff_with(19), ms(9));
    }

    #[test]
    fn stateful_and_pure_agree() {
        let c = BackoffConfig::new(ms(7), ms(300));
        let mut b = Backoff::new(c);
        for n in 1..20u32 {
            let r = u64::from(n) * 7919;
            assert_eq!(b.next_backoff_with(r), c.backoff(n, r), "retry {n}");
        }
    }

    /// Over many draws the first three waits of the default policy fill their ranges
    /// uniformly: every whole millisecond of the range is drawn about equally often, and the
    /// mean is the middle of the range.
    #[test]
    fn statistical_uniformity() {
        let c = BackoffConfig::default();
        const N: usize = 40_000;
        for retry in 1..=3u32 {
            let interval = usize::try_from(c.interval_ms(retry)).unwrap();
            let mut hist = vec![0usize; interval];
            let mut sum = 0u64;
            for _ in 0..N {
                let mut b = Backoff::new(c);
                let mut wait = Duration::ZERO;
                for _ in 0..retry {
                    wait = b.next_backoff();
                }
                let w = usize::try_from(wait.as_millis()).unwrap();
                assert!(w < interval, "retry {retry}: {w} ms not below {interval}");
                hist[w] += 1;
                sum += w as u64;
            }
            // Binomial(N, 1/interval): 7 standard deviations either side.
            let p = 1.0 / interval as f64;
            let expected = N as f64 * p;
            let sd = (N as f64 * p * (1.0 - p)).sqrt();
            for (ms, &count) in hist.iter().enumerate() {
                assert!(
                    (count as f64 - expected).abs() < 7.0 * sd,
                    "retry {retry}: {ms} ms drawn {count} times, expected {expected}"
                );
            }
            let mean = sum as f64 / N as f64;
            let middle = (interval - 1) as f64 / 2.0;
            assert!(
                (mean - middle).abs() < middle * 0.03,
                "retry {retry}: mean {mean} vs {middle}"
            );
        }
    }

    proptest! {
        /// Every wait is below its interval, below the cap, and inside the range Envoy's docs
        /// promise, [0, (2^N − 1)·base); intervals never shrink.
        #[test]
        fn waits_stay_in_range(
            base in 1u64..5_000,
            extra in 0u64..100_000,
            draws in proptest::collection::vec(any::<u64>(), 1..40),
        ) {
            let c = BackoffConfig::new(ms(base), ms(base + extra));
            let mut b = Backoff::new(c);
            let mut last_interval = 0;
            for (i, r) in draws.iter().enumerate() {
                let n = u32::try_from(i + 1).unwrap();
                let interval = u64::try_from(b.current_interval().as_millis()).unwrap();
                prop_assert!(interval >= last_interval);
                prop_assert!(interval <= c.max_ms);
                prop_assert_eq!(interval, c.interval_ms(n));
                last_interval = interval;
                let w = u64::try_from(b.next_backoff_with(*r).as_millis()).unwrap();
                prop_assert!(w < interval);
                prop_assert!(w < c.max_ms);
                let documented = (1u64 << n.min(62)).saturating_sub(1).saturating_mul(base);
                prop_assert!(w < documented);
            }
        }
    }
}
