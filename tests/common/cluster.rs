//! A fake Proxmox cluster on one machine: one temp dir as the shared pmxcfs (`nodes/<n>/lxc/`,
//! `.members`, `.vmlist`, `lxc_autoscale/`, `priv/lock/`) and one `FakeHost` per node for its
//! cgroup tree, `/proc` files, state, log and fake `pct`.
//!
//! Each node's `pve/lxc` is a link to its directory in the shared tree, as `/etc/pve/lxc` is on
//! Proxmox, so the fake `pct` and `FakeHost::add_container` write where pmxcfs would. The local
//! configs do not set `pve_lxc_dir`: a node finds its containers only through `pve_root`.
//!
//! pmxcfs shows each node its own `nodename` in `.members`; one shared file cannot, so it names the
//! first node, and the other nodes' local configs set `node_name`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::FakeHost;

/// Cuts follow the latest reading in the fixtures' configs (see `FakeHost::write_config`).
const MODEL_KEYS: &str = "scale_down_window = 0\nscale_down_cooldown = 0\n";

/// Inserted into each node's fake `pct` after its gates: like Proxmox, `pct set` refuses a conf
/// that is gone (the container migrated away) or that holds a `lock:` line in its main section.
const PCT_REFUSALS: &str = r#"if [ ! -f "@ROOT@/pve/lxc/$2.conf" ]; then
  echo "Configuration file 'nodes/@NODE@/lxc/$2.conf' does not exist" >&2
  exit 2
fi
lock=$(awk '/^\[/{exit} /^lock: /{print substr($0, 7); exit}' "@ROOT@/pve/lxc/$2.conf")
if [ -n "$lock" ]; then
  echo "CT $2 is locked ($lock)" >&2
  exit 25
fi
"#;

pub struct FakeCluster {
    /// The shared pmxcfs root (`pve_root`).
    pub pmxcfs: tempfile::TempDir,
    pub nodes: BTreeMap<String, FakeHost>,
    first: String,
}

impl FakeCluster {
    /// A quorate cluster of `names` (online), each node with `host_cpus` CPUs.
    pub fn new(names: &[&str], host_cpus: u32) -> FakeCluster {
        let pmxcfs = tempfile::tempdir().unwrap();
        let root = pmxcfs.path();
        for dir in ["lxc_autoscale", "priv/lock"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let mut nodes = BTreeMap::new();
        for name in names {
            let node_dir = root.join("nodes").join(name).join("lxc");
            std::fs::create_dir_all(&node_dir).unwrap();
            let host = FakeHost::new(host_cpus);
            std::fs::remove_dir(&host.files.pve_lxc_dir).unwrap();
            std::os::unix::fs::symlink(&node_dir, &host.files.pve_lxc_dir).unwrap();
            add_pct_refusals(&host, name);
            nodes.insert((*name).to_string(), host);
        }
        let cluster = FakeCluster {
            pmxcfs,
            nodes,
            first: names[0].to_string(),
        };
        cluster.write_members();
        cluster.write_vmlist();
        cluster
    }

    pub fn root(&self) -> &Path {
        self.pmxcfs.path()
    }

    pub fn node(&self, name: &str) -> &FakeHost {
        &self.nodes[name]
    }

    /// `.members` as pmxcfs writes it on the first node, quorate.
    pub fn write_members(&self) {
        self.write_members_quorate(true);
    }

    /// `.members` with `quorate` set as given (pmxcfs is read-only without quorum).
    pub fn write_members_quorate(&self, quorate: bool) {
        let list: Vec<String> = self
            .nodes
            .keys()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "  \"{n}\": {{ \"id\": {}, \"online\": 1, \"ip\": \"10.0.0.{}\"}}",
                    i + 1,
                    i + 1
                )
            })
            .collect();
        let text = format!(
            "{{\n\"nodename\": \"{}\",\n\"version\": 5,\n\"cluster\": {{ \"name\": \"lab\", \"version\": 3, \"nodes\": {}, \"quorate\": {} }},\n\"nodelist\": {{\n{}\n  }}\n}}\n",
            self.first,
            self.nodes.len(),
            u8::from(quorate),
            list.join(",\n")
        );
        std::fs::write(self.root().join(".members"), text).unwrap();
    }

    /// `.vmlist` from the confs now in each node's directory.
    pub fn write_vmlist(&self) {
        let mut ids = Vec::new();
        for name in self.nodes.keys() {
            let dir = self.root().join("nodes").join(name).join("lxc");
            for entry in std::fs::read_dir(dir).unwrap() {
                let file = entry.unwrap().file_name().to_string_lossy().into_owned();
                if let Some(vmid) = file.strip_suffix(".conf") {
                    ids.push(format!(
                        "\"{vmid}\": {{ \"node\": \"{name}\", \"type\": \"lxc\", \"version\": 1 }}"
                    ));
                }
            }
        }
        let text = format!(
            "{{\n\"version\": 1,\n\"ids\": {{\n{}}}\n}}\n",
            ids.join(",\n")
        );
        std::fs::write(self.root().join(".vmlist"), text).unwrap();
    }

    /// A container running on `node`: its conf in `nodes/<node>/lxc/` and a cgroup on that node.
    pub fn add_container(&self, node: &str, vmid: u32, conf: &str) {
        self.node(node).add_container(vmid, conf);
        self.write_vmlist();
    }

    /// Moves `vmid` from `from` to `to` as a finished restart migration leaves it: the conf in
    /// the target's directory, `.vmlist` regenerated, the cgroup gone from `from` and new on `to`
    /// with zeroed counters.
    pub fn migrate(&self, vmid: u32, from: &str, to: &str) {
        std::fs::rename(self.conf_path(from, vmid), self.conf_path(to, vmid)).unwrap();
        self.write_vmlist();
        self.node(from).files.remove_cgroup(vmid).unwrap();
        let target = self.node(to);
        target.files.create_cgroup(vmid).unwrap();
        target.set_cpu_usage(vmid, 0);
        target.set_memory(vmid, 0, 0);
    }

    /// The start of a migration of `vmid` off `node`: its conf gets `lock: migrate`, as
    /// `pct migrate` sets it before anything moves.
    pub fn begin_migration(&self, vmid: u32, node: &str) {
        let path = self.conf_path(node, vmid);
        let conf = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("lock: migrate\n{conf}")).unwrap();
    }

    /// The end of a migration that `begin_migration` started: the lock is gone and the container
    /// runs on `to` (see `migrate`).
    pub fn finish_migration(&self, vmid: u32, from: &str, to: &str) {
        let path = self.conf_path(from, vmid);
        let conf = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, conf.replacen("lock: migrate\n", "", 1)).unwrap();
        self.migrate(vmid, from, to);
    }

    /// `vmid` destroyed on `node` (`pct destroy`): its cgroup and conf gone, `.vmlist` without it.
    pub fn destroy(&self, vmid: u32, node: &str) {
        self.node(node).files.remove_cgroup(vmid).unwrap();
        std::fs::remove_file(self.conf_path(node, vmid)).unwrap();
        self.write_vmlist();
    }

    /// Every file and directory under the shared root with its content (files) and inode and
    /// mtime: two snapshots differ exactly where something was written.
    pub fn tree_snapshot(&self) -> BTreeMap<PathBuf, (u64, i64, i64, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, i64, i64, Vec<u8>)>) {
            use std::os::unix::fs::MetadataExt;
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let content = if meta.is_file() {
                    std::fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                out.insert(
                    path.clone(),
                    (meta.ino(), meta.mtime(), meta.mtime_nsec(), content),
                );
                if meta.is_dir() {
                    walk(&path, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.root(), &mut out);
        out
    }

    /// `vmid`'s record in `<pve_root>/lxc_autoscale/ct/`, as JSON; `None` when there is none.
    pub fn ct_record(&self, vmid: u32) -> Option<serde_json::Value> {
        let path = self.root().join(format!("lxc_autoscale/ct/{vmid}.json"));
        let text = std::fs::read_to_string(path).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// `<node>.conf` path in the shared tree.
    pub fn conf_path(&self, node: &str, vmid: u32) -> PathBuf {
        self.root()
            .join("nodes")
            .join(node)
            .join("lxc")
            .join(format!("{vmid}.conf"))
    }

    /// The node's local config: its host paths, `pve_root`, `node_name` (except on the node
    /// `.members` names, or when `extra` sets it), and `extra` TOML.
    pub fn write_local_config(&self, node: &str, extra: &str) -> PathBuf {
        let host = self.node(node);
        // As in `FakeHost::write_config`: cuts follow the latest reading in these tests. With a
        // cluster-wide config these keys live there (`write_cluster_config`).
        let model = if extra.contains("scale_down_") || self.cluster_config_path().exists() {
            ""
        } else {
            MODEL_KEYS
        };
        let r = host.root().display();
        let name_line = if node == self.first || extra.contains("node_name") {
            String::new()
        } else {
            format!("node_name = \"{node}\"\n")
        };
        let text = format!(
            "pve_root = \"{}\"\n{name_line}cgroup_root = \"{r}/cgroup/lxc\"\nproc_root = \"{r}/proc\"\n\
             pct_path = \"{r}/pct\"\nstate_file = \"{r}/var/state.json\"\nbackup_dir = \"{r}/var/backups\"\n\
             log_file = \"{r}/var/log/lxc_autoscale.log\"\nlock_file = \"{r}/var/lxc_autoscale.lock\"\n\
             metrics_file = \"{r}/var/metrics.jsonl\"\n{model}{extra}\n",
            self.root().display()
        );
        // As in `FakeHost::write_config`: the API socket goes into the node's fake host, unless
        // the test configures the API itself (three daemons on the default socket would take it
        // from each other, and one that loses the race refuses to start).
        let text = if extra.contains("[api]") {
            text
        } else {
            format!("{text}[api]\nlisten = \"unix:{r}/run/api.sock\"\n")
        };
        let path = host.path("lxc_autoscale.conf");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn cluster_config_path(&self) -> PathBuf {
        self.root().join("lxc_autoscale/lxc_autoscale.conf")
    }

    /// The cluster-wide config, `<pve_root>/lxc_autoscale/lxc_autoscale.conf`. The model keys of
    /// the local configs move here (a local config may not hold cluster-wide keys).
    pub fn write_cluster_config(&self, text: &str) -> PathBuf {
        let path = self.cluster_config_path();
        // Before the first section (so they stay top-level), after the test's own top-level
        // lines (so the line numbers a test expects do not move).
        let text = if text.contains("scale_down_") {
            text.to_string()
        } else {
            match text.find("\n[") {
                Some(i) => format!("{}\n{MODEL_KEYS}{}", &text[..i], &text[i..]),
                None if text.starts_with('[') => format!("{MODEL_KEYS}{text}"),
                None => format!("{text}\n{MODEL_KEYS}"),
            }
        };
        std::fs::write(&path, text).unwrap();
        for host in self.nodes.values() {
            let local = host.path("lxc_autoscale.conf");
            if let Ok(old) = std::fs::read_to_string(&local) {
                std::fs::write(&local, old.replace(MODEL_KEYS, "")).unwrap();
            }
        }
        path
    }

    /// `<pve_root>/priv/lxc_autoscale/secrets.toml`, mode 0600 as pmxcfs shows `priv/` files.
    pub fn write_secrets(&self, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.root().join("priv/lxc_autoscale/secrets.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// The daemon on `node`, running until stopped; stderr is piped, stdout dropped.
    pub fn spawn(&self, node: &str) -> std::process::Child {
        let config = self.node(node).path("lxc_autoscale.conf");
        self.node(node)
            .command(&["--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs the real binary on `node` with its local config and `args`.
    pub fn run(&self, node: &str, args: &[&str]) -> Output {
        let config = self.node(node).path("lxc_autoscale.conf");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.to_str().unwrap()]);
        self.node(node).run(&all)
    }
}

/// Makes `host`'s fake `pct` refuse what Proxmox's refuses (`PCT_REFUSALS`).
fn add_pct_refusals(host: &FakeHost, node: &str) {
    let path = host.path("pct");
    let script = std::fs::read_to_string(&path).unwrap();
    let gate = "[ \"$1\" = set ] || exit 2\n";
    assert!(script.contains(gate), "the fake pct changed: {script}");
    let refusals = PCT_REFUSALS
        .replace("@ROOT@", &host.root().display().to_string())
        .replace("@NODE@", node);
    std::fs::write(
        &path,
        script.replacen(gate, &format!("{gate}{refusals}"), 1),
    )
    .unwrap();
}

/// Helpers of the placement scenarios (`tests/cluster_placement.rs`).
impl FakeCluster {
    /// `<pve_root>/lxc_autoscale/status/<node>.json`, `None` until it exists.
    pub fn status_file(&self, node: &str) -> Option<serde_json::Value> {
        let path = self
            .root()
            .join(format!("lxc_autoscale/status/{node}.json"));
        let text = std::fs::read_to_string(path).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// The node named in the placement lease's `owner` file, `None` while there is no lease.
    pub fn lease_owner(&self) -> Option<String> {
        let path = self.root().join("priv/lock/lxc_autoscale-leader/owner");
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(v["node"].as_str()?.to_string())
    }

    /// Makes the lease look unrefreshed for `secs` seconds, as a crashed leader leaves it.
    pub fn age_lease(&self, secs: i64) {
        let path = self.root().join("priv/lock/lxc_autoscale-leader/owner");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        v["refreshed"] = serde_json::json!(now - secs);
        std::fs::write(&path, v.to_string()).unwrap();
    }

    /// The `node`'s event log lines with `action` = `what`.
    pub fn events(&self, node: &str, what: &str) -> Vec<serde_json::Value> {
        let path = self.node(node).path("var/log/lxc_autoscale.json");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["action"] == what)
            .collect()
    }
}

/// Stops a daemon with SIGTERM and waits for it; it must exit cleanly.
pub fn stop(mut daemon: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
