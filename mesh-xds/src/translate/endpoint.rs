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

/// Whether an endpoint is reached over Istio mTLS (reference: security §2.4): it must carry
/// `tlsMode: istio`; then a DestinationRule TLS mode decides (only ISTIO_MUTUAL), else the
/// endpoint's own PeerAuthentication for its port must not DISABLE mTLS.
fn endpoint_mtls(
    ctx: &PushContext,
    svc: &Service,
    ep: &crate::registry::Endpoint,
    target_port: u32,
    policy: &TrafficPolicy,
) -> bool {
    use mesh_model::networking::destination_rule::ClientTlsMode;
    if !ep.accepts_mtls() {
        return false;
    }
    match &policy.tls {
        Some(tls) => tls.mode == ClientTlsMode::IstioMutual,
        None => {
            ctx.peer_authentications
                .mode_for(&svc.namespace, &ep.labels, target_port)
                != crate::security::peer::Mode::Disable
        }
    }
}

/// The endpoint metadata that selects the `tlsMode-istio` transport socket.
pub(crate) fn mtls_metadata() -> envoy_types::pb::envoy::config::core::v3::Metadata {
    use envoy_types::pb::google::protobuf::{Struct, Value, value};
    let fields = [(
        "tlsMode".to_string(),
        Value {
            kind: Some(value::Kind::StringValue("istio".into())),
        },
    )];
    envoy_types::pb::envoy::config::core::v3::Metadata {
        filter_metadata: [(
            "envoy.transport_socket_match".to_string(),
            Struct {
                fields: fields.into_iter().collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

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
pub(crate) fn assignment<'a>(
    ctx: &'a PushContext,
    proxy: &Proxy,
    svc: &'a Service,
    port: &ServicePort,
    cluster: &'a str,
    subset_labels: Option<&BTreeMap<String, String>>,
    policy: &TrafficPolicy,
) -> Assignment<'a> {
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
    let mut groups_by: Vec<(&str, u32, Vec<Ep<'a>>, u32)> = Vec::new();
    let multi_network = ctx.multi_network();
    // Split horizon (reference: security §6.4): every weight is scaled by the least common
    // multiple of the gateway counts of the remote networks involved, so that a remote
    // endpoint's weight splits evenly over its network's gateways.
    let scale = if multi_network {
        svc.endpoints
            .iter()
            .filter_map(|ep| remote_gateways(ctx, proxy, ep))
            .map(|g| u32::try_from(g.len()).unwrap_or(1).max(1))
            .fold(1u32, lcm)
    } else {
        1
    };
    for ep in &svc.endpoints {
        let remote = if multi_network {
            remote_gateways(ctx, proxy, ep)
        } else {
            None
        };
        if let Some(labels) = subset_labels
            && !labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v))
        {
            continue;
        }
        if ep.address.is_empty() {
            continue;
        }
        let target = ep.port_for(port);
        let mtls = endpoint_mtls(ctx, svc, ep, target, policy);
        let weight = ep.weight.max(1).saturating_mul(scale);
        let eps: Vec<Ep<'a>> = match remote {
            None => vec![Ep {
                address: &ep.address,
                port: target,
                weight,
                mtls,
            }],
            // Behind another network's gateway: reachable only over mTLS through it (the
            // gateway routes by the SNI to the endpoint), so plaintext endpoints are dropped.
            Some(_) if !mtls => continue,
            Some(gateways) => {
                let share = weight / u32::try_from(gateways.len()).unwrap_or(1).max(1);
                gateways
                    .iter()
                    .filter_map(|g| {
                        Some(Ep {
                            address: g.address.as_deref()?,
                            port: g.port,
                            weight: share.max(1),
                            mtls: true,
                        })
                    })
                    .collect()
            }
        };
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
        for e in eps {
            group.3 += e.weight;
            // A gateway standing in for several endpoints appears once, with their weights.
            match group.2.iter_mut().find(|x| {
                x.mtls && e.mtls && x.address == e.address && x.port == e.port && remote.is_some()
            }) {
                Some(x) => x.weight += e.weight,
                None => group.2.push(e),
            }
        }
    }
    let failover_regions: Vec<(String, String)> = setting
        .map(|l| {
            l.failover
                .iter()
                .map(|f| (f.from.clone(), f.to.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut groups: Vec<Group<'a>> = groups_by
        .into_iter()
        .map(|(loc, level, endpoints, weight)| {
            let mut parts = loc.splitn(3, '/');
            let (region, zone, sub_zone) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let priority = match (failover, label_priorities) {
                (true, Some(_)) => level,
                (true, None) => priority(
                    &proxy.locality,
                    &proxy::Locality::parse(loc),
                    &failover_regions,
                ),
                (false, _) => 0,
            };
            Group {
                region,
                zone,
                sub_zone,
                weight,
                priority,
                endpoints,
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
    Assignment { cluster, groups }
}

/// The gateways through which the proxy reaches `ep`, when `ep` is on another network that
/// has gateways (with an address); `None` when the proxy reaches it directly (same network,
/// or a network without gateways; see [`PushContext::with_networks`]).
fn remote_gateways<'c>(
    ctx: &'c PushContext,
    proxy: &Proxy,
    ep: &crate::registry::Endpoint,
) -> Option<&'c [mesh_model::mesh::NetworkGateway]> {
    let network = if ep.network.is_empty() {
        network_by_cidr(ctx, &ep.address).unwrap_or_default()
    } else {
        ep.network.as_str()
    };
    if network == proxy.network {
        return None;
    }
    let n = ctx.networks.networks.get(network)?;
    (!n.gateways.is_empty()).then_some(n.gateways.as_slice())
}

fn lcm(a: u32, b: u32) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    (a / gcd(a, b).max(1)).saturating_mul(b)
}

/// The first network whose `fromCidr` contains `address`.
fn network_by_cidr<'c>(ctx: &'c PushContext, address: &str) -> Option<&'c str> {
    let ip: std::net::IpAddr = address.parse().ok()?;
    ctx.networks.networks.iter().find_map(|(name, n)| {
        n.endpoints
            .iter()
            .filter_map(|e| e.from_cidr.as_deref())
            .any(|cidr| cidr_contains(cidr, ip))
            .then_some(name.as_str())
    })
}

/// Whether `cidr` (`addr/len`, or a bare address) contains `ip`.
fn cidr_contains(cidr: &str, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let (base, len) = cidr.split_once('/').unwrap_or((cidr, ""));
    let Ok(base) = base.parse::<IpAddr>() else {
        return false;
    };
    let bits = |v: IpAddr| -> (u128, u32) {
        match v {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    };
    let ((b, width), (i, iwidth)) = (bits(base), bits(ip));
    if width != iwidth {
        return false;
    }
    let len: u32 = if len.is_empty() {
        width
    } else {
        match len.parse() {
            Ok(l) if l <= width => l,
            _ => return false,
        }
    };
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    b & mask == i & mask
}

/// One endpoint of an [`Assignment`]: an address (`unix://` paths become pipes), a port and a
/// weight (at least 1).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ep<'a> {
    pub(crate) address: &'a str,
    pub(crate) port: u32,
    pub(crate) weight: u32,
    /// Whether clients reach it over Istio mTLS (EDS metadata `tlsMode: istio`, which the
    /// cluster's `tlsMode-istio` transport socket match selects).
    pub(crate) mtls: bool,
}

impl<'a> Ep<'a> {
    /// Whether the address is a Unix socket (`unix://PATH`).
    pub(crate) fn is_pipe(&self) -> bool {
        is_pipe(self.address)
    }

    /// The socket path of a `unix://` address.
    pub(crate) fn pipe_path(&self) -> &'a str {
        self.address.trim_start_matches("unix://")
    }
}

/// The endpoints of one locality (and priority).
#[derive(Clone, Debug)]
pub(crate) struct Group<'a> {
    pub(crate) region: &'a str,
    pub(crate) zone: &'a str,
    pub(crate) sub_zone: &'a str,
    pub(crate) weight: u32,
    pub(crate) priority: u32,
    pub(crate) endpoints: Vec<Ep<'a>>,
}

impl Group<'_> {
    /// `region/zone/subzone` without trailing empty parts, as [`proxy::Locality::label`].
    fn label(&self) -> String {
        proxy::Locality {
            region: self.region.to_string(),
            zone: self.zone.to_string(),
            sub_zone: self.sub_zone.to_string(),
        }
        .label()
    }
}

/// An endpoint assignment before it becomes a message, borrowing from the registry: the typed
/// [`ClusterLoadAssignment`] and the encoder's bytes are both made from it, so the encoder never
/// builds the message.
#[derive(Clone, Debug)]
pub(crate) struct Assignment<'a> {
    pub(crate) cluster: &'a str,
    pub(crate) groups: Vec<Group<'a>>,
}

fn is_pipe(address: &str) -> bool {
    address.starts_with("unix://")
}

impl Assignment<'_> {
    /// Keeps only the endpoints reached over Istio mTLS, with each locality's weight
    /// recomputed and emptied localities dropped (istiod's `EndpointsWithMTLSFilter`, for the
    /// SNI-DNAT clusters of AUTO_PASSTHROUGH gateways).
    pub(crate) fn retain_mtls(&mut self) {
        for g in &mut self.groups {
            g.endpoints.retain(|e| e.mtls);
            g.weight = g.endpoints.iter().map(|e| e.weight).sum();
        }
        self.groups.retain(|g| !g.endpoints.is_empty());
    }

    /// The message.
    pub(crate) fn to_message(&self) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: self.cluster.to_string(),
            endpoints: self
                .groups
                .iter()
                .map(|g| LocalityLbEndpoints {
                    locality: Some(Locality {
                        region: g.region.to_string(),
                        zone: g.zone.to_string(),
                        sub_zone: g.sub_zone.to_string(),
                    }),
                    load_balancing_weight: Some(u32v(g.weight)),
                    lb_endpoints: g
                        .endpoints
                        .iter()
                        .map(|e| {
                            let mut lb = lb_endpoint(e.address, e.port, e.weight);
                            if e.mtls {
                                lb.metadata = Some(mtls_metadata());
                            }
                            lb
                        })
                        .collect(),
                    priority: g.priority,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
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
fn distribute(groups: &mut Vec<Group<'_>>, to: &BTreeMap<String, u32>) {
    let mut patterns: Vec<(&String, &u32)> = to.iter().collect();
    patterns.sort_by_key(|(p, _)| {
        std::cmp::Reverse(p.matches('/').count() * 2 + usize::from(!p.contains('*')))
    });
    let mut assigned: Vec<Option<u32>> = vec![None; groups.len()];
    for (pattern, weight) in patterns {
        let matching: Vec<usize> = (0..groups.len())
            .filter(|i| assigned[*i].is_none())
            .filter(|i| locality_matches(&groups[*i].label(), pattern))
            .collect();
        let own = |i: usize| groups[i].weight.max(1);
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
        g.weight = w;
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

#[cfg(test)]
mod encoding_tests {
    use super::*;
    use prost::Message;

    #[test]
    fn cidrs_contain_what_they_should() {
        let ip = |s: &str| s.parse().unwrap();
        assert!(cidr_contains("10.0.0.0/8", ip("10.1.2.3")));
        assert!(!cidr_contains("10.0.0.0/8", ip("11.0.0.1")));
        assert!(cidr_contains("10.1.2.3", ip("10.1.2.3")));
        assert!(!cidr_contains("10.1.2.3", ip("10.1.2.4")));
        assert!(cidr_contains("0.0.0.0/0", ip("192.168.0.1")));
        assert!(cidr_contains("fd00::/8", ip("fd12::1")));
        assert!(!cidr_contains("fd00::/8", ip("10.0.0.1")));
        assert!(!cidr_contains("10.0.0.0/33", ip("10.0.0.1")));
        assert!(!cidr_contains("garbage", ip("10.0.0.1")));
    }

    /// The hand-written EDS encoding is prost's, for the shapes translation produces: sockets
    /// and pipes, empty and partial localities, priorities, port 0, large weights, no endpoints.
    #[test]
    fn assignment_encoding_is_prosts() {
        // Every other endpoint carries the mTLS metadata.
        let ep = |address: &'static str, port: u32, weight: u32| Ep {
            address,
            port,
            weight,
            mtls: weight % 2 == 1,
        };
        let long = "a-very-long-address-name-that-needs-a-two-byte-length-prefix-when-it-goes-past-127-bytes.example.com.svc.cluster.local.and-more-padding";
        let cases = [
            Assignment {
                cluster: "outbound|80||reviews.shop.svc.cluster.local",
                groups: vec![],
            },
            Assignment {
                cluster: "",
                groups: vec![Group {
                    region: "",
                    zone: "",
                    sub_zone: "",
                    weight: 1,
                    priority: 0,
                    endpoints: vec![ep("10.0.0.1", 0, 1)],
                }],
            },
            Assignment {
                cluster: "outbound|9090|v1|x",
                groups: vec![
                    Group {
                        region: "us-east",
                        zone: "a",
                        sub_zone: "",
                        weight: 300_000,
                        priority: 0,
                        endpoints: vec![
                            ep("10.0.0.1", 8080, 1),
                            ep("unix:///var/run/sock", 0, 7),
                            ep(long, 65535, 100_000),
                        ],
                    },
                    Group {
                        region: "eu",
                        zone: "",
                        sub_zone: "s",
                        weight: 2,
                        priority: 3,
                        endpoints: vec![],
                    },
                ],
            },
        ];
        for a in cases {
            let mut buf = Vec::new();
            a.encode(&mut buf);
            let want = a.to_message().encode_to_vec();
            assert_eq!(buf, want, "{a:?}");
            assert_eq!(a.encoded_len(), want.len());
        }
    }
}
