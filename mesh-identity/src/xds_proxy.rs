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
//! replace it (one that trusts the new root after a root rotation, say): each new stream goes
//! to the channel current when it opens, and open streams stay where they are.
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
use std::path::Path;
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
}

impl XdsProxy {
    /// Forwarding to `upstream` (typically `Endpoint::connect_lazy`, so that the proxy is up
    /// before the control plane is).
    pub fn new(upstream: Channel) -> Self {
        // The sender goes away at once; the receiver keeps the channel.
        let (_, upstream) = watch::channel(upstream);
        XdsProxy { upstream }
    }

    /// Forwarding each new stream to the channel `upstream` holds when the stream opens.
    pub fn following(upstream: watch::Receiver<Channel>) -> Self {
        XdsProxy { upstream }
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

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let mut upstream = self.upstream.borrow().clone();
        Box::pin(async move {
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
