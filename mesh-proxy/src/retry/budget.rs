//! What limits retries across requests: Envoy's per-cluster retry concurrency
//! (`max_retries` or `retry_budget`, see [`crate::cluster::resources`]).
//!
//! A retry takes a [`RetryPermit`] when it is scheduled and holds it through its back-off and
//! its attempt, until that attempt's outcome is judged (Envoy's `retries().inc()` in
//! `shouldRetry`, `dec()` on the next `shouldRetry` or when the request ends).

use std::fmt;
use std::sync::Arc;

use crate::cluster::resources::{ResourceGuard, ResourceManager};

/// A source of retry permits. Object safe, so layers hold an `Arc<dyn RetryBudget>`.
///
/// ```
/// use mesh_proxy::retry::{RetryBudget, RetryPermit};
///
/// /// Refuses every retry.
/// #[derive(Debug)]
/// struct NoRetries;
/// impl RetryBudget for NoRetries {
///     fn try_acquire_retry(&self) -> Option<RetryPermit> {
///         None
///     }
/// }
/// assert!(NoRetries.try_acquire_retry().is_none());
/// ```
pub trait RetryBudget: Send + Sync + fmt::Debug {
    /// One more retry in flight, or `None` when the budget is spent (the caller counts
    /// `upstream_rq_retry_overflow` and answers with the failed attempt).
    fn try_acquire_retry(&self) -> Option<RetryPermit>;
}

/// Permission for one retry in flight; given back when dropped.
#[must_use = "the retry is given back as soon as the permit is dropped"]
pub struct RetryPermit(Permit);

enum Permit {
    Unlimited,
    Resource { _guard: ResourceGuard },
    Custom { _guard: Box<dyn Send + Sync> },
}

impl RetryPermit {
    /// A permit that holds nothing.
    pub fn unlimited() -> RetryPermit {
        RetryPermit(Permit::Unlimited)
    }

    /// A permit that holds `guard` until dropped (for custom budgets).
    pub fn holding<G: Send + Sync + 'static>(guard: G) -> RetryPermit {
        RetryPermit(Permit::Custom {
            _guard: Box::new(guard),
        })
    }
}

impl From<ResourceGuard> for RetryPermit {
    fn from(guard: ResourceGuard) -> RetryPermit {
        RetryPermit(Permit::Resource { _guard: guard })
    }
}

impl fmt::Debug for RetryPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Permit::Unlimited => "unlimited",
            Permit::Resource { .. } => "cluster",
            Permit::Custom { .. } => "custom",
        };
        f.debug_tuple("RetryPermit").field(&kind).finish()
    }
}

/// The cluster's circuit breakers: `max_retries`, or the retry budget when configured.
impl RetryBudget for ResourceManager {
    fn try_acquire_retry(&self) -> Option<RetryPermit> {
        ResourceManager::try_acquire_retry(self).map(RetryPermit::from)
    }
}

/// No limit on concurrent retries (only the policy's `num_retries` applies).
#[derive(Clone, Copy, Debug, Default)]
pub struct Unlimited;

impl RetryBudget for Unlimited {
    fn try_acquire_retry(&self) -> Option<RetryPermit> {
        Some(RetryPermit::unlimited())
    }
}

impl<T: RetryBudget + ?Sized> RetryBudget for Arc<T> {
    fn try_acquire_retry(&self) -> Option<RetryPermit> {
        (**self).try_acquire_retry()
    }
}

impl<T: RetryBudget + ?Sized> RetryBudget for &T {
    fn try_acquire_retry(&self) -> Option<RetryPermit> {
        (**self).try_acquire_retry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::resources::{Resource, ResourceStats};
    use crate::config::cluster::Thresholds;

    #[test]
    fn cluster_permits_hold_the_retry_resource() {
        let m = ResourceManager::new(
            &Thresholds {
                max_retries: 1,
                ..Thresholds::default()
            },
            ResourceStats::default(),
        );
        let budget: Arc<dyn RetryBudget> = Arc::new(m.clone());
        let p = budget.try_acquire_retry().unwrap();
        assert_eq!(m.count(Resource::Retry), 1);
        assert!(budget.try_acquire_retry().is_none());
        drop(p);
        assert_eq!(m.count(Resource::Retry), 0);
        assert!(budget.try_acquire_retry().is_some());
    }

    #[test]
    fn custom_permits_release_on_drop() {
        let m = ResourceManager::new(&Thresholds::default(), ResourceStats::default());
        let p = RetryPermit::holding(m.try_acquire_request().unwrap());
        assert_eq!(m.count(Resource::Request), 1);
        drop(p);
        assert_eq!(m.count(Resource::Request), 0);
        assert!(Unlimited.try_acquire_retry().is_some());
    }
}
