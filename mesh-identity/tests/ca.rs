//! The CA against openssl: issued certificates verify with `openssl verify` and carry Istio's
//! SAN, usages and validity; the root persists across restarts; Istio's `cacerts` layout signs
//! through an intermediate; bad CSRs and TTLs are refused with the reason; SVID verification
//! rejects every shape the SPIFFE rules forbid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mesh_identity::ca::{CaConfig, CaError, CertificateAuthority};
use mesh_identity::spiffe::{SpiffeId, TrustDomain};
use mesh_identity::svid::{self, SvidError};
use mesh_test_support::identity::{csr, der, td};
use mesh_test_support::temp_dir;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

fn web() -> SpiffeId {
    SpiffeId::istio(td(), "shop", "web").unwrap()
}

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)")
}

/// A CSR made by openssl with `newkey` (`rsa:2048`, `ec -pkeyopt ...`) and extra `-addext`s.
fn openssl_csr(dir: &Path, name: &str, newkey: &[&str], addext: &[&str]) -> String {
    let mut args = vec!["req", "-new", "-nodes", "-subj", "/CN=ignored"];
    args.extend_from_slice(newkey);
    for e in addext {
        args.extend_from_slice(&["-addext", e]);
    }
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    args.extend_from_slice(&["-keyout", &key, "-out", &csr]);
    let out = openssl(&args, dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join(csr)).unwrap()
}

#[test]
fn issued_certificates_verify_with_openssl_and_carry_istio_fields() {
    let dir = temp_dir("openssl");
    let ca = CertificateAuthority::self_signed(&dir.join("ca"), CaConfig::new(td())).unwrap();
    // A CSR asking for other SANs: they are ignored, the authenticated identity is used.
    let csr = openssl_csr(
        &dir,
        "leaf",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        &["subjectAltName=URI:spiffe://evil.example/ns/x/sa/y,DNS:evil.example"],
    );
    let issued = ca
        .sign_csr(&csr, &web(), Some(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(issued.chain.len(), 2);
    std::fs::write(dir.join("leaf.pem"), &issued.chain[0]).unwrap();
    std::fs::write(dir.join("root.pem"), &issued.chain[1]).unwrap();
    let out = openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-purpose",
            "sslclient",
            "leaf.pem",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-purpose",
            "sslserver",
            "leaf.pem",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text =
        String::from_utf8(openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"], &dir).stdout)
            .unwrap();
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/shop/sa/web"),
        "{text}"
    );
    assert!(!text.contains("evil"), "{text}");
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    // About one hour, backdated by a minute.
    let dates = String::from_utf8(
        openssl(
            &[
                "x509",
                "-in",
                "leaf.pem",
                "-noout",
                "-startdate",
                "-enddate",
                "-dateopt",
                "iso_8601",
            ],
            &dir,
        )
        .stdout,
    )
    .unwrap();
    assert!(
        dates.contains("notBefore=") && dates.contains("notAfter="),
        "{dates}"
    );
    let left = issued
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    // The root is a CA for signing certificates only.
    let root =
        String::from_utf8(openssl(&["x509", "-in", "root.pem", "-noout", "-text"], &dir).stdout)
            .unwrap();
    assert!(
        root.contains("CA:TRUE") && root.contains("Certificate Sign, CRL Sign"),
        "{root}"
    );
    // RSA CSRs are accepted too.
    for bits in ["2048", "3072"] {
        let csr = openssl_csr(
            &dir,
            &format!("rsa{bits}"),
            &["-newkey", &format!("rsa:{bits}")],
            &[],
        );
        let issued = ca.sign_csr(&csr, &web(), None).unwrap();
        std::fs::write(dir.join("rsa.pem"), &issued.chain[0]).unwrap();
        let out = openssl(&["verify", "-CAfile", "root.pem", "rsa.pem"], &dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_root_is_kept_private_and_reused_after_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("restart");
    let ca = CertificateAuthority::self_signed(&dir, CaConfig::new(td())).unwrap();
    let issued = ca.sign_csr(&csr(), &web(), None).unwrap();
    let mode = std::fs::metadata(dir.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(ca);
    let again = CertificateAuthority::self_signed(&dir, CaConfig::new(td())).unwrap();
    assert_eq!(again.roots(), vec![issued.chain[1].clone()]);
    let roots: Vec<_> = again.roots().iter().map(|p| der(p)).collect();
    let id = svid::verify(
        &[der(&issued.chain[0])],
        &roots,
        UnixTime::now(),
        true,
        Some(&td()),
    )
    .unwrap();
    assert_eq!(id, web());
    // A damaged key file is an error naming the file, not a new root.
    std::fs::write(dir.join("ca-key.pem"), "garbage").unwrap();
    let err = CertificateAuthority::self_signed(&dir, CaConfig::new(td())).unwrap_err();
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn istio_cacerts_sign_through_the_intermediate() {
    let dir = temp_dir("cacerts");
    // Root and intermediate made by openssl, in Istio's plug-in layout.
    let run = |args: &[&str]| {
        let out = openssl(args, &dir);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/O=cluster.local/CN=Root CA",
        "-keyout",
        "root-key.pem",
        "-out",
        "root-cert.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/O=cluster.local/CN=Intermediate CA",
        "-keyout",
        "ca-key-ec.pem",
        "-out",
        "ca.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        "root-cert.pem",
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "ext.cnf",
        "-extensions",
        "ca",
        "-out",
        "ca-cert.pem",
    ]);
    // rcgen reads PKCS#8 keys.
    run(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "ca-key-ec.pem",
        "-out",
        "ca-key.pem",
    ]);
    let chain = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();

    let ca = CertificateAuthority::from_cacerts(&dir, CaConfig::new(td())).unwrap();
    let issued = ca.sign_csr(&csr(), &web(), None).unwrap();
    assert_eq!(issued.chain.len(), 3, "leaf, intermediate, root");
    std::fs::write(dir.join("leaf.pem"), &issued.chain[0]).unwrap();
    std::fs::write(dir.join("inter.pem"), &issued.chain[1]).unwrap();
    run(&[
        "verify",
        "-CAfile",
        "root-cert.pem",
        "-untrusted",
        "inter.pem",
        "leaf.pem",
    ]);
    let roots = vec![der(
        &std::fs::read_to_string(dir.join("root-cert.pem")).unwrap()
    )];
    let chain: Vec<_> = issued.chain[..2].iter().map(|p| der(p)).collect();
    assert_eq!(
        svid::verify(&chain, &roots, UnixTime::now(), false, Some(&td())).unwrap(),
        web()
    );
    // Without the intermediate the leaf does not chain to the root.
    assert!(matches!(
        svid::verify(&chain[..1], &roots, UnixTime::now(), false, None),
        Err(SvidError::Chain(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_csrs_and_ttls_are_refused_with_the_reason() {
    let dir = temp_dir("badcsr");
    let config = CaConfig::new(td()).with_max_ttl(Duration::from_secs(48 * 3600));
    let ca = CertificateAuthority::self_signed(&dir.join("ca"), config).unwrap();
    let ok = csr();
    let err = |csr: &str| ca.sign_csr(csr, &web(), None).unwrap_err();
    assert!(
        matches!(err("garbage"), CaError::InvalidCsr(_)),
        "{}",
        err("garbage")
    );
    // A CSR whose signature does not match its key: no proof of possession.
    let mut bytes = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(ok.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64(&bytes)
    );
    match err(&tampered) {
        CaError::InvalidCsr(why) => assert!(why.contains("proof of possession"), "{why}"),
        other => panic!("{other}"),
    }
    for (name, newkey) in [
        (
            "p384",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1"],
        ),
        ("ed25519", vec!["-newkey", "ed25519"]),
        ("rsa1024", vec!["-newkey", "rsa:1024"]),
    ] {
        let csr = openssl_csr(&dir, name, &newkey, &[]);
        assert!(
            matches!(err(&csr), CaError::WrongKeyType(_)),
            "{name}: {}",
            err(&csr)
        );
    }
    let ca_csr = openssl_csr(
        &dir,
        "ca",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        &["basicConstraints=critical,CA:TRUE"],
    );
    assert!(
        matches!(err(&ca_csr), CaError::CaRequested),
        "{}",
        err(&ca_csr)
    );
    match ca.sign_csr(&ok, &web(), Some(Duration::from_secs(49 * 3600))) {
        Err(CaError::TtlTooLong { requested, max }) => {
            assert_eq!(requested, Duration::from_secs(49 * 3600));
            assert_eq!(max, Duration::from_secs(48 * 3600));
        }
        other => panic!("{other:?}"),
    }
    let foreign = SpiffeId::istio(TrustDomain::new("other.td").unwrap(), "a", "b").unwrap();
    assert!(matches!(
        ca.sign_csr(&ok, &foreign, None),
        Err(CaError::ForeignIdentity { .. })
    ));
    // The good CSR still signs.
    assert!(ca.sign_csr(&ok, &web(), None).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Certificates the SPIFFE rules forbid, signed by the CA's own root key (so the chain itself
/// is fine), and chains that fail ordinary validation.
#[test]
fn svid_verification_rejects_what_spiffe_forbids() {
    let dir = temp_dir("svid");
    let ca = CertificateAuthority::self_signed(&dir, CaConfig::new(td())).unwrap();
    let root_pem = ca.roots()[0].clone();
    let roots = vec![der(&root_pem)];
    let root_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca-key.pem")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&root_pem, root_key).unwrap();
    let leaf = |edit: &dyn Fn(&mut rcgen::CertificateParams)| {
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/a/sa/b".try_into().unwrap(),
        )];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        edit(&mut p);
        let key = rcgen::KeyPair::generate().unwrap();
        p.signed_by(&key, &issuer).unwrap().der().clone()
    };
    let check = |cert: CertificateDer<'static>| {
        svid::verify(&[cert], &roots, UnixTime::now(), true, Some(&td()))
    };
    // The well-formed one passes: the cases below fail for their own reason only.
    assert!(check(leaf(&|_| {})).is_ok());
    assert!(matches!(
        check(leaf(&|p| p.subject_alt_names.clear())),
        Err(SvidError::NoUriSan)
    ));
    assert!(matches!(
        check(leaf(&|p| p.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/x".try_into().unwrap()
        )))),
        Err(SvidError::MultipleUriSans(2))
    ));
    assert!(matches!(
        check(leaf(&|p| p.subject_alt_names = vec![rcgen::SanType::URI(
            "https://cluster.local/x".try_into().unwrap()
        )])),
        Err(SvidError::NotSpiffe { .. })
    ));
    assert!(matches!(
        check(leaf(
            &|p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        )),
        Err(SvidError::LeafIsCa)
    ));
    assert!(matches!(
        check(leaf(&|p| p.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign
        ])),
        Err(SvidError::LeafCanSign)
    ));
    assert!(matches!(
        check(leaf(&|p| p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://other.td/ns/a/sa/b".try_into().unwrap()
        )])),
        Err(SvidError::WrongTrustDomain { .. })
    ));
    // The root itself is not an SVID.
    assert!(matches!(check(der(&root_pem)), Err(SvidError::LeafIsCa)));
    // Expired: checked at a time after notAfter.
    let expired = leaf(&|p| {
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
        p.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    });
    assert!(matches!(check(expired), Err(SvidError::Chain(_))));
    // Signed by a root nobody trusts.
    let other = CertificateAuthority::self_signed(&dir.join("other"), CaConfig::new(td())).unwrap();
    let stranger = other.sign_csr(&csr(), &web(), None).unwrap();
    assert!(matches!(
        check(der(&stranger.chain[0])),
        Err(SvidError::Chain(_))
    ));
    assert!(matches!(
        svid::verify(&[], &roots, UnixTime::now(), true, None),
        Err(SvidError::Empty)
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trust_bundles_carry_both_roots_during_a_rotation() {
    let (a, b) = (temp_dir("rot-a"), temp_dir("rot-b"));
    let old = CertificateAuthority::self_signed(&a, CaConfig::new(td())).unwrap();
    let new = CertificateAuthority::self_signed(&b, CaConfig::new(td())).unwrap();
    let issued_old = old.sign_csr(&csr(), &web(), None).unwrap();
    // The new CA trusts the old root while certificates it signed are still in use.
    new.add_root(&old.roots()[0]);
    new.add_root(&old.roots()[0]);
    assert_eq!(new.roots().len(), 2);
    let bundle: Vec<_> = new.roots().iter().map(|p| der(p)).collect();
    let issued_new = new.sign_csr(&csr(), &web(), None).unwrap();
    for leaf in [&issued_old.chain[0], &issued_new.chain[0]] {
        assert!(svid::verify(&[der(leaf)], &bundle, UnixTime::now(), true, Some(&td())).is_ok());
    }
    new.retire_root(&old.roots()[0]);
    new.retire_root(&new.roots()[0]);
    assert_eq!(
        new.roots().len(),
        1,
        "the signer's own root is never retired"
    );
    let bundle: Vec<_> = new.roots().iter().map(|p| der(p)).collect();
    assert!(
        svid::verify(
            &[der(&issued_old.chain[0])],
            &bundle,
            UnixTime::now(),
            true,
            None
        )
        .is_err()
    );
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}
