//! Filter-chain selection in Envoy's order.
//!
//! Envoy narrows the candidate chains one criterion at a time — destination port, destination
//! IP, server name, transport protocol, application protocols, direct source IP, source type,
//! source IP, source port — keeping at each step only the most specific chains that match, and
//! falling back to chains that leave the criterion unset only when no chain names a matching
//! value. It never backtracks: a connection that matched a specific port and then finds no
//! chain for its SNI under that port gets the default chain, not a chain without a port.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::listener::{FilterChain, FilterChainMatch, SourceType};
use crate::config::matcher::Cidr;

/// What is known about a connection when its chain is chosen.
#[derive(Clone, Debug)]
pub struct ConnectionInfo<'a> {
    /// Destination (after `original_dst`).
    pub destination: SocketAddr,
    /// Peer address.
    pub source: SocketAddr,
    /// The address of the peer socket itself (same as `source` without PROXY protocol).
    pub direct_source: SocketAddr,
    /// SNI from the TLS inspector (empty when none).
    pub server_name: &'a str,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'a str,
    /// ALPN values from the TLS inspector, or the HTTP inspector's protocol.
    pub application_protocols: &'a [String],
}

/// Picks the chain for a connection among `chains`, by Envoy's rules; `None` means the
/// listener's default chain (or closing the connection).
pub fn select<'c>(
    chains: &'c [Arc<FilterChain>],
    conn: &ConnectionInfo<'_>,
) -> Option<&'c Arc<FilterChain>> {
    let mut c: Vec<&'c Arc<FilterChain>> = chains.iter().collect();
    let m = |f: &'c Arc<FilterChain>| -> &'c FilterChainMatch { &f.filter_chain_match };

    // 1. destination_port
    narrow(&mut c, |f| match m(f).destination_port {
        Some(p) if p == conn.destination.port() => Some(1),
        Some(_) => None,
        None => Some(0),
    });
    // 2. prefix_ranges on the destination IP: the longest matching prefix.
    narrow(&mut c, |f| {
        cidr_rank(&m(f).prefix_ranges, conn.destination.ip())
    });
    // 3. server_names: exact, then the longest wildcard suffix, then none.
    narrow(&mut c, |f| sni_rank(&m(f).server_names, conn.server_name));
    // 4. transport_protocol
    narrow(&mut c, |f| match &m(f).transport_protocol {
        Some(t) if t == conn.transport_protocol => Some(1),
        Some(_) => None,
        None => Some(0),
    });
    // 5. application_protocols: the first of the connection's values that some chain names.
    let alpn = conn
        .application_protocols
        .iter()
        .find(|p| c.iter().any(|f| m(f).application_protocols.contains(p)));
    narrow(&mut c, |f| {
        let aps = &m(f).application_protocols;
        match alpn {
            _ if aps.is_empty() => Some(0),
            Some(p) if aps.contains(p) => Some(1),
            _ => None,
        }
    });
    // 6. direct_source_prefix_ranges
    narrow(&mut c, |f| {
        cidr_rank(&m(f).direct_source_prefix_ranges, conn.direct_source.ip())
    });
    // 7. source_type
    let local = is_local(conn);
    narrow(&mut c, |f| match m(f).source_type {
        SourceType::Any => Some(0),
        SourceType::SameIpOrLoopback if local => Some(1),
        SourceType::External if !local => Some(1),
        _ => None,
    });
    // 8. source_prefix_ranges
    narrow(&mut c, |f| {
        cidr_rank(&m(f).source_prefix_ranges, conn.source.ip())
    });
    // 9. source_ports
    narrow(&mut c, |f| {
        let ports = &m(f).source_ports;
        if ports.is_empty() {
            Some(0)
        } else if ports.contains(&conn.source.port()) {
            Some(1)
        } else {
            None
        }
    });
    c.into_iter().next()
}

/// Keeps the candidates with the highest rank; `None` ranks drop out.
fn narrow<'c, T>(candidates: &mut Vec<&'c T>, rank: impl Fn(&'c T) -> Option<u32>) {
    let best = candidates.iter().filter_map(|c| rank(c)).max();
    match best {
        None => candidates.clear(),
        Some(b) => candidates.retain(|c| rank(c) == Some(b)),
    }
}

/// 0 for an unset criterion, 1 + prefix length for the longest matching range, `None` when
/// ranges are set and none matches.
fn cidr_rank(ranges: &[Cidr], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges
        .iter()
        .filter(|r| r.contains(ip))
        .map(|r| 1 + u32::from(r.len))
        .max()
}

/// Exact server names rank above wildcards, longer wildcards above shorter ones.
fn sni_rank(names: &[String], sni: &str) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    if sni.is_empty() {
        return None;
    }
    names
        .iter()
        .filter_map(|n| {
            if n.eq_ignore_ascii_case(sni) {
                Some(u32::MAX)
            } else if let Some(suffix) = n.strip_prefix('*') {
                // `*.example.com` matches `a.example.com` and `a.b.example.com`.
                (sni.len() > suffix.len()
                    && sni.as_bytes()[sni.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes()))
                .then(|| 1 + u32::try_from(suffix.len()).unwrap_or(u32::MAX - 2))
            } else {
                None
            }
        })
        .max()
}

fn is_local(conn: &ConnectionInfo<'_>) -> bool {
    conn.source.ip().is_loopback() || conn.source.ip() == conn.destination.ip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::listener::{TcpCluster, TcpProxy, TerminalFilter};
    use crate::config::tls::DownstreamTransport;

    fn chain(name: &str, m: FilterChainMatch) -> Arc<FilterChain> {
        Arc::new(FilterChain {
            name: name.into(),
            filter_chain_match: m,
            transport: DownstreamTransport::Plain,
            filters: vec![],
            terminal: TerminalFilter::Tcp(Arc::new(TcpProxy {
                stat_prefix: name.into(),
                cluster: TcpCluster::Cluster(name.into()),
                idle_timeout: None,
                max_connect_attempts: 1,
                max_downstream_connection_duration: None,
            })),
        })
    }

    fn conn<'a>(dst: &str, sni: &'a str, tp: &'a str, alpn: &'a [String]) -> ConnectionInfo<'a> {
        ConnectionInfo {
            destination: dst.parse().unwrap(),
            source: "10.9.9.9:5555".parse().unwrap(),
            direct_source: "10.9.9.9:5555".parse().unwrap(),
            server_name: sni,
            transport_protocol: tp,
            application_protocols: alpn,
        }
    }

    fn pick(chains: &[Arc<FilterChain>], c: &ConnectionInfo<'_>) -> Option<String> {
        select(chains, c).map(|f| f.name.clone())
    }

    fn cidr(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    #[test]
    fn envoys_order_without_backtracking() {
        let chains = vec![
            chain(
                "port80-sni-a",
                FilterChainMatch {
                    destination_port: Some(80),
                    server_names: vec!["a.example".into()],
                    ..Default::default()
                },
            ),
            chain("any", FilterChainMatch::default()),
            chain(
                "wild",
                FilterChainMatch {
                    server_names: vec!["*.example".into()],
                    ..Default::default()
                },
            ),
            chain(
                "deep-wild",
                FilterChainMatch {
                    server_names: vec!["*.b.example".into()],
                    ..Default::default()
                },
            ),
            chain(
                "tls",
                FilterChainMatch {
                    destination_port: Some(443),
                    transport_protocol: Some("tls".into()),
                    ..Default::default()
                },
            ),
            chain(
                "h2",
                FilterChainMatch {
                    destination_port: Some(443),
                    transport_protocol: Some("tls".into()),
                    application_protocols: vec!["h2".into()],
                    ..Default::default()
                },
            ),
            chain(
                "net",
                FilterChainMatch {
                    destination_port: Some(3306),
                    prefix_ranges: vec![cidr("10.0.0.0/8")],
                    ..Default::default()
                },
            ),
            chain(
                "subnet",
                FilterChainMatch {
                    destination_port: Some(3306),
                    prefix_ranges: vec![cidr("10.1.0.0/16")],
                    ..Default::default()
                },
            ),
        ];
        let none: Vec<String> = vec![];
        let h2 = vec!["h2".to_string(), "http/1.1".to_string()];
        let h1 = vec!["http/1.1".to_string()];
        let table: Vec<(ConnectionInfo<'_>, Option<&str>)> = vec![
            (
                conn("1.2.3.4:80", "a.example", "tls", &none),
                Some("port80-sni-a"),
            ),
            // Port 80 is named by a chain: no fallback to the portless chains.
            (conn("1.2.3.4:80", "z.example", "tls", &none), None),
            (conn("1.2.3.4:81", "z.example", "tls", &none), Some("wild")),
            (
                conn("1.2.3.4:81", "x.b.example", "tls", &none),
                Some("deep-wild"),
            ),
            (conn("1.2.3.4:81", "", "raw_buffer", &none), Some("any")),
            (conn("1.2.3.4:81", "other.org", "tls", &none), Some("any")),
            (conn("1.2.3.4:443", "", "tls", &h2), Some("h2")),
            (conn("1.2.3.4:443", "", "tls", &h1), Some("tls")),
            (conn("1.2.3.4:443", "", "raw_buffer", &none), None),
            (
                conn("10.1.2.3:3306", "", "raw_buffer", &none),
                Some("subnet"),
            ),
            (conn("10.2.2.3:3306", "", "raw_buffer", &none), Some("net")),
            (conn("11.2.2.3:3306", "", "raw_buffer", &none), None),
        ];
        for (c, want) in &table {
            assert_eq!(pick(&chains, c).as_deref(), *want, "{c:?}");
        }
    }

    #[test]
    fn source_criteria() {
        let chains = vec![
            chain(
                "from-6",
                FilterChainMatch {
                    source_prefix_ranges: vec![cidr("127.0.0.6/32")],
                    ..Default::default()
                },
            ),
            chain(
                "local",
                FilterChainMatch {
                    source_type: SourceType::SameIpOrLoopback,
                    ..Default::default()
                },
            ),
            chain("rest", FilterChainMatch::default()),
        ];
        let none: Vec<String> = vec![];
        let mut c = conn("127.0.0.1:80", "", "raw_buffer", &none);
        c.source = "127.0.0.6:1234".parse().unwrap();
        // source_type (step 7) comes before source_prefix_ranges (step 8).
        assert_eq!(pick(&chains, &c).as_deref(), Some("local"));
        c.source = "10.0.0.1:1".parse().unwrap();
        assert_eq!(pick(&chains, &c).as_deref(), Some("rest"));
    }
}
