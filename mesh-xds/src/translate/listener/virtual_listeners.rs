//! `virtualOutbound` (15001) and `virtualInbound` (15006), the listeners iptables capture
//! redirects to.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{BindConfig, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;

use super::context::ListenerContext;
use super::filters::{inspectors_for, listener_filter, passthrough_or_blackhole, tcp_proxy_to};
use crate::naming;
use crate::pb::{boolv, socket};
use crate::translate::Sink;

/// `virtualOutbound` (15001) and `virtualInbound` (15006) for iptables capture.
pub(crate) fn virtual_listeners(
    lx: ListenerContext<'_>,
    mut inbound_chains: Vec<FilterChain>,
    out: &mut dyn Sink,
) {
    let ListenerContext { ctx, scope, .. } = lx;
    let catch_all = passthrough_or_blackhole(scope);
    let outbound = Listener {
        name: naming::VIRTUAL_OUTBOUND_LISTENER.into(),
        address: Some(socket("0.0.0.0", ctx.mesh.proxy_listen_port)),
        use_original_dst: Some(boolv(true)),
        filter_chains: vec![
            // A connection made to 15001 itself (not redirected) would loop back through
            // PassthroughCluster: it goes nowhere.
            FilterChain {
                name: "virtualOutbound-blackhole".into(),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(crate::pb::u32v(ctx.mesh.proxy_listen_port)),
                    ..Default::default()
                }),
                filters: vec![tcp_proxy_to(
                    naming::BLACKHOLE_CLUSTER,
                    naming::BLACKHOLE_CLUSTER,
                )],
                ..Default::default()
            },
            FilterChain {
                name: "virtualOutbound-catchall-tcp".into(),
                filters: vec![tcp_proxy_to(catch_all, catch_all)],
                ..Default::default()
            },
        ],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    out.listener(outbound);
    let inbound_cluster = Cluster {
        name: naming::INBOUND_PASSTHROUGH_CLUSTER.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::OriginalDst as i32)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(crate::pb::dur(&ctx.mesh.connect_timeout)),
        upstream_bind_config: Some(BindConfig {
            source_address: Some(envoy_types::pb::envoy::config::core::v3::SocketAddress {
                address: "127.0.0.6".into(),
                port_specifier: Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    out.cluster(inbound_cluster);
    let inbound = Listener {
        name: naming::VIRTUAL_INBOUND_LISTENER.into(),
        address: Some(socket("0.0.0.0", ctx.mesh.proxy_inbound_listen_port)),
        listener_filters: {
            let mut filters = vec![listener_filter(
                "envoy.filters.listener.original_dst",
                &OriginalDst::default(),
            )];
            filters.extend(inspectors_for(&inbound_chains));
            filters
        },
        filter_chains: {
            // Ports of the Sidecar's ingress listeners first, then everything else.
            inbound_chains.push(FilterChain {
                name: "virtualInbound-catchall-tcp".into(),
                filters: vec![tcp_proxy_to(
                    naming::INBOUND_PASSTHROUGH_CLUSTER,
                    naming::INBOUND_PASSTHROUGH_CLUSTER,
                )],
                ..Default::default()
            });
            inbound_chains
        },
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    };
    out.listener(inbound);
}
