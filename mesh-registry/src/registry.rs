//! The adapter trait: what a registry is, and how it reports what it sees.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use thiserror::Error;

use crate::sink::RegistrySink;

/// Which kind of source a registry reads (istiod's provider ID).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Provider {
    /// A Kubernetes API server. Services of one host and namespace from several Kubernetes
    /// clusters are merged into one service (see [`crate::Aggregate`]).
    Kubernetes,
    /// ServiceEntries and WorkloadEntries (istiod's `External`).
    External,
    /// A Consul catalog.
    Consul,
    /// An adapter of your own, by name.
    Custom(String),
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Kubernetes => f.write_str("Kubernetes"),
            Provider::External => f.write_str("External"),
            Provider::Consul => f.write_str("Consul"),
            Provider::Custom(name) => f.write_str(name),
        }
    }
}

/// A registry's identity: its provider and the cluster it reads (istiod's shard key). Two
/// registries of one aggregate never share an ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryId {
    /// The kind of source.
    pub provider: Provider,
    /// The cluster (istiod's cluster ID, `Kubernetes` by default), datacenter or any name the
    /// adapter uses for where its data comes from.
    pub cluster: String,
}

impl RegistryId {
    /// An ID.
    pub fn new(provider: Provider, cluster: impl Into<String>) -> RegistryId {
        RegistryId {
            provider,
            cluster: cluster.into(),
        }
    }
}

impl fmt::Display for RegistryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.cluster)
    }
}

/// Why a registry stopped, or what it reports while it retries.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The adapter cannot work as configured; it stops (its last data stays until it is
    /// removed from the aggregate).
    #[error("{registry}: misconfigured: {message}")]
    Misconfigured {
        /// The registry.
        registry: RegistryId,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// Reading the source failed; adapters report this and retry with backoff.
    #[error("{registry}: {message}")]
    Source {
        /// The registry.
        registry: RegistryId,
        /// What failed.
        message: String,
    },
}

/// What [`Registry::run`] returns: a future that runs the adapter.
pub type RunFuture = Pin<Box<dyn Future<Output = Result<(), RegistryError>> + Send>>;

/// A service registry adapter.
///
/// An adapter watches its source and writes what it sees into the [`RegistrySink`] it is
/// given: services and endpoints, replaced per key, with resync brackets
/// ([`RegistrySink::begin_resync`], [`RegistrySink::end_resync`]) around every full read so
/// that whatever vanished while it was not looking is removed for it. It retries on its own
/// (reporting failures with [`RegistrySink::report_error`]) and returns only on a fatal
/// misconfiguration; it is stopped by dropping its future.
pub trait Registry: Send + 'static {
    /// Its identity, for merging, debug output and metrics.
    fn id(&self) -> RegistryId;

    /// Runs the adapter, writing into `sink`.
    fn run(self: Box<Self>, sink: RegistrySink) -> RunFuture;
}
