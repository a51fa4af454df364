//! Long operations (storage grow, rollback, clone, destroy) run as tasks on their own thread, never
//! in the cycle. The busy set is the one rule for `pct`: a container is claimed by the loop or by
//! a task before any `pct` call on it, so it never has two at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::act::pct::{PctOutcome, PctRunner};

/// Tasks kept for `GET /tasks/<id>` after they end.
const KEEP_FINISHED: usize = 256;
/// Tasks running at once at most; more get 503.
pub const MAX_RUNNING: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Ok,
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Ok => "ok",
            TaskState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub id: String,
    pub kind: &'static str,
    pub vmid: u32,
    pub caller: String,
    pub state: TaskState,
    pub message: String,
    pub seq: u64,
}

impl TaskInfo {
    pub fn to_json(&self) -> Value {
        json!({
            "task_id": self.id,
            "kind": self.kind,
            "lxc_id": self.vmid,
            "state": self.state.as_str(),
            "message": self.message,
        })
    }
}

/// What a finished task reports to the loop (events, notifications).
#[derive(Debug, Clone)]
pub struct TaskDone {
    pub info: TaskInfo,
    /// Argv of every `pct` call that exited 0.
    pub ran: Vec<Vec<String>>,
}

/// The steps of a task: they run `pct` through the runner and say what happened.
pub type Steps = Box<dyn FnOnce(&mut Session) -> Result<String, String> + Send>;

/// A task's view of `pct`: runs argv, remembers what succeeded, words failures.
pub struct Session<'a> {
    pub runner: &'a mut dyn PctRunner,
    pub ran: Vec<Vec<String>>,
}

impl Session<'_> {
    /// Runs one `pct` call; `Err` holds the exit status and the first lines of stderr.
    pub fn run(&mut self, argv: &[String]) -> Result<(), String> {
        let outcome = self.runner.run(argv);
        if outcome.is_ok() {
            self.ran.push(argv.to_vec());
            return Ok(());
        }
        Err(format!("pct {}: {}", argv[0], outcome_text(&outcome)))
    }
}

/// `exit status 2: <first stderr lines>`.
pub fn outcome_text(outcome: &PctOutcome) -> String {
    match outcome {
        PctOutcome::Ok => "exit status 0".into(),
        PctOutcome::Failed { code, stderr } => {
            let status = code.map_or("killed by a signal".to_string(), |c| {
                format!("exit status {c}")
            });
            format!("{status}: {}", first_lines(stderr))
        }
        PctOutcome::TimedOut => "timed out and was killed".into(),
        PctOutcome::SpawnError(e) => e.clone(),
    }
}

/// The first three non-empty lines of stderr joined by ` | `, at most 400 characters: where
/// `pct` says what went wrong.
fn first_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect();
    lines.join(" | ").chars().take(400).collect()
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<String, TaskInfo>,
    busy: HashSet<u32>,
    running: usize,
}

/// The task registry and the busy set.
#[derive(Default)]
pub struct Tasks {
    inner: Mutex<Inner>,
    changed: Condvar,
    seq: AtomicU64,
}

/// Why a task or a change could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 409: a `pct` call on one of these containers is running.
    Busy(u32),
    /// 503: too many tasks.
    Full,
}

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims every vmid, or none when one is busy.
    pub fn claim(&self, vmids: &[u32]) -> Result<(), Refusal> {
        let mut inner = self.lock();
        if let Some(&v) = vmids.iter().find(|v| inner.busy.contains(v)) {
            return Err(Refusal::Busy(v));
        }
        inner.busy.extend(vmids);
        Ok(())
    }

    pub fn release(&self, vmids: &[u32]) {
        let mut inner = self.lock();
        for v in vmids {
            inner.busy.remove(v);
        }
        drop(inner);
        self.changed.notify_all();
    }

    pub fn is_busy(&self, vmid: u32) -> bool {
        self.lock().busy.contains(&vmid)
    }

    pub fn get(&self, id: &str) -> Option<TaskInfo> {
        self.lock().tasks.get(id).cloned()
    }

    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// Starts `steps` on a new thread with `runner`, holding `vmids` until it ends; `done` is
    /// called with the outcome. Returns the task id.
    pub fn start(
        self: &Arc<Self>,
        kind: &'static str,
        vmids: Vec<u32>,
        caller: String,
        mut runner: Box<dyn PctRunner + Send>,
        steps: Steps,
        done: Box<dyn FnOnce(TaskDone) + Send>,
    ) -> Result<String, Refusal> {
        let info = self.register(kind, &vmids, caller)?;
        let id = info.id.clone();
        let claimed = vmids.clone();
        let tasks = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("api-task-{id}"))
            .spawn(move || {
                let mut session = Session {
                    runner: runner.as_mut(),
                    ran: Vec::new(),
                };
                let result = steps(&mut session);
                let ran = session.ran;
                let info = tasks.finish(info, &vmids, result);
                done(TaskDone { info, ran });
                // Counted as running until the loop has its report, so a drain waits for both.
                tasks.ended();
            });
        if spawned.is_err() {
            // No thread: give the claim back so the containers are not held forever.
            let mut inner = self.lock();
            inner.running -= 1;
            inner.tasks.remove(&id);
            drop(inner);
            self.release(&claimed);
            return Err(Refusal::Full);
        }
        Ok(id)
    }

    fn register(
        &self,
        kind: &'static str,
        vmids: &[u32],
        caller: String,
    ) -> Result<TaskInfo, Refusal> {
        let mut inner = self.lock();
        if inner.running >= MAX_RUNNING {
            return Err(Refusal::Full);
        }
        if let Some(&v) = vmids.iter().find(|v| inner.busy.contains(v)) {
            return Err(Refusal::Busy(v));
        }
        inner.busy.extend(vmids);
        inner.running += 1;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
        let info = TaskInfo {
            id: format!("{stamp}-{seq}"),
            kind,
            vmid: vmids[0],
            caller,
            state: TaskState::Running,
            message: String::new(),
            seq,
        };
        inner.tasks.insert(info.id.clone(), info.clone());
        prune(&mut inner.tasks);
        Ok(info)
    }

    fn finish(
        &self,
        mut info: TaskInfo,
        vmids: &[u32],
        result: Result<String, String>,
    ) -> TaskInfo {
        (info.state, info.message) = match result {
            Ok(m) => (TaskState::Ok, m),
            Err(m) => (TaskState::Failed, m),
        };
        let mut inner = self.lock();
        inner.tasks.insert(info.id.clone(), info.clone());
        for v in vmids {
            inner.busy.remove(v);
        }
        drop(inner);
        self.changed.notify_all();
        info
    }

    fn ended(&self) {
        self.lock().running -= 1;
        self.changed.notify_all();
    }

    /// Waits until no task runs or `bound` passes; true when none runs.
    pub fn wait_idle(&self, bound: Duration) -> bool {
        let end = Instant::now() + bound;
        let mut inner = self.lock();
        while inner.running > 0 {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Drops the oldest finished tasks beyond `KEEP_FINISHED`.
fn prune(tasks: &mut HashMap<String, TaskInfo>) {
    if tasks.len() <= KEEP_FINISHED + MAX_RUNNING {
        return;
    }
    let mut done: Vec<(u64, String)> = tasks
        .values()
        .filter(|t| t.state != TaskState::Running)
        .map(|t| (t.seq, t.id.clone()))
        .collect();
    done.sort();
    let excess = tasks.len() - KEEP_FINISHED;
    for (_, id) in done.into_iter().take(excess) {
        tasks.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Answers every call with `outcome`.
    struct Fixed(PctOutcome);

    impl PctRunner for Fixed {
        fn run(&mut self, _: &[String]) -> PctOutcome {
            self.0.clone()
        }
    }

    #[test]
    fn a_task_holds_its_containers_until_it_ends_and_reports_failure_text() {
        let tasks = Arc::new(Tasks::default());
        let fail = PctOutcome::Failed {
            code: Some(2),
            stderr: "storage does not support snapshots\nmore\nmore\nignored".into(),
        };
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let steps: Steps = Box::new(move |s| {
            gate_rx.recv().unwrap();
            s.run(&["resize".into(), "101".into()])?;
            Ok("grown".into())
        });
        let id = tasks
            .start(
                "storage",
                vec![101],
                "uid 0".into(),
                Box::new(Fixed(fail)),
                steps,
                Box::new(move |d| done_tx.send(d).unwrap()),
            )
            .unwrap();
        assert_eq!(tasks.get(&id).unwrap().state, TaskState::Running);
        assert_eq!(tasks.claim(&[101]), Err(Refusal::Busy(101)));
        gate_tx.send(()).unwrap();
        let done = done_rx.recv().unwrap();
        assert!(tasks.wait_idle(Duration::from_secs(5)));
        assert_eq!(done.info.state, TaskState::Failed);
        assert_eq!(
            done.info.message,
            "pct resize: exit status 2: storage does not support snapshots | more | more"
        );
        assert!(done.ran.is_empty());
        assert_eq!(tasks.claim(&[101]), Ok(()));
    }
}
