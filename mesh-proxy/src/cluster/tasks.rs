//! Background work of active clusters: DNS resolution (STRICT_DNS, LOGICAL_DNS) and outlier
//! detection's interval. Each task holds its cluster weakly and ends when the cluster goes.

use std::sync::{Arc, Weak};

use super::runtime::ClusterRuntime;
use crate::config::cluster::Discovery;
use crate::config::endpoint::{EndpointAddress, LoadAssignment};
use crate::server::Shared;

/// Starts the tasks a cluster needs (on the first worker).
pub fn start(shared: &Arc<Shared>, rt: &Arc<ClusterRuntime>) {
    let Some(handle) = shared.workers.handles().first().cloned() else {
        return;
    };
    if let Some(interval) = rt.outlier_interval() {
        let weak = Arc::downgrade(rt);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(rt) = weak.upgrade() else { return };
                rt.outlier_tick();
            }
        });
    }
    let la = match &rt.config().discovery {
        Discovery::StrictDns(la) => Some((la.clone(), false)),
        Discovery::LogicalDns(la) => Some((la.clone(), true)),
        _ => None,
    };
    if let Some((la, logical)) = la {
        let weak = Arc::downgrade(rt);
        let shared = shared.clone();
        handle.spawn(resolve_loop(weak, shared, la, logical));
    }
}

async fn resolve_loop(
    weak: Weak<ClusterRuntime>,
    shared: Arc<Shared>,
    la: LoadAssignment,
    logical: bool,
) {
    loop {
        let Some(rt) = weak.upgrade() else { return };
        let family = rt.config().dns_lookup_family;
        let refresh = rt.config().dns_refresh_rate;
        let mut resolved = la.clone();
        for loc in &mut resolved.localities {
            let mut eps = Vec::new();
            for ep in &loc.endpoints {
                match &ep.address {
                    EndpointAddress::Dns { host, port } => {
                        let ips = shared.dns.lookup(host, family).await;
                        let ips = if logical {
                            ips.into_iter().take(1).collect()
                        } else {
                            ips
                        };
                        for ip in ips {
                            let mut e = ep.clone();
                            e.address =
                                EndpointAddress::Socket(std::net::SocketAddr::new(ip, *port));
                            if e.hostname.is_empty() {
                                e.hostname = host.clone();
                            }
                            eps.push(e);
                        }
                    }
                    _ => eps.push(ep.clone()),
                }
            }
            loc.endpoints = eps;
        }
        rt.set_resolved(resolved);
        drop(rt);
        tokio::time::sleep(refresh.max(std::time::Duration::from_millis(100))).await;
    }
}
