//! proptest strategies that generate *valid* Istio configuration (feature `proptest`).
//!
//! Use them to property-test code that consumes the model, such as a translator:
//!
//! ```
//! use proptest::prelude::*;
//! use mesh_model::strategy;
//!
//! proptest!(ProptestConfig::with_cases(8), |(set in strategy::mesh_set())| {
//!     for config in set.configs() {
//!         let errors: Vec<_> = mesh_model::validate(&config).into_iter().filter(|f| f.is_error()).collect();
//!         prop_assert!(errors.is_empty(), "{errors:?}");
//!     }
//! });
//! ```
//!
//! Single-resource strategies ([`virtual_service`], [`destination_rule`], ...) produce
//! resources that pass validation on their own; [`mesh_set`] produces a consistent set:
//! ServiceEntries with endpoints, DestinationRules whose subsets select those endpoints,
//! VirtualServices whose destinations exist, and a Gateway the edge VirtualServices bind to.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

use crate::config::Config;
use crate::duration::Duration;
use crate::meta::{Labels, ObjectMeta, Resource};
use crate::networking::destination_rule::{
    ConnectionPoolSettings, DestinationRuleSpec, HttpSettings, LoadBalancerSettings,
    OutlierDetection, SimpleLb, Subset, TcpSettings, TrafficPolicy,
};
use crate::networking::gateway::{GatewaySpec, Port, Server};
use crate::networking::service_entry::{Location, Resolution, ServiceEntrySpec, ServicePort};
use crate::networking::sidecar::{IstioEgressListener, SidecarSpec};
use crate::networking::virtual_service::{
    Destination, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpDirectResponse,
    HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRoute, HttpRouteDestination,
    Percent, PortSelector, VirtualServiceSpec,
};
use crate::networking::workload::WorkloadEntrySpec;
use crate::security::authorization_policy::{
    Action, AuthorizationPolicySpec, Operation, Rule, RuleTo,
};
use crate::security::peer_authentication::{MtlsMode, MutualTls, PeerAuthenticationSpec};
use crate::string_match::{HeaderMatch, StringMatch};

/// A DNS-1123 label of 1 to 10 characters.
pub fn dns_label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,8}"
}

/// A namespace name.
pub fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("default".to_string()),
        Just("shop".to_string()),
        dns_label()
    ]
}

/// A duration of 1ms to 100s, in whole milliseconds.
pub fn duration() -> impl Strategy<Value = Duration> {
    (1u64..=100_000).prop_map(Duration::from_millis)
}

/// A percentage: 0, or 0.0001..=100.
pub fn percent() -> impl Strategy<Value = Percent> {
    prop_oneof![Just(0.0), 0.0001f64..=100.0, Just(100.0)].prop_map(Percent::new)
}

/// A valid URI match.
pub fn uri_match() -> impl Strategy<Value = StringMatch> {
    prop_oneof![
        dns_label().prop_map(|l| StringMatch::Exact(format!("/{l}"))),
        dns_label().prop_map(|l| StringMatch::Prefix(format!("/{l}/"))),
        dns_label().prop_map(|l| StringMatch::Regex(format!("/{l}/[0-9]+"))),
    ]
}

/// A valid header matcher (presence included).
pub fn header_match() -> impl Strategy<Value = HeaderMatch> {
    prop_oneof![
        Just(HeaderMatch::Present),
        dns_label().prop_map(|v| HeaderMatch::Match(StringMatch::Exact(v))),
        dns_label().prop_map(|v| HeaderMatch::Match(StringMatch::Prefix(v))),
        dns_label().prop_map(|v| HeaderMatch::Match(StringMatch::Regex(format!("^{v}.*")))),
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    "x-[a-z]{1,8}"
}

fn labels() -> impl Strategy<Value = Labels> {
    btree_map(dns_label(), dns_label(), 0..3)
}

/// `namespace/name` metadata.
pub fn metadata() -> impl Strategy<Value = ObjectMeta> {
    (namespace(), dns_label(), labels()).prop_map(|(ns, name, labels)| {
        let mut m = ObjectMeta::new(ns, name);
        m.labels = labels;
        m
    })
}

/// An HTTP match with a few conditions.
pub fn http_match() -> impl Strategy<Value = HttpMatchRequest> {
    (
        option::of(uri_match()),
        btree_map(header_name(), header_match(), 0..3),
        btree_map(
            dns_label(),
            prop_oneof![
                Just(HeaderMatch::Present),
                dns_label().prop_map(|v| HeaderMatch::Match(StringMatch::Exact(v))),
            ],
            0..2,
        ),
        option::of(
            prop_oneof![Just("GET"), Just("POST")].prop_map(|m| StringMatch::Exact(m.into())),
        ),
        any::<bool>(),
    )
        .prop_map(
            |(uri, headers, query_params, method, ignore_case)| HttpMatchRequest {
                ignore_uri_case: ignore_case && !matches!(uri, Some(StringMatch::Regex(_))),
                uri,
                headers,
                query_params,
                method,
                ..Default::default()
            },
        )
}

fn header_ops() -> impl Strategy<Value = Headers> {
    (
        btree_map(header_name(), dns_label(), 0..2),
        btree_map(header_name(), dns_label(), 0..2),
        vec(header_name(), 0..2),
    )
        .prop_map(|(set, add, remove)| Headers {
            request: Some(HeaderOperations { set, add, remove }),
            response: None,
        })
}

/// A retry policy.
pub fn retries() -> impl Strategy<Value = HttpRetry> {
    (
        1i32..5,
        duration(),
        prop_oneof![
            Just("5xx"),
            Just("gateway-error,reset"),
            Just("connect-failure,503")
        ],
    )
        .prop_map(|(attempts, per_try, on)| HttpRetry {
            attempts,
            per_try_timeout: Some(per_try),
            retry_on: Some(on.to_string()),
            ..Default::default()
        })
}

/// A fault with a delay and/or an abort.
pub fn fault() -> impl Strategy<Value = HttpFaultInjection> {
    (
        option::of((duration(), percent())),
        option::of((200i32..=599, percent())),
    )
        .prop_filter("a fault needs a delay or an abort", |(d, a)| {
            d.is_some() || a.is_some()
        })
        .prop_map(|(d, a)| HttpFaultInjection {
            delay: d.map(|(fixed, p)| FaultDelay {
                fixed_delay: Some(fixed),
                percentage: Some(p),
                ..Default::default()
            }),
            abort: a.map(|(status, p)| FaultAbort {
                http_status: Some(status),
                percentage: Some(p),
                ..Default::default()
            }),
        })
}

/// A service that routes can target: host, port and subset names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Fully qualified host.
    pub host: String,
    /// Service port.
    pub port: u32,
    /// Subset names declared for it.
    pub subsets: Vec<String>,
}

fn destination_for(t: &Target) -> impl Strategy<Value = Destination> + use<> {
    let host = t.host.clone();
    let port = t.port;
    let subsets = t.subsets.clone();
    let subset = if subsets.is_empty() {
        Just(None).boxed()
    } else {
        option::of(proptest::sample::select(subsets)).boxed()
    };
    subset.prop_map(move |subset| Destination {
        host: host.clone(),
        subset,
        port: Some(PortSelector::new(port)),
    })
}

/// An HTTP route to `targets` (forwarding, redirect or direct response).
pub fn http_route(targets: Vec<Target>) -> impl Strategy<Value = HttpRoute> {
    let forward = {
        let targets = targets.clone();
        proptest::sample::select(targets)
            .prop_flat_map(|t| vec((destination_for(&t), 0i32..=100), 1..4))
            .prop_map(|dests| {
                let total: i32 = dests.iter().map(|(_, w)| *w).sum();
                dests
                    .into_iter()
                    .enumerate()
                    .map(|(i, (destination, w))| HttpRouteDestination {
                        destination,
                        // Keep the total above zero.
                        weight: Some(if total == 0 && i == 0 { 1 } else { w }),
                        headers: None,
                    })
                    .collect::<Vec<_>>()
            })
    };
    let action = prop_oneof![
        6 => (forward, option::of(duration()), option::of(retries()), option::of(fault()), option::of(header_ops()))
            .prop_map(|(route, timeout, retries, fault, headers)| HttpRoute {
                route,
                timeout,
                retries,
                fault,
                headers,
                ..Default::default()
            }),
        1 => (dns_label(), prop_oneof![Just(301u32), Just(302), Just(307), Just(308)]).prop_map(|(p, code)| HttpRoute {
            redirect: Some(HttpRedirect {
                uri: Some(format!("/{p}")),
                redirect_code: Some(code),
                ..Default::default()
            }),
            ..Default::default()
        }),
        1 => (200u32..=599, dns_label()).prop_map(|(status, body)| HttpRoute {
            direct_response: Some(HttpDirectResponse {
                status,
                body: Some(crate::networking::virtual_service::HttpBody::String(body)),
            }),
            ..Default::default()
        }),
    ];
    (action, vec(http_match(), 0..3), option::of(dns_label())).prop_map(
        |(mut route, matches, name)| {
            route.matches = matches;
            route.name = name;
            route
        },
    )
}

/// A VirtualService for the first target's host, routing among `targets`.
pub fn virtual_service_for(
    meta: ObjectMeta,
    targets: Vec<Target>,
    gateways: Vec<String>,
) -> impl Strategy<Value = Resource<VirtualServiceSpec>> {
    let host = targets[0].host.clone();
    vec(http_route(targets), 1..5).prop_map(move |http| {
        Resource::new(
            meta.clone(),
            VirtualServiceSpec {
                hosts: vec![host.clone()],
                gateways: gateways.clone(),
                http,
                ..Default::default()
            },
        )
    })
}

fn fqdn(name: &str, ns: &str) -> String {
    format!("{name}.{ns}.svc.cluster.local")
}

/// A standalone valid VirtualService.
pub fn virtual_service() -> impl Strategy<Value = Resource<VirtualServiceSpec>> {
    (metadata(), vec(dns_label(), 0..3), 1u32..=65535).prop_flat_map(|(meta, subsets, port)| {
        let ns = meta.namespace().to_string();
        let target = Target {
            host: fqdn(&meta.name, &ns),
            port,
            subsets,
        };
        virtual_service_for(meta, vec![target], Vec::new())
    })
}

/// A traffic policy with some of load balancing, connection pool and outlier detection.
pub fn traffic_policy() -> impl Strategy<Value = TrafficPolicy> {
    (
        option::of(prop_oneof![
            Just(SimpleLb::RoundRobin),
            Just(SimpleLb::LeastRequest),
            Just(SimpleLb::Random)
        ]),
        option::of((1i32..10_000, duration(), 1i32..10_000, 0i32..100)),
        option::of((1u32..20, duration(), duration(), 0i32..=100)),
    )
        .prop_map(|(lb, pool, outlier)| TrafficPolicy {
            load_balancer: lb.map(|simple| LoadBalancerSettings {
                simple: Some(simple),
                ..Default::default()
            }),
            connection_pool: pool.map(|(max_conn, connect, pending, retries)| {
                ConnectionPoolSettings {
                    tcp: Some(TcpSettings {
                        max_connections: Some(max_conn),
                        connect_timeout: Some(connect),
                        ..Default::default()
                    }),
                    http: Some(HttpSettings {
                        http1_max_pending_requests: Some(pending),
                        max_retries: Some(retries),
                        ..Default::default()
                    }),
                }
            }),
            outlier_detection: outlier.map(|(c5xx, interval, ejection, max_pct)| {
                OutlierDetection {
                    consecutive_5xx_errors: Some(c5xx),
                    interval: Some(interval),
                    base_ejection_time: Some(ejection),
                    max_ejection_percent: Some(max_pct),
                    ..Default::default()
                }
            }),
            ..Default::default()
        })
        .prop_filter("an empty traffic policy is invalid", |tp| {
            tp != &TrafficPolicy::default()
        })
}

/// A DestinationRule for `host` with subsets selecting `version: <subset>`.
pub fn destination_rule_for(
    meta: ObjectMeta,
    host: String,
    subsets: Vec<String>,
) -> impl Strategy<Value = Resource<DestinationRuleSpec>> {
    (
        option::of(traffic_policy()),
        vec(option::of(traffic_policy()), subsets.len()),
    )
        .prop_map(move |(tp, subset_tps)| {
            let subsets = subsets
                .iter()
                .zip(subset_tps)
                .map(|(name, traffic_policy)| Subset {
                    name: name.clone(),
                    labels: BTreeMap::from([("version".to_string(), name.clone())]),
                    traffic_policy,
                })
                .collect();
            Resource::new(
                meta.clone(),
                DestinationRuleSpec {
                    host: host.clone(),
                    traffic_policy: tp,
                    subsets,
                    ..Default::default()
                },
            )
        })
}

/// A standalone valid DestinationRule.
pub fn destination_rule() -> impl Strategy<Value = Resource<DestinationRuleSpec>> {
    (
        metadata(),
        proptest::sample::subsequence(vec!["v1", "v2", "v3"], 0..=3),
    )
        .prop_flat_map(|(meta, subsets)| {
            let host = fqdn(&meta.name, meta.namespace());
            destination_rule_for(meta, host, subsets.into_iter().map(String::from).collect())
        })
}

fn ip() -> impl Strategy<Value = String> {
    (1u8..=254, 0u8..=255, 1u8..=254).prop_map(|(b, c, d)| format!("10.{b}.{c}.{d}"))
}

/// A STATIC, MESH_INTERNAL ServiceEntry with endpoints labelled by version.
pub fn service_entry_for(
    meta: ObjectMeta,
    host: String,
    port: u32,
    versions: Vec<String>,
) -> impl Strategy<Value = Resource<ServiceEntrySpec>> {
    let versions = if versions.is_empty() {
        vec!["v1".to_string()]
    } else {
        versions
    };
    let all_versions = versions.clone();
    let app = meta.name.clone();
    vec(
        (
            // Sometimes the address of the first test proxy (10.0.0.1), which then backs the
            // service and gets its inbound chains.
            prop_oneof![4 => ip(), 1 => Just("10.0.0.1".to_string())],
            proptest::sample::select(versions),
            1u32..=10,
            option::of(prop_oneof![Just("us-east/a"), Just("us-west/b")]),
            // With a service account the endpoint accepts Istio mTLS (tlsMode istio).
            option::of(Just("workload")),
        ),
        1..5,
    )
    .prop_map(move |eps| {
        let mut endpoints: Vec<WorkloadEntrySpec> = eps
            .into_iter()
            .map(
                |(address, version, weight, locality, sa)| WorkloadEntrySpec {
                    address,
                    labels: BTreeMap::from([
                        ("version".to_string(), version),
                        ("app".to_string(), app.clone()),
                    ]),
                    weight: Some(weight),
                    locality: locality.unwrap_or_default().to_string(),
                    service_account: sa.unwrap_or_default().to_string(),
                    ..Default::default()
                },
            )
            .collect();
        // Every version (subset) selects at least one endpoint.
        for (i, v) in all_versions.iter().enumerate() {
            if !endpoints.iter().any(|e| e.labels.get("version") == Some(v)) {
                endpoints.push(WorkloadEntrySpec {
                    address: format!("10.255.0.{}", i + 1),
                    labels: BTreeMap::from([("version".to_string(), v.clone())]),
                    ..Default::default()
                });
            }
        }
        Resource::new(
            meta.clone(),
            ServiceEntrySpec {
                hosts: vec![host.clone()],
                ports: vec![ServicePort {
                    number: port,
                    protocol: "HTTP".into(),
                    name: "http".into(),
                    target_port: None,
                }],
                location: Location::MeshInternal,
                resolution: Resolution::Static,
                endpoints,
                ..Default::default()
            },
        )
    })
}

/// A standalone valid ServiceEntry.
pub fn service_entry() -> impl Strategy<Value = Resource<ServiceEntrySpec>> {
    (metadata(), 1u32..=65535).prop_flat_map(|(meta, port)| {
        let host = fqdn(&meta.name, meta.namespace());
        service_entry_for(meta, host, port, vec!["v1".into(), "v2".into()])
    })
}

/// A Gateway with an HTTP server for `hosts` on `port`.
pub fn gateway_for(meta: ObjectMeta, port: u32, hosts: Vec<String>) -> Resource<GatewaySpec> {
    Resource::new(
        meta,
        GatewaySpec {
            servers: vec![Server {
                port: Port {
                    number: port,
                    protocol: "HTTP".into(),
                    name: format!("http-{port}"),
                    target_port: None,
                },
                hosts,
                ..Default::default()
            }],
            selector: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
        },
    )
}

/// A Sidecar importing its own namespace and istio-system.
pub fn sidecar() -> impl Strategy<Value = Resource<crate::networking::sidecar::SidecarSpec>> {
    metadata().prop_map(|meta| {
        Resource::new(
            meta,
            SidecarSpec {
                egress: vec![IstioEgressListener {
                    hosts: vec!["./*".into(), "istio-system/*".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    })
}

/// A PeerAuthentication (namespace-wide).
pub fn peer_authentication() -> impl Strategy<Value = Resource<PeerAuthenticationSpec>> {
    (
        metadata(),
        prop_oneof![
            Just(MtlsMode::Strict),
            Just(MtlsMode::Permissive),
            Just(MtlsMode::Disable)
        ],
    )
        .prop_map(|(meta, mode)| {
            Resource::new(
                meta,
                PeerAuthenticationSpec {
                    mtls: Some(MutualTls { mode }),
                    ..Default::default()
                },
            )
        })
}

/// An AuthorizationPolicy (ALLOW or DENY) on methods and paths.
pub fn authorization_policy() -> impl Strategy<Value = Resource<AuthorizationPolicySpec>> {
    (
        metadata(),
        prop_oneof![Just(Action::Allow), Just(Action::Deny)],
        vec(dns_label(), 1..3),
    )
        .prop_map(|(meta, action, paths)| {
            Resource::new(
                meta,
                AuthorizationPolicySpec {
                    action,
                    rules: Some(vec![Rule {
                        to: Some(vec![RuleTo {
                            operation: Some(Operation {
                                methods: vec!["GET".into()],
                                paths: paths.into_iter().map(|p| format!("/{p}/*")).collect(),
                                ..Default::default()
                            }),
                        }]),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
            )
        })
}

/// A JWKS (one RSA public key) for generated RequestAuthentications.
const TEST_JWKS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"xjlCRBqkQRuaBrFjfxxyHhpIMG9OmnNi8nEfINRNTl8SwFgFnBN0rAGDtBwXVybpcBN4ZUUbw0lBxgiz0yqGV8UcuDr_3S2HdvTn4UjbpmVWAZWjd4GaHhh-NwG_vGUlx0Mw_ZJfxXN3SuY5_cgWPgJV9WF_ZdVtTe9_bJSVpjiaECZS4TKBEqvGbw0r0ZZuUVZUiybXL6wmFLeO3AObgN7KBYkwaWn5A0dbzXiVl8IbAjxqmA3PAYkc0Er-JnkLamC7BiY2W9idIWpTRZNsbJrIKnKuJBkgEVGbwNGX-JbApBWUOhTzSQFp07NVAq1QM9U61Dvb55iQzwx7K0OMvQ"}]}"#;

/// Security policies for namespace `ns` whose workloads carry `app: <one of apps>`: 0-2
/// PeerAuthentications (namespace-wide, or selecting an app with port-level modes), 0-3
/// AuthorizationPolicies (every action, dry-run, principals, namespaces, ports, paths,
/// methods, conditions), 0-1 RequestAuthentication with inline keys.
pub fn security_for(ns: String, apps: Vec<String>) -> impl Strategy<Value = Vec<Config>> {
    use crate::security::WorkloadSelector;
    use crate::security::authorization_policy::{Condition, RuleFrom, Source};
    use crate::security::request_authentication::{JwtRule, RequestAuthenticationSpec};
    let apps = if apps.is_empty() {
        vec!["app".to_string()]
    } else {
        apps
    };
    let mode = || {
        prop_oneof![
            Just(MtlsMode::Strict),
            Just(MtlsMode::Permissive),
            Just(MtlsMode::Disable),
            Just(MtlsMode::Unset)
        ]
    };
    let selector = move |apps: Vec<String>| {
        option::of(proptest::sample::select(apps)).prop_map(|app| {
            app.map(|a| WorkloadSelector {
                match_labels: BTreeMap::from([("app".to_string(), a)]),
            })
        })
    };
    let pa = (
        selector(apps.clone()),
        mode(),
        option::of((1u32..=65535, mode())),
    );
    let ap = (
        selector(apps.clone()),
        prop_oneof![Just(Action::Allow), Just(Action::Deny), Just(Action::Audit)],
        any::<bool>(),
        option::of(proptest::sample::select(vec![
            "cluster.local/ns/other/sa/client",
            "*",
        ])),
        option::of(vec(dns_label(), 1..3)),
        option::of(1u32..=65535),
        option::of(prop_oneof![
            Just(("source.ip", "10.0.0.0/8")),
            Just(("request.headers[x-token]", "*")),
            Just(("destination.port", "8080")),
        ]),
    );
    let ra = (selector(apps), any::<bool>());
    let ns2 = ns.clone();
    let ns3 = ns.clone();
    (vec(pa, 0..=2), vec(ap, 0..=3), option::of(ra)).prop_map(move |(pas, aps, ra)| {
        let mut out = Vec::new();
        for (i, (sel, mode, port)) in pas.into_iter().enumerate() {
            // Port-level modes need a selector.
            let port_level_mtls = match (&sel, port) {
                (Some(_), Some((p, m))) => BTreeMap::from([(p, MutualTls { mode: m })]),
                _ => BTreeMap::new(),
            };
            out.push(Config::from(Resource::new(
                ObjectMeta::new(&ns, format!("pa-{i}")),
                PeerAuthenticationSpec {
                    selector: sel,
                    mtls: Some(MutualTls { mode }),
                    port_level_mtls,
                },
            )));
        }
        for (i, (sel, action, dry_run, principal, paths, port, when)) in aps.into_iter().enumerate()
        {
            let mut meta = ObjectMeta::new(&ns2, format!("ap-{i}"));
            if dry_run && matches!(action, Action::Allow | Action::Deny) {
                meta.annotations
                    .insert("istio.io/dry-run".into(), "true".into());
            }
            let rule = Rule {
                from: principal.map(|p| {
                    vec![RuleFrom {
                        source: Some(Source {
                            principals: vec![p.to_string()],
                            namespaces: vec![ns2.clone()],
                            ..Default::default()
                        }),
                    }]
                }),
                to: (paths.is_some() || port.is_some()).then(|| {
                    vec![RuleTo {
                        operation: Some(Operation {
                            methods: vec!["GET".into()],
                            paths: paths
                                .clone()
                                .unwrap_or_default()
                                .into_iter()
                                .map(|p| format!("/{p}*"))
                                .collect(),
                            ports: port.map(|p| p.to_string()).into_iter().collect(),
                            ..Default::default()
                        }),
                    }]
                }),
                when: when.map(|(key, value)| {
                    vec![Condition {
                        key: key.into(),
                        values: vec![value.into()],
                        ..Default::default()
                    }]
                }),
            };
            out.push(Config::from(Resource::new(
                meta,
                AuthorizationPolicySpec {
                    selector: sel,
                    action,
                    rules: Some(vec![rule]),
                    ..Default::default()
                },
            )));
        }
        if let Some((sel, forward)) = ra {
            out.push(Config::from(Resource::new(
                ObjectMeta::new(&ns3, "jwt"),
                RequestAuthenticationSpec {
                    selector: sel,
                    jwt_rules: vec![JwtRule {
                        issuer: "https://issuer.example".into(),
                        audiences: vec!["api".into()],
                        jwks: Some(TEST_JWKS.into()),
                        forward_original_token: forward.then_some(true),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )));
        }
        out
    })
}

/// Any single valid resource.
pub fn any_config() -> impl Strategy<Value = Config> {
    prop_oneof![
        virtual_service().prop_map(Config::from),
        destination_rule().prop_map(Config::from),
        service_entry().prop_map(Config::from),
        sidecar().prop_map(Config::from),
        peer_authentication().prop_map(Config::from),
        authorization_policy().prop_map(Config::from),
    ]
}

/// A consistent set of configuration for one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshSet {
    /// The services (registry).
    pub service_entries: Vec<Resource<ServiceEntrySpec>>,
    /// One per service, with the subsets the routes use.
    pub destination_rules: Vec<Resource<DestinationRuleSpec>>,
    /// Routes whose destinations are all declared services and subsets.
    pub virtual_services: Vec<Resource<VirtualServiceSpec>>,
    /// A gateway that the edge VirtualServices bind to.
    pub gateways: Vec<Resource<GatewaySpec>>,
    /// Security policies of the namespace: PeerAuthentications, AuthorizationPolicies and
    /// RequestAuthentications, namespace-wide or selecting the services' workloads.
    pub security: Vec<Config>,
}

impl MeshSet {
    /// Every resource as [`Config`].
    pub fn configs(&self) -> Vec<Config> {
        let mut out: Vec<Config> = Vec::new();
        out.extend(self.service_entries.iter().cloned().map(Config::from));
        out.extend(self.destination_rules.iter().cloned().map(Config::from));
        out.extend(self.virtual_services.iter().cloned().map(Config::from));
        out.extend(self.gateways.iter().cloned().map(Config::from));
        out.extend(self.security.iter().cloned());
        out
    }
}

/// Sometimes a second port for a generated service (TCP, TLS, MONGO or unspecified), with the
/// addresses that tell its traffic apart under capture: none, a VIP from a pool of three (so
/// services share them), or a CIDR.
fn extra_port() -> impl Strategy<Value = Option<(&'static str, Vec<String>)>> {
    option::of((
        // "" leaves the protocol out: sidecars sniff it.
        prop_oneof![Just("TCP"), Just("TLS"), Just("MONGO"), Just("")],
        prop_oneof![
            Just(Vec::new()),
            (1u8..=3).prop_map(|i| vec![format!("240.240.0.{i}")]),
            Just(vec!["240.241.0.0/16".to_string()]),
        ],
    ))
}

/// 1 to 6 services, each with a ServiceEntry (an HTTP port, sometimes also a TCP or TLS
/// or unspecified port with a VIP or CIDR), a DestinationRule with 1-3 subsets, and a
/// VirtualService routing to it and its neighbours; one VirtualService is also bound to a
/// Gateway.
pub fn mesh_set() -> impl Strategy<Value = MeshSet> {
    let service = (
        dns_label(),
        1u32..=65535,
        proptest::sample::subsequence(vec!["v1", "v2", "v3"], 1..=3),
    );
    (namespace(), vec(service, 1..7), 1u32..=65535)
        .prop_map(|(ns, services, gw_port)| {
            // Names must be unique within the namespace.
            let mut seen = std::collections::BTreeSet::new();
            let services: Vec<_> = services
                .into_iter()
                .filter(|(n, _, _)| seen.insert(n.clone()))
                .collect();
            (ns, services, gw_port)
        })
        .prop_flat_map(|(ns, services, gw_port)| {
            let targets: Vec<Target> = services
                .iter()
                .map(|(name, port, subsets)| Target {
                    host: fqdn(name, &ns),
                    port: *port,
                    subsets: subsets.iter().map(|s| s.to_string()).collect(),
                })
                .collect();
            let gateway_name = format!("{ns}/edge");
            let edge_host = targets[0].host.clone();
            let mut ses = Vec::new();
            let mut drs = Vec::new();
            let mut vss = Vec::new();
            for (i, t) in targets.iter().enumerate() {
                let name = services[i].0.clone();
                let port = t.port;
                ses.push(
                    (
                        service_entry_for(
                            ObjectMeta::new(&ns, &name),
                            t.host.clone(),
                            t.port,
                            t.subsets.clone(),
                        ),
                        extra_port(),
                    )
                        .prop_map(move |(mut se, extra)| {
                            if let Some((protocol, addresses)) = extra {
                                se.spec.ports.push(ServicePort {
                                    number: if port == 65535 { 1 } else { port + 1 },
                                    protocol: protocol.into(),
                                    name: if protocol.is_empty() {
                                        "auto-extra".to_string()
                                    } else {
                                        format!("{}-extra", protocol.to_ascii_lowercase())
                                    },
                                    target_port: None,
                                });
                                se.spec.addresses = addresses;
                            }
                            se
                        })
                        .boxed(),
                );
                drs.push(
                    destination_rule_for(
                        ObjectMeta::new(&ns, &name),
                        t.host.clone(),
                        t.subsets.clone(),
                    )
                    .boxed(),
                );
                // Route to this service, sometimes splitting to a neighbour.
                let mut route_targets = vec![t.clone()];
                if let Some(next) = targets.get(i + 1) {
                    route_targets.push(next.clone());
                }
                let gateways = if i == 0 {
                    vec![gateway_name.clone(), "mesh".to_string()]
                } else {
                    Vec::new()
                };
                vss.push(
                    virtual_service_for(ObjectMeta::new(&ns, &name), route_targets, gateways)
                        .boxed(),
                );
            }
            let gw = gateway_for(
                ObjectMeta::new(&ns, "edge"),
                gw_port,
                vec![format!("{ns}/{edge_host}")],
            );
            let apps: Vec<String> = services.iter().map(|(n, _, _)| n.clone()).collect();
            (ses, drs, vss, security_for(ns.clone(), apps)).prop_map(
                move |(service_entries, destination_rules, virtual_services, security)| MeshSet {
                    service_entries,
                    destination_rules,
                    virtual_services,
                    gateways: vec![gw.clone()],
                    security,
                },
            )
        })
}
