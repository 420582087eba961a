//! The ADS server: `StreamAggregatedResources` (SotW) and `DeltaAggregatedResources` (delta),
//! shaped like go-control-plane — a snapshot source apart from the protocol.
//!
//! Each stream runs in its own task and talks to its client through a small bounded channel,
//! so a slow or dead client only ever blocks itself. Streams read snapshots from a
//! [`SnapshotSource`] (`tokio::sync::watch` per view; the caches are in [`crate::cache`]), and record what they sent, what was
//! ACKed and what was NACKed in [`Connections`], which debug endpoints and metrics read.
//!
//! With [`AdsServer::with_authenticator`] every stream's caller is authenticated on its first
//! request and checked against the node it claims to be, as istiod does on its TLS port
//! ([`auth`]); without it nothing is checked.

pub mod auth;
mod delta;
mod grpc;
mod sotw;
mod status;
mod stream;

use std::sync::Arc;

pub use crate::cache::{Debounce, PushSummary, SnapshotCache, SnapshotSource, ViewCache, view_key};
pub use grpc::AdsService;
pub use status::{ConnectionInfo, Connections, PushEvent, SyncStatus, TypeStatus};

/// Tuning for the ADS server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Responses buffered per stream before the stream's task waits for the client. Small on
    /// purpose: memory per stream stays bounded and a slow client slows only itself.
    pub response_buffer: usize,
    /// With an authenticator: refuse a node that claims a namespace (or service account) none
    /// of its caller's identities has ([`auth::check_identity`]). On by default, as istiod's
    /// `PILOT_ENABLE_XDS_IDENTITY_CHECK`.
    pub identity_check: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            response_buffer: 4,
            identity_check: true,
        }
    }
}

/// The ADS service. Wrap it with [`AdsServer::into_service`] and add it to a tonic router.
pub struct AdsServer<S> {
    source: Arc<S>,
    connections: Arc<Connections>,
    config: ServerConfig,
    authenticator: Option<Arc<dyn auth::Authenticate>>,
}

impl<S> std::fmt::Debug for AdsServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer")
            .field("config", &self.config)
            .field("authenticated", &self.authenticator.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: SnapshotSource> AdsServer<S> {
    /// A server reading snapshots from `source`.
    pub fn new(source: Arc<S>) -> Self {
        AdsServer {
            source,
            connections: Arc::new(Connections::default()),
            config: ServerConfig::default(),
            authenticator: None,
        }
    }

    /// Authenticates every stream's caller on its first request with `authenticator`, then
    /// checks its identities against the node (unless [`ServerConfig::identity_check`] is
    /// off); a refused stream ends with UNAUTHENTICATED or PERMISSION_DENIED. See [`auth`].
    /// Use it on TLS ports; plaintext development ports stay unauthenticated, as istiod's.
    #[must_use]
    pub fn with_authenticator(mut self, authenticator: impl auth::Authenticate) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Uses a shared connection registry (to read sync status elsewhere).
    #[must_use]
    pub fn with_connections(mut self, connections: Arc<Connections>) -> Self {
        self.connections = connections;
        self
    }

    /// Overrides the tuning.
    #[must_use]
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// The connection registry.
    pub fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }

    /// The gRPC service, for a tonic router (`Server::builder().add_service(..)`).
    pub fn into_service(self) -> AdsService<S> {
        AdsService {
            source: self.source,
            connections: self.connections,
            config: self.config,
            authenticator: self.authenticator,
        }
    }
}
