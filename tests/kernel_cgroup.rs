//! One test against the real kernel: fake cgroup files can hide how the kernel really formats
//! them. Two child cgroups are made in a writable cgroup2 hierarchy (`/sys/fs/cgroup`, or
//! `/sys/fs/cgroup/unified` on hybrid hosts), a busy process goes into one and an idle one into
//! the other, and the project's reading code must give exactly what the kernel's files say.
//!
//! Without a writable cgroup2 hierarchy the test prints `SKIPPED: <why>` on the real stderr (not
//! the captured one), so that CI output shows whether it ran or skipped. It asserts no
//! load-dependent figure: CI machines are shared.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lxc_autoscale::config::Config;
use lxc_autoscale::read::cgroup::{
    self, CgroupDir, CgroupReading, Outcomes, CPU_PRESSURE, CPU_STAT,
};
use lxc_autoscale::read::collect::Collector;

/// cgroup2 mounts to try, in order.
const HIERARCHIES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
/// Container-like names, so the collector's VMID listing finds them.
const BUSY: u32 = 101;
const IDLE: u32 = 102;
/// CPU the busy group must have used before the counters are compared, µs.
const BUSY_ENOUGH_USEC: u64 = 200_000;
/// The idle group runs a sleeping process: its whole usage (its start included) stays below
/// this, µs.
const IDLE_AT_MOST_USEC: u64 = 50_000;

/// Writes to the process's real stderr: the test harness captures only `eprintln!`.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Kills the processes and removes the groups, whatever happened in the test.
struct Cleanup {
    children: Vec<Child>,
    /// Removed in reverse order (children before their parent).
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // A frozen task only dies once thawed on older kernels.
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.dirs.iter().rev() {
            // The kernel may need a moment to drop a reaped task from the group.
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The first cgroup2 hierarchy where we can make a group, or why there is none.
fn writable_cgroup2() -> Result<PathBuf, String> {
    writable_cgroup2_in(&HIERARCHIES.map(Path::new))
}

/// `writable_cgroup2`, or `None` after printing why the test is skipped.
fn writable_cgroup2_or_say_skipped() -> Option<PathBuf> {
    writable_cgroup2()
        .map_err(|why| {
            say(&format!(
                "SKIPPED: kernel_cgroup: no writable cgroup2 hierarchy: {why}"
            ))
        })
        .ok()
}

/// `writable_cgroup2` over the given candidates.
fn writable_cgroup2_in(candidates: &[&Path]) -> Result<PathBuf, String> {
    let mut why = Vec::new();
    for &root in candidates {
        let is_cgroup2 = nix::sys::statfs::statfs(root)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        if !is_cgroup2 || !root.join("cgroup.controllers").is_file() {
            why.push(format!("{} is not a cgroup2 mount", root.display()));
            continue;
        }
        match probe(root) {
            Ok(()) => return Ok(root.to_path_buf()),
            Err(e) => why.push(e),
        }
    }
    Err(why.join("; "))
}

/// Whether a group can be made in `root`, has the freezer, and takes a process.
fn probe(root: &Path) -> Result<(), String> {
    // One name per call: the tests probe at once and must not trip on each other's group.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("lxc_autoscale_probe.{}.{n}", std::process::id()));
    std::fs::create_dir(&dir)
        .map_err(|e| format!("cannot create a group in {}: {e}", root.display()))?;
    let cleanup = Cleanup {
        children: vec![spawn(&["sleep", "600"])],
        dirs: vec![dir.clone()],
    };
    if !dir.join("cgroup.freeze").exists() {
        return Err(format!(
            "{} has no cgroup.freeze (kernel before 5.2)",
            root.display()
        ));
    }
    let pid = cleanup.children[0].id().to_string();
    let moved = std::fs::write(dir.join("cgroup.procs"), pid).map_err(|e| {
        format!(
            "cannot move a process into a group of {}: {e}",
            root.display()
        )
    });
    drop(cleanup);
    moved
}

fn spawn(argv: &[&str]) -> Child {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

/// `usage_usec` of a `cpu.stat` text, parsed here independently of the crate.
fn usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// `(some avg10, full avg10)` of a PSI text, parsed here independently of the crate.
fn psi_avg10(text: &str) -> (Option<f64>, Option<f64>) {
    let avg10 = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split(' ')
            .find_map(|f| f.strip_prefix("avg10="))?
            .parse()
            .ok()
    };
    (avg10("some "), avg10("full "))
}

/// Freezes a group and waits until the kernel says it is frozen: its counters then stand still.
fn freeze(dir: &Path) {
    std::fs::write(dir.join("cgroup.freeze"), "1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap();
        if events.lines().any(|l| l == "frozen 1") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} did not freeze", dir.display());
}

/// Makes `<root>/lxc_autoscale_kernel_test.<pid>/{101,102}` with `yes` in 101 and `sleep` in 102.
fn setup(root: &Path) -> (Cleanup, PathBuf) {
    let parent = root.join(format!("lxc_autoscale_kernel_test.{}", std::process::id()));
    let mut cleanup = Cleanup {
        children: Vec::new(),
        dirs: Vec::new(),
    };
    let groups = [parent.join(BUSY.to_string()), parent.join(IDLE.to_string())];
    for dir in std::iter::once(&parent).chain(&groups) {
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        cleanup.dirs.push(dir.clone());
    }
    cleanup.children.push(spawn(&["yes"]));
    cleanup.children.push(spawn(&["sleep", "600"]));
    for (child, dir) in cleanup.children.iter().zip(&groups) {
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap_or_else(|e| {
            panic!("cannot move pid {} into {}: {e}", child.id(), dir.display())
        });
    }
    (cleanup, parent)
}

/// Waits (bounded, not timed) until the busy group has used some CPU.
fn wait_until_busy(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.join(CPU_STAT)).unwrap();
        if usage_usec(&text).is_some_and(|u| u >= BUSY_ENOUGH_USEC) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "busy group never used CPU: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One cycle's reading of a group through the project's kept descriptors (`pread` at offset 0).
fn read(dir: &mut CgroupDir) -> CgroupReading {
    dir.start_cycle();
    cgroup::read_container(
        dir,
        &mut cgroup::ReadBuf::default(),
        &mut Outcomes::default(),
    )
    .expect("group vanished")
}

/// With the groups frozen: the project's reading equals the kernel's `cpu.stat`; returns the
/// `usage_usec` of each group.
fn check_cpu_stat(busy_dir: &Path, idle_dir: &Path, kept: [&mut CgroupDir; 2]) -> (u64, u64) {
    let [busy_cg, idle_cg] = kept;
    let busy = read(busy_cg);
    let idle = read(idle_cg);
    let busy_text = std::fs::read_to_string(busy_dir.join(CPU_STAT)).unwrap();
    let idle_text = std::fs::read_to_string(idle_dir.join(CPU_STAT)).unwrap();
    let busy_usage = usage_usec(&busy_text).expect("usage_usec in the kernel's cpu.stat");
    let idle_usage = usage_usec(&idle_text).expect("usage_usec in the kernel's cpu.stat");
    assert_eq!(busy.cpu.usage_usec, Some(busy_usage), "{busy_text}");
    assert_eq!(idle.cpu.usage_usec, Some(idle_usage), "{idle_text}");
    assert_eq!(cgroup::parse_cpu_stat(&busy_text), busy.cpu);
    assert!(busy_usage >= BUSY_ENOUGH_USEC, "{busy_text}");
    assert!(
        idle_usage < IDLE_AT_MOST_USEC,
        "idle group used CPU: {idle_text}"
    );
    assert!(busy_usage > idle_usage);
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(busy_dir).unwrap());
    assert_eq!(busy.cgroup_id, Some(inode));
    (busy_usage, idle_usage)
}

/// The real `cpu.pressure` parses: its `some` line, and the same figures as an independent parse.
fn check_cpu_pressure(dir: &Path) {
    let text = std::fs::read_to_string(dir.join(CPU_PRESSURE)).unwrap();
    let psi = cgroup::parse_psi(&text);
    let (some, full) = psi_avg10(&text);
    assert!(some.is_some(), "{text}");
    assert_eq!((psi.some_avg10, psi.full_avg10), (some, full), "{text}");
    let mut kept = CgroupDir::open(dir).unwrap();
    assert!(read(&mut kept).psi_cpu.some_avg10.is_some(), "{text}");
}

/// The whole collector on the real tree lists the groups as containers and reads the same frozen
/// counters. Returns whether the memory controller is on (without it, memory is `None`).
fn check_collector(parent: &Path, usage: [(u32, u64); 2]) -> bool {
    let confs = tempfile::tempdir().unwrap();
    for (vmid, _) in usage {
        let conf = confs.path().join(format!("{vmid}.conf"));
        std::fs::write(conf, "cores: 1\nmemory: 512\n").unwrap();
    }
    let mut cfg = Config::default();
    cfg.cgroup_root = parent.to_path_buf();
    cfg.pve_lxc_dir = confs.path().to_path_buf();
    let snap = Collector::new().collect(&cfg, 1);
    let read: Vec<(u32, Option<u64>)> = snap
        .containers
        .iter()
        .map(|c| (c.vmid, c.cpu_usage_usec))
        .collect();
    assert_eq!(read, usage.map(|(vmid, u)| (vmid, Some(u))));
    let memory_controller = parent
        .join(BUSY.to_string())
        .join("memory.current")
        .exists();
    if !memory_controller {
        assert_eq!(snap.containers[0].memory_current_bytes, None);
    }
    memory_controller
}

#[test]
fn real_kernel_cgroups_are_read_exactly_or_the_test_prints_skipped() {
    let Some(root) = writable_cgroup2_or_say_skipped() else {
        return;
    };
    let (cleanup, parent) = setup(&root);
    let (busy_dir, idle_dir) = (parent.join(BUSY.to_string()), parent.join(IDLE.to_string()));
    // Opened once and read while running, then re-read after the freeze: the kept-descriptor
    // path the daemon uses every cycle.
    let mut busy_cg = CgroupDir::open(&busy_dir).unwrap();
    let mut idle_cg = CgroupDir::open(&idle_dir).unwrap();
    read(&mut busy_cg);
    read(&mut idle_cg);
    wait_until_busy(&busy_dir);
    // Frozen, the counters stand still, so two reads must agree exactly.
    freeze(&busy_dir);
    freeze(&idle_dir);
    let (busy_usage, idle_usage) =
        check_cpu_stat(&busy_dir, &idle_dir, [&mut busy_cg, &mut idle_cg]);
    drop((busy_cg, idle_cg));
    check_cpu_pressure(&busy_dir);
    check_cpu_pressure(&idle_dir);
    let memory = check_collector(&parent, [(BUSY, busy_usage), (IDLE, idle_usage)]);
    say(&format!(
        "kernel_cgroup: ran on {} (busy {busy_usage} us, idle {idle_usage} us, memory controller {})",
        root.display(),
        if memory { "on" } else { "off" }
    ));
    drop(cleanup);
    assert!(!parent.exists(), "{} left behind", parent.display());
}

#[test]
fn the_skip_reason_names_every_hierarchy_tried() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    assert_eq!(
        writable_cgroup2_in(&[tmp.path(), &missing]),
        Err(format!(
            "{} is not a cgroup2 mount; {} is not a cgroup2 mount",
            tmp.path().display(),
            missing.display()
        ))
    );
}

/// Writing 0 to `cgroup.pressure` (Linux 6.1 and later) hides a group's three pressure files in
/// an unchanged directory: each kept descriptor answers ENODEV once. The container runs on, so it
/// must stay in the snapshot with its CPU figure, and only the pressure figures go. Three hidden
/// files once dropped it as stopped.
#[test]
fn hidden_pressure_files_leave_a_running_container_in_the_snapshot_or_the_test_prints_skipped() {
    let Some(root) = writable_cgroup2_or_say_skipped() else {
        return;
    };
    let parent = root.join(format!("lxc_autoscale_kernel_psi.{}", std::process::id()));
    let dir = parent.join(BUSY.to_string());
    let mut cleanup = Cleanup {
        children: Vec::new(),
        dirs: Vec::new(),
    };
    for d in [&parent, &dir] {
        std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        cleanup.dirs.push(d.clone());
    }
    let confs = tempfile::tempdir().unwrap();
    std::fs::write(confs.path().join("101.conf"), "cores: 1\nmemory: 512\n").unwrap();
    let mut cfg = Config::default();
    cfg.cgroup_root = parent.clone();
    cfg.pve_lxc_dir = confs.path().to_path_buf();
    let mut collector = Collector::new();
    collector.read_extra = true;
    let first = collector.collect(&cfg, 1);
    assert_eq!(first.containers.len(), 1);
    let failed_first: Vec<&'static str> =
        collector.read_failures().iter().map(|f| f.file).collect();
    if !dir.join(CPU_PRESSURE).exists()
        || std::fs::write(dir.join("cgroup.pressure"), "0\n").is_err()
    {
        say("SKIPPED: kernel_cgroup: no per-group pressure switch (Linux < 6.1, or PSI off)");
        return;
    }
    assert!(first.containers[0].extra.psi_cpu_some_avg10.is_some());
    let second = collector.collect(&cfg, 2);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir).unwrap());
    let got: Vec<(u32, Option<u64>)> = second
        .containers
        .iter()
        .map(|c| (c.vmid, c.cgroup_id))
        .collect();
    assert_eq!(got, [(BUSY, Some(ino))], "running container 101 must stay");
    let ct = &second.containers[0];
    assert!(ct.cpu_usage_usec.is_some());
    assert_eq!(
        (ct.extra.psi_cpu_some_avg10, ct.extra.psi_io_some_avg10),
        (None, None)
    );
    // No new problem: hidden pressure files are no data (without the memory controller, as
    // here, its files are missing in both cycles).
    let files =
        |c: &Collector| -> Vec<&'static str> { c.read_failures().iter().map(|f| f.file).collect() };
    assert_eq!(files(&collector), failed_first);
    say(&format!(
        "kernel_cgroup: hidden pressure files ran on {}",
        root.display()
    ));
    drop(collector);
    drop(cleanup);
    assert!(!parent.exists(), "{} left behind", parent.display());
}
