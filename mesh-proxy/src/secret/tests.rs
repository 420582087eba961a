//! The secret store: sharing, kinds, last good version, ADS updates, fetch timeouts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls_pb;
use prost::Message;

use super::*;
use crate::config::tls::{CertificateSource, DataSource, SdsConfig, Validation};

fn ads(name: &str, timeout: Option<Duration>) -> SdsSecret {
    SdsSecret {
        name: name.into(),
        config: SdsConfig {
            source: SdsSource::Ads,
            initial_fetch_timeout: timeout,
        },
    }
}

/// A self-signed certificate and its key, PEM.
fn cert(uri: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    let c = params.self_signed(&key).unwrap();
    (c.pem(), key.serialize_pem())
}

fn certificate_value(chain: &str, key: &str) -> SecretValue {
    SecretValue::Certificate(CertificateSource {
        chain: DataSource::Inline(Bytes::from(chain.to_string())),
        key: DataSource::Inline(Bytes::from(key.to_string())),
    })
}

fn manager() -> SecretManager {
    SecretManager::new()
}

#[test]
fn users_of_one_secret_share_its_entry_and_kinds_are_apart() {
    let m = manager();
    let a = m
        .acquire(SecretKind::Certificate, &ads("default", None))
        .unwrap();
    let b = m
        .acquire(SecretKind::Certificate, &ads("default", None))
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let v = m
        .acquire(SecretKind::Validation, &ads("default", None))
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &v));
    assert_eq!(m.ads_names().into_iter().collect::<Vec<_>>(), ["default"]);
    drop((a, b, v));
    assert!(m.ads_names().is_empty(), "dropped with its last user");
}

#[test]
fn a_bad_update_keeps_the_last_good_secret() {
    let m = manager();
    let e = m
        .acquire(SecretKind::Certificate, &ads("default", None))
        .unwrap();
    assert!(!e.is_ready());
    let (chain, key) = cert("spiffe://cluster.local/ns/a/sa/one");
    e.update("v1", Bytes::new(), certificate_value(&chain, &key))
        .unwrap();
    assert!(e.is_ready());
    assert_eq!(
        e.certificate().unwrap().uri_sans,
        ["spiffe://cluster.local/ns/a/sa/one"]
    );
    // A key that does not match its certificate, garbage, and the wrong kind are refused.
    let (other_chain, _) = cert("spiffe://cluster.local/ns/a/sa/two");
    let err = e
        .update("v2", Bytes::new(), certificate_value(&other_chain, &key))
        .unwrap_err();
    assert!(err.starts_with("tls_certificate:"), "{err}");
    assert!(
        e.update("v3", Bytes::new(), certificate_value("junk", &key))
            .is_err()
    );
    let err = e
        .update(
            "v4",
            Bytes::new(),
            SecretValue::Validation(Validation {
                trusted_ca: None,
                sans: vec![],
                crl: None,
                accept_untrusted: false,
            }),
        )
        .unwrap_err();
    assert!(err.contains("is a validation context"), "{err}");
    assert_eq!(e.loaded().unwrap().version, "v1");
    assert_eq!(
        e.certificate().unwrap().uri_sans,
        ["spiffe://cluster.local/ns/a/sa/one"]
    );
    assert_eq!(e.stats.update_success.get(), 1);
}

#[test]
fn ads_responses_reach_every_entry_of_their_name() {
    let m = manager();
    let mut changes = m.changes();
    let e = m
        .acquire(SecretKind::Validation, &ads("kubernetes://ca", None))
        .unwrap();
    let (root, _) = cert("spiffe://cluster.local/ns/a/sa/root");
    let secret = tls_pb::Secret {
        name: "kubernetes://ca".into(),
        r#type: Some(tls_pb::secret::Type::ValidationContext(
            tls_pb::CertificateValidationContext {
                trusted_ca: Some(core::DataSource {
                    specifier: Some(core::data_source::Specifier::InlineBytes(root.into_bytes())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    };
    let bad = tls_pb::Secret {
        name: "kubernetes://ca".into(),
        r#type: Some(tls_pb::secret::Type::TlsCertificate(
            tls_pb::TlsCertificate::default(),
        )),
    };
    let raw = |s: &tls_pb::Secret| RawResource {
        name: s.name.clone(),
        version: String::new(),
        value: s.encode_to_vec().into(),
    };
    assert!(m.apply_ads("1", vec![raw(&secret)]).is_empty());
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
    assert!(
        e.validation()
            .unwrap()
            .roots
            .as_ref()
            .is_some_and(|r| r.len() == 1)
    );
    assert_eq!(e.loaded().unwrap().version, "1");
    // A secret without its chain is rejected by field; the one in use stays.
    let rejected = m.apply_ads("2", vec![raw(&bad)]);
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].reason,
        "tls_certificate.certificate_chain: value is required"
    );
    assert_eq!(e.loaded().unwrap().version, "1");
    assert!(!changes.has_changed().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_fetch_timeout_ends_the_wait_without_the_secret() {
    let m = manager();
    let mut changes = m.changes();
    let e = m
        .acquire(
            SecretKind::Certificate,
            &ads("kubernetes://cert", Some(Duration::from_secs(15))),
        )
        .unwrap();
    let forever = m
        .acquire(SecretKind::Certificate, &ads("kubernetes://cert", None))
        .unwrap();
    assert!(!e.is_ready());
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert!(!e.is_ready());
    changes.changed().await.unwrap();
    assert!(e.is_ready() && e.certificate().is_none());
    assert_eq!(e.stats.init_fetch_timeout.get(), 1);
    assert!(!forever.is_ready(), "0s waits for as long as it takes");
}
