//! `pveconf::parse_conf`: never panics; what it accepts holds values Proxmox would; sections after
//! the main one never change the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lxc_autoscale::read::pveconf::parse_conf;

fuzz_target!(|data: &[u8]| {
    // The daemon reads confs with `read_to_string`: non-UTF-8 is a read error before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_conf(text);
    if let Ok(conf) = &parsed {
        assert!(conf.memory_mb >= 1, "memory 0 accepted");
        assert!(conf.cores.map_or(true, |c| c >= 1), "cores 0 accepted");
        assert!(
            conf.cpulimit.map_or(true, |l| l.is_finite() && l >= 0.0),
            "bad cpulimit accepted"
        );
    }
    let with_snapshot = format!("{text}\n[snap1]\ncores: 0\nmemory: garbage\nlock: backup\n");
    assert_eq!(
        parse_conf(&with_snapshot),
        parsed,
        "a section changed the main section"
    );
});
