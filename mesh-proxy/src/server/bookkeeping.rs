//! What the config manager remembers of each resource for the admin API: its raw form,
//! version, when it was applied, whether it is warming, and the last rejection.

use std::time::SystemTime;

use bytes::Bytes;

use super::{Shared, State};

/// A rejected update of a resource.
#[derive(Clone, Debug)]
pub(super) struct RejectedEntry {
    pub(super) raw: Bytes,
    pub(super) version: String,
    pub(super) reason: String,
    pub(super) at: SystemTime,
}

/// Whether a resource serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceState {
    /// Serving.
    Active,
    /// Waiting for its dependencies (EDS, RDS).
    Warming,
    /// Only a rejected version exists.
    Rejected,
}

/// One resource as `/config_dump` shows it.
#[derive(Clone, Debug)]
pub struct DumpEntry {
    /// Name.
    pub name: String,
    /// Version of the applied resource.
    pub version: String,
    /// The encoded resource (empty when only a rejected version exists).
    pub raw: Bytes,
    /// When it was applied.
    pub updated: Option<SystemTime>,
    /// Its state.
    pub state: ResourceState,
    /// From xDS (not the bootstrap).
    pub dynamic: bool,
    /// The last rejected update: `(details, when, version, raw)`.
    pub error: Option<(String, SystemTime, String, Bytes)>,
}

/// Every resource, for the admin API.
#[derive(Clone, Debug, Default)]
pub struct Dumps {
    /// Clusters.
    pub clusters: Vec<DumpEntry>,
    /// Listeners.
    pub listeners: Vec<DumpEntry>,
    /// Route configurations.
    pub routes: Vec<DumpEntry>,
    /// Endpoint assignments.
    pub endpoints: Vec<DumpEntry>,
    /// Last CDS version.
    pub cds_version: String,
    /// Last LDS version.
    pub lds_version: String,
}

pub(super) fn collect(st: &State, _shared: &Shared) -> Dumps {
    use crate::xds::type_url;
    let err = |t: &'static str, name: &str| {
        st.rejected
            .get(&(t, name.to_string()))
            .map(|r| (r.reason.clone(), r.at, r.version.clone(), r.raw.clone()))
    };
    let mut d = Dumps {
        cds_version: st.cds_version.clone(),
        lds_version: st.lds_version.clone(),
        ..Default::default()
    };
    for (name, e) in &st.clusters {
        d.clusters.push(DumpEntry {
            name: name.clone(),
            version: e.version.clone(),
            raw: e.raw.clone(),
            updated: Some(e.updated),
            state: if e.warming {
                ResourceState::Warming
            } else {
                ResourceState::Active
            },
            dynamic: e.dynamic,
            error: err(type_url::CLUSTER, name),
        });
    }
    for (name, e) in &st.listeners {
        d.listeners.push(DumpEntry {
            name: name.clone(),
            version: e.version.clone(),
            raw: e.raw.clone(),
            updated: Some(e.updated),
            state: if e.warming {
                ResourceState::Warming
            } else {
                ResourceState::Active
            },
            dynamic: e.dynamic,
            error: err(type_url::LISTENER, name),
        });
    }
    for (name, e) in &st.routes {
        d.routes.push(DumpEntry {
            name: name.clone(),
            version: e.version.clone(),
            raw: e.raw.clone(),
            updated: Some(e.updated),
            state: ResourceState::Active,
            dynamic: true,
            error: err(type_url::ROUTE, name),
        });
    }
    let mut eps: Vec<_> = st.assignments.iter().collect();
    eps.sort_by(|a, b| a.0.cmp(b.0));
    for (name, e) in eps {
        d.endpoints.push(DumpEntry {
            name: name.clone(),
            version: e.version.clone(),
            raw: e.raw.clone(),
            updated: None,
            state: ResourceState::Active,
            dynamic: true,
            error: err(type_url::ENDPOINT, name),
        });
    }
    // Resources that only ever arrived rejected.
    for ((t, name), r) in &st.rejected {
        let (list, known) = match *t {
            type_url::CLUSTER => (&mut d.clusters, st.clusters.contains_key(name)),
            type_url::LISTENER => (&mut d.listeners, st.listeners.contains_key(name)),
            type_url::ROUTE => (&mut d.routes, st.routes.contains_key(name)),
            _ => continue,
        };
        if !known {
            list.push(DumpEntry {
                name: name.clone(),
                version: String::new(),
                raw: Bytes::new(),
                updated: None,
                state: ResourceState::Rejected,
                dynamic: true,
                error: Some((r.reason.clone(), r.at, r.version.clone(), r.raw.clone())),
            });
        }
    }
    let _ = &st.assignments;
    d
}
