//! `pause` and `unpause`: the container's cgroup frozen and thawed by its shim (`pause` and
//! `resume` requests; v1 freezer, v2 `cgroup.freeze`). A paused container stays running (its state says `paused`); a signal
//! sent to it (kill, stop, rm -f) thaws it so that the signal is acted on, as with Docker.
//!
//! A shim started by a berth-shim older than these requests does not know them: pausing
//! such a container is refused with a FailedPrecondition that says to restart it
//! ([`crate::shim::refusal`]).

use super::Tasks;
use crate::error::{Error, Result};
use crate::lifecycle::{is_paused, state_of, update_state, STATUS_RUNNING};
use crate::shim::{Request as ShimRequest, Status as ShimStatus};

impl Tasks {
    /// Asks the task's shim to freeze or thaw its cgroup (the shim owns it, and is not in it,
    /// so it answers while the container is frozen).
    async fn set_frozen(&self, ns: &str, id: &str, frozen: bool) -> Result<()> {
        let request = if frozen {
            ShimRequest::Pause
        } else {
            ShimRequest::Resume
        };
        match self.shim(ns, id).call(&request).await? {
            Some(answer) if answer.ok => Ok(()),
            Some(answer) => {
                let action = if frozen { "pause it" } else { "unpause it" };
                Err(crate::shim::refusal(id, answer, "", action))
            }
            None => Err(super::not_running(id)),
        }
    }

    /// Tasks.Pause.
    pub async fn pause_container(&self, ns: &str, reference: &str) -> Result<()> {
        let id = self.task_id(ns, reference)?;
        let _guard = self.locks.lock(ns, &id).await;
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
        update_state(&self.store, ns, id, |s| s.paused = frozen)?;
        let what = if frozen { "pause" } else { "unpause" };
        self.events.publish_container(ns, id, what, &[]);
        tracing::info!(container = %id, "container {what}d");
        Ok(())
    }

    /// Tasks.Resume.
    pub async fn resume_container(&self, ns: &str, reference: &str) -> Result<()> {
        let id = self.task_id(ns, reference)?;
        let _guard = self.locks.lock(ns, &id).await;
        if !is_paused(&self.store, ns, &id) {
            return Err(Error::FailedPrecondition(format!(
                "Container {id} is not paused"
            )));
        }
        self.record_frozen(ns, &id, false).await
    }

    /// After a signal: a paused container is thawed so that it acts on it.
    pub(crate) async fn thaw_if_paused(&self, ns: &str, id: &str) {
        if !is_paused(&self.store, ns, id) {
            return;
        }
        if let Err(e) = self.record_frozen(ns, id, false).await {
            tracing::warn!(container = %id, error = %e, "cannot thaw a paused container");
        }
    }
}
