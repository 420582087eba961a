//! [`Duration`]: the `google.protobuf.Duration` of Istio's API, written as a string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DurationError;

/// A non-negative duration as Istio's YAML writes it: `"1.5s"`, `"500ms"`, `"1m"`, `"1h30m"`.
///
/// Parsing accepts the proto3 JSON form (`"0.250s"`) and Go's `time.ParseDuration` form
/// (a sequence of decimal numbers with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), which is
/// what the CRDs' CEL `duration()` accepts. A bare `"0"` is zero. Formatting always produces the
/// proto3 JSON form (seconds with up to nine fractional digits), which parses back to the same
/// value.
///
/// ```
/// use mesh_model::Duration;
/// let d: Duration = "1m30s".parse().unwrap();
/// assert_eq!(d.as_std(), std::time::Duration::from_secs(90));
/// assert_eq!(d.to_string(), "90s");
/// assert_eq!("0.5s".parse::<Duration>().unwrap().as_millis(), 500);
/// assert!("5 parsecs".parse::<Duration>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    /// From whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// From whole milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// From a `std::time::Duration`.
    pub const fn from_std(d: std::time::Duration) -> Self {
        Duration(d)
    }

    /// As a `std::time::Duration`.
    pub const fn as_std(&self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds (truncated).
    pub fn as_millis(&self) -> u128 {
        self.0.as_millis()
    }

    /// Whether the value has no sub-millisecond part (Istio requires millisecond precision).
    pub fn is_whole_millis(&self) -> bool {
        self.0.subsec_nanos().is_multiple_of(1_000_000)
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let s = match s.strip_prefix('-') {
            Some(rest) => {
                // "-0s" is zero and allowed by Go; anything else is negative.
                let d: Duration = rest.parse()?;
                return if d.is_zero() {
                    Ok(d)
                } else {
                    Err(DurationError::Negative(input.to_string()))
                };
            }
            None => s.strip_prefix('+').unwrap_or(s),
        };
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        let mut total: u128 = 0; // nanoseconds
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (num, after) = rest.split_at(num_len);
            if num.is_empty() || num == "." || num.matches('.').count() > 1 {
                return Err(DurationError::ExpectedNumber(input.to_string()));
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(DurationError::BadUnit(input.to_string())),
            };
            let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
            let overflow = || DurationError::Overflow(input.to_string());
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| overflow())?
            };
            let mut value = int.checked_mul(unit_nanos).ok_or_else(overflow)?;
            // Fractional digits beyond nanosecond precision are truncated, as Go does.
            let mut scale = unit_nanos;
            for digit in frac_part.bytes() {
                scale /= 10;
                if scale == 0 {
                    break;
                }
                value += u128::from(digit - b'0') * scale;
            }
            total = total.checked_add(value).ok_or_else(overflow)?;
            rest = after;
        }
        let secs = u64::try_from(total / 1_000_000_000)
            .map_err(|_| DurationError::Overflow(input.to_string()))?;
        // `total % 1e9` is below 1e9 and fits in u32.
        let nanos = (total % 1_000_000_000) as u32;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{secs}s")
        } else {
            let frac = format!("{nanos:09}");
            write!(f, "{secs}.{}s", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> std::time::Duration {
        s.parse::<Duration>().unwrap().as_std()
    }

    #[test]
    fn parses_go_and_proto_forms() {
        assert_eq!(p("1.5s"), std::time::Duration::from_millis(1500));
        assert_eq!(p("500ms"), std::time::Duration::from_millis(500));
        assert_eq!(p("1m"), std::time::Duration::from_secs(60));
        assert_eq!(p("1h"), std::time::Duration::from_secs(3600));
        assert_eq!(p("1h2m3.5s"), std::time::Duration::from_millis(3_723_500));
        assert_eq!(p("10us"), std::time::Duration::from_micros(10));
        assert_eq!(p("0"), std::time::Duration::ZERO);
        assert_eq!(p("0s"), std::time::Duration::ZERO);
        assert_eq!(p(".5s"), std::time::Duration::from_millis(500));
        assert_eq!(p("0.000000001s"), std::time::Duration::from_nanos(1));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "5", "5x", "1.2.3s", "-1s", "1s-", "..s", "ms"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(
            "99999999999999999999999h".parse::<Duration>(),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in ["1.5s", "500ms", "1m", "1h", "0s", "1ns", "3.000000001s"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d, "{s}");
        }
        assert_eq!(Duration::from_millis(250).to_string(), "0.25s");
    }
}
