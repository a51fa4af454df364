//! Security checks: vmid validation before any argv, no shell, the Gotify token kept secret,
//! private files written without following symlinks, and rollback trusting no backup blindly.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{gotify_listener, stderr, stdout, FakeHost};
use lxc_autoscale::act::apply::{self, Target};
use lxc_autoscale::act::backup::BackupStore;
use lxc_autoscale::act::pct::{self, PctOutcome, SetArgs};
use lxc_autoscale::decide::plan::{Change, Step};
use lxc_autoscale::read::snapshot::{ContainerSample, CtConf, Snapshot};

const TOKEN: &str = "AsEcReT-t0ken-9f8e7d";

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn overloaded(host: &FakeHost, vmid: u32) {
    host.add_container(vmid, "cores: 2\nmemory: 1024\n");
    host.set_memory(vmid, 900, 0);
}

// ---- vmids -----------------------------------------------------------------------------------

#[test]
fn vmids_below_100_never_reach_an_argv() {
    for vmid in [0, 1, 42, 99] {
        for args in [
            SetArgs {
                cores: Some(2),
                ..SetArgs::default()
            },
            SetArgs {
                delete_cores: true,
                memory_mb: Some(512),
                ..SetArgs::default()
            },
        ] {
            assert_eq!(pct::set_argv(vmid, &args), None, "vmid {vmid}");
        }
    }

    // Even a plan that names one (built by hand, past the collector) runs nothing.
    let tmp = tempfile::tempdir().unwrap();
    let backups = BackupStore::new(tmp.path().join("b"));
    let mut recorder = common::RecordingPct::new(PctOutcome::Ok);
    let snap = Snapshot {
        containers: vec![ContainerSample {
            vmid: 42,
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
        vmid: 42,
        cores: Some(Step { from: 2, to: 4 }),
        memory_mb: None,
        reasons: Vec::new(),
    };
    let mut target = Target {
        pct: &mut recorder,
        pct_display: "pct".into(),
        backups: &backups,
        events: None,
        dry_run: false,
        should_stop: &|| false,
        conf_dir: tmp.path(),
        not_applied: &mut apply::NotApplied::default(),
    };
    let report = apply::apply(&[change], &snap, &mut target, chrono::Utc::now());
    assert!(recorder.calls.is_empty());
    assert_eq!(report.failed.len(), 1);
    assert!(!tmp.path().join("b").exists(), "no backup for vmid 42");
}

#[test]
fn cgroup_dirs_and_confs_named_below_100_are_never_managed() {
    let host = FakeHost::new(16);
    for vmid in [42, 99] {
        overloaded(&host, vmid);
    }
    // Leading zeros would parse to 101 but are not a VMID directory name.
    std::fs::create_dir_all(host.path("cgroup/lxc/0101")).unwrap();
    overloaded(&host, 101);
    host.seed_previous_cycle(&[(42, 95.0, 2), (99, 95.0, 2), (101, 95.0, 2)]);
    let cfg = host.write_config("");

    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), vec!["set 101 -cores 4 -memory 1800"]);
    assert!(host.log_text().contains("cycle done containers=1 "));
}

#[test]
fn rollback_refuses_vmids_below_100_and_ignores_their_backup_dirs() {
    let host = FakeHost::new(16);
    let cfg = host.write_config("");
    let dir = host.path("var/backups/42");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("baseline.json"),
        r#"{"vmid":42,"timestamp":"2025-01-01T00:00:00Z","before":{"cores":2,"memory_mb":1024,"swap_mb":null},"after":null}"#,
    )
    .unwrap();

    let all = host.run(&["rollback", "--all", "--config", cfg.to_str().unwrap()]);
    assert!(all.status.success(), "{}", stderr(&all));
    assert!(stdout(&all).contains("no backups"), "{}", stdout(&all));

    let one = host.run(&["rollback", "42", "--config", cfg.to_str().unwrap()]);
    assert_eq!(one.status.code(), Some(1));
    assert!(host.pct_calls().is_empty());
}

// ---- no shell --------------------------------------------------------------------------------

/// The non-test part of a source file (before its `#[cfg(test)]` module).
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[test]
fn no_shell_is_ever_started_and_only_pct_rs_spawns_processes() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut checked = 0;
    for path in &files {
        let code = production_code(path);
        for needle in ["\"sh\"", "/bin/sh", "bash", "\"-c\"", "system("] {
            assert!(
                !code.contains(needle),
                "{} contains {needle}",
                path.display()
            );
        }
        let spawns = code.contains("Command::new(")
            || code.contains("process::Command")
            || code.contains("use std::process::{") && code.contains("Command");
        if path.file_name().unwrap() != "pct.rs" {
            assert!(!spawns, "{} spawns a process", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} files checked");
    // pct.rs spawns the configured program itself, with an argv.
    let pct = production_code(&src.join("act").join("pct.rs"));
    assert_eq!(pct.matches("Command::new(").count(), 1);
    assert!(pct.contains("Command::new(&self.path)"));
}

// ---- the Gotify token ------------------------------------------------------------------------

fn assert_no_token(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "token leaked into {what}: {text}");
}

fn assert_output_clean(what: &str, out: &Output) {
    assert_no_token(&format!("{what} stdout"), &stdout(out));
    assert_no_token(&format!("{what} stderr"), &stderr(out));
}

#[test]
fn gotify_token_never_appears_in_logs_errors_notifications_or_command_output() {
    let host = FakeHost::new(16);
    overloaded(&host, 101);
    host.add_container(102, "cores: 2\nmemory: 1024\n");
    host.set_memory(102, 900, 0);
    host.seed_previous_cycle(&[(101, 95.0, 2), (102, 95.0, 2)]);
    // 102's change fails, so the failure path (error text, failure notification) runs too.
    let (url, requests) = gotify_listener(500);
    let with_token = |url: &str| format!("gotify_url = \"{url}\"\ngotify_token = \"{TOKEN}\"");
    let cfg = host.write_config(&with_token(&url));
    std::fs::write(host.path("pct.fail"), "").unwrap();

    let run = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_output_clean("daemon run (gotify 500)", &run);
    let common::HttpRequest { head, body } =
        requests.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        head.contains(TOKEN),
        "the token travels in the header: {head}"
    );
    assert_no_token("notification body", &body);

    // Gotify unreachable: the transport error is logged, without the token.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = host.write_config(&with_token(&format!("http://{dead}")));
    host.seed_previous_cycle(&[(101, 95.0, 4), (102, 95.0, 2)]);
    let run = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("gotify notification failed"));
    assert_output_clean("daemon run (gotify down)", &run);

    // A token in the URL's userinfo or query is also kept out of the logs.
    let cfg = host.write_config(&format!(
        "gotify_url = \"http://user:{TOKEN}@{dead}/?token={TOKEN}\"\ngotify_token = \"{TOKEN}\""
    ));
    host.seed_previous_cycle(&[(101, 95.0, 8), (102, 95.0, 2)]);
    let run = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_output_clean("daemon run (token in url)", &run);
    let check = host.run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert_output_clean("check-config (token in url)", &check);

    let cfg = host.write_config(&with_token(&url));
    for args in [
        vec!["check-config"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["--once", "--dry-run"],
        vec!["rollback", "--all"],
    ] {
        let mut argv = args.clone();
        argv.extend(["--config", cfg.to_str().unwrap()]);
        let out = host.run(&argv);
        assert_output_clean(&args.join(" "), &out);
    }

    assert_config_errors_hide_token(&host);
    for file in [
        "var/log/lxc_autoscale.log",
        "var/log/lxc_autoscale.events.jsonl",
    ] {
        let path = host.path(file);
        if let Ok(text) = std::fs::read_to_string(&path) {
            assert_no_token(file, &text);
        }
    }
    for entry in walk(&host.path("var")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert_no_token(
            &entry.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        );
    }
}

/// Config errors, including a malformed token line, never echo the token.
fn assert_config_errors_hide_token(host: &FakeHost) {
    for bad in [
        format!("gotify_token = \"{TOKEN}\"\npoll_interval = 0\n"),
        format!("gotify_token = {TOKEN}\n"),
        "gotify_token = 987654321987\n".to_string(),
        format!("gotify_token = [\"{TOKEN}\"]\n"),
        format!("gotify_url = \"ftp://{TOKEN}\"\ngotify_token = \"{TOKEN}\"\n"),
    ] {
        std::fs::write(host.path("bad.conf"), &bad).unwrap();
        let bad_cfg = host.path("bad.conf");
        for args in [vec!["check-config"], vec!["--once"]] {
            let mut argv = args.clone();
            argv.extend(["--config", bad_cfg.to_str().unwrap()]);
            let out = host.run(&argv);
            assert!(!out.status.success(), "{bad}");
            assert_output_clean(&format!("{} with {bad:?}", args.join(" ")), &out);
            assert!(!stderr(&out).contains("987654321987"), "{}", stderr(&out));
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn daemon_warns_when_a_config_holding_a_token_is_readable_by_others() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.seed_previous_cycle(&[(101, 50.0, 2)]);
    let (url, _requests) = gotify_listener(200);
    let cfg = host.write_config(&format!(
        "gotify_url = \"{url}\"\ngotify_token = \"{TOKEN}\""
    ));
    for (mode, warned) in [(0o644, true), (0o640, true), (0o604, true), (0o600, false)] {
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(mode)).unwrap();
        let before = host.log_text().len();
        let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let new_log = host.log_text()[before..].to_string();
        assert_eq!(
            new_log.contains("holds gotify_token but is readable by group or others"),
            warned,
            "mode {mode:o}: {new_log}"
        );
        let check = host.run(&["check-config", "--config", cfg.to_str().unwrap()]);
        assert_eq!(
            stdout(&check).contains("warning:"),
            warned,
            "{}",
            stdout(&check)
        );
    }
    // Without a token the mode does not matter.
    let cfg = host.write_config("");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = host.log_text().len();
    host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(!host.log_text()[before..].contains("readable by group or others"));
}

// ---- private files, no symlinks --------------------------------------------------------------

#[test]
fn state_and_backups_are_private_files_in_private_directories() {
    let host = FakeHost::new(16);
    overloaded(&host, 101);
    host.seed_previous_cycle(&[(101, 95.0, 2)]);
    let cfg = host.write_config("");
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert_eq!(host.pct_calls().len(), 1);
    assert_eq!(mode_of(&host.path("var/state.json")), 0o600);
    assert_eq!(mode_of(&host.path("var/backups")), 0o700);
    assert_eq!(mode_of(&host.path("var/backups/101")), 0o700);
    let files = host.backup_files(101);
    assert_eq!(files.len(), 2);
    for f in files {
        assert_eq!(
            mode_of(&host.path(&format!("var/backups/101/{f}"))),
            0o600,
            "{f}"
        );
    }
}

#[test]
fn symlink_planted_at_the_state_path_is_refused_and_its_target_untouched() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 2\nmemory: 1024\n");
    host.set_memory(101, 512, 0);
    host.seed_previous_cycle(&[(101, 50.0, 2)]);
    let victim = host.path("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::remove_file(host.path("var/state.json")).unwrap();
    std::os::unix::fs::symlink(&victim, host.path("var/state.json")).unwrap();
    let cfg = host.write_config("poll_interval = 1");

    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(host.path("var/state.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    let err = stderr(&out);
    assert!(err.contains("ignoring unusable state file"), "{err}");
    assert!(err.contains("cannot write state file"), "{err}");
    assert!(err.contains("symlink"), "{err}");
}

#[test]
fn symlinked_backup_files_are_never_written_through_nor_read() {
    let tmp = tempfile::tempdir().unwrap();
    let store = BackupStore::new(tmp.path().join("backups"));
    let alloc = |cores| lxc_autoscale::act::backup::Alloc {
        cores: Some(cores),
        memory_mb: 1024,
        swap_mb: None,
    };
    // A valid-looking baseline elsewhere, linked in as 101's baseline.
    let victim = tmp.path().join("victim.json");
    let fake = r#"{"vmid":101,"timestamp":"2025-01-01T00:00:00Z","before":{"cores":64,"memory_mb":65536,"swap_mb":null},"after":null}"#;
    std::fs::write(&victim, fake).unwrap();
    std::fs::create_dir_all(store.dir.join("101")).unwrap();
    std::os::unix::fs::symlink(&victim, store.dir.join("101/baseline.json")).unwrap();

    // A baseline that is not ours is an unreadable one: no change (issue 11 item 12).
    let err = store
        .record(101, &alloc(2), &alloc(4), chrono::Utc::now())
        .unwrap_err();
    assert!(
        err.downcast_ref::<lxc_autoscale::act::backup::BaselineUnreadable>()
            .is_some(),
        "{err:#}"
    );
    assert!(store.list(101).unwrap().is_empty());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), fake);
    let err = format!("{:#}", store.baseline(101).unwrap_err());
    assert!(err.contains("symlinks are refused"), "{err}");
    assert!(err.contains("baseline.json"), "{err}");

    // write_atomic itself refuses a symlink at the destination.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let err = lxc_autoscale::fsutil::write_atomic(&link, b"x", 0o600).unwrap_err();
    assert!(format!("{err:#}").contains("symlink"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), fake);
}

// ---- rollback validates backups --------------------------------------------------------------

#[test]
fn rollback_refuses_tampered_backups_naming_the_file_and_runs_no_pct() {
    let cases = [
        (
            "vmid mismatch",
            r#"{"vmid":102,"timestamp":"2025-01-01T00:00:00Z","before":{"cores":2,"memory_mb":1024,"swap_mb":null},"after":null}"#,
        ),
        (
            "memory 0",
            r#"{"vmid":101,"timestamp":"2025-01-01T00:00:00Z","before":{"cores":2,"memory_mb":0,"swap_mb":null},"after":null}"#,
        ),
        (
            "cores 0",
            r#"{"vmid":101,"timestamp":"2025-01-01T00:00:00Z","before":{"cores":0,"memory_mb":1024,"swap_mb":null},"after":null}"#,
        ),
        ("garbage", "\0\u{1}garbage{{{"),
        (
            "truncated",
            r#"{"vmid":101,"timestamp":"2025-01-01T00:00:00Z","bef"#,
        ),
        ("empty", ""),
    ];
    for (what, text) in cases {
        let host = FakeHost::new(16);
        host.add_container(101, "cores: 4\nmemory: 2048\n");
        let cfg = host.write_config("");
        let dir = host.path("var/backups/101");
        std::fs::create_dir_all(&dir).unwrap();
        let baseline = dir.join("baseline.json");
        std::fs::write(&baseline, text).unwrap();

        let out = host.run(&["rollback", "101", "--config", cfg.to_str().unwrap()]);

        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = stderr(&out);
        assert!(err.contains("rollback failed"), "{what}: {err}");
        assert!(
            err.contains(&baseline.display().to_string()),
            "{what}: {err}"
        );
        assert!(host.pct_calls().is_empty(), "{what}");
        assert_eq!(host.conf(101), "cores: 4\nmemory: 2048\n");
    }
}

#[test]
fn rollback_refuses_an_oversized_backup_file() {
    let host = FakeHost::new(16);
    host.add_container(101, "cores: 4\nmemory: 2048\n");
    let cfg = host.write_config("");
    let dir = host.path("var/backups/101");
    std::fs::create_dir_all(&dir).unwrap();
    let big = format!(
        r#"{{"vmid":101,"timestamp":"2025-01-01T00:00:00Z","before":{{"cores":2,"memory_mb":1024,"swap_mb":null}},"after":null,"pad":"{}"}}"#,
        " ".repeat(100_000)
    );
    std::fs::write(dir.join("baseline.json"), big).unwrap();

    let out = host.run(&["rollback", "101", "--config", cfg.to_str().unwrap()]);

    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("limit is"), "{}", stderr(&out));
    assert!(host.pct_calls().is_empty());
}
