//! What the model tells the threshold rules about one container this cycle: which figure a cut is
//! sized on (and whether the history lets it happen at all), whether the daily profile or the
//! kernel's pressure figures call for growth ahead of the thresholds, and which anomaly episodes
//! opened. Pure; it updates the container's `CtModel` with this cycle's readings.
//!
//! Rules (thresholds are documented in the README, "The model"):
//! - a cut is sized on the maximum over `scale_down_window` (not the latest reading) and only
//!   when the readings cover the whole window; memory's window is 2.5 times as long
//!   (`MEMORY_WINDOW_PERCENT`: a memory shortfall kills, a CPU one slows); it waits `scale_down_cooldown` after a
//!   scale-up of the resource; it never goes below what the daily profile expects for the next
//!   hour;
//! - no cut while an anomaly episode of the resource is open; no memory cut within 24 h of an OOM
//!   kill or while memory pressure (`some avg10`) is above zero;
//! - an OOM kill grows memory at once; memory `full avg10` ≥ `MEMORY_FULL_STALL` or `some avg10`
//!   ≥ `MEMORY_SOME_STALL` grows memory like being above the upper threshold; CPU `some avg10` ≥
//!   `CPU_SOME_STALL` or throttling for ≥ `THROTTLED_STALL` of the window counts like CPU above
//!   the upper threshold;
//! - the daily profile grows a resource before the hour it expects above the upper threshold.

use crate::config::Limits;
use crate::decide::anomaly::Onset;
use crate::decide::model::{CtModel, Sample, View, OOM_HOLD_USEC};
use crate::decide::plan::{Hold, Resource, Stat};

/// PSI thresholds, percent of wall time in the last 10 s.
pub const MEMORY_FULL_STALL: f64 = 1.0;
pub const MEMORY_SOME_STALL: f64 = 10.0;
pub const CPU_SOME_STALL: f64 = 20.0;
/// Share of the window spent throttled that counts as waiting for CPU.
pub const THROTTLED_STALL: f64 = 0.2;

const USEC_PER_SEC: i64 = 1_000_000;

/// Memory cuts need `scale_down_window` × this / 100 of agreeing history (2.5 ×). Measured on
/// the Bitbrains traces (README "Decision quality"): memory bursts there recur within hours, and a
/// cut after one quiet window was the main source of memory saturation and of re-growths.
pub const MEMORY_WINDOW_PERCENT: u64 = 250;

/// The daily profile forecasts only a step: the next hour's usual level at this many times the
/// current hour's.
pub const PROFILE_STEP: f64 = 3.0;

/// This cycle's figures of one container, as the model takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Inputs {
    pub ts_usec: i64,
    /// Local hour, 0–23.
    pub hour: u32,
    /// Cores of demand and the effective CPUs allocated.
    pub demand_cores: Option<f64>,
    pub alloc_cpus: Option<f64>,
    /// Used MB and the allocation, MB.
    pub used_mb: Option<f64>,
    pub memory_mb: Option<u64>,
    /// Processes OOM-killed since the last cycle.
    pub oom_kills: Option<u64>,
    pub psi_memory_some: Option<f64>,
    pub psi_memory_full: Option<f64>,
    pub psi_cpu_some: Option<f64>,
    /// Share of the window spent throttled, 0–1.
    pub throttled_ratio: Option<f64>,
    /// See `Sample::max_gap_usec`.
    pub max_gap_usec: i64,
}

/// A figure in the resource's unit (cores or MB) and the statistic it is.
pub type Figure = (f64, Stat);

/// The model's word on one resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceAdvice {
    /// What a cut is sized on, or why no cut may happen.
    pub down: Result<Figure, Hold>,
    /// The daily profile's expectation for the next hour (amount, local hour), when above the
    /// latest reading: grows ahead when above the upper threshold, and holds a cut it would undo.
    pub forecast: Option<(f64, u32)>,
    /// A pressure figure at or above its stall threshold: (percent, threshold, statistic).
    pub stalled: Option<(f64, f64, Stat)>,
    /// The recent peak, decayed (`Track::peak_at`), in the resource's unit.
    pub peak: Option<f64>,
}

impl ResourceAdvice {
    /// No model: cuts follow the latest reading, nothing else.
    pub fn latest(value: f64) -> ResourceAdvice {
        ResourceAdvice {
            down: Ok((value, Stat::Current)),
            forecast: None,
            stalled: None,
            peak: None,
        }
    }
}

/// The model's word on one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub cpu: Option<ResourceAdvice>,
    pub memory: Option<ResourceAdvice>,
    /// Processes OOM-killed since the last cycle (memory grows at once when above 0).
    pub oom_kills: u64,
    /// Anomaly episodes that opened this cycle.
    pub onsets: Vec<(Resource, Onset)>,
}

fn secs(usec: i64) -> u64 {
    u64::try_from(usec.max(0) / USEC_PER_SEC).unwrap_or(0)
}

/// Updates `m` with `x` and returns the advice for this cycle.
pub fn advise(m: &mut CtModel, l: &Limits, x: &Inputs) -> Advice {
    let usec = |secs: u64| {
        i64::try_from(secs)
            .unwrap_or(i64::MAX / 4)
            .saturating_mul(USEC_PER_SEC)
    };
    let win = |resource| window_secs(l, resource);
    let cooldown = usec(l.scale_down_cooldown);
    m.seen_usec = x.ts_usec;
    let oom_kills = x.oom_kills.unwrap_or(0);
    if oom_kills > 0 {
        m.oom_hold_until_usec = Some(x.ts_usec.saturating_add(OOM_HOLD_USEC));
    }
    let mut onsets = Vec::new();
    let mut track = |resource: Resource, value: Option<f64>, alloc: Option<f64>| {
        let t = match resource {
            Resource::Cpu => &mut m.cpu,
            Resource::Memory => &mut m.memory,
        };
        let alloc = alloc?;
        let window = usec(win(resource));
        t.observe(
            Sample {
                ts_usec: x.ts_usec,
                hour: x.hour,
                value,
                alloc,
                max_gap_usec: x.max_gap_usec,
            },
            window,
        );
        let value = value?;
        if let Some(o) = t.detector.observe(x.ts_usec, value) {
            onsets.push((resource, o));
        }
        let view = t.view(x.ts_usec, x.hour, window, cooldown);
        Some((value, view, t.detector.score(), t.detector.active()))
    };
    let cpu = track(Resource::Cpu, x.demand_cores, x.alloc_cpus);
    let memory = track(Resource::Memory, x.used_mb, x.memory_mb.map(|mb| mb as f64));
    let oom_left = m
        .oom_hold_until_usec
        .map_or(0, |until| (until - x.ts_usec).max(0));
    let cpu = cpu.map(|(value, view, score, active)| {
        let mut a = resource_advice(win(Resource::Cpu), value, &view, (score, active));
        a.stalled = cpu_stall(x);
        a
    });
    let memory = memory.map(|(value, view, score, active)| {
        let mut a = resource_advice(win(Resource::Memory), value, &view, (score, active));
        a.stalled = memory_stall(x);
        a.down = memory_holds(a.down, oom_left, x.psi_memory_some);
        a
    });
    Advice {
        cpu,
        memory,
        oom_kills,
        onsets,
    }
}

fn cpu_stall(x: &Inputs) -> Option<(f64, f64, Stat)> {
    if let Some(p) = x.psi_cpu_some.filter(|p| *p >= CPU_SOME_STALL) {
        return Some((p, CPU_SOME_STALL, Stat::Pressure { full: false }));
    }
    x.throttled_ratio
        .filter(|r| *r >= THROTTLED_STALL)
        .map(|r| (r * 100.0, THROTTLED_STALL * 100.0, Stat::Throttled))
}

fn memory_stall(x: &Inputs) -> Option<(f64, f64, Stat)> {
    if let Some(p) = x.psi_memory_full.filter(|p| *p >= MEMORY_FULL_STALL) {
        return Some((p, MEMORY_FULL_STALL, Stat::Pressure { full: true }));
    }
    x.psi_memory_some
        .filter(|p| *p >= MEMORY_SOME_STALL)
        .map(|p| (p, MEMORY_SOME_STALL, Stat::Pressure { full: false }))
}

fn memory_holds(
    down: Result<(f64, Stat), Hold>,
    oom_left_usec: i64,
    psi_some: Option<f64>,
) -> Result<(f64, Stat), Hold> {
    let down = down?;
    if oom_left_usec > 0 {
        return Err(Hold::OomKill {
            left_secs: secs(oom_left_usec),
        });
    }
    match psi_some {
        Some(p) if p > 0.0 => Err(Hold::Pressure { some_avg10: p }),
        _ => Ok(down),
    }
}

/// Seconds of agreeing history a cut of `resource` needs: `scale_down_window`, times
/// `MEMORY_WINDOW_PERCENT` / 100 for memory.
pub fn window_secs(l: &Limits, resource: Resource) -> u64 {
    match resource {
        Resource::Cpu => l.scale_down_window,
        Resource::Memory => l.scale_down_window.saturating_mul(MEMORY_WINDOW_PERCENT) / 100,
    }
}

/// Cut basis and forecast of one resource from its track, with a window of `window` seconds.
fn resource_advice(
    window: u64,
    value: f64,
    view: &View,
    (score, anomaly): (f64, bool),
) -> ResourceAdvice {
    let next_hour = (view.hour + 1) % 24;
    // Only a clear daily step counts: the next hour expected at `PROFILE_STEP` times this
    // hour's usual level or more, and above the latest reading.
    let forecast = view
        .forecast_next_hour
        .zip(view.profile_this_hour)
        .filter(|(f, this)| {
            *f > view.window_max.unwrap_or(value).max(value) && *f >= PROFILE_STEP * this
        })
        .map(|(f, _)| (f, next_hour));
    let down = if anomaly {
        Err(Hold::Anomaly { score })
    } else if view.cooldown_left_usec > 0 {
        Err(Hold::Cooldown {
            left_secs: secs(view.cooldown_left_usec),
        })
    } else if window == 0 {
        Ok((value, Stat::Current))
    } else if !view.covered {
        Err(Hold::History {
            covered_secs: secs(view.covered_usec),
            secs: window,
        })
    } else {
        let max = view.window_max.unwrap_or(value).max(value);
        Ok((max, Stat::WindowMax { secs: window }))
    };
    ResourceAdvice {
        down,
        forecast,
        stalled: None,
        peak: view.peak,
    }
}
