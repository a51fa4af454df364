//! JSON-lines event log beside the text log (`lxc_autoscale.log` -> `lxc_autoscale.json`): one line
//! per applied change or failure, with the field names the predecessor's log viewers read.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Local, SecondsFormat};
use nix::fcntl::OFlag;
use serde::Serialize;

/// Mode of a newly created event log.
pub const EVENT_LOG_MODE: u32 = 0o640;
const EVENT_LOG_EXT: &str = "json";
/// Used when the log file itself already ends in `.json`, so events never mix into it.
const EVENT_LOG_EXT_FALLBACK: &str = "events.json";
/// Host name written when `gethostname` fails.
const UNKNOWN_HOST: &str = "unknown";

/// Appends one JSON object per line to `path`.
#[derive(Debug, Clone)]
pub struct EventLog {
    pub path: PathBuf,
    /// `proxmox_host` of every line.
    pub host: String,
}

/// One line of the event log. Field names and order are what the predecessor wrote.
#[derive(Debug, Serialize)]
struct Event<'a> {
    /// RFC 3339, local time with offset.
    timestamp: String,
    proxmox_host: &'a str,
    container_id: u32,
    action: &'a str,
    change: &'a str,
    /// Anomaly events only: `cpu` or `memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    /// Anomaly events only: `up` or `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'a str>,
    /// Anomaly events only: how far beyond the usual range, in margins (see `decide::anomaly`).
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
    /// Recommendation events only: the container, the node to move it to, why, and the exact
    /// `pct migrate` line.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    recommendation: Option<RecommendationFields<'a>>,
}

/// The extra fields of a `recommendation` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecommendationFields<'a> {
    pub vmid: u32,
    pub target: &'a str,
    pub why: &'a str,
    pub command: &'a str,
}

/// The extra fields of an `anomaly` event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyFields<'a> {
    pub resource: &'a str,
    pub direction: &'a str,
    pub score: f64,
}

impl EventLog {
    /// The event log beside `log_file`: same name with the extension `json`, host from
    /// `gethostname`.
    pub fn beside(log_file: &Path) -> EventLog {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| UNKNOWN_HOST.to_string());
        EventLog {
            path: event_path_for(log_file),
            host,
        }
    }

    /// Appends one event stamped with the current local time. The file is created (mode 0640)
    /// when missing; a symlink is refused. Errors name the path.
    pub fn record(&self, vmid: u32, action: &str, change: &str) -> Result<()> {
        self.record_at(Local::now(), vmid, action, change)
    }

    /// `record` with an explicit timestamp.
    pub fn record_at(
        &self,
        at: DateTime<Local>,
        vmid: u32,
        action: &str,
        change: &str,
    ) -> Result<()> {
        let line = format_event(&self.host, at, vmid, action, change, None)?;
        self.append(&line)
    }

    /// Appends an `anomaly` event (an episode start) stamped with the current local time.
    pub fn record_anomaly(&self, vmid: u32, change: &str, fields: AnomalyFields) -> Result<()> {
        self.record_anomaly_at(Local::now(), vmid, change, fields)
    }

    /// `record_anomaly` with an explicit timestamp (the demo's simulated clock).
    pub fn record_anomaly_at(
        &self,
        at: DateTime<Local>,
        vmid: u32,
        change: &str,
        fields: AnomalyFields,
    ) -> Result<()> {
        let line = format_event(&self.host, at, vmid, "anomaly", change, Some(fields))?;
        self.append(&line)
    }

    /// The event log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a `recommendation` event (placement advice) stamped with the current local time.
    pub fn record_recommendation(&self, fields: RecommendationFields) -> Result<()> {
        let mut line = serde_json::to_string(&Event {
            timestamp: Local::now().to_rfc3339_opts(SecondsFormat::Secs, false),
            proxmox_host: &self.host,
            container_id: fields.vmid,
            action: "recommendation",
            change: &format!("move to node {}", fields.target),
            resource: None,
            direction: None,
            score: None,
            recommendation: Some(fields),
        })
        .context("cannot encode event")?;
        line.push('\n');
        self.append(&line)
    }

    fn append(&self, line: &str) -> Result<()> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create directory {}", parent.display()))?;
            }
        }
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(EVENT_LOG_MODE)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&self.path)
            .with_context(|| format!("cannot open event log {}", self.path.display()))?;
        // One write per line: with O_APPEND concurrent writers cannot interleave inside it.
        file.write_all(line.as_bytes())
            .with_context(|| format!("cannot write event log {}", self.path.display()))
    }
}

/// `log_file` with its extension replaced by `json` (`events.json` if it already is `json`).
pub fn event_path_for(log_file: &Path) -> PathBuf {
    if log_file.extension().is_some_and(|e| e == EVENT_LOG_EXT) {
        log_file.with_extension(EVENT_LOG_EXT_FALLBACK)
    } else {
        log_file.with_extension(EVENT_LOG_EXT)
    }
}

/// One event as a JSON line, newline included.
fn format_event(
    host: &str,
    at: DateTime<Local>,
    vmid: u32,
    action: &str,
    change: &str,
    anomaly: Option<AnomalyFields>,
) -> Result<String> {
    let event = Event {
        timestamp: at.to_rfc3339_opts(SecondsFormat::Secs, false),
        proxmox_host: host,
        container_id: vmid,
        action,
        change,
        resource: anomaly.map(|a| a.resource),
        direction: anomaly.map(|a| a.direction),
        score: anomaly.map(|a| a.score),
        recommendation: None,
    };
    let mut line = serde_json::to_string(&event).context("cannot encode event")?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn at() -> DateTime<Local> {
        Local.with_ymd_and_hms(2024, 5, 1, 12, 30, 5).unwrap()
    }

    #[test]
    fn anomaly_event_carries_resource_direction_and_score() {
        let fields = AnomalyFields {
            resource: "cpu",
            direction: "up",
            score: 7.5,
        };
        let line =
            format_event("pve1", at(), 101, "anomaly", "cpu anomaly up", Some(fields)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["action"], "anomaly");
        assert_eq!(v["change"], "cpu anomaly up");
        assert_eq!(
            (
                v["resource"].clone(),
                v["direction"].clone(),
                v["score"].clone()
            ),
            (
                serde_json::json!("cpu"),
                serde_json::json!("up"),
                serde_json::json!(7.5)
            )
        );
        let plain = format_event("pve1", at(), 101, "scale", "2 -> 3", None).unwrap();
        assert!(!plain.contains("resource"), "{plain}");
    }

    #[test]
    fn event_path_replaces_the_extension_with_json() {
        assert_eq!(
            event_path_for(Path::new("/var/log/lxc_autoscale.log")),
            PathBuf::from("/var/log/lxc_autoscale.json")
        );
        assert_eq!(
            event_path_for(Path::new("/var/log/autoscale")),
            PathBuf::from("/var/log/autoscale.json")
        );
    }

    #[test]
    fn event_path_never_equals_a_json_log_file() {
        assert_eq!(
            event_path_for(Path::new("/var/log/a.json")),
            PathBuf::from("/var/log/a.events.json")
        );
    }

    #[test]
    fn event_line_has_the_predecessor_fields_in_order() {
        let line = format_event("pve1", at(), 101, "Increase Cores", "2 -> 3", None).unwrap();
        let ts = at().to_rfc3339_opts(SecondsFormat::Secs, false);
        assert_eq!(
            line,
            format!(
                "{{\"timestamp\":\"{ts}\",\"proxmox_host\":\"pve1\",\"container_id\":101,\"action\":\"Increase Cores\",\"change\":\"2 -> 3\"}}\n"
            )
        );
        assert!(ts.starts_with("2024-05-01T12:30:05"), "{ts}");
    }

    #[test]
    fn text_with_quotes_and_newlines_stays_on_one_line() {
        let line = format_event(
            "pve1",
            at(),
            101,
            "Failed",
            "pct said \"no\"\nline two",
            None,
        )
        .unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["change"], "pct said \"no\"\nline two");
    }

    #[test]
    fn record_appends_lines_and_creates_file_with_mode_0640() {
        let tmp = tempfile::tempdir().unwrap();
        let log = EventLog {
            path: tmp.path().join("logs").join("lxc_autoscale.json"),
            host: "pve1".into(),
        };
        log.record_at(at(), 101, "Increase Cores", "2 -> 3")
            .unwrap();
        log.record(102, "Decrease Memory", "2048 -> 1536").unwrap();
        let text = fs::read_to_string(&log.path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["container_id"], 101);
        assert_eq!(lines[1]["container_id"], 102);
        assert_eq!(lines[1]["action"], "Decrease Memory");
        assert_eq!(lines[1]["proxmox_host"], "pve1");
        let mode = fs::metadata(&log.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn record_refuses_a_symlink_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("shadow");
        fs::write(&target, "").unwrap();
        let path = tmp.path().join("events.json");
        symlink(&target, &path).unwrap();
        let log = EventLog {
            path: path.clone(),
            host: "pve1".into(),
        };
        let err = format!("{:#}", log.record(101, "a", "b").unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "");
    }

    #[test]
    fn beside_uses_this_hosts_name() {
        let log = EventLog::beside(Path::new("/tmp/x.log"));
        assert_eq!(log.path, PathBuf::from("/tmp/x.json"));
        let expected = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(log.host, expected);
    }
}
