use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::networking::destination_rule::{H2UpgradePolicy, LocalityLbSetting};
use crate::networking::sidecar::OutboundTrafficPolicyMode;
use crate::networking::virtual_service::HttpRetry;

/// The mesh-wide locality LB setting (same shape as the DestinationRule one).
pub type LocalityLbSettingDefaults = LocalityLbSetting;

/// Mesh-wide configuration (the parts a control plane and its proxies read).
///
/// `Default` gives Istio's defaults:
///
/// ```
/// let mesh = mesh_model::MeshConfig::default();
/// assert_eq!(mesh.trust_domain, "cluster.local");
/// assert_eq!(mesh.root_namespace, "istio-system");
/// assert_eq!(mesh.connect_timeout.as_std(), std::time::Duration::from_secs(10));
/// assert_eq!(mesh.default_config.proxy_admin_port, 15000);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// Trust domain of workload identities.
    pub trust_domain: String,
    /// Other trust domains treated as this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust_domain_aliases: Vec<String>,
    /// Namespace whose config applies mesh-wide.
    pub root_namespace: String,
    /// What sidecars do with unknown hosts.
    pub outbound_traffic_policy: OutboundTrafficPolicyConfig,
    /// Inbound traffic policy (kept verbatim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_traffic_policy: Option<serde_json::Value>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Retry policy for routes that set none (Istio's built-in policy when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_http_retry_policy: Option<HttpRetry>,
    /// Mesh-wide locality load balancing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSettingDefaults>,
    /// Default proxy configuration.
    pub default_config: ProxyConfig,
    /// Automatic client-side mTLS.
    pub enable_auto_mtls: bool,
    /// DNS refresh rate for DNS clusters.
    pub dns_refresh_rate: Duration,
    /// Protocol sniffing timeout (0 = disabled).
    pub protocol_detection_timeout: Duration,
    /// Default `exportTo` of services.
    pub default_service_export_to: Vec<String>,
    /// Default `exportTo` of VirtualServices.
    pub default_virtual_service_export_to: Vec<String>,
    /// Default `exportTo` of DestinationRules.
    pub default_destination_rule_export_to: Vec<String>,
    /// Outbound capture port.
    pub proxy_listen_port: u32,
    /// Inbound capture port.
    pub proxy_inbound_listen_port: u32,
    /// Port of the HTTP proxy listener (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_http_port: Option<u32>,
    /// TCP keepalive for upstream connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepaliveConfig>,
    /// Default HTTP/2 upgrade policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Access log path (`/dev/stdout`, empty = off).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub access_log_file: String,
    /// `TEXT` or `JSON`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<String>,
    /// Access log format.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub access_log_format: String,
    /// Whether tracing is on.
    pub enable_tracing: bool,
    /// Whether Prometheus metrics are merged.
    pub enable_prometheus_merge: bool,
    /// Ingress class handled by Istio.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ingress_class: String,
    /// Ingress gateway service name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ingress_service: String,
    /// Ingress controller mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_controller_mode: Option<String>,
    /// Ingress gateway selector.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ingress_selector: String,
    /// Default telemetry providers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_providers: Option<DefaultProviders>,
    /// Extension providers (ext_authz, tracing, logging), kept verbatim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<serde_json::Value>,
    /// Extra CA certificates, kept verbatim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<serde_json::Value>,
    /// Namespace discovery selectors, kept verbatim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discovery_selectors: Vec<serde_json::Value>,
    /// Per-service settings, kept verbatim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_settings: Vec<serde_json::Value>,
    /// Mesh-wide mTLS settings, kept verbatim.
    #[serde(rename = "meshMTLS", skip_serializing_if = "Option::is_none")]
    pub mesh_mtls: Option<serde_json::Value>,
    /// TLS defaults, kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_defaults: Option<serde_json::Value>,
    /// Path normalization, kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<serde_json::Value>,
    /// Verify certificates at the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_certificate_at_client: Option<bool>,
    /// Outlier event log path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub outlier_log_path: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        let everywhere = || vec!["*".to_string()];
        MeshConfig {
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            root_namespace: "istio-system".into(),
            outbound_traffic_policy: OutboundTrafficPolicyConfig::default(),
            inbound_traffic_policy: None,
            connect_timeout: Duration::from_secs(10),
            default_http_retry_policy: None,
            // Istio enables locality LB by default; failover needs outlier detection.
            locality_lb_setting: Some(LocalityLbSetting {
                enabled: Some(true),
                ..Default::default()
            }),
            default_config: ProxyConfig::default(),
            enable_auto_mtls: true,
            dns_refresh_rate: Duration::from_secs(60),
            protocol_detection_timeout: Duration::ZERO,
            default_service_export_to: everywhere(),
            default_virtual_service_export_to: everywhere(),
            default_destination_rule_export_to: everywhere(),
            proxy_listen_port: 15001,
            proxy_inbound_listen_port: 15006,
            proxy_http_port: None,
            tcp_keepalive: None,
            h2_upgrade_policy: None,
            access_log_file: String::new(),
            access_log_encoding: None,
            access_log_format: String::new(),
            enable_tracing: true,
            enable_prometheus_merge: true,
            ingress_class: "istio".into(),
            ingress_service: "istio-ingressgateway".into(),
            ingress_controller_mode: None,
            ingress_selector: "ingressgateway".into(),
            default_providers: None,
            extension_providers: Vec::new(),
            ca_certificates: Vec::new(),
            discovery_selectors: Vec::new(),
            service_settings: Vec::new(),
            mesh_mtls: None,
            tls_defaults: None,
            path_normalization: None,
            verify_certificate_at_client: None,
            outlier_log_path: String::new(),
        }
    }
}

/// `{mode, egressProxy}`; the mesh default is ALLOW_ANY.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicyConfig {
    /// Mode.
    pub mode: OutboundTrafficPolicyMode,
    /// Egress proxy for unknown traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<crate::networking::virtual_service::Destination>,
}

impl Default for OutboundTrafficPolicyConfig {
    fn default() -> Self {
        OutboundTrafficPolicyConfig {
            mode: OutboundTrafficPolicyMode::AllowAny,
            egress_proxy: None,
        }
    }
}

/// Mesh-wide TCP keepalive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpKeepaliveConfig {
    /// Probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before probing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Probe interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Default telemetry providers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DefaultProviders {
    /// Tracing providers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    /// Metrics providers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Access log providers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

/// Proxy configuration (`meshConfig.defaultConfig`), with Istio's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    /// Where Envoy's generated config is written.
    pub config_path: String,
    /// Path of the Envoy binary.
    pub binary_path: String,
    /// Service cluster (legacy node.cluster).
    pub service_cluster: String,
    /// Drain time on hot restart.
    pub drain_duration: Duration,
    /// Drain time on shutdown.
    pub termination_drain_duration: Duration,
    /// Address of the control plane.
    pub discovery_address: String,
    /// Envoy admin port.
    pub proxy_admin_port: u32,
    /// Agent status port.
    pub status_port: u32,
    /// Worker threads (0 = all cores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Control-plane auth policy (`MUTUAL_TLS` or `NONE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_auth_policy: Option<String>,
    /// Interception mode (`REDIRECT`, `TPROXY`, `NONE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<String>,
    /// Extra node metadata.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
    /// Hold the application until the proxy is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
    /// Mesh id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mesh_id: String,
    /// Tracing settings, kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<serde_json::Value>,
    /// Stats matcher, kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_stats_matcher: Option<serde_json::Value>,
    /// Gateway topology, kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_topology: Option<serde_json::Value>,
    /// Extra stat tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_stat_tags: Vec<String>,
    /// Envoy runtime values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime_values: BTreeMap<String, String>,
    /// Image settings, kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<serde_json::Value>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            config_path: "./etc/istio/proxy".into(),
            binary_path: "/usr/local/bin/envoy".into(),
            service_cluster: "istio-proxy".into(),
            drain_duration: Duration::from_secs(45),
            termination_drain_duration: Duration::from_secs(5),
            discovery_address: "istiod.istio-system.svc:15012".into(),
            proxy_admin_port: 15000,
            status_port: 15020,
            concurrency: None,
            control_plane_auth_policy: None,
            interception_mode: None,
            proxy_metadata: BTreeMap::new(),
            hold_application_until_proxy_starts: None,
            mesh_id: String::new(),
            tracing: None,
            proxy_stats_matcher: None,
            gateway_topology: None,
            extra_stat_tags: Vec::new(),
            runtime_values: BTreeMap::new(),
            image: None,
        }
    }
}
