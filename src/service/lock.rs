//! Single-instance lock: an `flock` on `lock_file`, holding the pid.
//!
//! `flock` belongs to the open file, so the kernel drops it when the holder exits however it
//! dies: a lock file left by a killed daemon never blocks the next one. The file is never removed
//! (removing it would let two daemons lock two different inodes under the same name).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

/// Mode of the lock file: only the owner may open it, since anyone who can open it can lock it.
const LOCK_FILE_MODE: u32 = 0o600;
/// Longest pid text read from a lock file; anything longer is garbage.
const MAX_PID_BYTES: u64 = 32;

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock; `pid` is what the lock file says, if readable.
    Held { pid: Option<u32> },
    /// The lock file could not be created, opened or locked. Names the path.
    Io(anyhow::Error),
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held { pid: Some(pid) } => {
                write!(f, "another lxc_autoscale is running (pid {pid})")
            }
            LockError::Held { pid: None } => {
                write!(f, "another lxc_autoscale is running (pid unknown)")
            }
            LockError::Io(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for LockError {}

/// The held lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    file: Flock<File>,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path` without waiting, creating the file (mode 0600) and its parent
    /// directory (mode 0755, see `fsutil::ensure_runtime_dir`) when missing, and writes our pid
    /// into it. Refuses a symlink, a parent directory that others can write to or that is not
    /// ours, and a lock file owned by anyone but root or us: in any of those another user could
    /// take the lock first and keep the daemon from starting.
    pub fn acquire(path: &Path) -> Result<Lock, LockError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::fsutil::ensure_runtime_dir(parent)
                .with_context(|| format!("refusing lock file {}", path.display()))
                .map_err(LockError::Io)?;
        }
        let file = open_lock_file(path).map_err(LockError::Io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(LockError::Held {
                    pid: read_pid(&mut file),
                })
            }
            Err((_, errno)) => {
                return Err(LockError::Io(anyhow::anyhow!(
                    "cannot lock {}: {errno}",
                    path.display()
                )))
            }
        };
        write_pid(&mut file, std::process::id())
            .with_context(|| format!("cannot write pid to lock file {}", path.display()))
            .map_err(LockError::Io)?;
        Ok(Lock {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Empty the file so nobody reads a dead pid; the flock itself goes with the Flock.
        let _ = self.file.set_len(0);
    }
}

/// Opens (creating) the lock file and checks who owns it. A file others can read could be opened
/// and `flock`ed by them (flock needs no write access), so its mode is narrowed to 0600.
fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    // No O_TRUNC: the file may hold the running daemon's pid, which we report if it is held.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(LOCK_FILE_MODE)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot inspect lock file {}", path.display()))?;
    check_lock_file(path, &meta, nix::unistd::geteuid().as_raw())?;
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(LOCK_FILE_MODE))
            .with_context(|| format!("cannot set mode of lock file {}", path.display()))?;
    }
    Ok(file)
}

/// A lock file must be a regular file owned by root or by `euid`.
fn check_lock_file(path: &Path, meta: &fs::Metadata, euid: u32) -> anyhow::Result<()> {
    if !meta.is_file() {
        anyhow::bail!("refusing lock file {}: not a regular file", path.display());
    }
    if meta.uid() != 0 && meta.uid() != euid {
        anyhow::bail!(
            "refusing lock file {}: owned by uid {}, not by root",
            path.display(),
            meta.uid()
        );
    }
    Ok(())
}

fn write_pid(file: &mut File, pid: u32) -> io::Result<()> {
    file.set_len(0)?;
    // Positional write: the open file's offset is wherever an earlier read left it.
    file.write_all_at(format!("{pid}\n").as_bytes(), 0)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(MAX_PID_BYTES).read_to_string(&mut text).ok()?;
    parse_pid(&text)
}

/// The pid in a lock file's text: one positive integer, surrounding whitespace allowed.
pub fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|&pid| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn acquire_writes_our_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run").join("lxc_autoscale.lock");
        let lock = Lock::acquire(&path).unwrap();
        assert_eq!(lock.path(), path);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn second_acquire_is_held_and_names_the_holder_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let _lock = Lock::acquire(&path).unwrap();
        // flock is per open file description, so a second open in this process conflicts.
        let err = Lock::acquire(&path).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, LockError::Held { pid: Some(p) } if p == pid),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("another lxc_autoscale is running (pid {pid})")
        );
        // The failed attempt must not have clobbered the holder's pid.
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{pid}\n"));
    }

    #[test]
    fn dropping_the_lock_releases_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        drop(Lock::acquire(&path).unwrap());
        let again = Lock::acquire(&path);
        assert!(again.is_ok(), "{:?}", again.err());
    }

    #[test]
    fn stale_file_with_garbage_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        fs::write(&path, "not a pid, and much longer than any pid would be\n").unwrap();
        let _lock = Lock::acquire(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn held_with_unreadable_pid_says_pid_unknown() {
        assert_eq!(
            LockError::Held { pid: None }.to_string(),
            "another lxc_autoscale is running (pid unknown)"
        );
    }

    #[test]
    fn symlinked_lock_file_is_refused_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, "keep").unwrap();
        let path = tmp.path().join("lock");
        symlink(&target, &path).unwrap();
        let err = Lock::acquire(&path).unwrap_err();
        assert!(matches!(err, LockError::Io(_)), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn parse_pid_accepts_one_positive_integer() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("  77 "), Some(77));
        assert_eq!(parse_pid("0\n"), None);
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("12 34"), None);
        assert_eq!(parse_pid("-5"), None);
    }

    #[test]
    fn lock_in_a_directory_others_can_write_is_refused_naming_both_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lock");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        let path = dir.join("lxc_autoscale.lock");
        let err = Lock::acquire(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing lock file {}: refusing directory {}: group or others can write to it (mode 1777); run: chmod go-w {}",
                path.display(),
                dir.display(),
                dir.display()
            )
        );
        assert!(!path.exists());
    }

    #[test]
    fn lock_file_owned_by_another_user_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lxc_autoscale.lock");
        fs::write(&path, "1\n").unwrap();
        let euid = nix::unistd::geteuid();
        let nobody = 65534;
        if euid.is_root() {
            // What user nobody would have done in a directory it could write to.
            nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(nobody)), None).unwrap();
            let err = Lock::acquire(&path).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "refusing lock file {}: owned by uid {nobody}, not by root",
                    path.display()
                )
            );
            assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
        }
        let meta = fs::metadata(&path).unwrap();
        let err = check_lock_file(&path, &meta, nobody + 1).unwrap_err();
        if meta.uid() != 0 {
            assert_eq!(
                format!("{err:#}"),
                format!(
                    "refusing lock file {}: owned by uid {}, not by root",
                    path.display(),
                    meta.uid()
                )
            );
        }
    }

    #[test]
    fn lock_file_readable_by_others_is_narrowed_to_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lxc_autoscale.lock");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let _lock = Lock::acquire(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn new_lock_file_and_directory_get_modes_0600_and_0755() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run").join("lxc_autoscale");
        let path = dir.join("lxc_autoscale.lock");
        let _lock = Lock::acquire(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o755);
    }
}
