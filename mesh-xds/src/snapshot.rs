//! [`Snapshot`]: an immutable, versioned set of encoded resources for one proxy view.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use crate::proxy::Proxy;
use crate::resource::{self, EncodedResource, encode_canonical_owned};
use crate::translate::{Inconsistency, PushContext, Resources, Sink};

/// Resources by name, for one type.
pub type TypedResources = BTreeMap<String, Arc<EncodedResource>>;

/// An immutable, versioned set of resources, shared by every stream of the same view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// A version string for the whole snapshot (diagnostics; streams compare per resource).
    pub version: String,
    /// Resources by type URL, then by name.
    pub resources: BTreeMap<String, TypedResources>,
}

impl Snapshot {
    /// Encodes translated resources once. Resources whose bytes equal one in `previous` reuse
    /// its allocation, so unchanged resources are shared across pushes.
    pub fn from_resources(
        version: impl Into<String>,
        r: &Resources,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let mut enc = Encoder::new(previous);
        for c in r.clusters.values() {
            enc.cluster(c.clone());
        }
        for c in r.endpoints.values() {
            enc.endpoint(c.clone());
        }
        for l in r.listeners.values() {
            enc.listener(l.clone());
        }
        for rc in r.routes.values() {
            enc.route(rc.clone());
        }
        enc.finish(version.into())
    }

    /// One resource.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<EncodedResource>> {
        self.resources.get(type_url).and_then(|m| m.get(name))
    }

    /// All resources of a type.
    pub fn of_type(&self, type_url: &str) -> Option<&TypedResources> {
        self.resources.get(type_url)
    }

    /// Checks that every EDS resource a cluster needs, and every route a listener needs, is
    /// present (decoding the shared bytes).
    pub fn consistent(&self) -> Result<(), Vec<Inconsistency>> {
        crate::translate::decode_resources(self).consistent()
    }
}

/// Translates the configuration one proxy sees straight into a snapshot: each resource is
/// encoded as soon as it is built and only its bytes are kept, which is how the server
/// translates (a typed [`Resources`] of a large mesh holds hundreds of megabytes of prost
/// structs). Resources whose bytes equal one in `previous` reuse its allocation.
///
/// Gives the same resources as `Snapshot::from_resources(version, &translate(ctx, proxy),
/// previous)`.
pub fn translate_snapshot(
    ctx: &PushContext,
    proxy: &Proxy,
    version: impl Into<String>,
    previous: Option<&Snapshot>,
) -> Snapshot {
    let mut enc = Encoder::new(previous);
    crate::translate::translate_into(ctx, proxy, &mut enc);
    enc.finish(version.into())
}

/// A translation sink that encodes each resource on arrival.
struct Encoder<'a> {
    previous: Option<&'a Snapshot>,
    clusters: TypedResources,
    endpoints: TypedResources,
    listeners: TypedResources,
    routes: TypedResources,
}

impl<'a> Encoder<'a> {
    fn new(previous: Option<&'a Snapshot>) -> Self {
        Encoder {
            previous,
            clusters: TypedResources::new(),
            endpoints: TypedResources::new(),
            listeners: TypedResources::new(),
            routes: TypedResources::new(),
        }
    }

    fn put(
        previous: Option<&Snapshot>,
        map: &mut TypedResources,
        type_url: &str,
        e: Arc<EncodedResource>,
    ) {
        let e = match previous.and_then(|p| p.get(type_url, &e.name)) {
            Some(old) if old.version == e.version && old.value() == e.value() => old.clone(),
            _ => e,
        };
        map.insert(e.name.clone(), e);
    }

    fn finish(self, version: String) -> Snapshot {
        let mut resources = BTreeMap::new();
        for (t, m) in [
            (resource::CLUSTER, self.clusters),
            (resource::ENDPOINT, self.endpoints),
            (resource::LISTENER, self.listeners),
            (resource::ROUTE, self.routes),
        ] {
            if !m.is_empty() {
                resources.insert(t.to_string(), m);
            }
        }
        Snapshot { version, resources }
    }
}

impl Sink for Encoder<'_> {
    fn cluster(&mut self, c: Cluster) {
        let e = EncodedResource::with_type_url(&c.name, resource::CLUSTER, &c);
        Self::put(self.previous, &mut self.clusters, resource::CLUSTER, e);
    }
    fn endpoint(&mut self, c: ClusterLoadAssignment) {
        let e = EncodedResource::with_type_url(&c.cluster_name, resource::ENDPOINT, &c);
        Self::put(self.previous, &mut self.endpoints, resource::ENDPOINT, e);
    }
    fn listener(&mut self, l: Listener) {
        let e = EncodedResource::with_type_url(&l.name, resource::LISTENER, &l);
        Self::put(self.previous, &mut self.listeners, resource::LISTENER, e);
    }
    fn route(&mut self, r: RouteConfiguration) {
        let name = r.name.clone();
        let e = EncodedResource::from_bytes(&name, resource::ROUTE, &encode_canonical_owned(r));
        Self::put(self.previous, &mut self.routes, resource::ROUTE, e);
    }
    fn has_route(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }
}
