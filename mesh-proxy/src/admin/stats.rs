//! `/stats` in Envoy's text, JSON and Prometheus forms.

use std::collections::BTreeMap;

type Values = [(String, i64, bool)];

fn selected<'a>(
    stats: &'a Values,
    filter: Option<&'a regex::Regex>,
    used_only: bool,
) -> impl Iterator<Item = &'a (String, i64, bool)> {
    stats.iter().filter(move |(name, v, counter)| {
        filter.is_none_or(|f| f.is_match(name)) && (!used_only || !*counter || *v != 0)
    })
}

/// `name: value` lines, sorted by name.
pub(super) fn text(stats: &Values, filter: Option<&regex::Regex>, used_only: bool) -> String {
    let mut s = String::new();
    for (name, v, _) in selected(stats, filter, used_only) {
        s.push_str(name);
        s.push_str(": ");
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

/// `{"stats": [{"name": .., "value": ..}, ..]}`.
pub(super) fn json(
    stats: &Values,
    filter: Option<&regex::Regex>,
    used_only: bool,
) -> serde_json::Value {
    let list: Vec<serde_json::Value> = selected(stats, filter, used_only)
        .map(|(name, v, _)| serde_json::json!({"name": name, "value": v}))
        .collect();
    serde_json::json!({ "stats": list })
}

/// Prometheus text with Envoy's tag extraction for the common prefixes: the cluster name,
/// the HCM and TCP proxy stat prefixes and the listener address become labels.
pub(super) fn prometheus(
    stats: &Values,
    filter: Option<&regex::Regex>,
    clusters: &[String],
) -> String {
    let mut families: BTreeMap<String, (bool, Vec<(String, i64)>)> = BTreeMap::new();
    let mut clusters: Vec<&String> = clusters.iter().collect();
    clusters.sort_by_key(|c| std::cmp::Reverse(c.len()));
    for (name, v, counter) in selected(stats, filter, false) {
        let (family, labels) = extract(name, &clusters);
        let metric = format!("envoy_{}", sanitize(&family));
        families
            .entry(metric)
            .or_insert_with(|| (*counter, Vec::new()))
            .1
            .push((labels, *v));
    }
    let mut s = String::new();
    for (metric, (counter, samples)) in families {
        s.push_str(&format!(
            "# TYPE {metric} {}\n",
            if counter { "counter" } else { "gauge" }
        ));
        for (labels, v) in samples {
            s.push_str(&format!("{metric}{labels} {v}\n"));
        }
    }
    s
}

fn extract(name: &str, clusters: &[&String]) -> (String, String) {
    if let Some(rest) = name.strip_prefix("cluster.") {
        for c in clusters {
            if let Some(stat) = rest
                .strip_prefix(c.as_str())
                .and_then(|r| r.strip_prefix('.'))
            {
                return (
                    format!("cluster.{stat}"),
                    format!("{{envoy_cluster_name=\"{}\"}}", escape(c)),
                );
            }
        }
    }
    for (prefix, label) in [
        ("http.", "envoy_http_conn_manager_prefix"),
        ("tcp.", "envoy_tcp_prefix"),
    ] {
        if let Some(rest) = name.strip_prefix(prefix)
            && let Some((p, stat)) = rest.split_once('.')
        {
            return (
                format!("{prefix}{stat}"),
                format!("{{{label}=\"{}\"}}", escape(p)),
            );
        }
    }
    if let Some(rest) = name.strip_prefix("listener.") {
        // `ADDRESS_PORT.stat`: the address ends at the first dot after the port's `_`.
        if let Some(u) = rest.find('_')
            && let Some(dot) = rest[u..].find('.')
        {
            let (addr, stat) = (&rest[..u + dot], &rest[u + dot + 1..]);
            return (
                format!("listener.{stat}"),
                format!("{{envoy_listener_address=\"{}\"}}", escape(addr)),
            );
        }
    }
    (name.to_string(), String::new())
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

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_labels() {
        let stats = vec![
            (
                "cluster.outbound|80||a.b.svc.cluster.local.upstream_rq_total".to_string(),
                3,
                true,
            ),
            (
                "http.inbound_0.0.0.0_8080.downstream_rq_total".to_string(),
                2,
                true,
            ),
            (
                "listener.0.0.0.0_15001.downstream_cx_total".to_string(),
                1,
                true,
            ),
            ("server.state".to_string(), 0, false),
        ];
        let p = prometheus(
            &stats,
            None,
            &["outbound|80||a.b.svc.cluster.local".to_string()],
        );
        assert!(p.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"outbound|80||a.b.svc.cluster.local\"} 3"), "{p}");
        // Like Envoy's `^http\.((.*?)\.)`, the prefix ends at the first dot.
        assert!(p.contains("envoy_http_0_0_0_8080_downstream_rq_total{envoy_http_conn_manager_prefix=\"inbound_0\"} 2"), "{p}");
        assert!(
            p.contains(
                "envoy_listener_downstream_cx_total{envoy_listener_address=\"0.0.0.0_15001\"} 1"
            ),
            "{p}"
        );
        assert!(
            p.contains("# TYPE envoy_server_state gauge\nenvoy_server_state 0"),
            "{p}"
        );
        let t = text(&stats, Some(&regex::Regex::new("^server").unwrap()), false);
        assert_eq!(t, "server.state: 0\n");
    }
}
