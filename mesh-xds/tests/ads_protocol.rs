//! The ADS service at the gRPC level, with tonic's generated client: responses decode as
//! Envoy's messages, a stream without a node ends with INVALID_ARGUMENT in the trailers, and
//! unknown methods are UNIMPLEMENTED.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::Message;
use support::ControlPlane;

const CONFIG: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
";

/// CONFIG plus enough services that a CDS response spans many HTTP/2 data frames.
fn big_config() -> String {
    let mut s = CONFIG.to_string();
    for i in 0..300 {
        s.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}, namespace: shop}}\nspec: {{hosts: [s{i}.shop.svc.cluster.local], location: MESH_INTERNAL, resolution: STATIC, ports: [{{number: 80, name: http, protocol: HTTP}}], endpoints: [{{address: 10.1.0.1}}]}}\n"
        ));
    }
    s
}

async fn client() -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let (addr, _) = support::serve(ControlPlane::new(&big_config())).await;
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn node() -> Option<Node> {
    Some(Node {
        id: "sidecar~10.0.0.9~p.shop~shop.svc.cluster.local".into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn sotw_and_delta_responses_decode_as_envoy_messages() {
    let mut c = client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: node(),
        type_url: mesh_xds::resource::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = c
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r = responses.message().await.unwrap().unwrap();
    assert_eq!(r.type_url, mesh_xds::resource::CLUSTER);
    assert!(!r.nonce.is_empty() && !r.version_info.is_empty());
    let names: Vec<String> = r
        .resources
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).unwrap().name)
        .collect();
    assert!(names.contains(&"outbound|9080||reviews.shop.svc.cluster.local".to_string()));
    // 301 services and the black hole, passthrough and inbound passthrough clusters; the
    // response is far larger than one 16 KiB chunk.
    assert_eq!(names.len(), 304);
    assert!(r.encoded_len() > 64 * 1024, "{}", r.encoded_len());

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: node(),
        type_url: mesh_xds::resource::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = c
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r = responses.message().await.unwrap().unwrap();
    let delta_names: Vec<String> = r.resources.iter().map(|x| x.name.clone()).collect();
    assert_eq!(delta_names, names);
    for x in &r.resources {
        let cluster = Cluster::decode(x.resource.as_ref().unwrap().value.as_slice()).unwrap();
        assert_eq!(cluster.name, x.name);
        assert_eq!(x.version.len(), 16);
    }
    // The client half-closes: the server ends the stream with OK.
    drop(tx);
    assert!(responses.message().await.unwrap().is_none());
}

#[tokio::test]
async fn a_stream_without_a_node_ends_with_invalid_argument() {
    let mut c = client().await;
    let req = DiscoveryRequest {
        type_url: mesh_xds::resource::CLUSTER.into(),
        ..Default::default()
    };
    let mut responses = c
        .stream_aggregated_resources(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let err = responses.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("node"), "{err:?}");
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() {
    let (addr, _) = support::serve(ControlPlane::new(CONFIG)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/FetchNothing",
    );
    let codec = tonic_prost::ProstCodec::<DiscoveryRequest, DiscoveryRequest>::default();
    let err = grpc
        .unary(
            tonic::Request::new(DiscoveryRequest::default()),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
}
