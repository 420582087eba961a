//! Retries with Envoy's semantics, as reusable pieces and as a tower layer.
//!
//! Envoy's router retries by the route's `RetryPolicy` (the virtual host's when the route has
//! none; the two are never merged). This module reproduces it piece by piece, so that a router
//! can drive its attempts itself and anyone else can put [`RetryLayer`] in front of a
//! `tower::Service<http::Request<B>>`:
//!
//! - [`policy`]: which outcomes each `retry_on` condition retries (`wouldRetryFromHeaders` /
//!   `wouldRetryFromReset`), the `retriable_request_headers` gate, and [`ClassifyError`], how a
//!   service's errors are read as [`Failure`](crate::classify::Failure)s;
//! - [`backoff`]: the fully jittered exponential back-off (25 ms base, 10 × base cap);
//! - [`budget`]: [`RetryBudget`], the cluster-wide limit on retries in flight (`max_retries` or
//!   `retry_budget`, implemented by the cluster's
//!   [`ResourceManager`](crate::cluster::resources::ResourceManager));
//! - [`replay`]: [`ReplayBody`], which keeps a copy of the request body, up to the buffer limit,
//!   for the next attempt;
//! - [`state`]: [`RetryState`], the per-request bookkeeping (`num_retries`, the permit held
//!   through back-off, `upstream_rq_retry*` stats, [`RetryStatus`]).
//!
//! # The layer
//!
//! For each request, [`Retry`] applies the request-header gate, keeps the body for replay (only
//! when some condition is in effect, as Envoy buffers only then), sends the first attempt, and
//! then for each outcome asks [`RetryState::should_retry`]: a retry waits out the back-off,
//! waits for the inner service to be ready, and sends the request again with a replayed body.
//! Each attempt is bounded by the policy's `per_try_timeout` (counting
//! `upstream_rq_per_try_timeout`; the last one fails with [`Error::PerTryTimeout`]). With
//! [`RetryLayer::include_attempt_count`], every attempt carries `x-envoy-attempt-count: N`.
//! The response returned carries a [`RetryInfo`] extension (attempts made, and whether retries
//! ran out (`URX`) or were refused by the budget (`UO`)).
//!
//! The inner service gets `Request<ReplayBody<B>>`. Its errors are classified by a
//! [`ClassifyError`]: [`DefaultClassify`] reads [`Failure`](crate::classify::Failure) itself,
//! [`FailureError`] and `std::io::Error`s in a boxed error's source chain; a closure
//! `Fn(&E) -> Failure` covers any other error type.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use mesh_proxy::classify::Failure;
//! use mesh_proxy::config::route::{RetryOn, RetryPolicy};
//! use mesh_proxy::retry::{ReplayBody, RetryInfo, RetryLayer, RetryStats, Unlimited};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // An upstream whose first connection is refused.
//! let calls = Arc::new(AtomicU32::new(0));
//! let upstream = service_fn({
//!     let calls = calls.clone();
//!     move |req: Request<ReplayBody<Full<Bytes>>>| {
//!         let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
//!         async move {
//!             if first {
//!                 return Err(Failure::ConnectFailure);
//!             }
//!             let attempt = req.headers()["x-envoy-attempt-count"].clone();
//!             let body = req.into_body().collect().await.expect("replayed").to_bytes();
//!             Ok(Response::new(format!("{body:?} on attempt {attempt:?}")))
//!         }
//!     }
//! });
//!
//! let policy = RetryPolicy {
//!     retry_on: RetryOn::parse("connect-failure,refused-stream").unwrap(),
//!     num_retries: 2,
//!     ..RetryPolicy::default()
//! };
//! let stats = RetryStats::default();
//! let service = RetryLayer::new(Arc::new(policy), Arc::new(Unlimited), stats.clone())
//!     .include_attempt_count(true)
//!     .layer(upstream);
//!
//! let response = service
//!     .oneshot(Request::post("http://svc/").body(Full::new(Bytes::from("hi"))).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.body(), r#"b"hi" on attempt "2""#);
//! assert_eq!(response.extensions().get::<RetryInfo>().unwrap().attempt_count, 2);
//! assert_eq!(stats.upstream_rq_retry.get(), 1);
//! assert_eq!(stats.upstream_rq_retry_success.get(), 1);
//! # }
//! ```
//!
//! # Differences from Envoy
//!
//! - The per-try timeout starts when the attempt is handed to the inner service; Envoy starts it
//!   once the whole request is read and a pool connection is obtained. A router that knows those
//!   moments should drive [`RetryState`] itself.
//! - Request bodies are pulled by the attempts, so a body can only outgrow the buffer while an
//!   attempt reads it; Envoy's 507 "exceeded request buffer limit while retrying upstream"
//!   (overflow during a back-off) cannot happen.
//! - Not here: hedging, `rate_limited_retry_back_off`, the `x-envoy-retry-on` family of request
//!   headers (Istio's edge strips them), host selection predicates (the load balancer's job)
//!   and HTTP/3 conditions.

pub mod backoff;
pub mod budget;
mod error;
mod future;
mod layer;
pub mod policy;
pub mod replay;
pub mod state;

#[cfg(test)]
mod tests;

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

pub use self::backoff::{Backoff, BackoffConfig};
pub use self::budget::{RetryBudget, RetryPermit, Unlimited};
pub use self::error::Error;
pub use self::future::{ResponseFuture, RetryInfo};
pub use self::layer::RetryLayer;
pub use self::policy::{ClassifyError, DefaultClassify, FailureError, RetryDecision};
pub use self::replay::{Replay, ReplayBody};
pub use self::state::{RetryState, RetryStats, RetryStatus};

use self::future::Phase;
use crate::config::matcher::PseudoHeaders;

/// A service that retries by a [`RetryPolicy`](crate::config::route::RetryPolicy) (made by
/// [`RetryLayer`]).
#[derive(Clone)]
pub struct Retry<S, C = DefaultClassify> {
    inner: S,
    config: RetryLayer<C>,
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C> Retry<S, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, B, RB> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone,
    C: ClassifyError<S::Error> + Clone,
    B: Body<Data = Bytes>,
{
    type Response = Response<RB>;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S, C, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Upstream)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let config = &self.config;
        let state = {
            let pseudo = PseudoHeaders {
                authority: parts
                    .uri
                    .authority()
                    .map(|a| a.as_str())
                    .or_else(|| {
                        parts
                            .headers
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                    })
                    .unwrap_or(""),
                path: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/"),
                method: parts.method.as_str(),
                scheme: parts.uri.scheme_str().unwrap_or("http"),
            };
            RetryState::new(config.policy.clone(), &parts.headers, &pseudo)
        };
        let (body, replay) = if state.enabled() {
            let abandoned = Some(config.stats.retry_or_shadow_abandoned.clone());
            let (body, replay) = ReplayBody::new(body, config.buffer_limit, abandoned);
            (body, Some(replay))
        } else {
            (ReplayBody::passthrough(body), None)
        };
        // The ready service takes this request (and the retries); a clone waits for the next.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let mut future = ResponseFuture {
            service,
            parts,
            replay,
            state,
            budget: config.budget.clone(),
            stats: config.stats.clone(),
            classify: config.classify.clone(),
            include_attempt_count: config.include_attempt_count,
            per_try_timeout: config.policy.per_try_timeout,
            phase: Phase::Done,
        };
        future.start_attempt(body);
        future
    }
}
