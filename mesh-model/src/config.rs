//! [`Config`]: any one Istio resource, as the store and the parser hand it around.

use serde::Serialize;

use crate::meta::{Kind, ObjectMeta, ResourceKey};
use crate::networking::destination_rule::DestinationRule;
use crate::networking::gateway::Gateway;
use crate::networking::service_entry::ServiceEntry;
use crate::networking::sidecar::Sidecar;
use crate::networking::virtual_service::VirtualService;
use crate::networking::workload::{WorkloadEntry, WorkloadGroup};
use crate::security::authorization_policy::AuthorizationPolicy;
use crate::security::peer_authentication::PeerAuthentication;
use crate::security::request_authentication::RequestAuthentication;

macro_rules! config_enum {
    ($($kind:ident),+ $(,)?) => {
        /// One Istio resource of any supported kind.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(untagged)]
        #[allow(clippy::large_enum_variant)]
        pub enum Config {
            $(
                #[doc = concat!("A ", stringify!($kind), ".")]
                $kind($kind),
            )+
        }

        impl Config {
            /// The resource's kind.
            pub fn kind(&self) -> Kind {
                match self { $( Config::$kind(_) => Kind::$kind, )+ }
            }

            /// The resource's metadata.
            pub fn meta(&self) -> &ObjectMeta {
                match self { $( Config::$kind(r) => &r.metadata, )+ }
            }

            /// Mutable metadata.
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $( Config::$kind(r) => &mut r.metadata, )+ }
            }

            /// The `apiVersion` the resource was written with.
            pub fn api_version(&self) -> &str {
                match self { $( Config::$kind(r) => &r.api_version, )+ }
            }
        }

        $(
            impl From<$kind> for Config {
                fn from(r: $kind) -> Config {
                    Config::$kind(r)
                }
            }
        )+
    };
}

config_enum!(
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    WorkloadGroup,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
);

impl Config {
    /// The store key: kind, namespace (`default` when unset) and name.
    pub fn key(&self) -> ResourceKey {
        let meta = self.meta();
        ResourceKey::new(self.kind(), meta.namespace(), &meta.name)
    }

    /// `creationTimestamp`, then namespace/name: Istio's order for resolving conflicts
    /// (the oldest wins).
    pub fn conflict_order(&self) -> (Option<&str>, &str, &str) {
        let meta = self.meta();
        (
            meta.creation_timestamp.as_deref(),
            meta.namespace(),
            meta.name.as_str(),
        )
    }
}
