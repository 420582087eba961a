//! Istio's configuration as typed Rust: parse, validate, store.
//!
//! `mesh-model` reads the manifests people keep in their repositories — every
//! `networking.istio.io` kind (VirtualService, DestinationRule, Gateway, ServiceEntry, Sidecar,
//! WorkloadEntry, WorkloadGroup at v1, v1beta1 and v1alpha3) and every `security.istio.io` kind
//! (PeerAuthentication, AuthorizationPolicy, RequestAuthentication at v1 and v1beta1), plus
//! MeshConfig and MeshNetworks — into plain Rust values, and validates them the way istiod's
//! webhook and `istioctl validate` do, with every finding naming the file, line, resource and
//! field path.
//!
//! It does no IO beyond reading files you point it at, and has no opinion on transport: the
//! [`ConfigStore`] hands changes to whatever consumes them (the `mesh-xds` translator).
//!
//! # Example
//!
//! ```
//! use mesh_model::{ConfigStore, Kind, parse_str};
//!
//! let manifests = r#"
//! apiVersion: networking.istio.io/v1
//! kind: VirtualService
//! metadata: {name: reviews, namespace: bookinfo}
//! spec:
//!   hosts: [reviews]
//!   http:
//!   - match: [{headers: {end-user: {exact: jason}}}]
//!     route: [{destination: {host: reviews, subset: v2}}]
//!   - route:
//!     - {destination: {host: reviews, subset: v1}, weight: 90}
//!     - {destination: {host: reviews, subset: v3}, weight: 10}
//!     timeout: 1.5s
//! ---
//! apiVersion: apps/v1
//! kind: Deployment
//! metadata: {name: reviews}
//! "#;
//!
//! let parsed = parse_str(manifests, "bookinfo.yaml");
//! assert_eq!(parsed.skipped.len(), 1); // the Deployment
//!
//! let store = ConfigStore::new();
//! let report = store.apply_all(parsed);
//! assert!(report.rejected.is_empty());
//!
//! let snapshot = store.snapshot();
//! let vs = snapshot.of_kind(Kind::VirtualService).next().unwrap();
//! let mesh_model::Config::VirtualService(vs) = vs.as_ref() else { unreachable!() };
//! assert_eq!(vs.spec.http[1].timeout.unwrap().as_millis(), 1500);
//! ```
//!
//! # Features
//!
//! - `proptest`: strategies in [`strategy`] that generate valid resources and consistent sets.
//! - `kube`: [`kube::KubeObject`] implements `kube::Resource`, so kube-rs can list and watch
//!   these kinds; default builds do not depend on kube.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod macros;

pub mod config;
pub mod duration;
pub mod error;
pub mod host;
pub mod mesh;
pub mod meta;
pub mod networking;
pub mod parse;
pub mod protocol;
pub mod security;
pub mod service;
pub mod store;
pub mod string_match;
pub mod validate;

#[cfg(feature = "kube")]
pub mod kube;
#[cfg(feature = "proptest")]
pub mod strategy;

pub use config::Config;
pub use duration::Duration;
pub use mesh::{MeshConfig, MeshNetworks};
pub use meta::{Kind, ObjectMeta, Resource, ResourceKey, Spec};
pub use networking::destination_rule::{DestinationRule, DestinationRuleSpec};
pub use networking::gateway::{Gateway, GatewaySpec};
pub use networking::service_entry::{ServiceEntry, ServiceEntrySpec};
pub use networking::sidecar::{Sidecar, SidecarSpec};
pub use networking::virtual_service::{VirtualService, VirtualServiceSpec};
pub use networking::workload::{
    WorkloadEntry, WorkloadEntrySpec, WorkloadGroup, WorkloadGroupSpec,
};
pub use parse::{
    ParseError, ParseOutput, ParsedResource, parse_mesh_config, parse_mesh_networks, parse_path,
    parse_reader, parse_str,
};
pub use security::authorization_policy::{AuthorizationPolicy, AuthorizationPolicySpec};
pub use security::peer_authentication::{PeerAuthentication, PeerAuthenticationSpec};
pub use security::request_authentication::{RequestAuthentication, RequestAuthenticationSpec};
pub use store::{ConfigEvent, ConfigStore, Snapshot};
pub use string_match::{HeaderMatch, StringMatch};
pub use validate::{Finding, Severity, validate};
