//! An in-process control plane for tests: a config store translated per node on demand, served
//! over ADS by mesh-xds's server on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use mesh_model::{ConfigStore, MeshConfig, parse_str};
use mesh_xds::server::{AdsServer, Connections, SnapshotSource};
use mesh_xds::{Proxy, PushContext, Snapshot, translate};
use tokio::sync::watch;

/// A control plane for tests: a config store, translated per node on demand and re-pushed
/// whenever the test calls [`ControlPlane::update`].
pub struct ControlPlane {
    /// The configuration every view is translated from.
    pub store: ConfigStore,
    /// The mesh settings translations use.
    pub mesh: MeshConfig,
    views: std::sync::Mutex<Vec<(Proxy, watch::Sender<Arc<Snapshot>>)>>,
    version: std::sync::atomic::AtomicU64,
    credentials: std::sync::Mutex<Arc<mesh_xds::credentials::Credentials>>,
    networks: std::sync::Mutex<mesh_model::MeshNetworks>,
}

impl ControlPlane {
    /// A control plane for `yaml` (manifests; every invalid one fails the test) with the default
    /// mesh settings.
    pub fn new(yaml: &str) -> Arc<Self> {
        Self::with_mesh(yaml, MeshConfig::default())
    }

    /// [`ControlPlane::new`] with `mesh` settings.
    pub fn with_mesh(yaml: &str, mesh: MeshConfig) -> Arc<Self> {
        let cp = Arc::new(ControlPlane {
            store: ConfigStore::new(),
            mesh,
            views: std::sync::Mutex::new(Vec::new()),
            version: std::sync::atomic::AtomicU64::new(1),
            credentials: std::sync::Mutex::default(),
            networks: std::sync::Mutex::default(),
        });
        cp.apply(yaml);
        cp
    }

    /// Applies manifests; every invalid one fails the test.
    pub fn apply(&self, yaml: &str) {
        let report = self.store.apply_all(parse_str(yaml, "test.yaml"));
        assert!(report.rejected.is_empty(), "{:#?}", report.rejected);
    }

    /// Replaces the whole configuration (deleting what is gone) and pushes.
    pub fn replace(&self, yaml: &str) -> mesh_model::store::ApplyReport {
        let label = if yaml.trim_start().starts_with('{') {
            "test.json"
        } else {
            "test.yaml"
        };
        let report = self.store.sync(parse_str(yaml, label));
        self.update();
        report
    }

    /// Replaces the gateway credentials (`credentialName`s) and pushes.
    pub fn set_credentials(&self, credentials: mesh_xds::credentials::Credentials) {
        *self.credentials.lock().unwrap() = Arc::new(credentials);
        self.update();
    }

    /// Replaces the mesh's networks (Istio's `meshNetworks`) and pushes.
    pub fn set_networks(&self, networks: mesh_model::MeshNetworks) {
        *self.networks.lock().unwrap() = networks;
        self.update();
    }

    /// The push context translations of the current configuration start from (what the
    /// control plane would report as policy diagnostics, say).
    pub fn push_context(&self) -> PushContext {
        let credentials = self.credentials.lock().unwrap().clone();
        let networks = self.networks.lock().unwrap().clone();
        PushContext::new(self.mesh.clone(), self.store.snapshot())
            .with_credentials(credentials)
            .with_networks(networks)
    }

    fn snapshot_for(&self, proxy: &Proxy, previous: Option<&Snapshot>) -> Snapshot {
        let ctx = self.push_context();
        let resources = translate(&ctx, proxy);
        resources.consistent().expect("consistent translation");
        let v = self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Snapshot::from_resources(v.to_string(), &resources, previous)
    }

    /// Re-translates every connected view and pushes what changed.
    pub fn update(&self) {
        let views = self.views.lock().unwrap();
        for (proxy, tx) in views.iter() {
            let prev = tx.borrow().clone();
            let next = self.snapshot_for(proxy, Some(&prev));
            tx.send_if_modified(|cur| {
                if cur.resources == next.resources {
                    false
                } else {
                    *cur = Arc::new(next);
                    true
                }
            });
        }
    }
}

impl SnapshotSource for ControlPlane {
    fn watch(&self, node: &Node) -> watch::Receiver<Arc<Snapshot>> {
        let proxy = Proxy::from_node(node);
        let snap = self.snapshot_for(&proxy, None);
        let (tx, rx) = watch::channel(Arc::new(snap));
        self.views.lock().unwrap().push((proxy, tx));
        rx
    }
}

/// Serves ADS for `cp` on 127.0.0.1 (an ephemeral port).
pub async fn serve(cp: Arc<ControlPlane>) -> (SocketAddr, Arc<Connections>) {
    serve_source(cp).await
}

/// Serves ADS for any snapshot source (a `ViewCache`, say) on 127.0.0.1 (an ephemeral port),
/// until the test's runtime ends.
pub async fn serve_source<S: SnapshotSource + 'static>(
    source: Arc<S>,
) -> (SocketAddr, Arc<Connections>) {
    let cp = source;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = AdsServer::new(cp);
    let connections = server.connections();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, connections)
}

/// A control-plane server that can be stopped and restarted on the same address. It runs on
/// its own runtime in its own thread, so stopping it cuts every stream at once, as a control
/// plane restart does.
pub struct Served {
    /// Where it serves.
    pub addr: SocketAddr,
    /// Its ADS connections (sync status, push events).
    pub connections: Arc<Connections>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Stops serving and drops every connection.
    pub async fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves ADS for `cp` on `addr` (port 0 for an ephemeral one) until stopped.
pub async fn serve_at(cp: Arc<ControlPlane>, addr: SocketAddr) -> Served {
    let std_listener = std::net::TcpListener::bind(addr).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let server = AdsServer::new(cp);
    let connections = server.connections();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(server.into_service())
                .serve_with_incoming(incoming)
                .await;
        });
        let _ = stopped.recv();
        // Dropping the runtime cancels every task: the listener and all connections close.
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
    });
    Served {
        addr,
        connections,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// An Envoy node `id` in namespace `ns` (`NAMESPACE` metadata) with the label `app: <app>`
/// (`LABELS` metadata), as a proxy sends it on its first ADS request.
pub fn node(id: &str, ns: &str, app: &str) -> Node {
    let labels = Struct {
        fields: [(
            "app".to_string(),
            Value {
                kind: Some(value::Kind::StringValue(app.into())),
            },
        )]
        .into(),
    };
    Node {
        id: id.into(),
        metadata: Some(Struct {
            fields: [
                (
                    "NAMESPACE".to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(ns.into())),
                    },
                ),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(value::Kind::StructValue(labels)),
                    },
                ),
            ]
            .into(),
        }),
        ..Default::default()
    }
}
