//! A certificate authority that signs CSRs into short-lived X.509-SVIDs.
//!
//! The signer is either a self-signed root generated on first start and kept in a directory
//! (`root-cert.pem`, `ca-key.pem` with mode 0600; a restart reuses it, so issued certificates
//! stay valid), or an intermediate plugged in with Istio's `cacerts` layout (`ca-cert.pem`,
//! `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`).
//!
//! Root rotation without restarts ([`CertificateAuthority::stage_root`],
//! [`rotate_root`](CertificateAuthority::rotate_root),
//! [`retire_root`](CertificateAuthority::retire_root)): a new root is trusted first (every
//! certificate response carries the whole trust bundle, so workloads pick it up at their next
//! renewal), then signs, and the old one is trusted until it is retired. A self-signed CA keeps
//! all of it in its directory (`trust-bundle.pem`, and the staged root), so a restart resumes
//! where it was; a CA on Istio's `cacerts` re-reads those files, which the operator replaces.
//!
//! Leaf certificates follow Istio: the only SAN is the URI of the authenticated identity (SANs
//! asked for in the CSR are ignored), an empty subject with a critical SAN extension, digital
//! signature and key encipherment key usages, server and client auth, a one-minute backdate for
//! clock skew, 24 h by default and never more than the configured maximum.

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
mod rotation;
mod store;

pub use rotation::{RootRotation, TrustedRoot};

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

use crate::spiffe::{SpiffeId, TrustDomain};

/// Settings of a CA.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CaConfig {
    /// The trust domain certificates are issued in.
    pub trust_domain: TrustDomain,
    /// TTL when a request asks for none: 24 h, as Istio.
    pub default_ttl: Duration,
    /// Longest TTL granted; longer requests are refused (Istio: 90 days).
    pub max_ttl: Duration,
    /// How far `notBefore` is set in the past, for clock skew.
    pub backdate: Duration,
    /// Validity of a generated self-signed root (10 years).
    pub root_ttl: Duration,
}

impl CaConfig {
    /// Istio's defaults for a trust domain.
    pub fn new(trust_domain: TrustDomain) -> CaConfig {
        CaConfig {
            trust_domain,
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
            backdate: Duration::from_secs(60),
            root_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
        }
    }

    /// Overrides the maximum TTL.
    #[must_use]
    pub fn with_max_ttl(mut self, ttl: Duration) -> CaConfig {
        self.max_ttl = ttl;
        self
    }

    /// Overrides the default TTL.
    #[must_use]
    pub fn with_default_ttl(mut self, ttl: Duration) -> CaConfig {
        self.default_ttl = ttl;
        self
    }
}

/// Why the CA could not start or sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Reading or writing the CA directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A CA file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The CSR is not a well-formed, correctly signed PKCS#10 request.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// The CSR's key is neither ECDSA P-256 nor RSA 2048/3072/4096.
    #[error("unsupported key type in CSR: {0}")]
    WrongKeyType(String),
    /// The CSR asks for a CA certificate.
    #[error("CSR asks for a CA certificate")]
    CaRequested,
    /// The requested TTL is above the maximum.
    #[error("requested TTL {requested:?} is greater than the max allowed TTL {max:?}")]
    TtlTooLong {
        /// Requested.
        requested: Duration,
        /// Allowed.
        max: Duration,
    },
    /// The system's random number generator failed.
    #[error("no randomness for a serial number")]
    Random,
    /// The identity is in another trust domain than the CA's.
    #[error("identity {id} is not in trust domain {trust_domain}")]
    ForeignIdentity {
        /// The identity.
        id: String,
        /// The CA's trust domain.
        trust_domain: String,
    },
    /// Staging a root needs a self-signed CA; a CA on Istio's `cacerts` is rotated with its
    /// files.
    #[error(
        "this CA signs with Istio's cacerts in {dir}: it cannot generate a root; add the new root to root-cert.pem (and later replace ca-cert.pem, ca-key.pem and cert-chain.pem), then rotate to re-read the files"
    )]
    NotSelfSigned {
        /// The `cacerts` directory.
        dir: String,
    },
    /// A `cacerts` rotation found the files as they were.
    #[error(
        "the cacerts files in {dir} are the ones in use: replace ca-cert.pem, ca-key.pem and cert-chain.pem (or add a root to root-cert.pem) first"
    )]
    Unchanged {
        /// The `cacerts` directory.
        dir: String,
    },
}

/// The signing certificate and key, and the chain above it.
struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate, then its issuers up to and including the root; PEM. For a
    /// self-signed root, only the root.
    chain: Vec<String>,
}

impl Signer {
    /// A self-signed root and its key; `path` names the certificate's file in errors.
    fn self_signed(cert_pem: String, key: KeyPair, path: &Path) -> Result<Signer, CaError> {
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CaError::BadFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Signer {
            issuer,
            chain: vec![cert_pem],
        })
    }

    /// The root the chain ends with.
    fn root(&self) -> &str {
        self.chain.last().map_or("", String::as_str)
    }
}

/// Where the CA's files are, and in which layout.
#[derive(Debug)]
enum Files {
    /// A self-signed root kept by the CA.
    SelfSigned(PathBuf),
    /// Istio's `cacerts`, kept by the operator.
    Cacerts(PathBuf),
}

/// What changes at a root rotation.
struct State {
    signer: Arc<Signer>,
    /// Trusted roots, PEM: the signer's root first, then roots kept during a rotation.
    roots: Vec<String>,
    /// A self-signed root that is trusted and signs at the next rotation.
    staged: Option<Arc<Signer>>,
}

/// A certificate authority for one trust domain.
pub struct CertificateAuthority {
    config: CaConfig,
    files: Files,
    state: RwLock<State>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        let state = self.read();
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.config.trust_domain)
            .field("files", &self.files)
            .field("chain_len", &state.signer.chain.len())
            .field("roots", &state.roots.len())
            .field("staged", &state.staged.is_some())
            .finish_non_exhaustive()
    }
}

/// A signed certificate chain: the leaf first, the root last (Istio's `cert_chain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedChain {
    /// PEM certificates, leaf first, root last.
    pub chain: Vec<String>,
    /// When the leaf expires.
    pub not_after: SystemTime,
}

impl CertificateAuthority {
    /// A CA whose self-signed root lives in `dir`: generated (ECDSA P-256) on first start and
    /// written as `root-cert.pem` and `ca-key.pem` (mode 0600), reused afterwards. It also
    /// trusts the roots of `dir/trust-bundle.pem` and a staged root (`next-root-cert.pem`),
    /// which a rotation before the restart left there.
    pub fn self_signed(dir: &Path, config: CaConfig) -> Result<CertificateAuthority, CaError> {
        if dir.exists() {
            store::recover(dir)?;
        }
        let (cert_pem, key) = store::load_or_create_root(dir, &config)?;
        let signer = Signer::self_signed(cert_pem, key, &dir.join(store::ROOT_CERT))?;
        let staged = store::load_staged(dir)?
            .map(|(cert, key)| Signer::self_signed(cert, key, &dir.join(store::NEXT_CERT)))
            .transpose()?
            .map(Arc::new);
        let mut roots = vec![signer.root().to_string()];
        let extra = store::read_bundle(dir)?;
        for root in extra
            .iter()
            .map(String::as_str)
            .chain(staged.as_ref().map(|s| s.root()))
        {
            if !roots.iter().any(|r| r.trim() == root.trim()) {
                roots.push(root.to_string());
            }
        }
        Ok(CertificateAuthority {
            config,
            files: Files::SelfSigned(dir.to_path_buf()),
            state: RwLock::new(State {
                signer: Arc::new(signer),
                roots,
                staged,
            }),
        })
    }

    /// A CA signing with an intermediate from Istio's `cacerts` layout in `dir`: `ca-cert.pem`
    /// and `ca-key.pem` (the signer), `cert-chain.pem` (the signer's chain up to the root) and
    /// `root-cert.pem` (the root; when it lists several, as during Istio's root rotation, all
    /// of them are trusted).
    pub fn from_cacerts(dir: &Path, config: CaConfig) -> Result<CertificateAuthority, CaError> {
        let (signer, roots) = Self::plugged(dir)?;
        Ok(CertificateAuthority {
            config,
            files: Files::Cacerts(dir.to_path_buf()),
            state: RwLock::new(State {
                signer: Arc::new(signer),
                roots,
                staged: None,
            }),
        })
    }

    /// The signer and roots of Istio's `cacerts` in `dir`.
    fn plugged(dir: &Path) -> Result<(Signer, Vec<String>), CaError> {
        let plugged = store::load_cacerts(dir)?;
        let issuer = Issuer::from_ca_cert_pem(&plugged.ca_cert, plugged.key).map_err(|e| {
            CaError::BadFile {
                path: dir.join("ca-cert.pem").display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let signer = Signer {
            issuer,
            chain: plugged.chain,
        };
        Ok((signer, plugged.roots))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn signer(&self) -> Arc<Signer> {
        self.read().signer.clone()
    }

    /// The CA's settings.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The trust bundle: every root certificate currently trusted, PEM, the signing root
    /// first.
    pub fn roots(&self) -> Vec<String> {
        self.read().roots.clone()
    }

    /// The root that certificates issued now chain to, PEM.
    pub fn signing_root(&self) -> String {
        self.read().signer.root().to_string()
    }

    /// Adds a root to the trust bundle, in memory only (a restart forgets it unless
    /// [`save_trust_bundle`](Self::save_trust_bundle) is called); the old one stays until
    /// [`retire_root`](Self::retire_root). [`stage_root`](Self::stage_root) generates one and
    /// keeps it.
    pub fn add_root(&self, pem: &str) {
        let mut state = self.write();
        if !state.roots.iter().any(|r| r.trim() == pem.trim()) {
            state.roots.push(pem.to_string());
        }
    }

    /// Removes a root from the trust bundle, in memory only (see
    /// [`save_trust_bundle`](Self::save_trust_bundle)); the signer's own root is never
    /// removed. Retiring the staged root unstages it.
    pub fn retire_root(&self, pem: &str) {
        let mut state = self.write();
        let own = state.signer.root().trim().to_string();
        state
            .roots
            .retain(|r| r.trim() != pem.trim() || r.trim() == own);
        if state
            .staged
            .as_ref()
            .is_some_and(|s| s.root().trim() == pem.trim())
        {
            state.staged = None;
        }
    }

    /// Signs a PEM CSR for `identity` (already authenticated and authorized by the caller).
    /// The CSR proves possession of its key (its signature is checked); its key must be
    /// ECDSA P-256 or RSA 2048/3072/4096; its subject and SANs are ignored; a request for a CA
    /// certificate is refused. `ttl` of `None` means the default.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<IssuedChain, CaError> {
        let ttl = ttl.unwrap_or(self.config.default_ttl);
        self.check_request(identity, Some(ttl))?;
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CaError::InvalidCsr(format!("not a PEM certificate request: {e}")))?;
        check_key_type(&der)?;
        let mut csr = CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => {
                CaError::InvalidCsr("signature does not verify (no proof of possession)".into())
            }
            other => CaError::InvalidCsr(other.to_string()),
        })?;
        if matches!(csr.params.is_ca, IsCa::Ca(_)) {
            return Err(CaError::CaRequested);
        }
        let (params, not_after) = self.leaf_params(vec![uri_san(identity)?], ttl)?;
        csr.params = params;
        let signer = self.signer();
        let leaf = csr.signed_by(&signer.issuer)?;
        Ok(IssuedChain {
            chain: chain_for(&signer, leaf.pem()),
            not_after,
        })
    }

    /// The identity must be in the CA's trust domain and the TTL within the maximum.
    fn check_request(&self, identity: &SpiffeId, ttl: Option<Duration>) -> Result<(), CaError> {
        if identity.trust_domain() != &self.config.trust_domain {
            return Err(CaError::ForeignIdentity {
                id: identity.to_string(),
                trust_domain: self.config.trust_domain.to_string(),
            });
        }
        let ttl = ttl.unwrap_or(self.config.default_ttl);
        if ttl > self.config.max_ttl {
            return Err(CaError::TtlTooLong {
                requested: ttl,
                max: self.config.max_ttl,
            });
        }
        Ok(())
    }

    /// Istio's leaf: empty subject, these SANs, not a CA, digital signature and key
    /// encipherment, server and client auth, backdated, a random serial.
    fn leaf_params(
        &self,
        sans: Vec<SanType>,
        ttl: Duration,
    ) -> Result<(CertificateParams, SystemTime), CaError> {
        let now = SystemTime::now();
        let not_before = now.checked_sub(self.config.backdate).unwrap_or(now);
        let not_after = now + ttl;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        Ok((params, not_after))
    }
}

/// The leaf, the signer's chain, and the root last.
fn chain_for(signer: &Signer, leaf_pem: String) -> Vec<String> {
    let mut chain = vec![leaf_pem];
    chain.extend(signer.chain.iter().cloned());
    chain
}

fn uri_san(id: &SpiffeId) -> Result<SanType, CaError> {
    Ok(SanType::URI(id.to_string().try_into().map_err(
        |e: rcgen::Error| CaError::InvalidCsr(e.to_string()),
    )?))
}

impl CertificateAuthority {
    /// Issues a serving certificate with a fresh ECDSA P-256 key for the CA's own servers (the
    /// control plane's gRPC port): DNS SANs `dns_names` and the URI SAN `id`, server and client
    /// auth. Returns the chain (leaf first, root last) and the PEM PKCS#8 key.
    pub fn issue_serving(
        &self,
        dns_names: &[String],
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<(IssuedChain, String), CaError> {
        self.check_request(id, Some(ttl))?;
        let key = KeyPair::generate()?;
        let mut sans = vec![uri_san(id)?];
        for name in dns_names {
            sans.push(SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| CaError::InvalidCsr(e.to_string()))?,
            ));
        }
        let (params, not_after) = self.leaf_params(sans, ttl)?;
        let signer = self.signer();
        let leaf = params.signed_by(&key, &signer.issuer)?;
        let issued = IssuedChain {
            chain: chain_for(&signer, leaf.pem()),
            not_after,
        };
        Ok((issued, key.serialize_pem()))
    }
}

/// A positive 128-bit random serial (RFC 5280: unique per CA, at most 20 octets).
fn random_serial() -> Result<SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// ECDSA P-256, or RSA of 2048, 3072 or 4096 bits.
fn check_key_type(der: &CertificateSigningRequestDer<'_>) -> Result<(), CaError> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION,
    };
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| CaError::InvalidCsr(e.to_string()))?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if curve.as_ref() == Some(&OID_EC_P256) {
            return Ok(());
        }
        return Err(CaError::WrongKeyType(format!(
            "EC curve {} (only P-256 is accepted)",
            curve.map_or_else(|| "unknown".to_string(), |c| c.to_id_string())
        )));
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
        if matches!(bits, 2048 | 3072 | 4096) {
            return Ok(());
        }
        return Err(CaError::WrongKeyType(format!(
            "RSA {bits} bits (2048, 3072 or 4096 are accepted)"
        )));
    }
    Err(CaError::WrongKeyType(format!(
        "key algorithm {}",
        alg.to_id_string()
    )))
}

/// The distinguished name of generated roots: `O=<trust domain>`, as Istio's self-signed CA.
pub(crate) fn root_name(config: &CaConfig) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, config.trust_domain.as_str());
    dn
}
