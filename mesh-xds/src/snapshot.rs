//! [`Snapshot`]: an immutable, versioned set of encoded resources for one proxy view.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use crate::consistency::Inconsistency;
use crate::proxy::Proxy;
use crate::resource::{self, EncodedResource};
use crate::translate::{PushContext, Resources, Sink};

/// Resources by name, for one type.
pub type TypedResources = BTreeMap<String, Arc<EncodedResource>>;

/// An immutable, versioned set of resources, shared by every stream of the same view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// A version string for the whole snapshot (diagnostics; streams compare per resource).
    pub version: String,
    /// Resources by type URL, then by name. Each type's map is shared: a push that changes
    /// only endpoints keeps the other types' maps of the previous snapshot, and streams skip a
    /// type whose map is the one they last sent from.
    pub resources: BTreeMap<String, Arc<TypedResources>>,
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
        for s in r.secrets.values() {
            enc.secret(s.clone());
        }
        enc.finish(version.into())
    }

    /// One resource.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<EncodedResource>> {
        self.resources.get(type_url).and_then(|m| m.get(name))
    }

    /// All resources of a type.
    pub fn of_type(&self, type_url: &str) -> Option<&TypedResources> {
        self.resources.get(type_url).map(|m| m.as_ref())
    }

    /// All resources of a type, as the shared map itself.
    pub fn shared_type(&self, type_url: &str) -> Option<&Arc<TypedResources>> {
        self.resources.get(type_url)
    }

    /// Decodes the encoded resources back into typed [`Resources`] (for checks and debug
    /// dumps). A resource whose bytes do not decode as its type is an error naming it, never
    /// silently left out; a type this crate does not translate is skipped.
    pub fn decode(&self) -> Result<Resources, Vec<Inconsistency>> {
        use prost::Message;
        fn each<M: Message + Default>(
            s: &Snapshot,
            type_url: &str,
            problems: &mut Vec<Inconsistency>,
        ) -> BTreeMap<String, M> {
            let mut out = BTreeMap::new();
            for (name, e) in s.of_type(type_url).into_iter().flat_map(|m| m.iter()) {
                match M::decode(e.value()) {
                    Ok(m) => {
                        out.insert(name.clone(), m);
                    }
                    Err(error) => problems.push(Inconsistency::Undecodable {
                        type_url: type_url.to_string(),
                        name: name.clone(),
                        error: error.to_string(),
                    }),
                }
            }
            out
        }
        let mut problems = Vec::new();
        let r = Resources {
            clusters: each::<Cluster>(self, resource::CLUSTER, &mut problems),
            endpoints: each::<ClusterLoadAssignment>(self, resource::ENDPOINT, &mut problems),
            listeners: each::<Listener>(self, resource::LISTENER, &mut problems),
            routes: each::<RouteConfiguration>(self, resource::ROUTE, &mut problems),
            secrets: each(self, resource::SECRET, &mut problems),
        };
        if problems.is_empty() {
            Ok(r)
        } else {
            Err(problems)
        }
    }

    /// Checks that every resource decodes, and that every EDS resource a cluster needs and
    /// every route a listener needs is present.
    pub fn consistent(&self) -> Result<(), Vec<Inconsistency>> {
        self.decode()?.consistent()
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

#[cfg(feature = "cache")]
/// `previous` with the EDS assignments of the services `only` accepts translated again, for a
/// change that touched nothing but those services' endpoints (the caller checks that): every
/// other resource is `previous`'s own, shared. Gives the same resources as a full
/// [`translate_snapshot`] would.
pub(crate) fn update_assignments(
    ctx: &PushContext,
    proxy: &Proxy,
    previous: &Snapshot,
    only: &dyn Fn(&crate::registry::Service) -> bool,
    version: String,
) -> Snapshot {
    let mut enc = Encoder::new(Some(previous));
    enc.assignments_only = true;
    crate::translate::assignments_into(ctx, proxy, only, &mut enc);
    let fresh = Encoder::collect(enc.endpoints, previous.of_type(resource::ENDPOINT));
    let mut next = previous.clone();
    next.version = version;
    let unchanged = fresh.iter().all(|(name, e)| {
        previous
            .get(resource::ENDPOINT, name)
            .is_some_and(|o| Arc::ptr_eq(o, e))
    });
    if !unchanged {
        // Only the EDS map is copied; the other types' maps stay shared.
        Arc::make_mut(
            next.resources
                .entry(resource::ENDPOINT.to_string())
                .or_default(),
        )
        .extend(fresh);
    }
    next
}

#[cfg(feature = "server")]
/// Whether two (type map, subscription state) pairs are the same: the same shared map (or
/// both absent) under the same state. Streams use it to skip a type nothing happened to.
pub(crate) fn same_source(
    a: &(Option<Arc<TypedResources>>, u64),
    b: &(Option<Arc<TypedResources>>, u64),
) -> bool {
    a.1 == b.1
        && match (&a.0, &b.0) {
            (None, None) => true,
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
}

/// A translation sink that encodes each resource on arrival. Clusters, endpoints and
/// listeners are collected in lists and sorted once at the end (cheaper than inserting a hundred
/// thousand names into maps one by one), then matched against the previous snapshot in one
/// merge pass.
struct Encoder<'a> {
    previous: Option<&'a Snapshot>,
    clusters: Vec<Arc<EncodedResource>>,
    endpoints: Vec<Arc<EncodedResource>>,
    listeners: Vec<Arc<EncodedResource>>,
    routes: TypedResources,
    secrets: TypedResources,
    /// Keep EDS assignments only (see [`update_assignments`]).
    assignments_only: bool,
}

impl<'a> Encoder<'a> {
    fn new(previous: Option<&'a Snapshot>) -> Self {
        Encoder {
            previous,
            clusters: Vec::new(),
            endpoints: Vec::new(),
            listeners: Vec::new(),
            routes: TypedResources::new(),
            secrets: TypedResources::new(),
            assignments_only: false,
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

    /// Sorts `list` by name (the last of equal names wins, as with map inserts) and reuses the
    /// previous snapshot's resource wherever the bytes are the same.
    fn collect(
        list: Vec<Arc<EncodedResource>>,
        previous: Option<&TypedResources>,
    ) -> TypedResources {
        // A stable sort of (name, position) pairs: one indirection less per comparison than
        // sorting the resources, and translation emits long sorted runs, which the stable sort
        // merges cheaply.
        let mut order: Vec<(&str, usize)> = list
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        order.sort_by(|a, b| a.0.cmp(b.0));
        let order: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
        let mut slots: Vec<Option<Arc<EncodedResource>>> = list.into_iter().map(Some).collect();
        let mut out: Vec<(String, Arc<EncodedResource>)> = Vec::with_capacity(slots.len());
        for e in order.into_iter().filter_map(|i| slots[i].take()) {
            if out.last().is_some_and(|(n, _)| *n == e.name) {
                out.pop();
            }
            out.push((e.name.clone(), e));
        }
        if let Some(previous) = previous {
            let mut old = previous.iter().peekable();
            for (name, e) in &mut out {
                while old.next_if(|(n, _)| n.as_str() < name.as_str()).is_some() {}
                if let Some((n, o)) = old.peek()
                    && *n == name
                    && o.version == e.version
                    && o.value() == e.value()
                {
                    *e = (*o).clone();
                }
            }
        }
        out.into_iter().collect()
    }

    fn finish(self, version: String) -> Snapshot {
        let previous = |t: &str| self.previous.and_then(|p| p.of_type(t));
        let mut resources = BTreeMap::new();
        for (t, m) in [
            (
                resource::CLUSTER,
                Self::collect(self.clusters, previous(resource::CLUSTER)),
            ),
            (
                resource::ENDPOINT,
                Self::collect(self.endpoints, previous(resource::ENDPOINT)),
            ),
            (
                resource::LISTENER,
                Self::collect(self.listeners, previous(resource::LISTENER)),
            ),
            (resource::ROUTE, self.routes),
            (resource::SECRET, self.secrets),
        ] {
            if !m.is_empty() {
                // The previous snapshot's map itself when nothing of the type changed.
                let shared = self
                    .previous
                    .and_then(|p| p.shared_type(t))
                    .filter(|old| {
                        old.len() == m.len()
                            && old
                                .iter()
                                .zip(&m)
                                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
                    })
                    .cloned();
                resources.insert(t.to_string(), shared.unwrap_or_else(|| Arc::new(m)));
            }
        }
        Snapshot { version, resources }
    }
}

impl Sink for Encoder<'_> {
    fn cluster(&mut self, c: Cluster) {
        if self.assignments_only {
            return;
        }
        self.clusters.push(EncodedResource::with_type_url(
            &c.name,
            resource::CLUSTER,
            &c,
        ));
    }
    fn templated_cluster(
        &mut self,
        name: String,
        template: &crate::translate::cluster::ClusterTemplate,
        extras: Option<&crate::translate::cluster::ClusterExtras>,
    ) {
        if self.assignments_only {
            return;
        }
        let len = template.encoded_len_named(&name, extras);
        let e = EncodedResource::from_writer(name, resource::CLUSTER, len, |name, buf| {
            template.encode_named(name, extras, buf)
        });
        // The merged encoding must be prost's, byte for byte (checked in every test run).
        debug_assert_eq!(
            e.value(),
            prost::Message::encode_to_vec(&template.instantiate(e.name.clone(), extras)).as_slice(),
            "CDS encoding of {}",
            e.name
        );
        self.clusters.push(e);
    }
    fn assignment(&mut self, a: &crate::translate::endpoint::Assignment<'_>) {
        let (len, groups) = a.sized();
        let e = EncodedResource::from_writer(
            a.cluster.to_string(),
            resource::ENDPOINT,
            len,
            |_, buf| a.encode_sized(&groups, buf),
        );
        // The hand-written encoding must be prost's, byte for byte (checked in every test run).
        debug_assert_eq!(
            e.value(),
            prost::Message::encode_to_vec(&a.to_message()).as_slice(),
            "EDS encoding of {}",
            a.cluster
        );
        self.endpoints.push(e);
    }
    fn endpoint(&mut self, c: ClusterLoadAssignment) {
        self.endpoints.push(EncodedResource::with_type_url(
            &c.cluster_name,
            resource::ENDPOINT,
            &c,
        ));
    }
    fn listener(&mut self, l: Listener) {
        if self.assignments_only {
            return;
        }
        self.listeners.push(EncodedResource::with_type_url(
            &l.name,
            resource::LISTENER,
            &l,
        ));
    }
    fn route(&mut self, r: RouteConfiguration) {
        let len = prost::Message::encoded_len(&r);
        let e = EncodedResource::from_writer(r.name.clone(), resource::ROUTE, len, |_, buf| {
            crate::encoding::route::encode_canonical_into(r, buf)
        });
        Self::put(self.previous, &mut self.routes, resource::ROUTE, e);
    }
    fn route_streamed(
        &mut self,
        header: RouteConfiguration,
        vhosts: &mut crate::translate::VhostSource<'_>,
    ) {
        // The canonical encoding (see `encode_canonical_into`): the header's fields, then the
        // virtual hosts, each encoded (and dropped) as it arrives.
        let name = header.name.clone();
        let mut value = prost::Message::encode_to_vec(&header);
        let mut scratch = Vec::new();
        vhosts(&mut |v| crate::encoding::route::encode_vhost_field(v, &mut value, &mut scratch));
        let e = EncodedResource::from_bytes(&name, resource::ROUTE, &value);
        Self::put(self.previous, &mut self.routes, resource::ROUTE, e);
    }
    fn has_route(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }
    fn secret(
        &mut self,
        s: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret,
    ) {
        if self.assignments_only {
            return;
        }
        let e = EncodedResource::with_type_url(&s.name, resource::SECRET, &s);
        Self::put(self.previous, &mut self.secrets, resource::SECRET, e);
    }
}
