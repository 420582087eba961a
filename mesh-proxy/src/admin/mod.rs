//! The admin server, answering like Envoy's: `/ready`, `/server_info`, `/stats` (text,
//! `format=json`, `filter=`), `/stats/prometheus`, `/clusters` (text and `format=json`),
//! `/config_dump` (`resource=`, `include_eds`), `/listeners`, `/certs`, `/quitquitquit`.

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

    fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query = parse_query(req.uri().query().unwrap_or(""));
        let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        match (req.method(), path.as_str()) {
            (_, "/ready") => {
                if self.server.is_ready() {
                    text(StatusCode::OK, "LIVE\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n")
                }
            }
            (_, "/server_info") => json(&self.server_info()),
            (_, "/stats") => {
                let filter = match q("filter").map(regex::Regex::new).transpose() {
                    Ok(f) => f,
                    Err(e) => {
                        return text(StatusCode::BAD_REQUEST, &format!("Invalid regex: {e}\n"));
                    }
                };
                let used_only = q("usedonly").is_some();
                let stats = self.server.shared().stats.values();
                if q("format") == Some("json") {
                    json(&stats::json(&stats, filter.as_ref(), used_only))
                } else if q("format") == Some("prometheus") {
                    text(
                        StatusCode::OK,
                        &stats::prometheus(&stats, filter.as_ref(), &self.cluster_names()),
                    )
                } else {
                    text(
                        StatusCode::OK,
                        &stats::text(&stats, filter.as_ref(), used_only),
                    )
                }
            }
            (_, "/stats/prometheus") => {
                let stats = self.server.shared().stats.values();
                text(
                    StatusCode::OK,
                    &stats::prometheus(&stats, None, &self.cluster_names()),
                )
            }
            (_, "/clusters") => {
                if q("format") == Some("json") {
                    json(&clusters::json(&self.server))
                } else {
                    text(StatusCode::OK, &clusters::text(&self.server))
                }
            }
            (_, "/config_dump") => {
                let include_eds = q("include_eds").is_some();
                match dump::config_dump(&self.server, &self.bootstrap, q("resource"), include_eds) {
                    Ok(Some(v)) => json(&v),
                    Ok(None) => text(StatusCode::NOT_FOUND, "{}\n"),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
                }
            }
            (_, "/listeners") => {
                let names = self.server.shared().listeners.names();
                if q("format") == Some("json") {
                    let statuses: Vec<_> = names
                        .iter()
                        .map(|n| {
                            let addr = self.server.shared().listeners.bound_address(n);
                            serde_json::json!({
                                "name": n,
                                "local_address": addr.map(|a| serde_json::json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})),
                            })
                        })
                        .collect();
                    json(&serde_json::json!({ "listener_statuses": statuses }))
                } else {
                    let mut s = String::new();
                    for n in names {
                        let addr = self
                            .server
                            .shared()
                            .listeners
                            .bound_address(&n)
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        s.push_str(&format!("{n}::{addr}\n"));
                    }
                    text(StatusCode::OK, &s)
                }
            }
            (_, "/certs") => json(&serde_json::json!({ "certificates": [] })),
            (&Method::POST, "/quitquitquit") => {
                self.quit.send_replace(true);
                text(StatusCode::OK, "OK\n")
            }
            (_, "/quitquitquit") => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "This endpoint requires POST\n",
            ),
            (_, "/") => text(
                StatusCode::OK,
                "admin commands are:\n  /certs\n  /clusters\n  /config_dump\n  /listeners\n  /quitquitquit\n  /ready\n  /server_info\n  /stats\n  /stats/prometheus\n",
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "invalid path. admin commands are: /certs /clusters /config_dump /listeners /quitquitquit /ready /server_info /stats /stats/prometheus\n",
            ),
        }
    }

    fn cluster_names(&self) -> Vec<String> {
        self.server
            .shared()
            .clusters
            .all()
            .keys()
            .cloned()
            .collect()
    }

    fn server_info(&self) -> serde_json::Value {
        let up = self.started.elapsed().as_secs();
        serde_json::json!({
            "version": VERSION,
            "state": if self.server.is_ready() { "LIVE" } else { "PRE_INITIALIZING" },
            "hot_restart_version": "disabled",
            "command_line_options": self.command_line,
            "node": self.bootstrap.get("node").cloned().unwrap_or_default(),
            "uptime_current_epoch": format!("{up}s"),
            "uptime_all_epochs": format!("{up}s"),
        })
    }
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

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
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
    fn rfc3339_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_620_075_123);
        assert_eq!(rfc3339(t), "2025-12-01T20:14:35.123Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
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
