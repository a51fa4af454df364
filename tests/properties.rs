//! Property tests: the same parsers and invariants as the fuzz targets in `fuzz/`, run by
//! `cargo test` on every build so that CI covers them without a fuzzer. Case counts are modest so
//! that the file runs in seconds; the fuzzer is where long runs happen.

#[path = "support/invariants.rs"]
mod invariants;
#[path = "common/rng.rs"]
mod rng;
#[path = "support/snapgen.rs"]
mod snapgen;

use lxc_autoscale::config;
use lxc_autoscale::decide::plan::Reason;
use lxc_autoscale::decide::policy;
use lxc_autoscale::read::cgroup::{parse_cpu_stat, parse_keyed, parse_u64};
use lxc_autoscale::read::hostproc::{parse_meminfo, parse_stat};
use lxc_autoscale::read::pveconf::parse_conf;
use lxc_autoscale::read::snapshot::CpuTicks;
use proptest::prelude::*;
use rng::SeededRng;

/// Text that looks like kernel or conf files: keys, digits, signs, `max`, separators, NUL,
/// replacement characters and section brackets.
fn filelike() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("usage_usec".to_string()),
        Just("file".to_string()),
        Just("cpu".to_string()),
        Just("cpu0".to_string()),
        Just("btime".to_string()),
        Just("MemTotal:".to_string()),
        Just("MemAvailable:".to_string()),
        Just("kB".to_string()),
        Just("cores:".to_string()),
        Just("memory:".to_string()),
        Just("swap:".to_string()),
        Just("cpulimit:".to_string()),
        Just("lock:".to_string()),
        Just("tags:".to_string()),
        Just("lxc.apparmor.profile:".to_string()),
        Just("[pve:pending]".to_string()),
        Just("max".to_string()),
        Just("-1".to_string()),
        Just("\0".to_string()),
        Just("\u{fffd}".to_string()),
        Just("18446744073709551616".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{1,3}".prop_map(String::from),
        "[ \t\n:#;.+e-]{1,3}".prop_map(String::from),
        any::<String>(),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|parts| parts.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn conf_parser_accepts_only_usable_values_and_ignores_later_sections(text in filelike()) {
        let parsed = parse_conf(&text);
        if let Ok(conf) = &parsed {
            prop_assert!(conf.memory_mb >= 1);
            prop_assert!(conf.cores.map_or(true, |c| c >= 1));
            prop_assert!(conf.cpulimit.map_or(true, |l| l.is_finite() && l >= 0.0));
        }
        let with_snapshot = format!("{text}\n[snap1]\ncores: 0\nmemory: garbage\n");
        prop_assert_eq!(parse_conf(&with_snapshot), parsed);
    }

    #[test]
    fn conf_parser_reads_written_allocation_exactly(cores in 1u32..=512, memory in 1u64..=1 << 40, comment in "[ -~]{0,40}") {
        let text = format!("#{comment}\narch: amd64\ncores: {cores}\nmemory: {memory}\nlxc.cap.drop: sys_time\n[pve:pending]\ncores: 1\n");
        let conf = parse_conf(&text).unwrap();
        prop_assert_eq!(conf.cores, Some(cores));
        prop_assert_eq!(conf.memory_mb, memory);
    }

    #[test]
    fn parse_u64_gives_only_the_number_spelled_in_digits(text in filelike()) {
        if let Some(n) = parse_u64(&text) {
            let digits = text.trim_ascii().trim_start_matches('0');
            let expected = if digits.is_empty() { "0" } else { digits };
            prop_assert_eq!(n.to_string(), expected);
        }
    }

    #[test]
    fn parse_u64_reads_any_number_with_surrounding_whitespace(n in any::<u64>(), pad in "[ \t\n]{0,3}") {
        prop_assert_eq!(parse_u64(&format!("{pad}{n}{pad}")), Some(n));
        prop_assert_eq!(parse_u64(&format!("-{n}")), None);
    }

    #[test]
    fn cgroup_parsers_never_invent_a_figure(text in filelike()) {
        let stat = parse_cpu_stat(&text);
        if let Some(usage) = stat.usage_usec {
            prop_assert!(text.contains(&usage.to_string()));
        }
        if let Some(file) = parse_keyed(&text, "file") {
            prop_assert!(text.contains(&file.to_string()));
        }
    }

    #[test]
    fn cpu_stat_reads_usage_among_unknown_lines(usage in any::<u64>(), other in any::<u64>()) {
        let text = format!("nr_bursts {other}\nusage_usec {usage}\nuser_usec {other}\nsomething new 1 2\n");
        prop_assert_eq!(parse_cpu_stat(&text).usage_usec, Some(usage));
    }

    #[test]
    fn proc_parsers_never_panic_and_keep_busy_within_total(text in filelike()) {
        let stat = parse_stat(&text);
        if let Some(t) = stat.ticks {
            prop_assert!(t.busy <= t.total);
        }
        prop_assert_ne!(stat.cpus, Some(0));
        let _ = parse_meminfo(&text);
    }

    #[test]
    fn proc_stat_reads_ticks_exactly(f in proptest::array::uniform8(0u64..1 << 50), cpus in 1u32..64) {
        let mut text = format!("cpu  {} {} {} {} {} {} {} {} 7 7\n", f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]);
        for n in 0..cpus {
            text.push_str(&format!("cpu{n} 1 1 1 1 1 1 1 1 0 0\n"));
        }
        let stat = parse_stat(&text);
        let total: u64 = f.iter().sum();
        prop_assert_eq!(stat.ticks, Some(CpuTicks { busy: total - f[3] - f[4], total }));
        prop_assert_eq!(stat.cpus, Some(cpus));
    }

    #[test]
    fn config_loader_accepts_only_valid_configs(text in filelike()) {
        parse_agrees_with_deserialize_then_validate(&text)?;
    }

    #[test]
    fn config_loader_accepts_only_valid_key_values(
        lines in proptest::collection::vec(
            (prop_oneof![
                Just("poll_interval"), Just("min_cores"), Just("max_cores"), Just("cpu_upper_threshold"),
                Just("cpu_lower_threshold"), Just("min_memory"), Just("max_memory"),
                Just("reserve_cpu_percent"), Just("off_peak_start"), Just("ignore_lxc"), Just("no_such_key"),
            ], prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                (0u32..200).prop_map(|n| n.to_string()),
                Just("\"text\"".to_string()), Just("[99]".to_string()), Just("[101]".to_string()),
                Just("nan".to_string()), Just("1.5".to_string()),
            ]),
            0..8,
        )
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        parse_agrees_with_deserialize_then_validate(&text)?;
        if let Ok(cfg) = config::parse(&text) {
            let l = cfg.limits_for(101);
            prop_assert!(l.min_cores >= 1 && l.min_cores <= l.max_cores);
            prop_assert!(l.max_memory.map_or(true, |m| m >= l.min_memory));
        }
    }
}

/// `config::parse` accepts exactly the texts that deserialize into a `Config` and then pass
/// `validate()`, each checked on its own here: the plain deserialization does not validate, so a
/// `parse` that skipped (or half-ran) validation would accept a text this refuses.
fn parse_agrees_with_deserialize_then_validate(text: &str) -> Result<(), TestCaseError> {
    let deserialized: Result<config::Config, String> =
        toml::from_str(text).map_err(|e| e.to_string());
    let verdict = deserialized.and_then(|cfg| cfg.validate().map_err(|e| e.to_string()));
    match (config::parse(text), verdict) {
        (Ok(_), Ok(())) | (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => {
            prop_assert!(false, "parse accepted a config that fails: {}\n{}", e, text)
        }
        (Err(e), Ok(())) => prop_assert!(false, "parse refused a valid config: {:#}\n{}", e, text),
    }
    Ok(())
}

/// The property above has teeth: a text that deserializes but breaks a cross-field rule is
/// refused by `parse`, and `validate` alone refuses it too.
#[test]
fn config_that_deserializes_but_breaks_a_rule_is_refused_by_parse_and_by_validate() {
    let text = "min_cores = 4\nmax_cores = 2\n";
    let cfg: config::Config = toml::from_str(text).expect("well-formed keys and types");
    let rule = cfg.validate().expect_err("min_cores above max_cores");
    assert!(
        rule.to_string().contains("min_cores") || rule.to_string().contains("max_cores"),
        "{rule}"
    );
    assert!(config::parse(text).is_err());
    assert!(parse_agrees_with_deserialize_then_validate(text).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_plan_obeys_the_safety_invariants(data in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Some(case) = snapgen::case(&data) {
            let plan = policy::decide(&case.cfg, &case.snap, &case.state, case.now);
            if let Err(broken) = invariants::check_plan(&case.cfg, &case.snap, &case.state, &plan) {
                prop_assert!(false, "{}", broken);
            }
        }
    }
}

/// The invariant test above proves nothing if the generator never gets to a change: make sure it
/// produces scale-ups and scale-downs of both resources, and some cut to headroom.
#[test]
fn generated_cases_exercise_every_kind_of_change() {
    let mut rng = SeededRng::new(0x9e37_79b9_7f4a_7c15);
    let (mut cores_up, mut cores_down, mut mem_up, mut mem_down, mut cut) = (0, 0, 0, 0, 0);
    for _ in 0..3000 {
        let data = rng.bytes(700);
        let Some(case) = snapgen::case(&data) else {
            continue;
        };
        let plan = policy::decide(&case.cfg, &case.snap, &case.state, case.now);
        invariants::check_plan(&case.cfg, &case.snap, &case.state, &plan).unwrap();
        for c in &plan.changes {
            match c.cores {
                Some(s) if s.to > s.from => cores_up += 1,
                Some(_) => cores_down += 1,
                None => {}
            }
            match c.memory_mb {
                Some(s) if s.to > s.from => mem_up += 1,
                Some(_) => mem_down += 1,
                None => {}
            }
            if c.reasons
                .iter()
                .any(|r| matches!(r, Reason::Scaled { cut: true, .. }))
            {
                cut += 1;
            }
        }
    }
    let counts = [cores_up, cores_down, mem_up, mem_down, cut];
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
}
