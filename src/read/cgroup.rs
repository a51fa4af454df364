//! cgroup v2 files of a container's limiting cgroup, `<cgroup_root>/<vmid>/`.
//! A directory exists only while the container runs; a vanished file means "no data", never an error.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;

use crate::config::MIN_VMID;

/// `cpu.stat`: `usage_usec N` and friends, µs.
pub const CPU_STAT: &str = "cpu.stat";
/// `memory.current`: bytes in use, page cache included.
pub const MEMORY_CURRENT: &str = "memory.current";
/// `memory.stat`: `anon N`, `file N`, ... in bytes.
pub const MEMORY_STAT: &str = "memory.stat";
/// Key of the page cache in `memory.stat`, bytes. It includes `shmem`.
pub const MEMORY_STAT_FILE: &str = "file";
/// Key of tmpfs and shared memory in `memory.stat`, bytes: counted in `file`, but not reclaimable
/// without swap.
pub const MEMORY_STAT_SHMEM: &str = "shmem";
/// Key of the inactive page cache in `memory.stat`, bytes; `memory.current − inactive_file` is the
/// kernel's working set.
pub const MEMORY_STAT_INACTIVE_FILE: &str = "inactive_file";

/// `memory.swap.current`: swap in use, bytes.
pub const MEMORY_SWAP_CURRENT: &str = "memory.swap.current";
/// `memory.events`: `low`, `high`, `max`, `oom`, `oom_kill` counters.
pub const MEMORY_EVENTS: &str = "memory.events";
/// Key of the OOM-kill counter in `memory.events`.
pub const MEMORY_EVENTS_OOM_KILL: &str = "oom_kill";
/// `pids.current`: tasks in the cgroup.
pub const PIDS_CURRENT: &str = "pids.current";
/// `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N ...` per device.
pub const IO_STAT: &str = "io.stat";
/// PSI files: `some avg10=P avg60=P avg300=P total=N` and a `full` line. Percent of wall time.
pub const CPU_PRESSURE: &str = "cpu.pressure";
pub const MEMORY_PRESSURE: &str = "memory.pressure";
pub const IO_PRESSURE: &str = "io.pressure";
/// The container's own root cgroup below the limiting one; its `cgroup.procs` lists init first.
pub const NS_CGROUP_PROCS: &str = "ns/cgroup.procs";

/// Upper bound on what is read from one cgroup or procfs file, bytes. Real files are a few KiB;
/// the bound keeps a broken or hostile file from growing the reused buffer without limit.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Parsed `cpu.stat`. Fields absent from the file are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    pub usage_usec: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
}

/// What one read of `<cgroup_root>/<vmid>/` gave: the figures read on every cycle. Every figure is
/// `None` when its file is missing, unreadable or garbled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupReading {
    /// Inode of the cgroup directory: a new one means the container restarted.
    pub cgroup_id: Option<u64>,
    /// `cpu.stat`, µs.
    pub cpu: CpuStat,
    /// `memory.current`, bytes.
    pub memory_current_bytes: Option<u64>,
    /// `memory.stat`, bytes.
    pub memory_stat: MemoryStat,
    /// `oom_kill` of `memory.events`, a counter.
    pub oom_kill: Option<u64>,
    /// `cpu.pressure`, percent.
    pub psi_cpu: Psi,
    /// `memory.pressure`, percent.
    pub psi_memory: Psi,
}

/// The `avg10=` figures of a PSI file, percent of wall time (0–100). `None` when the line is
/// absent or garbled (`full` of `cpu.pressure` exists only on kernels from 5.13 on).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    /// `some avg10=`: share of time at least one task was stalled.
    pub some_avg10: Option<f64>,
    /// `full avg10=`: share of time every non-idle task was stalled at once.
    pub full_avg10: Option<f64>,
}

/// The keys of `memory.stat` the decision uses, bytes. Each is `None` when absent or garbled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// `file`: page cache, `shmem` included.
    pub file_bytes: Option<u64>,
    /// `shmem`: tmpfs, `/dev/shm` and SysV shared memory.
    pub shmem_bytes: Option<u64>,
    /// `inactive_file`: page cache the kernel would reclaim first.
    pub inactive_file_bytes: Option<u64>,
}

/// Reads `file`, `shmem` and `inactive_file` from `memory.stat` text in one pass; other lines
/// are ignored.
pub fn parse_memory_stat(text: &str) -> MemoryStat {
    let mut stat = MemoryStat::default();
    for (key, rest) in lines(text).filter_map(split_key) {
        let slot = match key {
            MEMORY_STAT_FILE => &mut stat.file_bytes,
            MEMORY_STAT_SHMEM => &mut stat.shmem_bytes,
            MEMORY_STAT_INACTIVE_FILE => &mut stat.inactive_file_bytes,
            _ => continue,
        };
        *slot = only_field(rest).and_then(parse_u64);
    }
    stat
}

/// Figures of `<cgroup_root>/<vmid>/` recorded for history and export only. `None` when the file
/// is missing (controller not enabled), unreadable or garbled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExtraReading {
    /// `memory.swap.current`, bytes.
    pub swap_current_bytes: Option<u64>,
    /// `pids.current`.
    pub pids_current: Option<u64>,
    /// `io.stat`, summed over devices.
    pub io: IoTotals,
    /// `some avg10` of `io.pressure`, percent.
    pub psi_io_some_avg10: Option<f64>,
}

/// `rbytes` and `wbytes` of `io.stat` summed over every device line, bytes. An empty file (no I/O
/// yet) sums to 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTotals {
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
}

/// Parses `io.stat`. A garbled `rbytes=`/`wbytes=` value makes that total `None` (a partial sum
/// would look like a counter going backwards).
pub fn parse_io_stat(text: &str) -> IoTotals {
    let mut read = Some(0u64);
    let mut write = Some(0u64);
    for line in lines(text) {
        let mut fields = line.split_ascii_whitespace();
        if fields.next().is_none() {
            continue;
        }
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let total = match key {
                "rbytes" => &mut read,
                "wbytes" => &mut write,
                _ => continue,
            };
            *total = total.and_then(|t| t.checked_add(parse_u64(value)?));
        }
    }
    IoTotals {
        read_bytes: read,
        write_bytes: write,
    }
}

/// `avg10` of the `some` line of a PSI file (`some avg10=1.23 avg60=... total=N`), percent.
pub fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    parse_psi(text).some_avg10
}

/// `avg10` of the `some` and `full` lines of a PSI file, percent. Other lines are ignored.
pub fn parse_psi(text: &str) -> Psi {
    let mut psi = Psi::default();
    for line in lines(text) {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut psi.some_avg10,
            Some("full") => &mut psi.full_avg10,
            _ => continue,
        };
        *slot = fields
            .find_map(|f| f.strip_prefix("avg10="))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|p| p.is_finite() && (0.0..=100.0).contains(p));
    }
    psi
}

/// The first pid listed in a `cgroup.procs` file.
pub fn parse_first_pid(text: &str) -> Option<u32> {
    let pid = parse_u64(lines(text).next()?)?;
    u32::try_from(pid).ok().filter(|&p| p > 0)
}

/// Parses `cpu.stat` text. Unknown lines are ignored; garbage values give `None` for that field.
pub fn parse_cpu_stat(text: &str) -> CpuStat {
    let mut stat = CpuStat::default();
    for (key, rest) in lines(text).filter_map(split_key) {
        let slot = match key {
            "usage_usec" => &mut stat.usage_usec,
            "nr_throttled" => &mut stat.nr_throttled,
            "throttled_usec" => &mut stat.throttled_usec,
            _ => continue,
        };
        *slot = only_field(rest).and_then(parse_u64);
    }
    stat
}

/// The lines of `text` exactly as `str::lines` gives them (split at `\n`, a `\r` right before it
/// dropped, no empty line after a final `\n`), found with a byte loop: `str::lines` looks for
/// each end of line with `memchr` and compares the found byte again with `memcmp`, which on lines
/// of 20 bytes costs more than the search (callgrind at 1000 containers: 180 instructions a line,
/// a tenth of `--once`'s).
fn lines(text: &str) -> Lines<'_> {
    Lines(text)
}

/// See `lines`: what remains of the text.
struct Lines<'a>(&'a str);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.0.is_empty() {
            return None;
        }
        // `\n` and `\r` are ASCII: slicing at them keeps to char boundaries.
        let Some(end) = find_newline(self.0.as_bytes()) else {
            return Some(std::mem::take(&mut self.0));
        };
        let (line, rest) = (&self.0[..end], &self.0[end + 1..]);
        self.0 = rest;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
}

/// Index of the first `\n` in `bytes`. Eight bytes at a time: a PSI line is 60 bytes, and a
/// byte loop spent 3 instructions a byte on it (callgrind).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // Bytes equal to `\n` become zero; `(w - ONES) & !w & HIGHS` is non-zero exactly when
        // some byte of `w` is zero.
        let w = u64::from_le_bytes(word) ^ (ONES * u64::from(b'\n'));
        if w.wrapping_sub(ONES) & !w & HIGHS != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| b == b'\n').map(|i| at + i)
}

/// The first whitespace-separated field of `line` (the key of a `key N` line) and what follows
/// it; `None` for a blank line. The parsers look at the rest only for the keys they want: most
/// lines of `memory.stat` are skipped after their key.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_ascii_start();
    if line.is_empty() {
        return None;
    }
    // ASCII whitespace: splitting at it keeps to char boundaries.
    let end = line
        .bytes()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    Some(line.split_at(end))
}

/// The only whitespace-separated field of `rest`; `None` when there is none or more than one, so
/// that a garbled line of a known key clears that figure instead of being skipped.
fn only_field(rest: &str) -> Option<&str> {
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next();
    if fields.next().is_some() {
        return None;
    }
    value
}

/// Parses a single unsigned number (e.g. `memory.current`). `None` on anything else.
pub fn parse_u64(text: &str) -> Option<u64> {
    let t = text.trim_ascii();
    // `u64::from_str` would accept a leading `+`, which no kernel file writes.
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Value of `key` in a flat-keyed file such as `memory.stat` (`key N` per line).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    lines(text)
        .filter_map(split_key)
        .find(|(k, _)| *k == key)
        .and_then(|(_, rest)| only_field(rest).and_then(parse_u64))
}

/// VMIDs of running containers: the subdirectories of `root` whose name is an integer >= 100.
/// A missing `root` gives an empty list (no container runs), other errors name the path.
pub fn list_vmids(root: &Path) -> anyhow::Result<Vec<u32>> {
    Ok(list_cgroups(root)?
        .into_iter()
        .map(|(vmid, _)| vmid)
        .collect())
}

/// Like `list_vmids`, with the inode of each directory as the listing gives it (`d_ino`, the
/// same number `stat` gives): a new inode under a known vmid is a restarted container, seen
/// without a syscall per container.
pub fn list_cgroups(root: &Path) -> anyhow::Result<Vec<(u32, u64)>> {
    use std::os::unix::fs::DirEntryExt;
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot list cgroup dir {}", root.display()))
        }
    };
    let mut cgroups = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list cgroup dir {}", root.display()))?;
        let Some(vmid) = entry.file_name().to_str().and_then(parse_vmid) else {
            continue;
        };
        // A stopped container's directory can vanish between listing and this check.
        match entry.file_type() {
            Ok(t) if t.is_dir() => cgroups.push((vmid, entry.ino())),
            _ => {}
        }
    }
    cgroups.sort_unstable();
    Ok(cgroups)
}

/// A directory name that is a VMID. `lxc.monitor`, `lxc.pivot` and `0099` style names are not.
fn parse_vmid(name: &str) -> Option<u32> {
    if name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let vmid: u32 = name.parse().ok()?;
    (vmid >= MIN_VMID).then_some(vmid)
}

/// The files of `<cgroup_root>/<vmid>/` read through descriptors kept across cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CgFile {
    CpuStat,
    MemoryCurrent,
    MemoryStat,
    MemoryEvents,
    CpuPressure,
    MemoryPressure,
    SwapCurrent,
    PidsCurrent,
    IoStat,
    IoPressure,
}

/// How many files `CgFile` names.
pub const CG_FILES: usize = 10;

impl CgFile {
    /// Read on every cycle: the decision and its model use them.
    pub const EVERY_CYCLE: [CgFile; 6] = [
        CgFile::CpuStat,
        CgFile::MemoryCurrent,
        CgFile::MemoryStat,
        CgFile::MemoryEvents,
        CgFile::CpuPressure,
        CgFile::MemoryPressure,
    ];
    /// Read only for history and export.
    pub const HISTORY: [CgFile; 4] = [
        CgFile::SwapCurrent,
        CgFile::PidsCurrent,
        CgFile::IoStat,
        CgFile::IoPressure,
    ];

    /// The file name under `<cgroup_root>/<vmid>/`.
    pub fn name(self) -> &'static str {
        match self {
            CgFile::CpuStat => CPU_STAT,
            CgFile::MemoryCurrent => MEMORY_CURRENT,
            CgFile::MemoryStat => MEMORY_STAT,
            CgFile::MemoryEvents => MEMORY_EVENTS,
            CgFile::CpuPressure => CPU_PRESSURE,
            CgFile::MemoryPressure => MEMORY_PRESSURE,
            CgFile::SwapCurrent => MEMORY_SWAP_CURRENT,
            CgFile::PidsCurrent => PIDS_CURRENT,
            CgFile::IoStat => IO_STAT,
            CgFile::IoPressure => IO_PRESSURE,
        }
    }

    /// Whether the decision cannot do without the file, which every container cgroup with the
    /// cpu and memory controllers has, so that its absence is a problem. The others need PSI, swap
    /// accounting or further controllers: their absence is only "no data".
    pub fn required(self) -> bool {
        matches!(
            self,
            CgFile::CpuStat | CgFile::MemoryCurrent | CgFile::MemoryStat
        )
    }

    /// Whether the file is read only for history and export.
    pub fn history_only(self) -> bool {
        CgFile::HISTORY.contains(&self)
    }
}

/// How the read of one file went this cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Not read this cycle (history figures off).
    #[default]
    NotRead,
    Ok,
    /// The file does not exist in the (existing) cgroup directory.
    Missing,
    /// Read, but not UTF-8 or without the expected figure.
    Garbled,
    /// The open or read failed with this errno.
    Failed(i32),
}

/// Cycles after which files that were missing are looked for again even though the directory
/// looks unchanged (cgroupfs does not always update a directory's ctime when a controller's files
/// appear).
const MISSING_RETRY_CYCLES: u32 = 16;

/// The kept descriptors of one container's cgroup directory `<cgroup_root>/<vmid>/`: the
/// directory itself and each file, re-read with `pread` at offset 0 every cycle (`memory.events`
/// only after its watch reported a write, when the directory is watched). Every descriptor
/// belongs to one directory instance, so figures of two container lifetimes never mix: on
/// cgroupfs a read of a removed cgroup's file fails with ENODEV, and a restarted container has a
/// new directory inode.
#[derive(Debug)]
pub struct CgroupDir {
    dir: File,
    ino: u64,
    /// `(ctime s, ctime ns)` of the directory when the files were opened. On ordinary filesystems
    /// creating or removing a file changes it, so a re-created file is opened anew.
    ctime: (i64, i64),
    files: [Slot; CG_FILES],
    /// Cycles since missing files were last looked for.
    missing_age: u32,
    /// Opened since the last `start_cycle`: its `fstat` is fresh.
    fresh: bool,
    /// Files opened since this was made; a steady cycle opens none.
    opens: u64,
    /// Files read since this was made.
    reads: u64,
    /// What a watch (`read::watch`) says about the directory; without one, `start_cycle` checks
    /// the directory's ctime and `memory.events` is read every cycle.
    watch: WatchState,
    /// The OOM-kill count last read from `memory.events`, reused while the watch reports no write
    /// to it.
    oom_kill: Option<u64>,
}

/// What a watch (`read::watch`) reported about one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A file of the directory was created, removed or renamed: its files are opened again.
    Entries,
    /// `memory.events` was written: it is read again.
    MemoryEvents,
    /// The directory itself was removed or moved, or its watch ended: no further notices come.
    Ended,
    /// The kernel dropped notices (its queue overflowed): every directory is checked the slow way
    /// once.
    Lost,
}

/// The notices a watch gave about one directory since its last cycle.
#[derive(Debug, Default, Clone, Copy)]
struct WatchState {
    /// A watch reports this directory's changes.
    on: bool,
    /// Entries were created, removed or renamed.
    entries: bool,
    /// `memory.events` was written.
    memory_events: bool,
    /// Notices were lost: check the slow way once.
    lost: bool,
    /// This cycle may rely on the notices (set by `start_cycle`).
    trusted: bool,
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Unopened,
    Open(File),
    Missing,
}

/// The directory of a read went away (ENODEV): the container stopped or restarted, or a controller
/// was turned off. The figures of this pass are not to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vanished;

impl CgroupDir {
    /// Opens the cgroup directory `path`. `ENOENT` means the container is not running.
    pub fn open(path: &Path) -> io::Result<CgroupDir> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_directory())
            .open(path)?;
        let meta = dir.metadata()?;
        Ok(CgroupDir {
            dir,
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            files: Default::default(),
            missing_age: 0,
            fresh: true,
            opens: 0,
            reads: 0,
            watch: WatchState::default(),
            oom_kill: None,
        })
    }

    /// Inode of the directory: the container's lifetime.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Files opened so far.
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Opened and not yet read: no cycle has started on it.
    pub fn is_new(&self) -> bool {
        self.fresh
    }

    /// Files read so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Whether a watch reports this directory's changes from now on (see `read::watch`).
    pub fn set_watched(&mut self, on: bool) {
        self.watch.on = on;
    }

    /// Takes a notice of the directory's watch, for the next `start_cycle`.
    pub fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Entries => self.watch.entries = true,
            Notice::MemoryEvents => self.watch.memory_events = true,
            Notice::Ended => self.watch.on = false,
            Notice::Lost => self.watch.lost = true,
        }
    }

    /// Starts a cycle. Under a watch that lost nothing, its notices say whether files were
    /// created, removed or renamed; otherwise one `fstat` of the directory does (its ctime
    /// moved). Then every file is opened again on its next read. Files that were missing are
    /// looked for again now and then.
    pub fn start_cycle(&mut self) {
        let notices = std::mem::take(&mut self.watch);
        self.watch.on = notices.on;
        if std::mem::take(&mut self.fresh) {
            // Opened for this cycle: every file is read anyway.
            return;
        }
        self.watch.trusted = notices.on && !notices.lost;
        if !self.watch.trusted || notices.memory_events {
            self.oom_kill = None;
        }
        self.missing_age += 1;
        let changed = if self.watch.trusted {
            notices.entries
        } else {
            let ctime = self.dir.metadata().map(|m| (m.ctime(), m.ctime_nsec()));
            match ctime.ok().filter(|&c| c != self.ctime) {
                Some(c) => {
                    self.ctime = c;
                    true
                }
                None => false,
            }
        };
        if changed {
            self.files = Default::default();
            self.oom_kill = None;
        } else if self.missing_age >= MISSING_RETRY_CYCLES {
            self.missing_age = 0;
            for slot in &mut self.files {
                if matches!(slot, Slot::Missing) {
                    *slot = Slot::Unopened;
                }
            }
        }
    }

    /// Reads `file` into `buf`.
    fn read(&mut self, file: CgFile, buf: &mut ReadBuf) -> Result<Outcome, Vanished> {
        let slot = &mut self.files[file as usize];
        if matches!(slot, Slot::Unopened) {
            *slot = match openat(&self.dir, file.name()) {
                Ok(f) => {
                    self.opens += 1;
                    Slot::Open(f)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Slot::Missing,
                Err(e) => return Ok(Outcome::Failed(errno(&e))),
            };
        }
        let Slot::Open(f) = slot else {
            return Ok(Outcome::Missing);
        };
        self.reads += 1;
        match pread_all(f, buf, true) {
            Ok(()) => Ok(Outcome::Ok),
            Err(e) if e.raw_os_error() == Some(libc_enodev()) => {
                *slot = Slot::Unopened;
                Err(Vanished)
            }
            Err(e) => Ok(Outcome::Failed(errno(&e))),
        }
    }

    /// Reads and parses `file`, recording how it went in `outcomes`. `None` when unreadable or
    /// garbled.
    fn figure<T>(
        &mut self,
        file: CgFile,
        buf: &mut ReadBuf,
        outcomes: &mut Outcomes,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, Vanished> {
        let outcome = self.read(file, buf)?;
        let value = match outcome {
            Outcome::Ok => utf8(buf).and_then(parse),
            _ => None,
        };
        outcomes.0[file as usize] = match (outcome, &value) {
            (Outcome::Ok, None) => Outcome::Garbled,
            (o, _) => o,
        };
        Ok(value)
    }

    /// The OOM-kill count of `memory.events`. Under a trusted watch it is read only when the
    /// watch reported a write to the file since the last read. The kernel raises `oom_kill`
    /// through `memcg_memory_event`, which calls `cgroup_file_notify` on this cgroup and on every
    /// ancestor (so a kill in the container's nested cgroups is reported here too); kernfs turns
    /// that into an `IN_MODIFY` on the parent directory while the file's inode is in memory, which
    /// the kept descriptor ensures. The one event counted without a notification (memcg's 2025
    /// change for charges where spinning is not allowed) is `max`, which is not read here.
    fn oom_kill(
        &mut self,
        buf: &mut ReadBuf,
        outcomes: &mut Outcomes,
    ) -> Result<Option<u64>, Vanished> {
        let file = CgFile::MemoryEvents;
        let open = matches!(self.files[file as usize], Slot::Open(_));
        if let Some(kills) = self.oom_kill.filter(|_| self.watch.trusted && open) {
            outcomes.0[file as usize] = Outcome::Ok;
            return Ok(Some(kills));
        }
        self.oom_kill = self.figure(file, buf, outcomes, |t| {
            parse_keyed(t, MEMORY_EVENTS_OOM_KILL)
        })?;
        Ok(self.oom_kill)
    }

    /// The first pid of `ns/cgroup.procs` (the container's init as the host sees it), read
    /// without keeping a descriptor: it is needed once per container lifetime.
    pub fn init_pid(&self, buf: &mut ReadBuf) -> Option<u32> {
        let file = openat(&self.dir, NS_CGROUP_PROCS).ok()?;
        pread_all(&file, buf, false).ok()?;
        utf8(buf).and_then(parse_first_pid)
    }
}

/// How the read of each `CgFile` went this cycle, indexed by the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes(pub [Outcome; CG_FILES]);

impl Outcomes {
    pub fn get(&self, file: CgFile) -> Outcome {
        self.0[file as usize]
    }
}

/// Reads the figures the decision needs from `dir` (the every-cycle files). Any figure is `None`
/// when its file is missing, unreadable or garbled. `Err(Vanished)` when the directory went away
/// during the reads: nothing of this pass may be used.
pub fn read_container(
    dir: &mut CgroupDir,
    buf: &mut ReadBuf,
    outcomes: &mut Outcomes,
) -> Result<CgroupReading, Vanished> {
    let cpu = dir
        .figure(CgFile::CpuStat, buf, outcomes, |t| {
            Some(parse_cpu_stat(t)).filter(|s| s.usage_usec.is_some())
        })?
        .unwrap_or_default();
    let memory_current_bytes = dir.figure(CgFile::MemoryCurrent, buf, outcomes, parse_u64)?;
    let memory_stat = dir
        .figure(CgFile::MemoryStat, buf, outcomes, |t| {
            Some(parse_memory_stat(t)).filter(|s| s.file_bytes.is_some())
        })?
        .unwrap_or_default();
    let oom_kill = dir.oom_kill(buf, outcomes)?;
    let psi = |t: &str| Some(parse_psi(t)).filter(|p| p.some_avg10.is_some());
    let psi_cpu = dir.figure(CgFile::CpuPressure, buf, outcomes, psi)?;
    let psi_memory = dir.figure(CgFile::MemoryPressure, buf, outcomes, psi)?;
    Ok(CgroupReading {
        cgroup_id: Some(dir.ino()),
        cpu,
        memory_current_bytes,
        memory_stat,
        oom_kill,
        psi_cpu: psi_cpu.unwrap_or_default(),
        psi_memory: psi_memory.unwrap_or_default(),
    })
}

/// Reads the history-only figures (swap, pids, io, io pressure) from `dir`, like
/// `read_container`.
pub fn read_extra(
    dir: &mut CgroupDir,
    buf: &mut ReadBuf,
    outcomes: &mut Outcomes,
) -> Result<ExtraReading, Vanished> {
    let io = dir.figure(CgFile::IoStat, buf, outcomes, |t| {
        Some(parse_io_stat(t)).filter(|io| io.read_bytes.is_some() && io.write_bytes.is_some())
    })?;
    Ok(ExtraReading {
        swap_current_bytes: dir.figure(CgFile::SwapCurrent, buf, outcomes, parse_u64)?,
        pids_current: dir.figure(CgFile::PidsCurrent, buf, outcomes, parse_u64)?,
        io: io.unwrap_or_default(),
        psi_io_some_avg10: dir.figure(CgFile::IoPressure, buf, outcomes, parse_psi_some_avg10)?,
    })
}

fn openat(dir: &File, name: &str) -> io::Result<File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let fd = openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

fn libc_o_directory() -> i32 {
    nix::fcntl::OFlag::O_DIRECTORY.bits()
}

fn utf8(buf: &[u8]) -> Option<&str> {
    std::str::from_utf8(buf).ok()
}

/// Bytes asked of the first read of a file: a page, more than the cgroup files read each cycle hold.
const READ_CHUNK: usize = 4096;
/// A short read that leaves less than this in the buffer is the end of the file, so no zero-byte
/// read has to confirm it. Regular files end at a short read; seq_file (cgroupfs, procfs) stops
/// short of the end only when its page-sized buffer cannot take the next record, which leaves more
/// than this in the buffer for any file whose records are shorter than this.
const SHORT_READ_IS_END: usize = 2048;

/// Replaces the contents of `buf` with the file at `path` (at most `MAX_FILE_BYTES`).
pub fn read_into(path: &Path, buf: &mut ReadBuf) -> io::Result<()> {
    pread_all(&File::open(path)?, buf, false)
}

/// A buffer reused across file reads. `bytes` only grows and stays initialised up to its length;
/// `len` is how much of it the last read filled. A `Vec<u8>` cleared and resized for each read
/// zeroed a whole chunk every time (a third of `--once`'s user instructions at 1000 containers,
/// measured with callgrind); here only bytes never read into before are zeroed, once.
#[derive(Debug, Default, Clone)]
pub struct ReadBuf {
    bytes: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    /// What the last read filled.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// `bytes[start..end]` to read into, zeroing what was never initialised.
    fn chunk(&mut self, start: usize, end: usize) -> &mut [u8] {
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        &mut self.bytes[start..end]
    }
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Replaces the contents of `buf` with `file` from offset 0 (at most `MAX_FILE_BYTES`), with
/// `pread` so that a kept descriptor needs no seek. With `one_record` the file is known to be
/// produced whole by one `show` (every cgroup interface file read here, sysfs attributes), so any
/// short read is its end; otherwise see `SHORT_READ_IS_END`. On an error `buf` holds what was read
/// before it.
pub fn pread_all(file: &File, buf: &mut ReadBuf, one_record: bool) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let max = usize::try_from(MAX_FILE_BYTES).unwrap_or(usize::MAX);
    buf.len = 0;
    loop {
        let start = buf.len;
        let want = READ_CHUNK.max(start).min(max - start);
        if want == 0 {
            return Ok(());
        }
        let chunk = buf.chunk(start, start + want);
        let n = loop {
            let n = match file.read_at(chunk, start as u64) {
                // Not seekable (a pipe standing in for a kernel file): read it as a stream.
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ESPIPE as i32) => {
                    (&mut &*file).read(chunk)
                }
                other => other,
            };
            match n {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = n?;
        buf.len = start + n;
        let short = n < want;
        if n == 0 || (short && (one_record || buf.len < SHORT_READ_IS_END)) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const CPU_STAT_TEXT: &str = "usage_usec 123456789\nuser_usec 100000000\nsystem_usec 23456789\n\
        nr_periods 10\nnr_throttled 3\nthrottled_usec 4500\nnr_bursts 0\nburst_usec 0\n";

    #[test]
    fn cpu_stat_reads_usage_and_throttling() {
        assert_eq!(
            parse_cpu_stat(CPU_STAT_TEXT),
            CpuStat {
                usage_usec: Some(123_456_789),
                nr_throttled: Some(3),
                throttled_usec: Some(4500),
            }
        );
    }

    #[test]
    fn cpu_stat_without_throttling_lines_leaves_them_none() {
        let s = parse_cpu_stat("usage_usec 42\nuser_usec 40\nsystem_usec 2\n");
        assert_eq!(s.usage_usec, Some(42));
        assert_eq!(s.nr_throttled, None);
        assert_eq!(s.throttled_usec, None);
    }

    #[test]
    fn cpu_stat_tolerates_extra_whitespace_blank_lines_and_unknown_keys() {
        let s = parse_cpu_stat("\n  some_new_key 7\n\tusage_usec   99  \r\n\n garbage\n");
        assert_eq!(s.usage_usec, Some(99));
    }

    #[test]
    fn cpu_stat_garbage_value_gives_none_for_that_field_only() {
        let s = parse_cpu_stat("usage_usec -5\nnr_throttled 2\nthrottled_usec abc\n");
        assert_eq!(
            s,
            CpuStat {
                usage_usec: None,
                nr_throttled: Some(2),
                throttled_usec: None,
            }
        );
        assert_eq!(parse_cpu_stat("usage_usec 12 34\n").usage_usec, None);
        assert_eq!(parse_cpu_stat("usage_usec\n").usage_usec, None);
        assert_eq!(parse_cpu_stat("usage_usec 12\0\n").usage_usec, None);
        assert_eq!(
            parse_cpu_stat("usage_usec 18446744073709551616\n").usage_usec,
            None
        );
    }

    #[test]
    fn cpu_stat_of_empty_text_is_all_none() {
        assert_eq!(parse_cpu_stat(""), CpuStat::default());
        assert_eq!(parse_cpu_stat("\0\0\0"), CpuStat::default());
    }

    #[test]
    fn u64_is_read_with_trailing_newline_and_whitespace() {
        assert_eq!(parse_u64("1048576\n"), Some(1_048_576));
        assert_eq!(parse_u64("  0 \n"), Some(0));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn u64_rejects_everything_that_is_not_one_unsigned_number() {
        for text in [
            "",
            "\n",
            "max\n",
            "-1\n",
            "+5",
            "18446744073709551616",
            "99999999999999999999999",
            "12abc",
            "1 2",
            "1.5",
            "12\0",
            "\0\x31\x32",
        ] {
            assert_eq!(parse_u64(text), None, "{text:?}");
        }
    }

    #[test]
    fn memory_stat_reads_file_shmem_and_inactive_file_and_skips_other_keys() {
        let text = "anon 100\nfile 3000\nfile_mapped 7\nshmem 2000\nactive_file 600\n\
                    inactive_file 400\nunknown_key 9\n";
        assert_eq!(
            parse_memory_stat(text),
            MemoryStat {
                file_bytes: Some(3000),
                shmem_bytes: Some(2000),
                inactive_file_bytes: Some(400),
            }
        );
    }

    #[test]
    fn memory_stat_with_garbled_or_missing_shmem_gives_none_for_it() {
        let s = parse_memory_stat("file 3000\nshmem lots\n");
        assert_eq!(s.file_bytes, Some(3000));
        assert_eq!(s.shmem_bytes, None);
        assert_eq!(s.inactive_file_bytes, None);
        assert_eq!(parse_memory_stat("anon 1\n"), MemoryStat::default());
    }

    #[test]
    fn keyed_finds_the_exact_key_not_a_prefix() {
        let text = "anon 1000\nfile_mapped 5\nfile 2048\nfile_dirty 1\ninactive_file 77\n";
        assert_eq!(parse_keyed(text, "file"), Some(2048));
        assert_eq!(parse_keyed(text, "anon"), Some(1000));
        assert_eq!(parse_keyed(text, "inactive_file"), Some(77));
        assert_eq!(parse_keyed(text, "shmem"), None);
    }

    #[test]
    fn keyed_garbage_value_gives_none() {
        assert_eq!(parse_keyed("file -3\n", "file"), None);
        assert_eq!(parse_keyed("file 99999999999999999999\n", "file"), None);
        assert_eq!(parse_keyed("file\n", "file"), None);
        assert_eq!(parse_keyed("", "file"), None);
    }

    #[test]
    fn lists_only_numeric_dirs_of_at_least_100_sorted() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "205",
            "101",
            "lxc.monitor",
            "99",
            "abc",
            "0150",
            "100",
            "4294967296",
        ] {
            fs::create_dir(tmp.path().join(name)).unwrap();
        }
        fs::write(tmp.path().join("300"), "not a dir").unwrap();
        fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
        assert_eq!(list_vmids(tmp.path()).unwrap(), vec![100, 101, 205]);
    }

    #[test]
    fn missing_cgroup_root_lists_no_container() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            list_vmids(&tmp.path().join("lxc")).unwrap(),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn cgroup_root_that_is_a_file_is_an_error_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("lxc");
        fs::write(&root, "").unwrap();
        let e = format!("{:#}", list_vmids(&root).unwrap_err());
        assert!(e.contains(&root.display().to_string()), "{e}");
    }

    fn fake_cgroup(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(CPU_STAT), CPU_STAT_TEXT).unwrap();
        fs::write(dir.join(MEMORY_CURRENT), "536870912\n").unwrap();
        fs::write(dir.join(MEMORY_STAT), "anon 1000\nfile 134217728\n").unwrap();
    }

    /// One read of the every-cycle files of `dir` through a fresh `CgroupDir`.
    fn read_once(dir: &Path) -> (CgroupReading, Outcomes) {
        let mut cg = CgroupDir::open(dir).unwrap();
        cg.start_cycle();
        let mut outcomes = Outcomes::default();
        let r = read_container(&mut cg, &mut ReadBuf::default(), &mut outcomes).unwrap();
        (r, outcomes)
    }

    #[test]
    fn reads_container_figures_and_dir_inode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("101");
        fake_cgroup(&dir);
        let (r, outcomes) = read_once(&dir);
        assert_eq!(r.cgroup_id, Some(fs::metadata(&dir).unwrap().ino()));
        assert_eq!(r.cpu.usage_usec, Some(123_456_789));
        assert_eq!(r.memory_current_bytes, Some(536_870_912));
        assert_eq!(r.memory_stat.file_bytes, Some(134_217_728));
        assert_eq!(r.memory_stat.shmem_bytes, None);
        assert_eq!(outcomes.get(CgFile::CpuStat), Outcome::Ok);
        assert_eq!(outcomes.get(CgFile::MemoryEvents), Outcome::Missing);
        assert_eq!(outcomes.get(CgFile::IoStat), Outcome::NotRead);
    }

    #[test]
    fn absent_cgroup_dir_cannot_be_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let e = CgroupDir::open(&tmp.path().join("101")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn missing_or_non_utf8_file_gives_none_for_that_file_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("101");
        fake_cgroup(&dir);
        fs::remove_file(dir.join(MEMORY_STAT)).unwrap();
        fs::write(dir.join(MEMORY_CURRENT), b"12\xff\xfe\n").unwrap();
        let (r, outcomes) = read_once(&dir);
        assert!(r.cgroup_id.is_some());
        assert_eq!(r.cpu.usage_usec, Some(123_456_789));
        assert_eq!(r.memory_current_bytes, None);
        assert_eq!(r.memory_stat, MemoryStat::default());
        assert_eq!(outcomes.get(CgFile::MemoryStat), Outcome::Missing);
        assert_eq!(outcomes.get(CgFile::MemoryCurrent), Outcome::Garbled);
    }

    #[test]
    fn kept_descriptors_are_reread_from_offset_zero_without_opening_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("101");
        fake_cgroup(&dir);
        let mut cg = CgroupDir::open(&dir).unwrap();
        let mut buf = ReadBuf::default();
        let mut outcomes = Outcomes::default();
        cg.start_cycle();
        read_container(&mut cg, &mut buf, &mut outcomes).unwrap();
        let opened = cg.opens();
        // Rewritten in place, as the kernel's counters change.
        fs::write(dir.join(MEMORY_CURRENT), "7\n").unwrap();
        cg.start_cycle();
        let r = read_container(&mut cg, &mut buf, &mut outcomes).unwrap();
        assert_eq!(r.memory_current_bytes, Some(7));
        assert_eq!(cg.opens(), opened);
    }

    #[test]
    fn a_file_created_in_the_directory_is_opened_on_the_next_cycle() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("101");
        fake_cgroup(&dir);
        let mut cg = CgroupDir::open(&dir).unwrap();
        let mut outcomes = Outcomes::default();
        cg.start_cycle();
        let r = read_container(&mut cg, &mut ReadBuf::default(), &mut outcomes).unwrap();
        assert_eq!(r.oom_kill, None);
        fs::write(dir.join(MEMORY_EVENTS), "oom 1\noom_kill 1\n").unwrap();
        cg.start_cycle();
        let r = read_container(&mut cg, &mut ReadBuf::default(), &mut outcomes).unwrap();
        assert_eq!(r.oom_kill, Some(1));
    }

    /// Every non-empty text of up to `max_len` characters drawn from `alphabet`, shortest first.
    fn every_text(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut all = Vec::new();
        let mut texts = vec![String::new()];
        for _ in 0..max_len {
            texts = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            all.extend(texts.iter().cloned());
        }
        all
    }

    #[test]
    fn lines_split_every_text_as_str_lines_does() {
        // Every text of up to 6 characters from an alphabet of the separators, a space, a letter
        // and a two-byte character.
        let texts = every_text(&['a', ' ', '\r', '\n', 'é'], 6);
        for text in &texts {
            let ours: Vec<&str> = lines(text).collect();
            let std: Vec<&str> = text.lines().collect();
            assert_eq!(ours, std, "{text:?}");
        }
        assert_eq!(texts.len(), 5 + 25 + 125 + 625 + 3125 + 15625);
        assert_eq!(lines("").count(), 0);
        let stat = "anon 1\r\nfile 2\n\nshmem 3\r\rinactive_file 4";
        assert_eq!(
            lines(stat).collect::<Vec<_>>(),
            ["anon 1", "file 2", "", "shmem 3\r\rinactive_file 4"]
        );
    }

    #[test]
    fn find_newline_finds_the_first_newline_at_every_offset_and_lines_stay_as_str_lines() {
        for len in 0..40 {
            let plain = "x".repeat(len);
            assert_eq!(find_newline(plain.as_bytes()), None, "{len}");
            for at in 0..len {
                let mut text = plain.clone().into_bytes();
                text[at] = b'\n';
                // A second newline and the bytes next to `\n` (0x0b, 0x09) after the first.
                for (k, b) in [(at + 1, 0x0b), (at + 2, b'\n'), (at + 3, 0x09)] {
                    if k < len {
                        text[k] = b;
                    }
                }
                assert_eq!(find_newline(&text), Some(at), "{len} {at}");
            }
        }
        // Long texts of short and long lines, against `str::lines`.
        let mut seed = 12345u64;
        let alphabet = ["a", " ", "\r", "\n", "é", "avg10=0.00 ", "\n\n"];
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..(seed % 30) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            assert_eq!(
                lines(&text).collect::<Vec<_>>(),
                text.lines().collect::<Vec<_>>(),
                "{text:?}"
            );
        }
    }

    /// A `key N` line split as the parsers split it: the value is `None` unless the line has
    /// exactly two fields.
    fn key_value(line: &str) -> Option<(&str, Option<&str>)> {
        let (key, rest) = split_key(line)?;
        Some((key, only_field(rest)))
    }

    /// How the parsers split a `key N` line before `split_key`: all its fields first.
    fn key_value_by_fields(line: &str) -> Option<(&str, Option<&str>)> {
        let mut fields = line.split_ascii_whitespace();
        let key = fields.next()?;
        let value = fields.next();
        if fields.next().is_some() {
            return Some((key, None));
        }
        Some((key, value))
    }

    #[test]
    fn key_value_splits_every_line_as_splitting_all_its_fields_does() {
        // Every line of up to 6 characters from an alphabet of ASCII whitespace, a letter, a
        // digit and a two-byte character.
        let texts = every_text(&['a', '1', ' ', '\t', '\x0c', 'é'], 6);
        for line in &texts {
            assert_eq!(key_value(line), key_value_by_fields(line), "{line:?}");
        }
        assert_eq!(texts.len(), 6 + 36 + 216 + 1296 + 7776 + 46656);
        assert_eq!(key_value("  file 42 \t"), Some(("file", Some("42"))));
        assert_eq!(key_value("file 42 7"), Some(("file", None)));
        assert_eq!(key_value("file"), Some(("file", None)));
        assert_eq!(key_value(" \t "), None);
    }

    #[test]
    fn pread_all_reads_a_pipe_as_a_stream() {
        let (read, write) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&write, b"usage_usec 5\n").unwrap();
        drop(write);
        let mut buf = ReadBuf::default();
        pread_all(&File::from(read), &mut buf, true).unwrap();
        assert_eq!(buf.as_bytes(), b"usage_usec 5\n");
    }

    #[test]
    fn pread_all_reads_a_cgroup_like_file_again_from_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CPU_STAT);
        fs::write(&path, CPU_STAT_TEXT).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = ReadBuf::default();
        pread_all(&file, &mut buf, true).unwrap();
        assert_eq!(buf.as_bytes(), CPU_STAT_TEXT.as_bytes());
        pread_all(&file, &mut buf, true).unwrap();
        assert_eq!(buf.as_bytes(), CPU_STAT_TEXT.as_bytes());
    }

    #[test]
    fn read_into_reads_files_larger_than_one_chunk_and_stops_at_the_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let text: Vec<u8> = (0..3 * READ_CHUNK + 7)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        fs::write(&path, &text).unwrap();
        let mut buf = ReadBuf::default();
        read_into(&path, &mut buf).unwrap();
        assert_eq!(buf.as_bytes(), text);
        let huge = vec![b'x'; MAX_FILE_BYTES as usize + 10];
        fs::write(&path, &huge).unwrap();
        read_into(&path, &mut buf).unwrap();
        assert_eq!(buf.len() as u64, MAX_FILE_BYTES);
    }

    #[test]
    fn read_into_replaces_previous_buffer_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let long = tmp.path().join("long");
        let short = tmp.path().join("short");
        let empty = tmp.path().join("empty");
        let text: Vec<u8> = (0..2 * READ_CHUNK + 3)
            .map(|i| b'0' + (i % 10) as u8)
            .collect();
        fs::write(&long, &text).unwrap();
        fs::write(&short, "short").unwrap();
        fs::write(&empty, "").unwrap();
        let mut buf = ReadBuf::default();
        read_into(&long, &mut buf).unwrap();
        assert_eq!(buf.as_bytes(), text);
        // The bytes of the longer file stay behind in the buffer, but are not part of the read.
        read_into(&short, &mut buf).unwrap();
        assert_eq!(buf.as_bytes(), b"short");
        assert_eq!(utf8(&buf), Some("short"));
        read_into(&empty, &mut buf).unwrap();
        assert_eq!(buf.as_bytes(), b"");
        read_into(&long, &mut buf).unwrap();
        assert_eq!(buf.as_bytes(), text);
        let (read, write) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&write, b"oom_kill 2\n").unwrap();
        drop(write);
        pread_all(&File::from(read), &mut buf, true).unwrap();
        assert_eq!(buf.as_bytes(), b"oom_kill 2\n");
    }

    #[test]
    fn a_failed_read_leaves_no_earlier_contents_in_the_buffer() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        fs::write(&path, "usage_usec 5\n").unwrap();
        let mut buf = ReadBuf::default();
        read_into(&path, &mut buf).unwrap();
        // A directory opens but fails to read (EISDIR).
        let dir = File::open(tmp.path()).unwrap();
        assert!(pread_all(&dir, &mut buf, true).is_err());
        assert_eq!(buf.as_bytes(), b"");
    }

    #[test]
    fn io_stat_sums_read_and_write_bytes_over_devices() {
        let text = "8:0 rbytes=1000 wbytes=200 rios=3 wios=4 dbytes=0 dios=0\n\
                    253:1 rbytes=24 wbytes=6 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(
            parse_io_stat(text),
            IoTotals {
                read_bytes: Some(1024),
                write_bytes: Some(206),
            }
        );
    }

    #[test]
    fn io_stat_of_a_cgroup_without_io_is_zero() {
        assert_eq!(
            parse_io_stat(""),
            IoTotals {
                read_bytes: Some(0),
                write_bytes: Some(0),
            }
        );
    }

    #[test]
    fn io_stat_garbled_value_gives_none_for_that_total_only() {
        let t = parse_io_stat("8:0 rbytes=12x wbytes=5\n8:16 rbytes=1 wbytes=5 extra\n");
        assert_eq!(t.read_bytes, None);
        assert_eq!(t.write_bytes, Some(10));
    }

    #[test]
    fn psi_reads_some_avg10_and_ignores_the_full_line() {
        let text = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n\
                    full avg10=9.00 avg60=0.00 avg300=0.00 total=1\n";
        assert_eq!(parse_psi_some_avg10(text), Some(1.5));
        assert_eq!(
            parse_psi_some_avg10("full avg10=9.00 avg60=0.00 avg300=0.00 total=1\n"),
            None
        );
        assert_eq!(parse_psi_some_avg10("some avg10=abc total=1\n"), None);
        assert_eq!(parse_psi_some_avg10("some avg10=-1.0 total=1\n"), None);
        assert_eq!(parse_psi_some_avg10(""), None);
    }

    #[test]
    fn first_pid_is_the_first_line_of_cgroup_procs() {
        assert_eq!(parse_first_pid("4242\n4300\n"), Some(4242));
        assert_eq!(parse_first_pid(""), None);
        assert_eq!(parse_first_pid("0\n"), None);
        assert_eq!(parse_first_pid("x\n"), None);
    }

    #[test]
    fn psi_reads_some_and_full_avg10_and_tolerates_extra_lines() {
        let text = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n\
                    full avg10=9.25 avg60=0.00 avg300=0.00 total=1\n\
                    future avg10=50.00\n";
        assert_eq!(
            parse_psi(text),
            Psi {
                some_avg10: Some(1.5),
                full_avg10: Some(9.25),
            }
        );
    }

    #[test]
    fn psi_without_full_line_or_with_garbled_values_gives_none_for_those() {
        assert_eq!(
            parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            Psi {
                some_avg10: Some(0.0),
                full_avg10: None,
            }
        );
        assert_eq!(
            parse_psi("some avg10=abc total=1\nfull avg10=100.01 total=2\n"),
            Psi::default()
        );
        assert_eq!(
            parse_psi("some avg60=1.00 total=1\nfull avg10=NaN total=2\n"),
            Psi::default()
        );
        assert_eq!(parse_psi(""), Psi::default());
    }

    fn write_every_cycle_files(dir: &Path) {
        fs::write(
            dir.join(MEMORY_EVENTS),
            "low 0\nhigh 3\nmax 2\noom 1\noom_kill 4\noom_group_kill 0\n",
        )
        .unwrap();
        fs::write(
            dir.join(CPU_PRESSURE),
            "some avg10=12.50 avg60=0 avg300=0 total=5\nfull avg10=3.00 avg60=0 avg300=0 total=2\n",
        )
        .unwrap();
        fs::write(
            dir.join(MEMORY_PRESSURE),
            "some avg10=2.25 avg60=0 avg300=0 total=5\nfull avg10=1.75 avg60=0 avg300=0 total=2\n",
        )
        .unwrap();
    }

    #[test]
    fn read_container_reads_oom_kills_and_cpu_and_memory_pressure() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("101");
        fake_cgroup(&dir);
        write_every_cycle_files(&dir);
        let (r, _) = read_once(&dir);
        assert_eq!(r.cpu.nr_throttled, Some(3));
        assert_eq!(r.cpu.throttled_usec, Some(4500));
        assert_eq!(r.oom_kill, Some(4));
        assert_eq!(
            r.psi_cpu,
            Psi {
                some_avg10: Some(12.5),
                full_avg10: Some(3.0),
            }
        );
        assert_eq!(
            r.psi_memory,
            Psi {
                some_avg10: Some(2.25),
                full_avg10: Some(1.75),
            }
        );
    }

    #[test]
    fn read_extra_reads_each_file_and_leaves_missing_ones_none() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("101");
        fs::create_dir_all(dir.join("ns")).unwrap();
        fs::write(dir.join(MEMORY_SWAP_CURRENT), "4096\n").unwrap();
        fs::write(dir.join(PIDS_CURRENT), "37\n").unwrap();
        fs::write(dir.join(IO_STAT), "8:0 rbytes=10 wbytes=20 rios=1 wios=1\n").unwrap();
        fs::write(dir.join(NS_CGROUP_PROCS), "777\n778\n").unwrap();
        let mut cg = CgroupDir::open(&dir).unwrap();
        let mut outcomes = Outcomes::default();
        let r = read_extra(&mut cg, &mut ReadBuf::default(), &mut outcomes).unwrap();
        assert_eq!(outcomes.get(CgFile::IoPressure), Outcome::Missing);
        assert_eq!(
            r,
            ExtraReading {
                swap_current_bytes: Some(4096),
                pids_current: Some(37),
                io: IoTotals {
                    read_bytes: Some(10),
                    write_bytes: Some(20),
                },
                psi_io_some_avg10: None,
            }
        );
        assert_eq!(cg.init_pid(&mut ReadBuf::default()), Some(777));
    }
}
