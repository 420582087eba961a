//! Cross-resource analysis (`validate::analyze`) and MeshConfig validation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use mesh_model::validate::{analyze, validate_mesh_config};
use mesh_model::{parse_mesh_config, parse_str};

fn run(text: &str) -> Vec<(String, String, String)> {
    let out = parse_str(text, "a.yaml");
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    let configs: Vec<_> = out.resources.iter().map(|r| &r.config).collect();
    analyze(&configs)
        .into_iter()
        .map(|f| (f.resource.unwrap().name, f.path, f.message))
        .collect()
}

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n";

#[test]
fn conflicting_mesh_hosts_flag_the_newer_virtual_service() {
    let text = format!(
        "{VS}metadata: {{name: newer, namespace: shop, creationTimestamp: '2026-02-01T00:00:00Z'}}\nspec: {{hosts: [reviews.shop.svc.cluster.local], http: [{{route: [{{destination: {{host: a}}}}]}}]}}\n---\n\
         {VS}metadata: {{name: older, namespace: shop, creationTimestamp: '2026-01-01T00:00:00Z'}}\nspec: {{hosts: [reviews], http: [{{route: [{{destination: {{host: a}}}}]}}]}}\n---\n\
         {VS}metadata: {{name: gateway-only, namespace: shop}}\nspec: {{hosts: [reviews], gateways: [shop/gw], http: [{{route: [{{destination: {{host: a}}}}]}}]}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: shop}}\nspec: {{servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]}}\n"
    );
    let findings = run(&text);
    assert_eq!(findings.len(), 1, "{findings:?}");
    let (name, path, msg) = &findings[0];
    assert_eq!(name, "newer");
    assert_eq!(path, "spec.hosts[0]");
    assert!(
        msg.contains("IST0109") && msg.contains("VirtualService shop/older"),
        "{msg}"
    );
}

#[test]
fn sidecar_conflicts() {
    let sc = "apiVersion: networking.istio.io/v1\nkind: Sidecar\n";
    let text = format!(
        "{sc}metadata: {{name: a, namespace: shop}}\nspec: {{egress: [{{hosts: ['./*']}}]}}\n---\n\
         {sc}metadata: {{name: b, namespace: shop}}\nspec: {{egress: [{{hosts: ['./*']}}]}}\n---\n\
         {sc}metadata: {{name: c, namespace: other}}\nspec: {{egress: [{{hosts: ['./*']}}]}}\n---\n\
         {sc}metadata: {{name: d, namespace: shop}}\nspec: {{workloadSelector: {{labels: {{app: x}}}}}}\n---\n\
         {sc}metadata: {{name: e, namespace: shop}}\nspec: {{workloadSelector: {{labels: {{app: x}}}}}}\n"
    );
    let findings = run(&text);
    let names: Vec<_> = findings
        .iter()
        .map(|(n, _, m)| (n.as_str(), &m[..7]))
        .collect();
    assert_eq!(names, [("b", "IST0111"), ("e", "IST0110")]);
}

#[test]
fn missing_gateways_and_delegates() {
    let text = format!(
        "{VS}metadata: {{name: root, namespace: shop}}\nspec:\n  hosts: [shop.example.com]\n  gateways: [shop/missing, gw.shop, mesh]\n  http:\n  - {{match: [{{uri: {{prefix: /a}}}}], delegate: {{name: a}}}}\n  - {{match: [{{uri: {{prefix: /b}}}}], delegate: {{name: b, namespace: other}}}}\n  - {{delegate: {{name: not-a-delegate}}}}\n---\n\
         {VS}metadata: {{name: a, namespace: shop}}\nspec: {{http: [{{route: [{{destination: {{host: a}}}}]}}]}}\n---\n\
         {VS}metadata: {{name: not-a-delegate, namespace: shop}}\nspec: {{hosts: [x.example.com], http: [{{route: [{{destination: {{host: a}}}}]}}]}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: shop}}\nspec: {{servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]}}\n"
    );
    let findings = run(&text);
    let paths: Vec<_> = findings.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.http[1].delegate",
            "spec.http[2].delegate",
            "spec.gateways[0]"
        ],
        "{findings:?}"
    );
    assert!(
        findings[0]
            .2
            .contains("VirtualService other/b does not exist")
    );
    assert!(findings[1].2.contains("not a delegate"));
    assert!(findings[2].2.contains("Gateway shop/missing"));
}

#[test]
fn mesh_config_validation() {
    let (mesh, _) = parse_mesh_config("").unwrap();
    assert!(
        validate_mesh_config(&mesh).is_empty(),
        "Istio's defaults are valid"
    );
    let (mesh, _) = parse_mesh_config(
        "trustDomain: Not_A_Domain\nconnectTimeout: 0s\nrootNamespace: ''\ndefaultConfig: {discoveryAddress: nowhere, proxyAdminPort: 0}\ndefaultServiceExportTo: ['*', '.']\nlocalityLbSetting: {distribute: [{from: a/*, to: {b/*: 50}}]}\n",
    )
    .unwrap();
    let paths: Vec<_> = validate_mesh_config(&mesh)
        .into_iter()
        .map(|f| f.path)
        .collect();
    for p in [
        "trustDomain",
        "rootNamespace",
        "connectTimeout",
        "defaultConfig.proxyAdminPort",
        "defaultConfig.discoveryAddress",
        "defaultServiceExportTo",
        "localityLbSetting.distribute[0].to",
    ] {
        assert!(paths.iter().any(|x| x == p), "missing {p} in {paths:?}");
    }
}

#[test]
fn the_example_mesh_has_no_cross_resource_problems() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let out = mesh_model::parse_path(&dir).unwrap();
    let configs: Vec<_> = out.resources.iter().map(|r| &r.config).collect();
    assert!(analyze(&configs).is_empty());
    let (mesh, warnings) =
        parse_mesh_config(&std::fs::read_to_string(dir.join("mesh.yaml")).unwrap()).unwrap();
    assert!(warnings.is_empty());
    assert!(validate_mesh_config(&mesh).is_empty());
    assert_eq!(
        mesh.outbound_traffic_policy.mode,
        mesh_model::networking::sidecar::OutboundTrafficPolicyMode::RegistryOnly
    );
}
