//! Pure decisions: `Config`, `Snapshot`, `State`, `Models`, now -> `Plan`. Nothing here does IO.

pub mod advice;
pub mod anomaly;
pub mod arrival;
pub mod hold;
pub mod model;
pub mod placement;
pub mod plan;
pub mod policy;
