//! The REST API against the real daemon binary on a fake host: real HTTP over 127.0.0.1 and over
//! the Unix socket, a fake `pct` that records every argv.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::FakeHost;
use serde_json::{json, Value};

const TOKEN: &str = "tok-3f9a1c77e2b54d0e9b1d";

/// The fake `pct` for the API's commands. A test fixture only: the daemon never runs a shell.
/// `pct.sleep.<cmd>` holds seconds to sleep; `pct.hold.<cmd>` keeps that command running until
/// the test removes the file; `pct.fail.<cmd>` makes that command fail.
const API_PCT: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "@ROOT@/pct.calls"
if [ -f "@ROOT@/pct.sleep.$1" ]; then sleep "$(cat "@ROOT@/pct.sleep.$1")"; fi
while [ -f "@ROOT@/pct.hold.$1" ]; do sleep 0.05; done
if [ -f "@ROOT@/pct.fail.$1" ]; then
  echo "unable to $1 CT $2: storage does not support it" >&2
  echo "second line" >&2
  exit 5
fi
conf="@ROOT@/pve/lxc/$2.conf"
case "$1" in
  set)
    shift 2
    while [ $# -gt 1 ]; do
      key=${1#-}; val=$2; shift 2
      awk -v k="$key" -v v="$val" '
        BEGIN { m = 1; done = 0 }
        /^\[/ { if (m && !done) { print k ": " v; done = 1 } m = 0 }
        { if (m && index($0, k ": ") == 1) { if (!done) { print k ": " v; done = 1 } next } print }
        END { if (!done) print k ": " v }' "$conf" > "$conf.tmp"
      mv "$conf.tmp" "$conf"
    done ;;
  snapshot) printf '\n[%s]\nsnaptime: 1700000000\n' "$3" >> "$conf" ;;
  clone) printf 'cores: 1\nmemory: 512\ntags: web\n' > "@ROOT@/pve/lxc/$3.conf" ;;
  destroy) rm -f "$conf" ;;
esac
exit 0
"#;

/// Where a test talks to the daemon.
#[derive(Clone)]
enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

struct Reply {
    status: u16,
    head: String,
    body: Value,
}

fn connect(addr: &Addr) -> Box<dyn ReadWrite> {
    match addr {
        Addr::Tcp(a) => Box::new(TcpStream::connect(a).unwrap()),
        Addr::Unix(p) => Box::new(UnixStream::connect(p).unwrap()),
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Sends raw bytes, reads the whole answer (the server closes every connection).
fn raw(addr: &Addr, bytes: &[u8]) -> Reply {
    let mut s = connect(addr);
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    parse_reply(&out)
}

fn parse_reply(out: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Reply {
        status,
        head: head.to_string(),
        body,
    }
}

fn request(
    addr: &Addr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    raw(addr, req.as_bytes())
}

const BEARER: (&str, &str) = ("Authorization", "Bearer tok-3f9a1c77e2b54d0e9b1d");

fn get(addr: &Addr, path: &str) -> Reply {
    request(addr, "GET", path, &[BEARER], None)
}

fn post(addr: &Addr, path: &str, body: Value) -> Reply {
    request(addr, "POST", path, &[BEARER], Some(&body))
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

struct Daemon {
    host: FakeHost,
    child: Child,
    addr: Addr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn pct_calls(&self) -> Vec<String> {
        self.host.pct_calls()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemon wrote: log, events, stderr.
    fn all_output(&mut self) -> String {
        let mut text = self.host.log_text();
        text.push_str(
            &std::fs::read_to_string(self.host.path("var/log/lxc_autoscale.json"))
                .unwrap_or_default(),
        );
        if let Some(mut e) = self.child.stderr.take() {
            let _ = self.child.kill();
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            text.push_str(&s);
        }
        text
    }

    fn task(&self, reply: &Reply) -> Value {
        assert_eq!(reply.status, 202, "{}", reply.body);
        let id = reply.body["data"]["task_id"].as_str().unwrap().to_string();
        let mut last = Value::Null;
        wait_for("the task to end", || {
            last = get(&self.addr, &format!("/tasks/{id}")).body;
            last["data"]["state"] != "running"
        });
        last["data"].clone()
    }
}

/// Two containers that the autoscaler leaves alone (at their minimum, idle): 101 running, 102
/// running with a snapshot; `extra_conf` goes to the config before the `[api]` table.
fn fake_host() -> FakeHost {
    let host = FakeHost::new(4);
    std::fs::write(
        host.path("pct"),
        API_PCT.replace("@ROOT@", &host.root().display().to_string()),
    )
    .unwrap();
    host.add_container(101, "hostname: web1\ncores: 1\nmemory: 512\ntags: web\nrootfs: local:101/vm-101-disk-0.raw,size=8G\n");
    host.add_container(
        102,
        "cores: 1\nmemory: 512\n\n[before]\nsnaptime: 1700000000\n",
    );
    host.seed_previous_cycle(&[]);
    let token = host.path("api.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    host
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the daemon with `[api]` lines on TCP (with the token) or on a Unix socket.
fn start(host: FakeHost, tcp: bool, top: &str, api: &str) -> Daemon {
    start_with(host, tcp, top, api, &[])
}

/// `start` with more command-line arguments (`--dry-run`).
fn start_with(host: FakeHost, tcp: bool, top: &str, api: &str, args: &[&str]) -> Daemon {
    let (listen, addr) = if tcp {
        let a = format!("127.0.0.1:{}", free_port());
        (a.clone(), Addr::Tcp(a))
    } else {
        let p = host.path("run/api.sock");
        (format!("unix:{}", p.display()), Addr::Unix(p))
    };
    let token_line = if tcp {
        format!("token_file = \"{}\"\n", host.path("api.token").display())
    } else {
        String::new()
    };
    let poll = if top.contains("poll_interval") {
        ""
    } else {
        "poll_interval = 3600\n"
    };
    let cfg = host.write_config(&format!(
        "{poll}{top}\n[api]\nlisten = \"{listen}\"\n{token_line}{api}\n"
    ));
    let mut argv = vec!["--config", cfg.to_str().unwrap()];
    argv.extend_from_slice(args);
    let child = host
        .command(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut d = Daemon { host, child, addr };
    wait_for("the first cycle", || {
        if let Some(status) = d.child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = d.child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the daemon exited with {status}: {err}");
        }
        let ok = match &d.addr {
            Addr::Tcp(a) => TcpStream::connect(a).is_ok(),
            Addr::Unix(p) => UnixStream::connect(p).is_ok(),
        };
        ok && request(&d.addr, "GET", "/health", &[], None).body["last_cycle"].is_string()
    });
    d
}

fn tcp_daemon(api: &str) -> Daemon {
    start(fake_host(), true, "", api)
}

#[test]
fn unix_socket_is_0600_and_serves_without_a_token() {
    let d = start(fake_host(), false, "", "");
    let Addr::Unix(p) = &d.addr else {
        unreachable!()
    };
    let meta = std::fs::symlink_metadata(p).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let r = request(&d.addr, "GET", "/containers", &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["containers"].as_array().unwrap().len(), 2);
    let r = request(&d.addr, "GET", "/resource/lxc/status?lxc_id=101", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["vmid"], 101);
    assert_eq!(r.body["data"]["cores"], 1);
    let r = request(&d.addr, "GET", "/resource/vm/status?vm_id=102", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["vmid"], 102);
    let r = request(&d.addr, "GET", "/resource/node/status", &[], None);
    assert_eq!(r.body["data"]["cpus"], 4);
    assert!(d.pct_calls().is_empty());
}

#[test]
fn stale_socket_is_replaced_and_a_regular_file_is_refused() {
    let host = fake_host();
    std::fs::create_dir_all(host.path("run")).unwrap();
    let stale = std::os::unix::net::UnixListener::bind(host.path("run/api.sock")).unwrap();
    drop(stale);
    let d = start(host, false, "", "");
    assert_eq!(request(&d.addr, "GET", "/health", &[], None).status, 200);
    drop(d);

    let host = fake_host();
    std::fs::create_dir_all(host.path("run")).unwrap();
    std::fs::write(host.path("run/api.sock"), "not a socket").unwrap();
    let cfg = host.write_config(&format!(
        "[api]\nlisten = \"unix:{}\"\n",
        host.path("run/api.sock").display()
    ));
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = common::stderr(&out);
    assert!(
        err.contains("api.listen") && err.contains("is not a socket"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("run/api.sock")).unwrap(),
        "not a socket"
    );

    // A symlink, even to a socket, is not followed.
    let host = fake_host();
    std::fs::create_dir_all(host.path("run")).unwrap();
    let target = host.path("elsewhere.sock");
    drop(std::os::unix::net::UnixListener::bind(&target).unwrap());
    std::os::unix::fs::symlink(&target, host.path("run/api.sock")).unwrap();
    let cfg = host.write_config(&format!(
        "[api]\nlisten = \"unix:{}\"\n",
        host.path("run/api.sock").display()
    ));
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(
        err.contains("api.listen") && err.contains("is not a socket"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(host.path("run/api.sock"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(target.exists());
}

#[test]
fn token_file_open_to_others_refuses_start_naming_the_key() {
    let host = fake_host();
    std::fs::set_permissions(
        host.path("api.token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let cfg = host.write_config(&format!(
        "[api]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"{}\"\n",
        free_port(),
        host.path("api.token").display()
    ));
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("api.token_file"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
}

#[test]
fn missing_token_is_401_wrong_403_query_string_401_and_health_is_open() {
    let d = tcp_daemon("");
    assert_eq!(request(&d.addr, "GET", "/health", &[], None).status, 200);
    assert_eq!(
        request(&d.addr, "GET", "/health/check", &[], None).status,
        200
    );
    let r = request(&d.addr, "GET", "/containers", &[], None);
    assert_eq!(r.status, 401);
    assert_eq!(r.body["status"], "error");
    let r = request(
        &d.addr,
        "GET",
        "/containers",
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(r.status, 403);
    let r = request(
        &d.addr,
        "GET",
        &format!("/containers?token={TOKEN}&api_key={TOKEN}"),
        &[],
        None,
    );
    assert_eq!(r.status, 401);
    let body = json!({"lxc_id": 101, "cores": 2});
    assert_eq!(
        request(
            &d.addr,
            "POST",
            "/scale/cores",
            &[("X-API-Key", "nope")],
            Some(&body)
        )
        .status,
        403
    );
    assert_eq!(
        request(&d.addr, "POST", "/scale/cores", &[], Some(&body)).status,
        401
    );
    assert_eq!(
        request(&d.addr, "GET", "/containers", &[("X-API-Key", TOKEN)], None).status,
        200
    );
    assert_eq!(get(&d.addr, "/containers").status, 200);
    assert!(d.pct_calls().is_empty());
}

#[test]
fn eleventh_failure_gets_429_with_retry_after_but_the_right_token_is_served() {
    let d = tcp_daemon("");
    for _ in 0..10 {
        assert_eq!(
            request(
                &d.addr,
                "GET",
                "/containers",
                &[("X-API-Key", "wrong")],
                None
            )
            .status,
            403
        );
    }
    let r = request(
        &d.addr,
        "GET",
        "/containers",
        &[("X-API-Key", "wrong")],
        None,
    );
    assert_eq!(r.status, 429);
    let secs = r.body["retry_after_seconds"].as_u64().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    assert!(
        r.head.contains(&format!("Retry-After: {secs}")),
        "{}",
        r.head
    );
    assert_eq!(
        request(&d.addr, "GET", "/containers", &[], None).status,
        429
    );
    assert_eq!(get(&d.addr, "/containers").status, 200);
}

#[test]
fn scale_cores_and_ram_run_the_exact_argv_with_a_backup_and_the_caller_in_the_event() {
    let d = tcp_daemon("");
    let r = post(&d.addr, "/scale/cores", json!({"lxc_id": 101, "cores": 3}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["cores"], json!({"from": 1, "to": 3}));
    let r = post(&d.addr, "/scale/ram", json!({"vm_id": 101, "memory": 1024}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.pct_calls(), ["set 101 -cores 3", "set 101 -memory 1024"]);
    assert!(d.host.conf(101).contains("cores: 3\n") && d.host.conf(101).contains("memory: 1024\n"));
    let backups = d.host.backup_files(101);
    assert_eq!(backups.len(), 3, "{backups:?}");
    assert!(
        backups.contains(&"baseline.json".to_string()),
        "{backups:?}"
    );
    let events = std::fs::read_to_string(d.host.path("var/log/lxc_autoscale.json")).unwrap();
    assert!(events.contains("cores 1->3 by 127.0.0.1"), "{events}");
    assert!(
        events.contains("memory 512->1024 MB by 127.0.0.1"),
        "{events}"
    );
}

#[test]
fn scale_over_the_unix_socket_records_the_uid() {
    let d = start(fake_host(), false, "", "");
    let r = request(
        &d.addr,
        "POST",
        "/scale/cores",
        &[],
        Some(&json!({"container_id": 101, "cores": 2})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.pct_calls(), ["set 101 -cores 2"]);
    let uid = nix::unistd::geteuid().as_raw();
    let events = std::fs::read_to_string(d.host.path("var/log/lxc_autoscale.json")).unwrap();
    assert!(
        events.contains(&format!("cores 1->2 by uid {uid}")),
        "{events}"
    );
}

#[test]
fn memory_below_the_working_set_is_409_without_pct() {
    let host = fake_host();
    host.set_memory(101, 400, 0);
    let d = start(host, true, "", "");
    let r = post(&d.addr, "/scale/ram", json!({"lxc_id": 101, "memory": 300}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "memory");
    assert!(d.pct_calls().is_empty());
}

#[test]
fn memory_below_the_working_set_is_409_even_above_used_memory() {
    let host = fake_host();
    // 400 MB used, 1000 MB of page cache of which half inactive: working set 900 MB.
    host.set_memory(101, 400, 1000);
    let d = start(host, true, "", "");
    let r = post(&d.addr, "/scale/ram", json!({"lxc_id": 101, "memory": 800}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "memory");
    assert_eq!(
        r.body["errors"][0]["message"],
        "800 MB is below what container 101 needs (used 400 MB, working set 900 MB) plus a margin: at least 990 MB"
    );
    assert!(d.pct_calls().is_empty());
    let r = post(&d.addr, "/scale/ram", json!({"lxc_id": 101, "memory": 990}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.pct_calls(), ["set 101 -memory 990"]);
}

#[test]
fn snapshot_create_and_list() {
    let d = tcp_daemon("");
    let r = post(
        &d.addr,
        "/snapshot/create",
        json!({"lxc_id": 101, "snapshot_name": "pre-upgrade", "description": "before 8.2"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &d.addr,
        "/snapshot/create",
        json!({"lxc_id": 102, "snapshot_name": "s2"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        d.pct_calls(),
        [
            "snapshot 101 pre-upgrade -description before 8.2",
            "snapshot 102 s2"
        ]
    );
    let r = get(&d.addr, "/snapshot/list?lxc_id=102");
    let names: Vec<&str> = r.body["data"]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before", "s2"]);
    assert_eq!(
        r.body["data"]["snapshots"][0],
        json!({"name": "before", "snaptime": 1_700_000_000, "description": "", "parent": null})
    );
    let r = get(&d.addr, "/resource/vm/config?vm_id=101");
    assert_eq!(
        r.body["data"],
        json!({"lxc_id": 101, "hostname": "web1", "cores": 1, "cpulimit": null, "memory": 512,
            "swap": null, "rootfs_size": "8G", "tags": ["web"], "lock": null, "protection": false})
    );
    assert_eq!(get(&d.addr, "/resource/lxc/config?lxc_id=101").body, r.body);
}

/// `METHOD PATH CODE BODY`: each request is refused with exactly that code.
const REFUSALS: &str = r#"
POST /scale/cores 422 {"lxc_id": 99, "cores": 2}
POST /scale/cores 400 {"lxc_id": "101; rm -rf /", "cores": 2}
POST /scale/cores 422 {"lxc_id": 101, "cores": 5}
POST /scale/cores 400 {"lxc_id": 101, "cores": "2"}
POST /scale/ram 422 {"lxc_id": 101, "memory": 8}
POST /scale/cores 404 {"lxc_id": 999, "cores": 2}
POST /scale/cores 409 {"lxc_id": 103, "cores": 2}
POST /scale/ram 409 {"lxc_id": 103, "memory": 1024}
POST /snapshot/create 409 {"lxc_id": 103, "snapshot_name": "s1"}
POST /snapshot/create 422 {"lxc_id": 101, "snapshot_name": "-purge"}
POST /snapshot/create 422 {"lxc_id": 101, "snapshot_name": "vzdump"}
POST /snapshot/create 409 {"lxc_id": 102, "snapshot_name": "before"}
POST /snapshot/create 422 {"lxc_id": 101, "snapshot_name": "ok1", "description": "-x"}
POST /scale/storage/increase 403 {"lxc_id": 101, "disk_size": 5}
POST /snapshot/rollback 403 {"lxc_id": 102, "snapshot_name": "before", "confirm": 102}
POST /clone/create 403 {"lxc_id": 101, "new_lxc_id": 201, "new_lxc_name": "web2"}
DELETE /clone/delete 409 {"lxc_id": 104, "confirm": 104}
DELETE /clone/delete 409 {"lxc_id": 105, "confirm": 105}
DELETE /clone/delete 409 {"lxc_id": 106, "confirm": 106}
DELETE /clone/delete 422 {"lxc_id": 104, "confirm": 101}
DELETE /scale/cores 405 {"lxc_id": 101, "cores": 2}
POST /nowhere 404 {}
"#;

/// 103 locked, 104 untagged, 105 a protected clone, 106 a locked clone; destroy allowed.
fn refusal_host() -> Daemon {
    let host = fake_host();
    host.add_container(103, "cores: 1\nmemory: 512\nlock: backup\n");
    host.add_container(104, "cores: 1\nmemory: 512\n");
    let clone = "cores: 1\nmemory: 512\ntags: autoscale-clone\n";
    host.add_container(105, &format!("{clone}protection: 1\n"));
    host.add_container(106, &format!("{clone}lock: snapshot\n"));
    host.seed_previous_cycle(&[]);
    start(host, true, "", "allow_destroy = true\n")
}

#[test]
fn refusals_have_their_exact_status_code_and_never_reach_pct() {
    let d = refusal_host();
    for line in REFUSALS.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(4, ' ');
        let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
        let code: u16 = parts.next().unwrap().parse().unwrap();
        let body: Value = serde_json::from_str(parts.next().unwrap()).unwrap();
        let r = request(&d.addr, method, path, &[BEARER], Some(&body));
        assert_eq!(r.status, code, "{line}: {}", r.body);
        assert_eq!(r.body["status"], "error", "{line}");
        if code == 403 {
            let key = match path {
                "/scale/storage/increase" => "api.allow_storage",
                "/snapshot/rollback" => "api.allow_snapshot_rollback",
                _ => "api.allow_clone",
            };
            let msg = r.body["message"].as_str().unwrap();
            assert!(msg.contains(key), "{line}: {msg}");
        }
    }
    let r = post(
        &d.addr,
        "/snapshot/create",
        json!({"lxc_id": 5, "snapshot_name": "-purge"}),
    );
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["lxc_id", "snapshot_name"]);
    let r = post(
        &d.addr,
        "/scale/storage/increase",
        json!({"lxc_id": 101, "disk_size": 5}),
    );
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("api.allow_storage"),
        "{}",
        r.body
    );
    assert_eq!(get(&d.addr, "/resource/lxc/status?lxc_id=99").status, 422);
    assert_eq!(
        get(&d.addr, "/resource/lxc/status?lxc_id=101;id").status,
        400
    );
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
}

#[test]
fn malformed_json_wrong_type_a_10_mb_body_and_disabled_destroy_are_400_415_413_403_without_pct() {
    let d = tcp_daemon("");
    let a = &d.addr;
    let head = |ct: &str, len: usize| {
        format!("POST /scale/cores HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n\r\n")
    };
    let bad_json = head("application/json", 4) + "{\"lx";
    assert_eq!(raw(a, bad_json.as_bytes()).status, 400);
    let not_object = head("application/json", 5) + "[101]";
    assert_eq!(raw(a, not_object.as_bytes()).status, 400);
    let text = head("text/plain", 2) + "{}";
    assert_eq!(raw(a, text.as_bytes()).status, 415);
    let destroy = json!({"lxc_id": 101, "confirm": 101});
    let r = request(a, "DELETE", "/clone/delete", &[BEARER], Some(&destroy));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("api.allow_destroy"));
    assert_eq!(huge_body(a).status, 413);
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
}

/// A 10 MB body: the server answers 413 without reading it all into memory.
fn huge_body(a: &Addr) -> Reply {
    let mut s = connect(a);
    let head = format!("POST /scale/cores HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", 10 << 20);
    s.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..160 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_reply(&out)
}

/// Every `allow_*` on; 105 is a clone; id 300 is taken in the cluster list; 102 has backups.
fn task_daemon() -> Daemon {
    let host = fake_host();
    host.add_container(105, "cores: 1\nmemory: 512\ntags: autoscale-clone\n");
    host.seed_previous_cycle(&[]);
    let vmlist = r#"{"version":1,"ids":{"300":{"node":"b","type":"lxc","version":1}}}"#;
    std::fs::write(host.path("pve/.vmlist"), vmlist).unwrap();
    let top = format!("pve_vmlist = \"{}\"", host.path("pve/.vmlist").display());
    let api = "allow_storage = true\nallow_snapshot_rollback = true\nallow_clone = true\nallow_destroy = true\n";
    std::fs::create_dir_all(host.path("var/backups/102")).unwrap();
    std::fs::write(host.path("var/backups/102/baseline.json"), "{}").unwrap();
    start(host, true, &top, api)
}

/// The backups of `vmid` were renamed `<vmid>.before-rollback-<UTC>`.
/// (The loop records a finished task just after its state turns `ok`: waited for.)
fn assert_backups_set_aside(d: &Daemon, vmid: u32) {
    let prefix = format!("{vmid}.before-rollback-");
    wait_for("the backups to be set aside", || {
        let names: Vec<String> = std::fs::read_dir(d.host.path("var/backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.iter().any(|n| n.starts_with(&prefix))
    });
    assert!(!d.host.path(&format!("var/backups/{vmid}")).exists());
}

#[test]
fn tasks_run_the_exact_argv_and_report_their_state() {
    let d = task_daemon();
    let a = &d.addr;
    let t = d.task(&post(
        a,
        "/scale/storage/increase",
        json!({"lxc_id": 101, "disk_size": 5}),
    ));
    assert_eq!(t["state"], "ok", "{t}");
    let t = d.task(&post(
        a,
        "/snapshot/rollback",
        json!({"lxc_id": 102, "snapshot_name": "before", "confirm": 102}),
    ));
    assert_eq!(t["state"], "ok", "{t}");
    // The conf is the snapshot's now: the next change starts a new baseline.
    assert_backups_set_aside(&d, 102);
    assert_eq!(
        post(
            a,
            "/clone/create",
            json!({"lxc_id": 101, "new_vm_id": 300, "hostname": "web2"})
        )
        .status,
        409
    );
    assert_eq!(
        post(
            a,
            "/clone/create",
            json!({"lxc_id": 101, "new_lxc_id": 102, "new_lxc_name": "web2"})
        )
        .status,
        409
    );
    assert_eq!(
        post(
            a,
            "/clone/create",
            json!({"lxc_id": 101, "new_lxc_id": 201, "new_lxc_name": "-web"})
        )
        .status,
        422
    );
    let t = d.task(&post(
        a,
        "/clone/create",
        json!({"lxc_id": 101, "new_vm_id": 201, "new_vm_name": "web2"}),
    ));
    assert_eq!(t["state"], "ok", "{t}");
    let t = d.task(&request(
        a,
        "DELETE",
        "/clone/delete",
        &[BEARER],
        Some(&json!({"lxc_id": 105, "confirm": 105})),
    ));
    assert_eq!(t["state"], "ok", "{t}");
    assert_eq!(
        d.pct_calls(),
        [
            "resize 101 rootfs +5G",
            "rollback 102 before",
            "snapshot 101 autoscale-clone-201",
            "clone 101 201 -hostname web2 -snapname autoscale-clone-201",
            "delsnapshot 101 autoscale-clone-201",
            "set 201 -tags web;autoscale-clone",
            "stop 105",
            "destroy 105 -purge 1",
        ]
    );
    wait_for("the events of the tasks, naming the caller", || {
        let events = std::fs::read_to_string(d.host.path("var/log/lxc_autoscale.json")).unwrap();
        events.contains("clone by 127.0.0.1") && events.contains("destroy by 127.0.0.1")
    });
}

#[test]
fn a_failed_task_says_pct_exit_status_and_stderr_and_the_clone_snapshot_is_still_removed() {
    let host = fake_host();
    std::fs::write(host.path("pct.fail.clone"), "").unwrap();
    let d = start(host, true, "", "allow_clone = true\n");
    let t = d.task(&post(
        &d.addr,
        "/clone/create",
        json!({"lxc_id": 101, "new_lxc_id": 201, "new_lxc_name": "web2"}),
    ));
    assert_eq!(t["state"], "failed");
    let msg = t["message"].as_str().unwrap();
    assert!(
        msg.contains("exit status 5") && msg.contains("unable to clone CT 101"),
        "{msg}"
    );
    assert_eq!(
        d.pct_calls(),
        [
            "snapshot 101 autoscale-clone-201",
            "clone 101 201 -hostname web2 -snapname autoscale-clone-201",
            "delsnapshot 101 autoscale-clone-201",
        ]
    );
}

#[test]
fn routes_and_openapi_list_every_route() {
    let d = tcp_daemon("");
    let routes = get(&d.addr, "/routes").body["data"]
        .as_array()
        .unwrap()
        .clone();
    assert!(routes.len() >= 20);
    let doc = get(&d.addr, "/openapi.json").body;
    assert_eq!(doc["openapi"], "3.0.3");
    for r in &routes {
        let (m, p) = (
            r["method"].as_str().unwrap().to_ascii_lowercase(),
            r["path"].as_str().unwrap(),
        );
        assert!(
            doc["paths"][p][&m].is_object(),
            "{m} {p} missing from openapi.json"
        );
    }
    let t = get(&d.addr, "/metrics");
    assert_eq!(t.status, 200);
    assert!(
        t.body.as_str().unwrap().contains("lxc_autoscale_"),
        "{:?}",
        t.body
    );
}

#[test]
fn metrics_carries_the_history_figures_once_scraped_where_no_file_wants_them() {
    let host = fake_host();
    std::fs::write(host.cgroup(101).join("pids.current"), "7\n").unwrap();
    let d = start(host, false, "metrics_file = \"\"\npoll_interval = 1\n", "");
    let scrape = || get(&d.addr, "/metrics").body.as_str().unwrap().to_string();
    let pids = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("lxc_autoscale_container_pids{vmid=\"101\"") && l.ends_with(" 7")
        })
    };
    // No cycle before the first scrape read the history-only files.
    let first = scrape();
    assert!(first.contains("lxc_autoscale_container_cores"), "{first}");
    assert!(!pids(&first), "{first}");
    // The cycles after it do, and the answers carry their figures.
    wait_for("the pids figure in GET /metrics", || pids(&scrape()));
}

/// More silent connections than the workers (16) and their queue (128) together, none of them
/// authenticated: each used to hold a worker or a queue slot until the 10 s request deadline, and
/// a request behind them that needs a worker got 503. `evicts`: the waiting room holds them (on
/// the Unix socket; on TCP the kernel keeps a silent connection until its first bytes come).
fn silent_connections_case<S: Read + Write>(d: &Daemon, connect: impl Fn() -> S, evicts: bool) {
    let mut silent: Vec<S> = (0..16 + 128 + 8).map(|_| connect()).collect();
    let r = post(&d.addr, "/scale/cores", json!({"lxc_id": 101, "cores": 2}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.pct_calls(), ["set 101 -cores 2"]);
    let mut out = Vec::new();
    if evicts {
        // The waiting room keeps the newest 128: the one that waited longest was closed
        // unanswered.
        silent[0].read_to_end(&mut out).unwrap();
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    }
    // One still waiting sends its head a byte at a time and is answered in full.
    let last = silent.last_mut().unwrap();
    let head =
        format!("GET /resource/lxc/status?lxc_id=102 HTTP/1.1\r\nX-API-Key: {TOKEN}\r\n\r\n");
    for byte in head.as_bytes() {
        last.write_all(std::slice::from_ref(byte)).unwrap();
    }
    last.read_to_end(&mut out).unwrap();
    let r = parse_reply(&out);
    assert_eq!(
        (r.status, r.body["data"]["vmid"].as_u64()),
        (200, Some(102))
    );
}

#[test]
fn silent_connections_hold_no_worker_and_a_change_behind_them_is_answered() {
    let d = tcp_daemon("");
    let Addr::Tcp(a) = d.addr.clone() else {
        unreachable!()
    };
    let connect = || {
        let s = TcpStream::connect(&a).unwrap();
        s.set_nodelay(true).unwrap();
        s
    };
    silent_connections_case(&d, connect, false);
    let d = start(fake_host(), false, "", "");
    let Addr::Unix(p) = d.addr.clone() else {
        unreachable!()
    };
    silent_connections_case(&d, || UnixStream::connect(&p).unwrap(), true);
}

#[test]
fn a_slow_client_does_not_block_others_and_fifty_concurrent_clients_are_answered() {
    let d = tcp_daemon("");
    let Addr::Tcp(a) = d.addr.clone() else {
        unreachable!()
    };
    // Holds a connection open with half a request, and another that has sent nothing yet.
    let mut slow = TcpStream::connect(&a).unwrap();
    slow.write_all(b"GET /containers HTTP/1.1\r\nAuthorization: Bea")
        .unwrap();
    let mut silent = TcpStream::connect(&a).unwrap();
    assert_eq!(get(&d.addr, "/resource/lxc/status?lxc_id=102").status, 200);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let addr = d.addr.clone();
            std::thread::spawn(move || {
                let vmid: u32 = 101 + (i % 2);
                let r = get(&addr, &format!("/resource/lxc/status?lxc_id={vmid}"));
                (vmid, r.status, r.body["data"]["vmid"].as_u64())
            })
        })
        .collect();
    for h in handles {
        let (vmid, status, got) = h.join().unwrap();
        assert_eq!((status, got), (200, Some(u64::from(vmid))));
    }
    // Both finish their requests after the others and are answered in full: what came with the
    // connection is kept for the worker that reads the rest.
    slow.write_all(format!("rer {TOKEN}\r\n\r\n").as_bytes())
        .unwrap();
    silent
        .write_all(
            format!("GET /resource/lxc/status?lxc_id=101 HTTP/1.1\r\nX-API-Key: {TOKEN}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let answer = |s: &mut TcpStream| {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        parse_reply(&out)
    };
    let r = answer(&mut slow);
    let vmids: Vec<u64> = r.body["data"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.body))
        .iter()
        .filter_map(|c| c["vmid"].as_u64())
        .collect();
    assert_eq!((r.status, vmids), (200, vec![101, 102]));
    let r = answer(&mut silent);
    assert_eq!(
        (r.status, r.body["data"]["vmid"].as_u64()),
        (200, Some(101))
    );
}

#[test]
fn sigterm_during_a_change_lets_it_finish_answers_503_while_tasks_drain_then_removes_the_socket() {
    let host = fake_host();
    std::fs::write(host.path("pct.sleep.set"), "2").unwrap();
    std::fs::write(host.path("pct.sleep.resize"), "6").unwrap();
    let d = start(host, false, "", "allow_storage = true\n");
    let mut d = d;
    let a = d.addr.clone();
    let task = request(
        &a,
        "POST",
        "/scale/storage/increase",
        &[],
        Some(&json!({"lxc_id": 102, "disk_size": 1})),
    );
    assert_eq!(task.status, 202);
    wait_for("resize to start", || {
        d.pct_calls().iter().any(|c| c.starts_with("resize"))
    });
    let a2 = a.clone();
    let change = std::thread::spawn(move || {
        request(
            &a2,
            "POST",
            "/scale/cores",
            &[],
            Some(&json!({"lxc_id": 101, "cores": 2})),
        )
    });
    wait_for("pct set to start", || {
        d.pct_calls().iter().any(|c| c.starts_with("set"))
    });
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let r = change.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(d.host.conf(101).contains("cores: 2\n"));
    let mut saw_503 = false;
    wait_for("503 while draining", || {
        match &a {
            Addr::Unix(p) if UnixStream::connect(p).is_ok() => {
                saw_503 = request(&a, "GET", "/health", &[], None).status == 503;
            }
            _ => {}
        }
        saw_503
    });
    assert_eq!(d.wait_exit().code(), Some(0));
    assert_eq!(d.pct_calls(), ["resize 102 rootfs +1G", "set 101 -cores 2"]);
    let Addr::Unix(p) = &a else { unreachable!() };
    assert!(!p.exists(), "socket left behind");
    assert!(
        d.host.log_text().contains("api task done"),
        "{}",
        d.host.log_text()
    );
}

#[test]
fn recommend_mode_never_runs_pct_on_its_own_but_shows_the_plan() {
    let host = fake_host();
    host.add_container(110, "cores: 2\nmemory: 2048\n");
    host.set_memory(110, 1000, 0);
    host.seed_previous_cycle(&[(110, 95.0, 2)]);
    let d = start(host, true, "scaling = \"recommend\"", "");
    let r = get(&d.addr, "/containers");
    let changes = r.body["data"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{}", r.body);
    assert_eq!(changes[0]["vmid"], 110);
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
    let metrics = get(&d.addr, "/metrics").body;
    let planned = format!(
        "lxc_autoscale_container_planned_cores{{vmid=\"110\"}} {}",
        changes[0]["cores"]["to"]
    );
    assert!(
        metrics.as_str().unwrap().contains(&planned),
        "{planned} not in {metrics}"
    );
    assert_eq!(
        post(&d.addr, "/scale/cores", json!({"lxc_id": 110, "cores": 3})).status,
        200
    );
    assert_eq!(d.pct_calls(), ["set 110 -cores 3"]);
}

#[test]
fn the_token_never_appears_in_logs_events_errors_or_notifications() {
    let (url, rx) = common::gotify_listener(200);
    let host = fake_host();
    let mut d = start(
        host,
        true,
        &format!("gotify_url = \"{url}\"\ngotify_token = \"gtok\""),
        "",
    );
    let a = d.addr.clone();
    request(&a, "GET", &format!("/containers?token={TOKEN}"), &[], None);
    request(
        &a,
        "GET",
        "/containers",
        &[("Authorization", &format!("Bearer {TOKEN}x"))],
        None,
    );
    let r = post(&a, "/scale/cores", json!({"lxc_id": 101, "cores": 2}));
    assert_eq!(r.status, 200);
    std::fs::write(d.host.path("pct.fail.set"), "").unwrap();
    let r = post(&a, "/scale/cores", json!({"lxc_id": 101, "cores": 3}));
    assert_eq!(r.status, 500);
    assert!(!r.body.to_string().contains(TOKEN));
    let mut sent = String::new();
    while let Ok(m) = rx.recv_timeout(Duration::from_secs(5)) {
        sent.push_str(&m.head);
        sent.push_str(&m.body);
        if sent.contains("failed") {
            break;
        }
    }
    assert!(sent.contains("changed through the API"), "{sent}");
    let all = d.all_output() + &sent;
    assert!(!all.contains(TOKEN), "token leaked");
}

/// The `timestamp` (seconds since the epoch) of the last event of `action` on `vmid`.
fn event_secs(d: &Daemon, vmid: u32, action: &str) -> Option<i64> {
    let text =
        std::fs::read_to_string(d.host.path("var/log/lxc_autoscale.json")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| {
            (e["container_id"] == vmid && e["action"] == action).then(|| {
                chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap())
                    .unwrap()
                    .timestamp()
            })
        })
        .next_back()
}

#[test]
fn an_api_hold_keeps_the_autoscaler_off_the_change_until_it_ends() {
    // 101 is idle: without the hold the next cycle would take the added cores back.
    let d = start(fake_host(), true, "poll_interval = 1", "");
    let r = post(
        &d.addr,
        "/scale/cores",
        json!({"lxc_id": 101, "cores": 3, "hold_seconds": 3}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let until_secs = r.body["data"]["hold_until_usec"].as_i64().unwrap() / 1_000_000;
    wait_for("a cycle that skips the held cores", || {
        d.host.log_text().contains("cpu on hold until")
            && d.host.log_text().contains("by 127.0.0.1: cores unchanged")
    });
    wait_for("the autoscaler to scale 101 again", || {
        let events =
            std::fs::read_to_string(d.host.path("var/log/lxc_autoscale.json")).unwrap_or_default();
        events.matches("\"action\":\"scale\"").count() >= 2
    });
    let calls = d.pct_calls();
    assert_eq!(calls[0], "set 101 -cores 3");
    assert!(
        calls[1].starts_with("set 101 -cores ") && calls[1] != calls[0],
        "{calls:?}"
    );
    let scaled_at = event_secs(&d, 101, "scale").expect("a scale event");
    let api_at = event_secs(&d, 101, "api").expect("an api event");
    assert!(
        api_at <= until_secs && scaled_at >= until_secs,
        "api {api_at}, hold until {until_secs}, scaled {scaled_at}"
    );
}

#[test]
fn a_change_made_outside_the_daemon_is_held_and_shown() {
    let d = start(
        fake_host(),
        true,
        "poll_interval = 1",
        "manual_hold = 3600\n",
    );
    wait_for("a cycle that saw the conf", || {
        d.host.log_text().matches("cycle done").count() >= 2
    });
    let conf = d.host.conf(101).replace("cores: 1\n", "cores: 3\n");
    std::fs::write(d.host.path("pve/lxc/101.conf"), conf).unwrap();
    wait_for("the hold on the hand-made change", || {
        d.host
            .log_text()
            .contains("changed outside the daemon: on hold")
            && d.host
                .log_text()
                .contains("by outside the daemon: cores unchanged")
    });
    // The state file (which `status` reads) is written at the end of the cycle that logged the
    // hold: wait for a cycle that ended after the hold was seen.
    let done = d.host.log_text().matches("cycle done").count();
    wait_for("a cycle that saved the hold", || {
        d.host.log_text().matches("cycle done").count() > done
    });
    let r = get(&d.addr, "/containers");
    assert_eq!(
        r.body["data"]["daemon"]["101"]["hold"]["by"], "outside the daemon",
        "{}",
        r.body
    );
    assert!(r.body["data"]["daemon"]["101"]["hold"]["cores_until"].is_string());
    let cfg = d.host.path("lxc_autoscale.conf");
    let status = d.host.run(&["status", "--config", cfg.to_str().unwrap()]);
    assert!(
        common::stdout(&status).contains("on hold until"),
        "{}",
        common::stdout(&status)
    );
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
}

#[test]
fn metrics_is_byte_for_byte_the_textfile_of_the_same_cycle_with_the_anomaly_gauges() {
    let host = fake_host();
    let prom = host.path("var/lxc_autoscale.prom");
    let d = start(
        host,
        true,
        &format!("prometheus_textfile = \"{}\"", prom.display()),
        "",
    );
    // poll_interval is an hour: the one cycle so far wrote the file and published the view.
    let file = std::fs::read_to_string(&prom).unwrap();
    let r = get(&d.addr, "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.head.contains("Content-Type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    let served = r.body.as_str().unwrap();
    assert_eq!(served, file);
    for line in [
        "# TYPE lxc_autoscale_container_anomaly gauge",
        r#"lxc_autoscale_container_anomaly{vmid="101",name="web1",tier="",resource="cpu"} 0"#,
        r#"lxc_autoscale_container_anomaly{vmid="102",name="",tier="",resource="memory"} 0"#,
        "# TYPE lxc_autoscale_container_planned_cores gauge",
        "# TYPE lxc_autoscale_scaling_actions_total counter",
        r#"lxc_autoscale_container_cores{vmid="101",name="web1",tier=""} 1"#,
    ] {
        assert!(served.lines().any(|l| l == line), "{line} not in\n{served}");
    }
}

/// Sends a head announcing `Expect: 100-continue` and a `len`-byte body, and reads the server's
/// first answer (up to its blank line) without sending any of the body.
fn expect_continue(addr: &Addr, head: &str) -> (String, Box<dyn ReadWrite>) {
    let mut s = connect(addr);
    s.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap() == 0 {
            break;
        }
        got.push(byte[0]);
    }
    (String::from_utf8(got).unwrap(), s)
}

fn continue_head(path: &str, auth: &str, ct: &str, len: usize) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {ct}\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n")
}

#[test]
fn expect_100_continue_is_answered_before_the_body_over_tcp_and_the_unix_socket() {
    for tcp in [true, false] {
        let d = start(fake_host(), tcp, "", "");
        // Above 1 KiB, where curl sends `Expect: 100-continue` and waits.
        let body = format!("{}{}", json!({"lxc_id": 101, "cores": 2}), " ".repeat(2000));
        let auth = format!("Authorization: Bearer {TOKEN}\r\n");
        let head = continue_head("/scale/cores", &auth, "application/json", body.len());
        let (interim, mut s) = expect_continue(&d.addr, &head);
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        assert!(d.pct_calls().is_empty());
        s.write_all(body.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let r = parse_reply(&out);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["data"]["cores"], json!({"from": 1, "to": 2}));
        assert_eq!(d.pct_calls(), ["set 101 -cores 2"]);
    }
}

#[test]
fn expect_100_continue_refused_from_the_head_gets_the_final_status_without_sending_the_body() {
    let d = tcp_daemon("");
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let json = "application/json";
    let cases = [
        (continue_head("/scale/cores", "", json, 2000), 401),
        (
            continue_head("/scale/cores", "X-API-Key: wrong\r\n", json, 2000),
            403,
        ),
        (
            continue_head("/scale/cores", &auth, "text/plain", 2000),
            415,
        ),
        (continue_head("/scale/cores", &auth, json, 10 << 20), 413),
        (continue_head("/nowhere", &auth, json, 2000), 404),
        (continue_head("/containers", &auth, json, 2000), 405),
    ];
    for (head, code) in cases {
        // Nothing of the body is ever sent: the answer must come from the head alone.
        let (first, mut s) = expect_continue(&d.addr, &head);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        let mut whole = first.into_bytes();
        whole.extend_from_slice(&rest);
        let r = parse_reply(&whole);
        assert_eq!(r.status, code, "{head}: {}", r.body);
        assert_eq!(r.body["status"], "error", "{head}");
        assert!(!r.head.contains("100 Continue"), "{}", r.head);
    }
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
}

/// check-config and the daemon on the same config: check-config exits 1 and the daemon 2, and
/// both print the same error, which must be `expected` or (for config rules) hold it.
fn refused_alike(host: &FakeHost, api: &str, expected: &str) {
    let cfg = host.write_config(&format!("[api]\n{api}"));
    let cfg = cfg.to_str().unwrap();
    let check = host.run(&["check-config", "--config", cfg]);
    assert_eq!(
        check.status.code(),
        Some(1),
        "{api}: {}",
        common::stdout(&check)
    );
    let err = common::stderr(&check);
    let msg = err
        .strip_prefix("lxc_autoscale: error: ")
        .and_then(|m| m.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{api}: {err}"));
    assert!(msg == expected || msg.contains(expected), "{api}: {msg}");
    let daemon = host.run(&["--once", "--config", cfg]);
    assert_eq!(daemon.status.code(), Some(2), "{api}");
    let derr = common::stderr(&daemon);
    assert!(
        derr.contains(&format!("lxc_autoscale: error: {msg}\n")),
        "{api}: daemon said {derr}, check-config {msg}"
    );
    assert!(!err.contains(TOKEN) && !derr.contains(TOKEN), "{api}");
}

#[test]
fn check_config_refuses_every_token_file_the_daemon_refuses_naming_api_token_file() {
    let host = fake_host();
    let tcp = format!("listen = \"127.0.0.1:{}\"\n", free_port());
    let at = |name: &str| {
        let p = host.path(name);
        (
            p.display().to_string(),
            format!("{tcp}token_file = \"{}\"\n", p.display()),
        )
    };
    let (p, api) = at("api.token");
    let check = host.run(&[
        "check-config",
        "--config",
        host.write_config(&format!("[api]\n{api}"))
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(check.status.code(), Some(0), "{}", common::stderr(&check));
    let out = common::stdout(&check);
    assert!(
        out.contains("api on 127.0.0.1:")
            && out.contains(&format!("(token from {p}), allowed: none")),
        "{out}"
    );
    assert!(!out.contains(TOKEN), "{out}");

    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    refused_alike(
        &host,
        &api,
        &format!("api.token_file: {p} must have mode 0600 (it has 640); run: chmod 600 {p}"),
    );

    let (p, api) = at("other.token");
    std::fs::write(&p, TOKEN).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let euid = nix::unistd::geteuid().as_raw();
    let (p, api, owner) = if euid == 0 {
        nix::unistd::chown(p.as_str(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        (p, api, 65534)
    } else {
        // Not root: a file root owns is owned by someone else.
        let p = "/etc/hostname".to_string();
        let api = format!("{tcp}token_file = \"{p}\"\n");
        (p, api, 0)
    };
    refused_alike(
        &host,
        &api,
        &format!("api.token_file: {p} must be owned by uid {euid} (it is owned by uid {owner})"),
    );

    let (p, api) = at("empty.token");
    std::fs::write(&p, "\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused_alike(&host, &api, &format!("api.token_file: {p} is empty"));

    let (p, api) = at("missing.token");
    refused_alike(
        &host,
        &api,
        &format!("api.token_file: cannot read {p}: No such file or directory (os error 2)"),
    );

    let (p, api) = at("a-directory");
    std::fs::create_dir(&p).unwrap();
    refused_alike(
        &host,
        &api,
        &format!("api.token_file: {p} is not a regular file"),
    );

    refused_alike(&host, &tcp, "key `api.token_file`");
    let (_, api) = at("api.token");
    std::fs::set_permissions(
        host.path("api.token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let remote = api.replace("127.0.0.1", "0.0.0.0");
    refused_alike(&host, &remote, "key `api.allow_remote`");
    assert!(host.pct_calls().is_empty());
}

#[test]
fn the_autoscaler_leaves_a_container_alone_while_a_task_on_it_runs() {
    let host = fake_host();
    let held = host.path("pct.hold.resize");
    std::fs::write(&held, "").unwrap();
    let d = start(host, true, "poll_interval = 1", "allow_storage = true\n");
    let r = post(
        &d.addr,
        "/scale/storage/increase",
        json!({"lxc_id": 101, "disk_size": 2}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["data"]["task_id"].as_str().unwrap().to_string();
    // 101 now needs memory: a cycle would grow it, but the task holds the container.
    d.host.set_memory(101, 500, 0);
    wait_for("a cycle that kept off 101 because of the task", || {
        d.host
            .log_text()
            .contains("an api task on this container is running: not changed this cycle")
    });
    let task = |d: &Daemon| get(&d.addr, &format!("/tasks/{id}")).body["data"]["state"].clone();
    assert_eq!(task(&d), "running");
    assert_eq!(d.pct_calls(), ["resize 101 rootfs +2G"]);
    std::fs::remove_file(&held).unwrap();
    wait_for("the task to end and the autoscaler to grow 101", || {
        d.pct_calls().len() >= 2
    });
    assert_eq!(task(&d), "ok");
    let calls = d.pct_calls();
    assert_eq!(calls[0], "resize 101 rootfs +2G");
    assert!(calls[1].starts_with("set 101 -memory "), "{calls:?}");
}

/// The confs of two stopped containers (no cgroup): 120, a source to clone, and 121, a clone the
/// API may destroy.
fn write_clone_pair(host: &FakeHost) {
    std::fs::write(host.path("pve/lxc/120.conf"), CLONE_SOURCE_CONF).unwrap();
    std::fs::write(host.path("pve/lxc/121.conf"), CLONE_CONF).unwrap();
}

const CLONE_SOURCE_CONF: &str = "hostname: db\ncores: 1\nmemory: 512\ntags: db\n";
const CLONE_CONF: &str = "cores: 1\nmemory: 512\ntags: autoscale-clone\n";

#[test]
fn a_stopped_source_is_cloned_directly_and_a_stopped_clone_destroyed_without_stop() {
    let host = fake_host();
    // Stopped: a conf and no cgroup.
    write_clone_pair(&host);
    let d = start(host, true, "", "allow_clone = true\nallow_destroy = true\n");
    let t = d.task(&post(
        &d.addr,
        "/clone/create",
        json!({"lxc_id": 120, "new_lxc_id": 220, "new_lxc_name": "db2"}),
    ));
    assert_eq!(t["state"], "ok", "{t}");
    assert_eq!(t["message"], "container 120 cloned to 220 (db2)");
    let t = d.task(&request(
        &d.addr,
        "DELETE",
        "/clone/delete",
        &[BEARER],
        Some(&json!({"lxc_id": 121, "confirm": 121})),
    ));
    assert_eq!(t["state"], "ok", "{t}");
    assert_eq!(
        d.pct_calls(),
        [
            "clone 120 220 -hostname db2",
            "set 220 -tags db;autoscale-clone",
            "destroy 121 -purge 1",
        ]
    );
}

#[test]
fn task_fields_out_of_range_are_422_a_wrong_type_400_and_an_unknown_snapshot_404_without_pct() {
    let d = task_daemon();
    let cases = [
        (
            "/scale/storage/increase",
            json!({"lxc_id": 101, "disk_size": 0}),
            422,
            "disk_size",
        ),
        (
            "/scale/storage/increase",
            json!({"lxc_id": 101, "disk_size": 1025}),
            422,
            "disk_size",
        ),
        (
            "/scale/storage/increase",
            json!({"lxc_id": 101, "disk_size": -5}),
            422,
            "disk_size",
        ),
        (
            "/scale/storage/increase",
            json!({"lxc_id": 101, "disk_size": "5G"}),
            400,
            "disk_size",
        ),
        (
            "/scale/storage/increase",
            json!({"lxc_id": 101}),
            422,
            "disk_size",
        ),
        (
            "/snapshot/rollback",
            json!({"lxc_id": 102, "snapshot_name": "before", "confirm": 101}),
            422,
            "confirm",
        ),
        (
            "/snapshot/rollback",
            json!({"lxc_id": 102, "snapshot_name": "nosuch", "confirm": 102}),
            404,
            "snapshot_name",
        ),
        (
            "/snapshot/rollback",
            json!({"lxc_id": 102, "snapshot_name": "current", "confirm": 102}),
            422,
            "snapshot_name",
        ),
        (
            "/clone/create",
            json!({"lxc_id": 101, "new_lxc_id": 99, "new_lxc_name": "web2"}),
            422,
            "new_lxc_id",
        ),
        (
            "/clone/create",
            json!({"lxc_id": 101, "new_lxc_id": 1_000_000_000u64, "new_lxc_name": "web2"}),
            422,
            "new_lxc_id",
        ),
        (
            "/clone/create",
            json!({"lxc_id": 101, "new_lxc_id": 201, "new_lxc_name": "web_2.example"}),
            422,
            "new_lxc_name",
        ),
    ];
    for (path, body, code, field) in cases {
        let r = post(&d.addr, path, body.clone());
        assert_eq!(r.status, code, "{path} {body}: {}", r.body);
        assert_eq!(r.body["status"], "error");
        assert_eq!(
            r.body["errors"][0]["field"], field,
            "{path} {body}: {}",
            r.body
        );
    }
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
}

#[test]
fn a_token_file_on_the_unix_socket_makes_the_socket_ask_for_the_token() {
    let host = fake_host();
    let api = format!("token_file = \"{}\"\n", host.path("api.token").display());
    let d = start(host, false, "", &api);
    let r = request(&d.addr, "GET", "/containers", &[], None);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = request(
        &d.addr,
        "GET",
        "/containers",
        &[("X-API-Key", "nope")],
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(request(&d.addr, "GET", "/health", &[], None).status, 200);
    assert_eq!(get(&d.addr, "/containers").status, 200);
    let body = json!({"lxc_id": 101, "cores": 2});
    assert_eq!(
        request(&d.addr, "POST", "/scale/cores", &[], Some(&body)).status,
        401
    );
    assert!(d.pct_calls().is_empty());
}

#[test]
fn a_reload_reads_the_new_token_and_keeps_the_old_one_when_the_file_is_refused() {
    let mut d = tcp_daemon("");
    let file = d.host.path("api.token");
    std::fs::write(&file, "tok-second-7c1e0a9b\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let second = [("Authorization", "Bearer tok-second-7c1e0a9b")];
    // Waits on the log, not by polling with the new token: every poll before the reload is a
    // failed attempt, and ten of them would rate-limit the wrong-token requests below (429).
    wait_for("the reload", || {
        d.host.log_text().contains("config reloaded")
    });
    assert_eq!(
        request(&d.addr, "GET", "/containers", &second, None).status,
        200
    );
    assert_eq!(get(&d.addr, "/containers").status, 403);
    // Open to others: the whole reload is refused (as a start would refuse the config), and the
    // running token stays.
    std::fs::write(&file, "tok-third-55aa\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the refused reload", || {
        d.host.log_text().lines().any(|l| {
            l.contains("config reload failed; keeping the running config")
                && l.contains("api.token_file")
        })
    });
    let third = [("Authorization", "Bearer tok-third-55aa")];
    assert_eq!(
        request(&d.addr, "GET", "/containers", &third, None).status,
        403
    );
    assert_eq!(
        request(&d.addr, "GET", "/containers", &second, None).status,
        200
    );
    let all = d.all_output();
    for secret in [TOKEN, "tok-second-7c1e0a9b", "tok-third-55aa"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
}

#[test]
fn a_reload_that_moves_listen_keeps_the_running_tcp_listener_behind_its_token() {
    let d = tcp_daemon("");
    // The new table is valid for a Unix socket, which needs no token: the TCP listener that
    // keeps running until the restart must still ask for one.
    let sock = d.host.path("run/other.sock");
    d.host.write_config(&format!(
        "poll_interval = 3600\n[api]\nlisten = \"unix:{}\"\n",
        sock.display()
    ));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload", || {
        d.host.log_text().contains("config reloaded")
    });
    assert!(d.host.log_text().contains("api.listen changed"));
    let r = request(&d.addr, "GET", "/containers", &[], None);
    assert_eq!(r.status, 401, "{}", r.body);
    let scale = json!({"lxc_id": 101, "cores": 2});
    let r = request(&d.addr, "POST", "/scale/cores", &[], Some(&scale));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
    let r = request(&d.addr, "GET", "/containers", &[BEARER], None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_reload_under_dry_run_keeps_every_task_switch_off() {
    let host = fake_host();
    host.add_container(105, "cores: 1\nmemory: 512\ntags: autoscale-clone\n");
    let d = start_with(host, true, "", "allow_destroy = true\n", &["--dry-run"]);
    let delete = json!({"lxc_id": 105, "confirm": 105});
    let r = request(&d.addr, "DELETE", "/clone/delete", &[BEARER], Some(&delete));
    assert_eq!(r.status, 403, "{}", r.body);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload", || {
        d.host.log_text().contains("config reloaded")
    });
    let r = request(&d.addr, "DELETE", "/clone/delete", &[BEARER], Some(&delete));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "api.allow_destroy is false: this operation is disabled"
    );
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
}

#[test]
fn an_api_change_is_counted_in_the_metrics_like_the_autoscalers() {
    let d = start(fake_host(), true, "poll_interval = 1", "");
    let r = post(&d.addr, "/scale/cores", json!({"lxc_id": 101, "cores": 3}));
    assert_eq!(r.status, 200, "{}", r.body);
    let up = r#"lxc_autoscale_scaling_actions_total{resource="cpu",direction="up"} 1"#;
    let mut text = String::new();
    wait_for("a cycle that published the count", || {
        text = get(&d.addr, "/metrics").body.as_str().unwrap().to_string();
        text.lines().any(|l| l == up)
    });
    for line in [
        r#"lxc_autoscale_scaling_actions_total{resource="cpu",direction="down"} 0"#,
        r#"lxc_autoscale_scaling_actions_total{resource="memory",direction="up"} 0"#,
        "lxc_autoscale_pct_failures_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert_eq!(d.pct_calls(), ["set 101 -cores 3"]);
}

#[test]
fn recommend_mode_changes_nothing_over_many_cycles_and_status_shows_what_it_would_do() {
    let host = fake_host();
    // Idle and above its minimum: `auto` would take cores and memory back every cycle.
    host.add_container(110, "cores: 3\nmemory: 4096\n");
    host.set_memory(110, 100, 0);
    host.seed_previous_cycle(&[]);
    let d = start(host, true, "scaling = \"recommend\"\npoll_interval = 1", "");
    wait_for("three cycles", || {
        d.host.log_text().matches("cycle done").count() >= 3
    });
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
    assert!(
        d.host.log_text().contains("recommend mode: would change"),
        "{}",
        d.host.log_text()
    );
    assert!(d.host.backup_files(110).is_empty());
    let cfg = d.host.path("lxc_autoscale.conf");
    let status = d
        .host
        .run(&["status", "--json", "--config", cfg.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&common::stdout(&status)).unwrap();
    let planned: Vec<&Value> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["vmid"] == 110)
        .collect();
    assert_eq!(planned.len(), 1, "{v}");
    assert_eq!(planned[0]["cores"]["from"], 3, "{v}");
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
}

#[test]
fn containers_lists_what_status_json_lists_including_an_unreadable_baseline() {
    let host = fake_host();
    host.add_container(110, "cores: 1\nmemory: 512\n");
    host.seed_previous_cycle(&[(110, 95.0, 1)]);
    std::fs::create_dir_all(host.path("var/backups/110")).unwrap();
    std::fs::write(host.path("var/backups/110/baseline.json"), "{").unwrap();
    let d = start(host, true, "", "");
    // The busy 110 needed cores; its baseline could not be read, so nothing ran.
    assert!(d.pct_calls().is_empty(), "{:?}", d.pct_calls());
    let r = get(&d.addr, "/containers");
    let data = &r.body["data"];
    assert!(
        data["daemon"]["110"]["baseline_unreadable"]
            .as_str()
            .unwrap()
            .contains("rebaseline"),
        "{data}"
    );
    let cfg = d.host.path("lxc_autoscale.conf");
    let status = d
        .host
        .run(&["status", "--json", "--config", cfg.to_str().unwrap()]);
    let s: Value = serde_json::from_str(&common::stdout(&status)).unwrap();
    assert!(s["baseline_unreadable"]["110"].is_string(), "{s}");
    for key in ["changes", "notes", "observations", "host", "containers"] {
        assert!(
            data[key].is_array() || data[key].is_object(),
            "{key} missing: {data}"
        );
        assert!(
            s[key].is_array() || s[key].is_object(),
            "{key} missing: {s}"
        );
    }
    let vmids = |v: &Value| -> Vec<u64> {
        let mut ids: Vec<u64> = v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["vmid"].as_u64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(vmids(data), [101, 102, 110]);
    assert_eq!(vmids(&s), [101, 102, 110]);
}

#[test]
fn in_cluster_mode_metrics_is_still_byte_for_byte_the_textfile_with_the_cluster_figures() {
    let cluster = common::cluster::FakeCluster::new(&["n1", "n2"], 4);
    cluster.add_container("n1", 101, "cores: 1\nmemory: 512\n");
    for node in ["n1", "n2"] {
        cluster.node(node).seed_previous_cycle(&[]);
        cluster.write_local_config(node, "");
    }
    let out = cluster.run("n2", &["--once"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let n1 = cluster.node("n1");
    let prom = n1.path("var/lxc_autoscale.prom");
    let socket = n1.path("run/api.sock");
    cluster.write_local_config(
        "n1",
        &format!(
            "poll_interval = 3600\nprometheus_textfile = \"{}\"\n[api]\nlisten = \"unix:{}\"\n",
            prom.display(),
            socket.display()
        ),
    );
    let daemon = cluster.spawn("n1");
    let addr = Addr::Unix(socket.clone());
    wait_for("n1's first cycle", || {
        UnixStream::connect(&socket).is_ok()
            && request(&addr, "GET", "/health", &[], None).body["last_cycle"].is_string()
    });
    let file = std::fs::read_to_string(&prom).unwrap();
    let r = request(&addr, "GET", "/metrics", &[], None);
    common::cluster::stop(daemon);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_str().unwrap(), file);
    for line in [
        "lxc_autoscale_cluster_nodes 2",
        r#"lxc_autoscale_cluster_stale{node="n2"} 0"#,
        r#"lxc_autoscale_container_anomaly{vmid="101",name="",tier="",resource="cpu"} 0"#,
    ] {
        assert!(file.lines().any(|l| l == line), "{line} not in\n{file}");
    }
}

#[test]
fn a_snapshot_pct_accepted_without_writing_it_is_a_failure_not_a_success() {
    let host = fake_host();
    let noop = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"{}\"\nexit 0\n",
        host.path("pct.calls").display()
    );
    std::fs::write(host.path("pct"), noop).unwrap();
    let d = start(host, true, "", "");
    let r = post(
        &d.addr,
        "/snapshot/create",
        json!({"lxc_id": 101, "snapshot_name": "s1"}),
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "container 101: pct snapshot exited 0 but the conf holds no snapshot `s1`"
    );
    assert_eq!(d.pct_calls(), ["snapshot 101 s1"]);
    assert_eq!(event_secs(&d, 101, "snapshot"), None);
    assert!(event_secs(&d, 101, "failure").is_some());
}

#[test]
fn a_clone_or_destroy_pct_accepted_without_doing_it_is_a_failed_task() {
    let host = fake_host();
    write_clone_pair(&host);
    let noop = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"{}\"\nexit 0\n",
        host.path("pct.calls").display()
    );
    std::fs::write(host.path("pct"), noop).unwrap();
    let d = start(host, true, "", "allow_clone = true\nallow_destroy = true\n");
    let t = d.task(&post(
        &d.addr,
        "/clone/create",
        json!({"lxc_id": 120, "new_lxc_id": 220, "new_lxc_name": "db2"}),
    ));
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(
        t["message"],
        "pct clone exited 0 but container 220 has no conf"
    );
    let t = d.task(&request(
        &d.addr,
        "DELETE",
        "/clone/delete",
        &[BEARER],
        Some(&json!({"lxc_id": 121, "confirm": 121})),
    ));
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(
        t["message"],
        "pct destroy exited 0 but container 121 still has a conf"
    );
    assert_eq!(
        d.pct_calls(),
        ["clone 120 220 -hostname db2", "destroy 121 -purge 1"]
    );
}

#[test]
fn clone_and_destroy_see_whether_the_container_runs_now_not_at_the_last_cycle() {
    let host = fake_host();
    write_clone_pair(&host);
    let d = start(host, true, "", "allow_clone = true\nallow_destroy = true\n");
    // Both start after the daemon's first (and, at poll_interval 3600, only) cycle.
    d.host.add_container(120, CLONE_SOURCE_CONF);
    d.host.add_container(121, CLONE_CONF);
    let t = d.task(&post(
        &d.addr,
        "/clone/create",
        json!({"lxc_id": 120, "new_lxc_id": 220, "new_lxc_name": "db2"}),
    ));
    assert_eq!(t["state"], "ok", "{t}");
    let t = d.task(&request(
        &d.addr,
        "DELETE",
        "/clone/delete",
        &[BEARER],
        Some(&json!({"lxc_id": 121, "confirm": 121})),
    ));
    assert_eq!(t["state"], "ok", "{t}");
    assert_eq!(
        d.pct_calls(),
        [
            "snapshot 120 autoscale-clone-220",
            "clone 120 220 -hostname db2 -snapname autoscale-clone-220",
            "delsnapshot 120 autoscale-clone-220",
            "set 220 -tags db;autoscale-clone",
            "stop 121",
            "destroy 121 -purge 1",
        ]
    );
}
