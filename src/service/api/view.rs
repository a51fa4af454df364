//! Builds the `View` the API serves from what one cycle measured and decided: the same figures as
//! `status --json`, the metrics history and the Prometheus file. Bodies are serialized once per
//! cycle straight from the records (no intermediate JSON trees).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::{MetricsInput, StatusInput, View};
use crate::config::Config;
use crate::decide::plan::{Change, Note, Observation, Plan, Reason};
use crate::read::snapshot::{Snapshot, State};
use crate::record::metrics::{self, ContainerRecord, CycleInfo, HostRecord};
use crate::record::prometheus::ActionCounters;

/// Extra per-container lines the daemon adds (holds), as JSON values by vmid.
pub type Extras = HashMap<u32, Value>;

/// `{"status":"success","data":…}`.
#[derive(Serialize)]
struct Envelope<T> {
    status: &'static str,
    data: T,
}

/// `GET /containers`' data: what `status --json` shows, plus the daemon's holds.
#[derive(Serialize)]
struct ContainersData<'a> {
    changes: &'a [Change],
    notes: &'a [Note],
    observations: &'a [Observation],
    host: &'a HostRecord,
    containers: &'a [ContainerRecord],
    daemon: BTreeMap<u32, &'a Value>,
}

/// `GET /resource/lxc/status`' data: the container's record, its planned change and notes.
#[derive(Serialize)]
struct StatusData<'a> {
    #[serde(flatten)]
    record: &'a ContainerRecord,
    planned: Option<&'a Change>,
    notes: &'a [&'a Reason],
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<&'a Value>,
}

fn body<T: Serialize>(data: T) -> Arc<str> {
    let text = serde_json::to_string(&Envelope {
        status: "success",
        data,
    })
    .unwrap_or_default();
    Arc::from(text)
}

/// The body of `GET /resource/lxc/status` for `vmid`; `None` when it is not running.
pub fn status_body(view: &View, vmid: u32) -> Option<Arc<str>> {
    let rec = view
        .metrics
        .containers
        .get(*view.status.index.get(&vmid)?)?;
    let data = StatusData {
        record: rec,
        planned: view.metrics.planned.iter().find(|c| c.vmid == vmid),
        notes: &view
            .status
            .notes
            .get(&vmid)
            .map(|v| v.iter().collect::<Vec<_>>())
            .unwrap_or_default(),
        daemon: view.status.extras.get(&vmid),
    };
    Some(body(data))
}

fn status_input(plan: &Plan, containers: &[ContainerRecord], extras: &Extras) -> StatusInput {
    let mut notes: HashMap<u32, Vec<Reason>> = HashMap::new();
    for n in &plan.notes {
        notes.entry(n.vmid).or_default().push(n.reason.clone());
    }
    StatusInput {
        index: containers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.vmid, i))
            .collect(),
        notes,
        extras: extras.clone(),
    }
}

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
    let used_mb = plan
        .observations
        .iter()
        .filter_map(|o| Some((o.vmid, o.memory_used_mb?)))
        .collect();
    let containers_body = body(ContainersData {
        changes: &plan.changes,
        notes: &plan.notes,
        observations: &plan.observations,
        host: &host,
        containers: &containers,
        daemon: extras.iter().map(|(k, v)| (*k, v)).collect(),
    });
    View {
        cycle_at: Some(host.time.clone()),
        containers_body,
        status: Arc::new(status_input(plan, &containers, extras)),
        node_body: body(&host),
        host_cpus: snap.host.cpus,
        host_memory_mb: snap.host.mem_total_kib.map(|k| k / 1024),
        used_mb,
        metrics: Arc::new(MetricsInput {
            host,
            containers,
            counters: *counters,
            planned: plan.changes.clone(),
        }),
    }
}
