//! The retry state of one request: Envoy's `RetryStateImpl::shouldRetry` bookkeeping, for the
//! [`Retry`](super::Retry) layer or a router that drives its attempts itself.
//!
//! For each attempt's outcome, [`RetryState::should_retry`] does what Envoy does, in order:
//! 1. if the previous outcome was retried and this one is not retriable, count
//!    `upstream_rq_retry_success` (even when this outcome is a failure that the policy does
//!    not retry, e.g. a 404 or a circuit-breaker overflow);
//! 2. give back the retry permit held since the previous retry was scheduled;
//! 3. not retriable: [`RetryStatus::No`];
//! 4. no retries left (`num_retries`): count `upstream_rq_retry_limit_exceeded`,
//!    [`RetryStatus::NoRetryLimitExceeded`] (response flag `URX`);
//! 5. use up one retry, then ask the budget: refused, count `upstream_rq_retry_overflow`,
//!    [`RetryStatus::NoOverflow`] (flag `UO`);
//! 6. hold the permit, count `upstream_rq_retry`, draw the back-off (counting
//!    `upstream_rq_retry_backoff_exponential`) and answer [`RetryStatus::Yes`].
//!
//! `NoHealthyUpstream` is the exception: Envoy answers it (503 `UH`) without consulting the
//! retry state, so nothing is counted and the permit stays held until the state is dropped.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::backoff::{Backoff, BackoffConfig};
use super::budget::{RetryBudget, RetryPermit};
use super::policy::{self, RetryDecision};
use crate::classify::{Failure, Outcome};
use crate::config::matcher::PseudoHeaders;
use crate::config::route::{RetryOn, RetryPolicy};
use crate::stats::{Counter, Store};

/// The retry counters of a cluster (`cluster.NAME.`), with Envoy's names.
#[derive(Clone, Debug, Default)]
pub struct RetryStats {
    /// `upstream_rq_retry`: retries scheduled.
    pub upstream_rq_retry: Counter,
    /// `upstream_rq_retry_success`: retried requests whose retry was not retried again.
    pub upstream_rq_retry_success: Counter,
    /// `upstream_rq_retry_overflow`: retries refused by the circuit breakers or budget.
    pub upstream_rq_retry_overflow: Counter,
    /// `upstream_rq_retry_limit_exceeded`: retriable outcomes with no retries left.
    pub upstream_rq_retry_limit_exceeded: Counter,
    /// `upstream_rq_retry_backoff_exponential`: back-off timers armed.
    pub upstream_rq_retry_backoff_exponential: Counter,
    /// `upstream_rq_per_try_timeout`: attempts cut by the per-try timeout.
    pub upstream_rq_per_try_timeout: Counter,
    /// `retry_or_shadow_abandoned`: requests whose body outgrew the buffer limit while
    /// retries were possible.
    pub retry_or_shadow_abandoned: Counter,
}

impl RetryStats {
    /// The counters under `prefix` (`cluster.NAME.`) in `store`.
    pub fn new(store: &Store, prefix: &str) -> RetryStats {
        let c = |name: &str| store.counter(format!("{prefix}{name}"));
        RetryStats {
            upstream_rq_retry: c("upstream_rq_retry"),
            upstream_rq_retry_success: c("upstream_rq_retry_success"),
            upstream_rq_retry_overflow: c("upstream_rq_retry_overflow"),
            upstream_rq_retry_limit_exceeded: c("upstream_rq_retry_limit_exceeded"),
            upstream_rq_retry_backoff_exponential: c("upstream_rq_retry_backoff_exponential"),
            upstream_rq_per_try_timeout: c("upstream_rq_per_try_timeout"),
            retry_or_shadow_abandoned: c("retry_or_shadow_abandoned"),
        }
    }
}

/// The answer of [`RetryState::should_retry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryStatus {
    /// Not retriable: the outcome goes downstream.
    No,
    /// Retry after waiting `backoff` (zero for an immediate retry).
    Yes {
        /// How long to wait before the next attempt.
        backoff: Duration,
    },
    /// Retriable, but the circuit breakers refused the retry (`UO`).
    NoOverflow,
    /// Retriable, but no retries are left (`URX`).
    NoRetryLimitExceeded,
}

/// The retry state of one request (see the module docs).
#[derive(Debug)]
pub struct RetryState {
    policy: Arc<RetryPolicy>,
    retry_on: RetryOn,
    retries_remaining: u32,
    backoff: Backoff,
    /// Held from a scheduled retry until the next outcome is judged.
    permit: Option<RetryPermit>,
    /// Request bytes went upstream on a reset attempt (ends `reset-before-request`).
    upstream_request_started: bool,
    early_data: bool,
    attempts: u32,
}

impl RetryState {
    /// The state for a request with these headers: the `retriable_request_headers` gate is
    /// applied once, here (a request that fails it is never retried).
    pub fn new(
        policy: Arc<RetryPolicy>,
        request_headers: &HeaderMap,
        pseudo: &PseudoHeaders<'_>,
    ) -> RetryState {
        let retry_on = if policy::request_allows_retry(&policy, request_headers, pseudo) {
            policy.retry_on
        } else {
            RetryOn::default()
        };
        RetryState {
            retry_on,
            retries_remaining: policy.num_retries,
            backoff: Backoff::new(BackoffConfig::from_policy(&policy)),
            permit: None,
            upstream_request_started: false,
            early_data: request_headers.contains_key("early-data"),
            attempts: 1,
            policy,
        }
    }

    /// Whether any condition is in effect (Envoy's `enabled()`: the request body is buffered
    /// for replay only then).
    pub fn enabled(&self) -> bool {
        self.retry_on != RetryOn::default()
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<RetryPolicy> {
        &self.policy
    }

    /// Attempts made or started so far (1 before any retry): the value of
    /// `x-envoy-attempt-count` for the current attempt.
    pub fn attempt_count(&self) -> u32 {
        self.attempts
    }

    /// Retries left.
    pub fn retries_remaining(&self) -> u32 {
        self.retries_remaining
    }

    /// Whether `outcome` is retriable by the policy, without changing any state or stat.
    pub fn would_retry(&self, outcome: &Outcome<'_>) -> RetryDecision {
        let started = self.upstream_request_started
            || matches!(outcome, Outcome::Failure(f) if policy::failure_sent_bytes(*f));
        policy::decide_with(
            self.retry_on,
            &self.policy,
            outcome,
            started,
            self.early_data,
        )
    }

    /// Judges an attempt's outcome (see the module docs), taking a retry permit from `budget`.
    pub fn should_retry(
        &mut self,
        outcome: &Outcome<'_>,
        budget: &dyn RetryBudget,
        stats: &RetryStats,
    ) -> RetryStatus {
        if matches!(outcome, Outcome::Failure(Failure::NoHealthyUpstream)) {
            return RetryStatus::No;
        }
        let decision = self.would_retry(outcome);
        if let Outcome::Failure(f) = outcome {
            self.upstream_request_started |= policy::failure_sent_bytes(*f);
        }
        if self.permit.is_some() && !decision.is_retry() {
            stats.upstream_rq_retry_success.inc();
        }
        self.permit = None;
        if !decision.is_retry() {
            return RetryStatus::No;
        }
        if self.retries_remaining == 0 {
            stats.upstream_rq_retry_limit_exceeded.inc();
            return RetryStatus::NoRetryLimitExceeded;
        }
        self.retries_remaining -= 1;
        let Some(permit) = budget.try_acquire_retry() else {
            stats.upstream_rq_retry_overflow.inc();
            return RetryStatus::NoOverflow;
        };
        self.permit = Some(permit);
        self.attempts += 1;
        stats.upstream_rq_retry.inc();
        let backoff = match decision {
            RetryDecision::Immediately => Duration::ZERO,
            _ => {
                stats.upstream_rq_retry_backoff_exponential.inc();
                self.backoff.next_backoff()
            }
        };
        RetryStatus::Yes { backoff }
    }

    /// Gives up on retries for the rest of the request (Envoy resets its retry state when the
    /// body outgrows the buffer): the permit is given back and nothing more is counted.
    pub fn disable(&mut self) {
        self.retry_on = RetryOn::default();
        self.permit = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::resources::{Resource, ResourceManager, ResourceStats};
    use crate::config::cluster::Thresholds;
    use crate::config::matcher::{HeaderMatch, HeaderMatcher, StringMatcher};
    use crate::retry::Unlimited;
    use http::StatusCode;

    const PSEUDO: PseudoHeaders<'static> = PseudoHeaders {
        authority: "svc",
        path: "/",
        method: "GET",
        scheme: "http",
    };

    fn state(retry_on: &str, num_retries: u32) -> RetryState {
        let policy = RetryPolicy {
            retry_on: RetryOn::parse(retry_on).unwrap(),
            num_retries,
            ..RetryPolicy::default()
        };
        RetryState::new(Arc::new(policy), &HeaderMap::new(), &PSEUDO)
    }

    fn status(s: u16, h: &HeaderMap) -> Outcome<'_> {
        Outcome::Response {
            status: StatusCode::from_u16(s).unwrap(),
            headers: h,
        }
    }

    fn counts(s: &RetryStats) -> [u64; 5] {
        [
            s.upstream_rq_retry.get(),
            s.upstream_rq_retry_success.get(),
            s.upstream_rq_retry_overflow.get(),
            s.upstream_rq_retry_limit_exceeded.get(),
            s.upstream_rq_retry_backoff_exponential.get(),
        ]
    }

    #[test]
    fn retries_until_the_limit() {
        let h = HeaderMap::new();
        let stats = RetryStats::default();
        let mut st = state("5xx", 2);
        assert!(st.enabled());
        let s1 = st.should_retry(&status(503, &h), &Unlimited, &stats);
        let RetryStatus::Yes { backoff } = s1 else {
            panic!("{s1:?}")
        };
        assert!(backoff < Duration::from_millis(25));
        assert_eq!(st.attempt_count(), 2);
        let RetryStatus::Yes { backoff } = st.should_retry(&status(500, &h), &Unlimited, &stats)
        else {
            panic!()
        };
        assert!(backoff < Duration::from_millis(50));
        assert_eq!(
            st.should_retry(&status(502, &h), &Unlimited, &stats),
            RetryStatus::NoRetryLimitExceeded
        );
        // retry, success, overflow, limit exceeded, back-off.
        assert_eq!(counts(&stats), [2, 0, 0, 1, 2]);
        assert_eq!(st.attempt_count(), 3);
    }

    #[test]
    fn success_after_a_retry_is_counted_once() {
        let h = HeaderMap::new();
        let stats = RetryStats::default();
        let mut st = state("5xx", 3);
        assert!(matches!(
            st.should_retry(&status(503, &h), &Unlimited, &stats),
            RetryStatus::Yes { .. }
        ));
        assert_eq!(
            st.should_retry(&status(200, &h), &Unlimited, &stats),
            RetryStatus::No
        );
        assert_eq!(counts(&stats), [1, 1, 0, 0, 1]);
        // A first attempt that succeeds counts nothing.
        let stats = RetryStats::default();
        let mut st = state("5xx", 3);
        assert_eq!(
            st.should_retry(&status(200, &h), &Unlimited, &stats),
            RetryStatus::No
        );
        assert_eq!(counts(&stats), [0; 5]);
        // A non-retriable failure after a retry also counts as a retry success (Envoy).
        let stats = RetryStats::default();
        let mut st = state("5xx", 3);
        let _ = st.should_retry(&status(503, &h), &Unlimited, &stats);
        let _ = st.should_retry(&status(404, &h), &Unlimited, &stats);
        let _ = st.should_retry(&Outcome::Failure(Failure::Overflow), &Unlimited, &stats);
        assert_eq!(counts(&stats), [1, 1, 0, 0, 1]);
    }

    #[test]
    fn budget_refusal_is_an_overflow_and_permits_are_held_until_judged() {
        let h = HeaderMap::new();
        let m = ResourceManager::new(
            &Thresholds {
                max_retries: 1,
                ..Thresholds::default()
            },
            ResourceStats::default(),
        );
        let stats = RetryStats::default();
        let mut a = state("5xx", 5);
        let mut b = state("5xx", 5);
        assert!(matches!(
            a.should_retry(&status(503, &h), &m, &stats),
            RetryStatus::Yes { .. }
        ));
        assert_eq!(m.count(Resource::Retry), 1, "held through the back-off");
        assert_eq!(
            b.should_retry(&status(503, &h), &m, &stats),
            RetryStatus::NoOverflow
        );
        assert_eq!(
            b.retries_remaining(),
            4,
            "a refused retry still uses one up"
        );
        // a's retried attempt fails again: the permit is given back, then taken again.
        assert!(matches!(
            a.should_retry(&status(503, &h), &m, &stats),
            RetryStatus::Yes { .. }
        ));
        assert_eq!(m.count(Resource::Retry), 1);
        drop(a);
        assert_eq!(m.count(Resource::Retry), 0, "given back with the state");
        assert_eq!(counts(&stats), [2, 0, 1, 0, 2]);
    }

    #[test]
    fn no_healthy_upstream_is_not_judged() {
        let h = HeaderMap::new();
        let m = ResourceManager::new(&Thresholds::default(), ResourceStats::default());
        let stats = RetryStats::default();
        let mut st = state("5xx,reset", 3);
        let _ = st.should_retry(&status(503, &h), &m, &stats);
        assert_eq!(
            st.should_retry(&Outcome::Failure(Failure::NoHealthyUpstream), &m, &stats),
            RetryStatus::No
        );
        assert_eq!(counts(&stats), [1, 0, 0, 0, 1]);
        assert_eq!(m.count(Resource::Retry), 1);
    }

    #[test]
    fn reset_before_request_stops_once_bytes_were_sent() {
        let stats = RetryStats::default();
        let mut st = state("reset-before-request", 5);
        let before = Outcome::Failure(Failure::Reset {
            before_request: true,
        });
        let after = Outcome::Failure(Failure::Reset {
            before_request: false,
        });
        assert!(matches!(
            st.should_retry(&before, &Unlimited, &stats),
            RetryStatus::Yes { .. }
        ));
        assert!(matches!(
            st.should_retry(
                &Outcome::Failure(Failure::ConnectFailure),
                &Unlimited,
                &stats
            ),
            RetryStatus::Yes { .. }
        ));
        // A response does not mark the request started (Envoy tracks it on resets only).
        let h = HeaderMap::new();
        assert_eq!(st.would_retry(&status(503, &h)), RetryDecision::No);
        assert_eq!(st.should_retry(&after, &Unlimited, &stats), RetryStatus::No);
        // Sticky: a later reset with nothing sent on that attempt is not retried either.
        assert_eq!(st.would_retry(&before), RetryDecision::No);
    }

    #[test]
    fn request_header_gate_disables_every_condition() {
        let policy = Arc::new(RetryPolicy {
            retry_on: RetryOn::parse("5xx").unwrap(),
            num_retries: 3,
            retriable_request_headers: vec![HeaderMatcher {
                name: ":method".into(),
                kind: HeaderMatch::String(StringMatcher::exact("GET")),
                invert: false,
                treat_missing_as_empty: false,
            }],
            ..RetryPolicy::default()
        });
        let h = HeaderMap::new();
        let stats = RetryStats::default();
        let post = PseudoHeaders {
            method: "POST",
            ..PSEUDO
        };
        let mut st = RetryState::new(policy.clone(), &h, &post);
        assert!(!st.enabled());
        assert_eq!(
            st.should_retry(&status(503, &h), &Unlimited, &stats),
            RetryStatus::No
        );
        let st = RetryState::new(policy, &h, &PSEUDO);
        assert!(st.enabled());
    }

    #[test]
    fn too_early_is_retried_without_backoff() {
        let policy = Arc::new(RetryPolicy {
            retry_on: RetryOn::parse("retriable-status-codes").unwrap(),
            retriable_status_codes: vec![425],
            ..RetryPolicy::default()
        });
        let h = HeaderMap::new();
        let stats = RetryStats::default();
        let mut st = RetryState::new(policy.clone(), &h, &PSEUDO);
        assert_eq!(
            st.should_retry(&status(425, &h), &Unlimited, &stats),
            RetryStatus::Yes {
                backoff: Duration::ZERO
            }
        );
        assert_eq!(counts(&stats), [1, 0, 0, 0, 0]);
        let mut early = HeaderMap::new();
        early.insert("early-data", "1".parse().unwrap());
        let st = RetryState::new(policy, &early, &PSEUDO);
        assert_eq!(st.would_retry(&status(425, &h)), RetryDecision::No);
    }

    #[test]
    fn disable_gives_the_permit_back() {
        let h = HeaderMap::new();
        let m = ResourceManager::new(&Thresholds::default(), ResourceStats::default());
        let stats = RetryStats::default();
        let mut st = state("5xx", 3);
        let _ = st.should_retry(&status(503, &h), &m, &stats);
        assert_eq!(m.count(Resource::Retry), 1);
        st.disable();
        assert_eq!(m.count(Resource::Retry), 0);
        assert!(!st.enabled());
        assert_eq!(
            st.should_retry(&status(503, &h), &m, &stats),
            RetryStatus::No
        );
        assert_eq!(
            counts(&stats),
            [1, 0, 0, 0, 1],
            "no success counted after disable"
        );
    }

    #[test]
    fn stats_have_envoy_names() {
        let store = Store::new();
        let s = RetryStats::new(&store, "cluster.x.");
        s.upstream_rq_retry.inc();
        s.retry_or_shadow_abandoned.inc();
        s.upstream_rq_per_try_timeout.inc();
        let names: Vec<String> = store.values().into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(
            names,
            [
                "cluster.x.retry_or_shadow_abandoned",
                "cluster.x.upstream_rq_per_try_timeout",
                "cluster.x.upstream_rq_retry",
                "cluster.x.upstream_rq_retry_backoff_exponential",
                "cluster.x.upstream_rq_retry_limit_exceeded",
                "cluster.x.upstream_rq_retry_overflow",
                "cluster.x.upstream_rq_retry_success",
            ]
        );
    }
}
