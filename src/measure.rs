//! Pure arithmetic that turns counters into rates and usage. No IO, no clock.

use crate::model::{ContainerPrev, ContainerSample, CtConf, EpochUsec, HostPrev, HostSample};

/// CPUs the container may use: `cpulimit` when above 0 and below `cores`, else `cores`
/// (absent `cores` = all `host_cpus`). `None` when neither is known.
pub fn effective_cpus(conf: &CtConf, host_cpus: Option<u32>) -> Option<f64> {
    todo!()
}

/// CPU use in percent of `effective_cpus` between `prev` and `cur`.
/// `None` (no decision) when: no usable previous sample, a counter is missing, the cgroup was
/// recreated (container restart), the host rebooted, the counter went backwards, the clock did not
/// move forward, or the previous sample is `max_age_usec` old or older.
pub fn cpu_percent(
    cur: &ContainerSample,
    now_usec: EpochUsec,
    host_boot_time: Option<u64>,
    prev: Option<&ContainerPrev>,
    effective_cpus: f64,
    max_age_usec: i64,
) -> Option<f64> {
    todo!()
}

/// Used memory in MB (MiB) as Proxmox shows it: `memory.current` − `file` of `memory.stat`.
/// `None` when either figure is missing, or file > current (torn read).
pub fn memory_used_mb(cur: &ContainerSample) -> Option<f64> {
    todo!()
}

/// Busy host cores between `prev` and `cur`: Δbusy/Δtotal × cpus. `None` on reboot, missing data or
/// counters that went backwards.
pub fn host_busy_cores(cur: &HostSample, prev: Option<&HostPrev>) -> Option<f64> {
    todo!()
}
