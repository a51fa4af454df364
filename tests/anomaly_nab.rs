//! The daemon's anomaly detector, at its defaults, on NAB's labelled CPU series
//! (`../shared/datasets/nab-cpu`, read at run time, never copied into the repo), scored by the
//! standard profile (`src/commands/nab.rs`). `cargo test --test anomaly_nab -- --nocapture` prints
//! the per-file breakdown.

use std::path::Path;

use lxc_autoscale::commands::nab;

#[test]
fn detector_scores_at_least_65_on_nab_cpu_standard_profile() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/datasets/nab-cpu"
    ));
    let series = nab::load_dir(dir).expect("nab-cpu dataset");
    assert_eq!(series.len(), 7, "the 7 files of windows.json");
    let windows: usize = series.iter().map(|s| s.windows.len()).sum();
    assert_eq!(windows, 11);
    let (score, per_file) = nab::score_detector(&series);
    for (name, raw) in &per_file {
        println!("{name}: raw {raw:.3}");
    }
    println!(
        "NAB standard profile over {} files: {score:.1}",
        series.len()
    );
    assert!(score >= 65.0, "NAB standard-profile score {score:.1} < 65");
}
