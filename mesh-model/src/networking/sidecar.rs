//! `Sidecar` (networking.istio.io): the scope and listeners of a sidecar proxy.

use serde::{Deserialize, Serialize};

use crate::macros::proto_enum;
use crate::meta::{Kind, Resource, Spec};
use crate::networking::destination_rule::ConnectionPoolSettings;
use crate::networking::gateway::{Port, ServerTlsSettings};
use crate::networking::workload::WorkloadSelector;

/// A `Sidecar` object.
pub type Sidecar = Resource<SidecarSpec>;

/// `Sidecar.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Workloads this Sidecar applies to; unset = the whole namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and the hosts they import.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Connection pool for all inbound traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// What to do with traffic to unknown hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

impl Spec for SidecarSpec {
    const KIND: Kind = Kind::Sidecar;
}

proto_enum! {
    /// How traffic reaches a listener.
    pub enum CaptureMode {
        /// The environment's default capture.
        Default = (0, "DEFAULT"),
        /// iptables redirection.
        Iptables = (1, "IPTABLES"),
        /// No capture: the listener binds its own port.
        None = (2, "NONE"),
    }
}

/// An inbound listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioIngressListener {
    /// The port (required).
    #[serde(default)]
    pub port: SidecarPort,
    /// Bind address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Capture mode.
    #[serde(default, skip_serializing_if = "CaptureMode::is_default")]
    pub capture_mode: CaptureMode,
    /// Where to forward (`127.0.0.1:P`, `0.0.0.0:P`, `[::1]:P`, `[::]:P` or `unix://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// TLS termination (SIMPLE or MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool for this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioEgressListener {
    /// The port; unset = the catch-all listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// Bind address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Capture mode.
    #[serde(default, skip_serializing_if = "CaptureMode::is_default")]
    pub capture_mode: CaptureMode,
    /// Imported hosts, `ns/dnsName` (`*`, `.`, a namespace; `~` excludes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// A Sidecar listener port (same shape as a gateway port).
pub type SidecarPort = Port;

proto_enum! {
    /// Outbound traffic policy modes.
    pub enum OutboundTrafficPolicyMode {
        /// Only registered services (BlackHoleCluster otherwise).
        RegistryOnly = (0, "REGISTRY_ONLY"),
        /// Unknown hosts pass through (PassthroughCluster).
        AllowAny = (1, "ALLOW_ANY"),
    }
}

/// Outbound traffic policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// Mode.
    #[serde(default)]
    pub mode: OutboundTrafficPolicyMode,
    /// Send unknown traffic to this egress proxy (ALLOW_ANY only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<crate::networking::virtual_service::Destination>,
}
