//! kube-rs integration (feature `kube`): [`KubeObject`] implements `kube::Resource` for every
//! Istio kind, so `kube::Api::<KubeObject<VirtualServiceSpec>>` lists and watches them.
//!
//! The object carries Kubernetes' own `ObjectMeta` (what kube-rs needs); convert it to this
//! crate's [`Resource`] with `Resource::try_from` before validating or storing, so the rest
//! of the mesh never sees kube types.
//!
//! ```
//! use kube_core::Resource as _;
//! use mesh_model::kube::KubeObject;
//! use mesh_model::VirtualServiceSpec;
//!
//! assert_eq!(KubeObject::<VirtualServiceSpec>::plural(&()), "virtualservices");
//! assert_eq!(KubeObject::<VirtualServiceSpec>::api_version(&()), "networking.istio.io/v1");
//! ```

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as KubeMeta;
use serde::{Deserialize, Serialize};

use crate::meta::{ObjectMeta, Resource, Spec};

/// An Istio object as kube-rs reads it from an API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeObject<S> {
    /// Kubernetes metadata.
    #[serde(default)]
    pub metadata: KubeMeta,
    /// The spec.
    #[serde(default)]
    pub spec: S,
    /// Status, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl<S: Spec> kube_core::Resource for KubeObject<S> {
    type DynamicType = ();
    type Scope = kube_core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        S::KIND.name().into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        S::KIND.group().into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        S::KIND.versions()[0].into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        S::KIND.plural().into()
    }

    fn meta(&self) -> &KubeMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut KubeMeta {
        &mut self.metadata
    }
}

/// Metadata that could not be converted between the two representations.
#[derive(Debug, thiserror::Error)]
#[error("converting object metadata: {0}")]
pub struct MetaConversionError(#[from] serde_json::Error);

impl<S: Spec> TryFrom<KubeObject<S>> for Resource<S> {
    type Error = MetaConversionError;

    fn try_from(obj: KubeObject<S>) -> Result<Self, Self::Error> {
        let metadata: ObjectMeta = serde_json::from_value(serde_json::to_value(&obj.metadata)?)?;
        let mut r = Resource::new(metadata, obj.spec);
        r.status = obj.status;
        Ok(r)
    }
}

impl<S: Spec> TryFrom<Resource<S>> for KubeObject<S> {
    type Error = MetaConversionError;

    fn try_from(r: Resource<S>) -> Result<Self, Self::Error> {
        let metadata: KubeMeta = serde_json::from_value(serde_json::to_value(&r.metadata)?)?;
        Ok(KubeObject {
            metadata,
            spec: r.spec,
            status: r.status,
        })
    }
}

#[cfg(test)]
mod tests {
    use kube_core::Resource as _;

    use super::*;
    use crate::Kind;
    use crate::networking::destination_rule::DestinationRuleSpec;
    use crate::security::authorization_policy::AuthorizationPolicySpec;

    #[test]
    fn urls_match_the_istio_crds() {
        assert_eq!(
            KubeObject::<DestinationRuleSpec>::url_path(&(), Some("shop")),
            "/apis/networking.istio.io/v1/namespaces/shop/destinationrules"
        );
        assert_eq!(
            KubeObject::<AuthorizationPolicySpec>::url_path(&(), None),
            "/apis/security.istio.io/v1/authorizationpolicies"
        );
    }

    #[test]
    fn api_server_json_converts_both_ways() {
        let json = serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {
                "name": "reviews", "namespace": "shop", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {"app": "reviews"}
            },
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}
        });
        let obj: KubeObject<DestinationRuleSpec> = serde_json::from_value(json).unwrap();
        let r = Resource::try_from(obj.clone()).unwrap();
        assert_eq!(r.key().to_string(), "DestinationRule shop/reviews");
        assert_eq!(r.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(
            r.metadata.creation_timestamp.as_deref(),
            Some("2026-01-02T03:04:05Z")
        );
        assert_eq!(r.kind, Kind::DestinationRule.name());
        let back = KubeObject::try_from(r).unwrap();
        assert_eq!(back, obj);
    }
}
