//! The daemon under systemd: what it tells the notify socket (READY, STATUS, RELOADING, STOPPING,
//! WATCHDOG while a `pct` call runs), and a stop during the sampling window. A real child process,
//! a real datagram socket, a fake `pct` that blocks on a FIFO (no sleeps to synchronise on).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::FakeHost;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Polls `cond` until it holds; panics with `what` after a generous deadline (only a hang fails).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Puts a gate in front of the fake `pct`: it marks `pct.started`, then waits until a line is
/// written to the FIFO `pct.gate`. Returns the gate's path.
fn gate_pct(host: &FakeHost) -> std::path::PathBuf {
    let gate = host.path("pct.gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::rename(host.path("pct"), host.path("pct.real")).unwrap();
    let r = host.root().display();
    let script = format!(
        "#!/bin/sh\n: > '{r}/pct.started'\nread -r _ < '{r}/pct.gate'\nexec '{r}/pct.real' \"$@\"\n"
    );
    std::fs::write(host.path("pct"), script).unwrap();
    std::fs::set_permissions(host.path("pct"), std::fs::Permissions::from_mode(0o755)).unwrap();
    gate
}

/// The next datagram as text; a 30 s timeout only catches a hang.
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("no notify message within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A watchdog ping before READY=1: WATCHDOG_USEC=100000 pings every 50 ms, each extending the
/// start timeout by two intervals.
const STARTING_PING: &str = "WATCHDOG=1\nEXTEND_TIMEOUT_USEC=100000\n";

/// The next datagram that is not a watchdog ping.
fn next_state(sock: &UnixDatagram) -> String {
    loop {
        let msg = next(sock);
        if msg != "WATCHDOG=1\n" && msg != STARTING_PING {
            return msg;
        }
    }
}

#[test]
fn systemd_hears_watchdog_during_a_pct_call_then_ready_status_reloading_and_stopping() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 2048\n");
    host.set_memory(101, 1000, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    let gate = gate_pct(&host);
    let cfg = host.write_config("poll_interval = 3600");
    let sock_path = host.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    // WATCHDOG_PID must be the daemon's own pid: the shell sets it to its own, then execs.
    let mut daemon = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_lxc_autoscale"))
        .args(["--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "100000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    wait_for("the pct call to start", || {
        host.path("pct.started").exists()
    });
    // The loop is inside the first cycle's pct call, which cannot end before the gate opens:
    // every message now is a ping, they keep coming, and each extends the start timeout.
    for _ in 0..3 {
        assert_eq!(next(&sock), STARTING_PING);
    }
    std::fs::write(&gate, "go\n").unwrap();

    assert_eq!(
        next_state(&sock),
        "STATUS=last cycle: 1 containers, 1 changed, 0 failed\n"
    );
    assert_eq!(next_state(&sock), "READY=1\n");
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4"]);
    // Started: the pings no longer extend anything (one already under way at READY=1 may).
    let pings: Vec<String> = (0..3).map(|_| next(&sock)).collect();
    assert_eq!(pings[1..], ["WATCHDOG=1\n", "WATCHDOG=1\n"], "{pings:?}");

    signal(&daemon, Signal::SIGHUP);
    let reloading = next_state(&sock);
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines.len(), 2, "{reloading:?}");
    assert_eq!(lines[0], "RELOADING=1");
    let usec = lines[1].strip_prefix("MONOTONIC_USEC=").expect(&reloading);
    assert!(usec.parse::<u64>().is_ok(), "{reloading:?}");
    assert_eq!(next_state(&sock), "READY=1\n");

    signal(&daemon, Signal::SIGTERM);
    assert_eq!(next_state(&sock), "STOPPING=1\n");
    assert_eq!(wait_exit(&mut daemon).code(), Some(0));
}

#[test]
fn sigterm_during_the_sampling_window_stops_before_the_cycle() {
    let host = FakeHost::new(4);
    host.add_container(101, "cores: 2\nmemory: 2048\n");
    host.set_memory(101, 1000, 0);
    // No state file: the first cycle measures cpu over a window.
    let cfg = host.write_config("poll_interval = 3600");
    let mut daemon = host
        .command(&["--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the sampling window", || {
        host.log_text()
            .contains("measuring cpu over a short window")
    });

    signal(&daemon, Signal::SIGTERM);

    assert_eq!(wait_exit(&mut daemon).code(), Some(0));
    let log = host.log_text();
    assert!(log.contains("lxc_autoscale stopping"), "{log}");
    assert!(!log.contains("cycle done"), "{log}");
    assert!(host.pct_calls().is_empty());
    assert!(!host.path("var/state.json").exists());
}

/// The daemon with `extra` config, cycling once an hour, after its first cycle.
fn running_daemon(host: &FakeHost, extra: &str) -> (Child, std::path::PathBuf) {
    host.add_container(101, "cores: 2\nmemory: 2048\n");
    host.set_memory(101, 1000, 0);
    host.seed_previous_cycle(&[(101, 50.0, 2)]);
    let cfg = host.write_config(&format!("poll_interval = 3600\n{extra}"));
    let daemon = host
        .command(&["--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("first cycle", || host.log_text().contains("cycle done"));
    (daemon, cfg)
}

/// The messages of a text log, without timestamp and level.
fn messages(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let rest = l.split_once("  INFO ").or_else(|| l.split_once(" INFO "));
            rest.map_or(l, |(_, m)| m).trim().to_string()
        })
        .map(|m| m.split(" config=").next().unwrap().to_string())
        .map(|m| m.split(" poll_interval=").next().unwrap().to_string())
        .collect()
}

#[test]
fn reload_with_a_new_log_file_sends_the_following_lines_there() {
    let host = FakeHost::new(4);
    let (mut daemon, cfg) = running_daemon(&host, "");
    let old = host.path("var/log/lxc_autoscale.log");
    let new = host.path("var/log2/autoscale.log");

    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("log_file = \"{}\"", old.display()),
        &format!("log_file = \"{}\"", new.display()),
    );
    assert!(text.contains("log2/autoscale.log"), "{text}");
    std::fs::write(&cfg, text).unwrap();
    signal(&daemon, Signal::SIGHUP);
    wait_for("reload", || {
        messages(&new).contains(&"config reloaded".into())
    });
    signal(&daemon, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut daemon).code(), Some(0));

    let old_lines = messages(&old);
    let to = format!(
        "log_file changed; the log continues there to={}",
        new.display()
    );
    assert_eq!(
        old_lines.first().map(String::as_str),
        Some("lxc_autoscale starting")
    );
    assert_eq!(old_lines.last(), Some(&to), "{old_lines:?}");
    assert!(
        old_lines.iter().any(|l| l.starts_with("cycle done")),
        "{old_lines:?}"
    );
    assert_eq!(
        messages(&new),
        vec!["config reloaded", "lxc_autoscale stopping"]
    );
}

#[test]
fn logrotate_renames_then_reloads_and_the_daemon_writes_a_fresh_file() {
    // What packaging/logrotate does: rename, then `systemctl reload` (SIGHUP) in postrotate.
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/logrotate"))
            .unwrap();
    let rules: Vec<&str> = rules
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(!rules.contains(&"copytruncate"), "{rules:?}");
    let post = rules.iter().position(|l| *l == "postrotate").unwrap();
    assert_eq!(
        rules[post + 1],
        "systemctl reload lxc_autoscale.service >/dev/null 2>&1 || true"
    );

    let host = FakeHost::new(4);
    let (mut daemon, _) = running_daemon(&host, "");
    let log = host.path("var/log/lxc_autoscale.log");
    let rotated = host.path("var/log/lxc_autoscale.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(&daemon, Signal::SIGHUP);
    wait_for("reload", || {
        messages(&log).contains(&"config reloaded".into())
    });
    signal(&daemon, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut daemon).code(), Some(0));

    let before = messages(&rotated);
    assert_eq!(
        before.first().map(String::as_str),
        Some("lxc_autoscale starting")
    );
    assert!(
        before.last().unwrap().starts_with("cycle done"),
        "{before:?}"
    );
    assert_eq!(
        messages(&log),
        vec!["config reloaded", "lxc_autoscale stopping"]
    );
}
