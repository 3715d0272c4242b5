//! A container's streams over a hijacked connection: `POST /containers/{id}/attach` and
//! `POST /containers/{id}/resize`, and the [`hijack`] and [`relay`] that exec's start shares.
//!
//! [`hijack`] answers Docker's way: `101 UPGRADED` (`Upgrade: tcp`) when the client asks for
//! an upgrade, as the docker CLI and docker-py do, then the raw connection both ways; an older
//! client that asks for none gets `200` and the output as the body. [`relay`] then carries the
//! client's input into an attach or exec gRPC stream (stdin, its end when the client
//! half-closes, the detach keys on a TTY) and the output back: raw with a TTY, else in
//! Docker's multiplexed frames (berth-docker's [`berth_docker::frame`]).

use crate::error::ApiError;
use crate::request::truthy;
use crate::request::{Path, Query};
use crate::Services;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_api::containers::v1::{self as capi, containers_client::ContainersClient};
use berth_api::tasks::v1::{self as tapi, tasks_client::TasksClient};
use berth_docker::{DetachKeys, DetachMatcher};
use http::{header, HeaderValue, StatusCode};
use serde::Deserialize;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// `/containers/{id}/attach` and `/containers/{id}/resize`.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::post;
    axum::Router::new()
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/resize", post(resize))
}

pub(crate) fn tasks(s: &Services) -> TasksClient<Channel> {
    TasksClient::new(s.runtime.clone())
}

pub(crate) fn containers(s: &Services) -> ContainersClient<Channel> {
    ContainersClient::new(s.runtime.clone())
}

/// The container named by a full id, an id prefix or a name.
pub(crate) async fn container(s: &Services, name: &str) -> Result<capi::Container, ApiError> {
    containers(s)
        .get(s.req(capi::GetContainerRequest { id: name.into() }))
        .await?
        .into_inner()
        .container
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No such container: {name}")))
}

/// The client's side of a hijacked connection.
pub(crate) type ClientInput = Pin<Box<dyn AsyncRead + Send>>;
pub(crate) type ClientOutput = Pin<Box<dyn AsyncWrite + Send>>;

/// Takes the connection over from HTTP and runs `session` on it once the answer is sent:
/// `101` and the raw connection when the client asked to upgrade, else `200` with the output
/// as the body (and no input).
pub(crate) fn hijack<F, Fut>(req: &mut Request, tty: bool, session: F) -> Response
where
    F: FnOnce(ClientInput, ClientOutput) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    let on_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    match on_upgrade.filter(|_| upgrade) {
        Some(on_upgrade) => {
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let io = hyper_util::rt::TokioIo::new(upgraded);
                        let (input, output) = tokio::io::split(io);
                        session(Box::pin(input), Box::pin(output)).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "the client did not upgrade"),
                }
            });
            let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
            resp
        }
        None => {
            let (ours, body) = tokio::io::duplex(64 << 10);
            tokio::spawn(session(Box::pin(tokio::io::empty()), Box::pin(ours)));
            let body = axum::body::Body::from_stream(tokio_util_reader(body));
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
    }
}

/// The bytes written into a duplex pipe, as a body stream.
fn tokio_util_reader(
    mut r: tokio::io::DuplexStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    async_stream::stream! {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => yield Ok(buf[..n].to_vec()),
                Err(e) => { yield Err(e); break; }
            }
        }
    }
}

/// What a message of an attach or exec stream carries back.
pub(crate) enum Part {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    Pid(u32),
    Nothing,
}

/// The attach and exec streams' messages, seen alike.
pub(crate) trait StreamMessages: Send + 'static {
    type Response: Send + 'static;
    fn stdin(data: Vec<u8>) -> Self;
    fn close_stdin() -> Self;
    fn part(r: Self::Response) -> Part;
}

impl StreamMessages for tapi::AttachRequest {
    type Response = tapi::AttachResponse;
    fn stdin(data: Vec<u8>) -> Self {
        use tapi::attach_request::Item;
        tapi::AttachRequest {
            item: Some(Item::Stdin(data)),
        }
    }
    fn close_stdin() -> Self {
        use tapi::attach_request::Item;
        tapi::AttachRequest {
            item: Some(Item::CloseStdin(true)),
        }
    }
    fn part(r: tapi::AttachResponse) -> Part {
        use tapi::attach_response::Item;
        match r.item {
            Some(Item::Stdout(b)) => Part::Stdout(b),
            Some(Item::Stderr(b)) => Part::Stderr(b),
            Some(Item::Exit(e)) => Part::Exit(e.exit_code),
            None => Part::Nothing,
        }
    }
}

impl StreamMessages for tapi::ExecRequest {
    type Response = tapi::ExecResponse;
    fn stdin(data: Vec<u8>) -> Self {
        use tapi::exec_request::Item;
        tapi::ExecRequest {
            item: Some(Item::Stdin(data)),
        }
    }
    fn close_stdin() -> Self {
        use tapi::exec_request::Item;
        tapi::ExecRequest {
            item: Some(Item::CloseStdin(true)),
        }
    }
    fn part(r: tapi::ExecResponse) -> Part {
        use tapi::exec_response::Item;
        match r.item {
            Some(Item::Stdout(b)) => Part::Stdout(b),
            Some(Item::Stderr(b)) => Part::Stderr(b),
            Some(Item::Exit(e)) => Part::Exit(e.exit_code),
            Some(Item::Pid(p)) => Part::Pid(p),
            None => Part::Nothing,
        }
    }
}

/// What the client asked to see and send on a hijacked stream.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Matched in the input when `stdin` and `tty`.
    pub detach_keys: DetachKeys,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The process exited with this code.
    Exited(i32),
    /// The client typed the detach keys.
    Detached,
    /// The client went away, or the stream broke, before the exit.
    Gone,
}

/// Relays the client's input into `tx` and `output` back until the process exits, the client
/// detaches or goes away. `observe` hears exec's pid and the exit, before the client does. `tx` stays open until then: its end
/// would end the runtime's side.
pub(crate) async fn relay<M: StreamMessages>(
    relay: Relay,
    input: ClientInput,
    mut client: ClientOutput,
    tx: mpsc::Sender<M>,
    mut output: tonic::Streaming<M::Response>,
    mut observe: impl FnMut(&Part) + Send,
) -> End {
    let detach = (relay.tty && relay.stdin).then(|| DetachMatcher::new(&relay.detach_keys));
    // The input's end is passed on as stdin's end; for an attach the runtime closes the
    // container's stdin with it only when its config has Docker's `StdinOnce`.
    let close = relay.stdin;
    let mut input_task = Box::pin(relay_input(input, tx.clone(), detach, relay.stdin, close));
    let mut input_done = false;
    loop {
        tokio::select! {
            detached = &mut input_task, if !input_done => {
                input_done = true;
                if detached {
                    return End::Detached;
                }
            }
            m = output.next() => {
                let part = match m {
                    Some(Ok(m)) => M::part(m),
                    _ => return End::Gone,
                };
                let bytes = match part {
                    Part::Stdout(b) if relay.stdout => out_bytes(relay.tty, berth_docker::STDOUT, b),
                    Part::Stderr(b) if relay.stderr => out_bytes(relay.tty, berth_docker::STDERR, b),
                    Part::Exit(code) => {
                        observe(&Part::Exit(code));
                        let _ = client.shutdown().await;
                        return End::Exited(code);
                    }
                    Part::Pid(pid) => { observe(&Part::Pid(pid)); continue; }
                    _ => continue,
                };
                if client.write_all(&bytes).await.is_err() || client.flush().await.is_err() {
                    return End::Gone;
                }
            }
        }
    }
}

pub(crate) fn out_bytes(tty: bool, stream: u8, b: Vec<u8>) -> Vec<u8> {
    if tty {
        b
    } else {
        berth_docker::frame(stream, &b)
    }
}

/// Sends the client's input on as stdin until it ends (then stdin's end, when attached) or
/// the detach keys come; whether they came. `close`: the input's end closes stdin.
async fn relay_input<M: StreamMessages>(
    mut input: ClientInput,
    tx: mpsc::Sender<M>,
    mut detach: Option<DetachMatcher>,
    stdin: bool,
    close: bool,
) -> bool {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !stdin {
            continue;
        }
        let (data, detached) = match detach.as_mut() {
            Some(m) => m.feed(&buf[..n]),
            None => (buf[..n].to_vec(), false),
        };
        if !data.is_empty() && tx.send(M::stdin(data)).await.is_err() {
            return false;
        }
        if detached {
            return true;
        }
    }
    if close {
        let _ = tx.send(M::close_stdin()).await;
    }
    false
}

#[derive(Debug, Deserialize)]
pub struct AttachQuery {
    stream: Option<String>,
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    logs: Option<String>,
    #[serde(rename = "detachKeys")]
    detach_keys: Option<String>,
}

/// `POST /containers/{id}/attach`: the container's stdio over the hijacked connection, from
/// before its start (`docker run` attaches, then starts) or while it runs.
pub async fn attach(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<AttachQuery>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let c = container(&s, &id).await?;
    let detach_keys = DetachKeys::parse_or_default(q.detach_keys.as_deref()).map_err(|_| {
        ApiError::bad_parameter(format!(
            "Invalid detach keys ({}) provided",
            q.detach_keys.clone().unwrap_or_default()
        ))
    })?;
    let config = c.config.clone().unwrap_or_default();
    let relay_opts = Relay {
        tty: config.tty,
        stdin: truthy(&q.stdin),
        stdout: truthy(&q.stdout),
        stderr: truthy(&q.stderr),
        detach_keys,
    };
    let past = if truthy(&q.logs) {
        crate::logs::past_output(&s, &c.id, config.tty, relay_opts.stdout, relay_opts.stderr)
            .await?
    } else {
        Vec::new()
    };
    let attached = if truthy(&q.stream) {
        match open_attach(&s, &c, relay_opts.stdin).await {
            Ok(a) => Some(a),
            // A process that cannot start (a missing binary): the attach of `docker run`
            // ends at once and the start that follows answers why, as Docker's does, so the
            // CLI reports it (and exits 127 or 126).
            Err(e) if !is_running(&c) && e.status == http::StatusCode::CONFLICT => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let s2 = s.clone();
    let auto_remove = config.auto_remove;
    let cid = c.id.clone();
    Ok(hijack(
        &mut req,
        config.tty,
        move |input, mut output| async move {
            if output.write_all(&past).await.is_err() {
                return;
            }
            let Some((tx, stream)) = attached else {
                let _ = output.shutdown().await;
                return;
            };
            let end = relay(relay_opts, input, output, tx, stream, |_| {}).await;
            tracing::debug!(container = %cid, ?end, "attach ended");
            if auto_remove {
                remove_after_exit(&s2, &cid, end).await;
            }
        },
    ))
}

pub(crate) fn is_running(c: &capi::Container) -> bool {
    c.state
        .as_ref()
        .is_some_and(|st| st.status == "running" || st.status == "restarting")
}

/// Tasks.Attach to the container, creating its task first when it has none (a container
/// attached before its start).
async fn open_attach(
    s: &Services,
    c: &capi::Container,
    stdin: bool,
) -> Result<
    (
        mpsc::Sender<tapi::AttachRequest>,
        tonic::Streaming<tapi::AttachResponse>,
    ),
    ApiError,
> {
    if !is_running(c) {
        match tasks(s)
            .create(s.req(tapi::CreateTaskRequest {
                container_id: c.id.clone(),
            }))
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (tx, rx) = mpsc::channel(32);
    let start = tapi::AttachRequest {
        item: Some(tapi::attach_request::Item::Start(tapi::AttachStart {
            container_id: c.id.clone(),
            stdin,
        })),
    };
    let _ = tx.send(start).await;
    let stream = tasks(s)
        .attach(s.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await?
        .into_inner();
    Ok((tx, stream))
}

/// An attached client removes an auto-remove container after its exit (the runtime leaves
/// that to the attached client, as `berth run --rm` does it): now when the client saw the
/// exit, else once the container exits.
async fn remove_after_exit(s: &Services, id: &str, end: End) {
    if !matches!(end, End::Exited(_)) {
        let _ = tasks(s)
            .wait(s.req(tapi::WaitTaskRequest {
                container_id: id.into(),
            }))
            .await;
    }
    let _ = tasks(s)
        .delete(s.req(tapi::DeleteTaskRequest {
            container_id: id.into(),
        }))
        .await;
    if let Err(e) = containers(s)
        .delete(s.req(capi::DeleteContainerRequest {
            id: id.into(),
            force: false,
            remove_volumes: false,
        }))
        .await
    {
        tracing::warn!(container = %id, error = %e, "cannot auto-remove the container");
    }
}

#[derive(Debug, Deserialize)]
pub struct ResizeQuery {
    h: Option<String>,
    w: Option<String>,
}

impl ResizeQuery {
    /// (width, height); Docker's 400 for a value that is not a number.
    pub(crate) fn size(&self) -> Result<(u32, u32), ApiError> {
        let num = |v: &Option<String>| -> Result<u32, ApiError> {
            match v.as_deref() {
                None | Some("") => Ok(0),
                Some(n) => n.parse().map_err(|_| {
                    ApiError::bad_parameter(format!("strconv.Atoi: parsing {n:?}: invalid syntax"))
                }),
            }
        };
        Ok((num(&self.w)?, num(&self.h)?))
    }
}

/// `POST /containers/{id}/resize?h=&w=`: the TTY's size.
pub async fn resize(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> Result<Response, ApiError> {
    let (width, height) = q.size()?;
    let c = container(&s, &id).await?;
    tasks(&s)
        .resize(s.req(tapi::ResizeRequest {
            container_id: c.id,
            width,
            height,
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}
