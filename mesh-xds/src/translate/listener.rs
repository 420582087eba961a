//! Listeners (LDS): sidecar egress listeners (bound ports for `captureMode: NONE`, per-port and
//! virtual listeners under iptables capture), gateway listeners, and API listeners for
//! proxyless gRPC (reference §2.2, §3.1, §3.6).

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{BindConfig, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    ApiListener, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter,
    listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    common_tls_context,
};
use mesh_model::Config;
use mesh_model::host::{host_matches, resolve_short_name};
use mesh_model::networking::gateway::{Server, ServerTlsMode};
use mesh_model::networking::service_entry::Resolution;
use mesh_model::networking::virtual_service::RouteDestination;
use prost::Message;

use crate::naming;
use crate::pb::{ads_source, any, boolv, file, pipe, socket};
use crate::proxy::{InterceptionMode, Proxy};
use crate::registry::{Service, exported};
use crate::translate::route::{self, RouteTarget, blackhole_vhost, cluster_for, http_routes};
use crate::translate::scope::SidecarScope;
use crate::translate::{PushContext, Sink};

pub(crate) const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// The RDS names and clusters a listener references.
pub(crate) fn references(l: &Listener) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut rds = BTreeSet::new();
    let mut clusters = BTreeSet::new();
    let mut visit = |f: &Filter| {
        let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
            return;
        };
        if f.name == HCM {
            if let Ok(h) = HttpConnectionManager::decode(a.value.as_slice())
                && let Some(http_connection_manager::RouteSpecifier::Rds(r)) = h.route_specifier
            {
                rds.insert(r.route_config_name);
            }
        } else if f.name == TCP_PROXY
            && let Ok(t) = TcpProxy::decode(a.value.as_slice())
        {
            match t.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => {
                    clusters.insert(c);
                }
                Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                    clusters.extend(w.clusters.into_iter().map(|c| c.name));
                }
                None => {}
            }
        }
    };
    for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        fc.filters.iter().for_each(&mut visit);
    }
    if let Some(api) = &l.api_listener
        && let Some(a) = &api.api_listener
    {
        visit(&Filter {
            name: HCM.into(),
            config_type: Some(filter::ConfigType::TypedConfig(a.clone())),
        });
    }
    (rds, clusters)
}

pub(crate) fn http_filter<M: Message + prost::Name>(name: &str, config: &M) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// An HTTP connection manager using RDS, with Istio's filter order (fault, cors, router).
fn hcm(
    ctx: &PushContext,
    stat_prefix: &str,
    route_config: &str,
    proxyless: bool,
) -> HttpConnectionManager {
    let mut filters = Vec::new();
    if !proxyless {
        filters.push(http_filter(route::FAULT_FILTER, &HttpFault::default()));
        filters.push(http_filter(route::CORS_FILTER, &Cors::default()));
        if ctx.dynamic_dns {
            // Resolves the request's host for DYNAMIC_DNS clusters; other routes pass through.
            use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::{
                FilterConfig, filter_config,
            };
            filters.push(http_filter(
                "envoy.filters.http.dynamic_forward_proxy",
                &FilterConfig {
                    implementation_specifier: Some(
                        filter_config::ImplementationSpecifier::DnsCacheConfig(
                            crate::pb::dfp_cache(),
                        ),
                    ),
                    ..Default::default()
                },
            ));
        }
    }
    filters.push(http_filter("envoy.filters.http.router", &Router::default()));
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source(Some(std::time::Duration::ZERO))),
            route_config_name: route_config.to_string(),
        })),
        http_filters: filters,
        // Istio lets WebSocket upgrades through on every sidecar and gateway HCM.
        upgrade_configs: if proxyless {
            Vec::new()
        } else {
            vec![http_connection_manager::UpgradeConfig {
                upgrade_type: "websocket".into(),
                ..Default::default()
            }]
        },
        ..Default::default()
    }
}

pub(crate) fn network_filter<M: Message + prost::Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}

pub(crate) fn tcp_proxy_to(stat_prefix: &str, cluster: &str) -> Filter {
    network_filter(
        TCP_PROXY,
        &TcpProxy {
            stat_prefix: stat_prefix.into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        },
    )
}

fn listener_filter<M: Message + prost::Name>(name: &str, config: &M) -> ListenerFilter {
    ListenerFilter {
        name: name.into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

fn address_for(bind: &str, port: u32) -> envoy_types::pb::envoy::config::core::v3::Address {
    if bind.starts_with("unix://") {
        pipe(bind)
    } else {
        socket(bind, port)
    }
}

/// Sidecar listeners.
pub(crate) fn sidecar_listeners(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    out: &mut dyn Sink,
) {
    if proxy.proxyless_grpc {
        proxyless_listeners(ctx, proxy, scope, out);
        return;
    }
    let capture = proxy.interception_mode != InterceptionMode::None;
    let inbound_chains = super::inbound::sidecar_inbound(ctx, proxy, scope, out);
    // A port belongs to the first egress listener that names it; the catch-all takes the rest.
    let mut taken_ports = BTreeSet::new();
    for eg in &scope.egress {
        let imports = |ns: &str, host: &str| eg.imports(ns, host);
        match eg.port {
            Some(port) if eg.binds_port(proxy) => {
                taken_ports.insert(port);
                bound_listener(ctx, proxy, scope, eg, port, &imports, out);
            }
            Some(port) if capture && taken_ports.insert(port) => {
                let services: Vec<&Service> = scope
                    .services
                    .iter()
                    .copied()
                    .filter(|s| s.port(port).is_some() && imports(&s.namespace, &s.hostname))
                    .collect();
                super::outbound::captured_port(ctx, proxy, scope, port, &services, &imports, out);
            }
            None if capture => {
                // The imported services by port, built once (not one scan per port).
                let mut by_port: BTreeMap<u32, Vec<&Service>> = BTreeMap::new();
                for s in scope
                    .services
                    .iter()
                    .copied()
                    .filter(|s| imports(&s.namespace, &s.hostname))
                {
                    for p in &s.ports {
                        let at = by_port.entry(p.number).or_default();
                        // A service listing a port twice counts once.
                        if !at.last().is_some_and(|l| std::ptr::eq(*l, s)) {
                            at.push(s);
                        }
                    }
                }
                for (port, services) in by_port {
                    if taken_ports.insert(port) {
                        super::outbound::captured_port(
                            ctx, proxy, scope, port, &services, &imports, out,
                        );
                    }
                }
            }
            _ => {}
        }
    }
    if capture {
        virtual_listeners(ctx, scope, inbound_chains, out);
    }
}

/// A Sidecar egress listener that binds its port (`captureMode: NONE`, or a proxy without
/// iptables): `BIND_PORT` (or the unix socket path) with either an HTTP connection manager
/// over route config `"PORT"` or the TCP/TLS routes of the port's services.
fn bound_listener(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    eg: &super::scope::EgressListener,
    port: u32,
    imports: &dyn Fn(&str, &str) -> bool,
    out: &mut dyn Sink,
) {
    let bind = eg.bind.clone().unwrap_or_else(|| "127.0.0.1".to_string());
    let name = if bind.starts_with("unix://") {
        bind.clone()
    } else {
        naming::listener(&bind, port)
    };
    let services: Vec<&Service> = scope
        .services
        .iter()
        .copied()
        .filter(|s| s.port(port).is_some() && imports(&s.namespace, &s.hostname))
        .collect();
    let first = services.first().and_then(|s| s.port(port));
    let http = if eg.protocol.is_empty() {
        first.is_none_or(|p| p.is_http())
    } else {
        matches!(eg.protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB")
    };
    let sniffed = eg.protocol.is_empty() && first.is_some_and(|p| p.is_sniffed());
    let rds = port.to_string();
    let (mut filter_chains, default_filter) = if http {
        (
            Vec::new(),
            sidecar_hcm(ctx, proxy, scope, &name, port, &rds, imports, out),
        )
    } else {
        let (mut sni, tcp) = tcp_route_chains(ctx, proxy, &services, port);
        if sniffed {
            let hcm = sidecar_hcm(ctx, proxy, scope, &name, port, &rds, imports, out);
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
#[allow(clippy::too_many_arguments)]
pub(crate) fn sidecar_hcm(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    stat_prefix: &str,
    port: u32,
    rds: &str,
    imports: &dyn Fn(&str, &str) -> bool,
    out: &mut dyn Sink,
) -> Filter {
    if !out.has_route(rds) {
        out.route_streamed(
            route::sidecar_route_header(proxy, rds.to_string()),
            &mut |emit| route::sidecar_vhosts(ctx, proxy, scope, port, imports, emit),
        );
    }
    network_filter(HCM, &hcm(ctx, stat_prefix, rds, false))
}

/// The chain that plaintext HTTP/1.1 and h2c take on a sniffed port (the HTTP inspector tells
/// them apart from other bytes, which fall through to the TCP chains).
pub(crate) fn sniffed_http_chain(hcm: Filter) -> FilterChain {
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "raw_buffer".into(),
            application_protocols: vec!["http/1.1".into(), "h2c".into()],
            ..Default::default()
        }),
        filters: vec![hcm],
        ..Default::default()
    }
}

/// Appends the chain of the listener's default filter. On a sniffed listener a twin matching
/// plaintext comes first: Envoy settles the transport protocol before the application protocol
/// and never goes back, so plaintext that is not HTTP would otherwise stop at the HTTP chain's
/// `raw_buffer` branch and match nothing.
pub(crate) fn push_default_chain(chains: &mut Vec<FilterChain>, filter: Filter) {
    let sniffed = chains.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| !m.application_protocols.is_empty())
    });
    if sniffed {
        chains.push(FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                transport_protocol: "raw_buffer".into(),
                ..Default::default()
            }),
            filters: vec![filter.clone()],
            ..Default::default()
        });
    }
    chains.push(FilterChain {
        filters: vec![filter],
        ..Default::default()
    });
}

/// The listener filters the chains need: the TLS inspector when some chain matches on SNI,
/// the HTTP inspector when some chain matches on a plaintext application protocol.
pub(crate) fn inspectors_for(chains: &[FilterChain]) -> Vec<ListenerFilter> {
    use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
    let matches = || chains.iter().filter_map(|c| c.filter_chain_match.as_ref());
    let mut filters = Vec::new();
    if matches().any(|m| !m.server_names.is_empty()) {
        filters.push(listener_filter(
            "envoy.filters.listener.tls_inspector",
            &TlsInspector::default(),
        ));
    }
    if matches().any(|m| !m.application_protocols.is_empty()) {
        filters.push(listener_filter(
            "envoy.filters.listener.http_inspector",
            &HttpInspector::default(),
        ));
    }
    filters
}

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

/// Every server name the chains match on.
pub(crate) fn server_names(chains: &[FilterChain]) -> BTreeSet<String> {
    chains
        .iter()
        .filter_map(|c| c.filter_chain_match.as_ref())
        .flat_map(|m| m.server_names.iter().cloned())
        .collect()
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
            let p = s.port(port).filter(|p| p.protocol == "TLS")?;
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

pub(crate) fn passthrough_or_blackhole(scope: &SidecarScope<'_>) -> &'static str {
    match scope.outbound_mode {
        mesh_model::networking::sidecar::OutboundTrafficPolicyMode::AllowAny => {
            naming::PASSTHROUGH_CLUSTER
        }
        mesh_model::networking::sidecar::OutboundTrafficPolicyMode::RegistryOnly => {
            naming::BLACKHOLE_CLUSTER
        }
    }
}

/// `virtualOutbound` (15001) and `virtualInbound` (15006) for iptables capture.
fn virtual_listeners(
    ctx: &PushContext,
    scope: &SidecarScope<'_>,
    mut inbound_chains: Vec<FilterChain>,
    out: &mut dyn Sink,
) {
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

/// Proxyless gRPC clients: one API listener `HOST:PORT` per HTTP service port, each with its own
/// route config of the same name.
fn proxyless_listeners(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    out: &mut dyn Sink,
) {
    for svc in &scope.services {
        for p in svc.ports.iter().filter(|p| p.is_http()) {
            let name = format!("{}:{}", svc.hostname, p.number);
            let host = svc.hostname.clone();
            let only = move |_: &str, h: &str| h == host;
            let mut rc =
                route::sidecar_route_config(ctx, proxy, scope, p.number, &only, name.clone());
            // gRPC clients have no use for the catch-all; they dial one name.
            rc.virtual_hosts
                .retain(|v| v.name != "allow_any" && v.name != "block_all");
            out.route(rc);
            out.listener(Listener {
                name: name.clone(),
                api_listener: Some(ApiListener {
                    api_listener: Some(any(&hcm(ctx, &name, &name, true))),
                }),
                ..Default::default()
            });
        }
    }
}

/// A gateway server together with the Gateway it belongs to.
struct GatewayServer<'a> {
    gateway: String,
    gw_name: &'a str,
    gw_ns: &'a str,
    server: &'a Server,
}

/// Gateway listeners: servers of every Gateway selecting the proxy, merged per bind and port.
pub(crate) fn gateway_listeners(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    out: &mut dyn Sink,
) {
    let mut by_port: BTreeMap<(String, u32), Vec<GatewayServer<'_>>> = BTreeMap::new();
    for gw in selected_gateways(ctx, proxy) {
        for s in &gw.spec.servers {
            let bind = s.bind.clone().unwrap_or_else(|| "0.0.0.0".to_string());
            by_port
                .entry((bind, s.port.number))
                .or_default()
                .push(GatewayServer {
                    gateway: format!("{}/{}", gw.metadata.namespace(), gw.metadata.name),
                    gw_name: &gw.metadata.name,
                    gw_ns: gw.metadata.namespace(),
                    server: s,
                });
        }
    }
    for ((bind, port), servers) in by_port {
        let name = naming::listener(&bind, port);
        let mut chains = Vec::new();
        let mut needs_tls_inspector = false;
        // SNI names already routed by AUTO_PASSTHROUGH on this port (servers may overlap).
        let mut auto_snis = BTreeSet::new();
        let http_servers: Vec<&GatewayServer<'_>> = servers
            .iter()
            .filter(|s| {
                matches!(
                    protocol(s.server).as_str(),
                    "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
                )
            })
            .collect();
        if !http_servers.is_empty() {
            let rds = naming::gateway_http_route(port, Some(&bind));
            let rc = gateway_route_config(ctx, proxy, &http_servers, port, &rds);
            out.route(rc);
            chains.push(FilterChain {
                filters: vec![network_filter(HCM, &hcm(ctx, &name, &rds, false))],
                ..Default::default()
            });
        }
        for s in &servers {
            let proto = protocol(s.server);
            let Some(tls) = &s.server.tls else {
                if proto == "TCP" {
                    chains.extend(tcp_chains(ctx, s, port));
                }
                continue;
            };
            match tls.mode {
                ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
                    if proto == "HTTPS" =>
                {
                    let Some(tls_ctx) = downstream_tls(tls) else {
                        continue;
                    };
                    needs_tls_inspector = true;
                    let rds =
                        naming::gateway_https_route(port, &s.server.port.name, s.gw_name, s.gw_ns);
                    let rc = gateway_route_config(ctx, proxy, &[s], port, &rds);
                    out.route(rc);
                    chains.push(FilterChain {
                        filter_chain_match: Some(FilterChainMatch {
                            server_names: sni_names(s.server),
                            ..Default::default()
                        }),
                        transport_socket: Some(crate::pb::transport_socket(
                            "envoy.transport_sockets.tls",
                            &tls_ctx,
                        )),
                        filters: vec![network_filter(HCM, &hcm(ctx, &name, &rds, false))],
                        ..Default::default()
                    });
                }
                ServerTlsMode::Passthrough => {
                    needs_tls_inspector = true;
                    chains.extend(tls_passthrough_chains(ctx, s, port));
                }
                ServerTlsMode::AutoPassthrough => {
                    needs_tls_inspector = true;
                    chains.extend(auto_passthrough_chains(
                        ctx,
                        proxy,
                        scope,
                        s,
                        &mut auto_snis,
                    ));
                }
                _ => {}
            }
        }
        if chains.is_empty() {
            continue;
        }
        let listener_filters = if needs_tls_inspector {
            vec![listener_filter(
                "envoy.filters.listener.tls_inspector",
                &TlsInspector::default(),
            )]
        } else {
            Vec::new()
        };
        out.listener(Listener {
            name,
            address: Some(address_for(&bind, port)),
            filter_chains: chains,
            listener_filters,
            traffic_direction: TrafficDirection::Outbound as i32,
            ..Default::default()
        });
    }
}

/// The Gateways whose selector matches the proxy's labels.
fn selected_gateways<'a>(
    ctx: &'a PushContext,
    proxy: &'a Proxy,
) -> impl Iterator<Item = &'a mesh_model::Gateway> + 'a {
    ctx.gateways.iter().filter_map(move |c| match c.as_ref() {
        Config::Gateway(gw)
            if gw
                .spec
                .selector
                .iter()
                .all(|(k, v)| proxy.labels.get(k) == Some(v)) =>
        {
            Some(gw)
        }
        _ => None,
    })
}

/// Whether a Gateway selecting the proxy has an AUTO_PASSTHROUGH server (it then needs the
/// SNI-DNAT clusters).
pub(crate) fn has_auto_passthrough(ctx: &PushContext, proxy: &Proxy) -> bool {
    selected_gateways(ctx, proxy).any(|gw| {
        gw.spec.servers.iter().any(|s| {
            s.tls
                .as_ref()
                .is_some_and(|t| t.mode == ServerTlsMode::AutoPassthrough)
        })
    })
}

/// AUTO_PASSTHROUGH: one filter chain per SNI-DNAT cluster of the services the server's hosts
/// cover, matched on the cluster's name as SNI (`outbound_.PORT_.SUBSET_.HOST`) and forwarded
/// to it without terminating TLS, as Istio's east-west gateways do.
fn auto_passthrough_chains(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    s: &GatewayServer<'_>,
    seen: &mut BTreeSet<String>,
) -> Vec<FilterChain> {
    let covers = |svc: &crate::registry::Service| {
        s.server
            .hosts
            .iter()
            .any(|h| server_exposes(h, s.gw_ns, &svc.namespace, &svc.hostname))
    };
    let mut chains = Vec::new();
    for svc in scope.services.iter().filter(|svc| covers(svc)) {
        let dr =
            crate::translate::scope::destination_rule(ctx, proxy, &svc.hostname, &svc.namespace);
        let subsets: Vec<&str> = std::iter::once("")
            .chain(
                dr.iter()
                    .flat_map(|d| d.subsets.iter().map(|x| x.name.as_str())),
            )
            .collect();
        for port in &svc.ports {
            for subset in &subsets {
                let sni = naming::outbound_sni(port.number, subset, &svc.hostname);
                if !seen.insert(sni.clone()) {
                    continue;
                }
                chains.push(FilterChain {
                    filter_chain_match: Some(FilterChainMatch {
                        server_names: vec![sni.clone()],
                        ..Default::default()
                    }),
                    filters: vec![tcp_proxy_to(&sni, &sni)],
                    ..Default::default()
                });
            }
        }
    }
    chains
}

fn protocol(s: &Server) -> String {
    s.port.protocol.to_ascii_uppercase()
}

fn sni_names(s: &Server) -> Vec<String> {
    let names: Vec<String> = s
        .hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, d)| d).to_string())
        .collect();
    if names.iter().any(|n| n == "*") {
        Vec::new()
    } else {
        names
    }
}

pub(crate) fn downstream_tls(
    tls: &mesh_model::networking::gateway::ServerTlsSettings,
) -> Option<DownstreamTlsContext> {
    let mut certs = Vec::new();
    if let (Some(c), Some(k)) = (&tls.server_certificate, &tls.private_key) {
        certs.push(TlsCertificate {
            certificate_chain: Some(file(c)),
            private_key: Some(file(k)),
            ..Default::default()
        });
    }
    for t in &tls.tls_certificates {
        if let (Some(c), Some(k)) = (&t.server_certificate, &t.private_key) {
            certs.push(TlsCertificate {
                certificate_chain: Some(file(c)),
                private_key: Some(file(k)),
                ..Default::default()
            });
        }
    }
    // Credential names need SDS (kubernetes:// secrets), which arrives with mesh-identity.
    if certs.is_empty() {
        return None;
    }
    let mut common = CommonTlsContext {
        tls_certificates: certs,
        ..Default::default()
    };
    if let Some(ca) = &tls.ca_certificates {
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(file(ca)),
                    crl: tls.ca_crl.as_deref().map(file),
                    ..Default::default()
                },
            ),
        );
    }
    Some(DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(boolv(tls.mode == ServerTlsMode::Mutual)),
        ..Default::default()
    })
}

/// Whether a VirtualService host is exposed by a server host (`ns/dns`), given the VS namespace.
fn server_exposes(server_host: &str, gw_ns: &str, vs_ns: &str, vs_host: &str) -> bool {
    let (ns, dns) = server_host.split_once('/').unwrap_or(("*", server_host));
    let ns_ok = ns == "*" || (ns == "." && vs_ns == gw_ns) || ns == vs_ns;
    ns_ok && (host_matches(dns, vs_host) || host_matches(vs_host, dns))
}

/// The VirtualServices bound to a gateway, visible to its namespace, and the hosts each shares
/// with the server.
fn bound_virtual_services<'a>(
    ctx: &'a PushContext,
    s: &GatewayServer<'_>,
) -> Vec<(&'a mesh_model::VirtualService, String, Vec<String>)> {
    let mut out = Vec::new();
    for c in &ctx.virtual_services {
        let Config::VirtualService(vs) = c.as_ref() else {
            continue;
        };
        let ns = vs.metadata.namespace();
        let binds = vs.spec.gateways.iter().any(|g| {
            let full = match g.split_once('/') {
                Some(_) => g.clone(),
                None => format!("{ns}/{g}"),
            };
            full == s.gateway
        });
        if !binds
            || !exported(
                &vs.spec.export_to,
                &ctx.mesh.default_virtual_service_export_to,
                ns,
                s.gw_ns,
            )
        {
            continue;
        }
        let hosts: Vec<String> = vs
            .spec
            .hosts
            .iter()
            .filter(|h| {
                s.server
                    .hosts
                    .iter()
                    .any(|sh| server_exposes(sh, s.gw_ns, ns, h))
            })
            .map(|h| {
                if h.contains('.') || h == "*" {
                    h.clone()
                } else {
                    resolve_short_name(h, ns, ctx.domain_suffix())
                }
            })
            .collect();
        if !hosts.is_empty() {
            out.push((vs, ns.to_string(), hosts));
        }
    }
    out
}

fn gateway_route_config(
    ctx: &PushContext,
    proxy: &Proxy,
    servers: &[&GatewayServer<'_>],
    port: u32,
    name: &str,
) -> RouteConfiguration {
    let mut vhosts: BTreeMap<String, VirtualHost> = BTreeMap::new();
    for s in servers {
        let target = RouteTarget {
            port,
            gateway: Some(&s.gateway),
        };
        let redirect = s.server.tls.as_ref().is_some_and(|t| t.https_redirect);
        for (vs, ns, hosts) in bound_virtual_services(ctx, s) {
            let routes = http_routes(ctx, proxy, vs, &ns, &target);
            for h in hosts {
                let vh = vhosts.entry(h.clone()).or_insert_with(|| VirtualHost {
                    name: naming::virtual_host(&h, port),
                    domains: vec![h.clone()],
                    include_request_attempt_count: true,
                    ..Default::default()
                });
                vh.routes.extend(routes.iter().cloned());
                if redirect {
                    vh.require_tls = envoy_types::pb::envoy::config::route::v3::virtual_host::TlsRequirementType::All as i32;
                }
            }
        }
    }
    let mut virtual_hosts: Vec<VirtualHost> = vhosts
        .into_values()
        .map(|mut vh| {
            // Routes of several VirtualServices are concatenated; catch-alls go last.
            let (catch, rest): (Vec<_>, Vec<_>) = vh.routes.into_iter().partition(is_catch_all);
            vh.routes = rest.into_iter().chain(catch).collect();
            vh
        })
        .filter(|vh| !vh.routes.is_empty())
        .collect();
    if virtual_hosts.is_empty() {
        virtual_hosts.push(blackhole_vhost(port));
    }
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        validate_clusters: Some(boolv(false)),
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

fn is_catch_all(r: &envoy_types::pb::envoy::config::route::v3::Route) -> bool {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
    r.r#match.as_ref().is_some_and(|m| {
        matches!(&m.path_specifier, Some(PathSpecifier::Prefix(p)) if p == "/")
            && m.headers.is_empty()
            && m.query_parameters.is_empty()
    })
}

fn weighted_tcp(
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

/// PASSTHROUGH servers: one filter chain per bound TLS route, matched on SNI.
fn tls_passthrough_chains(ctx: &PushContext, s: &GatewayServer<'_>, port: u32) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    for (vs, ns, _) in bound_virtual_services(ctx, s) {
        chains.extend(sni_chains(ctx, vs, &ns, port, |_| true));
    }
    chains
}

/// One filter chain per TLS route of `vs` (matched on its SNI hosts), for the matches on `port`
/// that `applies` accepts.
fn sni_chains(
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

/// TCP servers: the first bound TCP route.
fn tcp_chains(ctx: &PushContext, s: &GatewayServer<'_>, port: u32) -> Vec<FilterChain> {
    for (vs, ns, _) in bound_virtual_services(ctx, s) {
        for tcp in &vs.spec.tcp {
            if tcp.route.is_empty() || !tcp.matches.iter().all(|m| m.port.is_none_or(|p| p == port))
            {
                continue;
            }
            return vec![FilterChain {
                filters: vec![weighted_tcp(
                    ctx,
                    &format!("{}.{}", vs.metadata.name, ns),
                    &tcp.route,
                    &ns,
                    port,
                )],
                ..Default::default()
            }];
        }
    }
    Vec::new()
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
