//! `GET /containers/{id}/top?ps_args=` and `GET /containers/{id}/stats?stream=&one-shot=`:
//! a container's processes and its usage, from Tasks.ListPids (with `ps_args`: the runtime
//! runs `ps` on its host) and Tasks.Metrics (the cgroup's and the host's figures, read by the
//! runtime); berth-docker shapes both as Docker does.

use crate::error::{json_body, ApiError};
use crate::request::{Path, Query};
use crate::Services;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::containers::v1::{containers_client::ContainersClient, GetContainerRequest};
use berth_api::tasks::v1 as tapi;
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_docker::usage;
use serde::Deserialize;
use std::time::Duration;

/// `/containers/{id}/top` and `/containers/{id}/stats`.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::get;
    axum::Router::new()
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/stats", get(stats))
}

/// The container's full id and its name (a 404 in Docker's words if there is none).
async fn container(s: &Services, reference: String) -> Result<(String, String), ApiError> {
    let c = ContainersClient::new(s.runtime.clone())
        .get(s.req(GetContainerRequest { id: reference }))
        .await?
        .into_inner()
        .container
        .unwrap_or_default();
    Ok((c.id, c.name))
}

#[derive(Debug, Deserialize)]
pub struct TopQuery {
    ps_args: Option<String>,
}

/// `GET /containers/{id}/top?ps_args=`: the `ps` of the container's host (default `-ef`) on
/// its processes.
pub async fn top(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<TopQuery>,
) -> Result<Response, ApiError> {
    let (id, name) = container(&s, id).await?;
    let ps_args = q.ps_args.unwrap_or_default();
    tracing::debug!(container = %name, %ps_args, "top");
    let answer = TasksClient::new(s.runtime.clone())
        .list_pids(s.req(tapi::ListPidsRequest {
            container_id: id.clone(),
            ps_args: Some(ps_args),
        }))
        .await
        .map_err(|e| {
            // A container without a task is not running, in Docker's words; the runtime's
            // FailedPrecondition (not running, no `ps` on its host) is a 409 with its message.
            if e.code() == tonic::Code::NotFound {
                ApiError::new(
                    http::StatusCode::CONFLICT,
                    format!("Container {id} is not running"),
                )
            } else {
                e.into()
            }
        })?
        .into_inner();
    Ok(json_body(&usage::top_json(&answer)).into_response())
}

/// One sample of the container, host figures included (empty when it does not run).
async fn sample(s: &Services, id: &str) -> tapi::Metrics {
    TasksClient::new(s.runtime.clone())
        .metrics(s.req(tapi::MetricsRequest {
            container_id: id.to_string(),
        }))
        .await
        .ok()
        .and_then(|r| r.into_inner().metrics)
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    stream: Option<String>,
    #[serde(rename = "one-shot")]
    one_shot: Option<String>,
}

fn flag(v: &Option<String>, default: bool) -> bool {
    match v.as_deref() {
        None | Some("") => default,
        Some(v) => matches!(v, "1" | "true" | "True" | "TRUE"),
    }
}

/// `GET /containers/{id}/stats`: with `stream` (the default) a sample a second until the
/// client hangs up; without, one sample whose `precpu_stats` is a second older (none with
/// `one-shot`).
pub async fn stats(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    let (id, name) = container(&s, id).await?;
    let (stream, one_shot) = (flag(&q.stream, true), flag(&q.one_shot, false));
    if !stream {
        let first = sample(&s, &id).await;
        if one_shot {
            let j = usage::stats_json(&id, &name, &first, None);
            return Ok(json_body(&j).into_response());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sample(&s, &id).await;
        let j = usage::stats_json(&id, &name, &now, Some(&first));
        return Ok(json_body(&j).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::convert::Infallible>>(1);
    tokio::spawn(async move {
        let mut pre: Option<tapi::Metrics> = None;
        loop {
            let now = sample(&s, &id).await;
            let j = usage::stats_json(&id, &name, &now, pre.as_ref());
            let mut line = serde_json::to_vec(&j).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
            pre = Some(now);
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    Ok((
        [(http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}
