//! [`ConfigStore`]: an in-memory store of validated resources with a change-event stream.
//!
//! Keys are (kind, namespace, name). Every write validates first: an invalid resource is
//! rejected with its findings and the store keeps the previous (last good) version, so one bad
//! resource never disturbs the good ones. Each accepted change bumps the store revision and is
//! announced on a broadcast channel; a subscriber that falls behind gets `Lagged` and should
//! resynchronise from [`ConfigStore::snapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::broadcast;

use crate::config::Config;
use crate::meta::{Kind, ResourceKey};
use crate::parse::ParseOutput;
use crate::validate::{Finding, ResourceRef, ValidationContext, validate_with};

/// How many events a slow subscriber may fall behind before it sees `Lagged`.
pub const EVENT_CAPACITY: usize = 4096;

/// What happened to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// It is new.
    Added,
    /// Its content changed.
    Updated,
    /// It was removed.
    Deleted,
}

/// One accepted change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEvent {
    /// Store revision after the change (strictly increasing).
    pub revision: u64,
    /// The resource.
    pub key: ResourceKey,
    /// What happened.
    pub change: Change,
}

/// A resource the store refused, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The resource.
    pub resource: ResourceRef,
    /// Its findings (at least one error).
    pub findings: Vec<Finding>,
}

/// The outcome of applying many resources at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Keys added or updated.
    pub changed: Vec<ResourceKey>,
    /// Keys whose content was already current.
    pub unchanged: Vec<ResourceKey>,
    /// Keys removed (by [`ConfigStore::sync`]).
    pub deleted: Vec<ResourceKey>,
    /// Resources refused; the store kept their previous version if it had one.
    pub rejected: Vec<Rejected>,
    /// Warnings on accepted resources, and findings about documents that were not resources.
    pub warnings: Vec<Finding>,
}

/// An immutable view of the store at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The revision.
    pub revision: u64,
    /// Every resource, ordered by key.
    pub resources: BTreeMap<ResourceKey, Arc<Config>>,
}

impl Snapshot {
    /// The resources of one kind, in key order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Arc<Config>> {
        self.resources
            .range(ResourceKey::new(kind, "", "")..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    resources: BTreeMap<ResourceKey, Arc<Config>>,
    cached: Option<Arc<Snapshot>>,
}

/// The in-memory config store. Cheap to share behind an `Arc`.
///
/// ```
/// use mesh_model::{ConfigStore, parse_str};
/// let store = ConfigStore::new();
/// let mut events = store.subscribe();
/// let parsed = parse_str("
/// apiVersion: networking.istio.io/v1
/// kind: DestinationRule
/// metadata: {name: good}
/// spec: {host: reviews}
/// ---
/// apiVersion: networking.istio.io/v1
/// kind: DestinationRule
/// metadata: {name: bad}
/// spec: {host: \"a..b\"}
/// ", "x.yaml");
/// let report = store.apply_all(parsed);
/// assert_eq!(report.changed.len(), 1);
/// assert_eq!(report.rejected[0].resource.name, "bad");
/// assert_eq!(events.try_recv().unwrap().key.name, "good");
/// ```
#[derive(Debug)]
pub struct ConfigStore {
    state: RwLock<State>,
    events: broadcast::Sender<ConfigEvent>,
    ctx: ValidationContext,
}

impl Default for ConfigStore {
    fn default() -> Self {
        ConfigStore::new()
    }
}

impl ConfigStore {
    /// An empty store validating with the default context.
    pub fn new() -> Self {
        ConfigStore::with_context(ValidationContext::default())
    }

    /// An empty store validating with `ctx` (e.g. a different root namespace).
    pub fn with_context(ctx: ValidationContext) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        ConfigStore {
            state: RwLock::new(State::default()),
            events,
            ctx,
        }
    }

    /// A receiver of every change accepted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ConfigEvent> {
        self.events.subscribe()
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.read(|s| s.revision)
    }

    /// One resource.
    pub fn get(&self, key: &ResourceKey) -> Option<Arc<Config>> {
        self.read(|s| s.resources.get(key).cloned())
    }

    /// How many resources are stored.
    pub fn len(&self) -> usize {
        self.read(|s| s.resources.len())
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current contents as an immutable snapshot (shared until the next change).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        if let Some(s) = self.read(|s| s.cached.clone()) {
            return s;
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let snap = Arc::new(Snapshot {
            revision: state.revision,
            resources: state.resources.clone(),
        });
        state.cached = Some(snap.clone());
        snap
    }

    /// Validates and stores one resource. On errors the resource is refused and any previous
    /// version stays; warnings are returned with success.
    pub fn apply(&self, config: Config) -> Result<(Option<Change>, Vec<Finding>), Rejected> {
        let findings = validate_with(&config, &self.ctx);
        if findings.iter().any(Finding::is_error) {
            return Err(Rejected {
                resource: ResourceRef::from(&config.key()),
                findings,
            });
        }
        let change = self.write(|s| s.put(config));
        Ok((change, findings))
    }

    /// Removes a resource; returns it if it was there.
    pub fn delete(&self, key: &ResourceKey) -> Option<Arc<Config>> {
        let removed = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let removed = state.resources.remove(key);
            if removed.is_some() {
                state.revision += 1;
                state.cached = None;
                Some((removed, state.revision))
            } else {
                None
            }
        };
        let (removed, revision) = removed?;
        let _ = self.events.send(ConfigEvent {
            revision,
            key: key.clone(),
            change: Change::Deleted,
        });
        removed
    }

    /// Applies every resource of a parse; each is accepted or refused on its own.
    pub fn apply_all(&self, parsed: ParseOutput) -> ApplyReport {
        let mut report = ApplyReport {
            warnings: parsed.findings.clone(),
            ..Default::default()
        };
        // Documents that failed to parse are errors about resources we could not read.
        report
            .rejected
            .extend(parsed.findings.iter().filter(|f| f.is_error()).map(|f| {
                Rejected {
                    resource: f
                        .resource
                        .clone()
                        .unwrap_or_else(|| ResourceRef::new("", "", "")),
                    findings: vec![f.clone()],
                }
            }));
        report.warnings.retain(|f| !f.is_error());
        for res in parsed.resources {
            let key = res.config.key();
            let findings = res.check(&self.ctx);
            if findings.iter().any(Finding::is_error) {
                report.rejected.push(Rejected {
                    resource: ResourceRef::from(&key),
                    findings,
                });
                continue;
            }
            report.warnings.extend(findings);
            match self.write(|s| s.put(res.config)) {
                Some(_) => report.changed.push(key),
                None => report.unchanged.push(key),
            }
        }
        report
    }

    /// Makes the store hold exactly what `parsed` holds, as a directory reload does: valid
    /// resources are applied, stored keys that no longer appear are deleted, and keys whose new
    /// version is invalid keep their last good version. When a document cannot be identified at
    /// all (a syntax error), nothing is deleted until it is fixed.
    pub fn sync(&self, parsed: ParseOutput) -> ApplyReport {
        let present: BTreeSet<ResourceKey> =
            parsed.resources.iter().map(|r| r.config.key()).collect();
        // A document that failed to parse still names a resource: keep its last good version.
        let unreadable: BTreeSet<(String, String, String)> = parsed
            .findings
            .iter()
            .filter(|f| f.is_error())
            .filter_map(|f| f.resource.as_ref())
            .map(|r| (r.kind.clone(), r.namespace.clone(), r.name.clone()))
            .collect();
        // A document that cannot even be identified (a YAML syntax error, say) may hold any
        // resource: deleting "what disappeared" would drop its last good versions, so this
        // round deletes nothing.
        let unidentified = parsed
            .findings
            .iter()
            .any(|f| f.is_error() && f.resource.is_none());
        let mut report = self.apply_all(parsed);
        if unidentified {
            return report;
        }
        let stale: Vec<ResourceKey> = self.read(|s| {
            s.resources
                .keys()
                .filter(|k| !present.contains(k))
                .filter(|k| {
                    !unreadable.contains(&(
                        k.kind.name().to_string(),
                        k.namespace.clone(),
                        k.name.clone(),
                    ))
                })
                .cloned()
                .collect()
        });
        for key in stale {
            if self.delete(&key).is_some() {
                report.deleted.push(key);
            }
        }
        report
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write(
        &self,
        f: impl FnOnce(&mut State) -> Option<(Change, ResourceKey, u64)>,
    ) -> Option<Change> {
        let outcome = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            f(&mut state)
        };
        let (change, key, revision) = outcome?;
        let _ = self.events.send(ConfigEvent {
            revision,
            key,
            change,
        });
        Some(change)
    }
}

impl State {
    fn put(&mut self, config: Config) -> Option<(Change, ResourceKey, u64)> {
        let key = config.key();
        let change = match self.resources.get(&key) {
            Some(old) if **old == config => return None,
            Some(_) => Change::Updated,
            None => Change::Added,
        };
        self.revision += 1;
        self.cached = None;
        self.resources.insert(key.clone(), Arc::new(config));
        Some((change, key, self.revision))
    }
}
