//! mesh-sidecar: takes Envoy's place next to the control plane, with Envoy's bootstrap,
//! command-line flags and admin answers.
//!
//! ```text
//! mesh-sidecar -c BOOTSTRAP [--admin-address-path FILE] [--concurrency N] [-l LEVEL]
//!              [--log-path FILE] [--disable-hot-restart] [--drain-time-s N] [--mode validate]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_proxy::sidecar::{Sidecar, SidecarOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Envoy's flags that mesh-sidecar implements (the others are errors, named by clap).
#[derive(Parser, Debug)]
#[command(
    name = "mesh-sidecar",
    version,
    about = "An Envoy-compatible sidecar proxy driven by xDS (mesh-proxy)"
)]
struct Args {
    /// Path to the v3 bootstrap (YAML or JSON), as Envoy's -c.
    #[arg(short = 'c', long = "config-path")]
    config_path: Option<PathBuf>,
    /// Bootstrap given inline (YAML or JSON), as Envoy's --config-yaml.
    #[arg(long = "config-yaml")]
    config_yaml: Option<String>,
    /// Write the bound admin address (host:port) to this file.
    #[arg(long = "admin-address-path")]
    admin_address_path: Option<PathBuf>,
    /// Worker threads (default: the number of cores, as Envoy).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Log level: trace, debug, info, warning, warn, error, critical or off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    /// Write logs to this file instead of standard error.
    #[arg(long = "log-path")]
    log_path: Option<PathBuf>,
    /// Accepted for Envoy compatibility: mesh-sidecar has no hot restart.
    #[arg(long = "disable-hot-restart")]
    disable_hot_restart: bool,
    /// Accepted for Envoy compatibility (no shared memory is used).
    #[arg(long = "base-id")]
    base_id: Option<u32>,
    /// Accepted for Envoy compatibility.
    #[arg(long = "use-dynamic-base-id")]
    use_dynamic_base_id: bool,
    /// How long connections on removed listeners may go on, in seconds (600).
    #[arg(long = "drain-time-s")]
    drain_time_s: Option<u64>,
    /// `serve` (default) or `validate` (check the bootstrap and exit).
    #[arg(long, default_value = "serve")]
    mode: String,
}

fn level(s: &str) -> Result<Option<tracing::Level>, String> {
    Ok(match s {
        "trace" => Some(tracing::Level::TRACE),
        "debug" => Some(tracing::Level::DEBUG),
        "info" => Some(tracing::Level::INFO),
        "warning" | "warn" => Some(tracing::Level::WARN),
        "error" | "critical" => Some(tracing::Level::ERROR),
        "off" => None,
        other => {
            return Err(format!(
                "invalid log level '{other}': use one of trace, debug, info, warning, error, critical, off"
            ));
        }
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let lvl = match level(&args.log_level) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mesh-sidecar: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(l) = lvl {
        let builder = tracing_subscriber::fmt().with_max_level(l).with_ansi(false);
        match &args.log_path {
            Some(p) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).init(),
                Err(e) => {
                    eprintln!("mesh-sidecar: cannot open --log-path {}: {e}", p.display());
                    return ExitCode::from(1);
                }
            },
            None => builder.with_writer(std::io::stderr).init(),
        }
    }
    let concurrency = match args.concurrency {
        Some(0) => {
            eprintln!(
                "mesh-sidecar: --concurrency 0 starts no worker: use --concurrency 1 or more"
            );
            return ExitCode::from(1);
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if args.mode != "serve" && args.mode != "validate" {
        eprintln!(
            "mesh-sidecar: invalid --mode '{}': use serve or validate",
            args.mode
        );
        return ExitCode::from(1);
    }
    let opts = SidecarOptions {
        config_path: args.config_path,
        config_yaml: args.config_yaml,
        admin_address_path: args.admin_address_path,
        concurrency,
        drain_time: args.drain_time_s.map(Duration::from_secs),
        command_line: serde_json::json!({
            "log_level": args.log_level,
            "log_path": args.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "disable_hot_restart": args.disable_hot_restart,
            "base_id": args.base_id.unwrap_or(0).to_string(),
            "use_dynamic_base_id": args.use_dynamic_base_id,
            "mode": if args.mode == "validate" { "Validate" } else { "Serve" },
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    };
    if args.mode == "validate" {
        return match mesh_proxy::sidecar::validate(&opts) {
            Ok(()) => {
                println!(
                    "configuration '{}' OK",
                    opts.config_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "--config-yaml".into())
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mesh-sidecar: {e}");
                ExitCode::from(1)
            }
        };
    }
    // Admin and xDS run on this thread's runtime; the data plane on the workers.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh-sidecar: cannot start the main runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // With --log-path the log file gets the start-up error too; otherwise standard error
    // already shows it once.
    let logs_to_file = args.log_path.is_some();
    rt.block_on(async move {
        let sidecar = match Sidecar::start(opts).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mesh-sidecar: {e}");
                if logs_to_file {
                    tracing::error!("{e}");
                }
                return ExitCode::from(1);
            }
        };
        tracing::info!(admin = ?sidecar.admin, "mesh-sidecar started");
        tokio::select! {
            _ = sidecar.wait() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        ExitCode::SUCCESS
    })
}
