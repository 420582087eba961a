//! Errors of this crate.

use thiserror::Error;

/// Errors from the ADS server and snapshot cache.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The gRPC transport failed.
    #[cfg(feature = "server")]
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The listening socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
