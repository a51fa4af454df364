//! Cluster status and placement advice end to end: three nodes on one shared fake pmxcfs, the real
//! daemon on each, each with its own cgroup tree, `/proc` and fake `pct`.

mod common;

use common::cluster::FakeCluster;
use common::{stderr, FakeHost};

/// 2 cores at 95 %, 900 of 1024 MB used: wants 4 cores and 1800 MB (+776 MB).
const BUSY_CONF: &str = "arch: amd64\ncores: 2\nhostname: web\nmemory: 1024\nswap: 512\n";
const MIB_KIB: u64 = 1024;

fn make_busy(host: &FakeHost, vmid: u32) {
    host.set_memory(vmid, 900, 100);
    host.seed_previous_cycle(&[(vmid, 95.0, 2)]);
}

/// `MemAvailable` of `node` so that its memory headroom (after the default 2048 MB reserve) is
/// `headroom_mb`; 8 GiB in all.
fn set_memory_headroom(cluster: &FakeCluster, node: &str, headroom_mb: u64) {
    cluster
        .node(node)
        .set_meminfo(8192 * MIB_KIB, (2048 + headroom_mb) * MIB_KIB);
}

fn status_file(cluster: &FakeCluster, node: &str) -> serde_json::Value {
    let path = cluster
        .root()
        .join(format!("lxc_autoscale/status/{node}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// n1 holds one busy container and only 300 MB of memory headroom: below the 512 MB step, so
/// the +776 MB it wants is not granted at all; its cores still grow. n2 has 30 GB of headroom,
/// n3 1500 MB.
fn n1_is_full() -> FakeCluster {
    let cluster = FakeCluster::new(&["n1", "n2", "n3"], 16);
    cluster.add_container("n1", 101, BUSY_CONF);
    make_busy(cluster.node("n1"), 101);
    set_memory_headroom(&cluster, "n1", 300);
    set_memory_headroom(&cluster, "n3", 1500);
    for node in ["n1", "n2", "n3"] {
        cluster.node(node).seed_previous_cycle(&[]);
        cluster.write_local_config(node, "");
    }
    make_busy(cluster.node("n1"), 101);
    cluster
}

#[test]
fn a_scale_up_that_does_not_fit_is_granted_in_part_and_filed_in_the_status_file() {
    let cluster = n1_is_full();
    let out = cluster.run("n1", &["--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cluster.node("n1").pct_calls(), ["set 101 -cores 4"]);
    let status = status_file(&cluster, "n1");
    assert_eq!(status["node"], "n1");
    assert_eq!(status["quorum"], true);
    assert_eq!(status["managed"], 1);
    assert_eq!(status["skipped"], 0);
    assert_eq!(status["memory"]["capacity"], 8192.0);
    assert_eq!(status["memory"]["reserve"], 2048.0);
    assert_eq!(status["memory"]["headroom"], 300.0);
    assert_eq!(status["memory"]["allocated"], 1024.0);
    assert_eq!(status["cpu"]["capacity"], 16.0);
    let short = &status["shortfalls"];
    assert_eq!(short.as_array().unwrap().len(), 1, "{status}");
    assert_eq!(short[0]["vmid"], 101);
    assert_eq!(short[0]["resource"], "memory");
    assert_eq!(short[0]["wanted"], 776);
    assert_eq!(short[0]["granted"], 0);
    assert_eq!(short[0]["since"], status["last_cycle"]);
    let actions = status["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{status}");
    assert_eq!(actions[0]["vmid"], 101);
    assert_eq!(actions[0]["at"], status["last_cycle"]);
}

#[test]
fn a_standalone_node_writes_no_status_file() {
    let cluster = n1_is_full();
    cluster.write_local_config("n1", "cluster = \"off\"\npve_lxc_dir = \"/nonexistent\"");
    let out = cluster.run("n1", &["--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!cluster.root().join("lxc_autoscale/status").exists());
}
