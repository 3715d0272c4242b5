//! `GET /containers/{id}/top?ps_args=` and `GET /containers/{id}/stats?stream=&one-shot=`:
//! a container's processes and its usage, from Tasks.ListPids and Tasks.Metrics with the
//! host's figures; berth-docker shapes both as Docker does.

use crate::error::{json_body, ApiError};
use crate::request::{Path, Query};
use crate::Services;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::containers::v1::{containers_client::ContainersClient, GetContainerRequest};
use berth_api::tasks::v1 as tapi;
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_docker::usage::{self, HostSample};
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

async fn pids(s: &Services, id: &str) -> Result<Vec<u32>, tonic::Status> {
    Ok(TasksClient::new(s.runtime.clone())
        .list_pids(s.req(tapi::ListPidsRequest {
            container_id: id.to_string(),
        }))
        .await?
        .into_inner()
        .processes
        .iter()
        .map(|p| p.pid)
        .collect())
}

#[derive(Debug, Deserialize)]
pub struct TopQuery {
    ps_args: Option<String>,
}

/// `GET /containers/{id}/top?ps_args=`: the host's `ps` (default `-ef`) on its processes.
pub async fn top(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<TopQuery>,
) -> Result<Response, ApiError> {
    let (id, name) = container(&s, id).await?;
    let pids = pids(&s, &id).await.map_err(|e| {
        if e.code() == tonic::Code::NotFound || e.code() == tonic::Code::FailedPrecondition {
            ApiError::new(
                http::StatusCode::CONFLICT,
                format!("Container {id} is not running"),
            )
        } else {
            e.into()
        }
    })?;
    let args = q.ps_args.unwrap_or_default();
    tracing::debug!(container = %name, %args, "top");
    let out = tokio::task::spawn_blocking(move || usage::top(&args, &pids))
        .await
        .map_err(|e| ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(json_body(&out).into_response())
}

/// One sample: the container's metrics (empty when it does not run) and the host's figures.
async fn sample(s: &Services, id: &str) -> (tapi::Metrics, HostSample) {
    let metrics = TasksClient::new(s.runtime.clone())
        .metrics(s.req(tapi::MetricsRequest {
            container_id: id.to_string(),
        }))
        .await
        .ok()
        .and_then(|r| r.into_inner().metrics)
        .unwrap_or_default();
    let pid = pids(s, id).await.ok().and_then(|p| p.first().copied());
    let host = tokio::task::spawn_blocking(move || HostSample::read(pid))
        .await
        .unwrap_or_default();
    (metrics, host)
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
            let j = usage::stats_json(&id, &name, &first.0, &first.1, None);
            return Ok(json_body(&j).into_response());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sample(&s, &id).await;
        let j = usage::stats_json(&id, &name, &now.0, &now.1, Some((&first.0, &first.1)));
        return Ok(json_body(&j).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::convert::Infallible>>(1);
    tokio::spawn(async move {
        let mut pre: Option<(tapi::Metrics, HostSample)> = None;
        loop {
            let now = sample(&s, &id).await;
            let j = usage::stats_json(
                &id,
                &name,
                &now.0,
                &now.1,
                pre.as_ref().map(|(m, h)| (m, h)),
            );
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
