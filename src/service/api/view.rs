//! Builds the `View` the API serves from what one cycle measured and decided: the same figures as
//! `status --json`, the metrics history and the Prometheus file. Bodies are serialized on request
//! straight from the records (no intermediate JSON trees); `GET /containers`' body (0.4 MB at
//! 1000 containers) once per cycle at most: on its first request, or by the loop while a client
//! polls it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::Value;

use super::{MetricsInput, StatusInput, View};
use crate::decide::plan::{Change, Note, Observation, Plan, Reason};
use crate::read::snapshot::Snapshot;
use crate::record::metrics::{ContainerRecord, HostRecord};
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
    let notes: Vec<&Reason> = view
        .status
        .notes
        .iter()
        .filter(|n| n.vmid == vmid)
        .map(|n| &n.reason)
        .collect();
    let data = StatusData {
        record: view.record(vmid)?,
        planned: view.metrics.planned.iter().find(|c| c.vmid == vmid),
        notes: &notes,
        daemon: view.status.extras.get(&vmid),
    };
    Some(body(data))
}

/// `GET /containers`' body: rendered on the first request after a cycle (or by the loop when the
/// previous cycle's was asked for) and shared by every request until the next one; a cycle after
/// one nobody asked about renders nothing.
#[derive(Debug, Default)]
pub struct ContainersBody {
    /// The records, the host and the planned changes.
    metrics: Arc<MetricsInput>,
    /// The notes, the observations and the holds (`extras`).
    status: Arc<StatusInput>,
    body: OnceLock<Arc<str>>,
    /// A request asked for the body (the loop's own render does not count): someone is polling.
    asked: AtomicBool,
}

impl ContainersBody {
    /// The body when it was already rendered.
    pub fn rendered(&self) -> Option<Arc<str>> {
        self.body.get().map(Arc::clone)
    }

    /// True when a request asked for this cycle's body.
    pub fn was_asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    /// The body for a request, rendered now if this is the cycle's first (concurrent first
    /// requests wait for the one rendering).
    pub fn get(&self) -> Arc<str> {
        self.asked.store(true, Ordering::Relaxed);
        self.render()
    }

    /// The body, rendered now if nobody did yet; not a request (the loop renders ahead of one).
    pub fn render(&self) -> Arc<str> {
        let body = self.body.get_or_init(|| {
            body(ContainersData {
                changes: &self.metrics.planned,
                notes: &self.status.notes,
                observations: &self.status.observations,
                host: &self.metrics.host,
                containers: &self.metrics.containers,
                daemon: self.status.extras.iter().map(|(k, v)| (*k, v)).collect(),
            })
        });
        Arc::clone(body)
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
    let status = Arc::new(StatusInput {
        notes: plan.notes.clone(),
        observations: plan.observations.clone(),
        extras: extras.clone(),
    });
    let node_body = body(&host);
    let cycle_at = Some(host.time.clone());
    let metrics = Arc::new(MetricsInput {
        host,
        containers,
        counters: *counters,
        planned: plan.changes.clone(),
    });
    View {
        cycle_at,
        containers: Arc::new(ContainersBody {
            metrics: Arc::clone(&metrics),
            status: Arc::clone(&status),
            body: OnceLock::new(),
            asked: AtomicBool::new(false),
        }),
        status,
        node_body,
        host_cpus: snap.host.cpus,
        host_memory_mb: snap.host.mem_total_kib.map(|k| k / 1024),
        metrics,
    }
}
