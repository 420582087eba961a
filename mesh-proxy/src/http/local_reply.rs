//! Local replies: responses the proxy makes itself, with Envoy's statuses, bodies and
//! response flags.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::{Body, full};

/// Why a request got the response it did (Envoy's response flags and details), carried in
/// response extensions for stats and access logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseInfo {
    /// Response flags (`NR`, `UH`, `UO`, `UF`, `URX`, `UT`, `FI`, `DI`, `NC`, ...).
    pub flags: Vec<&'static str>,
    /// Response code details (`route_not_found`, `via_upstream`, ...).
    pub details: String,
    /// The upstream cluster, if one was chosen.
    pub cluster: Option<String>,
    /// The upstream host that answered, if any.
    pub upstream_host: Option<std::net::SocketAddr>,
    /// The route's name.
    pub route_name: String,
}

/// A local reply with Envoy's shape: the status, `content-type: text/plain` with the body (or
/// no body), and the flags in the response's [`ResponseInfo`].
pub fn reply(
    status: StatusCode,
    body: &str,
    flags: &[&'static str],
    details: &str,
) -> Response<Body> {
    let mut r = if body.is_empty() {
        Response::new(super::empty())
    } else {
        let mut r = Response::new(full(Bytes::copy_from_slice(body.as_bytes())));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        r
    };
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r.extensions_mut().insert(ResponseInfo {
        flags: flags.to_vec(),
        details: details.to_string(),
        ..Default::default()
    });
    r
}

/// 404, no route (`NR`).
pub fn no_route() -> Response<Body> {
    reply(StatusCode::NOT_FOUND, "", &["NR"], "route_not_found")
}

/// The cluster does not exist (`NC`).
pub fn no_cluster(status: StatusCode) -> Response<Body> {
    reply(status, "", &["NC"], "cluster_not_found")
}

/// 503, no healthy upstream (`UH`).
pub fn no_healthy_upstream() -> Response<Body> {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "no healthy upstream",
        &["UH"],
        "no_healthy_upstream",
    )
}

/// 503 after a connect failure, reset or overflow, with Envoy's wording (`retried and the
/// latest reset reason` after retries).
pub fn upstream_failure(
    reason: &str,
    flag: &'static str,
    retried: bool,
    transport_failure: Option<&str>,
) -> Response<Body> {
    let mut body = if retried {
        format!(
            "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: {reason}"
        )
    } else {
        format!("upstream connect error or disconnect/reset before headers. reset reason: {reason}")
    };
    if let Some(t) = transport_failure {
        body.push_str(", transport failure reason: ");
        body.push_str(t);
    }
    let mut flags = vec![flag];
    if retried {
        flags.push("URX");
    }
    let details = format!(
        "upstream_reset_before_response_started{{{}}}",
        reason.replace(' ', "_")
    );
    let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, &body, &flags, &details);
    if flag == "UO" {
        r.headers_mut()
            .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    r
}

/// 504, route timeout (`UT`).
pub fn upstream_timeout() -> Response<Body> {
    reply(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream request timeout",
        &["UT"],
        "upstream_response_timeout",
    )
}

/// 408, stream idle timeout (`SI`).
pub fn stream_idle_timeout() -> Response<Body> {
    reply(
        StatusCode::REQUEST_TIMEOUT,
        "stream timeout",
        &["SI"],
        "stream_idle_timeout",
    )
}

/// The fault filter's abort (`FI`).
pub fn fault_abort(status: StatusCode) -> Response<Body> {
    reply(status, "fault filter abort", &["FI"], "fault_filter_abort")
}
