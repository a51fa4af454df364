//! The one way the daemon changes a container: `pct set`, run without a shell, argv only.

use std::path::PathBuf;
use std::time::Duration;

/// `pct set` gets 30 s before it is killed.
pub const PCT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to set on one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetArgs {
    pub cores: Option<u32>,
    /// `-delete cores`: back to "all host CPUs" (used by rollback).
    pub delete_cores: bool,
    /// MB.
    pub memory_mb: Option<u64>,
}

/// The argv after the program name: `["set", "101", "-cores", "4", "-memory", "2048"]`, naming only
/// the options that change. `None` when vmid is below 100 or nothing is set.
pub fn set_argv(vmid: u32, args: &SetArgs) -> Option<Vec<String>> {
    todo!()
}

/// Result of one `pct` run. Only `Ok` (exit status 0) counts as a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PctOutcome {
    Ok,
    /// Non-zero exit or killed by a signal; `code` is `None` for a signal.
    Failed { code: Option<i32>, stderr: String },
    /// Ran past the timeout; it was killed and reaped.
    TimedOut,
    /// Could not be started (missing binary, permissions).
    SpawnError(String),
}

/// Runs `pct` with an argv. The production runner spawns the real program; tests record calls.
pub trait PctRunner {
    fn run(&mut self, argv: &[String]) -> PctOutcome;
}

/// Spawns `path` with the argv, no shell, stdin closed, stdout discarded, stderr captured; kills
/// and reaps it after `timeout`.
#[derive(Debug, Clone)]
pub struct CommandRunner {
    pub path: PathBuf,
    pub timeout: Duration,
}

impl PctRunner for CommandRunner {
    fn run(&mut self, argv: &[String]) -> PctOutcome {
        todo!()
    }
}

/// Test double: records every argv and answers with `outcome`.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub calls: Vec<Vec<String>>,
    pub outcome: PctOutcome,
}
