//! Exec and attach over the remote-command protocol: the client's streams (from
//! `berth_spdy::remotecommand::accept`) joined to the runtime's Tasks.Exec or Tasks.Attach
//! stream. The client's stdin goes to the process (its end closes the process's stdin — for
//! an attach only when the container is `stdin_once`, which the runtime decides), terminal
//! sizes become resizes, the process's output goes back on stdout/stderr, and the end is
//! reported on the error stream: an exec's exit code (`NonZeroExitCode` when not 0), an
//! attach's plain success once the container exited, or why the runtime failed.

use super::tokens::Streams;
use crate::sandboxes::tasks;
use crate::{req, Backends};
use berth_api::tasks::v1 as api;
use berth_spdy::remotecommand::{self, Channels, Outcome, RemoteCommand};
use berth_spdy::session::{Session, Stream};
use futures::StreamExt;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Most stdin bytes sent to the runtime in one message.
const STDIN_CHUNK: usize = 32 * 1024;

/// Input for the process, before it becomes an exec's or an attach's request.
#[derive(Debug)]
enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(api::ResizeRequest),
}

/// What the runtime sent back.
#[derive(Debug)]
enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    Other,
}

/// Runs `cmd` in container `container_id` for the client of `session`.
pub async fn exec(
    b: Arc<Backends>,
    container_id: String,
    cmd: Vec<String>,
    streams: Streams,
    session: Session,
) {
    let Some(command) = accept(session, streams).await else {
        return;
    };
    let start = api::ExecRequest {
        item: Some(api::exec_request::Item::Start(api::ExecStart {
            container_id,
            args: cmd,
            tty: streams.tty,
            stdin: streams.stdin,
            ..Default::default()
        })),
    };
    let to_request = |input| api::ExecRequest {
        item: Some(match input {
            Input::Stdin(d) => api::exec_request::Item::Stdin(d),
            Input::CloseStdin => api::exec_request::Item::CloseStdin(true),
            Input::Resize(r) => api::exec_request::Item::Resize(r),
        }),
    };
    let (requests, inputs) = request_stream(start, to_request);
    let output = tasks(&b).exec(req(requests)).await.map(|r| {
        r.into_inner().map(|m| {
            m.map(|m| match m.item {
                Some(api::exec_response::Item::Stdout(d)) => Output::Stdout(d),
                Some(api::exec_response::Item::Stderr(d)) => Output::Stderr(d),
                Some(api::exec_response::Item::Exit(e)) => Output::Exit(e.exit_code),
                _ => Output::Other,
            })
        })
    });
    match output {
        Ok(output) => relay(command, inputs, output, true).await,
        Err(e) => end(command, Outcome::Error(e.message().to_string())).await,
    }
}

/// Attaches the client of `session` to container `container_id`'s process.
pub async fn attach(b: Arc<Backends>, container_id: String, streams: Streams, session: Session) {
    let Some(command) = accept(session, streams).await else {
        return;
    };
    let start = api::AttachRequest {
        item: Some(api::attach_request::Item::Start(api::AttachStart {
            container_id,
            stdin: streams.stdin,
        })),
    };
    let to_request = |input| api::AttachRequest {
        item: Some(match input {
            Input::Stdin(d) => api::attach_request::Item::Stdin(d),
            Input::CloseStdin => api::attach_request::Item::CloseStdin(true),
            Input::Resize(r) => api::attach_request::Item::Resize(r),
        }),
    };
    let (requests, inputs) = request_stream(start, to_request);
    let output = tasks(&b).attach(req(requests)).await.map(|r| {
        r.into_inner().map(|m| {
            m.map(|m| match m.item {
                Some(api::attach_response::Item::Stdout(d)) => Output::Stdout(d),
                Some(api::attach_response::Item::Stderr(d)) => Output::Stderr(d),
                Some(api::attach_response::Item::Exit(e)) => Output::Exit(e.exit_code),
                None => Output::Other,
            })
        })
    });
    match output {
        Ok(output) => relay(command, inputs, output, false).await,
        Err(e) => end(command, Outcome::Error(e.message().to_string())).await,
    }
}

/// Waits for the client's streams; `None` (logged) when they never came.
async fn accept(session: Session, streams: Streams) -> Option<RemoteCommand> {
    let channels = Channels {
        stdin: streams.stdin,
        stdout: streams.stdout,
        stderr: streams.stderr,
        tty: streams.tty,
    };
    match remotecommand::accept(session, channels, super::STREAM_CREATION_TIMEOUT).await {
        Ok(command) => Some(command),
        Err(e) => {
            tracing::debug!(error = %e, "a CRI exec/attach client did not open its streams");
            None
        }
    }
}

/// The request stream for the runtime: `start`, then each [`Input`] sent on the returned
/// sender, made a request by `to_request`. It ends when the sender and its clones are gone.
fn request_stream<R: Send + 'static>(
    start: R,
    to_request: impl Fn(Input) -> R + Send + 'static,
) -> (
    impl tokio_stream::Stream<Item = R> + Send + 'static,
    mpsc::Sender<Input>,
) {
    let (tx, rx) = mpsc::channel(16);
    let requests =
        futures::stream::once(async move { start }).chain(ReceiverStream::new(rx).map(to_request));
    (requests, tx)
}

/// Joins the client's streams to the runtime's, until the process ends or the client leaves.
/// `exec`: report the exit code; else (attach) a success once the container exited.
async fn relay<S>(
    mut command: RemoteCommand,
    inputs: mpsc::Sender<Input>,
    mut output: S,
    exec: bool,
) where
    S: tokio_stream::Stream<Item = Result<Output, tonic::Status>> + Unpin,
{
    let stdin = command
        .stdin
        .take()
        .map(|s| tokio::spawn(copy_stdin(s, inputs.clone())));
    let resizes = command.resize.take().map(|mut sizes| {
        let inputs = inputs.clone();
        tokio::spawn(async move {
            while let Some(size) = sizes.recv().await {
                let resize = api::ResizeRequest {
                    container_id: String::new(),
                    width: u32::from(size.width),
                    height: u32::from(size.height),
                };
                if inputs.send(Input::Resize(resize)).await.is_err() {
                    return;
                }
            }
        })
    });
    let outcome = loop {
        let message = match output.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => break Some(Outcome::Error(e.message().to_string())),
            None => {
                break Some(Outcome::Error(
                    "the runtime ended the stream without the process's exit status".into(),
                ))
            }
        };
        let (target, data) = match message {
            Output::Stdout(d) => (command.stdout.as_mut(), d),
            Output::Stderr(d) => (command.stderr.as_mut(), d),
            Output::Exit(code) => break Some(Outcome::Exited(if exec { code } else { 0 })),
            Output::Other => continue,
        };
        if let Some(target) = target {
            if let Err(e) = target.write_all(&data).await {
                // The client is gone: dropping the runtime's stream detaches.
                tracing::debug!(error = %e, "a CRI exec/attach client went away");
                break None;
            }
        }
    };
    for task in [stdin, resizes].into_iter().flatten() {
        task.abort();
    }
    drop(inputs);
    if let Some(outcome) = outcome {
        end(command, outcome).await;
    }
}

/// Sends what the client writes on stdin to the runtime; its end closes the process's stdin.
async fn copy_stdin(mut stdin: Stream, inputs: mpsc::Sender<Input>) {
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if inputs.send(Input::Stdin(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = inputs.send(Input::CloseStdin).await;
}

/// Reports `outcome` on the error stream and closes the session.
async fn end(command: RemoteCommand, outcome: Outcome) {
    if let Err(e) = command.finish(outcome).await {
        tracing::debug!(error = %e, "the end of a CRI exec/attach did not reach its client");
    }
}
