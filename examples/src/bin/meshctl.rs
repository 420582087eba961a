//! `meshctl`: command-line tools for a mesh.
//!
//! `meshctl validate PATH...` checks Istio manifests (files, directories, or `-` for stdin) as
//! `istioctl validate` does. Exit codes: 0 = all valid, 1 = invalid resources, 2 = usage
//! error or unreadable input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_model::MeshConfig;
use mesh_model::parse::{ParseOutput, count_findings};
use mesh_model::validate::{
    Finding, ResourceRef, SourceLocation, ValidationContext, validate_mesh_config,
};

#[derive(Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Tools for a mesh built from the mesh crates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate Istio manifests (files, directories searched recursively, or - for stdin).
    Validate {
        /// Files or directories; `-` reads standard input.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
        /// The mesh root namespace (policies there apply mesh-wide); default: the mesh
        /// config's, else istio-system.
        #[arg(long)]
        root_namespace: Option<String>,
        /// Also run the cross-resource checks of `istioctl analyze` (conflicting
        /// VirtualService hosts and Sidecars, references to missing gateways and delegates).
        #[arg(long)]
        analyze: bool,
        /// A MeshConfig file (or the `istio` ConfigMap) to validate and take defaults from.
        #[arg(long, value_name = "FILE")]
        mesh_config: Option<PathBuf>,
    },
    /// Show the xDS sync status of every connected proxy, like `istioctl proxy-status`.
    ProxyStatus {
        /// The control plane's debug address.
        #[arg(long, default_value = "127.0.0.1:15014")]
        debug_addr: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors to stderr.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Validate {
            paths,
            output,
            root_namespace,
            analyze,
            mesh_config,
        } => validate(
            &paths,
            output,
            root_namespace,
            analyze,
            mesh_config.as_deref(),
        ),
        Command::ProxyStatus { debug_addr } => match proxy_status(&debug_addr) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meshctl: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn read_inputs(paths: &[PathBuf]) -> Result<ParseOutput, String> {
    let mut out = ParseOutput::default();
    for p in paths {
        let parsed = if p.as_os_str() == "-" {
            mesh_model::parse_reader(std::io::stdin().lock(), "-")
        } else {
            mesh_model::parse_path(p)
        };
        out.extend(parsed.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Reads and validates a MeshConfig file; its findings are located in that file.
fn read_mesh_config(path: &Path) -> Result<(MeshConfig, Vec<Finding>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let loc = SourceLocation {
        file: path.to_path_buf(),
        line: 1,
    };
    let resource = ResourceRef::new("MeshConfig", "-", "mesh");
    let locate = |f: Finding| f.with_location(loc.clone()).with_resource(resource.clone());
    match mesh_model::parse_mesh_config(&text) {
        Ok((mesh, warnings)) => {
            let mut findings: Vec<Finding> = warnings.into_iter().map(locate).collect();
            findings.extend(validate_mesh_config(&mesh).into_iter().map(locate));
            Ok((mesh, findings))
        }
        Err(f) => Ok((MeshConfig::default(), vec![locate(*f)])),
    }
}

fn validate(
    paths: &[PathBuf],
    output: Output,
    root_namespace: Option<String>,
    analyze: bool,
    mesh_config: Option<&Path>,
) -> ExitCode {
    let parsed = match read_inputs(paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("meshctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut findings: Vec<Finding> = parsed.findings.clone();
    let mut ctx = ValidationContext::default();
    if let Some(path) = mesh_config {
        match read_mesh_config(path) {
            Ok((mesh, mesh_findings)) => {
                ctx.root_namespace = mesh.root_namespace;
                findings.extend(mesh_findings);
            }
            Err(e) => {
                eprintln!("meshctl: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(ns) = root_namespace {
        ctx.root_namespace = ns;
    }
    for r in &parsed.resources {
        findings.extend(r.check(&ctx));
    }
    if analyze {
        let configs: Vec<&mesh_model::Config> =
            parsed.resources.iter().map(|r| &r.config).collect();
        let locations: std::collections::BTreeMap<_, _> = parsed
            .resources
            .iter()
            .map(|r| (r.config.key(), r.location.clone()))
            .collect();
        for f in mesh_model::validate::analyze(&configs) {
            let loc = f.resource.as_ref().and_then(|res| {
                let kind = mesh_model::Kind::from_name(&res.kind)?;
                locations
                    .get(&mesh_model::ResourceKey::new(
                        kind,
                        &res.namespace,
                        &res.name,
                    ))
                    .cloned()
            });
            findings.push(match loc {
                Some(l) => f.with_location(l),
                None => f,
            });
        }
    }
    findings.sort_by(|a, b| {
        (&a.location, a.severity == mesh_model::Severity::Warning)
            .cmp(&(&b.location, b.severity == mesh_model::Severity::Warning))
    });
    let (errors, warnings) = count_findings(&findings);
    let invalid: std::collections::BTreeSet<_> = findings
        .iter()
        .filter(|f| f.is_error())
        .map(|f| (f.location.clone(), f.resource.clone()))
        .collect();
    // Documents of Istio kinds: typed resources plus those that failed to decode.
    let undecodable = parsed
        .findings
        .iter()
        .filter(|f| f.is_error())
        .map(|f| &f.location)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let checked = parsed.resources.len() + undecodable;
    let skipped = parsed.skipped.len();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = match output {
        Output::Text => {
            let mut res = Ok(());
            for f in &findings {
                res = res.and_then(|()| writeln!(out, "{f}"));
            }
            let skipped_kinds = parsed
                .skipped_by_kind()
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let skipped_detail = if skipped > 0 {
                format!(" ({skipped_kinds})")
            } else {
                String::new()
            };
            let verdict = if errors == 0 {
                "valid".to_string()
            } else {
                format!("{} invalid", invalid.len())
            };
            res.and_then(|()| {
                writeln!(
                    out,
                    "{checked} Istio resources checked, {verdict}; {errors} errors, {warnings} warnings; \
                     {skipped} non-Istio objects skipped{skipped_detail}"
                )
            })
        }
        Output::Json => {
            let doc = serde_json::json!({
                "resources": checked,
                "invalid": invalid.len(),
                "errors": errors,
                "warnings": warnings,
                "skipped": parsed.skipped_by_kind(),
                "findings": findings,
            });
            serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out))
        }
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("meshctl: writing output: {e}");
        return ExitCode::from(2);
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A plain HTTP/1.1 GET (the debug endpoint is local; no client library needed).
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    let timeout = Some(std::time::Duration::from_secs(10));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{path}: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

/// The `/debug/syncz` table.
fn proxy_status(addr: &str) -> Result<String, String> {
    let body = http_get(addr, "/debug/syncz")?;
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&body).map_err(|e| format!("/debug/syncz: {e}"))?;
    let mut rows = vec![
        ["NAME", "CDS", "LDS", "EDS", "RDS", "PROTOCOL", "VERSION"]
            .map(String::from)
            .to_vec(),
    ];
    for c in &list {
        let status = |t: &str| {
            let s = &c["types"][t];
            match (s["status"].as_str(), s["nack"].as_str()) {
                (Some("ERROR"), Some(detail)) => {
                    format!("ERROR: {}", detail.lines().next().unwrap_or_default())
                }
                (Some(st), _) => st.to_string(),
                _ => "IGNORED".into(),
            }
        };
        rows.push(vec![
            c["proxy"].as_str().unwrap_or_default().to_string(),
            status("cds"),
            status("lds"),
            status("eds"),
            status("rds"),
            c["protocol"].as_str().unwrap_or_default().to_string(),
            c["istio_version"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}
