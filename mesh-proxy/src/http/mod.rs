//! The HTTP connection manager and the router, as tower services.
//!
//! A downstream connection is served by hyper (HTTP/1.1, h2c and h2 by ALPN, as `codec_type:
//! AUTO`). Each request goes through, in Envoy's order: the HCM's header rules ([`headers`]:
//! `x-request-id`, `x-forwarded-*`, internal `x-envoy-*` headers removed from external
//! requests, path normalisation), route selection ([`route_table`]), the HTTP filters (fault,
//! CORS, dynamic forward proxy) and the router ([`router`]): cluster choice, rewrites, header
//! mutations ([`mutate`]), timeouts, retries and mirrors, then the cluster's load balancer and
//! connection pool. Replies the proxy makes itself are Envoy's ([`local_reply`]).

pub mod codec_error;
pub mod cors;
pub mod fault;
pub mod hcm;
pub mod headers;
pub mod local_reply;
pub mod mutate;
pub mod route_table;
pub mod router;

pub use crate::body::{Body, BoxError, boxed, empty, full};
