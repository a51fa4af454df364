//! One daemon cycle (`--once`) against a fake Proxmox host on disk, with a fake `pct`.

mod common;

use common::{stderr, FakeHost};

fn once(host: &FakeHost, extra_config: &str) -> std::process::Output {
    let cfg = host.write_config(extra_config);
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "daemon failed: {}", stderr(&out));
    out
}

#[test]
fn scales_up_cores_and_memory_in_one_pct_call_when_both_are_above_upper() {
    let host = FakeHost::new(16);
    host.add_container(
        101,
        "arch: amd64\ncores: 2\nhostname: web\nmemory: 1024\nswap: 512\n",
    );
    host.set_memory(101, 900, 100);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);

    once(&host, "");

    // demand 1.9 cores / 0.5 = 4 cores; memory max(1024+512, 900/0.5) = 1800 MB.
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    let conf = host.conf(101);
    assert!(conf.contains("cores: 4\n"), "{conf}");
    assert!(conf.contains("memory: 1800\n"), "{conf}");
    let backups = host.backup_files(101);
    assert_eq!(
        backups.len(),
        2,
        "baseline plus one timestamped backup: {backups:?}"
    );
    assert!(backups.contains(&"baseline.json".to_string()));
}

#[test]
fn scales_down_cores_and_memory_when_both_are_below_lower() {
    let host = FakeHost::new(16);
    host.add_container(102, "cores: 8\nmemory: 4096\n");
    host.set_memory(102, 200, 1500);
    host.seed_previous_cycle(&[(102, 5.0, 8)]);

    once(&host, "");

    // cpu: demand 0.4 -> 1 core wanted, but at most core_max_increment (4) removed: 8 -> 4.
    // memory: page cache is not used memory; 4096 -> 2048 (at most half per cycle).
    assert_eq!(host.pct_calls(), vec!["set 102 -cores 4 -memory 2048"]);
}

#[test]
fn reads_allocation_from_main_section_only() {
    let host = FakeHost::new(16);
    host.add_container(
        101,
        "cores: 2\nmemory: 1024\nlxc.cgroup2.cpuset.cpus: 0-3\n\n[pve:pending]\nmemory: 4096\n\n[before-upgrade]\ncores: 8\nmemory: 8192\nsnaptime: 1700000000\n",
    );
    host.set_memory(101, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);

    once(&host, "");

    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    let conf = host.conf(101);
    assert!(conf.contains("[pve:pending]\nmemory: 4096"), "{conf}");
    assert!(
        conf.contains("[before-upgrade]\ncores: 8\nmemory: 8192"),
        "{conf}"
    );
}

/// Counted by strace over the whole run (every fork, vfork, clone and exec of the daemon and of
/// anything it starts), not only by the fake `pct`'s log.
#[test]
fn steady_cycle_spawns_no_process() {
    let host = FakeHost::new(16);
    for vmid in 101..=110 {
        host.add_container(vmid, "cores: 2\nmemory: 2048\n");
        host.set_memory(vmid, 1000, 300);
    }
    let loads: Vec<(u32, f64, u32)> = (101..=110).map(|v| (v, 50.0, 2)).collect();
    host.seed_previous_cycle(&loads);

    let cfg = host.write_config("");
    let run = host.run_counting_processes(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(
        run.output.status.success(),
        "daemon failed: {}",
        stderr(&run.output)
    );

    assert_eq!(run.processes_created, 0, "{}", run.trace);
    assert_eq!(run.execs_after_start, 0, "{}", run.trace);
    assert!(host.pct_calls().is_empty(), "{:?}", host.pct_calls());
    assert!(host.path("var/state.json").exists());
}

/// The count above can fail: a cycle that calls `pct` once shows that process and its exec.
#[test]
fn process_count_sees_the_pct_call_of_a_change_cycle() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 100);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);

    let cfg = host.write_config("");
    let run = host.run_counting_processes(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(
        run.output.status.success(),
        "daemon failed: {}",
        stderr(&run.output)
    );

    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    // The daemon starts pct; the fake pct (a shell script) starts awk and mv in turn.
    assert!(run.processes_created >= 1, "{}", run.trace);
    assert!(
        run.trace
            .lines()
            .any(|l| l.contains(" execve(") && l.contains(&host.path("pct").display().to_string())),
        "{}",
        run.trace
    );
}

#[test]
fn locked_container_is_not_changed() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nlock: backup\nmemory: 1024\n");
    host.set_memory(101, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);

    once(&host, "");

    assert!(host.pct_calls().is_empty());
    assert!(host.backup_files(101).is_empty());
}

#[test]
fn ignored_and_noautoscale_containers_are_not_changed() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.add_container(102, "cores: 2\nmemory: 1024\ntags: prod;noautoscale\n");
    host.add_container(103, "cores: 2\nmemory: 1024\n");
    for v in [101, 102, 103] {
        host.set_memory(v, 900, 0);
    }
    host.seed_previous_cycle(&[(101, 95.0, 2), (102, 95.0, 2), (103, 95.0, 2)]);

    once(&host, "ignore_lxc = [101]");

    assert_eq!(host.pct_calls(), vec!["set 103 -cores 4 -memory 1800"]);
}

#[test]
fn missing_memory_stat_gives_no_memory_decision_but_cpu_still_scales() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 0);
    std::fs::remove_file(host.cgroup(101).join("memory.stat")).unwrap();
    host.seed_previous_cycle(&[(101, 95.0, 2)]);

    once(&host, "");

    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4"]);
}

#[test]
fn garbled_cpu_stat_gives_no_cpu_decision() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 8\nmemory: 1024\n");
    host.set_memory(101, 100, 0);
    host.seed_previous_cycle(&[]);
    std::fs::write(
        host.cgroup(101).join("cpu.stat"),
        "usage_usec 12x4\0\nuser_usec -5\n",
    )
    .unwrap();

    once(&host, "");

    // CPU would have been 0 % had the garbage been read as zero: it must not shrink the cores.
    // Memory (100 of 1024 MB) is below lower: 1024 -> 512 is the only change.
    assert_eq!(host.pct_calls(), vec!["set 101 -memory 512"]);
}

#[test]
fn counter_reset_gives_no_cpu_decision() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    // The previous sample is ahead of the current counter: the container restarted.
    let path = host.path("var/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    state["containers"]["101"]["cpu_usage_usec"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::write(&path, state.to_string()).unwrap();

    once(&host, "");

    assert_eq!(host.pct_calls(), vec!["set 101 -memory 1800"]);
}

#[test]
fn failing_pct_is_not_counted_backed_up_or_logged_as_a_change() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    host.make_pct_fail();

    let out = once(&host, "");

    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    assert_eq!(host.conf(101), "cores: 2\nmemory: 1024\n");
    assert!(
        host.backup_files(101).is_empty(),
        "{:?}",
        host.backup_files(101)
    );
    let err = stderr(&out);
    assert!(err.contains("pct exited with status 1"), "{err}");
    assert!(err.contains("CT 101 is locked (backup)"), "{err}");
    assert!(err.contains("applied=0"), "{err}");
    assert!(!err.contains(" scaled"), "{err}");
    let events = std::fs::read_to_string(host.path("var/log/lxc_autoscale.json")).unwrap();
    let lines: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["container_id"], 101);
    assert_eq!(lines[0]["action"], "failure");
}

#[test]
fn applied_change_is_written_to_the_json_event_log() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);

    once(&host, "");

    let events = std::fs::read_to_string(host.path("var/log/lxc_autoscale.json")).unwrap();
    let line: serde_json::Value = serde_json::from_str(events.trim()).unwrap();
    assert_eq!(line["container_id"], 101);
    assert_eq!(line["action"], "scale");
    assert_eq!(line["change"], "cores 2->4, memory 1024->1800 MB");
    assert!(line["timestamp"].is_string());
    assert!(line["proxmox_host"].is_string());
    let log = std::fs::read_to_string(host.path("var/log/lxc_autoscale.log")).unwrap();
    assert!(log.contains("scaled"), "{log}");
    assert!(log.contains("vmid=101"), "{log}");
}

#[test]
fn dry_run_logs_the_command_and_makes_no_call_or_backup() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    let cfg = host.write_config("");

    let out = host.run(&["--once", "--dry-run", "--config", cfg.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(host.pct_calls().is_empty());
    assert!(host.backup_files(101).is_empty());
    let err = stderr(&out);
    assert!(err.contains("dry run: would run"), "{err}");
    assert!(
        err.contains(&format!(
            "{}/pct set 101 -cores 4 -memory 1800",
            host.root().display()
        )),
        "{err}"
    );
    assert_eq!(host.conf(101), "cores: 2\nmemory: 1024\n");
    assert!(host.path("var/state.json").exists());
}

#[test]
fn higher_tier_gets_the_last_free_core() {
    let host = FakeHost::new(8);
    host.add_container(200, "cores: 2\nmemory: 2048\n");
    host.add_container(201, "cores: 2\nmemory: 2048\n");
    for v in [200, 201] {
        host.set_memory(v, 1000, 0);
    }
    // Both run at 95 %: each wants +2 cores. Headroom: floor(8 x 0.9) = 7.2 usable - 5.5 busy.
    host.seed_previous_cycle(&[(200, 95.0, 2), (201, 95.0, 2)]);
    host.set_host_busy_cores(5.5);

    once(
        &host,
        "[tiers.bronze]\ncontainers = [200]\npriority = 1\n[tiers.gold]\ncontainers = [201]\npriority = 10\n",
    );

    assert_eq!(host.pct_calls(), vec!["set 201 -cores 3"]);
}

#[test]
fn running_container_without_conf_is_skipped_with_a_warning() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    std::fs::remove_file(host.path("pve/lxc/101.conf")).unwrap();
    host.seed_previous_cycle(&[(101, 95.0, 2)]);

    let out = once(&host, "");

    assert!(host.pct_calls().is_empty());
    assert!(stderr(&out).contains("101"), "{}", stderr(&out));
}

#[test]
fn invalid_config_refuses_to_start_and_names_key_and_line() {
    let host = FakeHost::new(4);
    let cfg = host.write_config("cpu_upper_threshold = 120");
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("key `cpu_upper_threshold` (line 12, column 23)"),
        "{err}"
    );
    assert!(err.contains("refusing to start"), "{err}");
    assert!(host.pct_calls().is_empty());
}

#[test]
fn unknown_config_key_refuses_to_start() {
    let host = FakeHost::new(4);
    let cfg = host.write_config("cpu_uper_threshold = 70");
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cpu_uper_threshold"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_prints_each_container_and_the_next_action_without_calling_pct() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nhostname: web\nmemory: 1024\n");
    host.add_container(102, "cores: 2\nhostname: db\nmemory: 2048\n");
    host.set_memory(101, 900, 0);
    host.set_memory(102, 1000, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2), (102, 50.0, 2)]);
    let cfg = host.write_config("[tiers.db]\ncontainers = [102]\n");

    let out = host.run(&["status", "--config", cfg.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    let text = common::stdout(&out);
    let row101 = text.lines().find(|l| l.starts_with("101 ")).expect(&text);
    assert!(row101.contains("web"), "{row101}");
    assert!(
        row101.contains("cores 2->4, memory 1024->1800 MB"),
        "{row101}"
    );
    let row102 = text.lines().find(|l| l.starts_with("102 ")).expect(&text);
    assert!(row102.contains("db"), "{row102}");
    assert!(row102.contains("48.8"), "{row102}");
    assert!(host.pct_calls().is_empty());
    assert!(!host.path("var/lxc_autoscale.lock").exists());
}

#[test]
fn check_config_prints_effective_tier_settings_without_the_token() {
    let host = FakeHost::new(4);
    let cfg = host.write_config(
        "gotify_url = \"http://127.0.0.1:9\"\ngotify_token = \"sekrit-token-123\"\nmax_cores = 6\n[tiers.db]\ncontainers = [200]\nmax_cores = 12\n",
    );
    let out = host.run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = common::stdout(&out);
    assert!(!text.contains("sekrit-token-123"), "{text}");
    let db = text.lines().find(|l| l.starts_with("db ")).expect(&text);
    assert!(db.contains("1-12"), "{db}");
    let default = text
        .lines()
        .find(|l| l.starts_with("(default)"))
        .expect(&text);
    assert!(default.contains("1-6"), "{default}");
}

/// Keeps container 101's `cpu.stat` at `percent` of `cores` and the host's `stat` at 10 % busy,
/// counted from now on, as a kernel would, until the returned flag is set. Each write replaces
/// the file whole (rename), so a reader never sees half of one.
fn run_counters(
    host: &FakeHost,
    percent: f64,
    cores: u32,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let stop = std::sync::Arc::clone(&done);
    let cpu_stat = host.cgroup(101).join("cpu.stat");
    let proc_stat = host.path("proc/stat");
    let base = (std::fs::read_to_string(&cpu_stat).unwrap())
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let cpus = host.host_cpus;
    let started = std::time::Instant::now();
    let replace = |path: &std::path::Path, text: String| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    };
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let secs = started.elapsed().as_secs_f64();
            let usage = base + (percent / 100.0 * f64::from(cores) * secs * 1e6) as u64;
            replace(
                &cpu_stat,
                format!("usage_usec {usage}\nuser_usec {usage}\nsystem_usec 0\n"),
            );
            // 100 ticks per second per CPU, 10 % of them busy, on top of a large first reading.
            let total = 1_000_000 + (secs * 100.0 * f64::from(cpus)) as u64;
            let busy = total / 10;
            let mut stat = format!("cpu  {busy} 0 0 {} 0 0 0 0 0 0\n", total - busy);
            for n in 0..cpus {
                stat.push_str(&format!("cpu{n} 0 0 0 0 0 0 0 0 0 0\n"));
            }
            stat.push_str(&format!("btime {}\n", common::BTIME));
            replace(&proc_stat, stat);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    (done, handle)
}

#[test]
fn first_cycle_after_downtime_measures_cpu_over_the_fresh_window_and_scales() {
    // The saved samples are 300 s old (stale at poll_interval 60), or stamped an hour ahead.
    for (what, future) in [("stale", false), ("future", true)] {
        let host = FakeHost::new(16);
        host.add_container(101, "cores: 2\nmemory: 2048\n");
        host.set_memory(101, 1000, 0);
        host.seed_previous_cycle(&[(101, 97.0, 2)]);
        if future {
            let path = host.path("var/state.json");
            let text = std::fs::read_to_string(&path).unwrap();
            let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
            let ahead = state["host"]["taken_at_usec"].as_i64().unwrap() + 3_900_000_000;
            state["host"]["taken_at_usec"] = ahead.into();
            state["containers"]["101"]["taken_at_usec"] = ahead.into();
            std::fs::write(&path, state.to_string()).unwrap();
        }
        let (done, counters) = run_counters(&host, 97.0, 2);

        // max_cores = 4: whatever a busy CI machine does to the window, 97 % gives 4 cores.
        let out = once(&host, "poll_interval = 60\nmax_cores = 4");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        counters.join().unwrap();

        assert!(out.status.success(), "{what}: {}", stderr(&out));
        assert_eq!(host.pct_calls(), vec!["set 101 -cores 4"], "{what}");
        assert_eq!(host.conf(101), "cores: 4\nmemory: 2048\n", "{what}");
        let log = host.log_text();
        assert!(
            log.contains("no usable previous sample; measuring cpu over a short window"),
            "{what}: {log}"
        );
        assert!(!log.contains("cpu not measured"), "{what}: {log}");
    }
}

#[test]
fn once_serves_no_api_and_leaves_the_socket_of_a_running_daemon_alone() {
    use std::os::unix::fs::MetadataExt;
    let host = FakeHost::new(4);
    host.add_container(101, "arch: amd64\ncores: 2\nmemory: 1024\n");
    host.set_memory(101, 400, 100);
    host.seed_previous_cycle(&[(101, 40.0, 2)]);
    // The default config has the API on this socket; a daemon (with another lock file) serves it.
    std::fs::create_dir_all(host.path("run")).unwrap();
    let socket = host.path("run/api.sock");
    let daemon = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    daemon.set_nonblocking(true).unwrap();
    let inode = std::fs::metadata(&socket).unwrap().ino();

    let out = once(&host, "");

    assert_eq!(std::fs::metadata(&socket).unwrap().ino(), inode);
    assert!(
        daemon.accept().is_err(),
        "--once connected to the daemon's socket"
    );
    drop(std::os::unix::net::UnixStream::connect(&socket).unwrap());
    assert!(
        daemon.accept().is_ok(),
        "the socket no longer leads to the daemon"
    );
    assert!(out.status.success());
    let log = host.log_text();
    assert!(log.contains("once=true api=\"off\""), "{log}");
}
