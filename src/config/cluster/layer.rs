//! The cluster-wide config layered under the local one.
//!
//! In cluster mode, `<pve_root>/lxc_autoscale/lxc_autoscale.conf` (when it exists) holds every
//! setting that is not a node's own; the local config then holds only `LOCAL_KEYS`, and a key in
//! both files is an error naming it. `[nodes."<name>"]` tables override a few keys on one node.
//! Secrets come from `<pve_root>/priv/lxc_autoscale/secrets.toml`, never from the cluster-wide
//! file, which pmxcfs lets the www-data group read: `gotify_token`, and a `gotify_url` that
//! carries a user name or password (one without may stay in the cluster-wide file).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::super::{parse, read_config_text, spans, Config, ConfigError};
use super::{key_error, resolve, Membership, NodeOverride, CLUSTER_CONFIG_FILE, SECRETS_FILE};

/// Keys that belong to one node: its host paths, its files, and how it joins the cluster. In
/// cluster mode only these may be in the local config, and none of them in the cluster-wide one.
pub const LOCAL_KEYS: [&str; 17] = [
    "pve_root",
    "cluster",
    "node_name",
    "log_file",
    "lock_file",
    "backup_dir",
    "cgroup_root",
    "pve_lxc_dir",
    "proc_root",
    "pct_path",
    "state_file",
    "net_class_root",
    "metrics_file",
    "metrics_max_mb",
    "prometheus_textfile",
    "pve_vmlist",
    "api",
];

/// Keys only the secrets file may set. It may also set `gotify_url`, which the cluster-wide file
/// may hold too as long as it carries no user name or password.
pub const SECRET_KEYS: [&str; 1] = ["gotify_token"];

/// The texts to layer, with the paths their errors name.
pub struct Files<'a> {
    pub local: (&'a Path, &'a str),
    pub cluster: (&'a Path, &'a str),
    pub secrets: Option<(&'a Path, &'a str)>,
}

/// `<pve_root>/lxc_autoscale/lxc_autoscale.conf` when cluster mode is on.
pub fn cluster_config_path(cfg: &Config) -> Option<PathBuf> {
    cfg.cluster_node
        .as_ref()
        .map(|_| cfg.pve_root.join(CLUSTER_CONFIG_FILE))
}

/// What tells a changed file apart: its mtime, size and inode; `None` while it does not exist.
/// Compared once per cycle, so that an edit of the cluster-wide config on any node reaches
/// every node without a SIGHUP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStamp(Option<(std::time::SystemTime, u64, u64)>);

impl FileStamp {
    pub fn of(path: &Path) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))),
        )
    }

    /// The stamp of `cfg`'s cluster-wide config; the default outside cluster mode.
    pub fn of_cluster_config(cfg: &Config) -> FileStamp {
        cluster_config_path(cfg).map_or_else(FileStamp::default, |p| FileStamp::of(&p))
    }
}

/// The top-level keys written in `text` (already known to be valid TOML).
fn written_keys(text: &str) -> BTreeSet<String> {
    text.parse::<toml::Table>()
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// An error about `key` in `text`, with the key's line and column when they can be found.
fn located(text: &str, key: &str, message: String) -> anyhow::Error {
    let position = spans::KeySpans::of(text).and_then(|k| k.position(key));
    anyhow::Error::new(ConfigError {
        key: key.to_string(),
        line: position.map(|p| p.0),
        column: position.map(|p| p.1),
        message,
    })
}

/// The cluster-wide file's `gotify_url`, when it is written there as a string.
fn written_gotify_url(text: &str) -> Option<String> {
    let table = text.parse::<toml::Table>().ok()?;
    table.get("gotify_url")?.as_str().map(str::to_string)
}

/// Which file may hold which key: the local file only `LOCAL_KEYS`, the cluster-wide file none of
/// them, no secret and no `gotify_url` with a user name or password, and no key both.
fn check_split(files: &Files) -> Result<()> {
    let (local_path, local_text) = files.local;
    let (cluster_path, cluster_text) = files.cluster;
    let in_cluster = written_keys(cluster_text);
    for key in written_keys(local_text) {
        let message = if in_cluster.contains(&key) {
            format!(
                "is set both here and in the cluster-wide config {}; set it in one file only",
                cluster_path.display()
            )
        } else if !LOCAL_KEYS.contains(&key.as_str()) {
            format!(
                "is a cluster-wide setting; with the cluster-wide config {} present, the local config holds only {}",
                cluster_path.display(),
                LOCAL_KEYS.join(", ")
            )
        } else {
            continue;
        };
        return Err(located(local_text, &key, message))
            .with_context(|| format!("invalid config {}", local_path.display()));
    }
    for key in in_cluster {
        let message = if LOCAL_KEYS.contains(&key.as_str()) {
            "is a node's own setting; set it in each node's local config".to_string()
        } else if SECRET_KEYS.contains(&key.as_str()) {
            format!("is a secret; set it in <pve_root>/{SECRETS_FILE}, which only root can read")
        } else if key == "gotify_url"
            && written_gotify_url(cluster_text)
                .is_some_and(|url| crate::config::url_has_credentials(&url))
        {
            // Named, never quoted: the value holds the password.
            format!(
                "carries a user name or password, which the www-data group can read here; move gotify_url to <pve_root>/{SECRETS_FILE}, which only root can read"
            )
        } else {
            continue;
        };
        return Err(located(cluster_text, &key, message))
            .with_context(|| format!("invalid cluster config {}", cluster_path.display()));
    }
    Ok(())
}

/// Sets every local key of `cfg` to the local config's value.
fn take_local_keys(cfg: &mut Config, local: &Config) {
    cfg.pve_root.clone_from(&local.pve_root);
    cfg.cluster = local.cluster;
    cfg.node_name.clone_from(&local.node_name);
    cfg.log_file.clone_from(&local.log_file);
    cfg.lock_file.clone_from(&local.lock_file);
    cfg.backup_dir.clone_from(&local.backup_dir);
    cfg.cgroup_root.clone_from(&local.cgroup_root);
    cfg.pve_lxc_dir.clone_from(&local.pve_lxc_dir);
    cfg.proc_root.clone_from(&local.proc_root);
    cfg.pct_path.clone_from(&local.pct_path);
    cfg.state_file.clone_from(&local.state_file);
    cfg.net_class_root.clone_from(&local.net_class_root);
    cfg.metrics_file.clone_from(&local.metrics_file);
    cfg.metrics_max_mb = local.metrics_max_mb;
    cfg.prometheus_textfile
        .clone_from(&local.prometheus_textfile);
    cfg.pve_vmlist.clone_from(&local.pve_vmlist);
    cfg.api.clone_from(&local.api);
    cfg.cluster_node.clone_from(&local.cluster_node);
    let mut warnings = local.warnings.clone();
    warnings.append(&mut cfg.warnings);
    cfg.warnings = warnings;
}

/// `secrets.toml`: only `SECRET_KEYS` and `gotify_url`. A parse error names the line, and the key
/// when it is an unknown one, but never repeats the parser's text, which may quote a secret.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Secrets {
    gotify_token: Option<String>,
    /// Here, not in the cluster-wide file, when it carries `user:password@`.
    gotify_url: Option<String>,
}

fn parse_secrets(text: &str) -> Result<Secrets> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| spans::line_column(text, s.start).0);
        let what = if e.message().starts_with("unknown field") {
            e.message().split(',').next().unwrap_or("").to_string()
        } else {
            "invalid value (not shown: the file holds secrets)".to_string()
        };
        match line {
            Some(line) => anyhow::anyhow!("line {line}: {what}"),
            None => anyhow::anyhow!("{what}"),
        }
    })
}

/// Applies `[nodes."<node>"]` to `cfg` and checks the result.
fn apply_override(cfg: &mut Config, node: &str) -> Result<()> {
    let Some(o) = cfg.nodes.get(node).cloned() else {
        return Ok(());
    };
    set_top_level(cfg, &o);
    for (name, t) in &o.tiers {
        let Some(tier) = cfg.tiers.get_mut(name) else {
            return Err(key_error(
                &format!("nodes.{node}.tiers.{name}"),
                format!("the cluster-wide config has no tier `{name}`"),
            ));
        };
        if let Some(p) = t.priority {
            tier.priority = p;
        }
        tier.cpu_upper_threshold = t.cpu_upper_threshold.or(tier.cpu_upper_threshold);
        tier.cpu_lower_threshold = t.cpu_lower_threshold.or(tier.cpu_lower_threshold);
        tier.memory_upper_threshold = t.memory_upper_threshold.or(tier.memory_upper_threshold);
        tier.memory_lower_threshold = t.memory_lower_threshold.or(tier.memory_lower_threshold);
        tier.core_min_increment = t.core_min_increment.or(tier.core_min_increment);
        tier.core_max_increment = t.core_max_increment.or(tier.core_max_increment);
        tier.memory_min_increment = t.memory_min_increment.or(tier.memory_min_increment);
        tier.min_decrease_chunk = t.min_decrease_chunk.or(tier.min_decrease_chunk);
        tier.min_cores = t.min_cores.or(tier.min_cores);
        tier.max_cores = t.max_cores.or(tier.max_cores);
        tier.min_memory = t.min_memory.or(tier.min_memory);
        tier.max_memory = t.max_memory.or(tier.max_memory);
    }
    cfg.validate()
        .map_err(anyhow::Error::new)
        .with_context(|| format!("with the overrides of [nodes.\"{node}\"]"))
}

fn set_top_level(cfg: &mut Config, o: &NodeOverride) {
    if let Some(v) = o.reserve_cpu_percent {
        cfg.reserve_cpu_percent = v;
    }
    if let Some(v) = o.reserve_memory_mb {
        cfg.reserve_memory_mb = v;
    }
    if let Some(v) = o.min_cores {
        cfg.min_cores = v;
    }
    if let Some(v) = o.max_cores {
        cfg.max_cores = v;
    }
    if let Some(v) = o.min_memory {
        cfg.min_memory = v;
    }
    cfg.max_memory = o.max_memory.or(cfg.max_memory);
    if let Some(v) = o.energy_mode {
        cfg.energy_mode = v;
    }
    if let Some(v) = o.off_peak_start {
        cfg.off_peak_start = v;
    }
    if let Some(v) = o.off_peak_end {
        cfg.off_peak_end = v;
    }
}

/// The effective config of `local`'s node (`local.cluster_node`): the cluster-wide config, the
/// local keys from `local`, the secrets, then this node's overrides. Every node's overrides are
/// checked, so any node's `check-config` finds a bad one.
pub fn layer(files: &Files, local: &Config, members: &Membership) -> Result<Config> {
    let (cluster_path, cluster_text) = files.cluster;
    let invalid = || format!("invalid cluster config {}", cluster_path.display());
    let node = local
        .cluster_node
        .clone()
        .ok_or_else(|| anyhow::anyhow!("layering needs cluster mode"))?;
    check_split(files)?;
    let mut cfg = parse(cluster_text).with_context(invalid)?;
    for name in cfg.nodes.keys() {
        if !members.nodes.contains(name) {
            let listed: Vec<&str> = members.nodes.iter().map(String::as_str).collect();
            let message = format!(
                "node `{name}` is not a member of the cluster (.members lists {})",
                listed.join(", ")
            );
            return Err(located(cluster_text, &format!("nodes.{name}"), message))
                .with_context(invalid);
        }
        apply_override(&mut cfg.clone(), name).with_context(invalid)?;
    }
    take_local_keys(&mut cfg, local);
    if let Some((path, text)) = files.secrets {
        let secrets = parse_secrets(text)
            .with_context(|| format!("invalid secrets file {}", path.display()))?;
        if let Some(token) = secrets.gotify_token {
            cfg.gotify_token = token.into();
        }
        if let Some(url) = secrets.gotify_url {
            let in_secrets = |message: String| {
                Err(located(text, "gotify_url", message))
                    .with_context(|| format!("invalid secrets file {}", path.display()))
            };
            if written_keys(cluster_text).contains("gotify_url") {
                return in_secrets(format!(
                    "is set both here and in the cluster-wide config {}; set it in one file only",
                    cluster_path.display()
                ));
            }
            if let Some(problem) = crate::config::gotify_url_problem(&url) {
                return in_secrets(problem.to_string());
            }
            cfg.gotify_url = url.into();
        }
    }
    apply_override(&mut cfg, &node).with_context(invalid)?;
    cfg.finish();
    Ok(cfg)
}

/// Reads `path` when it exists; `None` when it does not.
fn read_if_present(path: &Path) -> Result<Option<String>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_config_text(path).map(Some),
    }
}

/// The secrets file, refused when group or others may read it, or another user owns it.
fn read_secrets(path: &Path) -> Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let Some(text) = read_if_present(path)? else {
        return Ok(None);
    };
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.mode() & 0o077 != 0 || meta.uid() != euid {
        anyhow::bail!(
            "refusing secrets file {}: it must be owned by uid {euid} and readable by its owner only (mode {:o}, owner uid {})",
            path.display(),
            meta.mode() & 0o777,
            meta.uid()
        );
    }
    Ok(Some(text))
}

/// Loads the local config at `path`, resolves cluster mode (`members` reads `.members` under a
/// `pve_root`, `None` when there is none; `hostname` is the fallback node name), and in cluster
/// mode layers the cluster-wide config and the secrets under it when the cluster-wide file exists.
pub fn load(
    path: &Path,
    members: impl FnOnce(&Path) -> Result<Option<Membership>>,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<Config> {
    let invalid = || format!("invalid config {}", path.display());
    let local_text = read_config_text(path)?;
    let mut local = parse(&local_text).with_context(invalid)?;
    if !local.nodes.is_empty() {
        // `nodes` is usually an implicit table (`[nodes."n1"]` headers only): it has no line.
        let message = format!(
            "per-node overrides belong in the cluster-wide config <pve_root>/{CLUSTER_CONFIG_FILE}"
        );
        return Err(key_error("nodes", message)).with_context(invalid);
    }
    let membership = match local.cluster {
        super::ClusterMode::Off => None,
        super::ClusterMode::Auto => members(&local.pve_root)?,
    };
    resolve(&mut local, membership.as_ref(), hostname).with_context(invalid)?;
    if local.cluster_node.is_some() && written_keys(&local_text).contains("pve_lxc_dir") {
        let dir = local.pve_lxc_dir.display().to_string();
        local.warnings.push(format!(
            "pve_lxc_dir is not used in cluster mode: this node scales the containers in {dir}"
        ));
    }
    let (Some(cluster_path), Some(membership)) = (cluster_config_path(&local), membership) else {
        return Ok(local);
    };
    let Some(cluster_text) = read_if_present(&cluster_path)? else {
        return Ok(local);
    };
    let secrets_path = local.pve_root.join(SECRETS_FILE);
    let secrets_text = read_secrets(&secrets_path)?;
    let files = Files {
        local: (path, &local_text),
        cluster: (&cluster_path, &cluster_text),
        secrets: secrets_text.as_deref().map(|t| (secrets_path.as_path(), t)),
    };
    layer(&files, &local, &membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Membership {
        Membership {
            nodename: Some("n1".into()),
            nodes: ["n1", "n2", "n3"]
                .iter()
                .map(|n| (*n).to_string())
                .collect(),
        }
    }

    /// The effective config of `node` from literal file texts.
    fn layered(node: &str, local: &str, cluster: &str, secrets: Option<&str>) -> Result<Config> {
        let local_text = format!("pve_root = \"/p\"\nnode_name = \"{node}\"\n{local}");
        let mut cfg = parse(&local_text)?;
        resolve(&mut cfg, Some(&members()), || None)?;
        let files = Files {
            local: (Path::new("/etc/l.conf"), &local_text),
            cluster: (Path::new("/p/c.conf"), cluster),
            secrets: secrets.map(|t| (Path::new("/p/s.toml"), t)),
        };
        layer(&files, &cfg, &members())
    }

    fn err(node: &str, local: &str, cluster: &str, secrets: Option<&str>) -> String {
        format!("{:#}", layered(node, local, cluster, secrets).unwrap_err())
    }

    const PER_NODE: &str = "max_cores = 6\n\n[tiers.web]\ncontainers = [101]\nmax_cores = 4\n\n\
        [nodes.n1]\nmax_cores = 12\nreserve_memory_mb = 4096\nenergy_mode = true\n\n\
        [nodes.n1.tiers.web]\nmax_cores = 10\n";

    #[test]
    fn cluster_settings_apply_with_the_local_paths() {
        let c = layered(
            "n2",
            "backup_dir = \"/l/b\"\n",
            "poll_interval = 60\n",
            None,
        )
        .unwrap();
        assert_eq!(c.poll_interval, 60);
        assert_eq!(c.backup_dir, PathBuf::from("/l/b"));
        assert_eq!(c.pve_lxc_dir, PathBuf::from("/p/nodes/n2/lxc"));
        assert_eq!(c.cluster_node.as_deref(), Some("n2"));
        assert_eq!(c.node_name, "n2");
    }

    #[test]
    fn a_node_override_applies_on_that_node_only() {
        let n1 = layered("n1", "", PER_NODE, None).unwrap();
        assert_eq!(
            (n1.max_cores, n1.reserve_memory_mb, n1.energy_mode),
            (12, 4096, true)
        );
        assert_eq!(n1.limits_for(101).max_cores, 10);
        assert_eq!(n1.limits_for(102).max_cores, 12);
        let n2 = layered("n2", "", PER_NODE, None).unwrap();
        assert_eq!(
            (n2.max_cores, n2.reserve_memory_mb, n2.energy_mode),
            (6, 2048, false)
        );
        assert_eq!(n2.limits_for(101).max_cores, 4);
        assert_eq!(n2.limits_for(102).max_cores, 6);
    }

    #[test]
    fn a_key_a_node_may_not_override_is_an_error_naming_it() {
        assert_eq!(
            err("n1", "", "[nodes.n1]\npoll_interval = 5\n", None),
            "invalid cluster config /p/c.conf: key `nodes.n1.poll_interval` (line 2, column 1): unknown field `poll_interval`, expected one of `reserve_cpu_percent`, `reserve_memory_mb`, `min_cores`, `max_cores`, `min_memory`, `max_memory`, `energy_mode`, `off_peak_start`, `off_peak_end`, `tiers`"
        );
        let tiers = "[tiers.web]\ncontainers = [101]\n[nodes.n1.tiers.web]\ncontainers = [102]\n";
        assert!(
            err("n1", "", &format!("[nodes.n1]\n{tiers}"), None).starts_with(
                "invalid cluster config /p/c.conf: key `nodes.n1.tiers.web.containers` (line 5, column 1): unknown field `containers`"
            ),
        );
        // Without a `[nodes.n1]` header that table has no span: the error names the field and line.
        assert!(err("n1", "", tiers, None).starts_with(
            "invalid cluster config /p/c.conf: line 4, column 1: unknown field `containers`"
        ));
    }

    #[test]
    fn a_node_not_in_members_is_an_error_naming_it() {
        assert_eq!(
            err("n1", "", "max_cores = 8\n[nodes.n9]\nmax_cores = 4\n", None),
            "invalid cluster config /p/c.conf: key `nodes.n9` (line 2, column 1): node `n9` is not a member of the cluster (.members lists n1, n2, n3)"
        );
    }

    #[test]
    fn a_bad_override_of_another_node_is_found_on_every_node() {
        let text = "max_cores = 8\n[nodes.n3]\nmin_cores = 9\n";
        for node in ["n1", "n3"] {
            assert_eq!(
                err(node, "", text, None),
                "invalid cluster config /p/c.conf: with the overrides of [nodes.\"n3\"]: key `min_cores`: must not exceed max_cores (9 > 8)"
            );
        }
    }

    #[test]
    fn an_override_of_a_tier_the_cluster_lacks_is_an_error() {
        assert_eq!(
            err("n1", "", "[nodes.n1.tiers.db]\nmax_cores = 4\n", None),
            "invalid cluster config /p/c.conf: key `nodes.n1.tiers.db`: the cluster-wide config has no tier `db`"
        );
    }

    #[test]
    fn a_key_in_both_files_is_an_error_naming_it() {
        assert_eq!(
            err("n1", "poll_interval = 30\n", "poll_interval = 60\n", None),
            "invalid config /etc/l.conf: key `poll_interval` (line 3, column 17): is set both here and in the cluster-wide config /p/c.conf; set it in one file only"
        );
    }

    #[test]
    fn a_cluster_wide_key_in_the_local_file_is_an_error_naming_it() {
        let e = err("n1", "max_cores = 4\n", "poll_interval = 60\n", None);
        assert!(
            e.starts_with("invalid config /etc/l.conf: key `max_cores` (line 3, column 13): is a cluster-wide setting; with the cluster-wide config /p/c.conf present, the local config holds only pve_root, cluster, node_name, log_file,"),
            "{e}"
        );
    }

    #[test]
    fn a_local_key_in_the_cluster_file_is_an_error_naming_it() {
        assert_eq!(
            err("n1", "", "poll_interval = 60\nbackup_dir = \"/b\"\n", None),
            "invalid cluster config /p/c.conf: key `backup_dir` (line 2, column 14): is a node's own setting; set it in each node's local config"
        );
    }

    #[test]
    fn the_token_comes_from_the_secrets_file_never_the_cluster_file() {
        let e = err("n1", "", "gotify_token = \"abc\"\n", None);
        assert_eq!(
            e,
            "invalid cluster config /p/c.conf: key `gotify_token` (line 1, column 16): is a secret; set it in <pve_root>/priv/lxc_autoscale/secrets.toml, which only root can read"
        );
        let c = layered(
            "n1",
            "",
            "gotify_url = \"http://127.0.0.1:1\"\n",
            Some("gotify_token = \"s3cret\"\n"),
        )
        .unwrap();
        assert_eq!(c.gotify_token, "s3cret");
        assert!(c.gotify_enabled());
    }

    /// pmxcfs shows the cluster-wide file as root:www-data 0640, so a password in its
    /// `gotify_url` would be readable by the web UI's group: it belongs in the secrets file.
    #[test]
    fn a_gotify_url_with_a_password_is_read_from_the_secrets_file_and_refused_in_the_cluster_file()
    {
        let secrets = "gotify_url = \"https://admin:pw@g.example\"\ngotify_token = \"t\"\n";
        let c = layered("n1", "", "poll_interval = 60\n", Some(secrets)).unwrap();
        assert_eq!(c.gotify_url, "https://admin:pw@g.example");
        assert!(c.gotify_enabled());
        let moved = "invalid cluster config /p/c.conf: key `gotify_url` (line 1, column 14): carries a user name or password, which the www-data group can read here; move gotify_url to <pve_root>/priv/lxc_autoscale/secrets.toml, which only root can read";
        let t = Some("gotify_token = \"t\"\n");
        assert_eq!(
            err("n1", "", "gotify_url = \"https://admin:pw@g.example\"\n", t),
            moved
        );
        // A user name alone is refused as well: it is half of the credentials.
        assert_eq!(
            err("n1", "", "gotify_url = \"https://admin@g.example\"\n", t),
            moved
        );
        // Without userinfo the URL is no secret and stays in the cluster-wide file.
        let c = layered("n1", "", "gotify_url = \"https://g.example/x\"\n", t).unwrap();
        assert_eq!(c.gotify_url, "https://g.example/x");
    }

    #[test]
    fn a_gotify_url_in_both_the_secrets_and_the_cluster_file_is_an_error_naming_it() {
        assert_eq!(
            err(
                "n1",
                "",
                "gotify_url = \"https://g.example\"\n",
                Some("gotify_token = \"t\"\ngotify_url = \"https://a:pw@g.example\"\n"),
            ),
            "invalid secrets file /p/s.toml: key `gotify_url` (line 2, column 14): is set both here and in the cluster-wide config /p/c.conf; set it in one file only"
        );
    }

    #[test]
    fn a_bad_gotify_url_in_the_secrets_file_names_the_line_but_never_the_value() {
        let e = err(
            "n1",
            "",
            "",
            Some("gotify_url = \"https://admin:Pw/77x@g.example/\"\n"),
        );
        assert_eq!(
            e,
            "invalid secrets file /p/s.toml: key `gotify_url` (line 1, column 14): has an '@' after a '/', '?' or '#': write those characters in the user name or password as %2F, %3F and %23"
        );
        assert_eq!(
            err("n1", "", "", Some("gotify_url = \"ftp://a:pw@g\"\n")),
            "invalid secrets file /p/s.toml: key `gotify_url` (line 1, column 14): must start with http:// or https://"
        );
    }

    #[test]
    fn a_bad_secrets_file_names_the_line_but_never_the_value() {
        let e = err("n1", "", "", Some("\ngotify_token = 12345678\n"));
        assert_eq!(
            e,
            "invalid secrets file /p/s.toml: line 2: invalid value (not shown: the file holds secrets)"
        );
        let unknown = err("n1", "", "", Some("gotify_tokn = \"x\"\n"));
        assert_eq!(
            unknown,
            "invalid secrets file /p/s.toml: line 1: unknown field `gotify_tokn`"
        );
    }

    #[test]
    fn load_warns_that_pve_lxc_dir_is_not_used_in_cluster_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("local.conf");
        std::fs::write(&path, "node_name = \"n2\"\npve_lxc_dir = \"/x\"\n").unwrap();
        let cfg = load(&path, |_| Ok(Some(members())), || None).unwrap();
        assert_eq!(
            cfg.warnings(),
            ["pve_lxc_dir is not used in cluster mode: this node scales the containers in /etc/pve/nodes/n2/lxc"]
        );
        let standalone = load(&path, |_| Ok(None), || None).unwrap();
        assert!(standalone.warnings().is_empty());
        assert_eq!(standalone.pve_lxc_dir, PathBuf::from("/x"));
    }

    #[test]
    fn every_local_key_is_a_config_key() {
        // `net_class_root` is written only when set.
        let cfg = Config {
            net_class_root: Some(PathBuf::from("/sys/class/net")),
            ..Config::default()
        };
        let text = toml::to_string(&cfg).unwrap();
        let keys = written_keys(&text);
        for key in LOCAL_KEYS.iter().chain(SECRET_KEYS.iter()) {
            assert!(keys.contains(*key), "{key}");
        }
    }
}
