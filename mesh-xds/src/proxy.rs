//! [`Proxy`]: who is asking for configuration, read from the Envoy node.
//!
//! Istio encodes the proxy's identity in `node.id` (`sidecar~10.1.2.3~pod.ns~ns.svc.cluster.local`)
//! and in `node.metadata` (`NAMESPACE`, `LABELS`, `INSTANCE_IPS`, ...). A node without any of
//! this still gets a sensible default view: a sidecar in the `default` namespace.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};

/// What kind of proxy this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyType {
    /// A workload's sidecar (or a proxyless gRPC client).
    Sidecar,
    /// A gateway (`router~...`).
    Router,
}

/// How outbound traffic reaches the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InterceptionMode {
    /// iptables REDIRECT (the default): virtual listeners on 15001/15006.
    Redirect,
    /// iptables TPROXY.
    Tproxy,
    /// No capture: only listeners with explicit binds (Sidecar `captureMode: NONE`).
    None,
}

/// The locality of a proxy or endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub sub_zone: String,
}

impl Locality {
    /// Parses `region/zone/subzone` (any suffix may be missing).
    pub fn parse(s: &str) -> Locality {
        let mut parts = s.splitn(3, '/');
        Locality {
            region: parts.next().unwrap_or_default().to_string(),
            zone: parts.next().unwrap_or_default().to_string(),
            sub_zone: parts.next().unwrap_or_default().to_string(),
        }
    }

    /// `region/zone/subzone` without trailing empty parts.
    pub fn label(&self) -> String {
        let mut s = self.region.clone();
        if !self.zone.is_empty() || !self.sub_zone.is_empty() {
            s.push('/');
            s.push_str(&self.zone);
        }
        if !self.sub_zone.is_empty() {
            s.push('/');
            s.push_str(&self.sub_zone);
        }
        s
    }
}

/// The connecting proxy, as far as translation cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// `node.id` as sent.
    pub id: String,
    /// Sidecar or router.
    pub proxy_type: ProxyType,
    /// The workload's IPs (`INSTANCE_IPS`, else the IP in the id).
    pub ip_addresses: Vec<String>,
    /// Namespace (`NAMESPACE`, else from the id, else `default`).
    pub namespace: String,
    /// Workload labels (`LABELS`).
    pub labels: BTreeMap<String, String>,
    /// DNS domain of the id (`ns.svc.cluster.local`).
    pub dns_domain: String,
    /// `CLUSTER_ID`.
    pub cluster_id: String,
    /// `NETWORK`.
    pub network: String,
    /// `ISTIO_VERSION`.
    pub istio_version: String,
    /// `INTERCEPTION_MODE`.
    pub interception_mode: InterceptionMode,
    /// `node.locality`.
    pub locality: Locality,
    /// Whether this is a proxyless gRPC client (`GENERATOR: grpc` or a `grpc` user agent).
    pub proxyless_grpc: bool,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            id: String::new(),
            proxy_type: ProxyType::Sidecar,
            ip_addresses: Vec::new(),
            namespace: mesh_model::meta::DEFAULT_NAMESPACE.into(),
            labels: BTreeMap::new(),
            dns_domain: format!("default.svc.{}", mesh_model::host::DEFAULT_DOMAIN_SUFFIX),
            cluster_id: "Kubernetes".into(),
            network: String::new(),
            istio_version: String::new(),
            interception_mode: InterceptionMode::Redirect,
            locality: Locality::default(),
            proxyless_grpc: false,
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match &v.kind {
        Some(ValueKind::StringValue(s)) => Some(s.clone()),
        Some(ValueKind::NumberValue(n)) => Some(n.to_string()),
        Some(ValueKind::BoolValue(b)) => Some(b.to_string()),
        _ => None,
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    match &v.kind {
        Some(ValueKind::StructValue(s)) => s
            .fields
            .iter()
            .filter_map(|(k, v)| text(v).map(|t| (k.clone(), t)))
            .collect(),
        // Some agents send LABELS as a JSON string.
        Some(ValueKind::StringValue(s)) => serde_json::from_str(s).unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

impl Proxy {
    /// Reads a proxy from its Envoy node. Never fails: missing parts take defaults.
    ///
    /// ```
    /// use envoy_types::pb::envoy::config::core::v3::Node;
    /// let p = mesh_xds::Proxy::from_node(&Node {
    ///     id: "sidecar~10.1.2.3~reviews-v1-abc.shop~shop.svc.cluster.local".into(),
    ///     ..Default::default()
    /// });
    /// assert_eq!(p.namespace, "shop");
    /// assert_eq!(p.ip_addresses, ["10.1.2.3"]);
    /// ```
    pub fn from_node(node: &Node) -> Proxy {
        let mut p = Proxy {
            id: node.id.clone(),
            ..Default::default()
        };
        let parts: Vec<&str> = node.id.split('~').collect();
        if parts.len() == 4 {
            p.proxy_type = if parts[0] == "router" {
                ProxyType::Router
            } else {
                ProxyType::Sidecar
            };
            if !parts[1].is_empty() {
                p.ip_addresses = vec![parts[1].to_string()];
            }
            if let Some((_, ns)) = parts[2].split_once('.')
                && !ns.is_empty()
            {
                p.namespace = ns.to_string();
            }
            p.dns_domain = parts[3].to_string();
        }
        let empty = Struct::default();
        let meta = node.metadata.as_ref().unwrap_or(&empty);
        let get = |k: &str| meta.fields.get(k);
        if let Some(ns) = get("NAMESPACE").and_then(text).filter(|s| !s.is_empty()) {
            p.namespace = ns;
            if parts.len() != 4 {
                p.dns_domain = format!(
                    "{}.svc.{}",
                    p.namespace,
                    mesh_model::host::DEFAULT_DOMAIN_SUFFIX
                );
            }
        }
        if let Some(l) = get("LABELS") {
            p.labels = string_map(l);
        }
        if let Some(ips) = get("INSTANCE_IPS").and_then(text) {
            let ips: Vec<String> = ips
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if !ips.is_empty() {
                p.ip_addresses = ips;
            }
        }
        if let Some(c) = get("CLUSTER_ID").and_then(text) {
            p.cluster_id = c;
        }
        if let Some(n) = get("NETWORK").and_then(text) {
            p.network = n;
        }
        if let Some(v) = get("ISTIO_VERSION").and_then(text) {
            p.istio_version = v;
        }
        if let Some(m) = get("INTERCEPTION_MODE").and_then(text) {
            p.interception_mode = match m.as_str() {
                "NONE" => InterceptionMode::None,
                "TPROXY" => InterceptionMode::Tproxy,
                _ => InterceptionMode::Redirect,
            };
        }
        if get("GENERATOR").and_then(text).as_deref() == Some("grpc") {
            p.proxyless_grpc = true;
        }
        if node.user_agent_name.to_ascii_lowercase().contains("grpc") {
            p.proxyless_grpc = true;
        }
        if let Some(l) = &node.locality {
            p.locality = Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            };
        }
        p
    }
}
