//! ExecSync: a command run in a running container to its end, its output collected, over
//! the runtime's Tasks.Exec stream (no tty, no stdin). A `timeout` (seconds, 0 = none) that
//! passes ends the call with DeadlineExceeded, as the kubelet's probes expect, and the runtime
//! kills the command (ExecStart.timeout).

use crate::objects;
use crate::sandboxes::{get, tasks};
use crate::{from_service, req, Backends};
use berth_api::cri::v1 as cri;
use berth_api::tasks::v1 as api;
use futures::StreamExt;
use std::time::Duration;
use tonic::Status;

/// How long after the deadline the runtime's kill may take to end the exec.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Most output kept per stream; more is dropped (the kubelet caps probe output too).
const MAX_OUTPUT: usize = 16 << 20;

/// ExecSync of `request`.
pub async fn exec_sync(
    b: &Backends,
    request: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Status> {
    if request.cmd.is_empty() {
        return Err(Status::invalid_argument(
            "ExecSync needs a command (cmd is empty)",
        ));
    }
    let c = get(b, &request.container_id, objects::KIND_CONTAINER).await?;
    if objects::status(&c) != "running" {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            request.container_id
        )));
    }
    let start = api::ExecRequest {
        item: Some(api::exec_request::Item::Start(api::ExecStart {
            container_id: c.id.clone(),
            args: request.cmd.clone(),
            // The runtime kills it at the deadline, even once this call has answered.
            timeout: u32::try_from(request.timeout).unwrap_or(0),
            ..Default::default()
        })),
    };
    let run = collect(b, start);
    let timeout = u64::try_from(request.timeout).unwrap_or(0);
    if timeout == 0 {
        return run.await;
    }
    // The runtime kills the command at the deadline; its exit (137) then ends the stream, so
    // the answer comes once it is gone. A grace period covers a runtime that does not answer.
    let began = std::time::Instant::now();
    let deadline = Duration::from_secs(timeout);
    let timed_out = || {
        Status::deadline_exceeded(format!(
            "command {:?} in container {} timed out after {timeout}s",
            request.cmd, request.container_id
        ))
    };
    match tokio::time::timeout(deadline + KILL_GRACE, run).await {
        Ok(_) if began.elapsed() >= deadline => Err(timed_out()),
        Ok(done) => done,
        Err(_) => Err(timed_out()),
    }
}

/// Runs the exec to its exit, collecting stdout and stderr.
async fn collect(b: &Backends, start: api::ExecRequest) -> Result<cri::ExecSyncResponse, Status> {
    let mut stream = tasks(b)
        .exec(req(futures::stream::iter([start])))
        .await
        .map_err(|e| from_service("exec", e))?
        .into_inner();
    let mut out = cri::ExecSyncResponse::default();
    while let Some(msg) = stream.next().await {
        match msg.map_err(|e| from_service("exec", e))?.item {
            Some(api::exec_response::Item::Stdout(d)) => keep(&mut out.stdout, &d),
            Some(api::exec_response::Item::Stderr(d)) => keep(&mut out.stderr, &d),
            Some(api::exec_response::Item::Exit(e)) => {
                out.exit_code = e.exit_code;
                return Ok(out);
            }
            _ => {}
        }
    }
    Err(Status::unavailable(
        "the runtime ended the exec without its exit status",
    ))
}

fn keep(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped() {
        let mut buf = vec![0u8; MAX_OUTPUT - 2];
        keep(&mut buf, b"abcd");
        assert_eq!(buf.len(), MAX_OUTPUT);
        assert_eq!(&buf[MAX_OUTPUT - 2..], b"ab");
    }
}
