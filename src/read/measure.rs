//! Pure arithmetic that turns counters into rates and usage. No IO, no clock.

use crate::read::snapshot::{
    self, ContainerPrev, ContainerSample, Counters, CtConf, EpochUsec, HostPrev, HostSample,
};

/// Bytes in one Proxmox MB (a MiB).
const BYTES_PER_MB: f64 = 1_048_576.0;

/// CPUs the container may use: `cpulimit` when above 0 and below `cores`, else `cores`
/// (absent `cores` = all `host_cpus`). `None` when neither is known.
pub fn effective_cpus(conf: &CtConf, host_cpus: Option<u32>) -> Option<f64> {
    let cores = f64::from(conf.cores.or(host_cpus)?);
    match conf.cpulimit {
        Some(limit) if limit > 0.0 && limit < cores => Some(limit),
        _ => Some(cores),
    }
}

/// CPU use in percent of `effective_cpus` between `prev` and `cur`.
/// `None` (no decision) when: no usable previous sample, a counter is missing, the cgroup was
/// recreated (container restart), the host rebooted, the counter went backwards, the clock did not
/// move forward, or the previous sample is `max_age_usec` old or older.
///
/// An unknown boot time (either side `None`) counts as "maybe rebooted": no rate. The result is
/// not clamped: scheduler jitter may put it slightly above 100.
pub fn cpu_percent(
    cur: &ContainerSample,
    now_usec: EpochUsec,
    host_boot_time: Option<u64>,
    prev: Option<&ContainerPrev>,
    effective_cpus: f64,
    max_age_usec: i64,
) -> Option<f64> {
    let prev = prev?;
    let cgroup_id = cur.cgroup_id?;
    let usage_usec = cur.cpu_usage_usec?;
    if prev.cgroup_id != cgroup_id {
        return None;
    }
    match (prev.boot_time, host_boot_time) {
        (Some(before), Some(now)) if before == now => {}
        _ => return None,
    }
    let used_usec = usage_usec.checked_sub(prev.cpu_usage_usec)?;
    let wall_usec = snapshot::fresh_window_usec(prev.taken_at_usec, now_usec, max_age_usec)?;
    if !(effective_cpus.is_finite() && effective_cpus > 0.0) {
        return None;
    }
    Some(used_usec as f64 / (wall_usec as f64 * effective_cpus) * 100.0)
}

/// Used memory in MB (MiB): `memory.current` − (`file` − `shmem`) of `memory.stat`. Only the
/// reclaimable page cache is left out: `shmem` (tmpfs, `/dev/shm`, SysV shared memory) is part of
/// `file` but cannot be reclaimed without swap, so it counts as used. (Proxmox shows
/// `current − file`, which reads a tmpfs-heavy container as nearly empty.)
///
/// `None` (no memory decision) when any of the three figures is missing, or when they do not fit
/// together (`shmem` > `file`, or `file − shmem` > `current`: a torn or garbled read).
pub fn memory_used_mb(cur: &ContainerSample) -> Option<f64> {
    let current = cur.memory_current_bytes?;
    let file = cur.memory_file_bytes?;
    let shmem = cur.memory_shmem_bytes?;
    let reclaimable = file.checked_sub(shmem)?;
    let used = current.checked_sub(reclaimable)?;
    Some(used as f64 / BYTES_PER_MB)
}

/// The kernel's working set in MB: `memory.current` − `inactive_file` (what the kubelet evicts
/// on). A cut never goes below it (plus a margin, see `policy`). `None` when either figure is
/// missing or `inactive_file` > `current`.
pub fn memory_working_set_mb(cur: &ContainerSample) -> Option<f64> {
    let current = cur.memory_current_bytes?;
    let inactive = cur.memory_inactive_file_bytes?;
    Some(current.checked_sub(inactive)? as f64 / BYTES_PER_MB)
}

/// Busy host cores between `prev` and `cur`: Δbusy/Δtotal × cpus. `None` on reboot, missing data or
/// counters that went backwards.
///
/// An unknown boot time on either side counts as a possible reboot. A Δbusy larger than Δtotal
/// (inconsistent counters) also gives `None`.
pub fn host_busy_cores(cur: &HostSample, prev: Option<&HostPrev>) -> Option<f64> {
    let prev = prev?;
    let cpus = cur.cpus?;
    let ticks = cur.cpu_ticks?;
    match (prev.boot_time, cur.boot_time) {
        (Some(before), Some(now)) if before == now => {}
        _ => return None,
    }
    let busy = ticks.busy.checked_sub(prev.cpu_ticks.busy)?;
    let total = ticks.total.checked_sub(prev.cpu_ticks.total)?;
    if total == 0 || busy > total {
        return None;
    }
    Some(busy as f64 / total as f64 * f64::from(cpus))
}

/// Changes of a container's history-only counters since the previous cycle. Every figure is
/// `None` when there is no usable window (see `counter_window_usec`) or when its counter is
/// missing on either side or went backwards: never 0 for "unknown".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CounterRates {
    /// CFS periods throttled in the window (Δ`nr_throttled`).
    pub throttled_periods: Option<u64>,
    /// Δ`throttled_usec` / Δwall: share of the window the cgroup spent throttled, 0–1 (a little
    /// above 1 is possible from jitter).
    pub throttled_ratio: Option<f64>,
    /// Processes OOM-killed in the window (Δ`oom_kill`).
    pub oom_kills: Option<u64>,
    pub io_read_bytes_per_sec: Option<f64>,
    pub io_write_bytes_per_sec: Option<f64>,
    /// Container view: bytes it received per second.
    pub net_rx_bytes_per_sec: Option<f64>,
    /// Container view: bytes it sent per second.
    pub net_tx_bytes_per_sec: Option<f64>,
}

/// µs between `prev` and `cur` when counters can be compared across them: same cgroup (no
/// restart), same known host boot, the clock moved forward, and the window is under
/// `max_age_usec`. The same rules as `cpu_percent`.
pub fn counter_window_usec(
    cur: &ContainerSample,
    now_usec: EpochUsec,
    host_boot_time: Option<u64>,
    prev: Option<&ContainerPrev>,
    max_age_usec: i64,
) -> Option<i64> {
    let prev = prev?;
    if cur.cgroup_id? != prev.cgroup_id {
        return None;
    }
    match (prev.boot_time, host_boot_time) {
        (Some(before), Some(now)) if before == now => {}
        _ => return None,
    }
    snapshot::fresh_window_usec(prev.taken_at_usec, now_usec, max_age_usec)
}

/// The history-only rates of `cur` against `prev`.
pub fn counter_rates(
    cur: &ContainerSample,
    now_usec: EpochUsec,
    host_boot_time: Option<u64>,
    prev: Option<&ContainerPrev>,
    max_age_usec: i64,
) -> CounterRates {
    let (Some(prev), Some(wall_usec)) = (
        prev,
        counter_window_usec(cur, now_usec, host_boot_time, prev, max_age_usec),
    ) else {
        return CounterRates::default();
    };
    let (now, before): (&Counters, &Counters) = (&cur.extra.counters, &prev.counters);
    let delta = |f: fn(&Counters) -> Option<u64>| f(now)?.checked_sub(f(before)?);
    let wall_secs = wall_usec as f64 / 1e6;
    let per_sec = |f: fn(&Counters) -> Option<u64>| delta(f).map(|d| d as f64 / wall_secs);
    CounterRates {
        throttled_periods: delta(|c| c.nr_throttled),
        throttled_ratio: delta(|c| c.throttled_usec).map(|d| d as f64 / wall_usec as f64),
        oom_kills: delta(|c| c.oom_kill),
        io_read_bytes_per_sec: per_sec(|c| c.io_read_bytes),
        io_write_bytes_per_sec: per_sec(|c| c.io_write_bytes),
        net_rx_bytes_per_sec: per_sec(|c| c.net_rx_bytes),
        net_tx_bytes_per_sec: per_sec(|c| c.net_tx_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::snapshot::CpuTicks;

    const BOOT: u64 = 1_700_000_000;
    const MAX_AGE: i64 = 600_000_000;

    fn conf(cores: Option<u32>, cpulimit: Option<f64>) -> CtConf {
        CtConf {
            cores,
            cpulimit,
            memory_mb: 512,
            ..CtConf::default()
        }
    }

    fn sample(cgroup_id: Option<u64>, usage: Option<u64>) -> ContainerSample {
        ContainerSample {
            vmid: 101,
            conf: None,
            cgroup_id,
            cpu_usage_usec: usage,
            memory_current_bytes: None,
            memory_file_bytes: None,
            memory_shmem_bytes: None,
            memory_inactive_file_bytes: None,
            extra: Default::default(),
        }
    }

    fn prev(taken_at: i64, boot: Option<u64>, cgroup_id: u64, usage: u64) -> ContainerPrev {
        ContainerPrev {
            taken_at_usec: taken_at,
            boot_time: boot,
            cgroup_id,
            cpu_usage_usec: usage,
            counters: Default::default(),
        }
    }

    #[test]
    fn effective_cpus_is_cores_without_cpulimit() {
        assert_eq!(effective_cpus(&conf(Some(4), None), Some(16)), Some(4.0));
    }

    #[test]
    fn effective_cpus_uses_cpulimit_below_cores() {
        assert_eq!(
            effective_cpus(&conf(Some(4), Some(1.5)), Some(16)),
            Some(1.5)
        );
    }

    #[test]
    fn effective_cpus_ignores_zero_cpulimit() {
        assert_eq!(
            effective_cpus(&conf(Some(4), Some(0.0)), Some(16)),
            Some(4.0)
        );
    }

    #[test]
    fn effective_cpus_ignores_cpulimit_at_or_above_cores() {
        assert_eq!(
            effective_cpus(&conf(Some(2), Some(2.0)), Some(16)),
            Some(2.0)
        );
        assert_eq!(
            effective_cpus(&conf(Some(2), Some(3.0)), Some(16)),
            Some(2.0)
        );
    }

    #[test]
    fn effective_cpus_falls_back_to_host_cpus_when_cores_absent() {
        assert_eq!(effective_cpus(&conf(None, None), Some(16)), Some(16.0));
        assert_eq!(effective_cpus(&conf(None, Some(2.5)), Some(16)), Some(2.5));
    }

    #[test]
    fn effective_cpus_is_unknown_without_cores_and_host_cpus() {
        assert_eq!(effective_cpus(&conf(None, Some(2.0)), None), None);
    }

    #[test]
    fn cpu_percent_is_usage_over_wall_time_and_cpus() {
        // 3 s of CPU over 10 s on 2 CPUs = 15 %.
        let p = prev(1_000_000, Some(BOOT), 7, 5_000_000);
        let cur = sample(Some(7), Some(8_000_000));
        let got = cpu_percent(&cur, 11_000_000, Some(BOOT), Some(&p), 2.0, MAX_AGE);
        assert_eq!(got, Some(15.0));
    }

    #[test]
    fn cpu_percent_is_not_clamped_above_100() {
        let p = prev(0, Some(BOOT), 7, 0);
        let cur = sample(Some(7), Some(10_100_000));
        let got = cpu_percent(&cur, 10_000_000, Some(BOOT), Some(&p), 1.0, MAX_AGE).unwrap();
        assert!((got - 101.0).abs() < 1e-9, "{got}");
    }

    #[test]
    fn cpu_percent_is_zero_for_an_idle_counter() {
        let p = prev(0, Some(BOOT), 7, 42);
        let cur = sample(Some(7), Some(42));
        assert_eq!(
            cpu_percent(&cur, 10_000_000, Some(BOOT), Some(&p), 1.0, MAX_AGE),
            Some(0.0)
        );
    }

    #[test]
    fn cpu_percent_needs_a_previous_sample() {
        let cur = sample(Some(7), Some(10));
        assert_eq!(cpu_percent(&cur, 10, Some(BOOT), None, 1.0, MAX_AGE), None);
    }

    #[test]
    fn cpu_percent_is_unknown_when_counter_or_cgroup_missing() {
        let p = prev(0, Some(BOOT), 7, 0);
        let no_counter = sample(Some(7), None);
        let no_cgroup = sample(None, Some(10));
        assert_eq!(
            cpu_percent(&no_counter, 1_000_000, Some(BOOT), Some(&p), 1.0, MAX_AGE),
            None
        );
        assert_eq!(
            cpu_percent(&no_cgroup, 1_000_000, Some(BOOT), Some(&p), 1.0, MAX_AGE),
            None
        );
    }

    #[test]
    fn cpu_percent_is_unknown_after_container_restart() {
        let p = prev(0, Some(BOOT), 7, 0);
        let cur = sample(Some(8), Some(500_000));
        assert_eq!(
            cpu_percent(&cur, 1_000_000, Some(BOOT), Some(&p), 1.0, MAX_AGE),
            None
        );
    }

    #[test]
    fn cpu_percent_is_unknown_after_host_reboot() {
        let p = prev(0, Some(BOOT), 7, 0);
        let cur = sample(Some(7), Some(500_000));
        assert_eq!(
            cpu_percent(&cur, 1_000_000, Some(BOOT + 60), Some(&p), 1.0, MAX_AGE),
            None
        );
    }

    #[test]
    fn cpu_percent_is_unknown_when_a_boot_time_is_unknown() {
        let p_unknown = prev(0, None, 7, 0);
        let p_known = prev(0, Some(BOOT), 7, 0);
        let cur = sample(Some(7), Some(500_000));
        assert_eq!(
            cpu_percent(&cur, 1_000_000, Some(BOOT), Some(&p_unknown), 1.0, MAX_AGE),
            None
        );
        assert_eq!(
            cpu_percent(&cur, 1_000_000, None, Some(&p_known), 1.0, MAX_AGE),
            None
        );
        assert_eq!(
            cpu_percent(&cur, 1_000_000, None, Some(&p_unknown), 1.0, MAX_AGE),
            None
        );
    }

    #[test]
    fn cpu_percent_is_unknown_when_counter_went_backwards() {
        let p = prev(0, Some(BOOT), 7, 900);
        let cur = sample(Some(7), Some(899));
        assert_eq!(
            cpu_percent(&cur, 1_000_000, Some(BOOT), Some(&p), 1.0, MAX_AGE),
            None
        );
    }

    #[test]
    fn cpu_percent_is_unknown_when_clock_did_not_advance() {
        let p = prev(5_000_000, Some(BOOT), 7, 0);
        let cur = sample(Some(7), Some(10));
        assert_eq!(
            cpu_percent(&cur, 5_000_000, Some(BOOT), Some(&p), 1.0, MAX_AGE),
            None
        );
        assert_eq!(
            cpu_percent(&cur, 4_000_000, Some(BOOT), Some(&p), 1.0, MAX_AGE),
            None
        );
    }

    #[test]
    fn cpu_percent_is_unknown_when_previous_sample_is_stale() {
        let p = prev(0, Some(BOOT), 7, 0);
        let cur = sample(Some(7), Some(10));
        assert_eq!(
            cpu_percent(&cur, MAX_AGE, Some(BOOT), Some(&p), 1.0, MAX_AGE),
            None
        );
        assert!(cpu_percent(&cur, MAX_AGE - 1, Some(BOOT), Some(&p), 1.0, MAX_AGE).is_some());
    }

    #[test]
    fn cpu_percent_is_unknown_for_zero_cpus() {
        let p = prev(0, Some(BOOT), 7, 0);
        let cur = sample(Some(7), Some(10));
        assert_eq!(
            cpu_percent(&cur, 1_000_000, Some(BOOT), Some(&p), 0.0, MAX_AGE),
            None
        );
    }

    fn mem(current: u64, file: Option<u64>, shmem: Option<u64>) -> ContainerSample {
        ContainerSample {
            memory_current_bytes: Some(current),
            memory_file_bytes: file,
            memory_shmem_bytes: shmem,
            ..ContainerSample::default()
        }
    }

    #[test]
    fn memory_used_excludes_reclaimable_page_cache() {
        let cur = mem(300 * 1_048_576, Some(100 * 1_048_576), Some(0));
        assert_eq!(memory_used_mb(&cur), Some(200.0));
    }

    #[test]
    fn memory_used_counts_shmem_as_used() {
        // 3500 MB charged, 3000 MB of it tmpfs: all 3500 MB are in use.
        let cur = mem(
            3500 * 1_048_576,
            Some(3000 * 1_048_576),
            Some(3000 * 1_048_576),
        );
        assert_eq!(memory_used_mb(&cur), Some(3500.0));
        // 100 MB of real cache on top of 1000 MB shmem: 100 MB reclaimable.
        let cur = mem(
            1500 * 1_048_576,
            Some(1100 * 1_048_576),
            Some(1000 * 1_048_576),
        );
        assert_eq!(memory_used_mb(&cur), Some(1400.0));
    }

    #[test]
    fn memory_used_keeps_fractions_of_a_mb() {
        let cur = mem(1_048_576 + 524_288, Some(0), Some(0));
        assert_eq!(memory_used_mb(&cur), Some(1.5));
    }

    #[test]
    fn memory_used_is_unknown_when_a_figure_is_missing() {
        assert_eq!(memory_used_mb(&mem(1_048_576, None, Some(0))), None);
        assert_eq!(memory_used_mb(&mem(1_048_576, Some(0), None)), None);
        let only_file = ContainerSample {
            memory_file_bytes: Some(0),
            memory_shmem_bytes: Some(0),
            ..ContainerSample::default()
        };
        assert_eq!(memory_used_mb(&only_file), None);
    }

    #[test]
    fn memory_used_is_unknown_when_figures_do_not_fit_together() {
        // Reclaimable cache above current: torn read.
        assert_eq!(memory_used_mb(&mem(1_000, Some(1_001), Some(0))), None);
        // shmem above file: garbled.
        assert_eq!(memory_used_mb(&mem(1_000, Some(10), Some(11))), None);
    }

    #[test]
    fn working_set_is_current_minus_inactive_file() {
        let mut cur = mem(1000 * 1_048_576, None, None);
        assert_eq!(memory_working_set_mb(&cur), None);
        cur.memory_inactive_file_bytes = Some(250 * 1_048_576);
        assert_eq!(memory_working_set_mb(&cur), Some(750.0));
        cur.memory_inactive_file_bytes = Some(1001 * 1_048_576);
        assert_eq!(memory_working_set_mb(&cur), None);
    }

    fn host(cpus: Option<u32>, busy: u64, total: u64, boot: Option<u64>) -> HostSample {
        HostSample {
            cpus,
            cpu_ticks: Some(CpuTicks { busy, total }),
            boot_time: boot,
            mem_total_kib: None,
            mem_available_kib: None,
        }
    }

    fn host_prev(busy: u64, total: u64, boot: Option<u64>) -> HostPrev {
        HostPrev {
            taken_at_usec: 0,
            boot_time: boot,
            cpu_ticks: CpuTicks { busy, total },
        }
    }

    #[test]
    fn host_busy_cores_is_busy_share_times_cpus() {
        let p = host_prev(1_000, 10_000, Some(BOOT));
        let cur = host(Some(8), 1_250, 11_000, Some(BOOT));
        assert_eq!(host_busy_cores(&cur, Some(&p)), Some(2.0));
    }

    #[test]
    fn host_busy_cores_needs_a_previous_sample() {
        let cur = host(Some(8), 1_250, 11_000, Some(BOOT));
        assert_eq!(host_busy_cores(&cur, None), None);
    }

    #[test]
    fn host_busy_cores_is_unknown_after_reboot_or_unknown_boot() {
        let p = host_prev(1_000, 10_000, Some(BOOT));
        assert_eq!(
            host_busy_cores(&host(Some(8), 1_250, 11_000, Some(BOOT + 1)), Some(&p)),
            None
        );
        assert_eq!(
            host_busy_cores(&host(Some(8), 1_250, 11_000, None), Some(&p)),
            None
        );
    }

    #[test]
    fn host_busy_cores_is_unknown_when_counters_went_backwards() {
        let p = host_prev(1_000, 10_000, Some(BOOT));
        assert_eq!(
            host_busy_cores(&host(Some(8), 999, 11_000, Some(BOOT)), Some(&p)),
            None
        );
        assert_eq!(
            host_busy_cores(&host(Some(8), 1_000, 9_999, Some(BOOT)), Some(&p)),
            None
        );
    }

    #[test]
    fn host_busy_cores_is_unknown_when_no_ticks_passed() {
        let p = host_prev(1_000, 10_000, Some(BOOT));
        assert_eq!(
            host_busy_cores(&host(Some(8), 1_000, 10_000, Some(BOOT)), Some(&p)),
            None
        );
    }

    #[test]
    fn host_busy_cores_is_unknown_without_cpus_or_ticks() {
        let p = host_prev(1_000, 10_000, Some(BOOT));
        assert_eq!(
            host_busy_cores(&host(None, 1_250, 11_000, Some(BOOT)), Some(&p)),
            None
        );
        let mut no_ticks = host(Some(8), 0, 0, Some(BOOT));
        no_ticks.cpu_ticks = None;
        assert_eq!(host_busy_cores(&no_ticks, Some(&p)), None);
    }

    #[test]
    fn host_busy_cores_is_unknown_when_busy_grew_more_than_total() {
        let p = host_prev(1_000, 10_000, Some(BOOT));
        assert_eq!(
            host_busy_cores(&host(Some(8), 2_001, 11_000, Some(BOOT)), Some(&p)),
            None
        );
    }

    fn with_counters(cgroup_id: u64, counters: Counters) -> ContainerSample {
        let mut c = sample(Some(cgroup_id), Some(0));
        c.extra.counters = counters;
        c
    }

    fn counters(base: u64) -> Counters {
        Counters {
            nr_throttled: Some(base),
            throttled_usec: Some(base * 1000),
            oom_kill: Some(base / 10),
            io_read_bytes: Some(base * 100),
            io_write_bytes: Some(base * 200),
            net_rx_bytes: Some(base * 300),
            net_tx_bytes: Some(base * 400),
        }
    }

    #[test]
    fn counter_rates_are_deltas_over_the_window() {
        let mut p = prev(0, Some(BOOT), 7, 0);
        p.counters = counters(10);
        let cur = with_counters(7, counters(1010));
        // 10 s window.
        let r = counter_rates(&cur, 10_000_000, Some(BOOT), Some(&p), MAX_AGE);
        assert_eq!(
            r,
            CounterRates {
                throttled_periods: Some(1000),
                throttled_ratio: Some(0.1),
                oom_kills: Some(100),
                io_read_bytes_per_sec: Some(10_000.0),
                io_write_bytes_per_sec: Some(20_000.0),
                net_rx_bytes_per_sec: Some(30_000.0),
                net_tx_bytes_per_sec: Some(40_000.0),
            }
        );
    }

    #[test]
    fn counter_that_went_backwards_gives_none_not_zero() {
        let mut p = prev(0, Some(BOOT), 7, 0);
        p.counters = counters(10);
        let mut now = counters(20);
        now.io_read_bytes = Some(5);
        let r = counter_rates(
            &with_counters(7, now),
            10_000_000,
            Some(BOOT),
            Some(&p),
            MAX_AGE,
        );
        assert_eq!(r.io_read_bytes_per_sec, None);
        assert_eq!(r.io_write_bytes_per_sec, Some(200.0));
    }

    #[test]
    fn counter_rates_are_none_after_restart_reboot_or_without_previous_counter() {
        let mut p = prev(0, Some(BOOT), 7, 0);
        p.counters = counters(10);
        let cur = with_counters(7, counters(20));
        let restarted = with_counters(8, counters(20));
        assert_eq!(
            counter_rates(&restarted, 10_000_000, Some(BOOT), Some(&p), MAX_AGE),
            CounterRates::default()
        );
        assert_eq!(
            counter_rates(&cur, 10_000_000, Some(BOOT + 1), Some(&p), MAX_AGE),
            CounterRates::default()
        );
        assert_eq!(
            counter_rates(&cur, MAX_AGE, Some(BOOT), Some(&p), MAX_AGE),
            CounterRates::default()
        );
        p.counters.oom_kill = None;
        let r = counter_rates(&cur, 10_000_000, Some(BOOT), Some(&p), MAX_AGE);
        assert_eq!(r.oom_kills, None);
        assert_eq!(r.throttled_periods, Some(10));
    }
}
