//! Manual holds: a resource changed by hand (through the API, the Proxmox GUI or `pct set`) is left
//! alone by the autoscaler until its hold ends, so the next cycle does not undo the admin's change.
//! Pure: the time is the snapshot's.

use std::collections::BTreeMap;

use crate::decide::plan::{Change, Note, Plan, Reason, Resource};
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

fn resource_of(r: &Reason) -> Option<Resource> {
    match r {
        Reason::Scaled { reading, .. } => Some(reading.resource),
        Reason::CutToHeadroom { resource, .. } => Some(*resource),
        _ => None,
    }
}

/// The plan without the parts that touch held resources; each skipped part becomes a note with
/// `Reason::Held`.
pub fn skip_held(mut plan: Plan, holds: &BTreeMap<u32, Hold>, now: EpochUsec) -> Plan {
    if holds.is_empty() {
        return plan;
    }
    let mut kept = Vec::with_capacity(plan.changes.len());
    for mut change in std::mem::take(&mut plan.changes) {
        for resource in [Resource::Cpu, Resource::Memory] {
            let touched = match resource {
                Resource::Cpu => change.cores.is_some(),
                Resource::Memory => change.memory_mb.is_some(),
            };
            let Some(until) = held_until(holds, change.vmid, resource, now).filter(|_| touched)
            else {
                continue;
            };
            drop_part(&mut change, resource);
            let by = holds
                .get(&change.vmid)
                .map(|h| h.by.clone())
                .unwrap_or_default();
            let reason = Reason::Held {
                resource,
                until_usec: until,
                by,
            };
            plan.notes.push(Note {
                vmid: change.vmid,
                reason,
            });
        }
        if change.cores.is_some() || change.memory_mb.is_some() {
            kept.push(change);
        }
    }
    plan.changes = kept;
    plan
}

fn drop_part(change: &mut Change, resource: Resource) {
    match resource {
        Resource::Cpu => change.cores = None,
        Resource::Memory => change.memory_mb = None,
    }
    change.reasons.retain(|r| resource_of(r) != Some(resource));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::plan::{Reading, Rule, Stat, Step};
    use crate::read::snapshot::{ContainerSample, CtConf, Seen};

    fn scaled(resource: Resource, from: u64, to: u64) -> Reason {
        let reading = Reading {
            resource,
            percent: 95.0,
            threshold: 80.0,
            rule: Rule::AboveUpper,
            stat: Stat::Current,
        };
        Reason::Scaled {
            reading,
            from,
            to,
            cut: false,
        }
    }

    fn plan() -> Plan {
        Plan {
            changes: vec![Change {
                vmid: 101,
                cores: Some(Step { from: 2, to: 3 }),
                memory_mb: Some(Step {
                    from: 1024,
                    to: 1536,
                }),
                reasons: vec![
                    scaled(Resource::Cpu, 2, 3),
                    scaled(Resource::Memory, 1024, 1536),
                ],
            }],
            ..Plan::default()
        }
    }

    #[test]
    fn a_held_resource_is_dropped_from_the_change_with_a_typed_note() {
        let mut holds = BTreeMap::new();
        add_hold(&mut holds, 101, Resource::Cpu, 2_000, "uid 0");
        let p = skip_held(plan(), &holds, 1_000);
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].cores, None);
        assert_eq!(
            p.changes[0].memory_mb,
            Some(Step {
                from: 1024,
                to: 1536
            })
        );
        assert_eq!(
            p.changes[0].reasons,
            vec![scaled(Resource::Memory, 1024, 1536)]
        );
        assert_eq!(
            p.notes,
            vec![Note {
                vmid: 101,
                reason: Reason::Held {
                    resource: Resource::Cpu,
                    until_usec: 2_000,
                    by: "uid 0".into()
                }
            }]
        );
    }

    #[test]
    fn a_hold_that_ended_changes_nothing_and_both_held_drops_the_change() {
        let mut holds = BTreeMap::new();
        add_hold(&mut holds, 101, Resource::Cpu, 2_000, "uid 0");
        assert_eq!(skip_held(plan(), &holds, 2_000), plan());
        add_hold(&mut holds, 101, Resource::Memory, 3_000, OUTSIDE);
        let p = skip_held(plan(), &holds, 1_000);
        assert!(p.changes.is_empty());
        assert_eq!(p.notes.len(), 2);
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
