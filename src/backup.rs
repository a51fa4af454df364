//! Backups of container allocations in `backup_dir`, for rollback.
//! Layout: `<backup_dir>/<vmid>/baseline.json` (the allocation before the autoscaler first touched
//! the container, kept forever) and `<backup_dir>/<vmid>/<UTC timestamp>.json` (one per change,
//! latest 20 kept). Files are mode 0600 and written atomically.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Timestamped backups kept per container, besides the baseline.
pub const KEEP_PER_CONTAINER: usize = 20;
pub const BASELINE_FILE: &str = "baseline.json";

/// An allocation as Proxmox stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alloc {
    /// `None` = no `cores` line (all host CPUs).
    pub cores: Option<u32>,
    pub memory_mb: u64,
    pub swap_mb: Option<u64>,
}

/// One backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub vmid: u32,
    /// RFC 3339.
    pub timestamp: String,
    pub before: Alloc,
    /// `None` for the baseline.
    pub after: Option<Alloc>,
}

#[derive(Debug, Clone)]
pub struct BackupStore {
    pub dir: PathBuf,
}
