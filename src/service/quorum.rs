//! Quorum in cluster mode: without it pmxcfs is read-only, so `pct set` would fail too. Each
//! cycle reads `<pve_root>/.members` once; while the cluster is not quorate (or the file cannot be
//! read) no change is made, while sampling and recording go on. A loss and a return are each
//! reported once.
//!
//! `.members` can lag behind pmxcfs, so a write is the final word: before a cycle acts (and each
//! cycle while changes are held back) the daemon creates and removes one directory,
//! `<pve_root>/lxc_autoscale/.write-probe-<node>`. `EROFS` or `EACCES` there counts as no quorum.
//! A steady cycle, with nothing to change, writes nothing.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::read::cluster;

/// Below `pve_root`: where the write probe is made (the daemon's own directory).
pub const PROBE_PARENT: &str = "lxc_autoscale";

/// Whether `e` (or an error it wraps) says the filesystem refuses writes: `EROFS` (pmxcfs without
/// quorum) or `EACCES`.
pub fn is_read_only(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|n| n == nix::libc::EROFS || n == nix::libc::EACCES)
    })
}

fn probe_path(pve_root: &Path, node: &str) -> PathBuf {
    pve_root
        .join(PROBE_PARENT)
        .join(format!(".write-probe-{node}"))
}

/// Why pmxcfs refuses writes, `None` when it takes them. Another error (say, a missing tree) is
/// no sign of lost quorum: the write that needs the tree reports it.
pub fn probe(cfg: &Config) -> Option<String> {
    use anyhow::Context;
    let node = cfg.cluster_node.as_ref()?;
    let path = probe_path(&cfg.pve_root, node);
    let made = (|| {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        match std::fs::create_dir(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            other => other.with_context(|| format!("cannot write {}", path.display()))?,
        }
        std::fs::remove_dir(&path).with_context(|| format!("cannot remove {}", path.display()))
    })();
    match made {
        Err(e) if is_read_only(&e) => Some(format!("pmxcfs refuses writes: {e:#}")),
        _ => None,
    }
}

/// What this cycle's check found, compared with the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Same as the last cycle: `true` when changes may be made.
    Steady(bool),
    /// Quorum was there (or this is the first check) and is gone; why.
    Lost(String),
    /// Quorum is back.
    Regained,
}

/// The quorum as last seen.
#[derive(Debug, Default)]
pub struct Quorum {
    /// Why changes are held back, while they are.
    lost: Option<String>,
}

/// Why the cluster of `cfg` has no quorum now, `None` when it has (or outside cluster mode).
pub fn missing(cfg: &Config) -> Option<String> {
    cfg.cluster_node.as_ref()?;
    let path = cfg.pve_root.join(cluster::MEMBERS_FILE);
    match cluster::read_members(&cfg.pve_root) {
        Ok(Some(m)) => match m.cluster.and_then(|c| c.quorate) {
            Some(0) => Some(format!(
                "{} says the cluster is not quorate",
                path.display()
            )),
            _ => None,
        },
        Ok(None) => Some(format!("{} is missing", path.display())),
        Err(e) => Some(format!("{e:#}")),
    }
}

impl Quorum {
    /// Checks `cfg`'s cluster once and says what changed: `.members`, then, when the cycle is about
    /// to act (`acting`) or changes are held back, a write probe.
    pub fn check(&mut self, cfg: &Config, acting: bool) -> Transition {
        let now = missing(cfg).or_else(|| {
            if acting || self.lost.is_some() {
                probe(cfg)
            } else {
                None
            }
        });
        let was_lost = self.lost.is_some();
        let transition = match (&now, was_lost) {
            (Some(why), false) => Transition::Lost(why.clone()),
            (None, true) => Transition::Regained,
            (now, _) => Transition::Steady(now.is_none()),
        };
        self.lost = now;
        transition
    }

    /// Whether changes are held back now.
    pub fn holding_back(&self) -> bool {
        self.lost.is_some()
    }

    /// The start of the systemd status line: says why changes are held back, while they are.
    pub fn status_prefix(&self) -> String {
        self.lost.as_ref().map_or(String::new(), |why| {
            format!("no quorum, no changes ({why}); ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_cfg(root: &std::path::Path, members: Option<&str>) -> Config {
        if let Some(text) = members {
            std::fs::write(root.join(".members"), text).unwrap();
        }
        let mut cfg = Config::default();
        cfg.pve_root = root.to_path_buf();
        cfg.cluster_node = Some("n1".into());
        cfg
    }

    const QUORATE: &str =
        r#"{"nodename":"n1","cluster":{"quorate":1},"nodelist":{"n1":{},"n2":{}}}"#;
    const NOT_QUORATE: &str =
        r#"{"nodename":"n1","cluster":{"quorate":0},"nodelist":{"n1":{},"n2":{}}}"#;

    #[test]
    fn loss_and_return_are_reported_once_each() {
        let tmp = tempfile::tempdir().unwrap();
        let mut q = Quorum::default();
        let cfg = cluster_cfg(tmp.path(), Some(QUORATE));
        assert_eq!(q.check(&cfg, false), Transition::Steady(true));
        cluster_cfg(tmp.path(), Some(NOT_QUORATE));
        let why = format!(
            "{}/.members says the cluster is not quorate",
            tmp.path().display()
        );
        assert_eq!(q.check(&cfg, false), Transition::Lost(why.clone()));
        assert_eq!(q.check(&cfg, false), Transition::Steady(false));
        assert_eq!(
            q.status_prefix(),
            format!("no quorum, no changes ({why}); ")
        );
        cluster_cfg(tmp.path(), Some(QUORATE));
        assert_eq!(q.check(&cfg, false), Transition::Regained);
        assert_eq!(q.check(&cfg, false), Transition::Steady(true));
        assert_eq!(q.status_prefix(), "");
    }

    #[test]
    fn a_missing_members_file_in_cluster_mode_holds_changes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cluster_cfg(tmp.path(), None);
        assert_eq!(
            missing(&cfg),
            Some(format!("{}/.members is missing", tmp.path().display()))
        );
    }

    #[test]
    fn erofs_and_eacces_anywhere_in_the_chain_are_read_only_and_other_errors_are_not() {
        use anyhow::Context;
        let wrapped = |errno: i32| {
            Err::<(), _>(std::io::Error::from_raw_os_error(errno))
                .context("cannot write /etc/pve/lxc_autoscale/ct/101.json")
                .unwrap_err()
        };
        assert!(is_read_only(&wrapped(nix::libc::EROFS)));
        assert!(is_read_only(&wrapped(nix::libc::EACCES)));
        assert!(!is_read_only(&wrapped(nix::libc::ENOENT)));
        assert!(!is_read_only(&anyhow::anyhow!("read-only, in words only")));
    }

    #[test]
    fn the_write_probe_runs_only_when_acting_or_held_back_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = cluster_cfg(tmp.path(), Some(QUORATE));
        let mut q = Quorum::default();
        assert_eq!(q.check(&cfg, false), Transition::Steady(true));
        // A steady cycle wrote nothing: not even the daemon's directory.
        assert!(!tmp.path().join(PROBE_PARENT).exists());
        assert_eq!(q.check(&cfg, true), Transition::Steady(true));
        let left: Vec<_> = std::fs::read_dir(tmp.path().join(PROBE_PARENT))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_standalone_node_never_reads_members() {
        let mut cfg = Config::default();
        cfg.pve_root = "/nonexistent/pve".into();
        let mut q = Quorum::default();
        assert_eq!(q.check(&cfg, false), Transition::Steady(true));
    }
}
