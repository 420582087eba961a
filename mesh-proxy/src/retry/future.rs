//! The retry layer's response future: attempt, judge, back off, attempt again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body::Body;
use tokio::time::Sleep;
use tower::Service;

use super::budget::RetryBudget;
use super::error::Error;
use super::policy::ClassifyError;
use super::replay::{Replay, ReplayBody};
use super::state::{RetryState, RetryStats, RetryStatus};
use crate::classify::{Failure, Outcome};

const ATTEMPT_COUNT: &str = "x-envoy-attempt-count";

/// What the retry layer tells about a response it returns, in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryInfo {
    /// Attempts made, this one included (1 without retries).
    pub attempt_count: u32,
    /// The final judgement: [`RetryStatus::NoRetryLimitExceeded`] means Envoy's `URX` flag,
    /// [`RetryStatus::NoOverflow`] its `UO` flag.
    pub status: RetryStatus,
}

/// The future of [`Retry`](super::Retry).
pub struct ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(super) service: S,
    pub(super) parts: http::request::Parts,
    /// `None` when the request will not be retried (nothing is kept).
    pub(super) replay: Option<Replay<B>>,
    pub(super) state: RetryState,
    pub(super) budget: Arc<dyn RetryBudget>,
    pub(super) stats: RetryStats,
    pub(super) classify: C,
    pub(super) include_attempt_count: bool,
    pub(super) per_try_timeout: Option<Duration>,
    pub(super) phase: Phase<S::Future, B>,
}

pub(super) enum Phase<F, B> {
    /// An attempt is in flight, bounded by the per-try timeout.
    Attempt {
        future: Pin<Box<F>>,
        per_try: Option<Pin<Box<Sleep>>>,
    },
    /// Waiting out the back-off before the next attempt.
    Backoff {
        sleep: Pin<Box<Sleep>>,
        body: ReplayBody<B>,
    },
    /// Waiting for the service to accept the next attempt.
    Ready { body: ReplayBody<B> },
    /// Finished.
    Done,
}

// The service, classifier and request head are never pinned: the futures that are live
// across polls are boxed, so the future can be moved freely whatever `S` and `C` are.
impl<S, C, B> Unpin for ResponseFuture<S, C, B> where S: Service<Request<ReplayBody<B>>> {}

/// One attempt's result.
enum Attempt<R, E> {
    Response(R),
    Failed(E),
    PerTryTimeout,
}

impl<S, C, B> ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    /// Starts the attempt with `body` on the (ready) service.
    pub(super) fn start_attempt(&mut self, body: ReplayBody<B>) {
        if self.include_attempt_count {
            self.parts
                .headers
                .insert(ATTEMPT_COUNT, HeaderValue::from(self.state.attempt_count()));
        }
        let request = Request::from_parts(self.parts.clone(), body);
        let future = Box::pin(self.service.call(request));
        let per_try = self
            .per_try_timeout
            .map(|d| Box::pin(tokio::time::sleep(d)));
        self.phase = Phase::Attempt { future, per_try };
    }
}

impl<S, C, B, RB> Future for ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    C: ClassifyError<S::Error>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<RB>, Error<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Attempt { future, per_try } => {
                    let attempt = match future.as_mut().poll(cx) {
                        Poll::Ready(Ok(response)) => Attempt::Response(response),
                        Poll::Ready(Err(e)) => Attempt::Failed(e),
                        Poll::Pending => {
                            let expired = per_try
                                .as_mut()
                                .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                            if !expired {
                                return Poll::Pending;
                            }
                            this.stats.upstream_rq_per_try_timeout.inc();
                            Attempt::PerTryTimeout
                        }
                    };
                    // Cancels the attempt (a per-try timeout resets the upstream stream).
                    this.phase = Phase::Done;
                    if let Some(result) = this.judge(attempt) {
                        return Poll::Ready(result);
                    }
                }
                Phase::Backoff { sleep, .. } => {
                    ready!(sleep.as_mut().poll(cx));
                    if let Phase::Backoff { body, .. } =
                        std::mem::replace(&mut this.phase, Phase::Done)
                    {
                        this.phase = Phase::Ready { body };
                    }
                }
                Phase::Ready { .. } => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        this.phase = Phase::Done;
                        return Poll::Ready(Err(Error::Upstream(e)));
                    }
                    if let Phase::Ready { body } = std::mem::replace(&mut this.phase, Phase::Done) {
                        this.start_attempt(body);
                    }
                }
                Phase::Done => return Poll::Pending,
            }
        }
    }
}

impl<S, C, B, RB> ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    C: ClassifyError<S::Error>,
    B: Body<Data = Bytes>,
{
    /// Judges an attempt: `Some` is the final result, `None` means a retry was scheduled.
    fn judge(
        &mut self,
        attempt: Attempt<Response<RB>, S::Error>,
    ) -> Option<Result<Response<RB>, Error<S::Error>>> {
        // A body past the buffer limit ends retries for good (Envoy resets its retry state).
        if self.replay.as_ref().is_some_and(|r| !r.is_replayable()) {
            self.state.disable();
        }
        let status = {
            let outcome = match &attempt {
                Attempt::Response(r) => Outcome::Response {
                    status: r.status(),
                    headers: r.headers(),
                },
                Attempt::Failed(e) => Outcome::Failure(self.classify.classify(e)),
                Attempt::PerTryTimeout => Outcome::Failure(Failure::PerTryTimeout),
            };
            self.state
                .should_retry(&outcome, self.budget.as_ref(), &self.stats)
        };
        let body = match status {
            RetryStatus::Yes { .. } => self.replay.as_ref().and_then(Replay::replay),
            _ => None,
        };
        let (Some(body), RetryStatus::Yes { backoff }) = (body, status) else {
            // A retry was granted but the body can no longer be replayed (it outgrew the
            // limit or failed in the meantime): the attempt counted for it was not made.
            let (status, attempt_count) = match status {
                RetryStatus::Yes { .. } => (
                    RetryStatus::No,
                    self.state.attempt_count().saturating_sub(1),
                ),
                other => (other, self.state.attempt_count()),
            };
            return Some(match attempt {
                Attempt::Response(mut r) => {
                    r.extensions_mut().insert(RetryInfo {
                        attempt_count,
                        status,
                    });
                    Ok(r)
                }
                Attempt::Failed(e) => Err(Error::Upstream(e)),
                Attempt::PerTryTimeout => Err(Error::PerTryTimeout),
            });
        };
        // The failed response is dropped here, which resets its stream.
        drop(attempt);
        self.phase = if backoff.is_zero() {
            Phase::Ready { body }
        } else {
            Phase::Backoff {
                sleep: Box::pin(tokio::time::sleep(backoff)),
                body,
            }
        };
        None
    }
}
