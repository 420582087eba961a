//! [`JwksResolver`]: istiod's `JwksResolver` (`pilot/pkg/model/jwks_resolver.go`) for this
//! crate's view cache.
//!
//! - **What is fetched**: every [`JwksSource`] of the config ([`super::sources`]): a rule's
//!   `jwksUri`, or the `jwks_uri` of its issuer's OpenID configuration. A source that appears
//!   in the config is fetched at once, not at the next refresh; one that disappears is
//!   forgotten.
//! - **Refresh**: every [`JwksConfig::refresh_interval`] (istiod's
//!   `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, 20 minutes). A failed fetch is retried after
//!   [`JwksConfig::retry_interval`] (istiod's `JwtPubKeyRefreshIntervalOnFailure`, 1 minute),
//!   doubling on each further failure up to [`JwksConfig::max_retry_interval`] (istiod's reset
//!   threshold, 60 minutes). Each source keeps its own schedule; istiod runs one ticker for all.
//! - **Failures**: the last good document stays in use while refreshes fail (istiod does the
//!   same, and forgets it only after a week without a successful refresh; this resolver keeps
//!   it as long as the config needs it). A source that was never fetched has no document, so
//!   translation fails closed: every token for it gets 401. Failures are logged with the URL,
//!   the reason and the RequestAuthentication fields that use the source.
//! - **What counts as a document**: a JSON object with a `keys` array (istiod stores whatever
//!   it got and only complains when it does not parse; here such a body is a failed fetch and
//!   the last good document stays). A refresh whose keys differ only in order or formatting
//!   from the document in use keeps the old text, so no push happens (istiod compares the same way).
//! - **HTTP**: `http` and `https` (rustls, with the platform's roots and
//!   [`JwksConfig::extra_roots_pem`], istiod's `/cacerts/extra.pem`), a deadline per fetch
//!   ([`JwksConfig::timeout`], istiod's 5 s), a body size limit, a few redirects.
//!
//! [`JwksResolver::run`] drives it all against a [`ConfigStore`] and a [`ViewCache`]:
//! documents go to [`ViewCache::set_jwks`], and when they change every view is pushed, as
//! gateway credentials are. Between a new RequestAuthentication and its first successful fetch
//! its tokens get 401 (istiod fetches synchronously in the push instead).
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<mesh_model::ConfigStore>, cache: std::sync::Arc<mesh_xds::cache::ViewCache>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use mesh_xds::jwks::{JwksConfig, JwksResolver};
//!
//! let config = JwksConfig::default().with_refresh_interval(Duration::from_secs(300));
//! tokio::spawn(JwksResolver::new(config)?.run(store, cache));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_model::ConfigStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::time::Instant;

use super::JwksSource;
use super::fetch::{FetchError, Fetcher};
use crate::cache::ViewCache;

/// Settings of a [`JwksResolver`]; the defaults are istiod's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JwksConfig {
    /// How often a document is fetched again after a success. Default 20 minutes, istiod's
    /// `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`.
    pub refresh_interval: Duration,
    /// The wait after a first failure; it doubles with each further failure. Default 1 minute,
    /// istiod's `JwtPubKeyRefreshIntervalOnFailure`.
    pub retry_interval: Duration,
    /// The longest wait between failed attempts. Default 60 minutes, istiod's
    /// `JwtPubKeyRefreshIntervalOnFailureResetThreshold`.
    pub max_retry_interval: Duration,
    /// The deadline of one fetch, redirects and OpenID discovery included (discovery gets it
    /// twice: the configuration, then the keys). Default 5 seconds, istiod's
    /// `jwksHTTPTimeOutInSec`.
    pub timeout: Duration,
    /// The largest document accepted. Default 1 MiB; istiod sets no limit, but real JWKS
    /// documents are a few KiB and the body is held in memory and sent to every proxy.
    pub max_document_size: usize,
    /// Redirects followed per fetch. Default 5 (Go's client, istiod's, follows 10).
    pub max_redirects: usize,
    /// Trust the platform's root certificates for https (`rustls-native-certs`). Default on,
    /// as istiod trusts the system pool.
    pub native_roots: bool,
    /// More roots for https (PEM, any number of certificates), as istiod's
    /// `/cacerts/extra.pem`: a private identity provider, or a test server.
    pub extra_roots_pem: Option<String>,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            refresh_interval: Duration::from_secs(20 * 60),
            retry_interval: Duration::from_secs(60),
            max_retry_interval: Duration::from_secs(60 * 60),
            timeout: Duration::from_secs(5),
            max_document_size: 1024 * 1024,
            max_redirects: 5,
            native_roots: true,
            extra_roots_pem: None,
        }
    }
}

impl JwksConfig {
    /// With another refresh interval.
    #[must_use]
    pub fn with_refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d;
        self
    }

    /// With another first retry interval after a failure.
    #[must_use]
    pub fn with_retry_interval(mut self, d: Duration) -> Self {
        self.retry_interval = d;
        self
    }

    /// With another longest retry interval.
    #[must_use]
    pub fn with_max_retry_interval(mut self, d: Duration) -> Self {
        self.max_retry_interval = d;
        self
    }

    /// With another fetch deadline.
    #[must_use]
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// With another size limit.
    #[must_use]
    pub fn with_max_document_size(mut self, bytes: usize) -> Self {
        self.max_document_size = bytes;
        self
    }

    /// Also trusting these PEM roots for https.
    #[must_use]
    pub fn with_extra_roots_pem(mut self, pem: impl Into<String>) -> Self {
        self.extra_roots_pem = Some(pem.into());
        self
    }

    /// Trusting the platform's roots or not.
    #[must_use]
    pub fn with_native_roots(mut self, on: bool) -> Self {
        self.native_roots = on;
        self
    }

    /// The wait before the next attempt after `failures` consecutive failures (at least 1).
    pub fn retry_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.retry_interval
            .saturating_mul(1u32 << doublings)
            .min(self.max_retry_interval)
    }
}

/// Why a resolver cannot be built, or a fetched document is not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// `extra_roots_pem` holds no certificate, or one rustls cannot use.
    #[error("extra JWKS roots: {0}")]
    ExtraRoots(String),
    /// The TLS client cannot be built.
    #[error("JWKS TLS client: {0}")]
    Tls(#[from] rustls::Error),
    /// The GET failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The body is not a JWKS document.
    #[error("{url}: not a JWKS document: {reason}")]
    NotJwks {
        /// Where it came from.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OpenID configuration has no usable `jwks_uri`.
    #[error("{url}: OpenID configuration without a usable jwks_uri: {reason}")]
    Discovery {
        /// The configuration's URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What the resolver knows about one source.
#[derive(Debug)]
struct Entry {
    /// The RequestAuthentication fields that use it, for messages.
    users: BTreeSet<String>,
    /// The last good document.
    document: Option<String>,
    /// Consecutive failures since the last success.
    failures: u32,
    /// When it is fetched next.
    due: Instant,
}

/// Fetches and refreshes the JWKS documents the config needs; see the [module docs](self).
#[derive(Debug)]
pub struct JwksResolver {
    config: JwksConfig,
    fetcher: Fetcher,
    entries: BTreeMap<JwksSource, Entry>,
}

impl JwksResolver {
    /// A resolver with `config`'s settings; fails when the extra roots are unusable.
    pub fn new(config: JwksConfig) -> Result<JwksResolver, JwksError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if config.native_roots {
            // Unreadable platform roots are skipped: https to a public provider then fails
            // with an unknown issuer, which the fetch error says.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
        if let Some(pem) = &config.extra_roots_pem {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| JwksError::ExtraRoots(e.to_string()))?;
            if certs.is_empty() {
                return Err(JwksError::ExtraRoots("no PEM certificate found".into()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| JwksError::ExtraRoots(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let fetcher = Fetcher::new(
            Arc::new(tls),
            config.timeout,
            config.max_document_size,
            config.max_redirects,
        );
        Ok(JwksResolver {
            config,
            fetcher,
            entries: BTreeMap::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &JwksConfig {
        &self.config
    }

    /// Follows what the config needs: sources not seen before are due `now`, sources no longer
    /// needed are forgotten. Returns whether the documents changed (a forgotten source had
    /// one).
    pub fn track(&mut self, wanted: BTreeMap<JwksSource, BTreeSet<String>>, now: Instant) -> bool {
        let mut dropped_document = false;
        self.entries.retain(|s, e| {
            let keep = wanted.contains_key(s);
            dropped_document |= !keep && e.document.is_some();
            keep
        });
        for (source, users) in wanted {
            self.entries
                .entry(source)
                .and_modify(|e| e.users.clone_from(&users))
                .or_insert(Entry {
                    users,
                    document: None,
                    failures: 0,
                    due: now,
                });
        }
        dropped_document
    }

    /// The documents in use, keyed as [`PushContext::with_jwks`](crate::PushContext::with_jwks)
    /// looks them up ([`JwksSource::key`]). Sources never fetched are not there.
    pub fn documents(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .filter_map(|(s, e)| e.document.clone().map(|d| (s.key(), d)))
            .collect()
    }

    /// When the next fetch is due, if anything is tracked.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.due).min()
    }

    /// Fetches every source due at `now` (concurrently), and schedules each one's next
    /// attempt. Returns whether the documents changed.
    pub async fn refresh_due(&mut self, now: Instant) -> bool {
        let due: Vec<JwksSource> = self
            .entries
            .iter()
            .filter(|(_, e)| e.due <= now)
            .map(|(s, _)| s.clone())
            .collect();
        if due.is_empty() {
            return false;
        }
        let fetcher = &self.fetcher;
        let results = futures::future::join_all(
            due.iter()
                .map(|s| async move { (s.clone(), fetch_source(fetcher, s).await) }),
        )
        .await;
        let mut changed = false;
        let after = Instant::now();
        for (source, result) in results {
            let Some(e) = self.entries.get_mut(&source) else {
                continue;
            };
            match result {
                Ok(doc) => {
                    if e.failures > 0 {
                        tracing::info!(
                            "JWKS {source} fetched again after {} failure(s)",
                            e.failures
                        );
                    }
                    e.failures = 0;
                    e.due = after + self.config.refresh_interval;
                    let same = e
                        .document
                        .as_deref()
                        .is_some_and(|old| same_keys(old, &doc));
                    if !same {
                        tracing::info!(
                            "JWKS {source} {} (for {})",
                            if e.document.is_some() {
                                "changed"
                            } else {
                                "fetched"
                            },
                            join(&e.users)
                        );
                        e.document = Some(doc);
                        changed = true;
                    }
                }
                Err(err) => {
                    e.failures = e.failures.saturating_add(1);
                    let wait = self.config.retry_after(e.failures);
                    e.due = after + wait;
                    let consequence = if e.document.is_some() {
                        "keeping the last document fetched"
                    } else {
                        "never fetched: tokens for it are rejected (401) until it is"
                    };
                    tracing::warn!(
                        "JWKS {source} for {}: {err}; {consequence}; next attempt in {wait:?}",
                        join(&e.users)
                    );
                }
            }
        }
        changed
    }

    /// Follows `store` and feeds `cache` until the store's events end: the sources of every
    /// config revision are tracked (new ones fetched at once), due sources are fetched, and
    /// whenever the documents change they go to [`ViewCache::set_jwks`] and every view is
    /// pushed.
    pub async fn run(mut self, store: Arc<ConfigStore>, cache: Arc<ViewCache>) {
        let mut events = store.subscribe();
        loop {
            let mut changed = self.track(super::sources(&store.snapshot()), Instant::now());
            changed |= self.refresh_due(Instant::now()).await;
            if changed && cache.set_jwks(self.documents()) {
                let cache = cache.clone();
                // Translation is CPU work: keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || cache.push_all()).await;
            }
            let wake = async {
                match self.next_due() {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                e = events.recv() => match e {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                () = wake => {}
            }
        }
    }
}

fn join(users: &BTreeSet<String>) -> String {
    users.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Fetches one source's document: the `jwksUri`, or the issuer's OpenID configuration and
/// then its `jwks_uri`.
async fn fetch_source(fetcher: &Fetcher, source: &JwksSource) -> Result<String, JwksError> {
    let url = match source {
        JwksSource::Uri(uri) => uri.clone(),
        JwksSource::Discovery { issuer } => {
            let config_url = super::discovery_url(issuer);
            let body = fetcher.get(&config_url).await?;
            jwks_uri_of(&config_url, &body)?
        }
    };
    let body = fetcher.get(&url).await?;
    check_jwks(&url, &body)?;
    Ok(body)
}

/// The `jwks_uri` of an OpenID configuration document.
fn jwks_uri_of(url: &str, body: &str) -> Result<String, JwksError> {
    let bad = |reason: String| JwksError::Discovery {
        url: url.to_string(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let uri = v
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad("no jwks_uri string".into()))?;
    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
        return Err(bad(format!("jwks_uri {uri:?} is not an http(s) URL")));
    }
    Ok(uri.to_string())
}

/// A JWKS document: a JSON object with a `keys` array of objects.
fn check_jwks(url: &str, body: &str) -> Result<(), JwksError> {
    let bad = |reason: String| JwksError::NotJwks {
        url: url.to_string(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let keys = v
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("no keys array".into()))?;
    if let Some(i) = keys.iter().position(|k| !k.is_object()) {
        return Err(bad(format!("keys[{i}] is not an object")));
    }
    Ok(())
}

/// Whether two JWKS documents hold the same keys (in any order) and the same other fields,
/// whatever their formatting: a refresh that only reorders keys is no change (istiod sorts the
/// keys by `kid` and compares).
fn same_keys(old: &str, new: &str) -> bool {
    if old == new {
        return true;
    }
    let (Ok(mut a), Ok(mut b)) = (
        serde_json::from_str::<serde_json::Value>(old),
        serde_json::from_str::<serde_json::Value>(new),
    ) else {
        return false;
    };
    let (Some(ka), Some(kb)) = (
        a.as_object_mut().and_then(|o| o.remove("keys")),
        b.as_object_mut().and_then(|o| o.remove("keys")),
    ) else {
        return false;
    };
    let (Some(ka), Some(kb)) = (ka.as_array(), kb.as_array()) else {
        return false;
    };
    if a != b || ka.len() != kb.len() {
        return false;
    }
    // A multiset comparison (object equality ignores member order); documents are small.
    let mut used = vec![false; kb.len()];
    ka.iter().all(|k| {
        kb.iter().enumerate().any(|(i, other)| {
            let hit = !used[i] && other == k;
            if hit {
                used[i] = true;
            }
            hit
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_the_retry_interval_to_the_cap() {
        let c = JwksConfig::default();
        let mins = |n| c.retry_after(n).as_secs() / 60;
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7, 40].map(mins),
            [1, 2, 4, 8, 16, 32, 60, 60]
        );
        let odd = JwksConfig::default()
            .with_retry_interval(Duration::from_secs(10))
            .with_max_retry_interval(Duration::from_secs(5));
        assert_eq!(odd.retry_after(1), Duration::from_secs(5));
    }

    #[test]
    fn reordered_or_reformatted_keys_are_the_same_document() {
        let a = r#"{"keys":[{"kid":"1","kty":"EC"},{"kid":"2","kty":"EC"}]}"#;
        let b = "{ \"keys\": [ {\"kty\":\"EC\",\"kid\":\"2\"}, {\"kid\":\"1\",\"kty\":\"EC\"} ] }";
        assert!(same_keys(a, b));
        assert!(!same_keys(a, r#"{"keys":[{"kid":"1","kty":"EC"}]}"#));
        assert!(!same_keys(
            a,
            r#"{"keys":[{"kid":"1","kty":"EC"},{"kid":"1","kty":"EC"}]}"#
        ));
        assert!(!same_keys(
            a,
            r#"{"keys":[{"kid":"1","kty":"EC"},{"kid":"2","kty":"EC"}],"x":1}"#
        ));
        assert!(!same_keys(a, "not json"));
    }

    #[test]
    fn documents_must_have_a_keys_array_of_objects() {
        assert!(check_jwks("u", r#"{"keys":[]}"#).is_ok());
        for bad in ["", "[]", r#"{"keys":{}}"#, r#"{"keys":[1]}"#, r#"{"k":[]}"#] {
            let err = check_jwks("https://idp/keys", bad).unwrap_err().to_string();
            assert!(
                err.starts_with("https://idp/keys: not a JWKS document"),
                "{err}"
            );
        }
    }

    #[test]
    fn discovery_needs_an_http_jwks_uri() {
        let url = "https://idp/.well-known/openid-configuration";
        assert_eq!(
            jwks_uri_of(
                url,
                r#"{"issuer":"https://idp","jwks_uri":"https://idp/k"}"#
            )
            .unwrap(),
            "https://idp/k"
        );
        for bad in [
            "{}",
            r#"{"jwks_uri":3}"#,
            r#"{"jwks_uri":"file:///etc/k"}"#,
            "x",
        ] {
            let err = jwks_uri_of(url, bad).unwrap_err().to_string();
            assert!(err.contains("without a usable jwks_uri"), "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn new_sources_are_due_at_once_and_gone_ones_are_forgotten() {
        let mut r = JwksResolver::new(JwksConfig::default().with_native_roots(false)).unwrap();
        let now = Instant::now();
        let a = JwksSource::Uri("http://127.0.0.1:9/a".into());
        let wanted = |s: &[&JwksSource]| {
            s.iter()
                .map(|s| {
                    (
                        (*s).clone(),
                        ["RequestAuthentication x/y".to_string()].into(),
                    )
                })
                .collect()
        };
        assert!(!r.track(wanted(&[&a]), now));
        assert_eq!(r.next_due(), Some(now));
        assert!(r.documents().is_empty());
        // A source with a document that goes away changes the documents.
        r.entries.get_mut(&a).unwrap().document = Some("{\"keys\":[]}".into());
        assert_eq!(r.documents().len(), 1);
        assert!(r.track(wanted(&[]), now));
        assert_eq!(r.next_due(), None);
        assert!(r.documents().is_empty());
    }

    #[test]
    fn unusable_extra_roots_are_refused() {
        let err = JwksResolver::new(JwksConfig::default().with_extra_roots_pem("nothing here"))
            .unwrap_err();
        assert!(err.to_string().starts_with("extra JWKS roots"), "{err}");
    }
}
