//! Listeners (LDS resources and `static_resources.listeners`), their filter chains, listener
//! filters and network filters (`http_connection_manager`, `tcp_proxy`,
//! `sni_dynamic_forward_proxy`).
//!
//! API listeners (proxyless gRPC's `api_listener`) are rejected: library mode is a later
//! piece of work.
//!
//! Accepted and ignored:
//! - `Listener.stat_prefix`, `stats_matcher`, `metadata`, `access_log`; `FilterChain.metadata`;
//!   `TcpProxy.access_log`, `access_log_options`: stats and access logs.
//! - `Listener.enable_reuse_port`: how the kernel spreads connections over sockets.
//! - `Listener.ignore_global_conn_limit`, `bypass_overload_manager`: this proxy has neither a
//!   global connection limit nor an overload manager.
//! - `TlsInspector.enable_ja3_fingerprinting`, `enable_ja4_fingerprinting` (fingerprints for
//!   access logs) and `initial_read_buffer_size` (a buffer size hint).

#![allow(deprecated)] // Envoy's deprecated fields are named (and checked) like the others.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as ls;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager as HcmPb;
use envoy_types::pb::envoy::extensions::filters::network::sni_dynamic_forward_proxy::v3 as sni_dfp;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::google::protobuf as pbw;

use super::common::{
    at, at_least, bad_enum, bool_must_be, bool_or, cidrs, decode, ip_address, is, non_empty,
    opt_duration, port, required, timeout_or, type_name, u32_or, unknown_type,
};
use super::http::{dns_cache_config, http_connection_manager};
use super::tls::downstream_transport;
use super::{InvalidField, Within};
use crate::config::listener::{
    FilterChain, FilterChainMatch, FilterPredicate, Listener, ListenerFilters, NetworkFilter,
    SourceType, TcpCluster, TcpProxy, TerminalFilter, TrafficDirection,
};
use crate::config::matcher::Cidr;

/// Converts a listener.
pub fn listener(l: ls::Listener) -> Result<Listener, InvalidField> {
    let ls::Listener {
        name,
        address,
        additional_addresses,
        stat_prefix: _,
        stats_matcher: _,
        filter_chains,
        fcds_config,
        filter_chain_matcher,
        use_original_dst,
        default_filter_chain,
        per_connection_buffer_limit_bytes,
        per_connection_buffer_high_watermark_timeout,
        metadata: _,
        deprecated_v1,
        drain_type,
        listener_filters,
        listener_filters_timeout,
        continue_on_listener_filters_timeout,
        transparent,
        freebind,
        socket_options,
        tcp_fast_open_queue_length,
        traffic_direction,
        udp_listener_config,
        api_listener,
        connection_balance_config,
        reuse_port,
        enable_reuse_port: _,
        access_log: _,
        tcp_backlog_size,
        max_connections_to_accept_per_socket_event,
        bind_to_port,
        enable_mptcp,
        ignore_global_conn_limit: _,
        bypass_overload_manager: _,
        tcp_keepalive,
        listener_specifier,
    } = l;
    unsupported_if_set!(
        api_listener,
        additional_addresses,
        fcds_config,
        filter_chain_matcher,
        per_connection_buffer_high_watermark_timeout,
        deprecated_v1,
        drain_type,
        socket_options,
        tcp_fast_open_queue_length,
        udp_listener_config,
        connection_balance_config,
        reuse_port,
        tcp_backlog_size,
        max_connections_to_accept_per_socket_event,
        enable_mptcp,
        tcp_keepalive,
        listener_specifier,
    );
    bool_must_be(transparent, false, "transparent")?;
    bool_must_be(freebind, false, "freebind")?;
    let address = ip_address(address.ok_or_else(|| required("address"))?).within("address")?;
    let direction = match core::TrafficDirection::try_from(traffic_direction) {
        Ok(core::TrafficDirection::Unspecified) => TrafficDirection::Unspecified,
        Ok(core::TrafficDirection::Inbound) => TrafficDirection::Inbound,
        Ok(core::TrafficDirection::Outbound) => TrafficDirection::Outbound,
        Err(_) => return Err(bad_enum("traffic_direction")),
    };
    let mut filters = ListenerFilters::default();
    for (i, f) in listener_filters.into_iter().enumerate() {
        listener_filter(f, &mut filters).within(&at("listener_filters", i))?;
    }
    let filter_chains = filter_chains
        .into_iter()
        .enumerate()
        .map(|(i, c)| filter_chain(c, &address).within(&at("filter_chains", i)))
        .collect::<Result<Vec<_>, _>>()?;
    check_distinct(&filter_chains, &address)?;
    let default_filter_chain = match default_filter_chain {
        None => None,
        Some(c) => {
            if c.filter_chain_match.is_some() {
                return Err(InvalidField::unsupported(
                    "default_filter_chain.filter_chain_match",
                ));
            }
            Some(filter_chain(c, &address).within("default_filter_chain")?)
        }
    };
    Ok(Listener {
        name,
        address,
        bind_to_port: bool_or(bind_to_port, true),
        use_original_dst: bool_or(use_original_dst, false),
        listener_filters: filters,
        listener_filters_timeout: timeout_or(
            listener_filters_timeout,
            Some(Duration::from_secs(15)),
            "listener_filters_timeout",
        )?,
        continue_on_listener_filters_timeout,
        filter_chains: filter_chains.into_iter().map(Arc::new).collect(),
        default_filter_chain: default_filter_chain.map(Arc::new),
        per_connection_buffer_limit: u32_or(per_connection_buffer_limit_bytes, 1024 * 1024),
        direction,
    })
}

/// One listener filter, recorded in `out`.
fn listener_filter(f: ls::ListenerFilter, out: &mut ListenerFilters) -> Result<(), InvalidField> {
    use ls::listener_filter::ConfigType;
    let ls::ListenerFilter {
        name: _,
        filter_disabled,
        config_type,
    } = f;
    let disabled = filter_disabled
        .map(filter_predicate)
        .transpose()
        .within("filter_disabled")?;
    let a = match config_type {
        Some(ConfigType::TypedConfig(a)) => a,
        Some(ConfigType::ConfigDiscovery(_)) => {
            return Err(InvalidField::unsupported("config_discovery"));
        }
        None => return Err(required("typed_config")),
    };
    let (slot, disabled_slot) = if is::<TlsInspector>(&a) {
        let TlsInspector {
            enable_ja3_fingerprinting: _,
            enable_ja4_fingerprinting: _,
            initial_read_buffer_size: _,
            close_connection_on_client_hello_parsing_errors,
            max_client_hello_size,
        } = decode(&a).within("typed_config")?;
        let r: Result<(), InvalidField> = (|| {
            unsupported_if_set!(
                close_connection_on_client_hello_parsing_errors,
                max_client_hello_size
            );
            Ok(())
        })();
        r.within("typed_config")?;
        (&mut out.tls_inspector, &mut out.tls_inspector_disabled)
    } else if is::<HttpInspector>(&a) {
        let HttpInspector {} = decode(&a).within("typed_config")?;
        (&mut out.http_inspector, &mut out.http_inspector_disabled)
    } else if is::<OriginalDst>(&a) {
        let OriginalDst {} = decode(&a).within("typed_config")?;
        (&mut out.original_dst, &mut out.original_dst_disabled)
    } else {
        return Err(unknown_type(&a).within("typed_config"));
    };
    if std::mem::replace(slot, true) {
        return Err(InvalidField::invalid(
            "typed_config",
            format!("listener filter {} given twice", type_name(&a)),
        ));
    }
    *disabled_slot = disabled;
    Ok(())
}

/// `ListenerFilterChainMatchPredicate` (a listener filter's `filter_disabled`).
fn filter_predicate(
    p: ls::ListenerFilterChainMatchPredicate,
) -> Result<FilterPredicate, InvalidField> {
    use ls::listener_filter_chain_match_predicate::{MatchSet, Rule};
    let set = |m: MatchSet, field: &str| -> Result<Vec<FilterPredicate>, InvalidField> {
        let MatchSet { rules } = m;
        if rules.len() < 2 {
            return Err(InvalidField::invalid(
                format!("{field}.rules"),
                "value must contain at least 2 item(s)",
            ));
        }
        rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| filter_predicate(r).within(&at(&format!("{field}.rules"), i)))
            .collect()
    };
    match p.rule {
        Some(Rule::OrMatch(m)) => Ok(FilterPredicate::Or(set(m, "or_match")?)),
        Some(Rule::AndMatch(m)) => Ok(FilterPredicate::And(set(m, "and_match")?)),
        Some(Rule::NotMatch(n)) => Ok(FilterPredicate::Not(Box::new(
            filter_predicate(*n).within("not_match")?,
        ))),
        Some(Rule::AnyMatch(true)) => Ok(FilterPredicate::Any),
        Some(Rule::AnyMatch(false)) => {
            Err(InvalidField::invalid("any_match", "value must equal true"))
        }
        Some(Rule::DestinationPortRange(envoy_types::pb::envoy::r#type::v3::Int32Range {
            start,
            end,
        })) => {
            if start < 0 || !(0..=65536).contains(&end) {
                return Err(InvalidField::invalid(
                    "destination_port_range",
                    "ports must be in [0, 65536]",
                ));
            }
            Ok(FilterPredicate::DestinationPortRange {
                start: start.unsigned_abs(),
                end: end.unsigned_abs(),
            })
        }
        None => Err(required("rule")),
    }
}

fn filter_chain(c: ls::FilterChain, address: &SocketAddr) -> Result<FilterChain, InvalidField> {
    let ls::FilterChain {
        filter_chain_match,
        filters,
        use_proxy_proto,
        metadata: _,
        transport_socket,
        transport_socket_connect_timeout,
        name,
    } = c;
    unsupported_if_set!(use_proxy_proto, transport_socket_connect_timeout);
    let filter_chain_match = filter_chain_match
        .map(|m| chain_match(m, address))
        .transpose()
        .within("filter_chain_match")?
        .unwrap_or_default();
    let transport = downstream_transport(transport_socket).within("transport_socket")?;
    let count = filters.len();
    if count == 0 {
        return Err(InvalidField::invalid(
            "filters",
            "a filter chain needs a terminal filter (http_connection_manager or tcp_proxy)",
        ));
    }
    let mut non_terminal = Vec::new();
    let mut terminal = None;
    for (i, f) in filters.into_iter().enumerate() {
        let field = at("filters", i);
        let ls::Filter { name, config_type } = f;
        let a = match config_type {
            Some(ls::filter::ConfigType::TypedConfig(a)) => a,
            Some(ls::filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(InvalidField::unsupported(format!(
                    "{field}.config_discovery"
                )));
            }
            None => return Err(required(&format!("{field}.typed_config"))),
        };
        let last = i + 1 == count;
        match network_filter(&a).within(&format!("{field}.typed_config"))? {
            Filter::Terminal(t) => {
                if !last {
                    return Err(InvalidField::invalid(
                        &field,
                        format!(
                            "Error: terminal filter named {name} of type {} must be the last filter in a network filter chain.",
                            type_name(&a)
                        ),
                    ));
                }
                terminal = Some(t);
            }
            Filter::NonTerminal(f) => {
                if last {
                    return Err(InvalidField::invalid(
                        &field,
                        format!(
                            "Error: non-terminal filter named {name} of type {} is the last filter in a network filter chain.",
                            type_name(&a)
                        ),
                    ));
                }
                non_terminal.push(f);
            }
        }
    }
    let terminal = terminal.ok_or_else(|| required("filters"))?;
    if !non_terminal.is_empty() && !matches!(terminal, TerminalFilter::Tcp(_)) {
        return Err(InvalidField::invalid(
            "filters",
            "sni_dynamic_forward_proxy must be followed by tcp_proxy",
        ));
    }
    Ok(FilterChain {
        name,
        filter_chain_match,
        transport,
        filters: non_terminal,
        terminal,
    })
}

enum Filter {
    Terminal(TerminalFilter),
    NonTerminal(NetworkFilter),
}

fn network_filter(a: &pbw::Any) -> Result<Filter, InvalidField> {
    if is::<HcmPb>(a) {
        let h = http_connection_manager(decode(a)?)?;
        Ok(Filter::Terminal(TerminalFilter::Http(Arc::new(h))))
    } else if is::<tcp::TcpProxy>(a) {
        Ok(Filter::Terminal(TerminalFilter::Tcp(Arc::new(tcp_proxy(
            decode(a)?,
        )?))))
    } else if is::<sni_dfp::FilterConfig>(a) {
        Ok(Filter::NonTerminal(sni_dynamic_forward_proxy(decode(a)?)?))
    } else {
        Err(unknown_type(a))
    }
}

fn sni_dynamic_forward_proxy(f: sni_dfp::FilterConfig) -> Result<NetworkFilter, InvalidField> {
    use sni_dfp::filter_config::PortSpecifier;
    let sni_dfp::FilterConfig {
        dns_cache_config: cache,
        save_upstream_address,
        port_specifier,
    } = f;
    unsupported_if_set!(save_upstream_address);
    // The DNS cache must be present; it is shared with the cluster, which resolves the name.
    let cache = cache.ok_or_else(|| required("dns_cache_config"))?;
    dns_cache_config(cache).within("dns_cache_config")?;
    let port = match port_specifier {
        Some(PortSpecifier::PortValue(p)) => port(p, false, "port_value")?,
        None => return Err(required("port_value")),
    };
    Ok(NetworkFilter::SniDynamicForwardProxy { port })
}

fn tcp_proxy(t: tcp::TcpProxy) -> Result<TcpProxy, InvalidField> {
    use tcp::tcp_proxy::ClusterSpecifier;
    let tcp::TcpProxy {
        stat_prefix,
        on_demand,
        metadata_match,
        idle_timeout,
        downstream_idle_timeout,
        upstream_idle_timeout,
        access_log: _,
        max_connect_attempts,
        backoff_options,
        hash_policy,
        tunneling_config,
        max_downstream_connection_duration,
        max_downstream_connection_duration_jitter_percentage,
        access_log_flush_interval,
        flush_access_log_on_connected,
        access_log_options: _,
        proxy_protocol_tlvs,
        proxy_protocol_tlv_merge_policy,
        upstream_connect_mode,
        max_early_data_bytes,
        check_drain_close,
        cluster_specifier,
    } = t;
    let stat_prefix = non_empty(stat_prefix, "stat_prefix")?;
    unsupported_if_set!(
        on_demand,
        metadata_match,
        downstream_idle_timeout,
        upstream_idle_timeout,
        backoff_options,
        hash_policy,
        tunneling_config,
        max_downstream_connection_duration_jitter_percentage,
        access_log_flush_interval,
        flush_access_log_on_connected,
        proxy_protocol_tlvs,
        proxy_protocol_tlv_merge_policy,
        upstream_connect_mode,
        max_early_data_bytes,
        check_drain_close,
    );
    let cluster = match cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => TcpCluster::Cluster(non_empty(c, "cluster")?),
        Some(ClusterSpecifier::WeightedClusters(tcp::tcp_proxy::WeightedCluster { clusters })) => {
            if clusters.is_empty() {
                return Err(InvalidField::invalid(
                    "weighted_clusters.clusters",
                    "value must contain at least 1 item(s)",
                ));
            }
            let clusters = clusters
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let tcp::tcp_proxy::weighted_cluster::ClusterWeight {
                        name,
                        weight,
                        metadata_match,
                    } = c;
                    let r: Result<(String, u32), InvalidField> = (|| {
                        unsupported_if_set!(metadata_match);
                        Ok((non_empty(name, "name")?, at_least(weight, 1, "weight")?))
                    })();
                    r.within(&at("weighted_clusters.clusters", i))
                })
                .collect::<Result<Vec<_>, _>>()?;
            TcpCluster::Weighted(clusters)
        }
        None => return Err(required("cluster_specifier")),
    };
    Ok(TcpProxy {
        stat_prefix,
        cluster,
        idle_timeout: timeout_or(
            idle_timeout,
            Some(Duration::from_secs(3600)),
            "idle_timeout",
        )?,
        max_connect_attempts: at_least(u32_or(max_connect_attempts, 1), 1, "max_connect_attempts")?,
        max_downstream_connection_duration: opt_duration(
            max_downstream_connection_duration,
            "max_downstream_connection_duration",
        )?
        .filter(|d| !d.is_zero()),
    })
}

fn chain_match(
    m: ls::FilterChainMatch,
    address: &SocketAddr,
) -> Result<FilterChainMatch, InvalidField> {
    use ls::filter_chain_match::ConnectionSourceType as S;
    let ls::FilterChainMatch {
        destination_port,
        prefix_ranges,
        address_suffix,
        suffix_len,
        direct_source_prefix_ranges,
        source_type,
        source_prefix_ranges,
        source_ports,
        server_names,
        transport_protocol,
        application_protocols,
    } = m;
    unsupported_if_set!(address_suffix, suffix_len);
    let destination_port = destination_port
        .map(|p| port(p.value, false, "destination_port"))
        .transpose()?;
    for (i, n) in server_names.iter().enumerate() {
        if n.contains('*') && !n.starts_with("*.") {
            return Err(InvalidField::invalid(
                at("server_names", i),
                format!(
                    "error adding listener '{address}': partial wildcards are not supported in \"server_names\""
                ),
            ));
        }
    }
    let source_type = match S::try_from(source_type) {
        Ok(S::Any) => SourceType::Any,
        Ok(S::SameIpOrLoopback) => SourceType::SameIpOrLoopback,
        Ok(S::External) => SourceType::External,
        Err(_) => return Err(bad_enum("source_type")),
    };
    let source_ports = source_ports
        .iter()
        .enumerate()
        .map(|(i, p)| port(*p, false, &at("source_ports", i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FilterChainMatch {
        destination_port,
        prefix_ranges: cidrs(prefix_ranges, "prefix_ranges")?,
        server_names,
        transport_protocol: (!transport_protocol.is_empty()).then_some(transport_protocol),
        application_protocols,
        direct_source_prefix_ranges: cidrs(
            direct_source_prefix_ranges,
            "direct_source_prefix_ranges",
        )?,
        source_type,
        source_prefix_ranges: cidrs(source_prefix_ranges, "source_prefix_ranges")?,
        source_ports,
    })
}

/// One leaf of Envoy's filter chain lookup table: a value (or "any") per criterion.
type Leaf<'a> = (
    Option<u16>,
    Option<Cidr>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<Cidr>,
    u8,
    Option<Cidr>,
    Option<u16>,
);

/// Envoy refuses a listener where two filter chains share a leaf of its lookup table (the same
/// value, or "any", for every criterion).
fn check_distinct(chains: &[FilterChain], address: &SocketAddr) -> Result<(), InvalidField> {
    /// Above this many leaves for one chain the check is skipped (Envoy builds them all; a
    /// config that large is not worth the time here).
    const MAX_LEAVES: usize = 100_000;
    fn opt<T: Copy>(v: &[T]) -> Vec<Option<T>> {
        if v.is_empty() {
            vec![None]
        } else {
            v.iter().copied().map(Some).collect()
        }
    }
    fn strs(v: &[String]) -> Vec<Option<&str>> {
        if v.is_empty() {
            vec![None]
        } else {
            v.iter().map(|s| Some(s.as_str())).collect()
        }
    }
    for (i, a) in chains.iter().enumerate() {
        for b in &chains[..i] {
            if a.filter_chain_match == b.filter_chain_match {
                return Err(InvalidField::invalid(
                    at("filter_chains", i),
                    format!(
                        "error adding listener '{address}': filter chain '{}' has the same matching rules defined as '{}'",
                        a.name, b.name
                    ),
                ));
            }
        }
    }
    let mut seen: HashSet<Leaf<'_>> = HashSet::new();
    for (i, c) in chains.iter().enumerate() {
        let m = &c.filter_chain_match;
        let ports = [m.destination_port];
        let ranges = opt(&m.prefix_ranges);
        let names = strs(&m.server_names);
        let transport = [m.transport_protocol.as_deref()];
        let alpn = strs(&m.application_protocols);
        let direct = opt(&m.direct_source_prefix_ranges);
        let sources = opt(&m.source_prefix_ranges);
        let src_ports = opt(&m.source_ports);
        let source_type = m.source_type as u8;
        let leaves = [
            names.len(),
            alpn.len(),
            direct.len(),
            sources.len(),
            src_ports.len(),
        ]
        .iter()
        .fold(ranges.len(), |n, l| n.saturating_mul(*l));
        if leaves > MAX_LEAVES {
            continue;
        }
        for p in ports {
            for r in &ranges {
                for n in &names {
                    for t in transport {
                        for a in &alpn {
                            for d in &direct {
                                for s in &sources {
                                    for sp in &src_ports {
                                        let leaf = (p, *r, *n, t, *a, *d, source_type, *s, *sp);
                                        if !seen.insert(leaf) {
                                            return Err(InvalidField::invalid(
                                                at("filter_chains", i),
                                                format!(
                                                    "error adding listener '{address}': multiple filter chains with the same matching rules are defined"
                                                ),
                                            ));
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
