//! Inbound traffic from a Sidecar's `ingress` listeners: one `inbound|PORT||` cluster per
//! listener, forwarding to its `defaultEndpoint`, reached either through a listener bound to
//! the port (`captureMode: NONE`, or a proxy without iptables) or through a filter chain on
//! `virtualInbound` matching the destination port (iptables capture).

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, BindConfig, SocketAddress, TrafficDirection, TransportSocket, socket_address,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use mesh_model::networking::sidecar::{CaptureMode, IstioIngressListener};

use super::context::ListenerContext;
use crate::naming;
use crate::pb::{any, dur, pipe, socket, u32v};
use crate::proxy::{InterceptionMode, Proxy};
use crate::registry::ServicePort;
use crate::translate::cluster::{apply_http_options, circuit_breakers_for};
use crate::translate::{PushContext, Sink};

/// Where inbound clusters connect from under iptables capture, so that their traffic is not
/// captured again (Istio's choice).
const INBOUND_SOURCE: &str = "127.0.0.6";

/// Emits the inbound clusters and bound listeners of the proxy's Sidecar, and returns the filter
/// chains that belong on `virtualInbound` (captured ports).
pub(crate) fn sidecar_inbound(lx: ListenerContext<'_>, out: &mut dyn Sink) -> Vec<FilterChain> {
    let ListenerContext { ctx, proxy, scope } = lx;
    let Some(sidecar) = scope.sidecar else {
        return Vec::new();
    };
    let mut captured = Vec::new();
    for ing in &sidecar.ingress {
        let port = ing.port.number;
        if port == 0 {
            continue;
        }
        let capture = proxy.interception_mode != InterceptionMode::None
            && ing.capture_mode != CaptureMode::None;
        let name = naming::inbound_cluster(port);
        out.cluster(inbound_cluster(ctx, proxy, sidecar, ing, &name, capture));
        let mut chains = if sniffed(ing) {
            // HTTP/1.1 and h2c through the HTTP connection manager, other bytes as TCP (the
            // plaintext twin is needed because Envoy does not backtrack from the transport
            // protocol match).
            let mut chains = vec![super::filters::sniffed_http_chain(http_filter(port, &name))];
            super::filters::push_default_chain(
                &mut chains,
                super::filters::tcp_proxy_to(&name, &name),
            );
            chains
        } else {
            vec![FilterChain {
                filters: vec![filter(ing, &name)],
                transport_socket: ing.tls.as_ref().and_then(downstream_tls),
                ..Default::default()
            }]
        };
        let base = naming::listener("0.0.0.0", port);
        for c in &mut chains {
            // Chain names: 0.0.0.0_PORT, with the kind of traffic on sniffed ports (named by
            // what each chain matches, not by its position).
            let kind = c.filter_chain_match.as_ref().map_or("", |m| {
                if !m.application_protocols.is_empty() {
                    "-http"
                } else if m.transport_protocol == "raw_buffer" {
                    "-raw"
                } else {
                    ""
                }
            });
            c.name = format!("{base}{kind}");
        }
        if capture {
            for mut chain in chains {
                chain
                    .filter_chain_match
                    .get_or_insert_with(FilterChainMatch::default)
                    .destination_port = Some(u32v(port));
                captured.push(chain);
            }
        } else {
            let bind = ing.bind.clone().unwrap_or_else(|| "0.0.0.0".to_string());
            let listener_name = if bind.starts_with("unix://") {
                bind.clone()
            } else {
                naming::listener(&bind, port)
            };
            let address = if bind.starts_with("unix://") {
                pipe(&bind)
            } else {
                socket(&bind, port)
            };
            out.listener(Listener {
                name: listener_name,
                address: Some(address),
                listener_filters: super::filters::inspectors_for(&chains),
                filter_chains: chains,
                traffic_direction: TrafficDirection::Inbound as i32,
                ..Default::default()
            });
        }
    }
    captured
}

/// An ingress port without a protocol is sniffed, as istiod does (not under TLS termination,
/// where the bytes the inspector would see are encrypted).
fn sniffed(ing: &IstioIngressListener) -> bool {
    ing.port.protocol.is_empty() && ing.tls.is_none()
}

fn is_http(protocol: &str) -> bool {
    matches!(
        protocol.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
    )
}

/// `defaultEndpoint` as an address: `IP:PORT`, `[IPv6]:PORT`, or `unix://PATH`. `0.0.0.0` and
/// `[::]` mean the workload's own address; without a default endpoint, traffic goes to the same
/// port on the workload.
fn endpoint_address(ing: &IstioIngressListener, proxy: &Proxy) -> Address {
    let own_ip = proxy
        .ip_addresses
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let Some(ep) = ing.default_endpoint.as_deref() else {
        return socket(&own_ip, ing.port.number);
    };
    if ep.starts_with("unix://") {
        return pipe(ep);
    }
    let (host, port) = match ep.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(ing.port.number)),
        None => (ep, ing.port.number),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host == "0.0.0.0" || host == "::" {
        own_ip.as_str()
    } else {
        host
    };
    socket(host, port)
}

fn inbound_cluster(
    ctx: &PushContext,
    proxy: &Proxy,
    sidecar: &mesh_model::SidecarSpec,
    ing: &IstioIngressListener,
    name: &str,
    capture: bool,
) -> Cluster {
    let pool = ing
        .connection_pool
        .as_ref()
        .or(sidecar.inbound_connection_pool.as_ref());
    let mut c = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(dur(pool
            .and_then(|p| p.tcp.as_ref())
            .and_then(|t| t.connect_timeout.as_ref())
            .unwrap_or(&ctx.mesh.connect_timeout))),
        circuit_breakers: Some(circuit_breakers_for(pool)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(endpoint_address(ing, proxy)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    if is_http(&ing.port.protocol) || sniffed(ing) {
        let port = ServicePort {
            name: ing.port.name.clone(),
            number: ing.port.number,
            protocol: ing.port.protocol.to_ascii_uppercase(),
            target_port: None,
        };
        let policy = mesh_model::networking::destination_rule::TrafficPolicy {
            connection_pool: pool.cloned(),
            ..Default::default()
        };
        apply_http_options(&mut c, &port, &policy, &ctx.mesh);
    }
    if capture {
        c.upstream_bind_config = Some(BindConfig {
            source_address: Some(SocketAddress {
                address: INBOUND_SOURCE.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    c
}

/// HTTP ports get an HTTP connection manager with an inline route to the inbound cluster (no
/// timeout: the caller's sidecar enforces it); other ports a TCP proxy.
fn filter(ing: &IstioIngressListener, cluster: &str) -> Filter {
    if is_http(&ing.port.protocol) {
        http_filter(ing.port.number, cluster)
    } else {
        super::filters::tcp_proxy_to(cluster, cluster)
    }
}

/// An HTTP connection manager with the inline route to the inbound cluster.
fn http_filter(port: u32, cluster: &str) -> Filter {
    let route_config = RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_string(),
                    )),
                    timeout: Some(crate::pb::duration(std::time::Duration::ZERO)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: Some(crate::pb::boolv(false)),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: cluster.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_config,
        )),
        http_filters: vec![super::filters::http_filter(
            "envoy.filters.http.router",
            &Router::default(),
        )],
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Filter {
        name: super::filters::HCM.into(),
        config_type: Some(
            envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any(
                &hcm,
            )),
        ),
    }
}

fn downstream_tls(
    tls: &mesh_model::networking::gateway::ServerTlsSettings,
) -> Option<TransportSocket> {
    let ctx = super::filters::downstream_tls(tls)?;
    Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    })
}
