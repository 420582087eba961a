//! The agent's xDS proxy, as Istio's agent has one: Envoy opens its ADS stream to a local Unix
//! socket, and the agent forwards it to the control plane over the (TLS) channel it already
//! trusts. Envoy then needs neither the control plane's address nor its root.
//!
//! The proxy forwards `envoy.service.discovery.v3.AggregatedDiscoveryService` (state of the
//! world and delta) unchanged at the HTTP/2 level: requests, responses, trailers and flow
//! control pass through, so ACKs, NACKs and nonces are the control plane's business. When the
//! control plane is unreachable the stream fails with `UNAVAILABLE` and Envoy reconnects, as it
//! would to the control plane itself.
//!
//! [`XdsProxy::following`] takes the upstream channel from a `watch`, so that the agent can
//! replace it (one that trusts the new root after a root rotation, or presents the workload's
//! renewed certificate): each new stream goes to the channel current when it opens, and open
//! streams stay where they are.
//!
//! A control plane that authenticates its ADS callers (as istiod does on its TLS port) needs
//! credentials: Istio's agent dials it over mTLS with the workload certificate once it has one
//! (a channel with that identity, from [`crate::agent::AgentConfig::endpoint`]), and sends the
//! service-account token as `authorization: Bearer` otherwise ([`XdsProxy::with_token`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_identity::xds_proxy::XdsProxy;
//! let upstream = tonic::transport::Endpoint::from_static("http://127.0.0.1:15010").connect_lazy();
//! XdsProxy::new(upstream)
//!     .serve_unix(std::path::Path::new("/var/run/mesh/xds.sock"))
//!     .await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, http};
use tonic::server::NamedService;
use tonic::transport::Channel;
use tower_service::Service;

/// The gRPC service name the proxy forwards.
pub const ADS_SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// Forwards ADS streams to the control plane on `upstream`; add it to a tonic router, or use
/// [`XdsProxy::serve_unix`].
#[derive(Clone, Debug)]
pub struct XdsProxy {
    upstream: watch::Receiver<Channel>,
    token: Option<watch::Receiver<Option<PathBuf>>>,
}

impl XdsProxy {
    /// Forwarding to `upstream` (typically `Endpoint::connect_lazy`, so that the proxy is up
    /// before the control plane is).
    pub fn new(upstream: Channel) -> Self {
        // The sender goes away at once; the receiver keeps the channel.
        let (_, upstream) = watch::channel(upstream);
        XdsProxy {
            upstream,
            token: None,
        }
    }

    /// Forwarding each new stream to the channel `upstream` holds when the stream opens.
    pub fn following(upstream: watch::Receiver<Channel>) -> Self {
        XdsProxy {
            upstream,
            token: None,
        }
    }

    /// Each new stream carries `authorization: Bearer TOKEN`, TOKEN read (when the stream
    /// opens: Kubernetes rotates the file in place) from the file `token` holds at that moment;
    /// none when it holds `None` (the agent switches to `None` once its channel presents the
    /// workload certificate). A token Envoy sent itself is replaced. A file that cannot be
    /// read is logged and the stream goes without a token (the control plane then refuses it,
    /// and Envoy retries).
    #[must_use]
    pub fn with_token(mut self, token: watch::Receiver<Option<PathBuf>>) -> Self {
        self.token = Some(token);
        self
    }

    /// Serves the proxy on a Unix socket at `path` (replacing a stale socket, refusing to
    /// replace anything else) until the future is dropped.
    pub async fn serve_unix(self, path: &Path) -> std::io::Result<()> {
        let listener = crate::sds::bind_unix(path)?;
        tonic::transport::Server::builder()
            .add_service(self)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .map_err(std::io::Error::other)
    }
}

impl NamedService for XdsProxy {
    const NAME: &'static str = ADS_SERVICE;
}

impl Service<http::Request<Body>> for XdsProxy {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let mut upstream = self.upstream.borrow().clone();
        let token = self.token.as_ref().and_then(|t| t.borrow().clone());
        Box::pin(async move {
            if let Some(path) = token {
                match tokio::fs::read_to_string(&path).await {
                    Ok(t) => match http::HeaderValue::try_from(format!("Bearer {}", t.trim())) {
                        Ok(v) => {
                            req.headers_mut().insert(http::header::AUTHORIZATION, v);
                        }
                        Err(_) => tracing::warn!(
                            "xDS proxy: the token in {} is not a header value; sending none",
                            path.display()
                        ),
                    },
                    Err(e) => tracing::warn!(
                        "xDS proxy: reading the token {}: {e}; sending none",
                        path.display()
                    ),
                }
            }
            let unavailable = |e: &dyn std::fmt::Display| {
                tonic::Status::unavailable(format!("control plane: {e}")).into_http()
            };
            if let Err(e) = std::future::poll_fn(|cx| upstream.poll_ready(cx)).await {
                return Ok(unavailable(&e));
            }
            // The channel sets the control plane's scheme and authority; path, headers (`te`,
            // `content-type`, `grpc-timeout`) and the streaming body go through as they are.
            match upstream.call(req).await {
                Ok(resp) => Ok(resp),
                Err(e) => Ok(unavailable(&e)),
            }
        })
    }
}
