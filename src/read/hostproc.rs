//! Host figures from procfs: `<proc_root>/stat`, `<proc_root>/meminfo` and `<proc_root>/net/dev`.

use crate::read::cgroup::parse_u64;
use crate::read::snapshot::CpuTicks;

/// `<proc_root>/stat`: CPU ticks (USER_HZ), CPU lines and `btime`.
pub const STAT: &str = "stat";
/// `<proc_root>/meminfo`: `Key: N kB` lines.
pub const MEMINFO: &str = "meminfo";
/// `<proc_root>/net/dev`: byte and packet counters of every interface of the reading process's
/// network namespace (the daemon's: the host's, where the host side of each container veth is).
pub const NET_DEV: &str = "net/dev";

/// One interface line of `/proc/net/dev`, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetDevLine<'a> {
    pub iface: &'a str,
    /// Received by the interface; `None` when the field is missing or garbled.
    pub rx_bytes: Option<u64>,
    /// Sent by the interface; `None` likewise.
    pub tx_bytes: Option<u64>,
}

/// Fields after the colon: 8 receive counters (bytes first), then transmit (bytes first).
const NET_DEV_TX_BYTES: usize = 8;

/// Parsed `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Number of `cpuN` lines; `None` when there is none.
    pub cpus: Option<u32>,
    /// Aggregate `cpu` line; busy excludes idle and iowait. `None` when the line is absent, short
    /// or garbled.
    pub ticks: Option<CpuTicks>,
    /// `btime`, seconds since the epoch.
    pub boot_time: Option<u64>,
}

/// Parsed `/proc/meminfo`, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total_kib: Option<u64>,
    pub mem_available_kib: Option<u64>,
}

/// Fields of the `cpu` line that make up the total: user nice system idle iowait irq softirq
/// steal. `guest` and `guest_nice` follow but are already counted in user and nice.
const TICK_FIELDS: usize = 8;
const IDLE: usize = 3;
const IOWAIT: usize = 4;

/// Parses `/proc/stat` text. Unknown lines are ignored.
pub fn parse_stat(text: &str) -> ProcStat {
    let mut stat = ProcStat::default();
    let mut cpus: u32 = 0;
    let mut seen_aggregate = false;
    for line in text.lines() {
        let bytes = line.as_bytes();
        if bytes.starts_with(b"cpu") && bytes.get(3).is_some_and(u8::is_ascii_digit) {
            cpus = cpus.saturating_add(1);
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") if !seen_aggregate => {
                seen_aggregate = true;
                stat.ticks = parse_ticks(fields);
            }
            Some("btime") => {
                stat.boot_time = match (fields.next(), fields.next()) {
                    (Some(v), None) => parse_u64(v),
                    _ => None,
                };
            }
            _ => {}
        }
    }
    stat.cpus = (cpus > 0).then_some(cpus);
    stat
}

/// Ticks from the fields after `cpu`. All eight counted fields must be numbers.
fn parse_ticks<'a>(mut fields: impl Iterator<Item = &'a str>) -> Option<CpuTicks> {
    let mut values = [0u64; TICK_FIELDS];
    for v in &mut values {
        *v = parse_u64(fields.next()?)?;
    }
    let total = values.iter().try_fold(0u64, |acc, &v| acc.checked_add(v))?;
    let busy = total - values[IDLE] - values[IOWAIT];
    Some(CpuTicks { busy, total })
}

/// Parses `/proc/meminfo` text. A figure is `None` unless its line reads `Key: N kB`.
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut info = MemInfo::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("MemTotal:") => &mut info.mem_total_kib,
            Some("MemAvailable:") => &mut info.mem_available_kib,
            _ => continue,
        };
        *slot = match (fields.next(), fields.next(), fields.next()) {
            (Some(v), Some("kB"), None) => parse_u64(v),
            _ => None,
        };
    }
    info
}

/// Parses one line of `/proc/net/dev`: `<iface>: <rx bytes> ... <tx bytes> ...`, the name padded
/// with spaces on the left and, when long, followed by the first figure without a space. `None`
/// for the two header lines (which have no colon).
pub fn parse_net_dev_line(line: &str) -> Option<NetDevLine<'_>> {
    let (iface, figures) = line.split_once(':')?;
    let mut fields = figures.split_ascii_whitespace();
    let rx_bytes = fields.next().and_then(parse_u64);
    let tx_bytes = fields.nth(NET_DEV_TX_BYTES - 1).and_then(parse_u64);
    Some(NetDevLine {
        iface: iface.trim_start(),
        rx_bytes,
        tx_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_TEXT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0\n\
        cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
        cpu1 1335120 31128 542510 13401617 3564 0 3428 0 22051 0\n\
        cpu2 3746023 113302 1003126 10019040 3522 0 2000 0 64716 0\n\
        cpu3 3657730 113300 967027 10064534 3467 0 1892 0 64928 0\n\
        intr 1462898 0 0 0\nctxt 115315133\nbtime 1769000000\nprocesses 86031\n\
        procs_running 6\nprocs_blocked 0\nsoftirq 12121 0 1 2 3 4 5 6 7 8 9\n";

    const NET_DEV_TEXT: &str = "Inter-|   Receive                                                |  Transmit\n\
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
            lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0\n\
         veth101i0: 5000 40 0 0 0 0 0 0 900000 60 0 0 0 0 0 0\n\
         veth1000000i12:18446744073709551615 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n";

    #[test]
    fn net_dev_lines_give_the_name_and_both_byte_counters() {
        let lines: Vec<_> = NET_DEV_TEXT.lines().map(parse_net_dev_line).collect();
        assert_eq!(lines[..2], [None, None]);
        let line = |iface, rx, tx| {
            Some(NetDevLine {
                iface,
                rx_bytes: Some(rx),
                tx_bytes: Some(tx),
            })
        };
        assert_eq!(lines[2], line("lo", 123_456, 123_456));
        assert_eq!(lines[3], line("veth101i0", 5000, 900_000));
        assert_eq!(lines[4], line("veth1000000i12", u64::MAX, 7));
    }

    #[test]
    fn net_dev_line_with_a_short_or_garbled_counter_gives_none_for_it() {
        let short = parse_net_dev_line("veth101i0: 5000 40 0 0 0 0 0 0").unwrap();
        assert_eq!((short.rx_bytes, short.tx_bytes), (Some(5000), None));
        let garbled = parse_net_dev_line("veth101i0: -1 40 0 0 0 0 0 0 77 1").unwrap();
        assert_eq!((garbled.rx_bytes, garbled.tx_bytes), (None, Some(77)));
        let empty = parse_net_dev_line("veth101i0:").unwrap();
        assert_eq!(
            (empty.iface, empty.rx_bytes, empty.tx_bytes),
            ("veth101i0", None, None)
        );
    }

    #[test]
    fn stat_counts_cpus_and_excludes_guest_from_total() {
        let s = parse_stat(STAT_TEXT);
        assert_eq!(s.cpus, Some(4));
        let total = 10132153 + 290696 + 3084719 + 46828483 + 16683 + 25195;
        assert_eq!(
            s.ticks,
            Some(CpuTicks {
                busy: total - 46828483 - 16683,
                total,
            })
        );
        assert_eq!(s.boot_time, Some(1_769_000_000));
    }

    #[test]
    fn stat_with_garbled_tick_field_gives_no_ticks() {
        for line in [
            "cpu  1 2 3 x 5 6 7 8 9 10\n",
            "cpu  1 2 3 -4 5 6 7 8 9 10\n",
            "cpu  1 2 3 4 5 6 7\n",
            "cpu\n",
            "cpu  1 2 3 4 5 6 7 18446744073709551616 9 10\n",
            "cpu  18446744073709551615 1 0 0 0 0 0 0\n",
            "cpu  1 2 3 4\0 5 6 7 8\n",
        ] {
            let s = parse_stat(&format!("{line}cpu0 1 2 3 4 5 6 7 8 9 10\nbtime 5\n"));
            assert_eq!(s.ticks, None, "{line:?}");
            assert_eq!(s.cpus, Some(1), "{line:?}");
            assert_eq!(s.boot_time, Some(5), "{line:?}");
        }
    }

    #[test]
    fn stat_with_exactly_eight_fields_is_enough() {
        let s = parse_stat("cpu 1 2 3 4 5 6 7 8\n");
        assert_eq!(
            s.ticks,
            Some(CpuTicks {
                busy: 27,
                total: 36
            })
        );
    }

    #[test]
    fn stat_cpu_count_ignores_lines_that_only_start_with_cpu() {
        let s = parse_stat("cpu 1 2 3 4 5 6 7 8\ncpufreq 3\ncpu12 1\ncpux 4\n cpu3 1\n");
        assert_eq!(s.cpus, Some(1));
    }

    #[test]
    fn empty_or_garbage_stat_is_all_none() {
        assert_eq!(parse_stat(""), ProcStat::default());
        assert_eq!(parse_stat("\0\0\0\n"), ProcStat::default());
        assert_eq!(parse_stat("btime -1\n").boot_time, None);
        assert_eq!(parse_stat("btime 1 2\n").boot_time, None);
    }

    const MEMINFO_TEXT: &str = "MemTotal:       16318412 kB\nMemFree:         1234567 kB\n\
        MemAvailable:    8123456 kB\nBuffers:          123456 kB\nHugePages_Total:       0\n";

    #[test]
    fn meminfo_reads_total_and_available_kib() {
        assert_eq!(
            parse_meminfo(MEMINFO_TEXT),
            MemInfo {
                mem_total_kib: Some(16_318_412),
                mem_available_kib: Some(8_123_456),
            }
        );
    }

    #[test]
    fn meminfo_garbage_gives_none_for_that_figure() {
        let m = parse_meminfo("MemTotal: -5 kB\nMemAvailable: 100 kB\n");
        assert_eq!(m.mem_total_kib, None);
        assert_eq!(m.mem_available_kib, Some(100));
        let m = parse_meminfo("MemTotal: 99999999999999999999 kB\nMemAvailable: 100\n");
        assert_eq!(m, MemInfo::default());
        assert_eq!(parse_meminfo("MemTotal: 100 MB\n").mem_total_kib, None);
        assert_eq!(parse_meminfo(""), MemInfo::default());
        assert_eq!(parse_meminfo("MemTotal: 1\0 kB\n").mem_total_kib, None);
    }

    #[test]
    fn meminfo_key_needs_exact_name() {
        let m = parse_meminfo("MemTotalX: 5 kB\nMemAvailable 7 kB\n");
        assert_eq!(m, MemInfo::default());
    }
}
