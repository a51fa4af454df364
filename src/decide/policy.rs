//! The decision: `(config, snapshot, previous state, now) -> Plan`. Pure: it never logs, never
//! reads the clock, never touches a file.
//!
//! A cycle plans scale-downs first (they need no host headroom), leaves out resources on a manual
//! hold (`state.holds`), then hands out the host headroom to scale-ups by tier priority, then by
//! how far the container is above its threshold, then VMID.
//! Every step is clamped to the container's bounds rather than refused.

use std::cmp::Ordering;

use chrono::{NaiveDateTime, Timelike};

use crate::config::{Config, Limits};
use crate::decide::advice::{self, Advice, Inputs, ResourceAdvice};
use crate::decide::hold;
use crate::decide::model::Models;
use crate::decide::placement;
use crate::decide::plan::{
    AnomalyOnset, Bound, Change, Headroom, Hold, Managed, Note, Observation, Plan, Reading, Reason,
    Resource, Rule, Stat, Step,
};
use crate::read::measure;
use crate::read::snapshot::{self, ContainerSample, Snapshot, State};

/// Tolerance for float noise in the roundings: 2 × 0.5 / 0.5 must give 2 cores, not 3.
const EPSILON: f64 = 1e-9;

/// A memory cut never goes below the kernel's working set (`memory.current − inactive_file`) plus
/// this share of it, and never by less than `WORKING_SET_MARGIN_MIN_MB`: active page cache that
/// is squeezed out comes straight back as refaults, and a process inside may be about to grow.
const WORKING_SET_MARGIN: f64 = 0.10;
const WORKING_SET_MARGIN_MIN_MB: f64 = 64.0;

/// Energy mode packs containers to this many points below the upper threshold, not to the
/// threshold itself, and only cuts when the basis is below that level: a ±5 % wobble around the
/// target is no change (4 -> 2 -> 4 cores on three cycles was the old behaviour).
pub const ENERGY_HYSTERESIS: f64 = 10.0;

/// Whether energy mode is in force at local `hour`: `[off_peak_start, off_peak_end)`, wrapping past
/// midnight when start > end. Always false unless `energy_mode` is set.
///
/// `off_peak_start == off_peak_end` is an empty window (never in force), not a whole day: a
/// 24-hour energy mode would have to be asked for explicitly, and this reading cannot surprise.
pub fn energy_window(cfg: &Config, hour: u32) -> bool {
    if !cfg.energy_mode {
        return false;
    }
    let (start, end) = (cfg.off_peak_start, cfg.off_peak_end);
    match start.cmp(&end) {
        Ordering::Less => start <= hour && hour < end,
        Ordering::Greater => hour >= start || hour < end,
        Ordering::Equal => false,
    }
}

/// Decides every container's change for this cycle with the threshold rules alone, as if
/// `scale_down_window` and `scale_down_cooldown` were 0 and no history were kept: cuts follow the
/// latest reading. `now` is local time. The daemon, `status`, `replay` and the demo use
/// `decide_with_model`.
pub fn decide(cfg: &Config, snap: &Snapshot, state: &State, now: NaiveDateTime) -> Plan {
    decide_inner(cfg, snap, state, None, now)
}

/// Decides every container's change for this cycle, with the model: `models` learns this cycle's
/// readings (containers not seen for a day are forgotten) and shapes the decision (see
/// `advice`). `now` is local time; the snapshot's `taken_at_usec` is the model's clock.
///
/// A previous sample (container or host) older than 2 × `poll_interval` is not used. Scale-ups of a
/// resource whose host headroom is unknown are skipped with a note; scale-downs still happen.
pub fn decide_with_model(
    cfg: &Config,
    snap: &Snapshot,
    state: &State,
    models: &mut Models,
    now: NaiveDateTime,
) -> Plan {
    let plan = decide_inner(cfg, snap, state, Some(&mut *models), now);
    models.forget_older_than(snap.taken_at_usec);
    plan
}

fn decide_inner(
    cfg: &Config,
    snap: &Snapshot,
    state: &State,
    mut models: Option<&mut Models>,
    now: NaiveDateTime,
) -> Plan {
    let energy = energy_window(cfg, now.hour());
    let max_age_usec = snapshot::max_sample_age_usec(cfg.poll_interval);
    let host_cpus = snap.host.cpus;
    let usable_cores = host_cpus.map(|n| usable_cores(n, cfg.reserve_cpu_percent));

    let host_prev = state.fresh_host(snap.taken_at_usec, max_age_usec);
    let cpu_headroom = match (
        usable_cores,
        measure::host_busy_cores(&snap.host, host_prev),
    ) {
        (Some(usable), Some(busy)) => Some(usable - busy),
        _ => None,
    };
    let memory_headroom_mb = snap.host.mem_available_kib.map(|kib| {
        i64::try_from(kib / 1024)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(cfg.reserve_memory_mb).unwrap_or(i64::MAX))
    });
    let host = HostView {
        cpus: host_cpus,
        usable_whole_cores: usable_cores.map(|u| (u + EPSILON).floor() as u32),
        max_age_usec,
        energy,
        model: models.is_some(),
    };

    let mut containers: Vec<&ContainerSample> = snap.containers.iter().collect();
    containers.sort_by_key(|c| c.vmid);

    let mut plan = Plan::default();
    let mut wants = Vec::new();
    for c in containers {
        let observation = observe(cfg, snap, state, c, &host);
        let advice = models.as_deref_mut().map(|m| {
            let inputs = model_inputs(snap, state, c, &observation, &host, now.hour());
            let ct = m.containers.entry(c.vmid).or_default();
            advice::advise(ct, &cfg.limits_for(c.vmid), &inputs)
        });
        if let Some(a) = &advice {
            plan.anomalies
                .extend(a.onsets.iter().map(|(resource, o)| AnomalyOnset {
                    vmid: c.vmid,
                    resource: *resource,
                    onset: *o,
                }));
        }
        let want = assess(
            cfg,
            c,
            &observation,
            advice.as_ref(),
            &host,
            &mut plan.notes,
        );
        plan.observations.push(observation);
        let now_usec = snap.taken_at_usec;
        wants.extend(want.map(|w| without_held(w, state, now_usec, &mut plan.notes)));
    }

    grant(&mut wants, Resource::Cpu, cpu_headroom, &mut plan.notes);
    // MB amounts are far below 2^53, so the float headroom is exact.
    let memory_headroom_mb = memory_headroom_mb.map(|mb| mb as f64);
    grant(
        &mut wants,
        Resource::Memory,
        memory_headroom_mb,
        &mut plan.notes,
    );

    plan.changes
        .extend(wants.into_iter().filter_map(Want::into_change));
    // Grant notes are written in grant order; readers expect VMID order.
    plan.notes.sort_by_key(|n| n.vmid);
    plan.headroom = Headroom {
        cores: cpu_headroom,
        memory_mb: memory_headroom_mb,
    };
    plan.shortfalls = placement::shortfalls(&plan.notes, &plan.observations);
    plan
}

/// `want` without the moves of resources on a manual hold, each with its note. Dropped before the
/// grants: a held scale-up that took host headroom would starve another container for the whole
/// hold while never being applied.
fn without_held(mut want: Want, state: &State, now_usec: i64, notes: &mut Vec<Note>) -> Want {
    for resource in [Resource::Cpu, Resource::Memory] {
        if want.slot(resource).is_none() {
            continue;
        }
        if let Some(note) = hold::held_note(&state.holds, want.vmid, resource, now_usec) {
            *want.slot(resource) = None;
            notes.push(note);
        }
    }
    want
}

/// Host figures every container's decision needs.
struct HostView {
    cpus: Option<u32>,
    /// floor(host CPUs × (100 − reserve) / 100): no container gets more cores than this.
    usable_whole_cores: Option<u32>,
    max_age_usec: i64,
    energy: bool,
    /// Whether the model shapes this decision (`decide_with_model`).
    model: bool,
}

/// What one managed container would like this cycle, before host headroom is handed out.
struct Want {
    vmid: u32,
    priority: i64,
    core_min_increment: u32,
    memory_min_increment: u64,
    cores: Option<Move>,
    memory: Option<Move>,
}

impl Want {
    fn slot(&mut self, resource: Resource) -> &mut Option<Move> {
        match resource {
            Resource::Cpu => &mut self.cores,
            Resource::Memory => &mut self.memory,
        }
    }

    fn min_increment(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Cpu => u64::from(self.core_min_increment),
            Resource::Memory => self.memory_min_increment,
        }
    }

    /// The change this want becomes after the grants; `None` when nothing is left to move.
    fn into_change(self) -> Option<Change> {
        if self.cores.is_none() && self.memory.is_none() {
            return None;
        }
        let reasons = [&self.cores, &self.memory]
            .into_iter()
            .flatten()
            .map(Move::reason)
            .collect();
        Some(Change {
            vmid: self.vmid,
            // Core amounts start as u32 and are only ever lowered towards `from`.
            cores: self.cores.map(|m| Step {
                from: u32::try_from(m.from).unwrap_or(u32::MAX),
                to: u32::try_from(m.to).unwrap_or(u32::MAX),
            }),
            memory_mb: self.memory.map(|m| Step {
                from: m.from,
                to: m.to,
            }),
            reasons,
        })
    }
}

/// A move of one resource, in cores or MB.
struct Move {
    from: u64,
    to: u64,
    /// Percent above the upper threshold; orders scale-ups. Meaningless for scale-downs.
    over: f64,
    /// The measurement and the rule it met.
    reading: Reading,
    /// Cut down to fit host headroom.
    cut: bool,
}

impl Move {
    fn is_up(&self) -> bool {
        self.to > self.from
    }

    fn reason(&self) -> Reason {
        Reason::Scaled {
            reading: self.reading,
            from: self.from,
            to: self.to,
            cut: self.cut,
        }
    }
}

fn reading(resource: Resource, percent: f64, threshold: f64, rule: Rule) -> Reading {
    Reading {
        resource,
        percent,
        threshold,
        rule,
        stat: Stat::Current,
    }
}

/// Host CPUs left to containers after the reserve (fractional).
fn usable_cores(host_cpus: u32, reserve_cpu_percent: f64) -> f64 {
    // Multiply before dividing so that 10 CPUs with 10 % reserve is exactly 9.
    f64::from(host_cpus) * (100.0 - reserve_cpu_percent) / 100.0
}

/// Smallest whole amount that carries `used` at `target_percent` of it.
fn size_for(used: f64, target_percent: f64) -> f64 {
    (used / (target_percent / 100.0) - EPSILON).ceil().max(0.0)
}

fn managed_of(cfg: &Config, c: &ContainerSample) -> Managed {
    match &c.conf {
        None => Managed::NoConf,
        Some(_) if cfg.is_ignored(c.vmid) => Managed::Ignored,
        Some(conf) if conf.opted_out() => Managed::OptedOut,
        Some(conf) if conf.lock.is_some() => Managed::Locked,
        Some(_) => Managed::Yes,
    }
}

/// Why a container that is not `Managed::Yes` is left alone.
fn unmanaged_reason(managed: Managed, c: &ContainerSample) -> Reason {
    match managed {
        Managed::Yes | Managed::NoConf => Reason::NoConf,
        Managed::Ignored => Reason::Ignored,
        Managed::OptedOut => Reason::OptedOut,
        Managed::Locked => Reason::Locked {
            lock: c
                .conf
                .as_ref()
                .and_then(|k| k.lock.clone())
                .unwrap_or_default(),
        },
    }
}

/// What was measured of one container, managed or not.
fn observe(
    cfg: &Config,
    snap: &Snapshot,
    state: &State,
    c: &ContainerSample,
    host: &HostView,
) -> Observation {
    let conf = c.conf.as_ref();
    let cpu_percent = conf
        .and_then(|k| measure::effective_cpus(k, host.cpus))
        .and_then(|eff| {
            measure::cpu_percent(
                c,
                snap.taken_at_usec,
                snap.host.boot_time,
                state.containers.get(&c.vmid),
                eff,
                host.max_age_usec,
            )
        });
    let memory_used_mb = measure::memory_used_mb(c);
    let memory_mb = conf.map(|k| k.memory_mb);
    let memory_percent = match (memory_used_mb, memory_mb) {
        (Some(used), Some(mb)) if mb > 0 => Some(used / mb as f64 * 100.0),
        _ => None,
    };
    Observation {
        vmid: c.vmid,
        name: conf.and_then(|k| k.hostname.clone()),
        tier: cfg.tier_of(c.vmid).map(str::to_string),
        managed: managed_of(cfg, c),
        cores: conf.and_then(|k| k.cores.or(host.cpus)),
        memory_mb,
        cpu_percent,
        memory_used_mb,
        memory_percent,
    }
}

/// What the model takes of one container this cycle.
fn model_inputs(
    snap: &Snapshot,
    state: &State,
    c: &ContainerSample,
    o: &Observation,
    host: &HostView,
    hour: u32,
) -> Inputs {
    let alloc_cpus = c
        .conf
        .as_ref()
        .and_then(|k| measure::effective_cpus(k, host.cpus));
    let rates = measure::counter_rates(
        c,
        snap.taken_at_usec,
        snap.host.boot_time,
        state.containers.get(&c.vmid),
        host.max_age_usec,
    );
    Inputs {
        ts_usec: snap.taken_at_usec,
        hour,
        demand_cores: o.cpu_percent.zip(alloc_cpus).map(|(p, e)| p * e / 100.0),
        alloc_cpus,
        used_mb: o.memory_used_mb,
        memory_mb: o.memory_mb,
        oom_kills: rates.oom_kills,
        psi_memory_some: c.extra.psi_memory_some_avg10,
        psi_memory_full: c.extra.psi_memory_full_avg10,
        psi_cpu_some: c.extra.psi_cpu_some_avg10,
        throttled_ratio: rates.throttled_ratio,
        max_gap_usec: host.max_age_usec,
    }
}

/// Works out the moves a container wants, when it is managed. Without `advice` (no model) cuts
/// follow the latest reading.
fn assess(
    cfg: &Config,
    c: &ContainerSample,
    observation: &Observation,
    advice: Option<&Advice>,
    host: &HostView,
    notes: &mut Vec<Note>,
) -> Option<Want> {
    let Observation {
        managed,
        cores,
        memory_mb,
        cpu_percent,
        memory_used_mb,
        memory_percent,
        ..
    } = *observation;
    let effective = c
        .conf
        .as_ref()
        .and_then(|k| measure::effective_cpus(k, host.cpus));
    let working_set_mb = measure::memory_working_set_mb(c);

    if managed != Managed::Yes {
        notes.push(Note {
            vmid: c.vmid,
            reason: unmanaged_reason(managed, c),
        });
        return None;
    }

    let limits = cfg.limits_for(c.vmid);
    let mut note = |reason: Reason| {
        notes.push(Note {
            vmid: c.vmid,
            reason,
        })
    };

    let core_move = match (cores, effective, cpu_percent) {
        (None, _, _) => {
            note(Reason::CoresUnknown);
            None
        }
        (Some(_), _, None) | (Some(_), None, _) => {
            note(Reason::NotMeasured {
                resource: Resource::Cpu,
            });
            None
        }
        (Some(cores), Some(eff), Some(pct)) => {
            let adv = advice
                .and_then(|a| a.cpu)
                .unwrap_or_else(|| ResourceAdvice::latest(eff * pct / 100.0));
            plan_cores(&limits, (cores, eff), pct, &adv, host, &mut note)
        }
    };
    let memory_move = match (memory_mb, memory_used_mb, memory_percent) {
        (Some(mb), Some(used), Some(pct)) => {
            let floor = cut_floor_mb(used, working_set_mb);
            let adv = advice
                .and_then(|a| a.memory)
                .unwrap_or_else(|| ResourceAdvice::latest(used));
            let oom_kills = advice.map_or(0, |a| a.oom_kills);
            let m = MemoryFigures {
                memory_mb: mb,
                used_mb: used,
                floor_mb: floor,
                pct,
                oom_kills,
                windowed: host.model && limits.scale_down_window > 0,
            };
            plan_memory(&limits, &m, &adv, host.energy, &mut note)
        }
        _ => {
            note(Reason::NotMeasured {
                resource: Resource::Memory,
            });
            None
        }
    };

    Some(Want {
        vmid: c.vmid,
        priority: limits.priority,
        core_min_increment: limits.core_min_increment,
        memory_min_increment: limits.memory_min_increment,
        cores: core_move,
        memory: memory_move,
    })
}

/// The core count a container should move to, before host headroom. `None` = no change.
/// `(cores, effective_cpus)`: the core count and the CPUs `pct` is a percent of.
fn plan_cores(
    l: &Limits,
    (cores, effective_cpus): (u32, f64),
    pct: f64,
    adv: &ResourceAdvice,
    host: &HostView,
    note: &mut impl FnMut(Reason),
) -> Option<Move> {
    let upper = l.cpu_upper_threshold;
    let demand = effective_cpus * pct / 100.0;
    let of = |cores_x: f64| cores_x / effective_cpus * 100.0;
    let up = if pct > upper {
        Some((reading(Resource::Cpu, pct, upper, Rule::AboveUpper), demand))
    } else if let Some((p, threshold, stat)) = adv.stalled {
        // Waiting for CPU: `core_min_increment` more cores at least (`cores_up`), whatever the
        // usage says.
        let r = reading(Resource::Cpu, p, threshold, Rule::Stalled).with(stat);
        Some((r, demand))
    } else {
        adv.forecast
            .filter(|(f, _)| of(*f) > upper)
            .map(|(f, hour)| {
                let r = reading(Resource::Cpu, of(f), upper, Rule::AboveUpper);
                (r.with(Stat::Forecast { hour }), f)
            })
    };
    if let Some((reading, demand)) = up {
        return cores_up(l, (cores, effective_cpus), reading, demand, host, note);
    }
    let pack = if host.energy {
        Some(Rule::BelowUpperEnergy)
    } else if host.model && l.scale_down_window > 0 {
        Some(Rule::BelowPack)
    } else {
        None
    };
    let current = cpu_cut(l, cores, demand, pct, pack);
    let (amount, stat) = match adv.down {
        Ok(basis) => basis,
        Err(hold) => {
            if let Some((_, reading)) = current {
                note(Reason::CutHeld { reading, hold });
            }
            return None;
        }
    };
    let Some((to, reading)) = cpu_cut(l, cores, amount, of(amount), pack) else {
        let threshold = if pack.is_some() {
            pack_level(upper, l.cpu_lower_threshold)
        } else {
            l.cpu_lower_threshold
        };
        if let (Some((_, reading)), Some(hold)) =
            (current, disagreement(stat, of(amount), threshold))
        {
            note(Reason::CutHeld { reading, hold });
        }
        return None;
    };
    Some(Move {
        from: u64::from(cores),
        to: u64::from(to),
        over: 0.0,
        reading: reading.with(stat),
        cut: false,
    })
}

/// The utilisation cuts pack to in energy mode and with the model: `ENERGY_HYSTERESIS` points
/// below the upper threshold, never below the middle of the band.
fn pack_level(upper: f64, lower: f64) -> f64 {
    (upper - ENERGY_HYSTERESIS).max((upper + lower) / 2.0)
}

/// A hold when the daily profile expects the next hour to need more than `to` itself: the cut
/// would saturate within the hour. (Memory only: for CPU the saturation it saves on the
/// datasets costs more core-hours than it is worth, and a CPU shortfall slows, it does not kill.)
fn forecast_hold(adv: &ResourceAdvice, to: f64) -> Option<Hold> {
    let (f, hour) = adv.forecast?;
    let percent = f / to.max(1e-9) * 100.0;
    (percent > 100.0).then_some(Hold::Forecast { percent, hour })
}

/// Why the model's basis, `percent` of the allocation as `stat`, does not agree with a cut
/// below `threshold`.
fn disagreement(stat: Stat, percent: f64, threshold: f64) -> Option<Hold> {
    match stat {
        Stat::WindowMax { secs } => Some(Hold::Window {
            percent,
            threshold,
            secs,
        }),
        _ => None,
    }
}

/// The cut `demand` cores at `pct` % of the allocation call for: below the lower threshold to
/// the middle of the band, or when packing (energy mode, or the model with a window) below
/// `pack_level` to that level, which then has to free a whole core. `None` = no cut.
fn cpu_cut(
    l: &Limits,
    cores: u32,
    demand: f64,
    pct: f64,
    pack: Option<Rule>,
) -> Option<(u32, Reading)> {
    let (upper, lower) = (l.cpu_upper_threshold, l.cpu_lower_threshold);
    let mid = (upper + lower) / 2.0;
    let level = pack_level(upper, lower);
    let (target_percent, reading) = if let Some(rule) = pack.filter(|_| pct < level) {
        (level, reading(Resource::Cpu, pct, level, rule))
    } else if pct < lower {
        (mid, reading(Resource::Cpu, pct, lower, Rule::BelowLower))
    } else {
        return None;
    };
    let fitting = size_for(demand, target_percent).min(f64::from(u32::MAX)) as u32;
    let to = fitting
        .max(l.min_cores)
        .max(cores.saturating_sub(l.core_max_increment));
    (to < cores).then_some((to, reading))
}

/// A scale-up of cores to carry `demand` at the middle of the band (with the model, at
/// `pack_level`); a stall asks for `core_min_increment` more cores at least.
fn cores_up(
    l: &Limits,
    (cores, effective_cpus): (u32, f64),
    reading: Reading,
    demand: f64,
    host: &HostView,
    note: &mut impl FnMut(Reason),
) -> Option<Move> {
    let (upper, lower) = (l.cpu_upper_threshold, l.cpu_lower_threshold);
    // Cuts are slow with the model, so a scale-up sizes to the packing level, not to the
    // middle of the band: the next cut is far away, the next scale-up is one window.
    let target = if host.model && l.scale_down_window > 0 {
        pack_level(upper, lower)
    } else {
        (upper + lower) / 2.0
    };
    let cpulimit_binds = effective_cpus < f64::from(cores) - EPSILON;
    let mut wanted = size_for(demand, target).min(f64::from(u32::MAX)) as u32;
    if reading.rule == Rule::Stalled && !cpulimit_binds {
        // A stall says demand is more than the usage shows, by an unknown amount: sizing on the
        // usage would keep the cores that stall.
        wanted = wanted.max(cores.saturating_add(l.core_min_increment.max(1)));
    }
    if wanted <= cores {
        // Only a cpulimit below cores gets here: the limit, not the core count, is what binds,
        // and a stall under it is the limit's too.
        if cpulimit_binds {
            note(Reason::CpulimitBinds {
                reading,
                cpulimit: effective_cpus,
            });
        }
        return None;
    }
    // max-then-min rather than clamp: a config built in code without validation must not
    // panic the daemon.
    let step = (wanted - cores)
        .max(l.core_min_increment)
        .min(l.core_max_increment);
    let desired = cores.saturating_add(step).max(l.min_cores).min(l.max_cores);
    if desired <= cores {
        let bound = Bound::MaxCores(l.max_cores);
        note(Reason::AtBound { reading, bound });
        return None;
    }
    let to = match host.usable_whole_cores {
        Some(usable) if usable < desired => {
            let granted = usable.max(cores);
            note(Reason::CutToHostCores {
                reading,
                wanted: u64::from(desired - cores),
                granted: u64::from(granted - cores),
                usable,
            });
            granted
        }
        _ => desired,
    };
    if to <= cores {
        return None;
    }
    Some(Move {
        from: u64::from(cores),
        to: u64::from(to),
        over: (reading.percent - reading.threshold).max(0.0),
        reading,
        cut: false,
    })
}

/// The lowest MB a cut may reach: used memory, and the working set plus its margin. Without a
/// working set (no `inactive_file`) the margin is taken over used memory. The API refuses a
/// `/scale/ram` below the same floor.
pub fn cut_floor_mb(used_mb: f64, working_set_mb: Option<f64>) -> u64 {
    let base = working_set_mb.unwrap_or(used_mb).max(0.0);
    let margin = (base * WORKING_SET_MARGIN).max(WORKING_SET_MARGIN_MIN_MB);
    (base + margin).max(used_mb).ceil() as u64
}

/// One container's memory figures for `plan_memory`.
struct MemoryFigures {
    memory_mb: u64,
    used_mb: f64,
    /// The lowest a cut may go (`cut_floor_mb`).
    floor_mb: u64,
    /// Used memory, percent of `memory_mb`.
    pct: f64,
    /// Processes OOM-killed since the last cycle.
    oom_kills: u64,
    /// Cuts rest on the model's window, not on one reading: they go to their target in one step,
    /// and are due below `memory_cut_level`. Without it a cut takes at most half at once.
    windowed: bool,
}

/// Used memory at or above this percent of the allocation is pinned at it: the kernel reclaims
/// what it can and the rest waits, so the real need is unknown beyond "at least this much".
pub const PINNED_PERCENT: f64 = 95.0;

/// Share of the allocation an OOM kill grows memory by, at least (and at least
/// `memory_min_increment`).
const OOM_GROWTH: f64 = 0.20;

/// The memory a container should move to, before host headroom. `None` = no change.
fn plan_memory(
    l: &Limits,
    m: &MemoryFigures,
    adv: &ResourceAdvice,
    energy: bool,
    note: &mut impl FnMut(Reason),
) -> Option<Move> {
    let upper = l.memory_upper_threshold;
    let of = |mb: f64| mb / m.memory_mb.max(1) as f64 * 100.0;
    let up = if m.oom_kills > 0 {
        let r = reading(
            Resource::Memory,
            m.pct,
            upper,
            Rule::OomKill { kills: m.oom_kills },
        );
        let grow = (m.memory_mb as f64 * OOM_GROWTH).ceil() as u64;
        Some((r, m.used_mb, grow.max(l.memory_min_increment)))
    } else if m.pct > upper {
        let r = reading(Resource::Memory, m.pct, upper, Rule::AboveUpper);
        Some((r, m.used_mb, l.memory_min_increment))
    } else if let Some((p, threshold, stat)) = adv.stalled {
        let r = reading(Resource::Memory, p, threshold, Rule::Stalled).with(stat);
        Some((r, m.used_mb, l.memory_min_increment))
    } else {
        adv.forecast
            .filter(|(f, _)| of(*f) > upper)
            .map(|(f, hour)| {
                let r = reading(Resource::Memory, of(f), upper, Rule::AboveUpper);
                (r.with(Stat::Forecast { hour }), f, l.memory_min_increment)
            })
    };
    if let Some((reading, used, step)) = up {
        // Pinned at the allocation, the reading says only that the need is at least that much:
        // the recent peak is the better guess of how much. It is carried at the upper threshold,
        // not the middle of the band: a known amount, not a trend to grow into.
        let mid = (upper + l.memory_lower_threshold) / 2.0;
        let used = match adv.peak {
            Some(peak) if m.pct >= PINNED_PERCENT => used.max(peak * mid / upper),
            _ => used,
        };
        return memory_up(l, m.memory_mb, reading, used, step, note);
    }
    let current = memory_cut(l, m, m.used_mb, m.pct, energy);
    let (amount, stat) = match adv.down {
        Ok(basis) => basis,
        Err(hold) => {
            if let Some((_, reading)) = current {
                note(Reason::CutHeld { reading, hold });
            }
            return None;
        }
    };
    let Some((to, reading)) = memory_cut(l, m, amount, of(amount), energy) else {
        let threshold = if energy {
            pack_level(upper, l.memory_lower_threshold)
        } else {
            memory_cut_level(l, m.windowed)
        };
        if let (Some((_, reading)), Some(hold)) =
            (current, disagreement(stat, of(amount), threshold))
        {
            note(Reason::CutHeld { reading, hold });
        }
        return None;
    };
    if let Some(hold) = forecast_hold(adv, to as f64) {
        note(Reason::CutHeld { reading, hold });
        return None;
    }
    Some(Move {
        from: m.memory_mb,
        to,
        over: 0.0,
        reading: reading.with(stat),
        cut: false,
    })
}

/// A memory scale-up: at least `step` MB, and enough to carry `used` at the middle of the band.
fn memory_up(
    l: &Limits,
    memory_mb: u64,
    reading: Reading,
    used: f64,
    step: u64,
    note: &mut impl FnMut(Reason),
) -> Option<Move> {
    let mid = (l.memory_upper_threshold + l.memory_lower_threshold) / 2.0;
    let fitting = size_for(used, mid) as u64;
    let mut to = memory_mb
        .saturating_add(step)
        .max(fitting)
        .max(l.min_memory);
    if let Some(max) = l.max_memory {
        to = to.min(max);
    }
    if to <= memory_mb {
        let bound = Bound::MaxMemory(l.max_memory.unwrap_or(memory_mb));
        note(Reason::AtBound { reading, bound });
        return None;
    }
    Some(Move {
        from: memory_mb,
        to,
        over: (reading.percent - reading.threshold).max(0.0),
        reading,
        cut: false,
    })
}

/// The used memory, percent of the allocation, below which a memory cut is due: the lower
/// threshold; on the model's window (`windowed`) also below half the middle of the band (25 % with
/// 80 and 20), so a cut frees at least half of the allocation. The window's maximum is a far
/// safer basis than one reading; cutting on it sooner holds fewer idle MB.
fn memory_cut_level(l: &Limits, windowed: bool) -> f64 {
    let lower = l.memory_lower_threshold;
    if windowed {
        lower.max((l.memory_upper_threshold + lower) / 4.0)
    } else {
        lower
    }
}

/// The cut `used` MB at `pct` % call for, in whole chunks, never below the floor or
/// `min_memory`, and at most half at once unless the model's window agreed. `None` = no cut.
fn memory_cut(
    l: &Limits,
    m: &MemoryFigures,
    used: f64,
    pct: f64,
    energy: bool,
) -> Option<(u64, Reading)> {
    let (upper, lower) = (l.memory_upper_threshold, l.memory_lower_threshold);
    let mid = (upper + lower) / 2.0;
    let energy_target = pack_level(upper, lower);
    let due = memory_cut_level(l, m.windowed);
    let (target_percent, reading) = if energy && pct < energy_target {
        let r = reading(Resource::Memory, pct, energy_target, Rule::BelowUpperEnergy);
        (energy_target, r)
    } else if pct < due {
        (mid, reading(Resource::Memory, pct, due, Rule::BelowLower))
    } else {
        return None;
    };
    let target = (size_for(used, target_percent) as u64)
        .max(l.min_memory)
        .max(m.floor_mb);
    if m.memory_mb <= target {
        return None;
    }
    // Whole chunks only, never past the target; without the model's window never more than half
    // at once.
    let room = m.memory_mb - target;
    let room = if m.windowed {
        room
    } else {
        room.min(m.memory_mb / 2)
    };
    let chunk = l.min_decrease_chunk.max(1);
    let reduction = room / chunk * chunk;
    (reduction > 0).then_some((m.memory_mb - reduction, reading))
}

/// Indexes of the wants with a scale-up picked by `pick`, in grant order: tier priority (higher
/// first), then distance above the threshold (larger first), then VMID.
fn grant_order(wants: &[Want], pick: impl Fn(&Want) -> Option<f64>) -> Vec<usize> {
    let mut order: Vec<(usize, f64)> = wants
        .iter()
        .enumerate()
        .filter_map(|(i, w)| pick(w).map(|over| (i, over)))
        .collect();
    order.sort_by(|(a, a_over), (b, b_over)| {
        let (a, b) = (&wants[*a], &wants[*b]);
        b.priority
            .cmp(&a.priority)
            .then(b_over.total_cmp(a_over))
            .then(a.vmid.cmp(&b.vmid))
    });
    order.into_iter().map(|(i, _)| i).collect()
}

/// Hands out `headroom` (cores or MB; `None` = unknown) of `resource` to the scale-ups in grant
/// order. A scale-up that does not fit is cut to the whole amount left, or dropped when that is
/// below the resource's minimum step; each such decision gets a note. Scale-downs pass untouched.
fn grant(wants: &mut [Want], resource: Resource, headroom: Option<f64>, notes: &mut Vec<Note>) {
    let order = grant_order(wants, |w| {
        let m = match resource {
            Resource::Cpu => &w.cores,
            Resource::Memory => &w.memory,
        };
        m.as_ref().filter(|m| m.is_up()).map(|m| m.over)
    });
    let mut headroom = headroom;
    for i in order {
        let w = &mut wants[i];
        let (vmid, min_increment) = (w.vmid, w.min_increment(resource));
        let slot = w.slot(resource);
        let Some(m) = slot.as_mut() else {
            continue;
        };
        let wanted = m.to - m.from;
        let Some(room) = headroom.as_mut() else {
            let reason = Reason::HeadroomUnknown {
                reading: m.reading,
                wanted,
            };
            notes.push(Note { vmid, reason });
            *slot = None;
            continue;
        };
        let fits = (*room + EPSILON).floor();
        if wanted as f64 > fits {
            if fits < min_increment as f64 {
                let reason = Reason::HeadroomBelowMinIncrement {
                    reading: m.reading,
                    wanted,
                    headroom: *room,
                    min_increment,
                };
                notes.push(Note { vmid, reason });
                *slot = None;
                continue;
            }
            // `fits` is at least the minimum step (>= 1) here, so it is positive and whole.
            let granted = fits as u64;
            let reason = Reason::CutToHeadroom {
                resource,
                wanted,
                granted,
                headroom: *room,
            };
            notes.push(Note { vmid, reason });
            m.to = m.from + granted;
            m.cut = true;
        }
        *room -= (m.to - m.from) as f64;
    }
}

/// The tests' one seeded generator (proptest's ChaCha), for the invariant sweep.
#[cfg(test)]
#[path = "../../tests/common/rng.rs"]
mod test_rng;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::NaiveDate;

    use super::*;
    use crate::config::{self, TierConfig};
    use crate::decide::plan::Shortfall;
    use crate::read::snapshot::{ContainerPrev, CpuTicks, CtConf, HostPrev, HostSample};

    const BOOT: u64 = 1_700_000_000;
    const PREV_AT: i64 = 1_700_000_000_000_000;
    const DT_USEC: i64 = 300_000_000;
    const NOW_AT: i64 = PREV_AT + DT_USEC;
    const MB: u64 = 1_048_576;
    const HOST_TICKS: u64 = 1_000_000;
    const PREV_USAGE: u64 = 1_000_000;

    fn at(hour: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2024, 5, 1)
            .unwrap()
            .and_hms_opt(hour, 0, 0)
            .unwrap()
    }

    fn cfg(text: &str) -> Config {
        config::parse(text).unwrap()
    }

    /// A snapshot and the state of the cycle before it, 300 s apart.
    struct World {
        snap: Snapshot,
        state: State,
    }

    impl World {
        /// Host with `cpus` CPUs of which `busy_cores` were busy, and `available_mb` MemAvailable.
        fn new(cpus: u32, busy_cores: f64, available_mb: u64) -> World {
            let busy = (busy_cores / f64::from(cpus) * HOST_TICKS as f64).round() as u64;
            World {
                snap: Snapshot {
                    taken_at_usec: NOW_AT,
                    host: HostSample {
                        cpus: Some(cpus),
                        cpu_ticks: Some(CpuTicks {
                            busy: 5_000 + busy,
                            total: 10_000 + HOST_TICKS,
                        }),
                        boot_time: Some(BOOT),
                        mem_total_kib: Some(available_mb * 2048),
                        mem_available_kib: Some(available_mb * 1024),
                    },
                    containers: Vec::new(),
                },
                state: State {
                    host: Some(HostPrev {
                        taken_at_usec: PREV_AT,
                        boot_time: Some(BOOT),
                        cpu_ticks: CpuTicks {
                            busy: 5_000,
                            total: 10_000,
                        },
                    }),
                    containers: BTreeMap::new(),
                    ..State::default()
                },
            }
        }

        /// 16 CPUs, 2 of them busy, 64 GiB available: headroom is never the limit.
        fn roomy() -> World {
            World::new(16, 2.0, 65_536)
        }

        /// A running container using `cpu_pct` of its `cores` and `used_mb` (plus 50 MB of cache).
        fn ct(
            &mut self,
            vmid: u32,
            cores: u32,
            memory_mb: u64,
            cpu_pct: f64,
            used_mb: f64,
        ) -> &mut ContainerSample {
            let delta = (cpu_pct / 100.0 * f64::from(cores) * DT_USEC as f64).round() as u64;
            let file = 50 * MB;
            let cgroup_id = u64::from(vmid) * 10;
            self.state.containers.insert(
                vmid,
                ContainerPrev {
                    taken_at_usec: PREV_AT,
                    boot_time: Some(BOOT),
                    cgroup_id,
                    cpu_usage_usec: PREV_USAGE,
                    counters: Default::default(),
                },
            );
            self.snap.containers.push(ContainerSample {
                vmid,
                conf: Some(CtConf {
                    cores: Some(cores),
                    memory_mb,
                    hostname: Some(format!("ct{vmid}")),
                    ..CtConf::default()
                }),
                cgroup_id: Some(cgroup_id),
                cpu_usage_usec: Some(PREV_USAGE + delta),
                memory_current_bytes: Some((used_mb * MB as f64).round() as u64 + file),
                memory_file_bytes: Some(file),
                memory_shmem_bytes: Some(0),
                memory_inactive_file_bytes: Some(file),
                extra: Default::default(),
            });
            self.snap.containers.last_mut().unwrap()
        }

        fn conf(&mut self, vmid: u32) -> &mut CtConf {
            self.snap
                .containers
                .iter_mut()
                .find(|c| c.vmid == vmid)
                .and_then(|c| c.conf.as_mut())
                .unwrap()
        }

        fn decide(&self, cfg: &Config) -> Plan {
            decide(cfg, &self.snap, &self.state, at(12))
        }

        fn decide_at(&self, cfg: &Config, hour: u32) -> Plan {
            decide(cfg, &self.snap, &self.state, at(hour))
        }
    }

    fn change(plan: &Plan, vmid: u32) -> Option<&Change> {
        plan.changes.iter().find(|c| c.vmid == vmid)
    }

    fn cores_of(plan: &Plan, vmid: u32) -> Option<(u32, u32)> {
        change(plan, vmid)
            .and_then(|c| c.cores)
            .map(|s| (s.from, s.to))
    }

    fn memory_of(plan: &Plan, vmid: u32) -> Option<(u64, u64)> {
        change(plan, vmid)
            .and_then(|c| c.memory_mb)
            .map(|s| (s.from, s.to))
    }

    fn notes_of(plan: &Plan, vmid: u32) -> Vec<String> {
        plan.notes
            .iter()
            .filter(|n| n.vmid == vmid)
            .map(|n| n.reason.to_string())
            .collect()
    }

    fn observation(plan: &Plan, vmid: u32) -> &Observation {
        plan.observations.iter().find(|o| o.vmid == vmid).unwrap()
    }

    // --- energy window ---

    #[test]
    fn energy_window_is_closed_when_energy_mode_is_off() {
        let c = cfg("off_peak_start = 22\noff_peak_end = 6\n");
        assert!((0..24).all(|h| !energy_window(&c, h)));
    }

    #[test]
    fn energy_window_covers_start_to_before_end() {
        let c = cfg("energy_mode = true\noff_peak_start = 1\noff_peak_end = 5\n");
        let open: Vec<u32> = (0..24).filter(|&h| energy_window(&c, h)).collect();
        assert_eq!(open, vec![1, 2, 3, 4]);
    }

    #[test]
    fn energy_window_wraps_past_midnight() {
        let c = cfg("energy_mode = true\noff_peak_start = 22\noff_peak_end = 6\n");
        let open: Vec<u32> = (0..24).filter(|&h| energy_window(&c, h)).collect();
        assert_eq!(open, vec![0, 1, 2, 3, 4, 5, 22, 23]);
    }

    #[test]
    fn energy_window_with_equal_start_and_end_is_empty() {
        let c = cfg("energy_mode = true\noff_peak_start = 5\noff_peak_end = 5\n");
        assert!((0..24).all(|h| !energy_window(&c, h)));
    }

    // --- scale up ---

    #[test]
    fn scales_up_cores_when_cpu_above_upper_threshold() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 400.0);
        let plan = w.decide(&Config::default());
        // demand 1.84 cores at mid 50 % -> 4 cores.
        assert_eq!(cores_of(&plan, 101), Some((2, 4)));
        assert_eq!(memory_of(&plan, 101), None);
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "cpu 92.0% > 80: cores 2->4"
        );
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn scales_up_memory_when_above_upper_threshold() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 50.0, 860.0);
        let plan = w.decide(&Config::default());
        // 860 MB used at mid 50 % -> 1720 MB.
        assert_eq!(memory_of(&plan, 101), Some((1024, 1720)));
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "memory 84.0% > 80: 1024->1720 MB"
        );
    }

    #[test]
    fn combines_cores_and_memory_in_one_change() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0);
        let plan = w.decide(&Config::default());
        assert_eq!(plan.changes.len(), 1);
        let c = &plan.changes[0];
        assert_eq!(c.cores, Some(Step { from: 2, to: 4 }));
        assert_eq!(
            c.memory_mb,
            Some(Step {
                from: 1024,
                to: 1720
            })
        );
        assert_eq!(
            c.why().to_string(),
            "cpu 92.0% > 80: cores 2->4; memory 84.0% > 80: 1024->1720 MB"
        );
    }

    #[test]
    fn memory_scale_up_adds_at_least_memory_min_increment() {
        let mut w = World::roomy();
        w.ct(101, 2, 512, 50.0, 450.0);
        let plan = w.decide(&Config::default());
        // 450 MB at 50 % would be 900 MB; the minimum step of 512 gives 1024.
        assert_eq!(memory_of(&plan, 101), Some((512, 1024)));
    }

    #[test]
    fn core_scale_up_clamps_to_max_cores_instead_of_refusing() {
        let mut w = World::roomy();
        w.ct(101, 3, 1024, 95.0, 400.0);
        let plan = w.decide(&cfg("max_cores = 4\n"));
        // The formula wants 6 cores (+3); the bound allows +1, which must still happen.
        assert_eq!(cores_of(&plan, 101), Some((3, 4)));
    }

    #[test]
    fn no_core_scale_up_when_already_at_max_cores() {
        let mut w = World::roomy();
        w.ct(101, 4, 1024, 95.0, 400.0);
        let plan = w.decide(&cfg("max_cores = 4\n"));
        assert!(plan.changes.is_empty());
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu 95.0% > 80 but already at max_cores 4: cores unchanged"]
        );
    }

    #[test]
    fn core_scale_up_is_capped_by_core_max_increment() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 100.0, 400.0);
        let plan = w.decide(&cfg("core_max_increment = 1\n"));
        assert_eq!(cores_of(&plan, 101), Some((2, 3)));
    }

    #[test]
    fn core_scale_up_is_at_least_core_min_increment() {
        let mut w = World::roomy();
        w.ct(101, 4, 1024, 81.0, 400.0);
        let plan = w.decide(&cfg("cpu_lower_threshold = 70\ncore_min_increment = 2\n"));
        // demand 3.24 at mid 75 % -> 5 cores (+1), raised to the minimum step of +2.
        assert_eq!(cores_of(&plan, 101), Some((4, 6)));
    }

    #[test]
    fn core_scale_up_is_capped_by_host_usable_cores() {
        let mut w = World::new(4, 0.4, 65_536);
        w.ct(101, 2, 1024, 100.0, 400.0);
        let plan = w.decide(&Config::default());
        // Wants 4 cores; 4 CPUs less 10 % reserve leave 3 whole cores.
        assert_eq!(cores_of(&plan, 101), Some((2, 3)));
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu 100.0% > 80 wants +2 cores but the host has 3 usable cores: granted +1"]
        );
        // What this node can never give is a shortfall for the placement leader.
        assert_eq!(
            plan.shortfalls,
            vec![Shortfall {
                vmid: 101,
                resource: Resource::Cpu,
                allocated: 2,
                wanted: 2,
                granted: 1,
            }]
        );
    }

    #[test]
    fn a_scale_up_cut_by_the_host_cores_and_then_the_headroom_is_one_shortfall() {
        // 4 CPUs less 10 %: 3 whole usable cores, 3.6 usable, 3.0 busy: 0.6 cores of headroom.
        let mut w = World::new(4, 3.0, 65_536);
        w.ct(101, 2, 1024, 100.0, 400.0);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec![
                "cpu 100.0% > 80 wants +2 cores but the host has 3 usable cores: granted +1",
                "cpu 100.0% > 80 wants +1: host headroom 0.6 cores is below core_min_increment 1, not scaled up"
            ]
        );
        assert_eq!(
            plan.shortfalls,
            vec![Shortfall {
                vmid: 101,
                resource: Resource::Cpu,
                allocated: 2,
                wanted: 2,
                granted: 0,
            }]
        );
    }

    #[test]
    fn a_container_at_the_host_usable_cores_files_its_whole_wish_as_a_shortfall() {
        let mut w = World::new(4, 0.4, 65_536);
        w.ct(101, 3, 1024, 100.0, 400.0);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu 100.0% > 80 wants +3 cores but the host has 3 usable cores: granted +0"]
        );
        assert_eq!(
            plan.shortfalls,
            vec![Shortfall {
                vmid: 101,
                resource: Resource::Cpu,
                allocated: 3,
                wanted: 3,
                granted: 0,
            }]
        );
    }

    #[test]
    fn memory_scale_up_clamps_to_max_memory() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 50.0, 860.0);
        w.ct(102, 2, 1536, 50.0, 1400.0);
        let plan = w.decide(&cfg("max_memory = 1536\n"));
        assert_eq!(memory_of(&plan, 101), Some((1024, 1536)));
        assert_eq!(memory_of(&plan, 102), None);
        assert_eq!(
            notes_of(&plan, 102),
            vec!["memory 91.1% > 80 but already at max_memory 1536 MB: memory unchanged"]
        );
    }

    #[test]
    fn tier_thresholds_override_the_top_level() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 70.0, 400.0);
        w.ct(102, 2, 1024, 70.0, 400.0);
        let plan = w.decide(&cfg(
            "[tiers.busy]\ncontainers = [102]\ncpu_upper_threshold = 60\n",
        ));
        assert_eq!(cores_of(&plan, 101), None);
        // demand 1.4 at mid 40 % -> 4 cores.
        assert_eq!(cores_of(&plan, 102), Some((2, 4)));
    }

    // --- scale down ---

    #[test]
    fn scales_down_cores_to_demand_at_mid_threshold() {
        let mut w = World::roomy();
        w.ct(101, 4, 1024, 15.0, 400.0);
        let plan = w.decide(&Config::default());
        // demand 0.6 at mid 50 % -> 2 cores.
        assert_eq!(cores_of(&plan, 101), Some((4, 2)));
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "cpu 15.0% < 20: cores 4->2"
        );
    }

    #[test]
    fn core_scale_down_removes_at_most_core_max_increment() {
        let mut w = World::roomy();
        w.ct(101, 8, 1024, 10.0, 400.0);
        assert_eq!(cores_of(&w.decide(&Config::default()), 101), Some((8, 4)));
        assert_eq!(
            cores_of(&w.decide(&cfg("core_max_increment = 2\n")), 101),
            Some((8, 6))
        );
    }

    #[test]
    fn core_scale_down_stops_at_min_cores() {
        let mut w = World::roomy();
        w.ct(101, 3, 1024, 1.0, 400.0);
        w.ct(102, 2, 1024, 1.0, 400.0);
        let plan = w.decide(&cfg("min_cores = 2\n"));
        assert_eq!(cores_of(&plan, 101), Some((3, 2)));
        assert_eq!(cores_of(&plan, 102), None);
    }

    #[test]
    fn memory_scales_down_by_halves_to_min_memory_over_three_cycles() {
        let c = Config::default();
        let mut memory = 4096;
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut w = World::roomy();
            w.ct(101, 2, memory, 50.0, 200.0);
            if let Some((_, to)) = memory_of(&w.decide(&c), 101) {
                memory = to;
                seen.push(to);
            }
        }
        assert_eq!(seen, vec![2048, 1024, 512]);
    }

    #[test]
    fn memory_scale_down_reason_names_measured_values() {
        let mut w = World::roomy();
        w.ct(101, 2, 4096, 50.0, 200.0);
        let plan = w.decide(&Config::default());
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "memory 4.9% < 20: 4096->2048 MB"
        );
    }

    #[test]
    fn memory_scale_down_uses_whole_chunks() {
        let mut w = World::roomy();
        w.ct(101, 2, 8192, 50.0, 1200.0);
        // Target 2400 MB; at most half (4096) may go: two chunks of 1536.
        let plan = w.decide(&cfg("min_decrease_chunk = 1536\n"));
        assert_eq!(memory_of(&plan, 101), Some((8192, 5120)));
        let plan = w.decide(&Config::default());
        assert_eq!(memory_of(&plan, 101), Some((8192, 4096)));
    }

    #[test]
    fn memory_scale_down_never_goes_below_min_memory() {
        let mut w = World::roomy();
        w.ct(101, 2, 1536, 50.0, 100.0);
        let plan = w.decide(&cfg("min_memory = 1024\n"));
        assert_eq!(memory_of(&plan, 101), Some((1536, 1024)));
        let plan = w.decide(&cfg("min_memory = 1024\nmin_decrease_chunk = 384\n"));
        assert_eq!(memory_of(&plan, 101), Some((1536, 1152)));
    }

    #[test]
    fn memory_scale_down_needs_one_whole_chunk() {
        let mut w = World::roomy();
        w.ct(101, 2, 768, 50.0, 100.0);
        // Only 256 MB may go (down to min_memory 512): less than a 512 MB chunk.
        let plan = w.decide(&Config::default());
        assert!(plan.changes.is_empty());
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn in_band_container_yields_no_change_and_no_note() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 50.0, 500.0);
        let plan = w.decide(&Config::default());
        assert!(plan.changes.is_empty());
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
        assert_eq!(plan.observations.len(), 1);
    }

    // --- host headroom ---

    #[test]
    fn higher_tier_gets_the_last_free_core() {
        // 16 CPUs less 10 % = 14.4 usable, 13 busy: 1.4 cores of headroom.
        let mut w = World::new(16, 13.0, 65_536);
        w.ct(101, 1, 1024, 90.0, 400.0);
        w.ct(102, 1, 1024, 90.0, 400.0);
        let plan = w.decide(&cfg("[tiers.gold]\ncontainers = [102]\npriority = 10\n"));
        assert_eq!(cores_of(&plan, 102), Some((1, 2)));
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec![
                "cpu 90.0% > 80 wants +1: host headroom 0.4 cores is below core_min_increment 1, not scaled up"
            ]
        );
    }

    #[test]
    fn same_tier_scale_ups_go_farthest_above_threshold_first() {
        let mut w = World::new(16, 13.0, 65_536);
        w.ct(101, 1, 1024, 85.0, 400.0);
        w.ct(102, 1, 1024, 95.0, 400.0);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 102), Some((1, 2)));
        assert_eq!(cores_of(&plan, 101), None);
    }

    #[test]
    fn tier_priority_outranks_distance_above_threshold() {
        let mut w = World::new(16, 13.0, 65_536);
        w.ct(101, 1, 1024, 99.0, 400.0);
        w.ct(102, 1, 1024, 81.0, 400.0);
        let plan = w.decide(&cfg("[tiers.gold]\ncontainers = [102]\npriority = 1\n"));
        assert_eq!(cores_of(&plan, 102), Some((1, 2)));
        assert_eq!(cores_of(&plan, 101), None);
    }

    #[test]
    fn equal_claims_are_granted_by_vmid() {
        let mut w = World::new(16, 13.0, 65_536);
        w.ct(102, 1, 1024, 90.0, 400.0);
        w.ct(101, 1, 1024, 90.0, 400.0);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), Some((1, 2)));
        assert_eq!(cores_of(&plan, 102), None);
    }

    #[test]
    fn core_scale_up_is_cut_to_whole_cores_of_headroom() {
        let mut w = World::new(16, 13.0, 65_536);
        w.ct(101, 3, 1024, 100.0, 400.0);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), Some((3, 4)));
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu cut from +3 to +1 core: host headroom 1.4 cores"]
        );
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "cpu 100.0% > 80: cores 3->4 (cut to host headroom)"
        );
    }

    #[test]
    fn cut_reasons_carry_the_numbers() {
        let mut w = World::new(16, 13.0, 65_536);
        w.ct(101, 3, 1024, 100.0, 400.0);
        let plan = w.decide(&Config::default());
        let Reason::CutToHeadroom {
            resource,
            wanted,
            granted,
            headroom,
        } = plan.notes[0].reason
        else {
            panic!("{:?}", plan.notes);
        };
        assert_eq!((resource, wanted, granted), (Resource::Cpu, 3, 1));
        assert!((headroom - 1.4).abs() < 1e-9, "{headroom}");
        let Reason::Scaled {
            reading,
            from,
            to,
            cut,
        } = change(&plan, 101).unwrap().reasons[0]
        else {
            panic!("{plan:?}");
        };
        assert_eq!((from, to, cut), (3, 4, true));
        assert_eq!(reading.resource, Resource::Cpu);
        assert_eq!(reading.rule, Rule::AboveUpper);
        assert_eq!(reading.threshold, 80.0);
        assert!((reading.percent - 100.0).abs() < 1e-9);
    }

    #[test]
    fn core_scale_up_is_skipped_when_what_fits_is_below_core_min_increment() {
        let mut w = World::new(16, 13.0, 65_536);
        w.ct(101, 3, 1024, 100.0, 400.0);
        let plan = w.decide(&cfg("core_min_increment = 2\n"));
        assert!(plan.changes.is_empty());
        assert_eq!(
            notes_of(&plan, 101),
            vec![
                "cpu 100.0% > 80 wants +3: host headroom 1.4 cores is below core_min_increment 2, not scaled up"
            ]
        );
    }

    #[test]
    fn memory_scale_up_is_cut_to_whole_mb_of_headroom() {
        // MemAvailable is the 2048 MB reserve plus 600 MB.
        let mut w = World::new(16, 2.0, 2048 + 600);
        w.ct(101, 2, 1024, 50.0, 860.0);
        let plan = w.decide(&Config::default());
        assert_eq!(memory_of(&plan, 101), Some((1024, 1624)));
        assert_eq!(
            notes_of(&plan, 101),
            vec!["memory cut from +696 to +600 MB: host headroom 600 MB"]
        );
    }

    #[test]
    fn memory_scale_up_is_skipped_when_what_fits_is_below_memory_min_increment() {
        let mut w = World::new(16, 2.0, 2048 + 300);
        w.ct(101, 2, 1024, 50.0, 860.0);
        let plan = w.decide(&Config::default());
        assert!(plan.changes.is_empty());
        assert_eq!(
            notes_of(&plan, 101),
            vec![
                "memory 84.0% > 80 wants +696 MB: host headroom 300 MB is below memory_min_increment 512, not scaled up"
            ]
        );
    }

    #[test]
    fn granted_scale_ups_use_up_the_headroom() {
        let mut w = World::new(16, 2.0, 2048 + 1000);
        w.ct(101, 2, 512, 50.0, 450.0);
        w.ct(102, 2, 512, 50.0, 450.0);
        let plan = w.decide(&Config::default());
        assert_eq!(memory_of(&plan, 101), Some((512, 1024)));
        assert_eq!(memory_of(&plan, 102), None);
        assert_eq!(
            notes_of(&plan, 102),
            vec![
                "memory 87.9% > 80 wants +512 MB: host headroom 488 MB is below memory_min_increment 512, not scaled up"
            ]
        );
    }

    #[test]
    fn scale_downs_need_no_headroom() {
        let mut w = World::new(16, 16.0, 0);
        w.ct(101, 4, 4096, 15.0, 200.0);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), Some((4, 2)));
        assert_eq!(memory_of(&plan, 101), Some((4096, 2048)));
    }

    #[test]
    fn unknown_cpu_headroom_blocks_only_cpu_scale_ups() {
        let mut w = World::roomy();
        w.state.host = None;
        w.ct(101, 2, 1024, 92.0, 400.0);
        w.ct(102, 4, 1024, 15.0, 400.0);
        w.ct(103, 2, 1024, 50.0, 860.0);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu 92.0% > 80 wants +2: host cpu headroom unknown, not scaled up"]
        );
        assert_eq!(cores_of(&plan, 102), Some((4, 2)));
        assert_eq!(memory_of(&plan, 103), Some((1024, 1720)));
    }

    #[test]
    fn unknown_memory_headroom_blocks_only_memory_scale_ups() {
        let mut w = World::roomy();
        w.snap.host.mem_available_kib = None;
        w.ct(101, 2, 1024, 50.0, 860.0);
        w.ct(102, 2, 4096, 50.0, 200.0);
        w.ct(103, 2, 1024, 92.0, 400.0);
        let plan = w.decide(&Config::default());
        assert_eq!(memory_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec!["memory 84.0% > 80 wants +696 MB: host memory headroom unknown, not scaled up"]
        );
        assert_eq!(memory_of(&plan, 102), Some((4096, 2048)));
        assert_eq!(cores_of(&plan, 103), Some((2, 4)));
    }

    #[test]
    fn stale_host_sample_makes_cpu_headroom_unknown() {
        let mut w = World::roomy();
        // Exactly 2 × poll_interval old: too old.
        w.state.host.as_mut().unwrap().taken_at_usec = NOW_AT - 600_000_000;
        w.ct(101, 2, 1024, 92.0, 400.0);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu 92.0% > 80 wants +2: host cpu headroom unknown, not scaled up"]
        );
    }

    #[test]
    fn host_reboot_makes_cpu_headroom_unknown() {
        let mut w = World::roomy();
        w.state.host.as_mut().unwrap().boot_time = Some(BOOT - 1);
        // The container sample has to survive for the cpu percent to exist.
        w.ct(101, 2, 1024, 92.0, 400.0);
        w.state.containers.get_mut(&101).unwrap().boot_time = Some(BOOT);
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu 92.0% > 80 wants +2: host cpu headroom unknown, not scaled up"]
        );
    }

    // --- energy mode ---

    #[test]
    fn energy_mode_scales_down_containers_below_upper_inside_the_window() {
        let c = cfg("energy_mode = true\n");
        let mut w = World::roomy();
        w.ct(101, 4, 2048, 50.0, 1000.0);
        for hour in [23, 3] {
            let plan = w.decide_at(&c, hour);
            // Packed to 80 − 10 = 70 %: demand 2 cores -> 3; 1000 MB -> 1429 target, one chunk fits.
            assert_eq!(cores_of(&plan, 101), Some((4, 3)), "hour {hour}");
            assert_eq!(memory_of(&plan, 101), Some((2048, 1536)), "hour {hour}");
            assert_eq!(
                change(&plan, 101).unwrap().why().to_string(),
                "cpu 50.0% < 70 (energy mode): cores 4->3; memory 48.8% < 70 (energy mode): 2048->1536 MB"
            );
        }
        for hour in [12, 6, 21] {
            assert!(w.decide_at(&c, hour).changes.is_empty(), "hour {hour}");
        }
    }

    #[test]
    fn energy_mode_off_leaves_in_band_containers_alone_at_night() {
        let mut w = World::roomy();
        w.ct(101, 4, 2048, 50.0, 1000.0);
        assert!(w.decide_at(&Config::default(), 23).changes.is_empty());
    }

    #[test]
    fn energy_mode_still_scales_up_overloaded_containers_with_mid_threshold() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 400.0);
        let plan = w.decide_at(&cfg("energy_mode = true\n"), 23);
        // Scale-up uses mid (50 %): 4 cores, not the 3 the upper threshold would give.
        assert_eq!(cores_of(&plan, 101), Some((2, 4)));
        // Memory at 39 % is below 70 %, but 400 MB at 70 % needs 572 MB: less than one 512 MB
        // chunk can go.
        assert_eq!(memory_of(&plan, 101), None);
        assert_eq!(plan.changes.len(), 1);
    }

    #[test]
    fn energy_mode_hysteresis_holds_through_a_wobble_around_the_target() {
        // 1.6 cores of demand on 4: packed to 70 %, 3 cores (not 2, where 1.7 would be 85 %).
        let c = cfg("energy_mode = true\n");
        let mut w = World::roomy();
        w.ct(101, 4, 4096, 40.0, 2000.0);
        assert_eq!(cores_of(&w.decide_at(&c, 23), 101), Some((4, 3)));
        // At 3 cores a ±5 % wobble (1.52 to 1.68 cores) is no change, up or down.
        let mut outcomes = Vec::new();
        for demand in [1.52, 1.6, 1.68, 1.6, 1.52] {
            let mut w = World::roomy();
            w.ct(101, 3, 4096, demand / 3.0 * 100.0, 2000.0);
            outcomes.push(cores_of(&w.decide_at(&c, 23), 101));
        }
        assert_eq!(outcomes, vec![None; 5]);
    }

    #[test]
    fn energy_mode_scale_down_keeps_minimums_and_per_cycle_caps() {
        let mut w = World::roomy();
        w.ct(101, 8, 8192, 1.0, 100.0);
        let plan = w.decide_at(&cfg("energy_mode = true\nmin_cores = 2\n"), 23);
        assert_eq!(cores_of(&plan, 101), Some((8, 4)));
        assert_eq!(memory_of(&plan, 101), Some((8192, 4096)));
    }

    #[test]
    fn energy_mode_never_touches_an_unmeasured_resource() {
        let mut w = World::roomy();
        w.ct(101, 4, 2048, 50.0, 1000.0).memory_file_bytes = None;
        let plan = w.decide_at(&cfg("energy_mode = true\n"), 23);
        assert_eq!(cores_of(&plan, 101), Some((4, 3)));
        assert_eq!(memory_of(&plan, 101), None);
    }

    // --- who is managed ---

    #[test]
    fn ignored_container_is_measured_but_never_changed() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0);
        let plan = w.decide(&cfg("ignore_lxc = [101]\n"));
        assert!(plan.changes.is_empty());
        assert_eq!(
            notes_of(&plan, 101),
            vec!["listed in ignore_lxc: not managed"]
        );
        let o = observation(&plan, 101);
        assert_eq!(o.managed, Managed::Ignored);
        assert!((o.cpu_percent.unwrap() - 92.0).abs() < 1e-9);
    }

    #[test]
    fn excluded_containers_are_debug_and_every_other_reason_info() {
        use crate::decide::plan::Level;
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0);
        w.ct(102, 2, 1024, 92.0, 860.0);
        w.conf(102).tags = vec!["noautoscale".into()];
        w.ct(103, 2, 1024, 92.0, 860.0);
        w.conf(103).lock = Some("backup".into());
        w.ct(104, 2, 1024, 92.0, 860.0).cpu_usage_usec = None;
        let plan = w.decide(&cfg("ignore_lxc = [101]\n"));
        let levels: Vec<(u32, Level)> = plan
            .notes
            .iter()
            .map(|n| (n.vmid, n.reason.log_level()))
            .collect();
        assert_eq!(
            levels,
            vec![
                (101, Level::Debug),
                (102, Level::Debug),
                (103, Level::Info),
                (104, Level::Info)
            ]
        );
        assert_eq!(plan.changes[0].reasons[0].log_level(), Level::Info);
    }

    #[test]
    fn noautoscale_tag_opts_a_container_out() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0);
        w.conf(101).tags = vec!["prod".into(), "NoAutoscale".into()];
        let plan = w.decide(&Config::default());
        assert!(plan.changes.is_empty());
        assert_eq!(
            notes_of(&plan, 101),
            vec!["tagged noautoscale: not managed"]
        );
        assert_eq!(observation(&plan, 101).managed, Managed::OptedOut);
    }

    #[test]
    fn locked_container_is_not_changed() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0);
        w.conf(101).lock = Some("backup".into());
        let plan = w.decide(&Config::default());
        assert!(plan.changes.is_empty());
        assert_eq!(
            notes_of(&plan, 101),
            vec!["locked (backup): not changed this cycle"]
        );
        assert_eq!(observation(&plan, 101).managed, Managed::Locked);
    }

    #[test]
    fn container_without_conf_is_not_managed() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0).conf = None;
        let plan = w.decide(&Config::default());
        assert!(plan.changes.is_empty());
        assert_eq!(notes_of(&plan, 101), vec!["no readable conf: not managed"]);
        let o = observation(&plan, 101);
        assert_eq!(o.managed, Managed::NoConf);
        assert_eq!(o.cores, None);
        assert_eq!(o.cpu_percent, None);
        assert_eq!(o.memory_used_mb, Some(860.0));
        assert_eq!(o.memory_percent, None);
    }

    // --- missing or reset measurements ---

    #[test]
    fn missing_cpu_counter_gives_no_core_change_but_memory_still_scales() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0).cpu_usage_usec = None;
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(memory_of(&plan, 101), Some((1024, 1720)));
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu not measured this cycle: cores unchanged"]
        );
    }

    #[test]
    fn missing_memory_figure_gives_no_memory_change() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0).memory_current_bytes = None;
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), Some((2, 4)));
        assert_eq!(memory_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec!["memory not measured this cycle: memory unchanged"]
        );
        assert_eq!(observation(&plan, 101).memory_percent, None);
    }

    #[test]
    fn missing_or_garbled_shmem_or_file_gives_no_memory_change() {
        for garble in [
            |c: &mut ContainerSample| c.memory_shmem_bytes = None,
            |c: &mut ContainerSample| c.memory_file_bytes = None,
            |c: &mut ContainerSample| c.memory_shmem_bytes = Some(51 * MB),
        ] {
            let mut w = World::roomy();
            garble(w.ct(101, 2, 4096, 50.0, 100.0));
            let plan = w.decide(&Config::default());
            assert_eq!(memory_of(&plan, 101), None);
            assert_eq!(
                notes_of(&plan, 101),
                vec!["memory not measured this cycle: memory unchanged"]
            );
        }
    }

    #[test]
    fn tmpfs_heavy_container_is_not_cut() {
        // 4096 MB, 3500 MB charged, 3000 MB of it tmpfs: used is 3500 MB (85.4 %), not 500 MB.
        let mut w = World::roomy();
        let c = w.ct(101, 2, 4096, 50.0, 0.0);
        c.memory_current_bytes = Some(3500 * MB);
        c.memory_file_bytes = Some(3000 * MB);
        c.memory_shmem_bytes = Some(3000 * MB);
        c.memory_inactive_file_bytes = Some(0);
        let plan = w.decide(&Config::default());
        assert_eq!(observation(&plan, 101).memory_used_mb, Some(3500.0));
        // Above the upper threshold: grown to fit 3500 MB at 50 %, never cut.
        assert_eq!(memory_of(&plan, 101), Some((4096, 7000)));
        // 1300 MB charged, 1200 MB of it tmpfs: Proxmox's figure (current − file) reads 100 MB,
        // 2.4 %, far below the lower threshold; used is 1300 MB, 31.7 %: no cut, even after a
        // whole window of it with the model.
        let mut w = World::roomy();
        let c = w.ct(102, 2, 4096, 50.0, 0.0);
        c.memory_current_bytes = Some(1300 * MB);
        c.memory_file_bytes = Some(1200 * MB);
        c.memory_shmem_bytes = Some(1200 * MB);
        c.memory_inactive_file_bytes = Some(0);
        let mut models = Models::default();
        for k in 0..40 {
            let plan = step(&mut w, &Config::default(), &mut models, k);
            assert_eq!(observation(&plan, 102).memory_used_mb, Some(1300.0));
            assert_eq!(memory_of(&plan, 102), None, "cycle {k}");
        }
    }

    #[test]
    fn memory_cut_never_goes_below_working_set_plus_margin() {
        // Used 300 MB of 8192 (3.7 %), but 2000 MB of active page cache: working set 2300 MB.
        let mut w = World::roomy();
        let c = w.ct(101, 2, 8192, 50.0, 300.0);
        c.memory_current_bytes = Some(2300 * MB);
        c.memory_file_bytes = Some(2000 * MB);
        c.memory_inactive_file_bytes = Some(0);
        let plan = w.decide(&Config::default());
        // Floor 2300 + 10 % = 2530 MB; cuts in whole 512 MB chunks, at most half: 8192 -> 4096.
        assert_eq!(memory_of(&plan, 101), Some((8192, 4096)));
        w.conf(101).memory_mb = 4096;
        let plan = w.decide(&Config::default());
        // 4096 - 2530 = 1566 MB of room: three chunks, 4096 -> 2560 MB, still above 2530.
        assert_eq!(memory_of(&plan, 101), Some((4096, 2560)));
        w.conf(101).memory_mb = 2560;
        assert_eq!(memory_of(&w.decide(&Config::default()), 101), None);
    }

    #[test]
    fn counter_resets_give_no_cpu_decision() {
        type Reset = fn(&mut World);
        let resets: [(&str, Reset); 5] = [
            ("no previous sample", |w| {
                w.state.containers.clear();
            }),
            ("cgroup recreated", |w| {
                w.snap.containers[0].cgroup_id = Some(999);
            }),
            ("counter went backwards", |w| {
                w.snap.containers[0].cpu_usage_usec = Some(PREV_USAGE - 1);
            }),
            ("host rebooted", |w| {
                w.snap.host.boot_time = Some(BOOT + 3600);
            }),
            ("previous sample stale", |w| {
                w.state.containers.get_mut(&101).unwrap().taken_at_usec = NOW_AT - 600_000_000;
            }),
        ];
        for (what, reset) in resets {
            let mut w = World::roomy();
            w.ct(101, 2, 1024, 92.0, 400.0);
            assert_eq!(cores_of(&w.decide(&Config::default()), 101), Some((2, 4)));
            reset(&mut w);
            let plan = w.decide(&Config::default());
            assert!(plan.changes.is_empty(), "{what}");
            assert_eq!(observation(&plan, 101).cpu_percent, None, "{what}");
            assert_eq!(
                notes_of(&plan, 101),
                vec!["cpu not measured this cycle: cores unchanged"],
                "{what}"
            );
        }
    }

    #[test]
    fn unknown_cores_and_host_cpus_give_no_cpu_decision() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0);
        w.conf(101).cores = None;
        w.snap.host.cpus = None;
        let plan = w.decide(&Config::default());
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(memory_of(&plan, 101), Some((1024, 1720)));
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cores unknown (no cores line, host cpus unread): cores unchanged"]
        );
    }

    // --- observations and allocation details ---

    #[test]
    fn observation_reports_measured_values() {
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 50.0, 256.0);
        let plan = w.decide(&cfg("[tiers.web]\ncontainers = [101]\n"));
        let o = observation(&plan, 101);
        assert_eq!(o.name.as_deref(), Some("ct101"));
        assert_eq!(o.tier.as_deref(), Some("web"));
        assert_eq!(o.managed, Managed::Yes);
        assert_eq!(o.cores, Some(2));
        assert_eq!(o.memory_mb, Some(1024));
        assert!((o.cpu_percent.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(o.memory_used_mb, Some(256.0));
        assert_eq!(o.memory_percent, Some(25.0));
    }

    #[test]
    fn absent_cores_line_counts_as_all_host_cpus() {
        let mut w = World::roomy();
        w.ct(101, 16, 1024, 10.0, 400.0);
        w.conf(101).cores = None;
        let plan = w.decide(&Config::default());
        assert_eq!(observation(&plan, 101).cores, Some(16));
        // demand 1.6 -> 4 cores, but at most 4 go per cycle.
        assert_eq!(cores_of(&plan, 101), Some((16, 12)));
    }

    #[test]
    fn cpulimit_bound_container_gets_no_extra_cores() {
        let mut w = World::roomy();
        // One full CPU on 4 cores, limited to 1 CPU: 100 % of the limit.
        w.ct(101, 4, 1024, 25.0, 400.0);
        w.conf(101).cpulimit = Some(1.0);
        let plan = w.decide(&Config::default());
        assert!((observation(&plan, 101).cpu_percent.unwrap() - 100.0).abs() < 1e-9);
        assert!(plan.changes.is_empty());
        assert_eq!(
            notes_of(&plan, 101),
            vec![
                "cpu 100.0% > 80 but cpulimit 1 binds, more cores would not help: cores unchanged"
            ]
        );
    }

    #[test]
    fn plan_is_sorted_by_vmid() {
        let mut w = World::roomy();
        w.ct(105, 2, 1024, 92.0, 400.0);
        w.ct(101, 2, 1024, 92.0, 400.0);
        w.ct(103, 2, 1024, 92.0, 400.0);
        let plan = w.decide(&Config::default());
        let changed: Vec<u32> = plan.changes.iter().map(|c| c.vmid).collect();
        let observed: Vec<u32> = plan.observations.iter().map(|o| o.vmid).collect();
        assert_eq!(changed, vec![101, 103, 105]);
        assert_eq!(observed, vec![101, 103, 105]);
    }

    // --- invariants over random inputs ---

    use super::test_rng::SeededRng as Rng;

    fn random_config(r: &mut Rng) -> Config {
        let mut c = Config::default();
        c.cpu_lower_threshold = r.range(0, 60) as f64;
        c.cpu_upper_threshold =
            c.cpu_lower_threshold + r.range(1, 100 - c.cpu_lower_threshold as u64) as f64;
        c.memory_lower_threshold = r.range(0, 60) as f64;
        c.memory_upper_threshold =
            c.memory_lower_threshold + r.range(1, 100 - c.memory_lower_threshold as u64) as f64;
        c.core_min_increment = r.range(1, 3) as u32;
        c.core_max_increment = c.core_min_increment + r.range(0, 4) as u32;
        c.memory_min_increment = [16, 256, 512][r.below(3) as usize];
        c.min_cores = r.range(1, 4) as u32;
        c.max_cores = c.min_cores + r.range(0, 12) as u32;
        c.min_memory = [16, 256, 512, 1024][r.below(4) as usize];
        c.max_memory = r.percent(50).then(|| c.min_memory + r.range(0, 8192));
        c.min_decrease_chunk = [16, 128, 512, 1024][r.below(4) as usize];
        c.reserve_cpu_percent = r.range(0, 50) as f64;
        c.reserve_memory_mb = r.range(0, 4096);
        c.energy_mode = r.percent(50);
        c.off_peak_start = r.range(0, 23) as u32;
        c.off_peak_end = r.range(0, 23) as u32;
        if r.percent(30) {
            c.ignore_lxc = vec![100 + r.range(0, 9) as u32];
        }
        if r.percent(50) {
            let containers = (100..110)
                .filter(|v| !c.ignore_lxc.contains(v) && r.percent(30))
                .collect();
            c.tiers.insert(
                "t".into(),
                TierConfig {
                    containers,
                    priority: r.range(0, 5) as i64,
                    cpu_upper_threshold: Some(c.cpu_upper_threshold),
                    max_cores: Some(c.max_cores + 2),
                    ..TierConfig::default()
                },
            );
        }
        c.validate().unwrap();
        c
    }

    fn random_world(r: &mut Rng) -> World {
        let cpus = r.range(1, 64) as u32;
        let mut w = World::new(cpus, r.range(0, u64::from(cpus)) as f64, r.range(0, 65_536));
        if r.percent(10) {
            w.state.host = None;
        }
        if r.percent(10) {
            w.snap.host.cpus = None;
        }
        if r.percent(10) {
            w.snap.host.mem_available_kib = None;
        }
        for vmid in 100..110 {
            if !r.percent(60) {
                continue;
            }
            let cores = r.range(1, 20) as u32;
            let memory = r.range(16, 16_384);
            let pct = r.range(0, 105) as f64;
            let used = r.range(0, memory + 512) as f64;
            let c = w.ct(vmid, cores, memory, pct, used);
            if r.percent(10) {
                c.conf = None;
            }
            if r.percent(10) {
                c.cpu_usage_usec = None;
            }
            if r.percent(10) {
                c.memory_file_bytes = Some(c.memory_current_bytes.unwrap() + 1);
            }
            if let Some(conf) = c.conf.as_mut() {
                if r.percent(10) {
                    conf.cores = None;
                }
                if r.percent(10) {
                    conf.cpulimit = Some(r.range(0, 8) as f64 / 2.0);
                }
                if r.percent(10) {
                    conf.lock = Some("snapshot".into());
                }
                if r.percent(10) {
                    conf.tags = vec!["noautoscale".into()];
                }
            }
        }
        w
    }

    #[test]
    fn random_plans_keep_every_invariant() {
        let mut r = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut changes_seen = 0;
        for _ in 0..3000 {
            let c = random_config(&mut r);
            let w = random_world(&mut r);
            let hour = r.range(0, 23) as u32;
            let plan = w.decide_at(&c, hour);
            assert_eq!(plan.observations.len(), w.snap.containers.len());

            let usable = w
                .snap
                .host
                .cpus
                .map(|n| usable_cores(n, c.reserve_cpu_percent));
            let cpu_headroom = usable
                .zip(measure::host_busy_cores(
                    &w.snap.host,
                    w.state.host.as_ref(),
                ))
                .map(|(u, b)| u - b);
            let mem_headroom = w
                .snap
                .host
                .mem_available_kib
                .map(|k| (k / 1024) as i64 - c.reserve_memory_mb as i64);
            let (mut cores_added, mut mb_added) = (0u64, 0u64);

            let mut last_vmid = 0;
            for ch in &plan.changes {
                changes_seen += 1;
                assert!(ch.vmid > last_vmid, "changes sorted and unique");
                last_vmid = ch.vmid;
                assert!(ch.cores.is_some() || ch.memory_mb.is_some());
                let o = observation(&plan, ch.vmid);
                assert_eq!(o.managed, Managed::Yes, "{ch:?}");
                let l = c.limits_for(ch.vmid);
                if let Some(s) = ch.cores {
                    assert!(o.cpu_percent.is_some(), "{ch:?}");
                    assert_eq!(Some(s.from), o.cores);
                    assert_ne!(s.from, s.to);
                    if s.to > s.from {
                        assert!(s.to <= l.max_cores, "{ch:?} {l:?}");
                        assert!(f64::from(s.to) <= usable.unwrap() + EPSILON, "{ch:?}");
                        cores_added += u64::from(s.to - s.from);
                    } else {
                        assert!(s.to >= l.min_cores, "{ch:?} {l:?}");
                        assert!(s.from - s.to <= l.core_max_increment, "{ch:?} {l:?}");
                    }
                }
                if let Some(s) = ch.memory_mb {
                    let used = o.memory_used_mb.expect("memory change without measurement");
                    assert_eq!(Some(s.from), o.memory_mb);
                    assert_ne!(s.from, s.to);
                    if s.to > s.from {
                        if let Some(max) = l.max_memory {
                            assert!(s.to <= max, "{ch:?} {l:?}");
                        }
                        mb_added += s.to - s.from;
                    } else {
                        let cut = s.from - s.to;
                        assert!(s.to >= l.min_memory, "{ch:?} {l:?}");
                        assert!(s.to as f64 >= used, "{ch:?} used {used}");
                        assert_eq!(cut % l.min_decrease_chunk, 0, "{ch:?} {l:?}");
                        assert!(cut * 2 <= s.from, "{ch:?}");
                    }
                }
            }
            if cores_added > 0 {
                assert!(cores_added as f64 <= cpu_headroom.unwrap() + EPSILON);
            }
            if mb_added > 0 {
                assert!(mb_added as i64 <= mem_headroom.unwrap());
            }
        }
        assert!(
            changes_seen > 1000,
            "the sweep must exercise changes: {changes_seen}"
        );
    }

    // --- the model (decide_with_model) ---

    /// Moves the world `k` cycles of 300 s past its start, keeping each container's load.
    fn at_cycle(w: &mut World, k: i64) {
        let shift = k * DT_USEC;
        w.snap.taken_at_usec = NOW_AT + shift;
        w.state.host.as_mut().unwrap().taken_at_usec = PREV_AT + shift;
        for p in w.state.containers.values_mut() {
            p.taken_at_usec = PREV_AT + shift;
        }
    }

    /// Local time of cycle `k` (day 0 starts at 00:00).
    fn local(k: i64) -> NaiveDateTime {
        at(0) + chrono::Duration::seconds(k * 300)
    }

    /// Applies a plan's changes to the world's confs.
    fn apply_to(w: &mut World, plan: &Plan) {
        for c in &plan.changes {
            if let Some(s) = c.cores {
                w.conf(c.vmid).cores = Some(s.to);
            }
            if let Some(s) = c.memory_mb {
                w.conf(c.vmid).memory_mb = s.to;
            }
        }
    }

    /// Sets the cpu load of `vmid` to `cores` of demand on its current allocation.
    fn load(w: &mut World, vmid: u32, demand_cores: f64) {
        let c = w
            .snap
            .containers
            .iter_mut()
            .find(|c| c.vmid == vmid)
            .unwrap();
        c.cpu_usage_usec = Some(PREV_USAGE + (demand_cores * DT_USEC as f64).round() as u64);
    }

    fn step(w: &mut World, cfg: &Config, models: &mut Models, k: i64) -> Plan {
        at_cycle(w, k);
        let plan = decide_with_model(cfg, &w.snap, &w.state, models, local(k));
        apply_to(w, &plan);
        plan
    }

    #[test]
    fn oom_kill_grows_memory_at_once_and_holds_memory_cuts_for_a_day() {
        let c = cfg("scale_down_window = 0\nscale_down_cooldown = 0\n");
        let mut w = World::roomy();
        w.ct(101, 2, 4096, 50.0, 1000.0).extra.counters.oom_kill = Some(3);
        w.state.containers.get_mut(&101).unwrap().counters.oom_kill = Some(2);
        let mut models = Models::default();
        let plan = step(&mut w, &c, &mut models, 0);
        // 24 % used, but a process was killed: +max(512, 20 % of 4096 = 820) MB at once.
        assert_eq!(memory_of(&plan, 101), Some((4096, 4916)));
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "memory 24.4% with 1 OOM kill(s): 4096->4916 MB"
        );
        // Nearly idle afterwards: the cut the thresholds ask for is held for 24 h.
        w.snap.containers[0].extra.counters.oom_kill = Some(3);
        w.state.containers.get_mut(&101).unwrap().counters.oom_kill = Some(3);
        w.snap.containers[0].memory_current_bytes = Some(150 * MB);
        let plan = step(&mut w, &c, &mut models, 1);
        assert_eq!(memory_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec!["memory 2.0% < 20 but OOM kill seen, 86100 s left: memory unchanged (cut held)"]
        );
        // A day later the hold is over: at most half, in whole 512 MB chunks.
        let plan = step(&mut w, &c, &mut models, 288);
        assert_eq!(memory_of(&plan, 101), Some((4916, 2868)));
    }

    #[test]
    fn a_cut_right_after_a_scale_up_waits_for_the_cooldown_and_a_burst_after_a_cut_grows_at_once() {
        let c = Config::default();
        let mut w = World::roomy();
        w.ct(101, 2, 2048, 95.0, 800.0);
        let mut models = Models::default();
        // 1.9 cores on 2: up on one window, sized to 70 %: 3 cores.
        let plan = step(&mut w, &c, &mut models, 0);
        assert_eq!(cores_of(&plan, 101), Some((2, 3)));
        // The load falls to 0.1 cores at once: no cut for the hour of cooldown, which runs from
        // the first cycle that reads the grown allocation.
        let mut held = Vec::new();
        for k in 1..13 {
            load(&mut w, 101, 0.1);
            let plan = step(&mut w, &c, &mut models, k);
            assert_eq!(cores_of(&plan, 101), None, "cycle {k}");
            held.push(notes_of(&plan, 101).join(" | "));
        }
        assert_eq!(
            held[0],
            "cpu 3.3% < 70 (fits fewer cores) but scale-up cooldown, 3600 s left: cores unchanged (cut held)"
        );
        assert_eq!(
            held[11],
            "cpu 3.3% < 70 (fits fewer cores) but scale-up cooldown, 300 s left: cores unchanged (cut held)"
        );
        // An hour after the scale-up (the cooldown), with the 45 min window below: one cut, on the
        // window.
        load(&mut w, 101, 0.1);
        let plan = step(&mut w, &c, &mut models, 13);
        assert_eq!(cores_of(&plan, 101), Some((3, 1)));
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "cpu max over the last 2700 s 3.3% < 70 (fits fewer cores): cores 3->1"
        );
        // A burst right after the cut is met on the next window, not held back.
        load(&mut w, 101, 0.95);
        let plan = step(&mut w, &c, &mut models, 14);
        assert_eq!(cores_of(&plan, 101), Some((1, 2)));
    }

    /// Sets the used memory of `vmid` (the working set too: all page cache inactive).
    fn use_mb(w: &mut World, vmid: u32, used_mb: f64) {
        let c = w
            .snap
            .containers
            .iter_mut()
            .find(|c| c.vmid == vmid)
            .unwrap();
        c.memory_current_bytes = Some((used_mb * MB as f64).round() as u64 + 50 * MB);
    }

    #[test]
    fn a_memory_cut_waits_for_its_longer_window_then_goes_to_its_target_in_one_step() {
        let c = Config::default();
        let mut w = World::roomy();
        w.ct(101, 1, 8192, 10.0, 4000.0);
        let mut models = Models::default();
        assert_eq!(memory_of(&step(&mut w, &c, &mut models, 0), 101), None);
        // 500 MB from then on (6.1 %): the 4000 MB reading stays in memory's 6750 s window
        // (2.5 × scale_down_window, 12 buckets of 562.5 s) until cycle 23.
        use_mb(&mut w, 101, 500.0);
        for k in 1..23 {
            let plan = step(&mut w, &c, &mut models, k);
            assert_eq!(memory_of(&plan, 101), None, "cycle {k}");
        }
        let plan = step(&mut w, &c, &mut models, 23);
        // Due below 25 % (half the middle of the band) on the window; target max(500 ÷ 50 % =
        // 1000, 500 + 10 %) MB: 14 whole chunks of 512 go at once, not half.
        assert_eq!(memory_of(&plan, 101), Some((8192, 1024)));
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "memory max over the last 6750 s 6.1% < 25: 8192->1024 MB"
        );
        // The 4000 MB burst comes back: pinned at the allocation (99.6 %), memory grows to carry
        // the recent peak, 4000 MB halved per day (3775.5 MB after 2 h), at the upper threshold:
        // 4720 MB in one step, not 2040 MB (the pinned reading at 50 %) and then more.
        use_mb(&mut w, 101, 1020.0);
        let plan = step(&mut w, &c, &mut models, 24);
        assert_eq!(memory_of(&plan, 101), Some((1024, 4720)));
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "memory 99.6% > 80: 1024->4720 MB"
        );
    }

    #[test]
    fn a_daily_peak_is_anticipated_before_it_starts() {
        // 3 cores of demand from 09:00 to 10:00 every day, 0.3 otherwise.
        let c = Config::default();
        let mut w = World::roomy();
        w.ct(101, 1, 4096, 30.0, 2000.0);
        let mut models = Models::default();
        let mut grown_before_nine = Vec::new();
        for k in 0..(5 * 288) {
            let hour = (k / 12) % 24;
            let cores = f64::from(w.conf(101).cores.unwrap());
            // A real host never reads more than the allocation.
            let demand: f64 = if hour == 9 { 3.0 } else { 0.3 };
            load(&mut w, 101, demand.min(cores));
            let plan = step(&mut w, &c, &mut models, k);
            if hour == 8 {
                if let Some((from, to)) = cores_of(&plan, 101) {
                    grown_before_nine.push((k / 288, from, to, k % 12));
                    let why = change(&plan, 101).unwrap().why().to_string();
                    assert_eq!(why, "cpu expected at 09:00 275.0% > 80: cores 1->4");
                }
            }
        }
        // Four days to learn the hour (its mean is 2.75 cores: the first reading of 09:00 is
        // capped at the 1 core then allocated); on the fifth, the first cycle of 08:00 grows it:
        // 2.75 cores at 70 % is 4.
        assert_eq!(grown_before_nine, vec![(4, 1, 4, 0)]);
    }

    // --- stalls ---

    #[test]
    fn a_cpu_stall_grows_at_least_core_min_increment_with_the_model() {
        // Defaults (scale_down_window 2700): 4 cores at 50 % (2 cores of demand, which 4 cores
        // carry at 70 %), CPU PSI some avg10 30 % >= 20: counts like CPU above the upper
        // threshold, core_min_increment (1) more cores.
        let c = Config::default();
        let mut w = World::roomy();
        w.ct(101, 4, 4096, 50.0, 2000.0).extra.psi_cpu_some_avg10 = Some(30.0);
        let mut models = Models::default();
        let plan = step(&mut w, &c, &mut models, 0);
        assert_eq!(
            cores_of(&plan, 101),
            Some((4, 5)),
            "notes: {:?}",
            notes_of(&plan, 101)
        );
        assert_eq!(
            change(&plan, 101).unwrap().why().to_string(),
            "cpu pressure (some avg10) 30.0% >= 20: cores 4->5"
        );
        // Within the bounds: at max_cores the stall is a note.
        let c = cfg("max_cores = 4\n");
        let plan = step(&mut w, &c, &mut Models::default(), 0);
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec![
                "cpu pressure (some avg10) 30.0% >= 20 but already at max_cores 4: cores unchanged"
            ]
        );
    }

    #[test]
    fn a_cpu_stall_under_a_binding_cpulimit_grows_no_cores_and_says_why() {
        let c = Config::default();
        let mut w = World::roomy();
        // 1 CPU of demand on 4 cores limited to 2 CPUs: 50 % of the limit.
        w.ct(101, 4, 4096, 25.0, 2000.0).extra.psi_cpu_some_avg10 = Some(30.0);
        w.conf(101).cpulimit = Some(2.0);
        let plan = step(&mut w, &c, &mut Models::default(), 0);
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(notes_of(&plan, 101), vec![
                "cpu pressure (some avg10) 30.0% >= 20 but cpulimit 2 binds, more cores would not help: cores unchanged"
            ]
        );
    }

    // --- manual holds ---

    const HOUR_USEC: i64 = 3_600_000_000;

    #[test]
    fn a_held_scale_up_leaves_its_headroom_to_another_container() {
        // 10 CPUs, 10 % reserve: 9 usable, 7 busy: 2 cores of headroom.
        let c = cfg("");
        let mut w = World::new(10, 7.0, 65_536);
        w.ct(101, 2, 4096, 100.0, 1000.0); // wants 2 -> 4, farthest above
        w.ct(102, 2, 4096, 85.0, 1000.0); // wants 2 -> 4
        hold::add_hold(
            &mut w.state.holds,
            101,
            Resource::Cpu,
            NOW_AT + HOUR_USEC,
            "api",
        );
        let plan = w.decide(&c);
        assert_eq!(cores_of(&plan, 101), None);
        assert_eq!(
            notes_of(&plan, 101),
            vec!["cpu on hold until 2023-11-14T23:18:20Z after a manual change by api: cores unchanged"]
        );
        // 101 is held: its 2 cores of headroom are free for 102.
        assert_eq!(
            cores_of(&plan, 102),
            Some((2, 4)),
            "notes: {:?}",
            notes_of(&plan, 102)
        );
    }

    #[test]
    fn a_held_resource_is_left_out_of_the_change_with_a_typed_note() {
        let c = Config::default();
        let mut w = World::roomy();
        w.ct(101, 2, 1024, 92.0, 860.0);
        let unheld = w.decide(&c);
        assert_eq!(cores_of(&unheld, 101), Some((2, 4)));
        assert_eq!(memory_of(&unheld, 101), Some((1024, 1720)));
        hold::add_hold(&mut w.state.holds, 101, Resource::Cpu, NOW_AT + 1, "uid 0");
        let plan = w.decide(&c);
        let held = change(&plan, 101).unwrap();
        assert_eq!(
            (held.cores, memory_of(&plan, 101)),
            (None, Some((1024, 1720)))
        );
        assert_eq!(held.why().to_string(), "memory 84.0% > 80: 1024->1720 MB");
        assert_eq!(
            plan.notes,
            vec![Note {
                vmid: 101,
                reason: Reason::Held {
                    resource: Resource::Cpu,
                    until_usec: NOW_AT + 1,
                    by: "uid 0".into(),
                },
            }]
        );
        // Both held: no change. A hold that ended holds nothing.
        hold::add_hold(
            &mut w.state.holds,
            101,
            Resource::Memory,
            NOW_AT + 1,
            "uid 0",
        );
        let plan = w.decide(&c);
        assert_eq!((change(&plan, 101), plan.notes.len()), (None, 2));
        at_cycle(&mut w, 1);
        let plan = w.decide(&c);
        assert_eq!(cores_of(&plan, 101), Some((2, 4)));
        assert_eq!(memory_of(&plan, 101), Some((1024, 1720)));
    }

    // --- gaps in the readings ---

    #[test]
    fn a_memory_cut_needs_readings_across_the_window_not_one_after_a_gap() {
        let c = Config::default();
        let mut w = World::roomy();
        w.ct(101, 1, 8192, 10.0, 4000.0);
        let mut models = Models::default();
        for k in 0..30 {
            assert_eq!(memory_of(&step(&mut w, &c, &mut models, k), 101), None);
        }
        // memory.stat unreadable for 110 min (cycles 30..=51): no memory figure at all.
        w.snap.containers[0].memory_file_bytes = None;
        for k in 30..52 {
            let plan = step(&mut w, &c, &mut models, k);
            assert_eq!(memory_of(&plan, 101), None, "cycle {k}");
        }
        // It reads again, 500 MB: one reading in the whole 6750 s window.
        w.snap.containers[0].memory_file_bytes = Some(50 * MB);
        use_mb(&mut w, 101, 500.0);
        let plan = step(&mut w, &c, &mut models, 52);
        assert_eq!(
            memory_of(&plan, 101),
            None,
            "cut on one reading after a 115 min gap: {:?}",
            change(&plan, 101).map(|c| c.why().to_string())
        );
        // Readings across the window again, less its newest bucket (6187.5 s, 20.6 cycles): then
        // the cut comes.
        for k in 53..73 {
            let plan = step(&mut w, &c, &mut models, k);
            assert_eq!(memory_of(&plan, 101), None, "cycle {k}");
        }
        assert_eq!(
            memory_of(&step(&mut w, &c, &mut models, 73), 101),
            Some((8192, 1024))
        );
    }

    #[test]
    fn a_core_cut_needs_readings_across_the_window_not_one_after_a_gap() {
        let c = Config::default();
        let mut w = World::roomy();
        w.ct(101, 4, 4096, 70.0, 1000.0);
        let mut models = Models::default();
        for k in 0..12 {
            assert_eq!(cores_of(&step(&mut w, &c, &mut models, k), 101), None);
        }
        // No cpu figure for 40 min (cycles 12..=19), shorter than window + bucket (2925 s).
        w.snap.containers[0].cpu_usage_usec = None;
        for k in 12..20 {
            let plan = step(&mut w, &c, &mut models, k);
            assert_eq!(cores_of(&plan, 101), None, "cycle {k}");
        }
        // Nearly idle on the first reading back: one reading in the 2700 s window.
        load(&mut w, 101, 0.1);
        let plan = step(&mut w, &c, &mut models, 20);
        assert_eq!(
            cores_of(&plan, 101),
            None,
            "cut on one reading after a 45 min gap: {:?}",
            change(&plan, 101).map(|c| c.why().to_string())
        );
        // Readings across the window again, less its newest bucket (2475 s, 8.25 cycles): then the
        // cut comes.
        for k in 21..29 {
            load(&mut w, 101, 0.1);
            let plan = step(&mut w, &c, &mut models, k);
            assert_eq!(cores_of(&plan, 101), None, "cycle {k}");
        }
        load(&mut w, 101, 0.1);
        assert_eq!(
            cores_of(&step(&mut w, &c, &mut models, 29), 101),
            Some((4, 1))
        );
    }
}
