//! The image endpoints: list, inspect, history, tag, delete and prune, and the routes of the
//! image modules beside it (pull, push, build, commit, auth, save and load). Image names hold
//! slashes (`registry:5000/team/app:1.0`), so `/images/{name}/…` is matched by its last
//! segment, as Docker's router does.

use crate::error::{json_body, ApiError};
use crate::request::truthy;
use crate::request::Filters;
use crate::request::{Path, Query};
use crate::Services;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::images::v1 as api;
use berth_api::images::v1::images_client::ImagesClient;
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tonic::transport::Channel;

/// `/images/json`, `/images/{name}/…` and the other image routes.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::{get, post as post_to};
    axum::Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post_to(crate::pull::create))
        .route("/images/get", get(crate::archive::save_many))
        .route("/images/load", post_to(crate::archive::load))
        .route("/images/prune", post_to(prune))
        .route("/build", post_to(crate::build::build))
        .route("/build/prune", post_to(crate::build::prune))
        .route("/commit", post_to(crate::commit::commit))
        .route("/auth", post_to(crate::auth::login))
        .route("/images/{*rest}", get(get_one).post(post).delete(delete))
}

pub(crate) fn images(s: &Services) -> ImagesClient<Channel> {
    ImagesClient::new(s.image.clone()).max_decoding_message_size(64 << 20)
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    all: Option<String>,
    filters: Option<String>,
}

/// `GET /images/json`, with the `reference` and `dangling` filters (Images.List does not
/// filter: berth-docker applies Docker's rules to its answer); any other filter is a 400.
pub async fn list(
    State(s): State<Services>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let filters = berth_docker::ImageFilters::parse(q.filters.as_deref().unwrap_or(""))
        .map_err(ApiError::bad_parameter)?;
    let list = images(&s)
        .list(s.req(api::ListImagesRequest {
            filters: vec![],
            all: truthy(&q.all),
        }))
        .await?
        .into_inner();
    let entries = berth_docker::image_list(&list.images)
        .into_iter()
        .filter(|e| filters.keep(e))
        .collect();
    Ok(json_body(&Value::Array(entries)).into_response())
}

/// `GET /images/{name}/json`, `GET /images/{name}/history` and `GET /images/{name}/get`.
pub async fn get_one(
    State(s): State<Services>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(name) = rest.strip_suffix("/json") {
        let r = images(&s)
            .inspect(s.req(api::InspectImageRequest { name: name.into() }))
            .await?
            .into_inner();
        return Ok(json_body(&berth_docker::image_inspect(&r)).into_response());
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let r = images(&s)
            .history(s.req(api::HistoryRequest { name: name.into() }))
            .await?
            .into_inner();
        let h = berth_docker::image_history(&r.entries);
        return Ok(json_body(&Value::Array(h)).into_response());
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return crate::archive::save(&s, vec![name.to_string()]).await;
    }
    Err(crate::error::page_not_found().await)
}

#[derive(Debug, Deserialize)]
pub struct TagQuery {
    repo: Option<String>,
    tag: Option<String>,
}

/// `POST /images/{name}/tag?repo=&tag=`: 201 Created; `POST /images/{name}/push?tag=`.
pub async fn post(
    State(s): State<Services>,
    headers: http::HeaderMap,
    Path(rest): Path<String>,
    Query(q): Query<TagQuery>,
) -> Result<Response, ApiError> {
    if let Some(name) = rest.strip_suffix("/push") {
        return crate::push::push(s, &headers, name, q.tag.as_deref().unwrap_or("")).await;
    }
    let Some(name) = rest.strip_suffix("/tag") else {
        return Err(crate::error::page_not_found().await);
    };
    let repo = q.repo.unwrap_or_default();
    if repo.is_empty() {
        return Err(ApiError::bad_parameter(
            "repository name must have at least one component",
        ));
    }
    let target = match q.tag.as_deref() {
        Some(t) if !t.is_empty() => format!("{repo}:{t}"),
        _ => repo,
    };
    images(&s)
        .tag(s.req(api::TagImageRequest {
            source: name.into(),
            target,
        }))
        .await?;
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    force: Option<String>,
    /// Accepted for Docker's clients; berth removes no untagged parents (it keeps none).
    #[allow(dead_code)]
    noprune: Option<String>,
}

/// `DELETE /images/{name}?force=&noprune=`: `[{"Untagged": …}, {"Deleted": …}]`.
pub async fn delete(
    State(s): State<Services>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Response, ApiError> {
    let r = images(&s)
        .delete(s.req(api::DeleteImageRequest {
            name,
            force: truthy(&q.force),
        }))
        .await?
        .into_inner();
    Ok(json_body(&Value::Array(berth_docker::image_delete(&r))).into_response())
}

/// `POST /images/prune?filters=`: dangling images, or (`dangling=false`) every image no
/// container uses.
pub async fn prune(State(s): State<Services>, filters: Filters) -> Result<Response, ApiError> {
    let filters =
        berth_docker::ImageFilters::parse(&filters.json).map_err(ApiError::bad_parameter)?;
    if !filters.reference.is_empty() {
        return Err(ApiError::bad_parameter("invalid filter 'reference'"));
    }
    let r = images(&s)
        .prune(s.req(api::PruneImagesRequest {
            all: filters.dangling == Some(false),
        }))
        .await?
        .into_inner();
    Ok(json_body(&berth_docker::image_prune(&r)).into_response())
}
