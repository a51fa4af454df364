//! The one way the daemon changes a container: `pct set`, run without a shell, argv only.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::config::MIN_VMID;

/// `pct set` gets 30 s before it is killed.
pub const PCT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a child's stderr kept; the rest is read and dropped so the child never blocks on a
/// full pipe.
pub const STDERR_KEEP_BYTES: usize = 64 * 1024;

/// How often a running child is checked for exit.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long to wait for stderr to reach EOF after the child exited: a grandchild that inherited
/// the pipe must not hang the daemon.
const STDERR_GRACE: Duration = Duration::from_secs(1);

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
/// the options that change; `delete_cores` adds `["-delete", "cores"]`. `None` when vmid is below
/// 100, nothing is set, or `cores` is both set and deleted.
pub fn set_argv(vmid: u32, args: &SetArgs) -> Option<Vec<String>> {
    if vmid < MIN_VMID {
        return None;
    }
    if args.delete_cores && args.cores.is_some() {
        return None;
    }
    let mut argv = vec!["set".to_string(), vmid.to_string()];
    if let Some(cores) = args.cores {
        argv.extend(["-cores".to_string(), cores.to_string()]);
    }
    if args.delete_cores {
        argv.extend(["-delete".to_string(), "cores".to_string()]);
    }
    if let Some(mb) = args.memory_mb {
        argv.extend(["-memory".to_string(), mb.to_string()]);
    }
    if argv.len() == 2 {
        return None;
    }
    Some(argv)
}

// --- argv of the REST API's commands (snapshot, rollback, resize, clone, stop, destroy, tags) ---
// Each returns `None` when the vmid is below 100 or a value from outside starts with `-`, so no
// request field can become an option. Options are written with one dash, as `set_argv` does.

/// Tag that marks a container the API cloned; only those may be destroyed through it.
pub const CLONE_TAG: &str = "autoscale-clone";

fn argv_of(vmid: u32, cmd: &str, values: &[&str], options: &[(&str, &str)]) -> Option<Vec<String>> {
    let outside = values.iter().chain(options.iter().map(|(_, v)| v));
    if vmid < MIN_VMID || outside.clone().any(|v| v.starts_with('-') || v.is_empty()) {
        return None;
    }
    let mut argv = vec![cmd.to_string(), vmid.to_string()];
    argv.extend(values.iter().map(|v| v.to_string()));
    for (opt, value) in options {
        argv.extend([format!("-{opt}"), value.to_string()]);
    }
    Some(argv)
}

/// `["snapshot", "101", "<name>"]`, plus `["-description", "<text>"]` when one is given.
pub fn snapshot_argv(vmid: u32, name: &str, description: Option<&str>) -> Option<Vec<String>> {
    match description.filter(|d| !d.is_empty()) {
        Some(d) => argv_of(vmid, "snapshot", &[name], &[("description", d)]),
        None => argv_of(vmid, "snapshot", &[name], &[]),
    }
}

/// `["delsnapshot", "101", "<name>"]`.
pub fn delsnapshot_argv(vmid: u32, name: &str) -> Option<Vec<String>> {
    argv_of(vmid, "delsnapshot", &[name], &[])
}

/// `["rollback", "101", "<name>"]`.
pub fn rollback_argv(vmid: u32, name: &str) -> Option<Vec<String>> {
    argv_of(vmid, "rollback", &[name], &[])
}

/// `["resize", "101", "rootfs", "+<n>G"]`: grow only.
pub fn resize_argv(vmid: u32, grow_gb: u32) -> Option<Vec<String>> {
    if grow_gb == 0 {
        return None;
    }
    argv_of(vmid, "resize", &["rootfs", &format!("+{grow_gb}G")], &[])
}

/// `["clone", "101", "<new>", "-hostname", "<name>"]`, plus `["-snapname", "<snap>"]` for a
/// running source.
pub fn clone_argv(vmid: u32, new: u32, hostname: &str, snap: Option<&str>) -> Option<Vec<String>> {
    if new < MIN_VMID {
        return None;
    }
    let new = new.to_string();
    match snap {
        Some(s) => argv_of(
            vmid,
            "clone",
            &[&new],
            &[("hostname", hostname), ("snapname", s)],
        ),
        None => argv_of(vmid, "clone", &[&new], &[("hostname", hostname)]),
    }
}

/// `["stop", "101"]`.
pub fn stop_argv(vmid: u32) -> Option<Vec<String>> {
    argv_of(vmid, "stop", &[], &[])
}

/// `["destroy", "101", "-purge", "1"]`.
pub fn destroy_argv(vmid: u32) -> Option<Vec<String>> {
    argv_of(vmid, "destroy", &[], &[("purge", "1")])
}

/// `["set", "101", "-tags", "a;b"]`.
pub fn set_tags_argv(vmid: u32, tags: &[String]) -> Option<Vec<String>> {
    if tags.iter().any(|t| t.contains([';', ',', ' '])) {
        return None;
    }
    argv_of(vmid, "set", &[], &[("tags", &tags.join(";"))])
}

// --- end of the REST API's argv ---

/// Result of one `pct` run. Only `Ok` (exit status 0) counts as a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PctOutcome {
    Ok,
    /// Non-zero exit or killed by a signal; `code` is `None` for a signal.
    Failed {
        code: Option<i32>,
        stderr: String,
    },
    /// Ran past the timeout; it was killed and reaped.
    TimedOut,
    /// Could not be started (missing binary, permissions).
    SpawnError(String),
}

impl PctOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, PctOutcome::Ok)
    }
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
        let mut child = match Command::new(&self.path)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout also kills whatever it started.
            .process_group(0)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                return PctOutcome::SpawnError(format!("cannot run {}: {e}", self.path.display()))
            }
        };

        let stderr_rx = child.stderr.take().map(spawn_stderr_reader);
        // `None`: a timeout too long for the clock to represent, i.e. no timeout.
        let deadline = Instant::now().checked_add(self.timeout);
        let status = match wait_until(&mut child, deadline) {
            Some(status) => status,
            None => {
                kill_and_reap(&mut child);
                return PctOutcome::TimedOut;
            }
        };
        if status.success() {
            return PctOutcome::Ok;
        }
        let stderr = stderr_rx
            .map(|rx| collect_stderr(&rx, STDERR_GRACE))
            .unwrap_or_default();
        PctOutcome::Failed {
            code: status.code(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        }
    }
}

/// Reads the pipe to EOF in a thread and passes each chunk on as it arrives, so that what was
/// read stays available even if EOF never comes (a grandchild holding the pipe open).
fn spawn_stderr_reader(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // The receiver is gone once the run is over; keep draining the pipe anyway
                    // so the writer never blocks on it.
                    let _ = tx.send(buf[..n].to_vec());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    rx
}

/// The first `STDERR_KEEP_BYTES` of what the reader passed on until EOF, or until `grace` is up:
/// everything read before then is kept.
fn collect_stderr(rx: &mpsc::Receiver<Vec<u8>>, grace: Duration) -> Vec<u8> {
    let mut kept = Vec::new();
    let end = Instant::now().checked_add(grace);
    loop {
        let left = end.map_or(grace, |end| end.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                let room = STDERR_KEEP_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            // EOF (the reader ended) or the grace period is over.
            Err(_) => return kept,
        }
    }
}

/// The exit status, or `None` once `deadline` passes with the child still running (`None` as
/// deadline: wait for the exit).
fn wait_until(child: &mut Child, deadline: Option<Instant>) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // try_wait only fails on a bug (ECHILD); treat it like a hung child so it is killed.
            Err(_) => return None,
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let left = deadline.map_or(POLL_INTERVAL, |d| d.saturating_duration_since(now));
        thread::sleep(POLL_INTERVAL.min(left));
    }
}

fn kill_and_reap(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // The child is not reaped yet, so its pid (= its group id) cannot have been reused.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn sv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn set_argv_names_cores_and_memory() {
        let args = SetArgs {
            cores: Some(4),
            delete_cores: false,
            memory_mb: Some(2048),
        };
        assert_eq!(
            set_argv(101, &args),
            Some(sv(&["set", "101", "-cores", "4", "-memory", "2048"]))
        );
    }

    #[test]
    fn set_argv_names_only_what_changes() {
        let mem = SetArgs {
            memory_mb: Some(1024),
            ..Default::default()
        };
        assert_eq!(
            set_argv(200, &mem),
            Some(sv(&["set", "200", "-memory", "1024"]))
        );
        let cores = SetArgs {
            cores: Some(2),
            ..Default::default()
        };
        assert_eq!(
            set_argv(200, &cores),
            Some(sv(&["set", "200", "-cores", "2"]))
        );
    }

    #[test]
    fn set_argv_deletes_cores_as_two_arguments() {
        let args = SetArgs {
            delete_cores: true,
            memory_mb: Some(512),
            ..Default::default()
        };
        assert_eq!(
            set_argv(101, &args),
            Some(sv(&["set", "101", "-delete", "cores", "-memory", "512"]))
        );
    }

    #[test]
    fn set_argv_refuses_vmid_below_100() {
        let args = SetArgs {
            cores: Some(2),
            ..Default::default()
        };
        assert_eq!(set_argv(99, &args), None);
        assert_eq!(set_argv(0, &args), None);
        assert!(set_argv(100, &args).is_some());
    }

    #[test]
    fn set_argv_refuses_an_empty_change() {
        assert_eq!(set_argv(101, &SetArgs::default()), None);
    }

    #[test]
    fn set_argv_refuses_setting_and_deleting_cores_together() {
        let args = SetArgs {
            cores: Some(2),
            delete_cores: true,
            memory_mb: None,
        };
        assert_eq!(set_argv(101, &args), None);
    }

    /// A fake `pct` for the tests. Only tests use a shell; the daemon spawns `pct` directly.
    fn fake_pct(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("pct");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Another test thread forking while the script was open for writing makes exec fail with
    /// ETXTBSY for a moment; retry that one case.
    fn run_fake(runner: &mut CommandRunner, argv: &[String]) -> PctOutcome {
        for _ in 0..50 {
            match runner.run(argv) {
                PctOutcome::SpawnError(e) if e.contains("busy") => {
                    thread::sleep(Duration::from_millis(20))
                }
                other => return other,
            }
        }
        panic!("fake pct stayed busy");
    }

    #[test]
    fn runs_program_with_exact_argv_and_reports_ok() {
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join("argv");
        let pct = fake_pct(
            tmp.path(),
            &format!(
                "for a in \"$@\"; do printf '%s\\n' \"$a\" >> '{}'; done\necho noise on stdout\nexit 0",
                record.display()
            ),
        );
        let mut runner = CommandRunner {
            path: pct,
            timeout: Duration::from_secs(10),
        };
        let argv = sv(&["set", "101", "-cores", "4", "-memory", "2048"]);
        assert_eq!(run_fake(&mut runner, &argv), PctOutcome::Ok);
        assert_eq!(
            fs::read_to_string(&record).unwrap(),
            "set\n101\n-cores\n4\n-memory\n2048\n"
        );
    }

    #[test]
    fn argument_with_shell_metacharacters_is_passed_verbatim() {
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join("argv");
        let pct = fake_pct(
            tmp.path(),
            &format!("printf '%s' \"$1\" > '{}'", record.display()),
        );
        let mut runner = CommandRunner {
            path: pct,
            timeout: Duration::from_secs(10),
        };
        let argv = sv(&["$(touch pwned); `id` | ;"]);
        assert_eq!(run_fake(&mut runner, &argv), PctOutcome::Ok);
        assert_eq!(
            fs::read_to_string(&record).unwrap(),
            "$(touch pwned); `id` | ;"
        );
        assert!(!tmp.path().join("pwned").exists());
    }

    #[test]
    fn non_zero_exit_is_failed_with_code_and_trimmed_stderr() {
        let tmp = tempfile::tempdir().unwrap();
        let pct = fake_pct(
            tmp.path(),
            "echo 'CT 101 is locked (backup)' >&2\necho >&2\nexit 2",
        );
        let mut runner = CommandRunner {
            path: pct,
            timeout: Duration::from_secs(10),
        };
        assert_eq!(
            run_fake(&mut runner, &sv(&["set", "101", "-cores", "2"])),
            PctOutcome::Failed {
                code: Some(2),
                stderr: "CT 101 is locked (backup)".to_string()
            }
        );
    }

    #[test]
    fn death_by_signal_is_failed_without_code() {
        let tmp = tempfile::tempdir().unwrap();
        let pct = fake_pct(tmp.path(), "kill -9 $$");
        let mut runner = CommandRunner {
            path: pct,
            timeout: Duration::from_secs(10),
        };
        assert_eq!(
            run_fake(&mut runner, &sv(&["set", "101"])),
            PctOutcome::Failed {
                code: None,
                stderr: String::new()
            }
        );
    }

    #[test]
    fn chatty_stderr_does_not_block_and_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let pct = fake_pct(
            tmp.path(),
            "head -c 300000 /dev/zero | tr '\\0' x >&2\nexit 1",
        );
        let mut runner = CommandRunner {
            path: pct,
            timeout: Duration::from_secs(20),
        };
        match run_fake(&mut runner, &sv(&["set", "101"])) {
            PctOutcome::Failed { code, stderr } => {
                assert_eq!(code, Some(1));
                assert_eq!(stderr.len(), STDERR_KEEP_BYTES);
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn hung_program_is_killed_and_reaped_after_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("pid");
        let pct = fake_pct(
            tmp.path(),
            &format!("echo $$ > '{}'\nexec sleep 10", pidfile.display()),
        );
        let mut runner = CommandRunner {
            path: pct,
            timeout: Duration::from_millis(500),
        };
        assert_eq!(
            run_fake(&mut runner, &sv(&["set", "101"])),
            PctOutcome::TimedOut
        );
        let pid: i32 = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Reaped: not even a zombie is left under our pid.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn missing_program_is_a_spawn_error_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("no-such-pct");
        let mut runner = CommandRunner {
            path: path.clone(),
            timeout: Duration::from_secs(1),
        };
        match runner.run(&sv(&["set", "101"])) {
            PctOutcome::SpawnError(msg) => {
                assert!(msg.contains(&path.display().to_string()), "{msg}")
            }
            other => panic!("expected SpawnError, got {other:?}"),
        }
    }

    #[test]
    fn stderr_is_kept_when_a_grandchild_holds_it_open() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("grandchild");
        // pct leaves a child behind that inherited stderr, then fails.
        let pct = fake_pct(
            tmp.path(),
            &format!(
                "sleep 30 &\necho $! > '{}'\necho 'CT 101 is locked (backup)' >&2\nexit 25",
                pidfile.display()
            ),
        );
        let mut runner = CommandRunner {
            path: pct,
            timeout: Duration::from_secs(20),
        };
        let outcome = run_fake(&mut runner, &sv(&["set", "101", "-cores", "2"]));
        let pid: i32 = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        assert_eq!(
            outcome,
            PctOutcome::Failed {
                code: Some(25),
                stderr: "CT 101 is locked (backup)".into()
            }
        );
    }

    #[test]
    fn collect_stderr_keeps_chunks_read_before_the_grace_ends() {
        let (tx, rx) = mpsc::channel();
        tx.send(b"first ".to_vec()).unwrap();
        tx.send(b"second".to_vec()).unwrap();
        // The sender stays alive: no EOF, as with a grandchild holding the pipe.
        assert_eq!(
            collect_stderr(&rx, Duration::from_millis(50)),
            b"first second"
        );
        drop(tx);
    }
}

// The REST API's argv builders (above, next to `set_argv`).
#[cfg(test)]
mod api_argv_tests {
    use super::*;

    fn sv(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn api_commands_have_exact_argv() {
        assert_eq!(
            snapshot_argv(101, "before", None),
            sv(&["snapshot", "101", "before"])
        );
        assert_eq!(
            snapshot_argv(101, "before", Some("by ops")),
            sv(&["snapshot", "101", "before", "-description", "by ops"])
        );
        assert_eq!(
            delsnapshot_argv(101, "s1"),
            sv(&["delsnapshot", "101", "s1"])
        );
        assert_eq!(rollback_argv(101, "s1"), sv(&["rollback", "101", "s1"]));
        assert_eq!(resize_argv(101, 5), sv(&["resize", "101", "rootfs", "+5G"]));
        assert_eq!(
            clone_argv(101, 205, "web2", Some("autoscale-clone-205")),
            sv(&[
                "clone",
                "101",
                "205",
                "-hostname",
                "web2",
                "-snapname",
                "autoscale-clone-205"
            ])
        );
        assert_eq!(
            clone_argv(101, 205, "web2", None),
            sv(&["clone", "101", "205", "-hostname", "web2"])
        );
        assert_eq!(stop_argv(101), sv(&["stop", "101"]));
        assert_eq!(destroy_argv(205), sv(&["destroy", "205", "-purge", "1"]));
        assert_eq!(
            set_tags_argv(205, &["prod".into(), CLONE_TAG.into()]),
            sv(&["set", "205", "-tags", "prod;autoscale-clone"])
        );
    }

    #[test]
    fn no_outside_value_starting_with_a_dash_reaches_argv() {
        assert_eq!(snapshot_argv(101, "-purge", None), None);
        assert_eq!(snapshot_argv(101, "s1", Some("-x")), None);
        assert_eq!(rollback_argv(101, "--force"), None);
        assert_eq!(clone_argv(101, 205, "-web", None), None);
        assert_eq!(set_tags_argv(205, &["-x".into()]), None);
        assert_eq!(set_tags_argv(205, &["a;b".into()]), None);
        assert_eq!(stop_argv(99), None);
        assert_eq!(clone_argv(101, 99, "web", None), None);
        assert_eq!(resize_argv(101, 0), None);
    }
}
