//! The security filters of the chains a proxy serves (reference: security §5).

use envoy_types::pb::envoy::config::listener::v3::Filter;

use super::filters::tcp_proxy_to;
use crate::proxy::Proxy;
use crate::translate::PushContext;

/// The authentication and authorization filters of a workload's inbound chains, or of a
/// gateway's HTTP connection managers
/// (reference: security §5): on HTTP chains CUSTOM, `jwt_authn`, AUDIT, DENY, ALLOW before
/// the router; on TCP chains the network CUSTOM, AUDIT, DENY, ALLOW before the TCP proxy.
pub(crate) struct Policies {
    pub(crate) http: Vec<envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter>,
    pub(crate) tcp: Vec<Filter>,
}

impl Policies {
    /// The policies that select `proxy` (a gateway when `gateway`: its JWT providers clear
    /// the route cache, so that routes can match on claims).
    pub(crate) fn for_proxy(ctx: &PushContext, proxy: &Proxy, gateway: bool) -> Policies {
        use crate::security::{applicable, authz, jwt};
        use mesh_model::security::authorization_policy::AuthorizationPolicySpec;
        use mesh_model::security::request_authentication::RequestAuthenticationSpec;
        let root = &ctx.mesh.root_namespace;
        let authz: Vec<_> = applicable::<AuthorizationPolicySpec>(
            &ctx.authorization_policies,
            root,
            &proxy.namespace,
            &proxy.labels,
        );
        let authn: Vec<_> = applicable::<RequestAuthenticationSpec>(
            &ctx.request_authentications,
            root,
            &proxy.namespace,
            &proxy.labels,
        );
        // A `jwksUri`'s document, or the one discovered from the issuer (crate::jwks).
        let jwt = jwt::jwt_filter(&authn, gateway, &|rule| {
            crate::jwks::JwksSource::of(rule).and_then(|s| ctx.jwks.get(&s.key()).cloned())
        });
        Policies {
            http: authz::http_filters(&authz, &ctx.mesh).into_http_filters(jwt),
            tcp: authz::network_filters(&authz, &ctx.mesh).into_filters(),
        }
    }

    /// The TCP chain's filters: the policies, then the TCP proxy to `cluster`.
    pub(crate) fn tcp_filters(&self, cluster: &str) -> Vec<Filter> {
        let mut v = self.tcp.clone();
        v.push(tcp_proxy_to(cluster, cluster));
        v
    }
}
