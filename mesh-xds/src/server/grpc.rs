//! The `AggregatedDiscoveryService` as a tower service for tonic's router: requests are decoded
//! by tonic, responses are pre-framed bytes (see `wire`) streamed as HTTP/2 data frames, and
//! the stream ends with gRPC trailers.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::codegen::http;
use tonic::server::NamedService;

use crate::encoding::response::Response;
use crate::server::auth::Authenticate;
use crate::server::status::Connections;
use crate::server::stream::Peer;
use crate::server::{ServerConfig, SnapshotSource, delta, sotw};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Largest request accepted (Envoy's requests are small; a NACK carries an error message).
const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// What a stream task sends to its response body: a response, or the status that ends the
/// stream. A task that just stops ends it with OK.
pub(crate) type Outbound = Result<Response, Status>;

/// The ADS gRPC service; add it to a tonic router (`Server::builder().add_service(..)`).
/// Built by [`AdsServer::into_service`](crate::server::AdsServer::into_service).
pub struct AdsService<S> {
    pub(crate) source: Arc<S>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) config: ServerConfig,
    pub(crate) authenticator: Option<Arc<dyn Authenticate>>,
}

impl<S> std::fmt::Debug for AdsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsService")
            .field("config", &self.config)
            .field("authenticated", &self.authenticator.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> Clone for AdsService<S> {
    fn clone(&self) -> Self {
        AdsService {
            source: self.source.clone(),
            connections: self.connections.clone(),
            config: self.config.clone(),
            authenticator: self.authenticator.clone(),
        }
    }
}

impl<S> NamedService for AdsService<S> {
    const NAME: &'static str = SERVICE;
}

impl<S: SnapshotSource> tower_service::Service<http::Request<Body>> for AdsService<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (tx, rx) = mpsc::channel(self.config.response_buffer.max(1));
        let path = req.uri().path().to_string();
        let (parts, body) = req.into_parts();
        let peer = self
            .authenticator
            .as_ref()
            .map(|a| Peer::of(&parts, a.clone(), self.config.identity_check));
        match path.as_str() {
            SOTW => {
                let stream =
                    sotw::SotwStream::new(self.source.clone(), self.connections.clone(), tx, peer);
                tokio::spawn(stream.run(requests(body)));
            }
            DELTA => {
                let stream = delta::DeltaStream::new(
                    self.source.clone(),
                    self.connections.clone(),
                    tx,
                    peer,
                );
                tokio::spawn(stream.run(requests(body)));
            }
            other => {
                return std::future::ready(Ok(Status::unimplemented(format!(
                    "unknown method {other}"
                ))
                .into_http()));
            }
        }
        let mut resp = http::Response::new(Body::new(ResponseBody {
            rx,
            current: None,
            done: false,
        }));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        std::future::ready(Ok(resp))
    }
}

/// The request messages of a stream, decoded by tonic.
fn requests<M: prost::Message + Default + Send + 'static>(body: Body) -> Streaming<M> {
    let decoder = tonic_prost::ProstCodec::<M, M>::default().decoder();
    Streaming::new_request(decoder, body, None, Some(MAX_REQUEST))
}

/// The response body: each response's chunks as data frames, then trailers. Chunks are made
/// only when HTTP/2 asks for more data, so a slow client holds back its own stream only.
struct ResponseBody {
    rx: mpsc::Receiver<Outbound>,
    current: Option<Response>,
    done: bool,
}

fn trailers(status: Status) -> http::HeaderMap {
    let mut headers = status.into_http::<()>().into_parts().0.headers;
    headers.remove(http::header::CONTENT_TYPE);
    headers
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(chunk) = self.current.as_mut().and_then(Response::next_chunk) {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            self.current = None;
            let end = match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(response))) => {
                    self.current = Some(response);
                    continue;
                }
                Poll::Ready(Some(Err(status))) => status,
                Poll::Ready(None) => Status::ok(""),
            };
            self.done = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers(end)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
