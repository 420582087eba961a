//! Inbound traffic (reference: security §1.4–§1.7): what reaches the workload through its
//! sidecar, with the mutual TLS its PeerAuthentication asks for.
//!
//! - Without a Sidecar `ingress`, under capture, the workload's service instances (the
//!   services with an endpoint at one of the proxy's addresses) give the ports: one
//!   `inbound|PORT||` cluster per target port (ORIGINAL_DST, from 127.0.0.6), and chains on
//!   `virtualInbound` matching the destination port. Without capture there is no inbound.
//! - A Sidecar's `ingress` listeners replace them: each forwards to its `defaultEndpoint`
//!   (STATIC), through a listener bound to the port (`captureMode: NONE`, or a proxy without
//!   iptables) or through chains on `virtualInbound` (capture).
//! - Each port gets istiod's chain set for its protocol and mTLS mode (the table of §1.5):
//!   STRICT only TLS chains terminating Istio mTLS, PERMISSIVE those and plaintext chains,
//!   DISABLE plaintext only. `virtualInbound` also gets the passthrough chains (the workload's
//!   mode, to `InboundPassthroughCluster`), extra passthrough chains for `portLevelMtls` ports
//!   no service claims, and the loop guard on its own port.
//! - Listener filters run only where a chain needs them (`filter_disabled` by destination
//!   port), as istiod does: on a DISABLE port the TLS inspector stays off, so TLS from the
//!   application passes through as TCP.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, BindConfig, SocketAddress, TrafficDirection, TransportSocket, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    ListenerFilterChainMatchPredicate, listener_filter_chain_match_predicate as predicate,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use mesh_model::networking::sidecar::{CaptureMode, IstioIngressListener};
use mesh_model::protocol::Protocol;

use super::context::ListenerContext;
use super::filters::{HCM, http_filter, listener_filter, tcp_proxy_to};
use super::policies::Policies;
use crate::naming;
use crate::pb::{any, boolv, dur, pipe, socket, u32v};
use crate::proxy::{InterceptionMode, Proxy};
use crate::registry::ServicePort;
use crate::security::peer::{Mode, MtlsPolicy};
use crate::security::tls;
use crate::translate::cluster::{apply_http_options, circuit_breakers_for};
use crate::translate::{PushContext, Sink};

/// Where inbound clusters connect from under iptables capture, so that their traffic is not
/// captured again (Istio's choice).
const INBOUND_SOURCE: &str = "127.0.0.6";
/// Chain names of the passthrough chains (fixed, as istiod names them).
const PASSTHROUGH_HTTP_CHAIN: &str = "virtualInbound-catchall-http";
const PASSTHROUGH_TCP_CHAIN: &str = "virtualInbound";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";

/// What a port's traffic is, for its chain set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Traffic {
    /// Declared HTTP, HTTP2, gRPC: HTTP connection manager only.
    Http,
    /// Declared as anything else: TCP proxy only.
    Tcp,
    /// No protocol: HTTP if the bytes are HTTP, else TCP.
    Sniffed,
}

impl Traffic {
    fn of(protocol: impl Into<Protocol>) -> Traffic {
        let protocol = protocol.into();
        if protocol.is_sniffed() {
            Traffic::Sniffed
        } else if protocol.is_http() {
            Traffic::Http
        } else {
            Traffic::Tcp
        }
    }
}

/// One inbound port: the workload port its chains match, how its traffic is handled, and
/// where it goes.
struct InboundPort {
    port: u32,
    protocol: Traffic,
    cluster: String,
    /// The Sidecar ingress's own TLS (honoured only when the port's mode is DISABLE).
    user_tls: Option<TransportSocket>,
}

/// One chain of a port's chain set: what it matches and whether it terminates mesh mTLS.
struct ChainSpec {
    tls: bool,
    alpn: &'static [&'static str],
    terminate: bool,
    http: bool,
}

const fn spec(tls: bool, alpn: &'static [&'static str], terminate: bool, http: bool) -> ChainSpec {
    ChainSpec {
        tls,
        alpn,
        terminate,
        http,
    }
}

/// istiod's chain set for a protocol and mode (reference: security §1.5).
fn chain_specs(protocol: Traffic, mode: Mode) -> Vec<ChainSpec> {
    use tls::{ALL_MTLS_ALPN, MTLS_HTTP_ALPN, MX_TCP_ALPN, PLAIN_HTTP_ALPN};
    match (protocol, mode) {
        (Traffic::Http, Mode::Strict) => vec![spec(true, &[], true, true)],
        (Traffic::Http, Mode::Permissive) => vec![
            spec(true, ALL_MTLS_ALPN, true, true),
            spec(false, &[], false, true),
        ],
        (Traffic::Http, Mode::Disable) => vec![spec(false, &[], false, true)],
        (Traffic::Tcp, Mode::Strict) => vec![spec(true, &[], true, false)],
        (Traffic::Tcp, Mode::Permissive) => vec![
            spec(true, ALL_MTLS_ALPN, true, false),
            spec(true, &[], false, false),
            spec(false, &[], false, false),
        ],
        (Traffic::Tcp, Mode::Disable) => vec![spec(false, &[], false, false)],
        (Traffic::Sniffed, Mode::Strict) => vec![
            spec(true, MTLS_HTTP_ALPN, true, true),
            spec(true, &[], true, false),
        ],
        (Traffic::Sniffed, Mode::Permissive) => vec![
            spec(true, MTLS_HTTP_ALPN, true, true),
            spec(false, PLAIN_HTTP_ALPN, false, true),
            spec(true, MX_TCP_ALPN, true, false),
            spec(false, &[], false, false),
            spec(true, &[], false, false),
        ],
        (Traffic::Sniffed, Mode::Disable) => vec![
            spec(false, PLAIN_HTTP_ALPN, false, true),
            spec(false, &[], false, false),
        ],
    }
}

/// The chains of one port (or of the passthrough when `port` is `None`): istiod's chain set,
/// named `http_name`/`tcp_name`, with the HTTP connection manager and the TCP proxy to
/// `cluster`, matched on the destination port when there is one.
#[allow(clippy::too_many_arguments)]
fn port_chains(
    ctx: &PushContext,
    policies: &Policies,
    port: Option<u32>,
    protocol: Traffic,
    mode: Mode,
    cluster: &str,
    stat_prefix: &str,
    names: (&str, &str),
    user_tls: Option<&TransportSocket>,
) -> Vec<FilterChain> {
    let destination_port = port.map(u32v);
    // A Sidecar ingress's own TLS replaces the plaintext chain of a DISABLE port.
    if mode == Mode::Disable
        && let Some(socket) = user_tls
    {
        let http = protocol == Traffic::Http;
        return vec![FilterChain {
            name: names.0.into(),
            filter_chain_match: Some(FilterChainMatch {
                destination_port,
                transport_protocol: "tls".into(),
                ..Default::default()
            }),
            transport_socket: Some(socket.clone()),
            filters: if http {
                vec![inbound_hcm(cluster, stat_prefix, &policies.http)]
            } else {
                policies.tcp_filters(cluster)
            },
            ..Default::default()
        }];
    }
    let mtls = tls::tls_socket(&tls::inbound_context(&ctx.mesh));
    chain_specs(protocol, mode)
        .into_iter()
        .map(|s| FilterChain {
            name: if s.http { names.0 } else { names.1 }.into(),
            filter_chain_match: Some(FilterChainMatch {
                destination_port,
                transport_protocol: if s.tls { "tls" } else { "raw_buffer" }.into(),
                application_protocols: s.alpn.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            }),
            transport_socket: s.terminate.then(|| mtls.clone()),
            filters: if s.http {
                vec![inbound_hcm(cluster, stat_prefix, &policies.http)]
            } else {
                policies.tcp_filters(cluster)
            },
            ..Default::default()
        })
        .collect()
}

/// The inbound ports of the proxy and whether they are captured, emitting their clusters.
fn inbound_ports(lx: ListenerContext<'_>, out: &mut dyn Sink) -> Vec<(InboundPort, Option<Bound>)> {
    let ListenerContext { ctx, proxy, scope } = lx;
    let capture = proxy.interception_mode != InterceptionMode::None;
    let mut ports = Vec::new();
    if let Some(sidecar) = scope.sidecar.filter(|s| !s.ingress.is_empty()) {
        for ing in &sidecar.ingress {
            let port = ing.port.number;
            if port == 0 {
                continue;
            }
            let captured = capture && ing.capture_mode != CaptureMode::None;
            let name = naming::inbound_cluster(port);
            out.cluster(ingress_cluster(ctx, proxy, sidecar, ing, &name, captured));
            let bound = (!captured).then(|| Bound {
                bind: ing.bind.clone().unwrap_or_else(|| "0.0.0.0".to_string()),
            });
            ports.push((
                InboundPort {
                    port,
                    protocol: if ing.tls.is_some() && ing.port.protocol.is_empty() {
                        Traffic::Tcp
                    } else {
                        Traffic::of(ing.port.protocol.as_str())
                    },
                    cluster: name,
                    user_tls: ing.tls.as_ref().and_then(user_tls),
                },
                bound,
            ));
        }
        return ports;
    }
    if !capture {
        // Listening on the workload's ports without capture would take them from the
        // application: istiod builds no inbound at all then.
        return ports;
    }
    for (target, service_port) in service_targets(ctx, proxy) {
        let name = naming::inbound_cluster(target);
        out.cluster(instance_cluster(ctx, &service_port, &name));
        ports.push((
            InboundPort {
                port: target,
                protocol: Traffic::of(service_port.protocol),
                cluster: name,
                user_tls: None,
            },
            None,
        ));
    }
    ports
}

/// A bound (not captured) inbound listener's address.
struct Bound {
    bind: String,
}

/// The service ports the proxy's workload backs, by target port: the services with an
/// endpoint at one of the proxy's addresses; the oldest service wins a target port two
/// services share (protocol included), as istiod does.
fn service_targets(ctx: &PushContext, proxy: &Proxy) -> BTreeMap<u32, ServicePort> {
    let mut services: Vec<&crate::registry::Service> = ctx
        .registry
        .services()
        .filter(|s| {
            s.endpoints
                .iter()
                .any(|e| proxy.ip_addresses.contains(&e.address))
        })
        .collect();
    services.sort_by(|a, b| {
        (a.created.as_deref(), &a.namespace, &a.hostname).cmp(&(
            b.created.as_deref(),
            &b.namespace,
            &b.hostname,
        ))
    });
    let mut out = BTreeMap::new();
    for s in services {
        for e in s
            .endpoints
            .iter()
            .filter(|e| proxy.ip_addresses.contains(&e.address))
        {
            for p in &s.ports {
                out.entry(e.port_for(p)).or_insert_with(|| p.clone());
            }
        }
    }
    out
}

/// Emits the inbound clusters and listeners: bound listeners for ports that are not
/// captured, and `virtualInbound` (with `InboundPassthroughCluster`) under capture.
pub(crate) fn sidecar_inbound(lx: ListenerContext<'_>, out: &mut dyn Sink) {
    let ListenerContext { ctx, proxy, .. } = lx;
    let capture = proxy.interception_mode != InterceptionMode::None;
    let mtls = ctx
        .peer_authentications
        .for_workload(&proxy.namespace, &proxy.labels);
    let policies = Policies::for_proxy(ctx, proxy, false);
    let mut captured = Vec::new();
    let mut served = BTreeSet::new();
    for (p, bound) in inbound_ports(lx, out) {
        let base = naming::listener("0.0.0.0", p.port);
        let chains = port_chains(
            ctx,
            &policies,
            Some(p.port),
            p.protocol,
            mtls.for_port(p.port),
            &p.cluster,
            &format!("inbound_{base};"),
            (&base, &base),
            p.user_tls.as_ref(),
        );
        served.insert(p.port);
        match bound {
            None => captured.push((Some(p.port), chains)),
            Some(Bound { bind }) => {
                let (name, address) = if bind.starts_with("unix://") {
                    (bind.clone(), pipe(&bind))
                } else {
                    (naming::listener(&bind, p.port), socket(&bind, p.port))
                };
                out.listener(Listener {
                    name,
                    address: Some(address),
                    listener_filters: inspectors(&[(Some(p.port), chains.as_slice())]),
                    filter_chains: chains,
                    traffic_direction: TrafficDirection::Inbound as i32,
                    ..Default::default()
                });
            }
        }
    }
    if capture {
        virtual_inbound(ctx, &policies, &mtls, &served, captured, out);
    }
}

/// `virtualInbound` (15006): the loop guard, the passthrough chains, the captured ports.
fn virtual_inbound(
    ctx: &PushContext,
    policies: &Policies,
    mtls: &MtlsPolicy,
    served: &BTreeSet<u32>,
    captured: Vec<(Option<u32>, Vec<FilterChain>)>,
    out: &mut dyn Sink,
) {
    out.cluster(Cluster {
        name: naming::INBOUND_PASSTHROUGH_CLUSTER.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(dur(&ctx.mesh.connect_timeout)),
        upstream_bind_config: Some(inbound_bind()),
        ..Default::default()
    });
    let own_port = ctx.mesh.proxy_inbound_listen_port;
    let passthrough = |port: Option<u32>, mode: Mode| {
        port_chains(
            ctx,
            policies,
            port,
            Traffic::Sniffed,
            mode,
            naming::INBOUND_PASSTHROUGH_CLUSTER,
            &format!("{};", naming::INBOUND_PASSTHROUGH_CLUSTER),
            (PASSTHROUGH_HTTP_CHAIN, PASSTHROUGH_TCP_CHAIN),
            None,
        )
    };
    let mut sets: Vec<(Option<u32>, Vec<FilterChain>)> = vec![(
        Some(own_port),
        vec![FilterChain {
            name: "virtualInbound-blackhole".into(),
            filter_chain_match: Some(FilterChainMatch {
                destination_port: Some(u32v(own_port)),
                ..Default::default()
            }),
            filters: vec![tcp_proxy_to(
                naming::BLACKHOLE_CLUSTER,
                naming::BLACKHOLE_CLUSTER,
            )],
            ..Default::default()
        }],
    )];
    sets.push((None, passthrough(None, mtls.workload)));
    // A port a workload policy sets that no service serves gets passthrough chains of its
    // own mode.
    for (port, mode) in &mtls.ports {
        if !served.contains(port) && *port != own_port {
            sets.push((Some(*port), passthrough(Some(*port), *mode)));
        }
    }
    sets.extend(captured);
    let mut listener_filters = vec![listener_filter(
        "envoy.filters.listener.original_dst",
        &OriginalDst::default(),
    )];
    let borrowed: Vec<(Option<u32>, &[FilterChain])> =
        sets.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    listener_filters.extend(inspectors(&borrowed));
    out.listener(Listener {
        name: naming::VIRTUAL_INBOUND_LISTENER.into(),
        address: Some(socket("0.0.0.0", own_port)),
        listener_filters,
        filter_chains: sets.into_iter().flat_map(|(_, c)| c).collect(),
        traffic_direction: TrafficDirection::Inbound as i32,
        continue_on_listener_filters_timeout: true,
        listener_filters_timeout: Some(dur(&ctx.mesh.protocol_detection_timeout)),
        ..Default::default()
    });
}

/// The TLS and HTTP inspectors, each running only on the destination ports whose chains need
/// it (istiod's `populateListenerFilters`): the TLS inspector where a chain matches
/// `transport_protocol: tls`, the HTTP inspector where one matches a plaintext HTTP ALPN.
/// `sets` are chain sets by destination port (`None`: the passthrough, any other port).
fn inspectors(sets: &[(Option<u32>, &[FilterChain])]) -> Vec<ListenerFilter> {
    let needs_tls = |c: &FilterChain| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| m.transport_protocol == "tls" || !m.server_names.is_empty())
    };
    let needs_http = |c: &FilterChain| {
        c.filter_chain_match.as_ref().is_some_and(|m| {
            m.application_protocols
                .iter()
                .any(|a| tls::PLAIN_HTTP_ALPN.contains(&a.as_str()) || a == "http/1.0")
        })
    };
    let mut filters = Vec::new();
    for (name, needs) in [
        (TLS_INSPECTOR, &needs_tls as &dyn Fn(&FilterChain) -> bool),
        (HTTP_INSPECTOR, &needs_http),
    ] {
        let mut on = Vec::new();
        let mut off = Vec::new();
        let mut passthrough = false;
        for (port, chains) in sets {
            let need = chains.iter().any(needs);
            match port {
                None => passthrough |= need,
                Some(p) if need => on.push(*p),
                Some(p) => off.push(*p),
            }
        }
        let disabled = if passthrough {
            // Needed for other ports: off only where no chain needs it.
            any_port(&off)
        } else if on.is_empty() {
            continue;
        } else {
            // Only where some chain needs it.
            any_port(&on).map(|m| ListenerFilterChainMatchPredicate {
                rule: Some(predicate::Rule::NotMatch(Box::new(m))),
            })
        };
        let mut filter = if name == TLS_INSPECTOR {
            listener_filter(name, &TlsInspector::default())
        } else {
            listener_filter(name, &HttpInspector::default())
        };
        filter.filter_disabled = disabled;
        filters.push(filter);
    }
    filters
}

/// A predicate matching any of `ports` (none when there are none).
fn any_port(ports: &[u32]) -> Option<ListenerFilterChainMatchPredicate> {
    let rule = |p: u32| ListenerFilterChainMatchPredicate {
        rule: Some(predicate::Rule::DestinationPortRange(Int32Range {
            start: i32::try_from(p).unwrap_or(i32::MAX),
            end: i32::try_from(p + 1).unwrap_or(i32::MAX),
        })),
    };
    match ports {
        [] => None,
        [p] => Some(rule(*p)),
        many => Some(ListenerFilterChainMatchPredicate {
            rule: Some(predicate::Rule::OrMatch(predicate::MatchSet {
                rules: many.iter().map(|p| rule(*p)).collect(),
            })),
        }),
    }
}

fn inbound_bind() -> BindConfig {
    BindConfig {
        source_address: Some(SocketAddress {
            address: INBOUND_SOURCE.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The inbound cluster of a service instance's target port: to the connection's original
/// destination (the workload's own address), from 127.0.0.6.
fn instance_cluster(ctx: &PushContext, port: &ServicePort, name: &str) -> Cluster {
    let mut c = Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(dur(&ctx.mesh.connect_timeout)),
        circuit_breakers: Some(circuit_breakers_for(None)),
        upstream_bind_config: Some(inbound_bind()),
        ..Default::default()
    };
    if port.is_http() || port.is_sniffed() {
        apply_http_options(
            &mut c,
            port,
            &mesh_model::networking::destination_rule::TrafficPolicy::default(),
            &ctx.mesh,
        );
    }
    c
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

fn ingress_cluster(
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
    if Traffic::of(ing.port.protocol.as_str()) == Traffic::Http
        || (ing.port.protocol.is_empty() && ing.tls.is_none())
    {
        let port = ServicePort {
            name: ing.port.name.clone(),
            number: ing.port.number,
            protocol: Protocol::parse(&ing.port.protocol),
            target_port: None,
        };
        let policy = mesh_model::networking::destination_rule::TrafficPolicy {
            connection_pool: pool.cloned(),
            ..Default::default()
        };
        apply_http_options(&mut c, &port, &policy, &ctx.mesh);
    }
    if capture {
        c.upstream_bind_config = Some(inbound_bind());
    }
    c
}

/// The inbound HTTP connection manager: an inline route to the inbound cluster (no timeout:
/// the caller's sidecar enforces it), the client certificate's details forwarded to the
/// application in `x-forwarded-client-cert`, as istiod configures it.
fn inbound_hcm(
    cluster: &str,
    stat_prefix: &str,
    policies: &[envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter],
) -> Filter {
    let port = cluster
        .strip_prefix("inbound|")
        .and_then(|r| r.split('|').next())
        .unwrap_or("0");
    let vhost = if cluster == naming::INBOUND_PASSTHROUGH_CLUSTER {
        "inbound|http|0".to_string()
    } else {
        format!("inbound|http|{port}")
    };
    let route_config = RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: vhost,
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
        validate_clusters: Some(boolv(false)),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_config,
        )),
        use_remote_address: Some(boolv(false)),
        forward_client_cert_details:
            http_connection_manager::ForwardClientCertDetails::AppendForward as i32,
        set_current_client_cert_details: Some(
            http_connection_manager::SetCurrentClientCertDetails {
                subject: Some(boolv(true)),
                uri: true,
                dns: true,
                ..Default::default()
            },
        ),
        http_filters: policies
            .iter()
            .cloned()
            .chain(std::iter::once(http_filter(
                "envoy.filters.http.router",
                &Router::default(),
            )))
            .collect(),
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Filter {
        name: HCM.into(),
        config_type: Some(
            envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any(
                &hcm,
            )),
        ),
    }
}

/// A Sidecar ingress's own TLS (certificates from files).
fn user_tls(tls: &mesh_model::networking::gateway::ServerTlsSettings) -> Option<TransportSocket> {
    let ctx = super::filters::downstream_tls(tls)?;
    Some(crate::pb::transport_socket(tls::TLS_SOCKET, &ctx))
}
