//! Reads one `Snapshot` from the host's files. Spawns no process.

use crate::config::Config;
use crate::model::{EpochUsec, Snapshot};

/// Reads the host and every running container. Keeps buffers and a cache of parsed conf files
/// (re-parsed only when mtime or size changes) across cycles.
#[derive(Debug, Default)]
pub struct Collector {}

impl Collector {
    pub fn new() -> Self {
        Collector::default()
    }

    /// One snapshot. `now_usec` is stamped as the time of the reading. Per-container problems
    /// (missing conf, unreadable file) are logged with the vmid and path and leave that figure
    /// `None`; they never fail the whole snapshot.
    pub fn collect(&mut self, cfg: &Config, now_usec: EpochUsec) -> Snapshot {
        todo!()
    }
}
