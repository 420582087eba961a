//! SPIFFE IDs per the SPIFFE ID specification: `spiffe://TRUST-DOMAIN/PATH`.
//!
//! A trust domain is 1-255 characters of lowercase letters, digits, `.`, `-` and `_`; a path
//! is zero or more `/segment`s of letters, digits, `.`, `-` and `_`, none empty, `.` or `..`;
//! nothing else (no port, user info, query or fragment), at most 2048 bytes in all. Istio names
//! workloads `spiffe://TD/ns/NAMESPACE/sa/SERVICE-ACCOUNT`.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";
/// Longest SPIFFE ID, in bytes (the specification's limit for URIs).
pub const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID or trust domain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// Nothing to parse.
    #[error("empty SPIFFE ID")]
    Empty,
    /// The scheme is not `spiffe://`.
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    /// No trust domain after the scheme.
    #[error("missing trust domain")]
    MissingTrustDomain,
    /// A character a trust domain may not hold (upper case, `:`, `@`, `?`, `#`, ...).
    #[error(
        "trust domain character {0:?} is not allowed (lowercase letters, digits, '.', '-', '_')"
    )]
    BadTrustDomainChar(char),
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    /// `//` in the path, or a path of only `/`.
    #[error("path segments must not be empty")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("path segments must not be '.' or '..'")]
    DotSegment,
    /// A character a path may not hold (`?`, `#`, `%`, ...).
    #[error("path character {0:?} is not allowed (letters, digits, '.', '-', '_')")]
    BadPathChar(char),
    /// The path ends with `/`.
    #[error("path must not end with '/'")]
    TrailingSlash,
    /// Longer than 2048 bytes.
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    TooLong,
}

/// A trust domain name, such as `cluster.local`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain name (or the trust domain of a `spiffe://` ID).
    pub fn new(name: &str) -> Result<TrustDomain, SpiffeIdError> {
        if let Some(rest) = name.strip_prefix(SCHEME) {
            return Ok(SpiffeId::from_str(&format!("{SCHEME}{rest}"))?.trust_domain);
        }
        validate_trust_domain(name)?;
        Ok(TrustDomain(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://TD`, the ID of the trust domain itself (the URI SAN of a trust bundle's CA).
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            trust_domain: self.clone(),
            path: String::new(),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustDomain::new(s)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    match td
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(SpiffeIdError::BadTrustDomainChar(c)),
        None => Ok(()),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // The caller splits at the first '/', so a path always starts with one.
    let Some(rest) = path.strip_prefix('/') else {
        return Err(SpiffeIdError::EmptySegment);
    };
    if rest.is_empty() {
        return Err(SpiffeIdError::TrailingSlash);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err(if i + 1 == segments.len() {
                SpiffeIdError::TrailingSlash
            } else {
                SpiffeIdError::EmptySegment
            });
        }
        if *seg == "." || *seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(SpiffeIdError::BadPathChar(c));
        }
    }
    Ok(())
}

/// A SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or `/seg/seg...`.
    path: String,
}

impl SpiffeId {
    /// An ID from a trust domain and a path (`""` or `/a/b`).
    pub fn new(trust_domain: TrustDomain, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        validate_path(path)?;
        let id = SpiffeId {
            trust_domain,
            path: path.to_string(),
        };
        if id.to_string().len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(id)
    }

    /// Istio's workload identity `spiffe://TD/ns/NAMESPACE/sa/SERVICE-ACCOUNT`.
    pub fn istio(
        trust_domain: TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(
            trust_domain,
            &format!("/ns/{namespace}/sa/{service_account}"),
        )
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path: empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// For Istio IDs (`/ns/NS/sa/SA`), the namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// For Istio IDs (`/ns/NS/sa/SA`), the service account.
    pub fn service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let mut it = self.path.strip_prefix('/')?.split('/');
        match (it.next(), it.next(), it.next(), it.next(), it.next()) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(SpiffeId {
            trust_domain: TrustDomain(td.to_string()),
            path: path.to_string(),
        })
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_round_trip() {
        for s in [
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
            "spiffe://example.org/a/b.c/d-e/f_g/H1",
            "spiffe://a_b-c.d9/x",
        ] {
            let id: SpiffeId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        let id: SpiffeId = "spiffe://td/ns/shop/sa/web".parse().unwrap();
        assert_eq!(id.namespace(), Some("shop"));
        assert_eq!(id.service_account(), Some("web"));
        assert_eq!(
            SpiffeId::istio(TrustDomain::new("td").unwrap(), "shop", "web").unwrap(),
            id
        );
        assert_eq!(
            "spiffe://td/ns/shop"
                .parse::<SpiffeId>()
                .unwrap()
                .namespace(),
            None
        );
    }

    #[test]
    fn invalid_ids_say_why() {
        use SpiffeIdError::*;
        let long_td = format!("spiffe://{}", "a".repeat(256));
        let long_id = format!("spiffe://td/{}", "a".repeat(2048));
        for (s, want) in [
            ("", Empty),
            ("http://td/x", WrongScheme),
            ("SPIFFE://td/x", WrongScheme),
            ("spiffe:/td", WrongScheme),
            ("spiffe://", MissingTrustDomain),
            ("spiffe:///path", MissingTrustDomain),
            ("spiffe://Example.org", BadTrustDomainChar('E')),
            ("spiffe://td:8080/x", BadTrustDomainChar(':')),
            ("spiffe://user@td/x", BadTrustDomainChar('@')),
            ("spiffe://td?q=1", BadTrustDomainChar('?')),
            ("spiffe://td#frag", BadTrustDomainChar('#')),
            (long_td.as_str(), TrustDomainTooLong),
            ("spiffe://td/", TrailingSlash),
            ("spiffe://td/a/", TrailingSlash),
            ("spiffe://td//a", EmptySegment),
            ("spiffe://td/a/./b", DotSegment),
            ("spiffe://td/..", DotSegment),
            ("spiffe://td/a?x=1", BadPathChar('?')),
            ("spiffe://td/a#f", BadPathChar('#')),
            ("spiffe://td/a%20b", BadPathChar('%')),
            (long_id.as_str(), TooLong),
        ] {
            assert_eq!(s.parse::<SpiffeId>(), Err(want.clone()), "{s:?}");
        }
    }

    #[test]
    fn trust_domains() {
        assert_eq!(
            TrustDomain::new("cluster.local").unwrap().as_str(),
            "cluster.local"
        );
        assert_eq!(
            TrustDomain::new("spiffe://cluster.local/ns/a/sa/b")
                .unwrap()
                .to_string(),
            "cluster.local"
        );
        assert_eq!(
            TrustDomain::new("Cluster"),
            Err(SpiffeIdError::BadTrustDomainChar('C'))
        );
        assert_eq!(
            TrustDomain::new("td").unwrap().id().to_string(),
            "spiffe://td"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,300}") {
            let _ = s.parse::<SpiffeId>();
            let _ = TrustDomain::new(&s);
        }

        #[test]
        fn generated_ids_round_trip(
            td in "[a-z0-9._-]{1,40}",
            segs in proptest::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,10}", 0..6),
        ) {
            let path: String = segs.iter().map(|s| format!("/{s}")).collect();
            let s = format!("spiffe://{td}{path}");
            let id: SpiffeId = s.parse().unwrap();
            proptest::prop_assert_eq!(id.to_string(), s);
            proptest::prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
        }
    }
}
