//! PodSandboxStats and ListPodSandboxStats: a pod's CPU, memory, network and process count,
//! with the ContainerStats of its containers (from [`crate::stats`]).
//!
//! berth has no pod cgroup: each container of a pod, the sandbox's pause included, has a
//! cgroup of its own. The pod's CPU and memory are therefore the sums of those cgroups'
//! figures (what one pod cgroup holding them all would report), and its process count the
//! sum of their `pids.current`. Its network is the sandbox's: the pod's containers join the
//! sandbox's network namespace, whose interfaces (but `lo`) Tasks.Metrics reads.

use crate::objects::{self, label, map_of};
use crate::sandboxes::{self, get, members};
use crate::stats::{self, cpu_usage, measure, memory_usage, metrics_of, value};
use crate::Backends;
use berth_api::containers::v1 as api;
use berth_api::cri::v1 as cri;
use berth_api::tasks::v1 as tapi;
use tonic::Status;

/// The interface a pod's traffic goes through, reported as its `default_interface`.
const DEFAULT_INTERFACE: &str = "eth0";

/// PodSandboxStats of sandbox `id`.
pub async fn one(b: &Backends, id: &str) -> Result<cri::PodSandboxStats, Status> {
    let sandbox = get(b, id, objects::KIND_SANDBOX).await?;
    let containers = members(b, &sandbox.id).await?;
    pod_stats(b, &sandbox, &containers).await
}

/// ListPodSandboxStats with the kubelet's filter (id prefix, label selector).
pub async fn list(
    b: &Backends,
    filter: Option<cri::PodSandboxStatsFilter>,
) -> Result<Vec<cri::PodSandboxStats>, Status> {
    let filter = filter.unwrap_or_default();
    // One listing of the containers for every pod.
    let all = sandboxes::list(b, objects::KIND_CONTAINER).await?;
    let mut out = Vec::new();
    for sandbox in sandboxes::list(b, objects::KIND_SANDBOX)
        .await?
        .iter()
        .filter(|c| objects::matches(c, &filter.id, &filter.label_selector))
    {
        let containers: Vec<api::Container> = all
            .iter()
            .filter(|c| label(c, objects::SANDBOX_ID) == sandbox.id)
            .cloned()
            .collect();
        out.push(pod_stats(b, sandbox, &containers).await?);
    }
    Ok(out)
}

/// The stats of `sandbox` and its `containers`, measured now.
async fn pod_stats(
    b: &Backends,
    sandbox: &api::Container,
    containers: &[api::Container],
) -> Result<cri::PodSandboxStats, Status> {
    let pause = metrics_of(b, sandbox).await;
    let measured = measure(b, containers).await?;
    let now = stats::now();
    let mut all: Vec<&tapi::Metrics> = measured.iter().filter_map(|(_, m)| m.as_ref()).collect();
    all.extend(pause.as_ref());
    Ok(cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: sandbox.id.clone(),
            metadata: sandboxes::status(sandbox).metadata,
            labels: map_of(sandbox, objects::LABELS),
            annotations: map_of(sandbox, objects::ANNOTATIONS),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: summed_cpu(&all).map(|c| cpu_usage(&c, now)),
            memory: summed_memory(&all).map(|m| memory_usage(&m, now)),
            network: pause.as_ref().and_then(|m| network(&m.networks, now)),
            process: summed_pids(&all).map(|count| cri::ProcessUsage {
                timestamp: now,
                process_count: value(count),
            }),
            containers: measured.into_iter().map(|(s, _)| s).collect(),
        }),
        windows: None,
    })
}

/// The CPU figures of the pod's cgroups added up; None when none has them.
fn summed_cpu(all: &[&tapi::Metrics]) -> Option<tapi::CpuMetrics> {
    let cpus: Vec<&tapi::CpuMetrics> = all.iter().filter_map(|m| m.cpu.as_ref()).collect();
    (!cpus.is_empty()).then(|| tapi::CpuMetrics {
        usage_nsec: cpus.iter().map(|c| c.usage_nsec).sum(),
        user_nsec: cpus.iter().map(|c| c.user_nsec).sum(),
        system_nsec: cpus.iter().map(|c| c.system_nsec).sum(),
        ..Default::default()
    })
}

/// The memory figures of the pod's cgroups added up; None when none has them.
fn summed_memory(all: &[&tapi::Metrics]) -> Option<tapi::MemoryMetrics> {
    let mems: Vec<&tapi::MemoryMetrics> = all.iter().filter_map(|m| m.memory.as_ref()).collect();
    (!mems.is_empty()).then(|| tapi::MemoryMetrics {
        usage: mems.iter().map(|m| m.usage).sum(),
        cache: mems.iter().map(|m| m.cache).sum(),
        ..Default::default()
    })
}

/// The processes of the pod's cgroups; None when none has the pids controller.
fn summed_pids(all: &[&tapi::Metrics]) -> Option<u64> {
    let pids: Vec<u64> = all
        .iter()
        .filter_map(|m| m.pids.as_ref())
        .map(|p| p.current)
        .collect();
    (!pids.is_empty()).then(|| pids.iter().sum())
}

/// The sandbox's interfaces as the CRI's network usage: `eth0` (else the first) as the
/// default, the others in `interfaces`; None without any (host network, `lo` only).
fn network(interfaces: &[tapi::NetworkMetrics], now: i64) -> Option<cri::NetworkUsage> {
    let usage = |n: &tapi::NetworkMetrics| cri::NetworkInterfaceUsage {
        name: n.name.clone(),
        rx_bytes: value(n.rx_bytes),
        rx_errors: value(n.rx_errors),
        tx_bytes: value(n.tx_bytes),
        tx_errors: value(n.tx_errors),
    };
    let default = interfaces
        .iter()
        .position(|n| n.name == DEFAULT_INTERFACE)
        .or((!interfaces.is_empty()).then_some(0))?;
    Some(cri::NetworkUsage {
        timestamp: now,
        default_interface: Some(usage(&interfaces[default])),
        interfaces: interfaces
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != default)
            .map(|(_, n)| usage(n))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(cpu: u64, mem: u64, cache: u64, pids: u64) -> tapi::Metrics {
        tapi::Metrics {
            cpu: Some(tapi::CpuMetrics {
                usage_nsec: cpu,
                ..Default::default()
            }),
            memory: Some(tapi::MemoryMetrics {
                usage: mem,
                cache,
                ..Default::default()
            }),
            pids: Some(tapi::PidsMetrics {
                current: pids,
                limit: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_sums_its_cgroups() {
        let (pause, app) = (metrics(10, 100, 10, 1), metrics(5, 50, 20, 3));
        let all = [&pause, &app];
        assert_eq!(summed_cpu(&all).unwrap().usage_nsec, 15);
        let m = memory_usage(&summed_memory(&all).unwrap(), 1);
        assert_eq!(m.usage_bytes.unwrap().value, 150);
        assert_eq!(m.working_set_bytes.unwrap().value, 120);
        assert_eq!(summed_pids(&all), Some(4));
        let bare = tapi::Metrics::default();
        assert!(summed_cpu(&[&bare]).is_none() && summed_pids(&[&bare]).is_none());
        assert!(summed_memory(&[]).is_none());
    }

    #[test]
    fn the_default_interface_is_eth0() {
        let n = |name: &str, rx: u64| tapi::NetworkMetrics {
            name: name.into(),
            rx_bytes: rx,
            ..Default::default()
        };
        let usage = network(&[n("net1", 1), n("eth0", 2)], 7).unwrap();
        let default = usage.default_interface.unwrap();
        assert_eq!(
            (default.name.as_str(), default.rx_bytes.unwrap().value),
            ("eth0", 2)
        );
        assert_eq!(usage.interfaces.len(), 1);
        assert_eq!(usage.interfaces[0].name, "net1");
        assert_eq!(
            network(&[n("net1", 1)], 7)
                .unwrap()
                .default_interface
                .unwrap()
                .name,
            "net1"
        );
        assert!(network(&[], 7).is_none());
    }
}
