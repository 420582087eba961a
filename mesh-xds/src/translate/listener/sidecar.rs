//! The sidecar entry point: egress listeners per Sidecar egress entry, inbound chains, the
//! virtual listeners under capture, or API listeners for proxyless gRPC.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};

use super::context::ListenerContext;
use super::egress::bound_listener;
use super::filters::hcm;
use super::virtual_listeners::virtual_outbound;
use crate::pb::any;
use crate::proxy::InterceptionMode;
use crate::registry::Service;
use crate::translate::Sink;
use crate::translate::route::{self};

/// Sidecar listeners.
pub(crate) fn sidecar_listeners(lx: ListenerContext<'_>, out: &mut dyn Sink) {
    let ListenerContext {
        ctx: _,
        proxy,
        scope,
    } = lx;
    if proxy.proxyless_grpc {
        proxyless_listeners(lx, out);
        return;
    }
    let capture = proxy.interception_mode != InterceptionMode::None;
    super::inbound::sidecar_inbound(lx, out);
    // A port belongs to the first egress listener that names it; the catch-all takes the rest.
    let mut taken_ports = BTreeSet::new();
    for eg in &scope.egress {
        let imports = |ns: &str, host: &str| eg.imports(ns, host);
        match eg.port {
            Some(port) if eg.binds_port(proxy) => {
                taken_ports.insert(port);
                bound_listener(lx, eg, port, &imports, out);
            }
            Some(port) if capture && taken_ports.insert(port) => {
                let services = lx.services_on(port, &imports);
                super::outbound::captured_port(lx, port, &services, &imports, out);
            }
            None if capture => {
                // The imported services by port, built once (not one scan per port).
                let mut by_port: BTreeMap<u32, Vec<&Service>> = BTreeMap::new();
                for s in scope
                    .services
                    .iter()
                    .copied()
                    .filter(|s| imports(&s.namespace, &s.hostname))
                {
                    for p in &s.ports {
                        let at = by_port.entry(p.number).or_default();
                        // A service listing a port twice counts once.
                        if !at.last().is_some_and(|l| std::ptr::eq(*l, s)) {
                            at.push(s);
                        }
                    }
                }
                for (port, services) in by_port {
                    if taken_ports.insert(port) {
                        super::outbound::captured_port(lx, port, &services, &imports, out);
                    }
                }
            }
            _ => {}
        }
    }
    if capture {
        virtual_outbound(lx, out);
    }
}

/// Proxyless gRPC clients: one API listener `HOST:PORT` per HTTP service port, each with its own
/// route config of the same name.
fn proxyless_listeners(lx: ListenerContext<'_>, out: &mut dyn Sink) {
    let ListenerContext { ctx, proxy, scope } = lx;
    for svc in &scope.services {
        for p in svc.ports.iter().filter(|p| p.is_http()) {
            let name = format!("{}:{}", svc.hostname, p.number);
            let host = svc.hostname.clone();
            let only = move |_: &str, h: &str| h == host;
            let mut rc =
                route::sidecar_route_config(ctx, proxy, scope, p.number, &only, name.clone());
            // gRPC clients have no use for the catch-all; they dial one name.
            rc.virtual_hosts
                .retain(|v| v.name != "allow_any" && v.name != "block_all");
            out.route(rc);
            out.listener(Listener {
                name: name.clone(),
                api_listener: Some(ApiListener {
                    api_listener: Some(any(&hcm(ctx, &name, &name, true, &[]))),
                }),
                ..Default::default()
            });
        }
    }
}
