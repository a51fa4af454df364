//! The decision-quality benchmark's core: real VM traces (Bitbrains GWA-T-12 "Rnd", read from the
//! shared dataset directory at run time) turned into histories, replayed through the daemon's
//! decision, and scored against two references on the same traces:
//!
//! - a VPA-style recommender: cores = ceil(P90 of the last 24 h of demand × 1.15), memory = peak
//!   used of the last 24 h × 1.15; it starts after one hour of samples, changes at most once an
//!   hour, and only when the cores differ or the memory differs by more than 10 %;
//! - an oracle: each sample gets ceil(demand ÷ upper threshold) cores and ceil(used ÷ upper
//!   threshold) MB.
//!
//! All three are held to the same bounds (`min_cores`..`max_cores`, `min_memory`..`max_memory`)
//! and scored by the same function. Used by `benches/quality.rs` and `tests/quality.rs`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::commands::history::{Cycle, History};
use crate::commands::replay;
use crate::config::Config;
use crate::decide::plan::Managed;
use crate::record::metrics::ContainerRecord;

const USEC_PER_SEC: i64 = 1_000_000;
const HOUR_USEC: i64 = 3600 * USEC_PER_SEC;
const DAY_USEC: i64 = 24 * HOUR_USEC;

/// One VM of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// File stem, e.g. `242`.
    pub name: String,
    pub vmid: u32,
    pub samples: Vec<TraceSample>,
}

/// One row: the VM's own allocation and its load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSample {
    pub ts_usec: i64,
    /// The VM's cores.
    pub cores: u32,
    /// Provisioned memory, MB.
    pub memory_mb: u64,
    /// usage % × cores / 100, usage clamped to 0–100 %.
    pub demand_cores: f64,
    /// Used MB; a 0 reading ("not reported") holds the last reported value; `None` before the
    /// first report.
    pub used_mb: Option<f64>,
}

/// Parses one Bitbrains CSV (`;`-separated, header line, values may carry a leading tab).
pub fn parse_bitbrains(text: &str, name: &str, vmid: u32) -> Result<Trace> {
    let mut samples = Vec::new();
    let mut last_used = None;
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<f64> = line
            .split(';')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("line {}: not five numbers", i + 1))?;
        let [ts, cores, usage, mem_kb, used_kb] = f[..] else {
            anyhow::bail!("line {}: {} fields, want 5", i + 1, f.len());
        };
        if used_kb > 0.0 {
            last_used = Some(used_kb / 1024.0);
        }
        samples.push(TraceSample {
            ts_usec: ts as i64 * USEC_PER_SEC,
            cores: cores as u32,
            memory_mb: (mem_kb / 1024.0).round() as u64,
            demand_cores: usage.clamp(0.0, 100.0) * cores / 100.0,
            used_mb: last_used,
        });
    }
    samples.sort_by_key(|s| s.ts_usec);
    Ok(Trace {
        name: name.to_string(),
        vmid,
        samples,
    })
}

/// Reads every `<n>.csv` of `dir`, in name order; VM `n` becomes container `1000 + n`.
pub fn load_bitbrains_dir(dir: &Path) -> Result<Vec<Trace>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let path = dir.join(n);
            let stem = n.trim_end_matches(".csv");
            let vmid = 1000 + stem.parse::<u32>().unwrap_or(0);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            parse_bitbrains(&text, stem, vmid).with_context(|| format!("in {}", path.display()))
        })
        .collect()
}

/// The trace as a metrics history: one container line per row, starting at the VM's own
/// allocation.
pub fn history_of(trace: &Trace) -> History {
    let cycles = trace
        .samples
        .iter()
        .map(|s| Cycle {
            ts_usec: s.ts_usec,
            host: None,
            containers: vec![ContainerRecord {
                ts_usec: s.ts_usec,
                vmid: trace.vmid,
                name: Some(trace.name.clone()),
                managed: Some(Managed::Yes),
                cores: Some(s.cores),
                effective_cpus: Some(f64::from(s.cores)),
                memory_mb: Some(s.memory_mb),
                cpu_percent: Some(s.demand_cores / f64::from(s.cores.max(1)) * 100.0),
                memory_used_mb: s.used_mb,
                ..ContainerRecord::default()
            }],
        })
        .collect();
    History {
        format: "bitbrains csv",
        cycles,
        ..History::default()
    }
}

/// The allocation in force during one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alloc {
    pub cores: f64,
    pub memory_mb: u64,
}

/// The daemon's allocations over `trace`, replayed with `cfg`, and the replay itself.
pub fn daemon_allocs(cfg: &Config, trace: &Trace) -> (Vec<Alloc>, replay::Run) {
    let run = replay::run(cfg, &history_of(trace));
    let allocs = run
        .series
        .get(&trace.vmid)
        .map(|points| {
            points
                .iter()
                .map(|p| Alloc {
                    cores: p.alloc_cpus,
                    memory_mb: p.alloc_memory_mb,
                })
                .collect()
        })
        .unwrap_or_default();
    (allocs, run)
}

fn clamp_cores(cfg: &Config, vmid: u32, cores: f64) -> f64 {
    let l = cfg.limits_for(vmid);
    cores
        .max(f64::from(l.min_cores))
        .min(f64::from(l.max_cores))
}

fn clamp_mb(cfg: &Config, vmid: u32, mb: f64) -> u64 {
    let l = cfg.limits_for(vmid);
    let mb = mb.max(l.min_memory as f64);
    let mb = l.max_memory.map_or(mb, |max| mb.min(max as f64));
    mb.ceil() as u64
}

/// The oracle: each sample sized to its own demand at the upper threshold.
pub fn oracle_allocs(cfg: &Config, trace: &Trace) -> Vec<Alloc> {
    let l = cfg.limits_for(trace.vmid);
    let mut last_mb = trace.samples.first().map_or(0, |s| s.memory_mb);
    trace
        .samples
        .iter()
        .map(|s| {
            let cores = (s.demand_cores / (l.cpu_upper_threshold / 100.0) - 1e-9).ceil();
            if let Some(used) = s.used_mb {
                let mb = used / (l.memory_upper_threshold / 100.0);
                last_mb = clamp_mb(cfg, trace.vmid, mb);
            }
            Alloc {
                cores: clamp_cores(cfg, trace.vmid, cores),
                memory_mb: last_mb,
            }
        })
        .collect()
}

/// The VPA-style recommender: sample k's allocation is decided from samples before k.
pub fn vpa_allocs(cfg: &Config, trace: &Trace) -> Vec<Alloc> {
    let Some(first) = trace.samples.first() else {
        return Vec::new();
    };
    let mut alloc = Alloc {
        cores: f64::from(first.cores),
        memory_mb: first.memory_mb,
    };
    let mut window: VecDeque<&TraceSample> = VecDeque::new();
    let mut last_change: Option<i64> = None;
    let mut out = Vec::with_capacity(trace.samples.len());
    for s in &trace.samples {
        while window
            .front()
            .is_some_and(|w| w.ts_usec <= s.ts_usec - DAY_USEC)
        {
            window.pop_front();
        }
        let started = s.ts_usec - first.ts_usec >= HOUR_USEC;
        let may_change = last_change.map_or(true, |t| s.ts_usec - t >= HOUR_USEC);
        if started && may_change && !window.is_empty() {
            let want = vpa_recommend(cfg, trace.vmid, &window, alloc.memory_mb);
            let cores_differ = want.cores != alloc.cores;
            let mem_differs = (want.memory_mb as f64 - alloc.memory_mb as f64).abs()
                > 0.1 * alloc.memory_mb as f64;
            if cores_differ || mem_differs {
                alloc = want;
                last_change = Some(s.ts_usec);
            }
        }
        out.push(alloc);
        window.push_back(s);
    }
    out
}

fn vpa_recommend(cfg: &Config, vmid: u32, window: &VecDeque<&TraceSample>, mb: u64) -> Alloc {
    let mut demand: Vec<f64> = window.iter().map(|s| s.demand_cores).collect();
    demand.sort_by(f64::total_cmp);
    // Nearest-rank P90.
    let rank = ((0.9 * demand.len() as f64).ceil() as usize).clamp(1, demand.len());
    let p90 = demand[rank - 1];
    let cores = (p90 * 1.15 - 1e-9).ceil();
    let peak = window
        .iter()
        .filter_map(|s| s.used_mb)
        .fold(None, |m: Option<f64>, u| Some(m.map_or(u, |m| m.max(u))));
    Alloc {
        cores: clamp_cores(cfg, vmid, cores),
        memory_mb: peak.map_or(mb, |p| clamp_mb(cfg, vmid, p * 1.15)),
    }
}

/// How a policy did over one or more traces.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Score {
    pub changes: u64,
    pub flaps: u64,
    pub saturated_cpu_min: f64,
    pub saturated_memory_min: f64,
    pub container_min: f64,
    pub core_hours: f64,
    pub mb_hours: f64,
    pub memory_cuts_below_use: u64,
}

impl Score {
    /// Saturated minutes (cpu + memory) per container-minute, percent.
    pub fn saturated_percent(&self) -> f64 {
        if self.container_min > 0.0 {
            (self.saturated_cpu_min + self.saturated_memory_min) / self.container_min * 100.0
        } else {
            0.0
        }
    }

    pub fn add(&mut self, o: &Score) {
        self.changes += o.changes;
        self.flaps += o.flaps;
        self.saturated_cpu_min += o.saturated_cpu_min;
        self.saturated_memory_min += o.saturated_memory_min;
        self.container_min += o.container_min;
        self.core_hours += o.core_hours;
        self.mb_hours += o.mb_hours;
        self.memory_cuts_below_use += o.memory_cuts_below_use;
    }
}

/// Direction of the last change of one resource and when.
#[derive(Clone, Copy)]
struct Last {
    ts: i64,
    up: bool,
}

/// Counts a change of one resource; true when it reverses the previous one within an hour.
fn flap(last: &mut Option<Last>, ts: i64, up: bool) -> bool {
    let is = last.is_some_and(|l| l.up != up && ts - l.ts <= replay::FLAP_WINDOW_USEC);
    *last = Some(Last { ts, up });
    is
}

/// Scores `allocs` (one per sample) against the trace's load, the way `replay` does: a sample
/// counts for the time to the next one, at most two poll intervals (the last for one).
pub fn score(cfg: &Config, trace: &Trace, allocs: &[Alloc]) -> Score {
    let poll = cfg.poll_interval as f64;
    let mut sc = Score::default();
    let (mut last_cpu, mut last_mem) = (None, None);
    for (i, (s, a)) in trace.samples.iter().zip(allocs).enumerate() {
        let secs = trace
            .samples
            .get(i + 1)
            .map_or(poll, |n| {
                ((n.ts_usec - s.ts_usec) as f64 / 1e6).min(2.0 * poll)
            })
            .max(0.0);
        let min = secs / 60.0;
        sc.container_min += min;
        sc.core_hours += a.cores * min / 60.0;
        sc.mb_hours += a.memory_mb as f64 * min / 60.0;
        if s.demand_cores > a.cores + 1e-9 {
            sc.saturated_cpu_min += min;
        }
        if s.used_mb.is_some_and(|u| u > a.memory_mb as f64) {
            sc.saturated_memory_min += min;
        }
        let Some(prev) = i.checked_sub(1).map(|j| (allocs[j], &trace.samples[j])) else {
            continue;
        };
        let (pa, ps) = prev;
        if pa == *a {
            continue;
        }
        sc.changes += 1;
        if pa.cores != a.cores {
            sc.flaps += u64::from(flap(&mut last_cpu, s.ts_usec, a.cores > pa.cores));
        }
        if pa.memory_mb != a.memory_mb {
            let up = a.memory_mb > pa.memory_mb;
            sc.flaps += u64::from(flap(&mut last_mem, s.ts_usec, up));
            if !up && ps.used_mb.is_some_and(|u| (a.memory_mb as f64) < u) {
                sc.memory_cuts_below_use += 1;
            }
        }
    }
    sc
}

/// The benchmark's result: one total score per policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Quality {
    pub daemon: Score,
    pub vpa: Score,
    pub oracle: Score,
}

/// Runs the three policies over every trace.
pub fn evaluate(cfg: &Config, traces: &[Trace]) -> Quality {
    let mut q = Quality::default();
    for t in traces {
        let (daemon, _) = daemon_allocs(cfg, t);
        q.daemon.add(&score(cfg, t, &daemon));
        q.vpa.add(&score(cfg, t, &vpa_allocs(cfg, t)));
        q.oracle.add(&score(cfg, t, &oracle_allocs(cfg, t)));
    }
    q
}

/// The table the README quotes.
pub fn render(q: &Quality) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| policy | changes | saturated % (cpu + mem) | flaps | core-hours % of oracle | MB-hours % of oracle | memory cuts below use |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, s) in [
        ("daemon", &q.daemon),
        ("VPA-style", &q.vpa),
        ("oracle", &q.oracle),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.2} ({:.2} + {:.2}) | {} | {:.1} | {:.1} | {} |",
            s.changes,
            s.saturated_percent(),
            s.saturated_cpu_min / s.container_min.max(1e-9) * 100.0,
            s.saturated_memory_min / s.container_min.max(1e-9) * 100.0,
            s.flaps,
            s.core_hours / q.oracle.core_hours.max(1e-9) * 100.0,
            s.mb_hours / q.oracle.mb_hours.max(1e-9) * 100.0,
            s.memory_cuts_below_use
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitbrains_rows_become_demand_cores_and_held_used_memory() {
        let text = "Timestamp [ms];\tCPU cores;\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB]\n\
                    1000;\t4;\t50.0;\t4194304.0;\t1048576.0\n\
                    1300;\t4;\t130.0;\t4194304.0;\t0.0\n";
        let t = parse_bitbrains(text, "7", 1007).unwrap();
        assert_eq!(t.samples.len(), 2);
        assert_eq!(t.samples[0].demand_cores, 2.0);
        assert_eq!(t.samples[0].memory_mb, 4096);
        assert_eq!(t.samples[0].used_mb, Some(1024.0));
        // Turbo above 100 % is clamped; memory 0 = not reported: the last value holds.
        assert_eq!(t.samples[1].demand_cores, 4.0);
        assert_eq!(t.samples[1].used_mb, Some(1024.0));
        assert_eq!(t.samples[1].ts_usec, 1_300_000_000);
    }

    fn trace(rows: &[(f64, f64)]) -> Trace {
        Trace {
            name: "t".into(),
            vmid: 1001,
            samples: rows
                .iter()
                .enumerate()
                .map(|(i, &(d, u))| TraceSample {
                    ts_usec: i as i64 * 300 * USEC_PER_SEC,
                    cores: 2,
                    memory_mb: 4096,
                    demand_cores: d,
                    used_mb: Some(u),
                })
                .collect(),
        }
    }

    #[test]
    fn oracle_sizes_each_sample_at_the_upper_threshold_within_bounds() {
        let t = trace(&[(1.7, 1000.0), (0.1, 100.0)]);
        let a = oracle_allocs(&Config::default(), &t);
        // 1.7 / 0.8 = 2.125 -> 3 cores; 1000 / 0.8 = 1250 MB. Then min_cores 1, min_memory 512.
        assert_eq!(
            a[0],
            Alloc {
                cores: 3.0,
                memory_mb: 1250
            }
        );
        assert_eq!(
            a[1],
            Alloc {
                cores: 1.0,
                memory_mb: 512
            }
        );
    }

    #[test]
    fn vpa_waits_an_hour_then_changes_at_most_hourly() {
        // 1 core of demand and 1000 MB: after 12 samples (1 h) -> ceil(1.15) = 2 cores,
        // 1150 MB; the next change may come an hour later.
        let t = trace(&vec![(1.0, 1000.0); 30]);
        let a = vpa_allocs(&Config::default(), &t);
        assert_eq!(
            a[11],
            Alloc {
                cores: 2.0,
                memory_mb: 4096
            }
        );
        assert_eq!(
            a[12],
            Alloc {
                cores: 2.0,
                memory_mb: 1150
            }
        );
        assert_eq!(a[29], a[12]);
    }

    #[test]
    fn score_counts_saturation_changes_flaps_and_hours() {
        let t = trace(&[(3.0, 1000.0), (1.0, 1000.0), (1.0, 1000.0)]);
        let allocs = [
            Alloc {
                cores: 2.0,
                memory_mb: 1024,
            },
            Alloc {
                cores: 4.0,
                memory_mb: 1024,
            },
            Alloc {
                cores: 2.0,
                memory_mb: 512,
            },
        ];
        let s = score(&Config::default(), &t, &allocs);
        assert_eq!(s.saturated_cpu_min, 5.0);
        assert_eq!(s.saturated_memory_min, 5.0);
        assert_eq!(s.changes, 2);
        assert_eq!(s.flaps, 1);
        assert_eq!(s.memory_cuts_below_use, 1);
        assert_eq!(s.core_hours, (2.0 + 4.0 + 2.0) * 5.0 / 60.0);
        assert_eq!(s.container_min, 15.0);
    }
}
