//! The container endpoints: create, list, inspect, start, stop, restart, kill, wait, pause,
//! unpause, remove and prune, on the runtime service's Containers and Tasks. Docker's shapes
//! come from berth-docker (`create::container_config`, `ps::list_entry`,
//! `containers::container_json`), the same views the CLI shows; Docker's messages ("No such
//! container: x", the name conflict, removing a running container) are the runtime's own.
//!
//! `wait` answers its headers at once and its body when the condition holds, as Docker does:
//! `docker run` waits for the headers of `next-exit` (or `removed`) before it starts the
//! container. It follows the container's events, so it sees an exit however fast.

use crate::error::{json_body, ApiError};
use crate::request::truthy;
use crate::request::{Filters, Json};
use crate::request::{Path, Query};
use crate::Services;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::containers::v1 as capi;
use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::events::v1 as eapi;
use berth_api::events::v1::events_client::EventsClient;
use berth_api::tasks::v1 as tapi;
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_docker::ps::PsFilters;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use tonic::transport::Channel;

/// `/containers/…`: this module's routes.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/containers/create", post(create))
        .route("/containers/json", get(list))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}", delete(remove))
}

fn containers(s: &Services) -> ContainersClient<Channel> {
    ContainersClient::new(s.runtime.clone()).max_decoding_message_size(64 << 20)
}

fn tasks(s: &Services) -> TasksClient<Channel> {
    TasksClient::new(s.runtime.clone())
}

/// The container named by a full id, a unique id prefix or a name.
async fn get(s: &Services, id: &str) -> Result<capi::Container, ApiError> {
    containers(s)
        .get(s.req(capi::GetContainerRequest { id: id.into() }))
        .await?
        .into_inner()
        .container
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No such container: {id}")))
}

fn status_of(c: &capi::Container) -> &str {
    c.state.as_ref().map(|s| s.status.as_str()).unwrap_or("")
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn not_modified() -> Response {
    StatusCode::NOT_MODIFIED.into_response()
}

#[derive(Debug, Deserialize)]
pub struct CreateQuery {
    name: Option<String>,
}

/// `POST /containers/create?name=`: 201 `{"Id": …, "Warnings": […]}`. The body becomes a
/// `ContainerConfig` by berth-docker's rules (an unsupported field is a 400 naming it); a
/// missing image is Docker's 404, so the CLI pulls it and tries again.
pub async fn create(
    State(s): State<Services>,
    Query(q): Query<CreateQuery>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let config = berth_docker::create::container_config(&body).map_err(ApiError::bad_parameter)?;
    let warnings = berth_docker::create::create_warnings(&config);
    let image = config.image.clone();
    let created = containers(&s)
        .create(s.req(capi::CreateContainerRequest {
            name: q.name.unwrap_or_default(),
            config: Some(config),
        }))
        .await;
    let c = match created {
        Ok(r) => r.into_inner().container.unwrap_or_default(),
        // Docker names the image with its tag ("No such image: busybox:latest").
        Err(e)
            if e.code() == tonic::Code::NotFound
                && e.message() == format!("No such image: {image}") =>
        {
            let (repo, tag) = berth_core::Reference::parse(&image)
                .map(|r| berth_docker::repo_tag(&r.to_string()))
                .unwrap_or((image, String::new()));
            let shown = if tag.is_empty() {
                repo
            } else {
                format!("{repo}:{tag}")
            };
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("No such image: {shown}"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let answer = json!({ "Id": c.id, "Warnings": warnings });
    Ok((StatusCode::CREATED, json_body(&answer)).into_response())
}

/// Every network's id by name; none when the runtime has no network service.
async fn network_ids(s: &Services) -> BTreeMap<String, String> {
    use berth_api::networks::v1 as napi;
    let list = napi::networks_client::NetworksClient::new(s.runtime.clone())
        .list(s.req(napi::ListNetworksRequest {}))
        .await;
    list.map(|r| {
        r.into_inner()
            .networks
            .into_iter()
            .map(|n| (n.name, n.id))
            .collect()
    })
    .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    all: Option<String>,
    limit: Option<i64>,
    /// SizeRw and SizeRootFs in each entry (Containers.Sizes).
    size: Option<String>,
    filters: Option<String>,
}

/// `GET /containers/json?all=&limit=&size=&filters=`: newest first, running ones only unless
/// `all`, a status filter or a limit asks for more, as Docker lists them.
pub async fn list(
    State(s): State<Services>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let filters = PsFilters::from_json(q.filters.as_deref().unwrap_or(""))
        .map_err(ApiError::bad_parameter)?;
    let limit = q.limit.unwrap_or(0);
    let list = containers(&s)
        .list(s.req(capi::ListContainersRequest {}))
        .await?
        .into_inner()
        .containers;
    let mut shown = filters
        .select(&list, truthy(&q.all) || limit > 0)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
    if limit > 0 {
        shown.truncate(limit as usize);
    }
    let ids = network_ids(&s).await;
    let now = chrono::Utc::now().timestamp();
    let sizes = if truthy(&q.size) && !shown.is_empty() {
        let ids = shown.iter().map(|c| c.id.clone()).collect();
        sizes(&s, ids).await?
    } else {
        HashMap::new()
    };
    let entries = shown
        .into_iter()
        .map(|c| {
            let mut entry = berth_docker::ps::list_entry(c, &ids, now);
            if let Some(size) = sizes.get(&c.id) {
                berth_docker::ps::add_size(&mut entry, size);
            }
            entry
        })
        .collect();
    Ok(json_body(&Value::Array(entries)).into_response())
}

/// The sizes of the containers `ids` (full ids), by full id.
async fn sizes(
    s: &Services,
    ids: Vec<String>,
) -> Result<HashMap<String, capi::ContainerSize>, ApiError> {
    Ok(containers(s)
        .sizes(s.req(capi::ContainerSizesRequest { ids }))
        .await?
        .into_inner()
        .sizes)
}

async fn image_config(s: &Services, name: &str) -> Option<Value> {
    use berth_api::images::v1 as iapi;
    let r = iapi::images_client::ImagesClient::new(s.image.clone())
        .max_decoding_message_size(64 << 20)
        .inspect(s.req(iapi::InspectImageRequest { name: name.into() }))
        .await
        .ok()?;
    serde_json::from_slice(&r.get_ref().config).ok()
}

#[derive(Debug, Deserialize)]
pub struct InspectQuery {
    /// SizeRw and SizeRootFs (Containers.Sizes).
    size: Option<String>,
}

/// `GET /containers/{id}/json`: the JSON of `berth inspect`.
pub async fn inspect(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<InspectQuery>,
) -> Result<Response, ApiError> {
    let c = get(&s, &id).await?;
    let mut image = None;
    for name in [&c.image_id, &c.image] {
        if image.is_none() && !name.is_empty() {
            image = image_config(&s, name).await;
        }
    }
    let ids = if berth_docker::containers::needs_network_ids(&c) {
        network_ids(&s).await
    } else {
        BTreeMap::new()
    };
    let mut j = berth_docker::containers::container_json(&c, image.as_ref(), &ids);
    if truthy(&q.size) {
        if let Some(size) = sizes(&s, vec![c.id.clone()]).await?.get(&c.id) {
            berth_docker::ps::add_size(&mut j, size);
        }
    }
    Ok(json_body(&j).into_response())
}

/// Creates the task of a container that has none (never started, or exited).
async fn ensure_task(s: &Services, id: &str) -> Result<(), ApiError> {
    match tasks(s)
        .create(s.req(tapi::CreateTaskRequest {
            container_id: id.into(),
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Starts a container that does not run; `false` when it ran already.
async fn start_container(s: &Services, c: &capi::Container) -> Result<bool, ApiError> {
    if matches!(status_of(c), "running" | "restarting") {
        return Ok(false);
    }
    let started = async {
        ensure_task(s, &c.id).await?;
        tasks(s)
            .start(s.req(tapi::StartTaskRequest {
                container_id: c.id.clone(),
            }))
            .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = started {
        // An auto-remove container that cannot start is removed, as Docker's is: `docker run
        // --rm` waits for that after the error.
        if c.config.as_ref().is_some_and(|cfg| cfg.auto_remove) {
            let _ = containers(s)
                .delete(s.req(capi::DeleteContainerRequest {
                    id: c.id.clone(),
                    force: true,
                    remove_volumes: true,
                }))
                .await;
        }
        return Err(e);
    }
    Ok(true)
}

/// `POST /containers/{id}/start`: 204, or 304 when it runs already.
pub async fn start(
    State(s): State<Services>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = get(&s, &id).await?;
    Ok(if start_container(&s, &c).await? {
        no_content()
    } else {
        not_modified()
    })
}

#[derive(Debug, Deserialize)]
pub struct StopQuery {
    t: Option<String>,
    /// Docker 1.42's name of `t`, which newer clients may send.
    signal: Option<String>,
}

impl StopQuery {
    fn timeout(&self) -> Result<Option<i32>, ApiError> {
        if self.signal.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_parameter(
                "berth does not support a stop signal per request: set StopSignal at create",
            ));
        }
        match self.t.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => t
                .parse::<i32>()
                .map(Some)
                .map_err(|_| ApiError::bad_parameter(format!("invalid value for t: {t:?}"))),
        }
    }
}

async fn stop_container(s: &Services, id: &str, timeout: Option<i32>) -> Result<(), ApiError> {
    tasks(s)
        .stop(s.req(tapi::StopTaskRequest {
            container_id: id.into(),
            timeout: timeout.unwrap_or(0),
            has_timeout: timeout.is_some(),
        }))
        .await?;
    Ok(())
}

/// `POST /containers/{id}/stop?t=`: 204, or 304 when it does not run.
pub async fn stop(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Response, ApiError> {
    let timeout = q.timeout()?;
    let c = get(&s, &id).await?;
    if !berth_docker::ps::is_live(&c) {
        return Ok(not_modified());
    }
    stop_container(&s, &c.id, timeout).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/restart?t=`: stops it if it runs, then starts it; 204.
pub async fn restart(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Response, ApiError> {
    let timeout = q.timeout()?;
    let c = get(&s, &id).await?;
    if berth_docker::ps::is_live(&c) {
        stop_container(&s, &c.id, timeout).await?;
    }
    let c = get(&s, &c.id).await?;
    start_container(&s, &c).await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
pub struct KillQuery {
    signal: Option<String>,
}

/// `POST /containers/{id}/kill?signal=`: a signal by name or number (KILL when none); 409
/// when the container does not run.
pub async fn kill(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> Result<Response, ApiError> {
    let signal = match q.signal.as_deref() {
        None | Some("") => 9,
        Some(sig) => {
            berth_core::signal::parse(sig).map_err(|e| ApiError::bad_parameter(e.to_string()))?
        }
    };
    let c = get(&s, &id).await?;
    if !berth_docker::ps::is_live(&c) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Container {} is not running", c.id),
        ));
    }
    tasks(&s)
        .kill(s.req(tapi::KillTaskRequest {
            container_id: c.id,
            signal: signal as u32,
            all: false,
        }))
        .await?;
    Ok(no_content())
}

/// Freezes (`paused`) or thaws a running container's processes: 204.
async fn set_paused(s: Services, container_id: String, paused: bool) -> Result<Response, ApiError> {
    if paused {
        let req = s.req(tapi::PauseTaskRequest { container_id });
        tasks(&s).pause(req).await?;
    } else {
        let req = s.req(tapi::ResumeTaskRequest { container_id });
        tasks(&s).resume(req).await?;
    }
    Ok(no_content())
}

/// `POST /containers/{id}/pause`.
pub async fn pause(
    State(s): State<Services>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(s, id, true).await
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(
    State(s): State<Services>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(s, id, false).await
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    force: Option<String>,
    v: Option<String>,
    link: Option<String>,
}

/// `DELETE /containers/{id}?force=&v=`: 204; 409 for a running container without force.
pub async fn remove(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    if truthy(&q.link) {
        return Err(ApiError::bad_parameter("berth does not support links"));
    }
    containers(&s)
        .delete(s.req(capi::DeleteContainerRequest {
            id,
            force: truthy(&q.force),
            remove_volumes: truthy(&q.v),
        }))
        .await?;
    Ok(no_content())
}

/// `POST /containers/prune?filters=`: every container that does not run (those the `until`
/// and `label` filters keep); `{"ContainersDeleted": […], "SpaceReclaimed": 0}`.
pub async fn prune(State(s): State<Services>, filters: Filters) -> Result<Response, ApiError> {
    let filters = berth_docker::ps::PruneFilters::from_json(&filters.json)
        .map_err(ApiError::bad_parameter)?;
    let deleted = if filters.is_empty() {
        containers(&s)
            .prune(s.req(capi::PruneContainersRequest {}))
            .await?
            .into_inner()
            .deleted
    } else {
        let list = containers(&s)
            .list(s.req(capi::ListContainersRequest {}))
            .await?
            .into_inner()
            .containers;
        let now = chrono::Utc::now().timestamp();
        let mut deleted = Vec::new();
        for c in list.iter().filter(|c| filters.prunes(c, now)) {
            let r = containers(&s)
                .delete(s.req(capi::DeleteContainerRequest {
                    id: c.id.clone(),
                    force: false,
                    remove_volumes: false,
                }))
                .await;
            match r {
                Ok(_) => deleted.push(c.id.clone()),
                // Started or removed since the list: not prunable any more.
                Err(e)
                    if matches!(
                        e.code(),
                        tonic::Code::FailedPrecondition | tonic::Code::NotFound
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        deleted
    };
    let report = berth_docker::containers::container_prune_report(&deleted);
    Ok(json_body(&report).into_response())
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    condition: Option<String>,
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    /// The container does not run (at once when it does not run now).
    NotRunning,
    /// Its next exit, whatever its state now.
    NextExit,
    /// It is removed.
    Removed,
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`: 200 at once, then
/// `{"StatusCode": N, "Error": null}` when the condition holds.
pub async fn wait(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let condition = match q.condition.as_deref() {
        None | Some("") | Some("not-running") => Condition::NotRunning,
        Some("next-exit") => Condition::NextExit,
        Some("removed") => Condition::Removed,
        Some(other) => {
            return Err(ApiError::bad_parameter(format!(
                "invalid condition: {other:?}"
            )))
        }
    };
    // Follow the events before looking at the state, so no exit falls between the two.
    let c = get(&s, &id).await?;
    let events = EventsClient::new(s.events.clone())
        .subscribe(s.req(eapi::SubscribeRequest {
            filters: vec!["type=container".into(), format!("container={}", c.id)],
            ..Default::default()
        }))
        .await?
        .into_inner();
    let c = get(&s, &c.id).await?;
    let st = c.state.clone().unwrap_or_default();
    let body = async move {
        if condition == Condition::NotRunning && !berth_docker::ps::is_live(&c) {
            return wait_answer(st.exit_code, None);
        }
        wait_for_event(&s, events, &c.id, condition, st.exit_code).await
    };
    let stream =
        futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body.await) });
    Ok((
        [(http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The body of a wait's answer.
fn wait_answer(code: i32, error: Option<String>) -> Bytes {
    let error = error.map(|m| json!({ "Message": m }));
    let mut b =
        serde_json::to_vec(&json!({ "StatusCode": code, "Error": error })).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// Reads the container's events until the condition holds: a `die` (its exit code), or a
/// `destroy` for `removed`.
async fn wait_for_event(
    s: &Services,
    mut events: tonic::Streaming<eapi::Envelope>,
    id: &str,
    condition: Condition,
    mut code: i32,
) -> Bytes {
    loop {
        match events.message().await {
            Ok(Some(e)) => match e.action.as_str() {
                "die" => {
                    code = e
                        .attributes
                        .get("exitCode")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(code);
                    if condition != Condition::Removed {
                        return wait_answer(code, None);
                    }
                }
                "destroy" => return wait_answer(code, None),
                _ => {}
            },
            Ok(None) | Err(_) => {
                // The event stream ended (berthd going away): say how the container stands.
                let code = match get(s, id).await {
                    Ok(c) => c.state.map(|s| s.exit_code).unwrap_or(code),
                    Err(_) => code,
                };
                return wait_answer(code, Some("the event stream of berthd ended".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::router;
    use crate::tests::nowhere;
    use axum::body::Body;
    use tower::ServiceExt as _;

    async fn call(method: &str, uri: &str, body: &str) -> (u16, String) {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = router(nowhere()).oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn bad_requests_are_refused_in_dockers_shape() {
        let create = "/v1.41/containers/create";
        for (uri, body, want) in [
            (create, r#"{"Image":"#, "invalid JSON: "),
            (create, "[]", "must be a JSON object"),
            (
                create,
                r#"{"Image":"busybox","HostConfig":{"CpusetCpus":"0"}}"#,
                "berth does not support HostConfig.CpusetCpus",
            ),
            (
                "/containers/json?filters=%7B%22colour%22%3A%5B%22red%22%5D%7D",
                "",
                "invalid filter 'colour'",
            ),
            (
                "/containers/prune?filters=%7B%22until%22%3A%5B%22x%22%5D%7D",
                "",
                "invalid filter 'until=x'",
            ),
            (
                "/containers/x/wait?condition=bogus",
                "",
                "invalid condition",
            ),
            ("/containers/x/kill?signal=NOPE", "", "NOPE"),
            ("/containers/x/stop?t=soon", "", "invalid value for t"),
        ] {
            let method = if uri.contains("/json?") {
                "GET"
            } else {
                "POST"
            };
            let (status, answer) = call(method, uri, body).await;
            assert_eq!(status, 400, "{uri}: {answer}");
            let message: serde_json::Value = serde_json::from_str(&answer).unwrap();
            let message = message["message"].as_str().unwrap();
            assert!(message.contains(want), "{uri}: {message}");
        }
    }
}
