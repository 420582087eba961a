//! SDS: secrets by name, kept up to date, for the TLS contexts that use them.
//!
//! Each distinct `(kind, sds_config, name)` is one [`SecretEntry`], shared by every filter
//! chain and cluster that names it and dropped with the last of them (Envoy's secret manager
//! shares its SDS providers the same way). An entry holds the last good secret: an update that
//! does not convert, or whose PEM does not load, is NACKed and the previous secret keeps
//! serving.
//!
//! Where secrets come from ([`SdsSource`]):
//! - `api_config_source` (Istio's `sds-grpc`): one `StreamSecrets` stream per entry to the
//!   named static cluster (HTTP/2 over its address, a Unix `pipe` for Istio's agent), state of
//!   the world, the node on the first request, ACK or NACK per response, reconnecting with
//!   Envoy's jittered back-off (500 ms doubling to 30 s) and asking for the version it holds
//!   ([`client`]).
//! - `ads: {}` (gateways' `kubernetes://NAME` credentials): over the ADS stream; the config
//!   manager subscribes the names ([`SecretManager::ads_names`]) and hands responses to
//!   [`SecretManager::apply_ads`].
//!
//! **Warming.** A listener or cluster whose contexts name SDS secrets warms until each has
//! arrived ([`SecretEntry::is_ready`]), as in Envoy. `initial_fetch_timeout: 0s` (Istio's
//! `sds-grpc` config) waits for as long as it takes; a non-zero timeout (15 s when unset, as
//! for gateways' ADS secrets) stops the wait when it expires, counting
//! `sds.NAME.init_fetch_timeout`, and the resource then serves without the secret: its
//! handshakes fail until the secret arrives. Every arrival or timeout bumps
//! [`SecretManager::changes`], which the config manager watches to finish warming.

pub mod client;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use prost::Message;
use tokio::sync::watch;

use crate::config::tls::{SdsSecret, SdsSource, SecretKind, SecretValue};
use crate::stats::Counter;
use crate::tls::{CertMaterial, ValidationMaterial};
use crate::xds::{RawResource, Rejected, XdsTransport};

/// What identifies a subscription.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey {
    /// What the secret must hold.
    pub kind: SecretKind,
    /// Its name and config source.
    pub secret: SdsSecret,
}

/// A secret's content, loaded.
#[derive(Clone, Debug)]
pub enum Material {
    /// A certificate chain and key.
    Certificate(Arc<CertMaterial>),
    /// A validation context.
    Validation(Arc<ValidationMaterial>),
}

/// The current version of a secret.
#[derive(Debug)]
pub struct Loaded {
    /// Its content.
    pub material: Material,
    /// The response's `version_info`.
    pub version: String,
    /// When it was applied.
    pub updated: SystemTime,
    /// The `Secret` as received (for `/config_dump`).
    pub raw: Bytes,
}

/// A secret's subscription counters. Envoy 1.40 publishes none of them for SDS (its
/// `/stats` shows only the `sds.NAME.version_text` readout, which the admin API prints from
/// [`SecretManager::readouts`]), so they are kept here, not in the stats store.
#[derive(Clone, Debug, Default)]
pub struct SdsStats {
    /// `update_attempt`.
    pub update_attempt: Counter,
    /// `update_success`.
    pub update_success: Counter,
    /// `update_rejected`.
    pub update_rejected: Counter,
    /// `update_failure` (the stream failed).
    pub update_failure: Counter,
    /// `init_fetch_timeout`.
    pub init_fetch_timeout: Counter,
}

/// One subscribed secret.
#[derive(Debug)]
pub struct SecretEntry {
    key: SecretKey,
    current: ArcSwapOption<Loaded>,
    timed_out: AtomicBool,
    /// Its stats.
    pub stats: SdsStats,
    changed: watch::Sender<u64>,
    /// Dropped with the entry: its stream and timer end.
    _stop: watch::Sender<()>,
}

impl SecretEntry {
    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.key.secret.name
    }

    /// What identifies it.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// The current version, if one arrived.
    pub fn loaded(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// The certificate, if it is one and has arrived.
    pub fn certificate(&self) -> Option<Arc<CertMaterial>> {
        match self.current.load().as_deref().map(|l| &l.material) {
            Some(Material::Certificate(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// The validation context, if it is one and has arrived.
    pub fn validation(&self) -> Option<Arc<ValidationMaterial>> {
        match self.current.load().as_deref().map(|l| &l.material) {
            Some(Material::Validation(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// Arrived, or no longer waited for (`initial_fetch_timeout`).
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some() || self.timed_out.load(Ordering::Acquire)
    }

    /// Applies a new version: checks its kind, loads its PEM, and swaps it in (new
    /// handshakes use it at once). An error leaves the previous version in place. A secret
    /// that did not change keeps its version and time, as in Envoy (which compares hashes).
    pub fn update(&self, version: &str, raw: Bytes, value: SecretValue) -> Result<(), String> {
        if !raw.is_empty() && self.current.load().as_ref().is_some_and(|l| l.raw == raw) {
            self.stats.update_success.inc();
            return Ok(());
        }
        let material = match (self.key.kind, value) {
            (SecretKind::Certificate, SecretValue::Certificate(c)) => {
                let provider = rustls::crypto::ring::default_provider();
                Material::Certificate(Arc::new(
                    CertMaterial::load(&c, &provider)
                        .map_err(|e| format!("tls_certificate: {e}"))?,
                ))
            }
            (SecretKind::Validation, SecretValue::Validation(v)) => Material::Validation(Arc::new(
                ValidationMaterial::load(&v).map_err(|e| format!("validation_context: {e}"))?,
            )),
            (SecretKind::Certificate, SecretValue::Validation(_)) => {
                return Err(format!(
                    "secret '{}' is a validation context where a TLS certificate is expected",
                    self.name()
                ));
            }
            (SecretKind::Validation, SecretValue::Certificate(_)) => {
                return Err(format!(
                    "secret '{}' is a TLS certificate where a validation context is expected",
                    self.name()
                ));
            }
        };
        let first = self.current.load().is_none();
        self.current.store(Some(Arc::new(Loaded {
            material,
            version: version.to_string(),
            updated: SystemTime::now(),
            raw,
        })));
        self.stats.update_success.inc();
        tracing::debug!(secret = %self.name(), version, first, "SDS secret applied");
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
        Ok(())
    }

    fn time_out(&self) {
        if self.current.load().is_none() && !self.timed_out.swap(true, Ordering::AcqRel) {
            self.stats.init_fetch_timeout.inc();
            tracing::warn!(secret = %self.name(), "SDS secret did not arrive within initial_fetch_timeout");
            self.changed.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// Where a gRPC SDS cluster is: its first endpoint, resolved by the config manager.
#[derive(Clone, Debug)]
pub struct SdsTarget {
    /// How to connect.
    pub transport: SdsAddress,
    /// The cluster's `connect_timeout`.
    pub connect_timeout: Duration,
    /// The cluster's `upstream_cx_total`.
    pub connections: Option<Counter>,
}

/// An SDS cluster's address.
#[derive(Clone, Debug)]
pub enum SdsAddress {
    /// An IP address or a Unix socket.
    Resolved(XdsTransport),
    /// A DNS name, resolved at each connect.
    Dns {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Finds a static cluster's SDS target by name.
pub type Targets = Arc<dyn Fn(&str) -> Option<SdsTarget> + Send + Sync>;

/// A secret as `/config_dump` shows it.
#[derive(Clone, Debug)]
pub struct SecretDump {
    /// Name.
    pub name: String,
    /// Its current version, if it has arrived.
    pub loaded: Option<Arc<Loaded>>,
}

/// One HTTP/2 channel per SDS cluster, shared by the streams of every secret from it (Envoy
/// multiplexes its SDS streams over one connection to `sds-grpc` too).
pub(crate) type Channels = Arc<Mutex<HashMap<String, tonic::transport::Channel>>>;

/// Every subscribed secret.
pub struct SecretManager {
    entries: Mutex<HashMap<SecretKey, Weak<SecretEntry>>>,
    changed: watch::Sender<u64>,
    node: Arc<OnceLock<Node>>,
    targets: Arc<OnceLock<Targets>>,
    channels: Channels,
}

impl Default for SecretManager {
    fn default() -> Self {
        SecretManager::new()
    }
}

impl std::fmt::Debug for SecretManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretManager").finish_non_exhaustive()
    }
}

impl SecretManager {
    /// An empty manager.
    pub fn new() -> SecretManager {
        SecretManager {
            entries: Mutex::default(),
            changed: watch::channel(0).0,
            node: Arc::default(),
            targets: Arc::default(),
            channels: Arc::default(),
        }
    }

    /// The node sent on SDS streams (the bootstrap's). Set once, before the first stream.
    pub fn set_node(&self, node: Node) {
        let _ = self.node.set(node);
    }

    /// How gRPC SDS clusters are found. Set once (by the config manager).
    pub fn set_targets(&self, targets: Targets) {
        let _ = self.targets.set(targets);
    }

    /// Bumped whenever a secret arrives or stops being waited for.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretKey, Weak<SecretEntry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `secret` used as `kind`, subscribed now if nobody uses it yet. Needs a
    /// tokio runtime for gRPC sources and timeouts.
    pub fn acquire(
        &self,
        kind: SecretKind,
        secret: &SdsSecret,
    ) -> Result<Arc<SecretEntry>, String> {
        let key = SecretKey {
            kind,
            secret: secret.clone(),
        };
        let mut entries = self.lock();
        if let Some(e) = entries.get(&key).and_then(Weak::upgrade) {
            return Ok(e);
        }
        entries.retain(|_, w| w.strong_count() > 0);
        let needs_tasks = matches!(secret.config.source, SdsSource::Grpc { .. })
            || secret.config.initial_fetch_timeout.is_some();
        let runtime = if needs_tasks {
            Some(
                tokio::runtime::Handle::try_current()
                    .map_err(|_| format!("SDS secret '{}' needs a tokio runtime", secret.name))?,
            )
        } else {
            None
        };
        let (stop, stopped) = watch::channel(());
        let entry = Arc::new(SecretEntry {
            stats: SdsStats::default(),
            key: key.clone(),
            current: ArcSwapOption::empty(),
            timed_out: AtomicBool::new(false),
            changed: self.changed.clone(),
            _stop: stop,
        });
        // The subscription starts: Envoy counts an attempt.
        entry.stats.update_attempt.inc();
        if let Some(rt) = runtime {
            if let SdsSource::Grpc {
                cluster,
                set_node_on_first_message_only,
                ..
            } = &secret.config.source
            {
                rt.spawn(client::run(client::Stream {
                    entry: Arc::downgrade(&entry),
                    name: secret.name.clone(),
                    cluster: cluster.clone(),
                    set_node_on_first_message_only: *set_node_on_first_message_only,
                    node: self.node.clone(),
                    targets: self.targets.clone(),
                    channels: self.channels.clone(),
                    stop: stopped.clone(),
                }));
            }
            if let Some(t) = secret.config.initial_fetch_timeout {
                let weak = Arc::downgrade(&entry);
                let mut stopped = stopped;
                rt.spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(t) => {
                            if let Some(e) = weak.upgrade() {
                                e.time_out();
                            }
                        }
                        _ = stopped.changed() => {}
                    }
                });
            }
        }
        entries.insert(key, Arc::downgrade(&entry));
        Ok(entry)
    }

    fn live(&self) -> Vec<Arc<SecretEntry>> {
        let mut v: Vec<Arc<SecretEntry>> = self.lock().values().filter_map(Weak::upgrade).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The names of the secrets subscribed over ADS.
    pub fn ads_names(&self) -> BTreeSet<String> {
        self.live()
            .into_iter()
            .filter(|e| e.key.secret.config.source == SdsSource::Ads)
            .map(|e| e.name().to_string())
            .collect()
    }

    /// Applies secrets received over ADS to every entry of their name; returns the ones that
    /// could not be applied (the response is then NACKed).
    pub fn apply_ads(&self, version: &str, resources: Vec<RawResource>) -> Vec<Rejected> {
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
        let live = self.live();
        let mut rejected = Vec::new();
        for r in resources {
            let version = if r.version.is_empty() {
                version
            } else {
                r.version.as_str()
            };
            let converted = Secret::decode(r.value.clone())
                .map_err(|e| format!("does not decode: {e}"))
                .and_then(|s| crate::proto::secret(s).map_err(|e| e.to_string()));
            let (name, value) = match converted {
                Ok(v) => v,
                Err(reason) => {
                    rejected.push(Rejected {
                        name: r.name.clone(),
                        reason,
                    });
                    continue;
                }
            };
            for e in live
                .iter()
                .filter(|e| e.key.secret.config.source == SdsSource::Ads && e.name() == name)
            {
                e.stats.update_attempt.inc();
                if let Err(reason) = e.update(version, r.value.clone(), value.clone()) {
                    e.stats.update_rejected.inc();
                    rejected.push(Rejected {
                        name: name.clone(),
                        reason,
                    });
                    break;
                }
            }
        }
        rejected
    }

    /// The `sds.NAME.version_text` readouts: every subscribed secret's name, its version
    /// (empty until it arrives) and whether it comes from its own gRPC stream (which also
    /// has a `sds.NAME.control_plane.identifier`).
    pub fn readouts(&self) -> Vec<(String, String, bool)> {
        let mut out: Vec<(String, String, bool)> = Vec::new();
        for e in self.live() {
            let version = e.loaded().map(|l| l.version.clone()).unwrap_or_default();
            let grpc = matches!(e.key.secret.config.source, SdsSource::Grpc { .. });
            match out.iter_mut().find(|(n, _, _)| n == e.name()) {
                Some(o) => {
                    if o.1.is_empty() {
                        o.1 = version;
                    }
                    o.2 |= grpc;
                }
                None => out.push((e.name().to_string(), version, grpc)),
            }
        }
        out.sort();
        out
    }

    /// Every subscribed secret of `kind`, for `/config_dump` (one per name and kind).
    pub fn dump(&self, kind: SecretKind) -> Vec<SecretDump> {
        let mut out: Vec<SecretDump> = Vec::new();
        for e in self.live().into_iter().filter(|e| e.key.kind == kind) {
            let loaded = e.loaded();
            match out.iter_mut().find(|d| d.name == e.name()) {
                // Two config sources for one name: show the one that has arrived.
                Some(d) => {
                    if d.loaded.is_none() {
                        d.loaded = loaded;
                    }
                }
                None => out.push(SecretDump {
                    name: e.name().to_string(),
                    loaded,
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
