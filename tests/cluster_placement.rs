//! Cluster status and placement advice end to end: three nodes on one shared fake pmxcfs, the real
//! daemon on each, each with its own cgroup tree, `/proc` and fake `pct`.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{stop, FakeCluster};
use common::{gotify_listener, stderr, FakeHost, HttpRequest};

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

/// Exactly one Gotify notice of placement advice, with the `pct migrate` line.
fn assert_one_advice_notified(requests: &std::sync::mpsc::Receiver<HttpRequest>) {
    let advice: Vec<String> = requests
        .try_iter()
        .map(|r| r.body)
        .filter(|b| b.contains("does not fit"))
        .collect();
    assert_eq!(advice.len(), 1, "{advice:?}");
    let body: serde_json::Value = serde_json::from_str(&advice[0]).unwrap();
    assert_eq!(body["title"], "lxc_autoscale: CT 101 does not fit on n1");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("\nrun: pct migrate 101 n2 -restart"),
        "{body}"
    );
}

/// The one recommendation event of the scenario, across all nodes' event logs.
fn assert_the_recommendation(events: &[serde_json::Value]) {
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
}

#[test]
fn a_scale_up_that_does_not_fit_on_n1_gives_exactly_one_recommendation_naming_n2() {
    let cluster = n1_is_full();
    let (url, requests) = gotify_listener(200);
    let extra = format!("poll_interval = 1\ngotify_url = \"{url}\"\ngotify_token = \"tok\"");
    for node in ["n1", "n2", "n3"] {
        cluster.write_local_config(node, &extra);
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
    assert_the_recommendation(&all(&cluster));
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
    // A new leader learns the advice from the old leader's status file: no repeat either.
    let restarted = daemons.pop().unwrap();
    stop(restarted);
    cluster.age_lease(121);
    wait_for("a new leader", || {
        cluster.lease_owner().is_some_and(|o| o != owner)
    });
    let next = cluster.lease_owner().unwrap();
    let before = cycles(&cluster, &next);
    wait_for("three cycles of the new leader", || {
        cycles(&cluster, &next) >= before + 3
    });
    assert_eq!(all(&cluster).len(), 1, "{:?}", all(&cluster));
    for d in daemons {
        stop(d);
    }
    // One notification, with the command, through every restart and take-over.
    assert_one_advice_notified(&requests);
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

/// `(node, stale, leader)` of each node in a `{"nodes": [...]}` view.
fn summary(view: &serde_json::Value) -> Vec<(String, bool, bool)> {
    view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["stale"].as_bool().unwrap(),
                n["leader"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn cluster_json(cluster: &FakeCluster, node: &str) -> serde_json::Value {
    let out = cluster.run(node, &["status", "--cluster", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_cluster_shows_a_node_whose_daemon_stopped_as_stale() {
    let cluster = FakeCluster::new(&["n1", "n2", "n3"], 16);
    let nodes = ["n1", "n2", "n3"];
    // 3 s cycles: a file is rewritten every 6 s at most and stale after 9 s.
    for node in nodes {
        cluster.write_local_config(node, "poll_interval = 3");
    }
    let mut daemons: Vec<std::process::Child> = nodes.iter().map(|n| cluster.spawn(n)).collect();
    wait_for("every status file", || {
        nodes.iter().all(|n| cluster.status_file(n).is_some())
    });
    let leader = |cluster: &FakeCluster, node: &str| cluster.lease_owner().as_deref() == Some(node);
    let view = cluster_json(&cluster, "n2");
    assert_eq!(
        summary(&view)
            .iter()
            .map(|s| (s.0.as_str(), s.1))
            .collect::<Vec<_>>(),
        [("n1", false), ("n2", false), ("n3", false)]
    );
    // Keep the leader running: this test is about staleness, not failover.
    let victim = nodes.iter().rposition(|n| !leader(&cluster, n)).unwrap();
    let gone = nodes[victim];
    stop(daemons.remove(victim));
    wait_for("the stopped node to go stale", || {
        summary(&cluster_json(&cluster, "n1"))
            .iter()
            .any(|(n, stale, _)| n == gone && *stale)
    });
    let view = cluster_json(&cluster, "n1");
    let got: Vec<(String, bool)> = summary(&view).into_iter().map(|s| (s.0, s.1)).collect();
    let expected: Vec<(String, bool)> = nodes.iter().map(|n| (n.to_string(), *n == gone)).collect();
    assert_eq!(got, expected);
    let text = cluster.run("n1", &["status", "--cluster"]);
    let text = String::from_utf8(text.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with(gone)).unwrap();
    assert!(line.split_whitespace().nth(1) == Some("stale"), "{text}");
    for d in daemons {
        stop(d);
    }
}

#[test]
fn get_cluster_status_over_the_unix_socket_returns_the_merged_view() {
    use std::io::{Read, Write};
    let cluster = FakeCluster::new(&["n1", "n2"], 16);
    let socket = cluster.node("n1").path("run/api.sock");
    cluster.write_local_config(
        "n1",
        &format!(
            "poll_interval = 1\nprometheus_textfile = \"{}\"\n[api]\nlisten = \"unix:{}\"\n",
            cluster.node("n1").path("var/lxc_autoscale.prom").display(),
            socket.display()
        ),
    );
    cluster.write_local_config("n2", "poll_interval = 1");
    let daemons = vec![cluster.spawn("n1"), cluster.spawn("n2")];
    wait_for("both status files, a leader and the socket", || {
        cluster.status_file("n1").is_some()
            && cluster.status_file("n2").is_some()
            && leaders(&cluster, &["n1", "n2"]).len() == 1
            && std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    write!(
        stream,
        "GET /cluster/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    let view: serde_json::Value = serde_json::from_str(body).unwrap();
    let leader = leaders(&cluster, &["n1", "n2"]).remove(0);
    assert_eq!(
        summary(&view),
        [
            ("n1".to_string(), false, leader == "n1"),
            ("n2".to_string(), false, leader == "n2"),
        ]
    );
    assert_eq!(summary(&view), summary(&cluster_json(&cluster, "n2")));
    assert_eq!(view["nodes"][0]["memory"]["capacity"], 65536.0);
    // GET /metrics carries the cluster families as the text file does, once a cycle of n1 has
    // seen both files.
    let get_metrics = || {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    };
    wait_for("n1's metrics to count both nodes", || {
        get_metrics().contains("\nlxc_autoscale_cluster_nodes 2\n")
    });
    let reply = get_metrics();
    assert!(
        reply.contains("\nlxc_autoscale_cluster_stale_nodes 0\n"),
        "{reply}"
    );
    let line = format!("\nlxc_autoscale_cluster_leader{{node=\"{leader}\"}} 1\n");
    assert!(reply.contains(&line), "{reply}");
    for d in daemons {
        stop(d);
    }
}

#[test]
fn place_dry_run_json_lists_the_plan_and_place_without_dry_run_is_refused() {
    let cluster = n1_is_full();
    for node in ["n2", "n3", "n1"] {
        let out = cluster.run(node, &["--once"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = cluster.run("n3", &["place", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan,
        serde_json::json!([{
            "vmid": 101,
            "target": "n2",
            "why": "CT 101 on n1 wants +776 MB (got +0 MB) that its node cannot give; n2 has 30720 MB free after reserves, covering 100% of it",
            "command": "pct migrate 101 n2 -restart",
        }])
    );
    let out = cluster.run("n3", &["place", "--dry-run"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("CT 101 -> n2: "), "{text}");
    assert!(
        text.ends_with("\n  pct migrate 101 n2 -restart\n"),
        "{text}"
    );
    // Excluding n2 sends it to n3 (1500 MB: 1024 held, 476 of the missing 776).
    cluster.write_local_config("n3", "placement_exclude_nodes = [\"n2\"]");
    let out = cluster.run("n3", &["place", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan[0]["target"], "n3", "{plan}");
    assert!(
        plan[0]["why"]
            .as_str()
            .unwrap()
            .ends_with("n3 has 1500 MB free after reserves, covering 61% of it"),
        "{plan}"
    );
    let out = cluster.run("n3", &["place"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("use --dry-run"), "{}", stderr(&out));
    // n2 led its own run before n1 filed anything, and `place` only shows: no advice was sent.
    assert_eq!(cluster.lease_owner().as_deref(), Some("n2"));
    for node in ["n1", "n2", "n3"] {
        assert_eq!(
            cluster.events(node, "recommendation"),
            Vec::<serde_json::Value>::new()
        );
    }
}

#[test]
fn the_prometheus_textfile_carries_the_cluster_figures() {
    let cluster = n1_is_full();
    for node in ["n2", "n3", "n1"] {
        if node == "n1" {
            let prom = cluster.node("n1").path("var/lxc_autoscale.prom");
            let line = format!("prometheus_textfile = \"{}\"", prom.display());
            cluster.write_local_config("n1", &line);
        }
        let out = cluster.run(node, &["--once"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let text = std::fs::read_to_string(cluster.node("n1").path("var/lxc_autoscale.prom")).unwrap();
    let cluster_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("lxc_autoscale_cluster_") && !l.contains("headroom_cores"))
        .collect();
    let mib: u64 = 1024 * 1024;
    assert_eq!(
        cluster_lines,
        [
            "lxc_autoscale_cluster_nodes 3".to_string(),
            "lxc_autoscale_cluster_stale_nodes 0".into(),
            "lxc_autoscale_cluster_stale{node=\"n1\"} 0".into(),
            "lxc_autoscale_cluster_stale{node=\"n2\"} 0".into(),
            "lxc_autoscale_cluster_stale{node=\"n3\"} 0".into(),
            "lxc_autoscale_cluster_leader{node=\"n1\"} 0".into(),
            "lxc_autoscale_cluster_leader{node=\"n2\"} 1".into(),
            "lxc_autoscale_cluster_leader{node=\"n3\"} 0".into(),
            format!(
                "lxc_autoscale_cluster_headroom_memory_bytes{{node=\"n1\"}} {}",
                300 * mib
            ),
            format!(
                "lxc_autoscale_cluster_headroom_memory_bytes{{node=\"n2\"}} {}",
                30720 * mib
            ),
            format!(
                "lxc_autoscale_cluster_headroom_memory_bytes{{node=\"n3\"}} {}",
                1500 * mib
            ),
            "lxc_autoscale_cluster_shortfalls{node=\"n1\"} 1".into(),
            "lxc_autoscale_cluster_shortfalls{node=\"n2\"} 0".into(),
            "lxc_autoscale_cluster_shortfalls{node=\"n3\"} 0".into(),
        ]
    );
    assert!(text.contains("# TYPE lxc_autoscale_cluster_headroom_cores gauge\n"));
}

/// n1 filed a shortfall for 101; then 101 moved to n2 (by hand, or HA) before n1's daemon cycled
/// again, so n1's status file is still fresh. Trusted as it is, it would advise "CT 101 on n1"
/// and `pct migrate 101 n2`, where 101 already runs; on the leader that advice would also be
/// notified and would block any advice for 101 for a day. `.vmlist` says where 101 is now.
#[test]
fn no_advice_is_planned_for_a_container_that_left_the_node_that_filed_it() {
    let cluster = n1_is_full();
    for node in ["n2", "n3", "n1"] {
        let out = cluster.run(node, &["--once"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let target = |cluster: &FakeCluster| {
        let out = cluster.run("n3", &["place", "--dry-run", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(target(&cluster)[0]["target"], "n2");
    cluster.migrate(101, "n1", "n2");
    let out = cluster.run("n3", &["place", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan, serde_json::json!([]), "{plan}");
}

/// In cluster mode the cluster-wide file is readable by pmxcfs' www-data group, so a Gotify URL
/// with a password is taken from the root-only secrets file, and refused in the cluster-wide one
/// without being quoted.
#[test]
fn check_config_takes_a_gotify_url_with_a_password_from_the_secrets_file_only() {
    let cluster = n1_is_full();
    let url = "https://admin:pw-7c1e@g.example";
    cluster.write_cluster_config("poll_interval = 60\n");
    cluster.write_secrets(&format!(
        "gotify_url = \"{url}\"\ngotify_token = \"tok-123\"\n"
    ));
    let out = cluster.run("n1", &["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\ngotify on (https://g.example, token set)\n"),
        "{text}"
    );
    assert!(
        !text.contains("pw-7c1e") && !text.contains("tok-123"),
        "{text}"
    );

    let cluster_config = cluster.write_cluster_config(&format!("gotify_url = \"{url}\"\n"));
    cluster.write_secrets("gotify_token = \"tok-123\"\n");
    let out = cluster.run("n1", &["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "invalid cluster config {}: key `gotify_url` (line 1, column 14): carries a user name or password, which the www-data group can read here; move gotify_url to <pve_root>/priv/lxc_autoscale/secrets.toml, which only root can read",
            cluster_config.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("pw-7c1e"), "{}", stderr(&out));
}
