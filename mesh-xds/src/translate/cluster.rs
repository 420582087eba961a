//! Clusters (CDS): one per service port and per DestinationRule subset, shaped by the
//! DestinationRule's traffic policy (reference §3.4).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CoreHttpOptions,
    KeepaliveSettings, RoutingPriority, TcpKeepalive,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, TlsCertificate, UpstreamTlsContext,
    common_tls_context,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use mesh_model::networking::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec, H2UpgradePolicy,
    OutlierDetection, SimpleLb, TrafficPolicy,
};
use mesh_model::networking::service_entry::{Location, Resolution};
use mesh_model::protocol::Protocol;

use crate::naming;
use crate::pb::{ads_source, any, dur, file, u32v};
use crate::proxy::Proxy;
use crate::registry::{Service, ServicePort};
use crate::translate::scope::{SidecarScope, destination_rule, effective_policy};
use crate::translate::{PushContext, Sink, endpoint};

const MAX_U32: u32 = u32::MAX;
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Whether a cluster is discovered over EDS.
pub(crate) fn is_eds(c: &Cluster) -> bool {
    matches!(c.cluster_discovery_type, Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32)
}

/// Clusters (and their EDS assignments) for every imported service, plus the special ones.
pub(crate) fn sidecar_clusters(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    out: &mut dyn Sink,
) {
    outbound_clusters(
        ctx,
        proxy,
        scope,
        naming::outbound_cluster,
        false,
        &|_| true,
        out,
    );
    let blackhole = Cluster {
        name: naming::BLACKHOLE_CLUSTER.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(dur(&ctx.mesh.connect_timeout)),
        ..Default::default()
    };
    out.cluster(blackhole);
    let passthrough = Cluster {
        name: naming::PASSTHROUGH_CLUSTER.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(dur(&ctx.mesh.connect_timeout)),
        circuit_breakers: Some(circuit_breakers_for(None)),
        ..Default::default()
    };
    out.cluster(passthrough);
}

/// The SNI-DNAT clusters of a gateway with AUTO_PASSTHROUGH servers: one per service, port and
/// subset, named `outbound_.PORT_.SUBSET_.HOST` (the SNI clients send), with the same endpoints
/// and policy as the outbound cluster but without TLS origination (the bytes are already TLS).
pub(crate) fn sni_dnat_clusters(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    out: &mut dyn Sink,
) {
    outbound_clusters(
        ctx,
        proxy,
        scope,
        naming::outbound_sni,
        true,
        &|_| true,
        out,
    );
}

#[cfg(feature = "cache")]
/// The EDS assignments (and, as a by-product the sink may drop, the clusters) of the services
/// `only` accepts: what an endpoint-only change needs translated again.
pub(crate) fn outbound_assignments(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    sni_dnat: bool,
    only: &dyn Fn(&Service) -> bool,
    out: &mut dyn Sink,
) {
    outbound_clusters(
        ctx,
        proxy,
        scope,
        naming::outbound_cluster,
        false,
        only,
        out,
    );
    if sni_dnat {
        outbound_clusters(ctx, proxy, scope, naming::outbound_sni, true, only, out);
    }
}

/// The clusters of every service in scope, port and subset, named by `name`.
fn outbound_clusters(
    ctx: &PushContext,
    proxy: &Proxy,
    scope: &SidecarScope<'_>,
    name: fn(u32, &str, &str) -> String,
    passthrough_tls: bool,
    only: &dyn Fn(&Service) -> bool,
    out: &mut dyn Sink,
) {
    let mut templates = Templates::default();
    let mut contexts = MtlsContexts::default();
    // SNI-DNAT clusters (istiod's `buildOutboundSniDnatClusters`) skip mesh external services
    // and UDP ports, as the gateway's AUTO_PASSTHROUGH chains do.
    let sni_dnat = passthrough_tls;
    for svc in scope
        .services
        .iter()
        .filter(|s| only(s) && !(sni_dnat && s.location == Location::MeshExternal))
    {
        let dr = destination_rule(ctx, proxy, &svc.hostname, &svc.namespace);
        templates.local.clear();
        for port in svc
            .ports
            .iter()
            .filter(|p| !(sni_dnat && p.protocol == Protocol::Udp))
        {
            let policy = effective_policy(dr.as_deref(), None, port.number);
            let cluster = name(port.number, "", &svc.hostname);
            let extras = if passthrough_tls {
                None
            } else {
                client_mtls(ctx, svc, port, "", &policy, &mut contexts)
            };
            add_cluster(
                ctx,
                proxy,
                svc,
                port,
                cluster,
                None,
                &policy,
                extras,
                sni_dnat,
                &mut templates,
                out,
            );
            if let Some(dr) = &dr {
                for subset in &dr.subsets {
                    let cluster = name(port.number, &subset.name, &svc.hostname);
                    let policy = effective_policy(Some(dr.as_ref()), Some(subset), port.number);
                    let extras = if passthrough_tls {
                        None
                    } else {
                        client_mtls(ctx, svc, port, &subset.name, &policy, &mut contexts)
                    };
                    add_cluster(
                        ctx,
                        proxy,
                        svc,
                        port,
                        cluster,
                        Some(&subset.labels),
                        &policy,
                        extras,
                        sni_dnat,
                        &mut templates,
                        out,
                    );
                }
            }
        }
    }
}

/// How an outbound cluster finds its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Eds,
    OriginalDst,
    StrictDns,
    LogicalDns,
    /// DYNAMIC_DNS: Envoy's dynamic forward proxy resolves each request's host.
    DynamicForwardProxy,
}

impl Kind {
    fn discovery_type(self) -> cluster::DiscoveryType {
        match self {
            Kind::Eds => cluster::DiscoveryType::Eds,
            Kind::OriginalDst => cluster::DiscoveryType::OriginalDst,
            Kind::StrictDns => cluster::DiscoveryType::StrictDns,
            Kind::LogicalDns => cluster::DiscoveryType::LogicalDns,
            // Replaced by the custom cluster type when the cluster is made.
            Kind::DynamicForwardProxy => cluster::DiscoveryType::Static,
        }
    }
}

/// Everything of an outbound cluster but its name, discovery type and endpoints. A cluster's
/// body depends only on its kind, its port and its effective policy (and on the proxy and mesh
/// config, fixed within a translation), so the default and subset clusters of a service, and
/// services with the same policy, share one template; the encoder encodes its body once.
#[derive(Debug)]
pub(crate) struct ClusterTemplate {
    /// Name, discovery type and EDS config left empty: every field it sets has a tag above 3.
    body: Cluster,
    discovery: cluster::DiscoveryType,
    eds: bool,
    encoded: std::cell::OnceCell<(Vec<u8>, Vec<u8>, Vec<crate::encoding::Field>)>,
}

/// Per-cluster fields on top of a shared template, merged into the body's by field number so
/// that the bytes stay prost's: the client side of Istio mTLS, whose SNI differs per cluster,
/// over a TLS context the clusters of one service share: a plain `transport_socket`, or
/// istiod's two `transport_socket_matches` (`tlsMode-istio`, then `tlsMode-disabled`).
#[derive(Clone, Debug)]
pub(crate) struct ClusterExtras {
    /// The cluster's SNI.
    sni: String,
    /// The shared TLS context and its encoding.
    tls: std::rc::Rc<MtlsContext>,
    /// Matches (EDS and DNS clusters) or a plain socket (ORIGINAL_DST).
    matches: bool,
}

/// An ISTIO_MUTUAL client context without its SNI (which is per cluster), encoded once.
#[derive(Debug)]
pub(crate) struct MtlsContext {
    common: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::CommonTlsContext,
    encoded: Vec<u8>,
}

impl MtlsContext {
    fn new(sans: &[String], http2: bool) -> MtlsContext {
        use prost::Message;
        let common = crate::security::tls::istio_mutual("", sans, http2)
            .common_tls_context
            .unwrap_or_default();
        let encoded = common.encode_to_vec();
        MtlsContext { common, encoded }
    }
}

const TLS_MODE_ISTIO: &str = "tlsMode-istio";
const UPSTREAM_TLS_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// The lengths of the nested messages of an mTLS transport socket, innermost first.
struct MtlsLens {
    /// `UpstreamTlsContext`.
    context: usize,
    /// Its `Any`.
    any: usize,
    /// The `TransportSocket`.
    socket: usize,
    /// The `tlsMode-istio` match.
    first_match: usize,
}

impl MtlsLens {
    fn of(sni: &str, tls: &MtlsContext) -> MtlsLens {
        use crate::encoding::tag::{
            any, transport_socket as ts, transport_socket_match as tsm, upstream_tls_context as utc,
        };
        use crate::encoding::{field_len, str_len};
        let context =
            field_len(utc::COMMON_TLS_CONTEXT, tls.encoded.len()) + str_len(utc::SNI, sni);
        let any = field_len(any::TYPE_URL, UPSTREAM_TLS_URL.len()) + field_len(any::VALUE, context);
        let socket =
            str_len(ts::NAME, crate::security::tls::TLS_SOCKET) + field_len(ts::TYPED_CONFIG, any);
        let first_match = str_len(tsm::NAME, TLS_MODE_ISTIO)
            + field_len(tsm::MATCH, match_constants().0.len())
            + field_len(tsm::TRANSPORT_SOCKET, socket);
        MtlsLens {
            context,
            any,
            socket,
            first_match,
        }
    }
}
const TLS_MODE_DISABLED: &str = "tlsMode-disabled";

fn tls_mode_struct(mode: Option<&str>) -> envoy_types::pb::google::protobuf::Struct {
    use envoy_types::pb::google::protobuf::{Struct, Value, value};
    Struct {
        fields: mode
            .map(|m| {
                (
                    "tlsMode".to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(m.to_string())),
                    },
                )
            })
            .into_iter()
            .collect(),
    }
}

/// The constant parts of istiod's transport socket matches, encoded once: the `match` of
/// `tlsMode-istio`, and the whole `tlsMode-disabled` entry.
fn match_constants() -> &'static (Vec<u8>, Vec<u8>) {
    static BYTES: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        use prost::Message;
        (
            tls_mode_struct(Some("istio")).encode_to_vec(),
            cluster::TransportSocketMatch {
                name: TLS_MODE_DISABLED.into(),
                r#match: Some(tls_mode_struct(None)),
                transport_socket: Some(crate::security::tls::raw_buffer_socket()),
            }
            .encode_to_vec(),
        )
    })
}

impl ClusterExtras {
    /// A cluster holding only these fields.
    fn to_fields(&self) -> Cluster {
        use crate::security::tls;
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
        let socket = tls::tls_socket(&UpstreamTlsContext {
            common_tls_context: Some(self.tls.common.clone()),
            sni: self.sni.clone(),
            ..Default::default()
        });
        if !self.matches {
            return Cluster {
                transport_socket: Some(socket),
                ..Default::default()
            };
        }
        Cluster {
            transport_socket_matches: vec![
                cluster::TransportSocketMatch {
                    name: TLS_MODE_ISTIO.into(),
                    r#match: Some(tls_mode_struct(Some("istio"))),
                    transport_socket: Some(socket),
                },
                cluster::TransportSocketMatch {
                    name: TLS_MODE_DISABLED.into(),
                    r#match: Some(tls_mode_struct(None)),
                    transport_socket: Some(tls::raw_buffer_socket()),
                },
            ],
            ..Default::default()
        }
    }

    /// The encoded length of [`ClusterExtras::encode`]'s output.
    fn encoded_len(&self) -> usize {
        use crate::encoding::field_len;
        use crate::encoding::tag::cluster as c;
        let l = MtlsLens::of(&self.sni, &self.tls);
        if self.matches {
            field_len(c::TRANSPORT_SOCKET_MATCHES, l.first_match)
                + field_len(c::TRANSPORT_SOCKET_MATCHES, match_constants().1.len())
        } else {
            field_len(c::TRANSPORT_SOCKET, l.socket)
        }
    }

    /// The encoding of [`ClusterExtras::to_fields`], written from the parts for mTLS.
    fn encode(&self, buf: &mut Vec<u8>) {
        use crate::encoding::tag::{
            any, cluster as c, transport_socket as ts, transport_socket_match as tsm,
            upstream_tls_context as utc,
        };
        use crate::encoding::{put_bytes, put_len, put_str};
        let ClusterExtras { sni, tls, matches } = self;
        let matches = *matches;
        let l = MtlsLens::of(sni, tls);
        let socket = |buf: &mut Vec<u8>| {
            put_str(ts::NAME, crate::security::tls::TLS_SOCKET, buf);
            put_len(ts::TYPED_CONFIG, l.any, buf);
            put_str(any::TYPE_URL, UPSTREAM_TLS_URL, buf);
            put_len(any::VALUE, l.context, buf);
            put_bytes(utc::COMMON_TLS_CONTEXT, &tls.encoded, buf);
            put_str(utc::SNI, sni, buf);
        };
        if matches {
            let (istio_match, disabled) = match_constants();
            put_len(c::TRANSPORT_SOCKET_MATCHES, l.first_match, buf);
            put_str(tsm::NAME, TLS_MODE_ISTIO, buf);
            put_bytes(tsm::MATCH, istio_match, buf);
            put_len(tsm::TRANSPORT_SOCKET, l.socket, buf);
            socket(buf);
            put_bytes(c::TRANSPORT_SOCKET_MATCHES, disabled, buf);
        } else {
            put_len(c::TRANSPORT_SOCKET, l.socket, buf);
            socket(buf);
        }
    }

    /// The cluster field the extras set.
    fn field(&self) -> u32 {
        use crate::encoding::tag::cluster as c;
        if self.matches {
            c::TRANSPORT_SOCKET_MATCHES
        } else {
            c::TRANSPORT_SOCKET
        }
    }
}

impl ClusterTemplate {
    /// The typed cluster named `name`, with `extras`.
    pub(crate) fn instantiate(&self, name: String, extras: Option<&ClusterExtras>) -> Cluster {
        let mut c = self.body.clone();
        if let Some(x) = extras {
            let fields = x.to_fields();
            c.transport_socket = fields.transport_socket.or(c.transport_socket.take());
            c.transport_socket_matches
                .extend(fields.transport_socket_matches);
        }
        c.cluster_discovery_type = Some(self.discovery_type());
        if self.eds {
            c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(ads_source(Some(std::time::Duration::ZERO))),
                service_name: name.clone(),
            });
        }
        c.name = name;
        c
    }

    /// Appends the encoding of the cluster named `name` to `buf`: prost encodes fields in tag
    /// order, so that is the name (1), the discovery type (2), the EDS config (3), then the
    /// body's own encoding; byte for byte what `instantiate(name).encode()` gives (a test and
    /// the property tests check it).
    pub(crate) fn encode_named(
        &self,
        name: &str,
        extras: Option<&ClusterExtras>,
        buf: &mut Vec<u8>,
    ) {
        use crate::encoding::tag::{cluster, eds_cluster_config as eds};
        use crate::encoding::{put_bytes, put_len, put_str};
        let (body, eds_source, body_fields) = self.encoded();
        put_str(cluster::NAME, name, buf);
        self.discovery_type().encode(buf);
        if self.eds {
            put_len(cluster::EDS_CLUSTER_CONFIG, self.eds_len(name), buf);
            put_bytes(eds::EDS_CONFIG, eds_source, buf);
            put_str(eds::SERVICE_NAME, name, buf);
        }
        match extras {
            None => buf.extend_from_slice(body),
            Some(x) => {
                // Every extras field has one number: its bytes go before the body's first
                // field with a higher one (prost's order).
                let tag = x.field();
                let split = body_fields
                    .iter()
                    .find(|(t, _)| *t > tag)
                    .map_or(body.len(), |(_, r)| r.start);
                buf.extend_from_slice(&body[..split]);
                x.encode(buf);
                buf.extend_from_slice(&body[split..]);
            }
        }
    }

    /// The length [`ClusterTemplate::encode_named`] writes.
    pub(crate) fn encoded_len_named(&self, name: &str, extras: Option<&ClusterExtras>) -> usize {
        use crate::encoding::tag::cluster;
        use crate::encoding::{field_len, str_len};
        let eds = if self.eds {
            field_len(cluster::EDS_CLUSTER_CONFIG, self.eds_len(name))
        } else {
            0
        };
        str_len(cluster::NAME, name)
            + self.discovery_type().encoded_len()
            + eds
            + self.encoded().0.len()
            + extras.map_or(0, ClusterExtras::encoded_len)
    }

    /// The length of the `EdsClusterConfig` of the cluster named `name`.
    fn eds_len(&self, name: &str) -> usize {
        use crate::encoding::tag::eds_cluster_config as eds;
        use crate::encoding::{field_len, str_len};
        field_len(eds::EDS_CONFIG, self.encoded().1.len()) + str_len(eds::SERVICE_NAME, name)
    }

    fn discovery_type(&self) -> cluster::ClusterDiscoveryType {
        cluster::ClusterDiscoveryType::Type(self.discovery as i32)
    }

    fn encoded(&self) -> &(Vec<u8>, Vec<u8>, Vec<crate::encoding::Field>) {
        use prost::Message;
        self.encoded.get_or_init(|| {
            let body = self.body.encode_to_vec();
            let fields = crate::encoding::fields(&body);
            (
                body,
                ads_source(Some(std::time::Duration::ZERO)).encode_to_vec(),
                fields,
            )
        })
    }
}

/// Templates of one translation: shared across services (a bounded number, so that a mesh
/// where every service has its own policy does not scan a long list), and those of the service
/// being translated.
#[derive(Default)]
struct Templates {
    shared: Vec<(
        Kind,
        ServicePort,
        TrafficPolicy,
        std::rc::Rc<ClusterTemplate>,
    )>,
    local: Vec<(
        Kind,
        ServicePort,
        TrafficPolicy,
        std::rc::Rc<ClusterTemplate>,
    )>,
}

const SHARED_TEMPLATES: usize = 32;

impl Templates {
    fn get(
        &mut self,
        kind: Kind,
        port: &ServicePort,
        policy: &TrafficPolicy,
        build: impl FnOnce() -> ClusterTemplate,
    ) -> std::rc::Rc<ClusterTemplate> {
        let hit = |v: &Vec<(
            Kind,
            ServicePort,
            TrafficPolicy,
            std::rc::Rc<ClusterTemplate>,
        )>| {
            v.iter()
                .find(|(k, p, pol, _)| *k == kind && p == port && pol == policy)
                .map(|(_, _, _, t)| t.clone())
        };
        if let Some(t) = hit(&self.shared).or_else(|| hit(&self.local)) {
            return t;
        }
        let t = std::rc::Rc::new(build());
        let list = if self.shared.len() < SHARED_TEMPLATES {
            &mut self.shared
        } else {
            &mut self.local
        };
        list.push((kind, port.clone(), policy.clone(), t.clone()));
        t
    }
}

/// How a service's cluster finds its endpoints under `policy`.
fn cluster_kind(svc: &Service, policy: &TrafficPolicy) -> Kind {
    let passthrough_lb =
        policy.load_balancer.as_ref().and_then(|l| l.simple) == Some(SimpleLb::Passthrough);
    match svc.resolution {
        Resolution::None => Kind::OriginalDst,
        _ if passthrough_lb => Kind::OriginalDst,
        Resolution::Static => Kind::Eds,
        Resolution::Dns => Kind::StrictDns,
        Resolution::DnsRoundRobin => Kind::LogicalDns,
        Resolution::DynamicDns => Kind::DynamicForwardProxy,
    }
}

/// The client side of Istio mTLS for one outbound cluster (reference: security §2.1–§2.3):
/// ISTIO_MUTUAL from the DestinationRule as a plain transport socket; else auto mTLS for
/// in-mesh services whose namespace does not DISABLE it, as `transport_socket_matches` that
/// use mTLS only toward endpoints labelled `tlsMode: istio` (a plain socket on ORIGINAL_DST
/// clusters, where every endpoint must accept it). `subset` names the subset for the SNI.
fn client_mtls(
    ctx: &PushContext,
    svc: &Service,
    port: &ServicePort,
    subset: &str,
    policy: &TrafficPolicy,
    contexts: &mut MtlsContexts,
) -> Option<ClusterExtras> {
    use crate::security::{peer::Mode, tls};
    let kind = cluster_kind(svc, policy);
    if kind == Kind::DynamicForwardProxy {
        return None;
    }
    let http2 = is_http2_cluster(port, policy, &ctx.mesh);
    let default_sni = || naming::outbound_sni(port.number, subset, &svc.hostname);
    if let Some(settings) = &policy.tls {
        if settings.mode != ClientTlsMode::IstioMutual {
            return None;
        }
        let sans = if settings.subject_alt_names.is_empty() {
            tls::service_sans(&ctx.mesh, svc)
        } else {
            settings.subject_alt_names.clone()
        };
        return Some(ClusterExtras {
            sni: settings.sni.clone().unwrap_or_else(default_sni),
            tls: contexts.get(sans, http2),
            matches: false,
        });
    }
    if !ctx.mesh.enable_auto_mtls
        || svc.location == mesh_model::networking::service_entry::Location::MeshExternal
    {
        return None;
    }
    if kind == Kind::OriginalDst
        && (svc.endpoints.is_empty() || !svc.endpoints.iter().all(|e| e.accepts_mtls()))
    {
        return None;
    }
    if ctx.peer_authentications.namespace_mode(&svc.namespace) == Mode::Disable {
        return None;
    }
    Some(ClusterExtras {
        sni: default_sni(),
        tls: contexts.for_service(ctx, svc, http2),
        matches: kind != Kind::OriginalDst,
    })
}

/// The mTLS client contexts of one translation, by (SANs, HTTP/2): the clusters of a service
/// (and services with the same identities) share one, encoded once. The service being
/// translated keeps its own at hand (its SANs are computed once, not per cluster).
#[derive(Default)]
struct MtlsContexts {
    by_sans: HashMap<(Vec<String>, bool), std::rc::Rc<MtlsContext>>,
    /// The current service (by address) and its contexts for HTTP/1 and HTTP/2.
    current: Option<(*const Service, [Option<std::rc::Rc<MtlsContext>>; 2])>,
}

impl MtlsContexts {
    /// The context of `svc`'s own identities.
    fn for_service(
        &mut self,
        ctx: &PushContext,
        svc: &Service,
        http2: bool,
    ) -> std::rc::Rc<MtlsContext> {
        let key = std::ptr::from_ref(svc);
        if self.current.as_ref().is_none_or(|(k, _)| *k != key) {
            self.current = Some((key, [None, None]));
        }
        if let Some((_, slots)) = &self.current
            && let Some(c) = &slots[usize::from(http2)]
        {
            return c.clone();
        }
        let c = self.get(crate::security::tls::service_sans(&ctx.mesh, svc), http2);
        if let Some((_, slots)) = &mut self.current {
            slots[usize::from(http2)] = Some(c.clone());
        }
        c
    }

    fn get(&mut self, sans: Vec<String>, http2: bool) -> std::rc::Rc<MtlsContext> {
        self.by_sans
            .entry((sans, http2))
            .or_insert_with_key(|(sans, http2)| std::rc::Rc::new(MtlsContext::new(sans, *http2)))
            .clone()
    }
}

/// Whether the cluster speaks HTTP/2 upstream: an HTTP/2 or gRPC port, or HTTP with
/// `h2UpgradePolicy: UPGRADE`.
fn is_http2_cluster(
    port: &ServicePort,
    policy: &TrafficPolicy,
    mesh: &mesh_model::MeshConfig,
) -> bool {
    let upgrade = policy
        .connection_pool
        .as_ref()
        .and_then(|cp| cp.http.as_ref())
        .and_then(|h| h.h2_upgrade_policy)
        .or(mesh.h2_upgrade_policy)
        == Some(H2UpgradePolicy::Upgrade);
    port.is_http2() || (upgrade && port.protocol == Protocol::Http)
}

#[allow(clippy::too_many_arguments)]
fn add_cluster(
    ctx: &PushContext,
    proxy: &Proxy,
    svc: &Service,
    port: &ServicePort,
    name: String,
    subset_labels: Option<&std::collections::BTreeMap<String, String>>,
    policy: &TrafficPolicy,
    extras: Option<ClusterExtras>,
    sni_dnat: bool,
    templates: &mut Templates,
    out: &mut dyn Sink,
) {
    // An SNI-DNAT cluster forwards bytes that are already TLS: its body originates none, but
    // its endpoints are still chosen by the destination's own TLS policy (below).
    let untls;
    let body_policy = if sni_dnat && policy.tls.is_some() {
        untls = TrafficPolicy {
            tls: None,
            ..policy.clone()
        };
        &untls
    } else {
        policy
    };
    let kind = cluster_kind(svc, body_policy);
    let template = templates.get(kind, port, body_policy, || ClusterTemplate {
        body: cluster_body(ctx, proxy, kind, port, body_policy),
        discovery: kind.discovery_type(),
        eds: kind == Kind::Eds,
        encoded: std::cell::OnceCell::new(),
    });
    match kind {
        Kind::OriginalDst => out.templated_cluster(name, &template, extras.as_ref()),
        Kind::DynamicForwardProxy => {
            use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::{
                ClusterConfig, cluster_config,
            };
            let mut c = template.instantiate(name, extras.as_ref());
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::ClusterType(
                cluster::CustomClusterType {
                    name: "envoy.clusters.dynamic_forward_proxy".into(),
                    typed_config: Some(any(&ClusterConfig {
                        cluster_implementation_specifier: Some(
                            cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(
                                crate::pb::dfp_cache(),
                            ),
                        ),
                        ..Default::default()
                    })),
                },
            ));
            out.cluster(c);
        }
        Kind::Eds => {
            let mut assignment =
                endpoint::assignment(ctx, proxy, svc, port, &name, subset_labels, policy);
            if sni_dnat {
                // istiod's `EndpointsWithMTLSFilter`: the gateway cannot tell whether the
                // passed-through bytes are Istio mTLS, so only endpoints that require it are
                // reachable through it.
                assignment.retain_mtls();
            }
            out.assignment(&assignment);
            out.templated_cluster(name, &template, extras.as_ref());
        }
        Kind::StrictDns | Kind::LogicalDns => {
            // Istio also sets respect_dns_ttl and the mesh dns_refresh_rate; Envoy 1.40 deprecates
            // those cluster fields in favour of the DNS cluster extension, so Envoy's defaults apply.
            let mut cla: ClusterLoadAssignment =
                endpoint::assignment(ctx, proxy, svc, port, &name, subset_labels, policy)
                    .to_message();
            if cla.endpoints.is_empty() && !svc.hostname.starts_with('*') {
                cla = endpoint::single(&name, &svc.hostname, port.number);
            }
            if kind == Kind::LogicalDns {
                // LOGICAL_DNS takes exactly one host.
                endpoint::keep_first(&mut cla);
            }
            let mut c = template.instantiate(name, extras.as_ref());
            c.load_assignment = Some(cla);
            out.cluster(c);
        }
    }
}

/// The part of an outbound cluster that depends on its kind, port and policy only.
fn cluster_body(
    ctx: &PushContext,
    proxy: &Proxy,
    kind: Kind,
    port: &ServicePort,
    policy: &TrafficPolicy,
) -> Cluster {
    let mut c = Cluster {
        connect_timeout: Some(dur(policy
            .connection_pool
            .as_ref()
            .and_then(|cp| cp.tcp.as_ref())
            .and_then(|t| t.connect_timeout.as_ref())
            .unwrap_or(&ctx.mesh.connect_timeout))),
        circuit_breakers: Some(circuit_breakers_for(policy.connection_pool.as_ref())),
        ..Default::default()
    };
    match kind {
        Kind::OriginalDst | Kind::DynamicForwardProxy => {
            c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
        }
        _ => apply_lb(&mut c, policy, proxy.proxyless_grpc),
    }
    if matches!(kind, Kind::StrictDns | Kind::LogicalDns) {
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
    }
    if let Some(od) = &policy.outlier_detection {
        apply_outlier(&mut c, od);
    }
    if port.is_http() || port.is_sniffed() {
        apply_http_options(&mut c, port, policy, &ctx.mesh);
    } else if let Some(tcp) = policy
        .connection_pool
        .as_ref()
        .and_then(|cp| cp.tcp.as_ref())
        && let Some(k) = &tcp.tcp_keepalive
    {
        c.upstream_connection_options = Some(
            envoy_types::pb::envoy::config::cluster::v3::UpstreamConnectionOptions {
                tcp_keepalive: Some(TcpKeepalive {
                    keepalive_probes: k.probes.map(u32v),
                    keepalive_time: k
                        .time
                        .map(|t| u32v(u32::try_from(t.as_std().as_secs()).unwrap_or(u32::MAX))),
                    keepalive_interval: k
                        .interval
                        .map(|t| u32v(u32::try_from(t.as_std().as_secs()).unwrap_or(u32::MAX))),
                }),
                ..Default::default()
            },
        );
    }
    if let Some(tls) = &policy.tls
        && let Some(ts) = upstream_tls(tls, port.is_http2())
    {
        c.transport_socket = Some(ts);
    }
    if kind == Kind::DynamicForwardProxy {
        // Envoy requires these on dynamic forward proxy clusters: the SNI and the SAN checked
        // are the request's host (they matter once the upstream is TLS).
        dfp_upstream_options(&mut c);
    }
    c
}

/// One threshold with Istio's defaults (everything 2^32-1, remaining tracked); 0 means unset.
pub(crate) fn circuit_breakers_for(cp: Option<&ConnectionPoolSettings>) -> CircuitBreakers {
    let pick = |v: Option<i32>| match v {
        Some(n) if n > 0 => u32::try_from(n).unwrap_or(MAX_U32),
        _ => MAX_U32,
    };
    let tcp = cp.and_then(|c| c.tcp.as_ref());
    let http = cp.and_then(|c| c.http.as_ref());
    CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: Some(u32v(pick(tcp.and_then(|t| t.max_connections)))),
            max_pending_requests: Some(u32v(pick(http.and_then(|h| h.http1_max_pending_requests)))),
            max_requests: Some(u32v(pick(http.and_then(|h| h.http2_max_requests)))),
            max_retries: Some(u32v(pick(http.and_then(|h| h.max_retries)))),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn apply_lb(c: &mut Cluster, policy: &TrafficPolicy, proxyless: bool) {
    let lb = policy.load_balancer.as_ref();
    c.lb_policy = match lb.and_then(|l| l.simple) {
        Some(SimpleLb::RoundRobin) => cluster::LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => cluster::LbPolicy::Random,
        // Proxyless gRPC clients support ROUND_ROBIN and ring hash; use the former by default.
        None | Some(SimpleLb::Unspecified) if proxyless => cluster::LbPolicy::RoundRobin,
        _ => cluster::LbPolicy::LeastRequest,
    } as i32;
    if let Some(ch) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        if let Some(m) = &ch.maglev {
            c.lb_policy = cluster::LbPolicy::Maglev as i32;
            c.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                table_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: m.table_size.unwrap_or(65537),
                }),
            }));
        } else {
            c.lb_policy = cluster::LbPolicy::RingHash as i32;
            let size = ch
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .unwrap_or(1024);
            c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(
                cluster::RingHashLbConfig {
                    minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                        value: size,
                    }),
                    ..Default::default()
                },
            ));
        }
    }
    if let Some(w) = lb.and_then(|l| l.warmup.as_ref()) {
        let cfg = cluster::SlowStartConfig {
            slow_start_window: w.duration.as_ref().map(dur),
            aggression: Some(envoy_types::pb::envoy::config::core::v3::RuntimeDouble {
                default_value: w.aggression.unwrap_or(1.0),
                runtime_key: String::new(),
            }),
            min_weight_percent: Some(envoy_types::pb::envoy::r#type::v3::Percent {
                value: w.minimum_percent.unwrap_or(10.0),
            }),
        };
        match c.lb_policy {
            x if x == cluster::LbPolicy::RoundRobin as i32 => {
                c.lb_config = Some(cluster::LbConfig::RoundRobinLbConfig(
                    cluster::RoundRobinLbConfig {
                        slow_start_config: Some(cfg),
                    },
                ))
            }
            x if x == cluster::LbPolicy::LeastRequest as i32 => {
                c.lb_config = Some(cluster::LbConfig::LeastRequestLbConfig(
                    cluster::LeastRequestLbConfig {
                        slow_start_config: Some(cfg),
                        ..Default::default()
                    },
                ))
            }
            _ => {}
        }
    }
    let locality = lb.and_then(|l| l.locality_lb_setting.as_ref());
    let has_outlier = policy.outlier_detection.is_some();
    let weighted = locality.is_some_and(|l| {
        !l.distribute.is_empty()
            || ((!l.failover.is_empty() || !l.failover_priority.is_empty()) && has_outlier)
    });
    let panic = policy
        .outlier_detection
        .as_ref()
        .and_then(|o| o.min_health_percent);
    if weighted || panic.is_some() {
        c.common_lb_config = Some(cluster::CommonLbConfig {
            healthy_panic_threshold: panic.map(|p| envoy_types::pb::envoy::r#type::v3::Percent {
                value: f64::from(p),
            }),
            locality_config_specifier: weighted.then_some({
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    cluster::common_lb_config::LocalityWeightedLbConfig {},
                )
            }),
            ..Default::default()
        });
    }
}

fn apply_outlier(c: &mut Cluster, od: &OutlierDetection) {
    let enforcing = |v: Option<u32>| Some(u32v(if v.unwrap_or(0) > 0 { 100 } else { 0 }));
    let mut o = EnvoyOutlier {
        enforcing_success_rate: Some(u32v(0)),
        interval: od.interval.as_ref().map(dur),
        base_ejection_time: od.base_ejection_time.as_ref().map(dur),
        max_ejection_percent: od
            .max_ejection_percent
            .filter(|p| *p > 0)
            .map(|p| u32v(u32::try_from(p).unwrap_or(100))),
        ..Default::default()
    };
    match od.consecutive_5xx_errors {
        Some(n) => {
            o.consecutive_5xx = Some(u32v(n));
            o.enforcing_consecutive_5xx = enforcing(Some(n));
        }
        None => {
            // Istio's default: 5 consecutive 5xx.
            o.consecutive_5xx = Some(u32v(5));
            o.enforcing_consecutive_5xx = Some(u32v(100));
        }
    }
    if let Some(n) = od.consecutive_gateway_errors {
        o.consecutive_gateway_failure = Some(u32v(n));
        o.enforcing_consecutive_gateway_failure = enforcing(Some(n));
    }
    if od.split_external_local_origin_errors == Some(true) {
        o.split_external_local_origin_errors = true;
        if let Some(n) = od.consecutive_local_origin_failures {
            o.consecutive_local_origin_failure = Some(u32v(n));
            o.enforcing_consecutive_local_origin_failure = enforcing(Some(n));
        }
    }
    c.outlier_detection = Some(o);
}

pub(crate) fn apply_http_options(
    c: &mut Cluster,
    port: &ServicePort,
    policy: &TrafficPolicy,
    mesh: &mesh_model::MeshConfig,
) {
    let http = policy
        .connection_pool
        .as_ref()
        .and_then(|cp| cp.http.as_ref());
    let tcp = policy
        .connection_pool
        .as_ref()
        .and_then(|cp| cp.tcp.as_ref());
    let h2 = is_http2_cluster(port, policy, mesh);
    let mut common = CoreHttpOptions::default();
    let idle = http
        .and_then(|h| h.idle_timeout)
        .or_else(|| tcp.and_then(|t| t.idle_timeout));
    if let Some(i) = idle {
        common.idle_timeout = Some(dur(&i));
    }
    if let Some(n) = http
        .and_then(|h| h.max_requests_per_connection)
        .filter(|n| *n > 0)
    {
        common.max_requests_per_connection = Some(u32v(u32::try_from(n).unwrap_or(MAX_U32)));
    }
    if let Some(d) = tcp.and_then(|t| t.max_connection_duration) {
        common.max_connection_duration = Some(dur(&d));
    }
    let h2_options = || {
        let mut o = Http2ProtocolOptions::default();
        if let Some(n) = http
            .and_then(|h| h.max_concurrent_streams)
            .filter(|n| *n > 0)
        {
            o.max_concurrent_streams = Some(u32v(u32::try_from(n).unwrap_or(MAX_U32)));
        }
        if let Some(k) = http.and_then(|h| h.http2_keep_alive.as_ref()) {
            o.connection_keepalive = Some(KeepaliveSettings {
                interval: k.interval.as_ref().map(dur),
                timeout: k.timeout.as_ref().map(dur),
                ..Default::default()
            });
        }
        o
    };
    // A sniffed port forwards HTTP in the protocol it arrived in, as istiod does.
    let protocol = if http.and_then(|h| h.use_client_protocol) == Some(true) || port.is_sniffed() {
        http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            http_protocol_options::UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(h2_options()),
                ..Default::default()
            },
        )
    } else {
        http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(if h2 {
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2_options())
                } else {
                    http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                        Http1ProtocolOptions::default(),
                    )
                }),
            },
        )
    };
    let options = HttpProtocolOptions {
        common_http_protocol_options: (common != CoreHttpOptions::default()).then_some(common),
        upstream_protocol_options: Some(protocol),
        ..Default::default()
    };
    c.typed_extension_protocol_options =
        HashMap::from([(HTTP_PROTOCOL_OPTIONS.to_string(), any(&options))]);
}

/// Sets `auto_sni` and `auto_san_validation` in the cluster's HTTP protocol options.
fn dfp_upstream_options(c: &mut Cluster) {
    use prost::Message;
    let Some(any_options) = c
        .typed_extension_protocol_options
        .get_mut(HTTP_PROTOCOL_OPTIONS)
    else {
        return;
    };
    let Ok(mut options) = HttpProtocolOptions::decode(any_options.value.as_slice()) else {
        return;
    };
    options.upstream_http_protocol_options = Some(
        envoy_types::pb::envoy::config::core::v3::UpstreamHttpProtocolOptions {
            auto_sni: true,
            auto_san_validation: true,
            ..Default::default()
        },
    );
    *any_options = any(&options);
}

/// Client TLS for SIMPLE and MUTUAL with files. ISTIO_MUTUAL needs the workload certificate
/// over SDS, which arrives with mesh-identity; until then it is left plaintext.
fn upstream_tls(
    tls: &ClientTlsSettings,
    h2: bool,
) -> Option<envoy_types::pb::envoy::config::core::v3::TransportSocket> {
    if !matches!(tls.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) {
        return None;
    }
    let mut common = CommonTlsContext {
        alpn_protocols: if h2 { vec!["h2".into()] } else { Vec::new() },
        ..Default::default()
    };
    if tls.mode == ClientTlsMode::Mutual
        && let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key)
    {
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: Some(file(cert)),
            private_key: Some(file(key)),
            ..Default::default()
        }];
    }
    if tls.insecure_skip_verify != Some(true)
        && let Some(ca) = &tls.ca_certificates
    {
        let sans = tls
                .subject_alt_names
                .iter()
                .map(|s| envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SubjectAltNameMatcher {
                    san_type: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType::Dns as i32,
                    r#matcher: Some(crate::pb::string_matcher(&mesh_model::StringMatch::Exact(s.clone()), false)),
                    oid: String::new(),
                })
                .collect();
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(file(ca)),
                    match_typed_subject_alt_names: sans,
                    crl: tls.ca_crl.as_deref().map(file),
                    ..Default::default()
                },
            ),
        );
    }
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    Some(crate::pb::transport_socket(
        "envoy.transport_sockets.tls",
        &ctx,
    ))
}

/// Whether a DR routes with consistent hashing for this port and subset (routes then carry
/// hash policies and drop the previous-hosts retry predicate).
pub(crate) fn consistent_hash(
    dr: Option<&DestinationRuleSpec>,
    subset: Option<&str>,
    port: u32,
) -> Option<mesh_model::networking::destination_rule::ConsistentHashLb> {
    let subset = subset.and_then(|s| dr.and_then(|d| d.subsets.iter().find(|x| x.name == s)));
    effective_policy(dr, subset, port)
        .load_balancer
        .and_then(|l| l.consistent_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The template's hand-assembled encoding is prost's encoding of the instantiated cluster,
    /// whatever the body holds (fields on both sides of the name's tag in declaration order),
    /// with and without per-cluster extras merged in.
    #[test]
    fn templated_encoding_is_prosts() {
        let bodies = [
            Cluster::default(),
            Cluster {
                connect_timeout: Some(crate::pb::duration(std::time::Duration::from_millis(1500))),
                lb_policy: cluster::LbPolicy::LeastRequest as i32,
                circuit_breakers: Some(circuit_breakers_for(None)),
                alt_stat_name: "stats".into(),
                transport_socket_matches: vec![cluster::TransportSocketMatch {
                    name: "tlsMode-istio".into(),
                    ..Default::default()
                }],
                dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
                ..Default::default()
            },
        ];
        // Per-cluster fields between and after the body's (24 and 43).
        let mut contexts = MtlsContexts::default();
        let tls = contexts.get(vec!["spiffe://cluster.local/ns/a/sa/b".into()], true);
        let plain = ClusterExtras {
            sni: "outbound_.80_.v1_.reviews.shop.svc.cluster.local".into(),
            tls: tls.clone(),
            matches: false,
        };
        let matches = ClusterExtras {
            sni: "outbound_.80_._.reviews.shop.svc.cluster.local".into(),
            tls,
            matches: true,
        };
        for body in bodies {
            for kind in [
                Kind::Eds,
                Kind::OriginalDst,
                Kind::StrictDns,
                Kind::LogicalDns,
            ] {
                let t = ClusterTemplate {
                    body: body.clone(),
                    discovery: kind.discovery_type(),
                    eds: kind == Kind::Eds,
                    encoded: std::cell::OnceCell::new(),
                };
                for name in ["", "outbound|80|v1|reviews.shop.svc.cluster.local"] {
                    for extras in [None, Some(&plain), Some(&matches)] {
                        let mut buf = Vec::new();
                        t.encode_named(name, extras, &mut buf);
                        let want = t.instantiate(name.to_string(), extras).encode_to_vec();
                        assert_eq!(buf, want, "{kind:?} {name:?} {}", extras.is_some());
                        assert_eq!(t.encoded_len_named(name, extras), want.len());
                    }
                }
            }
        }
    }
}
