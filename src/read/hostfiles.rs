//! Writes the host files this layer reads, in the kernel's and Proxmox's formats: a container's
//! cgroup files, its conf, `/proc/stat`, `/proc/meminfo` and `/proc/net/dev`. The demo's simulated host and the
//! tests' fake host are both built through it, so the formats they write live in one place.
//! The daemon itself never writes these files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{cgroup, hostproc};
use crate::config::Config;

/// `cpu.stat` of a container's cgroup, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStatFile {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    /// `nr_periods`, `nr_throttled` and `throttled_usec`; the lines are left out when `None`.
    pub throttling: Option<(u64, u64, u64)>,
}

impl CpuStatFile {
    /// The file's text.
    pub fn text(&self) -> String {
        let mut s = format!(
            "usage_usec {}\nuser_usec {}\nsystem_usec {}\n",
            self.usage_usec, self.user_usec, self.system_usec
        );
        if let Some((periods, throttled, throttled_usec)) = self.throttling {
            let _ = write!(
                s,
                "nr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {throttled_usec}\n"
            );
        }
        s
    }
}

/// `memory.stat` of a container's cgroup, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStatFile {
    pub anon_bytes: u64,
    pub file_bytes: u64,
    /// The `shmem` line; left out when `None`.
    pub shmem_bytes: Option<u64>,
    /// The `inactive_file` line; left out when `None`.
    pub inactive_file_bytes: Option<u64>,
}

impl MemoryStatFile {
    /// The file's text.
    pub fn text(&self) -> String {
        let mut s = format!(
            "anon {}\n{} {}\n",
            self.anon_bytes,
            cgroup::MEMORY_STAT_FILE,
            self.file_bytes
        );
        if let Some(v) = self.shmem_bytes {
            let _ = writeln!(s, "{} {v}", cgroup::MEMORY_STAT_SHMEM);
        }
        if let Some(v) = self.inactive_file_bytes {
            let _ = writeln!(s, "{} {v}", cgroup::MEMORY_STAT_INACTIVE_FILE);
        }
        s
    }
}

/// The text of `/proc/stat`: the aggregate `cpu` line with the ten tick counters `ticks` (user,
/// nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice; USER_HZ ticks), one zeroed
/// line per CPU and `btime` (seconds since the epoch).
pub fn proc_stat_text(ticks: [u64; 10], cpus: u32, btime: u64) -> String {
    let mut s = String::from("cpu ");
    for t in ticks {
        let _ = write!(s, " {t}");
    }
    s.push('\n');
    for n in 0..cpus {
        let _ = writeln!(s, "cpu{n} 0 0 0 0 0 0 0 0 0 0");
    }
    let _ = writeln!(s, "btime {btime}");
    s
}

/// The ten counters of a `cpu` line with `busy` user ticks out of `total` (the rest idle).
pub fn busy_ticks(busy: u64, total: u64) -> [u64; 10] {
    [busy, 0, 0, total.saturating_sub(busy), 0, 0, 0, 0, 0, 0]
}

/// The text of `/proc/meminfo` with `MemTotal` and `MemAvailable` (KiB).
pub fn meminfo_text(total_kib: u64, available_kib: u64) -> String {
    format!("MemTotal:       {total_kib} kB\nMemFree:        {available_kib} kB\nMemAvailable:   {available_kib} kB\n")
}

/// Byte counters of one interface in `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    pub iface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The text of `/proc/net/dev` as the kernel prints it (`dev_seq_printf_stats`): two header
/// lines, then per interface its name right-aligned in six columns, a colon and 16 counters (the
/// packet and error counters here are made up from the bytes).
pub fn net_dev_text(ifaces: &[NetDev]) -> String {
    use std::fmt::Write;
    let mut text = String::from(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
    );
    for i in ifaces {
        let (rx, tx) = (i.rx_bytes, i.tx_bytes);
        let _ = writeln!(
            text,
            "{:>6}:{rx:>8} {:>7}    0    0    0     0          0         0 {tx:>8} {:>7}    0    0    0     0       0          0",
            i.iface,
            rx / 1000,
            tx / 1000
        );
    }
    text
}

/// Where a host's files go: the three roots of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFiles {
    pub cgroup_root: PathBuf,
    pub pve_lxc_dir: PathBuf,
    pub proc_root: PathBuf,
}

impl HostFiles {
    /// The roots `cfg` reads from.
    pub fn of(cfg: &Config) -> HostFiles {
        HostFiles {
            cgroup_root: cfg.cgroup_root.clone(),
            pve_lxc_dir: cfg.pve_lxc_dir.clone(),
            proc_root: cfg.proc_root.clone(),
        }
    }

    /// Creates the three roots.
    pub fn create_roots(&self) -> Result<()> {
        for dir in [&self.cgroup_root, &self.pve_lxc_dir, &self.proc_root] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(())
    }

    /// `<cgroup_root>/<vmid>`.
    pub fn cgroup_dir(&self, vmid: u32) -> PathBuf {
        self.cgroup_root.join(vmid.to_string())
    }

    /// `<pve_lxc_dir>/<vmid>.conf`.
    pub fn conf_path(&self, vmid: u32) -> PathBuf {
        self.pve_lxc_dir.join(format!("{vmid}.conf"))
    }

    /// A running container's cgroup directory (a new one has a new inode, as after a restart).
    pub fn create_cgroup(&self, vmid: u32) -> Result<PathBuf> {
        let dir = self.cgroup_dir(vmid);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// The container stopped: its cgroup directory goes away.
    pub fn remove_cgroup(&self, vmid: u32) -> Result<()> {
        let dir = self.cgroup_dir(vmid);
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))
    }

    pub fn write_conf(&self, vmid: u32, text: &str) -> Result<()> {
        write(&self.conf_path(vmid), text.as_bytes())
    }

    /// Any file of the container's cgroup, e.g. `cgroup::PIDS_CURRENT` or a garbled `cpu.stat`.
    pub fn write_cgroup_file(&self, vmid: u32, name: &str, bytes: &[u8]) -> Result<()> {
        write(&self.cgroup_dir(vmid).join(name), bytes)
    }

    pub fn write_cpu_stat(&self, vmid: u32, stat: &CpuStatFile) -> Result<()> {
        self.write_cgroup_file(vmid, cgroup::CPU_STAT, stat.text().as_bytes())
    }

    /// `memory.current` (`current_bytes`) and `memory.stat`.
    pub fn write_memory(&self, vmid: u32, current_bytes: u64, stat: &MemoryStatFile) -> Result<()> {
        let current = format!("{current_bytes}\n");
        self.write_cgroup_file(vmid, cgroup::MEMORY_CURRENT, current.as_bytes())?;
        self.write_cgroup_file(vmid, cgroup::MEMORY_STAT, stat.text().as_bytes())
    }

    /// Any file under the proc root (`hostproc::STAT`, `hostproc::NET_DEV`), its directory
    /// created as needed.
    pub fn write_proc_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.proc_root.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write(&path, bytes)
    }

    /// `/proc/stat`, see `proc_stat_text`.
    pub fn write_proc_stat(&self, ticks: [u64; 10], cpus: u32, btime: u64) -> Result<()> {
        let text = proc_stat_text(ticks, cpus, btime);
        self.write_proc_file(hostproc::STAT, text.as_bytes())
    }

    /// `/proc/meminfo`, see `meminfo_text`.
    pub fn write_meminfo(&self, total_kib: u64, available_kib: u64) -> Result<()> {
        let text = meminfo_text(total_kib, available_kib);
        self.write_proc_file(hostproc::MEMINFO, text.as_bytes())
    }

    /// `/proc/net/dev` listing `ifaces` (replaced whole, as every read of the real file is a new
    /// listing), see `net_dev_text`.
    pub fn write_net_dev(&self, ifaces: &[NetDev]) -> Result<()> {
        self.write_proc_file(hostproc::NET_DEV, net_dev_text(ifaces).as_bytes())
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_parse_back_to_the_same_figures() {
        let cpu = CpuStatFile {
            usage_usec: 5_000,
            user_usec: 4_000,
            system_usec: 1_000,
            throttling: Some((9, 7, 3_500)),
        };
        let parsed = cgroup::parse_cpu_stat(&cpu.text());
        assert_eq!(
            (
                parsed.usage_usec,
                parsed.nr_throttled,
                parsed.throttled_usec
            ),
            (Some(5_000), Some(7), Some(3_500))
        );
        let unthrottled = cgroup::parse_cpu_stat(&CpuStatFile::default().text());
        assert_eq!(unthrottled.nr_throttled, None);

        let mem = MemoryStatFile {
            anon_bytes: 1,
            file_bytes: 300,
            shmem_bytes: Some(20),
            inactive_file_bytes: None,
        };
        let parsed = cgroup::parse_memory_stat(&mem.text());
        assert_eq!(
            (
                parsed.file_bytes,
                parsed.shmem_bytes,
                parsed.inactive_file_bytes
            ),
            (Some(300), Some(20), None)
        );

        let stat = hostproc::parse_stat(&proc_stat_text(busy_ticks(150, 1000), 3, 1_700_000_000));
        assert_eq!(stat.cpus, Some(3));
        assert_eq!(stat.boot_time, Some(1_700_000_000));
        let ticks = stat.ticks.unwrap();
        assert_eq!((ticks.busy, ticks.total), (150, 1000));

        let info = hostproc::parse_meminfo(&meminfo_text(64, 32));
        assert_eq!(
            (info.mem_total_kib, info.mem_available_kib),
            (Some(64), Some(32))
        );

        let dev = |iface: &str, rx_bytes, tx_bytes| NetDev {
            iface: iface.into(),
            rx_bytes,
            tx_bytes,
        };
        let text = net_dev_text(&[dev("lo", 5, 6), dev("veth1000000i12", u64::MAX, 0)]);
        let lines: Vec<_> = text.lines().map(hostproc::parse_net_dev_line).collect();
        let line = |iface, rx, tx| {
            Some(hostproc::NetDevLine {
                iface,
                rx_bytes: Some(rx),
                tx_bytes: Some(tx),
            })
        };
        assert_eq!(
            lines,
            [
                None,
                None,
                line("lo", 5, 6),
                line("veth1000000i12", u64::MAX, 0)
            ]
        );
    }
}
