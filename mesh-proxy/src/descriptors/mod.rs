//! Envoy's descriptor pool for the proto3 JSON mapping (bootstraps from YAML, `/config_dump`).
//!
//! The pool holds only the files of the messages this proxy reads (the xDS resources, the
//! bootstrap, and the extensions `crate::proto` accepts in `typed_config`) and what they
//! import: the whole of Envoy's API decodes to about 30 MiB, more than an idle proxy needs
//! for everything else. It is decoded when needed and dropped after a quiet minute.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost_reflect::DescriptorPool;

/// How long an unused pool is kept.
const KEEP: Duration = Duration::from_secs(60);

static CACHE: Mutex<Option<(DescriptorPool, std::time::Instant)>> = Mutex::new(None);
static REAPER: AtomicBool = AtomicBool::new(false);

/// The pool (decoded now if it is not held).
pub fn pool() -> Result<DescriptorPool, String> {
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let pool = match c.as_ref() {
        Some((p, _)) => p.clone(),
        None => DescriptorPool::decode(SUBSET).map_err(|e| e.to_string())?,
    };
    *c = Some((pool.clone(), std::time::Instant::now()));
    drop(c);
    schedule_release();
    Ok(pool)
}

/// The descriptor set the pool decodes: [`subset`] of Envoy's, generated into the crate by
/// `scripts/envoy-descriptors.sh` (a test checks it is current).
static SUBSET: &[u8] = include_bytes!("envoy-subset.bin");

/// The messages whose files the pool holds.
fn roots() -> Vec<String> {
    use envoy_types::pb::envoy::config as c;
    use envoy_types::pb::envoy::extensions as x;
    use prost::Name;
    vec![
        c::bootstrap::v3::Bootstrap::full_name(),
        c::cluster::v3::Cluster::full_name(),
        c::listener::v3::Listener::full_name(),
        c::route::v3::RouteConfiguration::full_name(),
        c::endpoint::v3::ClusterLoadAssignment::full_name(),
        x::filters::network::http_connection_manager::v3::HttpConnectionManager::full_name(),
        x::filters::network::tcp_proxy::v3::TcpProxy::full_name(),
        x::filters::network::sni_dynamic_forward_proxy::v3::FilterConfig::full_name(),
        x::filters::listener::http_inspector::v3::HttpInspector::full_name(),
        x::filters::listener::original_dst::v3::OriginalDst::full_name(),
        x::filters::listener::tls_inspector::v3::TlsInspector::full_name(),
        x::filters::http::router::v3::Router::full_name(),
        x::filters::http::fault::v3::HttpFault::full_name(),
        x::filters::http::cors::v3::Cors::full_name(),
        x::filters::http::cors::v3::CorsPolicy::full_name(),
        x::filters::http::dynamic_forward_proxy::v3::FilterConfig::full_name(),
        x::clusters::dynamic_forward_proxy::v3::ClusterConfig::full_name(),
        x::retry::host::previous_hosts::v3::PreviousHostsPredicate::full_name(),
        x::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig::full_name(),
        x::transport_sockets::raw_buffer::v3::RawBuffer::full_name(),
        x::transport_sockets::tls::v3::UpstreamTlsContext::full_name(),
        x::transport_sockets::tls::v3::DownstreamTlsContext::full_name(),
        x::transport_sockets::tls::v3::Secret::full_name(),
        x::upstreams::http::v3::HttpProtocolOptions::full_name(),
        x::network::dns_resolver::cares::v3::CaresDnsResolverConfig::full_name(),
    ]
}

/// The files of [`roots`] and their imports, from Envoy's whole descriptor set, encoded.
pub fn subset() -> Result<Vec<u8>, String> {
    use prost::Message;
    use prost_reflect::prost_types::FileDescriptorSet;
    let set =
        FileDescriptorSet::decode(mesh_xds::dump::descriptor_set()).map_err(|e| e.to_string())?;
    let mut by_message = std::collections::HashMap::new();
    for (i, f) in set.file.iter().enumerate() {
        for m in &f.message_type {
            by_message.insert(format!("{}.{}", f.package(), m.name()), i);
        }
    }
    let by_name: std::collections::HashMap<&str, usize> = set
        .file
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name(), i))
        .collect();
    let mut keep = vec![false; set.file.len()];
    let mut todo: Vec<usize> = roots()
        .iter()
        .filter_map(|r| by_message.get(r).copied())
        .collect();
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut keep[i], true) {
            continue;
        }
        for d in &set.file[i].dependency {
            if let Some(j) = by_name.get(d.as_str()) {
                todo.push(*j);
            }
        }
    }
    let files = set
        .file
        .into_iter()
        .zip(keep)
        .filter_map(|(f, k)| k.then_some(f))
        .collect();
    Ok(FileDescriptorSet { file: files }.encode_to_vec())
}

/// Drops the pool now (after start-up, which needs it once for the bootstrap).
pub fn release() {
    *CACHE.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Drops the pool once it has not been used for [`KEEP`] (when a tokio runtime is at hand).
fn schedule_release() {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if REAPER.swap(true, Ordering::AcqRel) {
        return;
    }
    handle.spawn(async {
        loop {
            tokio::time::sleep(KEEP).await;
            let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
            if c.as_ref().is_some_and(|(_, used)| used.elapsed() >= KEEP) {
                *c = None;
                REAPER.store(false, Ordering::Release);
                return;
            }
        }
    });
}

/// One resource as proto3 JSON (see `mesh_xds::dump::resource_json`).
pub fn resource_json(
    name: &str,
    type_url: &str,
    value: &[u8],
) -> Result<serde_json::Value, String> {
    let pool = pool()?;
    mesh_xds::dump::resource_json_in(&pool, name, type_url, value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    /// The committed subset is what [`super::subset`] gives for the descriptor set in use;
    /// `MESH_REGENERATE_DESCRIPTORS=1` rewrites it (`scripts/envoy-descriptors.sh` does).
    #[test]
    fn committed_subset_is_current() {
        let want = super::subset().unwrap();
        if std::env::var_os("MESH_REGENERATE_DESCRIPTORS").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/descriptors/envoy-subset.bin"
            );
            std::fs::write(path, &want).unwrap();
            return;
        }
        assert!(
            want == super::SUBSET,
            "mesh-proxy/src/descriptors/envoy-subset.bin is stale: run scripts/envoy-descriptors.sh"
        );
        let pool = super::pool().unwrap();
        assert!(
            pool.get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
                .is_some()
        );
        assert!(
            pool.get_message_by_name("envoy.extensions.filters.http.router.v3.Router")
                .is_some()
        );
    }
}
