//! Online anomaly detection for one resource of one container: deterministic, fixed-size state,
//! no clock, a few arithmetic operations per reading.
//!
//! It learns the container's own behaviour: a slow *level* (about a day of readings) with its
//! mean absolute deviation, a *short mean* (about half an hour) of the median of the last three
//! readings (so one odd reading does not move it), and the *usual range*: the highest reading, and
//! the highest and lowest short mean, seen lately. The range shrinks back toward the level with a
//! half-life of four days, so a daily peak stays usual from one day to the next while a one-off
//! event is forgotten within a week.
//!
//! An episode opens when, after a day of warm-up, the behaviour leaves the usual range by a clear
//! margin: a reading above the highest one (a spike, `Up`), the short mean above its highest (a
//! level shift or a runaway process, `Up`), or below its lowest (a sudden drop such as a service
//! that died, `Down`). The margin is half the range's width beyond it, and never less than three
//! mean absolute deviations (of the short mean's noise for the short mean) nor 2 % of the level.
//! The range then learns what it saw: a reading above it becomes its top at once; the short mean
//! pulls its bounds by 5 % per reading, so a slow ramp cannot creep past them unnoticed while a
//! lasting change becomes usual. An episode closes after 12 calm readings, or after a day (the
//! change is the new normal by then).
//!
//! Only an episode's start is news (one event, one notification); the decision holds cuts of the
//! resource while an episode is open.

use std::f64::consts::LN_2;

use serde::{Deserialize, Serialize};

/// Readings learned before any episode can open: a day at the default 300 s `poll_interval`.
pub const WARMUP_READINGS: u32 = 288;
/// Weight of a reading in the short mean: about half an hour of readings.
const SHORT_WEIGHT: f64 = 1.0 / 6.0;
/// Weight of a reading in the level and its mean absolute deviation: about a day of readings.
const LEVEL_WEIGHT: f64 = 1.0 / 288.0;
/// Readings over which the usual range's distance to the level halves: four days.
const RANGE_HALF_LIFE: f64 = 1152.0;
/// A departure must leave the usual range by this share of the range's width...
const MARGIN: f64 = 0.5;
/// ...and by at least this many mean absolute deviations (scaled to the short mean's noise for
/// the short mean)...
const NOISE_MADS: f64 = 3.0;
/// ...and by at least this share of the level, so a flat or quantised series does not alarm on
/// its last digit.
const LEVEL_FLOOR: f64 = 0.02;
const ABS_FLOOR: f64 = 1e-9;
/// After warm-up, share of the gap by which a short mean beyond the usual range pulls its bound.
const RANGE_FOLLOW: f64 = 0.05;
/// Calm readings (back within the margin) that close an episode.
pub const CALM_READINGS: u16 = 12;
/// Readings after which an episode closes anyway: the change is the new normal.
pub const ADOPT_READINGS: u16 = 288;

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

/// An open episode. Written as an array of its fields in this order (see `model::Track`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Episode {
    pub direction: Direction,
    /// Score of the reading that opened it.
    pub start_score: f32,
    /// Score of the latest reading (the current score), 0 when back within the usual range.
    pub score: f32,
    /// The learned level when it opened.
    pub baseline: f32,
    pub started_usec: i64,
    calm: u16,
    /// Readings since it opened.
    len: u16,
}

/// The detector's state: 8 numbers and the open episode. Values are in the unit of the readings
/// (cores or MB). A state of the former detector (fields `n`, `mean`, `var`) reads as a fresh one.
///
/// Written as an array of its fields in this order, the episode `null` when none (see
/// `model::Track`: the derived `Deserialize` reads the array and the older object).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Detector {
    /// Readings seen (saturating); 0 = nothing learned yet.
    readings: u32,
    level: f32,
    /// Mean absolute deviation of the readings from the level.
    mad: f32,
    /// The two previous readings, newest first.
    recent: [f32; 2],
    /// Short mean of the median of the last three readings.
    short: f32,
    /// Usual range: highest reading, highest and lowest short mean.
    high: f32,
    short_high: f32,
    short_low: f32,
    pub episode: Option<Episode>,
}

impl Serialize for Episode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self;
        (
            e.direction,
            e.start_score,
            e.score,
            e.baseline,
            e.started_usec,
            e.calm,
            e.len,
        )
            .serialize(s)
    }
}

impl Serialize for Detector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(9)?;
        t.serialize_element(&self.readings)?;
        t.serialize_element(&self.level)?;
        t.serialize_element(&self.mad)?;
        t.serialize_element(&self.recent)?;
        t.serialize_element(&self.short)?;
        t.serialize_element(&self.high)?;
        t.serialize_element(&self.short_high)?;
        t.serialize_element(&self.short_low)?;
        t.serialize_element(&self.episode)?;
        t.end()
    }
}

/// A new episode, reported once at its start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Onset {
    pub direction: Direction,
    /// How far beyond the usual range, in margins (above 1 by definition).
    pub score: f64,
    /// The reading, and the level learned before it.
    pub value: f64,
    pub baseline: f64,
}

/// The strongest departure of one reading: score in margins beyond the usual range.
struct Departure {
    direction: Direction,
    score: f64,
}

fn median3(a: f64, b: f64, c: f64) -> f64 {
    a.max(b).min(a.min(b).max(c))
}

impl Detector {
    /// Takes one reading; returns the onset when it opens an episode.
    pub fn observe(&mut self, ts_usec: i64, x: f64) -> Option<Onset> {
        if !x.is_finite() {
            return None;
        }
        if self.readings == 0 {
            let v = x as f32;
            *self = Detector {
                readings: 1,
                level: v,
                mad: 0.0,
                recent: [v, v],
                short: v,
                high: v,
                short_high: v,
                short_low: v,
                episode: None,
            };
            return None;
        }
        let [r0, r1] = self.recent.map(f64::from);
        let short =
            f64::from(self.short) + SHORT_WEIGHT * (median3(x, r0, r1) - f64::from(self.short));
        self.recent = [x as f32, self.recent[0]];
        self.short = short as f32;
        let departure = self.departure(x, short);
        let onset = self.track_episode(ts_usec, x, &departure);
        self.learn(x, short);
        self.readings = self.readings.saturating_add(1);
        onset
    }

    /// Scores `x` and the short mean against the usual range.
    fn departure(&self, x: f64, short: f64) -> Departure {
        let level = f64::from(self.level);
        let mad = f64::from(self.mad);
        let floor = (LEVEL_FLOOR * level.abs()).max(ABS_FLOOR);
        let short_noise = NOISE_MADS * mad * (SHORT_WEIGHT / (2.0 - SHORT_WEIGHT)).sqrt();
        let margin = |width: f64, noise: f64| (MARGIN * width).max(noise).max(floor);
        let (high, short_high, short_low) = (
            f64::from(self.high),
            f64::from(self.short_high),
            f64::from(self.short_low),
        );
        let spike = (x - high) / margin(high - level, NOISE_MADS * mad);
        let rise = (short - short_high) / margin(short_high - level, short_noise);
        let drop = (short_low - short) / margin(level - short_low, short_noise);
        if drop > spike.max(rise) {
            Departure {
                direction: Direction::Down,
                score: drop,
            }
        } else {
            Departure {
                direction: Direction::Up,
                score: spike.max(rise),
            }
        }
    }

    fn track_episode(&mut self, ts_usec: i64, x: f64, d: &Departure) -> Option<Onset> {
        if let Some(e) = self.episode.as_mut() {
            e.score = d.score.max(0.0) as f32;
            e.len = e.len.saturating_add(1);
            e.calm = if d.score > 1.0 {
                0
            } else {
                e.calm.saturating_add(1)
            };
            if e.calm >= CALM_READINGS || e.len >= ADOPT_READINGS {
                self.episode = None;
            }
            return None;
        }
        if self.readings < WARMUP_READINGS || d.score <= 1.0 {
            return None;
        }
        self.episode = Some(Episode {
            direction: d.direction,
            start_score: d.score as f32,
            score: d.score as f32,
            baseline: self.level,
            started_usec: ts_usec,
            calm: 0,
            len: 1,
        });
        Some(Onset {
            direction: d.direction,
            score: d.score,
            value: x,
            baseline: f64::from(self.level),
        })
    }

    /// Folds `x` and the short mean into the level and the usual range.
    fn learn(&mut self, x: f64, short: f64) {
        let level = f64::from(self.level);
        let shrink = LN_2 / RANGE_HALF_LIFE;
        let follow = if self.readings < WARMUP_READINGS {
            1.0
        } else {
            RANGE_FOLLOW
        };
        let high = f64::from(self.high);
        self.high = x.max(high - shrink * (high - level)) as f32;
        let top = f64::from(self.short_high);
        self.short_high = if short > top {
            top + follow * (short - top)
        } else {
            top - shrink * (top - level)
        } as f32;
        let bottom = f64::from(self.short_low);
        self.short_low = if short < bottom {
            bottom + follow * (short - bottom)
        } else {
            bottom + shrink * (level - bottom)
        } as f32;
        let mad = f64::from(self.mad);
        self.mad = (mad + LEVEL_WEIGHT * ((x - level).abs() - mad)) as f32;
        self.level = (level + LEVEL_WEIGHT * (x - level)) as f32;
    }

    /// The current score: margins beyond the usual range of the latest reading while an episode
    /// is open, else 0.
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
        assert_eq!(feed(&mut d, (0..3000).map(noisy)), vec![]);
        assert!(!d.active());
        assert_eq!(d.score(), 0.0);
    }

    #[test]
    fn a_spike_opens_one_episode_up_and_a_dead_service_one_down() {
        let mut d = Detector::default();
        let mut xs: Vec<f64> = (0..400).map(noisy).collect();
        xs.push(4.0);
        xs.extend((401..700).map(noisy));
        xs.extend(std::iter::repeat(0.0).take(3));
        let got = feed(&mut d, xs);
        assert_eq!(got, vec![(400, Direction::Up), (701, Direction::Down)]);
        assert!(d.active());
        assert!(d.score() > 1.0, "{}", d.score());
        assert_eq!(d.episode.map(|e| e.started_usec), Some(701));
        // Still at 0 a day later: the new normal, the episode has closed and none opens again.
        assert_eq!(feed(&mut d, std::iter::repeat(0.0).take(288)), vec![]);
        assert!(!d.active());
    }

    #[test]
    fn the_onset_reports_the_reading_the_level_and_a_score_above_one() {
        let mut d = Detector::default();
        for (i, x) in (0..400).map(noisy).enumerate() {
            assert_eq!(d.observe(i as i64, x), None);
        }
        let o = d.observe(400, 4.0).expect("a spike opens an episode");
        assert_eq!((o.direction, o.value), (Direction::Up, 4.0));
        // The level still carries some of the first reading (0.95), a day's weight back.
        assert!(o.baseline > 0.98 && o.baseline < 1.0, "{}", o.baseline);
        assert!(o.score > 1.0, "{}", o.score);
        assert_eq!(d.episode.map(|e| e.started_usec), Some(400));
    }

    #[test]
    fn nothing_opens_during_warm_up_and_what_it_saw_stays_usual() {
        let mut d = Detector::default();
        let xs = (0..1000).map(|i| match i {
            // A peak during the first day is learned, not reported...
            100 | 500 => 5.0,
            // ...and one well above it, after the warm-up, is reported.
            800 => 9.0,
            _ => noisy(i),
        });
        assert_eq!(feed(&mut d, xs), vec![(800, Direction::Up)]);
    }

    #[test]
    fn a_daily_peak_is_usual_but_a_higher_one_is_not() {
        let mut d = Detector::default();
        let xs = (0..10 * 288).map(|i| match (i / 288, i % 288) {
            (8, 100) => 6.0,
            (_, 100) => 3.0,
            _ => noisy(i),
        });
        assert_eq!(feed(&mut d, xs), vec![(8 * 288 + 100, Direction::Up)]);
    }

    #[test]
    fn a_lasting_level_shift_opens_one_episode_and_becomes_usual() {
        let mut d = Detector::default();
        let mut xs: Vec<f64> = (0..400).map(noisy).collect();
        xs.extend((400..2000).map(|i| 3.0 * noisy(i)));
        assert_eq!(feed(&mut d, xs), vec![(400, Direction::Up)]);
        assert!(!d.active());
    }

    #[test]
    fn a_restart_from_the_saved_state_changes_no_onset() {
        let xs: Vec<f64> = (0..1500)
            .map(|i| match i {
                400..=420 => 3.0,
                900.. => 0.2,
                _ => noisy(i),
            })
            .collect();
        let mut whole = Detector::default();
        let want = feed(&mut whole, xs.iter().copied());
        assert_eq!(want, vec![(400, Direction::Up), (901, Direction::Down)]);
        let mut d = Detector::default();
        let mut got = feed(&mut d, xs[..600].iter().copied());
        let json = serde_json::to_string(&d).unwrap();
        let mut d: Detector = serde_json::from_str(&json).unwrap();
        got.extend(
            feed(&mut d, xs[600..].iter().copied())
                .into_iter()
                .map(|(i, dir)| (i + 600, dir)),
        );
        assert_eq!(got, want);
        assert_eq!(d, whole);
    }

    #[test]
    fn a_state_of_the_former_detector_reads_as_a_fresh_one() {
        let d: Detector = serde_json::from_str(r#"{"mean":1.0,"var":0.01,"n":500}"#).unwrap();
        assert_eq!(d, Detector::default());
    }

    #[test]
    fn non_finite_readings_are_ignored() {
        let mut d = Detector::default();
        assert_eq!(d.observe(0, f64::NAN), None);
        assert_eq!(d.observe(1, f64::INFINITY), None);
        assert_eq!(d, Detector::default());
    }
}
