//! Istio configuration → Envoy xDS v3, with Istio's semantics and names.
//!
//! The translator is pure: [`PushContext`] indexes a `mesh-model` store snapshot, and
//! [`translate()`] produces the clusters, endpoint assignments, listeners and route
//! configurations one [`Proxy`] should see as typed messages; [`translate_snapshot`] produces
//! the same resources encoded once into a shared [`Snapshot`], which is what the server sends.
//! The `cache` feature adds the snapshot caches ([`cache`]: `SnapshotCache`, and `ViewCache`,
//! which translates per proxy view and pushes on every change) without any gRPC; the `server`
//! feature (default, includes `cache`) adds the ADS server over tonic. Hand-written protobuf
//! (EDS, templated clusters, canonical routes, streamed responses) lives in one private
//! `encoding` module with named field tags, checked against prost byte for byte.
//!
//! ```
//! use mesh_model::{ConfigStore, MeshConfig, parse_str};
//! use mesh_xds::{Proxy, PushContext, translate};
//!
//! let store = ConfigStore::new();
//! store.apply_all(parse_str(include_str!("../tests/fixtures/basic.yaml"), "basic.yaml"));
//! let ctx = PushContext::new(MeshConfig::default(), store.snapshot());
//! let resources = translate(&ctx, &Proxy::default());
//! assert!(resources.consistent().is_ok());
//! ```

#![forbid(unsafe_code)]

#[cfg(feature = "cache")]
pub mod cache;
pub mod consistency;
pub mod credentials;
#[cfg(feature = "config-dump")]
pub mod dump;
mod encoding;
pub mod error;
pub mod jwks;
pub mod naming;
mod pb;
pub mod proxy;
pub mod registry;
pub mod resource;
mod security;
#[cfg(feature = "server")]
pub mod server;
pub mod snapshot;
pub mod translate;

pub use consistency::Inconsistency;
pub use error::Error;
pub use proxy::Proxy;
pub use snapshot::{Snapshot, translate_snapshot};
pub use translate::{PushContext, Resources, translate};
