//! The CA's files: a generated self-signed root, or Istio's `cacerts` layout.
//!
//! A self-signed CA's directory:
//!
//! - `root-cert.pem`, `ca-key.pem` (mode 0600): the root that signs.
//! - `trust-bundle.pem`: every trusted root, the signing one first; written when the root is
//!   generated and on every change, read at start (a restart keeps trusting what was trusted).
//! - `next-root-cert.pem`, `next-ca-key.pem`: a staged root, trusted but not signing yet.
//!
//! Writes are ordered so that a crash leaves a state the next start understands: a staged root
//! is written key first, so a key without its certificate is a staging that never finished
//! (removed at start); activation renames the key before the certificate, so a staged
//! certificate without its key is an activation to finish (its key is already `ca-key.pem`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{CaConfig, CaError, root_name};

pub(crate) const ROOT_CERT: &str = "root-cert.pem";
const ROOT_KEY: &str = "ca-key.pem";
pub(crate) const TRUST_BUNDLE: &str = "trust-bundle.pem";
pub(crate) const NEXT_CERT: &str = "next-root-cert.pem";
const NEXT_KEY: &str = "next-ca-key.pem";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::BadFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Loads `root-cert.pem` and `ca-key.pem` from `dir`, or generates and writes them.
pub(super) fn load_or_create_root(
    dir: &Path,
    config: &CaConfig,
) -> Result<(String, KeyPair), CaError> {
    let (cert_path, key_path) = (dir.join(ROOT_CERT), dir.join(ROOT_KEY));
    if cert_path.exists() || key_path.exists() {
        let cert = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        certificates(&cert, &cert_path)?;
        let key = KeyPair::from_pem(&key).map_err(|e| bad(&key_path, e.to_string()))?;
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (cert, key) = generate_root(config)?;
    // The key first, private from its first byte; the certificate last, so that a crash in
    // between leaves no certificate without its key.
    write_file(&key_path, &key.serialize_pem(), 0o600)?;
    write_file(&cert_path, &cert, 0o644)?;
    write_bundle(dir, std::slice::from_ref(&cert))?;
    Ok((cert, key))
}

/// A new self-signed root (ECDSA P-256) for the trust domain: its PEM certificate and key.
pub(super) fn generate_root(config: &CaConfig) -> Result<(String, KeyPair), CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = root_name(config);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = now.checked_sub(config.backdate).unwrap_or(now).into();
    params.not_after = (now + config.root_ttl).into();
    params.serial_number = Some(super::random_serial()?);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

/// Puts the directory back in a state [`load_or_create_root`] and [`load_staged`] read: an
/// activation that stopped between its two renames is finished, a staging that stopped before
/// its certificate was written is undone.
pub(super) fn recover(dir: &Path) -> Result<(), CaError> {
    let (next_cert, next_key) = (dir.join(NEXT_CERT), dir.join(NEXT_KEY));
    match (next_cert.exists(), next_key.exists()) {
        (true, false) => {
            std::fs::rename(&next_cert, dir.join(ROOT_CERT)).map_err(io(&next_cert))?;
            sync_dir(dir)
        }
        (false, true) => std::fs::remove_file(&next_key).map_err(io(&next_key)),
        _ => Ok(()),
    }
}

/// The staged root, if there is one.
pub(super) fn load_staged(dir: &Path) -> Result<Option<(String, KeyPair)>, CaError> {
    let (cert_path, key_path) = (dir.join(NEXT_CERT), dir.join(NEXT_KEY));
    if !cert_path.exists() {
        return Ok(None);
    }
    let cert = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    certificates(&cert, &cert_path)?;
    let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let key = KeyPair::from_pem(&key).map_err(|e| bad(&key_path, e.to_string()))?;
    Ok(Some((cert, key)))
}

/// Writes a staged root (key first).
pub(super) fn write_staged(dir: &Path, cert: &str, key: &KeyPair) -> Result<(), CaError> {
    write_file(&dir.join(NEXT_KEY), &key.serialize_pem(), 0o600)?;
    write_file(&dir.join(NEXT_CERT), cert, 0o644)?;
    sync_dir(dir)
}

/// Removes a staged root's files (those that are there).
pub(super) fn remove_staged(dir: &Path) -> Result<(), CaError> {
    for name in [NEXT_CERT, NEXT_KEY] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
            _ => {}
        }
    }
    sync_dir(dir)
}

/// Makes the staged root the signing one: its key becomes `ca-key.pem`, then its certificate
/// `root-cert.pem` (see the module docs for a crash in between).
pub(super) fn activate_staged(dir: &Path) -> Result<(), CaError> {
    let next_key = dir.join(NEXT_KEY);
    std::fs::rename(&next_key, dir.join(ROOT_KEY)).map_err(io(&next_key))?;
    let next_cert = dir.join(NEXT_CERT);
    std::fs::rename(&next_cert, dir.join(ROOT_CERT)).map_err(io(&next_cert))?;
    sync_dir(dir)
}

/// The roots of `trust-bundle.pem`; none if there is no such file.
pub(super) fn read_bundle(dir: &Path) -> Result<Vec<String>, CaError> {
    let path = dir.join(TRUST_BUNDLE);
    match std::fs::read_to_string(&path) {
        Ok(text) => certificates(&text, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Replaces `trust-bundle.pem` atomically (a temporary file renamed over it).
pub(super) fn write_bundle(dir: &Path, roots: &[String]) -> Result<(), CaError> {
    let tmp = dir.join(format!("{TRUST_BUNDLE}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let text: String = roots
        .iter()
        .map(|r| format!("{}\n", r.trim_end()))
        .collect();
    write_file(&tmp, &text, 0o644)?;
    let path = dir.join(TRUST_BUNDLE);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

/// Makes renames and new files in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// PEM certificates of a file, one string each; an error if there are none or one is bad.
pub(crate) fn certificates(text: &str, path: &Path) -> Result<Vec<String>, CaError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(bad(path, "unterminated PEM certificate"));
        };
        let block = &rest[start..start + len + END.len()];
        CertificateDer::from_pem_slice(block.as_bytes())
            .map_err(|e| bad(path, format!("bad PEM certificate: {e}")))?;
        out.push(format!("{block}\n"));
        rest = &rest[start + len + END.len()..];
    }
    if out.is_empty() {
        return Err(bad(path, "no PEM certificate"));
    }
    Ok(out)
}

/// Istio's plugged-in CA files.
pub(super) struct Plugged {
    pub(super) ca_cert: String,
    pub(super) key: KeyPair,
    /// The signing certificate up to and including its root.
    pub(super) chain: Vec<String>,
    /// Every root of `root-cert.pem`, the signing certificate's first (Istio puts the old and
    /// the new root there during a root rotation).
    pub(super) roots: Vec<String>,
}

pub(super) fn load_cacerts(dir: &Path) -> Result<Plugged, CaError> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(io(&p))
    };
    let ca_cert_path = dir.join("ca-cert.pem");
    let ca_cert = certificates(&read("ca-cert.pem")?, &ca_cert_path)?
        .into_iter()
        .next()
        .ok_or_else(|| bad(&ca_cert_path, "no certificate"))?;
    let key_path = dir.join("ca-key.pem");
    let key = KeyPair::from_pem(&read("ca-key.pem")?).map_err(|e| bad(&key_path, e.to_string()))?;
    let chain_path = dir.join("cert-chain.pem");
    let mut chain = certificates(&read("cert-chain.pem")?, &chain_path)?;
    if chain.first().map(|c| c.trim()) != Some(ca_cert.trim()) {
        chain.insert(0, ca_cert.clone());
    }
    let root_path = dir.join(ROOT_CERT);
    let mut roots = certificates(&read(ROOT_CERT)?, &root_path)?;
    // The chain's root: the one it ends with if that is listed, else the first listed.
    let signing = roots
        .iter()
        .position(|r| chain.last().map(|c| c.trim()) == Some(r.trim()))
        .unwrap_or(0);
    let root = roots.remove(signing);
    if chain.last().map(|c| c.trim()) != Some(root.trim()) {
        chain.push(root.clone());
    }
    roots.insert(0, root);
    Ok(Plugged {
        ca_cert,
        key,
        chain,
        roots,
    })
}
