//! The daemon's cluster duties (cluster mode only): publish this node's status file
//! (`record::cluster_status`) at the end of each cycle, and, with `placement = "recommend"`, hold
//! or contend for the placement lease (`service::lease`). The leader reads every node's status
//! file and advises moving each container whose scale-up does not fit on its node to the node
//! `decide::placement` ranks first: an event, a log line and a notification, once per container
//! per day. It never migrates anything itself.

use std::time::Duration;

use anyhow::Result;
use tracing::{debug, info, warn};

use crate::act::apply::Report;
use crate::act::notify::Notifier;
use crate::config::{ApiListen, Config, Placement};
use crate::decide::placement::{self, Candidate, Recommendation};
use crate::decide::plan::{Headroom, Plan};
use crate::read::cluster;
use crate::read::snapshot::{EpochUsec, Snapshot, State};
use crate::record::cluster_status::{self, ClusterView, CycleFacts, Published, StatusPublisher};
use crate::record::events::{EventLog, RecommendationFields};
use crate::record::prometheus;
use crate::service::lease::{Holder, Lease};

/// What one cycle hands to the cluster duties.
pub struct CycleCtx<'a> {
    pub cfg: &'a Config,
    pub snap: &'a Snapshot,
    pub plan: &'a Plan,
    pub report: &'a Report,
    /// Whether the cluster had quorum this cycle.
    pub quorum: bool,
    /// The daemon's state: recommendations made are kept there across restarts.
    pub state: &'a mut State,
    pub events: &'a EventLog,
    pub notifier: Option<&'a mut Notifier>,
    /// Marks progress for the watchdog: each notice may wait for Gotify's timeout.
    pub progress: &'a dyn Fn(),
}

/// Kept by the loop across cycles.
#[derive(Debug, Default)]
pub struct ClusterDuty {
    status: StatusPublisher,
    lease: Lease,
    /// Whether this node held the lease at its last check.
    leader: bool,
    /// The `lxc_autoscale_cluster_*` families of the last cycle (with `prometheus_textfile` or
    /// the API on).
    prometheus: String,
}

fn now_usec() -> EpochUsec {
    chrono::Utc::now().timestamp_micros()
}

impl ClusterDuty {
    /// Runs once per cycle, after the changes were applied. A standalone node does nothing.
    pub fn cycle(&mut self, ctx: CycleCtx) {
        let Some(node) = ctx.cfg.cluster_node.as_deref() else {
            return;
        };
        let now = now_usec();
        let leader = self.lead(ctx.cfg, node, ctx.quorum, now);
        let applied = ctx
            .report
            .applied
            .iter()
            .map(|a| (a.change.vmid, a.summary.clone(), a.change.why().to_string()))
            .collect();
        let facts = CycleFacts {
            cfg: ctx.cfg,
            node,
            snap: ctx.snap,
            plan: ctx.plan,
            applied,
            quorum: ctx.quorum,
            leader,
            recommended: &ctx.state.recommended,
            holds: &ctx.state.holds,
            now_usec: now,
        };
        match self.status.publish(&facts) {
            Ok(Published::Unchanged | Published::NoQuorum) => {}
            Ok(how) => debug!(?how, "status file written"),
            Err(e) => warn!(error = %format!("{e:#}"), "cannot write the cluster status file"),
        }
        if leader {
            advise(
                ctx.cfg,
                ctx.state,
                ctx.events,
                (ctx.notifier, ctx.progress),
                now,
            );
        }
        self.prometheus.clear();
        let exported = !ctx.cfg.prometheus_textfile.as_os_str().is_empty()
            || ctx.cfg.api.listen_addr().is_ok_and(|l| l != ApiListen::Off);
        if exported {
            match cluster_status::read_cluster(&ctx.cfg.pve_root, now) {
                Ok(view) => self.prometheus = prometheus::render_cluster(&view),
                Err(e) => warn!(error = %format!("{e:#}"), "cannot read the cluster status"),
            }
        }
    }

    /// The `lxc_autoscale_cluster_*` families of the last cycle; empty outside cluster mode.
    pub fn prometheus(&self) -> &str {
        &self.prometheus
    }

    /// Takes, keeps or gives up the placement lease; whether this node leads now.
    fn lead(&mut self, cfg: &Config, node: &str, quorum: bool, now: EpochUsec) -> bool {
        let leads = cfg.placement == Placement::Recommend
            && quorum
            && match self.lease.hold(&cfg.pve_root, node, now / 1_000_000) {
                Ok(Holder::Me { new }) => {
                    if new || !self.leader {
                        info!(node, "this node is the placement leader");
                    }
                    true
                }
                Ok(Holder::Other(holder)) => {
                    if self.leader {
                        info!(
                            holder = holder.as_deref().unwrap_or("unknown"),
                            "another node holds the placement lease"
                        );
                    }
                    false
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "cannot hold the placement lease");
                    false
                }
            };
        self.leader = leads;
        leads
    }

    /// Between cycles: refreshes the lease when it is due, so a long `poll_interval` never lets
    /// it expire.
    pub fn between_cycles(&mut self, cfg: &Config, quorum: bool) {
        let now = now_usec();
        if self.leader && self.lease.refresh_due(now / 1_000_000) {
            if let Some(node) = cfg.cluster_node.as_deref() {
                self.lead(cfg, node, quorum, now);
            }
        }
    }

    /// How long the loop may wait before `between_cycles` is due, while this node leads.
    pub fn wake_in(&self) -> Option<Duration> {
        let now = now_usec() / 1_000_000;
        self.lease
            .next_refresh_in(now)
            .filter(|_| self.leader)
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0).max(1)))
    }
}

/// The advice the status files give now: one recommendation per container that some online,
/// fresh, not excluded node has room for. Requests of stale nodes are left out.
pub fn current_plan(cfg: &Config, now: EpochUsec) -> Result<Vec<Recommendation>> {
    let view = cluster_status::read_cluster(&cfg.pve_root, now)?;
    plan_from(cfg, &view)
}

/// `current_plan` on a view already read; `.members` says which nodes are online and `.vmlist`
/// where each container is now (a status file can outlive its node's hold on a container).
fn plan_from(cfg: &Config, view: &ClusterView) -> Result<Vec<Recommendation>> {
    let members = cluster::read_members(&cfg.pve_root)?.unwrap_or_default();
    // Without `.vmlist` no shortfall can be told current: no advice beats advice to move a
    // container to where it already runs, which would also be held back for a day.
    let vmlist = cluster::read_vmlist(&cfg.pve_root)?
        .map(|list| cluster::containers_by_node(&list))
        .ok_or_else(|| anyhow::anyhow!("there is no .vmlist to say where containers are"))?;
    let candidates: Vec<Candidate> = view
        .nodes
        .iter()
        .map(|n| Candidate {
            node: n.status.node.clone(),
            online: members
                .nodelist
                .get(&n.status.node)
                .is_some_and(|m| m.online != Some(0)),
            stale: n.stale,
            headroom: Headroom {
                cores: n.status.cpu.headroom,
                memory_mb: n.status.memory.headroom,
            },
            used_cores: n.status.cpu.used,
        })
        .collect();
    let requests = placement::requests_of(
        view.nodes.iter().filter(|n| !n.stale).flat_map(|n| {
            n.status
                .shortfalls
                .iter()
                .map(|s| (n.status.node.as_str(), s.shortfall()))
        }),
        &vmlist,
    );
    Ok(placement::recommend(
        &requests,
        &candidates,
        &cfg.placement_exclude_nodes,
    ))
}

/// On the leader: publishes each recommendation not made in the last day.
fn advise(
    cfg: &Config,
    state: &mut State,
    events: &EventLog,
    (mut notifier, progress): (Option<&mut Notifier>, &dyn Fn()),
    now: EpochUsec,
) {
    let view = cluster_status::read_cluster(&cfg.pve_root, now);
    let recs = match view.and_then(|view| {
        // Advice an earlier leader gave is not repeated within its day.
        cluster_status::merge_recommended(&view, &mut state.recommended);
        plan_from(cfg, &view)
    }) {
        Ok(r) => r,
        Err(e) => {
            return warn!(error = %format!("{e:#}"), "cannot read the cluster status for placement")
        }
    };
    let due: Vec<&Recommendation> = recs
        .iter()
        .filter(|r| placement::due(&state.recommended, r.vmid, now))
        .collect();
    for r in due {
        let why = r.why().to_string();
        let command = r.command();
        info!(vmid = r.vmid, from = %r.from, target = %r.target, %command, "placement advice: {why}");
        let fields = RecommendationFields {
            vmid: r.vmid,
            target: &r.target,
            why: &why,
            command: &command,
        };
        if let Err(e) = events.record_recommendation(fields) {
            warn!(vmid = r.vmid, error = %format!("{e:#}"), "cannot write event log");
        }
        if let Some(n) = notifier.as_deref_mut() {
            let title = format!("lxc_autoscale: CT {} does not fit on {}", r.vmid, r.from);
            n.send(&title, &format!("{why}\nrun: {command}"), 5);
            progress();
        }
        state.recommended.insert(r.vmid, now);
    }
}
