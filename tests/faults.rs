//! Fault injection: the real binary (or, where a fault cannot be injected from outside, the library
//! in-process) on a fake host that misbehaves. Each test states the fault and the exact outcome.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::mpsc;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use common::{gotify_listener, stderr, stdout, FakeHost, HttpRequest, BTIME, MIB, WINDOW_SECS};
use lxc_autoscale::act::apply::{self, Target};
use lxc_autoscale::act::backup::BackupStore;
use lxc_autoscale::act::pct::{CommandRunner, PctOutcome, PctRunner};
use lxc_autoscale::config::Config;
use lxc_autoscale::decide::plan::{Change, Step};
use lxc_autoscale::decide::policy;
use lxc_autoscale::read::snapshot::{
    ContainerPrev, ContainerSample, CtConf, HostSample, Snapshot, State,
};

fn once(host: &FakeHost, cfg: &Path) -> Output {
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "daemon failed: {}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    out
}

/// The fake host's config with `key` set to `value` (a TOML literal) instead of its default line.
fn config_with(host: &FakeHost, key: &str, value: &str, extra: &str) -> PathBuf {
    let path = host.write_config(extra);
    let text = std::fs::read_to_string(&path).unwrap();
    let prefix = format!("{key} = ");
    let mut replaced = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                replaced = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(replaced, "no line for {key}");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// 101 at 95 % of 2 cores and 900 of 1024 MB: one cycle gives `set 101 -cores 4 -memory 1800`.
fn overloaded_host() -> FakeHost {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    host
}

const FULL_SCALE_UP: &str = "set 101 -cores 4 -memory 1800";

// ---- pct hangs -------------------------------------------------------------------------------

/// Wraps the real runner: another test thread forking while a script was open for writing makes
/// exec fail with ETXTBSY for a moment; that one case is retried.
struct RetryBusy(CommandRunner);

impl PctRunner for RetryBusy {
    fn run(&mut self, argv: &[String]) -> PctOutcome {
        for _ in 0..100 {
            match self.0.run(argv) {
                PctOutcome::SpawnError(e) if e.contains("busy") => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other,
            }
        }
        panic!("fake pct stayed busy");
    }
}

fn sample(vmid: u32, cores: u32, memory_mb: u64) -> ContainerSample {
    ContainerSample {
        vmid,
        conf: Some(CtConf {
            cores: Some(cores),
            memory_mb,
            ..CtConf::default()
        }),
        cgroup_id: Some(1),
        cpu_usage_usec: Some(0),
        memory_current_bytes: Some(0),
        memory_file_bytes: Some(0),
        memory_shmem_bytes: Some(0),
        memory_inactive_file_bytes: Some(0),
        extra: Default::default(),
    }
}

fn cores_change(vmid: u32, from: u32, to: u32) -> Change {
    Change {
        vmid,
        cores: Some(Step { from, to }),
        memory_mb: None,
        reasons: Vec::new(),
    }
}

#[test]
fn hung_pct_is_killed_and_reaped_and_the_next_container_is_still_scaled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Only the test fixture uses a shell; the daemon spawns pct directly.
    let script = format!(
        "#!/bin/sh\nif [ \"$2\" = 101 ]; then\n  sleep 600 &\n  echo $! > '{d}/grandchild.pid'\n  echo $$ > '{d}/child.pid'\n  wait\nfi\nprintf '%s\\n' \"$*\" >> '{d}/calls'\nprintf 'cores: %s\\nmemory: 1024\\n' \"$4\" > '{d}'/\"$2\".conf\nexit 0\n",
        d = dir.display()
    );
    let pct = dir.join("pct");
    std::fs::write(&pct, script).unwrap();
    std::fs::set_permissions(&pct, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut runner = RetryBusy(CommandRunner {
        path: pct.clone(),
        timeout: Duration::from_millis(500),
    });
    let backups = BackupStore::new(dir.join("backups"));
    let snap = Snapshot {
        taken_at_usec: 1,
        host: HostSample::default(),
        containers: vec![sample(101, 2, 1024), sample(102, 2, 1024)],
    };
    let changes = vec![cores_change(101, 2, 4), cores_change(102, 2, 3)];
    let mut target = Target {
        pct: &mut runner,
        pct_display: pct.display().to_string(),
        backups: &backups,
        events: None,
        dry_run: false,
        should_stop: &|| false,
        conf_dir: dir,
        not_applied: &mut apply::NotApplied::default(),
    };

    let report = apply::apply(&changes, &snap, &mut target, Utc::now());

    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].vmid, 101);
    assert!(report.failed[0].error.contains("timed out"), "{report:?}");
    assert_eq!(report.applied.len(), 1);
    assert_eq!(report.applied[0].change.vmid, 102);
    assert_eq!(
        std::fs::read_to_string(dir.join("calls")).unwrap(),
        "set 102 -cores 3\n"
    );
    // The hung child is reaped (not even a zombie), and the process group it started is killed.
    let pid = std::fs::read_to_string(dir.join("child.pid")).unwrap();
    assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists());
    let gpid = std::fs::read_to_string(dir.join("grandchild.pid")).unwrap();
    let gstat = std::fs::read_to_string(format!("/proc/{}/stat", gpid.trim())).unwrap_or_default();
    // Gone, or a killed zombie waiting for init: never still sleeping.
    assert!(
        gstat.is_empty() || gstat.contains(") Z "),
        "grandchild still alive: {gstat}"
    );
    // The timed-out change left no backup claiming it happened; the applied one has its backup.
    assert!(backups.list(101).unwrap().is_empty());
    assert!(backups.baseline(101).unwrap().is_none());
    assert_eq!(backups.list(102).unwrap().len(), 1);
}

// ---- pct fails or prints garbage -------------------------------------------------------------

/// The JSON-lines event log beside the fake host's log file.
fn events_text(host: &FakeHost) -> String {
    std::fs::read_to_string(lxc_autoscale::record::events::event_path_for(
        &host.path("var/log/lxc_autoscale.log"),
    ))
    .unwrap()
}

/// Replaces the fake host's pct with `body` (a test fixture; the daemon never runs a shell).
fn replace_pct(host: &FakeHost, body: &str) {
    let path = host.path("pct");
    let tmp = host.path("pct.new");
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

#[test]
fn pct_failing_with_garbage_on_stderr_records_no_change_and_notifies_the_failure() {
    let host = overloaded_host();
    // Non-UTF-8, NUL bytes and 300 KB of noise on stderr, then exit status 3.
    replace_pct(
        &host,
        "printf 'bad \\377\\376 \\000 bytes\\n' >&2\nhead -c 300000 /dev/zero | tr '\\0' x >&2\nprintf 'real reason\\n' >&2\nexit 3",
    );
    let (url, requests) = gotify_listener(200);
    let cfg = host.write_config(&format!("gotify_url = \"{url}\"\ngotify_token = \"t0k\""));
    let conf_before = host.conf(101);

    once(&host, &cfg);

    assert_eq!(host.conf(101), conf_before);
    assert!(
        host.backup_files(101).is_empty(),
        "{:?}",
        host.backup_files(101)
    );
    let log = host.log_text();
    assert!(log.contains("change failed"), "{log}");
    assert!(log.contains("pct exited with status 3"), "{log}");
    assert!(!log.contains(" scaled"), "{log}");
    let events = events_text(&host);
    assert!(events.contains("\"failure\""), "{events}");
    assert!(!events.contains("\"scale\""), "{events}");
    let msg = requests.recv_timeout(Duration::from_secs(20)).unwrap().body;
    assert!(msg.contains("1 change(s) failed"), "{msg}");
    assert!(
        msg.contains("CT 101: cores 2->4, memory 1024->1800 MB failed"),
        "{msg}"
    );
    assert!(requests.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn container_destroyed_before_its_pct_set_is_no_failure_and_leaves_no_backup() {
    let host = overloaded_host();
    // The container is destroyed between the cycle's read and its `pct set`.
    let conf = host.conf_path(101);
    replace_pct(
        &host,
        &format!(
            "rm -f '{}'\necho \"Configuration file 'nodes/pve/lxc/101.conf' does not exist\" >&2\nexit 2",
            conf.display()
        ),
    );
    let (url, requests) = gotify_listener(200);
    let cfg = host.write_config(&format!("gotify_url = \"{url}\"\ngotify_token = \"t0k\""));

    once(&host, &cfg);

    assert!(!conf.exists());
    assert!(
        host.backup_files(101).is_empty(),
        "{:?}",
        host.backup_files(101)
    );
    let log = host.log_text();
    assert!(!log.contains("change failed"), "{log}");
    assert!(!log.contains(" scaled"), "{log}");
    assert!(log.contains("container is gone"), "{log}");
    // Nothing happened, so nothing is in the event log (not even the file).
    assert!(!lxc_autoscale::record::events::event_path_for(
        &host.path("var/log/lxc_autoscale.log")
    )
    .exists());
    assert!(requests.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn pct_killed_by_a_signal_records_no_change() {
    let host = overloaded_host();
    replace_pct(&host, "kill -9 $$");
    let cfg = host.write_config("");

    once(&host, &cfg);

    assert!(host.backup_files(101).is_empty());
    assert!(host.log_text().contains("pct was killed by a signal"));
}

/// Changes the fake pct: `partial` makes it set only the first key it is given (the cores), and
/// it exits with `exit_code` after writing the conf. Returns the fake pct's own body.
fn conf_writing_pct(host: &FakeHost, partial: bool, exit_code: u8) -> String {
    let real = std::fs::read_to_string(host.path("pct")).unwrap();
    let real = real.trim_start_matches("#!/bin/sh\n").to_string();
    let mut body = real.clone();
    if partial {
        body = body.replace("while [ $# -gt 1 ]; do", "while [ $# -gt 3 ]; do");
    }
    let body = body.replace("\nexit 0\n", &format!("\nexit {exit_code}\n"));
    replace_pct(host, &body);
    real
}

#[test]
fn pct_exiting_zero_having_set_only_the_cores_keeps_the_backups_and_rollback_restores_both() {
    let host = overloaded_host();
    let real = conf_writing_pct(&host, true, 0);
    let cfg = host.write_config("");

    once(&host, &cfg);

    assert_eq!(host.pct_calls(), vec![FULL_SCALE_UP]);
    assert_eq!(host.conf(101), "cores: 4\nmemory: 1024\n");
    let log = host.log_text();
    assert!(log.contains("change failed"), "{log}");
    assert!(log.contains("holds cores 4, memory 1024 MB"), "{log}");
    assert!(!log.contains(" scaled"), "{log}");
    assert!(log.contains("its backup is kept for rollback"), "{log}");
    // The baseline and the change's backup: the only record of cores 2.
    assert_eq!(
        host.backup_files(101).len(),
        2,
        "{:?}",
        host.backup_files(101)
    );

    std::fs::remove_file(host.path("pct.calls")).unwrap();
    replace_pct(&host, &real);
    let out = host.run(&["rollback", "101", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 2 -memory 1024"]);
    assert_eq!(host.conf(101), "cores: 2\nmemory: 1024\n");
}

#[test]
fn pct_failing_after_writing_the_conf_keeps_the_backups_and_counts_no_change() {
    let host = overloaded_host();
    let real = conf_writing_pct(&host, false, 1);
    let cfg = host.write_config("");

    once(&host, &cfg);

    assert_eq!(host.conf(101), "cores: 4\nmemory: 1800\n");
    let log = host.log_text();
    assert!(log.contains("pct exited with status 1"), "{log}");
    assert!(!log.contains(" scaled"), "{log}");
    let events = events_text(&host);
    assert!(events.contains("\"failure\""), "{events}");
    assert!(!events.contains("\"scale\""), "{events}");
    assert_eq!(
        host.backup_files(101).len(),
        2,
        "{:?}",
        host.backup_files(101)
    );
    replace_pct(&host, &real);
    let out = host.run(&["rollback", "101", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("CT 101: restored cores 2, memory 1024 MB (baseline)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn pct_exiting_zero_with_noise_on_its_output_counts_as_applied() {
    // The exit status is pct's contract: a zero status means the conf was written, so the change
    // and its backup must be kept even if pct chattered.
    let host = overloaded_host();
    let cfg = host.write_config("");
    let real = std::fs::read_to_string(host.path("pct")).unwrap();
    let body = real.trim_start_matches("#!/bin/sh\n");
    replace_pct(
        &host,
        &format!("printf 'WARN: \\377\\000 noise\\n'\nprintf 'more \\376 noise\\n' >&2\n{body}"),
    );

    once(&host, &cfg);

    assert_eq!(host.pct_calls(), vec![FULL_SCALE_UP]);
    assert!(host.conf(101).contains("cores: 4\n"));
    assert_eq!(host.backup_files(101).len(), 2);
}

// ---- a container stops mid-cycle -------------------------------------------------------------

#[test]
fn container_stopping_between_listing_and_reading_is_skipped_silently() {
    let host = FakeHost::new(16);
    for vmid in [101, 102] {
        host.add_container(vmid, "cores: 2\nmemory: 1024\n");
        host.set_memory(vmid, 900, 0);
    }
    host.seed_previous_cycle(&[(101, 95.0, 2), (102, 95.0, 2)]);
    // 101's cpu.stat becomes a FIFO: the daemon blocks on it after listing both containers, which
    // is when 102 "stops" (its cgroup directory goes away).
    let usage = (0.95 * 2.0 * WINDOW_SECS as f64 * 1e6) as u64;
    let stat = host.cgroup(101).join("cpu.stat");
    std::fs::remove_file(&stat).unwrap();
    nix::unistd::mkfifo(&stat, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let cfg = host.write_config("");
    let child = host
        .command(&["--once", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Opening for writing blocks until the daemon opens the FIFO to read it.
    let mut fifo = std::fs::OpenOptions::new().write(true).open(&stat).unwrap();
    std::fs::remove_dir_all(host.cgroup(102)).unwrap();
    // One write: the reader takes a short read as the end of the file, as cgroupfs files end.
    fifo.write_all(format!("usage_usec {usage}\nuser_usec {usage}\n").as_bytes())
        .unwrap();
    drop(fifo);
    let out = child.wait_with_output().unwrap();

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), vec![FULL_SCALE_UP]);
    let log = host.log_text();
    assert!(
        !log.contains("vmid=102"),
        "102 should be skipped silently: {log}"
    );
    assert!(log.contains("cycle done containers=1 "), "{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}

#[test]
fn cgroup_directory_without_files_gives_no_decision_and_no_error() {
    // A stopping container whose cgroup files are already gone.
    let host = overloaded_host();
    for f in ["cpu.stat", "memory.current", "memory.stat"] {
        std::fs::remove_file(host.cgroup(101).join(f)).unwrap();
    }
    let cfg = host.write_config("");

    once(&host, &cfg);

    assert!(host.pct_calls().is_empty());
    assert!(!host.log_text().contains("ERROR"));
}

// ---- counters and clock go backwards ---------------------------------------------------------

#[test]
fn cpu_counter_going_backwards_gives_no_cpu_decision_and_restarts_the_rate() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 512, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    // The previous sample had a far higher counter than now (same cgroup: e.g. a counter reset).
    let state_path = host.path("var/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["containers"]["101"]["cpu_usage_usec"] = serde_json::json!(1u64 << 50);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let cfg = host.write_config("");

    once(&host, &cfg);

    assert!(host.pct_calls().is_empty(), "{:?}", host.pct_calls());
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert_eq!(
        state["containers"]["101"]["cpu_usage_usec"],
        serde_json::json!(570_000_000u64)
    );
}

#[test]
fn previous_sample_from_the_future_is_not_used_and_cpu_is_measured_afresh() {
    // The wall clock jumped backwards: the state says the last sample is 300 s in the future.
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 1\nmemory: 1024\n");
    host.set_memory(101, 512, 0);
    host.seed_previous_cycle(&[(101, 95.0, 1)]);
    let state_path = host.path("var/state.json");
    let future = chrono::Utc::now().timestamp_micros() + 300_000_000;
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["host"]["taken_at_usec"] = serde_json::json!(future);
    state["containers"]["101"]["taken_at_usec"] = serde_json::json!(future);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let cfg = host.write_config("");

    let out = once(&host, &cfg);

    // Against the future sample the counters say 95 %: that rate must not be used. The fresh
    // window sees an idle container already at min_cores: nothing to do.
    assert!(host.pct_calls().is_empty(), "{:?}", host.pct_calls());
    assert!(
        stderr(&out).contains("no usable previous sample"),
        "{}",
        stderr(&out)
    );
}

/// In-process, with an injected clock: the same readings taken at or before the previous sample
/// give no rate and no cores decision, whatever the counters say.
#[test]
fn decide_makes_no_cpu_decision_when_the_clock_did_not_move_forward() {
    let cfg = Config::default();
    let conf = CtConf {
        cores: Some(2),
        memory_mb: 1024,
        ..CtConf::default()
    };
    let prev_at = 1_700_000_000_000_000;
    let mut state = State::default();
    state.containers.insert(
        101,
        ContainerPrev {
            taken_at_usec: prev_at,
            boot_time: Some(BTIME),
            cgroup_id: 7,
            cpu_usage_usec: 0,
            counters: Default::default(),
        },
    );
    let now = NaiveDate::from_ymd_opt(2025, 1, 15)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap();
    for delta_usec in [-300_000_000i64, -1, 0] {
        let snap = Snapshot {
            taken_at_usec: prev_at + delta_usec,
            host: HostSample {
                cpus: Some(16),
                cpu_ticks: None,
                boot_time: Some(BTIME),
                mem_total_kib: Some(64 << 20),
                mem_available_kib: Some(32 << 20),
            },
            containers: vec![ContainerSample {
                vmid: 101,
                conf: Some(conf.clone()),
                cgroup_id: Some(7),
                cpu_usage_usec: Some(570_000_000),
                memory_current_bytes: Some(512 * MIB),
                memory_file_bytes: Some(0),
                memory_shmem_bytes: Some(0),
                memory_inactive_file_bytes: Some(0),
                extra: Default::default(),
            }],
        };
        let plan = policy::decide(&cfg, &snap, &state, now);
        assert!(plan.changes.is_empty(), "delta {delta_usec}: {plan:?}");
        assert_eq!(plan.observations[0].cpu_percent, None);
    }
}

// ---- garbage in input files ------------------------------------------------------------------

/// Ways a number can be garbled.
const GARBAGE: &[(&str, &[u8])] = &[
    ("nul", b"12\x0034"),
    ("non-utf8", b"1\xff\xfe2"),
    ("negative", b"-1"),
    ("max", b"max"),
    ("huge", b"18446744073709551616"),
];

/// `{N}` marks where the garbage goes.
fn garbled(template: &str, garbage: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut parts = template.split("{N}");
    out.extend_from_slice(parts.next().unwrap().as_bytes());
    for part in parts {
        out.extend_from_slice(garbage);
        out.extend_from_slice(part.as_bytes());
    }
    out
}

#[test]
fn garbage_in_any_input_file_gives_no_decision_for_that_resource_only() {
    let cpu_lines: String = (0..16)
        .map(|n| format!("cpu{n} 0 0 0 0 0 0 0 0 0 0\n"))
        .collect();
    let stat_template = format!("cpu  {{N}} 0 0 {{N}} 0 0 0 0 0 0\n{cpu_lines}btime {{N}}\n");
    // (file, template, pct calls expected with that file garbled)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "cgroup/lxc/101/cpu.stat",
            "usage_usec {N}\nuser_usec {N}\n".into(),
            vec!["set 101 -memory 1800"],
        ),
        (
            "cgroup/lxc/101/memory.current",
            "{N}\n".into(),
            vec!["set 101 -cores 4"],
        ),
        (
            "cgroup/lxc/101/memory.stat",
            "anon 1\nfile {N}\n".into(),
            vec!["set 101 -cores 4"],
        ),
        ("proc/stat", stat_template, vec!["set 101 -memory 1800"]),
        (
            "proc/meminfo",
            "MemTotal: {N} kB\nMemAvailable: {N} kB\n".into(),
            vec!["set 101 -cores 4"],
        ),
        (
            "pve/lxc/101.conf",
            "cores: {N}\nmemory: {N}\n".into(),
            vec![],
        ),
    ];
    for (file, template, expected) in &cases {
        let mut variants: Vec<(&str, Vec<u8>)> = GARBAGE
            .iter()
            .map(|(name, g)| (*name, garbled(template, g)))
            .collect();
        variants.push(("empty", Vec::new()));
        variants.push(("only nul bytes", vec![0u8; 64]));
        for (name, bytes) in variants {
            let host = overloaded_host();
            std::fs::write(host.path(file), &bytes).unwrap();
            let cfg = host.write_config("");
            let out = once(&host, &cfg);
            assert_eq!(
                &host.pct_calls(),
                expected,
                "{file} {name}: {}",
                stderr(&out)
            );
        }
    }
}

// ---- odd conf structure ----------------------------------------------------------------------

#[test]
fn conf_with_sections_raw_lxc_keys_comments_and_a_megabyte_of_snapshots_reads_its_main_section() {
    let host = overloaded_host();
    let mut conf = String::from(
        "#memory: 99999 (a comment, not a setting)\n# cores: 64\narch: amd64\ncores: 2\n\
         lxc.cgroup2.memory.max: 1\nlxc.apparmor.profile: unconfined\nmemory: 1024\n\
         unknown-key: whatever\nno colon here\n\n[pve:pending]\ndelete: cores\nmemory: 64\n",
    );
    let mut n = 0;
    while conf.len() < 1 << 20 {
        conf.push_str(&format!(
            "\n[snap{n}]\ncores: 1\nmemory: 16\nsnaptime: 1700000000\ndescription: {}\n",
            "x".repeat(200)
        ));
        n += 1;
    }
    std::fs::write(host.path("pve/lxc/101.conf"), &conf).unwrap();
    let cfg = host.write_config("");

    once(&host, &cfg);

    assert_eq!(host.pct_calls(), vec![FULL_SCALE_UP]);
    let after = host.conf(101);
    assert!(after.starts_with(
        "#memory: 99999 (a comment, not a setting)\n# cores: 64\narch: amd64\ncores: 4\n"
    ));
    assert!(after.contains("\n[pve:pending]\ndelete: cores\nmemory: 64\n"));
    assert_eq!(after.matches("\n[snap").count(), n);
}

#[test]
fn conf_without_cores_or_memory_lines_uses_the_proxmox_defaults() {
    // No `cores`: all 16 host CPUs; no `memory`: 512 MB. 95 % of 2 cores is 11.9 % of 16.
    let host = FakeHost::new(16);
    host.add_container(
        101,
        "arch: amd64\nhostname: bare\nrootfs: local:101/disk.raw\n",
    );
    host.set_memory(101, 256, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    let cfg = host.write_config("max_cores = 16");

    once(&host, &cfg);

    // cpu 11.9 % < 20: demand 1.9 cores -> 4 wanted, at most 4 removed per cycle: 16 -> 12.
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 12"]);
}

#[test]
fn conf_with_a_main_section_of_only_comments_is_not_read_as_defaults() {
    // Reading the Proxmox defaults (512 MB) into a conf that says nothing would "scale up" a
    // 4 GB container to 1800 MB: a shrink on bad data.
    let host = overloaded_host();
    std::fs::write(
        host.path("pve/lxc/101.conf"),
        "# only a comment\n\n[pve:pending]\nmemory: 4096\n",
    )
    .unwrap();
    let cfg = host.write_config("");

    once(&host, &cfg);

    assert!(host.pct_calls().is_empty(), "{:?}", host.pct_calls());
    assert!(host.log_text().contains("101.conf"));
}

// ---- backup_dir unusable ---------------------------------------------------------------------

fn assert_not_applied_and_reported(
    host: &FakeHost,
    requests: &mpsc::Receiver<HttpRequest>,
    why: &str,
) {
    assert!(host.pct_calls().is_empty(), "{:?}", host.pct_calls());
    assert!(host.conf(101).contains("cores: 2\n"));
    let log = host.log_text();
    assert!(log.contains("change failed"), "{log}");
    assert!(log.contains("not applied: backup failed"), "{log}");
    assert!(log.contains(why), "{log}");
    let msg = requests.recv_timeout(Duration::from_secs(20)).unwrap().body;
    assert!(msg.contains("1 change(s) failed"), "{msg}");
    assert!(msg.contains("not applied: backup failed"), "{msg}");
}

#[test]
fn backup_dir_that_is_a_file_stops_the_change_and_is_logged_and_notified() {
    let host = overloaded_host();
    std::fs::write(host.path("var/backups"), "in the way").unwrap();
    let (url, requests) = gotify_listener(200);
    let cfg = host.write_config(&format!("gotify_url = \"{url}\"\ngotify_token = \"t0k\""));

    once(&host, &cfg);

    assert_not_applied_and_reported(&host, &requests, "not a directory");
    assert_eq!(
        std::fs::read_to_string(host.path("var/backups")).unwrap(),
        "in the way"
    );
}

#[test]
fn backup_dir_that_cannot_be_created_stops_the_change() {
    // Root ignores mode bits, so "not writable" is a parent that is a file.
    let host = overloaded_host();
    std::fs::write(host.path("var/blocker"), "").unwrap();
    let (url, requests) = gotify_listener(200);
    let cfg = config_with(
        &host,
        "backup_dir",
        &format!("\"{}\"", host.path("var/blocker/backups").display()),
        &format!("gotify_url = \"{url}\"\ngotify_token = \"t0k\""),
    );

    once(&host, &cfg);

    assert_not_applied_and_reported(&host, &requests, "var/blocker/backups: Not a directory");
}

#[test]
fn container_backup_dir_replaced_by_a_file_or_symlink_stops_the_change() {
    for plant in ["file", "symlink"] {
        let host = overloaded_host();
        std::fs::create_dir_all(host.path("var/backups")).unwrap();
        let elsewhere = host.path("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        if plant == "file" {
            std::fs::write(host.path("var/backups/101"), "").unwrap();
        } else {
            std::os::unix::fs::symlink(&elsewhere, host.path("var/backups/101")).unwrap();
        }
        let (url, requests) = gotify_listener(200);
        let cfg = host.write_config(&format!("gotify_url = \"{url}\"\ngotify_token = \"t0k\""));

        once(&host, &cfg);

        let why = if plant == "file" {
            "not a directory"
        } else {
            "symlink"
        };
        assert_not_applied_and_reported(&host, &requests, why);
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}

// ---- state_file unusable ---------------------------------------------------------------------

#[test]
fn corrupt_or_truncated_state_file_is_ignored_with_a_warning() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 1\nmemory: 1024\n");
    host.set_memory(101, 512, 0);
    host.seed_previous_cycle(&[(101, 95.0, 1)]);
    let state_path = host.path("var/state.json");
    let good = std::fs::read(&state_path).unwrap();
    for bytes in [
        good[..good.len() / 2].to_vec(),
        vec![0u8; 100],
        b"\xff\xfe garbage".to_vec(),
        Vec::new(),
    ] {
        std::fs::write(&state_path, &bytes).unwrap();
        let cfg = host.write_config("");

        let out = once(&host, &cfg);

        assert!(
            stderr(&out).contains("ignoring unusable state file"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("state.json"));
        // The old, unusable rate was not acted on; a valid state replaced the corrupt one.
        assert!(host.pct_calls().is_empty());
        let rewritten = std::fs::read_to_string(&state_path).unwrap();
        serde_json::from_str::<serde_json::Value>(&rewritten).unwrap();
    }
}

// ---- log_file's directory --------------------------------------------------------------------

#[test]
fn missing_log_directory_is_created() {
    let host = overloaded_host();
    let log = host.path("var/deep/er/log/lxc_autoscale.log");
    let cfg = config_with(&host, "log_file", &format!("\"{}\"", log.display()), "");

    once(&host, &cfg);

    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("cycle done"));
    assert_eq!(host.pct_calls(), vec![FULL_SCALE_UP]);
}

#[test]
fn log_directory_that_cannot_be_created_is_reported_once_and_logging_goes_to_stderr() {
    let host = overloaded_host();
    std::fs::write(host.path("var/notadir"), "").unwrap();
    let cfg = config_with(
        &host,
        "log_file",
        &format!("\"{}\"", host.path("var/notadir/log/x.log").display()),
        "",
    );

    let out = once(&host, &cfg);

    let err = stderr(&out);
    assert_eq!(err.matches("logging to stderr only").count(), 1, "{err}");
    assert!(err.contains("cycle done"), "{err}");
    assert_eq!(host.pct_calls(), vec![FULL_SCALE_UP]);
}

// ---- Gotify ----------------------------------------------------------------------------------

#[test]
fn gotify_that_accepts_but_never_answers_does_not_stop_the_change() {
    let host = overloaded_host();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accepts and holds every connection open without a byte of answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(4) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    let cfg = host.write_config(&format!("gotify_url = \"{url}\"\ngotify_token = \"t0k\""));

    let out = once(&host, &cfg);

    assert_eq!(host.pct_calls(), vec![FULL_SCALE_UP]);
    assert!(host.conf(101).contains("cores: 4\n"));
    assert!(
        stderr(&out).contains("gotify notification failed"),
        "{}",
        stderr(&out)
    );
}

// ---- contention for headroom -----------------------------------------------------------------

#[test]
fn with_headroom_for_one_the_higher_tier_wins_every_time() {
    // 8 CPUs, 10 % reserved, 5 busy: 2.2 cores of headroom, each container wants +2. The lower
    // tier is the more overloaded one and, every other run, has the lower VMID: only the tier
    // can explain the winner.
    for run in 0..6 {
        let (gold, bronze) = if run % 2 == 0 { (102, 101) } else { (101, 102) };
        let host = FakeHost::new(8);
        for vmid in [101, 102] {
            host.add_container(vmid, "cores: 2\nmemory: 1024\n");
            host.set_memory(vmid, 512, 0);
        }
        host.seed_previous_cycle(&[(gold, 85.0, 2), (bronze, 100.0, 2)]);
        host.set_host_busy_cores(5.0);
        let cfg = host.write_config(&format!(
            "[tiers.gold]\ncontainers = [{gold}]\npriority = 10\n[tiers.bronze]\ncontainers = [{bronze}]\npriority = 1\n"
        ));

        once(&host, &cfg);

        assert_eq!(
            host.pct_calls(),
            vec![format!("set {gold} -cores 4")],
            "run {run}"
        );
    }
}

#[test]
fn backup_taken_after_the_clock_stepped_back_is_still_the_latest() {
    // The clock went backwards between two changes: the backup of the second must still be
    // written, next to the first, and the baseline kept.
    let tmp = tempfile::tempdir().unwrap();
    let store = BackupStore::new(tmp.path().join("b"));
    let alloc = |c| lxc_autoscale::act::backup::Alloc {
        cores: Some(c),
        memory_mb: 1024,
        swap_mb: None,
    };
    let later = Utc.with_ymd_and_hms(2025, 1, 15, 12, 0, 0).unwrap();
    let earlier = Utc.with_ymd_and_hms(2025, 1, 15, 11, 0, 0).unwrap();
    store.record(101, &alloc(2), &alloc(3), later).unwrap();
    store.record(101, &alloc(3), &alloc(4), earlier).unwrap();
    assert_eq!(store.list(101).unwrap().len(), 2);
    assert_eq!(store.baseline(101).unwrap().unwrap().before, alloc(2));
    // `latest` (and so `rollback --last` and pruning) goes by write order, not by the clock.
    let (_, latest) = store.latest(101).unwrap().unwrap();
    assert_eq!(latest.after, Some(alloc(4)));
}
