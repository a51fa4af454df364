//! Decision quality on real traces: the daemon (replayed with the example config) against a
//! VPA-style recommender and an oracle, over `../shared/datasets/bitbrains-rnd` (read at run time,
//! never copied). `cargo bench --bench quality`.

use std::path::Path;
use std::time::Instant;

use lxc_autoscale::commands::{nab, quality};
use lxc_autoscale::config::{self, Config};
use lxc_autoscale::decide::model::Models;
use lxc_autoscale::decide::policy;
use lxc_autoscale::read::snapshot::{
    ContainerPrev, ContainerSample, CpuTicks, CtConf, HostPrev, HostSample, Snapshot, State,
};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("../shared/datasets/bitbrains-rnd");
    let cfg = config::load(&root.join("lxc_autoscale.conf.example")).expect("example config");
    let traces = quality::load_bitbrains_dir(&dir).expect("bitbrains-rnd dataset");
    let started = Instant::now();
    let q = quality::evaluate(&cfg, &traces);
    let secs = started.elapsed().as_secs_f64();
    let samples: usize = traces.iter().map(|t| t.samples.len()).sum();
    println!(
        "decision quality over {} VMs, {samples} samples of 5 min ({:.1} s)",
        traces.len(),
        secs
    );
    print!("{}", quality::render(&q));

    model_cost(&cfg, 1000);

    let series = nab::load_dir(&root.join("../shared/datasets/nab-cpu")).expect("nab-cpu dataset");
    let (score, per_file) = nab::score_detector(&series);
    println!(
        "NAB standard profile over {} files: {score:.1}",
        series.len()
    );
    for (name, raw) in per_file {
        println!("  {name}: raw {raw:.3}");
    }
}

/// Thread CPU time, seconds.
fn cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The model's CPU cost per cycle at `n` containers: `decide_with_model` against `decide` (the
/// threshold rules alone) on the same snapshots, after a day of cycles so the model is full;
/// plus encoding the model for the state file, which the daemon does every 10 cycles.
fn model_cost(cfg: &Config, n: u32) {
    const STEP: i64 = 300_000_000;
    let t0: i64 = 1_700_000_000_000_000;
    let mut models = Models::default();
    let (mut with, mut without) = (0.0, 0.0);
    let cycles = 288 + 50;
    for k in 0..cycles {
        let (snap, state) = world(n, t0 + k * STEP, k);
        let now = chrono::DateTime::from_timestamp_micros(t0 + k * STEP)
            .unwrap()
            .naive_utc();
        let a = cpu_secs();
        let p1 = policy::decide_with_model(cfg, &snap, &state, &mut models, now);
        let b = cpu_secs();
        let p2 = policy::decide(cfg, &snap, &state, now);
        let c = cpu_secs();
        std::hint::black_box((p1, p2));
        if k >= 288 {
            with += b - a;
            without += c - b;
        }
    }
    let per = |x: f64| x / 50.0 * 1e3;
    let a = cpu_secs();
    let json = lxc_autoscale::record::state::encode_model(&models).unwrap();
    let encode = (cpu_secs() - a) * 1e3;
    println!(
        "model cost at {n} containers: decide_with_model {:.2} ms, decide {:.2} ms per cycle: the model adds {:.2} ms; \
         encoding it ({} KB) {:.2} ms every 10 cycles ({:.2} ms per cycle)",
        per(with),
        per(without),
        per(with) - per(without),
        json.len() / 1024,
        encode,
        encode / 10.0
    );
}

/// `n` containers with varied load at time `ts`, and the cycle before.
fn world(n: u32, ts: i64, k: i64) -> (Snapshot, State) {
    const MB: u64 = 1 << 20;
    let mut state = State {
        host: Some(HostPrev {
            taken_at_usec: ts - 300_000_000,
            boot_time: Some(1),
            cpu_ticks: CpuTicks { busy: 0, total: 0 },
        }),
        ..State::default()
    };
    let containers = (0..n)
        .map(|i| {
            let vmid = 100 + i;
            let load = ((i as i64 * 7 + k * 3) % 100) as f64 / 100.0;
            state.containers.insert(
                vmid,
                ContainerPrev {
                    taken_at_usec: ts - 300_000_000,
                    boot_time: Some(1),
                    cgroup_id: u64::from(vmid),
                    cpu_usage_usec: 0,
                    counters: Default::default(),
                },
            );
            ContainerSample {
                vmid,
                conf: Some(CtConf {
                    cores: Some(4),
                    memory_mb: 4096,
                    ..CtConf::default()
                }),
                cgroup_id: Some(u64::from(vmid)),
                cpu_usage_usec: Some((load * 4.0 * 300e6) as u64),
                memory_current_bytes: Some((1000.0 + 2000.0 * load) as u64 * MB),
                memory_file_bytes: Some(100 * MB),
                memory_shmem_bytes: Some(0),
                memory_inactive_file_bytes: Some(50 * MB),
                extra: Default::default(),
            }
        })
        .collect();
    let snap = Snapshot {
        taken_at_usec: ts,
        host: HostSample {
            cpus: Some(4096),
            cpu_ticks: Some(CpuTicks {
                busy: 1000,
                total: 1_000_000,
            }),
            boot_time: Some(1),
            mem_total_kib: Some(1 << 40),
            mem_available_kib: Some(1 << 39),
        },
        containers,
    };
    (snap, state)
}
