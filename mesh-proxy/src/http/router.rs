//! `envoy.filters.http.router`: cluster choice, rewrites, header mutations, timeouts,
//! retries and mirrors, then the cluster's load balancer and pool.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::local_reply::{self, ResponseInfo};
use super::mutate::{self, Side, TemplateContext};
use super::route_table::Matched;
use super::{Body, BoxError, full};
use crate::classify::{Failure, Outcome};
use crate::cluster::host::Host;
use crate::cluster::runtime::{ClusterRuntime, HostRequest};
use crate::config::route::{
    ClusterSpecifier, ForwardAction, HashKind, HashPolicy, HeaderMutations, HostRewrite,
    MirrorPolicy, PathMatch, RetryPolicy, RouteConfiguration, WeightedCluster,
};
use crate::server::Shared;

/// `x-envoy-upstream-service-time`, set on every proxied response.
const X_ENVOY_UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");

/// Requests bodies are buffered for retries and mirrors up to this (Envoy's default
/// `per_connection_buffer_limit_bytes`).
pub const BUFFER_LIMIT: usize = 1024 * 1024;

/// What the router knows about the request beyond the request itself.
#[derive(Clone, Copy, Debug)]
pub struct RouterContext<'a> {
    /// The proxy.
    pub shared: &'a Shared,
    /// The route configuration.
    pub config: &'a RouteConfiguration,
    /// What matched.
    pub matched: Matched<'a>,
    /// Downstream peer.
    pub remote: SocketAddr,
    /// Downstream local address (the original destination under capture).
    pub local: SocketAddr,
    /// The downstream request's version.
    pub version: Version,
    /// `suppress_envoy_headers`.
    pub suppress_envoy_headers: bool,
    /// The resolved address for a dynamic forward proxy cluster.
    pub resolved: Option<SocketAddr>,
}

/// The cluster a request goes to, and the weighted-cluster entry that chose it.
pub fn pick_cluster<'a>(
    action: &'a ForwardAction,
    headers: &HeaderMap,
) -> (Option<String>, Option<&'a WeightedCluster>) {
    match &action.cluster {
        ClusterSpecifier::Cluster(c) => (Some(c.clone()), None),
        ClusterSpecifier::Header(h) => (
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            None,
        ),
        ClusterSpecifier::Weighted(w) => {
            let total: u64 = w.clusters.iter().map(|c| u64::from(c.weight)).sum();
            if total == 0 {
                return (None, None);
            }
            let random = w
                .header_name
                .as_ref()
                .and_then(|h| headers.get(h))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_else(|| fastrand::u64(..));
            let mut at = random % total;
            for c in &w.clusters {
                let wt = u64::from(c.weight);
                if at < wt {
                    return (Some(c.name.clone()), Some(c));
                }
                at -= wt;
            }
            (None, None)
        }
    }
}

/// The levels of header mutations in the order they apply.
pub fn mutation_levels<'a>(
    config: &'a RouteConfiguration,
    matched: &Matched<'a>,
    weighted: Option<&'a WeightedCluster>,
) -> Vec<&'a HeaderMutations> {
    let mut levels: Vec<&HeaderMutations> = Vec::with_capacity(4);
    if let Some(w) = weighted {
        levels.push(&w.headers);
    }
    levels.push(&matched.route.headers);
    levels.push(&matched.vhost.headers);
    levels.push(&config.headers);
    if config.most_specific_header_mutations_wins {
        levels.reverse();
    }
    levels.retain(|l| !l.is_empty());
    levels
}

/// A `grpc-timeout` header's value (`100m`, `2S`: digits then H, M, S, m, u or n).
pub fn grpc_timeout(v: &Option<HeaderValue>) -> Option<std::time::Duration> {
    let s = v.as_ref()?.to_str().ok()?;
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    if n.is_empty() || n.len() > 8 {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(n * 3600),
        "M" => std::time::Duration::from_secs(n * 60),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    })
}

/// Envoy's hash of the hash policies: each policy's xxHash64, combined as
/// `rotl(previous, 1) ^ next`, stopping after a terminal policy that produced one.
/// Also returns a `Set-Cookie` value when a cookie policy generated one.
pub fn hash_request(
    policies: &[HashPolicy],
    headers: &HeaderMap,
    path: &str,
    remote: SocketAddr,
    local: SocketAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    let mut hash: Option<u64> = None;
    let mut set_cookie = None;
    for p in policies {
        let h = match &p.kind {
            HashKind::Header { name, rewrite } => {
                let joined = crate::config::matcher::joined(headers, name.as_str());
                joined.map(|v| match rewrite {
                    Some((re, sub)) => xxh(re.replace_all(&v, sub).as_bytes()),
                    None => xxh(v.as_bytes()),
                })
            }
            HashKind::Cookie {
                name,
                ttl,
                path: cookie_path,
                attributes,
            } => match cookie(headers, name) {
                Some(v) => Some(xxh(v.as_bytes())),
                None => match ttl {
                    Some(ttl) => {
                        let value = format!("{:016x}", xxh(format!("{remote}{local}").as_bytes()));
                        let mut c = format!("{name}=\"{value}\"");
                        if !ttl.is_zero() {
                            c.push_str(&format!("; Max-Age={}", ttl.as_secs()));
                        }
                        if !cookie_path.is_empty() {
                            c.push_str(&format!("; Path={cookie_path}"));
                        }
                        for (k, v) in attributes {
                            if v.is_empty() {
                                c.push_str(&format!("; {k}"));
                            } else {
                                c.push_str(&format!("; {k}={v}"));
                            }
                        }
                        c.push_str("; HttpOnly");
                        set_cookie = HeaderValue::from_str(&c).ok();
                        Some(xxh(value.as_bytes()))
                    }
                    None => None,
                },
            },
            HashKind::SourceIp => Some(xxh(remote.ip().to_string().as_bytes())),
            HashKind::QueryParameter(name) => path.split_once('?').and_then(|(_, q)| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| xxh(v.as_bytes()))
                })
            }),
            HashKind::FilterState(_) => None,
        };
        if let Some(h) = h {
            hash = Some(match hash {
                Some(prev) => prev.rotate_left(1) ^ h,
                None => h,
            });
            if p.terminal {
                break;
            }
        }
    }
    (hash, set_cookie)
}

fn xxh(b: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(b, 0)
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// Rewrites the path (prefix or regex rewrite); returns the original when it changed.
pub(crate) fn rewrite_path(
    action: &ForwardAction,
    matched: &Matched<'_>,
    path: &str,
) -> Option<String> {
    let (p, q) = match path.find('?') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    if let Some(prefix) = &action.prefix_rewrite {
        let matched_len = match &matched.route.route_match.path {
            PathMatch::Prefix(m) | PathMatch::PathSeparatedPrefix(m) => m.len(),
            PathMatch::Exact(m) => m.len(),
            PathMatch::Regex(_) => p.len(),
        };
        let rest = path.get(matched_len.min(path.len())..).unwrap_or("");
        return Some(format!("{prefix}{rest}"));
    }
    if let Some((re, sub)) = &action.regex_rewrite {
        return Some(format!("{}{q}", re.replace_all(p, sub)));
    }
    None
}

/// A request body that can be sent again.
enum ReqBody {
    /// Nothing (GET and friends).
    Empty,
    /// Buffered whole (for mirrors).
    Buffered(Bytes),
    /// Kept for replay as it streams, up to the buffer limit.
    Replay(
        Option<crate::retry::ReplayBody<Body>>,
        crate::retry::Replay<Body>,
    ),
    /// Streaming: one attempt only.
    Streaming(Option<Body>),
}

impl ReqBody {
    fn take(&mut self) -> Option<Body> {
        match self {
            ReqBody::Empty => Some(super::empty()),
            ReqBody::Buffered(b) => Some(full(b.clone())),
            ReqBody::Replay(first, replay) => match first.take() {
                Some(b) => Some(replayed(b)),
                None => replay.replay().map(replayed),
            },
            ReqBody::Streaming(b) => b.take(),
        }
    }
}

fn replayed(b: crate::retry::ReplayBody<Body>) -> Body {
    b.map_err(|e| -> BoxError {
        match e {
            crate::retry::replay::Error::Body(inner) => inner,
            other => other.to_string().into(),
        }
    })
    .boxed()
}

/// Reads a body up to `limit`; past it, returns what was read with the rest still streaming.
async fn buffer(mut body: Body, limit: usize) -> Result<ReqBody, BoxError> {
    if body.is_end_stream() {
        return Ok(ReqBody::Empty);
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                let head = full(buf.freeze());
                let rest = http_body_util::StreamBody::new(http_body_util::BodyStream::new(body));
                let chained = Chain {
                    first: Some(head),
                    rest: super::boxed(rest),
                };
                return Ok(ReqBody::Streaming(Some(super::boxed(chained))));
            }
        }
    }
    Ok(if buf.is_empty() {
        ReqBody::Empty
    } else {
        ReqBody::Buffered(buf.freeze())
    })
}

/// A body made of a buffered head and a streaming rest.
struct Chain {
    first: Option<Body>,
    rest: Body,
}

impl http_body::Body for Chain {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.as_mut() {
            match std::pin::Pin::new(first).poll_frame(cx) {
                std::task::Poll::Ready(None) => self.first = None,
                other => return other,
            }
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// Forwards a request routed to `action`. Returns the response for the client.
pub async fn forward(
    ctx: RouterContext<'_>,
    action: &ForwardAction,
    req: Request<Body>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    // A WebSocket upgrade the HCM let through (its headers are still there), unless the route
    // turns upgrades off.
    let mut downstream_upgrade = None;
    if parts.headers.contains_key(http::header::UPGRADE) {
        if action.upgrade_websocket == Some(false) {
            parts.headers.remove(http::header::UPGRADE);
            parts.headers.remove(http::header::CONNECTION);
        } else {
            downstream_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        }
    }
    let (cluster_name, weighted) = pick_cluster(action, &parts.headers);
    let Some(cluster_name) = cluster_name else {
        return local_reply::no_cluster(status(action.cluster_not_found_response_code));
    };
    let Some(cluster) = ctx.shared.clusters.get(&cluster_name) else {
        return local_reply::no_cluster(status(action.cluster_not_found_response_code));
    };
    let matched = ctx.matched;
    let vhost = matched.vhost;
    // Path and host rewrites.
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if let Some(new_path) = rewrite_path(action, &matched, &path) {
        if !ctx.suppress_envoy_headers
            && let Ok(v) = HeaderValue::from_str(&path)
        {
            parts.headers.insert("x-envoy-original-path", v);
        }
        set_path(&mut parts, &new_path);
    }
    let host_literal =
        weighted
            .and_then(|w| w.host_rewrite_literal.clone())
            .or(match &action.host_rewrite {
                HostRewrite::Literal(h) => Some(h.clone()),
                HostRewrite::Header(h) => parts
                    .headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                HostRewrite::PathRegex(re, sub) => Some(re.replace_all(parts.uri.path(), sub)),
                HostRewrite::None | HostRewrite::Auto => None,
            });
    if let Some(h) = host_literal {
        set_authority(&mut parts, &h);
    }
    // Header mutations, most specific level first unless configured otherwise.
    let levels = mutation_levels(ctx.config, &matched, weighted);
    let tctx = TemplateContext {
        downstream_remote: ctx.remote,
        downstream_local: ctx.local,
        upstream_remote: None,
        protocol: protocol_name(ctx.version),
        hostname: &ctx.shared.hostname,
        request_headers: None,
    };
    // `%REQ(...)%` in response headers needs the request's headers after the upstream answered.
    let needs_request_headers = levels.iter().any(|l| {
        l.response_add.iter().any(|o| {
            o.value
                .parts
                .iter()
                .any(|p| matches!(p, crate::config::route::TemplatePart::Request(_)))
        })
    });
    let request_headers_for_response = needs_request_headers.then(|| parts.headers.clone());
    mutate::apply_levels(&mut parts.headers, &levels, Side::Request, &tctx);

    let (hash, set_cookie) = hash_request(
        &action.hash_policy,
        &parts.headers,
        &path,
        ctx.remote,
        ctx.local,
    );
    let policy = action
        .retry_policy
        .clone()
        .or_else(|| vhost.retry_policy.clone());
    let mirrors = action
        .request_mirror_policies
        .as_deref()
        .filter(|m| !m.is_empty())
        .or((!vhost.request_mirror_policies.is_empty())
            .then_some(vhost.request_mirror_policies.as_slice()))
        .or((!ctx.config.request_mirror_policies.is_empty())
            .then_some(ctx.config.request_mirror_policies.as_slice()))
        .unwrap_or(&[]);

    // A mirror needs the whole body; a retry keeps what it can for replay (Envoy buffers
    // only when retries are possible).
    let pseudo = crate::config::matcher::PseudoHeaders {
        authority: parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or(""),
        path: &path,
        method: parts.method.as_str(),
        scheme: "http",
    };
    let retry = policy
        .clone()
        .map(|p| crate::retry::RetryState::new(p, &parts.headers, &pseudo))
        .filter(crate::retry::RetryState::enabled);
    let mut body = if body.is_end_stream() {
        ReqBody::Empty
    } else if !mirrors.is_empty() {
        match buffer(body, BUFFER_LIMIT).await {
            Ok(b) => b,
            Err(_) => {
                return local_reply::reply(
                    StatusCode::BAD_REQUEST,
                    "",
                    &["DPE"],
                    "downstream_remote_disconnect",
                );
            }
        }
    } else if retry.is_some() {
        let (first, replay) = crate::retry::ReplayBody::new(
            body,
            BUFFER_LIMIT,
            Some(cluster.stats().retry.retry_or_shadow_abandoned.clone()),
        );
        ReqBody::Replay(Some(first), replay)
    } else {
        ReqBody::Streaming(Some(body))
    };
    for m in mirrors {
        mirror(ctx.shared, m, &parts, &body);
    }

    let request_grpc_timeout = parts.headers.get("grpc-timeout").cloned();
    let attempt = attempts(
        &ctx,
        &cluster,
        policy.as_deref(),
        retry,
        &mut parts,
        &mut body,
        hash,
        vhost.include_request_attempt_count && !ctx.suppress_envoy_headers,
    );
    // `grpc-timeout` replaces the route timeout when the route honours it (capped by
    // `grpc_timeout_header_max` unless that is zero).
    let mut timeout = action.timeout;
    if let Some(cap) = action.grpc_timeout_header_max
        && let Some(t) = grpc_timeout(&request_grpc_timeout)
    {
        timeout = Some(match cap {
            Some(c) if !c.is_zero() => t.min(c),
            _ => t,
        });
    }
    let attempt = async {
        match action.max_stream_duration {
            Some(d) if !d.is_zero() => match tokio::time::timeout(d, attempt).await {
                Ok(r) => r,
                Err(_) => (
                    local_reply::reply(
                        StatusCode::REQUEST_TIMEOUT,
                        "upstream max stream duration reached",
                        &["UMSDR"],
                        "upstream_max_stream_duration_reached",
                    ),
                    1,
                ),
            },
            _ => attempt.await,
        }
    };
    tokio::pin!(attempt);
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, attempt.as_mut()).await {
            Ok(r) => r,
            Err(_) => {
                cluster.stats().rq_timeout.inc();
                let mut r = local_reply::upstream_timeout();
                add_cluster(&mut r, &cluster_name, None);
                return r;
            }
        },
        None => attempt.await,
    };
    let (mut resp, tries) = result;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        match (
            downstream_upgrade,
            resp.extensions_mut().remove::<hyper::upgrade::OnUpgrade>(),
        ) {
            (Some(down), Some(up)) => {
                tokio::spawn(async move {
                    if let (Ok(d), Ok(u)) = (down.await, up.await) {
                        let _ = crate::tcp::splice(
                            hyper_util::rt::TokioIo::new(d),
                            hyper_util::rt::TokioIo::new(u),
                            None,
                        )
                        .await;
                    }
                });
            }
            _ => {
                // An upgrade nobody asked for cannot be completed.
                return local_reply::upstream_failure("protocol error", "UPE", false, None);
            }
        }
    }
    if vhost.include_attempt_count_in_response && !ctx.suppress_envoy_headers {
        resp.headers_mut()
            .insert("x-envoy-attempt-count", HeaderValue::from(tries));
    }
    if let Some(c) = set_cookie {
        resp.headers_mut().append(http::header::SET_COOKIE, c);
    }
    let upstream = resp
        .extensions()
        .get::<ResponseInfo>()
        .and_then(|i| i.upstream_host);
    let rctx = TemplateContext {
        upstream_remote: upstream,
        request_headers: request_headers_for_response.as_ref(),
        ..tctx
    };
    mutate::apply_levels(resp.headers_mut(), &levels, Side::Response, &rctx);
    add_cluster(&mut resp, &cluster_name, upstream);
    resp
}

fn add_cluster(r: &mut Response<Body>, cluster: &str, host: Option<SocketAddr>) {
    let info = r.extensions_mut().get_mut::<ResponseInfo>();
    match info {
        Some(i) => {
            i.cluster = Some(cluster.to_string());
            if host.is_some() {
                i.upstream_host = host;
            }
        }
        None => {
            r.extensions_mut().insert(ResponseInfo {
                cluster: Some(cluster.to_string()),
                upstream_host: host,
                details: "via_upstream".into(),
                ..Default::default()
            });
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

pub(crate) fn set_path(parts: &mut http::request::Parts, path: &str) {
    let mut b = http::uri::Builder::new();
    if let Some(s) = parts.uri.scheme() {
        b = b.scheme(s.clone());
    }
    if let Some(a) = parts.uri.authority() {
        b = b.authority(a.clone());
    }
    if let Ok(u) = b.path_and_query(path).build() {
        parts.uri = u;
    }
}

pub(crate) fn set_authority(parts: &mut http::request::Parts, host: &str) {
    if let Ok(v) = HeaderValue::from_str(host) {
        parts.headers.insert(http::header::HOST, v);
    }
    if parts.uri.authority().is_some() {
        let mut b = http::uri::Builder::new();
        if let Some(s) = parts.uri.scheme() {
            b = b.scheme(s.clone());
        }
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Ok(u) = b.authority(host).path_and_query(pq).build() {
            parts.uri = u;
        }
    }
}

/// Sends a copy of the request to a mirror cluster, fire and forget, with `-shadow`
/// appended to the host.
fn mirror(shared: &Shared, m: &MirrorPolicy, parts: &http::request::Parts, body: &ReqBody) {
    if !m.fraction.sample() {
        return;
    }
    let Some(cluster) = shared.clusters.get(&m.cluster) else {
        return;
    };
    let b = match body {
        ReqBody::Empty => super::empty(),
        ReqBody::Buffered(b) => full(b.clone()),
        ReqBody::Streaming(_) | ReqBody::Replay(..) => {
            cluster.stats().retry.retry_or_shadow_abandoned.inc();
            return;
        }
    };
    let mut req = Request::new(b);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.headers_mut() = parts.headers.clone();
    let version = parts.version;
    if !m.disable_shadow_host_suffix_append {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        if let Some(h) = host {
            let shadow = match h.rsplit_once(':') {
                Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{host}-shadow:{port}")
                }
                _ => format!("{h}-shadow"),
            };
            let (mut p, b) = req.into_parts();
            set_authority(&mut p, &shadow);
            req = Request::from_parts(p, b);
        }
    }
    tokio::spawn(async move {
        let Some(host) = cluster.choose(&HostRequest::default()) else {
            return;
        };
        let Some(_guard) = cluster.start_request() else {
            return;
        };
        let _active = host.start_request();
        if let Ok(resp) = cluster.send(&host, req, version).await {
            cluster.stats().status(resp.status().as_u16());
            let _ = resp.into_body().collect().await;
        }
    });
}

/// The attempts of one request: the first, then retries as the policy allows.
#[allow(clippy::too_many_arguments)]
async fn attempts(
    ctx: &RouterContext<'_>,
    cluster: &Arc<ClusterRuntime>,
    policy: Option<&RetryPolicy>,
    mut retry: Option<crate::retry::RetryState>,
    parts: &mut http::request::Parts,
    body: &mut ReqBody,
    hash: Option<u64>,
    attempt_header: bool,
) -> (Response<Body>, u32) {
    use crate::retry::RetryStatus;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut attempt: u32 = 0;
    let previous_hosts = policy.is_some_and(|p| p.previous_hosts);
    let selection_attempts = policy.map_or(1, |p| p.host_selection_retry_max_attempts);
    // ORIGINAL_DST with `use_http_header`: `x-envoy-original-dst-host` names the host.
    let original_dst = match cluster.config().discovery {
        crate::config::cluster::Discovery::OriginalDst {
            use_http_header: true,
        } => parts
            .headers
            .get("x-envoy-original-dst-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<SocketAddr>().ok())
            .unwrap_or(ctx.local),
        _ => ctx.local,
    };
    loop {
        attempt += 1;
        let predicate = |h: &Host| tried.contains(&h.address());
        let host = cluster.choose(&HostRequest {
            hash,
            original_dst: Some(original_dst),
            resolved: ctx.resolved,
            should_select_another: (previous_hosts && !tried.is_empty())
                .then_some(&predicate as &dyn Fn(&Host) -> bool),
            host_selection_retry_max_attempts: selection_attempts,
        });
        let Some(host) = host else {
            return (local_reply::no_healthy_upstream(), attempt);
        };
        let Some(guard) = cluster.start_request() else {
            return (
                local_reply::upstream_failure(
                    Failure::Overflow.reset_reason(),
                    "UO",
                    attempt > 1,
                    None,
                ),
                attempt,
            );
        };
        let Some(b) = body.take() else {
            // The body could not be kept for another attempt: the last failure stands.
            return (
                local_reply::upstream_failure("remote reset", "UR", true, None),
                attempt,
            );
        };
        let mut req = Request::new(b);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        // Without retries there is one attempt: the headers move instead of being copied.
        *req.headers_mut() = if retry.is_none() {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        if attempt_header {
            req.headers_mut()
                .insert("x-envoy-attempt-count", HeaderValue::from(attempt));
        }
        let active = host.start_request();
        let started = tokio::time::Instant::now();
        let send = cluster.send(&host, req, ctx.version);
        let result = match policy.and_then(|p| p.per_try_timeout) {
            Some(t) => match tokio::time::timeout(t, send).await {
                Ok(r) => r.map_err(|e| e.failure),
                Err(_) => {
                    cluster.stats().retry.upstream_rq_per_try_timeout.inc();
                    Err(Failure::PerTryTimeout)
                }
            },
            None => send.await.map_err(|e| e.failure),
        };
        let outcome = match &result {
            Ok(resp) => Outcome::Response {
                status: resp.status(),
                headers: resp.headers(),
            },
            Err(f) => Outcome::Failure(*f),
        };
        if !matches!(outcome, Outcome::Failure(Failure::Overflow)) {
            cluster.report(&host, &outcome);
        }
        if outcome.is_5xx() {
            host.count_error();
        }
        let status = match retry.as_mut() {
            Some(state) => {
                state.should_retry(&outcome, cluster.resources(), &cluster.stats().retry)
            }
            None => RetryStatus::No,
        };
        if let RetryStatus::Yes { backoff } = status {
            if let Ok(r) = &result {
                cluster.stats().status(r.status().as_u16());
            }
            drop(result);
            drop(active);
            drop(guard);
            tried.push(host.address());
            tokio::time::sleep(backoff).await;
            continue;
        }
        let exhausted = status == RetryStatus::NoRetryLimitExceeded;
        return match result {
            Ok(resp) => {
                let code = resp.status().as_u16();
                cluster.stats().status(code);
                let elapsed = started.elapsed();
                let (mut p, b) = resp.into_parts();
                let body = Guarded {
                    inner: b,
                    _guard: (guard, active),
                };
                if !ctx.suppress_envoy_headers {
                    p.headers.insert(
                        X_ENVOY_UPSTREAM_SERVICE_TIME,
                        HeaderValue::from(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
                    );
                }
                let mut info = ResponseInfo {
                    upstream_host: Some(host.address()),
                    details: "via_upstream".into(),
                    ..Default::default()
                };
                if exhausted {
                    info.flags.push("URX");
                }
                p.extensions.insert(info);
                (Response::from_parts(p, super::boxed(body)), attempt)
            }
            Err(f) => {
                let mut r = if f == Failure::PerTryTimeout {
                    local_reply::upstream_timeout()
                } else {
                    local_reply::upstream_failure(
                        f.reset_reason(),
                        f.response_flag(),
                        attempt > 1,
                        None,
                    )
                };
                if let Some(i) = r.extensions_mut().get_mut::<ResponseInfo>() {
                    i.upstream_host = Some(host.address());
                }
                (r, attempt)
            }
        };
    }
}

/// A response body that keeps the request counted (active, and on its host) until it ends.
struct Guarded<G> {
    inner: crate::cluster::pool::PooledBody,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        let v = |s: &str| Some(HeaderValue::from_str(s).unwrap());
        assert_eq!(
            grpc_timeout(&v("100m")),
            Some(std::time::Duration::from_millis(100))
        );
        assert_eq!(
            grpc_timeout(&v("2S")),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(
            grpc_timeout(&v("1H")),
            Some(std::time::Duration::from_secs(3600))
        );
        assert_eq!(grpc_timeout(&v("123456789S")), None);
        assert_eq!(grpc_timeout(&v("S")), None);
        assert_eq!(grpc_timeout(&v("5x")), None);
        assert_eq!(grpc_timeout(&None), None);
    }

    #[test]
    fn hash_policies_combine_like_envoy() {
        let headers = {
            let mut h = HeaderMap::new();
            h.insert("x-user", "alice".parse().unwrap());
            h
        };
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let header = |terminal| HashPolicy {
            kind: HashKind::Header {
                name: http::header::HeaderName::from_static("x-user"),
                rewrite: None,
            },
            terminal,
        };
        let ip = HashPolicy {
            kind: HashKind::SourceIp,
            terminal: false,
        };
        let h1 = xxh(b"alice");
        let h2 = xxh(b"10.0.0.1");
        assert_eq!(
            hash_request(&[header(false)], &headers, "/", a, a).0,
            Some(h1)
        );
        assert_eq!(
            hash_request(&[header(false), ip.clone()], &headers, "/", a, a).0,
            Some(h1.rotate_left(1) ^ h2)
        );
        // A terminal policy that hashed stops the walk.
        assert_eq!(
            hash_request(&[header(true), ip], &headers, "/", a, a).0,
            Some(h1)
        );
        // No value, no hash.
        assert_eq!(
            hash_request(&[header(false)], &HeaderMap::new(), "/", a, a).0,
            None
        );
        let q = HashPolicy {
            kind: HashKind::QueryParameter("k".into()),
            terminal: false,
        };
        assert_eq!(
            hash_request(&[q], &headers, "/p?a=1&k=v", a, a).0,
            Some(xxh(b"v"))
        );
    }
}
