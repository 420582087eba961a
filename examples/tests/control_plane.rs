//! `mesh-control-plane` end to end: a real Envoy gets its config from the binary, a file change
//! re-routes traffic within a second, an invalid file is rejected while traffic keeps flowing,
//! and the debug endpoints and `meshctl proxy-status` report the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_test_support::identity::{Issuer, ca_call};
use mesh_test_support::proxy::{Bootstrap, XdsAt};
use mesh_test_support::{Api, Proxy, ProxyKind, TempDir, eventually, free_port, upstream};

struct ControlPlane {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_control_plane(
    dir: &Path,
    xds: SocketAddr,
    debug: SocketAddr,
    extra: &[&str],
) -> ControlPlane {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-control-plane"))
        .args([
            "--config",
            dir.to_str().unwrap(),
            "--xds-addr",
            &xds.to_string(),
            "--debug-addr",
            &debug.to_string(),
        ])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    ControlPlane { child, log }
}

fn files(dir: &Path, listener_port: u16, upstreams: &[(&str, u16)], route_to: &str) {
    let eps: String = upstreams
        .iter()
        .map(|(v, p)| {
            format!("  - {{address: 127.0.0.1, ports: {{http: {p}}}, labels: {{version: {v}}}}}\n")
        })
        .collect();
    std::fs::write(
        dir.join("mesh.yaml"),
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec:
  egress:
  - port: {{number: {listener_port}, name: http, protocol: HTTP}}
    captureMode: NONE
    hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: shop}}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {listener_port}, name: http, protocol: HTTP}}]
  endpoints:
{eps}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  subsets: [{{name: a, labels: {{version: a}}}}, {{name: b, labels: {{version: b}}}}]
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("nested-vs.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: shop}}\nspec:\n  hosts: [reviews]\n  http: [{{route: [{{destination: {{host: reviews, subset: {route_to}}}}}]}}]\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_binary_serves_watches_and_reports() {
    ProxyKind::each(serves_watches_and_reports).await;
}

async fn serves_watches_and_reports(kind: ProxyKind) {
    let a = upstream::start("a").await;
    let b = upstream::start("b").await;
    let dir = std::env::temp_dir().join(format!("mesh-cp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener_port = free_port();
    files(
        &dir,
        listener_port,
        &[("a", a.port()), ("b", b.port())],
        "a",
    );
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let debug: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ca_dir = dir.with_extension("ca");
    let _ = std::fs::remove_dir_all(&ca_dir);
    let cp = start_control_plane(&dir, xds, debug, &["--ca-dir", ca_dir.to_str().unwrap()]);
    eventually("debug endpoint", Duration::from_secs(20), async || {
        (upstream::get(debug, "cp", "/debug/list", &[])
            .await
            .ok()?
            .status
            == 200)
            .then_some(())
    })
    .await;
    let node_id = "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local";
    let node = format!(
        r#"{{id: "{node_id}", cluster: client, metadata: {{NAMESPACE: shop, INTERCEPTION_MODE: NONE, ISTIO_VERSION: "1.30.0"}}}}"#
    );
    let envoy = Proxy::start(kind, xds, Api::Delta, &node).await;
    envoy.wait_live().await;
    let addr: SocketAddr = format!("127.0.0.1:{listener_port}").parse().unwrap();
    let routed_to = async |want: &str| {
        let r = upstream::get(addr, "reviews", "/", &[]).await.ok()?;
        (r.status == 200 && r.body == want).then_some(())
    };
    eventually("routed to a", Duration::from_secs(20), async || {
        routed_to("a").await
    })
    .await;

    // A file change re-routes within a second (poll interval + debounce + push).
    files(
        &dir,
        listener_port,
        &[("a", a.port()), ("b", b.port())],
        "b",
    );
    let t = Instant::now();
    eventually("routed to b", Duration::from_secs(5), async || {
        routed_to("b").await
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "change took {:?}",
        t.elapsed()
    );

    // An invalid resource is rejected and logged; everything else keeps flowing.
    std::fs::write(
        dir.join("broken.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken, namespace: shop}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}, weight: -1}]}]\n",
    )
    .unwrap();
    eventually("rejection logged", Duration::from_secs(5), async || {
        cp.log
            .lock()
            .unwrap()
            .contains("VirtualService shop/broken: spec.http[0].route[0].weight")
            .then_some(())
    })
    .await;
    for _ in 0..10 {
        assert!(routed_to("b").await.is_some());
    }

    // Debug endpoints.
    let syncz = eventually("proxy synced", Duration::from_secs(5), async || {
        let r = upstream::get(debug, "cp", "/debug/syncz", &[]).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let p = v
            .as_array()?
            .iter()
            .find(|p| p["proxy"] == node_id)?
            .clone();
        ["cds", "eds", "lds", "rds"]
            .iter()
            .all(|t| p["types"][t]["status"] == "SYNCED")
            .then_some(p)
    })
    .await;
    assert_eq!(syncz["protocol"], "delta");
    // The registries: the ServiceEntry's service and its endpoints, as istiod lists them.
    let json = async |path: &str| -> serde_json::Value {
        let r = upstream::get(debug, "cp", path, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    let registryz = json("/debug/registryz").await;
    let reviews = registryz
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["hostname"] == "reviews.shop.svc.cluster.local")
        .unwrap_or_else(|| panic!("{registryz:#}"));
    assert_eq!(reviews["Attributes"]["Namespace"], "shop");
    assert_eq!(reviews["ports"][0]["port"], listener_port);
    assert_eq!(reviews["ports"][0]["protocol"], "HTTP");
    let endpointz = json("/debug/endpointz").await;
    let eps = endpointz
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["hostname"] == "reviews.shop.svc.cluster.local")
        .unwrap()["endpoints"]
        .clone();
    let mut ports: Vec<u64> = eps
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ports"]["http"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    let mut want = vec![u64::from(a.port()), u64::from(b.port())];
    want.sort_unstable();
    assert_eq!(ports, want);
    let registries = json("/debug/registries").await;
    assert_eq!(registries[0]["id"], "External/Kubernetes");
    assert_eq!(registries[0]["synced"], true);
    let dump = upstream::get(
        debug,
        "cp",
        &format!("/debug/config_dump?proxyID={}", node_id.replace('~', "%7E")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(dump.status, 200, "{}", dump.body);
    let dump: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    // Envoy's admin ConfigDump shape, proto3 JSON.
    let clusters = &dump["configs"][0];
    assert_eq!(
        clusters["@type"],
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
    );
    let ours: std::collections::BTreeMap<String, serde_json::Value> =
        clusters["dynamic_active_clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["cluster"]["name"].as_str().unwrap().to_string(),
                    c["cluster"].clone(),
                )
            })
            .collect();
    let subset = format!("outbound|{listener_port}|b|reviews.shop.svc.cluster.local");
    assert!(ours.contains_key(&subset), "{:?}", ours.keys());
    // Every cluster reads exactly as Envoy itself prints the one it received.
    let envoys: serde_json::Value = serde_json::from_str(
        &envoy
            .admin_get("/config_dump?resource=dynamic_active_clusters")
            .await
            .unwrap(),
    )
    .unwrap();
    let mut compared = 0;
    for c in envoys["configs"].as_array().unwrap() {
        let name = c["cluster"]["name"].as_str().unwrap();
        assert_eq!(Some(&c["cluster"]), ours.get(name), "cluster {name}");
        compared += 1;
    }
    assert_eq!(compared, ours.len());
    assert_eq!(
        upstream::get(debug, "cp", "/debug/config_dump?proxyID=nobody", &[])
            .await
            .unwrap()
            .status,
        404
    );
    let metrics = upstream::get(debug, "cp", "/metrics", &[])
        .await
        .unwrap()
        .body;
    for want in [
        "pilot_xds 1",
        "pilot_xds_pushes_total{type=\"cds\"}",
        "mesh_config_rejected_resources 1",
        "pilot_proxy_convergence_time_seconds_count",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }

    // meshctl proxy-status shows the same.
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["proxy-status", "--debug-addr", &debug.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with(node_id))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [
            node_id, "SYNCED", "SYNCED", "SYNCED", "SYNCED", "delta", "1.30.0"
        ]
    );
    assert!(table.starts_with("NAME"));
    assert_eq!(envoy.rejections().await, 0);

    // The CA API is served on the same gRPC address; without a JWKS only SVID renewals are
    // accepted, so a caller with no credentials is UNAUTHENTICATED.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca_dir.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let err = ca_call(
        xds,
        None,
        mesh_identity::ca::api::IstioCertificateRequest::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&ca_dir);
}

/// The control plane on its TLS port with a CA that accepts tokens from `issuer`: its
/// address, its CA root (PEM file), and the handles that keep it and its directories.
async fn tls_control_plane(
    tag: &str,
    issuer: &Issuer,
    listener_port: u16,
    upstream_port: u16,
) -> (SocketAddr, std::path::PathBuf, ControlPlane, TempDir) {
    let dir = TempDir::new(tag);
    let config = dir.0.join("config");
    std::fs::create_dir_all(&config).unwrap();
    files(&config, listener_port, &[("a", upstream_port)], "a");
    std::fs::write(dir.0.join("jwks.json"), &issuer.jwks).unwrap();
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let debug: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ca_dir = dir.0.join("ca");
    let cp = start_control_plane(
        &config,
        xds,
        debug,
        &[
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--ca-jwks",
            dir.0.join("jwks.json").to_str().unwrap(),
            "--tls-dns-names",
            "localhost",
        ],
    );
    let root = ca_dir.join("root-cert.pem");
    eventually("the CA root", Duration::from_secs(20), async || {
        root.exists().then_some(())
    })
    .await;
    let pem = std::fs::read_to_string(&root).unwrap();
    eventually(
        "the control plane's TLS port",
        Duration::from_secs(20),
        async || mesh_test_support::identity::served_leaf(xds, &pem).await,
    )
    .await;
    (xds, root, cp, dir)
}

/// A TLS channel to the control plane as `localhost`, presenting `client` (chain and key, PEM)
/// if given.
async fn tls_channel(
    xds: SocketAddr,
    root: &Path,
    client: Option<(&str, &str)>,
) -> tonic::transport::Channel {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read_to_string(root).unwrap(),
        ));
    if let Some((chain, key)) = client {
        tls = tls.identity(tonic::transport::Identity::from_pem(chain, key));
    }
    tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", xds.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The first response of a SotW CDS stream on `channel` for a node in namespace `ns`, with
/// `token` as the bearer token if given; or the status that ended the stream.
async fn first_cds(
    channel: tonic::transport::Channel,
    ns: &str,
    token: Option<&str>,
) -> Result<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse, tonic::Status> {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use tokio_stream::StreamExt as _;
    let node = mesh_test_support::node(
        &format!("sidecar~127.0.0.1~client.{ns}~{ns}.svc.cluster.local"),
        ns,
        "client",
    );
    let request = DiscoveryRequest {
        node: Some(node),
        type_url: mesh_xds::resource::CLUSTER.into(),
        ..Default::default()
    };
    let mut req = tonic::Request::new(tokio_stream::iter([request]).chain(tokio_stream::pending()));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let mut stream = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(req)
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("the stream ended without a response"))
}

/// On the TLS port ADS callers authenticate as istiod's do: an SVID from the mesh CA for
/// namespace `shop` is served as a `shop` node and refused (PERMISSION_DENIED, naming both
/// namespaces) as a `bar` node; no certificate and no token is UNAUTHENTICATED; a valid
/// service-account token works without a certificate, and an invalid one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_callers_on_the_tls_port_are_authenticated() {
    use mesh_identity::ca::api::IstioCertificateRequest;
    let issuer = Issuer::new("k1");
    let (xds, root, cp, _dir) = tls_control_plane("cp-ads-auth", &issuer, free_port(), 9).await;
    // An SVID for shop/client from the control plane's CA, asked for with a token.
    let token = issuer.token("shop", "client", |_| {});
    let (key, csr) = mesh_test_support::identity::key_and_csr();
    let issued = mesh_test_support::identity::ca_call_on(
        tls_channel(xds, &root, None).await,
        Some(&token),
        IstioCertificateRequest {
            csr,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let chain = issued.cert_chain.concat();
    let key = key.serialize_pem();
    let svid = || tls_channel(xds, &root, Some((&chain, &key)));

    let r = first_cds(svid().await, "shop", None).await.unwrap();
    assert_eq!(r.type_url, mesh_xds::resource::CLUSTER);
    assert!(!r.resources.is_empty());

    let denied = first_cds(svid().await, "bar", None).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    for want in [
        "sidecar~127.0.0.1~client.bar~bar.svc.cluster.local",
        "claims namespace \"bar\"",
        "spiffe://cluster.local/ns/shop/sa/client",
    ] {
        assert!(
            denied.message().contains(want),
            "{want}: {}",
            denied.message()
        );
    }

    let anonymous = first_cds(tls_channel(xds, &root, None).await, "shop", None)
        .await
        .unwrap_err();
    assert_eq!(
        anonymous.code(),
        tonic::Code::Unauthenticated,
        "{anonymous:?}"
    );
    assert!(
        anonymous.message().contains("client.shop"),
        "{}",
        anonymous.message()
    );

    let r = first_cds(tls_channel(xds, &root, None).await, "shop", Some(&token))
        .await
        .unwrap();
    assert!(
        !r.resources.is_empty(),
        "a token works without a certificate"
    );
    let forged = Issuer::new("k1").token("shop", "client", |_| {});
    let refused = first_cds(tls_channel(xds, &root, None).await, "shop", Some(&forged))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    // A token for shop may not act for bar either.
    let denied = first_cds(tls_channel(xds, &root, None).await, "bar", Some(&token))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let log = cp.log.lock().unwrap().clone();
    assert!(log.contains("ADS stream refused"), "{log}");
}

/// Envoy's ADS stream over the control plane's TLS port: Envoy verifies the control plane's
/// certificate (issued by its own CA for `localhost`) against the root; with a service-account
/// token for its namespace (gRPC `initial_metadata`, as a token-holding proxy would send it)
/// it gets its config and routes traffic; without credentials it never does (the stream is
/// UNAUTHENTICATED); an Envoy that expects another name never syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_xds_over_tls() {
    let a = upstream::start("a").await;
    let issuer = Issuer::new("k1");
    let listener_port = free_port();
    let (xds, root, cp, _dir) = tls_control_plane("cp-tls", &issuer, listener_port, a.port()).await;
    let node = r#"{id: "sidecar~127.0.0.1~client.shop~shop.svc.cluster.local", cluster: client, metadata: {NAMESPACE: shop, INTERCEPTION_MODE: NONE}}"#;
    let token = issuer.token("shop", "client", |_| {});
    // The workload's mTLS secrets (auto mTLS clusters wait for them) from a test agent.
    let sds = mesh_test_support::identity::WorkloadSds::start("shop", "client");
    let bootstrap = Bootstrap {
        tls: Some((&root, "localhost")),
        sds: Some(&sds.socket),
        ..Bootstrap::ads(XdsAt::Tcp(xds), Api::Sotw, node)
    }
    .yaml();
    let grpc = "grpc_services: [{envoy_grpc: {cluster_name: xds}}]";
    assert!(bootstrap.contains(grpc));
    let with_token = bootstrap.replace(
        grpc,
        &format!(
            "grpc_services: [{{envoy_grpc: {{cluster_name: xds}}, initial_metadata: [{{key: authorization, value: \"Bearer {token}\"}}]}}]"
        ),
    );
    let envoy = Proxy::start_with_bootstrap(ProxyKind::Envoy, &with_token).await;
    envoy.wait_live().await;
    let addr: SocketAddr = format!("127.0.0.1:{listener_port}").parse().unwrap();
    let r = eventually(
        "traffic through config from the TLS port",
        Duration::from_secs(20),
        async || {
            let r = upstream::get(addr, "reviews", "/", &[]).await.ok()?;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(r.body, "a");
    assert_eq!(envoy.rejections().await, 0);
    // Without credentials: refused, so no config at all.
    let anonymous = Proxy::start_with_bootstrap(ProxyKind::Envoy, &bootstrap).await;
    eventually(
        "the control plane refuses the anonymous stream",
        Duration::from_secs(20),
        async || {
            let log = cp.log.lock().unwrap();
            log.lines()
                .any(|l| {
                    l.contains("sidecar~127.0.0.1~client.shop~shop.svc.cluster.local")
                        && l.contains("is not authenticated")
                })
                .then_some(())
        },
    )
    .await;
    assert!(
        anonymous.clusters().await.is_empty(),
        "no config without credentials"
    );
    // An Envoy that expects the control plane under another name refuses its certificate.
    // (It never becomes LIVE: it waits for its first config, so only its admin API is asked.)
    let wrong = Proxy::start_with_xds_tls(
        ProxyKind::Envoy,
        xds,
        Api::Sotw,
        node,
        Some((&root, "istiod.example")),
    )
    .await;
    eventually(
        "a refused TLS handshake",
        Duration::from_secs(20),
        async || (wrong.stat("cluster.xds.ssl.fail_verify_san").await? >= 1).then_some(()),
    )
    .await;
    assert!(
        wrong.clusters().await.is_empty(),
        "no config without a verified server"
    );
}

/// The binary fetches RequestAuthentication keys: a `jwksUri` nobody answers is logged with the
/// URL, the reason and the field that uses it (its tokens fail closed, see mesh-xds's
/// tests/jwks.rs); an unusable `--jwks-extra-ca` stops the control plane at start, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_fetch_failures_are_logged_with_their_request_authentication() {
    let dir = TempDir::new("cp-jwks");
    let nothing = format!("http://127.0.0.1:{}/keys", free_port());
    std::fs::write(
        dir.0.join("ra.yaml"),
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
             metadata: {{name: jwt, namespace: shop}}\n\
             spec:\n  jwtRules:\n  - issuer: https://issuer.example\n    jwksUri: {nothing}\n"
        ),
    )
    .unwrap();
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let debug: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cp = start_control_plane(&dir.0, xds, debug, &["--jwks-timeout", "1s"]);
    let line = eventually(
        "the failed fetch in the log",
        Duration::from_secs(20),
        async || {
            let log = cp.log.lock().unwrap();
            log.lines()
                .find(|l| l.contains(&format!("JWKS {nothing}")))
                .map(str::to_string)
        },
    )
    .await;
    for want in [
        "RequestAuthentication shop/jwt jwtRules[0].jwksUri",
        "connecting to 127.0.0.1",
        "never fetched",
    ] {
        assert!(line.contains(want), "{want}: {line}");
    }
    drop(cp);

    let bad = dir.0.join("extra.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-control-plane"))
        .args(["--config", dir.0.to_str().unwrap(), "--xds-addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--debug-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--jwks-extra-ca")
        .arg(&bad)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--jwks-extra-ca") && err.contains("extra JWKS roots"),
        "{err}"
    );

    // Intervals and deadlines of zero cannot work: refused at start, saying what to write.
    for flag in [
        "--jwks-refresh-interval",
        "--jwks-timeout",
        "--poll-interval",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mesh-control-plane"))
            .args(["--config", dir.0.to_str().unwrap(), flag, "0s"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} 0s was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(flag) && err.contains("write a positive duration"),
            "{flag}: {err}"
        );
    }
}

/// `--credentials-dir` is watched: a credential added after start is loaded and pushed, and a
/// broken one is logged by name and left out while the good ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_directory_is_watched() {
    let config = TempDir::new("mesh-cp-creds-config");
    let creds = TempDir::new("mesh-cp-creds");
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let debug: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cp = start_control_plane(
        &config.0,
        xds,
        debug,
        &["--credentials-dir", creds.0.to_str().unwrap()],
    );
    let logged = async |what: &str, needle: &str| {
        eventually(what, Duration::from_secs(10), async || {
            cp.log.lock().unwrap().contains(needle).then_some(())
        })
        .await;
    };
    logged("the first read", "0 credential(s) from").await;
    let (certs, cert, key) =
        mesh_test_support::tls::self_signed("mesh-cp-creds-cert", "shop.example.com");
    let add = |name: &str| {
        let d = creds.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&cert, d.join("tls.crt")).unwrap();
        std::fs::copy(&key, d.join("tls.key")).unwrap();
    };
    add("shop-cert");
    logged(
        "the new credential",
        r#"credentials changed: ["shop-cert"]"#,
    )
    .await;
    // A broken one is named in the log; the good one stays.
    std::fs::create_dir_all(creds.0.join("broken")).unwrap();
    std::fs::write(creds.0.join("broken/tls.crt"), "not a certificate").unwrap();
    std::fs::write(creds.0.join("broken/tls.key"), "not a key").unwrap();
    logged("the broken credential", r#"credential "broken":"#).await;
    assert!(
        !cp.log
            .lock()
            .unwrap()
            .contains(r#"credentials changed: ["broken""#),
        "{}",
        cp.log.lock().unwrap()
    );
    std::fs::remove_dir_all(creds.0.join("broken")).unwrap();
    add("web-cert");
    logged(
        "a second credential",
        r#"credentials changed: ["shop-cert", "web-cert"]"#,
    )
    .await;
    let _ = std::fs::remove_dir_all(&certs);
}
