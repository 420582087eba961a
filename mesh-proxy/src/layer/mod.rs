//! The proxy's pieces as tower layers that work in front of any service.
//!
//! - [`RouteLayer`]: Envoy's route matching and route actions over a [`RouteTable`]: virtual
//!   host and route selection, direct responses, redirects and 404s answered in place,
//!   weighted cluster choice, path and host rewrites and the four levels of header mutations.
//!   The request reaches the inner service with an [`Upstream`] extension naming the cluster.
//! - [`BreakerLayer`]: Envoy's `max_requests` circuit breaker: a request over the limit gets
//!   503 with `x-envoy-overloaded: true` at once, never a wait.
//! - [`crate::retry::RetryLayer`]: Envoy's retries (see that module).
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//!
//! use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
//! use http::{Request, Response, StatusCode};
//! use mesh_proxy::http::route_table::RouteTable;
//! use mesh_proxy::http::{Body, full};
//! use mesh_proxy::layer::{RouteLayer, Upstream};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let routes: RouteConfiguration = mesh_proxy::proto::parse_yaml(r#"
//! name: local
//! virtual_hosts:
//! - name: shop
//!   domains: [shop.example]
//!   routes:
//!   - match: {prefix: /old}
//!     redirect: {path_redirect: /new}
//!   - match: {prefix: /api/}
//!     route: {cluster: api, prefix_rewrite: /}
//! "#).unwrap();
//! let table = Arc::new(RouteTable::new(mesh_proxy::proto::route_configuration(routes).unwrap()));
//!
//! // Any service can stand behind the router; this one says where it was sent.
//! let upstream = service_fn(|req: Request<Body>| async move {
//!     let to = req.extensions().get::<Upstream>().unwrap().cluster.clone();
//!     Ok::<_, Infallible>(Response::new(full(format!("{to} {}", req.uri().path()))))
//! });
//! let svc = RouteLayer::new(table).layer(upstream);
//!
//! let get = |path: &str| Request::get(path).header("host", "shop.example").body(full("")).unwrap();
//! let r = svc.clone().oneshot(get("/api/items")).await.unwrap();
//! let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
//! assert_eq!(body, "api /items");
//!
//! let r = svc.clone().oneshot(get("/old")).await.unwrap();
//! assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
//! assert_eq!(r.headers()["location"], "http://shop.example/new");
//!
//! let r = svc.oneshot(get("/elsewhere")).await.unwrap();
//! assert_eq!(r.status(), StatusCode::NOT_FOUND);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};

use crate::cluster::resources::ResourceManager;
use crate::config::route::{HeaderMutations, RouteAction};
use crate::http::local_reply;
use crate::http::mutate::{self, Side, TemplateContext};
use crate::http::route_table::{RouteRequest, RouteTable};
use crate::http::{Body, router};

/// Where the router sent a request (a request extension for the inner service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The cluster the route chose.
    pub cluster: String,
    /// The route's name.
    pub route: String,
}

/// Routes requests by an Envoy route table (see the module docs).
#[derive(Clone, Debug)]
pub struct RouteLayer {
    table: Arc<RouteTable>,
}

impl RouteLayer {
    /// A layer routing by `table`.
    pub fn new(table: Arc<RouteTable>) -> RouteLayer {
        RouteLayer { table }
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = RouteService<S>;

    fn layer(&self, inner: S) -> RouteService<S> {
        RouteService {
            table: self.table.clone(),
            inner,
        }
    }
}

/// The service made by [`RouteLayer`].
#[derive(Clone, Debug)]
pub struct RouteService<S> {
    table: Arc<RouteTable>,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn unspecified() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([0, 0, 0, 0], 0))
}

impl<S> tower::Service<Request<Body>> for RouteService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let table = self.table.clone();
        let (mut parts, body) = req.into_parts();
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
            })
            .unwrap_or_default();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let scheme = parts.uri.scheme_str().unwrap_or("http").to_string();
        let local = |r: Response<Body>| -> Self::Future { Box::pin(async move { Ok(r) }) };
        let matched = table.route(&RouteRequest {
            authority: &authority,
            path: &path,
            method: &parts.method,
            scheme: &scheme,
            headers: &parts.headers,
        });
        let Some(matched) = matched else {
            return local(local_reply::no_route());
        };
        let tctx = TemplateContext {
            downstream_remote: unspecified(),
            downstream_local: unspecified(),
            upstream_remote: None,
            protocol: "HTTP/1.1",
            hostname: "",
            request_headers: None,
        };
        let action = match &matched.route.action {
            RouteAction::DirectResponse(d) => {
                let mut r = Response::new(match &d.body {
                    Some(b) => crate::http::full(b.clone()),
                    None => crate::http::empty(),
                });
                *r.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
                let levels = router::mutation_levels(table.config(), &matched, None);
                mutate::apply_levels(r.headers_mut(), &levels, Side::Response, &tctx);
                return local(r);
            }
            RouteAction::Redirect(rd) => {
                return local(crate::http::hcm::redirect(
                    rd,
                    &matched.route.route_match.path,
                    &scheme,
                    &authority,
                    &path,
                ));
            }
            RouteAction::Route(a) => a,
        };
        let (cluster, weighted) = router::pick_cluster(action, &parts.headers);
        let Some(cluster) = cluster else {
            return local(local_reply::no_cluster(
                StatusCode::from_u16(action.cluster_not_found_response_code)
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            ));
        };
        if let Some(p) = router::rewrite_path(action, &matched, &path) {
            if let Ok(v) = HeaderValue::from_str(&path) {
                parts.headers.insert("x-envoy-original-path", v);
            }
            router::set_path(&mut parts, &p);
        }
        let host =
            weighted
                .and_then(|w| w.host_rewrite_literal.clone())
                .or(match &action.host_rewrite {
                    crate::config::route::HostRewrite::Literal(h) => Some(h.clone()),
                    _ => None,
                });
        if let Some(h) = host {
            router::set_authority(&mut parts, &h);
        }
        let levels = router::mutation_levels(table.config(), &matched, weighted);
        mutate::apply_levels(&mut parts.headers, &levels, Side::Request, &tctx);
        // Response mutations run when the response comes back: keep the levels that have any.
        let response_levels: Vec<HeaderMutations> = levels
            .iter()
            .filter(|l| !l.response_add.is_empty() || !l.response_remove.is_empty())
            .map(|l| (*l).clone())
            .collect();
        parts.extensions.insert(Upstream {
            cluster,
            route: matched.route.name.clone(),
        });
        // The inner service that was polled ready takes this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(Request::from_parts(parts, body));
        // A combinator rather than an async block: rustc cannot prove an async block over
        // `S::Future` `Send` for the `dyn Error` lifetime inside `Body`.
        Box::pin(futures::TryFutureExt::map_ok(fut, move |mut r| {
            let ctx = TemplateContext {
                downstream_remote: unspecified(),
                downstream_local: unspecified(),
                upstream_remote: None,
                protocol: "HTTP/1.1",
                hostname: "",
                request_headers: None,
            };
            let refs: Vec<&HeaderMutations> = response_levels.iter().collect();
            mutate::apply_levels(r.headers_mut(), &refs, Side::Response, &ctx);
            r
        }))
    }
}

/// Envoy's `max_requests` circuit breaker in front of any service (see the module docs). The
/// slot is held until the inner service's response (headers) arrives.
///
/// ```
/// use std::convert::Infallible;
///
/// use http::{Request, Response, StatusCode};
/// use mesh_proxy::cluster::resources::{ResourceManager, ResourceStats};
/// use mesh_proxy::config::cluster::Thresholds;
/// use mesh_proxy::http::{Body, full};
/// use mesh_proxy::layer::BreakerLayer;
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limits = Thresholds { max_requests: 1, ..Thresholds::default() };
/// let breakers = ResourceManager::new(&limits, ResourceStats::default());
/// // An upstream that never answers: the first request holds the only slot.
/// let upstream = service_fn(|_req: Request<Body>| std::future::pending::<Result<Response<Body>, Infallible>>());
/// let mut svc = BreakerLayer::new(breakers).layer(upstream);
///
/// let first = svc.ready().await.unwrap().call(Request::new(full("")));
/// let _held = tokio::spawn(first);
/// tokio::task::yield_now().await;
/// let r = svc.ready().await.unwrap().call(Request::new(full(""))).await.unwrap();
/// assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(r.headers()["x-envoy-overloaded"], "true");
/// # }
/// ```
#[derive(Clone)]
pub struct BreakerLayer {
    resources: ResourceManager,
}

impl std::fmt::Debug for BreakerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerLayer").finish_non_exhaustive()
    }
}

impl BreakerLayer {
    /// A breaker counting requests against `resources` (shared with whatever else uses it).
    pub fn new(resources: ResourceManager) -> BreakerLayer {
        BreakerLayer { resources }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            resources: self.resources.clone(),
            inner,
        }
    }
}

/// The service made by [`BreakerLayer`].
#[derive(Clone)]
pub struct Breaker<S> {
    resources: ResourceManager,
    inner: S,
}

impl<S> std::fmt::Debug for Breaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").finish_non_exhaustive()
    }
}

impl<S, B> tower::Service<Request<B>> for Breaker<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(permit) = self.resources.try_acquire_request() else {
            self.resources.stats().upstream_rq_pending_overflow.inc();
            return Box::pin(async {
                Ok(local_reply::upstream_failure("overflow", "UO", false, None))
            });
        };
        let fut = self.inner.call(req);
        Box::pin(futures::FutureExt::map(fut, move |r| {
            drop(permit);
            r
        }))
    }
}
