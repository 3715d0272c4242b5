//! What a container's task uses: its processes (`Tasks.ListPids`, `berth task ps`; with
//! `ps_args` Docker's `top`, [`super::ps`]) and its cgroup's figures (`Tasks.Metrics`,
//! `berth task metrics`) with the host's of the same moment ([`super::host_figures`]).
//!
//! Both are asked of the task's shim, which owns the container's cgroup (`pids` and `stats`
//! requests; the cgroup v1/v2 difference stays in the shim), so another OCI runtime behind
//! the shim would do. A task that was created but not started has its init in the cgroup
//! already, so it is listed too. A shim older than these requests is refused with a
//! FailedPrecondition that says to restart the container ([`crate::shim::refusal`]).

use super::host_figures::HostFigures;
use super::ps::ps_table;
use super::Tasks;
use crate::error::Result;
use crate::shim::{Request as ShimRequest, Response as ShimResponse, Stats, Status as ShimStatus};
use berth_api::tasks::v1 as api;
use std::time::SystemTime;

impl Tasks {
    /// Asks the shim of a container whose task is created or running; its id, its init's
    /// host pid and the answer. `action` names what the request is for, in the error when the
    /// shim is too old for it.
    async fn ask_live_shim(
        &self,
        ns: &str,
        reference: &str,
        request: ShimRequest,
        action: &str,
    ) -> Result<(String, u32, ShimResponse)> {
        let id = self.task_id(ns, reference)?;
        let Some(task) = self
            .task_state(ns, &id)
            .await?
            .filter(|t| t.status != ShimStatus::Stopped)
        else {
            return Err(super::not_running(&id));
        };
        match self.shim(ns, &id).call(&request).await? {
            Some(answer) if answer.ok => Ok((id, task.pid, answer)),
            Some(answer) => Err(crate::shim::refusal(
                &id,
                answer,
                "reading its cgroup: ",
                action,
            )),
            None => Err(super::not_running(&id)),
        }
    }

    /// Tasks.ListPids: every process of the container's cgroup, by pid; with `ps_args`, also
    /// the host's `ps` output on them (Docker's `top`).
    pub async fn task_processes(
        &self,
        ns: &str,
        reference: &str,
        ps_args: Option<&str>,
    ) -> Result<api::ListPidsResponse> {
        let (_, _, answer) = self
            .ask_live_shim(ns, reference, ShimRequest::Pids, "list its processes")
            .await?;
        let mut pids = answer.pids.unwrap_or_default();
        pids.sort_unstable();
        let processes: Vec<api::ProcessInfo> = pids
            .into_iter()
            .map(|pid| api::ProcessInfo {
                pid: pid as u32,
                command: std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|raw| command_line(&raw))
                    .unwrap_or_default(),
            })
            .collect();
        let Some(ps_args) = ps_args else {
            return Ok(api::ListPidsResponse {
                processes,
                ..Default::default()
            });
        };
        let host_pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
        let table = ps_table(ps_args, &host_pids).await?;
        Ok(api::ListPidsResponse {
            processes,
            titles: table.titles,
            rows: table
                .rows
                .into_iter()
                .map(|fields| api::PsRow { fields })
                .collect(),
        })
    }

    /// Tasks.Metrics: what the container's cgroup uses now, with the host's figures and the
    /// container's interfaces read right after.
    pub async fn task_metrics(&self, ns: &str, reference: &str) -> Result<api::Metrics> {
        let (id, init_pid, answer) = self
            .ask_live_shim(ns, reference, ShimRequest::Stats, "read its metrics")
            .await?;
        let stats = answer.stats.map(|s| *s).unwrap_or_default();
        let rel = answer.cgroup.unwrap_or_default();
        let mut metrics = metrics_to_api(&id, &rel, &stats, SystemTime::now());
        let host = tokio::task::spawn_blocking(move || HostFigures::read(init_pid))
            .await
            .unwrap_or_default();
        host.fill(&mut metrics);
        Ok(metrics)
    }
}

/// `/proc/PID/cmdline` as one line: its arguments joined by spaces.
fn command_line(raw: &[u8]) -> String {
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn metrics_to_api(id: &str, rel: &str, s: &Stats, now: SystemTime) -> api::Metrics {
    api::Metrics {
        container_id: id.to_string(),
        timestamp: Some(prost_types::Timestamp::from(now)),
        cgroup_version: if s.v2 { 2 } else { 1 },
        cgroup: format!("/{rel}"),
        memory: s.memory.as_ref().map(|m| api::MemoryMetrics {
            usage: m.usage,
            limit: m.limit,
            max_usage: m.max_usage,
            cache: m.cache,
            swap_usage: m.swap_usage,
            swap_limit: m.swap_limit,
        }),
        cpu: s.cpu.as_ref().map(|c| api::CpuMetrics {
            usage_nsec: c.usage,
            user_nsec: c.user,
            system_nsec: c.system,
            per_cpu_nsec: c.per_cpu.clone(),
            nr_periods: c.nr_periods,
            nr_throttled: c.nr_throttled,
            throttled_nsec: c.throttled,
        }),
        pids: s.pids.as_ref().map(|p| api::PidsMetrics {
            current: p.current,
            limit: p.limit,
        }),
        blkio: s
            .blkio
            .iter()
            .flatten()
            .map(|d| api::BlkioDevice {
                major: d.major,
                minor: d.minor,
                read_bytes: d.read_bytes,
                write_bytes: d.write_bytes,
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_shim::protocol::{BlkioDevice, Cpu, Memory, Pids};

    #[test]
    fn command_lines() {
        assert_eq!(command_line(b"sleep\x001000\x00"), "sleep 1000");
        assert_eq!(command_line(b"sh\x00-c\x00echo hi\x00"), "sh -c echo hi");
        assert_eq!(command_line(b""), "");
    }

    #[test]
    fn metrics_convert() {
        let s = Stats {
            v2: false,
            memory: Some(Memory {
                usage: 1,
                limit: 2,
                ..Default::default()
            }),
            cpu: Some(Cpu {
                usage: 3,
                per_cpu: vec![1, 2],
                ..Default::default()
            }),
            pids: Some(Pids {
                current: 4,
                limit: 0,
            }),
            blkio: Some(vec![BlkioDevice {
                major: 8,
                minor: 0,
                read_bytes: 7,
                write_bytes: 9,
            }]),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::new(5, 6);
        let m = metrics_to_api("abc", "berth/default-abc", &s, at);
        assert_eq!(m.cgroup_version, 1);
        assert_eq!(m.cgroup, "/berth/default-abc");
        assert_eq!(m.timestamp.unwrap().seconds, 5);
        assert_eq!(m.memory.unwrap().limit, 2);
        assert_eq!(m.cpu.unwrap().per_cpu_nsec, [1, 2]);
        assert_eq!(m.pids.unwrap().current, 4);
        assert_eq!((m.blkio[0].major, m.blkio[0].write_bytes), (8, 9));
        let none = metrics_to_api("abc", "x", &Stats::default(), at);
        assert!(none.memory.is_none() && none.cpu.is_none() && none.pids.is_none());
    }
}
