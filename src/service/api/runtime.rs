//! The API as the daemon runs it: started with the config, fed a view after every cycle, drained
//! on the way out. Messages to the loop go through whatever channel the loop listens on.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tracing::{info, warn};

use super::exec::{self, LoopCtx};
use super::routes::error;
use super::server::{self, ServerHandle};
use super::tasks::TaskDone;
use super::{LoopLink, Mutation, Settings, Shared, View};
use crate::config::Config;
use crate::decide::plan::Change;
use crate::record::prometheus::AnomalyScores;

/// How long a stopping daemon waits for running tasks. The unit's `TimeoutStopSec` must exceed
/// this plus one `pct set` (30 s).
pub const TASK_DRAIN: Duration = Duration::from_secs(240);

/// A message from the API to the loop.
#[derive(Debug)]
pub enum ApiMsg {
    /// A quick change, run between cycles through the apply path.
    Mutation(Mutation),
    /// A task ended: record its event and notification.
    TaskDone(TaskDone),
}

struct ChannelLink<M: Send> {
    tx: Sender<M>,
    wrap: fn(ApiMsg) -> M,
}

impl<M: Send> LoopLink for ChannelLink<M> {
    fn mutate(&self, m: Mutation) -> bool {
        self.tx.send((self.wrap)(ApiMsg::Mutation(m))).is_ok()
    }

    fn task_done(&self, done: TaskDone) {
        let _ = self.tx.send((self.wrap)(ApiMsg::TaskDone(done)));
    }
}

/// The running API.
pub struct ApiRuntime {
    pub shared: Arc<Shared>,
    handle: ServerHandle,
    /// Started with `--dry-run`: every reload keeps the `allow_*` switches off.
    dry_run: bool,
}

/// Turns off every `allow_*`: under `--dry-run` tasks (which run `pct` from the API's threads)
/// must not run at all.
fn no_tasks(settings: &mut Settings) {
    settings.api.allow_storage = false;
    settings.api.allow_snapshot_rollback = false;
    settings.api.allow_clone = false;
    settings.api.allow_destroy = false;
}

impl ApiRuntime {
    /// Reads the token, binds the listener and starts the threads; `None` when `api.listen` is
    /// empty. Errors name the key (`api.token_file`, `api.listen`): the daemon refuses to start.
    /// With `dry_run` every `allow_*` is off and quick changes are refused by the loop.
    pub fn start<M: Send + 'static>(
        cfg: &Config,
        dry_run: bool,
        tx: Sender<M>,
        wrap: fn(ApiMsg) -> M,
    ) -> Result<Option<ApiRuntime>> {
        let mut settings = Settings::from_config(cfg)?;
        if dry_run {
            no_tasks(&mut settings);
        }
        let Some(listener) = server::bind(&settings.listen())? else {
            return Ok(None);
        };
        let shared = Shared::new(settings, Box::new(ChannelLink { tx, wrap }));
        let handle = server::spawn(listener, Arc::clone(&shared))?;
        Ok(Some(ApiRuntime {
            shared,
            handle,
            dry_run,
        }))
    }

    /// Where a TCP listener ended up (tests bind port 0).
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.handle.tcp_addr
    }

    /// Hands the API what a cycle measured, decided and scored, and the cluster families of
    /// `prometheus::render_cluster` (empty outside cluster mode).
    pub fn publish(&self, view: View, anomaly: AnomalyScores, cluster: &str) {
        self.shared.publish(view, anomaly, cluster);
    }

    /// Whether `GET /metrics` was asked since the last call.
    pub fn take_metrics_scraped(&self) -> bool {
        self.shared
            .metrics_scraped
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// The settings a reload to `cfg` would run with: the token is read again (errors name
    /// `api.token_file`; the caller then refuses the whole reload, as a start would refuse the
    /// config). The address needs a restart, and so does the rest of the `[api]` table when it
    /// moves: the new table was validated against the new address, not the listener still
    /// running (a TCP listener left without its token would serve anyone). Under `--dry-run`
    /// the `allow_*` switches stay off.
    pub fn settings_for_reload(&self, cfg: &Config) -> Result<Settings> {
        let running = self.shared.settings();
        let mut settings = if cfg.api.listen == running.api.listen {
            Settings::from_config(cfg)?
        } else {
            warn!(
                running = %running.api.listen,
                configured = %cfg.api.listen,
                "api.listen changed: the [api] table takes effect at the next restart; the running one stays"
            );
            let mut kept = cfg.clone();
            kept.api = running.api.clone();
            Settings::from_config(&kept)?
        };
        if self.dry_run {
            no_tasks(&mut settings);
        }
        Ok(settings)
    }

    /// Puts settings from `settings_for_reload` in force.
    pub fn reload(&self, settings: Settings) {
        self.shared.set_settings(settings);
    }

    /// Claims the containers of the autoscaler's changes; a change on a container a task holds
    /// is dropped this cycle. Returns the kept changes; release them with `release`.
    pub fn claim_changes(&self, changes: &[Change]) -> Vec<Change> {
        changes
            .iter()
            .filter(|c| {
                let free = self.shared.tasks.claim(&[c.vmid]).is_ok();
                if !free {
                    info!(
                        vmid = c.vmid,
                        "an api task on this container is running: not changed this cycle"
                    );
                }
                free
            })
            .cloned()
            .collect()
    }

    pub fn release(&self, changes: &[Change]) {
        let vmids: Vec<u32> = changes.iter().map(|c| c.vmid).collect();
        self.shared.tasks.release(&vmids);
    }

    /// Handles one message on the loop thread. Returns what a quick change did.
    pub fn handle(&self, msg: ApiMsg, ctx: &mut LoopCtx) -> Option<exec::Done> {
        match msg {
            ApiMsg::Mutation(m) if self.shared.draining.load(Ordering::SeqCst) => {
                let _ = m
                    .reply
                    .send(error(503, "the daemon is stopping", Vec::new()));
                None
            }
            ApiMsg::Mutation(m) => exec::run_quick(m, ctx),
            ApiMsg::TaskDone(d) => {
                exec::task_finished(&d, ctx);
                None
            }
        }
    }

    /// Answers a quick change with 503 and `why` without running it.
    pub fn refuse(&self, msg: ApiMsg, why: &str) {
        if let ApiMsg::Mutation(m) = msg {
            let _ = m.reply.send(error(503, why, Vec::new()));
        }
    }

    /// From now on every new request gets 503.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Waits up to `TASK_DRAIN` for running tasks, calling `alive` every few seconds (the
    /// watchdog); true when none is left.
    pub fn wait_tasks(&self, alive: &dyn Fn()) -> bool {
        let running = self.shared.tasks.running();
        if running > 0 {
            info!(
                running,
                bound_secs = TASK_DRAIN.as_secs(),
                "waiting for api tasks before stopping"
            );
        }
        let end = std::time::Instant::now() + TASK_DRAIN;
        let mut idle = false;
        while !idle && std::time::Instant::now() < end {
            alive();
            let left = end.saturating_duration_since(std::time::Instant::now());
            idle = self
                .shared
                .tasks
                .wait_idle(left.min(Duration::from_secs(5)));
        }
        if !idle {
            warn!(
                running = self.shared.tasks.running(),
                "api tasks still running; stopping without them"
            );
        }
        idle
    }

    /// Removes the socket file: the last step before exit.
    pub fn close(&self) {
        self.handle.remove_socket();
    }
}
