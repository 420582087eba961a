//! Gateway listeners: the servers of every Gateway selecting the proxy, merged per bind and
//! port (HTTP, HTTPS, TLS passthrough, AUTO_PASSTHROUGH, TCP).

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use mesh_model::Config;
use mesh_model::host::{host_matches, resolve_short_name};
use mesh_model::networking::gateway::{Server, ServerTlsMode};
use mesh_model::networking::service_entry::Location;
use mesh_model::protocol::Protocol;

use super::context::ListenerContext;
use super::filters::{
    HCM, address_for, downstream_tls, hcm, listener_filter, network_filter, tcp_proxy_to,
};
use super::tcp::{sni_chains, weighted_tcp};
use crate::naming;
use crate::pb::boolv;
use crate::proxy::Proxy;
use crate::registry::exported;
use crate::security::tls::ALL_MTLS_ALPN;
use crate::translate::route::{RouteTarget, blackhole_vhost, http_routes};
use crate::translate::{PushContext, Sink};

/// A gateway server together with the Gateway it belongs to.
struct GatewayServer<'a> {
    gateway: String,
    gw_name: &'a str,
    gw_ns: &'a str,
    server: &'a Server,
}

/// Gateway listeners: servers of every Gateway selecting the proxy, merged per bind and port.
pub(crate) fn gateway_listeners(lx: ListenerContext<'_>, out: &mut dyn Sink) {
    let ListenerContext {
        ctx,
        proxy,
        scope: _,
    } = lx;
    // The gateway's own AuthorizationPolicies and RequestAuthentications, on every HTTP
    // connection manager it serves.
    let policies = super::policies::Policies::for_proxy(ctx, proxy, true);
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
            .filter(|s| protocol(s.server).is_http())
            .collect();
        if !http_servers.is_empty() {
            let rds = naming::gateway_http_route(port, Some(&bind));
            let rc = gateway_route_config(ctx, proxy, &http_servers, port, &rds);
            out.route(rc);
            chains.push(FilterChain {
                filters: vec![network_filter(
                    HCM,
                    &hcm(ctx, &name, &rds, false, &policies.http),
                )],
                ..Default::default()
            });
        }
        for s in &servers {
            let proto = protocol(s.server);
            let Some(tls) = &s.server.tls else {
                if proto == Protocol::Tcp {
                    chains.extend(tcp_chains(ctx, s, port));
                }
                continue;
            };
            match tls.mode {
                ServerTlsMode::Simple
                | ServerTlsMode::Mutual
                | ServerTlsMode::OptionalMutual
                | ServerTlsMode::IstioMutual
                    if proto == Protocol::Https =>
                {
                    let Some(tls_ctx) = server_tls(ctx, tls, out) else {
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
                        filters: vec![network_filter(
                            HCM,
                            &hcm(ctx, &name, &rds, false, &policies.http),
                        )],
                        ..Default::default()
                    });
                }
                ServerTlsMode::Passthrough => {
                    needs_tls_inspector = true;
                    chains.extend(tls_passthrough_chains(ctx, s, port));
                }
                ServerTlsMode::AutoPassthrough => {
                    needs_tls_inspector = true;
                    chains.extend(auto_passthrough_chains(lx, s, &mut auto_snis));
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
/// to it without terminating TLS, as Istio's east-west gateways do (istiod's
/// `builtAutoPassthroughFilterChains`). As there, a chain matches only the ALPNs Istio's mTLS
/// clients offer, so a plain TLS client (or one that reuses an SNI name) finds no chain; mesh
/// external services and UDP ports get none.
fn auto_passthrough_chains(
    lx: ListenerContext<'_>,
    s: &GatewayServer<'_>,
    seen: &mut BTreeSet<String>,
) -> Vec<FilterChain> {
    let ListenerContext { ctx, proxy, scope } = lx;
    let covers = |svc: &crate::registry::Service| {
        s.server
            .hosts
            .iter()
            .any(|h| server_exposes(h, s.gw_ns, &svc.namespace, &svc.hostname))
    };
    let mut chains = Vec::new();
    for svc in scope
        .services
        .iter()
        .filter(|svc| svc.location != Location::MeshExternal && covers(svc))
    {
        let dr =
            crate::translate::scope::destination_rule(ctx, proxy, &svc.hostname, &svc.namespace);
        let subsets: Vec<&str> = std::iter::once("")
            .chain(
                dr.iter()
                    .flat_map(|d| d.subsets.iter().map(|x| x.name.as_str())),
            )
            .collect();
        for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            for subset in &subsets {
                let sni = naming::outbound_sni(port.number, subset, &svc.hostname);
                if !seen.insert(sni.clone()) {
                    continue;
                }
                chains.push(FilterChain {
                    filter_chain_match: Some(FilterChainMatch {
                        server_names: vec![sni.clone()],
                        application_protocols: ALL_MTLS_ALPN
                            .iter()
                            .map(|a| a.to_string())
                            .collect(),
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

fn protocol(s: &Server) -> Protocol {
    Protocol::parse(&s.port.protocol)
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

/// PASSTHROUGH servers: one filter chain per bound TLS route, matched on SNI.
fn tls_passthrough_chains(ctx: &PushContext, s: &GatewayServer<'_>, port: u32) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    for (vs, ns, _) in bound_virtual_services(ctx, s) {
        chains.extend(sni_chains(ctx, vs, &ns, port, |_| true));
    }
    chains
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

/// The TLS context of a gateway server (reference: security §6.1): ISTIO_MUTUAL with the
/// gateway's workload identity (`default`/`ROOTCA` from its agent), client certificates
/// required and checked against `subjectAltNames`; `credentialName` as SDS secrets over the
/// ADS stream (`kubernetes://NAME`, and `kubernetes://NAME-cacert` for MUTUAL), which are
/// emitted when the control plane has them; else certificate files.
fn server_tls(
    ctx: &PushContext,
    tls: &mesh_model::networking::gateway::ServerTlsSettings,
    out: &mut dyn Sink,
) -> Option<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext> {
    use crate::credentials::{sds_ca_name, sds_name};
    use crate::security::tls as istio;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
        common_tls_context,
    };
    if tls.mode == ServerTlsMode::IstioMutual {
        return Some(istio::gateway_istio_mutual(&tls.subject_alt_names));
    }
    let names: Vec<&String> = tls
        .credential_name
        .iter()
        .chain(&tls.credential_names)
        .collect();
    if names.is_empty() {
        return downstream_tls(tls);
    }
    let ads = |name: String| SdsSecretConfig {
        name,
        sds_config: Some(crate::pb::ads_source(None)),
    };
    let mut common = CommonTlsContext {
        alpn_protocols: vec!["h2".into(), "http/1.1".into()],
        ..Default::default()
    };
    for n in &names {
        let sds = sds_name(n);
        if let Some(s) = ctx.credentials.get(&sds) {
            out.secret(s);
        }
        common.tls_certificate_sds_secret_configs.push(ads(sds));
    }
    let mutual = matches!(
        tls.mode,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if mutual {
        let ca = match &tls.ca_cert_credential_name {
            Some(c) => sds_name(c),
            None => sds_ca_name(names[0]),
        };
        if let Some(s) = ctx.credentials.get(&ca) {
            out.secret(s);
        }
        #[allow(deprecated)]
        let checks = CertificateValidationContext {
            match_subject_alt_names: tls
                .subject_alt_names
                .iter()
                .map(|s| envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
                    match_pattern: Some(
                        envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                            s.clone(),
                        ),
                    ),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(checks),
                    validation_context_sds_secret_config: Some(ads(ca)),
                    ..Default::default()
                },
            ),
        );
    }
    Some(DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(crate::pb::boolv(tls.mode == ServerTlsMode::Mutual)),
        ..Default::default()
    })
}
