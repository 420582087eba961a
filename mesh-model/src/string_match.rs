//! [`StringMatch`]: Istio's `exact | prefix | regex` string matcher.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a string is matched: `{exact: "..."}`, `{prefix: "..."}` or `{regex: "..."}` (RE2).
///
/// Exactly one of the three keys must be set; anything else is a parse error naming the field.
///
/// ```
/// use mesh_model::StringMatch;
/// let m: StringMatch = serde_json::from_str(r#"{"prefix": "/api"}"#).unwrap();
/// assert_eq!(m, StringMatch::Prefix("/api".into()));
/// assert!(serde_json::from_str::<StringMatch>(r#"{"exact": "a", "prefix": "b"}"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StringMatch {
    /// The whole string equals this value.
    Exact(String),
    /// The string starts with this value.
    Prefix(String),
    /// The string matches this RE2 regular expression (anchored, as Envoy's `safe_regex`).
    Regex(String),
}

impl StringMatch {
    /// The pattern, whichever the kind.
    pub fn value(&self) -> &str {
        match self {
            StringMatch::Exact(v) | StringMatch::Prefix(v) | StringMatch::Regex(v) => v,
        }
    }

    /// The YAML key of this kind of match.
    pub fn kind(&self) -> &'static str {
        match self {
            StringMatch::Exact(_) => "exact",
            StringMatch::Prefix(_) => "prefix",
            StringMatch::Regex(_) => "regex",
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:?}", self.kind(), self.value())
    }
}

impl Serialize for StringMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.kind(), self.value())?;
        m.end()
    }
}

/// Reads `{exact|prefix|regex: value}`; `allow_empty` accepts `{}` and returns `None`.
fn read_match<'de, A: MapAccess<'de>>(
    mut map: A,
    allow_empty: bool,
) -> Result<Option<StringMatch>, A::Error> {
    let mut found: Option<StringMatch> = None;
    while let Some(key) = map.next_key::<String>()? {
        let value: String = map.next_value()?;
        let m = match key.as_str() {
            "exact" => StringMatch::Exact(value),
            "prefix" => StringMatch::Prefix(value),
            "regex" => StringMatch::Regex(value),
            other => {
                return Err(de::Error::unknown_field(
                    other,
                    &["exact", "prefix", "regex"],
                ));
            }
        };
        if let Some(prev) = &found {
            return Err(de::Error::custom(format!(
                "only one of exact, prefix or regex may be set (found {} and {})",
                prev.kind(),
                m.kind()
            )));
        }
        found = Some(m);
    }
    if found.is_none() && !allow_empty {
        return Err(de::Error::custom(
            "one of exact, prefix or regex must be set",
        ));
    }
    Ok(found)
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map with one of exact, prefix or regex")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StringMatch, A::Error> {
                // `read_match` with allow_empty = false never returns Ok(None).
                read_match(map, false)?.ok_or_else(|| de::Error::custom("empty match"))
            }
        }
        d.deserialize_map(V)
    }
}

/// A header or query-parameter matcher: a [`StringMatch`], or `{}` for "present".
///
/// Istio also reads `regex: "*"` as "present"; [`HeaderMatch::is_presence`] covers both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeaderMatch {
    /// `{}`: the header (or parameter) is present, whatever its value.
    Present,
    /// The value matches.
    Match(StringMatch),
}

impl HeaderMatch {
    /// Whether this matcher only checks presence (`{}` or `regex: "*"`).
    pub fn is_presence(&self) -> bool {
        match self {
            HeaderMatch::Present => true,
            HeaderMatch::Match(StringMatch::Regex(r)) => r == "*",
            HeaderMatch::Match(_) => false,
        }
    }

    /// The string matcher, if this is not a bare presence check.
    pub fn string_match(&self) -> Option<&StringMatch> {
        match self {
            HeaderMatch::Present => None,
            HeaderMatch::Match(m) => Some(m),
        }
    }
}

impl From<StringMatch> for HeaderMatch {
    fn from(m: StringMatch) -> Self {
        HeaderMatch::Match(m)
    }
}

impl Serialize for HeaderMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HeaderMatch::Present => s.serialize_map(Some(0))?.end(),
            HeaderMatch::Match(m) => m.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for HeaderMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map with at most one of exact, prefix or regex")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HeaderMatch, A::Error> {
                Ok(read_match(map, true)?.map_or(HeaderMatch::Present, HeaderMatch::Match))
            }
            // YAML `x-header:` with no value is null: treat as presence, like `{}`.
            fn visit_unit<E: de::Error>(self) -> Result<HeaderMatch, E> {
                Ok(HeaderMatch::Present)
            }
        }
        d.deserialize_any(V)
    }
}
