//! The Prometheus text file for node_exporter's textfile collector, rewritten atomically each
//! cycle. Text exposition format 0.0.4; base units (bytes, seconds, ratios 0–1); counters `_total`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::decide::model::Models;
use crate::decide::plan::Change;
use crate::record::cluster_status::ClusterView;
use crate::record::metrics::{ContainerRecord, HostRecord, BYTES_PER_MB};

/// Mode of the text file: node_exporter runs as its own user and must read it.
const TEXTFILE_MODE: u32 = 0o644;

/// Counters kept across the cycles of one daemon run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionCounters {
    pub cpu_up: u64,
    pub cpu_down: u64,
    pub memory_up: u64,
    pub memory_down: u64,
    /// Changes that failed: `pct` did not succeed (non-zero exit, timeout, spawn error) or the conf
    /// did not confirm it, or it was stopped before `pct` ran (its backup could not be written,
    /// no conf was read). The name stays for the dashboards that use it.
    pub pct_failures: u64,
}

impl ActionCounters {
    /// Counts the changes `pct` confirmed and the changes that failed.
    pub fn add<'a>(&mut self, applied: impl IntoIterator<Item = &'a Change>, failed: usize) {
        for change in applied {
            if let Some(s) = change.cores {
                if s.to > s.from {
                    self.cpu_up += 1;
                } else if s.to < s.from {
                    self.cpu_down += 1;
                }
            }
            if let Some(s) = change.memory_mb {
                if s.to > s.from {
                    self.memory_up += 1;
                } else if s.to < s.from {
                    self.memory_down += 1;
                }
            }
        }
        self.pct_failures += failed as u64;
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family being written: HELP and TYPE come first, then the samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        // A non-finite figure is a measuring bug; leaving the sample out beats exporting NaN.
        if !value.is_finite() {
            return;
        }
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }
}

type Getter = fn(&ContainerRecord) -> Option<f64>;

/// Per-container gauges: (name, help, value).
const CONTAINER_GAUGES: &[(&str, &str, Getter)] = &[
    (
        "lxc_autoscale_container_cores",
        "Cores allocated (host CPUs when the conf sets none).",
        |c| c.cores.map(f64::from),
    ),
    (
        "lxc_autoscale_container_cpu_limit_cores",
        "CPUs the container may use: cpulimit when it binds, else cores.",
        |c| c.effective_cpus,
    ),
    (
        "lxc_autoscale_container_memory_bytes",
        "Memory allocated.",
        |c| c.memory_mb.map(|m| (m * BYTES_PER_MB) as f64),
    ),
    (
        "lxc_autoscale_container_cpu_usage_ratio",
        "CPU used as a share of the CPUs the container may use, over the last cycle.",
        |c| c.cpu_percent.map(|p| p / 100.0),
    ),
    (
        "lxc_autoscale_container_memory_used_bytes",
        "Memory used, page cache excluded.",
        |c| c.memory_used_mb.map(|m| m * BYTES_PER_MB as f64),
    ),
    (
        "lxc_autoscale_container_swap_used_bytes",
        "Swap used.",
        |c| c.swap_used_bytes.map(|b| b as f64),
    ),
    (
        "lxc_autoscale_container_cpu_throttled_ratio",
        "Share of the last cycle the container spent CPU-throttled.",
        |c| c.throttled_ratio,
    ),
    (
        "lxc_autoscale_container_pids",
        "Tasks in the container.",
        |c| c.pids.map(|p| p as f64),
    ),
    (
        "lxc_autoscale_container_io_read_bytes_per_second",
        "Block I/O read rate over the last cycle.",
        |c| c.io_read_bytes_per_sec,
    ),
    (
        "lxc_autoscale_container_io_write_bytes_per_second",
        "Block I/O write rate over the last cycle.",
        |c| c.io_write_bytes_per_sec,
    ),
    (
        "lxc_autoscale_container_network_receive_bytes_per_second",
        "Bytes the container received per second over the last cycle.",
        |c| c.net_rx_bytes_per_sec,
    ),
    (
        "lxc_autoscale_container_network_transmit_bytes_per_second",
        "Bytes the container sent per second over the last cycle.",
        |c| c.net_tx_bytes_per_sec,
    ),
    (
        "lxc_autoscale_container_rootfs_used_bytes",
        "Used bytes of the container's root filesystem.",
        |c| c.rootfs_used_bytes.map(|b| b as f64),
    ),
    (
        "lxc_autoscale_container_rootfs_size_bytes",
        "Size of the container's root filesystem.",
        |c| c.rootfs_total_bytes.map(|b| b as f64),
    ),
];

/// The current anomaly score of each container, CPU and memory: what the anomaly gauge shows.
/// Kept apart from the models so the API can render the gauge without a copy of them; only the
/// non-zero scores are kept (most containers have no open episode).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnomalyScores(HashMap<u32, [f64; 2]>);

impl AnomalyScores {
    /// The detectors' scores after a cycle; a container without a model has none (0).
    pub fn of(models: &Models) -> AnomalyScores {
        AnomalyScores(
            models
                .containers
                .iter()
                .map(|(vmid, m)| (*vmid, [m.cpu.detector.score(), m.memory.detector.score()]))
                .filter(|(_, s)| *s != [0.0, 0.0])
                .collect(),
        )
    }

    /// CPU and memory score of `vmid`; 0 when it has no model yet.
    pub fn get(&self, vmid: u32) -> [f64; 2] {
        self.0.get(&vmid).copied().unwrap_or([0.0, 0.0])
    }
}

/// `lxc_autoscale_container_anomaly{vmid,name,tier,resource}`: the current anomaly score of each
/// container and resource (deviations from its learned behaviour), 0 when no episode is open.
fn render_anomaly(containers: &[ContainerRecord], scores: &AnomalyScores) -> String {
    let mut out = String::with_capacity(128 + containers.len() * 160);
    let name = "lxc_autoscale_container_anomaly";
    let mut f = Family::new(
        &mut out,
        name,
        "gauge",
        "Current anomaly score (deviations from the container's learned behaviour), 0 when none.",
    );
    for c in containers {
        let [cpu, memory] = scores.get(c.vmid);
        for (resource, score) in [("cpu", cpu), ("memory", memory)] {
            let labels = format!(
                "vmid=\"{}\",name=\"{}\",tier=\"{}\",resource=\"{resource}\"",
                c.vmid,
                escape_label(c.name.as_deref().unwrap_or("")),
                escape_label(c.tier.as_deref().unwrap_or(""))
            );
            f.sample(name, &labels, score);
        }
    }
    out
}

/// Everything one cycle exports: the text file holds exactly this, and the API's `GET /metrics`
/// serves exactly this. Every family goes through here, so the two never differ. `cluster` is
/// `render_cluster`'s text in cluster mode, empty otherwise.
pub fn exposition(
    host: &HostRecord,
    containers: &[ContainerRecord],
    counters: &ActionCounters,
    planned: &[Change],
    anomaly: &AnomalyScores,
    cluster: &str,
) -> String {
    let mut text = render(host, containers, counters);
    text.push_str(&render_planned(planned));
    text.push_str(&render_anomaly(containers, anomaly));
    text.push_str(cluster);
    text
}

/// The container, host and counter families.
fn render(host: &HostRecord, containers: &[ContainerRecord], counters: &ActionCounters) -> String {
    let mut out = String::with_capacity(1024 + containers.len() * 2048);
    render_containers(&mut out, containers);
    render_host(&mut out, host);
    render_counters(&mut out, counters);
    out
}

/// What the plan would set: one sample per planned resource (`scaling = "recommend"` shows its
/// recommendations here; in `auto` the cycle applies them). Appended to `render`'s text.
fn render_planned(changes: &[Change]) -> String {
    let mut out = String::new();
    let cores = "lxc_autoscale_container_planned_cores";
    let mut f = Family::new(
        &mut out,
        cores,
        "gauge",
        "Cores the last cycle's plan would set.",
    );
    for c in changes {
        if let Some(s) = c.cores {
            f.sample(cores, &format!("vmid=\"{}\"", c.vmid), f64::from(s.to));
        }
    }
    let mem = "lxc_autoscale_container_planned_memory_bytes";
    let mut f = Family::new(
        &mut out,
        mem,
        "gauge",
        "Memory the last cycle's plan would set.",
    );
    for c in changes {
        if let Some(s) = c.memory_mb {
            f.sample(
                mem,
                &format!("vmid=\"{}\"", c.vmid),
                (s.to * BYTES_PER_MB) as f64,
            );
        }
    }
    out
}

/// The per-container families.
fn render_containers(out: &mut String, containers: &[ContainerRecord]) {
    let labels: Vec<String> = containers
        .iter()
        .map(|c| {
            format!(
                "vmid=\"{}\",name=\"{}\",tier=\"{}\"",
                c.vmid,
                escape_label(c.name.as_deref().unwrap_or("")),
                escape_label(c.tier.as_deref().unwrap_or(""))
            )
        })
        .collect();
    for (name, help, get) in CONTAINER_GAUGES {
        let mut f = Family::new(out, name, "gauge", help);
        for (c, l) in containers.iter().zip(&labels) {
            if let Some(v) = get(c) {
                f.sample(name, l, v);
            }
        }
    }
    let psi = "lxc_autoscale_container_pressure_some_avg10_ratio";
    let mut f = Family::new(
        out,
        psi,
        "gauge",
        "PSI some avg10: share of the last 10 s some task of the container waited for the resource.",
    );
    for (c, l) in containers.iter().zip(&labels) {
        for (resource, v) in [
            ("cpu", c.psi_cpu_some_avg10),
            ("memory", c.psi_memory_some_avg10),
            ("io", c.psi_io_some_avg10),
        ] {
            if let Some(v) = v {
                f.sample(psi, &format!("{l},resource=\"{resource}\""), v / 100.0);
            }
        }
    }
}

/// The host families and the containers seen.
fn render_host(out: &mut String, host: &HostRecord) {
    let host_gauges: [(&str, &str, Option<f64>); 6] = [
        (
            "lxc_autoscale_host_cpus",
            "Host CPUs.",
            host.cpus.map(f64::from),
        ),
        (
            "lxc_autoscale_host_busy_cores",
            "Host CPUs busy over the last cycle.",
            host.busy_cores,
        ),
        (
            "lxc_autoscale_host_memory_total_bytes",
            "Host MemTotal.",
            host.mem_total_kib.map(|k| (k * 1024) as f64),
        ),
        (
            "lxc_autoscale_host_memory_available_bytes",
            "Host MemAvailable.",
            host.mem_available_kib.map(|k| (k * 1024) as f64),
        ),
        (
            "lxc_autoscale_cycle_duration_seconds",
            "Time the last cycle took to collect, decide and apply.",
            host.cycle_secs,
        ),
        (
            "lxc_autoscale_last_cycle_timestamp_seconds",
            "When the last cycle read its counters, seconds since the epoch.",
            Some(host.ts_usec as f64 / 1e6),
        ),
    ];
    for (name, help, value) in host_gauges {
        if let Some(v) = value {
            Family::new(out, name, "gauge", help).sample(name, "", v);
        }
    }
    let name = "lxc_autoscale_containers";
    Family::new(
        out,
        name,
        "gauge",
        "Running containers seen in the last cycle.",
    )
    .sample(name, "", host.containers as f64);
}

/// The action counters since the daemon started.
fn render_counters(out: &mut String, counters: &ActionCounters) {
    let name = "lxc_autoscale_scaling_actions_total";
    let mut f = Family::new(
        out,
        name,
        "counter",
        "Scaling actions pct confirmed since the daemon started.",
    );
    for (resource, direction, n) in [
        ("cpu", "up", counters.cpu_up),
        ("cpu", "down", counters.cpu_down),
        ("memory", "up", counters.memory_up),
        ("memory", "down", counters.memory_down),
    ] {
        f.sample(
            name,
            &format!("resource=\"{resource}\",direction=\"{direction}\""),
            n as f64,
        );
    }
    let name = "lxc_autoscale_pct_failures_total";
    Family::new(
        out,
        name,
        "counter",
        "changes that failed since the daemon started (pct failed or the conf did not confirm it, or the backup before it could not be written).",
    )
    .sample(name, "", counters.pct_failures as f64);
}

/// Writes `text` to `path` atomically (readers never see half a file).
pub fn write(path: &Path, text: &str) -> Result<()> {
    crate::fsutil::write_atomic(path, text.as_bytes(), TEXTFILE_MODE)
}

/// The `lxc_autoscale_cluster_*` families from the merged status files (cluster mode): how many
/// nodes report and how many are stale, and per node whether it is stale or the placement
/// leader, its headroom after reserves and its open "does not fit" requests.
pub fn render_cluster(view: &ClusterView) -> String {
    let mut out = String::with_capacity(1024 + view.nodes.len() * 512);
    let stale = view.nodes.iter().filter(|n| n.stale).count();
    for (name, help, value) in [
        (
            "lxc_autoscale_cluster_nodes",
            "Nodes with a status file.",
            view.nodes.len(),
        ),
        (
            "lxc_autoscale_cluster_stale_nodes",
            "Nodes whose status file is older than 3 poll intervals.",
            stale,
        ),
    ] {
        Family::new(&mut out, name, "gauge", help).sample(name, "", value as f64);
    }
    type NodeGetter = fn(&crate::record::cluster_status::NodeView) -> Option<f64>;
    let per_node: [(&str, &str, NodeGetter); 5] = [
        (
            "lxc_autoscale_cluster_stale",
            "1 when the node's status file is older than 3 poll intervals.",
            |n| Some(f64::from(u8::from(n.stale))),
        ),
        (
            "lxc_autoscale_cluster_leader",
            "1 on the placement leader (by its status file).",
            |n| Some(f64::from(u8::from(n.status.leader))),
        ),
        (
            "lxc_autoscale_cluster_headroom_cores",
            "Cores free after the reserve and the host's use.",
            |n| n.status.cpu.headroom,
        ),
        (
            "lxc_autoscale_cluster_headroom_memory_bytes",
            "Memory free after the reserve and the host's use.",
            |n| n.status.memory.headroom.map(|mb| mb * BYTES_PER_MB as f64),
        ),
        (
            "lxc_autoscale_cluster_shortfalls",
            "Open scale-ups that do not fit on the node.",
            |n| Some(n.status.shortfalls.len() as f64),
        ),
    ];
    for (name, help, get) in per_node {
        let mut f = Family::new(&mut out, name, "gauge", help);
        for n in &view.nodes {
            if let Some(v) = get(n) {
                let labels = format!("node=\"{}\"", escape_label(&n.status.node));
                f.sample(name, &labels, v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_gauge_is_zero_without_an_episode_for_every_container_and_resource() {
        let cts = [ContainerRecord {
            vmid: 101,
            name: Some("web".into()),
            ..ContainerRecord::default()
        }];
        let text = render_anomaly(&cts, &AnomalyScores::of(&Models::default()));
        assert!(text.contains(
            "lxc_autoscale_container_anomaly{vmid=\"101\",name=\"web\",tier=\"\",resource=\"cpu\"} 0\n"
        ), "{text}");
        assert!(text.contains("resource=\"memory\"} 0\n"), "{text}");
    }
    use crate::decide::plan::Step;

    #[test]
    fn anomaly_gauge_shows_each_containers_scores_and_0_for_one_without() {
        let cts = [101, 102].map(|vmid| ContainerRecord {
            vmid,
            ..ContainerRecord::default()
        });
        let scores = AnomalyScores(HashMap::from([(101, [2.5, 0.0])]));
        let text = render_anomaly(&cts, &scores);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                r#"lxc_autoscale_container_anomaly{vmid="101",name="",tier="",resource="cpu"} 2.5"#,
                r#"lxc_autoscale_container_anomaly{vmid="101",name="",tier="",resource="memory"} 0"#,
                r#"lxc_autoscale_container_anomaly{vmid="102",name="",tier="",resource="cpu"} 0"#,
                r#"lxc_autoscale_container_anomaly{vmid="102",name="",tier="",resource="memory"} 0"#,
            ]
        );
        let all = exposition(
            &HostRecord::default(),
            &cts,
            &ActionCounters::default(),
            &[],
            &scores,
            "",
        );
        assert!(all.ends_with(&text), "{all}");
        assert!(all.contains("# TYPE lxc_autoscale_container_planned_cores gauge\n"));
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_label("web-1"), "web-1");
    }

    #[test]
    fn counters_count_confirmed_directions_and_failures() {
        let change = |cores: Option<(u32, u32)>, mem: Option<(u64, u64)>| Change {
            vmid: 101,
            cores: cores.map(|(from, to)| Step { from, to }),
            memory_mb: mem.map(|(from, to)| Step { from, to }),
            reasons: Vec::new(),
        };
        let applied = [
            change(Some((2, 4)), Some((2048, 1024))),
            change(Some((4, 2)), None),
            change(None, Some((512, 1024))),
        ];
        let mut c = ActionCounters::default();
        c.add(&applied, 1);
        c.add(&applied, 1);
        assert_eq!(
            c,
            ActionCounters {
                cpu_up: 2,
                cpu_down: 2,
                memory_up: 2,
                memory_down: 2,
                pct_failures: 2,
            }
        );
    }

    #[test]
    fn render_gives_help_type_and_labelled_samples_in_base_units() {
        let host = HostRecord {
            ts_usec: 1_500_000,
            cpus: Some(8),
            cycle_secs: Some(0.25),
            containers: 1,
            ..HostRecord::default()
        };
        let ct = ContainerRecord {
            vmid: 101,
            name: Some("we\"b".into()),
            cores: Some(2),
            memory_mb: Some(1024),
            cpu_percent: Some(50.0),
            psi_io_some_avg10: Some(12.5),
            ..ContainerRecord::default()
        };
        let text = render(&host, &[ct], &ActionCounters::default());
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        has("# TYPE lxc_autoscale_container_cores gauge");
        has(r#"lxc_autoscale_container_cores{vmid="101",name="we\"b",tier=""} 2"#);
        has(r#"lxc_autoscale_container_memory_bytes{vmid="101",name="we\"b",tier=""} 1073741824"#);
        has(r#"lxc_autoscale_container_cpu_usage_ratio{vmid="101",name="we\"b",tier=""} 0.5"#);
        has(
            r#"lxc_autoscale_container_pressure_some_avg10_ratio{vmid="101",name="we\"b",tier="",resource="io"} 0.125"#,
        );
        has("lxc_autoscale_cycle_duration_seconds 0.25");
        has("lxc_autoscale_last_cycle_timestamp_seconds 1.5");
        has("# TYPE lxc_autoscale_scaling_actions_total counter");
        has(r#"lxc_autoscale_scaling_actions_total{resource="memory",direction="down"} 0"#);
        has("lxc_autoscale_pct_failures_total 0");
        assert!(
            !text.contains("lxc_autoscale_container_swap_used_bytes{"),
            "{text}"
        );
    }
}
