//! The metrics history: one JSON line per running container and one host line per cycle, appended
//! to `metrics_file` and rotated by size. `replay` reads it back; the README documents the schema.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::decide::plan::{Managed, Plan};
use crate::read::measure::{self, CounterRates};
use crate::read::snapshot::{self, EpochUsec, Snapshot, State};

/// Bytes in one config MB (MiB).
pub const BYTES_PER_MB: u64 = 1024 * 1024;
/// Mode of the history file: it names containers, so it is not world-readable.
const METRICS_FILE_MODE: u32 = 0o640;

/// One line of the history file, told apart by `"kind"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Nearly every record is a container line, so boxing would only add an allocation per line.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Host(HostRecord),
    Container(ContainerRecord),
}

/// The host line of one cycle. Absent fields were not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// When the counters were read, µs since the epoch; the same on every line of a cycle.
    pub ts_usec: EpochUsec,
    /// `ts_usec` as RFC 3339 UTC, for people and `jq`.
    #[serde(default)]
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Host CPUs busy over the window (from `/proc/stat`), cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_cores: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total_kib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_available_kib: Option<u64>,
    /// Collect, decide and apply of this cycle, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle_secs: Option<f64>,
    /// Running containers seen.
    #[serde(default)]
    pub containers: usize,
    /// Changes the plan held, and `pct` calls that failed.
    #[serde(default)]
    pub changes: usize,
    #[serde(default)]
    pub failures: usize,
}

/// One container in one cycle: its allocation and every figure. Absent fields were not measured
/// (or, for rates, had no usable previous sample); they are never written as 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub ts_usec: EpochUsec,
    #[serde(default)]
    pub time: String,
    pub vmid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Managed>,
    /// Effective core count (host CPUs when the conf has no `cores`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// CPUs the container may use: `cpulimit` when it binds, else `cores`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpulimit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_mb: Option<u64>,
    /// Percent of `effective_cpus` over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// `memory.current` − (`file` − `shmem`), MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<f64>,
    /// The kernel's working set: `memory.current` − `inactive_file`, MB. A memory cut never goes
    /// below it plus a margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_working_set_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_periods: Option<u64>,
    /// Share of the window spent throttled, 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_read_bytes_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_write_bytes_per_sec: Option<f64>,
    /// What the container received, bytes per second (its veth peers' host-side `tx_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes_per_sec: Option<f64>,
    /// What the container sent, bytes per second (host-side `rx_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes_per_sec: Option<f64>,
    /// PSI `some avg10`, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_cpu_some_avg10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_memory_some_avg10: Option<f64>,
    /// PSI memory `full avg10`, percent: share of time every task stalled on memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_memory_full_avg10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_io_some_avg10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_total_bytes: Option<u64>,
}

/// What the cycle itself did, for the host line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CycleInfo {
    pub duration_secs: Option<f64>,
    pub changes: usize,
    pub failures: usize,
}

/// `usec` as RFC 3339 UTC to the second.
pub fn rfc3339(usec: EpochUsec) -> String {
    chrono::DateTime::from_timestamp_micros(usec)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The lines of one cycle. `state` is the state the decision saw (before `State::advanced`), so
/// rates are taken over the same window as the cpu percent of `plan`.
pub fn records(
    cfg: &Config,
    snap: &Snapshot,
    plan: &Plan,
    state: &State,
    cycle: CycleInfo,
) -> (HostRecord, Vec<ContainerRecord>) {
    let host = host_record(cfg, snap, state, cycle);
    (host, container_records(cfg, snap, plan, state).collect())
}

/// The host line of one cycle (see `records`).
pub fn host_record(cfg: &Config, snap: &Snapshot, state: &State, cycle: CycleInfo) -> HostRecord {
    let max_age_usec = snapshot::max_sample_age_usec(cfg.poll_interval);
    let host_prev = state.fresh_host(snap.taken_at_usec, max_age_usec);
    HostRecord {
        ts_usec: snap.taken_at_usec,
        time: rfc3339(snap.taken_at_usec),
        cpus: snap.host.cpus,
        busy_cores: measure::host_busy_cores(&snap.host, host_prev),
        mem_total_kib: snap.host.mem_total_kib,
        mem_available_kib: snap.host.mem_available_kib,
        cycle_secs: cycle.duration_secs,
        containers: snap.containers.len(),
        changes: cycle.changes,
        failures: cycle.failures,
    }
}

/// The container lines of one cycle (see `records`), one at a time in snapshot order: the history
/// alone encodes each as it comes (`encode_lines`) and never holds them all.
pub fn container_records<'a>(
    cfg: &'a Config,
    snap: &'a Snapshot,
    plan: &'a Plan,
    state: &'a State,
) -> impl ExactSizeIterator<Item = ContainerRecord> + 'a {
    let max_age_usec = snapshot::max_sample_age_usec(cfg.poll_interval);
    let time = rfc3339(snap.taken_at_usec);
    snap.containers.iter().map(move |c| {
        let obs = plan
            .observations
            .binary_search_by_key(&c.vmid, |o| o.vmid)
            .ok()
            .map(|i| &plan.observations[i]);
        let conf = c.conf.as_ref();
        let rates: CounterRates = measure::counter_rates(
            c,
            snap.taken_at_usec,
            snap.host.boot_time,
            state.containers.get(&c.vmid),
            max_age_usec,
        );
        let x = &c.extra;
        ContainerRecord {
            ts_usec: snap.taken_at_usec,
            time: time.clone(),
            vmid: c.vmid,
            name: conf.and_then(|k| k.hostname.clone()),
            tier: cfg.tier_of(c.vmid).map(str::to_string),
            managed: obs.map(|o| o.managed),
            cores: conf.and_then(|k| k.cores.or(snap.host.cpus)),
            effective_cpus: conf.and_then(|k| measure::effective_cpus(k, snap.host.cpus)),
            cpulimit: conf.and_then(|k| k.cpulimit),
            memory_mb: conf.map(|k| k.memory_mb),
            swap_mb: conf.and_then(|k| k.swap_mb),
            cpu_percent: obs.and_then(|o| o.cpu_percent),
            memory_used_mb: obs
                .and_then(|o| o.memory_used_mb)
                .or_else(|| measure::memory_used_mb(c)),
            memory_percent: obs.and_then(|o| o.memory_percent),
            memory_working_set_mb: measure::memory_working_set_mb(c),
            swap_used_bytes: x.swap_current_bytes,
            pids: x.pids_current,
            throttled_periods: rates.throttled_periods,
            throttled_ratio: rates.throttled_ratio,
            oom_kills: rates.oom_kills,
            io_read_bytes_per_sec: rates.io_read_bytes_per_sec,
            io_write_bytes_per_sec: rates.io_write_bytes_per_sec,
            net_rx_bytes_per_sec: rates.net_rx_bytes_per_sec,
            net_tx_bytes_per_sec: rates.net_tx_bytes_per_sec,
            psi_cpu_some_avg10: x.psi_cpu_some_avg10,
            psi_memory_some_avg10: x.psi_memory_some_avg10,
            psi_memory_full_avg10: x.psi_memory_full_avg10,
            psi_io_some_avg10: x.psi_io_some_avg10,
            rootfs_used_bytes: x.rootfs_used_bytes,
            rootfs_total_bytes: x.rootfs_total_bytes,
        }
    })
}

/// A history line by reference: `Record`'s encoding without copying the record.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum RecordRef<'a> {
    Host(&'a HostRecord),
    Container(&'a ContainerRecord),
}

/// Bytes reserved per container line: a typical line (about 430 without rates, 700 with every
/// figure); a longer batch grows the buffer. The batch is written with one `write`, so it is built
/// whole; at 1000 containers it is a mapping of its own (`service::memory`), grown by `mremap`
/// without a copy, and its pages never written cost no memory.
const LINE_RESERVE_BYTES: usize = 512;

/// The JSON lines of one cycle: the host line, then one line per container.
pub fn encode(host: &HostRecord, containers: &[ContainerRecord]) -> Vec<u8> {
    encode_lines(host, containers.iter())
}

/// `encode` over container records as they come, into one buffer: no record is copied or kept.
pub fn encode_lines<C: std::borrow::Borrow<ContainerRecord>>(
    host: &HostRecord,
    containers: impl ExactSizeIterator<Item = C>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(LINE_RESERVE_BYTES * (containers.len() + 1));
    let mut line = |r: RecordRef| {
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &r);
        out.push(b'\n');
    };
    line(RecordRef::Host(host));
    for c in containers {
        line(RecordRef::Container(c.borrow()));
    }
    out
}

/// The history file. Each append opens it with `O_APPEND` (so a file moved away by an admin is
/// simply recreated), never reads it, and rotates it first when the batch would pass the cap.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsLog {
    path: PathBuf,
    max_bytes: u64,
}

impl MetricsLog {
    /// `None` when `metrics_file` is empty (history off).
    pub fn from_config(cfg: &Config) -> Option<MetricsLog> {
        (!cfg.metrics_file.as_os_str().is_empty()).then(|| {
            MetricsLog::new(
                cfg.metrics_file.clone(),
                cfg.metrics_max_mb.saturating_mul(BYTES_PER_MB),
            )
        })
    }

    /// A log at `path` rotated at `max_bytes`.
    pub fn new(path: PathBuf, max_bytes: u64) -> MetricsLog {
        MetricsLog { path, max_bytes }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<path>.1`, the one rotated file kept.
    pub fn rotated_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Appends `lines`. When the file holds something and would grow past the cap, it is first
    /// renamed to `<path>.1` (replacing the older one) and a new file started.
    pub fn append(&self, lines: &[u8]) -> Result<()> {
        let mut file = self.open()?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot inspect {}", self.path.display()))?
            .len();
        if size > 0 && size.saturating_add(lines.len() as u64) > self.max_bytes {
            let rotated = self.rotated_path();
            std::fs::rename(&self.path, &rotated).with_context(|| {
                format!(
                    "cannot rotate {} to {}",
                    self.path.display(),
                    rotated.display()
                )
            })?;
            file = self.open()?;
        }
        file.write_all(lines)
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }

    fn open(&self) -> Result<File> {
        let open = || {
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(METRICS_FILE_MODE)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&self.path)
        };
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::fsutil::ensure_private_dir(dir)?;
                }
                open()
            }
            other => other,
        }
        .with_context(|| format!("cannot open metrics file {}", self.path.display()))
    }
}

/// Reads a history file: every `kind` line in order. Blank lines are skipped; a line that does not
/// parse is an error naming its number (a torn last line, from a crash mid-write, is skipped).
pub fn parse_history(text: &str) -> Result<Vec<Record>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => anyhow::bail!("line {}: {e}", i + 1),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::plan::Observation;
    use crate::read::snapshot::{ContainerSample, CtConf, HostSample};

    fn container(ts: i64, vmid: u32) -> ContainerRecord {
        ContainerRecord {
            ts_usec: ts,
            time: rfc3339(ts),
            vmid,
            cores: Some(2),
            memory_mb: Some(1024),
            cpu_percent: Some(50.0),
            ..ContainerRecord::default()
        }
    }

    fn host(ts: i64) -> HostRecord {
        HostRecord {
            ts_usec: ts,
            time: rfc3339(ts),
            cpus: Some(8),
            ..HostRecord::default()
        }
    }

    #[test]
    fn lines_are_tagged_by_kind_and_leave_unmeasured_figures_out() {
        let text = String::from_utf8(encode(&host(0), &[container(0, 101)])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                r#"{"kind":"host","ts_usec":0,"time":"1970-01-01T00:00:00Z","cpus":8,"containers":0,"changes":0,"failures":0}"#,
                r#"{"kind":"container","ts_usec":0,"time":"1970-01-01T00:00:00Z","vmid":101,"cores":2,"memory_mb":1024,"cpu_percent":50.0}"#,
            ]
        );
        assert_eq!(
            parse_history(&text).unwrap(),
            vec![Record::Host(host(0)), Record::Container(container(0, 101))]
        );
    }

    #[test]
    fn history_parse_skips_a_torn_last_line_but_names_a_bad_middle_line() {
        let good = String::from_utf8(encode(&host(0), &[container(0, 101)])).unwrap();
        assert_eq!(
            parse_history(&format!("{good}{{\"kind\":\"cont"))
                .unwrap()
                .len(),
            2
        );
        let e = parse_history(&format!("{good}garbage\n{good}")).unwrap_err();
        assert!(e.to_string().starts_with("line 3:"), "{e}");
    }

    #[test]
    fn append_adds_lines_without_rewriting() {
        let tmp = tempfile::tempdir().unwrap();
        let log = MetricsLog::new(tmp.path().join("sub/metrics.jsonl"), 1 << 20);
        log.append(b"one\n").unwrap();
        log.append(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "one\ntwo\n");
        assert!(!log.rotated_path().exists());
    }

    #[test]
    fn file_is_rotated_at_the_cap_keeping_one_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        let log = MetricsLog::new(tmp.path().join("metrics.jsonl"), 10);
        log.append(b"aaaa\n").unwrap();
        log.append(b"bbbb\n").unwrap();
        // 10 bytes now; one more line would pass the cap.
        assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "aaaa\nbbbb\n");
        log.append(b"cccc\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(log.rotated_path()).unwrap(),
            "aaaa\nbbbb\n"
        );
        assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "cccc\n");
        log.append(b"dddd\n").unwrap();
        log.append(b"eeee\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(log.rotated_path()).unwrap(),
            "cccc\ndddd\n"
        );
        assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "eeee\n");
        let names = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(names, 2);
    }

    #[test]
    fn a_batch_larger_than_the_cap_still_goes_into_a_fresh_file() {
        let tmp = tempfile::tempdir().unwrap();
        let log = MetricsLog::new(tmp.path().join("m"), 4);
        log.append(b"0123456789\n").unwrap();
        assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "0123456789\n");
    }

    #[test]
    fn empty_metrics_file_turns_history_off() {
        let mut cfg = Config::default();
        assert!(MetricsLog::from_config(&cfg).is_some());
        cfg.metrics_file = PathBuf::new();
        assert_eq!(MetricsLog::from_config(&cfg), None);
    }

    #[test]
    fn records_take_allocation_from_the_conf_and_figures_from_the_plan() {
        let cfg = Config::default();
        let snap = Snapshot {
            taken_at_usec: 1_000_000,
            host: HostSample {
                cpus: Some(16),
                ..HostSample::default()
            },
            containers: vec![ContainerSample {
                vmid: 101,
                conf: Some(CtConf {
                    cores: None,
                    cpulimit: Some(2.5),
                    memory_mb: 2048,
                    swap_mb: Some(512),
                    hostname: Some("web".into()),
                    ..CtConf::default()
                }),
                cgroup_id: Some(1),
                memory_current_bytes: Some(3 * BYTES_PER_MB),
                memory_file_bytes: Some(BYTES_PER_MB),
                ..ContainerSample::default()
            }],
        };
        let plan = Plan {
            observations: vec![Observation {
                vmid: 101,
                name: Some("web".into()),
                tier: None,
                managed: Managed::Yes,
                cores: Some(16),
                memory_mb: Some(2048),
                cpu_percent: Some(40.0),
                memory_used_mb: Some(2.0),
                memory_percent: Some(0.1),
            }],
            ..Plan::default()
        };
        let info = CycleInfo {
            duration_secs: Some(0.5),
            changes: 0,
            failures: 0,
        };
        let (h, cts) = records(&cfg, &snap, &plan, &State::default(), info);
        assert_eq!(h.cpus, Some(16));
        assert_eq!(h.busy_cores, None);
        assert_eq!(h.containers, 1);
        assert_eq!(h.cycle_secs, Some(0.5));
        let c = &cts[0];
        assert_eq!(c.name.as_deref(), Some("web"));
        assert_eq!(c.managed, Some(Managed::Yes));
        assert_eq!(c.cores, Some(16));
        assert_eq!(c.effective_cpus, Some(2.5));
        assert_eq!(c.swap_mb, Some(512));
        assert_eq!(c.cpu_percent, Some(40.0));
        assert_eq!(c.memory_used_mb, Some(2.0));
        assert_eq!(c.oom_kills, None);
    }

    #[test]
    fn records_carry_full_memory_pressure_which_the_decision_reads() {
        let cfg = Config::default();
        let mut sample = ContainerSample {
            vmid: 101,
            ..ContainerSample::default()
        };
        sample.extra.psi_memory_full_avg10 = Some(2.5);
        let snap = Snapshot {
            containers: vec![sample],
            ..Snapshot::default()
        };
        let c: Vec<ContainerRecord> =
            container_records(&cfg, &snap, &Plan::default(), &State::default()).collect();
        assert_eq!(c[0].psi_memory_full_avg10, Some(2.5));
        assert_eq!(c[0].memory_working_set_mb, None);
    }
}
