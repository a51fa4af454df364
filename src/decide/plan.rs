//! What one cycle decided, as typed data. Nothing here does IO.

use serde::{Deserialize, Serialize};

/// What one cycle decided. Dry-run, status and replay all print or apply this unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Decisions not to act, or to act less, with the reason.
    pub notes: Vec<Note>,
    /// What was measured for each container, whether or not it changes.
    pub observations: Vec<Observation>,
}

/// A move of one resource from one value to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step<T> {
    pub from: T,
    pub to: T,
}

/// One `pct set` worth of change for one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub vmid: u32,
    /// `None` = cores unchanged. `from` is the effective count (host CPUs when `cores` is absent).
    pub cores: Option<Step<u32>>,
    /// `None` = memory unchanged. MB.
    pub memory_mb: Option<Step<u64>>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub vmid: u32,
    pub reason: String,
}

/// Why a container is not managed this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Managed {
    Yes,
    /// Listed in `ignore_lxc`.
    Ignored,
    /// Tagged `noautoscale`.
    OptedOut,
    /// Its conf has a `lock:` line.
    Locked,
    /// No readable conf for a running container.
    NoConf,
}

/// Measured figures of one container, as the decision saw them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    pub vmid: u32,
    pub name: Option<String>,
    pub tier: Option<String>,
    pub managed: Managed,
    /// Effective cores (host CPUs when `cores` is absent).
    pub cores: Option<u32>,
    pub memory_mb: Option<u64>,
    /// Percent of the effective CPU allocation, over the sampling window.
    pub cpu_percent: Option<f64>,
    /// Used memory (current − page cache) in MB.
    pub memory_used_mb: Option<f64>,
    /// Used memory as a percent of `memory_mb`.
    pub memory_percent: Option<f64>,
}
