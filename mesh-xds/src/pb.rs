//! Small constructors for Envoy protobuf values, so translation code reads as Istio semantics.

use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, TransportSocket, address, config_source,
    socket_address, transport_socket,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use prost::{Message, Name};

/// Packs a message into `Any`.
pub(crate) fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: type_url::<M>(),
        value: m.encode_to_vec(),
    }
}

/// `type.googleapis.com/PACKAGE.NAME` in one allocation (`Name::type_url` takes two formats).
pub(crate) fn type_url<M: Name>() -> String {
    const PREFIX: &str = "type.googleapis.com/";
    let mut s = String::with_capacity(PREFIX.len() + M::PACKAGE.len() + 1 + M::NAME.len());
    s.push_str(PREFIX);
    s.push_str(M::PACKAGE);
    s.push('.');
    s.push_str(M::NAME);
    s
}

/// A protobuf Duration.
pub(crate) fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf Duration from a model duration.
pub(crate) fn dur(d: &mesh_model::Duration) -> Duration {
    duration(d.as_std())
}

/// `UInt32Value`.
pub(crate) fn u32v(v: u32) -> UInt32Value {
    UInt32Value { value: v }
}

/// `BoolValue`.
pub(crate) fn boolv(v: bool) -> BoolValue {
    BoolValue { value: v }
}

/// `ConfigSource{ads{}, resource_api_version: V3}` with the given initial fetch timeout.
pub(crate) fn ads_source(initial_fetch_timeout: Option<std::time::Duration>) -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        initial_fetch_timeout: initial_fetch_timeout.map(duration),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// A TCP socket address.
pub(crate) fn socket(address: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// A unix socket address (`unix:///path` or a path).
pub(crate) fn pipe(path: &str) -> Address {
    use envoy_types::pb::envoy::config::core::v3::Pipe;
    Address {
        address: Some(address::Address::Pipe(Pipe {
            path: path.trim_start_matches("unix://").to_string(),
            mode: 0,
        })),
    }
}

/// A per-million fraction from a percentage (Istio: value × 10000).
pub(crate) fn per_million(percent: f64) -> FractionalPercent {
    let v = (percent * 10_000.0).round().clamp(0.0, 1_000_000.0);
    FractionalPercent {
        // Clamped to 0..=1e6 above, so the cast is exact.
        numerator: v as u32,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

/// A per-hundred fraction (the legacy integer percent).
pub(crate) fn per_hundred(percent: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: percent.min(100),
        denominator: fractional_percent::DenominatorType::Hundred as i32,
    }
}

/// An RE2 regex matcher.
pub(crate) fn regex(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }
}

/// A string matcher from an Istio string match.
pub(crate) fn string_matcher(m: &mesh_model::StringMatch, ignore_case: bool) -> StringMatcher {
    use mesh_model::StringMatch as S;
    let pattern = match m {
        S::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
        S::Prefix(v) => string_matcher::MatchPattern::Prefix(v.clone()),
        S::Regex(v) => string_matcher::MatchPattern::SafeRegex(regex(v)),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

/// A named transport socket.
pub(crate) fn transport_socket<M: Message + Name>(name: &str, config: &M) -> TransportSocket {
    TransportSocket {
        name: name.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(config))),
    }
}

/// A file path as an Envoy `DataSource` (certificates, keys, CA bundles).
pub(crate) fn file(path: &str) -> envoy_types::pb::envoy::config::core::v3::DataSource {
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// The name of the DNS cache shared by dynamic forward proxy clusters and the HTTP filter.
pub(crate) const DFP_CACHE: &str = "dynamic_forward_proxy_cache_config";

/// The dynamic forward proxy DNS cache (the cluster and the HTTP filter must carry the same).
pub(crate) fn dfp_cache()
-> envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig {
    envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig {
        name: DFP_CACHE.into(),
        dns_lookup_family:
            envoy_types::pb::envoy::config::cluster::v3::cluster::DnsLookupFamily::V4Only as i32,
        ..Default::default()
    }
}
