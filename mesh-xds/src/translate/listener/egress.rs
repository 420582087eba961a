//! Sidecar egress ports that bind (`captureMode: NONE`, or a proxy without iptables), and the
//! outbound HTTP connection manager every sidecar egress port shares.

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener};
use mesh_model::networking::service_entry::Resolution;

use super::context::ListenerContext;
use super::filters::{
    HCM, address_for, hcm, inspectors_for, network_filter, passthrough_or_blackhole,
    push_default_chain, sniffed_http_chain, tcp_proxy_to,
};
use super::tcp::tcp_route_chains;
use crate::naming;
use crate::translate::Sink;
use crate::translate::route::{self};

/// A Sidecar egress listener that binds its port (`captureMode: NONE`, or a proxy without
/// iptables): `BIND_PORT` (or the unix socket path) with either an HTTP connection manager
/// over route config `"PORT"` or the TCP/TLS routes of the port's services.
pub(crate) fn bound_listener(
    lx: ListenerContext<'_>,
    eg: &crate::translate::scope::EgressListener,
    port: u32,
    imports: &dyn Fn(&str, &str) -> bool,
    out: &mut dyn Sink,
) {
    let ListenerContext { ctx, proxy, scope } = lx;
    let bind = eg.bind.clone().unwrap_or_else(|| "127.0.0.1".to_string());
    let name = if bind.starts_with("unix://") {
        bind.clone()
    } else {
        naming::listener(&bind, port)
    };
    let services = lx.services_on(port, &imports);
    let first = services.first().and_then(|s| s.port(port));
    let http = if eg.protocol.is_sniffed() {
        first.is_none_or(|p| p.is_http())
    } else {
        eg.protocol.is_http()
    };
    let sniffed = eg.protocol.is_sniffed() && first.is_some_and(|p| p.is_sniffed());
    let rds = port.to_string();
    let (mut filter_chains, default_filter) = if http {
        (Vec::new(), sidecar_hcm(lx, &name, port, &rds, imports, out))
    } else {
        let (mut sni, tcp) = tcp_route_chains(ctx, proxy, &services, port);
        if sniffed {
            let hcm = sidecar_hcm(lx, &name, port, &rds, imports, out);
            sni.insert(0, sniffed_http_chain(hcm));
        }
        let default = tcp.unwrap_or_else(|| {
            // DYNAMIC_DNS services are reached by their SNI chains only: their clusters
            // cannot take a connection without a resolved name.
            let cluster = services
                .iter()
                .find(|s| s.resolution != Resolution::DynamicDns)
                .map(|s| naming::outbound_cluster(port, "", &s.hostname))
                .unwrap_or_else(|| passthrough_or_blackhole(scope).to_string());
            tcp_proxy_to(&cluster, &cluster)
        });
        (sni, default)
    };
    push_default_chain(&mut filter_chains, default_filter);
    out.listener(Listener {
        name,
        address: Some(address_for(&bind, port)),
        listener_filters: inspectors_for(&filter_chains),
        filter_chains,
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    });
}

/// The HTTP connection manager of a sidecar's outbound port over route config `rds` (`"PORT"`,
/// or `HOST:PORT` for a sniffed VIP), emitting that route config first if no listener did yet:
/// the port's virtual hosts for the services `imports` accepts.
pub(crate) fn sidecar_hcm(
    lx: ListenerContext<'_>,
    stat_prefix: &str,
    port: u32,
    rds: &str,
    imports: &dyn Fn(&str, &str) -> bool,
    out: &mut dyn Sink,
) -> Filter {
    let ListenerContext { ctx, proxy, scope } = lx;
    if !out.has_route(rds) {
        out.route_streamed(
            route::sidecar_route_header(proxy, rds.to_string()),
            &mut |emit| route::sidecar_vhosts(ctx, proxy, scope, port, imports, emit),
        );
    }
    network_filter(HCM, &hcm(ctx, stat_prefix, rds, false, &[]))
}
