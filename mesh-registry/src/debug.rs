//! JSON for a control plane's debug endpoints: `/debug/registryz` (services),
//! `/debug/endpointz` (their endpoints) as istiod answers them, and the registries' own state.
//!
//! The shapes follow istiod's where it has them (`hostname`, `ports`, `Attributes`,
//! `Resolution`, `MeshExternal`), with names in place of istiod's enum numbers.

use mesh_model::service::{Service, ServiceRegistry};
use serde_json::{Value, json};

use crate::aggregate::RegistryStatus;

fn service_json(s: &Service) -> Value {
    json!({
        "hostname": s.hostname,
        "Attributes": {
            "Name": s.entry_name,
            "Namespace": s.namespace,
            "ExportTo": s.export_to,
        },
        "ports": s.ports.iter().map(|p| json!({
            "name": p.name,
            "port": p.number,
            "protocol": p.protocol.as_str(),
            "targetPort": p.target_port,
        })).collect::<Vec<_>>(),
        "defaultAddress": s.addresses.first().map_or("0.0.0.0", String::as_str),
        "addresses": s.addresses,
        "Resolution": s.resolution.as_str(),
        "MeshExternal": s.location == mesh_model::networking::service_entry::Location::MeshExternal,
        "ServiceAccounts": s.service_accounts(),
        "creationTime": s.created,
    })
}

/// `/debug/registryz`: every declaration of every service, in host order.
pub fn registryz(registry: &ServiceRegistry) -> Value {
    Value::Array(registry.declarations().map(|s| service_json(s)).collect())
}

/// `/debug/endpointz`: every service's endpoints.
pub fn endpointz(registry: &ServiceRegistry) -> Value {
    Value::Array(
        registry
            .declarations()
            .map(|s| {
                json!({
                    "hostname": s.hostname,
                    "namespace": s.namespace,
                    "endpoints": s.endpoints.iter().map(|e| json!({
                        "address": e.address,
                        "ports": e.ports,
                        "labels": e.labels,
                        "locality": e.locality,
                        "network": e.network,
                        "serviceAccount": e.service_account,
                        "tlsMode": e.tls_mode,
                        "weight": e.weight,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The registries of an aggregate: sync state, sizes, errors.
pub fn registries(status: &[RegistryStatus]) -> Value {
    Value::Array(
        status
            .iter()
            .map(|s| {
                json!({
                    "id": s.id.to_string(),
                    "provider": s.id.provider.to_string(),
                    "cluster": s.id.cluster,
                    "synced": s.synced,
                    "running": s.running,
                    "services": s.services,
                    "endpoints": s.endpoints,
                    "updates": s.updates,
                    "errors": s.errors,
                    "lastError": s.last_error,
                })
            })
            .collect(),
    )
}
