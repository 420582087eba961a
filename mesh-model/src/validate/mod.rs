//! Validation as istiod's webhook and `istioctl validate` do it.
//!
//! [`validate`] checks one resource and returns every [`Finding`] (errors and warnings), each
//! with the resource, the field path (`spec.http[1].route[0].weight`) and the reason. Severity
//! follows Istio: what the webhook rejects is an error, what it accepts with a message is a
//! warning.

mod analyze;
mod common;
mod destination_rule;
mod gateway;
mod security;
mod service_entry;
mod sidecar;
mod virtual_service;
mod workload;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::meta::{Kind, ObjectMeta, ResourceKey};

pub use analyze::analyze;
pub use common::{is_dns1123_label, is_valid_host, validate_regex};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Accepted by Istio, but probably not what was meant.
    Warning,
    /// Rejected by Istio.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// The resource a finding is about. The kind is text because a finding may be about a kind
/// this crate does not know.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceRef {
    /// Kind as written.
    pub kind: String,
    /// Namespace (`default` when unset).
    pub namespace: String,
    /// Name (may be empty when the manifest has none).
    pub name: String,
}

impl ResourceRef {
    /// A reference.
    pub fn new(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ResourceRef {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl From<&ResourceKey> for ResourceRef {
    fn from(k: &ResourceKey) -> Self {
        ResourceRef::new(k.kind.name(), &k.namespace, &k.name)
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "<unnamed>"
        } else {
            &self.name
        };
        write!(f, "{} {}/{}", self.kind, self.namespace, name)
    }
}

/// Where a resource was read from: a file (or `-` for stdin) and the line its document
/// starts on (1-based).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SourceLocation {
    /// File path as given, `-` for standard input, or a caller-chosen label.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One validation or parse result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Where the document is, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLocation>,
    /// The resource, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// Field path, e.g. `spec.http[1].route[0].weight`; empty for the whole document.
    pub path: String,
    /// The reason.
    pub message: String,
}

impl Finding {
    /// An error.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Finding::new(Severity::Error, path, message)
    }

    /// A warning.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Finding::new(Severity::Warning, path, message)
    }

    fn new(severity: Severity, path: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity,
            location: None,
            resource: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Attaches the resource.
    #[must_use]
    pub fn with_resource(mut self, resource: ResourceRef) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Attaches the source location.
    #[must_use]
    pub fn with_location(mut self, location: SourceLocation) -> Self {
        self.location = Some(location);
        self
    }
}

/// `FILE:LINE: error|warning: KIND NAMESPACE/NAME: FIELD.PATH: message`; parts that are
/// unknown are left out.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{}: ", self.severity)?;
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects findings for one resource.
#[derive(Debug, Default)]
pub(crate) struct Report {
    findings: Vec<Finding>,
}

impl Report {
    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding::error(path, message));
    }

    pub(crate) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding::warning(path, message));
    }

    /// Records a check's outcome: `Err(msg)` becomes an error at `path`.
    pub(crate) fn check(&mut self, path: impl Into<String>, result: Result<(), String>) {
        if let Err(msg) = result {
            self.error(path, msg);
        }
    }
}

/// Context that some rules need beyond the resource itself.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ValidationContext {
    /// The mesh root namespace (policies there apply mesh-wide).
    pub root_namespace: String,
}

impl Default for ValidationContext {
    fn default() -> Self {
        ValidationContext {
            root_namespace: "istio-system".into(),
        }
    }
}

/// Validates one resource with the default context; see [`validate_with`].
///
/// ```
/// use mesh_model::{parse_str, validate};
/// let parsed = parse_str(r#"
/// apiVersion: networking.istio.io/v1
/// kind: VirtualService
/// metadata: {name: reviews}
/// spec:
///   hosts: [reviews]
///   http:
///   - route:
///     - destination: {host: reviews, subset: v1}
///       weight: -1
/// "#, "inline.yaml");
/// let findings = validate(&parsed.resources[0].config);
/// assert_eq!(findings[0].path, "spec.http[0].route[0].weight");
/// ```
pub fn validate(config: &Config) -> Vec<Finding> {
    validate_with(config, &ValidationContext::default())
}

/// Validates one resource; every finding carries the resource reference.
pub fn validate_with(config: &Config, ctx: &ValidationContext) -> Vec<Finding> {
    let mut r = Report::default();
    validate_metadata(config.kind(), config.meta(), &mut r);
    match config {
        Config::VirtualService(vs) => virtual_service::validate(vs, &mut r),
        Config::DestinationRule(dr) => destination_rule::validate(dr, &mut r),
        Config::Gateway(gw) => gateway::validate(gw, &mut r),
        Config::ServiceEntry(se) => service_entry::validate(se, &mut r),
        Config::Sidecar(sc) => sidecar::validate(sc, &mut r),
        Config::WorkloadEntry(we) => workload::validate_entry(&we.spec, "spec", false, &mut r),
        Config::WorkloadGroup(wg) => workload::validate_group(wg, &mut r),
        Config::PeerAuthentication(pa) => security::validate_peer_authentication(pa, ctx, &mut r),
        Config::AuthorizationPolicy(ap) => security::validate_authorization_policy(ap, &mut r),
        Config::RequestAuthentication(ra) => security::validate_request_authentication(ra, &mut r),
    }
    let resource = ResourceRef::from(&config.key());
    r.findings
        .into_iter()
        .map(|f| f.with_resource(resource.clone()))
        .collect()
}

fn validate_metadata(kind: Kind, meta: &ObjectMeta, r: &mut Report) {
    if meta.name.is_empty() {
        if meta.generate_name.is_none() {
            r.error("metadata.name", "name is required");
        }
    } else if kind == Kind::Gateway {
        // Gateway names become parts of route and listener names: a DNS label.
        if !is_dns1123_label(&meta.name) {
            r.error(
                "metadata.name",
                format!("invalid name {:?}: must be a DNS-1123 label", meta.name),
            );
        }
    } else if !common::is_dns1123_subdomain(&meta.name) {
        r.error(
            "metadata.name",
            format!("invalid name {:?}: must be a DNS-1123 subdomain", meta.name),
        );
    }
    if let Some(ns) = &meta.namespace
        && !is_dns1123_label(ns)
    {
        r.error(
            "metadata.namespace",
            format!("invalid namespace {ns:?}: must be a DNS-1123 label"),
        );
    }
    for key in meta.labels.keys() {
        if let Err(e) = common::label_key(key) {
            r.error(format!("metadata.labels[{key}]"), e);
        }
    }
    for (key, value) in &meta.labels {
        if let Err(e) = common::label_value(value) {
            r.error(format!("metadata.labels[{key}]"), e);
        }
    }
}

/// Validates MeshConfig: durations, ports, the trust domain, export defaults and the locality
/// LB setting. Findings carry paths relative to the mesh config (`connectTimeout`, ...).
///
/// ```
/// let (mut mesh, _) = mesh_model::parse_mesh_config("connectTimeout: 0s").unwrap();
/// let findings = mesh_model::validate::validate_mesh_config(&mesh);
/// assert_eq!(findings[0].path, "connectTimeout");
/// ```
pub fn validate_mesh_config(mesh: &crate::mesh::MeshConfig) -> Vec<Finding> {
    let mut r = Report::default();
    if !common::is_dns1123_subdomain(&mesh.trust_domain) {
        r.error(
            "trustDomain",
            format!("trust domain {:?} must be a DNS name", mesh.trust_domain),
        );
    }
    for (i, td) in mesh.trust_domain_aliases.iter().enumerate() {
        if !common::is_dns1123_subdomain(td) {
            r.error(
                format!("trustDomainAliases[{i}]"),
                format!("{td:?} must be a DNS name"),
            );
        }
    }
    if !is_dns1123_label(&mesh.root_namespace) {
        r.error(
            "rootNamespace",
            format!("{:?} must be a namespace name", mesh.root_namespace),
        );
    }
    r.check(
        "connectTimeout",
        common::check_duration(&mesh.connect_timeout),
    );
    r.check(
        "dnsRefreshRate",
        common::check_duration(&mesh.dns_refresh_rate),
    );
    r.check(
        "protocolDetectionTimeout",
        common::check_duration_or_zero(&mesh.protocol_detection_timeout),
    );
    r.check(
        "proxyListenPort",
        common::check_port(mesh.proxy_listen_port),
    );
    r.check(
        "proxyInboundListenPort",
        common::check_port(mesh.proxy_inbound_listen_port),
    );
    if let Some(p) = mesh.proxy_http_port.filter(|p| *p != 0) {
        r.check("proxyHttpPort", common::check_port(p));
    }
    let pc = &mesh.default_config;
    r.check(
        "defaultConfig.proxyAdminPort",
        common::check_port(pc.proxy_admin_port),
    );
    r.check(
        "defaultConfig.statusPort",
        common::check_port(pc.status_port),
    );
    r.check(
        "defaultConfig.drainDuration",
        common::check_duration(&pc.drain_duration),
    );
    r.check(
        "defaultConfig.terminationDrainDuration",
        common::check_duration_or_zero(&pc.termination_drain_duration),
    );
    if pc
        .discovery_address
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        r.error(
            "defaultConfig.discoveryAddress",
            format!("{:?} must be host:port", pc.discovery_address),
        );
    }
    for (field, list) in [
        ("defaultServiceExportTo", &mesh.default_service_export_to),
        (
            "defaultVirtualServiceExportTo",
            &mesh.default_virtual_service_export_to,
        ),
        (
            "defaultDestinationRuleExportTo",
            &mesh.default_destination_rule_export_to,
        ),
    ] {
        common::check_export_to(
            list,
            &mesh.root_namespace,
            field == "defaultServiceExportTo",
            field,
            &mut r,
        );
    }
    if let Some(l) = &mesh.locality_lb_setting {
        // Mesh-wide failover is applied per DestinationRule with outlier detection; do not warn.
        destination_rule::validate_locality_lb(l, "localityLbSetting", true, &mut r);
    }
    r.findings
}
