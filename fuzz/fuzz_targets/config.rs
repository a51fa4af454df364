//! The config loader: never panics; a config it accepts passes validation and gives every
//! container consistent limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lxc_autoscale::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = config::parse(text) else {
        return;
    };
    assert!(cfg.validate().is_ok(), "parse accepted an invalid config");
    let mut vmids: Vec<u32> = cfg
        .tiers
        .values()
        .flat_map(|t| t.containers.clone())
        .collect();
    vmids.push(100);
    for vmid in vmids {
        let l = cfg.limits_for(vmid);
        assert!(l.min_cores >= 1 && l.min_cores <= l.max_cores);
        assert!(l.cpu_lower_threshold < l.cpu_upper_threshold);
        assert!(l.memory_lower_threshold < l.memory_upper_threshold);
        assert!(l.max_memory.map_or(true, |m| m >= l.min_memory));
    }
});
