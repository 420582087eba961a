//! [`Assignment`]'s encoding: prost's encoding of the `ClusterLoadAssignment` it stands for,
//! written from the parts without building the message (EDS is the largest type on a big
//! mesh, and encoded once per view per push).

use crate::encoding::tag::{
    address, cluster_load_assignment as cla, endpoint, lb_endpoint, locality,
    locality_lb_endpoints as lle, pipe, socket_address,
};
use crate::encoding::{field_len, put_bytes, put_len, put_str, put_u32_value, put_varint, str_len};
use crate::encoding::{u32_value_len, varint_len};
use crate::translate::endpoint::{Assignment, Ep, Group};

impl Assignment<'_> {
    /// Length of [`Assignment::encode`]'s output: `to_message().encoded_len()`.
    #[cfg(test)]
    pub(crate) fn encoded_len(&self) -> usize {
        self.sized().0
    }

    /// The encoded length and the group lengths [`Assignment::encode_sized`] needs.
    pub(crate) fn sized(&self) -> (usize, Vec<usize>) {
        let groups: Vec<usize> = self.groups.iter().map(group_len).collect();
        let len = str_len(cla::CLUSTER_NAME, self.cluster)
            + groups
                .iter()
                .map(|&g| field_len(cla::ENDPOINTS, g))
                .sum::<usize>();
        (len, groups)
    }

    /// Appends prost's encoding of [`Assignment::to_message`] to `buf`, without building it:
    /// fields in tag order, lengths computed bottom up.
    #[cfg(test)]
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        self.encode_sized(&self.sized().1, buf);
    }

    /// [`Assignment::encode`] with the group lengths of [`Assignment::sized`] (computed once
    /// for the buffer's size and the encoding: EDS is the largest type of a big mesh).
    pub(crate) fn encode_sized(&self, group_lens: &[usize], buf: &mut Vec<u8>) {
        put_str(cla::CLUSTER_NAME, self.cluster, buf);
        for (g, &len) in self.groups.iter().zip(group_lens) {
            put_len(cla::ENDPOINTS, len, buf);
            put_len(lle::LOCALITY, locality_len(g), buf);
            put_str(locality::REGION, g.region, buf);
            put_str(locality::ZONE, g.zone, buf);
            put_str(locality::SUB_ZONE, g.sub_zone, buf);
            for e in &g.endpoints {
                put_len(lle::LB_ENDPOINTS, lb_endpoint_len(e), buf);
                let addr = address_len(e);
                put_len(
                    lb_endpoint::ENDPOINT,
                    field_len(endpoint::ADDRESS, addr),
                    buf,
                );
                put_len(endpoint::ADDRESS, addr, buf);
                if e.is_pipe() {
                    put_len(address::PIPE, pipe_len(e), buf);
                    put_str(pipe::PATH, e.pipe_path(), buf);
                } else {
                    put_len(address::SOCKET_ADDRESS, socket_len(e), buf);
                    put_str(socket_address::ADDRESS, e.address, buf);
                    put_varint(socket_address::PORT_VALUE, u64::from(e.port), buf);
                }
                if e.mtls {
                    put_bytes(lb_endpoint::METADATA, mtls_metadata(), buf);
                }
                put_u32_value(lb_endpoint::LOAD_BALANCING_WEIGHT, e.weight, buf);
            }
            put_u32_value(lle::LOAD_BALANCING_WEIGHT, g.weight, buf);
            if g.priority != 0 {
                put_varint(lle::PRIORITY, u64::from(g.priority), buf);
            }
        }
    }
}

/// The encoded `tlsMode: istio` endpoint metadata (one map entry, so one encoding).
fn mtls_metadata() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES
        .get_or_init(|| prost::Message::encode_to_vec(&crate::translate::endpoint::mtls_metadata()))
}

/// `SocketAddress`: the address and the port (in a oneof: written even when 0); the
/// protocol, TCP, is 0.
fn socket_len(e: &Ep<'_>) -> usize {
    str_len(socket_address::ADDRESS, e.address)
        + varint_len(socket_address::PORT_VALUE, u64::from(e.port))
}

/// `Pipe`: the path.
fn pipe_len(e: &Ep<'_>) -> usize {
    str_len(pipe::PATH, e.pipe_path())
}

/// `Address`: a socket address or a pipe.
fn address_len(e: &Ep<'_>) -> usize {
    if e.is_pipe() {
        field_len(address::PIPE, pipe_len(e))
    } else {
        field_len(address::SOCKET_ADDRESS, socket_len(e))
    }
}

/// `LbEndpoint`: an `Endpoint` holding only its address, and the weight.
fn lb_endpoint_len(e: &Ep<'_>) -> usize {
    field_len(
        lb_endpoint::ENDPOINT,
        field_len(endpoint::ADDRESS, address_len(e)),
    ) + if e.mtls {
        field_len(lb_endpoint::METADATA, mtls_metadata().len())
    } else {
        0
    } + field_len(lb_endpoint::LOAD_BALANCING_WEIGHT, u32_value_len(e.weight))
}

/// `Locality`: region, zone, sub-zone.
fn locality_len(g: &Group<'_>) -> usize {
    str_len(locality::REGION, g.region)
        + str_len(locality::ZONE, g.zone)
        + str_len(locality::SUB_ZONE, g.sub_zone)
}

/// `LocalityLbEndpoints`: locality, endpoints, weight, and the priority (skipped when 0).
fn group_len(g: &Group<'_>) -> usize {
    field_len(lle::LOCALITY, locality_len(g))
        + g.endpoints
            .iter()
            .map(|e| field_len(lle::LB_ENDPOINTS, lb_endpoint_len(e)))
            .sum::<usize>()
        + field_len(lle::LOAD_BALANCING_WEIGHT, u32_value_len(g.weight))
        + if g.priority == 0 {
            0
        } else {
            varint_len(lle::PRIORITY, u64::from(g.priority))
        }
}
