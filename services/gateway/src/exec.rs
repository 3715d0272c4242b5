//! Docker's exec instances: `POST /containers/{id}/exec` makes one, `POST /exec/{id}/start`
//! runs it through Tasks.Exec (hijacked like attach, or detached), `POST /exec/{id}/resize`
//! sizes its TTY and `GET /exec/{id}/json` shows it.
//!
//! berth's runtime has no exec objects: an exec is one Tasks.Exec stream. So the instances live
//! here, in [`Execs`], between their create and start and after their exit (for the exit code
//! `docker exec` reads); bounded, so that no client can grow the gateway's memory without end.

use crate::error::{json_body, ApiError};
use crate::request::{take_json, Json, Path, Query};
use crate::streams::{container, hijack, is_running, out_bytes, relay, tasks, End, Part, Relay};
use crate::Services;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_api::tasks::v1 as tapi;
use berth_docker::DetachKeys;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// At most this many exec instances are kept.
const MAX_EXECS: usize = 1024;
/// A finished exec is forgotten after this long (Docker keeps them with their container).
const KEEP_FINISHED: Duration = Duration::from_secs(10 * 60);
/// One never started is forgotten after this long.
const KEEP_UNSTARTED: Duration = Duration::from_secs(30 * 60);

/// `/containers/{id}/exec` and `/exec/{id}/…`.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

/// An exec's body, as Docker's clients send it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    cmd: Vec<String>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    tty: bool,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    detach_keys: String,
    privileged: bool,
}

/// One exec instance.
#[derive(Debug)]
struct Exec {
    container_id: String,
    config: ExecConfig,
    created: Instant,
    started: bool,
    running: bool,
    pid: u32,
    exit_code: Option<i32>,
    finished: Option<Instant>,
    /// Carries resizes into the running process's stream.
    input: Option<mpsc::Sender<tapi::ExecRequest>>,
}

/// The exec instances the gateway keeps, by id.
#[derive(Debug, Default)]
pub struct Execs(Mutex<HashMap<String, Exec>>);

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Exec>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `exec` under a new id, after forgetting the old ones; None when full.
    fn insert(&self, exec: Exec) -> Option<String> {
        let mut map = self.lock();
        map.retain(|_, e| match e.finished {
            Some(f) => f.elapsed() < KEEP_FINISHED,
            None => e.started || e.created.elapsed() < KEEP_UNSTARTED,
        });
        if map.len() >= MAX_EXECS {
            let oldest = map
                .iter()
                .filter_map(|(id, e)| e.finished.map(|f| (f, id.clone())))
                .min();
            map.remove(&oldest?.1);
        }
        let id = new_id();
        map.insert(id.clone(), exec);
        Some(id)
    }

    fn update<T>(&self, id: &str, f: impl FnOnce(&mut Exec) -> T) -> Option<T> {
        self.lock().get_mut(id).map(f)
    }
}

/// 64 hex digits, as Docker's ids.
fn new_id() -> String {
    let mut b = [0u8; 32];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn no_such_exec(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No such exec instance: {id}"),
    )
}

/// `POST /containers/{id}/exec`: 201 `{"Id": …}`; 409 when the container does not run.
pub async fn create(
    State(s): State<Services>,
    Path(id): Path<String>,
    Json(config): Json<ExecConfig>,
) -> Result<Response, ApiError> {
    if config.cmd.is_empty() {
        return Err(ApiError::bad_parameter("No exec command specified"));
    }
    if config.privileged {
        return Err(ApiError::bad_parameter(
            "privileged exec is not supported by berth",
        ));
    }
    if !config.detach_keys.is_empty() {
        DetachKeys::parse(&config.detach_keys).map_err(|_| {
            ApiError::bad_parameter(format!(
                "Invalid detach keys ({}) provided",
                config.detach_keys
            ))
        })?;
    }
    let c = container(&s, &id).await?;
    if !is_running(&c) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Container {} is not running", c.id),
        ));
    }
    if c.state.as_ref().is_some_and(|st| st.paused) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Container {} is paused, unpause the container before exec",
                c.id
            ),
        ));
    }
    let exec = Exec {
        container_id: c.id,
        config,
        created: Instant::now(),
        started: false,
        running: false,
        pid: 0,
        exit_code: None,
        finished: None,
        input: None,
    };
    let id = s.local.execs.insert(exec).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many exec instances are running; try again when some have finished",
        )
    })?;
    Ok((StatusCode::CREATED, json_body(&json!({ "Id": id }))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartConfig {
    detach: bool,
    tty: Option<bool>,
}

/// `POST /exec/{id}/start`: runs the exec; hijacked unless `Detach`.
pub async fn start(
    State(s): State<Services>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let start: StartConfig = take_json(&mut req).await?;
    let (container_id, config) = s
        .local
        .execs
        .update(&id, |e| {
            let was = e.started;
            e.started = true;
            (!was).then(|| (e.container_id.clone(), e.config.clone()))
        })
        .ok_or_else(|| no_such_exec(&id))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("Error: Exec command {id} is already running"),
            )
        })?;
    let tty = start.tty.unwrap_or(config.tty);
    let stdin = config.attach_stdin && !start.detach;
    let (tx, rx) = mpsc::channel(32);
    let _ = tx
        .send(tapi::ExecRequest {
            item: Some(tapi::exec_request::Item::Start(tapi::ExecStart {
                container_id: container_id.clone(),
                args: config.cmd.clone(),
                env: config.env.clone().unwrap_or_default(),
                working_dir: config.working_dir.clone(),
                user: config.user.clone(),
                tty,
                stdin,
                detach: start.detach,
                timeout: 0,
            })),
        })
        .await;
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    if start.detach {
        return start_detached(&s, id, requests, tx).await;
    }
    let relay_opts = Relay {
        tty,
        stdin,
        stdout: config.attach_stdout,
        stderr: config.attach_stderr,
        detach_keys: DetachKeys::parse_or_default(Some(&config.detach_keys))
            .unwrap_or_else(|_| DetachKeys::docker_default()),
    };
    // As Docker's, the process starts once the connection is taken over, never before: a
    // client still reading the `101` answer (docker-py reads it through a buffer) would
    // otherwise find the first output in that buffer and lose it. A process that cannot
    // start says why in the stream, and its exit code (127 not found, 126 otherwise) is
    // the exec's, for the `GET /exec/{id}/json` the client asks next.
    let s2 = s.clone();
    Ok(hijack(&mut req, tty, move |input, mut client| async move {
        let output = match tasks(&s2).exec(s2.req(requests)).await {
            Ok(o) => o.into_inner(),
            Err(e) => {
                let code = berth_core::grpc::exit_code_of(&e).unwrap_or(126);
                let message = format!("{}\r\n", ApiError::from(e).message).into_bytes();
                let _ = client
                    .write_all(&out_bytes(tty, berth_docker::STDOUT, message))
                    .await;
                let _ = client.shutdown().await;
                finish(&s2, &id, Some(code));
                return;
            }
        };
        s2.local.execs.update(&id, |e| {
            e.running = true;
            e.input = Some(tx.clone());
        });
        let (s3, id3) = (s2.clone(), id.clone());
        let observe = move |part: &Part| match *part {
            Part::Pid(pid) => {
                s3.local.execs.update(&id3, |e| e.pid = pid);
            }
            Part::Exit(code) => finish(&s3, &id3, Some(code)),
            _ => {}
        };
        let end = relay(relay_opts, input, client, tx, output, observe).await;
        let code = match end {
            End::Exited(code) => Some(code),
            _ => None,
        };
        finish(&s2, &id, code);
    }))
}

/// A detached exec's start: 200 once its process runs. Refusals are answers here; its pid
/// says it runs; the exit code is kept when the stream ends.
async fn start_detached(
    s: &Services,
    id: String,
    requests: tokio_stream::wrappers::ReceiverStream<tapi::ExecRequest>,
    tx: mpsc::Sender<tapi::ExecRequest>,
) -> Result<Response, ApiError> {
    let mut output = match tasks(s).exec(s.req(requests)).await {
        Ok(o) => o.into_inner(),
        Err(e) => {
            finish(s, &id, None);
            return Err(e.into());
        }
    };
    s.local.execs.update(&id, |e| {
        e.running = true;
        e.input = Some(tx.clone());
    });
    while let Some(Ok(m)) = output.next().await {
        if let Some(tapi::exec_response::Item::Pid(pid)) = m.item {
            s.local.execs.update(&id, |e| e.pid = pid);
            break;
        }
    }
    let s = s.clone();
    tokio::spawn(async move {
        let mut code = None;
        while let Some(Ok(m)) = output.next().await {
            if let Some(tapi::exec_response::Item::Exit(x)) = m.item {
                code = Some(x.exit_code);
            }
        }
        drop(tx);
        finish(&s, &id, code);
    });
    Ok(StatusCode::OK.into_response())
}

/// The exec is over: no longer running, with its exit code when known.
fn finish(s: &Services, id: &str, code: Option<i32>) {
    s.local.execs.update(id, |e| {
        e.running = false;
        e.input = None;
        e.exit_code = code.or(e.exit_code);
        e.finished = Some(Instant::now());
    });
}

/// `POST /exec/{id}/resize?h=&w=`: the exec's TTY size.
pub async fn resize(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<crate::streams::ResizeQuery>,
) -> Result<Response, ApiError> {
    let (width, height) = q.size()?;
    let (container_id, input) = s
        .local
        .execs
        .update(&id, |e| (e.container_id.clone(), e.input.clone()))
        .ok_or_else(|| no_such_exec(&id))?;
    let Some(input) = input else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Exec {id} is not running"),
        ));
    };
    let resize = tapi::ResizeRequest {
        container_id,
        width,
        height,
    };
    let _ = input
        .send(tapi::ExecRequest {
            item: Some(tapi::exec_request::Item::Resize(resize)),
        })
        .await;
    Ok(StatusCode::OK.into_response())
}

/// `GET /exec/{id}/json`.
pub async fn inspect(
    State(s): State<Services>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = s
        .local
        .execs
        .update(&id, |e| {
            let c = &e.config;
            json!({
                "ID": id,
                "Running": e.running,
                "ExitCode": e.exit_code,
                "ProcessConfig": {
                    "tty": c.tty,
                    "entrypoint": c.cmd.first(),
                    "arguments": c.cmd.get(1..).unwrap_or_default(),
                    "privileged": false,
                    "user": c.user,
                },
                "OpenStdin": c.attach_stdin,
                "OpenStderr": c.attach_stderr,
                "OpenStdout": c.attach_stdout,
                "CanRemove": false,
                "ContainerID": e.container_id,
                "DetachKeys": c.detach_keys,
                "Pid": e.pid,
            })
        })
        .ok_or_else(|| no_such_exec(&id))?;
    Ok(json_body(&v).into_response())
}
