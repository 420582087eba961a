//! mesh-proxy: an xDS-driven data plane built from tower/hyper layers, with Envoy's semantics.
//!
//! (Crate docs are completed as the modules land.)

#![forbid(unsafe_code)]

#[cfg(feature = "sidecar")]
pub mod admin;
pub mod body;
pub mod classify;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod http;
pub mod listener;
pub mod proto;
pub mod retry;
pub mod server;
#[cfg(feature = "sidecar")]
pub mod sidecar;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod xds;
