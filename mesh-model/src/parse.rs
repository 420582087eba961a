//! Reading manifests: multi-document YAML and JSON, `List` kinds, directories.
//!
//! This follows `kubectl apply -f`: documents are separated by `---` lines; `List` kinds
//! (`kind: List`, `VirtualServiceList`, ...) are expanded; objects of non-Istio kinds
//! (Deployment, Service, ...) are skipped and counted; a namespace left out is `default`.
//! Every problem becomes a [`Finding`] that names the file and the line the document starts
//! on, and, once known, the resource and the field path. One bad document never hides the
//! others.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use crate::config::Config;
use crate::meta::{DEFAULT_NAMESPACE, Kind, Resource, Spec};
use crate::networking::destination_rule::DestinationRuleSpec;
use crate::networking::gateway::GatewaySpec;
use crate::networking::service_entry::ServiceEntrySpec;
use crate::networking::sidecar::SidecarSpec;
use crate::networking::virtual_service::VirtualServiceSpec;
use crate::networking::workload::{WorkloadEntrySpec, WorkloadGroupSpec};
use crate::security::authorization_policy::AuthorizationPolicySpec;
use crate::security::peer_authentication::PeerAuthenticationSpec;
use crate::security::request_authentication::RequestAuthenticationSpec;
use crate::validate::{Finding, ResourceRef, Severity, SourceLocation, ValidationContext};

/// Errors that stop reading an input altogether (as opposed to [`Finding`]s about its
/// contents).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A path that is neither a file nor a directory.
    #[error("{0}: not a file or directory")]
    NotAFile(PathBuf),
}

/// A resource read from a manifest, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedResource {
    /// The typed resource.
    pub config: Config,
    /// Where its document starts.
    pub location: SourceLocation,
    /// Problems found while reading it (unknown fields); errors make it invalid.
    pub findings: Vec<Finding>,
}

impl ParsedResource {
    /// Parse findings plus validation findings, all located.
    pub fn check(&self, ctx: &ValidationContext) -> Vec<Finding> {
        let mut all = self.findings.clone();
        all.extend(
            crate::validate::validate_with(&self.config, ctx)
                .into_iter()
                .map(|f| f.with_location(self.location.clone())),
        );
        all
    }
}

/// A Kubernetes object of a kind that is not Istio's, skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Where it is.
    pub location: SourceLocation,
}

/// Everything read from one or more inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParseOutput {
    /// Resources of the supported kinds, in input order.
    pub resources: Vec<ParsedResource>,
    /// Non-Istio objects, skipped.
    pub skipped: Vec<Skipped>,
    /// Documents that could not be read as a supported resource (syntax errors, unknown Istio
    /// kinds, type errors), and warnings for Istio kinds this crate does not model.
    pub findings: Vec<Finding>,
}

impl ParseOutput {
    /// Appends another output.
    pub fn extend(&mut self, other: ParseOutput) {
        self.resources.extend(other.resources);
        self.skipped.extend(other.skipped);
        self.findings.extend(other.findings);
    }

    /// How many skipped objects there are of each kind.
    pub fn skipped_by_kind(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for s in &self.skipped {
            *counts.entry(s.kind.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

/// Istio kinds that exist but that this crate does not model: reported as warnings.
const UNMODELLED_ISTIO_KINDS: &[&str] = &[
    "EnvoyFilter",
    "ProxyConfig",
    "Telemetry",
    "WasmPlugin",
    "IstioOperator",
];

/// Parses manifest text: YAML (one or more documents) or JSON. `source` labels the findings
/// (a file name, or `-` for stdin).
///
/// ```
/// let out = mesh_model::parse_str("
/// apiVersion: v1
/// kind: Service
/// metadata: {name: web}
/// ---
/// apiVersion: networking.istio.io/v1beta1
/// kind: DestinationRule
/// metadata: {name: web, namespace: shop}
/// spec: {host: web, subsets: [{name: v1, labels: {version: v1}}]}
/// ", "example.yaml");
/// assert_eq!(out.skipped.len(), 1);
/// assert_eq!(out.resources[0].config.key().to_string(), "DestinationRule shop/web");
/// assert_eq!(out.resources[0].location.line, 6);
/// ```
pub fn parse_str(text: &str, source: impl AsRef<Path>) -> ParseOutput {
    let source = source.as_ref();
    let mut out = ParseOutput::default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_json =
        source.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if is_json {
        parse_json_stream(text, source, &mut out);
    } else {
        for (line, doc) in split_yaml_documents(text) {
            if is_blank_yaml(doc) {
                continue;
            }
            // Point at the document's first line of content, not at the `---` before it.
            let leading = doc
                .lines()
                .take_while(|l| {
                    let t = l.trim();
                    t.is_empty() || t.starts_with('#') || t.starts_with('%')
                })
                .count();
            let loc = SourceLocation {
                file: source.to_path_buf(),
                line: line + leading,
            };
            match from_yaml(doc) {
                Ok(value) => decode_object(value, &loc, &mut out),
                Err(e) => {
                    let (msg, at) = yaml_error(&e);
                    let line = at.map_or(line, |l| line + l - 1);
                    out.findings.push(
                        Finding::error("", format!("invalid YAML: {msg}")).with_location(
                            SourceLocation {
                                file: source.to_path_buf(),
                                line,
                            },
                        ),
                    );
                }
            }
        }
    }
    out
}

/// Reads everything from `reader` and parses it (see [`parse_str`]).
pub fn parse_reader(
    mut reader: impl Read,
    source: impl AsRef<Path>,
) -> Result<ParseOutput, ParseError> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source_err| ParseError::Io {
            path: source.as_ref().to_path_buf(),
            source: source_err,
        })?;
    Ok(parse_bytes(&bytes, source))
}

fn parse_bytes(bytes: &[u8], source: impl AsRef<Path>) -> ParseOutput {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_str(text, source),
        Err(e) => {
            let mut out = ParseOutput::default();
            out.findings.push(
                Finding::error("", format!("input is not UTF-8: {e}")).with_location(
                    SourceLocation {
                        file: source.as_ref().to_path_buf(),
                        line: 1,
                    },
                ),
            );
            out
        }
    }
}

/// Parses a file, or every `*.yaml`, `*.yml` and `*.json` file below a directory (recursively,
/// in sorted order, following no symlinked directories twice).
pub fn parse_path(path: impl AsRef<Path>) -> Result<ParseOutput, ParseError> {
    let path = path.as_ref();
    let io = |source| ParseError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        let bytes = std::fs::read(path).map_err(io)?;
        return Ok(parse_bytes(&bytes, path));
    }
    if !meta.is_dir() {
        return Err(ParseError::NotAFile(path.to_path_buf()));
    }
    let mut out = ParseOutput::default();
    for file in manifest_files(path)? {
        out.extend(parse_path(&file)?);
    }
    Ok(out)
}

/// The manifest files below `dir`, sorted, recursively.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ParseError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(d) = stack.pop() {
        let canonical = std::fs::canonicalize(&d).unwrap_or_else(|_| d.clone());
        if !seen.insert(canonical) {
            continue;
        }
        let entries = std::fs::read_dir(&d).map_err(|source| ParseError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ParseError::Io {
                path: d.clone(),
                source,
            })?;
            let p = entry.path();
            let is_hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if is_hidden {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Splits YAML text on `---` document markers as kubectl does, returning each document with
/// the 1-based line it starts on. Text after `--- ` on the marker line belongs to the new
/// document; a `...` line ends a document.
pub fn split_yaml_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    let mut ended = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let is_marker =
            trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t");
        if is_marker {
            if !ended {
                docs.push((start_line, &text[start_byte..offset]));
            }
            ended = false;
            // Keep what follows the marker on its line.
            start_byte = offset + 3;
            start_line = i + 1;
        } else if trimmed == "..." {
            if !ended {
                docs.push((start_line, &text[start_byte..offset]));
            }
            ended = true;
        }
        offset += line.len();
    }
    if !ended {
        docs.push((start_line, &text[start_byte..]));
    }
    docs
}

/// Parses one YAML document into JSON.
///
/// Booleans are YAML 1.2's (`true`/`false` only): Kubernetes decodes `n`, `no`, `on` and `y`
/// into string fields as strings, and label values such as `n` must stay strings here too.
/// Duplicate keys are errors, as in kubectl's strict decoding. Alias expansion is budgeted,
/// so "billion laughs" documents fail instead of exhausting memory.
fn from_yaml(doc: &str) -> Result<Value, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_str_with_options(doc, options)
}

fn is_blank_yaml(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t.starts_with('%')
    })
}

fn yaml_error(e: &serde_saphyr::Error) -> (String, Option<usize>) {
    let line = e
        .location()
        .and_then(|l| usize::try_from(l.line()).ok())
        .filter(|l| *l > 0);
    let msg = e.without_snippet().to_string();
    let msg = msg.lines().next().unwrap_or_default().trim();
    // The location is relative to the document; the caller reports the absolute line.
    let msg = msg.split(" at line ").next().unwrap_or(msg).to_string();
    (msg, line)
}

fn parse_json_stream(text: &str, source: &Path, out: &mut ParseOutput) {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let start = stream.byte_offset();
        let line_of = |byte: usize| {
            let skip = text[byte..].find(|c: char| !c.is_whitespace()).unwrap_or(0);
            text[..byte + skip].matches('\n').count() + 1
        };
        match stream.next() {
            None => break,
            Some(Ok(value)) => {
                let loc = SourceLocation {
                    file: source.to_path_buf(),
                    line: line_of(start),
                };
                decode_object(value, &loc, out);
            }
            Some(Err(e)) => {
                out.findings.push(
                    Finding::error("", format!("invalid JSON: {e}")).with_location(
                        SourceLocation {
                            file: source.to_path_buf(),
                            line: e.line().max(1),
                        },
                    ),
                );
                break;
            }
        }
    }
}

/// Turns one decoded document into a resource, a skip, or findings.
fn decode_object(value: Value, loc: &SourceLocation, out: &mut ParseOutput) {
    let Value::Object(obj) = value else {
        if !value.is_null() {
            out.findings.push(
                Finding::error(
                    "",
                    "expected a Kubernetes object (a map with apiVersion and kind)",
                )
                .with_location(loc.clone()),
            );
        }
        return;
    };
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let api_version = text("apiVersion");
    let kind = text("kind");
    let meta = obj.get("metadata");
    let meta_text = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let namespace = Some(meta_text("namespace"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let resource = ResourceRef::new(&kind, namespace, meta_text("name"));

    if kind.is_empty() || api_version.is_empty() {
        let missing = if kind.is_empty() {
            "kind"
        } else {
            "apiVersion"
        };
        out.findings.push(
            Finding::error(missing, format!("{missing} is required"))
                .with_location(loc.clone())
                .with_resource(resource),
        );
        return;
    }

    // `kind: List` and typed lists (`VirtualServiceList`) carry their objects in `items`.
    if kind == "List" || (kind.ends_with("List") && obj.contains_key("items")) {
        match obj.get("items") {
            Some(Value::Array(items)) => {
                for item in items.iter().cloned() {
                    decode_object(item, loc, out);
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => out.findings.push(
                Finding::error("items", "items must be a list")
                    .with_location(loc.clone())
                    .with_resource(resource),
            ),
        }
        return;
    }

    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    if !(group == "istio.io" || group.ends_with(".istio.io")) {
        out.skipped.push(Skipped {
            api_version,
            kind,
            location: loc.clone(),
        });
        return;
    }
    let Some(k) = Kind::from_name(&kind).filter(|k| k.group() == group) else {
        if UNMODELLED_ISTIO_KINDS.contains(&kind.as_str()) {
            out.findings.push(
                Finding::warning(
                    "",
                    format!("{api_version} {kind} is not supported; skipped"),
                )
                .with_location(loc.clone())
                .with_resource(resource),
            );
        } else {
            out.findings.push(
                Finding::error("kind", format!("unknown Istio kind {kind:?} in {group}"))
                    .with_location(loc.clone())
                    .with_resource(resource),
            );
        }
        return;
    };
    if !k.versions().contains(&version) {
        out.findings.push(
            Finding::error(
                "apiVersion",
                format!(
                    "{kind} is not served at {api_version}; use one of {}",
                    k.versions()
                        .iter()
                        .map(|v| format!("{group}/{v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_location(loc.clone())
            .with_resource(resource),
        );
        return;
    }

    let value = Value::Object(obj);
    let decoded = match k {
        Kind::VirtualService => typed::<VirtualServiceSpec>(value),
        Kind::DestinationRule => typed::<DestinationRuleSpec>(value),
        Kind::Gateway => typed::<GatewaySpec>(value),
        Kind::ServiceEntry => typed::<ServiceEntrySpec>(value),
        Kind::Sidecar => typed::<SidecarSpec>(value),
        Kind::WorkloadEntry => typed::<WorkloadEntrySpec>(value),
        Kind::WorkloadGroup => typed::<WorkloadGroupSpec>(value),
        Kind::PeerAuthentication => typed::<PeerAuthenticationSpec>(value),
        Kind::AuthorizationPolicy => typed::<AuthorizationPolicySpec>(value),
        Kind::RequestAuthentication => typed::<RequestAuthenticationSpec>(value),
    };
    match decoded {
        Ok((config, unknown)) => {
            let findings = unknown
                .into_iter()
                .map(|path| {
                    Finding::error(path, "unknown field")
                        .with_location(loc.clone())
                        .with_resource(resource.clone())
                })
                .collect();
            out.resources.push(ParsedResource {
                config,
                location: loc.clone(),
                findings,
            });
        }
        Err((path, msg)) => out.findings.push(
            Finding::error(path, msg)
                .with_location(loc.clone())
                .with_resource(resource),
        ),
    }
}

/// Deserializes `value` as `Resource<S>`, returning the unknown field paths, or the path and
/// message of the first type error.
fn typed<S: Spec>(value: Value) -> Result<(Config, Vec<String>), (String, String)>
where
    Config: From<Resource<S>>,
{
    let (r, unknown) = deserialize_tracking::<Resource<S>>(value)?;
    Ok((Config::from(r), unknown))
}

/// Deserializes from a JSON value, collecting ignored (unknown) field paths and reporting
/// errors with the field path.
pub(crate) fn deserialize_tracking<T: DeserializeOwned>(
    value: Value,
) -> Result<(T, Vec<String>), (String, String)> {
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok((v, unknown)),
        Err(e) => {
            let path = error_path(e.path());
            Err((path, e.into_inner().to_string()))
        }
    }
}

fn push_segment(out: &mut String, seg: Segment<'_>) {
    match seg {
        Segment::Index(i) => {
            out.push('[');
            out.push_str(&i.to_string());
            out.push(']');
        }
        Segment::Key(k) => {
            let simple = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if simple {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            } else {
                out.push('[');
                out.push_str(k);
                out.push(']');
            }
        }
    }
}

enum Segment<'a> {
    Index(usize),
    Key(&'a str),
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut String) {
        use serde_ignored::Path as P;
        match path {
            P::Root => {}
            P::Seq { parent, index } => {
                walk(parent, out);
                push_segment(out, Segment::Index(*index));
            }
            P::Map { parent, key } => {
                walk(parent, out);
                push_segment(out, Segment::Key(key));
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                walk(parent, out)
            }
        }
    }
    let mut s = String::new();
    walk(path, &mut s);
    s
}

fn error_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment as S;
    let mut s = String::new();
    for seg in path.iter() {
        match seg {
            S::Seq { index } => push_segment(&mut s, Segment::Index(*index)),
            S::Map { key } => push_segment(&mut s, Segment::Key(key)),
            S::Enum { variant } => push_segment(&mut s, Segment::Key(variant)),
            S::Unknown => {}
        }
    }
    s
}

/// Reads MeshConfig from YAML or JSON: either the mesh config itself, or an `istio`
/// ConfigMap whose `data.mesh` holds it. Unknown fields come back as warnings.
///
/// ```
/// let (mesh, warnings) = mesh_model::parse_mesh_config("trustDomain: example.org\nfoo: 1\n").unwrap();
/// assert_eq!(mesh.trust_domain, "example.org");
/// assert_eq!(mesh.root_namespace, "istio-system"); // default kept
/// assert_eq!(warnings[0].path, "foo");
/// ```
pub fn parse_mesh_config(
    text: &str,
) -> Result<(crate::mesh::MeshConfig, Vec<Finding>), Box<Finding>> {
    parse_mesh_document(text, "mesh")
}

/// Reads MeshNetworks from YAML or JSON, or from a ConfigMap's `data.meshNetworks`.
pub fn parse_mesh_networks(
    text: &str,
) -> Result<(crate::mesh::MeshNetworks, Vec<Finding>), Box<Finding>> {
    parse_mesh_document(text, "meshNetworks")
}

fn parse_mesh_document<T: DeserializeOwned>(
    text: &str,
    configmap_key: &str,
) -> Result<(T, Vec<Finding>), Box<Finding>> {
    let yaml = |t: &str| {
        from_yaml(t).map_err(|e| {
            Box::new(Finding::error(
                "",
                format!("invalid YAML: {}", yaml_error(&e).0),
            ))
        })
    };
    let mut value = yaml(text)?;
    if value.is_null() {
        value = Value::Object(Default::default());
    }
    let mut prefix = String::new();
    if value.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
        let inner = value
            .get("data")
            .and_then(|d| d.get(configmap_key))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Box::new(Finding::error(
                    format!("data.{configmap_key}"),
                    "ConfigMap has no such key",
                ))
            })?;
        prefix = format!("data.{configmap_key}.");
        value = yaml(inner)?;
        if value.is_null() {
            value = Value::Object(Default::default());
        }
    }
    let (v, unknown) = deserialize_tracking::<T>(value)
        .map_err(|(path, msg)| Box::new(Finding::error(format!("{prefix}{path}"), msg)))?;
    let warnings = unknown
        .into_iter()
        .map(|p| Finding::warning(format!("{prefix}{p}"), "unknown field"))
        .collect();
    Ok((v, warnings))
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: skipped {} {}",
            self.location, self.api_version, self.kind
        )
    }
}

/// Severity counts over findings: `(errors, warnings)`.
pub fn count_findings<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> (usize, usize) {
    findings
        .into_iter()
        .fold((0, 0), |(e, w), f| match f.severity {
            Severity::Error => (e + 1, w),
            Severity::Warning => (e, w + 1),
        })
}
