//! `lxc_autoscale replay`: runs a recorded history through `policy::decide` with a given config,
//! in simulated time, and sums up what that config would have done.
//!
//! What the recording fixes is the load: demand cores (cpu % × the effective CPUs it was measured
//! against) and used MB. What the replay moves is the allocation: it starts where the history (or
//! the current conf, or the tier minimums) says, and every planned change is applied to it. Each
//! cycle the decision sees a synthetic snapshot whose counters give exactly that load against the
//! simulated allocation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::TimeZone;
use serde::Serialize;

use crate::config::Config;
use crate::decide::anomaly::Direction;
use crate::decide::model::Models;
use crate::decide::plan::{Change, Managed, Plan, Resource};
use crate::decide::policy;
use crate::read::snapshot::{
    ContainerPrev, ContainerSample, Counters, CpuTicks, CtConf, HostPrev, HostSample, Snapshot,
    State, NOAUTOSCALE_TAG,
};
use crate::read::{measure, pveconf};
use crate::record::metrics::{self, ContainerRecord, BYTES_PER_MB};

/// Length of the synthetic sampling window; only the ratio usage/window matters.
const WINDOW_USEC: i64 = 1_000_000;
/// Boot time of the synthetic host (any constant: it only has to match across the window).
const SIM_BOOT: u64 = 1;
const SIM_CGROUP_ID: u64 = 1;
/// Host size used when the history has no host lines: large enough never to bind.
const UNLIMITED_CPUS: u32 = 1024;
const UNLIMITED_MEM_KIB: u64 = 1 << 40;
/// Ticks of the synthetic `/proc/stat` window.
const SIM_TICKS: u64 = 1_000_000;

pub use crate::commands::history::{load_history, parse_history, Cycle, History};

/// The ML sibling's `lxc_metrics.json`: `[{"101": {"cpu_usage_percent": .., "memory_usage_mb":
/// ..}, "timestamp": .., "summary": {..}}, ...]`. Keys that are not VMIDs are skipped.
pub(crate) fn parse_ml(text: &str, poll_interval: u64) -> Result<History> {
    let items: Vec<serde_json::Value> =
        serde_json::from_str(text).context("not a JSON array of cycle objects")?;
    let step_usec = i64::try_from(poll_interval.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    let mut notes = Vec::new();
    let mut load = crate::commands::history::LoadStats::default();
    // Warnings kept word for word, and those only counted.
    let mut warnings = (Vec::new(), 0u64);
    let mut untimed = 0usize;
    let mut cycles = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            anyhow::bail!("element {i} is not an object");
        };
        let ts_usec = match obj.get("timestamp").and_then(ml_timestamp_usec) {
            Some(ts) => ts,
            None => {
                untimed += 1;
                (i as i64).saturating_mul(step_usec)
            }
        };
        let mut containers = Vec::new();
        for (key, value) in obj {
            let Ok(vmid) = key.parse::<u32>() else {
                continue;
            };
            let num = |k: &str| value.get(k).and_then(serde_json::Value::as_f64);
            containers.push(ContainerRecord {
                ts_usec,
                vmid,
                cpu_percent: num("cpu_usage_percent"),
                memory_used_mb: num("memory_usage_mb"),
                ..ContainerRecord::default()
            });
        }
        containers.sort_by_key(|c| c.vmid);
        for r in &mut containers {
            reject_ml(i, r, &mut load, &mut warnings);
        }
        load.records += containers.len() as u64;
        cycles.push(Cycle {
            ts_usec,
            host: None,
            containers,
        });
    }
    if untimed > 0 {
        notes.push(format!(
            "{untimed} cycle(s) without a timestamp: assumed {poll_interval} s apart"
        ));
    }
    cycles.sort_by_key(|c| c.ts_usec);
    let (mut shown, unshown) = warnings;
    notes.append(&mut shown);
    if unshown > 0 {
        notes.push(format!("{unshown} more warning(s) not shown"));
    }
    Ok(History {
        format: "ML lxc_metrics.json",
        cycles,
        notes,
        load,
    })
}

/// Rejects the bad figures of container record `r` of element `i`, with a warning naming the
/// element (the first `MAX_WARNINGS` only; the rest are counted).
fn reject_ml(
    i: usize,
    r: &mut ContainerRecord,
    load: &mut crate::commands::history::LoadStats,
    warnings: &mut (Vec<String>, u64),
) {
    let bad = crate::commands::history::reject_container(r);
    if bad.is_empty() {
        return;
    }
    load.rejected_values += bad.len() as u64;
    if warnings.0.len() >= crate::commands::history::MAX_WARNINGS {
        warnings.1 += 1;
    } else {
        warnings.0.push(format!(
            "element {i}: CT {} at {}: negative or non-finite {} rejected (not measured)",
            r.vmid,
            metrics::rfc3339(r.ts_usec),
            bad.join(", ")
        ));
    }
}

/// A timestamp as seconds since the epoch, RFC 3339, or `YYYY-MM-DD HH:MM:SS` (UTC).
fn ml_timestamp_usec(v: &serde_json::Value) -> Option<i64> {
    if let Some(secs) = v.as_f64() {
        return Some((secs * 1e6) as i64);
    }
    let s = v.as_str()?;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

/// One sample as replayed: the simulated allocation in force, the recorded load, and what of it
/// the decision was fed (capped at the allocation, as a real host never reads more).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub ts_usec: i64,
    pub alloc_cpus: f64,
    /// Recorded demand, cores (may exceed the allocation).
    pub demand_cores: Option<f64>,
    pub alloc_memory_mb: u64,
    /// Recorded used memory, MB (may exceed the allocation).
    pub used_mb: Option<f64>,
}

/// A figure per resource, as `{"cpu": .., "memory": ..}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PerResource<T> {
    pub cpu: T,
    pub memory: T,
}

/// Minutes a resource spends between one change and the opposite change that counts as a flap.
pub const FLAP_WINDOW_USEC: i64 = 60 * 60 * 1_000_000;

/// What one config did to one container over the history.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CtSummary {
    pub vmid: u32,
    pub name: Option<String>,
    pub tier: Option<String>,
    /// Where the starting allocation came from.
    pub start_from: String,
    pub start_cores: u32,
    pub start_memory_mb: u64,
    pub end_cores: u32,
    pub end_memory_mb: u64,
    /// `pct set` calls the config would have made.
    pub changes: u32,
    /// Minutes with cpu above the upper threshold of the simulated allocation.
    pub cpu_overload_min: f64,
    /// Minutes with memory above the upper threshold.
    pub memory_overload_min: f64,
    /// Minutes with either.
    pub overload_min: f64,
    /// Minutes with the recorded demand above the allocation itself (the unmet part is not fed
    /// to the decision).
    pub saturated_minutes: PerResource<f64>,
    /// Changes opposite in direction to the previous change of the same resource, within 60 min.
    pub flaps: PerResource<u32>,
    /// Memory cuts to below the memory in use at that moment.
    pub memory_cuts_below_use: u32,
    /// Anomaly episodes that opened, one per episode start.
    pub anomalies: Vec<AnomalyEvent>,
    /// Allocated CPUs × hours, and allocated MB × hours.
    pub core_hours: f64,
    pub mb_hours: f64,
    /// Mean of max(0, allocated − used) / allocated over the samples, CPU and memory; `None`
    /// without samples.
    pub cpu_slack: Option<f64>,
    pub memory_slack: Option<f64>,
    pub peak_cores: u32,
    pub peak_memory_mb: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Total {
    pub changes: u32,
    pub cpu_overload_min: f64,
    pub memory_overload_min: f64,
    pub overload_min: f64,
    pub saturated_minutes: PerResource<f64>,
    pub flaps: PerResource<u32>,
    pub memory_cuts_below_use: u32,
    pub core_hours: f64,
    pub mb_hours: f64,
    /// Minutes of container samples (the denominator of `saturated_minutes`).
    pub container_minutes: f64,
    /// Mean over every container sample.
    pub cpu_slack: Option<f64>,
    pub memory_slack: Option<f64>,
    /// Largest sum over containers of cores (memory) allocated at one time.
    pub peak_cores: u32,
    pub peak_memory_mb: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub cycles: usize,
    pub containers: Vec<CtSummary>,
    pub total: Total,
    pub notes: Vec<String>,
}

/// The result of one replay: summary and the per-container series for plotting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub summary: Summary,
    pub series: BTreeMap<u32, Vec<Point>>,
}

/// One anomaly episode start, as `--json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyEvent {
    pub ts_usec: i64,
    pub time: String,
    pub resource: Resource,
    pub direction: Direction,
    pub score: f64,
    pub reason: String,
}

/// The last change of one resource: when, and which way.
#[derive(Debug, Clone, Copy)]
struct LastMove {
    ts_usec: i64,
    up: bool,
}

/// The simulated allocation of one container.
#[derive(Debug, Clone)]
struct Sim {
    conf: CtConf,
    /// Effective CPUs demand is measured against when the history has none (ML format).
    basis_cpus: f64,
    sum: CtSummary,
    cpu_slack: (f64, u64),
    memory_slack: (f64, u64),
    last: PerResource<Option<LastMove>>,
    container_minutes: f64,
}

/// The load of one container in one cycle, as recorded.
#[derive(Debug, Clone, Copy)]
struct Load {
    vmid: u32,
    demand: Option<f64>,
    used: Option<f64>,
}

/// Replays `history` with `cfg`: every input is in `history`; the simulation reads no file
/// (except a conf for a container whose history holds no allocation) and no clock.
pub fn run(cfg: &Config, history: &History) -> Run {
    let mut r = Replayer::new(cfg, history);
    for (i, cycle) in history.cycles.iter().enumerate() {
        r.cycle(cycle, history.cycles.get(i + 1).map(|n| n.ts_usec));
    }
    r.finish()
}

/// The simulation in progress.
struct Replayer<'a> {
    cfg: &'a Config,
    has_host: bool,
    /// The recording's interval (median gap between cycles), seconds: a sample counts for the
    /// time to the next one, at most two of these; the last for one.
    step_secs: f64,
    sims: BTreeMap<u32, Sim>,
    series: BTreeMap<u32, Vec<Point>>,
    total: Total,
    unknown_host: usize,
    notes: Vec<String>,
    cycles: usize,
    /// The model, carried from cycle to cycle as the daemon carries it.
    pub models: Models,
    now_usec: i64,
}

impl<'a> Replayer<'a> {
    fn new(cfg: &'a Config, history: &History) -> Replayer<'a> {
        let mut notes = history.notes.clone();
        let has_host = history.cycles.iter().any(|c| c.host.is_some());
        if !has_host {
            notes.push(
                "history has no host lines: host headroom treated as unlimited (no grant is cut)"
                    .into(),
            );
        }
        Replayer {
            cfg,
            has_host,
            step_secs: recorded_step_secs(history).unwrap_or(cfg.poll_interval as f64),
            sims: BTreeMap::new(),
            series: BTreeMap::new(),
            total: Total::default(),
            unknown_host: 0,
            notes,
            cycles: history.cycles.len(),
            models: Models::default(),
            now_usec: 0,
        }
    }

    /// One cycle: build the snapshot the daemon would have read, account the sample, decide,
    /// apply the plan to the simulated allocation.
    fn cycle(&mut self, cycle: &Cycle, next_ts: Option<i64>) {
        self.now_usec = cycle.ts_usec;
        // A sample stands for the time to the next one, capped so that a gap in the recording
        // (daemon stopped) does not count as hours of overload; the last one for one interval.
        let secs = next_ts
            .map(|n| ((n - cycle.ts_usec) as f64 / 1e6).min(2.0 * self.step_secs))
            .unwrap_or(self.step_secs)
            .max(0.0);
        let (host, host_prev) = sim_host(cycle, self.has_host, &mut self.unknown_host);
        let mut snap = Snapshot {
            taken_at_usec: cycle.ts_usec,
            host,
            containers: Vec::new(),
        };
        let mut state = State {
            host: Some(host_prev),
            containers: BTreeMap::new(),
            ..State::default()
        };
        let loads = self.feed(cycle, &mut snap, &mut state);
        for load in &loads {
            self.account(cycle.ts_usec, load, secs / 60.0, snap.host.cpus);
        }
        self.peak_total(&loads);
        let plan = policy::decide_with_model(
            self.cfg,
            &snap,
            &state,
            &mut self.models,
            local_time(cycle.ts_usec),
        );
        self.record_anomalies(&plan);
        let used: BTreeMap<u32, Option<f64>> = loads.iter().map(|l| (l.vmid, l.used)).collect();
        for change in &plan.changes {
            if let Some(sim) = self.sims.get_mut(&change.vmid) {
                apply_change(
                    sim,
                    change,
                    cycle.ts_usec,
                    used.get(&change.vmid).copied().flatten(),
                );
            }
        }
        self.peak_total(&loads);
    }

    /// Adds every container of `cycle` to the snapshot and state, with its readings capped at
    /// the simulated allocation. Returns the recorded (uncapped) loads.
    fn feed(&mut self, cycle: &Cycle, snap: &mut Snapshot, state: &mut State) -> Vec<Load> {
        let mut loads = Vec::with_capacity(cycle.containers.len());
        for rec in &cycle.containers {
            if rec.managed == Some(Managed::NoConf) {
                continue;
            }
            let sim = self
                .sims
                .entry(rec.vmid)
                .or_insert_with(|| start(self.cfg, rec, snap.host.cpus, &mut self.notes));
            sim.conf.tags = if rec.managed == Some(Managed::OptedOut) {
                vec![NOAUTOSCALE_TAG.to_string()]
            } else {
                Vec::new()
            };
            sim.conf.lock = (rec.managed == Some(Managed::Locked)).then(|| "recorded".to_string());
            let basis = rec.effective_cpus.unwrap_or(sim.basis_cpus);
            // A percent of no CPUs is no reading (never 0 cores of demand).
            let demand = rec
                .cpu_percent
                .filter(|_| basis.is_finite() && basis > 0.0)
                .map(|p| p * basis / 100.0);
            let used = rec.memory_used_mb;
            let alloc_cpus = measure::effective_cpus(&sim.conf, snap.host.cpus).unwrap_or(1.0);
            let fed_demand = demand.map(|d| d.min(alloc_cpus));
            let fed_used = used.map(|u| u.min(sim.conf.memory_mb as f64));
            loads.push(Load {
                vmid: rec.vmid,
                demand,
                used,
            });
            let fed_ws = rec
                .memory_working_set_mb
                .map(|w| w.min(sim.conf.memory_mb as f64));
            let mut sample = sim_sample(rec.vmid, &sim.conf, fed_demand, fed_used, fed_ws);
            sample.extra.psi_cpu_some_avg10 = rec.psi_cpu_some_avg10;
            sample.extra.psi_memory_some_avg10 = rec.psi_memory_some_avg10;
            sample.extra.psi_memory_full_avg10 = rec.psi_memory_full_avg10;
            sample.extra.counters.oom_kill = rec.oom_kills;
            sample.extra.counters.throttled_usec = rec
                .throttled_ratio
                .map(|r| (r * WINDOW_USEC as f64).round() as u64);
            snap.containers.push(sample);
            state.containers.insert(rec.vmid, sim_prev(cycle.ts_usec));
        }
        loads
    }

    /// Adds one sample of `minutes` to the container's figures.
    fn account(&mut self, ts_usec: i64, load: &Load, minutes: f64, host_cpus: Option<u32>) {
        let sim = self.sims.get_mut(&load.vmid).expect("started in feed");
        let limits = self.cfg.limits_for(load.vmid);
        let alloc_cpus = measure::effective_cpus(&sim.conf, host_cpus).unwrap_or(1.0);
        let mb = sim.conf.memory_mb;
        let s = &mut sim.sum;
        s.peak_cores = s.peak_cores.max(sim.conf.cores.unwrap_or(0));
        s.peak_memory_mb = s.peak_memory_mb.max(mb);
        s.core_hours += alloc_cpus * minutes / 60.0;
        s.mb_hours += mb as f64 * minutes / 60.0;
        sim.container_minutes += minutes;
        let cpu_over = load
            .demand
            .is_some_and(|d| d / alloc_cpus * 100.0 > limits.cpu_upper_threshold);
        let mem_over = load
            .used
            .is_some_and(|u| mb == 0 || u / mb as f64 * 100.0 > limits.memory_upper_threshold);
        let minutes_if = |b: bool| if b { minutes } else { 0.0 };
        s.cpu_overload_min += minutes_if(cpu_over);
        s.memory_overload_min += minutes_if(mem_over);
        s.overload_min += minutes_if(cpu_over || mem_over);
        s.saturated_minutes.cpu += minutes_if(load.demand.is_some_and(|d| d > alloc_cpus + 1e-9));
        s.saturated_minutes.memory += minutes_if(load.used.is_some_and(|u| u > mb as f64));
        if let Some(d) = load.demand {
            add_slack(&mut sim.cpu_slack, alloc_cpus, d);
        }
        if let (Some(u), true) = (load.used, mb > 0) {
            add_slack(&mut sim.memory_slack, mb as f64, u);
        }
        self.series.entry(load.vmid).or_default().push(Point {
            ts_usec,
            alloc_cpus,
            demand_cores: load.demand,
            alloc_memory_mb: mb,
            used_mb: load.used,
        });
    }

    fn record_anomalies(&mut self, plan: &Plan) {
        for a in &plan.anomalies {
            if let Some(sim) = self.sims.get_mut(&a.vmid) {
                sim.sum.anomalies.push(AnomalyEvent {
                    ts_usec: self.now_usec,
                    time: metrics::rfc3339(self.now_usec),
                    resource: a.resource,
                    direction: a.onset.direction,
                    score: a.onset.score,
                    reason: a.to_string(),
                });
            }
        }
    }

    /// Updates the total peaks with the allocations now in force.
    fn peak_total(&mut self, loads: &[Load]) {
        let (mut cores, mut mb) = (0u32, 0u64);
        for l in loads {
            let sim = &self.sims[&l.vmid];
            cores = cores.saturating_add(sim.conf.cores.unwrap_or(0));
            mb = mb.saturating_add(sim.conf.memory_mb);
        }
        self.total.peak_cores = self.total.peak_cores.max(cores);
        self.total.peak_memory_mb = self.total.peak_memory_mb.max(mb);
    }

    fn finish(mut self) -> Run {
        if self.unknown_host > 0 {
            self.notes.push(format!(
                "{} cycle(s) without host busy cores or MemAvailable: no scale-up there (headroom unknown, as in the daemon)",
                self.unknown_host
            ));
        }
        let mut total = self.total;
        let mut containers = Vec::with_capacity(self.sims.len());
        let (mut all_cpu, mut all_mem) = ((0.0, 0), (0.0, 0));
        for (_, mut sim) in self.sims {
            sim.sum.end_cores = sim.conf.cores.unwrap_or(0);
            sim.sum.end_memory_mb = sim.conf.memory_mb;
            sim.sum.cpu_slack = mean(sim.cpu_slack);
            sim.sum.memory_slack = mean(sim.memory_slack);
            all_cpu = (all_cpu.0 + sim.cpu_slack.0, all_cpu.1 + sim.cpu_slack.1);
            all_mem = (
                all_mem.0 + sim.memory_slack.0,
                all_mem.1 + sim.memory_slack.1,
            );
            total.container_minutes += sim.container_minutes;
            add_to_total(&mut total, &sim.sum);
            containers.push(sim.sum);
        }
        total.cpu_slack = mean(all_cpu);
        total.memory_slack = mean(all_mem);
        Run {
            summary: Summary {
                cycles: self.cycles,
                containers,
                total,
                notes: self.notes,
            },
            series: self.series,
        }
    }
}

/// The median gap between consecutive cycles, seconds: the interval the history was recorded at
/// (whatever `poll_interval` the replayed config has). `None` with fewer than two cycles.
fn recorded_step_secs(history: &History) -> Option<f64> {
    let mut gaps: Vec<i64> = history
        .cycles
        .windows(2)
        .map(|w| w[1].ts_usec.saturating_sub(w[0].ts_usec))
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let mid = gaps.len() / 2;
    let (_, median, _) = gaps.select_nth_unstable(mid);
    Some(*median as f64 / 1e6)
}

fn add_to_total(total: &mut Total, s: &CtSummary) {
    total.changes += s.changes;
    total.cpu_overload_min += s.cpu_overload_min;
    total.memory_overload_min += s.memory_overload_min;
    total.overload_min += s.overload_min;
    total.saturated_minutes.cpu += s.saturated_minutes.cpu;
    total.saturated_minutes.memory += s.saturated_minutes.memory;
    total.flaps.cpu += s.flaps.cpu;
    total.flaps.memory += s.flaps.memory;
    total.memory_cuts_below_use += s.memory_cuts_below_use;
    total.core_hours += s.core_hours;
    total.mb_hours += s.mb_hours;
}

/// Adds one slack figure, never below zero: demand above the allocation is saturation, counted
/// on its own, not negative slack.
fn add_slack(acc: &mut (f64, u64), alloc: f64, used: f64) {
    if alloc > 0.0 {
        acc.0 += ((alloc - used) / alloc).max(0.0);
        acc.1 += 1;
    }
}

fn mean((sum, n): (f64, u64)) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

/// Applies one planned change to the simulated allocation and counts it.
fn apply_change(sim: &mut Sim, change: &Change, ts_usec: i64, used: Option<f64>) {
    if let Some(step) = change.cores {
        sim.conf.cores = Some(step.to);
        let up = step.to > step.from;
        sim.sum.flaps.cpu += u32::from(is_flap(sim.last.cpu, ts_usec, up));
        sim.last.cpu = Some(LastMove { ts_usec, up });
    }
    if let Some(step) = change.memory_mb {
        sim.conf.memory_mb = step.to;
        let up = step.to > step.from;
        sim.sum.flaps.memory += u32::from(is_flap(sim.last.memory, ts_usec, up));
        sim.last.memory = Some(LastMove { ts_usec, up });
        if !up && used.is_some_and(|u| (step.to as f64) < u) {
            sim.sum.memory_cuts_below_use += 1;
        }
    }
    sim.sum.changes += 1;
    sim.sum.peak_cores = sim.sum.peak_cores.max(sim.conf.cores.unwrap_or(0));
    sim.sum.peak_memory_mb = sim.sum.peak_memory_mb.max(sim.conf.memory_mb);
}

/// A change opposite to the previous one of the same resource, within `FLAP_WINDOW_USEC`.
fn is_flap(last: Option<LastMove>, ts_usec: i64, up: bool) -> bool {
    last.is_some_and(|l| l.up != up && ts_usec - l.ts_usec <= FLAP_WINDOW_USEC)
}

/// The synthetic sample of one container: counters that give exactly `demand` cores over the
/// synthetic window, `used` MB, and the working set `ws` MB when recorded (else equal to `used`):
/// `memory.current` is the larger of the two, the rest is page cache (reclaimable when the working
/// set is larger, shmem with `inactive_file` over it when smaller).
fn sim_sample(
    vmid: u32,
    conf: &CtConf,
    demand: Option<f64>,
    used: Option<f64>,
    ws: Option<f64>,
) -> ContainerSample {
    let bytes = |mb: f64| (mb * BYTES_PER_MB as f64).round() as u64;
    let memory = used.map(|u| {
        let (u, w) = (bytes(u), ws.map_or(bytes(u), bytes));
        if w >= u {
            // current = ws, file − shmem = ws − used, inactive_file = 0.
            (w, w - u, 0, 0)
        } else {
            // current = used, file = shmem = inactive_file = used − ws.
            (u, u - w, u - w, u - w)
        }
    });
    ContainerSample {
        vmid,
        conf: Some(conf.clone()),
        cgroup_id: Some(SIM_CGROUP_ID),
        cpu_usage_usec: demand.map(|d| (d * WINDOW_USEC as f64).round() as u64),
        memory_current_bytes: memory.map(|m| m.0),
        memory_file_bytes: memory.map(|m| m.1),
        memory_shmem_bytes: memory.map(|m| m.2),
        memory_inactive_file_bytes: memory.map(|m| m.3),
        extra: Default::default(),
    }
}

/// The previous sample: every counter at 0, so the recorded rates (OOM kills, throttled share)
/// come out as this cycle's deltas.
fn sim_prev(ts_usec: i64) -> ContainerPrev {
    ContainerPrev {
        taken_at_usec: ts_usec - WINDOW_USEC,
        boot_time: Some(SIM_BOOT),
        cgroup_id: SIM_CGROUP_ID,
        cpu_usage_usec: 0,
        counters: Counters {
            oom_kill: Some(0),
            throttled_usec: Some(0),
            ..Counters::default()
        },
    }
}

/// One line of `--timeline`: a container in one cycle, the allocation in force and the load
/// fed to the decision (capped at the allocation) with the unmet part beside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineRow {
    pub ts_usec: i64,
    pub vmid: u32,
    pub cores: f64,
    pub memory_mb: u64,
    pub demand_cores: Option<f64>,
    pub used_mb: Option<f64>,
    pub unmet_cores: Option<f64>,
    pub unmet_mb: Option<f64>,
}

/// The timeline of a run, in time order, then VMID order.
pub fn timeline(run: &Run) -> Vec<TimelineRow> {
    let mut rows: Vec<TimelineRow> = run
        .series
        .iter()
        .flat_map(|(vmid, points)| {
            points.iter().map(move |p| TimelineRow {
                ts_usec: p.ts_usec,
                vmid: *vmid,
                cores: p.alloc_cpus,
                memory_mb: p.alloc_memory_mb,
                demand_cores: p.demand_cores.map(|d| d.min(p.alloc_cpus)),
                used_mb: p.used_mb.map(|u| u.min(p.alloc_memory_mb as f64)),
                unmet_cores: p.demand_cores.map(|d| (d - p.alloc_cpus).max(0.0)),
                unmet_mb: p.used_mb.map(|u| (u - p.alloc_memory_mb as f64).max(0.0)),
            })
        })
        .collect();
    rows.sort_by_key(|r| (r.ts_usec, r.vmid));
    rows
}

/// Writes the timeline of `run` to `path` as JSON lines.
pub fn write_timeline(path: &Path, run: &Run) -> Result<()> {
    use std::io::Write as _;
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create timeline {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for row in timeline(run) {
        serde_json::to_writer(&mut out, &row).context("cannot encode timeline")?;
        out.write_all(b"\n")
            .with_context(|| format!("cannot write timeline {}", path.display()))?;
    }
    out.flush()
        .with_context(|| format!("cannot write timeline {}", path.display()))
}

/// Local wall time of `ts_usec`, as the daemon would have seen it (energy mode uses local hours).
fn local_time(ts_usec: i64) -> chrono::NaiveDateTime {
    match chrono::Local.timestamp_micros(ts_usec) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.naive_local(),
        chrono::LocalResult::None => chrono::DateTime::from_timestamp_micros(ts_usec)
            .unwrap_or_default()
            .naive_utc(),
    }
}

/// The synthetic host of one cycle and its previous sample: recorded CPUs, busy cores and
/// MemAvailable, or an unlimited host when the history has none. In a history with host lines, a
/// cycle whose busy cores or MemAvailable were not recorded has that headroom unknown, as the
/// daemon had: no scale-up of that resource (never an idle or unlimited host guessed).
fn sim_host(cycle: &Cycle, has_host: bool, unknown_host: &mut usize) -> (HostSample, HostPrev) {
    let recorded = cycle.host.as_ref().filter(|_| has_host);
    let cpus = recorded.and_then(|h| h.cpus).unwrap_or(UNLIMITED_CPUS);
    let (busy_cores, mem_available_kib) = if has_host {
        let busy = recorded.and_then(|h| h.busy_cores);
        let mem = recorded.and_then(|h| h.mem_available_kib);
        if busy.is_none() || mem.is_none() {
            *unknown_host += 1;
        }
        (busy, mem)
    } else {
        (Some(0.0), Some(UNLIMITED_MEM_KIB))
    };
    let cpu_ticks = busy_cores.map(|busy| CpuTicks {
        busy: ((busy / f64::from(cpus)).clamp(0.0, 1.0) * SIM_TICKS as f64).round() as u64,
        total: SIM_TICKS,
    });
    (
        HostSample {
            cpus: Some(cpus),
            cpu_ticks,
            boot_time: Some(SIM_BOOT),
            mem_total_kib: recorded.and_then(|h| h.mem_total_kib),
            mem_available_kib,
        },
        HostPrev {
            taken_at_usec: cycle.ts_usec - WINDOW_USEC,
            boot_time: Some(SIM_BOOT),
            cpu_ticks: CpuTicks { busy: 0, total: 0 },
        },
    )
}

/// The starting allocation of a container first seen in `rec`: the recorded one, else its current
/// conf, else its tier's minimums. Says which in `notes` when it is not the recorded one.
fn start(
    cfg: &Config,
    rec: &ContainerRecord,
    host_cpus: Option<u32>,
    notes: &mut Vec<String>,
) -> Sim {
    let limits = cfg.limits_for(rec.vmid);
    let (conf, from) = match (rec.cores, rec.memory_mb) {
        (Some(cores), Some(memory_mb)) => (
            CtConf {
                cores: Some(cores),
                memory_mb,
                swap_mb: rec.swap_mb,
                cpulimit: rec.cpulimit,
                hostname: rec.name.clone(),
                ..CtConf::default()
            },
            "history".to_string(),
        ),
        _ => match pveconf::read_conf(&cfg.pve_lxc_dir, rec.vmid) {
            Ok(Some(mut conf)) => {
                let path = pveconf::conf_path(&cfg.pve_lxc_dir, rec.vmid);
                conf.cores = conf.cores.or(host_cpus);
                conf.tags.clear();
                conf.lock = None;
                let from = format!("current conf {}", path.display());
                notes.push(format!(
                    "CT {}: no allocation in the history; started from {from} (cores {}, {} MB)",
                    rec.vmid,
                    conf.cores.unwrap_or(0),
                    conf.memory_mb
                ));
                (conf, from)
            }
            _ => {
                notes.push(format!(
                    "CT {}: no allocation in the history and no readable conf; started from tier minimums (cores {}, {} MB)",
                    rec.vmid, limits.min_cores, limits.min_memory
                ));
                (
                    CtConf {
                        cores: Some(limits.min_cores),
                        memory_mb: limits.min_memory,
                        ..CtConf::default()
                    },
                    "tier minimums".to_string(),
                )
            }
        },
    };
    let basis_cpus = measure::effective_cpus(&conf, host_cpus).unwrap_or(1.0);
    let sum = CtSummary {
        vmid: rec.vmid,
        name: conf.hostname.clone().or_else(|| rec.name.clone()),
        tier: limits.tier.clone(),
        start_from: from,
        start_cores: conf.cores.unwrap_or(0),
        start_memory_mb: conf.memory_mb,
        ..CtSummary::default()
    };
    Sim {
        conf,
        basis_cpus,
        sum,
        cpu_slack: (0.0, 0),
        memory_slack: (0.0, 0),
        last: PerResource::default(),
        container_minutes: 0.0,
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// One block of report columns.
struct Cols {
    changes: u32,
    flaps: u32,
    saturated: PerResource<f64>,
    core_hours: f64,
    mb_hours: f64,
    over: f64,
    cpu_over: f64,
    mem_over: f64,
    cpu_slack: Option<f64>,
    mem_slack: Option<f64>,
    cores: u32,
    mb: u64,
}

impl Cols {
    fn of(c: &CtSummary) -> Cols {
        Cols {
            changes: c.changes,
            flaps: c.flaps.cpu + c.flaps.memory,
            saturated: c.saturated_minutes,
            core_hours: c.core_hours,
            mb_hours: c.mb_hours,
            over: c.overload_min,
            cpu_over: c.cpu_overload_min,
            mem_over: c.memory_overload_min,
            cpu_slack: c.cpu_slack,
            mem_slack: c.memory_slack,
            cores: c.peak_cores,
            mb: c.peak_memory_mb,
        }
    }

    fn total(t: &Total) -> Cols {
        Cols {
            changes: t.changes,
            flaps: t.flaps.cpu + t.flaps.memory,
            saturated: t.saturated_minutes,
            core_hours: t.core_hours,
            mb_hours: t.mb_hours,
            over: t.overload_min,
            cpu_over: t.cpu_overload_min,
            mem_over: t.memory_overload_min,
            cpu_slack: t.cpu_slack,
            mem_slack: t.memory_slack,
            cores: t.peak_cores,
            mb: t.peak_memory_mb,
        }
    }

    fn render(&self) -> String {
        format!(
            "{:>7} {:>5} {:>8.0} {:>8.0} {:>8.1} {:>9.0} {:>9.1} {:>8.1} {:>8.1} {:>9} {:>9} {:>6} {:>8}",
            self.changes,
            self.flaps,
            self.saturated.cpu,
            self.saturated.memory,
            self.core_hours,
            self.mb_hours,
            self.over,
            self.cpu_over,
            self.mem_over,
            pct(self.cpu_slack),
            pct(self.mem_slack),
            self.cores,
            self.mb
        )
    }
}

const COLUMNS_HEADER: &str =
    "changes flaps  sat cpu  sat mem   core-h      MB-h  over min  cpu min  mem min cpu slack mem slack  peak c  peak MB";

/// The text report: one block of columns per config, side by side.
pub fn render(history: &History, runs: &[(String, Run)]) -> String {
    let mut out = String::new();
    let first = history.cycles.first().map_or(0, |c| c.ts_usec);
    let last = history.cycles.last().map_or(0, |c| c.ts_usec);
    let _ = writeln!(
        out,
        "replayed {} cycles ({}) from {} to {} ({:.1} h)",
        history.cycles.len(),
        history.format,
        metrics::rfc3339(first),
        metrics::rfc3339(last),
        (last - first) as f64 / 3.6e9
    );
    for (i, (path, run)) in runs.iter().enumerate() {
        let label = (b'A' + i as u8) as char;
        let _ = writeln!(out, "config {label}: {path}");
        for note in &run.summary.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }
    let _ = writeln!(
        out,
        "sat: minutes with demand above the allocation (capped when fed to the decision); flaps: reversals within 60 min;\nover min: minutes above an upper threshold (cpu or memory); slack: mean max(0, allocated - used) / allocated"
    );
    let _ = write!(out, "{:<6} {:<16} {:<10}", "vmid", "name", "tier");
    for (i, _) in runs.iter().enumerate() {
        let label = (b'A' + i as u8) as char;
        let _ = write!(out, " | {label}: {COLUMNS_HEADER}");
    }
    out.push('\n');
    let vmids: Vec<u32> = runs
        .iter()
        .flat_map(|(_, r)| r.summary.containers.iter().map(|c| c.vmid))
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    for vmid in vmids {
        let any = runs
            .iter()
            .find_map(|(_, r)| r.summary.containers.iter().find(|c| c.vmid == vmid))
            .expect("listed");
        let _ = write!(
            out,
            "{:<6} {:<16} {:<10}",
            vmid,
            any.name.as_deref().unwrap_or("-"),
            any.tier.as_deref().unwrap_or("-")
        );
        for (_, run) in runs {
            match run.summary.containers.iter().find(|c| c.vmid == vmid) {
                Some(c) => {
                    let _ = write!(out, " |   {}", Cols::of(c).render());
                }
                None => {
                    let _ = write!(out, " |   {:>w$}", "-", w = COLUMNS_HEADER.len());
                }
            }
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<6} {:<16} {:<10}", "total", "", "");
    for (_, run) in runs {
        let t = &run.summary.total;
        let _ = write!(out, " |   {}", Cols::total(t).render());
    }
    out.push('\n');
    out
}

/// A chart: unit, allocated line, used line (x in hours).
type Panel<'a> = (&'a str, Vec<(f64, f64)>, Vec<(f64, f64)>);

/// Draws, per container, CPU (allocated CPUs against demand cores) and memory (allocated MB
/// against used MB) over time, into an SVG file at `path`.
pub fn plot(path: &Path, run: &Run) -> Result<()> {
    use plotters::prelude::*;

    let rows = run.series.len().max(1);
    let height = u32::try_from(rows * 260).unwrap_or(u32::MAX);
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    let err = |e: String| anyhow::anyhow!("cannot draw plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((rows, 2));
    let start = run
        .series
        .values()
        .filter_map(|s| s.first())
        .map(|p| p.ts_usec)
        .min()
        .unwrap_or(0);
    let hours = |ts: i64| (ts - start) as f64 / 3.6e9;
    for (i, (vmid, points)) in run.series.iter().enumerate() {
        let x_max = points.last().map_or(1.0, |p| hours(p.ts_usec)).max(1e-3);
        let panels: [Panel; 2] = [
            (
                "cores",
                points
                    .iter()
                    .map(|p| (hours(p.ts_usec), p.alloc_cpus))
                    .collect(),
                points
                    .iter()
                    .filter_map(|p| Some((hours(p.ts_usec), p.demand_cores?)))
                    .collect(),
            ),
            (
                "memory MB",
                points
                    .iter()
                    .map(|p| (hours(p.ts_usec), p.alloc_memory_mb as f64))
                    .collect(),
                points
                    .iter()
                    .filter_map(|p| Some((hours(p.ts_usec), p.used_mb?)))
                    .collect(),
            ),
        ];
        for (j, (unit, alloc, used)) in panels.into_iter().enumerate() {
            let y_max = alloc
                .iter()
                .chain(&used)
                .map(|p| p.1)
                .fold(1.0_f64, f64::max)
                * 1.1;
            let mut chart = ChartBuilder::on(&areas[i * 2 + j])
                .caption(format!("CT {vmid}: {unit}"), ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)
                .map_err(|e| err(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("hours")
                .draw()
                .map_err(|e| err(e.to_string()))?;
            chart
                .draw_series(LineSeries::new(alloc, &BLUE))
                .map_err(|e| err(e.to_string()))?
                .label("allocated")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
            chart
                .draw_series(LineSeries::new(used, &RED))
                .map_err(|e| err(e.to_string()))?
                .label("used")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ml_timestamps_are_read_as_epoch_seconds_or_dates() {
        let ts = |v: serde_json::Value| ml_timestamp_usec(&v);
        assert_eq!(ts(serde_json::json!(1.5)), Some(1_500_000));
        assert_eq!(
            ts(serde_json::json!("1970-01-01T00:00:02Z")),
            Some(2_000_000)
        );
        assert_eq!(
            ts(serde_json::json!("1970-01-01 00:00:03")),
            Some(3_000_000)
        );
        assert_eq!(ts(serde_json::json!("yesterday")), None);
    }

    #[test]
    fn ml_file_that_is_not_an_array_of_objects_is_rejected() {
        assert!(parse_history("[1, 2]", 300).is_err());
        assert!(parse_history("[{\"101\": ", 300).is_err());
    }

    #[test]
    fn ml_file_with_many_bad_values_keeps_twenty_warnings_naming_the_element() {
        let items: Vec<String> = (0..30)
            .map(|i| format!("{{\"101\": {{\"cpu_usage_percent\": -1}}, \"timestamp\": {i}}}"))
            .collect();
        let h = parse_history(&format!("[{}]", items.join(",")), 300).unwrap();
        assert_eq!(h.load.rejected_values, 30);
        assert_eq!(h.notes.len(), 21);
        assert_eq!(
            h.notes[0],
            "element 0: CT 101 at 1970-01-01T00:00:00Z: negative or non-finite cpu_percent rejected (not measured)"
        );
        assert_eq!(h.notes[20], "10 more warning(s) not shown");
    }

    /// The threshold rules with cuts on the latest reading (no window, no cooldown): these
    /// tests are about the judge's accounting.
    fn classic() -> Config {
        crate::config::parse("scale_down_window = 0\nscale_down_cooldown = 0\n").unwrap()
    }

    /// A history of one container, 2 cores / 1024 MB recorded, one line per (cpu %, used MB),
    /// 300 s apart; cpu % is of 2 effective CPUs.
    fn one_ct(samples: &[(f64, f64)]) -> History {
        let text: String = samples
            .iter()
            .enumerate()
            .map(|(i, (cpu, used))| {
                format!(
                    "{{\"kind\":\"container\",\"ts_usec\":{},\"vmid\":101,\"cores\":2,\"effective_cpus\":2.0,\"memory_mb\":1024,\"cpu_percent\":{cpu},\"memory_used_mb\":{used}}}\n",
                    i as i64 * 300_000_000
                )
            })
            .collect();
        parse_history(&text, 300).unwrap()
    }

    #[test]
    fn total_peak_counts_a_change_in_the_last_cycle() {
        // 900 of 1024 MB (87.9 %) in the only cycle: grown to 1800 MB at its end.
        let r = run(&classic(), &one_ct(&[(10.0, 900.0)]));
        let c = &r.summary.containers[0];
        assert_eq!((c.peak_memory_mb, c.end_memory_mb), (1800, 1800));
        assert_eq!(r.summary.total.peak_memory_mb, 1800);
        assert_eq!(r.summary.total.peak_cores, 2);
    }

    #[test]
    fn demand_above_the_allocation_is_capped_and_counted_as_saturation() {
        // 150 % of 2 CPUs = 3 cores of demand, then 3 cores on the 4 granted (75 %).
        let r = run(&classic(), &one_ct(&[(150.0, 100.0), (150.0, 100.0)]));
        let c = &r.summary.containers[0];
        // Fed 2 cores (100 %): mid 50 % -> 4 cores. Not size_for(3 cores) = 6.
        assert_eq!(c.end_cores, 4);
        assert_eq!(c.changes, 1);
        assert_eq!(
            c.saturated_minutes,
            PerResource {
                cpu: 5.0,
                memory: 0.0
            }
        );
        // Slack 0 (not -0.5) in the saturated sample, 0.25 in the second.
        assert_eq!(c.cpu_slack, Some(0.125));
        // 2 cores for 5 min + 4 cores for 5 min.
        assert_eq!(c.core_hours, 0.5);
        // 100 MB of 1024 is below 20 %: 1024 MB for 5 min, then 512 MB for 5 min.
        assert_eq!(c.mb_hours, 128.0);
        assert_eq!(r.summary.total.container_minutes, 10.0);
        let rows = timeline(&r);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].cores, rows[0].demand_cores, rows[0].unmet_cores),
            (2.0, Some(2.0), Some(1.0))
        );
        assert_eq!(
            (rows[1].cores, rows[1].demand_cores, rows[1].unmet_cores),
            (4.0, Some(3.0), Some(0.0))
        );
    }

    #[test]
    fn used_memory_above_the_allocation_is_saturation_not_negative_slack() {
        let r = run(&classic(), &one_ct(&[(50.0, 1536.0)]));
        let c = &r.summary.containers[0];
        assert_eq!(c.saturated_minutes.memory, 5.0);
        assert_eq!(c.memory_slack, Some(0.0));
        // Fed 1024 MB (100 %): 1024 at mid 50 % -> 2048 MB.
        assert_eq!(c.end_memory_mb, 2048);
        let row = &timeline(&r)[0];
        assert_eq!((row.used_mb, row.unmet_mb), (Some(1024.0), Some(512.0)));
    }

    #[test]
    fn a_reversal_within_an_hour_is_a_flap_and_later_is_not() {
        // Up (95 % of 2), down 5 min later (2 % of 4): one cpu flap.
        let r = run(&classic(), &one_ct(&[(95.0, 400.0), (4.0, 400.0)]));
        assert_eq!(r.summary.containers[0].changes, 2);
        assert_eq!(r.summary.total.flaps, PerResource { cpu: 1, memory: 0 });
        // Up, then 13 quiet cycles at 40 % of 4 (65 min), then down: no flap.
        let mut samples = vec![(95.0, 400.0)];
        samples.extend(std::iter::repeat((80.0, 400.0)).take(13));
        samples.push((4.0, 400.0));
        let r = run(&classic(), &one_ct(&samples));
        assert_eq!(r.summary.containers[0].changes, 2);
        assert_eq!(r.summary.total.flaps, PerResource { cpu: 0, memory: 0 });
    }

    #[test]
    fn replay_without_host_lines_is_not_held_back_by_headroom() {
        let text = concat!(
            r#"{"kind":"container","ts_usec":0,"vmid":101,"cores":2,"effective_cpus":2.0,"memory_mb":1024,"cpu_percent":95.0,"memory_used_mb":100.0}"#,
            "\n"
        );
        let h = parse_history(text, 300).unwrap();
        let r = run(&classic(), &h);
        let c = &r.summary.containers[0];
        assert_eq!((c.start_cores, c.end_cores, c.changes), (2, 4, 1));
        assert_eq!(c.cpu_overload_min, 5.0);
        assert!(r.summary.notes[0].contains("no host lines"));
    }

    #[test]
    fn replay_grants_no_scale_up_in_a_cycle_whose_host_line_is_missing() {
        // Cycle 0 has a host line; cycle 1 lost it (torn write): the daemon had no headroom
        // there either, so cpu (95 % of 2) and memory (900 of 1024 MB) are not grown.
        let text = concat!(
            r#"{"kind":"host","ts_usec":0,"cpus":8,"busy_cores":1.0,"mem_available_kib":1048576}"#,
            "\n",
            r#"{"kind":"container","ts_usec":0,"vmid":101,"cores":2,"effective_cpus":2.0,"memory_mb":1024,"cpu_percent":50.0,"memory_used_mb":600.0}"#,
            "\n",
            r#"{"kind":"container","ts_usec":300000000,"vmid":101,"cores":2,"effective_cpus":2.0,"memory_mb":1024,"cpu_percent":95.0,"memory_used_mb":900.0}"#,
            "\n"
        );
        let r = run(&classic(), &parse_history(text, 300).unwrap());
        let c = &r.summary.containers[0];
        assert_eq!((c.end_cores, c.end_memory_mb, c.changes), (2, 1024, 0));
        assert_eq!(
            r.summary.notes,
            vec!["1 cycle(s) without host busy cores or MemAvailable: no scale-up there (headroom unknown, as in the daemon)"]
        );
    }

    #[test]
    fn replay_grants_no_cpu_scale_up_when_the_host_line_has_no_busy_cores() {
        let text = concat!(
            r#"{"kind":"host","ts_usec":0,"cpus":8,"mem_available_kib":1048576}"#,
            "\n",
            r#"{"kind":"container","ts_usec":0,"vmid":101,"cores":2,"effective_cpus":2.0,"memory_mb":1024,"cpu_percent":95.0,"memory_used_mb":600.0}"#,
            "\n"
        );
        let r = run(&classic(), &parse_history(text, 300).unwrap());
        let c = &r.summary.containers[0];
        assert_eq!((c.end_cores, c.changes), (2, 0));
    }

    #[test]
    fn replay_with_a_shorter_poll_interval_counts_the_recorded_minutes() {
        // Recorded every 300 s; the config tried polls every 60 s. Mid-band load, no change:
        // two samples of 2 cores are 10 minutes, not 2 + 1.
        let cfg = crate::config::parse(
            "poll_interval = 60\nscale_down_window = 0\nscale_down_cooldown = 0\n",
        )
        .unwrap();
        let r = run(&cfg, &one_ct(&[(50.0, 600.0), (50.0, 600.0)]));
        assert_eq!(r.summary.containers[0].changes, 0);
        assert_eq!(r.summary.total.container_minutes, 10.0);
        assert_eq!(
            r.summary.total.core_hours,
            2.0 * 5.0 / 60.0 + 2.0 * 5.0 / 60.0
        );
    }

    #[test]
    fn replay_grows_memory_on_recorded_full_memory_pressure_as_the_daemon_does() {
        // 500 of 1024 MB (mid-band) but 5 % of the time every task stalled on memory (PSI full,
        // some 8 %): the daemon grows memory (stalled); the replay must see the same figure.
        let text = concat!(
            r#"{"kind":"container","ts_usec":0,"vmid":101,"cores":2,"effective_cpus":2.0,"memory_mb":1024,"cpu_percent":50.0,"memory_used_mb":500.0,"psi_memory_some_avg10":8.0,"psi_memory_full_avg10":5.0}"#,
            "\n"
        );
        let r = run(&classic(), &parse_history(text, 300).unwrap());
        let c = &r.summary.containers[0];
        assert_eq!((c.changes, c.end_cores), (1, 2));
        // Grown by memory_min_increment (512 MB).
        assert_eq!(c.end_memory_mb, 1536);
    }

    #[test]
    fn replay_cuts_memory_no_lower_than_the_recorded_working_set_as_the_daemon_does() {
        // 300 MB used (7 % of 4096) but a working set of 3000 MB (hot page cache): the daemon's
        // cut stops at the working set plus 10 %, 3300 MB, not at half the allocation.
        let text = concat!(
            r#"{"kind":"container","ts_usec":0,"vmid":101,"cores":2,"effective_cpus":2.0,"memory_mb":4096,"cpu_percent":50.0,"memory_used_mb":300.0,"memory_working_set_mb":3000.0}"#,
            "\n"
        );
        let r = run(&classic(), &parse_history(text, 300).unwrap());
        let c = &r.summary.containers[0];
        // 3300 MB target: 796 MB of room, one whole 512 MB chunk.
        assert_eq!(c.end_memory_mb, 3584);
    }

    #[test]
    fn replay_reads_no_cpu_load_from_a_line_with_zero_effective_cpus() {
        // 50 % of 0 CPUs is no reading (the daemon never measures against 0 CPUs), not 0 cores
        // of demand that would cut the container to its minimum.
        let text = concat!(
            r#"{"kind":"container","ts_usec":0,"vmid":101,"cores":2,"effective_cpus":0.0,"memory_mb":1024,"cpu_percent":50.0,"memory_used_mb":600.0}"#,
            "\n"
        );
        let r = run(&classic(), &parse_history(text, 300).unwrap());
        let c = &r.summary.containers[0];
        assert_eq!((c.changes, c.end_cores, c.cpu_slack), (0, 2, None));
    }

    /// Three days at 5-minute steps: a daily busy hour, a burst every 7 hours, memory drifting.
    fn days_of_load() -> History {
        let text: String = (0..3 * 288i64)
            .map(|k| {
                let hour = (k / 12) % 24;
                let cpu = if hour == 9 || k % 84 == 0 { 90.0 } else { 8.0 + (k % 5) as f64 };
                let used = 700.0 + (k % 288) as f64;
                format!(
                    "{{\"kind\":\"container\",\"ts_usec\":{},\"vmid\":101,\"cores\":4,\"effective_cpus\":4.0,\"memory_mb\":4096,\"cpu_percent\":{cpu},\"memory_used_mb\":{used}}}\n",
                    1_700_000_000_000_000 + k * 300_000_000
                )
            })
            .collect();
        parse_history(&text, 300).unwrap()
    }

    fn run_restarting(cfg: &Config, h: &History, at: usize, keep_model: bool) -> Run {
        let mut r = Replayer::new(cfg, h);
        for (i, cycle) in h.cycles.iter().enumerate() {
            if i == at {
                let json = serde_json::to_string(&r.models).unwrap();
                r.models = if keep_model {
                    serde_json::from_str(&json).unwrap()
                } else {
                    Models::default()
                };
            }
            r.cycle(cycle, h.cycles.get(i + 1).map(|n| n.ts_usec));
        }
        r.finish()
    }

    #[test]
    fn replay_is_deterministic_across_runs_and_across_a_restart_of_the_model_state() {
        let (cfg, h) = (Config::default(), days_of_load());
        let first = run(&cfg, &h);
        assert_eq!(run(&cfg, &h), first);
        assert!(first.summary.total.changes > 2, "{:?}", first.summary.total);
        // The model saved to JSON and read back half way: every decision is the same.
        assert_eq!(run_restarting(&cfg, &h, h.cycles.len() / 2, true), first);
        // Losing it instead changes them: the test can tell.
        assert_ne!(
            run_restarting(&cfg, &h, h.cycles.len() / 2, false).summary,
            first.summary
        );
    }
}
