//! Pure, deterministic translation: (mesh config, config store snapshot, proxy) → xDS.
//!
//! [`PushContext`] indexes one store snapshot once (like istiod's PushContext); [`translate`]
//! turns it into the [`Resources`] one proxy sees. Nothing here does IO; the same inputs always
//! produce the same resources (maps are ordered), and [`Resources::consistent`] checks the
//! invariants Envoy relies on.

pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod listener;
pub(crate) mod route;
mod scope;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use mesh_model::store::Snapshot;
use mesh_model::{Config, Kind, MeshConfig};

use crate::proxy::{Proxy, ProxyType};
use crate::registry::ServiceRegistry;

pub use scope::SidecarScope;

/// Everything translation needs from one snapshot of the config store, indexed once and shared
/// by every proxy's translation.
#[derive(Debug)]
pub struct PushContext {
    /// Mesh-wide settings.
    pub mesh: MeshConfig,
    /// Services from ServiceEntries and WorkloadEntries (shared with the push that follows,
    /// which compares it to its own to find endpoint-only changes).
    pub registry: Arc<ServiceRegistry>,
    /// The store snapshot.
    pub snapshot: Arc<Snapshot>,
    /// VirtualServices, oldest first (Istio's conflict order).
    pub(crate) virtual_services: Vec<Arc<Config>>,
    /// DestinationRules, oldest first.
    pub(crate) destination_rules: Vec<Arc<Config>>,
    /// Gateways.
    pub(crate) gateways: Vec<Arc<Config>>,
    /// Sidecars, oldest first.
    pub(crate) sidecars: Vec<Arc<Config>>,
    /// DestinationRules by namespace, then by resolved host (indexes into `destination_rules`).
    pub(crate) dr_index: HashMap<String, HostIndex>,
    /// Mesh-bound VirtualServices by resolved host (indexes into `virtual_services`).
    pub(crate) mesh_vs_index: HostIndex,
    /// Namespaces that have a DestinationRule with a workload selector.
    pub(crate) selector_drs: std::collections::HashSet<String>,
    /// DestinationRule lookups of this push: proxy class (namespace, and labels where a
    /// selector could match) → host → service namespace → rule.
    pub(crate) dr_memo: std::sync::Mutex<DrMemo>,
    /// Whether a DYNAMIC_DNS service exists (HTTP connection managers then carry the dynamic
    /// forward proxy filter).
    pub(crate) dynamic_dns: bool,
    /// The mesh's networks (Istio's `meshNetworks`); see [`PushContext::with_networks`].
    pub networks: mesh_model::MeshNetworks,
    /// PeerAuthentications by scope.
    pub(crate) peer_authentications: crate::security::peer::PeerAuthentications,
    /// AuthorizationPolicies, oldest first.
    pub(crate) authorization_policies: Vec<Arc<Config>>,
    /// RequestAuthentications, oldest first.
    pub(crate) request_authentications: Vec<Arc<Config>>,
    /// JWKS documents by `jwksUri`, fetched by the caller (see [`PushContext::with_jwks`]).
    pub(crate) jwks: BTreeMap<String, String>,
    /// Gateway credentials (see [`PushContext::with_credentials`]).
    pub(crate) credentials: Arc<crate::credentials::Credentials>,
}

type DrMemo = HashMap<String, HashMap<String, HashMap<String, Option<scope::DrHit>>>>;

/// Resources indexed by host: exact hosts in a map, wildcard hosts in a (short) list, so that
/// lookups per service stay O(1) plus the wildcards instead of scanning every resource.
#[derive(Debug, Default)]
pub(crate) struct HostIndex {
    pub(crate) exact: HashMap<String, Vec<usize>>,
    pub(crate) wildcard: Vec<usize>,
}

impl HostIndex {
    fn add(&mut self, host: String, i: usize) {
        if host.contains('*') {
            if !self.wildcard.contains(&i) {
                self.wildcard.push(i);
            }
        } else {
            let v = self.exact.entry(host).or_default();
            if !v.contains(&i) {
                v.push(i);
            }
        }
    }

    /// Candidates for `host`, in resource (conflict) order.
    pub(crate) fn candidates(&self, host: &str) -> Vec<usize> {
        let mut v: Vec<usize> = self.exact.get(host).map(|e| e.to_vec()).unwrap_or_default();
        v.extend(self.wildcard.iter().copied());
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn sorted(snapshot: &Snapshot, kind: Kind) -> Vec<Arc<Config>> {
    let mut v: Vec<Arc<Config>> = snapshot.of_kind(kind).cloned().collect();
    v.sort_by(|a, b| a.conflict_order().cmp(&b.conflict_order()));
    v
}

impl PushContext {
    /// Indexes a snapshot; its ServiceEntries and WorkloadEntries are the services
    /// ([`ServiceRegistry::from_snapshot`]).
    pub fn new(mesh: MeshConfig, snapshot: Arc<Snapshot>) -> PushContext {
        let registry = Arc::new(ServiceRegistry::from_snapshot(&snapshot));
        PushContext::with_services(mesh, snapshot, registry)
    }

    /// Indexes a config snapshot, with the services of `registry` (from registries outside the
    /// config store, usually merged by `mesh-registry`'s aggregate, ServiceEntries included)
    /// instead of the snapshot's ServiceEntries.
    pub fn with_services(
        mesh: MeshConfig,
        snapshot: Arc<Snapshot>,
        registry: Arc<ServiceRegistry>,
    ) -> PushContext {
        let virtual_services = sorted(&snapshot, Kind::VirtualService);
        let destination_rules = sorted(&snapshot, Kind::DestinationRule);
        let suffix = mesh_model::host::DEFAULT_DOMAIN_SUFFIX;
        let mut dr_index: HashMap<String, HostIndex> = HashMap::new();
        let mut selector_drs = std::collections::HashSet::new();
        for (i, c) in destination_rules.iter().enumerate() {
            if let Config::DestinationRule(dr) = c.as_ref() {
                let ns = dr.metadata.namespace();
                if dr.spec.workload_selector.is_some() {
                    selector_drs.insert(ns.to_string());
                }
                let host = mesh_model::host::resolve_short_name(&dr.spec.host, ns, suffix);
                dr_index.entry(ns.to_string()).or_default().add(host, i);
            }
        }
        let mut mesh_vs_index = HostIndex::default();
        for (i, c) in virtual_services.iter().enumerate() {
            if let Config::VirtualService(vs) = c.as_ref() {
                let to_mesh =
                    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
                if !to_mesh {
                    continue;
                }
                let ns = vs.metadata.namespace();
                for h in &vs.spec.hosts {
                    mesh_vs_index.add(mesh_model::host::resolve_short_name(h, ns, suffix), i);
                }
            }
        }
        let dynamic_dns = registry
            .services()
            .any(|s| s.resolution == mesh_model::networking::service_entry::Resolution::DynamicDns);
        let peer_authentications = crate::security::peer::PeerAuthentications::new(
            &sorted(&snapshot, Kind::PeerAuthentication),
            &mesh.root_namespace,
        );
        PushContext {
            peer_authentications,
            authorization_policies: sorted(&snapshot, Kind::AuthorizationPolicy),
            request_authentications: sorted(&snapshot, Kind::RequestAuthentication),
            jwks: BTreeMap::new(),
            credentials: Arc::default(),
            registry,
            dynamic_dns,
            networks: mesh_model::MeshNetworks::default(),
            virtual_services,
            destination_rules,
            gateways: sorted(&snapshot, Kind::Gateway),
            sidecars: sorted(&snapshot, Kind::Sidecar),
            dr_index,
            mesh_vs_index,
            selector_drs,
            dr_memo: std::sync::Mutex::new(HashMap::new()),
            mesh,
            snapshot,
        }
    }

    /// With the mesh's networks (istiod's split horizon): an endpoint on another network than
    /// the proxy's, when that network has gateways, is replaced by those gateways (reached
    /// over Istio mTLS, which the gateway routes by SNI to the endpoint; the endpoint's weight
    /// split evenly over them, every weight scaled by the least common multiple of the gateway
    /// counts), or left out when it does not accept mTLS. An endpoint's network is its own
    /// `network`, else the first network whose `fromCidr` contains its address.
    #[must_use]
    pub fn with_networks(mut self, networks: mesh_model::MeshNetworks) -> PushContext {
        self.networks = networks;
        self
    }

    /// With the JWKS documents of RequestAuthentications' `jwksUri`s (by URI), as the caller
    /// fetched them (istiod fetches and inlines them; Envoy never fetches). A rule with an
    /// `issuer` and no `jwksUri` is looked up under its OpenID configuration URL
    /// ([`crate::jwks::JwksSource::key`]). A rule whose keys are neither inline nor here gets
    /// keys nobody holds: every token fails, token-less requests pass, as in istiod when a
    /// fetch fails.
    #[must_use]
    pub fn with_jwks(mut self, jwks: BTreeMap<String, String>) -> PushContext {
        self.jwks = jwks;
        self
    }

    /// With the credentials gateways' `credentialName`s refer to: each gateway gets the ones
    /// its listeners name over its ADS stream, as SDS secrets (`kubernetes://NAME`).
    #[must_use]
    pub fn with_credentials(
        mut self,
        credentials: Arc<crate::credentials::Credentials>,
    ) -> PushContext {
        self.credentials = credentials;
        self
    }

    /// The `jwksUri`s of every RequestAuthentication rule without inline keys (what the caller
    /// should fetch for [`PushContext::with_jwks`]). Rules with an issuer and no `jwksUri`
    /// are not listed: [`crate::jwks::sources`] lists those too.
    pub fn jwks_uris(&self) -> std::collections::BTreeSet<String> {
        self.request_authentications
            .iter()
            .filter_map(|c| match c.as_ref() {
                Config::RequestAuthentication(r) => Some(r),
                _ => None,
            })
            .flat_map(|r| r.spec.jwt_rules.iter())
            .filter(|j| j.jwks.as_deref().is_none_or(str::is_empty))
            .filter_map(|j| j.jwks_uri.clone())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Problems in the security policies of this snapshot that make translation skip a rule,
    /// a value or a provider, as istiod does (each names the policy and the field path). The
    /// rest of the policy, and every other policy, still apply.
    pub fn policy_diagnostics(&self) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        for c in &self.authorization_policies {
            if let Config::AuthorizationPolicy(p) = c.as_ref() {
                let http = crate::security::authz::http_filters(&[p], &self.mesh);
                let tcp = crate::security::authz::network_filters(&[p], &self.mesh);
                for d in http.diagnostics.iter().chain(&tcp.diagnostics) {
                    out.insert(d.to_string());
                }
            }
        }
        out.into_iter().collect()
    }

    /// Whether any network has a gateway (Istio's multi-network mode).
    pub(crate) fn multi_network(&self) -> bool {
        self.networks
            .networks
            .values()
            .any(|n| !n.gateways.is_empty())
    }

    /// The domain suffix of service host names.
    pub fn domain_suffix(&self) -> &str {
        mesh_model::host::DEFAULT_DOMAIN_SUFFIX
    }
}

/// The xDS resources for one proxy, keyed by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// CDS.
    pub clusters: BTreeMap<String, Cluster>,
    /// EDS, for every EDS cluster.
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// LDS.
    pub listeners: BTreeMap<String, Listener>,
    /// RDS, for every route config a listener names.
    pub routes: BTreeMap<String, RouteConfiguration>,
    /// SDS over ADS: the gateway credentials (`credentialName`) the listeners name.
    pub secrets:
        BTreeMap<String, envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>,
}

/// Translates the configuration one proxy sees.
///
/// ```
/// use std::sync::Arc;
/// use mesh_model::{ConfigStore, MeshConfig, parse_str};
/// use mesh_xds::{Proxy, PushContext, translate};
///
/// let store = ConfigStore::new();
/// store.apply_all(parse_str("
/// apiVersion: networking.istio.io/v1
/// kind: ServiceEntry
/// metadata: {name: reviews, namespace: shop}
/// spec:
///   hosts: [reviews.shop.svc.cluster.local]
///   location: MESH_INTERNAL
///   resolution: STATIC
///   ports: [{number: 9080, name: http, protocol: HTTP}]
///   endpoints: [{address: 10.0.0.1}]
/// ", "x.yaml"));
/// let ctx = PushContext::new(MeshConfig::default(), store.snapshot());
/// let out = translate(&ctx, &Proxy::default());
/// assert!(out.clusters.contains_key("outbound|9080||reviews.shop.svc.cluster.local"));
/// assert!(out.endpoints.contains_key("outbound|9080||reviews.shop.svc.cluster.local"));
/// assert!(out.consistent().is_ok());
/// ```
pub fn translate(ctx: &PushContext, proxy: &Proxy) -> Resources {
    let mut out = Resources::default();
    translate_into(ctx, proxy, &mut out);
    out
}

/// Where translation puts each resource as soon as it is built: typed [`Resources`] for
/// inspection, or an encoder that keeps only the bytes (see
/// [`translate_snapshot`](crate::translate_snapshot)).
/// Produces virtual hosts one by one, handing each to the function it is given.
pub(crate) type VhostSource<'a> = dyn FnMut(&mut dyn FnMut(VirtualHost)) + 'a;

pub(crate) trait Sink {
    fn cluster(&mut self, c: Cluster);
    /// The cluster `name` made from a shared template and its own `extras` (the encoder copies
    /// the template's bytes instead of building and encoding a message).
    fn templated_cluster(
        &mut self,
        name: String,
        template: &cluster::ClusterTemplate,
        extras: Option<&cluster::ClusterExtras>,
    ) {
        self.cluster(template.instantiate(name, extras));
    }
    fn endpoint(&mut self, e: ClusterLoadAssignment);
    /// An endpoint assignment (the encoder writes its bytes without building the message).
    fn assignment(&mut self, a: &endpoint::Assignment<'_>) {
        self.endpoint(a.to_message());
    }
    fn listener(&mut self, l: Listener);
    fn route(&mut self, r: RouteConfiguration);
    /// A route configuration whose virtual hosts `vhosts` produces one by one (handing each to
    /// the function it is given): the encoder encodes each as it comes and never holds them
    /// all. `header` has no virtual hosts.
    fn route_streamed(&mut self, header: RouteConfiguration, vhosts: &mut VhostSource<'_>) {
        let mut rc = header;
        vhosts(&mut |v| rc.virtual_hosts.push(v));
        self.route(rc);
    }
    /// Whether a route config of this name was already emitted (listeners share them).
    fn has_route(&self, name: &str) -> bool;
    /// A secret served over ADS.
    fn secret(&mut self, s: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret);
}

impl Sink for Resources {
    fn cluster(&mut self, c: Cluster) {
        self.clusters.insert(c.name.clone(), c);
    }
    fn endpoint(&mut self, e: ClusterLoadAssignment) {
        self.endpoints.insert(e.cluster_name.clone(), e);
    }
    fn listener(&mut self, l: Listener) {
        self.listeners.insert(l.name.clone(), l);
    }
    fn route(&mut self, r: RouteConfiguration) {
        self.routes.insert(r.name.clone(), r);
    }
    fn has_route(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }
    fn secret(
        &mut self,
        s: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret,
    ) {
        self.secrets.insert(s.name.clone(), s);
    }
}

pub(crate) fn translate_into(ctx: &PushContext, proxy: &Proxy, out: &mut dyn Sink) {
    match proxy.proxy_type {
        ProxyType::Sidecar => {
            let scope = SidecarScope::new(ctx, proxy);
            cluster::sidecar_clusters(ctx, proxy, &scope, out);
            let lx = listener::ListenerContext {
                ctx,
                proxy,
                scope: &scope,
            };
            listener::sidecar_listeners(lx, out);
        }
        ProxyType::Router => {
            let scope = SidecarScope::gateway(ctx, proxy);
            cluster::sidecar_clusters(ctx, proxy, &scope, out);
            if listener::has_auto_passthrough(ctx, proxy) {
                cluster::sni_dnat_clusters(ctx, proxy, &scope, out);
            }
            let lx = listener::ListenerContext {
                ctx,
                proxy,
                scope: &scope,
            };
            listener::gateway_listeners(lx, out);
        }
    }
}

#[cfg(feature = "cache")]
/// Translates again only the EDS assignments of the services `only` accepts (for a change
/// that touched nothing but their endpoints); the sink receives their clusters too.
pub(crate) fn assignments_into(
    ctx: &PushContext,
    proxy: &Proxy,
    only: &dyn Fn(&crate::registry::Service) -> bool,
    out: &mut dyn Sink,
) {
    match proxy.proxy_type {
        ProxyType::Sidecar => {
            let scope = SidecarScope::new(ctx, proxy);
            cluster::outbound_assignments(ctx, proxy, &scope, false, only, out);
        }
        ProxyType::Router => {
            let scope = SidecarScope::gateway(ctx, proxy);
            let sni_dnat = listener::has_auto_passthrough(ctx, proxy);
            cluster::outbound_assignments(ctx, proxy, &scope, sni_dnat, only, out);
        }
    }
}
