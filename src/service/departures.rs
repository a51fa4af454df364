//! Containers that left this node (cluster mode): a `migrated` event when `.vmlist` puts a
//! container seen here last cycle on another node, a `destroyed` event when `.vmlist` no longer
//! lists it. Its local samples are already gone: the state keeps only what the snapshot holds.
//! `.vmlist` is read only in a cycle where a container left, so a steady cycle reads nothing more.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use crate::config::Config;
use crate::read::cluster;
use crate::read::snapshot::{Snapshot, State};
use crate::record::events::EventLog;

/// Where a container went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Departure {
    Migrated { to: String },
    Destroyed,
}

/// The containers of `before` missing from `now`, by what `vmlist` (vmid -> node) says. One that
/// `vmlist` still puts on `me` only stopped: it is not listed.
pub fn departures(
    before: &BTreeSet<u32>,
    now: &BTreeSet<u32>,
    vmlist: &BTreeMap<u32, String>,
    me: &str,
) -> Vec<(u32, Departure)> {
    before
        .difference(now)
        .filter_map(|&vmid| match vmlist.get(&vmid) {
            Some(node) if node == me => None,
            Some(node) => Some((vmid, Departure::Migrated { to: node.clone() })),
            None => Some((vmid, Departure::Destroyed)),
        })
        .collect()
}

/// Records an event for each container seen with a conf last cycle (`before`) that left `snap`.
pub fn note(cfg: &Config, before: &State, snap: &Snapshot, events: &EventLog) {
    let Some(me) = &cfg.cluster_node else {
        return;
    };
    let now: BTreeSet<u32> = snap
        .containers
        .iter()
        .filter(|c| c.conf.is_some())
        .map(|c| c.vmid)
        .collect();
    let seen: BTreeSet<u32> = before.seen.keys().copied().collect();
    if seen.is_subset(&now) {
        return;
    }
    let vmlist = match cluster::read_vmlist(&cfg.pve_root) {
        Ok(Some(list)) => cluster::containers_by_node(&list),
        Ok(None) => {
            return warn!("containers left this node, but there is no .vmlist to say where")
        }
        Err(e) => return warn!(error = %format!("{e:#}"), "cannot tell where containers went"),
    };
    for (vmid, departure) in departures(&seen, &now, &vmlist, me) {
        let (action, text) = match departure {
            Departure::Migrated { to } => ("migrated", format!("moved to node {to}")),
            Departure::Destroyed => ("destroyed", "no longer in the cluster's .vmlist".into()),
        };
        info!(vmid, action, "{text}");
        if let Err(e) = events.record(vmid, action, &text) {
            warn!(vmid, error = %format!("{e:#}"), "cannot write event log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_gone_from_here_is_migrated_or_destroyed_by_vmlist() {
        let before: BTreeSet<u32> = [101, 102, 103, 104].into();
        let now: BTreeSet<u32> = [104].into();
        let vmlist: BTreeMap<u32, String> = [
            (101, "n2".to_string()),
            (103, "n1".to_string()),
            (104, "n1".to_string()),
        ]
        .into();
        assert_eq!(
            departures(&before, &now, &vmlist, "n1"),
            [
                (101, Departure::Migrated { to: "n2".into() }),
                (102, Departure::Destroyed)
            ]
        );
    }
}
