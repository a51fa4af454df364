//! Carries out a `Plan`: backup, `pct set`, log, event line. Only a zero exit status counts as a
//! change; everything else is reported as a failure and leaves no backup claiming it happened.

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use crate::act::backup::{Alloc, BackupStore};
use crate::act::pct::{self, PctOutcome, PctRunner, SetArgs};
use crate::decide::plan::Change;
use crate::read::snapshot::Snapshot;
use crate::record::events::EventLog;

/// Where and how a plan is applied.
pub struct Target<'a> {
    pub pct: &'a mut dyn PctRunner,
    /// Program name shown in dry-run lines and logs.
    pub pct_display: String,
    pub backups: &'a BackupStore,
    pub events: Option<&'a EventLog>,
    /// Log the exact command instead of running it; write no backup.
    pub dry_run: bool,
    /// Checked after every `pct` call: true stops before the next container.
    pub should_stop: &'a dyn Fn() -> bool,
}

/// A change `pct` confirmed with exit status 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub change: Change,
    pub summary: String,
}

/// A change that did not happen, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub vmid: u32,
    pub summary: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub applied: Vec<Applied>,
    pub failed: Vec<Failure>,
    /// Commands a dry run would have run.
    pub would_run: Vec<String>,
    /// True when a stop request cut the plan short.
    pub interrupted: bool,
}

/// `cores 2->4, memory 1024->1536 MB`.
pub fn describe(change: &Change) -> String {
    let mut parts = Vec::new();
    if let Some(c) = change.cores {
        parts.push(format!("cores {}->{}", c.from, c.to));
    }
    if let Some(m) = change.memory_mb {
        parts.push(format!("memory {}->{} MB", m.from, m.to));
    }
    parts.join(", ")
}

/// Applies every change of `plan_changes` in order. Per-container problems are logged with the
/// vmid and never stop the loop.
#[allow(clippy::too_many_lines)] // split by h11's rework, in progress
pub fn apply(
    changes: &[Change],
    snap: &Snapshot,
    target: &mut Target<'_>,
    now: DateTime<Utc>,
) -> Report {
    let mut report = Report::default();
    for change in changes {
        if (target.should_stop)() {
            report.interrupted = true;
            break;
        }
        let vmid = change.vmid;
        let summary = describe(change);
        let args = SetArgs {
            cores: change.cores.map(|s| s.to),
            delete_cores: false,
            memory_mb: change.memory_mb.map(|s| s.to),
        };
        let Some(argv) = pct::set_argv(vmid, &args) else {
            fail(
                &mut report,
                target,
                vmid,
                &summary,
                "refused: invalid vmid or empty change".into(),
            );
            continue;
        };
        let command = format!("{} {}", target.pct_display, argv.join(" "));
        if target.dry_run {
            info!(vmid, command = %command, reason = %change.why(), "dry run: would run");
            report.would_run.push(command);
            continue;
        }

        let Some(conf) = snap
            .containers
            .iter()
            .find(|c| c.vmid == vmid)
            .and_then(|c| c.conf.as_ref())
        else {
            fail(
                &mut report,
                target,
                vmid,
                &summary,
                "no conf in snapshot".into(),
            );
            continue;
        };
        let before = Alloc {
            cores: conf.cores,
            memory_mb: conf.memory_mb,
            swap_mb: conf.swap_mb,
        };
        let after = Alloc {
            cores: change.cores.map(|s| s.to).or(conf.cores),
            memory_mb: change.memory_mb.map_or(conf.memory_mb, |s| s.to),
            swap_mb: conf.swap_mb,
        };
        let recorded = match target.backups.record(vmid, &before, &after, now) {
            Ok(r) => r,
            Err(e) => {
                fail(
                    &mut report,
                    target,
                    vmid,
                    &summary,
                    format!("not applied: backup failed: {e:#}"),
                );
                continue;
            }
        };

        match target.pct.run(&argv) {
            PctOutcome::Ok => {
                info!(
                    vmid,
                    cores_from = change.cores.map(|s| s.from),
                    cores_to = change.cores.map(|s| s.to),
                    memory_from_mb = change.memory_mb.map(|s| s.from),
                    memory_to_mb = change.memory_mb.map(|s| s.to),
                    reason = %change.why(),
                    "scaled"
                );
                if let Some(events) = target.events {
                    if let Err(e) = events.record(vmid, "scale", &summary) {
                        warn!(vmid, error = %format!("{e:#}"), "cannot write event log");
                    }
                }
                if let Err(e) = target.backups.prune(vmid) {
                    warn!(vmid, error = %format!("{e:#}"), "cannot prune old backups");
                }
                report.applied.push(Applied {
                    change: change.clone(),
                    summary,
                });
            }
            outcome => {
                if let Err(e) = target.backups.discard(&recorded) {
                    warn!(vmid, error = %format!("{e:#}"), "cannot remove backup of failed change");
                }
                let why = failure_text(outcome);
                fail(&mut report, target, vmid, &summary, why);
            }
        }
    }
    report
}

/// Why a `pct` run did not change anything, for logs and notifications.
fn failure_text(outcome: PctOutcome) -> String {
    match outcome {
        PctOutcome::Ok => "pct reported success".into(),
        PctOutcome::Failed {
            code: Some(c),
            stderr,
        } => format!("pct exited with status {c}: {stderr}"),
        PctOutcome::Failed { code: None, stderr } => {
            format!("pct was killed by a signal: {stderr}")
        }
        PctOutcome::TimedOut => format!(
            "pct timed out after {} s and was killed",
            pct::PCT_TIMEOUT.as_secs()
        ),
        PctOutcome::SpawnError(e) => format!("cannot run pct: {e}"),
    }
}

fn fail(report: &mut Report, target: &Target<'_>, vmid: u32, summary: &str, error: String) {
    error!(vmid, change = %summary, error = %error, "change failed");
    if let Some(events) = target.events {
        if let Err(e) = events.record(vmid, "failure", &format!("{summary}: {error}")) {
            warn!(vmid, error = %format!("{e:#}"), "cannot write event log");
        }
    }
    report.failed.push(Failure {
        vmid,
        summary: summary.to_string(),
        error,
    });
}
