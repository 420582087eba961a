//! What a proxy can see: the Sidecar that applies to it, the services its egress listeners
//! import, and the DestinationRule and VirtualServices that apply to each service.

use mesh_model::Config;
use mesh_model::host::{host_matches, resolve_short_name};
use mesh_model::networking::destination_rule::{DestinationRuleSpec, Subset, TrafficPolicy};
use mesh_model::networking::sidecar::{
    CaptureMode, IstioEgressListener, OutboundTrafficPolicyMode, SidecarSpec,
};
use mesh_model::networking::virtual_service::VirtualServiceSpec;

use crate::proxy::{InterceptionMode, Proxy};
use crate::registry::Service;
use crate::registry::exported;
use crate::translate::PushContext;

/// One `ns/host` entry of an egress listener.
#[derive(Clone, Debug)]
struct ImportRule {
    namespace: String,
    host: String,
    exclude: bool,
}

/// An egress listener with its import rules resolved.
#[derive(Clone, Debug)]
pub struct EgressListener {
    /// Port, if the listener has one.
    pub port: Option<u32>,
    /// Port protocol ([`Protocol::Unsupported`](mesh_model::protocol::Protocol::Unsupported) when not given).
    pub protocol: mesh_model::protocol::Protocol,
    /// Bind address.
    pub bind: Option<String>,
    /// Capture mode.
    pub capture_mode: CaptureMode,
    rules: Vec<ImportRule>,
}

impl EgressListener {
    fn from_spec(e: &IstioEgressListener, proxy_ns: &str) -> EgressListener {
        let rules = e
            .hosts
            .iter()
            .filter_map(|h| {
                let (exclude, h) = match h.strip_prefix('~') {
                    Some(rest) => (true, rest),
                    None => (false, h.as_str()),
                };
                let (ns, host) = h.split_once('/')?;
                let namespace = if ns == "." {
                    proxy_ns.to_string()
                } else {
                    ns.to_string()
                };
                Some(ImportRule {
                    namespace,
                    host: host.to_string(),
                    exclude,
                })
            })
            .collect();
        EgressListener {
            port: e.port.as_ref().map(|p| p.number),
            protocol: e
                .port
                .as_ref()
                .map(|p| mesh_model::protocol::Protocol::parse(&p.protocol))
                .unwrap_or_default(),
            bind: e.bind.clone(),
            capture_mode: e.capture_mode,
            rules,
        }
    }

    fn everything() -> EgressListener {
        EgressListener {
            port: None,
            protocol: mesh_model::protocol::Protocol::Unsupported,
            bind: None,
            capture_mode: CaptureMode::Default,
            rules: vec![ImportRule {
                namespace: "*".into(),
                host: "*".into(),
                exclude: false,
            }],
        }
    }

    /// Whether a host declared in `namespace` is imported by this listener.
    pub fn imports(&self, namespace: &str, host: &str) -> bool {
        let hit = |r: &ImportRule| {
            (r.namespace == "*" || r.namespace == namespace) && host_matches(&r.host, host)
        };
        self.rules.iter().any(|r| !r.exclude && hit(r))
            && !self.rules.iter().any(|r| r.exclude && hit(r))
    }

    /// Whether this listener binds its own port instead of relying on iptables capture.
    pub fn binds_port(&self, proxy: &Proxy) -> bool {
        self.capture_mode == CaptureMode::None || proxy.interception_mode == InterceptionMode::None
    }
}

/// The Sidecar that applies to a proxy, resolved.
#[derive(Clone, Debug)]
pub struct SidecarScope<'a> {
    /// The Sidecar resource, if any.
    pub sidecar: Option<&'a SidecarSpec>,
    /// Egress listeners (one catch-all importing everything when no Sidecar applies).
    pub egress: Vec<EgressListener>,
    /// Visible services imported by at least one egress listener, in host order.
    pub services: Vec<&'a Service>,
    /// Outbound traffic policy mode.
    pub outbound_mode: OutboundTrafficPolicyMode,
}

impl<'a> SidecarScope<'a> {
    /// The scope of a sidecar: its workload Sidecar, else its namespace's, else the root
    /// namespace's, else everything.
    pub fn new(ctx: &'a PushContext, proxy: &Proxy) -> SidecarScope<'a> {
        let root = &ctx.mesh.root_namespace;
        let find = |ns: &str, with_selector: bool| {
            ctx.sidecars.iter().find_map(|c| match c.as_ref() {
                Config::Sidecar(sc) if sc.metadata.namespace() == ns => {
                    match (&sc.spec.workload_selector, with_selector) {
                        (Some(sel), true)
                            if !sel.labels.is_empty() && sel.matches(&proxy.labels) =>
                        {
                            Some(&sc.spec)
                        }
                        (None, false) => Some(&sc.spec),
                        _ => None,
                    }
                }
                _ => None,
            })
        };
        let sidecar = find(&proxy.namespace, true)
            .or_else(|| find(&proxy.namespace, false))
            .or_else(|| find(root, false));
        let egress: Vec<EgressListener> = match sidecar {
            Some(sc) if !sc.egress.is_empty() => sc
                .egress
                .iter()
                .map(|e| EgressListener::from_spec(e, &proxy.namespace))
                .collect(),
            _ => vec![EgressListener::everything()],
        };
        let outbound_mode = sidecar
            .and_then(|s| s.outbound_traffic_policy.as_ref())
            .map(|o| o.mode)
            .unwrap_or(ctx.mesh.outbound_traffic_policy.mode);
        let services = ctx
            .registry
            .visible(&proxy.namespace, &ctx.mesh.default_service_export_to)
            .into_iter()
            .filter(|s| egress.iter().any(|e| e.imports(&s.namespace, &s.hostname)))
            .collect();
        SidecarScope {
            sidecar,
            egress,
            services,
            outbound_mode,
        }
    }

    /// A gateway sees every service visible to its namespace.
    pub fn gateway(ctx: &'a PushContext, proxy: &Proxy) -> SidecarScope<'a> {
        SidecarScope {
            sidecar: None,
            egress: vec![EgressListener::everything()],
            services: ctx
                .registry
                .visible(&proxy.namespace, &ctx.mesh.default_service_export_to),
            outbound_mode: ctx.mesh.outbound_traffic_policy.mode,
        }
    }

    /// The imported service for a host, if any.
    pub fn service(&self, host: &str) -> Option<&'a Service> {
        self.services.iter().copied().find(|s| s.hostname == host)
    }
}

/// A memoized DestinationRule lookup: one rule of the push context (by index), or several
/// merged into a new one.
#[derive(Clone, Debug)]
pub(crate) enum DrHit {
    Config(usize),
    Merged(std::sync::Arc<DestinationRuleSpec>),
}

/// The DestinationRule that applies to a host: borrowed from the push context when one rule
/// applies (the usual case, no copy), or a merge of several.
#[derive(Clone, Debug)]
pub(crate) enum DrRef<'a> {
    Borrowed(&'a DestinationRuleSpec),
    Merged(std::sync::Arc<DestinationRuleSpec>),
}

impl std::ops::Deref for DrRef<'_> {
    type Target = DestinationRuleSpec;
    fn deref(&self) -> &DestinationRuleSpec {
        match self {
            DrRef::Borrowed(d) => d,
            DrRef::Merged(d) => d,
        }
    }
}

impl AsRef<DestinationRuleSpec> for DrRef<'_> {
    fn as_ref(&self) -> &DestinationRuleSpec {
        self
    }
}

fn dr_at(ctx: &PushContext, i: usize) -> Option<&DestinationRuleSpec> {
    match ctx.destination_rules.get(i)?.as_ref() {
        Config::DestinationRule(dr) => Some(&dr.spec),
        _ => None,
    }
}

fn resolve_hit<'a>(ctx: &'a PushContext, hit: &DrHit) -> Option<DrRef<'a>> {
    match hit {
        DrHit::Config(i) => dr_at(ctx, *i).map(DrRef::Borrowed),
        DrHit::Merged(d) => Some(DrRef::Merged(d.clone())),
    }
}

/// The DestinationRule that applies to `service` for a proxy in `proxy_ns`, merged as Istio
/// merges DRs for one host (first traffic policy wins, subsets merged by name).
pub(crate) fn destination_rule<'a>(
    ctx: &'a PushContext,
    proxy: &Proxy,
    host: &str,
    service_ns: &str,
) -> Option<DrRef<'a>> {
    // Memoized per push: every proxy of a namespace (and every route to a host) asks the same
    // question. Labels only matter when a DestinationRule in the proxy's namespace has a selector.
    let class: std::borrow::Cow<'_, str> = if ctx.selector_drs.contains(&proxy.namespace) {
        format!("{}\0{:?}", proxy.namespace, proxy.labels).into()
    } else {
        proxy.namespace.as_str().into()
    };
    let memo = ctx
        .dr_memo
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Nested maps so that a hit allocates nothing.
    if let Some(hit) = memo
        .get(class.as_ref())
        .and_then(|m| m.get(host))
        .and_then(|m| m.get(service_ns))
    {
        return hit.as_ref().and_then(|h| resolve_hit(ctx, h));
    }
    drop(memo);
    let found = lookup_destination_rule(ctx, proxy, host, service_ns);
    let result = found.as_ref().and_then(|h| resolve_hit(ctx, h));
    ctx.dr_memo
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(class.into_owned())
        .or_default()
        .entry(host.to_string())
        .or_default()
        .insert(service_ns.to_string(), found);
    result
}

fn lookup_destination_rule(
    ctx: &PushContext,
    proxy: &Proxy,
    host: &str,
    service_ns: &str,
) -> Option<DrHit> {
    let default_export = &ctx.mesh.default_destination_rule_export_to;
    let candidates = |ns: &str, private_ok: bool| -> Vec<usize> {
        let mut best: Vec<(usize, usize)> = Vec::new();
        let Some(index) = ctx.dr_index.get(ns) else {
            return Vec::new();
        };
        for i in index.candidates(host) {
            let Config::DestinationRule(dr) = ctx.destination_rules[i].as_ref() else {
                continue;
            };
            let dr_ns = dr.metadata.namespace();
            if dr_ns != ns {
                continue;
            }
            if let Some(sel) = &dr.spec.workload_selector
                && (dr_ns != proxy.namespace || !sel.matches(&proxy.labels))
            {
                continue;
            }
            let visible =
                private_ok || exported(&dr.spec.export_to, default_export, dr_ns, &proxy.namespace);
            if !visible {
                continue;
            }
            let dr_host = resolve_short_name(&dr.spec.host, dr_ns, ctx.domain_suffix());
            if !host_matches(&dr_host, host) {
                continue;
            }
            // Exact hosts beat wildcards; longer wildcards beat shorter ones.
            let specificity = if dr_host == host {
                usize::MAX
            } else {
                dr_host.len()
            };
            best.push((specificity, i));
        }
        let Some(top) = best.iter().map(|(s, _)| *s).max() else {
            return Vec::new();
        };
        best.into_iter()
            .filter(|(s, _)| *s == top)
            .map(|(_, i)| i)
            .collect()
    };
    let root = &ctx.mesh.root_namespace;
    let mut found = candidates(&proxy.namespace, true);
    if found.is_empty() && service_ns != proxy.namespace {
        found = candidates(service_ns, false);
    }
    if found.is_empty() && *root != proxy.namespace {
        found = candidates(root, false);
    }
    if found.len() <= 1 {
        return found.first().map(|i| DrHit::Config(*i));
    }
    let mut iter = found.into_iter().filter_map(|i| dr_at(ctx, i));
    let mut merged = iter.next()?.clone();
    for other in iter {
        if merged.traffic_policy.is_none() {
            merged.traffic_policy = other.traffic_policy.clone();
        }
        for s in &other.subsets {
            if !merged.subsets.iter().any(|m| m.name == s.name) {
                merged.subsets.push(s.clone());
            }
        }
    }
    Some(DrHit::Merged(std::sync::Arc::new(merged)))
}

/// The effective policy for a cluster: top-level (or its port-level replacement), overridden
/// per block by the subset's policy (or replaced by the subset's own port-level settings).
pub(crate) fn effective_policy(
    dr: Option<&DestinationRuleSpec>,
    subset: Option<&Subset>,
    port: u32,
) -> TrafficPolicy {
    fn for_port(tp: &TrafficPolicy, port: u32) -> Option<TrafficPolicy> {
        let pl = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.map(|p| p.number) == Some(port))?;
        Some(TrafficPolicy {
            load_balancer: pl.load_balancer.clone(),
            connection_pool: pl.connection_pool.clone(),
            outlier_detection: pl.outlier_detection.clone(),
            tls: pl.tls.clone(),
            tunnel: tp.tunnel.clone(),
            proxy_protocol: tp.proxy_protocol.clone(),
            retry_budget: tp.retry_budget.clone(),
            ..Default::default()
        })
    }
    let mut p = dr
        .and_then(|d| d.traffic_policy.as_ref())
        .map(|tp| {
            for_port(tp, port).unwrap_or_else(|| TrafficPolicy {
                port_level_settings: Vec::new(),
                ..tp.clone()
            })
        })
        .unwrap_or_default();
    if let Some(stp) = subset.and_then(|s| s.traffic_policy.as_ref()) {
        if let Some(replaced) = for_port(stp, port) {
            return replaced;
        }
        macro_rules! over {
            ($($f:ident),*) => { $( if stp.$f.is_some() { p.$f = stp.$f.clone(); } )* };
        }
        over!(
            load_balancer,
            connection_pool,
            outlier_detection,
            tls,
            tunnel,
            proxy_protocol,
            retry_budget
        );
    }
    p
}

/// The VirtualServices that apply to sidecars in `proxy` for `host`: visible, bound to the mesh
/// gateway, whose most specific host matches. The first (oldest) wins.
pub(crate) fn mesh_virtual_service<'a>(
    ctx: &'a PushContext,
    proxy: &Proxy,
    host: &str,
) -> Option<(&'a mesh_model::VirtualService, String)> {
    let default_export = &ctx.mesh.default_virtual_service_export_to;
    let mut best: Option<(usize, u8, &mesh_model::VirtualService, String)> = None;
    for i in ctx.mesh_vs_index.candidates(host) {
        let Config::VirtualService(vs) = ctx.virtual_services[i].as_ref() else {
            continue;
        };
        let spec: &VirtualServiceSpec = &vs.spec;
        if !(spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh")) {
            continue;
        }
        let ns = vs.metadata.namespace();
        if !exported(&spec.export_to, default_export, ns, &proxy.namespace) {
            continue;
        }
        // Private (own namespace) first, then exported to the namespace, then public.
        let group = if ns == proxy.namespace {
            0
        } else if spec.export_to.iter().any(|e| e == &proxy.namespace) {
            1
        } else {
            2
        };
        for h in &spec.hosts {
            let vh = resolve_short_name(h, ns, ctx.domain_suffix());
            if !host_matches(&vh, host) {
                continue;
            }
            let specificity = if vh == host { usize::MAX } else { vh.len() };
            let better = match &best {
                None => true,
                Some((s, g, _, _)) => specificity > *s || (specificity == *s && group < *g),
            };
            if better {
                best = Some((specificity, group, vs, ns.to_string()));
            }
        }
    }
    best.map(|(_, _, vs, ns)| (vs, ns))
}
