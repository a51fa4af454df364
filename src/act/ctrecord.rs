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
/// pmxcfs refuses every `chmod` but to 0600 under `priv/` and to 0640 elsewhere
/// (`cfs_fuse_chmod`), and `write_atomic` sets the mode, so a record (sizes and MAC addresses,
/// nothing secret) outside `priv/` must be 0640: with 0600 every write failed with EPERM.
const RECORD_MODE: u32 = 0o640;
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
    /// Deadlines that follow the container to another node; absent when none runs.
    #[serde(default, skip_serializing_if = "Deadlines::is_empty")]
    pub until: Deadlines,
}

/// Absolute times (RFC 3339, UTC, whole seconds) before which the node a container arrives on
/// must not cut it: the model's scale-up cooldown per resource (`scale_down_cooldown` after the
/// allocation grew) and the memory-cut block after an OOM kill (24 h).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadlines {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cooldown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_cooldown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_block: Option<String>,
}

impl Deadlines {
    pub fn is_empty(&self) -> bool {
        self == &Deadlines::default()
    }
}

/// What the writer of a change knows about a container's deadlines: its `scale_down_cooldown`
/// (seconds) and the model's OOM block (µs since the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadlineInputs {
    pub cooldown_secs: u64,
    pub oom_until_usec: Option<i64>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// µs since the epoch of an RFC 3339 deadline; `None` when absent or unreadable (no hold is
/// better than a hold of unknown length).
pub fn deadline_usec(at: Option<&str>) -> Option<i64> {
    Some(DateTime::parse_from_rfc3339(at?).ok()?.timestamp_micros())
}

/// Whether the allocation grew (`None` = all host CPUs, the most there is).
fn cores_grew(from: Option<u32>, to: Option<u32>) -> bool {
    match (from, to) {
        (Some(a), Some(b)) => b > a,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The deadlines after a change from `from` to `to` at `now`: a resource that grew starts its
/// cooldown; the others keep `prev`'s while they run; the OOM block is the later of both.
fn next_deadlines(
    prev: &Deadlines,
    (from, to): (&Alloc, &Alloc),
    inputs: DeadlineInputs,
    now: DateTime<Utc>,
) -> Deadlines {
    let running = |at: &Option<String>| {
        at.clone()
            .filter(|a| deadline_usec(Some(a)).is_some_and(|u| u > now.timestamp_micros()))
    };
    let cooldown = chrono::Duration::seconds(i64::try_from(inputs.cooldown_secs).unwrap_or(0));
    let started = |grew: bool, prev: &Option<String>| {
        if grew && inputs.cooldown_secs > 0 {
            Some(stamp(now + cooldown))
        } else {
            running(prev)
        }
    };
    let oom_model = inputs
        .oom_until_usec
        .and_then(DateTime::from_timestamp_micros)
        .map(stamp);
    let oom = [running(&prev.oom_block), running(&oom_model)]
        .into_iter()
        .flatten()
        .max_by_key(|a| deadline_usec(Some(a)));
    Deadlines {
        cpu_cooldown: started(cores_grew(from.cores, to.cores), &prev.cpu_cooldown),
        memory_cooldown: started(to.memory_mb > from.memory_mb, &prev.memory_cooldown),
        oom_block: oom,
    }
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
    /// Per container, what the deadlines of its next record are computed from (`with_inputs`);
    /// a container not listed keeps the deadlines its record has.
    pub inputs: std::collections::BTreeMap<u32, DeadlineInputs>,
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
            inputs: Default::default(),
        })
    }

    /// The same records, with the deadline inputs of the containers about to change.
    pub fn with_inputs(
        mut self,
        inputs: impl IntoIterator<Item = (u32, DeadlineInputs)>,
    ) -> CtRecords {
        self.inputs.extend(inputs);
        self
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
        let (baseline, prev) = match existing {
            Some(rec) => match rec.identity.as_ref().and_then(|was| was.differs(identity)) {
                None => (rec.baseline, rec.until),
                Some(why) => {
                    archived = Some((self.archive(vmid, &when)?, why));
                    (local_baseline.unwrap_or(from).clone(), Deadlines::default())
                }
            },
            None => (local_baseline.unwrap_or(from).clone(), Deadlines::default()),
        };
        let inputs = self.inputs.get(&vmid).copied().unwrap_or_default();
        let until = next_deadlines(&prev, (from, to), inputs, now);
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
            until,
        };
        let bytes = encode_record(&rec)?;
        fsutil::ensure_private_dir(&self.dir)?;
        let path = self.path(vmid);
        fsutil::write_atomic(&path, &bytes, RECORD_MODE)?;
        Ok(Written { path, archived })
    }

    /// Writes `rec` when its container has no record yet; `false` (nothing written) when it has
    /// one, whoever wrote it.
    pub fn create(&self, rec: &CtRecord) -> Result<bool> {
        let path = self.path(rec.vmid);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
        }
        let bytes = encode_record(rec)?;
        fsutil::ensure_private_dir(&self.dir)?;
        fsutil::write_atomic(&path, &bytes, RECORD_MODE)?;
        Ok(true)
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
        // rename() would replace an archive made in the same second: that record would be lost.
        if std::fs::symlink_metadata(&to).is_ok() {
            bail!(
                "cannot move {} aside: {} exists",
                from.display(),
                to.display()
            );
        }
        std::fs::rename(&from, &to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        Ok(to)
    }
}

/// The deadline inputs of `vmids` under `cfg` and the model: what their next records start from.
pub fn inputs_for(
    cfg: &Config,
    models: &crate::decide::model::Models,
    vmids: impl IntoIterator<Item = u32>,
) -> Vec<(u32, DeadlineInputs)> {
    vmids
        .into_iter()
        .map(|vmid| {
            let inputs = DeadlineInputs {
                cooldown_secs: cfg.limits_for(vmid).scale_down_cooldown,
                oom_until_usec: models
                    .containers
                    .get(&vmid)
                    .and_then(|m| m.oom_hold_until_usec),
            };
            (vmid, inputs)
        })
        .collect()
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
            inputs: Default::default(),
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
    fn an_archived_record_is_never_overwritten_by_a_later_one_of_the_same_second() {
        let tmp = tempfile::tempdir().unwrap();
        let n1 = records(tmp.path(), "n1");
        let first = ident("BC:24:11:00:00:01");
        n1.note_change(
            101,
            &first,
            None,
            (&alloc(8, 16384), &alloc(6, 16384)),
            at(0),
        )
        .unwrap();
        let second = ident("BC:24:11:00:00:02");
        let w = n1
            .note_change(
                101,
                &second,
                None,
                (&alloc(1, 1024), &alloc(2, 1024)),
                at(5),
            )
            .unwrap();
        let (moved, _) = w.archived.unwrap();
        let archived = std::fs::read(&moved).unwrap();
        // A third container with this vmid, written in the same second (or by a node whose clock
        // reads the same time): the first archive stays as it was.
        let third = ident("BC:24:11:00:00:03");
        let e = n1
            .note_change(101, &third, None, (&alloc(2, 2048), &alloc(4, 2048)), at(5))
            .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "cannot move {} aside: {} exists",
                n1.path(101).display(),
                moved.display()
            )
        );
        assert_eq!(std::fs::read(&moved).unwrap(), archived);
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

    #[test]
    fn a_scale_up_starts_the_cooldown_of_what_grew_and_the_model_oom_block_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let oom_until = at(86_400).timestamp_micros();
        let n1 = records(tmp.path(), "n1").with_inputs([(
            101,
            DeadlineInputs {
                cooldown_secs: 3600,
                oom_until_usec: Some(oom_until),
            },
        )]);
        let id = ident("BC:24:11:00:00:01");
        // Memory grows, cores stay.
        n1.note_change(101, &id, None, (&alloc(2, 1024), &alloc(2, 1800)), at(0))
            .unwrap();
        let rec = n1.read(101).unwrap().unwrap();
        assert_eq!(
            rec.until,
            Deadlines {
                cpu_cooldown: None,
                memory_cooldown: Some("2023-11-14T23:13:20Z".into()),
                oom_block: Some("2023-11-15T22:13:20Z".into()),
            }
        );
        let text = std::fs::read_to_string(n1.path(101)).unwrap();
        assert!(
            text.ends_with(r#""until":{"memory_cooldown":"2023-11-14T23:13:20Z","oom_block":"2023-11-15T22:13:20Z"}}"#),
            "{text}"
        );
        assert_eq!(
            deadline_usec(rec.until.oom_block.as_deref()),
            Some(oom_until)
        );
        // On n2 (no inputs of its own), 30 min later, cores grow with no cooldown configured:
        // the memory cooldown and the OOM block carry over; after they ran out, they are dropped.
        let n2 = records(tmp.path(), "n2");
        n2.note_change(101, &id, None, (&alloc(2, 1800), &alloc(4, 1800)), at(1800))
            .unwrap();
        let rec = n2.read(101).unwrap().unwrap();
        assert_eq!(
            rec.until.memory_cooldown.as_deref(),
            Some("2023-11-14T23:13:20Z")
        );
        assert_eq!(rec.until.cpu_cooldown, None);
        assert_eq!(rec.until.oom_block.as_deref(), Some("2023-11-15T22:13:20Z"));
        n2.note_change(
            101,
            &id,
            None,
            (&alloc(4, 1800), &alloc(2, 1800)),
            at(90_000),
        )
        .unwrap();
        assert_eq!(n2.read(101).unwrap().unwrap().until, Deadlines::default());
        assert!(!std::fs::read_to_string(n2.path(101))
            .unwrap()
            .contains("until"));
    }

    #[test]
    fn a_reused_vmid_does_not_inherit_the_old_containers_deadlines() {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = DeadlineInputs {
            cooldown_secs: 3600,
            oom_until_usec: None,
        };
        let n1 = records(tmp.path(), "n1").with_inputs([(101, inputs)]);
        let old = ident("BC:24:11:00:00:01");
        n1.note_change(101, &old, None, (&alloc(2, 1024), &alloc(4, 1024)), at(0))
            .unwrap();
        let plain = records(tmp.path(), "n1");
        let new = ident("BC:24:11:00:00:99");
        plain
            .note_change(101, &new, None, (&alloc(2, 1024), &alloc(2, 900)), at(5))
            .unwrap();
        assert_eq!(
            plain.read(101).unwrap().unwrap().until,
            Deadlines::default()
        );
    }
}
