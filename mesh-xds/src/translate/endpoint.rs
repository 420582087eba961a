//! Endpoint assignments (EDS): endpoints grouped by locality, with locality failover
//! priorities (reference §3.5).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use mesh_model::networking::destination_rule::TrafficPolicy;

use crate::pb::{pipe, socket, u32v};
use crate::proxy::{self, Proxy};
use crate::registry::{Service, ServicePort};
use crate::translate::PushContext;

fn lb_endpoint(address: &str, port: u32, weight: u32) -> LbEndpoint {
    let addr = if address.starts_with("unix://") {
        pipe(address)
    } else {
        socket(address, port)
    };
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(addr),
            ..Default::default()
        })),
        load_balancing_weight: Some(u32v(weight.max(1))),
        ..Default::default()
    }
}

/// An assignment with one endpoint (DNS clusters without endpoints resolve the host itself).
pub(crate) fn single(cluster: &str, host: &str, port: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality::default()),
            lb_endpoints: vec![lb_endpoint(host, port, 1)],
            load_balancing_weight: Some(u32v(1)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Keeps only the first endpoint (LOGICAL_DNS).
pub(crate) fn keep_first(cla: &mut ClusterLoadAssignment) {
    cla.endpoints.truncate(1);
    if let Some(first) = cla.endpoints.first_mut() {
        first.lb_endpoints.truncate(1);
        first.load_balancing_weight = Some(u32v(1));
    }
}

/// The assignment for one cluster: endpoints matching the subset labels, one group per
/// locality (sorted), each weighted by the sum of its endpoints' weights, with failover
/// priorities when locality failover applies.
pub(crate) fn assignment(
    ctx: &PushContext,
    proxy: &Proxy,
    svc: &Service,
    port: &ServicePort,
    cluster: &str,
    subset_labels: Option<&BTreeMap<String, String>>,
    policy: &TrafficPolicy,
) -> ClusterLoadAssignment {
    // (locality, endpoints, weight), sorted by locality; meshes have few localities, so a
    // short vector beats a map.
    let mut by_locality: Vec<(&str, Vec<LbEndpoint>, u32)> = Vec::new();
    for ep in &svc.endpoints {
        if let Some(labels) = subset_labels
            && !labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v))
        {
            continue;
        }
        if ep.address.is_empty() {
            continue;
        }
        let loc = ep.locality.as_str();
        let i = match by_locality.binary_search_by(|(l, _, _)| (*l).cmp(loc)) {
            Ok(i) => i,
            Err(i) => {
                by_locality.insert(i, (loc, Vec::new(), 0));
                i
            }
        };
        let group = &mut by_locality[i];
        group
            .1
            .push(lb_endpoint(&ep.address, ep.port_for(port), ep.weight));
        group.2 += ep.weight.max(1);
    }
    let failover = failover_enabled(ctx, policy) && !proxy.locality.region.is_empty();
    let failover_regions: Vec<(String, String)> = policy
        .load_balancer
        .as_ref()
        .and_then(|l| l.locality_lb_setting.as_ref())
        .or(ctx.mesh.locality_lb_setting.as_ref())
        .map(|l| {
            l.failover
                .iter()
                .map(|f| (f.from.clone(), f.to.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut groups: Vec<LocalityLbEndpoints> = by_locality
        .into_iter()
        .map(|(loc, eps, weight)| {
            let l = proxy::Locality::parse(loc);
            let priority = if failover {
                priority(&proxy.locality, &l, &failover_regions)
            } else {
                0
            };
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: l.region,
                    zone: l.zone,
                    sub_zone: l.sub_zone,
                }),
                load_balancing_weight: Some(u32v(weight)),
                lb_endpoints: eps,
                priority,
                ..Default::default()
            }
        })
        .collect();
    if failover {
        // Renumber priorities to a contiguous 0..N, as Envoy requires.
        let mut used: Vec<u32> = groups.iter().map(|g| g.priority).collect();
        used.sort_unstable();
        used.dedup();
        for g in &mut groups {
            g.priority =
                u32::try_from(used.iter().position(|p| *p == g.priority).unwrap_or(0)).unwrap_or(0);
        }
    }
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: groups,
        ..Default::default()
    }
}

fn failover_enabled(ctx: &PushContext, policy: &TrafficPolicy) -> bool {
    if policy.outlier_detection.is_none() {
        return false;
    }
    let setting = policy
        .load_balancer
        .as_ref()
        .and_then(|l| l.locality_lb_setting.as_ref())
        .or(ctx.mesh.locality_lb_setting.as_ref());
    setting.is_some_and(|s| s.enabled != Some(false) && s.distribute.is_empty())
}

/// P0: same region, zone and sub-zone; P1: region and zone; P2: region; P3: anything else;
/// P4: regions a failover rule excludes for the proxy's region.
fn priority(proxy: &proxy::Locality, ep: &proxy::Locality, failover: &[(String, String)]) -> u32 {
    if proxy.region == ep.region {
        if proxy.zone == ep.zone {
            if proxy.sub_zone == ep.sub_zone { 0 } else { 1 }
        } else {
            2
        }
    } else {
        let rules: Vec<&(String, String)> = failover
            .iter()
            .filter(|(from, _)| *from == proxy.region)
            .collect();
        if rules.is_empty() || rules.iter().any(|(_, to)| *to == ep.region) {
            3
        } else {
            4
        }
    }
}
