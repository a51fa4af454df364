//! The decision: `(config, snapshot, previous state, now) -> Plan`. Pure: it never logs, never
//! reads the clock, never touches a file.

use chrono::NaiveDateTime;

use crate::config::Config;
use crate::model::{Plan, Snapshot, State};

/// Whether energy mode is in force at local `hour`: `[off_peak_start, off_peak_end)`, wrapping past
/// midnight when start > end. Always false unless `energy_mode` is set.
pub fn energy_window(cfg: &Config, hour: u32) -> bool {
    todo!()
}

/// Decides every container's change for this cycle. `now` is local time.
pub fn decide(cfg: &Config, snap: &Snapshot, state: &State, now: NaiveDateTime) -> Plan {
    todo!()
}
