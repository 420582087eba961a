//! Small error types shared by the value newtypes of this crate.
//!
//! Parsing manifests has its own error type ([`crate::parse::ParseError`]) and validation
//! reports [`crate::validate::Finding`]s; the types here are the leaf errors those wrap.

use thiserror::Error;

/// A protobuf enum name that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown value {value:?}, expected one of {}", expected.join(", "))]
#[non_exhaustive]
pub struct UnknownEnumValue {
    /// What was written.
    pub value: String,
    /// The accepted names.
    pub expected: &'static [&'static str],
}

/// A duration string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// A number was expected at this position.
    #[error("invalid duration {0:?}: expected a number")]
    ExpectedNumber(String),
    /// A unit is missing or not one of ns, us, µs, ms, s, m, h.
    #[error("invalid duration {0:?}: unit must be one of ns, us, ms, s, m, h")]
    BadUnit(String),
    /// Negative durations are not meaningful in Istio's API.
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
    /// The value does not fit.
    #[error("invalid duration {0:?}: out of range")]
    Overflow(String),
}
