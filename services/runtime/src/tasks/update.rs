//! `update` (Containers.Update): new memory, cpu and pids limits and restart policy of a
//! container, checked as at create, stored in its config and spec (the next start uses
//! them), and set on the cgroup of a running task by its shim (`update` request). A shim
//! older than that request is refused with a FailedPrecondition that says to restart the
//! container ([`crate::shim::refusal`]), as for `pause`.

use super::Tasks;
use crate::error::{Error, Result};
use crate::lifecycle::Policy;
use crate::shim::{Request as ShimRequest, Status as ShimStatus};
use crate::spec;
use berth_api::containers::v1::UpdateContainerRequest;
use berth_shim::protocol::Limits;

impl Tasks {
    /// Containers.Update; answers Docker's warnings (none).
    pub async fn update_container(
        &self,
        ns: &str,
        r: &UpdateContainerRequest,
    ) -> Result<Vec<String>> {
        let c = self.store.resolve(ns, &r.id)?;
        let _guard = self.locks.lock(ns, &c.id).await;
        let mut config = c.config.clone().unwrap_or_default();
        let mut limits = Limits::default();
        if let Some(m) = r.memory {
            config.memory = m;
            limits.memory = Some(if m == 0 { -1 } else { m });
        }
        if let Some(n) = r.nano_cpus {
            config.nano_cpus = n;
            limits.cpu_quota = Some(spec::cpu_quota(n));
            limits.cpu_period = Some(spec::cpu_period());
        }
        update_cpu(r, &mut config, &mut limits)?;
        if let Some(p) = r.pids_limit {
            config.pids_limit = p.max(0);
            limits.pids = Some(p.max(0));
        }
        if let Some(policy) = &r.restart_policy {
            Policy::validate(Some(policy))?;
            if config.auto_remove && !matches!(Policy::of(Some(policy)), Policy::No) {
                return Err(Error::InvalidArgument(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container"
                        .into(),
                ));
            }
            config.restart_policy = Some(policy.clone());
        }
        let spec = spec::with_limits(&c.spec, &config, self.containers.spec_options())?;
        let running = self
            .task_state(ns, &c.id)
            .await?
            .is_some_and(|t| t.status != ShimStatus::Stopped);
        if running && limits != Limits::default() {
            match self
                .shim(ns, &c.id)
                .call(&ShimRequest::Update(limits))
                .await?
            {
                Some(answer) if answer.ok => {}
                Some(answer) => {
                    return Err(crate::shim::refusal(&c.id, answer, "", "update its limits"))
                }
                None => {} // ended meanwhile: the stored limits apply at its next start
            }
        }
        self.store.update(ns, &c.id, |stored| {
            stored.config = Some(config.clone());
            stored.spec = spec.clone();
        })?;
        tracing::info!(container = %c.id, "container updated");
        self.events.publish_container(ns, &c.id, "update", &[]);
        Ok(Vec::new())
    }
}

/// The CPU shares, CFS quota/period and cpusets of an update: into the config (checked with
/// the rest by [`spec::with_limits`]) and the live limits. A value back to its default sets
/// the cgroup's default (1024 shares, no quota, a 100 ms period, every online cpu and node).
fn update_cpu(
    r: &UpdateContainerRequest,
    config: &mut berth_api::containers::v1::ContainerConfig,
    limits: &mut Limits,
) -> Result<()> {
    if let Some(s) = r.cpu_shares {
        config.cpu_shares = s;
        limits.cpu_shares = Some(crate::limits::cpu_shares(s)?.unwrap_or(1024));
    }
    if let Some(q) = r.cpu_quota {
        config.cpu_quota = q;
        limits.cpu_quota = Some(if q <= 0 { -1 } else { q });
    }
    if let Some(p) = r.cpu_period {
        config.cpu_period = p;
        limits.cpu_period = Some(if p <= 0 { spec::cpu_period() } else { p as u64 });
    }
    let online = |file: &str| {
        std::fs::read_to_string(file)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "0".into())
    };
    if let Some(c) = &r.cpuset_cpus {
        config.cpuset_cpus = c.clone();
        limits.cpuset_cpus = Some(
            crate::limits::cpuset(c, "cpuset-cpus")?
                .unwrap_or_else(|| online("/sys/devices/system/cpu/online")),
        );
    }
    if let Some(m) = &r.cpuset_mems {
        config.cpuset_mems = m.clone();
        limits.cpuset_mems = Some(
            crate::limits::cpuset(m, "cpuset-mems")?
                .unwrap_or_else(|| online("/sys/devices/system/node/online")),
        );
    }
    Ok(())
}
