//! Kubernetes object plumbing: [`ObjectMeta`], the generic [`Resource`] envelope, [`Kind`] and
//! [`ResourceKey`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Labels or annotations: an ordered string map, so output is deterministic.
pub type Labels = BTreeMap<String, String>;

/// The namespace kubectl assumes when a manifest leaves it out.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Kubernetes `ObjectMeta`, keeping every field a manifest may carry.
///
/// Server-populated fields that this crate never interprets (`managedFields`,
/// `ownerReferences`) are kept as raw JSON so that a round trip loses nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `metadata.generateName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// `metadata.namespace`; `None` means "the default namespace" (see [`ObjectMeta::namespace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Labels,
    /// `metadata.resourceVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// `metadata.generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp` (RFC 3339), used to order conflicting resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// `metadata.deletionTimestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// `metadata.deletionGracePeriodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    /// `metadata.uid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `metadata.selfLink` (deprecated by Kubernetes, still seen in exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    /// `metadata.finalizers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// `metadata.ownerReferences`, kept verbatim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<serde_json::Value>,
    /// `metadata.managedFields`, kept verbatim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<serde_json::Value>,
}

impl ObjectMeta {
    /// Metadata with a name and namespace.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }
    }

    /// The namespace, `default` when the manifest leaves it out (as kubectl does).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// A typed Kubernetes object: `apiVersion`, `kind`, `metadata`, `spec` and an opaque `status`.
///
/// All Istio kinds are aliases of this, e.g. [`crate::VirtualService`] =
/// `Resource<VirtualServiceSpec>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    /// `group/version` as written; one of the versions in [`Kind::versions`].
    pub api_version: String,
    /// The kind name, e.g. `VirtualService`.
    pub kind: String,
    /// Object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The Istio spec.
    #[serde(default)]
    pub spec: S,
    /// Whatever status the server reported; never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl<S: Spec> Resource<S> {
    /// A resource of `S`'s kind at the newest API version.
    pub fn new(metadata: ObjectMeta, spec: S) -> Self {
        Resource {
            api_version: S::KIND.api_version().to_string(),
            kind: S::KIND.name().to_string(),
            metadata,
            spec,
            status: None,
        }
    }

    /// Its key in the config store.
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(S::KIND, self.metadata.namespace(), &self.metadata.name)
    }
}

/// A spec type of one of the Istio kinds.
pub trait Spec:
    Clone + fmt::Debug + Default + PartialEq + Serialize + for<'de> Deserialize<'de> + 'static
{
    /// The kind this spec belongs to.
    const KIND: Kind;
}

/// The Istio configuration kinds this crate models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Kind {
    /// networking.istio.io VirtualService.
    VirtualService,
    /// networking.istio.io DestinationRule.
    DestinationRule,
    /// networking.istio.io Gateway.
    Gateway,
    /// networking.istio.io ServiceEntry.
    ServiceEntry,
    /// networking.istio.io Sidecar.
    Sidecar,
    /// networking.istio.io WorkloadEntry.
    WorkloadEntry,
    /// networking.istio.io WorkloadGroup.
    WorkloadGroup,
    /// security.istio.io PeerAuthentication.
    PeerAuthentication,
    /// security.istio.io AuthorizationPolicy.
    AuthorizationPolicy,
    /// security.istio.io RequestAuthentication.
    RequestAuthentication,
}

/// The `networking.istio.io` API group.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// The `security.istio.io` API group.
pub const SECURITY_GROUP: &str = "security.istio.io";

impl Kind {
    /// Every kind.
    pub const ALL: &'static [Kind] = &[
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
    ];

    /// The kind name as written in `kind:`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
        }
    }

    /// The lowercase plural used in API paths (`virtualservices`).
    pub fn plural(&self) -> &'static str {
        match self {
            Kind::VirtualService => "virtualservices",
            Kind::DestinationRule => "destinationrules",
            Kind::Gateway => "gateways",
            Kind::ServiceEntry => "serviceentries",
            Kind::Sidecar => "sidecars",
            Kind::WorkloadEntry => "workloadentries",
            Kind::WorkloadGroup => "workloadgroups",
            Kind::PeerAuthentication => "peerauthentications",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::RequestAuthentication => "requestauthentications",
        }
    }

    /// The API group.
    pub fn group(&self) -> &'static str {
        match self {
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                SECURITY_GROUP
            }
            _ => NETWORKING_GROUP,
        }
    }

    /// The served versions, newest (storage) first. They share one schema.
    pub fn versions(&self) -> &'static [&'static str] {
        match self.group() {
            SECURITY_GROUP => &["v1", "v1beta1"],
            _ => &["v1", "v1beta1", "v1alpha3"],
        }
    }

    /// `group/newest-version`.
    pub fn api_version(&self) -> &'static str {
        match self.group() {
            SECURITY_GROUP => "security.istio.io/v1",
            _ => "networking.istio.io/v1",
        }
    }

    /// Looks a kind up by its `kind:` name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity of a resource in the store: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace (never empty: `default` when a manifest leaves it out).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ResourceKey {
    /// A key.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `Kind namespace/name`, the form used in every message.
impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}
