//! The daemon as a service: lock, signals, reload, Gotify, rollback; real child processes against a
//! fake host, and a real HTTP listener on 127.0.0.1.

mod common;

use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{gotify_listener, stderr, FakeHost};

/// Polls `cond` until it holds; panics with `what` after a generous deadline (not a timing
/// assertion: only a hang fails).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn spawn_daemon(host: &FakeHost, cfg: &std::path::Path) -> Child {
    host.command(&["--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
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

fn idle_host() -> FakeHost {
    let host = FakeHost::new(4);
    host.add_container(101, "cores: 2\nmemory: 2048\n");
    host.set_memory(101, 1000, 0);
    host.seed_previous_cycle(&[(101, 50.0, 2)]);
    host
}

#[test]
fn second_instance_exits_at_once_naming_the_running_pid_and_sigterm_stops_cleanly() {
    let host = idle_host();
    let cfg = host.write_config("poll_interval = 3600");
    let mut daemon = spawn_daemon(&host, &cfg);
    wait_for("first cycle", || host.log_text().contains("cycle done"));

    let second = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains(&format!(
            "another lxc_autoscale is running (pid {})",
            daemon.id()
        )),
        "{}",
        stderr(&second)
    );
    let rollback = host.run(&["rollback", "--all", "--config", cfg.to_str().unwrap()]);
    assert_eq!(rollback.status.code(), Some(1));
    assert!(
        stderr(&rollback).contains("cannot roll back while the daemon is running"),
        "{}",
        stderr(&rollback)
    );

    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    let status = wait_exit(&mut daemon);
    assert_eq!(status.code(), Some(0));
    assert!(host.log_text().contains("lxc_autoscale stopping"));

    // The lock is released: a new run gets it.
    let third = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(third.status.success(), "{}", stderr(&third));
}

#[test]
fn stale_lock_file_from_a_killed_process_does_not_block() {
    let host = idle_host();
    let cfg = host.write_config("");
    std::fs::write(host.path("var/lxc_autoscale.lock"), "999999\n").unwrap();
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sigterm_during_a_pct_call_stops_right_after_it_and_skips_the_rest() {
    let host = FakeHost::new(16);
    for vmid in [101, 102] {
        host.add_container(vmid, "cores: 2\nmemory: 1024\n");
        host.set_memory(vmid, 900, 0);
    }
    host.seed_previous_cycle(&[(101, 95.0, 2), (102, 95.0, 2)]);
    // The fake pct records its argv, then blocks until the test opens this FIFO.
    let gate = host.path("pct.hold");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let cfg = host.write_config("poll_interval = 3600");
    // At debug the daemon logs when it takes the stop request.
    let mut daemon = host
        .command(&["--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first pct call to start", || {
        !host.pct_calls().is_empty()
    });

    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    wait_for("the daemon to take the stop request", || {
        host.log_text().contains("stop requested")
    });
    // Only now may the pct call in flight end. The gate goes with it, so a second call (which
    // must not happen) would run through and show up in the calls below instead of hanging.
    let mut release = std::fs::OpenOptions::new().write(true).open(&gate).unwrap();
    std::fs::remove_file(&gate).unwrap();
    std::io::Write::write_all(&mut release, b"go\n").unwrap();
    drop(release);

    assert_eq!(wait_exit(&mut daemon).code(), Some(0));
    // The in-flight call finished and counts; the second container was not started on.
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    assert!(host.conf(101).contains("cores: 4\n"));
    assert_eq!(host.conf(102), "cores: 2\nmemory: 1024\n");
    let log = host.log_text();
    assert!(log.contains("scaled"), "{log}");
    assert!(log.contains("lxc_autoscale stopping"), "{log}");
}

#[test]
fn sigint_also_stops_the_daemon_with_status_zero() {
    let host = idle_host();
    let cfg = host.write_config("poll_interval = 3600");
    let mut daemon = spawn_daemon(&host, &cfg);
    wait_for("first cycle", || host.log_text().contains("cycle done"));
    signal(&daemon, nix::sys::signal::Signal::SIGINT);
    assert_eq!(wait_exit(&mut daemon).code(), Some(0));
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_on_error() {
    let host = idle_host();
    let cfg = host.write_config("poll_interval = 3600");
    let mut daemon = spawn_daemon(&host, &cfg);
    wait_for("first cycle", || host.log_text().contains("cycle done"));

    host.write_config("poll_interval = 0");
    signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    wait_for("reload failure", || {
        host.log_text()
            .contains("config reload failed; keeping the running config")
    });
    assert!(host.log_text().contains("poll_interval"));

    // Still alive, still on the old config; a valid config with a 1 s interval is picked up
    // and the next cycle comes a second later.
    host.write_config("poll_interval = 1");
    signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    wait_for("reload", || host.log_text().contains("config reloaded"));
    wait_for("a second cycle", || {
        host.log_text().matches("cycle done").count() >= 2
    });

    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut daemon).code(), Some(0));
}

fn overloaded_host() -> FakeHost {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    host
}

#[test]
fn applied_changes_are_sent_to_gotify_with_the_token_in_a_header() {
    let host = overloaded_host();
    let (url, requests) = gotify_listener(200);
    let cfg = host.write_config(&format!(
        "gotify_url = \"{url}\"\ngotify_token = \"tok-A1b2C3\""
    ));

    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let req = requests.recv_timeout(Duration::from_secs(10)).unwrap();
    let (head, body) = (req.head, req.body);
    assert!(head.starts_with("POST /message HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-gotify-key: tok-a1b2c3\r\n"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["title"], "lxc_autoscale: 1 container(s) scaled");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("CT 101: cores 2->4, memory 1024->1800 MB"),
        "{body}"
    );
    assert_eq!(body["priority"], 5);
    // --once sends no start/stop messages: nothing else arrives.
    assert!(requests.recv_timeout(Duration::from_millis(300)).is_err());
    assert!(!stderr(&out).contains("tok-A1b2C3"));
    assert!(!host.log_text().contains("tok-A1b2C3"));
}

#[test]
fn gotify_down_is_logged_without_the_token_and_the_change_still_applies() {
    let host = overloaded_host();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = host.write_config(&format!(
        "gotify_url = \"http://127.0.0.1:{port}\"\ngotify_token = \"tok-Z9y8X7\""
    ));

    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    let err = stderr(&out);
    assert!(err.to_ascii_lowercase().contains("gotify"), "{err}");
    assert!(!err.contains("tok-Z9y8X7"), "{err}");
    assert!(!host.log_text().contains("tok-Z9y8X7"));
}

#[test]
fn gotify_answering_500_does_not_stop_the_change() {
    let host = overloaded_host();
    let (url, requests) = gotify_listener(500);
    let cfg = host.write_config(&format!("gotify_url = \"{url}\"\ngotify_token = \"t0k\""));
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(requests.recv_timeout(Duration::from_secs(10)).is_ok());
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
}

#[test]
fn daemon_mode_notifies_start_and_stop() {
    let host = idle_host();
    let (url, requests) = gotify_listener(200);
    let cfg = host.write_config(&format!(
        "poll_interval = 3600\ngotify_url = \"{url}\"\ngotify_token = \"t0k\""
    ));
    let mut daemon = spawn_daemon(&host, &cfg);
    let started = requests.recv_timeout(Duration::from_secs(20)).unwrap().body;
    assert!(started.contains("lxc_autoscale started"), "{started}");
    wait_for("first cycle", || host.log_text().contains("cycle done"));
    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut daemon).code(), Some(0));
    let stopped = requests.recv_timeout(Duration::from_secs(10)).unwrap().body;
    assert!(stopped.contains("lxc_autoscale stopped"), "{stopped}");
}

/// Runs one cycle after seeding `(cpu %, used MB)` for 101.
fn cycle(host: &FakeHost, cfg: &std::path::Path, cpu: f64, cores: u32, used_mb: u64) {
    host.set_memory(101, used_mb, 0);
    host.seed_previous_cycle(&[(101, cpu, cores)]);
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn rollback_restores_the_baseline_after_two_changes() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\nswap: 512\n");
    let cfg = host.write_config("");
    cycle(&host, &cfg, 95.0, 2, 900); // 2 -> 4 cores, 1024 -> 1800 MB
    cycle(&host, &cfg, 95.0, 4, 1700); // 4 -> 8 cores, 1800 -> 3400 MB
    assert_eq!(
        host.pct_calls(),
        vec![
            "set 101 -cores 4 -memory 1800",
            "set 101 -cores 8 -memory 3400"
        ]
    );
    assert_eq!(host.backup_files(101).len(), 3);

    let out = host.run(&["rollback", "101", "--config", cfg.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls()[2], "set 101 -cores 2 -memory 1024");
    assert!(host.conf(101).contains("cores: 2\n"));
    assert!(host.conf(101).contains("memory: 1024\n"));
    assert!(common::stdout(&out).contains("CT 101: restored cores 2, memory 1024 MB"));
}

#[test]
fn rollback_last_undoes_only_the_latest_change() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    let cfg = host.write_config("");
    cycle(&host, &cfg, 95.0, 2, 900);
    cycle(&host, &cfg, 95.0, 4, 1700);

    let out = host.run(&[
        "rollback",
        "101",
        "--last",
        "--config",
        cfg.to_str().unwrap(),
    ]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls()[2], "set 101 -cores 4 -memory 1800");
    // The undone change's backup is gone; the baseline and the first change's backup remain.
    assert_eq!(host.backup_files(101).len(), 2);
}

#[test]
fn rollback_without_a_backup_fails_naming_the_vmid_and_the_missing_file() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    let cfg = host.write_config("");
    let backups = host.path("var/backups/101");

    let out = host.run(&["rollback", "101", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "CT 101: rollback failed: no baseline backup of container 101: {} does not exist\n",
            backups.join("baseline.json").display()
        )
    );

    let last = [
        "rollback",
        "101",
        "--last",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let out = host.run(&last);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "CT 101: rollback failed: no backup of container 101 in {}\n",
            backups.display()
        )
    );
    assert!(host.pct_calls().is_empty());
}

#[test]
fn rollback_all_skips_a_destroyed_container_and_succeeds() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    let cfg = host.write_config("");
    cycle(&host, &cfg, 95.0, 2, 900);
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    std::fs::remove_file(host.conf_path(101)).unwrap();

    let out = host.run(&["rollback", "--all", "--config", cfg.to_str().unwrap()]);

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        common::stdout(&out),
        format!(
            "CT 101: skipped: the container is gone (no {}); its backups are kept\n",
            host.conf_path(101).display()
        )
    );
    assert_eq!(host.pct_calls().len(), 1);
    assert_eq!(host.backup_files(101).len(), 2);
}

#[test]
fn rollback_of_a_baseline_without_cores_deletes_the_cores_line() {
    let host = FakeHost::new(16);
    host.add_container(101, "memory: 2048\n");
    let cfg = host.write_config("");
    // 5 % of 16 cores: demand 0.8 -> 2 wanted, at most 4 removed: 16 -> 12.
    host.set_memory(101, 1000, 0);
    host.seed_previous_cycle(&[(101, 5.0, 16)]);
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 12"]);

    let out = host.run(&["rollback", "--all", "--config", cfg.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls()[1], "set 101 -delete cores -memory 2048");
    assert_eq!(host.conf(101), "memory: 2048\n");
}

#[test]
fn demo_shows_the_model_at_work_and_the_anomaly_events_of_its_incidents() {
    let host = FakeHost::new(1);
    let out = host.run(&["demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = common::stdout(&out);
    assert!(text.contains("(energy mode)"), "{text}");
    // The two incidents are caught by the detector, one event per resource and episode, written
    // to the event log at the simulated time.
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("event log: "))
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    let v: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let utc = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    let summary: Vec<(u64, &str, &str, String)> = v
        .iter()
        .map(|e| {
            (
                e["container_id"].as_u64().unwrap(),
                e["resource"].as_str().unwrap(),
                e["direction"].as_str().unwrap(),
                utc(e["timestamp"].as_str().unwrap()),
            )
        })
        .collect();
    let at = |t: &str| t.to_string();
    assert_eq!(
        summary,
        vec![
            (106, "cpu", "down", at("2026-11-23 13:00")),
            (106, "memory", "down", at("2026-11-23 13:00")),
            (101, "cpu", "up", at("2026-11-23 16:00")),
        ]
    );
    assert!(v.iter().all(|e| e["action"] == "anomaly"), "{text}");
    // The model at work: an open anomaly holds the dead service's cut, the recent-history window
    // holds cuts, a daily peak is anticipated.
    assert!(text.contains("but anomaly open (score"), "{text}");
    assert!(text.contains("but max over the last 21600 s is"), "{text}");
    assert!(text.contains("cpu expected at 11:00"), "{text}");
    // Fewer changes than the 13 of the demo's 24 cycles without the model's history.
    let changes: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("24 cycles, "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("summary line");
    assert!(changes < 13, "{changes} changes\n{text}");
}

/// `check-config` and a start refuse a config whose `api.token_file` cannot be read; a reload to
/// it must keep the whole running config, not apply every key but the `[api]` table.
#[test]
fn a_reload_to_a_config_with_an_unreadable_token_file_keeps_the_whole_running_config() {
    let host = idle_host();
    let r = host.root().display().to_string();
    let api = format!("[api]\nlisten = \"unix:{r}/run/api.sock\"\n");
    let cfg = host.write_config(&format!("poll_interval = 3600\n{api}"));
    let mut daemon = spawn_daemon(&host, &cfg);
    wait_for("first cycle", || host.log_text().contains("cycle done"));

    host.write_config(&format!(
        "poll_interval = 1\n{api}token_file = \"{r}/missing.token\"\n"
    ));
    let check = host.run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(!check.status.success(), "check-config accepted it");
    signal(&daemon, nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload", || {
        let log = host.log_text();
        log.contains("config reloaded") || log.contains("config reload failed")
    });
    let log = host.log_text();
    signal(&daemon, nix::sys::signal::Signal::SIGTERM);
    wait_exit(&mut daemon);
    let failed = log
        .lines()
        .find(|l| l.contains("config reload failed; keeping the running config"))
        .unwrap_or_else(|| panic!("no refused reload:\n{log}"));
    assert!(failed.contains("api.token_file"), "{failed}");
    assert!(!log.contains("config reloaded"), "{log}");
}

/// pmxcfs down or restarting (ENOTCONN on a node; a directory here) makes `.members` unreadable
/// at start: not an invalid config, so the exit status is 1, which the unit restarts on, and not
/// 2, which it never restarts.
#[test]
fn an_unreadable_pmxcfs_at_start_exits_with_the_status_systemd_restarts() {
    let host = idle_host();
    let r = host.root().display().to_string();
    std::fs::create_dir_all(host.path("pvefs/.members")).unwrap();
    let cfg = host.write_config(&format!("poll_interval = 3600\npve_root = \"{r}/pvefs\""));
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "pmxcfs is not readable (is pve-cluster running?): cannot read {r}/pvefs/.members"
        )),
        "{err}"
    );
    assert!(err.contains("cannot start until pmxcfs answers"), "{err}");
    assert!(host.pct_calls().is_empty());
}
