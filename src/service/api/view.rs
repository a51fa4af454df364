//! Builds the `View` the API serves from what one cycle measured and decided: the same figures as
//! `status --json`, the metrics history and the Prometheus file. The loop renders `GET
//! /containers`' body (0.4 MB at 1000 containers) once per cycle and keeps where each container's
//! record lies in it; the records themselves are not kept. A status body is cut from that text
//! and completed on request; a scrape parses the records back (`Containers::records`). Holding
//! the body and the records both cost 0.5 MB more while a client polled `/containers`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::{MemoryUse, MetricsInput, StatusInput, View};
use crate::decide::plan::{Change, Plan, Reason};
use crate::read::snapshot::Snapshot;
use crate::record::metrics::{ContainerRecord, HostRecord};
use crate::record::prometheus::ActionCounters;

/// Extra per-container lines the daemon adds (holds), as JSON values by vmid.
pub type Extras = HashMap<u32, Value>;

/// Room reserved per container for `GET /containers`' body: a record with every figure and its
/// observation take about 0.6 KiB.
const RESERVE_BYTES_PER_RECORD: usize = 1024;

/// Where one container's record lies in the `/containers` body: the byte offsets of its JSON
/// object, from its `{` to just after its `}`.
#[derive(Debug, Clone, Copy)]
struct RecordSpan {
    vmid: u32,
    start: u32,
    end: u32,
}

/// `GET /containers`' body and where each running container's record lies in it, by VMID.
#[derive(Debug, Default)]
pub struct Containers {
    pub body: Arc<String>,
    spans: Vec<RecordSpan>,
}

impl Containers {
    /// The record of a running container as JSON (an object); `None` when it is not running.
    fn record_json(&self, vmid: u32) -> Option<&str> {
        let i = self.spans.binary_search_by_key(&vmid, |s| s.vmid).ok()?;
        let s = self.spans[i];
        self.body.get(s.start as usize..s.end as usize)
    }

    /// Whether the container was running at the last cycle.
    pub fn running(&self, vmid: u32) -> bool {
        self.spans.binary_search_by_key(&vmid, |s| s.vmid).is_ok()
    }

    /// The records the body was rendered from, parsed back exactly (`parse_record_exact`).
    pub fn records(&self) -> Result<Vec<ContainerRecord>> {
        self.spans
            .iter()
            .map(|s| {
                let text = self
                    .body
                    .get(s.start as usize..s.end as usize)
                    .unwrap_or("");
                parse_record_exact(text)
                    .with_context(|| format!("container {}: its published record", s.vmid))
            })
            .collect()
    }
}

/// A record as serde_json wrote it (one flat object), read back with every figure exact.
/// serde_json's own parser may put a float 1 ULP off, so a scrape would differ from the textfile
/// in a last digit; its `float_roundtrip` feature fixes that but made the daemon's resident code
/// 0.6 MB larger. Each number with a fraction or an exponent is read by std's exact parser
/// instead, and the record is built from the values.
fn parse_record_exact(text: &str) -> Result<ContainerRecord> {
    let mut object = serde_json::Map::new();
    for (key, raw) in flat_members(text)? {
        let value = if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            && raw.contains(['.', 'e', 'E'])
        {
            let figure: f64 = raw.parse().with_context(|| format!("{key}: {raw}"))?;
            Value::from(figure)
        } else {
            serde_json::from_str(raw).with_context(|| format!("{key}: {raw}"))?
        };
        object.insert(key, value);
    }
    Ok(serde_json::from_value(Value::Object(object))?)
}

/// The members of a JSON object as (key, the value's text); a nested value is one member.
fn flat_members(text: &str) -> Result<Vec<(String, &str)>> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .context("not a JSON object")?;
    let mut members = Vec::new();
    let (mut start, mut depth, mut in_string, mut escaped) = (0, 0u32, false, false);
    for (i, b) in inner.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                members.push(member(&inner[start..i])?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner.trim().is_empty() {
        members.push(member(&inner[start..])?);
    }
    Ok(members)
}

/// `"key":value` as the key and the value's text.
fn member(text: &str) -> Result<(String, &str)> {
    let text = text.trim();
    // The key is a string; its end is the first quote not escaped.
    let mut escaped = false;
    let end = text
        .bytes()
        .enumerate()
        .skip(1)
        .find_map(|(i, b)| match b {
            _ if escaped => {
                escaped = false;
                None
            }
            b'\\' => {
                escaped = true;
                None
            }
            b'"' => Some(i),
            _ => None,
        })
        .filter(|_| text.starts_with('"'))
        .with_context(|| format!("no key in {text:?}"))?;
    let key: String = serde_json::from_str(&text[..=end])?;
    let value = text[end + 1..]
        .trim_start()
        .strip_prefix(':')
        .with_context(|| format!("{key}: no value"))?
        .trim();
    Ok((key, value))
}

/// `{"status":"success","data":…}`.
#[derive(Serialize)]
struct Envelope<T> {
    status: &'static str,
    data: T,
}

/// What `GET /resource/lxc/status` adds after the container's record: its planned change, its
/// notes and the daemon's holds.
#[derive(Serialize)]
struct StatusTail<'a> {
    planned: Option<&'a Change>,
    notes: &'a [&'a Reason],
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<&'a Value>,
}

fn body<T: Serialize>(data: T) -> Arc<String> {
    let text = serde_json::to_string(&Envelope {
        status: "success",
        data,
    })
    .unwrap_or_default();
    Arc::new(text)
}

/// Serializes plain data (no maps with non-string keys, no failing `Serialize`), which cannot
/// fail into a `Vec`.
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The body of `GET /resource/lxc/status` for `vmid`: its record's fields, then `planned`,
/// `notes` and (when held) `daemon`; `None` when it is not running.
pub fn status_body(view: &View, vmid: u32) -> Option<Arc<String>> {
    let record = view.containers.record_json(vmid)?;
    let notes: Vec<&Reason> = view
        .status
        .notes
        .iter()
        .filter(|n| n.vmid == vmid)
        .map(|n| &n.reason)
        .collect();
    let tail = serde_json::to_string(&StatusTail {
        planned: view.metrics.planned.iter().find(|c| c.vmid == vmid),
        notes: &notes,
        daemon: view.status.extras.get(&vmid),
    })
    .ok()?;
    // `{record fields` + `,` + `tail fields}` + `}`: one object, as a flattened struct would be.
    let fields = record.strip_suffix('}')?;
    let tail = tail.strip_prefix('{')?;
    Some(Arc::new(format!(
        "{{\"status\":\"success\",\"data\":{fields},{tail}}}"
    )))
}

/// `GET /containers`' body: `{"status":"success","data":{"changes","notes","observations","host",
/// "containers","daemon"}}`, as `status --json` shows the cycle plus the holds, with each record's
/// place noted as it is written.
fn render_containers(
    plan: &Plan,
    host: &HostRecord,
    records: &[ContainerRecord],
    extras: &Extras,
) -> Containers {
    // Reserved, not touched: pages count as resident only once written, so a generous guess
    // costs no memory and saves regrowing a 0.4 MB buffer.
    let mut out = Vec::with_capacity(RESERVE_BYTES_PER_RECORD * (records.len() + 4));
    out.extend_from_slice(b"{\"status\":\"success\",\"data\":{\"changes\":");
    push_json(&mut out, &plan.changes);
    out.extend_from_slice(b",\"notes\":");
    push_json(&mut out, &plan.notes);
    out.extend_from_slice(b",\"observations\":");
    push_json(&mut out, &plan.observations);
    out.extend_from_slice(b",\"host\":");
    push_json(&mut out, host);
    out.extend_from_slice(b",\"containers\":[");
    let mut spans = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        push_json(&mut out, r);
        spans.push((r.vmid, start, out.len()));
    }
    out.extend_from_slice(b"],\"daemon\":");
    let daemon: BTreeMap<u32, &Value> = extras.iter().map(|(k, v)| (*k, v)).collect();
    push_json(&mut out, &daemon);
    out.extend_from_slice(b"}}");
    let Ok(mut body) = String::from_utf8(out) else {
        return Containers::default();
    };
    // Gives back the untouched reserve (address space only; its own mapping shrinks in place).
    body.shrink_to_fit();
    // Records come in the snapshot's order, by VMID; a body of 4 GiB is never reached.
    let spans = spans
        .into_iter()
        .filter_map(|(vmid, start, end)| {
            Some(RecordSpan {
                vmid,
                start: u32::try_from(start).ok()?,
                end: u32::try_from(end).ok()?,
            })
        })
        .collect();
    Containers {
        body: Arc::new(body),
        spans,
    }
}

/// Everything the API shows after a cycle, from its plan and its records (`metrics::records`,
/// built once for the history, the Prometheus file and the API).
pub fn build(
    snap: &Snapshot,
    plan: &Plan,
    (host, containers): (HostRecord, Vec<ContainerRecord>),
    counters: &ActionCounters,
    extras: &Extras,
) -> View {
    let rendered = render_containers(plan, &host, &containers, extras);
    let memory = containers
        .iter()
        .filter_map(|r| {
            Some(MemoryUse {
                vmid: r.vmid,
                used_mb: r.memory_used_mb?,
                working_set_mb: r.memory_working_set_mb,
            })
        })
        .collect();
    drop(containers);
    let status = StatusInput {
        notes: plan.notes.clone(),
        memory,
        extras: extras.clone(),
    };
    View {
        cycle_at: Some(host.time.clone()),
        node_body: body(&host),
        containers: rendered,
        status,
        host_cpus: snap.host.cpus,
        host_memory_mb: snap.host.mem_total_kib.map(|k| k / 1024),
        metrics: MetricsInput {
            host,
            counters: *counters,
            planned: plan.changes.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::plan::{Managed, Note, Observation, Step};

    fn record(vmid: u32, cpu: Option<f64>) -> ContainerRecord {
        ContainerRecord {
            ts_usec: 1_700_000_000_000_000,
            time: "2023-11-14T22:13:20Z".into(),
            vmid,
            name: Some(format!("ct{vmid}")),
            cores: Some(2),
            memory_mb: Some(1024),
            cpu_percent: cpu,
            memory_used_mb: Some(300.25),
            ..ContainerRecord::default()
        }
    }

    fn plan() -> Plan {
        let mut plan = Plan::default();
        plan.changes.push(Change {
            vmid: 102,
            cores: Some(Step { from: 2, to: 3 }),
            memory_mb: None,
            reasons: vec![Reason::Ignored],
        });
        plan.notes.push(Note {
            vmid: 101,
            reason: Reason::Ignored,
        });
        plan.observations.push(Observation {
            vmid: 101,
            name: Some("ct101".into()),
            tier: None,
            managed: Managed::Yes,
            cores: Some(2),
            memory_mb: Some(1024),
            cpu_percent: Some(12.5),
            memory_used_mb: Some(300.25),
            memory_percent: Some(29.3),
        });
        plan
    }

    fn host() -> HostRecord {
        HostRecord {
            time: "2023-11-14T22:13:20Z".into(),
            cpus: Some(8),
            ..HostRecord::default()
        }
    }

    /// Percentages serde_json's default parser reads back 1 ULP off (found by a search over
    /// random ones).
    #[allow(clippy::excessive_precision)]
    const AWKWARD: [f64; 3] = [11.290774160688077, 95.87872702291189, 36.932272945145996];

    fn records() -> Vec<ContainerRecord> {
        vec![
            record(101, Some(AWKWARD[0])),
            record(102, Some(AWKWARD[1])),
            record(105, Some(AWKWARD[2])),
        ]
    }

    fn hold() -> Extras {
        Extras::from([(102, serde_json::json!({"holds": ["cpu"]}))])
    }

    /// How the bodies were rendered before the records' places were noted: derived serializers.
    #[derive(Serialize)]
    struct ContainersData<'a> {
        changes: &'a [Change],
        notes: &'a [Note],
        observations: &'a [Observation],
        host: &'a HostRecord,
        containers: &'a [ContainerRecord],
        daemon: BTreeMap<u32, &'a Value>,
    }

    #[derive(Serialize)]
    struct StatusData<'a> {
        #[serde(flatten)]
        record: &'a ContainerRecord,
        planned: Option<&'a Change>,
        notes: &'a [&'a Reason],
        #[serde(skip_serializing_if = "Option::is_none")]
        daemon: Option<&'a Value>,
    }

    fn view() -> View {
        build(
            &Snapshot::default(),
            &plan(),
            (host(), records()),
            &ActionCounters::default(),
            &hold(),
        )
    }

    #[test]
    fn containers_body_is_byte_for_byte_the_derived_rendering() {
        let (plan, recs, extras) = (plan(), records(), hold());
        let expected = body(ContainersData {
            changes: &plan.changes,
            notes: &plan.notes,
            observations: &plan.observations,
            host: &host(),
            containers: &recs,
            daemon: extras.iter().map(|(k, v)| (*k, v)).collect(),
        });
        assert_eq!(view().containers.body, expected);
    }

    #[test]
    fn status_body_is_the_record_flattened_with_its_change_notes_and_hold() {
        let (plan, recs, extras) = (plan(), records(), hold());
        let v = view();
        let held = StatusData {
            record: &recs[1],
            planned: Some(&plan.changes[0]),
            notes: &[],
            daemon: extras.get(&102),
        };
        assert_eq!(status_body(&v, 102), Some(body(held)));
        let noted = StatusData {
            record: &recs[0],
            planned: None,
            notes: &[&plan.notes[0].reason],
            daemon: None,
        };
        assert_eq!(status_body(&v, 101), Some(body(noted)));
    }

    #[test]
    fn a_container_that_was_not_running_has_no_status_body() {
        let v = view();
        assert_eq!(status_body(&v, 103), None);
        assert_eq!(status_body(&v, 100), None);
        assert_eq!(status_body(&v, 106), None);
        assert!(!v.containers.running(103));
        assert!(v.containers.running(105));
    }

    #[test]
    fn records_parse_back_from_the_body_exactly() {
        let back = view().containers.records().expect("records parse");
        assert_eq!(back, records());
        let cpu: Vec<f64> = back.iter().filter_map(|r| r.cpu_percent).collect();
        assert_eq!(
            cpu.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
            AWKWARD.map(f64::to_bits)
        );
    }

    #[test]
    fn memory_is_kept_by_vmid_with_the_autoscalers_cut_floor() {
        let mut recs = records();
        recs[0].memory_working_set_mb = Some(900.0);
        recs[2].memory_used_mb = None;
        let v = build(
            &Snapshot::default(),
            &plan(),
            (host(), recs),
            &ActionCounters::default(),
            &hold(),
        );
        let m = v.memory(101).expect("measured");
        assert_eq!((m.used_mb, m.working_set_mb), (300.25, Some(900.0)));
        // 900 + 10 % of it.
        assert_eq!(m.floor_mb(), 990);
        // No working set: used memory plus the 64 MB minimum margin.
        assert_eq!(v.memory(102).expect("measured").floor_mb(), 365);
        assert_eq!(v.memory(105), None, "not measured");
        assert_eq!(v.memory(103), None, "not running");
    }

    #[test]
    fn flat_members_split_at_commas_outside_strings_and_nested_values() {
        let members = flat_members(r#"{"a":1.5,"b":"x,\"y\":2","c":[1,{"d":2}],"e\"f":-3e-2}"#)
            .expect("an object");
        assert_eq!(
            members,
            vec![
                ("a".to_string(), "1.5"),
                ("b".to_string(), r#""x,\"y\":2""#),
                ("c".to_string(), r#"[1,{"d":2}]"#),
                ("e\"f".to_string(), "-3e-2"),
            ]
        );
        assert_eq!(flat_members("{}").expect("empty"), vec![]);
        assert!(flat_members("[1]").is_err());
        assert!(flat_members(r#"{"a"}"#).is_err());
    }

    #[test]
    fn a_record_reads_back_with_its_figures_exact_where_serde_json_is_off() {
        let text = r#"{"ts_usec":1,"time":"t","vmid":101,"managed":"yes","cores":2,"cpu_percent":11.290774160688077,"memory_mb":1024}"#;
        let sloppy: ContainerRecord = serde_json::from_str(text).expect("serde_json reads it");
        assert_ne!(
            sloppy.cpu_percent,
            Some(AWKWARD[0]),
            "serde_json's default parser is exact here now: this test no longer shows anything"
        );
        let exact = parse_record_exact(text).expect("a record");
        assert_eq!(
            exact.cpu_percent.map(f64::to_bits),
            Some(AWKWARD[0].to_bits())
        );
        assert_eq!(
            (exact.vmid, exact.cores, exact.memory_mb),
            (101, Some(2), Some(1024))
        );
        assert_eq!(exact.managed, Some(Managed::Yes));
        assert!(parse_record_exact(r#"{"vmid":"x"}"#).is_err());
    }
}
