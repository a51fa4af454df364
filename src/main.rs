//! `lxc_autoscale`: the daemon and its commands. This file wires the modules together and holds
//! the loop; every IO surface lives in its own module.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing::{error, info, warn};

use lxc_autoscale::apply::{self, Report, Target};
use lxc_autoscale::backup::BackupStore;
use lxc_autoscale::collect::Collector;
use lxc_autoscale::config::{self, Config, DEFAULT_CONFIG_PATH};
use lxc_autoscale::events::EventLog;
use lxc_autoscale::lock::{Lock, LockError};
use lxc_autoscale::metrics::{self, CycleInfo, MetricsLog};
use lxc_autoscale::model::{Managed, Plan, Snapshot, State};
use lxc_autoscale::notify::Notifier;
use lxc_autoscale::pct::{CommandRunner, PctOutcome, PctRunner, SetArgs, PCT_TIMEOUT};
use lxc_autoscale::prometheus::{self, ActionCounters};
use lxc_autoscale::{demo, logging, pct, policy, replay, sdnotify, state};

/// With no usable previous sample, CPU is measured over this window so the first cycle can act.
const SAMPLE_WINDOW: Duration = Duration::from_secs(2);
/// How often a sleeping daemon looks at its signal flags.
const TICK: Duration = Duration::from_millis(100);

#[derive(Parser, Debug)]
#[command(
    name = "lxc_autoscale",
    version,
    about = "Right-sizes CPU cores and memory of running LXC containers on a Proxmox VE node",
    after_help = "Without a command, runs the daemon. Config: /etc/lxc_autoscale/lxc_autoscale.conf"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Run one cycle, then exit.
    #[arg(long)]
    once: bool,
    /// Decide and log the exact `pct` commands, but change no container and write no backup.
    #[arg(long)]
    dry_run: bool,
    /// Log at debug level.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config and print the effective settings of each tier.
    CheckConfig,
    /// Show every running container and what the next cycle would do. Takes no lock, spawns nothing.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restore containers to their allocation from before the autoscaler changed them.
    Rollback(RollbackArgs),
    /// Run the real engine against a built-in simulated host, in accelerated time.
    Demo {
        /// Simulated cycles to run.
        #[arg(long, default_value_t = 24)]
        cycles: u32,
    },
    /// Replay a recorded metrics history through the decision with a config, in simulated time.
    Replay(ReplayArgs),
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// History to replay: the daemon's metrics JSON lines, or the ML sibling's lxc_metrics.json.
    #[arg(long, value_name = "FILE")]
    metrics: PathBuf,
    /// A second config to replay with, printed side by side with --config.
    #[arg(long, value_name = "OTHER.conf")]
    compare: Option<PathBuf>,
    /// Draw allocation against usage per container into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RollbackArgs {
    /// Containers to roll back.
    #[arg(
        value_name = "VMID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    vmids: Vec<u32>,
    /// Every container that has a backup.
    #[arg(long)]
    all: bool,
    /// Undo only the latest change instead of returning to the baseline.
    #[arg(long)]
    last: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => run_daemon(&cli),
        Some(Command::CheckConfig) => check_config(&cli.config),
        Some(Command::Status { json }) => status(&cli.config, *json),
        Some(Command::Rollback(args)) => rollback(&cli, args),
        Some(Command::Demo { cycles }) => demo::run(*cycles, &mut std::io::stdout()),
        Some(Command::Replay(args)) => run_replay(&cli.config, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lxc_autoscale: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: &Path) -> Result<Config> {
    config::load(path)
}

/// Config files holding a token must not be readable by others.
fn warn_if_token_exposed(path: &Path, cfg: &Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if cfg.gotify_token.is_empty() {
        return None;
    }
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} holds gotify_token but is readable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

fn now_usec() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn local_now() -> chrono::NaiveDateTime {
    chrono::Local::now().naive_local()
}

/// Signal flags, set by handlers and read by the loop.
struct Signals {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register(sig, Arc::clone(&stop))
                .with_context(|| format!("cannot install handler for signal {sig}"))?;
        }
        signal_hook::flag::register(SIGHUP, Arc::clone(&reload))
            .context("cannot install handler for SIGHUP")?;
        Ok(Signals { stop, reload })
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Whether some container lacks a previous sample a rate could be taken from.
fn needs_sample_window(cfg: &Config, snap: &Snapshot, state: &State, now_usec: i64) -> bool {
    let max_age = i64::try_from(cfg.poll_interval)
        .unwrap_or(i64::MAX / 2_000_000)
        .saturating_mul(2_000_000);
    let fresh = |taken: i64| now_usec > taken && now_usec - taken < max_age;
    let host_ok = state
        .host
        .is_some_and(|h| h.boot_time == snap.host.boot_time && fresh(h.taken_at_usec));
    if !host_ok && snap.host.cpu_ticks.is_some() {
        return true;
    }
    snap.containers.iter().any(|c| {
        let (Some(id), Some(_)) = (c.cgroup_id, c.cpu_usage_usec) else {
            return false;
        };
        !state.containers.get(&c.vmid).is_some_and(|p| {
            p.cgroup_id == id && p.boot_time == snap.host.boot_time && fresh(p.taken_at_usec)
        })
    })
}

/// Sleeps up to `d`, waking early when `stop` is set. Returns false when stopped.
fn sleep_unless(d: Duration, stop: &dyn Fn() -> bool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop() {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(TICK));
    }
}

/// Reads a snapshot that rates can be taken from, sampling twice over `SAMPLE_WINDOW` when the
/// state has no usable previous sample. `None` when a stop arrived during the window.
fn measure(
    cfg: &Config,
    collector: &mut Collector,
    state: &mut State,
    stop: &dyn Fn() -> bool,
) -> Option<(Snapshot, Duration)> {
    let started = Instant::now();
    let snap = collector.collect(cfg, now_usec());
    if !needs_sample_window(cfg, &snap, state, snap.taken_at_usec) {
        return Some((snap, started.elapsed()));
    }
    info!(
        window_secs = SAMPLE_WINDOW.as_secs(),
        "no usable previous sample; measuring cpu over a short window"
    );
    // Containers that already have a usable sample keep it; the rest start from this reading.
    let mut merged = state.advanced(&snap);
    for (vmid, prev) in &state.containers {
        if let Some(c) = snap.containers.iter().find(|c| c.vmid == *vmid) {
            if c.cgroup_id == Some(prev.cgroup_id) {
                merged.containers.insert(*vmid, *prev);
            }
        }
    }
    if !sleep_unless(SAMPLE_WINDOW, stop) {
        return None;
    }
    *state = merged;
    let started = Instant::now();
    let snap = collector.collect(cfg, now_usec());
    Some((snap, started.elapsed()))
}

fn run_daemon(cli: &Cli) -> Result<ExitCode> {
    let mut cfg = match load_config(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lxc_autoscale: error: {e:#}");
            eprintln!("lxc_autoscale: refusing to start");
            return Ok(ExitCode::from(2));
        }
    };
    logging::init(Some(&cfg.log_file), cli.verbose)?;
    if let Some(w) = warn_if_token_exposed(&cli.config, &cfg) {
        warn!("{w}");
    }
    let lock = match Lock::acquire(&cfg.lock_file) {
        Ok(l) => l,
        Err(e @ LockError::Held { .. }) => {
            error!("{e}");
            eprintln!("lxc_autoscale: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(anyhow::anyhow!("{e:#}")),
    };
    let signals = Signals::install()?;
    let stop = || signals.stopping();
    let daemon = !cli.once;

    let mut state = match state::read_state(&cfg.state_file) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %format!("{e:#}"), "ignoring unusable state file");
            State::default()
        }
    };
    let mut collector = Collector::new();
    collector.read_extra = wants_metrics(&cfg);
    let mut metrics_log = MetricsLog::from_config(&cfg);
    let mut counters = ActionCounters::default();
    let mut notifier = Notifier::from_config(&cfg);
    let mut events = EventLog::beside(&cfg.log_file);
    let mut runner = CommandRunner {
        path: cfg.pct_path.clone(),
        timeout: PCT_TIMEOUT,
    };
    info!(
        config = %cli.config.display(),
        poll_interval = cfg.poll_interval,
        dry_run = cli.dry_run,
        once = cli.once,
        "lxc_autoscale starting"
    );
    if daemon {
        if let Some(n) = notifier.as_mut() {
            n.send(
                "lxc_autoscale started",
                &format!("watching containers every {} s", cfg.poll_interval),
                3,
            );
        }
    }

    let watchdog = sdnotify::watchdog_interval();
    let mut last_watchdog = Instant::now();
    let mut first = true;
    while let Some((snap, collect_time)) = measure(&cfg, &mut collector, &mut state, &stop) {
        // The sampling window is not part of the schedule: the interval starts now.
        let cycle_start = Instant::now();
        let plan = policy::decide(&cfg, &snap, &state, local_now());
        log_notes(&plan);
        let backups = BackupStore::new(cfg.backup_dir.clone());
        let report = {
            let mut target = Target {
                pct: &mut runner,
                pct_display: cfg.pct_path.display().to_string(),
                backups: &backups,
                events: Some(&events),
                dry_run: cli.dry_run,
                should_stop: &stop,
            };
            apply::apply(&plan.changes, &snap, &mut target, chrono::Utc::now())
        };
        counters.add_report(&report);
        let cycle = CycleInfo {
            duration_secs: Some((collect_time + cycle_start.elapsed()).as_secs_f64()),
            changes: plan.changes.len(),
            failures: report.failed.len(),
        };
        export_metrics(
            &cfg,
            metrics_log.as_ref(),
            &snap,
            &plan,
            &state,
            cycle,
            &counters,
        );
        state = state.advanced(&snap);
        if let Err(e) = state::write_state(&cfg.state_file, &state) {
            warn!(path = %cfg.state_file.display(), error = %format!("{e:#}"), "cannot write state file");
        }
        if let Some(n) = notifier.as_mut() {
            notify_report(n, &report);
        }
        info!(
            containers = snap.containers.len(),
            planned = plan.changes.len(),
            applied = report.applied.len(),
            failed = report.failed.len(),
            dry_run = cli.dry_run,
            "cycle done"
        );
        if first {
            sdnotify::notify("READY=1");
            first = false;
        }
        if cli.once || signals.stopping() {
            break;
        }

        let interval = Duration::from_secs(cfg.poll_interval);
        let elapsed = cycle_start.elapsed();
        if elapsed > interval {
            warn!(
                elapsed_ms = elapsed.as_millis() as u64,
                poll_interval = cfg.poll_interval,
                "cycle overran its interval; starting the next one now"
            );
        }
        // Fixed rate: the next cycle starts one interval after this one started. A reload may
        // change the interval, so the deadline is recomputed on every tick.
        loop {
            let next = cycle_start + Duration::from_secs(cfg.poll_interval);
            if signals.stopping() || Instant::now() >= next {
                break;
            }
            if signals.reload.swap(false, Ordering::Relaxed) {
                sdnotify::notify("RELOADING=1");
                match load_config(&cli.config) {
                    Ok(new) => {
                        if new.lock_file != cfg.lock_file {
                            warn!("lock_file changes take effect at the next restart");
                        }
                        if let Some(w) = warn_if_token_exposed(&cli.config, &new) {
                            warn!("{w}");
                        }
                        notifier = Notifier::from_config(&new);
                        events = EventLog::beside(&new.log_file);
                        runner.path = new.pct_path.clone();
                        metrics_log = MetricsLog::from_config(&new);
                        collector.read_extra = wants_metrics(&new);
                        cfg = new;
                        info!(config = %cli.config.display(), poll_interval = cfg.poll_interval, "config reloaded");
                    }
                    Err(e) => {
                        error!(error = %format!("{e:#}"), "config reload failed; keeping the running config");
                    }
                }
                sdnotify::notify("READY=1");
                continue;
            }
            if let Some(w) = watchdog {
                if last_watchdog.elapsed() >= w {
                    sdnotify::notify("WATCHDOG=1");
                    last_watchdog = Instant::now();
                }
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()).min(TICK));
        }
        if signals.stopping() {
            break;
        }
    }

    sdnotify::notify("STOPPING=1");
    info!("lxc_autoscale stopping");
    if daemon {
        if let Some(n) = notifier.as_mut() {
            n.send("lxc_autoscale stopped", "the daemon stopped", 3);
        }
    }
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// Whether any output uses the history-only figures.
fn wants_metrics(cfg: &Config) -> bool {
    !cfg.metrics_file.as_os_str().is_empty() || !cfg.prometheus_textfile.as_os_str().is_empty()
}

/// Appends the history lines and rewrites the Prometheus file. Failures are warnings: the export
/// never stops the scaling.
fn export_metrics(
    cfg: &Config,
    log: Option<&MetricsLog>,
    snap: &Snapshot,
    plan: &Plan,
    state: &State,
    cycle: CycleInfo,
    counters: &ActionCounters,
) {
    let prom = &cfg.prometheus_textfile;
    if log.is_none() && prom.as_os_str().is_empty() {
        return;
    }
    let (host, containers) = metrics::records(cfg, snap, plan, state, cycle);
    if let Some(log) = log {
        if let Err(e) = log.append(&metrics::encode(&host, &containers)) {
            warn!(path = %log.path().display(), error = %format!("{e:#}"), "cannot write metrics history");
        }
    }
    if !prom.as_os_str().is_empty() {
        let text = prometheus::render(&host, &containers, counters);
        if let Err(e) = prometheus::write(prom, &text) {
            warn!(path = %prom.display(), error = %format!("{e:#}"), "cannot write prometheus textfile");
        }
    }
}

/// Logs the plan's notes. Containers the admin excluded on purpose repeat the same note every
/// cycle, so theirs go to debug; everything else is news.
fn log_notes(plan: &Plan) {
    for note in &plan.notes {
        // Observations are in VMID order.
        let excluded = plan
            .observations
            .binary_search_by_key(&note.vmid, |o| o.vmid)
            .is_ok_and(|i| {
                matches!(
                    plan.observations[i].managed,
                    Managed::Ignored | Managed::OptedOut
                )
            });
        if excluded {
            tracing::debug!(vmid = note.vmid, "{}", note.reason);
        } else {
            info!(vmid = note.vmid, "{}", note.reason);
        }
    }
}

fn notify_report(n: &mut Notifier, report: &Report) {
    if !report.applied.is_empty() {
        let lines: Vec<String> = report
            .applied
            .iter()
            .map(|a| format!("CT {}: {} ({})", a.change.vmid, a.summary, a.change.reason))
            .collect();
        n.send(
            &format!(
                "lxc_autoscale: {} container(s) scaled",
                report.applied.len()
            ),
            &lines.join("\n"),
            5,
        );
    }
    if !report.failed.is_empty() {
        let lines: Vec<String> = report
            .failed
            .iter()
            .map(|f| format!("CT {}: {} failed: {}", f.vmid, f.summary, f.error))
            .collect();
        n.send(
            &format!("lxc_autoscale: {} change(s) failed", report.failed.len()),
            &lines.join("\n"),
            8,
        );
    }
}

fn check_config(path: &Path) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    println!("config {} is valid", path.display());
    if let Some(w) = warn_if_token_exposed(path, &cfg) {
        println!("warning: {w}");
    }
    println!(
        "poll_interval {} s, reserve {}% cpu and {} MB memory, energy mode {}",
        cfg.poll_interval,
        cfg.reserve_cpu_percent,
        cfg.reserve_memory_mb,
        if cfg.energy_mode {
            format!("on {:02}:00-{:02}:00", cfg.off_peak_start, cfg.off_peak_end)
        } else {
            "off".into()
        }
    );
    println!(
        "gotify {}",
        if cfg.gotify_enabled() {
            format!(
                "on ({}, token set)",
                lxc_autoscale::notify::redact_url(&cfg.gotify_url, &cfg.gotify_token)
            )
        } else {
            "off".into()
        }
    );
    if !cfg.ignore_lxc.is_empty() {
        println!("ignored: {:?}", cfg.ignore_lxc);
    }
    println!(
        "{:<12} {:>8} {:>11} {:>11} {:>9} {:>9} {:>11} {:>11} {:>9} {:>8} {:>8}  containers",
        "tier",
        "priority",
        "cpu lo/up",
        "mem lo/up",
        "cores",
        "core inc",
        "memory MB",
        "max mem",
        "mem inc",
        "chunk",
        ""
    );
    let mut rows = vec![("(default)".to_string(), cfg.top_level_limits(), Vec::new())];
    for (name, tier) in &cfg.tiers {
        let limits = cfg.tier_limits(name).expect("tier exists");
        rows.push((name.clone(), limits, tier.containers.clone()));
    }
    for (name, l, containers) in rows {
        println!(
            "{:<12} {:>8} {:>11} {:>11} {:>9} {:>9} {:>11} {:>11} {:>9} {:>8} {:>8}  {}",
            name,
            l.priority,
            format!("{}/{}", l.cpu_lower_threshold, l.cpu_upper_threshold),
            format!("{}/{}", l.memory_lower_threshold, l.memory_upper_threshold),
            format!("{}-{}", l.min_cores, l.max_cores),
            format!("{}-{}", l.core_min_increment, l.core_max_increment),
            format!("{}-", l.min_memory),
            l.max_memory.map_or("host".into(), |m| m.to_string()),
            l.memory_min_increment,
            l.min_decrease_chunk,
            "",
            if containers.is_empty() {
                "(all others)".to_string()
            } else {
                containers
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn status(path: &Path, json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let mut state = state::read_state(&cfg.state_file).unwrap_or_default();
    let mut collector = Collector::new();
    let (snap, collect_time) =
        measure(&cfg, &mut collector, &mut state, &|| false).expect("never stopped");
    let plan = policy::decide(&cfg, &snap, &state, local_now());
    if json {
        let cycle = CycleInfo {
            duration_secs: Some(collect_time.as_secs_f64()),
            changes: plan.changes.len(),
            failures: 0,
        };
        let (host, containers) = metrics::records(&cfg, &snap, &plan, &state, cycle);
        let out = serde_json::json!({
            "changes": plan.changes,
            "notes": plan.notes,
            "observations": plan.observations,
            "host": host,
            "containers": containers,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_status(&plan));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `status` table.
pub fn render_status(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<16} {:<10} {:>5} {:>8} {:>6} {:>6}  next cycle",
        "vmid", "name", "tier", "cores", "mem MB", "cpu%", "mem%"
    );
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for o in &plan.observations {
        let next = if let Some(c) = plan.changes.iter().find(|c| c.vmid == o.vmid) {
            format!("{} ({})", apply::describe(c), c.reason)
        } else if let Some(n) = plan.notes.iter().find(|n| n.vmid == o.vmid) {
            n.reason.clone()
        } else {
            "no change".to_string()
        };
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<10} {:>5} {:>8} {:>6} {:>6}  {}",
            o.vmid,
            o.name.as_deref().unwrap_or("-"),
            o.tier.as_deref().unwrap_or("-"),
            o.cores.map_or("-".into(), |c| c.to_string()),
            o.memory_mb.map_or("-".into(), |m| m.to_string()),
            pct(o.cpu_percent),
            pct(o.memory_percent),
            next
        );
    }
    out
}

fn run_replay(config_path: &Path, args: &ReplayArgs) -> Result<ExitCode> {
    let cfg = load_config(config_path)?;
    let history = replay::load_history(&args.metrics, cfg.poll_interval)?;
    let mut runs = vec![(
        config_path.display().to_string(),
        replay::run(&cfg, &history),
    )];
    if let Some(other) = &args.compare {
        let other_cfg = load_config(other)?;
        runs.push((
            other.display().to_string(),
            replay::run(&other_cfg, &history),
        ));
    }
    if args.json {
        let out: Vec<serde_json::Value> = runs
            .iter()
            .map(|(path, r)| serde_json::json!({"config": path, "summary": r.summary}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", replay::render(&history, &runs));
    }
    if let Some(svg) = &args.plot {
        replay::plot(svg, &runs[0].1)?;
        if !args.json {
            println!("plot written to {}", svg.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rollback(cli: &Cli, args: &RollbackArgs) -> Result<ExitCode> {
    let cfg = load_config(&cli.config)?;
    // Holding the lock keeps the daemon from undoing the rollback mid-way.
    let _lock = match Lock::acquire(&cfg.lock_file) {
        Ok(l) => l,
        Err(LockError::Held { pid }) => {
            anyhow::bail!(
                "cannot roll back while the daemon is running (pid {}): stop it first with 'systemctl stop lxc_autoscale'",
                pid.map_or("unknown".into(), |p| p.to_string())
            )
        }
        Err(e) => return Err(anyhow::anyhow!("{e:#}")),
    };
    let store = BackupStore::new(cfg.backup_dir.clone());
    let vmids = if args.all {
        store.vmids()?
    } else {
        args.vmids.clone()
    };
    if vmids.is_empty() {
        println!("no backups in {}", cfg.backup_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut runner = CommandRunner {
        path: cfg.pct_path.clone(),
        timeout: PCT_TIMEOUT,
    };
    let mut failures = 0;
    for vmid in vmids {
        match rollback_one(&store, &mut runner, vmid, args.last) {
            Ok(msg) => println!("CT {vmid}: {msg}"),
            Err(e) => {
                failures += 1;
                eprintln!("CT {vmid}: rollback failed: {e:#}");
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn rollback_one(
    store: &BackupStore,
    runner: &mut dyn PctRunner,
    vmid: u32,
    last: bool,
) -> Result<String> {
    let (target, latest_path) = if last {
        let (path, b) = store
            .latest(vmid)?
            .with_context(|| format!("no backup of container {vmid}"))?;
        (b.before, Some(path))
    } else {
        let b = store
            .baseline(vmid)?
            .with_context(|| format!("no baseline backup of container {vmid}"))?;
        (b.before, None)
    };
    let args = SetArgs {
        cores: target.cores,
        delete_cores: target.cores.is_none(),
        memory_mb: Some(target.memory_mb),
    };
    let argv = pct::set_argv(vmid, &args).with_context(|| format!("invalid vmid {vmid}"))?;
    match runner.run(&argv) {
        PctOutcome::Ok => {}
        PctOutcome::Failed { code, stderr } => anyhow::bail!(
            "pct {} exited with {}: {stderr}",
            argv.join(" "),
            code.map_or("a signal".into(), |c| format!("status {c}"))
        ),
        PctOutcome::TimedOut => anyhow::bail!("pct {} timed out", argv.join(" ")),
        PctOutcome::SpawnError(e) => anyhow::bail!("cannot run pct: {e}"),
    }
    if let Some(path) = latest_path {
        std::fs::remove_file(&path)
            .with_context(|| format!("restored, but cannot remove {}", path.display()))?;
    }
    let cores = target
        .cores
        .map_or("all host cpus".to_string(), |c| c.to_string());
    Ok(format!(
        "restored cores {cores}, memory {} MB{}",
        target.memory_mb,
        if last {
            " (undid the latest change)"
        } else {
            " (baseline)"
        }
    ))
}
