//! The safety rules every `Plan` must obey, stated on the raw inputs rather than on the policy's
//! own arithmetic so that a bug in the policy cannot hide itself. Checked by the fuzz target, the
//! property tests and the soak; cheap enough to call on every cycle.

use lxc_autoscale::config::{Config, Limits};
use lxc_autoscale::decide::plan::{Change, Plan, Step};
use lxc_autoscale::read::measure;
use lxc_autoscale::read::snapshot::{ContainerSample, CtConf, Snapshot, State};

/// Slack for float sums of core grants.
const CORE_EPSILON: f64 = 1e-6;

/// Checks `plan` (from `policy::decide(cfg, snap, state, _)`) against the rules below and returns
/// the first one broken, naming the vmid:
/// - every change names a running, managed container (conf read, not in `ignore_lxc`, not tagged
///   `noautoscale`, not locked), at most once, and really changes something;
/// - `from` is the current allocation; a scale-up never passes `max_cores`, the host's usable
///   cores or `max_memory`; a scale-down never goes below `min_cores`, `min_memory` or the memory
///   in use;
/// - the scale-ups granted in one plan fit the host headroom (CPU and memory), and none is granted
///   when that headroom is unknown;
/// - no change of cores without a CPU rate taken from two readings of the same cgroup in the same
///   host boot, forward in time and in counter; no change of memory without both memory figures.
pub fn check_plan(cfg: &Config, snap: &Snapshot, state: &State, plan: &Plan) -> Result<(), String> {
    let room = Room::of(cfg, snap, state);
    let mut seen = std::collections::BTreeSet::new();
    let mut cores_up_total: u64 = 0;
    let mut memory_up_total_mb: u128 = 0;
    for change in &plan.changes {
        if !seen.insert(change.vmid) {
            return Err(format!(
                "container {}: changed twice in one plan ({change:?})",
                change.vmid
            ));
        }
        let (cores_up, memory_up_mb) = check_change(cfg, snap, state, &room, change)?;
        cores_up_total += cores_up;
        memory_up_total_mb += memory_up_mb;
    }

    if cores_up_total > 0 {
        let room = room.cpu.unwrap_or(f64::NEG_INFINITY);
        if cores_up_total as f64 > room + CORE_EPSILON {
            return Err(format!(
                "plan grants {cores_up_total} cores but the host has {room:.3} cores of headroom"
            ));
        }
    }
    if memory_up_total_mb > 0 {
        let room = room.memory_mb.unwrap_or(i128::MIN);
        if i128::try_from(memory_up_total_mb).unwrap_or(i128::MAX) > room {
            return Err(format!(
                "plan grants {memory_up_total_mb} MB but the host has {room} MB of headroom"
            ));
        }
    }
    Ok(())
}

/// What the host can give this cycle, computed from the raw inputs.
struct Room {
    /// Readings older than this are too old to derive a rate from.
    max_age_usec: i64,
    usable_cores: Option<f64>,
    cpu: Option<f64>,
    memory_mb: Option<i128>,
}

impl Room {
    fn of(cfg: &Config, snap: &Snapshot, state: &State) -> Room {
        let max_age_usec = i64::try_from(
            cfg.poll_interval
                .saturating_mul(2)
                .saturating_mul(1_000_000),
        )
        .unwrap_or(i64::MAX);
        let host_prev = state.host.as_ref().filter(|p| {
            let age = snap.taken_at_usec.saturating_sub(p.taken_at_usec);
            age > 0 && age < max_age_usec
        });
        let usable_cores = snap
            .host
            .cpus
            .map(|n| f64::from(n) * (100.0 - cfg.reserve_cpu_percent) / 100.0);
        let cpu = match (
            usable_cores,
            measure::host_busy_cores(&snap.host, host_prev),
        ) {
            (Some(usable), Some(busy)) => Some(usable - busy),
            _ => None,
        };
        let memory_mb = snap
            .host
            .mem_available_kib
            .map(|kib| i128::from(kib / 1024) - i128::from(cfg.reserve_memory_mb));
        Room {
            max_age_usec,
            usable_cores,
            cpu,
            memory_mb,
        }
    }
}

/// Checks one change; returns the cores and the MB of memory it grants.
fn check_change(
    cfg: &Config,
    snap: &Snapshot,
    state: &State,
    room: &Room,
    change: &Change,
) -> Result<(u64, u128), String> {
    let vmid = change.vmid;
    let why = |rule: &str| format!("container {vmid}: {rule} ({change:?})");
    if change.cores.is_none() && change.memory_mb.is_none() {
        return Err(why("empty change"));
    }
    let Some(c) = snap.containers.iter().find(|c| c.vmid == vmid) else {
        return Err(why("change for a container that is not running"));
    };
    let Some(conf) = c.conf.as_ref() else {
        return Err(why("change for a container without a conf"));
    };
    if cfg.is_ignored(vmid) {
        return Err(why("change for an ignored container"));
    }
    if conf.opted_out() {
        return Err(why("change for a container tagged noautoscale"));
    }
    if conf.lock.is_some() {
        return Err(why("change for a locked container"));
    }
    let limits = cfg.limits_for(vmid);
    let cores_up = match change.cores {
        Some(step) => check_cores(snap, state, room, c, conf, &limits, step).map_err(why)?,
        None => 0,
    };
    let memory_up_mb = match change.memory_mb {
        Some(step) => check_memory(c, conf, &limits, room, step).map_err(why)?,
        None => 0,
    };
    Ok((cores_up, memory_up_mb))
}

/// The cores rules for one step; returns the cores it grants or the rule it breaks.
fn check_cores(
    snap: &Snapshot,
    state: &State,
    room: &Room,
    c: &ContainerSample,
    conf: &CtConf,
    limits: &Limits,
    step: Step<u32>,
) -> Result<u64, &'static str> {
    let prev = state.containers.get(&c.vmid);
    let rate_possible = match (prev, c.cgroup_id, c.cpu_usage_usec) {
        (Some(p), Some(id), Some(usage)) => {
            p.cgroup_id == id
                && p.boot_time.is_some()
                && p.boot_time == snap.host.boot_time
                && usage >= p.cpu_usage_usec
                && snap.taken_at_usec > p.taken_at_usec
                && snap.taken_at_usec.saturating_sub(p.taken_at_usec) < room.max_age_usec
        }
        _ => false,
    };
    if !rate_possible {
        return Err("cores changed without a valid cpu rate");
    }
    if Some(step.from) != conf.cores.or(snap.host.cpus) {
        return Err("cores step does not start from the current cores");
    }
    if step.to == step.from {
        return Err("cores step changes nothing");
    }
    if step.to < step.from {
        if step.to < limits.min_cores {
            return Err("cores scaled down below min_cores");
        }
        return Ok(0);
    }
    if step.to > limits.max_cores {
        return Err("cores scaled up past max_cores");
    }
    if let Some(usable) = room.usable_cores {
        if f64::from(step.to) > usable + CORE_EPSILON {
            return Err("cores scaled up past the host's usable cores");
        }
    }
    if room.cpu.is_none() {
        return Err("cores scaled up with unknown host cpu headroom");
    }
    Ok(u64::from(step.to - step.from))
}

/// The memory rules for one step; returns the MB it grants or the rule it breaks.
fn check_memory(
    c: &ContainerSample,
    conf: &CtConf,
    limits: &Limits,
    room: &Room,
    step: Step<u64>,
) -> Result<u128, &'static str> {
    let (Some(current), Some(file)) = (c.memory_current_bytes, c.memory_file_bytes) else {
        return Err("memory changed without both memory figures");
    };
    let Some(used_bytes) = current.checked_sub(file) else {
        return Err("memory changed on a torn memory reading");
    };
    if step.from != conf.memory_mb {
        return Err("memory step does not start from the current memory");
    }
    if step.to == step.from {
        return Err("memory step changes nothing");
    }
    if step.to < step.from {
        if step.to < limits.min_memory {
            return Err("memory scaled down below min_memory");
        }
        if u128::from(step.to) * 1_048_576 < u128::from(used_bytes) {
            return Err("memory scaled down below the memory in use");
        }
        return Ok(0);
    }
    if limits.max_memory.is_some_and(|max| step.to > max) {
        return Err("memory scaled up past max_memory");
    }
    if room.memory_mb.is_none() {
        return Err("memory scaled up with unknown host memory headroom");
    }
    Ok(u128::from(step.to - step.from))
}
