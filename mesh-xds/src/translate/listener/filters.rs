//! Filter, chain and listener-filter builders shared by every listener, and the references a
//! listener makes (for the consistency checks).

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    common_tls_context,
};
use mesh_model::networking::gateway::ServerTlsMode;
use prost::Message;

use crate::naming;
use crate::pb::{ads_source, any, boolv, file, pipe, socket};
use crate::translate::PushContext;
use crate::translate::route::{self};
use crate::translate::scope::SidecarScope;

pub(crate) const HCM: &str = "envoy.filters.network.http_connection_manager";

pub(crate) const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

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
pub(crate) fn hcm(
    ctx: &PushContext,
    stat_prefix: &str,
    route_config: &str,
    proxyless: bool,
    policies: &[HttpFilter],
) -> HttpConnectionManager {
    let mut filters = policies.to_vec();
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

pub(crate) fn listener_filter<M: Message + prost::Name>(name: &str, config: &M) -> ListenerFilter {
    ListenerFilter {
        name: name.into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

pub(crate) fn address_for(
    bind: &str,
    port: u32,
) -> envoy_types::pb::envoy::config::core::v3::Address {
    if bind.starts_with("unix://") {
        pipe(bind)
    } else {
        socket(bind, port)
    }
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

/// Every server name the chains match on.
pub(crate) fn server_names(chains: &[FilterChain]) -> BTreeSet<String> {
    chains
        .iter()
        .filter_map(|c| c.filter_chain_match.as_ref())
        .flat_map(|m| m.server_names.iter().cloned())
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
