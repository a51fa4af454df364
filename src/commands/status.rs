//! `status`: every running container and what the next cycle would do. Takes no lock.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::act::apply;
use crate::act::backup::BackupStore;
use crate::decide::plan::Plan;
use crate::decide::policy;
use crate::read::collect::Collector;
use crate::record::cluster_status;
use crate::record::metrics::{self, CycleInfo};
use crate::record::state;
use crate::service::daemon::{load_config, local_now, measure, now_usec};

pub fn run(path: &Path, json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    let (mut state, mut models) = state::read_state_with_model(&cfg.state_file).unwrap_or_default();
    let mut collector = Collector::new();
    let (snap, collect_time) = measure(&cfg, &mut collector, &mut state, &mut |d| {
        std::thread::sleep(d);
        true
    })
    .expect("never stopped");
    // The daemon's model as last saved: `status` learns into a copy it never writes back.
    let plan = policy::decide_with_model(&cfg, &snap, &state, &mut models, local_now());
    let blocked = unreadable_baselines(&BackupStore::new(cfg.backup_dir.clone()), &plan);
    if json {
        let cycle = CycleInfo {
            duration_secs: Some(collect_time.as_secs_f64()),
            changes: plan.changes.len(),
            failures: 0,
        };
        let (host, containers) = metrics::records(&cfg, &snap, &plan, &state, cycle);
        let out = serde_json::json!({
            "changes": plan.changes,
            "notes": plan.notes,
            "observations": plan.observations,
            "baseline_unreadable": blocked,
            "host": host,
            "containers": containers,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_status(&plan, &blocked));
    }
    Ok(ExitCode::SUCCESS)
}

/// `status --cluster [--json]`: every node's status file merged, stale nodes marked.
pub fn run_cluster(path: &Path, json: bool) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    if cfg.cluster_node.is_none() {
        anyhow::bail!(
            "not in cluster mode ({} lists no cluster, or cluster = \"off\"): no cluster status",
            cfg.pve_root.join(".members").display()
        );
    }
    let view = cluster_status::read_cluster(&cfg.pve_root, now_usec())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", cluster_status::render(&view));
    }
    Ok(ExitCode::SUCCESS)
}

/// Containers whose baseline cannot be read, and the error naming the file: the daemon does not
/// change them until `rebaseline`.
fn unreadable_baselines(store: &BackupStore, plan: &Plan) -> BTreeMap<u32, String> {
    plan.observations
        .iter()
        .filter_map(|o| {
            let e = store.baseline(o.vmid).err()?;
            Some((o.vmid, format!("{e:#}")))
        })
        .collect()
}

/// The `status` table. `blocked`: containers with an unreadable baseline, and why.
pub fn render_status(plan: &Plan, blocked: &BTreeMap<u32, String>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<16} {:<10} {:>5} {:>8} {:>6} {:>6}  next cycle",
        "vmid", "name", "tier", "cores", "mem MB", "cpu%", "mem%"
    );
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for o in &plan.observations {
        let next = if let Some(why) = blocked.get(&o.vmid) {
            format!(
                "not changed: baseline unreadable: {why}; run 'lxc_autoscale rebaseline {}'",
                o.vmid
            )
        } else if let Some(c) = plan.changes.iter().find(|c| c.vmid == o.vmid) {
            format!("{} ({})", apply::describe(c), c.why())
        } else if let Some(n) = plan.notes.iter().find(|n| n.vmid == o.vmid) {
            n.reason.to_string()
        } else {
            "no change".to_string()
        };
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:<10} {:>5} {:>8} {:>6} {:>6}  {}",
            o.vmid,
            o.name.as_deref().unwrap_or("-"),
            o.tier.as_deref().unwrap_or("-"),
            o.cores.map_or("-".into(), |c| c.to_string()),
            o.memory_mb.map_or("-".into(), |m| m.to_string()),
            pct(o.cpu_percent),
            pct(o.memory_percent),
            next
        );
    }
    out
}
