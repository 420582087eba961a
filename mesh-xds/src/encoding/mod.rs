//! Protobuf written by hand, for the places where building the message first costs too much:
//! endpoint assignments ([`assignment`]), templated clusters, canonical route configurations
//! ([`route`]), shared `Any`s, and streamed discovery responses (`response`, with the server).
//! Every field is named by its tag in [`tag`]; the primitives below write keys, lengths and
//! values as prost does (proto3: empty strings and zero scalars are skipped unless a oneof
//! needs them). Tests check each writer against prost byte for byte.

pub(crate) mod assignment;
#[cfg(feature = "server")]
pub(crate) mod response;
pub(crate) mod route;
pub(crate) mod tag;

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// Length of a length-delimited field holding `len` bytes.
pub(crate) fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Length of a string field (nothing when empty).
pub(crate) fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(tag, s.len())
    }
}

/// Length of a varint field holding `v` (written even when 0).
pub(crate) fn varint_len(tag: u32, v: u64) -> usize {
    key_len(tag) + encoded_len_varint(v)
}

/// The key and length of a length-delimited field; its `len` bytes follow.
pub(crate) fn put_len(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A length-delimited field.
pub(crate) fn put_bytes(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    put_len(tag, bytes.len(), buf);
    buf.put_slice(bytes);
}

/// A string field (nothing when empty).
pub(crate) fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_bytes(tag, s.as_bytes(), buf);
    }
}

/// A varint field (written even when 0).
pub(crate) fn put_varint(tag: u32, v: u64, buf: &mut impl BufMut) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(v, buf);
}

/// Length of a `google.protobuf.UInt32Value` holding `v` (empty when 0).
pub(crate) fn u32_value_len(v: u32) -> usize {
    if v == 0 {
        0
    } else {
        varint_len(tag::wrapper::VALUE, u64::from(v))
    }
}

/// A `google.protobuf.UInt32Value` field that is set (its value is skipped when 0).
pub(crate) fn put_u32_value(field: u32, v: u32, buf: &mut impl BufMut) {
    put_len(field, u32_value_len(v), buf);
    if v != 0 {
        put_varint(tag::wrapper::VALUE, u64::from(v), buf);
    }
}

/// One field of an encoded message: its number and where its bytes (key included) are.
pub(crate) type Field = (u32, std::ops::Range<usize>);

/// The fields of an encoded message, in the order they appear (prost writes them by field
/// number). Stops at the first byte that is not a field (never the case for prost's output).
pub(crate) fn fields(message: &[u8]) -> Vec<Field> {
    let mut out = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let start = message.len() - rest.len();
        let Ok((tag, wire_type)) = prost::encoding::decode_key(&mut rest) else {
            break;
        };
        if prost::encoding::skip_field(
            wire_type,
            tag,
            &mut rest,
            prost::encoding::DecodeContext::default(),
        )
        .is_err()
        {
            break;
        }
        out.push((tag, start..message.len() - rest.len()));
    }
    out
}
