//! Online anomaly detection for one resource of one container: deterministic, fixed-size state,
//! no clock. It learns the container's own behaviour as an exponentially weighted mean and
//! variance of its readings and opens an *episode* when a reading departs from it by more than
//! `THRESHOLD` deviations: a spike or a level shift upwards (`Up`), a sudden drop such as a
//! service that died (`Down`). An episode stays open while readings stay away from what was
//! learned before it, and closes after `CALM_SAMPLES` calm readings; the baseline is not updated
//! during an episode, and an episode still away after `ADOPT_SAMPLES` readings is a level shift:
//! its mean becomes the new baseline and the episode closes.
//!
//! Only an episode's start is news (one event, one notification); the decision holds cuts of the
//! resource while an episode is open.

use serde::{Deserialize, Serialize};

/// Readings learned before any episode can open.
pub const WARMUP_SAMPLES: u32 = 288;
/// Deviations from the learned mean that open an episode.
pub const THRESHOLD: f64 = 6.0;
/// Calm readings (within `THRESHOLD / 2` deviations) that close an episode.
pub const CALM_SAMPLES: u16 = 12;
/// Weight of a new reading in the mean and variance outside episodes.
const ALPHA: f64 = 0.01;
/// Readings of an episode after which, still away from the baseline, it is taken as a level
/// shift: the baseline becomes the episode's mean and the episode closes.
pub const ADOPT_SAMPLES: u16 = 24;
/// The deviation never counts as less than this share of the mean, nor this absolute floor, so
/// a flat series does not alarm on noise.
const REL_FLOOR: f64 = 0.10;
const ABS_FLOOR: f64 = 1e-3;
/// Deviations a single reading may move the learned baseline by.
const CLIP: f64 = 3.0;

/// Which way a reading departed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// An open episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub direction: Direction,
    /// Deviations of the reading that opened it.
    pub start_score: f32,
    /// Deviations of the latest reading (the current score).
    pub score: f32,
    /// The learned mean when it opened.
    pub baseline: f32,
    pub started_usec: i64,
    calm: u16,
    /// Readings since it opened, and their mean.
    len: u16,
    level: f32,
}

/// The detector's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    mean: f64,
    var: f64,
    n: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<Episode>,
}

/// A new episode, reported once at its start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Onset {
    pub direction: Direction,
    /// Deviations from the learned mean.
    pub score: f64,
    /// The reading, and the mean learned before it.
    pub value: f64,
    pub baseline: f64,
}

impl Detector {
    /// Takes one reading; returns the onset when it opens an episode.
    pub fn observe(&mut self, ts_usec: i64, x: f64) -> Option<Onset> {
        if !x.is_finite() {
            return None;
        }
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
            self.n = 1;
            return None;
        }
        let sd = self
            .var
            .sqrt()
            .max(REL_FLOOR * self.mean.abs())
            .max(ABS_FLOOR);
        let z = (x - self.mean) / sd;
        let onset = self.track_episode(ts_usec, x, z);
        if self.episode.is_none() && onset.is_none() {
            // A reading moves the baseline by at most `CLIP` deviations, so a spike that did not
            // open an episode neither drags the mean nor inflates the variance.
            let d = (x - self.mean).clamp(-CLIP * sd, CLIP * sd);
            self.mean += ALPHA * d;
            self.var = (1.0 - ALPHA) * (self.var + ALPHA * d * d);
        }
        self.n = self.n.saturating_add(1);
        onset
    }

    fn track_episode(&mut self, ts_usec: i64, x: f64, z: f64) -> Option<Onset> {
        if let Some(e) = self.episode.as_mut() {
            e.score = z.abs() as f32;
            e.level += (x as f32 - e.level) / f32::from(e.len.saturating_add(1));
            e.len = e.len.saturating_add(1);
            if z.abs() < THRESHOLD / 2.0 {
                e.calm += 1;
            } else {
                e.calm = 0;
            }
            if e.calm >= CALM_SAMPLES {
                // Back to what was learned: a spike or a short outage.
                self.episode = None;
            } else if e.len >= ADOPT_SAMPLES && e.calm == 0 {
                // Still away after `ADOPT_SAMPLES`: a level shift, the new normal.
                self.mean = f64::from(e.level);
                self.episode = None;
            }
            return None;
        }
        if self.n < WARMUP_SAMPLES || z.abs() < THRESHOLD {
            return None;
        }
        let direction = if z > 0.0 {
            Direction::Up
        } else {
            Direction::Down
        };
        self.episode = Some(Episode {
            direction,
            start_score: z.abs() as f32,
            score: z.abs() as f32,
            baseline: self.mean as f32,
            started_usec: ts_usec,
            calm: 0,
            len: 1,
            level: x as f32,
        });
        Some(Onset {
            direction,
            score: z.abs(),
            value: x,
            baseline: self.mean,
        })
    }

    /// The current score: deviations of the latest reading while an episode is open, else 0.
    pub fn score(&self) -> f64 {
        self.episode.map_or(0.0, |e| f64::from(e.score))
    }

    pub fn active(&self) -> bool {
        self.episode.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Detector, xs: impl IntoIterator<Item = f64>) -> Vec<(usize, Direction)> {
        xs.into_iter()
            .enumerate()
            .filter_map(|(i, x)| d.observe(i as i64, x).map(|o| (i, o.direction)))
            .collect()
    }

    fn noisy(i: usize) -> f64 {
        // A deterministic wobble of ±0.05 around 1.0.
        1.0 + 0.05 * ((i * 7919 % 11) as f64 / 5.0 - 1.0)
    }

    #[test]
    fn steady_noise_opens_no_episode() {
        let mut d = Detector::default();
        assert_eq!(feed(&mut d, (0..2000).map(noisy)), vec![]);
    }

    #[test]
    fn a_spike_opens_one_episode_up_and_a_drop_one_down() {
        let mut d = Detector::default();
        let mut xs: Vec<f64> = (0..400).map(noisy).collect();
        xs.extend([4.0, 4.2, 4.1]);
        xs.extend((403..500).map(noisy));
        xs.extend(std::iter::repeat(0.0).take(20));
        let got = feed(&mut d, xs);
        assert_eq!(got, vec![(400, Direction::Up), (500, Direction::Down)]);
    }

    #[test]
    fn a_lasting_level_shift_becomes_the_new_normal() {
        let mut d = Detector::default();
        let mut xs: Vec<f64> = (0..400).map(noisy).collect();
        xs.extend((0..600).map(|i| 3.0 * noisy(i)));
        let got = feed(&mut d, xs);
        assert_eq!(got, vec![(400, Direction::Up)]);
        assert!(!d.active());
    }
}
