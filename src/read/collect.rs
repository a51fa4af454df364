//! Reads one `Snapshot` from the host's files. Spawns no process.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::read::cgroup;
use crate::read::hostproc;
use crate::read::pveconf::{conf_path, ConfCache};
use crate::read::snapshot::{
    ContainerExtra, ContainerSample, Counters, EpochUsec, HostSample, Snapshot,
};

/// Reads the host and every running container. Keeps buffers and a cache of parsed conf files
/// (re-parsed only when mtime or size changes) across cycles.
#[derive(Debug, Default)]
pub struct Collector {
    confs: ConfCache,
    /// Contents of the file being parsed; reused so that a cycle does not allocate per file.
    buf: Vec<u8>,
    /// Whether to read the history-only figures of `ContainerSample::extra` (io, pids, swap,
    /// network, rootfs, io pressure). Off, they stay `None`; the figures the decision needs
    /// (throttling, OOM kills, cpu and memory pressure) are read either way.
    pub read_extra: bool,
}

/// Under `<net_class_root>/<iface>/`: the interface's byte counters.
const NET_RX_BYTES: &str = "statistics/rx_bytes";
const NET_TX_BYTES: &str = "statistics/tx_bytes";

impl Collector {
    /// A collector that reads every figure, history-only ones included.
    pub fn new() -> Self {
        Collector {
            read_extra: true,
            ..Collector::default()
        }
    }

    /// One snapshot. `now_usec` is stamped as the time of the reading. Per-container problems
    /// (missing conf, unreadable file) are logged with the vmid and path and leave that figure
    /// `None`; they never fail the whole snapshot.
    pub fn collect(&mut self, cfg: &Config, now_usec: EpochUsec) -> Snapshot {
        let vmids = match cgroup::list_vmids(&cfg.cgroup_root) {
            Ok(vmids) => vmids,
            Err(e) => {
                tracing::warn!(
                    path = %cfg.cgroup_root.display(),
                    error = %format!("{e:#}"),
                    "cannot list running containers; seeing none this cycle"
                );
                Vec::new()
            }
        };
        self.collect_vmids(cfg, &vmids, now_usec)
    }

    /// The snapshot of the given running containers, `vmids` sorted.
    #[allow(clippy::too_many_lines)] // split by hfloor's rework, in progress
    fn collect_vmids(&mut self, cfg: &Config, vmids: &[u32], now_usec: EpochUsec) -> Snapshot {
        let mut containers = Vec::with_capacity(vmids.len());
        let mut dir = cfg.cgroup_root.clone();
        let mut name = String::new();
        let veths = if self.read_extra {
            list_veths(&cfg.net_class_root)
        } else {
            Vec::new()
        };
        for &vmid in vmids {
            name.clear();
            // Writing into a String cannot fail.
            let _ = write!(name, "{vmid}");
            dir.push(&name);
            let reading = cgroup::read_container(&dir, &mut self.buf);
            let mut extra = every_cycle_extra(&reading);
            if self.read_extra && reading.cgroup_id.is_some() {
                let x = cgroup::read_extra(&dir, &mut self.buf);
                let (rootfs_used_bytes, rootfs_total_bytes) = x
                    .init_pid
                    .map_or((None, None), |pid| rootfs_usage(cfg, pid, vmid));
                let (net_rx_bytes, net_tx_bytes) =
                    self.net_bytes(&cfg.net_class_root, &veths, vmid);
                extra.counters.io_read_bytes = x.io.read_bytes;
                extra.counters.io_write_bytes = x.io.write_bytes;
                extra.counters.net_rx_bytes = net_rx_bytes;
                extra.counters.net_tx_bytes = net_tx_bytes;
                extra.swap_current_bytes = x.swap_current_bytes;
                extra.pids_current = x.pids_current;
                extra.psi_io_some_avg10 = x.psi_io_some_avg10;
                extra.rootfs_used_bytes = rootfs_used_bytes;
                extra.rootfs_total_bytes = rootfs_total_bytes;
            }
            dir.pop();
            if reading.cgroup_id.is_none() {
                // Listed a moment ago, gone now: the container stopped, so it is not running.
                tracing::debug!(vmid, "cgroup vanished while reading; container stopped");
                continue;
            }
            let conf = match self.confs.get(&cfg.pve_lxc_dir, vmid) {
                Ok(Some(conf)) => Some(conf.clone()),
                Ok(None) => {
                    tracing::warn!(
                        vmid,
                        path = %conf_path(&cfg.pve_lxc_dir, vmid).display(),
                        "running container has no conf file; skipping"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        vmid,
                        path = %conf_path(&cfg.pve_lxc_dir, vmid).display(),
                        error = %format!("{e:#}"),
                        "cannot use conf of running container; skipping"
                    );
                    None
                }
            };
            containers.push(ContainerSample {
                vmid,
                conf,
                cgroup_id: reading.cgroup_id,
                cpu_usage_usec: reading.cpu.usage_usec,
                memory_current_bytes: reading.memory_current_bytes,
                memory_file_bytes: reading.memory_stat.file_bytes,
                memory_shmem_bytes: reading.memory_stat.shmem_bytes,
                memory_inactive_file_bytes: reading.memory_stat.inactive_file_bytes,
                extra,
            });
        }
        self.confs.retain(|vmid| vmids.binary_search(&vmid).is_ok());
        let host = self.read_host(&cfg.proc_root);
        Snapshot {
            taken_at_usec: now_usec,
            host,
            containers,
        }
    }

    /// Bytes received and sent by container `vmid` (its view), summed over its veth peers in
    /// `veths`. `None` when it has no veth or one counter is unreadable: a partial sum would look
    /// like a counter that went backwards.
    fn net_bytes(
        &mut self,
        root: &Path,
        veths: &[(u32, OsString)],
        vmid: u32,
    ) -> (Option<u64>, Option<u64>) {
        let start = veths.partition_point(|(v, _)| *v < vmid);
        let mine = veths[start..].iter().take_while(|(v, _)| *v == vmid);
        let mut host_rx = Some(0u64);
        let mut host_tx = Some(0u64);
        let mut any = false;
        let mut path = PathBuf::from(root);
        for (_, iface) in mine {
            any = true;
            path.push(iface);
            for (file, total) in [(NET_RX_BYTES, &mut host_rx), (NET_TX_BYTES, &mut host_tx)] {
                path.push(file);
                let value = read_text(&path, &mut self.buf)
                    .ok()
                    .and_then(cgroup::parse_u64);
                *total = total.zip(value).and_then(|(t, v)| t.checked_add(v));
                path.pop();
                path.pop();
            }
            path.pop();
        }
        if !any {
            return (None, None);
        }
        // The host side of a veth pair receives what the container sends.
        (host_tx, host_rx)
    }

    /// Host figures. Problems are gathered into one warning so that a broken procfs logs once per
    /// cycle, not once per figure.
    fn read_host(&mut self, proc_root: &Path) -> HostSample {
        let mut problems: Vec<String> = Vec::new();

        let path = proc_root.join(hostproc::STAT);
        let stat = match read_text(&path, &mut self.buf) {
            Ok(text) => hostproc::parse_stat(text),
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", path.display()));
                hostproc::ProcStat::default()
            }
        };
        if problems.is_empty() && (stat.cpus.is_none() || stat.ticks.is_none()) {
            problems.push(format!("no cpu lines in {}", path.display()));
        }

        let path = proc_root.join(hostproc::MEMINFO);
        let mem = match read_text(&path, &mut self.buf) {
            Ok(text) => {
                let mem = hostproc::parse_meminfo(text);
                if mem.mem_total_kib.is_none() || mem.mem_available_kib.is_none() {
                    problems.push(format!("no MemTotal or MemAvailable in {}", path.display()));
                }
                mem
            }
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", path.display()));
                hostproc::MemInfo::default()
            }
        };

        if !problems.is_empty() {
            tracing::warn!(
                problems = %problems.join("; "),
                "host figures unavailable this cycle"
            );
        }
        HostSample {
            cpus: stat.cpus,
            cpu_ticks: stat.ticks,
            boot_time: stat.boot_time,
            mem_total_kib: mem.mem_total_kib,
            mem_available_kib: mem.mem_available_kib,
        }
    }

    /// Conf files read and parsed so far; a cycle over settled confs adds none.
    pub fn conf_parses(&self) -> u64 {
        self.confs.parses()
    }
}

/// The figures of `ContainerExtra` read on every cycle, whatever `read_extra` says: the decision
/// and its model use them.
fn every_cycle_extra(reading: &cgroup::CgroupReading) -> ContainerExtra {
    ContainerExtra {
        counters: Counters {
            nr_throttled: reading.cpu.nr_throttled,
            throttled_usec: reading.cpu.throttled_usec,
            oom_kill: reading.oom_kill,
            ..Counters::default()
        },
        psi_cpu_some_avg10: reading.psi_cpu.some_avg10,
        psi_cpu_full_avg10: reading.psi_cpu.full_avg10,
        psi_memory_some_avg10: reading.psi_memory.some_avg10,
        psi_memory_full_avg10: reading.psi_memory.full_avg10,
        ..ContainerExtra::default()
    }
}

/// Host-side veth interfaces of containers under `root`, as (vmid, name) sorted by vmid. A missing
/// or unreadable `root` gives none (no network figures).
fn list_veths(root: &Path) -> Vec<(u32, OsString)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        tracing::debug!(path = %root.display(), "cannot list network interfaces");
        return Vec::new();
    };
    let mut veths: Vec<(u32, OsString)> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let vmid = name.to_str().and_then(parse_veth_name)?;
            Some((vmid, name))
        })
        .collect();
    veths.sort_unstable();
    veths
}

/// The vmid of a Proxmox container veth name, `veth<vmid>i<N>`.
pub fn parse_veth_name(name: &str) -> Option<u32> {
    let (vmid, n) = name.strip_prefix("veth")?.split_once('i')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(vmid) || !digits(n) || vmid.starts_with('0') {
        return None;
    }
    let vmid: u32 = vmid.parse().ok()?;
    (vmid >= crate::config::MIN_VMID).then_some(vmid)
}

/// Used and total bytes of the filesystem at `<proc_root>/<pid>/root`. Quietly `None` when it
/// cannot be read (the process exited, no permission): the figure is optional.
fn rootfs_usage(cfg: &Config, pid: u32, vmid: u32) -> (Option<u64>, Option<u64>) {
    let mut path = cfg.proc_root.clone();
    path.push(pid.to_string());
    path.push("root");
    match nix::sys::statvfs::statvfs(&path) {
        Ok(st) => {
            let frag: u64 = st.fragment_size();
            let blocks: u64 = st.blocks();
            let free: u64 = st.blocks_free();
            (
                blocks.checked_sub(free).and_then(|b| b.checked_mul(frag)),
                blocks.checked_mul(frag),
            )
        }
        Err(e) => {
            tracing::debug!(vmid, path = %path.display(), error = %e, "cannot stat container rootfs");
            (None, None)
        }
    }
}

/// The file at `path` as text in `buf`; non-UTF-8 content is an error.
fn read_text<'a>(path: &Path, buf: &'a mut Vec<u8>) -> io::Result<&'a str> {
    cgroup::read_into(path, buf)?;
    std::str::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::hostfiles::{CpuStatFile, HostFiles, MemoryStatFile};
    use crate::read::snapshot::{CpuTicks, CtConf};
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    const CONF_101: &str = "#web\narch: amd64\ncores: 2\nhostname: web1\nmemory: 2048\nswap: 512\n\
        tags: prod;web\nlxc.cgroup2.cpuset.cpus: 0-3\n\n[pve:pending]\nmemory: 4096\n\n\
        [before-upgrade]\ncores: 4\nmemory: 1024\nsnaptime: 1700000000\n";

    struct FakeHost {
        tmp: tempfile::TempDir,
        cfg: Config,
        files: HostFiles,
    }

    impl FakeHost {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let mut cfg = Config::default();
            cfg.cgroup_root = tmp.path().join("cgroup/lxc");
            cfg.pve_lxc_dir = tmp.path().join("pve");
            cfg.proc_root = tmp.path().join("proc");
            cfg.net_class_root = tmp.path().join("no-net");
            let files = HostFiles::of(&cfg);
            files.create_roots().unwrap();
            fs::create_dir_all(cfg.cgroup_root.join("lxc.monitor")).unwrap();
            files
                .write_proc_stat([100, 0, 50, 800, 50, 0, 0, 0, 0, 0], 2, 1_769_000_000)
                .unwrap();
            files.write_meminfo(16_318_412, 8_123_456).unwrap();
            FakeHost { tmp, cfg, files }
        }

        fn cgroup(&self, vmid: u32, usage_usec: u64) -> PathBuf {
            let cpu = CpuStatFile {
                usage_usec,
                user_usec: 1,
                system_usec: 2,
                throttling: None,
            };
            let memory = MemoryStatFile {
                anon_bytes: 5,
                file_bytes: 268_435_456,
                shmem_bytes: Some(67_108_864),
                inactive_file_bytes: Some(134_217_728),
            };
            let dir = self.files.create_cgroup(vmid).unwrap();
            self.files.write_cpu_stat(vmid, &cpu).unwrap();
            self.files
                .write_memory(vmid, 1_073_741_824, &memory)
                .unwrap();
            dir
        }

        fn conf(&self, vmid: u32, text: &str) {
            let path = self.files.conf_path(vmid);
            self.files.write_conf(vmid, text).unwrap();
            // An mtime well in the past makes the cache trust it, as on a settled host.
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(3600))
                .unwrap();
        }
    }

    #[test]
    fn snapshot_holds_host_and_running_containers_sorted() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 5_000_000);
        h.cgroup(100, 7);
        h.conf(101, CONF_101);
        h.conf(100, "memory: 1024\n");
        let snap = Collector::new().collect(&h.cfg, 1_700_000_000_000_000);

        assert_eq!(snap.taken_at_usec, 1_700_000_000_000_000);
        assert_eq!(
            snap.host,
            HostSample {
                cpus: Some(2),
                cpu_ticks: Some(CpuTicks {
                    busy: 150,
                    total: 1000,
                }),
                boot_time: Some(1_769_000_000),
                mem_total_kib: Some(16_318_412),
                mem_available_kib: Some(8_123_456),
            }
        );
        let vmids: Vec<u32> = snap.containers.iter().map(|c| c.vmid).collect();
        assert_eq!(vmids, vec![100, 101]);
        assert_eq!(
            snap.containers[1],
            ContainerSample {
                vmid: 101,
                conf: Some(CtConf {
                    cores: Some(2),
                    memory_mb: 2048,
                    swap_mb: Some(512),
                    cpulimit: None,
                    tags: vec!["prod".into(), "web".into()],
                    lock: None,
                    hostname: Some("web1".into()),
                }),
                cgroup_id: Some(fs::metadata(&dir).unwrap().ino()),
                cpu_usage_usec: Some(5_000_000),
                memory_current_bytes: Some(1_073_741_824),
                memory_file_bytes: Some(268_435_456),
                memory_shmem_bytes: Some(67_108_864),
                memory_inactive_file_bytes: Some(134_217_728),
                extra: ContainerExtra::default(),
            }
        );
        assert_eq!(snap.containers[0].conf.as_ref().unwrap().cores, None);
    }

    #[test]
    fn container_without_or_with_broken_conf_has_no_conf_but_keeps_counters() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.cgroup(102, 20);
        h.conf(102, "cores: many\n");
        let snap = Collector::new().collect(&h.cfg, 0);
        assert_eq!(snap.containers.len(), 2);
        for (c, usage) in snap.containers.iter().zip([10, 20]) {
            assert_eq!(c.conf, None);
            assert_eq!(c.cpu_usage_usec, Some(usage));
        }
    }

    #[test]
    fn stopped_container_is_dropped_and_its_conf_forgotten() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        let dir = h.cgroup(102, 20);
        h.conf(101, CONF_101);
        h.conf(102, CONF_101);
        let mut c = Collector::new();
        assert_eq!(c.collect(&h.cfg, 0).containers.len(), 2);
        assert_eq!(c.confs.len(), 2);
        fs::remove_dir_all(dir).unwrap();
        let snap = c.collect(&h.cfg, 1);
        assert_eq!(snap.containers.len(), 1);
        assert_eq!(snap.containers[0].vmid, 101);
        assert_eq!(c.confs.len(), 1);
    }

    #[test]
    fn container_whose_cgroup_vanished_after_listing_is_skipped() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.conf(101, CONF_101);
        h.conf(105, CONF_101);
        let snap = Collector::new().collect_vmids(&h.cfg, &[101, 105], 0);
        let vmids: Vec<u32> = snap.containers.iter().map(|c| c.vmid).collect();
        assert_eq!(vmids, vec![101]);
    }

    #[test]
    fn vanished_cgroup_file_leaves_that_figure_none() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        h.conf(101, CONF_101);
        fs::remove_file(dir.join(cgroup::MEMORY_STAT)).unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        let c = &snap.containers[0];
        assert_eq!(c.memory_file_bytes, None);
        assert_eq!(c.memory_current_bytes, Some(1_073_741_824));
        assert_eq!(c.cpu_usage_usec, Some(10));
    }

    #[test]
    fn changed_conf_is_reparsed_on_next_cycle() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.conf(101, "cores: 2\nmemory: 2048\n");
        let mut c = Collector::new();
        let first = c.collect(&h.cfg, 0);
        assert_eq!(first.containers[0].conf.as_ref().unwrap().cores, Some(2));
        h.conf(101, "cores: 12\nmemory: 2048\n");
        let second = c.collect(&h.cfg, 1);
        assert_eq!(second.containers[0].conf.as_ref().unwrap().cores, Some(12));
    }

    #[test]
    fn unreadable_host_files_give_none_but_containers_are_read() {
        let h = FakeHost::new();
        h.cgroup(101, 10);
        h.conf(101, CONF_101);
        fs::remove_dir_all(&h.cfg.proc_root).unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        assert_eq!(snap.host, HostSample::default());
        assert_eq!(snap.containers.len(), 1);
    }

    #[test]
    fn non_utf8_host_file_gives_none_for_its_figures_only() {
        let h = FakeHost::new();
        fs::write(
            h.cfg.proc_root.join(hostproc::MEMINFO),
            b"MemTotal: \xff kB\n",
        )
        .unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        assert_eq!(snap.host.mem_total_kib, None);
        assert_eq!(snap.host.mem_available_kib, None);
        assert_eq!(snap.host.cpus, Some(2));
    }

    #[test]
    fn missing_cgroup_root_gives_no_containers_but_host_figures() {
        let h = FakeHost::new();
        let mut cfg = h.cfg.clone();
        cfg.cgroup_root = h.tmp.path().join("absent");
        let snap = Collector::new().collect(&cfg, 0);
        assert!(snap.containers.is_empty());
        assert_eq!(snap.host.cpus, Some(2));
    }

    #[test]
    fn veth_names_give_the_vmid_of_proxmox_container_interfaces_only() {
        assert_eq!(parse_veth_name("veth101i0"), Some(101));
        assert_eq!(parse_veth_name("veth4000i12"), Some(4000));
        for name in [
            "veth101",
            "veth99i0",
            "veth0101i0",
            "vethi0",
            "veth101i",
            "eth0",
            "veth101i0x",
        ] {
            assert_eq!(parse_veth_name(name), None, "{name}");
        }
    }

    fn veth(root: &Path, name: &str, rx: &str, tx: &str) {
        let dir = root.join(name).join("statistics");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("rx_bytes"), rx).unwrap();
        fs::write(dir.join("tx_bytes"), tx).unwrap();
    }

    #[test]
    fn network_bytes_are_summed_over_veths_from_the_container_view() {
        let mut h = FakeHost::new();
        h.cfg.net_class_root = h.tmp.path().join("net");
        h.cgroup(101, 10);
        h.cgroup(102, 10);
        h.cgroup(103, 10);
        veth(&h.cfg.net_class_root, "veth101i0", "100\n", "1000\n");
        veth(&h.cfg.net_class_root, "veth101i1", "5\n", "7\n");
        veth(&h.cfg.net_class_root, "veth1010i0", "9\n", "9\n");
        veth(&h.cfg.net_class_root, "veth102i0", "garbage\n", "3\n");
        let snap = Collector::new().collect(&h.cfg, 0);
        let c = |i: usize| snap.containers[i].extra.counters;
        // The host side receives what the container sends.
        assert_eq!(c(0).net_rx_bytes, Some(1007));
        assert_eq!(c(0).net_tx_bytes, Some(105));
        assert_eq!(c(1).net_tx_bytes, None);
        assert_eq!(c(1).net_rx_bytes, Some(3));
        assert_eq!((c(2).net_rx_bytes, c(2).net_tx_bytes), (None, None));
    }

    #[test]
    fn history_figures_are_read_only_when_asked_for() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        fs::write(dir.join(cgroup::PIDS_CURRENT), "12\n").unwrap();
        let mut c = Collector::new();
        assert_eq!(
            c.collect(&h.cfg, 0).containers[0].extra.pids_current,
            Some(12)
        );
        c.read_extra = false;
        assert_eq!(
            c.collect(&h.cfg, 0).containers[0].extra,
            ContainerExtra::default()
        );
    }

    #[test]
    fn throttling_oom_kills_and_cpu_and_memory_pressure_are_read_with_history_off() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        fs::write(
            dir.join(cgroup::CPU_STAT),
            "usage_usec 10\nnr_periods 9\nnr_throttled 7\nthrottled_usec 3500\n",
        )
        .unwrap();
        fs::write(dir.join(cgroup::MEMORY_EVENTS), "oom 3\noom_kill 2\n").unwrap();
        fs::write(
            dir.join(cgroup::CPU_PRESSURE),
            "some avg10=40.00 avg60=0 avg300=0 total=1\nfull avg10=5.50 avg60=0 avg300=0 total=1\n",
        )
        .unwrap();
        fs::write(
            dir.join(cgroup::MEMORY_PRESSURE),
            "some avg10=8.00 avg60=0 avg300=0 total=1\nfull avg10=6.25 avg60=0 avg300=0 total=1\n",
        )
        .unwrap();
        fs::write(dir.join(cgroup::PIDS_CURRENT), "12\n").unwrap();
        let mut c = Collector::new();
        c.read_extra = false;
        let expected = ContainerExtra {
            counters: Counters {
                nr_throttled: Some(7),
                throttled_usec: Some(3500),
                oom_kill: Some(2),
                ..Counters::default()
            },
            psi_cpu_some_avg10: Some(40.0),
            psi_cpu_full_avg10: Some(5.5),
            psi_memory_some_avg10: Some(8.0),
            psi_memory_full_avg10: Some(6.25),
            ..ContainerExtra::default()
        };
        assert_eq!(c.collect(&h.cfg, 0).containers[0].extra, expected);
        c.read_extra = true;
        let with_history = c.collect(&h.cfg, 0).containers[0].extra;
        assert_eq!(with_history.counters.oom_kill, Some(2));
        assert_eq!(with_history.psi_memory_full_avg10, Some(6.25));
        assert_eq!(with_history.pids_current, Some(12));
    }

    #[test]
    fn rootfs_is_measured_through_the_init_pid_and_skipped_when_unreadable() {
        let h = FakeHost::new();
        let dir = h.cgroup(101, 10);
        let dir2 = h.cgroup(102, 10);
        fs::create_dir_all(dir.join("ns")).unwrap();
        fs::create_dir_all(dir2.join("ns")).unwrap();
        fs::write(dir.join(cgroup::NS_CGROUP_PROCS), "4242\n").unwrap();
        fs::write(dir2.join(cgroup::NS_CGROUP_PROCS), "4243\n").unwrap();
        fs::create_dir_all(h.cfg.proc_root.join("4242/root")).unwrap();
        let snap = Collector::new().collect(&h.cfg, 0);
        let x = snap.containers[0].extra;
        let total = x.rootfs_total_bytes.unwrap();
        assert!(total > 0 && x.rootfs_used_bytes.unwrap() <= total);
        let y = snap.containers[1].extra;
        assert_eq!((y.rootfs_used_bytes, y.rootfs_total_bytes), (None, None));
    }
}
