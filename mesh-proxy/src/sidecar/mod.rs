//! A whole proxy from an Envoy bootstrap: what `mesh-sidecar` runs.
//!
//! [`Sidecar::start`] parses and validates the bootstrap before anything binds (a field this
//! proxy does not implement is an error naming it), starts the workers, installs the static
//! clusters and listeners, binds the admin address (writing it to `--admin-address-path`),
//! and opens the ADS stream named by `dynamic_resources.ads_config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap as BootstrapProto;
use prost::Message;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::endpoint::EndpointAddress;
use crate::listener::Workers;
use crate::server::{Server, Shared};
use crate::xds::{ClientConfig, XdsClient, XdsTransport};

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// The bootstrap file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bootstrap does not parse.
    #[error("unable to parse the bootstrap: {0}")]
    Parse(#[from] crate::proto::BootstrapParseError),
    /// The bootstrap asks for something this proxy cannot do.
    #[error("invalid bootstrap: {0}")]
    Invalid(String),
    /// A static resource could not be installed.
    #[error("static resource {name}: {reason}")]
    Static {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A socket or thread could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How to run (Envoy's command-line options).
#[derive(Clone, Debug, Default)]
pub struct SidecarOptions {
    /// `-c`: the bootstrap file.
    pub config_path: Option<PathBuf>,
    /// `--config-yaml`: bootstrap text (merged over the file when both are given; used
    /// alone here).
    pub config_yaml: Option<String>,
    /// `--admin-address-path`: where the bound admin address is written.
    pub admin_address_path: Option<PathBuf>,
    /// `--concurrency`: worker threads (Envoy defaults to the number of cores).
    pub concurrency: usize,
    /// `--drain-time-s`.
    pub drain_time: Option<Duration>,
    /// Further command-line options as Envoy names them in `/server_info`
    /// (`command_line_options`: `log_level`, `log_path`, `disable_hot_restart`, ...).
    pub command_line: serde_json::Map<String, serde_json::Value>,
}

/// A running sidecar.
pub struct Sidecar {
    /// The bound admin address, if the bootstrap has an admin listener.
    pub admin: Option<SocketAddr>,
    server: Arc<Server>,
    quit: watch::Receiver<bool>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// Reads and parses the bootstrap named by the options.
pub fn load_bootstrap(opts: &SidecarOptions) -> Result<BootstrapProto, SidecarError> {
    let text = match (&opts.config_yaml, &opts.config_path) {
        (Some(y), _) => y.clone(),
        (None, Some(p)) => std::fs::read_to_string(p).map_err(|e| SidecarError::Read {
            path: p.clone(),
            source: e,
        })?,
        (None, None) => {
            return Err(SidecarError::Invalid(
                "no bootstrap: pass -c FILE (or --config-yaml TEXT)".into(),
            ));
        }
    };
    Ok(crate::proto::parse_bootstrap(&text)?)
}

/// Checks a bootstrap without starting anything (Envoy's `--mode validate`).
pub fn validate(opts: &SidecarOptions) -> Result<(), SidecarError> {
    let proto = load_bootstrap(opts)?;
    let b = crate::proto::bootstrap(proto).map_err(|e| SidecarError::Invalid(e.to_string()))?;
    if let Some(ads) = &b.ads
        && !b.static_clusters.iter().any(|c| c.name == ads.cluster)
    {
        return Err(SidecarError::Invalid(format!(
            "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: unknown cluster '{}'",
            ads.cluster
        )));
    }
    Ok(())
}

impl Sidecar {
    /// Validates the bootstrap, then starts everything. Nothing binds when the bootstrap is
    /// invalid.
    pub async fn start(opts: SidecarOptions) -> Result<Sidecar, SidecarError> {
        // Parsing decodes Envoy's descriptors, megabytes needed once: on a thread of its own,
        // so that what it allocates goes back with the thread's heap instead of staying in
        // the proxy's.
        let parsed = std::thread::scope(|s| {
            s.spawn(|| {
                let proto = load_bootstrap(&opts)?;
                let json = bootstrap_json(&proto);
                crate::descriptors::release();
                Ok::<_, SidecarError>((proto, json))
            })
            .join()
        });
        let (proto, json) = match parsed {
            Ok(r) => r?,
            Err(_) => {
                return Err(SidecarError::Invalid(
                    "the bootstrap parser panicked".into(),
                ));
            }
        };
        Self::start_parsed(proto, json, opts).await
    }

    /// [`Sidecar::start`] with an already parsed bootstrap.
    pub async fn start_with(
        proto: BootstrapProto,
        opts: SidecarOptions,
    ) -> Result<Sidecar, SidecarError> {
        let json = bootstrap_json(&proto);
        Self::start_parsed(proto, json, opts).await
    }

    async fn start_parsed(
        proto: BootstrapProto,
        bootstrap_json: serde_json::Value,
        opts: SidecarOptions,
    ) -> Result<Sidecar, SidecarError> {
        let node_proto = proto.node.clone().unwrap_or_default();
        let static_clusters: Vec<Vec<u8>> = proto
            .static_resources
            .as_ref()
            .map(|s| s.clusters.iter().map(|c| c.encode_to_vec()).collect())
            .unwrap_or_default();
        let static_listeners: Vec<Vec<u8>> = proto
            .static_resources
            .as_ref()
            .map(|s| s.listeners.iter().map(|l| l.encode_to_vec()).collect())
            .unwrap_or_default();
        let b = crate::proto::bootstrap(proto).map_err(|e| SidecarError::Invalid(e.to_string()))?;

        // The ADS cluster must be a static cluster with an address.
        let ads = match &b.ads {
            Some(ads) => {
                let c = b
                    .static_clusters
                    .iter()
                    .find(|c| c.name == ads.cluster)
                    .ok_or_else(|| {
                        SidecarError::Invalid(format!(
                            "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: unknown cluster '{}'; name a cluster of static_resources.clusters",
                            ads.cluster
                        ))
                    })?;
                if !matches!(c.transport, crate::config::tls::UpstreamTransport::Plain) {
                    return Err(SidecarError::Invalid(format!(
                        "static_resources.clusters[{}].transport_socket: TLS to the control plane is not supported yet; reach it in plaintext or through an agent's local socket (pipe)",
                        c.name
                    )));
                }
                let addr = match &c.discovery {
                    crate::config::cluster::Discovery::Static(la)
                    | crate::config::cluster::Discovery::StrictDns(la)
                    | crate::config::cluster::Discovery::LogicalDns(la) => la
                        .localities
                        .iter()
                        .flat_map(|l| l.endpoints.iter())
                        .map(|e| e.address.clone())
                        .next(),
                    _ => None,
                };
                let transport = match addr {
                    Some(EndpointAddress::Socket(a)) => XdsTransport::Tcp(a),
                    Some(EndpointAddress::Pipe(p)) => XdsTransport::Unix(p),
                    Some(EndpointAddress::Dns { host, port }) => {
                        let a = tokio::net::lookup_host((host.as_str(), port))
                            .await
                            .ok()
                            .and_then(|mut i| i.next())
                            .ok_or_else(|| {
                                SidecarError::Invalid(format!(
                                    "static_resources.clusters[{}]: cannot resolve {host}",
                                    c.name
                                ))
                            })?;
                        XdsTransport::Tcp(a)
                    }
                    None => {
                        return Err(SidecarError::Invalid(format!(
                            "static_resources.clusters[{}].load_assignment: the xDS cluster has no endpoint",
                            c.name
                        )));
                    }
                };
                Some((ads.clone(), transport, c.connect_timeout))
            }
            None => None,
        };

        let workers = Workers::start(opts.concurrency.max(1)).map_err(|e| SidecarError::Io {
            what: "cannot start workers".into(),
            source: e,
        })?;
        let mut shared = Shared::new(workers, b.dns_resolvers.clone());
        if let Some(d) = opts.drain_time
            && let Some(s) = Arc::get_mut(&mut shared)
        {
            s.drain_time = d;
        }
        let expect_cds = b.cds_over_ads && ads.is_some();
        let expect_lds = b.lds_over_ads && ads.is_some();
        let server = Server::new(shared.clone(), expect_cds, expect_lds);
        let mut node = node_proto;
        node.user_agent_name = "mesh-sidecar".into();
        node.user_agent_version_type = Some(
            envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into(),
            ),
        );
        // SDS streams send the same node as the ADS stream.
        shared.secrets.set_node(node.clone());
        for (c, raw) in b.static_clusters.iter().zip(static_clusters) {
            server
                .add_static_cluster(c.clone(), raw.into())
                .map_err(|reason| SidecarError::Static {
                    name: c.name.clone(),
                    reason,
                })?;
        }
        for (l, raw) in b.static_listeners.iter().zip(static_listeners) {
            server
                .add_static_listener(l.clone(), raw.into())
                .map_err(|reason| SidecarError::Static {
                    name: l.name.clone(),
                    reason,
                })?;
        }
        server.static_resources_added();
        let mut tasks = Vec::new();
        let (quit_tx, quit) = watch::channel(false);
        let mut admin_addr = None;
        if let Some(addr) = b.admin {
            let (listener, bound) =
                crate::admin::bind(addr)
                    .await
                    .map_err(|e| SidecarError::Io {
                        what: format!("cannot bind admin address {addr}"),
                        source: e,
                    })?;
            admin_addr = Some(bound);
            if let Some(p) = &opts.admin_address_path {
                std::fs::write(p, bound.to_string()).map_err(|e| SidecarError::Io {
                    what: format!("cannot write {}", p.display()),
                    source: e,
                })?;
            }
            let admin = Arc::new(Admin {
                server: server.clone(),
                bootstrap: bootstrap_json,
                command_line: {
                    let mut c = opts.command_line.clone();
                    c.insert("concurrency".into(), opts.concurrency.into());
                    let path = |p: &Option<PathBuf>| {
                        p.as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    };
                    c.insert("config_path".into(), path(&opts.config_path).into());
                    c.insert(
                        "config_yaml".into(),
                        opts.config_yaml.clone().unwrap_or_default().into(),
                    );
                    c.insert(
                        "admin_address_path".into(),
                        path(&opts.admin_address_path).into(),
                    );
                    if let Some(d) = opts.drain_time {
                        c.insert("drain_time".into(), format!("{}s", d.as_secs()).into());
                    }
                    serde_json::Value::Object(c)
                },
                started: Instant::now(),
                quit: quit_tx,
            });
            tasks.push(tokio::spawn(admin.serve(listener)));
        }
        if let Some((ads, transport, connect_timeout)) = ads {
            let client = XdsClient::new(
                ClientConfig {
                    node,
                    api: ads.api,
                    set_node_on_first_message_only: ads.set_node_on_first_message_only,
                    cds: b.cds_over_ads,
                    lds: b.lds_over_ads,
                    transport,
                    connect_timeout,
                    backoff_base: Duration::from_millis(500),
                    backoff_max: Duration::from_secs(30),
                    connections: Some(
                        shared
                            .stats
                            .counter(format!("cluster.{}.upstream_cx_total", ads.cluster)),
                    ),
                },
                server.clone(),
            );
            tasks.push(tokio::spawn(client.run()));
            for (cds, timeout) in [
                (true, b.cds_initial_fetch_timeout),
                (false, b.lds_initial_fetch_timeout),
            ] {
                if let Some(t) = timeout {
                    let s = server.clone();
                    tasks.push(tokio::spawn(async move {
                        tokio::time::sleep(t).await;
                        s.initial_fetch_timed_out(cds);
                    }));
                }
            }
        }
        // The descriptor pool was needed for the bootstrap only; `/config_dump` decodes it again.
        crate::descriptors::release();
        Ok(Sidecar {
            admin: admin_addr,
            server,
            quit,
            _tasks: tasks,
        })
    }

    /// The config manager.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Waits until `/quitquitquit` is called.
    pub async fn wait(mut self) {
        while !*self.quit.borrow() {
            if self.quit.changed().await.is_err() {
                break;
            }
        }
    }
}

fn bootstrap_json(b: &BootstrapProto) -> serde_json::Value {
    let raw = b.encode_to_vec();
    match crate::descriptors::resource_json(
        "bootstrap",
        "type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap",
        &raw,
    ) {
        Ok(mut v) => {
            if let Some(o) = v.as_object_mut() {
                o.remove("@type");
            }
            v
        }
        Err(_) => serde_json::Value::Null,
    }
}
