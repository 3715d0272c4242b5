//! Docker's views of a container's usage: `GET /containers/{id}/stats` (the stats JSON from
//! berth's cgroup [`Metrics`](tapi::Metrics), v1 and v2 alike), the `docker stats` row
//! computed from it (CPU % from two samples, as Docker's CLI does), and `top` (the host's
//! `ps` filtered to the container's processes, as dockerd does).
//!
//! The host's figures a stats sample needs (`/proc/stat`, the container's `/proc/PID/net/dev`)
//! are read by [`HostSample::read`]; everything else is pure.

use berth_api::tasks::v1 as tapi;
use serde_json::{json, Value};

/// Nanoseconds per USER_HZ tick, the unit of /proc/stat (100 Hz on Linux).
const NANOS_PER_TICK: u64 = 10_000_000;

/// What the host adds to a container's metrics for one stats sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSample {
    /// Every CPU's time since boot (the `cpu` line of /proc/stat), in nanoseconds.
    pub system_cpu_nsec: u64,
    /// The CPUs online.
    pub online_cpus: u64,
    /// The host's memory (a limit when the container has none).
    pub mem_total: u64,
    /// The container's interfaces (its /proc/PID/net/dev): Docker's `networks` object.
    pub networks: Value,
}

impl HostSample {
    /// Reads the host's figures, and the interfaces of the network namespace of `pid`.
    pub fn read(pid: Option<u32>) -> HostSample {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let stat = read("/proc/stat");
        HostSample {
            system_cpu_nsec: system_cpu_nsec(&stat),
            online_cpus: online_cpus(&stat),
            mem_total: mem_total(&read("/proc/meminfo")),
            networks: pid
                .map(|p| net_dev(&read(&format!("/proc/{p}/net/dev"))))
                .unwrap_or(Value::Null),
        }
    }
}

/// The `cpu` line of /proc/stat (user … steal) in nanoseconds, as Docker's
/// `system_cpu_usage`.
pub fn system_cpu_nsec(proc_stat: &str) -> u64 {
    proc_stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(7)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>()
                * NANOS_PER_TICK
        })
        .unwrap_or(0)
}

/// The `cpuN` lines of /proc/stat.
fn online_cpus(proc_stat: &str) -> u64 {
    proc_stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count() as u64
}

fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Docker's `networks` from a /proc/net/dev: each interface but `lo`, its rx/tx figures.
pub fn net_dev(text: &str) -> Value {
    let mut out = serde_json::Map::new();
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
        out.insert(
            name.to_string(),
            json!({
                "rx_bytes": f[0], "rx_packets": f[1], "rx_errors": f[2], "rx_dropped": f[3],
                "tx_bytes": f[8], "tx_packets": f[9], "tx_errors": f[10], "tx_dropped": f[11],
            }),
        );
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

/// Docker's `cpu_stats` of one sample.
fn cpu_stats(m: &tapi::Metrics, host: &HostSample) -> Value {
    let cpu = m.cpu.clone().unwrap_or_default();
    json!({
        "cpu_usage": {
            "total_usage": cpu.usage_nsec,
            "percpu_usage": if cpu.per_cpu_nsec.is_empty() { Value::Null } else { json!(cpu.per_cpu_nsec) },
            "usage_in_kernelmode": cpu.system_nsec,
            "usage_in_usermode": cpu.user_nsec,
        },
        "system_cpu_usage": host.system_cpu_nsec,
        "online_cpus": host.online_cpus,
        "throttling_data": {
            "periods": cpu.nr_periods,
            "throttled_periods": cpu.nr_throttled,
            "throttled_time": cpu.throttled_nsec,
        },
    })
}

/// An empty sample's `cpu_stats`, as Docker's first `precpu_stats`.
fn no_cpu_stats() -> Value {
    json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
           "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}})
}

/// Docker's stats JSON of container `id` named `name` from one metrics sample and the
/// previous one (`pre`: the sample before, with its host figures; none for the first).
pub fn stats_json(
    id: &str,
    name: &str,
    m: &tapi::Metrics,
    host: &HostSample,
    pre: Option<(&tapi::Metrics, &HostSample)>,
) -> Value {
    let mem = m.memory.unwrap_or_default();
    let limit = if mem.limit == 0 || (host.mem_total > 0 && mem.limit > host.mem_total) {
        host.mem_total
    } else {
        mem.limit
    };
    let stats = if m.cgroup_version == 2 {
        json!({"file": mem.cache})
    } else {
        json!({"cache": mem.cache, "total_cache": mem.cache})
    };
    let pids = m.pids.unwrap_or_default();
    let mut pids_stats = json!({"current": pids.current});
    if pids.limit > 0 {
        pids_stats["limit"] = json!(pids.limit);
    }
    let time = |t: Option<&berth_api::prost_types::Timestamp>| match t {
        Some(t) => crate::time::rfc3339_nano_fixed(Some(t)),
        None => "0001-01-01T00:00:00Z".to_string(),
    };
    json!({
        "read": time(m.timestamp.as_ref()),
        "preread": time(pre.and_then(|(p, _)| p.timestamp.as_ref())),
        "pids_stats": pids_stats,
        "blkio_stats": {
            "io_service_bytes_recursive": null, "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats(m, host),
        "precpu_stats": pre.map_or_else(no_cpu_stats, |(p, h)| cpu_stats(p, h)),
        "memory_stats": {
            "usage": mem.usage,
            "max_usage": mem.max_usage,
            "stats": stats,
            "limit": limit,
        },
        "name": format!("/{}", name.trim_start_matches('/')),
        "id": id,
        "networks": host.networks,
    })
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Docker CLI's CPU %: the container's CPU time over the host's between the two samples of
/// a stats JSON, times the CPUs.
pub fn cpu_percent(stats: &Value) -> f64 {
    let (cur, pre) = (&stats["cpu_stats"], &stats["precpu_stats"]);
    let cpu_delta =
        u(&cur["cpu_usage"]["total_usage"]) as f64 - u(&pre["cpu_usage"]["total_usage"]) as f64;
    let system_delta = u(&cur["system_cpu_usage"]) as f64 - u(&pre["system_cpu_usage"]) as f64;
    let mut cpus = u(&cur["online_cpus"]) as f64;
    if cpus == 0.0 {
        cpus = cur["cpu_usage"]["percpu_usage"]
            .as_array()
            .map_or(0, |a| a.len()) as f64;
    }
    if system_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / system_delta * cpus * 100.0
    } else {
        0.0
    }
}

/// Docker CLI's memory use: usage without the inactive page cache.
pub fn mem_usage(stats: &Value) -> u64 {
    let m = &stats["memory_stats"];
    let usage = u(&m["usage"]);
    let inactive = m["stats"]
        .get("total_inactive_file")
        .or_else(|| m["stats"].get("inactive_file"))
        .map_or(0, u);
    if inactive < usage {
        usage - inactive
    } else {
        usage
    }
}

/// Docker's 1000-based sizes with three significant digits (`1.5MB`), as `docker stats`
/// shows NET and BLOCK I/O.
fn decimal_size(n: u64) -> String {
    decimal_size_with(n, 3)
}

/// Docker's `units.HumanSize`: 1000-based, four significant digits (`system df`, prune
/// reports).
pub fn human_size(n: u64) -> String {
    decimal_size_with(n, 4)
}

fn decimal_size_with(n: u64, precision: i32) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", format_g(v, precision), units[i])
}

/// Docker's 1024-based sizes (`1.5MiB`), as `docker stats` and `info` show memory.
pub fn binary_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", format_g(v, 4), units[i])
}

/// Go's `%.Ng`: `n` significant digits, no trailing zeros.
fn format_g(v: f64, n: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (n - 1 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One `docker stats` row from a stats JSON: Docker's field names (ID, Name, CPUPerc,
/// MemUsage, MemPerc, NetIO, BlockIO, PIDs), the id as given (full or short).
pub fn stats_row(stats: &Value, id: &str) -> Value {
    let mem = mem_usage(stats);
    let limit = u(&stats["memory_stats"]["limit"]);
    let mem_perc = if limit > 0 {
        mem as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0, 0);
    if let Some(nets) = stats["networks"].as_object() {
        for n in nets.values() {
            rx += u(&n["rx_bytes"]);
            tx += u(&n["tx_bytes"]);
        }
    }
    json!({
        "ID": id,
        "Container": id,
        "Name": stats["name"].as_str().unwrap_or("").trim_start_matches('/'),
        "CPUPerc": format!("{:.2}%", cpu_percent(stats)),
        "MemUsage": format!("{} / {}", binary_size(mem), binary_size(limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": format!("{} / {}", decimal_size(rx), decimal_size(tx)),
        "BlockIO": format!("{} / {}", decimal_size(0), decimal_size(0)),
        "PIDs": u(&stats["pids_stats"]["current"]).to_string(),
    })
}

/// The columns of `docker stats`.
pub const STATS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// `docker stats`'s default table.
pub const STATS_TABLE: &str =
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// `top`: runs the host's `ps` with `ps_args` (Docker's default `-ef`) and keeps the rows of
/// `pids`, as `{"Titles": […], "Processes": [[…]]}`.
pub fn top(ps_args: &str, pids: &[u32]) -> Result<Value, String> {
    let args: Vec<&str> = ps_args.split_whitespace().collect();
    let out = std::process::Command::new("ps")
        .args(if args.is_empty() { vec!["-ef"] } else { args })
        .output()
        .map_err(|e| format!("cannot run ps: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    top_of_ps(&String::from_utf8_lossy(&out.stdout), pids)
}

/// The rows of a `ps` output whose PID is one of `pids`: the titles from its header, each row
/// split in as many fields (the last, the command, keeps its spaces).
pub fn top_of_ps(ps: &str, pids: &[u32]) -> Result<Value, String> {
    let mut lines = ps.lines();
    let titles: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or("Couldn't find PID field in ps output")?;
    let mut processes = Vec::new();
    for line in lines {
        let mut fields: Vec<String> = Vec::new();
        let mut rest = line.trim_start();
        while fields.len() + 1 < titles.len() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        fields.push(rest.to_string());
        let pid: Option<u32> = fields.get(pid_col).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            processes.push(fields);
        }
    }
    Ok(json!({"Titles": titles, "Processes": processes}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(cpu: u64, secs: i64) -> tapi::Metrics {
        tapi::Metrics {
            timestamp: Some(berth_api::prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            cgroup_version: 2,
            memory: Some(tapi::MemoryMetrics {
                usage: 8 << 20,
                limit: u64::MAX,
                cache: 1 << 20,
                ..Default::default()
            }),
            cpu: Some(tapi::CpuMetrics {
                usage_nsec: cpu,
                ..Default::default()
            }),
            pids: Some(tapi::PidsMetrics {
                current: 3,
                limit: 0,
            }),
            ..Default::default()
        }
    }

    fn host(system: u64) -> HostSample {
        HostSample {
            system_cpu_nsec: system,
            online_cpus: 4,
            mem_total: 64 << 20,
            networks: net_dev(
                "Inter-|   Receive\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  eth0: 1500 10 0 0 0 0 0 0 2500 20 0 0 0 0 0 0\n",
            ),
        }
    }

    #[test]
    fn cpu_percent_from_two_samples_like_docker() {
        // 0.5 s of CPU over 4 s of four CPUs' time: 12.5% of the machine, times 4 CPUs = 50%.
        let s = stats_json(
            "abc",
            "web",
            &metrics(1_500_000_000, 2),
            &host(14_000_000_000),
            Some((&metrics(1_000_000_000, 1), &host(10_000_000_000))),
        );
        assert!((cpu_percent(&s) - 50.0).abs() < 1e-9, "{}", cpu_percent(&s));
        assert_eq!(
            s["memory_stats"]["limit"],
            json!(64u64 << 20),
            "unlimited: the host's"
        );
        assert_eq!(s["memory_stats"]["stats"]["file"], json!(1 << 20));
        assert_eq!(s["name"], "/web");
        assert_eq!(s["networks"]["eth0"]["tx_bytes"], 2500);
        assert!(s["networks"].get("lo").is_none());
        let first = stats_json("abc", "web", &metrics(5, 1), &host(9), None);
        assert_eq!(first["preread"], "0001-01-01T00:00:00Z");
        let row = stats_row(&s, "abc");
        assert_eq!(row["CPUPerc"], "50.00%");
        assert_eq!(row["MemUsage"], "8MiB / 64MiB");
        assert_eq!(row["MemPerc"], "12.50%");
        assert_eq!(row["NetIO"], "1.5kB / 2.5kB");
        assert_eq!(row["PIDs"], "3");
        assert_eq!(
            system_cpu_nsec("cpu  1 2 3 4 5 6 7 8 9\ncpu0 1\n"),
            28 * NANOS_PER_TICK
        );
        assert_eq!(format_g(1.23456, 4), "1.235");
        assert_eq!(format_g(123.0, 4), "123");
        assert_eq!(decimal_size(3331), "3.33kB");
    }

    #[test]
    fn top_keeps_the_containers_rows() {
        let ps = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                  root           1       0  0 10:00 ?        00:00:01 /sbin/init splash\n\
                  root         420       1  0 10:01 ?        00:00:00 sleep 300\n";
        let t = top_of_ps(ps, &[420]).unwrap();
        assert_eq!(
            t["Titles"],
            json!(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"])
        );
        assert_eq!(
            t["Processes"],
            json!([[
                "root",
                "420",
                "1",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "sleep 300"
            ]])
        );
        assert!(top_of_ps("USER COMMAND\n", &[1]).is_err());
    }
}
