//! Soak: thousands of accelerated cycles of the real engine (collector on a fake host on disk,
//! `policy::decide`, `apply::apply` with real backups) over many containers with random loads,
//! random stops and starts and random faults. The clock is injected: nothing sleeps.
//!
//! After every cycle: the plan obeys the safety invariants, every applied change has its backup
//! (and the baseline of every container still holds its first allocation), every failed change
//! left none, and confs hold what pct was told. Memory growth over many cycles is measured by the
//! benchmark (`cargo bench --bench cycle`), not asserted here.
//!
//! The short run is part of `cargo test`; the full run (10 000 cycles over 200 containers) is
//! `cargo test --release --test soak -- --ignored --nocapture`.

mod common;
#[path = "support/invariants.rs"]
mod invariants;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use lxc_autoscale::act::apply::{self, Target};
use lxc_autoscale::act::backup::{Alloc, BackupStore};
use lxc_autoscale::act::pct::{PctOutcome, PctRunner};
use lxc_autoscale::config::{Config, TierConfig};
use lxc_autoscale::decide::policy;
use lxc_autoscale::read::collect::Collector;
use lxc_autoscale::read::hostfiles::{self, HostFiles};
use lxc_autoscale::read::snapshot::State;
use lxc_autoscale::read::{cgroup, hostproc};
use lxc_autoscale::record::events::EventLog;
use lxc_autoscale::record::state;

use common::rng::SeededRng;
use common::{FakeHost, BTIME, MIB};

const HOST_CPUS: u32 = 64;
const POLL_SECS: i64 = 300;
const FIRST_VMID: u32 = 100;

/// One simulated container.
struct Ct {
    running: bool,
    cores: u32,
    memory_mb: u64,
    /// CPU demand in cores (may exceed the allocation: then it is capped at it).
    demand: f64,
    /// Used memory as a fraction of the allocation.
    used_frac: f64,
    usage_usec: u64,
    locked: bool,
}

/// A `pct` that rewrites the conf like Proxmox does, and fails at random.
struct FlakyPct {
    conf_dir: PathBuf,
    rng: SeededRng,
    fail_per_million: u64,
    calls: u64,
    failures: u64,
}

impl PctRunner for FlakyPct {
    fn run(&mut self, argv: &[String]) -> PctOutcome {
        self.calls += 1;
        if self.rng.per_million(self.fail_per_million) {
            self.failures += 1;
            return match self.rng.below(3) {
                0 => PctOutcome::TimedOut,
                1 => PctOutcome::SpawnError("injected".into()),
                _ => PctOutcome::Failed {
                    code: Some(255),
                    stderr: "\u{fffd}injected".into(),
                },
            };
        }
        assert_eq!(argv[0], "set");
        let vmid: u32 = argv[1].parse().expect("numeric vmid in argv");
        assert!(vmid >= 100, "vmid {vmid} reached an argv");
        let path = self.conf_dir.join(format!("{vmid}.conf"));
        let text = std::fs::read_to_string(&path).expect("conf of a changed container");
        let (main, rest) = match text.find("\n[") {
            Some(i) => text.split_at(i + 1),
            None => (text.as_str(), ""),
        };
        let mut lines: Vec<String> = main.lines().map(str::to_string).collect();
        for pair in argv[2..].chunks(2) {
            let key = pair[0].trim_start_matches('-');
            assert_ne!(key, "delete", "the daemon never deletes keys");
            lines.retain(|l| !l.starts_with(&format!("{key}: ")));
            lines.push(format!("{key}: {}", pair[1]));
        }
        std::fs::write(&path, format!("{}\n{rest}", lines.join("\n"))).unwrap();
        PctOutcome::Ok
    }
}

struct Soak {
    host: FakeHost,
    cfg: Config,
    rng: SeededRng,
    cts: BTreeMap<u32, Ct>,
    /// The allocation each container had before the daemon first touched it.
    first_alloc: BTreeMap<u32, Alloc>,
    host_busy: u64,
    host_total: u64,
    /// Confs garbled this cycle and their good text, put back before the next one.
    pending_restore: Vec<(PathBuf, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct Figures {
    cycles: u64,
    container_cycles: u64,
    changes_planned: u64,
    applied: u64,
    failed: u64,
    stops: u64,
    starts: u64,
    faults: u64,
    invariant_checks: u64,
}

impl Soak {
    fn new(containers: u32, seed: u64) -> Soak {
        let host = FakeHost::on_tmpfs(HOST_CPUS);
        let mut cfg = host.config();
        cfg.poll_interval = POLL_SECS as u64;
        cfg.max_cores = 16;
        cfg.max_memory = Some(32768);
        cfg.ignore_lxc = vec![FIRST_VMID + 7];
        cfg.tiers.insert(
            "gold".into(),
            TierConfig {
                containers: (FIRST_VMID..FIRST_VMID + 5).collect(),
                priority: 10,
                cpu_upper_threshold: Some(70.0),
                ..TierConfig::default()
            },
        );
        cfg.validate().unwrap();
        let mut rng = SeededRng::new(seed);
        let mut cts = BTreeMap::new();
        for i in 0..containers {
            let cores = 1 + rng.below(8) as u32;
            cts.insert(
                FIRST_VMID + i,
                Ct {
                    running: true,
                    cores,
                    memory_mb: 512 * (1 + rng.below(16)),
                    demand: rng.unit() * f64::from(cores),
                    used_frac: 0.1 + rng.unit() * 0.8,
                    usage_usec: 0,
                    locked: false,
                },
            );
        }
        let mut soak = Soak {
            host,
            cfg,
            rng,
            cts,
            first_alloc: BTreeMap::new(),
            host_busy: 0,
            host_total: 0,
            pending_restore: Vec::new(),
        };
        let vmids: Vec<u32> = soak.cts.keys().copied().collect();
        for vmid in vmids {
            soak.write_conf(vmid);
            let ct = &soak.cts[&vmid];
            soak.first_alloc.insert(
                vmid,
                Alloc {
                    cores: Some(ct.cores),
                    memory_mb: ct.memory_mb,
                    swap_mb: Some(512),
                },
            );
            soak.files().create_cgroup(vmid).unwrap();
        }
        soak
    }

    fn files(&self) -> &HostFiles {
        &self.host.files
    }

    fn write_conf(&self, vmid: u32) {
        let ct = &self.cts[&vmid];
        let lock = if ct.locked { "lock: backup\n" } else { "" };
        let text = format!(
            "arch: amd64\ncores: {}\nhostname: ct{vmid}\n{lock}memory: {}\nswap: 512\n\
             lxc.apparmor.profile: unconfined\n\n[pve:pending]\nmemory: 64\n\n[snap]\ncores: 1\n",
            ct.cores, ct.memory_mb
        );
        self.files().write_conf(vmid, &text).unwrap();
    }

    /// Reads back the allocation pct wrote into the conf (the simulation follows the conf).
    fn sync_from_conf(&mut self, vmid: u32) {
        let conf = lxc_autoscale::read::pveconf::read_conf(&self.cfg.pve_lxc_dir, vmid)
            .unwrap()
            .unwrap();
        let ct = self.cts.get_mut(&vmid).unwrap();
        ct.cores = conf.cores.unwrap();
        ct.memory_mb = conf.memory_mb;
    }

    /// Moves the world forward by `dt_usec` and writes every file the collector reads; injects
    /// faults. Returns the number of faults injected.
    fn step(&mut self, dt_usec: u64, figures: &mut Figures) -> u64 {
        let mut faults = 0;
        let vmids: Vec<u32> = self.cts.keys().copied().collect();
        let mut busy_usec = 0.0;
        for vmid in vmids {
            let ct = self.cts.get_mut(&vmid).unwrap();
            if ct.running && self.rng.per_million(3_000) {
                ct.running = false;
                self.host.files.remove_cgroup(vmid).unwrap();
                figures.stops += 1;
                continue;
            }
            if !ct.running {
                if self.rng.per_million(50_000) {
                    // A new cgroup directory: a new inode and a counter from zero.
                    ct.running = true;
                    ct.usage_usec = 0;
                    self.host.files.create_cgroup(vmid).unwrap();
                    figures.starts += 1;
                } else {
                    continue;
                }
            }
            let (busy, ct_faults) = self.step_container(vmid, dt_usec);
            busy_usec += busy;
            faults += ct_faults;
        }
        faults + self.step_host(dt_usec, busy_usec)
    }

    /// Moves one running container forward and writes its cgroup files; returns the CPU time it
    /// used (usec) and the faults injected.
    fn step_container(&mut self, vmid: u32, dt_usec: u64) -> (f64, u64) {
        let mut faults = 0;
        let ct = self.cts.get_mut(&vmid).unwrap();
        // Loads wander, with the odd spike.
        let cap = f64::from(ct.cores);
        ct.demand = if self.rng.per_million(20_000) {
            cap * 1.5
        } else {
            (ct.demand + (self.rng.unit() - 0.5) * 0.4 * cap).clamp(0.0, cap * 1.5)
        };
        ct.used_frac = (ct.used_frac + (self.rng.unit() - 0.5) * 0.1).clamp(0.02, 0.97);
        let used = ct.demand.min(cap);
        let busy_usec = used * dt_usec as f64;
        ct.usage_usec += (used * dt_usec as f64) as u64;
        let used_bytes = (ct.used_frac * ct.memory_mb as f64) as u64 * MIB;
        let cache_bytes = self.rng.below(256) * MIB;
        let lock_flip = self.rng.per_million(2_000);
        let fault = self.rng.below(1_000_000);
        let mut cpu_stat = hostfiles::CpuStatFile {
            usage_usec: ct.usage_usec,
            ..Default::default()
        }
        .text();
        let mut current = format!("{}\n", used_bytes + cache_bytes);
        let mut mem_stat = hostfiles::MemoryStatFile {
            anon_bytes: used_bytes,
            file_bytes: cache_bytes,
            shmem_bytes: Some(0),
            inactive_file_bytes: None,
        }
        .text();
        let mut garble_conf = false;
        match fault {
            0..=999 => cpu_stat = "usage_usec \0\u{fffd}max\n".into(),
            1_000..=1_999 => current = "max\n".into(),
            2_000..=2_999 => mem_stat = String::new(),
            3_000..=3_499 => cpu_stat = format!("usage_usec {}\n", ct.usage_usec / 2),
            3_500..=3_999 => garble_conf = true,
            _ => {}
        }
        if fault < 4_000 {
            faults += 1;
        }
        if lock_flip {
            ct.locked = !ct.locked;
        }
        // A container may stop between being listed and being read: its files vanish.
        let vanish = self.rng.per_million(500);
        let files = &self.host.files;
        files
            .write_cgroup_file(vmid, cgroup::CPU_STAT, cpu_stat.as_bytes())
            .unwrap();
        files
            .write_cgroup_file(vmid, cgroup::MEMORY_CURRENT, current.as_bytes())
            .unwrap();
        files
            .write_cgroup_file(vmid, cgroup::MEMORY_STAT, mem_stat.as_bytes())
            .unwrap();
        if lock_flip {
            self.write_conf(vmid);
        }
        if garble_conf {
            let path = self.files().conf_path(vmid);
            let good = std::fs::read(&path).unwrap();
            std::fs::write(&path, b"\0\xff\xfe garbage").unwrap();
            // Restored next step: a conf is garbled for one cycle only.
            self.pending_restore.push((path, good));
        }
        if vanish {
            let dir = self.files().cgroup_dir(vmid);
            for f in [
                cgroup::CPU_STAT,
                cgroup::MEMORY_CURRENT,
                cgroup::MEMORY_STAT,
            ] {
                std::fs::remove_file(dir.join(f)).unwrap();
            }
            faults += 1;
        }
        (busy_usec, faults)
    }

    /// Moves the host counters forward and writes /proc/stat and /proc/meminfo; returns the
    /// faults injected.
    fn step_host(&mut self, dt_usec: u64, busy_usec: f64) -> u64 {
        let mut faults = 0;
        self.host_total += dt_usec / 10_000 * u64::from(HOST_CPUS);
        self.host_busy += (busy_usec / 10_000.0) as u64;
        self.host_busy = self.host_busy.min(self.host_total);
        let ticks = hostfiles::busy_ticks(self.host_busy, self.host_total);
        let mut stat = hostfiles::proc_stat_text(ticks, HOST_CPUS, BTIME);
        let avail_kib = (8 + self.rng.below(120)) * MIB;
        let mut meminfo = hostfiles::meminfo_text(256 * MIB, avail_kib);
        if self.rng.per_million(5_000) {
            meminfo = "MemTotal: -1 kB\n".into();
            faults += 1;
        }
        if self.rng.per_million(5_000) {
            stat = String::from_utf8_lossy(b"cpu \xff\xfe\n").into_owned();
            faults += 1;
        }
        let files = self.files();
        files
            .write_proc_file(hostproc::STAT, stat.as_bytes())
            .unwrap();
        files
            .write_proc_file(hostproc::MEMINFO, meminfo.as_bytes())
            .unwrap();
        faults
    }

    fn restore_garbled(&mut self) {
        for (path, good) in self.pending_restore.drain(..) {
            std::fs::write(path, good).unwrap();
        }
    }
}

fn local(at: DateTime<Utc>) -> chrono::NaiveDateTime {
    at.naive_utc()
}

fn run_soak(cycles: u64, containers: u32, seed: u64) -> Figures {
    let mut soak = Soak::new(containers, seed);
    let mut pct = FlakyPct {
        conf_dir: soak.cfg.pve_lxc_dir.clone(),
        rng: SeededRng::new(seed ^ 0xdead_beef),
        fail_per_million: 50_000,
        calls: 0,
        failures: 0,
    };
    let backups = BackupStore::new(soak.cfg.backup_dir.clone());
    let events = EventLog {
        path: soak.host.path("var/events.json"),
        host: "soak".into(),
    };
    let mut collector = Collector::new();
    let mut state = State::default();
    let mut figures = Figures::default();
    let mut not_applied = apply::NotApplied::default();
    let mut clock = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();

    for cycle in 1..=cycles {
        soak.restore_garbled();
        // Mostly on time; sometimes late; sometimes the clock steps back.
        let dt_secs = match soak.rng.below(1000) {
            0..=9 => -(soak.rng.below(600) as i64),
            10..=25 => POLL_SECS * 3,
            _ => POLL_SECS + soak.rng.below(5) as i64,
        };
        if dt_secs <= 0 {
            figures.faults += 1;
        }
        clock += chrono::Duration::seconds(dt_secs);
        let world_dt = u64::try_from(dt_secs.max(1)).unwrap() * 1_000_000;
        figures.faults += soak.step(world_dt, &mut figures);

        let snap = collector.collect(&soak.cfg, clock.timestamp_micros());
        figures.container_cycles += snap.containers.len() as u64;
        let plan = policy::decide(&soak.cfg, &snap, &state, local(clock));
        if let Err(broken) = invariants::check_plan(&soak.cfg, &snap, &state, &plan) {
            panic!("cycle {cycle}: {broken}");
        }
        figures.invariant_checks += 1;
        figures.changes_planned += plan.changes.len() as u64;

        let report = {
            let mut target = Target {
                pct: &mut pct,
                pct_display: "pct".into(),
                backups: &backups,
                events: Some(&events),
                dry_run: false,
                should_stop: &|| false,
                conf_dir: &soak.cfg.pve_lxc_dir,
                not_applied: &mut not_applied,
            };
            apply::apply(&plan.changes, &snap, &mut target, clock)
        };
        check_report(&mut soak, &backups, &report, cycle, clock);
        figures.applied += report.applied.len() as u64;
        figures.failed += report.failed.len() as u64;

        state = state.advanced(&snap);
        state::write_state(&soak.cfg.state_file, &state).unwrap();
        if soak.rng.per_million(2_000) {
            // A torn state file: the daemon would warn and start empty.
            std::fs::write(&soak.cfg.state_file, b"{\"host\": {\"taken").unwrap();
            assert!(state::read_state(&soak.cfg.state_file).is_err());
            state = State::default();
            figures.faults += 1;
        } else if cycle % 97 == 0 {
            assert_eq!(state::read_state(&soak.cfg.state_file).unwrap(), state);
        }
        figures.cycles += 1;
    }
    assert_eq!(pct.calls, figures.applied + figures.failed);
    // Every container the daemon changed still has its baseline with its first allocation.
    for vmid in backups.vmids().unwrap() {
        let b = backups.baseline(vmid).unwrap().expect("baseline");
        assert_eq!(b.before, soak.first_alloc[&vmid]);
        assert!(
            backups.list(vmid).unwrap().len() <= lxc_autoscale::act::backup::KEEP_PER_CONTAINER
        );
    }
    figures
}

/// Every applied change has this cycle's backup, the baseline still holds the first allocation
/// and the conf holds what pct was told; no failed change left a backup.
fn check_report(
    soak: &mut Soak,
    backups: &BackupStore,
    report: &apply::Report,
    cycle: u64,
    clock: DateTime<Utc>,
) {
    let stamp = clock.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for a in &report.applied {
        let vmid = a.change.vmid;
        let (_, latest) = backups
            .latest(vmid)
            .unwrap()
            .unwrap_or_else(|| panic!("cycle {cycle}: applied change of {vmid} has no backup"));
        assert_eq!(
            latest.timestamp, stamp,
            "cycle {cycle}: backup of {vmid} is not this change's"
        );
        let after = latest.after.expect("a change backup has `after`");
        if let Some(s) = a.change.cores {
            assert_eq!(after.cores, Some(s.to));
            assert_eq!(latest.before.cores, Some(s.from));
        }
        if let Some(s) = a.change.memory_mb {
            assert_eq!(after.memory_mb, s.to);
            assert_eq!(latest.before.memory_mb, s.from);
        }
        let baseline = backups.baseline(vmid).unwrap().expect("baseline");
        assert_eq!(
            baseline.before, soak.first_alloc[&vmid],
            "cycle {cycle}: baseline of {vmid} lost"
        );
        soak.sync_from_conf(vmid);
        let ct = &soak.cts[&vmid];
        if let Some(s) = a.change.cores {
            assert_eq!(ct.cores, s.to, "cycle {cycle}: conf of {vmid}");
        }
        if let Some(s) = a.change.memory_mb {
            assert_eq!(ct.memory_mb, s.to, "cycle {cycle}: conf of {vmid}");
        }
    }
    for f in &report.failed {
        if let Some((_, latest)) = backups.latest(f.vmid).unwrap() {
            assert_ne!(
                latest.timestamp, stamp,
                "cycle {cycle}: failed change of {} left a backup",
                f.vmid
            );
        }
    }
}

fn check_figures(f: &Figures) {
    println!("soak figures: {f:#?}");
    // The run must have exercised what it claims to.
    assert!(
        f.applied > 0 && f.failed > 0 && f.stops > 0 && f.starts > 0 && f.faults > 0,
        "{f:?}"
    );
}

#[test]
fn soak_short_300_cycles_over_50_containers_keeps_every_invariant() {
    let f = run_soak(300, 50, 0x5eed_0001);
    check_figures(&f);
}

#[test]
#[ignore = "slow: 10 000 cycles over 200 containers; run with --release -- --ignored"]
fn soak_full_10000_cycles_over_200_containers_keeps_every_invariant() {
    let f = run_soak(10_000, 200, 0x5eed_0002);
    check_figures(&f);
}
