//! Cluster status and placement advice end to end: three nodes on one shared fake pmxcfs, the real
//! daemon on each, each with its own cgroup tree, `/proc` and fake `pct`.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{stop, FakeCluster};
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

/// Polls `cond` until it holds; panics with `what` after a generous deadline (not a timing
/// assertion: only a hang fails).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn cycles(cluster: &FakeCluster, node: &str) -> usize {
    cluster.node(node).log_text().matches("cycle done").count()
}

/// The fresh status files that say `leader`.
fn leaders(cluster: &FakeCluster, nodes: &[&str]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| cluster.status_file(n).is_some_and(|s| s["leader"] == true))
        .map(|n| (*n).to_string())
        .collect()
}

#[test]
fn a_scale_up_that_does_not_fit_on_n1_gives_exactly_one_recommendation_naming_n2() {
    let cluster = n1_is_full();
    for node in ["n1", "n2", "n3"] {
        cluster.write_local_config(node, "poll_interval = 1");
    }
    // n2 and n3 report first, so the leader knows every node when n1 files its request.
    let mut daemons = vec![cluster.spawn("n2"), cluster.spawn("n3")];
    wait_for("n2 and n3 status files", || {
        cluster.status_file("n2").is_some() && cluster.status_file("n3").is_some()
    });
    daemons.push(cluster.spawn("n1"));
    let all = |cluster: &FakeCluster| -> Vec<serde_json::Value> {
        ["n1", "n2", "n3"]
            .iter()
            .flat_map(|n| cluster.events(n, "recommendation"))
            .collect()
    };
    wait_for("a recommendation", || !all(&cluster).is_empty());
    // Three more cycles on every node: nothing is repeated.
    let seen: Vec<usize> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| cycles(&cluster, n))
        .collect();
    wait_for("three more cycles", || {
        ["n1", "n2", "n3"]
            .iter()
            .zip(&seen)
            .all(|(n, s)| cycles(&cluster, n) >= s + 3)
    });
    let events = all(&cluster);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["container_id"], 101);
    assert_eq!(e["vmid"], 101);
    assert_eq!(e["target"], "n2");
    assert_eq!(e["command"], "pct migrate 101 n2 -restart");
    assert_eq!(
        e["why"],
        "CT 101 on n1 wants +776 MB (got +0 MB) that its node cannot give; n2 has 30720 MB free after reserves, covering 100% of it"
    );
    let owner = cluster.lease_owner().unwrap();
    assert_eq!(
        cluster.events(&owner, "recommendation").len(),
        1,
        "the leader made it"
    );
    // A restarted leader keeps its lease and remembers the advice in its state file.
    let index = ["n2", "n3", "n1"].iter().position(|n| *n == owner).unwrap();
    stop(daemons.remove(index));
    let before = cycles(&cluster, &owner);
    daemons.push(cluster.spawn(&owner));
    wait_for("three cycles after the restart", || {
        cycles(&cluster, &owner) >= before + 3
    });
    assert_eq!(cluster.lease_owner().as_deref(), Some(owner.as_str()));
    assert_eq!(all(&cluster).len(), 1, "{:?}", all(&cluster));
    for d in daemons {
        stop(d);
    }
    // Not a migration: nobody ran `pct migrate`.
    for node in ["n1", "n2", "n3"] {
        assert!(
            cluster
                .node(node)
                .pct_calls()
                .iter()
                .all(|c| !c.starts_with("migrate")),
            "{node}"
        );
    }
}

#[test]
fn when_the_leader_stops_and_its_lease_expires_another_node_takes_over() {
    let cluster = FakeCluster::new(&["n1", "n2", "n3"], 16);
    let nodes = ["n1", "n2", "n3"];
    for node in nodes {
        cluster.write_local_config(node, "poll_interval = 1");
    }
    let mut daemons: std::collections::BTreeMap<&str, std::process::Child> =
        nodes.iter().map(|n| (*n, cluster.spawn(n))).collect();
    wait_for("a leader all nodes agree on", || {
        nodes.iter().all(|n| cluster.status_file(n).is_some())
            && leaders(&cluster, &nodes).len() == 1
            && cluster
                .lease_owner()
                .is_some_and(|o| leaders(&cluster, &nodes) == [o])
    });
    let first = cluster.lease_owner().unwrap();
    // The others keep seeing a live lease: still exactly one leader after more cycles.
    let rest: Vec<&str> = nodes.iter().copied().filter(|n| *n != first).collect();
    let seen: Vec<usize> = rest.iter().map(|n| cycles(&cluster, n)).collect();
    wait_for("two more cycles", || {
        rest.iter()
            .zip(&seen)
            .all(|(n, s)| cycles(&cluster, n) >= s + 2)
    });
    assert_eq!(cluster.lease_owner().as_deref(), Some(first.as_str()));
    assert_eq!(leaders(&cluster, &nodes), [first.as_str()]);

    stop(daemons.remove(first.as_str()).unwrap());
    // A stopped leader's lease stays until it expires: nobody takes it over before.
    let seen: Vec<usize> = rest.iter().map(|n| cycles(&cluster, n)).collect();
    wait_for("two more cycles", || {
        rest.iter()
            .zip(&seen)
            .all(|(n, s)| cycles(&cluster, n) >= s + 2)
    });
    assert_eq!(cluster.lease_owner().as_deref(), Some(first.as_str()));
    cluster.age_lease(121);
    wait_for("a new leader", || {
        cluster.lease_owner().is_some_and(|o| o != first) && leaders(&cluster, &rest).len() == 1
    });
    let second = cluster.lease_owner().unwrap();
    assert!(rest.contains(&second.as_str()), "{second}");
    assert_eq!(leaders(&cluster, &rest), [second.as_str()]);
    let lock_dir: Vec<String> = std::fs::read_dir(cluster.root().join("priv/lock"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(lock_dir, ["lxc_autoscale-leader"]);
    let log = cluster.node(&second).log_text();
    assert_eq!(
        log.matches("this node is the placement leader").count(),
        1,
        "{log}"
    );
    for (_, d) in daemons {
        stop(d);
    }
}
