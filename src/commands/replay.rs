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
use crate::decide::plan::Managed;
use crate::decide::policy;
use crate::read::snapshot::{
    ContainerPrev, ContainerSample, CpuTicks, CtConf, HostPrev, HostSample, Snapshot, State,
    NOAUTOSCALE_TAG,
};
use crate::read::{measure, pveconf};
use crate::record::metrics::{self, ContainerRecord, HostRecord, Record, BYTES_PER_MB};

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

/// A recorded history, grouped into cycles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// `metrics jsonl` or `ML lxc_metrics.json`.
    pub format: &'static str,
    /// Cycles sorted by time; containers in each sorted by vmid.
    pub cycles: Vec<Cycle>,
    /// What the loader assumed.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cycle {
    pub ts_usec: i64,
    pub host: Option<HostRecord>,
    pub containers: Vec<ContainerRecord>,
}

/// Reads a history file in either format. `poll_interval` (seconds) spaces ML cycles that carry
/// no timestamp.
pub fn load_history(path: &Path, poll_interval: u64) -> Result<History> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read metrics history {}", path.display()))?;
    parse_history(&text, poll_interval)
        .with_context(|| format!("invalid metrics history {}", path.display()))
}

/// Parses history text: a JSON array is the ML sibling's format, anything else JSON lines.
pub fn parse_history(text: &str, poll_interval: u64) -> Result<History> {
    if text.trim_start().starts_with('[') {
        parse_ml(text, poll_interval)
    } else {
        Ok(group(metrics::parse_history(text)?))
    }
}

fn group(records: Vec<Record>) -> History {
    let mut cycles: BTreeMap<i64, Cycle> = BTreeMap::new();
    for r in records {
        let ts = match &r {
            Record::Host(h) => h.ts_usec,
            Record::Container(c) => c.ts_usec,
        };
        let cycle = cycles.entry(ts).or_insert_with(|| Cycle {
            ts_usec: ts,
            ..Cycle::default()
        });
        match r {
            Record::Host(h) => cycle.host = Some(h),
            Record::Container(c) => cycle.containers.push(c),
        }
    }
    let mut cycles: Vec<Cycle> = cycles.into_values().collect();
    for c in &mut cycles {
        c.containers.sort_by_key(|r| r.vmid);
        c.containers.dedup_by_key(|r| r.vmid);
    }
    History {
        format: "metrics jsonl",
        cycles,
        notes: Vec::new(),
    }
}

/// The ML sibling's `lxc_metrics.json`: `[{"101": {"cpu_usage_percent": .., "memory_usage_mb":
/// ..}, "timestamp": .., "summary": {..}}, ...]`. Keys that are not VMIDs are skipped.
fn parse_ml(text: &str, poll_interval: u64) -> Result<History> {
    let items: Vec<serde_json::Value> =
        serde_json::from_str(text).context("not a JSON array of cycle objects")?;
    let step_usec = i64::try_from(poll_interval.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    let mut notes = Vec::new();
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
    Ok(History {
        format: "ML lxc_metrics.json",
        cycles,
        notes,
    })
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

/// One sample as replayed: the simulated allocation in force and the recorded load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub ts_usec: i64,
    pub alloc_cpus: f64,
    pub demand_cores: Option<f64>,
    pub alloc_memory_mb: u64,
    pub used_mb: Option<f64>,
}

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
    /// Mean of (allocated − used) / allocated over the samples, CPU and memory; `None` without
    /// samples.
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
    /// Mean over every container sample.
    pub cpu_slack: Option<f64>,
    pub memory_slack: Option<f64>,
    /// Largest sum over containers of cores (memory) allocated in one cycle.
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

/// The simulated allocation of one container.
#[derive(Debug, Clone)]
struct Sim {
    conf: CtConf,
    /// Effective CPUs demand is measured against when the history has none (ML format).
    basis_cpus: f64,
    sum: CtSummary,
    cpu_slack: Vec<f64>,
    memory_slack: Vec<f64>,
}

/// Replays `history` with `cfg`.
#[allow(clippy::too_many_lines)] // split by h12's rework, in progress
pub fn run(cfg: &Config, history: &History) -> Run {
    let mut notes = history.notes.clone();
    let has_host = history.cycles.iter().any(|c| c.host.is_some());
    if !has_host {
        notes.push(
            "history has no host lines: host headroom treated as unlimited (no grant is cut)"
                .into(),
        );
    }
    let cap_secs = cfg.poll_interval.saturating_mul(2) as f64;
    let mut sims: BTreeMap<u32, Sim> = BTreeMap::new();
    let mut series: BTreeMap<u32, Vec<Point>> = BTreeMap::new();
    let mut total = Total::default();
    let mut unknown_busy = 0usize;

    for (i, cycle) in history.cycles.iter().enumerate() {
        // A sample stands for the time to the next one, capped so that a gap in the recording
        // (daemon stopped) does not count as hours of overload; the last one for one interval.
        let secs = history
            .cycles
            .get(i + 1)
            .map(|n| ((n.ts_usec - cycle.ts_usec) as f64 / 1e6).min(cap_secs))
            .unwrap_or(cfg.poll_interval as f64)
            .max(0.0);
        let minutes = secs / 60.0;

        let (host, host_prev) = sim_host(cycle, has_host, &mut unknown_busy);
        let mut snap = Snapshot {
            taken_at_usec: cycle.ts_usec,
            host,
            containers: Vec::new(),
        };
        let mut state = State {
            host: Some(host_prev),
            containers: BTreeMap::new(),
        };
        let mut loads: Vec<(u32, Option<f64>, Option<f64>)> = Vec::new();
        for rec in &cycle.containers {
            if rec.managed == Some(Managed::NoConf) {
                continue;
            }
            let sim = sims
                .entry(rec.vmid)
                .or_insert_with(|| start(cfg, rec, snap.host.cpus, &mut notes));
            sim.conf.tags = if rec.managed == Some(Managed::OptedOut) {
                vec![NOAUTOSCALE_TAG.to_string()]
            } else {
                Vec::new()
            };
            sim.conf.lock = (rec.managed == Some(Managed::Locked)).then(|| "recorded".to_string());
            let basis = rec.effective_cpus.unwrap_or(sim.basis_cpus);
            let demand = rec.cpu_percent.map(|p| p * basis / 100.0);
            let used = rec.memory_used_mb;
            loads.push((rec.vmid, demand, used));
            snap.containers.push(ContainerSample {
                vmid: rec.vmid,
                conf: Some(sim.conf.clone()),
                cgroup_id: Some(SIM_CGROUP_ID),
                cpu_usage_usec: demand.map(|d| (d * WINDOW_USEC as f64).round() as u64),
                memory_current_bytes: used.map(|u| (u * BYTES_PER_MB as f64).round() as u64),
                memory_file_bytes: used.map(|_| 0),
                memory_shmem_bytes: used.map(|_| 0),
                memory_inactive_file_bytes: used.map(|_| 0),
                extra: Default::default(),
            });
            state.containers.insert(
                rec.vmid,
                ContainerPrev {
                    taken_at_usec: cycle.ts_usec - WINDOW_USEC,
                    boot_time: Some(SIM_BOOT),
                    cgroup_id: SIM_CGROUP_ID,
                    cpu_usage_usec: 0,
                    counters: Default::default(),
                },
            );
        }

        let mut sum_cores = 0u32;
        let mut sum_mb = 0u64;
        for &(vmid, demand, used) in &loads {
            let sim = sims.get_mut(&vmid).expect("started above");
            let limits = cfg.limits_for(vmid);
            let alloc_cpus =
                measure::effective_cpus(&sim.conf, snap.host.cpus).unwrap_or(f64::from(1));
            let cores = sim.conf.cores.unwrap_or(0);
            let mb = sim.conf.memory_mb;
            sum_cores += cores;
            sum_mb += mb;
            let s = &mut sim.sum;
            s.peak_cores = s.peak_cores.max(cores);
            s.peak_memory_mb = s.peak_memory_mb.max(mb);
            let cpu_over =
                demand.is_some_and(|d| d / alloc_cpus * 100.0 > limits.cpu_upper_threshold);
            let mem_over = used
                .is_some_and(|u| mb == 0 || u / mb as f64 * 100.0 > limits.memory_upper_threshold);
            if cpu_over {
                s.cpu_overload_min += minutes;
            }
            if mem_over {
                s.memory_overload_min += minutes;
            }
            if cpu_over || mem_over {
                s.overload_min += minutes;
            }
            if let Some(d) = demand {
                sim.cpu_slack.push((alloc_cpus - d) / alloc_cpus);
            }
            if let (Some(u), true) = (used, mb > 0) {
                sim.memory_slack.push((mb as f64 - u) / mb as f64);
            }
            series.entry(vmid).or_default().push(Point {
                ts_usec: cycle.ts_usec,
                alloc_cpus,
                demand_cores: demand,
                alloc_memory_mb: mb,
                used_mb: used,
            });
        }
        total.peak_cores = total.peak_cores.max(sum_cores);
        total.peak_memory_mb = total.peak_memory_mb.max(sum_mb);

        let plan = policy::decide(cfg, &snap, &state, local_time(cycle.ts_usec));
        for change in &plan.changes {
            let Some(sim) = sims.get_mut(&change.vmid) else {
                continue;
            };
            if let Some(step) = change.cores {
                sim.conf.cores = Some(step.to);
            }
            if let Some(step) = change.memory_mb {
                sim.conf.memory_mb = step.to;
            }
            sim.sum.changes += 1;
            sim.sum.peak_cores = sim.sum.peak_cores.max(sim.conf.cores.unwrap_or(0));
            sim.sum.peak_memory_mb = sim.sum.peak_memory_mb.max(sim.conf.memory_mb);
        }
    }
    if unknown_busy > 0 {
        notes.push(format!(
            "{unknown_busy} cycle(s) without host busy cores: host treated as idle there"
        ));
    }

    let mut containers = Vec::with_capacity(sims.len());
    let mut all_cpu = Vec::new();
    let mut all_mem = Vec::new();
    for (_, mut sim) in sims {
        sim.sum.end_cores = sim.conf.cores.unwrap_or(0);
        sim.sum.end_memory_mb = sim.conf.memory_mb;
        sim.sum.cpu_slack = mean(&sim.cpu_slack);
        sim.sum.memory_slack = mean(&sim.memory_slack);
        all_cpu.extend_from_slice(&sim.cpu_slack);
        all_mem.extend_from_slice(&sim.memory_slack);
        total.changes += sim.sum.changes;
        total.cpu_overload_min += sim.sum.cpu_overload_min;
        total.memory_overload_min += sim.sum.memory_overload_min;
        total.overload_min += sim.sum.overload_min;
        containers.push(sim.sum);
    }
    total.cpu_slack = mean(&all_cpu);
    total.memory_slack = mean(&all_mem);
    Run {
        summary: Summary {
            cycles: history.cycles.len(),
            containers,
            total,
            notes,
        },
        series,
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
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
/// MemAvailable, or an unlimited host when the history has none.
fn sim_host(cycle: &Cycle, has_host: bool, unknown_busy: &mut usize) -> (HostSample, HostPrev) {
    let recorded = cycle.host.as_ref().filter(|_| has_host);
    let cpus = recorded.and_then(|h| h.cpus).unwrap_or(UNLIMITED_CPUS);
    let busy_cores = match recorded {
        Some(h) => h.busy_cores.unwrap_or_else(|| {
            *unknown_busy += 1;
            0.0
        }),
        None if has_host => {
            *unknown_busy += 1;
            0.0
        }
        None => 0.0,
    };
    let busy_ticks = ((busy_cores / f64::from(cpus)).clamp(0.0, 1.0) * SIM_TICKS as f64).round();
    let mem_available_kib = recorded
        .and_then(|h| h.mem_available_kib)
        .unwrap_or(UNLIMITED_MEM_KIB);
    (
        HostSample {
            cpus: Some(cpus),
            cpu_ticks: Some(CpuTicks {
                busy: busy_ticks as u64,
                total: SIM_TICKS,
            }),
            boot_time: Some(SIM_BOOT),
            mem_total_kib: recorded.and_then(|h| h.mem_total_kib),
            mem_available_kib: Some(mem_available_kib),
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
        cpu_slack: Vec::new(),
        memory_slack: Vec::new(),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// One block of report columns.
struct Cols {
    changes: u32,
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
            "{:>7} {:>9.1} {:>8.1} {:>8.1} {:>9} {:>9} {:>6} {:>8}",
            self.changes,
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
    "changes  over min  cpu min  mem min cpu slack mem slack  peak c  peak MB";

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
        "over min: minutes above an upper threshold (cpu or memory); slack: mean (allocated - used) / allocated"
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
    fn json_lines_are_grouped_into_cycles_by_timestamp_in_time_order() {
        let text = concat!(
            r#"{"kind":"container","ts_usec":20,"vmid":102}"#,
            "\n",
            r#"{"kind":"host","ts_usec":10,"cpus":4}"#,
            "\n",
            r#"{"kind":"container","ts_usec":10,"vmid":102}"#,
            "\n",
            r#"{"kind":"container","ts_usec":10,"vmid":101}"#,
            "\n",
        );
        let h = parse_history(text, 300).unwrap();
        assert_eq!(h.format, "metrics jsonl");
        let shape: Vec<(i64, bool, Vec<u32>)> = h
            .cycles
            .iter()
            .map(|c| {
                (
                    c.ts_usec,
                    c.host.is_some(),
                    c.containers.iter().map(|r| r.vmid).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![(10, true, vec![101, 102]), (20, false, vec![102])]
        );
    }

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
    fn replay_without_host_lines_is_not_held_back_by_headroom() {
        let text = concat!(
            r#"{"kind":"container","ts_usec":0,"vmid":101,"cores":2,"effective_cpus":2.0,"memory_mb":1024,"cpu_percent":95.0,"memory_used_mb":100.0}"#,
            "\n"
        );
        let h = parse_history(text, 300).unwrap();
        let r = run(&Config::default(), &h);
        let c = &r.summary.containers[0];
        assert_eq!((c.start_cores, c.end_cores, c.changes), (2, 4, 1));
        assert_eq!(c.cpu_overload_min, 5.0);
        assert!(r.summary.notes[0].contains("no host lines"));
    }
}
