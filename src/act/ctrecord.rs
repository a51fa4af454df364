//! Per-container records in pmxcfs, `<pve_root>/lxc_autoscale/ct/<vmid>.json`: the true baseline
//! and the last change of a container, keyed by vmid, not by node, so that they follow a
//! migration. Cluster mode only; the local backups in `backup_dir` stay the audit trail.
//!
//! A record is at most `MAX_RECORD_BYTES`, written as a temp file plus `rename()` (atomic in
//! pmxcfs within a directory), and only after a change that `pct` made and the conf confirms.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use tracing::warn;

use crate::act::backup::{Alloc, Backup, BackupStore, Identity};
use crate::config::Config;
use crate::fsutil;

/// Below `pve_root`: one record per container.
pub const CT_RECORDS_DIR: &str = "lxc_autoscale/ct";
/// Largest record written or read: pmxcfs holds 128 MiB in all, so 10 000 containers' records
/// must stay small.
pub const MAX_RECORD_BYTES: usize = 1024;
/// pmxcfs fixes modes itself; elsewhere (tests) the record is root-only like the backups.
const RECORD_MODE: u32 = 0o600;
/// Proxmox refuses less memory than this, so a record asking for less is corrupt.
const MIN_MEMORY_MB: u64 = 16;

/// One container's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtRecord {
    pub vmid: u32,
    /// The allocation before the autoscaler first changed the container, on any node.
    pub baseline: Alloc,
    /// The latest change.
    pub last: LastChange,
    /// The container the record is about; a different one with the same vmid gets a new record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

impl CtRecord {
    /// The record's baseline as a backup to restore, with the identity to check it against.
    pub fn baseline_backup(&self) -> Backup {
        Backup {
            vmid: self.vmid,
            timestamp: self.last.when.clone(),
            before: self.baseline.clone(),
            after: None,
            identity: self.identity.clone(),
        }
    }
}

/// A change, where and when it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastChange {
    pub from: Alloc,
    pub to: Alloc,
    /// RFC 3339, UTC.
    pub when: String,
    pub node: String,
}

/// What `note_change` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// Where the record of another container that had this vmid was moved, and why it differs.
    pub archived: Option<(PathBuf, String)>,
}

/// The records of a cluster, written as `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtRecords {
    pub dir: PathBuf,
    pub node: String,
}

fn check_alloc(alloc: &Alloc, field: &str) -> Result<()> {
    if alloc.memory_mb < MIN_MEMORY_MB || alloc.cores == Some(0) {
        bail!(
            "field `{field}`: cores {:?}, memory {} MB is no allocation Proxmox accepts",
            alloc.cores,
            alloc.memory_mb
        );
    }
    Ok(())
}

/// Parses a record and checks that it is `vmid`'s and holds allocations Proxmox accepts.
pub fn parse_record(text: &str, vmid: u32) -> Result<CtRecord> {
    if text.len() > MAX_RECORD_BYTES {
        bail!("larger than {MAX_RECORD_BYTES} bytes");
    }
    let rec: CtRecord = serde_json::from_str(text).context("not a container record")?;
    if rec.vmid != vmid {
        bail!("record names container {}, not {vmid}", rec.vmid);
    }
    check_alloc(&rec.baseline, "baseline")?;
    check_alloc(&rec.last.from, "last.from")?;
    check_alloc(&rec.last.to, "last.to")?;
    Ok(rec)
}

/// The record as written: compact JSON of at most `MAX_RECORD_BYTES`.
pub fn encode_record(rec: &CtRecord) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec(rec).context("cannot encode container record")?;
    if bytes.len() > MAX_RECORD_BYTES {
        bail!(
            "the record of container {} would be {} bytes, more than {MAX_RECORD_BYTES}",
            rec.vmid,
            bytes.len()
        );
    }
    Ok(bytes)
}

impl CtRecords {
    /// The records of `cfg`'s cluster; `None` outside cluster mode.
    pub fn for_config(cfg: &Config) -> Option<CtRecords> {
        let node = cfg.cluster_node.clone()?;
        Some(CtRecords {
            dir: cfg.pve_root.join(CT_RECORDS_DIR),
            node,
        })
    }

    pub fn path(&self, vmid: u32) -> PathBuf {
        self.dir.join(format!("{vmid}.json"))
    }

    /// `vmid`'s record, `None` when there is none. Errors name the file.
    pub fn read(&self, vmid: u32) -> Result<Option<CtRecord>> {
        let path = self.path(vmid);
        let text = match read_capped(&path) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse_record(&text, vmid)
            .map(Some)
            .with_context(|| format!("invalid container record {}", path.display()))
    }

    /// Records a confirmed change of `vmid` from `from` to `to`. The baseline is kept from the
    /// existing record when it is about the same container; a new record takes `local_baseline`
    /// (this node's own, which may predate cluster mode), else `from`. A record of another
    /// container with this vmid is archived first (`<vmid>.replaced-<when>.json`).
    pub fn note_change(
        &self,
        vmid: u32,
        identity: &Identity,
        local_baseline: Option<&Alloc>,
        (from, to): (&Alloc, &Alloc),
        now: DateTime<Utc>,
    ) -> Result<Written> {
        let when = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        let existing = self.read(vmid)?;
        let mut archived = None;
        let baseline = match existing {
            Some(rec) => match rec.identity.as_ref().and_then(|was| was.differs(identity)) {
                None => rec.baseline,
                Some(why) => {
                    archived = Some((self.archive(vmid, &when)?, why));
                    local_baseline.unwrap_or(from).clone()
                }
            },
            None => local_baseline.unwrap_or(from).clone(),
        };
        let rec = CtRecord {
            vmid,
            baseline,
            last: LastChange {
                from: from.clone(),
                to: to.clone(),
                when,
                node: self.node.clone(),
            },
            identity: Some(identity.clone()),
        };
        let bytes = encode_record(&rec)?;
        fsutil::ensure_private_dir(&self.dir)?;
        let path = self.path(vmid);
        fsutil::write_atomic(&path, &bytes, RECORD_MODE)?;
        Ok(Written { path, archived })
    }

    /// The vmids that have a record and whose conf is in `conf_dir`: the containers with a
    /// record that this node owns now. A missing records directory means none.
    pub fn vmids_in(&self, conf_dir: &Path) -> Result<Vec<u32>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", self.dir.display())),
        };
        let mut vmids = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", self.dir.display()))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_string_lossy()
                .strip_suffix(".json")
                .map(str::to_string)
            else {
                continue;
            };
            let Ok(vmid) = id.parse::<u32>() else {
                continue; // an archived `<vmid>.replaced-<when>.json`
            };
            if conf_dir.join(format!("{vmid}.conf")).is_file() {
                vmids.push(vmid);
            }
        }
        vmids.sort_unstable();
        Ok(vmids)
    }

    fn archive(&self, vmid: u32, when: &str) -> Result<PathBuf> {
        let stamp: String = when.chars().filter(char::is_ascii_digit).collect();
        let to = self.dir.join(format!("{vmid}.replaced-{stamp}.json"));
        let from = self.path(vmid);
        std::fs::rename(&from, &to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        Ok(to)
    }
}

/// After a change that `pct` made and the conf confirms: updates `vmid`'s record when `backups`
/// keeps records (cluster mode). A failure is a warning: the change stands, and the local backups
/// still hold the way back on this node.
pub fn note_confirmed(
    backups: &BackupStore,
    vmid: u32,
    identity: &Identity,
    (from, to): (&Alloc, &Alloc),
    now: DateTime<Utc>,
) {
    let Some(records) = &backups.ct_records else {
        return;
    };
    let local = backups.baseline(vmid).ok().flatten().map(|b| b.before);
    match records.note_change(vmid, identity, local.as_ref(), (from, to), now) {
        Ok(Written {
            archived: Some((moved_to, why)),
            ..
        }) => warn!(
            vmid,
            moved_to = %moved_to.display(),
            "the container record was another container's ({why}): archived, and a new baseline started"
        ),
        Ok(_) => {}
        Err(e) => warn!(
            vmid,
            path = %records.path(vmid).display(),
            error = %format!("{e:#}"),
            "cannot write the container record"
        ),
    }
}

/// The text of a record file, `None` when it does not exist. Reads at most one byte more than a
/// record may hold, so that an oversized file is refused without reading it whole.
fn read_capped(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_RECORD_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn alloc(cores: u32, memory_mb: u64) -> Alloc {
        Alloc {
            cores: Some(cores),
            memory_mb,
            swap_mb: Some(512),
        }
    }

    fn ident(mac: &str) -> Identity {
        Identity {
            hostname: Some("web".into()),
            rootfs: Some("local-lvm:vm-101-disk-0".into()),
            ostype: Some("debian".into()),
            hwaddrs: vec![mac.into()],
        }
    }

    fn records(dir: &Path, node: &str) -> CtRecords {
        CtRecords {
            dir: dir.join("ct"),
            node: node.into(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_record_keeps_the_first_baseline_across_nodes() {
        let tmp = tempfile::tempdir().unwrap();
        let (n1, n2) = (records(tmp.path(), "n1"), records(tmp.path(), "n2"));
        let id = ident("BC:24:11:00:00:01");
        n1.note_change(101, &id, None, (&alloc(2, 1024), &alloc(4, 1800)), at(0))
            .unwrap();
        // On n2 after a migration: its own first baseline is the scaled allocation.
        let w = n2
            .note_change(
                101,
                &id,
                Some(&alloc(4, 1800)),
                (&alloc(4, 1800), &alloc(8, 1800)),
                at(60),
            )
            .unwrap();
        assert_eq!(w.archived, None);
        let rec = n2.read(101).unwrap().unwrap();
        assert_eq!(rec.baseline, alloc(2, 1024));
        assert_eq!(rec.last.to, alloc(8, 1800));
        assert_eq!(rec.last.node, "n2");
        assert_eq!(rec.last.when, "2023-11-14T22:14:20Z");
    }

    #[test]
    fn a_new_record_takes_the_local_baseline_when_there_is_one() {
        let tmp = tempfile::tempdir().unwrap();
        let n1 = records(tmp.path(), "n1");
        let id = ident("BC:24:11:00:00:01");
        n1.note_change(
            101,
            &id,
            Some(&alloc(1, 512)),
            (&alloc(2, 1024), &alloc(4, 1800)),
            at(0),
        )
        .unwrap();
        assert_eq!(n1.read(101).unwrap().unwrap().baseline, alloc(1, 512));
    }

    #[test]
    fn a_reused_vmid_archives_the_old_record_and_starts_a_new_baseline() {
        let tmp = tempfile::tempdir().unwrap();
        let n1 = records(tmp.path(), "n1");
        let old = ident("BC:24:11:00:00:01");
        n1.note_change(101, &old, None, (&alloc(8, 16384), &alloc(6, 16384)), at(0))
            .unwrap();
        let new = ident("BC:24:11:00:00:99");
        let w = n1
            .note_change(101, &new, None, (&alloc(1, 1024), &alloc(2, 1024)), at(5))
            .unwrap();
        let (moved, why) = w.archived.unwrap();
        assert_eq!(
            moved,
            tmp.path().join("ct/101.replaced-20231114221325.json")
        );
        assert_eq!(
            why,
            "MAC addresses BC:24:11:00:00:99 instead of BC:24:11:00:00:01"
        );
        let archived = parse_record(&std::fs::read_to_string(&moved).unwrap(), 101).unwrap();
        assert_eq!(archived.baseline, alloc(8, 16384));
        assert_eq!(n1.read(101).unwrap().unwrap().baseline, alloc(1, 1024));
    }

    #[test]
    fn vmids_in_lists_the_records_of_containers_owned_here_only() {
        let tmp = tempfile::tempdir().unwrap();
        let n2 = records(tmp.path(), "n2");
        assert_eq!(n2.vmids_in(tmp.path()).unwrap(), Vec::<u32>::new());
        let id = ident("BC:24:11:00:00:01");
        for vmid in [101, 102] {
            n2.note_change(vmid, &id, None, (&alloc(2, 1024), &alloc(4, 1800)), at(0))
                .unwrap();
        }
        std::fs::write(n2.dir.join("101.replaced-20231114221325.json"), "{}").unwrap();
        let confs = tmp.path().join("nodes/n2/lxc");
        std::fs::create_dir_all(&confs).unwrap();
        std::fs::write(confs.join("102.conf"), "cores: 4\n").unwrap();
        assert_eq!(n2.vmids_in(&confs).unwrap(), [102]);
    }

    #[test]
    fn a_record_larger_than_one_kib_is_refused_on_write_and_read() {
        let tmp = tempfile::tempdir().unwrap();
        let n1 = records(tmp.path(), "n1");
        let mut id = ident("BC:24:11:00:00:01");
        id.hwaddrs = (0..60).map(|i| format!("BC:24:11:00:00:{i:02}")).collect();
        let e = n1
            .note_change(101, &id, None, (&alloc(2, 1024), &alloc(4, 1800)), at(0))
            .unwrap_err();
        assert!(format!("{e:#}").starts_with("the record of container 101 would be "));
        assert!(!n1.path(101).exists());
        std::fs::create_dir_all(&n1.dir).unwrap();
        std::fs::write(n1.path(101), " ".repeat(MAX_RECORD_BYTES + 1)).unwrap();
        let e = format!("{:#}", n1.read(101).unwrap_err());
        assert_eq!(
            e,
            format!(
                "invalid container record {}: larger than 1024 bytes",
                n1.path(101).display()
            )
        );
    }

    #[test]
    fn a_record_of_another_vmid_or_with_no_memory_is_refused() {
        let good = r#"{"vmid":101,"baseline":{"cores":2,"memory_mb":1024,"swap_mb":512},"last":{"from":{"cores":2,"memory_mb":1024,"swap_mb":512},"to":{"cores":4,"memory_mb":1800,"swap_mb":512},"when":"2023-11-14T22:13:20Z","node":"n1"}}"#;
        assert_eq!(parse_record(good, 101).unwrap().baseline, alloc(2, 1024));
        let e = format!("{:#}", parse_record(good, 102).unwrap_err());
        assert_eq!(e, "record names container 101, not 102");
        let zero = good.replacen("\"memory_mb\":1024", "\"memory_mb\":0", 1);
        let e = format!("{:#}", parse_record(&zero, 101).unwrap_err());
        assert_eq!(
            e,
            "field `baseline`: cores Some(2), memory 0 MB is no allocation Proxmox accepts"
        );
    }
}
