//! Cost of a cycle on fake hosts with N running containers.
//!
//! `cargo bench --bench cycle` runs N = 10, 100, 1000, 5000; `cargo bench --bench cycle -- --quick`
//! runs N = 100 with few repeats (CI). Prints a table, reports targets as PASS/MISS (timing is never
//! asserted), and exits non-zero when an assertion fails: a steady cycle spawned a process, a 10 %
//! change cycle did not make exactly one `pct` call per changed container, or RSS grew over a long
//! run of cycles.
//!
//! The fake host is the one the scenario tests use (`tests/common/mod.rs`); its `pct` is a shell
//! script fixture that records its argv. The daemon itself never runs a shell.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{FakeHost, WINDOW_SECS};
use lxc_autoscale::config::{self, Config};
use lxc_autoscale::decide::policy;
use lxc_autoscale::read::collect::Collector;
use lxc_autoscale::read::snapshot::State;
use lxc_autoscale::record::state;

/// CPUs of the fake host: enough headroom that every 10 % change is granted in full.
const HOST_CPUS: u32 = 512;
/// Allocation of every container, and its steady load (inside the 20..80 % band).
const CORES: u32 = 2;
const MEMORY_MB: u64 = 2048;
const STEADY_CPU_PERCENT: f64 = 50.0;
const STEADY_USED_MB: u64 = 1024;
const CACHE_MB: u64 = 256;
/// Load of a container that must grow in the change cycle: above both upper thresholds.
const HOT_CPU_PERCENT: f64 = 95.0;
const HOT_USED_MB: u64 = 1900;

const TARGET_INPROC_CPU_MS: f64 = 20.0;
const TARGET_PROCESS_CPU_MS: f64 = 60.0;
const TARGET_RSS_MB: f64 = 10.0;
const TARGET_BINARY_MB: f64 = 5.0;
/// RSS may move by allocator noise, never by a per-cycle leak (1000 cycles × 1 KiB would show).
const RSS_SLACK_KIB: u64 = 256;

struct Mode {
    quick: bool,
    sizes: Vec<usize>,
}

impl Mode {
    fn from_args() -> Mode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut sizes = if quick {
            vec![100]
        } else {
            vec![10, 100, 1000, 5000]
        };
        if let Some(i) = args.iter().position(|a| a == "--n") {
            if let Some(list) = args.get(i + 1) {
                sizes = list.split(',').filter_map(|s| s.parse().ok()).collect();
            }
        }
        Mode { quick, sizes }
    }

    /// In-process repeats of a steady cycle.
    fn repeats(&self, n: usize) -> usize {
        match (self.quick, n) {
            (true, _) => 5,
            (false, n) if n >= 5000 => 7,
            _ => 21,
        }
    }

    /// Whole-process repeats of a steady `--once --dry-run`.
    fn process_repeats(&self, n: usize) -> usize {
        match (self.quick, n) {
            (true, _) => 3,
            (false, n) if n >= 5000 => 3,
            _ => 7,
        }
    }
}

fn vmid_of(i: usize) -> u32 {
    100 + u32::try_from(i).expect("container count fits u32")
}

/// Every tenth container runs hot in the change cycle.
fn is_hot(i: usize) -> bool {
    i % 10 == 0
}

fn conf_text(vmid: u32) -> String {
    format!(
        "#bench container\narch: amd64\ncores: {CORES}\nhostname: ct{vmid}\nmemory: {MEMORY_MB}\n\
         net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:{:02X}:{:02X},ip=dhcp,type=veth\n\
         ostype: debian\nrootfs: local-lvm:vm-{vmid}-disk-0,size=8G\nswap: 512\ntags: bench\n",
        (vmid >> 8) & 0xff,
        vmid & 0xff
    )
}

struct Bench {
    host: FakeHost,
    n: usize,
    config: PathBuf,
    /// The seeded state file, restored before each whole-process run so that every run is steady.
    seeded_state: Vec<u8>,
}

impl Bench {
    fn build(n: usize) -> Bench {
        let host = FakeHost::new(HOST_CPUS);
        host.set_meminfo(4 * 1024 * 1024 * 1024, 2 * 1024 * 1024 * 1024);
        for i in 0..n {
            let vmid = vmid_of(i);
            host.add_container(vmid, &conf_text(vmid));
            host.set_memory(vmid, STEADY_USED_MB, CACHE_MB);
        }
        // Confs written an hour ago, as on a settled node: the conf cache may trust them.
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for i in 0..n {
            let path = host.path(&format!("pve/lxc/{}.conf", vmid_of(i)));
            std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_modified(hour_ago))
                .expect("set conf mtime");
        }
        let config = host.write_config("");
        let mut b = Bench {
            host,
            n,
            config,
            seeded_state: Vec::new(),
        };
        b.seed(false);
        b
    }

    /// Seeds the previous cycle `WINDOW_SECS` ago; with `hot`, every tenth container runs above
    /// both upper thresholds.
    fn seed(&mut self, hot: bool) {
        let loads: Vec<(u32, f64, u32)> = (0..self.n)
            .map(|i| {
                let pct = if hot && is_hot(i) {
                    HOT_CPU_PERCENT
                } else {
                    STEADY_CPU_PERCENT
                };
                (vmid_of(i), pct, CORES)
            })
            .collect();
        if hot {
            for i in (0..self.n).filter(|&i| is_hot(i)) {
                self.host.set_memory(vmid_of(i), HOT_USED_MB, CACHE_MB);
            }
        }
        self.host.seed_previous_cycle(&loads);
        self.seeded_state = std::fs::read(self.state_path()).expect("read seeded state");
    }

    fn state_path(&self) -> PathBuf {
        self.host.path("var/state.json")
    }

    fn restore_state(&self) {
        std::fs::write(self.state_path(), &self.seeded_state).expect("restore state");
    }

    fn cfg(&self) -> Config {
        config::load(&self.config).expect("bench config loads")
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `VmHWM` and `VmRSS` of this process, KiB.
fn self_rss_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Now, as the daemon would see it one window after the seeded previous sample.
fn seeded_now(state: &State) -> i64 {
    state.host.expect("seeded host sample").taken_at_usec + WINDOW_SECS * 1_000_000
}

struct InProcess {
    /// Collect + decide with the figures the decision needs (no history outputs configured).
    cpu_ms: f64,
    wall_ms: f64,
    /// The same with the history/Prometheus figures read too (`metrics_file` is on by default).
    cpu_ms_history: f64,
}

/// Median CPU and wall time of one steady collect + decide, without and with the history figures.
fn in_process(b: &Bench, repeats: usize, failures: &mut Vec<String>) -> InProcess {
    let (cpu_ms, wall_ms) = in_process_with(b, repeats, false, failures);
    let (cpu_ms_history, _) = in_process_with(b, repeats, true, failures);
    InProcess {
        cpu_ms,
        wall_ms,
        cpu_ms_history,
    }
}

/// Median (CPU ms, wall ms) of one steady collect + decide, after a warm-up cycle.
fn in_process_with(
    b: &Bench,
    repeats: usize,
    read_extra: bool,
    failures: &mut Vec<String>,
) -> (f64, f64) {
    let cfg = b.cfg();
    let prev = state::read_state(&b.state_path()).expect("read seeded state");
    let now = seeded_now(&prev);
    let local = chrono::Local::now().naive_local();
    let mut collector = Collector::new();
    collector.read_extra = read_extra;
    let warm = collector.collect(&cfg, now);
    if warm.containers.len() != b.n {
        failures.push(format!(
            "N={}: warm-up cycle saw {} containers",
            b.n,
            warm.containers.len()
        ));
    }
    let parses = collector.conf_parses();
    let mut cpu = Vec::with_capacity(repeats);
    let mut wall = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let (c0, w0) = (thread_cpu(), Instant::now());
        let snap = collector.collect(&cfg, now);
        let plan = policy::decide(&cfg, &snap, &prev, local);
        let (c1, w1) = (thread_cpu(), Instant::now());
        cpu.push(ms(c1 - c0));
        wall.push(ms(w1 - w0));
        if !plan.changes.is_empty() {
            failures.push(format!(
                "N={}: steady in-process cycle planned {} changes",
                b.n,
                plan.changes.len()
            ));
            break;
        }
        std::hint::black_box(&plan);
    }
    let reparsed = collector.conf_parses() - parses;
    if reparsed != 0 {
        failures.push(format!(
            "N={}: steady cycles parsed {reparsed} unchanged confs again",
            b.n
        ));
    }
    (median(cpu), median(wall))
}

struct ChildRun {
    cpu: Duration,
    wall: Duration,
    max_rss_kib: u64,
    success: bool,
}

/// Runs the daemon binary to completion and takes its rusage from `wait4`.
fn run_child(mut cmd: Command) -> ChildRun {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn lxc_autoscale");
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; `status` and `ru` are valid and writable.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert_eq!(rc, pid, "wait4 failed: {}", std::io::Error::last_os_error());
    // The child is reaped; `Child` does not wait on drop.
    drop(child);
    ChildRun {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        wall,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: u64::try_from(ru.ru_maxrss).unwrap_or(0),
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
}

fn daemon_command(b: &Bench, dry_run: bool, stderr: &Path) -> Command {
    let mut cmd = b.host.command(&[]);
    cmd.arg("--once");
    if dry_run {
        cmd.arg("--dry-run");
    }
    cmd.arg("--config").arg(&b.config);
    cmd.stdout(Stdio::null());
    cmd.stderr(std::fs::File::create(stderr).expect("create stderr file"));
    cmd
}

struct Process {
    cpu_ms: f64,
    wall_ms: f64,
    max_rss_mb: f64,
    /// `pct` calls during the steady runs (must be 0).
    pct_calls: usize,
    /// Processes the daemon created in one steady run, counted by strace; `None` when strace is
    /// missing or cannot trace here.
    spawned: Option<usize>,
}

/// Median CPU and wall time and the largest RSS of a whole steady `--once --dry-run` process.
fn whole_process(b: &Bench, repeats: usize, failures: &mut Vec<String>) -> Process {
    let calls_before = b.host.pct_calls().len();
    let err = b.host.path("daemon.stderr");
    let (mut cpu, mut wall, mut rss) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..repeats {
        b.restore_state();
        let run = run_child(daemon_command(b, true, &err));
        let log = std::fs::read_to_string(&err).unwrap_or_default();
        if !run.success {
            failures.push(format!("N={}: --once --dry-run failed: {log}", b.n));
            break;
        }
        if log.contains("measuring cpu over a short window") {
            failures.push(format!(
                "N={}: the seeded state did not spare the sampling window",
                b.n
            ));
        }
        if log.contains("would run") {
            failures.push(format!("N={}: steady --dry-run planned a change", b.n));
        }
        cpu.push(ms(run.cpu));
        wall.push(ms(run.wall));
        rss = rss.max(run.max_rss_kib);
    }
    let pct_calls = b.host.pct_calls().len() - calls_before;
    if pct_calls != 0 {
        failures.push(format!(
            "N={}: steady cycles ran pct {pct_calls} times, expected 0",
            b.n
        ));
    }
    b.restore_state();
    let spawned = strace_spawns(b);
    if let Some(s) = spawned.filter(|&s| s != 0) {
        failures.push(format!(
            "N={}: a steady cycle spawned {s} processes, expected 0",
            b.n
        ));
    }
    Process {
        cpu_ms: if cpu.is_empty() {
            f64::NAN
        } else {
            median(cpu)
        },
        wall_ms: if wall.is_empty() {
            f64::NAN
        } else {
            median(wall)
        },
        max_rss_mb: rss as f64 / 1024.0,
        pct_calls,
        spawned,
    }
}

/// Process creations (fork, vfork, clone without CLONE_THREAD) by a steady `--once --dry-run`,
/// seen by strace following the daemon and anything it starts.
fn strace_spawns(b: &Bench) -> Option<usize> {
    let out = b.host.path("strace.out");
    let err = b.host.path("daemon.stderr");
    let inner = daemon_command(b, true, &err);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=fork,vfork,clone,clone3", "-o"])
        .arg(&out)
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = cmd.status().ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    Some(
        text.lines()
            .filter(|l| {
                (l.contains("fork(") || l.contains("clone(") || l.contains("clone3("))
                    && !l.contains("CLONE_THREAD")
            })
            .count(),
    )
}

/// A cycle in which every tenth container runs hot: the real binary (no `--dry-run`) against the
/// fake `pct`. Returns (changes expected, pct calls made).
fn change_cycle(b: &mut Bench, failures: &mut Vec<String>) -> (usize, usize) {
    b.seed(true);
    let before = b.host.pct_calls().len();
    let err = b.host.path("daemon.stderr");
    let run = run_child(daemon_command(b, false, &err));
    if !run.success {
        let log = std::fs::read_to_string(&err).unwrap_or_default();
        failures.push(format!("N={}: change cycle failed: {log}", b.n));
    }
    let calls: Vec<String> = b.host.pct_calls().split_off(before);
    let expected: BTreeSet<u32> = (0..b.n).filter(|&i| is_hot(i)).map(vmid_of).collect();
    let mut seen = BTreeSet::new();
    for call in &calls {
        let argv: Vec<&str> = call.split_whitespace().collect();
        let vmid = argv.get(1).and_then(|v| v.parse::<u32>().ok());
        let both = argv.contains(&"-cores") && argv.contains(&"-memory");
        match vmid {
            Some(v) if argv[0] == "set" && both && expected.contains(&v) && seen.insert(v) => {}
            _ => failures.push(format!(
                "N={}: unexpected pct call `{call}` (one set per changed container, cores and memory together)",
                b.n
            )),
        }
    }
    if calls.len() != expected.len() {
        failures.push(format!(
            "N={}: {} pct calls for {} changed containers",
            b.n,
            calls.len(),
            expected.len()
        ));
    }
    (expected.len(), calls.len())
}

struct RssRun {
    n: usize,
    cycles: usize,
    at: usize,
    early: (u64, u64),
    late: (u64, u64),
}

/// `cycles` in-process cycles (collect, decide, state advance) over `b`; (VmHWM, VmRSS) at cycle
/// `cycles / 10` and at the end. Decide always sees the seeded previous sample so every cycle is
/// steady; the advanced state is kept as the daemon keeps it.
fn rss_run(b: &Bench, cycles: usize, failures: &mut Vec<String>) -> RssRun {
    let cfg = b.cfg();
    let prev = state::read_state(&b.state_path()).expect("read seeded state");
    let now = seeded_now(&prev);
    let local = chrono::Local::now().naive_local();
    let mut collector = Collector::new();
    let mut kept = prev.clone();
    let at = cycles / 10;
    let mut early = (0, 0);
    for cycle in 1..=cycles {
        let snap = collector.collect(&cfg, now);
        let plan = policy::decide(&cfg, &snap, &prev, local);
        std::hint::black_box(&plan);
        kept = kept.advanced(&snap);
        if cycle == at {
            early = self_rss_kib();
        }
    }
    std::hint::black_box(&kept);
    let late = self_rss_kib();
    if late.0 > early.0 + RSS_SLACK_KIB || late.1 > early.1 + RSS_SLACK_KIB {
        failures.push(format!(
            "N={}: RSS grew from cycle {at} (HWM {} KiB, RSS {} KiB) to cycle {cycles} (HWM {} KiB, RSS {} KiB)",
            b.n, early.0, early.1, late.0, late.1
        ));
    }
    RssRun {
        n: b.n,
        cycles,
        at,
        early,
        late,
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

struct Row {
    n: usize,
    inproc: InProcess,
    process: Process,
}

#[allow(clippy::too_many_lines)] // the benchmark driver: one measurement table, read top to bottom
fn main() {
    let mode = Mode::from_args();
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let mut changes = Vec::new();
    let mut rss = None;
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_lxc_autoscale"));

    for &n in &mode.sizes {
        eprintln!("building a fake host with {n} containers");
        let mut b = Bench::build(n);
        let inproc = in_process(&b, mode.repeats(n), &mut failures);
        let process = whole_process(&b, mode.process_repeats(n), &mut failures);
        rows.push(Row { n, inproc, process });
        let long_run = if mode.quick { n == 100 } else { n == 1000 };
        if long_run {
            let cycles = if mode.quick { 100 } else { 1000 };
            rss = Some(rss_run(&b, cycles, &mut failures));
        }
        // Changes rewrite confs, so they come last for this host; 5000 would only time the fixture.
        if n <= 1000 {
            changes.push((n, change_cycle(&mut b, &mut failures)));
        }
    }

    println!();
    println!(
        "lxc_autoscale cycle benchmark ({} mode)",
        if mode.quick { "quick" } else { "full" }
    );
    println!("steady cycle: every container in band, nothing to apply; medians of repeats");
    println!();
    println!(
        "| N | CPU ms/cycle in-process | wall ms in-process | µs CPU per container | CPU ms in-process with history figures | CPU ms whole process (history on) | wall ms whole process | peak RSS MB whole process | processes per steady cycle |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let procs = match r.process.spawned {
            Some(s) => format!(
                "{} (pct calls {}, strace {s})",
                r.process.pct_calls + s,
                r.process.pct_calls
            ),
            None => format!("{} (pct calls; strace unavailable)", r.process.pct_calls),
        };
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
            r.n,
            r.inproc.cpu_ms,
            r.inproc.wall_ms,
            r.inproc.cpu_ms * 1e3 / r.n as f64,
            r.inproc.cpu_ms_history,
            r.process.cpu_ms,
            r.process.wall_ms,
            r.process.max_rss_mb,
            procs
        );
    }
    println!();
    for (n, (expected, calls)) in &changes {
        println!(
            "change cycle at N={n}: {expected} containers changed, {calls} pct calls ({})",
            if expected == calls {
                "one per container, cores and memory combined"
            } else {
                "MISMATCH"
            }
        );
    }
    if let Some(r) = &rss {
        println!(
            "{} in-process cycles over {} containers: VmHWM {} -> {} KiB, VmRSS {} -> {} KiB (cycle {} -> {})",
            r.cycles, r.n, r.early.0, r.late.0, r.early.1, r.late.1, r.at, r.cycles
        );
    }
    let per_ct: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.n >= 100)
        .map(|r| (r.n, r.inproc.cpu_ms * 1e3 / r.n as f64))
        .collect();
    if per_ct.len() >= 2 {
        let (n0, c0) = per_ct[0];
        let (n1, c1) = per_ct[per_ct.len() - 1];
        println!(
            "cost curve: {c0:.2} µs per container at N={n0}, {c1:.2} at N={n1}: ratio {:.2} (1.00 = linear)",
            c1 / c0
        );
    }
    let size_mb = std::fs::metadata(&binary)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(f64::NAN);

    println!();
    println!("targets (reported, not asserted):");
    if let Some(r) = rows.iter().find(|r| r.n == 1000) {
        println!(
            "  {} in-process CPU at N=1000: {:.2} ms (target <= {TARGET_INPROC_CPU_MS} ms)",
            verdict(r.inproc.cpu_ms <= TARGET_INPROC_CPU_MS),
            r.inproc.cpu_ms
        );
        println!(
            "  (with the history figures read too: {:.2} ms; their cost is {:.2} ms)",
            r.inproc.cpu_ms_history,
            r.inproc.cpu_ms_history - r.inproc.cpu_ms
        );
        println!(
            "  {} whole-process CPU at N=1000: {:.2} ms (target <= {TARGET_PROCESS_CPU_MS} ms)",
            verdict(r.process.cpu_ms <= TARGET_PROCESS_CPU_MS),
            r.process.cpu_ms
        );
        println!(
            "  {} peak RSS of the process at N=1000: {:.1} MB (target <= {TARGET_RSS_MB} MB)",
            verdict(r.process.max_rss_mb <= TARGET_RSS_MB),
            r.process.max_rss_mb
        );
    }
    println!(
        "  {} release binary {}: {size_mb:.2} MB (target <= {TARGET_BINARY_MB} MB stripped)",
        verdict(size_mb <= TARGET_BINARY_MB),
        binary.display()
    );

    if failures.is_empty() {
        println!();
        println!(
            "all assertions hold: 0 processes per steady cycle, pct calls == changes, RSS flat"
        );
    } else {
        println!();
        for f in &failures {
            println!("FAIL: {f}");
        }
        std::process::exit(1);
    }
}
