//! The daemon's cluster duties at the end of each cycle (cluster mode only): publish this node's
//! status file (`record::cluster_status`) and, on the placement leader, advise where containers
//! that do not fit would.

use tracing::{debug, warn};

use crate::act::apply::Report;
use crate::act::notify::Notifier;
use crate::config::Config;
use crate::decide::plan::Plan;
use crate::read::snapshot::{Snapshot, State};
use crate::record::cluster_status::{CycleFacts, Published, StatusPublisher};
use crate::record::events::EventLog;

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
}

/// Kept by the loop across cycles.
#[derive(Debug, Default)]
pub struct ClusterDuty {
    status: StatusPublisher,
}

impl ClusterDuty {
    /// Runs once per cycle, after the changes were applied. A standalone node does nothing.
    pub fn cycle(&mut self, ctx: CycleCtx) {
        let Some(node) = ctx.cfg.cluster_node.as_deref() else {
            return;
        };
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
            leader: false,
            now_usec: crate::service::daemon::now_usec(),
        };
        match self.status.publish(&facts) {
            Ok(Published::Unchanged | Published::NoQuorum) => {}
            Ok(how) => debug!(?how, "status file written"),
            Err(e) => warn!(error = %format!("{e:#}"), "cannot write the cluster status file"),
        }
    }
}
