//! `virtualOutbound` (15001), the listener iptables capture redirects outbound connections to
//! (`virtualInbound`, 15006, is built with the inbound chains).

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};

use super::context::ListenerContext;
use super::filters::{passthrough_or_blackhole, tcp_proxy_to};
use crate::naming;
use crate::pb::{boolv, socket};
use crate::translate::Sink;

/// `virtualOutbound` (15001) for iptables capture (`virtualInbound` is the inbound module's).
pub(crate) fn virtual_outbound(lx: ListenerContext<'_>, out: &mut dyn Sink) {
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
}
