//! Outbound listeners under iptables capture (reference §3.1): `virtualOutbound` (15001) hands
//! each redirected connection to the listener whose address is the connection's original
//! destination, most specific first. Every listener here has `bind_to_port: false`.
//!
//! - A TCP or TLS service port with a VIP gets its own `VIP_PORT` listener: the service's
//!   VirtualService TLS routes by SNI, then its first TCP route, else its cluster.
//! - Everything else on the port shares `0.0.0.0_PORT`: HTTP services through the HTTP
//!   connection manager over route config `"PORT"`; services whose addresses are CIDRs by
//!   destination prefix; TLS services without a VIP by SNI (their host, or their
//!   VirtualService's TLS routes); and, when the port has no HTTP service, the first TCP
//!   service without a VIP (as istiod does, it takes the port's other traffic). What is left
//!   goes to `PassthroughCluster` or `BlackHoleCluster` per the outbound traffic policy.
//! - A port without a protocol is sniffed, as istiod does: the HTTP inspector sends plaintext
//!   HTTP/1.1 and h2c to an HTTP connection manager (route config `HOST:PORT` on a VIP
//!   listener, so only the services at that VIP are reachable; `"PORT"` on the wildcard one)
//!   and everything else to the TCP chains. Services matched by CIDR are TCP only.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener,
};
use mesh_model::networking::service_entry::Resolution;

use super::context::ListenerContext;
use super::egress::sidecar_hcm;
use super::filters::{
    inspectors_for, passthrough_or_blackhole, push_default_chain, server_names, sniffed_http_chain,
    tcp_proxy_to,
};
use super::tcp::tcp_route_chains;
use crate::naming;
use crate::pb::{boolv, socket, u32v};
use crate::registry::Service;
use crate::translate::Sink;

/// Where a service's traffic on a captured port is told apart.
enum Address {
    Vip(IpAddr),
    Cidr(IpAddr, u32),
}

/// The service's VIPs and CIDRs (`0.0.0.0` and unparsable entries are no address).
fn addresses(s: &Service) -> Vec<Address> {
    s.addresses
        .iter()
        .filter_map(|a| match a.split_once('/') {
            Some((ip, len)) => {
                let ip: IpAddr = ip.parse().ok()?;
                let len: u32 = len.parse().ok()?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                (len <= max).then_some(Address::Cidr(ip, len))
            }
            None => {
                let ip: IpAddr = a.parse().ok()?;
                (!ip.is_unspecified()).then_some(Address::Vip(ip))
            }
        })
        .collect()
}

fn is_tls(s: &Service, port: u32) -> bool {
    s.port(port).is_some_and(|p| p.protocol.is_tls())
}

fn is_sniffed(s: &Service, port: u32) -> bool {
    s.port(port).is_some_and(|p| p.is_sniffed())
}

fn cluster_filter(s: &Service, port: u32) -> Filter {
    let cluster = naming::outbound_cluster(port, "", &s.hostname);
    tcp_proxy_to(&cluster, &cluster)
}

fn captured(name: String, address: &str, port: u32, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name,
        address: Some(socket(address, port)),
        listener_filters: inspectors_for(&chains),
        filter_chains: chains,
        bind_to_port: Some(boolv(false)),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// The listeners for one captured outbound port: `services` are the imported services with
/// that port, in scope order; `imports` is the egress listener's import rule.
pub(crate) fn captured_port(
    lx: ListenerContext<'_>,
    port: u32,
    services: &[&Service],
    imports: &dyn Fn(&str, &str) -> bool,
    out: &mut dyn Sink,
) {
    let ListenerContext { ctx, proxy, scope } = lx;
    let has_http = services
        .iter()
        .any(|s| s.port(port).is_some_and(|p| p.is_http()));
    let mut by_vip: BTreeMap<IpAddr, Vec<&Service>> = BTreeMap::new();
    let mut by_cidr: Vec<((IpAddr, u32), &Service)> = Vec::new();
    let mut wildcard: Vec<&Service> = Vec::new();
    for s in services
        .iter()
        .copied()
        .filter(|s| s.port(port).is_some_and(|p| !p.is_http()))
    {
        let addrs = addresses(s);
        if addrs.is_empty() {
            wildcard.push(s);
        }
        for a in addrs {
            match a {
                Address::Vip(ip) => by_vip.entry(ip).or_default().push(s),
                Address::Cidr(ip, len) => {
                    // The first service claiming a prefix keeps it.
                    if !by_cidr.iter().any(|(c, _)| *c == (ip, len)) {
                        by_cidr.push(((ip, len), s));
                    }
                }
            }
        }
    }

    for (vip, at_vip) in by_vip {
        let ip = vip.to_string();
        let name = naming::listener(&ip, port);
        let (mut chains, tcp) = tcp_route_chains(ctx, proxy, &at_vip, port);
        // A sniffed service's HTTP keeps to the services at this VIP: route config HOST:PORT.
        if let Some(first) = at_vip.iter().find(|s| is_sniffed(s, port)) {
            let rds = format!("{}:{port}", first.hostname);
            let here = |ns: &str, host: &str| {
                imports(ns, host)
                    && at_vip
                        .iter()
                        .any(|s| s.hostname == host && s.namespace == ns && is_sniffed(s, port))
            };
            let hcm = sidecar_hcm(lx, &name, port, &rds, &here, out);
            chains.insert(0, sniffed_http_chain(hcm));
        }
        let default = tcp.unwrap_or_else(|| cluster_filter(at_vip[0], port));
        push_default_chain(&mut chains, default);
        out.listener(captured(name, &ip, port, chains));
    }

    if !has_http && by_cidr.is_empty() && wildcard.is_empty() {
        return;
    }
    let name = naming::listener("0.0.0.0", port);
    let mut chains = Vec::new();
    for ((ip, len), s) in &by_cidr {
        let (_, tcp) = tcp_route_chains(ctx, proxy, &[s], port);
        chains.push(FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                prefix_ranges: vec![CidrRange {
                    address_prefix: ip.to_string(),
                    prefix_len: Some(u32v(*len)),
                }],
                ..Default::default()
            }),
            filters: vec![tcp.unwrap_or_else(|| cluster_filter(s, port))],
            ..Default::default()
        });
    }
    let rds = port.to_string();
    if !has_http && wildcard.iter().any(|s| is_sniffed(s, port)) {
        let hcm = sidecar_hcm(lx, &name, port, &rds, imports, out);
        chains.push(sniffed_http_chain(hcm));
    }
    let (sni, tcp) = tcp_route_chains(ctx, proxy, &wildcard, port);
    let mut taken = server_names(&sni);
    chains.extend(sni);
    // A TLS service without a VIP is told apart by its host in the SNI.
    for s in wildcard
        .iter()
        .filter(|s| is_tls(s, port) && s.resolution != Resolution::DynamicDns)
    {
        if taken.insert(s.hostname.clone()) {
            chains.push(FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    server_names: vec![s.hostname.clone()],
                    ..Default::default()
                }),
                filters: vec![cluster_filter(s, port)],
                ..Default::default()
            });
        }
    }
    let default = if has_http {
        sidecar_hcm(lx, &name, port, &rds, imports, out)
    } else if let Some(tcp) = tcp {
        tcp
    } else if let Some(s) = wildcard
        .iter()
        .find(|s| !is_tls(s, port) && s.resolution != Resolution::DynamicDns)
    {
        cluster_filter(s, port)
    } else {
        let catch_all = passthrough_or_blackhole(scope);
        tcp_proxy_to(catch_all, catch_all)
    };
    push_default_chain(&mut chains, default);
    out.listener(captured(name, "0.0.0.0", port, chains));
}
