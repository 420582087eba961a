//! AuthorizationPolicy → `envoy.filters.{http,network}.rbac` (and `ext_authz` for CUSTOM), a
//! port of istiod's `pilot/pkg/security/authz/{builder,model,matcher}` (reference §3).
//!
//! Per filter chain, the policies that apply to the workload become:
//!
//! * per CUSTOM provider (sorted by name): an RBAC filter holding the provider's rules as
//!   `shadow_rules` (action DENY, stat prefix `istio_ext_authz_`), followed by the provider's
//!   ext_authz filter, which runs only when the RBAC shadow engine matched one of its policies
//!   (`filter_enabled_metadata`); an unknown or invalid provider (or more than one provider) turns
//!   the rules into an enforcing DENY filter with `-deny-due-to-bad-CUSTOM-action` names;
//! * one RBAC filter per other action that has policies, in the order AUDIT (`LOG`), DENY, ALLOW,
//!   each with `shadow_rules_stat_prefix` set even without shadow rules (istiod's quirk: the
//!   prefix is derived from the action of the absent shadow rule set, which reads as ALLOW).
//!
//! Each rule `i` of a policy becomes the Envoy policy `ns[<ns>]-policy[<name>]-rule[<i>]`: its
//! `from` entries become the principals and its `to` entries the permissions, each an AND of
//! per-field clauses (`principals`, `requestPrincipals`, `serviceAccounts`, `trustDomains`,
//! `namespaces`, `remoteIpBlocks`, `ipBlocks`, then the identity `when` conditions; `hosts`,
//! `methods`, `paths`, `ports`, then the other `when` conditions). A policy without rules becomes
//! a rule-0 that never matches. On TCP chains HTTP-only attributes drop the whole rule of an ALLOW
//! policy and only the clause of a DENY/AUDIT/CUSTOM policy (§3.6).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::rbac::v3::{Policy, Rbac as RbacRules, rbac::Action};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::MetadataMatcher;
use envoy_types::pb::google::protobuf::Any;
use mesh_model::MeshConfig;
use mesh_model::security::authorization_policy::{Action as PolicyAction, AuthorizationPolicy};

use super::ext_authz::{self, Provider};
use super::matcher::{id_any, id_not, key, p_any, p_not, prefix, string_value};
use super::rule::{Chain, Generator, Model};
use super::{
    Diagnostic, Error, HTTP_EXT_AUTHZ, HTTP_RBAC, NETWORK_EXT_AUTHZ, NETWORK_RBAC, rbac_filter_any,
};
use crate::pb::any;

/// The annotation that moves a policy's rules into `shadow_rules`.
const DRY_RUN: &str = "istio.io/dry-run";
/// Shadow stat prefix of ALLOW dry-run rules (and of filters without shadow rules).
const DRY_RUN_ALLOW_PREFIX: &str = "istio_dry_run_allow_";
/// Shadow stat prefix of DENY dry-run rules.
const DRY_RUN_DENY_PREFIX: &str = "istio_dry_run_deny_";
/// Shadow stat prefix of the CUSTOM RBAC filters (the ext_authz filter reads the metadata).
const EXT_AUTHZ_PREFIX: &str = "istio_ext_authz_";
/// Dynamic metadata key the CUSTOM RBAC filter writes its matched policy to.
const EXT_AUTHZ_POLICY_ID: &str = "istio_ext_authz_shadow_effective_policy_id";
/// Policy-name prefix of CUSTOM rules.
const EXT_AUTHZ_MATCH_PREFIX: &str = "istio-ext-authz";
/// Suffix of CUSTOM rules whose provider cannot be used.
const BAD_CUSTOM_SUFFIX: &str = "-deny-due-to-bad-CUSTOM-action";
/// Stat prefix of every network RBAC (and network ext_authz) filter.
const TCP_STAT_PREFIX: &str = "tcp.";

// === output ===

/// The authorization filters of one filter chain, in istiod's order, and what was skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Built<F> {
    /// CUSTOM pairs (RBAC shadow + ext_authz, per provider), or their deny replacements. These go
    /// before `jwt_authn` (§5).
    pub(crate) custom: Vec<F>,
    /// RBAC filters for AUDIT, DENY and ALLOW, in that order, each only when the action has
    /// policies. These go after `jwt_authn`.
    pub(crate) rbac: Vec<F>,
    /// Problems in the policies (each one made istiod skip a rule, a value or a provider).
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl<F> Built<F> {
    /// All filters: CUSTOM, then AUDIT, DENY, ALLOW.
    pub(crate) fn into_filters(self) -> Vec<F> {
        let mut out = self.custom;
        out.extend(self.rbac);
        out
    }
}

impl Built<HttpFilter> {
    /// All filters with `jwt` (from [`super::jwt::jwt_filter`]) between CUSTOM and the rest,
    /// as istiod orders them on an inbound HTTP connection manager.
    pub(crate) fn into_http_filters(self, jwt: Option<HttpFilter>) -> Vec<HttpFilter> {
        let mut out = self.custom;
        out.extend(jwt);
        out.extend(self.rbac);
        out
    }
}

/// The authorization HTTP filters for `policies` (the ones that apply to the workload, in
/// [`super::applicable`] order; all actions mixed).
pub(crate) fn http_filters(
    policies: &[&AuthorizationPolicy],
    mesh: &MeshConfig,
) -> Built<HttpFilter> {
    build(policies, mesh, Chain::Http).map(|f| match f {
        Out::Rbac {
            rules,
            shadow,
            shadow_prefix,
        } => {
            let m = HttpRbac {
                rules,
                shadow_rules: shadow,
                shadow_rules_stat_prefix: shadow_prefix,
                ..Default::default()
            };
            http(
                HTTP_RBAC,
                rbac_filter_any(m, |m| (m.rules.take(), m.shadow_rules.take())),
            )
        }
        Out::ExtAuthz(p, name) => {
            let mut cfg = p.http;
            cfg.filter_enabled_metadata = Some(provider_matcher(HTTP_RBAC, &name));
            http(HTTP_EXT_AUTHZ, any(&cfg))
        }
    })
}

/// The authorization network filters of a TCP filter chain for `policies` (§3.6): HTTP-only
/// attributes narrow ALLOW and widen DENY/AUDIT/CUSTOM rules; CUSTOM providers without a gRPC
/// service (`envoyExtAuthzHttp`) are left out.
pub(crate) fn network_filters(
    policies: &[&AuthorizationPolicy],
    mesh: &MeshConfig,
) -> Built<Filter> {
    build(policies, mesh, Chain::Tcp).map(|f| match f {
        Out::Rbac {
            rules,
            shadow,
            shadow_prefix,
        } => {
            let m = NetworkRbac {
                rules,
                shadow_rules: shadow,
                stat_prefix: TCP_STAT_PREFIX.into(),
                shadow_rules_stat_prefix: shadow_prefix,
                ..Default::default()
            };
            network(
                NETWORK_RBAC,
                rbac_filter_any(m, |m| (m.rules.take(), m.shadow_rules.take())),
            )
        }
        Out::ExtAuthz(p, name) => {
            // Only gRPC providers reach here on TCP (see `Builder::custom`).
            let mut cfg = p.tcp.unwrap_or_default();
            cfg.filter_enabled_metadata = Some(provider_matcher(NETWORK_RBAC, &name));
            network(NETWORK_EXT_AUTHZ, any(&cfg))
        }
    })
}

fn http(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn network(name: &str, config: Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// ext_authz runs only for requests whose CUSTOM shadow policy of `provider` matched.
fn provider_matcher(rbac_filter: &str, provider: &str) -> MetadataMatcher {
    MetadataMatcher {
        filter: rbac_filter.into(),
        path: vec![key(EXT_AUTHZ_POLICY_ID)],
        value: Some(string_value(prefix(&format!(
            "{EXT_AUTHZ_MATCH_PREFIX}-{provider}"
        )))),
        invert: false,
    }
}

/// A filter before it is packed for a chain.
enum Out {
    /// An RBAC filter.
    Rbac {
        rules: Option<RbacRules>,
        shadow: Option<RbacRules>,
        shadow_prefix: String,
    },
    /// The ext_authz filter of a provider (config, provider name).
    ExtAuthz(Box<Provider>, String),
}

impl Built<Out> {
    fn map<F>(self, f: impl Fn(Out) -> F) -> Built<F> {
        Built {
            custom: self.custom.into_iter().map(&f).collect(),
            rbac: self.rbac.into_iter().map(&f).collect(),
            diagnostics: self.diagnostics,
        }
    }
}

fn build(policies: &[&AuthorizationPolicy], mesh: &MeshConfig, chain: Chain) -> Built<Out> {
    let mut b = Builder {
        chain,
        trust_domains: std::iter::once(mesh.trust_domain.clone())
            .chain(mesh.trust_domain_aliases.iter().cloned())
            .collect(),
        diagnostics: Vec::new(),
    };
    let of = |a: PolicyAction| -> Vec<&AuthorizationPolicy> {
        policies
            .iter()
            .copied()
            .filter(|p| p.spec.action == a)
            .collect()
    };
    let custom = b.custom(&of(PolicyAction::Custom), mesh);
    let mut rbac = Vec::new();
    for (action, rbac_action) in [
        (PolicyAction::Audit, Action::Log),
        (PolicyAction::Deny, Action::Deny),
        (PolicyAction::Allow, Action::Allow),
    ] {
        let selected = of(action);
        if selected.is_empty() {
            continue;
        }
        let (rules, shadow) = b.rules(&selected, rbac_action, "");
        let shadow_prefix = shadow_stat_prefix(shadow.as_ref()).to_string();
        rbac.push(Out::Rbac {
            rules,
            shadow,
            shadow_prefix,
        });
    }
    let mut diagnostics = Vec::new();
    for d in b.diagnostics {
        // A `when` clause is copied into every `from` entry; report it once.
        if !diagnostics.contains(&d) {
            diagnostics.push(d);
        }
    }
    Built {
        custom,
        rbac,
        diagnostics,
    }
}

/// istiod's `shadowRuleStatPrefix`: by the action of the shadow rules, absent reading as ALLOW.
fn shadow_stat_prefix(shadow: Option<&RbacRules>) -> &'static str {
    match shadow.map_or(Action::Allow as i32, |s| s.action) {
        a if a == Action::Allow as i32 => DRY_RUN_ALLOW_PREFIX,
        a if a == Action::Deny as i32 => DRY_RUN_DENY_PREFIX,
        _ => "",
    }
}

/// The never-matching policy of an ALLOW (or other) policy without rules.
fn match_never() -> Policy {
    Policy {
        permissions: vec![p_not(p_any())],
        principals: vec![id_not(id_any())],
        ..Default::default()
    }
}

// === builder ===

struct Builder {
    chain: Chain,
    /// `[trustDomain] + trustDomainAliases` (istiod's trust-domain bundle).
    trust_domains: Vec<String>,
    diagnostics: Vec<Diagnostic>,
}

impl Builder {
    /// The enforced and the dry-run rules of `policies` (all of one action); each is present only
    /// when some policy of that kind exists.
    fn rules(
        &mut self,
        policies: &[&AuthorizationPolicy],
        action: Action,
        name_prefix: &str,
    ) -> (Option<RbacRules>, Option<RbacRules>) {
        let mut enforced = None;
        let mut shadow = None;
        for p in policies {
            let target = if self.dry_run(p) {
                &mut shadow
            } else {
                &mut enforced
            };
            let target = target.get_or_insert_with(|| rbac_rules(action));
            self.add_policy(p, action, name_prefix, target);
        }
        (enforced, shadow)
    }

    /// Whether the policy is annotated `istio.io/dry-run` with a true value (Go `ParseBool`).
    fn dry_run(&mut self, p: &AuthorizationPolicy) -> bool {
        let Some(v) = p.metadata.annotations.get(DRY_RUN) else {
            return false;
        };
        match v.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => {
                self.diagnostics.push(Diagnostic::new(
                    p,
                    format!("metadata.annotations[{DRY_RUN}]"),
                    Error::InvalidDryRun(v.clone()),
                ));
                false
            }
        }
    }

    /// Adds one Envoy policy per buildable rule of `p` to `target`.
    fn add_policy(
        &mut self,
        p: &AuthorizationPolicy,
        action: Action,
        name_prefix: &str,
        target: &mut RbacRules,
    ) {
        let ns = p.metadata.namespace();
        let name = |i: usize| {
            format!(
                "{name_prefix}ns[{ns}]-policy[{}]-rule[{i}]",
                p.metadata.name
            )
        };
        let rules = p.spec.rules.as_deref().unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let mut model = match Model::new(i, rule) {
                Ok(m) => m,
                Err((path, e)) => {
                    self.diagnostics.push(Diagnostic::new(p, path, e));
                    continue;
                }
            };
            model.migrate_trust_domains(&self.trust_domains);
            let mut g = Generator {
                policy: p,
                rule: i,
                chain: self.chain,
                action,
                diagnostics: &mut self.diagnostics,
            };
            if let Some(policy) = g.policy(&model) {
                target.policies.insert(name(i), policy);
            }
        }
        if rules.is_empty() {
            target.policies.insert(name(0), match_never());
        }
    }

    /// The CUSTOM filters: per provider, sorted by name.
    fn custom(&mut self, policies: &[&AuthorizationPolicy], mesh: &MeshConfig) -> Vec<Out> {
        if policies.is_empty() {
            return Vec::new();
        }
        let mut by_provider: BTreeMap<String, Vec<&AuthorizationPolicy>> = BTreeMap::new();
        for p in policies {
            let provider = p.spec.provider.as_ref().map_or("", |x| x.name.as_str());
            by_provider.entry(provider.to_string()).or_default().push(p);
        }
        let providers = ext_authz::resolve(mesh);
        let several = by_provider.len() > 1;
        let names: Vec<String> = by_provider.keys().cloned().collect();
        let mut out = Vec::new();
        for (provider, policies) in by_provider {
            let prefix = if provider.is_empty() {
                format!("{EXT_AUTHZ_MATCH_PREFIX}-")
            } else {
                format!("{EXT_AUTHZ_MATCH_PREFIX}-{provider}-")
            };
            let (enforced, dry_run) = self.rules(&policies, Action::Deny, &prefix);
            // istiod creates both rule sets as soon as a provider is seen.
            let enforced = enforced.unwrap_or_else(|| rbac_rules(Action::Deny));
            let resolved = if several {
                Err(Error::MultipleProviders(names.clone()))
            } else {
                match providers.get(&provider) {
                    None => Err(Error::UnknownProvider(provider.clone())),
                    Some(Err(reason)) => Err(Error::InvalidProvider {
                        name: provider.clone(),
                        reason: reason.clone(),
                    }),
                    Some(Ok(p)) => Ok(p),
                }
            };
            match resolved {
                Err(e) => {
                    for p in &policies {
                        self.diagnostics
                            .push(Diagnostic::new(*p, "spec.provider.name", e.clone()));
                    }
                    let mut deny = rbac_rules(Action::Deny);
                    deny.policies = enforced
                        .policies
                        .into_iter()
                        .map(|(k, v)| (k + BAD_CUSTOM_SUFFIX, v))
                        .collect();
                    out.push(Out::Rbac {
                        rules: Some(deny),
                        shadow: None,
                        shadow_prefix: String::new(),
                    });
                }
                // An HTTP-only provider has nothing to do on a TCP chain.
                Ok(p) if self.chain == Chain::Tcp && p.tcp.is_none() => {}
                Ok(p) => {
                    // Enforced CUSTOM rules are shadow rules (ext_authz enforces); dry-run ones
                    // become `rules`, which for CUSTOM also only feed the metadata (istiod).
                    out.push(Out::Rbac {
                        rules: dry_run.filter(|r| !r.policies.is_empty()),
                        shadow: Some(enforced),
                        shadow_prefix: EXT_AUTHZ_PREFIX.into(),
                    });
                    out.push(Out::ExtAuthz(Box::new(p.clone()), provider));
                }
            }
        }
        out
    }
}

fn rbac_rules(action: Action) -> RbacRules {
    RbacRules {
        action: action as i32,
        ..Default::default()
    }
}
