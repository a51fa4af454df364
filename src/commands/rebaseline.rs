//! `rebaseline`: accept containers' current allocation as their new baseline, for a baseline that
//! is unreadable (the daemon then leaves the container alone) or no longer wanted.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;

use crate::act::backup::{Alloc, BackupStore, Identity};
use crate::commands::rollback::offline_lock;
use crate::read::pveconf;
use crate::service::daemon::load_config;

/// `rebaseline`'s command-line arguments.
#[derive(clap::Args, Debug)]
pub struct RebaselineArgs {
    /// Containers whose current allocation becomes the baseline.
    #[arg(value_name = "VMID", required = true)]
    pub vmids: Vec<u32>,
}

pub fn run(config_path: &Path, args: &RebaselineArgs) -> Result<ExitCode> {
    let cfg = load_config(config_path)?;
    let _lock = offline_lock(&cfg, "rebaseline")?;
    let store = BackupStore::new(cfg.backup_dir.clone());
    let mut failures = 0;
    for &vmid in &args.vmids {
        match rebaseline_one(&store, &cfg.pve_lxc_dir, vmid) {
            Ok(msg) => println!("CT {vmid}: {msg}"),
            Err(e) => {
                failures += 1;
                eprintln!("CT {vmid}: rebaseline failed: {e:#}");
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn rebaseline_one(store: &BackupStore, conf_dir: &Path, vmid: u32) -> Result<String> {
    let conf = pveconf::read_conf(conf_dir, vmid)?.with_context(|| {
        format!(
            "container {vmid} has no conf {}",
            pveconf::conf_path(conf_dir, vmid).display()
        )
    })?;
    let alloc = Alloc {
        cores: conf.cores,
        memory_mb: conf.memory_mb,
        swap_mb: conf.swap_mb,
    };
    let (path, kept) = store.rebaseline(vmid, &Identity::of(&conf), &alloc, Utc::now())?;
    let cores = alloc
        .cores
        .map_or("all host cpus".to_string(), |c| c.to_string());
    let kept = kept.map_or(String::new(), |k| {
        format!("; the previous one is kept as {}", k.display())
    });
    Ok(format!(
        "baseline is now cores {cores}, memory {} MB ({}){kept}",
        alloc.memory_mb,
        path.display()
    ))
}
