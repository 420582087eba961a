//! Matchers shared by routes, filter chains, faults, CORS and retries: Envoy's
//! `StringMatcher`, `HeaderMatcher`, `QueryParameterMatcher`, `RegexMatcher` and
//! `FractionalPercent`, with Envoy's matching rules.

use std::fmt;

use http::HeaderMap;
use http::header::HeaderName;

/// A compiled RE2-style regular expression that must match a whole string, as Envoy's
/// `RegexMatcher` does (`safe_regex` never matches a substring).
#[derive(Clone)]
pub struct Regex {
    pattern: String,
    full: regex::Regex,
    unanchored: regex::Regex,
}

impl Regex {
    /// Compiles `pattern` (RE2 syntax, which the `regex` crate follows closely and in linear
    /// time).
    pub fn new(pattern: &str) -> Result<Regex, regex::Error> {
        let full = regex::Regex::new(&format!("^(?:{pattern})$"))?;
        let unanchored = regex::Regex::new(pattern)?;
        Ok(Regex {
            pattern: pattern.to_string(),
            full,
            unanchored,
        })
    }

    /// Whether the whole of `s` matches.
    pub fn is_full_match(&self, s: &str) -> bool {
        self.full.is_match(s)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Replaces every match of the pattern in `s` with `substitution`, whose `\N` refer to
    /// capture groups (Envoy's `RegexMatchAndSubstitute`).
    pub fn replace_all(&self, s: &str, substitution: &str) -> String {
        // RE2's `\1` becomes the regex crate's `${1}`; a literal `$` must be doubled.
        let mut rep = String::with_capacity(substitution.len() + 4);
        let mut chars = substitution.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(d) if d.is_ascii_digit() => {
                        rep.push_str("${");
                        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                            rep.push(d);
                            chars.next();
                        }
                        rep.push('}');
                    }
                    Some('\\') => {
                        chars.next();
                        rep.push('\\');
                    }
                    _ => rep.push('\\'),
                },
                '$' => rep.push_str("$$"),
                c => rep.push(c),
            }
        }
        self.unanchored.replace_all(s, rep.as_str()).into_owned()
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regex({:?})", self.pattern)
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Regex) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Regex {}

/// What a [`StringMatcher`] compares with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringPattern {
    /// The whole string.
    Exact(String),
    /// A prefix.
    Prefix(String),
    /// A suffix.
    Suffix(String),
    /// A substring.
    Contains(String),
    /// A regular expression matching the whole string (`ignore_case` does not apply).
    Regex(Regex),
}

/// Envoy's `StringMatcher`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringMatcher {
    /// The pattern.
    pub pattern: StringPattern,
    /// Compare ASCII case-insensitively (not for regexes).
    pub ignore_case: bool,
}

impl StringMatcher {
    /// An exact, case-sensitive matcher.
    pub fn exact(s: impl Into<String>) -> StringMatcher {
        StringMatcher {
            pattern: StringPattern::Exact(s.into()),
            ignore_case: false,
        }
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let ic = self.ignore_case;
        match &self.pattern {
            StringPattern::Exact(p) => {
                if ic {
                    s.eq_ignore_ascii_case(p)
                } else {
                    s == p
                }
            }
            StringPattern::Prefix(p) => {
                s.len() >= p.len()
                    && if ic {
                        s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                    } else {
                        s.starts_with(p.as_str())
                    }
            }
            StringPattern::Suffix(p) => {
                s.len() >= p.len()
                    && if ic {
                        s.as_bytes()[s.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
                    } else {
                        s.ends_with(p.as_str())
                    }
            }
            StringPattern::Contains(p) => {
                if ic {
                    s.to_ascii_lowercase().contains(&p.to_ascii_lowercase())
                } else {
                    s.contains(p.as_str())
                }
            }
            StringPattern::Regex(r) => r.is_full_match(s),
        }
    }
}

/// How a [`HeaderMatcher`] tests a header's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMatch {
    /// A string matcher on the value (several values joined with `,`).
    String(StringMatcher),
    /// The value parses as a base-10 integer in `[start, end)`.
    Range {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
}

/// Envoy's `HeaderMatcher` (route matches, fault and retry conditions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatcher {
    /// Header name, lower case; `:authority`, `:path`, `:method` and `:scheme` name the
    /// pseudo-headers.
    pub name: String,
    /// The test.
    pub kind: HeaderMatch,
    /// Invert the result.
    pub invert: bool,
    /// A missing header is matched as an empty value (Istio's `withoutHeaders`).
    pub treat_missing_as_empty: bool,
}

/// The request's pseudo-headers, for matchers that name them.
#[derive(Clone, Copy, Debug)]
pub struct PseudoHeaders<'a> {
    /// `:authority` (the Host header in HTTP/1.1).
    pub authority: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// `:method`.
    pub method: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
}

impl HeaderMatcher {
    /// Whether the request's headers match, by Envoy's rules (`header_utility.cc`): values of
    /// a repeated header are joined with `,`; a missing header matches only `present: false`
    /// (or an inverted `present: true`) unless `treat_missing_as_empty` is set.
    pub fn matches(&self, headers: &HeaderMap, pseudo: &PseudoHeaders<'_>) -> bool {
        let value: Option<std::borrow::Cow<'_, str>> = match self.name.as_str() {
            ":authority" | "host" => Some(pseudo.authority.into()),
            ":path" => Some(pseudo.path.into()),
            ":method" => Some(pseudo.method.into()),
            ":scheme" => Some(pseudo.scheme.into()),
            name => joined(headers, name),
        };
        let value = match (value, self.treat_missing_as_empty) {
            (Some(v), _) => Some(v),
            (None, true) => Some("".into()),
            (None, false) => None,
        };
        let Some(value) = value else {
            return match self.kind {
                HeaderMatch::Present(p) => !p ^ self.invert,
                _ => false,
            };
        };
        let hit = match &self.kind {
            HeaderMatch::String(m) => m.matches(&value),
            HeaderMatch::Range { start, end } => {
                value.parse::<i64>().is_ok_and(|n| n >= *start && n < *end)
            }
            HeaderMatch::Present(p) => *p,
        };
        hit ^ self.invert
    }
}

/// The values of header `name` joined with `,` (Envoy's view of a repeated header), or `None`
/// when absent. Values that are not visible ASCII are compared as their lossy UTF-8 form.
pub fn joined<'a>(headers: &'a HeaderMap, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let mut values = headers.get_all(&name).iter();
    let first = values.next()?;
    let first_s = String::from_utf8_lossy(first.as_bytes());
    match values.next() {
        None => Some(first_s),
        Some(second) => {
            let mut s = first_s.into_owned();
            s.push(',');
            s.push_str(&String::from_utf8_lossy(second.as_bytes()));
            for v in values {
                s.push(',');
                s.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
            Some(s.into())
        }
    }
}

/// Envoy's `QueryParameterMatcher`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParameterMatcher {
    /// Parameter name (exact, case-sensitive).
    pub name: String,
    /// `None`: the parameter must be present; otherwise its first value must match.
    pub value: Option<StringMatcher>,
}

impl QueryParameterMatcher {
    /// Whether the query string (without `?`) matches. Only the first value of a repeated
    /// key counts; values are compared undecoded.
    pub fn matches(&self, query: &str) -> bool {
        let found = query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == self.name).then_some(v)
        });
        match (found, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(m)) => m.matches(v),
        }
    }
}

/// Envoy's `FractionalPercent`: fires when `random % denominator < numerator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FractionalPercent {
    /// Numerator (capped at the denominator when applied).
    pub numerator: u32,
    /// 100, 10,000 or 1,000,000.
    pub denominator: u32,
}

impl FractionalPercent {
    /// Always.
    pub const ALL: FractionalPercent = FractionalPercent {
        numerator: 100,
        denominator: 100,
    };
    /// Never (an unset percentage in Envoy's fault filter).
    pub const NONE: FractionalPercent = FractionalPercent {
        numerator: 0,
        denominator: 100,
    };

    /// Whether the event fires for the random value `random`.
    pub fn fires(&self, random: u64) -> bool {
        self.numerator >= self.denominator
            || random % u64::from(self.denominator.max(1)) < u64::from(self.numerator)
    }

    /// Draws a random value and tests it.
    pub fn sample(&self) -> bool {
        self.numerator >= self.denominator || (self.numerator > 0 && self.fires(fastrand::u64(..)))
    }
}

/// An IPv4 or IPv6 CIDR range (`prefix_ranges`, `source_prefix_ranges`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Network address.
    pub addr: std::net::IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Whether `ip` is inside the range. IPv4-mapped IPv6 addresses match IPv4 ranges.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let len = u32::from(self.len.min(32));
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let len = u32::from(self.len.min(128));
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo() -> PseudoHeaders<'static> {
        PseudoHeaders {
            authority: "a.example",
            path: "/p?x=1",
            method: "GET",
            scheme: "http",
        }
    }

    fn hm(name: &str, kind: HeaderMatch, invert: bool, missing_empty: bool) -> HeaderMatcher {
        HeaderMatcher {
            name: name.into(),
            kind,
            invert,
            treat_missing_as_empty: missing_empty,
        }
    }

    #[test]
    fn header_matchers_follow_envoys_missing_header_rules() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let p = pseudo();
        let exact = |v: &str| HeaderMatch::String(StringMatcher::exact(v));
        // (matcher, expected)
        let table = [
            (hm("x-a", exact("1,2"), false, false), true),
            (hm("x-a", exact("1"), false, false), false),
            (hm("x-b", exact("1"), false, false), false),
            (hm("x-b", exact("1"), true, false), false),
            (hm("x-b", exact(""), false, true), true),
            (hm("x-b", exact("1"), true, true), true),
            (hm("x-b", HeaderMatch::Present(false), false, false), true),
            (hm("x-b", HeaderMatch::Present(true), true, false), true),
            (hm("x-b", HeaderMatch::Present(true), false, false), false),
            (hm("x-a", HeaderMatch::Present(true), false, false), true),
            (hm(":method", exact("GET"), false, false), true),
            (hm(":path", exact("/p?x=1"), false, false), true),
            (
                hm(
                    "x-a",
                    HeaderMatch::Range { start: 0, end: 10 },
                    false,
                    false,
                ),
                false,
            ),
        ];
        for (i, (m, want)) in table.iter().enumerate() {
            assert_eq!(m.matches(&h, &p), *want, "row {i}: {m:?}");
        }
    }

    #[test]
    fn string_matchers() {
        let m = |p: StringPattern, ic: bool| StringMatcher {
            pattern: p,
            ignore_case: ic,
        };
        assert!(m(StringPattern::Prefix("/Api".into()), true).matches("/api/x"));
        assert!(!m(StringPattern::Prefix("/Api".into()), false).matches("/api/x"));
        assert!(m(StringPattern::Suffix(".COM".into()), true).matches("a.com"));
        assert!(m(StringPattern::Contains("mid".into()), false).matches("amidb"));
        let r = Regex::new("/v[0-9]+").unwrap();
        assert!(m(StringPattern::Regex(r.clone()), false).matches("/v12"));
        assert!(!m(StringPattern::Regex(r), false).matches("/v12/x"));
    }

    #[test]
    fn regex_substitution_uses_re2_groups() {
        let r = Regex::new("^/service/([^/]+)(/.*)$").unwrap();
        assert_eq!(
            r.replace_all("/service/foo/v1/api", "\\2/instance/\\1"),
            "/v1/api/instance/foo"
        );
        let r = Regex::new("o").unwrap();
        assert_eq!(r.replace_all("foo", "$"), "f$$");
    }

    #[test]
    fn query_parameters_use_the_first_value() {
        let m = QueryParameterMatcher {
            name: "a".into(),
            value: Some(StringMatcher::exact("1")),
        };
        assert!(m.matches("a=1&a=2"));
        assert!(!m.matches("a=2&a=1"));
        assert!(!m.matches("b=1"));
        let present = QueryParameterMatcher {
            name: "a".into(),
            value: None,
        };
        assert!(present.matches("x&a"));
    }

    #[test]
    fn fractions_and_cidrs() {
        let half = FractionalPercent {
            numerator: 50,
            denominator: 100,
        };
        assert!(half.fires(49) && !half.fires(50) && half.fires(149));
        assert!(!FractionalPercent::NONE.sample());
        assert!(FractionalPercent::ALL.sample());
        let c = Cidr {
            addr: "10.1.0.0".parse().unwrap(),
            len: 16,
        };
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        let all = Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            len: 0,
        };
        assert!(all.contains("1.2.3.4".parse().unwrap()));
    }
}
