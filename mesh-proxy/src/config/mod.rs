//! The runtime model: plain, validated configuration the proxy runs on.
//!
//! Envoy's protos stop at [`crate::proto`], which converts each xDS resource into these types
//! (or rejects it with the field that cannot work). Nothing below that edge sees a prost type,
//! so the listeners, the HTTP connection manager and the clusters are written against data that
//! is already known to be valid: durations are [`std::time::Duration`]s, regexes are compiled,
//! header names are parsed, and optional Envoy fields carry Envoy's defaults.
//!
//! The types are grouped as Envoy groups its API: [`listener`] (listeners, filter chains and
//! their network filters), [`http`] (the HTTP connection manager and its HTTP filters),
//! [`route`] (route configurations), [`cluster`] and [`endpoint`], [`tls`] (transport
//! sockets), [`matcher`] (string, header and query matchers shared by all of them) and
//! [`bootstrap`].

pub mod bootstrap;
pub mod cluster;
pub mod endpoint;
pub mod http;
pub mod listener;
pub mod matcher;
pub mod route;
pub mod tls;

pub use bootstrap::Bootstrap;
pub use cluster::Cluster;
pub use endpoint::LoadAssignment;
pub use listener::Listener;
pub use route::RouteConfiguration;
