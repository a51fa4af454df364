//! The loop's side of the API: a quick change runs here, on the loop thread, through the same
//! apply path as an autoscaling change (backup, `pct`, event, notification, counter); a finished
//! task is recorded here, so the loop stays the one writer of backups and events.

use serde_json::json;
use tracing::{info, warn};

use super::http::Response;
use super::routes::{error, ok};
use super::tasks::{TaskDone, TaskState, Tasks};
use super::{Mutation, Quick};
use crate::act::apply::{self, NotApplied, Report, Target};
use crate::act::backup::BackupStore;
use crate::act::notify::Notifier;
use crate::act::pct::{self, PctRunner};
use crate::decide::plan::{Change, Reason, Resource, Step};
use crate::read::pveconf;
use crate::read::snapshot::{ContainerSample, CtConf, Snapshot};
use crate::record::events::EventLog;
use crate::record::prometheus::ActionCounters;

/// What the loop lends a quick change.
pub struct LoopCtx<'a> {
    pub pve_lxc_dir: &'a std::path::Path,
    /// `backup_dir`: a rollback sets the container's backups aside.
    pub backup_dir: &'a std::path::Path,
    pub pct: &'a mut dyn PctRunner,
    pub pct_display: String,
    pub backups: &'a BackupStore,
    pub events: Option<&'a EventLog>,
    pub notifier: Option<&'a mut Notifier>,
    pub counters: &'a mut ActionCounters,
    pub host_cpus: Option<u32>,
    pub tasks: &'a Tasks,
}

/// What a successful quick change did, for the hold the daemon then sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub vmid: u32,
    /// The resource a scale changed and the end of its hold (µs since the epoch); `None` for a
    /// snapshot or a hold of 0 seconds.
    pub hold: Option<(Resource, i64)>,
    /// The conf's new `cores` / `memory`, when set.
    pub cores: Option<u32>,
    pub memory_mb: Option<u64>,
    pub caller: String,
}

/// Runs one quick change and answers its caller.
pub fn run_quick(m: Mutation, ctx: &mut LoopCtx) -> Option<Done> {
    if !m.take() {
        // Its caller was already told that it was not made.
        return None;
    }
    let vmid = m.op.vmid();
    if ctx.tasks.claim(&[vmid]).is_err() {
        let _ = m.reply.send(error(
            409,
            &format!("a task on container {vmid} is running"),
            Vec::new(),
        ));
        return None;
    }
    let result = run_claimed(&m, ctx);
    ctx.tasks.release(&[vmid]);
    let (resp, done) = match result {
        Ok((resp, done)) => (resp, Some(done)),
        Err(resp) => (resp, None),
    };
    let _ = m.reply.send(resp);
    done
}

fn fresh_conf(ctx: &LoopCtx, vmid: u32) -> Result<CtConf, Response> {
    match pveconf::read_conf(ctx.pve_lxc_dir, vmid) {
        Ok(Some(c)) if c.lock.is_some() => Err(error(
            409,
            &format!(
                "container {vmid} is locked ({})",
                c.lock.unwrap_or_default()
            ),
            Vec::new(),
        )),
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(error(
            404,
            &format!("container {vmid} does not exist"),
            Vec::new(),
        )),
        Err(e) => Err(error(500, &format!("{e:#}"), Vec::new())),
    }
}

fn run_claimed(m: &Mutation, ctx: &mut LoopCtx) -> Result<(Response, Done), Response> {
    let vmid = m.op.vmid();
    let conf = fresh_conf(ctx, vmid)?;
    let Some((change, held)) = scale_change(m, &conf, ctx.host_cpus) else {
        let Quick::Snapshot {
            name, description, ..
        } = &m.op
        else {
            unreachable!("scale_change covers every scale")
        };
        let resp = snapshot(ctx, vmid, name, description.as_deref(), &m.caller)?;
        let done = Done {
            vmid,
            hold: None,
            cores: None,
            memory_mb: None,
            caller: m.caller.clone(),
        };
        return Ok((resp, done));
    };
    let report = apply_one(ctx, &change, conf);
    ctx.counters.add(
        report.applied.iter().map(|a| &a.change),
        report.failed.len(),
    );
    if let Some(f) = report.failed.first() {
        let text = format!("{} by {}: {}", f.summary, m.caller, f.error);
        notify(
            ctx,
            &format!("lxc_autoscale: CT {vmid} API change failed"),
            &text,
            8,
        );
        return Err(error(
            500,
            &format!("container {vmid}: {}", f.error),
            Vec::new(),
        ));
    }
    let summary = apply::describe(&change);
    record(ctx, vmid, "api", &format!("{summary} by {}", m.caller));
    let title = format!("lxc_autoscale: CT {vmid} changed through the API");
    notify(ctx, &title, &format!("{summary} by {}", m.caller), 5);
    let secs = i64::try_from(held.1).unwrap_or(i64::MAX / 2_000_000);
    let until = chrono::Utc::now()
        .timestamp_micros()
        .saturating_add(secs.saturating_mul(1_000_000));
    let hold_until = chrono::DateTime::from_timestamp_micros(until).map(|t| t.to_rfc3339());
    let data = json!({"lxc_id": vmid, "cores": change.cores, "memory": change.memory_mb,
        "hold_seconds": held.1, "hold_until": hold_until, "hold_until_usec": until});
    let done = Done {
        vmid,
        hold: (held.1 > 0).then_some((held.0, until)),
        cores: change.cores.map(|s| s.to),
        memory_mb: change.memory_mb.map(|s| s.to),
        caller: m.caller.clone(),
    };
    Ok((ok(200, data), done))
}

/// The `Change` of a scale, with the resource and seconds to hold; `None` for a snapshot.
fn scale_change(
    m: &Mutation,
    conf: &CtConf,
    host_cpus: Option<u32>,
) -> Option<(Change, (Resource, u64))> {
    let vmid = m.op.vmid();
    let reasons = vec![Reason::Requested {
        caller: m.caller.clone(),
    }];
    match &m.op {
        Quick::Cores {
            cores, hold_secs, ..
        } => {
            let from = conf.cores.or(host_cpus).unwrap_or(*cores);
            let step = Step { from, to: *cores };
            let c = Change {
                vmid,
                cores: Some(step),
                memory_mb: None,
                reasons,
            };
            Some((c, (Resource::Cpu, *hold_secs)))
        }
        Quick::Memory {
            memory_mb,
            hold_secs,
            ..
        } => {
            let step = Step {
                from: conf.memory_mb,
                to: *memory_mb,
            };
            let c = Change {
                vmid,
                cores: None,
                memory_mb: Some(step),
                reasons,
            };
            Some((c, (Resource::Memory, *hold_secs)))
        }
        Quick::Snapshot { .. } => None,
    }
}

fn apply_one(ctx: &mut LoopCtx, change: &Change, conf: CtConf) -> Report {
    let snap = Snapshot {
        containers: vec![ContainerSample {
            vmid: change.vmid,
            conf: Some(conf),
            ..ContainerSample::default()
        }],
        ..Snapshot::default()
    };
    let mut not_applied = NotApplied::default();
    let mut target = Target {
        pct: &mut *ctx.pct,
        pct_display: ctx.pct_display.clone(),
        backups: ctx.backups,
        events: ctx.events,
        dry_run: false,
        should_stop: &|| false,
        conf_dir: ctx.pve_lxc_dir,
        // An admin's request is not held back by the autoscaler's back-off: its own, fresh.
        not_applied: &mut not_applied,
    };
    apply::apply(
        std::slice::from_ref(change),
        &snap,
        &mut target,
        chrono::Utc::now(),
    )
}

fn snapshot(
    ctx: &mut LoopCtx,
    vmid: u32,
    name: &str,
    description: Option<&str>,
    caller: &str,
) -> Result<Response, Response> {
    let argv = pct::snapshot_argv(vmid, name, description)
        .ok_or_else(|| error(422, "snapshot_name: not a valid argument", Vec::new()))?;
    let outcome = ctx.pct.run(&argv);
    if !outcome.is_ok() {
        let why = format!("pct snapshot: {}", super::tasks::outcome_text(&outcome));
        return Err(snapshot_failed(ctx, vmid, name, caller, &why));
    }
    // Only a conf that then holds the snapshot's section counts as a snapshot taken.
    let written = super::conf::read_facts(ctx.pve_lxc_dir, vmid)
        .ok()
        .flatten()
        .is_some_and(|f| f.snapshots.iter().any(|s| s.name == name));
    if !written {
        let why = format!("pct snapshot exited 0 but the conf holds no snapshot `{name}`");
        return Err(snapshot_failed(ctx, vmid, name, caller, &why));
    }
    info!(vmid, snapshot = name, caller, "snapshot created");
    record(
        ctx,
        vmid,
        "snapshot",
        &format!("snapshot {name} by {caller}"),
    );
    notify(
        ctx,
        &format!("lxc_autoscale: CT {vmid} snapshot"),
        &format!("snapshot {name} created by {caller}"),
        5,
    );
    Ok(ok(200, json!({"lxc_id": vmid, "snapshot_name": name})))
}

/// A snapshot that was not taken: counted, logged and recorded as a failure; its 500.
fn snapshot_failed(ctx: &mut LoopCtx, vmid: u32, name: &str, caller: &str, why: &str) -> Response {
    ctx.counters.add(std::iter::empty(), 1);
    warn!(vmid, snapshot = name, error = %why, "api snapshot failed");
    record(
        ctx,
        vmid,
        "failure",
        &format!("snapshot {name} by {caller}: {why}"),
    );
    error(500, &format!("container {vmid}: {why}"), Vec::new())
}

fn record(ctx: &LoopCtx, vmid: u32, action: &str, text: &str) {
    if let Some(events) = ctx.events {
        if let Err(e) = events.record(vmid, action, text) {
            warn!(vmid, error = %format!("{e:#}"), "cannot write event log");
        }
    }
}

fn notify(ctx: &mut LoopCtx, title: &str, text: &str, priority: u8) {
    if let Some(n) = ctx.notifier.as_deref_mut() {
        n.send(title, text, priority);
    }
}

/// Records a finished task: event, log line, notification.
pub fn task_finished(done: &TaskDone, ctx: &mut LoopCtx) {
    let t = &done.info;
    if t.kind == "rollback" && t.state == TaskState::Ok {
        new_baseline(ctx.backup_dir, t.vmid);
    }
    let ran: Vec<String> = done.ran.iter().map(|a| a.join(" ")).collect();
    let text = format!(
        "{} by {}: {} (ran: {})",
        t.kind,
        t.caller,
        t.message,
        ran.join(", ")
    );
    if t.state == TaskState::Ok {
        info!(vmid = t.vmid, task = %t.id, kind = t.kind, caller = %t.caller, "api task done");
        record(ctx, t.vmid, t.kind, &text);
        notify(
            ctx,
            &format!("lxc_autoscale: CT {} {} done", t.vmid, t.kind),
            &text,
            5,
        );
    } else {
        ctx.counters.add(std::iter::empty(), 1);
        warn!(vmid = t.vmid, task = %t.id, kind = t.kind, error = %t.message, "api task failed");
        record(ctx, t.vmid, "failure", &text);
        notify(
            ctx,
            &format!("lxc_autoscale: CT {} {} failed", t.vmid, t.kind),
            &text,
            8,
        );
    }
}

/// After `pct rollback` the conf is the snapshot's: the container's backups no longer describe
/// what came before the autoscaler. They are kept, renamed to `<vmid>.before-rollback-<UTC>`, so
/// the next change starts a new baseline.
fn new_baseline(backup_dir: &std::path::Path, vmid: u32) {
    let dir = backup_dir.join(vmid.to_string());
    if !dir.is_dir() {
        return;
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let aside = backup_dir.join(format!("{vmid}.before-rollback-{stamp}"));
    match std::fs::rename(&dir, &aside) {
        Ok(()) => info!(vmid, kept = %aside.display(), "rolled back: backups start a new baseline"),
        Err(e) => {
            warn!(vmid, path = %dir.display(), error = %e, "cannot set the backups aside after a rollback")
        }
    }
}
