//! The cluster-wide status without credentials: each node publishes
//! `<pve_root>/lxc_autoscale/status/<node>.json` (at most `MAX_STATUS_BYTES`), and anyone who can
//! read pmxcfs merges them (`status --cluster`, `GET /cluster/status`, the placement leader).
//!
//! pmxcfs replicates every write to every node, so the file is written only when what it says
//! changes (quorum, leadership, allocations, counts, actions, the set of open shortfalls), and
//! otherwise once every 2 × `poll_interval` as a heartbeat that also refreshes the measured
//! figures (used, headroom, the amounts of the shortfalls). A steady cycle writes nothing else.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::decide::hold::held_until;
use crate::decide::plan::{Managed, Plan, Resource, Shortfall};
use crate::fsutil;
use crate::read::snapshot::{EpochUsec, Hold, Snapshot};
use crate::record::metrics::rfc3339;

/// Below `pve_root`: one `<node>.json` per node.
pub const STATUS_DIR: &str = "lxc_autoscale/status";
/// The cap of one status file; the oldest actions go first, then the newest shortfalls.
pub const MAX_STATUS_BYTES: usize = 64 * 1024;
/// Actions a status file keeps.
pub const MAX_ACTIONS: usize = 20;
/// pmxcfs shows its files as root:www-data 0640.
const STATUS_MODE: u32 = 0o640;
/// A file not rewritten for this many poll intervals is a stale node.
pub const STALE_INTERVALS: i64 = 3;
/// With nothing new, a file is rewritten after this many poll intervals.
pub const HEARTBEAT_INTERVALS: i64 = 2;

/// One node's status file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// RFC 3339 UTC: the end of the last cycle written.
    pub last_cycle: String,
    /// The node's `poll_interval`, seconds: readers judge staleness by it.
    pub poll_interval: u64,
    /// Whether the cluster had quorum at that cycle.
    pub quorum: bool,
    /// Whether the node held the placement lease.
    pub leader: bool,
    /// Cores.
    pub cpu: Figures,
    /// MB.
    pub memory: Figures,
    /// Running containers the node scales, and those it leaves alone (ignored, opted out,
    /// locked, no conf).
    pub managed: usize,
    pub skipped: usize,
    /// The last `MAX_ACTIONS` changes, oldest first.
    pub actions: Vec<Action>,
    /// Scale-ups that do not fit on this node, by vmid.
    pub shortfalls: Vec<OpenShortfall>,
    /// Shortfalls left out to keep the file under `MAX_STATUS_BYTES`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shortfalls_left_out: usize,
    /// Containers this node advised moving in the last day, as placement leader: a node that
    /// takes the lease over reads them, so the advice is not repeated within the day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommended: Vec<Recommended>,
}

/// A recommendation made, and when (RFC 3339 UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommended {
    pub vmid: u32,
    pub at: String,
}

/// Adds the recommendations every node's file lists to `known` (vmid -> µs), keeping the later
/// time of each.
pub fn merge_recommended(view: &ClusterView, known: &mut BTreeMap<u32, EpochUsec>) {
    for n in &view.nodes {
        for r in &n.status.recommended {
            let Ok(at) = chrono::DateTime::parse_from_rfc3339(&r.at) else {
                continue;
            };
            let at = at.timestamp_micros();
            let slot = known.entry(r.vmid).or_insert(at);
            *slot = (*slot).max(at);
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Host figures of one resource. `None` = unknown this cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Host CPUs, or `MemTotal`.
    pub capacity: Option<f64>,
    /// `reserve_cpu_percent` of the CPUs, or `reserve_memory_mb`.
    pub reserve: Option<f64>,
    /// Sum of the running containers' cores, or memory.
    pub allocated: Option<f64>,
    /// Busy cores, or `MemTotal − MemAvailable`.
    pub used: Option<f64>,
    /// What is left after the reserve and use: what a scale-up or a newcomer can get.
    pub headroom: Option<f64>,
}

/// One change the node made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// RFC 3339 UTC.
    pub at: String,
    pub vmid: u32,
    /// `cores 2 -> 4, memory 1024 -> 1800 MB`.
    pub change: String,
    pub why: String,
}

/// A scale-up that does not fit, open since `since` (RFC 3339 UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenShortfall {
    pub vmid: u32,
    pub resource: Resource,
    /// Cores or MB asked for and given, added to `allocated`.
    pub wanted: u64,
    pub granted: u64,
    pub allocated: u64,
    pub since: String,
}

impl OpenShortfall {
    pub fn shortfall(&self) -> Shortfall {
        Shortfall {
            vmid: self.vmid,
            resource: self.resource,
            allocated: self.allocated,
            wanted: self.wanted,
            granted: self.granted,
        }
    }
}

/// `<pve_root>/lxc_autoscale/status`.
pub fn status_dir(pve_root: &Path) -> PathBuf {
    pve_root.join(STATUS_DIR)
}

/// `<pve_root>/lxc_autoscale/status/<node>.json`.
pub fn status_path(pve_root: &Path, node: &str) -> PathBuf {
    status_dir(pve_root).join(format!("{node}.json"))
}

/// Rounds to two decimals, so that a float's last digits do not make the file differ.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The cycle's host figures from the snapshot and the plan (its headroom and observations).
pub fn figures(cfg: &Config, snap: &Snapshot, plan: &Plan) -> (Figures, Figures) {
    let cpus = snap.host.cpus.map(f64::from);
    let reserve_cores = cpus.map(|n| n * cfg.reserve_cpu_percent / 100.0);
    let allocated = |f: fn(&crate::decide::plan::Observation) -> Option<f64>| {
        Some(plan.observations.iter().filter_map(f).sum::<f64>())
    };
    // The plan's cpu headroom is usable cores − busy cores.
    let busy = match (cpus, reserve_cores, plan.headroom.cores) {
        (Some(n), Some(r), Some(h)) => Some(n - r - h),
        _ => None,
    };
    let cpu = Figures {
        capacity: cpus,
        reserve: reserve_cores.map(round2),
        allocated: allocated(|o| o.cores.map(f64::from)),
        used: busy.map(round2),
        headroom: plan.headroom.cores.map(round2),
    };
    let kib_to_mb = |kib: u64| (kib / 1024) as f64;
    let total = snap.host.mem_total_kib.map(kib_to_mb);
    let available = snap.host.mem_available_kib.map(kib_to_mb);
    let memory = Figures {
        capacity: total,
        reserve: Some(cfg.reserve_memory_mb as f64),
        allocated: allocated(|o| o.memory_mb.map(|m| m as f64)),
        used: total.zip(available).map(|(t, a)| t - a),
        headroom: plan.headroom.memory_mb.map(round2),
    };
    (cpu, memory)
}

/// What the loop knows at the end of a cycle, for the status file.
pub struct CycleFacts<'a> {
    pub cfg: &'a Config,
    pub node: &'a str,
    pub snap: &'a Snapshot,
    pub plan: &'a Plan,
    /// The changes `pct` confirmed this cycle: vmid, what, why.
    pub applied: Vec<(u32, String, String)>,
    pub quorum: bool,
    pub leader: bool,
    /// Recommendations made in the last day (the state's), vmid -> µs.
    pub recommended: &'a BTreeMap<u32, EpochUsec>,
    /// The state's manual-change holds: a held resource is left alone, so its shortfall asks
    /// nothing of other nodes either.
    pub holds: &'a BTreeMap<u32, Hold>,
    pub now_usec: EpochUsec,
}

/// The status file's writer, kept across cycles: the last actions, since when each shortfall is
/// open, and what was last written.
#[derive(Debug, Default)]
pub struct StatusPublisher {
    actions: VecDeque<Action>,
    /// (vmid, resource) -> RFC 3339 of the first cycle it was seen in.
    since: BTreeMap<(u32, Resource), String>,
    /// The file as last written, with the figures that ride the heartbeat blanked.
    last_key: Option<NodeStatus>,
    last_write_usec: Option<EpochUsec>,
    /// Whether the actions and shortfalls of a file left by an earlier run were taken over.
    seeded: bool,
}

/// What `StatusPublisher::publish` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Written because its content changed.
    Changed,
    Heartbeat,
    Unchanged,
    /// No quorum: pmxcfs is read-only.
    NoQuorum,
}

impl StatusPublisher {
    /// Builds this cycle's status and writes it when it changed or the heartbeat is due.
    pub fn publish(&mut self, facts: &CycleFacts) -> Result<Published> {
        let path = status_path(&facts.cfg.pve_root, facts.node);
        if !self.seeded {
            self.seeded = true;
            if let Ok(Some(old)) = read_status(&path) {
                self.seed(old);
            }
        }
        let status = self.build(facts);
        if !facts.quorum {
            return Ok(Published::NoQuorum);
        }
        let key = change_key(&status);
        let interval = i64::try_from(facts.cfg.poll_interval).unwrap_or(i64::MAX);
        // Due half an interval early: cycles come every interval, so the file is written every
        // other cycle, not every third one when a cycle is a little early.
        let heartbeat_usec = interval
            .saturating_mul(HEARTBEAT_INTERVALS)
            .saturating_mul(1_000_000)
            .saturating_sub(interval.saturating_mul(500_000));
        let why = if self.last_key.as_ref() != Some(&key) {
            Published::Changed
        } else if self.last_write_usec.map_or(true, |at| {
            facts.now_usec.saturating_sub(at) >= heartbeat_usec
        }) {
            Published::Heartbeat
        } else {
            return Ok(Published::Unchanged);
        };
        write_status(&path, status)?;
        self.last_key = Some(key);
        self.last_write_usec = Some(facts.now_usec);
        Ok(why)
    }

    /// Takes over the actions and shortfall ages of the file an earlier run wrote.
    fn seed(&mut self, old: NodeStatus) {
        self.actions = old.actions.into_iter().collect();
        for s in old.shortfalls {
            self.since.insert((s.vmid, s.resource), s.since);
        }
    }

    fn build(&mut self, facts: &CycleFacts) -> NodeStatus {
        let now = rfc3339(facts.now_usec);
        for (vmid, change, why) in &facts.applied {
            self.actions.push_back(Action {
                at: now.clone(),
                vmid: *vmid,
                change: change.clone(),
                why: why.clone(),
            });
        }
        while self.actions.len() > MAX_ACTIONS {
            self.actions.pop_front();
        }
        let open: BTreeMap<(u32, Resource), &Shortfall> = facts
            .plan
            .shortfalls
            .iter()
            .filter(|s| held_until(facts.holds, s.vmid, s.resource, facts.now_usec).is_none())
            .map(|s| ((s.vmid, s.resource), s))
            .collect();
        self.since.retain(|k, _| open.contains_key(k));
        let shortfalls = open
            .iter()
            .map(|(k, s)| OpenShortfall {
                vmid: s.vmid,
                resource: s.resource,
                wanted: s.wanted,
                granted: s.granted,
                allocated: s.allocated,
                since: self.since.entry(*k).or_insert_with(|| now.clone()).clone(),
            })
            .collect();
        let (cpu, memory) = figures(facts.cfg, facts.snap, facts.plan);
        let managed = facts
            .plan
            .observations
            .iter()
            .filter(|o| o.managed == Managed::Yes)
            .count();
        NodeStatus {
            node: facts.node.to_string(),
            last_cycle: now,
            poll_interval: facts.cfg.poll_interval,
            quorum: facts.quorum,
            leader: facts.leader,
            cpu,
            memory,
            managed,
            skipped: facts.plan.observations.len() - managed,
            actions: self.actions.iter().cloned().collect(),
            shortfalls,
            shortfalls_left_out: 0,
            recommended: facts
                .recommended
                .iter()
                .map(|(vmid, at)| Recommended {
                    vmid: *vmid,
                    at: rfc3339(*at),
                })
                .collect(),
        }
    }
}

/// The status without what rides the heartbeat: the time, and the measured figures.
fn change_key(status: &NodeStatus) -> NodeStatus {
    let mut key = status.clone();
    key.last_cycle.clear();
    for f in [&mut key.cpu, &mut key.memory] {
        f.used = None;
        f.headroom = None;
    }
    for s in &mut key.shortfalls {
        s.wanted = 0;
        s.granted = 0;
    }
    key
}

/// The JSON of `status`, trimmed to `MAX_STATUS_BYTES`: the oldest actions go first, then the
/// last shortfalls (counted in `shortfalls_left_out`).
pub fn encode_capped(mut status: NodeStatus) -> Result<Vec<u8>> {
    loop {
        let json = serde_json::to_vec_pretty(&status).context("cannot encode status")?;
        if json.len() <= MAX_STATUS_BYTES {
            return Ok(json);
        }
        if !status.actions.is_empty() {
            status.actions.remove(0);
        } else if status.shortfalls.pop().is_some() {
            status.shortfalls_left_out += 1;
        } else {
            anyhow::bail!(
                "status of node {} is over {MAX_STATUS_BYTES} bytes",
                status.node
            );
        }
    }
}

/// Writes `status` to `path` as a temp file plus `rename()` in the same directory, creating the
/// directory when missing.
pub fn write_status(path: &Path, status: NodeStatus) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let json = encode_capped(status)?;
    fsutil::write_atomic(path, &json, STATUS_MODE)
}

/// Parses a status file's text.
pub fn parse_status(text: &str) -> Result<NodeStatus> {
    serde_json::from_str(text).context("not a status file")
}

/// Reads one status file; `None` when it does not exist.
pub fn read_status(path: &Path) -> Result<Option<NodeStatus>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut text = String::new();
    // pmxcfs caps a file at 1 MiB; ours are at most 64 KiB.
    file.take(1024 * 1024)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_status(&text)
        .map(Some)
        .with_context(|| path.display().to_string())
}

/// One node in the merged view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// The file is older than `STALE_INTERVALS` × its `poll_interval` (or its time unreadable).
    pub stale: bool,
    /// Seconds since `last_cycle`.
    pub age_secs: Option<i64>,
    #[serde(flatten)]
    pub status: NodeStatus,
}

/// Every node's status file: `{"nodes": [...]}` by node name, and the files that could not be
/// read, with why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Nodes `.members` lists that have no status file (no daemon has run there).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

impl ClusterView {
    pub fn leader(&self) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.status.leader && !n.stale)
    }
}

/// Whether `status` is stale at `now_usec`, and its age in seconds.
pub fn staleness(status: &NodeStatus, now_usec: EpochUsec) -> (bool, Option<i64>) {
    let at = chrono::DateTime::parse_from_rfc3339(&status.last_cycle)
        .ok()
        .map(|t| t.timestamp_micros());
    let Some(at) = at else {
        return (true, None);
    };
    let age_usec = now_usec.saturating_sub(at);
    let interval = i64::try_from(status.poll_interval.max(1)).unwrap_or(i64::MAX);
    let limit = interval
        .saturating_mul(STALE_INTERVALS)
        .saturating_mul(1_000_000);
    (age_usec > limit, Some(age_usec / 1_000_000))
}

/// Reads and merges every `<node>.json` under `<pve_root>/lxc_autoscale/status/`. A missing
/// directory is an empty view; a file that cannot be read is listed in `unreadable`.
pub fn read_cluster(pve_root: &Path, now_usec: EpochUsec) -> Result<ClusterView> {
    let dir = status_dir(pve_root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ClusterView::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut view = ClusterView::default();
    let mut files = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temp files of a write in progress start with a dot.
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        files.insert(name.trim_end_matches(".json").to_string());
        match read_status(&entry.path()) {
            Ok(Some(status)) => {
                let (stale, age_secs) = staleness(&status, now_usec);
                view.nodes.push(NodeView {
                    stale,
                    age_secs,
                    status,
                });
            }
            Ok(None) => {}
            Err(e) => view.unreadable.push(format!("{e:#}")),
        }
    }
    view.nodes.sort_by(|a, b| a.status.node.cmp(&b.status.node));
    view.unreadable.sort();
    if let Ok(Some(members)) = crate::read::cluster::read_members(pve_root) {
        view.missing = members
            .nodelist
            .into_keys()
            .filter(|m| !files.contains(m))
            .collect();
    }
    Ok(view)
}

/// The `status --cluster` table, then one line per open shortfall.
pub fn render(view: &ClusterView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<6} {:<6} {:<6} {:>9} {:>12} {:>7} {:>7} {:>10}  last cycle",
        "node",
        "state",
        "leader",
        "quorum",
        "cpu free",
        "mem free MB",
        "managed",
        "skipped",
        "shortfalls"
    );
    let num = |v: Option<f64>, prec: usize| v.map_or("-".into(), |v| format!("{v:.prec$}"));
    let yes = |b: bool| if b { "yes" } else { "no" };
    for n in &view.nodes {
        let s = &n.status;
        let _ = writeln!(
            out,
            "{:<16} {:<6} {:<6} {:<6} {:>9} {:>12} {:>7} {:>7} {:>10}  {}",
            s.node,
            if n.stale { "stale" } else { "ok" },
            yes(s.leader),
            yes(s.quorum),
            num(s.cpu.headroom, 1),
            num(s.memory.headroom, 0),
            s.managed,
            s.skipped,
            s.shortfalls.len(),
            s.last_cycle
        );
    }
    for n in &view.nodes {
        for s in &n.status.shortfalls {
            let unit = match s.resource {
                Resource::Cpu => " cores",
                Resource::Memory => " MB",
            };
            let _ = writeln!(
                out,
                "does not fit on {}: CT {} {} +{}{unit} wanted, +{}{unit} granted, since {}",
                n.status.node, s.vmid, s.resource, s.wanted, s.granted, s.since
            );
        }
    }
    for e in &view.unreadable {
        let _ = writeln!(out, "unreadable: {e}");
    }
    for node in &view.missing {
        let _ = writeln!(out, "no status file: {node} (no daemon has run there)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: EpochUsec = 1_700_000_000_000_000;

    fn status(node: &str) -> NodeStatus {
        NodeStatus {
            node: node.into(),
            last_cycle: rfc3339(NOW),
            poll_interval: 10,
            quorum: true,
            ..NodeStatus::default()
        }
    }

    fn action(i: u32) -> Action {
        Action {
            at: rfc3339(NOW),
            vmid: 100 + i,
            change: "x".repeat(1000),
            why: String::new(),
        }
    }

    #[test]
    fn an_oversized_status_drops_its_oldest_actions_first() {
        let mut s = status("n1");
        s.actions = (0..80).map(action).collect();
        let json = encode_capped(s).unwrap();
        assert!(json.len() <= MAX_STATUS_BYTES, "{}", json.len());
        let back = parse_status(std::str::from_utf8(&json).unwrap()).unwrap();
        // Each action takes a little over 1 KiB: the newest ones stay, in order.
        let first = back.actions.first().unwrap().vmid;
        assert_eq!(back.actions.last().unwrap().vmid, 179);
        assert_eq!(
            back.actions.iter().map(|a| a.vmid).collect::<Vec<_>>(),
            (first..180).collect::<Vec<_>>()
        );
        assert!(back.actions.len() < 80);
        assert_eq!(back.shortfalls_left_out, 0);
    }

    #[test]
    fn shortfalls_are_cut_last_and_counted() {
        let mut s = status("n1");
        s.actions = vec![action(1)];
        s.shortfalls = (0..2000)
            .map(|i| OpenShortfall {
                vmid: 100 + i,
                resource: Resource::Memory,
                wanted: 512,
                granted: 0,
                allocated: 1024,
                since: rfc3339(NOW),
            })
            .collect();
        let json = encode_capped(s).unwrap();
        assert!(json.len() <= MAX_STATUS_BYTES);
        let back = parse_status(std::str::from_utf8(&json).unwrap()).unwrap();
        assert!(back.actions.is_empty());
        assert_eq!(back.shortfalls.len() + back.shortfalls_left_out, 2000);
        assert_eq!(back.shortfalls[0].vmid, 100);
    }

    #[test]
    fn a_file_older_than_three_intervals_is_stale() {
        let s = status("n1");
        assert_eq!(staleness(&s, NOW + 30_000_000), (false, Some(30)));
        assert_eq!(staleness(&s, NOW + 30_000_001), (true, Some(30)));
        let mut bad = s.clone();
        bad.last_cycle = "yesterday".into();
        assert_eq!(staleness(&bad, NOW), (true, None));
    }

    #[test]
    fn the_merged_view_lists_nodes_by_name_and_names_unreadable_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut n2 = status("n2");
        n2.leader = true;
        write_status(&status_path(root, "n2"), n2).unwrap();
        let mut n1 = status("n1");
        n1.last_cycle = rfc3339(NOW - 60_000_000);
        write_status(&status_path(root, "n1"), n1).unwrap();
        std::fs::write(status_dir(root).join("n3.json"), "{").unwrap();
        std::fs::write(
            root.join(".members"),
            r#"{"nodename":"n1","nodelist":{"n1":{},"n2":{},"n3":{},"n4":{}}}"#,
        )
        .unwrap();
        std::fs::write(status_dir(root).join(".n4.json.tmp.1"), "{").unwrap();
        let view = read_cluster(root, NOW).unwrap();
        let got: Vec<(&str, bool, bool)> = view
            .nodes
            .iter()
            .map(|n| (n.status.node.as_str(), n.stale, n.status.leader))
            .collect();
        assert_eq!(got, [("n1", true, false), ("n2", false, true)]);
        assert_eq!(view.leader().unwrap().status.node, "n2");
        assert_eq!(view.unreadable.len(), 1);
        // n3's file is there but unreadable; n4 has none.
        assert_eq!(view.missing, ["n4"]);
        assert!(
            view.unreadable[0].starts_with(&format!(
                "{}/n3.json: not a status file",
                status_dir(root).display()
            )),
            "{}",
            view.unreadable[0]
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["nodes"][0]["node"], "n1");
        assert_eq!(json["nodes"][0]["stale"], true);
        assert_eq!(json["nodes"][1]["leader"], true);
        assert_eq!(json["nodes"][1]["age_secs"], 0);
    }

    fn cfg(root: &Path) -> Config {
        let mut cfg = Config::default();
        cfg.pve_root = root.to_path_buf();
        cfg.poll_interval = 10;
        cfg
    }

    fn short(vmid: u32, wanted: u64) -> Shortfall {
        Shortfall {
            vmid,
            resource: Resource::Memory,
            allocated: 1024,
            wanted,
            granted: 0,
        }
    }

    #[test]
    fn the_file_is_rewritten_on_a_change_or_as_a_heartbeat_only() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cfg(tmp.path());
        let snap = Snapshot::default();
        let none = BTreeMap::new();
        let no_holds: BTreeMap<u32, Hold> = BTreeMap::new();
        let mut plan = Plan {
            shortfalls: vec![short(101, 512)],
            ..Plan::default()
        };
        let mut p = StatusPublisher::default();
        let mut at = |secs: i64, plan: &Plan, applied: Vec<(u32, String, String)>| {
            let facts = CycleFacts {
                cfg: &cfg,
                node: "n1",
                snap: &snap,
                plan,
                applied,
                quorum: true,
                leader: false,
                recommended: &none,
                holds: &no_holds,
                now_usec: NOW + secs * 1_000_000,
            };
            p.publish(&facts).unwrap()
        };
        assert_eq!(at(0, &plan, vec![]), Published::Changed);
        // Same shortfall, another amount: measured figures ride the heartbeat.
        plan.shortfalls = vec![short(101, 600)];
        assert_eq!(at(10, &plan, vec![]), Published::Unchanged);
        assert_eq!(at(20, &plan, vec![]), Published::Heartbeat);
        // Half an interval early: a cycle that comes a little early still writes it.
        assert_eq!(at(34, &plan, vec![]), Published::Unchanged);
        assert_eq!(at(35, &plan, vec![]), Published::Heartbeat);
        let action = vec![(101, "memory 1024 -> 1536 MB".to_string(), "why".to_string())];
        assert_eq!(at(40, &plan, action), Published::Changed);
        plan.shortfalls.clear();
        assert_eq!(at(50, &plan, vec![]), Published::Changed);
        let path = status_path(tmp.path(), "n1");
        let written = read_status(&path).unwrap().unwrap();
        assert_eq!(written.last_cycle, rfc3339(NOW + 50_000_000));
        assert_eq!(written.actions.len(), 1);
        assert_eq!(written.actions[0].at, rfc3339(NOW + 40_000_000));
        assert!(written.shortfalls.is_empty());
    }

    #[test]
    fn a_shortfall_keeps_its_first_time_and_a_restart_takes_over_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cfg(tmp.path());
        let snap = Snapshot::default();
        let none = BTreeMap::new();
        let no_holds: BTreeMap<u32, Hold> = BTreeMap::new();
        let plan = Plan {
            shortfalls: vec![short(101, 512)],
            ..Plan::default()
        };
        let facts = |secs: i64| CycleFacts {
            cfg: &cfg,
            node: "n1",
            snap: &snap,
            plan: &plan,
            applied: vec![(102, "cores 1 -> 2".into(), "busy".into())],
            quorum: true,
            leader: false,
            recommended: &none,
            holds: &no_holds,
            now_usec: NOW + secs * 1_000_000,
        };
        StatusPublisher::default().publish(&facts(0)).unwrap();
        let mut restarted = StatusPublisher::default();
        assert_eq!(restarted.publish(&facts(20)).unwrap(), Published::Changed);
        let written = read_status(&status_path(tmp.path(), "n1"))
            .unwrap()
            .unwrap();
        assert_eq!(written.shortfalls[0].since, rfc3339(NOW));
        assert_eq!(written.actions.len(), 2);
    }

    #[test]
    fn a_resource_on_manual_hold_files_no_shortfall() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cfg(tmp.path());
        let snap = Snapshot::default();
        let none = BTreeMap::new();
        let plan = Plan {
            shortfalls: vec![short(101, 512), short(102, 512)],
            ..Plan::default()
        };
        let holds = BTreeMap::from([(
            101,
            Hold {
                memory_until_usec: Some(NOW + 1),
                by: "uid 0".into(),
                ..Hold::default()
            },
        )]);
        let facts = CycleFacts {
            cfg: &cfg,
            node: "n1",
            snap: &snap,
            plan: &plan,
            applied: vec![],
            quorum: true,
            leader: false,
            recommended: &none,
            holds: &holds,
            now_usec: NOW,
        };
        StatusPublisher::default().publish(&facts).unwrap();
        let written = read_status(&status_path(tmp.path(), "n1"))
            .unwrap()
            .unwrap();
        let vmids: Vec<u32> = written.shortfalls.iter().map(|s| s.vmid).collect();
        assert_eq!(vmids, [102]);
    }

    #[test]
    fn without_quorum_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cfg(tmp.path());
        let snap = Snapshot::default();
        let none = BTreeMap::new();
        let no_holds: BTreeMap<u32, Hold> = BTreeMap::new();
        let plan = Plan::default();
        let facts = CycleFacts {
            cfg: &cfg,
            node: "n1",
            snap: &snap,
            plan: &plan,
            applied: vec![],
            quorum: false,
            leader: false,
            recommended: &none,
            holds: &no_holds,
            now_usec: NOW,
        };
        let mut p = StatusPublisher::default();
        assert_eq!(p.publish(&facts).unwrap(), Published::NoQuorum);
        assert!(!status_path(tmp.path(), "n1").exists());
    }

    #[test]
    fn no_status_directory_is_an_empty_cluster() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            read_cluster(tmp.path(), NOW).unwrap(),
            ClusterView::default()
        );
    }
}
