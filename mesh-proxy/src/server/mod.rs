//! The proxy's state: what every worker shares ([`Shared`]), and the config manager
//! ([`Server`]) that turns xDS updates into it, with Envoy's warming and ordering rules.
//!
//! - A cluster is added when it arrives; an EDS cluster *warms* until its assignment is
//!   known, and only then replaces the active cluster of the same name (the old one keeps
//!   serving meanwhile).
//! - A listener warms until every route configuration it names over RDS has arrived.
//! - A listener or cluster whose TLS contexts name SDS secrets also warms until they have
//!   arrived (or their `initial_fetch_timeout` expired; see [`crate::secret`]). Secrets over
//!   `api_config_source` must come from a static cluster, as in Envoy.
//! - A resource that does not convert (or whose TLS files do not load, or whose socket does
//!   not bind) is rejected with its field path and the previous version keeps serving; the
//!   other resources of the same response are applied.

mod bookkeeping;

pub use bookkeeping::{DumpEntry, Dumps, ResourceState};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;

use crate::cluster::manager::ClusterManager;
use crate::cluster::runtime::ClusterRuntime;
use crate::config::{Cluster, Listener, LoadAssignment};
use crate::http::hcm::RdsSlot;
use crate::http::route_table::RouteTable;
use crate::listener::{ListenerManager, Workers};
use crate::stats::{Counter, Gauge, Store};
use crate::xds::{Handler, RawResource, Rejected, Update, type_url};

/// A route configuration's slot and the stat prefixes of the HCMs that use it.
type RouteUse = (Arc<RdsSlot>, BTreeSet<String>);

/// Route configurations by name, as the HCMs that use them see them.
#[derive(Debug, Default)]
pub struct RouteRegistry {
    slots: Mutex<HashMap<String, RouteUse>>,
}

impl RouteRegistry {
    /// The slot for route configuration `name`, used by an HCM with `stat_prefix`.
    pub fn slot(&self, name: &str, stat_prefix: &str) -> Arc<RdsSlot> {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let e = s
            .entry(name.to_string())
            .or_insert_with(|| (Arc::new(RdsSlot::empty()), BTreeSet::new()));
        e.1.insert(stat_prefix.to_string());
        e.0.clone()
    }

    /// Whether `name` has arrived.
    pub fn is_ready(&self, name: &str) -> bool {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .is_some_and(|(s, _)| s.load().is_some())
    }

    /// Installs a route configuration; returns the stat prefixes of the HCMs using it.
    pub fn set(&self, name: &str, table: Arc<RouteTable>) -> Vec<String> {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let e = s
            .entry(name.to_string())
            .or_insert_with(|| (Arc::new(RdsSlot::empty()), BTreeSet::new()));
        e.0.store(Some(table));
        e.1.iter().cloned().collect()
    }

    /// The current table of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<RouteTable>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .and_then(|(s, _)| s.load_full())
    }
}

/// What every worker shares.
#[derive(Debug)]
pub struct Shared {
    /// Stats.
    pub stats: Arc<Store>,
    /// Active clusters.
    pub clusters: ClusterManager,
    /// Listeners.
    pub listeners: ListenerManager,
    /// Route configurations.
    pub routes: RouteRegistry,
    /// DNS.
    pub dns: crate::dns::Resolver,
    /// The machine's host name (`%HOSTNAME%`).
    pub hostname: String,
    /// The data-plane threads.
    pub workers: Workers,
    /// How long connections on removed chains may go on.
    pub drain_time: Duration,
    /// SDS secrets.
    pub secrets: crate::secret::SecretManager,
}

impl Shared {
    /// A new, empty proxy state.
    pub fn new(workers: Workers, dns_servers: Vec<std::net::SocketAddr>) -> Arc<Shared> {
        let stats = Arc::new(Store::new());
        Arc::new(Shared {
            secrets: crate::secret::SecretManager::new(),
            stats,
            clusters: ClusterManager::new(),
            listeners: ListenerManager::default(),
            routes: RouteRegistry::default(),
            dns: crate::dns::Resolver::new(dns_servers),
            hostname: hostname(),
            workers,
            drain_time: crate::listener::DEFAULT_DRAIN_TIME,
        })
    }

    /// Every TLS context in use, for `/certs`: the filter chains' of each listener, then the
    /// transports' of each cluster.
    pub fn tls_contexts(&self) -> Vec<crate::tls::ContextCerts> {
        let mut out = Vec::new();
        for (_, l) in self.listeners.runtimes() {
            for c in l.chains.iter().chain(l.default_chain.iter()) {
                if let Some(t) = c.tls() {
                    out.push(t.certs());
                }
            }
        }
        let clusters = self.clusters.all();
        let mut names: Vec<&String> = clusters.keys().collect();
        names.sort();
        for c in names.into_iter().filter_map(|n| clusters.get(n)) {
            out.extend(c.tls_contexts().map(|t| t.certs()));
        }
        out
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// xDS stats of a type (`cluster_manager.cds.`, `listener_manager.lds.`).
#[derive(Debug, Clone)]
struct XdsStats {
    update_attempt: Counter,
    update_success: Counter,
    update_rejected: Counter,
    update_empty: Counter,
    update_failure: Counter,
    version: Gauge,
    /// The last accepted version (Envoy's `version_text`).
    version_text: Arc<Mutex<String>>,
}

impl XdsStats {
    fn new(store: &Store, prefix: &str) -> XdsStats {
        XdsStats {
            update_attempt: store.counter(format!("{prefix}update_attempt")),
            update_success: store.counter(format!("{prefix}update_success")),
            update_rejected: store.counter(format!("{prefix}update_rejected")),
            update_empty: store.counter(format!("{prefix}update_empty")),
            update_failure: store.counter(format!("{prefix}update_failure")),
            version: store.gauge(format!("{prefix}version")),
            version_text: Arc::default(),
        }
    }

    fn record(&self, rejected: bool, version: &str) {
        if rejected {
            self.update_rejected.inc();
        } else {
            self.update_success.inc();
            // Envoy's `version` gauge is the xxHash64 of the version text (a u64: the admin
            // API prints gauges unsigned, so the bits are kept as they are).
            let h = xxhash_rust::xxh64::xxh64(version.as_bytes(), 0);
            self.version.set(i64::from_ne_bytes(h.to_ne_bytes()));
            *self.version_text.lock().unwrap_or_else(|p| p.into_inner()) = version.to_string();
        }
    }

    fn version_text(&self) -> String {
        self.version_text
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A cluster the manager knows: its config and raw form, and its runtime (active or warming).
struct ClusterEntry {
    config: Arc<Cluster>,
    raw: Bytes,
    version: String,
    updated: std::time::SystemTime,
    runtime: Arc<ClusterRuntime>,
    warming: bool,
    dynamic: bool,
}

struct ListenerEntry {
    config: Arc<Listener>,
    /// Sockets bound for a warming listener.
    prebound: Option<crate::listener::PreBound>,
    /// Its SDS secrets, subscribed while it warms (its chains hold them once active).
    secrets: Vec<Arc<crate::secret::SecretEntry>>,
    raw: Bytes,
    version: String,
    updated: std::time::SystemTime,
    warming: bool,
    dynamic: bool,
}

struct AssignmentEntry {
    config: LoadAssignment,
    raw: Bytes,
    version: String,
}

struct RouteEntry {
    raw: Bytes,
    version: String,
    updated: std::time::SystemTime,
}

#[derive(Default)]
struct State {
    clusters: BTreeMap<String, ClusterEntry>,
    listeners: BTreeMap<String, ListenerEntry>,
    assignments: HashMap<String, AssignmentEntry>,
    routes: BTreeMap<String, RouteEntry>,
    rejected: BTreeMap<(&'static str, String), bookkeeping::RejectedEntry>,
    cds_version: String,
    lds_version: String,
    cds_done: bool,
    /// The bootstrap's static resources are installed ([`Server::static_resources_added`]).
    statics_done: bool,
    lds_done: bool,
}

/// The config manager: applies xDS updates and static resources to [`Shared`].
pub struct Server {
    shared: Arc<Shared>,
    state: Mutex<State>,
    cds: XdsStats,
    lds: XdsStats,
    connected: Gauge,
    ready: watch::Sender<bool>,
    expect_cds: bool,
    expect_lds: bool,
    activations: Mutex<Vec<Arc<ClusterRuntime>>>,
    /// Keeps the task that finishes warming when secrets arrive.
    _secrets_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// A manager for `shared`. `expect_cds` / `expect_lds` say whether initialisation waits
    /// for a first CDS / LDS response.
    ///
    /// In a tokio runtime, a task of the manager finishes warming listeners and clusters when
    /// their SDS secrets arrive.
    pub fn new(shared: Arc<Shared>, expect_cds: bool, expect_lds: bool) -> Arc<Server> {
        let store = shared.stats.clone();
        let s = Arc::new_cyclic(|weak: &std::sync::Weak<Server>| {
            // gRPC SDS streams find their static cluster here.
            let w = weak.clone();
            shared
                .secrets
                .set_targets(Arc::new(move |name: &str| w.upgrade()?.sds_target(name)));
            let task = tokio::runtime::Handle::try_current().ok().map(|rt| {
                let w = weak.clone();
                let mut changes = shared.secrets.changes();
                rt.spawn(async move {
                    while changes.changed().await.is_ok() {
                        let Some(s) = w.upgrade() else {
                            return;
                        };
                        s.secrets_changed();
                    }
                })
            });
            Server {
                cds: XdsStats::new(&store, "cluster_manager.cds."),
                lds: XdsStats::new(&store, "listener_manager.lds."),
                connected: store.gauge("control_plane.connected_state"),
                ready: watch::channel(false).0,
                shared,
                state: Mutex::new(State::default()),
                expect_cds,
                expect_lds,
                activations: Mutex::new(Vec::new()),
                _secrets_task: task,
            }
        });
        {
            let mut st = s.lock();
            st.cds_done = !expect_cds;
            st.lds_done = !expect_lds;
            // Like Envoy's, a subscription counts an attempt when it starts.
            s.cds.update_attempt.inc_if(expect_cds);
            s.lds.update_attempt.inc_if(expect_lds);
            s.update_gauges(&st);
            s.check_ready(&st);
        }
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What every worker shares.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Turns true once the first CDS and LDS updates are applied and warmed (`/ready`).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Gives up waiting for the first CDS (or LDS) response (`initial_fetch_timeout`).
    pub fn initial_fetch_timed_out(&self, cds: bool) {
        let mut st = self.lock();
        if cds {
            st.cds_done = true;
        } else {
            st.lds_done = true;
        }
        self.check_ready(&st);
    }

    /// Says that the bootstrap's static clusters and listeners are all added: initialisation
    /// completes (`/ready` turns LIVE) once they are warm (their SDS secrets arrived) and the
    /// first CDS and LDS responses, if expected, are applied.
    pub fn static_resources_added(&self) {
        let mut st = self.lock();
        st.statics_done = true;
        self.update_gauges(&st);
        self.check_ready(&st);
    }

    /// Adds a static cluster (bootstrap `static_resources`).
    pub fn add_static_cluster(&self, c: Cluster, raw: Bytes) -> Result<(), String> {
        let mut st = self.lock();
        let r = self.put_cluster(&mut st, c, raw, String::new(), false);
        self.flush_activations();
        r
    }

    /// Adds a static listener.
    pub fn add_static_listener(&self, l: Listener, raw: Bytes) -> Result<(), String> {
        let mut st = self.lock();
        self.put_listener(&mut st, l, raw, String::new(), false)
    }

    fn put_cluster(
        &self,
        st: &mut State,
        c: Cluster,
        raw: Bytes,
        version: String,
        dynamic: bool,
    ) -> Result<(), String> {
        if let Some(e) = st.clusters.get(&c.name) {
            if e.raw == raw {
                return Ok(());
            }
            if !e.dynamic && dynamic {
                return Err("cannot update a static cluster over CDS".into());
            }
        }
        if dynamic {
            Self::check_sds_clusters(st, &c.sds_secrets())?;
        }
        let config = Arc::new(c);
        let rt = ClusterRuntime::new(config.clone(), &self.shared.stats, &self.shared.secrets)
            .map_err(|e| e.to_string())?;
        let mut warming = !rt.secrets_ready();
        if let Some(service) = config.discovery.eds_service_name() {
            // The cluster's EDS subscription starts: Envoy counts an attempt.
            rt.stats().update_attempt.inc();
            match st.assignments.get(service) {
                Some(a) => rt.set_assignment(a.config.clone()),
                None => warming = true,
            }
        }
        if !warming {
            self.activate(&rt);
        }
        st.clusters.insert(
            config.name.clone(),
            ClusterEntry {
                config,
                raw,
                version,
                updated: std::time::SystemTime::now(),
                runtime: rt,
                warming,
                dynamic,
            },
        );
        Ok(())
    }

    /// Secrets of dynamic resources over `api_config_source` must come from a static cluster
    /// (Envoy's `checkApiConfigSourceSubscriptionBackingCluster`).
    fn check_sds_clusters(
        st: &State,
        secrets: &[(
            crate::config::tls::SecretKind,
            &crate::config::tls::SdsSecret,
        )],
    ) -> Result<(), String> {
        for (_, s) in secrets {
            if let crate::config::tls::SdsSource::Grpc { cluster, .. } = &s.config.source
                && !st
                    .clusters
                    .get(cluster)
                    .is_some_and(|e| !e.dynamic && e.config.discovery.eds_service_name().is_none())
            {
                return Err(format!(
                    "SDS secret '{}': envoy::config::core::v3::ApiConfigSource must have a statically defined non-EDS cluster: '{cluster}' does not exist, was added via api, or is an EDS cluster",
                    s.name
                ));
            }
        }
        Ok(())
    }

    /// The address of static cluster `name` for a gRPC SDS stream.
    fn sds_target(&self, name: &str) -> Option<crate::secret::SdsTarget> {
        use crate::config::cluster::Discovery;
        use crate::config::endpoint::EndpointAddress;
        use crate::secret::{SdsAddress, SdsTarget};
        let st = self.lock();
        let e = st.clusters.get(name).filter(|e| !e.dynamic)?;
        let la = match &e.config.discovery {
            Discovery::Static(la) | Discovery::StrictDns(la) | Discovery::LogicalDns(la) => la,
            _ => return None,
        };
        let address = la
            .localities
            .iter()
            .flat_map(|l| l.endpoints.iter())
            .map(|e| e.address.clone())
            .next()?;
        let transport = match address {
            EndpointAddress::Socket(a) => SdsAddress::Resolved(crate::xds::XdsTransport::Tcp(a)),
            EndpointAddress::Pipe(p) => SdsAddress::Resolved(crate::xds::XdsTransport::Unix(p)),
            EndpointAddress::Dns { host, port } => SdsAddress::Dns { host, port },
        };
        Some(SdsTarget {
            transport,
            connect_timeout: e.config.connect_timeout,
            connections: Some(e.runtime.stats().pool.cx_total.clone()),
        })
    }

    /// A secret arrived or timed out: finish warming what waited for it.
    fn secrets_changed(&self) {
        let mut st = self.lock();
        self.finish_warming(&mut st);
        self.flush_activations();
        self.update_gauges(&st);
        self.check_ready(&st);
    }

    /// Activates warming listeners whose route configurations and secrets are all there,
    /// and warming clusters whose assignment (for EDS) and secrets are.
    fn finish_warming(&self, st: &mut State) {
        let waiting: Vec<String> = st
            .listeners
            .iter()
            .filter(|(_, e)| e.warming)
            .map(|(n, _)| n.clone())
            .collect();
        for name in waiting {
            let Some(e) = st.listeners.get_mut(&name) else {
                continue;
            };
            let config = e.config.clone();
            let ready = rds_names(&config)
                .iter()
                .all(|n| self.shared.routes.is_ready(n))
                && e.secrets.iter().all(|s| s.is_ready());
            if !ready {
                continue;
            }
            let prebound = e.prebound.take();
            match self.shared.listeners.upsert(&self.shared, config, prebound) {
                Ok(()) => {
                    if let Some(e) = st.listeners.get_mut(&name) {
                        e.warming = false;
                    }
                }
                Err(err) => {
                    tracing::warn!("listener {name} could not be installed: {err}");
                }
            }
        }
        let mut to_activate = Vec::new();
        for e in st.clusters.values_mut().filter(|e| e.warming) {
            let assigned = !e.runtime.needs_assignment() || e.runtime.assignment().is_some();
            if assigned && e.runtime.secrets_ready() {
                e.warming = false;
                to_activate.push(e.runtime.clone());
            }
        }
        for rt in to_activate {
            self.activate(&rt);
        }
    }

    /// Queues a cluster for activation; [`Server::flush_activations`] installs the queue at
    /// once (one copy of the active map per update, not one per cluster).
    fn activate(&self, rt: &Arc<ClusterRuntime>) {
        crate::cluster::tasks::start(&self.shared, rt);
        self.activations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rt.clone());
    }

    fn flush_activations(&self) {
        let batch =
            std::mem::take(&mut *self.activations.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            self.shared.clusters.insert_many(batch);
        }
    }

    fn put_listener(
        &self,
        st: &mut State,
        l: Listener,
        raw: Bytes,
        version: String,
        dynamic: bool,
    ) -> Result<(), String> {
        if let Some(e) = st.listeners.get(&l.name)
            && e.raw == raw
        {
            return Ok(());
        }
        let sds = l.sds_secrets();
        if dynamic {
            Self::check_sds_clusters(st, &sds)?;
        }
        let secrets = sds
            .iter()
            .map(|(kind, s)| self.shared.secrets.acquire(*kind, s))
            .collect::<Result<Vec<_>, _>>()?;
        let config = Arc::new(l);
        let waiting = rds_names(&config)
            .iter()
            .any(|n| !self.shared.routes.is_ready(n))
            || secrets.iter().any(|s| !s.is_ready());
        // Bind now, so that a listener that cannot bind is rejected with this update.
        let mut prebound = self
            .shared
            .listeners
            .prebind(&self.shared, &config)
            .map_err(|e| e.to_string())?;
        if !waiting {
            self.shared
                .listeners
                .upsert(&self.shared, config.clone(), prebound.take())
                .map_err(|e| e.to_string())?;
        } else {
            // Register the slots now so the route configurations are subscribed (with the
            // HCMs' stat prefixes, so their `rds` stats count the first update).
            for (n, prefix) in rds_uses(&config) {
                let _ = self.shared.routes.slot(&n, &prefix);
            }
        }
        st.listeners.insert(
            config.name.clone(),
            ListenerEntry {
                config,
                prebound,
                secrets,
                raw,
                version,
                updated: std::time::SystemTime::now(),
                warming: waiting,
                dynamic,
            },
        );
        Ok(())
    }

    fn reject(
        st: &mut State,
        t: &'static str,
        name: &str,
        raw: Bytes,
        version: &str,
        reason: String,
    ) -> Rejected {
        st.rejected.insert(
            (t, name.to_string()),
            bookkeeping::RejectedEntry {
                raw,
                version: version.to_string(),
                reason: reason.clone(),
                at: std::time::SystemTime::now(),
            },
        );
        Rejected {
            name: name.to_string(),
            reason,
        }
    }

    fn apply_clusters(&self, st: &mut State, version: &str, update: Update) -> Vec<Rejected> {
        let (updated, removed, full_state) = split(update);
        let mut rejected = Vec::new();
        let mut seen = BTreeSet::new();
        for r in updated {
            seen.insert(r.name.clone());
            // Unchanged bytes: nothing to decode or rebuild (SotW resends every cluster).
            if st.clusters.get(&r.name).is_some_and(|e| e.raw == r.value) {
                // The version in use came back (after a rejected one, say): no error left.
                st.rejected.remove(&(type_url::CLUSTER, r.name.clone()));
                continue;
            }
            let proto =
                match envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(r.value.clone())
                {
                    Ok(p) => p,
                    Err(e) => {
                        rejected.push(Self::reject(
                            st,
                            type_url::CLUSTER,
                            &r.name,
                            r.value,
                            version,
                            format!("does not decode: {e}"),
                        ));
                        continue;
                    }
                };
            let converted = crate::proto::cluster(proto);
            match converted {
                Ok(c) => {
                    let name = c.name.clone();
                    match self.put_cluster(st, c, r.value.clone(), version_of(&r, version), true) {
                        Ok(()) => {
                            st.rejected.remove(&(type_url::CLUSTER, name));
                        }
                        Err(e) => rejected.push(Self::reject(
                            st,
                            type_url::CLUSTER,
                            &r.name,
                            r.value,
                            version,
                            e,
                        )),
                    }
                }
                Err(e) => rejected.push(Self::reject(
                    st,
                    type_url::CLUSTER,
                    &r.name,
                    r.value,
                    version,
                    e.to_string(),
                )),
            }
        }
        let gone: Vec<String> = if full_state {
            st.clusters
                .iter()
                .filter(|(n, e)| e.dynamic && !seen.contains(*n))
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            removed
        };
        let gone: Vec<String> = gone
            .into_iter()
            .filter(|name| st.clusters.get(name).is_some_and(|e| e.dynamic))
            .collect();
        for name in &gone {
            st.clusters.remove(name);
        }
        for rt in self.shared.clusters.remove_many(&gone) {
            rt.remove_stats(&self.shared.stats);
        }
        st.cds_version = version.to_string();
        self.cds.record(!rejected.is_empty(), version);
        if !st.cds_done {
            st.cds_done = true;
        }
        rejected
    }

    fn apply_assignments(&self, st: &mut State, version: &str, update: Update) -> Vec<Rejected> {
        let (updated, removed, _) = split(update);
        let mut rejected = Vec::new();
        // Clusters by EDS service name, built once per update.
        let mut by_service: HashMap<String, Vec<String>> = HashMap::new();
        for (name, e) in &st.clusters {
            if let Some(s) = e.config.discovery.eds_service_name() {
                by_service
                    .entry(s.to_string())
                    .or_default()
                    .push(name.clone());
            }
        }
        let no_clusters = Vec::new();
        for r in updated {
            let proto =
                match envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                    r.value.clone(),
                ) {
                    Ok(p) => p,
                    Err(e) => {
                        rejected.push(Self::reject(
                            st,
                            type_url::ENDPOINT,
                            &r.name,
                            r.value,
                            version,
                            format!("does not decode: {e}"),
                        ));
                        continue;
                    }
                };
            let la = match crate::proto::load_assignment(proto) {
                Ok(la) => la,
                Err(e) => {
                    self.count_eds(st, by_service.get(&r.name).unwrap_or(&no_clusters), false);
                    rejected.push(Self::reject(
                        st,
                        type_url::ENDPOINT,
                        &r.name,
                        r.value,
                        version,
                        e.to_string(),
                    ));
                    continue;
                }
            };
            let service = la.cluster_name.clone();
            st.assignments.insert(
                service.clone(),
                AssignmentEntry {
                    config: la.clone(),
                    raw: r.value,
                    version: version_of(
                        &RawResource {
                            name: r.name.clone(),
                            version: r.version.clone(),
                            value: Bytes::new(),
                        },
                        version,
                    ),
                },
            );
            st.rejected.remove(&(type_url::ENDPOINT, service.clone()));
            let names = by_service.get(&service).unwrap_or(&no_clusters);
            self.count_eds(st, names, true);
            let mut to_activate = Vec::new();
            for name in names {
                if let Some(e) = st.clusters.get_mut(name) {
                    e.runtime.set_assignment(la.clone());
                    if e.warming && e.runtime.secrets_ready() {
                        e.warming = false;
                        to_activate.push(e.runtime.clone());
                    }
                }
            }
            for rt in to_activate {
                self.activate(&rt);
            }
        }
        for name in removed {
            st.assignments.remove(&name);
        }
        rejected
    }

    fn count_eds(&self, st: &State, clusters: &[String], ok: bool) {
        for name in clusters {
            if let Some(e) = st.clusters.get(name) {
                let s = e.runtime.stats();
                s.update_attempt.inc();
                if ok {
                    s.update_success.inc();
                } else {
                    s.update_rejected.inc();
                }
            }
        }
    }

    fn apply_listeners(&self, st: &mut State, version: &str, update: Update) -> Vec<Rejected> {
        let (updated, removed, full_state) = split(update);
        let mut rejected = Vec::new();
        let mut seen = BTreeSet::new();
        for r in updated {
            seen.insert(r.name.clone());
            if st.listeners.get(&r.name).is_some_and(|e| e.raw == r.value) {
                st.rejected.remove(&(type_url::LISTENER, r.name.clone()));
                continue;
            }
            let proto = match envoy_types::pb::envoy::config::listener::v3::Listener::decode(
                r.value.clone(),
            ) {
                Ok(p) => p,
                Err(e) => {
                    rejected.push(Self::reject(
                        st,
                        type_url::LISTENER,
                        &r.name,
                        r.value,
                        version,
                        format!("does not decode: {e}"),
                    ));
                    continue;
                }
            };
            match crate::proto::listener(proto) {
                Ok(l) => {
                    let name = l.name.clone();
                    match self.put_listener(st, l, r.value.clone(), version_of(&r, version), true) {
                        Ok(()) => {
                            st.rejected.remove(&(type_url::LISTENER, name));
                        }
                        Err(e) => rejected.push(Self::reject(
                            st,
                            type_url::LISTENER,
                            &r.name,
                            r.value,
                            version,
                            e,
                        )),
                    }
                }
                Err(e) => rejected.push(Self::reject(
                    st,
                    type_url::LISTENER,
                    &r.name,
                    r.value,
                    version,
                    e.to_string(),
                )),
            }
        }
        let gone: Vec<String> = if full_state {
            st.listeners
                .iter()
                .filter(|(n, e)| e.dynamic && !seen.contains(*n))
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            removed
        };
        for name in gone {
            if st.listeners.get(&name).is_some_and(|e| e.dynamic) {
                st.listeners.remove(&name);
                self.shared.listeners.remove(&name);
            }
        }
        st.lds_version = version.to_string();
        self.lds.record(!rejected.is_empty(), version);
        st.lds_done = true;
        rejected
    }

    fn apply_routes(&self, st: &mut State, version: &str, update: Update) -> Vec<Rejected> {
        let (updated, _removed, _) = split(update);
        let mut rejected = Vec::new();
        for r in updated {
            if st.routes.get(&r.name).is_some_and(|e| e.raw == r.value) {
                // Unchanged: Envoy counts the update and keeps the version and time it has.
                for p in self.route_prefixes(&r.name) {
                    self.shared
                        .stats
                        .counter(format!("http.{p}.rds.{}.update_success", r.name))
                        .inc();
                }
                st.rejected.remove(&(type_url::ROUTE, r.name.clone()));
                continue;
            }
            let proto = match envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(
                r.value.clone(),
            ) {
                Ok(p) => p,
                Err(e) => {
                    rejected.push(Self::reject(
                        st,
                        type_url::ROUTE,
                        &r.name,
                        r.value,
                        version,
                        format!("does not decode: {e}"),
                    ));
                    continue;
                }
            };
            match crate::proto::route_configuration(proto) {
                Ok(rc) => {
                    let name = rc.name.clone();
                    let prefixes = self.shared.routes.set(&name, Arc::new(RouteTable::new(rc)));
                    for p in prefixes.iter().filter(|p| !p.is_empty()) {
                        self.shared
                            .stats
                            .counter(format!("http.{p}.rds.{name}.update_success"))
                            .inc();
                    }
                    st.routes.insert(
                        name.clone(),
                        RouteEntry {
                            raw: r.value,
                            version: version_of(
                                &RawResource {
                                    name: r.name.clone(),
                                    version: r.version.clone(),
                                    value: Bytes::new(),
                                },
                                version,
                            ),
                            updated: std::time::SystemTime::now(),
                        },
                    );
                    st.rejected.remove(&(type_url::ROUTE, name));
                }
                Err(e) => {
                    for p in self.route_prefixes(&r.name) {
                        self.shared
                            .stats
                            .counter(format!("http.{p}.rds.{}.update_rejected", r.name))
                            .inc();
                    }
                    rejected.push(Self::reject(
                        st,
                        type_url::ROUTE,
                        &r.name,
                        r.value,
                        version,
                        e.to_string(),
                    ));
                }
            }
        }
        // Listeners waiting for these routes may be complete now.
        self.finish_warming(st);
        rejected
    }

    fn apply_secrets(&self, st: &mut State, version: &str, update: Update) -> Vec<Rejected> {
        let (updated, _removed, _) = split(update);
        let rejected = self.shared.secrets.apply_ads(version, updated);
        self.finish_warming(st);
        rejected
    }

    fn route_prefixes(&self, name: &str) -> Vec<String> {
        self.shared
            .routes
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|(_, p)| p.iter().filter(|p| !p.is_empty()).cloned().collect())
            .unwrap_or_default()
    }

    fn update_gauges(&self, st: &State) {
        let s = &self.shared.stats;
        let active_c = st.clusters.values().filter(|e| !e.warming).count();
        let warming_c = st.clusters.len() - active_c;
        s.gauge("cluster_manager.active_clusters")
            .set(i64::try_from(active_c).unwrap_or(0));
        s.gauge("cluster_manager.warming_clusters")
            .set(i64::try_from(warming_c).unwrap_or(0));
        let active_l = st.listeners.values().filter(|e| !e.warming).count();
        s.gauge("listener_manager.total_listeners_active")
            .set(i64::try_from(active_l).unwrap_or(0));
        s.gauge("listener_manager.total_listeners_warming")
            .set(i64::try_from(st.listeners.len() - active_l).unwrap_or(0));
    }

    fn check_ready(&self, st: &State) {
        let clusters_warm = st.clusters.values().all(|e| !e.warming);
        let listeners_warm = st.listeners.values().all(|e| !e.warming);
        let ready =
            st.statics_done && st.cds_done && st.lds_done && clusters_warm && listeners_warm;
        let ready = ready || (*self.ready.borrow() && st.cds_done && st.lds_done);
        self.ready.send_if_modified(|r| {
            let changed = *r != ready && ready;
            if changed {
                *r = true;
            }
            changed
        });
        // Envoy's server states: LIVE (0), PRE_INITIALIZING (2) until the cluster manager is
        // initialised (first CDS applied, every cluster warm), then INITIALIZING (3).
        let state = if *self.ready.borrow() {
            0
        } else if st.cds_done && clusters_warm {
            3
        } else {
            2
        };
        self.shared.stats.gauge("server.state").set(state);
    }

    /// A snapshot of every resource for `/config_dump` and `/clusters`.
    pub fn dumps(&self) -> Dumps {
        let st = self.lock();
        bookkeeping::collect(&st, &self.shared)
    }

    /// Whether the proxy is initialised (`/ready` answers LIVE).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// The last CDS and LDS versions accepted in full (Envoy's `version_text`: a response
    /// with a rejected resource does not change it).
    pub fn accepted_versions(&self) -> (String, String) {
        (self.cds.version_text(), self.lds.version_text())
    }

    /// The last CDS and LDS versions.
    pub fn versions(&self) -> (String, String) {
        let st = self.lock();
        (st.cds_version.clone(), st.lds_version.clone())
    }

    /// The SDS secrets subscribed, by kind, for `/config_dump`.
    pub fn secret_dumps(
        &self,
        kind: crate::config::tls::SecretKind,
    ) -> Vec<crate::secret::SecretDump> {
        self.shared.secrets.dump(kind)
    }

    /// Whether initialisation waits for CDS and LDS.
    pub fn expects(&self) -> (bool, bool) {
        (self.expect_cds, self.expect_lds)
    }
}

/// Route configuration names a listener's chains use over RDS, with the stat prefix of each
/// HCM using them.
fn rds_uses(l: &Listener) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for c in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        if let crate::config::listener::TerminalFilter::Http(h) = &c.terminal
            && let crate::config::http::RouteSource::Rds(n) = &h.routes
        {
            v.push((n.clone(), h.stat_prefix.clone()));
        }
    }
    v
}

/// Route configuration names a listener's chains use over RDS.
fn rds_names(l: &Listener) -> Vec<String> {
    let mut v = Vec::new();
    for c in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        if let crate::config::listener::TerminalFilter::Http(h) = &c.terminal
            && let crate::config::http::RouteSource::Rds(n) = &h.routes
            && !v.contains(n)
        {
            v.push(n.clone());
        }
    }
    v
}

fn version_of(r: &RawResource, response_version: &str) -> String {
    if r.version.is_empty() {
        response_version.to_string()
    } else {
        r.version.clone()
    }
}

/// `(updated, removed, is_full_state)`.
fn split(u: Update) -> (Vec<RawResource>, Vec<String>, bool) {
    match u {
        Update::State(r) => (r, Vec::new(), true),
        Update::Delta { updated, removed } => (updated, removed, false),
    }
}

impl Handler for Server {
    fn apply(&self, t: &str, version: &str, update: Update) -> Vec<Rejected> {
        let mut st = self.lock();
        let r = match t {
            type_url::CLUSTER => self.apply_clusters(&mut st, version, update),
            type_url::ENDPOINT => self.apply_assignments(&mut st, version, update),
            type_url::LISTENER => self.apply_listeners(&mut st, version, update),
            type_url::ROUTE => self.apply_routes(&mut st, version, update),
            type_url::SECRET => self.apply_secrets(&mut st, version, update),
            _ => Vec::new(),
        };
        self.cds.update_attempt.inc_if(t == type_url::CLUSTER);
        self.lds.update_attempt.inc_if(t == type_url::LISTENER);
        if t == type_url::CLUSTER && matches!(r.as_slice(), []) && st.clusters.is_empty() {
            self.cds.update_empty.inc();
        }
        self.flush_activations();
        self.update_gauges(&st);
        self.check_ready(&st);
        r
    }

    fn subscriptions(&self, t: &str) -> BTreeSet<String> {
        let st = self.lock();
        match t {
            type_url::ENDPOINT => st
                .clusters
                .values()
                .filter_map(|e| e.config.discovery.eds_service_name().map(str::to_string))
                .collect(),
            type_url::ROUTE => st
                .listeners
                .values()
                .flat_map(|e| rds_names(&e.config))
                .collect(),
            type_url::SECRET => {
                drop(st);
                self.shared.secrets.ads_names()
            }
            _ => BTreeSet::new(),
        }
    }

    fn connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
        if !connected {
            // Like Envoy's, every subscription started counts a failed attempt when the
            // stream fails (LDS starts once the first CDS update is in).
            let st = self.lock();
            if self.expect_cds {
                self.cds.update_failure.inc();
                self.cds.update_attempt.inc();
            }
            if self.expect_lds && st.cds_done {
                self.lds.update_failure.inc();
                self.lds.update_attempt.inc();
            }
        }
    }
}

trait IncIf {
    fn inc_if(&self, cond: bool);
}

impl IncIf for Counter {
    fn inc_if(&self, cond: bool) {
        if cond {
            self.inc();
        }
    }
}
