//! `/config_dump`: Envoy's admin `ConfigDump` in proto3 JSON.
//!
//! - Clusters, listeners and route configurations are printed as they were received (Envoy
//!   prints them as received too), with their version and `last_updated`.
//! - Endpoints (`include_eds`) are printed as Envoy prints them: built from the live hosts of
//!   every active cluster, static ones under `static_endpoint_configs`, with each host's health,
//!   weight, `health_check_config` and the cluster's overprovisioning factor.
//! - A rejected listener carries `error_state`; Envoy does not implement `error_state` for
//!   clusters and route configurations, so neither is printed (a cluster whose every version
//!   was rejected does not appear).
//! - `resource=` gives the elements of one repeated field (404 when no section has that field,
//!   400 when it is not repeated), `mask=` trims them (or each section) to a field mask,
//!   `name_regex=` keeps the resources whose name matches in full.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::google::protobuf::UInt32Value;
use prost::Message;
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::rfc3339;
use crate::cluster::Host;
use crate::config::endpoint::Locality;
use crate::server::{DumpEntry, ResourceState, Server};
use crate::xds::type_url;

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
#[error("config dump: {0}")]
pub(super) struct DumpError(String);

/// The answer to a `/config_dump` request.
#[derive(Debug)]
pub(super) enum Answer {
    /// 200 with this body.
    Json(Value),
    /// 404 with this text.
    NotFound(String),
    /// 400 with this text.
    BadRequest(String),
}

/// The query of a `/config_dump` request.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Query<'a> {
    pub(super) resource: Option<&'a str>,
    pub(super) mask: Option<&'a str>,
    pub(super) name_regex: Option<&'a str>,
    pub(super) include_eds: bool,
}

/// What the dump is made from besides the server's state.
#[derive(Clone, Copy, Debug)]
pub(super) struct Context<'a> {
    /// The bootstrap as `/config_dump` prints it.
    pub(super) bootstrap: &'a Value,
    /// When it was loaded.
    pub(super) loaded: SystemTime,
    /// The node's locality (its hosts come first in a cluster's endpoints, as in Envoy).
    pub(super) local: Option<&'a Locality>,
}

fn any(name: &str, t: &str, raw: &[u8]) -> Result<Value, DumpError> {
    crate::descriptors::resource_json(name, t, raw).map_err(DumpError)
}

fn pool() -> Result<DescriptorPool, DumpError> {
    crate::descriptors::pool().map_err(DumpError)
}

/// A listener's `error_state` (`UpdateFailureState`, as Envoy fills it for listeners).
fn error_state(e: &DumpEntry) -> Result<Option<Value>, DumpError> {
    let Some((details, at, _version, raw)) = &e.error else {
        return Ok(None);
    };
    let mut s = Map::new();
    if !raw.is_empty() {
        s.insert(
            "failed_configuration".into(),
            any(&e.name, type_url::LISTENER, raw)?,
        );
    }
    s.insert("last_update_attempt".into(), rfc3339(*at).into());
    s.insert("details".into(), details.clone().into());
    Ok(Some(Value::Object(s)))
}

fn resource(e: &DumpEntry, t: &str, field: &str, with_version: bool) -> Result<Value, DumpError> {
    let mut m = Map::new();
    if with_version && !e.version.is_empty() {
        m.insert("version_info".into(), e.version.clone().into());
    }
    m.insert(field.into(), any(&e.name, t, &e.raw)?);
    if let Some(at) = e.updated {
        m.insert("last_updated".into(), rfc3339(at).into());
    }
    Ok(Value::Object(m))
}

/// A section: its type and its fields in Envoy's order (empty ones left out).
struct Section {
    name: &'static str,
    fields: Vec<(&'static str, Value)>,
}

impl Section {
    fn new(name: &'static str) -> Section {
        Section {
            name,
            fields: Vec::new(),
        }
    }

    fn set(&mut self, field: &'static str, v: Value) {
        let empty = match &v {
            Value::Array(a) => a.is_empty(),
            Value::String(s) => s.is_empty(),
            Value::Null => true,
            _ => false,
        };
        if !empty {
            self.fields.push((field, v));
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("@type".into(), format!("{ADMIN}{}", self.name).into());
        for (k, v) in &self.fields {
            m.insert((*k).into(), v.clone());
        }
        Value::Object(m)
    }
}

/// The repeated fields of each section, with the type of their elements; and the singular
/// ones (which `resource=` refuses).
fn fields_of(
    section: &str,
) -> (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
) {
    match section {
        "BootstrapConfigDump" => (&[], &["bootstrap", "last_updated"]),
        "ClustersConfigDump" => (
            &[
                ("static_clusters", "ClustersConfigDump.StaticCluster"),
                (
                    "dynamic_active_clusters",
                    "ClustersConfigDump.DynamicCluster",
                ),
                (
                    "dynamic_warming_clusters",
                    "ClustersConfigDump.DynamicCluster",
                ),
            ],
            &["version_info"],
        ),
        "EndpointsConfigDump" => (
            &[
                (
                    "static_endpoint_configs",
                    "EndpointsConfigDump.StaticEndpointConfig",
                ),
                (
                    "dynamic_endpoint_configs",
                    "EndpointsConfigDump.DynamicEndpointConfig",
                ),
            ],
            &[],
        ),
        "ListenersConfigDump" => (
            &[
                ("static_listeners", "ListenersConfigDump.StaticListener"),
                ("dynamic_listeners", "ListenersConfigDump.DynamicListener"),
            ],
            &["version_info"],
        ),
        "ScopedRoutesConfigDump" => (
            &[
                (
                    "inline_scoped_route_configs",
                    "ScopedRoutesConfigDump.InlineScopedRouteConfigs",
                ),
                (
                    "dynamic_scoped_route_configs",
                    "ScopedRoutesConfigDump.DynamicScopedRouteConfigs",
                ),
            ],
            &[],
        ),
        "RoutesConfigDump" => (
            &[
                ("static_route_configs", "RoutesConfigDump.StaticRouteConfig"),
                (
                    "dynamic_route_configs",
                    "RoutesConfigDump.DynamicRouteConfig",
                ),
            ],
            &[],
        ),
        "SecretsConfigDump" => (
            &[
                ("static_secrets", "SecretsConfigDump.StaticSecret"),
                ("dynamic_active_secrets", "SecretsConfigDump.DynamicSecret"),
                ("dynamic_warming_secrets", "SecretsConfigDump.DynamicSecret"),
            ],
            &[],
        ),
        _ => (&[], &[]),
    }
}

type Names<'a> = Option<&'a regex::Regex>;

fn keep(names: Names<'_>, name: &str) -> bool {
    names.is_none_or(|r| r.is_match(name))
}

fn clusters(d: &[DumpEntry], version: &str, names: Names<'_>) -> Result<Section, DumpError> {
    let mut statics = Vec::new();
    let mut active = Vec::new();
    let mut warming = Vec::new();
    for e in d.iter().filter(|e| keep(names, &e.name)) {
        match (e.dynamic, e.state) {
            (_, ResourceState::Rejected) => {}
            (false, _) => statics.push(resource(e, type_url::CLUSTER, "cluster", false)?),
            (true, ResourceState::Warming) => {
                warming.push(resource(e, type_url::CLUSTER, "cluster", true)?);
            }
            (true, ResourceState::Active) => {
                active.push(resource(e, type_url::CLUSTER, "cluster", true)?);
            }
        }
    }
    let mut s = Section::new("ClustersConfigDump");
    s.set("version_info", version.into());
    s.set("static_clusters", statics.into());
    s.set("dynamic_active_clusters", active.into());
    s.set("dynamic_warming_clusters", warming.into());
    Ok(s)
}

fn listeners(d: &[DumpEntry], version: &str, names: Names<'_>) -> Result<Section, DumpError> {
    let mut statics = Vec::new();
    let mut dynamic = Vec::new();
    for e in d.iter().filter(|e| keep(names, &e.name)) {
        if !e.dynamic {
            statics.push(resource(e, type_url::LISTENER, "listener", false)?);
            continue;
        }
        let mut v = Map::new();
        v.insert("name".into(), e.name.clone().into());
        match e.state {
            ResourceState::Active => {
                v.insert(
                    "active_state".into(),
                    resource(e, type_url::LISTENER, "listener", true)?,
                );
            }
            ResourceState::Warming => {
                v.insert(
                    "warming_state".into(),
                    resource(e, type_url::LISTENER, "listener", true)?,
                );
            }
            ResourceState::Rejected => {}
        }
        if let Some(err) = error_state(e)? {
            v.insert("error_state".into(), err);
        }
        dynamic.push(Value::Object(v));
    }
    // Envoy also lists the failures of the last LDS update on their own, without a name.
    for e in d.iter().filter(|e| keep(names, &e.name)) {
        if let Some((_, _, v, _)) = &e.error
            && e.dynamic
            && v == version
            && let Some(err) = error_state(e)?
        {
            dynamic.push(json!({ "error_state": err }));
        }
    }
    let mut s = Section::new("ListenersConfigDump");
    s.set("version_info", version.into());
    s.set("static_listeners", statics.into());
    s.set("dynamic_listeners", dynamic.into());
    Ok(s)
}

fn routes(d: &[DumpEntry], names: Names<'_>) -> Result<Section, DumpError> {
    let mut dynamic = Vec::new();
    for e in d.iter().filter(|e| keep(names, &e.name)) {
        if e.state != ResourceState::Rejected {
            dynamic.push(resource(e, type_url::ROUTE, "route_config", true)?);
        }
    }
    let mut s = Section::new("RoutesConfigDump");
    s.set("dynamic_route_configs", dynamic.into());
    Ok(s)
}

/// Envoy's coarse health of a host.
fn health(h: &Host) -> core::HealthStatus {
    if !h.is_healthy() {
        core::HealthStatus::Unhealthy
    } else if h.is_degraded() {
        core::HealthStatus::Degraded
    } else {
        core::HealthStatus::Healthy
    }
}

/// What the received endpoint of an address says that our hosts do not keep.
#[derive(Default, Clone)]
struct Received {
    metadata: Option<core::Metadata>,
    health_check: ep::endpoint::HealthCheckConfig,
}

fn received(cla: Option<ep::ClusterLoadAssignment>) -> HashMap<std::net::SocketAddr, Received> {
    let mut out = HashMap::new();
    for l in cla.into_iter().flat_map(|c| c.endpoints) {
        for lb in l.lb_endpoints {
            let Some(ep::lb_endpoint::HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                continue;
            };
            let Some(core::address::Address::SocketAddress(sa)) =
                e.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let Some(core::socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier
            else {
                continue;
            };
            let Ok(ip) = sa.address.parse::<std::net::IpAddr>() else {
                continue;
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let hc = e.health_check_config.clone().unwrap_or_default();
            out.insert(
                std::net::SocketAddr::new(ip, port),
                Received {
                    metadata: lb.metadata.clone(),
                    health_check: ep::endpoint::HealthCheckConfig {
                        port_value: hc.port_value,
                        hostname: hc.hostname,
                        ..Default::default()
                    },
                },
            );
        }
    }
    out
}

/// A priority's hosts by locality (the node's own first: `false` sorts before `true`).
type Localities<'a> = BTreeMap<(bool, Locality), Vec<&'a std::sync::Arc<Host>>>;

/// The endpoints of one live cluster, as Envoy's `EndpointsConfigDump` shows them.
fn live_assignment(
    rt: &crate::cluster::runtime::ClusterRuntime,
    raw_cluster: Option<&Bytes>,
    raw_eds: Option<&Bytes>,
    local: Option<&Locality>,
) -> ep::ClusterLoadAssignment {
    let cfg = rt.config();
    let la = rt.assignment();
    let cla_raw = match raw_eds {
        Some(r) => ep::ClusterLoadAssignment::decode(r.clone()).ok(),
        None => raw_cluster
            .and_then(|r| cl::Cluster::decode(r.clone()).ok())
            .and_then(|c| c.load_assignment),
    };
    let extra = received(cla_raw);
    // Priorities in order; in each, localities in order with the node's own first.
    let mut levels: BTreeMap<u32, Localities<'_>> = BTreeMap::new();
    let set = rt.host_set();
    for h in set.hosts() {
        let l = h.locality().clone();
        let not_local = local != Some(&l);
        levels
            .entry(h.priority())
            .or_default()
            .entry((not_local, l))
            .or_default()
            .push(h);
    }
    // Pipe endpoints (a Unix socket, Istio's `sds-grpc`) are no hosts here; Envoy lists
    // them as healthy.
    let mut pipes: BTreeMap<(u32, bool, Locality), Vec<ep::LbEndpoint>> = BTreeMap::new();
    for loc in la.iter().flat_map(|a| a.localities.iter()) {
        for e in &loc.endpoints {
            if let crate::config::endpoint::EndpointAddress::Pipe(path) = &e.address {
                let not_local = local != Some(&loc.locality);
                pipes
                    .entry((loc.priority, not_local, loc.locality.clone()))
                    .or_default()
                    .push(ep::LbEndpoint {
                        host_identifier: Some(ep::lb_endpoint::HostIdentifier::Endpoint(
                            ep::Endpoint {
                                address: Some(core::Address {
                                    address: Some(core::address::Address::Pipe(core::Pipe {
                                        path: path.display().to_string(),
                                        mode: 0,
                                    })),
                                }),
                                health_check_config: Some(Default::default()),
                                hostname: e.hostname.clone(),
                                ..Default::default()
                            },
                        )),
                        health_status: core::HealthStatus::Healthy as i32,
                        load_balancing_weight: Some(UInt32Value { value: e.weight }),
                        ..Default::default()
                    });
                levels
                    .entry(loc.priority)
                    .or_default()
                    .entry((not_local, loc.locality.clone()))
                    .or_default();
            }
        }
    }
    let mut endpoints = Vec::new();
    for (priority, locs) in levels {
        for ((not_local, l), hosts) in locs {
            let weight = la
                .as_ref()
                .and_then(|a| {
                    a.localities
                        .iter()
                        .find(|x| x.locality == l && x.priority == priority)
                })
                .and_then(|x| x.weight)
                .unwrap_or(0);
            let pipe_endpoints = pipes.remove(&(priority, not_local, l.clone()));
            let lb_endpoints = hosts
                .iter()
                .map(|h| {
                    let a = h.address();
                    let r = extra.get(&a).cloned().unwrap_or_default();
                    ep::LbEndpoint {
                        host_identifier: Some(ep::lb_endpoint::HostIdentifier::Endpoint(
                            ep::Endpoint {
                                address: Some(core::Address {
                                    address: Some(core::address::Address::SocketAddress(
                                        core::SocketAddress {
                                            address: a.ip().to_string(),
                                            port_specifier: Some(
                                                core::socket_address::PortSpecifier::PortValue(
                                                    u32::from(a.port()),
                                                ),
                                            ),
                                            ..Default::default()
                                        },
                                    )),
                                }),
                                health_check_config: Some(r.health_check),
                                hostname: h.hostname().to_string(),
                                ..Default::default()
                            },
                        )),
                        health_status: health(h) as i32,
                        metadata: r.metadata,
                        load_balancing_weight: Some(UInt32Value { value: h.weight() }),
                    }
                })
                .chain(pipe_endpoints.into_iter().flatten())
                .collect();
            endpoints.push(ep::LocalityLbEndpoints {
                locality: Some(core::Locality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    sub_zone: l.sub_zone.clone(),
                }),
                lb_endpoints,
                load_balancing_weight: Some(UInt32Value { value: weight }),
                priority,
                ..Default::default()
            });
        }
    }
    let factor = la
        .as_ref()
        .map(|a| a.overprovisioning_factor)
        .filter(|f| *f != 0)
        .unwrap_or(140);
    ep::ClusterLoadAssignment {
        cluster_name: cfg
            .discovery
            .eds_service_name()
            .unwrap_or(&cfg.name)
            .to_string(),
        endpoints,
        policy: Some(ep::cluster_load_assignment::Policy {
            overprovisioning_factor: Some(UInt32Value { value: factor }),
            weighted_priority_health: la.as_ref().is_some_and(|a| a.weighted_priority_health),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn endpoints(
    server: &Server,
    d: &crate::server::Dumps,
    local: Option<&Locality>,
    names: Names<'_>,
) -> Result<Section, DumpError> {
    let by_name: HashMap<&str, &DumpEntry> =
        d.clusters.iter().map(|e| (e.name.as_str(), e)).collect();
    let eds: HashMap<&str, &DumpEntry> = d.endpoints.iter().map(|e| (e.name.as_str(), e)).collect();
    let all = server.shared().clusters.all();
    let mut live: Vec<_> = all.values().collect();
    live.sort_by(|a, b| a.name().cmp(b.name()));
    let mut statics = Vec::new();
    let mut dynamic = Vec::new();
    for rt in live {
        let entry = by_name.get(rt.name());
        let raw_eds = rt
            .config()
            .discovery
            .eds_service_name()
            .and_then(|s| eds.get(s))
            .map(|e| &e.raw);
        let cla = live_assignment(rt, entry.map(|e| &e.raw), raw_eds, local);
        if !keep(names, &cla.cluster_name) {
            continue;
        }
        let v =
            json!({ "endpoint_config": any(rt.name(), type_url::ENDPOINT, &cla.encode_to_vec())? });
        if entry.is_some_and(|e| e.dynamic) {
            dynamic.push(v);
        } else {
            statics.push(v);
        }
    }
    let mut s = Section::new("EndpointsConfigDump");
    s.set("static_endpoint_configs", statics.into());
    s.set("dynamic_endpoint_configs", dynamic.into());
    Ok(s)
}

fn sections(
    server: &Server,
    cx: Context<'_>,
    q: &Query<'_>,
    names: Names<'_>,
) -> Result<Vec<Section>, DumpError> {
    let d = server.dumps();
    let mut bs = Section::new("BootstrapConfigDump");
    bs.set("bootstrap", cx.bootstrap.clone());
    bs.set("last_updated", rfc3339(cx.loaded).into());
    let mut out = vec![bs, clusters(&d.clusters, &d.cds_version, names)?];
    if q.include_eds {
        out.push(endpoints(server, &d, cx.local, names)?);
    }
    out.push(listeners(&d.listeners, &d.lds_version, names)?);
    out.push(Section::new("ScopedRoutesConfigDump"));
    out.push(routes(&d.routes, names)?);
    out.push(secrets(server, names)?);
    Ok(out)
}

/// `SecretsConfigDump`: every subscribed secret, certificates first, then validation
/// contexts (Envoy's order); those that have not arrived are warming, with version
/// `uninitialized`, the epoch as their `last_updated` and only their name. Private keys read `[redacted]`, as Envoy prints them.
fn secrets(server: &Server, names: Names<'_>) -> Result<Section, DumpError> {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls_pb;
    let mut active = Vec::new();
    let mut warming = Vec::new();
    for kind in [
        crate::config::tls::SecretKind::Certificate,
        crate::config::tls::SecretKind::Validation,
    ] {
        for d in server.secret_dumps(kind) {
            if !keep(names, &d.name) {
                continue;
            }
            let (secret, version, updated) = match &d.loaded {
                Some(l) => {
                    let mut secret = tls_pb::Secret::decode(l.raw.clone()).unwrap_or_default();
                    redact(&mut secret);
                    (secret, l.version.clone(), l.updated)
                }
                // Envoy's version of a secret that has not arrived.
                None => (
                    tls_pb::Secret::default(),
                    "uninitialized".to_string(),
                    SystemTime::UNIX_EPOCH,
                ),
            };
            let secret = tls_pb::Secret {
                name: d.name.clone(),
                ..secret
            };
            let mut m = Map::new();
            m.insert("name".into(), d.name.clone().into());
            if !version.is_empty() {
                m.insert("version_info".into(), version.into());
            }
            m.insert("last_updated".into(), rfc3339(updated).into());
            m.insert(
                "secret".into(),
                any(&d.name, type_url::SECRET, &secret.encode_to_vec())?,
            );
            if d.loaded.is_some() {
                active.push(Value::Object(m));
            } else {
                warming.push(Value::Object(m));
            }
        }
    }
    let mut s = Section::new("SecretsConfigDump");
    s.set("dynamic_active_secrets", active.into());
    s.set("dynamic_warming_secrets", warming.into());
    Ok(s)
}

/// Envoy's redaction of `sensitive` fields (`MessageUtil::redact`): every string and bytes
/// value inside a certificate's `private_key` and `password` becomes `[redacted]`, keeping
/// its kind (`inline_bytes` stays bytes).
fn redact(s: &mut envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret) {
    use core::data_source::Specifier as S;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
    const R: &str = "[redacted]";
    let redacted = |d: &mut Option<core::DataSource>| {
        if let Some(ds) = d {
            ds.specifier = match ds.specifier.take() {
                Some(S::InlineBytes(_)) => Some(S::InlineBytes(R.as_bytes().to_vec())),
                Some(S::InlineString(_)) => Some(S::InlineString(R.into())),
                Some(S::Filename(_)) => Some(S::Filename(R.into())),
                Some(S::EnvironmentVariable(_)) => Some(S::EnvironmentVariable(R.into())),
                None => None,
            };
            if let Some(w) = &mut ds.watched_directory {
                w.path = R.into();
            }
        }
    };
    if let Some(Type::TlsCertificate(c)) = &mut s.r#type {
        redacted(&mut c.private_key);
        redacted(&mut c.password);
    }
}

/// The dump for a request.
pub(super) fn config_dump(
    server: &Server,
    cx: Context<'_>,
    q: &Query<'_>,
) -> Result<Answer, DumpError> {
    let names = match q
        .name_regex
        .map(|r| regex::Regex::new(&format!("^(?:{r})$")))
    {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            return Ok(Answer::BadRequest(format!(
                "INVALID_ARGUMENT: Error while parsing name_regex from {}: {e}",
                q.name_regex.unwrap_or_default()
            )));
        }
    };
    let secs = sections(server, cx, q, names.as_ref())?;
    let mask = q.mask.map(parse_mask);
    let Some(field) = q.resource else {
        let mut configs = Vec::new();
        for s in &secs {
            let v = s.to_json();
            match &mask {
                None => configs.push(v),
                Some(m) => {
                    // A mask applies to the sections it names fields of.
                    if valid_mask(s.name, &v, m)? {
                        configs.push(trim(&v, m));
                    }
                }
            }
        }
        if mask.is_some() && configs.is_empty() {
            return Ok(Answer::BadRequest(bad_mask(q.mask.unwrap_or_default())));
        }
        return Ok(Answer::Json(json!({ "configs": configs })));
    };
    let mut found = None;
    for s in &secs {
        let (repeated, singular) = fields_of(s.name);
        if singular.contains(&field) {
            return Ok(Answer::BadRequest(format!(
                "{field} is not a repeated field. Use ?mask={field} to get only this field"
            )));
        }
        if let Some((_, t)) = repeated.iter().find(|(f, _)| *f == field) {
            let items = s
                .fields
                .iter()
                .find(|(f, _)| *f == field)
                .and_then(|(_, v)| v.as_array().cloned())
                .unwrap_or_default();
            found = Some((*t, items));
            break;
        }
    }
    let Some((t, items)) = found else {
        return Ok(Answer::NotFound(format!(
            "{field} not found in config dump"
        )));
    };
    let mut configs = Vec::new();
    for item in items {
        let mut o = Map::new();
        o.insert("@type".into(), format!("{ADMIN}{t}").into());
        if let Value::Object(m) = item {
            o.extend(m);
        }
        let v = Value::Object(o);
        match &mask {
            None => configs.push(v),
            Some(m) => {
                if !valid_mask(t, &v, m)? {
                    return Ok(Answer::BadRequest(bad_mask(q.mask.unwrap_or_default())));
                }
                configs.push(trim(&v, m));
            }
        }
    }
    if configs.is_empty() {
        return Ok(Answer::Json(json!({})));
    }
    Ok(Answer::Json(json!({ "configs": configs })))
}

fn bad_mask(m: &str) -> String {
    let paths: String = m.split(',').map(|p| format!("paths: \"{p}\"\n")).collect();
    format!("FieldMask {paths} could not be successfully used.")
}

type Mask = Vec<Vec<String>>;

fn parse_mask(m: &str) -> Mask {
    m.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').map(str::to_string).collect())
        .collect()
}

/// A field of an admin message, for checking field masks (the descriptor pool holds the
/// xDS resources, not the admin messages, so these are spelled out).
#[derive(Clone, Copy)]
enum Field {
    /// A scalar, a timestamp or an enum: a path ends here.
    Leaf,
    /// A repeated field: a path ends here.
    Repeated,
    /// A packed resource: the path goes on in the packed message.
    Any,
    /// Another admin message.
    Admin(&'static str),
    /// A message of the descriptor pool.
    Proto(&'static str),
}

fn admin_fields(message: &str) -> &'static [(&'static str, Field)] {
    use Field::{Admin, Any, Leaf, Proto, Repeated};
    match message {
        "BootstrapConfigDump" => &[
            ("bootstrap", Proto("envoy.config.bootstrap.v3.Bootstrap")),
            ("last_updated", Leaf),
        ],
        "ClustersConfigDump" => &[
            ("version_info", Leaf),
            ("static_clusters", Repeated),
            ("dynamic_active_clusters", Repeated),
            ("dynamic_warming_clusters", Repeated),
        ],
        "ClustersConfigDump.StaticCluster" => &[("cluster", Any), ("last_updated", Leaf)],
        "ClustersConfigDump.DynamicCluster" => &[
            ("version_info", Leaf),
            ("cluster", Any),
            ("last_updated", Leaf),
            ("error_state", Admin("UpdateFailureState")),
            ("client_status", Leaf),
        ],
        "EndpointsConfigDump" => &[
            ("static_endpoint_configs", Repeated),
            ("dynamic_endpoint_configs", Repeated),
        ],
        "EndpointsConfigDump.StaticEndpointConfig" => {
            &[("endpoint_config", Any), ("last_updated", Leaf)]
        }
        "EndpointsConfigDump.DynamicEndpointConfig" => &[
            ("version_info", Leaf),
            ("endpoint_config", Any),
            ("last_updated", Leaf),
            ("error_state", Admin("UpdateFailureState")),
            ("client_status", Leaf),
        ],
        "ListenersConfigDump" => &[
            ("version_info", Leaf),
            ("static_listeners", Repeated),
            ("dynamic_listeners", Repeated),
        ],
        "ListenersConfigDump.StaticListener" => &[("listener", Any), ("last_updated", Leaf)],
        "ListenersConfigDump.DynamicListener" => &[
            ("name", Leaf),
            (
                "active_state",
                Admin("ListenersConfigDump.DynamicListenerState"),
            ),
            (
                "warming_state",
                Admin("ListenersConfigDump.DynamicListenerState"),
            ),
            (
                "draining_state",
                Admin("ListenersConfigDump.DynamicListenerState"),
            ),
            ("error_state", Admin("UpdateFailureState")),
            ("client_status", Leaf),
        ],
        "ListenersConfigDump.DynamicListenerState" => &[
            ("version_info", Leaf),
            ("listener", Any),
            ("last_updated", Leaf),
        ],
        "ScopedRoutesConfigDump" => &[
            ("inline_scoped_route_configs", Repeated),
            ("dynamic_scoped_route_configs", Repeated),
        ],
        "RoutesConfigDump" => &[
            ("static_route_configs", Repeated),
            ("dynamic_route_configs", Repeated),
        ],
        "RoutesConfigDump.StaticRouteConfig" => &[("route_config", Any), ("last_updated", Leaf)],
        "RoutesConfigDump.DynamicRouteConfig" => &[
            ("version_info", Leaf),
            ("route_config", Any),
            ("last_updated", Leaf),
            ("error_state", Admin("UpdateFailureState")),
            ("client_status", Leaf),
        ],
        "SecretsConfigDump" => &[
            ("static_secrets", Repeated),
            ("dynamic_active_secrets", Repeated),
            ("dynamic_warming_secrets", Repeated),
        ],
        "UpdateFailureState" => &[
            ("failed_configuration", Any),
            ("last_update_attempt", Leaf),
            ("details", Leaf),
            ("version_info", Leaf),
        ],
        _ => &[],
    }
}

/// Whether every path of `mask` names fields of the admin message `message` (through packed
/// resources, by their `@type`).
fn valid_mask(message: &str, v: &Value, mask: &Mask) -> Result<bool, DumpError> {
    let pool = pool()?;
    Ok(mask.iter().all(|p| valid_admin_path(&pool, message, v, p)))
}

fn valid_admin_path(pool: &DescriptorPool, message: &str, v: &Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    let Some((_, field)) = admin_fields(message).iter().find(|(n, _)| n == first) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let inner = v.get(first.as_str()).unwrap_or(&Value::Null);
    match *field {
        Field::Leaf | Field::Repeated => false,
        Field::Admin(m) => valid_admin_path(pool, m, inner, rest),
        Field::Any => valid_packed(pool, inner, rest),
        Field::Proto(m) => match pool.get_message_by_name(m) {
            Some(d) => valid_proto_path(pool, &d, inner, rest),
            None => true,
        },
    }
}

/// A path into a packed resource: checked against its type when the pool has it.
fn valid_packed(pool: &DescriptorPool, v: &Value, path: &[String]) -> bool {
    let Some(t) = v.get("@type").and_then(Value::as_str) else {
        return true;
    };
    match pool.get_message_by_name(t.rsplit('/').next().unwrap_or(t)) {
        Some(d) => valid_proto_path(pool, &d, v, path),
        None => true,
    }
}

fn valid_proto_path(
    pool: &DescriptorPool,
    desc: &MessageDescriptor,
    v: &Value,
    path: &[String],
) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    let Some(f) = desc.get_field_by_name(first) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    if f.is_list() || f.is_map() {
        return false;
    }
    let Kind::Message(m) = f.kind() else {
        return false;
    };
    let inner = v.get(first.as_str()).unwrap_or(&Value::Null);
    if m.full_name() == "google.protobuf.Any" {
        return valid_packed(pool, inner, rest);
    }
    valid_proto_path(pool, &m, inner, rest)
}

/// Keeps only the masked fields (and every `@type`).
fn trim(v: &Value, mask: &Mask) -> Value {
    let Value::Object(o) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, val) in o {
        if k == "@type" {
            out.insert(k.clone(), val.clone());
            continue;
        }
        let tails: Mask = mask
            .iter()
            .filter(|p| p.first() == Some(k))
            .map(|p| p[1..].to_vec())
            .collect();
        if tails.is_empty() {
            continue;
        }
        if tails.iter().any(Vec::is_empty) {
            out.insert(k.clone(), val.clone());
        } else {
            let t = trim(val, &tails);
            if t.as_object()
                .is_some_and(|m| m.keys().any(|k| k != "@type"))
            {
                out.insert(k.clone(), t);
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_trim_through_any() {
        let v = json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster",
            "version_info": "1",
            "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a", "type": "EDS"},
            "last_updated": "x",
        });
        let m = parse_mask("cluster.name,version_info");
        let d = "ClustersConfigDump.DynamicCluster";
        assert!(valid_mask(d, &v, &m).unwrap());
        assert_eq!(
            trim(&v, &m),
            json!({
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster",
                "version_info": "1",
                "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a"},
            })
        );
        assert!(!valid_mask(d, &v, &parse_mask("cluster.nope")).unwrap());
        assert!(!valid_mask(d, &v, &parse_mask("nope")).unwrap());
        assert!(!valid_mask(d, &v, &parse_mask("version_info.x")).unwrap());
        assert!(valid_mask(d, &v, &parse_mask("error_state.details")).unwrap());
    }
}
