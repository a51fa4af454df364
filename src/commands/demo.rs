//! `lxc_autoscale demo`: the real engine (collect -> decide -> apply, backups included) against a
//! simulated host built in a temp dir, one simulated hour per cycle. Needs no root and no Proxmox.
//!
//! The model learns from history, so the demo first runs the same loop silently over
//! `HISTORY_DAYS` simulated days (what a daemon installed two weeks ago would have learned), then
//! prints `cycles` live ones, in which two incidents happen: a runaway process in CT 101 and the
//! database service of CT 106 dying. The anomaly detector catches both; each episode start is
//! written to the event log as the daemon writes it.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::act::apply::{self, NotApplied, Target};
use crate::act::backup::BackupStore;
use crate::act::pct::{PctOutcome, PctRunner};
use crate::config::{self, Config};
use crate::decide::model::Models;
use crate::decide::plan::Plan;
use crate::decide::policy;
use crate::read::collect::Collector;
use crate::read::hostfiles::{self, CpuStatFile, HostFiles, MemoryStatFile};
use crate::read::snapshot::State;
use crate::record::events::{AnomalyFields, EventLog};

/// Simulated time between cycles.
const STEP_SECS: i64 = 3600;
/// Simulated days run silently before the printed cycles, so the model has a history to learn
/// from (the anomaly detector's warm-up is 288 readings: 12 days at one reading an hour).
const HISTORY_DAYS: u32 = 14;
/// Live cycle at which CT 101 gets a runaway process (16:00), and at which CT 106's database
/// service dies (12:00).
const RUNAWAY_CYCLE: u32 = 8;
const DEATH_CYCLE: u32 = 4;
const HOST_CPUS: u32 = 16;
const HOST_MEM_MB: u64 = 65_536;
/// Linux reports /proc/stat in USER_HZ ticks.
const USER_HZ: u64 = 100;
const MIB: u64 = 1024 * 1024;

/// How a simulated container behaves: demand in cores and used memory in MB at an hour of the day.
#[derive(Clone, Copy)]
enum Shape {
    Steady,
    Spiky,
    GrowingMemory,
    IdleAtNight,
    Busy,
}

struct SimCt {
    vmid: u32,
    name: &'static str,
    shape: Shape,
    cores: u32,
    memory_mb: u64,
    extra_conf: &'static str,
    usage_usec: u64,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::Steady => "steady",
            Shape::Spiky => "spiky",
            Shape::GrowingMemory => "fills, 03:00 reset",
            Shape::IdleAtNight => "idle at night",
            Shape::Busy => "busy (opted out)",
        }
    }

    /// (demand cores, used MB) at local `hour`.
    fn load(self, hour: u32) -> (f64, u64) {
        let day = (8..22).contains(&hour);
        match self {
            Shape::Steady => (1.5, 700),
            Shape::Spiky => {
                if matches!(hour, 10 | 11 | 15) {
                    (3.8, 1400)
                } else {
                    (0.4, 900)
                }
            }
            // A cache that fills up all day and is restarted at 03:00.
            Shape::GrowingMemory => (0.3, 600 + 40 * u64::from((hour + 21) % 24)),
            Shape::IdleAtNight => {
                if day {
                    (2.6, 2600)
                } else {
                    (0.1, 500)
                }
            }
            Shape::Busy => (3.9, 3000),
        }
    }
}

/// The live incidents: (demand cores, used MB) that replace a container's usual load.
fn incident(vmid: u32, cycle: u32) -> Option<(f64, u64)> {
    match vmid {
        // A runaway process: every core it can get.
        101 if cycle >= RUNAWAY_CYCLE => Some((16.0, 700)),
        // The database service died: the container idles with its memory freed.
        106 if cycle >= DEATH_CYCLE => Some((0.02, 150)),
        _ => None,
    }
}

/// A temp dir removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let base = std::env::temp_dir().join(format!(
            "lxc_autoscale-demo-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&base)
            .with_context(|| format!("cannot create {}", base.display()))?;
        Ok(Scratch(base))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stands in for `pct set`: rewrites the conf's main section, as Proxmox does.
struct SimPct {
    conf_dir: PathBuf,
    calls: usize,
}

impl PctRunner for SimPct {
    fn run(&mut self, argv: &[String]) -> PctOutcome {
        self.calls += 1;
        match rewrite_conf(&self.conf_dir, argv) {
            Ok(()) => PctOutcome::Ok,
            Err(e) => PctOutcome::Failed {
                code: Some(255),
                stderr: format!("{e:#}"),
            },
        }
    }
}

/// Applies `set <vmid> -cores N -memory M` to the main section of `<dir>/<vmid>.conf`.
fn rewrite_conf(dir: &Path, argv: &[String]) -> Result<()> {
    let [cmd, vmid, opts @ ..] = argv else {
        anyhow::bail!("usage: set <vmid> [-cores N] [-memory M]");
    };
    anyhow::ensure!(cmd == "set", "unsupported command {cmd}");
    let path = dir.join(format!("{vmid}.conf"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut main: Vec<String> = Vec::new();
    let mut rest = String::new();
    let mut in_main = true;
    for line in text.lines() {
        if line.starts_with('[') {
            in_main = false;
        }
        if in_main {
            main.push(line.to_string());
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    for pair in opts.chunks(2) {
        let [opt, value] = pair else {
            anyhow::bail!("option without value");
        };
        let key = opt.trim_start_matches('-');
        main.retain(|l| !l.starts_with(&format!("{key}:")));
        if key != "delete" {
            main.push(format!("{key}: {value}"));
        }
    }
    main.sort();
    let mut out = main.join("\n");
    out.push('\n');
    if !rest.is_empty() {
        out.push('\n');
        out.push_str(&rest);
    }
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
}

fn demo_config(root: &Path) -> Result<Config> {
    let text = format!(
        r#"
poll_interval = {STEP_SECS}
# One cycle per simulated hour: the model's window and cooldown span several cycles.
scale_down_window = 21600
scale_down_cooldown = 7200
energy_mode = true
off_peak_start = 22
off_peak_end = 6
reserve_memory_mb = 4096
cgroup_root = "{root}/cgroup/lxc"
pve_lxc_dir = "{root}/pve/lxc"
proc_root = "{root}/proc"
pct_path = "/usr/sbin/pct"
backup_dir = "{root}/backups"
state_file = "{root}/state.json"
log_file = "{root}/lxc_autoscale.log"
lock_file = "{root}/lxc_autoscale.lock"

[tiers.critical]
containers = [106]
priority = 10
min_cores = 2
min_memory = 2048
"#,
        root = root.display()
    );
    config::parse(&text)
}

fn containers() -> Vec<SimCt> {
    let ct = |vmid, name, shape, cores, memory_mb, extra_conf| SimCt {
        vmid,
        name,
        shape,
        cores,
        memory_mb,
        extra_conf,
        usage_usec: 0,
    };
    vec![
        ct(101, "web", Shape::Steady, 8, 4096, ""),
        ct(102, "api", Shape::Spiky, 2, 2048, ""),
        ct(103, "cache", Shape::GrowingMemory, 1, 1024, ""),
        ct(104, "batch", Shape::IdleAtNight, 4, 4096, ""),
        ct(105, "legacy", Shape::Busy, 4, 4096, "tags: noautoscale\n"),
        ct(106, "db", Shape::Steady, 4, 8192, ""),
    ]
}

/// The simulated host on disk.
struct Host {
    files: HostFiles,
    cts: Vec<SimCt>,
    busy_ticks: u64,
    total_ticks: u64,
}

impl Host {
    fn create(files: HostFiles) -> Result<Host> {
        let cts = containers();
        files.create_roots()?;
        for c in &cts {
            files.create_cgroup(c.vmid)?;
            files.write_conf(
                c.vmid,
                &format!(
                    "arch: amd64\ncores: {}\nhostname: {}\nmemory: {}\nswap: 512\n{}",
                    c.cores, c.name, c.memory_mb, c.extra_conf
                ),
            )?;
        }
        Ok(Host {
            files,
            cts,
            busy_ticks: 0,
            total_ticks: 0,
        })
    }

    /// Current allocation from the conf, as `pct` left it.
    fn allocation(&self, vmid: u32) -> Result<(u32, u64)> {
        let path = self.files.conf_path(vmid);
        let text = std::fs::read_to_string(&path)?;
        let conf = crate::read::pveconf::parse_conf(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok((conf.cores.unwrap_or(HOST_CPUS), conf.memory_mb))
    }

    /// Advances the counters by `dt_secs` of the load at `hour`, and rewrites every file.
    fn advance(&mut self, dt_secs: i64, hour: u32, cycle: u32) -> Result<()> {
        let dt_usec = u64::try_from(dt_secs).unwrap_or(0) * 1_000_000;
        let mut used_total_mb = 0;
        let mut busy_cores = 0.0;
        for i in 0..self.cts.len() {
            let (cores, memory_mb) = self.allocation(self.cts[i].vmid)?;
            let c = &mut self.cts[i];
            let (demand, used_mb) = incident(c.vmid, cycle).unwrap_or_else(|| c.shape.load(hour));
            let granted = demand.min(f64::from(cores));
            c.usage_usec += (granted * dt_usec as f64) as u64;
            busy_cores += granted;
            let used_mb = used_mb.min(memory_mb);
            used_total_mb += used_mb;
            let cache_mb = (memory_mb - used_mb) / 4;
            let cpu = CpuStatFile {
                usage_usec: c.usage_usec,
                user_usec: c.usage_usec / 10 * 9,
                system_usec: c.usage_usec / 10,
                throttling: None,
            };
            self.files.write_cpu_stat(c.vmid, &cpu)?;
            let memory = MemoryStatFile {
                anon_bytes: used_mb * MIB,
                file_bytes: cache_mb * MIB,
                shmem_bytes: Some(0),
                inactive_file_bytes: Some(cache_mb * MIB),
            };
            self.files
                .write_memory(c.vmid, (used_mb + cache_mb) * MIB, &memory)?;
        }
        let dt_ticks = u64::try_from(dt_secs).unwrap_or(0) * USER_HZ;
        self.total_ticks += dt_ticks * u64::from(HOST_CPUS);
        self.busy_ticks += (busy_cores * dt_ticks as f64) as u64;
        let ticks = hostfiles::busy_ticks(self.busy_ticks, self.total_ticks);
        self.files
            .write_proc_stat(ticks, HOST_CPUS, 1_700_000_000)?;
        let total_kib = HOST_MEM_MB * 1024;
        let avail_kib = total_kib.saturating_sub((used_total_mb + 2048) * 1024);
        self.files.write_meminfo(total_kib, avail_kib)
    }
}

fn render_cycle(out: &mut String, c: &Cycle, engine: &Engine) {
    let energy = policy::energy_window(&engine.cfg, chrono::Timelike::hour(&c.now));
    let _ = writeln!(
        out,
        "\n== {}{}",
        c.now.format("%a %H:%M"),
        if energy { "  (energy mode)" } else { "" }
    );
    let _ = writeln!(
        out,
        "  {:<5} {:<7} {:<16} {:>6} {:>6} {:>6} {:>7}  decision",
        "vmid", "name", "load shape", "cores", "cpu%", "mem%", "mem MB"
    );
    for o in &c.plan.observations {
        let shape = engine
            .host
            .cts
            .iter()
            .find(|ct| ct.vmid == o.vmid)
            .map_or("", |ct| ct.shape.label());
        let decision = if let Some(ch) = c.plan.changes.iter().find(|ch| ch.vmid == o.vmid) {
            ch.why().to_string()
        } else if let Some(n) = c.plan.notes.iter().find(|n| n.vmid == o.vmid) {
            n.reason.to_string()
        } else {
            "-".into()
        };
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            out,
            "  {:<5} {:<7} {:<16} {:>6} {:>6} {:>6} {:>7}  {}",
            o.vmid,
            o.name.as_deref().unwrap_or("-"),
            shape,
            o.cores.map_or("-".into(), |c| c.to_string()),
            pct(o.cpu_percent),
            pct(o.memory_percent),
            o.memory_mb.map_or("-".into(), |m| m.to_string()),
            decision
        );
    }
    for a in &c.plan.anomalies {
        let _ = writeln!(out, "  ! anomaly, CT {}: {a}", a.vmid);
    }
    for line in &c.anomaly_events {
        let _ = writeln!(out, "    event log: {line}");
    }
    for f in &c.failed {
        let _ = writeln!(out, "  ! {f}");
    }
}

/// The real loop over the simulated host: collect -> model + decide -> apply, one cycle per call.
struct Engine {
    cfg: Config,
    host: Host,
    pct: SimPct,
    backups: BackupStore,
    events: EventLog,
    collector: Collector,
    state: State,
    models: Models,
    not_applied: NotApplied,
    /// Time of cycle 0 (the seed reading), the start of the history.
    origin: NaiveDateTime,
}

/// What one cycle did.
struct Cycle {
    now: NaiveDateTime,
    plan: Plan,
    applied: usize,
    /// Failed changes, one line each.
    failed: Vec<String>,
    /// The anomaly events written this cycle, as JSON lines.
    anomaly_events: Vec<String>,
}

impl Engine {
    fn new(root: &Path, start: NaiveDateTime) -> Result<Engine> {
        let cfg = demo_config(root)?;
        let host = Host::create(HostFiles::of(&cfg))?;
        let mut engine = Engine {
            pct: SimPct {
                conf_dir: cfg.pve_lxc_dir.clone(),
                calls: 0,
            },
            backups: BackupStore::new(cfg.backup_dir.clone()),
            events: EventLog::beside(&cfg.log_file),
            collector: Collector::new(),
            state: State::default(),
            models: Models::default(),
            not_applied: NotApplied::default(),
            origin: start - chrono::Duration::days(i64::from(HISTORY_DAYS)),
            cfg,
            host,
        };
        // The first reading only seeds the counters, as the daemon's sampling window does.
        engine.host.advance(0, 8, 0)?;
        let snap = engine.collector.collect(&engine.cfg, usec(engine.origin));
        engine.state = engine.state.advanced(&snap);
        Ok(engine)
    }

    /// Runs cycle `i` (hours since the origin); `live` is the live cycle number, 0 in the history.
    fn step(&mut self, i: u32, live: u32) -> Result<Cycle> {
        let now = self.origin + chrono::Duration::seconds(i64::from(i) * STEP_SECS);
        let hour = chrono::Timelike::hour(&(now - chrono::Duration::seconds(1)));
        self.host.advance(STEP_SECS, hour, live)?;
        let snap = self.collector.collect(&self.cfg, usec(now));
        let plan = policy::decide_with_model(&self.cfg, &snap, &self.state, &mut self.models, now);
        let never = || false;
        let mut target = Target {
            pct: &mut self.pct,
            pct_display: "pct".into(),
            backups: &self.backups,
            events: None,
            dry_run: false,
            should_stop: &never,
            conf_dir: &self.cfg.pve_lxc_dir,
            not_applied: &mut self.not_applied,
        };
        let report = apply::apply(
            &plan.changes,
            &snap,
            &mut target,
            Utc.from_utc_datetime(&now),
        );
        self.state = self.state.advanced(&snap);
        let failed = report
            .failed
            .iter()
            .map(|f| format!("{} {}: {}", f.vmid, f.summary, f.error))
            .collect();
        let anomaly_events = self.record_anomalies(&plan, now)?;
        Ok(Cycle {
            now,
            applied: report.applied.len(),
            failed,
            anomaly_events,
            plan,
        })
    }

    /// Writes each episode start to the event log, as the daemon does, and returns the lines.
    fn record_anomalies(&self, plan: &Plan, now: NaiveDateTime) -> Result<Vec<String>> {
        let at = Utc.from_utc_datetime(&now).with_timezone(&Local);
        for a in &plan.anomalies {
            let fields = AnomalyFields {
                resource: &a.resource.to_string(),
                direction: a.onset.direction.as_str(),
                score: a.onset.score,
            };
            self.events
                .record_anomaly_at(at, a.vmid, &a.to_string(), fields)?;
        }
        if plan.anomalies.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.events.path();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        let first = lines.len().saturating_sub(plan.anomalies.len());
        Ok(lines[first..].iter().map(|l| (*l).to_string()).collect())
    }
}

fn usec(t: NaiveDateTime) -> i64 {
    Utc.from_utc_datetime(&t).timestamp_micros()
}

/// Runs the history silently, then `cycles` simulated hours starting Monday 08:00, printing each
/// live cycle's decisions and anomaly events.
pub fn run(cycles: u32, out: &mut dyn Write) -> Result<ExitCode> {
    let scratch = Scratch::new()?;
    let start = NaiveDate::from_ymd_opt(2026, 11, 23)
        .and_then(|d| d.and_hms_opt(8, 0, 0))
        .context("demo start time")?;
    let mut engine = Engine::new(&scratch.0, start)?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "lxc_autoscale demo: {} simulated containers on a {HOST_CPUS}-cpu, {} GiB host, one cycle per simulated hour.\n\
         Same code as the daemon: files -> snapshot -> model + policy::decide_with_model -> pct set (simulated) with backups.\n\
         Energy mode is on from 22:00 to 06:00; 106 is in tier `critical` (priority 10); 105 is tagged noautoscale.",
        engine.host.cts.len(),
        HOST_MEM_MB / 1024
    );
    let history = HISTORY_DAYS * 24;
    let (mut learned, mut learned_anomalies) = (0, 0);
    for i in 1..=history {
        let c = engine.step(i, 0)?;
        learned += c.applied;
        learned_anomalies += c.anomaly_events.len();
    }
    let _ = writeln!(
        text,
        "History: the same loop ran silently over the {HISTORY_DAYS} days before ({history} cycles: {learned} changes, \
         {learned_anomalies} anomaly events), so the model below has learned each container's behaviour.\n\
         Live incidents: CT 101 gets a runaway process at 16:00; CT 106's database service dies at 12:00."
    );
    out.write_all(text.as_bytes())?;
    text.clear();
    let calls_before = engine.pct.calls;
    let (mut changes, mut anomalies) = (0, 0);
    for live in 1..=cycles {
        let c = engine.step(history + live, live)?;
        render_cycle(&mut text, &c, &engine);
        changes += c.applied;
        anomalies += c.anomaly_events.len();
        out.write_all(text.as_bytes())?;
        text.clear();
    }
    let _ = writeln!(
        text,
        "\n{cycles} cycles, {changes} changes applied with {} simulated `pct set` calls (one per changed container), \
         {anomalies} anomaly events. Backups: {}.",
        engine.pct.calls - calls_before,
        engine.backups.vmids()?.len()
    );
    let _ = writeln!(
        text,
        "Try it on a real node: lxc_autoscale status, or lxc_autoscale --once --dry-run."
    );
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
