//! One endpoint change → time until every connected stream has the new EDS, with 1,000 real
//! gRPC ADS streams on loopback (debounce included), and control-plane memory per stream.
//!
//! Not a criterion benchmark: it measures a distribution across streams in one run. Run with
//! `cargo bench -p mesh-benches --bench ads_fanout`. Bounded: 1,000 streams, 5 changes, each
//! wait capped at 30 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_model::MeshConfig;
use mesh_xds::resource;
use mesh_xds::server::{AdsServer, Debounce, ServerConfig, ViewCache};
use prost::Message;
use tokio::sync::mpsc;

/// Counts live heap bytes, so memory per stream is what the control plane holds, not what the
/// C allocator keeps resident after a burst.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const STREAMS: usize = 1_000;
const SERVICES: usize = 100;
const VIEWS: usize = 10;
const CHANGES: usize = 5;

fn node(i: usize) -> Node {
    mesh_test_support::node(
        &format!(
            "sidecar~10.9.{}.{}~pod-{i}.bench~bench.svc.cluster.local",
            i / 250,
            i % 250
        ),
        "bench",
        &format!("app-{}", i % VIEWS),
    )
}

fn epoch_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

type Opened = (
    mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
);

/// Connects and opens the ADS stream with the first (CDS) request.
async fn open(addr: std::net::SocketAddr, i: usize) -> Result<Opened, String> {
    let mut c = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(8);
    tx.send(DiscoveryRequest {
        node: Some(node(i)),
        type_url: resource::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let responses = c
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok((tx, responses))
}

/// One client stream: subscribes to CDS, then to the EDS of one cluster, ACKs everything, and
/// prints `ready I` once, then `eds I MICROS IPS` for every EDS response of that cluster.
async fn client(
    addr: std::net::SocketAddr,
    i: usize,
    cluster: String,
    out: mpsc::UnboundedSender<String>,
) {
    // Like Envoy, a client whose connection fails before its stream is up tries again (with
    // backoff, at most 5 times); retries are reported, not hidden.
    let mut attempt = 0u64;
    let (tx, mut responses) = loop {
        attempt += 1;
        match open(addr, i).await {
            Ok(v) => break v,
            Err(e) if attempt < 5 => {
                let _ = out.send(format!("retry {i} {e}"));
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => {
                let _ = out.send(format!("error {i} stream: {e}"));
                return;
            }
        }
    };
    let mut eds_subscribed = false;
    let mut was_ready = false;
    while let Ok(Some(resp)) = responses.message().await {
        let ack = DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: if resp.type_url == resource::ENDPOINT {
                vec![cluster.clone()]
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            return;
        }
        if resp.type_url == resource::CLUSTER && !eds_subscribed {
            eds_subscribed = true;
            let sub = DiscoveryRequest {
                type_url: resource::ENDPOINT.into(),
                resource_names: vec![cluster.clone()],
                ..Default::default()
            };
            if tx.send(sub).await.is_err() {
                return;
            }
        }
        if resp.type_url == resource::ENDPOINT {
            let at = epoch_micros();
            if !was_ready {
                was_ready = true;
                let _ = out.send(format!("ready {i}"));
            }
            let ips: Vec<String> = resp
                .resources
                .iter()
                .filter_map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).ok())
                .flat_map(|cla| {
                    cla.endpoints.into_iter().flat_map(|l| l.lb_endpoints).filter_map(|e| match e.host_identifier {
                        Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                            match ep.address?.address? {
                                envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa) => Some(sa.address),
                                _ => None,
                            }
                        }
                        _ => None,
                    })
                })
                .collect();
            let _ = out.send(format!("eds {i} {at} {}", ips.join(",")));
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Child mode: `ads_fanout --clients ADDR N` runs N client streams and reports on stdout.
async fn run_clients(addr: std::net::SocketAddr, n: usize) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cluster = format!("outbound|80||{}", mesh_benches::host(0));
    for i in 0..n {
        tokio::spawn(client(addr, i, cluster.clone(), tx.clone()));
    }
    drop(tx);
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    while let Some(line) = rx.recv().await {
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--clients") {
        let addr = args[pos + 1].parse().unwrap();
        let n = args[pos + 2].parse().unwrap();
        run_clients(addr, n).await;
        return;
    }
    // `cargo bench` passes --bench; anything else (cargo test --benches) does a tiny run.
    let quick = !args.iter().any(|a| a == "--bench");
    let streams = if quick { 20 } else { STREAMS };
    let services: usize = std::env::var("MESH_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SERVICES);
    let store = mesh_benches::store(services);
    let cache = ViewCache::new(store.clone(), MeshConfig::default());
    tokio::spawn(
        cache
            .clone()
            .run_debounced(store.subscribe(), Debounce::default()),
    );
    let server = AdsServer::new(cache.clone()).with_config(ServerConfig::default());
    let connections = server.connections();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    // Warm the view cache and allocator before measuring the per-stream cost.
    let _ = cache.snapshot_for(&mesh_xds::Proxy::from_node(&node(0)));
    let rss_before = mesh_benches::rss_bytes();
    let heap_before = ALLOCATOR.allocated();
    // The clients run in a child process, so this process's memory is the control plane's.
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--clients", &addr.to_string(), &streams.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = 0;
    let mut retries = 0;
    while ready < streams {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("streams connect within 60 s")
            .unwrap()
            .expect("client output");
        if line.starts_with("ready ") {
            ready += 1;
        } else if line.starts_with("retry ") {
            retries += 1;
        } else if line.starts_with("error ") {
            panic!("a client failed: {line}");
        }
    }
    let connected = connections.len();
    let rss_connected = mesh_benches::rss_bytes();
    let heap_connected = ALLOCATOR.allocated();
    let mut latencies = Vec::new();
    let mut pushes = cache.subscribe_pushes();
    let mut push_times = Vec::new();
    let mut eds_only = 0;
    for change in 0..CHANGES {
        let ip = format!("10.200.{change}.1");
        // Move one endpoint of service 0: an endpoint-only change.
        let key = mesh_model::ResourceKey::new(
            mesh_model::Kind::ServiceEntry,
            mesh_benches::NAMESPACE,
            "svc-0",
        );
        let mut cfg = store.get(&key).unwrap().as_ref().clone();
        if let mesh_model::Config::ServiceEntry(se) = &mut cfg {
            se.spec.endpoints[0].address = ip.clone();
        }
        let t0 = epoch_micros();
        store.apply(cfg).unwrap();
        let mut got = std::collections::BTreeSet::new();
        let limit = Instant::now() + Duration::from_secs(30);
        while got.len() < streams {
            let line = tokio::time::timeout_at(limit.into(), lines.next_line())
                .await
                .expect("every stream converges within 30 s")
                .unwrap()
                .expect("client output");
            let parts: Vec<&str> = line.split(' ').collect();
            if parts[0] == "eds"
                && parts
                    .get(3)
                    .is_some_and(|ips| ips.split(',').any(|x| x == ip))
            {
                let i: usize = parts[1].parse().unwrap();
                let at: u128 = parts[2].parse().unwrap();
                if got.insert(i) {
                    latencies.push(Duration::from_micros(
                        u64::try_from(at.saturating_sub(t0)).unwrap_or(u64::MAX),
                    ));
                }
            }
        }
        // The push that carried this change: how long translation took, and how.
        if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_secs(5), pushes.recv()).await {
            push_times.push(p.elapsed);
            eds_only += usize::from(p.eds_only);
        }
    }
    // After the pushes settle: what every connected stream keeps.
    let heap_settled = ALLOCATOR.allocated();
    let _ = child.kill().await;
    latencies.sort();
    let per_stream = rss_connected.saturating_sub(rss_before) as f64 / streams as f64;
    println!(
        "ads_fanout: {streams} ADS streams ({connected} registered, {retries} stream opens retried; gRPC over loopback, clients in a child process), {VIEWS} views, {services} services"
    );
    println!(
        "  one endpoint change -> new EDS on every stream ({CHANGES} changes, 100 ms debounce included): p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    push_times.sort();
    println!(
        "  pushes: {} ({eds_only} endpoint-only), translation per push (all {VIEWS} views): median {:?}, max {:?}",
        push_times.len(),
        push_times
            .get(push_times.len() / 2)
            .copied()
            .unwrap_or_default(),
        push_times.last().copied().unwrap_or_default()
    );
    println!(
        "  control-plane live heap per stream: {:.1} KiB right after connecting, {:.1} KiB after {CHANGES} pushes",
        heap_connected.saturating_sub(heap_before) as f64 / streams as f64 / 1024.0,
        heap_settled.saturating_sub(heap_before) as f64 / streams as f64 / 1024.0
    );
    println!(
        "  control-plane RSS: {:.1} MiB before streams, {:.1} MiB with {streams} streams -> {:.1} KiB per stream (glibc keeps freed pages resident)",
        rss_before as f64 / 1048576.0,
        rss_connected as f64 / 1048576.0,
        per_stream / 1024.0
    );
}
