//! `/proc/stat` and `/proc/meminfo` parsers: never panic; busy ticks never exceed the total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lxc_autoscale::read::hostproc::{parse_meminfo, parse_stat};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let stat = parse_stat(text);
    if let Some(t) = stat.ticks {
        assert!(t.busy <= t.total, "busy {} > total {}", t.busy, t.total);
    }
    assert_ne!(stat.cpus, Some(0));
    let _ = parse_meminfo(text);
});
