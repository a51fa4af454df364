//! Cluster mode: which containers this node owns, and where the cluster's files are.
//!
//! In cluster mode a node scales exactly the containers whose conf is in
//! `<pve_root>/nodes/<node_name>/lxc/`: Proxmox's own ownership rule, so no leader is needed. That
//! directory replaces `pve_lxc_dir` (on a Proxmox node `/etc/pve/lxc` is a link to the same
//! directory, so a standalone node and a cluster node read the same files). A standalone node
//! (no `.members`, or one node in it, or `cluster = "off"`) uses `pve_lxc_dir` as before.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

mod layer;
pub use layer::{cluster_config_path, layer, load, FileStamp, Files, LOCAL_KEYS, SECRET_KEYS};

/// Default `pve_root`: where pmxcfs is mounted on every Proxmox node.
pub const DEFAULT_PVE_ROOT: &str = "/etc/pve";
/// Below `pve_root`: one directory per node, each with its containers' confs in `lxc/`.
pub const NODES_DIR: &str = "nodes";
/// Below a node's directory: its containers' `<vmid>.conf` files.
pub const NODE_LXC_DIR: &str = "lxc";
/// Below `pve_root`: the cluster-wide config (the local schema plus `[nodes."<name>"]`).
pub const CLUSTER_CONFIG_FILE: &str = "lxc_autoscale/lxc_autoscale.conf";
/// Below `pve_root`: the secrets, in pmxcfs's root-only `priv/` tree.
pub const SECRETS_FILE: &str = "priv/lxc_autoscale/secrets.toml";

/// The `cluster` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// Cluster mode when `.members` lists more than one node.
    #[default]
    Auto,
    /// Always standalone: `pve_lxc_dir` holds the containers to scale.
    Off,
}

/// A `[nodes."<name>"]` table of the cluster-wide config: the keys one node may set differently.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOverride {
    pub reserve_cpu_percent: Option<f64>,
    /// MB.
    pub reserve_memory_mb: Option<u64>,
    pub min_cores: Option<u32>,
    pub max_cores: Option<u32>,
    /// MB.
    pub min_memory: Option<u64>,
    /// MB.
    pub max_memory: Option<u64>,
    pub energy_mode: Option<bool>,
    pub off_peak_start: Option<u32>,
    pub off_peak_end: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, TierOverride>,
}

/// `[nodes."<name>".tiers.<tier>]`: a tier's settings on one node. Membership (`containers`)
/// stays cluster-wide, since a container keeps its vmid when it migrates.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierOverride {
    pub priority: Option<i64>,
    pub cpu_upper_threshold: Option<f64>,
    pub cpu_lower_threshold: Option<f64>,
    pub memory_upper_threshold: Option<f64>,
    pub memory_lower_threshold: Option<f64>,
    pub core_min_increment: Option<u32>,
    pub core_max_increment: Option<u32>,
    pub memory_min_increment: Option<u64>,
    pub min_decrease_chunk: Option<u64>,
    pub min_cores: Option<u32>,
    pub max_cores: Option<u32>,
    pub min_memory: Option<u64>,
    pub max_memory: Option<u64>,
}

/// What `<pve_root>/.members` says, as far as the config needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The local node's name as pmxcfs knows it.
    pub nodename: Option<String>,
    /// Every node of the cluster (`nodelist`); empty on a standalone node.
    pub nodes: BTreeSet<String>,
}

impl Membership {
    /// A cluster is more than one node; a standalone node's `.members` lists at most itself.
    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }
}

/// `<pve_root>/nodes/<node>/lxc`: the confs of the containers `node` owns.
pub fn node_lxc_dir(pve_root: &Path, node: &str) -> PathBuf {
    pve_root.join(NODES_DIR).join(node).join(NODE_LXC_DIR)
}

/// A Proxmox node name is a DNS label: letters, digits and `-`, 1 to 63 characters, no leading
/// or trailing `-`. It is joined into paths, so nothing else is accepted.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if name.is_empty()
        || name.len() > 63
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "`{}` is not a node name (letters, digits and `-`, at most 63)",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// The first label of a host name (`pve1.example.org` -> `pve1`).
pub fn short_hostname(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

pub(super) fn key_error(key: &str, message: String) -> anyhow::Error {
    anyhow::Error::new(ConfigError {
        key: key.to_string(),
        line: None,
        column: None,
        message,
    })
}

/// Turns cluster mode on for `cfg` when its `cluster` key and `members` (`None`: no `.members`
/// file) say this node is part of a cluster: fills `cluster_node` and `node_name`, and points
/// `pve_lxc_dir` at the node's directory. `hostname` is asked only when neither `node_name` nor
/// `.members` names this node. A standalone node's config is left as it was.
pub fn resolve(
    cfg: &mut Config,
    members: Option<&Membership>,
    hostname: impl FnOnce() -> Option<String>,
) -> anyhow::Result<()> {
    let cluster = match cfg.cluster {
        ClusterMode::Off => None,
        ClusterMode::Auto => members.filter(|m| m.is_cluster()),
    };
    let Some(members) = cluster else {
        return Ok(());
    };
    let node = if !cfg.node_name.is_empty() {
        cfg.node_name.clone()
    } else if let Some(name) = &members.nodename {
        name.clone()
    } else {
        let host = hostname().ok_or_else(|| {
            key_error(
                "node_name",
                "not set, .members names no local node, and the host name is unknown".into(),
            )
        })?;
        short_hostname(&host).to_string()
    };
    check_node_name(&node).map_err(|m| key_error("node_name", m))?;
    if !members.nodes.contains(&node) {
        let listed: Vec<&str> = members.nodes.iter().map(String::as_str).collect();
        return Err(key_error(
            "node_name",
            format!(
                "node `{node}` is not a member of the cluster (.members lists {})",
                listed.join(", ")
            ),
        ));
    }
    cfg.pve_lxc_dir = node_lxc_dir(&cfg.pve_root, &node);
    cfg.node_name.clone_from(&node);
    cfg.cluster_node = Some(node);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(local: Option<&str>, nodes: &[&str]) -> Membership {
        Membership {
            nodename: local.map(str::to_string),
            nodes: nodes.iter().map(|n| (*n).to_string()).collect(),
        }
    }

    fn no_hostname() -> Option<String> {
        panic!("the host name must not be asked for")
    }

    #[test]
    fn a_cluster_node_reads_its_own_directory_under_pve_root() {
        let mut cfg = crate::config::parse("pve_root = \"/x/pve\"").unwrap();
        let m = members(Some("n2"), &["n1", "n2", "n3"]);
        resolve(&mut cfg, Some(&m), no_hostname).unwrap();
        assert_eq!(cfg.pve_lxc_dir, PathBuf::from("/x/pve/nodes/n2/lxc"));
        assert_eq!(cfg.cluster_node.as_deref(), Some("n2"));
        assert_eq!(cfg.node_name, "n2");
    }

    #[test]
    fn node_name_from_the_config_wins_over_members() {
        let mut cfg = crate::config::parse("node_name = \"n3\"").unwrap();
        let m = members(Some("n2"), &["n1", "n2", "n3"]);
        resolve(&mut cfg, Some(&m), no_hostname).unwrap();
        assert_eq!(cfg.pve_lxc_dir, PathBuf::from("/etc/pve/nodes/n3/lxc"));
    }

    #[test]
    fn without_a_nodename_the_short_hostname_is_used() {
        let mut cfg = Config::default();
        let m = members(None, &["pve1", "pve2"]);
        resolve(&mut cfg, Some(&m), || Some("pve2.example.org".into())).unwrap();
        assert_eq!(cfg.cluster_node.as_deref(), Some("pve2"));
    }

    #[test]
    fn a_standalone_node_keeps_pve_lxc_dir() {
        for m in [None, Some(members(Some("pve"), &["pve"]))] {
            let mut cfg = Config::default();
            resolve(&mut cfg, m.as_ref(), no_hostname).unwrap();
            assert_eq!(cfg, Config::default());
        }
    }

    #[test]
    fn cluster_off_keeps_a_cluster_node_standalone() {
        let mut cfg = crate::config::parse("cluster = \"off\"").unwrap();
        let before = cfg.clone();
        let m = members(Some("n1"), &["n1", "n2"]);
        resolve(&mut cfg, Some(&m), no_hostname).unwrap();
        assert_eq!(cfg, before);
        assert_eq!(cfg.cluster_node, None);
    }

    #[test]
    fn a_node_name_outside_the_cluster_is_refused_naming_the_members() {
        let mut cfg = crate::config::parse("node_name = \"n9\"").unwrap();
        let m = members(Some("n1"), &["n1", "n2"]);
        let e = resolve(&mut cfg, Some(&m), no_hostname).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "key `node_name`: node `n9` is not a member of the cluster (.members lists n1, n2)"
        );
    }

    #[test]
    fn a_node_name_that_is_not_a_dns_label_is_refused() {
        for bad in ["../n1", "n1/lxc", "-n1", "", "n 1"] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
        assert_eq!(check_node_name("pve-01"), Ok(()));
        let mut cfg = crate::config::parse("node_name = \"../../tmp\"").unwrap();
        let m = members(Some("n1"), &["n1", "n2"]);
        let e = resolve(&mut cfg, Some(&m), no_hostname).unwrap_err();
        assert!(format!("{e:#}").starts_with("key `node_name`: `../../tmp` is not a node name"));
    }

    #[test]
    fn cluster_accepts_only_auto_and_off() {
        let e = format!(
            "{:#}",
            crate::config::parse("cluster = \"on\"").unwrap_err()
        );
        assert!(e.starts_with("key `cluster` (line 1"), "{e}");
    }
}
