//! The HTTP connection manager: one hyper connection, and per request the header rules,
//! route selection, HTTP filters and the router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use super::codec_error;
use super::cors::{self, CorsAction};
use super::fault::{self, FaultStats};
use super::headers::{self, Downstream};
use super::local_reply::{self, ResponseInfo};
use super::mutate::{self, Side, TemplateContext};
use super::route_table::{RouteRequest, RouteTable};
use super::router::{self, RouterContext};
use super::{Body, full};
use crate::config::http::{Codec, HttpConnectionManager, HttpFilter};
use crate::config::route::{PathRedirect, RedirectAction, RouteAction};
use crate::server::Shared;
use crate::stats::{Counter, Gauge, Store};

/// A route configuration delivered over RDS: empty until it arrives, swapped on updates
/// (new requests on open connections see the new routes at once).
pub type RdsSlot = ArcSwapOption<RouteTable>;

/// Where an HCM finds its routes.
#[derive(Debug, Clone)]
pub enum Routes {
    /// Given inline.
    Inline(Arc<RouteTable>),
    /// From RDS.
    Rds(Arc<RdsSlot>),
}

impl Routes {
    fn current(&self) -> Option<Arc<RouteTable>> {
        match self {
            Routes::Inline(t) => Some(t.clone()),
            Routes::Rds(slot) => slot.load_full(),
        }
    }
}

/// An HCM's stats (`http.PREFIX.`).
#[derive(Clone, Debug)]
pub struct HcmStats {
    /// `downstream_cx_total`.
    pub cx_total: Counter,
    /// `downstream_cx_active`.
    pub cx_active: Gauge,
    /// `downstream_cx_http1_total`.
    pub cx_http1_total: Counter,
    /// `downstream_cx_http2_total`.
    pub cx_http2_total: Counter,
    /// `downstream_rq_total`.
    pub rq_total: Counter,
    /// `downstream_rq_active`.
    pub rq_active: Gauge,
    /// `downstream_rq_http1_total`.
    pub rq_http1_total: Counter,
    /// `downstream_rq_http2_total`.
    pub rq_http2_total: Counter,
    /// `downstream_rq_1xx` .. `downstream_rq_5xx`.
    pub rq_class: [Counter; 5],
    /// `downstream_rq_completed`.
    pub rq_completed: Counter,
    /// `downstream_rq_idle_timeout`.
    pub rq_idle_timeout: Counter,
    /// `downstream_cx_idle_timeout`.
    pub cx_idle_timeout: Counter,
    /// `downstream_rq_max_duration_reached`.
    pub rq_max_duration_reached: Counter,
    /// `no_route`.
    pub no_route: Counter,
    /// `no_cluster`.
    pub no_cluster: Counter,
    /// `rq_redirect`.
    pub rq_redirect: Counter,
    /// `rq_direct_response`.
    pub rq_direct_response: Counter,
    /// `rq_total` (router).
    pub router_rq_total: Counter,
}

impl HcmStats {
    /// Stats for `stat_prefix`.
    pub fn new(store: &Store, prefix: &str) -> HcmStats {
        let p = format!("http.{prefix}.");
        let c = |s: &str| store.counter(format!("{p}{s}"));
        let g = |s: &str| store.gauge(format!("{p}{s}"));
        HcmStats {
            cx_total: c("downstream_cx_total"),
            cx_active: g("downstream_cx_active"),
            cx_http1_total: c("downstream_cx_http1_total"),
            cx_http2_total: c("downstream_cx_http2_total"),
            rq_total: c("downstream_rq_total"),
            rq_active: g("downstream_rq_active"),
            rq_http1_total: c("downstream_rq_http1_total"),
            rq_http2_total: c("downstream_rq_http2_total"),
            rq_class: [
                c("downstream_rq_1xx"),
                c("downstream_rq_2xx"),
                c("downstream_rq_3xx"),
                c("downstream_rq_4xx"),
                c("downstream_rq_5xx"),
            ],
            rq_completed: c("downstream_rq_completed"),
            rq_idle_timeout: c("downstream_rq_idle_timeout"),
            cx_idle_timeout: c("downstream_cx_idle_timeout"),
            rq_max_duration_reached: c("downstream_rq_max_duration_reached"),
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            rq_redirect: c("rq_redirect"),
            rq_direct_response: c("rq_direct_response"),
            router_rq_total: c("rq_total"),
        }
    }
}

/// An HTTP connection manager ready to serve connections.
#[derive(Debug)]
pub struct HcmRuntime {
    /// The configuration.
    pub config: Arc<HttpConnectionManager>,
    /// Where routes come from.
    pub routes: Routes,
    /// Stats.
    pub stats: HcmStats,
    /// Fault filter stats.
    pub fault_stats: FaultStats,
}

impl HcmRuntime {
    /// Builds the runtime of an HCM, its RDS slot taken from `rds` when routes come by name.
    pub fn new(
        config: Arc<HttpConnectionManager>,
        store: &Store,
        rds: impl FnOnce(&str) -> Arc<RdsSlot>,
    ) -> HcmRuntime {
        let routes = match &config.routes {
            crate::config::http::RouteSource::Inline(rc) => {
                Routes::Inline(Arc::new(RouteTable::new((**rc).clone())))
            }
            crate::config::http::RouteSource::Rds(name) => Routes::Rds(rds(name)),
        };
        HcmRuntime {
            stats: HcmStats::new(store, &config.stat_prefix),
            fault_stats: FaultStats::new(store, &config.stat_prefix),
            config,
            routes,
        }
    }
}

/// What a connection knows about itself.
#[derive(Clone, Debug)]
pub struct ConnMeta {
    /// Peer address.
    pub remote: SocketAddr,
    /// Local address (original destination under capture).
    pub local: SocketAddr,
    /// TLS terminated here.
    pub tls: bool,
    /// ALPN negotiated (`h2` selects HTTP/2 on TLS).
    pub alpn_h2: bool,
    /// The terminated TLS connection: the peer's certificate and this side's SANs.
    pub tls_info: Option<Arc<crate::tls::TlsInfo>>,
}

impl ConnMeta {
    /// Envoy's authenticated principal of the peer (its certificate's first URI SAN, a
    /// SPIFFE ID in the mesh; else DNS SAN, else subject), for authorization.
    pub fn authenticated_principal(&self) -> Option<&str> {
        self.tls_info
            .as_deref()
            .and_then(crate::tls::TlsInfo::authenticated_principal)
    }
}

/// Serves one downstream connection until it closes, or, once `drain` turns true, until its
/// in-flight requests are done (HTTP/1.1 closes after the current response, HTTP/2 sends
/// GOAWAY).
pub async fn serve<IO>(
    hcm: Arc<HcmRuntime>,
    shared: Arc<Shared>,
    io: IO,
    meta: ConnMeta,
    mut drain: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stats = hcm.stats.clone();
    stats.cx_total.inc();
    stats.cx_active.inc();
    let _active = GaugeGuard(stats.cx_active.clone());
    let cfg = hcm.config.clone();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(usize::try_from(cfg.max_request_headers_kb.max(8)).unwrap_or(60) * 1024)
        .max_headers(usize::try_from(cfg.max_headers_count).unwrap_or(100));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2.max_concurrent_streams)
        .initial_stream_window_size(cfg.http2.initial_stream_window_size)
        .initial_connection_window_size(cfg.http2.initial_connection_window_size);
    if let Some(t) = cfg.request_headers_timeout {
        builder.http1().header_read_timeout(t);
    }
    let builder = match cfg.codec {
        Codec::Http1 => builder.http1_only(),
        Codec::Http2 => builder.http2_only(),
        Codec::Auto if meta.alpn_h2 => builder.http2_only(),
        Codec::Auto => builder,
    };
    let svc_meta = Arc::new(meta);
    // Requests in flight on this connection, and when the last one ended (idle timeout).
    let activity = Arc::new(Activity::default());
    let svc_activity = activity.clone();
    // The codec is known at the first request: `downstream_cx_http1_total` or `_http2_total`.
    let codec_counted = std::sync::atomic::AtomicBool::new(false);
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        if !codec_counted.swap(true, std::sync::atomic::Ordering::Relaxed) {
            match req.version() {
                Version::HTTP_2 => hcm.stats.cx_http2_total.inc(),
                _ => hcm.stats.cx_http1_total.inc(),
            }
        }
        let hcm = hcm.clone();
        let shared = shared.clone();
        let meta = svc_meta.clone();
        let busy = svc_activity.begin();
        // A span per request (free when its level is off).
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            stat_prefix = %hcm.config.stat_prefix,
        );
        // The router's state machine (retries, the upstream call) is boxed where it starts
        // (`filters_then_router`), so the futures hyper and the layers above move around are
        // small.
        tracing::Instrument::instrument(
            async move {
                let req = req.map(super::boxed);
                let r = handle(&hcm, &shared, &meta, req).await;
                if let Some(info) = r.extensions().get::<ResponseInfo>() {
                    tracing::debug!(
                        status = r.status().as_u16(),
                        flags = ?info.flags,
                        cluster = ?info.cluster,
                        upstream = ?info.upstream_host,
                        "response"
                    );
                }
                drop(busy);
                Ok::<_, std::convert::Infallible>(r)
            },
            span,
        )
    });
    // hyper's own answers to unparsable HTTP/1 heads become Envoy's.
    let replies = (cfg.codec != Codec::Http2
        && codec_error::CodecErrorReplies::<IO>::applies(cfg.server_header_transformation))
    .then_some(cfg.server_name.as_str());
    let io = codec_error::CodecErrorReplies::new(io, replies);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut draining = *drain.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let idle = cfg.idle_timeout;
    let far = Duration::from_secs(u64::from(u32::MAX));
    loop {
        let idle_deadline = activity.last() + idle.unwrap_or(far);
        tokio::select! {
            _ = conn.as_mut() => break,
            changed = drain.changed(), if !draining => {
                if changed.is_err() || *drain.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(idle_deadline), if idle.is_some() && !draining => {
                if activity.idle_for(idle.unwrap_or(far)) {
                    stats.cx_idle_timeout.inc();
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Requests in flight on a connection and when it last had one.
#[derive(Debug)]
struct Activity {
    busy: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<tokio::time::Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            busy: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(self.clone())
    }

    fn last(&self) -> tokio::time::Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// No request in flight, and none for `d`.
    fn idle_for(&self, d: Duration) -> bool {
        self.busy.load(std::sync::atomic::Ordering::Relaxed) == 0 && self.last().elapsed() >= d
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One request through the HCM.
pub async fn handle(
    hcm: &HcmRuntime,
    shared: &Shared,
    meta: &ConnMeta,
    req: Request<Body>,
) -> Response<Body> {
    let stats = &hcm.stats;
    stats.rq_total.inc();
    stats.rq_active.inc();
    let _active = GaugeGuard(stats.rq_active.clone());
    match req.version() {
        Version::HTTP_2 => stats.rq_http2_total.inc(),
        _ => stats.rq_http1_total.inc(),
    }
    let version = req.version();
    let cfg = &hcm.config;
    let mut resp = match cfg.max_stream_duration {
        Some(t) if !t.is_zero() => {
            match tokio::time::timeout(t, route_request(hcm, shared, meta, req)).await {
                Ok(r) => r,
                Err(_) => {
                    stats.rq_max_duration_reached.inc();
                    local_reply::reply(
                        StatusCode::REQUEST_TIMEOUT,
                        "downstream duration timeout",
                        &["DT"],
                        "max_duration_timeout",
                    )
                }
            }
        }
        _ => route_request(hcm, shared, meta, req).await,
    };
    let request_id = resp.extensions_mut().remove::<RequestId>();
    headers::response(cfg, resp.headers_mut(), request_id.as_ref().map(|r| &r.0));
    if version != Version::HTTP_2 && resp.extensions_mut().remove::<CloseConnection>().is_some() {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let code = resp.status().as_u16();
    if (100..600).contains(&code) {
        stats.rq_class[usize::from(code / 100 - 1)].inc();
    }
    stats.rq_completed.inc();
    if version == Version::HTTP_10 {
        *resp.version_mut() = Version::HTTP_10;
    }
    resp
}

/// Marks a local reply after which an HTTP/1 connection closes (`connection: close` is added
/// after the hop-by-hop headers are stripped).
#[derive(Clone, Copy, Debug)]
struct CloseConnection;

/// The request's `x-request-id`, for `always_set_request_id_in_response`.
#[derive(Clone, Debug)]
struct RequestId(HeaderValue);

async fn route_request(
    hcm: &HcmRuntime,
    shared: &Shared,
    meta: &ConnMeta,
    req: Request<Body>,
) -> Response<Body> {
    let cfg = &hcm.config;
    let (mut parts, body) = req.into_parts();
    // What the connection's TLS says (the peer's principal) travels with the request, for
    // the HTTP filters.
    if let Some(info) = &meta.tls_info {
        parts.extensions.insert(info.clone());
    }
    // The authority: `:authority` in HTTP/2, Host in HTTP/1.1.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    let Some(authority) = authority else {
        // Envoy: 400 with no body, and the connection closes.
        let mut r =
            local_reply::reply(StatusCode::BAD_REQUEST, "", &["DPE"], "missing_host_header");
        r.extensions_mut().insert(CloseConnection);
        return r;
    };
    if parts.version != Version::HTTP_2
        && !parts.headers.contains_key(http::header::HOST)
        && let Ok(v) = HeaderValue::from_str(&authority)
    {
        parts.headers.insert(http::header::HOST, v);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let path = if cfg.normalize_path || cfg.merge_slashes {
        match headers::normalize_path(&path, cfg.merge_slashes) {
            Some(p) => p,
            None => {
                return local_reply::reply(
                    StatusCode::BAD_REQUEST,
                    "",
                    &["DPE"],
                    "path_normalization_failed",
                );
            }
        }
    } else {
        path
    };
    // Upgrades pass only when the HCM allows them (`upgrade_configs: websocket`).
    let upgrade = cfg.websocket
        && parts
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let downstream = Downstream {
        remote: meta.remote,
        local: meta.local,
        tls: meta.tls,
        tls_info: meta.tls_info.clone(),
    };
    let Some(table) = hcm.routes.current() else {
        hcm.stats.router_rq_total.inc();
        hcm.stats.no_route.inc();
        return local_reply::no_route();
    };
    headers::request(
        cfg,
        &table.config().internal_only_headers,
        &mut parts.headers,
        &downstream,
        upgrade,
    );
    let request_id = parts.headers.get(headers::X_REQUEST_ID).cloned();
    // Rebuild the URI with the (normalised) path; keep the authority in HTTP/2.
    {
        let mut b = http::uri::Builder::new();
        if let Some(s) = parts.uri.scheme() {
            b = b.scheme(s.clone());
        }
        if let Some(a) = parts.uri.authority() {
            b = b.authority(a.clone());
        }
        if let Ok(u) = b.path_and_query(path.as_str()).build() {
            parts.uri = u;
        }
    }
    let scheme = if meta.tls { "https" } else { "http" };
    let matched = table.route(&RouteRequest {
        authority: &authority,
        path: &path,
        method: &parts.method,
        scheme,
        headers: &parts.headers,
    });
    let Some(matched) = matched else {
        hcm.stats.router_rq_total.inc();
        hcm.stats.no_route.inc();
        return with_id(local_reply::no_route(), request_id);
    };
    let route = matched.route;
    let tctx = TemplateContext {
        downstream_remote: meta.remote,
        downstream_local: meta.local,
        upstream_remote: None,
        protocol: match parts.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        hostname: &shared.hostname,
        request_headers: Some(&parts.headers),
    };
    let mut resp = match &route.action {
        RouteAction::DirectResponse(d) => {
            hcm.stats.router_rq_total.inc();
            hcm.stats.rq_direct_response.inc();
            let mut r = Response::new(match &d.body {
                Some(b) => full(b.clone()),
                None => super::empty(),
            });
            *r.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
            if let Some(b) = &d.body {
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain"),
                );
                r.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(b.len()));
            } else {
                r.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            }
            // A 3xx direct response points back at the request's URL, as Envoy's router does.
            if (300..400).contains(&d.status)
                && let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{authority}{path}"))
            {
                r.headers_mut().insert(http::header::LOCATION, v);
            }
            r.extensions_mut().insert(ResponseInfo {
                details: "direct_response".into(),
                route_name: route.name.clone(),
                ..Default::default()
            });
            let levels = router::mutation_levels(table.config(), &matched, None);
            mutate::apply_levels(r.headers_mut(), &levels, Side::Response, &tctx);
            r
        }
        RouteAction::Redirect(rd) => {
            hcm.stats.router_rq_total.inc();
            hcm.stats.rq_redirect.inc();
            let r = redirect(
                rd,
                &matched.route.route_match.path,
                scheme,
                &authority,
                &path,
            );
            let levels = router::mutation_levels(table.config(), &matched, None);
            let mut r = r;
            mutate::apply_levels(r.headers_mut(), &levels, Side::Response, &tctx);
            r
        }
        RouteAction::Route(action) => {
            let req = Request::from_parts(parts, body);
            filters_then_router(hcm, shared, meta, &table, matched, action, req).await
        }
    };
    if let Some(info) = resp.extensions_mut().get_mut::<ResponseInfo>() {
        if info.route_name.is_empty() {
            info.route_name = route.name.clone();
        }
        if info.flags.contains(&"NC") {
            hcm.stats.no_cluster.inc();
        }
    }
    with_id(resp, request_id)
}

fn with_id(mut r: Response<Body>, id: Option<HeaderValue>) -> Response<Body> {
    if let Some(id) = id {
        r.extensions_mut().insert(RequestId(id));
    }
    r
}

/// The HTTP filters in the HCM's order, then the router.
async fn filters_then_router(
    hcm: &HcmRuntime,
    shared: &Shared,
    meta: &ConnMeta,
    table: &RouteTable,
    matched: super::route_table::Matched<'_>,
    action: &crate::config::route::ForwardAction,
    req: Request<Body>,
) -> Response<Body> {
    let cfg = &hcm.config;
    let mut cors_headers = Vec::new();
    let mut resolved = None;
    let mut fault_guard = None;
    let mut delayed = false;
    for f in &cfg.http_filters {
        match f {
            HttpFilter::Fault(filter_level) => {
                let fc = matched
                    .route
                    .per_filter
                    .fault
                    .as_ref()
                    .or(matched.vhost.per_filter.fault.as_ref())
                    .unwrap_or(filter_level);
                let (cluster, _) = router::pick_cluster(action, req.headers());
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let authority = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| req.uri().authority().map(|a| a.as_str()))
                    .unwrap_or("");
                let pseudo = crate::config::matcher::PseudoHeaders {
                    authority,
                    path,
                    method: req.method().as_str(),
                    scheme: if meta.tls { "https" } else { "http" },
                };
                let (d, guard) = fault::decide(
                    fc,
                    req.headers(),
                    &pseudo,
                    cluster.as_deref(),
                    &hcm.fault_stats,
                );
                fault_guard = guard;
                if let Some(delay) = d.delay {
                    delayed = true;
                    tokio::time::sleep(delay).await;
                }
                if let Some(abort) = d.abort {
                    hcm.fault_stats.aborts_injected.inc();
                    let mut r = abort.response();
                    if delayed && let Some(i) = r.extensions_mut().get_mut::<ResponseInfo>() {
                        i.flags.insert(0, "DI");
                    }
                    return r;
                }
            }
            HttpFilter::Cors(filter_level) => {
                let policy = matched
                    .route
                    .per_filter
                    .cors
                    .as_deref()
                    .or(matched.vhost.per_filter.cors.as_deref())
                    .or(filter_level.as_deref());
                match cors::decide(policy, req.method(), req.headers()) {
                    CorsAction::Pass => {}
                    CorsAction::Preflight(r) => return r,
                    CorsAction::Decorate(h) => cors_headers = h,
                }
            }
            HttpFilter::DynamicForwardProxy(cache) => {
                let (cluster, _) = router::pick_cluster(action, req.headers());
                let is_dfp = cluster
                    .and_then(|c| shared.clusters.get(&c))
                    .is_some_and(|c| {
                        matches!(
                            c.config().discovery,
                            crate::config::cluster::Discovery::DynamicForwardProxy(_)
                        )
                    });
                if is_dfp {
                    let authority = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .or_else(|| req.uri().authority().map(|a| a.as_str()))
                        .unwrap_or("")
                        .to_string();
                    let (host, port) = split_host_port(&authority, if meta.tls { 443 } else { 80 });
                    match shared
                        .dns
                        .resolve(&cache.name, &host, cache.lookup_family)
                        .await
                    {
                        Some(ip) => resolved = Some(SocketAddr::new(ip, port)),
                        None => {
                            return local_reply::reply(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "DNS resolution failure",
                                &["DF"],
                                "dns_resolution_failure",
                            );
                        }
                    }
                }
            }
            HttpFilter::Router(rc) => {
                // The router counts what reaches it (not what a fault or CORS answered).
                hcm.stats.router_rq_total.inc();
                let version = req.version();
                let ctx = RouterContext {
                    shared,
                    config: table.config(),
                    matched,
                    remote: meta.remote,
                    local: meta.local,
                    version,
                    suppress_envoy_headers: rc.suppress_envoy_headers,
                    resolved,
                };
                let idle = action.idle_timeout.unwrap_or(cfg.stream_idle_timeout);
                // Boxed: the router's future is several KiB (retries, the upstream call);
                // every future above it would otherwise be as large and be copied as it
                // starts.
                let mut fwd = Box::pin(router::forward(ctx, action, req));
                let mut r = match idle {
                    Some(t) if !t.is_zero() => match tokio::time::timeout(t, fwd.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => {
                            hcm.stats.rq_idle_timeout.inc();
                            local_reply::stream_idle_timeout()
                        }
                    },
                    _ => fwd.await,
                };
                for (name, v) in cors_headers {
                    r.headers_mut().insert(name, v);
                }
                if delayed && let Some(i) = r.extensions_mut().get_mut::<ResponseInfo>() {
                    i.flags.insert(0, "DI");
                }
                drop(fault_guard);
                return r;
            }
        }
    }
    // An HCM without a router (rejected at conversion) answers 404.
    local_reply::no_route()
}

/// `host:port` split, with `default` for a missing port.
pub fn split_host_port(authority: &str, default: u16) -> (String, u16) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((h, p)) = rest.split_once(']')
    {
        let port = p
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(default);
        return (h.to_string(), port);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
            (h.to_string(), p.parse().unwrap_or(default))
        }
        _ => (authority.to_string(), default),
    }
}

/// A redirect response for `rd`.
pub(crate) fn redirect(
    rd: &RedirectAction,
    path_match: &crate::config::route::PathMatch,
    scheme: &str,
    authority: &str,
    path: &str,
) -> Response<Body> {
    let new_scheme = rd.scheme.as_deref().unwrap_or(scheme);
    let (orig_host, orig_port) = split_host_port(authority, 0);
    let host = rd.host.clone().unwrap_or(orig_host);
    let port = match rd.port {
        Some(p) => Some(p),
        None if rd.host.is_some() => None,
        None if orig_port != 0 => Some(orig_port),
        None => None,
    };
    // Switching scheme drops the port; so do default ports.
    let port = match (port, new_scheme) {
        (Some(80), "http") | (Some(443), "https") => None,
        (Some(_), _)
            if rd.scheme.is_some() && rd.scheme.as_deref() != Some(scheme) && rd.port.is_none() =>
        {
            None
        }
        (p, _) => p,
    };
    let (p, q) = match path.find('?') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    let (new_path, query) = match &rd.path {
        PathRedirect::Keep => (p.to_string(), q.to_string()),
        PathRedirect::Path(np) => match np.find('?') {
            Some(i) => (np[..i].to_string(), np[i..].to_string()),
            None => (np.clone(), q.to_string()),
        },
        PathRedirect::Prefix(pre) => {
            let len = match path_match {
                crate::config::route::PathMatch::Prefix(m)
                | crate::config::route::PathMatch::PathSeparatedPrefix(m) => m.len(),
                _ => 0,
            };
            (
                format!("{pre}{}", p.get(len.min(p.len())..).unwrap_or("")),
                q.to_string(),
            )
        }
        PathRedirect::Regex(re, sub) => (re.replace_all(p, sub), q.to_string()),
    };
    let query = if rd.strip_query { String::new() } else { query };
    let location = match port {
        Some(port) => format!("{new_scheme}://{host}:{port}{new_path}{query}"),
        None => format!("{new_scheme}://{host}{new_path}{query}"),
    };
    let mut r = Response::new(super::empty());
    *r.status_mut() =
        StatusCode::from_u16(rd.response_code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r.extensions_mut().insert(ResponseInfo {
        details: "direct_response".into(),
        ..Default::default()
    });
    r
}
