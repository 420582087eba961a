//! The object store: one revision counter, objects per resource type, an event-history ring
//! with a compaction floor, and snapshots at past revisions rebuilt from that history.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use super::resources::ResourceType;
use super::status::Status;

/// Storage key of a resource type: `(group, plural)`, shared by its served versions.
pub(crate) type Storage = (&'static str, &'static str);
/// Object key inside a resource type: `(namespace, name)`; namespace `""` if cluster-scoped.
pub(crate) type Key = (String, String);

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of the history ring.
#[derive(Clone, Debug)]
pub(crate) struct HistoryEvent {
    pub(crate) rv: u64,
    pub(crate) storage: Storage,
    pub(crate) key: Key,
    pub(crate) kind: EventType,
    /// The object after the event (for DELETED: the last state, stamped with the delete's RV).
    pub(crate) object: Value,
    /// The object before the event (`None` for ADDED).
    pub(crate) previous: Option<Value>,
}

/// Most events kept; older ones are dropped and the floor rises with them.
const HISTORY_CAPACITY: usize = 100_000;

/// All state behind the server's lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) revision: u64,
    /// Watches and lists at an RV below this are expired (410).
    pub(crate) floor: u64,
    pub(crate) objects: BTreeMap<Storage, BTreeMap<Key, Value>>,
    pub(crate) history: VecDeque<HistoryEvent>,
    uid_counter: u64,
}

fn now_rfc3339() -> String {
    // Kubernetes timestamps have whole seconds.
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Strips `kind`/`apiVersion` as the server does for list items.
pub(crate) fn without_type(mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    obj
}

/// Sets `kind`/`apiVersion` first, as single gets and watch events carry them.
pub(crate) fn with_type(obj: &Value, t: &ResourceType) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), json!(t.kind));
    out.insert("apiVersion".into(), json!(t.api_version()));
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if k != "kind" && k != "apiVersion" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn name_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn record(&mut self, ev: HistoryEvent) {
        self.history.push_back(ev);
        while self.history.len() > HISTORY_CAPACITY {
            if let Some(old) = self.history.pop_front() {
                self.floor = self.floor.max(old.rv);
            }
        }
    }

    /// Raises the compaction floor to `rv` (clamped to the current revision) and drops older history.
    pub(crate) fn compact(&mut self, rv: u64) {
        self.floor = self.floor.max(rv.min(self.revision));
        while self.history.front().is_some_and(|e| e.rv <= self.floor) {
            self.history.pop_front();
        }
    }

    /// Gets one object.
    pub(crate) fn get(&self, t: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&t.storage())?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Creates `obj` (namespace already resolved). 409 if it exists.
    pub(crate) fn create(
        &mut self,
        t: &ResourceType,
        ns: &str,
        obj: Value,
    ) -> Result<Value, Status> {
        let name = name_of(&obj)
            .ok_or_else(|| {
                Status::invalid(t, "", "metadata.name", "name or generateName is required")
            })?
            .to_string();
        let key = (ns.to_string(), name.clone());
        if self
            .objects
            .get(&t.storage())
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(Status::already_exists(t, &name));
        }
        let rv = self.next_rv();
        self.uid_counter += 1;
        let mut obj = without_type(obj);
        let meta = obj
            .as_object_mut()
            .and_then(|m| m.get_mut("metadata"))
            .and_then(Value::as_object_mut)
            .ok_or_else(|| Status::bad_request("metadata must be an object"))?;
        if t.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{:012x}", self.uid_counter)),
        );
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        self.objects
            .entry(t.storage())
            .or_default()
            .insert(key.clone(), obj.clone());
        self.record(HistoryEvent {
            rv,
            storage: t.storage(),
            key,
            kind: EventType::Added,
            object: obj.clone(),
            previous: None,
        });
        Ok(obj)
    }

    /// Replaces an existing object. 404 if absent; 409 on a stale `metadata.resourceVersion`.
    pub(crate) fn update(
        &mut self,
        t: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
    ) -> Result<Value, Status> {
        let key = (ns.to_string(), name.to_string());
        let old = self
            .objects
            .get(&t.storage())
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| Status::not_found(t, name))?;
        if name_of(&obj).is_some_and(|n| n != name) {
            return Err(Status::bad_request(&format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&obj).unwrap_or_default()
            )));
        }
        let sent_rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let old_rv = old
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if sent_rv.is_some_and(|rv| rv != old_rv) {
            return Err(Status::conflict(
                t,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let mut obj = without_type(obj);
        let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = obj.get("spec") != old.get("spec");
        let rv = self.next_rv();
        let meta = obj
            .as_object_mut()
            .and_then(|m| {
                if !m.contains_key("metadata") {
                    m.insert("metadata".into(), json!({}));
                }
                m.get_mut("metadata")
            })
            .and_then(Value::as_object_mut)
            .ok_or_else(|| Status::bad_request("metadata must be an object"))?;
        meta.insert("name".into(), json!(name));
        if t.namespaced {
            meta.insert("namespace".into(), json!(ns));
        }
        for k in ["uid", "creationTimestamp"] {
            if let Some(v) = old_meta.get(k) {
                meta.insert(k.into(), v.clone());
            }
        }
        meta.insert(
            "generation".into(),
            json!(if spec_changed {
                generation + 1
            } else {
                generation
            }),
        );
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects
            .entry(t.storage())
            .or_default()
            .insert(key.clone(), obj.clone());
        self.record(HistoryEvent {
            rv,
            storage: t.storage(),
            key,
            kind: EventType::Modified,
            object: obj.clone(),
            previous: Some(old),
        });
        Ok(obj)
    }

    /// Deletes an object, returning its last state stamped with the delete's new RV.
    pub(crate) fn delete(
        &mut self,
        t: &ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<Value, Status> {
        let key = (ns.to_string(), name.to_string());
        let old = self
            .objects
            .get_mut(&t.storage())
            .and_then(|m| m.remove(&key))
            .ok_or_else(|| Status::not_found(t, name))?;
        let rv = self.next_rv();
        let mut last = old.clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        self.record(HistoryEvent {
            rv,
            storage: t.storage(),
            key,
            kind: EventType::Deleted,
            object: last.clone(),
            previous: Some(old),
        });
        Ok(last)
    }

    /// The objects of `t` as they were at `rv` (sorted by key), or `None` if `rv` is below the
    /// floor (compacted).
    pub(crate) fn snapshot(&self, t: &ResourceType, rv: u64) -> Option<BTreeMap<Key, Value>> {
        if rv < self.floor {
            return None;
        }
        let mut objs = self.objects.get(&t.storage()).cloned().unwrap_or_default();
        for ev in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if ev.storage != t.storage() {
                continue;
            }
            match (&ev.kind, &ev.previous) {
                (EventType::Added, _) => {
                    objs.remove(&ev.key);
                }
                (_, Some(prev)) => {
                    objs.insert(ev.key.clone(), prev.clone());
                }
                (_, None) => {}
            }
        }
        Some(objs)
    }

    /// History events of `t` with an RV above `after`.
    pub(crate) fn events_after(&self, t: &ResourceType, after: u64) -> Vec<HistoryEvent> {
        let start = self.history.partition_point(|e| e.rv <= after);
        self.history
            .range(start..)
            .filter(|e| e.storage == t.storage())
            .cloned()
            .collect()
    }

    /// Restarts: optionally resets the revision (history is then cleared too) or clears history.
    pub(crate) fn restart(&mut self, revision: Option<u64>, clear_history: bool) {
        if let Some(rv) = revision {
            self.revision = rv;
            self.history.clear();
            self.floor = rv;
        } else if clear_history {
            self.history.clear();
            self.floor = self.revision;
        }
    }
}
