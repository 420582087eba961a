//! [`Protocol`]: what a port speaks, decided in one place (istiod's `protocol.Instance`).
//!
//! Istio's kinds carry protocols as strings (`ports[].protocol`); translation needs to know
//! whether a port is HTTP, HTTP/2, TLS or opaque TCP, or whether each connection must be
//! sniffed. [`Protocol::parse`] reads the strings as istiod does (case-insensitive; anything
//! unknown or empty is [`Protocol::Unsupported`], which means "sniff"), and
//! [`Protocol::from_kubernetes`] reads a Kubernetes Service port (its `appProtocol`, name and
//! number) as istiod's `ConvertProtocol` does.

use std::fmt;

/// A port's protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// HTTP/2 (h2c upstream).
    Http2,
    /// HTTP proxy (`CONNECT`).
    HttpProxy,
    /// gRPC (HTTP/2).
    Grpc,
    /// gRPC-Web (HTTP/2 upstream).
    GrpcWeb,
    /// TLS carrying HTTP; proxied by SNI like [`Protocol::Tls`].
    Https,
    /// Opaque TCP.
    Tcp,
    /// TLS, routed by SNI.
    Tls,
    /// MongoDB (proxied as TCP).
    Mongo,
    /// Redis (proxied as TCP).
    Redis,
    /// MySQL (proxied as TCP).
    Mysql,
    /// UDP (not proxied).
    Udp,
    /// Not declared or not known: each connection is sniffed (HTTP/1.1 and h2c go through the
    /// HTTP routes, anything else is proxied as TCP), as istiod's `UnsupportedProtocol`.
    #[default]
    Unsupported,
}

impl Protocol {
    /// Reads a protocol name as istiod does: case-insensitive; empty or unknown names are
    /// [`Protocol::Unsupported`].
    pub fn parse(s: &str) -> Protocol {
        const NAMES: &[(&str, Protocol)] = &[
            ("http", Protocol::Http),
            ("http2", Protocol::Http2),
            ("http_proxy", Protocol::HttpProxy),
            ("grpc", Protocol::Grpc),
            ("grpc-web", Protocol::GrpcWeb),
            ("https", Protocol::Https),
            ("tcp", Protocol::Tcp),
            ("tls", Protocol::Tls),
            ("mongo", Protocol::Mongo),
            ("redis", Protocol::Redis),
            ("mysql", Protocol::Mysql),
            ("udp", Protocol::Udp),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map_or(Protocol::Unsupported, |(_, p)| *p)
    }

    /// A Kubernetes Service port's protocol (istiod's `ConvertProtocol`): UDP ports are UDP;
    /// an `appProtocol` replaces the name (`kubernetes.io/h2c` is HTTP2, `kubernetes.io/ws`
    /// HTTP, `kubernetes.io/wss` HTTPS); a name starting `grpc-web` is gRPC-Web; otherwise the
    /// name up to its first `-` is parsed; an unknown name on port 25, 53, 3306 or 27017 is
    /// TCP, anywhere else [`Protocol::Unsupported`] (sniffed).
    pub fn from_kubernetes(
        name: &str,
        app_protocol: Option<&str>,
        port: u32,
        transport: &str,
    ) -> Protocol {
        if transport.eq_ignore_ascii_case("UDP") {
            return Protocol::Udp;
        }
        let name = match app_protocol {
            Some("kubernetes.io/h2c") => "http2",
            Some("kubernetes.io/ws") => "http",
            Some("kubernetes.io/wss") => "https",
            Some(p) => p,
            None => name,
        };
        let lower = name.to_ascii_lowercase();
        let p = if lower.starts_with("grpc-web") {
            Protocol::GrpcWeb
        } else {
            Protocol::parse(lower.split('-').next().unwrap_or_default())
        };
        match p {
            Protocol::Unsupported if matches!(port, 25 | 53 | 3306 | 27017) => Protocol::Tcp,
            p => p,
        }
    }

    /// istiod's name for it (`HTTP`, `GRPC-Web`, `UnsupportedProtocol`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Https => "HTTPS",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Udp => "UDP",
            Protocol::Unsupported => "UnsupportedProtocol",
        }
    }

    /// HTTP of some kind: routed by HTTP routes (HTTP, HTTP2, HTTP_PROXY, gRPC, gRPC-Web).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// Speaks HTTP/2 to the upstream (HTTP2, gRPC, gRPC-Web).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// TLS, routed by SNI (TLS, HTTPS).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Tls | Protocol::Https)
    }

    /// Proxied as TCP (TCP, HTTPS, TLS, Mongo, Redis, MySQL).
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::Mysql
        )
    }

    /// Sniffed per connection (not declared or not known).
    pub fn is_sniffed(self) -> bool {
        self == Protocol::Unsupported
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Protocol {
    fn from(s: &str) -> Protocol {
        Protocol::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol::{self, *};

    #[test]
    fn names_parse_case_insensitively_and_unknown_ones_are_sniffed() {
        for (s, want) in [
            ("HTTP", Http),
            ("http2", Http2),
            ("gRPC", Grpc),
            ("GRPC-WEB", GrpcWeb),
            ("Https", Https),
            ("tls", Tls),
            ("TCP", Tcp),
            ("MONGO", Mongo),
            ("redis", Redis),
            ("MySQL", Mysql),
            ("UDP", Udp),
            ("HTTP_PROXY", HttpProxy),
            ("", Unsupported),
            ("SCTP", Unsupported),
            ("http-8080", Unsupported),
        ] {
            assert_eq!(Protocol::parse(s), want, "{s:?}");
        }
        for p in [
            Http, Http2, HttpProxy, Grpc, GrpcWeb, Https, Tcp, Tls, Mongo, Redis, Mysql, Udp,
        ] {
            assert_eq!(Protocol::parse(p.as_str()), p, "{p} reads back");
        }
    }

    /// The reference's §1.3 table (istiod's `ConvertProtocol` cases).
    #[test]
    fn kubernetes_ports_follow_convert_protocol() {
        for (name, app, port, transport, want) in [
            ("http", None, 80, "TCP", Http),
            ("http-web", None, 80, "TCP", Http),
            ("HTTP2-x", None, 80, "TCP", Http2),
            ("grpc-web-ui", None, 80, "TCP", GrpcWeb),
            ("grpc-api", None, 80, "TCP", Grpc),
            ("https-admin", None, 443, "TCP", Https),
            ("tls", None, 443, "TCP", Tls),
            ("mongo", None, 27017, "TCP", Mongo),
            ("redis-main", None, 6379, "TCP", Redis),
            ("mysql", None, 3306, "TCP", Mysql),
            ("tcp-db", None, 5432, "TCP", Tcp),
            ("dns", None, 53, "UDP", Udp),
            ("http", None, 53, "UDP", Udp),
            ("web", None, 8080, "TCP", Unsupported),
            ("", None, 8080, "TCP", Unsupported),
            ("smtp", None, 25, "TCP", Tcp),
            ("dns-tcp", None, 53, "TCP", Tcp),
            ("db", None, 3306, "TCP", Tcp),
            ("x", None, 27017, "TCP", Tcp),
            ("web", Some("http"), 8080, "TCP", Http),
            ("http", Some("grpc"), 8080, "TCP", Grpc),
            ("tcp", Some("kubernetes.io/h2c"), 8080, "TCP", Http2),
            ("tcp", Some("kubernetes.io/ws"), 8080, "TCP", Http),
            ("tcp", Some("kubernetes.io/wss"), 8080, "TCP", Https),
            (
                "http-web",
                Some("kubernetes.io/foo"),
                8080,
                "TCP",
                Unsupported,
            ),
            ("sctp-x", None, 9000, "SCTP", Unsupported),
        ] {
            assert_eq!(
                Protocol::from_kubernetes(name, app, port, transport),
                want,
                "{name:?} appProtocol={app:?} port={port} {transport}"
            );
        }
    }

    #[test]
    fn families() {
        assert!(GrpcWeb.is_http() && GrpcWeb.is_http2() && !GrpcWeb.is_tcp());
        assert!(Https.is_tls() && Https.is_tcp() && !Https.is_http());
        assert!(Http.is_http() && !Http.is_http2());
        assert!(Unsupported.is_sniffed() && !Unsupported.is_tcp() && !Unsupported.is_http());
        assert!(!Udp.is_tcp() && !Udp.is_http());
    }
}
