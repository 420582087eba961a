//! The control plane's gRPC address as an agent is told it: Istio's `CA_ADDR` form `host:port`
//! (`istiod.istio-system.svc:15012`, `127.0.0.1:15010`, `[::1]:15010`) or a URL
//! (`http://host:port`, `https://host:port`).
//!
//! A bare `host:port` carries no scheme, so the caller decides it: Istio serves TLS on 15012
//! and plaintext on 15010, but the port alone proves nothing, so the rule here is the one the
//! agent can act on: **https when there is a root to verify the CA with, http otherwise**
//! ([`Scheme`] is the caller's default). A URL's scheme always wins.
//!
//! Everything that makes an address unusable is an [`AddrError`] that says what to write
//! instead: no port, an unknown scheme, a path, an IPv6 address without brackets, a host that is
//! neither a DNS name nor an IP address, and (with the `server` feature,
//! [`GrpcAddr::resolve`]) a host that does not resolve.
//!
//! ```
//! use mesh_identity::addr::{GrpcAddr, Scheme};
//!
//! let ca = GrpcAddr::parse("istiod.istio-system.svc:15012", Scheme::Https).unwrap();
//! assert_eq!(ca.to_string(), "https://istiod.istio-system.svc:15012");
//! let plain = GrpcAddr::parse("127.0.0.1:15010", Scheme::Http).unwrap();
//! assert_eq!(plain.to_string(), "http://127.0.0.1:15010");
//! // A URL says its own scheme.
//! assert!(GrpcAddr::parse("http://localhost:15010", Scheme::Https).unwrap().scheme() == Scheme::Http);
//! let err = GrpcAddr::parse("foo", Scheme::Http).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "expected host:port (Istio's CA_ADDR form) or http(s)://host:port"
//! );
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What a usable address looks like, for error messages.
const EXPECTED: &str = "expected host:port (Istio's CA_ADDR form) or http(s)://host:port";

/// Plaintext or TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plaintext HTTP/2 (Istio's port 15010).
    Http,
    /// TLS (Istio's port 15012).
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gRPC address that parsed: a scheme, a host (a DNS name or an IP address) and a port.
/// Displays as the URL tonic dials (`https://istiod.istio-system.svc:15012`, IPv6 in
/// brackets), which parses back to the same address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrpcAddr {
    scheme: Scheme,
    /// Without brackets for IPv6.
    host: String,
    port: u16,
}

/// Why an address cannot be used; each message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// Nothing was given.
    #[error("empty; {EXPECTED}")]
    Empty,
    /// Neither `host:port` nor a URL (no colon, or a path without a scheme).
    #[error("{EXPECTED}")]
    NotHostPort,
    /// A URL with a scheme other than `http` or `https`.
    #[error("unknown scheme '{scheme}://': {EXPECTED}")]
    UnknownScheme {
        /// The scheme as given.
        scheme: String,
    },
    /// No port after the host.
    #[error(
        "no port: {EXPECTED}, with the port always given (e.g. 127.0.0.1:15010 or https://istiod.istio-system.svc:15012)"
    )]
    MissingPort,
    /// The port is not a number from 1 to 65535.
    #[error("port '{port}' is not a number from 1 to 65535")]
    BadPort {
        /// The port as given.
        port: String,
    },
    /// Nothing before `:port`.
    #[error("no host before the port: {EXPECTED}")]
    MissingHost,
    /// The host is neither a DNS name nor an IP address.
    #[error(
        "host '{host}' is neither a DNS name nor an IP address (an IPv6 address goes in brackets: [::1]:15010)"
    )]
    BadHost {
        /// The host as given.
        host: String,
    },
    /// An IPv6 address without the brackets that tell it from the port.
    #[error("an IPv6 address needs brackets: write [{host}]:PORT")]
    Ipv6WithoutBrackets {
        /// The address as given.
        host: String,
    },
    /// A path, query, fragment or user name, which a gRPC address has no use for.
    #[error("'{part}' has no place in a gRPC address: write only host:port or http(s)://host:port")]
    ExtraParts {
        /// The part that is too much.
        part: String,
    },
    /// The host name does not resolve to any address.
    #[error("host '{host}' does not resolve ({reason}); check the name, or write an IP address")]
    Unresolvable {
        /// The host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
}

impl GrpcAddr {
    /// Parses `host:port` (taking `default` as the scheme) or `http(s)://host:port` (an
    /// optional trailing `/`). Surrounding whitespace is ignored; anything else that is not
    /// part of such an address is an error.
    pub fn parse(input: &str, default: Scheme) -> Result<GrpcAddr, AddrError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(AddrError::Empty);
        }
        let (scheme, authority, url) = match input.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    _ => {
                        return Err(AddrError::UnknownScheme {
                            scheme: scheme.to_string(),
                        });
                    }
                };
                (scheme, rest.strip_suffix('/').unwrap_or(rest), true)
            }
            None => (default, input, false),
        };
        if let Some(i) = authority.find(['/', '?', '#']) {
            return Err(if url {
                AddrError::ExtraParts {
                    part: authority[i..].to_string(),
                }
            } else {
                AddrError::NotHostPort
            });
        }
        if let Some(i) = authority.find('@') {
            return Err(AddrError::ExtraParts {
                part: authority[..=i].to_string(),
            });
        }
        let (host, port) = split_host_port(authority, url)?;
        Ok(GrpcAddr {
            scheme,
            host,
            port: parse_port(port)?,
        })
    }

    /// Plaintext or TLS.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether the address is dialled over TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// The host: a DNS name, or an IP address (IPv6 without brackets). It is the name a TLS
    /// server certificate must carry.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host and port as a socket address would be written (`[::1]:15010`).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves the host (an IP address is taken as it is), failing with
    /// [`AddrError::Unresolvable`] if it has no address or the resolver gives no answer within
    /// `timeout`. The addresses are not kept: connections resolve again, so a name whose
    /// addresses change (a Kubernetes Service) keeps working.
    #[cfg(feature = "server")]
    pub async fn resolve(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Vec<std::net::SocketAddr>, AddrError> {
        let unresolvable = |reason: String| AddrError::Unresolvable {
            host: self.host.clone(),
            reason,
        };
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        let found: Vec<_> = tokio::time::timeout(timeout, lookup)
            .await
            .map_err(|_| unresolvable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unresolvable(e.to_string()))?
            .collect();
        if found.is_empty() {
            return Err(unresolvable("no addresses".into()));
        }
        Ok(found)
    }
}

impl fmt::Display for GrpcAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority())
    }
}

/// `host:port`, `[v6]:port`; the host checked, the port left as text.
fn split_host_port(authority: &str, url: bool) -> Result<(String, &str), AddrError> {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(AddrError::BadHost {
                host: authority.to_string(),
            });
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(AddrError::BadHost {
                host: format!("[{host}]"),
            });
        }
        return match after.strip_prefix(':') {
            Some(port) => Ok((host.to_string(), port)),
            None if after.is_empty() => Err(AddrError::MissingPort),
            None => Err(AddrError::BadHost {
                host: authority.to_string(),
            }),
        };
    }
    if authority.parse::<Ipv6Addr>().is_ok() {
        return Err(AddrError::Ipv6WithoutBrackets {
            host: authority.to_string(),
        });
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(if url {
            AddrError::MissingPort
        } else {
            AddrError::NotHostPort
        });
    };
    if host.contains(':') {
        return Err(if host.parse::<Ipv6Addr>().is_ok() {
            AddrError::Ipv6WithoutBrackets {
                host: host.to_string(),
            }
        } else {
            AddrError::BadHost {
                host: host.to_string(),
            }
        });
    }
    if host.is_empty() {
        return Err(AddrError::MissingHost);
    }
    if host.parse::<Ipv4Addr>().is_err() && !is_dns_name(host) {
        return Err(AddrError::BadHost {
            host: host.to_string(),
        });
    }
    Ok((host.to_string(), port))
}

fn parse_port(port: &str) -> Result<u16, AddrError> {
    if port.is_empty() {
        return Err(AddrError::MissingPort);
    }
    match port.parse::<u16>() {
        // `parse` takes a leading `+`; a port does not.
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(AddrError::BadPort {
            port: port.to_string(),
        }),
    }
}

/// RFC 1123 host names (and `_`, which Kubernetes and SRV names use): labels of letters, digits,
/// `-` and `_`, 1 to 63 long, not starting or ending with `-`; at most 253 in all; one trailing
/// dot allowed.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(input: &str, default: Scheme) -> String {
        GrpcAddr::parse(input, default)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .to_string()
    }

    fn err(input: &str) -> AddrError {
        match GrpcAddr::parse(input, Scheme::Http) {
            Ok(a) => panic!("{input} parsed as {a}"),
            Err(e) => e,
        }
    }

    #[test]
    fn istio_ca_addr_takes_the_callers_scheme() {
        assert_eq!(
            ok("istiod.istio-system.svc:15012", Scheme::Https),
            "https://istiod.istio-system.svc:15012"
        );
        assert_eq!(
            ok("127.0.0.1:15010", Scheme::Http),
            "http://127.0.0.1:15010"
        );
        assert_eq!(ok("[::1]:15010", Scheme::Http), "http://[::1]:15010");
        assert_eq!(ok("  localhost:1 \n", Scheme::Https), "https://localhost:1");
        assert_eq!(ok("istiod.:15012", Scheme::Https), "https://istiod.:15012");
        let a = GrpcAddr::parse("[::1]:15010", Scheme::Https).unwrap();
        assert_eq!((a.host(), a.port(), a.is_tls()), ("::1", 15010, true));
        assert_eq!(a.authority(), "[::1]:15010");
    }

    #[test]
    fn a_url_says_its_own_scheme() {
        assert_eq!(
            ok("http://127.0.0.1:15010", Scheme::Https),
            "http://127.0.0.1:15010"
        );
        assert_eq!(
            ok("https://localhost:15012/", Scheme::Http),
            "https://localhost:15012"
        );
        assert_eq!(ok("HTTPS://[::1]:443", Scheme::Http), "https://[::1]:443");
    }

    #[test]
    fn unusable_addresses_say_what_to_write() {
        let expected = "expected host:port (Istio's CA_ADDR form) or http(s)://host:port";
        assert_eq!(err("foo"), AddrError::NotHostPort);
        assert_eq!(err("foo").to_string(), expected);
        assert_eq!(err("nonsense").to_string(), expected);
        assert_eq!(err("foo/bar:1"), AddrError::NotHostPort);
        assert_eq!(err(""), AddrError::Empty);
        assert_eq!(err("   ").to_string(), format!("empty; {expected}"));
        assert_eq!(
            err("grpc://istiod:15012").to_string(),
            format!("unknown scheme 'grpc://': {expected}")
        );
        assert_eq!(err("http://istiod"), AddrError::MissingPort);
        assert_eq!(err("istiod:"), AddrError::MissingPort);
        assert_eq!(err("[::1]"), AddrError::MissingPort);
        assert!(err("http://istiod").to_string().starts_with("no port: "));
        assert_eq!(
            err("istiod:http").to_string(),
            "port 'http' is not a number from 1 to 65535"
        );
        for port in ["0", "65536", "+1", "-1", "1.5"] {
            assert_eq!(
                err(&format!("istiod:{port}")),
                AddrError::BadPort { port: port.into() }
            );
        }
        assert_eq!(err(":15010"), AddrError::MissingHost);
        assert_eq!(
            err("::1:15010").to_string(),
            "an IPv6 address needs brackets: write [::1]:PORT"
        );
        assert_eq!(
            err("::1"),
            AddrError::Ipv6WithoutBrackets { host: "::1".into() }
        );
        assert_eq!(
            err("http://localhost:15010/istio.v1.auth"),
            AddrError::ExtraParts {
                part: "/istio.v1.auth".into()
            }
        );
        assert_eq!(
            err("https://user@istiod:15012"),
            AddrError::ExtraParts {
                part: "user@".into()
            }
        );
        for host in ["a..b", "-a", "a-", "sp ace", "[zz]", "a:b"] {
            assert!(
                matches!(err(&format!("{host}:1")), AddrError::BadHost { .. }),
                "{host}"
            );
        }
        assert!(matches!(err("[::1"), AddrError::BadHost { .. }));
        assert!(matches!(err("[::1]x:1"), AddrError::BadHost { .. }));
        assert!(matches!(err(&"a".repeat(64)), AddrError::NotHostPort));
        assert!(matches!(
            err(&format!("{}:1", "a".repeat(64))),
            AddrError::BadHost { .. }
        ));
    }

    #[cfg(feature = "server")]
    #[tokio::test]
    async fn resolution_failures_name_the_host() {
        let ip = GrpcAddr::parse("127.0.0.1:15010", Scheme::Http).unwrap();
        let found = ip.resolve(std::time::Duration::from_secs(5)).await.unwrap();
        assert_eq!(found, vec!["127.0.0.1:15010".parse().unwrap()]);
        // `.invalid` never resolves (RFC 6761).
        let bad = GrpcAddr::parse("nosuch.invalid:15012", Scheme::Https).unwrap();
        let e = bad
            .resolve(std::time::Duration::from_secs(20))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AddrError::Unresolvable { host, .. } if host == "nosuch.invalid"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("host 'nosuch.invalid' does not resolve ("),
            "{e}"
        );
    }

    proptest! {
        /// Any input parses or fails with an error, never a panic, and whatever parses
        /// displays as a URL that parses back to the same address.
        #[test]
        fn any_input_parses_or_fails_cleanly(input in ".{0,40}", tls in any::<bool>()) {
            let default = if tls { Scheme::Https } else { Scheme::Http };
            if let Ok(a) = GrpcAddr::parse(&input, default) {
                prop_assert_eq!(GrpcAddr::parse(&a.to_string(), Scheme::Http), Ok(a));
            }
        }

        #[test]
        fn host_port_shapes_round_trip(
            host in "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z0-9]{1,8}){0,3}",
            port in 1u16..,
            tls in any::<bool>(),
        ) {
            let default = if tls { Scheme::Https } else { Scheme::Http };
            let a = GrpcAddr::parse(&format!("{host}:{port}"), default).unwrap();
            prop_assert_eq!(a.host(), host.as_str());
            prop_assert_eq!(a.port(), port);
            prop_assert_eq!(a.is_tls(), tls);
        }
    }
}
