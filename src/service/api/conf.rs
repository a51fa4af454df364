//! What the API reads from a container's conf beyond the allocation: rootfs, protection, tags and
//! the snapshot sections; and whether a VMID is taken in the cluster's `.vmlist`.

use std::path::Path;

use serde_json::{json, Value};

/// One `[name]` snapshot section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    pub name: String,
    pub snaptime: Option<i64>,
    pub description: String,
    pub parent: Option<String>,
}

/// The parsed conf: main-section `key: value` pairs and the snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfFacts {
    pub main: Vec<(String, String)>,
    pub snapshots: Vec<SnapInfo>,
}

impl ConfFacts {
    pub fn parse(text: &str) -> ConfFacts {
        let mut facts = ConfFacts::default();
        let mut current: Option<SnapInfo> = None;
        let mut in_main = true;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                facts.snapshots.extend(current.take());
                in_main = false;
                if !name.starts_with("pve:") {
                    current = Some(SnapInfo {
                        name: name.to_string(),
                        snaptime: None,
                        description: String::new(),
                        parent: None,
                    });
                }
                continue;
            }
            if let Some(desc) = line.strip_prefix('#') {
                if let Some(s) = current.as_mut() {
                    push_line(&mut s.description, desc);
                }
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if in_main {
                facts.main.push((k.to_string(), v.to_string()));
            } else if let Some(s) = current.as_mut() {
                match k {
                    "snaptime" => s.snaptime = v.parse().ok(),
                    "parent" => s.parent = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        facts.snapshots.extend(current);
        facts
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.main
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn lock(&self) -> Option<&str> {
        self.get("lock").filter(|v| !v.is_empty())
    }

    pub fn protected(&self) -> bool {
        self.get("protection") == Some("1")
    }

    pub fn tags(&self) -> Vec<String> {
        self.get("tags")
            .unwrap_or("")
            .split([';', ',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `size=` of the `rootfs` line, as written (`8G`).
    pub fn rootfs_size(&self) -> Option<&str> {
        self.get("rootfs")?
            .split(',')
            .find_map(|p| p.trim().strip_prefix("size="))
    }

    /// `GET /resource/lxc/config`'s data.
    pub fn config_json(&self, vmid: u32) -> Value {
        let num = |k: &str| -> Value {
            self.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(Value::Null, |n| json!(n))
        };
        let int = |k: &str| -> Value {
            self.get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(Value::Null, |n| json!(n))
        };
        json!({
            "lxc_id": vmid,
            "hostname": self.get("hostname"),
            "cores": int("cores"),
            "cpulimit": num("cpulimit"),
            "memory": self.get("memory").and_then(|v| v.parse::<u64>().ok()).unwrap_or(512),
            "swap": int("swap"),
            "rootfs_size": self.rootfs_size(),
            "tags": self.tags(),
            "lock": self.lock(),
            "protection": self.protected(),
        })
    }

    /// `GET /snapshot/list`'s data.
    pub fn snapshots_json(&self) -> Value {
        Value::Array(
            self.snapshots
                .iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "snaptime": s.snaptime,
                        "description": s.description,
                        "parent": s.parent,
                    })
                })
                .collect(),
        )
    }
}

fn push_line(out: &mut String, line: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(line);
}

/// Reads `<dir>/<vmid>.conf`; `None` when there is none.
pub fn read_facts(dir: &Path, vmid: u32) -> std::io::Result<Option<ConfFacts>> {
    match std::fs::read_to_string(dir.join(format!("{vmid}.conf"))) {
        Ok(t) => Ok(Some(ConfFacts::parse(&t))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `.vmlist` (pmxcfs JSON: `{"ids": {"101": {...}}}`) lists `vmid`, or cannot tell. A
/// missing list means a single node: only the local confs count then. A list that exists but
/// cannot be read or parsed (pmxcfs restarting, a partial write) may hide the id on another
/// node, so it counts as listing it.
pub fn vmlist_has(path: &Path, vmid: u32) -> bool {
    match std::fs::read_to_string(path) {
        Ok(text) => vmlist_lookup(&text, vmid).unwrap_or(true),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Whether the list text names `vmid`; `None` when it is not a `.vmlist`.
fn vmlist_lookup(text: &str, vmid: u32) -> Option<bool> {
    let v = serde_json::from_str::<Value>(text).ok()?;
    Some(v.get("ids")?.get(vmid.to_string()).is_some())
}

pub fn vmlist_text_has(text: &str, vmid: u32) -> bool {
    vmlist_lookup(text, vmid).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "#web server\narch: amd64\ncores: 2\ncpulimit: 1.5\nmemory: 2048\n\
        rootfs: local-lvm:vm-101-disk-0,size=8G\nswap: 512\ntags: prod;web\nprotection: 1\n\n\
        [pve:pending]\nmemory: 4096\n\n[before-upgrade]\n#taken before\n#the upgrade\ncores: 4\n\
        snaptime: 1700000000\n\n[after]\nparent: before-upgrade\nsnaptime: 1700000100\n";

    #[test]
    fn reads_allocation_rootfs_and_tags_from_the_main_section() {
        let f = ConfFacts::parse(CONF);
        let j = f.config_json(101);
        assert_eq!(j["cores"], 2);
        assert_eq!(j["cpulimit"], 1.5);
        assert_eq!(j["memory"], 2048);
        assert_eq!(j["swap"], 512);
        assert_eq!(j["rootfs_size"], "8G");
        assert_eq!(j["tags"], json!(["prod", "web"]));
        assert!(f.protected());
        assert_eq!(f.lock(), None);
    }

    #[test]
    fn lists_snapshot_sections_but_not_pending() {
        let f = ConfFacts::parse(CONF);
        assert_eq!(
            f.snapshots_json(),
            json!([
                {"name": "before-upgrade", "snaptime": 1700000000, "description": "taken before\nthe upgrade", "parent": null},
                {"name": "after", "snaptime": 1700000100, "description": "", "parent": "before-upgrade"},
            ])
        );
    }

    #[test]
    fn vmlist_lists_cluster_ids() {
        let t = r#"{"version": 3, "ids": {"101": {"node": "a", "type": "lxc", "version": 1}}}"#;
        assert!(vmlist_text_has(t, 101));
        assert!(!vmlist_text_has(t, 102));
        assert!(!vmlist_text_has("garbage", 101));
    }

    #[test]
    fn a_vmlist_that_cannot_be_read_or_parsed_never_says_an_id_is_free() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!vmlist_has(&dir.path().join("missing"), 201));
        // A directory where the list should be: unreadable, so no one can tell the id is free.
        assert!(vmlist_has(dir.path(), 201));
        let half = dir.path().join(".vmlist");
        std::fs::write(&half, r#"{"version": 3, "ids": {"201": {"node""#).unwrap();
        assert!(vmlist_has(&half, 201));
        std::fs::write(&half, r#"{"version": 3, "ids": {"201": {"node": "b"}}}"#).unwrap();
        assert!(vmlist_has(&half, 201));
        assert!(!vmlist_has(&half, 202));
    }
}
