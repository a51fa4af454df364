//! The service loop: measure, decide, apply, record, then wait on one channel (`wake::Inbox`) for
//! the next cycle, a signal or another message.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{error, info, warn};

use crate::act::apply::{self, NotApplied, Report, Target};
use crate::act::backup::BackupStore;
use crate::act::ctrecord::{self, CtRecords};
use crate::act::notify::Notifier;
use crate::act::pct::{CommandRunner, PCT_TIMEOUT};
use crate::config::cluster::FileStamp;
use crate::config::{self, Config, Scaling};
use crate::decide::arrival;
use crate::decide::model::Models;
use crate::decide::plan::{Change, Level, Plan};
use crate::decide::policy;
use crate::read::cluster::PmxcfsUnreadable;
use crate::read::collect::Collector;
use crate::read::measure;
use crate::read::snapshot::{self, Snapshot, State};
use crate::record::events::{AnomalyFields, EventLog};
use crate::record::metrics::{self, ContainerRecord, CycleInfo, HostRecord, MetricsLog};
use crate::record::prometheus::{self, ActionCounters};
use crate::record::state;
use crate::service::api::exec::LoopCtx;
use crate::service::api::runtime::{ApiMsg, ApiRuntime};
use crate::service::api::{self, holds, view};
use crate::service::departures;
use crate::service::import::Import;
use crate::service::lock::{Lock, LockError};
use crate::service::logging::{self, LogFile};
use crate::service::placement::{ClusterDuty, CycleCtx};
use crate::service::quorum::{Quorum, Transition};
use crate::service::readlog::ReadFailureLog;
use crate::service::sdnotify::{self, NotifyState, Watchdog};
use crate::service::wake::{Inbox, LoopMsg};

/// With no usable previous sample, CPU is measured over this window so the first cycle can act.
const SAMPLE_WINDOW: Duration = Duration::from_secs(2);

/// The config at `path`, with cluster mode resolved (`read::cluster::load_config`).
pub fn load_config(path: &Path) -> Result<Config> {
    crate::read::cluster::load_config(path)
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

/// Whether some container lacks a previous sample a rate could be taken from.
fn needs_sample_window(cfg: &Config, snap: &Snapshot, state: &State) -> bool {
    let max_age = snapshot::max_sample_age_usec(cfg.poll_interval);
    let now = snap.taken_at_usec;
    let host_ok = state
        .fresh_host(now, max_age)
        .is_some_and(|h| h.boot_time == snap.host.boot_time);
    if !host_ok && snap.host.cpu_ticks.is_some() {
        return true;
    }
    snap.containers.iter().any(|c| {
        c.cgroup_id.is_some()
            && c.cpu_usage_usec.is_some()
            && usable_prev(state, c, snap, max_age).is_none()
    })
}

/// The saved sample of `c` when a rate can be taken from it to `snap` (same cgroup, same boot,
/// fresh).
fn usable_prev<'a>(
    state: &'a State,
    c: &snapshot::ContainerSample,
    snap: &Snapshot,
    max_age: i64,
) -> Option<&'a snapshot::ContainerPrev> {
    let prev = state.containers.get(&c.vmid);
    measure::counter_window_usec(c, snap.taken_at_usec, snap.host.boot_time, prev, max_age)
        .and(prev)
}

/// Reads a snapshot that rates can be taken from, sampling twice over `SAMPLE_WINDOW` when the
/// state has no usable previous sample. `wait` waits out the window and returns false when a stop
/// arrived during it; `measure` then returns `None`.
pub fn measure(
    cfg: &Config,
    collector: &mut Collector,
    state: &mut State,
    wait: &mut dyn FnMut(Duration) -> bool,
) -> Option<(Snapshot, Duration)> {
    let started = Instant::now();
    let first = collector.collect(cfg, now_usec());
    if !needs_sample_window(cfg, &first, state) {
        return Some((first, started.elapsed()));
    }
    info!(
        window_secs = SAMPLE_WINDOW.as_secs(),
        "no usable previous sample; measuring cpu over a short window"
    );
    if !wait(SAMPLE_WINDOW) {
        return None;
    }
    let started = Instant::now();
    let snap = collector.collect(cfg, now_usec());
    // A saved sample that still gives a rate now spans more than the window and is kept; every
    // other container (stale, future-stamped, restarted, new) is measured over the window.
    let max_age = snapshot::max_sample_age_usec(cfg.poll_interval);
    let mut merged = state.advanced(&first);
    // What the confs held at the last cycle, not at the first sample: a container that came or
    // went in between is still seen as such.
    merged.seen = std::mem::take(&mut state.seen);
    for c in &snap.containers {
        if let Some(prev) = usable_prev(state, c, &snap, max_age) {
            merged.containers.insert(c.vmid, *prev);
        }
    }
    *state = merged;
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
pub fn run(cli: &DaemonOpts) -> Result<ExitCode> {
    crate::service::memory::tune_allocator();
    let cfg = match load_config(&cli.config) {
        Ok(c) => c,
        Err(e) if e.downcast_ref::<PmxcfsUnreadable>().is_some() => {
            // Not the config's fault: exit 1, which the unit restarts on (2 it does not).
            eprintln!("lxc_autoscale: error: {e:#}");
            eprintln!("lxc_autoscale: cannot start until pmxcfs answers");
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            eprintln!("lxc_autoscale: error: {e:#}");
            eprintln!("lxc_autoscale: refusing to start");
            return Ok(ExitCode::from(2));
        }
    };
    let log = logging::init(Some(&cfg.log_file), cli.verbose)?;
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
    let inbox = Inbox::new();
    let api = if cli.once {
        check_api_settings(&cfg).map(|()| None)
    } else {
        ApiRuntime::start(&cfg, cli.dry_run, inbox.sender(), LoopMsg::Api)
    };
    let api = match api {
        Ok(api) => api,
        Err(e) => {
            error!(error = %format!("{e:#}"), "the api cannot start");
            eprintln!("lxc_autoscale: error: {e:#}");
            eprintln!("lxc_autoscale: refusing to start");
            return Ok(ExitCode::from(2));
        }
    };
    inbox.listen_for_signals()?;
    let mut daemon = Daemon::new(cli, cfg, inbox, Watchdog::from_env(), log);
    daemon.api = api;
    daemon.serve();
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// What `--once` checks of the `[api]` table instead of starting the API: one cycle serves no
/// request, and binding would first remove the socket file of a daemon that runs beside it (with
/// another `lock_file`). It still refuses what the daemon would refuse at start: the settings
/// (`api.token_file`, `api.listen`) and a socket path that exists and is not a socket; nothing is
/// created or removed.
fn check_api_settings(cfg: &Config) -> Result<()> {
    let settings = crate::service::api::Settings::from_config(cfg)?;
    if let config::ApiListen::Unix(path) = settings.listen() {
        crate::service::api::server::stale_socket(&path)?;
    }
    Ok(())
}

/// Everything the loop keeps across cycles. The loop is the only writer of state, backups and
/// the conf files it changes through `pct`.
struct Daemon<'a> {
    opts: &'a DaemonOpts,
    cfg: Config,
    state: State,
    /// The per-container model, kept in `state_file`.
    models: Models,
    cycles: u64,
    collector: Collector,
    /// Files that could not be read, logged once per vmid and file.
    read_log: ReadFailureLog,
    metrics_log: Option<MetricsLog>,
    counters: ActionCounters,
    /// Containers held back after a change `pct` accepted without applying it.
    not_applied: NotApplied,
    notifier: Option<Notifier>,
    events: EventLog,
    runner: CommandRunner,
    inbox: Inbox,
    watchdog: Watchdog,
    /// The text log's file, reopened on every reload.
    log: LogFile,
    /// The cluster-wide config as last read (cluster mode): a change reloads.
    cluster_stamp: FileStamp,
    /// Whether the cluster had quorum at the last cycle (cluster mode).
    quorum: Quorum,
    /// The one-time import of local baselines into the cluster's records (cluster mode).
    import: Import,
    /// The REST API, when `api.listen` is set.
    api: Option<ApiRuntime>,
    /// Cluster mode: the status file and placement advice.
    cluster: ClusterDuty,
    /// Until when the history-only figures are read for `GET /metrics` alone.
    scraped_until: Option<Instant>,
}

/// What the loop does after a pause.
enum Next {
    Cycle,
    Stop,
}

impl<'a> Daemon<'a> {
    fn new(
        opts: &'a DaemonOpts,
        cfg: Config,
        inbox: Inbox,
        watchdog: Watchdog,
        log: LogFile,
    ) -> Daemon<'a> {
        let (state, models) = match state::read_state_with_model(&cfg.state_file) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "ignoring unusable state file");
                Default::default()
            }
        };
        let mut collector = Collector::new();
        collector.read_extra = wants_metrics(&cfg);
        collector.one_shot = opts.once;
        Daemon {
            opts,
            state,
            models,
            cycles: 0,
            collector,
            read_log: ReadFailureLog::default(),
            metrics_log: MetricsLog::from_config(&cfg),
            counters: ActionCounters::default(),
            not_applied: NotApplied::default(),
            notifier: Notifier::from_config(&cfg),
            events: EventLog::beside(&cfg.log_file),
            runner: CommandRunner {
                path: cfg.pct_path.clone(),
                timeout: PCT_TIMEOUT,
            },
            cluster_stamp: FileStamp::of_cluster_config(&cfg),
            quorum: Quorum::default(),
            import: Import::default(),
            cfg,
            inbox,
            watchdog,
            log,
            api: None,
            cluster: ClusterDuty::default(),
            scraped_until: None,
        }
    }

    /// Cycles until a stop (or after one cycle with `--once`).
    fn serve(&mut self) {
        info!(
            config = %self.opts.config.display(),
            poll_interval = self.cfg.poll_interval,
            dry_run = self.opts.dry_run,
            once = self.opts.once,
            api = self.api.as_ref().map_or("off", |_| self.cfg.api.listen.as_str()),
            "lxc_autoscale starting"
        );
        let text = format!("watching containers every {} s", self.cfg.poll_interval);
        self.send_lifecycle("lxc_autoscale started", &text);
        let mut first = true;
        loop {
            self.watchdog.progress();
            self.watch_cluster_config();
            self.collector.read_extra = self.wants_extra();
            let measured = measure(&self.cfg, &mut self.collector, &mut self.state, &mut |d| {
                self.inbox.wait_window(d)
            });
            let Some((snap, collect_time)) = measured else {
                break;
            };
            if self.opts.once {
                // The snapshot holds its own copy of every conf: the cache would only add to the
                // cycle's peak.
                self.collector.forget_confs();
            }
            // The sampling window is not part of the schedule: the interval starts now.
            let cycle_start = Instant::now();
            let history = self.collector.read_extra;
            self.read_log
                .log(self.collector.read_failures(), &snap, history);
            self.cycle(&snap, collect_time, cycle_start);
            if first {
                sdnotify::notify(&[NotifyState::Ready]);
                self.watchdog.started();
                first = false;
            }
            if self.opts.once || self.inbox.stopping() {
                break;
            }
            // Nothing of the cycle is needed while the loop waits.
            drop(snap);
            crate::service::memory::release_free_memory();
            if let Next::Stop = self.pause(cycle_start) {
                break;
            }
        }
        sdnotify::notify(&[NotifyState::Stopping]);
        // `--once` saved the state at the end of its one cycle, and nothing changed it since.
        if self.cycles > 0 && !self.opts.once {
            self.save_state();
        }
        self.drain_api();
        info!("lxc_autoscale stopping");
        self.send_lifecycle("lxc_autoscale stopped", "the daemon stopped");
    }

    /// Start and stop notices go to Gotify in daemon mode only.
    fn send_lifecycle(&mut self, title: &str, text: &str) {
        if self.opts.once {
            return;
        }
        if let Some(n) = self.notifier.as_mut() {
            n.send(title, text, 3);
        }
    }

    /// Writes the state file, with the model.
    fn save_state(&self) {
        let path = &self.cfg.state_file;
        if let Err(e) = state::write_state_with_model(path, &self.state, &self.models) {
            warn!(path = %path.display(), error = %format!("{e:#}"), "cannot write state file");
        }
    }

    /// Logs each anomaly episode that opened, writes it to the event log and sends it to Gotify
    /// (once per episode: only its start is in the plan).
    fn report_anomalies(&mut self, plan: &Plan) {
        for a in &plan.anomalies {
            let text = a.to_string();
            warn!(vmid = a.vmid, resource = %a.resource, score = a.onset.score, "{text}");
            let fields = AnomalyFields {
                resource: &a.resource.to_string(),
                direction: a.onset.direction.as_str(),
                score: a.onset.score,
            };
            if let Err(e) = self.events.record_anomaly(a.vmid, &text, fields) {
                warn!(vmid = a.vmid, error = %format!("{e:#}"), "cannot write event log");
            }
            if let Some(n) = self.notifier.as_mut() {
                n.send(&format!("lxc_autoscale: CT {} anomaly", a.vmid), &text, 5);
                // Each notice may wait for Gotify's timeout: many onsets in one cycle (a cron
                // job in every container) must not outlast the watchdog.
                self.watchdog.progress();
            }
        }
    }

    /// Decides, applies and records one cycle on `snap`.
    fn cycle(&mut self, snap: &Snapshot, collect_time: Duration, cycle_start: Instant) {
        self.watchdog.progress();
        departures::note_arrivals(&self.cfg, &mut self.state, snap);
        holds::note_outside_changes(&mut self.state, snap, self.cfg.api.manual_hold);
        let plan =
            policy::decide_with_model(&self.cfg, snap, &self.state, &mut self.models, local_now());
        let plan = arrival::hold_cuts(plan, &self.state.arrivals, snap.taken_at_usec);
        self.report_anomalies(&plan);
        log_notes(&plan);
        let report = self.apply_plan(&plan, snap);
        let may_write = !self.opts.dry_run && !self.quorum.holding_back();
        self.import.tick(&self.cfg, may_write);
        self.counters.add(
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
        self.watchdog.progress();
        self.cluster_duties(snap, &plan, &report);
        self.record_cycle(snap, &plan, cycle);
        departures::note(&self.cfg, &mut self.state, snap, &self.events);
        self.state.advance(snap);
        holds::note_applied(&mut self.state, &report.applied);
        self.cycles += 1;
        self.save_state();
        if let Some(n) = self.notifier.as_mut() {
            self.watchdog.progress();
            notify_report(n, &report);
        }
        info!(
            containers = snap.containers.len(),
            planned = plan.changes.len(),
            applied = report.applied.len(),
            failed = report.failed.len(),
            dry_run = self.opts.dry_run,
            "cycle done"
        );
        let status = format!(
            "{}last cycle: {} containers, {} changed, {} failed",
            self.quorum.status_prefix(),
            snap.containers.len(),
            report.applied.len(),
            report.failed.len()
        );
        sdnotify::notify(&[NotifyState::Status(&status)]);
    }

    /// Exports the cycle's records (history, Prometheus) and publishes them to the API; they are
    /// built once for both.
    fn record_cycle(&self, snap: &Snapshot, plan: &Plan, cycle: CycleInfo) {
        let log = self.metrics_log.as_ref();
        if self.api.is_none()
            && log.is_none()
            && self.cfg.prometheus_textfile.as_os_str().is_empty()
        {
            return;
        }
        if self.api.is_none() && self.cfg.prometheus_textfile.as_os_str().is_empty() {
            // The history alone: each line is encoded as it is built, none is kept.
            if let Some(log) = log {
                let host = metrics::host_record(&self.cfg, snap, &self.state, cycle);
                let lines = metrics::container_records(&self.cfg, snap, plan, &self.state);
                append_history(log, &metrics::encode_lines(&host, lines));
            }
            return;
        }
        let records = metrics::records(&self.cfg, snap, plan, &self.state, cycle);
        let cluster = self.cluster.prometheus();
        let models = (&self.counters, &self.models, cluster);
        export_metrics(&self.cfg, log, plan, &records, models);
        if let Some(api) = &self.api {
            let bad = self.not_applied.bad_baselines();
            let extras = holds::extras(&self.state, snap.taken_at_usec, bad);
            let view = view::build(snap, plan, records, &self.counters, &extras);
            api.publish(view, prometheus::AnomalyScores::of(&self.models), cluster);
        }
    }

    /// Cluster mode: the status file, and placement advice on the leader.
    fn cluster_duties(&mut self, snap: &Snapshot, plan: &Plan, report: &Report) {
        self.cluster.cycle(CycleCtx {
            cfg: &self.cfg,
            snap,
            plan,
            report,
            quorum: self.quorum.status_prefix().is_empty(),
            state: &mut self.state,
            events: &self.events,
            notifier: self.notifier.as_mut(),
            progress: &|| self.watchdog.progress(),
        });
    }

    /// Applies the plan's changes; a stop request ends it between two `pct` calls.
    fn apply_plan(&mut self, plan: &Plan, snap: &Snapshot) -> Report {
        // Only a cycle that would act probes pmxcfs with a write.
        let acting = !self.opts.dry_run
            && self.cfg.scaling != Scaling::Recommend
            && !plan.changes.is_empty();
        if !self.quorum_allows_changes(acting) {
            return Report::default();
        }
        let inputs =
            ctrecord::inputs_for(&self.cfg, &self.models, plan.changes.iter().map(|c| c.vmid));
        let backups = BackupStore::new(self.cfg.backup_dir.clone())
            .with_ct_records(CtRecords::for_config(&self.cfg).map(|r| r.with_inputs(inputs)));
        let (watchdog, inbox) = (&self.watchdog, &self.inbox);
        // Called before every change: it is also the progress mark that lets the watchdog cover
        // the `pct` call that follows.
        let between_changes = || {
            watchdog.progress();
            inbox.stopping()
        };
        let changes = loop_changes(self.api.as_ref(), &self.cfg, plan);
        let mut target = Target {
            pct: &mut self.runner,
            pct_display: self.cfg.pct_path.display().to_string(),
            backups: &backups,
            events: Some(&self.events),
            dry_run: self.opts.dry_run,
            should_stop: &between_changes,
            conf_dir: &self.cfg.pve_lxc_dir,
            not_applied: &mut self.not_applied,
        };
        let report = apply::apply(&changes, snap, &mut target, chrono::Utc::now());
        if let Some(api) = &self.api {
            api.release(&changes);
        }
        report
    }

    /// Runs an API message on the loop thread; a quick change that happened puts its resource
    /// on hold and is saved in the state at once.
    fn handle_api(&mut self, msg: ApiMsg) {
        let Some(api) = &self.api else {
            return;
        };
        if self.opts.dry_run {
            api.refuse(msg, "the daemon runs with --dry-run: it changes nothing");
            return;
        }
        let quorum = crate::service::quorum::missing(&self.cfg);
        if let Some(why) = quorum.or_else(|| crate::service::quorum::probe(&self.cfg)) {
            api.refuse(msg, &format!("no cluster quorum, no changes: {why}"));
            return;
        }
        let backups = BackupStore::new(self.cfg.backup_dir.clone())
            .with_ct_records(CtRecords::for_config(&self.cfg));
        let mut ctx = LoopCtx {
            pve_lxc_dir: &self.cfg.pve_lxc_dir,
            backup_dir: &self.cfg.backup_dir,
            pct: &mut self.runner,
            pct_display: self.cfg.pct_path.display().to_string(),
            backups: &backups,
            events: Some(&self.events),
            notifier: self.notifier.as_mut(),
            counters: &mut self.counters,
            host_cpus: api.shared.view().host_cpus,
            tasks: &api.shared.tasks,
        };
        if let Some(done) = api.handle(msg, &mut ctx) {
            holds::note_api_change(&mut self.state, &done, now_usec());
            self.save_state();
        }
    }

    /// On the way out: new requests get 503, running tasks are waited for (`TASK_DRAIN`), what
    /// they reported is recorded, then the socket file goes.
    fn drain_api(&mut self) {
        let Some(api) = &self.api else {
            return;
        };
        api.begin_drain();
        api.wait_tasks(&|| self.watchdog.progress());
        while let Some(msg) = self.inbox.next(Some(Instant::now()), None) {
            if let LoopMsg::Api(msg) = msg {
                self.handle_api(msg);
            }
        }
        if let Some(api) = &self.api {
            api.close();
        }
    }

    /// Waits for the next cycle (fixed rate: one interval after `cycle_start`), handling messages
    /// as they come. A reload may change the interval, so the deadline is recomputed each time.
    fn pause(&mut self, cycle_start: Instant) -> Next {
        let elapsed = cycle_start.elapsed();
        if elapsed > Duration::from_secs(self.cfg.poll_interval) {
            warn!(
                elapsed_ms = elapsed.as_millis() as u64,
                poll_interval = self.cfg.poll_interval,
                "cycle overran its interval; starting the next one now"
            );
        }
        loop {
            self.watchdog.progress();
            if self.inbox.stopping() {
                return Next::Stop;
            }
            // Checked: no interval, however long, may panic the daemon (`None` = never).
            let due = cycle_start.checked_add(Duration::from_secs(self.cfg.poll_interval));
            if due.is_some_and(|due| Instant::now() >= due) {
                return Next::Cycle;
            }
            let wake = [self.watchdog.idle_wake(), self.cluster.wake_in()]
                .into_iter()
                .flatten()
                .min();
            match self.inbox.next(due, wake) {
                None => {}
                Some(LoopMsg::Stop) => return Next::Stop,
                Some(LoopMsg::Reload) => {
                    let _ = self.reload();
                }
                Some(LoopMsg::Api(msg)) => self.handle_api(msg),
            }
            let quorum = self.quorum.status_prefix().is_empty();
            self.cluster.between_cycles(&self.cfg, quorum);
        }
    }

    /// Re-reads the config; on error keeps the running one and says why. Either way the log file
    /// is reopened (at the new `log_file`, or at the same path for logrotate's postrotate).
    fn reload(&mut self) -> Result<(), String> {
        sdnotify::notify_reloading();
        // Stamped before reading: an edit during the read is seen at the next cycle.
        self.cluster_stamp = FileStamp::of_cluster_config(&self.cfg);
        let loaded = load_config(&self.opts.config);
        let log_path = loaded.as_ref().unwrap_or(&self.cfg).log_file.clone();
        self.reopen_log(&log_path);
        // Whatever a start would refuse, the token file included, refuses the whole reload.
        let checked = loaded.and_then(|new| {
            let api = match &self.api {
                Some(api) => Some(api.settings_for_reload(&new)?),
                None => {
                    api::Settings::from_config(&new)?;
                    None
                }
            };
            Ok((new, api))
        });
        let result = match checked {
            Ok((new, api)) => {
                self.take_config(new, api);
                Ok(())
            }
            Err(e) => {
                let e = format!("{e:#}");
                error!(error = %e, "config reload failed; keeping the running config");
                Err(e)
            }
        };
        sdnotify::notify(&[NotifyState::Ready]);
        result
    }

    /// In cluster mode, whether the cluster has quorum this cycle (pmxcfs is writable); a loss
    /// and a return are logged and notified once each.
    fn quorum_allows_changes(&mut self, acting: bool) -> bool {
        let (ok, title, text) = match self.quorum.check(&self.cfg, acting) {
            Transition::Steady(ok) => return ok,
            Transition::Lost(why) => {
                warn!(reason = %why, "cluster quorum lost: no changes until it returns");
                (
                    false,
                    "lxc_autoscale: cluster quorum lost",
                    format!("{why}; no changes until it returns"),
                )
            }
            Transition::Regained => {
                info!("cluster quorum is back: changes resume");
                (
                    true,
                    "lxc_autoscale: cluster quorum back",
                    "changes resume".to_string(),
                )
            }
        };
        if let Some(n) = self.notifier.as_mut() {
            n.send(title, &text, 8);
        }
        ok
    }

    /// In cluster mode, reloads when the cluster-wide config changed since it was last read. A
    /// rejected file is logged and notified once: the next attempt waits for the next change.
    fn watch_cluster_config(&mut self) {
        let Some(path) = config::cluster::cluster_config_path(&self.cfg) else {
            return;
        };
        if FileStamp::of(&path) == self.cluster_stamp {
            return;
        }
        info!(path = %path.display(), "cluster-wide config changed; reloading");
        if let Err(e) = self.reload() {
            if let Some(n) = self.notifier.as_mut() {
                let text = format!("{e}\nkeeping the running config");
                n.send("lxc_autoscale: cluster-wide config rejected", &text, 8);
            }
        }
    }

    fn reopen_log(&mut self, path: &Path) {
        if self.log.path().is_some_and(|old| old != path) {
            info!(to = %path.display(), "log_file changed; the log continues there");
        }
        if let Err(e) = self.log.reopen(path) {
            warn!(error = %format!("{e:#}"), "cannot reopen the log file; logging to the open one");
        }
    }

    /// Switches every part of the loop to a reloaded config, and the API to its settings.
    fn take_config(&mut self, new: Config, api_settings: Option<api::Settings>) {
        for w in new.warnings() {
            warn!(config = %self.opts.config.display(), "{w}");
        }
        if new.lock_file != self.cfg.lock_file {
            warn!("lock_file changes take effect at the next restart");
        }
        if let Some(w) = warn_if_token_exposed(&self.opts.config, &new) {
            warn!("{w}");
        }
        if let (Some(api), Some(settings)) = (&self.api, api_settings) {
            api.reload(settings);
        }
        self.notifier = Notifier::from_config(&new);
        self.events = EventLog::beside(&new.log_file);
        self.runner.path = new.pct_path.clone();
        self.metrics_log = MetricsLog::from_config(&new);
        self.cfg = new;
        info!(config = %self.opts.config.display(), poll_interval = self.cfg.poll_interval, "config reloaded");
    }
}

/// The plan's changes the loop may apply: none in `recommend` mode, and none on a container an
/// API task holds (the rest are claimed until `ApiRuntime::release`).
fn loop_changes(api: Option<&ApiRuntime>, cfg: &Config, plan: &Plan) -> Vec<Change> {
    if cfg.scaling == Scaling::Recommend {
        for c in &plan.changes {
            info!(vmid = c.vmid, change = %apply::describe(c), reason = %c.why(), "recommend mode: would change");
        }
        return Vec::new();
    }
    match api {
        Some(api) => api.claim_changes(&plan.changes),
        None => plan.changes.clone(),
    }
}

impl Daemon<'_> {
    /// Whether this cycle reads the history-only figures: when the history or the Prometheus
    /// file wants them, or while a `GET /metrics` scraper comes back (for `SCRAPE_KEEPS_EXTRA`, or
    /// three cycles if longer), so that its answer carries them as the file's would.
    fn wants_extra(&mut self) -> bool {
        let now = Instant::now();
        if self
            .api
            .as_ref()
            .is_some_and(ApiRuntime::take_metrics_scraped)
        {
            let keep = SCRAPE_KEEPS_EXTRA.max(Duration::from_secs(3 * self.cfg.poll_interval));
            self.scraped_until = Some(now + keep);
        }
        wants_metrics(&self.cfg) || self.scraped_until.is_some_and(|t| now < t)
    }
}

/// How long the history-only figures are read after a `GET /metrics` when nothing else wants
/// them: longer than any usual scrape interval.
const SCRAPE_KEEPS_EXTRA: Duration = Duration::from_secs(900);

/// Whether any output uses the history-only figures.
fn wants_metrics(cfg: &Config) -> bool {
    !cfg.metrics_file.as_os_str().is_empty() || !cfg.prometheus_textfile.as_os_str().is_empty()
}

/// Appends the history lines and rewrites the Prometheus file. Failures are warnings: the export
/// never stops the scaling.
fn export_metrics(
    cfg: &Config,
    log: Option<&MetricsLog>,
    plan: &Plan,
    (host, containers): &(HostRecord, Vec<ContainerRecord>),
    (counters, models, cluster): (&ActionCounters, &Models, &str),
) {
    let prom = &cfg.prometheus_textfile;
    if let Some(log) = log {
        append_history(log, &metrics::encode(host, containers));
    }
    if !prom.as_os_str().is_empty() {
        let anomaly = prometheus::AnomalyScores::of(models);
        let text =
            prometheus::exposition(host, containers, counters, &plan.changes, &anomaly, cluster);
        if let Err(e) = prometheus::write(prom, &text) {
            warn!(path = %prom.display(), error = %format!("{e:#}"), "cannot write prometheus textfile");
        }
    }
}

/// Appends a cycle's history lines; a failure is a warning.
fn append_history(log: &MetricsLog, lines: &[u8]) {
    if let Err(e) = log.append(lines) {
        warn!(path = %log.path().display(), error = %format!("{e:#}"), "cannot write metrics history");
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
