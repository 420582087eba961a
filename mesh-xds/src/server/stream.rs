//! What SotW and delta streams share: binding to a node, nonces, the connection registry, and
//! the loop that interleaves client requests with snapshot changes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tonic::codegen::http;
use tonic::transport::server::TcpConnectInfo;
#[cfg(feature = "tls")]
use tonic::transport::server::TlsConnectInfo;
use tonic::{Status, Streaming};

use crate::server::auth::{self, Authenticate, Caller};

use crate::resource::PUSH_ORDER;
use crate::server::SnapshotSource;
use crate::server::status::{Connections, PushEvent};
use crate::snapshot::Snapshot;

/// What a stream's caller presented, kept for the authentication of its first request.
pub(crate) struct Peer {
    metadata: http::HeaderMap,
    extensions: http::Extensions,
    certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
    tls: bool,
    remote_addr: Option<SocketAddr>,
    authenticator: Arc<dyn Authenticate>,
    identity_check: bool,
}

impl Peer {
    /// The caller of a request: its headers, and what tonic's transport put in the extensions
    /// (TLS client certificates, the remote address).
    pub(crate) fn of(
        parts: &http::request::Parts,
        authenticator: Arc<dyn Authenticate>,
        identity_check: bool,
    ) -> Peer {
        let tcp = parts.extensions.get::<TcpConnectInfo>();
        #[cfg(feature = "tls")]
        let (tls, tcp, certificates) = {
            let tls = parts.extensions.get::<TlsConnectInfo<TcpConnectInfo>>();
            (
                tls.is_some(),
                tls.map(TlsConnectInfo::get_ref).or(tcp),
                tls.and_then(TlsConnectInfo::peer_certs),
            )
        };
        #[cfg(not(feature = "tls"))]
        let (tls, certificates) = (false, None);
        Peer {
            metadata: parts.headers.clone(),
            extensions: parts.extensions.clone(),
            certificates,
            tls,
            remote_addr: tcp.and_then(TcpConnectInfo::remote_addr),
            authenticator,
            identity_check,
        }
    }

    /// Runs the hook and the identity check for `node`: the identity the node may act as
    /// (`None` when let in without one), or the status that ends the stream.
    fn admit(&self, node: &Node) -> Result<Option<String>, Status> {
        let caller = Caller {
            metadata: &self.metadata,
            extensions: &self.extensions,
            peer_certificates: self.certificates.as_deref().map(Vec::as_slice),
            tls: self.tls,
            remote_addr: self.remote_addr,
            node,
        };
        let from = self
            .remote_addr
            .map(|a| format!(" from {a}"))
            .unwrap_or_default();
        let refuse = |e: auth::AuthError| {
            let message = match e.code() {
                tonic::Code::Unauthenticated => {
                    format!("node {:?}{from} is not authenticated: {e}", node.id)
                }
                _ => format!("authorization failed{from}: {e}"),
            };
            tracing::warn!("ADS stream refused: {message}");
            Status::new(e.code(), message)
        };
        let identities = self.authenticator.authenticate(&caller).map_err(refuse)?;
        if identities.is_empty() {
            return Ok(None);
        }
        if !self.identity_check {
            return Ok(identities.into_iter().next());
        }
        auth::check_identity(node, &identities)
            .map(Some)
            .map_err(refuse)
    }
}

/// The protocol-independent state of one ADS stream.
pub(crate) struct StreamCore<S, R> {
    pub(crate) source: Arc<S>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) tx: mpsc::Sender<Result<R, Status>>,
    pub(crate) snapshots: Option<watch::Receiver<Arc<Snapshot>>>,
    /// Registry id; 0 until the stream is bound to a node.
    pub(crate) id: u64,
    pub(crate) node_id: String,
    counter: u64,
    /// Who is calling, when the server authenticates callers; checked on the first request.
    peer: Option<Peer>,
}

impl<S: SnapshotSource, R> StreamCore<S, R> {
    pub(crate) fn new(
        source: Arc<S>,
        connections: Arc<Connections>,
        tx: mpsc::Sender<Result<R, Status>>,
        peer: Option<Peer>,
    ) -> Self {
        StreamCore {
            source,
            connections,
            tx,
            snapshots: None,
            id: 0,
            node_id: String::new(),
            counter: 0,
            peer,
        }
    }

    /// Binds the stream to its node on the first request, once the caller is authenticated (when
    /// the server authenticates callers; see [`crate::server::auth`]). A first request without
    /// a node ends the stream with INVALID_ARGUMENT, a refused caller with UNAUTHENTICATED or
    /// PERMISSION_DENIED; returns whether the stream goes on.
    pub(crate) async fn attach(&mut self, node: Option<&Node>, protocol: &'static str) -> bool {
        if self.snapshots.is_some() {
            return true;
        }
        let Some(node) = node else {
            let _ = self
                .tx
                .send(Err(Status::invalid_argument(
                    "the first request must carry node",
                )))
                .await;
            return false;
        };
        if let Some(peer) = self.peer.take() {
            match peer.admit(node) {
                Ok(Some(id)) => tracing::debug!("ADS stream of {:?} as {id}", node.id),
                Ok(None) => {}
                Err(status) => {
                    let _ = self.tx.send(Err(status)).await;
                    return false;
                }
            }
        }
        self.node_id = node.id.clone();
        self.snapshots = Some(self.source.watch(node));
        self.id = self.connections.register(node, protocol);
        true
    }

    /// A nonce unique on this server: stream id and a counter.
    pub(crate) fn next_nonce(&mut self) -> String {
        self.counter += 1;
        format!("{}-{}", self.id, self.counter)
    }

    /// Records a response in the registry and metrics events, then sends it; false when the
    /// client is gone.
    pub(crate) async fn send(
        &self,
        type_url: &str,
        version: String,
        nonce: String,
        bytes: usize,
        resp: R,
    ) -> bool {
        self.connections.update(self.id, type_url, |s| {
            s.sent_version = version.clone();
            s.sent_nonce = nonce;
            s.pushes += 1;
        });
        self.connections.emit(PushEvent::Sent {
            type_url: type_url.to_string(),
            bytes,
            version,
        });
        self.tx.send(Ok(resp)).await.is_ok()
    }

    /// The current snapshot, once bound.
    pub(crate) fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.as_ref().map(|rx| rx.borrow().clone())
    }
}

/// One xDS protocol's handling of requests and pushes.
pub(crate) trait Protocol<S: SnapshotSource, R>: Send {
    type Request: Send + 'static;

    fn core(&mut self) -> &mut StreamCore<S, R>;

    /// Handles a client request; false ends the stream.
    fn on_request(&mut self, req: Self::Request) -> impl Future<Output = bool> + Send;

    /// Whether the client has asked for this type.
    fn requested(&self, type_url: &str) -> bool;

    /// Sends what changed for one type; false when the client is gone.
    fn push(&mut self, type_url: &str) -> impl Future<Output = bool> + Send;
}

/// Runs a stream until the client or the snapshot source goes away, pushing changes in
/// make-before-break order (CDS, EDS, LDS, RDS).
pub(crate) async fn drive<S, R, P>(mut p: P, mut requests: Streaming<P::Request>)
where
    S: SnapshotSource,
    R: Send,
    P: Protocol<S, R>,
{
    loop {
        let keep_going = tokio::select! {
            req = requests.message() => match req {
                Ok(Some(r)) => p.on_request(r).await,
                Ok(None) | Err(_) => false,
            },
            changed = changed(&mut p.core().snapshots) => {
                let mut ok = changed;
                // Secrets go with the clusters, before the listeners that name them.
                for type_url in [
                    PUSH_ORDER[0],
                    PUSH_ORDER[1],
                    crate::resource::SECRET,
                    PUSH_ORDER[2],
                    PUSH_ORDER[3],
                ] {
                    if ok && p.requested(type_url) {
                        ok = p.push(type_url).await;
                    }
                }
                ok
            }
        };
        if !keep_going {
            break;
        }
    }
    let core = p.core();
    if core.id != 0 {
        core.connections.remove(core.id);
    }
}

/// Waits for the next snapshot; `false` when the source is gone. Pends forever before the
/// stream has a node.
async fn changed(rx: &mut Option<watch::Receiver<Arc<Snapshot>>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
