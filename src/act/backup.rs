//! Backups of container allocations in `backup_dir`, for rollback.
//! Layout: `<backup_dir>/<vmid>/baseline.json` (the allocation before the autoscaler first touched
//! the container, kept forever) and `<backup_dir>/<vmid>/<sequence>-<UTC timestamp>.json` (one per
//! change, latest 20 kept). Files are mode 0600 and written atomically.
//!
//! The sequence number, not the clock, orders the backups: it is one more than the highest one in
//! the directory, so names stay unique and ordered whatever the clock does, and it never runs out
//! (a u64). The timestamp in the name is for people. Files named `<UTC timestamp>[_NNN].json` by
//! earlier versions are still read, and order before every numbered one.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use crate::act::ctrecord::CtRecords;
use crate::config::MIN_VMID;
use crate::fsutil::{ensure_private_dir, write_atomic};
use crate::read::snapshot::CtConf;

/// Timestamped backups kept per container, besides the baseline.
pub const KEEP_PER_CONTAINER: usize = 20;
pub const BASELINE_FILE: &str = "baseline.json";
/// Mode of every backup file.
pub const BACKUP_FILE_MODE: u32 = 0o600;
/// A backup file this size or larger is not ours: refuse to read it.
pub const MAX_BACKUP_BYTES: u64 = 64 * 1024;
/// Proxmox refuses less memory than this, so a backup asking for less is corrupt.
const MIN_MEMORY_MB: u64 = 16;
/// `strftime` format of the timestamp in a backup's file name, e.g. `20240501T123000.123456Z`.
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.6fZ";
/// Digits the sequence number is padded to, so that `ls` lists the files in order too.
const SEQ_DIGITS: usize = 10;
const JSON_EXT: &str = ".json";

/// An allocation as Proxmox stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alloc {
    /// `None` = no `cores` line (all host CPUs).
    pub cores: Option<u32>,
    pub memory_mb: u64,
    pub swap_mb: Option<u64>,
}

impl Alloc {
    fn validate(&self) -> Result<()> {
        if self.memory_mb < MIN_MEMORY_MB {
            bail!(
                "memory_mb {} is below the Proxmox minimum of {MIN_MEMORY_MB}",
                self.memory_mb
            );
        }
        if self.cores == Some(0) {
            bail!("cores must be at least 1");
        }
        Ok(())
    }
}

/// What tells a container from a later one that got the same VMID (Proxmox reuses them),
/// recorded in each backup. A reused VMID often gets the same hostname and the same
/// `vm-<vmid>-disk-0` volume, but new random MAC addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(default)]
    pub hostname: Option<String>,
    /// `rootfs` volume, without its options.
    #[serde(default)]
    pub rootfs: Option<String>,
    #[serde(default)]
    pub ostype: Option<String>,
    /// MACs of the `netN` lines, upper case, in `N` order.
    #[serde(default)]
    pub hwaddrs: Vec<String>,
}

impl Identity {
    /// The identity written in a container's conf.
    pub fn of(conf: &CtConf) -> Identity {
        Identity {
            hostname: conf.hostname.clone(),
            rootfs: conf.rootfs_volume.clone(),
            ostype: conf.ostype.clone(),
            hwaddrs: conf.hwaddrs.clone(),
        }
    }

    /// Why `now` is not the container this identity was recorded from, or `None` when it is, or
    /// when one side records nothing to compare. With MACs on both sides they decide alone: a
    /// container that shares none is another one (an added or removed NIC keeps one in common,
    /// and a renamed host keeps them all). Without, any of hostname, rootfs volume and ostype
    /// that both sides name and that differs makes it another container.
    pub fn differs(&self, now: &Identity) -> Option<String> {
        if !self.hwaddrs.is_empty() && !now.hwaddrs.is_empty() {
            let shared = self.hwaddrs.iter().any(|m| now.hwaddrs.contains(m));
            return (!shared).then(|| {
                format!(
                    "MAC addresses {} instead of {}",
                    now.hwaddrs.join(","),
                    self.hwaddrs.join(",")
                )
            });
        }
        let fields = [
            ("hostname", &self.hostname, &now.hostname),
            ("rootfs", &self.rootfs, &now.rootfs),
            ("ostype", &self.ostype, &now.ostype),
        ];
        let diffs: Vec<String> = fields
            .iter()
            .filter_map(|(name, was, is)| match (was, is) {
                (Some(was), Some(is)) if was != is => Some(format!("{name} {is} instead of {was}")),
                _ => None,
            })
            .collect();
        (!diffs.is_empty()).then(|| diffs.join(", "))
    }
}

/// One backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub vmid: u32,
    /// RFC 3339.
    pub timestamp: String,
    pub before: Alloc,
    /// `None` for the baseline.
    pub after: Option<Alloc>,
    /// The container this was taken from; `None` in backups written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// The baseline of a container cannot be read: the container must not be changed (a change would
/// lose the way back) until `rebaseline` accepts its current allocation.
#[derive(Debug)]
pub struct BaselineUnreadable {
    pub path: PathBuf,
    pub vmid: u32,
    pub reason: String,
}

impl std::fmt::Display for BaselineUnreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "baseline {} is unreadable ({}); container {} is not changed until 'lxc_autoscale rebaseline {}' accepts its current allocation",
            self.path.display(),
            self.reason,
            self.vmid,
            self.vmid
        )
    }
}

impl std::error::Error for BaselineUnreadable {}

/// What `record` wrote, so that a change that then failed can be taken back with `discard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The timestamped backup file.
    pub path: PathBuf,
    /// Whether this record also wrote the container's baseline.
    pub baseline_created: bool,
    /// When the backups were of another container with this VMID: where they were moved, and
    /// why it is another container.
    pub replaced: Option<(PathBuf, String)>,
}

#[derive(Debug, Clone)]
pub struct BackupStore {
    pub dir: PathBuf,
    /// In cluster mode, the per-container records in pmxcfs, updated after each confirmed change.
    pub ct_records: Option<CtRecords>,
}

impl BackupStore {
    pub fn new(dir: PathBuf) -> Self {
        BackupStore {
            dir,
            ct_records: None,
        }
    }

    /// The same store, also keeping the cluster's per-container records (`None`: standalone).
    pub fn with_ct_records(mut self, records: Option<CtRecords>) -> Self {
        self.ct_records = records;
        self
    }

    fn vmid_dir(&self, vmid: u32) -> PathBuf {
        self.dir.join(vmid.to_string())
    }

    /// Writes a backup of a change from `before` to `after`, and the baseline (holding `before`)
    /// if the container has none yet. Call before running `pct`. Records no identity; see
    /// `record_for`.
    pub fn record(
        &self,
        vmid: u32,
        before: &Alloc,
        after: &Alloc,
        now: DateTime<Utc>,
    ) -> Result<Recorded> {
        self.record_for(vmid, None, before, after, now)
    }

    /// `record` for the container `identity`. When the baseline was taken from another container
    /// with this VMID (see `Identity::differs`), the old backups are moved to
    /// `<backup_dir>/<vmid>.replaced-<UTC time>/` and a fresh baseline is started. An unreadable
    /// baseline is refused with a `BaselineUnreadable` error: a change would lose the way back.
    pub fn record_for(
        &self,
        vmid: u32,
        identity: Option<&Identity>,
        before: &Alloc,
        after: &Alloc,
        now: DateTime<Utc>,
    ) -> Result<Recorded> {
        if vmid < MIN_VMID {
            bail!("cannot back up container {vmid}: not a VMID (must be {MIN_VMID} or more)");
        }
        ensure_private_dir(&self.dir)?;
        let dir = self.vmid_dir(vmid);
        ensure_private_dir(&dir)?;
        let replaced = self.replace_if_another_container(vmid, identity, now)?;
        if replaced.is_some() {
            ensure_private_dir(&dir)?;
        }
        let timestamp = now.to_rfc3339_opts(SecondsFormat::Micros, true);
        let baseline_path = dir.join(BASELINE_FILE);
        let baseline_created = match fs::symlink_metadata(&baseline_path) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let baseline = Backup {
                    vmid,
                    timestamp: timestamp.clone(),
                    before: before.clone(),
                    after: None,
                    identity: identity.cloned(),
                };
                write_backup(&baseline_path, &baseline)?;
                true
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot inspect {}", baseline_path.display()))
            }
        };
        let backup = Backup {
            vmid,
            timestamp,
            before: before.clone(),
            after: Some(after.clone()),
            identity: identity.cloned(),
        };
        let newest = self.list(vmid)?.pop();
        let written = next_backup_path(&dir, now, newest.as_deref())
            .and_then(|path| write_backup(&path, &backup).map(|()| path));
        match written {
            Ok(path) => Ok(Recorded {
                path,
                baseline_created,
                replaced,
            }),
            Err(e) => {
                if baseline_created {
                    let _ = fs::remove_file(&baseline_path);
                }
                Err(e)
            }
        }
    }

    /// Reads the baseline (refusing an unreadable one) and, when it was taken from another
    /// container than `identity`, moves `<vmid>/` aside. Returns where to, and why.
    fn replace_if_another_container(
        &self,
        vmid: u32,
        identity: Option<&Identity>,
        now: DateTime<Utc>,
    ) -> Result<Option<(PathBuf, String)>> {
        let baseline = match self.baseline(vmid) {
            Ok(b) => b,
            Err(e) => {
                return Err(anyhow::Error::new(BaselineUnreadable {
                    path: self.vmid_dir(vmid).join(BASELINE_FILE),
                    vmid,
                    reason: format!("{e:#}"),
                }))
            }
        };
        let why = baseline
            .and_then(|b| b.identity)
            .zip(identity)
            .and_then(|(was, is)| was.differs(is));
        let Some(why) = why else {
            return Ok(None);
        };
        let from = self.vmid_dir(vmid);
        let to = self
            .dir
            .join(format!("{vmid}.replaced-{}", now.format(STAMP_FORMAT)));
        if fs::symlink_metadata(&to).is_ok() {
            bail!(
                "cannot move {} aside: {} exists",
                from.display(),
                to.display()
            );
        }
        fs::rename(&from, &to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        Ok(Some((to, why)))
    }

    /// Makes `before` (a container's current allocation) its new baseline, for `rebaseline`. An
    /// existing baseline file, readable or not, is kept beside it as
    /// `baseline.json.replaced-<UTC time>`. Returns the baseline path and where the old one went.
    pub fn rebaseline(
        &self,
        vmid: u32,
        identity: &Identity,
        before: &Alloc,
        now: DateTime<Utc>,
    ) -> Result<(PathBuf, Option<PathBuf>)> {
        if vmid < MIN_VMID {
            bail!("cannot rebaseline container {vmid}: not a VMID (must be {MIN_VMID} or more)");
        }
        before
            .validate()
            .with_context(|| format!("container {vmid}"))?;
        ensure_private_dir(&self.dir)?;
        let dir = self.vmid_dir(vmid);
        ensure_private_dir(&dir)?;
        let path = dir.join(BASELINE_FILE);
        let kept = match fs::symlink_metadata(&path) {
            Ok(_) => {
                let old = dir.join(format!(
                    "{BASELINE_FILE}.replaced-{}",
                    now.format(STAMP_FORMAT)
                ));
                // rename() would replace a baseline kept at the same time (clock stepped back).
                if fs::symlink_metadata(&old).is_ok() {
                    bail!(
                        "cannot move {} aside: {} exists",
                        path.display(),
                        old.display()
                    );
                }
                fs::rename(&path, &old).with_context(|| {
                    format!("cannot move {} to {}", path.display(), old.display())
                })?;
                Some(old)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
        };
        let baseline = Backup {
            vmid,
            timestamp: now.to_rfc3339_opts(SecondsFormat::Micros, true),
            before: before.clone(),
            after: None,
            identity: Some(identity.clone()),
        };
        write_backup(&path, &baseline)?;
        Ok((path, kept))
    }

    /// Takes back a `record` whose change was not applied: a failed change must not stay
    /// recorded as applied, nor leave a baseline that no change followed.
    pub fn discard(&self, rec: &Recorded) -> Result<()> {
        remove_if_present(&rec.path)?;
        if rec.baseline_created {
            if let Some(dir) = rec.path.parent() {
                remove_if_present(&dir.join(BASELINE_FILE))?;
            }
        }
        Ok(())
    }

    /// Removes all but the latest `KEEP_PER_CONTAINER` timestamped backups of `vmid`. The baseline
    /// is never removed. Returns how many files were removed.
    pub fn prune(&self, vmid: u32) -> Result<usize> {
        let files = self.list(vmid)?;
        let excess = files.len().saturating_sub(KEEP_PER_CONTAINER);
        for path in &files[..excess] {
            remove_if_present(path)?;
        }
        Ok(excess)
    }

    /// The allocation before the autoscaler first changed `vmid`, if recorded.
    pub fn baseline(&self, vmid: u32) -> Result<Option<Backup>> {
        let Some(dir) = self.existing_vmid_dir(vmid)? else {
            return Ok(None);
        };
        let path = dir.join(BASELINE_FILE);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            _ => read_backup(&path, vmid).map(Some),
        }
    }

    /// The newest timestamped backup of `vmid`.
    pub fn latest(&self, vmid: u32) -> Result<Option<(PathBuf, Backup)>> {
        match self.list(vmid)?.pop() {
            Some(path) => {
                let backup = read_backup(&path, vmid)?;
                Ok(Some((path, backup)))
            }
            None => Ok(None),
        }
    }

    /// Containers that have a backup directory, ascending.
    pub fn vmids(&self) -> Result<Vec<u32>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", self.dir.display())),
        };
        let mut vmids = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", self.dir.display()))?;
            let Some(vmid) = entry.file_name().to_str().and_then(parse_vmid_dir_name) else {
                continue;
            };
            // DirEntry::file_type does not follow symlinks.
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                vmids.push(vmid);
            }
        }
        vmids.sort_unstable();
        Ok(vmids)
    }

    /// Backup files of `vmid` (all but the baseline), oldest first: earlier versions' timestamp
    /// names by name, then numbered ones by sequence number. Other files are ignored.
    pub fn list(&self, vmid: u32) -> Result<Vec<PathBuf>> {
        let Some(dir) = self.existing_vmid_dir(vmid)? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<(Order, String)> = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Some(order) = backup_order(name) {
                    names.push((order, name.to_string()));
                }
            }
        }
        names.sort();
        Ok(names.into_iter().map(|(_, n)| dir.join(n)).collect())
    }

    /// `<dir>/<vmid>` when it exists; refuses one that is a symlink or not a directory.
    fn existing_vmid_dir(&self, vmid: u32) -> Result<Option<PathBuf>> {
        let dir = self.vmid_dir(vmid);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!(
                    "refusing backup directory {}: it is a symlink",
                    dir.display()
                )
            }
            Ok(meta) if !meta.is_dir() => {
                bail!(
                    "refusing backup directory {}: it is not a directory",
                    dir.display()
                )
            }
            Ok(_) => Ok(Some(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot inspect {}", dir.display())),
        }
    }
}

/// A VMID directory name: digits only, at least `MIN_VMID`.
fn parse_vmid_dir_name(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&v| v >= MIN_VMID)
}

/// Where a backup file sorts: earlier versions' timestamp names first (by name), then numbered
/// ones by sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Order {
    Legacy,
    Seq(u64),
}

/// The order of a backup file name, or `None` for a file that is not a backup (baseline, temp
/// files, anything else).
fn backup_order(name: &str) -> Option<Order> {
    if is_legacy_stamp_file_name(name) {
        return Some(Order::Legacy);
    }
    let (seq, rest) = name.split_once('-')?;
    let stamp = rest.strip_suffix(JSON_EXT)?;
    if seq.len() < SEQ_DIGITS || !seq.bytes().all(|b| b.is_ascii_digit()) || !is_stamp(stamp) {
        return None;
    }
    seq.parse().ok().map(Order::Seq)
}

/// `20240501T123000.123456Z.json`, optionally with a `_NNN` collision suffix before `.json`: the
/// names earlier versions gave.
fn is_legacy_stamp_file_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(JSON_EXT) else {
        return false;
    };
    let (stamp, suffix) = match stem.split_once('_') {
        Some((stamp, suffix)) => (stamp, Some(suffix)),
        None => (stem, None),
    };
    if let Some(suffix) = suffix {
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    is_stamp(stamp)
}

/// `20240501T123000.123456Z`.
fn is_stamp(stamp: &str) -> bool {
    let b = stamp.as_bytes();
    b.len() == 23
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'.'
        && b[16..22].iter().all(u8::is_ascii_digit)
        && b[22] == b'Z'
}

/// The path of the next backup: sequence number one more than that of `newest` (the newest
/// backup file of the container, 1 when it has none or only earlier versions' names), then the
/// time `now` for people to read. The clock takes no part in the order.
fn next_backup_path(dir: &Path, now: DateTime<Utc>, newest: Option<&Path>) -> Result<PathBuf> {
    let last = match newest
        .and_then(|p| p.file_name()?.to_str())
        .and_then(backup_order)
    {
        Some(Order::Seq(n)) => n,
        _ => 0,
    };
    let Some(seq) = last.checked_add(1) else {
        bail!(
            "no backup sequence number after {last} in {}",
            dir.display()
        );
    };
    let stamp = now.format(STAMP_FORMAT);
    Ok(dir.join(format!("{seq:0SEQ_DIGITS$}-{stamp}{JSON_EXT}")))
}

fn write_backup(path: &Path, backup: &Backup) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(backup)
        .with_context(|| format!("cannot encode backup {}", path.display()))?;
    json.push(b'\n');
    write_atomic(path, &json, BACKUP_FILE_MODE)
}

/// Reads and checks a backup file of container `vmid`. Errors name the path.
fn read_backup(path: &Path, vmid: u32) -> Result<Backup> {
    let text = read_small_regular_file(path)?;
    parse_backup(&text, vmid).with_context(|| format!("invalid backup {}", path.display()))
}

/// A regular file, opened without following a symlink, smaller than `MAX_BACKUP_BYTES`.
fn read_small_regular_file(path: &Path) -> Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits() | OFlag::O_NONBLOCK.bits())
        .open(path)
        .with_context(|| {
            format!(
                "cannot open backup {} (symlinks are refused)",
                path.display()
            )
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot inspect backup {}", path.display()))?;
    if !meta.is_file() {
        bail!("refusing backup {}: not a regular file", path.display());
    }
    if meta.len() >= MAX_BACKUP_BYTES {
        bail!(
            "refusing backup {}: {} bytes, limit is {MAX_BACKUP_BYTES}",
            path.display(),
            meta.len()
        );
    }
    let mut text = String::new();
    // `take` guards against a file that grows after the size check.
    file.take(MAX_BACKUP_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read backup {}", path.display()))?;
    Ok(text)
}

/// Parses a backup and checks it belongs to `vmid` and holds values Proxmox accepts.
pub fn parse_backup(text: &str, vmid: u32) -> Result<Backup> {
    let backup: Backup = serde_json::from_str(text).context("not a backup json document")?;
    if backup.vmid != vmid {
        bail!(
            "backup names container {}, but it sits in the directory of {vmid}",
            backup.vmid
        );
    }
    backup.before.validate().context("field `before`")?;
    if let Some(after) = &backup.after {
        after.validate().context("field `after`")?;
    }
    Ok(backup)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn alloc(cores: Option<u32>, memory_mb: u64) -> Alloc {
        Alloc {
            cores,
            memory_mb,
            swap_mb: Some(512),
        }
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 30, 0).unwrap() + Duration::microseconds(123_456)
    }

    fn store() -> (tempfile::TempDir, BackupStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = BackupStore::new(tmp.path().join("backups"));
        (tmp, store)
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn first_record_writes_baseline_and_timestamped_file() {
        let (_tmp, store) = store();
        let rec = store
            .record(101, &alloc(Some(2), 1024), &alloc(Some(3), 1024), t0())
            .unwrap();
        assert!(rec.baseline_created);
        assert_eq!(
            rec.path,
            store
                .dir
                .join("101")
                .join("0000000001-20240501T123000.123456Z.json")
        );
        let baseline = store.baseline(101).unwrap().unwrap();
        assert_eq!(
            baseline,
            Backup {
                identity: None,
                vmid: 101,
                timestamp: "2024-05-01T12:30:00.123456Z".to_string(),
                before: alloc(Some(2), 1024),
                after: None,
            }
        );
        let (path, latest) = store.latest(101).unwrap().unwrap();
        assert_eq!(path, rec.path);
        assert_eq!(latest.before, alloc(Some(2), 1024));
        assert_eq!(latest.after, Some(alloc(Some(3), 1024)));
    }

    #[test]
    fn second_record_keeps_the_first_baseline() {
        let (_tmp, store) = store();
        store
            .record(101, &alloc(Some(2), 1024), &alloc(Some(3), 1024), t0())
            .unwrap();
        let rec = store
            .record(
                101,
                &alloc(Some(3), 1024),
                &alloc(Some(4), 2048),
                t0() + Duration::seconds(300),
            )
            .unwrap();
        assert!(!rec.baseline_created);
        let baseline = store.baseline(101).unwrap().unwrap();
        assert_eq!(baseline.before, alloc(Some(2), 1024));
        let (_, latest) = store.latest(101).unwrap().unwrap();
        assert_eq!(latest.before, alloc(Some(3), 1024));
        assert_eq!(store.list(101).unwrap().len(), 2);
    }

    #[test]
    fn files_and_directories_are_private() {
        let (_tmp, store) = store();
        let rec = store
            .record(101, &alloc(None, 512), &alloc(Some(1), 512), t0())
            .unwrap();
        assert_eq!(mode_of(&rec.path), 0o600);
        assert_eq!(mode_of(&store.dir.join("101").join(BASELINE_FILE)), 0o600);
        assert_eq!(mode_of(&store.dir), 0o700);
        assert_eq!(mode_of(&store.dir.join("101")), 0o700);
    }

    #[test]
    fn same_microsecond_gets_the_next_sequence_number() {
        let (_tmp, store) = store();
        let a = store
            .record(101, &alloc(Some(1), 512), &alloc(Some(2), 512), t0())
            .unwrap();
        let b = store
            .record(101, &alloc(Some(2), 512), &alloc(Some(3), 512), t0())
            .unwrap();
        assert_eq!(
            b.path.file_name().unwrap(),
            "0000000002-20240501T123000.123456Z.json"
        );
        assert_eq!(store.list(101).unwrap(), vec![a.path, b.path]);
        let (_, latest) = store.latest(101).unwrap().unwrap();
        assert_eq!(latest.after, Some(alloc(Some(3), 512)));
    }

    #[test]
    fn backup_taken_after_the_clock_stepped_back_still_sorts_last() {
        let (_tmp, store) = store();
        store
            .record(101, &alloc(Some(1), 512), &alloc(Some(2), 512), t0())
            .unwrap();
        let earlier = t0() - Duration::seconds(600);
        let b = store
            .record(101, &alloc(Some(2), 512), &alloc(Some(3), 512), earlier)
            .unwrap();
        assert_eq!(
            b.path.file_name().unwrap(),
            "0000000002-20240501T122000.123456Z.json"
        );
        let (path, latest) = store.latest(101).unwrap().unwrap();
        assert_eq!(path, b.path);
        assert_eq!(latest.after, Some(alloc(Some(3), 512)));
        assert_eq!(latest.timestamp, "2024-05-01T12:20:00.123456Z");
    }

    #[test]
    fn a_backup_stamped_in_the_future_never_blocks_later_ones() {
        // Where the old naming got stuck for good: a backup stamped 2099 and its reuses up to
        // `_999`, after which every change failed with "no free backup file name".
        let (_tmp, store) = store();
        let dir = store.dir.join("101");
        fs::create_dir_all(&dir).unwrap();
        let text = r#"{"vmid":101,"timestamp":"t","before":{"cores":1,"memory_mb":512,"swap_mb":null},"after":{"cores":2,"memory_mb":512,"swap_mb":null}}"#;
        fs::write(dir.join("20990101T000000.000000Z.json"), text).unwrap();
        for n in 1..=999 {
            fs::write(
                dir.join(format!("20990101T000000.000000Z_{n:03}.json")),
                text,
            )
            .unwrap();
        }
        let mut names = Vec::new();
        for i in 0..3u64 {
            let rec = store
                .record(101, &alloc(Some(2), 512), &alloc(Some(3), 600 + i), t0())
                .unwrap();
            names.push(rec.path.file_name().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            [
                "0000000001-20240501T123000.123456Z.json",
                "0000000002-20240501T123000.123456Z.json",
                "0000000003-20240501T123000.123456Z.json"
            ]
        );
        let (path, latest) = store.latest(101).unwrap().unwrap();
        assert_eq!(path, dir.join(&names[2]));
        assert_eq!(latest.after, Some(alloc(Some(3), 602)));
        assert_eq!(store.list(101).unwrap().len(), 1003);
    }

    #[test]
    fn sequence_numbers_grow_past_their_padding_and_stay_ordered() {
        let (_tmp, store) = store();
        let dir = store.dir.join("101");
        store
            .record(101, &alloc(Some(1), 512), &alloc(Some(2), 512), t0())
            .unwrap();
        let big = dir.join("9999999999-20240501T123000.123456Z.json");
        fs::rename(dir.join("0000000001-20240501T123000.123456Z.json"), &big).unwrap();
        let rec = store
            .record(101, &alloc(Some(2), 512), &alloc(Some(3), 512), t0())
            .unwrap();
        assert_eq!(
            rec.path,
            dir.join("10000000000-20240501T123000.123456Z.json")
        );
        assert_eq!(store.list(101).unwrap(), vec![big, rec.path]);
    }

    #[test]
    fn earlier_versions_timestamp_names_order_before_numbered_ones() {
        let (_tmp, store) = store();
        let dir = store.dir.join("101");
        fs::create_dir_all(&dir).unwrap();
        let text = |mem: u64| {
            format!(
                r#"{{"vmid":101,"timestamp":"t","before":{{"cores":1,"memory_mb":512,"swap_mb":null}},"after":{{"cores":1,"memory_mb":{mem},"swap_mb":null}}}}"#
            )
        };
        let old_a = dir.join("20990101T000000.000000Z.json");
        let old_b = dir.join("20990101T000000.000000Z_001.json");
        fs::write(&old_b, text(700)).unwrap();
        fs::write(&old_a, text(600)).unwrap();
        let rec = store
            .record(101, &alloc(Some(1), 512), &alloc(Some(1), 800), t0())
            .unwrap();
        assert_eq!(
            rec.path,
            dir.join("0000000001-20240501T123000.123456Z.json")
        );
        assert_eq!(store.list(101).unwrap(), vec![old_a, old_b, rec.path]);
        let (_, latest) = store.latest(101).unwrap().unwrap();
        assert_eq!(latest.after, Some(alloc(Some(1), 800)));
    }

    #[test]
    fn prune_keeps_latest_twenty_and_the_baseline() {
        let (_tmp, store) = store();
        let mut paths = Vec::new();
        for i in 0..25 {
            let rec = store
                .record(
                    200,
                    &alloc(Some(1), 512 + i),
                    &alloc(Some(2), 512 + i),
                    t0() + Duration::seconds(i as i64 * 60),
                )
                .unwrap();
            paths.push(rec.path);
        }
        assert_eq!(store.prune(200).unwrap(), 5);
        assert_eq!(store.list(200).unwrap(), paths[5..].to_vec());
        assert_eq!(
            store.baseline(200).unwrap().unwrap().before,
            alloc(Some(1), 512)
        );
        assert_eq!(store.prune(200).unwrap(), 0);
    }

    #[test]
    fn discard_removes_the_record_and_the_baseline_it_created() {
        let (_tmp, store) = store();
        let rec = store
            .record(101, &alloc(Some(2), 1024), &alloc(Some(3), 1024), t0())
            .unwrap();
        store.discard(&rec).unwrap();
        assert!(!rec.path.exists());
        assert_eq!(store.baseline(101).unwrap(), None);
        assert_eq!(store.latest(101).unwrap(), None);
    }

    #[test]
    fn discard_keeps_a_baseline_written_by_an_earlier_record() {
        let (_tmp, store) = store();
        let first = store
            .record(101, &alloc(Some(2), 1024), &alloc(Some(3), 1024), t0())
            .unwrap();
        let second = store
            .record(
                101,
                &alloc(Some(3), 1024),
                &alloc(Some(4), 1024),
                t0() + Duration::seconds(1),
            )
            .unwrap();
        store.discard(&second).unwrap();
        assert!(store.baseline(101).unwrap().is_some());
        assert_eq!(store.list(101).unwrap(), vec![first.path]);
    }

    #[test]
    fn symlinked_backup_file_is_refused() {
        let (tmp, store) = store();
        store
            .record(101, &alloc(Some(2), 1024), &alloc(Some(3), 1024), t0())
            .unwrap();
        let outside = tmp.path().join("outside.json");
        fs::write(
            &outside,
            r#"{"vmid":101,"timestamp":"x","before":{"cores":1,"memory_mb":512,"swap_mb":null},"after":null}"#,
        )
        .unwrap();
        let baseline = store.dir.join("101").join(BASELINE_FILE);
        fs::remove_file(&baseline).unwrap();
        symlink(&outside, &baseline).unwrap();
        let err = format!("{:#}", store.baseline(101).unwrap_err());
        assert!(err.contains(&baseline.display().to_string()), "{err}");
    }

    #[test]
    fn symlinked_vmid_directory_is_refused() {
        let (tmp, store) = store();
        fs::create_dir_all(&store.dir).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, store.dir.join("101")).unwrap();
        let err = format!("{:#}", store.list(101).unwrap_err());
        assert!(err.contains("symlink"), "{err}");
        assert!(store
            .record(101, &alloc(Some(1), 512), &alloc(Some(2), 512), t0())
            .is_err());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn backup_dir_that_is_a_file_is_an_error_naming_it() {
        let (_tmp, store) = store();
        fs::write(&store.dir, b"").unwrap();
        let err = format!(
            "{:#}",
            store
                .record(101, &alloc(Some(1), 512), &alloc(Some(2), 512), t0())
                .unwrap_err()
        );
        assert!(err.contains(&store.dir.display().to_string()), "{err}");
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn record_refuses_vmid_below_100() {
        let (_tmp, store) = store();
        let err = format!(
            "{:#}",
            store
                .record(99, &alloc(Some(1), 512), &alloc(Some(2), 512), t0())
                .unwrap_err()
        );
        assert!(err.contains("99"), "{err}");
        assert!(!store.dir.exists());
    }

    #[test]
    fn oversized_backup_is_refused() {
        let (_tmp, store) = store();
        let dir = store.dir.join("101");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(BASELINE_FILE);
        fs::write(&path, vec![b' '; MAX_BACKUP_BYTES as usize]).unwrap();
        let err = format!("{:#}", store.baseline(101).unwrap_err());
        assert!(err.contains("limit"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn backup_of_another_container_is_refused() {
        let text = r#"{"vmid":102,"timestamp":"t","before":{"cores":2,"memory_mb":512,"swap_mb":0},"after":null}"#;
        let err = format!("{:#}", parse_backup(text, 101).unwrap_err());
        assert!(err.contains("102") && err.contains("101"), "{err}");
    }

    #[test]
    fn backup_with_impossible_values_is_refused() {
        let low_mem = r#"{"vmid":101,"timestamp":"t","before":{"cores":2,"memory_mb":8,"swap_mb":0},"after":null}"#;
        assert!(format!("{:#}", parse_backup(low_mem, 101).unwrap_err()).contains("memory_mb"));
        let zero_cores = r#"{"vmid":101,"timestamp":"t","before":{"cores":2,"memory_mb":512,"swap_mb":0},"after":{"cores":0,"memory_mb":512,"swap_mb":0}}"#;
        let err = format!("{:#}", parse_backup(zero_cores, 101).unwrap_err());
        assert!(err.contains("after") && err.contains("cores"), "{err}");
        assert!(parse_backup("{", 101).is_err());
    }

    #[test]
    fn backup_without_cores_means_all_host_cpus() {
        let text = r#"{"vmid":101,"timestamp":"t","before":{"cores":null,"memory_mb":512,"swap_mb":null},"after":null}"#;
        assert_eq!(parse_backup(text, 101).unwrap().before.cores, None);
    }

    #[test]
    fn vmids_lists_numeric_directories_from_100_up() {
        let (_tmp, store) = store();
        for name in ["101", "99", "abc", "1000", "0101x"] {
            fs::create_dir_all(store.dir.join(name)).unwrap();
        }
        fs::write(store.dir.join("150"), b"").unwrap();
        assert_eq!(store.vmids().unwrap(), vec![101, 1000]);
    }

    #[test]
    fn missing_backup_dir_means_no_backups() {
        let (_tmp, store) = store();
        assert_eq!(store.vmids().unwrap(), Vec::<u32>::new());
        assert_eq!(store.list(101).unwrap(), Vec::<PathBuf>::new());
        assert_eq!(store.baseline(101).unwrap(), None);
        assert_eq!(store.latest(101).unwrap(), None);
    }

    #[test]
    fn list_ignores_temp_and_foreign_files() {
        let (_tmp, store) = store();
        let rec = store
            .record(101, &alloc(Some(1), 512), &alloc(Some(2), 512), t0())
            .unwrap();
        let dir = store.dir.join("101");
        fs::write(dir.join(".20240501T123000.123456Z.json.tmp.1"), b"").unwrap();
        fs::write(dir.join("notes.json"), b"").unwrap();
        fs::write(dir.join("20240501T123000.123456Z_x.json"), b"").unwrap();
        fs::write(dir.join("12-20240501T123000.123456Z.json"), b"").unwrap();
        fs::write(dir.join("0000000009-2024.json"), b"").unwrap();
        assert_eq!(store.list(101).unwrap(), vec![rec.path]);
    }

    fn ident(host: &str, rootfs: &str, macs: &[&str]) -> Identity {
        Identity {
            hostname: Some(host.into()),
            rootfs: Some(rootfs.into()),
            ostype: Some("debian".into()),
            hwaddrs: macs.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn identity_with_macs_differs_only_when_no_mac_is_shared() {
        let was = ident("web", "local-lvm:vm-101-disk-0", &["AA", "BB"]);
        // Same hostname and volume, new MACs: a new container with a reused VMID.
        assert_eq!(
            was.differs(&ident("web", "local-lvm:vm-101-disk-0", &["CC"])),
            Some("MAC addresses CC instead of AA,BB".into())
        );
        // A NIC added, the host renamed, the disk moved: still the same container.
        assert_eq!(
            was.differs(&ident("db", "tank:vm-101-disk-0", &["BB", "DD"])),
            None
        );
    }

    #[test]
    fn identity_without_macs_compares_hostname_rootfs_and_ostype() {
        let was = ident("web", "local-lvm:vm-101-disk-0", &[]);
        assert_eq!(
            was.differs(&ident("web", "local-lvm:vm-101-disk-0", &[])),
            None
        );
        assert_eq!(
            was.differs(&ident("db", "local-lvm:vm-101-disk-1", &["AA"])),
            Some(
                "hostname db instead of web, rootfs local-lvm:vm-101-disk-1 instead of local-lvm:vm-101-disk-0"
                    .into()
            )
        );
        // Nothing recorded (a backup from before identities): nothing to tell.
        assert_eq!(Identity::default().differs(&was), None);
    }

    #[test]
    fn record_for_another_container_moves_old_backups_and_starts_a_fresh_baseline() {
        let (_tmp, store) = store();
        let old = ident("web", "local-lvm:vm-101-disk-0", &["AA"]);
        store
            .record_for(
                101,
                Some(&old),
                &alloc(Some(8), 16384),
                &alloc(Some(4), 8192),
                t0(),
            )
            .unwrap();
        let new = ident("web", "local-lvm:vm-101-disk-0", &["CC"]);
        let later = t0() + Duration::seconds(60);
        let rec = store
            .record_for(
                101,
                Some(&new),
                &alloc(Some(1), 1024),
                &alloc(Some(2), 1024),
                later,
            )
            .unwrap();
        let moved = store.dir.join("101.replaced-20240501T123100.123456Z");
        assert_eq!(
            rec.replaced,
            Some((moved.clone(), "MAC addresses CC instead of AA".into()))
        );
        assert!(rec.baseline_created);
        let baseline = store.baseline(101).unwrap().unwrap();
        assert_eq!(baseline.before, alloc(Some(1), 1024));
        assert_eq!(baseline.identity, Some(new));
        assert_eq!(
            rec.path.file_name().unwrap(),
            "0000000001-20240501T123100.123456Z.json"
        );
        let mut old_files: Vec<_> = fs::read_dir(&moved)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        old_files.sort();
        assert_eq!(
            old_files,
            ["0000000001-20240501T123000.123456Z.json", "baseline.json"]
        );
        assert_eq!(store.vmids().unwrap(), [101]);
    }

    #[test]
    fn record_for_refuses_an_unreadable_baseline_naming_it() {
        let (_tmp, store) = store();
        let dir = store.dir.join("101");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(BASELINE_FILE), "not json").unwrap();
        let err = store
            .record_for(101, None, &alloc(Some(1), 512), &alloc(Some(2), 512), t0())
            .unwrap_err();
        assert!(err.downcast_ref::<BaselineUnreadable>().is_some());
        let path = dir.join(BASELINE_FILE);
        assert_eq!(
            format!("{err:#}"),
            format!(
                "baseline {} is unreadable (invalid backup {}: not a backup json document: expected ident at line 1 column 2); container 101 is not changed until 'lxc_autoscale rebaseline 101' accepts its current allocation",
                path.display(),
                path.display()
            )
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "not json");
        assert!(store.list(101).unwrap().is_empty());
    }

    #[test]
    fn rebaseline_at_the_same_time_twice_keeps_every_earlier_baseline() {
        let (_tmp, store) = store();
        let id = Identity::default();
        store
            .rebaseline(101, &id, &alloc(Some(2), 1024), t0())
            .unwrap();
        let (_, kept) = store
            .rebaseline(101, &id, &alloc(Some(3), 2048), t0())
            .unwrap();
        let kept = kept.unwrap();
        // The clock stepped back (or did not move): the next rebaseline must not overwrite it.
        let err = store
            .rebaseline(101, &id, &alloc(Some(4), 4096), t0())
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot move {} aside: {} exists",
                store.dir.join("101").join(BASELINE_FILE).display(),
                kept.display()
            )
        );
        let first = parse_backup(&fs::read_to_string(&kept).unwrap(), 101).unwrap();
        assert_eq!(first.before, alloc(Some(2), 1024));
        assert_eq!(
            store.baseline(101).unwrap().unwrap().before,
            alloc(Some(3), 2048)
        );
    }
}
