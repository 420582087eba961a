//! `ServiceEntry` (networking.istio.io): services added to the mesh's registry.

use serde::{Deserialize, Serialize};

use crate::macros::proto_enum;
use crate::meta::{Kind, Resource, Spec};
use crate::networking::workload::{WorkloadEntrySpec, WorkloadSelector};

/// A `ServiceEntry` object.
pub type ServiceEntry = Resource<ServiceEntrySpec>;

proto_enum! {
    /// Whether the service is part of the mesh.
    pub enum Location {
        /// Outside the mesh (no automatic mTLS).
        MeshExternal = (0, "MESH_EXTERNAL"),
        /// Inside the mesh.
        MeshInternal = (1, "MESH_INTERNAL"),
    }
}

proto_enum! {
    /// How endpoints are discovered.
    pub enum Resolution {
        /// Forward to the original destination address.
        None = (0, "NONE"),
        /// Static IP endpoints (EDS).
        Static = (1, "STATIC"),
        /// DNS, all addresses (STRICT_DNS).
        Dns = (2, "DNS"),
        /// DNS, first address (LOGICAL_DNS).
        DnsRoundRobin = (3, "DNS_ROUND_ROBIN"),
        /// Dynamic forward proxy.
        DynamicDns = (4, "DYNAMIC_DNS"),
    }
}

/// `ServiceEntry.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// Hostnames of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// MESH_EXTERNAL (default) or MESH_INTERNAL.
    #[serde(default)]
    pub location: Location,
    /// Endpoint discovery mode (default NONE).
    #[serde(default)]
    pub resolution: Resolution,
    /// Inline endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Select WorkloadEntries (and pods) as endpoints instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Visibility (`.`, `*`, `~` or namespace names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// SANs expected from the service's certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

impl Spec for ServiceEntrySpec {
    const KIND: Kind = Kind::ServiceEntry;
}

/// A ServiceEntry port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Port name (unique within the ServiceEntry).
    #[serde(default)]
    pub name: String,
    /// Port on the endpoints, when it differs from `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}
