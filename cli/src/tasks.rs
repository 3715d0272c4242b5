//! `berth task ls|ps|metrics` (alias `tasks`), as `ctr tasks`: the running side of the
//! containers of the namespace, the processes of one, and what its cgroup uses.

use crate::client::{Context, Error};
use crate::format;
use crate::template::{Format, ListFormat};
use crate::verbs::done;
use berth_api::containers::v1 as capi;
use berth_api::tasks::v1 as api;
use clap::Subcommand;
use serde_json::{json, Value};
use std::collections::HashSet;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List tasks
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        output: ListFormat,
    },
    /// List the processes of a container's task
    Ps {
        #[command(flatten)]
        output: ListFormat,
        /// The container: a name, an id or a unique id prefix
        container: String,
    },
    /// Show what a container's cgroup uses: memory, cpu, pids
    Metrics {
        /// table (ctr's layout), json, or a Go template over the JSON's fields
        #[arg(long, default_value = "table")]
        format: String,
        /// The container: a name, an id or a unique id prefix
        container: String,
    },
}

/// Runs a task subcommand; gives the exit code.
pub async fn task(ctx: &Context, c: TaskCommand) -> u8 {
    done(match c {
        TaskCommand::Ls { output } => ls(ctx, &output).await,
        TaskCommand::Ps { output, container } => ps(ctx, &output, container).await,
        TaskCommand::Metrics { format, container } => metrics(ctx, &format, container).await,
    })
}

/// ctr's STATUS: RUNNING, PAUSED (a running container whose cgroup is frozen), CREATED,
/// STOPPED.
fn status(t: &api::Task, paused: bool) -> &'static str {
    match api::Status::try_from(t.status) {
        Ok(api::Status::Running) if paused => "PAUSED",
        Ok(api::Status::Running) => "RUNNING",
        Ok(api::Status::Created) => "CREATED",
        Ok(api::Status::Stopped) => "STOPPED",
        _ => "UNKNOWN",
    }
}

fn ls_json(t: &api::Task, paused: bool, output: &ListFormat) -> Value {
    json!({
        "Task": output.id(&t.container_id),
        "Pid": t.pid,
        "Status": status(t, paused),
    })
}

const LS_COLUMNS: &[(&str, &str)] = &[("Task", "TASK"), ("Pid", "PID"), ("Status", "STATUS")];
const LS_TABLE: &str = "table {{.Task}}\t{{.Pid}}\t{{.Status}}";

async fn ls(ctx: &Context, output: &ListFormat) -> Result<(), Error> {
    let mut tasks = ctx
        .tasks()
        .list(ctx.req(api::ListTasksRequest {}))
        .await?
        .into_inner()
        .tasks;
    tasks.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    // Tasks say running; the container's state says whether it is paused.
    let paused: HashSet<String> = ctx
        .containers()
        .list(ctx.req(capi::ListContainersRequest {}))
        .await?
        .into_inner()
        .containers
        .into_iter()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.paused))
        .map(|c| c.id)
        .collect();
    let objects: Vec<Value> = tasks
        .iter()
        .map(|t| ls_json(t, paused.contains(&t.container_id), output))
        .collect();
    output.print_keyed("Task", LS_TABLE, LS_COLUMNS, &objects)
}

const PS_COLUMNS: &[(&str, &str)] = &[("Pid", "PID"), ("Info", "INFO")];
const PS_TABLE: &str = "table {{.Pid}}\t{{.Info}}";

/// The processes, with the command line as ctr's INFO (runc's shim puts its own details
/// there; berth's runtime reports what runs).
fn ps_json(p: &api::ProcessInfo) -> Value {
    json!({
        "Pid": p.pid,
        "Info": if p.command.is_empty() { "-" } else { p.command.as_str() },
    })
}

async fn ps(ctx: &Context, output: &ListFormat, container: String) -> Result<(), Error> {
    let processes = ctx
        .tasks()
        .list_pids(ctx.req(api::ListPidsRequest {
            container_id: container,
            ps_args: None,
        }))
        .await?
        .into_inner()
        .processes;
    let objects: Vec<Value> = processes.iter().map(ps_json).collect();
    output.print_keyed("Pid", PS_TABLE, PS_COLUMNS, &objects)
}

/// The metrics as JSON: bytes and nanoseconds, whatever the cgroup version.
fn metrics_json(m: &api::Metrics) -> Value {
    json!({
        "ID": m.container_id,
        "Timestamp": format::rfc3339(m.timestamp.as_ref()),
        "CgroupVersion": m.cgroup_version,
        "Cgroup": m.cgroup,
        "Memory": m.memory.as_ref().map(|x| json!({
            "Usage": x.usage,
            "Limit": x.limit,
            "MaxUsage": x.max_usage,
            "Cache": x.cache,
            "SwapUsage": x.swap_usage,
            "SwapLimit": x.swap_limit,
        })),
        "CPU": m.cpu.as_ref().map(|x| json!({
            "UsageNsec": x.usage_nsec,
            "UserNsec": x.user_nsec,
            "SystemNsec": x.system_nsec,
            "PerCPUNsec": x.per_cpu_nsec,
            "NrPeriods": x.nr_periods,
            "NrThrottled": x.nr_throttled,
            "ThrottledNsec": x.throttled_nsec,
        })),
        "Pids": m.pids.as_ref().map(|x| json!({"Current": x.current, "Limit": x.limit})),
    })
}

/// ctr's table: the task and the time, then one metric a line under the kernel's names of
/// the cgroup version (v1: memory.usage_in_bytes…, v2: memory.usage…).
fn metrics_table(m: &api::Metrics) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    if m.cgroup_version == 2 {
        if let Some(p) = &m.pids {
            row("pids.current", p.current.to_string());
            row("pids.limit", p.limit.to_string());
        }
        if let Some(c) = &m.cpu {
            row("cpu.usage_usec", (c.usage_nsec / 1000).to_string());
            row("cpu.user_usec", (c.user_nsec / 1000).to_string());
            row("cpu.system_usec", (c.system_nsec / 1000).to_string());
            row("cpu.nr_periods", c.nr_periods.to_string());
            row("cpu.nr_throttled", c.nr_throttled.to_string());
            row("cpu.throttled_usec", (c.throttled_nsec / 1000).to_string());
        }
        if let Some(x) = &m.memory {
            row("memory.usage", x.usage.to_string());
            row("memory.usage_limit", x.limit.to_string());
            row("memory.swap_usage", x.swap_usage.to_string());
            row("memory.swap_limit", x.swap_limit.to_string());
        }
    } else {
        if let Some(x) = &m.memory {
            row("memory.usage_in_bytes", x.usage.to_string());
            row("memory.limit_in_bytes", x.limit.to_string());
            row("memory.stat.cache", x.cache.to_string());
        }
        if let Some(c) = &m.cpu {
            row("cpuacct.usage", c.usage_nsec.to_string());
            let per_cpu: Vec<String> = c.per_cpu_nsec.iter().map(u64::to_string).collect();
            row("cpuacct.usage_percpu", format!("[{}]", per_cpu.join(" ")));
        }
        if let Some(p) = &m.pids {
            row("pids.current", p.current.to_string());
            row("pids.limit", p.limit.to_string());
        }
    }
    let head = format::table(&[
        vec!["ID".into(), "TIMESTAMP".into()],
        vec![
            m.container_id.clone(),
            format::go_time(m.timestamp.as_ref()),
        ],
    ]);
    let body: Vec<Vec<String>> = std::iter::once(("METRIC".to_string(), "VALUE".to_string()))
        .chain(rows)
        .map(|(k, v)| vec![k, v])
        .collect();
    format!("{head}\n{}", format::table(&body))
}

async fn metrics(ctx: &Context, format: &str, container: String) -> Result<(), Error> {
    let m = ctx
        .tasks()
        .metrics(ctx.req(api::MetricsRequest {
            container_id: container,
        }))
        .await?
        .into_inner()
        .metrics
        .unwrap_or_default();
    match format.trim() {
        "table" => print!("{}", metrics_table(&m)),
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&metrics_json(&m)).unwrap_or_default()
        ),
        template => {
            let t = Format::parse(template).map_err(Error::Local)?;
            println!("{}", t.render(&metrics_json(&m)).map_err(Error::Local)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::prost_types::Timestamp;

    fn metrics(version: u32) -> api::Metrics {
        api::Metrics {
            container_id: "abc".into(),
            timestamp: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            cgroup_version: version,
            cgroup: "/berth/default-abc".into(),
            memory: Some(api::MemoryMetrics {
                usage: 4096,
                limit: 67_108_864,
                cache: 8,
                ..Default::default()
            }),
            cpu: Some(api::CpuMetrics {
                usage_nsec: 3_000_000,
                per_cpu_nsec: vec![1_000_000, 2_000_000],
                ..Default::default()
            }),
            pids: Some(api::PidsMetrics {
                current: 1,
                limit: 8,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn v1_metrics_read_like_ctr() {
        assert_eq!(
            metrics_table(&metrics(1)),
            "ID    TIMESTAMP\n\
             abc   2023-11-14 22:13:20.000000005 +0000 UTC\n\
             \n\
             METRIC                  VALUE\n\
             memory.usage_in_bytes   4096\n\
             memory.limit_in_bytes   67108864\n\
             memory.stat.cache       8\n\
             cpuacct.usage           3000000\n\
             cpuacct.usage_percpu    [1000000 2000000]\n\
             pids.current            1\n\
             pids.limit              8\n"
        );
    }

    #[test]
    fn v2_metrics_use_v2_names_and_microseconds() {
        let t = metrics_table(&metrics(2));
        let row = |k: &str, v: &str| t.lines().any(|l| l.split_whitespace().eq([k, v]));
        assert!(row("cpu.usage_usec", "3000"), "{t}");
        assert!(row("memory.usage_limit", "67108864"), "{t}");
        assert!(row("pids.limit", "8"), "{t}");
        assert!(!t.contains("cpuacct"), "{t}");
        let mut none = metrics(2);
        none.memory = None;
        assert!(!metrics_table(&none).contains("memory."));
    }

    #[test]
    fn metrics_json_and_templates() {
        let j = metrics_json(&metrics(1));
        assert_eq!(j["Memory"]["Limit"], 67_108_864);
        assert_eq!(j["Pids"]["Current"], 1);
        assert_eq!(j["CPU"]["PerCPUNsec"], json!([1_000_000, 2_000_000]));
        let t = Format::parse("{{.Memory.Usage}}/{{.Pids.Limit}}").unwrap();
        assert_eq!(t.render(&j).unwrap(), "4096/8");
        let mut m = metrics(1);
        m.pids = None;
        assert_eq!(metrics_json(&m)["Pids"], Value::Null);
    }

    #[test]
    fn tasks_and_processes_read_like_ctr() {
        let t = api::Task {
            container_id: "0123456789abcdef".into(),
            pid: 42,
            status: api::Status::Running as i32,
            exit: None,
        };
        let objects = [
            ls_json(&t, false, &ListFormat::default()),
            ls_json(&t, true, &ListFormat::default()),
        ];
        assert_eq!(
            ListFormat::default()
                .render_keyed("Task", LS_TABLE, LS_COLUMNS, &objects)
                .unwrap(),
            "TASK           PID   STATUS\n0123456789ab   42    RUNNING\n0123456789ab   42    PAUSED\n"
        );
        let full = ListFormat {
            no_trunc: true,
            ..Default::default()
        };
        assert_eq!(ls_json(&t, false, &full)["Task"], "0123456789abcdef");
        let ps = [
            ps_json(&api::ProcessInfo {
                pid: 7,
                command: "sleep 1000".into(),
            }),
            ps_json(&api::ProcessInfo {
                pid: 9,
                command: String::new(),
            }),
        ];
        assert_eq!(
            ListFormat::default()
                .render_keyed("Pid", PS_TABLE, PS_COLUMNS, &ps)
                .unwrap(),
            "PID   INFO\n7     sleep 1000\n9     -\n"
        );
    }
}
