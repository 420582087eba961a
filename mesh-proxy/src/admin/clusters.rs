//! `/clusters` in Envoy's text and JSON forms.
//!
//! Per host we print the stats a host of ours keeps (`cx_active`, `cx_connect_fail`,
//! `cx_total`, `rq_active`, `rq_error`, `rq_success`, `rq_total`); Envoy also has `rq_timeout`
//! per host, which our hosts do not count (route timeouts are counted per cluster).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use prost::Message;
use regex::Regex;

use crate::cluster::Host;
use crate::cluster::runtime::ClusterRuntime;
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

/// One priority's circuit-breaker limits, as `/clusters` prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    max_connections: u32,
    max_pending_requests: u32,
    max_requests: u32,
    max_retries: u32,
}

/// Envoy's defaults for a priority without thresholds.
const DEFAULT_LIMITS: Limits = Limits {
    max_connections: 1024,
    max_pending_requests: 1024,
    max_requests: 1024,
    max_retries: 3,
};

/// The HIGH-priority thresholds of a cluster as received (our config keeps DEFAULT only:
/// routes of this proxy never use HIGH).
fn high_limits(raw: Option<&Bytes>) -> Limits {
    let Some(c) = raw.and_then(|r| cl::Cluster::decode(r.clone()).ok()) else {
        return DEFAULT_LIMITS;
    };
    let Some(t) = c.circuit_breakers.as_ref().and_then(|cb| {
        cb.thresholds
            .iter()
            .find(|t| t.priority == RoutingPriority::High as i32)
    }) else {
        return DEFAULT_LIMITS;
    };
    let or = |v: Option<u32>, d: u32| v.unwrap_or(d);
    Limits {
        max_connections: or(t.max_connections.map(|v| v.value), 1024),
        max_pending_requests: or(t.max_pending_requests.map(|v| v.value), 1024),
        max_requests: or(t.max_requests.map(|v| v.value), 1024),
        max_retries: or(t.max_retries.map(|v| v.value), 3),
    }
}

/// A cluster with what `/clusters` says of it.
struct Shown {
    rt: Arc<ClusterRuntime>,
    dynamic: bool,
    default: Limits,
    high: Limits,
}

fn shown(server: &Server, filter: Option<&Regex>) -> Vec<Shown> {
    let dumps = server.dumps();
    let raw: HashMap<&str, (&Bytes, bool)> = dumps
        .clusters
        .iter()
        .map(|d| (d.name.as_str(), (&d.raw, d.dynamic)))
        .collect();
    let mut all: Vec<Arc<ClusterRuntime>> = server
        .shared()
        .clusters
        .all()
        .values()
        .filter(|c| filter.is_none_or(|f| f.is_match(c.name())))
        .cloned()
        .collect();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all.into_iter()
        .map(|rt| {
            let (raw, dynamic) = raw
                .get(rt.name())
                .map_or((None, false), |(r, d)| (Some(*r), *d));
            let cb = &rt.config().circuit_breakers;
            Shown {
                default: Limits {
                    max_connections: cb.max_connections,
                    max_pending_requests: cb.max_pending_requests,
                    max_requests: cb.max_requests,
                    max_retries: cb.max_retries,
                },
                high: high_limits(raw),
                dynamic,
                rt,
            }
        })
        .collect()
}

/// `(rq_error, rq_success, rq_total)` of a host.
fn counts(h: &Host) -> (u64, u64, u64) {
    let (total, error) = h.request_counts();
    let success = total
        .saturating_sub(error)
        .saturating_sub(h.active_requests());
    (error, success, total)
}

/// The text form: `CLUSTER::HOST::STAT::VALUE` lines.
pub(super) fn text(server: &Server, filter: Option<&Regex>) -> String {
    let mut out = String::new();
    for s in shown(server, filter) {
        let c = &s.rt;
        let n = c.name();
        let cfg = c.config();
        let _ = writeln!(
            out,
            "{n}::observability_name::{}",
            cfg.alt_stat_name.as_deref().unwrap_or(n)
        );
        for (prio, l) in [("default_priority", s.default), ("high_priority", s.high)] {
            let _ = writeln!(out, "{n}::{prio}::max_connections::{}", l.max_connections);
            let _ = writeln!(
                out,
                "{n}::{prio}::max_pending_requests::{}",
                l.max_pending_requests
            );
            let _ = writeln!(out, "{n}::{prio}::max_requests::{}", l.max_requests);
            let _ = writeln!(out, "{n}::{prio}::max_retries::{}", l.max_retries);
        }
        let _ = writeln!(out, "{n}::added_via_api::{}", s.dynamic);
        if let Some(e) = cfg.discovery.eds_service_name() {
            let _ = writeln!(out, "{n}::eds_service_name::{e}");
        }
        for h in c.host_set().hosts() {
            let a = h.address();
            let (error, success, total) = counts(h);
            // Envoy sorts a host's stats by name.
            let (cx_total, cx_connect_fail) = h.pools().counters().snapshot();
            let _ = writeln!(out, "{n}::{a}::cx_active::{}", h.pools().connections());
            let _ = writeln!(out, "{n}::{a}::cx_connect_fail::{cx_connect_fail}");
            let _ = writeln!(out, "{n}::{a}::cx_total::{cx_total}");
            let _ = writeln!(out, "{n}::{a}::rq_active::{}", h.active_requests());
            let _ = writeln!(out, "{n}::{a}::rq_error::{error}");
            let _ = writeln!(out, "{n}::{a}::rq_success::{success}");
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

fn limits_json(l: Limits, high: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "max_connections": l.max_connections,
        "max_pending_requests": l.max_pending_requests,
        "max_requests": l.max_requests,
        "max_retries": l.max_retries,
    });
    if high {
        v["priority"] = "HIGH".into();
    }
    v
}

fn host_json(h: &Host) -> serde_json::Value {
    let a = h.address();
    let (error, success, total) = counts(h);
    // Counters, then gauges, each sorted by name; a zero value is left out (proto3 JSON).
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
    let (cx_total, cx_connect_fail) = h.pools().counters().snapshot();
    stat("cx_connect_fail", cx_connect_fail, false);
    stat("cx_total", cx_total, false);
    stat("rq_error", error, false);
    stat("rq_success", success, false);
    stat("rq_total", total, false);
    stat("cx_active", h.pools().connections() as u64, true);
    stat("rq_active", h.active_requests(), true);
    let eds = if h.is_eds_unhealthy() {
        "UNHEALTHY"
    } else if h.is_degraded() {
        "DEGRADED"
    } else {
        "HEALTHY"
    };
    let mut health = serde_json::json!({ "eds_health_status": eds });
    if h.is_ejected() {
        health["failed_outlier_check"] = true.into();
    }
    let l = h.locality();
    let mut loc = serde_json::Map::new();
    for (k, v) in [
        ("region", &l.region),
        ("zone", &l.zone),
        ("sub_zone", &l.sub_zone),
    ] {
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
}

/// The JSON form (`envoy.admin.v3.Clusters`, proto3 JSON: default values left out).
pub(super) fn json(server: &Server, filter: Option<&Regex>) -> serde_json::Value {
    let statuses: Vec<serde_json::Value> = shown(server, filter)
        .iter()
        .map(|s| {
            let c = &s.rt;
            let mut v = serde_json::Map::new();
            v.insert("name".into(), c.name().into());
            if s.dynamic {
                v.insert("added_via_api".into(), true.into());
            }
            let hosts: Vec<serde_json::Value> =
                c.host_set().hosts().iter().map(|h| host_json(h)).collect();
            if !hosts.is_empty() {
                v.insert("host_statuses".into(), hosts.into());
            }
            v.insert(
                "circuit_breakers".into(),
                serde_json::json!({"thresholds": [limits_json(s.default, false), limits_json(s.high, true)]}),
            );
            v.insert(
                "observability_name".into(),
                c.config()
                    .alt_stat_name
                    .clone()
                    .unwrap_or_else(|| c.name().to_string())
                    .into(),
            );
            if let Some(e) = c.config().discovery.eds_service_name() {
                v.insert("eds_service_name".into(), e.into());
            }
            serde_json::Value::Object(v)
        })
        .collect();
    serde_json::json!({ "cluster_statuses": statuses })
}
