//! Discovery responses streamed straight from the shared encoded resources.
//!
//! tonic encodes every response into a per-stream buffer that keeps the capacity of the largest
//! response it ever held (a full CDS response on a large mesh) for the life of the stream, and
//! each response copies every resource. Here a response is a list of shared resources plus a few
//! fields; the HTTP/2 body pulls it in chunks of at most [`CHUNK`] bytes as flow control allows,
//! and large resources go out as their own frames without being copied at all. What a stream
//! holds is its small chunk and one reference per resource, whatever the size of the mesh.

use std::sync::Arc;

use crate::encoding::tag::{
    delta_discovery_response as delta, discovery_response as sotw, resource,
};
use crate::encoding::{field_len, put_len, put_str, str_len};
use crate::resource::EncodedResource;
use bytes::{BufMut, Bytes, BytesMut};

/// gRPC message header: a compression flag and a big-endian length.
const GRPC_HEADER: usize = 5;
/// Most bytes copied into one data frame.
pub(crate) const CHUNK: usize = 16 * 1024;
/// Resources at least this large are sent as frames of their own, without a copy.
const ZERO_COPY: usize = 4 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `DiscoveryResponse.resources`: repeated `Any` (field 2).
    Sotw,
    /// `DeltaDiscoveryResponse.resources`: repeated `Resource` (field 2) of version (1), name
    /// (3) and the `Any` (2), written last so that it can be sent without a copy.
    Delta,
}

/// One discovery response, ready to stream.
#[derive(Debug)]
pub(crate) struct Response {
    kind: Kind,
    /// gRPC header and the fields before the resources.
    head: Bytes,
    resources: Vec<Arc<EncodedResource>>,
    /// The fields after the resources.
    tail: Bytes,
    /// Resources written so far.
    next: usize,
    head_sent: bool,
    /// A large resource waiting to go out as its own frame.
    pending: Option<Bytes>,
}

fn delta_resource_len(r: &EncodedResource) -> usize {
    str_len(resource::VERSION, &r.version)
        + str_len(resource::NAME, &r.name)
        + field_len(resource::RESOURCE, r.encoded_any().len())
}

impl Response {
    fn new(
        kind: Kind,
        version: &str,
        resources: Vec<Arc<EncodedResource>>,
        tail_fields: impl Fn(&mut BytesMut),
    ) -> Response {
        let mut tail = BytesMut::new();
        tail_fields(&mut tail);
        let resources_len: usize = resources
            .iter()
            .map(|r| match kind {
                Kind::Sotw => field_len(sotw::RESOURCES, r.encoded_any().len()),
                Kind::Delta => field_len(delta::RESOURCES, delta_resource_len(r)),
            })
            .sum();
        let version_tag = match kind {
            Kind::Sotw => sotw::VERSION_INFO,
            Kind::Delta => delta::SYSTEM_VERSION_INFO,
        };
        let message_len = str_len(version_tag, version) + resources_len + tail.len();
        let mut head = BytesMut::with_capacity(GRPC_HEADER + str_len(version_tag, version));
        head.put_u8(0);
        head.put_u32(u32::try_from(message_len).unwrap_or(u32::MAX));
        put_str(version_tag, version, &mut head);
        Response {
            kind,
            head: head.freeze(),
            resources,
            tail: tail.freeze(),
            next: 0,
            head_sent: false,
            pending: None,
        }
    }

    /// The next data frame, or `None` when the response has been written.
    pub(crate) fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(big) = self.pending.take() {
            return Some(big);
        }
        let mut buf = BytesMut::new();
        if !self.head_sent {
            self.head_sent = true;
            buf.reserve(CHUNK.min(self.head.len() + 1024));
            buf.put_slice(&self.head);
        }
        while let Some(r) = self.resources.get(self.next) {
            let any = r.encoded_any();
            let copy = any.len() < ZERO_COPY;
            let prefix = match self.kind {
                Kind::Sotw => field_len(sotw::RESOURCES, any.len()) - any.len(),
                Kind::Delta => {
                    field_len(delta::RESOURCES, delta_resource_len(r)) - delta_resource_len(r)
                        + str_len(resource::VERSION, &r.version)
                        + str_len(resource::NAME, &r.name)
                        + field_len(resource::RESOURCE, any.len())
                        - any.len()
                }
            };
            let needed = prefix + if copy { any.len() } else { 0 };
            if !buf.is_empty() && buf.len() + needed > CHUNK {
                break;
            }
            self.next += 1;
            match self.kind {
                Kind::Sotw => put_len(sotw::RESOURCES, any.len(), &mut buf),
                Kind::Delta => {
                    put_len(delta::RESOURCES, delta_resource_len(r), &mut buf);
                    put_str(resource::VERSION, &r.version, &mut buf);
                    put_str(resource::NAME, &r.name, &mut buf);
                    put_len(resource::RESOURCE, any.len(), &mut buf);
                }
            }
            if copy {
                buf.put_slice(any);
            } else {
                // The prefix now, the shared bytes as the next frame.
                self.pending = Some(any.clone());
                return Some(buf.freeze());
            }
        }
        if self.next == self.resources.len() && !self.tail.is_empty() {
            if buf.is_empty() || buf.len() + self.tail.len() <= CHUNK {
                buf.put_slice(&self.tail);
                self.tail = Bytes::new();
            } else {
                return Some(buf.freeze());
            }
        }
        // Resources and tail done: release the references as soon as possible.
        if self.next == self.resources.len() && self.tail.is_empty() {
            self.resources = Vec::new();
            self.next = 0;
        }
        (!buf.is_empty()).then(|| buf.freeze())
    }
}

/// A `DiscoveryResponse` (SotW).
pub(crate) fn sotw_response(
    version: &str,
    type_url: &str,
    nonce: &str,
    resources: &[&Arc<EncodedResource>],
) -> Response {
    Response::new(
        Kind::Sotw,
        version,
        resources.iter().map(|r| Arc::clone(r)).collect(),
        |buf| {
            put_str(sotw::TYPE_URL, type_url, buf);
            put_str(sotw::NONCE, nonce, buf);
        },
    )
}

/// A `DeltaDiscoveryResponse`.
pub(crate) fn delta_response(
    version: &str,
    type_url: &str,
    nonce: &str,
    resources: &[&Arc<EncodedResource>],
    removed: &[String],
) -> Response {
    Response::new(
        Kind::Delta,
        version,
        resources.iter().map(|r| Arc::clone(r)).collect(),
        |buf| {
            put_str(delta::TYPE_URL, type_url, buf);
            put_str(delta::NONCE, nonce, buf);
            for n in removed {
                // Empty names are still sent: a repeated string keeps every element.
                put_len(delta::REMOVED_RESOURCES, n.len(), buf);
                buf.put_slice(n.as_bytes());
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use prost::Message;

    use super::*;

    /// Small and large resources, enough to span several chunks and take both paths.
    fn resources() -> Vec<Arc<EncodedResource>> {
        (0..300)
            .map(|i| {
                let n = format!("c{i}");
                let alt = if i % 50 == 7 {
                    "x".repeat(20_000)
                } else {
                    "y".repeat(i)
                };
                EncodedResource::new(
                    &n,
                    &Cluster {
                        name: n.clone(),
                        alt_stat_name: alt,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    /// All chunks of a response, checked against the gRPC header; returns the message. Copied
    /// chunks stay within `CHUNK`; larger frames must be a large resource's own shared bytes.
    fn unframe(mut r: Response) -> Vec<u8> {
        let large: Vec<Bytes> = r
            .resources
            .iter()
            .map(|x| x.encoded_any().clone())
            .filter(|a| a.len() >= ZERO_COPY)
            .collect();
        let (mut b, mut zero_copy) = (Vec::new(), 0);
        while let Some(chunk) = r.next_chunk() {
            assert!(!chunk.is_empty());
            if let Some(shared) = large.iter().find(|a| a.as_ptr() == chunk.as_ptr()) {
                assert_eq!(shared.len(), chunk.len());
                zero_copy += 1;
            } else {
                assert!(
                    chunk.len() <= CHUNK,
                    "copied chunk of {} bytes",
                    chunk.len()
                );
            }
            b.extend_from_slice(&chunk);
        }
        assert_eq!(
            zero_copy,
            large.len(),
            "every large resource sent without a copy"
        );
        assert_eq!(b[0], 0);
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len, b.len() - GRPC_HEADER);
        b.split_off(GRPC_HEADER)
    }

    #[test]
    fn sotw_frames_decode_to_the_prost_message() {
        let rs = resources();
        let refs: Vec<_> = rs.iter().collect();
        let framed = sotw_response("7", crate::resource::CLUSTER, "1-2", &refs);
        let got = DiscoveryResponse::decode(unframe(framed).as_slice()).unwrap();
        let want = DiscoveryResponse {
            version_info: "7".into(),
            resources: rs.iter().map(|r| r.to_any()).collect(),
            type_url: crate::resource::CLUSTER.into(),
            nonce: "1-2".into(),
            ..Default::default()
        };
        assert_eq!(got, want);
        // An empty response is still a valid message.
        let empty = sotw_response("", crate::resource::CLUSTER, "n", &[]);
        assert_eq!(
            DiscoveryResponse::decode(unframe(empty).as_slice())
                .unwrap()
                .nonce,
            "n"
        );
    }

    #[test]
    fn delta_frames_decode_to_the_prost_message() {
        let rs = resources();
        let refs: Vec<_> = rs.iter().collect();
        let removed = vec!["gone".to_string(), String::new()];
        let framed = delta_response("3", crate::resource::CLUSTER, "4-5", &refs, &removed);
        let got = DeltaDiscoveryResponse::decode(unframe(framed).as_slice()).unwrap();
        let want = DeltaDiscoveryResponse {
            system_version_info: "3".into(),
            resources: rs
                .iter()
                .map(|r| Resource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.to_any()),
                    ..Default::default()
                })
                .collect(),
            type_url: crate::resource::CLUSTER.into(),
            removed_resources: removed,
            nonce: "4-5".into(),
            ..Default::default()
        };
        assert_eq!(got, want);
    }
}
