//! Change notices for the kept cgroup directories, through one inotify instance.
//!
//! Without them a steady cycle would `fstat` every kept directory (to notice a file created,
//! removed or renamed there) and re-read `memory.events`, whose OOM-kill count rarely moves. Both
//! kinds of change reach a watch on the directory:
//! - cgroupfs notifies the directory's watch when a notifying file changes (`memory.events`,
//!   `cgroup.events`, ...; see the kernel's cgroup-v2.rst), naming the file, as long as the file's
//!   inode is in memory, which the kept descriptor ensures;
//! - ordinary filesystems (the fake hosts of the tests and benchmarks) report every write, and
//!   every file created, removed or renamed in the directory.
//!
//! One non-blocking read of the instance per cycle thus stands in for two syscalls per container.
//! Where no watch could be set (the instance or the watch limit is exhausted) or notices were
//! lost (the queue overflowed), the directory is checked the old way for that cycle.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::read::cgroup::{Notice, MEMORY_EVENTS};

/// The events asked for: writes (for `memory.events`), entries created, removed and renamed, and
/// the end of the directory itself.
fn watch_mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// The notice an event with `mask` (`IN_*` bits) about the entry `name` gives, if any. Writes to
/// other files are ignored (they are read every cycle anyway), and so are subdirectories (a
/// container's `ns/` cgroup holds none of the files read).
pub fn notice_of(mask: u32, name: Option<&[u8]>) -> Option<Notice> {
    let has = |flag: AddWatchFlags| mask & flag.bits() != 0;
    if has(AddWatchFlags::IN_Q_OVERFLOW) {
        return Some(Notice::Lost);
    }
    if has(AddWatchFlags::IN_IGNORED)
        || has(AddWatchFlags::IN_DELETE_SELF)
        || has(AddWatchFlags::IN_MOVE_SELF)
        || has(AddWatchFlags::IN_UNMOUNT)
    {
        return Some(Notice::Ended);
    }
    if has(AddWatchFlags::IN_ISDIR) {
        return None;
    }
    let entries = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO;
    if mask & entries.bits() != 0 {
        return Some(Notice::Entries);
    }
    if has(AddWatchFlags::IN_MODIFY) && name == Some(MEMORY_EVENTS.as_bytes()) {
        return Some(Notice::MemoryEvents);
    }
    None
}

/// One inotify instance watching cgroup directories.
#[derive(Debug)]
pub struct DirWatch {
    inotify: Inotify,
}

impl DirWatch {
    /// A new, non-blocking instance.
    pub fn new() -> io::Result<DirWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        Ok(DirWatch { inotify })
    }

    /// Watches the directory `dir`. The same directory watched twice gives the same descriptor.
    pub fn add(&self, dir: &Path) -> io::Result<WatchDescriptor> {
        Ok(self.inotify.add_watch(dir, watch_mask())?)
    }

    /// Stops watching; a watch the kernel already ended (its directory removed) is no error.
    pub fn remove(&self, wd: WatchDescriptor) {
        let _ = self.inotify.rm_watch(wd);
    }

    /// Hands every pending notice to `on`, with the watch it came from (meaningless for `Lost`).
    /// Returns when nothing is pending; one `read` when nothing changed.
    pub fn drain(&self, mut on: impl FnMut(WatchDescriptor, Notice)) -> io::Result<()> {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if events.is_empty() {
                return Ok(());
            }
            for e in events {
                let name = e.name.as_deref().map(|n| n.as_bytes());
                if let Some(notice) = notice_of(e.mask.bits(), name) {
                    on(e.wd, notice);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const IN_MODIFY: u32 = 0x2;
    const IN_MOVED_FROM: u32 = 0x40;
    const IN_MOVED_TO: u32 = 0x80;
    const IN_CREATE: u32 = 0x100;
    const IN_DELETE: u32 = 0x200;
    const IN_DELETE_SELF: u32 = 0x400;
    const IN_MOVE_SELF: u32 = 0x800;
    const IN_Q_OVERFLOW: u32 = 0x4000;
    const IN_IGNORED: u32 = 0x8000;
    const IN_ISDIR: u32 = 0x4000_0000;

    #[test]
    fn notices_follow_the_event_mask_and_the_entry_name() {
        let events = Some(b"memory.events".as_slice());
        let stat = Some(b"memory.stat".as_slice());
        assert_eq!(notice_of(IN_MODIFY, events), Some(Notice::MemoryEvents));
        assert_eq!(notice_of(IN_MODIFY, stat), None);
        assert_eq!(notice_of(IN_MODIFY, Some(b"cgroup.events")), None);
        assert_eq!(notice_of(IN_MODIFY, None), None);
        for mask in [IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO] {
            assert_eq!(notice_of(mask, stat), Some(Notice::Entries), "{mask:#x}");
            assert_eq!(notice_of(mask, events), Some(Notice::Entries), "{mask:#x}");
            assert_eq!(notice_of(mask | IN_ISDIR, Some(b"ns")), None, "{mask:#x}");
        }
        for mask in [
            IN_DELETE_SELF,
            IN_MOVE_SELF,
            IN_IGNORED,
            IN_DELETE_SELF | IN_ISDIR,
        ] {
            assert_eq!(notice_of(mask, None), Some(Notice::Ended), "{mask:#x}");
        }
        assert_eq!(notice_of(IN_Q_OVERFLOW, None), Some(Notice::Lost));
        assert_eq!(notice_of(0, None), None);
    }

    fn drained(w: &DirWatch) -> Vec<(WatchDescriptor, Notice)> {
        let mut out = Vec::new();
        w.drain(|wd, n| out.push((wd, n))).unwrap();
        out
    }

    #[test]
    fn a_watched_directory_reports_writes_to_memory_events_and_changed_entries_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("101");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(MEMORY_EVENTS), "oom_kill 0\n").unwrap();
        fs::write(dir.join("memory.stat"), "file 1\n").unwrap();
        let w = DirWatch::new().unwrap();
        let wd = w.add(&dir).unwrap();
        assert_eq!(w.add(&dir).unwrap(), wd);
        assert_eq!(drained(&w), []);
        fs::write(dir.join("memory.stat"), "file 2\n").unwrap();
        fs::create_dir(dir.join("ns")).unwrap();
        assert_eq!(drained(&w), []);
        fs::write(dir.join(MEMORY_EVENTS), "oom_kill 1\n").unwrap();
        assert_eq!(drained(&w), [(wd, Notice::MemoryEvents)]);
        fs::rename(dir.join("memory.stat"), dir.join("x")).unwrap();
        assert_eq!(drained(&w), [(wd, Notice::Entries), (wd, Notice::Entries)]);
        fs::remove_file(dir.join("x")).unwrap();
        fs::remove_dir(dir.join("ns")).unwrap();
        assert_eq!(drained(&w), [(wd, Notice::Entries)]);
        fs::remove_file(dir.join(MEMORY_EVENTS)).unwrap();
        fs::remove_dir(&dir).unwrap();
        assert_eq!(
            drained(&w),
            [
                (wd, Notice::Entries),
                (wd, Notice::Ended),
                (wd, Notice::Ended)
            ]
        );
    }

    #[test]
    fn a_removed_watch_reports_nothing_more() {
        let tmp = tempfile::tempdir().unwrap();
        let w = DirWatch::new().unwrap();
        let wd = w.add(tmp.path()).unwrap();
        w.remove(wd);
        assert_eq!(drained(&w), [(wd, Notice::Ended)]);
        fs::write(tmp.path().join(MEMORY_EVENTS), "oom_kill 1\n").unwrap();
        assert_eq!(drained(&w), []);
        w.remove(wd);
    }

    #[test]
    fn a_file_is_not_a_directory_to_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, "").unwrap();
        let w = DirWatch::new().unwrap();
        assert_eq!(
            w.add(&file).unwrap_err().raw_os_error(),
            Some(Errno::ENOTDIR as i32)
        );
    }
}
