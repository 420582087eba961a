//! Connection pools: one per host and upstream protocol (and SNI), owned by the cluster, as
//! Envoy's are.
//!
//! hyper-util's legacy client pools by authority and has no connection limit, pending queue
//! or per-cluster accounting, so the pool is written on hyper's connection API: HTTP/1.1
//! connections serve one request at a time and go back to an idle list when the response
//! body ends; a request that finds no idle connection waits as *pending* (Envoy's
//! `max_pending_requests`) while a new connection is made, if `max_connections` allows one,
//! or until one frees up. HTTP/2 shares one connection per host for every request.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;

use crate::body::Body;
use crate::classify::Failure;
use crate::config::cluster::TcpKeepalive;
use crate::config::http::Http2Options;
use crate::stats::{Counter, Gauge};

/// A guard that holds one unit of a circuit-breaker resource until dropped.
pub type Permit = Box<dyn Send + Sync>;

/// Circuit-breaker admission the pool asks before opening a connection or queueing.
pub trait Admission: Send + Sync {
    /// A connection slot (`max_connections`), or `None` when at the limit.
    fn connection(&self) -> Option<Permit>;
    /// A pending-request slot (`max_pending_requests`), or `None` when at the limit.
    fn pending(&self) -> Option<Permit>;
}

/// Connection-level stats of a cluster (shared by its pools).
#[derive(Clone, Debug, Default)]
pub struct PoolStats {
    /// `upstream_cx_total`.
    pub cx_total: Counter,
    /// `upstream_cx_active`.
    pub cx_active: Gauge,
    /// `upstream_cx_http1_total`.
    pub cx_http1_total: Counter,
    /// `upstream_cx_http2_total`.
    pub cx_http2_total: Counter,
    /// `upstream_cx_connect_fail`.
    pub cx_connect_fail: Counter,
    /// `upstream_cx_connect_timeout`.
    pub cx_connect_timeout: Counter,
    /// `upstream_cx_destroy`.
    pub cx_destroy: Counter,
    /// `upstream_cx_idle_timeout`.
    pub cx_idle_timeout: Counter,
    /// `upstream_cx_max_requests`.
    pub cx_max_requests: Counter,
    /// `upstream_cx_max_duration_reached`.
    pub cx_max_duration_reached: Counter,
    /// `upstream_cx_overflow`.
    pub cx_overflow: Counter,
    /// `upstream_rq_pending_total`.
    pub rq_pending_total: Counter,
    /// `upstream_rq_pending_active`.
    pub rq_pending_active: Gauge,
    /// `upstream_rq_pending_overflow`.
    pub rq_pending_overflow: Counter,
    /// `upstream_cx_tx_bytes_total` is not kept per byte; `upstream_cx_rx_bytes_total` neither.
    pub cx_connect_ms: Counter,
}

/// The upstream protocol of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

/// How a pool makes connections.
#[derive(Clone)]
pub struct ConnectParams {
    /// `connect_timeout`.
    pub connect_timeout: Duration,
    /// Source address to bind.
    pub bind: Option<SocketAddr>,
    /// TCP keepalive.
    pub keepalive: Option<TcpKeepalive>,
    /// TLS; `None` = plaintext.
    pub tls: Option<TlsConnect>,
    /// Close connections idle this long.
    pub idle_timeout: Option<Duration>,
    /// Requests per connection at most.
    pub max_requests_per_connection: Option<u32>,
    /// Close connections after this long (`max_connection_duration`).
    pub max_connection_duration: Option<Duration>,
    /// HTTP/2 settings.
    pub http2: Http2Options,
    /// Stats.
    pub stats: PoolStats,
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("connect_timeout", &self.connect_timeout)
            .field("bind", &self.bind)
            .field("tls", &self.tls.as_ref().map(|t| t.name.clone()))
            .finish_non_exhaustive()
    }
}

/// How a pool opens TLS.
#[derive(Clone)]
pub struct TlsConnect {
    /// The connector (its config reads the current SDS material at each handshake).
    pub connector: tokio_rustls::TlsConnector,
    /// The server name: the SNI, or an IP address (no SNI).
    pub name: rustls_pki_types::ServerName<'static>,
    /// The cluster's `ssl.*` stats.
    pub stats: crate::tls::SslStats,
}

/// What tells a host's pools apart: the protocol and the SNI.
type PoolKey = (PoolProtocol, Option<String>);

/// A host's pools, by protocol and SNI.
#[derive(Debug, Default)]
pub struct HostPools {
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    counters: Arc<HostCounters>,
}

/// A host's own connection counters, across its pools (Envoy's per-host `cx_total` and
/// `cx_connect_fail` in `/clusters`).
#[derive(Debug, Default)]
pub struct HostCounters {
    cx_total: std::sync::atomic::AtomicU64,
    cx_connect_fail: std::sync::atomic::AtomicU64,
}

impl HostCounters {
    /// `(cx_total, cx_connect_fail)`.
    pub fn snapshot(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.cx_total.load(Relaxed),
            self.cx_connect_fail.load(Relaxed),
        )
    }

    fn add(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl HostPools {
    /// The pool for `key`, made with `params` if new.
    pub fn get(
        &self,
        protocol: PoolProtocol,
        sni: Option<&str>,
        params: impl FnOnce() -> ConnectParams,
    ) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .entry((protocol, sni.map(str::to_string)))
            .or_insert_with(|| Arc::new(Pool::new(protocol, params(), self.counters.clone())))
            .clone()
    }

    /// The host's connection counters.
    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// Drops every pool (closing idle connections; busy ones close when done).
    pub fn clear(&self) {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Open connections of all pools.
    pub fn connections(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.values().map(|p| p.connections()).sum()
    }
}

/// Counts a request in `upstream_rq_pending_active` while it lives.
struct PendingGauge<'a>(&'a Gauge);

impl<'a> PendingGauge<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for PendingGauge<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A connection pool to one host.
#[derive(Debug)]
pub struct Pool {
    protocol: PoolProtocol,
    params: ConnectParams,
    state: Mutex<PoolState>,
    host: Arc<HostCounters>,
}

#[derive(Default)]
struct PoolState {
    /// Idle HTTP/1.1 connections, most recently used last.
    idle: Vec<H1Conn>,
    /// The shared HTTP/2 connection.
    h2: Option<H2Conn>,
    /// Connections being made.
    connecting: usize,
    /// Open connections.
    open: usize,
    /// Requests waiting for a connection, oldest first.
    waiters: VecDeque<Waiter>,
}

impl std::fmt::Debug for PoolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolState")
            .field("idle", &self.idle.len())
            .field("connecting", &self.connecting)
            .field("open", &self.open)
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

struct Waiter {
    tx: oneshot::Sender<Result<Conn, Failure>>,
    _pending: Permit,
}

/// An HTTP/1.1 connection checked out of (or idle in) its pool.
struct H1Conn {
    send: hyper::client::conn::http1::SendRequest<Body>,
    served: u32,
    _permit: Arc<ConnPermit>,
}

#[derive(Clone)]
struct H2Conn {
    send: hyper::client::conn::http2::SendRequest<Body>,
    served: Arc<std::sync::atomic::AtomicU32>,
    _permit: Arc<ConnPermit>,
}

/// What an open connection's handles share: its circuit-breaker slot, the requests in flight
/// on it and when it was last busy (for the idle timeout).
struct ConnPermit {
    _permit: Permit,
    stats: PoolStats,
    pool: Weak<Pool>,
    in_use: std::sync::atomic::AtomicUsize,
    last_active: Mutex<tokio::time::Instant>,
    /// `max_connection_duration` reached: no new requests.
    expired: std::sync::atomic::AtomicBool,
}

impl ConnPermit {
    /// Takes the connection off the pool's lists (it is closing).
    fn unlist(self: &Arc<Self>) {
        if let Some(pool) = self.pool.upgrade() {
            let mut st = pool.lock();
            st.idle.retain(|c| !Arc::ptr_eq(&c._permit, self));
            if st
                .h2
                .as_ref()
                .is_some_and(|h| Arc::ptr_eq(&h._permit, self))
            {
                st.h2 = None;
            }
        }
    }

    fn begin(self: &Arc<Self>) -> InUse {
        self.in_use
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InUse(self.clone())
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.stats.cx_active.dec();
        self.stats.cx_destroy.inc();
        if let Some(pool) = self.pool.upgrade() {
            let mut st = pool.lock();
            st.open = st.open.saturating_sub(1);
        }
    }
}

/// A request in flight on a connection.
struct InUse(Arc<ConnPermit>);

impl Drop for InUse {
    fn drop(&mut self) {
        *self.0.last_active.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        self.0
            .in_use
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

enum Conn {
    H1(H1Conn),
    H2(H2Conn),
}

/// Why a request could not be sent, with the reason Envoy would print.
#[derive(Debug)]
pub struct SendError {
    /// The classified failure.
    pub failure: Failure,
    /// The transport failure detail (TLS errors, connect errors).
    pub detail: Option<String>,
}

impl From<Failure> for SendError {
    fn from(failure: Failure) -> Self {
        SendError {
            failure,
            detail: None,
        }
    }
}

impl Pool {
    fn new(protocol: PoolProtocol, params: ConnectParams, host: Arc<HostCounters>) -> Pool {
        Pool {
            protocol,
            params,
            state: Mutex::new(PoolState::default()),
            host,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.lock().open
    }

    /// Sends `req` to `addr` over a pooled connection (made if needed and allowed).
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        admission: &dyn Admission,
        req: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        let conn = self.checkout(addr, admission).await?;
        match conn {
            Conn::H1(mut c) => {
                let req = to_h1(req);
                c.served += 1;
                let in_use = c._permit.begin();
                match c.send.send_request(req).await {
                    Ok(resp) => {
                        let reusable = self
                            .params
                            .max_requests_per_connection
                            .is_none_or(|max| c.served < max);
                        if !reusable {
                            self.params.stats.cx_max_requests.inc();
                        }
                        let pool = Arc::downgrade(self);
                        Ok(resp.map(|body| PooledBody {
                            inner: body,
                            ret: reusable.then_some(Return {
                                pool,
                                conn: Some(c),
                            }),
                            _in_use: Some(in_use),
                        }))
                    }
                    Err(e) => Err(classify_send(&e).into()),
                }
            }
            Conn::H2(c) => {
                let req = to_h2(req, self.params.tls.is_some());
                let n = c.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if self
                    .params
                    .max_requests_per_connection
                    .is_some_and(|max| n >= max)
                {
                    // Stop handing this connection out; it closes when its streams end.
                    let mut st = self.lock();
                    if st
                        .h2
                        .as_ref()
                        .is_some_and(|h| Arc::ptr_eq(&h.served, &c.served))
                    {
                        st.h2 = None;
                        self.params.stats.cx_max_requests.inc();
                    }
                }
                let mut send = c.send.clone();
                let in_use = c._permit.begin();
                match send.send_request(req).await {
                    Ok(resp) => Ok(resp.map(|body| PooledBody {
                        inner: body,
                        ret: None,
                        _in_use: Some(in_use),
                    })),
                    Err(e) => {
                        if send.is_closed() {
                            let mut st = self.lock();
                            if st
                                .h2
                                .as_ref()
                                .is_some_and(|h| Arc::ptr_eq(&h.served, &c.served))
                            {
                                st.h2 = None;
                            }
                        }
                        Err(classify_send(&e).into())
                    }
                }
            }
        }
    }

    async fn checkout(
        self: &Arc<Self>,
        addr: SocketAddr,
        admission: &dyn Admission,
    ) -> Result<Conn, SendError> {
        // Connections found closed are dropped after the lock is released: the last handle
        // of a connection takes the pool's lock to count it closed (`ConnPermit::drop`).
        let mut closed: Vec<Conn> = Vec::new();
        let rx = {
            let mut st = self.lock();
            match self.protocol {
                PoolProtocol::Http1 => {
                    while let Some(c) = st.idle.pop() {
                        if c.send.is_ready()
                            && !c._permit.expired.load(std::sync::atomic::Ordering::Relaxed)
                        {
                            drop(st);
                            drop(closed);
                            return Ok(Conn::H1(c));
                        }
                        closed.push(Conn::H1(c));
                    }
                }
                PoolProtocol::Http2 => {
                    if let Some(c) = &st.h2 {
                        if !c.send.is_closed() {
                            let c = c.clone();
                            drop(st);
                            drop(closed);
                            return Ok(Conn::H2(c));
                        }
                        if let Some(c) = st.h2.take() {
                            closed.push(Conn::H2(c));
                        }
                    }
                }
            }
            // Wait as a pending request, making a connection if none is on its way for us.
            let Some(pending) = admission.pending() else {
                self.params.stats.rq_pending_overflow.inc();
                return Err(Failure::Overflow.into());
            };
            let needs_connection = match self.protocol {
                PoolProtocol::Http1 => st.connecting < st.waiters.len() + 1,
                PoolProtocol::Http2 => st.connecting == 0,
            };
            if needs_connection {
                match admission.connection() {
                    Some(permit) => {
                        st.connecting += 1;
                        let pool = self.clone();
                        tokio::spawn(async move {
                            let r = pool.connect(addr, permit).await;
                            pool.connected(r);
                        });
                    }
                    None if st.waiters.is_empty() && st.connecting == 0 && st.open == 0 => {
                        // No connection will ever free up for this request.
                        self.params.stats.cx_overflow.inc();
                        return Err(Failure::Overflow.into());
                    }
                    None => self.params.stats.cx_overflow.inc(),
                }
            }
            self.params.stats.rq_pending_total.inc();
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(Waiter {
                tx,
                _pending: pending,
            });
            rx
        };
        drop(closed);
        // Pending until answered, or until the request is given up (timeout, client gone).
        let _pending = PendingGauge::new(&self.params.stats.rq_pending_active);
        let r = rx.await;
        match r {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err(Failure::ConnectionTermination {
                before_request: true,
            }
            .into()),
        }
    }

    /// A connection attempt finished.
    fn connected(self: &Arc<Self>, r: Result<Conn, Failure>) {
        let mut st = self.lock();
        st.connecting = st.connecting.saturating_sub(1);
        match r {
            Ok(Conn::H2(c)) => {
                st.h2 = Some(c.clone());
                // Every waiter shares the new connection.
                for w in st.waiters.drain(..) {
                    let _ = w.tx.send(Ok(Conn::H2(c.clone())));
                }
            }
            Ok(Conn::H1(c)) => {
                drop(st);
                self.release(c);
            }
            Err(f) => {
                // Envoy fails the pending requests when a connection attempt fails and no
                // other attempt is on its way for them.
                let keep = st.connecting;
                while st.waiters.len() > keep {
                    if let Some(w) = st.waiters.pop_front() {
                        let _ = w.tx.send(Err(f));
                    }
                }
            }
        }
    }

    /// An HTTP/1.1 connection is free: the oldest waiter gets it, else it goes idle.
    fn release(&self, c: H1Conn) {
        if c._permit.expired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut st = self.lock();
        let mut c = Some(c);
        while let Some(w) = st.waiters.pop_front() {
            if let Some(conn) = c.take() {
                match w.tx.send(Ok(Conn::H1(conn))) {
                    Ok(()) => return,
                    Err(Ok(Conn::H1(back))) => c = Some(back),
                    Err(_) => return,
                }
            }
        }
        if let Some(c) = c {
            st.idle.push(c);
        }
    }

    async fn connect(self: &Arc<Self>, addr: SocketAddr, permit: Permit) -> Result<Conn, Failure> {
        let p = &self.params;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|_| Failure::ConnectFailure)?;
        if let Some(bind) = p.bind
            && socket.bind(bind).is_err()
        {
            p.stats.cx_connect_fail.inc();
            HostCounters::add(&self.host.cx_connect_fail);
            return Err(Failure::ConnectFailure);
        }
        let tcp = match tokio::time::timeout(p.connect_timeout, socket.connect(addr)).await {
            Err(_) => {
                p.stats.cx_connect_timeout.inc();
                p.stats.cx_connect_fail.inc();
                HostCounters::add(&self.host.cx_connect_fail);
                return Err(Failure::ConnectTimeout);
            }
            Ok(Err(_)) => {
                p.stats.cx_connect_fail.inc();
                HostCounters::add(&self.host.cx_connect_fail);
                return Err(Failure::ConnectFailure);
            }
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        if let Some(ka) = p.keepalive {
            let mut k = socket2::TcpKeepalive::new();
            if let Some(t) = ka.time {
                k = k.with_time(t);
            }
            if let Some(i) = ka.interval {
                k = k.with_interval(i);
            }
            if let Some(n) = ka.probes {
                k = k.with_retries(n);
            }
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&k);
        }
        p.stats.cx_total.inc();
        HostCounters::add(&self.host.cx_total);
        p.stats.cx_active.inc();
        let permit = Arc::new(ConnPermit {
            _permit: permit,
            stats: p.stats.clone(),
            pool: Arc::downgrade(self),
            in_use: std::sync::atomic::AtomicUsize::new(0),
            last_active: Mutex::new(tokio::time::Instant::now()),
            expired: std::sync::atomic::AtomicBool::new(false),
        });
        self.lock().open += 1;
        match &p.tls {
            None => self.handshake(TokioIo::new(tcp), permit).await,
            Some(t) => {
                match tokio::time::timeout(
                    p.connect_timeout,
                    t.connector.connect(t.name.clone(), tcp),
                )
                .await
                {
                    Ok(Ok(tls)) => {
                        t.stats.succeeded(tls.get_ref().1);
                        self.handshake(TokioIo::new(tls), permit).await
                    }
                    Ok(Err(e)) => {
                        t.stats.failed(&e);
                        tracing::debug!(%addr, "TLS handshake failed: {e}");
                        p.stats.cx_connect_fail.inc();
                        HostCounters::add(&self.host.cx_connect_fail);
                        Err(Failure::ConnectFailure)
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        p.stats.cx_connect_fail.inc();
                        HostCounters::add(&self.host.cx_connect_fail);
                        Err(Failure::ConnectTimeout)
                    }
                }
            }
        }
    }

    async fn handshake<T>(
        self: &Arc<Self>,
        io: TokioIo<T>,
        permit: Arc<ConnPermit>,
    ) -> Result<Conn, Failure>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let p = &self.params;
        let idle = p.idle_timeout;
        let max_duration = p.max_connection_duration;
        match self.protocol {
            PoolProtocol::Http1 => {
                let (send, conn) = hyper::client::conn::http1::Builder::new()
                    .handshake::<_, Body>(io)
                    .await
                    .map_err(|_| Failure::ConnectFailure)?;
                p.stats.cx_http1_total.inc();
                let guard = permit.clone();
                // `with_upgrades`: a 101 response hands the connection to the router (WebSocket).
                tokio::spawn(drive(conn.with_upgrades(), idle, max_duration, guard));
                Ok(Conn::H1(H1Conn {
                    send,
                    served: 0,
                    _permit: permit,
                }))
            }
            PoolProtocol::Http2 => {
                let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
                b.initial_stream_window_size(p.http2.initial_stream_window_size)
                    .initial_connection_window_size(p.http2.initial_connection_window_size)
                    .max_concurrent_reset_streams(1024)
                    .timer(hyper_util::rt::TokioTimer::new());
                let (send, conn) = b
                    .handshake::<_, Body>(io)
                    .await
                    .map_err(|_| Failure::ConnectFailure)?;
                p.stats.cx_http2_total.inc();
                let guard = permit.clone();
                tokio::spawn(drive(conn, idle, max_duration, guard));
                Ok(Conn::H2(H2Conn {
                    send,
                    served: Arc::new(std::sync::atomic::AtomicU32::new(0)),
                    _permit: permit,
                }))
            }
        }
    }
}

/// Drives a connection until it closes, until no request has used it for `idle`, or until it
/// has lived `max_duration` (then it takes no new requests and closes once the last ends).
async fn drive<F>(
    conn: F,
    idle: Option<Duration>,
    max_duration: Option<Duration>,
    permit: Arc<ConnPermit>,
) where
    F: std::future::Future + Send,
{
    if idle.is_none() && max_duration.is_none() {
        let _ = conn.await;
        return;
    }
    tokio::pin!(conn);
    let far = Duration::from_secs(u64::from(u32::MAX));
    let expires = tokio::time::Instant::now() + max_duration.unwrap_or(far);
    let mut expired = false;
    loop {
        let busy = permit.in_use.load(std::sync::atomic::Ordering::Relaxed) > 0;
        let last = *permit.last_active.lock().unwrap_or_else(|p| p.into_inner());
        let next = if expired {
            // Waiting for the last request: look again shortly.
            tokio::time::Instant::now() + Duration::from_millis(50)
        } else {
            expires.min(last + idle.unwrap_or(far))
        };
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep_until(next) => {
                let now = tokio::time::Instant::now();
                if !expired && now >= expires {
                    expired = true;
                    permit.expired.store(true, std::sync::atomic::Ordering::Relaxed);
                    permit.stats.cx_max_duration_reached.inc();
                    permit.unlist();
                }
                let busy_now = permit.in_use.load(std::sync::atomic::Ordering::Relaxed) > 0;
                if expired {
                    if !busy_now {
                        return;
                    }
                    continue;
                }
                let last_now = *permit.last_active.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(idle) = idle {
                    if !busy_now && last_now + idle <= now {
                        permit.stats.cx_idle_timeout.inc();
                        permit.unlist();
                        return;
                    }
                    if busy && busy_now {
                        // Look again one period after it was last seen busy.
                        *permit.last_active.lock().unwrap_or_else(|p| p.into_inner()) = now;
                    }
                }
            }
        }
    }
}

/// Origin-form URI and a Host header for HTTP/1.1.
fn to_h1(mut req: Request<Body>) -> Request<Body> {
    if let Some(auth) = req.uri().authority().cloned()
        && !req.headers().contains_key(http::header::HOST)
        && let Ok(v) = http::HeaderValue::from_str(auth.as_str())
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if let Ok(u) = pq.parse::<Uri>() {
        *req.uri_mut() = u;
    }
    *req.version_mut() = Version::HTTP_11;
    req
}

/// Absolute URI (scheme and authority from the Host header) for HTTP/2.
fn to_h2(mut req: Request<Body>, tls: bool) -> Request<Body> {
    let host = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_string));
    let auth = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or(host)
        .unwrap_or_else(|| "localhost".into());
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let scheme = if tls { "https" } else { "http" };
    if let Ok(u) = format!("{scheme}://{auth}{pq}").parse::<Uri>() {
        *req.uri_mut() = u;
    }
    *req.version_mut() = Version::HTTP_2;
    req
}

fn classify_send(e: &hyper::Error) -> Failure {
    use std::error::Error as _;
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h2) = s.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return Failure::RefusedStream;
        }
        src = s.source();
    }
    if e.is_canceled() || e.is_closed() || e.is_incomplete_message() {
        Failure::ConnectionTermination {
            before_request: false,
        }
    } else if e.is_parse() {
        Failure::ProtocolError
    } else {
        Failure::Reset {
            before_request: false,
        }
    }
}

/// A response body that puts its HTTP/1.1 connection back in the pool when it ends.
pub struct PooledBody {
    inner: Incoming,
    ret: Option<Return>,
    _in_use: Option<InUse>,
}

struct Return {
    pool: Weak<Pool>,
    conn: Option<H1Conn>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(mut r) = self.ret.take()
            && let (Some(pool), Some(mut conn)) = (r.pool.upgrade(), r.conn.take())
        {
            // The connection is ready for its next request once hyper has seen the end
            // of this response; usually at once, else shortly.
            if conn.send.is_ready() {
                pool.release(conn);
            } else {
                tokio::spawn(async move {
                    if conn.send.ready().await.is_ok() {
                        pool.release(conn);
                    }
                });
            }
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.ret = None,
            _ => {
                if self.inner.is_end_stream() {
                    self.give_back();
                }
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Unlimited;

    impl Admission for Unlimited {
        fn connection(&self) -> Option<Permit> {
            Some(Box::new(()))
        }

        fn pending(&self) -> Option<Permit> {
            Some(Box::new(()))
        }
    }

    /// An upstream that answers one keep-alive request per connection and closes it once
    /// `close` holds `true` (a watch, so a close sent before the task waits is not lost).
    async fn closes_when_told(
        close: tokio::sync::watch::Receiver<bool>,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut close = close.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = close.wait_for(|closed| *closed).await;
                });
            }
        });
        (addr, accepted)
    }

    /// Polls `f` every few milliseconds until it holds (at most 10 s).
    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let wait = async {
            while !f() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    /// A pooled HTTP/1.1 connection the upstream closed while it was idle is replaced. Its
    /// last handle is dropped outside the pool's lock: dropping it takes that lock to count the
    /// connection closed, and used to deadlock the worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_idle_connection_is_replaced() {
        let (close, closed) = tokio::sync::watch::channel(false);
        let (addr, accepted) = closes_when_told(closed).await;
        let pools = HostPools::default();
        let pool = pools.get(PoolProtocol::Http1, None, || ConnectParams {
            connect_timeout: Duration::from_secs(1),
            bind: None,
            keepalive: None,
            tls: None,
            idle_timeout: None,
            max_requests_per_connection: None,
            max_connection_duration: None,
            http2: Http2Options::default(),
            stats: PoolStats::default(),
        });
        let sender = pool.clone();
        let get = move || {
            let pool = sender.clone();
            async move {
                let req = Request::builder()
                    .uri("/")
                    .header("host", "a")
                    .body(crate::body::empty())
                    .unwrap();
                let resp = pool.send(addr, &Unlimited, req).await.ok()?;
                let status = resp.status();
                resp.into_body().collect().await.ok()?;
                Some(status)
            }
        };
        assert_eq!(get().await, Some(http::StatusCode::OK));
        until("the connection to be idle", || pool.lock().idle.len() == 1).await;
        close.send_replace(true);
        // Its driver sees the close and ends: the idle entry holds the last handle.
        until("the connection's driver to end", || {
            pool.lock()
                .idle
                .first()
                .is_some_and(|c| Arc::strong_count(&c._permit) == 1)
        })
        .await;
        let second = tokio::spawn(async move { get().await });
        let status = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("a new connection is made, nothing hangs")
            .unwrap();
        assert_eq!(status, Some(http::StatusCode::OK));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
