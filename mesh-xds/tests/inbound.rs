//! Inbound listeners on the translated output, against istiod's layout (reference: security
//! §1.4–§1.7, §8.4): the chain set of every protocol × mTLS mode, the inbound TLS context,
//! the listener filters' per-port predicates, service-instance inbound under capture, the
//! passthrough chains, and Sidecar ingress listeners (captured and bound). The same chains run
//! through real Envoy in security_mtls.rs and envoy_routing.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_xds::proxy::InterceptionMode;
use mesh_xds::{Proxy, PushContext, translate};
use prost::Message;

const SIDECAR: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  ingress:
  - port: {number: 9080, name: http, protocol: HTTP}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9081, name: sniffed}
    defaultEndpoint: 127.0.0.1:8081
  - port: {number: 9443, name: https, protocol: HTTPS}
    defaultEndpoint: 127.0.0.1:8443
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem}
"#;

/// The workload backs `reviews` (HTTP 9080 → 8080, TCP 9090, unnamed 9091) through its
/// WorkloadEntry at 10.0.0.7.
const INSTANCES: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: shop}
spec: {address: 10.0.0.7, labels: {app: reviews}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 9090, name: tcp, protocol: TCP}
  - {number: 9091, name: auto}
  workloadSelector: {labels: {app: reviews}}
"#;

fn proxy(mode: InterceptionMode) -> Proxy {
    Proxy {
        namespace: "shop".into(),
        ip_addresses: vec!["10.0.0.7".into()],
        labels: [("app".to_string(), "reviews".to_string())].into(),
        interception_mode: mode,
        ..Default::default()
    }
}

fn resources(config: &str, mode: InterceptionMode) -> mesh_xds::Resources {
    let store = ConfigStore::new();
    let report = store.apply_all(parse_str(config, "inbound.yaml"));
    assert!(report.rejected.is_empty(), "{report:?}");
    let ctx = PushContext::new(MeshConfig::default(), store.snapshot());
    let out = translate(&ctx, &proxy(mode));
    out.consistent().unwrap();
    out
}

fn with_mode(config: &str, mode: &str) -> String {
    format!(
        "{config}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: default, namespace: shop}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
    )
}

/// One chain as `(name, transport protocol, ALPNs, terminates TLS, first filter)`.
type Shape = (String, String, Vec<String>, bool, String);

fn shape(c: &FilterChain) -> Shape {
    let m = c.filter_chain_match.clone().unwrap_or_default();
    (
        c.name.clone(),
        m.transport_protocol,
        m.application_protocols,
        c.transport_socket.is_some(),
        c.filters
            .last()
            .map(|f| f.name.rsplit('.').next().unwrap().to_string())
            .unwrap_or_default(),
    )
}

/// The chains of destination port `port`.
fn port_chains(l: &Listener, port: Option<u32>) -> Vec<Shape> {
    l.filter_chains
        .iter()
        .filter(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port)
                .map(|p| p.value)
                == port
        })
        .map(shape)
        .collect()
}

fn s(name: &str, tp: &str, alpn: &[&str], tls: bool, filter: &str) -> Shape {
    (
        name.into(),
        tp.into(),
        alpn.iter().map(|a| a.to_string()).collect(),
        tls,
        filter.into(),
    )
}

const HCM: &str = "http_connection_manager";
const TCP: &str = "tcp_proxy";
const ALL_MTLS: &[&str] = &[
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
const MTLS_HTTP: &[&str] = &["istio-http/1.0", "istio-http/1.1", "istio-h2"];

#[test]
fn service_instances_get_istiods_chain_set_per_protocol_and_mode() {
    let n = |p: u32| format!("0.0.0.0_{p}");
    for mode in ["PERMISSIVE", "STRICT", "DISABLE"] {
        let out = resources(&with_mode(INSTANCES, mode), InterceptionMode::Redirect);
        let l = &out.listeners["virtualInbound"];
        let (http, tcp, auto) = (n(8080), n(9090), n(9091));
        let (want_http, want_tcp, want_auto) = match mode {
            "PERMISSIVE" => (
                vec![
                    s(&http, "tls", ALL_MTLS, true, HCM),
                    s(&http, "raw_buffer", &[], false, HCM),
                ],
                vec![
                    s(&tcp, "tls", ALL_MTLS, true, TCP),
                    s(&tcp, "tls", &[], false, TCP),
                    s(&tcp, "raw_buffer", &[], false, TCP),
                ],
                vec![
                    s(&auto, "tls", MTLS_HTTP, true, HCM),
                    s(&auto, "raw_buffer", &["http/1.1", "h2c"], false, HCM),
                    s(&auto, "tls", &["istio-peer-exchange", "istio"], true, TCP),
                    s(&auto, "raw_buffer", &[], false, TCP),
                    s(&auto, "tls", &[], false, TCP),
                ],
            ),
            "STRICT" => (
                vec![s(&http, "tls", &[], true, HCM)],
                vec![s(&tcp, "tls", &[], true, TCP)],
                vec![
                    s(&auto, "tls", MTLS_HTTP, true, HCM),
                    s(&auto, "tls", &[], true, TCP),
                ],
            ),
            _ => (
                vec![s(&http, "raw_buffer", &[], false, HCM)],
                vec![s(&tcp, "raw_buffer", &[], false, TCP)],
                vec![
                    s(&auto, "raw_buffer", &["http/1.1", "h2c"], false, HCM),
                    s(&auto, "raw_buffer", &[], false, TCP),
                ],
            ),
        };
        // Chains match the target port (8080), not the service port.
        assert_eq!(port_chains(l, Some(8080)), want_http, "{mode} HTTP");
        assert_eq!(port_chains(l, Some(9090)), want_tcp, "{mode} TCP");
        assert_eq!(port_chains(l, Some(9091)), want_auto, "{mode} auto");
        // The passthrough chains carry the workload's mode, with istiod's fixed names.
        let passthrough = port_chains(l, None);
        assert!(
            passthrough
                .iter()
                .all(|c| c.0 == "virtualInbound" || c.0 == "virtualInbound-catchall-http"),
            "{passthrough:?}"
        );
        assert_eq!(passthrough.len(), want_auto.len(), "{mode} passthrough");
        assert_eq!(
            port_chains(l, Some(15006)),
            [s("virtualInbound-blackhole", "", &[], false, TCP)]
        );
        // Inbound clusters: to the original destination, from 127.0.0.6.
        let c = &out.clusters["inbound|8080||"];
        assert_eq!(
            c.upstream_bind_config
                .as_ref()
                .unwrap()
                .source_address
                .as_ref()
                .unwrap()
                .address,
            "127.0.0.6"
        );
        assert!(out.clusters.contains_key("inbound|9090||"));
        assert!(out.clusters.contains_key("InboundPassthroughCluster"));
    }
}

#[test]
fn the_inbound_tls_context_is_istios() {
    let out = resources(INSTANCES, InterceptionMode::Redirect);
    let chain = out.listeners["virtualInbound"]
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_8080" && c.transport_socket.is_some())
        .unwrap();
    let socket = chain.transport_socket.as_ref().unwrap();
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        a,
    )) = &socket.config_type
    else {
        panic!("no typed config")
    };
    let ctx = DownstreamTlsContext::decode(a.value.as_slice()).unwrap();
    assert!(ctx.require_client_certificate.unwrap().value);
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    let params = common.tls_params.unwrap();
    assert_eq!(params.cipher_suites.len(), 6);
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    let sds = format!(
        "{:?}",
        common.tls_certificate_sds_secret_configs[0].sds_config
    );
    assert!(sds.contains("sds-grpc"), "{sds}");
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        common.validation_context_type
    else {
        panic!("no combined validation context")
    };
    assert_eq!(
        v.validation_context_sds_secret_config.unwrap().name,
        "ROOTCA"
    );
    #[allow(deprecated)]
    let sans: Vec<_> = v
        .default_validation_context
        .unwrap()
        .match_subject_alt_names
        .into_iter()
        .map(|m| m.match_pattern)
        .collect();
    assert_eq!(
        sans,
        [Some(MatchPattern::Prefix("spiffe://cluster.local/".into()))]
    );
    // The HCM forwards the peer's identity to the application, under istiod's stat prefix.
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::ForwardClientCertDetails,
    };
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) =
        &chain.filters[0].config_type
    else {
        panic!("no HCM config")
    };
    let hcm = HttpConnectionManager::decode(a.value.as_slice()).unwrap();
    assert_eq!(hcm.stat_prefix, "inbound_0.0.0.0_8080;");
    assert_eq!(
        hcm.forward_client_cert_details,
        ForwardClientCertDetails::AppendForward as i32
    );
    let details = hcm.set_current_client_cert_details.unwrap();
    assert!(details.uri && details.dns && details.subject.unwrap().value);
}

#[test]
fn inspectors_run_only_where_a_chain_needs_them() {
    // DISABLE on the workload, STRICT on port 9090 only: the TLS inspector must run on 9090
    // (and nowhere the passthrough would need it: DISABLE passthrough is plaintext).
    let config = format!(
        "{INSTANCES}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: reviews, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  \
         mtls: {{mode: DISABLE}}\n  portLevelMtls: {{\"9090\": {{mode: STRICT}}}}\n"
    );
    let out = resources(&config, InterceptionMode::Redirect);
    let l = &out.listeners["virtualInbound"];
    let filters: Vec<String> = l
        .listener_filters
        .iter()
        .map(|f| format!("{} {:?}", f.name, f.filter_disabled))
        .collect();
    let tls = filters
        .iter()
        .find(|f| f.starts_with("envoy.filters.listener.tls_inspector"))
        .unwrap();
    // Enabled only on 9090: disabled where NOT (port 9090).
    assert!(
        tls.contains("NotMatch") && tls.contains("start: 9090"),
        "{tls}"
    );
    let http = filters
        .iter()
        .find(|f| f.starts_with("envoy.filters.listener.http_inspector"))
        .unwrap();
    // The passthrough and the auto port need it: off only on the ports that do not.
    assert!(!http.contains("NotMatch"), "{http}");
    assert!(
        http.contains("start: 8080") && http.contains("start: 9090"),
        "{http}"
    );
    assert_eq!(
        port_chains(l, Some(9090)),
        [s("0.0.0.0_9090", "tls", &[], true, TCP)]
    );
    assert_eq!(
        port_chains(l, Some(8080)),
        [s("0.0.0.0_8080", "raw_buffer", &[], false, HCM)]
    );
}

#[test]
fn port_level_modes_without_a_service_get_passthrough_chains() {
    let config = format!(
        "{INSTANCES}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: reviews, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  \
         mtls: {{mode: STRICT}}\n  portLevelMtls: {{\"7000\": {{mode: DISABLE}}}}\n"
    );
    let out = resources(&config, InterceptionMode::Redirect);
    let l = &out.listeners["virtualInbound"];
    assert_eq!(
        port_chains(l, Some(7000)),
        [
            s(
                "virtualInbound-catchall-http",
                "raw_buffer",
                &["http/1.1", "h2c"],
                false,
                HCM
            ),
            s("virtualInbound", "raw_buffer", &[], false, TCP),
        ]
    );
    // Everything else is STRICT.
    assert!(port_chains(l, None).iter().all(|c| c.1 == "tls" && c.3));
}

#[test]
fn without_capture_and_without_ingress_there_is_no_inbound() {
    let out = resources(INSTANCES, InterceptionMode::None);
    assert!(!out.listeners.contains_key("virtualInbound"));
    assert!(!out.clusters.keys().any(|k| k.starts_with("inbound|")));
}

#[test]
fn captured_ingress_ports_are_chains_on_virtual_inbound() {
    let out = resources(SIDECAR, InterceptionMode::Redirect);
    let inbound = &out.listeners["virtualInbound"];
    // The Sidecar's ingress ports replace the service instances: PERMISSIVE chain sets.
    assert_eq!(port_chains(inbound, Some(9080)).len(), 2);
    assert_eq!(port_chains(inbound, Some(9081)).len(), 5);
    assert_eq!(port_chains(inbound, Some(9443)).len(), 3);
    assert!(!out.listeners.contains_key("0.0.0.0_9080"));
    let cluster = &out.clusters["inbound|9080||"];
    let source = cluster.upstream_bind_config.as_ref().unwrap();
    assert_eq!(source.source_address.as_ref().unwrap().address, "127.0.0.6");
    // Ingress clusters forward to the default endpoint.
    let cla = format!("{:?}", cluster.load_assignment);
    assert!(cla.contains("127.0.0.1") && cla.contains("8080"), "{cla}");
}

#[test]
fn ingress_tls_is_honoured_only_on_a_disable_port() {
    let user_cert = |out: &mesh_xds::Resources| {
        let l = &out.listeners["0.0.0.0_9443"];
        l.filter_chains
            .iter()
            .filter_map(|c| c.transport_socket.as_ref()?.config_type.as_ref())
            .any(|t| {
                let envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(a) = t;
                String::from_utf8_lossy(&a.value).contains("/etc/certs/cert.pem")
            })
    };
    let permissive = resources(SIDECAR, InterceptionMode::None);
    assert!(!user_cert(&permissive), "user TLS under PERMISSIVE");
    let disable = resources(&with_mode(SIDECAR, "DISABLE"), InterceptionMode::None);
    assert!(user_cert(&disable), "user TLS under DISABLE");
    let l = &disable.listeners["0.0.0.0_9443"];
    assert_eq!(l.filter_chains.len(), 1);
    let cluster = &disable.clusters["inbound|9443||"];
    assert!(cluster.upstream_bind_config.is_none());
}

#[test]
fn bound_ingress_listeners_carry_the_same_chains() {
    let out = resources(SIDECAR, InterceptionMode::None);
    assert!(!out.listeners.contains_key("virtualInbound"));
    let bound = &out.listeners["0.0.0.0_9081"];
    assert_eq!(bound.filter_chains.len(), 5);
    let filters: Vec<&str> = bound
        .listener_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.listener.tls_inspector",
            "envoy.filters.listener.http_inspector"
        ]
    );
}
