//! Istio's mutual TLS contexts (reference: security §1.6, §2.2): the workload certificate
//! (`default`) and trust bundle (`ROOTCA`) over SDS from the bootstrap cluster `sds-grpc`,
//! which is the agent's socket, as with Istio's agent.

use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ConfigSource, GrpcService, TransportSocket, api_config_source, config_source,
    grpc_service,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsParameters, UpstreamTlsContext, common_tls_context, tls_parameters,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use mesh_model::MeshConfig;

use crate::pb::{boolv, duration};

/// The bootstrap cluster of the agent's SDS socket.
pub(crate) const SDS_CLUSTER: &str = "sds-grpc";
/// The workload certificate secret.
pub(crate) const DEFAULT_SECRET: &str = "default";
/// The trust bundle secret.
pub(crate) const ROOT_SECRET: &str = "ROOTCA";
/// Transport socket names.
pub(crate) const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
pub(crate) const RAW_BUFFER_SOCKET: &str = "envoy.transport_sockets.raw_buffer";

/// ALPN a mesh client offers to an HTTP/1 or TCP upstream. istiod offers
/// `[istio-peer-exchange, istio]`, but without Istio's metadata-exchange filter a client that
/// negotiates `istio-peer-exchange` with a real Istio sidecar would receive the peer's metadata
/// inside the stream (reference §2.6), so `istio` alone, which every Istio server chain
/// accepts.
pub(crate) const CLIENT_ALPN: &[&str] = &["istio"];
/// ALPN a mesh client offers to an HTTP/2 upstream.
pub(crate) const CLIENT_ALPN_H2: &[&str] = &["istio", "h2"];
/// ALPN the inbound TLS chains advertise (HTTP and TCP alike: advertising
/// `istio-peer-exchange` would switch on a real Istio client's metadata exchange, which this
/// mesh does not speak; istiod's `PILOT_DISABLE_MX_ALPN` output).
pub(crate) const SERVER_ALPN: &[&str] = &["h2", "http/1.1"];

/// The ALPNs inbound TLS chains match for declared ports and PERMISSIVE (`ALL_MTLS`).
pub(crate) const ALL_MTLS_ALPN: &[&str] = &[
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];
/// The ALPNs of HTTP over mTLS to a sniffed port (`MTLS_HTTP`).
pub(crate) const MTLS_HTTP_ALPN: &[&str] = &["istio-http/1.0", "istio-http/1.1", "istio-h2"];
/// The ALPNs of TCP over mTLS to a sniffed port (`MX_TCP`).
pub(crate) const MX_TCP_ALPN: &[&str] = &["istio-peer-exchange", "istio"];
/// The ALPNs of plaintext HTTP the HTTP inspector reports.
pub(crate) const PLAIN_HTTP_ALPN: &[&str] = &["http/1.1", "h2c"];

/// The default cipher suites of inbound mTLS (`meshMTLS.cipherSuites` unset).
const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The config source of the agent's secrets: `sds-grpc` over gRPC, waiting for the secret as
/// long as it takes (`initial_fetch_timeout: 0s`).
pub(crate) fn sds_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
            ApiConfigSource {
                api_type: api_config_source::ApiType::Grpc as i32,
                transport_api_version: 2, // V3
                set_node_on_first_message_only: true,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: SDS_CLUSTER.into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        initial_fetch_timeout: Some(duration(std::time::Duration::ZERO)),
        resource_api_version: 2, // V3
        ..Default::default()
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(sds_source()),
    }
}

/// The trust domains peer certificates may come from: the mesh's, then its aliases
/// (deduplicated, in order).
pub(crate) fn trust_domains(mesh: &MeshConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for td in std::iter::once(&mesh.trust_domain).chain(&mesh.trust_domain_aliases) {
        if !td.is_empty() && !out.contains(td) {
            out.push(td.clone());
        }
    }
    out
}

fn matcher(pattern: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

/// `default` and `ROOTCA` over SDS, with `alpn`, checking peer SANs with `sans`.
fn common(
    alpn: &[&str],
    sans: Vec<StringMatcher>,
    params: Option<TlsParameters>,
) -> CommonTlsContext {
    #[allow(deprecated)]
    let validation = CertificateValidationContext {
        match_subject_alt_names: sans,
        ..Default::default()
    };
    CommonTlsContext {
        tls_params: params,
        alpn_protocols: strings(alpn),
        tls_certificate_sds_secret_configs: vec![sds(DEFAULT_SECRET)],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(validation),
                    validation_context_sds_secret_config: Some(sds(ROOT_SECRET)),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

/// The inbound mTLS context (STRICT and PERMISSIVE chains): client certificates required, from
/// any of the mesh's trust domains.
pub(crate) fn inbound_context(mesh: &MeshConfig) -> DownstreamTlsContext {
    let sans = trust_domains(mesh)
        .into_iter()
        .map(|td| {
            matcher(string_matcher::MatchPattern::Prefix(format!(
                "spiffe://{td}/"
            )))
        })
        .collect();
    let params = TlsParameters {
        tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
        cipher_suites: strings(CIPHER_SUITES),
        ..Default::default()
    };
    DownstreamTlsContext {
        common_tls_context: Some(common(SERVER_ALPN, sans, Some(params))),
        require_client_certificate: Some(boolv(true)),
        ..Default::default()
    }
}

/// A gateway server's ISTIO_MUTUAL context: the gateway's workload identity, client
/// certificates required and checked against `sans` (exact; none = any mesh certificate).
pub(crate) fn gateway_istio_mutual(sans: &[String]) -> DownstreamTlsContext {
    let sans = sans
        .iter()
        .map(|s| matcher(string_matcher::MatchPattern::Exact(s.clone())))
        .collect();
    DownstreamTlsContext {
        common_tls_context: Some(common(SERVER_ALPN, sans, None)),
        require_client_certificate: Some(boolv(true)),
        ..Default::default()
    }
}

/// The client side of ISTIO_MUTUAL: SNI `sni`, the server's identity one of `sans` (exact;
/// none = any certificate of the mesh's CA), ALPN by the upstream protocol.
pub(crate) fn istio_mutual(sni: &str, sans: &[String], http2: bool) -> UpstreamTlsContext {
    let params = TlsParameters {
        tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
        ..Default::default()
    };
    let sans = sans
        .iter()
        .map(|s| matcher(string_matcher::MatchPattern::Exact(s.clone())))
        .collect();
    UpstreamTlsContext {
        common_tls_context: Some(common(
            if http2 { CLIENT_ALPN_H2 } else { CLIENT_ALPN },
            sans,
            Some(params),
        )),
        sni: sni.into(),
        ..Default::default()
    }
}

/// A TLS transport socket with `context`.
pub(crate) fn tls_socket<M: prost::Message + prost::Name>(context: &M) -> TransportSocket {
    crate::pb::transport_socket(TLS_SOCKET, context)
}

/// The plaintext transport socket (what `tlsMode-disabled` selects).
pub(crate) fn raw_buffer_socket() -> TransportSocket {
    crate::pb::transport_socket(RAW_BUFFER_SOCKET, &RawBuffer::default())
}

/// The identities a service's endpoints present (reference: security §2.3): the SPIFFE IDs of
/// their service accounts and the ServiceEntry's `subjectAltNames`, each SPIFFE ID of the mesh's
/// trust domain also in every alias, sorted and without duplicates.
pub(crate) fn service_sans(mesh: &MeshConfig, svc: &crate::registry::Service) -> Vec<String> {
    let domains = trust_domains(mesh);
    let mut out = std::collections::BTreeSet::new();
    let accounts = svc.service_accounts().into_iter().map(|sa| {
        format!(
            "spiffe://{}/ns/{}/sa/{sa}",
            mesh.trust_domain, svc.namespace
        )
    });
    for id in accounts.chain(svc.subject_alt_names.iter().cloned()) {
        let own = format!("spiffe://{}/", mesh.trust_domain);
        if let Some(path) = id.strip_prefix(&own) {
            for td in &domains {
                out.insert(format!("spiffe://{td}/{path}"));
            }
        }
        out.insert(id);
    }
    out.into_iter().collect()
}
