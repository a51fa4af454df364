//! The daemon's TOML config: keys, defaults, tiers and the cross-field rules.
//!
//! Memory figures are Proxmox MB, which are MiB. Thresholds are percentages (0–100) and may be
//! decimals; counts, sizes and hours are integers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub mod cluster;
use cluster::{ClusterMode, NodeOverride};

/// A secret value of the config (`gotify_token`, and `gotify_url`, which may hold a password). Reads as a `str`; its `Debug` prints
/// `<redacted>`, so a `Config` printed while debugging never carries it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Whether `url` carries a user name or password (anything before the last '@' after the
/// scheme): exactly when `act::notify` sends a Basic auth header from it, so a URL refused for
/// this is one that would have handed credentials over.
pub fn url_has_credentials(url: &str) -> bool {
    url.trim()
        .split_once("://")
        .and_then(|(_, rest)| rest.rfind('@'))
        .is_some_and(|at| at > 0)
}

/// Whether `url` has an '@' after a '/', '?' or '#' of its authority: a user name or password with
/// such a character written raw, or an '@' in the path; either way the host cannot be told
/// apart for sure.
pub fn userinfo_is_ambiguous(url: &str) -> bool {
    let Some(rest) = url.trim().split_once("://").map(|(_, r)| r) else {
        return false;
    };
    match (rest.find(['/', '?', '#']), rest.rfind('@')) {
        (Some(end), Some(at)) => at > end,
        _ => false,
    }
}

/// What is wrong with `url` as a `gotify_url`, if anything. Never quotes it: the part in doubt
/// may be a password. Also checks a `gotify_url` from the cluster's secrets file.
pub fn gotify_url_problem(url: &str) -> Option<&'static str> {
    if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
        return Some("must start with http:// or https://");
    }
    if userinfo_is_ambiguous(url) {
        return Some("has an '@' after a '/', '?' or '#': write those characters in the user name or password as %2F, %3F and %23");
    }
    None
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl PartialEq<&str> for Secret {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/lxc_autoscale/lxc_autoscale.conf";

/// Default `lock_file`: in a root-owned 0755 runtime directory (systemd's `RuntimeDirectory`, or
/// created by the program itself), where no other user can create or lock it first.
pub const DEFAULT_LOCK_FILE: &str = "/run/lxc_autoscale/lxc_autoscale.lock";
/// `lock_file` default before 0.2: in the world-writable `/run/lock`. Installed configs still name
/// it (upgrades never overwrite a config), so it is read as `DEFAULT_LOCK_FILE`, with a warning.
pub const OLD_DEFAULT_LOCK_FILE: &str = "/var/lock/lxc_autoscale.lock";

/// Longest `poll_interval`: one day. Anything longer is a typo, and bounds all time arithmetic.
pub const MAX_POLL_INTERVAL_SECS: u64 = 86_400;

/// Upper bound of `scale_down_window` and `scale_down_cooldown`, seconds.
pub const MAX_SCALE_DOWN_SECS: u64 = 7 * 86_400;
/// Largest config file read. A real config is a few KiB; the cap keeps a huge file from holding
/// up a start or a reload.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Most entries in one list (`ignore_lxc`, a tier's `containers`) and most tiers.
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// Smallest VMID Proxmox hands out; lower numbers are reserved.
pub const MIN_VMID: u32 = 100;

/// The whole config file. Unknown keys are rejected so that a typo never silently falls back to a
/// default on a root daemon.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seconds between cycle starts.
    pub poll_interval: u64,
    pub cpu_upper_threshold: f64,
    pub cpu_lower_threshold: f64,
    pub memory_upper_threshold: f64,
    pub memory_lower_threshold: f64,
    /// Cores added at least / at most per scale-up, and removed at most per scale-down.
    pub core_min_increment: u32,
    pub core_max_increment: u32,
    /// MB added at least per memory scale-up.
    pub memory_min_increment: u64,
    pub min_cores: u32,
    pub max_cores: u32,
    /// MB.
    pub min_memory: u64,
    /// MB; `None` leaves memory bounded only by host headroom.
    pub max_memory: Option<u64>,
    /// MB; memory is lowered in whole multiples of this.
    pub min_decrease_chunk: u64,
    /// Seconds of recent history that must agree before a cut (its maximum below the lower
    /// threshold); memory needs 2.5 × that (`advice::MEMORY_WINDOW_PERCENT`). 0 with
    /// `scale_down_cooldown` 0: cuts follow the latest reading alone.
    pub scale_down_window: u64,
    /// Seconds after a scale-up of a resource before that resource may be cut.
    pub scale_down_cooldown: u64,
    /// Percent of host CPUs kept for the host.
    pub reserve_cpu_percent: f64,
    /// MB of `MemAvailable` kept for the host.
    pub reserve_memory_mb: u64,
    pub log_file: PathBuf,
    pub lock_file: PathBuf,
    pub backup_dir: PathBuf,
    /// Local hour (0–23) at which energy mode starts.
    pub off_peak_start: u32,
    /// Local hour (0–23) at which energy mode ends (exclusive).
    pub off_peak_end: u32,
    pub energy_mode: bool,
    /// May carry a password (`https://user:pass@host`): its `Debug` is redacted too.
    pub gotify_url: Secret,
    /// Secret: never logged, never printed (its `Debug` is redacted).
    pub gotify_token: Secret,
    /// VMIDs that are measured but never changed.
    pub ignore_lxc: Vec<u32>,
    pub tiers: BTreeMap<String, TierConfig>,
    /// Parent of the per-container limiting cgroups (`<cgroup_root>/<vmid>/`).
    pub cgroup_root: PathBuf,
    /// Directory of `<vmid>.conf` files.
    pub pve_lxc_dir: PathBuf,
    /// Root of the host's procfs (`stat`, `meminfo`).
    pub proc_root: PathBuf,
    pub pct_path: PathBuf,
    /// Previous samples, kept across restarts.
    pub state_file: PathBuf,
    /// No longer read: the veth counters come from `<proc_root>/net/dev`. Accepted (with a
    /// warning) because installed configs name it, and an upgrade must not stop the daemon.
    pub net_class_root: Option<PathBuf>,
    /// JSON-lines history, one line per container and one host line per cycle. Empty = off.
    pub metrics_file: PathBuf,
    /// MB (MiB) at which `metrics_file` is rotated to `<metrics_file>.1`.
    pub metrics_max_mb: u64,
    /// Prometheus text file for node_exporter's textfile collector, rewritten each cycle. Empty = off.
    pub prometheus_textfile: PathBuf,
    /// `auto` applies the plan; `recommend` only shows it.
    pub scaling: Scaling,
    /// The cluster's VM list (pmxcfs JSON); a missing file means a single node.
    pub pve_vmlist: PathBuf,
    /// The `[api]` table: the REST API inside the daemon.
    pub api: ApiConfig,
    /// Root of the Proxmox cluster filesystem (pmxcfs); cluster mode reads everything below it.
    pub pve_root: PathBuf,
    /// This node's name in the cluster. Empty = `.members`' `nodename`, else the short hostname.
    pub node_name: String,
    /// `auto`: cluster mode when `<pve_root>/.members` lists more than one node; `off`: never.
    pub cluster: ClusterMode,
    /// `recommend`: in cluster mode one daemon (the placement leader) advises moving a container
    /// whose scale-up does not fit on its node to a node with room; `off`: no advice, no leader.
    pub placement: Placement,
    /// Nodes never named as a placement target.
    pub placement_exclude_nodes: Vec<String>,
    /// `[nodes."<name>"]` overrides; allowed in the cluster-wide config only (`config::cluster`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeOverride>,

    /// This node's name when cluster mode is on, filled by `config::cluster` at load.
    #[serde(skip)]
    pub cluster_node: Option<String>,

    /// VMID -> tier name, filled by `finish()`.
    #[serde(skip)]
    tier_index: HashMap<u32, String>,
    /// `ignore_lxc` as a set, filled by `finish()`.
    #[serde(skip)]
    ignore_index: HashSet<u32>,
    /// Things about the file worth a warning that do not make it invalid, filled by `parse()`.
    #[serde(skip)]
    warnings: Vec<String>,
}

/// A `[tiers.NAME]` section. Every `Option` left out inherits the top level.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub containers: Vec<u32>,
    #[serde(default)]
    pub priority: i64,
    pub cpu_upper_threshold: Option<f64>,
    pub cpu_lower_threshold: Option<f64>,
    pub memory_upper_threshold: Option<f64>,
    pub memory_lower_threshold: Option<f64>,
    pub core_min_increment: Option<u32>,
    pub core_max_increment: Option<u32>,
    pub memory_min_increment: Option<u64>,
    pub min_decrease_chunk: Option<u64>,
    pub scale_down_window: Option<u64>,
    pub scale_down_cooldown: Option<u64>,
    pub min_cores: Option<u32>,
    pub max_cores: Option<u32>,
    pub min_memory: Option<u64>,
    pub max_memory: Option<u64>,
}

/// Whether the daemon changes containers on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// Apply the plan every cycle.
    #[default]
    Auto,
    /// Measure, record and serve the API, show the plan, never apply it.
    Recommend,
}

/// The `placement` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    Off,
    /// Advise `pct migrate` when a scale-up does not fit (never migrate by itself).
    #[default]
    Recommend,
}

/// The `[api]` table. Secrets live in `token_file`, never in the config itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `unix:<absolute path>`, `<ip>:<port>`, or `""` (off).
    pub listen: String,
    /// File holding the token (root-owned, mode 0600). Empty = no token.
    pub token_file: PathBuf,
    /// Allow a TCP address other than loopback.
    pub allow_remote: bool,
    pub allow_storage: bool,
    pub allow_snapshot_rollback: bool,
    pub allow_clone: bool,
    pub allow_destroy: bool,
    /// Seconds the autoscaler leaves a resource alone after a manual change.
    pub manual_hold: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "unix:/run/lxc_autoscale/api.sock".into(),
            token_file: PathBuf::new(),
            allow_remote: false,
            allow_storage: false,
            allow_snapshot_rollback: false,
            allow_clone: false,
            allow_destroy: false,
            manual_hold: 3600,
        }
    }
}

/// Where the API listens, parsed from `api.listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiListen {
    Off,
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl ApiConfig {
    /// The parsed `listen` value, or why it is not one.
    pub fn listen_addr(&self) -> Result<ApiListen, String> {
        let l = self.listen.trim();
        if l.is_empty() {
            return Ok(ApiListen::Off);
        }
        if let Some(path) = l.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() || path.file_name().is_none() {
                return Err(format!("`{l}`: a unix socket needs an absolute file path"));
            }
            return Ok(ApiListen::Unix(path));
        }
        l.parse::<std::net::SocketAddr>()
            .map(ApiListen::Tcp)
            .map_err(|_| format!("`{l}` is neither `unix:/path` nor `address:port`"))
    }

    /// Rules of the table: TCP needs a token, a non-loopback address needs `allow_remote`.
    fn check(&self) -> Result<(), (&'static str, String)> {
        match self.listen_addr().map_err(|m| ("listen", m))? {
            ApiListen::Tcp(addr) => {
                if self.token_file.as_os_str().is_empty() {
                    return Err((
                        "token_file",
                        format!("required when api.listen is a TCP address ({addr})"),
                    ));
                }
                if !addr.ip().is_loopback() && !self.allow_remote {
                    return Err((
                        "allow_remote",
                        format!("{addr} is not a loopback address: set api.allow_remote = true to listen there"),
                    ));
                }
            }
            ApiListen::Unix(_) | ApiListen::Off => {}
        }
        if !self.token_file.as_os_str().is_empty() && !self.token_file.is_absolute() {
            return Err(("token_file", "must be an absolute path".into()));
        }
        Ok(())
    }
}

/// The settings that apply to one container: its tier's overrides over the top level.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Tier name, or `None` for containers in no tier.
    pub tier: Option<String>,
    pub priority: i64,
    pub cpu_upper_threshold: f64,
    pub cpu_lower_threshold: f64,
    pub memory_upper_threshold: f64,
    pub memory_lower_threshold: f64,
    pub core_min_increment: u32,
    pub core_max_increment: u32,
    pub memory_min_increment: u64,
    pub min_decrease_chunk: u64,
    /// Seconds; see `Config::scale_down_window`.
    pub scale_down_window: u64,
    /// Seconds; see `Config::scale_down_cooldown`.
    pub scale_down_cooldown: u64,
    pub min_cores: u32,
    pub max_cores: u32,
    pub min_memory: u64,
    pub max_memory: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            poll_interval: 300,
            cpu_upper_threshold: 80.0,
            cpu_lower_threshold: 20.0,
            memory_upper_threshold: 80.0,
            memory_lower_threshold: 20.0,
            core_min_increment: 1,
            core_max_increment: 4,
            memory_min_increment: 512,
            min_cores: 1,
            max_cores: 8,
            min_memory: 512,
            max_memory: None,
            min_decrease_chunk: 512,
            scale_down_window: 2700,
            scale_down_cooldown: 3600,
            reserve_cpu_percent: 10.0,
            reserve_memory_mb: 2048,
            log_file: PathBuf::from("/var/log/lxc_autoscale.log"),
            lock_file: PathBuf::from(DEFAULT_LOCK_FILE),
            backup_dir: PathBuf::from("/var/lib/lxc_autoscale/backups"),
            off_peak_start: 22,
            off_peak_end: 6,
            energy_mode: false,
            gotify_url: Secret::default(),
            gotify_token: Secret::default(),
            ignore_lxc: Vec::new(),
            tiers: BTreeMap::new(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup/lxc"),
            pve_lxc_dir: PathBuf::from("/etc/pve/lxc"),
            proc_root: PathBuf::from("/proc"),
            pct_path: PathBuf::from("/usr/sbin/pct"),
            state_file: PathBuf::from("/var/lib/lxc_autoscale/state.json"),
            net_class_root: None,
            metrics_file: PathBuf::from("/var/lib/lxc_autoscale/metrics.jsonl"),
            metrics_max_mb: 64,
            prometheus_textfile: PathBuf::new(),
            scaling: Scaling::Auto,
            pve_vmlist: PathBuf::from("/etc/pve/.vmlist"),
            api: ApiConfig::default(),
            pve_root: PathBuf::from(cluster::DEFAULT_PVE_ROOT),
            node_name: String::new(),
            cluster: ClusterMode::Auto,
            placement: Placement::Recommend,
            placement_exclude_nodes: Vec::new(),
            nodes: BTreeMap::new(),
            cluster_node: None,
            tier_index: HashMap::new(),
            ignore_index: HashSet::new(),
            warnings: Vec::new(),
        }
    }
}

/// A config that failed a rule. Names the key (`tiers.web.max_cores`) and, when the key is written
/// in the file, its 1-based line and column (from the TOML parser's spans).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub key: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(
                f,
                "key `{}` (line {line}, column {column}): {}",
                self.key, self.message
            ),
            (Some(line), None) => write!(f, "key `{}` (line {line}): {}", self.key, self.message),
            _ => write!(f, "key `{}`: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the config at `path`. Every error names the path. Only a regular file of
/// at most `MAX_CONFIG_BYTES` is read: a FIFO, device or directory is refused without blocking.
pub fn load(path: &Path) -> Result<Config> {
    let text = read_config_text(path)?;
    parse(&text).with_context(|| format!("invalid config {}", path.display()))
}

/// The text of the config file at `path`, checked to be a regular file of at most
/// `MAX_CONFIG_BYTES`. Opened with `O_NONBLOCK` and checked with `fstat` on the open file, so
/// a FIFO never blocks the open and a file swapped in after the check is never read.
fn read_config_text(path: &Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let kind = meta.file_type();
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    if !kind.is_file() {
        anyhow::bail!(
            "cannot read config {}: it is {what}; the config must be a regular file",
            path.display()
        );
    }
    let too_big = || {
        anyhow::anyhow!(
            "cannot read config {}: larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // The file may grow after fstat: never read more than the cap.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("cannot read config {}: not UTF-8 text", path.display()))
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Config> {
    let mut config: Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
    config.validate_in(Some(text))?;
    config.upgrade_old_defaults();
    config.finish();
    Ok(config)
}

/// Rewrites a TOML error so that it starts with the key it is about, with the line and column of
/// the error's span.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().trim().to_string();
    let Some(span) = err.span() else {
        return anyhow::anyhow!("{message}");
    };
    let (line, column) = spans::line_column(text, span.start);
    let Some(key) = spans::KeySpans::of(text).and_then(|k| k.key_at(&span)) else {
        return anyhow::anyhow!("line {line}, column {column}: {message}");
    };
    // toml echoes some values ("invalid type: integer `123`"): never the token's.
    let message = if key == "gotify_token" {
        "invalid value, not shown because it is a secret (write it as a quoted string)".to_string()
    } else {
        message
    };
    anyhow::Error::new(ConfigError {
        key,
        line: Some(line),
        column: Some(column),
        message,
    })
}

/// Positions of the keys in config text, from `toml::Spanned`: no line is guessed by scanning.
mod spans {
    use std::collections::HashMap;
    use std::fmt;
    use std::ops::Range;

    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use toml::Spanned;

    /// 1-based line and column (in characters) of byte `offset` in `text`.
    pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        (line, before[line_start..].chars().count() + 1)
    }

    /// Where one key's value is written, and whether it is a table.
    struct Entry {
        span: Range<usize>,
        table: bool,
    }

    /// Every key written in the text, dotted (`tiers.web.max_cores`), with the span of its value
    /// (for a `[table]`, from its header to its last line).
    pub struct KeySpans<'t> {
        text: &'t str,
        keys: HashMap<String, Entry>,
    }

    impl<'t> KeySpans<'t> {
        /// `None` when the text is not TOML, or not shaped like a config at all.
        pub fn of(text: &'t str) -> Option<KeySpans<'t>> {
            let root: Root = toml::from_str(text).ok()?;
            let mut keys = HashMap::new();
            root.0.flatten("", &mut keys);
            Some(KeySpans { text, keys })
        }

        /// Line and column of the value of `key` where it is written.
        pub fn position(&self, key: &str) -> Option<(usize, usize)> {
            let entry = self.keys.get(key)?;
            Some(line_column(self.text, entry.span.start))
        }

        /// The key an error at byte range `at` is about: the innermost value holding it, or,
        /// when that is a table and `at` lies inside it (an unknown key), that key's name.
        pub fn key_at(&self, at: &Range<usize>) -> Option<String> {
            let inner = self
                .keys
                .iter()
                .filter(|(_, e)| e.span.contains(&at.start))
                .max_by_key(|(name, _)| name.len());
            let written = || {
                let k = self.text.get(at.clone())?.trim().trim_matches(['"', '\'']);
                (!k.is_empty() && !k.contains('\n')).then(|| k.to_string())
            };
            match inner {
                Some((name, e)) if e.table && e.span != *at => {
                    Some(format!("{name}.{}", written()?))
                }
                Some((name, _)) => Some(name.clone()),
                None => written(),
            }
        }
    }

    /// A TOML value, keeping only what positions need: the keys and spans of tables.
    enum Node {
        Table(Vec<(String, Spanned<Node>)>),
        Other,
    }

    impl Node {
        fn flatten(self, prefix: &str, out: &mut HashMap<String, Entry>) {
            let Node::Table(entries) = self else { return };
            for (key, value) in entries {
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                let span = value.span();
                let node = value.into_inner();
                let table = matches!(node, Node::Table(_));
                node.flatten(&name, out);
                out.insert(name, Entry { span, table });
            }
        }
    }

    impl<'de> Deserialize<'de> for Node {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
            d.deserialize_any(NodeVisitor)
        }
    }

    /// The top-level table. `tiers` is an implicit table (only `[tiers.NAME]` headers create
    /// it), which has no span, so it is read without one.
    struct Root(Node);

    impl<'de> Deserialize<'de> for Root {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Root, D::Error> {
            d.deserialize_map(RootVisitor)
        }
    }

    struct RootVisitor;

    impl<'de> Visitor<'de> for RootVisitor {
        type Value = Root;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a TOML table")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Root, A::Error> {
            let mut entries = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = if key == "tiers" || key == "nodes" {
                    let node = map.next_value::<Node>()?;
                    Spanned::new(0..0, node)
                } else {
                    map.next_value::<Spanned<Node>>()?
                };
                entries.push((key, value));
            }
            Ok(Root(Node::Table(entries)))
        }
    }

    struct NodeVisitor;

    impl<'de> Visitor<'de> for NodeVisitor {
        type Value = Node;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any TOML value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
            let mut entries = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                // `[nodes.NAME.tiers.TIER]` makes `tiers` implicit there too (no span).
                let value = if key == "tiers" {
                    Spanned::new(0..0, map.next_value::<Node>()?)
                } else {
                    map.next_value::<Spanned<Node>>()?
                };
                entries.push((key, value));
            }
            Ok(Node::Table(entries))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Node::Other)
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
            Ok(Node::Other)
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
            Ok(Node::Other)
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
            Ok(Node::Other)
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
            Ok(Node::Other)
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
            Ok(Node::Other)
        }
    }
}

impl Config {
    /// Warnings about the file that did not make it invalid; each is to be logged (or printed)
    /// once per load.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Reads values that only an old default put in a config as today's default.
    fn upgrade_old_defaults(&mut self) {
        if self.lock_file == Path::new(OLD_DEFAULT_LOCK_FILE) {
            self.lock_file = PathBuf::from(DEFAULT_LOCK_FILE);
            self.warnings.push(format!(
                "lock_file {OLD_DEFAULT_LOCK_FILE} is the old default in a directory every user can write to; using {DEFAULT_LOCK_FILE} instead (set lock_file to that, or remove the line, to silence this warning)"
            ));
        }
        if let Some(old) = &self.net_class_root {
            self.warnings.push(format!(
                "net_class_root ({}) is no longer read: the network figures come from net/dev under proc_root ({}); remove the line to silence this warning",
                old.display(),
                self.proc_root.display()
            ));
        }
    }

    /// Checks every cross-field rule. The first broken rule is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(None)
    }

    fn validate_in(&self, text: Option<&str>) -> Result<(), ConfigError> {
        let err = |section: Option<&str>, key: &str, message: String| {
            let full = match section {
                Some(s) => format!("{s}.{key}"),
                None => key.to_string(),
            };
            // Only on the error path: parse the text once more for its spans. A tier key that is
            // not written there is inherited: point at the top-level key.
            let position = text
                .and_then(spans::KeySpans::of)
                .and_then(|k| k.position(&full).or_else(|| k.position(key)));
            ConfigError {
                key: full,
                line: position.map(|p| p.0),
                column: position.map(|p| p.1),
                message,
            }
        };

        self.check_top_level(&err)?;
        self.check_list_sizes(&err)?;
        self.check_placement(&err)?;
        check_levels(&self.top_level_limits(), None, &err)?;
        self.check_tiers(&err)
    }

    /// The rules on top-level keys that tiers do not override.
    fn check_top_level<F>(&self, err: &F) -> Result<(), ConfigError>
    where
        F: Fn(Option<&str>, &str, String) -> ConfigError,
    {
        if !(1..=MAX_POLL_INTERVAL_SECS).contains(&self.poll_interval) {
            return Err(err(
                None,
                "poll_interval",
                format!(
                    "must be from 1 to {MAX_POLL_INTERVAL_SECS} seconds (one day), got {}",
                    self.poll_interval
                ),
            ));
        }
        if !(0.0..100.0).contains(&self.reserve_cpu_percent) || self.reserve_cpu_percent.is_nan() {
            return Err(err(
                None,
                "reserve_cpu_percent",
                format!(
                    "must be from 0 to below 100, got {}",
                    self.reserve_cpu_percent
                ),
            ));
        }
        if self.metrics_max_mb < 1 {
            return Err(err(None, "metrics_max_mb", "must be at least 1 MB".into()));
        }
        for (key, hour) in [
            ("off_peak_start", self.off_peak_start),
            ("off_peak_end", self.off_peak_end),
        ] {
            if hour > 23 {
                return Err(err(
                    None,
                    key,
                    format!("must be an hour from 0 to 23, got {hour}"),
                ));
            }
        }
        if let Some(problem) = gotify_url_problem(&self.gotify_url) {
            return Err(err(None, "gotify_url", problem.into()));
        }
        for &vmid in &self.ignore_lxc {
            if vmid < MIN_VMID {
                return Err(err(
                    None,
                    "ignore_lxc",
                    format!("{vmid} is not a VMID (must be {MIN_VMID} or more)"),
                ));
            }
        }
        if let Err((key, message)) = self.api.check() {
            return Err(err(Some("api"), key, message));
        }
        Ok(())
    }

    /// Caps every list, so that the checks and the indexes stay small whatever the file holds.
    fn check_list_sizes<F>(&self, err: &F) -> Result<(), ConfigError>
    where
        F: Fn(Option<&str>, &str, String) -> ConfigError,
    {
        let too_long =
            |n: usize| format!("has {n} entries, more than the {MAX_LIST_ENTRIES} allowed");
        if self.ignore_lxc.len() > MAX_LIST_ENTRIES {
            return Err(err(None, "ignore_lxc", too_long(self.ignore_lxc.len())));
        }
        if self.tiers.len() > MAX_LIST_ENTRIES {
            return Err(err(None, "tiers", too_long(self.tiers.len())));
        }
        for (name, tier) in &self.tiers {
            if tier.containers.len() > MAX_LIST_ENTRIES {
                let section = format!("tiers.{name}");
                return Err(err(
                    Some(&section),
                    "containers",
                    too_long(tier.containers.len()),
                ));
            }
        }
        Ok(())
    }

    /// `placement_exclude_nodes` holds node names.
    fn check_placement<F>(&self, err: &F) -> Result<(), ConfigError>
    where
        F: Fn(Option<&str>, &str, String) -> ConfigError,
    {
        let key = "placement_exclude_nodes";
        if self.placement_exclude_nodes.len() > MAX_LIST_ENTRIES {
            let n = self.placement_exclude_nodes.len();
            let message = format!("has {n} entries, more than the {MAX_LIST_ENTRIES} allowed");
            return Err(err(None, key, message));
        }
        for name in &self.placement_exclude_nodes {
            cluster::check_node_name(name).map_err(|m| err(None, key, m))?;
        }
        Ok(())
    }

    /// Each tier's own rules, and that no container is in two tiers or in a tier and
    /// `ignore_lxc`. Linear in the number of entries: one hash lookup per container.
    fn check_tiers<F>(&self, err: &F) -> Result<(), ConfigError>
    where
        F: Fn(Option<&str>, &str, String) -> ConfigError,
    {
        let ignored: HashSet<u32> = self.ignore_lxc.iter().copied().collect();
        let mut seen: HashMap<u32, &str> = HashMap::new();
        for (name, tier) in &self.tiers {
            let section = format!("tiers.{name}");
            let limits = self.merge(Some(name), tier);
            check_levels(&limits, Some(&section), err)?;
            for &vmid in &tier.containers {
                if vmid < MIN_VMID {
                    return Err(err(
                        Some(&section),
                        "containers",
                        format!("{vmid} is not a VMID (must be {MIN_VMID} or more)"),
                    ));
                }
                if ignored.contains(&vmid) {
                    return Err(err(
                        Some(&section),
                        "containers",
                        format!("container {vmid} is also in ignore_lxc"),
                    ));
                }
                if let Some(other) = seen.insert(vmid, name) {
                    if other != name {
                        return Err(err(
                            Some(&section),
                            "containers",
                            format!("container {vmid} is also in tier `{other}`"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Builds the VMID -> tier index. Called once after validation.
    fn finish(&mut self) {
        self.ignore_index = self.ignore_lxc.iter().copied().collect();
        self.tier_index.clear();
        for (name, tier) in &self.tiers {
            for &vmid in &tier.containers {
                self.tier_index.insert(vmid, name.clone());
            }
        }
    }

    /// The tier a container belongs to, if any.
    pub fn tier_of(&self, vmid: u32) -> Option<&str> {
        if self.tier_index.is_empty() && !self.tiers.is_empty() {
            // A config built in code without `parse()`.
            return self
                .tiers
                .iter()
                .find(|(_, t)| t.containers.contains(&vmid))
                .map(|(n, _)| n.as_str());
        }
        self.tier_index.get(&vmid).map(String::as_str)
    }

    /// Whether `ignore_lxc` names this container.
    pub fn is_ignored(&self, vmid: u32) -> bool {
        if self.ignore_index.is_empty() {
            // A config built in code without `parse()`.
            return self.ignore_lxc.contains(&vmid);
        }
        self.ignore_index.contains(&vmid)
    }

    /// The effective settings for one container.
    pub fn limits_for(&self, vmid: u32) -> Limits {
        match self.tier_of(vmid) {
            Some(name) => self.merge(Some(name), &self.tiers[name]),
            None => self.top_level_limits(),
        }
    }

    /// The effective settings of a named tier.
    pub fn tier_limits(&self, name: &str) -> Option<Limits> {
        self.tiers.get(name).map(|t| self.merge(Some(name), t))
    }

    /// The settings of containers in no tier.
    pub fn top_level_limits(&self) -> Limits {
        self.merge(None, &TierConfig::default())
    }

    fn merge(&self, name: Option<&str>, t: &TierConfig) -> Limits {
        Limits {
            tier: name.map(str::to_string),
            priority: t.priority,
            cpu_upper_threshold: t.cpu_upper_threshold.unwrap_or(self.cpu_upper_threshold),
            cpu_lower_threshold: t.cpu_lower_threshold.unwrap_or(self.cpu_lower_threshold),
            memory_upper_threshold: t
                .memory_upper_threshold
                .unwrap_or(self.memory_upper_threshold),
            memory_lower_threshold: t
                .memory_lower_threshold
                .unwrap_or(self.memory_lower_threshold),
            core_min_increment: t.core_min_increment.unwrap_or(self.core_min_increment),
            core_max_increment: t.core_max_increment.unwrap_or(self.core_max_increment),
            memory_min_increment: t.memory_min_increment.unwrap_or(self.memory_min_increment),
            min_decrease_chunk: t.min_decrease_chunk.unwrap_or(self.min_decrease_chunk),
            scale_down_window: t.scale_down_window.unwrap_or(self.scale_down_window),
            scale_down_cooldown: t.scale_down_cooldown.unwrap_or(self.scale_down_cooldown),
            min_cores: t.min_cores.unwrap_or(self.min_cores),
            max_cores: t.max_cores.unwrap_or(self.max_cores),
            min_memory: t.min_memory.unwrap_or(self.min_memory),
            max_memory: t.max_memory.or(self.max_memory),
        }
    }

    /// Whether Gotify notifications are on: both `gotify_url` and `gotify_token` set to something
    /// other than blanks. The one rule for `check-config` and the notifier.
    pub fn gotify_enabled(&self) -> bool {
        !self.gotify_url.trim().is_empty() && !self.gotify_token.trim().is_empty()
    }
}

/// Rules shared by the top level and each tier (after inheritance).
fn check_levels<F>(l: &Limits, section: Option<&str>, err: &F) -> Result<(), ConfigError>
where
    F: Fn(Option<&str>, &str, String) -> ConfigError,
{
    check_thresholds(l, section, err)?;
    check_steps_and_bounds(l, section, err)
}

/// Thresholds are percentages, each lower one below its upper one.
fn check_thresholds<F>(l: &Limits, section: Option<&str>, err: &F) -> Result<(), ConfigError>
where
    F: Fn(Option<&str>, &str, String) -> ConfigError,
{
    let blame = |_key: &str| -> Option<&str> { section };
    for (key, value) in [
        ("cpu_upper_threshold", l.cpu_upper_threshold),
        ("cpu_lower_threshold", l.cpu_lower_threshold),
        ("memory_upper_threshold", l.memory_upper_threshold),
        ("memory_lower_threshold", l.memory_lower_threshold),
    ] {
        if !(0.0..=100.0).contains(&value) || value.is_nan() {
            return Err(err(
                blame(key),
                key,
                format!("must be a percentage from 0 to 100, got {value}"),
            ));
        }
    }
    if l.cpu_lower_threshold >= l.cpu_upper_threshold {
        return Err(err(
            blame("cpu_lower_threshold"),
            "cpu_lower_threshold",
            format!(
                "must be below cpu_upper_threshold ({} is not below {})",
                l.cpu_lower_threshold, l.cpu_upper_threshold
            ),
        ));
    }
    if l.memory_lower_threshold >= l.memory_upper_threshold {
        return Err(err(
            blame("memory_lower_threshold"),
            "memory_lower_threshold",
            format!(
                "must be below memory_upper_threshold ({} is not below {})",
                l.memory_lower_threshold, l.memory_upper_threshold
            ),
        ));
    }
    Ok(())
}

/// Increments are at least 1, and every minimum is within its maximum.
fn check_steps_and_bounds<F>(l: &Limits, section: Option<&str>, err: &F) -> Result<(), ConfigError>
where
    F: Fn(Option<&str>, &str, String) -> ConfigError,
{
    let blame = |_key: &str| -> Option<&str> { section };
    for (key, value) in [
        ("core_min_increment", u64::from(l.core_min_increment)),
        ("core_max_increment", u64::from(l.core_max_increment)),
        ("memory_min_increment", l.memory_min_increment),
        ("min_decrease_chunk", l.min_decrease_chunk),
        ("min_cores", u64::from(l.min_cores)),
    ] {
        if value < 1 {
            return Err(err(blame(key), key, "must be at least 1".into()));
        }
    }
    if l.core_min_increment > l.core_max_increment {
        return Err(err(
            blame("core_min_increment"),
            "core_min_increment",
            format!(
                "must not exceed core_max_increment ({} > {})",
                l.core_min_increment, l.core_max_increment
            ),
        ));
    }
    if l.min_cores > l.max_cores {
        return Err(err(
            blame("min_cores"),
            "min_cores",
            format!(
                "must not exceed max_cores ({} > {})",
                l.min_cores, l.max_cores
            ),
        ));
    }
    if l.min_memory < 16 {
        return Err(err(
            blame("min_memory"),
            "min_memory",
            format!(
                "must be at least 16 MB (the Proxmox minimum), got {}",
                l.min_memory
            ),
        ));
    }
    if let Some(max) = l.max_memory {
        if l.min_memory > max {
            return Err(err(
                blame("min_memory"),
                "min_memory",
                format!("must not exceed max_memory ({} > {max})", l.min_memory),
            ));
        }
    }
    for (key, value) in [
        ("scale_down_window", l.scale_down_window),
        ("scale_down_cooldown", l.scale_down_cooldown),
    ] {
        if value > MAX_SCALE_DOWN_SECS {
            return Err(err(
                blame(key),
                key,
                format!("must be at most {MAX_SCALE_DOWN_SECS} seconds (a week), got {value}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn placement_defaults_to_recommend_and_exclusions_must_be_node_names() {
        let c = parse("").unwrap();
        assert_eq!(c.placement, Placement::Recommend);
        assert!(c.placement_exclude_nodes.is_empty());
        let c = parse("placement = \"off\"\nplacement_exclude_nodes = [\"n3\"]").unwrap();
        assert_eq!(c.placement, Placement::Off);
        assert_eq!(c.placement_exclude_nodes, ["n3"]);
        assert!(err_of("placement = \"migrate\"").starts_with("key `placement` (line 1"));
        assert_eq!(
            err_of("placement_exclude_nodes = [\"n1\", \"../x\"]"),
            "key `placement_exclude_nodes` (line 1, column 27): `../x` is not a node name (letters, digits and `-`, at most 63)"
        );
    }

    #[test]
    fn empty_file_gives_the_original_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.poll_interval, 300);
        assert_eq!(c.cpu_upper_threshold, 80.0);
        assert_eq!(c.cpu_lower_threshold, 20.0);
        assert_eq!(c.memory_upper_threshold, 80.0);
        assert_eq!(c.memory_lower_threshold, 20.0);
        assert_eq!(c.core_min_increment, 1);
        assert_eq!(c.core_max_increment, 4);
        assert_eq!(c.memory_min_increment, 512);
        assert_eq!(c.min_cores, 1);
        assert_eq!(c.max_cores, 8);
        assert_eq!(c.min_memory, 512);
        assert_eq!(c.max_memory, None);
        assert_eq!(c.min_decrease_chunk, 512);
        assert_eq!(c.reserve_cpu_percent, 10.0);
        assert_eq!(c.reserve_memory_mb, 2048);
        assert_eq!(c.log_file, PathBuf::from("/var/log/lxc_autoscale.log"));
        assert_eq!(
            c.lock_file,
            PathBuf::from("/run/lxc_autoscale/lxc_autoscale.lock")
        );
        assert!(c.warnings().is_empty());
        assert_eq!(
            c.backup_dir,
            PathBuf::from("/var/lib/lxc_autoscale/backups")
        );
        assert_eq!(c.off_peak_start, 22);
        assert_eq!(c.off_peak_end, 6);
        assert!(!c.energy_mode);
        assert_eq!(c.gotify_url, "");
        assert_eq!(c.gotify_token, "");
        assert_eq!(c.cgroup_root, PathBuf::from("/sys/fs/cgroup/lxc"));
        assert_eq!(c.pve_lxc_dir, PathBuf::from("/etc/pve/lxc"));
        assert_eq!(c.proc_root, PathBuf::from("/proc"));
        assert_eq!(c.pct_path, PathBuf::from("/usr/sbin/pct"));
        assert_eq!(
            c.state_file,
            PathBuf::from("/var/lib/lxc_autoscale/state.json")
        );
    }

    const EXAMPLE: &str = include_str!("../lxc_autoscale.conf.example");

    #[test]
    fn example_config_parses_to_the_defaults() {
        assert_eq!(parse(EXAMPLE).unwrap(), parse("").unwrap());
    }

    #[test]
    fn example_config_documents_every_key() {
        let keys = [
            "poll_interval",
            "cpu_upper_threshold",
            "cpu_lower_threshold",
            "memory_upper_threshold",
            "memory_lower_threshold",
            "core_min_increment",
            "core_max_increment",
            "memory_min_increment",
            "min_cores",
            "max_cores",
            "min_memory",
            "max_memory",
            "min_decrease_chunk",
            "scale_down_window",
            "scale_down_cooldown",
            "reserve_cpu_percent",
            "reserve_memory_mb",
            "log_file",
            "lock_file",
            "backup_dir",
            "off_peak_start",
            "off_peak_end",
            "energy_mode",
            "gotify_url",
            "gotify_token",
            "ignore_lxc",
            "cgroup_root",
            "pve_lxc_dir",
            "proc_root",
            "pct_path",
            "state_file",
            "metrics_file",
            "metrics_max_mb",
            "prometheus_textfile",
            "scaling",
            "pve_vmlist",
            "[api]",
            "listen",
            "token_file",
            "allow_remote",
            "allow_storage",
            "allow_snapshot_rollback",
            "allow_clone",
            "allow_destroy",
            "manual_hold",
            "[tiers.",
            "containers",
            "priority",
        ];
        for key in keys {
            assert!(EXAMPLE.contains(key), "example lacks {key}");
        }
    }

    #[test]
    fn example_tier_blocks_parse_when_uncommented() {
        let text: String = EXAMPLE
            .lines()
            .map(|l| {
                // Uncomment `# key = value` and `# [section]` lines; leave prose comments.
                let t = l.strip_prefix("# ").unwrap_or(l);
                let is_setting = t.starts_with("[tiers.")
                    || t.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    });
                format!("{}\n", if is_setting { t } else { l })
            })
            .collect();
        let c = parse(&text).unwrap();
        assert_eq!(c.max_memory, Some(16384));
        let crit = c.limits_for(102);
        assert_eq!(crit.tier.as_deref(), Some("critical"));
        assert_eq!(crit.priority, 10);
        assert_eq!(crit.max_cores, 12);
        assert_eq!(crit.max_memory, Some(32768));
        assert_eq!(c.limits_for(201).max_cores, 4);
    }

    #[test]
    fn thresholds_accept_integers_and_decimals() {
        let c = parse("cpu_upper_threshold = 80.5\ncpu_lower_threshold = 30").unwrap();
        assert_eq!(c.cpu_upper_threshold, 80.5);
        assert_eq!(c.cpu_lower_threshold, 30.0);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name_and_line() {
        let e = err_of("poll_interval = 60\npoll_intervall = 30\n");
        assert!(
            e.starts_with(
                "key `poll_intervall` (line 2, column 1): unknown field `poll_intervall`"
            ),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        assert_eq!(
            err_of("poll_interval = 60\nmax_cores = = 3\n"),
            "line 2, column 13: invalid string\nexpected `\"`, `'`"
        );
    }

    #[test]
    fn tier_without_containers_names_the_tier_table() {
        assert_eq!(
            err_of("max_cores = 6\n[tiers.web]\nmax_cores = 3\n"),
            "key `tiers.web` (line 2, column 1): missing field `containers`"
        );
    }

    #[test]
    fn wrong_type_of_the_token_hides_the_value() {
        assert_eq!(
            err_of("gotify_token = 12345\n"),
            "key `gotify_token` (line 1, column 16): invalid value, not shown because it is a secret (write it as a quoted string)"
        );
    }

    #[test]
    fn debug_output_of_a_config_never_shows_the_gotify_token_or_url_password() {
        let c =
            parse("gotify_url = \"https://g.example\"\ngotify_token = \"AbC9xyzTok\"\n").unwrap();
        assert_eq!(c.gotify_token, "AbC9xyzTok");
        let dbg = format!("{c:?} {c:#?}");
        assert!(
            !dbg.contains("AbC9xyzTok") && !dbg.contains("UrlPw77"),
            "{dbg}"
        );
        assert!(dbg.contains("gotify_token: <redacted>"), "{dbg}");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    #[test]
    fn unknown_key_in_a_tier_is_rejected() {
        let e = err_of("[tiers.web]\ncontainers = [101]\nmax_core = 3\n");
        assert!(
            e.starts_with("key `tiers.web.max_core` (line 3, column 1): unknown field `max_core`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_the_key_and_line() {
        let e = err_of("# c\nmin_cores = \"two\"\n");
        assert!(e.contains("key `min_cores` (line 2, column 13)"), "{e}");
    }

    #[test]
    fn negative_count_is_rejected() {
        let e = err_of("max_cores = -1\n");
        assert!(e.contains("key `max_cores` (line 1, column 13)"), "{e}");
    }

    #[test]
    fn threshold_above_100_is_rejected() {
        let e = err_of("\ncpu_upper_threshold = 101\n");
        assert!(
            e.contains("key `cpu_upper_threshold` (line 2, column 23)"),
            "{e}"
        );
        assert!(e.contains("0 to 100"), "{e}");
    }

    #[test]
    fn lower_threshold_not_below_upper_is_rejected() {
        let e = err_of("memory_upper_threshold = 50\nmemory_lower_threshold = 50\n");
        assert!(
            e.contains("key `memory_lower_threshold` (line 2, column 26)"),
            "{e}"
        );
    }

    #[test]
    fn tier_threshold_is_checked_against_inherited_upper() {
        let e = err_of(
            "cpu_upper_threshold = 60\n[tiers.db]\ncontainers = [200]\ncpu_lower_threshold = 70\n",
        );
        assert!(
            e.contains("key `tiers.db.cpu_lower_threshold` (line 4, column 23)"),
            "{e}"
        );
    }

    #[test]
    fn min_above_max_is_rejected() {
        assert!(err_of("min_cores = 9\n").contains("key `min_cores` (line 1, column 13)"));
        assert!(err_of("min_memory = 4096\nmax_memory = 2048\n")
            .contains("key `min_memory` (line 1, column 14)"));
        assert!(err_of("core_min_increment = 5\n")
            .contains("key `core_min_increment` (line 1, column 22)"));
    }

    #[test]
    fn increments_and_chunk_below_one_are_rejected() {
        for key in [
            "core_min_increment",
            "core_max_increment",
            "memory_min_increment",
            "min_decrease_chunk",
        ] {
            let e = err_of(&format!("{key} = 0\n"));
            // The column is that of the value, after `key = `.
            let col = key.len() + 4;
            assert!(
                e.contains(&format!("key `{key}` (line 1, column {col})")),
                "{e}"
            );
            assert!(e.contains("at least 1"), "{e}");
        }
    }

    #[test]
    fn hour_outside_day_is_rejected() {
        let e = err_of("energy_mode = true\noff_peak_end = 24\n");
        assert!(e.contains("key `off_peak_end` (line 2, column 16)"), "{e}");
    }

    #[test]
    fn gotify_url_with_a_raw_slash_in_its_password_is_rejected_without_quoting_it() {
        let e = err_of("gotify_url = \"https://admin:Pw/77x@g.example/\"\n");
        assert!(e.contains("key `gotify_url` (line 1, column 14)"), "{e}");
        assert!(e.contains("%2F, %3F and %23"), "{e}");
        assert!(!e.contains("Pw/77x") && !e.contains("admin"), "{e}");
        assert!(parse("gotify_url = \"https://admin:Pw%2F77x@g.example/\"\n").is_ok());
    }

    #[test]
    fn zero_poll_interval_is_rejected() {
        let e = err_of("poll_interval = 0\n");
        assert!(e.contains("key `poll_interval` (line 1, column 17)"), "{e}");
    }

    #[test]
    fn zero_metrics_max_mb_is_rejected() {
        let e = err_of("metrics_max_mb = 0\n");
        assert!(
            e.contains("key `metrics_max_mb` (line 1, column 18)"),
            "{e}"
        );
    }

    #[test]
    fn metrics_outputs_default_to_history_on_and_prometheus_off() {
        let c = parse("").unwrap();
        assert_eq!(
            c.metrics_file,
            PathBuf::from("/var/lib/lxc_autoscale/metrics.jsonl")
        );
        assert_eq!(c.metrics_max_mb, 64);
        assert_eq!(c.prometheus_textfile, PathBuf::new());
        assert_eq!(c.net_class_root, None);
    }

    #[test]
    fn net_class_root_is_accepted_with_a_warning_that_it_is_not_read() {
        let c = parse("proc_root = \"/host/proc\"\nnet_class_root = \"/sys/class/net\"\n").unwrap();
        assert_eq!(
            c.warnings(),
            ["net_class_root (/sys/class/net) is no longer read: the network figures come from net/dev under proc_root (/host/proc); remove the line to silence this warning"]
        );
    }

    #[test]
    fn vmid_in_two_tiers_is_rejected() {
        let e = err_of("[tiers.a]\ncontainers = [101, 102]\n[tiers.b]\ncontainers = [102]\n");
        assert!(
            e.contains("key `tiers.b.containers` (line 4, column 14)"),
            "{e}"
        );
        assert!(e.contains("102"), "{e}");
        assert!(e.contains("tier `a`"), "{e}");
    }

    #[test]
    fn vmid_in_tier_and_ignore_list_is_rejected() {
        let e = err_of("ignore_lxc = [105]\n[tiers.a]\ncontainers = [105]\n");
        assert!(
            e.contains("key `tiers.a.containers` (line 3, column 14)"),
            "{e}"
        );
        assert!(e.contains("ignore_lxc"), "{e}");
    }

    #[test]
    fn vmid_below_100_is_rejected() {
        let e = err_of("ignore_lxc = [99]\n");
        assert!(e.contains("key `ignore_lxc` (line 1, column 14)"), "{e}");
    }

    #[test]
    fn api_defaults_to_a_unix_socket_with_everything_risky_off() {
        let c = parse("").unwrap();
        assert_eq!(
            c.api.listen_addr(),
            Ok(ApiListen::Unix(PathBuf::from(
                "/run/lxc_autoscale/api.sock"
            )))
        );
        assert_eq!(c.api.token_file, PathBuf::new());
        assert!(!c.api.allow_remote && !c.api.allow_storage && !c.api.allow_clone);
        assert!(!c.api.allow_snapshot_rollback && !c.api.allow_destroy);
        assert_eq!(c.api.manual_hold, 3600);
        assert_eq!(c.scaling, Scaling::Auto);
        assert_eq!(c.pve_vmlist, PathBuf::from("/etc/pve/.vmlist"));
        assert_eq!(
            parse("[api]\nlisten = \"\"\n").unwrap().api.listen_addr(),
            Ok(ApiListen::Off)
        );
        assert_eq!(
            parse("scaling = \"recommend\"\n").unwrap().scaling,
            Scaling::Recommend
        );
    }

    #[test]
    fn api_tcp_listener_without_token_file_is_refused_naming_the_key() {
        let e = err_of("[api]\nlisten = \"127.0.0.1:5000\"\n");
        assert!(e.contains("key `api.token_file`"), "{e}");
        let ok = parse(
            "[api]\nlisten = \"127.0.0.1:5000\"\ntoken_file = \"/etc/lxc_autoscale/api.token\"\n",
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn api_non_loopback_address_needs_allow_remote() {
        let base = "[api]\nlisten = \"0.0.0.0:5000\"\ntoken_file = \"/etc/t\"\n";
        let e = err_of(base);
        assert!(e.contains("key `api.allow_remote`"), "{e}");
        assert!(parse(&format!("{base}allow_remote = true\n")).is_ok());
    }

    #[test]
    fn api_garbled_listen_and_unknown_keys_are_refused() {
        assert!(err_of("[api]\nlisten = \"localhost\"\n").contains("key `api.listen` (line 2"));
        assert!(err_of("[api]\nlisten = \"unix:relative.sock\"\n").contains("api.listen"));
        assert!(err_of("[api]\nallow_everything = true\n").contains("api.allow_everything"));
        assert!(err_of("scaling = \"sometimes\"\n").contains("scaling"));
    }

    #[test]
    fn tier_inherits_unset_keys_from_top_level() {
        let c = parse(
            "max_cores = 6\nmin_memory = 1024\n[tiers.db]\ncontainers = [200, 201]\npriority = 10\nmax_cores = 12\ncpu_upper_threshold = 70.5\n",
        )
        .unwrap();
        let db = c.limits_for(201);
        assert_eq!(db.tier.as_deref(), Some("db"));
        assert_eq!(db.priority, 10);
        assert_eq!(db.max_cores, 12);
        assert_eq!(db.cpu_upper_threshold, 70.5);
        assert_eq!(db.min_memory, 1024);
        assert_eq!(db.core_max_increment, 4);
        let other = c.limits_for(300);
        assert_eq!(other.tier, None);
        assert_eq!(other.priority, 0);
        assert_eq!(other.max_cores, 6);
    }

    #[test]
    fn old_default_lock_file_is_read_as_the_new_one_with_one_warning() {
        let c = parse("lock_file = \"/var/lock/lxc_autoscale.lock\"\n").unwrap();
        assert_eq!(
            c.lock_file,
            PathBuf::from("/run/lxc_autoscale/lxc_autoscale.lock")
        );
        assert_eq!(
            c.warnings(),
            ["lock_file /var/lock/lxc_autoscale.lock is the old default in a directory every user can write to; using /run/lxc_autoscale/lxc_autoscale.lock instead (set lock_file to that, or remove the line, to silence this warning)"]
        );
    }

    #[test]
    fn other_lock_file_values_are_kept_without_warning() {
        for value in [
            "/var/lock/other.lock",
            "/var/lock/lxc_autoscale.lock2",
            "/run/x/y.lock",
        ] {
            let c = parse(&format!("lock_file = \"{value}\"\n")).unwrap();
            assert_eq!(c.lock_file, PathBuf::from(value));
            assert!(c.warnings().is_empty(), "{value}");
        }
    }

    #[test]
    fn poll_interval_is_bounded_to_one_day() {
        assert_eq!(
            parse("poll_interval = 86400\n").unwrap().poll_interval,
            86_400
        );
        assert_eq!(
            err_of("poll_interval = 86401\n"),
            "key `poll_interval` (line 1, column 17): must be from 1 to 86400 seconds (one day), got 86401"
        );
        assert_eq!(
            err_of("poll_interval = 9223372036854775807\n"),
            "key `poll_interval` (line 1, column 17): must be from 1 to 86400 seconds (one day), got 9223372036854775807"
        );
    }

    #[test]
    fn load_refuses_a_directory_and_a_device_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        assert_eq!(
            format!("{:#}", load(&dir).unwrap_err()),
            format!(
                "cannot read config {}: it is a directory; the config must be a regular file",
                dir.display()
            )
        );
        let null = Path::new("/dev/null");
        assert_eq!(
            format!("{:#}", load(null).unwrap_err()),
            "cannot read config /dev/null: it is a device; the config must be a regular file"
        );
    }

    #[test]
    fn load_refuses_a_file_over_one_mib_and_reads_one_of_exactly_one_mib() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("big.conf");
        let fill = |n: usize| {
            let mut text = "poll_interval = 60\n#".to_string();
            text.push_str(&"x".repeat(n - text.len() - 1));
            text.push('\n');
            assert_eq!(text.len(), n);
            text
        };
        std::fs::write(&path, fill(1024 * 1024)).unwrap();
        assert_eq!(load(&path).unwrap().poll_interval, 60);
        std::fs::write(&path, fill(1024 * 1024 + 1)).unwrap();
        assert_eq!(
            format!("{:#}", load(&path).unwrap_err()),
            format!(
                "cannot read config {}: larger than 1048576 bytes",
                path.display()
            )
        );
    }

    fn list(range: std::ops::Range<u32>) -> String {
        let items: Vec<String> = range.map(|v| v.to_string()).collect();
        format!("[{}]", items.join(","))
    }

    #[test]
    fn lists_of_100_000_entries_are_checked_with_one_lookup_each() {
        // Disjoint lists of the maximum size: the tier-versus-ignore check is a set lookup per
        // container, so this is linear; the old nested scan did 10^10 comparisons here.
        let text = format!(
            "ignore_lxc = {}\n[tiers.big]\ncontainers = {}\n",
            list(100..100_100),
            list(200_000..300_000)
        );
        let c = parse(&text).unwrap();
        assert!(c.is_ignored(100_099));
        assert!(!c.is_ignored(200_000));
        assert_eq!(c.tier_of(299_999), Some("big"));
    }

    #[test]
    fn list_longer_than_100_000_entries_is_refused_naming_the_key() {
        assert_eq!(
            err_of(&format!("ignore_lxc = {}\n", list(100..100_101))),
            "key `ignore_lxc` (line 1, column 14): has 100001 entries, more than the 100000 allowed"
        );
        // Built in code: parsing 100 001 entries twice more is slow in a debug build.
        let mut c = Config::default();
        c.tiers.insert(
            "big".into(),
            TierConfig {
                containers: (100..100_101).collect(),
                ..TierConfig::default()
            },
        );
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "key `tiers.big.containers`: has 100001 entries, more than the 100000 allowed"
        );
    }

    #[test]
    fn vmid_in_a_tier_and_a_long_ignore_list_is_found() {
        let text = format!(
            "ignore_lxc = {}\n[tiers.a]\ncontainers = [100200, 100050]\n",
            list(100..100_100)
        );
        assert_eq!(
            err_of(&text),
            "key `tiers.a.containers` (line 3, column 14): container 100050 is also in ignore_lxc"
        );
    }
}
