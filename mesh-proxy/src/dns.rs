//! Name resolution for DNS clusters and the dynamic forward proxy.
//!
//! With resolvers from the bootstrap (`typed_dns_resolver_config`, c-ares `resolvers`), names
//! are asked over UDP from those servers (A, then AAAA); otherwise the system resolver is used.
//! A small client is written here rather than pulling in a full resolver crate: the proxy only
//! needs address records, with the answer's TTL ignored as Envoy's default refresh does.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::cluster::DnsLookupFamily;

/// Answers by (DNS cache name, host), with when they were fetched.
type Answers = HashMap<(String, String), (Vec<IpAddr>, tokio::time::Instant)>;

/// A resolver with a per-cache memory of answers.
#[derive(Debug, Default)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    cache: Mutex<Answers>,
}

/// How long a dynamic forward proxy answer is kept (Envoy's default `dns_refresh_rate`).
const CACHE_TTL: Duration = Duration::from_secs(60);

impl Resolver {
    /// A resolver asking `servers` (empty = the system's).
    pub fn new(servers: Vec<SocketAddr>) -> Resolver {
        Resolver {
            servers,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// One address for `host` (an IP literal is returned as is), through the named DNS
    /// cache (dynamic forward proxy).
    pub async fn resolve(
        &self,
        cache: &str,
        host: &str,
        family: DnsLookupFamily,
    ) -> Option<IpAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(ip);
        }
        let key = (cache.to_string(), host.to_ascii_lowercase());
        {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((ips, at)) = c.get(&key)
                && at.elapsed() < CACHE_TTL
            {
                return ips.first().copied();
            }
        }
        let ips = self.lookup(host, family).await;
        let first = ips.first().copied();
        if !ips.is_empty() {
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, (ips, tokio::time::Instant::now()));
        }
        first
    }

    /// Every address of `host`.
    pub async fn lookup(&self, host: &str, family: DnsLookupFamily) -> Vec<IpAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![ip];
        }
        let mut ips = if self.servers.is_empty() {
            match tokio::net::lookup_host((host, 0)).await {
                Ok(it) => it.map(|a| a.ip()).collect(),
                Err(_) => Vec::new(),
            }
        } else {
            let mut out = Vec::new();
            let want_v4 = !matches!(family, DnsLookupFamily::V6Only);
            let want_v6 = matches!(
                family,
                DnsLookupFamily::V6Only | DnsLookupFamily::All | DnsLookupFamily::Auto
            );
            if want_v4 {
                out.extend(self.query(host, 1).await);
            }
            if want_v6 && (out.is_empty() || matches!(family, DnsLookupFamily::All)) {
                out.extend(self.query(host, 28).await);
            }
            out
        };
        match family {
            DnsLookupFamily::V4Only => ips.retain(IpAddr::is_ipv4),
            DnsLookupFamily::V6Only => ips.retain(IpAddr::is_ipv6),
            DnsLookupFamily::V4Preferred | DnsLookupFamily::Auto => {
                ips.sort_by_key(|ip| {
                    if family == DnsLookupFamily::V4Preferred {
                        ip.is_ipv6()
                    } else {
                        ip.is_ipv4()
                    }
                });
            }
            DnsLookupFamily::All => {}
        }
        ips
    }

    async fn query(&self, host: &str, qtype: u16) -> Vec<IpAddr> {
        let id = fastrand::u16(..);
        let Some(q) = encode_query(id, host, qtype) else {
            return Vec::new();
        };
        for server in &self.servers {
            let bind: SocketAddr = if server.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(&q, server).await.is_err() {
                continue;
            }
            let mut buf = [0u8; 1500];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                    Ok(Ok((n, from))) if from == *server => {
                        if let Some(ips) = decode_answer(id, &buf[..n], qtype) {
                            return ips;
                        }
                    }
                    Ok(Ok(_)) => continue,
                    _ => break,
                }
            }
        }
        Vec::new()
    }
}

fn encode_query(id: u16, host: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + host.len());
    q.extend(id.to_be_bytes());
    q.extend([1, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in host.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| *l > 0 && *l < 64)?;
        q.push(len);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(1u16.to_be_bytes());
    Some(q)
}

fn decode_answer(id: u16, m: &[u8], qtype: u16) -> Option<Vec<IpAddr>> {
    if m.len() < 12 || u16::from_be_bytes([m[0], m[1]]) != id || m[2] & 0x80 == 0 {
        return None;
    }
    let qd = usize::from(u16::from_be_bytes([m[4], m[5]]));
    let an = usize::from(u16::from_be_bytes([m[6], m[7]]));
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(m, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(m, at)?;
        let rr = m.get(at..at + 10)?;
        let ty = u16::from_be_bytes([rr[0], rr[1]]);
        let len = usize::from(u16::from_be_bytes([rr[8], rr[9]]));
        let data = m.get(at + 10..at + 10 + len)?;
        at += 10 + len;
        match (ty, len) {
            (1, 4) if qtype == 1 => out.push(IpAddr::from([data[0], data[1], data[2], data[3]])),
            (28, 16) if qtype == 28 => {
                let b: [u8; 16] = data.try_into().ok()?;
                out.push(IpAddr::from(b));
            }
            _ => {}
        }
    }
    Some(out)
}

fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *m.get(at)?;
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        if len == 0 {
            return Some(at + 1);
        }
        at += 1 + usize::from(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_answer_round_trip() {
        let q = encode_query(7, "a.mesh.test", 1).unwrap();
        // Answer: the question echoed, one A record with a compressed name pointer.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9]);
        assert_eq!(
            decode_answer(7, &a, 1),
            Some(vec![IpAddr::from([127, 0, 0, 9])])
        );
        assert_eq!(decode_answer(8, &a, 1), None);
        assert!(encode_query(1, "bad..name", 1).is_none());
        assert_eq!(decode_answer(7, &a[..20], 1), None);
    }
}
