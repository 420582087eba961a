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
    let setting = policy
        .load_balancer
        .as_ref()
        .and_then(|l| l.locality_lb_setting.as_ref())
        .or(ctx.mesh.locality_lb_setting.as_ref())
        .filter(|s| s.enabled != Some(false));
    let failover = failover_enabled(ctx, policy) && !proxy.locality.region.is_empty();
    // failoverPriority: endpoints matching the proxy on more of the listed labels (in order)
    // come first; it replaces region failover when set.
    let label_priorities = setting
        .filter(|s| failover && !s.failover_priority.is_empty())
        .map(|s| s.failover_priority.as_slice());
    // (locality, label priority, endpoints, weight), sorted; meshes have few localities, so a
    // short vector beats a map.
    let mut groups_by: Vec<(&str, u32, Vec<LbEndpoint>, u32)> = Vec::new();
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
        let level = label_priorities.map_or(0, |keys| label_priority(proxy, ep, keys));
        let i = match groups_by.binary_search_by(|(l, p, _, _)| (*l, *p).cmp(&(loc, level))) {
            Ok(i) => i,
            Err(i) => {
                groups_by.insert(i, (loc, level, Vec::new(), 0));
                i
            }
        };
        let group = &mut groups_by[i];
        group
            .2
            .push(lb_endpoint(&ep.address, ep.port_for(port), ep.weight));
        group.3 += ep.weight.max(1);
    }
    let failover_regions: Vec<(String, String)> = setting
        .map(|l| {
            l.failover
                .iter()
                .map(|f| (f.from.clone(), f.to.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut groups: Vec<LocalityLbEndpoints> = groups_by
        .into_iter()
        .map(|(loc, level, eps, weight)| {
            let l = proxy::Locality::parse(loc);
            let priority = match (failover, label_priorities) {
                (true, Some(_)) => level,
                (true, None) => priority(&proxy.locality, &l, &failover_regions),
                (false, _) => 0,
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
    } else if let Some(rule) = setting.and_then(|s| {
        s.distribute
            .iter()
            .find(|d| locality_matches(&proxy.locality.label(), &d.from))
    }) {
        distribute(&mut groups, &rule.to);
    }
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: groups,
        ..Default::default()
    }
}

/// Whether a locality (`region/zone/subzone`) matches a pattern whose segments may be `*` (and
/// that may stop early: `us-east/*` and `us-east` match every zone of us-east).
fn locality_matches(locality: &str, pattern: &str) -> bool {
    let mut have = locality.split('/');
    for want in pattern.split('/') {
        let got = have.next().unwrap_or("");
        if want != "*" && want != got {
            return false;
        }
    }
    true
}

/// Istio's `distribute`: each destination pattern's weight is shared by the locality groups it
/// matches (in proportion to their own weights, rounded up); a group no pattern matches gets no
/// traffic and is dropped. Patterns are taken most specific first, each group counts once.
fn distribute(groups: &mut Vec<LocalityLbEndpoints>, to: &BTreeMap<String, u32>) {
    let mut patterns: Vec<(&String, &u32)> = to.iter().collect();
    patterns.sort_by_key(|(p, _)| {
        std::cmp::Reverse(p.matches('/').count() * 2 + usize::from(!p.contains('*')))
    });
    let mut assigned: Vec<Option<u32>> = vec![None; groups.len()];
    for (pattern, weight) in patterns {
        let matching: Vec<usize> = (0..groups.len())
            .filter(|i| assigned[*i].is_none())
            .filter(|i| {
                let label = groups[*i]
                    .locality
                    .as_ref()
                    .map(|l| proxy::Locality {
                        region: l.region.clone(),
                        zone: l.zone.clone(),
                        sub_zone: l.sub_zone.clone(),
                    })
                    .unwrap_or_default()
                    .label();
                locality_matches(&label, pattern)
            })
            .collect();
        let own = |i: usize| {
            groups[i]
                .load_balancing_weight
                .map_or(1, |w| w.value.max(1))
        };
        let total: u64 = matching.iter().map(|i| u64::from(own(*i))).sum();
        for i in matching {
            let share = (u64::from(own(i)) * u64::from(*weight)).div_ceil(total.max(1));
            assigned[i] = Some(u32::try_from(share).unwrap_or(u32::MAX));
        }
    }
    let mut i = 0;
    groups.retain(|_| {
        let keep = assigned[i].is_some_and(|w| w > 0);
        i += 1;
        keep
    });
    for (g, w) in groups
        .iter_mut()
        .zip(assigned.into_iter().flatten().filter(|w| *w > 0))
    {
        g.load_balancing_weight = Some(u32v(w));
    }
}

/// The failover priority of an endpoint by labels: 0 when it matches the proxy on every listed
/// label, 1 when on all but the last, ..., N when not even on the first. The topology labels
/// compare localities and networks.
fn label_priority(proxy: &Proxy, ep: &crate::registry::Endpoint, keys: &[String]) -> u32 {
    let ep_locality = proxy::Locality::parse(&ep.locality);
    let value =
        |k: &str, labels: &BTreeMap<String, String>, loc: &proxy::Locality, net: &str| match k {
            "topology.istio.io/network" => Some(net.to_string()),
            "topology.kubernetes.io/region" => Some(loc.region.clone()),
            "topology.kubernetes.io/zone" => Some(loc.zone.clone()),
            "topology.istio.io/subzone" => Some(loc.sub_zone.clone()),
            _ => labels.get(k).cloned(),
        };
    let matched = keys
        .iter()
        .take_while(|k| {
            let mine = value(k, &proxy.labels, &proxy.locality, &proxy.network);
            mine.is_some() && mine == value(k, &ep.labels, &ep_locality, &ep.network)
        })
        .count();
    u32::try_from(keys.len() - matched).unwrap_or(u32::MAX)
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
