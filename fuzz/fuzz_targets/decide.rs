//! `policy::decide` on snapshots decoded from the fuzz bytes: never panics, and every plan obeys
//! the safety invariants (bounds, memory in use, host headroom, unmanaged containers untouched, no
//! change on a missing metric).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lxc_autoscale::decide::policy;

#[path = "../../tests/support/invariants.rs"]
mod invariants;
#[path = "../../tests/support/snapgen.rs"]
mod snapgen;

fuzz_target!(|data: &[u8]| {
    let Some(case) = snapgen::case(data) else {
        return;
    };
    let plan = policy::decide(&case.cfg, &case.snap, &case.state, case.now);
    if let Err(broken) = invariants::check_plan(&case.cfg, &case.snap, &case.state, &plan) {
        panic!("invariant broken: {broken}");
    }
});
