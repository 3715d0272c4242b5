//! The host's figures a `Tasks.Metrics` sample carries beside the cgroup's: every CPU's time
//! since boot and the CPUs online (`/proc/stat`), the host's memory (`/proc/meminfo`), and the
//! container's network interfaces (`/proc/<init pid>/net/dev`, `lo` left out, as Docker's
//! `networks`).
//!
//! They are read on the runtime's own host, where the container runs, so a client on another
//! machine (a CLI over TCP, the gateway, a gRPC client in any language) gets the right ones.
//! [`HostFigures::read`] does the reading; the parsers are pure and tested on their own.

use berth_api::tasks::v1 as api;

/// Nanoseconds per USER_HZ tick, the unit of /proc/stat (USER_HZ is 100 on every Linux
/// architecture, whatever the kernel's own HZ).
const NANOS_PER_TICK: u64 = 10_000_000;

/// The host's side of one metrics sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HostFigures {
    /// Every CPU's time since boot (user … softirq), in nanoseconds.
    pub system_cpu_nsec: u64,
    /// The CPUs online.
    pub online_cpus: u32,
    /// MemTotal, in bytes.
    pub memory: u64,
    /// The interfaces of the container's network namespace but `lo`.
    pub networks: Vec<api::NetworkMetrics>,
}

impl HostFigures {
    /// Reads the host's figures now, and the interfaces of the network namespace of `pid`
    /// (none when `pid` is 0 or gone). A file that cannot be read gives zeros: a sample is
    /// still worth answering without one figure.
    pub fn read(pid: u32) -> HostFigures {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let stat = read("/proc/stat");
        let networks = if pid == 0 {
            Vec::new()
        } else {
            net_dev(&read(&format!("/proc/{pid}/net/dev")))
        };
        HostFigures {
            system_cpu_nsec: system_cpu_nsec(&stat),
            online_cpus: online_cpus(&stat),
            memory: mem_total(&read("/proc/meminfo")),
            networks,
        }
    }

    /// Puts these figures into a metrics sample.
    pub fn fill(self, m: &mut api::Metrics) {
        m.system_cpu_nsec = self.system_cpu_nsec;
        m.online_cpus = self.online_cpus;
        m.host_memory = self.memory;
        m.networks = self.networks;
    }
}

/// The `cpu` line of /proc/stat: its first seven figures (user, nice, system, idle, iowait,
/// irq, softirq) summed, in nanoseconds — the figures dockerd sums for `system_cpu_usage`
/// (guest time is already part of user time).
fn system_cpu_nsec(proc_stat: &str) -> u64 {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .map(|figures| {
            figures
                .split_whitespace()
                .take(7)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>()
                .saturating_mul(NANOS_PER_TICK)
        })
        .unwrap_or(0)
}

/// The `cpuN` lines of /proc/stat: one per online CPU.
fn online_cpus(proc_stat: &str) -> u32 {
    let n = proc_stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// MemTotal of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// The interfaces of a /proc/net/dev but `lo`: after two header lines, `name: ` then eight
/// receive figures (bytes packets errs drop fifo frame compressed multicast) and eight
/// transmit ones. A line with fewer figures is skipped.
fn net_dev(text: &str) -> Vec<api::NetworkMetrics> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, figures)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let f: Vec<u64> = figures
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if name == "lo" || f.len() < 12 {
            continue;
        }
        out.push(api::NetworkMetrics {
            name: name.to_string(),
            rx_bytes: f[0],
            rx_packets: f[1],
            rx_errors: f[2],
            rx_dropped: f[3],
            tx_bytes: f[8],
            tx_packets: f[9],
            tx_errors: f[10],
            tx_dropped: f[11],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  1 2 3 4 5 6 7 8 9 10\n\
                        cpu0 1 1 1 1 1 1 1 0 0 0\n\
                        cpu1 1 1 1 1 1 1 1 0 0 0\n\
                        intr 12345\n\
                        cpus_allowed 3\n";

    #[test]
    fn system_cpu_is_the_cpu_line_up_to_softirq_in_nanoseconds() {
        assert_eq!(system_cpu_nsec(STAT), 28 * NANOS_PER_TICK);
        assert_eq!(system_cpu_nsec("cpu  1 2 3\n"), 6 * NANOS_PER_TICK);
        assert_eq!(system_cpu_nsec(""), 0);
        assert_eq!(system_cpu_nsec("cpu0 5 5\n"), 0, "no total line");
    }

    #[test]
    fn online_cpus_count_the_numbered_lines() {
        assert_eq!(online_cpus(STAT), 2);
        assert_eq!(online_cpus(""), 0);
    }

    #[test]
    fn memory_total_in_bytes() {
        let meminfo = "MemTotal:        2048 kB\nMemFree:          1024 kB\n";
        assert_eq!(mem_total(meminfo), 2048 * 1024);
        assert_eq!(mem_total("MemFree: 1 kB\n"), 0);
        assert_eq!(mem_total("MemTotal: lots kB\n"), 0);
    }

    #[test]
    fn interfaces_but_loopback() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo:      5       1    0    0    0     0          0         0        5       1    0    0    0     0       0          0\n  \
                   eth0:   1500      10    1    2    0     0          0         0     2500      20    3    4    0     0       0          0\n  \
                   bad: 1 2 3\n";
        let n = net_dev(dev);
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0].name, "eth0");
        assert_eq!(
            (
                n[0].rx_bytes,
                n[0].rx_packets,
                n[0].rx_errors,
                n[0].rx_dropped
            ),
            (1500, 10, 1, 2)
        );
        assert_eq!(
            (
                n[0].tx_bytes,
                n[0].tx_packets,
                n[0].tx_errors,
                n[0].tx_dropped
            ),
            (2500, 20, 3, 4)
        );
        assert!(net_dev("").is_empty());
    }

    #[test]
    fn reads_this_host() {
        let h = HostFigures::read(std::process::id());
        assert!(
            h.system_cpu_nsec > 0 && h.online_cpus >= 1 && h.memory > 0,
            "{h:?}"
        );
        assert!(h.networks.iter().all(|n| n.name != "lo"));
        assert!(HostFigures::read(0).networks.is_empty());
    }
}
