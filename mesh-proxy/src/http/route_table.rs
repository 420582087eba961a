//! A route configuration indexed for lookups: virtual host by domain in Envoy's order, then
//! the first route of that host whose match holds.

use std::collections::HashMap;

use http::{HeaderMap, Method};

use crate::config::matcher::PseudoHeaders;
use crate::config::route::{PathMatch, Route, RouteConfiguration, RouteMatch, VirtualHost};

/// A route configuration with its domain index.
#[derive(Debug)]
pub struct RouteTable {
    config: RouteConfiguration,
    exact: HashMap<String, usize>,
    /// `*.suffix` / `*-suffix` wildcards: `(suffix, vhost)`, longest first.
    suffixes: Vec<(String, usize)>,
    /// `prefix.*` / `prefix-*` wildcards: `(prefix, vhost)`, longest first.
    prefixes: Vec<(String, usize)>,
    /// The `*` virtual host.
    any: Option<usize>,
}

/// What a request matched.
#[derive(Clone, Copy, Debug)]
pub struct Matched<'a> {
    /// The virtual host.
    pub vhost: &'a VirtualHost,
    /// The route.
    pub route: &'a Route,
}

/// The request fields routing looks at.
#[derive(Clone, Copy, Debug)]
pub struct RouteRequest<'a> {
    /// `:authority` / Host, as received.
    pub authority: &'a str,
    /// `:path` with query.
    pub path: &'a str,
    /// Method.
    pub method: &'a Method,
    /// `:scheme`.
    pub scheme: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
}

impl RouteTable {
    /// Indexes `config`.
    pub fn new(config: RouteConfiguration) -> RouteTable {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut prefixes = Vec::new();
        let mut any = None;
        for (i, vh) in config.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    any.get_or_insert(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    suffixes.push((s.to_string(), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    prefixes.push((p.to_string(), i));
                } else {
                    exact.entry(d).or_insert(i);
                }
            }
        }
        // Longest first; equal lengths keep configuration order.
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        RouteTable {
            config,
            exact,
            suffixes,
            prefixes,
            any,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouteConfiguration {
        &self.config
    }

    /// The virtual host for `authority`: exact domain, then the longest suffix wildcard, then
    /// the longest prefix wildcard, then `*`. A wildcard never matches an empty remainder.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let mut host = authority.to_ascii_lowercase();
        if self.config.ignore_port_in_host_matching {
            strip_port(&mut host);
        }
        let i = self
            .exact
            .get(&host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any)?;
        self.config.virtual_hosts.get(i)
    }

    /// The route for a request, or `None` (404 `NR`).
    pub fn route(&self, req: &RouteRequest<'_>) -> Option<Matched<'_>> {
        let vhost = self.virtual_host(req.authority)?;
        let route = vhost.routes.iter().find(|r| matches(&r.route_match, req))?;
        Some(Matched { vhost, route })
    }
}

/// Drops `:port` from a host (IPv6 literals keep their brackets).
fn strip_port(host: &mut String) {
    if let Some(i) = host.rfind(':') {
        let is_v6_without_port = host.starts_with('[') && !host[..i].ends_with(']');
        if !is_v6_without_port && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) {
            host.truncate(i);
        }
    }
}

/// Whether a route's match holds for the request.
pub fn matches(m: &RouteMatch, req: &RouteRequest<'_>) -> bool {
    let (path_only, query) = match req.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path, None),
    };
    let path_only = path_only.split('#').next().unwrap_or(path_only);
    let path_ok = match &m.path {
        PathMatch::Prefix(p) => starts_with(req.path, p, m.case_sensitive),
        PathMatch::Exact(p) => equals(path_only, p, m.case_sensitive),
        PathMatch::Regex(r) => r.is_full_match(path_only),
        PathMatch::PathSeparatedPrefix(p) => {
            starts_with(path_only, p, m.case_sensitive)
                && (path_only.len() == p.len() || path_only.as_bytes()[p.len()] == b'/')
        }
    };
    if !path_ok {
        return false;
    }
    if m.grpc {
        let grpc = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            return false;
        }
    }
    let pseudo = PseudoHeaders {
        authority: req.authority,
        path: req.path,
        method: req.method.as_str(),
        scheme: req.scheme,
    };
    if !m.headers.iter().all(|h| h.matches(req.headers, &pseudo)) {
        return false;
    }
    if !m.query_parameters.is_empty() {
        let q = query.unwrap_or("");
        if !m.query_parameters.iter().all(|qm| qm.matches(q)) {
            return false;
        }
    }
    if let Some(f) = &m.runtime_fraction
        && !f.sample()
    {
        return false;
    }
    true
}

fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        s.starts_with(prefix)
    } else {
        s.len() >= prefix.len()
            && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    }
}

fn equals(s: &str, p: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        s == p
    } else {
        s.eq_ignore_ascii_case(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::matcher::{HeaderMatch, HeaderMatcher, QueryParameterMatcher, Regex};
    use crate::config::route::{DirectResponse, HeaderMutations, PerFilterConfig, RouteAction};
    use std::sync::Arc;

    fn route(name: &str, path: PathMatch) -> Route {
        Route {
            name: name.into(),
            route_match: RouteMatch {
                path,
                case_sensitive: true,
                headers: vec![],
                query_parameters: vec![],
                grpc: false,
                runtime_fraction: None,
            },
            action: RouteAction::DirectResponse(Arc::new(DirectResponse {
                status: 200,
                body: None,
            })),
            headers: HeaderMutations::default(),
            per_filter: PerFilterConfig::default(),
        }
    }

    fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes,
            headers: HeaderMutations::default(),
            retry_policy: None,
            include_request_attempt_count: false,
            include_attempt_count_in_response: false,
            per_filter: PerFilterConfig::default(),
            request_mirror_policies: vec![],
        }
    }

    fn table(vhosts: Vec<VirtualHost>, ignore_port: bool) -> RouteTable {
        RouteTable::new(RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vhosts,
            headers: HeaderMutations::default(),
            most_specific_header_mutations_wins: false,
            ignore_port_in_host_matching: ignore_port,
            internal_only_headers: vec![],
            request_mirror_policies: vec![],
        })
    }

    #[test]
    fn virtual_host_order() {
        let any = || vec![route("r", PathMatch::Prefix("/".into()))];
        let t = table(
            vec![
                vhost("exact", &["foo.com", "foo.com:8080"], any()),
                vhost("suffix", &["*.foo.com"], any()),
                vhost("longsuffix", &["*-bar.foo.com"], any()),
                vhost("prefix", &["foo.*"], any()),
                vhost("all", &["*"], any()),
            ],
            true,
        );
        let name = |h: &str| t.virtual_host(h).map(|v| v.name.clone());
        assert_eq!(name("FOO.com").as_deref(), Some("exact"));
        assert_eq!(name("foo.com:9090").as_deref(), Some("exact"));
        assert_eq!(name("a.foo.com").as_deref(), Some("suffix"));
        assert_eq!(name("a-bar.foo.com").as_deref(), Some("longsuffix"));
        assert_eq!(name("-bar.foo.com").as_deref(), Some("suffix"));
        assert_eq!(name("foo.org").as_deref(), Some("prefix"));
        assert_eq!(name("other").as_deref(), Some("all"));
        let t = table(vec![vhost("exact", &["foo.com:8080"], any())], false);
        assert!(t.virtual_host("foo.com:8080").is_some());
        assert!(t.virtual_host("foo.com").is_none());
    }

    #[test]
    fn route_matches() {
        let mut ci = route("ci", PathMatch::Prefix("/API".into()));
        ci.route_match.case_sensitive = false;
        let mut hdr = route("hdr", PathMatch::Prefix("/h".into()));
        hdr.route_match.headers.push(HeaderMatcher {
            name: "x-v".into(),
            kind: HeaderMatch::Present(true),
            invert: false,
            treat_missing_as_empty: false,
        });
        let mut q = route("q", PathMatch::Prefix("/q".into()));
        q.route_match.query_parameters.push(QueryParameterMatcher {
            name: "a".into(),
            value: None,
        });
        let t = table(
            vec![vhost(
                "v",
                &["*"],
                vec![
                    route("exact", PathMatch::Exact("/api".into())),
                    route("sep", PathMatch::PathSeparatedPrefix("/api".into())),
                    route("re", PathMatch::Regex(Regex::new("/v[0-9]+").unwrap())),
                    ci,
                    hdr,
                    q,
                    route("prefix", PathMatch::Prefix("/".into())),
                ],
            )],
            true,
        );
        let headers = HeaderMap::new();
        let mut with_v = HeaderMap::new();
        with_v.insert("x-v", "1".parse().unwrap());
        let name = |path: &str, h: &HeaderMap| {
            t.route(&RouteRequest {
                authority: "a",
                path,
                method: &Method::GET,
                scheme: "http",
                headers: h,
            })
            .map(|m| m.route.name.clone())
        };
        let rows = [
            ("/api", &headers, "exact"),
            ("/api?x=1", &headers, "exact"),
            ("/api/", &headers, "sep"),
            ("/apix", &headers, "ci"),
            ("/APIX", &headers, "ci"),
            ("/v12", &headers, "re"),
            ("/v12/x", &headers, "prefix"),
            ("/h", &headers, "prefix"),
            ("/h", &with_v, "hdr"),
            ("/q?b&a", &headers, "q"),
            ("/q?b", &headers, "prefix"),
        ];
        for (path, h, want) in rows {
            assert_eq!(name(path, h).as_deref(), Some(want), "{path}");
        }
    }
}
