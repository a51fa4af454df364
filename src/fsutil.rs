//! Safe file writes for a root daemon: atomic, private, and never through a symlink.

use std::path::Path;

use anyhow::Result;

/// Writes `data` to `path` atomically: a temp file in the same directory opened with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` and `mode`, fsync, rename over `path`, fsync of the directory.
/// Refuses when `path` is a symlink. Errors name the path.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    todo!()
}

/// Creates `dir` (and parents) with mode 0700 when missing. Refuses a symlink, a non-directory, or
/// (when running as root) a directory not owned by root. Errors name the path.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    todo!()
}
