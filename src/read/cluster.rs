//! pmxcfs's cluster files: `<pve_root>/.members` (the nodes, and which one is local) and
//! `<pve_root>/.vmlist` (vmid -> node). Both are JSON written by pmxcfs; extra fields are ignored.
//! A missing `.members` means a standalone node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::config::cluster::{self as cluster_config, Membership};
use crate::config::{self, Config};

/// Below `pve_root`: the cluster's members.
pub const MEMBERS_FILE: &str = ".members";
/// Below `pve_root`: every guest's vmid, node and type.
pub const VMLIST_FILE: &str = ".vmlist";
/// The cluster files are a few KiB; pmxcfs caps any file at 1 MiB.
const MAX_CLUSTER_FILE_BYTES: u64 = 1024 * 1024;

/// `.members`: `{"nodename": "n1", "cluster": {"quorate": 1, …}, "nodelist": {"n1": {"id": 1,
/// "online": 1, …}, …}}`. A standalone node's file holds `nodename` and `version` only.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Members {
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub cluster: Option<ClusterInfo>,
    #[serde(default)]
    pub nodelist: BTreeMap<String, MemberNode>,
}

/// `.members`' `cluster` object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ClusterInfo {
    #[serde(default)]
    pub name: Option<String>,
    /// 1 when the cluster has quorum (pmxcfs is writable), 0 when not.
    #[serde(default)]
    pub quorate: Option<u8>,
}

/// One node of `.members`' `nodelist`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MemberNode {
    #[serde(default)]
    pub id: Option<u64>,
    /// 1 when the node is online, 0 when not.
    #[serde(default)]
    pub online: Option<u8>,
}

impl Members {
    /// What the config needs: the local node's name and the set of nodes.
    pub fn membership(&self) -> Membership {
        Membership {
            nodename: self.nodename.clone(),
            nodes: self.nodelist.keys().cloned().collect::<BTreeSet<_>>(),
        }
    }
}

/// Parses `.members` text.
pub fn parse_members(text: &str) -> Result<Members> {
    serde_json::from_str(text).context("not a pmxcfs .members file")
}

/// `.vmlist`: `{"version": N, "ids": {"101": {"node": "n1", "type": "lxc", "version": N}, …}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Vmlist {
    #[serde(default)]
    pub ids: BTreeMap<String, VmEntry>,
}

/// One guest of `.vmlist`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct VmEntry {
    pub node: String,
    /// `lxc` or `qemu`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The containers (`type` `lxc`) of a parsed `.vmlist`: vmid -> node. Entries whose key is not a
/// vmid are skipped.
pub fn containers_by_node(list: &Vmlist) -> BTreeMap<u32, String> {
    list.ids
        .iter()
        .filter(|(_, e)| e.kind == "lxc")
        .filter_map(|(id, e)| Some((id.parse::<u32>().ok()?, e.node.clone())))
        .filter(|(vmid, _)| *vmid >= config::MIN_VMID)
        .collect()
}

/// Parses `.vmlist` text.
pub fn parse_vmlist(text: &str) -> Result<Vmlist> {
    serde_json::from_str(text).context("not a pmxcfs .vmlist file")
}

fn read_small(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_CLUSTER_FILE_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(text))
}

/// `<pve_root>/.members`, `None` when the file does not exist (a node that is no cluster member).
pub fn read_members(pve_root: &Path) -> Result<Option<Members>> {
    let path = pve_root.join(MEMBERS_FILE);
    read_small(&path)?
        .map(|t| parse_members(&t).with_context(|| path.display().to_string()))
        .transpose()
}

/// `<pve_root>/.vmlist`, `None` when the file does not exist.
pub fn read_vmlist(pve_root: &Path) -> Result<Option<Vmlist>> {
    let path = pve_root.join(VMLIST_FILE);
    read_small(&path)?
        .map(|t| parse_vmlist(&t).with_context(|| path.display().to_string()))
        .transpose()
}

/// The host's short name (`uname -n` up to the first dot), `None` when it cannot be read.
pub fn hostname() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    Some(cluster_config::short_hostname(&name).to_string())
}

/// Loads the config at `path`, resolving cluster mode against `<pve_root>/.members` and, in
/// cluster mode, layering the cluster-wide config (`config::cluster::load`): the one entry point
/// of the daemon and every command. A standalone node gets the file as written.
pub fn load_config(path: &Path) -> Result<Config> {
    cluster_config::load(
        path,
        |root| {
            read_members(root)
                .map(|m| m.map(|m| m.membership()))
                .context(PmxcfsUnreadable)
        },
        hostname,
    )
}

/// `.members` could not be read or made no sense. pmxcfs writes that file, so this is pmxcfs down
/// or restarting, not a config the admin must fix: the daemon exits with a status systemd
/// restarts on, not the one for an invalid config.
#[derive(Debug, Clone, Copy)]
pub struct PmxcfsUnreadable;

impl std::fmt::Display for PmxcfsUnreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pmxcfs is not readable (is pve-cluster running?)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_NODES: &str = r#"{
"nodename": "n2",
"version": 7,
"cluster": { "name": "lab", "version": 3, "nodes": 3, "quorate": 1 },
"nodelist": {
  "n1": { "id": 1, "online": 1, "ip": "10.0.0.1"},
  "n2": { "id": 2, "online": 1, "ip": "10.0.0.2"},
  "n3": { "id": 3, "online": 0, "ip": "10.0.0.3"}
  }
}"#;

    #[test]
    fn members_of_a_three_node_cluster_are_a_cluster() {
        let m = parse_members(THREE_NODES).unwrap();
        assert_eq!(m.nodename.as_deref(), Some("n2"));
        assert_eq!(m.cluster.as_ref().unwrap().quorate, Some(1));
        assert_eq!(m.nodelist["n3"].online, Some(0));
        let ms = m.membership();
        assert!(ms.is_cluster());
        assert_eq!(
            ms.nodes.iter().map(String::as_str).collect::<Vec<_>>(),
            ["n1", "n2", "n3"]
        );
    }

    #[test]
    fn a_standalone_members_file_is_no_cluster() {
        let m = parse_members(r#"{ "nodename": "pve", "version": 0 }"#).unwrap();
        assert_eq!(m.nodename.as_deref(), Some("pve"));
        assert!(!m.membership().is_cluster());
        let one = r#"{"nodename":"pve","nodelist":{"pve":{"id":1,"online":1}}}"#;
        assert!(!parse_members(one).unwrap().membership().is_cluster());
    }

    #[test]
    fn a_members_file_that_is_not_json_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MEMBERS_FILE), "nodename: n1").unwrap();
        let e = format!("{:#}", read_members(dir.path()).unwrap_err());
        assert!(
            e.starts_with(&format!(
                "{}/.members: not a pmxcfs .members file",
                dir.path().display()
            )),
            "{e}"
        );
    }

    #[test]
    fn missing_cluster_files_mean_a_standalone_node() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_members(dir.path()).unwrap(), None);
        assert_eq!(read_vmlist(dir.path()).unwrap(), None);
    }

    #[test]
    fn vmlist_maps_containers_to_their_nodes_and_skips_vms() {
        let text = r#"{
"version": 12,
"ids": {
"101": { "node": "n1", "type": "lxc", "version": 3 },
"102": { "node": "n2", "type": "lxc", "version": 4 },
"200": { "node": "n1", "type": "qemu", "version": 5 },
"abc": { "node": "n1", "type": "lxc", "version": 6 }}
}"#;
        let list = parse_vmlist(text).unwrap();
        let map = containers_by_node(&list);
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            [(101, "n1".to_string()), (102, "n2".to_string())]
        );
    }

    #[test]
    fn load_config_points_a_cluster_node_at_its_node_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join(MEMBERS_FILE), THREE_NODES).unwrap();
        let conf = root.join("local.conf");
        std::fs::write(&conf, format!("pve_root = \"{}\"\n", root.display())).unwrap();
        let cfg = load_config(&conf).unwrap();
        assert_eq!(cfg.pve_lxc_dir, root.join("nodes/n2/lxc"));
        assert_eq!(cfg.cluster_node.as_deref(), Some("n2"));
        std::fs::write(
            &conf,
            format!("pve_root = \"{}\"\ncluster = \"off\"\n", root.display()),
        )
        .unwrap();
        let off = load_config(&conf).unwrap();
        assert_eq!(off.pve_lxc_dir, std::path::PathBuf::from("/etc/pve/lxc"));
        assert_eq!(off.cluster_node, None);
    }
}
