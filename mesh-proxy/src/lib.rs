//! mesh-proxy: an xDS-driven data plane built from tower/hyper layers, with Envoy's semantics.
//!
//! It runs what the mesh's control plane (`mesh-xds`) emits — and Envoy v3 configuration in
//! general, where implemented — so that `mesh-sidecar` can take Envoy's place next to a
//! control plane with the same bootstrap, flags and admin answers.
//!
//! # Layout
//!
//! ```text
//!  xds (ADS client) ──► proto (Envoy protos → config, or a NACK naming the field)
//!                          │
//!                          ▼
//!  server (config manager: warming, ordering, rejections; Shared state for the workers)
//!        │                     │                          │
//!        ▼                     ▼                          ▼
//!  listener (sockets,     http (HCM: header rules,    cluster (hosts, lb, pool,
//!   original dst,          routes, fault, CORS,        resources = breakers,
//!   inspectors, chains)    router = retries,           outlier, DNS tasks)
//!        │                 timeouts, mirrors)
//!        └──► tcp (TCP proxy)
//!  admin (Envoy's admin API)   sidecar (a whole proxy from a bootstrap)   layer (standalone
//!  tower layers: routing, circuit breaking; retry::RetryLayer)
//!  secret (SDS: secrets over their own gRPC streams or ADS) ──► tls (rustls contexts that
//!   read the current secret at each handshake; verification, ssl stats, peer identity)
//! ```
//!
//! - [`config`] is the runtime model: plain validated types; nothing below [`proto`] sees a
//!   prost type.
//! - [`xds`] speaks ADS (state of the world and delta) and leaves meaning to [`server`].
//! - [`layer`] and [`retry`] are usable on their own in front of any tower service.
//!
//! # A proxy from a bootstrap
//!
//! ```
//! use mesh_proxy::sidecar::{Sidecar, SidecarOptions};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let bootstrap = r#"
//! admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
//! static_resources:
//!   listeners:
//!   - name: hello
//!     address: {socket_address: {address: 127.0.0.1, port_value: 0}}
//!     filter_chains:
//!     - filters:
//!       - name: envoy.filters.network.http_connection_manager
//!         typed_config:
//!           "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
//!           stat_prefix: hello
//!           http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
//!           route_config:
//!             virtual_hosts:
//!             - name: all
//!               domains: ["*"]
//!               routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: hi}}}]
//! "#;
//! let sidecar = Sidecar::start(SidecarOptions {
//!     config_yaml: Some(bootstrap.into()),
//!     concurrency: 1,
//!     ..Default::default()
//! })
//! .await
//! .unwrap();
//! let addr = sidecar.server().shared().listeners.bound_address("hello").unwrap();
//! let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
//! c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
//! let mut response = String::new();
//! c.read_to_string(&mut response).await.unwrap();
//! assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
//! assert!(response.ends_with("hi"));
//! # }
//! ```
//!
//! # Choices
//!
//! - **The xDS client is written here** on `envoy-types`' tonic client, as ztunnel's is,
//!   rather than on hyperium's `xds-client` (alpha): see [`xds`] for why.
//! - **Connection pools are written here** on hyper's connection API: hyper-util's pooled
//!   client has no connection limit, pending queue or per-request host choice, which Envoy's
//!   circuit breakers and load balancers need (see [`cluster::pool`]).
//! - **A small DNS client is written here** for DNS clusters and the dynamic forward proxy
//!   (A/AAAA over UDP to the bootstrap's resolvers), instead of a full resolver crate
//!   (see [`dns`]).
//! - **Load balancing is written here** to reproduce Envoy bit for bit (ring hash and maglev
//!   pick the same host as Envoy for a hash); tower's p2c balances over *ready* services and
//!   has no weights or priorities (see [`cluster::lb`]).
//!
//! # Features
//!
//! - `sidecar` (default): Envoy bootstraps from YAML/JSON, the admin server and [`sidecar`].
//!   It uses Envoy's descriptor set from `mesh-xds` for the proto3 JSON mapping.

#![forbid(unsafe_code)]

#[cfg(feature = "sidecar")]
pub mod admin;
pub mod body;
pub mod classify;
pub mod cluster;
pub mod config;
#[cfg(feature = "sidecar")]
pub mod descriptors;
pub mod dns;
pub mod http;
pub mod layer;
pub mod listener;
pub mod proto;
pub mod retry;
pub mod secret;
pub mod server;
#[cfg(feature = "sidecar")]
pub mod sidecar;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod xds;
