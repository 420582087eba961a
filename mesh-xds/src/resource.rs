//! xDS type URLs, and encoding resources once into shared, versioned `Any`s.

use std::hash::Hash;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

pub use crate::encoding::route::{encode_canonical, encode_canonical_owned};
use crate::encoding::tag;

/// An xDS resource type this crate serves or knows, by its type URL.
///
/// Snapshots and discovery requests carry type URLs as strings (a client may ask for any);
/// code that acts on a type parses it once into this enum and matches on it.
///
/// ```
/// use mesh_xds::resource::TypeUrl;
///
/// let t: TypeUrl = "type.googleapis.com/envoy.config.cluster.v3.Cluster".parse().unwrap();
/// assert_eq!(t, TypeUrl::Cluster);
/// assert_eq!(t.short_name(), "cds");
/// assert!(t.is_wildcard());
/// assert!("type.googleapis.com/unknown".parse::<TypeUrl>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TypeUrl {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
}

impl TypeUrl {
    /// Every type, in make-before-break push order, then SDS.
    pub const ALL: [TypeUrl; 5] = [
        TypeUrl::Cluster,
        TypeUrl::Endpoint,
        TypeUrl::Listener,
        TypeUrl::Route,
        TypeUrl::Secret,
    ];

    /// The type URL.
    pub const fn as_str(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeUrl::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            TypeUrl::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeUrl::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            TypeUrl::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// The type of a type URL, if it is one of these.
    pub fn from_url(url: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.as_str() == url)
    }

    /// Short name for metrics and debug output (`cds`, `eds`, `lds`, `rds`, `sds`).
    pub const fn short_name(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "cds",
            TypeUrl::Endpoint => "eds",
            TypeUrl::Listener => "lds",
            TypeUrl::Route => "rds",
            TypeUrl::Secret => "sds",
        }
    }

    /// Whether the type is requested as a wildcard (CDS, LDS) rather than by name.
    pub const fn is_wildcard(self) -> bool {
        matches!(self, TypeUrl::Cluster | TypeUrl::Listener)
    }

    /// The type whose resources this type's resources name, and that Envoy therefore expects
    /// again after an update of this type (EDS after CDS, RDS after LDS).
    pub const fn dependent(self) -> Option<TypeUrl> {
        match self {
            TypeUrl::Cluster => Some(TypeUrl::Endpoint),
            TypeUrl::Listener => Some(TypeUrl::Route),
            _ => None,
        }
    }
}

impl std::fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type URL that is none of [`TypeUrl`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown xDS type URL {0:?}")]
pub struct UnknownTypeUrl(pub String);

impl std::str::FromStr for TypeUrl {
    type Err = UnknownTypeUrl;
    fn from_str(s: &str) -> Result<TypeUrl, UnknownTypeUrl> {
        TypeUrl::from_url(s).ok_or_else(|| UnknownTypeUrl(s.to_string()))
    }
}

/// `type.googleapis.com/envoy.config.cluster.v3.Cluster`.
pub const CLUSTER: &str = TypeUrl::Cluster.as_str();
/// `type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`.
pub const ENDPOINT: &str = TypeUrl::Endpoint.as_str();
/// `type.googleapis.com/envoy.config.listener.v3.Listener`.
pub const LISTENER: &str = TypeUrl::Listener.as_str();
/// `type.googleapis.com/envoy.config.route.v3.RouteConfiguration`.
pub const ROUTE: &str = TypeUrl::Route.as_str();
/// `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret`.
pub const SECRET: &str = TypeUrl::Secret.as_str();

/// The xDS types this crate serves, in make-before-break push order (CDS, EDS, LDS, RDS).
pub const PUSH_ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Whether a type is requested as a wildcard (CDS, LDS) rather than by name.
pub fn is_wildcard_type(type_url: &str) -> bool {
    TypeUrl::from_url(type_url).is_some_and(TypeUrl::is_wildcard)
}

/// Short name of a type for metrics and debug output (`cds`, `eds`, `lds`, `rds`, `sds`;
/// `unknown` for any other).
pub fn short_name(type_url: &str) -> &'static str {
    TypeUrl::from_url(type_url).map_or("unknown", TypeUrl::short_name)
}

/// One encoded resource, shared by every proxy (and every stream) that sees the same bytes.
///
/// The resource is kept as an encoded `google.protobuf.Any` in one reference-counted buffer, so
/// responses to any number of streams are assembled from the same bytes without copying them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedResource {
    /// Resource name.
    pub name: String,
    /// Content version: a hash of the canonical encoding.
    pub version: String,
    /// The encoded `Any` (type URL and value).
    any: Bytes,
    /// Where the type URL sits in `any`.
    type_url: std::ops::Range<usize>,
    /// Where the value sits in `any`.
    value: std::ops::Range<usize>,
}

impl EncodedResource {
    /// Encodes a message. Prost encodes map fields in iteration order, so messages with maps
    /// of more than one entry should go through a canonical encoder first (as route
    /// configurations do, see [`encode_canonical`]) and then [`EncodedResource::from_bytes`].
    pub fn new<M: Message + prost::Name>(name: &str, message: &M) -> Arc<EncodedResource> {
        Self::with_type_url(name, &M::type_url(), message)
    }

    /// [`EncodedResource::new`] with the type URL given (prost builds it with two `format!`s
    /// per call, which shows when encoding a hundred thousand resources).
    pub fn with_type_url<M: Message>(
        name: &str,
        type_url: &str,
        message: &M,
    ) -> Arc<EncodedResource> {
        Self::build(name, type_url, message.encoded_len(), |buf| {
            // Cannot fail: the buffer is a Vec, which grows as needed.
            let _ = message.encode(buf);
        })
    }

    /// Wraps bytes that are already canonical.
    pub fn from_bytes(name: &str, type_url: &str, value: &[u8]) -> Arc<EncodedResource> {
        Self::build(name, type_url, value.len(), |buf| {
            buf.extend_from_slice(value);
        })
    }

    /// A resource whose value `write` appends (given the name), exactly `value_len` bytes of it.
    pub(crate) fn from_writer(
        name: String,
        type_url: &str,
        value_len: usize,
        write: impl FnOnce(&str, &mut Vec<u8>),
    ) -> Arc<EncodedResource> {
        Self::build_named(name, type_url, value_len, write)
    }

    fn build(
        name: &str,
        type_url: &str,
        value_len: usize,
        write_value: impl FnOnce(&mut Vec<u8>),
    ) -> Arc<EncodedResource> {
        Self::build_named(name.to_string(), type_url, value_len, |_, buf| {
            write_value(buf)
        })
    }

    fn build_named(
        name: String,
        type_url: &str,
        value_len: usize,
        write_value: impl FnOnce(&str, &mut Vec<u8>),
    ) -> Arc<EncodedResource> {
        use crate::encoding::{field_len, put_len};
        let header = field_len(tag::any::TYPE_URL, type_url.len())
            + field_len(tag::any::VALUE, value_len)
            - value_len;
        let mut buf = Vec::with_capacity(header + value_len);
        put_len(tag::any::TYPE_URL, type_url.len(), &mut buf);
        buf.extend_from_slice(type_url.as_bytes());
        let type_end = buf.len();
        let type_start = type_end - type_url.len();
        put_len(tag::any::VALUE, value_len, &mut buf);
        let value_start = buf.len();
        write_value(&name, &mut buf);
        debug_assert_eq!(
            buf.len() - value_start,
            value_len,
            "declared length of {name}"
        );
        // XXH3: the version only tells contents apart (it is no security boundary), and it is
        // computed over every byte of every resource on each push (SipHash was a tenth of a
        // 10,000-service push's instructions).
        let version = hex16(xxhash_rust::xxh3::xxh3_64(&buf[value_start..]));
        let value_end = buf.len();
        Arc::new(EncodedResource {
            name,
            version,
            any: Bytes::from(buf),
            type_url: type_start..type_end,
            value: value_start..value_end,
        })
    }

    /// The type URL.
    pub fn type_url(&self) -> &str {
        std::str::from_utf8(&self.any[self.type_url.clone()]).unwrap_or_default()
    }

    /// The encoded resource message.
    pub fn value(&self) -> &[u8] {
        &self.any[self.value.clone()]
    }

    /// The encoded `Any` message (type URL and value), shared: cloning it copies no bytes.
    pub fn encoded_any(&self) -> &Bytes {
        &self.any
    }

    /// The resource as a prost `Any` (copies the bytes).
    pub fn to_any(&self) -> Any {
        Any {
            type_url: self.type_url().to_string(),
            value: self.value().to_vec(),
        }
    }
}

/// `{:016x}` without the formatting machinery (one per resource, so it shows in profiles).
fn hex16(v: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = DIGITS[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
    // ASCII digits: always UTF-8.
    String::from_utf8(digits.to_vec()).unwrap_or_default()
}
