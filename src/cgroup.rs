//! cgroup v2 files of a container's limiting cgroup, `<cgroup_root>/<vmid>/`.
//! A directory exists only while the container runs; a vanished file means "no data", never an error.

use std::path::Path;

/// `cpu.stat`: `usage_usec N` and friends, µs.
pub const CPU_STAT: &str = "cpu.stat";
/// `memory.current`: bytes in use, page cache included.
pub const MEMORY_CURRENT: &str = "memory.current";
/// `memory.stat`: `anon N`, `file N`, ... in bytes.
pub const MEMORY_STAT: &str = "memory.stat";

/// Parsed `cpu.stat`. Fields absent from the file are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    pub usage_usec: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
}

/// A cgroup file that holds one number or the word `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Bytes(u64),
    Max,
}

/// Parses `cpu.stat` text. Unknown lines are ignored; garbage values give `None` for that field.
pub fn parse_cpu_stat(text: &str) -> CpuStat {
    todo!()
}

/// Parses a single unsigned number (e.g. `memory.current`). `None` on anything else.
pub fn parse_u64(text: &str) -> Option<u64> {
    todo!()
}

/// Parses a number-or-`max` file (e.g. `memory.max`).
pub fn parse_limit(text: &str) -> Option<Limit> {
    todo!()
}

/// Value of `key` in a flat-keyed file such as `memory.stat` (`key N` per line).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    todo!()
}

/// VMIDs of running containers: the subdirectories of `root` whose name is an integer >= 100.
/// A missing `root` gives an empty list (no container runs), other errors name the path.
pub fn list_vmids(root: &Path) -> anyhow::Result<Vec<u32>> {
    todo!()
}
