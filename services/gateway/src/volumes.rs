//! The volume endpoints: list (Docker's filters), inspect, create, remove and prune, over
//! berth's Volumes service; Docker's JSON of a volume comes from berth-docker, as the CLI's
//! `volume inspect` does.

use crate::error::{json_body, ApiError};
use crate::request::{Filters, Json};
use crate::request::{Path, Query};
use crate::Services;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::volumes::v1 as vapi;
use berth_api::volumes::v1::volumes_client::VolumesClient;
use berth_docker::volumes as dv;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use tonic::transport::Channel;

/// `/volumes…`.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

fn volumes(s: &Services) -> VolumesClient<Channel> {
    VolumesClient::new(s.runtime.clone())
}

/// `GET /volumes?filters=`: `{"Volumes": […], "Warnings": []}`.
pub async fn list(State(s): State<Services>, filters: Filters) -> Result<Response, ApiError> {
    let keep = dv::volume_filter(&filters.pairs()?).map_err(ApiError::bad_parameter)?;
    let mut list = volumes(&s)
        .list(s.req(vapi::ListVolumesRequest { usage: false }))
        .await?
        .into_inner()
        .volumes;
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let out: Vec<Value> = list
        .iter()
        .filter(|v| keep(v))
        .map(dv::volume_inspect)
        .collect();
    Ok(json_body(&json!({"Volumes": out, "Warnings": []})).into_response())
}

/// `GET /volumes/{name}`.
pub async fn inspect(
    State(s): State<Services>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let v = volumes(&s)
        .get(s.req(vapi::GetVolumeRequest { name }))
        .await?
        .into_inner();
    Ok(json_body(&dv::volume_inspect(&v)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    name: String,
    driver: String,
    driver_opts: HashMap<String, String>,
    labels: HashMap<String, String>,
}

/// `POST /volumes/create` (Name — empty for a generated one —, Driver local, Labels): 201
/// with the volume; driver options berth has none of are a 400.
pub async fn create(
    State(s): State<Services>,
    Json(b): Json<CreateBody>,
) -> Result<Response, ApiError> {
    if !matches!(b.driver.as_str(), "" | "local") {
        return Err(ApiError::bad_parameter(format!(
            "volume driver {:?} is not supported: use local",
            b.driver
        )));
    }
    if let Some(k) = b.driver_opts.keys().next() {
        return Err(ApiError::bad_parameter(format!(
            "volume driver option {k:?} is not supported"
        )));
    }
    let v = volumes(&s)
        .create(s.req(vapi::CreateVolumeRequest {
            name: b.name,
            labels: b.labels,
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, json_body(&dv::volume_inspect(&v))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    force: Option<String>,
}

/// `DELETE /volumes/{name}?force=`: 204; one in use is a 409.
pub async fn remove(
    State(s): State<Services>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<Response, ApiError> {
    let force = matches!(q.force.as_deref(), Some("1" | "true" | "True"));
    volumes(&s)
        .remove(s.req(vapi::RemoveVolumeRequest { name, force }))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /volumes/prune?filters=`: API 1.41's prune removes every unused volume, named or
/// anonymous (the `label` filters narrow it); `{"VolumesDeleted": […], "SpaceReclaimed": N}`.
pub async fn prune(State(s): State<Services>, filters: Filters) -> Result<Response, ApiError> {
    let filters = filters.pairs()?;
    let r = volumes(&s)
        .prune(s.req(vapi::PruneVolumesRequest { all: true, filters }))
        .await?
        .into_inner();
    Ok(json_body(&json!({
        "VolumesDeleted": r.deleted,
        "SpaceReclaimed": r.space_reclaimed,
    }))
    .into_response())
}
