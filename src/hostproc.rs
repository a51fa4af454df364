//! Host figures from procfs: `<proc_root>/stat` and `<proc_root>/meminfo`.

use crate::model::CpuTicks;

pub const STAT: &str = "stat";
pub const MEMINFO: &str = "meminfo";

/// Parsed `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Number of `cpuN` lines.
    pub cpus: Option<u32>,
    /// Aggregate `cpu` line; busy excludes idle and iowait.
    pub ticks: Option<CpuTicks>,
    /// `btime`, seconds since the epoch.
    pub boot_time: Option<u64>,
}

/// Parsed `/proc/meminfo`, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total_kib: Option<u64>,
    pub mem_available_kib: Option<u64>,
}

pub fn parse_stat(text: &str) -> ProcStat {
    todo!()
}

pub fn parse_meminfo(text: &str) -> MemInfo {
    todo!()
}
