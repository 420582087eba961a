//! `envoy.filters.network.tcp_proxy`: bytes both ways to a cluster's host, with Envoy's
//! connect attempts, weighted clusters chosen once per connection, and the idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::classify::{Failure, Outcome};
use crate::cluster::runtime::HostRequest;
use crate::config::listener::{TcpCluster, TcpProxy};
use crate::server::Shared;
use crate::stats::{Counter, Gauge, Store};

/// A TCP proxy's stats (`tcp.PREFIX.`).
#[derive(Clone, Debug)]
pub struct TcpStats {
    /// `downstream_cx_total`.
    pub cx_total: Counter,
    /// `downstream_cx_no_route`.
    pub cx_no_route: Counter,
    /// `idle_timeout`.
    pub idle_timeout: Counter,
    /// `upstream_flush_active` stands in for active connections here: `downstream_cx_active`
    /// is not an Envoy TCP proxy stat, so the gauge is named as Envoy's.
    pub upstream_flush_active: Gauge,
    /// `downstream_cx_rx_bytes_total`.
    pub rx_bytes: Counter,
    /// `downstream_cx_tx_bytes_total`.
    pub tx_bytes: Counter,
}

impl TcpStats {
    /// Stats for `prefix`.
    pub fn new(store: &Store, prefix: &str) -> TcpStats {
        let p = format!("tcp.{prefix}.");
        TcpStats {
            cx_total: store.counter(format!("{p}downstream_cx_total")),
            cx_no_route: store.counter(format!("{p}downstream_cx_no_route")),
            idle_timeout: store.counter(format!("{p}idle_timeout")),
            upstream_flush_active: store.gauge(format!("{p}upstream_flush_active")),
            rx_bytes: store.counter(format!("{p}downstream_cx_rx_bytes_total")),
            tx_bytes: store.counter(format!("{p}downstream_cx_tx_bytes_total")),
        }
    }
}

/// Picks the cluster of a connection.
pub fn pick(cluster: &TcpCluster) -> Option<&str> {
    match cluster {
        TcpCluster::Cluster(c) => Some(c),
        TcpCluster::Weighted(w) => {
            let total: u64 = w.iter().map(|(_, wt)| u64::from(*wt)).sum();
            if total == 0 {
                return None;
            }
            let mut at = fastrand::u64(..total);
            for (name, wt) in w {
                if at < u64::from(*wt) {
                    return Some(name);
                }
                at -= u64::from(*wt);
            }
            None
        }
    }
}

/// Where a connection wants to go, beyond the cluster.
#[derive(Clone, Copy, Debug)]
pub struct TcpTarget {
    /// The connection's original destination.
    pub original_dst: SocketAddr,
    /// Resolved SNI destination for the SNI dynamic forward proxy.
    pub resolved: Option<SocketAddr>,
}

/// Proxies `down` to the cluster until either side closes, or the idle timeout.
pub async fn proxy<IO>(
    tcp: &TcpProxy,
    stats: &TcpStats,
    shared: &Shared,
    down: IO,
    target: TcpTarget,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    stats.cx_total.inc();
    let Some(name) = pick(&tcp.cluster) else {
        stats.cx_no_route.inc();
        return;
    };
    let Some(cluster) = shared.clusters.get(name) else {
        stats.cx_no_route.inc();
        return;
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut up = None;
    for _ in 0..tcp.max_connect_attempts.max(1) {
        let predicate = |h: &crate::cluster::Host| tried.contains(&h.address());
        let Some(host) = cluster.choose(&HostRequest {
            original_dst: Some(target.original_dst),
            resolved: target.resolved,
            should_select_another: (!tried.is_empty())
                .then_some(&predicate as &dyn Fn(&crate::cluster::Host) -> bool),
            host_selection_retry_max_attempts: 3,
            ..Default::default()
        }) else {
            break;
        };
        match cluster.connect_tcp(&host).await {
            Ok(s) => {
                up = Some((s, host));
                break;
            }
            Err(f) => {
                if f != Failure::Overflow {
                    cluster.report(&host, &Outcome::Failure(f));
                }
                tried.push(host.address());
            }
        }
    }
    let Some(((upstream, _permit), host)) = up else {
        return;
    };
    let _active = host.start_request();
    stats.upstream_flush_active.inc();
    let idle = tcp.idle_timeout;
    let (rx, tx, timed_out) = splice(down, upstream, idle).await;
    if timed_out {
        stats.idle_timeout.inc();
    }
    stats.rx_bytes.add(rx);
    stats.tx_bytes.add(tx);
    stats.upstream_flush_active.dec();
    drop(cluster);
    let _ = Arc::strong_count(&host);
}

/// Copies both ways until both directions end, or nothing moves for `idle`. Returns bytes
/// received from downstream, bytes sent to it, and whether the idle timeout fired.
pub async fn splice<A, B>(a: A, b: B, idle: Option<Duration>) -> (u64, u64, bool)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    let (mut rx, mut tx) = (0u64, 0u64);
    let idle = idle.unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut buf_a), if a_open => match r {
                Ok(0) | Err(_) => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                }
                Ok(n) => {
                    rx += n as u64;
                    if bw.write_all(&buf_a[..n]).await.is_err() {
                        break;
                    }
                    sleep.as_mut().reset(tokio::time::Instant::now() + idle);
                }
            },
            r = br.read(&mut buf_b), if b_open => match r {
                Ok(0) | Err(_) => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                }
                Ok(n) => {
                    tx += n as u64;
                    if aw.write_all(&buf_b[..n]).await.is_err() {
                        break;
                    }
                    sleep.as_mut().reset(tokio::time::Instant::now() + idle);
                }
            },
            _ = &mut sleep => return (rx, tx, true),
        }
    }
    (rx, tx, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splice_copies_both_ways_and_half_closes() {
        let (client, proxy_down) = tokio::io::duplex(1024);
        let (proxy_up, server) = tokio::io::duplex(1024);
        let t = tokio::spawn(splice(proxy_down, proxy_up, None));
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        cw.write_all(b"ping").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        sw.write_all(b"pong!").await.unwrap();
        sw.shutdown().await.unwrap();
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong!");
        assert_eq!(t.await.unwrap(), (4, 5, false));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_closes() {
        let (_client, proxy_down) = tokio::io::duplex(1024);
        let (proxy_up, _server) = tokio::io::duplex(1024);
        let r = splice(proxy_down, proxy_up, Some(Duration::from_secs(1))).await;
        assert_eq!(r, (0, 0, true));
    }

    #[test]
    fn weighted_pick() {
        let w = TcpCluster::Weighted(vec![("a".into(), 1), ("b".into(), 3)]);
        let n = 4000;
        let b = (0..n).filter(|_| pick(&w) == Some("b")).count();
        // 3/4 expected; binomial sd = sqrt(4000*0.75*0.25) ≈ 27; 5 sd bound.
        assert!((b as i64 - 3000).abs() < 140, "{b}");
    }
}
