//! `ClusterLoadAssignment` (EDS resources and the `load_assignment` of STATIC and DNS
//! clusters).
//!
//! Accepted and ignored:
//! - `LocalityLbEndpoints.metadata`, `LbEndpoint.typed_filter_metadata` and endpoint
//!   `filter_metadata` other than `envoy.transport_socket_match` and `envoy.lb` (Istio's
//!   `istio` metadata): they feed stats and access logs only.
//! - `Endpoint.health_check_config`: this proxy runs no active health checks.
//! - `Endpoint.observability_name`: stats only.

#![allow(deprecated)] // Envoy's deprecated fields are named (and checked) like the others.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::google::protobuf as pbw;

use super::common::{AddressKind, address, at, at_least, at_most, required, string_fields, u32_or};
use super::{InvalidField, Within};
use crate::config::endpoint::{
    Endpoint, EndpointAddress, HealthStatus, LoadAssignment, Locality, LocalityEndpoints,
};

/// Converts an EDS `ClusterLoadAssignment` (endpoint addresses must be IPs or pipes).
pub fn load_assignment(c: ep::ClusterLoadAssignment) -> Result<LoadAssignment, InvalidField> {
    assignment(c, AddressKind::Ip)
}

/// A `ClusterLoadAssignment` whose endpoint addresses may be of `kind`.
pub(crate) fn assignment(
    c: ep::ClusterLoadAssignment,
    kind: AddressKind,
) -> Result<LoadAssignment, InvalidField> {
    let ep::ClusterLoadAssignment {
        cluster_name,
        endpoints,
        named_endpoints,
        policy,
    } = c;
    unsupported_if_set!(named_endpoints);
    let (overprovisioning_factor, weighted_priority_health) = match policy {
        None => (140, false),
        Some(p) => {
            let ep::cluster_load_assignment::Policy {
                drop_overloads,
                overprovisioning_factor,
                endpoint_stale_after,
                weighted_priority_health,
            } = p;
            let r: Result<_, InvalidField> = (|| {
                unsupported_if_set!(drop_overloads, endpoint_stale_after);
                let factor = at_least(
                    u32_or(overprovisioning_factor, 140),
                    1,
                    "overprovisioning_factor",
                )?;
                Ok((factor, weighted_priority_health))
            })();
            r.within("policy")?
        }
    };
    let localities = endpoints
        .into_iter()
        .enumerate()
        .map(|(i, l)| locality_endpoints(l, kind).within(&at("endpoints", i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LoadAssignment {
        cluster_name,
        localities,
        overprovisioning_factor,
        weighted_priority_health,
    })
}

/// A `Locality`.
pub(crate) fn locality(l: Option<core::Locality>) -> Locality {
    let core::Locality {
        region,
        zone,
        sub_zone,
    } = l.unwrap_or_default();
    Locality {
        region,
        zone,
        sub_zone,
    }
}

fn locality_endpoints(
    l: ep::LocalityLbEndpoints,
    kind: AddressKind,
) -> Result<LocalityEndpoints, InvalidField> {
    let ep::LocalityLbEndpoints {
        locality: loc,
        metadata: _,
        lb_endpoints,
        load_balancing_weight,
        priority,
        proximity,
        lb_config,
    } = l;
    unsupported_if_set!(proximity, lb_config);
    let priority = at_most(priority, 128, "priority")?;
    let weight = load_balancing_weight
        .map(|w| at_least(w.value, 1, "load_balancing_weight"))
        .transpose()?;
    let endpoints = lb_endpoints
        .into_iter()
        .enumerate()
        .map(|(i, e)| lb_endpoint(e, kind).within(&at("lb_endpoints", i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LocalityEndpoints {
        locality: locality(loc),
        endpoints,
        weight,
        priority,
    })
}

fn lb_endpoint(e: ep::LbEndpoint, kind: AddressKind) -> Result<Endpoint, InvalidField> {
    use ep::lb_endpoint::HostIdentifier;
    let ep::LbEndpoint {
        health_status,
        metadata,
        load_balancing_weight,
        host_identifier,
    } = e;
    let health = match core::HealthStatus::try_from(health_status) {
        Ok(core::HealthStatus::Unknown) => HealthStatus::Unknown,
        Ok(core::HealthStatus::Healthy) => HealthStatus::Healthy,
        Ok(core::HealthStatus::Unhealthy) => HealthStatus::Unhealthy,
        Ok(core::HealthStatus::Draining) => HealthStatus::Draining,
        Ok(core::HealthStatus::Timeout) => HealthStatus::Timeout,
        Ok(core::HealthStatus::Degraded) => HealthStatus::Degraded,
        Err(_) => return Err(super::common::bad_enum("health_status")),
    };
    let weight = at_least(u32_or(load_balancing_weight, 1), 1, "load_balancing_weight")?;
    let (transport_socket_match, hash_key) =
        endpoint_metadata(metadata.unwrap_or_default()).within("metadata")?;
    let endpoint = match host_identifier {
        Some(HostIdentifier::Endpoint(e)) => e,
        Some(HostIdentifier::EndpointName(_)) => {
            return Err(InvalidField::unsupported("endpoint_name"));
        }
        None => return Err(required("endpoint")),
    };
    let ep::Endpoint {
        address: addr,
        health_check_config: _,
        hostname,
        additional_addresses,
        observability_name: _,
    } = endpoint;
    let r: Result<EndpointAddress, InvalidField> = (|| {
        unsupported_if_set!(additional_addresses);
        let addr = addr.ok_or_else(|| required("address"))?;
        address(addr, kind).within("address")
    })();
    let address = r.within("endpoint")?;
    Ok(Endpoint {
        address,
        hostname,
        health,
        weight,
        transport_socket_match,
        hash_key,
    })
}

/// String fields of an endpoint's `envoy.transport_socket_match` metadata.
type SocketMatch = Vec<(String, String)>;

/// An endpoint's `envoy.transport_socket_match` string fields and `envoy.lb` `hash_key`.
fn endpoint_metadata(m: core::Metadata) -> Result<(SocketMatch, Option<String>), InvalidField> {
    use pbw::value::Kind;
    let core::Metadata {
        mut filter_metadata,
        typed_filter_metadata: _,
    } = m;
    let transport = match filter_metadata.remove("envoy.transport_socket_match") {
        None => Vec::new(),
        Some(s) => string_fields(s, "filter_metadata[\"envoy.transport_socket_match\"]")?,
    };
    let hash_key = filter_metadata
        .remove("envoy.lb")
        .and_then(|mut s| s.fields.remove("hash_key"))
        .and_then(|v| match v.kind {
            Some(Kind::StringValue(s)) => Some(s),
            _ => None,
        });
    Ok((transport, hash_key))
}
