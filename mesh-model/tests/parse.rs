//! Reading manifests: documents, lists, JSON, directories, kinds, versions, locations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;

use mesh_model::validate::Severity;
use mesh_model::{Config, Kind, parse_mesh_config, parse_mesh_networks, parse_path, parse_str};

fn names(out: &mesh_model::ParseOutput) -> Vec<String> {
    out.resources
        .iter()
        .map(|r| r.config.key().to_string())
        .collect()
}

#[test]
fn multi_document_yaml_with_lines_and_default_namespace() {
    let text = "\
# leading comment
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: one}
spec: {host: one}
---
---

# a comment before the object
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: two, namespace: shop}
spec: {host: two}
...
--- # trailing comment on the marker
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: three}
spec: {host: three}
";
    let out = parse_str(text, "m.yaml");
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(
        names(&out),
        [
            "DestinationRule default/one",
            "DestinationRule shop/two",
            "DestinationRule default/three"
        ]
    );
    let lines: Vec<usize> = out.resources.iter().map(|r| r.location.line).collect();
    assert_eq!(lines, [2, 10, 16]);
    assert!(
        out.resources
            .iter()
            .all(|r| r.location.file == Path::new("m.yaml"))
    );
    // The namespace is reported as default but the object keeps what was written.
    assert_eq!(out.resources[0].config.meta().namespace, None);
}

#[test]
fn every_kind_at_every_served_version_parses() {
    for kind in Kind::ALL {
        for version in kind.versions() {
            let text = format!(
                "apiVersion: {}/{version}\nkind: {}\nmetadata: {{name: x}}\nspec: {{}}\n",
                kind.group(),
                kind.name()
            );
            let out = parse_str(&text, "k.yaml");
            assert!(
                out.findings.is_empty(),
                "{kind} {version}: {:?}",
                out.findings
            );
            assert_eq!(out.resources.len(), 1, "{kind} {version}");
            assert_eq!(out.resources[0].config.kind(), *kind);
            assert_eq!(
                out.resources[0].config.api_version(),
                format!("{}/{version}", kind.group())
            );
        }
    }
}

#[test]
fn non_istio_objects_are_skipped_and_counted() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: web}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: v1
kind: Service
metadata: {name: db}
";
    let out = parse_str(text, "k8s.yaml");
    assert!(out.resources.is_empty());
    assert!(out.findings.is_empty());
    let counts = out.skipped_by_kind();
    assert_eq!(counts.get("Service"), Some(&2));
    assert_eq!(counts.get("Deployment"), Some(&1));
    assert_eq!(out.skipped[1].location.line, 5);
}

#[test]
fn unknown_and_unsupported_istio_kinds() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualServce
metadata: {name: typo}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef}
---
apiVersion: security.istio.io/v1
kind: VirtualService
metadata: {name: wrong-group}
";
    let out = parse_str(text, "x.yaml");
    assert!(out.resources.is_empty());
    assert_eq!(out.findings.len(), 3);
    assert_eq!(out.findings[0].severity, Severity::Error);
    assert!(
        out.findings[0]
            .message
            .contains("unknown Istio kind \"VirtualServce\"")
    );
    assert_eq!(out.findings[0].resource.as_ref().unwrap().name, "typo");
    assert_eq!(out.findings[1].severity, Severity::Warning);
    assert!(out.findings[1].message.contains("not supported"));
    assert_eq!(out.findings[2].severity, Severity::Error);
}

#[test]
fn missing_kind_or_api_version_and_non_objects() {
    let out = parse_str(
        "metadata: {name: x}\n---\n- a\n- b\n---\nkind: Gateway\n",
        "x.yaml",
    );
    let msgs: Vec<_> = out
        .findings
        .iter()
        .map(|f| {
            (
                f.path.as_str(),
                f.message.as_str(),
                f.location.as_ref().unwrap().line,
            )
        })
        .collect();
    assert_eq!(msgs[0].0, "kind");
    assert!(msgs[1].1.contains("expected a Kubernetes object"));
    assert_eq!(msgs[1].2, 3);
    assert_eq!(msgs[2].0, "apiVersion");
    assert_eq!(msgs[2].2, 6);
}

#[test]
fn yaml_syntax_errors_name_the_absolute_line_and_keep_other_documents() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ok}
spec: {host: ok}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: broken
spec: {host: broken}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: also-ok}
spec: {host: ok}
";
    let out = parse_str(text, "broken.yaml");
    assert_eq!(
        names(&out),
        [
            "DestinationRule default/ok",
            "DestinationRule default/also-ok"
        ]
    );
    assert_eq!(out.findings.len(), 1);
    let f = &out.findings[0];
    assert!(f.message.starts_with("invalid YAML"), "{f}");
    let line = f.location.as_ref().unwrap().line;
    assert!((8..=10).contains(&line), "line {line}");
}

#[test]
fn duplicate_keys_are_errors() {
    let out = parse_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: a, host: b}\n",
        "d.yaml",
    );
    assert!(out.resources.is_empty());
    assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
}

#[test]
fn unknown_fields_are_reported_with_paths() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, lables: {a: b}}
spec:
  hosts: [a]
  htp: []
  http:
  - route: [{destination: {host: a, subnet: v1}}]
    match: [{headers: {x-a: {exact: b}}, uri: {prefix: /}, urii: {exact: x}}]
";
    let out = parse_str(text, "u.yaml");
    let paths: Vec<_> = out.resources[0]
        .findings
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "metadata.lables",
            "spec.htp",
            "spec.http[0].route[0].destination.subnet",
            "spec.http[0].match[0].urii"
        ]
    );
    assert!(
        out.resources[0]
            .findings
            .iter()
            .all(|f| f.message == "unknown field" && f.is_error())
    );
}

#[test]
fn type_errors_name_the_field_path() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.com]
  ports: [{number: eighty, name: http}]
";
    let out = parse_str(text, "t.yaml");
    assert!(out.resources.is_empty());
    let f = &out.findings[0];
    assert_eq!(f.path, "spec.ports[0].number");
    assert_eq!(
        f.to_string().split(": ").nth(2).unwrap(),
        "ServiceEntry default/se"
    );
}

#[test]
fn enums_accept_names_and_numbers() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec: {hosts: [a.com], resolution: 1, location: MESH_INTERNAL, ports: [{number: 80, name: http}]}
";
    let out = parse_str(text, "e.yaml");
    let Config::ServiceEntry(se) = &out.resources[0].config else {
        panic!()
    };
    assert_eq!(
        se.spec.resolution,
        mesh_model::networking::service_entry::Resolution::Static
    );
    assert_eq!(
        se.spec.location,
        mesh_model::networking::service_entry::Location::MeshInternal
    );
}

#[test]
fn json_streams_and_lists() {
    let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"},
   "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}
]}
{"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": "s"}, "spec": {"egress": [{"hosts": ["./*"]}]}}
"#;
    let out = parse_str(text, "x.json");
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(names(&out), ["Gateway default/g", "Sidecar default/s"]);
    assert_eq!(out.resources[1].location.line, 5);
}

#[test]
fn byte_order_mark_and_utf8() {
    let out = parse_str(
        "\u{feff}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bom}\nspec: {host: a}\n",
        "b.yaml",
    );
    assert_eq!(names(&out), ["DestinationRule default/bom"]);
    let out = mesh_model::parse_reader(&b"\xff\xfe garbage"[..], "bin.yaml").unwrap();
    assert!(out.findings[0].message.contains("not UTF-8"));
}

#[test]
fn directories_are_read_recursively_in_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tree");
    let out = parse_path(&dir).unwrap();
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(
        names(&out),
        [
            "DestinationRule default/a",
            "DestinationRule n/b1",
            "DestinationRule default/c",
            "DestinationRule default/d",
        ]
    );
    assert_eq!(out.skipped.len(), 1);
    assert!(
        out.resources[3]
            .location
            .file
            .ends_with("nested/deeper/c.json")
    );
    assert!(matches!(
        parse_path(dir.join("missing")),
        Err(mesh_model::ParseError::Io { .. })
    ));
}

#[test]
fn mesh_config_defaults_overrides_and_configmap() {
    let (mesh, warnings) = parse_mesh_config("").unwrap();
    assert_eq!(mesh, mesh_model::MeshConfig::default());
    assert!(warnings.is_empty());
    let (mesh, warnings) = parse_mesh_config(
        "\
trustDomain: example.org
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
connectTimeout: 2s
defaultHttpRetryPolicy: {attempts: 5, retryOn: 5xx}
localityLbSetting: {enabled: false}
defaultConfig: {discoveryAddress: cp:15012, proxyMetadata: {A: b}}
enableAutoMtls: false
extensionProviders: [{name: ext, envoyExtAuthzGrpc: {service: a, port: 9000}}]
someFutureField: 1
",
    )
    .unwrap();
    assert_eq!(mesh.trust_domain, "example.org");
    assert_eq!(mesh.root_namespace, "istio-system");
    assert_eq!(
        mesh.outbound_traffic_policy.mode,
        mesh_model::networking::sidecar::OutboundTrafficPolicyMode::RegistryOnly
    );
    assert_eq!(mesh.connect_timeout.as_millis(), 2000);
    assert_eq!(mesh.default_http_retry_policy.unwrap().attempts, 5);
    assert_eq!(mesh.default_config.discovery_address, "cp:15012");
    assert_eq!(
        mesh.default_config.proxy_admin_port, 15000,
        "nested defaults are kept"
    );
    assert!(!mesh.enable_auto_mtls);
    assert_eq!(mesh.extension_providers.len(), 1);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].path, "someFutureField");
    assert_eq!(warnings[0].severity, Severity::Warning);

    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |-\n    rootNamespace: mesh-root\n    bogus: true\n  meshNetworks: |-\n    networks:\n      net1:\n        endpoints: [{fromRegistry: c1}]\n        gateways: [{address: 1.2.3.4, port: 15443}]\n";
    let (mesh, warnings) = parse_mesh_config(cm).unwrap();
    assert_eq!(mesh.root_namespace, "mesh-root");
    assert_eq!(warnings[0].path, "data.mesh.bogus");
    let (nets, _) = parse_mesh_networks(cm).unwrap();
    assert_eq!(nets.networks["net1"].gateways[0].port, 15443);
    let err = parse_mesh_config("connectTimeout: soon").unwrap_err();
    assert_eq!(err.path, "connectTimeout");
}

#[test]
fn serialization_keeps_istio_shape() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: shop, resourceVersion: '7', generation: 2, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  hosts: [a]
  http:
  - match: [{uri: {prefix: /a}, headers: {x-b: {}}}]
    route: [{destination: {host: a}, weight: 100}]
    timeout: 1500ms
    directResponse: {status: 200, body: {string: hi}}
";
    let out = parse_str(text, "s.yaml");
    let json = serde_json::to_value(&out.resources[0].config).unwrap();
    assert_eq!(json["spec"]["http"][0]["timeout"], "1.5s");
    assert_eq!(json["spec"]["http"][0]["match"][0]["uri"]["prefix"], "/a");
    assert_eq!(
        json["spec"]["http"][0]["match"][0]["headers"]["x-b"],
        serde_json::json!({})
    );
    assert_eq!(
        json["spec"]["http"][0]["directResponse"]["body"]["string"],
        "hi"
    );
    assert_eq!(json["metadata"]["resourceVersion"], "7");
    assert_eq!(json["metadata"]["generation"], 2);
    assert!(
        json["spec"].get("gateways").is_none(),
        "empty lists are left out"
    );
}
