//! Defects found by the adversarial review of the release binary (issue 11), each reproduced
//! against the real binary and a fake host, with the exact outcome.

mod common;

use std::net::TcpListener;

use common::{stderr, stdout, FakeHost};

/// An address on 127.0.0.1 where nothing listens any more: connections are refused.
fn refusing_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// The forms a secret could leak in: raw, percent-encoded (as URL libraries print it), base64
/// (as in a Basic auth header).
fn leaked_forms(user: &str, secret: &str) -> Vec<String> {
    let pct: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let b64 = |s: &str| {
        // Test-side encoder, independent of the crate's.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in s.as_bytes().chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let mut forms = vec![
        secret.to_string(),
        pct.clone(),
        b64(secret),
        b64(&format!("{user}:{secret}")),
        b64(&format!("{user}:{pct}")),
    ];
    // Unpadded base64 of the password alone, in case some encoder dropped the padding.
    forms.push(b64(secret).trim_end_matches('=').to_string());
    forms
}

#[test]
fn gotify_password_and_token_never_reach_log_events_or_stderr_when_gotify_is_down() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 100);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    let addr = refusing_addr();
    let password = "p@ss{w0rd}ü";
    let token = "AzT0k3n.Secret-42";
    let cfg = host.write_config(&format!(
        "gotify_url = \"http://admin:{password}@{addr}/\"\ngotify_token = \"{token}\"\n"
    ));
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);

    let log = host.log_text();
    let events = std::fs::read_to_string(host.path("var/log/lxc_autoscale.json")).unwrap();
    let err = stderr(&out);
    // The failure is reported, naming the server without its credentials.
    assert_eq!(
        log.matches(&format!(
            "cannot reach gotify at http://{addr}/message: Connection Failed: "
        ))
        .count(),
        1,
        "{log}"
    );
    let mut forms = leaked_forms("admin", password);
    forms.extend(leaked_forms("", token));
    forms.push("admin:".into());
    for form in &forms {
        for (name, text) in [("log", &log), ("events", &events), ("stderr", &err)] {
            assert!(!text.contains(form.as_str()), "{form:?} in {name}: {text}");
        }
    }
}

#[test]
fn gotify_notification_body_holds_no_secret_and_credentials_travel_only_in_headers() {
    let (url, rx) = common::gotify_listener(200);
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 100);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    let password = "p@ss{w0rd}ü";
    let token = "AzT0k3n.Secret-42";
    let with_auth = url.replace("http://", &format!("http://admin:{password}@"));
    let cfg = host.write_config(&format!(
        "gotify_url = \"{with_auth}/\"\ngotify_token = \"{token}\"\n"
    ));
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let req = rx.recv().unwrap();
    assert!(
        req.head.starts_with("POST /message HTTP/1.1\r\n"),
        "{}",
        req.head
    );
    assert!(
        req.head.contains(&format!("X-Gotify-Key: {token}\r\n")),
        "{}",
        req.head
    );
    let mut forms = leaked_forms("admin", password);
    forms.extend(leaked_forms("", token));
    for form in &forms {
        assert!(
            !req.body.contains(form.as_str()),
            "{form:?} in {}",
            req.body
        );
    }
    assert!(host.log_text().contains("scaled"), "{}", host.log_text());
}

#[test]
fn check_config_reads_the_old_lock_default_as_the_new_one_with_one_warning() {
    let host = FakeHost::new(4);
    let cfg = host.write_config("");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let lock_line = text.lines().find(|l| l.starts_with("lock_file")).unwrap();
    std::fs::write(
        &cfg,
        text.replace(lock_line, "lock_file = \"/var/lock/lxc_autoscale.lock\""),
    )
    .unwrap();
    let out = host.run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        warnings,
        ["warning: lock_file /var/lock/lxc_autoscale.lock is the old default in a directory every user can write to; using /run/lxc_autoscale/lxc_autoscale.lock instead (set lock_file to that, or remove the line, to silence this warning)"]
    );
}

#[test]
fn daemon_refuses_a_lock_file_in_a_directory_every_user_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let host = FakeHost::new(4);
    let dir = host.path("lock");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let lock = dir.join("lxc_autoscale.lock");
    let cfg = host.write_config("");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let lock_line = text.lines().find(|l| l.starts_with("lock_file")).unwrap();
    std::fs::write(
        &cfg,
        text.replace(lock_line, &format!("lock_file = \"{}\"", lock.display())),
    )
    .unwrap();
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "lxc_autoscale: error: refusing lock file {}: refusing directory {}: group or others can write to it (mode 1777); run: chmod go-w {}\n",
            lock.display(),
            dir.display(),
            dir.display()
        )
    );
    assert!(!lock.exists());
    assert!(host.pct_calls().is_empty());
}

#[test]
fn poll_interval_above_one_day_is_refused_naming_the_key() {
    let host = FakeHost::new(4);
    for value in ["86401", "9223372036854775807"] {
        let cfg = host.write_config(&format!("poll_interval = {value}"));
        let out = host.run(&["check-config", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "key `poll_interval` (line 12, column 17): must be from 1 to 86400 seconds (one day), got {value}"
            )),
            "{err}"
        );
        let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(host.pct_calls().is_empty());
    }
}

#[test]
fn config_that_is_a_fifo_is_refused_without_blocking() {
    let host = FakeHost::new(4);
    let fifo = host.path("fifo.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Nobody ever writes to the FIFO: a blocking open or read would hang here for good.
    let out = host.run(&["check-config", "--config", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "lxc_autoscale: error: cannot read config {}: it is a FIFO; the config must be a regular file\n",
            fifo.display()
        )
    );
}

/// A `pct` that records its argv and exits 0 without touching any conf.
fn write_lying_pct(host: &FakeHost) {
    use std::os::unix::fs::PermissionsExt;
    let pct = host.path("pct");
    std::fs::write(
        &pct,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexit 0\n",
            host.path("pct.calls").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pct, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn pct_exiting_zero_without_applying_is_not_a_change_and_is_logged_once_as_not_applied() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 900, 100);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    write_lying_pct(&host);
    let cfg = host.write_config("");
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    let log = host.log_text();
    let conf = host.path("pve/lxc/101.conf");
    assert_eq!(
        log.matches(&format!(
            "not applied: pct exited 0 but {} holds cores 2, memory 1024 MB; no change to this container for the next 12 cycles",
            conf.display()
        ))
        .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("scaled"), "{log}");
    let events = std::fs::read_to_string(host.path("var/log/lxc_autoscale.json")).unwrap();
    let actions: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].to_string())
        .collect();
    assert_eq!(actions, ["\"failure\""]);
    // The backup claiming the change is taken back.
    assert!(
        host.backup_files(101).is_empty(),
        "{:?}",
        host.backup_files(101)
    );
}

mod backoff {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use lxc_autoscale::act::apply::{self, NotApplied, Target, NOT_APPLIED_BACKOFF_CYCLES};
    use lxc_autoscale::act::backup::BackupStore;
    use lxc_autoscale::act::pct::CommandRunner;
    use lxc_autoscale::decide::plan::{Change, Step};
    use lxc_autoscale::read::snapshot::{ContainerSample, CtConf, Snapshot};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    /// Everything logged in this test binary. A global subscriber, because a thread-local one
    /// misses events whose callsite another thread registered first.
    fn global_log() -> Buf {
        static LOG: std::sync::OnceLock<Buf> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let buf = Buf::default();
            let sink = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            buf
        })
        .clone()
    }

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_change_pct_accepts_without_applying_is_sent_once_per_backoff_period() {
        let host = super::FakeHost::new(4);
        host.add_container(101, "cores: 2\nmemory: 1024\n");
        super::write_lying_pct(&host);
        let mut runner = CommandRunner {
            path: host.path("pct"),
            timeout: Duration::from_secs(20),
        };
        let backups = BackupStore::new(host.path("var/backups"));
        let snap = Snapshot {
            containers: vec![ContainerSample {
                vmid: 101,
                conf: Some(CtConf {
                    cores: Some(2),
                    memory_mb: 1024,
                    ..CtConf::default()
                }),
                ..ContainerSample::default()
            }],
            ..Snapshot::default()
        };
        let change = Change {
            vmid: 101,
            cores: Some(Step { from: 2, to: 4 }),
            memory_mb: None,
            reasons: Vec::new(),
        };
        let log = global_log();
        let mut not_applied = NotApplied::default();
        let conf_dir = host.path("pve/lxc");
        let cycles = 2 * NOT_APPLIED_BACKOFF_CYCLES + 1;
        let mut pct_cycles = Vec::new();
        let mut backed_off = 0;
        {
            for cycle in 1..=cycles {
                let before = host.pct_calls().len();
                let mut target = Target {
                    pct: &mut runner,
                    pct_display: "pct".into(),
                    backups: &backups,
                    events: None,
                    dry_run: false,
                    should_stop: &|| false,
                    conf_dir: &conf_dir,
                    not_applied: &mut not_applied,
                };
                let report = apply::apply(
                    std::slice::from_ref(&change),
                    &snap,
                    &mut target,
                    chrono::Utc::now(),
                );
                assert!(report.applied.is_empty(), "cycle {cycle}: {report:?}");
                backed_off += report.backed_off.len();
                if host.pct_calls().len() > before {
                    pct_cycles.push(cycle);
                    assert_eq!(report.failed.len(), 1);
                }
            }
        }
        // One call, then 11 cycles held back, then the next call: once per 12 cycles.
        assert_eq!(pct_cycles, [1, 13, 25]);
        assert_eq!(backed_off, 22);
        assert_eq!(host.pct_calls(), vec!["set 101 -cores 4"; 3]);
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let ours: Vec<&str> = text.lines().filter(|l| l.contains("vmid=101")).collect();
        let not_applied = ours
            .iter()
            .filter(|l| l.contains("not applied: pct exited 0"));
        assert_eq!(not_applied.count(), 3, "{text}");
        assert!(!ours.iter().any(|l| l.contains("scaled")), "{text}");
        assert!(backups.list(101).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_baseline_is_reported_once_and_holds_the_container_until_it_reads_again() {
        let host = super::FakeHost::new(4);
        host.add_container(102, "cores: 2\nmemory: 1024\n");
        let mut runner = super::common::RecordingPct::new(lxc_autoscale::act::pct::PctOutcome::Ok);
        let backups = BackupStore::new(host.path("var/backups"));
        std::fs::create_dir_all(host.path("var/backups/102")).unwrap();
        std::fs::write(host.path("var/backups/102/baseline.json"), "{").unwrap();
        let snap = Snapshot {
            containers: vec![ContainerSample {
                vmid: 102,
                conf: Some(CtConf {
                    cores: Some(2),
                    memory_mb: 1024,
                    ..CtConf::default()
                }),
                ..ContainerSample::default()
            }],
            ..Snapshot::default()
        };
        let change = Change {
            vmid: 102,
            cores: Some(Step { from: 2, to: 4 }),
            memory_mb: None,
            reasons: Vec::new(),
        };
        let mut not_applied = NotApplied::default();
        let conf_dir = host.path("pve/lxc");
        let mut failed = Vec::new();
        for cycle in 1..=4 {
            if cycle == 4 {
                let identity = lxc_autoscale::act::backup::Identity::default();
                let alloc = lxc_autoscale::act::backup::Alloc {
                    cores: Some(2),
                    memory_mb: 1024,
                    swap_mb: None,
                };
                backups
                    .rebaseline(102, &identity, &alloc, chrono::Utc::now())
                    .unwrap();
            }
            let mut target = Target {
                pct: &mut runner,
                pct_display: "pct".into(),
                backups: &backups,
                events: None,
                dry_run: false,
                should_stop: &|| false,
                conf_dir: &conf_dir,
                not_applied: &mut not_applied,
            };
            let report = apply::apply(
                std::slice::from_ref(&change),
                &snap,
                &mut target,
                chrono::Utc::now(),
            );
            failed.push((report.failed.len(), report.backed_off.clone()));
        }
        // Cycle 1 reports it; 2 and 3 skip it quietly; after the rebaseline, cycle 4 runs pct.
        assert_eq!(
            failed,
            [(1, vec![]), (0, vec![102]), (0, vec![102]), (1, vec![])]
        );
        assert_eq!(runner.calls, vec![vec!["set", "102", "-cores", "4"]]);
    }
}

const OLD_MAC: &str = "BC:24:11:00:00:01";
const NEW_MAC: &str = "BC:24:11:00:00:99";

/// Container 101 as it is now: a new, small container that got the VMID of a destroyed one.
fn new_container_101(host: &FakeHost) {
    host.add_container(
        101,
        &format!(
            "cores: 1\nhostname: web\nmemory: 1024\nnet0: name=eth0,bridge=vmbr0,hwaddr={NEW_MAC},type=veth\nostype: debian\nrootfs: local-lvm:vm-101-disk-0,size=8G\n"
        ),
    );
}

/// The baseline the destroyed container 101 (8 cores, 16 GB, same hostname and volume) left.
fn plant_old_baseline(host: &FakeHost) -> std::path::PathBuf {
    let dir = host.path("var/backups/101");
    std::fs::create_dir_all(&dir).unwrap();
    let identity = format!(
        r#""identity":{{"hostname":"web","rootfs":"local-lvm:vm-101-disk-0","ostype":"debian","hwaddrs":["{OLD_MAC}"]}}"#
    );
    std::fs::write(
        dir.join("baseline.json"),
        format!(r#"{{"vmid":101,"timestamp":"2025-01-01T00:00:00.000000Z","before":{{"cores":8,"memory_mb":16384,"swap_mb":null}},"after":null,{identity}}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("0000000001-20250101T000000.000000Z.json"),
        format!(r#"{{"vmid":101,"timestamp":"2025-01-01T00:00:00.000000Z","before":{{"cores":8,"memory_mb":16384,"swap_mb":null}},"after":{{"cores":4,"memory_mb":8192,"swap_mb":null}},{identity}}}"#),
    )
    .unwrap();
    dir
}

#[test]
fn rollback_refuses_a_baseline_of_another_container_with_the_same_vmid_unless_forced() {
    let host = FakeHost::new(16);
    new_container_101(&host);
    plant_old_baseline(&host);
    let cfg = host.write_config("");
    let cfg = cfg.to_str().unwrap();

    let out = host.run(&["rollback", "101", "--config", cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("CT 101: rollback failed: refusing: container 101 is not the one this backup was taken from (MAC addresses {NEW_MAC} instead of {OLD_MAC}); pass --force to restore it anyway\n")
    );
    assert!(host.pct_calls().is_empty());

    let out = host.run(&["rollback", "101", "--force", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 8 -memory 16384"]);
    assert_eq!(
        stdout(&out),
        format!("CT 101: restored cores 8, memory 16384 MB (baseline) (forced: another container, MAC addresses {NEW_MAC} instead of {OLD_MAC})\n")
    );
}

#[test]
fn daemon_starts_a_fresh_baseline_for_a_new_container_and_moves_the_old_backups_aside() {
    let host = FakeHost::new(16);
    new_container_101(&host);
    host.set_memory(101, 900, 100);
    host.seed_previous_cycle(&[(101, 95.0, 1)]);
    plant_old_baseline(&host);
    let cfg = host.write_config("");
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls().len(), 1, "{:?}", host.pct_calls());

    let backups = host.path("var/backups");
    let mut entries: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0], "101");
    let moved = &entries[1];
    assert!(moved.starts_with("101.replaced-"), "{moved}");
    let mut old: Vec<String> = std::fs::read_dir(backups.join(moved))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    old.sort();
    assert_eq!(
        old,
        ["0000000001-20250101T000000.000000Z.json", "baseline.json"]
    );

    let baseline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backups.join("101/baseline.json")).unwrap())
            .unwrap();
    assert_eq!(
        baseline["before"],
        serde_json::json!({"cores": 1, "memory_mb": 1024, "swap_mb": null})
    );
    assert_eq!(
        baseline["identity"]["hwaddrs"],
        serde_json::json!([NEW_MAC])
    );
    let log = host.log_text();
    assert_eq!(
        log.matches(&format!(
            "another container now has this vmid (MAC addresses {NEW_MAC} instead of {OLD_MAC})"
        ))
        .count(),
        1,
        "{log}"
    );
    // A rollback now returns to the new container's own baseline.
    let out = host.run(&["rollback", "101", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "CT 101: restored cores 1, memory 1024 MB (baseline)\n"
    );
}

#[test]
fn corrupt_baseline_stops_changes_until_rebaseline_accepts_the_current_allocation() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\nhostname: web\n");
    host.set_memory(101, 900, 100);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    let dir = host.path("var/backups/101");
    std::fs::create_dir_all(&dir).unwrap();
    let baseline = dir.join("baseline.json");
    std::fs::write(&baseline, "{\"vmid\": 101, \"timest").unwrap();
    let cfg = host.write_config("");
    let cfg = cfg.to_str().unwrap();

    // The daemon leaves the container alone and says why, naming the file.
    let out = host.run(&["--once", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(host.pct_calls().is_empty(), "{:?}", host.pct_calls());
    let log = host.log_text();
    let said = format!(
        "baseline {} is unreadable (invalid backup {}: not a backup json document: ",
        baseline.display(),
        baseline.display()
    );
    assert_eq!(log.matches(&said).count(), 1, "{log}");
    assert!(
        log.contains("container 101 is not changed until 'lxc_autoscale rebaseline 101' accepts its current allocation"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&baseline).unwrap(),
        "{\"vmid\": 101, \"timest"
    );

    // status says so too.
    let out = host.run(&["status", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("101 "))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!(
            "not changed: baseline unreadable: invalid backup {}: not a backup json document: ",
            baseline.display()
        )) && line.ends_with("; run 'lxc_autoscale rebaseline 101'"),
        "{line}"
    );

    let out = host.run(&["status", "--json", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let why = json["baseline_unreadable"]["101"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "invalid backup {}: not a backup json document: ",
            baseline.display()
        )),
        "{why}"
    );

    // rebaseline accepts the current allocation and keeps the broken file.
    let out = host.run(&["rebaseline", "101", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kept: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("baseline.json.replaced-"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        stdout(&out),
        format!(
            "CT 101: baseline is now cores 2, memory 1024 MB ({}); the previous one is kept as {}\n",
            baseline.display(),
            dir.join(&kept[0]).display()
        )
    );
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    assert_eq!(
        b["before"],
        serde_json::json!({"cores": 2, "memory_mb": 1024, "swap_mb": null})
    );

    // The next cycle scales it again.
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    let out = host.run(&["--once", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
}

#[test]
fn rebaseline_is_refused_while_the_daemon_holds_the_lock() {
    let host = FakeHost::new(4);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    let cfg = host.write_config("");
    let _daemon =
        lxc_autoscale::service::lock::Lock::acquire(&host.path("var/lxc_autoscale.lock")).unwrap();
    let out = host.run(&["rebaseline", "101", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "lxc_autoscale: error: cannot rebaseline while the daemon is running (pid {}): stop it first with 'systemctl stop lxc_autoscale'\n",
            std::process::id()
        )
    );
    assert!(!host.path("var/backups/101/baseline.json").exists());
}

#[test]
fn check_config_shows_the_gotify_url_without_its_password_in_any_form() {
    let host = FakeHost::new(4);
    let password = "p@ss{w0rd}ü";
    let cfg = host.write_config(&format!(
        "gotify_url = \"http://admin:{password}@gotify.example:8080/\"\ngotify_token = \"AzT0k3n.Secret-42\"\n"
    ));
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = host.run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("gotify on (http://gotify.example:8080/, token set)\n"),
        "{text}"
    );
    let mut forms = leaked_forms("admin", password);
    forms.extend(leaked_forms("", "AzT0k3n.Secret-42"));
    for form in &forms {
        assert!(!text.contains(form.as_str()), "{form:?} in {text}");
    }
}

#[test]
fn sighup_after_the_config_became_a_fifo_keeps_the_old_config_and_sigterm_still_stops() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};
    // Polls until `cond` holds; only a hang fails (no timing assertion).
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let host = FakeHost::new(4);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    let cfg = host.write_config("poll_interval = 3600");
    let mut daemon = host
        .command(&["--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first cycle", &|| {
        host.log_text().contains("cycle done")
    });
    std::fs::remove_file(&cfg).unwrap();
    nix::unistd::mkfifo(&cfg, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let pid = Pid::from_raw(daemon.id() as i32);
    kill(pid, Signal::SIGHUP).unwrap();
    let refused = format!(
        "cannot read config {}: it is a FIFO; the config must be a regular file",
        cfg.display()
    );
    wait_for("the refused reload", &|| host.log_text().contains(&refused));
    kill(pid, Signal::SIGTERM).unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = host.log_text();
    assert_eq!(
        log.matches("config reload failed; keeping the running config")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("lxc_autoscale stopping"), "{log}");
}
