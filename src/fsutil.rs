//! Safe file writes for a root daemon: atomic, private, and never through a symlink.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;

/// Writes `data` to `path` atomically: a temp file in the same directory opened with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` and `mode`, fsync, rename over `path`, fsync of the directory.
/// Refuses when `path` is a symlink. Errors name the path.
///
/// The file ends up with exactly `mode` (the umask does not narrow or widen it).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_atomic_with(path, mode, |w| w.write_all(data))
}

/// Like `write_atomic`, with the content written by `fill` into a buffered writer on the temp
/// file, so that a large encoding (the state file) is never held in memory as a whole.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    refuse_symlink(path)?;
    let name = path
        .file_name()
        .with_context(|| format!("cannot write {}: no file name", path.display()))?;
    let dir = parent_dir(path);
    let claim = claim_tmp(dir, &name.to_string_lossy());
    let tmp = &claim.0;

    let result = write_tmp_and_rename(tmp, path, fill, mode);
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result?;

    // Without this the rename itself may be lost on power failure.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Temp files this process is writing now. Another thread of ours (the API beside the service
/// loop) has the same pid: it must not take a temp file in use for a stale one and remove it.
static TMP_IN_USE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// A temp path claimed in `TMP_IN_USE`, released when dropped.
struct TmpClaim(PathBuf);

impl Drop for TmpClaim {
    fn drop(&mut self) {
        TMP_IN_USE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// `<dir>/.<name>.tmp.<pid>`, or with `.N` added when another thread of ours is using that one.
fn claim_tmp(dir: &Path, name: &str) -> TmpClaim {
    let mut in_use = TMP_IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
    let base = format!(".{name}.tmp.{}", std::process::id());
    let mut n = 0u64;
    loop {
        let tmp = match n {
            0 => dir.join(&base),
            n => dir.join(format!("{base}.{n}")),
        };
        if in_use.insert(tmp.clone()) {
            return TmpClaim(tmp);
        }
        n += 1;
    }
}

fn write_tmp_and_rename(
    tmp: &Path,
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    mode: u32,
) -> Result<()> {
    let file = match open_exclusive(tmp, mode) {
        // A temp file left by a crashed process that had our pid; unlink never follows a symlink.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)
                .with_context(|| format!("cannot remove stale temp file {}", tmp.display()))?;
            open_exclusive(tmp, mode)
        }
        other => other,
    }
    .with_context(|| format!("cannot create temp file {}", tmp.display()))?;
    file.set_permissions(Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode of {}", tmp.display()))?;
    let mut out = io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, &file);
    fill(&mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(out);
    file.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    drop(file);
    fs::rename(tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Buffer of `write_atomic_with`: large enough that a state file of 1000 containers takes a few
/// dozen writes.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

fn open_exclusive(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// The directory holding `path`; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn refuse_symlink(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            bail!("refusing to write {}: it is a symlink", path.display())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

/// Creates `dir` (and parents) with mode 0700 when missing. Refuses a symlink, a non-directory,
/// (when running as root) a directory not owned by root, and one that group or others can write
/// to. Errors name the path.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
            fs::symlink_metadata(dir)
                .with_context(|| format!("cannot inspect directory {}", dir.display()))?
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect directory {}", dir.display()))
        }
    };
    if meta.file_type().is_symlink() {
        bail!("refusing directory {}: it is a symlink", dir.display());
    }
    if !meta.is_dir() {
        bail!(
            "refusing directory {}: it is not a directory",
            dir.display()
        );
    }
    // Root must not write into a directory another user can swap files in.
    if nix::unistd::geteuid().is_root() && meta.uid() != 0 {
        bail!(
            "refusing directory {}: owned by uid {}, not root",
            dir.display(),
            meta.uid()
        );
    }
    refuse_writable_by_others(dir, &meta)
}

/// Mode of a runtime directory such as `/run/lxc_autoscale`: others may enter it, only we write.
pub const RUNTIME_DIR_MODE: u32 = 0o755;

/// Creates the runtime directory `dir` (lock file, API socket) with mode 0755 when missing, and
/// checks it: refuses a symlink, a non-directory, a directory owned by anyone but our effective
/// uid, and one that group or others can write to (they could swap the files in it). Errors name
/// the path. Missing parents are created with the same mode.
pub fn ensure_runtime_dir(dir: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(RUNTIME_DIR_MODE)
                .create(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
            // The umask may have narrowed the mode; 0755 is what readers of the socket need.
            fs::set_permissions(dir, Permissions::from_mode(RUNTIME_DIR_MODE))
                .with_context(|| format!("cannot set mode of directory {}", dir.display()))?;
            fs::symlink_metadata(dir)
                .with_context(|| format!("cannot inspect directory {}", dir.display()))?
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect directory {}", dir.display()))
        }
    };
    check_runtime_dir(dir, &meta, nix::unistd::geteuid().as_raw())
}

/// The rules of `ensure_runtime_dir` on an existing entry, for owner `euid`.
fn check_runtime_dir(dir: &Path, meta: &fs::Metadata, euid: u32) -> Result<()> {
    if meta.file_type().is_symlink() {
        bail!("refusing directory {}: it is a symlink", dir.display());
    }
    if !meta.is_dir() {
        bail!(
            "refusing directory {}: it is not a directory",
            dir.display()
        );
    }
    if meta.uid() != euid {
        bail!(
            "refusing directory {}: owned by uid {}, not by uid {euid} that runs lxc_autoscale",
            dir.display(),
            meta.uid()
        );
    }
    refuse_writable_by_others(dir, meta)
}

/// Refuses a directory that group or others can write to: they could delete or swap the files
/// in it (a backup, the lock file).
fn refuse_writable_by_others(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "refusing directory {}: group or others can write to it (mode {mode:o}); run: chmod go-w {}",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_atomic_creates_file_with_exact_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.json");
        write_atomic(&path, b"hello", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn write_atomic_replaces_existing_content_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.json");
        write_atomic(&path, b"first, longer content", 0o600).unwrap();
        write_atomic(&path, b"second", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(mode_of(&path), 0o640);
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn write_atomic_refuses_a_symlink_and_leaves_its_target_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let link = tmp.path().join("link");
        symlink(&target, &link).unwrap();
        let err = format!("{:#}", write_atomic(&link, b"evil", 0o600).unwrap_err());
        assert!(err.contains("symlink"), "{err}");
        assert!(err.contains(&link.display().to_string()), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn write_atomic_replaces_a_stale_temp_file_of_the_same_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.json");
        let stale = tmp
            .path()
            .join(format!(".f.json.tmp.{}", std::process::id()));
        fs::write(&stale, b"junk").unwrap();
        write_atomic(&path, b"ok", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"ok");
        assert!(!stale.exists());
    }

    #[test]
    fn write_atomic_of_one_path_from_two_writers_at_once_keeps_both_whole() {
        // Another thread of the daemon (the API) writes the same file while this write is
        // between its temp file and its rename: same pid, so once the same temp name.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.json");
        let mut inner = None;
        write_atomic_with(&path, 0o600, |w| {
            w.write_all(b"outer")?;
            inner = Some(write_atomic(&path, b"inner", 0o600));
            Ok(())
        })
        .unwrap();
        inner.unwrap().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"outer");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.json")]);
    }

    #[test]
    fn write_atomic_into_missing_directory_fails_naming_the_temp_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("missing").join("f.json");
        let err = format!("{:#}", write_atomic(&path, b"x", 0o600).unwrap_err());
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn ensure_private_dir_creates_nested_dirs_with_mode_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        ensure_private_dir(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(mode_of(&dir), 0o700);
        // Existing directory is fine.
        ensure_private_dir(&dir).unwrap();
    }

    #[test]
    fn ensure_private_dir_refuses_a_symlink_to_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        symlink(&real, &link).unwrap();
        let err = format!("{:#}", ensure_private_dir(&link).unwrap_err());
        assert!(err.contains("symlink"), "{err}");
        assert!(err.contains(&link.display().to_string()), "{err}");
    }

    #[test]
    fn ensure_private_dir_refuses_a_regular_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = format!("{:#}", ensure_private_dir(&file).unwrap_err());
        assert!(err.contains("not a directory"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn ensure_private_dir_refuses_group_or_other_write_bits() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o770, 0o707, 0o1777] {
            let dir = tmp.path().join(format!("d{mode:o}"));
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                format!("{:#}", ensure_private_dir(&dir).unwrap_err()),
                format!(
                    "refusing directory {}: group or others can write to it (mode {mode:o}); run: chmod go-w {}",
                    dir.display(),
                    dir.display()
                )
            );
        }
    }

    #[test]
    fn ensure_runtime_dir_creates_a_0755_dir_owned_by_us() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run").join("lxc_autoscale");
        ensure_runtime_dir(&dir).unwrap();
        let meta = fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(mode_of(&dir), 0o755);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        // An existing, correct directory is accepted as it is.
        ensure_runtime_dir(&dir).unwrap();
    }

    #[test]
    fn ensure_runtime_dir_refuses_a_symlink_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        symlink(&real, &link).unwrap();
        assert_eq!(
            format!("{:#}", ensure_runtime_dir(&link).unwrap_err()),
            format!("refusing directory {}: it is a symlink", link.display())
        );
    }

    #[test]
    fn ensure_runtime_dir_refuses_a_file_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        assert_eq!(
            format!("{:#}", ensure_runtime_dir(&file).unwrap_err()),
            format!(
                "refusing directory {}: it is not a directory",
                file.display()
            )
        );
    }

    #[test]
    fn ensure_runtime_dir_refuses_group_or_other_write_bits() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o775, 0o757, 0o1777] {
            let dir = tmp.path().join(format!("d{mode:o}"));
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                format!("{:#}", ensure_runtime_dir(&dir).unwrap_err()),
                format!(
                    "refusing directory {}: group or others can write to it (mode {mode:o}); run: chmod go-w {}",
                    dir.display(),
                    dir.display()
                )
            );
        }
    }

    #[test]
    fn ensure_runtime_dir_refuses_another_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = fs::symlink_metadata(tmp.path()).unwrap();
        let other = meta.uid() + 1;
        assert_eq!(
            format!("{:#}", check_runtime_dir(tmp.path(), &meta, other).unwrap_err()),
            format!(
                "refusing directory {}: owned by uid {}, not by uid {other} that runs lxc_autoscale",
                tmp.path().display(),
                meta.uid()
            )
        );
    }
}
