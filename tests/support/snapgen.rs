//! Builds a valid config, a snapshot and a previous state from arbitrary bytes, for the fuzz target
//! and the property tests of `policy::decide`. Every byte string decodes (missing bytes read as 0),
//! so the fuzzer never wastes an input; values are drawn from ranges that include the edges the
//! policy must survive: missing figures, counters that went backwards, a recreated cgroup, another
//! host boot, a clock that went backwards, zero or negative headroom, locked and ignored
//! containers.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use lxc_autoscale::config::{Config, TierConfig};
use lxc_autoscale::read::snapshot::{
    ContainerPrev, ContainerSample, CpuTicks, CtConf, HostPrev, HostSample, Snapshot, State,
};

const BOOT_A: u64 = 1_700_000_000;
const BOOT_B: u64 = 1_700_900_000;
const T0_USEC: i64 = 1_700_001_000_000_000;
const MIB: u64 = 1024 * 1024;

/// Reads numbers off the front of a byte string; past its end every read is 0.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// `Some` three times out of four.
    pub fn maybe(&mut self) -> bool {
        self.u8() & 3 != 0
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.u64() % (hi - lo + 1)
    }
}

/// One decoded case.
pub struct Case {
    pub cfg: Config,
    pub snap: Snapshot,
    pub state: State,
    pub now: NaiveDateTime,
}

fn threshold_pair(b: &mut Bytes) -> (f64, f64) {
    let lower = b.range(0, 60) as f64 + f64::from(b.u8() % 4) * 0.25;
    let upper = (lower + 1.0 + b.range(0, 60) as f64).min(100.0);
    (lower, upper)
}

fn config(b: &mut Bytes) -> Config {
    let mut cfg = Config::default();
    cfg.poll_interval = b.range(1, 600);
    (cfg.cpu_lower_threshold, cfg.cpu_upper_threshold) = threshold_pair(b);
    (cfg.memory_lower_threshold, cfg.memory_upper_threshold) = threshold_pair(b);
    cfg.core_min_increment = b.range(1, 4) as u32;
    cfg.core_max_increment = cfg.core_min_increment + b.range(0, 8) as u32;
    cfg.min_cores = b.range(1, 4) as u32;
    cfg.max_cores = cfg.min_cores + b.range(0, 64) as u32;
    cfg.memory_min_increment = b.range(1, 4096);
    cfg.min_memory = b.range(16, 4096);
    cfg.max_memory = b.maybe().then(|| cfg.min_memory + b.range(0, 65536));
    cfg.min_decrease_chunk = b.range(1, 2048);
    cfg.reserve_cpu_percent = b.range(0, 99) as f64;
    cfg.reserve_memory_mb = b.range(0, 65536);
    cfg.energy_mode = b.bool();
    cfg.off_peak_start = b.range(0, 23) as u32;
    cfg.off_peak_end = b.range(0, 23) as u32;
    for i in 0..b.range(0, 3) {
        cfg.ignore_lxc
            .push(100 + u32::from(b.u8() % 16) + 16 * i as u32);
    }
    cfg.ignore_lxc.sort_unstable();
    cfg.ignore_lxc.dedup();
    let mut tiers = BTreeMap::new();
    for name in ["gold", "bronze"] {
        if !b.bool() {
            continue;
        }
        let mut containers: Vec<u32> = (0..b.range(1, 4))
            .map(|_| 100 + u32::from(b.u8() % 16))
            .filter(|v| !cfg.ignore_lxc.contains(v))
            .collect();
        containers.sort_unstable();
        containers.dedup();
        let (lower, upper) = threshold_pair(b);
        let min_cores = b.range(1, 4) as u32;
        tiers.insert(
            name.to_string(),
            TierConfig {
                containers,
                priority: i64::from(b.u8() % 8) - 2,
                cpu_lower_threshold: b.bool().then_some(lower),
                cpu_upper_threshold: b.bool().then_some(upper),
                min_cores: b.bool().then_some(min_cores),
                max_cores: b.bool().then(|| min_cores + b.range(0, 16) as u32),
                ..TierConfig::default()
            },
        );
    }
    // A container in both tiers makes the config invalid: keep it in the first.
    if let (Some(gold), true) = (tiers.get("gold").cloned(), tiers.contains_key("bronze")) {
        if let Some(bronze) = tiers.get_mut("bronze") {
            bronze.containers.retain(|v| !gold.containers.contains(v));
        }
    }
    cfg.tiers = tiers;
    cfg
}

/// A case, or `None` when the decoded config breaks a validation rule (the daemon would refuse
/// it, so `decide` never sees it).
pub fn case(data: &[u8]) -> Option<Case> {
    let mut b = Bytes::new(data);
    let cfg = config(&mut b);
    // A tier's override may contradict an inherited bound; such a config never loads.
    cfg.validate().ok()?;

    let taken_at_usec = T0_USEC + b.range(0, 4_000) as i64 * 1_000_000;
    let (host, ticks_prev) = host_sample(&mut b);
    let mut state = State::default();
    if b.maybe() {
        state.host = Some(HostPrev {
            taken_at_usec: prev_taken(&mut b, taken_at_usec),
            boot_time: if b.u8() % 8 == 0 {
                Some(BOOT_B)
            } else {
                Some(BOOT_A)
            },
            cpu_ticks: ticks_prev,
        });
    }
    let containers = containers(&mut b, taken_at_usec, &mut state);
    let hour = u32::from(b.u8() % 24);
    let now = NaiveDate::from_ymd_opt(2025, 1, 15)
        .and_then(|d| d.and_hms_opt(hour, 30, 0))
        .expect("valid date");
    Some(Case {
        cfg,
        snap: Snapshot {
            taken_at_usec,
            host,
            containers,
        },
        state,
        now,
    })
}

/// The host sample and the host's CPU ticks of the previous cycle.
fn host_sample(b: &mut Bytes) -> (HostSample, CpuTicks) {
    let cpus = b.maybe().then(|| b.range(1, 128) as u32);
    let boot_time = match b.u8() % 8 {
        0 => None,
        1 => Some(BOOT_B),
        _ => Some(BOOT_A),
    };
    let ticks_prev = CpuTicks {
        busy: b.range(0, 1_000_000),
        total: 0,
    };
    let ticks_prev = CpuTicks {
        total: ticks_prev.busy + b.range(0, 1_000_000),
        ..ticks_prev
    };
    let ticks_now = match b.u8() % 8 {
        0 => None,
        // Counters went backwards.
        1 => Some(CpuTicks {
            busy: ticks_prev.busy / 2,
            total: ticks_prev.total / 2,
        }),
        _ => {
            let d_total = b.range(0, 2_000_000);
            let d_busy = b.range(0, d_total.max(1));
            Some(CpuTicks {
                busy: ticks_prev.busy + d_busy,
                total: ticks_prev.total + d_total,
            })
        }
    };
    let mem_total_kib = b.maybe().then(|| b.range(1, 512) * MIB);
    let mem_available_kib = b.maybe().then(|| b.range(0, 256) * MIB);
    let host = HostSample {
        cpus,
        cpu_ticks: ticks_now,
        boot_time,
        mem_total_kib,
        mem_available_kib,
    };
    (host, ticks_prev)
}

/// When the previous cycle read its counters.
fn prev_taken(b: &mut Bytes, taken_at_usec: i64) -> i64 {
    match b.u8() % 8 {
        // The clock went backwards, or did not move.
        0 => taken_at_usec + b.range(0, 600) as i64 * 1_000_000,
        // Too old to use.
        1 => taken_at_usec - 100_000 * 1_000_000,
        _ => taken_at_usec - b.range(1, 1_200) as i64 * 1_000_000,
    }
}

/// Up to ten containers, sorted by vmid, with their previous readings put in `state`.
fn containers(b: &mut Bytes, taken_at_usec: i64, state: &mut State) -> Vec<ContainerSample> {
    let mut containers: Vec<ContainerSample> = Vec::new();
    for _ in 0..b.range(0, 10) {
        let vmid = 100 + u32::from(b.u8() % 16);
        if containers.iter().any(|c| c.vmid == vmid) {
            continue;
        }
        containers.push(container(b, vmid, taken_at_usec, state));
    }
    containers.sort_by_key(|c| c.vmid);
    containers
}

/// One container's sample; its previous reading, if any, goes into `state`.
fn container(b: &mut Bytes, vmid: u32, taken_at_usec: i64, state: &mut State) -> ContainerSample {
    let conf = b.maybe().then(|| CtConf {
        cores: b.maybe().then(|| b.range(1, 96) as u32),
        memory_mb: b.range(1, 65536),
        swap_mb: b.bool().then(|| b.range(0, 4096)),
        cpulimit: match b.u8() % 4 {
            0 => Some(b.range(0, 64) as f64 / 4.0),
            _ => None,
        },
        tags: if b.u8() % 8 == 0 {
            vec!["noautoscale".into()]
        } else {
            Vec::new()
        },
        lock: (b.u8() % 8 == 0).then(|| "backup".to_string()),
        hostname: None,
        ..CtConf::default()
    });
    let cgroup_id = b.maybe().then(|| 1 + u64::from(b.u8() % 2));
    let prev_usage = b.range(0, 1 << 40);
    let cpu_usage_usec = match b.u8() % 8 {
        0 => None,
        // Counter went backwards (restart).
        1 => Some(prev_usage / 2),
        _ => Some(prev_usage + b.range(0, 64 * 1_200 * 1_000_000)),
    };
    let file = b.range(0, 8192) * MIB;
    let memory_current_bytes = match b.u8() % 8 {
        0 => None,
        // Torn read: less in use than in page cache.
        1 => Some(file / 2),
        _ => Some(file + b.range(0, 65536) * MIB + b.range(0, MIB)),
    };
    let memory_file_bytes = (b.u8() % 8 != 0).then_some(file);
    if b.maybe() {
        state.containers.insert(
            vmid,
            ContainerPrev {
                taken_at_usec: prev_taken(b, taken_at_usec),
                boot_time: if b.u8() % 8 == 0 { None } else { Some(BOOT_A) },
                cgroup_id: 1 + u64::from(b.u8() % 2),
                cpu_usage_usec: prev_usage,
                counters: Default::default(),
            },
        );
    }
    ContainerSample {
        vmid,
        conf,
        cgroup_id,
        cpu_usage_usec,
        memory_current_bytes,
        memory_file_bytes,
        memory_shmem_bytes: memory_file_bytes.map(|_| 0),
        memory_inactive_file_bytes: memory_file_bytes,
        extra: Default::default(),
    }
}
