//! `meshctl validate` end to end: exit codes, output format, JSON, stdin, directories.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn meshctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn meshctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn examples_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn the_example_mesh_validates() {
    let out = meshctl(&["validate", examples_config().to_str().unwrap()], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.contains("Istio resources checked, valid; 0 errors, 0 warnings"),
        "{summary}"
    );
    assert!(
        summary.contains("non-Istio objects skipped (1 ConfigMap, 1 Namespace)"),
        "{summary}"
    );
    assert_eq!(stdout.lines().count(), 1, "only the summary: {stdout}");
}

#[test]
fn invalid_input_exits_1_with_one_line_per_finding() {
    let bad = temp_file(
        "bad.yaml",
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: -1
    - destination: {host: reviews, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
",
    );
    let out = meshctl(&["validate", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{}:1: error: VirtualService shop/reviews: spec.http[0].route[0].weight: weight -1 must not be negative",
            bad.display()
        )
    );
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[1].starts_with("2 Istio resources checked, 1 invalid; 1 errors, 0 warnings; 1 non-Istio objects skipped"), "{}", lines[1]);
}

#[test]
fn warnings_alone_exit_0() {
    let p = temp_file(
        "warn.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [a]\n  gateways: [gw.shop]\n  http: [{route: [{destination: {host: a}}]}]\n",
    );
    let out = meshctl(&["validate", p.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(": warning: VirtualService default/v: spec.gateways[0]: "),
        "{stdout}"
    );
    assert!(stdout.contains("1 warnings"), "{stdout}");
}

#[test]
fn stdin_and_json_output() {
    let input = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: shop}\nspec: {egress: [{hosts: [reviews]}]}\n";
    let out = meshctl(&["validate", "-", "--output", "json"], Some(input));
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(doc["errors"], 1);
    assert_eq!(doc["resources"], 1);
    let f = &doc["findings"][0];
    assert_eq!(f["severity"], "error");
    assert_eq!(f["location"]["file"], "-");
    assert_eq!(f["location"]["line"], 1);
    assert_eq!(f["resource"]["kind"], "Sidecar");
    assert_eq!(f["resource"]["namespace"], "shop");
    assert_eq!(f["path"], "spec.egress[0].hosts[0]");
}

#[test]
fn usage_errors_and_unreadable_files_exit_2() {
    let out = meshctl(&["validate"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage"), "{}", text(&out.stderr));

    let out = meshctl(&["frobnicate"], None);
    assert_eq!(out.status.code(), Some(2));

    let out = meshctl(&["validate", "/definitely/not/here.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("/definitely/not/here.yaml") && err.contains("No such file"),
        "{err}"
    );

    let out = meshctl(&["validate", "--output", "xml", "x.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn several_paths_and_the_root_namespace_flag() {
    let pa = temp_file(
        "pa.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: mesh-root}\nspec: {selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}}\n",
    );
    let out = meshctl(
        &[
            "validate",
            pa.to_str().unwrap(),
            examples_config().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !text(&out.stdout).contains(": warning:"),
        "{}",
        text(&out.stdout)
    );
    let out = meshctl(
        &[
            "validate",
            "--root-namespace",
            "mesh-root",
            pa.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        text(&out.stdout).contains("warning: PeerAuthentication mesh-root/p: spec.selector"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn analyze_finds_cross_resource_problems() {
    let p = temp_file(
        "analyze.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: shop}\nspec: {hosts: [a.example.com], gateways: [shop/nowhere], http: [{route: [{destination: {host: a}}]}]}\n",
    );
    let out = meshctl(&["validate", p.to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "single-resource validation passes"
    );
    let out = meshctl(&["validate", "--analyze", p.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:1: error: VirtualService shop/v: spec.gateways[0]: IST0101",
            p.display()
        )),
        "{stdout}"
    );
    let out = meshctl(
        &["validate", "--analyze", examples_config().to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn mesh_config_is_validated_and_sets_the_root_namespace() {
    let good = examples_config().join("mesh.yaml");
    let out = meshctl(
        &[
            "validate",
            "--mesh-config",
            good.to_str().unwrap(),
            examples_config().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    let bad = temp_file(
        "mesh.yaml",
        "rootNamespace: mesh-root\nconnectTimeout: 0s\nfutureField: 1\n",
    );
    let pa = temp_file(
        "root-pa.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: mesh-root}\nspec: {selector: {matchLabels: {app: a}}}\n",
    );
    let out = meshctl(
        &[
            "validate",
            "--mesh-config",
            bad.to_str().unwrap(),
            pa.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:1: error: MeshConfig -/mesh: connectTimeout: duration 0s must be at least 1ms",
            bad.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: MeshConfig -/mesh: futureField: unknown field"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: PeerAuthentication mesh-root/p: spec.selector"),
        "{stdout}"
    );

    let out = meshctl(
        &[
            "validate",
            "--mesh-config",
            "/no/such/mesh.yaml",
            pa.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}
