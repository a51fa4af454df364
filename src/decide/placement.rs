//! Placement advice, pure: which scale-ups did not fit on this node (`shortfalls`), and where the
//! containers that need them would fit (`recommend`). The placement leader feeds `recommend`
//! with every node's status file; nothing here reads a file or the clock.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::decide::plan::{Headroom, Note, Observation, Reason, Resource, Shortfall};

/// A container is recommended at most once in this many µs (a day).
pub const RECOMMEND_EVERY_USEC: i64 = crate::read::snapshot::RECOMMENDED_FOR_USEC;

/// The scale-ups the grant notes say did not fit: above the host's usable cores, cut to the
/// headroom, or dropped because the headroom was below the minimum step. `allocated` comes from
/// the observation of the container. A scale-up cut by both the host's cores and the headroom is
/// one shortfall: the larger wish and the smaller grant.
pub fn shortfalls(notes: &[Note], observations: &[Observation]) -> Vec<Shortfall> {
    let mut merged: Vec<Shortfall> = Vec::new();
    for s in each_shortfall(notes, observations) {
        match merged
            .iter_mut()
            .find(|m| m.vmid == s.vmid && m.resource == s.resource)
        {
            Some(m) => {
                m.wanted = m.wanted.max(s.wanted);
                m.granted = m.granted.min(s.granted);
            }
            None => merged.push(s),
        }
    }
    merged
}

fn each_shortfall<'a>(
    notes: &'a [Note],
    observations: &'a [Observation],
) -> impl Iterator<Item = Shortfall> + 'a {
    notes.iter().filter_map(|n| {
        let (resource, wanted, granted) = match &n.reason {
            Reason::CutToHeadroom {
                resource,
                wanted,
                granted,
                ..
            } => (*resource, *wanted, *granted),
            Reason::HeadroomBelowMinIncrement {
                reading, wanted, ..
            } => (reading.resource, *wanted, 0),
            Reason::CutToHostCores {
                wanted, granted, ..
            } => (Resource::Cpu, *wanted, *granted),
            _ => return None,
        };
        let obs = observations.iter().find(|o| o.vmid == n.vmid)?;
        let allocated = match resource {
            Resource::Cpu => u64::from(obs.cores?),
            Resource::Memory => obs.memory_mb?,
        };
        Some(Shortfall {
            vmid: n.vmid,
            resource,
            allocated,
            wanted,
            granted,
        })
    })
}

/// One node as the leader sees it in the cluster's status files and `.members`.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: String,
    /// Online in `.members`.
    pub online: bool,
    /// Its status file is older than 3 × its `poll_interval`.
    pub stale: bool,
    pub headroom: Headroom,
    /// Busy cores of the host.
    pub used_cores: Option<f64>,
}

/// A container's open shortfalls, on the node that filed them.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub vmid: u32,
    pub node: String,
    pub shortfalls: Vec<Shortfall>,
}

/// Advice to move one container to a node with room.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub vmid: u32,
    pub from: String,
    pub target: String,
    pub shortfalls: Vec<Shortfall>,
    /// The target's headroom after reserves, as its status file gave it.
    pub target_headroom: Headroom,
    /// Share (0–1) of the shortfall the target covers once it holds the container at its
    /// granted size.
    pub covered: f64,
}

impl Recommendation {
    /// The exact command: a container's migration needs a restart (LXC has no live migration),
    /// and only running containers have shortfalls.
    pub fn command(&self) -> String {
        format!("pct migrate {} {} -restart", self.vmid, self.target)
    }

    pub fn why(&self) -> WhyMove<'_> {
        WhyMove(self)
    }
}

/// `Recommendation::why` as text.
pub struct WhyMove<'a>(&'a Recommendation);

impl fmt::Display for WhyMove<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "CT {} on {} wants ", r.vmid, r.from)?;
        for (i, s) in r.shortfalls.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            match s.resource {
                Resource::Cpu => write!(f, "+{} cores (got +{})", s.wanted, s.granted)?,
                Resource::Memory => write!(f, "+{} MB (got +{} MB)", s.wanted, s.granted)?,
            }
        }
        write!(f, " that its node cannot give; {} has ", r.target)?;
        let h = r.target_headroom;
        let wants = |res| r.shortfalls.iter().any(|s| s.resource == res);
        let mut free = Vec::new();
        if let Some(mb) = h.memory_mb.filter(|_| wants(Resource::Memory)) {
            free.push(format!("{mb:.0} MB"));
        }
        if let Some(cores) = h.cores.filter(|_| wants(Resource::Cpu)) {
            free.push(format!("{cores:.1} cores"));
        }
        write!(
            f,
            "{} free after reserves, covering {:.0}% of it",
            free.join(" and "),
            r.covered * 100.0
        )
    }
}

/// The headroom of `resource` in `h`.
fn headroom_of(h: &Headroom, resource: Resource) -> Option<f64> {
    match resource {
        Resource::Cpu => h.cores,
        Resource::Memory => h.memory_mb,
    }
}

/// Share (0–1) of the container's shortfalls `h` covers once it holds the container at its
/// granted size: the smallest over its resources; 0 when a headroom is unknown.
pub fn coverage(h: &Headroom, shortfalls: &[Shortfall]) -> f64 {
    shortfalls
        .iter()
        .map(|s| {
            let Some(room) = headroom_of(h, s.resource) else {
                return 0.0;
            };
            let left = room - (s.allocated + s.granted) as f64;
            let missing = s.missing().max(1) as f64;
            (left / missing).clamp(0.0, 1.0)
        })
        .fold(1.0, f64::min)
}

/// Larger first, unknown last.
fn desc(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => b.total_cmp(&a),
        (a, b) => b.is_some().cmp(&a.is_some()),
    }
}

/// Smaller first, unknown last.
fn asc(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => b.is_some().cmp(&a.is_some()),
    }
}

/// The nodes `request` could move to, best first, each with its coverage: online, fresh, not
/// excluded, not the container's own node, covering some of the shortfall. Ranked by headroom
/// after reserves (memory first, then cores), then by coverage, then by the lowest CPU use, then
/// by name.
pub fn rank<'c>(
    request: &Request,
    candidates: &'c [Candidate],
    exclude: &[String],
) -> Vec<(&'c Candidate, f64)> {
    let mut ranked: Vec<(&Candidate, f64)> = candidates
        .iter()
        .filter(|c| c.online && !c.stale && c.node != request.node)
        .filter(|c| !exclude.contains(&c.node))
        .map(|c| (c, coverage(&c.headroom, &request.shortfalls)))
        .filter(|(_, covered)| *covered > 0.0)
        .collect();
    ranked.sort_by(|(a, a_cov), (b, b_cov)| {
        desc(a.headroom.memory_mb, b.headroom.memory_mb)
            .then(desc(a.headroom.cores, b.headroom.cores))
            .then(b_cov.total_cmp(a_cov))
            .then(asc(a.used_cores, b.used_cores))
            .then(a.node.cmp(&b.node))
    });
    ranked
}

/// One recommendation per request that some node can take, in vmid order. A target's headroom
/// is lowered by what each container sent there takes, so two containers are not both sent to
/// room for one.
pub fn recommend(
    requests: &[Request],
    candidates: &[Candidate],
    exclude: &[String],
) -> Vec<Recommendation> {
    let mut nodes = candidates.to_vec();
    let mut requests: Vec<&Request> = requests.iter().collect();
    requests.sort_by_key(|r| r.vmid);
    let mut out = Vec::new();
    for request in requests {
        let Some((best, covered)) = rank(request, &nodes, exclude).first().copied() else {
            continue;
        };
        let rec = Recommendation {
            vmid: request.vmid,
            from: request.node.clone(),
            target: best.node.clone(),
            shortfalls: request.shortfalls.clone(),
            target_headroom: best.headroom,
            covered,
        };
        if let Some(t) = nodes.iter_mut().find(|c| c.node == rec.target) {
            for s in &rec.shortfalls {
                let taken = (s.allocated + s.wanted) as f64;
                match s.resource {
                    Resource::Cpu => t.headroom.cores = t.headroom.cores.map(|h| h - taken),
                    Resource::Memory => {
                        t.headroom.memory_mb = t.headroom.memory_mb.map(|h| h - taken);
                    }
                }
            }
        }
        out.push(rec);
    }
    out
}

/// The shortfalls of every node grouped into one request per container, keeping only those filed
/// by the node `vmlist` (`.vmlist`'s vmid -> node) places the container on now. A status file
/// stays fresh for 3 × `poll_interval` after its node last saw the container, so a shortfall of
/// a container that has since migrated (or was destroyed) would advise moving it to where it
/// already runs, and would block real advice for a day; two nodes filing for one container
/// would leave the choice to the order of their names.
pub fn requests_of<'a>(
    filed: impl IntoIterator<Item = (&'a str, Shortfall)>,
    vmlist: &BTreeMap<u32, String>,
) -> Vec<Request> {
    let mut by_vmid: BTreeMap<u32, Request> = BTreeMap::new();
    for (node, s) in filed {
        if vmlist.get(&s.vmid).map(String::as_str) != Some(node) {
            continue;
        }
        by_vmid
            .entry(s.vmid)
            .or_insert_with(|| Request {
                vmid: s.vmid,
                node: node.to_string(),
                shortfalls: Vec::new(),
            })
            .shortfalls
            .push(s);
    }
    by_vmid.into_values().collect()
}

/// Whether `vmid` may be recommended at `now_usec`: never before, or a day ago or more.
pub fn due(last: &BTreeMap<u32, i64>, vmid: u32, now_usec: i64) -> bool {
    last.get(&vmid).map_or(true, |&at| {
        now_usec.saturating_sub(at) >= RECOMMEND_EVERY_USEC
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::plan::{Managed, Reading, Rule, Stat};

    fn node(name: &str, cores: f64, memory_mb: f64, used: f64) -> Candidate {
        Candidate {
            node: name.into(),
            online: true,
            stale: false,
            headroom: Headroom {
                cores: Some(cores),
                memory_mb: Some(memory_mb),
            },
            used_cores: Some(used),
        }
    }

    fn memory_short(vmid: u32, node: &str) -> Request {
        Request {
            vmid,
            node: node.into(),
            shortfalls: vec![Shortfall {
                vmid,
                resource: Resource::Memory,
                allocated: 1024,
                wanted: 776,
                granted: 0,
            }],
        }
    }

    fn names(ranked: &[(&Candidate, f64)]) -> Vec<String> {
        ranked.iter().map(|(c, _)| c.node.clone()).collect()
    }

    #[test]
    fn ranks_by_memory_headroom_first_then_cores() {
        let nodes = [
            node("n2", 10.0, 4000.0, 1.0),
            node("n3", 2.0, 8000.0, 1.0),
            node("n4", 12.0, 4000.0, 1.0),
        ];
        let ranked = rank(&memory_short(101, "n1"), &nodes, &[]);
        assert_eq!(names(&ranked), ["n3", "n4", "n2"]);
    }

    #[test]
    fn equal_headroom_goes_to_more_coverage_then_to_the_lowest_cpu_use() {
        let short = Request {
            vmid: 101,
            node: "n1".into(),
            shortfalls: vec![Shortfall {
                vmid: 101,
                resource: Resource::Cpu,
                allocated: 2,
                wanted: 2,
                granted: 0,
            }],
        };
        let nodes = [
            node("n2", 4.0, 4000.0, 3.0),
            node("n3", 4.0, 4000.0, 1.5),
            node("n4", 3.0, 4000.0, 0.5),
        ];
        // n4 has less cpu headroom: it covers (3 − 2) / 2 = 50 %; n2 and n3 tie on headroom and
        // cover all, and n3 is less busy.
        let ranked = rank(&short, &nodes, &[]);
        assert_eq!(names(&ranked), ["n3", "n2", "n4"]);
        assert_eq!(ranked[0].1, 1.0);
        assert_eq!(ranked[2].1, 0.5);
        // Equal in everything: by name.
        let twins = [node("n9", 4.0, 4000.0, 1.0), node("n8", 4.0, 4000.0, 1.0)];
        assert_eq!(names(&rank(&short, &twins, &[])), ["n8", "n9"]);
    }

    #[test]
    fn skips_offline_stale_excluded_full_and_own_nodes() {
        let mut offline = node("n2", 8.0, 9000.0, 0.0);
        offline.online = false;
        let mut stale = node("n3", 8.0, 9000.0, 0.0);
        stale.stale = true;
        let excluded = node("n4", 8.0, 9000.0, 0.0);
        // 1500 MB free cannot even hold the 1024 MB it has plus any of the missing 776.
        let full = node("n5", 8.0, 1000.0, 0.0);
        let own = node("n1", 8.0, 9000.0, 0.0);
        let ok = node("n6", 1.0, 2000.0, 0.0);
        let nodes = [offline, stale, excluded, full, own, ok];
        let ranked = rank(&memory_short(101, "n1"), &nodes, &["n4".to_string()]);
        assert_eq!(names(&ranked), ["n6"]);
        // 2000 − 1024 = 976 MB left for the missing 776: all of it.
        assert_eq!(ranked[0].1, 1.0);
    }

    #[test]
    fn a_target_filled_by_one_container_is_not_offered_to_the_next() {
        // n2 takes one 1800 MB container (3000 − 1800 = 1200 left): n3's 2500 MB then rank first
        // for the second.
        let nodes = [node("n2", 4.0, 3000.0, 1.0), node("n3", 4.0, 2500.0, 1.0)];
        let recs = recommend(
            &[memory_short(102, "n1"), memory_short(101, "n1")],
            &nodes,
            &[],
        );
        let got: Vec<(u32, &str, String)> = recs
            .iter()
            .map(|r| (r.vmid, r.target.as_str(), r.command()))
            .collect();
        assert_eq!(
            got,
            [
                (101, "n2", "pct migrate 101 n2 -restart".to_string()),
                (102, "n3", "pct migrate 102 n3 -restart".to_string()),
            ]
        );
        assert_eq!(
            recs[0].why().to_string(),
            "CT 101 on n1 wants +776 MB (got +0 MB) that its node cannot give; n2 has 3000 MB free after reserves, covering 100% of it"
        );
    }

    #[test]
    fn no_recommendation_when_no_node_has_room() {
        let nodes = [node("n2", 4.0, 900.0, 1.0)];
        assert_eq!(recommend(&[memory_short(101, "n1")], &nodes, &[]), []);
    }

    #[test]
    fn shortfalls_come_from_the_grant_notes_with_the_allocation() {
        let reading = Reading {
            resource: Resource::Memory,
            percent: 90.0,
            threshold: 80.0,
            rule: Rule::AboveUpper,
            stat: Stat::Current,
        };
        let notes = [
            Note {
                vmid: 101,
                reason: Reason::CutToHeadroom {
                    resource: Resource::Cpu,
                    wanted: 4,
                    granted: 1,
                    headroom: 1.4,
                },
            },
            Note {
                vmid: 102,
                reason: Reason::HeadroomBelowMinIncrement {
                    reading,
                    wanted: 512,
                    headroom: 100.0,
                    min_increment: 256,
                },
            },
            Note {
                vmid: 103,
                reason: Reason::Ignored,
            },
        ];
        let obs = |vmid, cores, memory_mb| Observation {
            vmid,
            name: None,
            tier: None,
            managed: Managed::Yes,
            cores: Some(cores),
            memory_mb: Some(memory_mb),
            cpu_percent: None,
            memory_used_mb: None,
            memory_percent: None,
        };
        let observations = [obs(101, 2, 1024), obs(102, 1, 2048), obs(103, 1, 512)];
        assert_eq!(
            shortfalls(&notes, &observations),
            [
                Shortfall {
                    vmid: 101,
                    resource: Resource::Cpu,
                    allocated: 2,
                    wanted: 4,
                    granted: 1
                },
                Shortfall {
                    vmid: 102,
                    resource: Resource::Memory,
                    allocated: 2048,
                    wanted: 512,
                    granted: 0
                },
            ]
        );
    }

    #[test]
    fn only_the_node_vmlist_places_a_container_on_files_its_request() {
        let short = |vmid| memory_short(vmid, "").shortfalls[0];
        let vmlist: BTreeMap<u32, String> = [(101, "n2"), (102, "n1")]
            .into_iter()
            .map(|(v, n)| (v, n.to_string()))
            .collect();
        // 101 left n1 for n2 while n1's status file was fresh: n2's own filing wins, whatever
        // the names' order; 103 is gone from `.vmlist`.
        let filed = [
            ("n1", short(101)),
            ("n2", short(101)),
            ("n3", short(102)),
            ("n1", short(103)),
        ];
        assert_eq!(
            requests_of(filed, &vmlist),
            vec![Request {
                node: "n2".into(),
                ..memory_short(101, "")
            }]
        );
    }

    #[test]
    fn a_container_is_recommended_once_a_day() {
        let mut last = BTreeMap::new();
        assert!(due(&last, 101, 5));
        last.insert(101, 5);
        assert!(!due(&last, 101, 5 + RECOMMEND_EVERY_USEC - 1));
        assert!(due(&last, 101, 5 + RECOMMEND_EVERY_USEC));
        assert!(due(&last, 102, 6));
    }
}
