//! The data that flows through a cycle: `Snapshot` (what the files said) -> `Plan` (what to do).
//! Nothing here does IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Wall-clock time as microseconds since the Unix epoch (CLOCK_REALTIME).
pub type EpochUsec = i64;

/// Everything read from the host in one cycle. Containers are sorted by VMID.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When the cgroup counters were read.
    pub taken_at_usec: EpochUsec,
    pub host: HostSample,
    pub containers: Vec<ContainerSample>,
}

/// Host figures from `<proc_root>/stat` and `<proc_root>/meminfo`. `None` means unreadable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    /// Number of `cpuN` lines in `stat`.
    pub cpus: Option<u32>,
    /// The aggregate `cpu` line of `stat`, in USER_HZ ticks.
    pub cpu_ticks: Option<CpuTicks>,
    /// `btime` of `stat`: host boot time, seconds since the epoch. Identifies the host boot.
    pub boot_time: Option<u64>,
    /// `MemTotal` of `meminfo`, KiB.
    pub mem_total_kib: Option<u64>,
    /// `MemAvailable` of `meminfo`, KiB.
    pub mem_available_kib: Option<u64>,
}

/// Ticks from the aggregate `cpu` line: busy = everything but idle and iowait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

/// One running container: its allocation (from the conf) and its cgroup counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSample {
    pub vmid: u32,
    /// Main section of `<pve_lxc_dir>/<vmid>.conf`; `None` when the file is missing or unreadable.
    pub conf: Option<CtConf>,
    /// Inode of `<cgroup_root>/<vmid>/`: a new one means the container restarted.
    pub cgroup_id: Option<u64>,
    /// `usage_usec` of `cpu.stat`, µs of CPU time.
    pub cpu_usage_usec: Option<u64>,
    /// `memory.current`, bytes.
    pub memory_current_bytes: Option<u64>,
    /// `file` of `memory.stat` (page cache, `shmem` included), bytes.
    pub memory_file_bytes: Option<u64>,
    /// `shmem` of `memory.stat` (tmpfs, shared memory: not reclaimable without swap), bytes.
    pub memory_shmem_bytes: Option<u64>,
    /// `inactive_file` of `memory.stat`, bytes.
    pub memory_inactive_file_bytes: Option<u64>,
    /// Further figures: some are read on every cycle (for the decision and its model), the rest
    /// only when history or export asks for them.
    pub extra: ContainerExtra,
}

/// Figures of one container beyond CPU usage and memory. Each is `None` when its file is missing,
/// unreadable or garbled (a cgroup without the controller, a container without network).
///
/// Read on every cycle, whatever the history settings: `counters.nr_throttled`,
/// `counters.throttled_usec`, `counters.oom_kill` and the `cpu`/`memory` pressure figures. Read
/// only when history, metrics or Prometheus is on (`Collector::read_extra`), `None` otherwise:
/// `counters.io_*`, `counters.net_*`, `swap_current_bytes`, `pids_current`, `psi_io_some_avg10`
/// and the rootfs figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContainerExtra {
    /// Monotonic counters, turned into rates against the previous cycle.
    pub counters: Counters,
    /// `memory.swap.current`, bytes. History only.
    pub swap_current_bytes: Option<u64>,
    /// `pids.current`: processes and threads in the container. History only.
    pub pids_current: Option<u64>,
    /// `some avg10=` of `cpu.pressure`, percent of wall time (0–100). Every cycle.
    pub psi_cpu_some_avg10: Option<f64>,
    /// `full avg10=` of `cpu.pressure`, percent; `None` on kernels before 5.13. Every cycle.
    pub psi_cpu_full_avg10: Option<f64>,
    /// `some avg10=` of `memory.pressure`, percent. Every cycle.
    pub psi_memory_some_avg10: Option<f64>,
    /// `full avg10=` of `memory.pressure`, percent. Every cycle.
    pub psi_memory_full_avg10: Option<f64>,
    /// `some avg10=` of `io.pressure`, percent. History only.
    pub psi_io_some_avg10: Option<f64>,
    /// Used bytes of the filesystem at `/proc/<init pid>/root`. History only.
    pub rootfs_used_bytes: Option<u64>,
    /// Size in bytes of that filesystem. History only.
    pub rootfs_total_bytes: Option<u64>,
}

/// Monotonic counters of a container. They reset when the container restarts; a counter that went
/// backwards or a new cgroup gives no rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// `nr_throttled` of `cpu.stat`: CFS periods in which the cgroup was throttled. Every cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr_throttled: Option<u64>,
    /// `throttled_usec` of `cpu.stat`, µs. Every cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_usec: Option<u64>,
    /// `oom_kill` of `memory.events`: processes killed by the OOM killer. Every cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    /// `rbytes=` of `io.stat`, summed over devices, bytes. History only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_read_bytes: Option<u64>,
    /// `wbytes=` of `io.stat`, summed over devices, bytes. History only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_write_bytes: Option<u64>,
    /// Bytes the container received: `tx_bytes` of its host-side `veth<vmid>i<N>` peers,
    /// summed. History only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes: Option<u64>,
    /// Bytes the container sent: `rx_bytes` of its host-side `veth<vmid>i<N>` peers, summed.
    /// History only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes: Option<u64>,
}

/// The allocation of a container: the main section of its Proxmox conf.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtConf {
    /// `cores`; `None` means the line is absent, so the container may use all host CPUs.
    pub cores: Option<u32>,
    /// `memory` in MB; 512 when absent (the Proxmox default).
    pub memory_mb: u64,
    /// `swap` in MB; `None` when absent (Proxmox then uses 0).
    pub swap_mb: Option<u64>,
    /// `cpulimit` in CPUs; 0 means unlimited.
    pub cpulimit: Option<f64>,
    /// `tags`, split on `;`.
    pub tags: Vec<String>,
    /// `lock` reason (backup, snapshot, migrate, ...); a locked container rejects changes.
    pub lock: Option<String>,
    pub hostname: Option<String>,
    /// `rootfs` volume (`local-lvm:vm-101-disk-0`), without its options. Identity only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_volume: Option<String>,
    /// `ostype` (`debian`, `alpine`, ...). Identity only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ostype: Option<String>,
    /// `hwaddr` MAC addresses of the `netN` lines, upper case, in `N` order. Proxmox draws them at
    /// random for each new container, so they tell a reused VMID apart. Identity only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hwaddrs: Vec<String>,
}

/// Tag that opts a container out of autoscaling.
pub const NOAUTOSCALE_TAG: &str = "noautoscale";

impl CtConf {
    /// Whether the container carries the `noautoscale` tag.
    pub fn opted_out(&self) -> bool {
        self.tags
            .iter()
            .any(|t| t.eq_ignore_ascii_case(NOAUTOSCALE_TAG))
    }
}

/// What the previous cycle read, used to turn counters into rates. Persisted in `state_file`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub host: Option<HostPrev>,
    pub containers: BTreeMap<u32, ContainerPrev>,
    /// Resources the autoscaler leaves alone after a manual change; absent in older files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub holds: BTreeMap<u32, Hold>,
    /// What the daemon last saw in, or set on, each conf: a conf that no longer holds it was
    /// changed outside the daemon.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seen: BTreeMap<u32, Seen>,
    /// Containers that arrived on this node (cluster mode) and whose cuts are held.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arrivals: BTreeMap<u32, Arrival>,
    /// Containers that left the cluster from this node (cluster mode), and when: their records
    /// move to the trash a day later.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub destroyed: BTreeMap<u32, EpochUsec>,
    /// The containers `.vmlist` put on this node at the last cycle, running or not (cluster
    /// mode); `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned: Option<std::collections::BTreeSet<u32>>,
    /// Containers the placement leader advised moving, and when: each at most once a day
    /// (`RECOMMENDED_FOR_USEC`), across restarts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recommended: BTreeMap<u32, EpochUsec>,
}

/// How long a recommendation is remembered, µs: a day.
pub const RECOMMENDED_FOR_USEC: EpochUsec = 86_400 * 1_000_000;

/// The cut holds of a container that arrived on this node (cluster mode), µs since the epoch:
/// its counters restarted with it, and the node it left may have set deadlines in its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    /// No cut of either resource before then: max(`scale_down_window`, 2 × `poll_interval`) after
    /// it arrived.
    pub until_usec: EpochUsec,
    /// The scale-up cooldowns in its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cooldown_until_usec: Option<EpochUsec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_cooldown_until_usec: Option<EpochUsec>,
    /// The memory-cut block after an OOM kill in its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_until_usec: Option<EpochUsec>,
}

impl Arrival {
    /// Whether any of its holds still runs at `now`.
    pub fn active(&self, now: EpochUsec) -> bool {
        [
            Some(self.until_usec),
            self.cpu_cooldown_until_usec,
            self.memory_cooldown_until_usec,
            self.oom_until_usec,
        ]
        .into_iter()
        .flatten()
        .any(|u| u > now)
    }
}

/// A manual change's hold on one container: until when (µs since the epoch) each resource is
/// left alone, and who changed it (peer address, `uid N`, or `outside the daemon`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores_until_usec: Option<EpochUsec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_until_usec: Option<EpochUsec>,
    pub by: String,
}

impl Hold {
    /// Whether either resource is still held at `now`.
    pub fn active(&self, now: EpochUsec) -> bool {
        self.cores_until_usec.is_some_and(|u| u > now)
            || self.memory_until_usec.is_some_and(|u| u > now)
    }
}

/// A conf's allocation as the daemon last knew it: `cores` (`None` = no line) and `memory` (MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub cores: Option<u32>,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HostPrev {
    pub taken_at_usec: EpochUsec,
    pub boot_time: Option<u64>,
    pub cpu_ticks: CpuTicks,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContainerPrev {
    pub taken_at_usec: EpochUsec,
    /// Host `btime` when the sample was taken.
    pub boot_time: Option<u64>,
    pub cgroup_id: u64,
    pub cpu_usage_usec: u64,
    /// Counters for the recorded rates; absent in state files of older versions.
    #[serde(default)]
    pub counters: Counters,
}

/// How old a previous sample may be for a rate to be taken from it: 2 × `poll_interval`, µs. A
/// gap longer than that (downtime, a stalled cycle) would average over something else.
pub fn max_sample_age_usec(poll_interval_secs: u64) -> i64 {
    i64::try_from(poll_interval_secs.saturating_mul(2_000_000)).unwrap_or(i64::MAX)
}

/// The one freshness rule: µs from `taken_at_usec` to `now_usec` when a sample taken then can
/// serve as the previous one: taken before now (a sample stamped in the future cannot) and less
/// than `max_age_usec` ago.
pub fn fresh_window_usec(
    taken_at_usec: EpochUsec,
    now_usec: EpochUsec,
    max_age_usec: i64,
) -> Option<i64> {
    let window = now_usec.checked_sub(taken_at_usec)?;
    (window > 0 && window < max_age_usec).then_some(window)
}

impl State {
    /// The host sample when it is fresh at `now_usec` (see `fresh_window_usec`).
    pub fn fresh_host(&self, now_usec: EpochUsec, max_age_usec: i64) -> Option<&HostPrev> {
        self.host
            .as_ref()
            .filter(|p| fresh_window_usec(p.taken_at_usec, now_usec, max_age_usec).is_some())
    }

    /// Replaces the state with `advanced(snap)`. The containers' samples and the confs seen are
    /// rebuilt from `snap` alone, so the old maps are dropped first: one copy in memory at the
    /// cycle's peak instead of two (~0.3 MB at 1000 containers, measured with heaptrack).
    pub fn advance(&mut self, snap: &Snapshot) {
        self.containers = BTreeMap::new();
        self.seen = BTreeMap::new();
        *self = self.advanced(snap);
    }

    /// The state after `snap`: containers that are gone are dropped, unreadable counters drop the
    /// old sample (a rate across a gap would be a guess).
    pub fn advanced(&self, snap: &Snapshot) -> State {
        let host = snap.host.cpu_ticks.map(|ticks| HostPrev {
            taken_at_usec: snap.taken_at_usec,
            boot_time: snap.host.boot_time,
            cpu_ticks: ticks,
        });
        let containers = snap
            .containers
            .iter()
            .filter_map(|c| {
                Some((
                    c.vmid,
                    ContainerPrev {
                        taken_at_usec: snap.taken_at_usec,
                        boot_time: snap.host.boot_time,
                        cgroup_id: c.cgroup_id?,
                        cpu_usage_usec: c.cpu_usage_usec?,
                        counters: c.extra.counters,
                    },
                ))
            })
            .collect();
        // Holds outlive cycles until they end; `seen` follows the confs just read.
        let holds = self
            .holds
            .iter()
            .filter(|(_, h)| h.active(snap.taken_at_usec))
            .map(|(v, h)| (*v, h.clone()))
            .collect();
        let seen: BTreeMap<u32, Seen> = snap
            .containers
            .iter()
            .filter_map(|c| {
                let conf = c.conf.as_ref()?;
                Some((
                    c.vmid,
                    Seen {
                        cores: conf.cores,
                        memory_mb: conf.memory_mb,
                    },
                ))
            })
            .collect();
        // An arrival's holds last while it runs here and they do.
        let arrivals = self
            .arrivals
            .iter()
            .filter(|(v, a)| a.active(snap.taken_at_usec) && seen.contains_key(v))
            .map(|(v, a)| (*v, *a))
            .collect();
        State {
            host,
            containers,
            holds,
            seen,
            arrivals,
            destroyed: self.destroyed.clone(),
            owned: self.owned.clone(),
            recommended: self
                .recommended
                .iter()
                .filter(|(_, at)| snap.taken_at_usec.saturating_sub(**at) < RECOMMENDED_FOR_USEC)
                .map(|(v, at)| (*v, *at))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_in_place_gives_what_advanced_gives() {
        let conf = CtConf {
            cores: Some(2),
            memory_mb: 1024,
            ..CtConf::default()
        };
        let ct = |vmid: u32| ContainerSample {
            vmid,
            conf: Some(conf.clone()),
            cgroup_id: Some(u64::from(vmid) + 7),
            cpu_usage_usec: Some(1000),
            ..ContainerSample::default()
        };
        let mut snap = Snapshot {
            taken_at_usec: 2_000_000,
            containers: vec![ct(101), ct(102)],
            ..Snapshot::default()
        };
        snap.host.cpu_ticks = Some(CpuTicks { busy: 1, total: 4 });
        let mut old = State::default().advanced(&snap);
        let hold = Hold {
            cores_until_usec: Some(9_000_000),
            memory_until_usec: None,
            by: "uid 0".into(),
        };
        old.holds.insert(101, hold);
        let arrival = Arrival {
            until_usec: 9_000_000,
            ..Arrival::default()
        };
        old.arrivals.insert(102, arrival);
        old.destroyed.insert(300, 1);
        old.owned = Some([101, 102, 103].into());
        old.recommended.insert(101, 1_000_000);
        snap.taken_at_usec = 3_000_000;
        snap.containers = vec![ct(102), ct(104)];
        let expected = old.advanced(&snap);
        assert_eq!(expected.containers.keys().collect::<Vec<_>>(), [&102, &104]);
        assert_eq!(expected.arrivals.len(), 1);
        old.advance(&snap);
        assert_eq!(old, expected);
    }

    #[test]
    fn a_sample_is_fresh_only_when_before_now_and_under_twice_the_interval() {
        let max = max_sample_age_usec(300);
        assert_eq!(max, 600_000_000);
        let now = 1_000_000_000_000;
        assert_eq!(
            fresh_window_usec(now - 300_000_000, now, max),
            Some(300_000_000)
        );
        assert_eq!(
            fresh_window_usec(now - 599_999_999, now, max),
            Some(599_999_999)
        );
        assert_eq!(fresh_window_usec(now - 600_000_000, now, max), None);
        assert_eq!(fresh_window_usec(now, now, max), None);
        assert_eq!(fresh_window_usec(now + 1, now, max), None);
        assert_eq!(fresh_window_usec(i64::MIN, now, max), None);
        assert_eq!(max_sample_age_usec(u64::MAX), i64::MAX);
    }
}
