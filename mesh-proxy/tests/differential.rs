//! Differential testing of mesh-sidecar against Envoy 1.40: generated mesh configurations
//! (mesh-model's `strategy::mesh_set()`) are pushed to both proxies at once, requests are made
//! up from the route configurations the control plane sends, and every request goes through
//! both proxies; their answers must agree.
//!
//! - Both proxies connect to one control plane, each as its own node in its own namespace
//!   (`diff-envoy`, `diff-mesh`: generated namespaces are DNS labels without a dash, so they
//!   never collide, and the generated sets hold no Sidecar that could take precedence). Each
//!   namespace has a Sidecar binding one egress listener per HTTP service port of the sample on
//!   the proxy's own loopback IP (Envoy 127.0.1.1, mesh-sidecar 127.0.2.1), `captureMode: NONE`,
//!   importing `*/*`.
//! - Every other generated service has its endpoints moved to loopback upstreams named
//!   `<host>/<version>#<i>` (so subsets are told apart by the answer); the others keep their
//!   generated 10.x addresses. The test runs inside a fresh network namespace
//!   (`unshare --net`, only `lo` up), where those addresses fail at once: nothing but loopback
//!   is ever contacted.
//! - Requests come from the RDS route configurations the control plane sends each node
//!   (translated again here with `mesh_xds::translate`): per virtual host its exact domains, per
//!   route a path, method, headers and query parameters that satisfy its matchers, plus one
//!   request that matches nothing in particular. The route that really matches is worked out
//!   from the route table (first match wins), and from it the outcomes the configuration allows
//!   (an upstream version, a connect failure for unreachable endpoints, `no healthy upstream`,
//!   a fault abort, a direct response, a redirect, 404). Routes whose outcome is random by design
//!   (abort percentages strictly between 0 and 100) and slow fault delays are skipped.
//! - When one outcome is possible the two answers must be the same to the byte (status, local
//!   reply body, redirect location, upstream version) and be that outcome; when several are
//!   (weighted splits, timing-dependent timeouts, outlier ejection), each answer must be one of
//!   them.
//! - Neither proxy may reject anything: `update_rejected` stays 0 on both, and the control
//!   plane sees no NACK.
//!
//! A per-sample summary is printed; every disagreement is collected and shown (both answers)
//! when the test fails at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use mesh_model::MeshConfig;
use mesh_model::strategy::{self, MeshSet};
use mesh_test_support::netns::Namespace;
use mesh_test_support::upstream::{self, Reply, Upstream};
use mesh_test_support::{Api, ClientSide, ControlPlane, Proxy, Served, eventually, serve_at};
use mesh_xds::server::SyncStatus;
use mesh_xds::{PushContext, Resources, translate};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use prost::Message;

/// How many generated sets are pushed.
const SAMPLES: usize = 12;

/// The namespace the test runs in: loopback up (its only interface), nothing else.
const NAMESPACE: Namespace = Namespace {
    marker: "MESH_TEST_IN_DIFFERENTIAL_NETNS",
    setup: r#"set -e
PATH="$PATH:/usr/sbin:/sbin"
ip link set lo up
exec "$@"
"#,
    needs: "root and `ip`",
    deadline: Duration::from_secs(600),
};

/// The longest fault delay a request is sent through (longer ones are skipped).
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Route and per-try timeouts below this may fire (or not) depending on scheduling.
const TIMING: Duration = Duration::from_secs(2);

/// How long a client waits for one answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Envoy and mesh-sidecar, each with its own client namespace and bind address.
const SIDES: [ClientSide; 2] = ClientSide::pair("diff-envoy", "diff-mesh");

/// What this test needs of a side beyond [`ClientSide`].
trait SideExt {
    fn sidecar_json(&self, ports: &BTreeSet<u32>) -> String;
    fn listener(&self, port: u32) -> SocketAddr;
}

impl SideExt for ClientSide {
    /// The Sidecar of its namespace: one bound egress listener per port.
    fn sidecar_json(&self, ports: &BTreeSet<u32>) -> String {
        let egress: Vec<serde_json::Value> = ports
            .iter()
            .map(|p| {
                serde_json::json!({
                    "port": {"number": p, "name": format!("http-{p}"), "protocol": "HTTP"},
                    "bind": self.bind,
                    "captureMode": "NONE",
                    "hosts": ["*/*"],
                })
            })
            .collect();
        serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": self.ns},
            "spec": {"egress": egress},
        })
        .to_string()
    }

    fn listener(&self, port: u32) -> SocketAddr {
        self.addr(u16::try_from(port).unwrap())
    }
}

/// The version part of an upstream's name (`<host>/<version>`, without `#<i>`).
fn version_of(name: &str) -> String {
    name.split_once('#').map_or(name, |(v, _)| v).to_string()
}

/// Moves the endpoints of every other service (by index, shifted by the sample number) to
/// loopback upstreams of their own, named `<host>/<version>#<i>`. Returns the upstreams and
/// the name behind each loopback port.
async fn loopback_endpoints(
    set: &mut MeshSet,
    sample: usize,
) -> (Vec<Upstream>, BTreeMap<u32, String>) {
    let mut ups = Vec::new();
    let mut names = BTreeMap::new();
    for (j, se) in set.service_entries.iter_mut().enumerate() {
        if !(sample + j).is_multiple_of(2) {
            continue;
        }
        let host = se.spec.hosts[0].clone();
        let http = se.spec.ports[0].name.clone();
        for (k, ep) in se.spec.endpoints.iter_mut().enumerate() {
            let version = ep.labels.get("version").cloned().unwrap_or_default();
            let up = upstream::start(&format!("{host}/{version}#{k}")).await;
            ep.address = "127.0.0.1".into();
            ep.ports = BTreeMap::from([(http.clone(), u32::from(up.port()))]);
            names.insert(u32::from(up.port()), up.name.clone());
            ups.push(up);
        }
    }
    (ups, names)
}

/// What an answer was, with details that identify it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// An upstream of this version (`<host>/<version>`) answered.
    Upstream(String),
    /// 503 `upstream connect error or disconnect/reset before headers...`.
    ConnectFailure,
    /// 503 `no healthy upstream`.
    NoHealthyUpstream,
    /// 504 `upstream request timeout`.
    Timeout,
    /// The fault filter's abort with this status.
    FaultAbort(u16),
    /// A redirect: status and `location`.
    Redirect(u16, String),
    /// 404 without a body: no route.
    NotFound,
    /// Any other answer made by the proxy: status and body (direct responses).
    Local(u16, String),
    /// No HTTP answer (connection error, or none within the client's timeout).
    NoAnswer(String),
}

fn outcome(r: &Result<Reply, String>) -> Outcome {
    let r = match r {
        Ok(r) => r,
        Err(e) => return Outcome::NoAnswer(e.clone()),
    };
    if let Some(u) = r.headers.get("x-upstream") {
        return Outcome::Upstream(version_of(u));
    }
    match (r.status, r.body.as_str()) {
        (s, "fault filter abort") => Outcome::FaultAbort(s),
        (503, b) if b.starts_with("upstream connect error or disconnect/reset before headers.") => {
            Outcome::ConnectFailure
        }
        (503, "no healthy upstream") => Outcome::NoHealthyUpstream,
        (504, "upstream request timeout") => Outcome::Timeout,
        (404, "") => Outcome::NotFound,
        (s, _) if (300..400).contains(&s) && r.headers.contains_key("location") => {
            Outcome::Redirect(s, r.headers["location"].clone())
        }
        (s, b) => Outcome::Local(s, b.to_string()),
    }
}

/// The parts of an answer that must be equal when the outcome is deterministic: the status,
/// the body (for upstream answers only the version: endpoints of one version are picked at
/// random), and the location.
fn fingerprint(r: &Result<Reply, String>) -> String {
    match r {
        Err(e) => format!("no answer: {e}"),
        Ok(r) => match r.headers.get("x-upstream") {
            Some(u) => format!("{} from {}", r.status, version_of(u)),
            None => format!(
                "{} {:?} location={:?}",
                r.status,
                r.body,
                r.headers.get("location")
            ),
        },
    }
}

fn show(r: &Result<Reply, String>) -> String {
    match r {
        Err(e) => format!("no answer: {e}"),
        Ok(r) => {
            let h: Vec<String> = r
                .headers
                .iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "location" | "x-upstream" | "content-type" | "content-length"
                    )
                })
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            format!("{} [{}] {:?}", r.status, h.join(", "), r.body)
        }
    }
}

/// One request made up for a route.
#[derive(Clone, Debug)]
struct Req {
    port: u32,
    method: String,
    host: String,
    /// Path and query.
    path: String,
    headers: Vec<(String, String)>,
    /// What it was made for (virtual host, route).
    why: String,
}

impl Req {
    fn path_only(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p)
    }

    fn query(&self) -> Vec<(String, String)> {
        self.path
            .split_once('?')
            .map(|(_, q)| {
                q.split('&')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        if name == ":method" {
            return Some(&self.method);
        }
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A string the regex matches as a whole (Envoy's safe_regex is a full match), from the
/// shapes the generator makes (`/x/[0-9]+`, `^x.*`); none if the guess does not match.
fn regex_sample(re: &str) -> Option<String> {
    let s = re
        .trim_start_matches('^')
        .trim_end_matches('$')
        .replace("[0-9]+", "42")
        .replace(".*", "");
    full_match(re, &s).then_some(s)
}

fn full_match(re: &str, s: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(s))
}

/// A value the string matcher accepts.
fn string_sample(m: &StringMatcher) -> Option<String> {
    match m.match_pattern.as_ref()? {
        MatchPattern::Exact(v) => Some(v.clone()),
        MatchPattern::Prefix(p) => Some(format!("{p}x")),
        MatchPattern::Suffix(s) => Some(format!("x{s}")),
        MatchPattern::Contains(c) => Some(format!("x{c}x")),
        MatchPattern::SafeRegex(r) => regex_sample(&r.regex),
        MatchPattern::Custom(_) => None,
    }
}

fn string_matches(m: &StringMatcher, v: &str) -> Option<bool> {
    let fold = |s: &str| {
        if m.ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    Some(match m.match_pattern.as_ref()? {
        MatchPattern::Exact(e) => fold(v) == fold(e),
        MatchPattern::Prefix(p) => fold(v).starts_with(&fold(p)),
        MatchPattern::Suffix(s) => fold(v).ends_with(&fold(s)),
        MatchPattern::Contains(c) => fold(v).contains(&fold(c)),
        MatchPattern::SafeRegex(r) => full_match(&r.regex, v),
        MatchPattern::Custom(_) => return None,
    })
}

/// A request that satisfies `route`'s matchers, or why none is made.
fn request_for(port: u32, host: &str, route: &rt::Route, why: String) -> Result<Req, String> {
    use rt::header_matcher::HeaderMatchSpecifier as H;
    use rt::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    use rt::route_match::PathSpecifier as P;
    let m = route.r#match.as_ref().ok_or("no match")?;
    if m.runtime_fraction.is_some()
        || m.grpc.is_some()
        || m.tls_context.is_some()
        || !m.dynamic_metadata.is_empty()
        || !m.cookies.is_empty()
        || !m.filter_state.is_empty()
    {
        return Err("matcher beyond path, headers and query".into());
    }
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let mut path = match m.path_specifier.as_ref().ok_or("no path matcher")? {
        P::Prefix(p) if p.ends_with('/') => format!("{p}x"),
        P::Prefix(p) | P::Path(p) => p.clone(),
        P::SafeRegex(r) => regex_sample(&r.regex).ok_or(format!("regex {:?}", r.regex))?,
        other => return Err(format!("path matcher {other:?}")),
    };
    if !case_sensitive && !matches!(m.path_specifier, Some(P::SafeRegex(_))) {
        // The route ignores case: send it in upper case.
        path = path.to_uppercase();
    }
    let mut method = "GET".to_string();
    let mut headers = Vec::new();
    for h in &m.headers {
        if h.invert_match {
            return Err(format!("inverted header matcher {}", h.name));
        }
        #[allow(deprecated)]
        let value = match h.header_match_specifier.as_ref() {
            Some(H::StringMatch(s)) => string_sample(s),
            Some(H::PresentMatch(true)) => Some("present".to_string()),
            Some(H::ExactMatch(v)) => Some(v.clone()),
            Some(H::PrefixMatch(p)) => Some(format!("{p}x")),
            Some(H::SuffixMatch(s)) => Some(format!("x{s}")),
            Some(H::ContainsMatch(c)) => Some(format!("x{c}x")),
            Some(H::SafeRegexMatch(r)) => regex_sample(&r.regex),
            _ => None,
        }
        .ok_or(format!("header matcher {h:?}"))?;
        if h.name == ":method" {
            method = value;
        } else if h.name.starts_with(':') {
            return Err(format!("pseudo-header matcher {}", h.name));
        } else {
            headers.push((h.name.clone(), value));
        }
    }
    let mut query = Vec::new();
    for q in &m.query_parameters {
        let v = match q.query_parameter_match_specifier.as_ref() {
            Some(Q::StringMatch(s)) => string_sample(s),
            Some(Q::PresentMatch(true)) => Some("present".to_string()),
            _ => None,
        }
        .ok_or(format!("query matcher {q:?}"))?;
        query.push(format!("{}={v}", q.name));
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    Ok(Req {
        port,
        method,
        host: host.to_string(),
        path,
        headers,
        why,
    })
}

/// Whether `route` matches `req` (none: this harness cannot tell).
fn route_matches(route: &rt::Route, req: &Req) -> Option<bool> {
    use rt::header_matcher::HeaderMatchSpecifier as H;
    use rt::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    use rt::route_match::PathSpecifier as P;
    let m = route.r#match.as_ref()?;
    if m.runtime_fraction.is_some()
        || m.grpc.is_some()
        || m.tls_context.is_some()
        || !m.dynamic_metadata.is_empty()
        || !m.cookies.is_empty()
        || !m.filter_state.is_empty()
    {
        return None;
    }
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_ascii_lowercase()
        }
    };
    let path = req.path_only();
    let path_ok = match m.path_specifier.as_ref()? {
        P::Prefix(p) => fold(path).starts_with(&fold(p)),
        P::Path(p) => fold(path) == fold(p),
        P::SafeRegex(r) => full_match(&r.regex, path),
        _ => return None,
    };
    if !path_ok {
        return Some(false);
    }
    for h in &m.headers {
        if h.invert_match || (h.name.starts_with(':') && h.name != ":method") {
            return None;
        }
        let v = req.header(&h.name);
        #[allow(deprecated)]
        let ok = match h.header_match_specifier.as_ref() {
            Some(H::StringMatch(s)) => match v {
                Some(v) => string_matches(s, v)?,
                None => false,
            },
            Some(H::PresentMatch(p)) => v.is_some() == *p,
            Some(H::ExactMatch(e)) => v == Some(e.as_str()),
            _ => return None,
        };
        if !ok {
            return Some(false);
        }
    }
    let query = req.query();
    for q in &m.query_parameters {
        let v = query.iter().find(|(k, _)| *k == q.name).map(|(_, v)| v);
        let ok = match q.query_parameter_match_specifier.as_ref() {
            Some(Q::StringMatch(s)) => match v {
                Some(v) => string_matches(s, v)?,
                None => false,
            },
            Some(Q::PresentMatch(p)) => v.is_some() == *p,
            None => v.is_some(),
        };
        if !ok {
            return Some(false);
        }
    }
    Some(true)
}

/// The route `req` takes in `vh` (first match): `Some(None)` when none matches, `None` when
/// this harness cannot tell.
fn first_match<'a>(vh: &'a rt::VirtualHost, req: &Req) -> Option<Option<&'a rt::Route>> {
    for r in &vh.routes {
        if route_matches(r, req)? {
            return Some(Some(r));
        }
    }
    Some(None)
}

fn fraction(p: Option<&FractionalPercent>) -> f64 {
    let Some(p) = p else {
        // Envoy's default for a fault without a percentage: always.
        return 1.0;
    };
    let d = match DenominatorType::try_from(p.denominator) {
        Ok(DenominatorType::Hundred) => 100.0,
        Ok(DenominatorType::TenThousand) => 10_000.0,
        _ => 1_000_000.0,
    };
    (f64::from(p.numerator) / d).min(1.0)
}

fn duration(d: Option<&envoy_types::pb::google::protobuf::Duration>) -> Option<Duration> {
    let d = d?;
    Some(
        Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0))
            + Duration::from_nanos(u64::try_from(d.nanos).unwrap_or(0)),
    )
}

/// The outcomes the configuration allows for `req` taking `route` (all of them when random or
/// timing-dependent), or why the request is not compared.
fn expected(
    route: Option<&rt::Route>,
    req: &Req,
    res: &Resources,
    names: &BTreeMap<u32, String>,
) -> Result<BTreeSet<Outcome>, String> {
    use rt::redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier};
    use rt::route::Action;
    use rt::route_action::ClusterSpecifier;
    let Some(route) = route else {
        return Ok(BTreeSet::from([Outcome::NotFound]));
    };
    if let Some(any) = route
        .typed_per_filter_config
        .get("envoy.filters.http.fault")
    {
        let fault = HttpFault::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
        if !fault.headers.is_empty()
            || !fault.downstream_nodes.is_empty()
            || !fault.upstream_cluster.is_empty()
        {
            return Err("conditional fault".into());
        }
        if let Some(delay) = &fault.delay {
            let p = fraction(delay.percentage.as_ref());
            if p > 0.0 {
                match &delay.fault_delay_secifier {
                    Some(FaultDelaySecifier::FixedDelay(d)) => {
                        let d = duration(Some(d)).unwrap_or_default();
                        if d > MAX_DELAY {
                            return Err(format!(
                                "fault delay {d:?} on {:.4}% of requests",
                                p * 100.0
                            ));
                        }
                    }
                    _ => return Err("header-controlled delay".into()),
                }
            }
        }
        if let Some(abort) = &fault.abort {
            let p = fraction(abort.percentage.as_ref());
            if p > 0.0 && p < 1.0 {
                return Err(format!("fault abort on {:.4}% of requests", p * 100.0));
            }
            if p >= 1.0 {
                return match abort.error_type {
                    Some(ErrorType::HttpStatus(s)) => Ok(BTreeSet::from([Outcome::FaultAbort(
                        u16::try_from(s).unwrap(),
                    )])),
                    _ => Err("abort without an HTTP status".into()),
                };
            }
        }
    }
    match route.action.as_ref().ok_or("no action")? {
        Action::DirectResponse(d) => {
            use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
            let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => String::new(),
                Some(Specifier::InlineString(s)) => s.clone(),
                Some(Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(other) => return Err(format!("direct response body {other:?}")),
            };
            let status = u16::try_from(d.status).unwrap();
            if body.is_empty() && status == 404 {
                return Ok(BTreeSet::from([Outcome::NotFound]));
            }
            if (300..400).contains(&status) {
                // Envoy points a 3xx direct response's `location` at the request's own URL.
                return Ok(BTreeSet::from([Outcome::Redirect(
                    status,
                    format!("http://{}{}", req.host, req.path),
                )]));
            }
            Ok(BTreeSet::from([Outcome::Local(status, body)]))
        }
        Action::Redirect(r) => {
            let code = match RedirectResponseCode::try_from(r.response_code) {
                Ok(RedirectResponseCode::MovedPermanently) => 301,
                Ok(RedirectResponseCode::Found) => 302,
                Ok(RedirectResponseCode::SeeOther) => 303,
                Ok(RedirectResponseCode::TemporaryRedirect) => 307,
                Ok(RedirectResponseCode::PermanentRedirect) => 308,
                Err(_) => return Err("unknown redirect code".into()),
            };
            let scheme = match &r.scheme_rewrite_specifier {
                None => "http".to_string(),
                Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => "https".to_string(),
                Some(SchemeRewriteSpecifier::HttpsRedirect(false)) => "http".to_string(),
                Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => s.clone(),
            };
            let host = if r.host_redirect.is_empty() {
                req.host.clone()
            } else {
                r.host_redirect.clone()
            };
            let port = if r.port_redirect == 0 {
                String::new()
            } else {
                format!(":{}", r.port_redirect)
            };
            let path = match &r.path_rewrite_specifier {
                None => req.path_only().to_string(),
                Some(PathRewriteSpecifier::PathRedirect(p)) => p.clone(),
                Some(other) => return Err(format!("redirect rewrite {other:?}")),
            };
            // The request's query string stays unless stripped or the new path has its own.
            let query = match req.path.split_once('?') {
                Some((_, q)) if !r.strip_query && !path.contains('?') => format!("?{q}"),
                _ => String::new(),
            };
            Ok(BTreeSet::from([Outcome::Redirect(
                code,
                format!("{scheme}://{host}{port}{path}{query}"),
            )]))
        }
        Action::Route(ra) => {
            let clusters: Vec<&str> = match ra.cluster_specifier.as_ref().ok_or("no cluster")? {
                ClusterSpecifier::Cluster(c) => vec![c.as_str()],
                ClusterSpecifier::WeightedClusters(w) => w
                    .clusters
                    .iter()
                    .filter(|c| c.weight.as_ref().is_none_or(|w| w.value > 0))
                    .map(|c| c.name.as_str())
                    .collect(),
                other => return Err(format!("cluster specifier {other:?}")),
            };
            let mut timing =
                duration(ra.timeout.as_ref()).is_some_and(|t| !t.is_zero() && t < TIMING);
            if let Some(rp) = &ra.retry_policy {
                timing |= duration(rp.per_try_timeout.as_ref())
                    .is_some_and(|t| !t.is_zero() && t < TIMING);
            }
            let mut out = BTreeSet::new();
            for name in clusters {
                let Some(cluster) = res.clusters.get(name) else {
                    out.insert(Outcome::Local(503, String::new()));
                    continue;
                };
                let cla = res
                    .endpoints
                    .get(name)
                    .or(cluster.load_assignment.as_ref())
                    .ok_or(format!("no endpoints for {name}"))?;
                let mut hosts = Vec::new();
                for lep in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
                    use envoy_types::pb::envoy::config::core::v3::address::Address as A;
                    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
                    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
                    let Some(HostIdentifier::Endpoint(ep)) = &lep.host_identifier else {
                        return Err(format!("endpoint of {name} without an address"));
                    };
                    let Some(A::SocketAddress(sa)) =
                        ep.address.as_ref().and_then(|a| a.address.as_ref())
                    else {
                        return Err(format!("endpoint of {name} not a socket address"));
                    };
                    let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                        return Err(format!("endpoint of {name} without a port"));
                    };
                    hosts.push((sa.address.clone(), port, over_tls(cluster, lep)));
                }
                if hosts.is_empty() {
                    out.insert(Outcome::NoHealthyUpstream);
                    continue;
                }
                let mut unreachable = false;
                for (ip, port, tls) in hosts {
                    if ip == "127.0.0.1" && tls {
                        // Auto mTLS (or ISTIO_MUTUAL) to a loopback upstream, which speaks
                        // plaintext HTTP: the handshake fails.
                        out.insert(Outcome::ConnectFailure);
                    } else if ip == "127.0.0.1" {
                        let n = names
                            .get(&port)
                            .ok_or(format!("loopback endpoint {ip}:{port} of {name} unknown"))?;
                        out.insert(Outcome::Upstream(version_of(n)));
                    } else {
                        unreachable = true;
                        out.insert(Outcome::ConnectFailure);
                    }
                }
                // Outlier detection ejects unreachable hosts after a few failures (for a time),
                // with the panic threshold at 0: then nothing is left to pick.
                if unreachable && cluster.outlier_detection.is_some() {
                    out.insert(Outcome::NoHealthyUpstream);
                }
                // A connect timeout this short may fire even on loopback.
                if duration(cluster.connect_timeout.as_ref())
                    .is_some_and(|t| t < Duration::from_millis(100))
                {
                    out.insert(Outcome::ConnectFailure);
                }
            }
            if timing {
                out.insert(Outcome::Timeout);
            }
            Ok(out)
        }
        other => Err(format!("action {other:?}")),
    }
}

/// Whether the cluster reaches this endpoint over TLS: the first `transport_socket_matches`
/// entry whose `match` the endpoint's `envoy.transport_socket_match` metadata carries (else
/// the cluster's `transport_socket`) is a TLS socket.
fn over_tls(
    cluster: &envoy_types::pb::envoy::config::cluster::v3::Cluster,
    lep: &envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint,
) -> bool {
    let is_tls = |t: Option<&envoy_types::pb::envoy::config::core::v3::TransportSocket>| {
        t.is_some_and(|t| {
            t.name == "envoy.transport_sockets.tls"
                || matches!(&t.config_type, Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(a)) if a.type_url.ends_with("UpstreamTlsContext"))
        })
    };
    let meta = lep
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"));
    for m in &cluster.transport_socket_matches {
        let applies = m.r#match.as_ref().is_none_or(|want| {
            want.fields
                .iter()
                .all(|(k, v)| meta.and_then(|have| have.fields.get(k)) == Some(v))
        });
        if applies {
            return is_tls(m.transport_socket.as_ref());
        }
    }
    is_tls(cluster.transport_socket.as_ref())
}

/// Sends `req` to `addr` and waits for the whole answer (at most [`CLIENT_TIMEOUT`]).
async fn send(addr: SocketAddr, req: &Req) -> Result<Reply, String> {
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match tokio::time::timeout(
        CLIENT_TIMEOUT,
        upstream::request(addr, &req.method, &req.host, &req.path, &headers),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CLIENT_TIMEOUT:?}")),
    }
}

/// Counts of one sample.
#[derive(Default, Debug)]
struct Tally {
    requests: usize,
    exact: usize,
    random: usize,
    skipped: BTreeMap<String, usize>,
    agreements: usize,
    disagreements: usize,
    /// Agreed outcomes of the exact comparisons, by kind.
    kinds: BTreeMap<&'static str, usize>,
    /// The distinct bodies of agreed upstream failures (connect errors, no healthy upstream).
    failure_bodies: BTreeSet<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.exact += other.exact;
        self.random += other.random;
        self.agreements += other.agreements;
        self.disagreements += other.disagreements;
        for (k, v) in other.skipped {
            *self.skipped.entry(k).or_default() += v;
        }
        for (k, v) in other.kinds {
            *self.kinds.entry(k).or_default() += v;
        }
        self.failure_bodies.extend(other.failure_bodies);
    }
}

fn kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Upstream(_) => "upstream",
        Outcome::ConnectFailure => "connect failure",
        Outcome::NoHealthyUpstream => "no healthy upstream",
        Outcome::Timeout => "timeout",
        Outcome::FaultAbort(_) => "fault abort",
        Outcome::Redirect(..) => "redirect",
        Outcome::NotFound => "404",
        Outcome::Local(..) => "direct response",
        Outcome::NoAnswer(_) => "no answer",
    }
}

/// Waits until both proxies ACKed everything of a new push (CDS at another version than
/// `before`), asserting no NACK on the way; returns the CDS versions.
async fn wait_synced(
    served: &Served,
    before: &BTreeMap<String, String>,
    sample: usize,
    yaml: &str,
) -> BTreeMap<String, String> {
    eventually(
        &format!("sample {sample} ACKed by both proxies"),
        Duration::from_secs(60),
        async || {
            let conns = served.connections.list();
            let mut versions = BTreeMap::new();
            for side in &SIDES {
                let id = side.node_id();
                let c = conns.iter().find(|c| c.node_id == id)?;
                let nacks: u64 = c.types.values().map(|t| t.nacks).sum();
                assert_eq!(
                    nacks, 0,
                    "sample {sample}: {} NACKed: {:#?}\n{yaml}",
                    side.kind, c.types
                );
                let cds = c
                    .types
                    .get(mesh_xds::resource::CLUSTER)?
                    .acked_version
                    .clone();
                let synced = c.types.len() == 4
                    && c.types.values().all(|t| t.status() == SyncStatus::Synced);
                if !synced || before.get(&id) == Some(&cds) {
                    return None;
                }
                versions.insert(id, cds);
            }
            Some(versions)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_mesh_sets_get_the_same_answers_from_envoy_and_mesh_sidecar() {
    if !NAMESPACE
        .run_inside("generated_mesh_sets_get_the_same_answers_from_envoy_and_mesh_sidecar")
        .await
    {
        return;
    }
    let started = Instant::now();
    let mesh = MeshConfig::default();
    let root_ns = mesh.root_namespace.clone();
    let cp = ControlPlane::with_mesh("", mesh);
    let served = serve_at(cp.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let mut proxies = Vec::new();
    for side in &SIDES {
        let p = Proxy::start(side.kind, served.addr, Api::Sotw, &side.node_yaml()).await;
        p.wait_live().await;
        proxies.push(p);
    }
    let mut runner = TestRunner::deterministic();
    let strategy = strategy::mesh_set();
    let mut versions = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut totals = Tally::default();
    for i in 0..SAMPLES {
        let mut set = strategy.new_tree(&mut runner).unwrap().current();
        let gen_ns: BTreeSet<String> = set
            .configs()
            .iter()
            .map(|c| c.meta().namespace().to_string())
            .collect();
        for side in &SIDES {
            assert!(!gen_ns.contains(side.ns), "sample {i} uses {}", side.ns);
        }
        assert!(
            !gen_ns.contains(&root_ns),
            "sample {i} uses the root namespace"
        );
        assert!(
            set.configs()
                .iter()
                .all(|c| c.kind() != mesh_model::Kind::Sidecar),
            "sample {i} has a Sidecar of its own"
        );
        let (_upstreams, names) = loopback_endpoints(&mut set, i).await;
        let ports: BTreeSet<u32> = set
            .service_entries
            .iter()
            .flat_map(|se| &se.spec.ports)
            .filter(|p| p.protocol == "HTTP")
            .map(|p| p.number)
            .collect();
        let mut json: String = set
            .configs()
            .iter()
            .map(|c| serde_json::to_string(c).unwrap() + "\n")
            .collect();
        for side in &SIDES {
            json.push_str(&side.sidecar_json(&ports));
            json.push('\n');
        }
        let report = cp.replace(&json);
        assert!(
            report.rejected.is_empty(),
            "sample {i}: {:#?}",
            report.rejected
        );
        versions = wait_synced(&served, &versions, i, &json).await;

        // What each node was sent, translated again.
        let conns = served.connections.list();
        let ctx = PushContext::new(cp.mesh.clone(), cp.store.snapshot());
        let resources: Vec<Resources> = SIDES
            .iter()
            .map(|side| {
                let c = conns.iter().find(|c| c.node_id == side.node_id()).unwrap();
                translate(&ctx, &mesh_xds::Proxy::from_node(c.node.as_ref().unwrap()))
            })
            .collect();
        // Both nodes see the same routes, clusters and endpoints; only listeners differ.
        assert_eq!(resources[0].routes, resources[1].routes, "sample {i}");
        assert_eq!(resources[0].clusters, resources[1].clusters, "sample {i}");
        assert_eq!(resources[0].endpoints, resources[1].endpoints, "sample {i}");
        let res = &resources[0];
        for port in &ports {
            assert!(
                res.routes.contains_key(&port.to_string()),
                "sample {i}: no route config {port}"
            );
            for side in &SIDES {
                eventually(
                    &format!(
                        "sample {i}: {} listening on {}",
                        side.kind,
                        side.listener(*port)
                    ),
                    Duration::from_secs(30),
                    async || {
                        tokio::net::TcpStream::connect(side.listener(*port))
                            .await
                            .ok()
                    },
                )
                .await;
            }
        }

        // Requests from the route configurations.
        let mut tally = Tally::default();
        let mut reqs: Vec<(Req, &rt::VirtualHost)> = Vec::new();
        for port in &ports {
            let rc = &res.routes[&port.to_string()];
            for vh in &rc.virtual_hosts {
                let domains: Vec<&String> =
                    vh.domains.iter().filter(|d| !d.contains('*')).collect();
                if domains.is_empty() {
                    continue;
                }
                for (k, route) in vh.routes.iter().enumerate() {
                    // Two of the exact domains (short names included), in turn.
                    for d in 0..domains.len().min(2) {
                        let host = domains[(k + d) % domains.len()];
                        let why = format!("{}: route {k} {:?}", vh.name, route.name);
                        match request_for(*port, host, route, why) {
                            Ok(r) => reqs.push((r, vh)),
                            Err(e) => *tally.skipped.entry(e).or_default() += 1,
                        }
                    }
                }
                reqs.push((
                    Req {
                        port: *port,
                        method: "GET".into(),
                        host: domains[0].clone(),
                        path: "/mesh-diff-unmatched".into(),
                        headers: Vec::new(),
                        why: format!("{}: no matcher satisfied", vh.name),
                    },
                    vh,
                ));
            }
        }
        for (req, vh) in &reqs {
            let expect = match first_match(vh, req) {
                None => Err("route matching this harness cannot follow".to_string()),
                Some(route) => expected(route, req, res, &names),
            };
            let outcomes = match expect {
                Ok(o) => o,
                Err(e) => {
                    *tally.skipped.entry(e).or_default() += 1;
                    continue;
                }
            };
            tally.requests += 1;
            let (a, b) = tokio::join!(
                send(SIDES[0].listener(req.port), req),
                send(SIDES[1].listener(req.port), req)
            );
            let (oa, ob) = (outcome(&a), outcome(&b));
            let problem = if outcomes.len() == 1 {
                tally.exact += 1;
                if fingerprint(&a) != fingerprint(&b) {
                    Some("the proxies disagree")
                } else if !outcomes.contains(&oa) {
                    Some("both proxies agree, but not with the route configuration")
                } else {
                    *tally.kinds.entry(kind(&oa)).or_default() += 1;
                    if let (Outcome::ConnectFailure | Outcome::NoHealthyUpstream, Ok(r)) = (&oa, &a)
                    {
                        tally.failure_bodies.insert(r.body.clone());
                    }
                    None
                }
            } else {
                tally.random += 1;
                match (outcomes.contains(&oa), outcomes.contains(&ob)) {
                    (true, true) => None,
                    (false, true) => Some("envoy's answer is not one the configuration allows"),
                    (true, false) => {
                        Some("mesh-sidecar's answer is not one the configuration allows")
                    }
                    (false, false) => Some("neither answer is one the configuration allows"),
                }
            };
            match problem {
                None => tally.agreements += 1,
                Some(p) => {
                    tally.disagreements += 1;
                    failures.push(format!(
                        "sample {i}, {}: {p}\n  request: {} {} Host: {} headers {:?} (port {})\n  \
                         allowed: {outcomes:?}\n  envoy:        {}\n  mesh-sidecar: {}",
                        req.why,
                        req.method,
                        req.path,
                        req.host,
                        req.headers,
                        req.port,
                        show(&a),
                        show(&b),
                    ));
                }
            }
        }
        for (side, p) in SIDES.iter().zip(&proxies) {
            assert_eq!(
                p.rejections().await,
                0,
                "sample {i}: {} rejected:\n{}",
                side.kind,
                p.log()
            );
        }
        eprintln!(
            "sample {i}: namespace {} services {} ports {} loopback endpoints {} | requests {} \
             (exact {}, random {}) agreements {} disagreements {} | exact outcomes {:?} | \
             skipped {:?}",
            set.service_entries[0].metadata.namespace(),
            set.service_entries.len(),
            ports.len(),
            names.len(),
            tally.requests,
            tally.exact,
            tally.random,
            tally.agreements,
            tally.disagreements,
            tally.kinds,
            tally.skipped
        );
        totals.add(tally);
    }
    // The control plane never saw a NACK from either proxy.
    for c in served.connections.list() {
        let nacks: u64 = c.types.values().map(|t| t.nacks).sum();
        assert_eq!(nacks, 0, "{}: {:#?}", c.node_id, c.types);
    }
    eprintln!(
        "{SAMPLES} samples in {:?}: requests {} (exact {}, random {}) agreements {} \
         disagreements {}; exact outcomes {:?}; skipped {}",
        started.elapsed(),
        totals.requests,
        totals.exact,
        totals.random,
        totals.agreements,
        totals.disagreements,
        totals.kinds,
        totals.skipped.values().sum::<usize>()
    );
    eprintln!("upstream failure bodies both proxies gave:");
    for b in &totals.failure_bodies {
        eprintln!("  {b:?}");
    }
    // Enough was compared for the test to mean something.
    assert!(totals.exact >= 50, "{totals:?}");
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
