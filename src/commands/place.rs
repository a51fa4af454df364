//! `place --dry-run [--json]`: the placement advice the cluster's status files give now, as the
//! leader would publish it. Reads pmxcfs only; never migrates.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::decide::placement::Recommendation;
use crate::service::daemon::{load_config, now_usec};
use crate::service::placement;

#[derive(clap::Args, Debug)]
pub struct PlaceArgs {
    /// Print the plan (required: lxc_autoscale never migrates; run the `pct migrate` lines).
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON: a list of {vmid, target, why, command}.
    #[arg(long)]
    pub json: bool,
}

/// One line of the JSON form.
#[derive(Debug, Serialize)]
struct Line {
    vmid: u32,
    target: String,
    why: String,
    command: String,
}

pub fn run(path: &Path, args: &PlaceArgs) -> Result<ExitCode> {
    if !args.dry_run {
        eprintln!(
            "lxc_autoscale: place only shows the plan: use --dry-run, then run the pct migrate lines it prints"
        );
        return Ok(ExitCode::from(2));
    }
    let cfg = load_config(path)?;
    if cfg.cluster_node.is_none() {
        anyhow::bail!(
            "not in cluster mode ({} lists no cluster, or cluster = \"off\"): there is nowhere to place containers",
            cfg.pve_root.join(".members").display()
        );
    }
    let recs = placement::current_plan(&cfg, now_usec())?;
    if args.json {
        let lines: Vec<Line> = recs.iter().map(line).collect();
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        print!("{}", render(&recs));
    }
    Ok(ExitCode::SUCCESS)
}

fn line(r: &Recommendation) -> Line {
    Line {
        vmid: r.vmid,
        target: r.target.clone(),
        why: r.why().to_string(),
        command: r.command(),
    }
}

/// The text form: each recommendation and its command, or a line saying there is none.
pub fn render(recs: &[Recommendation]) -> String {
    if recs.is_empty() {
        return "no container needs another node\n".to_string();
    }
    recs.iter()
        .map(|r| {
            format!(
                "CT {} -> {}: {}\n  {}\n",
                r.vmid,
                r.target,
                r.why(),
                r.command()
            )
        })
        .collect()
}
