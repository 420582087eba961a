//! The HTTP connection manager's header rules (Envoy's `conn_manager_utility.cc`).
//!
//! With `use_remote_address: false` and no `internal_address_config` (Istio's sidecars, and
//! Envoy's defaults since 1.33) every request is external: the control headers an app could
//! use to change retries or timeouts (`x-envoy-retry-on`, `x-envoy-upstream-rq-timeout-ms`,
//! ...) are removed before routing, `x-forwarded-for` passes untouched, and `x-request-id`
//! is kept or generated.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::http::{ForwardClientCertDetails, HttpConnectionManager};

/// Control headers Envoy removes from external requests (`cleanInternalHeaders`).
pub const INTERNAL_CONTROL_HEADERS: &[&str] = &[
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-internal",
];

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// What the connection tells the header rules.
#[derive(Clone, Debug)]
pub struct Downstream {
    /// Peer address.
    pub remote: SocketAddr,
    /// Local (or original destination) address.
    pub local: SocketAddr,
    /// The connection is TLS.
    pub tls: bool,
    /// The peer presented a verified certificate.
    pub mtls: bool,
}

/// Applies the request-side rules of `hcm` to `headers`, returning whether the request is
/// internal (never, without `internal_address_config`).
pub fn request(
    hcm: &HttpConnectionManager,
    internal_only: &[HeaderName],
    headers: &mut HeaderMap,
    conn: &Downstream,
    upgrade: bool,
) -> bool {
    strip_hop_by_hop(headers, upgrade);
    if let Some(te) = headers.get(header::TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(header::TE);
    }
    let edge = hcm.use_remote_address;
    if hcm.use_remote_address && !hcm.skip_xff_append {
        let ip = if conn.remote.ip().is_loopback() {
            conn.local.ip()
        } else {
            conn.remote.ip()
        };
        append_xff(headers, &ip.to_string());
    }
    // Nothing is internal without internal_address_config.
    for h in INTERNAL_CONTROL_HEADERS {
        headers.remove(*h);
    }
    for h in internal_only {
        headers.remove(h);
    }
    if edge {
        for h in [
            "x-envoy-decorator-operation",
            "x-envoy-downstream-service-cluster",
            "x-envoy-downstream-service-node",
        ] {
            headers.remove(h);
        }
    }
    if edge || !headers.contains_key("x-forwarded-proto") {
        let proto = if conn.tls { "https" } else { "http" };
        headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    if hcm.generate_request_id {
        let regenerate = edge && !hcm.preserve_external_request_id;
        if regenerate || !headers.contains_key("x-request-id") {
            headers.insert("x-request-id", request_id());
        }
    }
    match hcm.forward_client_cert_details {
        ForwardClientCertDetails::AlwaysForwardOnly => {}
        ForwardClientCertDetails::Sanitize => {
            headers.remove("x-forwarded-client-cert");
        }
        _ if !conn.mtls => {
            headers.remove("x-forwarded-client-cert");
        }
        // The XFCC element of mTLS connections comes with the security issue.
        _ => {}
    }
    if let Some(via) = &hcm.via {
        append_value(headers, header::VIA, via);
    }
    false
}

/// Response-side rules: hop-by-hop headers, `server`, `via`.
pub fn response(
    hcm: &HttpConnectionManager,
    headers: &mut HeaderMap,
    request_id: Option<&HeaderValue>,
) {
    strip_hop_by_hop(headers, false);
    use crate::config::http::ServerHeaderTransformation as T;
    match hcm.server_header_transformation {
        T::Overwrite => {
            if let Ok(v) = HeaderValue::from_str(&hcm.server_name) {
                headers.insert(header::SERVER, v);
            }
        }
        T::AppendIfAbsent => {
            if !headers.contains_key(header::SERVER)
                && let Ok(v) = HeaderValue::from_str(&hcm.server_name)
            {
                headers.insert(header::SERVER, v);
            }
        }
        T::PassThrough => {}
    }
    if hcm.always_set_request_id_in_response
        && let Some(id) = request_id
    {
        headers.insert("x-request-id", id.clone());
    }
    if let Some(via) = &hcm.via {
        append_value(headers, header::VIA, via);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    for h in HOP_BY_HOP {
        if upgrade && (h == "upgrade" || h == "connection") {
            continue;
        }
        headers.remove(h);
    }
}

fn append_xff(headers: &mut HeaderMap, ip: &str) {
    append_value(headers, HeaderName::from_static("x-forwarded-for"), ip);
}

/// Appends `value` to a comma-separated header (Envoy's inline-header append).
fn append_value(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(cur) if !cur.is_empty() => format!("{cur},{value}"),
        _ => value.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
}

/// A new request ID: a UUID4, as Envoy's UUID request-id extension makes them.
pub fn request_id() -> HeaderValue {
    // Random bits from the thread's fast generator (no system call per request), with the
    // version and variant bits of a v4 UUID.
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// RFC 3986 `remove_dot_segments` on a path (the query is left alone), as
/// `normalize_path` asks; `merge` also collapses repeated slashes (`merge_slashes`). Returns
/// `None` for a path Envoy rejects (not starting with `/`).
pub fn normalize_path(path_and_query: &str, merge: bool) -> Option<String> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => (&path_and_query[..i], &path_and_query[i..]),
        None => (path_and_query, ""),
    };
    if !path.starts_with('/') {
        return if path == "*" {
            Some(path_and_query.to_string())
        } else {
            None
        };
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            "" if merge && i != last => {}
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut p = String::with_capacity(path.len() + query.len());
    p.push('/');
    p.push_str(&out.join("/"));
    if trailing && !p.ends_with('/') {
        p.push('/');
    }
    p.push_str(query);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        let rows = [
            ("/a/b/../c", "/a/c"),
            ("/a/./b", "/a/b"),
            ("/../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a//b?x=/../", "/a//b?x=/../"),
            ("/", "/"),
        ];
        for (i, o) in rows {
            assert_eq!(normalize_path(i, false).as_deref(), Some(o), "{i}");
        }
        assert_eq!(normalize_path("/a//b", true).as_deref(), Some("/a/b"));
        assert_eq!(normalize_path("a/b", false), None);
    }

    #[test]
    fn request_ids_are_uuid4() {
        let id = request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
    }
}
