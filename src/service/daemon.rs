//! The service loop: measure, decide, apply, record, sleep; signals and reload.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{error, info, warn};

use crate::act::apply::{self, Report, Target};
use crate::act::backup::BackupStore;
use crate::act::notify::Notifier;
use crate::act::pct::{CommandRunner, PCT_TIMEOUT};
use crate::config::{self, Config};
use crate::decide::plan::{Level, Plan};
use crate::decide::policy;
use crate::read::collect::Collector;
use crate::read::snapshot::{self, Snapshot, State};
use crate::record::events::EventLog;
use crate::record::metrics::{self, CycleInfo, MetricsLog};
use crate::record::prometheus::{self, ActionCounters};
use crate::record::state;
use crate::service::lock::{Lock, LockError};
use crate::service::readlog::ReadFailureLog;
use crate::service::{logging, sdnotify};

/// With no usable previous sample, CPU is measured over this window so the first cycle can act.
const SAMPLE_WINDOW: Duration = Duration::from_secs(2);
/// How often a sleeping daemon looks at its signal flags.
const TICK: Duration = Duration::from_millis(100);

pub fn load_config(path: &Path) -> Result<Config> {
    config::load(path)
}

/// Config files holding a token must not be readable by others.
pub fn warn_if_token_exposed(path: &Path, cfg: &Config) -> Option<String> {
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

pub fn now_usec() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub fn local_now() -> chrono::NaiveDateTime {
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
    let max_age = snapshot::max_sample_age_usec(cfg.poll_interval);
    let fresh = |taken: i64| snapshot::fresh_window_usec(taken, now_usec, max_age).is_some();
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
    // No end that the clock can represent means "until stopped"; never a panic.
    let end = Instant::now().checked_add(d);
    loop {
        if stop() {
            return false;
        }
        let now = Instant::now();
        if end.is_some_and(|end| now >= end) {
            return true;
        }
        let left = end.map_or(TICK, |end| end.saturating_duration_since(now));
        std::thread::sleep(left.min(TICK));
    }
}

/// Reads a snapshot that rates can be taken from, sampling twice over `SAMPLE_WINDOW` when the
/// state has no usable previous sample. `None` when a stop arrived during the window.
pub fn measure(
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

/// What the command line passes to the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOpts {
    pub config: PathBuf,
    pub once: bool,
    pub dry_run: bool,
    pub verbose: bool,
}

/// Runs the daemon (or one cycle with `once`) until SIGTERM or SIGINT.
#[allow(clippy::too_many_lines)] // split by h14's rework, in progress
pub fn run(cli: &DaemonOpts) -> Result<ExitCode> {
    let mut cfg = match load_config(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lxc_autoscale: error: {e:#}");
            eprintln!("lxc_autoscale: refusing to start");
            return Ok(ExitCode::from(2));
        }
    };
    logging::init(Some(&cfg.log_file), cli.verbose)?;
    for w in cfg.warnings() {
        warn!(config = %cli.config.display(), "{w}");
    }
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
    let mut read_log = ReadFailureLog::default();
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
        read_log.log(collector.read_failures(), &snap, collector.read_extra);
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
        counters.add(
            report.applied.iter().map(|a| &a.change),
            report.failed.len(),
        );
        let cycle = CycleInfo {
            duration_secs: Some(
                collect_time
                    .saturating_add(cycle_start.elapsed())
                    .as_secs_f64(),
            ),
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
            // Checked: no interval, however long, may panic the daemon (`None` = never).
            let next = cycle_start.checked_add(Duration::from_secs(cfg.poll_interval));
            if signals.stopping() || next.is_some_and(|next| Instant::now() >= next) {
                break;
            }
            if signals.reload.swap(false, Ordering::Relaxed) {
                sdnotify::notify("RELOADING=1");
                match load_config(&cli.config) {
                    Ok(new) => {
                        for w in new.warnings() {
                            warn!(config = %cli.config.display(), "{w}");
                        }
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
            let left = next.map_or(TICK, |next| next.saturating_duration_since(Instant::now()));
            std::thread::sleep(left.min(TICK));
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

/// Logs the plan's notes at the level their reason asks for.
fn log_notes(plan: &Plan) {
    for note in &plan.notes {
        match note.reason.log_level() {
            Level::Debug => tracing::debug!(vmid = note.vmid, "{}", note.reason),
            Level::Info => info!(vmid = note.vmid, "{}", note.reason),
        }
    }
}

fn notify_report(n: &mut Notifier, report: &Report) {
    if !report.applied.is_empty() {
        let lines: Vec<String> = report
            .applied
            .iter()
            .map(|a| format!("CT {}: {} ({})", a.change.vmid, a.summary, a.change.why()))
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
