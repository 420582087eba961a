//! Service registries for the mesh: where services and their endpoints come from.
//!
//! istiod reads services from several registries at once (Kubernetes clusters, ServiceEntries,
//! formerly Consul) and merges them; this crate is that part of istiod as a library. Adapters
//! produce the service model of [`mesh_model::service`]; mesh-xds consumes it and never
//! depends on an adapter.
//!
//! - [`Registry`]: the adapter trait. An adapter writes into a [`RegistrySink`]: services and
//!   endpoints replaced per [`ServiceKey`], between resync brackets that remove whatever a
//!   full read no longer saw.
//! - [`Aggregate`]: registries merged with istiod's rules and published as one
//!   [`ServiceRegistry`](mesh_model::service::ServiceRegistry) on a `watch` channel, ready for
//!   `mesh_xds::cache::ViewCache::set_services` (endpoint-only changes become EDS-only pushes).
//! - [`ServiceEntries`]: the first adapter, ServiceEntries and WorkloadEntries from a
//!   [`ConfigStore`](mesh_model::ConfigStore).
//! - [`files`]: watched directories (notify, debounced, with a periodic rescan): a generation
//!   per content change, and for manifests a `ParseOutput` per generation with a per-file
//!   last-known-good; Kubernetes ConfigMap volumes read one consistent generation at a time.
//! - [`debug`]: the JSON of istiod's `/debug/registryz` and `/debug/endpointz`.
//!
//! # A registry of your own
//!
//! ```
//! use mesh_model::service::{Endpoint, Service, ServicePort};
//! use mesh_registry::{Aggregate, Provider, Registry, RegistryId, RegistrySink, RunFuture};
//!
//! /// Services from somewhere only you know about.
//! struct Inventory;
//!
//! impl Registry for Inventory {
//!     fn id(&self) -> RegistryId {
//!         RegistryId::new(Provider::Custom("inventory".into()), "dc1")
//!     }
//!
//!     fn run(self: Box<Self>, sink: RegistrySink) -> RunFuture {
//!         Box::pin(async move {
//!             // A full read: whatever is not written again before end_resync is removed.
//!             let epoch = sink.begin_resync();
//!             let mut svc = Service::new("orders.shop.svc.cluster.local", "shop");
//!             svc.ports.push(ServicePort::new("http", 8080, "HTTP"));
//!             svc.endpoints.push(Endpoint::new("10.0.0.7"));
//!             sink.upsert(svc);
//!             sink.end_resync(epoch);
//!             // ...then watch the source and write changes as they come.
//!             std::future::pending().await
//!         })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let aggregate = Aggregate::new();
//! aggregate.add(Box::new(Inventory)).unwrap();
//! assert!(aggregate.wait_synced(std::time::Duration::from_secs(5)).await);
//! let registry = aggregate.snapshot();
//! let orders = registry.get("orders.shop.svc.cluster.local").unwrap();
//! assert_eq!(orders.endpoints[0].address, "10.0.0.7");
//! # });
//! ```
#![forbid(unsafe_code)]

mod aggregate;
pub mod debug;
#[cfg(feature = "files")]
pub mod files;
mod registry;
mod service_entries;
mod sink;

pub use aggregate::{Aggregate, AggregateError, RegistryStatus};
pub use registry::{Provider, Registry, RegistryError, RegistryId, RunFuture};
pub use service_entries::ServiceEntries;
pub use sink::{Epoch, RegistrySink, ServiceKey};
