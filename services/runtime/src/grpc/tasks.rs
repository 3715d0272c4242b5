//! The Tasks gRPC service: a thin shell over the task operations of [`crate::tasks`] (and the
//! pause, usage and logs rooms), plus the relays that carry a client's attach and exec
//! streams to and from the shim as frames.

use crate::error::{Error, Result};
use crate::lifecycle::{is_paused, recorded_exit};
use crate::shim::{self, ExitStatus, Request as ShimRequest, Status as ShimStatus};
use crate::tasks::Tasks as TaskRoom;
use crate::tasks::{exit_to_api, not_running, unknown_exit, TaskState};
use berth_api::tasks::v1 as api;
use berth_api::tasks::v1::tasks_server::Tasks;
use berth_core::grpc::namespace;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tonic::{Request, Response, Status, Streaming};

fn task_to_api(id: &str, state: &TaskState) -> api::Task {
    let status = match state.status {
        ShimStatus::Created => api::Status::Created,
        ShimStatus::Running => api::Status::Running,
        ShimStatus::Stopped => api::Status::Stopped,
    };
    api::Task {
        container_id: id.to_string(),
        pid: state.pid,
        status: status as i32,
        exit: state.exit.as_ref().map(exit_to_api),
    }
}

/// Aborts the stdin relay when the output stream ends or its client goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A client's message on an attach or exec stream: the `start` that opens it, then input.
/// Attach and exec are relayed by the same code over their two request types.
trait ClientMessage: Send + 'static {
    /// What the opening message carries.
    type Start;
    /// The start, if this message is one.
    fn into_start(self) -> Option<Self::Start>;
    /// The shim frame of this message's input: stdin bytes, the end of stdin, or a terminal
    /// size; None for anything else.
    fn into_frame(self) -> Option<Vec<u8>>;
}

/// A message back to an attach or exec client: output, or the exit status that ends it.
trait OutputMessage: Send + 'static {
    fn stdout(data: Vec<u8>) -> Self;
    fn stderr(data: Vec<u8>) -> Self;
    fn exit(exit: api::ExitStatus) -> Self;
}

/// Implements [`ClientMessage`] and [`OutputMessage`] for one stream's generated types (attach's
/// or exec's), whose `oneof` items have the same variants in modules of their own.
macro_rules! relay_messages {
    ($request:ident, $request_item:ident, $start:ident, $response:ident, $response_item:ident) => {
        impl ClientMessage for api::$request {
            type Start = api::$start;

            fn into_start(self) -> Option<api::$start> {
                match self.item {
                    Some(api::$request_item::Item::Start(start)) => Some(start),
                    _ => None,
                }
            }

            fn into_frame(self) -> Option<Vec<u8>> {
                use api::$request_item::Item;
                match self.item {
                    Some(Item::Stdin(d)) => input_frame(Some(d), false, None),
                    Some(Item::CloseStdin(c)) => input_frame(None, c, None),
                    Some(Item::Resize(r)) => input_frame(None, false, Some((r.width, r.height))),
                    _ => None,
                }
            }
        }

        impl OutputMessage for api::$response {
            fn stdout(data: Vec<u8>) -> Self {
                api::$response {
                    item: Some(api::$response_item::Item::Stdout(data)),
                }
            }
            fn stderr(data: Vec<u8>) -> Self {
                api::$response {
                    item: Some(api::$response_item::Item::Stderr(data)),
                }
            }
            fn exit(exit: api::ExitStatus) -> Self {
                api::$response {
                    item: Some(api::$response_item::Item::Exit(exit)),
                }
            }
        }
    };
}

relay_messages!(
    AttachRequest,
    attach_request,
    AttachStart,
    AttachResponse,
    attach_response
);
relay_messages!(
    ExecRequest,
    exec_request,
    ExecStart,
    ExecResponse,
    exec_response
);

/// The shim frame of client input: stdin bytes, the end of stdin, or a terminal size.
fn input_frame(stdin: Option<Vec<u8>>, close: bool, resize: Option<(u32, u32)>) -> Option<Vec<u8>> {
    match (stdin, close, resize) {
        (Some(data), _, _) if !data.is_empty() => {
            Some(shim::encode_frame(shim::FRAME_STDIN, &data))
        }
        (_, true, _) => Some(shim::encode_frame(shim::FRAME_CLOSE_STDIN, &[])),
        (_, _, Some((w, h))) => Some(shim::encode_frame(
            shim::FRAME_RESIZE,
            &shim::resize_payload(w, h),
        )),
        _ => None,
    }
}

/// The opening message of an attach or exec stream (`verb`), which must be its `start`
/// (`start_names` says what that start carries).
async fn first_start<M: ClientMessage>(
    client: &mut Streaming<M>,
    verb: &str,
    start_names: &str,
) -> Result<M::Start, Status> {
    let first = client.message().await?.ok_or_else(|| {
        Status::invalid_argument(format!("{verb}: the first message must name the container"))
    })?;
    first.into_start().ok_or_else(|| {
        Status::invalid_argument(format!(
            "{verb}: the first message must be `start` with {start_names}"
        ))
    })
}

/// Relays a client's attach or exec messages to the shim as frames until the client is done.
/// `close_stdin`: the end of the client's input (its `close_stdin`, its side's end, or its
/// going away) closes the process's stdin; otherwise stdin stays open after it.
async fn relay_input<M: ClientMessage>(
    mut client: Streaming<M>,
    mut shim: tokio::net::unix::OwnedWriteHalf,
    close_stdin: bool,
) {
    let close_frame = shim::encode_frame(shim::FRAME_CLOSE_STDIN, &[]);
    loop {
        let frame = match client.message().await {
            Ok(Some(msg)) => match msg.into_frame() {
                Some(f) if f == close_frame && !close_stdin => continue,
                Some(f) => f,
                None => continue,
            },
            Ok(None) | Err(_) => {
                if close_stdin {
                    let _ = shim.write_all(&close_frame).await;
                }
                return;
            }
        };
        if shim.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// Relays the shim's output and exit frames to the client until the exit status.
/// `context` starts the messages of errors ("attach to container ID"); `ended` says what a
/// shim that ends without an exit frame means: the exit status to report, or the error.
fn relay_output<R: OutputMessage>(
    mut output: BufReader<OwnedReadHalf>,
    context: String,
    ended: impl FnOnce() -> Result<ExitStatus, Status> + Send + 'static,
) -> impl Stream<Item = Result<R, Status>> + Send {
    async_stream::try_stream! {
        loop {
            let frame = shim::read_frame(&mut output).await.map_err(|e| {
                Status::unavailable(format!("{context}: the shim connection broke: {e}"))
            })?;
            let Some(frame) = frame else {
                let exit = ended()?;
                yield R::exit(exit_to_api(&exit));
                break;
            };
            match frame.kind {
                shim::FRAME_STDOUT => yield R::stdout(frame.payload),
                shim::FRAME_STDERR => yield R::stderr(frame.payload),
                shim::FRAME_EXIT => {
                    let exit: ExitStatus = serde_json::from_slice(&frame.payload).map_err(|e| {
                        Status::internal(format!("{context}: the shim sent an unreadable exit status: {e}"))
                    })?;
                    yield R::exit(exit_to_api(&exit));
                    break;
                }
                _ => {}
            }
        }
    }
}

/// Whether container `id`'s config asks that the end of an attach's input close its stdin.
fn stdin_once(store: &crate::metadata::Store, ns: &str, id: &str) -> bool {
    store
        .get(ns, id)
        .ok()
        .flatten()
        .and_then(|c| c.config)
        .is_some_and(|c| c.stdin_once)
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<api::AttachResponse, Status>> + Send>>;
type ExecStream = Pin<Box<dyn Stream<Item = Result<api::ExecResponse, Status>> + Send>>;

/// The Tasks gRPC service.
#[derive(Debug, Clone)]
pub struct TasksService {
    tasks: Arc<TaskRoom>,
}

impl TasksService {
    pub fn new(tasks: Arc<TaskRoom>) -> Self {
        TasksService { tasks }
    }

    async fn attach_stream(
        &self,
        ns: String,
        mut client: Streaming<api::AttachRequest>,
    ) -> Result<AttachStream, Status> {
        let start = first_start(&mut client, "attach", "the container id").await?;
        let rt = &self.tasks;
        let id = rt.task_id(&ns, &start.container_id)?;
        let bundle = rt.bundle(&ns, &id);
        if !bundle.exists() {
            return Err(Error::NoTask(id).into());
        }
        let Some(attached) = rt.shim(&ns, &id).attach(start.stdin).await? else {
            return Err(Error::FailedPrecondition(
                "You cannot attach to a stopped container, start it first".to_string(),
            )
            .into());
        };
        rt.note_attach(&ns, &id);
        // Docker's StdinOnce: the input's end closes the container's stdin only when the
        // container asks for it; an attach to a `run -d -i` container leaves it open.
        let close_stdin = start.stdin && stdin_once(rt.store(), &ns, &id);
        let shim::Attached { output, input } = attached;
        let relay = AbortOnDrop(tokio::spawn(relay_input(client, input, close_stdin)));
        let tasks = self.tasks.clone();
        let run = (
            self.tasks.clone(),
            ns.clone(),
            id.clone(),
            bundle.init_pid(),
        );
        let context = format!("attach to container {id}");
        // The shim ended without an exit frame: it died, or the task was deleted. Report what
        // it left.
        let output = relay_output(output, context, move || {
            Ok(bundle
                .exit_status()
                .ok()
                .flatten()
                .or_else(|| recorded_exit(tasks.store(), &ns, &id))
                .unwrap_or_else(unknown_exit))
        });
        let stream = async_stream::try_stream! {
            let _relay = relay;
            for await message in output {
                let message: api::AttachResponse = message?;
                // The client reads the container's state next (`start -a` then inspect):
                // the exit is there before the client hears of it.
                if let (Some(api::attach_response::Item::Exit(_)), (tasks, ns, id, Some(pid))) =
                    (&message.item, &run)
                {
                    tasks.await_recorded_exit(ns, id, *pid).await?;
                }
                yield message;
            }
        };
        Ok(Box::pin(stream))
    }
}
impl TasksService {
    async fn exec_stream(
        &self,
        ns: String,
        mut client: Streaming<api::ExecRequest>,
    ) -> Result<ExecStream, Status> {
        use api::exec_response::Item as Out;
        let start = first_start(&mut client, "exec", "the container and command").await?;
        if start.args.is_empty() {
            return Err(Error::InvalidArgument("exec: no command given".into()).into());
        }
        let rt = &self.tasks;
        let id = rt.task_id(&ns, &start.container_id)?;
        match rt.task_state(&ns, &id).await? {
            Some(t) if t.status == ShimStatus::Running => {}
            _ => return Err(not_running(&id).into()),
        }
        if is_paused(rt.store(), &ns, &id) {
            return Err(Error::FailedPrecondition(format!(
                "Container {id} is paused, unpause the container before exec"
            ))
            .into());
        }
        let request = ShimRequest::Exec {
            args: start.args.clone(),
            env: start.env.clone(),
            cwd: start.working_dir.clone(),
            user: start.user.clone(),
            terminal: start.tty,
            stdin: start.stdin,
            detach: start.detach,
        };
        let opened = match rt.shim(&ns, &id).open(&request).await {
            Ok(Some(o)) => o,
            Ok(None) => return Err(not_running(&id).into()),
            Err(Error::Shim { message, exit_code }) if exit_code != 126 && exit_code != 127 => {
                // A refusal without 126/127: the container stopped meanwhile, or the shim
                // cannot exec (an older shim that has no `exec` op).
                return match rt.task_state(&ns, &id).await? {
                    Some(t) if t.status == ShimStatus::Running => Err(Status::new(
                        tonic::Code::Internal,
                        format!("exec in container {id}: {message}"),
                    )),
                    _ => Err(not_running(&id).into()),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let (answer, attached) = opened;
        let pid = shim::pid_of(&answer);
        rt.events().publish_container(
            &ns,
            &id,
            "exec_start",
            &[
                ("execID", pid.to_string()),
                ("command", start.args.join(" ")),
            ],
        );
        if start.timeout > 0 {
            kill_after(pid, start.timeout);
        }
        let detach = start.detach;
        let shim::Attached { output, input } = attached;
        let relay = if detach {
            None
        } else {
            Some(AbortOnDrop(tokio::spawn(relay_input(
                client,
                input,
                start.stdin,
            ))))
        };
        let context = format!("exec in container {id}");
        let stream = async_stream::try_stream! {
            let _relay = relay;
            yield api::ExecResponse { item: Some(Out::Pid(pid)) };
            if !detach {
                let ended = Status::unavailable(format!(
                    "{context}: the shim ended the connection without an exit status"
                ));
                for await message in relay_output(output, context, move || Err(ended)) {
                    yield message?;
                }
            }
        };
        Ok(Box::pin(stream))
    }
}

/// Kills the exec'd process `pid` (SIGKILL) once `seconds` have passed if it still runs: the
/// same process (its start time unchanged), not one that took its pid since.
fn kill_after(pid: u32, seconds: u32) {
    let Some(started) = start_time(pid) else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(seconds.into())).await;
        if start_time(pid) == Some(started) {
            let target = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        }
    });
}

/// A process's start time (field 22 of `/proc/<pid>/stat`, counted after the command's
/// closing parenthesis, which may itself hold spaces or parentheses).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(
        &self,
        req: Request<api::CreateTaskRequest>,
    ) -> Result<Response<api::CreateTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let pid = self
            .tasks
            .create_task(&ns, &req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::CreateTaskResponse { pid }))
    }

    async fn start(
        &self,
        req: Request<api::StartTaskRequest>,
    ) -> Result<Response<api::StartTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let pid = self
            .tasks
            .start_container(&ns, &req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::StartTaskResponse { pid }))
    }

    type AttachStream = AttachStream;

    async fn attach(
        &self,
        req: Request<Streaming<api::AttachRequest>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let ns = namespace(&req)?;
        let stream = self.attach_stream(ns, req.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn wait(
        &self,
        req: Request<api::WaitTaskRequest>,
    ) -> Result<Response<api::WaitTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let exit = self
            .tasks
            .wait_task(&ns, &req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::WaitTaskResponse {
            exit: Some(exit_to_api(&exit)),
        }))
    }

    async fn kill(
        &self,
        req: Request<api::KillTaskRequest>,
    ) -> Result<Response<api::KillTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        self.tasks
            .kill_task(&ns, &r.container_id, r.signal, r.all)
            .await?;
        Ok(Response::new(api::KillTaskResponse {}))
    }

    async fn resize(
        &self,
        req: Request<api::ResizeRequest>,
    ) -> Result<Response<api::ResizeResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        self.tasks
            .resize_task(&ns, &r.container_id, r.width, r.height)
            .await?;
        Ok(Response::new(api::ResizeResponse {}))
    }

    async fn get(
        &self,
        req: Request<api::GetTaskRequest>,
    ) -> Result<Response<api::GetTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let id = self.tasks.task_id(&ns, &req.get_ref().container_id)?;
        let state = match self.tasks.task_state(&ns, &id).await? {
            Some(state) => state,
            // The monitor deleted the task after its exit: it reads as stopped until the
            // container starts again.
            None => match recorded_exit(self.tasks.store(), &ns, &id) {
                Some(exit) => TaskState {
                    status: ShimStatus::Stopped,
                    pid: 0,
                    exit: Some(exit),
                    shim_alive: false,
                },
                None => return Err(Error::NoTask(id).into()),
            },
        };
        Ok(Response::new(api::GetTaskResponse {
            task: Some(task_to_api(&id, &state)),
        }))
    }

    async fn list(
        &self,
        req: Request<api::ListTasksRequest>,
    ) -> Result<Response<api::ListTasksResponse>, Status> {
        let ns = namespace(&req)?;
        let tasks = self
            .tasks
            .list_tasks(&ns)
            .await?
            .iter()
            .map(|(id, state)| task_to_api(id, state))
            .collect();
        Ok(Response::new(api::ListTasksResponse { tasks }))
    }

    async fn delete(
        &self,
        req: Request<api::DeleteTaskRequest>,
    ) -> Result<Response<api::DeleteTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let exit = self
            .tasks
            .delete_task(&ns, &req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::DeleteTaskResponse {
            exit: Some(exit_to_api(&exit)),
        }))
    }

    async fn stop(
        &self,
        req: Request<api::StopTaskRequest>,
    ) -> Result<Response<api::StopTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        let timeout = (r.has_timeout || r.timeout != 0).then_some(r.timeout);
        let exit = self
            .tasks
            .stop_container(&ns, &r.container_id, timeout)
            .await?;
        Ok(Response::new(api::StopTaskResponse {
            exit: Some(exit_to_api(&exit)),
        }))
    }

    type ExecStream = ExecStream;

    async fn exec(
        &self,
        req: Request<Streaming<api::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let ns = namespace(&req)?;
        let stream = self.exec_stream(ns, req.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn pause(
        &self,
        req: Request<api::PauseTaskRequest>,
    ) -> Result<Response<api::PauseTaskResponse>, Status> {
        let ns = namespace(&req)?;
        self.tasks
            .pause_container(&ns, &req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::PauseTaskResponse {}))
    }

    async fn resume(
        &self,
        req: Request<api::ResumeTaskRequest>,
    ) -> Result<Response<api::ResumeTaskResponse>, Status> {
        let ns = namespace(&req)?;
        self.tasks
            .resume_container(&ns, &req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::ResumeTaskResponse {}))
    }

    async fn list_pids(
        &self,
        req: Request<api::ListPidsRequest>,
    ) -> Result<Response<api::ListPidsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.get_ref();
        let answer = self
            .tasks
            .task_processes(&ns, &r.container_id, r.ps_args.as_deref())
            .await?;
        Ok(Response::new(answer))
    }

    async fn reopen_log(
        &self,
        req: Request<api::ReopenLogRequest>,
    ) -> Result<Response<api::ReopenLogResponse>, Status> {
        let ns = namespace(&req)?;
        self.tasks
            .reopen_log(&ns, &req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::ReopenLogResponse {}))
    }

    async fn metrics(
        &self,
        req: Request<api::MetricsRequest>,
    ) -> Result<Response<api::MetricsResponse>, Status> {
        let ns = namespace(&req)?;
        let metrics = self
            .tasks
            .task_metrics(&ns, &req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::MetricsResponse {
            metrics: Some(metrics),
        }))
    }

    type LogsStream = Pin<Box<dyn Stream<Item = Result<api::LogEntry, Status>> + Send>>;

    async fn logs(
        &self,
        req: Request<api::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let container = self.tasks.store().resolve(&ns, &r.container_id)?;
        // `--tail N`; a negative N means all, as Docker's "all".
        let tail = if (r.has_tail || r.tail > 0) && r.tail >= 0 {
            Some(usize::try_from(r.tail).unwrap_or(usize::MAX))
        } else {
            None
        };
        let stream =
            crate::logs::stream(self.tasks.logs().clone(), ns, container.id, r.follow, tail);
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn start_times_are_read_past_the_command() {
        let mine = start_time(std::process::id()).unwrap();
        assert!(mine > 0);
        assert_eq!(start_time(std::process::id()), Some(mine));
        assert_eq!(start_time(u32::MAX), None);
    }

    use super::*;

    #[test]
    fn tasks_convert() {
        let t = task_to_api(
            "abc",
            &TaskState {
                status: ShimStatus::Stopped,
                pid: 7,
                exit: Some(unknown_exit()),
                shim_alive: false,
            },
        );
        assert_eq!(t.status, api::Status::Stopped as i32);
        assert_eq!(t.exit.unwrap().exit_code, 255);
    }
}
