//! Human-readable log to stderr (journald) and `log_file`.
//!
//! Lines are written synchronously, one `write` per line: the daemon logs a few lines per cycle,
//! and the release build aborts on panic, so a background writer (`tracing-appender`'s
//! non-blocking one) would lose exactly the last lines before a crash for no gain. The file is
//! behind a `LogFile` handle that a reload reopens: at a new `log_file`, or at the same path after
//! logrotate renamed the old file away.

use std::fs::{self, File, OpenOptions};
use std::io::IsTerminal;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Mode of a newly created log file.
pub const LOG_FILE_MODE: u32 = 0o640;
/// Environment variable that overrides the level filter: comma-separated `level` and
/// `target=level` directives (`tracing_subscriber`'s `Targets`; regex-free, unlike `EnvFilter`).
pub const LOG_ENV: &str = "RUST_LOG";

/// The file the log lines go to, shared by the logger and the loop that reopens it.
#[derive(Debug, Clone, Default)]
pub struct LogFile {
    inner: Arc<Mutex<Current>>,
}

#[derive(Debug, Default)]
struct Current {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl LogFile {
    /// The path lines go to now; `None` when no file is open.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().path.clone()
    }

    /// Opens `path` (see `open_log_file`) and sends the following lines there. On error the
    /// current file stays in use and the error names the path.
    pub fn reopen(&self, path: &Path) -> Result<()> {
        let file = open_log_file(path)?;
        let mut current = self.lock();
        current.path = Some(path.to_path_buf());
        current.file = Some(file);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // A panic while holding the lock leaves a whole file behind: keep using it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.lock().file.as_mut() {
            Some(file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        // One lock for the whole line, so a reopen never splits it across two files.
        match self.lock().file.as_mut() {
            Some(file) => file.write_all(buf),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the global logger: stderr, plus `log_file` appended to when given. The level is
/// `RUST_LOG` when set and valid, else `debug` with `verbose`, else `info`. A log file that cannot
/// be opened costs one warning on stderr, not the daemon. Fails only if a logger is installed
/// already. The returned handle reopens the file.
pub fn init(log_file: Option<&Path>, verbose: bool) -> Result<LogFile> {
    let rust_log = std::env::var(LOG_ENV).ok();
    let (directive, filter_warning) = filter_directive(verbose, rust_log.as_deref());
    let file = LogFile::default();
    if let Some(path) = log_file {
        if let Err(e) = file.reopen(path) {
            eprintln!("lxc_autoscale: warning: {e:#}; logging to stderr only");
        }
    }
    let subscriber = build(
        // `directive` parsed already (`filter_directive`); the fallback is never used.
        directive
            .parse()
            .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO)),
        std::io::stderr,
        std::io::stderr().is_terminal(),
        file.clone(),
    );
    tracing::subscriber::set_global_default(subscriber)
        .context("cannot install the logger: one is installed already")?;
    if let Some(warning) = filter_warning {
        tracing::warn!("{warning}");
    }
    Ok(file)
}

/// The filter directive to use, and a warning when `rust_log` was set but unusable.
fn filter_directive(verbose: bool, rust_log: Option<&str>) -> (String, Option<String>) {
    let default = if verbose { "debug" } else { "info" }.to_string();
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (default, None),
        Some(given) => match given.parse::<Targets>() {
            Ok(_) => (given.to_string(), None),
            Err(e) => (
                default.clone(),
                Some(format!(
                    "ignoring {LOG_ENV}={given:?} ({e}); using {default}"
                )),
            ),
        },
    }
}

/// Opens `path` for appending, creating it (mode 0640) and its parent directory when missing.
/// Refuses a symlink. Errors name the path.
fn open_log_file(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create log directory {}", parent.display()))?;
        }
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_FILE_MODE)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))
}

/// Timestamp, level and fields on each line; colours only on a terminal and never in the file.
fn build<W>(
    filter: Targets,
    stderr: W,
    stderr_ansi: bool,
    file: LogFile,
) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(stderr)
        .with_ansi(stderr_ansi)
        .with_target(false);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(file)
        .with_ansi(false)
        .with_target(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr_layer)
        .with(file_layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn level_is_info_or_debug_without_rust_log() {
        assert_eq!(filter_directive(false, None), ("info".to_string(), None));
        assert_eq!(filter_directive(true, None), ("debug".to_string(), None));
        assert_eq!(
            filter_directive(true, Some("  ")),
            ("debug".to_string(), None)
        );
    }

    #[test]
    fn rust_log_wins_when_valid() {
        assert_eq!(
            filter_directive(true, Some("warn,lxc_autoscale=trace")),
            ("warn,lxc_autoscale=trace".to_string(), None)
        );
    }

    #[test]
    fn invalid_rust_log_falls_back_with_a_warning() {
        let (directive, warning) = filter_directive(false, Some("lxc_autoscale=loud"));
        assert_eq!(directive, "info");
        let warning = warning.unwrap();
        assert!(warning.contains("RUST_LOG"), "{warning}");
        assert!(warning.contains("lxc_autoscale=loud"), "{warning}");
    }

    #[test]
    fn log_file_gets_plain_lines_with_level_message_and_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log").join("lxc_autoscale.log");
        let file = LogFile::default();
        file.reopen(&path).unwrap();
        let subscriber = build("info".parse().unwrap(), std::io::sink, true, file);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(vmid = 101, cores = 3, "scaled up");
            tracing::debug!("not shown at info");
        });
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("INFO"), "{text}");
        assert!(text.contains("scaled up"), "{text}");
        assert!(text.contains("vmid=101"), "{text}");
        assert!(text.contains("cores=3"), "{text}");
        assert!(!text.contains('\u{1b}'), "ansi escape in file: {text:?}");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, LOG_FILE_MODE);
    }

    #[test]
    fn log_file_is_appended_not_truncated() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.log");
        fs::write(&path, "earlier line\n").unwrap();
        let file = LogFile::default();
        file.reopen(&path).unwrap();
        let subscriber = build("info".parse().unwrap(), std::io::sink, false, file);
        tracing::subscriber::with_default(subscriber, || tracing::warn!("later line"));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("earlier line\n"), "{text}");
        assert!(text.contains("later line"), "{text}");
    }

    #[test]
    fn symlinked_log_file_is_refused_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, "").unwrap();
        let path = tmp.path().join("a.log");
        symlink(&target, &path).unwrap();
        let err = format!("{:#}", open_log_file(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split_once("INFO ").map_or(l, |(_, m)| m).to_string())
            .collect()
    }

    #[test]
    fn reopen_sends_the_following_lines_to_the_new_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.log"), tmp.path().join("new/b.log"));
        let file = LogFile::default();
        file.reopen(&a).unwrap();
        let subscriber = build("info".parse().unwrap(), std::io::sink, false, file.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("one");
            file.reopen(&b).unwrap();
            tracing::info!("two");
        });
        assert_eq!(lines(&a), vec!["one"]);
        assert_eq!(lines(&b), vec!["two"]);
        assert_eq!(file.path(), Some(b));
    }

    #[test]
    fn reopen_after_a_rename_starts_a_fresh_file_at_the_same_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, rotated) = (tmp.path().join("a.log"), tmp.path().join("a.log.1"));
        let file = LogFile::default();
        file.reopen(&path).unwrap();
        let subscriber = build("info".parse().unwrap(), std::io::sink, false, file.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before rotation");
            fs::rename(&path, &rotated).unwrap();
            tracing::info!("still the open file");
            file.reopen(&path).unwrap();
            tracing::info!("after reopen");
        });
        assert_eq!(
            lines(&rotated),
            vec!["before rotation", "still the open file"]
        );
        assert_eq!(lines(&path), vec!["after reopen"]);
    }

    #[test]
    fn a_failed_reopen_keeps_the_current_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, target, link) = (
            tmp.path().join("a.log"),
            tmp.path().join("target"),
            tmp.path().join("link.log"),
        );
        fs::write(&target, "").unwrap();
        symlink(&target, &link).unwrap();
        let file = LogFile::default();
        file.reopen(&path).unwrap();
        let err = format!("{:#}", file.reopen(&link).unwrap_err());
        assert!(err.contains(&link.display().to_string()), "{err}");
        assert_eq!(file.path(), Some(path.clone()));
        let subscriber = build("info".parse().unwrap(), std::io::sink, false, file);
        tracing::subscriber::with_default(subscriber, || tracing::info!("kept"));
        assert_eq!(lines(&path), vec!["kept"]);
        assert_eq!(fs::read_to_string(&target).unwrap(), "");
    }
}
