//! Builds the `View` the API serves from what one cycle measured and decided: the same figures as
//! `status --json`, the metrics history and the Prometheus file, rendered once per cycle.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::View;
use crate::config::Config;
use crate::decide::plan::Plan;
use crate::read::snapshot::{Snapshot, State};
use crate::record::metrics::{self, CycleInfo};
use crate::record::prometheus::{self, ActionCounters};

/// Extra per-container lines the daemon adds (holds, running tasks), as JSON values by vmid.
pub type Extras = HashMap<u32, Value>;

/// Everything the API shows after a cycle.
pub fn build(
    cfg: &Config,
    snap: &Snapshot,
    plan: &Plan,
    state: &State,
    cycle: CycleInfo,
    counters: &ActionCounters,
    extras: &Extras,
) -> View {
    let (host, containers) = metrics::records(cfg, snap, plan, state, cycle);
    let mut status_body = HashMap::with_capacity(containers.len());
    let mut used_mb = HashMap::with_capacity(containers.len());
    for rec in &containers {
        let vmid = rec.vmid;
        let mut data = serde_json::to_value(rec).unwrap_or(Value::Null);
        data["planned"] = json!(plan.changes.iter().find(|c| c.vmid == vmid));
        let notes: Vec<_> = plan
            .notes
            .iter()
            .filter(|n| n.vmid == vmid)
            .map(|n| &n.reason)
            .collect();
        data["notes"] = json!(notes);
        if let Some(extra) = extras.get(&vmid) {
            data["daemon"] = extra.clone();
        }
        status_body.insert(vmid, json!({"status": "success", "data": data}).to_string());
    }
    for o in &plan.observations {
        if let Some(used) = o.memory_used_mb {
            used_mb.insert(o.vmid, used);
        }
    }
    let containers_body = json!({"status": "success", "data": {
        "changes": plan.changes,
        "notes": plan.notes,
        "observations": plan.observations,
        "host": host,
        "containers": containers,
        "daemon": extras.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<serde_json::Map<_, _>>(),
    }})
    .to_string();
    View {
        cycle_at: Some(host.time.clone()),
        containers_body,
        status_body,
        node_body: json!({"status": "success", "data": host}).to_string(),
        metrics_text: prometheus::render(&host, &containers, counters),
        host_cpus: snap.host.cpus,
        host_memory_mb: snap.host.mem_total_kib.map(|k| k / 1024),
        used_mb,
    }
}
