//! [`Snapshot`]: an immutable, versioned set of encoded resources for one proxy view.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::resource::{self, EncodedResource, encode_canonical};
use crate::translate::{Inconsistency, Resources};

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
        let reuse = |type_url: &str, e: Arc<EncodedResource>| -> Arc<EncodedResource> {
            match previous.and_then(|p| p.get(type_url, &e.name)) {
                Some(old) if old.version == e.version && old.any == e.any => old.clone(),
                _ => e,
            }
        };
        let mut resources: BTreeMap<String, TypedResources> = BTreeMap::new();
        let mut put = |type_url: &str, e: Arc<EncodedResource>| {
            let e = reuse(type_url, e);
            resources
                .entry(type_url.to_string())
                .or_default()
                .insert(e.name.clone(), e);
        };
        for (n, c) in &r.clusters {
            put(resource::CLUSTER, EncodedResource::new(n, c));
        }
        for (n, c) in &r.endpoints {
            put(resource::ENDPOINT, EncodedResource::new(n, c));
        }
        for (n, l) in &r.listeners {
            put(resource::LISTENER, EncodedResource::new(n, l));
        }
        for (n, rc) in &r.routes {
            put(
                resource::ROUTE,
                EncodedResource::from_bytes(n, resource::ROUTE.to_string(), encode_canonical(rc)),
            );
        }
        Snapshot {
            version: version.into(),
            resources,
        }
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
