//! The one value every listener builder of a proxy's translation takes.

use crate::proxy::Proxy;
use crate::registry::Service;
use crate::translate::PushContext;
use crate::translate::scope::SidecarScope;

/// What the listener builders read: the push, the proxy and its scope (the services and
/// config it sees). Copied freely; the output sink is passed beside it, as the only thing
/// written to.
#[derive(Clone, Copy)]
pub(crate) struct ListenerContext<'a> {
    /// The push (config snapshot, registry, mesh settings).
    pub(crate) ctx: &'a PushContext,
    /// The proxy being translated for.
    pub(crate) proxy: &'a Proxy,
    /// What the proxy sees.
    pub(crate) scope: &'a SidecarScope<'a>,
}

impl<'a> ListenerContext<'a> {
    /// The services in scope that have `port` and that `imports` (an egress listener's import
    /// rule, by namespace and host) accepts, in scope order.
    pub(crate) fn services_on(
        &self,
        port: u32,
        imports: &dyn Fn(&str, &str) -> bool,
    ) -> Vec<&'a Service> {
        self.scope
            .services
            .iter()
            .copied()
            .filter(|s| s.port(port).is_some() && imports(&s.namespace, &s.hostname))
            .collect()
    }
}
