//! Cross-resource checks over a whole set of resources, as `istioctl analyze` makes them.
//!
//! Validation ([`super::validate`]) looks at one resource; these checks need several: conflicts
//! between VirtualServices and between Sidecars, and references that point nowhere. Findings
//! carry the analyzer code in the message and the analyzer's severity.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::host::{DEFAULT_DOMAIN_SUFFIX, resolve_short_name};
use crate::meta::ResourceKey;
use crate::validate::{Finding, ResourceRef};

/// Runs every cross-resource check over `configs`.
///
/// ```
/// let out = mesh_model::parse_str("
/// apiVersion: networking.istio.io/v1
/// kind: Sidecar
/// metadata: {name: a, namespace: shop}
/// spec: {egress: [{hosts: ['./*']}]}
/// ---
/// apiVersion: networking.istio.io/v1
/// kind: Sidecar
/// metadata: {name: b, namespace: shop}
/// spec: {egress: [{hosts: ['*/*']}]}
/// ", "s.yaml");
/// let configs: Vec<_> = out.resources.iter().map(|r| &r.config).collect();
/// let findings = mesh_model::validate::analyze(&configs);
/// assert!(findings[0].message.contains("IST0111"));
/// ```
pub fn analyze(configs: &[&Config]) -> Vec<Finding> {
    let mut sorted: Vec<&Config> = configs.to_vec();
    // Istio resolves conflicts by age, then namespace/name: the oldest wins.
    sorted.sort_by(|a, b| a.conflict_order().cmp(&b.conflict_order()));
    let mut out = Vec::new();
    sidecars(&sorted, &mut out);
    mesh_virtual_service_hosts(&sorted, &mut out);
    references(&sorted, &mut out);
    out
}

fn at(c: &Config) -> ResourceRef {
    ResourceRef::from(&c.key())
}

/// IST0111 (several Sidecars without a selector in one namespace) and IST0110 (Sidecars whose
/// selectors are identical).
fn sidecars(configs: &[&Config], out: &mut Vec<Finding>) {
    let mut without_selector: BTreeMap<&str, &Config> = BTreeMap::new();
    let mut by_selector: BTreeMap<(String, String), &Config> = BTreeMap::new();
    for c in configs {
        let Config::Sidecar(sc) = c else { continue };
        let ns = sc.metadata.namespace();
        match &sc.spec.workload_selector {
            None => {
                if let Some(first) = without_selector.get(ns) {
                    out.push(
                        Finding::error(
                            "spec",
                            format!(
                                "IST0111 MultipleSidecarsWithoutWorkloadSelectors: namespace {ns:?} already has the selector-less Sidecar {:?}",
                                first.meta().name
                            ),
                        )
                        .with_resource(at(c)),
                    );
                } else {
                    without_selector.insert(ns, c);
                }
            }
            Some(sel) => {
                let key = (ns.to_string(), format!("{:?}", sel.labels));
                if let Some(first) = by_selector.get(&key) {
                    out.push(
                        Finding::error(
                            "spec.workloadSelector",
                            format!(
                                "IST0110 ConflictingSidecarWorkloadSelectors: Sidecar {:?} selects the same workloads",
                                first.meta().name
                            ),
                        )
                        .with_resource(at(c)),
                    );
                } else {
                    by_selector.insert(key, c);
                }
            }
        }
    }
}

/// IST0109: two VirtualServices bound to the mesh gateway claim the same host; the older one
/// wins and the other is ignored by sidecars.
fn mesh_virtual_service_hosts(configs: &[&Config], out: &mut Vec<Finding>) {
    let mut owner: BTreeMap<String, &Config> = BTreeMap::new();
    for c in configs {
        let Config::VirtualService(vs) = c else {
            continue;
        };
        let to_mesh = vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
        if !to_mesh {
            continue;
        }
        let ns = vs.metadata.namespace();
        for (i, h) in vs.spec.hosts.iter().enumerate() {
            let fqdn = resolve_short_name(h, ns, DEFAULT_DOMAIN_SUFFIX);
            match owner.get(&fqdn) {
                Some(first) if first.key() != c.key() => out.push(
                    Finding::error(
                        format!("spec.hosts[{i}]"),
                        format!(
                            "IST0109 ConflictingMeshGatewayVirtualServiceHosts: host {fqdn:?} is also claimed by {}, which is older and wins",
                            first.key()
                        ),
                    )
                    .with_resource(at(c)),
                ),
                Some(_) => {}
                None => {
                    owner.insert(fqdn, c);
                }
            }
        }
    }
}

/// IST0101: delegates and gateways that a VirtualService names must exist.
fn references(configs: &[&Config], out: &mut Vec<Finding>) {
    let keys: std::collections::BTreeSet<ResourceKey> = configs.iter().map(|c| c.key()).collect();
    let delegates: BTreeMap<ResourceKey, bool> = configs
        .iter()
        .filter_map(|c| match c {
            Config::VirtualService(vs) => Some((c.key(), vs.spec.hosts.is_empty())),
            _ => None,
        })
        .collect();
    for c in configs {
        let Config::VirtualService(vs) = c else {
            continue;
        };
        let ns = vs.metadata.namespace();
        for (i, route) in vs.spec.http.iter().enumerate() {
            let Some(d) = &route.delegate else { continue };
            let key = ResourceKey::new(
                crate::Kind::VirtualService,
                d.namespace.as_deref().unwrap_or(ns),
                &d.name,
            );
            match delegates.get(&key) {
                None => out.push(
                    Finding::error(
                        format!("spec.http[{i}].delegate"),
                        format!(
                            "IST0101 ReferencedResourceNotFound: delegate {key} does not exist"
                        ),
                    )
                    .with_resource(at(c)),
                ),
                Some(false) => out.push(
                    Finding::error(
                        format!("spec.http[{i}].delegate"),
                        format!("{key} has hosts, so it is not a delegate VirtualService"),
                    )
                    .with_resource(at(c)),
                ),
                Some(true) => {}
            }
        }
        for (i, g) in vs.spec.gateways.iter().enumerate() {
            if g == "mesh" {
                continue;
            }
            let (gns, name) = match g.split_once('/') {
                Some(pair) => pair,
                // The legacy `name.namespace` form.
                None => g
                    .split_once('.')
                    .map_or((ns, g.as_str()), |(n, gns)| (gns, n)),
            };
            let key = ResourceKey::new(crate::Kind::Gateway, gns, name);
            if !keys.contains(&key) {
                out.push(
                    Finding::error(
                        format!("spec.gateways[{i}]"),
                        format!("IST0101 ReferencedResourceNotFound: gateway {key} does not exist"),
                    )
                    .with_resource(at(c)),
                );
            }
        }
    }
}
