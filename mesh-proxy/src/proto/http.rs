//! The HTTP connection manager (`envoy.filters.network.http_connection_manager`), its HTTP
//! filters (router, fault, CORS, dynamic forward proxy), the filters' per-route configs, HTTP
//! protocol options and the dynamic forward proxy's DNS cache.
//!
//! Accepted and ignored:
//! - `HttpConnectionManager.access_log`, `access_log_options`: access logs are observability.
//! - `HttpConnectionManager.append_local_overload`: this proxy has no overload manager, so
//!   there is never a local overload to report.
//! - `Rds.config_source.initial_fetch_timeout`: the listener waits for its route table over ADS.
//! - `Router.dynamic_stats`, `upstream_log`, `upstream_log_options`,
//!   `suppress_grpc_request_failure_code_stats`: stats and logs.
//! - `HTTPFault.*_runtime` keys (no runtime: their defaults apply), `filter_metadata` (dynamic
//!   metadata for access logs), `disable_downstream_cluster_stats` (stats).
//! - `Http2ProtocolOptions.use_oghttp2_codec`, `enable_huffman_encoding`: codec implementation
//!   choices with the same wire semantics.

#![allow(deprecated)] // Envoy's deprecated fields are named (and checked) like the others.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3 as dfp_common;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as fault_common;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors_pb;
use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3 as dfp_http;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault_pb;
use envoy_types::pb::envoy::extensions::filters::http::router::v3 as router_pb;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm_pb;

use super::common::{
    ads_config_source, at, bad_enum, bool_must_be, bool_or, decode, fractional_percent,
    header_matchers, is, non_empty, opt_duration, positive_duration, required,
    runtime_fractional_percent, string_matcher, timeout_or, u32_or, unknown_type,
};
use super::route::route_configuration;
use super::{InvalidField, Within};
use crate::config::cluster::DnsLookupFamily;
use crate::config::http::{
    ClientCertDetails, Codec, DnsCacheConfig, ForwardClientCertDetails, Http2Keepalive,
    Http2Options, HttpConnectionManager, HttpFilter, RouteSource, RouterConfig,
    ServerHeaderTransformation,
};
use crate::config::matcher::FractionalPercent;
use crate::config::route::{
    CorsPolicy, FaultAbort, FaultAbortKind, FaultConfig, FaultDelay, FaultDelayKind,
};

/// The filter names Envoy uses in its terminal-filter messages.
const ROUTER: &str = "envoy.filters.http.router";

/// `HttpConnectionManager`.
pub(crate) fn http_connection_manager(
    h: hcm_pb::HttpConnectionManager,
) -> Result<HttpConnectionManager, InvalidField> {
    use hcm_pb::http_connection_manager::{
        CodecType, ForwardClientCertDetails as F, PathWithEscapedSlashesAction as P,
        RouteSpecifier, ServerHeaderTransformation as S,
    };
    let hcm_pb::HttpConnectionManager {
        codec_type,
        stat_prefix,
        http_filters,
        add_user_agent,
        tracing,
        common_http_protocol_options,
        http1_safe_max_connection_duration,
        http_protocol_options,
        http2_protocol_options,
        http3_protocol_options,
        server_name,
        server_header_transformation,
        scheme_header_transformation,
        max_request_headers_kb,
        stream_idle_timeout,
        stream_flush_timeout,
        request_timeout,
        request_headers_timeout,
        drain_timeout,
        drain_timeout_jitter,
        delayed_close_timeout,
        access_log: _,
        access_log_flush_interval,
        flush_access_log_on_new_request,
        access_log_options: _,
        use_remote_address,
        xff_num_trusted_hops,
        original_ip_detection_extensions,
        early_header_mutation_extensions,
        internal_address_config,
        skip_xff_append,
        via,
        generate_request_id,
        preserve_external_request_id,
        always_set_request_id_in_response,
        forward_client_cert_details,
        set_current_client_cert_details,
        forward_client_cert_matcher,
        proxy_100_continue,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
        upgrade_configs,
        normalize_path,
        merge_slashes,
        path_with_escaped_slashes_action,
        request_id_extension,
        local_reply_config,
        strip_matching_host_port,
        stream_error_on_invalid_http_message,
        path_normalization_options,
        strip_trailing_host_dot,
        proxy_status_config,
        typed_header_validation_config,
        append_x_forwarded_port,
        append_local_overload: _,
        add_proxy_protocol_connection_state,
        forward_proto_config,
        route_specifier,
        strip_port_mode,
    } = h;
    let stat_prefix = non_empty(stat_prefix, "stat_prefix")?;
    bool_must_be(add_user_agent, false, "add_user_agent")?;
    unsupported_if_set!(
        tracing,
        http1_safe_max_connection_duration,
        http3_protocol_options,
        scheme_header_transformation,
        stream_flush_timeout,
        drain_timeout_jitter,
        delayed_close_timeout,
        access_log_flush_interval,
        flush_access_log_on_new_request,
        original_ip_detection_extensions,
        early_header_mutation_extensions,
        forward_client_cert_matcher,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
        request_id_extension,
        local_reply_config,
        strip_matching_host_port,
        stream_error_on_invalid_http_message,
        path_normalization_options,
        strip_trailing_host_dot,
        proxy_status_config,
        typed_header_validation_config,
        append_x_forwarded_port,
        add_proxy_protocol_connection_state,
        forward_proto_config,
        strip_port_mode,
    );
    if let Some(hcm_pb::http_connection_manager::InternalAddressConfig {
        unix_sockets,
        cidr_ranges,
    }) = internal_address_config
    {
        // Only the default (nothing is internal) is supported.
        if unix_sockets || !cidr_ranges.is_empty() {
            return Err(InvalidField::unsupported("internal_address_config"));
        }
    }
    let codec = match CodecType::try_from(codec_type) {
        Ok(CodecType::Auto) => Codec::Auto,
        Ok(CodecType::Http1) => Codec::Http1,
        Ok(CodecType::Http2) => Codec::Http2,
        Ok(CodecType::Http3) => return Err(InvalidField::unsupported("codec_type")),
        Err(_) => return Err(bad_enum("codec_type")),
    };
    let routes = match route_specifier {
        Some(RouteSpecifier::Rds(hcm_pb::Rds {
            config_source,
            route_config_name,
        })) => {
            let source = config_source.ok_or_else(|| required("rds.config_source"))?;
            // The initial fetch timeout is accepted and ignored (see the module docs).
            ads_config_source(source).within("rds.config_source")?;
            RouteSource::Rds(non_empty(route_config_name, "rds.route_config_name")?)
        }
        Some(RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(route_configuration(rc).within("route_config")?))
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return Err(InvalidField::unsupported("scoped_routes"));
        }
        None => return Err(required("route_specifier")),
    };
    let http_filters = http_filters_of(http_filters)?;

    let mut idle_timeout = Some(Duration::from_secs(3600));
    let mut max_headers_count = 100;
    let mut max_stream_duration = None;
    if let Some(c) = common_http_protocol_options {
        let core::HttpProtocolOptions {
            idle_timeout: idle,
            max_connection_duration,
            max_connection_duration_jitter,
            max_headers_count: count,
            max_response_headers_kb,
            max_stream_duration: stream,
            headers_with_underscores_action,
            max_requests_per_connection,
        } = c;
        let r: Result<(), InvalidField> = (|| {
            unsupported_if_set!(
                max_connection_duration,
                max_connection_duration_jitter,
                max_response_headers_kb,
                headers_with_underscores_action,
                max_requests_per_connection
            );
            idle_timeout = timeout_or(idle, idle_timeout, "idle_timeout")?;
            max_headers_count =
                super::common::at_least(u32_or(count, 100), 1, "max_headers_count")?;
            max_stream_duration = timeout_or(stream, None, "max_stream_duration")?;
            Ok(())
        })();
        r.within("common_http_protocol_options")?;
    }
    if let Some(h1) = http_protocol_options {
        http1_options(h1).within("http_protocol_options")?;
    }
    let http2 = match http2_protocol_options {
        None => Http2Options::default(),
        Some(h2) => http2_options(h2).within("http2_protocol_options")?,
    };
    let max_request_headers_kb = u32_or(max_request_headers_kb, 60);
    if max_request_headers_kb == 0 || max_request_headers_kb > 8192 {
        return Err(InvalidField::invalid(
            "max_request_headers_kb",
            "value must be inside range (0, 8192]",
        ));
    }
    let server_header_transformation = match S::try_from(server_header_transformation) {
        Ok(S::Overwrite) => ServerHeaderTransformation::Overwrite,
        Ok(S::AppendIfAbsent) => ServerHeaderTransformation::AppendIfAbsent,
        Ok(S::PassThrough) => ServerHeaderTransformation::PassThrough,
        Err(_) => return Err(bad_enum("server_header_transformation")),
    };
    let set_current_client_cert_details = match set_current_client_cert_details {
        None => ClientCertDetails::default(),
        Some(hcm_pb::http_connection_manager::SetCurrentClientCertDetails {
            subject,
            cert,
            chain,
            dns,
            uri,
            issuer,
            format,
        }) => {
            if format != 0 {
                return Err(InvalidField::unsupported(
                    "set_current_client_cert_details.format",
                ));
            }
            if issuer {
                return Err(InvalidField::unsupported(
                    "set_current_client_cert_details.issuer",
                ));
            }
            // The URL-encoded PEM elements are not implemented.
            if cert {
                return Err(InvalidField::unsupported(
                    "set_current_client_cert_details.cert",
                ));
            }
            if chain {
                return Err(InvalidField::unsupported(
                    "set_current_client_cert_details.chain",
                ));
            }
            ClientCertDetails {
                subject: bool_or(subject, false),
                uri,
                dns,
            }
        }
    };
    let forward_client_cert_details = match F::try_from(forward_client_cert_details) {
        Ok(F::Sanitize) => ForwardClientCertDetails::Sanitize,
        Ok(F::ForwardOnly) => ForwardClientCertDetails::ForwardOnly,
        Ok(F::AppendForward) => ForwardClientCertDetails::AppendForward,
        Ok(F::SanitizeSet) => ForwardClientCertDetails::SanitizeSet,
        Ok(F::AlwaysForwardOnly) => ForwardClientCertDetails::AlwaysForwardOnly,
        Err(_) => return Err(bad_enum("forward_client_cert_details")),
    };
    match P::try_from(path_with_escaped_slashes_action) {
        Ok(P::ImplementationSpecificDefault | P::KeepUnchanged) => {}
        Ok(_) => {
            return Err(InvalidField::unsupported(
                "path_with_escaped_slashes_action",
            ));
        }
        Err(_) => return Err(bad_enum("path_with_escaped_slashes_action")),
    }
    let mut websocket = false;
    for (i, u) in upgrade_configs.into_iter().enumerate() {
        let hcm_pb::http_connection_manager::UpgradeConfig {
            upgrade_type,
            filters,
            enabled,
        } = u;
        let field = at("upgrade_configs", i);
        if !filters.is_empty() {
            return Err(InvalidField::unsupported(format!("{field}.filters")));
        }
        if !upgrade_type.eq_ignore_ascii_case("websocket") {
            return Err(InvalidField::invalid(
                format!("{field}.upgrade_type"),
                format!("upgrade type {upgrade_type:?} is not supported by mesh-proxy"),
            ));
        }
        websocket = bool_or(enabled, true);
    }
    Ok(HttpConnectionManager {
        stat_prefix,
        codec,
        routes,
        http_filters,
        stream_idle_timeout: timeout_or(
            stream_idle_timeout,
            Some(Duration::from_secs(300)),
            "stream_idle_timeout",
        )?,
        request_timeout: match timeout_or(request_timeout, None, "request_timeout")? {
            None => None,
            Some(_) => return Err(InvalidField::unsupported("request_timeout")),
        },
        request_headers_timeout: timeout_or(
            request_headers_timeout,
            None,
            "request_headers_timeout",
        )?,
        drain_timeout: opt_duration(drain_timeout, "drain_timeout")?
            .unwrap_or(Duration::from_secs(5)),
        max_request_headers_kb,
        idle_timeout,
        max_headers_count,
        max_stream_duration,
        use_remote_address: bool_or(use_remote_address, false),
        xff_num_trusted_hops,
        skip_xff_append,
        generate_request_id: bool_or(generate_request_id, true),
        preserve_external_request_id,
        always_set_request_id_in_response,
        server_name: if server_name.is_empty() {
            "envoy".to_string()
        } else {
            server_name
        },
        server_header_transformation,
        normalize_path: bool_or(normalize_path, false),
        merge_slashes,
        websocket,
        forward_client_cert_details,
        set_current_client_cert_details,
        via: (!via.is_empty()).then_some(via),
        http2,
        proxy_100_continue,
    })
}

/// What a known HTTP filter is, for the terminal-filter checks.
fn http_filters_of(list: Vec<hcm_pb::HttpFilter>) -> Result<Vec<HttpFilter>, InvalidField> {
    use hcm_pb::http_filter::ConfigType;
    if list.is_empty() {
        return Err(InvalidField::invalid(
            "http_filters",
            format!("no HTTP filters: the last one must be the router ({ROUTER})"),
        ));
    }
    let count = list.len();
    let mut out = Vec::with_capacity(count);
    for (i, f) in list.into_iter().enumerate() {
        let field = at("http_filters", i);
        let hcm_pb::HttpFilter {
            name,
            is_optional,
            disabled,
            config_type,
        } = f;
        let a = match config_type {
            Some(ConfigType::TypedConfig(a)) => a,
            Some(ConfigType::ConfigDiscovery(_)) => {
                return Err(InvalidField::unsupported(format!(
                    "{field}.config_discovery"
                )));
            }
            None => return Err(required(&format!("{field}.typed_config"))),
        };
        let filter = http_filter(&a).within(&format!("{field}.typed_config"))?;
        let last = i + 1 == count;
        let Some(filter) = filter else {
            if is_optional {
                // Envoy skips optional filters it does not know.
                continue;
            }
            return Err(unknown_type(&a).within(&format!("{field}.typed_config")));
        };
        let terminal = matches!(filter, HttpFilter::Router(_));
        if terminal && !last {
            return Err(InvalidField::invalid(
                &field,
                format!(
                    "Error: terminal filter named {name} of type {ROUTER} must be the last filter in a http filter chain."
                ),
            ));
        }
        if !terminal && last {
            return Err(InvalidField::invalid(
                &field,
                format!(
                    "Error: non-terminal filter named {name} of type {} is the last filter in a http filter chain.",
                    super::common::type_name(&a)
                ),
            ));
        }
        if disabled {
            if terminal {
                return Err(InvalidField::invalid(
                    format!("{field}.disabled"),
                    "the router cannot be disabled",
                ));
            }
            // A disabled filter runs only where a route enables it with a `FilterConfig`,
            // which routes of this proxy cannot carry (they reject it): it never runs.
            continue;
        }
        out.push(filter);
    }
    Ok(out)
}

/// An HTTP filter by its config type; `None` for a type this proxy does not know.
fn http_filter(
    a: &envoy_types::pb::google::protobuf::Any,
) -> Result<Option<HttpFilter>, InvalidField> {
    Ok(Some(if is::<router_pb::Router>(a) {
        HttpFilter::Router(router(decode(a)?)?)
    } else if is::<fault_pb::HttpFault>(a) {
        HttpFilter::Fault(Arc::new(fault(decode(a)?)?))
    } else if is::<cors_pb::Cors>(a) {
        let cors_pb::Cors {} = decode(a)?;
        HttpFilter::Cors(None)
    } else if is::<dfp_http::FilterConfig>(a) {
        HttpFilter::DynamicForwardProxy(dfp_filter(decode(a)?)?)
    } else {
        return Ok(None);
    }))
}

fn router(r: router_pb::Router) -> Result<RouterConfig, InvalidField> {
    let router_pb::Router {
        dynamic_stats: _,
        start_child_span,
        upstream_log: _,
        upstream_log_options: _,
        suppress_envoy_headers,
        strict_check_headers,
        respect_expected_rq_timeout,
        suppress_grpc_request_failure_code_stats: _,
        upstream_http_filters,
        reject_connect_request_early_data,
    } = r;
    unsupported_if_set!(
        strict_check_headers,
        respect_expected_rq_timeout,
        upstream_http_filters,
        reject_connect_request_early_data
    );
    Ok(RouterConfig {
        suppress_envoy_headers,
        start_child_span,
    })
}

fn dfp_filter(f: dfp_http::FilterConfig) -> Result<DnsCacheConfig, InvalidField> {
    use dfp_http::filter_config::ImplementationSpecifier as S;
    let dfp_http::FilterConfig {
        save_upstream_address,
        allow_dynamic_host_from_filter_state,
        implementation_specifier,
    } = f;
    unsupported_if_set!(save_upstream_address, allow_dynamic_host_from_filter_state);
    match implementation_specifier {
        Some(S::DnsCacheConfig(c)) => dns_cache_config(c).within("dns_cache_config"),
        Some(S::SubClusterConfig(_)) => Err(InvalidField::unsupported("sub_cluster_config")),
        None => Err(required("dns_cache_config")),
    }
}

/// `HTTPFault` (filter-level or per-route).
pub(crate) fn fault(f: fault_pb::HttpFault) -> Result<FaultConfig, InvalidField> {
    use fault_common::fault_delay::FaultDelaySecifier as D;
    use fault_pb::fault_abort::ErrorType as E;
    let fault_pb::HttpFault {
        delay,
        abort,
        upstream_cluster,
        headers,
        downstream_nodes,
        max_active_faults,
        response_rate_limit,
        delay_percent_runtime: _,
        abort_percent_runtime: _,
        delay_duration_runtime: _,
        abort_http_status_runtime: _,
        max_active_faults_runtime: _,
        response_rate_limit_percent_runtime: _,
        abort_grpc_status_runtime: _,
        disable_downstream_cluster_stats: _,
        filter_metadata: _,
    } = f;
    unsupported_if_set!(response_rate_limit);
    let pct = |p: Option<envoy_types::pb::envoy::r#type::v3::FractionalPercent>| {
        p.map(fractional_percent)
            .transpose()
            .map(|p| p.unwrap_or(FractionalPercent::NONE))
            .within("percentage")
    };
    let delay = match delay {
        None => None,
        Some(fault_common::FaultDelay {
            percentage,
            fault_delay_secifier,
        }) => {
            let r: Result<FaultDelay, InvalidField> = (|| {
                let kind = match fault_delay_secifier {
                    Some(D::FixedDelay(d)) => FaultDelayKind::Fixed(
                        opt_duration(Some(d), "fixed_delay")?.unwrap_or_default(),
                    ),
                    Some(D::HeaderDelay(fault_common::fault_delay::HeaderDelay {})) => {
                        FaultDelayKind::Header
                    }
                    None => return Err(required("fault_delay_secifier")),
                };
                Ok(FaultDelay {
                    kind,
                    percentage: pct(percentage)?,
                })
            })();
            Some(r.within("delay")?)
        }
    };
    let abort = match abort {
        None => None,
        Some(fault_pb::FaultAbort {
            percentage,
            response_body,
            error_type,
        }) => {
            let r: Result<FaultAbort, InvalidField> = (|| {
                unsupported_if_set!(response_body);
                let kind = match error_type {
                    Some(E::HttpStatus(s)) => {
                        let status = u16::try_from(s)
                            .ok()
                            .filter(|s| (200..600).contains(s))
                            .ok_or_else(|| {
                                InvalidField::invalid(
                                    "http_status",
                                    "value must be inside range [200, 600)",
                                )
                            })?;
                        FaultAbortKind::Http(status)
                    }
                    Some(E::GrpcStatus(g)) => FaultAbortKind::Grpc(g),
                    Some(E::HeaderAbort(fault_pb::fault_abort::HeaderAbort {})) => {
                        FaultAbortKind::Header
                    }
                    None => return Err(required("error_type")),
                };
                Ok(FaultAbort {
                    kind,
                    percentage: pct(percentage)?,
                })
            })();
            Some(r.within("abort")?)
        }
    };
    Ok(FaultConfig {
        delay,
        abort,
        upstream_cluster: (!upstream_cluster.is_empty()).then_some(upstream_cluster),
        headers: header_matchers(headers, "headers")?,
        downstream_nodes,
        max_active_faults: max_active_faults.map(|v| v.value),
    })
}

/// The CORS filter's per-route `CorsPolicy`.
pub(crate) fn cors(c: cors_pb::CorsPolicy) -> Result<CorsPolicy, InvalidField> {
    let cors_pb::CorsPolicy {
        allow_origin_string_match,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        filter_enabled,
        shadow_enabled,
        allow_private_network_access,
        forward_not_matching_preflights,
    } = c;
    let allow_origin = allow_origin_string_match
        .into_iter()
        .enumerate()
        .map(|(i, m)| string_matcher(m).within(&at("allow_origin_string_match", i)))
        .collect::<Result<Vec<_>, _>>()?;
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(CorsPolicy {
        allow_origin,
        allow_methods: some(allow_methods),
        allow_headers: some(allow_headers),
        expose_headers: some(expose_headers),
        max_age: some(max_age),
        allow_credentials: allow_credentials.map(|b| b.value),
        filter_enabled: filter_enabled
            .map(runtime_fractional_percent)
            .transpose()
            .within("filter_enabled")?
            .unwrap_or(FractionalPercent::ALL),
        shadow_enabled: shadow_enabled
            .map(runtime_fractional_percent)
            .transpose()
            .within("shadow_enabled")?,
        allow_private_network_access: bool_or(allow_private_network_access, false),
        forward_not_matching_preflights: bool_or(forward_not_matching_preflights, true),
    })
}

/// The dynamic forward proxy's `DnsCacheConfig`.
pub(crate) fn dns_cache_config(
    c: dfp_common::DnsCacheConfig,
) -> Result<DnsCacheConfig, InvalidField> {
    let dfp_common::DnsCacheConfig {
        name,
        dns_lookup_family: family,
        dns_refresh_rate,
        dns_min_refresh_rate,
        host_ttl,
        max_hosts,
        disable_dns_refresh_on_failure,
        dns_failure_refresh_rate,
        dns_cache_circuit_breaker,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        typed_dns_resolver_config,
        preresolve_hostnames,
        dns_query_timeout,
        key_value_config,
        resolved_address_filter,
    } = c;
    let name = non_empty(name, "name")?;
    unsupported_if_set!(
        dns_min_refresh_rate,
        host_ttl,
        disable_dns_refresh_on_failure,
        dns_failure_refresh_rate,
        dns_cache_circuit_breaker,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        typed_dns_resolver_config,
        preresolve_hostnames,
        dns_query_timeout,
        key_value_config,
        resolved_address_filter
    );
    let refresh_rate =
        positive_duration(dns_refresh_rate, "dns_refresh_rate")?.unwrap_or(Duration::from_secs(60));
    if refresh_rate < Duration::from_millis(1) {
        return Err(InvalidField::invalid(
            "dns_refresh_rate",
            "value must be greater than or equal to 1ms",
        ));
    }
    Ok(DnsCacheConfig {
        name,
        lookup_family: dns_lookup_family(family).within("dns_lookup_family")?,
        refresh_rate,
        max_hosts: super::common::at_least(u32_or(max_hosts, 1024), 1, "max_hosts")?,
    })
}

/// `Cluster.DnsLookupFamily`.
pub(crate) fn dns_lookup_family(v: i32) -> Result<DnsLookupFamily, InvalidField> {
    use cl::cluster::DnsLookupFamily as F;
    Ok(match F::try_from(v) {
        Ok(F::Auto) => DnsLookupFamily::Auto,
        Ok(F::V4Only) => DnsLookupFamily::V4Only,
        Ok(F::V6Only) => DnsLookupFamily::V6Only,
        Ok(F::V4Preferred) => DnsLookupFamily::V4Preferred,
        Ok(F::All) => DnsLookupFamily::All,
        Err(_) => return Err(bad_enum("")),
    })
}

/// `Http1ProtocolOptions`: only the defaults are supported.
pub(crate) fn http1_options(o: core::Http1ProtocolOptions) -> Result<(), InvalidField> {
    let core::Http1ProtocolOptions {
        allow_absolute_url,
        accept_http_10,
        default_host_for_http_10,
        header_key_format,
        enable_trailers,
        allow_chunked_length,
        override_stream_error_on_invalid_http_message,
        send_fully_qualified_url,
        use_balsa_parser,
        allow_custom_methods,
        ignore_http_11_upgrade,
    } = o;
    unsupported_if_set!(
        allow_absolute_url,
        accept_http_10,
        default_host_for_http_10,
        header_key_format,
        enable_trailers,
        allow_chunked_length,
        override_stream_error_on_invalid_http_message,
        send_fully_qualified_url,
        use_balsa_parser,
        allow_custom_methods,
        ignore_http_11_upgrade
    );
    Ok(())
}

/// `Http2ProtocolOptions`.
pub(crate) fn http2_options(o: core::Http2ProtocolOptions) -> Result<Http2Options, InvalidField> {
    let core::Http2ProtocolOptions {
        hpack_table_size,
        max_concurrent_streams,
        initial_stream_window_size,
        initial_connection_window_size,
        allow_connect,
        allow_metadata,
        max_outbound_frames,
        max_outbound_control_frames,
        max_consecutive_inbound_frames_with_empty_payload,
        max_inbound_priority_frames_per_stream,
        max_inbound_window_update_frames_per_data_frame_sent,
        stream_error_on_invalid_http_messaging,
        override_stream_error_on_invalid_http_message,
        custom_settings_parameters,
        connection_keepalive,
        use_oghttp2_codec: _,
        max_metadata_size,
        enable_huffman_encoding: _,
        max_header_field_size_kb,
        disallow_obs_text,
        stream_reset_burst,
        stream_reset_rate,
    } = o;
    unsupported_if_set!(
        hpack_table_size,
        allow_connect,
        allow_metadata,
        max_outbound_frames,
        max_outbound_control_frames,
        max_consecutive_inbound_frames_with_empty_payload,
        max_inbound_priority_frames_per_stream,
        max_inbound_window_update_frames_per_data_frame_sent,
        stream_error_on_invalid_http_messaging,
        override_stream_error_on_invalid_http_message,
        custom_settings_parameters,
        max_metadata_size,
        max_header_field_size_kb,
        disallow_obs_text,
        stream_reset_burst,
        stream_reset_rate
    );
    let d = Http2Options::default();
    let window = |v, default: u32, field: &str| {
        let v = u32_or(v, default);
        if (65_535..=2_147_483_647).contains(&v) {
            Ok(v)
        } else {
            Err(InvalidField::invalid(
                field,
                "value must be inside range [65535, 2147483647]",
            ))
        }
    };
    let max_concurrent_streams = u32_or(max_concurrent_streams, d.max_concurrent_streams);
    if !(1..=2_147_483_647).contains(&max_concurrent_streams) {
        return Err(InvalidField::invalid(
            "max_concurrent_streams",
            "value must be inside range [1, 2147483647]",
        ));
    }
    let keepalive = match connection_keepalive {
        None => None,
        Some(core::KeepaliveSettings {
            interval,
            timeout,
            interval_jitter,
            connection_idle_interval,
        }) => {
            let r: Result<Http2Keepalive, InvalidField> = (|| {
                unsupported_if_set!(interval_jitter, connection_idle_interval);
                let timeout =
                    opt_duration(timeout, "timeout")?.ok_or_else(|| required("timeout"))?;
                if timeout < Duration::from_millis(1) {
                    return Err(InvalidField::invalid(
                        "timeout",
                        "value must be greater than or equal to 1ms",
                    ));
                }
                let interval = opt_duration(interval, "interval")?.filter(|d| !d.is_zero());
                Ok(Http2Keepalive { interval, timeout })
            })();
            Some(r.within("connection_keepalive")?)
        }
    };
    Ok(Http2Options {
        max_concurrent_streams,
        initial_stream_window_size: window(
            initial_stream_window_size,
            d.initial_stream_window_size,
            "initial_stream_window_size",
        )?,
        initial_connection_window_size: window(
            initial_connection_window_size,
            d.initial_connection_window_size,
            "initial_connection_window_size",
        )?,
        keepalive,
    })
}
