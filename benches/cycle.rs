//! Cost of a cycle on fake hosts with N running containers.
//!
//! `cargo bench --bench cycle` runs N = 10, 100, 1000, 5000; `cargo bench --bench cycle -- --quick`
//! runs N = 100 with few repeats (CI). Prints a table, reports targets as PASS/MISS (timing is never
//! asserted), and exits non-zero when an assertion fails: a steady cycle spawned a process, a 10 %
//! change cycle did not make exactly one `pct` call per changed container, RSS grew over a long
//! run of cycles, or a steady cycle of the running daemon planned a change.
//!
//! At N = 100 and 1000 it also runs the real daemon (`--dry-run`, history on, every history file
//! present) and attaches `strace -f -c` between two cycles for a few steady cycles: syscalls per
//! container per steady cycle (skipped, with a note, when strace is missing or cannot attach), and
//! the daemon's CPU per cycle and RSS from /proc; then again without the REST API (RSS and CPU),
//! for a like-for-like comparison with builds older than the API. `-- --n 100,1000` picks sizes;
//! `-- --compare PATH` measures another build (say, of an older commit) on the same hosts;
//! `-- --keep` only builds the fake hosts and leaves them on disk for profiling by hand.
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
use lxc_autoscale::read::hostfiles::NetDev;
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
const TARGET_SYSCALLS_PER_CONTAINER: f64 = 16.0;
const TARGET_PROCESS_CPU_MS: f64 = 60.0;
const TARGET_RSS_MB: f64 = 10.0;
const TARGET_BINARY_MB: f64 = 5.0;
/// RSS may move by allocator noise, never by a per-cycle leak (1000 cycles × 1 KiB would show).
const RSS_SLACK_KIB: u64 = 256;

struct Mode {
    quick: bool,
    sizes: Vec<usize>,
    /// The daemon binary the whole-process and running-daemon figures run; this crate's binary,
    /// or `--binary PATH`.
    binary: PathBuf,
    /// `--compare PATH`: another build (for example of an older commit) measured on the same fake
    /// hosts, whole-process runs alternating with `binary`'s.
    compare: Option<PathBuf>,
    /// `--keep`: build the fake hosts, print their config paths and keep them on disk, measure
    /// nothing (for profiling the binary by hand: `perf`, `heaptrack`, `strace`).
    keep: bool,
    /// `--in-process-only REPEATS`: measure only the steady in-process cycle, `REPEATS` times per
    /// size, and print its medians (for profiling it with `perf`, and for many repeats on a noisy
    /// machine).
    in_process_only: Option<usize>,
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
        let value = |flag: &str| {
            let i = args.iter().position(|a| a == flag)?;
            args.get(i + 1).map(PathBuf::from)
        };
        let binary =
            value("--binary").unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lxc_autoscale")));
        Mode {
            quick,
            sizes,
            binary,
            compare: value("--compare"),
            keep: args.iter().any(|a| a == "--keep"),
            in_process_only: value("--in-process-only")
                .and_then(|p| p.to_str().and_then(|s| s.parse().ok())),
        }
    }

    /// Seconds between the running daemon's cycles: long enough that a cycle under strace stays
    /// within the freshness window (two intervals), so no cycle falls back to a sampling window.
    fn daemon_poll_interval(&self) -> u64 {
        if self.quick {
            2
        } else {
            5
        }
    }

    /// Steady cycles the running daemon is watched for (syscalls, CPU).
    fn daemon_cycles(&self) -> usize {
        if self.quick {
            3
        } else {
            5
        }
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

/// `memory.stat` as a 6.x kernel writes it (every key, realistic length), so that parsing costs
/// what it costs on a real host; the figures the daemon uses come from `set_memory`.
const MEMORY_STAT_REST: &str = "file_mapped 1048576\nfile_dirty 4096\nfile_writeback 0\n\
    swapcached 0\nanon_thp 0\nfile_thp 0\nshmem_thp 0\nactive_anon 536870912\n\
    inactive_anon 268435456\nactive_file 134217728\nunevictable 0\nslab_reclaimable 8388608\n\
    slab_unreclaimable 4194304\nslab 12582912\nworkingset_refault_anon 0\n\
    workingset_refault_file 1234\nworkingset_activate_anon 0\nworkingset_activate_file 321\n\
    workingset_restore_anon 0\nworkingset_restore_file 12\nworkingset_nodereclaim 0\n\
    pgscan 4567\npgsteal 4000\npgscan_kswapd 4000\npgscan_direct 567\npgsteal_kswapd 3800\n\
    pgsteal_direct 200\npgfault 123456789\npgmajfault 1234\npgrefill 999\npgactivate 8888\n\
    pgdeactivate 7777\npglazyfree 0\npglazyfreed 0\nthp_fault_alloc 0\nthp_collapse_alloc 0\n";
/// A pressure file as the kernel writes it.
const PSI_TEXT: &str = "some avg10=0.00 avg60=0.00 avg300=0.00 total=123456\n\
    full avg10=0.00 avg60=0.00 avg300=0.00 total=23456\n";

/// Every file the history figures read, present as on a real host: the remaining cgroup files,
/// an init pid whose `/proc/<pid>/root` exists, and one veth with byte counters (in sysfs, where
/// builds before `/proc/net/dev` was read look; `Bench::build` lists them in `/proc/net/dev`).
fn write_history_files(host: &FakeHost, vmid: u32) {
    let dir = host.cgroup(vmid);
    let stat = std::fs::read_to_string(dir.join("memory.stat")).expect("read memory.stat");
    let files: [(&str, String); 8] = [
        ("memory.stat", format!("{stat}{MEMORY_STAT_REST}")),
        ("memory.swap.current", "0\n".into()),
        (
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n".into(),
        ),
        ("pids.current", "42\n".into()),
        (
            "io.stat",
            "8:0 rbytes=1048576 wbytes=2097152 rios=100 wios=200 dbytes=0 dios=0\n".into(),
        ),
        ("cpu.pressure", PSI_TEXT.into()),
        ("memory.pressure", PSI_TEXT.into()),
        ("io.pressure", PSI_TEXT.into()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write cgroup file");
    }
    let pid = 100_000 + vmid;
    std::fs::create_dir_all(dir.join("ns")).expect("create ns cgroup");
    std::fs::write(dir.join("ns/cgroup.procs"), format!("{pid}\n")).expect("write cgroup.procs");
    std::fs::create_dir_all(host.path(&format!("proc/{pid}/root"))).expect("create init root");
    let stats = host.path(&format!("net/veth{vmid}i0/statistics"));
    std::fs::create_dir_all(&stats).expect("create veth");
    std::fs::write(stats.join("rx_bytes"), "123456789\n").expect("write rx_bytes");
    std::fs::write(stats.join("tx_bytes"), "987654321\n").expect("write tx_bytes");
}

struct Bench {
    host: FakeHost,
    n: usize,
    config: PathBuf,
    binary: PathBuf,
    /// The seeded state file, restored before each whole-process run so that every run is steady.
    seeded_state: Vec<u8>,
}

impl Bench {
    fn build(n: usize, binary: &Path) -> Bench {
        let host = FakeHost::new(HOST_CPUS);
        host.set_meminfo(4 * 1024 * 1024 * 1024, 2 * 1024 * 1024 * 1024);
        for i in 0..n {
            let vmid = vmid_of(i);
            host.add_container(vmid, &conf_text(vmid));
            host.set_memory(vmid, STEADY_USED_MB, CACHE_MB);
            write_history_files(&host, vmid);
        }
        let veths: Vec<NetDev> = (0..n)
            .map(|i| NetDev {
                iface: format!("veth{}i0", vmid_of(i)),
                rx_bytes: 123_456_789,
                tx_bytes: 987_654_321,
            })
            .collect();
        host.files.write_net_dev(&veths).expect("write net/dev");
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
        // This build ignores `net_class_root` (with a warning); a `--compare` build older than
        // `/proc/net/dev` reads the veth counters there, so both do the same work.
        let config = host.write_config(&format!(
            "net_class_root = \"{}\"\n",
            host.path("net").display()
        ));
        let mut b = Bench {
            host,
            n,
            config,
            binary: binary.to_path_buf(),
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
    /// The syscall floor of each (`floor_turn`): without, then with the history figures; `None`
    /// above `FLOOR_MAX_N`.
    floor_ms: Option<[f64; 2]>,
}

/// The largest N whose floor is measured: its descriptors (nine per container) must fit beside
/// the collector's under a 20 000 descriptor limit.
const FLOOR_MAX_N: usize = 1000;

/// The cgroup files a steady cycle reads for every container: the decision's five, then the
/// history figures' four (`memory.events` only after a watch notice, so not here).
const FLOOR_FILES: [&str; 9] = [
    "cpu.stat",
    "memory.current",
    "memory.stat",
    "cpu.pressure",
    "memory.pressure",
    "memory.swap.current",
    "pids.current",
    "io.stat",
    "io.pressure",
];

/// CPU ms of `repeats` passes (after a warm one) that do only the kernel work of a steady cycle:
/// one `pread` at offset 0 of each file the cycle reads per container (five, or nine with the
/// history figures), through descriptors opened beforehand, and one `fstatat` of its conf by name
/// in the opened conf directory. No parsing, no decision: what the cycle costs on this machine
/// before any work of the daemon's own, to set the in-process figure against (syscall entry
/// costs vary by tens of percent between machines and with the CPU's speculation mitigations).
fn floor_turn(b: &Bench, repeats: usize, read_extra: bool) -> Vec<f64> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let files = if read_extra { 9 } else { 5 };
    let opened: Vec<(Vec<std::fs::File>, CString)> = (0..b.n)
        .map(|i| {
            let vmid = vmid_of(i);
            let dir = b.host.cgroup(vmid);
            let fds = FLOOR_FILES[..files]
                .iter()
                .map(|f| std::fs::File::open(dir.join(f)).expect("open a cgroup file"))
                .collect();
            (
                fds,
                CString::new(format!("{vmid}.conf")).expect("conf name"),
            )
        })
        .collect();
    let conf_dir = std::fs::File::open(&b.host.files.pve_lxc_dir).expect("open the conf dir");
    let mut buf = vec![0u8; 4096];
    let pass = |buf: &mut [u8]| {
        for (fds, conf) in &opened {
            for f in fds {
                std::hint::black_box(f.read_at(buf, 0).expect("pread a cgroup file"));
            }
            // SAFETY: `st` is writable; `conf` is a NUL-terminated name; the fd is open.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::fstatat(conf_dir.as_raw_fd(), conf.as_ptr(), &mut st, 0) };
            assert_eq!(rc, 0, "fstatat of a conf");
        }
    };
    pass(&mut buf);
    (0..repeats)
        .map(|_| {
            let c0 = thread_cpu();
            pass(&mut buf);
            ms(thread_cpu() - c0)
        })
        .collect()
}

/// Median CPU and wall time of one steady collect + decide, without and with the history figures.
/// The two are measured in turns, a few cycles each, so that a slower spell of the machine (this
/// VM's speed drifts by tens of percent over seconds) weighs on both alike. Each turn has its own
/// collector: two alive at once would keep more descriptors than a 20 000 limit allows.
fn in_process(b: &Bench, repeats: usize, failures: &mut Vec<String>) -> InProcess {
    const TURN: usize = 5;
    let mut cpu = [Vec::with_capacity(repeats), Vec::with_capacity(repeats)];
    let mut floor = [Vec::with_capacity(repeats), Vec::with_capacity(repeats)];
    let mut wall = Vec::with_capacity(repeats);
    let mut left = repeats;
    *said_kept() = false;
    while left > 0 {
        let n = left.min(TURN);
        left -= n;
        for (i, read_extra) in [false, true].into_iter().enumerate() {
            let turn = in_process_turn(b, n, read_extra, failures);
            cpu[i].extend(turn.iter().map(|&(c, _)| c));
            if !read_extra {
                wall.extend(turn.iter().map(|&(_, w)| w));
            }
            if b.n <= FLOOR_MAX_N {
                floor[i].extend(floor_turn(b, n, read_extra));
            }
        }
        if !failures.is_empty() {
            break;
        }
    }
    let [cpu_plain, cpu_history] = cpu;
    let [floor_plain, floor_history] = floor;
    InProcess {
        cpu_ms: median(cpu_plain),
        wall_ms: median(wall),
        cpu_ms_history: median(cpu_history),
        floor_ms: (!floor_plain.is_empty()).then(|| [median(floor_plain), median(floor_history)]),
    }
}

/// Whether the fd cap of the current N was reported (once per N, not once per turn).
fn said_kept() -> std::sync::MutexGuard<'static, bool> {
    static SAID: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    SAID.lock().unwrap_or_else(|e| e.into_inner())
}

/// (CPU ms, wall ms) of `repeats` steady collect + decide cycles of a new collector, after a
/// warm-up cycle.
fn in_process_turn(
    b: &Bench,
    repeats: usize,
    read_extra: bool,
    failures: &mut Vec<String>,
) -> Vec<(f64, f64)> {
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
    let reads = collector.files_read();
    let mut out = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let (c0, w0) = (thread_cpu(), Instant::now());
        let snap = collector.collect(&cfg, now);
        let plan = policy::decide(&cfg, &snap, &prev, local);
        let (c1, w1) = (thread_cpu(), Instant::now());
        out.push((ms(c1 - c0), ms(w1 - w0)));
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
    if let Some(f) = collector.read_failures().first() {
        failures.push(format!(
            "N={}: steady in-process cycle could not read {} files, first {f:?}",
            b.n,
            collector.read_failures().len()
        ));
    }
    // Every file but memory.events, which is read only after its watch reports a write. Counted
    // for the containers whose descriptors are kept; under a hard RLIMIT_NOFILE too low for all
    // of them, the rest are opened every cycle and not counted here.
    let files = if read_extra { 9 } else { 5 };
    let kept = collector.open_cgroups();
    if kept < b.n && !read_extra && !std::mem::replace(&mut *said_kept(), true) {
        eprintln!(
            "N={}: RLIMIT_NOFILE keeps the descriptors of {kept} containers; the other {} are opened every cycle",
            b.n,
            b.n - kept
        );
    }
    let read = collector.files_read() - reads;
    let expected = (files * kept * out.len()) as u64;
    if read != expected {
        failures.push(format!(
            "N={}: {} steady cycles read {read} files of the {kept} kept cgroups, not {expected}",
            b.n,
            out.len()
        ));
    }
    let reparsed = collector.conf_parses() - parses;
    if reparsed != 0 {
        failures.push(format!(
            "N={}: steady cycles parsed {reparsed} unchanged confs again",
            b.n
        ));
    }
    out
}

/// The floor line of `r`, when it was measured.
fn print_floor(n: usize, r: &InProcess) {
    if let Some([plain, history]) = r.floor_ms {
        println!(
            "N={n}: syscall floor (the same preads and fstatat alone): {plain:.2} ms, with the history figures {history:.2} ms; the daemon's own work {:.2} and {:.2} ms",
            r.cpu_ms - plain,
            r.cpu_ms_history - history
        );
    }
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

/// Keys of the bench config that builds older than the model do not know (and refuse).
const KEYS_NEWER_THAN_COMPARE: [&str; 2] = ["scale_down_window", "scale_down_cooldown"];

/// The bench config for `binary`: another build (`--compare`, perhaps older than the `[api]`
/// table and the model's keys) gets it without them.
fn config_for(b: &Bench, binary: &Path) -> PathBuf {
    if binary == b.binary {
        return b.config.clone();
    }
    let text = std::fs::read_to_string(&b.config).expect("read bench config");
    let main = text.split("\n[api]").next().unwrap_or_default();
    let kept: Vec<&str> = main
        .lines()
        .filter(|l| !KEYS_NEWER_THAN_COMPARE.iter().any(|k| l.starts_with(k)))
        .collect();
    let path = b.host.path("compare.conf");
    std::fs::write(&path, format!("{}\n", kept.join("\n"))).expect("write compare config");
    path
}

/// `binary` with the fake host's environment.
fn binary_command(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env_remove("NOTIFY_SOCKET").env("RUST_LOG", "info");
    cmd
}

fn daemon_command(b: &Bench, dry_run: bool, stderr: &Path) -> Command {
    once_command(b, &b.binary, dry_run, stderr)
}

fn once_command(b: &Bench, binary: &Path, dry_run: bool, stderr: &Path) -> Command {
    let mut cmd = binary_command(binary);
    cmd.arg("--once");
    if dry_run {
        cmd.arg("--dry-run");
    }
    cmd.arg("--config").arg(config_for(b, binary));
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

/// The running daemon over steady cycles: syscalls counted by `strace -f -c` attached to it, and
/// its CPU time and RSS from /proc.
struct Running {
    /// Whether the REST API ran (its default: a Unix socket in the fake host).
    api: bool,
    cycles: usize,
    /// CPU of every thread of the daemon per steady cycle (schedstat), ms; strace detached.
    cpu_ms_per_cycle: f64,
    /// Between cycles.
    rss_mb: f64,
    /// The largest RSS so far (first cycle included).
    hwm_mb: f64,
    /// `None` when strace is missing or cannot attach.
    syscalls: Option<Syscalls>,
}

struct Syscalls {
    cycles: usize,
    per_container: f64,
    /// (syscall, calls per container per cycle), most frequent first.
    by_name: Vec<(String, f64)>,
}

/// Extra config for the running daemon: bounds that keep every container where it is (its
/// counters do not move, so it reads as idle), so every cycle stays steady.
const DAEMON_EXTRA: &str = "min_cores = 2\nmin_memory = 2048\n";

/// `cycle done` lines in the daemon's log so far.
fn cycles_done(b: &Bench) -> usize {
    b.host.log_text().matches("cycle done").count()
}

/// Waits until the log shows `n` completed cycles; false after `timeout`.
fn wait_cycles(b: &Bench, n: usize, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cycles_done(b) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Nanoseconds every thread of `pid` has run (the first field of each task's schedstat).
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `field` (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`, KiB.
fn vm_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The daemon's config text for `binary`; with `api` false this build runs without the REST API
/// (`api.listen = ""`), like a build older than the API. Another build (`--compare`) gets the
/// config without `[api]` either way.
fn daemon_config_text(b: &Bench, binary: &Path, api: bool) -> String {
    let text = std::fs::read_to_string(config_for(b, binary)).expect("read bench config");
    if api || binary != b.binary {
        return text;
    }
    let main = text.split("\n[api]").next().unwrap_or_default();
    format!("{main}\n[api]\nlisten = \"\"\n")
}

/// Runs `binary` as a daemon (`--dry-run`, a cycle every `poll` seconds) on `b`, waits for its
/// first cycle, measures `cycles` steady cycles of CPU, then (with `strace`) attaches strace for
/// `cycles` more.
fn running_daemon(
    b: &Bench,
    binary: &Path,
    (api, strace): (bool, bool),
    (cycles, poll): (usize, u64),
    failures: &mut Vec<String>,
) -> Option<Running> {
    // Top-level keys go first: the bench config may end with a table.
    let text = format!(
        "{DAEMON_EXTRA}poll_interval = {poll}\n{}",
        daemon_config_text(b, binary, api)
    );
    let config = b.host.path("daemon.conf");
    std::fs::write(&config, text).expect("write daemon config");
    b.restore_state();
    let _ = std::fs::remove_file(b.host.path("var/log/lxc_autoscale.log"));
    let stderr = b.host.path("running.stderr");
    let mut child = binary_command(binary)
        .arg("--dry-run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
        .spawn()
        .expect("spawn the daemon");
    let pid = child.id();
    let timeout = Duration::from_secs(120);
    let result = if wait_cycles(b, 1, timeout) {
        let c0 = cycles_done(b);
        let cpu0 = process_cpu_ns(pid);
        let ok = wait_cycles(b, c0 + cycles, timeout);
        let cpu1 = process_cpu_ns(pid);
        let rss_mb = vm_status_kib(pid, "VmRSS:") as f64 / 1024.0;
        let hwm_mb = vm_status_kib(pid, "VmHWM:") as f64 / 1024.0;
        let syscalls = if ok && strace {
            strace_steady(b, pid, cycles)
        } else {
            None
        };
        ok.then(|| Running {
            api: api && binary == b.binary,
            cycles,
            cpu_ms_per_cycle: (cpu1 - cpu0) as f64 / 1e6 / cycles as f64,
            rss_mb,
            hwm_mb,
            syscalls,
        })
    } else {
        None
    };
    // SAFETY: `pid` is our child, not yet reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    let log = b.host.log_text();
    if result.is_none() {
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        failures.push(format!(
            "N={}: the running daemon did not complete its cycles: {err}",
            b.n
        ));
    }
    if log.contains("would run") {
        failures.push(format!(
            "N={}: a steady cycle of the running daemon planned a change",
            b.n
        ));
    }
    result
}

/// Attaches `strace -f -c` to `pid` right after a cycle ends, detaches right after `cycles` more
/// ended, and counts the calls. `None` (with a note) when strace is missing or cannot attach.
fn strace_steady(b: &Bench, pid: u32, cycles: usize) -> Option<Syscalls> {
    let out = b.host.path("strace-c.out");
    let err = b.host.path("strace-c.err");
    let start = cycles_done(b);
    wait_cycles(b, start + 1, Duration::from_secs(60));
    let c0 = cycles_done(b);
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-U", "calls,name", "-o"])
        .arg(&out)
        .arg("-p")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).ok()?)
        .spawn()
        .map_err(|e| eprintln!("strace unavailable ({e}): syscall figure skipped"))
        .ok()?;
    let attached = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&err).is_ok_and(|t| t.contains("attached")) {
        if Instant::now() > attached || strace.try_wait().ok().flatten().is_some() {
            let why = std::fs::read_to_string(&err).unwrap_or_default();
            eprintln!(
                "strace cannot attach ({}): syscall figure skipped",
                why.trim()
            );
            let _ = strace.kill();
            let _ = strace.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if cycles_done(b) != c0 {
        // The cycle it joined would count whole with part of its calls: too few per cycle.
        eprintln!("strace attached during a cycle: syscall figure skipped");
        // SAFETY: `strace` is our child, not yet reaped; SIGINT makes it detach.
        unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
        let _ = strace.wait();
        return None;
    }
    wait_cycles(b, c0 + cycles, Duration::from_secs(120));
    // SAFETY: `strace` is our child, not yet reaped; SIGINT makes it detach and write the summary.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let _ = strace.wait();
    let counted = cycles_done(b) - c0;
    let text = std::fs::read_to_string(&out).ok()?;
    Some(parse_strace_summary(&text, b.n, counted))
}

/// Calls per container per cycle from a `strace -c -U calls,name` summary.
fn parse_strace_summary(text: &str, n: usize, cycles: usize) -> Syscalls {
    let per = (n * cycles.max(1)) as f64;
    let mut by_name: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let calls: u64 = f.next()?.parse().ok()?;
            let name = f.next()?;
            (name != "total").then(|| (name.to_string(), calls as f64 / per))
        })
        .collect();
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    Syscalls {
        cycles,
        per_container: by_name.iter().map(|(_, c)| c).sum(),
        by_name,
    }
}

/// Whole-process CPU ms and peak RSS MB of this build and another, run alternately on one host.
struct Compared {
    other: PathBuf,
    cpu_ms: (f64, f64),
    rss_mb: (f64, f64),
    running: Option<Running>,
}

fn compare_whole_process(b: &Bench, other: &Path, mode: &Mode) -> Compared {
    let err = b.host.path("compare.stderr");
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    let (mut rss_mine, mut rss_theirs) = (0u64, 0u64);
    for _ in 0..mode.process_repeats(b.n) {
        for (binary, cpu, rss) in [
            (&b.binary, &mut mine, &mut rss_mine),
            (&other.to_path_buf(), &mut theirs, &mut rss_theirs),
        ] {
            b.restore_state();
            let run = run_child(once_command(b, binary, true, &err));
            if !run.success {
                let log = std::fs::read_to_string(&err).unwrap_or_default();
                eprintln!("{} --once failed: {log}", binary.display());
                cpu.push(f64::NAN);
                continue;
            }
            cpu.push(ms(run.cpu));
            *rss = (*rss).max(run.max_rss_kib);
        }
    }
    let mut ignored = Vec::new();
    let cycles = (mode.daemon_cycles(), mode.daemon_poll_interval());
    Compared {
        other: other.to_path_buf(),
        cpu_ms: (median(mine), median(theirs)),
        rss_mb: (rss_mine as f64 / 1024.0, rss_theirs as f64 / 1024.0),
        running: running_daemon(b, other, (false, true), cycles, &mut ignored),
    }
}

/// `mine_off`: this build's running daemon without the API at the same N.
fn print_compared(n: usize, c: &Compared, mine_off: Option<&Running>) {
    println!();
    println!(
        "N={n}, this build vs {} on the same host (whole-process runs alternating):",
        c.other.display()
    );
    println!(
        "  whole-process CPU {:.2} vs {:.2} ms; peak RSS {:.1} vs {:.1} MB",
        c.cpu_ms.0, c.cpu_ms.1, c.rss_mb.0, c.rss_mb.1
    );
    if let Some(r) = &c.running {
        let syscalls = r.syscalls.as_ref().map_or_else(
            || "skipped".to_string(),
            |s| {
                let top: Vec<String> = s
                    .by_name
                    .iter()
                    .take(6)
                    .map(|(name, c)| format!("{name} {c:.2}"))
                    .collect();
                format!("{:.2} ({})", s.per_container, top.join(", "))
            },
        );
        println!(
            "  the other build running: {syscalls} syscalls per container per steady cycle, {:.2} ms CPU per cycle, RSS {:.1} MB",
            r.cpu_ms_per_cycle, r.rss_mb
        );
        if let Some(m) = mine_off {
            println!(
                "  running daemon, REST API off (like for like): RSS {:.1} vs {:.1} MB, peak {:.1} vs {:.1} MB",
                m.rss_mb, r.rss_mb, m.hwm_mb, r.hwm_mb
            );
        }
    }
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

/// The running daemon's table, and the syscall target.
fn print_running(running: &[(usize, Running)]) {
    println!();
    println!("running daemon (--dry-run, history on, every history file present):");
    println!();
    println!("| N | REST API | syscalls per container per steady cycle | the most frequent | CPU ms per steady cycle, whole daemon | RSS MB between cycles | peak RSS MB |");
    println!("|---:|---|---:|---|---:|---:|---:|");
    for (n, r) in running {
        let (count, top) = match &r.syscalls {
            Some(s) => (
                format!("{:.2} (strace -f -c, {} cycles)", s.per_container, s.cycles),
                s.by_name
                    .iter()
                    .take(6)
                    .map(|(name, c)| format!("{name} {c:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None if r.api => ("skipped (strace unavailable)".into(), String::new()),
            None => ("not counted".into(), String::new()),
        };
        println!(
            "| {n} | {} | {count} | {top} | {:.2} ({} cycles) | {:.1} | {:.1} |",
            if r.api { "on" } else { "off" },
            r.cpu_ms_per_cycle,
            r.cycles,
            r.rss_mb,
            r.hwm_mb
        );
    }
    if let Some((n, s)) = running
        .iter()
        .rev()
        .find_map(|(n, r)| Some((n, r.syscalls.as_ref()?)))
    {
        println!();
        println!(
            "  {} syscalls per container per steady cycle at N={n}: {:.2} (target <= {TARGET_SYSCALLS_PER_CONTAINER})",
            verdict(s.per_container <= TARGET_SYSCALLS_PER_CONTAINER),
            s.per_container
        );
    }
}

/// Leaves `b`'s fake host on disk and prints how to run the binary on it.
fn keep_host(b: Bench) {
    println!(
        "N={}: {} --once --dry-run --config {}  (restore the seeded state first: cp {} {})",
        b.n,
        b.binary.display(),
        b.config.display(),
        b.host.path("seeded-state.json").display(),
        b.state_path().display()
    );
    std::fs::write(b.host.path("seeded-state.json"), &b.seeded_state).expect("write seeded state");
    let _ = b.host.dir.keep();
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
    let mut running = Vec::new();
    let mut compared = Vec::new();
    let binary = mode.binary.clone();

    for &n in &mode.sizes {
        eprintln!("building a fake host with {n} containers");
        let mut b = Bench::build(n, &binary);
        if mode.keep {
            keep_host(b);
            continue;
        }
        if let Some(repeats) = mode.in_process_only {
            let r = in_process(&b, repeats, &mut failures);
            println!(
                "N={n}: in-process CPU {:.2} ms, wall {:.2} ms, with the history figures {:.2} ms (medians of {repeats})",
                r.cpu_ms, r.wall_ms, r.cpu_ms_history
            );
            print_floor(n, &r);
            continue;
        }
        let inproc = in_process(&b, mode.repeats(n), &mut failures);
        let process = whole_process(&b, mode.process_repeats(n), &mut failures);
        rows.push(Row { n, inproc, process });
        let long_run = if mode.quick { n == 100 } else { n == 1000 };
        if long_run {
            let cycles = if mode.quick { 100 } else { 1000 };
            rss = Some(rss_run(&b, cycles, &mut failures));
        }
        if long_run || (100..=1000).contains(&n) {
            eprintln!("running the daemon over {n} containers");
            let cycles = (mode.daemon_cycles(), mode.daemon_poll_interval());
            // With the API as configured by default, and without it: like for like with a build
            // older than the API (`--compare`). Syscalls are counted with the API on.
            for (api, strace) in [(true, true), (false, false)] {
                if let Some(r) = running_daemon(&b, &binary, (api, strace), cycles, &mut failures) {
                    running.push((n, r));
                }
            }
            if let Some(other) = &mode.compare {
                compared.push((n, compare_whole_process(&b, other, &mode)));
            }
        }
        // Changes rewrite confs, so they come last for this host; 5000 would only time the fixture.
        if n <= 1000 {
            changes.push((n, change_cycle(&mut b, &mut failures)));
        }
    }

    if mode.keep || mode.in_process_only.is_some() {
        assert!(failures.is_empty(), "{failures:#?}");
        return;
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
    print_running(&running);
    for (n, c) in &compared {
        let mine_off = running.iter().find(|(m, r)| m == n && !r.api);
        print_compared(*n, c, mine_off.map(|(_, r)| r));
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
            "  {} in-process CPU at N=1000 with the history figures: {:.2} ms (target <= {TARGET_INPROC_CPU_MS} ms; their cost is {:.2} ms)",
            verdict(r.inproc.cpu_ms_history <= TARGET_INPROC_CPU_MS),
            r.inproc.cpu_ms_history,
            r.inproc.cpu_ms_history - r.inproc.cpu_ms
        );
        print!("  ");
        print_floor(r.n, &r.inproc);
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
