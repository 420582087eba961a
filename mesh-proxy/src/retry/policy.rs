//! Which outcomes a retry policy retries, with Envoy's rules
//! (`RetryStateImpl::wouldRetryFromHeaders` / `wouldRetryFromReset`,
//! `source/common/router/retry_state_impl.cc`), and how a service's errors are classified.
//!
//! **Responses** (checked in this order):
//! 1. a response carrying `x-envoy-ratelimited` is retried only under `envoy-ratelimited`, and
//!    then nothing else is looked at (a 503 with that header is *not* retried by `5xx`);
//! 2. `5xx`: any 5xx; `gateway-error`: 502, 503, 504; `retriable-4xx`: 409;
//! 3. `retriable-status-codes`: the status is listed (425 Too Early is retried at once, without
//!    back-off, unless the downstream request carried `early-data`);
//! 4. `retriable-headers`: a response header matcher matches (`:status` included);
//! 5. the gRPC conditions: `grpc-status` **in the response headers** (trailers-only responses)
//!    is 1, 4, 13, 8 or 14. Trailers never trigger a retry.
//!
//! **No response** ([`Failure`]):
//! - `Overflow` (a circuit breaker refused the attempt) is never retried;
//! - `NoHealthyUpstream` is never retried (Envoy answers 503 `UH` without consulting its retry
//!   state);
//! - a connect failure or timeout is retried under `connect-failure`, and otherwise falls through
//!   to the reset rules;
//! - the reset rules, for every other failure: `reset-before-request` if no request byte was
//!   sent upstream yet (sticky across attempts, see [`RetryState`](super::RetryState)), then
//!   `reset`, then `5xx` or `gateway-error` (which take every reset, per-try timeouts
//!   included), then `refused-stream` for `REFUSED_STREAM`.
//!
//! A per-try timeout is a local reset in Envoy, so Istio's default
//! `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` does not retry
//! it.

use http::header::HeaderName;
use http::{HeaderMap, StatusCode};

use crate::classify::{Failure, Outcome};
use crate::config::matcher::{HeaderMatcher, PseudoHeaders};
use crate::config::route::{RetryOn, RetryPolicy};

/// What to do about an attempt's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Not retriable.
    No,
    /// Retry after the back-off.
    WithBackoff,
    /// Retry at once (425 Too Early).
    Immediately,
}

impl RetryDecision {
    /// Whether it is a retry.
    pub fn is_retry(self) -> bool {
        !matches!(self, RetryDecision::No)
    }
}

const GRPC_FLAGS: [(u32, RetryOn); 5] = [
    (1, RetryOn::GRPC_CANCELLED),
    (4, RetryOn::GRPC_DEADLINE_EXCEEDED),
    (8, RetryOn::GRPC_RESOURCE_EXHAUSTED),
    (13, RetryOn::GRPC_INTERNAL),
    (14, RetryOn::GRPC_UNAVAILABLE),
];

const ANY_GRPC: RetryOn = RetryOn(
    RetryOn::GRPC_CANCELLED.0
        | RetryOn::GRPC_DEADLINE_EXCEEDED.0
        | RetryOn::GRPC_RESOURCE_EXHAUSTED.0
        | RetryOn::GRPC_INTERNAL.0
        | RetryOn::GRPC_UNAVAILABLE.0,
);

/// Whether `policy` retries `outcome`. `upstream_request_started` says whether any byte of the
/// request has gone upstream, on this attempt or an earlier reset one (it only matters for
/// `reset-before-request`; a [`Failure::Reset`] with `before_request: false` counts as started
/// by itself).
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use mesh_proxy::classify::{Failure, Outcome};
/// use mesh_proxy::config::route::RetryOn;
/// use mesh_proxy::retry::policy::{decide, RetryDecision};
/// use mesh_proxy::config::route::RetryPolicy;
///
/// let policy = RetryPolicy {
///     retry_on: RetryOn::parse("gateway-error").unwrap(),
///     ..RetryPolicy::default()
/// };
/// let headers = HeaderMap::new();
/// let response = |s: u16| Outcome::Response { status: StatusCode::from_u16(s).unwrap(), headers: &headers };
/// assert_eq!(decide(&policy, &response(503), false), RetryDecision::WithBackoff);
/// assert_eq!(decide(&policy, &response(500), false), RetryDecision::No);
/// // Every reset counts as a gateway error; a circuit-breaker overflow never does.
/// assert!(decide(&policy, &Outcome::Failure(Failure::PerTryTimeout), true).is_retry());
/// assert!(!decide(&policy, &Outcome::Failure(Failure::Overflow), false).is_retry());
/// ```
pub fn decide(
    policy: &RetryPolicy,
    outcome: &Outcome<'_>,
    upstream_request_started: bool,
) -> RetryDecision {
    decide_with(
        policy.retry_on,
        policy,
        outcome,
        upstream_request_started,
        false,
    )
}

/// [`decide`] with the conditions in effect for one request (`retry_on`, after the
/// [`request_allows_retry`] gate) and whether the downstream request came as TLS early data.
pub(crate) fn decide_with(
    retry_on: RetryOn,
    policy: &RetryPolicy,
    outcome: &Outcome<'_>,
    upstream_request_started: bool,
    early_data: bool,
) -> RetryDecision {
    match outcome {
        Outcome::Response { status, headers } => {
            from_response(retry_on, policy, *status, headers, early_data)
        }
        Outcome::Failure(f) => from_failure(retry_on, *f, upstream_request_started),
    }
}

fn from_response(
    on: RetryOn,
    policy: &RetryPolicy,
    status: StatusCode,
    headers: &HeaderMap,
    early_data: bool,
) -> RetryDecision {
    use RetryDecision::{Immediately, No, WithBackoff};
    if headers.contains_key("x-envoy-ratelimited") {
        return if on.contains(RetryOn::ENVOY_RATELIMITED) {
            WithBackoff
        } else {
            No
        };
    }
    let code = status.as_u16();
    if on.contains(RetryOn::FIVE_XX) && status.is_server_error() {
        return WithBackoff;
    }
    if on.contains(RetryOn::GATEWAY_ERROR) && matches!(code, 502..=504) {
        return WithBackoff;
    }
    if on.contains(RetryOn::RETRIABLE_4XX) && code == 409 {
        return WithBackoff;
    }
    if on.contains(RetryOn::RETRIABLE_STATUS_CODES) {
        for &listed in &policy.retriable_status_codes {
            if listed == code {
                if code != 425 {
                    return WithBackoff;
                }
                if !early_data {
                    return Immediately;
                }
            }
        }
    }
    if on.contains(RetryOn::RETRIABLE_HEADERS)
        && policy
            .retriable_headers
            .iter()
            .any(|m| response_header_matches(m, status, headers))
    {
        return WithBackoff;
    }
    if on.intersects(ANY_GRPC)
        && let Some(grpc) = grpc_status(headers)
        && GRPC_FLAGS
            .iter()
            .any(|&(c, flag)| c == grpc && on.contains(flag))
    {
        return WithBackoff;
    }
    No
}

fn from_failure(on: RetryOn, failure: Failure, started: bool) -> RetryDecision {
    use RetryDecision::{No, WithBackoff};
    let nothing_sent = match failure {
        // Never: the breaker refused it, or there was no host (Envoy sends 503 UH directly).
        Failure::Overflow | Failure::NoHealthyUpstream => return No,
        Failure::ConnectFailure | Failure::ConnectTimeout => {
            if on.contains(RetryOn::CONNECT_FAILURE) {
                return WithBackoff;
            }
            true
        }
        Failure::Reset { before_request } | Failure::ConnectionTermination { before_request } => {
            before_request
        }
        Failure::RefusedStream | Failure::PerTryTimeout | Failure::ProtocolError => false,
    };
    if on.contains(RetryOn::RESET_BEFORE_REQUEST) && nothing_sent && !started {
        return WithBackoff;
    }
    if on.contains(RetryOn::RESET) {
        return WithBackoff;
    }
    if on.intersects(RetryOn::FIVE_XX.union(RetryOn::GATEWAY_ERROR)) {
        return WithBackoff;
    }
    if on.contains(RetryOn::REFUSED_STREAM) && failure == Failure::RefusedStream {
        return WithBackoff;
    }
    No
}

/// Whether a failure tells that request bytes went upstream (what makes `reset-before-request`
/// stop applying for the rest of the request).
pub(crate) fn failure_sent_bytes(failure: Failure) -> bool {
    match failure {
        Failure::Overflow
        | Failure::NoHealthyUpstream
        | Failure::ConnectFailure
        | Failure::ConnectTimeout => false,
        Failure::Reset { before_request } | Failure::ConnectionTermination { before_request } => {
            !before_request
        }
        Failure::RefusedStream | Failure::PerTryTimeout | Failure::ProtocolError => true,
    }
}

/// The `retriable_request_headers` gate: with matchers configured, a request that matches none
/// of them is not retried at all (Envoy clears its `retry_on`).
pub fn request_allows_retry(
    policy: &RetryPolicy,
    headers: &HeaderMap,
    pseudo: &PseudoHeaders<'_>,
) -> bool {
    policy.retriable_request_headers.is_empty()
        || policy
            .retriable_request_headers
            .iter()
            .any(|m| m.matches(headers, pseudo))
}

/// `grpc-status` in the response headers, as Envoy reads it for retries (a decimal number).
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A header matcher applied to a response: `:status` names the status code.
fn response_header_matches(m: &HeaderMatcher, status: StatusCode, headers: &HeaderMap) -> bool {
    let pseudo = PseudoHeaders {
        authority: "",
        path: "",
        method: "",
        scheme: "",
    };
    if m.name != ":status" {
        return match m.name.as_str() {
            // Request pseudo-headers do not exist on a response.
            ":authority" | ":path" | ":method" | ":scheme" => {
                let absent = HeaderMatcher {
                    name: "x-mesh-absent".into(),
                    ..m.clone()
                };
                absent.matches(&HeaderMap::new(), &pseudo)
            }
            _ => m.matches(headers, &pseudo),
        };
    }
    let name = HeaderName::from_static("x-mesh-status");
    let mut only_status = HeaderMap::with_capacity(1);
    only_status.insert(name.clone(), status.as_u16().into());
    let renamed = HeaderMatcher {
        name: name.as_str().to_owned(),
        ..m.clone()
    };
    renamed.matches(&only_status, &pseudo)
}

/// How a service's errors are read as [`Failure`]s, so that the retry layer can apply the
/// policy to them. Implemented for closures `Fn(&E) -> Failure` and by [`DefaultClassify`].
///
/// ```
/// use mesh_proxy::classify::Failure;
/// use mesh_proxy::retry::policy::ClassifyError;
///
/// #[derive(Debug)]
/// enum ClientError { Refused, Reset }
/// let classify = |e: &ClientError| match e {
///     ClientError::Refused => Failure::ConnectFailure,
///     ClientError::Reset => Failure::Reset { before_request: false },
/// };
/// assert_eq!(classify.classify(&ClientError::Refused), Failure::ConnectFailure);
/// ```
pub trait ClassifyError<E> {
    /// The failure `error` stands for.
    fn classify(&self, error: &E) -> Failure;
}

impl<E, F> ClassifyError<E> for F
where
    F: Fn(&E) -> Failure,
{
    fn classify(&self, error: &E) -> Failure {
        self(error)
    }
}

/// The default classification: a [`Failure`] is itself; a boxed error is searched along its
/// source chain for a [`FailureError`], then for a [`std::io::Error`] (refused, unreachable
/// → connect failure; timed out → connect timeout; anything else → reset), and is a reset
/// after request bytes were sent when nothing is recognised (what Envoy would see of a broken
/// stream).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassify;

impl ClassifyError<Failure> for DefaultClassify {
    fn classify(&self, error: &Failure) -> Failure {
        *error
    }
}

impl ClassifyError<FailureError> for DefaultClassify {
    fn classify(&self, error: &FailureError) -> Failure {
        error.0
    }
}

impl ClassifyError<Box<dyn std::error::Error + Send + Sync>> for DefaultClassify {
    fn classify(&self, error: &Box<dyn std::error::Error + Send + Sync>) -> Failure {
        let error: &(dyn std::error::Error + 'static) = error.as_ref();
        if let Some(f) = find_failure(error) {
            return f;
        }
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                return match io.kind() {
                    K::ConnectionRefused
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::AddrNotAvailable => Failure::ConnectFailure,
                    K::TimedOut => Failure::ConnectTimeout,
                    _ => Failure::Reset {
                        before_request: false,
                    },
                };
            }
            next = e.source();
        }
        Failure::Reset {
            before_request: false,
        }
    }
}

/// A [`FailureError`] anywhere in the source chain, looking inside `io::Error`s too (whose
/// `source()` skips the error they wrap).
fn find_failure(error: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(f) = e.downcast_ref::<FailureError>() {
            return Some(f.0);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(f) = find_failure(inner)
        {
            return Some(f);
        }
        next = e.source();
    }
    None
}

/// A [`Failure`] as an error value, for services whose error type is a boxed error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("upstream {}", .0.reset_reason())]
pub struct FailureError(pub Failure);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::matcher::{HeaderMatch, StringMatcher};

    fn on(s: &str) -> RetryPolicy {
        RetryPolicy {
            retry_on: RetryOn::parse(s).unwrap(),
            retriable_status_codes: vec![418, 425],
            retriable_headers: vec![HeaderMatcher {
                name: "x-retry-me".into(),
                kind: HeaderMatch::Present(true),
                invert: false,
                treat_missing_as_empty: false,
            }],
            ..RetryPolicy::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn resp(policy: &RetryPolicy, status: u16, h: &HeaderMap) -> RetryDecision {
        let o = Outcome::Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
        };
        decide(policy, &o, false)
    }

    fn fail(policy: &RetryPolicy, f: Failure, started: bool) -> RetryDecision {
        decide(policy, &Outcome::Failure(f), started)
    }

    use RetryDecision::{Immediately as Now, No, WithBackoff as Yes};

    #[test]
    fn response_table() {
        let none = HeaderMap::new();
        let grpc = |code: &'static str| headers(&[("grpc-status", code)]);
        let rl = headers(&[("x-envoy-ratelimited", "true")]);
        let marked = headers(&[("x-retry-me", "1")]);
        #[rustfmt::skip]
        let table: Vec<(&str, u16, HeaderMap, RetryDecision)> = vec![
            ("5xx", 500, none.clone(), Yes),
            ("5xx", 503, none.clone(), Yes),
            ("5xx", 599, none.clone(), Yes),
            ("5xx", 404, none.clone(), No),
            ("5xx", 200, none.clone(), No),
            ("gateway-error", 502, none.clone(), Yes),
            ("gateway-error", 503, none.clone(), Yes),
            ("gateway-error", 504, none.clone(), Yes),
            ("gateway-error", 500, none.clone(), No),
            ("gateway-error", 501, none.clone(), No),
            ("retriable-4xx", 409, none.clone(), Yes),
            ("retriable-4xx", 400, none.clone(), No),
            ("retriable-4xx", 429, none.clone(), No),
            ("retriable-status-codes", 418, none.clone(), Yes),
            ("retriable-status-codes", 500, none.clone(), No),
            ("retriable-status-codes", 425, none.clone(), Now),
            ("5xx", 418, none.clone(), No),
            ("retriable-headers", 200, marked.clone(), Yes),
            ("retriable-headers", 500, none.clone(), No),
            ("5xx", 200, marked.clone(), No),
            // x-envoy-ratelimited: only envoy-ratelimited retries it, and it beats 5xx.
            ("envoy-ratelimited", 429, rl.clone(), Yes),
            ("envoy-ratelimited", 200, rl.clone(), Yes),
            ("envoy-ratelimited", 429, none.clone(), No),
            ("5xx", 503, rl.clone(), No),
            ("5xx,gateway-error,retriable-status-codes", 503, rl.clone(), No),
            // gRPC, from headers (trailers-only responses).
            ("cancelled", 200, grpc("1"), Yes),
            ("deadline-exceeded", 200, grpc("4"), Yes),
            ("resource-exhausted", 200, grpc("8"), Yes),
            ("internal", 200, grpc("13"), Yes),
            ("unavailable", 200, grpc("14"), Yes),
            ("unavailable", 200, grpc("13"), No),
            ("unavailable", 200, grpc("0"), No),
            ("unavailable", 200, grpc("x"), No),
            ("unavailable", 200, none.clone(), No),
            ("cancelled,deadline-exceeded,internal,resource-exhausted", 200, grpc("14"), No),
            ("5xx", 200, grpc("14"), No),
            // Conditions that only concern failures never retry a response.
            ("reset,connect-failure,refused-stream,reset-before-request", 503, none.clone(), No),
            ("", 503, none.clone(), No),
        ];
        for (retry_on, status, h, want) in table {
            assert_eq!(
                resp(&on(retry_on), status, &h),
                want,
                "{retry_on} / {status} / {h:?}"
            );
        }
    }

    #[test]
    fn early_data_requests_are_not_retried_on_425() {
        let p = on("retriable-status-codes");
        let h = HeaderMap::new();
        let o = Outcome::Response {
            status: StatusCode::from_u16(425).unwrap(),
            headers: &h,
        };
        assert_eq!(decide_with(p.retry_on, &p, &o, false, true), No);
        assert_eq!(decide_with(p.retry_on, &p, &o, false, false), Now);
    }

    #[test]
    fn failure_table() {
        use Failure::*;
        let before = Reset {
            before_request: true,
        };
        let after = Reset {
            before_request: false,
        };
        #[rustfmt::skip]
        let table: Vec<(&str, Failure, bool, RetryDecision)> = vec![
            // Overflow and no healthy upstream: never.
            ("5xx,gateway-error,reset,connect-failure,reset-before-request,refused-stream", Overflow, false, No),
            ("5xx,gateway-error,reset,connect-failure,reset-before-request,refused-stream", NoHealthyUpstream, false, No),
            // 5xx and gateway-error take every other failure.
            ("5xx", ConnectFailure, false, Yes),
            ("5xx", ConnectTimeout, false, Yes),
            ("5xx", after, true, Yes),
            ("5xx", RefusedStream, true, Yes),
            ("5xx", PerTryTimeout, true, Yes),
            ("5xx", ProtocolError, true, Yes),
            ("gateway-error", ConnectFailure, false, Yes),
            ("gateway-error", after, true, Yes),
            ("gateway-error", PerTryTimeout, true, Yes),
            // reset: every reset, per-try timeouts included.
            ("reset", after, true, Yes),
            ("reset", before, false, Yes),
            ("reset", PerTryTimeout, true, Yes),
            ("reset", ConnectFailure, false, Yes),
            ("reset", RefusedStream, true, Yes),
            ("reset", ConnectionTermination { before_request: false }, true, Yes),
            ("5xx", ConnectionTermination { before_request: false }, true, Yes),
            ("reset-before-request", ConnectionTermination { before_request: true }, false, Yes),
            ("reset-before-request", ConnectionTermination { before_request: false }, false, No),
            ("connect-failure,refused-stream", ConnectionTermination { before_request: true }, false, No),
            // reset-before-request: only while nothing was sent, on any attempt so far.
            ("reset-before-request", before, false, Yes),
            ("reset-before-request", before, true, No),
            ("reset-before-request", after, false, No),
            ("reset-before-request", ConnectFailure, false, Yes),
            ("reset-before-request", ConnectTimeout, true, No),
            ("reset-before-request", PerTryTimeout, false, No),
            ("reset-before-request", RefusedStream, false, No),
            // connect-failure: connect failures and timeouts only.
            ("connect-failure", ConnectFailure, true, Yes),
            ("connect-failure", ConnectTimeout, true, Yes),
            ("connect-failure", after, true, No),
            ("connect-failure", before, false, No),
            ("connect-failure", PerTryTimeout, true, No),
            // refused-stream: REFUSED_STREAM only.
            ("refused-stream", RefusedStream, true, Yes),
            ("refused-stream", after, true, No),
            ("refused-stream", ConnectFailure, false, No),
            // Istio's default does not retry per-try timeouts or plain resets.
            ("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", PerTryTimeout, true, No),
            ("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", after, true, No),
            ("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", ConnectFailure, false, Yes),
            // Response-only conditions never retry a failure.
            ("retriable-4xx,retriable-status-codes,retriable-headers,envoy-ratelimited,unavailable", after, true, No),
            ("retriable-4xx,retriable-status-codes,retriable-headers,envoy-ratelimited,unavailable", ConnectFailure, false, No),
        ];
        for (retry_on, f, started, want) in table {
            assert_eq!(
                fail(&on(retry_on), f, started),
                want,
                "{retry_on} / {f:?} / started {started}"
            );
        }
    }

    #[test]
    fn status_pseudo_header_matcher() {
        let mut p = on("retriable-headers");
        p.retriable_headers = vec![HeaderMatcher {
            name: ":status".into(),
            kind: HeaderMatch::String(StringMatcher::exact("418")),
            invert: false,
            treat_missing_as_empty: false,
        }];
        let h = HeaderMap::new();
        assert_eq!(resp(&p, 418, &h), Yes);
        assert_eq!(resp(&p, 200, &h), No);
        // A request pseudo-header is absent on a response: `present: false` matches.
        p.retriable_headers = vec![HeaderMatcher {
            name: ":path".into(),
            kind: HeaderMatch::Present(false),
            invert: false,
            treat_missing_as_empty: false,
        }];
        assert_eq!(resp(&p, 200, &h), Yes);
    }

    #[test]
    fn request_header_gate() {
        let mut p = on("5xx");
        let pseudo = PseudoHeaders {
            authority: "a",
            path: "/",
            method: "POST",
            scheme: "http",
        };
        assert!(request_allows_retry(&p, &HeaderMap::new(), &pseudo));
        p.retriable_request_headers = vec![
            HeaderMatcher {
                name: ":method".into(),
                kind: HeaderMatch::String(StringMatcher::exact("GET")),
                invert: false,
                treat_missing_as_empty: false,
            },
            HeaderMatcher {
                name: "x-idempotent".into(),
                kind: HeaderMatch::Present(true),
                invert: false,
                treat_missing_as_empty: false,
            },
        ];
        assert!(!request_allows_retry(&p, &HeaderMap::new(), &pseudo));
        assert!(request_allows_retry(
            &p,
            &headers(&[("x-idempotent", "1")]),
            &pseudo
        ));
        let get = PseudoHeaders {
            method: "GET",
            ..pseudo
        };
        assert!(request_allows_retry(&p, &HeaderMap::new(), &get));
    }

    #[test]
    fn default_classification() {
        type BoxError = Box<dyn std::error::Error + Send + Sync>;
        let c = DefaultClassify;
        let refused: BoxError =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(c.classify(&refused), Failure::ConnectFailure);
        let timed_out: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(c.classify(&timed_out), Failure::ConnectTimeout);
        // Found through the source chain.
        let wrapped: BoxError =
            Box::new(std::io::Error::other(FailureError(Failure::RefusedStream)));
        assert_eq!(c.classify(&wrapped), Failure::RefusedStream);
        let unknown: BoxError = "boom".into();
        assert_eq!(
            c.classify(&unknown),
            Failure::Reset {
                before_request: false
            }
        );
        assert_eq!(c.classify(&Failure::Overflow), Failure::Overflow);
    }
}
