//! What one cycle decided, as typed data. Nothing here does IO.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What one cycle decided. Dry-run, status and replay all print or apply this unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Decisions not to act, or to act less, with the reason.
    pub notes: Vec<Note>,
    /// What was measured for each container, whether or not it changes.
    pub observations: Vec<Observation>,
    /// Anomaly episodes that opened this cycle (only with the model).
    pub anomalies: Vec<AnomalyOnset>,
    /// Scale-ups the host could not give in full (cut to, or dropped below, its headroom): what
    /// another node would have to give. Filed in the node's cluster status file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shortfalls: Vec<Shortfall>,
    /// The host headroom after reserves the grants started from, before this cycle's scale-ups.
    #[serde(skip_serializing_if = "Headroom::is_unknown")]
    pub headroom: Headroom,
}

/// A scale-up of one resource that does not fit on this host: `wanted` was asked for, `granted`
/// given (0 when the headroom was below the minimum step). Cores for cpu, MB for memory; both are
/// amounts added to `allocated`, the allocation before the scale-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub vmid: u32,
    pub resource: Resource,
    pub allocated: u64,
    pub wanted: u64,
    pub granted: u64,
}

impl Shortfall {
    /// What is missing: `wanted − granted`.
    pub fn missing(&self) -> u64 {
        self.wanted.saturating_sub(self.granted)
    }
}

/// Host headroom after reserves: usable cores minus busy cores, and `MemAvailable` minus
/// `reserve_memory_mb` in MB. `None` = unknown this cycle. May be negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Headroom {
    pub cores: Option<f64>,
    pub memory_mb: Option<f64>,
}

impl Headroom {
    pub fn is_unknown(&self) -> bool {
        self.cores.is_none() && self.memory_mb.is_none()
    }
}

/// An anomaly episode of one resource of one container that opened this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnomalyOnset {
    pub vmid: u32,
    pub resource: Resource,
    #[serde(flatten)]
    pub onset: crate::decide::anomaly::Onset,
}

impl fmt::Display for AnomalyOnset {
    /// One line: `cpu anomaly up: 3.20 cores against a learned 1.00 (score 6.4)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::decide::anomaly::Direction;
        let dir = match self.onset.direction {
            Direction::Up => "up",
            Direction::Down => "down",
        };
        let unit = match self.resource {
            Resource::Cpu => " cores",
            Resource::Memory => " MB",
        };
        write!(
            f,
            "{} anomaly {dir}: {:.2}{unit} against a learned {:.2}{unit} (score {:.1})",
            self.resource, self.onset.value, self.onset.baseline, self.onset.score
        )
    }
}

impl Reading {
    /// The same reading, as statistic `stat`.
    pub fn with(mut self, stat: Stat) -> Reading {
        self.stat = stat;
        self
    }
}

/// A move of one resource from one value to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step<T> {
    pub from: T,
    pub to: T,
}

/// One `pct set` worth of change for one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub vmid: u32,
    /// `None` = cores unchanged. `from` is the effective count (host CPUs when `cores` is absent).
    pub cores: Option<Step<u32>>,
    /// `None` = memory unchanged. MB.
    pub memory_mb: Option<Step<u64>>,
    /// Why each part moves, cores first. Printed joined by `; ` (see `Change::why`).
    pub reasons: Vec<Reason>,
}

impl Change {
    /// The reasons as one line: `cpu 92.0% > 80: cores 2->4; memory 84.0% > 80: 1024->1720 MB`.
    pub fn why(&self) -> Why<'_> {
        Why(&self.reasons)
    }
}

/// A decision not to act, or to act less, for one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Note {
    pub vmid: u32,
    pub reason: Reason,
}

/// Which resource a reason is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Cpu,
    Memory,
}

/// Which threshold rule a measurement met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Above the upper threshold: scale up.
    AboveUpper,
    /// Below the lower threshold: scale down towards the middle of the band.
    BelowLower,
    /// Below the upper threshold while energy mode is in force: scale down towards the upper one.
    BelowUpperEnergy,
    /// With the model: the basis (the window's maximum) would fit in fewer cores at the packing
    /// level (`threshold`, 10 points below the upper threshold): cut to that level.
    BelowPack,
    /// Processes were OOM-killed since the last cycle: grow memory at once.
    OomKill { kills: u64 },
    /// Pressure stall information (`percent` is PSI `avg10`) at or above `threshold`: the
    /// container waits for this resource; counts like being above the upper threshold.
    Stalled,
}

/// Which statistic of the container's history a reading is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stat", rename_all = "snake_case")]
pub enum Stat {
    /// The latest sampling window.
    #[default]
    Current,
    /// The maximum over the last `secs` seconds (`scale_down_window`).
    WindowMax { secs: u64 },
    /// The daily profile's expected maximum of the local hour starting at `hour`.
    Forecast { hour: u32 },
    /// PSI `some avg10` of the resource's pressure file (`full` for `full avg10`).
    Pressure { full: bool },
    /// The share of the window the cgroup was throttled (`cpu.stat` `throttled_usec`).
    Throttled,
}

/// Why a cut the thresholds asked for is not made this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "hold", rename_all = "snake_case")]
pub enum Hold {
    /// The maximum over the last `secs` seconds, `percent` of the allocation, is not below
    /// `threshold`: the recent history does not agree.
    Window {
        percent: f64,
        threshold: f64,
        secs: u64,
    },
    /// Fewer than `secs` seconds of history so far (`covered_secs`).
    History { covered_secs: u64, secs: u64 },
    /// `left_secs` of the `scale_down_cooldown` after a scale-up remain.
    Cooldown { left_secs: u64 },
    /// An OOM kill was seen: memory cuts are held for `left_secs` more.
    OomKill { left_secs: u64 },
    /// Memory pressure (PSI `some avg10`, percent) is above zero.
    Pressure { some_avg10: f64 },
    /// An anomaly episode of the resource is open (`score`: deviations).
    Anomaly { score: f64 },
    /// The daily profile expects `percent` of the allocation within the next hour.
    Forecast { percent: f64, hour: u32 },
    /// The container arrived on this node (cluster mode) with restarted counters: no cut for
    /// `left_secs` more.
    Arrived { left_secs: u64 },
}

/// A measured percent against the threshold its rule compares it with, e.g. `cpu 92.0% > 80`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub resource: Resource,
    /// Percent of the effective CPU allocation (cpu) or of the configured memory (memory).
    pub percent: f64,
    /// The threshold of `rule`, percent.
    pub threshold: f64,
    pub rule: Rule,
    /// Which statistic `percent` is (the latest window unless the model says otherwise); its
    /// fields sit beside the others (`"stat": "window_max", "secs": 3600`), absent for the latest.
    #[serde(flatten, default, skip_serializing_if = "Stat::is_current")]
    pub stat: Stat,
}

/// A limit that stopped a scale-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    MaxCores(u32),
    /// MB.
    MaxMemory(u64),
}

/// Why a change was planned, or why it was not. Amounts are cores for `Resource::Cpu` and MB for
/// `Resource::Memory`. Text is made only by `Display`, at the edges (log, status, notifications);
/// the log level by `log_level`. New variants need a `Display` arm and a `log_level` arm.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A resource moves `from` -> `to`; `cut` when host headroom allowed less than wanted.
    Scaled {
        reading: Reading,
        from: u64,
        to: u64,
        cut: bool,
    },
    /// Asked for through the API by `caller` (peer address or `uid N`).
    Requested { caller: String },
    /// Left alone until `until_usec` (µs since the epoch) after a manual change by `by`.
    Held {
        resource: Resource,
        until_usec: i64,
        by: String,
    },
    /// No readable conf for a running container.
    NoConf,
    /// Listed in `ignore_lxc`.
    Ignored,
    /// Tagged `noautoscale`.
    OptedOut,
    /// The conf has a `lock:` line with this value (backup, snapshot, migrate, ...).
    Locked { lock: String },
    /// No `cores` line and the host CPU count is unread.
    CoresUnknown,
    /// No usable measurement of `resource` this cycle.
    NotMeasured { resource: Resource },
    /// CPU is high but `cpulimit` (CPUs) binds below the core count.
    CpulimitBinds { reading: Reading, cpulimit: f64 },
    /// The scale-up would pass `bound`.
    AtBound { reading: Reading, bound: Bound },
    /// A scale-up of `wanted` with host headroom unknown.
    HeadroomUnknown { reading: Reading, wanted: u64 },
    /// A scale-up of `wanted` where the host headroom is below the minimum step.
    HeadroomBelowMinIncrement {
        reading: Reading,
        wanted: u64,
        headroom: f64,
        min_increment: u64,
    },
    /// The thresholds ask for a cut (`reading`, the latest window) but the model holds it.
    CutHeld { reading: Reading, hold: Hold },
    /// A scale-up of `wanted` cores cut to `granted` (0 = none) because the host has only
    /// `usable` whole cores after `reserve_cpu_percent`: this node can never give more, so it is
    /// a shortfall for placement advice like a cut to the headroom.
    CutToHostCores {
        reading: Reading,
        wanted: u64,
        granted: u64,
        usable: u32,
    },
    /// A scale-up of `wanted` cut to `granted` by the host headroom.
    CutToHeadroom {
        resource: Resource,
        wanted: u64,
        granted: u64,
        headroom: f64,
    },
}

/// The level a reason is logged at. The daemon maps it onto its logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Repeats every cycle by the admin's choice: only with `--verbose`.
    Debug,
    Info,
}

impl Reason {
    /// Containers the admin excluded on purpose repeat the same note every cycle, so theirs are
    /// debug; everything else is news.
    pub fn log_level(&self) -> Level {
        match self {
            // A held cut repeats every cycle until the history agrees.
            Reason::Ignored | Reason::OptedOut | Reason::CutHeld { .. } => Level::Debug,
            Reason::Scaled { .. }
            | Reason::Requested { .. }
            | Reason::Held { .. }
            | Reason::NoConf
            | Reason::Locked { .. }
            | Reason::CoresUnknown
            | Reason::NotMeasured { .. }
            | Reason::CpulimitBinds { .. }
            | Reason::AtBound { .. }
            | Reason::HeadroomUnknown { .. }
            | Reason::HeadroomBelowMinIncrement { .. }
            | Reason::CutToHostCores { .. }
            | Reason::CutToHeadroom { .. } => Level::Info,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        })
    }
}

impl Stat {
    pub fn is_current(&self) -> bool {
        *self == Stat::Current
    }
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stat::Current => Ok(()),
            Stat::WindowMax { secs } => write!(f, " max over the last {secs} s"),
            Stat::Forecast { hour } => write!(f, " expected at {hour:02}:00"),
            Stat::Pressure { full: false } => f.write_str(" pressure (some avg10)"),
            Stat::Pressure { full: true } => f.write_str(" pressure (full avg10)"),
            Stat::Throttled => f.write_str(" throttled"),
        }
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, suffix) = match self.rule {
            Rule::AboveUpper | Rule::Stalled => (">=", ""),
            Rule::BelowLower => ("<", ""),
            Rule::BelowUpperEnergy => ("<", " (energy mode)"),
            Rule::BelowPack => ("<", " (fits fewer cores)"),
            Rule::OomKill { kills } => {
                return write!(
                    f,
                    "{} {:.1}% with {kills} OOM kill(s)",
                    self.resource, self.percent
                )
            }
        };
        // `>` for the classic rule keeps today's text; a stall is "at or above".
        let op = if self.rule == Rule::AboveUpper {
            ">"
        } else {
            op
        };
        write!(
            f,
            "{}{} {:.1}% {op} {}{suffix}",
            self.resource, self.stat, self.percent, self.threshold
        )
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Window {
                percent,
                threshold,
                secs,
            } => write!(
                f,
                "max over the last {secs} s is {percent:.1}%, not below {threshold}"
            ),
            Hold::History { covered_secs, secs } => {
                write!(f, "{covered_secs} s of history, {secs} s needed")
            }
            Hold::Cooldown { left_secs } => {
                write!(f, "scale-up cooldown, {left_secs} s left")
            }
            Hold::OomKill { left_secs } => write!(f, "OOM kill seen, {left_secs} s left"),
            Hold::Pressure { some_avg10 } => {
                write!(f, "memory pressure some avg10 {some_avg10:.2}% > 0")
            }
            Hold::Anomaly { score } => write!(f, "anomaly open (score {score:.1})"),
            Hold::Forecast { percent, hour } => {
                write!(f, "{percent:.1}% expected at {hour:02}:00")
            }
            Hold::Arrived { left_secs } => {
                write!(f, "arrived on this node, {left_secs} s left")
            }
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::MaxCores(n) => write!(f, "max_cores {n}"),
            Bound::MaxMemory(mb) => write!(f, "max_memory {mb} MB"),
        }
    }
}

/// `+3` for cores, `+512 MB` for memory.
struct Plus(Resource, u64);

impl fmt::Display for Plus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Resource::Cpu => write!(f, "+{}", self.1),
            Resource::Memory => write!(f, "+{} MB", self.1),
        }
    }
}

/// What a resource is called where its unit comes after the number.
fn unchanged(resource: Resource) -> &'static str {
    match resource {
        Resource::Cpu => "cores unchanged",
        Resource::Memory => "memory unchanged",
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Scaled {
                reading,
                from,
                to,
                cut,
            } => {
                match reading.resource {
                    Resource::Cpu => write!(f, "{reading}: cores {from}->{to}")?,
                    Resource::Memory => write!(f, "{reading}: {from}->{to} MB")?,
                }
                if *cut {
                    f.write_str(" (cut to host headroom)")?;
                }
                Ok(())
            }
            Reason::Requested { .. } | Reason::Held { .. } => fmt_manual(self, f),
            Reason::NoConf => f.write_str("no readable conf: not managed"),
            Reason::Ignored => f.write_str("listed in ignore_lxc: not managed"),
            Reason::OptedOut => f.write_str("tagged noautoscale: not managed"),
            Reason::Locked { lock } => write!(f, "locked ({lock}): not changed this cycle"),
            Reason::CoresUnknown => f.write_str(
                "cores unknown (no cores line, host cpus unread): cores unchanged",
            ),
            Reason::NotMeasured { resource } => write!(
                f,
                "{resource} not measured this cycle: {}",
                unchanged(*resource)
            ),
            Reason::CpulimitBinds { reading, cpulimit } => write!(
                f,
                "{reading} but cpulimit {cpulimit} binds, more cores would not help: cores unchanged"
            ),
            Reason::CutHeld { reading, hold } => fmt_cut_held(reading, hold, f),
            Reason::AtBound { reading, bound } => write!(
                f,
                "{reading} but already at {bound}: {}",
                unchanged(reading.resource)
            ),
            Reason::CutToHostCores { .. }
            | Reason::HeadroomUnknown { .. }
            | Reason::HeadroomBelowMinIncrement { .. }
            | Reason::CutToHeadroom { .. } => fmt_grant(self, f),
        }
    }
}

/// The reasons a scale-up was cut or dropped by what the host can give.
fn fmt_grant(reason: &Reason, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match reason {
            Reason::CutToHostCores {
                reading,
                wanted,
                granted,
                usable,
            } => write!(
                f,
                "{reading} wants +{wanted} cores but the host has {usable} usable cores: granted +{granted}"
            ),
            Reason::HeadroomUnknown { reading, wanted } => write!(
                f,
                "{reading} wants {}: host {} headroom unknown, not scaled up",
                Plus(reading.resource, *wanted),
                reading.resource
            ),
            Reason::HeadroomBelowMinIncrement {
                reading,
                wanted,
                headroom,
                min_increment,
            } => {
                let plus = Plus(reading.resource, *wanted);
                match reading.resource {
                    Resource::Cpu => write!(
                        f,
                        "{reading} wants {plus}: host headroom {headroom:.1} cores is below core_min_increment {min_increment}, not scaled up"
                    ),
                    Resource::Memory => write!(
                        f,
                        "{reading} wants {plus}: host headroom {headroom:.0} MB is below memory_min_increment {min_increment}, not scaled up"
                    ),
                }
            }
            Reason::CutToHeadroom {
                resource,
                wanted,
                granted,
                headroom,
            } => match resource {
                Resource::Cpu => write!(
                    f,
                    "cpu cut from +{wanted} to +{granted} {}: host headroom {headroom:.1} cores",
                    if *granted == 1 { "core" } else { "cores" }
                ),
                Resource::Memory => write!(
                    f,
                    "memory cut from +{wanted} to +{granted} MB: host headroom {headroom:.0} MB"
                ),
            },
        _ => Ok(()),
    }
}

/// `cpu 12.0% < 20 but scale-up cooldown, 600 s left: cores unchanged (cut held)`.
fn fmt_cut_held(reading: &Reading, hold: &Hold, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(
        f,
        "{reading} but {hold}: {} (cut held)",
        unchanged(reading.resource)
    )
}

/// The reasons of manual changes: `requested through the api by uid 0`, and
/// `cpu on hold until 2026-01-01T10:00:00Z after a manual change by uid 0: cores unchanged`.
fn fmt_manual(reason: &Reason, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match reason {
        Reason::Requested { caller } => write!(f, "requested through the api by {caller}"),
        Reason::Held {
            resource,
            until_usec,
            by,
        } => {
            let until = chrono::DateTime::from_timestamp_micros(*until_usec).map_or_else(
                || until_usec.to_string(),
                |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
            let unchanged = unchanged(*resource);
            write!(
                f,
                "{resource} on hold until {until} after a manual change by {by}: {unchanged}"
            )
        }
        _ => Ok(()),
    }
}

/// Reasons joined by `; `, as `Change::why` gives them.
pub struct Why<'a>(pub &'a [Reason]);

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Why a container is not managed this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Managed {
    Yes,
    /// Listed in `ignore_lxc`.
    Ignored,
    /// Tagged `noautoscale`.
    OptedOut,
    /// Its conf has a `lock:` line.
    Locked,
    /// No readable conf for a running container.
    NoConf,
}

/// Measured figures of one container, as the decision saw them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    pub vmid: u32,
    pub name: Option<String>,
    pub tier: Option<String>,
    pub managed: Managed,
    /// Effective cores (host CPUs when `cores` is absent).
    pub cores: Option<u32>,
    pub memory_mb: Option<u64>,
    /// Percent of the effective CPU allocation, over the sampling window.
    pub cpu_percent: Option<f64>,
    /// Used memory (current − page cache) in MB.
    pub memory_used_mb: Option<f64>,
    /// Used memory as a percent of `memory_mb`.
    pub memory_percent: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_above(percent: f64) -> Reading {
        Reading {
            resource: Resource::Cpu,
            percent,
            threshold: 80.0,
            rule: Rule::AboveUpper,
            stat: Stat::Current,
        }
    }

    #[test]
    fn reasons_serialize_as_tagged_data() {
        let scaled = Reason::Scaled {
            reading: cpu_above(92.0),
            from: 2,
            to: 4,
            cut: false,
        };
        assert_eq!(
            serde_json::to_value(&scaled).unwrap(),
            serde_json::json!({
                "kind": "scaled",
                "reading": {"resource": "cpu", "percent": 92.0, "threshold": 80.0, "rule": "above_upper"},
                "from": 2, "to": 4, "cut": false
            })
        );
        let bound = Reason::AtBound {
            reading: cpu_above(95.0),
            bound: Bound::MaxCores(4),
        };
        assert_eq!(
            serde_json::to_value(&bound).unwrap()["bound"],
            serde_json::json!({"max_cores": 4})
        );
        assert_eq!(
            serde_json::to_value(Reason::Ignored).unwrap(),
            serde_json::json!({"kind": "ignored"})
        );
    }

    #[test]
    fn a_change_reads_as_its_reasons_joined() {
        let memory = Reading {
            resource: Resource::Memory,
            percent: 84.0,
            threshold: 80.0,
            rule: Rule::AboveUpper,
            stat: Stat::Current,
        };
        let energy = Reading {
            resource: Resource::Cpu,
            percent: 30.0,
            threshold: 80.0,
            rule: Rule::BelowUpperEnergy,
            stat: Stat::Current,
        };
        let change = Change {
            vmid: 101,
            cores: Some(Step { from: 4, to: 2 }),
            memory_mb: Some(Step {
                from: 1024,
                to: 1720,
            }),
            reasons: vec![
                Reason::Scaled {
                    reading: energy,
                    from: 4,
                    to: 2,
                    cut: false,
                },
                Reason::Scaled {
                    reading: memory,
                    from: 1024,
                    to: 1720,
                    cut: true,
                },
            ],
        };
        assert_eq!(
            change.why().to_string(),
            "cpu 30.0% < 80 (energy mode): cores 4->2; memory 84.0% > 80: 1024->1720 MB (cut to host headroom)"
        );
    }
}
