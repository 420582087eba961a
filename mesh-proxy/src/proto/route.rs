//! Route configurations (RDS resources and inline `route_config`s).
//!
//! Accepted and ignored:
//! - `RouteConfiguration.validate_clusters`: a load-time check of cluster names against the
//!   cluster manager (clusters a route names but that do not exist answer with
//!   `cluster_not_found_response_code` at request time, as with RDS's default).
//! - `metadata` on route configurations, virtual hosts and routes (Istio's `istio.config`),
//!   `VirtualHost.virtual_clusters`, `Route.stat_prefix`: stats and access logs.
//! - `Route.decorator`, `Route.tracing`, `RequestMirrorPolicy.trace_sampled`: tracing, which
//!   this proxy does not do (an HCM with `tracing` is rejected).
//! - `WeightedCluster.runtime_key_prefix`: no runtime, so the configured weights apply.

#![allow(deprecated)] // Envoy's deprecated fields are named (and checked) like the others.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors_pb;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault_pb;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::google::protobuf as pbw;

use super::common::{
    at, bad_enum, bool_or, decode, header_matchers, header_mutations, header_name, is, key,
    non_empty, opt_duration, port, query_parameter_matcher, regex, regex_rewrite, required,
    runtime_fractional_percent, timeout_or, u32_or, unknown_type,
};
use super::http::{cors, fault};
use super::{InvalidField, Within};
use crate::config::matcher::FractionalPercent;
use crate::config::route::{
    ClusterSpecifier, DirectResponse, ForwardAction, HashKind, HashPolicy, HostRewrite,
    MirrorPolicy, PathMatch, PathRedirect, PerFilterConfig, RedirectAction, RetryOn, RetryPolicy,
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    WeightedClusters,
};

/// Converts a route configuration.
pub fn route_configuration(r: rt::RouteConfiguration) -> Result<RouteConfiguration, InvalidField> {
    let rt::RouteConfiguration {
        name,
        virtual_hosts,
        vhds,
        internal_only_headers,
        response_headers_to_add,
        response_headers_to_remove,
        request_headers_to_add,
        request_headers_to_remove,
        most_specific_header_mutations_wins,
        validate_clusters: _,
        max_direct_response_body_size_bytes,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        metadata: _,
        route_specifiers,
    } = r;
    unsupported_if_set!(
        vhds,
        cluster_specifier_plugins,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        route_specifiers
    );
    let limits = Limits {
        max_body: u32_or(max_direct_response_body_size_bytes, 4096),
    };
    let headers = header_mutations(
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
    )?;
    let internal_only_headers = internal_only_headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_name(h, &at("internal_only_headers", i)))
        .collect::<Result<Vec<_>, _>>()?;
    let request_mirror_policies = mirrors(request_mirror_policies)?;
    let mut domains = Domains::default();
    let virtual_hosts = virtual_hosts
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let field = at("virtual_hosts", i);
            let vh = virtual_host(v, &limits).within(&field)?;
            for (j, d) in vh.domains.iter().enumerate() {
                domains
                    .add(d, &name)
                    .map_err(|m| InvalidField::invalid(format!("{field}.domains[{j}]"), m))?;
            }
            Ok(vh)
        })
        .collect::<Result<Vec<_>, InvalidField>>()?;
    Ok(RouteConfiguration {
        name,
        virtual_hosts,
        headers,
        most_specific_header_mutations_wins,
        ignore_port_in_host_matching,
        internal_only_headers,
        request_mirror_policies,
    })
}

/// Load-time limits from the route configuration.
struct Limits {
    max_body: u32,
}

/// Domains seen so far, for Envoy's uniqueness rule.
#[derive(Default)]
struct Domains {
    seen: BTreeSet<String>,
}

impl Domains {
    fn add(&mut self, domain: &str, route_config: &str) -> Result<(), String> {
        if self.seen.insert(domain.to_string()) {
            return Ok(());
        }
        Err(if domain == "*" {
            format!("Only a single wildcard domain is permitted in route {route_config}")
        } else {
            format!(
                "Only unique values for domains are permitted. Duplicate entry of domain {domain} in route {route_config}"
            )
        })
    }
}

fn virtual_host(v: rt::VirtualHost, limits: &Limits) -> Result<VirtualHost, InvalidField> {
    use rt::virtual_host::TlsRequirementType as T;
    let rt::VirtualHost {
        name,
        domains,
        routes,
        matcher,
        require_tls,
        virtual_clusters: _,
        rate_limits,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        cors,
        typed_per_filter_config,
        include_request_attempt_count,
        include_attempt_count_in_response,
        retry_policy,
        retry_policy_typed_config,
        hedge_policy,
        include_is_timeout_retry_header,
        per_request_buffer_limit_bytes,
        request_body_buffer_limit,
        request_mirror_policies,
        metadata: _,
        route_specifiers,
    } = v;
    let name = non_empty(name, "name")?;
    unsupported_if_set!(
        matcher,
        rate_limits,
        cors,
        retry_policy_typed_config,
        hedge_policy,
        include_is_timeout_retry_header,
        per_request_buffer_limit_bytes,
        request_body_buffer_limit,
        route_specifiers
    );
    if domains.is_empty() {
        return Err(InvalidField::invalid(
            "domains",
            "value must contain at least 1 item(s)",
        ));
    }
    let domains = domains
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            if d.is_empty() || d.bytes().any(|b| matches!(b, b'\0' | b'\r' | b'\n')) {
                Err(InvalidField::invalid(at("domains", i), "invalid domain"))
            } else {
                Ok(d.to_ascii_lowercase())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tls_redirect = match T::try_from(require_tls) {
        Ok(T::None) => None,
        Ok(T::ExternalOnly) => Some(tls_redirect(true)),
        Ok(T::All) => Some(tls_redirect(false)),
        Err(_) => return Err(bad_enum("require_tls")),
    };
    let routes = tls_redirect
        .map(Ok)
        .into_iter()
        .chain(
            routes
                .into_iter()
                .enumerate()
                .map(|(i, r)| route(r, limits).within(&at("routes", i))),
        )
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VirtualHost {
        name,
        domains,
        routes,
        headers: header_mutations(
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
        )?,
        retry_policy: retry_policy
            .map(retry)
            .transpose()
            .within("retry_policy")?
            .map(Arc::new),
        include_request_attempt_count,
        include_attempt_count_in_response,
        per_filter: per_filter(typed_per_filter_config)?,
        request_mirror_policies: mirrors(request_mirror_policies)?,
    })
}

/// `require_tls` as Envoy applies it, before any route: a request whose `x-forwarded-proto` (set
/// by the connection manager from the connection's TLS state) is not `https` gets a 301 to the
/// same URL over `https`; with `EXTERNAL_ONLY`, only when it is not internal
/// (`x-envoy-internal: true`).
fn tls_redirect(external_only: bool) -> Route {
    use crate::config::matcher::{HeaderMatch, HeaderMatcher, StringMatcher};
    let not = |name: &str, value: &str, missing_matches: bool| HeaderMatcher {
        name: name.into(),
        kind: HeaderMatch::String(StringMatcher::exact(value)),
        invert: true,
        treat_missing_as_empty: missing_matches,
    };
    // Without `x-forwarded-proto` Envoy finds no route at all; here the request goes on to the
    // virtual host's routes (the connection manager always sets the header).
    let mut headers = vec![not("x-forwarded-proto", "https", false)];
    if external_only {
        headers.push(not("x-envoy-internal", "true", true));
    }
    Route {
        name: String::new(),
        route_match: RouteMatch {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers,
            query_parameters: Vec::new(),
            grpc: false,
            runtime_fraction: None,
        },
        action: RouteAction::Redirect(Arc::new(RedirectAction {
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: PathRedirect::Keep,
            response_code: 301,
            strip_query: false,
        })),
        headers: Default::default(),
        per_filter: PerFilterConfig::default(),
    }
}

fn route(r: rt::Route, limits: &Limits) -> Result<Route, InvalidField> {
    use rt::route::Action;
    let rt::Route {
        name,
        r#match,
        metadata: _,
        decorator: _,
        typed_per_filter_config,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        tracing: _,
        per_request_buffer_limit_bytes,
        stat_prefix: _,
        request_body_buffer_limit,
        route_specifiers,
        action,
    } = r;
    unsupported_if_set!(
        per_request_buffer_limit_bytes,
        request_body_buffer_limit,
        route_specifiers
    );
    let m = r#match.ok_or_else(|| required("match"))?;
    let route_match = route_match(m).within("match")?;
    let action = match action {
        Some(Action::Route(a)) => RouteAction::Route(Arc::new(forward(a).within("route")?)),
        Some(Action::Redirect(a)) => {
            RouteAction::Redirect(Arc::new(redirect(a).within("redirect")?))
        }
        Some(Action::DirectResponse(a)) => RouteAction::DirectResponse(Arc::new(
            direct_response(a, limits).within("direct_response")?,
        )),
        Some(Action::FilterAction(_)) => return Err(InvalidField::unsupported("filter_action")),
        Some(Action::NonForwardingAction(_)) => {
            return Err(InvalidField::unsupported("non_forwarding_action"));
        }
        None => return Err(required("action")),
    };
    Ok(Route {
        name,
        route_match,
        action,
        headers: header_mutations(
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
        )?,
        per_filter: per_filter(typed_per_filter_config)?,
    })
}

fn route_match(m: rt::RouteMatch) -> Result<RouteMatch, InvalidField> {
    use rt::route_match::PathSpecifier as P;
    let rt::RouteMatch {
        case_sensitive,
        runtime_fraction,
        headers,
        query_parameters,
        cookies,
        grpc,
        tls_context,
        dynamic_metadata,
        filter_state,
        path_specifier,
    } = m;
    unsupported_if_set!(cookies, tls_context, dynamic_metadata, filter_state);
    let path = match path_specifier {
        Some(P::Prefix(p)) => PathMatch::Prefix(p),
        Some(P::Path(p)) => PathMatch::Exact(p),
        Some(P::SafeRegex(r)) => PathMatch::Regex(regex(r).within("safe_regex")?),
        Some(P::PathSeparatedPrefix(p)) => {
            // PGV: `^[^?#]+[^?#/]$`.
            let ok = p.len() >= 2 && !p.contains(['?', '#']) && !p.ends_with('/');
            if !ok {
                return Err(InvalidField::invalid(
                    "path_separated_prefix",
                    "value does not match regex pattern \"^[^?#]+[^?#/]$\"",
                ));
            }
            PathMatch::PathSeparatedPrefix(p)
        }
        Some(P::ConnectMatcher(_)) => return Err(InvalidField::unsupported("connect_matcher")),
        Some(P::PathMatchPolicy(_)) => return Err(InvalidField::unsupported("path_match_policy")),
        None => return Err(required("path_specifier")),
    };
    let query_parameters = query_parameters
        .into_iter()
        .enumerate()
        .map(|(i, q)| query_parameter_matcher(q).within(&at("query_parameters", i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteMatch {
        path,
        case_sensitive: bool_or(case_sensitive, true),
        headers: header_matchers(headers, "headers")?,
        query_parameters,
        grpc: grpc
            .map(|rt::route_match::GrpcRouteMatchOptions {}| ())
            .is_some(),
        runtime_fraction: runtime_fraction
            .map(runtime_fractional_percent)
            .transpose()
            .within("runtime_fraction")?,
    })
}

fn forward(a: rt::RouteAction) -> Result<ForwardAction, InvalidField> {
    use rt::route_action::HostRewriteSpecifier as H;
    use rt::route_action::{ClusterNotFoundResponseCode as Nf, ClusterSpecifier as C};
    let rt::RouteAction {
        cluster_not_found_response_code,
        metadata_match,
        prefix_rewrite,
        regex_rewrite: regex_rw,
        path_rewrite_policy,
        path_rewrite,
        append_x_forwarded_host,
        timeout,
        idle_timeout,
        flush_timeout,
        early_data_policy,
        retry_policy,
        retry_policy_typed_config,
        request_mirror_policies,
        priority,
        rate_limits,
        include_vh_rate_limits,
        hash_policy,
        cors,
        max_grpc_timeout,
        grpc_timeout_offset,
        upgrade_configs,
        internal_redirect_policy,
        internal_redirect_action,
        max_internal_redirects,
        hedge_policy,
        max_stream_duration,
        cluster_specifier,
        host_rewrite_specifier,
    } = a;
    unsupported_if_set!(
        metadata_match,
        path_rewrite_policy,
        path_rewrite,
        append_x_forwarded_host,
        flush_timeout,
        early_data_policy,
        retry_policy_typed_config,
        priority,
        rate_limits,
        include_vh_rate_limits,
        cors,
        max_grpc_timeout,
        grpc_timeout_offset,
        internal_redirect_policy,
        internal_redirect_action,
        max_internal_redirects,
        hedge_policy,
    );
    let cluster = match cluster_specifier {
        Some(C::Cluster(c)) => ClusterSpecifier::Cluster(non_empty(c, "cluster")?),
        Some(C::ClusterHeader(h)) => ClusterSpecifier::Header(header_name(&h, "cluster_header")?),
        Some(C::WeightedClusters(w)) => {
            ClusterSpecifier::Weighted(weighted(w).within("weighted_clusters")?)
        }
        Some(C::ClusterSpecifierPlugin(_)) => {
            return Err(InvalidField::unsupported("cluster_specifier_plugin"));
        }
        Some(C::InlineClusterSpecifierPlugin(_)) => {
            return Err(InvalidField::unsupported("inline_cluster_specifier_plugin"));
        }
        None => return Err(required("cluster_specifier")),
    };
    let cluster_not_found_response_code = match Nf::try_from(cluster_not_found_response_code) {
        Ok(Nf::ServiceUnavailable) => 503,
        Ok(Nf::NotFound) => 404,
        Ok(Nf::InternalServerError) => 500,
        Err(_) => return Err(bad_enum("cluster_not_found_response_code")),
    };
    let host_rewrite = match host_rewrite_specifier {
        None => HostRewrite::None,
        Some(H::HostRewriteLiteral(h)) => HostRewrite::Literal(h),
        Some(H::AutoHostRewrite(b)) => {
            if b.value {
                HostRewrite::Auto
            } else {
                HostRewrite::None
            }
        }
        Some(H::HostRewriteHeader(h)) => {
            HostRewrite::Header(header_name(&h, "host_rewrite_header")?)
        }
        Some(H::HostRewritePathRegex(r)) => {
            let (re, sub) = regex_rewrite(r).within("host_rewrite_path_regex")?;
            HostRewrite::PathRegex(re, sub)
        }
        Some(H::HostRewrite(_)) => return Err(InvalidField::unsupported("host_rewrite")),
    };
    let (max_stream_duration, grpc_timeout_header_max) = match max_stream_duration {
        None => (None, None),
        Some(rt::route_action::MaxStreamDuration {
            max_stream_duration,
            grpc_timeout_header_max,
            grpc_timeout_header_offset,
        }) => {
            let r: Result<_, InvalidField> = (|| {
                unsupported_if_set!(grpc_timeout_header_offset);
                let max = timeout_or(max_stream_duration, None, "max_stream_duration")?;
                let grpc = opt_duration(grpc_timeout_header_max, "grpc_timeout_header_max")?
                    .map(|d| (!d.is_zero()).then_some(d));
                Ok((max, grpc))
            })();
            r.within("max_stream_duration")?
        }
    };
    let mut upgrade_websocket = None;
    for (i, u) in upgrade_configs.into_iter().enumerate() {
        let rt::route_action::UpgradeConfig {
            upgrade_type,
            enabled,
            connect_config,
        } = u;
        let field = at("upgrade_configs", i);
        if connect_config.is_some() {
            return Err(InvalidField::unsupported(format!("{field}.connect_config")));
        }
        if !upgrade_type.eq_ignore_ascii_case("websocket") {
            return Err(InvalidField::invalid(
                format!("{field}.upgrade_type"),
                format!("upgrade type {upgrade_type:?} is not supported by mesh-proxy"),
            ));
        }
        upgrade_websocket = Some(bool_or(enabled, true));
    }
    let hash_policy = hash_policy
        .into_iter()
        .enumerate()
        .map(|(i, h)| hash(h).within(&at("hash_policy", i)))
        .collect::<Result<Vec<_>, _>>()?;
    let request_mirror_policies = mirrors(request_mirror_policies)?;
    Ok(ForwardAction {
        cluster,
        cluster_not_found_response_code,
        timeout: timeout_or(timeout, Some(Duration::from_secs(15)), "timeout")?,
        idle_timeout: opt_duration(idle_timeout, "idle_timeout")?
            .map(|d| (!d.is_zero()).then_some(d)),
        retry_policy: retry_policy
            .map(retry)
            .transpose()
            .within("retry_policy")?
            .map(Arc::new),
        hash_policy,
        prefix_rewrite: (!prefix_rewrite.is_empty()).then_some(prefix_rewrite),
        regex_rewrite: regex_rw
            .map(regex_rewrite)
            .transpose()
            .within("regex_rewrite")?,
        host_rewrite,
        request_mirror_policies: (!request_mirror_policies.is_empty())
            .then_some(request_mirror_policies),
        max_stream_duration,
        grpc_timeout_header_max,
        upgrade_websocket,
    })
}

fn weighted(w: rt::WeightedCluster) -> Result<WeightedClusters, InvalidField> {
    use rt::weighted_cluster::RandomValueSpecifier as R;
    use rt::weighted_cluster::cluster_weight::HostRewriteSpecifier as H;
    let rt::WeightedCluster {
        clusters,
        total_weight,
        runtime_key_prefix: _,
        random_value_specifier,
    } = w;
    unsupported_if_set!(total_weight);
    if clusters.is_empty() {
        return Err(InvalidField::invalid(
            "clusters",
            "value must contain at least 1 item(s)",
        ));
    }
    let header_name_ = match random_value_specifier {
        None => None,
        Some(R::HeaderName(h)) => Some(header_name(&h, "header_name")?),
        Some(R::UseHashPolicy(b)) => {
            if b.value {
                return Err(InvalidField::unsupported("use_hash_policy"));
            }
            None
        }
    };
    let mut total: u64 = 0;
    let clusters = clusters
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let rt::weighted_cluster::ClusterWeight {
                name,
                cluster_header,
                weight,
                metadata_match,
                request_headers_to_add,
                request_headers_to_remove,
                response_headers_to_add,
                response_headers_to_remove,
                typed_per_filter_config,
                host_rewrite_specifier,
            } = c;
            let r: Result<WeightedCluster, InvalidField> = (|| {
                unsupported_if_set!(cluster_header, metadata_match);
                if name.is_empty() {
                    return Err(InvalidField::invalid(
                        "name",
                        "At least one of name or cluster_header need to be specified",
                    ));
                }
                let weight = u32_or(weight, 0);
                total += u64::from(weight);
                Ok(WeightedCluster {
                    name,
                    weight,
                    headers: header_mutations(
                        request_headers_to_add,
                        request_headers_to_remove,
                        response_headers_to_add,
                        response_headers_to_remove,
                    )?,
                    host_rewrite_literal: host_rewrite_specifier.map(|H::HostRewriteLiteral(h)| h),
                    per_filter: per_filter(typed_per_filter_config)?,
                })
            })();
            r.within(&at("clusters", i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if total == 0 {
        return Err(InvalidField::invalid(
            "clusters",
            "Sum of weights in the weighted_cluster must be greater than 0.",
        ));
    }
    if total > u64::from(u32::MAX) {
        return Err(InvalidField::invalid(
            "clusters",
            format!(
                "The sum of weights of all weighted clusters of route exceeds {}",
                u32::MAX
            ),
        ));
    }
    Ok(WeightedClusters {
        clusters,
        header_name: header_name_,
    })
}

/// `RetryPolicy`.
fn retry(r: rt::RetryPolicy) -> Result<RetryPolicy, InvalidField> {
    let rt::RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        per_try_idle_timeout,
        retry_priority,
        retry_host_predicate,
        retry_options_predicates,
        host_selection_retry_max_attempts,
        retriable_status_codes,
        retry_back_off,
        rate_limited_retry_back_off,
        retriable_headers,
        retriable_request_headers,
        refresh_cluster_on_retry,
    } = r;
    unsupported_if_set!(
        retry_options_predicates,
        rate_limited_retry_back_off,
        refresh_cluster_on_retry
    );
    let retry_on = RetryOn::parse(&retry_on).map_err(|bad| {
        InvalidField::invalid("retry_on", format!("unknown retry_on value {bad:?}"))
    })?;
    let mut previous_hosts = false;
    for (i, p) in retry_host_predicate.into_iter().enumerate() {
        let field = at("retry_host_predicate", i);
        let rt::retry_policy::RetryHostPredicate {
            name: _,
            config_type,
        } = p;
        match config_type {
            Some(rt::retry_policy::retry_host_predicate::ConfigType::TypedConfig(a)) => {
                if !is::<PreviousHostsPredicate>(&a) {
                    return Err(unknown_type(&a).within(&format!("{field}.typed_config")));
                }
                let PreviousHostsPredicate {} =
                    decode(&a).within(&format!("{field}.typed_config"))?;
                previous_hosts = true;
            }
            None => return Err(required(&format!("{field}.typed_config"))),
        }
    }
    let previous_priorities = match retry_priority {
        None => None,
        Some(rt::retry_policy::RetryPriority {
            name: _,
            config_type,
        }) => match config_type {
            Some(rt::retry_policy::retry_priority::ConfigType::TypedConfig(a)) => {
                if !is::<PreviousPrioritiesConfig>(&a) {
                    return Err(unknown_type(&a).within("retry_priority.typed_config"));
                }
                let PreviousPrioritiesConfig { update_frequency } =
                    decode(&a).within("retry_priority.typed_config")?;
                let f = u32::try_from(update_frequency)
                    .ok()
                    .filter(|f| *f > 0)
                    .ok_or_else(|| {
                        InvalidField::invalid(
                            "retry_priority.typed_config.update_frequency",
                            "value must be greater than 0",
                        )
                    })?;
                Some(f)
            }
            None => return Err(required("retry_priority.typed_config")),
        },
    };
    let host_selection_retry_max_attempts = match host_selection_retry_max_attempts {
        0 => 1,
        n => u32::try_from(n).map_err(|_| {
            InvalidField::invalid(
                "host_selection_retry_max_attempts",
                "value must be between 0 and 4294967295",
            )
        })?,
    };
    let retriable_status_codes = retriable_status_codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            u16::try_from(*c).map_err(|_| {
                InvalidField::invalid(at("retriable_status_codes", i), "not an HTTP status code")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (base_interval, max_interval) = match retry_back_off {
        None => (Duration::from_millis(25), Duration::from_millis(250)),
        Some(rt::retry_policy::RetryBackOff {
            base_interval,
            max_interval,
        }) => {
            let base = opt_duration(base_interval, "retry_back_off.base_interval")?
                .ok_or_else(|| required("retry_back_off.base_interval"))?;
            if base.is_zero() {
                return Err(InvalidField::invalid(
                    "retry_back_off.base_interval",
                    "value must be greater than 0s",
                ));
            }
            // Envoy rounds intervals under 1 ms up to 1 ms.
            let base = base.max(Duration::from_millis(1));
            let max = match opt_duration(max_interval, "retry_back_off.max_interval")? {
                None => base.checked_mul(10).unwrap_or(Duration::MAX),
                Some(m) if m.is_zero() => {
                    return Err(InvalidField::invalid(
                        "retry_back_off.max_interval",
                        "value must be greater than 0s",
                    ));
                }
                Some(m) => m.max(Duration::from_millis(1)),
            };
            if max < base {
                return Err(InvalidField::invalid(
                    "retry_back_off.max_interval",
                    "max_interval must be greater than or equal to the base_interval",
                ));
            }
            (base, max)
        }
    };
    Ok(RetryPolicy {
        retry_on,
        num_retries: u32_or(num_retries, 1),
        per_try_timeout: timeout_or(per_try_timeout, None, "per_try_timeout")?,
        per_try_idle_timeout: timeout_or(per_try_idle_timeout, None, "per_try_idle_timeout")?,
        retriable_status_codes,
        retriable_headers: header_matchers(retriable_headers, "retriable_headers")?,
        retriable_request_headers: header_matchers(
            retriable_request_headers,
            "retriable_request_headers",
        )?,
        base_interval,
        max_interval,
        previous_hosts,
        host_selection_retry_max_attempts,
        previous_priorities,
    })
}

fn hash(h: rt::route_action::HashPolicy) -> Result<HashPolicy, InvalidField> {
    use rt::route_action::hash_policy::{self as hp, PolicySpecifier as P};
    let rt::route_action::HashPolicy {
        terminal,
        policy_specifier,
    } = h;
    let kind = match policy_specifier {
        Some(P::Header(hp::Header {
            header_name: name,
            regex_rewrite: rw,
        })) => HashKind::Header {
            name: header_name(&name, "header.header_name")?,
            rewrite: rw
                .map(regex_rewrite)
                .transpose()
                .within("header.regex_rewrite")?,
        },
        Some(P::Cookie(hp::Cookie {
            name,
            ttl,
            path,
            attributes,
        })) => HashKind::Cookie {
            name: non_empty(name, "cookie.name")?,
            ttl: opt_duration(ttl, "cookie.ttl")?,
            path,
            attributes: attributes
                .into_iter()
                .map(|hp::CookieAttribute { name, value }| (name, value))
                .collect(),
        },
        Some(P::ConnectionProperties(hp::ConnectionProperties { source_ip })) => {
            if !source_ip {
                return Err(InvalidField::unsupported("connection_properties.source_ip"));
            }
            HashKind::SourceIp
        }
        Some(P::QueryParameter(hp::QueryParameter { name })) => {
            HashKind::QueryParameter(non_empty(name, "query_parameter.name")?)
        }
        Some(P::FilterState(hp::FilterState { key })) => {
            HashKind::FilterState(non_empty(key, "filter_state.key")?)
        }
        None => return Err(required("policy_specifier")),
    };
    Ok(HashPolicy { kind, terminal })
}

fn redirect(a: rt::RedirectAction) -> Result<RedirectAction, InvalidField> {
    use rt::redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
    };
    let rt::RedirectAction {
        host_redirect,
        port_redirect,
        response_code,
        strip_query,
        scheme_rewrite_specifier,
        path_rewrite_specifier,
    } = a;
    let response_code = match C::try_from(response_code) {
        Ok(C::MovedPermanently) => 301,
        Ok(C::Found) => 302,
        Ok(C::SeeOther) => 303,
        Ok(C::TemporaryRedirect) => 307,
        Ok(C::PermanentRedirect) => 308,
        Err(_) => return Err(bad_enum("response_code")),
    };
    let scheme = match scheme_rewrite_specifier {
        None => None,
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::HttpsRedirect(false)) => None,
        Some(S::SchemeRedirect(s)) => (!s.is_empty()).then(|| s.to_ascii_lowercase()),
    };
    let path = match path_rewrite_specifier {
        None => PathRedirect::Keep,
        Some(P::PathRedirect(p)) => PathRedirect::Path(p),
        Some(P::PrefixRewrite(p)) => PathRedirect::Prefix(p),
        Some(P::RegexRewrite(r)) => {
            let (re, sub) = regex_rewrite(r).within("regex_rewrite")?;
            PathRedirect::Regex(re, sub)
        }
        Some(P::PathRewrite(_)) => return Err(InvalidField::unsupported("path_rewrite")),
    };
    Ok(RedirectAction {
        scheme,
        host: (!host_redirect.is_empty()).then_some(host_redirect),
        port: match port_redirect {
            0 => None,
            p => Some(port(p, false, "port_redirect")?),
        },
        path,
        response_code,
        strip_query,
    })
}

fn direct_response(
    a: rt::DirectResponseAction,
    limits: &Limits,
) -> Result<DirectResponse, InvalidField> {
    use core::data_source::Specifier;
    let rt::DirectResponseAction {
        status,
        body,
        body_format,
    } = a;
    unsupported_if_set!(body_format);
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| InvalidField::invalid("status", "value must be inside range [200, 600)"))?;
    let body = match body {
        None => None,
        Some(core::DataSource {
            watched_directory,
            specifier,
        }) => {
            if watched_directory.is_some() {
                return Err(InvalidField::unsupported("body.watched_directory"));
            }
            let bytes = match specifier {
                Some(Specifier::InlineBytes(b)) => Bytes::from(b),
                Some(Specifier::InlineString(s)) => Bytes::from(s),
                Some(Specifier::Filename(_)) => {
                    return Err(InvalidField::unsupported("body.filename"));
                }
                Some(Specifier::EnvironmentVariable(_)) => {
                    return Err(InvalidField::unsupported("body.environment_variable"));
                }
                None => return Err(required("body.specifier")),
            };
            if bytes.len() > limits.max_body as usize {
                return Err(InvalidField::invalid(
                    "body",
                    format!(
                        "response body size is {} bytes; maximum is {}",
                        bytes.len(),
                        limits.max_body
                    ),
                ));
            }
            Some(bytes)
        }
    };
    Ok(DirectResponse { status, body })
}

fn mirrors(
    list: Vec<rt::route_action::RequestMirrorPolicy>,
) -> Result<Vec<MirrorPolicy>, InvalidField> {
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let rt::route_action::RequestMirrorPolicy {
                cluster,
                cluster_header,
                runtime_fraction,
                trace_sampled: _,
                disable_shadow_host_suffix_append,
                request_headers_mutations,
                host_rewrite_literal,
            } = m;
            let r: Result<MirrorPolicy, InvalidField> = (|| {
                unsupported_if_set!(
                    cluster_header,
                    request_headers_mutations,
                    host_rewrite_literal
                );
                Ok(MirrorPolicy {
                    cluster: non_empty(cluster, "cluster")?,
                    fraction: runtime_fraction
                        .map(runtime_fractional_percent)
                        .transpose()
                        .within("runtime_fraction")?
                        .unwrap_or(FractionalPercent::ALL),
                    disable_shadow_host_suffix_append,
                })
            })();
            r.within(&at("request_mirror_policies", i))
        })
        .collect()
}

/// `typed_per_filter_config`: by config type (the key is the HTTP filter's name in the HCM,
/// which may be anything).
fn per_filter(map: HashMap<String, pbw::Any>) -> Result<PerFilterConfig, InvalidField> {
    let mut out = PerFilterConfig::default();
    // Sorted, so that errors are deterministic.
    let mut entries: Vec<(String, pbw::Any)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, a) in entries {
        let field = key("typed_per_filter_config", &k);
        let duplicate =
            || InvalidField::invalid(&field, "a second config for the same filter type");
        if is::<fault_pb::HttpFault>(&a) {
            let f = fault(decode(&a).within(&field)?).within(&field)?;
            if out.fault.replace(Arc::new(f)).is_some() {
                return Err(duplicate());
            }
        } else if is::<cors_pb::CorsPolicy>(&a) {
            let c = cors(decode(&a).within(&field)?).within(&field)?;
            if out.cors.replace(Arc::new(c)).is_some() {
                return Err(duplicate());
            }
        } else {
            return Err(unknown_type(&a).within(&field));
        }
    }
    Ok(out)
}
