//! The ADS service at the gRPC level, with tonic's generated client: responses decode as
//! Envoy's messages, a stream without a node ends with INVALID_ARGUMENT in the trailers,
//! unknown methods are UNIMPLEMENTED, and streams that skipped an unchanged type after an
//! endpoint-only push still get the next change of that type (SotW and delta).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use mesh_test_support::{ControlPlane, serve};
use prost::Message;

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
    let (addr, _) = serve(ControlPlane::new(&big_config())).await;
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
    let (addr, _) = serve(ControlPlane::new(CONFIG)).await;
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

const REVIEWS: &str = "outbound|9080||reviews.shop.svc.cluster.local";

/// The endpoint addresses in an EDS resource.
fn addresses(any: &[u8]) -> Vec<String> {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
    ClusterLoadAssignment::decode(any)
        .unwrap()
        .endpoints
        .iter()
        .flat_map(|g| &g.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                match ep.address.as_ref()?.address.as_ref()? {
                    Address::SocketAddress(sa) => Some(sa.address.clone()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// An endpoint-only change reaches a SotW stream as EDS alone (its CDS map is shared, so the
/// stream skips CDS without looking inside), and a cluster change after it still arrives.
#[tokio::test]
async fn after_an_endpoint_only_push_sotw_streams_still_get_the_next_cluster_change() {
    let cp = ControlPlane::new(CONFIG);
    let (addr, _) = serve(cp.clone()).await;
    let mut c = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let req = |type_url: &str, names: &[&str], r: Option<&DiscoveryResponse>| DiscoveryRequest {
        node: node(),
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: r.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: r.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    };
    tx.send(req(CDS, &[], None)).await.unwrap();
    let mut responses = c
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let next = async |responses: &mut tonic::Streaming<DiscoveryResponse>| {
        tokio::time::timeout(std::time::Duration::from_secs(10), responses.message())
            .await
            .expect("a response within 10 s")
            .unwrap()
            .unwrap()
    };
    let cds = next(&mut responses).await;
    assert_eq!(cds.type_url, CDS);
    tx.send(req(CDS, &[], Some(&cds))).await.unwrap();
    tx.send(req(EDS, &[REVIEWS], None)).await.unwrap();
    let eds = next(&mut responses).await;
    assert_eq!(eds.type_url, EDS);
    assert_eq!(addresses(&eds.resources[0].value), ["10.0.0.1"]);
    tx.send(req(EDS, &[REVIEWS], Some(&eds))).await.unwrap();

    cp.replace(&CONFIG.replace("10.0.0.1", "10.0.0.2"));
    let eds = next(&mut responses).await;
    assert_eq!(eds.type_url, EDS, "only EDS changed");
    assert_eq!(addresses(&eds.resources[0].value), ["10.0.0.2"]);
    tx.send(req(EDS, &[REVIEWS], Some(&eds))).await.unwrap();

    cp.replace(&format!(
        "{}{}",
        CONFIG.replace("10.0.0.1", "10.0.0.2"),
        ANOTHER
    ));
    let cds = next(&mut responses).await;
    assert_eq!(cds.type_url, CDS, "the cluster change arrives");
    assert!(cds.resources.iter().any(|a| {
        Cluster::decode(a.value.as_slice()).unwrap().name
            == "outbound|80||ratings.shop.svc.cluster.local"
    }));
}

/// The same over delta: the endpoint change is one EDS resource, and the cluster change after
/// it still arrives as the new cluster.
#[tokio::test]
async fn after_an_endpoint_only_push_delta_streams_still_get_the_next_cluster_change() {
    let cp = ControlPlane::new(CONFIG);
    let (addr, _) = serve(cp.clone()).await;
    let mut c = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let ack = |r: &DeltaDiscoveryResponse| DeltaDiscoveryRequest {
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    };
    tx.send(DeltaDiscoveryRequest {
        node: node(),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = c
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let next = async |responses: &mut tonic::Streaming<DeltaDiscoveryResponse>| {
        tokio::time::timeout(std::time::Duration::from_secs(10), responses.message())
            .await
            .expect("a response within 10 s")
            .unwrap()
            .unwrap()
    };
    let cds = next(&mut responses).await;
    assert_eq!(cds.type_url, CDS);
    tx.send(ack(&cds)).await.unwrap();
    tx.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: vec![REVIEWS.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let eds = next(&mut responses).await;
    assert_eq!(eds.type_url, EDS);
    tx.send(ack(&eds)).await.unwrap();

    cp.replace(&CONFIG.replace("10.0.0.1", "10.0.0.2"));
    let eds = next(&mut responses).await;
    assert_eq!(eds.type_url, EDS, "only EDS changed");
    assert_eq!(eds.resources.len(), 1);
    let value = &eds.resources[0].resource.as_ref().unwrap().value;
    assert_eq!(addresses(value), ["10.0.0.2"]);
    tx.send(ack(&eds)).await.unwrap();

    cp.replace(&format!(
        "{}{}",
        CONFIG.replace("10.0.0.1", "10.0.0.2"),
        ANOTHER
    ));
    let cds = next(&mut responses).await;
    assert_eq!(cds.type_url, CDS, "the cluster change arrives");
    let names: Vec<&str> = cds.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["outbound|80||ratings.shop.svc.cluster.local"]);
}

const CDS: &str = mesh_xds::resource::CLUSTER;
const EDS: &str = mesh_xds::resource::ENDPOINT;
const ANOTHER: &str = "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.3}]
";
