//! Envoy matcher constructors with istiod's value conventions (istiod's `authz/matcher`).

use envoy_types::pb::envoy::config::rbac::v3::{Permission, Principal, permission, principal};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, OrMatcher, StringMatcher, ValueMatcher, list_matcher,
    metadata_matcher, string_matcher, value_matcher,
};
use mesh_model::StringMatch;

use super::{JWT_AUTHN, JWT_PAYLOAD};
use crate::pb::regex;

// === matcher constructors ===

pub(super) fn exact(v: &str) -> StringMatcher {
    crate::pb::string_matcher(&StringMatch::Exact(v.to_string()), false)
}

pub(super) fn prefix(v: &str) -> StringMatcher {
    crate::pb::string_matcher(&StringMatch::Prefix(v.to_string()), false)
}

pub(super) fn suffix(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Suffix(v.to_string())),
        ignore_case: false,
    }
}

pub(super) fn safe_regex(re: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(re))),
        ignore_case: false,
    }
}

/// istiod's `StringMatcherWithPrefix`: `*` → `.+`; `*x` → suffix (or a regex when there is a
/// prefix); `x*` → prefix; else exact, with `prefix` prepended.
pub(super) fn with_prefix(v: &str, pre: &str) -> StringMatcher {
    if v == "*" {
        safe_regex(".+")
    } else if let Some(rest) = v.strip_prefix('*') {
        if pre.is_empty() {
            suffix(rest)
        } else {
            safe_regex(&format!("{pre}.*{}", quote_meta(rest)))
        }
    } else if let Some(rest) = v.strip_suffix('*') {
        prefix(&format!("{pre}{rest}"))
    } else {
        exact(&format!("{pre}{v}"))
    }
}

/// A header matcher: `*` → present; `*x` → suffix; `x*` → prefix; else exact.
pub(super) fn header(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier as S;
    let m = |mut s: StringMatcher| {
        s.ignore_case = ignore_case;
        S::StringMatch(s)
    };
    let spec = if v == "*" {
        S::PresentMatch(true)
    } else if let Some(rest) = v.strip_prefix('*') {
        m(suffix(rest))
    } else if let Some(rest) = v.strip_suffix('*') {
        m(prefix(rest))
    } else {
        m(exact(v))
    };
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

pub(super) fn key(k: &str) -> metadata_matcher::PathSegment {
    metadata_matcher::PathSegment {
        segment: Some(metadata_matcher::path_segment::Segment::Key(k.into())),
    }
}

pub(super) fn string_value(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    }
}

pub(super) fn list_value(one_of: ValueMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(one_of))),
            },
        ))),
    }
}

/// One matcher as is, several as an `or_match`.
pub(super) fn or_value(mut matchers: Vec<ValueMatcher>) -> ValueMatcher {
    if matchers.len() == 1 {
        return matchers.remove(0);
    }
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: matchers,
        })),
    }
}

/// `payload.<claim>` of the JWT filter's metadata as a string.
pub(super) fn jwt_claim(claim: &str, m: StringMatcher) -> MetadataMatcher {
    MetadataMatcher {
        filter: JWT_AUTHN.into(),
        path: vec![key(JWT_PAYLOAD), key(claim)],
        value: Some(string_value(m)),
        invert: false,
    }
}

/// `payload.<claims…>` matching `values` whether the claim is a list or a string:
/// `or_match [list_match {one_of: V}, V]`.
pub(super) fn jwt_list(claims: &[&str], values: &[String]) -> MetadataMatcher {
    let v = or_value(
        values
            .iter()
            .map(|v| string_value(with_prefix(v, "")))
            .collect(),
    );
    MetadataMatcher {
        filter: JWT_AUTHN.into(),
        path: std::iter::once(JWT_PAYLOAD)
            .chain(claims.iter().copied())
            .map(key)
            .collect(),
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                value_matchers: vec![list_value(v.clone()), v],
            })),
        }),
        invert: false,
    }
}

pub(super) fn p(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

pub(super) fn p_any() -> Permission {
    p(permission::Rule::Any(true))
}

pub(super) fn p_and(rules: Vec<Permission>) -> Permission {
    p(permission::Rule::AndRules(permission::Set { rules }))
}

pub(super) fn p_or(rules: Vec<Permission>) -> Permission {
    p(permission::Rule::OrRules(permission::Set { rules }))
}

pub(super) fn p_not(rule: Permission) -> Permission {
    p(permission::Rule::NotRule(Box::new(rule)))
}

pub(super) fn id(identifier: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(identifier),
    }
}

pub(super) fn id_any() -> Principal {
    id(principal::Identifier::Any(true))
}

pub(super) fn id_and(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::AndIds(principal::Set { ids }))
}

pub(super) fn id_or(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::OrIds(principal::Set { ids }))
}

pub(super) fn id_not(p: Principal) -> Principal {
    id(principal::Identifier::NotId(Box::new(p)))
}

pub(super) fn authenticated(m: StringMatcher) -> Principal {
    id(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}

// istiod matches JWT claims with `metadata`, which Envoy deprecated in favour of
// `sourced_metadata`; keep istiod's output.
#[allow(deprecated)]
pub(super) fn metadata_id(m: MetadataMatcher) -> Principal {
    id(principal::Identifier::Metadata(m))
}

/// Go's `regexp.QuoteMeta` (escapes `\.+*?()|[]{}^$` and nothing else, unlike `regex::escape`).
pub(super) fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
