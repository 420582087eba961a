//! One classification of upstream outcomes, shared by retries, outlier detection, circuit
//! breakers, response flags and stats, so they all agree on what a "5xx", a "reset" or a
//! "connect failure" is.

use http::{HeaderMap, StatusCode};

/// Why an upstream attempt produced no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The TCP (or TLS) connection could not be made (refused, unreachable, handshake).
    ConnectFailure,
    /// The connection did not complete within `connect_timeout`.
    ConnectTimeout,
    /// A circuit breaker refused the request (`UO`).
    Overflow,
    /// No healthy host to send it to (`UH`).
    NoHealthyUpstream,
    /// The upstream reset or closed the stream before response headers.
    Reset {
        /// Nothing of the request had been sent yet (`reset-before-request`).
        before_request: bool,
    },
    /// The upstream closed the connection before response headers.
    ConnectionTermination {
        /// Nothing of the request had been sent yet.
        before_request: bool,
    },
    /// HTTP/2 `REFUSED_STREAM`.
    RefusedStream,
    /// The per-try timeout fired.
    PerTryTimeout,
    /// The upstream sent something that is not HTTP.
    ProtocolError,
}

impl Failure {
    /// Whether it happened on our side of the wire (Envoy's "local origin" errors, which
    /// outlier detection counts separately in split mode).
    pub fn is_local_origin(self) -> bool {
        matches!(
            self,
            Failure::ConnectFailure
                | Failure::ConnectTimeout
                | Failure::Reset { .. }
                | Failure::ConnectionTermination { .. }
                | Failure::RefusedStream
                | Failure::PerTryTimeout
                | Failure::ProtocolError
        )
    }

    /// Envoy's response flag for a request that ended with this failure.
    pub fn response_flag(self) -> &'static str {
        match self {
            Failure::ConnectFailure | Failure::ConnectTimeout => "UF",
            Failure::Overflow => "UO",
            Failure::NoHealthyUpstream => "UH",
            Failure::Reset { .. } | Failure::RefusedStream => "UR",
            Failure::ConnectionTermination { .. } => "UC",
            Failure::PerTryTimeout => "UT",
            Failure::ProtocolError => "UPE",
        }
    }

    /// The reset reason Envoy writes into its local reply body
    /// (`upstream connect error or disconnect/reset before headers. reset reason: ...`).
    pub fn reset_reason(self) -> &'static str {
        match self {
            Failure::ConnectFailure => "remote connection failure",
            Failure::ConnectTimeout => "connection timeout",
            Failure::Overflow => "overflow",
            Failure::NoHealthyUpstream => "no healthy upstream",
            Failure::Reset { .. } => "remote reset",
            Failure::ConnectionTermination { .. } => "connection termination",
            Failure::RefusedStream => "remote refused stream reset",
            Failure::PerTryTimeout => "connection timeout",
            Failure::ProtocolError => "protocol error",
        }
    }
}

/// The outcome of one upstream attempt.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// Response headers arrived.
    Response {
        /// Status.
        status: StatusCode,
        /// Headers (a trailers-only gRPC response carries `grpc-status` here).
        headers: &'a HeaderMap,
    },
    /// No response.
    Failure(Failure),
}

impl Outcome<'_> {
    /// The gRPC status in the response headers (trailers-only responses), if any.
    pub fn grpc_status(&self) -> Option<u32> {
        match self {
            Outcome::Response { headers, .. } => headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            Outcome::Failure(_) => None,
        }
    }

    /// A 5xx response, or no response at all (what `retry_on: 5xx` and outlier detection's
    /// `consecutive_5xx` count, in unsplit mode).
    pub fn is_5xx(&self) -> bool {
        match self {
            Outcome::Response { status, .. } => status.is_server_error(),
            Outcome::Failure(_) => true,
        }
    }

    /// 502, 503 or 504, or a local-origin failure (`consecutive_gateway_failure`).
    pub fn is_gateway_error(&self) -> bool {
        match self {
            Outcome::Response { status, .. } => matches!(status.as_u16(), 502..=504),
            Outcome::Failure(f) => f.is_local_origin(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let h = HeaderMap::new();
        let r = |s: u16| Outcome::Response {
            status: StatusCode::from_u16(s).unwrap(),
            headers: &h,
        };
        assert!(r(500).is_5xx() && !r(500).is_gateway_error());
        assert!(r(503).is_gateway_error() && !r(404).is_5xx());
        assert!(Outcome::Failure(Failure::ConnectFailure).is_gateway_error());
        assert!(!Outcome::Failure(Failure::Overflow).is_gateway_error());
        let mut g = HeaderMap::new();
        g.insert("grpc-status", "14".parse().unwrap());
        let o = Outcome::Response {
            status: StatusCode::OK,
            headers: &g,
        };
        assert_eq!(o.grpc_status(), Some(14));
    }
}
