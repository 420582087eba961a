//! Service registries for the mesh: where services and their endpoints come from.
//!
//! istiod reads services from several registries at once (Kubernetes clusters, ServiceEntries,
//! formerly Consul) and merges them; this crate is that part of istiod as a library. Adapters
//! produce the service model of [`mesh_model`]; mesh-xds consumes it and never depends on an
//! adapter.
#![forbid(unsafe_code)]
