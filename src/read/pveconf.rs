//! `<pve_lxc_dir>/<vmid>.conf`: a container's Proxmox config. Only the main section (before the
//! first `[section]`) describes the running allocation; `[pve:pending]` and snapshots are ignored.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::read::cgroup::parse_u64;
use crate::read::snapshot::CtConf;

/// Proxmox's memory when the `memory` line is absent, MB.
pub const DEFAULT_MEMORY_MB: u64 = 512;

/// Path of a container's conf.
pub fn conf_path(dir: &Path, vmid: u32) -> PathBuf {
    dir.join(format!("{vmid}.conf"))
}

/// Parses the main section of a conf. Unparseable values of the keys we use give an error that
/// names the key; unknown keys, comments and raw `lxc.*` keys are ignored. A main section without
/// a single `key: value` line is an error: Proxmox always writes some (`arch`, `rootfs`, ...), so
/// an empty or garbled file must not be read as the defaults (512 MB), which would shrink a larger
/// container on bad data.
pub fn parse_conf(text: &str) -> Result<CtConf, String> {
    let mut conf = CtConf {
        memory_mb: DEFAULT_MEMORY_MB,
        ..CtConf::default()
    };
    let mut has_setting = false;
    let mut nics: Vec<(u32, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_ascii();
        if line.starts_with('[') {
            break;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with("lxc.") {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim_ascii_end(), value.trim_ascii());
        has_setting = true;
        let bad = || format!("key `{key}`: invalid value `{value}`");
        match key {
            "cores" => {
                let cores = parse_u64(value)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n >= 1)
                    .ok_or_else(bad)?;
                conf.cores = Some(cores);
            }
            // A zero allocation would make every usage percentage a division by zero.
            "memory" => conf.memory_mb = parse_u64(value).filter(|&n| n >= 1).ok_or_else(bad)?,
            "swap" => conf.swap_mb = Some(parse_u64(value).ok_or_else(bad)?),
            "cpulimit" => {
                let limit = value
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(bad)?;
                conf.cpulimit = Some(limit);
            }
            "tags" => {
                conf.tags = value
                    .split([';', ',', ' '])
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            // Proxmox ignores a key without a value, so an empty `lock:` does not lock.
            "lock" => conf.lock = non_empty(value),
            "hostname" => conf.hostname = non_empty(value),
            "rootfs" => conf.rootfs_volume = value.split(',').next().and_then(non_empty),
            "ostype" => conf.ostype = non_empty(value),
            _ => {
                if let Some(nic) = net_hwaddr(key, value) {
                    nics.push(nic);
                }
            }
        }
    }
    nics.sort();
    conf.hwaddrs = nics.into_iter().map(|(_, mac)| mac).collect();
    if !has_setting {
        return Err("no `key: value` line in the main section (empty or garbled conf)".into());
    }
    Ok(conf)
}

/// `(N, MAC)` of a `netN: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,...` line, the MAC in
/// upper case.
fn net_hwaddr(key: &str, value: &str) -> Option<(u32, String)> {
    let n = key.strip_prefix("net")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mac = value
        .split(',')
        .find_map(|opt| opt.trim().strip_prefix("hwaddr="))?;
    Some((n.parse().ok()?, mac.trim().to_ascii_uppercase())).filter(|(_, m)| !m.is_empty())
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// Reads and parses `<dir>/<vmid>.conf`. `Ok(None)` when the file does not exist; errors name the
/// path.
pub fn read_conf(dir: &Path, vmid: u32) -> anyhow::Result<Option<CtConf>> {
    let path = conf_path(dir, vmid);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read conf {}", path.display())),
    };
    parse_conf(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("invalid conf {}: {e}", path.display()))
}

/// Parsed confs kept across cycles; a conf is re-read only when its mtime or size changes.
#[derive(Debug, Default)]
pub struct ConfCache {
    /// Boxed: the table has up to twice as many buckets as entries, and an unboxed entry (about
    /// 100 bytes) would make each empty bucket as large.
    entries: HashMap<u32, Box<CachedConf>>,
    text: String,
    /// Confs read and parsed since the cache was made: a settled host adds none per cycle.
    parses: u64,
    /// The conf directory opened for the current cycle (`open_dir`).
    dir: Option<ConfDir>,
}

/// A conf directory opened for one cycle, so that each conf is looked up by its name there rather
/// than along its whole path: on Proxmox `/etc/pve/lxc` is a symlink into pmxcfs (a FUSE
/// filesystem), resolved again for every path. Opened anew each cycle, so that a restarted pmxcfs
/// (a new mount) is seen by the next cycle.
#[derive(Debug)]
struct ConfDir {
    path: PathBuf,
    fd: std::os::fd::OwnedFd,
}

/// `<vmid>.conf` without allocating: at most 10 digits and 5 more bytes.
struct ConfName {
    bytes: [u8; 16],
    len: usize,
}

impl ConfName {
    fn new(vmid: u32) -> ConfName {
        use std::io::Write;
        let mut bytes = [0u8; 16];
        let mut cursor = io::Cursor::new(&mut bytes[..]);
        write!(cursor, "{vmid}.conf").expect("a u32 and .conf fit in 16 bytes");
        let len = usize::try_from(cursor.position()).expect("at most 16");
        ConfName { bytes, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("digits and .conf are ASCII")
    }
}

#[derive(Debug)]
struct CachedConf {
    /// `(seconds, nanoseconds)` of the file's mtime when it was parsed.
    mtime: (i64, i64),
    size: u64,
    /// The file was modified within `RACY_SECS` of being read: a later write in the same mtime
    /// tick with the same size would look unchanged, so the entry is not trusted.
    racy: bool,
    conf: PackedConf,
}

/// A parsed conf as the cache keeps it between cycles: the figures, and all of its strings in one
/// allocation instead of up to eight (about 190 bytes an entry instead of 460 at 1000 containers).
#[derive(Debug, Clone, PartialEq)]
struct PackedConf {
    cores: Option<u32>,
    memory_mb: u64,
    swap_mb: Option<u64>,
    cpulimit: Option<f64>,
    /// `lock`, `hostname`, `rootfs_volume` and `ostype` (empty: `None`), then the tags, then the
    /// MACs, each followed by `\n`. No value holds one (the conf is read line by line) and none of
    /// these is ever `Some("")` or an empty list entry (`parse_conf`), so the split is exact.
    strings: Box<str>,
    tags: u32,
}

/// Separates the packed strings.
const PACK_SEP: char = '\n';

impl PackedConf {
    fn pack(conf: CtConf) -> PackedConf {
        let mut strings = String::new();
        for s in [
            &conf.lock,
            &conf.hostname,
            &conf.rootfs_volume,
            &conf.ostype,
        ] {
            strings.push_str(s.as_deref().unwrap_or_default());
            strings.push(PACK_SEP);
        }
        for s in conf.tags.iter().chain(&conf.hwaddrs) {
            strings.push_str(s);
            strings.push(PACK_SEP);
        }
        PackedConf {
            cores: conf.cores,
            memory_mb: conf.memory_mb,
            swap_mb: conf.swap_mb,
            cpulimit: conf.cpulimit,
            strings: strings.into_boxed_str(),
            tags: u32::try_from(conf.tags.len()).unwrap_or(u32::MAX),
        }
    }

    fn unpack(&self) -> CtConf {
        let mut parts = self.strings.split_terminator(PACK_SEP);
        let mut optional = || non_empty(parts.next().unwrap_or_default());
        let (lock, hostname, rootfs_volume, ostype) =
            (optional(), optional(), optional(), optional());
        let tags = parts.by_ref().take(self.tags as usize);
        CtConf {
            cores: self.cores,
            memory_mb: self.memory_mb,
            swap_mb: self.swap_mb,
            cpulimit: self.cpulimit,
            tags: tags.map(str::to_string).collect(),
            lock,
            hostname,
            rootfs_volume,
            ostype,
            hwaddrs: parts.map(str::to_string).collect(),
        }
    }
}

/// Seconds within which an mtime is too close to the reading to prove the file unchanged since
/// (pmxcfs keeps whole-second mtimes).
const RACY_SECS: i64 = 1;

impl ConfCache {
    pub fn new() -> Self {
        ConfCache::default()
    }

    /// The parsed conf of `vmid` in `dir` (a copy: the cache keeps it packed). `Ok(None)` when the file does not exist; read and parse
    /// errors name the path and leave no entry, so the next call tries again.
    pub fn get(&mut self, dir: &Path, vmid: u32) -> anyhow::Result<Option<CtConf>> {
        use nix::fcntl::AtFlags;
        use nix::sys::stat::{fstatat, FileStat};
        let name = ConfName::new(vmid);
        let dir_fd = self.dir_fd(dir);
        let stat: nix::Result<FileStat> = match dir_fd {
            Some(fd) => fstatat(Some(fd), name.as_str(), AtFlags::empty()),
            None => fstatat(None, &dir.join(name.as_str()), AtFlags::empty()),
        };
        let meta = match stat {
            Ok(meta) => meta,
            Err(nix::errno::Errno::ENOENT) => {
                self.entries.remove(&vmid);
                return Ok(None);
            }
            Err(e) => {
                self.entries.remove(&vmid);
                let path = conf_path(dir, vmid);
                return Err(io::Error::from(e))
                    .with_context(|| format!("cannot stat conf {}", path.display()));
            }
        };
        let mtime = (meta.st_mtime, meta.st_mtime_nsec);
        let size = u64::try_from(meta.st_size).unwrap_or(0);
        let fresh = self
            .entries
            .get(&vmid)
            .is_some_and(|c| !c.racy && c.mtime == mtime && c.size == size);
        if !fresh {
            self.entries.remove(&vmid);
            let conf = self.parse_file(dir, dir_fd, &name)?;
            self.parses += 1;
            let now_secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(i64::MAX, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let entry = CachedConf {
                mtime,
                size,
                racy: mtime.0 >= now_secs.saturating_sub(RACY_SECS),
                conf: PackedConf::pack(conf),
            };
            self.entries.insert(vmid, Box::new(entry));
        }
        Ok(self.entries.get(&vmid).map(|c| c.conf.unpack()))
    }

    fn parse_file(
        &mut self,
        dir: &Path,
        dir_fd: Option<RawFd>,
        name: &ConfName,
    ) -> anyhow::Result<CtConf> {
        use nix::fcntl::{openat, OFlag};
        use nix::sys::stat::Mode;
        use std::io::Read;
        self.text.clear();
        let path = || dir.join(name.as_str());
        let file = match dir_fd {
            Some(fd) => openat(
                Some(fd),
                name.as_str(),
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            // SAFETY: `openat` just returned this descriptor and nothing else owns it.
            .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) })
            .map_err(io::Error::from),
            None => std::fs::File::open(path()),
        };
        file.and_then(|mut f| f.read_to_string(&mut self.text))
            .with_context(|| format!("cannot read conf {}", path().display()))?;
        parse_conf(&self.text)
            .map_err(|e| anyhow::anyhow!("invalid conf {}: {e}", path().display()))
    }

    /// Opens `dir` for the calls to `get` until `close_dir`. When it cannot be opened, `get`
    /// looks confs up by their whole path (and reports what is wrong with it).
    pub fn open_dir(&mut self, dir: &Path) {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        self.dir = open(dir, flags, Mode::empty()).ok().map(|fd| ConfDir {
            path: dir.to_path_buf(),
            // SAFETY: `open` just returned this descriptor and nothing else owns it.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        });
    }

    /// Closes the directory `open_dir` opened.
    pub fn close_dir(&mut self) {
        self.dir = None;
    }

    /// The descriptor of `dir` when `open_dir` opened it.
    fn dir_fd(&self, dir: &Path) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        let d = self.dir.as_ref()?;
        (d.path.as_os_str() == dir.as_os_str()).then(|| d.fd.as_raw_fd())
    }

    /// Keeps only the entries whose vmid satisfies `keep` (drop containers no longer running).
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.entries.retain(|&vmid, _| keep(vmid));
    }

    /// Drops every entry and gives their memory back; the parse count stays.
    pub fn clear(&mut self) {
        self.entries = HashMap::new();
    }

    /// Confs read and parsed so far (cache misses).
    pub fn parses(&self) -> u64 {
        self.parses
    }

    /// Number of cached confs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    const FULL: &str = "#my web server\n#second line\narch: amd64\ncores: 2\ncpulimit: 1.5\n\
        hostname: web1\nlock: backup\nmemory: 2048\n\
        net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth\n\
        rootfs: local-lvm:vm-101-disk-0,size=8G\nswap: 512\ntags: prod;web\n\
        lxc.cgroup2.cpuset.cpus: 0-3\n\n[pve:pending]\nmemory: 4096\ncores: 8\n\n\
        [before-upgrade]\ncores: 4\nsnaptime: 1700000000\n";

    #[test]
    fn reads_main_section_allocation() {
        assert_eq!(
            parse_conf(FULL).unwrap(),
            CtConf {
                cores: Some(2),
                memory_mb: 2048,
                swap_mb: Some(512),
                cpulimit: Some(1.5),
                tags: vec!["prod".into(), "web".into()],
                lock: Some("backup".into()),
                hostname: Some("web1".into()),
                rootfs_volume: Some("local-lvm:vm-101-disk-0".into()),
                ostype: None,
                hwaddrs: vec!["BC:24:11:00:00:01".into()],
            }
        );
    }

    #[test]
    fn reads_identity_macs_in_nic_order_rootfs_volume_and_ostype() {
        let c = parse_conf(
            "ostype: debian
net10: name=eth2,hwaddr=bc:24:11:00:00:0a,type=veth
\
             net1: name=eth1,bridge=vmbr1,hwaddr=BC:24:11:00:00:02
net0: name=eth0,bridge=vmbr0
\
             netx: hwaddr=00:00:00:00:00:01
rootfs: tank:subvol-101-disk-0,size=4G
\
             [snap]
net2: name=eth3,hwaddr=BC:24:11:00:00:03
",
        )
        .unwrap();
        assert_eq!(c.ostype.as_deref(), Some("debian"));
        assert_eq!(c.rootfs_volume.as_deref(), Some("tank:subvol-101-disk-0"));
        assert_eq!(c.hwaddrs, ["BC:24:11:00:00:02", "BC:24:11:00:00:0A"]);
    }

    #[test]
    fn the_cache_packs_a_conf_without_losing_or_moving_a_string() {
        let full = parse_conf(FULL).unwrap();
        let many = parse_conf(
            "lock: migrate\ntags: a;b c,d\nostype: alpine\n\
             net3: name=eth3,hwaddr=bc:24:11:00:00:03\nnet1: name=eth1,hwaddr=BC:24:11:00:00:01\n",
        )
        .unwrap();
        let bare = parse_conf("memory: 64\n").unwrap();
        for conf in [full, many, bare, CtConf::default()] {
            assert_eq!(PackedConf::pack(conf.clone()).unpack(), conf);
        }
        let packed = PackedConf::pack(parse_conf("tags: x\nhostname: h\n").unwrap());
        assert_eq!(&*packed.strings, "\nh\n\n\nx\n");
    }

    #[test]
    fn pending_and_snapshot_sections_do_not_override_main() {
        let c = parse_conf("cores: 1\n[pve:pending]\ncores: 8\nmemory: 9999\n").unwrap();
        assert_eq!(c.cores, Some(1));
        assert_eq!(c.memory_mb, DEFAULT_MEMORY_MB);
        let c = parse_conf("memory: 1024\n[snap1]\nmemory: abc\nlock: snapshot\n").unwrap();
        assert_eq!(c.memory_mb, 1024);
        assert_eq!(c.lock, None);
    }

    #[test]
    fn absent_keys_give_proxmox_defaults() {
        let c = parse_conf("arch: amd64\nostype: debian\n").unwrap();
        assert_eq!(c.cores, None);
        assert_eq!(c.memory_mb, 512);
        assert_eq!(c.swap_mb, None);
        assert_eq!(c.cpulimit, None);
        assert!(c.tags.is_empty());
        assert_eq!(c.lock, None);
        assert_eq!(c.hostname, None);
    }

    #[test]
    fn conf_without_any_setting_in_the_main_section_is_an_error() {
        for text in [
            "",
            "\n\n",
            "# comment: only\n",
            "\0\0\0\0",
            "lxc.apparmor.profile: unconfined\n",
            "no colon here\n[pve:pending]\nmemory: 4096\n",
        ] {
            let err = parse_conf(text).unwrap_err();
            assert!(err.contains("no `key: value` line"), "{text:?}: {err}");
        }
    }

    #[test]
    fn trailing_whitespace_and_crlf_are_tolerated() {
        let c = parse_conf("cores: 4  \r\nmemory:\t1024\t\r\nhostname: db1 \r\n").unwrap();
        assert_eq!(c.cores, Some(4));
        assert_eq!(c.memory_mb, 1024);
        assert_eq!(c.hostname.as_deref(), Some("db1"));
    }

    #[test]
    fn raw_lxc_keys_and_comments_are_ignored() {
        let c =
            parse_conf("#cores: abc\nlxc.cores: x\nlxc.apparmor.profile = unconfined\ncores: 3\n")
                .unwrap();
        assert_eq!(c.cores, Some(3));
    }

    #[test]
    fn tags_split_on_semicolon_comma_and_space_dropping_empties() {
        let c = parse_conf("tags: prod;;web, db noautoscale;\n").unwrap();
        assert_eq!(c.tags, vec!["prod", "web", "db", "noautoscale"]);
        assert!(c.opted_out());
        assert!(parse_conf("tags:\n").unwrap().tags.is_empty());
    }

    #[test]
    fn empty_lock_does_not_lock() {
        assert_eq!(parse_conf("lock:\n").unwrap().lock, None);
    }

    #[test]
    fn bad_value_of_a_used_key_is_an_error_naming_key_and_value() {
        assert_eq!(
            parse_conf("memory: abc\n").unwrap_err(),
            "key `memory`: invalid value `abc`"
        );
        for (text, key) in [
            ("cores: 0\n", "cores"),
            ("cores: -2\n", "cores"),
            ("cores: 2.5\n", "cores"),
            ("cores: 4294967296\n", "cores"),
            ("cores:\n", "cores"),
            ("memory: 0\n", "memory"),
            ("memory: -512\n", "memory"),
            ("memory: 99999999999999999999999\n", "memory"),
            ("memory: 2048\0\n", "memory"),
            ("swap: max\n", "swap"),
            ("cpulimit: -1\n", "cpulimit"),
            ("cpulimit: NaN\n", "cpulimit"),
            ("cpulimit: inf\n", "cpulimit"),
            ("cpulimit: two\n", "cpulimit"),
        ] {
            let e = parse_conf(text).unwrap_err();
            assert!(
                e.starts_with(&format!("key `{key}`: invalid value")),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn zero_cpulimit_and_zero_swap_are_valid() {
        let c = parse_conf("cpulimit: 0\nswap: 0\n").unwrap();
        assert_eq!(c.cpulimit, Some(0.0));
        assert_eq!(c.swap_mb, Some(0));
    }

    #[test]
    fn megabyte_conf_is_parsed() {
        let mut text = String::from("cores: 2\nmemory: 1024\n");
        while text.len() < 1 << 20 {
            text.push_str("#a long description line that repeats to make the file large\n");
        }
        text.push_str("hostname: big\n");
        let c = parse_conf(&text).unwrap();
        assert_eq!(c.cores, Some(2));
        assert_eq!(c.hostname.as_deref(), Some("big"));
    }

    #[test]
    fn read_conf_of_missing_file_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_conf(tmp.path(), 101).unwrap(), None);
    }

    #[test]
    fn read_conf_error_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("101.conf"), "memory: lots\n").unwrap();
        let e = format!("{:#}", read_conf(tmp.path(), 101).unwrap_err());
        assert!(e.contains("101.conf"), "{e}");
        assert!(e.contains("key `memory`"), "{e}");
        fs::create_dir(tmp.path().join("102.conf")).unwrap();
        let e = format!("{:#}", read_conf(tmp.path(), 102).unwrap_err());
        assert!(e.contains("102.conf"), "{e}");
    }

    /// Writes `text` and pins the mtime, so that the cache's view does not depend on the clock.
    fn write_at(path: &Path, text: &str, mtime: SystemTime) {
        fs::write(path, text).unwrap();
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    fn hour_ago() -> SystemTime {
        SystemTime::now() - Duration::from_secs(3600)
    }

    #[test]
    fn cache_keeps_parsed_conf_while_mtime_and_size_are_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let path = conf_path(tmp.path(), 101);
        let old = hour_ago();
        write_at(&path, "cores: 2\n", old);
        let mut cache = ConfCache::new();
        assert_eq!(cache.get(tmp.path(), 101).unwrap().unwrap().cores, Some(2));
        // Same size and mtime: the cached parse must be served without reading the file.
        write_at(&path, "cores: 4\n", old);
        assert_eq!(cache.get(tmp.path(), 101).unwrap().unwrap().cores, Some(2));
        assert_eq!(cache.parses(), 1);
    }

    #[test]
    fn cache_reparses_when_size_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = conf_path(tmp.path(), 101);
        let old = hour_ago();
        write_at(&path, "cores: 2\n", old);
        let mut cache = ConfCache::new();
        assert_eq!(cache.get(tmp.path(), 101).unwrap().unwrap().cores, Some(2));
        write_at(&path, "cores: 12\n", old);
        assert_eq!(cache.get(tmp.path(), 101).unwrap().unwrap().cores, Some(12));
    }

    #[test]
    fn cache_reparses_when_mtime_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = conf_path(tmp.path(), 101);
        let old = hour_ago();
        write_at(&path, "cores: 2\n", old);
        let mut cache = ConfCache::new();
        assert_eq!(cache.get(tmp.path(), 101).unwrap().unwrap().cores, Some(2));
        write_at(&path, "cores: 4\n", old + Duration::from_nanos(1000));
        assert_eq!(cache.get(tmp.path(), 101).unwrap().unwrap().cores, Some(4));
    }

    #[test]
    fn cache_does_not_trust_an_mtime_as_recent_as_the_read() {
        let tmp = tempfile::tempdir().unwrap();
        let path = conf_path(tmp.path(), 101);
        let future = SystemTime::now() + Duration::from_secs(3600);
        write_at(&path, "cores: 2\n", future);
        let mut cache = ConfCache::new();
        assert_eq!(cache.get(tmp.path(), 101).unwrap().unwrap().cores, Some(2));
        write_at(&path, "cores: 4\n", future);
        assert_eq!(cache.get(tmp.path(), 101).unwrap().unwrap().cores, Some(4));
    }

    #[test]
    fn cache_forgets_deleted_and_broken_confs() {
        let tmp = tempfile::tempdir().unwrap();
        let path = conf_path(tmp.path(), 101);
        write_at(&path, "cores: 2\n", hour_ago());
        let mut cache = ConfCache::new();
        assert!(cache.get(tmp.path(), 101).unwrap().is_some());
        fs::remove_file(&path).unwrap();
        assert_eq!(cache.get(tmp.path(), 101).unwrap(), None);
        assert!(cache.is_empty());
        write_at(&path, "cores: x\n", hour_ago());
        let e = format!("{:#}", cache.get(tmp.path(), 101).unwrap_err());
        assert!(e.contains("101.conf") && e.contains("key `cores`"), "{e}");
        assert!(cache.is_empty());
    }

    #[test]
    fn retain_drops_entries_of_stopped_containers() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cache = ConfCache::new();
        for vmid in [101, 102, 103] {
            write_at(&conf_path(tmp.path(), vmid), "cores: 1\n", hour_ago());
            cache.get(tmp.path(), vmid).unwrap();
        }
        cache.retain(|vmid| vmid != 102);
        assert_eq!(cache.len(), 2);
        let mut kept: Vec<u32> = cache.entries.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![101, 103]);
    }

    #[test]
    fn conf_names_are_written_without_allocating_up_to_the_largest_vmid() {
        assert_eq!(ConfName::new(100).as_str(), "100.conf");
        assert_eq!(ConfName::new(u32::MAX).as_str(), "4294967295.conf");
    }

    #[test]
    fn an_opened_directory_gives_the_same_confs_and_errors_as_whole_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("nodes/pve1/lxc");
        fs::create_dir_all(&real).unwrap();
        // As on Proxmox: the conf directory is a symlink.
        let dir = tmp.path().join("lxc");
        std::os::unix::fs::symlink(&real, &dir).unwrap();
        write_at(&conf_path(&real, 101), "cores: 2\n", hour_ago());
        fs::create_dir(conf_path(&real, 103)).unwrap();
        let mut by_dir = ConfCache::new();
        let mut by_path = ConfCache::new();
        by_dir.open_dir(&dir);
        assert!(by_dir.dir_fd(&dir).is_some());
        assert!(by_dir.dir_fd(&real).is_none());
        for vmid in [101, 102, 103] {
            let got = by_dir.get(&dir, vmid).map_err(|e| format!("{e:#}"));
            let want = by_path.get(&dir, vmid).map_err(|e| format!("{e:#}"));
            assert_eq!(got, want, "{vmid}");
        }
        assert_eq!(by_dir.get(&dir, 101).unwrap().unwrap().cores, Some(2));
        assert_eq!(by_dir.get(&dir, 102).unwrap(), None);
        let e = format!("{:#}", by_dir.get(&dir, 103).unwrap_err());
        assert!(
            e.contains(&conf_path(&dir, 103).display().to_string()),
            "{e}"
        );
        // A change is seen through the kept descriptor.
        write_at(
            &conf_path(&real, 101),
            "cores: 4\n",
            hour_ago() + Duration::from_secs(60),
        );
        assert_eq!(by_dir.get(&dir, 101).unwrap().unwrap().cores, Some(4));
        assert_eq!(by_dir.parses(), 2);
        by_dir.close_dir();
        assert!(by_dir.dir_fd(&dir).is_none());
        assert_eq!(by_dir.get(&dir, 101).unwrap().unwrap().cores, Some(4));
        assert_eq!(by_dir.parses(), 2);
    }
}
