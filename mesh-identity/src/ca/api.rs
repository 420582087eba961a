//! Istio's CA API, `istio.v1.auth.IstioCertificateService/CreateCertificate`, as a tonic
//! service: authenticate the caller, sign its CSR for exactly that identity, answer the chain
//! leaf first and root last. Failures are `UNAUTHENTICATED` (no or bad credentials),
//! `PERMISSION_DENIED` (asking for another identity) and `INVALID_ARGUMENT` (CSR, TTL), each
//! with the reason; tokens and keys are never logged.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::{BoxFuture, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::ca::auth::{Authenticator, Credentials};
use crate::ca::{CaError, CertificateAuthority};

/// `istio.v1.auth.IstioCertificateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded CSR.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested validity, in seconds (0 or negative: the CA's default).
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Optional metadata (Istio: `ImpersonatedIdentity`, ...).
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `istio.v1.auth.IstioCertificateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates: the leaf first, the root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

const SERVICE: &str = "istio.v1.auth.IstioCertificateService";

/// Binary response metadata in which the CA sends its whole trust bundle (every root it trusts
/// now, PEM, concatenated), so that agents carry the old and the new root during a root
/// rotation. Istio's agents ignore it and take the chain's last certificate as the root.
pub const TRUST_BUNDLE_METADATA: &str = "x-mesh-trust-bundle-bin";
/// The method's HTTP/2 path.
pub const CREATE_CERTIFICATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// The CA gRPC service; add it to a tonic router.
#[derive(Clone)]
pub struct CaService {
    inner: Arc<Inner>,
}

struct Inner {
    ca: Arc<CertificateAuthority>,
    auth: Box<dyn Authenticator>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("ca", &self.inner.ca)
            .finish_non_exhaustive()
    }
}

impl CaService {
    /// Serves `ca`, authenticating callers with `auth`.
    pub fn new(ca: Arc<CertificateAuthority>, auth: impl Authenticator) -> Self {
        CaService {
            inner: Arc::new(Inner {
                ca,
                auth: Box::new(auth),
            }),
        }
    }

    /// Handles one request (the service's logic, without the transport).
    pub fn create_certificate(
        &self,
        credentials: &Credentials<'_>,
        req: &IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, Status> {
        let id = self
            .inner
            .auth
            .authenticate(credentials)
            .map_err(|e| Status::unauthenticated(format!("authentication failed: {e}")))?;
        // Istio lets trusted callers ask for another identity; this CA does not.
        if let Some(asked) = req
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get("ImpersonatedIdentity"))
            .and_then(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            && asked != id.to_string()
        {
            return Err(Status::permission_denied(format!(
                "{id} may not request a certificate for {asked}"
            )));
        }
        let ttl = u64::try_from(req.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        match self.inner.ca.sign_csr(&req.csr, &id, ttl) {
            Ok(issued) => Ok(IstioCertificateResponse {
                cert_chain: issued.chain,
            }),
            Err(
                e @ (CaError::InvalidCsr(_)
                | CaError::WrongKeyType(_)
                | CaError::CaRequested
                | CaError::TtlTooLong { .. }),
            ) => Err(Status::invalid_argument(e.to_string())),
            Err(e @ CaError::ForeignIdentity { .. }) => {
                Err(Status::permission_denied(e.to_string()))
            }
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}

impl NamedService for CaService {
    const NAME: &'static str = SERVICE;
}

struct Unary(CaService);

impl tonic::server::UnaryService<IstioCertificateRequest> for Unary {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<Response<IstioCertificateResponse>, Status>;

    fn call(&mut self, request: Request<IstioCertificateRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            let bearer = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::to_string);
            // The client certificates of a TLS connection: tonic's own TLS, or a server that
            // terminates TLS itself and passes them in the extensions.
            let peers = request.peer_certs().or_else(|| {
                request
                    .extensions()
                    .get::<PeerCertificates>()
                    .map(|p| p.0.clone())
            });
            let claimed = request
                .metadata()
                .get(crate::ca::auth::INSECURE_IDENTITY_HEADER)
                .and_then(|v| v.to_str().ok());
            let credentials = Credentials {
                bearer: bearer.as_deref(),
                peer_certificates: peers.as_deref().map(Vec::as_slice),
                claimed_identity: claimed,
            };
            let mut response = svc
                .create_certificate(&credentials, request.get_ref())
                .map(Response::new)?;
            let bundle = svc.inner.ca.roots().concat();
            response.metadata_mut().insert_bin(
                TRUST_BUNDLE_METADATA,
                tonic::metadata::MetadataValue::from_bytes(bundle.as_bytes()),
            );
            Ok(response)
        })
    }
}

/// The client certificate chain of a TLS connection, put in the request extensions by the
/// server that terminates TLS.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<rustls_pki_types::CertificateDer<'static>>>);

impl std::ops::Deref for PeerCertificates {
    type Target = [rustls_pki_types::CertificateDer<'static>];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl tower_service::Service<http::Request<Body>> for CaService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move {
            if req.uri().path() != CREATE_CERTIFICATE {
                return Ok(
                    Status::unimplemented(format!("unknown method {}", req.uri().path()))
                        .into_http(),
                );
            }
            let codec = tonic_prost::ProstCodec::<IstioCertificateResponse, IstioCertificateRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec).max_decoding_message_size(64 * 1024);
            Ok(grpc.unary(Unary(svc), req).await)
        })
    }
}
