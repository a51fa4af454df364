//! Logging of files that could not be read: once per vmid and file when it starts failing, a
//! reminder every `REMIND_AFTER` while it keeps failing, and once more when it reads again. The
//! collector returns the failures as data; this is the edge that turns them into log lines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::read::collect::{Problem, ReadFailure};
use crate::read::snapshot::Snapshot;

/// How often a failure that persists is logged again.
pub const REMIND_AFTER: Duration = Duration::from_secs(3600);
/// Failure lines per cycle at most (a broken cgroupfs would otherwise log one line per file of
/// every container at once); the rest are logged in later cycles, and one line counts them.
pub const MAX_LINES_PER_CYCLE: usize = 20;

/// One line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `file` of `vmid` started failing (or fails differently than before).
    Failing {
        vmid: u32,
        path: PathBuf,
        problem: Problem,
    },
    /// Still failing `REMIND_AFTER` after the last line about it.
    StillFailing {
        vmid: u32,
        path: PathBuf,
        problem: Problem,
        failed_cycles: u64,
    },
    /// Read again after `failed_cycles` failing cycles.
    Recovered {
        vmid: u32,
        path: PathBuf,
        failed_cycles: u64,
    },
    /// Failures left unlogged this cycle by `MAX_LINES_PER_CYCLE`.
    Deferred { count: usize },
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    problem: Problem,
    history_only: bool,
    failed_cycles: u64,
    /// When the last line about it was logged; `None` while it has not been logged.
    logged_at: Option<Instant>,
    seen: bool,
}

/// The failures seen so far, by (vmid, file).
#[derive(Debug, Default)]
pub struct ReadFailureLog {
    entries: HashMap<(u32, &'static str), Entry>,
}

impl ReadFailureLog {
    /// The lines for one cycle's `failures`. `running` are the vmids of the snapshot (sorted): a
    /// failure of a container no longer running is forgotten without a line. With
    /// `history_read` false the history-only files were not read, so their failures are
    /// forgotten too.
    pub fn observe(
        &mut self,
        failures: &[ReadFailure],
        running: &[u32],
        history_read: bool,
        now: Instant,
    ) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut deferred = 0;
        for f in failures {
            let entry = self.entry(f);
            entry.failed_cycles += 1;
            entry.seen = true;
            let line = match entry.logged_at {
                None => Line::Failing {
                    vmid: f.vmid,
                    path: entry.path.clone(),
                    problem: entry.problem.clone(),
                },
                Some(at) if now.saturating_duration_since(at) >= REMIND_AFTER => {
                    Line::StillFailing {
                        vmid: f.vmid,
                        path: entry.path.clone(),
                        problem: entry.problem.clone(),
                        failed_cycles: entry.failed_cycles,
                    }
                }
                Some(_) => continue,
            };
            if lines.len() >= MAX_LINES_PER_CYCLE {
                deferred += 1;
                continue;
            }
            entry.logged_at = Some(now);
            lines.push(line);
        }
        self.entries.retain(|&(vmid, _), e| {
            if std::mem::take(&mut e.seen) {
                return true;
            }
            let checked = running.binary_search(&vmid).is_ok() && (history_read || !e.history_only);
            if checked && e.logged_at.is_some() {
                lines.push(Line::Recovered {
                    vmid,
                    path: e.path.clone(),
                    failed_cycles: e.failed_cycles,
                });
            }
            false
        });
        if deferred > 0 {
            lines.push(Line::Deferred { count: deferred });
        }
        lines
    }

    /// The entry of `f`, made afresh when new or when its problem changed.
    fn entry(&mut self, f: &ReadFailure) -> &mut Entry {
        let entry = self
            .entries
            .entry((f.vmid, f.file))
            .or_insert_with(|| Entry {
                path: f.path.clone(),
                problem: f.problem.clone(),
                history_only: f.history_only,
                failed_cycles: 0,
                logged_at: None,
                seen: false,
            });
        if entry.problem != f.problem {
            entry.problem = f.problem.clone();
            entry.failed_cycles = 0;
            entry.logged_at = None;
        }
        entry
    }

    /// Logs the lines for one cycle's `failures` of `snap`.
    pub fn log(&mut self, failures: &[ReadFailure], snap: &Snapshot, history_read: bool) {
        let running: Vec<u32> = snap.containers.iter().map(|c| c.vmid).collect();
        for line in self.observe(failures, &running, history_read, Instant::now()) {
            emit(&line);
        }
    }
}

fn emit(line: &Line) {
    match line {
        Line::Failing {
            vmid,
            path,
            problem,
        } => warn!(
            vmid,
            path = %path.display(),
            error = %problem,
            "cannot read; its figures are missing until it reads again"
        ),
        Line::StillFailing {
            vmid,
            path,
            problem,
            failed_cycles,
        } => warn!(
            vmid,
            path = %path.display(),
            error = %problem,
            failed_cycles,
            "still cannot read"
        ),
        Line::Recovered {
            vmid,
            path,
            failed_cycles,
        } => info!(
            vmid,
            path = %path.display(),
            failed_cycles,
            "readable again"
        ),
        Line::Deferred { count } => {
            warn!(
                count,
                "more files cannot be read; they are logged in the next cycles"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(vmid: u32, file: &'static str, problem: Problem) -> ReadFailure {
        ReadFailure {
            vmid,
            file,
            path: PathBuf::from(format!("/sys/fs/cgroup/lxc/{vmid}/{file}")),
            problem,
            history_only: file == "io.stat",
        }
    }

    fn failing(vmid: u32, file: &str, problem: Problem) -> Line {
        Line::Failing {
            vmid,
            path: PathBuf::from(format!("/sys/fs/cgroup/lxc/{vmid}/{file}")),
            problem,
        }
    }

    #[test]
    fn a_failure_is_logged_once_over_many_cycles_then_once_when_it_recovers() {
        let mut log = ReadFailureLog::default();
        let t0 = Instant::now();
        let f = [failure(101, "cpu.stat", Problem::Failed(5))];
        let mut all = Vec::new();
        for i in 0..10 {
            all.extend(log.observe(&f, &[101], true, t0 + Duration::from_secs(30 * i)));
        }
        assert_eq!(all, vec![failing(101, "cpu.stat", Problem::Failed(5))]);
        let lines = log.observe(&[], &[101], true, t0 + Duration::from_secs(300));
        assert_eq!(
            lines,
            vec![Line::Recovered {
                vmid: 101,
                path: PathBuf::from("/sys/fs/cgroup/lxc/101/cpu.stat"),
                failed_cycles: 10,
            }]
        );
        assert_eq!(
            log.observe(&[], &[101], true, t0 + Duration::from_secs(330)),
            vec![]
        );
    }

    #[test]
    fn a_persisting_failure_is_logged_again_after_the_reminder_interval() {
        let mut log = ReadFailureLog::default();
        let t0 = Instant::now();
        let f = [failure(101, "memory.stat", Problem::Garbled)];
        assert_eq!(log.observe(&f, &[101], true, t0).len(), 1);
        assert_eq!(log.observe(&f, &[101], true, t0 + REMIND_AFTER / 2), vec![]);
        assert_eq!(
            log.observe(&f, &[101], true, t0 + REMIND_AFTER),
            vec![Line::StillFailing {
                vmid: 101,
                path: PathBuf::from("/sys/fs/cgroup/lxc/101/memory.stat"),
                problem: Problem::Garbled,
                failed_cycles: 3,
            }]
        );
        assert_eq!(
            log.observe(&f, &[101], true, t0 + REMIND_AFTER * 3 / 2),
            vec![]
        );
    }

    #[test]
    fn a_different_problem_of_the_same_file_is_logged_anew() {
        let mut log = ReadFailureLog::default();
        let t0 = Instant::now();
        log.observe(
            &[failure(101, "cpu.stat", Problem::Garbled)],
            &[101],
            true,
            t0,
        );
        let lines = log.observe(
            &[failure(101, "cpu.stat", Problem::Failed(5))],
            &[101],
            true,
            t0,
        );
        assert_eq!(lines, vec![failing(101, "cpu.stat", Problem::Failed(5))]);
    }

    #[test]
    fn a_container_that_stops_or_history_turned_off_ends_a_failure_without_a_line() {
        let mut log = ReadFailureLog::default();
        let t0 = Instant::now();
        let f = [
            failure(101, "cpu.stat", Problem::Missing),
            failure(102, "io.stat", Problem::Garbled),
        ];
        assert_eq!(log.observe(&f, &[101, 102], true, t0).len(), 2);
        assert_eq!(log.observe(&[], &[102], false, t0), vec![]);
        // Both were forgotten: failing again is news again.
        assert_eq!(log.observe(&f, &[101, 102], true, t0).len(), 2);
    }

    #[test]
    fn lines_per_cycle_are_capped_and_the_rest_logged_in_later_cycles() {
        let mut log = ReadFailureLog::default();
        let t0 = Instant::now();
        let vmids: Vec<u32> = (100..125).collect();
        let f: Vec<ReadFailure> = vmids
            .iter()
            .map(|&v| failure(v, "cpu.stat", Problem::Failed(5)))
            .collect();
        let first = log.observe(&f, &vmids, true, t0);
        assert_eq!(first.len(), MAX_LINES_PER_CYCLE + 1);
        assert_eq!(first[MAX_LINES_PER_CYCLE], Line::Deferred { count: 5 });
        let second = log.observe(&f, &vmids, true, t0);
        let expected: Vec<Line> = (120..125)
            .map(|v| failing(v, "cpu.stat", Problem::Failed(5)))
            .collect();
        assert_eq!(second, expected);
        assert_eq!(log.observe(&f, &vmids, true, t0), vec![]);
    }
}
