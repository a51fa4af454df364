//! A fake Proxmox host on disk: cgroup tree, `/etc/pve/lxc/*.conf`, `/proc/stat`,
//! `/proc/meminfo`, and a fake `pct` that records its argv and rewrites the conf like Proxmox.
#![allow(dead_code)]

pub mod cluster;
pub mod rng;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;

use lxc_autoscale::act::pct::{PctOutcome, PctRunner};
use lxc_autoscale::config::Config;
use lxc_autoscale::read::hostfiles::{self, CpuStatFile, HostFiles, MemoryStatFile};

pub const MIB: u64 = 1024 * 1024;
pub const BTIME: u64 = 1_700_000_000;
/// Seconds between the seeded previous sample and "now".
pub const WINDOW_SECS: i64 = 300;

/// The fake `pct`. It is a test fixture only: the daemon itself never runs a shell.
const FAKE_PCT: &str = r#"#!/bin/sh
# Records argv, optionally fails, hangs or waits at a gate, then rewrites the conf's main section like pct set.
printf '%s\n' "$*" >> "@ROOT@/pct.calls"
if [ -f "@ROOT@/pct.fail" ]; then
  echo "CT $2 is locked (backup)" >&2
  exit 1
fi
if [ -f "@ROOT@/pct.hang" ]; then
  sleep 60
fi
if [ -p "@ROOT@/pct.hold" ]; then
  # Blocks until the test opens the FIFO for writing.
  read -r _ < "@ROOT@/pct.hold" || true
fi
[ "$1" = set ] || exit 2
conf="@ROOT@/pve/lxc/$2.conf"
shift 2
while [ $# -gt 1 ]; do
  key=${1#-}; val=$2; shift 2
  if [ "$key" = delete ]; then
    awk -v k="$val" 'BEGIN{m=1} /^\[/{m=0} !(m && index($0, k ": ")==1)' "$conf" > "$conf.tmp"
  else
    awk -v k="$key" -v v="$val" '
      BEGIN { m = 1; done = 0 }
      /^\[/ { if (m && !done) { print k ": " v; done = 1 } m = 0 }
      { if (m && index($0, k ": ") == 1) { if (!done) { print k ": " v; done = 1 } next } print }
      END { if (!done) print k ": " v }' "$conf" > "$conf.tmp"
  fi
  mv "$conf.tmp" "$conf"
done
exit 0
"#;

pub struct FakeHost {
    pub dir: tempfile::TempDir,
    pub host_cpus: u32,
    /// Writes the cgroup files, confs and /proc files, in the formats the daemon reads.
    pub files: HostFiles,
}

impl FakeHost {
    /// A host with `host_cpus` CPUs, 64 GiB of which 32 GiB are available, nothing busy.
    pub fn new(host_cpus: u32) -> FakeHost {
        FakeHost::in_dir(tempfile::tempdir().unwrap(), host_cpus)
    }

    /// Like `new`, on tmpfs when there is one: for runs of thousands of cycles, where the fsync of
    /// every backup and state write would measure the disk instead of the engine.
    pub fn on_tmpfs(host_cpus: u32) -> FakeHost {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        FakeHost::in_dir(dir, host_cpus)
    }

    fn in_dir(dir: tempfile::TempDir, host_cpus: u32) -> FakeHost {
        let root = dir.path();
        let files = HostFiles {
            cgroup_root: root.join("cgroup/lxc"),
            pve_lxc_dir: root.join("pve/lxc"),
            proc_root: root.join("proc"),
        };
        files.create_roots().unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        let pct = root.join("pct");
        std::fs::write(
            &pct,
            FAKE_PCT.replace("@ROOT@", &root.display().to_string()),
        )
        .unwrap();
        std::fs::set_permissions(&pct, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host = FakeHost {
            dir,
            host_cpus,
            files,
        };
        host.set_host_ticks(0, 1000);
        host.set_meminfo(64 * 1024 * 1024, 32 * 1024 * 1024);
        host
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// The config with every host path pointing into the fake host, plus `extra` TOML.
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let r = self.root().display();
        // The model's cuts wait for an hour of history (the defaults): these tests exercise the
        // threshold rules cycle by cycle, so cuts follow the latest reading unless a test says
        // otherwise.
        let model = if extra.contains("scale_down_") {
            ""
        } else {
            "scale_down_window = 0\nscale_down_cooldown = 0\n"
        };
        let history = if extra.contains("metrics_file") {
            String::new()
        } else {
            format!("metrics_file = \"{r}/var/metrics.jsonl\"\n")
        };
        let text = format!(
            "cgroup_root = \"{r}/cgroup/lxc\"\npve_lxc_dir = \"{r}/pve/lxc\"\nproc_root = \"{r}/proc\"\n\
             pct_path = \"{r}/pct\"\nstate_file = \"{r}/var/state.json\"\nbackup_dir = \"{r}/var/backups\"\n\
             log_file = \"{r}/var/log/lxc_autoscale.log\"\nlock_file = \"{r}/var/lxc_autoscale.lock\"\n\
             {history}{model}{extra}\n"
        );
        // The API socket goes into the fake host too, unless the test configures the API itself.
        let text = if extra.contains("[api]") {
            text
        } else {
            format!("{text}[api]\nlisten = \"unix:{r}/run/api.sock\"\n")
        };
        let path = self.path("lxc_autoscale.conf");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The config `write_config("")` writes, as a value (for tests that run the engine in-process).
    pub fn config(&self) -> Config {
        let mut cfg = Config::default();
        cfg.scale_down_window = 0;
        cfg.scale_down_cooldown = 0;
        cfg.cgroup_root = self.files.cgroup_root.clone();
        cfg.pve_lxc_dir = self.files.pve_lxc_dir.clone();
        cfg.proc_root = self.files.proc_root.clone();
        cfg.pct_path = self.path("pct");
        cfg.state_file = self.path("var/state.json");
        cfg.backup_dir = self.path("var/backups");
        cfg.log_file = self.path("var/log/lxc_autoscale.log");
        cfg.lock_file = self.path("var/lxc_autoscale.lock");
        cfg.metrics_file = self.path("var/metrics.jsonl");
        cfg
    }

    /// `/proc/stat` with the aggregate `cpu` line holding `busy` user ticks out of `total`.
    pub fn set_host_ticks(&self, busy: u64, total: u64) {
        self.files
            .write_proc_stat(hostfiles::busy_ticks(busy, total), self.host_cpus, BTIME)
            .unwrap();
    }

    pub fn set_meminfo(&self, total_kib: u64, available_kib: u64) {
        self.files.write_meminfo(total_kib, available_kib).unwrap();
    }

    /// A running container: its conf (main section text, may include other sections) and a
    /// cgroup directory with zeroed counters.
    pub fn add_container(&self, vmid: u32, conf: &str) {
        self.files.write_conf(vmid, conf).unwrap();
        self.files.create_cgroup(vmid).unwrap();
        self.set_cpu_usage(vmid, 0);
        self.set_memory(vmid, 0, 0);
    }

    pub fn cgroup(&self, vmid: u32) -> PathBuf {
        self.files.cgroup_dir(vmid)
    }

    pub fn conf_path(&self, vmid: u32) -> PathBuf {
        self.files.conf_path(vmid)
    }

    pub fn conf(&self, vmid: u32) -> String {
        std::fs::read_to_string(self.conf_path(vmid)).unwrap()
    }

    pub fn set_cpu_usage(&self, vmid: u32, usage_usec: u64) {
        let stat = CpuStatFile {
            usage_usec,
            user_usec: usage_usec,
            system_usec: 0,
            throttling: Some((0, 0, 0)),
        };
        self.files.write_cpu_stat(vmid, &stat).unwrap();
    }

    /// `memory.current` = used + cache, `memory.stat` `file` = cache (MB each).
    pub fn set_memory(&self, vmid: u32, used_mb: u64, cache_mb: u64) {
        let stat = MemoryStatFile {
            anon_bytes: used_mb * MIB,
            file_bytes: cache_mb * MIB,
            shmem_bytes: Some(0),
            inactive_file_bytes: Some(cache_mb * MIB / 2),
        };
        self.files
            .write_memory(vmid, (used_mb + cache_mb) * MIB, &stat)
            .unwrap();
    }

    fn now_usec() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    }

    /// Writes a state file whose previous samples were taken `WINDOW_SECS` ago: each container at
    /// usage 0, the host at `busy`/`total` 0. Then sets current counters so that each container
    /// in `loads` ran at `(vmid, cpu_percent_of_cores, cores)` over the window.
    pub fn seed_previous_cycle(&self, loads: &[(u32, f64, u32)]) {
        let taken = Self::now_usec() - WINDOW_SECS * 1_000_000;
        let mut containers = serde_json::Map::new();
        for entry in std::fs::read_dir(self.path("cgroup/lxc")).unwrap() {
            let entry = entry.unwrap();
            let Ok(vmid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let ino = std::fs::metadata(entry.path()).unwrap().ino();
            containers.insert(
                vmid.to_string(),
                serde_json::json!({
                    "taken_at_usec": taken,
                    "boot_time": BTIME,
                    "cgroup_id": ino,
                    "cpu_usage_usec": 0
                }),
            );
        }
        let state = serde_json::json!({
            "host": {"taken_at_usec": taken, "boot_time": BTIME, "cpu_ticks": {"busy": 0, "total": 0}},
            "containers": containers,
        });
        std::fs::write(self.path("var/state.json"), state.to_string()).unwrap();
        for &(vmid, pct, cores) in loads {
            let usage = pct / 100.0 * f64::from(cores) * (WINDOW_SECS as f64) * 1e6;
            self.set_cpu_usage(vmid, usage as u64);
        }
        // Host: 10 % busy over the window (100 ticks per second per cpu).
        let total = WINDOW_SECS as u64 * 100 * u64::from(self.host_cpus);
        self.set_host_ticks(total / 10, total);
    }

    /// Sets the host's busy ticks over the seeded window so that `busy_cores` were in use.
    pub fn set_host_busy_cores(&self, busy_cores: f64) {
        let total = WINDOW_SECS as u64 * 100 * u64::from(self.host_cpus);
        let busy = (busy_cores / f64::from(self.host_cpus) * total as f64) as u64;
        self.set_host_ticks(busy, total);
    }

    /// The daemon's human-readable log (`log_file`), empty until it exists.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.path("var/log/lxc_autoscale.log")).unwrap_or_default()
    }

    /// Every argv the fake `pct` received, one string each.
    pub fn pct_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("pct.calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn make_pct_fail(&self) {
        std::fs::write(self.path("pct.fail"), "").unwrap();
    }

    pub fn backup_files(&self, vmid: u32) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(&format!("var/backups/{vmid}")))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lxc_autoscale"));
        cmd.args(args)
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs the daemon with `args` under `strace -f` and counts every process it created (fork,
    /// vfork, clone or clone3 without CLONE_THREAD, in the daemon or any descendant) and every
    /// `execve` after the daemon's own. Needs strace (`.ci/run` installs it); panics without it,
    /// since a test that cannot count must not pass.
    pub fn run_counting_processes(&self, args: &[&str]) -> Traced {
        let trace = self.path("strace.out");
        let inner = self.command(args);
        let output = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=fork,vfork,clone,clone3,execve",
                "-o",
            ])
            .arg(&trace)
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .output()
            .unwrap_or_else(|e| panic!("cannot run strace (apt-get install strace): {e}"));
        let text = std::fs::read_to_string(&trace).unwrap_or_else(|e| {
            panic!(
                "strace wrote no trace ({e}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let calls: Vec<&str> = text.lines().filter(|l| !l.contains(" resumed>")).collect();
        let execs: Vec<&str> = calls
            .iter()
            .copied()
            .filter(|l| l.contains(" execve("))
            .collect();
        assert!(
            execs
                .first()
                .is_some_and(|l| l.contains(env!("CARGO_BIN_EXE_lxc_autoscale"))),
            "the trace does not start with the daemon's exec:\n{text}"
        );
        let forks = calls
            .iter()
            .filter(|l| {
                [" fork(", " vfork(", " clone(", " clone3("]
                    .iter()
                    .any(|call| l.contains(call))
                    && !l.contains("CLONE_THREAD")
            })
            .count();
        Traced {
            output,
            processes_created: forks,
            execs_after_start: execs.len() - 1,
            trace: text,
        }
    }
}

/// A daemon run under strace, see `FakeHost::run_counting_processes`.
pub struct Traced {
    pub output: Output,
    pub processes_created: usize,
    pub execs_after_start: usize,
    /// The raw trace, for failure messages.
    pub trace: String,
}

/// An in-process `pct` for tests that drive `apply` directly: records every argv and answers
/// with `outcome`.
pub struct RecordingPct {
    pub calls: Vec<Vec<String>>,
    pub outcome: PctOutcome,
}

impl RecordingPct {
    pub fn new(outcome: PctOutcome) -> Self {
        RecordingPct {
            calls: Vec::new(),
            outcome,
        }
    }
}

impl PctRunner for RecordingPct {
    fn run(&mut self, argv: &[String]) -> PctOutcome {
        self.calls.push(argv.to_vec());
        self.outcome.clone()
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One HTTP request as a Gotify server saw it.
pub struct HttpRequest {
    /// Request line and headers, each ending in CRLF, plus the blank line.
    pub head: String,
    pub body: String,
}

/// A Gotify stand-in on 127.0.0.1: answers every request with `status` and reports each one.
/// Returns its base URL.
pub fn gotify_listener(status: u16) -> (String, mpsc::Receiver<HttpRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut head, mut len) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            let _ = stream.write_all(reply.as_bytes());
            let _ = tx.send(HttpRequest {
                head,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
    });
    (url, rx)
}
