//! The service model translation reads: [`mesh_model::service`], re-exported here so that
//! paths written against earlier versions (`mesh_xds::registry::Service`) keep working.

pub use mesh_model::service::*;
