//! An Envoy SDS server (`SecretDiscoveryService`, state of the world) serving Istio's two
//! secrets from the agent's certificate: `default` (the workload's certificate chain and key)
//! and `ROOTCA` (the trust bundle). Every rotation is pushed to every stream at once.
//!
//! A node agent with several identities ([`SdsServer::with_identities`]) serves the first as
//! `default`, and each one, the first included, under its SPIFFE ID as the secret name
//! (`spiffe://cluster.local/ns/shop/sa/db`), so each Envoy cluster or listener can pick its own.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::agent::WorkloadCert;

/// Istio's name of the workload certificate secret.
pub const DEFAULT: &str = "default";
/// Istio's name of the trust bundle secret.
pub const ROOTCA: &str = "ROOTCA";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type Certs = watch::Receiver<Option<Arc<WorkloadCert>>>;

/// The SDS service over the agent's certificate channels.
#[derive(Clone, Debug)]
pub struct SdsServer {
    certs: Vec<Certs>,
}

impl SdsServer {
    /// Serves what `certs` holds (see [`crate::agent::spawn`]).
    pub fn new(certs: Certs) -> Self {
        SdsServer { certs: vec![certs] }
    }

    /// Serves several identities: the first is `default`, and each is also served under its
    /// SPIFFE ID. `ROOTCA` is the first identity's trust bundle.
    pub fn with_identities(certs: Vec<Certs>) -> Self {
        SdsServer { certs }
    }

    fn current(&self) -> Vec<Arc<WorkloadCert>> {
        current(&self.certs)
    }

    /// The tonic service.
    pub fn into_service(self) -> SecretDiscoveryServiceServer<SdsServer> {
        SecretDiscoveryServiceServer::new(self)
    }

    /// Serves SDS on a Unix socket at `path` (replacing a stale socket, refusing to replace
    /// anything else) until the future is dropped.
    pub async fn serve_unix(self, path: &Path) -> std::io::Result<()> {
        let listener = bind_unix(path)?;
        tonic::transport::Server::builder()
            .add_service(self.into_service())
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .map_err(std::io::Error::other)
    }
}

/// Binds a Unix socket at `path`, replacing a stale socket from an earlier run but never a
/// file that is not a socket.
pub(crate) fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    tokio::net::UnixListener::bind(path)
}

fn inline(bytes: String) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.into_bytes())),
        ..Default::default()
    })
}

/// The secret `name` from a certificate, if it is one of Istio's two.
pub fn secret(name: &str, cert: &WorkloadCert) -> Option<Secret> {
    secret_of(name, std::slice::from_ref(cert))
}

fn tls_certificate(cert: &WorkloadCert) -> secret::Type {
    secret::Type::TlsCertificate(TlsCertificate {
        certificate_chain: inline(cert.chain.concat()),
        private_key: inline(cert.key.clone()),
        ..Default::default()
    })
}

/// The secret `name` among `certs` (the first is `default`).
fn secret_of<C: Borrow<WorkloadCert>>(name: &str, certs: &[C]) -> Option<Secret> {
    let first = certs.first()?.borrow();
    let r#type = match name {
        DEFAULT => tls_certificate(first),
        ROOTCA => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(first.roots.concat()),
            ..Default::default()
        }),
        _ if name.starts_with("spiffe://") => {
            tls_certificate(certs.iter().map(Borrow::borrow).find(|c: &&WorkloadCert| {
                c.chain.first().is_some_and(|leaf| {
                    use rustls_pki_types::pem::PemObject;
                    rustls_pki_types::CertificateDer::from_pem_slice(leaf.as_bytes())
                        .ok()
                        .and_then(|d| crate::svid::spiffe_id_of(&d).ok())
                        .is_some_and(|id| id.to_string() == name)
                })
            })?)
        }
        _ => return None,
    };
    Some(Secret {
        name: name.to_string(),
        r#type: Some(r#type),
    })
}

/// The certificates every channel holds now, in order; empty until each has one.
fn current(certs: &[Certs]) -> Vec<Arc<WorkloadCert>> {
    let now: Vec<_> = certs.iter().filter_map(|c| c.borrow().clone()).collect();
    if now.len() == certs.len() {
        now
    } else {
        Vec::new()
    }
}

fn response(
    names: &BTreeSet<String>,
    certs: &[Arc<WorkloadCert>],
    nonce: u64,
) -> DiscoveryResponse {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for cert in certs {
        (&cert.chain, &cert.roots).hash(&mut h);
    }
    DiscoveryResponse {
        version_info: format!("{:016x}", h.finish()),
        resources: names
            .iter()
            .filter_map(|n| secret_of(n, certs))
            .map(|s| Any {
                type_url: SECRET_TYPE.into(),
                value: s.encode_to_vec(),
            })
            .collect(),
        type_url: SECRET_TYPE.into(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

async fn run_stream(
    mut requests: Streaming<DiscoveryRequest>,
    certs: Vec<Certs>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut changes = tokio_stream::StreamMap::new();
    for (i, c) in certs.iter().enumerate() {
        changes.insert(
            i,
            tokio_stream::wrappers::WatchStream::from_changes(c.clone()),
        );
    }
    let mut names = BTreeSet::new();
    let mut nonce = 0u64;
    loop {
        let push = tokio::select! {
            req = requests.message() => match req {
                Ok(Some(r)) => {
                    if let Some(err) = &r.error_detail {
                        // A NACK: Envoy keeps its current secret; nothing to resend.
                        tracing::warn!("SDS NACK: {}", err.message);
                        false
                    } else {
                        let asked: BTreeSet<String> = r.resource_names.into_iter().collect();
                        let initial = r.response_nonce.is_empty();
                        let changed = asked != names;
                        names = asked;
                        initial || changed
                    }
                }
                Ok(None) | Err(_) => return,
            },
            changed = tokio_stream::StreamExt::next(&mut changes) => {
                if changed.is_none() {
                    return;
                }
                true
            }
        };
        if !push {
            continue;
        }
        let now = current(&certs);
        if now.is_empty() {
            // Nothing yet: Envoy waits for the first certificates.
            continue;
        }
        nonce += 1;
        if tx.send(Ok(response(&names, &now, nonce))).await.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsServer {
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "delta SDS is not served; use StreamSecrets",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(run_stream(request.into_inner(), self.certs.clone(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let certs = self.current();
        if certs.is_empty() {
            return Err(Status::unavailable("no certificate yet"));
        }
        let names = request.into_inner().resource_names.into_iter().collect();
        Ok(Response::new(response(&names, &certs, 0)))
    }
}
