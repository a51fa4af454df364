//! `state_file`: the previous samples, kept across restarts so that the first cycle after a restart
//! can act without a sampling window. JSON, written atomically with mode 0600.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

use crate::decide::model::Models;
use crate::fsutil;
use crate::read::snapshot::{Arrival, ContainerPrev, EpochUsec, Hold, HostPrev, Seen, State};

/// The state file's object, read in one pass: `State`'s keys and `model`. serde's `flatten`
/// cannot read maps keyed by VMID, so `State`'s keys are listed again, with its defaults;
/// `into_parts` names every field of `State`, so one added there and not here does not compile.
/// A file without `model` (older versions) gives an empty model.
#[derive(serde::Deserialize)]
struct StateFileIn {
    host: Option<HostPrev>,
    containers: BTreeMap<u32, ContainerPrev>,
    #[serde(default)]
    holds: BTreeMap<u32, Hold>,
    #[serde(default)]
    seen: BTreeMap<u32, Seen>,
    #[serde(default)]
    arrivals: BTreeMap<u32, Arrival>,
    #[serde(default)]
    destroyed: BTreeMap<u32, EpochUsec>,
    #[serde(default)]
    owned: Option<BTreeSet<u32>>,
    #[serde(default)]
    recommended: BTreeMap<u32, EpochUsec>,
    #[serde(default)]
    model: Models,
}

impl StateFileIn {
    fn into_parts(self) -> (State, Models) {
        let state = State {
            host: self.host,
            containers: self.containers,
            holds: self.holds,
            seen: self.seen,
            arrivals: self.arrivals,
            destroyed: self.destroyed,
            owned: self.owned,
            recommended: self.recommended,
        };
        (state, self.model)
    }
}

/// Refuse to read a state file larger than this: it is a few hundred bytes per container.
const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// Parses state text.
pub fn parse_state(text: &str) -> Result<State> {
    serde_json::from_str(text).context("state is not valid json")
}

/// Reads `path`. A missing file is an empty state; a corrupt or truncated one is an error naming
/// the path (the caller warns and starts empty: stale rates are never worth a guess).
pub fn read_state(path: &Path) -> Result<State> {
    let Some(text) = read_state_text(path)? else {
        return Ok(State::default());
    };
    parse_state(&text).with_context(|| format!("invalid state file {}", path.display()))
}

/// Reads `path` with its model; see `read_state`.
pub fn read_state_with_model(path: &Path) -> Result<(State, Models)> {
    let Some(text) = read_state_text(path)? else {
        return Ok(Default::default());
    };
    let file: StateFileIn = serde_json::from_str(&text)
        .context("state is not valid json")
        .with_context(|| format!("invalid state file {}", path.display()))?;
    Ok(file.into_parts())
}

/// The text of the state file at `path`, `None` when there is none. Refuses a symlink or other
/// non-regular file and one above `MAX_STATE_BYTES`, naming the path.
fn read_state_text(path: &Path) -> Result<Option<String>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    if !meta.file_type().is_file() {
        anyhow::bail!("{} is not a regular file", path.display());
    }
    if meta.len() > MAX_STATE_BYTES {
        anyhow::bail!("{} is too large ({} bytes)", path.display(), meta.len());
    }
    std::fs::read_to_string(path)
        .map(Some)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The model as JSON, as the state file writes it (its size there; `benches/quality.rs`).
pub fn encode_model(models: &Models) -> Result<String> {
    let mut json = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut json, WholeAsInteger);
    serde::Serialize::serialize(models, &mut ser).context("cannot encode model")?;
    String::from_utf8(json).context("cannot encode model")
}

/// JSON as serde_json writes it, except that a float holding a whole number is written as an
/// integer (`-1`, not `-1.0`): the model is mostly such values (empty buckets, unlearned hours,
/// allocations), and the float formatter took a quarter of `--once`'s instructions at 1000
/// containers (callgrind). serde reads an integer into an `f32`/`f64` field, so this and older
/// versions read the same value back, bit for bit: every whole `f32` and every whole `f64` up to
/// 2^53 is exactly an `i64`. `-0.0` stays a float, as an integer it would lose its sign.
struct WholeAsInteger;

/// Largest magnitude written as an integer: every whole `f64` up to it is exact in an `i64`.
const WHOLE_MAX: f64 = 9_007_199_254_740_992.0; // 2^53

/// `value` as an integer when it is one exactly (see `WholeAsInteger`).
fn whole(value: f64) -> Option<i64> {
    // `value` is finite (serde_json writes `null` for the others); a NaN would fail here too.
    let in_range = value.abs() <= WHOLE_MAX;
    if !in_range || (value == 0.0 && value.is_sign_negative()) {
        return None;
    }
    let int = value as i64;
    (int as f64 == value).then_some(int)
}

impl serde_json::ser::Formatter for WholeAsInteger {
    fn write_f32<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        value: f32,
    ) -> std::io::Result<()> {
        match whole(f64::from(value)) {
            Some(int) => self.write_i64(w, int),
            None => serde_json::ser::CompactFormatter.write_f32(w, value),
        }
    }

    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        match whole(value) {
            Some(int) => self.write_i64(w, int),
            None => serde_json::ser::CompactFormatter.write_f64(w, value),
        }
    }
}

/// The state file's object: `State`'s keys, then `model`.
#[derive(serde::Serialize)]
struct StateFile<'a> {
    #[serde(flatten)]
    state: &'a State,
    model: &'a Models,
}

/// Chunk size in which the state file's encoding reaches the file.
const ENCODE_BUFFER_BYTES: usize = 32 * 1024;

/// Writes `state` and `models` to `path` atomically, creating its directory (0700) when missing.
/// The JSON goes straight into the file: at 1000 containers it is over 1 MB, and neither it nor
/// the model's encoding is ever held in memory (encoding costs about a millisecond per 1000
/// containers, so it is done at every save).
pub fn write_state_with_model(path: &Path, state: &State, models: &Models) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::ensure_private_dir(dir)?;
    }
    let file = StateFile {
        state,
        model: models,
    };
    // serde_json writes token by token: through `&mut dyn Write` each one is a virtual call
    // (a third of the encoding's instructions at 1000 containers, measured with callgrind); a
    // buffer of a concrete type takes them inline and passes on whole chunks.
    fsutil::write_atomic_with(path, 0o600, |w| {
        let mut w = std::io::BufWriter::with_capacity(ENCODE_BUFFER_BYTES, w);
        let mut ser = serde_json::Serializer::with_formatter(&mut w, WholeAsInteger);
        serde::Serialize::serialize(&file, &mut ser).map_err(std::io::Error::from)?;
        std::io::Write::flush(&mut w)
    })
}

/// Writes `state` to `path` atomically, creating its directory (0700) when missing.
pub fn write_state(path: &Path, state: &State) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::ensure_private_dir(dir)?;
    }
    let json = serde_json::to_vec(state).context("cannot encode state")?;
    fsutil::write_atomic(path, &json, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::snapshot::{ContainerPrev, CpuTicks, HostPrev};

    fn sample() -> State {
        let mut s = State {
            host: Some(HostPrev {
                taken_at_usec: 1_700_000_000_000_000,
                boot_time: Some(1_699_000_000),
                cpu_ticks: CpuTicks {
                    busy: 100,
                    total: 400,
                },
            }),
            ..State::default()
        };
        s.containers.insert(
            101,
            ContainerPrev {
                taken_at_usec: 1_700_000_000_000_000,
                boot_time: Some(1_699_000_000),
                cgroup_id: 4242,
                cpu_usage_usec: 123_456,
                counters: Default::default(),
            },
        );
        s
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_state(&path, &sample()).unwrap();
        assert_eq!(read_state(&path).unwrap(), sample());
    }

    #[test]
    fn state_and_model_round_trip_through_the_file_and_old_files_read_as_empty_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut models = Models::default();
        let ct = models.containers.entry(101).or_default();
        for k in 0..100i64 {
            ct.cpu.observe(
                crate::decide::model::Sample {
                    ts_usec: k * 300_000_000,
                    hour: (k / 12 % 24) as u32,
                    value: Some(k as f64 / 10.0),
                    alloc: 4.0,
                    max_gap_usec: 0,
                },
                3_600_000_000,
            );
        }
        write_state_with_model(&path, &sample(), &models).unwrap();
        assert_eq!(read_state_with_model(&path).unwrap(), (sample(), models));
        // The plain reader still reads the file, and reads an old one.
        assert_eq!(read_state(&path).unwrap(), sample());
        write_state(&path, &sample()).unwrap();
        assert_eq!(
            read_state_with_model(&path).unwrap(),
            (sample(), Models::default())
        );
    }

    #[test]
    fn every_state_field_and_the_model_round_trip_in_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = sample();
        let hold = Hold {
            cores_until_usec: Some(5),
            memory_until_usec: None,
            by: "uid 0".into(),
        };
        s.holds.insert(101, hold);
        let seen = Seen {
            cores: Some(2),
            memory_mb: 1024,
        };
        s.seen.insert(101, seen);
        let arrival = Arrival {
            until_usec: 7,
            oom_until_usec: Some(8),
            ..Arrival::default()
        };
        s.arrivals.insert(102, arrival);
        s.destroyed.insert(103, 9);
        s.owned = Some([101, 102].into());
        s.recommended.insert(104, 10);
        let models = crate::decide::model::format_tests::learned();
        write_state_with_model(&path, &s, &models).unwrap();
        assert_eq!(read_state_with_model(&path).unwrap(), (s.clone(), models));
        assert_eq!(read_state(&path).unwrap(), s);
    }

    #[test]
    fn a_state_file_with_an_old_format_model_loads_the_identical_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = crate::decide::model::format_tests::OLD_FORMAT;
        std::fs::write(&path, format!(r#"{{"containers":{{}},"model":{old}}}"#)).unwrap();
        let (state, models) = read_state_with_model(&path).unwrap();
        assert_eq!(state, State::default());
        assert_eq!(models, crate::decide::model::format_tests::learned());
    }

    fn whole_as_integer<T: serde::Serialize>(value: &T) -> String {
        let mut json = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut json, WholeAsInteger);
        value.serialize(&mut ser).unwrap();
        String::from_utf8(json).unwrap()
    }

    #[test]
    fn whole_floats_are_written_as_integers_and_read_back_bit_for_bit() {
        let f32s = [
            -1.0f32,
            0.0,
            -0.0,
            1024.0,
            0.5,
            6.944_444_7,
            16_777_216.0,
            f32::MAX,
            -3.0,
        ];
        let text = whole_as_integer(&f32s);
        assert_eq!(
            text,
            "[-1,0,-0.0,1024,0.5,6.9444447,16777216,3.4028235e+38,-3]"
        );
        let back: Vec<f32> = serde_json::from_str(&text).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&f32s));
        let two_53 = 9_007_199_254_740_992.0f64;
        let f64s = [
            2048.0f64,
            -0.0,
            two_53,
            -two_53,
            two_53 * 2.0,
            1e300,
            0.1,
            f64::MIN_POSITIVE,
        ];
        let text = whole_as_integer(&f64s);
        assert_eq!(
            text,
            "[2048,-0.0,9007199254740992,-9007199254740992,1.8014398509481984e+16,1e+300,0.1,\
             2.2250738585072014e-308]"
        );
        let back: Vec<f64> = serde_json::from_str(&text).unwrap();
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&f64s));
        // Not finite: `null`, as serde_json writes it.
        assert_eq!(whole_as_integer(&[f32::NAN, f32::INFINITY]), "[null,null]");
    }

    #[test]
    fn a_fresh_model_is_written_with_integers_and_read_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut models = Models::default();
        models.containers.entry(101).or_default().cpu.observe(
            crate::decide::model::Sample {
                ts_usec: 300_000_000,
                hour: 3,
                value: Some(1.0),
                alloc: 2.0,
                max_gap_usec: 0,
            },
            3_600_000_000,
        );
        write_state_with_model(&path, &sample(), &models).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // The empty buckets and unlearned hours, no longer `-1.0` and `0.0`.
        assert!(
            text.contains("[[[1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1],"),
            "{text}"
        );
        assert!(!text.contains(".0,"), "{text}");
        assert_eq!(
            encode_model(&models).unwrap(),
            text[text.find(r#"{"containers":{"101""#).unwrap()..text.len() - 1]
        );
        assert_eq!(read_state_with_model(&path).unwrap(), (sample(), models));
    }

    #[test]
    fn missing_state_file_is_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_state(&dir.path().join("none.json")).unwrap(),
            State::default()
        );
    }

    #[test]
    fn truncated_state_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let json = serde_json::to_string(&sample()).unwrap();
        std::fs::write(&path, &json[..json.len() / 2]).unwrap();
        let err = format!("{:#}", read_state(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
