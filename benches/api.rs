//! The REST API under load: the real daemon on a fake host with 1000 containers, cycles running
//! every second, 50 concurrent clients on 127.0.0.1. Reports p50/p99 latency of
//! `GET /resource/lxc/status` and `GET /containers`, and the daemon's RSS with the API on and off.
//!
//! `cargo bench --bench api` (full) or `cargo bench --bench api -- --quick` (fewer requests);
//! `-- --bin PATH` runs another build of the daemon (say, of an older commit) instead of this one.
//! Each run first puts the same status load on a minimal fixed-answer server (the floor: what this
//! machine and client allow at best, which moves with the VM) and reports it beside the daemon's;
//! `-- --floor` runs only that.
//! Targets are reported as PASS/MISS (timing is never asserted); the run exits non-zero only when a
//! request got a wrong answer.
//!
//! The fake host is the one the tests use; its `pct` is a shell script fixture. The daemon itself
//! never runs a shell.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::FakeHost;

const CONTAINERS: u32 = 1000;
const CLIENTS: usize = 50;
const TOKEN: &str = "bench-token-5d1f0c2a";
const TARGET_STATUS_P99_MS: f64 = 5.0;
const TARGET_CONTAINERS_P99_MS: f64 = 50.0;
const TARGET_RSS_DELTA_MB: f64 = 2.0;

/// The daemon binary: `--bin PATH`, else the one cargo built with this bench.
static BIN: OnceLock<PathBuf> = OnceLock::new();

fn build() -> FakeHost {
    let host = FakeHost::new(64);
    host.set_meminfo(512 * 1024 * 1024, 256 * 1024 * 1024);
    let mut loads = Vec::new();
    for vmid in 100..100 + CONTAINERS {
        let conf = format!("hostname: ct{vmid}\ncores: 2\nmemory: 2048\nrootfs: local-lvm:vm-{vmid}-disk-0,size=8G\ntags: bench\n");
        host.add_container(vmid, &conf);
        host.set_memory(vmid, 1024, 256);
        loads.push((vmid, 50.0, 2));
    }
    host.seed_previous_cycle(&loads);
    let token = host.path("api.token");
    std::fs::write(&token, TOKEN).expect("write token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod token");
    host
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts the daemon with cycles every second; `addr` = `None` turns the API off.
fn start(host: &FakeHost, addr: Option<&str>) -> Child {
    let api = match addr {
        Some(a) => format!(
            "[api]\nlisten = \"{a}\"\ntoken_file = \"{}\"\n",
            host.path("api.token").display()
        ),
        None => "[api]\nlisten = \"\"\n".to_string(),
    };
    let cfg = host.write_config(&format!("poll_interval = 1\nmin_cores = 2\n{api}"));
    let bin = BIN.get_or_init(|| env!("CARGO_BIN_EXE_lxc_autoscale").into());
    Command::new(bin)
        .args(["--config", cfg.to_str().expect("utf-8 path")])
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.path("daemon.stderr")).expect("stderr file"))
        .spawn()
        .expect("start the daemon")
}

/// One GET; the status code and the body.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A `Name:   N kB` line of a /proc file, in KiB (0 when missing).
fn proc_kib(pid: u32, file: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS")
}

/// Resident memory split into anonymous (heap, stacks) and file-backed (the binary's and the
/// libraries' pages), from `smaps_rollup`: what the API adds is mostly the former.
#[derive(Clone, Copy, Default)]
struct Split {
    anon: u64,
    file: u64,
}

fn split_kib(pid: u32) -> Split {
    let rss = proc_kib(pid, "smaps_rollup", "Rss");
    let anon = proc_kib(pid, "smaps_rollup", "Anonymous");
    Split {
        anon,
        file: rss.saturating_sub(anon),
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |k: u64| k as f64 / 1024.0;
        write!(
            f,
            "anon {:.2} + file {:.2} MB",
            mb(self.anon),
            mb(self.file)
        )
    }
}

/// `CLIENTS` threads, each sending `per_client` requests for `path(i)`; latencies in ms and the
/// number of wrong answers.
fn load(
    addr: &str,
    per_client: usize,
    path: fn(usize) -> String,
    check: fn(usize, &str) -> bool,
) -> (Vec<f64>, usize) {
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per_client);
                let mut wrong = 0;
                for r in 0..per_client {
                    let i = c * per_client + r;
                    let t = Instant::now();
                    let answer = get(&addr, &path(i));
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    if !answer.is_some_and(|(s, b)| s == 200 && check(i, &b)) {
                        wrong += 1;
                    }
                }
                (lat, wrong)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut wrong = 0;
    for h in handles {
        let (lat, w) = h.join().expect("client thread");
        all.extend(lat);
        wrong += w;
    }
    (all, wrong)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn status_path(i: usize) -> String {
    format!(
        "/resource/lxc/status?lxc_id={}",
        100 + i % CONTAINERS as usize
    )
}

fn status_ok(i: usize, body: &str) -> bool {
    body.contains(&format!("\"vmid\":{}", 100 + i % CONTAINERS as usize))
}

fn containers_path(_: usize) -> String {
    "/containers".into()
}

fn containers_ok(_: usize, body: &str) -> bool {
    body.contains("\"vmid\":1099") && body.contains("\"status\":\"success\"")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// The daemon's RSS after `cycles` cycles with the API off.
fn rss_without_api(host: &FakeHost, cycles: usize) -> (u64, Split) {
    let _ = std::fs::remove_file(host.path("var/log/lxc_autoscale.log"));
    let mut child = start(host, None);
    wait_for("cycles without the api", || {
        host.log_text().matches("cycle done").count() >= cycles
    });
    let rss = (rss_kib(child.id()), split_kib(child.id()));
    let _ = child.kill();
    let _ = child.wait();
    rss
}

fn report(name: &str, lat: &mut [f64], target: f64) -> bool {
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(lat, 0.5), percentile(lat, 0.99));
    let ok = p99 <= target;
    println!(
        "{name:<30} {:>7} {p50:>9.2} {p99:>9.2} {target:>10.1}  {}",
        lat.len(),
        verdict(ok)
    );
    ok
}

/// The RSS lines; true when the target is met. `rss`: KiB with the API on before the load, after
/// it, at the end of the first cycle after it, and with the API off.
fn report_rss(rss: [u64; 4], split: [Split; 3]) -> bool {
    let mb = |k: u64| k as f64 / 1024.0;
    let [before, on, settled, off] = rss.map(mb);
    let delta_mb = on - off;
    let ok = delta_mb <= TARGET_RSS_DELTA_MB;
    println!(
        "RSS: api on {before:.1} MB before the load, {on:.1} MB after it; api off {off:.1} MB: {delta_mb:+.1} MB after the load (target <= +{TARGET_RSS_DELTA_MB} MB)  {}",
        verdict(ok)
    );
    println!(
        "RSS at the end of the first cycle after the load (the phase the api-off figure is taken at): {settled:.1} MB, {:+.1} MB against api off",
        settled - off
    );
    let [split_before, split_on, split_off] = split;
    println!("RSS detail (smaps_rollup): api on before the load {split_before}, after it {split_on}; api off {split_off}");
    ok
}

/// The floor of this machine and client: a minimal HTTP/1.1 server in a child process (one thread
/// reads each head and answers a fixed 0.45 KB JSON body; no routing, no token, no
/// cycles), under the same load as the daemon's status route. A thread per connection instead
/// measured p50 5.4 ms, p99 14-16 ms here.
fn serve_floor(port: &str) -> ! {
    let listener = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind");
    let body = format!(
        "{{\"status\":\"success\",\"data\":{{\"vmid\":100,\"pad\":\"{}\"}}}}",
        "x".repeat(400)
    );
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer: &'static str = Box::leak(answer.into_boxed_str());
    // One thread answering in turn: the fewest wake-ups a request can cost.
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = conn.write_all(answer.as_bytes());
        let _ = conn.shutdown(std::net::Shutdown::Write);
    }
    std::process::exit(0)
}

/// The status load against `serve_floor`: latencies in ms, sorted by `report`.
fn floor_load(per_client: usize) -> Vec<f64> {
    let port = free_port().to_string();
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args(["--serve-floor", &port])
        .spawn()
        .expect("start the floor server");
    let addr = format!("127.0.0.1:{port}");
    wait_for("the floor server", || get(&addr, "/").is_some());
    let (lat, _) = load(&addr, per_client, status_path, |_, b| b.contains("vmid"));
    let _ = child.kill();
    let _ = child.wait();
    lat
}

/// `--floor`: only the status load against `serve_floor`.
fn floor(per_client: usize) {
    let mut lat = floor_load(per_client);
    println!("floor: a minimal one-thread server with a fixed answer, {CLIENTS} concurrent clients on 127.0.0.1");
    report("GET (fixed answer)", &mut lat, TARGET_STATUS_P99_MS);
}

/// What one run of the daemon under the load measured.
struct Measured {
    status_lat: Vec<f64>,
    containers_lat: Vec<f64>,
    wrong: (usize, usize),
    /// KiB with the API on before the load, after it, at the end of the first cycle after it, and
    /// with the API off.
    rss: [u64; 4],
    split: [Split; 3],
    containers_bytes: usize,
}

/// Starts the daemon on a new fake host, waits for two cycles, puts the status and `/containers`
/// loads on it, then measures the same host with the API off.
fn measure_daemon(per_client: usize) -> Measured {
    let host = build();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = start(&host, Some(&addr));
    let ready =
        || get(&addr, "/health").is_some_and(|(s, b)| s == 200 && b.contains("last_cycle\":\""));
    wait_for("the api after the first cycle", || {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(host.path("daemon.stderr")).unwrap_or_default();
            panic!("the daemon exited ({status}): {err}");
        }
        ready()
    });
    // Cycles are counted through the published view (its last_cycle time).
    let cycle_at = || get(&addr, "/health").map(|(_, b)| b).unwrap_or_default();
    let first = cycle_at();
    wait_for("another cycle", || cycle_at() != first);
    let rss_before = rss_kib(child.id());
    let split_before = split_kib(child.id());
    let containers_bytes = get(&addr, "/containers").map_or(0, |(_, b)| b.len());
    let (status_lat, wrong_status) = load(&addr, per_client, status_path, status_ok);
    let (containers_lat, wrong_containers) =
        load(&addr, per_client / 4, containers_path, containers_ok);
    let rss_on = rss_kib(child.id());
    let split_on = split_kib(child.id());
    // The figures above are taken wherever the daemon is in its cycle when the load ends (up to
    // a whole cycle's working memory on top); the API-off figure is taken just after a cycle.
    // The same phase with the API on (the log's `cycle done`, polled alike): what the load left
    // behind. The `/containers` body rendered during the load went with the view it belonged to.
    let cycles_done = || host.log_text().matches("cycle done").count();
    let done = cycles_done();
    wait_for("a cycle after the load", || cycles_done() > done);
    let rss_settled = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let (rss_off, split_off) = rss_without_api(&host, 4);
    Measured {
        status_lat,
        containers_lat,
        wrong: (wrong_status, wrong_containers),
        rss: [rss_before, rss_on, rss_settled, rss_off],
        split: [split_before, split_on, split_off],
        containers_bytes,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-floor") {
        serve_floor(&args[i + 1]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    if let Some(i) = args.iter().position(|a| a == "--bin") {
        let bin = args.get(i + 1).expect("--bin needs a path");
        BIN.set(PathBuf::from(bin)).expect("set once");
    }
    let per_client = if quick { 20 } else { 200 };
    if args.iter().any(|a| a == "--floor") {
        floor(per_client);
        return;
    }
    // What this machine and client allow at best, measured just before, with no daemon running:
    // the status tail is read against it.
    let mut floor_lat = floor_load(per_client);
    let Measured {
        mut status_lat,
        mut containers_lat,
        wrong: (wrong_status, wrong_containers),
        rss,
        split,
        containers_bytes,
    } = measure_daemon(per_client);

    println!("api benchmark: {CONTAINERS} containers, cycles every 1 s, {CLIENTS} concurrent clients on 127.0.0.1");
    println!(
        "{:<30} {:>7} {:>9} {:>9} {:>10}",
        "request", "count", "p50 ms", "p99 ms", "target p99"
    );
    let a = report(
        "GET /resource/lxc/status",
        &mut status_lat,
        TARGET_STATUS_P99_MS,
    );
    report(
        "floor: fixed answer, 1 thread",
        &mut floor_lat,
        TARGET_STATUS_P99_MS,
    );
    let b = report(
        "GET /containers",
        &mut containers_lat,
        TARGET_CONTAINERS_P99_MS,
    );
    let c = report_rss(rss, split);
    let mb = containers_bytes as f64 / 1e6;
    println!(
        "GET /containers body: {mb:.2} MB, rendered once per cycle by the loop and shared by every request"
    );
    println!(
        "targets: {}",
        if a && b && c {
            "all met"
        } else {
            "some missed"
        }
    );
    if wrong_status + wrong_containers > 0 {
        eprintln!("wrong answers: {wrong_status} status, {wrong_containers} containers");
        std::process::exit(1);
    }
}
