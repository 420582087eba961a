//! Clusters (CDS resources and `static_resources.clusters`).
//!
//! Accepted and ignored:
//! - `alt_stat_name` is kept; `stats_matcher`, `track_cluster_stats` and `metadata` feed stats
//!   and access logs only.
//! - `circuit_breakers.thresholds[]` of priority HIGH: routes of this proxy always use the
//!   DEFAULT priority (a route with `priority: HIGH` is rejected), so HIGH thresholds can never
//!   apply.
//! - `common_lb_config.update_merge_window`: only batches host updates in time.
//! - `outlier_detection.successful_active_health_check_uneject_host`: no active health checks.
//! - `eds_cluster_config.eds_config.initial_fetch_timeout`: the cluster waits for its
//!   assignment over ADS.

#![allow(deprecated)] // Envoy's deprecated fields are named (and checked) like the others.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3 as dfp;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uhttp;

use super::common::{
    AddressKind, ads_config_source, at, at_least, at_most, bad_enum, bool_must_be, bool_or, decode,
    is, key, non_empty, opt_duration, percent, positive_duration, required, runtime_double,
    socket_ip, string_fields, timeout_or, u32_or, u64_or, unknown_type,
};
use super::endpoint::assignment;
use super::http::{dns_cache_config, dns_lookup_family, http1_options, http2_options};
use super::tls::upstream_transport;
use super::{InvalidField, Within};
use crate::config::cluster::{
    Cluster, Discovery, LbPolicy, OutlierDetection, SlowStart, TcpKeepalive, Thresholds,
    TransportSocketMatch, UpstreamHttp, UpstreamProtocol,
};
use crate::config::endpoint::LoadAssignment;
use crate::config::tls::UpstreamTransport;

/// The `typed_extension_protocol_options` key (and type) of the upstream HTTP options.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Converts a cluster.
pub fn cluster(c: cl::Cluster) -> Result<Cluster, InvalidField> {
    use cl::cluster::{ClusterDiscoveryType, DiscoveryType};
    let cl::Cluster {
        transport_socket_matches,
        transport_socket_matcher,
        name,
        alt_stat_name,
        stats_matcher: _,
        eds_cluster_config,
        connect_timeout,
        per_connection_buffer_limit_bytes,
        per_connection_buffer_high_watermark_timeout,
        lb_policy,
        load_assignment,
        health_checks,
        max_requests_per_connection,
        circuit_breakers,
        upstream_http_protocol_options,
        common_http_protocol_options,
        http_protocol_options,
        http2_protocol_options,
        typed_extension_protocol_options,
        dns_refresh_rate,
        dns_jitter,
        dns_failure_refresh_rate,
        respect_dns_ttl,
        dns_lookup_family: lookup_family,
        dns_resolvers,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        typed_dns_resolver_config,
        wait_for_warm_on_init,
        outlier_detection,
        cleanup_interval,
        upstream_bind_config,
        lb_subset_config,
        common_lb_config,
        transport_socket,
        metadata: _,
        protocol_selection,
        upstream_connection_options,
        close_connections_on_host_health_failure,
        ignore_health_on_host_removal,
        filters,
        load_balancing_policy,
        lrs_server,
        lrs_report_endpoint_metrics,
        track_timeout_budgets,
        upstream_config,
        track_cluster_stats: _,
        preconnect_policy,
        connection_pool_per_downstream_connection,
        queuing_policies,
        cluster_discovery_type,
        lb_config,
    } = c;
    let name = non_empty(name, "name")?;
    unsupported_if_set!(
        transport_socket_matcher,
        per_connection_buffer_high_watermark_timeout,
        health_checks,
        max_requests_per_connection,
        upstream_http_protocol_options,
        common_http_protocol_options,
        http_protocol_options,
        http2_protocol_options,
        dns_jitter,
        dns_failure_refresh_rate,
        respect_dns_ttl,
        dns_resolvers,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        typed_dns_resolver_config,
        lb_subset_config,
        protocol_selection,
        close_connections_on_host_health_failure,
        ignore_health_on_host_removal,
        filters,
        load_balancing_policy,
        lrs_server,
        lrs_report_endpoint_metrics,
        track_timeout_budgets,
        upstream_config,
        preconnect_policy,
        connection_pool_per_downstream_connection,
        queuing_policies,
    );
    bool_must_be(wait_for_warm_on_init, true, "wait_for_warm_on_init")?;

    // Discovery.
    let kind = match &cluster_discovery_type {
        None => Kind::Static,
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(*t) {
            Ok(DiscoveryType::Static) => Kind::Static,
            Ok(DiscoveryType::StrictDns) => Kind::StrictDns,
            Ok(DiscoveryType::LogicalDns) => Kind::LogicalDns,
            Ok(DiscoveryType::Eds) => Kind::Eds,
            Ok(DiscoveryType::OriginalDst) => Kind::OriginalDst,
            Err(_) => return Err(bad_enum("type")),
        },
        Some(ClusterDiscoveryType::ClusterType(_)) => Kind::Custom,
    };
    let lb_policy = lb(lb_policy, lb_config, kind)?;
    if kind != Kind::Eds && eds_cluster_config.is_some() {
        return Err(InvalidField::unsupported("eds_cluster_config"));
    }
    let discovery = match (kind, cluster_discovery_type) {
        (Kind::Custom, Some(ClusterDiscoveryType::ClusterType(t))) => {
            custom_cluster(t).within("cluster_type")?
        }
        (Kind::Eds, _) => {
            unsupported_if_set!(load_assignment);
            let service_name = match eds_cluster_config {
                None => {
                    return Err(InvalidField::invalid(
                        "eds_cluster_config",
                        "cannot create an EDS cluster without an EDS config",
                    ));
                }
                Some(cl::cluster::EdsClusterConfig {
                    eds_config,
                    service_name,
                }) => {
                    let source =
                        eds_config.ok_or_else(|| required("eds_cluster_config.eds_config"))?;
                    ads_config_source(source).within("eds_cluster_config.eds_config")?;
                    service_name
                }
            };
            Discovery::Eds {
                service_name: if service_name.is_empty() {
                    name.clone()
                } else {
                    service_name
                },
            }
        }
        (Kind::OriginalDst, _) => {
            unsupported_if_set!(load_assignment);
            let use_http_header = match &lb_policy {
                (_, Some(h)) => *h,
                _ => false,
            };
            Discovery::OriginalDst { use_http_header }
        }
        (Kind::Static | Kind::StrictDns | Kind::LogicalDns, _) => {
            let addresses = if kind == Kind::Static {
                AddressKind::Ip
            } else {
                AddressKind::IpOrDns
            };
            let cla = match load_assignment {
                Some(cla) => assignment(cla, addresses).within("load_assignment")?,
                None => LoadAssignment {
                    cluster_name: name.clone(),
                    overprovisioning_factor: 140,
                    ..Default::default()
                },
            };
            match kind {
                Kind::Static => Discovery::Static(cla),
                Kind::StrictDns => Discovery::StrictDns(cla),
                _ => {
                    let endpoints: usize = cla.localities.iter().map(|l| l.endpoints.len()).sum();
                    if cla.localities.len() != 1 || endpoints != 1 {
                        return Err(InvalidField::invalid(
                            "load_assignment",
                            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
                        ));
                    }
                    Discovery::LogicalDns(cla)
                }
            }
        }
        (Kind::Custom, _) => return Err(required("cluster_type")),
    };
    let lb_policy = lb_policy.0;

    let connect_timeout =
        positive_duration(connect_timeout, "connect_timeout")?.unwrap_or(Duration::from_secs(5));
    let (healthy_panic_threshold, locality_weighted) = match common_lb_config {
        None => (50.0, false),
        Some(c) => common_lb(c).within("common_lb_config")?,
    };
    let circuit_breakers = match circuit_breakers {
        None => Thresholds::default(),
        Some(c) => thresholds(c).within("circuit_breakers")?,
    };
    let outlier_detection = outlier_detection
        .map(outlier)
        .transpose()
        .within("outlier_detection")?;

    // Transport sockets, then the HTTP options (auto SNI lands in the TLS contexts).
    let mut transport = upstream_transport(transport_socket).within("transport_socket")?;
    let mut transport_socket_matches = transport_socket_matches
        .into_iter()
        .enumerate()
        .map(|(i, m)| socket_match(m).within(&at("transport_socket_matches", i)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut http = UpstreamHttp::default();
    let mut auto = (false, false);
    for (k, v) in typed_extension_protocol_options {
        let field = key("typed_extension_protocol_options", &k);
        if k != HTTP_PROTOCOL_OPTIONS || !is::<uhttp::HttpProtocolOptions>(&v) {
            return Err(unknown_type(&v).within(&field));
        }
        let options = decode(&v).within(&field)?;
        (http, auto) = upstream_http_options(options).within(&field)?;
    }
    for t in std::iter::once(&mut transport).chain(
        transport_socket_matches
            .iter_mut()
            .map(|m| &mut m.transport),
    ) {
        if let UpstreamTransport::Tls(tls) = t {
            tls.auto_sni = auto.0;
            tls.auto_san_validation = auto.1;
        }
    }

    let tcp_keepalive = match upstream_connection_options {
        None => None,
        Some(cl::UpstreamConnectionOptions {
            tcp_keepalive,
            set_local_interface_name_on_upstream_connections,
            happy_eyeballs_config,
        }) => {
            let r: Result<_, InvalidField> = (|| {
                unsupported_if_set!(
                    set_local_interface_name_on_upstream_connections,
                    happy_eyeballs_config
                );
                Ok(tcp_keepalive.map(keepalive))
            })();
            r.within("upstream_connection_options")?
        }
    };
    let upstream_bind = upstream_bind_config
        .map(bind_config)
        .transpose()
        .within("upstream_bind_config")?;
    let dns_lookup_family = dns_lookup_family(lookup_family).within("dns_lookup_family")?;
    let dns_refresh_rate =
        positive_duration(dns_refresh_rate, "dns_refresh_rate")?.unwrap_or(Duration::from_secs(5));
    let cleanup_interval =
        positive_duration(cleanup_interval, "cleanup_interval")?.unwrap_or(Duration::from_secs(5));
    Ok(Cluster {
        alt_stat_name: (!alt_stat_name.is_empty()).then_some(alt_stat_name),
        name,
        discovery,
        connect_timeout,
        lb_policy,
        healthy_panic_threshold,
        locality_weighted,
        circuit_breakers,
        outlier_detection,
        http,
        transport,
        transport_socket_matches,
        tcp_keepalive,
        upstream_bind,
        per_connection_buffer_limit: u32_or(per_connection_buffer_limit_bytes, 1024 * 1024),
        dns_lookup_family,
        dns_refresh_rate,
        cleanup_interval,
    })
}

/// The discovery kind of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Static,
    StrictDns,
    LogicalDns,
    Eds,
    OriginalDst,
    /// `cluster_type` (the dynamic forward proxy is the only one supported).
    Custom,
}

impl Kind {
    fn envoy_name(self) -> &'static str {
        match self {
            Kind::Static => "STATIC",
            Kind::StrictDns => "STRICT_DNS",
            Kind::LogicalDns => "LOGICAL_DNS",
            Kind::Eds => "EDS",
            Kind::OriginalDst => "ORIGINAL_DST",
            Kind::Custom => "envoy.clusters.dynamic_forward_proxy",
        }
    }
}

/// `cluster_type`: `envoy.clusters.dynamic_forward_proxy` with a DNS cache.
fn custom_cluster(t: cl::cluster::CustomClusterType) -> Result<Discovery, InvalidField> {
    use dfp::cluster_config::ClusterImplementationSpecifier as S;
    let cl::cluster::CustomClusterType {
        name: _,
        typed_config,
    } = t;
    let a = typed_config.ok_or_else(|| required("typed_config"))?;
    if !is::<dfp::ClusterConfig>(&a) {
        return Err(unknown_type(&a).within("typed_config"));
    }
    let dfp::ClusterConfig {
        allow_insecure_cluster_options,
        allow_coalesced_connections,
        cluster_implementation_specifier,
    } = decode(&a).within("typed_config")?;
    let r: Result<Discovery, InvalidField> = (|| {
        unsupported_if_set!(allow_insecure_cluster_options, allow_coalesced_connections);
        match cluster_implementation_specifier {
            Some(S::DnsCacheConfig(c)) => Ok(Discovery::DynamicForwardProxy(
                dns_cache_config(c).within("dns_cache_config")?,
            )),
            Some(S::SubClustersConfig(_)) => Err(InvalidField::unsupported("sub_clusters_config")),
            None => Err(required("dns_cache_config")),
        }
    })();
    r.within("typed_config")
}

/// `lb_policy` with its `lb_config`, checked against the cluster's type; also ORIGINAL_DST's
/// `use_http_header`.
fn lb(
    policy: i32,
    config: Option<cl::cluster::LbConfig>,
    kind: Kind,
) -> Result<(LbPolicy, Option<bool>), InvalidField> {
    use cl::cluster::LbConfig as C;
    use cl::cluster::LbPolicy as P;
    let policy = P::try_from(policy).map_err(|_| bad_enum("lb_policy"))?;
    let provided_only = matches!(kind, Kind::OriginalDst | Kind::Custom);
    if provided_only && policy != P::ClusterProvided {
        return Err(InvalidField::invalid(
            "lb_policy",
            format!(
                "cluster: LB policy {} is not valid for Cluster type {}. Only 'CLUSTER_PROVIDED' is allowed with cluster type '{}'",
                policy.as_str_name(),
                kind.envoy_name(),
                kind.envoy_name()
            ),
        ));
    }
    if !provided_only && policy == P::ClusterProvided {
        return Err(InvalidField::invalid(
            "lb_policy",
            format!(
                "cluster: LB policy CLUSTER_PROVIDED is not valid for Cluster type {}. 'CLUSTER_PROVIDED' is allowed only with cluster types 'ORIGINAL_DST' and 'envoy.clusters.dynamic_forward_proxy'",
                kind.envoy_name()
            ),
        ));
    }
    let mismatch = || {
        InvalidField::invalid(
            "lb_config",
            format!("does not apply to lb_policy {}", policy.as_str_name()),
        )
    };
    let out = match (policy, config) {
        (P::RoundRobin, None) => LbPolicy::RoundRobin { slow_start: None },
        (
            P::RoundRobin,
            Some(C::RoundRobinLbConfig(cl::cluster::RoundRobinLbConfig { slow_start_config })),
        ) => LbPolicy::RoundRobin {
            slow_start: slow_start(slow_start_config)
                .within("round_robin_lb_config.slow_start_config")?,
        },
        (P::LeastRequest, None) => LbPolicy::LeastRequest {
            choice_count: 2,
            active_request_bias: 1.0,
            slow_start: None,
        },
        (P::LeastRequest, Some(C::LeastRequestLbConfig(c))) => {
            least_request(c).within("least_request_lb_config")?
        }
        (P::Random, None) => LbPolicy::Random,
        (P::RingHash, None) => ring_hash(cl::cluster::RingHashLbConfig::default())?,
        (P::RingHash, Some(C::RingHashLbConfig(c))) => {
            ring_hash(c).within("ring_hash_lb_config")?
        }
        (P::Maglev, None) => LbPolicy::Maglev { table_size: 65537 },
        (P::Maglev, Some(C::MaglevLbConfig(c))) => maglev(c).within("maglev_lb_config")?,
        (P::ClusterProvided, None) => LbPolicy::ClusterProvided,
        (P::ClusterProvided, Some(C::OriginalDstLbConfig(c))) if kind == Kind::OriginalDst => {
            let cl::cluster::OriginalDstLbConfig {
                use_http_header,
                http_header_name,
                upstream_port_override,
                metadata_key,
            } = c;
            let r: Result<(), InvalidField> = (|| {
                unsupported_if_set!(http_header_name, upstream_port_override, metadata_key);
                Ok(())
            })();
            r.within("original_dst_lb_config")?;
            return Ok((LbPolicy::ClusterProvided, Some(use_http_header)));
        }
        (P::LoadBalancingPolicyConfig, _) => {
            return Err(InvalidField::unsupported("lb_policy"));
        }
        (_, Some(_)) => return Err(mismatch()),
    };
    Ok((out, None))
}

fn slow_start(s: Option<cl::cluster::SlowStartConfig>) -> Result<Option<SlowStart>, InvalidField> {
    let Some(cl::cluster::SlowStartConfig {
        slow_start_window,
        aggression,
        min_weight_percent,
    }) = s
    else {
        return Ok(None);
    };
    let Some(window) = opt_duration(slow_start_window, "slow_start_window")? else {
        return Ok(None);
    };
    let aggression = runtime_double(aggression, 1.0);
    if aggression <= 0.0 || !aggression.is_finite() {
        return Err(InvalidField::invalid(
            "aggression",
            "slow start aggression must be greater than 0",
        ));
    }
    let min_weight_percent = match min_weight_percent {
        None => 10.0,
        Some(p) => percent(&p, "min_weight_percent")?,
    };
    Ok(Some(SlowStart {
        window,
        aggression,
        min_weight_percent,
    }))
}

fn least_request(c: cl::cluster::LeastRequestLbConfig) -> Result<LbPolicy, InvalidField> {
    let cl::cluster::LeastRequestLbConfig {
        choice_count,
        active_request_bias,
        slow_start_config,
    } = c;
    let choice_count = at_least(u32_or(choice_count, 2), 2, "choice_count")?;
    let active_request_bias = runtime_double(active_request_bias, 1.0);
    if active_request_bias < 0.0 || !active_request_bias.is_finite() {
        return Err(InvalidField::invalid(
            "active_request_bias",
            format!("Invalid active_request_bias value: {active_request_bias}"),
        ));
    }
    Ok(LbPolicy::LeastRequest {
        choice_count,
        active_request_bias,
        slow_start: slow_start(slow_start_config).within("slow_start_config")?,
    })
}

fn ring_hash(c: cl::cluster::RingHashLbConfig) -> Result<LbPolicy, InvalidField> {
    use cl::cluster::ring_hash_lb_config::HashFunction;
    const MAX: u64 = 8 * 1024 * 1024;
    let cl::cluster::RingHashLbConfig {
        minimum_ring_size,
        hash_function,
        maximum_ring_size,
    } = c;
    let minimum_ring_size = u64_or(minimum_ring_size, 1024);
    let maximum_ring_size = u64_or(maximum_ring_size, MAX);
    if minimum_ring_size > MAX {
        return Err(InvalidField::invalid(
            "minimum_ring_size",
            format!("value must be less than or equal to {MAX}"),
        ));
    }
    if maximum_ring_size > MAX {
        return Err(InvalidField::invalid(
            "maximum_ring_size",
            format!("value must be less than or equal to {MAX}"),
        ));
    }
    if minimum_ring_size > maximum_ring_size {
        return Err(InvalidField::invalid(
            "minimum_ring_size",
            format!(
                "ring hash: minimum_ring_size ({minimum_ring_size}) > maximum_ring_size ({maximum_ring_size})"
            ),
        ));
    }
    let murmur = match HashFunction::try_from(hash_function) {
        Ok(HashFunction::XxHash) => false,
        Ok(HashFunction::MurmurHash2) => true,
        Err(_) => return Err(bad_enum("hash_function")),
    };
    Ok(LbPolicy::RingHash {
        minimum_ring_size,
        maximum_ring_size,
        murmur,
    })
}

fn maglev(c: cl::cluster::MaglevLbConfig) -> Result<LbPolicy, InvalidField> {
    let cl::cluster::MaglevLbConfig { table_size } = c;
    let table_size = u64_or(table_size, 65537);
    if table_size > 5_000_011 {
        return Err(InvalidField::invalid(
            "table_size",
            "value must be less than or equal to 5000011",
        ));
    }
    let prime = table_size >= 2
        && (2..)
            .take_while(|d: &u64| d * d <= table_size)
            .all(|d| !table_size.is_multiple_of(d));
    if !prime {
        return Err(InvalidField::invalid(
            "table_size",
            "The table size of maglev must be prime number",
        ));
    }
    Ok(LbPolicy::Maglev { table_size })
}

/// `common_lb_config`: the panic threshold and whether locality-weighted LB is on.
fn common_lb(c: cl::cluster::CommonLbConfig) -> Result<(f64, bool), InvalidField> {
    use cl::cluster::common_lb_config::LocalityConfigSpecifier as L;
    let cl::cluster::CommonLbConfig {
        healthy_panic_threshold,
        update_merge_window: _,
        ignore_new_hosts_until_first_hc,
        close_connections_on_host_set_change,
        consistent_hashing_lb_config,
        override_host_status,
        locality_config_specifier,
    } = c;
    unsupported_if_set!(
        ignore_new_hosts_until_first_hc,
        close_connections_on_host_set_change,
        consistent_hashing_lb_config,
        override_host_status
    );
    let panic = match healthy_panic_threshold {
        None => 50.0,
        Some(p) => percent(&p, "healthy_panic_threshold")?,
    };
    let weighted = match locality_config_specifier {
        None => false,
        Some(L::LocalityWeightedLbConfig(
            cl::cluster::common_lb_config::LocalityWeightedLbConfig {},
        )) => true,
        Some(L::ZoneAwareLbConfig(_)) => {
            return Err(InvalidField::unsupported("zone_aware_lb_config"));
        }
    };
    Ok((panic, weighted))
}

/// `circuit_breakers`: the first DEFAULT-priority thresholds (HIGH ones are accepted and
/// ignored: see the module docs).
fn thresholds(c: cl::CircuitBreakers) -> Result<Thresholds, InvalidField> {
    let cl::CircuitBreakers {
        thresholds,
        per_host_thresholds,
    } = c;
    unsupported_if_set!(per_host_thresholds);
    let mut out = None;
    for (i, t) in thresholds.into_iter().enumerate() {
        let field = at("thresholds", i);
        let converted = threshold(t).within(&field)?;
        if let (Some(th), None) = converted {
            out.get_or_insert(th);
        }
    }
    Ok(out.unwrap_or_default())
}

/// One `Thresholds`: `(Some, None)` for DEFAULT, `(None, Some(()))` for HIGH.
fn threshold(
    t: cl::circuit_breakers::Thresholds,
) -> Result<(Option<Thresholds>, Option<()>), InvalidField> {
    let cl::circuit_breakers::Thresholds {
        priority,
        max_connections,
        max_pending_requests,
        max_requests,
        max_retries,
        retry_budget,
        track_remaining,
        max_connection_pools,
    } = t;
    unsupported_if_set!(max_connection_pools);
    let high = match core::RoutingPriority::try_from(priority) {
        Ok(core::RoutingPriority::Default) => false,
        Ok(core::RoutingPriority::High) => true,
        Err(_) => return Err(bad_enum("priority")),
    };
    let retry_budget = match retry_budget {
        None => None,
        Some(cl::circuit_breakers::thresholds::RetryBudget {
            budget_percent,
            budget_interval,
            min_retry_concurrency,
        }) => {
            let r: Result<_, InvalidField> = (|| {
                unsupported_if_set!(budget_interval);
                let pct = match budget_percent {
                    None => 20.0,
                    Some(p) => percent(&p, "budget_percent")?,
                };
                Ok(Some((pct, u32_or(min_retry_concurrency, 3))))
            })();
            r.within("retry_budget")?
        }
    };
    let th = Thresholds {
        max_connections: u32_or(max_connections, 1024),
        max_pending_requests: u32_or(max_pending_requests, 1024),
        max_requests: u32_or(max_requests, 1024),
        max_retries: u32_or(max_retries, 3),
        retry_budget,
        track_remaining,
    };
    Ok(if high {
        (None, Some(()))
    } else {
        (Some(th), None)
    })
}

/// `outlier_detection`, with Envoy's defaults.
fn outlier(o: cl::OutlierDetection) -> Result<OutlierDetection, InvalidField> {
    let cl::OutlierDetection {
        consecutive_5xx,
        interval,
        base_ejection_time,
        max_ejection_percent,
        enforcing_consecutive_5xx,
        enforcing_success_rate,
        success_rate_minimum_hosts,
        success_rate_request_volume,
        success_rate_stdev_factor,
        consecutive_gateway_failure,
        enforcing_consecutive_gateway_failure,
        split_external_local_origin_errors,
        consecutive_local_origin_failure,
        enforcing_consecutive_local_origin_failure,
        enforcing_local_origin_success_rate,
        failure_percentage_threshold,
        enforcing_failure_percentage,
        enforcing_failure_percentage_local_origin,
        failure_percentage_minimum_hosts,
        failure_percentage_request_volume,
        max_ejection_time,
        max_ejection_time_jitter,
        successful_active_health_check_uneject_host: _,
        monitors,
        always_eject_one_host,
        detect_degraded_hosts,
    } = o;
    unsupported_if_set!(max_ejection_time_jitter, monitors);
    bool_must_be(detect_degraded_hosts, false, "detect_degraded_hosts")?;
    // Percentages of the detectors this proxy does not split further: only their defaults.
    if u32_or(enforcing_local_origin_success_rate, 100) != 100 {
        return Err(InvalidField::unsupported(
            "enforcing_local_origin_success_rate",
        ));
    }
    if u32_or(enforcing_failure_percentage_local_origin, 0) != 0 {
        return Err(InvalidField::unsupported(
            "enforcing_failure_percentage_local_origin",
        ));
    }
    let pct = |v, default, field: &str| at_most(u32_or(v, default), 100, field);
    let interval = positive_duration(interval, "interval")?.unwrap_or(Duration::from_secs(10));
    let base_ejection_time = positive_duration(base_ejection_time, "base_ejection_time")?
        .unwrap_or(Duration::from_secs(30));
    let max_ejection_time = positive_duration(max_ejection_time, "max_ejection_time")?
        .unwrap_or_else(|| base_ejection_time.max(Duration::from_secs(300)));
    if max_ejection_time < base_ejection_time {
        return Err(InvalidField::invalid(
            "max_ejection_time",
            "base_ejection_time must be less than or equal to max_ejection_time",
        ));
    }
    Ok(OutlierDetection {
        consecutive_5xx: u32_or(consecutive_5xx, 5),
        consecutive_gateway_failure: u32_or(consecutive_gateway_failure, 5),
        consecutive_local_origin_failure: u32_or(consecutive_local_origin_failure, 5),
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent: pct(max_ejection_percent, 10, "max_ejection_percent")?,
        enforcing_consecutive_5xx: pct(
            enforcing_consecutive_5xx,
            100,
            "enforcing_consecutive_5xx",
        )?,
        enforcing_consecutive_gateway_failure: pct(
            enforcing_consecutive_gateway_failure,
            0,
            "enforcing_consecutive_gateway_failure",
        )?,
        enforcing_consecutive_local_origin_failure: pct(
            enforcing_consecutive_local_origin_failure,
            100,
            "enforcing_consecutive_local_origin_failure",
        )?,
        enforcing_success_rate: pct(enforcing_success_rate, 100, "enforcing_success_rate")?,
        success_rate_minimum_hosts: u32_or(success_rate_minimum_hosts, 5),
        success_rate_request_volume: u32_or(success_rate_request_volume, 100),
        success_rate_stdev_factor: u32_or(success_rate_stdev_factor, 1900),
        enforcing_failure_percentage: pct(
            enforcing_failure_percentage,
            0,
            "enforcing_failure_percentage",
        )?,
        failure_percentage_threshold: pct(
            failure_percentage_threshold,
            85,
            "failure_percentage_threshold",
        )?,
        failure_percentage_minimum_hosts: u32_or(failure_percentage_minimum_hosts, 5),
        failure_percentage_request_volume: u32_or(failure_percentage_request_volume, 50),
        split_external_local_origin_errors,
        always_eject_one_host: bool_or(always_eject_one_host, false),
    })
}

/// `upstreams.http.v3.HttpProtocolOptions`: the upstream HTTP settings, and `(auto_sni,
/// auto_san_validation)`.
fn upstream_http_options(
    o: uhttp::HttpProtocolOptions,
) -> Result<(UpstreamHttp, (bool, bool)), InvalidField> {
    use uhttp::http_protocol_options::UpstreamProtocolOptions as U;
    use uhttp::http_protocol_options::explicit_http_config::ProtocolConfig as P;
    let uhttp::HttpProtocolOptions {
        common_http_protocol_options,
        upstream_http_protocol_options,
        http_filters,
        header_validation_config,
        outlier_detection,
        request_mirror_policies,
        hash_policy,
        retry_policy,
        upstream_protocol_options,
    } = o;
    unsupported_if_set!(
        http_filters,
        header_validation_config,
        outlier_detection,
        request_mirror_policies,
        hash_policy,
        retry_policy
    );
    let mut http = UpstreamHttp::default();
    if let Some(c) = common_http_protocol_options {
        let core::HttpProtocolOptions {
            idle_timeout,
            max_connection_duration,
            max_connection_duration_jitter,
            max_headers_count,
            max_response_headers_kb,
            max_stream_duration,
            headers_with_underscores_action,
            max_requests_per_connection,
        } = c;
        let r: Result<(), InvalidField> = (|| {
            unsupported_if_set!(
                max_connection_duration_jitter,
                max_response_headers_kb,
                max_stream_duration,
                headers_with_underscores_action
            );
            http.idle_timeout = timeout_or(
                idle_timeout,
                Some(Duration::from_secs(3600)),
                "idle_timeout",
            )?;
            http.max_connection_duration =
                timeout_or(max_connection_duration, None, "max_connection_duration")?;
            http.max_headers_count =
                at_least(u32_or(max_headers_count, 100), 1, "max_headers_count")?;
            http.max_requests_per_connection = max_requests_per_connection
                .map(|v| v.value)
                .filter(|v| *v > 0);
            Ok(())
        })();
        r.within("common_http_protocol_options")?;
    }
    let auto = match upstream_http_protocol_options {
        None => (false, false),
        Some(core::UpstreamHttpProtocolOptions {
            auto_sni,
            auto_san_validation,
            override_auto_sni_header,
        }) => {
            if !override_auto_sni_header.is_empty() {
                return Err(InvalidField::unsupported(
                    "upstream_http_protocol_options.override_auto_sni_header",
                ));
            }
            (auto_sni, auto_san_validation)
        }
    };
    match upstream_protocol_options {
        None => {}
        Some(U::ExplicitHttpConfig(uhttp::http_protocol_options::ExplicitHttpConfig {
            protocol_config,
        })) => match protocol_config {
            Some(P::HttpProtocolOptions(h1)) => {
                http1_options(h1).within("explicit_http_config.http_protocol_options")?;
                http.protocol = UpstreamProtocol::Http1;
            }
            Some(P::Http2ProtocolOptions(h2)) => {
                http.http2 =
                    http2_options(h2).within("explicit_http_config.http2_protocol_options")?;
                http.protocol = UpstreamProtocol::Http2;
            }
            Some(P::Http3ProtocolOptions(_)) => {
                return Err(InvalidField::unsupported(
                    "explicit_http_config.http3_protocol_options",
                ));
            }
            None => return Err(required("explicit_http_config.protocol_config")),
        },
        Some(U::UseDownstreamProtocolConfig(
            uhttp::http_protocol_options::UseDownstreamHttpConfig {
                http_protocol_options,
                http2_protocol_options,
                http3_protocol_options,
            },
        )) => {
            let r: Result<(), InvalidField> = (|| {
                unsupported_if_set!(http3_protocol_options);
                if let Some(h1) = http_protocol_options {
                    http1_options(h1).within("http_protocol_options")?;
                }
                if let Some(h2) = http2_protocol_options {
                    http.http2 = http2_options(h2).within("http2_protocol_options")?;
                }
                Ok(())
            })();
            r.within("use_downstream_protocol_config")?;
            http.protocol = UpstreamProtocol::Downstream;
        }
        Some(U::AutoConfig(uhttp::http_protocol_options::AutoHttpConfig {
            http_protocol_options,
            http2_protocol_options,
            http3_protocol_options,
            alternate_protocols_cache_options,
        })) => {
            let r: Result<(), InvalidField> = (|| {
                unsupported_if_set!(http3_protocol_options, alternate_protocols_cache_options);
                if let Some(h1) = http_protocol_options {
                    http1_options(h1).within("http_protocol_options")?;
                }
                if let Some(h2) = http2_protocol_options {
                    http.http2 = http2_options(h2).within("http2_protocol_options")?;
                }
                Ok(())
            })();
            r.within("auto_config")?;
            http.protocol = UpstreamProtocol::Auto;
        }
    }
    Ok((http, auto))
}

fn socket_match(
    m: cl::cluster::TransportSocketMatch,
) -> Result<TransportSocketMatch, InvalidField> {
    let cl::cluster::TransportSocketMatch {
        name,
        r#match,
        transport_socket,
    } = m;
    let name = non_empty(name, "name")?;
    let match_fields = match r#match {
        None => Vec::new(),
        Some(s) => string_fields(s, "match")?,
    };
    Ok(TransportSocketMatch {
        name,
        match_fields,
        transport: upstream_transport(transport_socket).within("transport_socket")?,
    })
}

fn keepalive(k: core::TcpKeepalive) -> TcpKeepalive {
    let core::TcpKeepalive {
        keepalive_probes,
        keepalive_time,
        keepalive_interval,
    } = k;
    TcpKeepalive {
        probes: keepalive_probes.map(|v| v.value),
        time: keepalive_time.map(|v| Duration::from_secs(u64::from(v.value))),
        interval: keepalive_interval.map(|v| Duration::from_secs(u64::from(v.value))),
    }
}

/// `upstream_bind_config`: a source IP (port 0 or a fixed port).
fn bind_config(b: core::BindConfig) -> Result<std::net::SocketAddr, InvalidField> {
    let core::BindConfig {
        source_address,
        freebind,
        socket_options,
        extra_source_addresses,
        additional_source_addresses,
        local_address_selector,
        validate_network_namespaces,
    } = b;
    bool_must_be(freebind, false, "freebind")?;
    unsupported_if_set!(
        socket_options,
        extra_source_addresses,
        additional_source_addresses,
        local_address_selector,
        validate_network_namespaces
    );
    let source = source_address.ok_or_else(|| required("source_address"))?;
    socket_ip(source).within("source_address")
}
