//! `rollback`: restore containers to their allocation from before the autoscaler changed them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::act::backup::BackupStore;
use crate::act::pct::{self, CommandRunner, PctOutcome, PctRunner, SetArgs, PCT_TIMEOUT};
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
}

pub fn run(config_path: &Path, args: &RollbackArgs) -> Result<ExitCode> {
    let cfg = load_config(config_path)?;
    for w in cfg.warnings() {
        eprintln!("lxc_autoscale: warning: {w}");
    }
    // Holding the lock keeps the daemon from undoing the rollback mid-way.
    let _lock = match Lock::acquire(&cfg.lock_file) {
        Ok(l) => l,
        Err(LockError::Held { pid }) => {
            anyhow::bail!(
                "cannot roll back while the daemon is running (pid {}): stop it first with 'systemctl stop lxc_autoscale'",
                pid.map_or("unknown".into(), |p| p.to_string())
            )
        }
        Err(e) => return Err(anyhow::anyhow!("{e:#}")),
    };
    let store = BackupStore::new(cfg.backup_dir.clone());
    let vmids = if args.all {
        store.vmids()?
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
    let mut failures = 0;
    for vmid in vmids {
        match rollback_one(&store, &mut runner, vmid, args.last) {
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

fn rollback_one(
    store: &BackupStore,
    runner: &mut dyn PctRunner,
    vmid: u32,
    last: bool,
) -> Result<String> {
    let (target, latest_path) = if last {
        let (path, b) = store
            .latest(vmid)?
            .with_context(|| format!("no backup of container {vmid}"))?;
        (b.before, Some(path))
    } else {
        let b = store
            .baseline(vmid)?
            .with_context(|| format!("no baseline backup of container {vmid}"))?;
        (b.before, None)
    };
    let args = SetArgs {
        cores: target.cores,
        delete_cores: target.cores.is_none(),
        memory_mb: Some(target.memory_mb),
    };
    let argv = pct::set_argv(vmid, &args).with_context(|| format!("invalid vmid {vmid}"))?;
    match runner.run(&argv) {
        PctOutcome::Ok => {}
        PctOutcome::Failed { code, stderr } => anyhow::bail!(
            "pct {} exited with {}: {stderr}",
            argv.join(" "),
            code.map_or("a signal".into(), |c| format!("status {c}"))
        ),
        PctOutcome::TimedOut => anyhow::bail!("pct {} timed out", argv.join(" ")),
        PctOutcome::SpawnError(e) => anyhow::bail!("cannot run pct: {e}"),
    }
    if let Some(path) = latest_path {
        std::fs::remove_file(&path)
            .with_context(|| format!("restored, but cannot remove {}", path.display()))?;
    }
    let cores = target
        .cores
        .map_or("all host cpus".to_string(), |c| c.to_string());
    Ok(format!(
        "restored cores {cores}, memory {} MB{}",
        target.memory_mb,
        if last {
            " (undid the latest change)"
        } else {
            " (baseline)"
        }
    ))
}
