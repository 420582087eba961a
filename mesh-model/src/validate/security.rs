//! PeerAuthentication, RequestAuthentication and AuthorizationPolicy rules.

use crate::security::PolicyTargetReference;
use crate::security::WorkloadSelector;
use crate::security::authorization_policy::{
    Action, AuthorizationPolicy, Condition, Operation, Source,
};
use crate::security::peer_authentication::PeerAuthentication;
use crate::security::request_authentication::RequestAuthentication;
use crate::validate::common::{
    check_duration, check_header_name, check_ip_or_cidr, check_port, check_selector,
    is_dns1123_label,
};
use crate::validate::{Report, ValidationContext};

pub(crate) fn validate_peer_authentication(
    pa: &PeerAuthentication,
    ctx: &ValidationContext,
    r: &mut Report,
) {
    let spec = &pa.spec;
    let has_selector = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if let Some(sel) = &spec.selector {
        check_selector(&sel.match_labels, "spec.selector.matchLabels", r);
        if has_selector && pa.metadata.namespace() == ctx.root_namespace {
            r.warn(
                "spec.selector",
                format!(
                    "workload-selector policies in the root namespace {:?} are ignored",
                    ctx.root_namespace
                ),
            );
        }
    }
    if !spec.port_level_mtls.is_empty() && !has_selector {
        r.error("spec.portLevelMtls", "portLevelMtls requires a non-empty selector (it is not allowed on mesh or namespace wide policies)");
    }
    for port in spec.port_level_mtls.keys() {
        r.check(format!("spec.portLevelMtls[{port}]"), check_port(*port));
    }
}

fn check_selector_and_targets(
    selector: &Option<WorkloadSelector>,
    target_ref: &Option<PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    own_ns: &str,
    selector_path: &str,
    r: &mut Report,
) {
    if let Some(sel) = selector {
        check_selector(&sel.match_labels, selector_path, r);
    }
    let has_targets = target_ref.is_some() || !target_refs.is_empty();
    if selector.is_some() && has_targets {
        r.error(
            "spec",
            "only one of selector, targetRef or targetRefs may be set",
        );
    }
    if target_ref.is_some() && !target_refs.is_empty() {
        r.error(
            "spec.targetRefs",
            "targetRef and targetRefs are mutually exclusive",
        );
    }
    if target_refs.len() > 16 {
        r.error("spec.targetRefs", "at most 16 targetRefs are allowed");
    }
    let refs = target_ref
        .iter()
        .map(|t| ("spec.targetRef".to_string(), t))
        .chain(
            target_refs
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("spec.targetRefs[{i}]"), t)),
        );
    for (at, t) in refs {
        if !matches!(
            t.kind.as_str(),
            "Gateway" | "GatewayClass" | "Service" | "ServiceEntry"
        ) {
            r.error(
                format!("{at}.kind"),
                format!(
                    "target kind {:?} must be Gateway, GatewayClass, Service or ServiceEntry",
                    t.kind
                ),
            );
        }
        if t.name.is_empty() {
            r.error(format!("{at}.name"), "target name is required");
        }
        if !t.namespace.is_empty() && t.namespace != own_ns {
            r.error(
                format!("{at}.namespace"),
                "targets must be in the policy's own namespace",
            );
        }
    }
}

pub(crate) fn validate_request_authentication(ra: &RequestAuthentication, r: &mut Report) {
    let spec = &ra.spec;
    check_selector_and_targets(
        &spec.selector,
        &spec.target_ref,
        &spec.target_refs,
        ra.metadata.namespace(),
        "spec.selector.matchLabels",
        r,
    );
    if spec.jwt_rules.len() > 4096 {
        r.error("spec.jwtRules", "at most 4096 JWT rules are allowed");
    }
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        if rule.issuer.is_empty() && rule.jwks_uri.is_none() {
            r.error(&at, "issuer or jwksUri must be set");
        }
        for (j, a) in rule.audiences.iter().enumerate() {
            if a.is_empty() {
                r.error(format!("{at}.audiences[{j}]"), "audience must not be empty");
            }
        }
        if let Some(uri) = &rule.jwks_uri {
            if uri.len() > 2048 {
                r.error(
                    format!("{at}.jwksUri"),
                    "jwksUri is longer than 2048 characters",
                );
            }
            let rest = uri
                .strip_prefix("https://")
                .or_else(|| uri.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.starts_with('/') => {}
                _ => r.error(
                    format!("{at}.jwksUri"),
                    format!("jwksUri {uri:?} must be an http or https URL"),
                ),
            }
        }
        if let Some(jwks) = &rule.jwks {
            let ok = serde_json::from_str::<serde_json::Value>(jwks)
                .ok()
                .is_some_and(|v| {
                    v.get("keys").is_some_and(|k| k.is_array()) || v.get("kty").is_some()
                });
            if !ok {
                r.error(
                    format!("{at}.jwks"),
                    "jwks must be a JSON Web Key Set ({\"keys\": [...]})",
                );
            }
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                r.error(
                    format!("{at}.fromHeaders[{j}].name"),
                    "header name must not be empty",
                );
            } else {
                r.check(
                    format!("{at}.fromHeaders[{j}].name"),
                    check_header_name(&h.name),
                );
            }
        }
        for (field, list) in [
            ("fromParams", &rule.from_params),
            ("fromCookies", &rule.from_cookies),
            ("spaceDelimitedClaims", &rule.space_delimited_claims),
        ] {
            for (j, v) in list.iter().enumerate() {
                if v.is_empty() {
                    r.error(format!("{at}.{field}[{j}]"), "must not be empty");
                }
            }
        }
        for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
            let cat = format!("{at}.outputClaimToHeaders[{j}]");
            if c.header.is_empty() || c.claim.is_empty() {
                r.error(&cat, "header and claim are both required");
            }
            if !c.header.is_empty() {
                r.check(format!("{cat}.header"), check_header_name(&c.header));
            }
        }
        if let Some(h) = &rule.output_payload_to_header {
            r.check(format!("{at}.outputPayloadToHeader"), check_header_name(h));
        }
        if let Some(t) = &rule.timeout {
            r.check(format!("{at}.timeout"), check_duration(t));
        }
    }
}

const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

pub(crate) fn validate_authorization_policy(ap: &AuthorizationPolicy, r: &mut Report) {
    let spec = &ap.spec;
    let ns = ap.metadata.namespace();
    check_selector_and_targets(
        &spec.selector,
        &spec.target_ref,
        &spec.target_refs,
        ns,
        "spec.selector.matchLabels",
        r,
    );

    if matches!(spec.action, Action::Deny | Action::Custom) && spec.rules.is_none() {
        r.error(
            "spec.rules",
            format!(
                "{} policies must have rules; use `rules: [{{}}]` to match every request",
                spec.action
            ),
        );
    }
    match (&spec.action, &spec.provider) {
        (Action::Custom, None) => r.error("spec.provider", "CUSTOM action requires provider.name"),
        (Action::Custom, Some(p)) if p.name.is_empty() => {
            r.error("spec.provider.name", "provider name is required")
        }
        (Action::Custom, Some(_)) => {}
        (_, Some(_)) => r.error(
            "spec.provider",
            "provider is only allowed with action CUSTOM",
        ),
        (_, None) => {}
    }
    if let Some(v) = ap.metadata.annotations.get(DRY_RUN_ANNOTATION) {
        if !matches!(spec.action, Action::Allow | Action::Deny) {
            r.error(
                format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
                "dry-run is only supported on ALLOW and DENY policies",
            );
        }
        if v != "true" && v != "false" {
            r.error(
                format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
                format!("dry-run value {v:?} must be true or false"),
            );
        }
    }
    let custom = spec.action == Action::Custom;
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.len() > 512 {
        r.error("spec.rules", "at most 512 rules are allowed");
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(from) = &rule.from {
            if from.is_empty() {
                r.error(
                    format!("{at}.from"),
                    "from must not be empty; leave it out to match any source",
                );
            }
            for (j, f) in from.iter().enumerate() {
                let fat = format!("{at}.from[{j}].source");
                match &f.source {
                    None => r.error(&fat, "source is required"),
                    Some(s) => validate_source(s, &fat, custom, r),
                }
            }
        }
        if let Some(to) = &rule.to {
            if to.is_empty() {
                r.error(
                    format!("{at}.to"),
                    "to must not be empty; leave it out to match any operation",
                );
            }
            for (j, t) in to.iter().enumerate() {
                let tat = format!("{at}.to[{j}].operation");
                match &t.operation {
                    None => r.error(&tat, "operation is required"),
                    Some(op) => validate_operation(op, &tat, r),
                }
            }
        }
        if let Some(when) = &rule.when {
            for (j, c) in when.iter().enumerate() {
                validate_condition(c, &format!("{at}.when[{j}]"), custom, r);
            }
        }
    }
}

fn check_values(values: &[String], at: &str, r: &mut Report) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            r.error(format!("{at}[{i}]"), "empty value is not allowed");
        }
    }
}

fn validate_source(s: &Source, at: &str, custom: bool, r: &mut Report) {
    if s == &Source::default() {
        r.error(at, "source must set at least one field");
        return;
    }
    let fields: [(&str, &Vec<String>); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ];
    for (name, values) in fields {
        check_values(values, &format!("{at}.{name}"), r);
        let identity = !name.contains("IpBlocks") && !name.contains("ipBlocks");
        if custom && identity && !values.is_empty() {
            r.error(
                format!("{at}.{name}"),
                format!("{name} is not supported with action CUSTOM"),
            );
        }
    }
    for (name, values) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for (i, v) in values.iter().enumerate() {
            if !v.is_empty() {
                r.check(format!("{at}.{name}[{i}]"), check_ip_or_cidr(v));
            }
        }
    }
    for (name, values) in [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        if values.len() > 16 {
            r.error(
                format!("{at}.{name}"),
                "at most 16 service accounts are allowed",
            );
        }
        for (i, v) in values.iter().enumerate() {
            let ok = v.split_once('/').is_some_and(|(ns, sa)| {
                is_dns1123_label(ns) && !sa.is_empty() && !sa.contains('/') && !v.contains('*')
            });
            if !ok {
                r.error(
                    format!("{at}.{name}[{i}]"),
                    format!("service account {v:?} must be namespace/name without wildcards"),
                );
            }
        }
    }
    let has_sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let has_principal_or_ns = !s.principals.is_empty()
        || !s.not_principals.is_empty()
        || !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty();
    if has_sa && has_principal_or_ns {
        r.error(
            format!("{at}.serviceAccounts"),
            "serviceAccounts cannot be combined with principals or namespaces",
        );
    }
}

fn check_path_template(p: &str) -> Result<(), String> {
    if !p.contains('{') && !p.contains('}') {
        return Ok(());
    }
    let segments: Vec<&str> = p.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.contains('{') || seg.contains('}') {
            match *seg {
                "{*}" => {}
                "{**}" if i == segments.len() - 1 => {}
                "{**}" => return Err(format!("path {p:?}: {{**}} must be the last segment")),
                _ => {
                    return Err(format!(
                        "path {p:?}: a template segment must be exactly {{*}} or {{**}}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_operation(op: &Operation, at: &str, r: &mut Report) {
    if op == &Operation::default() {
        r.error(at, "operation must set at least one field");
        return;
    }
    for (name, values) in [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("ports", &op.ports),
        ("notPorts", &op.not_ports),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ] {
        check_values(values, &format!("{at}.{name}"), r);
    }
    for (name, values) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        for (i, p) in values.iter().enumerate() {
            if !p.is_empty() && p.parse::<u16>().is_err() {
                r.error(
                    format!("{at}.{name}[{i}]"),
                    format!("port {p:?} must be a number in the range 0..65535"),
                );
            }
        }
    }
    for (name, values) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
        for (i, p) in values.iter().enumerate() {
            r.check(format!("{at}.{name}[{i}]"), check_path_template(p));
        }
    }
}

fn validate_condition(c: &Condition, at: &str, custom: bool, r: &mut Report) {
    if c.values.is_empty() && c.not_values.is_empty() {
        r.error(at, "condition must set values or notValues");
    }
    check_values(&c.values, &format!("{at}.values"), r);
    check_values(&c.not_values, &format!("{at}.notValues"), r);
    let key = c.key.as_str();
    let kat = format!("{at}.key");
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
    };
    let known = match key {
        "" => {
            r.error(&kat, "key is required");
            return;
        }
        "destination.namespace"
        | "destination.labels"
        | "destination.name"
        | "destination.user" => {
            r.error(
                &kat,
                format!("{key} is not supported; use the policy's selector instead"),
            );
            return;
        }
        "source.ip" | "remote.ip" | "destination.ip" => {
            for (i, v) in c.values.iter().chain(&c.not_values).enumerate() {
                if !v.is_empty() {
                    r.check(format!("{at}.values[{i}]"), check_ip_or_cidr(v));
                }
            }
            true
        }
        "destination.port" => {
            for (i, v) in c.values.iter().chain(&c.not_values).enumerate() {
                if v.parse::<u16>().is_err() {
                    r.error(
                        format!("{at}.values[{i}]"),
                        format!("port {v:?} must be a number in the range 0..65535"),
                    );
                }
            }
            true
        }
        "source.namespace"
        | "source.serviceAccount"
        | "source.principal"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => true,
        _ if bracketed("request.headers") || bracketed("request.auth.claims") => true,
        // istiod accepts these only in the form `experimental.envoy.filters.FILTER[KEY]`.
        _ if key.starts_with("experimental.envoy.filters.") => {
            let rest = &key["experimental.envoy.filters.".len()..];
            let ok = rest
                .split_once('[')
                .is_some_and(|(f, k)| !f.is_empty() && k.len() > 1 && k.ends_with(']'));
            if !ok {
                r.error(
                    &kat,
                    format!(
                        "{key:?} must have the form experimental.envoy.filters.FILTER[KEY] \
                         (for instance experimental.envoy.filters.network.mysql_proxy[db.table])"
                    ),
                );
            }
            true
        }
        _ => false,
    };
    if !known {
        r.error(&kat, format!("unknown condition key {key:?}"));
    }
    if custom && (key.starts_with("source.") || key.starts_with("request.auth.")) {
        r.error(&kat, format!("{key} is not supported with action CUSTOM"));
    }
}
