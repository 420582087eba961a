//! `PeerAuthentication` (security.istio.io): mutual TLS mode for workloads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::macros::proto_enum;
use crate::meta::{Kind, Resource, Spec};
use crate::security::WorkloadSelector;

/// A `PeerAuthentication` object.
pub type PeerAuthentication = Resource<PeerAuthenticationSpec>;

/// `PeerAuthentication.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// Workloads (by label) this policy applies to; unset = namespace or mesh wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mTLS mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per workload-port modes (needs a selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

impl Spec for PeerAuthenticationSpec {
    const KIND: Kind = Kind::PeerAuthentication;
}

proto_enum! {
    /// Mutual TLS modes.
    pub enum MtlsMode {
        /// Inherit from the parent scope.
        Unset = (0, "UNSET"),
        /// Plaintext only.
        Disable = (1, "DISABLE"),
        /// Both mTLS and plaintext.
        Permissive = (2, "PERMISSIVE"),
        /// mTLS only.
        Strict = (3, "STRICT"),
    }
}

/// `{mode}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutualTls {
    /// Mode.
    #[serde(default)]
    pub mode: MtlsMode,
}
