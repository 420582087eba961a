//! Proxyless gRPC: a real grpcio client (Python, the xDS resolver built in) dials
//! `xds:///HOST:PORT`, gets LDS → RDS → CDS → EDS from our ADS server, reaches gRPC servers on
//! loopback and follows a weighted split.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use mesh_test_support::{ControlPlane, free_port, serve_at};
use mesh_xds::server::PushEvent;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MESH_PYTHON") {
        return PathBuf::from(p);
    }
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/envoy-venv/bin/python");
    assert!(
        p.exists(),
        "python with grpcio not found at {}: run `bash scripts/test.sh`",
        p.display()
    );
    p
}

fn script(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/grpc")
        .join(name)
}

/// A Python gRPC server; ends when dropped (stdin closes, then it is killed).
struct GrpcServer(Child);

impl GrpcServer {
    fn start(name: &str, port: u16) -> GrpcServer {
        let mut child = Command::new(python())
            .arg(script("server.py"))
            .args([name, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        GrpcServer(child)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_follows_a_weighted_split() {
    let (p1, p2) = (free_port(), free_port());
    let _s1 = GrpcServer::start("v1", p1);
    let _s2 = GrpcServer::start("v2", p2);
    let config = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: shop}}
spec:
  hosts: [echo.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {p1}}}, labels: {{version: v1}}, locality: us-east/a}}
  - {{address: 127.0.0.1, ports: {{grpc: {p2}}}, labels: {{version: v2}}, locality: us-east/b}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: shop}}
spec:
  host: echo
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: shop}}
spec:
  hosts: [echo]
  http:
  - route:
    - {{destination: {{host: echo, subset: v1}}, weight: 75}}
    - {{destination: {{host: echo, subset: v2}}, weight: 25}}
"#
    );
    let cp = ControlPlane::new(&config);
    let served = serve_at(cp, "127.0.0.1:0".parse().unwrap()).await;
    let dir = std::env::temp_dir().join(format!("mesh-grpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = dir.join("bootstrap.json");
    let mut f = std::fs::File::create(&bootstrap).unwrap();
    write!(
        f,
        r#"{{"xds_servers": [{{"server_uri": "{}", "channel_creds": [{{"type": "insecure"}}], "server_features": ["xds_v3"]}}],
            "node": {{"id": "sidecar~127.0.0.1~grpc-client.shop~shop.svc.cluster.local", "cluster": "grpc-client",
                      "metadata": {{"NAMESPACE": "shop", "GENERATOR": "grpc"}}, "locality": {{"region": "us-east", "zone": "a"}}}}}}"#,
        served.addr
    )
    .unwrap();
    drop(f);
    let mut events = served.connections.subscribe();
    let n = 400;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script("client.py"))
            .args(["xds:///echo.shop.svc.cluster.local:7070", &n.to_string()])
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: std::collections::BTreeMap<String, u32> =
        serde_json::from_slice(&out.stdout).unwrap();
    let v1 = f64::from(counts.get("v1").copied().unwrap_or(0)) / f64::from(n);
    // Binomial(400, 0.75): sigma = 2.2%; allow 4 sigma.
    assert!((v1 - 0.75).abs() < 0.087, "{counts:?}");
    assert!(counts.get("v2").copied().unwrap_or(0) > 0, "{counts:?}");
    // The client ACKed every type and NACKed none.
    let mut acked = std::collections::BTreeSet::new();
    while let Ok(e) = events.try_recv() {
        match e {
            PushEvent::Acked {
                type_url, node_id, ..
            } if node_id.contains("grpc-client") => {
                acked.insert(type_url);
            }
            PushEvent::Nacked {
                type_url, detail, ..
            } => panic!("{type_url} NACKed: {detail}"),
            _ => {}
        }
    }
    let expected: std::collections::BTreeSet<String> = mesh_xds::resource::PUSH_ORDER
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(acked, expected);
    let _ = std::fs::remove_dir_all(&dir);
}
