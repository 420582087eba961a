//! `/stats` in Envoy's text, JSON and Prometheus forms.
//!
//! What is listed follows Envoy's store rather than ours where the two differ in bookkeeping
//! only: counters Envoy creates on first use (`upstream_rq_2xx`, `upstream_rq_503`) are left
//! out while zero, names Envoy does not have (our stand-in for a histogram, `update_empty` of
//! CDS and LDS, `update_rejected` of a cluster without EDS) are left out, and gauges are
//! printed unsigned, as Envoy's are. The admin server adds the values it knows itself
//! (`server.live`, `server.uptime`, the `version_text` readouts of the xDS subscriptions).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

/// The value of a stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    /// A counter.
    Counter(u64),
    /// A gauge (Envoy's are unsigned).
    Gauge(u64),
    /// A text readout (`version_text`).
    Text(String),
}

impl Value {
    fn is_zero(&self) -> bool {
        matches!(self, Value::Counter(0))
    }
}

/// A stat by Envoy name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) name: String,
    pub(super) value: Value,
}

/// `type=` of `/stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    All,
    Counters,
    Gauges,
    TextReadouts,
    Histograms,
}

impl Kind {
    pub(super) fn parse(s: Option<&str>) -> Option<Kind> {
        Some(match s {
            None | Some("All") => Kind::All,
            Some("Counters") => Kind::Counters,
            Some("Gauges") => Kind::Gauges,
            Some("TextReadouts") => Kind::TextReadouts,
            Some("Histograms") => Kind::Histograms,
            Some(_) => return None,
        })
    }

    fn admits(self, v: &Value) -> bool {
        match self {
            Kind::All => true,
            Kind::Counters => matches!(v, Value::Counter(_)),
            Kind::Gauges => matches!(v, Value::Gauge(_)),
            Kind::TextReadouts => matches!(v, Value::Text(_)),
            Kind::Histograms => false,
        }
    }
}

/// What selects the stats shown.
#[derive(Clone, Copy, Debug)]
pub(super) struct Select<'a> {
    pub(super) filter: Option<&'a Regex>,
    pub(super) used_only: bool,
    pub(super) kind: Kind,
}

impl Select<'_> {
    fn admits(&self, s: &Stat) -> bool {
        self.filter.is_none_or(|f| f.is_match(&s.name))
            && (!self.used_only || !s.value.is_zero())
            && self.kind.admits(&s.value)
    }
}

/// Whether Envoy would list a stat of ours. `plain_clusters` are the stat names of clusters
/// without EDS (Envoy gives only EDS clusters the subscription's `update_rejected`).
fn listed(name: &str, value: &Value, plain_clusters: &BTreeSet<String>) -> bool {
    // Envoy's response-code counters exist once a response of that code was counted.
    static LAZY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^cluster\..*\.upstream_rq_(?:[1-5]xx|\d{3})$").unwrap_or_else(|_| never())
    });
    if value.is_zero() && LAZY.is_match(name) {
        return false;
    }
    if matches!(
        name,
        "cluster_manager.cds.update_empty" | "listener_manager.lds.update_empty"
    ) {
        return false;
    }
    if let Some(rest) = name.strip_prefix("cluster.") {
        // A histogram in Envoy (`upstream_cx_connect_ms`); we keep a running total only.
        if rest.ends_with(".upstream_cx_connect_ms_total") {
            return false;
        }
        if let Some(c) = rest.strip_suffix(".update_rejected")
            && plain_clusters.contains(c)
        {
            return false;
        }
    }
    true
}

/// A regex that matches nothing (for the impossible case of a constant pattern not compiling).
fn never() -> Regex {
    Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable!("constant pattern"))
}

/// Our store's stats as Envoy lists them, with `extra` (stats the admin server knows itself)
/// added where the store has no stat of that name; sorted by name.
pub(super) fn collect(
    store: &[(String, i64, bool)],
    extra: Vec<Stat>,
    plain_clusters: &BTreeSet<String>,
) -> Vec<Stat> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (name, v, counter) in store {
        let value = if *counter {
            Value::Counter(u64::try_from(*v).unwrap_or(0))
        } else {
            Value::Gauge(u64::from_ne_bytes(v.to_ne_bytes()))
        };
        if listed(name, &value, plain_clusters) {
            out.insert(name.clone(), value);
        }
    }
    for s in extra {
        out.entry(s.name).or_insert(s.value);
    }
    out.into_iter()
        .map(|(name, value)| Stat { name, value })
        .collect()
}

/// Envoy's text form: text readouts first (`name: "value"`), then counters and gauges
/// (`name: value`), each sorted by name.
pub(super) fn text(stats: &[Stat], sel: Select<'_>) -> String {
    let mut readouts = String::new();
    let mut rest = String::new();
    for s in stats.iter().filter(|s| sel.admits(s)) {
        match &s.value {
            Value::Text(t) => {
                readouts.push_str(&format!("{}: \"{}\"\n", s.name, escape_text(t)));
            }
            Value::Counter(v) | Value::Gauge(v) => rest.push_str(&format!("{}: {v}\n", s.name)),
        }
    }
    readouts + &rest
}

fn escape_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `{"stats": [{"name": .., "value": ..}, ..]}`: text readouts (string values) first, then
/// counters and gauges (numbers).
pub(super) fn json(stats: &[Stat], sel: Select<'_>) -> serde_json::Value {
    let chosen: Vec<&Stat> = stats.iter().filter(|s| sel.admits(s)).collect();
    let readouts = chosen.iter().filter(|s| matches!(s.value, Value::Text(_)));
    let numbers = chosen.iter().filter(|s| !matches!(s.value, Value::Text(_)));
    let list: Vec<serde_json::Value> = readouts
        .chain(numbers)
        .map(|s| {
            let value = match &s.value {
                Value::Text(t) => serde_json::Value::from(t.as_str()),
                Value::Counter(v) | Value::Gauge(v) => serde_json::Value::from(*v),
            };
            serde_json::json!({"name": s.name, "value": value})
        })
        .collect();
    serde_json::json!({ "stats": list })
}

/// One of Envoy's default tag extractors: the first capture group is cut from the name, the
/// second (else the first) is the tag's value.
struct Extractor {
    label: &'static str,
    re: Regex,
}

/// Envoy's default tag extractors for the stats this proxy has, in Envoy's order (the order
/// decides the order of the labels: Envoy prints the last extracted first).
static EXTRACTORS: LazyLock<Vec<Extractor>> = LazyLock::new(|| {
    [
        // `cluster.NAME.`: the name ends at the first dot (so `outbound|80||a.b.svc` gives
        // the tag `outbound|80||a` and the metric `cluster_b_svc_...`, as Envoy's does).
        ("envoy_cluster_name", r"^cluster\.((.*?)\.)"),
        // `listener.ADDRESS.`: an IPv4 or IPv6 address and port.
        (
            "envoy_listener_address",
            r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
        ),
        // `http.PREFIX.` and `listener.ADDRESS.http.PREFIX.`: the prefix ends at the first dot.
        (
            "envoy_http_conn_manager_prefix",
            r"^(?:|listener\.(?:.*?\.)??)http\.((.*?)\.)",
        ),
        (
            "envoy_rds_route_config",
            r"^http\.\w+?\.rds\.((.*?)\.)\w+?$",
        ),
        ("envoy_response_code", r"_rq(_(\d{3}))$"),
        ("envoy_response_code_class", r"_rq_(\d)xx$"),
        ("envoy_tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
        // `sds.NAME.`: the secret's name (SDS subscriptions' stats).
        ("envoy_xds_resource_name", r"^sds\.((.*?)\.)"),
    ]
    .into_iter()
    .filter_map(|(label, re)| {
        Some(Extractor {
            label,
            re: Regex::new(re).ok()?,
        })
    })
    .collect()
});

/// Envoy's tag extraction: the tag-extracted name and the tags, in the order Envoy prints them.
fn extract(name: &str) -> (String, Vec<(&'static str, String)>) {
    let mut cut = vec![false; name.len()];
    let mut tags = Vec::new();
    for x in EXTRACTORS.iter() {
        let Some(c) = x.re.captures(name) else {
            continue;
        };
        let Some(remove) = c.get(1) else {
            continue;
        };
        let value = c.get(2).unwrap_or(remove);
        tags.push((x.label, value.as_str().to_string()));
        for b in &mut cut[remove.range()] {
            *b = true;
        }
    }
    let kept: String = name
        .char_indices()
        .filter(|(i, _)| !cut[*i])
        .map(|(_, c)| c)
        .collect();
    tags.reverse();
    (kept, tags)
}

/// Prometheus text with Envoy's names: `envoy_` and the tag-extracted name (non-alphanumerics
/// as `_`), the tags as labels (`{}` when none). Counters, then gauges, then (with
/// `text_readouts`) text readouts as gauges of value 0 with a `text_value` label.
pub(super) fn prometheus(stats: &[Stat], sel: Select<'_>, text_readouts: bool) -> String {
    type Samples = Vec<(String, String)>;
    let mut families: [BTreeMap<String, Samples>; 3] = Default::default();
    for s in stats.iter().filter(|s| sel.admits(s)) {
        let (base, mut tags) = extract(&s.name);
        let metric = format!("envoy_{}", sanitize(&base));
        let (group, value) = match &s.value {
            Value::Counter(v) => (0, v.to_string()),
            Value::Gauge(v) => (1, v.to_string()),
            Value::Text(t) => {
                if !text_readouts {
                    continue;
                }
                tags.push(("text_value", t.clone()));
                (2, "0".to_string())
            }
        };
        let labels: Vec<String> = tags
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        let e = families[group].entry(metric).or_default();
        e.push((format!("{{{}}}", labels.join(",")), value));
    }
    let mut out = String::new();
    for (group, fams) in families.iter_mut().enumerate() {
        let kind = if group == 0 { "counter" } else { "gauge" };
        for (metric, samples) in fams.iter_mut() {
            samples.sort();
            out.push_str(&format!("# TYPE {metric} {kind}\n"));
            for (labels, v) in samples.iter() {
                out.push_str(&format!("{metric}{labels} {v}\n"));
            }
        }
    }
    out
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, v: u64) -> Stat {
        Stat {
            name: name.into(),
            value: Value::Counter(v),
        }
    }

    const ALL: Select<'static> = Select {
        filter: None,
        used_only: false,
        kind: Kind::All,
    };

    #[test]
    fn tags_are_extracted_like_envoys() {
        let t = |n: &str| {
            let (name, tags) = extract(n);
            let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{name} {}", tags.join(","))
        };
        assert_eq!(
            t("cluster.xds.upstream_rq_total"),
            "cluster.upstream_rq_total envoy_cluster_name=xds"
        );
        assert_eq!(
            t("cluster.outbound|80|v1|reviews.shop.svc.cluster.local.upstream_rq_200"),
            "cluster.shop.svc.cluster.local.upstream_rq envoy_response_code=200,envoy_cluster_name=outbound|80|v1|reviews"
        );
        assert_eq!(
            t("cluster.xds.upstream_rq_2xx"),
            "cluster.upstream_rq_xx envoy_response_code_class=2,envoy_cluster_name=xds"
        );
        assert_eq!(
            t("listener.127.0.0.1_21800.http.127.0.0.1_21800.downstream_rq_5xx"),
            "listener.http.0.0.1_21800.downstream_rq_xx envoy_response_code_class=5,envoy_http_conn_manager_prefix=127,envoy_listener_address=127.0.0.1_21800"
        );
        assert_eq!(
            t("listener.admin.downstream_cx_total"),
            "listener.admin.downstream_cx_total "
        );
        assert_eq!(
            t("listener.[__1]_80.downstream_cx_total"),
            "listener.downstream_cx_total envoy_listener_address=[__1]_80"
        );
        assert_eq!(
            t("http.127.0.0.1_21800.rds.21800.update_success"),
            "http.0.0.1_21800.rds.21800.update_success envoy_http_conn_manager_prefix=127"
        );
        assert_eq!(
            t("http.admin.rds.r1.update_success"),
            "http.rds.update_success envoy_rds_route_config=r1,envoy_http_conn_manager_prefix=admin"
        );
        assert_eq!(
            t("sds.ROOTCA.version_text"),
            "sds.version_text envoy_xds_resource_name=ROOTCA"
        );
        assert_eq!(
            t("tcp.outbound|9000||db.shop.svc.downstream_cx_total"),
            "tcp.downstream_cx_total envoy_tcp_prefix=outbound|9000||db.shop.svc"
        );
        assert_eq!(
            t("listener_manager.lds.update_success"),
            "listener_manager.lds.update_success "
        );
    }

    #[test]
    fn prometheus_text() {
        let stats = vec![
            c(
                "cluster.outbound|80||a.b.svc.cluster.local.upstream_rq_total",
                3,
            ),
            c("cluster.xds.upstream_rq_total", 1),
            c("http.inbound_0.0.0.0_8080.downstream_rq_2xx", 2),
            Stat {
                name: "server.state".into(),
                value: Value::Gauge(0),
            },
            Stat {
                name: "cluster_manager.cds.version_text".into(),
                value: Value::Text("7".into()),
            },
        ];
        let p = prometheus(&stats, ALL, false);
        assert_eq!(
            p,
            "# TYPE envoy_cluster_b_svc_cluster_local_upstream_rq_total counter\n\
             envoy_cluster_b_svc_cluster_local_upstream_rq_total{envoy_cluster_name=\"outbound|80||a\"} 3\n\
             # TYPE envoy_cluster_upstream_rq_total counter\n\
             envoy_cluster_upstream_rq_total{envoy_cluster_name=\"xds\"} 1\n\
             # TYPE envoy_http_0_0_0_8080_downstream_rq_xx counter\n\
             envoy_http_0_0_0_8080_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"inbound_0\"} 2\n\
             # TYPE envoy_server_state gauge\n\
             envoy_server_state{} 0\n"
        );
        let p = prometheus(&stats, ALL, true);
        assert!(
            p.ends_with(
                "# TYPE envoy_cluster_manager_cds_version_text gauge\n\
                 envoy_cluster_manager_cds_version_text{text_value=\"7\"} 0\n"
            ),
            "{p}"
        );
    }

    #[test]
    fn text_and_json_forms() {
        let stats = collect(
            &[
                ("cluster.a.upstream_rq_2xx".into(), 0, true),
                ("cluster.a.upstream_rq_5xx".into(), 2, true),
                ("cluster.a.update_rejected".into(), 0, true),
                ("cluster.b.update_rejected".into(), 0, true),
                ("cluster.a.upstream_cx_connect_ms_total".into(), 9, true),
                ("cluster_manager.cds.update_empty".into(), 0, true),
                (
                    "cluster.a.circuit_breakers.default.remaining_cx_pools".into(),
                    -1,
                    false,
                ),
            ],
            vec![Stat {
                name: "cluster_manager.cds.version_text".into(),
                value: Value::Text("1".into()),
            }],
            &["a".to_string()].into(),
        );
        assert_eq!(
            text(&stats, ALL),
            "cluster_manager.cds.version_text: \"1\"\n\
             cluster.a.circuit_breakers.default.remaining_cx_pools: 18446744073709551615\n\
             cluster.a.upstream_rq_5xx: 2\n\
             cluster.b.update_rejected: 0\n"
        );
        let used = Select {
            used_only: true,
            ..ALL
        };
        assert_eq!(
            json(&stats, used),
            serde_json::json!({"stats": [
                {"name": "cluster_manager.cds.version_text", "value": "1"},
                {"name": "cluster.a.circuit_breakers.default.remaining_cx_pools", "value": 18_446_744_073_709_551_615_u64},
                {"name": "cluster.a.upstream_rq_5xx", "value": 2},
            ]})
        );
        let counters = Select {
            kind: Kind::Counters,
            ..ALL
        };
        assert_eq!(
            text(&stats, counters),
            "cluster.a.upstream_rq_5xx: 2\ncluster.b.update_rejected: 0\n"
        );
    }

    #[test]
    fn version_gauges_hash_like_envoys() {
        // Envoy's `version` gauge for version_info "1" (read from Envoy 1.40's admin API).
        assert_eq!(
            xxhash_rust::xxh64::xxh64(b"1", 0),
            13_237_225_503_670_494_420
        );
    }
}
