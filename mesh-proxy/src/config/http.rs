//! The HTTP connection manager and its HTTP filters.

use std::sync::Arc;
use std::time::Duration;

use super::route::{CorsPolicy, FaultConfig, RouteConfiguration};

/// `envoy.filters.network.http_connection_manager`, with Envoy's defaults filled in.
#[derive(Debug, PartialEq)]
pub struct HttpConnectionManager {
    /// Stats prefix (`http.PREFIX.`).
    pub stat_prefix: String,
    /// Downstream codec.
    pub codec: Codec,
    /// Where routes come from.
    pub routes: RouteSource,
    /// HTTP filters in order; the last is the router.
    pub http_filters: Vec<HttpFilter>,
    /// `stream_idle_timeout` (Envoy: 5 min; `None` = disabled).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout`: the whole downstream request must arrive within it.
    pub request_timeout: Option<Duration>,
    /// `request_headers_timeout`.
    pub request_headers_timeout: Option<Duration>,
    /// `drain_timeout` (H2 GOAWAY grace, 5 s).
    pub drain_timeout: Duration,
    /// `max_request_headers_kb` (60).
    pub max_request_headers_kb: u32,
    /// `common_http_protocol_options.idle_timeout` (1 h; `None` = never).
    pub idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.max_headers_count` (100).
    pub max_headers_count: u32,
    /// `common_http_protocol_options.max_stream_duration`.
    pub max_stream_duration: Option<Duration>,
    /// `use_remote_address`.
    pub use_remote_address: bool,
    /// `xff_num_trusted_hops`.
    pub xff_num_trusted_hops: u32,
    /// `skip_xff_append`.
    pub skip_xff_append: bool,
    /// `generate_request_id` (true).
    pub generate_request_id: bool,
    /// `preserve_external_request_id`.
    pub preserve_external_request_id: bool,
    /// `always_set_request_id_in_response`.
    pub always_set_request_id_in_response: bool,
    /// `server_name` (`envoy`).
    pub server_name: String,
    /// `server_header_transformation`.
    pub server_header_transformation: ServerHeaderTransformation,
    /// `normalize_path` (RFC 3986 dot segments).
    pub normalize_path: bool,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// `upgrade_configs` with `websocket`.
    pub websocket: bool,
    /// `forward_client_cert_details`.
    pub forward_client_cert_details: ForwardClientCertDetails,
    /// `set_current_client_cert_details`: what this hop's XFCC element carries.
    pub set_current_client_cert_details: ClientCertDetails,
    /// `via` to append, if any.
    pub via: Option<String>,
    /// `http2_protocol_options`.
    pub http2: Http2Options,
    /// `proxy_100_continue`.
    pub proxy_100_continue: bool,
}

/// `codec_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 or, by its preface, HTTP/2 (h2c) — and by ALPN under TLS.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// Where an HCM's route table comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteSource {
    /// RDS over ADS, by name.
    Rds(String),
    /// Given inline.
    Inline(Arc<RouteConfiguration>),
}

/// `server_header_transformation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerHeaderTransformation {
    /// Always set `server` to `server_name`.
    Overwrite,
    /// Set it only when the upstream did not.
    AppendIfAbsent,
    /// Leave it as the upstream sent it.
    PassThrough,
}

/// `forward_client_cert_details`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardClientCertDetails {
    /// Remove XFCC.
    Sanitize,
    /// Forward it only over mTLS.
    ForwardOnly,
    /// Append our element over mTLS.
    AppendForward,
    /// Replace it with our element over mTLS.
    SanitizeSet,
    /// Pass it through untouched.
    AlwaysForwardOnly,
}

/// `set_current_client_cert_details` (`cert` and `chain` are not implemented and rejected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientCertDetails {
    /// `Subject="..."`.
    pub subject: bool,
    /// `URI=...`.
    pub uri: bool,
    /// `DNS=...`.
    pub dns: bool,
}

/// `http2_protocol_options` that matter to the codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Options {
    /// Concurrent streams per connection (1024 in Envoy 1.40).
    pub max_concurrent_streams: u32,
    /// Initial stream window (16 MiB).
    pub initial_stream_window_size: u32,
    /// Initial connection window (24 MiB).
    pub initial_connection_window_size: u32,
    /// `connection_keepalive`: PINGs on the connection; `None` = none.
    pub keepalive: Option<Http2Keepalive>,
}

/// `Http2ProtocolOptions.connection_keepalive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Keepalive {
    /// Send a PING this often; `None` = no periodic PINGs.
    pub interval: Option<Duration>,
    /// Close the connection when a PING is not answered within this.
    pub timeout: Duration,
}

impl Default for Http2Options {
    fn default() -> Self {
        Http2Options {
            max_concurrent_streams: 1024,
            initial_stream_window_size: 16 * 1024 * 1024,
            initial_connection_window_size: 24 * 1024 * 1024,
            keepalive: None,
        }
    }
}

/// The HTTP filters this proxy runs. An HCM lists them in order; the authorization filters of
/// the security issue (RBAC, ext_authz, JWT) will go before [`HttpFilter::Router`].
#[derive(Clone, Debug, PartialEq)]
pub enum HttpFilter {
    /// `envoy.filters.http.fault` with its filter-level config (Istio sends it empty and
    /// configures faults per route).
    Fault(Arc<FaultConfig>),
    /// `envoy.filters.http.cors` (policies come per route and virtual host).
    Cors(Option<Arc<CorsPolicy>>),
    /// `envoy.filters.http.dynamic_forward_proxy`: resolve the request's host in the DNS cache
    /// shared with the dynamic forward proxy cluster.
    DynamicForwardProxy(DnsCacheConfig),
    /// `envoy.filters.http.router`.
    Router(RouterConfig),
}

/// `envoy.filters.http.router` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RouterConfig {
    /// Do not add `x-envoy-*` headers.
    pub suppress_envoy_headers: bool,
    /// `start_child_span`.
    pub start_child_span: bool,
}

/// A dynamic forward proxy's DNS cache (`dns_cache_config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCacheConfig {
    /// Cache name (shared between the filter and the cluster).
    pub name: String,
    /// Address family preference.
    pub lookup_family: super::cluster::DnsLookupFamily,
    /// Refresh rate.
    pub refresh_rate: Duration,
    /// Hosts kept at most.
    pub max_hosts: u32,
}
