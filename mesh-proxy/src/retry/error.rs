//! The retry layer's error.

use crate::classify::Failure;

use super::policy::ClassifyError;

/// The error of a [`Retry`](super::Retry) service: the last attempt's error, or its per-try
/// timeout.
#[derive(Debug, thiserror::Error)]
pub enum Error<E> {
    /// The inner service failed (on the last attempt, or in `poll_ready`).
    #[error("upstream request failed")]
    Upstream(#[source] E),
    /// The last attempt ran past the policy's `per_try_timeout` (Envoy answers 504
    /// `upstream request timeout`, flag `UT`).
    #[error("upstream per-try timeout")]
    PerTryTimeout,
}

impl<E> Error<E> {
    /// The failure it stands for, with `classify` for inner errors.
    pub fn failure<C: ClassifyError<E>>(&self, classify: &C) -> Failure {
        match self {
            Error::Upstream(e) => classify.classify(e),
            Error::PerTryTimeout => Failure::PerTryTimeout,
        }
    }

    /// The inner error, if it is one.
    pub fn into_upstream(self) -> Option<E> {
        match self {
            Error::Upstream(e) => Some(e),
            Error::PerTryTimeout => None,
        }
    }
}
