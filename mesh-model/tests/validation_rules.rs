//! Rule-by-rule validation tests driven by the fixture manifests.
//!
//! `fixtures/invalid/*.yaml`: every document breaks one rule and lists, in the annotation
//! `mesh.test/expect`, the findings it must produce (`severity: path: message fragment`, one per
//! line). The test fails if an expected finding is missing *or* if any other error appears, so
//! each document exercises exactly its rule.
//!
//! `fixtures/valid/*.yaml`: every document must produce no errors, and no warnings beyond
//! those it expects.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use mesh_model::parse::split_yaml_documents;
use mesh_model::validate::{Finding, Severity, ValidationContext};
use mesh_model::{Kind, parse_str};

const EXPECT: &str = "mesh.test/expect";

#[derive(Debug)]
struct Expectation {
    severity: Severity,
    path: String,
    fragment: String,
}

impl Expectation {
    fn parse(line: &str) -> Expectation {
        let (sev, rest) = line.split_once(": ").expect("severity: path: message");
        let (path, fragment) = rest.split_once(": ").expect("path: message");
        let severity = match sev {
            "error" => Severity::Error,
            "warning" => Severity::Warning,
            other => panic!("bad severity {other:?}"),
        };
        Expectation {
            severity,
            path: path.to_string(),
            fragment: fragment.to_string(),
        }
    }

    fn matches(&self, f: &Finding) -> bool {
        f.severity == self.severity && f.path == self.path && f.message.contains(&self.fragment)
    }
}

struct Case {
    name: String,
    kind: String,
    findings: Vec<Finding>,
    expected: Vec<Expectation>,
}

fn fixture_dir(which: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(which)
}

/// Parses every document of every file in `dir` on its own, with its findings.
fn cases(dir: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (_, doc) in split_yaml_documents(&text) {
            if doc.trim().is_empty() {
                continue;
            }
            let raw: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            let name = raw["metadata"]["name"].as_str().unwrap().to_string();
            let kind = raw["kind"].as_str().unwrap().to_string();
            let expected = raw["metadata"]["annotations"][EXPECT]
                .as_str()
                .map(|s| s.lines().map(Expectation::parse).collect())
                .unwrap_or_default();
            let parsed = parse_str(doc, &file);
            let mut findings = parsed.findings.clone();
            for r in &parsed.resources {
                findings.extend(r.check(&ValidationContext::default()));
            }
            assert!(
                parsed.resources.len() + parsed.findings.len() > 0,
                "{}: {kind} {name} produced nothing",
                file.display()
            );
            out.push(Case {
                name,
                kind,
                findings,
                expected,
            });
        }
    }
    out
}

fn check_case(case: &Case, failures: &mut Vec<String>) {
    let who = format!("{} {}", case.kind, case.name);
    for e in &case.expected {
        if !case.findings.iter().any(|f| e.matches(f)) {
            failures.push(format!(
                "{who}: expected {:?} at {} containing {:?}; got:\n    {}",
                e.severity,
                e.path,
                e.fragment,
                case.findings
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
    }
    for f in &case.findings {
        if !case.expected.iter().any(|e| e.matches(f)) {
            failures.push(format!("{who}: unexpected finding: {f}"));
        }
    }
}

#[test]
fn every_invalid_fixture_fails_with_exactly_its_findings() {
    let cases = cases(&fixture_dir("invalid"));
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            !case.expected.is_empty(),
            "{} {} has no {EXPECT}",
            case.kind,
            case.name
        );
        check_case(case, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every kind has invalid fixtures.
    for kind in Kind::ALL {
        assert!(
            cases.iter().any(|c| c.kind == kind.name()),
            "no invalid fixture for {kind}"
        );
    }
    assert!(cases.len() > 200, "only {} invalid cases", cases.len());
}

#[test]
fn every_valid_fixture_passes() {
    let cases = cases(&fixture_dir("valid"));
    let mut failures = Vec::new();
    for case in &cases {
        check_case(case, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for kind in Kind::ALL {
        assert!(
            cases.iter().any(|c| c.kind == kind.name()),
            "no valid fixture for {kind}"
        );
    }
}

#[test]
fn example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let parsed = mesh_model::parse_path(&dir).unwrap();
    assert!(parsed.findings.is_empty(), "{:?}", parsed.findings);
    assert!(parsed.resources.len() >= 20);
    let mut problems = Vec::new();
    for r in &parsed.resources {
        problems.extend(r.check(&ValidationContext::default()));
    }
    assert!(
        problems.is_empty(),
        "{}",
        problems
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The realistic mesh uses every networking and security kind but Gateway-less ones.
    for kind in [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
    ] {
        assert!(
            parsed.resources.iter().any(|r| r.config.kind() == kind),
            "examples/config has no {kind}"
        );
    }
}
