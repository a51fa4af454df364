//! The REST API inside the daemon. Its threads read what the service loop published after its
//! last cycle and pass every quick change to the loop as a message, so the loop stays the one
//! writer; long operations run as tasks that claim their containers first.

pub mod auth;
pub mod conf;
pub mod exec;
pub mod holds;
pub mod http;
pub mod openapi;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod tasks;
pub mod validate;
pub mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, RwLock};

use anyhow::Result;

use crate::config::{ApiConfig, ApiListen, Config};
use crate::decide::plan::Change;
use crate::record::metrics::HostRecord;
use crate::record::prometheus::{self, ActionCounters, AnomalyScores};

use self::auth::{FailureLimiter, Token};
use self::http::Response;
use self::tasks::{TaskDone, Tasks};

/// What the loop publishes after each cycle, pre-rendered so that a read costs a lock and a copy.
#[derive(Debug, Default)]
pub struct View {
    /// RFC 3339 time the last cycle ended; `None` before the first.
    pub cycle_at: Option<String>,
    /// `GET /containers`' whole body, rendered by the loop when it publishes the cycle, and where
    /// each record lies in it: the status bodies and the scrapes are cut from it.
    pub containers: view::Containers,
    /// What `GET /resource/lxc/status` adds to a record.
    pub status: StatusInput,
    /// `GET /resource/node/status`' body.
    pub node_body: Arc<String>,
    /// What the Prometheus exposition is rendered from on request, with the records parsed back
    /// from `containers`: at 1000 containers the text is ~1.7 MB, and scrapes come far less often
    /// than cycles.
    pub metrics: MetricsInput,
    pub host_cpus: Option<u32>,
    /// `MemTotal`, MB.
    pub host_memory_mb: Option<u64>,
}

impl View {
    /// The container's memory figures at the last cycle; `None` when it was not running or its
    /// used memory was not measured.
    pub fn memory(&self, vmid: u32) -> Option<MemoryUse> {
        let m = &self.status.memory;
        let i = m.binary_search_by_key(&vmid, |u| u.vmid).ok()?;
        Some(m[i])
    }

    /// The same text as the Prometheus textfile of the same cycle, from the same function.
    pub fn exposition(&self, anomaly: &AnomalyScores, cluster: &str) -> Result<String> {
        let m = &self.metrics;
        let containers = self.containers.records()?;
        Ok(prometheus::exposition(
            &m.host,
            &containers,
            &m.counters,
            &m.planned,
            anomaly,
            cluster,
        ))
    }
}

/// What `GET /resource/lxc/status` shows beside a record: the plan's notes and the daemon's holds;
/// and what `/scale/ram` checks: each running container's memory (by VMID).
#[derive(Debug, Clone, Default)]
pub struct StatusInput {
    pub notes: Vec<crate::decide::plan::Note>,
    pub memory: Vec<MemoryUse>,
    pub extras: HashMap<u32, serde_json::Value>,
}

/// A running container's memory at the last cycle, from its record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryUse {
    pub vmid: u32,
    /// `memory.current` − (`file` − `shmem`), MB.
    pub used_mb: f64,
    /// `memory.current` − `inactive_file`, MB; `None` without `inactive_file`.
    pub working_set_mb: Option<f64>,
}

impl MemoryUse {
    /// The least memory, MB, a change may leave it: the autoscaler's own floor for a cut.
    pub fn floor_mb(&self) -> u64 {
        crate::decide::policy::cut_floor_mb(self.used_mb, self.working_set_mb)
    }
}

/// The figures `GET /metrics` renders beside the records.
#[derive(Debug, Clone, Default)]
pub struct MetricsInput {
    pub host: HostRecord,
    pub counters: ActionCounters,
    pub planned: Vec<Change>,
}

/// What one cycle published: the view, and what the metrics show beside its records (the anomaly
/// scores; the cluster families in cluster mode).
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub view: Arc<View>,
    pub anomaly: Arc<AnomalyScores>,
    pub cluster: Arc<str>,
}

/// The API's part of the config, with the token read from its file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub token: Option<Token>,
    pub api: ApiConfig,
    pub pve_lxc_dir: PathBuf,
    pub pve_vmlist: PathBuf,
    /// `cgroup_root`: a container runs while `<cgroup_root>/<vmid>/` exists.
    pub cgroup_root: PathBuf,
    pub pct_path: PathBuf,
    /// `pve_root` in cluster mode (`GET /cluster/status` reads its status files), else `None`.
    pub pve_root: Option<PathBuf>,
}

impl Settings {
    /// Reads the token file when one is configured; errors name `api.token_file`.
    pub fn from_config(cfg: &Config) -> Result<Settings> {
        let token = if cfg.api.token_file.as_os_str().is_empty() {
            None
        } else {
            Some(auth::load_token(&cfg.api.token_file)?)
        };
        Ok(Settings {
            token,
            api: cfg.api.clone(),
            pve_lxc_dir: cfg.pve_lxc_dir.clone(),
            pve_vmlist: cfg.pve_vmlist.clone(),
            cgroup_root: cfg.cgroup_root.clone(),
            pct_path: cfg.pct_path.clone(),
            pve_root: cfg.cluster_node.as_ref().map(|_| cfg.pve_root.clone()),
        })
    }

    pub fn listen(&self) -> ApiListen {
        self.api.listen_addr().unwrap_or(ApiListen::Off)
    }
}

/// A change that answers when `pct` has finished. Run by the loop through the apply path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quick {
    Cores {
        vmid: u32,
        cores: u32,
        hold_secs: u64,
    },
    Memory {
        vmid: u32,
        memory_mb: u64,
        hold_secs: u64,
    },
    Snapshot {
        vmid: u32,
        name: String,
        description: Option<String>,
    },
}

impl Quick {
    pub fn vmid(&self) -> u32 {
        match self {
            Quick::Cores { vmid, .. }
            | Quick::Memory { vmid, .. }
            | Quick::Snapshot { vmid, .. } => *vmid,
        }
    }
}

/// A quick change on its way to the loop, with where to send the answer.
#[derive(Debug)]
pub struct Mutation {
    pub op: Quick,
    /// Peer address or `uid N`: recorded in the event.
    pub caller: String,
    pub reply: mpsc::Sender<Response>,
    /// `PENDING` until the loop takes the change or its caller stops waiting (`GIVEN_UP`).
    pub state: Arc<AtomicU8>,
}

const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const GIVEN_UP: u8 = 2;

impl Mutation {
    pub fn new(op: Quick, caller: String, reply: mpsc::Sender<Response>) -> Mutation {
        Mutation {
            op,
            caller,
            reply,
            state: Arc::new(AtomicU8::new(PENDING)),
        }
    }

    /// The loop takes the change before running it: false when its caller was already told it
    /// did not happen (then it must not run).
    pub fn take(&self) -> bool {
        take_once(&self.state, TAKEN)
    }
}

/// The caller stops waiting: true when the loop had not taken the change, which then never runs.
pub fn give_up(state: &AtomicU8) -> bool {
    take_once(state, GIVEN_UP)
}

fn take_once(state: &AtomicU8, to: u8) -> bool {
    state
        .compare_exchange(PENDING, to, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

/// Where the API hands work to the daemon: quick changes to the loop, finished tasks too.
pub trait LoopLink: Send + Sync {
    /// False when the loop no longer takes messages.
    fn mutate(&self, m: Mutation) -> bool;
    fn task_done(&self, done: TaskDone);
}

/// Everything the API threads share.
pub struct Shared {
    /// The view and the anomaly scores, swapped together so a scrape never mixes two cycles.
    pub published: RwLock<Published>,
    pub settings: RwLock<Arc<Settings>>,
    /// Set on SIGTERM: every new request gets 503.
    pub draining: AtomicBool,
    /// Set by `GET /metrics`, taken by the loop: a scraper wants the history-only figures even
    /// where no history or Prometheus file does.
    pub metrics_scraped: AtomicBool,
    pub limiter: FailureLimiter,
    pub tasks: Arc<Tasks>,
    pub link: Box<dyn LoopLink>,
}

impl Shared {
    pub fn new(settings: Settings, link: Box<dyn LoopLink>) -> Arc<Shared> {
        Arc::new(Shared {
            published: RwLock::new(Published::default()),
            settings: RwLock::new(Arc::new(settings)),
            draining: AtomicBool::new(false),
            metrics_scraped: AtomicBool::new(false),
            limiter: FailureLimiter::default(),
            tasks: Arc::new(Tasks::default()),
            link,
        })
    }

    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.published().view)
    }

    pub fn published(&self) -> Published {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes a cycle's view the one requests see.
    pub fn publish(&self, view: View, anomaly: AnomalyScores, cluster: &str) {
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = Published {
            view: Arc::new(view),
            anomaly: Arc::new(anomaly),
            cluster: Arc::from(cluster),
        };
    }

    pub fn set_settings(&self, s: Settings) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoLoop;

    impl LoopLink for NoLoop {
        fn mutate(&self, _: Mutation) -> bool {
            false
        }
        fn task_done(&self, _: TaskDone) {}
    }

    fn shared() -> Arc<Shared> {
        let settings = Settings {
            token: None,
            api: ApiConfig::default(),
            pve_lxc_dir: PathBuf::from("/nonexistent/lxc"),
            pve_vmlist: PathBuf::from("/nonexistent/.vmlist"),
            cgroup_root: PathBuf::from("/nonexistent/cgroup"),
            pct_path: PathBuf::from("/nonexistent/pct"),
            pve_root: None,
        };
        Shared::new(settings, Box::new(NoLoop))
    }

    /// A loop that keeps the changes it is sent, as a loop busy with a long cycle would.
    struct Busy(Arc<std::sync::Mutex<Vec<Mutation>>>);

    impl LoopLink for Busy {
        fn mutate(&self, m: Mutation) -> bool {
            self.0.lock().unwrap().push(m);
            true
        }
        fn task_done(&self, _: TaskDone) {}
    }

    #[test]
    fn a_quick_change_its_caller_was_told_was_not_made_never_runs_later() {
        let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut settings = (*shared().settings()).clone();
        settings.token = None;
        let shared = Shared::new(settings, Box::new(Busy(Arc::clone(&kept))));
        let ctx = routes::Ctx {
            shared: &shared,
            peer: "127.0.0.1",
        };
        let op = Quick::Cores {
            vmid: 101,
            cores: 2,
            hold_secs: 0,
        };
        let wait = std::time::Duration::from_millis(10);
        let r = routes::run_quick_within(&ctx, op, wait);
        assert_eq!(r.status, 503);
        let m = kept.lock().unwrap().pop().unwrap();
        // The loop comes to it after the answer: it must not run it.
        assert!(!m.take());
    }

    #[test]
    fn a_valid_scale_before_the_first_cycle_is_503_not_out_of_range() {
        let shared = shared();
        for (path, body) in [
            ("/scale/cores", r#"{"lxc_id": 101, "cores": 2}"#),
            ("/scale/ram", r#"{"lxc_id": 101, "memory": 1024}"#),
        ] {
            let req = http::Request {
                method: "POST".into(),
                path: path.into(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.as_bytes().to_vec(),
                ..http::Request::default()
            };
            assert_eq!(routes::handle(&shared, "uid 0", &req).status, 503, "{path}");
        }
    }
}
