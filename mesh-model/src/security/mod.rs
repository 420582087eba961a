//! security.istio.io kinds: one module per kind.

pub mod authorization_policy;
pub mod peer_authentication;
pub mod request_authentication;

use serde::{Deserialize, Serialize};

/// A reference to the resource a policy attaches to (Gateway API style).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// API group (empty for core).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind (Gateway, GatewayClass, Service, ServiceEntry).
    #[serde(default)]
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (must be the policy's own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// `{matchLabels}`: the workload selector of the security kinds (`istio.type.v1beta1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a workload must carry.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub match_labels: crate::meta::Labels,
}

impl WorkloadSelector {
    /// Whether `labels` carries every label of this selector.
    pub fn matches(&self, labels: &crate::meta::Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}
