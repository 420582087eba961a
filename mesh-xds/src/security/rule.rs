//! One AuthorizationPolicy rule → one Envoy RBAC `Policy` (istiod's `authz/model`).

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, permission, principal, rbac::Action,
};
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, PathMatcher, StringMatcher, path_matcher,
};
use mesh_model::security::authorization_policy::{AuthorizationPolicy, Rule};

use super::matcher::{
    authenticated, exact, header, id, id_and, id_any, id_not, id_or, jwt_claim, jwt_list, key,
    list_value, metadata_id, or_value, p, p_and, p_any, p_not, p_or, prefix, quote_meta,
    safe_regex, string_value, suffix, with_prefix,
};
use super::{Diagnostic, Error};
use crate::pb::{any, u32v};

/// Which kind of filter chain the filters are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chain {
    /// An HTTP connection manager's filter chain (`envoy.filters.http.*`).
    Http,
    /// A TCP proxy's filter chain (`envoy.filters.network.*`).
    Tcp,
}

// === model: rule → clauses ===

/// The attributes of §3.4, each with the generator istiod uses for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attr {
    DestIp,
    DestPort,
    ConnSni,
    EnvoyFilter,
    SrcIp,
    RemoteIp,
    SrcNamespace,
    SrcTrustDomain,
    SrcServiceAccount,
    SrcPrincipal,
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    RequestHeader,
    RequestClaims,
    Host,
    Path,
    Method,
}

const REQUEST_HEADERS: &str = "request.headers";
const REQUEST_CLAIMS: &str = "request.auth.claims";
const ENVOY_FILTER: &str = "experimental.envoy.filters.";

impl Attr {
    /// The attribute of a `when` key (istiod's switch, in its order).
    fn of_key(key: &str) -> Option<Attr> {
        Some(match key {
            "destination.ip" => Attr::DestIp,
            "destination.port" => Attr::DestPort,
            "connection.sni" => Attr::ConnSni,
            k if k.starts_with(ENVOY_FILTER) => Attr::EnvoyFilter,
            "source.ip" => Attr::SrcIp,
            "remote.ip" => Attr::RemoteIp,
            "source.namespace" => Attr::SrcNamespace,
            "source.trustDomain" => Attr::SrcTrustDomain,
            "source.serviceAccount" => Attr::SrcServiceAccount,
            "source.principal" => Attr::SrcPrincipal,
            "request.auth.principal" => Attr::RequestPrincipal,
            "request.auth.audiences" => Attr::RequestAudiences,
            "request.auth.presenter" => Attr::RequestPresenter,
            k if k.starts_with(REQUEST_HEADERS) => Attr::RequestHeader,
            k if k.starts_with(REQUEST_CLAIMS) => Attr::RequestClaims,
            _ => return None,
        })
    }

    /// Whether the attribute is matched by a permission (else by a principal).
    fn is_permission(self) -> bool {
        matches!(
            self,
            Attr::DestIp
                | Attr::DestPort
                | Attr::ConnSni
                | Attr::EnvoyFilter
                | Attr::Host
                | Attr::Path
                | Attr::Method
        )
    }

    /// Whether all values become one matcher (istiod's "extended" generators) instead of an OR
    /// of one matcher per value.
    fn is_extended(self) -> bool {
        matches!(
            self,
            Attr::EnvoyFilter
                | Attr::RequestPrincipal
                | Attr::RequestAudiences
                | Attr::RequestPresenter
                | Attr::RequestClaims
        )
    }
}

/// Where a clause came from, for diagnostics.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// `when[i]`.
    When(usize),
    /// `from[i].source.<field>` / `<not field>`.
    From(usize, &'static str, &'static str),
    /// `to[i].operation.<field>` / `<not field>`.
    To(usize, &'static str, &'static str),
}

/// One field (or `when` condition) of a rule: values ORed, not-values negated.
#[derive(Clone, Debug)]
struct Clause<'r> {
    attr: Attr,
    /// The `when` key (its bracketed part names headers, claims, metadata); empty for fields.
    key: &'r str,
    values: Vec<String>,
    not_values: Vec<String>,
    origin: Origin,
}

impl Clause<'_> {
    fn key_path(&self, rule: usize) -> String {
        match self.origin {
            Origin::When(j) => format!("spec.rules[{rule}].when[{j}].key"),
            // Fields have no key of their own; name the field.
            _ => self.value_path(rule, false, None),
        }
    }

    fn value_path(&self, rule: usize, negated: bool, k: Option<usize>) -> String {
        let base = match self.origin {
            Origin::When(j) => {
                let f = if negated { "notValues" } else { "values" };
                format!("spec.rules[{rule}].when[{j}].{f}")
            }
            Origin::From(j, f, nf) => {
                let f = if negated { nf } else { f };
                format!("spec.rules[{rule}].from[{j}].source.{f}")
            }
            Origin::To(j, f, nf) => {
                let f = if negated { nf } else { f };
                format!("spec.rules[{rule}].to[{j}].operation.{f}")
            }
        };
        match k {
            Some(k) => format!("{base}[{k}]"),
            None => base,
        }
    }
}

/// One rule as lists of clauses: principals (one list per `from`) and permissions (one list per
/// `to`); istiod's `authz/model.Model`.
#[derive(Debug)]
pub(super) struct Model<'r> {
    principals: Vec<Vec<Clause<'r>>>,
    permissions: Vec<Vec<Clause<'r>>>,
}

impl<'r> Model<'r> {
    /// The clauses of rule `i`; an unknown `when` key is an error (the rule is skipped).
    pub(super) fn new(i: usize, rule: &'r Rule) -> Result<Model<'r>, (String, Error)> {
        let mut base_principal = Vec::new();
        let mut base_permission = Vec::new();
        for (j, when) in rule.when.iter().flatten().enumerate() {
            let attr = Attr::of_key(&when.key).ok_or_else(|| {
                (
                    format!("spec.rules[{i}].when[{j}].key"),
                    Error::UnknownKey(when.key.clone()),
                )
            })?;
            if when.values.is_empty() && when.not_values.is_empty() {
                continue;
            }
            let c = Clause {
                attr,
                key: &when.key,
                values: when.values.clone(),
                not_values: when.not_values.clone(),
                origin: Origin::When(j),
            };
            if attr.is_permission() {
                base_permission.push(c);
            } else {
                base_principal.push(c);
            }
        }

        let field = |attr, values: &[String], not_values: &[String], origin| {
            (!values.is_empty() || !not_values.is_empty()).then(|| Clause {
                attr,
                key: "",
                values: values.to_vec(),
                not_values: not_values.to_vec(),
                origin,
            })
        };

        let mut principals = Vec::new();
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let mut list = Vec::new();
            if let Some(s) = &from.source {
                let o = |f, nf| Origin::From(j, f, nf);
                list.extend(
                    [
                        field(
                            Attr::SrcPrincipal,
                            &s.principals,
                            &s.not_principals,
                            o("principals", "notPrincipals"),
                        ),
                        field(
                            Attr::RequestPrincipal,
                            &s.request_principals,
                            &s.not_request_principals,
                            o("requestPrincipals", "notRequestPrincipals"),
                        ),
                        field(
                            Attr::SrcServiceAccount,
                            &s.service_accounts,
                            &s.not_service_accounts,
                            o("serviceAccounts", "notServiceAccounts"),
                        ),
                        field(
                            Attr::SrcTrustDomain,
                            &s.trust_domains,
                            &s.not_trust_domains,
                            o("trustDomains", "notTrustDomains"),
                        ),
                        field(
                            Attr::SrcNamespace,
                            &s.namespaces,
                            &s.not_namespaces,
                            o("namespaces", "notNamespaces"),
                        ),
                        field(
                            Attr::RemoteIp,
                            &s.remote_ip_blocks,
                            &s.not_remote_ip_blocks,
                            o("remoteIpBlocks", "notRemoteIpBlocks"),
                        ),
                        field(
                            Attr::SrcIp,
                            &s.ip_blocks,
                            &s.not_ip_blocks,
                            o("ipBlocks", "notIpBlocks"),
                        ),
                    ]
                    .into_iter()
                    .flatten(),
                );
            }
            list.extend(base_principal.iter().cloned());
            principals.push(list);
        }
        if principals.is_empty() {
            principals.push(base_principal);
        }

        let mut permissions = Vec::new();
        for (j, to) in rule.to.iter().flatten().enumerate() {
            let mut list = Vec::new();
            if let Some(op) = &to.operation {
                let o = |f, nf| Origin::To(j, f, nf);
                list.extend(
                    [
                        field(Attr::Host, &op.hosts, &op.not_hosts, o("hosts", "notHosts")),
                        field(
                            Attr::Method,
                            &op.methods,
                            &op.not_methods,
                            o("methods", "notMethods"),
                        ),
                        field(Attr::Path, &op.paths, &op.not_paths, o("paths", "notPaths")),
                        field(
                            Attr::DestPort,
                            &op.ports,
                            &op.not_ports,
                            o("ports", "notPorts"),
                        ),
                    ]
                    .into_iter()
                    .flatten(),
                );
            }
            list.extend(base_permission.iter().cloned());
            permissions.push(list);
        }
        if permissions.is_empty() {
            permissions.push(base_permission);
        }
        Ok(Model {
            principals,
            permissions,
        })
    }

    /// istiod's `MigrateTrustDomain`: principals of a known trust domain (or `cluster.local`)
    /// get one copy per trust domain; trust-domain values of a known one expand to all.
    pub(super) fn migrate_trust_domains(&mut self, trust_domains: &[String]) {
        for c in self.principals.iter_mut().flatten() {
            match c.attr {
                Attr::SrcPrincipal => {
                    c.values = replace_trust_domain_aliases(trust_domains, &c.values);
                    c.not_values = replace_trust_domain_aliases(trust_domains, &c.not_values);
                }
                Attr::SrcTrustDomain => {
                    c.values = expand_trust_domains(trust_domains, &c.values);
                    c.not_values = expand_trust_domains(trust_domains, &c.not_values);
                }
                _ => {}
            }
        }
    }
}

// === trust domains (pilot/pkg/security/trustdomain) ===

fn replace_trust_domain_aliases(trust_domains: &[String], principals: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for principal in principals {
        let parts: Vec<&str> = principal.split('/').collect();
        // Only `<td>/ns/<ns>/sa/<sa>` with a td other than `*` is rewritten.
        if parts.len() != 5 || parts[0] == "*" {
            out.push(principal.clone());
            continue;
        }
        let td = parts[0];
        if !(td == "cluster.local" || td_in_list(td, trust_domains)) {
            out.push(principal.clone());
            continue;
        }
        let mut replaced: Vec<String> = Vec::new();
        for candidate in trust_domains {
            let p = if suffix_match(candidate, td) {
                principal.clone()
            } else {
                format!("{candidate}/{}", parts[1..].join("/"))
            };
            if !replaced.contains(&p) {
                replaced.push(p);
            }
        }
        out.extend(replaced);
    }
    out
}

fn expand_trust_domains(trust_domains: &[String], values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let expanded: &[String] = if trust_domains.contains(v) {
            trust_domains
        } else {
            std::slice::from_ref(v)
        };
        for e in expanded {
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
    }
    out
}

/// istiod's `stringMatch`: exact, `*`, or a prefix/suffix wildcard on either side.
fn td_in_list(a: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        a == s
            || s == "*"
            || prefix_match(a, s)
            || prefix_match(s, a)
            || suffix_match(a, s)
            || suffix_match(s, a)
    })
}

fn prefix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_suffix('*').is_some_and(|p| a.starts_with(p))
}

fn suffix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|p| a.ends_with(p))
}

// === generation: clauses → Envoy principals and permissions ===

/// Why a value produced no matcher.
enum Fail {
    /// An HTTP-only attribute on a TCP chain (not a problem of the policy).
    HttpOnly,
    /// The `when` key is malformed.
    Key(Error),
    /// The value is malformed.
    Value(Error),
}

/// The rule is dropped (ALLOW policies only).
struct Skip;

/// Generates the Envoy policy of one rule (istiod's `Model.Generate`).
pub(super) struct Generator<'a> {
    pub(super) policy: &'a AuthorizationPolicy,
    pub(super) rule: usize,
    pub(super) chain: Chain,
    pub(super) action: Action,
    pub(super) diagnostics: &'a mut Vec<Diagnostic>,
}

impl Generator<'_> {
    /// The policy, or `None` when an ALLOW rule cannot be built for this chain.
    pub(super) fn policy(&mut self, m: &Model<'_>) -> Option<Policy> {
        let mut permissions = Vec::new();
        for list in &m.permissions {
            let mut and = Vec::new();
            for c in list {
                and.extend(self.clause(c, Self::permission).ok()?);
            }
            if and.is_empty() {
                and.push(p_any());
            }
            permissions.push(p_and(and));
        }
        let mut principals = Vec::new();
        for list in &m.principals {
            let mut and = Vec::new();
            for c in list {
                and.extend(self.clause(c, Self::principal).ok()?);
            }
            if and.is_empty() {
                and.push(id_any());
            }
            principals.push(id_and(and));
        }
        Some(Policy {
            permissions,
            principals,
            ..Default::default()
        })
    }

    /// The matchers of one clause: for values, then not-values, either one matcher of all
    /// values (extended attributes) or an OR of one matcher per value.
    fn clause<T: Matcher>(
        &mut self,
        c: &Clause<'_>,
        one: fn(&Self, &Clause<'_>, &str) -> Result<T, Fail>,
    ) -> Result<Vec<T>, Skip> {
        let mut out = Vec::new();
        for (negated, values) in [(false, &c.values), (true, &c.not_values)] {
            if values.is_empty() {
                continue;
            }
            let m = if c.attr.is_extended() {
                match T::extended(self, c, values) {
                    Ok(m) => m,
                    Err(f) => {
                        self.fail(f, c, negated, None)?;
                        None
                    }
                }
            } else {
                let mut or = Vec::new();
                for (k, v) in values.iter().enumerate() {
                    match one(self, c, v) {
                        Ok(m) => or.push(m),
                        Err(f) => self.fail(f, c, negated, Some(k))?,
                    }
                }
                (!or.is_empty()).then(|| T::or(or))
            };
            out.extend(m.map(|m| if negated { T::not(m) } else { m }));
        }
        Ok(out)
    }

    /// Records a failure; ALLOW drops the rule (narrower), the others only the value (wider).
    fn fail(
        &mut self,
        f: Fail,
        c: &Clause<'_>,
        negated: bool,
        k: Option<usize>,
    ) -> Result<(), Skip> {
        let reported = match f {
            Fail::HttpOnly => None,
            Fail::Key(e) => Some((c.key_path(self.rule), e)),
            Fail::Value(e) => Some((c.value_path(self.rule, negated, k), e)),
        };
        if let Some((path, e)) = reported {
            self.diagnostics.push(Diagnostic::new(self.policy, path, e));
        }
        if self.action == Action::Allow {
            Err(Skip)
        } else {
            Ok(())
        }
    }

    fn http_only(&self) -> Result<(), Fail> {
        match self.chain {
            Chain::Http => Ok(()),
            Chain::Tcp => Err(Fail::HttpOnly),
        }
    }

    /// One principal matcher for one value.
    fn principal(&self, c: &Clause<'_>, v: &str) -> Result<Principal, Fail> {
        Ok(match c.attr {
            Attr::SrcIp => id(principal::Identifier::DirectRemoteIp(cidr(v)?)),
            Attr::RemoteIp => id(principal::Identifier::RemoteIp(cidr(v)?)),
            Attr::SrcNamespace => {
                let ns: Vec<String> = v.split('*').map(quote_meta).collect();
                authenticated(safe_regex(&format!(".*/ns/{}/.*", ns.join(".*"))))
            }
            Attr::SrcTrustDomain => authenticated(trust_domain_matcher(v)),
            Attr::SrcServiceAccount => {
                let (ns, sa) = v
                    .split_once('/')
                    .unwrap_or((self.policy.metadata.namespace(), v));
                authenticated(safe_regex(&format!(
                    "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                    quote_meta(ns),
                    quote_meta(sa)
                )))
            }
            Attr::SrcPrincipal => authenticated(with_prefix(v, "spiffe://")),
            Attr::RequestHeader => {
                self.http_only()?;
                let name = in_brackets(&c.key[REQUEST_HEADERS.len()..])
                    .ok_or_else(|| bad_key(c.key, "request.headers[<NAME>]"))?;
                id(principal::Identifier::Header(header(name, v, false)))
            }
            // Extended and permission attributes never come here.
            _ => id_any(),
        })
    }

    /// One permission matcher for one value.
    fn permission(&self, c: &Clause<'_>, v: &str) -> Result<Permission, Fail> {
        Ok(match c.attr {
            Attr::DestIp => p(permission::Rule::DestinationIp(cidr(v)?)),
            Attr::DestPort => p(permission::Rule::DestinationPort(port(v)?)),
            Attr::ConnSni => p(permission::Rule::RequestedServerName(with_prefix(v, ""))),
            Attr::Host => {
                self.http_only()?;
                p(permission::Rule::Header(header(":authority", v, true)))
            }
            Attr::Method => {
                self.http_only()?;
                p(permission::Rule::Header(header(":method", v, false)))
            }
            Attr::Path => {
                self.http_only()?;
                if v.contains("{*}") || v.contains("{**}") {
                    p(permission::Rule::UriTemplate(TypedExtensionConfig {
                        name: "uri-template".into(),
                        typed_config: Some(any(&UriTemplateMatchConfig {
                            path_template: path_template(v),
                        })),
                    }))
                } else {
                    p(permission::Rule::UrlPath(PathMatcher {
                        rule: Some(path_matcher::Rule::Path(with_prefix(v, ""))),
                    }))
                }
            }
            _ => p_any(),
        })
    }

    /// The principal matcher of all values of an extended attribute.
    fn principal_extended(
        &self,
        c: &Clause<'_>,
        values: &[String],
    ) -> Result<Option<Principal>, Fail> {
        self.http_only()?;
        Ok(Some(match c.attr {
            Attr::RequestPrincipal => {
                let mut or: Vec<Principal> = values.iter().map(|v| request_principal(v)).collect();
                if or.len() == 1 {
                    or.remove(0)
                } else {
                    id_or(or)
                }
            }
            Attr::RequestAudiences => metadata_id(jwt_list(&["aud"], values)),
            Attr::RequestPresenter => metadata_id(jwt_list(&["azp"], values)),
            Attr::RequestClaims => {
                let claims = nested_brackets(&c.key[REQUEST_CLAIMS.len()..])
                    .ok_or_else(|| bad_key(c.key, "request.auth.claims[<NAME>]..."))?;
                let claims: Vec<&str> = claims.iter().map(String::as_str).collect();
                metadata_id(jwt_list(&claims, values))
            }
            _ => return Ok(None),
        }))
    }

    /// The permission matcher of all values of an extended attribute
    /// (`experimental.envoy.filters.<f>[<k>]`).
    #[allow(deprecated)] // `metadata`, as in `metadata_id`.
    fn permission_extended(
        &self,
        c: &Clause<'_>,
        values: &[String],
    ) -> Result<Option<Permission>, Fail> {
        if c.attr != Attr::EnvoyFilter {
            return Ok(None);
        }
        let rest = c.key.strip_prefix("experimental.").unwrap_or(c.key);
        let rest = rest.strip_suffix(']').unwrap_or(rest);
        let (filter, path) = rest
            .split_once('[')
            .ok_or_else(|| bad_key(c.key, "experimental.envoy.filters.<FILTER>[<KEY>]"))?;
        let matchers = values
            .iter()
            .map(|v| {
                if v.starts_with('[') && v.ends_with(']') {
                    let inner = v.trim_matches(|ch| ch == '[' || ch == ']');
                    list_value(string_value(with_prefix(inner, "")))
                } else {
                    string_value(with_prefix(v, ""))
                }
            })
            .collect();
        Ok(Some(p(permission::Rule::Metadata(MetadataMatcher {
            filter: filter.into(),
            path: vec![key(path)],
            value: Some(or_value(matchers)),
            invert: false,
        }))))
    }
}

/// What [`Generator::clause`] needs from principals and permissions alike.
trait Matcher: Sized {
    fn or(v: Vec<Self>) -> Self;
    fn not(v: Self) -> Self;
    fn extended(g: &Generator<'_>, c: &Clause<'_>, values: &[String])
    -> Result<Option<Self>, Fail>;
}

impl Matcher for Principal {
    fn or(v: Vec<Self>) -> Self {
        id_or(v)
    }
    fn not(v: Self) -> Self {
        id_not(v)
    }
    fn extended(
        g: &Generator<'_>,
        c: &Clause<'_>,
        values: &[String],
    ) -> Result<Option<Self>, Fail> {
        g.principal_extended(c, values)
    }
}

impl Matcher for Permission {
    fn or(v: Vec<Self>) -> Self {
        p_or(v)
    }
    fn not(v: Self) -> Self {
        p_not(v)
    }
    fn extended(
        g: &Generator<'_>,
        c: &Clause<'_>,
        values: &[String],
    ) -> Result<Option<Self>, Fail> {
        g.permission_extended(c, values)
    }
}

fn bad_key(key: &str, expected: &'static str) -> Fail {
    Fail::Key(Error::InvalidKey {
        key: key.to_string(),
        expected,
    })
}

/// `[NAME]` → `NAME` (istiod's `extractNameInBrackets`).
fn in_brackets(s: &str) -> Option<&str> {
    s.strip_prefix('[')?.strip_suffix(']')
}

/// `[a][b]` → `[a, b]`; a single `[a[b]]`-like name falls back to [`in_brackets`]
/// (istiod's `extractNameInNestedBrackets`).
fn nested_brackets(s: &str) -> Option<Vec<String>> {
    let b = s.as_bytes();
    let end_of = |begin: usize| -> Option<usize> {
        if begin >= b.len() || b[begin] != b'[' {
            return None;
        }
        for (i, &c) in b.iter().enumerate().skip(begin + 1) {
            match c {
                b'[' => return None,
                b']' => return Some(i),
                _ => {}
            }
        }
        None
    };
    let mut claims = Vec::new();
    let mut begin = 0;
    while begin < b.len() {
        match end_of(begin) {
            Some(end) => {
                claims.push(s[begin + 1..end].to_string());
                begin = end + 1;
            }
            None => return in_brackets(s).map(|n| vec![n.to_string()]),
        }
    }
    Some(claims)
}

/// `request.auth.principal` value `iss/sub` (split at the last `/`) → AND of `iss` and `sub`
/// claim matchers (istiod's `requestPrincipalGenerator`).
fn request_principal(v: &str) -> Principal {
    let any = || safe_regex(".+");
    let split = v.rfind('/').map(|i| (&v[..i], &v[i + 1..]));
    let (iss, sub) = if v == "*" {
        (any(), any())
    } else if let Some(rest) = v.strip_prefix('*') {
        match split {
            Some((iss, sub)) => {
                let iss = if iss == "*" {
                    any()
                } else {
                    suffix(iss.strip_prefix('*').unwrap_or(iss))
                };
                (iss, exact(sub))
            }
            None => (any(), suffix(rest)),
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        match split {
            Some((iss, sub)) => {
                let sub = if sub == "*" {
                    any()
                } else {
                    prefix(sub.strip_suffix('*').unwrap_or(sub))
                };
                (exact(iss), sub)
            }
            None => (prefix(rest), any()),
        }
    } else {
        let (iss, sub) = split.unwrap_or((v, ""));
        (exact(iss), exact(sub))
    };
    id_and(vec![
        metadata_id(jwt_claim("iss", iss)),
        metadata_id(jwt_claim("sub", sub)),
    ])
}

/// `trustDomains` value → principal-name matcher.
fn trust_domain_matcher(v: &str) -> StringMatcher {
    if v == "*" {
        prefix("spiffe://")
    } else if let Some((a, b)) = v.split_once('*') {
        safe_regex(&format!(
            "spiffe://{}[^/]*{}/.*",
            quote_meta(a),
            quote_meta(b)
        ))
    } else {
        prefix(&format!("spiffe://{v}/"))
    }
}

/// `{*}` → `*`, `{**}` → `**`, in one pass (Go's `strings.NewReplacer`).
fn path_template(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{*}") {
            out.push('*');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{**}") {
            out.push_str("**");
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// An IP (→ /32 or /128) or CIDR, keeping the address as written (Go's `netip.ParsePrefix`
/// does not mask it either).
fn cidr(v: &str) -> Result<CidrRange, Fail> {
    let bad = || Fail::Value(Error::InvalidCidr(v.to_string()));
    let (addr, bits) = match v.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (v, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match bits {
        None => max,
        Some(b) => {
            // Decimal digits only, no leading zero (Go rejects "+8" and "08").
            if b.is_empty()
                || !b.bytes().all(|c| c.is_ascii_digit())
                || (b.len() > 1 && b.starts_with('0'))
            {
                return Err(bad());
            }
            match b.parse::<u32>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad()),
            }
        }
    };
    Ok(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(u32v(len)),
    })
}

/// A port 0..=65535 written in decimal (Go's `strconv.ParseUint`: no sign).
fn port(v: &str) -> Result<u32, Fail> {
    match v.parse::<u32>() {
        Ok(p) if p <= 65535 && !v.starts_with('+') => Ok(p),
        _ => Err(Fail::Value(Error::InvalidPort(v.to_string()))),
    }
}
