//! Listeners (LDS): sidecar egress listeners (bound ports for `captureMode: NONE`, per-port and
//! virtual listeners under iptables capture), sidecar inbound chains, gateway listeners, and
//! API listeners for proxyless gRPC (reference §2.2, §3.1, §3.6).
//!
//! Imports run one way, from the entry points down to the shared builders:
//!
//! - [`sidecar`] and [`gateway`] are the entry points, one per proxy type;
//! - [`egress`] (bound Sidecar egress ports and the outbound HTTP connection manager),
//!   [`outbound`] (captured outbound ports), [`inbound`] (inbound chains and clusters) and
//!   [`virtual_listeners`] (`virtualOutbound`) build the sidecar's parts;
//! - [`tcp`] builds the TLS/TCP route chains sidecars and gateways share, [`policies`] the
//!   authentication and authorization filters inbound chains and gateways carry;
//! - [`filters`] holds the filter and chain builders everything uses, and [`context`] the one
//!   value the builders take ([`ListenerContext`]).

mod context;
mod egress;
pub(crate) mod filters;
mod gateway;
mod inbound;
mod outbound;
mod policies;
mod sidecar;
mod tcp;
mod virtual_listeners;

pub(crate) use context::ListenerContext;
pub(crate) use filters::references;
pub(crate) use gateway::{gateway_listeners, has_auto_passthrough};
pub(crate) use sidecar::sidecar_listeners;
