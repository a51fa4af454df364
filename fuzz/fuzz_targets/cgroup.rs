//! cgroup v2 parsers: never panic; a number is only ever what the file spells in digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lxc_autoscale::read::cgroup::{parse_cpu_stat, parse_keyed, parse_u64};

fuzz_target!(|data: &[u8]| {
    // The collector turns non-UTF-8 into "no figure" before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(n) = parse_u64(text) {
        let digits = text.trim_ascii().trim_start_matches('0');
        let expected = if digits.is_empty() {
            "0".to_string()
        } else {
            digits.to_string()
        };
        assert_eq!(n.to_string(), expected, "parse_u64 invented a number");
    }
    let stat = parse_cpu_stat(text);
    if let Some(usage) = stat.usage_usec {
        assert!(text.contains(&usage.to_string()) || usage == 0);
    }
    let _ = parse_keyed(text, "file");
});
