//! ContainerStats and ListContainerStats: each container's CPU and memory from the runtime's
//! Tasks.Metrics (its cgroup, v1 or v2) while it runs, and its writable layer's size from
//! Containers.Sizes. A container that does not run has no CPU or memory figures, only its
//! attributes and writable layer, as the CRI allows.

use crate::objects::{self, label, map_of};
use crate::sandboxes::{self, containers, get, tasks};
use crate::{from_service, req, Backends};
use berth_api::containers::v1 as api;
use berth_api::cri::v1 as cri;
use berth_api::tasks::v1 as tapi;
use std::collections::HashMap;
use tonic::Status;

pub(crate) fn value(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// The stats of the berth containers `of`.
async fn stats_of(b: &Backends, of: &[api::Container]) -> Result<Vec<cri::ContainerStats>, Status> {
    Ok(measure(b, of).await?.into_iter().map(|(s, _)| s).collect())
}

/// Now, in the CRI's nanoseconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Tasks.Metrics of `c` while it runs (None otherwise, or when its cgroup is gone).
pub(crate) async fn metrics_of(b: &Backends, c: &api::Container) -> Option<tapi::Metrics> {
    if objects::status(c) != "running" {
        return None;
    }
    tasks(b)
        .metrics(req(tapi::MetricsRequest {
            container_id: c.id.clone(),
        }))
        .await
        .ok()
        .and_then(|r| r.into_inner().metrics)
}

/// The stats of the berth containers `of`, each with the runtime's metrics it was built
/// from (for what a pod sums).
pub(crate) async fn measure(
    b: &Backends,
    of: &[api::Container],
) -> Result<Vec<(cri::ContainerStats, Option<tapi::Metrics>)>, Status> {
    if of.is_empty() {
        return Ok(Vec::new());
    }
    let sizes: HashMap<String, api::ContainerSize> = containers(b)
        .sizes(req(api::ContainerSizesRequest {
            ids: of.iter().map(|c| c.id.clone()).collect(),
        }))
        .await
        .map_err(|e| from_service("measuring writable layers", e))?
        .into_inner()
        .sizes;
    let now = now();
    let mut out = Vec::new();
    for c in of {
        let metrics = metrics_of(b, c).await;
        out.push((
            container_stats(c, metrics.clone(), sizes.get(&c.id), now),
            metrics,
        ));
    }
    Ok(out)
}

/// The CRI's CPU usage of cgroup figures.
pub(crate) fn cpu_usage(cpu: &tapi::CpuMetrics, now: i64) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: value(cpu.usage_nsec),
        usage_nano_cores: None,
    }
}

/// The CRI's memory usage of cgroup figures.
pub(crate) fn memory_usage(m: &tapi::MemoryMetrics, now: i64) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp: now,
        // The working set as the usage without the page cache (memory.stat's cache/file).
        working_set_bytes: value(m.usage.saturating_sub(m.cache)),
        usage_bytes: value(m.usage),
        ..Default::default()
    }
}

/// One container's stats at `now` (nanoseconds since the epoch).
fn container_stats(
    c: &api::Container,
    metrics: Option<tapi::Metrics>,
    size: Option<&api::ContainerSize>,
    now: i64,
) -> cri::ContainerStats {
    let cpu = metrics
        .as_ref()
        .and_then(|m| m.cpu.as_ref())
        .map(|cpu| cpu_usage(cpu, now));
    let memory = metrics
        .as_ref()
        .and_then(|m| m.memory.as_ref())
        .map(|m| memory_usage(m, now));
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: label(c, objects::NAME).into(),
                attempt: objects::attempt(c),
            }),
            labels: map_of(c, objects::LABELS),
            annotations: map_of(c, objects::ANNOTATIONS),
        }),
        cpu,
        memory,
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: now,
            used_bytes: value(size.map(|s| s.rw.max(0) as u64).unwrap_or(0)),
            ..Default::default()
        }),
        swap: None,
    }
}

/// ContainerStats of container `id`.
pub async fn one(b: &Backends, id: &str) -> Result<cri::ContainerStats, Status> {
    let c = get(b, id, objects::KIND_CONTAINER).await?;
    stats_of(b, std::slice::from_ref(&c))
        .await?
        .pop()
        .ok_or_else(|| Status::internal("no stats for the container"))
}

/// ListContainerStats with the kubelet's filter.
pub async fn list(
    b: &Backends,
    filter: Option<cri::ContainerStatsFilter>,
) -> Result<Vec<cri::ContainerStats>, Status> {
    let filter = filter.unwrap_or_default();
    let chosen: Vec<api::Container> = sandboxes::list(b, objects::KIND_CONTAINER)
        .await?
        .into_iter()
        .filter(|c| objects::matches(c, &filter.id, &filter.label_selector))
        .filter(|c| objects::in_pod(c, &filter.pod_sandbox_id))
        .collect();
    stats_of(b, &chosen).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_from_metrics_and_sizes() {
        let c = api::Container {
            id: "c1".into(),
            labels: HashMap::from([(objects::NAME.to_string(), "app".to_string())]),
            ..Default::default()
        };
        let m = tapi::Metrics {
            cpu: Some(tapi::CpuMetrics {
                usage_nsec: 42,
                ..Default::default()
            }),
            memory: Some(tapi::MemoryMetrics {
                usage: 100,
                cache: 30,
                ..Default::default()
            }),
            ..Default::default()
        };
        let size = api::ContainerSize { rw: 7, root_fs: 9 };
        let s = container_stats(&c, Some(m), Some(&size), 5);
        assert_eq!(s.cpu.unwrap().usage_core_nano_seconds.unwrap().value, 42);
        assert_eq!(s.memory.unwrap().working_set_bytes.unwrap().value, 70);
        assert_eq!(s.writable_layer.unwrap().used_bytes.unwrap().value, 7);
        assert_eq!(s.attributes.unwrap().metadata.unwrap().name, "app");
        let idle = container_stats(&c, None, None, 5);
        assert!(idle.cpu.is_none() && idle.memory.is_none());
    }
}
