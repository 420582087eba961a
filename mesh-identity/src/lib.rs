//! Workload identity for the mesh, as Istio's CA and node agent provide it: SPIFFE IDs, a CA
//! that signs short-lived X.509-SVIDs from CSRs, and SVID verification per the SPIFFE rules.
//!
//! - [`spiffe`], [`svid`]: identities and X.509-SVID verification.
//! - [`ca`]: the CA (self-signed root or Istio `cacerts`), with `ca::api` (Istio's
//!   `CreateCertificate` gRPC service) and `ca::auth` (token, SVID and development
//!   authenticators).
//! - `agent`: keys, CSRs and renewals for a workload; `sds`: Envoy SDS from the agent;
//!   `xds_proxy`: Envoy's ADS stream forwarded from a local socket to the control plane;
//!   [`addr`]: the control plane's address as agents are told it (Istio's `CA_ADDR`
//!   `host:port`, or a URL).
//! - `serving`: the control plane's own rotating TLS certificate and accept loop; `tls`: rustls
//!   configs for SPIFFE mTLS that follow rotation.
//!
//! Everything but `spiffe`, `svid` and the CA itself needs the default `server` feature
//! (tokio, tonic, rustls).
//!
//! ```
//! use mesh_identity::ca::{CaConfig, CertificateAuthority};
//! use mesh_identity::spiffe::{SpiffeId, TrustDomain};
//!
//! let dir = std::env::temp_dir().join(format!("mesh-identity-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let td = TrustDomain::new("cluster.local").unwrap();
//! let ca = CertificateAuthority::self_signed(&dir, CaConfig::new(td.clone())).unwrap();
//!
//! // A workload makes a key and a CSR; the CA signs it for the authenticated identity.
//! let key = rcgen::KeyPair::generate().unwrap();
//! let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
//! let id = SpiffeId::istio(td.clone(), "shop", "web").unwrap();
//! let issued = ca.sign_csr(&csr, &id, None).unwrap();
//! assert_eq!(issued.chain.len(), 2); // leaf, root
//!
//! // Anyone holding the trust bundle verifies it back to the same identity.
//! use rustls_pki_types::{CertificateDer, UnixTime, pem::PemObject};
//! let der = |p: &str| CertificateDer::from_pem_slice(p.as_bytes()).unwrap();
//! let chain: Vec<_> = issued.chain.iter().map(|p| der(p)).collect();
//! let roots: Vec<_> = ca.roots().iter().map(|p| der(p)).collect();
//! let verified =
//!     mesh_identity::svid::verify(&chain[..1], &roots, UnixTime::now(), true, Some(&td)).unwrap();
//! assert_eq!(verified, id);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

#![forbid(unsafe_code)]

pub mod addr;
#[cfg(feature = "server")]
pub mod agent;
pub mod ca;
#[cfg(feature = "server")]
pub mod sds;
#[cfg(feature = "server")]
pub mod serving;
pub mod spiffe;
pub mod svid;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod xds_proxy;
