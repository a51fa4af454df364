//! The daemon's bookkeeping of manual holds in the state: changes made outside the daemon are
//! noticed before each decision, the daemon's own changes are remembered after it applies them.

use serde_json::json;
use tracing::info;

use super::exec::Done;
use super::view::Extras;
use crate::act::apply::Applied;
use crate::decide::hold::{self, OUTSIDE};
use crate::decide::plan::Resource;
use crate::read::snapshot::{EpochUsec, Seen, Snapshot, State};

fn secs_to_usec(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000)
}

/// Puts every resource whose conf no longer holds what the daemon last saw or set on hold for
/// `hold_secs`, from the snapshot's time.
pub fn note_outside_changes(state: &mut State, snap: &Snapshot, hold_secs: u64) {
    let until = snap.taken_at_usec.saturating_add(secs_to_usec(hold_secs));
    for (vmid, resource) in hold::changed_outside(state, snap) {
        info!(vmid, resource = %resource, hold_secs, "changed outside the daemon: on hold");
        hold::add_hold(&mut state.holds, vmid, resource, until, OUTSIDE);
    }
}

/// What `pct` confirmed is what the daemon now expects to see in the conf.
pub fn note_applied(state: &mut State, applied: &[Applied]) {
    for a in applied {
        if let Some(seen) = state.seen.get_mut(&a.change.vmid) {
            if let Some(c) = a.change.cores {
                seen.cores = Some(c.to);
            }
            if let Some(m) = a.change.memory_mb {
                seen.memory_mb = m.to;
            }
        }
    }
}

/// An API change: remembered as seen, and its resource held for the seconds asked.
pub fn note_api_change(state: &mut State, done: &Done, now: EpochUsec) {
    if let Some(seen) = state.seen.get_mut(&done.vmid) {
        if let Some(c) = done.cores {
            seen.cores = Some(c);
        }
        if let Some(m) = done.memory_mb {
            seen.memory_mb = m;
        }
    } else if let (Some(c), Some(m)) = (done.cores, done.memory_mb) {
        state.seen.insert(
            done.vmid,
            Seen {
                cores: Some(c),
                memory_mb: m,
            },
        );
    }
    if let Some((resource, until)) = done.hold.filter(|(_, u)| *u > now) {
        let hold_secs = (until - now) / 1_000_000;
        info!(vmid = done.vmid, resource = %resource, hold_secs, by = %done.caller, "changed through the api: on hold");
        hold::add_hold(&mut state.holds, done.vmid, resource, until, &done.caller);
    }
}

fn rfc3339(usec: EpochUsec) -> String {
    chrono::DateTime::from_timestamp_micros(usec)
        .map_or_else(|| usec.to_string(), |t| t.to_rfc3339())
}

/// What `GET /containers` and the status view add per container: the holds still running at
/// `now`, and the containers the daemon leaves alone because their baseline cannot be read (what
/// `status --json` lists as `baseline_unreadable`).
pub fn extras(state: &State, now: EpochUsec, bad_baselines: impl Iterator<Item = u32>) -> Extras {
    let mut out = Extras::new();
    for vmid in bad_baselines {
        out.insert(
            vmid,
            json!({"baseline_unreadable": "its baseline backup cannot be read: not changed until `lxc_autoscale rebaseline`"}),
        );
    }
    for (vmid, h) in &state.holds {
        let until = |r| hold::held_until(&state.holds, *vmid, r, now).map(rfc3339);
        let (cores, memory) = (until(Resource::Cpu), until(Resource::Memory));
        if cores.is_some() || memory.is_some() {
            let entry = out.entry(*vmid).or_insert_with(|| json!({}));
            entry["hold"] = json!({"cores_until": cores, "memory_until": memory, "by": h.by});
        }
    }
    out
}
