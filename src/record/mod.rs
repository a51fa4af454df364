//! What the daemon remembers and exports: state, the event log, metrics history, Prometheus.

pub mod cluster_status;
pub mod events;
pub mod metrics;
pub mod prometheus;
pub mod state;
