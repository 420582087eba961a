//! Gateway credentials (`credentialName`): certificates the control plane serves to gateways
//! itself over their ADS stream, as istiod serves Kubernetes secrets (reference: security
//! §6.1). A Gateway server's `credentialName: x` becomes the SDS secrets `kubernetes://x` (the
//! certificate and key) and, for MUTUAL, `kubernetes://x-cacert` (the CA that verifies
//! clients), answered from a [`Credentials`] set the caller keeps current (from a directory,
//! and later from Kubernetes secrets).
//!
//! ```
//! use mesh_xds::credentials::{Credential, Credentials, sds_name};
//!
//! let mut creds = Credentials::default();
//! creds.insert("shop-cert", Credential {
//!     cert_chain: "-----BEGIN CERTIFICATE-----\n...".into(),
//!     key: "-----BEGIN PRIVATE KEY-----\n...".into(),
//!     ca: None,
//! });
//! assert_eq!(sds_name("shop-cert"), "kubernetes://shop-cert");
//! assert!(creds.get("kubernetes://shop-cert").is_some());
//! assert!(creds.get("kubernetes://shop-cert-cacert").is_none()); // no CA in it
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};

/// One credential: a certificate chain and its key, and optionally the CA certificates that
/// verify peers (Kubernetes' `tls.crt`, `tls.key`, `ca.crt`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The certificate chain, PEM.
    pub cert_chain: String,
    /// The private key, PEM.
    pub key: String,
    /// CA certificates, PEM.
    pub ca: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field(
                "cert_chain",
                &format_args!("{} bytes", self.cert_chain.len()),
            )
            .field("key", &"[redacted]")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// A problem reading credentials from a directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// A file could not be read.
    #[error("credential {name:?}: reading {path}: {source}")]
    Read {
        /// The credential.
        name: String,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A credential directory lacks its certificate or key.
    #[error(
        "credential {name:?}: {missing} is missing (a credential is NAME/tls.crt, NAME/tls.key and optionally NAME/ca.crt)"
    )]
    Incomplete {
        /// The credential.
        name: String,
        /// The missing file.
        missing: &'static str,
    },
    /// A file is not PEM.
    #[error("credential {name:?}: {file} holds no PEM block")]
    NotPem {
        /// The credential.
        name: String,
        /// The file.
        file: &'static str,
    },
}

/// The credentials gateways may name, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    by_name: BTreeMap<String, Credential>,
}

/// The SDS secret name of credential `name` (`kubernetes://NAME`).
pub fn sds_name(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The SDS secret name of credential `name`'s CA (`kubernetes://NAME-cacert`).
pub fn sds_ca_name(name: &str) -> String {
    format!("{PREFIX}{name}{CA_SUFFIX}")
}

const PREFIX: &str = "kubernetes://";
const CA_SUFFIX: &str = "-cacert";

impl Credentials {
    /// Adds (or replaces) a credential.
    pub fn insert(&mut self, name: impl Into<String>, credential: Credential) {
        self.by_name.insert(name.into(), credential);
    }

    /// Credential names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The SDS secret of that name (`kubernetes://NAME` or `kubernetes://NAME-cacert`, also
    /// `NAME` alone), if the credential exists (and, for `-cacert`, has a CA): Istio's
    /// `Secret` shapes, with inline bytes.
    pub fn get(&self, sds_name: &str) -> Option<Secret> {
        let bare = sds_name.strip_prefix(PREFIX).unwrap_or(sds_name);
        let inline = |s: &str| DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(s.as_bytes().to_vec())),
            ..Default::default()
        };
        if let Some(c) = self.by_name.get(bare) {
            return Some(Secret {
                name: sds_name.to_string(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(inline(&c.cert_chain)),
                    private_key: Some(inline(&c.key)),
                    ..Default::default()
                })),
            });
        }
        let owner = bare.strip_suffix(CA_SUFFIX)?;
        let ca = self.by_name.get(owner)?.ca.as_ref()?;
        Some(Secret {
            name: sds_name.to_string(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(ca)),
                    ..Default::default()
                },
            )),
        })
    }

    /// Reads `dir/NAME/{tls.crt,tls.key[,ca.crt]}` for every subdirectory NAME (Kubernetes'
    /// TLS secret layout; `cert`, `key`, `cacert` are accepted too). A broken credential is
    /// reported and left out; the others are read.
    pub fn read_dir(dir: &Path) -> (Credentials, Vec<CredentialError>) {
        let mut out = Credentials::default();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return (out, problems);
        };
        let mut dirs: Vec<_> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .collect();
        dirs.sort_by_key(|e| e.file_name());
        for e in dirs {
            let name = e.file_name().to_string_lossy().to_string();
            match read_one(&e.path(), &name) {
                Ok(c) => out.insert(name, c),
                Err(err) => problems.push(err),
            }
        }
        (out, problems)
    }
}

fn read_one(dir: &Path, name: &str) -> Result<Credential, CredentialError> {
    let read = |files: &[&'static str]| -> Result<Option<(String, &'static str)>, CredentialError> {
        for f in files {
            let path = dir.join(f);
            match std::fs::read_to_string(&path) {
                Ok(s) => return Ok(Some((s, *f))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CredentialError::Read {
                        name: name.to_string(),
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        Ok(None)
    };
    let pem = |v: Option<(String, &'static str)>,
               missing: &'static str|
     -> Result<String, CredentialError> {
        let (s, file) = v.ok_or(CredentialError::Incomplete {
            name: name.to_string(),
            missing,
        })?;
        if !s.contains("-----BEGIN ") {
            return Err(CredentialError::NotPem {
                name: name.to_string(),
                file,
            });
        }
        Ok(s)
    };
    let cert_chain = pem(read(&["tls.crt", "cert"])?, "tls.crt")?;
    let key = pem(read(&["tls.key", "key"])?, "tls.key")?;
    let ca = match read(&["ca.crt", "cacert"])? {
        None => None,
        some => Some(pem(some, "ca.crt")?),
    };
    Ok(Credential {
        cert_chain,
        key,
        ca,
    })
}
