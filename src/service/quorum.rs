//! Quorum in cluster mode: without it pmxcfs is read-only, so `pct set` would fail too. Each
//! cycle reads `<pve_root>/.members` once; while the cluster is not quorate (or the file cannot be
//! read) no change is made, while sampling and recording go on. A loss and a return are each
//! reported once.

use crate::config::Config;
use crate::read::cluster;

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
    /// Checks `cfg`'s cluster once and says what changed.
    pub fn check(&mut self, cfg: &Config) -> Transition {
        let now = missing(cfg);
        let was_lost = self.lost.is_some();
        let transition = match (&now, was_lost) {
            (Some(why), false) => Transition::Lost(why.clone()),
            (None, true) => Transition::Regained,
            (now, _) => Transition::Steady(now.is_none()),
        };
        self.lost = now;
        transition
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
        assert_eq!(q.check(&cfg), Transition::Steady(true));
        cluster_cfg(tmp.path(), Some(NOT_QUORATE));
        let why = format!(
            "{}/.members says the cluster is not quorate",
            tmp.path().display()
        );
        assert_eq!(q.check(&cfg), Transition::Lost(why.clone()));
        assert_eq!(q.check(&cfg), Transition::Steady(false));
        assert_eq!(
            q.status_prefix(),
            format!("no quorum, no changes ({why}); ")
        );
        cluster_cfg(tmp.path(), Some(QUORATE));
        assert_eq!(q.check(&cfg), Transition::Regained);
        assert_eq!(q.check(&cfg), Transition::Steady(true));
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
    fn a_standalone_node_never_reads_members() {
        let mut cfg = Config::default();
        cfg.pve_root = "/nonexistent/pve".into();
        let mut q = Quorum::default();
        assert_eq!(q.check(&cfg), Transition::Steady(true));
    }
}
