//! `pause` and `unpause`: the container's cgroup frozen and thawed (v1 freezer, v2
//! `cgroup.freeze`). A paused container stays running (its state says `paused`); a signal
//! sent to it (kill, stop, rm -f) thaws it so that the signal is acted on, as with Docker.

use crate::error::{Error, Result};
use crate::lifecycle::{state_of, STATUS_RUNNING};
use crate::Runtime;
use berth_shim::protocol::Status as ShimStatus;

impl Runtime {
    /// The cgroup of a container's task, from its bundle's spec.
    pub(crate) fn task_cgroup(&self, ns: &str, id: &str) -> Result<String> {
        let path = self
            .bundle(ns, id)
            .cgroups_path()
            .ok_or_else(|| Error::FailedPrecondition(format!("Container {id} is not running")))?;
        berth_shim::cgroup::relative_path(&path)
            .map_err(|e| Error::FailedPrecondition(format!("container {id}: {e}")))
    }

    async fn set_frozen(&self, ns: &str, id: &str, frozen: bool) -> Result<()> {
        let rel = self.task_cgroup(ns, id)?;
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            berth_shim::cgroup::ContainerCgroup::load(&rel).set_frozen(frozen)
        })
        .await
        .map_err(|e| Error::FailedPrecondition(format!("container {id}: {e}")))?
        .map_err(|e| Error::FailedPrecondition(format!("container {id}: {e}")))
    }

    /// Tasks.Pause.
    pub async fn pause_container(&self, ns: &str, reference: &str) -> Result<()> {
        let id = self.task_id(ns, reference)?;
        let _guard = self.lock(ns, &id).await;
        let running = self
            .task_state(ns, &id)
            .await?
            .is_some_and(|t| t.status == ShimStatus::Running);
        let st = self
            .store
            .get(ns, &id)?
            .map(|c| state_of(&c))
            .unwrap_or_default();
        if !running || st.status != STATUS_RUNNING {
            return Err(Error::FailedPrecondition(format!(
                "Container {id} is not running"
            )));
        }
        if st.paused {
            return Err(Error::FailedPrecondition(format!(
                "Container {id} is already paused"
            )));
        }
        self.record_frozen(ns, &id, true).await
    }

    /// Freezes or thaws a container's task, records it in its state, and says so
    /// (`pause`/`unpause` events).
    async fn record_frozen(&self, ns: &str, id: &str, frozen: bool) -> Result<()> {
        self.set_frozen(ns, id, frozen).await?;
        self.update_state(ns, id, |s| s.paused = frozen)?;
        let what = if frozen { "pause" } else { "unpause" };
        self.publish_container(ns, id, what, &[]);
        tracing::info!(container = %id, "container {what}d");
        Ok(())
    }

    /// Tasks.Resume.
    pub async fn resume_container(&self, ns: &str, reference: &str) -> Result<()> {
        let id = self.task_id(ns, reference)?;
        let _guard = self.lock(ns, &id).await;
        if !self.is_paused(ns, &id) {
            return Err(Error::FailedPrecondition(format!(
                "Container {id} is not paused"
            )));
        }
        self.record_frozen(ns, &id, false).await
    }

    /// After a signal: a paused container is thawed so that it acts on it.
    pub(crate) async fn thaw_if_paused(&self, ns: &str, id: &str) {
        if !self.is_paused(ns, id) {
            return;
        }
        if let Err(e) = self.record_frozen(ns, id, false).await {
            tracing::warn!(container = %id, error = %e, "cannot thaw a paused container");
        }
    }

    /// Whether a container is paused (exec is refused then, as Docker does).
    pub(crate) fn is_paused(&self, ns: &str, id: &str) -> bool {
        matches!(self.store.get(ns, id), Ok(Some(c)) if state_of(&c).paused)
    }
}
