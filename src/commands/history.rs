//! Loading a recorded history for `replay`: the daemon's metrics JSON lines (streamed, one line at
//! a time) or the ML sibling's `lxc_metrics.json` (one JSON array).
//!
//! A bad line never fails the whole file: a torn or unparsable line is skipped with a warning and
//! counted, and a negative or non-finite figure is rejected (read as "not measured", never as 0)
//! with a warning. Blank lines cost nothing: memory grows with the samples held, not with lines.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};

use crate::record::metrics::{ContainerRecord, HostRecord, Record};

/// Warnings kept word for word; later ones are only counted.
pub(crate) const MAX_WARNINGS: usize = 20;

/// A recorded history, grouped into cycles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// `metrics jsonl` or `ML lxc_metrics.json`.
    pub format: &'static str,
    /// Cycles sorted by time; containers in each sorted by vmid.
    pub cycles: Vec<Cycle>,
    /// What the loader assumed or rejected.
    pub notes: Vec<String>,
    /// Work counters of the load, for tests and the curious.
    pub load: LoadStats,
}

/// What loading cost and what it threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadStats {
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Records kept (host and container lines).
    pub records: u64,
    /// Lines that did not parse and were skipped (a torn last line without newline included).
    pub skipped_lines: u64,
    /// Figures rejected because they were negative or not finite.
    pub rejected_values: u64,
    /// Largest line read, bytes: the reader holds one line at a time.
    pub max_line_bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cycle {
    pub ts_usec: i64,
    pub host: Option<HostRecord>,
    pub containers: Vec<ContainerRecord>,
}

/// Reads a history file in either format. `poll_interval` (seconds) spaces ML cycles that carry
/// no timestamp.
pub fn load_history(path: &Path, poll_interval: u64) -> Result<History> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read metrics history {}", path.display()))?;
    let mut history = read_history(BufReader::new(file), poll_interval)
        .with_context(|| format!("invalid metrics history {}", path.display()))?;
    // A warning about one line (or ML element) names the file too.
    for note in &mut history.notes {
        if note.starts_with("line ") || note.starts_with("element ") {
            *note = format!("{}: {note}", path.display());
        }
    }
    Ok(history)
}

/// Parses history text (tests and callers holding the text already).
pub fn parse_history(text: &str, poll_interval: u64) -> Result<History> {
    read_history(text.as_bytes(), poll_interval)
}

/// Reads a history from `input`: a JSON array is the ML sibling's format, anything else JSON
/// lines, read one line at a time.
pub fn read_history(mut input: impl BufRead, poll_interval: u64) -> Result<History> {
    let first = loop {
        let buf = input.fill_buf().context("cannot read history")?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break Some(buf[i]),
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    };
    if first == Some(b'[') {
        let mut text = String::new();
        input
            .read_to_string(&mut text)
            .context("cannot read history")?;
        return crate::commands::replay::parse_ml(&text, poll_interval);
    }
    read_json_lines(input)
}

/// Collects records into cycles keyed by timestamp.
#[derive(Default)]
struct Grouper {
    cycles: BTreeMap<i64, Cycle>,
    stats: LoadStats,
    warnings: Vec<String>,
    unshown: u64,
}

impl Grouper {
    fn warn(&mut self, text: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(text);
        } else {
            self.unshown += 1;
        }
    }

    fn add(&mut self, line_no: u64, record: Record) {
        self.stats.records += 1;
        let ts = match &record {
            Record::Host(h) => h.ts_usec,
            Record::Container(c) => c.ts_usec,
        };
        let cycle = self.cycles.entry(ts).or_insert_with(|| Cycle {
            ts_usec: ts,
            ..Cycle::default()
        });
        match record {
            Record::Host(mut h) => {
                h.time = String::new();
                let bad = reject_host(&mut h);
                cycle.host = Some(h);
                self.rejected(line_no, bad);
            }
            Record::Container(mut c) => {
                c.time = String::new();
                let bad = reject_container(&mut c);
                cycle.containers.push(c);
                self.rejected(line_no, bad);
            }
        }
    }

    fn rejected(&mut self, line_no: u64, bad: Vec<&'static str>) {
        if bad.is_empty() {
            return;
        }
        self.stats.rejected_values += bad.len() as u64;
        self.warn(format!(
            "line {line_no}: negative or non-finite {} rejected (not measured)",
            bad.join(", ")
        ));
    }

    fn finish(mut self) -> History {
        let mut cycles: Vec<Cycle> = std::mem::take(&mut self.cycles).into_values().collect();
        for c in &mut cycles {
            c.containers.sort_by_key(|r| r.vmid);
            c.containers.dedup_by_key(|r| r.vmid);
        }
        let mut notes = std::mem::take(&mut self.warnings);
        if self.unshown > 0 {
            notes.push(format!("{} more warning(s) not shown", self.unshown));
        }
        if self.stats.skipped_lines > 0 {
            notes.push(format!(
                "{} line(s) skipped: not a valid history record",
                self.stats.skipped_lines
            ));
        }
        History {
            format: "metrics jsonl",
            cycles,
            notes,
            load: self.stats,
        }
    }
}

fn read_json_lines(mut input: impl BufRead) -> Result<History> {
    let mut g = Grouper::default();
    let mut line = String::new();
    loop {
        line.clear();
        let n = input.read_line(&mut line).context("cannot read history")?;
        if n == 0 {
            break;
        }
        g.stats.lines += 1;
        g.stats.max_line_bytes = g.stats.max_line_bytes.max(n);
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(text) {
            Ok(r) => g.add(g.stats.lines, r),
            Err(e) => {
                g.stats.skipped_lines += 1;
                let torn = if line.ends_with('\n') {
                    ""
                } else {
                    " (torn last line)"
                };
                g.warn(format!("line {}: skipped{torn}: {e}", g.stats.lines));
            }
        }
        if line.capacity() > 64 * 1024 {
            // One huge line must not keep its buffer for the rest of the file.
            line = String::new();
        }
    }
    Ok(g.finish())
}

/// Sets each negative or non-finite figure to `None`; returns the names of those rejected.
fn reject_floats(fields: &mut [(&'static str, &mut Option<f64>)]) -> Vec<&'static str> {
    let mut bad = Vec::new();
    for (name, v) in fields.iter_mut() {
        if let Some(x) = **v {
            if !x.is_finite() || x < 0.0 {
                **v = None;
                bad.push(*name);
            }
        }
    }
    bad
}

/// Rejects bad figures of a container line (used by `replay` and kept in the history).
pub fn reject_container(c: &mut ContainerRecord) -> Vec<&'static str> {
    reject_floats(&mut [
        ("cpu_percent", &mut c.cpu_percent),
        ("memory_used_mb", &mut c.memory_used_mb),
        ("memory_percent", &mut c.memory_percent),
        ("memory_working_set_mb", &mut c.memory_working_set_mb),
        ("effective_cpus", &mut c.effective_cpus),
        ("cpulimit", &mut c.cpulimit),
        ("throttled_ratio", &mut c.throttled_ratio),
        ("psi_cpu_some_avg10", &mut c.psi_cpu_some_avg10),
        ("psi_memory_some_avg10", &mut c.psi_memory_some_avg10),
        ("psi_memory_full_avg10", &mut c.psi_memory_full_avg10),
    ])
}

fn reject_host(h: &mut HostRecord) -> Vec<&'static str> {
    reject_floats(&mut [("busy_cores", &mut h.busy_cores)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_grouped_into_cycles_by_timestamp_in_time_order() {
        let text = concat!(
            r#"{"kind":"container","ts_usec":20,"vmid":102}"#,
            "\n",
            r#"{"kind":"host","ts_usec":10,"cpus":4}"#,
            "\n",
            r#"{"kind":"container","ts_usec":10,"vmid":102}"#,
            "\n",
            r#"{"kind":"container","ts_usec":10,"vmid":101}"#,
            "\n",
        );
        let h = parse_history(text, 300).unwrap();
        assert_eq!(h.format, "metrics jsonl");
        let shape: Vec<(i64, bool, Vec<u32>)> = h
            .cycles
            .iter()
            .map(|c| {
                (
                    c.ts_usec,
                    c.host.is_some(),
                    c.containers.iter().map(|r| r.vmid).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![(10, true, vec![101, 102]), (20, false, vec![102])]
        );
    }

    #[test]
    fn torn_line_in_the_middle_is_skipped_warned_and_counted() {
        let text = concat!(
            r#"{"kind":"container","ts_usec":10,"vmid":101,"cpu_percent":5.0}"#,
            "\n",
            r#"{"kind":"container","ts_usec":20,"vm"#,
            "\n",
            r#"{"kind":"container","ts_usec":30,"vmid":101,"cpu_percent":7.0}"#,
            "\n",
        );
        let h = parse_history(text, 300).unwrap();
        assert_eq!(h.cycles.len(), 2);
        assert_eq!(h.load.skipped_lines, 1);
        assert_eq!(h.load.records, 2);
        assert!(h.notes[0].starts_with("line 2: skipped: "), "{:?}", h.notes);
        assert_eq!(h.notes[1], "1 line(s) skipped: not a valid history record");
    }

    #[test]
    fn negative_values_are_rejected_not_read_as_zero() {
        let text = concat!(
            r#"{"kind":"container","ts_usec":10,"vmid":101,"cpu_percent":-5.0,"memory_used_mb":-1,"memory_mb":512}"#,
            "\n",
            r#"{"kind":"host","ts_usec":10,"busy_cores":-1.0}"#,
            "\n",
        );
        let h = parse_history(text, 300).unwrap();
        let c = &h.cycles[0].containers[0];
        assert_eq!((c.cpu_percent, c.memory_used_mb), (None, None));
        assert_eq!(c.memory_mb, Some(512));
        assert_eq!(h.cycles[0].host.as_ref().unwrap().busy_cores, None);
        assert_eq!(h.load.rejected_values, 3);
        assert_eq!(
            h.notes,
            vec![
                "line 1: negative or non-finite cpu_percent, memory_used_mb rejected (not measured)",
                "line 2: negative or non-finite busy_cores rejected (not measured)",
            ]
        );
    }

    #[test]
    fn non_finite_value_skips_its_line_with_a_warning() {
        // JSON has no infinity: an overflowing number is the closest a file gets, and serde
        // refuses it, so the line is skipped, never read as 0.
        let text = concat!(
            r#"{"kind":"container","ts_usec":10,"vmid":101,"cpu_percent":1e999}"#,
            "\n",
            r#"{"kind":"container","ts_usec":20,"vmid":101,"cpu_percent":3.0}"#,
            "\n",
        );
        let h = parse_history(text, 300).unwrap();
        assert_eq!(h.load.skipped_lines, 1);
        assert_eq!(h.cycles.len(), 1);
        assert_eq!(h.cycles[0].containers[0].cpu_percent, Some(3.0));
        assert!(h.notes[0].starts_with("line 1: skipped: "), "{:?}", h.notes);
    }

    #[test]
    fn blank_lines_are_streamed_not_held() {
        let mut text = String::new();
        text.push_str(r#"{"kind":"container","ts_usec":10,"vmid":101}"#);
        text.push('\n');
        for _ in 0..200_000 {
            text.push_str("        \n");
        }
        text.push_str(r#"{"kind":"container","ts_usec":20,"vmid":101}"#);
        text.push('\n');
        let h = parse_history(&text, 300).unwrap();
        assert_eq!(h.load.lines, 200_002);
        assert_eq!(h.load.records, 2);
        // One line buffered at a time: the longest line, not the file.
        assert_eq!(h.load.max_line_bytes, 45);
        assert_eq!(h.cycles.len(), 2);
    }

    #[test]
    fn warnings_of_a_history_file_name_the_file_and_the_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"kind":"container","ts_usec":10,"vmid":101,"cpu_percent":-5.0}"#,
                "\n",
                r#"{"kind":"cont"#,
                "\n",
            ),
        )
        .unwrap();
        let h = load_history(&path, 300).unwrap();
        let p = path.display();
        assert_eq!(
            h.notes[0],
            format!("{p}: line 1: negative or non-finite cpu_percent rejected (not measured)")
        );
        assert!(
            h.notes[1].starts_with(&format!("{p}: line 2: skipped: ")),
            "{:?}",
            h.notes
        );
    }

    #[test]
    fn history_with_leading_blank_lines_and_an_array_is_the_ml_format() {
        let h = parse_history("\n\n  [{\"101\": {\"cpu_usage_percent\": 5}}]", 300).unwrap();
        assert_eq!(h.format, "ML lxc_metrics.json");
        assert_eq!(h.cycles[0].containers[0].cpu_percent, Some(5.0));
    }
}
