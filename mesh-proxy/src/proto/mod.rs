//! The edge: Envoy protos (from `envoy-types`) into the runtime model of [`crate::config`].
//!
//! Every conversion destructures the proto message with all of its fields named, so a field
//! this proxy does not implement is either converted, checked to be at its default, or
//! rejected with an [`InvalidField`] that names it (orion's stance: never half-apply a
//! resource). When `envoy-types` gains fields, these destructurings stop compiling until the
//! new fields are decided on.
//!
//! Field paths are proto field names from the resource's root, as Envoy prints them in NACKs:
//! `filter_chains[1].filters[0].typed_config.route_config.virtual_hosts[0].routes[2].match.safe_regex.regex`.

use std::fmt;

#[macro_use]
mod common;
mod bootstrap;
mod cluster;
mod endpoint;
pub(crate) mod http;
#[cfg(feature = "sidecar")]
mod json;
mod listener;
mod route;
mod tls;

pub use bootstrap::bootstrap;
pub use cluster::cluster;
pub use endpoint::load_assignment;
#[cfg(feature = "sidecar")]
pub use json::{BootstrapParseError, parse_bootstrap, parse_yaml};
pub use listener::listener;
pub use route::route_configuration;
pub use tls::secret;

/// A field of a resource that this proxy cannot run, with why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidField {
    /// Path of the field from the resource's root (`virtual_hosts[0].routes[1].match`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl InvalidField {
    /// `field` has a value that is not valid.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidField {
        InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `field` is set, and this proxy does not implement it.
    pub fn unsupported(field: impl Into<String>) -> InvalidField {
        InvalidField {
            field: field.into(),
            message: "not supported by mesh-proxy".into(),
        }
    }

    /// Puts `prefix` (a field name or `name[i]`) in front of the path.
    pub fn within(mut self, prefix: &str) -> InvalidField {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// `Result::within` for conversions: prefixes the error's field path.
pub(crate) trait Within<T> {
    /// Prefixes the error's path with `prefix`.
    fn within(self, prefix: &str) -> Result<T, InvalidField>;
}

impl<T> Within<T> for Result<T, InvalidField> {
    fn within(self, prefix: &str) -> Result<T, InvalidField> {
        self.map_err(|e| e.within(prefix))
    }
}
