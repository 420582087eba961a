//! The service model: services, their ports and endpoints, as translation consumes them and
//! registries produce them (istiod's `model.Service` and `IstioEndpoint`).
//!
//! A [`ServiceRegistry`] is one immutable view of every service of the mesh. Registry adapters
//! (the `mesh-registry` crate: Kubernetes, Consul, watched files, your own) build it; the
//! translator (`mesh-xds`) reads it and never depends on an adapter.
//!
//! The first registry is the one ServiceEntries and WorkloadEntries define
//! ([`ServiceRegistry::from_snapshot`]): Istio turns every host of a ServiceEntry into its own
//! service; endpoints come from the entry's inline `endpoints`, or from the WorkloadEntries in
//! the same namespace that its `workloadSelector` selects. That conversion is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::networking::service_entry::{Location, Resolution};
use crate::networking::workload::WorkloadEntrySpec;
use crate::protocol::Protocol;
use crate::store::Snapshot;
use crate::{Config, Kind};

/// A service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePort {
    /// Name.
    pub name: String,
    /// Port number clients use.
    pub number: u32,
    /// Protocol ([`Protocol::Unsupported`]: like istiod, sidecars sniff each connection and
    /// send HTTP/1.1 and h2c through the HTTP routes, anything else as TCP).
    pub protocol: Protocol,
    /// Port on the endpoints, when it differs.
    pub target_port: Option<u32>,
}

impl ServicePort {
    /// A port; `protocol` is parsed with [`Protocol::parse`] (empty: sniffed).
    pub fn new(name: impl Into<String>, number: u32, protocol: &str) -> ServicePort {
        ServicePort {
            name: name.into(),
            number,
            protocol: Protocol::parse(protocol),
            target_port: None,
        }
    }

    /// Whether traffic on this port is HTTP of some kind.
    pub fn is_http(&self) -> bool {
        self.protocol.is_http()
    }

    /// Whether the protocol is unspecified, so that each connection is sniffed: HTTP/1.1 and
    /// h2c go through the HTTP routes, anything else is proxied as TCP.
    pub fn is_sniffed(&self) -> bool {
        self.protocol.is_sniffed()
    }

    /// Whether this port speaks HTTP/2 to the upstream.
    pub fn is_http2(&self) -> bool {
        self.protocol.is_http2()
    }
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IP, DNS name or `unix://` path.
    pub address: String,
    /// Per-port-name overrides of the port.
    pub ports: BTreeMap<String, u32>,
    /// Labels (used by subsets).
    pub labels: BTreeMap<String, String>,
    /// `region/zone/subzone`.
    pub locality: String,
    /// Load-balancing weight (at least 1).
    pub weight: u32,
    /// Network.
    pub network: String,
    /// Service account.
    pub service_account: String,
    /// Its `security.istio.io/tlsMode`: the label, else `istio` when the endpoint has a
    /// service account, else `disabled` (as istiod reads WorkloadEntries and ServiceEntry
    /// endpoints). Clients originate Istio mTLS only to `istio` endpoints.
    pub tls_mode: String,
}

/// The label that says whether a workload accepts Istio mTLS (`istio`) or not (`disabled`).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

impl Endpoint {
    /// An endpoint at `address` with weight 1 and nothing else set (no mTLS: `tlsMode`
    /// `disabled`).
    pub fn new(address: impl Into<String>) -> Endpoint {
        Endpoint {
            address: address.into(),
            ports: BTreeMap::new(),
            labels: BTreeMap::new(),
            locality: String::new(),
            weight: 1,
            network: String::new(),
            service_account: String::new(),
            tls_mode: "disabled".into(),
        }
    }

    /// Whether the endpoint accepts Istio mTLS (`tlsMode: istio`).
    pub fn accepts_mtls(&self) -> bool {
        self.tls_mode == "istio"
    }

    /// The port this endpoint listens on for `port`.
    pub fn port_for(&self, port: &ServicePort) -> u32 {
        self.ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }

    fn from_spec(spec: &WorkloadEntrySpec) -> Endpoint {
        Endpoint {
            address: spec.address.clone(),
            ports: spec.ports.clone(),
            labels: spec.labels.clone(),
            locality: spec.locality.clone(),
            weight: spec.weight.filter(|w| *w > 0).unwrap_or(1),
            network: spec.network.clone(),
            service_account: spec.service_account.clone(),
            tls_mode: match spec.labels.get(TLS_MODE_LABEL) {
                Some(mode) => mode.clone(),
                None if !spec.service_account.is_empty() => "istio".into(),
                None => "disabled".into(),
            },
        }
    }
}

/// A service of the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Fully qualified host name.
    pub hostname: String,
    /// Namespace of the defining ServiceEntry.
    pub namespace: String,
    /// Name of the defining ServiceEntry.
    pub entry_name: String,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Endpoint discovery mode.
    pub resolution: Resolution,
    /// In or outside the mesh.
    pub location: Location,
    /// Virtual IPs.
    pub addresses: Vec<String>,
    /// Visibility as written (empty = mesh default).
    pub export_to: Vec<String>,
    /// Endpoints, in a stable order.
    pub endpoints: Vec<Endpoint>,
    /// `creationTimestamp` of the entry, for conflict order.
    pub created: Option<String>,
    /// The entry's `subjectAltNames`: identities its endpoints may present, besides their
    /// service accounts' SPIFFE IDs.
    pub subject_alt_names: Vec<String>,
}

impl Service {
    /// A mesh-internal service with STATIC resolution (its endpoints are the ones given) and
    /// nothing else set.
    pub fn new(hostname: impl Into<String>, namespace: impl Into<String>) -> Service {
        Service {
            hostname: hostname.into(),
            namespace: namespace.into(),
            entry_name: String::new(),
            ports: Vec::new(),
            resolution: Resolution::Static,
            location: Location::MeshInternal,
            addresses: Vec::new(),
            export_to: Vec::new(),
            endpoints: Vec::new(),
            created: None,
            subject_alt_names: Vec::new(),
        }
    }

    /// The port with this number.
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// Whether the service is visible from `namespace` (exportTo rules; empty = `default_export`).
    pub fn visible_to(&self, namespace: &str, default_export: &[String]) -> bool {
        exported(&self.export_to, default_export, &self.namespace, namespace)
    }
}

/// Whether a resource exported with `export_to` from `from_ns` is visible in `to_ns`: `*`
/// everywhere, `.` in its own namespace, `~` nowhere (ServiceEntry only), else the named
/// namespaces; an empty list means the mesh default.
pub fn exported(export_to: &[String], default: &[String], from_ns: &str, to_ns: &str) -> bool {
    let list = if export_to.is_empty() {
        default
    } else {
        export_to
    };
    list.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => from_ns == to_ns,
        "~" => false,
        ns => ns == to_ns,
    })
}

/// All services, keyed by host name. When two entries declare one host, the older one wins, as
/// in Istio.
///
/// Services are shared (`Arc`): registries built one from another (an aggregate merging its
/// adapters' services after one of them changed) copy pointers, not services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRegistry {
    services: BTreeMap<String, Vec<Arc<Service>>>,
}

impl ServiceRegistry {
    /// An empty registry.
    pub fn new() -> ServiceRegistry {
        ServiceRegistry::default()
    }

    /// Adds a declaration of its host after those already added: for a host declared more than
    /// once, the first declaration wins (see [`ServiceRegistry::visible`]).
    pub fn insert(&mut self, service: impl Into<Arc<Service>>) {
        let service = service.into();
        self.services
            .entry(service.hostname.clone())
            .or_default()
            .push(service);
    }

    /// [`ServiceRegistry::declarations`], taking them.
    pub fn into_declarations(self) -> impl Iterator<Item = Arc<Service>> {
        self.services.into_values().flatten()
    }

    /// Every declaration of every host, in host order, each host's in precedence order.
    pub fn declarations(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values().flatten()
    }

    /// Builds the registry from the ServiceEntries and WorkloadEntries of a snapshot.
    pub fn from_snapshot(snapshot: &Snapshot) -> ServiceRegistry {
        let workload_entries: Vec<(&str, &WorkloadEntrySpec)> = snapshot
            .of_kind(Kind::WorkloadEntry)
            .filter_map(|c| match c.as_ref() {
                Config::WorkloadEntry(we) => Some((we.metadata.namespace(), &we.spec)),
                _ => None,
            })
            .collect();
        let mut entries: Vec<&crate::ServiceEntry> = snapshot
            .of_kind(Kind::ServiceEntry)
            .filter_map(|c| match c.as_ref() {
                Config::ServiceEntry(se) => Some(se),
                _ => None,
            })
            .collect();
        entries.sort_by(|a, b| {
            (
                a.metadata.creation_timestamp.as_deref(),
                a.metadata.namespace(),
                &a.metadata.name,
            )
                .cmp(&(
                    b.metadata.creation_timestamp.as_deref(),
                    b.metadata.namespace(),
                    &b.metadata.name,
                ))
        });
        let mut services: BTreeMap<String, Vec<Arc<Service>>> = BTreeMap::new();
        for se in entries {
            let ns = se.metadata.namespace();
            let spec = &se.spec;
            let mut endpoints: Vec<Endpoint> = match &spec.workload_selector {
                Some(sel) => workload_entries
                    .iter()
                    .filter(|(wns, we)| *wns == ns && sel.matches(&we.labels))
                    .map(|(_, we)| Endpoint::from_spec(we))
                    .collect(),
                None => spec.endpoints.iter().map(Endpoint::from_spec).collect(),
            };
            endpoints.sort();
            let ports = spec
                .ports
                .iter()
                .map(|p| ServicePort {
                    name: p.name.clone(),
                    number: p.number,
                    protocol: Protocol::parse(&p.protocol),
                    target_port: p.target_port,
                })
                .collect::<Vec<_>>();
            // The last host takes the ports and endpoints; the others get copies.
            let (mut ports, mut endpoints) = (Some(ports), Some(endpoints));
            for (i, host) in spec.hosts.iter().enumerate() {
                let last = i + 1 == spec.hosts.len();
                let hostname =
                    crate::host::resolve_short_name(host, ns, crate::host::DEFAULT_DOMAIN_SUFFIX);
                services
                    .entry(hostname.clone())
                    .or_default()
                    .push(Arc::new(Service {
                        hostname,
                        namespace: ns.to_string(),
                        entry_name: se.metadata.name.clone(),
                        ports: take_or_clone(&mut ports, last),
                        resolution: spec.resolution,
                        location: spec.location,
                        addresses: spec.addresses.clone(),
                        export_to: spec.export_to.clone(),
                        endpoints: take_or_clone(&mut endpoints, last),
                        created: se.metadata.creation_timestamp.clone(),
                        subject_alt_names: spec.subject_alt_names.clone(),
                    }));
            }
        }
        ServiceRegistry { services }
    }

    /// Every service visible from `namespace`, one per host (the oldest visible declaration), in
    /// host order.
    pub fn visible(&self, namespace: &str, default_export: &[String]) -> Vec<&Service> {
        self.services
            .values()
            .filter_map(|decls| {
                // Prefer a declaration in the proxy's own namespace, then the oldest visible one.
                decls
                    .iter()
                    .find(|s| s.namespace == namespace && s.visible_to(namespace, default_export))
                    .or_else(|| {
                        decls
                            .iter()
                            .find(|s| s.visible_to(namespace, default_export))
                    })
                    .map(|s| &**s)
            })
            .collect()
    }

    /// The service declared for a host (the oldest declaration).
    pub fn get(&self, hostname: &str) -> Option<&Service> {
        self.services
            .get(hostname)
            .and_then(|d| d.first())
            .map(|s| &**s)
    }

    /// Every service (oldest declaration per host).
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services
            .values()
            .filter_map(|d| d.first())
            .map(|s| &**s)
    }

    /// How many hosts are registered.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The hosts whose declarations differ from `before` in their EDS endpoints only, or `None`
    /// when anything else differs (a host or declaration added or removed, a port, address,
    /// resolution, visibility... changed, or the endpoints of a service that is not STATIC,
    /// whose cluster carries them): then more than EDS assignments must be translated again.
    pub fn endpoint_changes(&self, before: &ServiceRegistry) -> Option<BTreeSet<String>> {
        if self.services.len() != before.services.len() {
            return None;
        }
        let mut changed = BTreeSet::new();
        for ((host, now), (old_host, old)) in self.services.iter().zip(&before.services) {
            if host != old_host || now.len() != old.len() {
                return None;
            }
            for (a, b) in now.iter().zip(old) {
                if Arc::ptr_eq(a, b) {
                    continue;
                }
                if !a.same_but_endpoints(b) {
                    return None;
                }
                if a.endpoints != b.endpoints {
                    if a.resolution != Resolution::Static {
                        return None;
                    }
                    changed.insert(host.clone());
                }
            }
        }
        Some(changed)
    }
}

impl Service {
    /// Whether everything but the endpoints is equal (every field is named here, so that a new
    /// field cannot be forgotten).
    fn same_but_endpoints(&self, other: &Service) -> bool {
        let Service {
            hostname,
            namespace,
            entry_name,
            ports,
            resolution,
            location,
            addresses,
            export_to,
            endpoints,
            created,
            subject_alt_names,
        } = self;
        *hostname == other.hostname
            && *namespace == other.namespace
            && *entry_name == other.entry_name
            && *ports == other.ports
            && *resolution == other.resolution
            && *location == other.location
            && *addresses == other.addresses
            && *export_to == other.export_to
            && *created == other.created
            && *subject_alt_names == other.subject_alt_names
            // Clusters carry the endpoints' identities (the SANs clients check), and a
            // passthrough cluster's mTLS depends on every endpoint accepting it.
            && self.service_accounts() == other.service_accounts()
            && (*resolution != Resolution::None
                || endpoints.iter().all(Endpoint::accepts_mtls)
                    == other.endpoints.iter().all(Endpoint::accepts_mtls))
    }

    /// The service accounts of the endpoints (sorted, without duplicates or empties).
    pub fn service_accounts(&self) -> BTreeSet<&str> {
        self.endpoints
            .iter()
            .map(|e| e.service_account.as_str())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

fn take_or_clone<T: Clone>(v: &mut Option<Vec<T>>, take: bool) -> Vec<T> {
    if take {
        v.take().unwrap_or_default()
    } else {
        v.clone().unwrap_or_default()
    }
}
