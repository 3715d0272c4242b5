//! Tasks.ReopenLog: after something outside berth moved a running container's log file away
//! (the kubelet rotating it, logrotate), the shim opens the log's path again, so what the
//! container writes next goes to a new file at the path.

use super::{not_running, Tasks};
use crate::error::Result;
use crate::shim::{Request as ShimRequest, Status as ShimStatus};

impl Tasks {
    /// Asks the shim of a running container to reopen its log's path; answered once it did.
    /// A container that does not run is FailedPrecondition (containerd's answer too): its
    /// shim writes nothing more, and the next start opens the path anyway.
    pub async fn reopen_log(&self, ns: &str, reference: &str) -> Result<()> {
        let id = self.task_id(ns, reference)?;
        let running = self
            .task_state(ns, &id)
            .await?
            .is_some_and(|t| t.status == ShimStatus::Running);
        if !running {
            return Err(not_running(&id));
        }
        match self.shim(ns, &id).call(&ShimRequest::ReopenLog).await? {
            Some(answer) if answer.ok => Ok(()),
            Some(answer) => Err(crate::shim::refusal(
                &id,
                answer,
                "reopening its log: ",
                "reopen its log",
            )),
            None => Err(not_running(&id)),
        }
    }
}
