//! ADS caller authentication (`AdsServer::with_authenticator`) at the gRPC level, SotW and
//! delta: an authenticated caller whose identity's namespace is the node's is served; one that
//! claims another namespace ends with PERMISSION_DENIED naming the node and both sides; one
//! without credentials ends with UNAUTHENTICATED; refused streams are never registered and do
//! not disturb the others. (TLS client certificates are exercised with the real TLS port in
//! the examples' control-plane tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use mesh_test_support::{ControlPlane, node};
use mesh_xds::server::auth::{AuthError, Caller};
use mesh_xds::server::{AdsServer, Connections};
use tonic::transport::Channel;

const CONFIG: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: a}
spec:
  hosts: [reviews.a.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
";

/// Tokens `ns-a` and `ns-b` stand for identities in namespaces a and b.
fn hook(caller: &Caller<'_>) -> Result<Vec<String>, AuthError> {
    match caller.bearer_token() {
        Some(t) => match t.strip_prefix("ns-") {
            Some(ns) => Ok(vec![format!("spiffe://cluster.local/ns/{ns}/sa/app")]),
            None => Err(AuthError::Invalid("unknown token".into())),
        },
        None => Err(AuthError::NoCredentials("no token".into())),
    }
}

async fn serve() -> (SocketAddr, Arc<Connections>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = AdsServer::new(ControlPlane::new(CONFIG)).with_authenticator(hook);
    let connections = server.connections();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, connections)
}

async fn client(addr: SocketAddr) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

const NODE_A: &str = "sidecar~10.0.0.9~app-1.a~a.svc.cluster.local";

/// A SotW stream for a node of namespace `ns` (its `NAMESPACE` metadata) with `token`: the
/// first response, or the status that ended the stream.
async fn sotw(
    addr: SocketAddr,
    ns: &str,
    token: Option<&str>,
) -> (
    Result<FirstResponse, tonic::Status>,
    tokio::sync::mpsc::Sender<DiscoveryRequest>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(node(NODE_A, ns, "app")),
        type_url: mesh_xds::resource::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let first = async {
        let mut stream = client(addr)
            .await
            .stream_aggregated_resources(req)
            .await?
            .into_inner();
        match stream.message().await? {
            Some(r) => Ok(FirstResponse {
                type_url: r.type_url,
                resources: r.resources.len(),
                stream,
            }),
            None => Err(tonic::Status::ok("ended without a response")),
        }
    }
    .await;
    (first, tx)
}

/// What a served stream got first, and the stream (kept open by the caller).
struct FirstResponse {
    type_url: String,
    resources: usize,
    #[allow(dead_code)]
    stream: tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
}

#[tokio::test]
async fn a_caller_is_served_only_as_its_identitys_namespace() {
    let (addr, connections) = serve().await;
    let (served, _keep) = sotw(addr, "a", Some("ns-a")).await;
    let served = served.unwrap();
    assert_eq!(served.type_url, mesh_xds::resource::CLUSTER);
    assert!(served.resources > 0);
    assert_eq!(connections.len(), 1);

    let (denied, _tx) = sotw(addr, "b", Some("ns-a")).await;
    let status = denied.err().unwrap();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(NODE_A)
            && status.message().contains("claims namespace \"b\"")
            && status
                .message()
                .contains("spiffe://cluster.local/ns/a/sa/app"),
        "{}",
        status.message()
    );

    let (anonymous, _tx) = sotw(addr, "a", None).await;
    let status = anonymous.err().unwrap();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains(NODE_A) && status.message().contains("no token"),
        "{}",
        status.message()
    );
    let (forged, _tx) = sotw(addr, "a", Some("forged")).await;
    assert_eq!(forged.err().unwrap().code(), tonic::Code::Unauthenticated);

    // Refused streams were never registered; the served one is still there and still served.
    assert_eq!(connections.len(), 1);
    let (again, _keep2) = sotw(addr, "b", Some("ns-b")).await;
    assert!(again.is_ok());
    assert_eq!(connections.len(), 2);
}

#[tokio::test]
async fn delta_streams_are_checked_the_same_way() {
    let (addr, connections) = serve().await;
    let delta = async |ns: &str, token: &str| {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(DeltaDiscoveryRequest {
            node: Some(node(NODE_A, ns, "app")),
            type_url: mesh_xds::resource::CLUSTER.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut stream = client(addr)
            .await
            .delta_aggregated_resources(req)
            .await?
            .into_inner();
        let r = stream.message().await?;
        Ok::<_, tonic::Status>((r.map(|r| r.resources.len()), stream, tx))
    };
    let (first, _s, _tx) = delta("a", "ns-a").await.unwrap();
    assert!(first.unwrap() > 0);
    let status = delta("b", "ns-a").await.err().unwrap();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(connections.len(), 1);
}
