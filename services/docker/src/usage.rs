//! Docker's views of a container's usage: `GET /containers/{id}/stats` (the stats JSON from
//! berth's [`Metrics`](tapi::Metrics), v1 and v2 cgroups alike), the `docker stats` row
//! computed from it (CPU % from two samples, as Docker's CLI does), and `top`'s JSON from the
//! `ps` table of Tasks.ListPids.
//!
//! Everything here is pure: the figures — the cgroup's, the host's (system CPU time, online
//! CPUs, memory) and the container's interfaces — are read by the runtime service on its own
//! host, in Tasks.Metrics, and `ps` runs there too (Tasks.ListPids with `ps_args`), so a
//! client on another machine shows the container's host, not its own.

use berth_api::tasks::v1 as tapi;
use serde_json::{json, Value};

/// Docker's `networks` of a sample: each interface by name (none: `null`, as Docker's for a
/// container without one).
fn networks_json(networks: &[tapi::NetworkMetrics]) -> Value {
    if networks.is_empty() {
        return Value::Null;
    }
    let by_name: serde_json::Map<String, Value> = networks
        .iter()
        .map(|n| {
            let figures = json!({
                "rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets,
                "rx_errors": n.rx_errors, "rx_dropped": n.rx_dropped,
                "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped,
            });
            (n.name.clone(), figures)
        })
        .collect();
    Value::Object(by_name)
}

/// Docker's `io_service_bytes_recursive`: a read and a write entry per device (`Read`,
/// `Write` on cgroup v1, `read`, `write` on v2, as dockerd names them); `null` without any.
fn io_service_bytes(m: &tapi::Metrics) -> Value {
    if m.blkio.is_empty() {
        return Value::Null;
    }
    let (read, write) = if m.cgroup_version == 2 {
        ("read", "write")
    } else {
        ("Read", "Write")
    };
    let entries: Vec<Value> = m
        .blkio
        .iter()
        .flat_map(|d| {
            [(read, d.read_bytes), (write, d.write_bytes)].map(
                |(op, value)| json!({"major": d.major, "minor": d.minor, "op": op, "value": value}),
            )
        })
        .collect();
    Value::Array(entries)
}

/// Docker's `cpu_stats` of one sample.
fn cpu_stats(m: &tapi::Metrics) -> Value {
    let cpu = m.cpu.clone().unwrap_or_default();
    json!({
        "cpu_usage": {
            "total_usage": cpu.usage_nsec,
            "percpu_usage": if cpu.per_cpu_nsec.is_empty() { Value::Null } else { json!(cpu.per_cpu_nsec) },
            "usage_in_kernelmode": cpu.system_nsec,
            "usage_in_usermode": cpu.user_nsec,
        },
        "system_cpu_usage": m.system_cpu_nsec,
        "online_cpus": m.online_cpus,
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
/// previous one (`pre`; none for the first).
pub fn stats_json(id: &str, name: &str, m: &tapi::Metrics, pre: Option<&tapi::Metrics>) -> Value {
    let mem = m.memory.unwrap_or_default();
    let host_memory = m.host_memory;
    let limit = if mem.limit == 0 || (host_memory > 0 && mem.limit > host_memory) {
        host_memory
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
        "preread": time(pre.and_then(|p| p.timestamp.as_ref())),
        "pids_stats": pids_stats,
        "blkio_stats": {
            "io_service_bytes_recursive": io_service_bytes(m), "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_stats(m),
        "precpu_stats": pre.map_or_else(no_cpu_stats, cpu_stats),
        "memory_stats": {
            "usage": mem.usage,
            "max_usage": mem.max_usage,
            "stats": stats,
            "limit": limit,
        },
        "name": format!("/{}", name.trim_start_matches('/')),
        "id": id,
        "networks": networks_json(&m.networks),
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
    let (mut read, mut write) = (0, 0);
    let io = stats["blkio_stats"]["io_service_bytes_recursive"].as_array();
    for entry in io.into_iter().flatten() {
        // Docker's CLI: the op's first letter, either case.
        match entry["op"].as_str().and_then(|op| op.chars().next()) {
            Some('r' | 'R') => read += u(&entry["value"]),
            Some('w' | 'W') => write += u(&entry["value"]),
            _ => {}
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
        "BlockIO": format!("{} / {}", decimal_size(read), decimal_size(write)),
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

/// Docker's `top` JSON, `{"Titles": […], "Processes": [[…]]}`, from the `ps` table of a
/// Tasks.ListPids answer (asked with `ps_args`).
pub fn top_json(answer: &tapi::ListPidsResponse) -> Value {
    let processes: Vec<&Vec<String>> = answer.rows.iter().map(|r| &r.fields).collect();
    json!({"Titles": answer.titles, "Processes": processes})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample at `secs` with `cpu` ns of the container's CPU time and `system` ns of the
    /// host's, on four CPUs and 64 MiB.
    fn metrics(cpu: u64, system: u64, secs: i64) -> tapi::Metrics {
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
            system_cpu_nsec: system,
            online_cpus: 4,
            host_memory: 64 << 20,
            networks: vec![tapi::NetworkMetrics {
                name: "eth0".into(),
                rx_bytes: 1500,
                rx_packets: 10,
                tx_bytes: 2500,
                tx_packets: 20,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn cpu_percent_from_two_samples_like_docker() {
        // 0.5 s of CPU over 4 s of four CPUs' time: 12.5% of the machine, times 4 CPUs = 50%.
        let s = stats_json(
            "abc",
            "web",
            &metrics(1_500_000_000, 14_000_000_000, 2),
            Some(&metrics(1_000_000_000, 10_000_000_000, 1)),
        );
        assert!((cpu_percent(&s) - 50.0).abs() < 1e-9, "{}", cpu_percent(&s));
        assert_eq!(s["cpu_stats"]["system_cpu_usage"], 14_000_000_000u64);
        assert_eq!(s["cpu_stats"]["online_cpus"], 4);
        assert_eq!(
            s["memory_stats"]["limit"],
            json!(64u64 << 20),
            "unlimited: the host's"
        );
        assert_eq!(s["memory_stats"]["stats"]["file"], json!(1 << 20));
        assert_eq!(s["name"], "/web");
        assert_eq!(s["networks"]["eth0"]["tx_bytes"], 2500);
        assert_eq!(s["networks"]["eth0"]["rx_packets"], 10);
        let first = stats_json("abc", "web", &metrics(5, 9, 1), None);
        assert_eq!(first["preread"], "0001-01-01T00:00:00Z");
        let row = stats_row(&s, "abc");
        assert_eq!(row["CPUPerc"], "50.00%");
        assert_eq!(row["MemUsage"], "8MiB / 64MiB");
        assert_eq!(row["MemPerc"], "12.50%");
        assert_eq!(row["NetIO"], "1.5kB / 2.5kB");
        assert_eq!(row["PIDs"], "3");
        assert_eq!(row["BlockIO"], "0B / 0B", "no block I/O figures");
        assert_eq!(format_g(1.23456, 4), "1.235");
        assert_eq!(format_g(123.0, 4), "123");
        assert_eq!(decimal_size(3331), "3.33kB");
    }

    #[test]
    fn block_io_by_device_and_summed_in_the_row() {
        let mut m = metrics(5, 9, 1);
        m.blkio = vec![
            tapi::BlkioDevice {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 1500,
            },
            tapi::BlkioDevice {
                major: 8,
                minor: 16,
                read_bytes: 904,
                write_bytes: 0,
            },
        ];
        let s = stats_json("abc", "web", &m, None);
        let io = &s["blkio_stats"]["io_service_bytes_recursive"];
        assert_eq!(
            io[0],
            json!({"major": 8, "minor": 0, "op": "read", "value": 4096})
        );
        assert_eq!(io[1]["op"], "write");
        assert_eq!(io.as_array().unwrap().len(), 4);
        assert_eq!(stats_row(&s, "abc")["BlockIO"], "5kB / 1.5kB");
        m.cgroup_version = 1;
        let v1 = stats_json("abc", "web", &m, None);
        assert_eq!(
            v1["blkio_stats"]["io_service_bytes_recursive"][0]["op"],
            "Read"
        );
        assert_eq!(stats_row(&v1, "abc")["BlockIO"], "5kB / 1.5kB");
    }

    #[test]
    fn a_sample_without_interfaces_or_a_task() {
        let mut m = metrics(5, 9, 1);
        m.networks.clear();
        assert_eq!(stats_json("abc", "web", &m, None)["networks"], Value::Null);
        // A container that does not run: an empty sample, Docker's zeros.
        let empty = stats_json("abc", "web", &tapi::Metrics::default(), None);
        assert_eq!(empty["memory_stats"]["limit"], 0);
        assert_eq!(cpu_percent(&empty), 0.0);
        assert_eq!(stats_row(&empty, "abc")["NetIO"], "0B / 0B");
    }

    #[test]
    fn top_json_from_the_ps_table() {
        let answer = tapi::ListPidsResponse {
            processes: vec![],
            titles: vec!["PID".into(), "COMMAND".into()],
            rows: vec![tapi::PsRow {
                fields: vec!["420".into(), "sleep 300".into()],
            }],
        };
        assert_eq!(
            top_json(&answer),
            json!({"Titles": ["PID", "COMMAND"], "Processes": [["420", "sleep 300"]]})
        );
        assert_eq!(
            top_json(&tapi::ListPidsResponse::default()),
            json!({"Titles": [], "Processes": []})
        );
    }
}
