//! `rollback`: restore containers to their allocation from before the autoscaler changed them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::act::apply;
use crate::act::backup::{Backup, BackupStore, Identity};
use crate::act::ctrecord::CtRecords;
use crate::act::pct::{self, CommandRunner, PctOutcome, PctRunner, SetArgs, PCT_TIMEOUT};
use crate::config::Config;
use crate::read::pveconf;
use crate::read::snapshot::CtConf;
use crate::service::daemon::load_config;
use crate::service::lock::{Lock, LockError};

/// `rollback`'s command-line arguments.
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// Containers to roll back.
    #[arg(
        value_name = "VMID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub vmids: Vec<u32>,
    /// Every container that has a backup.
    #[arg(long)]
    pub all: bool,
    /// Undo only the latest change instead of returning to the baseline.
    #[arg(long)]
    pub last: bool,
    /// Restore even when the container's identity (MAC addresses, hostname, rootfs volume,
    /// ostype) says it is not the one the backup was taken from.
    #[arg(long)]
    pub force: bool,
}

/// Takes the daemon's lock for a command that changes containers while the daemon is stopped
/// (`rollback`, `rebaseline`): holding it keeps the daemon from starting and undoing the work.
pub fn offline_lock(cfg: &Config, what: &str) -> Result<Lock> {
    for w in cfg.warnings() {
        eprintln!("lxc_autoscale: warning: {w}");
    }
    match Lock::acquire(&cfg.lock_file) {
        Ok(l) => Ok(l),
        Err(LockError::Held { pid }) => anyhow::bail!(
            "cannot {what} while the daemon is running (pid {}): stop it first with 'systemctl stop lxc_autoscale'",
            pid.map_or("unknown".into(), |p| p.to_string())
        ),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    }
}

pub fn run(config_path: &Path, args: &RollbackArgs) -> Result<ExitCode> {
    let cfg = load_config(config_path)?;
    let _lock = offline_lock(&cfg, "roll back")?;
    let store = BackupStore::new(cfg.backup_dir.clone());
    let records = CtRecords::for_config(&cfg);
    let vmids = if args.all {
        let mut all = store.vmids()?;
        if let Some(r) = &records {
            all.extend(r.vmids_in(&cfg.pve_lxc_dir)?);
        }
        all.sort_unstable();
        all.dedup();
        all
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
    let mut ctx = Ctx {
        store: &store,
        records: records.as_ref(),
        runner: &mut runner,
        conf_dir: &cfg.pve_lxc_dir,
        force: args.force,
    };
    let mut failures = 0;
    for vmid in vmids {
        // `--all` names every vmid with a backup: a destroyed container is no failure.
        if args.all && matches!(pveconf::read_conf(&cfg.pve_lxc_dir, vmid), Ok(None)) {
            println!(
                "CT {vmid}: skipped: the container is gone (no {}); its backups are kept",
                pveconf::conf_path(&cfg.pve_lxc_dir, vmid).display()
            );
            continue;
        }
        match rollback_one(&mut ctx, vmid, args.last) {
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

/// What a rollback works with.
struct Ctx<'a> {
    store: &'a BackupStore,
    /// In cluster mode: the records whose baseline follows a container across migrations.
    records: Option<&'a CtRecords>,
    runner: &'a mut dyn PctRunner,
    conf_dir: &'a Path,
    force: bool,
}

/// The backup to restore: the baseline (in cluster mode the container record's, when there is
/// one), or with `last` the newest local backup and its path.
fn pick(ctx: &Ctx<'_>, vmid: u32, last: bool) -> Result<(Backup, Option<PathBuf>)> {
    let store = ctx.store;
    if !last {
        if let Some(rec) = ctx.records.map(|r| r.read(vmid)).transpose()?.flatten() {
            return Ok((rec.baseline_backup(), None));
        }
    }
    if last {
        let (path, b) = store.latest(vmid)?.with_context(|| {
            format!(
                "no backup of container {vmid} in {}",
                store.dir.join(vmid.to_string()).display()
            )
        })?;
        Ok((b, Some(path)))
    } else {
        let b = store.baseline(vmid)?.with_context(|| {
            format!(
                "no baseline backup of container {vmid}: {} does not exist",
                store
                    .dir
                    .join(vmid.to_string())
                    .join(crate::act::backup::BASELINE_FILE)
                    .display()
            )
        })?;
        Ok((b, None))
    }
}

/// Refuses to restore a backup of another container that had this VMID, unless forced. Returns a
/// note for the output when nothing could be checked or the check was overridden.
fn check_identity(backup: &Backup, conf: &CtConf, vmid: u32, force: bool) -> Result<String> {
    let Some(recorded) = &backup.identity else {
        return Ok(" (the backup records no identity to check)".into());
    };
    let Some(why) = recorded.differs(&Identity::of(conf)) else {
        return Ok(String::new());
    };
    if force {
        return Ok(format!(" (forced: another container, {why})"));
    }
    anyhow::bail!(
        "refusing: container {vmid} is not the one this backup was taken from ({why}); pass --force to restore it anyway"
    )
}

fn rollback_one(ctx: &mut Ctx<'_>, vmid: u32, last: bool) -> Result<String> {
    let (backup, latest_path) = pick(ctx, vmid, last)?;
    let conf = pveconf::read_conf(ctx.conf_dir, vmid)?.with_context(|| {
        format!(
            "container {vmid} has no conf {}",
            pveconf::conf_path(ctx.conf_dir, vmid).display()
        )
    })?;
    let note = check_identity(&backup, &conf, vmid, ctx.force)?;
    let target = backup.before;
    let args = SetArgs {
        cores: target.cores,
        delete_cores: target.cores.is_none(),
        memory_mb: Some(target.memory_mb),
    };
    let argv = pct::set_argv(vmid, &args).with_context(|| format!("invalid vmid {vmid}"))?;
    match ctx.runner.run(&argv) {
        PctOutcome::Ok => {}
        PctOutcome::Failed { code, stderr } => anyhow::bail!(
            "pct {} exited with {}: {stderr}",
            argv.join(" "),
            code.map_or("a signal".into(), |c| format!("status {c}"))
        ),
        PctOutcome::TimedOut => anyhow::bail!("pct {} timed out", argv.join(" ")),
        PctOutcome::SpawnError(e) => anyhow::bail!("cannot run pct: {e}"),
    }
    apply::conf_holds(ctx.conf_dir, vmid, &args).map_err(|found| {
        anyhow::anyhow!("not restored: pct {} exited 0 but {found}", argv.join(" "))
    })?;
    if let Some(path) = latest_path {
        std::fs::remove_file(&path)
            .with_context(|| format!("restored, but cannot remove {}", path.display()))?;
    }
    let cores = target
        .cores
        .map_or("all host cpus".to_string(), |c| c.to_string());
    let what = if last {
        " (undid the latest change)"
    } else {
        " (baseline)"
    };
    Ok(format!(
        "restored cores {cores}, memory {} MB{what}{note}",
        target.memory_mb
    ))
}
