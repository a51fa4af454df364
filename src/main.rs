//! `lxc_autoscale`: parses the command line and dispatches to the daemon or a command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lxc_autoscale::commands::{
    check_config, demo, place, rebaseline, replay_cmd, rollback, status,
};
use lxc_autoscale::config::DEFAULT_CONFIG_PATH;
use lxc_autoscale::service::daemon::{self, DaemonOpts};

#[derive(Parser, Debug)]
#[command(
    name = "lxc_autoscale",
    version,
    about = "Right-sizes CPU cores and memory of running LXC containers on a Proxmox VE node",
    after_help = "Without a command, runs the daemon. Config: /etc/lxc_autoscale/lxc_autoscale.conf"
)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Run one cycle, then exit.
    #[arg(long)]
    once: bool,
    /// Decide and log the exact `pct` commands, but change no container and write no backup.
    #[arg(long)]
    dry_run: bool,
    /// Log at debug level.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config and print the effective settings of each tier.
    CheckConfig,
    /// Show every running container and what the next cycle would do. Takes no lock, spawns nothing.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Every node's status file merged (cluster mode); a file older than 3 poll intervals is
        /// a stale node.
        #[arg(long)]
        cluster: bool,
    },
    /// Show where containers that do not fit on their node would (cluster mode, --dry-run).
    Place(place::PlaceArgs),
    /// Restore containers to their allocation from before the autoscaler changed them.
    Rollback(rollback::RollbackArgs),
    /// Accept containers' current allocation as their new baseline (refused while the daemon runs).
    Rebaseline(rebaseline::RebaselineArgs),
    /// Run the real engine against a built-in simulated host, in accelerated time.
    Demo {
        /// Simulated cycles to run.
        #[arg(long, default_value_t = 24)]
        cycles: u32,
    },
    /// Replay a recorded metrics history through the decision with a config, in simulated time.
    Replay(replay_cmd::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => daemon::run(&DaemonOpts {
            config: cli.config.clone(),
            once: cli.once,
            dry_run: cli.dry_run,
            verbose: cli.verbose,
        }),
        Some(Command::CheckConfig) => check_config::run(&cli.config),
        Some(Command::Status {
            json,
            cluster: false,
        }) => status::run(&cli.config, *json),
        Some(Command::Status {
            json,
            cluster: true,
        }) => status::run_cluster(&cli.config, *json),
        Some(Command::Place(args)) => place::run(&cli.config, args),
        Some(Command::Rollback(args)) => rollback::run(&cli.config, args),
        Some(Command::Rebaseline(args)) => rebaseline::run(&cli.config, args),
        Some(Command::Demo { cycles }) => demo::run(*cycles, &mut std::io::stdout()),
        Some(Command::Replay(args)) => replay_cmd::run(&cli.config, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lxc_autoscale: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
