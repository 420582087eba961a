//! The CA's files: a generated self-signed root, or Istio's `cacerts` layout.

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
    // The key first, private from its first byte; the certificate last, so that a crash in
    // between leaves no certificate without its key.
    write_file(&key_path, &key.serialize_pem(), 0o600)?;
    write_file(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert.pem(), key))
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
    /// The signing certificate up to the root.
    pub(super) chain: Vec<String>,
    pub(super) root: String,
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
    let root = certificates(&read(ROOT_CERT)?, &root_path)?
        .into_iter()
        .next()
        .ok_or_else(|| bad(&root_path, "no certificate"))?;
    if chain.last().map(|c| c.trim()) != Some(root.trim()) {
        chain.push(root.clone());
    }
    Ok(Plugged {
        ca_cert,
        key,
        chain,
        root,
    })
}
