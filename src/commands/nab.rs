//! A scorer for the Numenta Anomaly Benchmark's standard profile, written from NAB's rules (see
//! `../shared/datasets/nab-cpu/README.md`), and the daemon's detector run over NAB series.
//!
//! Per file: the first 15 % of rows (at most 750) are probationary and not scored. An alarm inside
//! a window earns `scaled_sigmoid(-(right − i + 1) / width)` (1 on the window's first row), only
//! the earliest alarm of a window counts; a window without an alarm costs 1; an alarm outside
//! every window costs 0.11, scaled by `scaled_sigmoid(|right − i| / (width − 1))` of the window
//! before it when there is one (nearly nothing just after a window, the full 0.11 far after it).
//! A window lying wholly in the probation counts neither as hit nor as missed. The raw scores of all
//! files are summed and normalised: 0 = no alarm at all, 100 = every window hit on its first row
//! with no false alarm. These are the rules of NAB's `nab/sweeper.py` (commit `ea702d7`).
//!
//! The detector is scored on its episode starts, as binary detections, at the daemon's defaults:
//! no threshold is swept or tuned on the scored files. (NAB sweeps a threshold over a detector's
//! per-row score; over a 0/1 score that sweep could only choose between these alarms and none.)

use std::path::Path;

use anyhow::{Context, Result};
use chrono::NaiveDateTime;

use crate::decide::anomaly::Detector;

/// NAB's standard profile.
pub const TP_WEIGHT: f64 = 1.0;
pub const FP_WEIGHT: f64 = 0.11;
pub const FN_WEIGHT: f64 = 1.0;
const PROBATION_PERCENT: f64 = 0.15;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// NAB's `scaledSigmoid` (`nab/sweeper.py`): 2·sigmoid(5) − 1 ≈ 0.987 at −1, 0 at 0, −1 from 3.
pub fn scaled_sigmoid(relative_position: f64) -> f64 {
    if relative_position >= 3.0 {
        -1.0
    } else {
        2.0 * sigmoid(-5.0 * relative_position) - 1.0
    }
}

/// Rows not scored at the start of a file of `len` rows.
pub fn probation_rows(len: usize) -> usize {
    ((PROBATION_PERCENT * len as f64).floor() as usize).min((PROBATION_PERCENT * 5000.0) as usize)
}

/// One labelled series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub ts_usec: Vec<i64>,
    pub values: Vec<f64>,
    /// Windows as inclusive row ranges.
    pub windows: Vec<(usize, usize)>,
}

/// The raw score of `alarms` (one bool per row) on a series, and its null and perfect scores.
pub fn raw_score(series: &Series, alarms: &[bool]) -> (f64, f64, f64) {
    let probation = probation_rows(series.values.len());
    let max_tp = scaled_sigmoid(-1.0);
    let mut window_hit = vec![false; series.windows.len()];
    let mut score = 0.0;
    let mut prev: Option<(usize, usize)> = None;
    let mut w = 0;
    for (i, &alarm) in alarms.iter().enumerate().take(series.values.len()) {
        while w < series.windows.len() && series.windows[w].1 < i {
            prev = Some(series.windows[w]);
            w += 1;
        }
        let inside = series.windows.get(w).filter(|(l, r)| *l <= i && i <= *r);
        if !alarm || i < probation {
            continue;
        }
        match (inside, prev) {
            (Some(&(l, r)), _) => {
                if !window_hit[w] {
                    window_hit[w] = true;
                    let width = (r - l + 1) as f64;
                    let pos = -((r - i + 1) as f64) / width;
                    score += scaled_sigmoid(pos) * TP_WEIGHT / max_tp;
                }
            }
            (None, Some((l, r))) => {
                let width = (r - l + 1) as f64;
                let pos = (i as f64 - r as f64).abs() / (width - 1.0).max(1.0);
                score += scaled_sigmoid(pos) * FP_WEIGHT;
            }
            (None, None) => score -= FP_WEIGHT,
        }
    }
    // As in NAB, a window counts only if some of its rows are past the probation.
    let scored = |w: &&(usize, usize)| w.1 >= probation;
    let n = series.windows.iter().filter(scored).count() as f64;
    let misses = series
        .windows
        .iter()
        .zip(&window_hit)
        .filter(|(w, hit)| scored(w) && !**hit)
        .count() as f64;
    score -= misses * FN_WEIGHT;
    (score, -n * FN_WEIGHT, n * TP_WEIGHT)
}

/// Normalised score over several series: 100 × (raw − null) / (perfect − null).
pub fn normalised(parts: &[(f64, f64, f64)]) -> f64 {
    let (raw, null, perfect) = parts
        .iter()
        .fold((0.0, 0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1, a.2 + p.2));
    if perfect > null {
        100.0 * (raw - null) / (perfect - null)
    } else {
        0.0
    }
}

/// The daemon's detector at its defaults over a series: an alarm on each episode start.
pub fn detect(series: &Series) -> Vec<bool> {
    let mut d = Detector::default();
    series
        .ts_usec
        .iter()
        .zip(&series.values)
        .map(|(&ts, &x)| d.observe(ts, x).is_some())
        .collect()
}

fn parse_time(s: &str) -> Option<i64> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s.trim(), f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

/// Reads one NAB CSV (`timestamp,value`) and its windows (timestamps of rows).
pub fn parse_series(name: &str, csv: &str, windows: &[(String, String)]) -> Result<Series> {
    let mut ts_usec = Vec::new();
    let mut values = Vec::new();
    for (i, line) in csv.lines().enumerate().skip(1) {
        let Some((t, v)) = line.split_once(',') else {
            continue;
        };
        ts_usec.push(parse_time(t).with_context(|| format!("{name} line {}: time", i + 1))?);
        values.push(
            v.trim()
                .parse()
                .with_context(|| format!("{name} line {}: value", i + 1))?,
        );
    }
    let row = |s: &str| -> Result<usize> {
        let t = parse_time(s).with_context(|| format!("{name}: window time {s}"))?;
        ts_usec
            .iter()
            .position(|&x| x == t)
            .with_context(|| format!("{name}: window time {s} is not a row"))
    };
    let windows = windows
        .iter()
        .map(|(a, b)| Ok((row(a)?, row(b)?)))
        .collect::<Result<_>>()?;
    Ok(Series {
        name: name.to_string(),
        ts_usec,
        values,
        windows,
    })
}

/// Reads every series named in `<dir>/windows.json`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Series>> {
    let path = dir.join("windows.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let map: std::collections::BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
    map.iter()
        .map(|(name, windows)| {
            let p = dir.join(name);
            let csv = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            parse_series(name, &csv, windows)
        })
        .collect()
}

/// The detector's standard-profile score over `series`, with each file's raw score.
pub fn score_detector(series: &[Series]) -> (f64, Vec<(String, f64)>) {
    let parts: Vec<(f64, f64, f64)> = series.iter().map(|s| raw_score(s, &detect(s))).collect();
    let per_file = series
        .iter()
        .zip(&parts)
        .map(|(s, p)| (s.name.clone(), p.0))
        .collect();
    (normalised(&parts), per_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(len: usize, windows: Vec<(usize, usize)>) -> Series {
        Series {
            name: "t".into(),
            ts_usec: (0..len as i64).collect(),
            values: vec![0.0; len],
            windows,
        }
    }

    fn alarms_at(len: usize, at: &[usize]) -> Vec<bool> {
        (0..len).map(|i| at.contains(&i)).collect()
    }

    #[test]
    fn probation_is_fifteen_percent_capped_at_750_rows() {
        assert_eq!(probation_rows(4032), 604);
        assert_eq!(probation_rows(10_000), 750);
    }

    #[test]
    fn a_hit_on_the_first_row_of_each_window_is_a_perfect_score() {
        let s = series(1000, vec![(700, 799), (900, 949)]);
        let (raw, null, perfect) = raw_score(&s, &alarms_at(1000, &[700, 900]));
        assert!((raw - 2.0).abs() < 1e-12, "{raw}");
        assert_eq!((null, perfect), (-2.0, 2.0));
        assert_eq!(normalised(&[(raw, null, perfect)]), 100.0);
    }

    #[test]
    fn no_alarm_scores_zero_and_late_hits_earn_less() {
        let s = series(1000, vec![(700, 799)]);
        assert_eq!(normalised(&[raw_score(&s, &alarms_at(1000, &[]))]), 0.0);
        let (mid, _, _) = raw_score(&s, &alarms_at(1000, &[750]));
        // Half way: 2·sigmoid(2.5) − 1 over 2·sigmoid(5) − 1.
        assert!(
            (mid - 0.8482836399575129 / 0.9866142981514305).abs() < 1e-9,
            "{mid}"
        );
        // Only the earliest alarm of a window counts; later ones cost nothing.
        let (two, _, _) = raw_score(&s, &alarms_at(1000, &[750, 760]));
        assert_eq!(two, mid);
    }

    #[test]
    fn scaled_sigmoid_is_minus_one_from_three_window_lengths_past_a_window() {
        assert_eq!(scaled_sigmoid(3.0), -1.0);
        assert_eq!(scaled_sigmoid(7.5), -1.0);
        assert!((scaled_sigmoid(2.9) - -0.9999989913051835).abs() < 1e-15);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(-1.0) - 0.9866142981514305).abs() < 1e-15);
    }

    #[test]
    fn scores_a_mixed_file_exactly() {
        // 1000 rows: probation 150; windows of 100 rows at 200 and 500.
        let s = series(1000, vec![(200, 299), (500, 599)]);
        // 100: probation, free. 180: before any window, −0.11. 250: half way into the first
        // window. 260: a second alarm in that window, nothing. 349: 50 rows after it,
        // 0.11 × scaled_sigmoid(50/99). 900: over 3 window lengths after the second (missed)
        // window, −0.11. The miss: −1.
        let (raw, null, perfect) = raw_score(&s, &alarms_at(1000, &[100, 180, 250, 260, 349, 900]));
        let want = -0.11 + 0.8597925669097837 + 0.11 * -0.8517865273499055 - 0.11 - 1.0;
        assert!((raw - want).abs() < 1e-12, "{raw} vs {want}");
        assert!((raw - -0.45390395109870585).abs() < 1e-12, "{raw}");
        assert_eq!((null, perfect), (-2.0, 2.0));
        let norm = normalised(&[(raw, null, perfect)]);
        assert!((norm - 38.65240122253235).abs() < 1e-9, "{norm}");
    }

    #[test]
    fn a_window_inside_the_probation_is_neither_hit_nor_missed() {
        // Probation is 150 rows: the window at 100..=140 is not scored, the one at 500 is.
        let s = series(1000, vec![(100, 140), (500, 599)]);
        assert_eq!(raw_score(&s, &alarms_at(1000, &[])), (-1.0, -1.0, 1.0));
        assert_eq!(
            raw_score(&s, &alarms_at(1000, &[120, 500])),
            (1.0, -1.0, 1.0)
        );
        // A window straddling the probation's end counts, but only alarms past the probation.
        let s = series(1000, vec![(100, 199)]);
        assert_eq!(raw_score(&s, &alarms_at(1000, &[120])), (-1.0, -1.0, 1.0));
        let (raw, _, _) = raw_score(&s, &alarms_at(1000, &[150]));
        let want = scaled_sigmoid(-50.0 / 100.0) / scaled_sigmoid(-1.0);
        assert!((raw - want).abs() < 1e-12, "{raw} vs {want}");
    }

    #[test]
    fn false_alarms_cost_fp_weight_before_windows_and_less_just_after_one() {
        let s = series(1000, vec![(700, 799)]);
        // Before the window (after probation): −0.11, plus the miss.
        let (raw, _, _) = raw_score(&s, &alarms_at(1000, &[650]));
        assert!((raw - (-0.11 - 1.0)).abs() < 1e-12, "{raw}");
        // Alarms in probation are not scored.
        let (raw, _, _) = raw_score(&s, &alarms_at(1000, &[10]));
        assert_eq!(raw, -1.0);
        // Half a window length after it: 0.11 × (2·sigmoid(−2.5) − 1) with the hit at 700.
        let (raw, _, _) = raw_score(&s, &alarms_at(1000, &[700, 799 + 50]));
        let want = 1.0 + 0.11 * scaled_sigmoid(50.0 / 99.0);
        assert!((raw - want).abs() < 1e-12, "{raw} vs {want}");
    }
}
