//! VirtualService rules (`ValidateVirtualService` and the VS analyzers).

use std::collections::BTreeMap;

use crate::networking::virtual_service::{
    CorsPolicy, Delegate, Destination, HeaderOperations, Headers, HttpFaultInjection,
    HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, Percent, RouteDestination,
    VirtualService,
};
use crate::string_match::{HeaderMatch, StringMatch};
use crate::validate::Report;
use crate::validate::common::{
    Wildcard, check_duration, check_export_to, check_gateway_name, check_header_match,
    check_header_name, check_header_value, check_ip_or_cidr, check_labels, check_percentage,
    check_port, check_string_match, check_wildcard_host, is_dns1123_label, is_dns1123_subdomain,
    validate_regex,
};

/// Envoy `retry_on` policies Istio accepts (plus numeric status codes).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Standard HTTP methods (CORS).
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

const JWT_CLAIM_PREFIX: &str = "@request.auth.claims";

/// Whether two hosts overlap (equal, or one wildcard covers the other).
pub(crate) fn hosts_overlap(a: &str, b: &str) -> bool {
    fn covers(wild: &str, other: &str) -> bool {
        if wild == "*" {
            return true;
        }
        match wild.strip_prefix('*') {
            Some(suffix) => {
                let other_suffix = other.strip_prefix('*').unwrap_or(other);
                other_suffix.ends_with(suffix)
            }
            None => false,
        }
    }
    a.eq_ignore_ascii_case(b) || covers(a, b) || covers(b, a)
}

pub(crate) fn validate(vs: &VirtualService, r: &mut Report) {
    let spec = &vs.spec;
    let is_delegate = spec.hosts.is_empty();
    let applies_to_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    let gateway_only = !applies_to_mesh;

    if is_delegate {
        if !spec.gateways.is_empty() {
            r.error(
                "spec.gateways",
                "a delegate VirtualService (no hosts) may not set gateways",
            );
        }
        if !spec.tls.is_empty() {
            r.error(
                "spec.tls",
                "a delegate VirtualService (no hosts) may not have tls routes",
            );
        }
        if !spec.tcp.is_empty() {
            r.error(
                "spec.tcp",
                "a delegate VirtualService (no hosts) may not have tcp routes",
            );
        }
    }

    let mut all_hosts_valid = true;
    for (i, h) in spec.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{i}]");
        if h.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        match check_wildcard_host(h) {
            Err(e) => {
                all_hosts_valid = false;
                r.error(&at, e);
            }
            Ok(Wildcard::Full) if h == "*" && applies_to_mesh => r.error(
                &at,
                "wildcard host \"*\" is not allowed for VirtualServices bound to the mesh gateway",
            ),
            Ok(_) => {}
        }
    }
    if all_hosts_valid {
        for i in 0..spec.hosts.len() {
            for j in i + 1..spec.hosts.len() {
                if hosts_overlap(&spec.hosts[i], &spec.hosts[j]) {
                    r.error(
                        format!("spec.hosts[{j}]"),
                        format!(
                            "duplicate hosts in VirtualService: {:?} and {:?}",
                            spec.hosts[i], spec.hosts[j]
                        ),
                    );
                }
            }
        }
    }

    for (i, g) in spec.gateways.iter().enumerate() {
        check_gateway_name(g, &format!("spec.gateways[{i}]"), r);
    }

    if spec.http.is_empty() && spec.tls.is_empty() && spec.tcp.is_empty() {
        r.error(
            "spec",
            "http, tcp or tls must be provided in a VirtualService",
        );
    }

    let ctx = RouteCtx {
        is_delegate,
        gateway_only,
    };
    for (i, route) in spec.http.iter().enumerate() {
        validate_http_route(route, &format!("spec.http[{i}]"), &ctx, r);
    }
    unreachable_rules(&spec.http, r);

    for (i, tls) in spec.tls.iter().enumerate() {
        let at = format!("spec.tls[{i}]");
        if tls.matches.is_empty() {
            r.error(&at, "TLS route must have at least one match condition");
        }
        for (j, m) in tls.matches.iter().enumerate() {
            let mat = format!("{at}.match[{j}]");
            if m.sni_hosts.is_empty() {
                r.error(
                    format!("{mat}.sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let sat = format!("{mat}.sniHosts[{k}]");
                if sni.parse::<std::net::IpAddr>().is_ok() {
                    r.warn(
                        &sat,
                        format!("SNI host {sni:?} is an IP address; clients never send IPs as SNI"),
                    );
                    continue;
                }
                if let Err(e) = check_wildcard_host(sni) {
                    r.error(&sat, e);
                    continue;
                }
                if !is_delegate && !spec.hosts.iter().any(|h| sni_within(sni, h)) {
                    r.error(
                        &sat,
                        format!("SNI host {sni:?} is not a compatible subset of any of the VirtualService hosts"),
                    );
                }
            }
            for (k, s) in m.destination_subnets.iter().enumerate() {
                r.check(
                    format!("{mat}.destinationSubnets[{k}]"),
                    check_ip_or_cidr(s),
                );
            }
            if let Some(p) = m.port {
                r.check(format!("{mat}.port"), check_port(p));
            }
            check_labels(&m.source_labels, &format!("{mat}.sourceLabels"), r);
            for (k, g) in m.gateways.iter().enumerate() {
                check_gateway_name(g, &format!("{mat}.gateways[{k}]"), r);
            }
        }
        validate_l4_destinations(&tls.route, &format!("{at}.route"), r);
    }

    for (i, tcp) in spec.tcp.iter().enumerate() {
        let at = format!("spec.tcp[{i}]");
        for (j, m) in tcp.matches.iter().enumerate() {
            let mat = format!("{at}.match[{j}]");
            for (k, s) in m.destination_subnets.iter().enumerate() {
                r.check(
                    format!("{mat}.destinationSubnets[{k}]"),
                    check_ip_or_cidr(s),
                );
            }
            if let Some(p) = m.port {
                r.check(format!("{mat}.port"), check_port(p));
            }
            check_labels(&m.source_labels, &format!("{mat}.sourceLabels"), r);
            for (k, g) in m.gateways.iter().enumerate() {
                check_gateway_name(g, &format!("{mat}.gateways[{k}]"), r);
            }
        }
        validate_l4_destinations(&tcp.route, &format!("{at}.route"), r);
    }

    check_export_to(
        &spec.export_to,
        vs.metadata.namespace(),
        false,
        "spec.exportTo",
        r,
    );
}

/// Whether SNI host `sni` lies within VS host `host`.
fn sni_within(sni: &str, host: &str) -> bool {
    if sni.eq_ignore_ascii_case(host) || host == "*" {
        return true;
    }
    match host.strip_prefix('*') {
        Some(suffix) => sni.strip_prefix('*').unwrap_or(sni).ends_with(suffix),
        None => false,
    }
}

struct RouteCtx {
    is_delegate: bool,
    gateway_only: bool,
}

fn validate_http_route(route: &HttpRoute, at: &str, ctx: &RouteCtx, r: &mut Report) {
    // Actions.
    if let Some(d) = &route.delegate {
        if ctx.is_delegate {
            r.error(
                format!("{at}.delegate"),
                "a delegate VirtualService may not delegate again",
            );
        }
        if !route.route.is_empty() {
            r.error(
                format!("{at}.route"),
                "a route with delegate may not set route",
            );
        }
        if route.redirect.is_some() {
            r.error(
                format!("{at}.redirect"),
                "a route with delegate may not set redirect",
            );
        }
        if route.direct_response.is_some() {
            r.error(
                format!("{at}.directResponse"),
                "a route with delegate may not set directResponse",
            );
        }
        validate_delegate(d, &format!("{at}.delegate"), r);
    } else if route.route.is_empty() && route.redirect.is_none() && route.direct_response.is_none()
    {
        r.error(
            at,
            "HTTP route must have one of route, redirect or directResponse",
        );
    }
    if route.redirect.is_some() {
        if !route.route.is_empty() {
            r.error(
                format!("{at}.route"),
                "route and redirect are mutually exclusive",
            );
        }
        if route.fault.is_some() {
            r.error(
                format!("{at}.fault"),
                "fault cannot be combined with redirect",
            );
        }
        if route.rewrite.is_some() {
            r.error(
                format!("{at}.rewrite"),
                "rewrite cannot be combined with redirect",
            );
        }
    }
    if route.direct_response.is_some() {
        for (set, name) in [
            (!route.route.is_empty(), "route"),
            (route.fault.is_some(), "fault"),
            (route.rewrite.is_some(), "rewrite"),
            (route.redirect.is_some(), "redirect"),
        ] {
            if set {
                r.error(
                    format!("{at}.{name}"),
                    format!("directResponse cannot be combined with {name}"),
                );
            }
        }
    }
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        r.error(
            format!("{at}.mirrors"),
            "mirror and mirrors cannot both be set",
        );
    }

    // Matches.
    for (j, m) in route.matches.iter().enumerate() {
        validate_match(m, &format!("{at}.match[{j}]"), ctx, r);
    }

    // Destinations.
    for (k, d) in route.route.iter().enumerate() {
        let dat = format!("{at}.route[{k}]");
        validate_destination(&d.destination, &format!("{dat}.destination"), r);
        if let Some(w) = d.weight
            && w < 0
        {
            r.error(
                format!("{dat}.weight"),
                format!("weight {w} must not be negative"),
            );
        }
        if let Some(h) = &d.headers {
            validate_headers(h, &format!("{dat}.headers"), r);
        }
    }
    if route.route.len() > 1 {
        let total: i64 = route
            .route
            .iter()
            .map(|d| i64::from(d.weight.unwrap_or(0).max(0)))
            .sum();
        if total == 0 {
            r.error(
                format!("{at}.route"),
                "total destination weight must be greater than 0",
            );
        }
    }

    if let Some(redirect) = &route.redirect {
        validate_redirect(redirect, &route.matches, &format!("{at}.redirect"), r);
    }
    if let Some(rw) = &route.rewrite {
        validate_rewrite(rw, &format!("{at}.rewrite"), r);
    }
    let sets_authority = |h: &Option<Headers>| {
        h.as_ref()
            .and_then(|h| h.request.as_ref())
            .is_some_and(|ops| {
                ops.set
                    .keys()
                    .chain(ops.add.keys())
                    .any(|k| k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host"))
            })
    };
    if route
        .rewrite
        .as_ref()
        .is_some_and(|rw| rw.authority.is_some())
        && sets_authority(&route.headers)
    {
        r.error(
            format!("{at}.headers.request"),
            "authority is set by both rewrite.authority and headers; set it once",
        );
    }
    if let Some(h) = &route.headers {
        validate_headers(h, &format!("{at}.headers"), r);
    }
    if let Some(t) = &route.timeout {
        r.check(format!("{at}.timeout"), check_duration(t));
    }
    if let Some(retries) = &route.retries {
        validate_retries(retries, &format!("{at}.retries"), r);
    }
    if let Some(f) = &route.fault {
        validate_fault(f, &format!("{at}.fault"), r);
    }
    if let Some(m) = &route.mirror {
        validate_destination(m, &format!("{at}.mirror"), r);
    }
    if let Some(p) = &route.mirror_percentage {
        r.check(
            format!("{at}.mirrorPercentage.value"),
            check_percentage(p.value),
        );
    }
    if let Some(p) = route.mirror_percent
        && p > 100
    {
        r.error(
            format!("{at}.mirrorPercent"),
            format!("mirror percent {p} must be at most 100"),
        );
    }
    for (k, m) in route.mirrors.iter().enumerate() {
        validate_destination(&m.destination, &format!("{at}.mirrors[{k}].destination"), r);
        if let Some(p) = &m.percentage {
            r.check(
                format!("{at}.mirrors[{k}].percentage.value"),
                check_percentage(p.value),
            );
        }
    }
    if let Some(c) = &route.cors_policy {
        validate_cors(c, &format!("{at}.corsPolicy"), r);
    }
    if let Some(d) = &route.direct_response {
        let dat = format!("{at}.directResponse");
        if !(200..=599).contains(&d.status) {
            r.error(
                format!("{dat}.status"),
                format!("status {} must be in the range 200..599", d.status),
            );
        }
        if let Some(body) = &d.body {
            let len = body.len();
            if len > 1024 * 1024 {
                r.error(
                    format!("{dat}.body"),
                    format!("body is {len} bytes; at most 1MB is allowed"),
                );
            } else if len > 100 * 1024 {
                r.warn(
                    format!("{dat}.body"),
                    format!("body is {len} bytes; large bodies are kept in every proxy's memory"),
                );
            }
        }
    }
}

fn validate_delegate(d: &Delegate, at: &str, r: &mut Report) {
    if d.name.is_empty() {
        r.error(format!("{at}.name"), "delegate name is required");
    } else if !is_dns1123_subdomain(&d.name) {
        r.error(
            format!("{at}.name"),
            format!("invalid delegate name {:?}", d.name),
        );
    }
    if let Some(ns) = &d.namespace
        && !is_dns1123_label(ns)
    {
        r.error(
            format!("{at}.namespace"),
            format!("invalid delegate namespace {ns:?}"),
        );
    }
}

fn validate_match(m: &HttpMatchRequest, at: &str, ctx: &RouteCtx, r: &mut Report) {
    if let Some(u) = &m.uri {
        r.check(format!("{at}.uri"), check_string_match(u, true));
        if m.ignore_uri_case && matches!(u, StringMatch::Regex(_)) {
            r.warn(
                format!("{at}.ignoreUriCase"),
                "ignoreUriCase has no effect on regex uri matches",
            );
        }
    }
    for (name, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            r.check(format!("{at}.{name}"), check_string_match(sm, false));
        }
    }
    for (field, headers) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, hm) in headers {
            let hat = format!("{at}.{field}[{name}]");
            if let Some(claim) = name.strip_prefix(JWT_CLAIM_PREFIX) {
                if !ctx.gateway_only {
                    r.error(&hat, "JWT claim based routing (@request.auth.claims) is only supported on gateways");
                }
                if claim.is_empty() || !claim.starts_with('.') {
                    r.error(
                        &hat,
                        "a claim header must look like @request.auth.claims.NAME",
                    );
                }
            } else {
                r.check(&hat, check_header_name(name));
            }
            r.check(&hat, check_header_match(hm));
        }
    }
    for (name, qm) in &m.query_params {
        let qat = format!("{at}.queryParams[{name}]");
        if name.is_empty() {
            r.error(&qat, "query parameter name must not be empty");
        }
        match qm {
            HeaderMatch::Match(StringMatch::Prefix(_)) => r.error(
                &qat,
                "query parameters support only exact and regex matches",
            ),
            other => r.check(&qat, check_header_match(other)),
        }
    }
    if let Some(p) = m.port {
        r.check(format!("{at}.port"), check_port(p));
    }
    check_labels(&m.source_labels, &format!("{at}.sourceLabels"), r);
    for (k, g) in m.gateways.iter().enumerate() {
        check_gateway_name(g, &format!("{at}.gateways[{k}]"), r);
    }
    if let Some(ns) = &m.source_namespace
        && !is_dns1123_label(ns)
    {
        r.error(
            format!("{at}.sourceNamespace"),
            format!("invalid namespace {ns:?}"),
        );
    }
}

pub(crate) fn validate_destination(d: &Destination, at: &str, r: &mut Report) {
    if d.host.is_empty() {
        r.error(format!("{at}.host"), "destination host is required");
    } else if d.host == "*" {
        r.error(format!("{at}.host"), "destination host may not be \"*\"");
    } else if d.host.parse::<std::net::IpAddr>().is_err() {
        r.check(
            format!("{at}.host"),
            check_wildcard_host(&d.host).map(|_| ()),
        );
    }
    if let Some(s) = &d.subset
        && !is_dns1123_label(s)
    {
        r.error(
            format!("{at}.subset"),
            format!("subset {s:?} must be a DNS-1123 label"),
        );
    }
    if let Some(p) = &d.port {
        r.check(format!("{at}.port.number"), check_port(p.number));
    }
}

fn validate_l4_destinations(route: &[RouteDestination], at: &str, r: &mut Report) {
    for (k, d) in route.iter().enumerate() {
        validate_destination(&d.destination, &format!("{at}[{k}].destination"), r);
        if let Some(w) = d.weight
            && w < 0
        {
            r.error(
                format!("{at}[{k}].weight"),
                format!("weight {w} must not be negative"),
            );
        }
    }
    if route.len() > 1
        && route
            .iter()
            .map(|d| i64::from(d.weight.unwrap_or(0).max(0)))
            .sum::<i64>()
            == 0
    {
        r.error(at, "total destination weight must be greater than 0");
    }
}

fn validate_redirect(rd: &HttpRedirect, matches: &[HttpMatchRequest], at: &str, r: &mut Report) {
    let empty = rd.uri.is_none()
        && rd.authority.is_none()
        && rd.port.is_none()
        && rd.derive_port.is_none()
        && rd.scheme.is_none()
        && rd.redirect_code.is_none()
        && rd.prefix_rewrite.is_none();
    if empty {
        r.error(at, "redirect must specify at least one of uri, authority, port, scheme, redirectCode or prefixRewrite");
    }
    if rd.uri.is_some() && rd.prefix_rewrite.is_some() {
        r.error(
            format!("{at}.prefixRewrite"),
            "uri and prefixRewrite are mutually exclusive",
        );
    }
    if rd.prefix_rewrite.is_some() {
        let all_prefix = !matches.is_empty()
            && matches
                .iter()
                .all(|m| matches!(m.uri, Some(StringMatch::Prefix(_))));
        if !all_prefix {
            r.error(
                format!("{at}.prefixRewrite"),
                "prefixRewrite needs every match to have a prefix uri match",
            );
        }
    }
    if let Some(u) = &rd.uri
        && u.is_empty()
    {
        r.error(format!("{at}.uri"), "redirect uri must not be empty");
    }
    if let Some(a) = &rd.authority
        && a.is_empty()
    {
        r.error(
            format!("{at}.authority"),
            "redirect authority must not be empty",
        );
    }
    if let Some(code) = rd.redirect_code
        && !(300..=399).contains(&code)
    {
        r.error(
            format!("{at}.redirectCode"),
            format!("redirect code {code} must be a 3xx code"),
        );
    }
    if let Some(s) = &rd.scheme
        && s != "http"
        && s != "https"
    {
        r.error(
            format!("{at}.scheme"),
            format!("redirect scheme {s:?} must be http or https"),
        );
    }
    if let Some(p) = rd.port {
        r.check(format!("{at}.port"), check_port(p));
        if rd.derive_port.is_some() {
            r.error(
                format!("{at}.derivePort"),
                "port and derivePort are mutually exclusive",
            );
        }
    }
}

fn validate_rewrite(rw: &HttpRewrite, at: &str, r: &mut Report) {
    if rw.uri.is_none() && rw.authority.is_none() && rw.uri_regex_rewrite.is_none() {
        r.error(at, "rewrite must specify uri, authority or uriRegexRewrite");
    }
    if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
        r.error(
            format!("{at}.uriRegexRewrite"),
            "uri and uriRegexRewrite are mutually exclusive",
        );
    }
    if let Some(re) = &rw.uri_regex_rewrite {
        if re.pattern.is_empty() || re.rewrite.is_empty() {
            r.error(
                format!("{at}.uriRegexRewrite"),
                "uriRegexRewrite needs both match and rewrite",
            );
        }
        if !re.pattern.is_empty() {
            r.check(
                format!("{at}.uriRegexRewrite.match"),
                validate_regex(&re.pattern),
            );
        }
    }
    if let Some(a) = &rw.authority
        && a.is_empty()
    {
        r.error(
            format!("{at}.authority"),
            "rewrite authority must not be empty",
        );
    }
}

pub(crate) fn validate_headers(h: &Headers, at: &str, r: &mut Report) {
    for (name, ops) in [("request", &h.request), ("response", &h.response)] {
        if let Some(ops) = ops {
            validate_header_ops(ops, &format!("{at}.{name}"), name == "request", r);
        }
    }
}

fn validate_header_ops(ops: &HeaderOperations, at: &str, is_request: bool, r: &mut Report) {
    let check_name = |name: &str, r: &mut Report, hat: &str, op: &str| {
        if name.eq_ignore_ascii_case(":authority") && is_request && op != "remove" {
            return;
        }
        if name.starts_with(':') {
            r.error(hat, format!("pseudo-header {name:?} cannot be manipulated"));
        } else if name.eq_ignore_ascii_case("host") {
            r.error(
                hat,
                "the host header cannot be manipulated; use rewrite.authority",
            );
        } else {
            r.check(hat, check_header_name(name));
        }
    };
    for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let hat = format!("{at}.{op}[{name}]");
            check_name(name, r, &hat, op);
            r.check(&hat, check_header_value(value));
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        let hat = format!("{at}.remove[{i}]");
        check_name(name, r, &hat, "remove");
    }
}

fn validate_retries(rt: &HttpRetry, at: &str, r: &mut Report) {
    if rt.attempts < 0 {
        r.error(format!("{at}.attempts"), "attempts must not be negative");
    }
    if rt.attempts == 0 {
        for (set, name) in [
            (rt.per_try_timeout.is_some(), "perTryTimeout"),
            (rt.retry_on.is_some(), "retryOn"),
            (
                rt.retry_remote_localities.is_some(),
                "retryRemoteLocalities",
            ),
        ] {
            if set {
                r.error(
                    format!("{at}.{name}"),
                    format!("{name} cannot be set when attempts is 0 (retries disabled)"),
                );
            }
        }
    }
    if let Some(t) = &rt.per_try_timeout {
        r.check(format!("{at}.perTryTimeout"), check_duration(t));
    }
    if let Some(b) = &rt.backoff {
        r.check(format!("{at}.backoff"), check_duration(b));
    }
    if let Some(on) = &rt.retry_on {
        for policy in on.split(',').map(str::trim) {
            let ok = RETRY_ON.contains(&policy)
                || policy
                    .parse::<u16>()
                    .is_ok_and(|c| (100..=599).contains(&c));
            if !ok {
                r.error(
                    format!("{at}.retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn check_fault_percentage(p: &Option<Percent>, at: &str, r: &mut Report) {
    if let Some(p) = p {
        let v = p.value;
        if !(v == 0.0 || (0.0001..=100.0).contains(&v)) {
            r.error(
                format!("{at}.percentage.value"),
                format!("percentage {v} must be 0 or in the range 0.0001..100"),
            );
        }
    }
}

fn validate_fault(f: &HttpFaultInjection, at: &str, r: &mut Report) {
    if f.delay.is_none() && f.abort.is_none() {
        r.error(at, "fault must specify a delay or an abort");
    }
    if let Some(d) = &f.delay {
        let dat = format!("{at}.delay");
        check_fault_percentage(&d.percentage, &dat, r);
        if let Some(p) = d.percent
            && !(0..=100).contains(&p)
        {
            r.error(
                format!("{dat}.percent"),
                format!("percent {p} must be in the range 0..100"),
            );
        }
        if d.exponential_delay.is_some() {
            r.error(
                format!("{dat}.exponentialDelay"),
                "exponentialDelay is not supported",
            );
        }
        match &d.fixed_delay {
            Some(fd) => r.check(format!("{dat}.fixedDelay"), check_duration(fd)),
            None if d.exponential_delay.is_none() => {
                r.error(format!("{dat}.fixedDelay"), "delay must specify fixedDelay")
            }
            None => {}
        }
    }
    if let Some(a) = &f.abort {
        let aat = format!("{at}.abort");
        check_fault_percentage(&a.percentage, &aat, r);
        if a.http2_error.is_some() {
            r.error(format!("{aat}.http2Error"), "http2Error is not supported");
        }
        match (&a.http_status, &a.grpc_status) {
            (Some(_), Some(_)) => r.error(&aat, "httpStatus and grpcStatus are mutually exclusive"),
            (Some(s), None) => {
                if !(200..=600).contains(s) {
                    r.error(
                        format!("{aat}.httpStatus"),
                        format!("HTTP status {s} must be in the range 200..599"),
                    );
                }
            }
            (None, Some(g)) => {
                if crate::networking::virtual_service::grpc_status_code(g).is_none() {
                    r.error(
                        format!("{aat}.grpcStatus"),
                        format!("{g:?} is not a gRPC status name such as UNAVAILABLE"),
                    );
                }
            }
            (None, None) if a.http2_error.is_none() => {
                r.error(&aat, "abort must specify httpStatus or grpcStatus")
            }
            (None, None) => {}
        }
    }
}

fn validate_cors(c: &CorsPolicy, at: &str, r: &mut Report) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        let oat = format!("{at}.allowOrigins[{i}]");
        if o.value().is_empty() {
            r.error(&oat, "origin must not be empty");
        } else {
            r.check(&oat, check_string_match(o, false));
        }
    }
    for (i, o) in c.allow_origin.iter().enumerate() {
        if o.is_empty() {
            r.error(format!("{at}.allowOrigin[{i}]"), "origin must not be empty");
        }
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&m.as_str()) {
            r.error(
                format!("{at}.allowMethods[{i}]"),
                format!("{m:?} is not a standard HTTP method"),
            );
        }
    }
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if h != "*" {
                r.check(format!("{at}.{field}[{i}]"), check_header_name(h));
            }
        }
    }
    if let Some(max_age) = &c.max_age {
        if max_age.as_std().subsec_nanos() != 0 {
            r.error(
                format!("{at}.maxAge"),
                format!("maxAge {max_age} must be whole seconds"),
            );
        } else if max_age.is_zero() {
            r.error(format!("{at}.maxAge"), "maxAge must be at least 1s");
        }
    }
}

/// IST0130 (rule unreachable after a catch-all) and IST0131 (duplicate match).
fn unreachable_rules(routes: &[HttpRoute], r: &mut Report) {
    let mut catch_all: Option<usize> = None;
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, route) in routes.iter().enumerate() {
        if let Some(c) = catch_all {
            r.warn(
                format!("spec.http[{i}]"),
                format!("route is unreachable: spec.http[{c}] matches every request (IST0130)"),
            );
            continue;
        }
        if route.matches.is_empty() || route.matches.iter().any(is_catch_all) {
            catch_all = Some(i);
        }
        for (j, m) in route.matches.iter().enumerate() {
            let mut key_match = m.clone();
            key_match.name = None;
            let key = serde_json::to_string(&key_match).unwrap_or_default();
            if let Some((pi, pj)) = seen.get(&key) {
                r.warn(
                    format!("spec.http[{i}].match[{j}]"),
                    format!(
                        "match is identical to spec.http[{pi}].match[{pj}] and never used (IST0131)"
                    ),
                );
            } else {
                seen.insert(key, (i, j));
            }
        }
    }
}

/// A match that every request satisfies.
fn is_catch_all(m: &HttpMatchRequest) -> bool {
    let uri_any = match &m.uri {
        None => true,
        Some(StringMatch::Prefix(p)) => p == "/" || p.is_empty(),
        Some(StringMatch::Regex(re)) => re == ".*",
        Some(StringMatch::Exact(_)) => false,
    };
    uri_any
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.query_params.is_empty()
        && m.without_headers.is_empty()
        && m.port.is_none()
        && m.source_labels.is_empty()
        && m.gateways.is_empty()
        && m.source_namespace.is_none()
}
