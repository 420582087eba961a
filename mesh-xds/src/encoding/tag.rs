//! Field numbers of the messages written by hand, named as in their `.proto` files (Envoy's
//! and Google's). One module per message; only the fields this crate writes.

/// `google.protobuf.Any`.
pub(crate) mod any {
    pub(crate) const TYPE_URL: u32 = 1;
    pub(crate) const VALUE: u32 = 2;
}

/// `google.protobuf.UInt32Value` (and the other wrappers).
pub(crate) mod wrapper {
    pub(crate) const VALUE: u32 = 1;
}

/// `envoy.service.discovery.v3.DiscoveryResponse`.
#[cfg(feature = "server")]
pub(crate) mod discovery_response {
    pub(crate) const VERSION_INFO: u32 = 1;
    pub(crate) const RESOURCES: u32 = 2;
    pub(crate) const TYPE_URL: u32 = 4;
    pub(crate) const NONCE: u32 = 5;
}

/// `envoy.service.discovery.v3.DeltaDiscoveryResponse`.
#[cfg(feature = "server")]
pub(crate) mod delta_discovery_response {
    pub(crate) const SYSTEM_VERSION_INFO: u32 = 1;
    pub(crate) const RESOURCES: u32 = 2;
    pub(crate) const TYPE_URL: u32 = 4;
    pub(crate) const NONCE: u32 = 5;
    pub(crate) const REMOVED_RESOURCES: u32 = 6;
}

/// `envoy.service.discovery.v3.Resource`.
#[cfg(feature = "server")]
pub(crate) mod resource {
    pub(crate) const VERSION: u32 = 1;
    pub(crate) const RESOURCE: u32 = 2;
    pub(crate) const NAME: u32 = 3;
}

/// `envoy.config.cluster.v3.Cluster`.
pub(crate) mod cluster {
    pub(crate) const NAME: u32 = 1;
    pub(crate) const EDS_CLUSTER_CONFIG: u32 = 3;
    pub(crate) const TRANSPORT_SOCKET: u32 = 24;
    pub(crate) const TRANSPORT_SOCKET_MATCHES: u32 = 43;
}

/// `envoy.config.cluster.v3.Cluster.TransportSocketMatch`.
pub(crate) mod transport_socket_match {
    pub(crate) const NAME: u32 = 1;
    pub(crate) const MATCH: u32 = 2;
    pub(crate) const TRANSPORT_SOCKET: u32 = 3;
}

/// `envoy.config.core.v3.TransportSocket`.
pub(crate) mod transport_socket {
    pub(crate) const NAME: u32 = 1;
    pub(crate) const TYPED_CONFIG: u32 = 3;
}

/// `envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`.
pub(crate) mod upstream_tls_context {
    pub(crate) const COMMON_TLS_CONTEXT: u32 = 1;
    pub(crate) const SNI: u32 = 2;
}

/// `envoy.config.cluster.v3.Cluster.EdsClusterConfig`.
pub(crate) mod eds_cluster_config {
    pub(crate) const EDS_CONFIG: u32 = 1;
    pub(crate) const SERVICE_NAME: u32 = 2;
}

/// `envoy.config.endpoint.v3.ClusterLoadAssignment`.
pub(crate) mod cluster_load_assignment {
    pub(crate) const CLUSTER_NAME: u32 = 1;
    pub(crate) const ENDPOINTS: u32 = 2;
}

/// `envoy.config.endpoint.v3.LocalityLbEndpoints`.
pub(crate) mod locality_lb_endpoints {
    pub(crate) const LOCALITY: u32 = 1;
    pub(crate) const LB_ENDPOINTS: u32 = 2;
    pub(crate) const LOAD_BALANCING_WEIGHT: u32 = 3;
    pub(crate) const PRIORITY: u32 = 5;
}

/// `envoy.config.core.v3.Locality`.
pub(crate) mod locality {
    pub(crate) const REGION: u32 = 1;
    pub(crate) const ZONE: u32 = 2;
    pub(crate) const SUB_ZONE: u32 = 3;
}

/// `envoy.config.endpoint.v3.LbEndpoint`.
pub(crate) mod lb_endpoint {
    pub(crate) const ENDPOINT: u32 = 1;
    pub(crate) const METADATA: u32 = 3;
    pub(crate) const LOAD_BALANCING_WEIGHT: u32 = 4;
}

/// `envoy.config.endpoint.v3.Endpoint`.
pub(crate) mod endpoint {
    pub(crate) const ADDRESS: u32 = 1;
}

/// `envoy.config.core.v3.Address`.
pub(crate) mod address {
    pub(crate) const SOCKET_ADDRESS: u32 = 1;
    pub(crate) const PIPE: u32 = 2;
}

/// `envoy.config.core.v3.SocketAddress`.
pub(crate) mod socket_address {
    pub(crate) const ADDRESS: u32 = 2;
    pub(crate) const PORT_VALUE: u32 = 3;
}

/// `envoy.config.core.v3.Pipe`.
pub(crate) mod pipe {
    pub(crate) const PATH: u32 = 1;
}

/// `envoy.config.route.v3.RouteConfiguration`.
pub(crate) mod route_configuration {
    pub(crate) const VIRTUAL_HOSTS: u32 = 2;
}

/// `envoy.config.route.v3.VirtualHost`.
pub(crate) mod virtual_host {
    pub(crate) const ROUTES: u32 = 3;
}

/// `envoy.config.route.v3.Route`.
pub(crate) mod route {
    pub(crate) const TYPED_PER_FILTER_CONFIG: u32 = 13;
}

/// A protobuf map entry (`map<K, V>` is `repeated {K key = 1; V value = 2}`).
pub(crate) mod map_entry {
    pub(crate) const KEY: u32 = 1;
    pub(crate) const VALUE: u32 = 2;
}
