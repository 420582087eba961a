//! DestinationRule rules (`ValidateDestinationRule`, `ValidateLocalityLbSetting`).

use std::collections::BTreeSet;

use crate::networking::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLbSetting, OutlierDetection, SimpleLb, TrafficPolicy,
};
use crate::validate::Report;
use crate::validate::common::{
    check_duration, check_duration_or_zero, check_export_to, check_header_name, check_labels,
    check_port, check_selector, check_wildcard_host, is_dns1123_label,
};

pub(crate) fn validate(dr: &DestinationRule, r: &mut Report) {
    let spec = &dr.spec;
    let ns = dr.metadata.namespace();
    if spec.host.is_empty() {
        r.error("spec.host", "host is required");
    } else if spec.host.parse::<std::net::IpAddr>().is_err() {
        r.check("spec.host", check_wildcard_host(&spec.host).map(|_| ()));
    }
    if let Some(tp) = &spec.traffic_policy {
        validate_traffic_policy(tp, "spec.trafficPolicy", ns, r);
    }
    let mut names = BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if subset.name.is_empty() {
            r.error(format!("{at}.name"), "subset name is required");
        } else if !is_dns1123_label(&subset.name) {
            r.error(
                format!("{at}.name"),
                format!("subset name {:?} must be a DNS-1123 label", subset.name),
            );
        } else if !names.insert(subset.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("duplicate subset name {:?}", subset.name),
            );
        }
        check_labels(&subset.labels, &format!("{at}.labels"), r);
        if let Some(tp) = &subset.traffic_policy {
            validate_traffic_policy(tp, &format!("{at}.trafficPolicy"), ns, r);
        }
    }
    check_export_to(&spec.export_to, ns, false, "spec.exportTo", r);
    if let Some(sel) = &spec.workload_selector {
        check_selector(&sel.labels, "spec.workloadSelector.labels", r);
        let local_only = spec.export_to.iter().all(|e| e == "." || e == ns);
        if spec.export_to.is_empty() || !local_only {
            r.error(
                "spec.exportTo",
                "a DestinationRule with a workloadSelector must be exported only to its own namespace (exportTo: [\".\"])",
            );
        }
    }
}

fn validate_traffic_policy(tp: &TrafficPolicy, at: &str, ns: &str, r: &mut Report) {
    if tp == &TrafficPolicy::default() {
        r.error(at, "traffic policy must set at least one field");
        return;
    }
    let has_outlier = tp.outlier_detection.is_some();
    if let Some(lb) = &tp.load_balancer {
        validate_lb(lb, &format!("{at}.loadBalancer"), has_outlier, r);
    }
    if let Some(cp) = &tp.connection_pool {
        validate_connection_pool(cp, &format!("{at}.connectionPool"), r);
    }
    if let Some(od) = &tp.outlier_detection {
        validate_outlier(od, &format!("{at}.outlierDetection"), r);
    }
    if let Some(tls) = &tp.tls {
        validate_client_tls(tls, &format!("{at}.tls"), ns, r);
    }
    if tp.port_level_settings.len() > 4096 {
        r.error(
            format!("{at}.portLevelSettings"),
            "at most 4096 port level settings are allowed",
        );
    }
    let mut ports = BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pat = format!("{at}.portLevelSettings[{i}]");
        match &pl.port {
            None => r.error(
                format!("{pat}.port"),
                "port is required in port level settings",
            ),
            Some(p) => {
                r.check(format!("{pat}.port.number"), check_port(p.number));
                if !ports.insert(p.number) {
                    r.error(
                        format!("{pat}.port.number"),
                        format!("duplicate port level settings for port {}", p.number),
                    );
                }
            }
        }
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            r.error(&pat, "port level settings must set at least one policy");
        }
        if let Some(lb) = &pl.load_balancer {
            validate_lb(
                lb,
                &format!("{pat}.loadBalancer"),
                pl.outlier_detection.is_some(),
                r,
            );
        }
        if let Some(cp) = &pl.connection_pool {
            validate_connection_pool(cp, &format!("{pat}.connectionPool"), r);
        }
        if let Some(od) = &pl.outlier_detection {
            validate_outlier(od, &format!("{pat}.outlierDetection"), r);
        }
        if let Some(tls) = &pl.tls {
            validate_client_tls(tls, &format!("{pat}.tls"), ns, r);
        }
    }
    if let Some(t) = &tp.tunnel {
        let tat = format!("{at}.tunnel");
        if tp.proxy_protocol.is_some() {
            r.error(&tat, "tunnel cannot be combined with proxyProtocol");
        }
        if let Some(p) = &t.protocol
            && p != "CONNECT"
            && p != "POST"
        {
            r.error(
                format!("{tat}.protocol"),
                format!("tunnel protocol {p:?} must be CONNECT or POST"),
            );
        }
        if t.target_host.is_empty() {
            r.error(
                format!("{tat}.targetHost"),
                "tunnel target host is required",
            );
        } else if t.target_host.parse::<std::net::IpAddr>().is_err() {
            r.check(
                format!("{tat}.targetHost"),
                check_wildcard_host(&t.target_host).map(|_| ()),
            );
        }
        r.check(format!("{tat}.targetPort"), check_port(t.target_port));
    }
    if let Some(rb) = &tp.retry_budget {
        if let Some(p) = rb.percent
            && !(0.0..=100.0).contains(&p)
        {
            r.error(
                format!("{at}.retryBudget.percent"),
                format!("percent {p} must be in the range 0..100"),
            );
        }
        if let Some(d) = &rb.budget_interval {
            r.check(
                format!("{at}.retryBudget.budgetInterval"),
                check_duration(d),
            );
        }
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn validate_lb(lb: &LoadBalancerSettings, at: &str, has_outlier: bool, r: &mut Report) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        r.error(at, "simple and consistentHash are mutually exclusive");
    }
    if let Some(ch) = &lb.consistent_hash {
        let cat = format!("{at}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if keys != 1 {
            r.error(&cat, "exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName must be set");
        }
        if let Some(h) = &ch.http_header_name {
            r.check(format!("{cat}.httpHeaderName"), check_header_name(h));
        }
        if let Some(q) = &ch.http_query_parameter_name
            && q.is_empty()
        {
            r.error(
                format!("{cat}.httpQueryParameterName"),
                "query parameter name must not be empty",
            );
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                r.error(format!("{cat}.httpCookie.name"), "cookie name is required");
            }
            if let Some(ttl) = &c.ttl {
                r.check(format!("{cat}.httpCookie.ttl"), check_duration_or_zero(ttl));
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            r.error(&cat, "ringHash and maglev are mutually exclusive");
        }
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            r.error(
                format!("{cat}.minimumRingSize"),
                "the deprecated minimumRingSize cannot be combined with ringHash or maglev",
            );
        }
        if let Some(size) = ch.maglev.as_ref().and_then(|m| m.table_size)
            && (!is_prime(size) || size >= 5_000_011)
        {
            r.error(
                format!("{cat}.maglev.tableSize"),
                format!("table size {size} must be a prime number below 5000011"),
            );
        }
    }
    if let Some(w) = &lb.warmup {
        let wat = format!("{at}.warmup");
        if lb.warmup_duration_secs.is_some() {
            r.error(
                &wat,
                "warmup and the deprecated warmupDurationSecs are mutually exclusive",
            );
        }
        match &w.duration {
            Some(d) => r.check(format!("{wat}.duration"), check_duration(d)),
            None => r.error(format!("{wat}.duration"), "warmup duration is required"),
        }
        if let Some(a) = w.aggression
            && a <= 0.0
        {
            r.error(
                format!("{wat}.aggression"),
                format!("aggression {a} must be greater than 0"),
            );
        }
        if let Some(p) = w.minimum_percent
            && !(0.0..=100.0).contains(&p)
        {
            r.error(
                format!("{wat}.minimumPercent"),
                format!("minimum percent {p} must be in the range 0..100"),
            );
        }
    }
    if lb.warmup.is_some() || lb.warmup_duration_secs.is_some() {
        let ok = lb.consistent_hash.is_none()
            && matches!(
                lb.simple,
                None | Some(
                    SimpleLb::Unspecified
                        | SimpleLb::RoundRobin
                        | SimpleLb::LeastRequest
                        | SimpleLb::LeastConn
                )
            );
        if !ok {
            r.error(
                at,
                "warmup is only supported with ROUND_ROBIN and LEAST_REQUEST",
            );
        }
    }
    if let Some(d) = &lb.warmup_duration_secs {
        r.check(format!("{at}.warmupDurationSecs"), check_duration(d));
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        r.error(
            at,
            "localityLbSetting and zoneAwareLbSetting are mutually exclusive",
        );
    }
    if let Some(l) = &lb.locality_lb_setting {
        validate_locality_lb(l, &format!("{at}.localityLbSetting"), has_outlier, r);
    }
}

/// The locality label keys that `failoverPriority` may not use together with `failover`.
const TOPOLOGY_KEYS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

fn check_locality(l: &str) -> Result<(), String> {
    if l.is_empty() {
        return Err("locality must not be empty".into());
    }
    let stars = l.matches('*').count();
    if stars > 1 || (stars == 1 && !l.ends_with('*')) {
        return Err(format!(
            "locality {l:?}: a wildcard is allowed once, only at the end"
        ));
    }
    if l.split('/').count() > 3 {
        return Err(format!("locality {l:?} must be region/zone/subzone"));
    }
    Ok(())
}

/// Checks a locality LB setting (also used for MeshConfig).
pub(crate) fn validate_locality_lb(
    l: &LocalityLbSetting,
    at: &str,
    has_outlier: bool,
    r: &mut Report,
) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        r.error(at, "distribute and failover are mutually exclusive");
    }
    let mut froms = BTreeSet::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let dat = format!("{at}.distribute[{i}]");
        r.check(format!("{dat}.from"), check_locality(&d.from));
        if !froms.insert(d.from.as_str()) {
            r.error(
                format!("{dat}.from"),
                format!("locality {:?} is distributed more than once", d.from),
            );
        }
        let mut sum: u64 = 0;
        for (to, w) in &d.to {
            r.check(format!("{dat}.to[{to}]"), check_locality(to));
            if !(1..=100).contains(w) {
                r.error(
                    format!("{dat}.to[{to}]"),
                    format!("weight {w} must be in the range 1..100"),
                );
            }
            sum += u64::from(*w);
        }
        if sum != 100 {
            r.error(
                format!("{dat}.to"),
                format!("weights sum to {sum}; they must sum to 100"),
            );
        }
    }
    for (i, f) in l.failover.iter().enumerate() {
        let fat = format!("{at}.failover[{i}]");
        if f.from == f.to {
            r.error(
                &fat,
                format!("failover from and to are the same region {:?}", f.from),
            );
        }
        for (name, v) in [("from", &f.from), ("to", &f.to)] {
            if v.is_empty() {
                r.error(format!("{fat}.{name}"), "region must not be empty");
            } else if v.contains('/') || v.contains('*') {
                r.error(
                    format!("{fat}.{name}"),
                    format!("failover {name} {v:?} must be a region (no '/' or '*')"),
                );
            }
        }
    }
    if !l.failover.is_empty() {
        for (i, p) in l.failover_priority.iter().enumerate() {
            let key = p.split('=').next().unwrap_or_default();
            if TOPOLOGY_KEYS.contains(&key) {
                r.error(
                    format!("{at}.failoverPriority[{i}]"),
                    format!("{key:?} cannot be used in failoverPriority together with failover"),
                );
            }
        }
    }
    for (i, p) in l.failover_priority.iter().enumerate() {
        if p.is_empty() {
            r.error(
                format!("{at}.failoverPriority[{i}]"),
                "failover priority label must not be empty",
            );
        }
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        r.warn(
            at,
            "locality failover only takes effect when outlierDetection is set",
        );
    }
}

fn non_negative(v: Option<i32>, at: String, r: &mut Report) {
    if let Some(v) = v
        && v < 0
    {
        r.error(at, format!("{v} must not be negative"));
    }
}

fn validate_connection_pool(cp: &ConnectionPoolSettings, at: &str, r: &mut Report) {
    if cp.tcp.is_none() && cp.http.is_none() {
        r.error(at, "connection pool must set tcp or http");
    }
    if let Some(t) = &cp.tcp {
        let tat = format!("{at}.tcp");
        non_negative(t.max_connections, format!("{tat}.maxConnections"), r);
        if let Some(d) = &t.connect_timeout {
            r.check(format!("{tat}.connectTimeout"), check_duration(d));
        }
        if let Some(d) = &t.max_connection_duration {
            r.check(format!("{tat}.maxConnectionDuration"), check_duration(d));
        }
        if let Some(d) = &t.idle_timeout {
            r.check(format!("{tat}.idleTimeout"), check_duration_or_zero(d));
        }
        if let Some(k) = &t.tcp_keepalive {
            if let Some(d) = &k.time {
                r.check(format!("{tat}.tcpKeepalive.time"), check_duration(d));
            }
            if let Some(d) = &k.interval {
                r.check(format!("{tat}.tcpKeepalive.interval"), check_duration(d));
            }
        }
    }
    if let Some(h) = &cp.http {
        let hat = format!("{at}.http");
        non_negative(
            h.http1_max_pending_requests,
            format!("{hat}.http1MaxPendingRequests"),
            r,
        );
        non_negative(h.http2_max_requests, format!("{hat}.http2MaxRequests"), r);
        non_negative(
            h.max_requests_per_connection,
            format!("{hat}.maxRequestsPerConnection"),
            r,
        );
        non_negative(h.max_retries, format!("{hat}.maxRetries"), r);
        non_negative(
            h.max_concurrent_streams,
            format!("{hat}.maxConcurrentStreams"),
            r,
        );
        if let Some(d) = &h.idle_timeout {
            r.check(format!("{hat}.idleTimeout"), check_duration_or_zero(d));
        }
        if h.use_client_protocol == Some(true)
            && h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
        {
            r.error(
                format!("{hat}.useClientProtocol"),
                "useClientProtocol cannot be combined with h2UpgradePolicy UPGRADE",
            );
        }
        if let Some(k) = &h.http2_keep_alive {
            let kat = format!("{hat}.http2KeepAlive");
            match (&k.interval, &k.timeout) {
                (Some(i), Some(t)) => {
                    r.check(format!("{kat}.interval"), check_duration(i));
                    r.check(format!("{kat}.timeout"), check_duration(t));
                }
                _ => r.error(&kat, "http2KeepAlive needs both interval and timeout"),
            }
        }
    }
}

fn validate_outlier(od: &OutlierDetection, at: &str, r: &mut Report) {
    if let Some(c) = od.consecutive_errors {
        r.warn(
            format!("{at}.consecutiveErrors"),
            "consecutiveErrors is deprecated and ignored; use consecutive5xxErrors",
        );
        if c < 0 {
            r.error(format!("{at}.consecutiveErrors"), "must not be negative");
        }
    }
    if od.consecutive_local_origin_failures.is_some()
        && od.split_external_local_origin_errors != Some(true)
    {
        r.error(
            format!("{at}.consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures requires splitExternalLocalOriginErrors: true",
        );
    }
    if let Some(d) = &od.interval {
        r.check(format!("{at}.interval"), check_duration(d));
    }
    if let Some(d) = &od.base_ejection_time {
        r.check(format!("{at}.baseEjectionTime"), check_duration(d));
    }
    for (name, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = v
            && !(0..=100).contains(&v)
        {
            r.error(
                format!("{at}.{name}"),
                format!("{v} must be in the range 0..100"),
            );
        }
    }
    for (i, c) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            r.error(
                format!("{at}.outlierDetectionHttpErrorCodes[{i}]"),
                format!("status code {c} must be in the range 100..599"),
            );
        }
    }
}

fn validate_client_tls(tls: &ClientTlsSettings, at: &str, ns: &str, r: &mut Report) {
    let has_files = tls.client_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some();
    if let Some(cred) = &tls.credential_name {
        if has_files {
            r.error(format!("{at}.credentialName"), "credentialName cannot be combined with clientCertificate, privateKey or caCertificates");
        }
        if let Some(rest) = cred.strip_prefix("configmap://")
            && let Some((cred_ns, _)) = rest.split_once('/')
            && cred_ns != ns
        {
            r.error(
                format!("{at}.credentialName"),
                "a configmap:// credential must be in the DestinationRule's namespace",
            );
        }
    }
    if tls.mode == ClientTlsMode::Mutual && tls.credential_name.is_none() {
        if tls.client_certificate.is_none() {
            r.error(
                format!("{at}.clientCertificate"),
                "MUTUAL requires clientCertificate (or credentialName)",
            );
        }
        if tls.private_key.is_none() {
            r.error(
                format!("{at}.privateKey"),
                "MUTUAL requires privateKey (or credentialName)",
            );
        }
    }
    if tls.insecure_skip_verify == Some(true) {
        match tls.mode {
            ClientTlsMode::Simple
                if (tls.ca_certificates.is_some()
                    || tls.credential_name.is_some()
                    || !tls.subject_alt_names.is_empty()) =>
            {
                r.error(at, "with insecureSkipVerify, SIMPLE may not set caCertificates, credentialName or subjectAltNames");
            }
            ClientTlsMode::Mutual
                if (tls.ca_certificates.is_some() || !tls.subject_alt_names.is_empty()) =>
            {
                r.error(
                    at,
                    "with insecureSkipVerify, MUTUAL may not set caCertificates or subjectAltNames",
                );
            }
            _ => {}
        }
    }
}
