//! `meshctl`: command-line tools for a mesh.
//!
//! `meshctl validate PATH...` checks Istio manifests (files, directories, or `-` for stdin) as
//! `istioctl validate` does. Exit codes: 0 = all valid, 1 = invalid resources, 2 = usage
//! error or unreadable input.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_model::parse::{ParseOutput, count_findings};
use mesh_model::validate::{Finding, ValidationContext};

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
        /// The mesh root namespace (policies there apply mesh-wide).
        #[arg(long, default_value = "istio-system")]
        root_namespace: String,
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
        } => validate(&paths, output, root_namespace),
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

fn validate(paths: &[PathBuf], output: Output, root_namespace: String) -> ExitCode {
    let parsed = match read_inputs(paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("meshctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut ctx = ValidationContext::default();
    ctx.root_namespace = root_namespace;
    let mut findings: Vec<Finding> = parsed.findings.clone();
    for r in &parsed.resources {
        findings.extend(r.check(&ctx));
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
