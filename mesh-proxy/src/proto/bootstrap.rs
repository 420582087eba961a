//! Envoy's v3 `Bootstrap`: the node, the admin address, static clusters and listeners, ADS
//! with CDS and LDS over it, and the c-ares DNS resolvers. Everything else a bootstrap can set
//! is rejected with its field name.
//!
//! Accepted and ignored:
//! - `node.user_agent_name`, `user_agent_version_type`, `extensions`, `client_features`:
//!   descriptive (this proxy's xDS client sends its own).
//! - `admin.access_log`, `admin.profile_path`, `admin.ignore_global_conn_limit`.
//! - `layered_runtime` made of the usual empty layers (an empty `static_layer`, an
//!   `admin_layer`): with nothing in them every runtime key keeps its default.
//! - `application_log_config`: the format of Envoy's own log lines.

#![allow(deprecated)] // Envoy's deprecated fields are named (and checked) like the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::bootstrap::v3 as bs;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::network::dns_resolver::cares::v3::CaresDnsResolverConfig;

use super::cluster::cluster;
use super::common::{
    AddressKind, ads_config_source, at, bad_enum, decode, ip_address, is, metadata_struct,
    required, socket_address, unknown_type,
};
use super::endpoint::locality;
use super::listener::listener;
use super::{InvalidField, Within};
use crate::config::bootstrap::{AdsApi, AdsConfig, Bootstrap, Node};
use crate::config::endpoint::EndpointAddress;

/// Converts a bootstrap.
pub fn bootstrap(b: bs::Bootstrap) -> Result<Bootstrap, InvalidField> {
    let bs::Bootstrap {
        node,
        node_context_params,
        static_resources,
        dynamic_resources,
        cluster_manager,
        hds_config,
        flags_path,
        stats_sinks,
        deferred_stat_options,
        stats_config,
        stats_flush_interval,
        watchdog,
        watchdogs,
        tracing,
        layered_runtime,
        admin,
        overload_manager,
        enable_dispatcher_stats,
        header_prefix,
        stats_server_version_override,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        typed_dns_resolver_config,
        bootstrap_extensions,
        fatal_actions,
        config_sources,
        default_config_source,
        default_socket_interface,
        certificate_provider_instances,
        inline_headers,
        perf_tracing_file_path,
        default_regex_engine,
        xds_delegate_extension,
        xds_config_tracker_extension,
        listener_manager,
        application_log_config: _,
        grpc_async_client_manager_config,
        memory_allocator_manager,
        enable_worker_cpu_affinity,
        stats_flush,
        stats_eviction,
    } = b;
    unsupported_if_set!(
        node_context_params,
        cluster_manager,
        hds_config,
        flags_path,
        stats_sinks,
        deferred_stat_options,
        stats_config,
        stats_flush_interval,
        watchdog,
        watchdogs,
        tracing,
        overload_manager,
        enable_dispatcher_stats,
        header_prefix,
        stats_server_version_override,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        bootstrap_extensions,
        fatal_actions,
        config_sources,
        default_config_source,
        default_socket_interface,
        certificate_provider_instances,
        inline_headers,
        perf_tracing_file_path,
        default_regex_engine,
        xds_delegate_extension,
        xds_config_tracker_extension,
        listener_manager,
        grpc_async_client_manager_config,
        memory_allocator_manager,
        enable_worker_cpu_affinity,
        stats_flush,
        stats_eviction,
    );
    if let Some(r) = layered_runtime {
        runtime(r).within("layered_runtime")?;
    }
    let node = node
        .map(node_of)
        .transpose()
        .within("node")?
        .unwrap_or_default();
    let admin = admin.map(admin_of).transpose().within("admin")?.flatten();

    let (static_clusters, static_listeners) = match static_resources {
        None => (Vec::new(), Vec::new()),
        Some(bs::bootstrap::StaticResources {
            listeners,
            clusters,
            secrets,
        }) => {
            if !secrets.is_empty() {
                return Err(InvalidField::unsupported("static_resources.secrets"));
            }
            let clusters = clusters
                .into_iter()
                .enumerate()
                .map(|(i, c)| cluster(c).within(&at("static_resources.clusters", i)))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, c) in clusters.iter().enumerate() {
                if clusters[..i].iter().any(|o| o.name == c.name) {
                    return Err(InvalidField::invalid(
                        format!("{}.name", at("static_resources.clusters", i)),
                        format!("cluster manager: duplicate cluster '{}'", c.name),
                    ));
                }
            }
            let listeners = listeners
                .into_iter()
                .enumerate()
                .map(|(i, l)| listener(l).within(&at("static_resources.listeners", i)))
                .collect::<Result<Vec<_>, _>>()?;
            (clusters, listeners)
        }
    };
    let mut out = Bootstrap {
        node,
        admin,
        static_clusters,
        static_listeners,
        ads: None,
        cds_over_ads: false,
        lds_over_ads: false,
        cds_initial_fetch_timeout: None,
        lds_initial_fetch_timeout: None,
        dns_resolvers: Vec::new(),
    };
    if let Some(d) = dynamic_resources {
        dynamic(d, &mut out).within("dynamic_resources")?;
    }
    if let Some(ads) = &out.ads
        && !out.static_clusters.iter().any(|c| c.name == ads.cluster)
    {
        return Err(InvalidField::invalid(
            "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name",
            format!("Unknown gRPC client cluster '{}'", ads.cluster),
        ));
    }
    check_static_sds(&out)?;
    if (out.cds_over_ads || out.lds_over_ads) && out.ads.is_none() {
        return Err(InvalidField::invalid(
            "dynamic_resources.ads_config",
            "cds_config or lds_config uses ADS, but no ads_config is given",
        ));
    }
    if let Some(t) = typed_dns_resolver_config {
        out.dns_resolvers = dns_resolver(t).within("typed_dns_resolver_config")?;
    }
    Ok(out)
}

/// The SDS secrets of static listeners and clusters: over `api_config_source` they must come
/// from a static non-EDS cluster, over `ads` the bootstrap must have an ADS stream.
fn check_static_sds(b: &Bootstrap) -> Result<(), InvalidField> {
    use crate::config::tls::{SdsSecret, SdsSource, SecretKind};
    let check = |secrets: Vec<(SecretKind, &SdsSecret)>, at: String| {
        for (_, s) in secrets {
            match &s.config.source {
                SdsSource::Grpc { cluster, .. } => {
                    let ok = b
                        .static_clusters
                        .iter()
                        .any(|c| c.name == *cluster && c.discovery.eds_service_name().is_none());
                    if !ok {
                        return Err(InvalidField::invalid(
                            at,
                            format!(
                                "SDS secret '{}': envoy::config::core::v3::ApiConfigSource must have a statically defined non-EDS cluster: '{cluster}' does not exist, was added via api, or is an EDS cluster",
                                s.name
                            ),
                        ));
                    }
                }
                SdsSource::Ads if b.ads.is_none() => {
                    return Err(InvalidField::invalid(
                        at,
                        format!(
                            "SDS secret '{}' is fetched over ADS, but no ads_config is given",
                            s.name
                        ),
                    ));
                }
                SdsSource::Ads => {}
            }
        }
        Ok(())
    };
    for (i, l) in b.static_listeners.iter().enumerate() {
        check(l.sds_secrets(), at("static_resources.listeners", i))?;
    }
    for (i, c) in b.static_clusters.iter().enumerate() {
        check(c.sds_secrets(), at("static_resources.clusters", i))?;
    }
    Ok(())
}

fn node_of(n: core::Node) -> Result<Node, InvalidField> {
    let core::Node {
        id,
        cluster,
        metadata,
        dynamic_parameters,
        locality: loc,
        user_agent_name: _,
        extensions: _,
        client_features: _,
        listening_addresses,
        user_agent_version_type: _,
    } = n;
    unsupported_if_set!(dynamic_parameters, listening_addresses);
    Ok(Node {
        id,
        cluster,
        metadata: metadata.map(metadata_struct).unwrap_or_else(BTreeMap::new),
        locality: locality(loc),
    })
}

fn admin_of(a: bs::Admin) -> Result<Option<SocketAddr>, InvalidField> {
    let bs::Admin {
        access_log: _,
        access_log_path,
        profile_path: _,
        address,
        socket_options,
        ignore_global_conn_limit: _,
        allow_paths,
    } = a;
    unsupported_if_set!(access_log_path, socket_options, allow_paths);
    address.map(ip_address).transpose().within("address")
}

/// `layered_runtime`: only empty static layers and admin layers.
fn runtime(r: bs::LayeredRuntime) -> Result<(), InvalidField> {
    use bs::runtime_layer::LayerSpecifier as L;
    let bs::LayeredRuntime { layers } = r;
    for (i, l) in layers.into_iter().enumerate() {
        let bs::RuntimeLayer {
            name: _,
            layer_specifier,
        } = l;
        match layer_specifier {
            Some(L::StaticLayer(s)) if s.fields.is_empty() => {}
            Some(L::AdminLayer(bs::runtime_layer::AdminLayer {})) => {}
            Some(L::StaticLayer(_)) => {
                return Err(InvalidField::unsupported(format!(
                    "layers[{i}].static_layer"
                )));
            }
            Some(L::DiskLayer(_)) => {
                return Err(InvalidField::unsupported(format!("layers[{i}].disk_layer")));
            }
            Some(L::RtdsLayer(_)) => {
                return Err(InvalidField::unsupported(format!("layers[{i}].rtds_layer")));
            }
            None => return Err(required(&format!("layers[{i}].layer_specifier"))),
        }
    }
    Ok(())
}

fn dynamic(d: bs::bootstrap::DynamicResources, out: &mut Bootstrap) -> Result<(), InvalidField> {
    let bs::bootstrap::DynamicResources {
        lds_config,
        lds_resources_locator,
        cds_config,
        cds_resources_locator,
        ads_config,
    } = d;
    unsupported_if_set!(lds_resources_locator, cds_resources_locator);
    if let Some(a) = ads_config {
        out.ads = Some(ads(a).within("ads_config")?);
    }
    if let Some(c) = cds_config {
        out.cds_initial_fetch_timeout = ads_config_source(c).within("cds_config")?;
        out.cds_over_ads = true;
    }
    if let Some(l) = lds_config {
        out.lds_initial_fetch_timeout = ads_config_source(l).within("lds_config")?;
        out.lds_over_ads = true;
    }
    Ok(())
}

/// `ads_config`: gRPC (SotW or delta), V3, one Envoy gRPC service naming a static cluster.
pub(crate) fn ads(a: core::ApiConfigSource) -> Result<AdsConfig, InvalidField> {
    use core::api_config_source::ApiType;
    use core::grpc_service::TargetSpecifier;
    let core::ApiConfigSource {
        api_type,
        transport_api_version,
        cluster_names,
        grpc_services,
        refresh_delay,
        request_timeout,
        rate_limit_settings,
        set_node_on_first_message_only,
        config_validators,
    } = a;
    unsupported_if_set!(
        cluster_names,
        refresh_delay,
        request_timeout,
        rate_limit_settings,
        config_validators
    );
    let api = match ApiType::try_from(api_type) {
        Ok(ApiType::Grpc) => AdsApi::Sotw,
        Ok(ApiType::DeltaGrpc) => AdsApi::Delta,
        Ok(_) => return Err(InvalidField::unsupported("api_type")),
        Err(_) => return Err(bad_enum("api_type")),
    };
    if core::ApiVersion::try_from(transport_api_version) != Ok(core::ApiVersion::V3) {
        return Err(InvalidField::invalid(
            "transport_api_version",
            "only the V3 xDS transport protocol is supported",
        ));
    }
    let [service] = <[core::GrpcService; 1]>::try_from(grpc_services).map_err(|_| {
        InvalidField::invalid("grpc_services", "exactly one gRPC service is required")
    })?;
    let core::GrpcService {
        timeout,
        initial_metadata,
        retry_policy,
        target_specifier,
    } = service;
    let r: Result<String, InvalidField> = (|| {
        unsupported_if_set!(timeout, initial_metadata, retry_policy);
        match target_specifier {
            Some(TargetSpecifier::EnvoyGrpc(core::grpc_service::EnvoyGrpc {
                cluster_name,
                authority,
                retry_policy,
                max_receive_message_length,
                skip_envoy_headers,
            })) => {
                let r: Result<String, InvalidField> = (|| {
                    unsupported_if_set!(
                        authority,
                        retry_policy,
                        max_receive_message_length,
                        skip_envoy_headers
                    );
                    super::common::non_empty(cluster_name, "cluster_name")
                })();
                r.within("envoy_grpc")
            }
            Some(TargetSpecifier::GoogleGrpc(_)) => Err(InvalidField::unsupported("google_grpc")),
            None => Err(required("envoy_grpc")),
        }
    })();
    let cluster = r.within("grpc_services[0]")?;
    Ok(AdsConfig {
        api,
        cluster,
        set_node_on_first_message_only,
    })
}

/// `typed_dns_resolver_config`: c-ares with its resolvers (UDP or TCP socket addresses).
fn dns_resolver(t: core::TypedExtensionConfig) -> Result<Vec<SocketAddr>, InvalidField> {
    let core::TypedExtensionConfig {
        name: _,
        typed_config,
    } = t;
    let a = typed_config.ok_or_else(|| required("typed_config"))?;
    if !is::<CaresDnsResolverConfig>(&a) {
        return Err(unknown_type(&a).within("typed_config"));
    }
    let CaresDnsResolverConfig {
        resolvers,
        use_resolvers_as_fallback,
        filter_unroutable_families,
        dns_resolver_options,
        udp_max_queries,
        query_timeout_seconds,
        query_tries,
        rotate_nameservers,
        edns0_max_payload_size,
        max_udp_channel_duration,
        reinit_channel_on_timeout,
        qcache_max_ttl,
    } = decode(&a).within("typed_config")?;
    let r: Result<Vec<SocketAddr>, InvalidField> = (|| {
        unsupported_if_set!(
            use_resolvers_as_fallback,
            filter_unroutable_families,
            udp_max_queries,
            query_timeout_seconds,
            query_tries,
            rotate_nameservers,
            edns0_max_payload_size,
            max_udp_channel_duration,
            reinit_channel_on_timeout,
            qcache_max_ttl
        );
        if let Some(core::DnsResolverOptions {
            use_tcp_for_dns_lookups,
            no_default_search_domain,
        }) = dns_resolver_options
        {
            let r: Result<(), InvalidField> = (|| {
                unsupported_if_set!(use_tcp_for_dns_lookups, no_default_search_domain);
                Ok(())
            })();
            r.within("dns_resolver_options")?;
        }
        resolvers
            .into_iter()
            .enumerate()
            .map(|(i, r)| resolver(r).within(&at("resolvers", i)))
            .collect()
    })();
    r.within("typed_config")
}

fn resolver(a: core::Address) -> Result<SocketAddr, InvalidField> {
    use core::address::Address as A;
    let core::Address { address } = a;
    match address {
        Some(A::SocketAddress(s)) => {
            match socket_address(s, AddressKind::Ip, true).within("socket_address")? {
                EndpointAddress::Socket(a) => Ok(a),
                _ => Err(InvalidField::invalid("socket_address", "not an IP address")),
            }
        }
        Some(_) => Err(InvalidField::invalid(
            "",
            "DNS resolvers must be socket addresses",
        )),
        None => Err(required("socket_address")),
    }
}
