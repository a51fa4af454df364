//! Cluster mode end to end: three nodes on one shared fake pmxcfs, the real daemon (`--once`) on
//! each, each with its own cgroup tree, `/proc` and fake `pct`.

mod common;

use common::cluster::FakeCluster;
use common::{stderr, stdout, FakeHost};

/// A container at 95 % of 2 cores using 900 of 1024 MB: one cycle makes it 4 cores, 1800 MB
/// (the same rule as the standalone `scales_up_cores_and_memory_in_one_pct_call…` test).
const BUSY_CONF: &str = "arch: amd64\ncores: 2\nhostname: web\nmemory: 1024\nswap: 512\n";

fn make_busy(host: &FakeHost, vmids: &[u32]) {
    for &vmid in vmids {
        host.set_memory(vmid, 900, 100);
    }
    let loads: Vec<(u32, f64, u32)> = vmids.iter().map(|&v| (v, 95.0, 2)).collect();
    host.seed_previous_cycle(&loads);
}

fn once_ok(cluster: &FakeCluster, node: &str) -> std::process::Output {
    let out = cluster.run(node, &["--once"]);
    assert!(out.status.success(), "{node}: {}", stderr(&out));
    out
}

/// n1 owns 101, n2 owns 201, n3 owns 301. n1's cgroup tree also holds 202, whose conf is in n2's
/// directory (a container whose ownership moved): n1 must leave it alone.
fn three_busy_nodes() -> FakeCluster {
    let cluster = FakeCluster::new(&["n1", "n2", "n3"], 16);
    cluster.add_container("n1", 101, BUSY_CONF);
    cluster.add_container("n2", 201, BUSY_CONF);
    cluster.add_container("n3", 301, BUSY_CONF);
    std::fs::write(cluster.conf_path("n2", 202), BUSY_CONF).unwrap();
    cluster.write_vmlist();
    let n1 = cluster.node("n1");
    n1.files.create_cgroup(202).unwrap();
    n1.set_cpu_usage(202, 0);
    make_busy(n1, &[101, 202]);
    make_busy(cluster.node("n2"), &[201]);
    make_busy(cluster.node("n3"), &[301]);
    for node in ["n1", "n2", "n3"] {
        cluster.write_local_config(node, "");
    }
    cluster
}

#[test]
fn each_node_scales_exactly_the_containers_in_its_own_node_directory() {
    let cluster = three_busy_nodes();
    for node in ["n1", "n2", "n3"] {
        once_ok(&cluster, node);
    }
    assert_eq!(
        cluster.node("n1").pct_calls(),
        ["set 101 -cores 4 -memory 1800"]
    );
    assert_eq!(
        cluster.node("n2").pct_calls(),
        ["set 201 -cores 4 -memory 1800"]
    );
    assert_eq!(
        cluster.node("n3").pct_calls(),
        ["set 301 -cores 4 -memory 1800"]
    );
    let shared =
        |node: &str, vmid: u32| std::fs::read_to_string(cluster.conf_path(node, vmid)).unwrap();
    let conf = shared("n1", 101);
    assert!(
        conf.contains("cores: 4\n") && conf.contains("memory: 1800\n"),
        "{conf}"
    );
    // 202 runs on n1's cgroups but its conf is n2's: nobody changed it.
    assert_eq!(shared("n2", 202), BUSY_CONF);
}

#[test]
fn check_config_names_the_node_and_its_directory() {
    let cluster = three_busy_nodes();
    for node in ["n1", "n3"] {
        let out = cluster.run(node, &["check-config"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let dir = cluster.root().join("nodes").join(node).join("lxc");
        let expected = format!(
            "cluster mode: node {node}, scaling the containers in {}\n",
            dir.display()
        );
        assert!(stdout(&out).contains(&expected), "{}", stdout(&out));
    }
}

#[test]
fn a_node_name_missing_from_members_refuses_to_start() {
    let cluster = three_busy_nodes();
    cluster.write_local_config("n2", "node_name = \"n9\"");
    let out = cluster.run("n2", &["--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "key `node_name`: node `n9` is not a member of the cluster (.members lists n1, n2, n3)"
        ),
        "{}",
        stderr(&out)
    );
    assert!(cluster.node("n2").pct_calls().is_empty());
}

#[test]
fn cluster_off_makes_a_member_use_pve_lxc_dir_as_a_standalone_node() {
    let cluster = three_busy_nodes();
    let n1 = cluster.node("n1");
    // Standalone: `pve_lxc_dir` (the node's `pve/lxc` link) holds the containers, as today.
    cluster.write_local_config(
        "n1",
        &format!(
            "cluster = \"off\"\npve_lxc_dir = \"{}\"",
            n1.path("pve/lxc").display()
        ),
    );
    let out = cluster.run("n1", &["check-config"]);
    assert!(
        stdout(&out).contains(&format!(
            "standalone: scaling the containers in {}/pve/lxc\n",
            n1.root().display()
        )),
        "{}",
        stdout(&out)
    );
    once_ok(&cluster, "n1");
    assert_eq!(n1.pct_calls(), ["set 101 -cores 4 -memory 1800"]);
}

#[test]
fn a_host_without_members_is_standalone_even_with_pve_root_set() {
    let host = FakeHost::new(16);
    host.add_container(101, BUSY_CONF);
    make_busy(&host, &[101]);
    let empty_root = host.path("no-pmxcfs");
    std::fs::create_dir_all(&empty_root).unwrap();
    let cfg = host.write_config(&format!("pve_root = \"{}\"", empty_root.display()));
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(host.pct_calls(), ["set 101 -cores 4 -memory 1800"]);
}
