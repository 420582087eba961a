//! Clusters: hosts, load balancing, connection pools, circuit breakers and outlier detection.

pub mod host;
pub mod lb;
pub mod manager;
pub mod outlier;
pub mod pool;
pub mod resources;
pub mod runtime;
pub mod tasks;

pub use host::Host;
