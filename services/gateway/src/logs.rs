//! `GET /containers/{id}/logs`: the container's log (Tasks.Logs), raw with a TTY, else in
//! Docker's multiplexed frames; `tail`, `since`/`until`, `timestamps` and `follow` as Docker
//! reads them (berth-docker's [`berth_docker::parse_tail`], [`berth_docker::LogWindow`],
//! [`berth_docker::timestamped`], shared with `berth logs`).

use crate::error::ApiError;
use crate::request::truthy;
use crate::request::{Path, Query};
use crate::streams::{container, tasks};
use crate::Services;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::tasks::v1 as tapi;
use berth_docker::LogWindow;
use serde::Deserialize;
use tokio_stream::StreamExt;

/// `/containers/{id}/logs`.
pub fn routes() -> axum::Router<Services> {
    axum::Router::new().route("/containers/{id}/logs", axum::routing::get(logs))
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    since: Option<String>,
    until: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
}

/// Which lines to show, and how.
#[derive(Debug, Clone, Copy)]
struct Shown {
    tty: bool,
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    window: LogWindow,
}

impl Shown {
    /// The bytes a log entry shows as, if shown.
    fn bytes(&self, e: tapi::LogEntry) -> Option<Vec<u8>> {
        let stderr = e.stream == "stderr";
        if (stderr && !self.stderr) || (!stderr && !self.stdout) {
            return None;
        }
        if self.window.before(e.time.as_ref()) {
            return None;
        }
        let data = if self.timestamps {
            berth_docker::timestamped(e.time.as_ref(), e.data)
        } else {
            e.data
        };
        Some(if self.tty {
            data
        } else {
            let stream = if stderr {
                berth_docker::STDERR
            } else {
                berth_docker::STDOUT
            };
            berth_docker::frame(stream, &data)
        })
    }
}

/// `GET /containers/{id}/logs?follow=&stdout=&stderr=&since=&until=&timestamps=&tail=`.
pub async fn logs(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let (stdout, stderr) = (truthy(&q.stdout), truthy(&q.stderr));
    if !stdout && !stderr {
        return Err(ApiError::bad_parameter(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let (tail, has_tail) =
        berth_docker::parse_tail(q.tail.as_deref()).map_err(ApiError::bad_parameter)?;
    let window = LogWindow::parse(q.since.as_deref(), q.until.as_deref())
        .map_err(ApiError::bad_parameter)?;
    let c = container(&s, &id).await?;
    let tty = c.config.as_ref().is_some_and(|c| c.tty);
    let shown = Shown {
        tty,
        stdout,
        stderr,
        timestamps: truthy(&q.timestamps),
        window,
    };
    let mut entries = tasks(&s)
        .logs(s.req(tapi::LogsRequest {
            container_id: c.id,
            follow: truthy(&q.follow),
            tail,
            has_tail,
        }))
        .await?
        .into_inner();
    let body = async_stream::stream! {
        while let Some(Ok(e)) = entries.next().await {
            if shown.window.after(e.time.as_ref()) {
                break;
            }
            if let Some(b) = shown.bytes(e) {
                yield Ok::<_, std::io::Error>(b);
            }
        }
    };
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok((
        [(http::header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// The container's whole log so far, as attach's `logs=1` shows it before the live output.
pub(crate) async fn past_output(
    s: &Services,
    id: &str,
    tty: bool,
    stdout: bool,
    stderr: bool,
) -> Result<Vec<u8>, ApiError> {
    let shown = Shown {
        tty,
        stdout,
        stderr,
        timestamps: false,
        window: LogWindow::default(),
    };
    let mut entries = tasks(s)
        .logs(s.req(tapi::LogsRequest {
            container_id: id.into(),
            follow: false,
            tail: 0,
            has_tail: false,
        }))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = entries.next().await {
        out.extend(shown.bytes(e?).unwrap_or_default());
    }
    Ok(out)
}
