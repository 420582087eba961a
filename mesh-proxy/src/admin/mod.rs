//! The admin server, answering like Envoy's (same paths, parameters, status codes, content
//! types and JSON shapes; `mesh-proxy/tests/admin.rs` compares every answer with Envoy 1.40's):
//!
//! - `/ready`: `LIVE` (200), else the state (`PRE_INITIALIZING` until the first CDS update
//!   is applied and its clusters are warm, then `INITIALIZING`) with 503.
//! - `/server_info`: Envoy's keys; every command-line option with Envoy's defaults; the node
//!   with this proxy's user agent and extensions.
//! - `/stats` (text, `format=json|prometheus`, `filter=`, `usedonly`, `type=`) and
//!   `/stats/prometheus` (`usedonly`, `filter=`, `text_readouts`), with Envoy's default tag
//!   extraction for the Prometheus names (`admin/stats.rs`).
//! - `/clusters` (text and `format=json`, `filter=`).
//! - `/config_dump` (`resource=`, `mask=`, `name_regex=`, `include_eds`; `admin/dump.rs`).
//! - `/listeners` (text and `format=json`), `/certs`, `/quitquitquit` (POST).

mod clusters;
mod dump;
mod stats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::server::Server;

/// What the admin server needs.
pub struct Admin {
    /// The config manager.
    pub server: Arc<Server>,
    /// The bootstrap as JSON (for `/config_dump`'s `BootstrapConfigDump` and `/server_info`).
    pub bootstrap: serde_json::Value,
    /// Command-line options as Envoy names them (for `/server_info`).
    pub command_line: serde_json::Value,
    /// When the proxy started.
    pub started: Instant,
    /// Set when `/quitquitquit` is called.
    pub quit: watch::Sender<bool>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// The version `/server_info` reports.
pub const VERSION: &str = concat!("mesh-sidecar/", env!("CARGO_PKG_VERSION"));

/// Envoy's server states, as the `server.state` gauge holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Live,
    Draining,
    PreInitializing,
    Initializing,
}

impl State {
    fn of(gauge: i64) -> State {
        match gauge {
            0 => State::Live,
            1 => State::Draining,
            3 => State::Initializing,
            _ => State::PreInitializing,
        }
    }

    fn name(self) -> &'static str {
        match self {
            State::Live => "LIVE",
            State::Draining => "DRAINING",
            State::PreInitializing => "PRE_INITIALIZING",
            State::Initializing => "INITIALIZING",
        }
    }
}

/// The extensions this proxy implements, as Envoy lists its own in `node.extensions`:
/// `(name, category, type URLs)`.
const EXTENSIONS: &[(&str, &str, &[&str])] = &[
    ("envoy.cluster.eds", "envoy.clusters", &[]),
    ("envoy.cluster.logical_dns", "envoy.clusters", &[]),
    (
        "envoy.cluster.original_dst",
        "envoy.clusters",
        &["envoy.extensions.clusters.original_dst.v3.OriginalDstCluster"],
    ),
    ("envoy.cluster.static", "envoy.clusters", &[]),
    ("envoy.cluster.strict_dns", "envoy.clusters", &[]),
    (
        "envoy.clusters.dynamic_forward_proxy",
        "envoy.clusters",
        &["envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig"],
    ),
    (
        "envoy.filters.http.cors",
        "envoy.filters.http",
        &[
            "envoy.extensions.filters.http.cors.v3.Cors",
            "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        ],
    ),
    (
        "envoy.filters.http.dynamic_forward_proxy",
        "envoy.filters.http",
        &["envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig"],
    ),
    (
        "envoy.filters.http.fault",
        "envoy.filters.http",
        &["envoy.extensions.filters.http.fault.v3.HTTPFault"],
    ),
    (
        "envoy.filters.http.router",
        "envoy.filters.http",
        &["envoy.extensions.filters.http.router.v3.Router"],
    ),
    (
        "envoy.filters.listener.http_inspector",
        "envoy.filters.listener",
        &["envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"],
    ),
    (
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener",
        &["envoy.extensions.filters.listener.original_dst.v3.OriginalDst"],
    ),
    (
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener",
        &["envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"],
    ),
    (
        "envoy.filters.network.http_connection_manager",
        "envoy.filters.network",
        &["envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"],
    ),
    (
        "envoy.filters.network.sni_dynamic_forward_proxy",
        "envoy.filters.network",
        &["envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig"],
    ),
    (
        "envoy.filters.network.tcp_proxy",
        "envoy.filters.network",
        &["envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"],
    ),
    (
        "envoy.network.dns_resolver.cares",
        "envoy.network.dns_resolver",
        &["envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"],
    ),
    (
        "envoy.retry_host_predicates.previous_hosts",
        "envoy.retry_host_predicates",
        &["envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"],
    ),
    (
        "envoy.retry_priorities.previous_priorities",
        "envoy.retry_priorities",
        &["envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"],
    ),
    (
        "envoy.transport_sockets.raw_buffer",
        "envoy.transport_sockets.downstream",
        &["envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"],
    ),
    (
        "envoy.transport_sockets.raw_buffer",
        "envoy.transport_sockets.upstream",
        &["envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"],
    ),
    (
        "envoy.transport_sockets.tls",
        "envoy.transport_sockets.downstream",
        &["envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"],
    ),
    (
        "envoy.transport_sockets.tls",
        "envoy.transport_sockets.upstream",
        &["envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"],
    ),
    (
        "envoy.upstreams.http.http_protocol_options",
        "envoy.upstream_options",
        &[],
    ),
];

/// Envoy's command-line options with their defaults, as `/server_info` prints them.
fn default_command_line() -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "base_id": "0",
        "concurrency": 1,
        "config_path": "",
        "config_yaml": "",
        "allow_unknown_static_fields": false,
        "admin_address_path": "",
        "local_address_ip_version": "v4",
        "log_level": "info",
        "component_log_level": "",
        "log_format": "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v",
        "log_path": "",
        "service_cluster": "",
        "service_node": "",
        "service_zone": "",
        "file_flush_interval": "10s",
        "drain_time": "600s",
        "parent_shutdown_time": "900s",
        "mode": "Serve",
        "disable_hot_restart": false,
        "enable_mutex_tracing": false,
        "restart_epoch": 0,
        "cpuset_threads": false,
        "reject_unknown_dynamic_fields": false,
        "log_format_escaped": false,
        "disabled_extensions": [],
        "ignore_unknown_dynamic_fields": false,
        "use_dynamic_base_id": false,
        "base_id_path": "",
        "drain_strategy": "Gradual",
        "enable_fine_grain_logging": false,
        "socket_path": "@envoy_domain_socket",
        "socket_mode": 0,
        "enable_core_dump": false,
        "stats_tag": [],
        "skip_hot_restart_on_no_parent": false,
        "skip_hot_restart_parent_stats": false,
        "skip_deprecated_logs": false,
        "file_flush_min_size": 0,
        "log_stacktrace_single_entry": false,
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The commands `/` and an unknown path list.
const COMMANDS: &[(&str, &str)] = &[
    ("/", "Admin home page"),
    ("/certs", "print certs on machine"),
    ("/clusters", "upstream cluster status"),
    ("/config_dump", "dump current Envoy configs"),
    ("/listeners", "print listener info"),
    ("/quitquitquit (POST)", "exit the server"),
    (
        "/ready",
        "print server state, return 200 if LIVE, otherwise return 503",
    ),
    ("/server_info", "print server version/status information"),
    ("/stats", "print server stats"),
    (
        "/stats/prometheus",
        "print server stats in prometheus format",
    ),
];

impl Admin {
    /// Serves the admin API on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    fn state(&self) -> State {
        State::of(self.server.shared().stats.gauge("server.state").get())
    }

    fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query = parse_query(req.uri().query().unwrap_or(""));
        let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let has = |k: &str| query.iter().any(|(n, _)| n == k);
        match (req.method(), path.as_str()) {
            (_, "/ready") => match self.state() {
                State::Live => text(StatusCode::OK, "LIVE\n"),
                s => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{}\n", s.name())),
            },
            (_, "/server_info") => json_pretty(&self.server_info()),
            (_, "/stats") => {
                let format = q("format").unwrap_or("text");
                if !matches!(format, "text" | "json" | "prometheus") {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "usage: /stats?format=(json|prometheus|text)\n\n",
                    );
                }
                self.stats(format, &q, has("usedonly"), has("text_readouts"))
            }
            (_, "/stats/prometheus") => {
                self.stats("prometheus", &q, has("usedonly"), has("text_readouts"))
            }
            (_, "/clusters") => {
                let filter = match q("filter").map(regex::Regex::new).transpose() {
                    Ok(f) => f,
                    Err(_) => return text(StatusCode::BAD_REQUEST, "Invalid re2 regex"),
                };
                if q("format") == Some("json") {
                    json_pretty(&clusters::json(&self.server, filter.as_ref()))
                } else {
                    text(
                        StatusCode::OK,
                        &clusters::text(&self.server, filter.as_ref()),
                    )
                }
            }
            (_, "/config_dump") => {
                let bootstrap = self.bootstrap_dump();
                let local = self.local_locality();
                let cx = dump::Context {
                    bootstrap: &bootstrap,
                    loaded: self.started_at(),
                    local: local.as_ref(),
                };
                let query = dump::Query {
                    resource: q("resource"),
                    mask: q("mask"),
                    name_regex: q("name_regex"),
                    include_eds: has("include_eds"),
                };
                match dump::config_dump(&self.server, cx, &query) {
                    Ok(dump::Answer::Json(v)) => json_pretty(&v),
                    Ok(dump::Answer::NotFound(m)) => plain(StatusCode::NOT_FOUND, &m),
                    Ok(dump::Answer::BadRequest(m)) => plain(StatusCode::BAD_REQUEST, &m),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
                }
            }
            (_, "/listeners") => {
                let names = self.server.shared().listeners.names();
                let addr = |n: &str| self.server.shared().listeners.bound_address(n);
                if q("format") == Some("json") {
                    let statuses: Vec<_> = names
                        .iter()
                        .map(|n| {
                            let mut s = serde_json::json!({ "name": n });
                            if let Some(a) = addr(n) {
                                s["local_address"] = serde_json::json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}});
                            }
                            s
                        })
                        .collect();
                    json_pretty(&serde_json::json!({ "listener_statuses": statuses }))
                } else {
                    let mut s = String::new();
                    for n in names {
                        let a = addr(&n).map(|a| a.to_string()).unwrap_or_default();
                        s.push_str(&format!("{n}::{a}\n"));
                    }
                    text(StatusCode::OK, &s)
                }
            }
            (_, "/certs") => json_pretty(&certs(&self.server)),
            (&Method::POST, "/quitquitquit") => {
                self.quit.send_replace(true);
                text(StatusCode::OK, "OK\n")
            }
            (m, "/quitquitquit") => text(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("Method {m} not allowed, POST required."),
            ),
            (_, "/") => text(StatusCode::OK, &commands("admin commands are:\n")),
            _ => text(
                StatusCode::NOT_FOUND,
                &commands("invalid path. admin commands are:\n"),
            ),
        }
    }

    fn stats<'a>(
        &self,
        format: &str,
        q: &dyn Fn(&str) -> Option<&'a str>,
        used_only: bool,
        text_readouts: bool,
    ) -> Response<Full<Bytes>> {
        let filter = match q("filter").map(regex::Regex::new).transpose() {
            Ok(f) => f,
            Err(e) => {
                return text(StatusCode::BAD_REQUEST, &format!("Invalid re2 regex: {e}"));
            }
        };
        let Some(kind) = stats::Kind::parse(q("type")) else {
            return text(
                StatusCode::BAD_REQUEST,
                "usage: /stats?type=(All|Counters|Gauges|Histograms|TextReadouts)\n\n",
            );
        };
        let sel = stats::Select {
            filter: filter.as_ref(),
            used_only,
            kind,
        };
        let all = self.all_stats(filter.as_ref());
        match format {
            "json" => json_compact(&stats::json(&all, sel)),
            "prometheus" => text(StatusCode::OK, &stats::prometheus(&all, sel, text_readouts)),
            _ => text(StatusCode::OK, &stats::text(&all, sel)),
        }
    }

    /// Every stat: the store's, and what the admin server knows itself.
    fn all_stats(&self, filter: Option<&regex::Regex>) -> Vec<stats::Stat> {
        use stats::{Stat, Value};
        let shared = self.server.shared();
        let store = shared.stats.values_matching(filter);
        let g = |name: &str, v: u64| Stat {
            name: name.into(),
            value: Value::Gauge(v),
        };
        let t = |name: String, v: String| Stat {
            name,
            value: Value::Text(v),
        };
        let mut extra = vec![
            g("server.live", u64::from(self.state() == State::Live)),
            g("server.uptime", self.started.elapsed().as_secs()),
            g(
                "server.concurrency",
                self.command_line
                    .get("concurrency")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(1),
            ),
            g("server.hot_restart_epoch", 0),
        ];
        let (expect_cds, expect_lds) = self.server.expects();
        let (cds, lds) = self.server.accepted_versions();
        if expect_cds || expect_lds {
            extra.push(t("control_plane.identifier".into(), String::new()));
        }
        if expect_cds {
            extra.push(t("cluster_manager.cds.version_text".into(), cds));
        }
        if expect_lds {
            extra.push(t("listener_manager.lds.version_text".into(), lds));
        }
        for (name, version, grpc) in shared.secrets.readouts() {
            if grpc {
                extra.push(t(
                    format!("sds.{name}.control_plane.identifier"),
                    String::new(),
                ));
            }
            extra.push(t(format!("sds.{name}.version_text"), version));
        }
        let dumps = self.server.dumps();
        let eds_versions: std::collections::HashMap<&str, &str> = dumps
            .endpoints
            .iter()
            .map(|e| (e.name.as_str(), e.version.as_str()))
            .collect();
        let mut plain = std::collections::BTreeSet::new();
        for c in shared.clusters.all().values() {
            let cfg = c.config();
            let stat_name = cfg.alt_stat_name.as_deref().unwrap_or(&cfg.name);
            match cfg.discovery.eds_service_name() {
                Some(service) => {
                    // The EDS subscription's version, as Envoy keeps it per cluster.
                    let v = eds_versions.get(service).copied().unwrap_or_default();
                    extra.push(t(format!("cluster.{stat_name}.version_text"), v.into()));
                    let hash = if v.is_empty() {
                        0
                    } else {
                        xxhash_rust::xxh64::xxh64(v.as_bytes(), 0)
                    };
                    extra.push(g(&format!("cluster.{stat_name}.version"), hash));
                }
                None => {
                    plain.insert(stat_name.to_string());
                    extra.push(g(&format!("cluster.{stat_name}.version"), 0));
                }
            }
        }
        stats::collect(&store, extra, &plain)
    }

    /// When the proxy started, by the wall clock.
    fn started_at(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
            .checked_sub(self.started.elapsed())
            .unwrap_or(std::time::UNIX_EPOCH)
    }

    /// The node's locality from the bootstrap.
    fn local_locality(&self) -> Option<crate::config::endpoint::Locality> {
        let l = self.bootstrap.get("node")?.get("locality")?;
        let f = |k: &str| {
            l.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(crate::config::endpoint::Locality {
            region: f("region"),
            zone: f("zone"),
            sub_zone: f("sub_zone"),
        })
    }

    /// The node as this proxy presents it: the bootstrap's, with the user agent and the
    /// extensions (`full`: every field, as `/server_info` prints it; else proto3 JSON, as
    /// `/config_dump` does).
    fn node(&self, full: bool) -> serde_json::Value {
        let mut node = match self.bootstrap.get("node") {
            Some(serde_json::Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        let mut semver = env!("CARGO_PKG_VERSION")
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let mut version = serde_json::Map::new();
        for k in ["major_number", "minor_number", "patch"] {
            let n = semver.next().unwrap_or(0);
            if full || n != 0 {
                version.insert(k.into(), n.into());
            }
        }
        node.insert("user_agent_name".into(), "mesh-sidecar".into());
        let mut build = serde_json::json!({ "version": version });
        if full {
            build["metadata"] = serde_json::json!({});
        }
        node.insert("user_agent_build_version".into(), build);
        let extensions: Vec<serde_json::Value> = EXTENSIONS
            .iter()
            .map(|(name, category, urls)| {
                let mut e = serde_json::json!({"name": name, "category": category});
                if full {
                    e["type_descriptor"] = "".into();
                    e["disabled"] = false.into();
                }
                if full || !urls.is_empty() {
                    e["type_urls"] = (*urls).into();
                }
                e
            })
            .collect();
        node.insert("extensions".into(), extensions.into());
        if full {
            for k in ["id", "cluster"] {
                node.entry(k).or_insert_with(|| "".into());
            }
            node.entry("metadata")
                .or_insert_with(|| serde_json::json!({}));
            node.insert("client_features".into(), serde_json::json!([]));
            node.insert("listening_addresses".into(), serde_json::json!([]));
            node.insert("dynamic_parameters".into(), serde_json::json!({}));
        }
        serde_json::Value::Object(node)
    }

    /// The bootstrap as `/config_dump` prints it.
    fn bootstrap_dump(&self) -> serde_json::Value {
        let mut b = self.bootstrap.clone();
        if let Some(o) = b.as_object_mut() {
            o.insert("node".into(), self.node(false));
        }
        b
    }

    fn server_info(&self) -> serde_json::Value {
        let up = self.started.elapsed().as_secs();
        let mut options = default_command_line();
        if let serde_json::Value::Object(given) = &self.command_line {
            for (k, v) in given {
                options.insert(k.clone(), v.clone());
            }
        }
        serde_json::json!({
            "version": VERSION,
            "state": self.state().name(),
            "uptime_current_epoch": format!("{up}s"),
            "uptime_all_epochs": format!("{up}s"),
            "hot_restart_version": "disabled",
            "command_line_options": options,
            "node": self.node(true),
            "hot_restart_initializing": false,
        })
    }
}

fn commands(head: &str) -> String {
    let mut s = head.to_string();
    for (c, help) in COMMANDS {
        s.push_str(&format!("  {c}: {help}\n"));
    }
    s
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Envoy's admin headers on every answer.
fn respond(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, max-age=0"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        body.as_bytes().to_vec(),
        "text/plain; charset=UTF-8",
    )
}

/// Text without a charset (Envoy's `/config_dump` errors).
fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, body.as_bytes().to_vec(), "text/plain")
}

/// JSON as Envoy prints most of it: indented by one space, with a final newline.
fn json_pretty(v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut body,
        serde_json::ser::PrettyFormatter::with_indent(b" "),
    );
    let _ = serde::Serialize::serialize(v, &mut ser);
    body.push(b'\n');
    respond(StatusCode::OK, body, "application/json")
}

/// JSON on one line (`/stats?format=json`).
fn json_compact(v: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        serde_json::to_vec(v).unwrap_or_default(),
        "application/json",
    )
}

/// RFC 3339 UTC time with milliseconds, as Envoy prints `last_updated`.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    // Protobuf's JSON timestamps leave out a zero fraction.
    let fraction = match d.subsec_millis() {
        0 => String::new(),
        ms => format!(".{ms:03}"),
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
    )
}

/// `/certs`: every TLS context's trust anchor and presented certificate, as Envoy's
/// `admin.v3.Certificates` prints them.
fn certs(server: &Server) -> serde_json::Value {
    use crate::config::tls::SanType;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let at = |secs: i64| {
        rfc3339(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
        )
    };
    let detail = |c: &crate::tls::CertInfo| {
        let sans: Vec<serde_json::Value> = c
            .sans
            .iter()
            .filter_map(|(k, v)| match k {
                SanType::Dns => Some(serde_json::json!({ "dns": v })),
                SanType::Uri => Some(serde_json::json!({ "uri": v })),
                SanType::Ip => Some(serde_json::json!({ "ip_address": v })),
                SanType::Email => None,
            })
            .collect();
        let days = (c.not_after - now).max(0) / 86_400;
        serde_json::json!({
            "path": c.path,
            "serial_number": c.serial,
            "subject_alt_names": sans,
            "days_until_expiration": days.to_string(),
            "valid_from": at(c.not_before),
            "expiration_time": at(c.not_after),
        })
    };
    let list: Vec<serde_json::Value> = server
        .shared()
        .tls_contexts()
        .iter()
        .map(|c| {
            serde_json::json!({
                "ca_cert": c.ca.iter().map(detail).collect::<Vec<_>>(),
                "cert_chain": c.chain.iter().map(detail).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "certificates": list })
}

/// Binds the admin address (port 0 = any) and returns the bound address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_leave_out_a_zero_fraction() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 365);
        assert_eq!(rfc3339(t), "1971-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(t + std::time::Duration::from_millis(7)),
            "1971-01-01T00:00:00.007Z"
        );
    }

    #[test]
    fn rfc3339_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_620_075_123);
        assert_eq!(rfc3339(t), "2025-12-01T20:14:35.123Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("filter=%5Ecluster%7Cx&format=json&usedonly"),
            vec![
                ("filter".to_string(), "^cluster|x".to_string()),
                ("format".to_string(), "json".to_string()),
                ("usedonly".to_string(), String::new())
            ]
        );
    }
}
