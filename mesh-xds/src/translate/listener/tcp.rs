//! TLS and TCP routes (VirtualService `tls` and `tcp`) as filter chains and TCP proxies, for
//! sidecars and gateways.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use mesh_model::networking::service_entry::Resolution;
use mesh_model::networking::virtual_service::RouteDestination;

use super::filters::{TCP_PROXY, network_filter, server_names, tcp_proxy_to};
use crate::naming;
use crate::proxy::Proxy;
use crate::registry::Service;
use crate::translate::PushContext;
use crate::translate::route::cluster_for;

/// SNI filter chains for TCP/TLS `port` of `services` (their VirtualServices' TLS routes, then
/// the DYNAMIC_DNS hosts those do not claim; Envoy refuses two chains with one match) and the
/// filter of the first VirtualService TCP route that applies.
pub(crate) fn tcp_route_chains(
    ctx: &PushContext,
    proxy: &Proxy,
    services: &[&Service],
    port: u32,
) -> (Vec<FilterChain>, Option<Filter>) {
    let (mut chains, tcp) = sidecar_tcp_routes(ctx, proxy, services, port);
    let taken = server_names(&chains);
    chains.extend(
        dynamic_dns_tls_chains(services, port)
            .into_iter()
            .filter(|c| {
                c.filter_chain_match
                    .as_ref()
                    .is_none_or(|m| m.server_names.iter().all(|n| !taken.contains(n)))
            }),
    );
    (chains, tcp)
}

/// DYNAMIC_DNS services on a TLS port: a filter chain per wildcard host, matched by SNI, whose
/// SNI dynamic forward proxy resolves the SNI name (the same DNS cache as the clusters) and
/// connects to it on the service's port through the service's cluster.
fn dynamic_dns_tls_chains(services: &[&Service], port: u32) -> Vec<FilterChain> {
    use envoy_types::pb::envoy::extensions::filters::network::sni_dynamic_forward_proxy::v3::{
        FilterConfig, filter_config,
    };
    services
        .iter()
        .filter(|s| s.resolution == Resolution::DynamicDns)
        .filter_map(|s| {
            let p = s
                .port(port)
                .filter(|p| p.protocol == mesh_model::protocol::Protocol::Tls)?;
            let cluster = naming::outbound_cluster(port, "", &s.hostname);
            Some(FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    server_names: vec![s.hostname.clone()],
                    ..Default::default()
                }),
                filters: vec![
                    network_filter(
                        "envoy.filters.network.sni_dynamic_forward_proxy",
                        &FilterConfig {
                            dns_cache_config: Some(crate::pb::dfp_cache()),
                            port_specifier: Some(filter_config::PortSpecifier::PortValue(
                                p.target_port.unwrap_or(p.number),
                            )),
                            ..Default::default()
                        },
                    ),
                    tcp_proxy_to(&cluster, &cluster),
                ],
                ..Default::default()
            })
        })
        .collect()
}

pub(crate) fn weighted_tcp(
    ctx: &PushContext,
    stat: &str,
    route: &[RouteDestination],
    vs_ns: &str,
    port: u32,
) -> Filter {
    let live: Vec<_> = route
        .iter()
        .filter(|d| route.len() == 1 || d.weight.unwrap_or(0) > 0)
        .collect();
    if live.len() == 1 {
        let (cluster, _, _) = cluster_for(ctx, &live[0].destination, vs_ns, port);
        return tcp_proxy_to(stat, &cluster);
    }
    let clusters = live
        .iter()
        .map(|d| tcp_proxy::weighted_cluster::ClusterWeight {
            name: cluster_for(ctx, &d.destination, vs_ns, port).0,
            weight: u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0),
            ..Default::default()
        })
        .collect();
    network_filter(
        TCP_PROXY,
        &TcpProxy {
            stat_prefix: stat.into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
                tcp_proxy::WeightedCluster { clusters },
            )),
            ..Default::default()
        },
    )
}

/// One filter chain per TLS route of `vs` (matched on its SNI hosts), for the matches on `port`
/// that `applies` accepts.
pub(crate) fn sni_chains(
    ctx: &PushContext,
    vs: &mesh_model::VirtualService,
    ns: &str,
    port: u32,
    applies: impl Fn(&mesh_model::networking::virtual_service::TlsMatchAttributes) -> bool,
) -> Vec<FilterChain> {
    let stat = format!("{}.{}", vs.metadata.name, ns);
    vs.spec
        .tls
        .iter()
        .filter_map(|tls| {
            let snis: Vec<String> = tls
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port) && applies(m))
                .flat_map(|m| m.sni_hosts.iter().cloned())
                .collect();
            if snis.is_empty() || tls.route.is_empty() {
                return None;
            }
            Some(FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    server_names: snis,
                    ..Default::default()
                }),
                filters: vec![weighted_tcp(ctx, &stat, &tls.route, ns, port)],
                ..Default::default()
            })
        })
        .collect()
}

/// TLS and TCP routes of the mesh VirtualServices for the services on a sidecar's TCP port:
/// one filter chain per TLS route (matched on SNI), and the filter of the first TCP route that
/// applies. Matches on port and source labels are honoured; the first VirtualService per host
/// wins, as for HTTP.
fn sidecar_tcp_routes(
    ctx: &PushContext,
    proxy: &Proxy,
    services: &[&Service],
    port: u32,
) -> (Vec<FilterChain>, Option<Filter>) {
    let applies = |p: Option<u32>, labels: &BTreeMap<String, String>| {
        p.is_none_or(|p| p == port) && labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
    };
    let mut seen = BTreeSet::new();
    let mut chains = Vec::new();
    let mut tcp = None;
    for svc in services {
        let Some((vs, ns)) =
            crate::translate::scope::mesh_virtual_service(ctx, proxy, &svc.hostname)
        else {
            continue;
        };
        if !seen.insert((ns.clone(), vs.metadata.name.clone())) {
            continue;
        }
        chains.extend(sni_chains(ctx, vs, &ns, port, |m| {
            applies(m.port, &m.source_labels)
        }));
        if tcp.is_none() {
            tcp = vs
                .spec
                .tcp
                .iter()
                .find(|t| {
                    !t.route.is_empty()
                        && (t.matches.is_empty()
                            || t.matches.iter().any(|m| applies(m.port, &m.source_labels)))
                })
                .map(|t| {
                    let stat = format!("{}.{}", vs.metadata.name, ns);
                    weighted_tcp(ctx, &stat, &t.route, &ns, port)
                });
        }
    }
    (chains, tcp)
}
