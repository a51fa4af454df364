//! The per-container model: fixed-size state learned from each container's own readings, kept
//! across restarts in the state file. Pure: no clock (time comes from the snapshot and the local
//! hour from the caller), no randomness, no IO, so `replay` reproduces every decision.
//!
//! Per container and resource (`Track`):
//! - a ring of `BUCKETS` bucket maxima spanning `scale_down_window`: a cut needs the maximum over
//!   the whole window to agree, not just the latest reading ("fall slow");
//! - the time of the last scale-up seen (an allocation that grew, whoever grew it): a cut waits
//!   `scale_down_cooldown` after it;
//! - a daily profile, one slot per local hour, each an exponentially weighted mean of that hour
//!   over the days seen: a container busy every day at 9:00 is grown before 9:00 ("learn the
//!   daily shape"), and a cut that the next hour's expected load would undo is held;
//! - after an OOM kill, memory cuts are held for `OOM_HOLD_USEC`;
//! - the recent peak: the largest reading, halved every `PEAK_HALF_LIFE_USEC` since it was read.
//!   A memory scale-up from a reading pinned at the allocation (the real need is unknown, only that
//!   it is at least the allocation) grows to carry it at the upper threshold: a burst that came
//!   before is likely to come again at its old size, so one step instead of a chain of doublings.
//!
//! Readings are kept in absolute units (cores of demand, MB used), so an allocation change does
//! not disturb them. Values are `f32`: the state of 1000 containers stays well under 2 MB of JSON.

use serde::{Deserialize, Serialize};

use crate::decide::anomaly::Detector;

/// Buckets of the scale-down window.
pub const BUCKETS: usize = 12;
/// Hours of the daily profile.
pub const HOURS: usize = 24;
/// Days a profile slot needs before it forecasts.
pub const PROFILE_MIN_DAYS: u8 = 4;
/// Weight of a new day's maximum in its hour's slot when it is above the slot (rise fast) and
/// when it is below (forget slowly).
const PROFILE_RISE: f32 = 0.5;
const PROFILE_FALL: f32 = 0.2;
/// Memory cuts are held this long after an OOM kill.
pub const OOM_HOLD_USEC: i64 = 24 * 3600 * 1_000_000;
/// The recent peak halves this long after it was read.
pub const PEAK_HALF_LIFE_USEC: i64 = 24 * 3600 * 1_000_000;
/// Marks an empty bucket.
const EMPTY: f32 = -1.0;

/// Every container's model, by VMID. Containers not seen for a day are dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Models {
    pub containers: ByVmid<CtModel>,
}

/// Values by VMID, in a `Vec` sorted by VMID; written as a JSON object keyed by VMID, like a
/// `BTreeMap`. A `BTreeMap`'s half-full nodes cost half again a model's ~700 B (1.2 MB instead
/// of 0.7 MB at 1000 containers, measured with heaptrack); lookups are a binary search.
#[derive(Debug, Clone, PartialEq)]
pub struct ByVmid<T>(Vec<(u32, T)>);

impl<T> Default for ByVmid<T> {
    fn default() -> Self {
        ByVmid(Vec::new())
    }
}

impl<T> ByVmid<T> {
    fn find(&self, vmid: u32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&vmid, |e| e.0)
    }

    pub fn get(&self, vmid: &u32) -> Option<&T> {
        self.find(*vmid).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, vmid: &u32) -> Option<&mut T> {
        self.find(*vmid).ok().map(|i| &mut self.0[i].1)
    }

    /// Sets `vmid`'s value; returns the one it replaces.
    pub fn insert(&mut self, vmid: u32, value: T) -> Option<T> {
        match self.find(vmid) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (vmid, value));
                None
            }
        }
    }

    /// `vmid`'s slot, to fill with `Entry::or_default`.
    pub fn entry(&mut self, vmid: u32) -> Entry<'_, T> {
        Entry { map: self, vmid }
    }

    /// In VMID order.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &T)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&u32, &mut T) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A VMID's slot in a `ByVmid`.
pub struct Entry<'a, T> {
    map: &'a mut ByVmid<T>,
    vmid: u32,
}

impl<'a, T: Default> Entry<'a, T> {
    /// The value, inserted as `T::default()` when missing.
    pub fn or_default(self) -> &'a mut T {
        let i = match self.map.find(self.vmid) {
            Ok(i) => i,
            Err(i) => {
                self.map.0.insert(i, (self.vmid, T::default()));
                i
            }
        };
        &mut self.map.0[i].1
    }
}

impl<T: Serialize> Serialize for ByVmid<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ByVmid<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = ByVmid<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object keyed by vmid")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut map = ByVmid(Vec::with_capacity(a.size_hint().unwrap_or(0)));
                while let Some((vmid, value)) = a.next_entry::<u32, T>()? {
                    // Written in VMID order: each goes at the end. A repeated VMID keeps the
                    // last value, as a `BTreeMap` did.
                    match map.0.last() {
                        Some((last, _)) if *last >= vmid => {
                            map.insert(vmid, value);
                        }
                        _ => map.0.push((vmid, value)),
                    }
                }
                Ok(map)
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// One container's model. Written as an array of its fields in this order (see `Track`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CtModel {
    pub cpu: Track,
    pub memory: Track,
    /// Memory cuts are held until then (µs since the epoch) after an OOM kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_hold_until_usec: Option<i64>,
    /// When the model last saw the container, µs since the epoch.
    pub seen_usec: i64,
}

/// What the model keeps of one resource of one container. Amounts are cores (cpu) or MB
/// (memory).
///
/// Written as an array of its fields in declaration order, absent values as `null`: field names
/// repeated in every track were half of the state file (1.5 MB at 1000 containers). The derived
/// `Deserialize` reads both that array and the object with field names that older versions
/// wrote, so an upgrade keeps what was learned (and an older version reads the array).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Track {
    /// Largest reading per bucket; `head` is the newest; `EMPTY` = no reading.
    buckets: [f32; BUCKETS],
    head: u8,
    /// Start of the newest bucket, µs; 0 = the ring is empty.
    head_start_usec: i64,
    /// Bucket length in use, µs; a new `scale_down_window` restarts the ring.
    span_usec: i64,
    /// First reading since the ring (re)started, µs: coverage = now − this.
    since_usec: i64,
    /// Exponentially weighted mean of each local hour over the days seen.
    daily: [f32; HOURS],
    /// Days learned per slot (saturating).
    days: [u8; HOURS],
    /// The local hour in progress (`HOURS` = none), its mean so far and its readings.
    hour: u8,
    hour_mean: f32,
    hour_n: f32,
    /// The allocation last seen (cores or MB); 0 = none yet.
    alloc: f64,
    /// When an allocation last grew, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_up_usec: Option<i64>,
    /// When an allocation last shrank, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_down_usec: Option<i64>,
    /// The largest reading lately and when it was read, µs (0 = none); see `Track::peak_at`.
    #[serde(default)]
    peak: f32,
    #[serde(default)]
    peak_usec: i64,
    /// The online anomaly detector of this resource.
    #[serde(default)]
    pub detector: Detector,
}

impl Serialize for CtModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            &self.cpu,
            &self.memory,
            self.oom_hold_until_usec,
            self.seen_usec,
        )
            .serialize(s)
    }
}

impl Serialize for Track {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(16)?;
        t.serialize_element(&self.buckets)?;
        t.serialize_element(&self.head)?;
        t.serialize_element(&self.head_start_usec)?;
        t.serialize_element(&self.span_usec)?;
        t.serialize_element(&self.since_usec)?;
        t.serialize_element(&self.daily)?;
        t.serialize_element(&self.days)?;
        t.serialize_element(&self.hour)?;
        t.serialize_element(&self.hour_mean)?;
        t.serialize_element(&self.hour_n)?;
        t.serialize_element(&self.alloc)?;
        t.serialize_element(&self.last_up_usec)?;
        t.serialize_element(&self.last_down_usec)?;
        t.serialize_element(&self.peak)?;
        t.serialize_element(&self.peak_usec)?;
        t.serialize_element(&self.detector)?;
        t.end()
    }
}

impl Default for Track {
    fn default() -> Self {
        Track {
            buckets: [EMPTY; BUCKETS],
            head: 0,
            head_start_usec: 0,
            span_usec: 0,
            since_usec: 0,
            daily: [0.0; HOURS],
            days: [0; HOURS],
            hour: HOURS as u8,
            hour_mean: EMPTY,
            hour_n: 0.0,
            alloc: 0.0,
            last_up_usec: None,
            last_down_usec: None,
            peak: 0.0,
            peak_usec: 0,
            detector: Detector::default(),
        }
    }
}

/// One reading of one resource as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts_usec: i64,
    /// Local hour of day, 0–23.
    pub hour: u32,
    /// Cores of demand or MB used; `None` = not measured this cycle.
    pub value: Option<f64>,
    /// The allocation in force (cores or MB).
    pub alloc: f64,
    /// Readings further apart than this (µs; the daemon's 2 × `poll_interval`), or than two
    /// buckets, leave the window uncovered from the later one on; 0 = two buckets.
    pub max_gap_usec: i64,
}

/// What the track says about the present, for the decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// The local hour the view was taken at.
    pub hour: u32,
    /// Time the readings cover, µs.
    pub covered_usec: i64,
    /// Largest reading over the window (the latest included).
    pub window_max: Option<f64>,
    /// Whether the readings cover the whole window.
    pub covered: bool,
    /// Expected mean of the next local hour, once learned.
    pub forecast_next_hour: Option<f64>,
    /// Expected mean of the current local hour, once learned.
    pub profile_this_hour: Option<f64>,
    /// µs until the cooldown after the last scale-up ends (0 = over).
    pub cooldown_left_usec: i64,
    /// The recent peak, decayed to now (`Track::peak_at`).
    pub peak: Option<f64>,
}

impl Track {
    /// Takes one reading. `window_usec` 0 keeps only the latest reading.
    pub fn observe(&mut self, s: Sample, window_usec: i64) {
        if self.alloc > 0.0 && s.alloc > self.alloc + 1e-9 {
            self.last_up_usec = Some(s.ts_usec);
        }
        if self.alloc > 0.0 && s.alloc < self.alloc - 1e-9 {
            // After a cut the window must be covered again, at the new allocation, before the
            // next cut: cuts come at most once per window.
            self.last_down_usec = Some(s.ts_usec);
            self.since_usec = s.ts_usec;
        }
        self.alloc = s.alloc;
        let Some(value) = s.value.filter(|v| v.is_finite() && *v >= 0.0) else {
            return;
        };
        if value >= self.peak_at(s.ts_usec).unwrap_or(0.0) {
            self.peak = value as f32;
            self.peak_usec = s.ts_usec;
        }
        self.push_window(s.ts_usec, value as f32, window_usec, s.max_gap_usec);
        self.push_hour(s.hour, value as f32);
    }

    fn restart_ring(&mut self, ts_usec: i64, span_usec: i64) {
        self.buckets = [EMPTY; BUCKETS];
        self.head = 0;
        self.head_start_usec = ts_usec;
        self.span_usec = span_usec;
        self.since_usec = ts_usec;
    }

    fn push_window(&mut self, ts_usec: i64, value: f32, window_usec: i64, max_gap_usec: i64) {
        let span = (window_usec / BUCKETS as i64).max(1);
        let gap = ts_usec - self.head_start_usec;
        // Empty ring, new window, clock gone backwards, or a gap longer than the window.
        if self.head_start_usec == 0
            || span != self.span_usec
            || gap < 0
            || gap >= window_usec + span
        {
            self.restart_ring(ts_usec, span);
        } else if gap > max_gap_usec.max(2 * span).saturating_add(span) {
            // Coverage is time with readings, not time since the first one: a window that had
            // none for a while holds no maximum of that while, so a cut must wait for a whole
            // window of readings again. The buckets stay: what was read still counts against a
            // cut. The last reading fell somewhere in the head bucket, hence one span of slack.
            self.since_usec = ts_usec;
        }
        let steps = (ts_usec - self.head_start_usec) / span;
        for _ in 0..steps.min(BUCKETS as i64) {
            self.head = (self.head + 1) % BUCKETS as u8;
            self.buckets[usize::from(self.head)] = EMPTY;
        }
        self.head_start_usec += steps * span;
        let b = &mut self.buckets[usize::from(self.head)];
        *b = b.max(value);
    }

    fn push_hour(&mut self, hour: u32, value: f32) {
        let hour = (hour % HOURS as u32) as u8;
        if hour == self.hour {
            self.hour_n += 1.0;
            self.hour_mean += (value - self.hour_mean) / self.hour_n;
            return;
        }
        if usize::from(self.hour) < HOURS && self.hour_mean >= 0.0 {
            let i = usize::from(self.hour);
            let (old, new) = (self.daily[i], self.hour_mean);
            self.daily[i] = if self.days[i] == 0 {
                new
            } else if new > old {
                old + PROFILE_RISE * (new - old)
            } else {
                old + PROFILE_FALL * (new - old)
            };
            self.days[i] = self.days[i].saturating_add(1);
        }
        self.hour = hour;
        self.hour_mean = value;
        self.hour_n = 1.0;
    }

    /// The largest reading lately, halved for every `PEAK_HALF_LIFE_USEC` since it was read;
    /// `None` before the first reading.
    pub fn peak_at(&self, ts_usec: i64) -> Option<f64> {
        if self.peak_usec == 0 {
            return None;
        }
        let age = (ts_usec - self.peak_usec).max(0) as f64;
        let halvings = age / PEAK_HALF_LIFE_USEC as f64;
        Some(f64::from(self.peak) * 0.5f64.powf(halvings))
    }

    /// The track at `ts_usec`, local `hour`, with the given window and cooldown.
    pub fn view(&self, ts_usec: i64, hour: u32, window_usec: i64, cooldown_usec: i64) -> View {
        let window_max = self
            .buckets
            .iter()
            .filter(|b| **b >= 0.0)
            .fold(None, |m: Option<f32>, b| Some(m.map_or(*b, |m| m.max(*b))))
            .map(f64::from);
        let covered_usec = if window_max.is_some() {
            ts_usec - self.since_usec
        } else {
            0
        };
        let covered = window_max.is_some() && covered_usec >= window_usec - self.span_usec;
        let next = ((hour + 1) % HOURS as u32) as usize;
        let learned =
            |i: usize| (self.days[i] >= PROFILE_MIN_DAYS).then(|| f64::from(self.daily[i]));
        let forecast_next_hour = learned(next);
        let profile_this_hour = learned((hour % HOURS as u32) as usize);
        let cooldown_left_usec = self
            .last_up_usec
            .map_or(0, |t| (t + cooldown_usec - ts_usec).max(0));

        View {
            hour,
            covered_usec,
            window_max,
            covered,
            forecast_next_hour,
            profile_this_hour,
            cooldown_left_usec,
            peak: self.peak_at(ts_usec),
        }
    }
}

impl Models {
    /// Drops containers not seen for `OOM_HOLD_USEC` (a day): a VMID may be reused.
    pub fn forget_older_than(&mut self, ts_usec: i64) {
        self.containers
            .retain(|_, m| ts_usec - m.seen_usec < OOM_HOLD_USEC);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;
    const HOUR: i64 = 60 * MIN;

    fn s(ts: i64, value: f64) -> Sample {
        Sample {
            ts_usec: ts,
            hour: ((ts / HOUR) % 24) as u32,
            value: Some(value),
            alloc: 4.0,
            max_gap_usec: 0,
        }
    }

    #[test]
    fn window_max_covers_the_window_and_forgets_older_readings() {
        let mut t = Track::default();
        let start = 1000 * HOUR;
        t.observe(s(start, 3.0), HOUR);
        for k in 1..=12 {
            t.observe(s(start + k * 5 * MIN, 1.0), HOUR);
        }
        // 3.0 was read 60 min ago: out of the last hour's 12 buckets of 5 min.
        let v = t.view(start + 60 * MIN, 0, HOUR, 0);
        assert_eq!((v.window_max, v.covered), (Some(1.0), true));
        let mut t = Track::default();
        t.observe(s(start, 3.0), HOUR);
        for k in 1..=11 {
            t.observe(s(start + k * 5 * MIN, 1.0), HOUR);
        }
        // 55 min later it is still inside.
        let v = t.view(start + 55 * MIN, 0, HOUR, 0);
        assert_eq!((v.window_max, v.covered), (Some(3.0), true));
    }

    #[test]
    fn a_fresh_track_does_not_cover_the_window() {
        let mut t = Track::default();
        t.observe(s(HOUR, 0.5), HOUR);
        let v = t.view(HOUR, 1, HOUR, 0);
        assert_eq!((v.window_max, v.covered), (Some(0.5), false));
        // A zero window is covered by the latest reading alone.
        let mut t = Track::default();
        t.observe(s(HOUR, 0.5), 0);
        assert!(t.view(HOUR, 1, 0, 0).covered);
    }

    #[test]
    fn a_gap_longer_than_the_window_restarts_it() {
        let mut t = Track::default();
        t.observe(s(HOUR, 3.0), HOUR);
        t.observe(s(3 * HOUR, 1.0), HOUR);
        let v = t.view(3 * HOUR, 3, HOUR, 0);
        assert_eq!((v.window_max, v.covered), (Some(1.0), false));
    }

    #[test]
    fn a_gap_in_readings_restarts_coverage_but_keeps_what_was_read() {
        let mut t = Track::default();
        for k in 0..=12 {
            t.observe(s(HOUR + k * 5 * MIN, 2.0), HOUR);
        }
        assert!(t.view(2 * HOUR, 2, HOUR, 0).covered);
        // 30 min without a reading: shorter than window + bucket, yet the window is not covered.
        t.observe(s(2 * HOUR + 30 * MIN, 1.0), HOUR);
        let v = t.view(2 * HOUR + 30 * MIN, 2, HOUR, 0);
        assert_eq!(
            (v.window_max, v.covered, v.covered_usec),
            (Some(2.0), false, 0)
        );
        // Covered again after a window of readings.
        for k in 1..=11 {
            t.observe(s(2 * HOUR + 30 * MIN + k * 5 * MIN, 1.0), HOUR);
        }
        let v = t.view(3 * HOUR + 25 * MIN, 3, HOUR, 0);
        assert_eq!((v.window_max, v.covered), (Some(1.0), true));
    }

    #[test]
    fn readings_further_apart_than_two_buckets_still_cover_the_window_at_their_interval() {
        // A 20 min interval over 5 min buckets: a reading every fourth bucket is no gap.
        let every_20_min = |ts, value| Sample {
            max_gap_usec: 40 * MIN,
            ..s(ts, value)
        };
        let mut t = Track::default();
        for k in 0..=3 {
            t.observe(every_20_min(HOUR + k * 20 * MIN, 1.0), HOUR);
        }
        assert!(t.view(2 * HOUR, 2, HOUR, 0).covered);
        // Two readings missed (60 min apart): not covered.
        t.observe(every_20_min(3 * HOUR, 1.0), HOUR);
        assert!(!t.view(3 * HOUR, 3, HOUR, 0).covered);
    }

    #[test]
    fn cooldown_runs_from_the_last_allocation_that_grew() {
        let mut t = Track::default();
        t.observe(
            Sample {
                alloc: 2.0,
                ..s(HOUR, 1.0)
            },
            HOUR,
        );
        t.observe(
            Sample {
                alloc: 4.0,
                ..s(HOUR + 5 * MIN, 1.0)
            },
            HOUR,
        );
        let v = t.view(HOUR + 20 * MIN, 1, HOUR, HOUR);
        assert_eq!(v.cooldown_left_usec, 45 * MIN);
        assert_eq!(
            t.view(2 * HOUR + 5 * MIN, 2, HOUR, HOUR).cooldown_left_usec,
            0
        );
    }

    #[test]
    fn daily_profile_forecasts_the_next_hour_after_four_days() {
        let mut t = Track::default();
        let mut ts = 0;
        let mut forecasts = Vec::new();
        for _day in 0..5 {
            for _ in 0..(24 * 12) {
                let hour = ((ts / HOUR) % 24) as u32;
                // 4 cores from 9:00 to 10:00, 0.5 otherwise.
                t.observe(s(ts, if hour == 9 { 4.0 } else { 0.5 }), HOUR);
                if hour == 8 && ts % HOUR == 0 {
                    forecasts.push(t.view(ts, 8, HOUR, 0).forecast_next_hour);
                }
                ts += 5 * MIN;
            }
        }
        assert_eq!(forecasts, vec![None, None, None, None, Some(4.0)]);
    }

    #[test]
    fn recent_peak_halves_every_half_life_and_a_larger_reading_replaces_it() {
        let mut t = Track::default();
        assert_eq!(t.view(HOUR, 1, HOUR, 0).peak, None);
        t.observe(s(HOUR, 4000.0), HOUR);
        t.observe(s(HOUR + 5 * MIN, 1000.0), HOUR);
        let day = PEAK_HALF_LIFE_USEC;
        assert_eq!(t.peak_at(HOUR + day), Some(2000.0));
        assert_eq!(t.view(HOUR + 2 * day, 1, HOUR, 0).peak, Some(1000.0));
        // 1500 is above the decayed 4000 · 0.5^2.5 ≈ 707 at that time: it is the new peak.
        t.observe(s(HOUR + 2 * day + day / 2, 1500.0), HOUR);
        assert_eq!(t.peak_at(HOUR + 2 * day + day / 2), Some(1500.0));
    }

    #[test]
    fn model_state_round_trips_through_json_exactly() {
        let mut m = Models::default();
        let ct = m.containers.entry(101).or_default();
        for k in 0..500 {
            ct.cpu.observe(s(k * 5 * MIN, (k % 17) as f64 / 7.0), HOUR);
        }
        let json = serde_json::to_string(&m).unwrap();
        let back: Models = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}

#[cfg(test)]
pub(crate) mod format_tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    /// A model that has learned: a day and a half of readings on two containers, with an
    /// allocation that grew and shrank, an OOM hold and an open anomaly episode.
    pub(crate) fn learned() -> Models {
        let mut m = Models::default();
        for (vmid, steps) in [(101u32, 460i64), (7002, 3)] {
            let ct = m.containers.entry(vmid).or_default();
            for k in 0..steps {
                let ts = 1_700_000_000_000_000 + k * 5 * MIN;
                let hour = ((ts / (60 * MIN)) % 24) as u32;
                let cpu = 0.5 + (k % 13) as f64 / 9.0 + if k >= steps - 2 { 6.0 } else { 0.0 };
                let alloc = if k < 100 {
                    2.0
                } else if k < 300 {
                    4.0
                } else {
                    3.0
                };
                let mem = 700.0 + (k % 29) as f64 * 3.5;
                for (t, v, a) in [(&mut ct.cpu, cpu, alloc), (&mut ct.memory, mem, 2048.0)] {
                    t.observe(
                        Sample {
                            ts_usec: ts,
                            hour,
                            value: Some(v),
                            alloc: a,
                            max_gap_usec: 0,
                        },
                        60 * MIN,
                    );
                    t.detector.observe(ts, v);
                }
                ct.seen_usec = ts;
            }
            if vmid == 101 {
                ct.oom_hold_until_usec = Some(1_700_000_000_000_000 + 86_400_000_000);
            }
        }
        m
    }

    /// `learned()` as the state file held it before tracks were written as arrays (objects with
    /// field names, as serde derives them).
    pub(crate) const OLD_FORMAT: &str = r#"{"containers":{"101":{"cpu":{"buckets":[0.6111111,0.7222222,6.8333335,6.9444447,1.1666666,1.2777778,1.3888888,1.5,1.6111112,1.7222222,1.8333334,0.5],"head":3,"head_start_usec":1700137700000000,"span_usec":300000000,"since_usec":1700090000000000,"daily":[1.1444445,1.1537038,1.162963,1.1722224,1.1814816,1.190741,1.2,1.2092594,1.2185186,1.1620371,1.1712964,1.125926,1.1388888,1.1481482,1.1574075,1.1666667,1.1759261,1.1851853,1.1944447,1.2037038,1.2129631,1.2222223,1.0555556,1.1351851],"days":[2,2,2,2,2,2,2,2,2,2,2,2,1,1,1,1,1,1,1,1,1,1,2,2],"hour":12,"hour_mean":2.9074075,"hour_n":6.0,"alloc":3.0,"last_up_usec":1700030000000000,"last_down_usec":1700090000000000,"peak":6.9444447,"peak_usec":1700137700000000,"detector":{"readings":460,"level":1.0702387,"mad":0.37814993,"recent":[6.9444447,6.8333335],"short":2.0481539,"high":6.9444447,"short_high":1.4141669,"short_low":0.58288074,"episode":{"direction":"up","start_score":4.9039946,"score":2.05553,"baseline":1.0296193,"started_usec":1700137400000000,"calm":0,"len":2}}},"memory":{"buckets":[773.5,777.0,780.5,784.0,745.5,749.0,752.5,756.0,759.5,763.0,766.5,770.0],"head":3,"head_start_usec":1700137700000000,"span_usec":300000000,"since_usec":1700000000000000,"daily":[758.9166,735.35,777.35,724.2083,759.85,749.0,742.35,773.7916,724.85,766.85,739.08325,749.35,758.9167,733.25,775.25,724.2083,757.75,749.0,740.25,773.7917,722.75,764.75,727.4166,752.85],"days":[2,2,2,2,2,2,2,2,2,2,2,2,1,1,1,1,1,1,1,1,1,1,2,2],"hour":12,"hour_mean":775.25,"hour_n":6.0,"alloc":2048.0,"peak":784.0,"peak_usec":1700137700000000,"detector":{"readings":460,"level":739.1855,"mad":24.028982,"recent":[784.0,780.5],"short":764.2847,"high":797.10974,"short_high":776.2811,"short_low":706.0364}},"oom_hold_until_usec":1700086400000000,"seen_usec":1700137700000000},"7002":{"cpu":{"buckets":[0.5,6.611111,6.7222223,-1.0,-1.0,-1.0,-1.0,-1.0,-1.0,-1.0,-1.0,-1.0],"head":2,"head_start_usec":1700000600000000,"span_usec":300000000,"since_usec":1700000000000000,"daily":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0],"days":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"hour":22,"hour_mean":4.611111,"hour_n":3.0,"alloc":2.0,"peak":6.7222223,"peak_usec":1700000600000000,"detector":{"readings":3,"level":0.5427504,"mad":0.04267672,"recent":[6.7222223,6.611111],"short":1.5185186,"high":6.7222223,"short_high":1.5185186,"short_low":0.50001276}},"memory":{"buckets":[700.0,703.5,707.0,-1.0,-1.0,-1.0,-1.0,-1.0,-1.0,-1.0,-1.0,-1.0],"head":2,"head_start_usec":1700000600000000,"span_usec":300000000,"since_usec":1700000000000000,"daily":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0],"days":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"hour":22,"hour_mean":703.5,"hour_n":3.0,"alloc":2048.0,"peak":707.0,"peak_usec":1700000600000000,"detector":{"readings":3,"level":700.03644,"mad":0.03637396,"recent":[707.0,703.5],"short":700.5833,"high":707.0,"short_high":700.5833,"short_low":700.0}},"seen_usec":1700000600000000}}}"#;

    #[test]
    fn a_model_in_the_old_object_format_loads_to_the_identical_model() {
        let back: Models = serde_json::from_str(OLD_FORMAT).unwrap();
        assert_eq!(back, learned());
    }

    #[test]
    fn models_by_vmid_stay_sorted_and_read_and_write_like_a_btreemap() {
        let mut m: ByVmid<u8> = ByVmid::default();
        for vmid in [300, 100, 200, 100] {
            *m.entry(vmid).or_default() += 1;
        }
        assert_eq!(m.insert(150, 9), None);
        assert_eq!(m.insert(300, 7), Some(1));
        let pairs: Vec<(u32, u8)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(pairs, vec![(100, 2), (150, 9), (200, 1), (300, 7)]);
        let as_btree: std::collections::BTreeMap<u32, u8> = pairs.iter().copied().collect();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            serde_json::to_string(&as_btree).unwrap()
        );
        // Out of order, and a repeated key whose last value wins, as with a BTreeMap.
        let text = r#"{"300":1,"100":2,"200":3,"100":4}"#;
        let back: ByVmid<u8> = serde_json::from_str(text).unwrap();
        let btree: std::collections::BTreeMap<u32, u8> = serde_json::from_str(text).unwrap();
        let back: Vec<(u32, u8)> = back.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(back, btree.into_iter().collect::<Vec<_>>());
        m.retain(|vmid, _| *vmid != 150);
        assert_eq!((m.len(), m.get(&150), m.get(&200)), (3, None, Some(&1)));
    }

    #[test]
    fn tracks_are_written_as_arrays_and_read_back_identically() {
        let m = learned();
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            !json.contains("buckets") && !json.contains("readings"),
            "{json}"
        );
        // 2050 bytes instead of 3055: the learned numbers stay, the field names go.
        assert!(json.len() < OLD_FORMAT.len() * 3 / 4, "{json}");
        assert_eq!(serde_json::from_str::<Models>(&json).unwrap(), m);
    }
}
