//! Reads one `Snapshot` from the host's files. Spawns no process.
//!
//! The files of a container's cgroup are opened once and re-read with `pread` every cycle: a
//! steady cycle costs one read per figure and one `statx` per conf, instead of an open, a read and
//! a close per file. One inotify instance watches the kept directories (`read::watch`): its one
//! read per cycle says which directories had files created, removed or renamed, and whose
//! `memory.events` changed; the others' OOM-kill figure stands. The network counters of every veth
//! come from one read of `<proc_root>/net/dev` per cycle.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::read::cgroup::{
    self, CgFile, CgroupDir, CgroupReading, ExtraReading, Notice, Outcome, Outcomes, ReadBuf,
};
use crate::read::hostproc;
use crate::read::pveconf::{conf_path, ConfCache};
use crate::read::snapshot::{
    ContainerExtra, ContainerSample, Counters, CtConf, EpochUsec, HostSample, Snapshot,
};
use crate::read::watch::DirWatch;
use nix::sys::inotify::WatchDescriptor;

/// Reads the host and every running container. Keeps buffers, the open descriptors of every
/// running container's cgroup files and a cache of parsed conf files (re-parsed only when mtime or
/// size changes) across cycles.
#[derive(Debug, Default)]
pub struct Collector {
    confs: ConfCache,
    /// Contents of the file being parsed; reused so that a cycle does not allocate per file.
    buf: ReadBuf,
    /// Whether to read the history-only figures of `ContainerSample::extra` (io, pids, swap,
    /// network, rootfs, io pressure). Off, they stay `None`; the figures the decision needs
    /// (throttling, OOM kills, cpu and memory pressure) are read either way.
    pub read_extra: bool,
    /// One cycle only (`--once`): every file is read once, so each container's descriptors are
    /// closed right after it is read, while the kernel's structures are still hot, instead of
    /// being kept and all closed at exit (which costs about 10 ms more at 1000 containers).
    pub one_shot: bool,
    /// The cgroup root the kept descriptors belong to; another root (a reload) drops them.
    cgroup_root: PathBuf,
    /// Running containers by vmid. Boxed: the table has up to twice as many buckets as entries,
    /// and an unboxed `Ct` (about 190 bytes) would make each empty bucket as large (0.4 MB at 1000
    /// containers, against 32 KiB of pointers).
    cgroups: HashMap<u32, Box<Ct>>,
    /// Byte counters of the host-side veth interfaces read this cycle, sorted by vmid.
    veth_bytes: Vec<VethBytes>,
    /// What could not be read in the last `collect`, for the service to log.
    failures: Vec<ReadFailure>,
    /// Soft `RLIMIT_NOFILE` known to be in place, and whether a too low hard limit was reported.
    fd_limit: Option<u64>,
    fd_limit_warned: bool,
    /// Overrides `keep_at_most` (tests).
    keep_cap: Option<usize>,
    /// Cycles collected so far.
    cycle: u64,
    /// Change notices of the kept cgroup directories.
    watches: Watches,
}

/// The kept directories' watches: which container each belongs to.
#[derive(Debug, Default)]
struct Watches {
    /// `None` until the first kept directory, or when no instance could be made.
    inner: Option<DirWatch>,
    by_wd: HashMap<WatchDescriptor, u32>,
    /// The instance or a watch could not be made, and this was logged.
    warned: bool,
}

impl Watches {
    /// Watches the cgroup directory of `vmid`; `None` when that cannot be done (the directory is
    /// then checked with an `fstat` every cycle). Running out of instances or watches is logged
    /// once.
    fn add(&mut self, root: &Path, vmid: u32) -> Option<WatchDescriptor> {
        if self.inner.is_none() && !self.warned {
            match DirWatch::new() {
                Ok(w) => self.inner = Some(w),
                Err(e) => self.warn(&e, "cannot create an inotify instance"),
            }
        }
        let w = self.inner.as_ref()?;
        match w.add(&root.join(vmid.to_string())) {
            Ok(wd) => {
                self.by_wd.insert(wd, vmid);
                Some(wd)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.warn(&e, "cannot watch a cgroup directory");
                None
            }
        }
    }

    fn warn(&mut self, e: &io::Error, what: &str) {
        if !std::mem::replace(&mut self.warned, true) {
            tracing::warn!(
                error = %e,
                "{what}; such containers are checked with an fstat every cycle (raise fs.inotify.max_user_watches or max_user_instances)"
            );
        }
    }

    /// Hands the pending notices to the kept directories they are about.
    fn drain(&mut self, cgroups: &mut HashMap<u32, Box<Ct>>) {
        let Some(w) = &self.inner else {
            return;
        };
        let by_wd = &mut self.by_wd;
        let drained = w.drain(|wd, notice| {
            if notice == Notice::Lost {
                cgroups.values_mut().for_each(|c| c.dir.notice(notice));
                return;
            }
            let Some(&vmid) = by_wd.get(&wd) else {
                return;
            };
            if let Some(ct) = cgroups.get_mut(&vmid).filter(|c| c.wd == Some(wd)) {
                ct.dir.notice(notice);
                if notice == Notice::Ended {
                    ct.wd = None;
                }
            }
            if notice == Notice::Ended {
                by_wd.remove(&wd);
            }
        });
        if let Err(e) = drained {
            tracing::debug!(error = %e, "cannot read inotify notices; checking every directory");
            cgroups
                .values_mut()
                .for_each(|c| c.dir.notice(Notice::Lost));
        }
    }

    /// Ends the watches of directories no longer kept.
    fn prune(&mut self, cgroups: &HashMap<u32, Box<Ct>>) {
        let Some(w) = &self.inner else {
            return;
        };
        if self.by_wd.len() <= cgroups.len() {
            return;
        }
        self.by_wd.retain(|&wd, vmid| {
            let kept = cgroups.get(vmid).is_some_and(|c| c.wd == Some(wd));
            if !kept {
                w.remove(wd);
            }
            kept
        });
    }
}

/// One running container's kept state.
#[derive(Debug)]
struct Ct {
    dir: CgroupDir,
    /// The watch of `dir`, when there is one.
    wd: Option<WatchDescriptor>,
    /// First pid of `ns/cgroup.procs`, read once per container lifetime (and again if it exits).
    init_pid: Option<u32>,
    rootfs: Option<Rootfs>,
}

/// A `statvfs` of a container's root filesystem: (used, total) bytes.
#[derive(Debug, Clone, Copy)]
struct Rootfs {
    taken_at_usec: EpochUsec,
    used_bytes: Option<u64>,
    total_bytes: Option<u64>,
}

/// How long a rootfs figure is reused: disk usage moves slowly, and a `statvfs` through
/// `/proc/<pid>/root` per container per cycle would be the largest syscall cost left. The
/// recorded `rootfs_*` figures are therefore up to this old.
pub const ROOTFS_REFRESH_USEC: i64 = 600 * 1_000_000;

/// Byte counters of one host-side veth (`veth<vmid>i<N>`) from `/proc/net/dev`; `None` when its
/// figure there is garbled.
#[derive(Debug, Clone, Copy)]
struct VethBytes {
    vmid: u32,
    host_rx: Option<u64>,
    host_tx: Option<u64>,
}

/// Descriptors budgeted per container: its directory and its ten cgroup files, and a few spare.
const FDS_PER_CONTAINER: u64 = 14;
/// Descriptors for everything else (logs, state, listings, `pct` pipes).
const FD_SLACK: u64 = 256;

/// The `file` of a `ReadFailure` about the container's conf (`<pve_lxc_dir>/<vmid>.conf`).
pub const CONF_FILE: &str = "conf";

/// A figure of a running container that could not be read this cycle, for the service to log
/// (once per vmid and file). A container that is gone is not a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFailure {
    pub vmid: u32,
    /// A cgroup file name (`cgroup::CPU_STAT`, ...) or `CONF_FILE`.
    pub file: &'static str,
    pub path: PathBuf,
    pub problem: Problem,
    /// The file is read only when history or export is on.
    pub history_only: bool,
}

/// Why a file gave no figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file does not exist although it should.
    Missing,
    /// Not UTF-8, or without the expected figure.
    Garbled,
    /// The open or read failed with this errno.
    Failed(i32),
    /// The conf could not be used; the text says why.
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("file missing"),
            Problem::Garbled => f.write_str("unexpected content"),
            Problem::Failed(errno) => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
            Problem::Invalid(text) => f.write_str(text),
        }
    }
}

/// One pass over a container's cgroup files.
struct Pass {
    reading: CgroupReading,
    extra: Option<ExtraReading>,
    outcomes: Outcomes,
}

impl Pass {
    fn missing_required(&self) -> bool {
        CgFile::EVERY_CYCLE
            .iter()
            .any(|&f| f.required() && self.outcomes.get(f) == Outcome::Missing)
    }
}

impl Collector {
    /// A collector that reads every figure, history-only ones included.
    pub fn new() -> Self {
        Collector {
            read_extra: true,
            ..Collector::default()
        }
    }

    /// One snapshot. `now_usec` is stamped as the time of the reading. Per-container problems
    /// (missing conf, unreadable file) leave that figure `None` and are listed in
    /// `read_failures`; they never fail the whole snapshot.
    pub fn collect(&mut self, cfg: &Config, now_usec: EpochUsec) -> Snapshot {
        self.failures.clear();
        let listed = match cgroup::list_cgroups(&cfg.cgroup_root) {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(
                    path = %cfg.cgroup_root.display(),
                    error = %format!("{e:#}"),
                    "cannot list running containers; seeing none this cycle"
                );
                Vec::new()
            }
        };
        self.collect_listed(cfg, &listed, now_usec)
    }

    /// What could not be read in the last `collect`, sorted by vmid.
    pub fn read_failures(&self) -> &[ReadFailure] {
        &self.failures
    }

    /// Running containers whose cgroup descriptors are kept.
    pub fn open_cgroups(&self) -> usize {
        self.cgroups.len()
    }

    /// Cgroup files opened so far by the kept containers; a steady cycle adds none.
    pub fn files_opened(&self) -> u64 {
        self.cgroups.values().map(|c| c.dir.opens()).sum()
    }

    /// Cgroup files read by the kept containers so far.
    pub fn files_read(&self) -> u64 {
        self.cgroups.values().map(|c| c.dir.reads()).sum()
    }

    /// The snapshot of the given running containers, `(vmid, directory inode)` sorted by vmid.
    fn collect_listed(
        &mut self,
        cfg: &Config,
        listed: &[(u32, u64)],
        now_usec: EpochUsec,
    ) -> Snapshot {
        if self.cgroup_root != cfg.cgroup_root {
            self.cgroups.clear();
            self.cgroup_root.clone_from(&cfg.cgroup_root);
        }
        let running = |vmid: u32| listed.binary_search_by_key(&vmid, |&(v, _)| v).is_ok();
        // Stopped containers give their descriptors back.
        self.cgroups.retain(|&vmid, _| running(vmid));
        self.watches.drain(&mut self.cgroups);
        // One allocation of the final size instead of doubling (and briefly holding both tables).
        self.cgroups
            .reserve(listed.len().saturating_sub(self.cgroups.len()));
        self.ensure_fd_room(listed.len());
        self.cycle += 1;
        self.veth_bytes.clear();
        if self.read_extra {
            // Most containers have one veth: one allocation of about the final size.
            self.veth_bytes.reserve(listed.len());
            self.read_veth_bytes(&cfg.proc_root);
        }
        let mut containers = Vec::with_capacity(listed.len());
        self.confs.open_dir(&cfg.pve_lxc_dir);
        for &(vmid, ino) in listed {
            if let Some(c) = self.sample(cfg, vmid, ino, now_usec) {
                containers.push(c);
            }
        }
        self.confs.close_dir();
        self.confs.retain(running);
        self.watches.prune(&self.cgroups);
        let host = self.read_host(&cfg.proc_root);
        Snapshot {
            taken_at_usec: now_usec,
            host,
            containers,
        }
    }

    /// The sample of one listed container; `None` when it is gone.
    fn sample(
        &mut self,
        cfg: &Config,
        vmid: u32,
        listed_ino: u64,
        now_usec: EpochUsec,
    ) -> Option<ContainerSample> {
        let Some(pass) = self.read_cgroup(&cfg.cgroup_root, vmid, listed_ino) else {
            // Listed a moment ago, gone now: the container stopped, so it is not running.
            tracing::debug!(vmid, "cgroup vanished while reading; container stopped");
            return None;
        };
        self.note_outcomes(cfg, vmid, &pass.outcomes);
        let reading = pass.reading;
        let mut extra = every_cycle_extra(&reading);
        if let Some(x) = pass.extra {
            let (used, total) = self.rootfs(cfg, vmid, now_usec);
            let (rx, tx) = self.net_bytes(vmid);
            extra.counters.io_read_bytes = x.io.read_bytes;
            extra.counters.io_write_bytes = x.io.write_bytes;
            extra.counters.net_rx_bytes = rx;
            extra.counters.net_tx_bytes = tx;
            extra.swap_current_bytes = x.swap_current_bytes;
            extra.pids_current = x.pids_current;
            extra.psi_io_some_avg10 = x.psi_io_some_avg10;
            extra.rootfs_used_bytes = used;
            extra.rootfs_total_bytes = total;
        }
        let conf = self.conf(cfg, vmid);
        if self.one_shot {
            self.cgroups.remove(&vmid);
        }
        Some(ContainerSample {
            vmid,
            conf,
            cgroup_id: reading.cgroup_id,
            cpu_usage_usec: reading.cpu.usage_usec,
            memory_current_bytes: reading.memory_current_bytes,
            memory_file_bytes: reading.memory_stat.file_bytes,
            memory_shmem_bytes: reading.memory_stat.shmem_bytes,
            memory_inactive_file_bytes: reading.memory_stat.inactive_file_bytes,
            extra,
        })
    }

    /// Reads the cgroup files of `vmid` through its kept descriptors, opening them when the
    /// container is new or restarted (`listed_ino` differs from the kept directory's). `None` when
    /// the container is gone. When a read finds its directory removed, or a file that every cgroup
    /// has missing, the directory is looked up again: gone, restarted (read anew from the new
    /// directory) or unchanged (a file really is missing). Figures of one pass all come from one
    /// directory instance.
    fn read_cgroup(&mut self, root: &Path, vmid: u32, listed_ino: u64) -> Option<Pass> {
        if !self.cgroups.contains_key(&vmid) && self.cgroups.len() >= self.keep_at_most() {
            return read_unkept(root, vmid, &mut self.buf, self.read_extra);
        }
        let mut want_ino = listed_ino;
        // A restart between listing and reading takes one more pass. In an unchanged directory
        // a file the kernel hid (PSI turned off through `cgroup.pressure`, a controller
        // disabled) answers ENODEV on its kept descriptor once and is found missing on the next
        // pass, so each hidden file may cost a pass of its own: three passes dropped a running
        // container whose three pressure files were hidden at once.
        for _ in 0..cgroup::CG_FILES + 2 {
            let ct = kept_cgroup(&mut self.cgroups, root, vmid, want_ino)?;
            if ct.wd.is_none() && ct.dir.is_new() && !self.one_shot {
                // Watched after the directory was opened: a watch that lands on a newer
                // directory of the same name only causes needless reads of the old one.
                ct.wd = self.watches.add(root, vmid);
                ct.dir.set_watched(ct.wd.is_some());
            }
            let result = read_pass(&mut ct.dir, &mut self.buf, self.read_extra);
            if let Ok(pass) = &result {
                if !pass.missing_required() {
                    return result.ok();
                }
            }
            match cgroup_ino(root, vmid) {
                None => break,
                Some(ino) if ino == ct.dir.ino() => {
                    if let Ok(pass) = result {
                        return Some(pass);
                    }
                }
                Some(ino) => want_ino = ino,
            }
        }
        self.cgroups.remove(&vmid);
        None
    }

    /// Containers whose descriptors may be kept under the soft `RLIMIT_NOFILE`; the others are
    /// read by opening and closing their files every cycle (as many syscalls as before the
    /// descriptors were kept, and no rootfs figure).
    fn keep_at_most(&self) -> usize {
        if let Some(cap) = self.keep_cap {
            return cap;
        }
        self.fd_limit.map_or(usize::MAX, |l| {
            let room = l.saturating_sub(FD_SLACK);
            usize::try_from(room / FDS_PER_CONTAINER).unwrap_or(usize::MAX)
        })
    }

    /// Adds the problems of a pass to `failures`. Missing optional files (no PSI, no swap
    /// accounting, a controller off) are no data, not a problem.
    fn note_outcomes(&mut self, cfg: &Config, vmid: u32, outcomes: &Outcomes) {
        for file in CgFile::EVERY_CYCLE.into_iter().chain(CgFile::HISTORY) {
            let problem = match outcomes.get(file) {
                Outcome::NotRead | Outcome::Ok => continue,
                Outcome::Missing if !file.required() => continue,
                Outcome::Missing => Problem::Missing,
                Outcome::Garbled => Problem::Garbled,
                Outcome::Failed(errno) => Problem::Failed(errno),
            };
            let mut path = cfg.cgroup_root.join(vmid.to_string());
            path.push(file.name());
            self.failures.push(ReadFailure {
                vmid,
                file: file.name(),
                path,
                problem,
                history_only: file.history_only(),
            });
        }
    }

    /// The main section of the conf of `vmid`; a missing or unusable conf is a failure.
    fn conf(&mut self, cfg: &Config, vmid: u32) -> Option<CtConf> {
        let problem = match self.confs.get(&cfg.pve_lxc_dir, vmid) {
            Ok(Some(conf)) => return Some(conf),
            Ok(None) => Problem::Missing,
            Err(e) => Problem::Invalid(format!("{e:#}")),
        };
        self.failures.push(ReadFailure {
            vmid,
            file: CONF_FILE,
            path: conf_path(&cfg.pve_lxc_dir, vmid),
            problem,
            history_only: false,
        });
        None
    }

    /// Raises the soft `RLIMIT_NOFILE` (up to the hard limit) when `containers` may need more
    /// descriptors than it allows; checked again only when the count outgrows what was set.
    fn ensure_fd_room(&mut self, containers: usize) {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let need = (containers as u64)
            .saturating_mul(FDS_PER_CONTAINER)
            .saturating_add(FD_SLACK);
        if self.fd_limit.is_some_and(|l| l >= need) {
            return;
        }
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return;
        };
        let mut limit = soft;
        if soft < need {
            let new = need.max(soft.saturating_mul(2)).min(hard);
            if setrlimit(Resource::RLIMIT_NOFILE, new, hard).is_ok() {
                limit = new;
            }
        }
        self.fd_limit = Some(limit);
        if limit < need && !self.fd_limit_warned {
            self.fd_limit_warned = true;
            tracing::warn!(
                containers,
                limit,
                need,
                "RLIMIT_NOFILE is too low to keep every cgroup file open; the rest are opened every cycle (raise LimitNOFILE=)"
            );
        }
    }

    /// Used and total bytes of the root filesystem of `vmid`, taken at most every
    /// `ROOTFS_REFRESH_USEC`. Quietly `None` when it cannot be read (no init pid, the process
    /// exited, no permission): the figure is optional.
    fn rootfs(
        &mut self,
        cfg: &Config,
        vmid: u32,
        now_usec: EpochUsec,
    ) -> (Option<u64>, Option<u64>) {
        let Some(ct) = self.cgroups.get_mut(&vmid) else {
            return (None, None);
        };
        if let Some(r) = ct.rootfs {
            let age = now_usec.saturating_sub(r.taken_at_usec);
            if (0..ROOTFS_REFRESH_USEC).contains(&age) {
                return (r.used_bytes, r.total_bytes);
            }
        }
        let mut figures = (None, None);
        // A kept init pid that has exited gives way to a fresh one from `ns/cgroup.procs`.
        for fresh_pid in [ct.init_pid.is_none(), true] {
            if fresh_pid {
                ct.init_pid = ct.dir.init_pid(&mut self.buf);
            }
            let Some(pid) = ct.init_pid else {
                break;
            };
            if let Some(f) = statvfs_root(cfg, pid, vmid) {
                figures = f;
                break;
            }
            if fresh_pid {
                break;
            }
        }
        ct.rootfs = Some(Rootfs {
            taken_at_usec: now_usec,
            used_bytes: figures.0,
            total_bytes: figures.1,
        });
        figures
    }

    /// Bytes received and sent by container `vmid` (its view), summed over its veth peers.
    /// `None` when it has no veth or one counter is garbled: a partial sum would look like a
    /// counter that went backwards.
    fn net_bytes(&self, vmid: u32) -> (Option<u64>, Option<u64>) {
        let start = self.veth_bytes.partition_point(|v| v.vmid < vmid);
        let mine = self.veth_bytes[start..]
            .iter()
            .take_while(|v| v.vmid == vmid);
        let mut host_rx = Some(0u64);
        let mut host_tx = Some(0u64);
        let mut any = false;
        for v in mine {
            any = true;
            host_rx = host_rx.zip(v.host_rx).and_then(|(t, b)| t.checked_add(b));
            host_tx = host_tx.zip(v.host_tx).and_then(|(t, b)| t.checked_add(b));
        }
        if !any {
            return (None, None);
        }
        // The host side of a veth pair receives what the container sends.
        (host_tx, host_rx)
    }

    /// Fills `veth_bytes` from `<proc_root>/net/dev`, one read for every veth instead of two
    /// sysfs files per veth. A re-created interface shows its own counters from its first
    /// reading, as a counter reset. When the file cannot be read whole, no container has network
    /// figures this cycle.
    fn read_veth_bytes(&mut self, proc_root: &Path) {
        let path = proc_root.join(hostproc::NET_DEV);
        let veths = &mut self.veth_bytes;
        let read = for_each_line(&path, |line| {
            let Some(l) = hostproc::parse_net_dev_line(line) else {
                return;
            };
            if let Some(vmid) = parse_veth_name(l.iface) {
                veths.push(VethBytes {
                    vmid,
                    host_rx: l.rx_bytes,
                    host_tx: l.tx_bytes,
                });
            }
        });
        if let Err(e) = read {
            tracing::debug!(path = %path.display(), error = %e, "cannot read network counters");
            self.veth_bytes.clear();
        }
        self.veth_bytes.sort_unstable_by_key(|v| v.vmid);
    }

    /// Host figures. Problems are gathered into one warning so that a broken procfs logs once per
    /// cycle, not once per figure.
    fn read_host(&mut self, proc_root: &Path) -> HostSample {
        let mut problems: Vec<String> = Vec::new();

        let path = proc_root.join(hostproc::STAT);
        let stat = match read_text(&path, &mut self.buf) {
            Ok(text) => hostproc::parse_stat(text),
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", path.display()));
                hostproc::ProcStat::default()
            }
        };
        if problems.is_empty() && (stat.cpus.is_none() || stat.ticks.is_none()) {
            problems.push(format!("no cpu lines in {}", path.display()));
        }

        let path = proc_root.join(hostproc::MEMINFO);
        let mem = match read_text(&path, &mut self.buf) {
            Ok(text) => {
                let mem = hostproc::parse_meminfo(text);
                if mem.mem_total_kib.is_none() || mem.mem_available_kib.is_none() {
                    problems.push(format!("no MemTotal or MemAvailable in {}", path.display()));
                }
                mem
            }
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", path.display()));
                hostproc::MemInfo::default()
            }
        };

        if !problems.is_empty() {
            tracing::warn!(
                problems = %problems.join("; "),
                "host figures unavailable this cycle"
            );
        }
        HostSample {
            cpus: stat.cpus,
            cpu_ticks: stat.ticks,
            boot_time: stat.boot_time,
            mem_total_kib: mem.mem_total_kib,
            mem_available_kib: mem.mem_available_kib,
        }
    }

    /// Empties the conf cache (`--once`, once it has its snapshot); the parse count stays.
    pub fn forget_confs(&mut self) {
        self.confs.clear();
    }

    /// Conf files read and parsed so far; a cycle over settled confs adds none.
    pub fn conf_parses(&self) -> u64 {
        self.confs.parses()
    }
}

/// The kept entry of `vmid`, opened anew when there is none or when its directory is not the one
/// with inode `ino` (the container restarted: its old descriptors are dropped). `None` when the
/// directory does not exist.
fn kept_cgroup<'a>(
    cgroups: &'a mut HashMap<u32, Box<Ct>>,
    root: &Path,
    vmid: u32,
    ino: u64,
) -> Option<&'a mut Ct> {
    if !cgroups.get(&vmid).is_some_and(|c| c.dir.ino() == ino) {
        cgroups.remove(&vmid);
        match CgroupDir::open(&root.join(vmid.to_string())) {
            Ok(dir) => {
                let ct = Ct {
                    dir,
                    wd: None,
                    init_pid: None,
                    rootfs: None,
                };
                cgroups.insert(vmid, Box::new(ct));
            }
            Err(e) => {
                tracing::debug!(vmid, error = %e, "cannot open cgroup dir");
                return None;
            }
        }
    }
    cgroups.get_mut(&vmid).map(|ct| &mut **ct)
}

/// One pass over the cgroup of `vmid` through descriptors opened for it and closed after it.
/// `None` when the directory cannot be opened (gone) or vanishes twice.
fn read_unkept(root: &Path, vmid: u32, buf: &mut ReadBuf, history: bool) -> Option<Pass> {
    for _ in 0..2 {
        let mut dir = CgroupDir::open(&root.join(vmid.to_string())).ok()?;
        if let Ok(pass) = read_pass(&mut dir, buf, history) {
            return Some(pass);
        }
    }
    None
}

/// Inode of `<root>/<vmid>` now, `None` when it does not exist.
fn cgroup_ino(root: &Path, vmid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(root.join(vmid.to_string()))
        .ok()
        .map(|m| m.ino())
}

/// One cycle's reads of a kept cgroup directory.
fn read_pass(
    dir: &mut CgroupDir,
    buf: &mut ReadBuf,
    history: bool,
) -> Result<Pass, cgroup::Vanished> {
    dir.start_cycle();
    let mut outcomes = Outcomes::default();
    let reading = cgroup::read_container(dir, buf, &mut outcomes)?;
    let extra = if history {
        Some(cgroup::read_extra(dir, buf, &mut outcomes)?)
    } else {
        None
    };
    Ok(Pass {
        reading,
        extra,
        outcomes,
    })
}

/// The figures of `ContainerExtra` read on every cycle, whatever `read_extra` says: the decision
/// and its model use them.
fn every_cycle_extra(reading: &CgroupReading) -> ContainerExtra {
    ContainerExtra {
        counters: Counters {
            nr_throttled: reading.cpu.nr_throttled,
            throttled_usec: reading.cpu.throttled_usec,
            oom_kill: reading.oom_kill,
            ..Counters::default()
        },
        psi_cpu_some_avg10: reading.psi_cpu.some_avg10,
        psi_cpu_full_avg10: reading.psi_cpu.full_avg10,
        psi_memory_some_avg10: reading.psi_memory.some_avg10,
        psi_memory_full_avg10: reading.psi_memory.full_avg10,
        ..ContainerExtra::default()
    }
}

/// Calls `f` with each line of the file at `path` (without its newline; lines that are not UTF-8
/// are skipped), read a page at a time into a buffer on the stack: `/proc/net/dev` grows by a line
/// per interface, so a buffer for the whole file would grow with the host, and a page on the stack
/// costs no allocation per cycle. A line longer than a page is an error.
fn for_each_line(path: &Path, mut f: impl FnMut(&str)) -> io::Result<()> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    loop {
        let n = match file.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let filled = len + n;
        let mut start = 0;
        while let Some(end) = buf[start..filled].iter().position(|&b| b == b'\n') {
            if let Ok(text) = std::str::from_utf8(&buf[start..start + end]) {
                f(text);
            }
            start += end + 1;
        }
        if n == 0 {
            if let Ok(text) = std::str::from_utf8(&buf[start..filled]) {
                if !text.is_empty() {
                    f(text);
                }
            }
            return Ok(());
        }
        buf.copy_within(start..filled, 0);
        len = filled - start;
        if len == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a line longer than 4096 bytes",
            ));
        }
    }
}

/// The vmid of a Proxmox container veth name, `veth<vmid>i<N>`.
pub fn parse_veth_name(name: &str) -> Option<u32> {
    let (vmid, n) = name.strip_prefix("veth")?.split_once('i')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(vmid) || !digits(n) || vmid.starts_with('0') {
        return None;
    }
    let vmid: u32 = vmid.parse().ok()?;
    (vmid >= crate::config::MIN_VMID).then_some(vmid)
}

/// Used and total bytes of the filesystem at `<proc_root>/<pid>/root`; `None` when it cannot be
/// read.
fn statvfs_root(cfg: &Config, pid: u32, vmid: u32) -> Option<(Option<u64>, Option<u64>)> {
    let mut path = cfg.proc_root.clone();
    path.push(pid.to_string());
    path.push("root");
    match nix::sys::statvfs::statvfs(&path) {
        Ok(st) => {
            let frag: u64 = st.fragment_size();
            let blocks: u64 = st.blocks();
            let free: u64 = st.blocks_free();
            Some((
                blocks.checked_sub(free).and_then(|b| b.checked_mul(frag)),
                blocks.checked_mul(frag),
            ))
        }
        Err(e) => {
            tracing::debug!(vmid, path = %path.display(), error = %e, "cannot stat container rootfs");
            None
        }
    }
}

/// The file at `path` as text in `buf`; non-UTF-8 content is an error.
fn read_text<'a>(path: &Path, buf: &'a mut ReadBuf) -> io::Result<&'a str> {
    cgroup::read_into(path, buf)?;
    std::str::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::hostfiles::{net_dev_text, CpuStatFile, HostFiles, MemoryStatFile, NetDev};
    use crate::read::snapshot::{CpuTicks, CtConf};
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    const CONF_101: &str = "#web\narch: amd64\ncores: 2\nhostname: web1\nmemory: 2048\nswap: 512\n\
        tags: prod;web\nlxc.cgroup2.cpuset.cpus: 0-3\n\n[pve:pending]\nmemory: 4096\n\n\
        [before-upgrade]\ncores: 4\nmemory: 1024\nsnaptime: 1700000000\n";

    struct FakeHost {
        tmp: tempfile::TempDir,
        cfg: Config,
        files: HostFiles,
    }

    impl FakeHost {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let mut cfg = Config::default();
            cfg.cgroup_root = tmp.path().join("cgroup/lxc");
            cfg.pve_lxc_dir = tmp.path().join("pve");
            cfg.proc_root = tmp.path().join("proc");
            let files = HostFiles::of(&cfg);
            files.create_roots().unwrap();
            fs::create_dir_all(cfg.cgroup_root.join("lxc.monitor")).unwrap();
            files
                .write_proc_stat([100, 0, 50, 800, 50, 0, 0, 0, 0, 0], 2, 1_769_000_000)
                .unwrap();
            files.write_meminfo(16_318_412, 8_123_456).unwrap();
            FakeHost { tmp, cfg, files }
        }

        fn cgroup(&self, vmid: u32, usage_usec: u64) -> PathBuf {
            let cpu = CpuStatFile {
                usage_usec,
                user_usec: 1,
                system_usec: 2,
                throttling: None,
            };
            let memory = MemoryStatFile {
                anon_bytes: 5,
                file_bytes: 268_435_456,
                shmem_bytes: Some(67_108_864),
                inactive_file_bytes: Some(134_217_728),
            };
            let dir = self.files.create_cgroup(vmid).unwrap();
            self.files.write_cpu_stat(vmid, &cpu).unwrap();
            self.files
                .write_memory(vmid, 1_073_741_824, &memory)
                .unwrap();
            dir
        }

        fn conf(&self, vmid: u32, text: &str) {
            let path = self.files.conf_path(vmid);
            self.files.write_conf(vmid, text).unwrap();
            // An mtime well in the past makes the cache trust it, as on a settled host.
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(3600))
                .unwrap();
        }
    }

    #[test]
    fn snapshot_holds_host_and_running_containers_sorted() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 5_000_000);
        h.cgroup(100, 7);
        h.conf(101, CONF_101);
        h.conf(100, "memory: 1024\n");
        let snap = Collector::new().collect(&h.cfg, 1_700_000_000_000_000);

        assert_eq!(snap.taken_at_usec, 1_700_000_000_000_000);
        assert_eq!(
            snap.host,
            HostSample {
                cpus: Some(2),
                cpu_ticks: Some(CpuTicks {
                    busy: 150,
                    total: 1000,
                }),
                boot_time: Some(1_769_000_000),
                mem_total_kib: Some(16_318_412),
                mem_available_kib: Some(8_123_456),
            }
        );
        let vmids: Vec<u32> = snap.containers.iter().map(|c| c.vmid).collect();
        assert_eq!(vmids, vec![100, 101]);
        assert_eq!(
            snap.containers[1],
            ContainerSample {
                vmid: 101,
                conf: Some(CtConf {
                    cores: Some(2),
                    memory_mb: 2048,
                    swap_mb: Some(512),
                    cpulimit: None,
                    tags: vec!["prod".into(), "web".into()],
                    lock: None,
                    hostname: Some("web1".into()),
                    ..CtConf::default()
                }),
                cgroup_id: Some(fs::metadata(&dir).unwrap().ino()),
                cpu_usage_usec: Some(5_000_000),
                memory_current_bytes: Some(1_073_741_824),
                memory_file_bytes: Some(268_435_456),
                memory_shmem_bytes: Some(67_108_864),
                memory_inactive_file_bytes: Some(134_217_728),
                extra: ContainerExtra::default(),
            }
        );
        assert_eq!(snap.containers[0].conf.as_ref().unwrap().cores, None);
    }

    #[test]
    fn container_without_or_with_broken_conf_has_no_conf_but_keeps_counters() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.cgroup(102, 20);
        h.conf(102, "cores: many\n");
        let snap = Collector::new().collect(&h.cfg, 0);
        assert_eq!(snap.containers.len(), 2);
        for (c, usage) in snap.containers.iter().zip([10, 20]) {
            assert_eq!(c.conf, None);
            assert_eq!(c.cpu_usage_usec, Some(usage));
        }
    }

    #[test]
    fn stopped_container_is_dropped_and_its_conf_forgotten() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        let dir = h.cgroup(102, 20);
        h.conf(101, CONF_101);
        h.conf(102, CONF_101);
        let mut c = Collector::new();
        assert_eq!(c.collect(&h.cfg, 0).containers.len(), 2);
        assert_eq!(c.confs.len(), 2);
        fs::remove_dir_all(dir).unwrap();
        let snap = c.collect(&h.cfg, 1);
        assert_eq!(snap.containers.len(), 1);
        assert_eq!(snap.containers[0].vmid, 101);
        assert_eq!(c.confs.len(), 1);
    }

    #[test]
    fn forgotten_confs_are_read_again_and_the_snapshot_keeps_its_copies() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.conf(101, CONF_101);
        let mut c = Collector::new();
        let first = c.collect(&h.cfg, 0);
        c.forget_confs();
        assert_eq!((c.confs.len(), c.conf_parses()), (0, 1));
        assert!(first.containers[0].conf.is_some());
        assert_eq!(
            c.collect(&h.cfg, 1).containers[0].conf,
            first.containers[0].conf
        );
        assert_eq!((c.confs.len(), c.conf_parses()), (1, 2));
    }

    #[test]
    fn container_whose_cgroup_vanished_after_listing_is_skipped() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        h.conf(101, CONF_101);
        h.conf(105, CONF_101);
        let ino = fs::metadata(dir).unwrap().ino();
        let mut c = Collector::new();
        let snap = c.collect_listed(&h.cfg, &[(101, ino), (105, ino + 1)], 0);
        let vmids: Vec<u32> = snap.containers.iter().map(|c| c.vmid).collect();
        assert_eq!(vmids, vec![101]);
        assert_eq!(c.open_cgroups(), 1);
        assert_eq!(c.read_failures(), &[]);
    }

    #[test]
    fn vanished_cgroup_file_leaves_that_figure_none() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        h.conf(101, CONF_101);
        fs::remove_file(dir.join(cgroup::MEMORY_STAT)).unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        let c = &snap.containers[0];
        assert_eq!(c.memory_file_bytes, None);
        assert_eq!(c.memory_current_bytes, Some(1_073_741_824));
        assert_eq!(c.cpu_usage_usec, Some(10));
    }

    #[test]
    fn changed_conf_is_reparsed_on_next_cycle() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.conf(101, "cores: 2\nmemory: 2048\n");
        let mut c = Collector::new();
        let first = c.collect(&h.cfg, 0);
        assert_eq!(first.containers[0].conf.as_ref().unwrap().cores, Some(2));
        h.conf(101, "cores: 12\nmemory: 2048\n");
        let second = c.collect(&h.cfg, 1);
        assert_eq!(second.containers[0].conf.as_ref().unwrap().cores, Some(12));
    }

    #[test]
    fn unreadable_host_files_give_none_but_containers_are_read() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.conf(101, CONF_101);
        fs::remove_dir_all(&h.cfg.proc_root).unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        assert_eq!(snap.host, HostSample::default());
        assert_eq!(snap.containers.len(), 1);
    }

    #[test]
    fn non_utf8_host_file_gives_none_for_its_figures_only() {
        let h = FakeHost::new();
        fs::write(
            h.cfg.proc_root.join(hostproc::MEMINFO),
            b"MemTotal: \xff kB\n",
        )
        .unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        assert_eq!(snap.host.mem_total_kib, None);
        assert_eq!(snap.host.mem_available_kib, None);
        assert_eq!(snap.host.cpus, Some(2));
    }

    #[test]
    fn missing_cgroup_root_gives_no_containers_but_host_figures() {
        let h = FakeHost::new();
        let mut cfg = h.cfg.clone();
        cfg.cgroup_root = h.tmp.path().join("absent");
        let snap = Collector::new().collect(&cfg, 0);
        assert!(snap.containers.is_empty());
        assert_eq!(snap.host.cpus, Some(2));
    }

    #[test]
    fn veth_names_give_the_vmid_of_proxmox_container_interfaces_only() {
        assert_eq!(parse_veth_name("veth101i0"), Some(101));
        assert_eq!(parse_veth_name("veth4000i12"), Some(4000));
        for name in [
            "veth101",
            "veth99i0",
            "veth0101i0",
            "vethi0",
            "veth101i",
            "eth0",
            "veth101i0x",
        ] {
            assert_eq!(parse_veth_name(name), None, "{name}");
        }
    }

    fn veth(iface: &str, rx_bytes: u64, tx_bytes: u64) -> NetDev {
        NetDev {
            iface: iface.into(),
            rx_bytes,
            tx_bytes,
        }
    }

    #[test]
    fn network_bytes_are_summed_over_veths_from_the_container_view() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.cgroup(102, 10);
        h.cgroup(103, 10);
        let mut text = net_dev_text(&[
            veth("lo", 1, 1),
            veth("veth101i0", 100, 1000),
            veth("fwpr101p0", 50, 50),
            veth("veth1010i0", 9, 9),
            veth("veth101i1", 5, 7),
        ]);
        text.push_str("veth102i0: garbage 1 0 0 0 0 0 0 3 1 0 0 0 0 0 0\n");
        h.files
            .write_proc_file(hostproc::NET_DEV, text.as_bytes())
            .unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        let c = |i: usize| snap.containers[i].extra.counters;
        // The host side receives what the container sends.
        assert_eq!(c(0).net_rx_bytes, Some(1007));
        assert_eq!(c(0).net_tx_bytes, Some(105));
        assert_eq!(c(1).net_tx_bytes, None);
        assert_eq!(c(1).net_rx_bytes, Some(3));
        assert_eq!((c(2).net_rx_bytes, c(2).net_tx_bytes), (None, None));
    }

    #[test]
    fn history_figures_are_read_only_when_asked_for() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        fs::write(dir.join(cgroup::PIDS_CURRENT), "12\n").unwrap();
        let mut c = Collector::new();
        assert_eq!(
            c.collect(&h.cfg, 0).containers[0].extra.pids_current,
            Some(12)
        );
        c.read_extra = false;
        assert_eq!(
            c.collect(&h.cfg, 0).containers[0].extra,
            ContainerExtra::default()
        );
    }

    #[test]
    fn throttling_oom_kills_and_cpu_and_memory_pressure_are_read_with_history_off() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        fs::write(
            dir.join(cgroup::CPU_STAT),
            "usage_usec 10\nnr_periods 9\nnr_throttled 7\nthrottled_usec 3500\n",
        )
        .unwrap();
        fs::write(dir.join(cgroup::MEMORY_EVENTS), "oom 3\noom_kill 2\n").unwrap();
        fs::write(
            dir.join(cgroup::CPU_PRESSURE),
            "some avg10=40.00 avg60=0 avg300=0 total=1\nfull avg10=5.50 avg60=0 avg300=0 total=1\n",
        )
        .unwrap();
        fs::write(
            dir.join(cgroup::MEMORY_PRESSURE),
            "some avg10=8.00 avg60=0 avg300=0 total=1\nfull avg10=6.25 avg60=0 avg300=0 total=1\n",
        )
        .unwrap();
        fs::write(dir.join(cgroup::PIDS_CURRENT), "12\n").unwrap();
        let mut c = Collector::new();
        c.read_extra = false;
        let expected = ContainerExtra {
            counters: Counters {
                nr_throttled: Some(7),
                throttled_usec: Some(3500),
                oom_kill: Some(2),
                ..Counters::default()
            },
            psi_cpu_some_avg10: Some(40.0),
            psi_cpu_full_avg10: Some(5.5),
            psi_memory_some_avg10: Some(8.0),
            psi_memory_full_avg10: Some(6.25),
            ..ContainerExtra::default()
        };
        assert_eq!(c.collect(&h.cfg, 0).containers[0].extra, expected);
        c.read_extra = true;
        let with_history = c.collect(&h.cfg, 0).containers[0].extra;
        assert_eq!(with_history.counters.oom_kill, Some(2));
        assert_eq!(with_history.psi_memory_full_avg10, Some(6.25));
        assert_eq!(with_history.pids_current, Some(12));
    }

    #[test]
    fn rootfs_is_measured_through_the_init_pid_and_skipped_when_unreadable() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        let dir2 = h.cgroup(102, 10);
        fs::create_dir_all(dir.join("ns")).unwrap();
        fs::create_dir_all(dir2.join("ns")).unwrap();
        fs::write(dir.join(cgroup::NS_CGROUP_PROCS), "4242\n").unwrap();
        fs::write(dir2.join(cgroup::NS_CGROUP_PROCS), "4243\n").unwrap();
        fs::create_dir_all(h.cfg.proc_root.join("4242/root")).unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        let x = snap.containers[0].extra;
        let total = x.rootfs_total_bytes.unwrap();
        assert!(total > 0 && x.rootfs_used_bytes.unwrap() <= total);
        let y = snap.containers[1].extra;
        assert_eq!((y.rootfs_used_bytes, y.rootfs_total_bytes), (None, None));
    }

    /// Descriptors of this process that point at `dir` or below it.
    fn fds_under(dir: &Path) -> usize {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .count()
    }

    /// Replaces the cgroup of `vmid` by a new directory (a new inode, as a restart gives) whose
    /// `cpu.stat` reads `usage_usec`.
    fn restart(h: &FakeHost, vmid: u32, usage_usec: u64) -> PathBuf {
        let dir = h.cfg.cgroup_root.join(vmid.to_string());
        let new = h.cfg.cgroup_root.join(format!("new-{vmid}"));
        fs::rename(&dir, &new).unwrap();
        h.cgroup(vmid, usage_usec);
        fs::remove_dir_all(&new).unwrap();
        dir
    }

    #[test]
    fn restarted_container_is_read_from_its_new_cgroup_and_yields_no_rate() {
        use crate::read::measure::{counter_window_usec, cpu_percent};
        use crate::read::snapshot::State;
        let h = FakeHost::new();
        let dir = h.cgroup(101, 5_000_000);
        h.conf(101, CONF_101);
        let old_ino = fs::metadata(&dir).unwrap().ino();
        let mut c = Collector::new();
        let t0 = 1_700_000_000_000_000;
        let first = c.collect(&h.cfg, t0);
        let state = State::default().advanced(&first);
        // Counters of the new lifetime are higher than the old ones: a rate across the restart
        // would look plausible, so only the new cgroup id can stop it.
        restart(&h, 101, 9_000_000);
        let new_ino = fs::metadata(&dir).unwrap().ino();
        assert_ne!(new_ino, old_ino);
        let t1 = t0 + 30_000_000;
        let second = c.collect(&h.cfg, t1);
        let ct = &second.containers[0];
        assert_eq!(ct.cgroup_id, Some(new_ino));
        assert_eq!(ct.cpu_usage_usec, Some(9_000_000));
        let prev = state.containers.get(&101);
        let boot = second.host.boot_time;
        assert_eq!(cpu_percent(ct, t1, boot, prev, 2.0, i64::MAX), None);
        assert_eq!(counter_window_usec(ct, t1, boot, prev, i64::MAX), None);
        assert_eq!(c.open_cgroups(), 1);
    }

    #[test]
    fn stopped_container_gives_its_descriptors_back() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        let dir = h.cgroup(102, 20);
        h.conf(101, CONF_101);
        h.conf(102, CONF_101);
        let mut c = Collector::new();
        c.collect(&h.cfg, 0);
        assert_eq!(c.open_cgroups(), 2);
        assert!(fds_under(&dir) > 0);
        fs::remove_dir_all(&dir).unwrap();
        let snap = c.collect(&h.cfg, 1);
        assert_eq!(snap.containers.len(), 1);
        assert_eq!(c.open_cgroups(), 1);
        assert_eq!(fds_under(&dir), 0);
        assert_eq!(c.read_failures(), &[]);
    }

    #[test]
    fn steady_cycle_opens_no_file_and_reads_the_new_values() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        h.conf(101, CONF_101);
        let mut c = Collector::new();
        c.collect(&h.cfg, 0);
        let opened = c.files_opened();
        assert!(opened >= 3, "{opened}");
        fs::write(dir.join(cgroup::CPU_STAT), "usage_usec 77\n").unwrap();
        fs::write(dir.join(cgroup::MEMORY_CURRENT), "2147483648\n").unwrap();
        let snap = c.collect(&h.cfg, 1);
        assert_eq!(snap.containers[0].cpu_usage_usec, Some(77));
        assert_eq!(snap.containers[0].memory_current_bytes, Some(2_147_483_648));
        assert_eq!(c.files_opened(), opened);
    }

    /// Container 101 with `memory.events` holding `events`, and a collector of the decision
    /// figures: (host, its cgroup directory, the path of `memory.events`, collector).
    fn host_with_memory_events(events: &str) -> (FakeHost, PathBuf, PathBuf, Collector) {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        h.conf(101, CONF_101);
        let path = dir.join(cgroup::MEMORY_EVENTS);
        fs::write(&path, events).unwrap();
        let mut c = Collector::new();
        c.read_extra = false;
        (h, dir, path, c)
    }

    #[test]
    fn memory_events_is_read_again_only_after_a_write_to_it() {
        let (h, dir, events, mut c) = host_with_memory_events("oom 0\noom_kill 0\n");
        let oom_kill = |s: &Snapshot| s.containers[0].extra.counters.oom_kill;
        assert_eq!(oom_kill(&c.collect(&h.cfg, 0)), Some(0));
        // cpu.stat, memory.current, memory.stat and memory.events; no pressure files here.
        assert_eq!(c.files_read(), 4);
        assert_eq!(oom_kill(&c.collect(&h.cfg, 1)), Some(0));
        assert_eq!(c.files_read(), 4 + 3);
        fs::write(&events, "oom 2\noom_kill 2\n").unwrap();
        assert_eq!(oom_kill(&c.collect(&h.cfg, 2)), Some(2));
        assert_eq!(c.files_read(), 7 + 4);
        assert_eq!(oom_kill(&c.collect(&h.cfg, 3)), Some(2));
        assert_eq!(c.files_read(), 11 + 3);
        // Written through another name: no notice reaches the directory's watch, so the kept
        // figure stands until the next notice.
        let alias = h.tmp.path().join("events-alias");
        fs::hard_link(&events, &alias).unwrap();
        fs::write(&alias, "oom 3\noom_kill 3\n").unwrap();
        assert_eq!(oom_kill(&c.collect(&h.cfg, 4)), Some(2));
        fs::write(dir.join(cgroup::MEMORY_CURRENT), "4096\n").unwrap();
        assert_eq!(oom_kill(&c.collect(&h.cfg, 5)), Some(2));
        fs::write(&events, "oom 4\noom_kill 4\n").unwrap();
        let snap = c.collect(&h.cfg, 6);
        assert_eq!(oom_kill(&snap), Some(4));
        assert_eq!(snap.containers[0].memory_current_bytes, Some(4096));
        assert!(c.read_failures().is_empty(), "{:?}", c.read_failures());
    }

    #[test]
    fn a_directory_whose_watch_ended_is_checked_by_its_ctime_and_read_whole() {
        let (h, dir, events, mut c) = host_with_memory_events("oom_kill 1\n");
        c.collect(&h.cfg, 0);
        let watch = c.watches.inner.as_ref().unwrap();
        let wd = c.cgroups[&101].wd.unwrap();
        watch.remove(wd);
        let alias = h.tmp.path().join("events-alias");
        fs::hard_link(&events, &alias).unwrap();
        fs::write(&alias, "oom_kill 5\n").unwrap();
        let snap = c.collect(&h.cfg, 1);
        assert_eq!(snap.containers[0].extra.counters.oom_kill, Some(5));
        assert_eq!(c.cgroups[&101].wd, None);
        assert!(c.watches.by_wd.is_empty());
        // A re-created file is seen through the directory's ctime.
        let path = dir.join(cgroup::MEMORY_CURRENT);
        fs::write(dir.join("tmp"), "4096\n").unwrap();
        fs::rename(dir.join("tmp"), &path).unwrap();
        let snap = c.collect(&h.cfg, 2);
        assert_eq!(snap.containers[0].memory_current_bytes, Some(4096));
    }

    #[test]
    fn re_created_file_is_read_anew() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        h.conf(101, CONF_101);
        let mut c = Collector::new();
        assert_eq!(
            c.collect(&h.cfg, 0).containers[0].memory_current_bytes,
            Some(1_073_741_824)
        );
        // A new file (new inode) in place of the old one, which a kept descriptor still reads.
        let path = dir.join(cgroup::MEMORY_CURRENT);
        fs::write(dir.join("tmp"), "4096\n").unwrap();
        fs::rename(dir.join("tmp"), &path).unwrap();
        let snap = c.collect(&h.cfg, 1);
        assert_eq!(snap.containers[0].memory_current_bytes, Some(4096));
        fs::remove_file(&path).unwrap();
        let snap = c.collect(&h.cfg, 2);
        assert_eq!(snap.containers[0].memory_current_bytes, None);
        fs::write(&path, "8192\n").unwrap();
        let snap = c.collect(&h.cfg, 3);
        assert_eq!(snap.containers[0].memory_current_bytes, Some(8192));
    }

    #[test]
    fn read_failures_name_vmid_file_and_problem_and_skip_optional_and_gone_files() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        h.cgroup(102, 10);
        h.conf(101, CONF_101);
        h.conf(102, "cores: many\n");
        fs::remove_file(dir.join(cgroup::MEMORY_STAT)).unwrap();
        fs::write(dir.join(cgroup::MEMORY_CURRENT), "lots\n").unwrap();
        // A directory where a file should be: opening works, reading fails with EISDIR.
        fs::create_dir(dir.join(cgroup::PIDS_CURRENT)).unwrap();
        let mut c = Collector::new();
        c.collect(&h.cfg, 0);
        let got: Vec<(u32, &str, Problem, bool)> = c
            .read_failures()
            .iter()
            .map(|f| (f.vmid, f.file, f.problem.clone(), f.history_only))
            .collect();
        let conf_error = format!(
            "{:#}",
            ConfCache::new().get(&h.cfg.pve_lxc_dir, 102).unwrap_err()
        );
        assert_eq!(
            got,
            vec![
                (101, cgroup::MEMORY_CURRENT, Problem::Garbled, false),
                (101, cgroup::MEMORY_STAT, Problem::Missing, false),
                (101, cgroup::PIDS_CURRENT, Problem::Failed(21), true),
                (102, CONF_FILE, Problem::Invalid(conf_error), false),
            ]
        );
        assert_eq!(
            c.read_failures()[1].path,
            h.cfg.cgroup_root.join("101").join(cgroup::MEMORY_STAT)
        );
        assert_eq!(
            Problem::Failed(21).to_string(),
            "Is a directory (os error 21)"
        );
        fs::remove_dir_all(&dir).unwrap();
        c.collect(&h.cfg, 1);
        assert_eq!(c.read_failures().len(), 1);
    }

    #[test]
    fn rootfs_is_measured_again_only_after_the_refresh_interval() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        fs::create_dir_all(dir.join("ns")).unwrap();
        fs::write(dir.join(cgroup::NS_CGROUP_PROCS), "4242\n").unwrap();
        let root = h.cfg.proc_root.join("4242/root");
        fs::create_dir_all(&root).unwrap();
        let mut c = Collector::new();
        let t0 = 1_700_000_000_000_000;
        let first = c.collect(&h.cfg, t0).containers[0].extra;
        assert!(first.rootfs_total_bytes.is_some());
        // The pid is gone: a reading within the interval reuses the figure, a later one finds none.
        fs::remove_dir_all(h.cfg.proc_root.join("4242")).unwrap();
        let within = c.collect(&h.cfg, t0 + ROOTFS_REFRESH_USEC - 1).containers[0].extra;
        assert_eq!(within.rootfs_total_bytes, first.rootfs_total_bytes);
        let after = c.collect(&h.cfg, t0 + ROOTFS_REFRESH_USEC).containers[0].extra;
        assert_eq!(after.rootfs_total_bytes, None);
        // A new init pid is picked up from ns/cgroup.procs at the next refresh.
        fs::write(dir.join(cgroup::NS_CGROUP_PROCS), "4343\n").unwrap();
        fs::create_dir_all(h.cfg.proc_root.join("4343/root")).unwrap();
        let again = c.collect(&h.cfg, t0 + 2 * ROOTFS_REFRESH_USEC).containers[0].extra;
        assert_eq!(again.rootfs_total_bytes, first.rootfs_total_bytes);
    }

    #[test]
    fn lines_are_read_whole_across_page_boundaries_and_a_last_line_without_newline() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("net-dev");
        // Lines of 1 to 199 bytes, about 25 KB in all: many end on or straddle a page boundary.
        let text: String = (0..250)
            .map(|i| format!("{}\n", "x".repeat((i * 37) % 199 + 1)))
            .collect::<String>()
            + "no newline at the end";
        fs::write(&path, &text).unwrap();
        let mut read = Vec::new();
        for_each_line(&path, |l| read.push(l.to_string())).unwrap();
        assert_eq!(read, text.lines().collect::<Vec<_>>());
        fs::write(&path, "y".repeat(4096)).unwrap();
        let e = for_each_line(&path, |_| {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn re_created_veth_shows_its_own_counters_and_a_removed_one_none() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.files
            .write_net_dev(&[veth("veth101i0", 100, 1000)])
            .unwrap();
        let mut c = Collector::new();
        let first = c.collect(&h.cfg, 0).containers[0].extra.counters;
        assert_eq!(
            (first.net_rx_bytes, first.net_tx_bytes),
            (Some(1000), Some(100))
        );
        // Re-created (a hot-plugged NIC): its counters start again, seen as a counter reset.
        h.files.write_net_dev(&[veth("veth101i0", 1, 2)]).unwrap();
        let second = c.collect(&h.cfg, 1).containers[0].extra.counters;
        assert_eq!(
            (second.net_rx_bytes, second.net_tx_bytes),
            (Some(2), Some(1))
        );
        h.files.write_net_dev(&[veth("lo", 1, 1)]).unwrap();
        let third = c.collect(&h.cfg, 2).containers[0].extra.counters;
        assert_eq!((third.net_rx_bytes, third.net_tx_bytes), (None, None));
        // Unreadable (here a directory): no network figure at all, never 0.
        let path = h.cfg.proc_root.join(hostproc::NET_DEV);
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let fourth = c.collect(&h.cfg, 3).containers[0].extra.counters;
        assert_eq!((fourth.net_rx_bytes, fourth.net_tx_bytes), (None, None));
        assert_eq!(fds_under(&h.cfg.proc_root), 0);
    }

    /// A writable cgroup v2 directory of the real kernel: `LXC_AUTOSCALE_TEST_CGROUP2`, or the
    /// hybrid or unified mount point.
    fn real_cgroup2() -> Option<PathBuf> {
        let candidates = std::env::var_os("LXC_AUTOSCALE_TEST_CGROUP2")
            .map(PathBuf::from)
            .into_iter()
            .chain(["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].map(PathBuf::from));
        // One name per call: tests probing at once must not remove each other's probe.
        static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for dir in candidates {
            let probe = dir.join(format!("lxc-autoscale-probe-{}-{n}", std::process::id()));
            if dir.join("cgroup.procs").exists() && fs::create_dir(&probe).is_ok() {
                fs::remove_dir(&probe).unwrap();
                return Some(dir);
            }
        }
        None
    }

    #[test]
    #[ignore = "needs a writable cgroup v2 hierarchy (root): cargo test -- --ignored real_cgroupfs"]
    fn real_cgroupfs_restart_between_listing_and_reading_reads_the_new_cgroup() {
        let base = real_cgroup2().expect("no writable cgroup v2 hierarchy");
        let h = FakeHost::new();
        let mut cfg = h.cfg.clone();
        cfg.cgroup_root = base.join(format!("lxc-autoscale-test-{}", std::process::id()));
        let dir = cfg.cgroup_root.join("101");
        fs::create_dir_all(&dir).unwrap();
        let mut c = Collector::new();
        let first = c.collect(&cfg, 0);
        let old_ino = fs::metadata(&dir).unwrap().ino();
        assert_eq!(first.containers[0].cgroup_id, Some(old_ino));
        assert!(first.containers[0].cpu_usage_usec.is_some());
        // Restarted after the listing: the kept descriptors answer ENODEV, the directory is
        // looked up again and read anew.
        fs::remove_dir(&dir).unwrap();
        fs::create_dir(&dir).unwrap();
        let new_ino = fs::metadata(&dir).unwrap().ino();
        assert_ne!(new_ino, old_ino);
        let second = c.collect_listed(&cfg, &[(101, old_ino)], 1);
        assert_eq!(second.containers[0].cgroup_id, Some(new_ino));
        assert!(second.containers[0].cpu_usage_usec.is_some());
        // Stopped after the listing: no sample, no descriptor kept.
        fs::remove_dir(&dir).unwrap();
        let third = c.collect_listed(&cfg, &[(101, new_ino)], 2);
        assert!(third.containers.is_empty());
        assert_eq!(c.open_cgroups(), 0);
        fs::remove_dir(&cfg.cgroup_root).unwrap();
    }

    #[test]
    fn one_shot_collector_reads_the_same_figures_and_keeps_no_descriptor() {
        let h = FakeHost::new();
        let dirs: Vec<PathBuf> = (101..=102).map(|v| h.cgroup(v, u64::from(v))).collect();
        for v in 101..=102 {
            h.conf(v, CONF_101);
        }
        h.files
            .write_net_dev(&[veth("veth101i0", 100, 1000)])
            .unwrap();
        let kept = Collector::new().collect(&h.cfg, 7);
        let mut c = Collector::new();
        c.one_shot = true;
        let once = c.collect(&h.cfg, 7);
        assert_eq!(once, kept);
        assert_eq!(once.containers[0].extra.counters.net_rx_bytes, Some(1000));
        assert_eq!(c.open_cgroups(), 0);
        assert_eq!(fds_under(&dirs[0]) + fds_under(&dirs[1]), 0);
        assert_eq!(fds_under(&h.cfg.proc_root), 0);
    }

    #[test]
    fn containers_beyond_the_descriptor_budget_are_read_without_keeping_descriptors() {
        let h = FakeHost::new();
        let dirs: Vec<PathBuf> = (101..=103).map(|v| h.cgroup(v, u64::from(v))).collect();
        for v in 101..=103 {
            h.conf(v, CONF_101);
        }
        let mut c = Collector::new();
        c.keep_cap = Some(1);
        for cycle in 0..2 {
            let snap = c.collect(&h.cfg, cycle);
            let usage: Vec<Option<u64>> =
                snap.containers.iter().map(|c| c.cpu_usage_usec).collect();
            assert_eq!(usage, vec![Some(101), Some(102), Some(103)]);
            assert_eq!(c.open_cgroups(), 1);
            assert!(fds_under(&dirs[0]) > 0);
            assert_eq!(fds_under(&dirs[1]) + fds_under(&dirs[2]), 0);
        }
    }
}
