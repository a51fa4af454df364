//! Decision quality on real traces: the daemon (replayed with the example config) against a
//! VPA-style recommender and an oracle, over `../shared/datasets/bitbrains-rnd` (read at run time,
//! never copied). `cargo bench --bench quality`.

use std::path::Path;
use std::time::Instant;

use lxc_autoscale::commands::{nab, quality};
use lxc_autoscale::config;

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
