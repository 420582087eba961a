//! Rules shared by several kinds: names, hosts, ports, durations, selectors, regexes,
//! exportTo, headers.

use std::net::IpAddr;

use crate::duration::Duration;
use crate::meta::Labels;
use crate::string_match::{HeaderMatch, StringMatch};
use crate::validate::Report;

/// Whether `s` is a DNS-1123 label: 1-63 lowercase alphanumerics or `-`, starting and ending
/// with an alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A DNS label as Istio accepts it in hosts (letters of either case).
fn is_host_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a DNS name (no wildcard): labels, length, TLD not all digits, optional trailing dot.
pub(crate) fn check_fqdn(host: &str) -> Result<(), String> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() {
        return Err("domain name is empty".into());
    }
    if host.len() > 255 {
        return Err(format!(
            "domain name {host:?} is longer than 255 characters"
        ));
    }
    for label in h.split('.') {
        if !is_host_label(label) {
            return Err(format!(
                "domain name {host:?} has an invalid label {label:?}"
            ));
        }
    }
    let tld = h.rsplit('.').next().unwrap_or(h);
    if h.contains('.') && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {host:?}: top-level domain may not be all digits"
        ));
    }
    Ok(())
}

/// Where a wildcard sits in a host.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wildcard {
    /// No `*`.
    None,
    /// `*` alone, or `*.` + a name.
    Full,
}

/// Checks a host that may start with a full wildcard label (`*` or `*.example.com`).
/// A partial wildcard (`*foo.com`, `a.*.com`) is an error here; callers that only warn
/// check [`is_partial_wildcard`] first.
pub(crate) fn check_wildcard_host(host: &str) -> Result<Wildcard, String> {
    if host.len() > 255 {
        return Err(format!("host {host:?} is longer than 255 characters"));
    }
    if host == "*" {
        return Ok(Wildcard::Full);
    }
    if let Some(rest) = host.strip_prefix("*.") {
        if rest.contains('*') {
            return Err(format!(
                "host {host:?}: a wildcard may only be the whole first label"
            ));
        }
        check_fqdn(rest)?;
        return Ok(Wildcard::Full);
    }
    if host.contains('*') {
        return Err(format!(
            "host {host:?}: a wildcard may only be the whole first label"
        ));
    }
    check_fqdn(host)?;
    Ok(Wildcard::None)
}

/// Whether `host` uses `*` other than as the whole first label.
pub(crate) fn is_partial_wildcard(host: &str) -> bool {
    match host.strip_prefix("*.") {
        Some(rest) => rest.contains('*'),
        None => host != "*" && host.contains('*'),
    }
}

/// Whether `host` is a valid (possibly wildcard) host, or an IP address.
pub fn is_valid_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok() || check_wildcard_host(host).is_ok()
}

/// Checks an IP address or CIDR block.
pub(crate) fn check_ip_or_cidr(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        None => s
            .parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("{s:?} is not an IP address or CIDR")),
        Some((ip, bits)) => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{s:?} is not a valid CIDR (bad address)"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match bits.parse::<u8>() {
                Ok(b) if b <= max && !bits.starts_with('+') => Ok(()),
                _ => Err(format!(
                    "{s:?} is not a valid CIDR (prefix length 0..{max})"
                )),
            }
        }
    }
}

/// Ports are 1..=65535.
pub(crate) fn check_port(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// Durations are at least 1ms, with millisecond precision.
pub(crate) fn check_duration(d: &Duration) -> Result<(), String> {
    if d.as_std() < std::time::Duration::from_millis(1) {
        return Err(format!("duration {d} must be at least 1ms"));
    }
    if !d.is_whole_millis() {
        return Err(format!("duration {d} has more than millisecond precision"));
    }
    Ok(())
}

/// Like [`check_duration`] but also accepts zero (idle timeouts, cookie ttl).
pub(crate) fn check_duration_or_zero(d: &Duration) -> Result<(), String> {
    if d.is_zero() {
        Ok(())
    } else {
        check_duration(d)
    }
}

/// Percentages are 0..=100.
pub(crate) fn check_percentage(v: f64) -> Result<(), String> {
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} must be in the range 0..100"))
    }
}

/// Checks an RE2 regular expression: not empty, at most 1024 characters, and parses.
pub fn validate_regex(re: &str) -> Result<(), String> {
    if re.is_empty() {
        return Err("regex must not be empty".into());
    }
    if re.len() > 1024 {
        return Err(format!(
            "regex is {} characters long; at most 1024 are allowed",
            re.len()
        ));
    }
    regex_syntax::Parser::new()
        .parse(re)
        .map(|_| ())
        .map_err(|e| {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or_default().trim();
            format!("invalid regex {re:?}: {last}")
        })
}

/// Checks a string match; an empty prefix is allowed only for `uri`.
pub(crate) fn check_string_match(m: &StringMatch, allow_empty_prefix: bool) -> Result<(), String> {
    match m {
        StringMatch::Exact(_) => Ok(()),
        StringMatch::Prefix(p) => {
            if p.is_empty() && !allow_empty_prefix {
                Err("prefix match must not be empty".into())
            } else {
                Ok(())
            }
        }
        StringMatch::Regex(r) => validate_regex(r),
    }
}

/// Checks a header or query-param matcher (`regex: "*"` means presence and is fine).
pub(crate) fn check_header_match(m: &HeaderMatch) -> Result<(), String> {
    match m {
        _ if m.is_presence() => Ok(()),
        HeaderMatch::Match(sm) => check_string_match(sm, false),
        HeaderMatch::Present => Ok(()),
    }
}

/// HTTP header names: `[-_A-Za-z0-9]+`.
pub(crate) fn check_header_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!("invalid header name {name:?}"))
    }
}

/// Header values: `%` must introduce `%%` or an Envoy command operator `%NAME%` /
/// `%NAME(args)%`.
pub(crate) fn check_header_value(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            rest = stripped;
            continue;
        }
        let Some(end) = after.find('%') else {
            return Err(format!(
                "header value {value:?} has an unterminated % operator"
            ));
        };
        let op = &after[..end];
        let name = op.split('(').next().unwrap_or_default();
        let ok_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        let ok_args = !op.contains('(') || op.ends_with(')') || op.contains("):");
        if !ok_name || !ok_args {
            return Err(format!(
                "header value {value:?} has an invalid command operator %{op}%"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Kubernetes label keys: optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
pub(crate) fn label_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("label key must not be empty".into());
    }
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Err(format!(
            "invalid label key {key:?}: prefix must be a DNS subdomain"
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "invalid label key {key:?}: name must be 1-63 characters of [A-Za-z0-9-_.], \
             starting and ending alphanumeric"
        ));
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// Kubernetes label values: empty, or a label name.
pub(crate) fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_label_name(v) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {v:?}: must be at most 63 characters of [A-Za-z0-9-_.], \
             starting and ending alphanumeric"
        ))
    }
}

/// Selector rules: no empty keys, no `*`, values at most 63 characters; an empty selector is
/// a warning.
pub(crate) fn check_selector(labels: &Labels, path: &str, r: &mut Report) {
    if labels.is_empty() {
        r.warn(
            path,
            "empty selector matches every workload; remove it or add labels",
        );
    }
    for (k, v) in labels {
        let at = format!("{path}[{k}]");
        if k.is_empty() {
            r.error(&at, "label key must not be empty");
            continue;
        }
        if k.contains('*') || v.contains('*') {
            r.error(&at, "wildcards are not allowed in selectors");
            continue;
        }
        r.check(&at, label_key(k));
        r.check(&at, label_value(v));
    }
}

/// Label maps that are not selectors (subset labels, endpoint labels).
pub(crate) fn check_labels(labels: &Labels, path: &str, r: &mut Report) {
    for (k, v) in labels {
        let at = format!("{path}[{k}]");
        r.check(&at, label_key(k));
        r.check(&at, label_value(v));
    }
}

/// `exportTo`: `.`, `*`, a namespace, or `~` (ServiceEntry only); no duplicates; `*` alone.
pub(crate) fn check_export_to(
    export_to: &[String],
    own_namespace: &str,
    allow_tilde: bool,
    path: &str,
    r: &mut Report,
) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let normalized = if e == "." { own_namespace } else { e.as_str() };
        let valid = e == "." || e == "*" || (e == "~" && allow_tilde) || is_dns1123_label(e);
        if !valid {
            let hint = if e == "~" {
                " (\"~\" is only allowed on ServiceEntry)"
            } else {
                ""
            };
            r.error(
                &at,
                format!("invalid exportTo value {e:?}: must be \".\", \"*\" or a namespace{hint}"),
            );
            continue;
        }
        if !seen.insert(normalized.to_string()) {
            r.error(&at, format!("duplicate exportTo value {e:?}"));
        }
    }
    if export_to.len() > 1 && export_to.iter().any(|e| e == "*") {
        r.error(path, "\"*\" cannot be combined with other exportTo values");
    }
    if export_to.len() > 1 && export_to.iter().any(|e| e == "~") {
        r.error(path, "\"~\" cannot be combined with other exportTo values");
    }
}

/// Gateway references: `ns/name`, `mesh`, or a legacy `name` / `name.ns` (warning).
pub(crate) fn check_gateway_name(gw: &str, path: &str, r: &mut Report) {
    if gw == "mesh" {
        return;
    }
    match gw.split_once('/') {
        Some((ns, name)) => {
            if !is_dns1123_label(ns) {
                r.error(path, format!("invalid gateway namespace in {gw:?}"));
            }
            if !is_dns1123_label(name) {
                r.error(
                    path,
                    format!("invalid gateway name in {gw:?}: must be a DNS label"),
                );
            }
        }
        None => {
            if !is_dns1123_subdomain(gw) {
                r.error(path, format!("invalid gateway name {gw:?}"));
            } else if gw.contains('.') {
                r.warn(
                    path,
                    format!(
                        "gateway reference {gw:?} uses the deprecated name.namespace form; \
                         use namespace/name"
                    ),
                );
            }
        }
    }
}

/// Protocols a ServiceEntry port may use.
pub(crate) const SE_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS", "UDP",
];

/// Protocols a Gateway or Sidecar port may use (case-insensitive).
pub(crate) const SERVER_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS",
];

/// Whether `p` names one of the `known` protocols (read with [`Protocol::parse`](crate::protocol::Protocol::parse), so
/// case-insensitively, as translation reads it).
pub(crate) fn is_protocol(p: &str, known: &[&str]) -> bool {
    let p = crate::protocol::Protocol::parse(p);
    !p.is_sniffed()
        && known
            .iter()
            .any(|k| crate::protocol::Protocol::parse(k) == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_protocol_is_one_translation_knows() {
        for p in SE_PROTOCOLS.iter().chain(SERVER_PROTOCOLS) {
            assert!(!crate::protocol::Protocol::parse(p).is_sniffed(), "{p}");
        }
        assert!(is_protocol("grpc-web", SE_PROTOCOLS));
        assert!(!is_protocol("UDP", SERVER_PROTOCOLS));
        assert!(!is_protocol("SCTP", SE_PROTOCOLS));
    }

    #[test]
    fn hosts() {
        for ok in ["a.com", "*.a.com", "*", "reviews", "A.b.C", "a.com."] {
            assert!(check_wildcard_host(ok).is_ok(), "{ok}");
        }
        for bad in ["*a.com", "a.*.com", "a..com", "-a.com", "a.123", ""] {
            assert!(check_wildcard_host(bad).is_err(), "{bad}");
        }
        assert!(is_partial_wildcard("*a.com"));
        assert!(!is_partial_wildcard("*.a.com"));
    }

    #[test]
    fn cidrs() {
        assert!(check_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(check_ip_or_cidr("::1").is_ok());
        assert!(check_ip_or_cidr("10.0.0.0/33").is_err());
        assert!(check_ip_or_cidr("10.0.0/8").is_err());
    }

    #[test]
    fn header_values() {
        assert!(check_header_value("%DOWNSTREAM_REMOTE_ADDRESS%").is_ok());
        assert!(check_header_value("100%% sure").is_ok());
        assert!(check_header_value("%REQ(x-foo)%").is_ok());
        assert!(check_header_value("50% off").is_err());
        assert!(check_header_value("%lower%").is_err());
    }

    #[test]
    fn regexes() {
        assert!(validate_regex("^/api/v[0-9]+").is_ok());
        assert!(validate_regex("(").is_err());
        assert!(validate_regex("").is_err());
        assert!(validate_regex(&"a".repeat(1025)).is_err());
    }
}
