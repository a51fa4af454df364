//! Carries out a `Plan`: backup, `pct set`, log, event line. Only a zero exit status counts as a
//! change; everything else is reported as a failure and leaves no backup claiming it happened.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

use crate::act::backup::{Alloc, BackupStore, BaselineUnreadable, Identity, Recorded};
use crate::act::ctrecord;
use crate::act::pct::{self, PctOutcome, PctRunner, SetArgs};
use crate::decide::plan::Change;
use crate::read::pveconf;
use crate::read::snapshot::Snapshot;
use crate::record::events::EventLog;

/// Cycles a container is left alone after `pct` exited 0 without its conf then holding the new
/// value: 12, one hour at the default `poll_interval`. Such a change is logged once as "not
/// applied", counted as a failure (never as a change), and its backup removed.
pub const NOT_APPLIED_BACKOFF_CYCLES: u32 = 12;

/// Containers held back after a change `pct` accepted but did not apply. Lives as long as the
/// service loop; one `apply` call is one cycle.
#[derive(Debug, Default)]
pub struct NotApplied {
    /// vmid -> cycles still to skip.
    held: BTreeMap<u32, u32>,
    /// Containers whose baseline was unreadable: not changed until it reads again (after
    /// `rebaseline`). Reported once, when found.
    bad_baseline: BTreeSet<u32>,
}

impl NotApplied {
    /// Whether `vmid`'s baseline was found unreadable and still is (read again to find out).
    fn baseline_still_bad(&mut self, vmid: u32, backups: &BackupStore) -> bool {
        if !self.bad_baseline.contains(&vmid) {
            return false;
        }
        if backups.baseline(vmid).is_ok() {
            self.bad_baseline.remove(&vmid);
            return false;
        }
        true
    }

    fn next_cycle(&mut self) {
        self.held.retain(|_, left| {
            *left = left.saturating_sub(1);
            *left > 0
        });
    }

    fn hold(&mut self, vmid: u32) {
        self.held.insert(vmid, NOT_APPLIED_BACKOFF_CYCLES);
    }

    /// Containers found with an unreadable baseline and not changed since (until `rebaseline`).
    pub fn bad_baselines(&self) -> impl Iterator<Item = u32> + '_ {
        self.bad_baseline.iter().copied()
    }

    /// Whether changes to `vmid` are being skipped this cycle.
    pub fn is_held(&self, vmid: u32) -> bool {
        self.held.contains_key(&vmid)
    }
}

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
    /// Directory of `<vmid>.conf` (`pve_lxc_dir`), re-read after `pct` to confirm a change.
    pub conf_dir: &'a Path,
    /// Back-off state, kept by the caller from one cycle to the next.
    pub not_applied: &'a mut NotApplied,
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
    /// Containers whose change was skipped: held back after one that was not applied.
    pub backed_off: Vec<u32>,
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
/// vmid and never stop the loop. A container held back after a change that `pct` accepted but
/// did not apply (see `NotApplied`) is skipped, and listed in `Report::backed_off`.
pub fn apply(
    changes: &[Change],
    snap: &Snapshot,
    target: &mut Target<'_>,
    now: DateTime<Utc>,
) -> Report {
    let mut report = Report::default();
    if !target.dry_run {
        target.not_applied.next_cycle();
    }
    for change in changes {
        if (target.should_stop)() {
            report.interrupted = true;
            break;
        }
        if !target.dry_run
            && target
                .not_applied
                .baseline_still_bad(change.vmid, target.backups)
        {
            debug!(
                vmid = change.vmid,
                "change held back: its baseline is unreadable"
            );
            report.backed_off.push(change.vmid);
            continue;
        }
        if !target.dry_run && target.not_applied.is_held(change.vmid) {
            debug!(
                vmid = change.vmid,
                "change held back: pct accepted the last one without applying it"
            );
            report.backed_off.push(change.vmid);
            continue;
        }
        apply_one(change, snap, target, now, &mut report);
    }
    report
}

/// Backs up, runs `pct` and confirms one change; records the outcome in `report`.
fn apply_one(
    change: &Change,
    snap: &Snapshot,
    target: &mut Target<'_>,
    now: DateTime<Utc>,
    report: &mut Report,
) {
    let vmid = change.vmid;
    let summary = describe(change);
    let args = SetArgs {
        cores: change.cores.map(|s| s.to),
        delete_cores: false,
        memory_mb: change.memory_mb.map(|s| s.to),
    };
    let Some(argv) = pct::set_argv(vmid, &args) else {
        let why = "refused: invalid vmid or empty change".to_string();
        return fail(report, target, vmid, &summary, why);
    };
    if target.dry_run {
        let command = format!("{} {}", target.pct_display, argv.join(" "));
        info!(vmid, command = %command, reason = %change.why(), "dry run: would run");
        report.would_run.push(command);
        return;
    }
    let Some(conf) = snap
        .containers
        .iter()
        .find(|c| c.vmid == vmid)
        .and_then(|c| c.conf.as_ref())
    else {
        return fail(report, target, vmid, &summary, "no conf in snapshot".into());
    };
    let before = Alloc {
        cores: conf.cores,
        memory_mb: conf.memory_mb,
        swap_mb: conf.swap_mb,
    };
    let after = Alloc {
        cores: args.cores.or(conf.cores),
        memory_mb: args.memory_mb.unwrap_or(conf.memory_mb),
        swap_mb: conf.swap_mb,
    };
    let identity = Identity::of(conf);
    let recorded = match target
        .backups
        .record_for(vmid, Some(&identity), &before, &after, now)
    {
        Ok(r) => r,
        Err(e) => {
            if e.downcast_ref::<BaselineUnreadable>().is_some() {
                target.not_applied.bad_baseline.insert(vmid);
            }
            let why = format!("not applied: backup failed: {e:#}");
            return fail(report, target, vmid, &summary, why);
        }
    };
    if let Some((moved_to, why)) = &recorded.replaced {
        warn!(
            vmid,
            moved_to = %moved_to.display(),
            "another container now has this vmid ({why}): its old backups were moved aside and a fresh baseline started"
        );
    }
    let outcome = match target.pct.run(&argv) {
        PctOutcome::Ok => {
            let confirmed = confirm(target.conf_dir, vmid, &args);
            if confirmed.is_err() {
                target.not_applied.hold(vmid);
            }
            confirmed
        }
        PctOutcome::Failed { .. } if conf_gone(target.conf_dir, vmid) => {
            return dropped_gone(target, vmid, &recorded);
        }
        other => Err(failure_text(other)),
    };
    match outcome {
        Ok(()) => {
            ctrecord::note_confirmed(target.backups, vmid, &identity, (&before, &after), now);
            applied(change, summary, target, report);
        }
        Err(why) => {
            keep_backup_if_conf_moved(target, vmid, &before, &recorded);
            fail(report, target, vmid, &summary, why);
        }
    }
}

/// Records a change that `pct` made and the conf confirms.
fn applied(change: &Change, summary: String, target: &mut Target<'_>, report: &mut Report) {
    let vmid = change.vmid;
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

/// After `pct` exited 0: whether `<conf_dir>/<vmid>.conf` now holds what was set. `Err` says
/// what it holds instead, or why it cannot be read.
pub fn conf_holds(conf_dir: &Path, vmid: u32, args: &SetArgs) -> Result<(), String> {
    let path = pveconf::conf_path(conf_dir, vmid);
    let conf = match pveconf::read_conf(conf_dir, vmid) {
        Ok(Some(conf)) => conf,
        Ok(None) => return Err(format!("{} is gone", path.display())),
        Err(e) => return Err(format!("{e:#}")),
    };
    let cores_ok = if args.delete_cores {
        conf.cores.is_none()
    } else {
        args.cores.is_none() || args.cores == conf.cores
    };
    let memory_ok = args.memory_mb.map_or(true, |m| m == conf.memory_mb);
    if cores_ok && memory_ok {
        return Ok(());
    }
    let cores = conf.cores.map_or("all host cpus".into(), |c| c.to_string());
    Err(format!(
        "{} holds cores {cores}, memory {} MB",
        path.display(),
        conf.memory_mb
    ))
}

/// After a failed change: pct may have written part of it, or all of it before it failed or was
/// killed. Unless the conf still holds what it held before (or is gone with its container), the
/// change's backup and a first change's baseline are the only record of the allocation to roll
/// back to, so they stay; otherwise they go.
fn keep_backup_if_conf_moved(target: &Target<'_>, vmid: u32, before: &Alloc, recorded: &Recorded) {
    match conf_moved_from(target.conf_dir, vmid, before) {
        None => {
            if let Err(e) = target.backups.discard(recorded) {
                warn!(vmid, error = %format!("{e:#}"), "cannot remove backup of failed change");
            }
        }
        Some(found) => warn!(
            vmid,
            backup = %recorded.path.display(),
            found = %found,
            "the failed change left the conf changed: its backup is kept for rollback"
        ),
    }
}

/// What the conf of `vmid` holds when that is no longer `before` (or it cannot be read); `None`
/// when it still holds `before` or is gone.
fn conf_moved_from(conf_dir: &Path, vmid: u32, before: &Alloc) -> Option<String> {
    if matches!(pveconf::read_conf(conf_dir, vmid), Ok(None)) {
        return None;
    }
    let untouched = SetArgs {
        cores: before.cores,
        delete_cores: before.cores.is_none(),
        memory_mb: Some(before.memory_mb),
    };
    conf_holds(conf_dir, vmid, &untouched).err()
}

/// Whether the conf of `vmid` is gone: the container was destroyed (or migrated away).
fn conf_gone(conf_dir: &Path, vmid: u32) -> bool {
    matches!(pveconf::read_conf(conf_dir, vmid), Ok(None))
}

/// A change `pct` refused because the container vanished meanwhile: not an error, and nothing to
/// roll back to, so its backup (and a baseline it created) go.
fn dropped_gone(target: &Target<'_>, vmid: u32, recorded: &Recorded) {
    if let Err(e) = target.backups.discard(recorded) {
        warn!(vmid, error = %format!("{e:#}"), "cannot remove backup of a dropped change");
    }
    info!(vmid, "change dropped: the container is gone");
}

/// `conf_holds`, worded as the failure it is; it starts the back-off.
fn confirm(conf_dir: &Path, vmid: u32, args: &SetArgs) -> Result<(), String> {
    conf_holds(conf_dir, vmid, args).map_err(|found| {
        format!(
            "not applied: pct exited 0 but {found}; no change to this container for the next {NOT_APPLIED_BACKOFF_CYCLES} cycles"
        )
    })
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
