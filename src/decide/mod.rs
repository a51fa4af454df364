//! Pure decisions: `Config`, `Snapshot`, `State`, now -> `Plan`. Nothing here does IO.

pub mod hold;
pub mod plan;
pub mod policy;
