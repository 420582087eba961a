//! Specification tests: policies as YAML, expected Envoy config built by hand (independently of
//! the constructors under test) and compared as whole decoded messages.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, CidrRange, DataSource, GrpcService, HeaderValue, HttpUri, TypedExtensionConfig,
    data_source, grpc_service, http_uri,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac::Action,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RouteMatch, header_matcher, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as http_ext_authz;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementAndList, JwtRequirementOrList, RequirementRule, jwt_provider, jwt_requirement,
    requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as net_ext_authz;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, ListStringMatcher, MetadataMatcher, OrMatcher, PathMatcher, RegexMatcher,
    StringMatcher, ValueMatcher, list_matcher, metadata_matcher, path_matcher, string_matcher,
    value_matcher,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Any, Duration, Empty, UInt32Value};
use mesh_model::security::authorization_policy::AuthorizationPolicy;
use mesh_model::security::authorization_policy::AuthorizationPolicySpec;
use mesh_model::security::request_authentication::RequestAuthenticationSpec;
use mesh_model::security::request_authentication::{JwtRule, RequestAuthentication};
use mesh_model::{Config, MeshConfig};
use prost::{Message, Name};

use super::authz::{Built, http_filters, network_filters};
use super::jwt::{PUBLIC_ONLY_JWKS, jwt_filter};
use super::{Diagnostic, applicable};

// === fixtures ===

fn configs(yaml: &str) -> Vec<Config> {
    let out = mesh_model::parse_str(yaml, "test.yaml");
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    out.resources.into_iter().map(|r| r.config).collect()
}

fn authz(yaml: &str) -> Vec<AuthorizationPolicy> {
    configs(yaml)
        .into_iter()
        .map(|c| match c {
            Config::AuthorizationPolicy(p) => p,
            other => panic!("not an AuthorizationPolicy: {other:?}"),
        })
        .collect()
}

fn authn(yaml: &str) -> Vec<RequestAuthentication> {
    configs(yaml)
        .into_iter()
        .map(|c| match c {
            Config::RequestAuthentication(p) => p,
            other => panic!("not a RequestAuthentication: {other:?}"),
        })
        .collect()
}

fn refs<T>(v: &[T]) -> Vec<&T> {
    v.iter().collect()
}

fn http(yaml: &str, mesh: &MeshConfig) -> Built<HttpFilter> {
    let p = authz(yaml);
    http_filters(&refs(&p), mesh)
}

fn tcp(yaml: &str, mesh: &MeshConfig) -> Built<Filter> {
    let p = authz(yaml);
    network_filters(&refs(&p), mesh)
}

fn mesh_with_providers(providers: serde_json::Value) -> MeshConfig {
    MeshConfig {
        extension_providers: providers.as_array().cloned().unwrap_or_default(),
        ..Default::default()
    }
}

// === decoding ===

fn decode<M: Message + Name + Default>(a: &Any) -> M {
    assert_eq!(
        a.type_url,
        format!("type.googleapis.com/{}", M::full_name())
    );
    M::decode(a.value.as_slice()).expect("decodes")
}

fn http_config(f: &HttpFilter) -> &Any {
    match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(a)) => a,
        other => panic!("{}: no typed config: {other:?}", f.name),
    }
}

fn net_config(f: &Filter) -> &Any {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(a)) => a,
        other => panic!("{}: no typed config: {other:?}", f.name),
    }
}

fn http_rbac(f: &HttpFilter) -> HttpRbac {
    assert_eq!(f.name, "envoy.filters.http.rbac");
    decode(http_config(f))
}

fn net_rbac(f: &Filter) -> NetworkRbac {
    assert_eq!(f.name, "envoy.filters.network.rbac");
    decode(net_config(f))
}

fn http_rbacs(fs: &[HttpFilter]) -> Vec<HttpRbac> {
    fs.iter().map(http_rbac).collect()
}

fn net_rbacs(fs: &[Filter]) -> Vec<NetworkRbac> {
    fs.iter().map(net_rbac).collect()
}

// === expected values, spelled out ===

fn sm(p: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }
}
fn exact(v: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::Exact(v.into()))
}
fn prefix(v: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::Prefix(v.into()))
}
fn suffix(v: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::Suffix(v.into()))
}
fn re(v: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
        regex: v.into(),
        ..Default::default()
    }))
}
fn ic(mut m: StringMatcher) -> StringMatcher {
    m.ignore_case = true;
    m
}

fn pid(i: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(i),
    }
}
fn ids_and(ids: Vec<Principal>) -> Principal {
    pid(principal::Identifier::AndIds(principal::Set { ids }))
}
fn ids_or(ids: Vec<Principal>) -> Principal {
    pid(principal::Identifier::OrIds(principal::Set { ids }))
}
fn id_not(p: Principal) -> Principal {
    pid(principal::Identifier::NotId(Box::new(p)))
}
fn id_any() -> Principal {
    pid(principal::Identifier::Any(true))
}
fn auth(m: StringMatcher) -> Principal {
    pid(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}
fn cidr(addr: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: addr.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}
fn hdr(name: &str, m: Option<StringMatcher>) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(match m {
            Some(m) => header_matcher::HeaderMatchSpecifier::StringMatch(m),
            None => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        }),
        ..Default::default()
    }
}
#[allow(deprecated)]
fn id_meta(m: MetadataMatcher) -> Principal {
    pid(principal::Identifier::Metadata(m))
}

fn perm(r: permission::Rule) -> Permission {
    Permission { rule: Some(r) }
}
fn perms_and(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::AndRules(permission::Set { rules }))
}
fn perms_or(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::OrRules(permission::Set { rules }))
}
fn perm_not(p: Permission) -> Permission {
    perm(permission::Rule::NotRule(Box::new(p)))
}
fn perm_any() -> Permission {
    perm(permission::Rule::Any(true))
}
fn url_path(m: StringMatcher) -> Permission {
    perm(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(m)),
    }))
}

fn seg(k: &str) -> metadata_matcher::PathSegment {
    metadata_matcher::PathSegment {
        segment: Some(metadata_matcher::path_segment::Segment::Key(k.into())),
    }
}
fn vstr(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    }
}
fn vor(v: Vec<ValueMatcher>) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: v,
        })),
    }
}
fn vlist(one_of: ValueMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(one_of))),
            },
        ))),
    }
}
fn meta(filter: &str, path: &[&str], value: ValueMatcher) -> MetadataMatcher {
    MetadataMatcher {
        filter: filter.into(),
        path: path.iter().map(|k| seg(k)).collect(),
        value: Some(value),
        invert: false,
    }
}
/// `payload.<claim>` as a string.
fn jwt_str(claim: &str, m: StringMatcher) -> Principal {
    id_meta(meta(
        "envoy.filters.http.jwt_authn",
        &["payload", claim],
        vstr(m),
    ))
}
/// `payload.<path…>` as a list or a scalar.
fn jwt_list(path: &[&str], v: ValueMatcher) -> Principal {
    let mut full = vec!["payload"];
    full.extend_from_slice(path);
    id_meta(meta(
        "envoy.filters.http.jwt_authn",
        &full,
        vor(vec![vlist(v.clone()), v]),
    ))
}

fn rules(action: Action, policies: Vec<(&str, Policy)>) -> RbacRules {
    RbacRules {
        action: action as i32,
        policies: policies
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ..Default::default()
    }
}
fn policy(permissions: Vec<Permission>, principals: Vec<Principal>) -> Policy {
    Policy {
        permissions,
        principals,
        ..Default::default()
    }
}
fn match_all() -> Policy {
    policy(
        vec![perms_and(vec![perm_any()])],
        vec![ids_and(vec![id_any()])],
    )
}
fn match_never() -> Policy {
    policy(vec![perm_not(perm_any())], vec![id_not(id_any())])
}
fn http_filter_of(rules: Option<RbacRules>, shadow: Option<RbacRules>, prefix: &str) -> HttpRbac {
    HttpRbac {
        rules,
        shadow_rules: shadow,
        shadow_rules_stat_prefix: prefix.into(),
        ..Default::default()
    }
}
fn tcp_filter_of(rules: Option<RbacRules>, shadow: Option<RbacRules>, prefix: &str) -> NetworkRbac {
    NetworkRbac {
        rules,
        shadow_rules: shadow,
        stat_prefix: "tcp.".into(),
        shadow_rules_stat_prefix: prefix.into(),
        ..Default::default()
    }
}

/// The one Envoy policy of a build that has one RBAC filter with one policy and no problems.
fn only_policy(built: &Built<HttpFilter>) -> Policy {
    assert_eq!(built.diagnostics, vec![]);
    assert_eq!(built.rbac.len(), 1);
    let r = http_rbac(&built.rbac[0]).rules.expect("rules");
    assert_eq!(r.policies.len(), 1, "{:?}", r.policies.keys());
    r.policies.into_values().next().expect("one policy")
}

const ALLOW_PREFIX: &str = "istio_dry_run_allow_";

// === §3.8: the representative policy ===

const HTTPBIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ACTION
  rules:
  - from: [{source: {principals: ["cluster.local/ns/bar/sa/sleep"], namespaces: ["bar"]}}]
    to: [{operation: {methods: ["GET"], paths: ["/info*"]}}]
    when: [{key: "request.headers[x-token]", values: ["*"]}]
"#;

fn sleep_principal() -> Principal {
    ids_or(vec![auth(exact("spiffe://cluster.local/ns/bar/sa/sleep"))])
}
fn bar_namespace() -> Principal {
    ids_or(vec![auth(re(".*/ns/bar/.*"))])
}

#[test]
fn representative_policy_on_an_http_chain_is_istiods_output() {
    let built = http(&HTTPBIN.replace("ACTION", "ALLOW"), &MeshConfig::default());
    let expected = http_filter_of(
        Some(rules(
            Action::Allow,
            vec![(
                "ns[foo]-policy[httpbin]-rule[0]",
                policy(
                    vec![perms_and(vec![
                        perms_or(vec![perm(permission::Rule::Header(hdr(
                            ":method",
                            Some(exact("GET")),
                        )))]),
                        perms_or(vec![url_path(prefix("/info"))]),
                    ])],
                    vec![ids_and(vec![
                        sleep_principal(),
                        bar_namespace(),
                        ids_or(vec![pid(principal::Identifier::Header(hdr(
                            "x-token", None,
                        )))]),
                    ])],
                ),
            )],
        )),
        None,
        ALLOW_PREFIX,
    );
    assert!(built.custom.is_empty());
    assert_eq!(built.diagnostics, vec![]);
    assert_eq!(http_rbacs(&built.rbac), vec![expected]);
}

#[test]
fn representative_policy_on_a_tcp_chain_denies_everything() {
    let built = tcp(&HTTPBIN.replace("ACTION", "ALLOW"), &MeshConfig::default());
    assert_eq!(built.diagnostics, vec![]);
    // The only rule uses HTTP fields: dropped, leaving `rules: {}`.
    assert_eq!(
        net_rbacs(&built.rbac),
        vec![tcp_filter_of(
            Some(rules(Action::Allow, vec![])),
            None,
            ALLOW_PREFIX
        )]
    );
}

#[test]
fn representative_deny_policy_on_a_tcp_chain_keeps_the_identity_clauses() {
    let built = tcp(&HTTPBIN.replace("ACTION", "DENY"), &MeshConfig::default());
    let expected = tcp_filter_of(
        Some(rules(
            Action::Deny,
            vec![(
                "ns[foo]-policy[httpbin]-rule[0]",
                policy(
                    vec![perms_and(vec![perm_any()])],
                    vec![ids_and(vec![sleep_principal(), bar_namespace()])],
                ),
            )],
        )),
        None,
        ALLOW_PREFIX,
    );
    assert_eq!(net_rbacs(&built.rbac), vec![expected]);
}

// === actions, order, dry-run ===

#[test]
fn allow_without_rules_gets_a_never_matching_rule_0() {
    for spec in ["{}", "{rules: []}"] {
        let built = http(
            &format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: nothing, namespace: foo}}\nspec: {spec}\n"
            ),
            &MeshConfig::default(),
        );
        assert_eq!(
            http_rbacs(&built.rbac),
            vec![http_filter_of(
                Some(rules(
                    Action::Allow,
                    vec![("ns[foo]-policy[nothing]-rule[0]", match_never())]
                )),
                None,
                ALLOW_PREFIX
            )],
            "spec: {spec}"
        );
    }
}

const ONE_OF_EACH: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec: {action: ALLOW, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: foo}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: foo}
spec: {action: AUDIT, rules: [{}]}
"#;

#[test]
fn filters_come_in_audit_deny_allow_order_with_their_actions() {
    let built = http(ONE_OF_EACH, &MeshConfig::default());
    // Every filter carries the ALLOW shadow prefix, even DENY and AUDIT (istiod's quirk).
    let expected = [
        (Action::Log, "audit"),
        (Action::Deny, "deny"),
        (Action::Allow, "allow"),
    ]
    .map(|(a, name)| {
        http_filter_of(
            Some(rules(
                a,
                vec![(&format!("ns[foo]-policy[{name}]-rule[0]"), match_all())],
            )),
            None,
            ALLOW_PREFIX,
        )
    });
    assert_eq!(http_rbacs(&built.rbac), expected.to_vec());
    assert!(built.custom.is_empty());

    let tcp_built = tcp(ONE_OF_EACH, &MeshConfig::default());
    let actions: Vec<i32> = net_rbacs(&tcp_built.rbac)
        .iter()
        .map(|r| r.rules.as_ref().expect("rules").action)
        .collect();
    assert_eq!(
        actions,
        vec![
            Action::Log as i32,
            Action::Deny as i32,
            Action::Allow as i32
        ]
    );
}

#[test]
fn jwt_goes_between_custom_and_the_rbac_filters() {
    let built = http(ONE_OF_EACH, &MeshConfig::default());
    let jwt = HttpFilter {
        name: "envoy.filters.http.jwt_authn".into(),
        ..Default::default()
    };
    let names: Vec<String> = built
        .into_http_filters(Some(jwt))
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac"
        ]
    );
}

const DRY_RUN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry
  namespace: foo
  annotations: {istio.io/dry-run: "DRY"}
spec:
  action: ACTION
  rules: [{to: [{operation: {ports: ["8080"]}}]}]
"#;

fn port_8080() -> Policy {
    policy(
        vec![perms_and(vec![perms_or(vec![perm(
            permission::Rule::DestinationPort(8080),
        )])])],
        vec![ids_and(vec![id_any()])],
    )
}

#[test]
fn dry_run_deny_moves_rules_to_shadow_rules_with_the_deny_prefix() {
    let yaml = DRY_RUN.replace("ACTION", "DENY").replace("DRY", "true");
    let expected = http_filter_of(
        None,
        Some(rules(
            Action::Deny,
            vec![("ns[foo]-policy[dry]-rule[0]", port_8080())],
        )),
        "istio_dry_run_deny_",
    );
    let built = http(&yaml, &MeshConfig::default());
    assert_eq!(http_rbacs(&built.rbac), vec![expected]);
    // Same on TCP (ports are not HTTP-only).
    let built = tcp(&yaml, &MeshConfig::default());
    assert_eq!(
        net_rbacs(&built.rbac),
        vec![tcp_filter_of(
            None,
            Some(rules(
                Action::Deny,
                vec![("ns[foo]-policy[dry]-rule[0]", port_8080())]
            )),
            "istio_dry_run_deny_"
        )]
    );
}

#[test]
fn dry_run_allow_next_to_an_enforced_allow_keeps_both_rule_sets() {
    let yaml = format!(
        "{}---\n{}",
        DRY_RUN.replace("ACTION", "ALLOW").replace("DRY", "True"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: real, namespace: foo}\nspec: {rules: [{}]}\n"
    );
    let built = http(&yaml, &MeshConfig::default());
    assert_eq!(
        http_rbacs(&built.rbac),
        vec![http_filter_of(
            Some(rules(
                Action::Allow,
                vec![("ns[foo]-policy[real]-rule[0]", match_all())]
            )),
            Some(rules(
                Action::Allow,
                vec![("ns[foo]-policy[dry]-rule[0]", port_8080())]
            )),
            ALLOW_PREFIX
        )]
    );
}

#[test]
fn an_invalid_dry_run_value_enforces_the_policy_and_says_so() {
    let yaml = DRY_RUN.replace("ACTION", "DENY").replace("DRY", "maybe");
    let built = http(&yaml, &MeshConfig::default());
    assert_eq!(
        http_rbacs(&built.rbac),
        vec![http_filter_of(
            Some(rules(
                Action::Deny,
                vec![("ns[foo]-policy[dry]-rule[0]", port_8080())]
            )),
            None,
            ALLOW_PREFIX
        )]
    );
    let shown: Vec<String> = built
        .diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "AuthorizationPolicy foo/dry: metadata.annotations[istio.io/dry-run]: \
             invalid value \"maybe\": not a boolean; the policy is enforced"
        ]
    );
}

// === CUSTOM ===

const CUSTOM: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: PROVIDER}
  rules:
  - to: [{operation: {paths: ["/admin"], ports: ["8080"]}}]
"#;

fn custom(provider: &str) -> String {
    CUSTOM.replace("PROVIDER", provider)
}

fn providers() -> MeshConfig {
    mesh_with_providers(serde_json::json!([
        {"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411}},
        {
            "name": "my-http",
            "envoyExtAuthzHttp": {
                "service": "foo/ext-authz.foo.svc.cluster.local",
                "port": 8000,
                "timeout": "10s",
                "failOpen": true,
                "statusOnError": "403",
                "pathPrefix": "/check",
                "includeRequestHeadersInCheck": ["x-custom-id", "x-prefix-*", "*-suffix"],
                "includeHeadersInCheck": ["ignored-because-the-new-field-is-set"],
                "includeAdditionalHeadersInCheck": {"x-b": "2", "x-a": "1"},
                "includeRequestBodyInCheck": {"maxRequestBytes": 2048, "allowPartialMessage": true},
                "headersToUpstreamOnAllow": ["authorization"],
                "headersToDownstreamOnDeny": ["set-cookie", "x-deny-*"]
            }
        },
        {"name": "my-grpc", "envoyExtAuthzGrpc": {"service": "authz.foo.svc.cluster.local", "port": "9000"}},
        {"name": "bad-port", "envoyExtAuthzGrpc": {"service": "authz.foo.svc.cluster.local", "port": 0}}
    ]))
}

fn custom_rule() -> Policy {
    policy(
        vec![perms_and(vec![
            perms_or(vec![url_path(exact("/admin"))]),
            perms_or(vec![perm(permission::Rule::DestinationPort(8080))]),
        ])],
        vec![ids_and(vec![id_any()])],
    )
}

fn enabled_for(rbac_filter: &str, provider: &str) -> MetadataMatcher {
    meta(
        rbac_filter,
        &["istio_ext_authz_shadow_effective_policy_id"],
        vstr(prefix(&format!("istio-ext-authz-{provider}"))),
    )
}

#[test]
fn custom_http_provider_is_a_shadow_rbac_and_ext_authz_pair() {
    let built = http(&custom("my-http"), &providers());
    assert_eq!(built.diagnostics, vec![]);
    assert!(built.rbac.is_empty());
    assert_eq!(built.custom.len(), 2);
    assert_eq!(
        http_rbac(&built.custom[0]),
        http_filter_of(
            None,
            Some(rules(
                Action::Deny,
                vec![(
                    "istio-ext-authz-my-http-ns[foo]-policy[ext]-rule[0]",
                    custom_rule()
                )]
            )),
            "istio_ext_authz_"
        )
    );
    assert_eq!(built.custom[1].name, "envoy.filters.http.ext_authz");
    let got: http_ext_authz::ExtAuthz = decode(http_config(&built.custom[1]));
    let list = |ms: Vec<StringMatcher>| Some(ListStringMatcher { patterns: ms });
    let expected = http_ext_authz::ExtAuthz {
        status_on_error: Some(HttpStatus { code: 403 }),
        failure_mode_allow: true,
        transport_api_version: ApiVersion::V3 as i32,
        services: Some(http_ext_authz::ext_authz::Services::HttpService(
            http_ext_authz::HttpService {
                path_prefix: "/check".into(),
                server_uri: Some(HttpUri {
                    uri: "http://ext-authz.foo.svc.cluster.local".into(),
                    timeout: Some(Duration {
                        seconds: 10,
                        nanos: 0,
                    }),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                        "outbound|8000||ext-authz.foo.svc.cluster.local".into(),
                    )),
                }),
                authorization_request: Some(http_ext_authz::AuthorizationRequest {
                    headers_to_add: vec![
                        HeaderValue {
                            key: "x-a".into(),
                            value: "1".into(),
                            ..Default::default()
                        },
                        HeaderValue {
                            key: "x-b".into(),
                            value: "2".into(),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                authorization_response: Some(http_ext_authz::AuthorizationResponse {
                    allowed_upstream_headers: list(vec![ic(exact("authorization"))]),
                    allowed_client_headers: list(vec![
                        ic(exact("set-cookie")),
                        ic(prefix("x-deny-")),
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        filter_enabled_metadata: Some(enabled_for("envoy.filters.http.rbac", "my-http")),
        with_request_body: Some(http_ext_authz::BufferSettings {
            max_request_bytes: 2048,
            allow_partial_message: true,
            pack_as_bytes: false,
        }),
        allowed_headers: list(vec![
            ic(exact("x-custom-id")),
            ic(prefix("x-prefix-")),
            ic(suffix("-suffix")),
        ]),
        ..Default::default()
    };
    assert_eq!(got, expected);

    // An HTTP-only provider has no network filter: nothing on TCP chains.
    let on_tcp = tcp(&custom("my-http"), &providers());
    assert_eq!(on_tcp.custom, vec![]);
    assert_eq!(on_tcp.rbac, vec![]);
    assert_eq!(on_tcp.diagnostics, vec![]);
}

#[test]
fn custom_grpc_provider_on_a_tcp_chain_uses_the_network_filters() {
    let built = tcp(&custom("my-grpc"), &providers());
    assert_eq!(built.diagnostics, vec![]);
    assert_eq!(built.custom.len(), 2);
    // `paths` is HTTP-only: on TCP the CUSTOM (DENY-action) rule keeps only the port.
    assert_eq!(
        net_rbac(&built.custom[0]),
        tcp_filter_of(
            None,
            Some(rules(
                Action::Deny,
                vec![(
                    "istio-ext-authz-my-grpc-ns[foo]-policy[ext]-rule[0]",
                    policy(
                        vec![perms_and(vec![perms_or(vec![perm(
                            permission::Rule::DestinationPort(8080)
                        )])])],
                        vec![ids_and(vec![id_any()])],
                    )
                )]
            )),
            "istio_ext_authz_"
        )
    );
    assert_eq!(built.custom[1].name, "envoy.filters.network.ext_authz");
    let got: net_ext_authz::ExtAuthz = decode(net_config(&built.custom[1]));
    assert_eq!(
        got,
        net_ext_authz::ExtAuthz {
            stat_prefix: "tcp.".into(),
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: "outbound|9000||authz.foo.svc.cluster.local".into(),
                        authority: "authz.foo.svc.cluster.local".into(),
                        ..Default::default()
                    }
                )),
                timeout: Some(Duration {
                    seconds: 600,
                    nanos: 0
                }),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
            filter_enabled_metadata: Some(enabled_for("envoy.filters.network.rbac", "my-grpc")),
            ..Default::default()
        }
    );
}

#[test]
fn custom_with_an_unknown_or_invalid_provider_denies_its_rules() {
    for (provider, error) in [
        (
            "missing",
            "extension provider \"missing\" is not defined; its rules deny the request",
        ),
        (
            "bad-port",
            "extension provider \"bad-port\" is invalid (port must be in the range [1, 65535], \
             found: 0); its rules deny the request",
        ),
    ] {
        let built = http(&custom(provider), &providers());
        let name = format!(
            "istio-ext-authz-{provider}-ns[foo]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action"
        );
        assert_eq!(
            http_rbacs(&built.custom),
            vec![http_filter_of(
                Some(rules(Action::Deny, vec![(&name, custom_rule())])),
                None,
                ""
            )]
        );
        let shown: Vec<String> = built
            .diagnostics
            .iter()
            .map(Diagnostic::to_string)
            .collect();
        assert_eq!(
            shown,
            [format!(
                "AuthorizationPolicy foo/ext: spec.provider.name: {error}"
            )]
        );
    }
}

#[test]
fn two_custom_providers_on_one_workload_deny_both() {
    let yaml = format!(
        "{}---\n{}",
        custom("my-http"),
        custom("my-grpc").replace("name: ext,", "name: ext2,")
    );
    let built = http(&yaml, &providers());
    let names: Vec<Vec<String>> = http_rbacs(&built.custom)
        .into_iter()
        .map(|r| {
            let r = r.rules.expect("deny rules");
            assert_eq!(r.action, Action::Deny as i32);
            r.policies.into_keys().collect()
        })
        .collect();
    assert_eq!(
        names,
        vec![
            vec![
                "istio-ext-authz-my-grpc-ns[foo]-policy[ext2]-rule[0]-deny-due-to-bad-CUSTOM-action"
                    .to_string()
            ],
            vec![
                "istio-ext-authz-my-http-ns[foo]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action"
                    .to_string()
            ],
        ]
    );
    assert_eq!(built.diagnostics.len(), 2);
    assert!(
        built.diagnostics[0]
            .to_string()
            .contains("more than one CUSTOM provider applies (my-grpc, my-http)"),
        "{}",
        built.diagnostics[0]
    );
}

// === TCP narrowing (§3.6) ===

#[test]
fn tcp_allow_with_only_methods_denies_every_connection() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: foo}
spec:
  rules: [{to: [{operation: {methods: ["GET"]}}]}]
"#;
    let built = tcp(yaml, &MeshConfig::default());
    assert_eq!(
        net_rbacs(&built.rbac),
        vec![tcp_filter_of(
            Some(rules(Action::Allow, vec![])),
            None,
            ALLOW_PREFIX
        )]
    );
}

#[test]
fn tcp_deny_with_only_paths_matches_every_connection() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
  - from: [{source: {requestPrincipals: ["*"]}}]
    when: [{key: "request.auth.claims[groups]", values: [x]}]
"#;
    let built = tcp(yaml, &MeshConfig::default());
    assert_eq!(
        net_rbacs(&built.rbac),
        vec![tcp_filter_of(
            Some(rules(
                Action::Deny,
                vec![
                    ("ns[foo]-policy[no-admin]-rule[0]", match_all()),
                    ("ns[foo]-policy[no-admin]-rule[1]", match_all()),
                ]
            )),
            None,
            ALLOW_PREFIX
        )]
    );
}

// === identities ===

#[test]
fn principals_expand_to_every_trust_domain_alias() {
    // istio's builder testdata `simple-policy-multiple-td-aliases`.
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/rule[0]/sa/from[0]-principal[0]"]
    - source:
        principals: ["some-td/ns/rule[0]/sa/from[1]-principal[0]", "cluster.local/ns/rule[0]/sa/from[1]-principal[1]"]
        namespaces: ["rule[0]-from[1]-ns[0]"]
  - from:
    - source:
        principals: ["other-td/ns/a/sa/b", "*/ns/a/sa/b", "sa-only"]
        trustDomains: ["td1", "other-td"]
"#;
    let mesh = MeshConfig {
        trust_domain: "td1".into(),
        trust_domain_aliases: vec!["cluster.local".into(), "some-td".into()],
        ..Default::default()
    };
    let built = http(yaml, &mesh);
    assert_eq!(built.diagnostics, vec![]);
    let spiffe = |tds: &[&str], rest: &str| -> Vec<Principal> {
        tds.iter()
            .map(|td| auth(exact(&format!("spiffe://{td}/{rest}"))))
            .collect()
    };
    let all = ["td1", "cluster.local", "some-td"];
    let mut from1 = spiffe(&all, "ns/rule[0]/sa/from[1]-principal[0]");
    from1.extend(spiffe(&all, "ns/rule[0]/sa/from[1]-principal[1]"));
    let expected = rules(
        Action::Allow,
        vec![
            (
                "ns[foo]-policy[httpbin]-rule[0]",
                policy(
                    vec![perms_and(vec![perm_any()])],
                    vec![
                        ids_and(vec![ids_or(spiffe(
                            &all,
                            "ns/rule[0]/sa/from[0]-principal[0]",
                        ))]),
                        ids_and(vec![
                            ids_or(from1),
                            ids_or(vec![auth(re(r".*/ns/rule\[0\]-from\[1\]-ns\[0\]/.*"))]),
                        ]),
                    ],
                ),
            ),
            (
                "ns[foo]-policy[httpbin]-rule[1]",
                policy(
                    vec![perms_and(vec![perm_any()])],
                    vec![ids_and(vec![
                        // Other trust domains, `*` and non-SPIFFE shapes stay as they are.
                        ids_or(vec![
                            auth(exact("spiffe://other-td/ns/a/sa/b")),
                            auth(re("spiffe://.*/ns/a/sa/b")),
                            auth(exact("spiffe://sa-only")),
                        ]),
                        // A known trust domain stands for all of them.
                        ids_or(vec![
                            auth(prefix("spiffe://td1/")),
                            auth(prefix("spiffe://cluster.local/")),
                            auth(prefix("spiffe://some-td/")),
                            auth(prefix("spiffe://other-td/")),
                        ]),
                    ])],
                ),
            ),
        ],
    );
    assert_eq!(
        http_rbacs(&built.rbac),
        vec![http_filter_of(Some(expected), None, ALLOW_PREFIX)]
    );
}

#[test]
fn request_principals_split_issuer_and_subject_at_the_last_slash() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt, namespace: foo}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["https://issuer.example/alice"]}}]
    when:
    - key: request.auth.principal
      values: ["*", "https://iss/*", "https://iss/al*", "*/bob", "*iss.example/bob", "pre*", "*suf", "noslash"]
      notValues: ["https://evil/mallory"]
"#;
    let got = only_policy(&http(yaml, &MeshConfig::default()));
    let any = || re(".+");
    let rp = |iss: StringMatcher, sub: StringMatcher| {
        ids_and(vec![jwt_str("iss", iss), jwt_str("sub", sub)])
    };
    let expected = policy(
        vec![perms_and(vec![perm_any()])],
        vec![ids_and(vec![
            // One value: the pair itself, no OR around it.
            rp(exact("https://issuer.example"), exact("alice")),
            ids_or(vec![
                rp(any(), any()),
                rp(exact("https://iss"), any()),
                rp(exact("https://iss"), prefix("al")),
                rp(any(), exact("bob")),
                rp(suffix("iss.example"), exact("bob")),
                rp(prefix("pre"), any()),
                rp(any(), suffix("suf")),
                rp(exact("noslash"), exact("")),
            ]),
            id_not(rp(exact("https://evil"), exact("mallory"))),
        ])],
    );
    assert_eq!(got, expected);
}

#[test]
fn claims_audiences_and_presenter_match_jwt_metadata_as_list_or_scalar() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: claims, namespace: foo}
spec:
  rules:
  - when:
    - {key: "request.auth.claims[groups]", values: ["admins"]}
    - {key: "request.auth.claims[a][b]", values: ["x", "y*"]}
    - {key: "request.auth.audiences", notValues: ["bad"]}
    - {key: "request.auth.presenter", values: ["*"]}
"#;
    let got = only_policy(&http(yaml, &MeshConfig::default()));
    let expected = policy(
        vec![perms_and(vec![perm_any()])],
        vec![ids_and(vec![
            jwt_list(&["groups"], vstr(exact("admins"))),
            jwt_list(&["a", "b"], vor(vec![vstr(exact("x")), vstr(prefix("y"))])),
            id_not(jwt_list(&["aud"], vstr(exact("bad")))),
            jwt_list(&["azp"], vstr(re(".+"))),
        ])],
    );
    assert_eq!(got, expected);
}

#[test]
fn namespaces_become_regexes_quoted_like_go() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns, namespace: foo}
spec:
  rules:
  - from: [{source: {namespaces: ["bar", "team-*", "*-prod", "a.b"], notNamespaces: ["*"]}}]
  - when: [{key: source.namespace, values: ["x+y"]}]
"#;
    let built = http(yaml, &MeshConfig::default());
    let r = http_rbac(&built.rbac[0]).rules.expect("rules");
    let regexes = |rs: &[&str]| ids_or(rs.iter().map(|r| auth(re(r))).collect());
    let expected: HashMap<String, Policy> = [
        (
            "ns[foo]-policy[ns]-rule[0]",
            policy(
                vec![perms_and(vec![perm_any()])],
                vec![ids_and(vec![
                    // `-` stays as is (Go's QuoteMeta), `.` is escaped.
                    regexes(&[
                        ".*/ns/bar/.*",
                        ".*/ns/team-.*/.*",
                        ".*/ns/.*-prod/.*",
                        r".*/ns/a\.b/.*",
                    ]),
                    id_not(regexes(&[".*/ns/.*/.*"])),
                ])],
            ),
        ),
        (
            "ns[foo]-policy[ns]-rule[1]",
            policy(
                vec![perms_and(vec![perm_any()])],
                vec![ids_and(vec![regexes(&[r".*/ns/x\+y/.*"])])],
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(r.policies, expected);
}

#[test]
fn service_accounts_become_regexes_defaulting_to_the_policy_namespace() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sa, namespace: foo}
spec:
  rules:
  - from: [{source: {serviceAccounts: ["my-ns/my-sa", "sa-only", "a.b/c+d"], notServiceAccounts: ["foo/admin"]}}]
"#;
    let got = only_policy(&http(yaml, &MeshConfig::default()));
    let sa = |r: &str| auth(re(r));
    let expected = policy(
        vec![perms_and(vec![perm_any()])],
        vec![ids_and(vec![
            ids_or(vec![
                sa("spiffe://.+/ns/my-ns/(.+/|)sa/my-sa(/.+)?"),
                sa("spiffe://.+/ns/foo/(.+/|)sa/sa-only(/.+)?"),
                sa(r"spiffe://.+/ns/a\.b/(.+/|)sa/c\+d(/.+)?"),
            ]),
            id_not(ids_or(vec![sa("spiffe://.+/ns/foo/(.+/|)sa/admin(/.+)?")])),
        ])],
    );
    assert_eq!(got, expected);
}

// === the other fields ===

#[test]
fn every_operation_and_condition_field_maps_as_istiod_does() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: all, namespace: foo}
spec:
  rules:
  - from:
    - source:
        remoteIpBlocks: ["10.1.2.3/16"]
        notIpBlocks: ["2001:db8::1"]
    to:
    - operation:
        hosts: ["Example.com", "*.suffix.com", "prefix.*", "*"]
        notMethods: ["DELETE"]
        paths: ["/exact", "*/suffix", "/api/{*}/x/{**}"]
        notPorts: ["9000"]
    when:
    - {key: destination.ip, values: ["10.0.0.1"]}
    - {key: connection.sni, values: ["*.example.com"]}
    - {key: "experimental.envoy.filters.network.mysql_proxy[db.table]", values: ["[update]", "x"]}
    - {key: remote.ip, notValues: ["192.168.0.0/24"]}
    - {key: "request.headers[User-Agent]", values: ["curl*", "*bot", "exact"]}
"#;
    let got = only_policy(&http(yaml, &MeshConfig::default()));
    let host = |m| perm(permission::Rule::Header(hdr(":authority", m)));
    #[allow(deprecated)]
    let metadata = perm(permission::Rule::Metadata(meta(
        "envoy.filters.network.mysql_proxy",
        &["db.table"],
        vor(vec![vlist(vstr(exact("update"))), vstr(exact("x"))]),
    )));
    let expected = policy(
        vec![perms_and(vec![
            perms_or(vec![
                host(Some(ic(exact("Example.com")))),
                host(Some(ic(suffix(".suffix.com")))),
                host(Some(ic(prefix("prefix.")))),
                host(None),
            ]),
            perm_not(perms_or(vec![perm(permission::Rule::Header(hdr(
                ":method",
                Some(exact("DELETE")),
            )))])),
            perms_or(vec![
                url_path(exact("/exact")),
                url_path(suffix("/suffix")),
                perm(permission::Rule::UriTemplate(TypedExtensionConfig {
                    name: "uri-template".into(),
                    typed_config: Some(Any {
                        type_url: "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"
                            .into(),
                        value: UriTemplateMatchConfig {
                            path_template: "/api/*/x/**".into(),
                        }
                        .encode_to_vec(),
                    }),
                })),
            ]),
            perm_not(perms_or(vec![perm(permission::Rule::DestinationPort(9000))])),
            perms_or(vec![perm(permission::Rule::DestinationIp(cidr(
                "10.0.0.1", 32,
            )))]),
            perms_or(vec![perm(permission::Rule::RequestedServerName(suffix(
                ".example.com",
            )))]),
            metadata,
        ])],
        vec![ids_and(vec![
            // The address is kept as written, not masked.
            ids_or(vec![pid(principal::Identifier::RemoteIp(cidr(
                "10.1.2.3", 16,
            )))]),
            id_not(ids_or(vec![pid(principal::Identifier::DirectRemoteIp(
                cidr("2001:db8::1", 128),
            ))])),
            id_not(ids_or(vec![pid(principal::Identifier::RemoteIp(cidr(
                "192.168.0.0",
                24,
            )))])),
            ids_or(vec![
                pid(principal::Identifier::Header(hdr(
                    "User-Agent",
                    Some(prefix("curl")),
                ))),
                pid(principal::Identifier::Header(hdr(
                    "User-Agent",
                    Some(suffix("bot")),
                ))),
                pid(principal::Identifier::Header(hdr(
                    "User-Agent",
                    Some(exact("exact")),
                ))),
            ]),
        ])],
    );
    assert_eq!(got, expected);
}

// === diagnostics: one bad rule never drops the others ===

#[test]
fn an_unknown_when_key_skips_only_its_rule() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  rules:
  - when: [{key: source.ip, values: ["1.2.3.4"]}, {key: x, values: ["y"]}]
  - {}
"#;
    let built = http(yaml, &MeshConfig::default());
    assert_eq!(
        http_rbacs(&built.rbac),
        vec![http_filter_of(
            Some(rules(
                Action::Allow,
                vec![("ns[foo]-policy[httpbin]-rule[1]", match_all())]
            )),
            None,
            ALLOW_PREFIX
        )]
    );
    let shown: Vec<String> = built
        .diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect();
    assert_eq!(
        shown,
        ["AuthorizationPolicy foo/httpbin: spec.rules[0].when[1].key: unknown key \"x\""]
    );
}

const BAD_VALUES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: foo}
spec:
  action: ACTION
  rules:
  - from: [{source: {ipBlocks: ["1.2.3.4", "nope"]}}, {source: {namespaces: [bar]}}]
    when: [{key: destination.port, values: ["80", "+81", "65536"]}, {key: "request.headers", values: ["v"]}]
  - to: [{operation: {ports: ["443"]}}]
"#;

fn port_443() -> Policy {
    policy(
        vec![perms_and(vec![perms_or(vec![perm(
            permission::Rule::DestinationPort(443),
        )])])],
        vec![ids_and(vec![id_any()])],
    )
}

#[test]
fn bad_values_skip_an_allow_rule_and_only_the_value_of_a_deny_rule() {
    // ALLOW: the first error drops rule 0; rule 1 stays.
    let built = http(
        &BAD_VALUES.replace("ACTION", "ALLOW"),
        &MeshConfig::default(),
    );
    assert_eq!(
        http_rbacs(&built.rbac),
        vec![http_filter_of(
            Some(rules(
                Action::Allow,
                vec![("ns[foo]-policy[bad]-rule[1]", port_443())]
            )),
            None,
            ALLOW_PREFIX
        )]
    );
    let shown: Vec<String> = built
        .diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect();
    assert_eq!(
        shown,
        ["AuthorizationPolicy foo/bad: spec.rules[0].when[0].values[1]: invalid port \"+81\""]
    );

    // DENY: every bad value is dropped and reported once; the rest of rule 0 stays (wider).
    let built = http(
        &BAD_VALUES.replace("ACTION", "DENY"),
        &MeshConfig::default(),
    );
    let port_80 = perms_and(vec![perms_or(vec![perm(
        permission::Rule::DestinationPort(80),
    )])]);
    let expected = rules(
        Action::Deny,
        vec![
            (
                "ns[foo]-policy[bad]-rule[0]",
                policy(
                    vec![port_80],
                    vec![
                        ids_and(vec![ids_or(vec![pid(
                            principal::Identifier::DirectRemoteIp(cidr("1.2.3.4", 32)),
                        )])]),
                        ids_and(vec![bar_namespace()]),
                    ],
                ),
            ),
            ("ns[foo]-policy[bad]-rule[1]", port_443()),
        ],
    );
    assert_eq!(
        http_rbacs(&built.rbac),
        vec![http_filter_of(Some(expected), None, ALLOW_PREFIX)]
    );
    let shown: Vec<String> = built
        .diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "AuthorizationPolicy foo/bad: spec.rules[0].when[0].values[1]: invalid port \"+81\"",
            "AuthorizationPolicy foo/bad: spec.rules[0].when[0].values[2]: invalid port \"65536\"",
            "AuthorizationPolicy foo/bad: spec.rules[0].from[0].source.ipBlocks[1]: \
             invalid IP address or CIDR \"nope\"",
            "AuthorizationPolicy foo/bad: spec.rules[0].when[1].key: invalid key \
             \"request.headers\": expecting request.headers[<NAME>]",
        ]
    );
}

// === selection ===

const SELECTION: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b, namespace: foo, creationTimestamp: "2021-01-01T00:00:00Z"}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: foo, creationTimestamp: "2021-01-01T00:00:00Z"}
spec: {selector: {matchLabels: {app: httpbin}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: old, namespace: foo, creationTimestamp: "2019-01-01T00:00:00Z"}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-app, namespace: foo}
spec: {selector: {matchLabels: {app: other}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gateway-attached, namespace: foo}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: bar}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: root-selector, namespace: istio-system, creationTimestamp: "2022-01-01T00:00:00Z"}
spec: {selector: {matchLabels: {app: httpbin, version: v1}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system, creationTimestamp: "2020-01-01T00:00:00Z"}
spec: {}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra-root, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra-own, namespace: foo}
spec: {}
"#;

fn names<S: mesh_model::Spec>(v: &[&mesh_model::Resource<S>]) -> Vec<String> {
    v.iter()
        .map(|p| format!("{}/{}", p.metadata.namespace(), p.metadata.name))
        .collect()
}

#[test]
fn applicable_policies_are_root_then_own_namespace_oldest_first() {
    let all: Vec<Arc<Config>> = configs(SELECTION).into_iter().map(Arc::new).collect();
    let labels: BTreeMap<String, String> = [("app", "httpbin"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let got = applicable::<AuthorizationPolicySpec>(&all, "istio-system", "foo", &labels);
    assert_eq!(
        names(&got),
        [
            "istio-system/mesh-wide",
            "istio-system/root-selector",
            "foo/old",
            "foo/a",
            "foo/b",
        ]
    );
    // Without `version: v1` the root-namespace selector no longer matches.
    let fewer: BTreeMap<String, String> = [("app".to_string(), "httpbin".to_string())].into();
    let got = applicable::<AuthorizationPolicySpec>(&all, "istio-system", "foo", &fewer);
    assert_eq!(
        names(&got),
        ["istio-system/mesh-wide", "foo/old", "foo/a", "foo/b"]
    );
    // A workload in the root namespace sees each policy once.
    let got = applicable::<AuthorizationPolicySpec>(&all, "istio-system", "istio-system", &labels);
    assert_eq!(
        names(&got),
        ["istio-system/mesh-wide", "istio-system/root-selector"]
    );
    // RequestAuthentications: istiod looks in the workload's namespace first.
    let got = applicable::<RequestAuthenticationSpec>(&all, "istio-system", "foo", &labels);
    assert_eq!(names(&got), ["foo/ra-own", "istio-system/ra-root"]);
}

// === JWT ===

const ONE_ISSUER: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [api]
    jwks: '{"keys":[]}'
"#;

fn jwt_config(f: &HttpFilter) -> JwtAuthentication {
    assert_eq!(f.name, "envoy.filters.http.jwt_authn");
    decode(http_config(f))
}

fn no_fetch(_: &JwtRule) -> Option<String> {
    None
}

fn by_name(name: &str) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.into())),
    }
}
fn any_of(requirements: Vec<JwtRequirement>) -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
            JwtRequirementOrList { requirements },
        )),
    }
}
fn allow_missing() -> JwtRequirement {
    JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
    }
}
fn all_paths(requires: JwtRequirement) -> Vec<RequirementRule> {
    vec![RequirementRule {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        requirement_type: Some(requirement_rule::RequirementType::Requires(requires)),
    }]
}
fn expected_provider(issuer: &str, jwks: &str) -> JwtProvider {
    JwtProvider {
        issuer: issuer.into(),
        payload_in_metadata: "payload".into(),
        normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
            space_delimited_claims: vec!["permission".into(), "scope".into()],
        }),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(jwks.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn one_jwt_rule_is_one_provider_or_no_token() {
    let ra = authn(ONE_ISSUER);
    let f = jwt_filter(&refs(&ra), false, &no_fetch).expect("a filter");
    let expected = JwtAuthentication {
        providers: [(
            "origins-0".to_string(),
            JwtProvider {
                audiences: vec!["api".into()],
                ..expected_provider("https://issuer.example", r#"{"keys":[]}"#)
            },
        )]
        .into(),
        rules: all_paths(any_of(vec![by_name("origins-0"), allow_missing()])),
        bypass_cors_preflight: true,
        ..Default::default()
    };
    assert_eq!(jwt_config(&f), expected);
}

#[test]
fn several_jwt_rules_are_sorted_by_issuer_and_required_any_or_all_allow_missing() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: z, namespace: foo}
spec:
  jwtRules: [{issuer: z-issuer, jwks: Z}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: a, namespace: istio-system}
spec:
  jwtRules: [{issuer: m-issuer, jwks: M}, {issuer: a-issuer, jwks: A}]
"#;
    let ra = authn(yaml);
    let f = jwt_filter(&refs(&ra), false, &no_fetch).expect("a filter");
    let expected = JwtAuthentication {
        providers: [
            ("origins-0".to_string(), expected_provider("a-issuer", "A")),
            ("origins-1".to_string(), expected_provider("m-issuer", "M")),
            ("origins-2".to_string(), expected_provider("z-issuer", "Z")),
        ]
        .into(),
        rules: all_paths(any_of(vec![
            by_name("origins-0"),
            by_name("origins-1"),
            by_name("origins-2"),
            JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::RequiresAll(
                    JwtRequirementAndList {
                        requirements: (0..3)
                            .map(|i| {
                                any_of(vec![by_name(&format!("origins-{i}")), allow_missing()])
                            })
                            .collect(),
                    },
                )),
            },
        ])),
        bypass_cors_preflight: true,
        ..Default::default()
    };
    assert_eq!(jwt_config(&f), expected);
}

#[test]
fn jwks_is_inline_else_fetched_else_fail_closed() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - {issuer: a-inline, jwks: INLINE, jwksUri: "https://a.example/jwks"}
  - {issuer: b-fetched, jwksUri: "https://b.example/jwks"}
  - {issuer: c-unreachable, jwksUri: "https://c.example/jwks"}
"#;
    let ra = authn(yaml);
    let calls = Cell::new(0);
    let fetch = |r: &JwtRule| {
        calls.set(calls.get() + 1);
        (r.jwks_uri.as_deref() == Some("https://b.example/jwks")).then(|| "FETCHED".to_string())
    };
    let f = jwt_filter(&refs(&ra), false, &fetch).expect("a filter");
    let keys: Vec<(String, String)> = jwt_config(&f)
        .providers
        .into_iter()
        .map(|(name, p)| match p.jwks_source_specifier {
            Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
                specifier: Some(data_source::Specifier::InlineString(s)),
                ..
            })) => (name, s),
            other => panic!("{name}: {other:?}"),
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        keys,
        [
            ("origins-0".to_string(), "INLINE".to_string()),
            ("origins-1".to_string(), "FETCHED".to_string()),
            ("origins-2".to_string(), PUBLIC_ONLY_JWKS.to_string()),
        ]
    );
    // The inline JWKS is used without asking.
    assert_eq!(calls.get(), 2);
}

#[test]
fn the_fail_closed_jwks_is_one_rsa_2048_public_key() {
    let v: serde_json::Value = serde_json::from_str(PUBLIC_ONLY_JWKS).expect("JSON");
    let keys = v["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let k = keys[0].as_object().expect("a key");
    let mut fields: Vec<&str> = k.keys().map(String::as_str).collect();
    fields.sort();
    // Public parts only.
    assert_eq!(fields, ["e", "kty", "n"]);
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["e"], "AQAB");
    let n = base64url(k["n"].as_str().expect("n"));
    assert_eq!(n.len(), 256);
    assert!(n[0] & 0x80 != 0, "a full 2048-bit modulus");
    assert!(n[255] & 1 == 1, "an odd modulus");
}

/// Unpadded base64url, strictly.
fn base64url(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk.iter().fold(0, |acc, &c| (acc << 6) | val(c)) << (6 * (4 - chunk.len()));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn jwt_rule_fields_map_to_the_provider_and_gateways_clear_the_route_cache() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwks: K
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}, {name: x-raw}]
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    spaceDelimitedClaims: [scope, roles]
"#;
    let ra = authn(yaml);
    let f = jwt_filter(&refs(&ra), true, &no_fetch).expect("a filter");
    let p = jwt_config(&f)
        .providers
        .remove("origins-0")
        .expect("origins-0");
    assert_eq!(
        p,
        JwtProvider {
            forward: true,
            forward_payload_header: "x-payload".into(),
            from_headers: vec![
                JwtHeader {
                    name: "x-jwt".into(),
                    value_prefix: "Bearer ".into()
                },
                JwtHeader {
                    name: "x-raw".into(),
                    value_prefix: String::new()
                },
            ],
            from_params: vec!["token".into()],
            from_cookies: vec!["session".into()],
            claim_to_headers: vec![JwtClaimToHeader {
                header_name: "x-sub".into(),
                claim_name: "sub".into(),
                ..Default::default()
            }],
            normalize_payload_in_metadata: Some(jwt_provider::NormalizePayload {
                space_delimited_claims: vec!["permission".into(), "roles".into(), "scope".into()],
            }),
            clear_route_cache: true,
            ..expected_provider("https://issuer.example", "K")
        }
    );
}

#[test]
fn no_jwt_rules_no_filter() {
    let ra = authn(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
         metadata: {name: empty, namespace: foo}\nspec: {}\n",
    );
    assert_eq!(jwt_filter(&refs(&ra), false, &no_fetch), None);
    assert_eq!(jwt_filter(&[], false, &no_fetch), None);
}

// === wire format ===

/// Every filter kind this module produces.
fn everything() -> (Vec<HttpFilter>, Vec<Filter>) {
    let yaml = format!(
        "{HTTPBIN}---\n{ONE_OF_EACH}---\n{}---\n{}",
        custom("my-grpc"),
        DRY_RUN.replace("ACTION", "DENY").replace("DRY", "true")
    )
    .replace("ACTION", "ALLOW");
    let ra = authn(ONE_ISSUER);
    let jwt = jwt_filter(&refs(&ra), false, &no_fetch);
    let h = http(&yaml, &providers());
    let t = tcp(&yaml, &providers());
    assert_eq!(h.diagnostics, vec![]);
    (h.into_http_filters(jwt), t.into_filters())
}

#[test]
fn filters_encode_and_decode_back_to_the_same_messages() {
    let (http_filters, tcp_filters) = everything();
    assert_eq!(http_filters.len(), 2 + 1 + 3);
    assert_eq!(tcp_filters.len(), 2 + 3);
    for f in &http_filters {
        let back = HttpFilter::decode(f.encode_to_vec().as_slice()).expect("HttpFilter");
        assert_eq!(&back, f);
        let a = http_config(f);
        // The typed config is a well-formed message of its type, with nothing left over.
        let len = match a.type_url.rsplit('.').next().expect("type") {
            "RBAC" => decode::<HttpRbac>(a).encoded_len(),
            "ExtAuthz" => decode::<http_ext_authz::ExtAuthz>(a).encoded_len(),
            "JwtAuthentication" => decode::<JwtAuthentication>(a).encoded_len(),
            other => panic!("unexpected {other}"),
        };
        assert_eq!(len, a.value.len(), "{}", f.name);
    }
    for f in &tcp_filters {
        let back = Filter::decode(f.encode_to_vec().as_slice()).expect("Filter");
        assert_eq!(&back, f);
        let a = net_config(f);
        let len = match a.type_url.rsplit('.').next().expect("type") {
            "RBAC" => decode::<NetworkRbac>(a).encoded_len(),
            "ExtAuthz" => decode::<net_ext_authz::ExtAuthz>(a).encoded_len(),
            other => panic!("unexpected {other}"),
        };
        assert_eq!(len, a.value.len(), "{}", f.name);
    }
}

#[test]
fn encoding_is_the_same_every_time_despite_hash_maps() {
    // Many policies in one filter and many providers: HashMap order would vary between builds.
    let many: String = (0..12)
        .map(|i| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: p{i}, namespace: foo}}\nspec: {{rules: [{{}}, {{}}]}}\n---\n"
            )
        })
        .collect();
    let jwt_yaml: String = (0..12)
        .map(|i| format!("  - {{issuer: i{i:02}, jwks: K}}\n"))
        .collect();
    let ra = authn(&format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
         metadata: {{name: j, namespace: foo}}\nspec:\n  jwtRules:\n{jwt_yaml}"
    ));
    let first_http = http(&many, &MeshConfig::default()).into_filters();
    let first_tcp = tcp(&many, &MeshConfig::default()).into_filters();
    let first_jwt = jwt_filter(&refs(&ra), false, &no_fetch);
    for _ in 0..10 {
        assert_eq!(
            http(&many, &MeshConfig::default()).into_filters(),
            first_http
        );
        assert_eq!(tcp(&many, &MeshConfig::default()).into_filters(), first_tcp);
        assert_eq!(jwt_filter(&refs(&ra), false, &no_fetch), first_jwt);
    }
    // And the bytes are a valid encoding of the same content as prost's own.
    let rbac = http_rbac(&first_http[0]);
    assert_eq!(rbac.rules.as_ref().map(|r| r.policies.len()), Some(24));
    assert_eq!(rbac.encoded_len(), http_config(&first_http[0]).value.len());
}
