//! `check-config`: validate the config and print the effective settings of each tier.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::service::daemon::{load_config, warn_if_token_exposed};

pub fn run(path: &Path) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    // The daemon's own check of `api.token_file`: the errors it refuses to start with.
    let api = crate::service::api::Settings::from_config(&cfg)?;
    println!("config {} is valid", path.display());
    println!("{}", api_line(&api));
    println!("{}", mode_line(&cfg));
    for w in cfg.warnings() {
        println!("warning: {w}");
    }
    if let Some(w) = warn_if_token_exposed(path, &cfg) {
        println!("warning: {w}");
    }
    println!(
        "poll_interval {} s, reserve {}% cpu and {} MB memory, energy mode {}",
        cfg.poll_interval,
        cfg.reserve_cpu_percent,
        cfg.reserve_memory_mb,
        if cfg.energy_mode {
            format!("on {:02}:00-{:02}:00", cfg.off_peak_start, cfg.off_peak_end)
        } else {
            "off".into()
        }
    );
    println!(
        "gotify {}",
        if cfg.gotify_enabled() {
            format!(
                "on ({}, token set)",
                crate::act::notify::redact_url(&cfg.gotify_url, &cfg.gotify_token)
            )
        } else {
            "off".into()
        }
    );
    if !cfg.ignore_lxc.is_empty() {
        println!("ignored: {:?}", cfg.ignore_lxc);
    }
    print_tiers(&cfg);
    Ok(ExitCode::SUCCESS)
}

/// The effective limits of the top level and of each tier, one row each.
fn print_tiers(cfg: &crate::config::Config) {
    println!(
        "{:<12} {:>8} {:>11} {:>11} {:>9} {:>9} {:>11} {:>11} {:>9} {:>8} {:>8}  containers",
        "tier",
        "priority",
        "cpu lo/up",
        "mem lo/up",
        "cores",
        "core inc",
        "memory MB",
        "max mem",
        "mem inc",
        "chunk",
        ""
    );
    let mut rows = vec![("(default)".to_string(), cfg.top_level_limits(), Vec::new())];
    for (name, tier) in &cfg.tiers {
        let limits = cfg.tier_limits(name).expect("tier exists");
        rows.push((name.clone(), limits, tier.containers.clone()));
    }
    for (name, l, containers) in rows {
        println!(
            "{:<12} {:>8} {:>11} {:>11} {:>9} {:>9} {:>11} {:>11} {:>9} {:>8} {:>8}  {}",
            name,
            l.priority,
            format!("{}/{}", l.cpu_lower_threshold, l.cpu_upper_threshold),
            format!("{}/{}", l.memory_lower_threshold, l.memory_upper_threshold),
            format!("{}-{}", l.min_cores, l.max_cores),
            format!("{}-{}", l.core_min_increment, l.core_max_increment),
            format!("{}-", l.min_memory),
            l.max_memory.map_or("host".into(), |m| m.to_string()),
            l.memory_min_increment,
            l.min_decrease_chunk,
            "",
            if containers.is_empty() {
                "(all others)".to_string()
            } else {
                containers
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        );
    }
}

/// Cluster mode or standalone, the directory of the confs this node scales, and in cluster mode
/// where the settings come from.
fn mode_line(cfg: &crate::config::Config) -> String {
    let dir = cfg.pve_lxc_dir.display();
    let Some(node) = &cfg.cluster_node else {
        return format!("standalone: scaling the containers in {dir}");
    };
    let mut text = format!("cluster mode: node {node}, scaling the containers in {dir}");
    if let Some(path) = crate::config::cluster::cluster_config_path(cfg) {
        let source = if !path.exists() {
            "not present: the local config holds every setting".to_string()
        } else if cfg.nodes.contains_key(node) {
            format!("in use, with the overrides of [nodes.\"{node}\"]")
        } else {
            "in use, no overrides for this node".to_string()
        };
        text.push_str(&format!(
            "\ncluster-wide config {}: {source}",
            path.display()
        ));
    }
    text
}

/// Where the API listens, whether a token guards it, and which risky endpoints are on.
fn api_line(api: &crate::service::api::Settings) -> String {
    use crate::config::ApiListen;
    let at = match api.listen() {
        ApiListen::Off => return "api off".into(),
        ApiListen::Tcp(a) => a.to_string(),
        ApiListen::Unix(p) => format!("unix:{}", p.display()),
    };
    let token = if api.token.is_some() {
        format!("token from {}", api.api.token_file.display())
    } else {
        "no token: socket permissions only".into()
    };
    let a = &api.api;
    let on: Vec<&str> = [
        (a.allow_storage, "storage"),
        (a.allow_snapshot_rollback, "snapshot_rollback"),
        (a.allow_clone, "clone"),
        (a.allow_destroy, "destroy"),
    ]
    .iter()
    .filter_map(|&(on, name)| on.then_some(name))
    .collect();
    let allowed = if on.is_empty() {
        "none".to_string()
    } else {
        on.join(", ")
    };
    format!("api on {at} ({token}), allowed: {allowed}")
}
