//! Linux resources of CRI containers: the kubelet's `LinuxContainerResources` as berth's
//! container limits (memory, CPU shares, CFS quota and period, cpusets, OOM score, hugepage
//! limits — the runtime refuses a page size the host lacks), the pod's
//! cgroup parent, the same figures back in ContainerStatus, and UpdateContainerResources as
//! the runtime's Containers.Update, which sets a running container's cgroup live.
//!
//! The OOM score: a host that refuses to lower `oom_score_adj` (no CAP_SYS_RESOURCE) leaves
//! the process at the runtime's own value, as containerd's `restrict_oom_score_adj`; the
//! request never fails for it.

use crate::{from_service, req, Backends};
use berth_api::containers::v1 as api;
use berth_api::cri::v1 as cri;
use tonic::Status;

/// The OOM score of sandboxes (containerd's default for its pause containers).
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// The berth limits of `r`, into `out`.
pub fn apply(out: &mut api::ContainerConfig, r: Option<&cri::LinuxContainerResources>) {
    let Some(r) = r else { return };
    out.memory = r.memory_limit_in_bytes.max(0);
    out.cpu_shares = r.cpu_shares.max(0);
    out.cpu_quota = r.cpu_quota;
    out.cpu_period = r.cpu_period.max(0);
    out.cpuset_cpus = r.cpuset_cpus.clone();
    out.cpuset_mems = r.cpuset_mems.clone();
    out.oom_score_adj = r.oom_score_adj.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    out.hugepage_limits = r
        .hugepage_limits
        .iter()
        .map(|h| (h.page_size.clone(), h.limit))
        .collect();
}

/// The resources of a berth container as ContainerStatus reports them.
pub fn status(c: &api::Container) -> Option<cri::ContainerResources> {
    let cfg = c.config.as_ref()?;
    let (quota, period) = if cfg.nano_cpus != 0 {
        (cfg.nano_cpus / 10_000, 100_000)
    } else {
        (cfg.cpu_quota, cfg.cpu_period)
    };
    Some(cri::ContainerResources {
        linux: Some(cri::LinuxContainerResources {
            cpu_period: period,
            cpu_quota: quota,
            cpu_shares: cfg.cpu_shares,
            memory_limit_in_bytes: cfg.memory,
            oom_score_adj: cfg.oom_score_adj as i64,
            cpuset_cpus: cfg.cpuset_cpus.clone(),
            cpuset_mems: cfg.cpuset_mems.clone(),
            hugepage_limits: hugepage_limits(cfg),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The hugepage limits of `cfg`, by page size.
fn hugepage_limits(cfg: &api::ContainerConfig) -> Vec<cri::HugepageLimit> {
    let mut limits: Vec<cri::HugepageLimit> = cfg
        .hugepage_limits
        .iter()
        .map(|(size, limit)| cri::HugepageLimit {
            page_size: size.clone(),
            limit: *limit,
        })
        .collect();
    limits.sort_by(|a, b| a.page_size.cmp(&b.page_size));
    limits
}

/// The Containers.Update request of UpdateContainerResources: every figure the kubelet
/// manages (a zero is "back to the default").
pub fn update_request(id: &str, r: &cri::LinuxContainerResources) -> api::UpdateContainerRequest {
    api::UpdateContainerRequest {
        id: id.to_string(),
        memory: Some(r.memory_limit_in_bytes.max(0)),
        cpu_shares: Some(r.cpu_shares.max(0)),
        cpu_quota: Some(r.cpu_quota),
        cpu_period: Some(r.cpu_period.max(0)),
        cpuset_cpus: Some(r.cpuset_cpus.clone()),
        cpuset_mems: Some(r.cpuset_mems.clone()),
        ..Default::default()
    }
}

/// UpdateContainerResources of CRI container `id`.
pub async fn update(
    b: &Backends,
    id: &str,
    linux: Option<cri::LinuxContainerResources>,
) -> Result<(), Status> {
    crate::sandboxes::get(b, id, crate::objects::KIND_CONTAINER).await?;
    let Some(r) = linux else {
        // Windows resources only, or nothing: nothing to change on Linux.
        return Ok(());
    };
    crate::sandboxes::containers(b)
        .update(req(update_request(id, &r)))
        .await
        .map_err(|e| from_service(&format!("updating the resources of container {id}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_round_trip() {
        let r = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 1000,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![
                cri::HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
                cri::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 20,
                },
            ],
            ..Default::default()
        };
        let mut cfg = api::ContainerConfig::default();
        apply(&mut cfg, Some(&r));
        assert_eq!(
            (cfg.cpu_shares, cfg.cpu_quota, cfg.memory),
            (512, 50_000, 64 << 20)
        );
        assert_eq!(cfg.oom_score_adj, 1000);
        let c = api::Container {
            config: Some(cfg),
            ..Default::default()
        };
        assert_eq!(status(&c).unwrap().linux.unwrap(), r);
        let u = update_request("x", &r);
        assert_eq!((u.memory, u.cpu_shares), (Some(64 << 20), Some(512)));
        assert_eq!(u.cpuset_cpus.as_deref(), Some("0"));
    }
}
