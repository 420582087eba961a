use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `meshNetworks`: the networks of a multi-network mesh and their gateways.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshNetworks {
    /// Networks by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
}

/// One network: how endpoints are assigned to it and how it is reached.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Network {
    /// Endpoint membership rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<NetworkEndpoints>,
    /// Gateways into the network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<NetworkGateway>,
}

/// `fromCidr` or `fromRegistry`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkEndpoints {
    /// Endpoints in this CIDR belong to the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<String>,
    /// Endpoints of this registry (cluster id) belong to the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_registry: Option<String>,
}

/// A network gateway: a registry service or an address, and a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkGateway {
    /// Service whose external address is the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_service_name: Option<String>,
    /// Fixed gateway address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Gateway port.
    pub port: u32,
    /// Gateway locality.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locality: String,
}
