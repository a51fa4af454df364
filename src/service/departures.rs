//! Containers that came to or left this node (cluster mode).
//!
//! - A container that left (`.vmlist` put it on this node at the last cycle, running or
//!   stopped): a `migrated` event when `.vmlist` puts it on another node, a `destroyed` event when
//!   `.vmlist` no longer lists it. Its local samples are already gone: the state keeps only what
//!   the snapshot holds. A day after a `destroyed` event its record moves to
//!   `ct/.trash/` (pmxcfs has no symlinks: a rename), unless the vmid is back in the cluster.
//! - A container that arrived (running here now, not last cycle): no cut for
//!   max(`scale_down_window`, 2 × `poll_interval`), since its counters restarted with it, and the
//!   cooldowns and OOM block of its record still hold (see `decide::arrival`). The first cycle
//!   with no container seen before cannot tell an arrival from a container that ran before the
//!   daemon: there only a record written by another node marks one.
//!
//! `.vmlist` is read exactly once per cycle (`VmlistOnce`), for both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::act::backup::Identity;
use crate::act::ctrecord::{self, CtRecord, CtRecords};
use crate::config::Config;
use crate::read::cluster;
use crate::read::snapshot::{Arrival, EpochUsec, Snapshot, State};
use crate::record::events::EventLog;

/// A destroyed container's record moves to the trash this long after its `destroyed` event.
pub const TRASH_AFTER_USEC: EpochUsec = 24 * 3600 * 1_000_000;
/// Below the records directory: records of destroyed containers.
pub const TRASH_DIR: &str = ".trash";
/// A trashed record is removed this long after it was trashed (the time in its name), when the
/// next record is moved in. The trash lives in pmxcfs, whose database is small and shared by the
/// whole cluster, so a cluster that creates and destroys containers all day must not fill it.
pub const TRASH_KEEP_USEC: EpochUsec = 90 * 24 * 3600 * 1_000_000;
/// The UTC time in a trashed record's name: `<vmid>.<time>.json`.
const TRASH_STAMP: &str = "%Y%m%dT%H%M%SZ";

/// Where a container went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Departure {
    Migrated { to: String },
    Destroyed,
}

/// `.vmlist`'s containers (vmid -> node), read on first use and at most once.
pub struct VmlistOnce<'a> {
    root: &'a Path,
    list: Option<Option<BTreeMap<u32, String>>>,
    /// How many times the file was read (0 or 1).
    pub reads: u32,
}

impl<'a> VmlistOnce<'a> {
    pub fn new(root: &'a Path) -> Self {
        VmlistOnce {
            root,
            list: None,
            reads: 0,
        }
    }

    /// The map, `None` (logged) when `.vmlist` is missing or unreadable.
    pub fn get(&mut self) -> Option<&BTreeMap<u32, String>> {
        if self.list.is_none() {
            self.reads += 1;
            let list = match cluster::read_vmlist(self.root) {
                Ok(Some(list)) => Some(cluster::containers_by_node(&list)),
                Ok(None) => {
                    warn!("there is no .vmlist to say where containers are");
                    None
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "cannot tell where containers are");
                    None
                }
            };
            self.list = Some(list);
        }
        self.list.as_ref().and_then(Option::as_ref)
    }
}

/// The containers of `before` missing from `now`, by what `vmlist` (vmid -> node) says. One that
/// `vmlist` still puts on `me` only stopped: it is not listed.
pub fn departures(
    before: &BTreeSet<u32>,
    now: &BTreeSet<u32>,
    vmlist: &BTreeMap<u32, String>,
    me: &str,
) -> Vec<(u32, Departure)> {
    before
        .difference(now)
        .filter_map(|&vmid| match vmlist.get(&vmid) {
            Some(node) if node == me => None,
            Some(node) => Some((vmid, Departure::Migrated { to: node.clone() })),
            None => Some((vmid, Departure::Destroyed)),
        })
        .collect()
}

/// Records an event for each container that `.vmlist` put on this node at the last cycle
/// (`state.owned`) and puts elsewhere or nowhere now, notes the destroyed ones in the state, and
/// moves the records that are due to the trash. Returns how many times `.vmlist` was read: one
/// in cluster mode.
pub fn note(cfg: &Config, state: &mut State, snap: &Snapshot, events: &EventLog) -> u32 {
    let Some(me) = &cfg.cluster_node else {
        return 0;
    };
    let mut vmlist = VmlistOnce::new(&cfg.pve_root);
    if let Some(list) = vmlist.get() {
        let mine: BTreeSet<u32> = list
            .iter()
            .filter(|(_, node)| *node == me)
            .map(|(vmid, _)| *vmid)
            .collect();
        if let Some(before) = &state.owned {
            for (vmid, departure) in departures(before, &mine, list, me) {
                if departure == Departure::Destroyed {
                    state.destroyed.insert(vmid, snap.taken_at_usec);
                }
                record_departure(events, vmid, departure);
            }
        }
        state.owned = Some(mine);
    }
    if let Some(records) = CtRecords::for_config(cfg) {
        sweep_trash(&records, state, &mut vmlist, snap.taken_at_usec);
    }
    vmlist.reads
}

fn record_departure(events: &EventLog, vmid: u32, departure: Departure) {
    let (action, text) = match departure {
        Departure::Migrated { to } => ("migrated", format!("moved to node {to}")),
        Departure::Destroyed => ("destroyed", "no longer in the cluster's .vmlist".into()),
    };
    info!(vmid, action, "{text}");
    if let Err(e) = events.record(vmid, action, &text) {
        warn!(vmid, error = %format!("{e:#}"), "cannot write event log");
    }
}

/// Moves the records of containers destroyed a day ago or more to the trash, unless `.vmlist`
/// lists the vmid again (reused: the record is the new container's, or is archived when it
/// changes). A failed move is retried next cycle.
fn sweep_trash(records: &CtRecords, state: &mut State, vmlist: &mut VmlistOnce, now: EpochUsec) {
    let due: Vec<u32> = state
        .destroyed
        .iter()
        .filter(|(_, at)| now - **at >= TRASH_AFTER_USEC)
        .map(|(v, _)| *v)
        .collect();
    if due.is_empty() {
        return;
    }
    let Some(list) = vmlist.get() else {
        return;
    };
    let mut moved = false;
    for vmid in due {
        if list.contains_key(&vmid) {
            info!(vmid, "the vmid is back in the cluster: its record stays");
            state.destroyed.remove(&vmid);
            continue;
        }
        match to_trash(records, vmid, now) {
            Ok(Some(to)) => {
                info!(vmid, to = %to.display(), "moved the record of a destroyed container to the trash");
                moved = true;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(vmid, error = %format!("{e:#}"), "cannot move the record to the trash; trying again next cycle");
                continue;
            }
        }
        state.destroyed.remove(&vmid);
    }
    if moved {
        prune_trash(&records.dir.join(TRASH_DIR), now);
    }
}

/// Removes the trashed records older than `TRASH_KEEP_USEC`, by the time in their names; another
/// node may be removing the same ones. Files named otherwise are left alone.
fn prune_trash(trash: &Path, now: EpochUsec) {
    let entries = match std::fs::read_dir(trash) {
        Ok(e) => e,
        Err(e) => {
            warn!(dir = %trash.display(), error = %e, "cannot list the trash");
            return;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(at) = name.to_str().and_then(trashed_at) else {
            continue;
        };
        if now - at < TRASH_KEEP_USEC {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %entry.path().display(), error = %e, "cannot remove an old trashed record")
            }
        }
    }
    if removed > 0 {
        info!(removed, dir = %trash.display(), "removed trashed records older than 90 days");
    }
}

/// When a record named `<vmid>.<UTC time>.json` was trashed; `None` for any other name.
fn trashed_at(name: &str) -> Option<EpochUsec> {
    let (vmid, rest) = name.strip_suffix(".json")?.split_once('.')?;
    vmid.parse::<u32>().ok()?;
    let t = chrono::NaiveDateTime::parse_from_str(rest, TRASH_STAMP).ok()?;
    Some(t.and_utc().timestamp_micros())
}

/// Renames `vmid`'s record into `<records>/.trash/<vmid>.<UTC time>.json`; `None` when it has no
/// record.
pub fn to_trash(records: &CtRecords, vmid: u32, now: EpochUsec) -> Result<Option<PathBuf>> {
    let from = records.path(vmid);
    if !from.exists() {
        return Ok(None);
    }
    let trash = records.dir.join(TRASH_DIR);
    crate::fsutil::ensure_private_dir(&trash)?;
    let stamp = chrono::DateTime::from_timestamp_micros(now)
        .map_or_else(|| now.to_string(), |t| t.format(TRASH_STAMP).to_string());
    let to = trash.join(format!("{vmid}.{stamp}.json"));
    std::fs::rename(&from, &to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    Ok(Some(to))
}

/// Notes the containers that arrived on this node since the last cycle (see the module doc): their
/// cuts are held from `snap`'s time, with the deadlines of their record when it is theirs.
pub fn note_arrivals(cfg: &Config, state: &mut State, snap: &Snapshot) {
    let Some(me) = &cfg.cluster_node else {
        return;
    };
    let Some(records) = CtRecords::for_config(cfg) else {
        return;
    };
    let ran_before = !state.seen.is_empty();
    for c in &snap.containers {
        let Some(conf) = c.conf.as_ref() else {
            continue;
        };
        if state.seen.contains_key(&c.vmid) || state.arrivals.contains_key(&c.vmid) {
            continue;
        }
        let record = own_record(&records, c.vmid, &Identity::of(conf));
        let from = record.as_ref().map(|r| r.last.node.as_str());
        let from_elsewhere = from.is_some_and(|n| n != me);
        if !ran_before && !from_elsewhere {
            continue;
        }
        let limits = cfg.limits_for(c.vmid);
        let secs = limits
            .scale_down_window
            .max(cfg.poll_interval.saturating_mul(2));
        let a = arrival(snap.taken_at_usec, secs, record.as_ref());
        info!(
            vmid = c.vmid,
            from = from.unwrap_or("unknown"),
            hold_secs = secs,
            "arrived on this node: no cut until its counters cover a new window"
        );
        state.arrivals.insert(c.vmid, a);
    }
}

/// `vmid`'s record when it is about the container with `identity`; an unreadable one is logged.
fn own_record(records: &CtRecords, vmid: u32, identity: &Identity) -> Option<CtRecord> {
    match records.read(vmid) {
        Ok(Some(r))
            if r.identity
                .as_ref()
                .and_then(|i| i.differs(identity))
                .is_none() =>
        {
            Some(r)
        }
        Ok(_) => None,
        Err(e) => {
            warn!(vmid, error = %format!("{e:#}"), "cannot read the container record");
            None
        }
    }
}

/// The holds of a container that arrived at `now`: `secs` of no cuts, and its record's deadlines.
pub fn arrival(now: EpochUsec, secs: u64, record: Option<&CtRecord>) -> Arrival {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX / 2_000_000);
    let until = |f: fn(&CtRecord) -> Option<&String>| {
        record.and_then(|r| ctrecord::deadline_usec(f(r).map(String::as_str)))
    };
    Arrival {
        until_usec: now.saturating_add(secs.saturating_mul(1_000_000)),
        cpu_cooldown_until_usec: until(|r| r.until.cpu_cooldown.as_ref()),
        memory_cooldown_until_usec: until(|r| r.until.memory_cooldown.as_ref()),
        oom_until_usec: until(|r| r.until.oom_block.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::snapshot::{ContainerSample, CtConf};

    const DAY: EpochUsec = TRASH_AFTER_USEC;
    const NOW: EpochUsec = 1_700_000_000_000_000;

    fn cluster(root: &Path) -> (Config, EventLog) {
        let mut cfg = Config::default();
        cfg.pve_root = root.to_path_buf();
        cfg.cluster_node = Some("n1".into());
        let events = EventLog::beside(&root.join("log/lxc_autoscale.log"));
        std::fs::create_dir_all(root.join("log")).unwrap();
        std::fs::create_dir_all(root.join("lxc_autoscale/ct")).unwrap();
        (cfg, events)
    }

    fn running(vmids: &[u32]) -> Snapshot {
        Snapshot {
            taken_at_usec: NOW,
            containers: vmids
                .iter()
                .map(|&vmid| ContainerSample {
                    vmid,
                    conf: Some(CtConf {
                        memory_mb: 512,
                        ..CtConf::default()
                    }),
                    ..ContainerSample::default()
                })
                .collect(),
            ..Snapshot::default()
        }
    }

    fn vmlist(root: &Path, entries: &[(u32, &str)]) {
        let ids: Vec<String> = entries
            .iter()
            .map(|(v, n)| format!("\"{v}\": {{\"node\": \"{n}\", \"type\": \"lxc\"}}"))
            .collect();
        let text = format!("{{\"version\": 1, \"ids\": {{{}}}}}", ids.join(","));
        std::fs::write(root.join(".vmlist"), text).unwrap();
    }

    #[test]
    fn each_cycle_reads_vmlist_once_for_departures_and_the_trash() {
        let tmp = tempfile::tempdir().unwrap();
        let (cfg, events) = cluster(tmp.path());
        vmlist(
            tmp.path(),
            &[(101, "n1"), (104, "n1"), (105, "n1"), (201, "n2")],
        );
        let mut state = State::default();
        // The first cycle learns what is here; 105 is stopped and still counts.
        assert_eq!(note(&cfg, &mut state, &running(&[101, 104]), &events), 1);
        assert_eq!(state.owned, Some(BTreeSet::from([101, 104, 105])));
        assert_eq!(note(&cfg, &mut state, &running(&[101, 104]), &events), 1);
        // 104 and the stopped 105 were destroyed, 101 migrated, and 102 and 103 are due for the
        // trash: still one read.
        state.destroyed = BTreeMap::from([(102, NOW - DAY), (103, NOW - DAY - 1)]);
        vmlist(tmp.path(), &[(101, "n2"), (201, "n2")]);
        assert_eq!(note(&cfg, &mut state, &running(&[]), &events), 1);
        assert_eq!(state.destroyed, BTreeMap::from([(104, NOW), (105, NOW)]));
        assert_eq!(state.owned, Some(BTreeSet::new()));
        let log = std::fs::read_to_string(tmp.path().join("log/lxc_autoscale.json")).unwrap();
        let actions: Vec<(u64, String)> = log
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let action = v["action"].as_str().unwrap().to_string();
                (v["container_id"].as_u64().unwrap(), action)
            })
            .collect();
        assert_eq!(
            actions,
            [
                (101, "migrated".to_string()),
                (104, "destroyed".to_string()),
                (105, "destroyed".to_string())
            ]
        );
    }

    #[test]
    fn a_standalone_node_reads_no_vmlist() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut cfg, events) = cluster(tmp.path());
        cfg.cluster_node = None;
        let mut state = State::default();
        assert_eq!(note(&cfg, &mut state, &running(&[101]), &events), 0);
        assert_eq!(state.owned, None);
    }

    #[test]
    fn a_destroyed_containers_record_goes_to_the_trash_a_day_later_unless_its_vmid_is_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (cfg, events) = cluster(tmp.path());
        let ct = tmp.path().join("lxc_autoscale/ct");
        for vmid in [101, 102, 103] {
            std::fs::write(ct.join(format!("{vmid}.json")), format!("record {vmid}")).unwrap();
        }
        vmlist(tmp.path(), &[(102, "n2")]);
        let mut state = State {
            // 101 is due, 102 is due but back in the cluster, 103 is a second short of a day.
            destroyed: BTreeMap::from([(101, NOW - DAY), (102, NOW - DAY), (103, NOW - DAY + 1)]),
            ..State::default()
        };
        assert_eq!(note(&cfg, &mut state, &running(&[]), &events), 1);
        assert_eq!(state.destroyed, BTreeMap::from([(103, NOW - DAY + 1)]));
        let trashed = ct.join(".trash/101.20231114T221320Z.json");
        assert_eq!(std::fs::read_to_string(trashed).unwrap(), "record 101");
        assert!(!ct.join("101.json").exists());
        assert_eq!(
            std::fs::read_to_string(ct.join("102.json")).unwrap(),
            "record 102"
        );
        assert_eq!(
            std::fs::read_to_string(ct.join("103.json")).unwrap(),
            "record 103"
        );
        let trash: Vec<_> = std::fs::read_dir(ct.join(".trash")).unwrap().collect();
        assert_eq!(trash.len(), 1);
    }

    #[test]
    fn moving_a_record_to_the_trash_removes_those_trashed_90_days_ago_or_more() {
        let tmp = tempfile::tempdir().unwrap();
        let (cfg, events) = cluster(tmp.path());
        let ct = tmp.path().join("lxc_autoscale/ct");
        let trash = ct.join(".trash");
        std::fs::create_dir_all(&trash).unwrap();
        let stamp = |usec: EpochUsec| {
            chrono::DateTime::from_timestamp_micros(usec)
                .unwrap()
                .format(TRASH_STAMP)
                .to_string()
        };
        let old = format!("200.{}.json", stamp(NOW - 90 * DAY));
        let young = format!("201.{}.json", stamp(NOW - 90 * DAY + 1_000_000));
        for name in [&old, &young, "notes.txt", "202.yesterday.json"] {
            std::fs::write(trash.join(name), "x").unwrap();
        }
        // Nothing moved in: nothing is pruned.
        let mut state = State::default();
        note(&cfg, &mut state, &running(&[]), &events);
        assert!(trash.join(&old).exists());

        std::fs::write(ct.join("101.json"), "record 101").unwrap();
        vmlist(tmp.path(), &[]);
        state.destroyed = BTreeMap::from([(101, NOW - DAY)]);
        note(&cfg, &mut state, &running(&[]), &events);
        let mut left: Vec<String> = std::fs::read_dir(&trash)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![
            "101.20231114T221320Z.json".to_string(),
            "202.yesterday.json".into(),
            young.clone(),
            "notes.txt".into(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn a_trashed_records_time_comes_from_its_name_only() {
        assert_eq!(trashed_at("101.20231114T221320Z.json"), Some(NOW));
        for name in [
            "101.20231114T221320Z",
            "x.20231114T221320Z.json",
            "101.json",
            "101.2023.json",
        ] {
            assert_eq!(trashed_at(name), None, "{name}");
        }
    }

    #[test]
    fn an_arrival_holds_cuts_for_its_window_with_the_deadlines_of_its_record() {
        let rec: CtRecord = serde_json::from_str(
            r#"{"vmid":101,"baseline":{"cores":2,"memory_mb":1024},"last":{"from":{"cores":2,"memory_mb":1024},"to":{"cores":4,"memory_mb":1024},"when":"2023-11-14T22:13:20Z","node":"n1"},"until":{"cpu_cooldown":"2023-11-14T23:13:20Z","oom_block":"2023-11-15T22:13:20Z"}}"#,
        )
        .unwrap();
        let a = arrival(NOW, 600, Some(&rec));
        assert_eq!(
            a,
            Arrival {
                until_usec: NOW + 600_000_000,
                cpu_cooldown_until_usec: Some(NOW + 3_600_000_000),
                memory_cooldown_until_usec: None,
                oom_until_usec: Some(NOW + DAY),
            }
        );
        assert_eq!(
            arrival(NOW, 600, None),
            Arrival {
                until_usec: NOW + 600_000_000,
                ..Arrival::default()
            }
        );
    }

    #[test]
    fn a_container_gone_from_here_is_migrated_or_destroyed_by_vmlist() {
        let before: BTreeSet<u32> = [101, 102, 103, 104].into();
        let now: BTreeSet<u32> = [104].into();
        let vmlist: BTreeMap<u32, String> = [
            (101, "n2".to_string()),
            (103, "n1".to_string()),
            (104, "n1".to_string()),
        ]
        .into();
        assert_eq!(
            departures(&before, &now, &vmlist, "n1"),
            [
                (101, Departure::Migrated { to: "n2".into() }),
                (102, Departure::Destroyed)
            ]
        );
    }
}
