//! ReopenContainerLog: the kubelet rotates a container's log by renaming the file, then asks
//! the runtime to reopen it; the runtime's Tasks.ReopenLog makes the container's shim open the
//! log path anew, and answers once it has, so nothing written after the answer lands in the
//! renamed file.

use crate::objects;
use crate::sandboxes::{get, tasks};
use crate::{from_service, req, Backends};
use berth_api::tasks::v1 as api;
use tonic::Status;

/// ReopenContainerLog of container `id`: FailedPrecondition when it does not run (as
/// containerd answers), NotFound when there is no such container.
pub async fn reopen(b: &Backends, id: &str) -> Result<(), Status> {
    let c = get(b, id, objects::KIND_CONTAINER).await?;
    tasks(b)
        .reopen_log(req(api::ReopenLogRequest {
            container_id: c.id.clone(),
        }))
        .await
        .map_err(|e| from_service(&format!("reopening the log of container {id}"), e))?;
    Ok(())
}
