//! `replay` on the command line: load, simulate, print.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::commands::replay;
use crate::service::daemon::load_config;

/// `replay`'s command-line arguments.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// History to replay: the daemon's metrics JSON lines, or the ML sibling's lxc_metrics.json.
    #[arg(long, value_name = "FILE")]
    pub metrics: PathBuf,
    /// A second config to replay with, printed side by side with --config.
    #[arg(long, value_name = "OTHER.conf")]
    pub compare: Option<PathBuf>,
    /// Draw allocation against usage per container into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write one JSON line per container per cycle (allocation, load fed, unmet load) of the
    /// --config run to FILE.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
}

pub fn run(config_path: &Path, args: &ReplayArgs) -> Result<ExitCode> {
    let cfg = load_config(config_path)?;
    let history = replay::load_history(&args.metrics, cfg.poll_interval)?;
    let mut runs = vec![(
        config_path.display().to_string(),
        replay::run(&cfg, &history),
    )];
    if let Some(other) = &args.compare {
        let other_cfg = load_config(other)?;
        runs.push((
            other.display().to_string(),
            replay::run(&other_cfg, &history),
        ));
    }
    if args.json {
        let out: Vec<serde_json::Value> = runs
            .iter()
            .map(|(path, r)| serde_json::json!({"config": path, "summary": r.summary}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", replay::render(&history, &runs));
    }
    if let Some(path) = &args.timeline {
        replay::write_timeline(path, &runs[0].1)?;
        if !args.json {
            println!("timeline written to {}", path.display());
        }
    }
    if let Some(svg) = &args.plot {
        replay::plot(svg, &runs[0].1)?;
        if !args.json {
            println!("plot written to {}", svg.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
