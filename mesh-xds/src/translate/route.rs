//! Routes (RDS): VirtualService HTTP routes in first-match order, implicit routes for services
//! without one, and the catch-all virtual host (reference §2.1, §3.2, §3.3).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, Metadata, RuntimeFractionalPercent, data_source,
    header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, retry_policy, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value};
use mesh_model::host::resolve_short_name;
use mesh_model::networking::destination_rule::ConsistentHashLb;
use mesh_model::networking::virtual_service::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest,
    HttpRetry, HttpRoute, UnmatchedPreflights, VirtualService,
};
use mesh_model::{HeaderMatch, StringMatch};

use crate::naming;
use crate::pb::{any, boolv, dur, duration, per_hundred, per_million, regex, string_matcher, u32v};
use crate::proxy::Proxy;
use crate::translate::PushContext;
use crate::translate::cluster::consistent_hash;
use crate::translate::scope::{SidecarScope, destination_rule};

/// The fault filter's name, also the key of per-route fault config.
pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// The CORS filter's name.
pub(crate) const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Every cluster a route configuration sends traffic (or mirrors) to.
pub(crate) fn referenced_clusters(rc: &RouteConfiguration) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for vh in &rc.virtual_hosts {
        for r in &vh.routes {
            if let Some(route::Action::Route(a)) = &r.action {
                match &a.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(c)) => {
                        out.insert(c.clone());
                    }
                    Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                        out.extend(w.clusters.iter().map(|c| c.name.clone()));
                    }
                    _ => {}
                }
                out.extend(a.request_mirror_policies.iter().map(|m| m.cluster.clone()));
            }
        }
    }
    out
}

/// Where routes are generated for: a sidecar listener port or a gateway server.
pub(crate) struct RouteTarget<'a> {
    /// The listener port.
    pub(crate) port: u32,
    /// `ns/name` of the gateway, or `None` for sidecars (the `mesh` gateway).
    pub(crate) gateway: Option<&'a str>,
}

/// The sidecar route configuration named after `port`: one virtual host per imported HTTP
/// service on that port, then the catch-all.
pub(crate) fn sidecar_route_config(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    port: u32,
    imports: &dyn Fn(&str, &str) -> bool,
    name: String,
) -> RouteConfiguration {
    let mut rc = sidecar_route_header(proxy, name);
    sidecar_vhosts(ctx, proxy, scope, port, imports, &mut |v| {
        rc.virtual_hosts.push(v)
    });
    rc
}

/// A sidecar route configuration without its virtual hosts ([`sidecar_vhosts`] makes those).
pub(crate) fn sidecar_route_header(proxy: &Proxy, name: String) -> RouteConfiguration {
    RouteConfiguration {
        name,
        validate_clusters: Some(boolv(false)),
        ignore_port_in_host_matching: !proxy.proxyless_grpc,
        ..Default::default()
    }
}

/// The virtual hosts of a sidecar's route configuration for `port`, in order, each handed to
/// `emit` as soon as it is built (so that an encoder never holds them all).
pub(crate) fn sidecar_vhosts(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    port: u32,
    imports: &dyn Fn(&str, &str) -> bool,
    emit: &mut dyn FnMut(VirtualHost),
) {
    let target = RouteTarget {
        port,
        gateway: None,
    };
    // Domains already taken by an earlier virtual host (Envoy refuses duplicates), borrowed
    // from the services where they can be.
    let mut used: std::collections::HashSet<std::borrow::Cow<'_, str>> =
        std::collections::HashSet::with_capacity(scope.services.len() * 4);
    for svc in &scope.services {
        let Some(svc_port) = svc.port(port) else {
            continue;
        };
        if !(svc_port.is_http() || svc_port.is_sniffed()) || !imports(&svc.namespace, &svc.hostname)
        {
            continue;
        }
        let routes = match crate::translate::scope::mesh_virtual_service(ctx, proxy, &svc.hostname)
        {
            Some((vs, ns)) => http_routes(ctx, proxy, vs, &ns, &target),
            None => vec![default_route(
                ctx,
                proxy,
                &naming::outbound_cluster(port, "", &svc.hostname),
                &svc.hostname,
                &svc.namespace,
                port,
            )],
        };
        if routes.is_empty() {
            continue;
        }
        use std::borrow::Cow;
        let names = domain_names(
            &svc.hostname,
            &svc.namespace,
            &proxy.namespace,
            &svc.addresses,
        );
        let mut candidates: Vec<Cow<'_, str>> = names.iter().map(|&n| Cow::Borrowed(n)).collect();
        if proxy.proxyless_grpc {
            candidates.extend(
                names
                    .iter()
                    .map(|n| Cow::Owned(naming::virtual_host(n, port))),
            );
        }
        candidates.retain(|d| used.insert(d.clone()));
        if candidates.is_empty() {
            continue;
        }
        let domains: Vec<String> = candidates.into_iter().map(Cow::into_owned).collect();
        emit(VirtualHost {
            name: naming::virtual_host(&svc.hostname, port),
            domains,
            routes,
            include_request_attempt_count: true,
            ..Default::default()
        });
    }
    emit(catch_all(scope.outbound_mode));
}

/// The virtual host that answers for unknown hosts: PassthroughCluster or a 502.
fn catch_all(mode: mesh_model::networking::sidecar::OutboundTrafficPolicyMode) -> VirtualHost {
    use mesh_model::networking::sidecar::OutboundTrafficPolicyMode as M;
    let (name, action) = match mode {
        M::AllowAny => (
            "allow_any",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    naming::PASSTHROUGH_CLUSTER.into(),
                )),
                timeout: Some(duration(std::time::Duration::ZERO)),
                ..Default::default()
            }),
        ),
        M::RegistryOnly => (
            "block_all",
            route::Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        ),
    };
    VirtualHost {
        name: name.into(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: name.into(),
            r#match: Some(prefix("/")),
            action: Some(action),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

/// Domains of a service's virtual host: the FQDN, the short forms valid from the proxy's
/// namespace, and the VIPs (proxyless gRPC also gets their `:port` forms). Borrowed: the
/// short forms of a Kubernetes host are prefixes of it (`NAME`, `NAME.NS`, `NAME.NS.svc`).
fn domain_names<'a>(
    host: &'a str,
    svc_ns: &str,
    proxy_ns: &str,
    vips: &'a [String],
) -> Vec<&'a str> {
    let mut d = Vec::with_capacity(4 + vips.len());
    d.push(host);
    let name = host
        .strip_suffix(mesh_model::host::DEFAULT_DOMAIN_SUFFIX)
        .and_then(|h| h.strip_suffix(".svc."))
        .and_then(|h| h.strip_suffix(svc_ns))
        .and_then(|h| h.strip_suffix('.'));
    if let Some(name) = name {
        if svc_ns == proxy_ns {
            d.push(name);
        }
        d.push(&host[..name.len() + 1 + svc_ns.len()]);
        d.push(&host[..name.len() + 1 + svc_ns.len() + ".svc".len()]);
    }
    d.extend(vips.iter().map(String::as_str).filter(|v| !v.contains('/')));
    d
}

/// The implicit route of a service without a VirtualService.
fn default_route(
    ctx: &PushContext,
    proxy: &Proxy,
    cluster: &str,
    host: &str,
    svc_ns: &str,
    port: u32,
) -> Route {
    let dr = destination_rule(ctx, proxy, host, svc_ns);
    let hashing = consistent_hash(dr.as_deref(), None, port);
    Route {
        name: "default".into(),
        r#match: Some(prefix("/")),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
            timeout: Some(duration(std::time::Duration::ZERO)),
            retry_policy: retry(None, ctx, hashing.is_some()),
            hash_policy: hashing.iter().flat_map(hash_policy).collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The HTTP routes of a VirtualService for one listener, in first-match order, stopping after
/// the first catch-all. Delegates are expanded.
pub(crate) fn http_routes(
    ctx: &PushContext,
    proxy: &Proxy,
    vs: &VirtualService,
    vs_ns: &str,
    target: &RouteTarget<'_>,
) -> Vec<Route> {
    let meta = config_metadata(vs_ns, &vs.metadata.name);
    let mut out = Vec::new();
    for http in &vs.spec.http {
        if let Some(d) = &http.delegate {
            let d_ns = d.namespace.as_deref().unwrap_or(vs_ns);
            let Some(delegate) = find_delegate(ctx, d_ns, &d.name) else {
                continue;
            };
            for dr in &delegate.spec.http {
                let merged = merge_delegate(http, dr);
                let Some(merged) = merged else { continue };
                let d_meta = config_metadata(d_ns, &delegate.metadata.name);
                if push_route(ctx, proxy, &merged, d_ns, target, &d_meta, &mut out) {
                    return out;
                }
            }
            continue;
        }
        if push_route(ctx, proxy, http, vs_ns, target, &meta, &mut out) {
            break;
        }
    }
    out
}

fn find_delegate<'a>(ctx: &'a PushContext, ns: &str, name: &str) -> Option<&'a VirtualService> {
    ctx.virtual_services.iter().find_map(|c| match c.as_ref() {
        mesh_model::Config::VirtualService(vs)
            if vs.metadata.namespace() == ns
                && vs.metadata.name == name
                && vs.spec.hosts.is_empty() =>
        {
            Some(vs)
        }
        _ => None,
    })
}

/// Merges a delegate's route into the root's: matches are combined (the delegate's conditions
/// narrow the root's), unset fields are inherited, and the name becomes `root-delegate`.
fn merge_delegate(root: &HttpRoute, delegate: &HttpRoute) -> Option<HttpRoute> {
    let mut r = delegate.clone();
    let root_matches: Vec<HttpMatchRequest> = if root.matches.is_empty() {
        vec![HttpMatchRequest::default()]
    } else {
        root.matches.clone()
    };
    let delegate_matches: Vec<HttpMatchRequest> = if delegate.matches.is_empty() {
        vec![HttpMatchRequest::default()]
    } else {
        delegate.matches.clone()
    };
    let mut merged = Vec::new();
    for rm in &root_matches {
        for dm in &delegate_matches {
            let mut m = dm.clone();
            // The delegate's URI must lie within the root's.
            match (&rm.uri, &dm.uri) {
                (
                    Some(StringMatch::Prefix(rp)),
                    Some(StringMatch::Prefix(dp) | StringMatch::Exact(dp)),
                ) if !dp.starts_with(rp.as_str()) => continue,
                (Some(_), None) => m.uri = rm.uri.clone(),
                _ => {}
            }
            for (k, v) in &rm.headers {
                m.headers.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &rm.query_params {
                m.query_params.entry(k.clone()).or_insert_with(|| v.clone());
            }
            m.method = m.method.or_else(|| rm.method.clone());
            m.authority = m.authority.or_else(|| rm.authority.clone());
            m.scheme = m.scheme.or_else(|| rm.scheme.clone());
            m.port = m.port.or(rm.port);
            if m.source_labels.is_empty() {
                m.source_labels = rm.source_labels.clone();
            }
            m.gateways = if m.gateways.is_empty() {
                rm.gateways.clone()
            } else {
                m.gateways
            };
            merged.push(m);
        }
    }
    if merged.is_empty() {
        return None;
    }
    r.matches = merged;
    r.name = match (&root.name, &delegate.name) {
        (Some(a), Some(b)) => Some(format!("{a}-{b}")),
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    macro_rules! inherit {
        ($($f:ident),*) => { $( if r.$f.is_none() { r.$f = root.$f.clone(); } )* };
    }
    inherit!(
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percentage,
        cors_policy,
        headers,
        direct_response
    );
    if r.mirrors.is_empty() {
        r.mirrors = root.mirrors.clone();
    }
    Some(r)
}

/// Whether a match applies to this proxy and listener (generation-time conditions).
fn match_applies(m: &HttpMatchRequest, proxy: &Proxy, target: &RouteTarget<'_>) -> bool {
    if m.port.is_some_and(|p| p != target.port) {
        return false;
    }
    if !m.gateways.is_empty() {
        let here = target.gateway.unwrap_or("mesh");
        if !m.gateways.iter().any(|g| g == here) {
            return false;
        }
    }
    if target.gateway.is_none() {
        if !m
            .source_labels
            .iter()
            .all(|(k, v)| proxy.labels.get(k) == Some(v))
        {
            return false;
        }
        if m.source_namespace
            .as_ref()
            .is_some_and(|ns| *ns != proxy.namespace)
        {
            return false;
        }
    }
    true
}

/// Appends the Envoy routes of one HTTP route; returns true when a catch-all was emitted.
#[allow(clippy::too_many_arguments)]
fn push_route(
    ctx: &PushContext,
    proxy: &Proxy,
    http: &HttpRoute,
    vs_ns: &str,
    target: &RouteTarget<'_>,
    meta: &Metadata,
    out: &mut Vec<Route>,
) -> bool {
    let matches: Vec<Option<&HttpMatchRequest>> = if http.matches.is_empty() {
        vec![None]
    } else {
        let kept: Vec<_> = http
            .matches
            .iter()
            .filter(|m| match_applies(m, proxy, target))
            .map(Some)
            .collect();
        if kept.is_empty() {
            return false;
        }
        kept
    };
    let action = route_action(ctx, proxy, http, vs_ns, target);
    let per_filter = per_filter_config(http);
    let (req_add, req_remove, resp_add, resp_remove) = header_ops(http.headers.as_ref());
    for m in matches {
        let (rm, catch_all) = route_match(m);
        let name = match (&http.name, m.and_then(|m| m.name.as_ref())) {
            (Some(r), Some(m)) => format!("{m}.{r}"),
            (Some(r), None) => r.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => String::new(),
        };
        out.push(Route {
            name,
            r#match: Some(rm),
            action: Some(action.clone()),
            metadata: Some(meta.clone()),
            typed_per_filter_config: per_filter.clone(),
            request_headers_to_add: req_add.clone(),
            request_headers_to_remove: req_remove.clone(),
            response_headers_to_add: resp_add.clone(),
            response_headers_to_remove: resp_remove.clone(),
            ..Default::default()
        });
        if catch_all {
            return true;
        }
    }
    false
}

/// `istio.config` route metadata naming the VirtualService.
fn config_metadata(ns: &str, name: &str) -> Metadata {
    let path = format!("/apis/networking.istio.io/v1/namespaces/{ns}/virtual-service/{name}");
    Metadata {
        filter_metadata: HashMap::from([(
            "istio".to_string(),
            Struct {
                fields: HashMap::from([(
                    "config".to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(path)),
                    },
                )]),
            },
        )]),
        ..Default::default()
    }
}

/// The Envoy match for an Istio match; also whether it matches every request.
fn route_match(m: Option<&HttpMatchRequest>) -> (RouteMatch, bool) {
    let Some(m) = m else {
        return (prefix("/"), true);
    };
    let mut rm = RouteMatch::default();
    let path = match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".into()),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => {
            route_match::PathSpecifier::Prefix(if p.is_empty() { "/".into() } else { p.clone() })
        }
        Some(StringMatch::Regex(r)) => route_match::PathSpecifier::SafeRegex(regex(r)),
    };
    let any_path = matches!(&path, route_match::PathSpecifier::Prefix(p) if p == "/")
        || matches!(&path, route_match::PathSpecifier::SafeRegex(r) if r.regex == ".*");
    rm.path_specifier = Some(path);
    if m.ignore_uri_case {
        rm.case_sensitive = Some(boolv(false));
    }
    let mut headers: Vec<HeaderMatcher> = Vec::new();
    for (name, hm) in &m.headers {
        if matches!(name.as_str(), "uri" | "scheme" | "method" | "authority") {
            continue;
        }
        headers.push(header_matcher(name, hm, false));
    }
    for (name, hm) in &m.without_headers {
        headers.push(header_matcher(name, hm, true));
    }
    for (pseudo, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(
                pseudo,
                &HeaderMatch::Match(sm.clone()),
                false,
            ));
        }
    }
    headers.sort_by(|a, b| a.name.cmp(&b.name));
    rm.headers = headers;
    for (name, qm) in &m.query_params {
        let spec = match qm {
            x if x.is_presence() => {
                query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)
            }
            HeaderMatch::Match(StringMatch::Exact(v)) if v.is_empty() => {
                query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)
            }
            HeaderMatch::Match(sm) => {
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_matcher(
                    sm, false,
                ))
            }
            HeaderMatch::Present => {
                query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)
            }
        };
        rm.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(spec),
        });
    }
    let catch_all = any_path && rm.headers.is_empty() && rm.query_parameters.is_empty();
    (rm, catch_all)
}

fn header_matcher(name: &str, hm: &HeaderMatch, invert: bool) -> HeaderMatcher {
    let spec = match hm {
        x if x.is_presence() => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        HeaderMatch::Match(sm) => {
            header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(sm, false))
        }
        HeaderMatch::Present => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: name.to_ascii_lowercase(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        treat_missing_header_as_empty: invert,
    }
}

/// Resolves a destination to its cluster name: short hosts against the VirtualService's
/// namespace; the port from the destination, else the service's only port, else the listener's.
pub(crate) fn cluster_for(
    ctx: &PushContext,
    d: &Destination,
    vs_ns: &str,
    listener_port: u32,
) -> (String, String, u32) {
    let host = resolve_short_name(&d.host, vs_ns, ctx.domain_suffix());
    let port = d
        .port
        .map(|p| p.number)
        .unwrap_or_else(|| match ctx.registry.get(&host) {
            Some(s) if s.ports.len() == 1 => s.ports[0].number,
            _ => listener_port,
        });
    let name = naming::outbound_cluster(port, d.subset.as_deref().unwrap_or(""), &host);
    (name, host, port)
}

fn route_action(
    ctx: &PushContext,
    proxy: &Proxy,
    http: &HttpRoute,
    vs_ns: &str,
    target: &RouteTarget<'_>,
) -> route::Action {
    if let Some(rd) = &http.redirect {
        let code = match rd.redirect_code.unwrap_or(301) {
            302 => redirect_action::RedirectResponseCode::Found,
            303 => redirect_action::RedirectResponseCode::SeeOther,
            307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => redirect_action::RedirectResponseCode::MovedPermanently,
        };
        let mut a = RedirectAction {
            host_redirect: rd.authority.clone().unwrap_or_default(),
            response_code: code as i32,
            ..Default::default()
        };
        if let Some(u) = &rd.uri {
            a.path_rewrite_specifier = Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                u.clone(),
            ));
        } else if let Some(p) = &rd.prefix_rewrite {
            a.path_rewrite_specifier = Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                p.clone(),
            ));
        }
        if let Some(s) = &rd.scheme {
            a.scheme_rewrite_specifier = Some(
                redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s.clone()),
            );
        }
        if let Some(p) = rd.port {
            a.port_redirect = p;
        }
        return route::Action::Redirect(a);
    }
    if let Some(dr) = &http.direct_response {
        let body = dr.body.as_ref().map(|b| DataSource {
            specifier: Some(match b {
                mesh_model::networking::virtual_service::HttpBody::String(s) => {
                    data_source::Specifier::InlineString(s.clone())
                }
                mesh_model::networking::virtual_service::HttpBody::Bytes(b) => {
                    data_source::Specifier::InlineBytes(decode_base64(b))
                }
            }),
            ..Default::default()
        });
        return route::Action::DirectResponse(DirectResponseAction {
            status: dr.status,
            body,
            ..Default::default()
        });
    }
    let mut a = RouteAction {
        timeout: Some(
            http.timeout
                .as_ref()
                .map(dur)
                .unwrap_or_else(|| duration(std::time::Duration::ZERO)),
        ),
        ..Default::default()
    };
    let dests: Vec<_> = http
        .route
        .iter()
        .filter(|d| http.route.len() == 1 || d.weight.unwrap_or(0) > 0)
        .collect();
    let mut hashing: Option<ConsistentHashLb> = None;
    if dests.len() == 1 {
        let (name, host, port) = cluster_for(ctx, &dests[0].destination, vs_ns, target.port);
        let dr = destination_rule(
            ctx,
            proxy,
            &host,
            ctx.registry
                .get(&host)
                .map_or(vs_ns, |s| s.namespace.as_str()),
        );
        hashing = consistent_hash(dr.as_deref(), dests[0].destination.subset.as_deref(), port);
        a.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(name));
    } else if !dests.is_empty() {
        let clusters = dests
            .iter()
            .map(|d| {
                let (name, _, _) = cluster_for(ctx, &d.destination, vs_ns, target.port);
                let (req_add, req_remove, resp_add, resp_remove) = header_ops(d.headers.as_ref());
                weighted_cluster::ClusterWeight {
                    name,
                    weight: Some(u32v(u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0))),
                    request_headers_to_add: req_add,
                    request_headers_to_remove: req_remove,
                    response_headers_to_add: resp_add,
                    response_headers_to_remove: resp_remove,
                    ..Default::default()
                }
            })
            .collect();
        a.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters,
                ..Default::default()
            },
        ));
    }
    if let Some(hc) = &hashing {
        a.hash_policy = hash_policy(hc);
    }
    a.retry_policy = retry(http.retries.as_ref(), ctx, hashing.is_some());
    if let Some(rw) = &http.rewrite {
        if let Some(u) = &rw.uri {
            a.prefix_rewrite = u.clone();
        }
        if let Some(re) = &rw.uri_regex_rewrite {
            a.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(&re.pattern)),
                substitution: re.rewrite.clone(),
            });
        }
        if let Some(auth) = &rw.authority {
            a.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(auth.clone()),
            );
        }
    }
    if let Some(auth) = http
        .headers
        .as_ref()
        .and_then(|h| h.request.as_ref())
        .and_then(|ops| ops.set.get(":authority"))
    {
        a.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            auth.clone(),
        ));
    }
    let mirror = |d: &Destination, pct: Option<f64>| {
        let pct = pct.unwrap_or(100.0);
        (pct > 0.0).then(|| {
            let (cluster, _, _) = cluster_for(ctx, d, vs_ns, target.port);
            route_action::RequestMirrorPolicy {
                cluster,
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(per_million(pct)),
                    runtime_key: String::new(),
                }),
                trace_sampled: Some(boolv(false)),
                ..Default::default()
            }
        })
    };
    if let Some(m) = &http.mirror {
        let pct = http
            .mirror_percentage
            .map(|p| p.value)
            .or(http.mirror_percent.map(f64::from));
        a.request_mirror_policies.extend(mirror(m, pct));
    }
    for m in &http.mirrors {
        a.request_mirror_policies
            .extend(mirror(&m.destination, m.percentage.map(|p| p.value)));
    }
    route::Action::Route(a)
}

fn decode_base64(s: &str) -> Vec<u8> {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let Some(v) = TABLE.iter().position(|t| *t == c) else {
            continue;
        };
        buf = (buf << 6) | u32::try_from(v).unwrap_or(0);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((buf >> bits) & 0xff) as u8);
        }
    }
    out
}

fn hash_policy(ch: &ConsistentHashLb) -> Vec<route_action::HashPolicy> {
    use route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };
    let spec = if let Some(h) = &ch.http_header_name {
        PolicySpecifier::Header(Header {
            header_name: h.clone(),
            regex_rewrite: None,
        })
    } else if let Some(c) = &ch.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: c.name.clone(),
            ttl: c.ttl.as_ref().map(dur),
            path: c.path.clone().unwrap_or_default(),
            attributes: c
                .attributes
                .iter()
                .map(|a| route_action::hash_policy::CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone().unwrap_or_default(),
                })
                .collect(),
        })
    } else if ch.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else if let Some(q) = &ch.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name: q.clone() })
    } else {
        return Vec::new();
    };
    vec![route_action::HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    }]
}

/// Istio's retry policy: the route's, else MeshConfig's default, else the built-in one
/// (2 retries on connect-failure, refused-stream, unavailable, cancelled,
/// retriable-status-codes; previous-hosts predicate; 5 host selection attempts).
fn retry(
    r: Option<&HttpRetry>,
    ctx: &PushContext,
    consistent_hashing: bool,
) -> Option<RetryPolicy> {
    let r = r.or(ctx.mesh.default_http_retry_policy.as_ref());
    let previous_hosts = || retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
            any(&PreviousHostsPredicate {}),
        )),
    };
    let Some(r) = r else {
        return Some(RetryPolicy {
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .into(),
            num_retries: Some(u32v(2)),
            retry_host_predicate: if consistent_hashing {
                Vec::new()
            } else {
                vec![previous_hosts()]
            },
            host_selection_retry_max_attempts: 5,
            ..Default::default()
        });
    };
    if r.attempts <= 0 {
        return None;
    }
    let mut p = RetryPolicy {
        num_retries: Some(u32v(u32::try_from(r.attempts).unwrap_or(0))),
        per_try_timeout: r.per_try_timeout.as_ref().map(dur),
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    };
    let mut on: Vec<String> = Vec::new();
    for item in r
        .retry_on
        .as_deref()
        .unwrap_or("connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes")
        .split(',')
    {
        let item = item.trim();
        if let Ok(code) = item.parse::<u32>() {
            p.retriable_status_codes.push(code);
        } else if !item.is_empty() && !on.iter().any(|o| o == item) {
            on.push(item.to_string());
        }
    }
    if !p.retriable_status_codes.is_empty() && !on.iter().any(|o| o == "retriable-status-codes") {
        on.push("retriable-status-codes".into());
    }
    p.retry_on = on.join(",");
    if r.retry_ignore_previous_hosts != Some(false) && !consistent_hashing {
        p.retry_host_predicate = vec![previous_hosts()];
    }
    if r.retry_remote_localities == Some(true) {
        p.retry_priority = Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(any(
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    if let Some(b) = &r.backoff {
        p.retry_back_off = Some(retry_policy::RetryBackOff {
            base_interval: Some(dur(b)),
            max_interval: None,
        });
    }
    Some(p)
}

fn per_filter_config(http: &HttpRoute) -> HashMap<String, Any> {
    let mut m = HashMap::new();
    if let Some(f) = &http.fault {
        m.insert(FAULT_FILTER.to_string(), any(&fault(f)));
    }
    if let Some(c) = &http.cors_policy {
        m.insert(CORS_FILTER.to_string(), any(&cors(c)));
    }
    m
}

fn fault(f: &HttpFaultInjection) -> HttpFault {
    let pct = |p: Option<f64>, legacy: Option<i32>| {
        p.map(per_million)
            .or_else(|| legacy.map(|l| per_hundred(u32::try_from(l).unwrap_or(0))))
    };
    HttpFault {
        delay: f.delay.as_ref().map(|d| FaultDelay {
            fault_delay_secifier: d
                .fixed_delay
                .as_ref()
                .map(|x| fault_delay::FaultDelaySecifier::FixedDelay(dur(x))),
            percentage: pct(d.percentage.map(|p| p.value), d.percent),
        }),
        abort: f.abort.as_ref().map(|a| FaultAbort {
            error_type: match (&a.http_status, &a.grpc_status) {
                (Some(s), _) => Some(fault_abort::ErrorType::HttpStatus(
                    u32::try_from(*s).unwrap_or(500),
                )),
                (None, Some(g)) => Some(fault_abort::ErrorType::GrpcStatus(
                    mesh_model::networking::virtual_service::grpc_status_code(g).unwrap_or(2),
                )),
                _ => None,
            },
            percentage: pct(a.percentage.map(|p| p.value), None),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cors(c: &CorsPolicy) -> EnvoyCors {
    let mut origins: Vec<_> = c
        .allow_origins
        .iter()
        .map(|o| string_matcher(o, false))
        .collect();
    origins.extend(
        c.allow_origin
            .iter()
            .map(|o| string_matcher(&StringMatch::Exact(o.clone()), false)),
    );
    EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.as_std().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(boolv),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(per_million(100.0)),
            runtime_key: String::new(),
        }),
        forward_not_matching_preflights: Some(boolv(
            c.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
        )),
        ..Default::default()
    }
}

type HeaderOps = (
    Vec<HeaderValueOption>,
    Vec<String>,
    Vec<HeaderValueOption>,
    Vec<String>,
);

fn header_ops(h: Option<&Headers>) -> HeaderOps {
    fn ops(o: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
        let Some(o) = o else {
            return (Vec::new(), Vec::new());
        };
        let keep = |k: &str| !k.starts_with(':') && !k.eq_ignore_ascii_case("host");
        let mut add = Vec::new();
        for (action, map) in [
            (
                header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
                &o.set,
            ),
            (
                header_value_option::HeaderAppendAction::AppendIfExistsOrAdd,
                &o.add,
            ),
        ] {
            let sorted: BTreeMap<&String, &String> = map.iter().collect();
            for (k, v) in sorted {
                if keep(k) {
                    add.push(HeaderValueOption {
                        header: Some(HeaderValue {
                            key: k.clone(),
                            value: v.clone(),
                            ..Default::default()
                        }),
                        append_action: action as i32,
                        ..Default::default()
                    });
                }
            }
        }
        let remove = o.remove.iter().filter(|k| keep(k)).cloned().collect();
        (add, remove)
    }
    let (ra, rr) = ops(h.and_then(|h| h.request.as_ref()));
    let (sa, sr) = ops(h.and_then(|h| h.response.as_ref()));
    (ra, rr, sa, sr)
}

/// An empty gateway route config: one `blackhole:PORT` virtual host that answers 404.
pub(crate) fn blackhole_vhost(port: u32) -> VirtualHost {
    VirtualHost {
        name: format!("blackhole:{port}"),
        domains: vec!["*".into()],
        ..Default::default()
    }
}
