//! The first start in cluster mode: this node's local baselines (`backup_dir`) become container
//! records in pmxcfs (not when the conf that has the vmid now is of another container), so that a container scaled here before cluster mode keeps its true baseline
//! wherever it runs later. Done once per node (a marker file in `backup_dir`), under a cluster
//! lock so that nodes starting together import one after another, and never over a record that
//! exists (another node wrote it, or a change here did).
//!
//! The lock is a directory, `<pve_root>/priv/lock/lxc_autoscale-import`, made with `mkdir` (atomic
//! in pmxcfs, like Proxmox's own `priv/lock/` locks). A lock older than `LOCK_EXPIRES_SECS`
//! belongs to a node that died while holding it and is removed. While the lock is held elsewhere,
//! or pmxcfs refuses the writes, the import waits for a later cycle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use tracing::{info, warn};

use crate::act::backup::{Backup, BackupStore, Identity};
use crate::act::ctrecord::{CtRecord, CtRecords, Deadlines, LastChange};
use crate::config::cluster::node_lxc_dir;
use crate::config::Config;
use crate::read::cluster;
use crate::read::pveconf::read_conf;

/// Below `pve_root`: the import lock.
pub const IMPORT_LOCK: &str = "priv/lock/lxc_autoscale-import";
/// A lock older than this is expired (Proxmox's `cfs_lock` uses the same bound).
pub const LOCK_EXPIRES_SECS: u64 = 120;
/// In `backup_dir`: this node imported its baselines (not a vmid, so the backups ignore it).
pub const IMPORTED_MARKER: &str = ".cluster-imported";
/// Imports tried per start while a container's conf cannot be read (pmxcfs restarting): each
/// retries those containers, and the last writes the marker without them, so that a conf that
/// stays unreadable does not take the cluster lock every cycle for good.
pub const IMPORT_TRIES: u32 = 10;

/// What an import attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Records written for `imported`; `kept` already had one.
    Done { imported: Vec<u32>, kept: Vec<u32> },
    /// As `Done`, but the confs of `unread` could not be read: no marker, tried again.
    Unfinished {
        imported: Vec<u32>,
        kept: Vec<u32>,
        unread: Vec<u32>,
    },
    /// Another node holds the lock (made `age_secs` ago).
    Busy { age_secs: u64 },
}

/// The import's progress across cycles.
#[derive(Debug, Default)]
pub struct Import {
    done: bool,
    /// `Unfinished` imports so far.
    tries: u32,
}

impl Import {
    /// Tries the import once per cycle until it is done (a steady cycle only checks a flag).
    /// `allowed`: the cluster has quorum and the daemon may write (not `--dry-run`).
    pub fn tick(&mut self, cfg: &Config, allowed: bool) {
        if self.done || cfg.cluster_node.is_none() || !allowed {
            return;
        }
        if cfg.backup_dir.join(IMPORTED_MARKER).exists() {
            self.done = true;
            return;
        }
        let last_try = self.tries + 1 >= IMPORT_TRIES;
        match import(cfg, Utc::now(), last_try) {
            Ok(Some(Outcome::Done { imported, kept })) => {
                info!(imported = ?imported, kept = ?kept, "local baselines imported into the cluster's container records");
                self.done = true;
            }
            Ok(Some(Outcome::Unfinished {
                imported,
                kept,
                unread,
            })) => {
                self.tries += 1;
                info!(imported = ?imported, kept = ?kept, unread = ?unread, "local baselines imported but for containers whose conf could not be read; trying those again next cycle");
            }
            Ok(Some(Outcome::Busy { age_secs })) => {
                info!(
                    age_secs,
                    "another node holds the import lock; trying again next cycle"
                );
            }
            Ok(None) => self.done = true,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot import local baselines; trying again next cycle")
            }
        }
    }
}

/// A held `mkdir` lock; removed on drop.
struct DirLock(PathBuf);

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            warn!(path = %self.0.display(), error = %e, "cannot release the cluster lock");
        }
    }
}

/// Takes the lock at `path`, removing it first when older than `expires`; `Err(age)` while
/// another holder's lock is fresh.
fn take_lock(path: &Path, expires: Duration) -> Result<std::result::Result<DirLock, u64>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    for _ in 0..2 {
        match std::fs::create_dir(path) {
            Ok(()) => return Ok(Ok(DirLock(path.to_path_buf()))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
            .unwrap_or_default();
        if age < expires {
            return Ok(Err(age.as_secs()));
        }
        warn!(path = %path.display(), age_secs = age.as_secs(), "removing an expired cluster lock");
        match std::fs::remove_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    Ok(Err(0))
}

/// Imports `cfg`'s local baselines into records under the lock and writes the marker; `None`
/// outside cluster mode. A container whose conf cannot be read is left for another try
/// (`Unfinished`, no marker) unless this is the `last_try`.
pub fn import(cfg: &Config, now: DateTime<Utc>, last_try: bool) -> Result<Option<Outcome>> {
    let Some(records) = CtRecords::for_config(cfg) else {
        return Ok(None);
    };
    let expires = Duration::from_secs(LOCK_EXPIRES_SECS);
    let _lock = match take_lock(&cfg.pve_root.join(IMPORT_LOCK), expires)? {
        Ok(lock) => lock,
        Err(age_secs) => return Ok(Some(Outcome::Busy { age_secs })),
    };
    let vmlist = cluster::read_vmlist(&cfg.pve_root)?.map(|l| cluster::containers_by_node(&l));
    let store = BackupStore::new(cfg.backup_dir.clone());
    let (mut imported, mut kept, mut unread) = (Vec::new(), Vec::new(), Vec::new());
    for vmid in store.vmids()? {
        let rec = match local_record(&store, vmid, &records.node) {
            Ok(Some(rec)) => rec,
            Ok(None) => continue,
            Err(e) => {
                warn!(vmid, error = %format!("{e:#}"), "cannot read the local baseline; not imported");
                continue;
            }
        };
        match another_container(cfg, vmlist.as_ref(), &rec) {
            Ok(None) => {}
            Ok(Some(why)) => {
                info!(vmid, "{why}: its local baseline is not imported");
                continue;
            }
            Err(e) => {
                warn!(vmid, error = %format!("{e:#}"), "cannot read the container's conf; its local baseline is not imported");
                unread.push(vmid);
                continue;
            }
        }
        if records.create(&rec)? {
            imported.push(vmid);
        } else {
            kept.push(vmid);
        }
    }
    if !unread.is_empty() && !last_try {
        return Ok(Some(Outcome::Unfinished {
            imported,
            kept,
            unread,
        }));
    }
    crate::fsutil::ensure_private_dir(&cfg.backup_dir)?;
    let text = format!(
        "imported {imported:?}, kept {kept:?}, conf unreadable {unread:?} at {}\n",
        now.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    crate::fsutil::write_atomic(
        &cfg.backup_dir.join(IMPORTED_MARKER),
        text.as_bytes(),
        0o600,
    )?;
    Ok(Some(Outcome::Done { imported, kept }))
}

/// Why `rec` (from this node's backups) must not become its container's record: the conf that
/// has its vmid now, on this node or on the node `vmlist` names, is of another container (Proxmox
/// reuses vmids). `None` when it is the same one, or when no conf or no recorded identity tells.
fn another_container(
    cfg: &Config,
    vmlist: Option<&BTreeMap<u32, String>>,
    rec: &CtRecord,
) -> Result<Option<String>> {
    let Some(was) = &rec.identity else {
        return Ok(None);
    };
    let mut conf = read_conf(&cfg.pve_lxc_dir, rec.vmid)?;
    if let (None, Some(node)) = (&conf, vmlist.and_then(|l| l.get(&rec.vmid))) {
        conf = read_conf(&node_lxc_dir(&cfg.pve_root, node), rec.vmid)?;
    }
    let why = conf.and_then(|c| was.differs(&Identity::of(&c)));
    Ok(why.map(|why| format!("its vmid now names another container ({why})")))
}

/// The record this node's backups give `vmid`: its baseline, and its newest backup as the last
/// change (the baseline itself when there is none).
fn local_record(store: &BackupStore, vmid: u32, node: &str) -> Result<Option<CtRecord>> {
    let Some(baseline) = store.baseline(vmid)? else {
        return Ok(None);
    };
    let latest: Backup = store.latest(vmid)?.map_or(baseline.clone(), |(_, b)| b);
    let when = DateTime::parse_from_rfc3339(&latest.timestamp)
        .map(|t| {
            t.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
        .unwrap_or(latest.timestamp.clone());
    Ok(Some(CtRecord {
        vmid,
        baseline: baseline.before.clone(),
        last: LastChange {
            from: latest.before.clone(),
            to: latest.after.clone().unwrap_or(latest.before),
            when,
            node: node.to_string(),
        },
        identity: latest.identity.or(baseline.identity),
        until: Deadlines::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::backup::Alloc;
    use chrono::TimeZone;

    fn alloc(cores: u32, memory_mb: u64) -> Alloc {
        Alloc {
            cores: Some(cores),
            memory_mb,
            swap_mb: None,
        }
    }

    fn ident(mac: &str) -> Identity {
        Identity {
            hostname: Some("web".into()),
            rootfs: None,
            ostype: None,
            hwaddrs: vec![mac.into()],
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn cluster_cfg(root: &Path) -> Config {
        let mut cfg = Config::default();
        cfg.pve_root = root.join("pve");
        cfg.pve_lxc_dir = root.join("pve/nodes/n1/lxc");
        cfg.backup_dir = root.join("backups");
        cfg.cluster_node = Some("n1".into());
        cfg
    }

    /// Puts `vmid`'s conf on this node, with the MAC `mac` when given.
    fn conf_here(cfg: &Config, vmid: u32, mac: Option<&str>) {
        std::fs::create_dir_all(&cfg.pve_lxc_dir).unwrap();
        let net = mac.map_or(String::new(), |m| {
            format!("net0: name=eth0,bridge=vmbr0,hwaddr={m},type=veth\n")
        });
        let text = format!("cores: 4\nhostname: web\nmemory: 2048\n{net}");
        std::fs::write(cfg.pve_lxc_dir.join(format!("{vmid}.conf")), text).unwrap();
    }

    fn records(cfg: &Config, node: &str) -> CtRecords {
        let mut r = CtRecords::for_config(cfg).unwrap();
        r.node = node.into();
        r
    }

    #[test]
    fn local_baselines_are_imported_once_and_a_record_another_node_wrote_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cluster_cfg(tmp.path());
        let store = BackupStore::new(cfg.backup_dir.clone());
        let a = ident("BC:24:11:00:00:01");
        store
            .record_for(101, Some(&a), &alloc(2, 1024), &alloc(4, 1800), at(0))
            .unwrap();
        store
            .record_for(101, Some(&a), &alloc(4, 1800), &alloc(4, 2600), at(60))
            .unwrap();
        store
            .record_for(102, None, &alloc(1, 512), &alloc(2, 512), at(0))
            .unwrap();
        let theirs = records(&cfg, "n2");
        theirs
            .note_change(102, &a, None, (&alloc(8, 4096), &alloc(6, 4096)), at(30))
            .unwrap();
        let their_bytes = std::fs::read(theirs.path(102)).unwrap();
        conf_here(&cfg, 101, Some("BC:24:11:00:00:01"));
        conf_here(&cfg, 102, None);

        let out = import(&cfg, at(100), false).unwrap().unwrap();
        assert_eq!(
            out,
            Outcome::Done {
                imported: vec![101],
                kept: vec![102]
            }
        );
        let rec = theirs.read(101).unwrap().unwrap();
        assert_eq!(rec.baseline, alloc(2, 1024));
        assert_eq!(
            rec.last,
            LastChange {
                from: alloc(4, 1800),
                to: alloc(4, 2600),
                when: "2023-11-14T22:14:20Z".into(),
                node: "n1".into(),
            }
        );
        assert_eq!(rec.identity, Some(a));
        assert_eq!(std::fs::read(theirs.path(102)).unwrap(), their_bytes);
        assert!(!cfg.pve_root.join(IMPORT_LOCK).exists());
        assert_eq!(
            std::fs::read_to_string(cfg.backup_dir.join(IMPORTED_MARKER)).unwrap(),
            "imported [101], kept [102], conf unreadable [] at 2023-11-14T22:15:00Z\n"
        );
        // Done once: with the marker there, a new daemon imports nothing again.
        std::fs::remove_file(theirs.path(101)).unwrap();
        let mut again = Import::default();
        again.tick(&cfg, true);
        assert!(again.done);
        assert!(!theirs.path(101).exists());
        assert_eq!(store.vmids().unwrap(), [101, 102]);
    }

    #[test]
    fn a_fresh_lock_held_elsewhere_defers_the_import_and_an_expired_one_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cluster_cfg(tmp.path());
        let store = BackupStore::new(cfg.backup_dir.clone());
        store
            .record_for(101, None, &alloc(2, 1024), &alloc(4, 1024), at(0))
            .unwrap();
        conf_here(&cfg, 101, None);
        let lock = cfg.pve_root.join(IMPORT_LOCK);
        std::fs::create_dir_all(&lock).unwrap();
        assert_eq!(
            import(&cfg, at(100), false).unwrap(),
            Some(Outcome::Busy { age_secs: 0 })
        );
        let mut import_state = Import::default();
        import_state.tick(&cfg, true);
        assert!(!import_state.done);
        assert!(!cfg.backup_dir.join(IMPORTED_MARKER).exists());
        assert!(records(&cfg, "n1").read(101).unwrap().is_none());
        // Its holder died two minutes and a second ago.
        let then = SystemTime::now() - Duration::from_secs(LOCK_EXPIRES_SECS + 1);
        let secs = then
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let tv = nix::sys::time::TimeVal::new(i64::try_from(secs).unwrap(), 0);
        nix::sys::stat::utimes(&lock, &tv, &tv).unwrap();
        import_state.tick(&cfg, true);
        assert!(import_state.done);
        assert!(!lock.exists());
        let rec = records(&cfg, "n1").read(101).unwrap().unwrap();
        assert_eq!(rec.baseline, alloc(2, 1024));
    }

    #[test]
    fn a_baseline_is_not_imported_when_its_vmid_now_names_another_container() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cluster_cfg(tmp.path());
        let store = BackupStore::new(cfg.backup_dir.clone());
        let a = ident("BC:24:11:00:00:01");
        // 101 is here; 102 was destroyed and its vmid reused on n2; 103's vmid was reused here;
        // 104 left and has no conf anywhere now (it may come back): only 101 and 104 are its own.
        for vmid in [101, 102, 103, 104] {
            store
                .record_for(vmid, Some(&a), &alloc(2, 1024), &alloc(4, 1800), at(0))
                .unwrap();
        }
        conf_here(&cfg, 101, Some("BC:24:11:00:00:01"));
        conf_here(&cfg, 103, Some("BC:24:11:00:00:99"));
        let n2 = cfg.pve_root.join("nodes/n2/lxc");
        std::fs::create_dir_all(&n2).unwrap();
        let other = "cores: 1\nmemory: 512\nnet0: name=eth0,hwaddr=BC:24:11:00:00:77\n";
        std::fs::write(n2.join("102.conf"), other).unwrap();
        let vmlist = r#"{"version": 1, "ids": {"101": {"node": "n1", "type": "lxc"}, "102": {"node": "n2", "type": "lxc"}, "103": {"node": "n1", "type": "lxc"}}}"#;
        std::fs::write(cfg.pve_root.join(".vmlist"), vmlist).unwrap();

        let out = import(&cfg, at(100), false).unwrap().unwrap();
        assert_eq!(
            out,
            Outcome::Done {
                imported: vec![101, 104],
                kept: vec![]
            }
        );
        let recs = records(&cfg, "n1");
        assert_eq!(recs.read(101).unwrap().unwrap().baseline, alloc(2, 1024));
        assert!(!recs.path(102).exists());
        assert!(!recs.path(103).exists());
        // The local backups stay as they were.
        assert_eq!(store.vmids().unwrap(), [101, 102, 103, 104]);
    }

    #[test]
    fn no_import_without_quorum_or_outside_cluster_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = cluster_cfg(tmp.path());
        let mut i = Import::default();
        i.tick(&cfg, false);
        assert!(!i.done);
        assert!(!cfg.pve_root.exists());
        cfg.cluster_node = None;
        i.tick(&cfg, true);
        assert!(!cfg.pve_root.exists());
        assert_eq!(import(&cfg, at(0), false).unwrap(), None);
    }

    #[test]
    fn a_baseline_whose_conf_cannot_be_read_is_tried_again_and_left_out_only_at_the_last_try() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cluster_cfg(tmp.path());
        let store = BackupStore::new(cfg.backup_dir.clone());
        let a = ident("BC:24:11:00:00:01");
        for vmid in [101, 102] {
            store
                .record_for(vmid, Some(&a), &alloc(2, 1024), &alloc(4, 1800), at(0))
                .unwrap();
        }
        conf_here(&cfg, 101, Some("BC:24:11:00:00:01"));
        // 102's conf cannot be read (EISDIR here; pmxcfs restarting on a node).
        let conf_102 = cfg.pve_lxc_dir.join("102.conf");
        std::fs::create_dir_all(&conf_102).unwrap();
        let marker = cfg.backup_dir.join(IMPORTED_MARKER);

        let mut i = Import::default();
        i.tick(&cfg, true);
        assert!(!i.done);
        assert!(!marker.exists());
        let recs = records(&cfg, "n1");
        assert!(recs.path(101).exists());
        assert!(!recs.path(102).exists());

        // Readable again: the next try imports it, and the import is done.
        std::fs::remove_dir(&conf_102).unwrap();
        conf_here(&cfg, 102, Some("BC:24:11:00:00:01"));
        i.tick(&cfg, true);
        assert!(i.done);
        assert_eq!(recs.read(102).unwrap().unwrap().baseline, alloc(2, 1024));
        assert_eq!(
            std::fs::read_to_string(&marker)
                .unwrap()
                .split(" at ")
                .next(),
            Some("imported [102], kept [101], conf unreadable []")
        );

        // A conf that stays unreadable: the last try writes the marker without it.
        std::fs::remove_file(&marker).unwrap();
        std::fs::remove_file(recs.path(102)).unwrap();
        std::fs::remove_file(cfg.pve_lxc_dir.join("102.conf")).unwrap();
        std::fs::create_dir_all(&conf_102).unwrap();
        let mut i = Import::default();
        for _ in 1..IMPORT_TRIES {
            i.tick(&cfg, true);
            assert!(!i.done);
        }
        i.tick(&cfg, true);
        assert!(i.done);
        assert!(!recs.path(102).exists());
        assert_eq!(
            std::fs::read_to_string(&marker)
                .unwrap()
                .split(" at ")
                .next(),
            Some("imported [], kept [101], conf unreadable [102]")
        );
    }
}
