//! Cut holds of containers that arrived on this node (cluster mode). A container that migrated
//! here restarted with zeroed counters, and its first readings describe a fresh start, not its
//! load: no cut until max(`scale_down_window`, 2 × `poll_interval`) after it arrived. The
//! scale-up cooldowns and the OOM memory-cut block that the node it left wrote in its record
//! still hold here. Scale-ups are never held. Pure: the time is the snapshot's.

use std::collections::BTreeMap;

use crate::decide::plan::{Change, Hold, Note, Plan, Reason, Resource};
use crate::read::snapshot::{Arrival, EpochUsec};

const USEC_PER_SEC: i64 = 1_000_000;

/// The hold on a cut of `resource` of an arrival at `now`: the one that ends last, if any runs.
pub fn cut_hold(a: &Arrival, resource: Resource, now: EpochUsec) -> Option<Hold> {
    let left = |until: Option<EpochUsec>| {
        until
            .filter(|u| *u > now)
            .map(|u| u64::try_from((u - now) / USEC_PER_SEC).unwrap_or(0))
    };
    let cooldown = match resource {
        Resource::Cpu => a.cpu_cooldown_until_usec,
        Resource::Memory => a.memory_cooldown_until_usec,
    };
    let oom = match resource {
        Resource::Cpu => None,
        Resource::Memory => a.oom_until_usec,
    };
    [
        left(Some(a.until_usec)).map(|s| (s, Hold::Arrived { left_secs: s })),
        left(cooldown).map(|s| (s, Hold::Cooldown { left_secs: s })),
        left(oom).map(|s| (s, Hold::OomKill { left_secs: s })),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|(s, _)| *s)
    .map(|(_, h)| h)
}

fn is_cut(change: &Change, resource: Resource) -> bool {
    match resource {
        Resource::Cpu => change.cores.is_some_and(|s| s.to < s.from),
        Resource::Memory => change.memory_mb.is_some_and(|s| s.to < s.from),
    }
}

/// The plan without the cuts that arrivals hold; each becomes a `CutHeld` note with the reading
/// that asked for it.
pub fn hold_cuts(mut plan: Plan, arrivals: &BTreeMap<u32, Arrival>, now: EpochUsec) -> Plan {
    if arrivals.is_empty() {
        return plan;
    }
    let mut kept = Vec::with_capacity(plan.changes.len());
    for mut change in std::mem::take(&mut plan.changes) {
        if let Some(a) = arrivals.get(&change.vmid) {
            for resource in [Resource::Cpu, Resource::Memory] {
                let Some(hold) = cut_hold(a, resource, now).filter(|_| is_cut(&change, resource))
                else {
                    continue;
                };
                let note = drop_part(&mut change, resource, hold);
                plan.notes.extend(note);
            }
        }
        if change.cores.is_some() || change.memory_mb.is_some() {
            kept.push(change);
        }
    }
    plan.changes = kept;
    plan
}

/// Drops the `resource` part of `change` and its reasons; the note says which reading was held.
fn drop_part(change: &mut Change, resource: Resource, hold: Hold) -> Option<Note> {
    match resource {
        Resource::Cpu => change.cores = None,
        Resource::Memory => change.memory_mb = None,
    }
    let mut reading = None;
    change.reasons.retain(|r| match r {
        Reason::Scaled { reading: rd, .. } if rd.resource == resource => {
            reading = Some(*rd);
            false
        }
        _ => true,
    });
    reading.map(|reading| Note {
        vmid: change.vmid,
        reason: Reason::CutHeld { reading, hold },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::plan::{Reading, Rule, Stat, Step};

    const NOW: EpochUsec = 1_700_000_000_000_000;
    const SEC: EpochUsec = 1_000_000;

    fn scaled(resource: Resource, from: u64, to: u64, rule: Rule) -> Reason {
        Reason::Scaled {
            reading: Reading {
                resource,
                percent: 10.0,
                threshold: 30.0,
                rule,
                stat: Stat::Current,
            },
            from,
            to,
            cut: false,
        }
    }

    /// Cores 4 -> 2 (a cut) and memory 1024 -> 1536 (a scale-up).
    fn plan() -> Plan {
        Plan {
            changes: vec![Change {
                vmid: 101,
                cores: Some(Step { from: 4, to: 2 }),
                memory_mb: Some(Step {
                    from: 1024,
                    to: 1536,
                }),
                reasons: vec![
                    scaled(Resource::Cpu, 4, 2, Rule::BelowLower),
                    scaled(Resource::Memory, 1024, 1536, Rule::AboveUpper),
                ],
            }],
            ..Plan::default()
        }
    }

    fn arrival(until_secs: i64) -> Arrival {
        Arrival {
            until_usec: NOW + until_secs * SEC,
            ..Arrival::default()
        }
    }

    #[test]
    fn an_arrival_holds_its_cut_with_a_typed_note_and_keeps_its_scale_up() {
        let arrivals = BTreeMap::from([(101, arrival(600))]);
        let p = hold_cuts(plan(), &arrivals, NOW);
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
            [scaled(Resource::Memory, 1024, 1536, Rule::AboveUpper)]
        );
        let Reason::CutHeld { reading, hold } = &p.notes[0].reason else {
            panic!("{:?}", p.notes);
        };
        assert_eq!(
            (p.notes.len(), reading.resource, *hold),
            (1, Resource::Cpu, Hold::Arrived { left_secs: 600 })
        );
    }

    #[test]
    fn an_arrival_whose_holds_ended_changes_nothing() {
        let arrivals = BTreeMap::from([(101, arrival(0)), (102, arrival(600))]);
        assert_eq!(hold_cuts(plan(), &arrivals, NOW), plan());
    }

    #[test]
    fn the_hold_that_ends_last_is_named_and_oom_blocks_memory_only() {
        let a = Arrival {
            until_usec: NOW + 600 * SEC,
            cpu_cooldown_until_usec: Some(NOW + 3000 * SEC),
            memory_cooldown_until_usec: Some(NOW - SEC),
            oom_until_usec: Some(NOW + 80_000 * SEC),
        };
        assert_eq!(
            cut_hold(&a, Resource::Cpu, NOW),
            Some(Hold::Cooldown { left_secs: 3000 })
        );
        assert_eq!(
            cut_hold(&a, Resource::Memory, NOW),
            Some(Hold::OomKill { left_secs: 80_000 })
        );
        let later = NOW + 100_000 * SEC;
        assert_eq!(cut_hold(&a, Resource::Memory, later), None);
        let text = Reason::CutHeld {
            reading: Reading {
                resource: Resource::Memory,
                percent: 10.0,
                threshold: 30.0,
                rule: Rule::BelowLower,
                stat: Stat::Current,
            },
            hold: Hold::Arrived { left_secs: 600 },
        }
        .to_string();
        assert_eq!(
            text,
            "memory 10.0% < 30 but arrived on this node, 600 s left: memory unchanged (cut held)"
        );
    }
}
