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
    /// What the TLS handshake established (the peer's certificate, when it sent one).
    pub tls_info: Option<std::sync::Arc<crate::tls::TlsInfo>>,
}

impl Downstream {
    /// The peer presented a (verified) certificate.
    pub fn mtls(&self) -> bool {
        self.tls_info.as_ref().is_some_and(|i| i.peer.is_some())
    }
}

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-proto`.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-client-cert`.
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// What one pass over a request's header names found: the rules below remove a header only
/// when it is there, instead of looking up every candidate name (each lookup by a string
/// parses and hashes it; a request has a handful of headers and there are twenty candidates).
#[derive(Default)]
struct Present {
    envoy: bool,
    hop_by_hop: bool,
    te: bool,
    xfcc: bool,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        for name in headers.keys() {
            let n = name.as_str();
            if n.starts_with("x-envoy-") {
                p.envoy = true;
            } else if HOP_BY_HOP.contains(&n) {
                p.hop_by_hop = true;
            } else if name == header::TE {
                p.te = true;
            } else if name == X_FORWARDED_CLIENT_CERT {
                p.xfcc = true;
            }
        }
        p
    }
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
    let present = Present::scan(headers);
    if present.hop_by_hop {
        strip_hop_by_hop(headers, upgrade);
    }
    if present.te
        && let Some(te) = headers.get(header::TE)
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
    if present.envoy {
        for h in INTERNAL_CONTROL_HEADERS {
            headers.remove(*h);
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
    }
    for h in internal_only {
        headers.remove(h);
    }
    if edge || !headers.contains_key(X_FORWARDED_PROTO) {
        let proto = if conn.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if hcm.generate_request_id {
        let regenerate = edge && !hcm.preserve_external_request_id;
        if regenerate || !headers.contains_key(X_REQUEST_ID) {
            headers.insert(X_REQUEST_ID, request_id());
        }
    }
    xfcc(hcm, headers, conn, present.xfcc);
    if let Some(via) = &hcm.via {
        append_value(headers, header::VIA, via);
    }
    false
}

/// `x-forwarded-client-cert`, as Envoy's `mutateXfccRequestHeader` writes it: removed unless
/// the connection is mTLS (or `ALWAYS_FORWARD_ONLY`); with `APPEND_FORWARD` or `SANITIZE_SET`
/// this hop's element is added (`,`-separated) or replaces the header:
/// `By=<our URI SAN>;Hash=<sha256 of the peer certificate>;Subject="<RFC 2253>";URI=<peer URI
/// SAN>;DNS=<peer DNS SAN>`, with the keys `set_current_client_cert_details` asks for in
/// Envoy's order (Subject, URI, DNS); `Subject` and `URI` are written even when empty.
fn xfcc(hcm: &HttpConnectionManager, headers: &mut HeaderMap, conn: &Downstream, present: bool) {
    use ForwardClientCertDetails as F;
    let mode = hcm.forward_client_cert_details;
    if mode == F::AlwaysForwardOnly {
        return;
    }
    let peer = conn
        .tls_info
        .as_deref()
        .and_then(|i| i.peer.as_ref().map(|p| (i, p)));
    let Some((info, peer)) = peer.filter(|_| mode != F::Sanitize) else {
        if present {
            headers.remove(X_FORWARDED_CLIENT_CERT);
        }
        return;
    };
    if mode == F::ForwardOnly {
        return;
    }
    let mut parts: Vec<String> = info
        .local_uri_sans
        .iter()
        .map(|u| format!("By={u}"))
        .collect();
    if !peer.sha256.is_empty() {
        parts.push(format!("Hash={}", peer.sha256));
    }
    let details = hcm.set_current_client_cert_details;
    if details.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject));
    }
    if details.uri {
        if peer.uri_sans.is_empty() {
            parts.push("URI=".into());
        }
        parts.extend(peer.uri_sans.iter().map(|u| format!("URI={u}")));
    }
    if details.dns {
        parts.extend(peer.dns_sans.iter().map(|d| format!("DNS={d}")));
    }
    let element = parts.join(";");
    let value = match (mode, headers.get(X_FORWARDED_CLIENT_CERT)) {
        (F::AppendForward, Some(old)) if !old.is_empty() => {
            format!("{},{element}", String::from_utf8_lossy(old.as_bytes()))
        }
        _ => element,
    };
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            headers.insert(X_FORWARDED_CLIENT_CERT, v);
        }
        Err(_) => {
            headers.remove(X_FORWARDED_CLIENT_CERT);
        }
    }
}

/// Response-side rules: hop-by-hop headers, `server`, `via`.
pub fn response(
    hcm: &HttpConnectionManager,
    headers: &mut HeaderMap,
    request_id: Option<&HeaderValue>,
) {
    if headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        strip_hop_by_hop(headers, false);
    }
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
        headers.insert(X_REQUEST_ID, id.clone());
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

    fn hcm(extra: &str) -> HttpConnectionManager {
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as pb;
        let yaml = format!(
            "stat_prefix: t\nrds: {{route_config_name: r, config_source: {{ads: {{}}, resource_api_version: V3}}}}\n\
             http_filters: [{{name: envoy.filters.http.router, typed_config: {{\"@type\": \
             type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]\n{extra}"
        );
        let msg: pb::HttpConnectionManager = crate::proto::parse_yaml(&yaml).unwrap();
        crate::proto::http::http_connection_manager(msg).unwrap()
    }

    fn downstream() -> Downstream {
        Downstream {
            remote: "10.0.0.1:5000".parse().unwrap(),
            local: "10.0.0.2:80".parse().unwrap(),
            tls: false,
            tls_info: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn request_rules_remove_control_and_hop_by_hop_headers_only() {
        let cfg = hcm("");
        let mut h = headers(&[
            ("host", "a"),
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-envoy-custom", "kept"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("x-forwarded-client-cert", "By=spiffe://x"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "id-1"),
            ("x-app", "1"),
        ]);
        request(&cfg, &[], &mut h, &downstream(), false);
        for gone in [
            "x-envoy-retry-on",
            "x-envoy-upstream-rq-timeout-ms",
            "connection",
            "keep-alive",
            "te",
            "x-forwarded-client-cert",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be removed: {h:?}");
        }
        // Not a control header, and not edge: kept as sent.
        assert_eq!(h["x-envoy-custom"], "kept");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-request-id"], "id-1");
        assert_eq!(h["x-app"], "1");
        assert_eq!(h["host"], "a");
    }

    #[test]
    fn request_rules_add_what_is_missing() {
        let cfg = hcm("");
        let mut h = headers(&[("host", "a"), ("te", "trailers"), ("upgrade", "websocket")]);
        h.append("connection", HeaderValue::from_static("upgrade"));
        request(&cfg, &[], &mut h, &downstream(), true);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-request-id"].len(), 36, "a UUID: {h:?}");
        // `te: trailers` passes; an upgrade keeps its upgrade headers.
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        // At the edge, x-forwarded-proto is the connection's, whatever the client said.
        let edge = hcm("use_remote_address: true");
        let mut h = headers(&[("host", "a"), ("x-forwarded-proto", "https")]);
        request(&edge, &[], &mut h, &downstream(), false);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
    }

    #[test]
    fn response_rules_strip_hop_by_hop_and_set_server() {
        let cfg = hcm("");
        let mut h = headers(&[
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("server", "app"),
            ("x-app", "1"),
        ]);
        response(&cfg, &mut h, None);
        assert!(!h.contains_key("connection") && !h.contains_key("transfer-encoding"));
        assert_eq!(h["server"], "envoy");
        assert_eq!(h["x-app"], "1");
    }

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

    fn mtls(peer: Option<crate::tls::PeerCertificate>) -> Downstream {
        Downstream {
            tls: true,
            tls_info: Some(std::sync::Arc::new(crate::tls::TlsInfo {
                peer,
                local_uri_sans: vec!["spiffe://cluster.local/ns/shop/sa/server".into()],
                alpn: None,
                sni: None,
            })),
            ..downstream()
        }
    }

    fn client() -> crate::tls::PeerCertificate {
        crate::tls::PeerCertificate {
            uri_sans: vec!["spiffe://cluster.local/ns/shop/sa/client".into()],
            dns_sans: vec!["client.shop".into()],
            subject: String::new(),
            sha256: "ab12".into(),
        }
    }

    #[test]
    fn xfcc_appends_this_hops_element_as_envoy_writes_it() {
        let cfg = hcm("forward_client_cert_details: APPEND_FORWARD\n\
             set_current_client_cert_details: {subject: true, uri: true, dns: true}");
        let mut h = headers(&[("x-forwarded-client-cert", "By=spiffe://a;URI=spiffe://b")]);
        request(&cfg, &[], &mut h, &mtls(Some(client())), false);
        assert_eq!(
            h["x-forwarded-client-cert"],
            "By=spiffe://a;URI=spiffe://b,\
             By=spiffe://cluster.local/ns/shop/sa/server;Hash=ab12;Subject=\"\";\
             URI=spiffe://cluster.local/ns/shop/sa/client;DNS=client.shop"
        );
        // Without the details, only By and Hash; an absent URI SAN is still written.
        let cfg = hcm("forward_client_cert_details: SANITIZE_SET\n\
                       set_current_client_cert_details: {uri: true}");
        let mut h = headers(&[("x-forwarded-client-cert", "By=spiffe://a")]);
        let no_uri = crate::tls::PeerCertificate {
            uri_sans: vec![],
            ..client()
        };
        request(&cfg, &[], &mut h, &mtls(Some(no_uri)), false);
        assert_eq!(
            h["x-forwarded-client-cert"],
            "By=spiffe://cluster.local/ns/shop/sa/server;Hash=ab12;URI="
        );
    }

    #[test]
    fn xfcc_is_removed_without_a_client_certificate() {
        for mode in ["APPEND_FORWARD", "FORWARD_ONLY", "SANITIZE_SET", "SANITIZE"] {
            let cfg = hcm(&format!("forward_client_cert_details: {mode}"));
            for conn in [downstream(), mtls(None)] {
                let mut h = headers(&[("x-forwarded-client-cert", "By=spiffe://forged")]);
                request(&cfg, &[], &mut h, &conn, false);
                assert!(!h.contains_key("x-forwarded-client-cert"), "{mode}");
            }
        }
        // FORWARD_ONLY keeps what came over mTLS; SANITIZE never keeps it;
        // ALWAYS_FORWARD_ONLY passes it whatever the connection.
        let keep = |mode: &str, conn: Downstream| {
            let cfg = hcm(&format!("forward_client_cert_details: {mode}"));
            let mut h = headers(&[("x-forwarded-client-cert", "By=spiffe://x")]);
            request(&cfg, &[], &mut h, &conn, false);
            h.get("x-forwarded-client-cert").cloned()
        };
        assert_eq!(
            keep("FORWARD_ONLY", mtls(Some(client()))).unwrap(),
            "By=spiffe://x"
        );
        assert_eq!(keep("SANITIZE", mtls(Some(client()))), None);
        assert_eq!(
            keep("ALWAYS_FORWARD_ONLY", downstream()).unwrap(),
            "By=spiffe://x"
        );
    }

    #[test]
    fn request_ids_are_uuid4() {
        let id = request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
    }
}
