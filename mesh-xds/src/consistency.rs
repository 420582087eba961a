//! The invariants Envoy relies on, checked on translated resources: every cluster a route or
//! listener names exists, every EDS cluster has its assignment, every route config a listener
//! names exists, and names match the keys they are stored under.

use std::collections::BTreeSet;

use crate::translate::Resources;

/// A broken output invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Inconsistency {
    /// A route points at a cluster that is not in the output.
    #[error("route config {route:?} references missing cluster {cluster:?}")]
    MissingCluster {
        /// The route config.
        route: String,
        /// The cluster.
        cluster: String,
    },
    /// A resource's bytes are not a valid message of its type.
    #[error("{type_url} {name:?} does not decode: {error}")]
    Undecodable {
        /// The resource's type URL.
        type_url: String,
        /// The resource's name.
        name: String,
        /// What prost said.
        error: String,
    },
    /// An EDS cluster has no ClusterLoadAssignment.
    #[error("EDS cluster {0:?} has no endpoint assignment")]
    MissingAssignment(String),
    /// A listener names a route config that is not in the output.
    #[error("listener {listener:?} references missing route config {route:?}")]
    MissingRoute {
        /// The listener.
        listener: String,
        /// The route config.
        route: String,
    },
    /// A name differs from the key it is stored under.
    #[error("resource stored as {key:?} is named {name:?}")]
    NameMismatch {
        /// The key.
        key: String,
        /// The resource's own name.
        name: String,
    },
    /// A listener's TCP proxy points at a missing cluster.
    #[error("listener {listener:?} references missing cluster {cluster:?}")]
    ListenerCluster {
        /// The listener.
        listener: String,
        /// The cluster.
        cluster: String,
    },
}

impl Resources {
    /// Checks the invariants Envoy needs: every route's clusters exist, every EDS cluster has its
    /// assignment, every RDS name a listener references exists, names match keys.
    pub fn consistent(&self) -> Result<(), Vec<Inconsistency>> {
        let mut problems = Vec::new();
        for (k, c) in &self.clusters {
            if &c.name != k {
                problems.push(Inconsistency::NameMismatch {
                    key: k.clone(),
                    name: c.name.clone(),
                });
            }
            if crate::translate::cluster::is_eds(c) && !self.endpoints.contains_key(k) {
                problems.push(Inconsistency::MissingAssignment(k.clone()));
            }
        }
        for (k, r) in &self.routes {
            if &r.name != k {
                problems.push(Inconsistency::NameMismatch {
                    key: k.clone(),
                    name: r.name.clone(),
                });
            }
            for cl in crate::translate::route::referenced_clusters(r) {
                if !self.clusters.contains_key(&cl) {
                    problems.push(Inconsistency::MissingCluster {
                        route: k.clone(),
                        cluster: cl,
                    });
                }
            }
        }
        for (k, l) in &self.listeners {
            if &l.name != k {
                problems.push(Inconsistency::NameMismatch {
                    key: k.clone(),
                    name: l.name.clone(),
                });
            }
            let (rds, clusters) = crate::translate::listener::references(l);
            for r in rds {
                if !self.routes.contains_key(&r) {
                    problems.push(Inconsistency::MissingRoute {
                        listener: k.clone(),
                        route: r,
                    });
                }
            }
            for c in clusters {
                if !self.clusters.contains_key(&c) {
                    problems.push(Inconsistency::ListenerCluster {
                        listener: k.clone(),
                        cluster: c,
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Names of the route configs the listeners reference.
    pub fn referenced_routes(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .flat_map(|l| crate::translate::listener::references(l).0)
            .collect()
    }
}
