//! The safety rules every `Plan` must obey, stated on the raw inputs rather than on the policy's
//! own arithmetic so that a bug in the policy cannot hide itself. Checked by the fuzz target, the
//! property tests and the soak; cheap enough to call on every cycle.

use lxc_autoscale::config::Config;
use lxc_autoscale::decide::plan::Plan;
use lxc_autoscale::read::measure;
use lxc_autoscale::read::snapshot::{Snapshot, State};

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
    let cpu_headroom = match (
        usable_cores,
        measure::host_busy_cores(&snap.host, host_prev),
    ) {
        (Some(usable), Some(busy)) => Some(usable - busy),
        _ => None,
    };
    let memory_headroom_mb = snap
        .host
        .mem_available_kib
        .map(|kib| i128::from(kib / 1024) - i128::from(cfg.reserve_memory_mb));

    let mut seen = std::collections::BTreeSet::new();
    let mut cores_up_total: u64 = 0;
    let mut memory_up_total_mb: u128 = 0;
    for change in &plan.changes {
        let vmid = change.vmid;
        let fail = |rule: &str| Err(format!("container {vmid}: {rule} ({change:?})"));
        if !seen.insert(vmid) {
            return fail("changed twice in one plan");
        }
        if change.cores.is_none() && change.memory_mb.is_none() {
            return fail("empty change");
        }
        let Some(c) = snap.containers.iter().find(|c| c.vmid == vmid) else {
            return fail("change for a container that is not running");
        };
        let Some(conf) = c.conf.as_ref() else {
            return fail("change for a container without a conf");
        };
        if cfg.is_ignored(vmid) {
            return fail("change for an ignored container");
        }
        if conf.opted_out() {
            return fail("change for a container tagged noautoscale");
        }
        if conf.lock.is_some() {
            return fail("change for a locked container");
        }
        let limits = cfg.limits_for(vmid);

        if let Some(step) = change.cores {
            let prev = state.containers.get(&vmid);
            let rate_possible = match (prev, c.cgroup_id, c.cpu_usage_usec) {
                (Some(p), Some(id), Some(usage)) => {
                    p.cgroup_id == id
                        && p.boot_time.is_some()
                        && p.boot_time == snap.host.boot_time
                        && usage >= p.cpu_usage_usec
                        && snap.taken_at_usec > p.taken_at_usec
                        && snap.taken_at_usec.saturating_sub(p.taken_at_usec) < max_age_usec
                }
                _ => false,
            };
            if !rate_possible {
                return fail("cores changed without a valid cpu rate");
            }
            if Some(step.from) != conf.cores.or(snap.host.cpus) {
                return fail("cores step does not start from the current cores");
            }
            if step.to == step.from {
                return fail("cores step changes nothing");
            }
            if step.to > step.from {
                if step.to > limits.max_cores {
                    return fail("cores scaled up past max_cores");
                }
                if let Some(usable) = usable_cores {
                    if f64::from(step.to) > usable + CORE_EPSILON {
                        return fail("cores scaled up past the host's usable cores");
                    }
                }
                if cpu_headroom.is_none() {
                    return fail("cores scaled up with unknown host cpu headroom");
                }
                cores_up_total += u64::from(step.to - step.from);
            } else if step.to < limits.min_cores {
                return fail("cores scaled down below min_cores");
            }
        }

        if let Some(step) = change.memory_mb {
            let (Some(current), Some(file)) = (c.memory_current_bytes, c.memory_file_bytes) else {
                return fail("memory changed without both memory figures");
            };
            let Some(used_bytes) = current.checked_sub(file) else {
                return fail("memory changed on a torn memory reading");
            };
            if step.from != conf.memory_mb {
                return fail("memory step does not start from the current memory");
            }
            if step.to == step.from {
                return fail("memory step changes nothing");
            }
            if step.to > step.from {
                if limits.max_memory.is_some_and(|max| step.to > max) {
                    return fail("memory scaled up past max_memory");
                }
                if memory_headroom_mb.is_none() {
                    return fail("memory scaled up with unknown host memory headroom");
                }
                memory_up_total_mb += u128::from(step.to - step.from);
            } else {
                if step.to < limits.min_memory {
                    return fail("memory scaled down below min_memory");
                }
                if u128::from(step.to) * 1_048_576 < u128::from(used_bytes) {
                    return fail("memory scaled down below the memory in use");
                }
            }
        }
    }

    if cores_up_total > 0 {
        let room = cpu_headroom.unwrap_or(f64::NEG_INFINITY);
        if cores_up_total as f64 > room + CORE_EPSILON {
            return Err(format!(
                "plan grants {cores_up_total} cores but the host has {room:.3} cores of headroom"
            ));
        }
    }
    if memory_up_total_mb > 0 {
        let room = memory_headroom_mb.unwrap_or(i128::MIN);
        if i128::try_from(memory_up_total_mb).unwrap_or(i128::MAX) > room {
            return Err(format!(
                "plan grants {memory_up_total_mb} MB but the host has {room} MB of headroom"
            ));
        }
    }
    Ok(())
}
