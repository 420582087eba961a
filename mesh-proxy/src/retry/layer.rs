//! The retry layer's configuration.

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::Retry;
use super::budget::RetryBudget;
use super::policy::DefaultClassify;
use super::replay::DEFAULT_BUFFER_LIMIT;
use super::state::RetryStats;
use crate::config::route::RetryPolicy;

/// Retries requests to the wrapped service by a route's [`RetryPolicy`], with Envoy's
/// semantics (see [the module docs](super)).
#[derive(Clone)]
pub struct RetryLayer<C = DefaultClassify> {
    pub(super) policy: Arc<RetryPolicy>,
    pub(super) budget: Arc<dyn RetryBudget>,
    pub(super) stats: RetryStats,
    pub(super) buffer_limit: usize,
    pub(super) include_attempt_count: bool,
    pub(super) classify: C,
}

impl RetryLayer {
    /// Retries by `policy`, within `budget` (a cluster's
    /// [`ResourceManager`](crate::cluster::resources::ResourceManager), or
    /// [`Unlimited`](super::Unlimited)), counting into `stats`. Request bodies are kept for
    /// replay up to 1 MiB, and `x-envoy-attempt-count` is not sent.
    pub fn new(
        policy: Arc<RetryPolicy>,
        budget: Arc<dyn RetryBudget>,
        stats: RetryStats,
    ) -> RetryLayer {
        RetryLayer {
            policy,
            budget,
            stats,
            // Envoy's `per_connection_buffer_limit_bytes` default.
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            // Envoy's `include_request_attempt_count` default.
            include_attempt_count: false,
            classify: DefaultClassify,
        }
    }
}

impl<C> RetryLayer<C> {
    /// Keeps at most `bytes` of a request body for replays (the route's
    /// `request_body_buffer_limit`, else `per_connection_buffer_limit_bytes`). A body that
    /// outgrows it is not retried and counts `retry_or_shadow_abandoned`.
    #[must_use]
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        self.buffer_limit = bytes;
        self
    }

    /// Sends `x-envoy-attempt-count: N` upstream on every attempt (the virtual host's
    /// `include_request_attempt_count`).
    #[must_use]
    pub fn include_attempt_count(mut self, include: bool) -> Self {
        self.include_attempt_count = include;
        self
    }

    /// Classifies the inner service's errors with `classify` (a closure `Fn(&E) -> Failure`
    /// or any [`ClassifyError`](super::ClassifyError)).
    pub fn classify_with<C2>(self, classify: C2) -> RetryLayer<C2> {
        RetryLayer {
            policy: self.policy,
            budget: self.budget,
            stats: self.stats,
            buffer_limit: self.buffer_limit,
            include_attempt_count: self.include_attempt_count,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Retry<S, C> {
        Retry {
            inner,
            config: self.clone(),
        }
    }
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .field("buffer_limit", &self.buffer_limit)
            .field("include_attempt_count", &self.include_attempt_count)
            .finish_non_exhaustive()
    }
}
