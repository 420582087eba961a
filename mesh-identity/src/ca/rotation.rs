//! Root rotation on a running CA: stage a new root (trusted, not signing), switch signing over
//! to it, retire the old one; and the trust bundle as a list of roots one can read.
//!
//! The order matters because a root reaches workloads only with their next certificate (the
//! CA's responses carry the whole trust bundle): a root that signs before the workloads trust
//! it makes their peers' new certificates unverifiable until every one of them has renewed.
//! Hence [`stage_root`](CertificateAuthority::stage_root), then, once a renewal period has
//! passed, [`rotate_root`](CertificateAuthority::rotate_root), and, once the old root's
//! certificates have expired, [`retire_root`](CertificateAuthority::retire_root) and
//! [`save_trust_bundle`](CertificateAuthority::save_trust_bundle). `rotate_root` without a
//! staged root does the first two steps at once, for development.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;

use super::{CaError, CertificateAuthority, Files, Signer, State, store};

/// One root of the trust bundle, as an operator reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustedRoot {
    /// The certificate, PEM.
    pub pem: String,
    /// SHA-256 of the certificate's DER, lowercase hex (`openssl x509 -fingerprint -sha256`
    /// without the colons).
    pub sha256: String,
    /// The subject (`O=cluster.local`), if the certificate parses.
    pub subject: Option<String>,
    /// Start of validity, if the certificate parses.
    pub not_before: Option<SystemTime>,
    /// End of validity, if the certificate parses.
    pub not_after: Option<SystemTime>,
    /// Certificates issued now chain to it.
    pub signing: bool,
    /// Trusted and staged: it signs after the next [`CertificateAuthority::rotate_root`].
    pub staged: bool,
}

impl TrustedRoot {
    fn new(pem: &str, signing: bool, staged: bool) -> TrustedRoot {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok();
        let bytes = der.as_ref().map_or(pem.as_bytes(), |d| d.as_ref());
        let sha256 = ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let parsed = der.as_ref().and_then(|d| {
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(d).ok()?;
            let time = |t: x509_parser::time::ASN1Time| {
                let secs = u64::try_from(t.timestamp()).unwrap_or(0);
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
            };
            Some((
                cert.subject().to_string(),
                time(cert.validity().not_before),
                time(cert.validity().not_after),
            ))
        });
        TrustedRoot {
            pem: pem.to_string(),
            sha256,
            subject: parsed.as_ref().map(|p| p.0.clone()),
            not_before: parsed.as_ref().map(|p| p.1),
            not_after: parsed.as_ref().map(|p| p.2),
            signing,
            staged,
        }
    }
}

/// What [`CertificateAuthority::rotate_root`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RootRotation {
    /// The root that signs from now on.
    pub signing: TrustedRoot,
    /// The root that signed before, still trusted until it is retired (the same as
    /// `signing` when a `cacerts` rotation only added roots).
    pub previous: TrustedRoot,
    /// Whether the new root was trusted before it started to sign ([`stage_root`]), so that
    /// workloads could learn it first.
    ///
    /// [`stage_root`]: CertificateAuthority::stage_root
    pub was_staged: bool,
}

fn same(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

fn push_new(roots: &mut Vec<String>, root: &str) {
    if !roots.iter().any(|r| same(r, root)) {
        roots.push(root.to_string());
    }
}

impl CertificateAuthority {
    /// The trust bundle with what each root is for, the signing root first.
    pub fn trusted_roots(&self) -> Vec<TrustedRoot> {
        let state = self.read();
        let staged = state.staged.as_ref().map(|s| s.root().to_string());
        state
            .roots
            .iter()
            .map(|r| {
                TrustedRoot::new(
                    r,
                    same(r, state.signer.root()),
                    staged.as_deref().is_some_and(|s| same(r, s)),
                )
            })
            .collect()
    }

    /// Generates a new self-signed root (ECDSA P-256, the CA's settings), keeps it in the
    /// directory as the staged root and trusts it at once; it signs after the next
    /// [`rotate_root`](Self::rotate_root). A root already staged is returned as it is.
    /// Fails with [`CaError::NotSelfSigned`] for a CA on Istio's `cacerts`.
    pub fn stage_root(&self) -> Result<TrustedRoot, CaError> {
        let dir = match &self.files {
            Files::SelfSigned(dir) => dir,
            Files::Cacerts(dir) => {
                return Err(CaError::NotSelfSigned {
                    dir: dir.display().to_string(),
                });
            }
        };
        let mut state = self.write();
        if let Some(staged) = &state.staged {
            return Ok(TrustedRoot::new(staged.root(), false, true));
        }
        let (cert, key) = store::generate_root(&self.config)?;
        store::write_staged(dir, &cert, &key)?;
        let staged = Signer::self_signed(cert, key, &dir.join(store::NEXT_CERT))?;
        let mut roots = state.roots.clone();
        push_new(&mut roots, staged.root());
        if let Err(e) = store::write_bundle(dir, &roots) {
            // Not trusted, so not staged either.
            let _ = store::remove_staged(dir);
            return Err(e);
        }
        let root = TrustedRoot::new(staged.root(), false, true);
        state.roots = roots;
        state.staged = Some(Arc::new(staged));
        Ok(root)
    }

    /// Switches signing to a new root; the old one stays trusted until
    /// [`retire_root`](Self::retire_root).
    ///
    /// A self-signed CA signs with its staged root ([`stage_root`](Self::stage_root)), or, if
    /// there is none, with a root generated now (trusted and signing at once: workloads that
    /// have not renewed since do not trust certificates from it yet). The new root becomes
    /// `root-cert.pem` and `ca-key.pem` and `trust-bundle.pem` lists both.
    ///
    /// A CA on Istio's `cacerts` re-reads the files, which the operator has replaced: it signs
    /// with the new `ca-cert.pem` and trusts every root of `root-cert.pem` besides the ones
    /// it trusted before. Fails with [`CaError::Unchanged`] if nothing changed.
    pub fn rotate_root(&self) -> Result<RootRotation, CaError> {
        match &self.files {
            Files::SelfSigned(dir) => self.rotate_self_signed(dir),
            Files::Cacerts(dir) => self.reload_cacerts(dir),
        }
    }

    fn rotate_self_signed(&self, dir: &std::path::Path) -> Result<RootRotation, CaError> {
        let mut state = self.write();
        let was_staged = state.staged.is_some();
        let next = match &state.staged {
            Some(s) => s.clone(),
            None => {
                let (cert, key) = store::generate_root(&self.config)?;
                store::write_staged(dir, &cert, &key)?;
                Arc::new(Signer::self_signed(cert, key, &dir.join(store::NEXT_CERT))?)
            }
        };
        let mut roots = vec![next.root().to_string()];
        for r in &state.roots {
            push_new(&mut roots, r);
        }
        let persisted = store::write_bundle(dir, &roots).and_then(|()| store::activate_staged(dir));
        if let Err(e) = persisted {
            if !was_staged {
                let _ = store::remove_staged(dir);
            }
            return Err(e);
        }
        Ok(switch(&mut state, next, roots, was_staged))
    }

    fn reload_cacerts(&self, dir: &std::path::Path) -> Result<RootRotation, CaError> {
        let (signer, file_roots) = Self::plugged(dir)?;
        let mut state = self.write();
        let mut roots = file_roots;
        for r in &state.roots {
            push_new(&mut roots, r);
        }
        if signer.chain == state.signer.chain && roots.len() == state.roots.len() {
            return Err(CaError::Unchanged {
                dir: dir.display().to_string(),
            });
        }
        let was_staged = state.roots.iter().any(|r| same(r, signer.root()));
        Ok(switch(&mut state, Arc::new(signer), roots, was_staged))
    }

    /// Writes the trust bundle as it is now to `trust-bundle.pem`, the roots a restart starts
    /// trusting (after [`add_root`](Self::add_root) or [`retire_root`](Self::retire_root)),
    /// and removes a staged root that was retired. [`stage_root`](Self::stage_root) and
    /// [`rotate_root`](Self::rotate_root) do this themselves. A CA on Istio's `cacerts` writes
    /// nothing: its roots are the operator's `root-cert.pem`.
    pub fn save_trust_bundle(&self) -> Result<(), CaError> {
        let Files::SelfSigned(dir) = &self.files else {
            return Ok(());
        };
        let state = self.write();
        store::write_bundle(dir, &state.roots)?;
        if state.staged.is_none() && dir.join(store::NEXT_CERT).exists() {
            store::remove_staged(dir)?;
        }
        Ok(())
    }
}

/// The state after a rotation to `next` with `roots` (next's root first).
fn switch(
    state: &mut State,
    next: Arc<Signer>,
    roots: Vec<String>,
    was_staged: bool,
) -> RootRotation {
    let previous = TrustedRoot::new(state.signer.root(), false, false);
    let signing = TrustedRoot::new(next.root(), true, false);
    state.signer = next;
    state.roots = roots;
    state.staged = None;
    let previous = if same(&previous.pem, &signing.pem) {
        signing.clone()
    } else {
        previous
    };
    RootRotation {
        signing,
        previous,
        was_staged,
    }
}
