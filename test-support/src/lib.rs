//! What the workspace's integration tests share (a dev-dependency of every crate whose tests
//! need it; never used from a library's own `#[cfg(test)]` unit tests):
//!
//! - [`control_plane`]: an in-process control plane ([`ControlPlane`]) served over ADS
//!   ([`serve`], [`serve_at`]), and Envoy nodes for it ([`node`]).
//! - [`proxy`]: real proxy processes (Envoy or mesh-sidecar, a [`ProxyKind`]) driven over ADS,
//!   with their admin API.
//! - [`consul`]: an in-process fake Consul server (catalog, health, blocking queries, ACLs,
//!   fault knobs).
//! - [`ext_authz`]: external authorization servers (HTTP and gRPC) for CUSTOM policies.
//! - [`upstream`]: upstream HTTP servers that answer with their own name, and an HTTP client.
//! - [`tls`]: TLS peers from the openssl CLI (self-signed certificates, `s_server`, `s_client`).
//! - [`identity`]: service-account tokens, CSRs, workload certificates, the CA API on loopback.
//! - [`netns`]: tests run inside a network namespace of their own.
//! - [`kube_api`]: a fake Kubernetes API server (list/watch/write over real HTTP, fault knobs).
//! - [`wait`]: waiting on conditions with deadlines, free ports, temporary directories.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: failing loudly is the point

pub mod consul;
pub mod control_plane;
pub mod ext_authz;
mod form;
pub mod identity;
pub mod kube_api;
pub mod netns;
pub mod proxy;
pub mod tls;
pub mod upstream;
pub mod wait;

pub use control_plane::{ControlPlane, Served, node, serve, serve_at, serve_source};
pub use proxy::{Api, ClientSide, Proxy, ProxyKind};
pub use wait::{TempDir, eventually, free_port, temp_dir};
