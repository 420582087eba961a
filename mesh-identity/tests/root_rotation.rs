//! Root rotation on a running CA and across restarts: a staged root is trusted before it signs,
//! a rotation switches signing over and keeps the old root trusted, a retired root is gone, and
//! every step is in the directory, so a new `CertificateAuthority` on it (a restart) resumes
//! where the old one was, even after a crash between the files of a step. A CA on Istio's
//! `cacerts` rotates by re-reading the operator's files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mesh_identity::ca::{CaConfig, CaError, CertificateAuthority, TrustedRoot};
use mesh_identity::spiffe::SpiffeId;
use mesh_identity::svid;
use mesh_test_support::TempDir;
use mesh_test_support::identity::{csr, der, td};
use rustls_pki_types::UnixTime;

fn web() -> SpiffeId {
    SpiffeId::istio(td(), "shop", "web").unwrap()
}

fn open(dir: &Path) -> CertificateAuthority {
    CertificateAuthority::self_signed(dir, CaConfig::new(td())).unwrap()
}

/// The root a fresh leaf from `ca` verifies against, among `roots`.
fn issuer_of(ca: &CertificateAuthority, roots: &[String]) -> Option<String> {
    let issued = ca.sign_csr(&csr(), &web(), None).unwrap();
    assert_eq!(
        issued.chain.last().map(|r| r.trim()),
        Some(ca.signing_root().trim()),
        "the chain ends with the signing root"
    );
    // The leaf and its intermediates, without the root.
    let chain: Vec<_> = issued.chain[..issued.chain.len() - 1]
        .iter()
        .map(|p| der(p))
        .collect();
    roots
        .iter()
        .find(|r| svid::verify(&chain, &[der(r)], UnixTime::now(), true, Some(&td())).is_ok())
        .cloned()
}

fn pems(roots: &[TrustedRoot]) -> Vec<String> {
    roots.iter().map(|r| r.pem.trim().to_string()).collect()
}

fn trimmed(roots: &[String]) -> Vec<String> {
    roots.iter().map(|r| r.trim().to_string()).collect()
}

fn bundle_file(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("trust-bundle.pem")).unwrap();
    text.split_inclusive("-----END CERTIFICATE-----\n")
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

#[test]
fn stage_rotate_retire_and_restart_where_it_was() {
    let dir = TempDir::new("rotation-steps");
    let ca = open(&dir.0);
    let old = ca.signing_root();
    assert_eq!(trimmed(&ca.roots()), trimmed(std::slice::from_ref(&old)));
    assert_eq!(bundle_file(&dir.0), trimmed(std::slice::from_ref(&old)));
    let listed = ca.trusted_roots();
    assert!(listed[0].signing && !listed[0].staged);
    assert_eq!(listed[0].subject.as_deref(), Some("O=cluster.local"));
    assert_eq!(listed[0].sha256.len(), 64);

    // Stage: trusted at once, not signing; the same root when staged twice.
    let staged = ca.stage_root().unwrap();
    assert!(staged.staged && !staged.signing);
    assert_eq!(ca.stage_root().unwrap(), staged);
    assert_eq!(
        trimmed(&ca.roots()),
        pems(&[listed[0].clone(), staged.clone()])
    );
    assert_eq!(issuer_of(&ca, &ca.roots()).as_deref(), Some(old.as_str()));
    assert_eq!(bundle_file(&dir.0), trimmed(&ca.roots()));
    // A restart keeps it staged.
    let again = open(&dir.0);
    assert_eq!(again.trusted_roots(), ca.trusted_roots());
    drop(again);

    // Rotate: the staged root signs; the old one stays trusted.
    let rotation = ca.rotate_root().unwrap();
    assert!(rotation.was_staged);
    assert_eq!(rotation.signing.pem.trim(), staged.pem.trim());
    assert_eq!(rotation.previous.pem.trim(), old.trim());
    assert_eq!(
        trimmed(&ca.roots()),
        vec![staged.pem.trim().to_string(), old.trim().to_string()],
        "the signing root first"
    );
    assert_eq!(
        issuer_of(&ca, &ca.roots()).map(|r| r.trim().to_string()),
        Some(staged.pem.trim().to_string())
    );
    let on_disk = std::fs::read_to_string(dir.0.join("root-cert.pem")).unwrap();
    assert_eq!(on_disk.trim(), staged.pem.trim());
    assert!(!dir.0.join("next-root-cert.pem").exists());
    assert!(!dir.0.join("next-ca-key.pem").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.0.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A restart signs with the new root and trusts both.
    let again = open(&dir.0);
    assert_eq!(again.trusted_roots(), ca.trusted_roots());
    assert_eq!(
        issuer_of(&again, &again.roots()).map(|r| r.trim().to_string()),
        Some(staged.pem.trim().to_string())
    );
    drop(again);

    // Retire the old root: gone here and after a restart; the signing root stays.
    ca.retire_root(&old);
    ca.retire_root(&ca.signing_root());
    ca.save_trust_bundle().unwrap();
    assert_eq!(trimmed(&ca.roots()), vec![staged.pem.trim().to_string()]);
    assert_eq!(bundle_file(&dir.0), trimmed(&ca.roots()));
    assert_eq!(open(&dir.0).trusted_roots(), ca.trusted_roots());

    // Rotating without staging generates a root that trusts and signs at once.
    let direct = ca.rotate_root().unwrap();
    assert!(!direct.was_staged);
    assert_eq!(direct.previous.pem.trim(), staged.pem.trim());
    assert_eq!(ca.roots().len(), 2);
    assert_eq!(
        issuer_of(&ca, &ca.roots()).map(|r| r.trim().to_string()),
        Some(direct.signing.pem.trim().to_string())
    );
}

#[test]
fn a_retired_staged_root_is_unstaged_and_its_files_removed() {
    let dir = TempDir::new("rotation-unstage");
    let ca = open(&dir.0);
    let staged = ca.stage_root().unwrap();
    ca.retire_root(&staged.pem);
    assert_eq!(ca.roots().len(), 1);
    assert!(ca.trusted_roots().iter().all(|r| !r.staged));
    ca.save_trust_bundle().unwrap();
    assert!(!dir.0.join("next-root-cert.pem").exists());
    assert_eq!(open(&dir.0).roots().len(), 1);
    // The next rotation generates a fresh root rather than using the retired one.
    let rotation = ca.rotate_root().unwrap();
    assert!(!rotation.was_staged);
    assert_ne!(rotation.signing.pem.trim(), staged.pem.trim());
}

/// The states a crash can leave: a staged key without its certificate (a staging that never
/// finished, undone), and the staged certificate without its key (an activation whose key is
/// already `ca-key.pem`, finished).
#[test]
fn a_crash_in_the_middle_of_a_step_is_resolved_at_start() {
    let dir = TempDir::new("rotation-crash");
    let ca = open(&dir.0);
    let old = ca.signing_root();
    let staged = ca.stage_root().unwrap();
    drop(ca);
    // An activation that renamed the key, not yet the certificate.
    std::fs::rename(dir.0.join("next-ca-key.pem"), dir.0.join("ca-key.pem")).unwrap();
    let ca = open(&dir.0);
    assert_eq!(ca.signing_root().trim(), staged.pem.trim());
    assert_eq!(
        trimmed(&ca.roots()),
        vec![staged.pem.trim().to_string(), old.trim().to_string()]
    );
    assert_eq!(
        issuer_of(&ca, &ca.roots()).map(|r| r.trim().to_string()),
        Some(staged.pem.trim().to_string())
    );
    drop(ca);
    // A staging that wrote the key and stopped.
    std::fs::write(dir.0.join("next-ca-key.pem"), "half").unwrap();
    let ca = open(&dir.0);
    assert!(!dir.0.join("next-ca-key.pem").exists());
    assert!(ca.trusted_roots().iter().all(|r| !r.staged));
    assert!(ca.stage_root().is_ok(), "staging works again");
}

/// Istio's `cacerts` with an intermediate under a root, as `openssl` users make them.
fn write_cacerts(dir: &Path, roots_in_file: &[&rcgen::Certificate], root: &Issued) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "intermediate");
    let root_key = rcgen::KeyPair::from_pem(&root.key.serialize_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&root.cert.pem(), root_key).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", cert.pem(), root.cert.pem()),
    )
    .unwrap();
    let listed: String = roots_in_file.iter().map(|r| r.pem()).collect();
    std::fs::write(dir.join("root-cert.pem"), listed).unwrap();
}

struct Issued {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn root(name: &str) -> Issued {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, name);
    Issued {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

#[test]
fn a_cacerts_ca_rotates_by_re_reading_the_files() {
    let dir = TempDir::new("rotation-cacerts");
    let (a, b) = (root("root-a"), root("root-b"));
    write_cacerts(&dir.0, &[&a.cert], &a);
    let ca = CertificateAuthority::from_cacerts(&dir.0, CaConfig::new(td())).unwrap();
    assert_eq!(ca.roots().len(), 1);
    // Nothing to generate, and nothing changed yet.
    assert!(matches!(
        ca.stage_root(),
        Err(CaError::NotSelfSigned { .. })
    ));
    let unchanged = ca.rotate_root().unwrap_err();
    assert!(
        unchanged.to_string().contains("replace ca-cert.pem"),
        "{unchanged}"
    );
    // Istio's way: both roots in root-cert.pem first (the new one is trusted), ...
    write_cacerts(&dir.0, &[&a.cert, &b.cert], &a);
    let trusted = ca.rotate_root().unwrap();
    assert_eq!(ca.roots().len(), 2);
    assert_eq!(trusted.signing.subject.as_deref(), Some("O=root-a"));
    // ... then an intermediate under the new root: it signs, and both stay trusted.
    write_cacerts(&dir.0, &[&b.cert, &a.cert], &b);
    let rotation = ca.rotate_root().unwrap();
    assert!(rotation.was_staged, "root-b was trusted before it signed");
    assert_eq!(rotation.signing.subject.as_deref(), Some("O=root-b"));
    assert_eq!(rotation.previous.subject.as_deref(), Some("O=root-a"));
    assert_eq!(ca.trusted_roots()[0].subject.as_deref(), Some("O=root-b"));
    assert_eq!(
        issuer_of(&ca, &ca.roots()).map(|r| r.trim().to_string()),
        Some(b.cert.pem().trim().to_string())
    );
    // The operator's files are not written to.
    assert!(!dir.0.join("trust-bundle.pem").exists());
    ca.save_trust_bundle().unwrap();
    assert!(!dir.0.join("trust-bundle.pem").exists());
}
