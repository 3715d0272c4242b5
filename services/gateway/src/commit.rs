//! `POST /commit` (`docker commit`): a container's changes become an image, through the
//! image service's Commit with the request `berth commit` makes (berth-docker builds it from
//! the container), the container paused around it as Docker does.

use crate::error::{json_body, ApiError};
use crate::images::images;
use crate::request::{Json, Params};
use crate::Services;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::containers::v1::GetContainerRequest;
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_api::tasks::v1::{PauseTaskRequest, ResumeTaskRequest};
use http::StatusCode;

/// `POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=`, body a container
/// config to merge (may be empty): 201 `{"Id": …}`.
pub async fn commit(
    State(s): State<Services>,
    q: Params,
    Json(config): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let reference = match (q.get("repo"), q.get("tag")) {
        ("", _) => String::new(),
        (repo, "") => repo.to_string(),
        (repo, tag) => format!("{repo}:{tag}"),
    };
    if !reference.is_empty() {
        berth_core::Reference::parse(&reference)
            .map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    }
    let name = q.get("container");
    let c = ContainersClient::new(s.runtime.clone())
        .get(s.req(GetContainerRequest { id: name.into() }))
        .await?
        .into_inner()
        .container
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("No such container: {name}"))
        })?;
    let mut changes = berth_docker::config_changes(&config);
    changes.extend(q.all("changes"));
    let request = berth_docker::commit_request(
        &c,
        berth_docker::CommitOptions {
            reference,
            comment: q.get("comment").into(),
            author: q.get("author").into(),
            changes,
            config: Vec::new(),
        },
    );
    // Docker pauses unless told `pause=0`.
    let pause = !matches!(q.get("pause"), "0" | "false" | "False" | "FALSE");
    let paused = berth_docker::commit_pauses(&c, pause);
    let tasks = || TasksClient::new(s.runtime.clone());
    if paused {
        tasks()
            .pause(s.req(PauseTaskRequest {
                container_id: c.id.clone(),
            }))
            .await?;
    }
    let r = images(&s).commit(s.req(request)).await;
    if paused {
        tasks()
            .resume(s.req(ResumeTaskRequest {
                container_id: c.id.clone(),
            }))
            .await?;
    }
    let id = r?.into_inner().id;
    let answer = serde_json::json!({ "Id": id });
    Ok((StatusCode::CREATED, json_body(&answer)).into_response())
}
