//! Listeners: sockets, the original-destination handoff, listener filters, filter-chain
//! selection, and the chains' transport sockets and terminal filters.
//!
//! Bound listeners accept on every worker (one `SO_REUSEPORT` socket per worker, as Envoy
//! does). Listeners with `bind_to_port: false` (Istio's `0.0.0.0_8080`, `10.0.0.1_3306`) are
//! only entries in a table by address: a `use_original_dst` listener (`virtualOutbound`,
//! `virtualInbound`) that accepts a redirected connection hands it to the listener owning its
//! original destination (exact address first, then the wildcard address on that port), whose
//! listener filters and chains then apply. A listener update swaps its chains in place:
//! connections on chains that did not change keep running, those on removed or changed chains
//! drain.

pub mod inspect;
pub mod io;
pub mod select;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use self::inspect::{HttpSniff, TlsHello};
use self::io::PrefixedIo;
use crate::config::listener::{FilterChain, Listener, NetworkFilter, TerminalFilter};
use crate::config::tls::DownstreamTransport;
use crate::http::hcm::{ConnMeta, HcmRuntime};
use crate::server::Shared;
use crate::stats::{Counter, Gauge, Store};
use crate::tcp::{TcpStats, TcpTarget};

/// A filter chain ready to serve connections.
pub struct ChainRuntime {
    /// Its configuration.
    pub config: Arc<FilterChain>,
    tls: Option<Arc<crate::tls::ServerTls>>,
    terminal: Terminal,
    drain: watch::Sender<bool>,
}

impl std::fmt::Debug for ChainRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainRuntime")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

enum Terminal {
    Http(Arc<HcmRuntime>),
    Tcp(Arc<crate::config::listener::TcpProxy>, TcpStats),
}

impl ChainRuntime {
    /// Builds a chain: loads its TLS material (subscribing its SDS secrets) and prepares its
    /// terminal filter. `scope` is the listener's stats scope (`listener.ADDR.`), under which
    /// its `ssl.*` stats go.
    pub fn new(
        config: Arc<FilterChain>,
        shared: &Shared,
        scope: &str,
    ) -> Result<ChainRuntime, crate::tls::TlsError> {
        let tls = match &config.transport {
            DownstreamTransport::Plain => None,
            DownstreamTransport::Tls(t) => Some(Arc::new(crate::tls::ServerTls::new(
                t,
                &shared.secrets,
                crate::tls::SslStats::new(&shared.stats, scope),
            )?)),
        };
        let terminal = match &config.terminal {
            TerminalFilter::Http(hcm) => Terminal::Http(Arc::new(HcmRuntime::new(
                hcm.clone(),
                &shared.stats,
                |name| shared.routes.slot(name, &hcm.stat_prefix),
            ))),
            TerminalFilter::Tcp(t) => {
                Terminal::Tcp(t.clone(), TcpStats::new(&shared.stats, &t.stat_prefix))
            }
        };
        Ok(ChainRuntime {
            config,
            tls,
            terminal,
            drain: watch::channel(false).0,
        })
    }

    /// Its downstream TLS context, if it terminates TLS.
    pub fn tls(&self) -> Option<&Arc<crate::tls::ServerTls>> {
        self.tls.as_ref()
    }

    /// Tells this chain's connections to finish and close.
    pub fn drain(&self) {
        self.drain.send_replace(true);
    }

    /// The RDS route configuration names this chain waits for.
    pub fn rds_names(&self) -> Vec<String> {
        match &self.config.terminal {
            TerminalFilter::Http(h) => match &h.routes {
                crate::config::http::RouteSource::Rds(n) => vec![n.clone()],
                crate::config::http::RouteSource::Inline(_) => vec![],
            },
            TerminalFilter::Tcp(_) => vec![],
        }
    }
}

/// A listener's stats (`listener.ADDRESS.`).
#[derive(Clone, Debug)]
pub struct ListenerStats {
    /// `downstream_cx_total`.
    pub cx_total: Counter,
    /// `downstream_cx_active`.
    pub cx_active: Gauge,
    /// `no_filter_chain_match`.
    pub no_filter_chain_match: Counter,
    /// `downstream_listener_filter_error`.
    pub listener_filter_error: Counter,
}

/// A listener's stats scope, `listener.IP_PORT.`.
fn scope(l: &Listener) -> String {
    format!("listener.{}_{}.", l.address.ip(), l.address.port())
}

impl ListenerStats {
    fn new(store: &Store, l: &Listener) -> ListenerStats {
        let p = scope(l);
        ListenerStats {
            cx_total: store.counter(format!("{p}downstream_cx_total")),
            cx_active: store.gauge(format!("{p}downstream_cx_active")),
            no_filter_chain_match: store.counter(format!("{p}no_filter_chain_match")),
            listener_filter_error: store.counter(format!("{p}downstream_listener_filter_error")),
        }
    }
}

/// A listener's chains and settings, swapped as a whole on updates.
#[derive(Debug)]
pub struct ListenerRuntime {
    /// Its configuration.
    pub config: Arc<Listener>,
    /// Chains, parallel to `config.filter_chains`.
    pub chains: Vec<Arc<ChainRuntime>>,
    /// The default chain.
    pub default_chain: Option<Arc<ChainRuntime>>,
    /// Stats.
    pub stats: ListenerStats,
}

impl ListenerRuntime {
    /// Builds a listener runtime, reusing chains of `previous` whose configuration is the
    /// same (their connections keep running).
    pub fn new(
        config: Arc<Listener>,
        shared: &Shared,
        previous: Option<&ListenerRuntime>,
    ) -> Result<ListenerRuntime, crate::tls::TlsError> {
        let reuse = |c: &Arc<FilterChain>| -> Option<Arc<ChainRuntime>> {
            let prev = previous?;
            prev.chains
                .iter()
                .chain(prev.default_chain.iter())
                .find(|p| Arc::ptr_eq(&p.config, c) || *p.config == **c)
                .cloned()
        };
        let scope = scope(&config);
        let mut chains = Vec::with_capacity(config.filter_chains.len());
        for c in &config.filter_chains {
            chains.push(match reuse(c) {
                Some(r) => r,
                None => Arc::new(ChainRuntime::new(c.clone(), shared, &scope)?),
            });
        }
        let default_chain = match &config.default_filter_chain {
            Some(c) => Some(match reuse(c) {
                Some(r) => r,
                None => Arc::new(ChainRuntime::new(c.clone(), shared, &scope)?),
            }),
            None => None,
        };
        Ok(ListenerRuntime {
            stats: ListenerStats::new(&shared.stats, &config),
            config,
            chains,
            default_chain,
        })
    }

    /// Chains of `self` that `next` no longer has (to drain after a swap).
    fn dropped_by(&self, next: &ListenerRuntime) -> Vec<Arc<ChainRuntime>> {
        self.chains
            .iter()
            .chain(self.default_chain.iter())
            .filter(|c| {
                !next
                    .chains
                    .iter()
                    .chain(next.default_chain.iter())
                    .any(|n| Arc::ptr_eq(n, c))
            })
            .cloned()
            .collect()
    }

    fn drain_all(&self) {
        for c in self.chains.iter().chain(self.default_chain.iter()) {
            c.drain();
        }
    }
}

/// The data-plane threads: each runs a single-threaded runtime (Envoy's workers).
#[derive(Debug, Clone)]
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("worker_{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Workers { handles })
    }

    /// Uses the current tokio runtime as the only worker (tests, library mode).
    pub fn current() -> Workers {
        Workers {
            handles: vec![tokio::runtime::Handle::current()],
        }
    }

    /// The workers' runtimes.
    pub fn handles(&self) -> &[tokio::runtime::Handle] {
        &self.handles
    }
}

/// A listener's entry in the manager.
struct Entry {
    slot: Arc<ArcSwap<ListenerRuntime>>,
    /// Stops the accept loops of a bound listener.
    stop: Option<watch::Sender<bool>>,
    /// The bound address (port 0 resolved).
    bound: Option<SocketAddr>,
}

/// Every listener, by name and by address.
#[derive(Default)]
pub struct ListenerManager {
    by_name: Mutex<HashMap<String, Entry>>,
    by_addr: ArcSwap<HashMap<SocketAddr, Arc<ArcSwap<ListenerRuntime>>>>,
}

impl std::fmt::Debug for ListenerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerManager").finish_non_exhaustive()
    }
}

/// Why a listener could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    /// Its socket could not be bound.
    #[error("cannot bind '{addr}': {}", strerror(source))]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its TLS material did not load.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Sockets bound for a listener before it is installed (so that a listener that cannot bind
/// is rejected when it arrives, as Envoy does, even if it then warms).
#[derive(Debug)]
pub struct PreBound {
    addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    bound: SocketAddr,
}

impl ListenerManager {
    /// Binds the sockets `config` needs, unless the installed listener of that name already
    /// owns them. Fails when the address cannot be bound.
    pub fn prebind(
        &self,
        shared: &Shared,
        config: &Listener,
    ) -> Result<Option<PreBound>, ListenerError> {
        if !config.bind_to_port {
            return Ok(None);
        }
        {
            let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = by_name.get(&config.name) {
                let prev = e.slot.load();
                if prev.config.address == config.address && prev.config.bind_to_port {
                    return Ok(None);
                }
            }
        }
        let (sockets, bound) = bind_sockets(shared.workers.handles().len(), config.address)?;
        Ok(Some(PreBound {
            addr: config.address,
            sockets,
            bound,
        }))
    }

    /// Adds or updates a listener, using `prebound` sockets when given.
    pub fn upsert(
        &self,
        shared: &Arc<Shared>,
        config: Arc<Listener>,
        prebound: Option<PreBound>,
    ) -> Result<(), ListenerError> {
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = by_name.get(&config.name) {
            let prev = e.slot.load_full();
            let same_socket = prev.config.address == config.address
                && prev.config.bind_to_port == config.bind_to_port;
            if same_socket {
                let next = ListenerRuntime::new(config, shared, Some(&prev))?;
                for c in prev.dropped_by(&next) {
                    c.drain();
                }
                e.slot.store(Arc::new(next));
                return Ok(());
            }
        }
        let runtime = Arc::new(ListenerRuntime::new(config.clone(), shared, None)?);
        let slot = Arc::new(ArcSwap::new(runtime));
        let (stop, bound) = if config.bind_to_port {
            let pre = match prebound.filter(|p| p.addr == config.address) {
                Some(p) => p,
                None => {
                    let (sockets, bound) =
                        bind_sockets(shared.workers.handles().len(), config.address)?;
                    PreBound {
                        addr: config.address,
                        sockets,
                        bound,
                    }
                }
            };
            let (stop, bound) = Self::accept_loops(shared, &slot, pre);
            tracing::debug!(listener = %config.name, %bound, "listener bound");
            (Some(stop), Some(bound))
        } else {
            (None, None)
        };
        if let Some(old) = by_name.insert(
            config.name.clone(),
            Entry {
                slot: slot.clone(),
                stop,
                bound,
            },
        ) {
            Self::retire(old);
        }
        self.reindex(&by_name);
        Ok(())
    }

    /// Removes a listener: it stops accepting and its connections drain.
    pub fn remove(&self, name: &str) {
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = by_name.remove(name) {
            Self::retire(old);
        }
        self.reindex(&by_name);
    }

    /// The bound address of a listener (its port resolved when it asked for 0).
    pub fn bound_address(&self, name: &str) -> Option<SocketAddr> {
        self.by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .and_then(|e| e.bound)
    }

    /// The installed listeners' runtimes, by name.
    pub fn runtimes(&self) -> Vec<(String, Arc<ListenerRuntime>)> {
        let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = by_name
            .iter()
            .map(|(n, e)| (n.clone(), e.slot.load_full()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Names of the installed listeners.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    fn retire(old: Entry) {
        if let Some(stop) = old.stop {
            stop.send_replace(true);
        }
        old.slot.load().drain_all();
    }

    fn reindex(&self, by_name: &HashMap<String, Entry>) {
        let map = by_name
            .values()
            .map(|e| (e.slot.load().config.address, e.slot.clone()))
            .collect();
        self.by_addr.store(Arc::new(map));
    }

    /// The listener owning `addr`: exact, then the wildcard address on that port.
    fn lookup(&self, addr: SocketAddr) -> Option<Arc<ArcSwap<ListenerRuntime>>> {
        let map = self.by_addr.load();
        if let Some(l) = map.get(&addr) {
            return Some(l.clone());
        }
        let any: IpAddr = match addr.ip() {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        map.get(&SocketAddr::new(any, addr.port())).cloned()
    }

    fn accept_loops(
        shared: &Arc<Shared>,
        slot: &Arc<ArcSwap<ListenerRuntime>>,
        pre: PreBound,
    ) -> (watch::Sender<bool>, SocketAddr) {
        let (stop, stopped) = watch::channel(false);
        for (handle, sock) in shared.workers.handles().iter().zip(pre.sockets) {
            let shared = shared.clone();
            let slot = slot.clone();
            let mut stopped = stopped.clone();
            handle.spawn(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(sock) else {
                    return;
                };
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            if let Ok((stream, remote)) = r {
                                let shared = shared.clone();
                                let slot = slot.clone();
                                tokio::spawn(async move {
                                    handle_connection(shared, slot, stream, remote).await;
                                });
                            }
                        }
                        _ = stopped.changed() => break,
                    }
                }
            });
        }
        (stop, pre.bound)
    }
}

/// One listening socket per worker (`SO_REUSEPORT` when there are several).
fn bind_sockets(
    workers: usize,
    addr: SocketAddr,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), ListenerError> {
    let err = |e| ListenerError::Bind { addr, source: e };
    let mut bound = addr;
    let mut sockets = Vec::new();
    for _ in 0..workers.max(1) {
        let domain = if addr.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
            .map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        if workers > 1 {
            s.set_reuse_port(true).map_err(err)?;
        }
        s.set_nonblocking(true).map_err(err)?;
        s.bind(&bound.into()).map_err(err)?;
        s.listen(1024).map_err(err)?;
        if let Some(a) = s.local_addr().map_err(err)?.as_socket() {
            bound = a;
        }
        sockets.push(std::net::TcpListener::from(s));
    }
    Ok((sockets, bound))
}

/// The pre-redirect destination of a connection (`SO_ORIGINAL_DST`).
fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let a = if local.is_ipv4() {
        sock.original_dst_v4().ok()?
    } else {
        sock.original_dst_v6().ok()?
    };
    a.as_socket()
}

/// What the listener filters learned.
#[derive(Debug, Default)]
struct Inspected {
    prefix: Bytes,
    transport: &'static str,
    sni: String,
    alpn: Vec<String>,
}

async fn inspect(
    stream: &mut TcpStream,
    l: &Listener,
    destination: SocketAddr,
) -> Option<Inspected> {
    let f = &l.listener_filters;
    let mut out = Inspected {
        transport: "raw_buffer",
        ..Default::default()
    };
    // `filter_disabled` predicates see the destination after `original_dst`.
    let tls_inspector = f.tls_inspector_for(destination.port());
    let http_inspector = f.http_inspector_for(destination.port());
    if !tls_inspector && !http_inspector {
        return Some(out);
    }
    let mut buf = BytesMut::with_capacity(4096);
    let (mut tls_done, mut http_done) = (!tls_inspector, !http_inspector);
    let work = async {
        loop {
            if !tls_done {
                match inspect::client_hello(&buf) {
                    TlsHello::NeedMore => {}
                    TlsHello::NotTls => tls_done = true,
                    TlsHello::Hello { sni, alpn } => {
                        out.transport = "tls";
                        out.sni = sni;
                        out.alpn = alpn;
                        tls_done = true;
                        // HTTP sniffing does not apply to TLS.
                        http_done = true;
                    }
                }
            }
            if !http_done {
                match inspect::sniff_http(&buf) {
                    HttpSniff::NeedMore => {}
                    HttpSniff::NotHttp => http_done = true,
                    s => {
                        if let Some(p) = s.protocol() {
                            out.alpn = vec![p.to_string()];
                        }
                        http_done = true;
                    }
                }
            }
            if tls_done && http_done {
                return true;
            }
            if buf.len() >= inspect::MAX_HTTP_INSPECT {
                return true;
            }
            buf.reserve(4096);
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    let finished = match l.listener_filters_timeout {
        Some(t) if !t.is_zero() => match tokio::time::timeout(t, work).await {
            Ok(done) => done,
            Err(_) => l.continue_on_listener_filters_timeout,
        },
        _ => work.await,
    };
    if !finished {
        return None;
    }
    out.prefix = buf.freeze();
    Some(out)
}

async fn handle_connection(
    shared: Arc<Shared>,
    slot: Arc<ArcSwap<ListenerRuntime>>,
    mut stream: TcpStream,
    remote: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let mut lr = slot.load_full();
    let Ok(mut local) = stream.local_addr() else {
        return;
    };
    // `use_original_dst` implies the original-destination listener filter, as in Envoy.
    if (lr.config.listener_filters.original_dst_for(local.port()) || lr.config.use_original_dst)
        && let Some(dst) = original_dst(&stream)
    {
        local = dst;
    }
    if lr.config.use_original_dst
        && let Some(target) = shared.listeners.lookup(local)
        && !Arc::ptr_eq(&target, &slot)
    {
        lr = target.load_full();
    }
    tracing::debug!(listener = %lr.config.name, %remote, %local, "connection accepted");
    lr.stats.cx_total.inc();
    lr.stats.cx_active.inc();
    let _active = ActiveGuard(lr.stats.cx_active.clone());
    let Some(seen) = inspect(&mut stream, &lr.config, local).await else {
        lr.stats.listener_filter_error.inc();
        return;
    };
    let conn = select::ConnectionInfo {
        destination: local,
        source: remote,
        direct_source: remote,
        server_name: &seen.sni,
        transport_protocol: seen.transport,
        application_protocols: &seen.alpn,
    };
    let chain = match select::select(&lr.config.filter_chains, &conn) {
        Some(c) => lr
            .chains
            .iter()
            .find(|r| Arc::ptr_eq(&r.config, c))
            .cloned(),
        None => lr.default_chain.clone(),
    };
    let Some(chain) = chain else {
        tracing::debug!(listener = %lr.config.name, sni = %seen.sni, transport = seen.transport, alpn = ?seen.alpn, "no filter chain matches");
        lr.stats.no_filter_chain_match.inc();
        return;
    };
    tracing::debug!(listener = %lr.config.name, chain = %chain.config.name, "filter chain selected");
    drop(lr);
    let io = PrefixedIo::new(seen.prefix, stream);
    let drain = chain.drain.subscribe();
    match &chain.tls {
        None => {
            let meta = ConnMeta {
                remote,
                local,
                tls: false,
                alpn_h2: false,
                tls_info: None,
            };
            run_terminal(&shared, &chain, io, meta, &seen.sni, drain).await;
        }
        Some(tls) => {
            let start = match tokio_rustls::LazyConfigAcceptor::new(
                rustls::server::Acceptor::default(),
                io,
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    tls.stats.failed(&e);
                    tracing::debug!(chain = %chain.config.name, "TLS handshake failed: {e}");
                    return;
                }
            };
            let config = tls.config_for(&start.client_hello());
            let stream = match start.into_stream(config).await {
                Ok(s) => s,
                Err(e) => {
                    let why = tls.stats.failed(&e);
                    tracing::debug!(chain = %chain.config.name, ?why, "TLS handshake failed: {e}");
                    return;
                }
            };
            let conn = stream.get_ref().1;
            tls.stats.succeeded(conn);
            let alpn = conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let info = crate::tls::TlsInfo {
                peer: conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(crate::tls::PeerCertificate::of),
                local_uri_sans: tls.local_uri_sans(),
                sni: conn.server_name().map(str::to_string),
                alpn,
            };
            let meta = ConnMeta {
                remote,
                local,
                tls: true,
                alpn_h2: info.alpn.as_deref() == Some("h2"),
                tls_info: Some(Arc::new(info)),
            };
            run_terminal(&shared, &chain, stream, meta, &seen.sni, drain).await;
        }
    }
}

async fn run_terminal<IO>(
    shared: &Arc<Shared>,
    chain: &Arc<ChainRuntime>,
    io: IO,
    meta: ConnMeta,
    sni: &str,
    mut drain: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match &chain.terminal {
        Terminal::Http(hcm) => {
            crate::http::hcm::serve(hcm.clone(), shared.clone(), io, meta, drain).await;
        }
        Terminal::Tcp(tcp, stats) => {
            let mut resolved = None;
            for f in &chain.config.filters {
                match f {
                    NetworkFilter::SniDynamicForwardProxy { port } => {
                        if sni.is_empty() {
                            return;
                        }
                        let family = crate::config::cluster::DnsLookupFamily::V4Only;
                        match shared.dns.resolve("sni", sni, family).await {
                            Some(ip) => resolved = Some(SocketAddr::new(ip, *port)),
                            None => return,
                        }
                    }
                }
            }
            let target = TcpTarget {
                original_dst: meta.local,
                resolved,
            };
            let drain_time = shared.drain_time;
            tokio::select! {
                _ = crate::tcp::proxy(tcp, stats, shared, io, target) => {}
                _ = async {
                    while !*drain.borrow() {
                        if drain.changed().await.is_err() {
                            break;
                        }
                    }
                    tokio::time::sleep(drain_time).await;
                } => {}
            }
        }
    }
}

struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The system's text for an IO error, as `strerror` prints it (without Rust's
/// ` (os error N)` suffix), so messages read as Envoy's.
fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// Default drain time for connections on removed chains (Envoy's `--drain-time-s`, 600 s).
pub const DEFAULT_DRAIN_TIME: Duration = Duration::from_secs(600);
