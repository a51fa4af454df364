//! Metrics history, Prometheus textfile and `replay`, through the real binary on a fake host.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{stderr, stdout, FakeHost};

/// Cycle timestamps pinned so that replay minutes do not depend on how fast the test ran.
const T0_USEC: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
const STEP_USEC: i64 = 300_000_000;

/// Loads per cycle: (vmid, demand cores, used MB).
const LOADS: [[(u32, f64, u64); 2]; 5] = [
    [(101, 1.9, 900), (102, 0.4, 1000)],
    [(101, 2.5, 1100), (102, 0.4, 1000)],
    [(101, 2.6, 1200), (102, 0.3, 900)],
    [(101, 0.5, 1200), (102, 0.3, 900)],
    [(101, 0.4, 600), (102, 0.2, 800)],
];

fn setup(extra: &str) -> (FakeHost, PathBuf) {
    let host = FakeHost::new(8);
    host.add_container(101, "cores: 2\nhostname: web\nmemory: 1024\nswap: 512\n");
    host.add_container(102, "cores: 4\nhostname: db\nmemory: 4096\n");
    let cfg = host.write_config(&format!("{extra}\n[tiers.db]\ncontainers = [102]\n"));
    (host, cfg)
}

/// One daemon cycle (`--once`) at the given loads, from a seeded previous sample.
fn cycle(host: &FakeHost, cfg: &Path, loads: &[(u32, f64, u64)]) {
    let seeds: Vec<(u32, f64, u32)> = loads.iter().map(|&(v, d, _)| (v, d * 100.0, 1)).collect();
    host.seed_previous_cycle(&seeds);
    host.set_host_busy_cores(2.0);
    for &(vmid, _, used) in loads {
        host.set_memory(vmid, used, 100);
    }
    let out = host.run(&["--once", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "daemon failed: {}", stderr(&out));
}

/// The history with each cycle's timestamp replaced by `T0 + k × 5 min`.
fn pinned(text: &str) -> String {
    let mut order: BTreeMap<i64, i64> = BTreeMap::new();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for l in &lines {
        order.insert(l["ts_usec"].as_i64().unwrap(), 0);
    }
    for (k, v) in order.values_mut().enumerate() {
        *v = T0_USEC + k as i64 * STEP_USEC;
    }
    let mut out = String::new();
    for l in &mut lines {
        let ts = order[&l["ts_usec"].as_i64().unwrap()];
        l["ts_usec"] = ts.into();
        out.push_str(&l.to_string());
        out.push('\n');
    }
    out
}

fn replay_json(host: &FakeHost, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["replay", "--json"];
    all.extend_from_slice(args);
    let out = host.run(&all);
    assert!(out.status.success(), "replay failed: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn recorded_history() -> (FakeHost, PathBuf, PathBuf) {
    let (host, cfg) = setup("");
    for loads in &LOADS {
        cycle(&host, &cfg, loads);
    }
    let text = std::fs::read_to_string(host.path("var/metrics.jsonl")).unwrap();
    let path = host.path("history.jsonl");
    std::fs::write(&path, pinned(&text)).unwrap();
    (host, cfg, path)
}

#[test]
fn daemon_cycles_append_one_host_line_and_one_line_per_container() {
    let (host, cfg) = setup("");
    let dir = host.cgroup(101);
    std::fs::write(dir.join("pids.current"), "17\n").unwrap();
    std::fs::write(dir.join("memory.swap.current"), "1048576\n").unwrap();
    std::fs::write(
        dir.join("cpu.pressure"),
        "some avg10=3.50 avg60=1.00 avg300=0.10 total=99\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    )
    .unwrap();
    cycle(&host, &cfg, &LOADS[0]);
    cycle(&host, &cfg, &LOADS[1]);

    let text = std::fs::read_to_string(host.path("var/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "host",
            "container",
            "container",
            "host",
            "container",
            "container"
        ]
    );
    let host0 = &lines[0];
    assert_eq!(host0["cpus"], 8);
    assert_eq!(host0["mem_total_kib"], 64 * 1024 * 1024);
    assert!(
        (host0["busy_cores"].as_f64().unwrap() - 2.0).abs() < 1e-3,
        "{host0}"
    );
    assert!(host0["cycle_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(host0["changes"], 2);
    let ct = &lines[1];
    assert_eq!(ct["vmid"], 101);
    assert_eq!(ct["name"], "web");
    assert_eq!(ct["managed"], "yes");
    assert_eq!(ct["cores"], 2);
    assert_eq!(ct["memory_mb"], 1024);
    assert_eq!(ct["swap_mb"], 512);
    assert_eq!(ct["pids"], 17);
    assert_eq!(ct["swap_used_bytes"], 1_048_576);
    assert_eq!(ct["psi_cpu_some_avg10"], 3.5);
    assert_eq!(ct["memory_used_mb"], 900.0);
    assert!(
        (ct["cpu_percent"].as_f64().unwrap() - 95.0).abs() < 0.1,
        "{ct}"
    );
    assert!(ct.get("io_read_bytes_per_sec").is_none(), "{ct}");
    assert_eq!(lines[2]["tier"], "db");
    // The second cycle sees the allocation the first one applied.
    assert_eq!(lines[4]["cores"], 4);
    assert_eq!(lines[0]["ts_usec"], lines[1]["ts_usec"]);
    assert_ne!(lines[0]["ts_usec"], lines[3]["ts_usec"]);
}

#[test]
fn replay_of_a_recorded_history_is_deterministic_and_matches_the_golden_summary() {
    let (host, cfg, history) = recorded_history();
    let pct_calls = host.pct_calls();
    let args = [
        "--metrics",
        history.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ];
    let first = replay_json(&host, &args);
    let second = replay_json(&host, &args);
    assert_eq!(first, second);

    let summary = &first[0]["summary"];
    // Replaying with the config that recorded it makes the decisions the daemon made.
    assert_eq!(
        summary["total"]["changes"].as_u64().unwrap() as usize,
        pct_calls.len(),
        "{pct_calls:?}"
    );
    assert_eq!(summary["cycles"], 5);
    assert_eq!(summary["notes"], serde_json::json!([]));

    // Worked by hand: 101 starts at 2 cores / 1024 MB; cycle 0 is over both upper thresholds
    // (95 % cpu, 88 % memory) for one 5-minute sample, grows to 4 cores / 1800 MB, and after
    // the load drops shrinks to 1 core in cycle 3. 102 (tier db) shrinks to 1 core in cycle 0
    // and to 2048 MB in cycle 4.
    let exact = |v: &serde_json::Value, key: &str| v[key].clone();
    let ct = |i: usize| &summary["containers"][i];
    for (i, vmid, changes, over, peak_cores, peak_mb, end_cores, end_mb) in [
        (0, 101, 2, 5.0, 4, 1800, 1, 1800),
        (1, 102, 2, 0.0, 4, 4096, 1, 2048),
    ] {
        let c = ct(i);
        assert_eq!(exact(c, "vmid"), vmid);
        assert_eq!(exact(c, "changes"), changes, "{c}");
        assert_eq!(exact(c, "overload_min"), over, "{c}");
        assert_eq!(exact(c, "cpu_overload_min"), over, "{c}");
        assert_eq!(exact(c, "memory_overload_min"), over, "{c}");
        assert_eq!(exact(c, "peak_cores"), peak_cores, "{c}");
        assert_eq!(exact(c, "peak_memory_mb"), peak_mb, "{c}");
        assert_eq!(exact(c, "end_cores"), end_cores, "{c}");
        assert_eq!(exact(c, "end_memory_mb"), end_mb, "{c}");
        assert_eq!(exact(c, "start_from"), "history", "{c}");
    }
    // Memory slack is exact (used MB is recorded exactly); cpu % carries the few milliseconds by
    // which the real run's window exceeded 300 s, so cpu slack is checked to 0.1 %.
    let close = |v: &serde_json::Value, want: f64| {
        let got = v.as_f64().unwrap();
        assert!((got - want).abs() < 1e-3, "{got} != {want}");
    };
    // (0.05 + 0.375 + 0.35 + 0.875 + 0.6) / 5
    close(&ct(0)["cpu_slack"], 0.45);
    // (124/1024 + 700/1800 + 600/1800 + 600/1800 + 1200/1800) / 5
    assert_eq!(
        ct(0)["memory_slack"].as_f64().unwrap(),
        (124.0 / 1024.0 + 700.0 / 1800.0 + 600.0 / 1800.0 + 600.0 / 1800.0 + 1200.0 / 1800.0) / 5.0
    );
    // (0.9 + 0.6 + 0.7 + 0.7 + 0.8) / 5
    close(&ct(1)["cpu_slack"], 0.74);
    assert_eq!(ct(1)["memory_slack"], 15880.0 / 20480.0);
    let t = &summary["total"];
    assert_eq!(t["changes"], 4);
    assert_eq!(t["overload_min"], 5.0);
    assert_eq!(t["peak_cores"], 6);
    assert_eq!(t["peak_memory_mb"], 1800 + 4096);
    close(&t["cpu_slack"], (2.25 + 3.7) / 10.0);
}

fn write_history(host: &FakeHost, name: &str, lines: &[serde_json::Value]) -> PathBuf {
    let path = host.path(name);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A day of load at 5-minute steps: 101 swings between 0.5 and 3.5 cores, 102 holds ~1 core;
/// memory follows the cpu swing.
fn synthetic_history() -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for k in 0..288i64 {
        let ts = T0_USEC + k * STEP_USEC;
        let phase = (k as f64 / 288.0 * std::f64::consts::TAU).sin();
        lines.push(
            serde_json::json!({"kind": "host", "ts_usec": ts, "cpus": 16,
            "busy_cores": 4.0, "mem_total_kib": 67108864u64, "mem_available_kib": 33554432u64}),
        );
        lines.push(
            serde_json::json!({"kind": "container", "ts_usec": ts, "vmid": 101,
            "name": "web", "managed": "yes", "cores": 4, "effective_cpus": 4.0, "memory_mb": 4096,
            "cpu_percent": (2.0 + 1.5 * phase) / 4.0 * 100.0,
            "memory_used_mb": 1500.0 + 800.0 * phase}),
        );
        lines.push(
            serde_json::json!({"kind": "container", "ts_usec": ts, "vmid": 102,
            "name": "db", "managed": "yes", "cores": 2, "effective_cpus": 2.0, "memory_mb": 2048,
            "cpu_percent": 50.0 + 5.0 * phase, "memory_used_mb": 1000.0}),
        );
    }
    lines
}

#[test]
fn compare_shows_a_tight_config_with_less_slack_and_more_overload_than_a_loose_one() {
    let host = FakeHost::new(16);
    let history = write_history(&host, "day.jsonl", &synthetic_history());
    let tight = host.path("tight.conf");
    std::fs::write(
        &tight,
        "cpu_upper_threshold = 95\ncpu_lower_threshold = 75\nmemory_upper_threshold = 95\n\
         memory_lower_threshold = 75\nmemory_min_increment = 128\nmin_decrease_chunk = 128\n\
         min_memory = 256\n",
    )
    .unwrap();
    let loose = host.path("loose.conf");
    std::fs::write(
        &loose,
        "cpu_upper_threshold = 60\ncpu_lower_threshold = 10\nmemory_upper_threshold = 60\n\
         memory_lower_threshold = 10\n",
    )
    .unwrap();
    let h = history.to_str().unwrap();
    let (t, l) = (tight.to_str().unwrap(), loose.to_str().unwrap());

    let both = replay_json(&host, &["--metrics", h, "--config", t, "--compare", l]);
    assert_eq!(both[0]["config"], t);
    assert_eq!(both[1]["config"], l);
    let (ts, ls) = (&both[0]["summary"]["total"], &both[1]["summary"]["total"]);
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(f(ts, "cpu_slack") < f(ls, "cpu_slack"), "{ts} vs {ls}");
    assert!(
        f(ts, "memory_slack") < f(ls, "memory_slack"),
        "{ts} vs {ls}"
    );
    assert!(
        f(ts, "overload_min") > f(ls, "overload_min"),
        "{ts} vs {ls}"
    );

    let out = host.run(&["replay", "--metrics", h, "--config", t, "--compare", l]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("config A: {t}")), "{text}");
    assert!(text.contains(&format!("config B: {l}")), "{text}");
    assert!(
        text.starts_with("replayed 288 cycles (metrics jsonl)"),
        "{text}"
    );
    let row = text.lines().find(|r| r.starts_with("101 ")).expect(&text);
    assert_eq!(row.matches(" | ").count(), 2, "{row}");
    assert!(text.lines().any(|r| r.starts_with("total ")), "{text}");
}

#[test]
fn ml_sibling_history_is_read_with_conf_or_tier_minimum_starts() {
    let (host, cfg) = setup("");
    let ml = serde_json::json!([
        {"101": {"cpu_usage_percent": 95.0, "memory_usage_mb": 900.0, "swap_usage_mb": 0,
                 "process_count": 12},
         "555": {"cpu_usage_percent": 10.0, "memory_usage_mb": 100.0},
         "summary": {"total_containers": 2, "cpu": 52.5}},
        {"101": {"cpu_usage_percent": 50.0, "memory_usage_mb": 900.0},
         "555": {"cpu_usage_percent": 10.0, "memory_usage_mb": 100.0},
         "summary": {"total_containers": 2}},
    ]);
    let path = host.path("lxc_metrics.json");
    std::fs::write(&path, ml.to_string()).unwrap();
    let args = [
        "--metrics",
        path.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ];
    let json = replay_json(&host, &args);
    let s = &json[0]["summary"];
    assert_eq!(s["cycles"], 2);
    let c101 = &s["containers"][0];
    assert_eq!(c101["vmid"], 101);
    assert!(
        c101["start_from"]
            .as_str()
            .unwrap()
            .starts_with("current conf "),
        "{c101}"
    );
    assert_eq!(c101["start_cores"], 2);
    // 95 % of the 2 starting cores is 1.9 cores of demand: scaled to 4 in cycle 0.
    assert_eq!(c101["peak_cores"], 4);
    assert_eq!(c101["cpu_overload_min"], 5.0);
    let c555 = &s["containers"][1];
    assert_eq!(c555["start_from"], "tier minimums");
    assert_eq!(c555["start_cores"], 1);
    assert_eq!(c555["start_memory_mb"], 512);
    let notes: Vec<&str> = s["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("2 cycle(s) without a timestamp")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("no host lines")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("CT 555:") && n.contains("tier minimums")),
        "{notes:?}"
    );

    let out = host.run(&["replay", args[0], args[1], args[2], args[3]]);
    let text = stdout(&out);
    assert!(text.contains("(ML lxc_metrics.json)"), "{text}");
    assert!(
        text.contains("note: CT 101: no allocation in the history"),
        "{text}"
    );
}

#[test]
fn plot_writes_an_svg_with_a_chart_per_container_and_resource() {
    let host = FakeHost::new(16);
    let history = write_history(&host, "day.jsonl", &synthetic_history()[..30]);
    let cfg = host.write_config("");
    let svg = host.path("out.svg");
    let out = host.run(&[
        "replay",
        "--metrics",
        history.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..80.min(text.len())]);
    for caption in [
        "CT 101: cores",
        "CT 101: memory MB",
        "CT 102: cores",
        "CT 102: memory MB",
    ] {
        assert!(text.contains(caption), "{caption}");
    }
}

fn valid_metric_name(n: &str) -> bool {
    // [a-zA-Z_:][a-zA-Z0-9_:]*
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn valid_label_name(n: &str) -> bool {
    // [a-zA-Z_][a-zA-Z0-9_]*, and names starting with __ are reserved.
    let mut b = n.bytes();
    !n.starts_with("__")
        && b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// One sample line of the text exposition format: name, labels (unescaped), value.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let b = line.as_bytes();
    let mut i = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..i];
    assert!(valid_metric_name(name), "bad metric name {name:?}");
    let mut labels = Vec::new();
    if b[i] == b'{' {
        i += 1;
        while b[i] != b'}' {
            let eq = i + line[i..].find('=').expect(line);
            let label = &line[i..eq];
            assert!(
                valid_label_name(label),
                "bad label name {label:?} in {line}"
            );
            assert_eq!(b[eq + 1], b'"', "unquoted label value in {line}");
            i = eq + 2;
            let mut value = String::new();
            loop {
                match b[i] {
                    b'\\' => {
                        value.push(match b[i + 1] {
                            b'\\' => '\\',
                            b'"' => '"',
                            b'n' => '\n',
                            other => panic!("bad escape \\{} in {line}", other as char),
                        });
                        i += 2;
                    }
                    b'"' => break,
                    _ => {
                        let ch = line[i..].chars().next().unwrap();
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            labels.push((label.to_string(), value));
            i += 1;
            match b[i] {
                b',' => i += 1,
                b'}' => {}
                _ => panic!("expected , or }} in {line}"),
            }
        }
        i += 1;
    }
    let value = line[i..]
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before value: {line}"));
    let v: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?} in {line}")),
    };
    (name.to_string(), labels, v)
}

/// Checks the whole file: HELP then TYPE before a family's samples, each family once, counters
/// named `_total`, unique series. Returns (name, labels) -> value.
fn parse_exposition(text: &str) -> BTreeMap<(String, Vec<(String, String)>), f64> {
    assert!(text.ends_with('\n'), "file must end with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect(line);
            assert!(valid_metric_name(name), "{line}");
            assert!(!help.is_empty(), "{line}");
            assert!(!helped.contains(&name.to_string()), "HELP twice: {line}");
            helped.push(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(
                helped.last().is_some_and(|h| h == name),
                "TYPE without HELP: {line}"
            );
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {line}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {name}");
            }
            current = Some(name.to_string());
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            let (name, mut labels, value) = parse_sample(line);
            assert_eq!(
                current.as_deref(),
                Some(name.as_str()),
                "sample outside its family: {line}"
            );
            assert!(value.is_finite(), "{line}");
            labels.sort();
            assert!(
                samples.insert((name, labels), value).is_none(),
                "duplicate series: {line}"
            );
        }
    }
    samples
}

#[test]
fn prometheus_textfile_parses_under_the_exposition_format_rules() {
    let (host, cfg) = setup("prometheus_textfile = \"@ROOT@/prom/lxc_autoscale.prom\"\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("@ROOT@", &host.root().display().to_string());
    std::fs::write(&cfg, text).unwrap();
    std::fs::create_dir_all(host.path("prom")).unwrap();
    // A hostname that needs escaping in a label value.
    std::fs::write(
        host.path("pve/lxc/102.conf"),
        "cores: 4\nhostname: d\"b\\x\nmemory: 4096\n",
    )
    .unwrap();
    std::fs::write(
        host.cgroup(101).join("io.pressure"),
        "some avg10=12.50 avg60=0 avg300=0 total=1\n",
    )
    .unwrap();
    cycle(&host, &cfg, &LOADS[0]);
    cycle(&host, &cfg, &LOADS[1]);

    let path = host.path("prom/lxc_autoscale.prom");
    let text = std::fs::read_to_string(&path).unwrap();
    let samples = parse_exposition(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        *samples
            .get(&(name.to_string(), l))
            .unwrap_or_else(|| panic!("{name} {labels:?} missing in\n{text}"))
    };
    let web = [("vmid", "101"), ("name", "web"), ("tier", "")];
    assert_eq!(get("lxc_autoscale_container_cores", &web), 4.0);
    assert_eq!(
        get("lxc_autoscale_container_memory_bytes", &web),
        1800.0 * 1048576.0
    );
    assert_eq!(
        get("lxc_autoscale_container_memory_used_bytes", &web),
        1100.0 * 1048576.0
    );
    let ratio = get("lxc_autoscale_container_cpu_usage_ratio", &web);
    assert!((ratio - 2.5 / 4.0).abs() < 1e-3, "{ratio}");
    assert_eq!(
        get(
            "lxc_autoscale_container_pressure_some_avg10_ratio",
            &[
                ("vmid", "101"),
                ("name", "web"),
                ("tier", ""),
                ("resource", "io")
            ]
        ),
        0.125
    );
    let db = [("vmid", "102"), ("name", "d\"b\\x"), ("tier", "db")];
    assert_eq!(get("lxc_autoscale_container_cores", &db), 1.0);
    // Each --once run is a new daemon: its counters cover that run (cycle 2 changed nothing).
    assert_eq!(
        get(
            "lxc_autoscale_scaling_actions_total",
            &[("resource", "cpu"), ("direction", "up")]
        ),
        0.0
    );
    assert_eq!(get("lxc_autoscale_pct_failures_total", &[]), 0.0);
    assert_eq!(get("lxc_autoscale_host_cpus", &[]), 8.0);
    assert!(get("lxc_autoscale_cycle_duration_seconds", &[]) >= 0.0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn status_json_holds_the_plan_and_the_rich_figures() {
    let (host, cfg) = setup("");
    std::fs::write(host.cgroup(101).join("pids.current"), "9\n").unwrap();
    host.seed_previous_cycle(&[(101, 95.0, 2), (102, 10.0, 4)]);
    host.set_memory(101, 900, 0);
    let out = host.run(&["status", "--json", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["changes"][0]["vmid"], 101);
    assert_eq!(v["observations"].as_array().unwrap().len(), 2);
    assert_eq!(v["host"]["cpus"], 8);
    assert_eq!(v["containers"][0]["vmid"], 101);
    assert_eq!(v["containers"][0]["pids"], 9);
    assert_eq!(v["containers"][0]["memory_used_mb"], 900.0);
    assert!(host.pct_calls().is_empty());
}

#[test]
fn replay_timeline_writes_one_line_per_container_per_cycle() {
    let (host, cfg, history) = recorded_history();
    let timeline = host.path("timeline.jsonl");
    let args = [
        "--metrics",
        history.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--timeline",
        timeline.to_str().unwrap(),
    ];
    let summary = replay_json(&host, &args);
    let text = std::fs::read_to_string(&timeline).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 5 cycles × 2 containers, in time order then VMID order.
    assert_eq!(rows.len(), 10);
    let keys: Vec<(i64, u64)> = rows
        .iter()
        .map(|r| (r["ts_usec"].as_i64().unwrap(), r["vmid"].as_u64().unwrap()))
        .collect();
    let want: Vec<(i64, u64)> = (0..5)
        .flat_map(|k| {
            [
                (T0_USEC + k * STEP_USEC, 101),
                (T0_USEC + k * STEP_USEC, 102),
            ]
        })
        .collect();
    assert_eq!(keys, want);
    // 101 starts at 2 cores / 1024 MB with 900 MB used, and gets 4 cores / 1800 MB for cycle 1.
    assert_eq!(
        (rows[0]["cores"].as_f64(), rows[0]["memory_mb"].as_u64()),
        (Some(2.0), Some(1024))
    );
    assert_eq!(rows[0]["used_mb"], 900.0);
    assert_eq!(
        (rows[2]["cores"].as_f64(), rows[2]["memory_mb"].as_u64()),
        (Some(4.0), Some(1800))
    );
    // Nothing in this history exceeds its allocation.
    assert!(rows.iter().all(|r| r["unmet_mb"] == 0.0), "{text}");
    let t = &summary[0]["summary"]["total"];
    assert_eq!(
        t["saturated_minutes"],
        serde_json::json!({"cpu": 0.0, "memory": 0.0})
    );
    assert_eq!(t["container_minutes"], 50.0);
}
