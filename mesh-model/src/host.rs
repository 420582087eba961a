//! Host name helpers shared by validation and translation.

/// The DNS suffix of cluster services (`svc.cluster.local` after the namespace).
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";

/// Resolves a short name the way Istio does for VirtualService, DestinationRule and
/// ServiceEntry hosts: a name without a dot becomes `name.<namespace>.svc.<suffix>`; names with
/// a dot, wildcards and IPs are kept.
///
/// ```
/// use mesh_model::host::resolve_short_name;
/// assert_eq!(resolve_short_name("reviews", "shop", "cluster.local"), "reviews.shop.svc.cluster.local");
/// assert_eq!(resolve_short_name("reviews.shop", "x", "cluster.local"), "reviews.shop");
/// assert_eq!(resolve_short_name("*", "x", "cluster.local"), "*");
/// ```
pub fn resolve_short_name(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host.contains('*') || host.contains(':') || host.is_empty() {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{domain_suffix}")
    }
}

/// Whether `pattern` (which may start with a `*` wildcard label) matches `host`, or covers
/// it when `host` is itself a wildcard.
///
/// ```
/// use mesh_model::host::host_matches;
/// assert!(host_matches("*.example.com", "a.example.com"));
/// assert!(host_matches("*.example.com", "*.b.example.com"));
/// assert!(!host_matches("*.example.com", "example.com"));
/// assert!(host_matches("*", "anything"));
/// ```
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    let suffix = suffix.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match host.strip_prefix('*') {
        // A wildcard host is covered when its whole domain lies inside the pattern's.
        Some(rest) => rest.ends_with(&suffix),
        None => host.len() > suffix.len() && host.ends_with(&suffix),
    }
}
