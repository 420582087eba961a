//! External authorization servers on loopback, for CUSTOM AuthorizationPolicies: one speaking
//! Envoy's HTTP ext_authz protocol ([`start_http`]: the check is a copy of the request's
//! headers, answered 200 to allow), one serving the gRPC
//! `envoy.service.auth.v3.Authorization/Check` service ([`start_grpc`], with envoy-types'
//! generated server).
//!
//! Both decide alike, so a test can swap one for the other: a request whose check carries
//! [`DECISION_HEADER`]`: `[`ALLOW`] is allowed, with [`RESULT_HEADER`] and [`UNLISTED_HEADER`]
//! added for the upstream; any other is denied with [`AuthzServer::set_deny_status`]'s status
//! (403 unless set), [`REASON_HEADER`] and [`UNLISTED_HEADER`] for the client and the body
//! [`DENY_BODY`] (a check of a TCP connection, which has no headers, is denied). Each records
//! every check it answered ([`AuthzServer::count`], [`AuthzServer::checks`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};

/// The request header the servers decide on.
pub const DECISION_HEADER: &str = "x-ext-authz";
/// The value of [`DECISION_HEADER`] that allows.
pub const ALLOW: &str = "allow";
/// Added for the upstream on allow, value `allowed by NAME`.
pub const RESULT_HEADER: &str = "x-ext-authz-check-result";
/// Also added on allow and on deny: an HTTP provider that does not list it in
/// `headersToUpstreamOnAllow` / `headersToDownstreamOnDeny` keeps it from the upstream / the
/// client.
pub const UNLISTED_HEADER: &str = "x-ext-authz-unlisted";
/// Sent to the client on deny, value `denied by NAME`.
pub const REASON_HEADER: &str = "x-ext-authz-reason";
/// The body of a denial.
pub const DENY_BODY: &str = "denied by the ext_authz test server";

/// One check a server answered.
#[derive(Clone, Debug, Default)]
pub struct Check {
    /// The path checked (for HTTP checks, the check request's path: the provider's
    /// `pathPrefix` and the original path).
    pub path: String,
    /// The headers the check carried, by lowercase name (gRPC checks include Envoy's pseudo
    /// headers `:path`, `:method`, `:authority`).
    pub headers: BTreeMap<String, String>,
    /// The peer's principal (gRPC checks only: `attributes.source.principal`, the SPIFFE ID
    /// of an mTLS caller).
    pub principal: String,
    /// Whether it was allowed.
    pub allowed: bool,
}

#[derive(Debug)]
struct State {
    name: String,
    count: AtomicU64,
    checks: Mutex<Vec<Check>>,
    deny_status: AtomicU16,
}

impl State {
    fn new(name: &str) -> Arc<State> {
        Arc::new(State {
            name: name.to_string(),
            count: AtomicU64::new(0),
            checks: Mutex::new(Vec::new()),
            deny_status: AtomicU16::new(403),
        })
    }

    /// Records a check and says whether it is allowed.
    fn decide(&self, mut check: Check) -> bool {
        check.allowed = check.headers.get(DECISION_HEADER).map(String::as_str) == Some(ALLOW);
        let allowed = check.allowed;
        self.checks.lock().unwrap().push(check);
        self.count.fetch_add(1, Ordering::SeqCst);
        allowed
    }
}

/// A running authorization server (it stops with the test's runtime).
pub struct AuthzServer {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl AuthzServer {
    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many checks it answered.
    pub fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Every check it answered, in order.
    pub fn checks(&self) -> Vec<Check> {
        self.state.checks.lock().unwrap().clone()
    }

    /// The last check it answered.
    pub fn last(&self) -> Option<Check> {
        self.state.checks.lock().unwrap().last().cloned()
    }

    /// The HTTP status of its denials from now on (403 at first).
    pub fn set_deny_status(&self, status: u16) {
        self.state.deny_status.store(status, Ordering::SeqCst);
    }
}

/// Starts an HTTP/1.1 authorization server on 127.0.0.1 (Envoy's `http_service` protocol).
pub async fn start_http(name: &str) -> AuthzServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = State::new(name);
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(http_check(&st, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    AuthzServer { addr, state }
}

async fn http_check(st: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.as_str().to_string(),
            v.to_str().unwrap_or_default().to_string(),
        );
    }
    let check = Check {
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        ..Default::default()
    };
    let _ = req.into_body().collect().await;
    let by = |what: &str| format!("{what} by {}", st.name);
    let response = if st.decide(check) {
        Response::builder()
            .status(200)
            .header(RESULT_HEADER, by("allowed"))
            .header(UNLISTED_HEADER, "1")
            .body(Full::new(Bytes::new()))
    } else {
        Response::builder()
            .status(st.deny_status.load(Ordering::SeqCst))
            .header(REASON_HEADER, by("denied"))
            .header(UNLISTED_HEADER, "1")
            .body(Full::new(Bytes::from_static(DENY_BODY.as_bytes())))
    };
    response.unwrap()
}

/// Starts a gRPC `envoy.service.auth.v3.Authorization` server on 127.0.0.1 (plaintext HTTP/2).
pub async fn start_grpc(name: &str) -> AuthzServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = State::new(name);
    let svc = AuthorizationServer::new(GrpcAuthz(state.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    AuthzServer { addr, state }
}

struct GrpcAuthz(Arc<State>);

fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for GrpcAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let attrs = request.into_inner().attributes.unwrap_or_default();
        let http = attrs.request.and_then(|r| r.http).unwrap_or_default();
        let check = Check {
            path: http.path,
            headers: http.headers.into_iter().collect(),
            principal: attrs.source.map(|s| s.principal).unwrap_or_default(),
            allowed: false,
        };
        let st = &self.0;
        let by = |what: &str| format!("{what} by {}", st.name);
        let response = if st.decide(check) {
            CheckResponse {
                status: Some(RpcStatus::default()),
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![
                        header(RESULT_HEADER, by("allowed")),
                        header(UNLISTED_HEADER, "1".into()),
                    ],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                // PERMISSION_DENIED.
                status: Some(RpcStatus {
                    code: 7,
                    ..Default::default()
                }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(
                    DeniedHttpResponse {
                        status: Some(HttpStatus {
                            code: i32::from(st.deny_status.load(Ordering::SeqCst)),
                        }),
                        headers: vec![
                            header(REASON_HEADER, by("denied")),
                            header(UNLISTED_HEADER, "1".into()),
                        ],
                        body: DENY_BODY.into(),
                    },
                )),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(response))
    }
}
