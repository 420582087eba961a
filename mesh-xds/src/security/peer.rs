//! PeerAuthentication: the mutual TLS mode of a workload and of each of its ports, composed as
//! istiod's `ComposePeerAuthentication` does (reference: security §1.1, §1.2).
//!
//! Policies come from the root namespace (mesh scope, no selector) and the workload's own
//! namespace (namespace scope without a selector, workload scope with one; a selector policy in
//! the root namespace is ignored). In each scope the oldest policy wins. The mode starts at
//! PERMISSIVE; each of mesh, namespace and workload overrides it unless UNSET; the winning
//! workload policy's `portLevelMtls` entries override per port (UNSET takes the workload mode).

use std::collections::BTreeMap;

use mesh_model::Config;
use mesh_model::meta::Labels;
use mesh_model::security::peer_authentication::{MtlsMode, PeerAuthentication};

/// A resolved mutual TLS mode (never UNSET).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Mode {
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext.
    Permissive,
    /// mTLS only.
    Strict,
}

impl Mode {
    /// `mode` where set, else `parent` (UNSET inherits).
    fn over(parent: Mode, mode: MtlsMode) -> Mode {
        match mode {
            MtlsMode::Unset => parent,
            MtlsMode::Disable => Mode::Disable,
            MtlsMode::Permissive => Mode::Permissive,
            MtlsMode::Strict => Mode::Strict,
        }
    }
}

/// The effective modes of one workload: its own, and the ports a workload policy overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MtlsPolicy {
    /// The workload's mode (port 0 in istiod's terms: the passthrough chains use it).
    pub(crate) workload: Mode,
    /// `portLevelMtls` of the winning workload policy, by workload (container) port.
    pub(crate) ports: BTreeMap<u32, Mode>,
}

impl MtlsPolicy {
    /// The mode of traffic to workload port `port`.
    pub(crate) fn for_port(&self, port: u32) -> Mode {
        self.ports.get(&port).copied().unwrap_or(self.workload)
    }
}

impl Default for MtlsPolicy {
    fn default() -> Self {
        MtlsPolicy {
            workload: Mode::Permissive,
            ports: BTreeMap::new(),
        }
    }
}

fn peer_authentication(c: &Config) -> Option<&PeerAuthentication> {
    match c {
        Config::PeerAuthentication(p) => Some(p),
        _ => None,
    }
}

fn has_selector(p: &PeerAuthentication) -> bool {
    p.spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

fn mode_of(p: &PeerAuthentication) -> MtlsMode {
    p.spec.mtls.as_ref().map_or(MtlsMode::Unset, |m| m.mode)
}

/// The PeerAuthentications in scope, indexed once per push: `policies` are in conflict order
/// (oldest first).
#[derive(Debug, Default)]
pub(crate) struct PeerAuthentications {
    /// The mesh-wide policy (root namespace, no selector), the oldest.
    mesh: Option<MtlsMode>,
    /// Namespace-wide policies (no selector), the oldest per namespace.
    namespaces: BTreeMap<String, MtlsMode>,
    /// Workload policies (with a selector, outside the root namespace), oldest first per
    /// namespace.
    workloads: BTreeMap<String, Vec<PeerAuthentication>>,
}

impl PeerAuthentications {
    /// Indexes `policies` (PeerAuthentications, oldest first) for the mesh whose root
    /// namespace is `root`.
    pub(crate) fn new<'a>(
        policies: impl IntoIterator<Item = &'a std::sync::Arc<Config>>,
        root: &str,
    ) -> PeerAuthentications {
        let mut out = PeerAuthentications::default();
        for p in policies.into_iter().filter_map(|c| peer_authentication(c)) {
            let ns = p.metadata.namespace();
            match (ns == root, has_selector(p)) {
                // A selector policy in the root namespace is ignored, as istiod does.
                (true, true) => {}
                (true, false) => {
                    out.mesh.get_or_insert(mode_of(p));
                }
                (false, false) => {
                    out.namespaces
                        .entry(ns.to_string())
                        .or_insert_with(|| mode_of(p));
                }
                (false, true) => out
                    .workloads
                    .entry(ns.to_string())
                    .or_default()
                    .push(p.clone()),
            }
        }
        out
    }

    /// The mesh and namespace mode of `namespace` (what clients infer a service's mode from:
    /// workload policies are not consulted, as istiod does).
    pub(crate) fn namespace_mode(&self, namespace: &str) -> Mode {
        let mesh = Mode::over(Mode::Permissive, self.mesh.unwrap_or(MtlsMode::Unset));
        Mode::over(
            mesh,
            self.namespaces
                .get(namespace)
                .copied()
                .unwrap_or(MtlsMode::Unset),
        )
    }

    /// The mode of traffic to `port` of a workload in `namespace` with `labels`: what
    /// `for_workload(namespace, labels).for_port(port)` gives, without building the policy
    /// (clients ask it for every endpoint).
    pub(crate) fn mode_for(&self, namespace: &str, labels: &Labels, port: u32) -> Mode {
        let base = self.namespace_mode(namespace);
        let Some(p) = self.selected(namespace, labels) else {
            return base;
        };
        let workload = Mode::over(base, mode_of(p));
        match p.spec.port_level_mtls.get(&port) {
            Some(m) => Mode::over(workload, m.mode),
            None => workload,
        }
    }

    /// The oldest workload policy of `namespace` selecting `labels`.
    fn selected(&self, namespace: &str, labels: &Labels) -> Option<&PeerAuthentication> {
        self.workloads.get(namespace).and_then(|ps| {
            ps.iter()
                .find(|p| p.spec.selector.as_ref().is_some_and(|s| s.matches(labels)))
        })
    }

    /// The composed policy of a workload in `namespace` with `labels`.
    pub(crate) fn for_workload(&self, namespace: &str, labels: &Labels) -> MtlsPolicy {
        let mut workload = self.namespace_mode(namespace);
        let mut ports = BTreeMap::new();
        let selected = self.workloads.get(namespace).and_then(|ps| {
            ps.iter()
                .find(|p| p.spec.selector.as_ref().is_some_and(|s| s.matches(labels)))
        });
        if let Some(p) = selected {
            workload = Mode::over(workload, mode_of(p));
            for (port, m) in &p.spec.port_level_mtls {
                ports.insert(*port, Mode::over(workload, m.mode));
            }
        }
        MtlsPolicy { workload, ports }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn policies(yaml: &str) -> Vec<Arc<Config>> {
        let out = mesh_model::parse_str(yaml, "pa.yaml");
        let mut v: Vec<Arc<Config>> = out
            .resources
            .into_iter()
            .map(|r| Arc::new(r.config))
            .collect();
        v.sort_by(|a, b| a.conflict_order().cmp(&b.conflict_order()));
        v
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SET: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ignored-selector, namespace: istio-system, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {selector: {matchLabels: {app: db}}, mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: old, namespace: shop, creationTimestamp: "2024-01-02T00:00:00Z"}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: young, namespace: shop, creationTimestamp: "2024-02-01T00:00:00Z"}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db, namespace: shop, creationTimestamp: "2024-01-03T00:00:00Z"}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: STRICT}
  portLevelMtls: {"3306": {mode: DISABLE}, "9000": {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: unset, namespace: books}
spec: {mtls: {mode: UNSET}}
"#;

    #[test]
    fn scopes_compose_oldest_wins_and_unset_inherits() {
        let pas = PeerAuthentications::new(&policies(SET), "istio-system");
        // Mesh STRICT; shop's oldest namespace policy (PERMISSIVE) beats the younger DISABLE.
        assert_eq!(pas.namespace_mode("shop"), Mode::Permissive);
        // UNSET inherits the mesh; a namespace without policy too.
        assert_eq!(pas.namespace_mode("books"), Mode::Strict);
        assert_eq!(pas.namespace_mode("other"), Mode::Strict);
        let db = pas.for_workload("shop", &labels(&[("app", "db")]));
        assert_eq!(db.workload, Mode::Strict);
        assert_eq!(db.for_port(3306), Mode::Disable);
        // UNSET at port level takes the workload mode.
        assert_eq!(db.for_port(9000), Mode::Strict);
        assert_eq!(db.for_port(8080), Mode::Strict);
        for port in [3306, 9000, 8080] {
            assert_eq!(
                pas.mode_for("shop", &labels(&[("app", "db")]), port),
                db.for_port(port)
            );
        }
        let web = pas.for_workload("shop", &labels(&[("app", "web")]));
        assert_eq!(
            web,
            MtlsPolicy {
                workload: Mode::Permissive,
                ports: BTreeMap::new()
            }
        );
        // The root-namespace selector policy (DISABLE) does not apply anywhere.
        let root_db = pas.for_workload("istio-system", &labels(&[("app", "db")]));
        assert_eq!(root_db.workload, Mode::Strict);
    }

    #[test]
    fn no_policy_means_permissive() {
        let pas = PeerAuthentications::new(&[], "istio-system");
        assert_eq!(pas.for_workload("x", &Labels::new()), MtlsPolicy::default());
    }
}
