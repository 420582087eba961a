//! The body type of requests and responses inside the proxy.

use bytes::Bytes;
use http_body_util::BodyExt;

/// Errors inside bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests and responses inside the proxy.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body of known bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Boxes any body.
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}
