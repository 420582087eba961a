//! `MeshConfig` and `MeshNetworks`: mesh-wide settings a control plane reads.
//!
//! Istio keeps these in the `istio` ConfigMap (`data.mesh`, `data.meshNetworks`). Fields the
//! file leaves out take Istio's defaults (`pkg/config/mesh/mesh.go`), so a partial file
//! overrides only what it names. Unknown fields are reported as warnings, since MeshConfig has
//! many fields a data-plane library never reads.

mod config;
mod networks;

pub use config::{
    DefaultProviders, LocalityLbSettingDefaults, MeshConfig, OutboundTrafficPolicyConfig,
    ProxyConfig, TcpKeepaliveConfig,
};
pub use networks::{MeshNetworks, Network, NetworkEndpoints, NetworkGateway};
