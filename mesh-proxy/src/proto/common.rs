//! Conversions shared by every resource: durations, wrappers, percentages, matchers, header
//! mutations and `%COMMAND%` templates, addresses, data sources, metadata and `Any` decoding.
//!
//! Accepted and ignored here:
//! - `RuntimeFractionalPercent.runtime_key`, `RuntimeDouble.runtime_key`: this proxy has no
//!   runtime layers, so a runtime key always resolves to its default value, as in an Envoy
//!   whose runtime does not set the key.
//! - `RegexMatcher.google_re2` without `max_program_size` (the deprecated engine marker).
//! - `Pipe.mode` of endpoint addresses (it only applies to listening sockets).

#![allow(deprecated)] // Envoy's deprecated fields are named (and checked) like the others.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route_pb;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher_pb;
use envoy_types::pb::envoy::r#type::v3 as type_pb;
use envoy_types::pb::google::protobuf as pbw;
use http::header::HeaderName;

use super::{InvalidField, Within};
use crate::config::bootstrap::MetadataValue;
use crate::config::endpoint::EndpointAddress;
use crate::config::matcher::{
    Cidr, FractionalPercent, HeaderMatch, HeaderMatcher, QueryParameterMatcher, Regex,
    StringMatcher, StringPattern,
};
use crate::config::route::{
    AppendAction, HeaderMutations, HeaderTemplate, HeaderValueOption, TemplatePart,
};
use crate::config::tls::DataSource;

/// Returns [`InvalidField::unsupported`] naming the first of the given fields (local bindings
/// named like the proto fields) that is not at its proto default.
macro_rules! unsupported_if_set {
    ($($field:ident),+ $(,)?) => {
        $(
            if !$crate::proto::common::is_default(&$field) {
                return Err($crate::proto::InvalidField::unsupported(
                    $crate::proto::common::field_name(stringify!($field)),
                ));
            }
        )+
    };
}

/// Whether a proto value is at its default (unset message, zero, empty).
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A Rust binding's name as the proto field name (`r#match` is `match`).
pub(crate) fn field_name(ident: &'static str) -> &'static str {
    ident.strip_prefix("r#").unwrap_or(ident)
}

/// `name[i]`, for error paths.
pub(crate) fn at(name: &str, i: usize) -> String {
    format!("{name}[{i}]")
}

/// `name["key"]`, for error paths into maps.
pub(crate) fn key(name: &str, k: &str) -> String {
    format!("{name}[\"{k}\"]")
}

// ---------------------------------------------------------------------------------------------
// Scalars and wrappers.

/// A protobuf `Duration` (non-negative, nanos in range, as Envoy's validation requires).
pub(crate) fn duration(d: &pbw::Duration) -> Result<Duration, InvalidField> {
    let secs = u64::try_from(d.seconds)
        .map_err(|_| InvalidField::invalid("", "duration must not be negative"))?;
    let nanos = u32::try_from(d.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| InvalidField::invalid("", "duration nanos must be in [0, 1e9)"))?;
    Ok(Duration::new(secs, nanos))
}

/// An optional duration field named `field`.
pub(crate) fn opt_duration(
    d: Option<pbw::Duration>,
    field: &str,
) -> Result<Option<Duration>, InvalidField> {
    d.as_ref().map(duration).transpose().within(field)
}

/// A duration field that must be greater than zero when set (PGV `gt: {}`).
pub(crate) fn positive_duration(
    d: Option<pbw::Duration>,
    field: &str,
) -> Result<Option<Duration>, InvalidField> {
    match opt_duration(d, field)? {
        Some(Duration::ZERO) => Err(InvalidField::invalid(
            field,
            "value must be greater than 0s",
        )),
        other => Ok(other),
    }
}

/// A timeout where unset means `default` and zero disables it (`None`).
pub(crate) fn timeout_or(
    d: Option<pbw::Duration>,
    default: Option<Duration>,
    field: &str,
) -> Result<Option<Duration>, InvalidField> {
    Ok(match opt_duration(d, field)? {
        None => default,
        Some(Duration::ZERO) => None,
        Some(d) => Some(d),
    })
}

/// `UInt32Value` with a default.
pub(crate) fn u32_or(v: Option<pbw::UInt32Value>, default: u32) -> u32 {
    v.map_or(default, |v| v.value)
}

/// `UInt64Value` with a default.
pub(crate) fn u64_or(v: Option<pbw::UInt64Value>, default: u64) -> u64 {
    v.map_or(default, |v| v.value)
}

/// `BoolValue` with a default.
pub(crate) fn bool_or(v: Option<pbw::BoolValue>, default: bool) -> bool {
    v.map_or(default, |v| v.value)
}

/// Rejects a `BoolValue` set to something other than Envoy's default.
pub(crate) fn bool_must_be(
    v: Option<pbw::BoolValue>,
    default: bool,
    field: &str,
) -> Result<(), InvalidField> {
    if bool_or(v, default) == default {
        Ok(())
    } else {
        Err(InvalidField::unsupported(field))
    }
}

/// A `uint32` that must be a port (1..=65535 when `allow_zero` is false).
pub(crate) fn port(v: u32, allow_zero: bool, field: &str) -> Result<u16, InvalidField> {
    match u16::try_from(v) {
        Ok(0) if !allow_zero => Err(InvalidField::invalid(field, "port must not be 0")),
        Ok(p) => Ok(p),
        Err(_) => Err(InvalidField::invalid(
            field,
            "value must be less than or equal to 65535",
        )),
    }
}

/// A value that must be at least `min` (PGV `gte`).
pub(crate) fn at_least(v: u32, min: u32, field: &str) -> Result<u32, InvalidField> {
    if v < min {
        Err(InvalidField::invalid(
            field,
            format!("value must be greater than or equal to {min}"),
        ))
    } else {
        Ok(v)
    }
}

/// A value that must be at most `max` (PGV `lte`).
pub(crate) fn at_most(v: u32, max: u32, field: &str) -> Result<u32, InvalidField> {
    if v > max {
        Err(InvalidField::invalid(
            field,
            format!("value must be less than or equal to {max}"),
        ))
    } else {
        Ok(v)
    }
}

/// A string field that must not be empty (PGV `min_len: 1`).
pub(crate) fn non_empty(s: String, field: &str) -> Result<String, InvalidField> {
    if s.is_empty() {
        Err(InvalidField::invalid(
            field,
            "value length must be at least 1 characters",
        ))
    } else {
        Ok(s)
    }
}

/// The error for an enum value outside the defined ones.
pub(crate) fn bad_enum(field: &str) -> InvalidField {
    InvalidField::invalid(field, "value must be one of the defined enum values")
}

/// The error for a required field that is unset.
pub(crate) fn required(field: &str) -> InvalidField {
    InvalidField::invalid(field, "value is required")
}

/// `type.v3.Percent` (0..=100).
pub(crate) fn percent(p: &type_pb::Percent, field: &str) -> Result<f64, InvalidField> {
    let type_pb::Percent { value } = *p;
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(InvalidField::invalid(
            format!("{field}.value"),
            "value must be inside range [0, 100]",
        ))
    }
}

/// `FractionalPercent`.
pub(crate) fn fractional_percent(
    f: type_pb::FractionalPercent,
) -> Result<FractionalPercent, InvalidField> {
    use type_pb::fractional_percent::DenominatorType;
    let type_pb::FractionalPercent {
        numerator,
        denominator,
    } = f;
    let denominator = match DenominatorType::try_from(denominator) {
        Ok(DenominatorType::Hundred) => 100,
        Ok(DenominatorType::TenThousand) => 10_000,
        Ok(DenominatorType::Million) => 1_000_000,
        Err(_) => return Err(bad_enum("denominator")),
    };
    Ok(FractionalPercent {
        numerator,
        denominator,
    })
}

/// `RuntimeFractionalPercent` (its `default_value` is required; the runtime key is ignored:
/// see the module docs).
pub(crate) fn runtime_fractional_percent(
    r: core::RuntimeFractionalPercent,
) -> Result<FractionalPercent, InvalidField> {
    let core::RuntimeFractionalPercent {
        default_value,
        runtime_key: _,
    } = r;
    let v = default_value.ok_or_else(|| required("default_value"))?;
    fractional_percent(v).within("default_value")
}

/// `RuntimeDouble` (the runtime key is ignored: see the module docs).
pub(crate) fn runtime_double(r: Option<core::RuntimeDouble>, default: f64) -> f64 {
    r.map_or(
        default,
        |core::RuntimeDouble {
             default_value,
             runtime_key: _,
         }| default_value,
    )
}

// ---------------------------------------------------------------------------------------------
// Any.

/// The fully qualified message name of an `Any` (what follows the last `/` of its type URL).
pub(crate) fn type_name(a: &pbw::Any) -> &str {
    a.type_url.rsplit('/').next().unwrap_or(&a.type_url)
}

/// Whether `a` holds an `M`.
pub(crate) fn is<M: prost::Name>(a: &pbw::Any) -> bool {
    type_name(a) == M::full_name()
}

/// Decodes `a` as an `M` (the caller checked its type).
pub(crate) fn decode<M: prost::Message + Default>(a: &pbw::Any) -> Result<M, InvalidField> {
    M::decode(a.value.as_slice())
        .map_err(|e| InvalidField::invalid("", format!("does not decode as {}: {e}", a.type_url)))
}

/// The error for an `Any` of a type this proxy does not run.
pub(crate) fn unknown_type(a: &pbw::Any) -> InvalidField {
    InvalidField::invalid("", format!("unsupported type {}", a.type_url))
}

// ---------------------------------------------------------------------------------------------
// Matchers.

/// `RegexMatcher`, compiled.
pub(crate) fn regex(r: matcher_pb::RegexMatcher) -> Result<Regex, InvalidField> {
    use matcher_pb::regex_matcher::{EngineType, GoogleRe2};
    let matcher_pb::RegexMatcher { regex, engine_type } = r;
    if let Some(EngineType::GoogleRe2(GoogleRe2 {
        max_program_size: Some(_),
    })) = engine_type
    {
        return Err(InvalidField::unsupported("google_re2.max_program_size"));
    }
    compile(&regex, "regex")
}

/// Compiles `pattern`, naming `field` if it is not valid.
pub(crate) fn compile(pattern: &str, field: &str) -> Result<Regex, InvalidField> {
    Regex::new(pattern).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().last().unwrap_or(&msg).trim().to_string();
        InvalidField::invalid(field, format!("invalid regex {pattern:?}: {first}"))
    })
}

/// `RegexMatchAndSubstitute`: the compiled pattern and the substitution.
pub(crate) fn regex_rewrite(
    r: matcher_pb::RegexMatchAndSubstitute,
) -> Result<(Regex, String), InvalidField> {
    let matcher_pb::RegexMatchAndSubstitute {
        pattern,
        substitution,
    } = r;
    let pattern = pattern.ok_or_else(|| required("pattern"))?;
    Ok((regex(pattern).within("pattern")?, substitution))
}

/// `StringMatcher`.
pub(crate) fn string_matcher(m: matcher_pb::StringMatcher) -> Result<StringMatcher, InvalidField> {
    use matcher_pb::string_matcher::MatchPattern;
    let matcher_pb::StringMatcher {
        ignore_case,
        match_pattern,
    } = m;
    let pattern = match match_pattern {
        Some(MatchPattern::Exact(s)) => StringPattern::Exact(s),
        Some(MatchPattern::Prefix(s)) => StringPattern::Prefix(non_empty(s, "prefix")?),
        Some(MatchPattern::Suffix(s)) => StringPattern::Suffix(non_empty(s, "suffix")?),
        Some(MatchPattern::Contains(s)) => StringPattern::Contains(non_empty(s, "contains")?),
        Some(MatchPattern::SafeRegex(r)) => StringPattern::Regex(regex(r).within("safe_regex")?),
        Some(MatchPattern::Custom(_)) => return Err(InvalidField::unsupported("custom")),
        None => return Err(required("match_pattern")),
    };
    Ok(StringMatcher {
        pattern,
        ignore_case,
    })
}

/// A header name in a matcher: lower-cased; pseudo-headers allowed.
fn matcher_header_name(name: String, field: &str) -> Result<String, InvalidField> {
    let name = non_empty(name, field)?.to_ascii_lowercase();
    let plain = name.strip_prefix(':').unwrap_or(&name);
    if HeaderName::from_bytes(plain.as_bytes()).is_err() {
        return Err(InvalidField::invalid(
            field,
            format!("invalid header name {name:?}"),
        ));
    }
    Ok(name)
}

/// `HeaderMatcher`, including the deprecated direct fields (`exact_match`, `prefix_match`,
/// ...), which mean the same as the corresponding `string_match`.
pub(crate) fn header_matcher(h: route_pb::HeaderMatcher) -> Result<HeaderMatcher, InvalidField> {
    use route_pb::header_matcher::HeaderMatchSpecifier as S;
    let route_pb::HeaderMatcher {
        name,
        invert_match,
        treat_missing_header_as_empty,
        header_match_specifier,
    } = h;
    let name = matcher_header_name(name, "name")?;
    let string = |pattern| {
        HeaderMatch::String(StringMatcher {
            pattern,
            ignore_case: false,
        })
    };
    let kind = match header_match_specifier {
        // No specifier: the header must be present (Envoy's `HeaderData`).
        None => HeaderMatch::Present(true),
        Some(S::PresentMatch(p)) => HeaderMatch::Present(p),
        Some(S::ExactMatch(s)) => string(StringPattern::Exact(s)),
        Some(S::PrefixMatch(s)) => string(StringPattern::Prefix(non_empty(s, "prefix_match")?)),
        Some(S::SuffixMatch(s)) => string(StringPattern::Suffix(non_empty(s, "suffix_match")?)),
        Some(S::ContainsMatch(s)) => {
            string(StringPattern::Contains(non_empty(s, "contains_match")?))
        }
        Some(S::SafeRegexMatch(r)) => {
            string(StringPattern::Regex(regex(r).within("safe_regex_match")?))
        }
        Some(S::RangeMatch(type_pb::Int64Range { start, end })) => {
            HeaderMatch::Range { start, end }
        }
        Some(S::StringMatch(m)) => HeaderMatch::String(string_matcher(m).within("string_match")?),
    };
    Ok(HeaderMatcher {
        name,
        kind,
        invert: invert_match,
        treat_missing_as_empty: treat_missing_header_as_empty,
    })
}

/// A list of header matchers named `field`.
pub(crate) fn header_matchers(
    list: Vec<route_pb::HeaderMatcher>,
    field: &str,
) -> Result<Vec<HeaderMatcher>, InvalidField> {
    list.into_iter()
        .enumerate()
        .map(|(i, h)| header_matcher(h).within(&at(field, i)))
        .collect()
}

/// `QueryParameterMatcher`.
pub(crate) fn query_parameter_matcher(
    q: route_pb::QueryParameterMatcher,
) -> Result<QueryParameterMatcher, InvalidField> {
    use route_pb::query_parameter_matcher::QueryParameterMatchSpecifier as S;
    let route_pb::QueryParameterMatcher {
        name,
        query_parameter_match_specifier,
    } = q;
    let name = non_empty(name, "name")?;
    let value = match query_parameter_match_specifier {
        None | Some(S::PresentMatch(true)) => None,
        Some(S::PresentMatch(false)) => {
            return Err(InvalidField::unsupported("present_match"));
        }
        Some(S::StringMatch(m)) => Some(string_matcher(m).within("string_match")?),
    };
    Ok(QueryParameterMatcher { name, value })
}

/// `CidrRange`.
pub(crate) fn cidr(c: core::CidrRange) -> Result<Cidr, InvalidField> {
    let core::CidrRange {
        address_prefix,
        prefix_len,
    } = c;
    let addr: IpAddr = address_prefix.parse().map_err(|_| {
        InvalidField::invalid(
            "address_prefix",
            format!("malformed IP address: {address_prefix}"),
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = u32_or(prefix_len, max);
    let len = at_most(len, 128, "prefix_len")?;
    // Envoy clamps a too-long prefix to the address width.
    let len = u8::try_from(len.min(max)).unwrap_or(0);
    Ok(Cidr { addr, len })
}

/// A list of CIDR ranges named `field`.
pub(crate) fn cidrs(list: Vec<core::CidrRange>, field: &str) -> Result<Vec<Cidr>, InvalidField> {
    list.into_iter()
        .enumerate()
        .map(|(i, c)| cidr(c).within(&at(field, i)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Headers.

/// A header name that may be set or removed by configuration: not a pseudo-header, not `host`.
pub(crate) fn mutable_header_name(
    name: &str,
    field: &str,
    verb: &str,
) -> Result<HeaderName, InvalidField> {
    if name.is_empty() {
        return Err(InvalidField::invalid(
            field,
            "value length must be at least 1 characters",
        ));
    }
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return Err(InvalidField::invalid(
            field,
            format!(":-prefixed or host headers may not be {verb}"),
        ));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| InvalidField::invalid(field, format!("invalid header name {name:?}")))
}

/// A plain header name (for `cluster_header`, hash policies, ...).
pub(crate) fn header_name(name: &str, field: &str) -> Result<HeaderName, InvalidField> {
    if name.is_empty() {
        return Err(InvalidField::invalid(
            field,
            "value length must be at least 1 characters",
        ));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| InvalidField::invalid(field, format!("invalid header name {name:?}")))
}

/// `HeaderValueOption`.
pub(crate) fn header_value_option(
    o: core::HeaderValueOption,
) -> Result<HeaderValueOption, InvalidField> {
    use core::header_value_option::HeaderAppendAction as A;
    let core::HeaderValueOption {
        header,
        append,
        append_action,
        keep_empty_value,
    } = o;
    let core::HeaderValue {
        key,
        value,
        raw_value,
    } = header.ok_or_else(|| required("header"))?;
    let name = mutable_header_name(&key, "header.key", "modified")?;
    let value = if raw_value.is_empty() {
        value
    } else if value.is_empty() {
        String::from_utf8(raw_value).map_err(|_| {
            InvalidField::invalid("header.raw_value", "header values must be UTF-8 here")
        })?
    } else {
        return Err(InvalidField::invalid(
            "header",
            "only one of 'value' or 'raw_value' can be set",
        ));
    };
    if value.bytes().any(|b| matches!(b, b'\0' | b'\r' | b'\n')) {
        return Err(InvalidField::invalid(
            "header.value",
            "invalid header value (NUL, CR or LF)",
        ));
    }
    let action = match (append, A::try_from(append_action)) {
        (_, Err(_)) => return Err(bad_enum("append_action")),
        (Some(a), Ok(A::AppendIfExistsOrAdd)) => {
            if a.value {
                AppendAction::AppendIfExistsOrAdd
            } else {
                AppendAction::OverwriteIfExistsOrAdd
            }
        }
        (Some(_), Ok(_)) => {
            return Err(InvalidField::invalid(
                "append",
                "Both append and append_action are set and it's not allowed",
            ));
        }
        (None, Ok(A::AppendIfExistsOrAdd)) => AppendAction::AppendIfExistsOrAdd,
        (None, Ok(A::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(A::OverwriteIfExistsOrAdd)) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(A::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
    };
    Ok(HeaderValueOption {
        name,
        value: header_template(&value).within("header.value")?,
        action,
        keep_empty_value,
    })
}

/// The four header-mutation lists of one level (route configuration, virtual host, route or
/// weighted cluster), with their field names.
pub(crate) fn header_mutations(
    request_add: Vec<core::HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<core::HeaderValueOption>,
    response_remove: Vec<String>,
) -> Result<HeaderMutations, InvalidField> {
    let adds = |list: Vec<core::HeaderValueOption>, field: &str| {
        list.into_iter()
            .enumerate()
            .map(|(i, o)| header_value_option(o).within(&at(field, i)))
            .collect::<Result<Vec<_>, _>>()
    };
    let removes = |list: Vec<String>, field: &str| {
        list.iter()
            .enumerate()
            .map(|(i, n)| mutable_header_name(n, &at(field, i), "removed"))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(HeaderMutations {
        request_add: adds(request_add, "request_headers_to_add")?,
        request_remove: removes(request_remove, "request_headers_to_remove")?,
        response_add: adds(response_add, "response_headers_to_add")?,
        response_remove: removes(response_remove, "response_headers_to_remove")?,
    })
}

/// Parses a header value with Envoy's `%COMMAND%` substitutions (`%%` is a literal `%`).
pub(crate) fn header_template(value: &str) -> Result<HeaderTemplate, InvalidField> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('%') {
        literal.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            literal.push('%');
            rest = tail;
            continue;
        }
        let Some(end) = after.find('%') else {
            return Err(InvalidField::invalid(
                "",
                format!(
                    "Invalid header configuration. Un-terminated variable expression '{after}'"
                ),
            ));
        };
        let command = &after[..end];
        let part = template_command(command)?;
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
        }
        parts.push(part);
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() || parts.is_empty() {
        parts.push(TemplatePart::Literal(literal));
    }
    Ok(HeaderTemplate { parts })
}

fn template_command(command: &str) -> Result<TemplatePart, InvalidField> {
    Ok(match command {
        "DOWNSTREAM_REMOTE_ADDRESS" => TemplatePart::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            TemplatePart::DownstreamRemoteAddressWithoutPort
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => TemplatePart::DownstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => TemplatePart::DownstreamLocalAddressWithoutPort,
        "UPSTREAM_REMOTE_ADDRESS" => TemplatePart::UpstreamRemoteAddress,
        "HOSTNAME" => TemplatePart::Hostname,
        "PROTOCOL" => TemplatePart::Protocol,
        "START_TIME" => TemplatePart::StartTime,
        c => match c.strip_prefix("REQ(").and_then(|r| r.strip_suffix(')')) {
            Some(name) if !name.starts_with(':') && !name.contains('?') => {
                TemplatePart::Request(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    InvalidField::invalid("", format!("%{c}%: invalid header name {name:?}"))
                })?)
            }
            _ => {
                return Err(InvalidField::invalid(
                    "",
                    format!("%{c}%: unsupported header value command"),
                ));
            }
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Addresses.

/// What an address may hold where it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddressKind {
    /// An IP (listeners, STATIC and EDS endpoints, bind addresses).
    Ip,
    /// An IP or a DNS name (STRICT_DNS and LOGICAL_DNS endpoints).
    IpOrDns,
}

/// A TCP `SocketAddress` holding an IP.
pub(crate) fn socket_ip(s: core::SocketAddress) -> Result<SocketAddr, InvalidField> {
    match socket_address(s, AddressKind::Ip, false)? {
        EndpointAddress::Socket(a) => Ok(a),
        other => Err(InvalidField::invalid(
            "address",
            format!("malformed IP address: {other}"),
        )),
    }
}

/// A `SocketAddress` (TCP unless `udp_ok`).
pub(crate) fn socket_address(
    s: core::SocketAddress,
    kind: AddressKind,
    udp_ok: bool,
) -> Result<EndpointAddress, InvalidField> {
    use core::socket_address::{PortSpecifier, Protocol};
    let core::SocketAddress {
        protocol,
        address,
        resolver_name,
        ipv4_compat,
        network_namespace_filepath,
        port_specifier,
    } = s;
    match Protocol::try_from(protocol) {
        Ok(Protocol::Tcp) => {}
        Ok(Protocol::Udp) if udp_ok => {}
        Ok(Protocol::Udp) => return Err(InvalidField::unsupported("protocol")),
        Err(_) => return Err(bad_enum("protocol")),
    }
    unsupported_if_set!(resolver_name, ipv4_compat, network_namespace_filepath);
    let port = match port_specifier {
        Some(PortSpecifier::PortValue(p)) => port(p, true, "port_value")?,
        Some(PortSpecifier::NamedPort(_)) => return Err(InvalidField::unsupported("named_port")),
        None => 0,
    };
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(EndpointAddress::Socket(SocketAddr::new(ip, port)));
    }
    match kind {
        AddressKind::IpOrDns if !address.is_empty() => Ok(EndpointAddress::Dns {
            host: address,
            port,
        }),
        _ => Err(InvalidField::invalid(
            "address",
            format!("malformed IP address: {address}"),
        )),
    }
}

/// An `Address`: a socket address (see [`socket_address`]) or a pipe.
pub(crate) fn address(
    a: core::Address,
    kind: AddressKind,
) -> Result<EndpointAddress, InvalidField> {
    use core::address::Address as A;
    let core::Address { address } = a;
    match address {
        Some(A::SocketAddress(s)) => socket_address(s, kind, false).within("socket_address"),
        Some(A::Pipe(core::Pipe { path, mode: _ })) => {
            let path = non_empty(path, "pipe.path")?;
            Ok(EndpointAddress::Pipe(path.into()))
        }
        Some(A::EnvoyInternalAddress(_)) => {
            Err(InvalidField::unsupported("envoy_internal_address"))
        }
        None => Err(required("address")),
    }
}

/// An `Address` that must be an IP socket address (listeners, the admin address).
pub(crate) fn ip_address(a: core::Address) -> Result<SocketAddr, InvalidField> {
    use core::address::Address as A;
    let core::Address { address } = a;
    match address {
        Some(A::SocketAddress(s)) => socket_ip(s).within("socket_address"),
        Some(A::Pipe(_)) => Err(InvalidField::unsupported("pipe")),
        Some(A::EnvoyInternalAddress(_)) => {
            Err(InvalidField::unsupported("envoy_internal_address"))
        }
        None => Err(required("address")),
    }
}

// ---------------------------------------------------------------------------------------------
// Config sources.

/// A `ConfigSource` that must be `{ads: {}}` with `resource_api_version: V3`; returns its
/// `initial_fetch_timeout` (15 s when unset; `None` when 0, i.e. wait forever).
pub(crate) fn ads_config_source(c: core::ConfigSource) -> Result<Option<Duration>, InvalidField> {
    use core::config_source::ConfigSourceSpecifier as S;
    let core::ConfigSource {
        authorities,
        initial_fetch_timeout,
        resource_api_version,
        config_source_specifier,
    } = c;
    unsupported_if_set!(authorities);
    if core::ApiVersion::try_from(resource_api_version) != Ok(core::ApiVersion::V3) {
        return Err(InvalidField::invalid(
            "resource_api_version",
            "only the V3 xDS resource version is supported",
        ));
    }
    match config_source_specifier {
        Some(S::Ads(core::AggregatedConfigSource {})) => {}
        Some(S::Path(_)) => return Err(InvalidField::unsupported("path")),
        Some(S::PathConfigSource(_)) => {
            return Err(InvalidField::unsupported("path_config_source"));
        }
        Some(S::ApiConfigSource(_)) => return Err(InvalidField::unsupported("api_config_source")),
        Some(S::Self_(_)) => return Err(InvalidField::unsupported("self")),
        None => return Err(required("config_source_specifier")),
    }
    timeout_or(
        initial_fetch_timeout,
        Some(Duration::from_secs(15)),
        "initial_fetch_timeout",
    )
}

// ---------------------------------------------------------------------------------------------
// Data sources and metadata.

/// `DataSource`.
pub(crate) fn data_source(d: core::DataSource) -> Result<DataSource, InvalidField> {
    use core::data_source::Specifier;
    let core::DataSource {
        watched_directory,
        specifier,
    } = d;
    unsupported_if_set!(watched_directory);
    Ok(match specifier {
        Some(Specifier::Filename(f)) => DataSource::File(non_empty(f, "filename")?.into()),
        Some(Specifier::InlineBytes(b)) => DataSource::Inline(Bytes::from(b)),
        Some(Specifier::InlineString(s)) => DataSource::Inline(Bytes::from(s)),
        Some(Specifier::EnvironmentVariable(v)) => {
            DataSource::Env(non_empty(v, "environment_variable")?)
        }
        None => return Err(required("specifier")),
    })
}

/// A `google.protobuf.Value` as a [`MetadataValue`].
pub(crate) fn metadata_value(v: pbw::Value) -> MetadataValue {
    use pbw::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => MetadataValue::Null,
        Some(Kind::NumberValue(n)) => MetadataValue::Number(n),
        Some(Kind::StringValue(s)) => MetadataValue::String(s),
        Some(Kind::BoolValue(b)) => MetadataValue::Bool(b),
        Some(Kind::StructValue(s)) => MetadataValue::Struct(metadata_struct(s)),
        Some(Kind::ListValue(pbw::ListValue { values })) => {
            MetadataValue::List(values.into_iter().map(metadata_value).collect())
        }
    }
}

/// A `google.protobuf.Struct` as a map of [`MetadataValue`]s.
pub(crate) fn metadata_struct(s: pbw::Struct) -> BTreeMap<String, MetadataValue> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, metadata_value(v)))
        .collect()
}

/// The string fields of a `Struct`, sorted by key; other kinds of values are an error naming
/// `field`.
pub(crate) fn string_fields(
    s: pbw::Struct,
    field: &str,
) -> Result<Vec<(String, String)>, InvalidField> {
    use pbw::value::Kind;
    let mut out: Vec<(String, String)> = Vec::with_capacity(s.fields.len());
    for (k, v) in s.fields {
        match v.kind {
            Some(Kind::StringValue(s)) => out.push((k, s)),
            _ => {
                return Err(InvalidField::invalid(
                    key(field, &k),
                    "only string values are supported",
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_commands_and_escapes() {
        let t = header_template("a%%b %DOWNSTREAM_REMOTE_ADDRESS%-%REQ(X-Id)%").unwrap();
        assert_eq!(
            t.parts,
            vec![
                TemplatePart::Literal("a%b ".into()),
                TemplatePart::DownstreamRemoteAddress,
                TemplatePart::Literal("-".into()),
                TemplatePart::Request(HeaderName::from_static("x-id")),
            ]
        );
        assert_eq!(header_template("").unwrap().as_literal(), Some(""));
        assert_eq!(header_template("100%%").unwrap().as_literal(), Some("100%"));
        let e = header_template("%NOPE%").unwrap_err();
        assert!(e.message.contains("%NOPE%"), "{e}");
        let e = header_template("x %HOSTNAME").unwrap_err();
        assert!(e.message.contains("Un-terminated"), "{e}");
    }

    #[test]
    fn deprecated_header_fields_mean_string_matches() {
        use route_pb::header_matcher::HeaderMatchSpecifier as S;
        let old = header_matcher(route_pb::HeaderMatcher {
            name: "X-A".into(),
            header_match_specifier: Some(S::PrefixMatch("v".into())),
            ..Default::default()
        })
        .unwrap();
        let new = header_matcher(route_pb::HeaderMatcher {
            name: "x-a".into(),
            header_match_specifier: Some(S::StringMatch(matcher_pb::StringMatcher {
                match_pattern: Some(matcher_pb::string_matcher::MatchPattern::Prefix("v".into())),
                ignore_case: false,
            })),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(old, new);
    }

    #[test]
    fn percentages_use_envoys_denominators() {
        for (d, want) in [(0, 100), (1, 10_000), (2, 1_000_000)] {
            let f = fractional_percent(type_pb::FractionalPercent {
                numerator: 5,
                denominator: d,
            })
            .unwrap();
            assert_eq!(f.denominator, want);
        }
        assert_eq!(
            fractional_percent(type_pb::FractionalPercent {
                numerator: 5,
                denominator: 7,
            })
            .unwrap_err()
            .field,
            "denominator"
        );
    }
}
