//! `/config_dump`: Envoy's admin `ConfigDump` in proto3 JSON, from the resources as they
//! were received.

use serde_json::{Map, Value, json};

use super::rfc3339;
use crate::server::{DumpEntry, ResourceState, Server};
use crate::xds::type_url;

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
#[error("config dump: {0}")]
pub(super) struct DumpError(String);

fn any(name: &str, t: &str, raw: &[u8]) -> Result<Value, DumpError> {
    mesh_xds::dump::resource_json(name, t, raw).map_err(|e| DumpError(e.to_string()))
}

fn error_state(e: &DumpEntry, t: &str) -> Result<Option<Value>, DumpError> {
    let Some((details, at, version, raw)) = &e.error else {
        return Ok(None);
    };
    let mut s = json!({
        "last_update_attempt": rfc3339(*at),
        "details": details,
    });
    if !raw.is_empty() {
        s["failed_configuration"] = any(&e.name, t, raw)?;
    }
    if !version.is_empty() {
        s["version_info"] = version.clone().into();
    }
    Ok(Some(s))
}

fn resource(e: &DumpEntry, t: &str, field: &str) -> Result<Value, DumpError> {
    let mut m = Map::new();
    if !e.version.is_empty() {
        m.insert("version_info".into(), e.version.clone().into());
    }
    m.insert(field.into(), any(&e.name, t, &e.raw)?);
    if let Some(at) = e.updated {
        m.insert("last_updated".into(), rfc3339(at).into());
    }
    Ok(Value::Object(m))
}

fn clusters(d: &[DumpEntry], version: &str) -> Result<Value, DumpError> {
    let mut statics = Vec::new();
    let mut active = Vec::new();
    let mut warming = Vec::new();
    for e in d {
        if e.state == ResourceState::Rejected {
            let mut v = json!({});
            if let Some(err) = error_state(e, type_url::CLUSTER)? {
                v["error_state"] = err;
            }
            active.push(v);
            continue;
        }
        let mut v = resource(e, type_url::CLUSTER, "cluster")?;
        if let Some(err) = error_state(e, type_url::CLUSTER)? {
            v["error_state"] = err;
        }
        match (e.dynamic, e.state) {
            (false, _) => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("version_info");
                }
                statics.push(v);
            }
            (true, ResourceState::Warming) => warming.push(v),
            (true, _) => active.push(v),
        }
    }
    let mut out = json!({"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"});
    if !version.is_empty() {
        out["version_info"] = version.into();
    }
    if !statics.is_empty() {
        out["static_clusters"] = statics.into();
    }
    if !active.is_empty() {
        out["dynamic_active_clusters"] = active.into();
    }
    if !warming.is_empty() {
        out["dynamic_warming_clusters"] = warming.into();
    }
    Ok(out)
}

fn listeners(d: &[DumpEntry], version: &str) -> Result<Value, DumpError> {
    let mut statics = Vec::new();
    let mut dynamic = Vec::new();
    for e in d {
        if !e.dynamic {
            let mut v = resource(e, type_url::LISTENER, "listener")?;
            if let Some(o) = v.as_object_mut() {
                o.remove("version_info");
            }
            statics.push(v);
            continue;
        }
        let mut v = json!({ "name": e.name });
        match e.state {
            ResourceState::Active => {
                v["active_state"] = resource(e, type_url::LISTENER, "listener")?
            }
            ResourceState::Warming => {
                v["warming_state"] = resource(e, type_url::LISTENER, "listener")?
            }
            ResourceState::Rejected => {}
        }
        if let Some(err) = error_state(e, type_url::LISTENER)? {
            v["error_state"] = err;
        }
        dynamic.push(v);
    }
    let mut out = json!({"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"});
    if !version.is_empty() {
        out["version_info"] = version.into();
    }
    if !statics.is_empty() {
        out["static_listeners"] = statics.into();
    }
    if !dynamic.is_empty() {
        out["dynamic_listeners"] = dynamic.into();
    }
    Ok(out)
}

fn routes(d: &[DumpEntry]) -> Result<Value, DumpError> {
    let mut dynamic = Vec::new();
    for e in d {
        if e.state == ResourceState::Rejected {
            continue;
        }
        dynamic.push(resource(e, type_url::ROUTE, "route_config")?);
    }
    let mut out = json!({"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"});
    if !dynamic.is_empty() {
        out["dynamic_route_configs"] = dynamic.into();
    }
    Ok(out)
}

fn endpoints(d: &[DumpEntry]) -> Result<Value, DumpError> {
    let mut dynamic = Vec::new();
    for e in d {
        // Envoy's EDS entries carry no version_info.
        let mut v = json!({ "endpoint_config": any(&e.name, type_url::ENDPOINT, &e.raw)? });
        if let Some(at) = e.updated {
            v["last_updated"] = rfc3339(at).into();
        }
        dynamic.push(v);
    }
    let mut out = json!({"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"});
    if !dynamic.is_empty() {
        out["dynamic_endpoint_configs"] = dynamic.into();
    }
    Ok(out)
}

/// The dump; `resource` selects one field (`dynamic_active_clusters`, ...) as Envoy's
/// `?resource=` does (`None` when the proxy has no such field: Envoy answers 404).
pub(super) fn config_dump(
    server: &Server,
    bootstrap: &Value,
    resource: Option<&str>,
    include_eds: bool,
) -> Result<Option<Value>, DumpError> {
    let d = server.dumps();
    let mut bs = json!({"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": bootstrap});
    if let Some(o) = bs.as_object_mut() {
        o.insert(
            "last_updated".into(),
            rfc3339(std::time::SystemTime::now()).into(),
        );
    }
    let mut configs = vec![bs, clusters(&d.clusters, &d.cds_version)?];
    if include_eds || resource == Some("dynamic_endpoint_configs") {
        configs.push(endpoints(&d.endpoints)?);
    }
    configs.push(listeners(&d.listeners, &d.lds_version)?);
    configs.push(routes(&d.routes)?);
    configs.push(json!({"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"}));
    match resource {
        None => Ok(Some(json!({ "configs": configs }))),
        Some(field) => {
            // Each element of that field becomes an entry of `configs`, typed by its message.
            let (t, item) = match field {
                "static_clusters" => ("ClustersConfigDump.StaticCluster", field),
                "dynamic_active_clusters" | "dynamic_warming_clusters" => {
                    ("ClustersConfigDump.DynamicCluster", field)
                }
                "static_listeners" => ("ListenersConfigDump.StaticListener", field),
                "dynamic_listeners" => ("ListenersConfigDump.DynamicListener", field),
                "dynamic_route_configs" => ("RoutesConfigDump.DynamicRouteConfig", field),
                "dynamic_endpoint_configs" => ("EndpointsConfigDump.DynamicEndpointConfig", field),
                _ => return Ok(None),
            };
            let items: Vec<Value> = configs
                .iter()
                .filter_map(|c| c.get(item))
                .filter_map(|v| v.as_array())
                .flatten()
                .map(|v| {
                    let mut o = Map::new();
                    o.insert(
                        "@type".into(),
                        format!("type.googleapis.com/envoy.admin.v3.{t}").into(),
                    );
                    if let Some(m) = v.as_object() {
                        o.extend(m.clone());
                    }
                    Value::Object(o)
                })
                .collect();
            if items.is_empty() {
                return Ok(None);
            }
            Ok(Some(json!({ "configs": items })))
        }
    }
}
