//! Route configurations: virtual hosts, routes, their matches and actions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;

use super::matcher::{
    FractionalPercent, HeaderMatcher, QueryParameterMatcher, Regex, StringMatcher,
};

/// A route configuration (RDS resource or inline in an HCM).
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfiguration {
    /// Name.
    pub name: String,
    /// Virtual hosts (each domain in at most one).
    pub virtual_hosts: Vec<VirtualHost>,
    /// Route-configuration-level header mutations.
    pub headers: HeaderMutations,
    /// Apply mutations from the most specific level last (so they win).
    pub most_specific_header_mutations_wins: bool,
    /// Drop the port from the host before matching domains.
    pub ignore_port_in_host_matching: bool,
    /// Headers only internal requests may carry (removed from external ones).
    pub internal_only_headers: Vec<HeaderName>,
    /// Mirror policies for every route (replaced by vhost- or route-level ones).
    pub request_mirror_policies: Vec<MirrorPolicy>,
}

/// A virtual host.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    /// Name (stats, dumps).
    pub name: String,
    /// Domains: exact, `*.suffix`, `prefix*` wildcards, or `*`. Lower case.
    pub domains: Vec<String>,
    /// Routes, tried in order.
    pub routes: Vec<Route>,
    /// Virtual-host-level header mutations.
    pub headers: HeaderMutations,
    /// Retry policy for routes without their own.
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// Send `x-envoy-attempt-count` upstream.
    pub include_request_attempt_count: bool,
    /// Send `x-envoy-attempt-count` downstream.
    pub include_attempt_count_in_response: bool,
    /// Per-filter config at this level.
    pub per_filter: PerFilterConfig,
    /// Mirror policies (replaced by route-level ones).
    pub request_mirror_policies: Vec<MirrorPolicy>,
}

/// Per-filter config (`typed_per_filter_config`) this proxy understands. The most specific
/// level (weighted cluster, route, virtual host) replaces the less specific ones.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PerFilterConfig {
    /// `envoy.filters.http.fault`.
    pub fault: Option<Arc<FaultConfig>>,
    /// `envoy.filters.http.cors`.
    pub cors: Option<Arc<CorsPolicy>>,
}

/// A route.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Name (may be empty).
    pub name: String,
    /// When it applies.
    pub route_match: RouteMatch,
    /// What it does.
    pub action: RouteAction,
    /// Route-level header mutations.
    pub headers: HeaderMutations,
    /// Per-filter config at this level.
    pub per_filter: PerFilterConfig,
}

/// `RouteMatch`: every criterion set must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteMatch {
    /// The path test.
    pub path: PathMatch,
    /// Compare prefix and exact paths case-sensitively (true).
    pub case_sensitive: bool,
    /// Header matchers.
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter matchers.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Only gRPC requests (`content-type: application/grpc*`).
    pub grpc: bool,
    /// Match only this fraction of requests.
    pub runtime_fraction: Option<FractionalPercent>,
}

/// The path specifier of a route match.
#[derive(Clone, Debug, PartialEq)]
pub enum PathMatch {
    /// `prefix`: the start of `:path`, query included.
    Prefix(String),
    /// `path`: the query-less path exactly.
    Exact(String),
    /// `safe_regex`: the whole query-less path.
    Regex(Regex),
    /// `path_separated_prefix`: the prefix, followed by nothing, `/`, `?` or `#`.
    PathSeparatedPrefix(String),
}

/// What a route does.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteAction {
    /// Forward upstream.
    Route(Arc<ForwardAction>),
    /// Answer with a redirect.
    Redirect(Arc<RedirectAction>),
    /// Answer directly.
    DirectResponse(Arc<DirectResponse>),
}

/// `RouteAction`.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardAction {
    /// Which cluster.
    pub cluster: ClusterSpecifier,
    /// Status when the cluster does not exist (503).
    pub cluster_not_found_response_code: u16,
    /// Whole-request timeout from the end of the downstream request, retries included (15 s;
    /// `None` = disabled).
    pub timeout: Option<Duration>,
    /// Replaces the HCM's `stream_idle_timeout` (`Some(None)` disables it).
    pub idle_timeout: Option<Option<Duration>>,
    /// Retries (replaces the virtual host's).
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// Hash policies for consistent-hash load balancing.
    pub hash_policy: Vec<HashPolicy>,
    /// `prefix_rewrite`.
    pub prefix_rewrite: Option<String>,
    /// `regex_rewrite`.
    pub regex_rewrite: Option<(Regex, String)>,
    /// Host rewrite.
    pub host_rewrite: HostRewrite,
    /// Mirrors (replace the virtual host's and route configuration's).
    pub request_mirror_policies: Option<Vec<MirrorPolicy>>,
    /// `max_stream_duration`.
    pub max_stream_duration: Option<Duration>,
    /// `grpc-timeout` is honoured up to this (`Some(None)` = uncapped, `None` = ignored).
    pub grpc_timeout_header_max: Option<Option<Duration>>,
    /// Upgrades allowed per route (`websocket` → enabled).
    pub upgrade_websocket: Option<bool>,
}

/// How a route picks its cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterSpecifier {
    /// A named cluster.
    Cluster(String),
    /// The cluster named by a request header.
    Header(HeaderName),
    /// Weighted clusters.
    Weighted(WeightedClusters),
}

/// `weighted_clusters`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedClusters {
    /// Entries with weights (total = their sum).
    pub clusters: Vec<WeightedCluster>,
    /// Take the random value from this header instead (consistent across hops).
    pub header_name: Option<HeaderName>,
}

/// One weighted cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedCluster {
    /// Cluster name.
    pub name: String,
    /// Weight.
    pub weight: u32,
    /// Entry-level header mutations (the most specific level).
    pub headers: HeaderMutations,
    /// `host_rewrite_literal` for this entry.
    pub host_rewrite_literal: Option<String>,
    /// Per-filter config at this level.
    pub per_filter: PerFilterConfig,
}

/// Host rewrite of a route.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum HostRewrite {
    /// Keep the host.
    #[default]
    None,
    /// `host_rewrite_literal`.
    Literal(String),
    /// `auto_host_rewrite`: the upstream host's hostname.
    Auto,
    /// `host_rewrite_header`.
    Header(HeaderName),
    /// `host_rewrite_path_regex`.
    PathRegex(Regex, String),
}

/// A list of header mutations at one level.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HeaderMutations {
    /// `request_headers_to_add`.
    pub request_add: Vec<HeaderValueOption>,
    /// `request_headers_to_remove`.
    pub request_remove: Vec<HeaderName>,
    /// `response_headers_to_add`.
    pub response_add: Vec<HeaderValueOption>,
    /// `response_headers_to_remove`.
    pub response_remove: Vec<HeaderName>,
}

impl HeaderMutations {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// `HeaderValueOption`.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderValueOption {
    /// Header name.
    pub name: HeaderName,
    /// Value, with `%COMMAND%` substitutions.
    pub value: HeaderTemplate,
    /// What happens when the header exists.
    pub action: AppendAction,
    /// Keep the header when the value comes out empty.
    pub keep_empty_value: bool,
}

/// `HeaderValueOption.append_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendAction {
    /// Append (a second value) or add.
    AppendIfExistsOrAdd,
    /// Add only when absent.
    AddIfAbsent,
    /// Replace or add.
    OverwriteIfExistsOrAdd,
    /// Replace only when present.
    OverwriteIfExists,
}

/// A header value with Envoy's `%COMMAND%` substitutions, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderTemplate {
    /// Literal and variable pieces, in order.
    pub parts: Vec<TemplatePart>,
}

/// A piece of a [`HeaderTemplate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal text (`%%` already unescaped).
    Literal(String),
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`.
    DownstreamRemoteAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`.
    DownstreamRemoteAddressWithoutPort,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`.
    DownstreamLocalAddress,
    /// `%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%`.
    DownstreamLocalAddressWithoutPort,
    /// `%UPSTREAM_REMOTE_ADDRESS%` (responses).
    UpstreamRemoteAddress,
    /// `%HOSTNAME%`.
    Hostname,
    /// `%PROTOCOL%`.
    Protocol,
    /// `%REQ(NAME)%`.
    Request(HeaderName),
    /// `%START_TIME%`.
    StartTime,
}

impl HeaderTemplate {
    /// A literal value.
    pub fn literal(s: impl Into<String>) -> HeaderTemplate {
        HeaderTemplate {
            parts: vec![TemplatePart::Literal(s.into())],
        }
    }

    /// The value when it has no substitutions.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [TemplatePart::Literal(s)] => Some(s),
            _ => None,
        }
    }
}

/// `RetryPolicy`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Conditions.
    pub retry_on: RetryOn,
    /// Retries after the first attempt (1 when a policy is present and this is unset).
    pub num_retries: u32,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// Per-attempt idle timeout.
    pub per_try_idle_timeout: Option<Duration>,
    /// `retriable_status_codes`.
    pub retriable_status_codes: Vec<u16>,
    /// `retriable_headers` (response headers that make a response retriable).
    pub retriable_headers: Vec<HeaderMatcher>,
    /// `retriable_request_headers` (retry only matching requests).
    pub retriable_request_headers: Vec<HeaderMatcher>,
    /// Back-off base (25 ms).
    pub base_interval: Duration,
    /// Back-off cap (10 × base).
    pub max_interval: Duration,
    /// `envoy.retry_host_predicates.previous_hosts`.
    pub previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (1).
    pub host_selection_retry_max_attempts: u32,
    /// `envoy.retry_priorities.previous_priorities` with its update frequency.
    pub previous_priorities: Option<u32>,
}

impl Default for RetryPolicy {
    /// Envoy's defaults for a policy with no fields set: no conditions, one retry, 25 ms base
    /// back-off capped at 250 ms, one host selection attempt.
    fn default() -> Self {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
            retriable_request_headers: Vec::new(),
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
            previous_hosts: false,
            host_selection_retry_max_attempts: 1,
            previous_priorities: None,
        }
    }
}

/// `retry_on` conditions as a set of flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct RetryOn(pub u32);

impl RetryOn {
    /// `5xx`.
    pub const FIVE_XX: RetryOn = RetryOn(1);
    /// `gateway-error`.
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    /// `reset`.
    pub const RESET: RetryOn = RetryOn(1 << 2);
    /// `connect-failure`.
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 3);
    /// `retriable-4xx` (409).
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 4);
    /// `refused-stream`.
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 5);
    /// `retriable-status-codes`.
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    /// `retriable-headers`.
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 7);
    /// `reset-before-request`.
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 8);
    /// `envoy-ratelimited`.
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 9);
    /// `http3-post-connect-failure`.
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 10);
    /// gRPC `cancelled` (1).
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 16);
    /// gRPC `deadline-exceeded` (4).
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 17);
    /// gRPC `internal` (13).
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 18);
    /// gRPC `resource-exhausted` (8).
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 19);
    /// gRPC `unavailable` (14).
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 20);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub fn intersects(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    /// The union.
    pub fn union(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }

    /// Parses Envoy's comma list; unknown names are returned as errors (Envoy ignores them in
    /// headers but the config converter reports them).
    pub fn parse(s: &str) -> Result<RetryOn, String> {
        let mut on = RetryOn::default();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let flag = match name {
                "5xx" => RetryOn::FIVE_XX,
                "gateway-error" => RetryOn::GATEWAY_ERROR,
                "reset" => RetryOn::RESET,
                "reset-before-request" => RetryOn::RESET_BEFORE_REQUEST,
                "connect-failure" => RetryOn::CONNECT_FAILURE,
                "envoy-ratelimited" => RetryOn::ENVOY_RATELIMITED,
                "retriable-4xx" => RetryOn::RETRIABLE_4XX,
                "refused-stream" => RetryOn::REFUSED_STREAM,
                "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES,
                "retriable-headers" => RetryOn::RETRIABLE_HEADERS,
                "http3-post-connect-failure" => RetryOn::HTTP3_POST_CONNECT_FAILURE,
                "cancelled" => RetryOn::GRPC_CANCELLED,
                "deadline-exceeded" => RetryOn::GRPC_DEADLINE_EXCEEDED,
                "internal" => RetryOn::GRPC_INTERNAL,
                "resource-exhausted" => RetryOn::GRPC_RESOURCE_EXHAUSTED,
                "unavailable" => RetryOn::GRPC_UNAVAILABLE,
                other => return Err(other.to_string()),
            };
            on = on.union(flag);
        }
        Ok(on)
    }
}

/// `RouteAction.hash_policy[]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HashPolicy {
    /// What is hashed.
    pub kind: HashKind,
    /// Stop at this policy when it produced a hash.
    pub terminal: bool,
}

/// What a hash policy hashes.
#[derive(Clone, Debug, PartialEq)]
pub enum HashKind {
    /// A request header's value (optionally rewritten first).
    Header {
        /// Header name.
        name: HeaderName,
        /// `regex_rewrite`.
        rewrite: Option<(Regex, String)>,
    },
    /// A cookie; generated with `Set-Cookie` when absent and `ttl` is set.
    Cookie {
        /// Cookie name.
        name: String,
        /// Lifetime of a generated cookie (`Some(ZERO)` = session cookie).
        ttl: Option<Duration>,
        /// `Path` attribute.
        path: String,
        /// Extra attributes `(name, value)`.
        attributes: Vec<(String, String)>,
    },
    /// The downstream source IP.
    SourceIp,
    /// A query parameter's first value.
    QueryParameter(String),
    /// A filter state key (no filter state exists here: never hashes).
    FilterState(String),
}

/// `RedirectAction`.
#[derive(Clone, Debug, PartialEq)]
pub struct RedirectAction {
    /// New scheme (`https_redirect` is `https`).
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path.
    pub path: PathRedirect,
    /// Status: 301 (default), 302, 303, 307, 308.
    pub response_code: u16,
    /// Drop the query.
    pub strip_query: bool,
}

/// How a redirect rewrites the path.
#[derive(Clone, Debug, PartialEq)]
pub enum PathRedirect {
    /// Keep it.
    Keep,
    /// Replace the whole path (a query in it replaces the request's).
    Path(String),
    /// Replace the matched prefix.
    Prefix(String),
    /// Regex substitution.
    Regex(Regex, String),
}

/// `DirectResponseAction`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    /// Status (200–599).
    pub status: u16,
    /// Body.
    pub body: Option<Bytes>,
}

/// `request_mirror_policies[]`.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorPolicy {
    /// Cluster.
    pub cluster: String,
    /// Fraction mirrored (all by default).
    pub fraction: FractionalPercent,
    /// Keep the host as is instead of appending `-shadow`.
    pub disable_shadow_host_suffix_append: bool,
}

/// The fault filter's settings (`HTTPFault`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FaultConfig {
    /// Delay.
    pub delay: Option<FaultDelay>,
    /// Abort.
    pub abort: Option<FaultAbort>,
    /// Apply only to requests to this cluster.
    pub upstream_cluster: Option<String>,
    /// Apply only to requests matching these.
    pub headers: Vec<HeaderMatcher>,
    /// Apply only for these downstream nodes (`x-envoy-downstream-service-node`).
    pub downstream_nodes: Vec<String>,
    /// Concurrent faults at most.
    pub max_active_faults: Option<u32>,
}

/// A fault delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultDelay {
    /// Fixed, or from `x-envoy-fault-delay-request`.
    pub kind: FaultDelayKind,
    /// When it fires.
    pub percentage: FractionalPercent,
}

/// How long a fault delay is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultDelayKind {
    /// `fixed_delay`.
    Fixed(Duration),
    /// `header_delay`.
    Header,
}

/// A fault abort.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultAbort {
    /// With what.
    pub kind: FaultAbortKind,
    /// When it fires.
    pub percentage: FractionalPercent,
}

/// What a fault abort answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAbortKind {
    /// An HTTP status.
    Http(u16),
    /// A gRPC status (HTTP 200 with `grpc-status`).
    Grpc(u32),
    /// From `x-envoy-fault-abort-request` / `x-envoy-fault-abort-grpc-request`.
    Header,
}

/// A CORS policy (`CorsPolicy`).
#[derive(Clone, Debug, PartialEq)]
pub struct CorsPolicy {
    /// Allowed origins.
    pub allow_origin: Vec<StringMatcher>,
    /// `access-control-allow-methods`.
    pub allow_methods: Option<String>,
    /// `access-control-allow-headers`.
    pub allow_headers: Option<String>,
    /// `access-control-expose-headers`.
    pub expose_headers: Option<String>,
    /// `access-control-max-age`.
    pub max_age: Option<String>,
    /// `access-control-allow-credentials`.
    pub allow_credentials: Option<bool>,
    /// Enforced (default true).
    pub filter_enabled: FractionalPercent,
    /// Evaluated but not enforced.
    pub shadow_enabled: Option<FractionalPercent>,
    /// `allow_private_network_access`.
    pub allow_private_network_access: bool,
    /// Forward preflights whose origin does not match instead of answering them.
    pub forward_not_matching_preflights: bool,
}
