//! Scenario tests of the retry layer against a scripted upstream, in paused time.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::classify::Failure;
use crate::cluster::resources::{Resource, ResourceManager, ResourceStats};
use crate::config::cluster::Thresholds;
use crate::config::route::{RetryOn, RetryPolicy};

/// What the scripted upstream does on one attempt.
#[derive(Clone, Debug)]
enum Step {
    /// Read the whole body, then answer with this status (and headers).
    Status(u16, &'static [(&'static str, &'static str)]),
    /// Fail without reading the body.
    Fail(Failure),
    /// Never answer.
    Hang,
}

/// What the upstream saw of one attempt.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    headers: HeaderMap,
    body: Option<Bytes>,
}

#[derive(Clone, Default)]
struct Upstream {
    script: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn new(steps: &[Step]) -> Upstream {
        Upstream {
            script: Arc::new(Mutex::new(steps.iter().cloned().collect())),
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The upstream as a service (owned, so the service borrows nothing).
    fn service<B>(
        self,
    ) -> impl Service<
        Request<ReplayBody<B>>,
        Response = Response<String>,
        Error = Failure,
        Future = impl Send,
    > + Clone
    + Send
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Debug + Send,
    {
        let this = self;
        service_fn(move |req: Request<ReplayBody<B>>| {
            let this = this.clone();
            async move {
                let step = this
                    .script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(Step::Status(200, &[]));
                let at = Instant::now();
                let (parts, body) = req.into_parts();
                let mut seen = Seen {
                    at,
                    headers: parts.headers,
                    body: None,
                };
                match step {
                    Step::Fail(f) => {
                        this.seen.lock().unwrap().push(seen);
                        Err(f)
                    }
                    Step::Hang => {
                        this.seen.lock().unwrap().push(seen);
                        std::future::pending().await
                    }
                    Step::Status(code, headers) => {
                        seen.body = body.collect().await.ok().map(|c| c.to_bytes());
                        this.seen.lock().unwrap().push(seen);
                        let mut r = Response::new(format!("{code}"));
                        *r.status_mut() = StatusCode::from_u16(code).unwrap();
                        for (k, v) in headers {
                            r.headers_mut().append(*k, v.parse().unwrap());
                        }
                        Ok(r)
                    }
                }
            }
        })
    }
}

fn policy(retry_on: &str, num_retries: u32) -> RetryPolicy {
    RetryPolicy {
        retry_on: RetryOn::parse(retry_on).unwrap(),
        num_retries,
        ..RetryPolicy::default()
    }
}

fn layer(p: RetryPolicy, stats: &RetryStats) -> RetryLayer {
    RetryLayer::new(Arc::new(p), Arc::new(Unlimited), stats.clone()).include_attempt_count(true)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://svc/path")
        .body(Full::default())
        .unwrap()
}

fn counts(s: &RetryStats) -> [u64; 6] {
    [
        s.upstream_rq_retry.get(),
        s.upstream_rq_retry_success.get(),
        s.upstream_rq_retry_overflow.get(),
        s.upstream_rq_retry_limit_exceeded.get(),
        s.upstream_rq_retry_backoff_exponential.get(),
        s.upstream_rq_per_try_timeout.get(),
    ]
}

fn attempt_counts(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| {
            s.headers["x-envoy-attempt-count"]
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn retries_a_503_then_returns_the_success() {
    let up = Upstream::new(&[Step::Status(503, &[]), Step::Status(200, &[])]);
    let stats = RetryStats::default();
    let svc = layer(policy("5xx", 2), &stats).layer(up.clone().service());
    let r = svc.oneshot(get()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.extensions().get::<RetryInfo>(),
        Some(&RetryInfo {
            attempt_count: 2,
            status: RetryStatus::No
        })
    );
    // retry, success, overflow, limit exceeded, back-off, per-try timeout.
    assert_eq!(counts(&stats), [1, 1, 0, 0, 1, 0]);
    assert_eq!(attempt_counts(&up.seen()), ["1", "2"]);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_return_the_last_response() {
    let up = Upstream::new(&[
        Step::Status(503, &[]),
        Step::Status(502, &[]),
        Step::Status(504, &[]),
        Step::Status(200, &[]),
    ]);
    let stats = RetryStats::default();
    let svc = layer(policy("gateway-error", 2), &stats).layer(up.clone().service());
    let r = svc.oneshot(get()).await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.extensions().get::<RetryInfo>().unwrap().status,
        RetryStatus::NoRetryLimitExceeded
    );
    assert_eq!(counts(&stats), [2, 0, 0, 1, 2, 0]);
    assert_eq!(attempt_counts(&up.seen()), ["1", "2", "3"]);
}

#[tokio::test(start_paused = true)]
async fn non_retriable_responses_pass_through_untouched() {
    let up = Upstream::new(&[Step::Status(500, &[("x-a", "1")])]);
    let stats = RetryStats::default();
    let svc = layer(policy("gateway-error,retriable-4xx", 3), &stats).layer(up.clone().service());
    let r = svc.oneshot(get()).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.headers()["x-a"], "1");
    assert_eq!(counts(&stats), [0; 6]);
    assert_eq!(up.seen().len(), 1);
}

/// Back-off gaps with the defaults: the first in [0, 25) ms, the second in [0, 50) ms, the
/// third in [0, 100) ms, over many requests, and they are not all zero.
#[tokio::test(start_paused = true)]
async fn backoff_gaps_follow_envoy() {
    let stats = RetryStats::default();
    let mut max_gap = [Duration::ZERO; 3];
    for _ in 0..200 {
        let up = Upstream::new(&vec![Step::Status(503, &[]); 4]);
        let svc = layer(policy("5xx", 3), &stats).layer(up.clone().service());
        let r = svc.oneshot(get()).await.unwrap();
        assert_eq!(r.status(), 503);
        let seen = up.seen();
        assert_eq!(seen.len(), 4);
        for (i, bound) in [25u64, 50, 100].into_iter().enumerate() {
            let gap = seen[i + 1].at - seen[i].at;
            assert!(gap < Duration::from_millis(bound), "gap {i}: {gap:?}");
            max_gap[i] = max_gap[i].max(gap);
        }
    }
    assert!(max_gap[0] >= Duration::from_millis(15), "{max_gap:?}");
    assert!(max_gap[2] >= Duration::from_millis(60), "{max_gap:?}");
    assert_eq!(stats.upstream_rq_retry_backoff_exponential.get(), 600);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_cuts_the_attempt_and_is_retried_as_a_reset() {
    let up = Upstream::new(&[Step::Hang, Step::Status(200, &[])]);
    let stats = RetryStats::default();
    let mut p = policy("5xx", 1);
    p.per_try_timeout = Some(Duration::from_millis(100));
    let svc = layer(p, &stats).layer(up.clone().service());
    let start = Instant::now();
    let r = svc.oneshot(get()).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.seen();
    assert!(seen[1].at - start >= Duration::from_millis(100));
    assert!(seen[1].at - start < Duration::from_millis(125));
    assert_eq!(counts(&stats), [1, 1, 0, 0, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_is_not_retried_by_istio_default_conditions() {
    let up = Upstream::new(&[Step::Hang, Step::Status(200, &[])]);
    let stats = RetryStats::default();
    let mut p = policy(
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        2,
    );
    p.retriable_status_codes = vec![503];
    p.per_try_timeout = Some(Duration::from_secs(1));
    let svc = layer(p, &stats).layer(up.clone().service());
    let err = svc.oneshot(get()).await.unwrap_err();
    assert!(matches!(err, Error::PerTryTimeout));
    assert_eq!(err.failure(&DefaultClassify), Failure::PerTryTimeout);
    assert_eq!(up.seen().len(), 1);
    assert_eq!(counts(&stats), [0, 0, 0, 0, 0, 1]);
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_in_headers_is_retried() {
    let up = Upstream::new(&[
        Step::Status(
            200,
            &[("grpc-status", "14"), ("content-type", "application/grpc")],
        ),
        Step::Status(200, &[("grpc-status", "0")]),
    ]);
    let stats = RetryStats::default();
    let svc = layer(policy("unavailable", 1), &stats).layer(up.clone().service());
    let r = svc.oneshot(get()).await.unwrap();
    assert_eq!(r.headers()["grpc-status"], "0");
    assert_eq!(stats.upstream_rq_retry.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn errors_are_classified_and_the_last_one_is_returned() {
    let up = Upstream::new(&[
        Step::Fail(Failure::ConnectFailure),
        Step::Fail(Failure::RefusedStream),
        Step::Fail(Failure::Reset {
            before_request: false,
        }),
    ]);
    let stats = RetryStats::default();
    let svc =
        layer(policy("connect-failure,refused-stream", 5), &stats).layer(up.clone().service());
    let err = svc.oneshot(get()).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Upstream(Failure::Reset {
            before_request: false
        })
    ));
    assert_eq!(up.seen().len(), 3);
    assert_eq!(counts(&stats), [2, 1, 0, 0, 2, 0]);
}

#[tokio::test(start_paused = true)]
async fn overflow_is_never_retried() {
    let up = Upstream::new(&[Step::Fail(Failure::Overflow), Step::Status(200, &[])]);
    let stats = RetryStats::default();
    let svc =
        layer(policy("5xx,reset,reset-before-request", 3), &stats).layer(up.clone().service());
    let err = svc.oneshot(get()).await.unwrap_err();
    assert!(matches!(err, Error::Upstream(Failure::Overflow)));
    assert_eq!(counts(&stats), [0; 6]);
}

#[tokio::test(start_paused = true)]
async fn a_custom_error_type_with_a_closure_classifier() {
    #[derive(Debug)]
    struct Refused;
    let calls = Arc::new(Mutex::new(0));
    let upstream = service_fn({
        let calls = calls.clone();
        move |_req: Request<ReplayBody<Full<Bytes>>>| {
            let calls = calls.clone();
            async move {
                let mut n = calls.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    Err(Refused)
                } else {
                    Ok(Response::new(()))
                }
            }
        }
    });
    let stats = RetryStats::default();
    let svc = layer(policy("connect-failure", 1), &stats)
        .classify_with(|_: &Refused| Failure::ConnectFailure)
        .layer(upstream);
    let r = svc.oneshot(get()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(*calls.lock().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_refuses_and_permits_come_back() {
    let m = ResourceManager::new(
        &Thresholds {
            max_retries: 1,
            ..Thresholds::default()
        },
        ResourceStats::default(),
    );
    let stats = RetryStats::default();
    // One request is in back-off, holding the only retry: a second one overflows.
    let slow = Upstream::new(&[Step::Status(503, &[]), Step::Status(200, &[])]);
    let fast = Upstream::new(&[Step::Status(503, &[]), Step::Status(200, &[])]);
    let mut p = policy("5xx", 1);
    p.base_interval = Duration::from_secs(10);
    p.max_interval = Duration::from_secs(10);
    let l = RetryLayer::new(Arc::new(p), Arc::new(m.clone()), stats.clone());
    let first = tokio::spawn(l.layer(slow.clone().service()).oneshot(get()));
    // Let the first request fail and start its back-off (it holds the permit).
    while m.count(Resource::Retry) == 0 {
        tokio::task::yield_now().await;
    }
    let r = l
        .layer(fast.clone().service())
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.extensions().get::<RetryInfo>().unwrap().status,
        RetryStatus::NoOverflow
    );
    assert_eq!(stats.upstream_rq_retry_overflow.get(), 1);
    let r = first.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(m.count(Resource::Retry), 0);
    assert_eq!(counts(&stats), [1, 1, 1, 0, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn request_bodies_are_replayed_to_every_attempt() {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = ["part1-", "part2-", "part3"]
        .into_iter()
        .map(|s| Ok(Frame::data(Bytes::from(s))))
        .collect();
    let body = StreamBody::new(futures::stream::iter(frames));
    // The first attempt fails before reading anything; the next two read it all.
    let up = Upstream::new(&[
        Step::Fail(Failure::ConnectFailure),
        Step::Status(503, &[]),
        Step::Status(200, &[]),
    ]);
    let stats = RetryStats::default();
    let svc = layer(policy("5xx", 3), &stats).layer(up.clone().service());
    let r = svc
        .oneshot(Request::post("http://svc/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bodies: Vec<Option<Bytes>> = up.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(
        bodies,
        [
            None,
            Some(Bytes::from("part1-part2-part3")),
            Some(Bytes::from("part1-part2-part3"))
        ]
    );
    assert_eq!(stats.retry_or_shadow_abandoned.get(), 0);
}

/// R5: a body over the buffer limit is not retried, and `retry_or_shadow_abandoned` counts it.
#[tokio::test(start_paused = true)]
async fn bodies_over_the_limit_are_not_retried() {
    let up = Upstream::new(&[Step::Status(503, &[]), Step::Status(200, &[])]);
    let stats = RetryStats::default();
    let svc = layer(policy("5xx", 3), &stats)
        .buffer_limit(64 * 1024)
        .layer(up.clone().service());
    let big = Bytes::from(vec![b'x'; 1024 * 1024]);
    let r = svc
        .oneshot(Request::post("http://svc/").body(Full::new(big)).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(up.seen().len(), 1);
    assert_eq!(
        up.seen()[0].body.as_ref().map(Bytes::len),
        Some(1024 * 1024)
    );
    assert_eq!(stats.retry_or_shadow_abandoned.get(), 1);
    assert_eq!(counts(&stats), [0; 6]);
}

/// Without any condition nothing is kept, and nothing is counted even for a huge body.
#[tokio::test(start_paused = true)]
async fn no_conditions_means_no_buffering() {
    let up = Upstream::new(&[Step::Status(503, &[])]);
    let stats = RetryStats::default();
    let svc = layer(policy("", 3), &stats)
        .buffer_limit(1)
        .layer(up.clone().service());
    let r = svc
        .oneshot(
            Request::post("http://svc/")
                .body(Full::new(Bytes::from("abc")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(stats.retry_or_shadow_abandoned.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn retriable_request_headers_gate_the_whole_request() {
    use crate::config::matcher::{HeaderMatch, HeaderMatcher, StringMatcher};
    let mut p = policy("5xx", 2);
    p.retriable_request_headers = vec![HeaderMatcher {
        name: ":method".into(),
        kind: HeaderMatch::String(StringMatcher::exact("GET")),
        invert: false,
        treat_missing_as_empty: false,
    }];
    let stats = RetryStats::default();
    let up = Upstream::new(&[Step::Status(503, &[]), Step::Status(200, &[])]);
    let r = layer(p.clone(), &stats)
        .layer(up.clone().service())
        .oneshot(Request::post("http://svc/").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let up = Upstream::new(&[Step::Status(503, &[]), Step::Status(200, &[])]);
    let r = layer(p, &stats)
        .layer(up.clone().service())
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn attempt_count_header_is_off_by_default() {
    let up = Upstream::new(&[Step::Status(200, &[])]);
    let stats = RetryStats::default();
    let svc = RetryLayer::new(Arc::new(policy("5xx", 1)), Arc::new(Unlimited), stats)
        .layer(up.clone().service());
    svc.oneshot(get()).await.unwrap();
    assert!(!up.seen()[0].headers.contains_key("x-envoy-attempt-count"));
}

/// The public futures and services can cross threads.
#[test]
fn send_and_sync() {
    fn is_send<T: Send>(_: &T) {}
    fn is_sync<T: Sync>() {}
    let up = Upstream::new(&[]);
    let stats = RetryStats::default();
    let mut svc = layer(policy("5xx", 1), &stats).layer(up.clone().service::<Full<Bytes>>());
    is_send(&svc);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let fut = svc.call(get());
    is_send(&fut);
    is_sync::<RetryLayer>();
    is_sync::<ReplayBody<Full<Bytes>>>();
    is_sync::<RetryState>();
    is_sync::<ResourceManager>();
}
