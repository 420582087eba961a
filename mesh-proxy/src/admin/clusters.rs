//! `/clusters` in Envoy's text and JSON forms.

use std::fmt::Write as _;

use crate::cluster::Host;
use crate::server::Server;

fn health_flags(h: &Host) -> String {
    let mut f = String::new();
    if h.is_ejected() {
        f.push_str("/failed_outlier_check");
    }
    if h.is_eds_unhealthy() {
        f.push_str("/failed_eds_health");
    }
    if h.is_degraded() {
        f.push_str("/degraded_eds_health");
    }
    if f.is_empty() { "healthy".into() } else { f }
}

/// The text form: `CLUSTER::HOST::STAT::VALUE` lines.
pub(super) fn text(server: &Server) -> String {
    let mut out = String::new();
    let dumps = server.dumps();
    let mut names: Vec<_> = server.shared().clusters.all().values().cloned().collect();
    names.sort_by(|a, b| a.name().cmp(b.name()));
    for c in names {
        let n = c.name();
        let cfg = c.config();
        let cb = cfg.circuit_breakers;
        let dynamic = dumps
            .clusters
            .iter()
            .find(|d| d.name == n)
            .is_some_and(|d| d.dynamic);
        let _ = writeln!(
            out,
            "{n}::observability_name::{}",
            cfg.alt_stat_name.as_deref().unwrap_or(n)
        );
        for prio in ["default_priority", "high_priority"] {
            let _ = writeln!(out, "{n}::{prio}::max_connections::{}", cb.max_connections);
            let _ = writeln!(
                out,
                "{n}::{prio}::max_pending_requests::{}",
                cb.max_pending_requests
            );
            let _ = writeln!(out, "{n}::{prio}::max_requests::{}", cb.max_requests);
            let _ = writeln!(out, "{n}::{prio}::max_retries::{}", cb.max_retries);
        }
        let _ = writeln!(out, "{n}::added_via_api::{dynamic}");
        if let Some(s) = cfg.discovery.eds_service_name() {
            let _ = writeln!(out, "{n}::eds_service_name::{s}");
        }
        for h in c.host_set().hosts() {
            let a = h.address();
            let (total, error) = h.request_counts();
            let _ = writeln!(out, "{n}::{a}::cx_active::{}", h.pools().connections());
            let _ = writeln!(out, "{n}::{a}::rq_active::{}", h.active_requests());
            let _ = writeln!(out, "{n}::{a}::rq_error::{error}");
            let _ = writeln!(
                out,
                "{n}::{a}::rq_success::{}",
                total
                    .saturating_sub(error)
                    .saturating_sub(h.active_requests())
            );
            let _ = writeln!(out, "{n}::{a}::rq_total::{total}");
            let _ = writeln!(out, "{n}::{a}::hostname::{}", h.hostname());
            let _ = writeln!(out, "{n}::{a}::health_flags::{}", health_flags(h));
            let _ = writeln!(out, "{n}::{a}::weight::{}", h.weight());
            let l = h.locality();
            let _ = writeln!(out, "{n}::{a}::region::{}", l.region);
            let _ = writeln!(out, "{n}::{a}::zone::{}", l.zone);
            let _ = writeln!(out, "{n}::{a}::sub_zone::{}", l.sub_zone);
            let _ = writeln!(out, "{n}::{a}::canary::false");
            let _ = writeln!(out, "{n}::{a}::priority::{}", h.priority());
            let _ = writeln!(out, "{n}::{a}::success_rate::-1");
            let _ = writeln!(out, "{n}::{a}::local_origin_success_rate::-1");
        }
    }
    out
}

/// The JSON form (`envoy.admin.v3.Clusters`).
pub(super) fn json(server: &Server) -> serde_json::Value {
    let dumps = server.dumps();
    let mut names: Vec<_> = server.shared().clusters.all().values().cloned().collect();
    names.sort_by(|a, b| a.name().cmp(b.name()));
    let statuses: Vec<serde_json::Value> = names
        .iter()
        .map(|c| {
            let dynamic = dumps.clusters.iter().find(|d| d.name == c.name()).is_some_and(|d| d.dynamic);
            let hosts: Vec<serde_json::Value> = c
                .host_set()
                .hosts()
                .iter()
                .map(|h| {
                    let a = h.address();
                    let (total, error) = h.request_counts();
                    let mut stats = vec![];
                    let mut stat = |name: &str, v: u64, gauge: bool| {
                        let mut s = serde_json::json!({ "name": name });
                        if v != 0 {
                            s["value"] = serde_json::Value::String(v.to_string());
                        }
                        if gauge {
                            s["type"] = "GAUGE".into();
                        }
                        stats.push(s);
                    };
                    stat("rq_error", error, false);
                    stat("rq_success", total.saturating_sub(error).saturating_sub(h.active_requests()), false);
                    stat("rq_total", total, false);
                    stat("cx_active", h.pools().connections() as u64, true);
                    stat("rq_active", h.active_requests(), true);
                    let mut health = serde_json::json!({
                        "eds_health_status": if h.is_eds_unhealthy() { "UNHEALTHY" } else if h.is_degraded() { "DEGRADED" } else { "HEALTHY" },
                    });
                    if h.is_ejected() {
                        health["failed_outlier_check"] = true.into();
                    }
                    let l = h.locality();
                    let mut loc = serde_json::Map::new();
                    for (k, v) in [("region", &l.region), ("zone", &l.zone), ("sub_zone", &l.sub_zone)] {
                        if !v.is_empty() {
                            loc.insert(k.into(), v.clone().into());
                        }
                    }
                    let mut hs = serde_json::json!({
                        "address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}},
                        "stats": stats,
                        "health_status": health,
                        "weight": h.weight(),
                        "locality": loc,
                    });
                    if !h.hostname().is_empty() {
                        hs["hostname"] = h.hostname().into();
                    }
                    if h.priority() != 0 {
                        hs["priority"] = h.priority().into();
                    }
                    hs
                })
                .collect();
            let cb = c.config().circuit_breakers;
            let mut s = serde_json::json!({
                "name": c.name(),
                "added_via_api": dynamic,
                "host_statuses": hosts,
                "circuit_breakers": {"thresholds": [
                    {"max_connections": cb.max_connections, "max_pending_requests": cb.max_pending_requests, "max_requests": cb.max_requests, "max_retries": cb.max_retries},
                ]},
                "observability_name": c.config().alt_stat_name.clone().unwrap_or_else(|| c.name().to_string()),
            });
            if let Some(e) = c.config().discovery.eds_service_name() {
                s["eds_service_name"] = e.into();
            }
            s
        })
        .collect();
    serde_json::json!({ "cluster_statuses": statuses })
}
