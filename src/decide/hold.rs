//! Manual holds: a resource changed by hand (through the API, the Proxmox GUI or `pct set`) is left
//! alone by the autoscaler until its hold ends, so the next cycle does not undo the admin's change.
//! Pure: the time is the snapshot's.

use std::collections::BTreeMap;

use crate::decide::plan::{Note, Reason, Resource};
use crate::read::snapshot::{EpochUsec, Hold, Snapshot, State};

/// Who a change the daemon did not make is attributed to.
pub const OUTSIDE: &str = "outside the daemon";

/// Resources whose conf no longer holds what the daemon last saw or set.
pub fn changed_outside(state: &State, snap: &Snapshot) -> Vec<(u32, Resource)> {
    let mut out = Vec::new();
    for c in &snap.containers {
        let (Some(conf), Some(seen)) = (c.conf.as_ref(), state.seen.get(&c.vmid)) else {
            continue;
        };
        if conf.cores != seen.cores {
            out.push((c.vmid, Resource::Cpu));
        }
        if conf.memory_mb != seen.memory_mb {
            out.push((c.vmid, Resource::Memory));
        }
    }
    out
}

/// Holds `resource` of `vmid` until `until`, attributed to `by`; a longer hold already there stays.
pub fn add_hold(
    holds: &mut BTreeMap<u32, Hold>,
    vmid: u32,
    resource: Resource,
    until: EpochUsec,
    by: &str,
) {
    let h = holds.entry(vmid).or_default();
    let slot = match resource {
        Resource::Cpu => &mut h.cores_until_usec,
        Resource::Memory => &mut h.memory_until_usec,
    };
    if slot.map_or(true, |u| u < until) {
        *slot = Some(until);
        h.by = by.to_string();
    }
}

/// The end of the hold on `resource` of `vmid`, when it is still running at `now`.
pub fn held_until(
    holds: &BTreeMap<u32, Hold>,
    vmid: u32,
    resource: Resource,
    now: EpochUsec,
) -> Option<EpochUsec> {
    let h = holds.get(&vmid)?;
    let until = match resource {
        Resource::Cpu => h.cores_until_usec,
        Resource::Memory => h.memory_until_usec,
    }?;
    (until > now).then_some(until)
}

/// The note saying why `resource` of `vmid` is left alone, while a hold on it runs at `now`.
pub fn held_note(
    holds: &BTreeMap<u32, Hold>,
    vmid: u32,
    resource: Resource,
    now: EpochUsec,
) -> Option<Note> {
    let until = held_until(holds, vmid, resource, now)?;
    let by = holds.get(&vmid).map(|h| h.by.clone()).unwrap_or_default();
    Some(Note {
        vmid,
        reason: Reason::Held {
            resource,
            until_usec: until,
            by,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::snapshot::{ContainerSample, CtConf, Seen};

    #[test]
    fn a_running_hold_gives_a_typed_note_and_an_ended_one_none() {
        let mut holds = BTreeMap::new();
        add_hold(&mut holds, 101, Resource::Cpu, 2_000, "uid 0");
        assert_eq!(
            held_note(&holds, 101, Resource::Cpu, 1_000),
            Some(Note {
                vmid: 101,
                reason: Reason::Held {
                    resource: Resource::Cpu,
                    until_usec: 2_000,
                    by: "uid 0".into()
                }
            })
        );
        assert_eq!(held_note(&holds, 101, Resource::Cpu, 2_000), None);
        assert_eq!(held_note(&holds, 101, Resource::Memory, 1_000), None);
        assert_eq!(held_note(&holds, 102, Resource::Cpu, 1_000), None);
    }

    #[test]
    fn a_conf_that_differs_from_what_was_seen_was_changed_outside() {
        let mut state = State::default();
        state.seen.insert(
            101,
            Seen {
                cores: Some(2),
                memory_mb: 1024,
            },
        );
        state.seen.insert(
            102,
            Seen {
                cores: None,
                memory_mb: 512,
            },
        );
        let ct = |vmid, cores, memory_mb| ContainerSample {
            vmid,
            conf: Some(CtConf {
                cores,
                memory_mb,
                ..CtConf::default()
            }),
            ..ContainerSample::default()
        };
        let snap = Snapshot {
            containers: vec![
                ct(101, Some(4), 1024),
                ct(102, None, 512),
                ct(103, Some(1), 64),
            ],
            ..Snapshot::default()
        };
        assert_eq!(changed_outside(&state, &snap), vec![(101, Resource::Cpu)]);
    }
}
