//! A container's files and settings: `changes` (`docker diff`), `export`, `archive`
//! (`docker cp`: HEAD for the path's stat, GET for a tar of it, PUT to unpack one into it),
//! `rename` and `update`, over the Containers service's RPCs of the same names.
//!
//! A tar goes through as a stream either way, never held whole: the runtime's chunks become
//! the body of an answer; a request's body becomes the chunks of `ArchivePut`. The path stat
//! header and the changes' JSON are berth-docker's ([`berth_docker::files`]), the views the
//! CLI shows too.

use crate::error::{json_body, ApiError};
use crate::request::truthy;
use crate::request::{Json, Path, Query};
use crate::Services;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::containers::v1 as api;
use berth_api::containers::v1::containers_client::ContainersClient;
use futures::StreamExt as _;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tonic::transport::Channel;

/// Docker's header with the stat of a path `docker cp` names.
const PATH_STAT: &str = "x-docker-container-path-stat";

/// `/containers/{id}/changes|export|archive|rename|update`.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/containers/{id}/changes", get(changes))
        .route("/containers/{id}/export", get(export))
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/update", post(update))
}

fn containers(s: &Services) -> ContainersClient<Channel> {
    ContainersClient::new(s.runtime.clone())
}

/// `GET /containers/{id}/changes`: `[{"Path":"/tmp","Kind":0},…]`.
pub async fn changes(
    State(s): State<Services>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = containers(&s)
        .changes(s.req(api::ContainerChangesRequest { id }))
        .await?
        .into_inner();
    Ok(json_body(&berth_docker::files::changes_json(&r.changes)).into_response())
}

/// A stream of chunks as a tar body; an error midway ends the body (the client sees a
/// truncated tar, as with Docker).
fn tar_body(stream: tonic::Streaming<api::ArchiveChunk>) -> Body {
    Body::from_stream(stream.map(|c| c.map(|c| Bytes::from(c.data))))
}

fn tar_response(body: Body) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    resp
}

/// `GET /containers/{id}/export`: a tar of its filesystem.
pub async fn export(
    State(s): State<Services>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stream = containers(&s)
        .export(s.req(api::ExportContainerRequest { id }))
        .await?
        .into_inner();
    Ok(tar_response(tar_body(stream)))
}

#[derive(Debug, Deserialize)]
pub struct ArchiveQuery {
    path: Option<String>,
    #[serde(rename = "noOverwriteDirNonDir")]
    no_overwrite_dir_non_dir: Option<String>,
    #[serde(rename = "copyUIDGID")]
    copy_uid_gid: Option<String>,
}

fn archive_request(
    id: String,
    q: ArchiveQuery,
) -> Result<(String, ArchiveQuery, String), ApiError> {
    let path = q.path.clone().unwrap_or_default();
    if path.is_empty() {
        return Err(ApiError::bad_parameter("path cannot be empty"));
    }
    Ok((id, q, path))
}

fn stat_header(stat: &api::PathStat) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&berth_docker::files::path_stat_header(stat))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `HEAD /containers/{id}/archive?path=`: the path's stat in the header.
pub async fn archive_head(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let (id, _, path) = archive_request(id, q)?;
    let stat = containers(&s)
        .archive_stat(s.req(api::ArchivePathRequest { id, path }))
        .await?
        .into_inner();
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut().insert(PATH_STAT, stat_header(&stat)?);
    Ok(resp)
}

/// `GET /containers/{id}/archive?path=`: a tar of the path, named by its base name, and its
/// stat in the header.
pub async fn archive_get(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> Result<Response, ApiError> {
    let (id, _, path) = archive_request(id, q)?;
    let mut stream = containers(&s)
        .archive_get(s.req(api::ArchivePathRequest { id, path }))
        .await?
        .into_inner();
    // The first chunk carries the stat (and tells a missing path before the answer starts).
    let first = stream.message().await?.unwrap_or_default();
    let header = first.stat.as_ref().map(stat_header).transpose()?;
    let rest = tar_body(stream);
    let body = Body::from_stream(
        futures::stream::once(async move { Ok::<_, tonic::Status>(Bytes::from(first.data)) })
            .chain(
                rest.into_data_stream()
                    .map(|r| r.map_err(|e| tonic::Status::internal(e.to_string()))),
            ),
    );
    let mut resp = tar_response(body);
    if let Some(h) = header {
        resp.headers_mut().insert(PATH_STAT, h);
    }
    Ok(resp)
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`: unpacks the tar
/// body into folder `path`.
pub async fn archive_put(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let (id, q, path) = archive_request(id, q)?;
    let first = api::ArchivePutRequest {
        id,
        path,
        no_overwrite_dir_non_dir: truthy(&q.no_overwrite_dir_non_dir),
        copy_uid_gid: truthy(&q.copy_uid_gid),
        data: Vec::new(),
    };
    // A body that breaks off ends the stream; the runtime then finds the tar cut short.
    let chunks = body
        .into_data_stream()
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(|r| futures::future::ready(r.ok()))
        .map(|data| api::ArchivePutRequest {
            data: data.to_vec(),
            ..Default::default()
        });
    let requests = futures::stream::once(async move { first }).chain(chunks);
    containers(&s).archive_put(s.req(requests)).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Debug, Deserialize)]
pub struct RenameQuery {
    name: Option<String>,
}

/// `POST /containers/{id}/rename?name=`: 204.
pub async fn rename(
    State(s): State<Services>,
    Path(id): Path<String>,
    Query(q): Query<RenameQuery>,
) -> Result<Response, ApiError> {
    let new_name = q.name.unwrap_or_default();
    if new_name.is_empty() {
        return Err(ApiError::bad_parameter(
            "Neither old nor new names may be empty",
        ));
    }
    containers(&s)
        .rename(s.req(api::RenameContainerRequest { id, new_name }))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/{id}/update`: `{"Warnings":[]}`.
pub async fn update(
    State(s): State<Services>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    // No body is no change, as an empty object.
    let body = if body.is_null() { json!({}) } else { body };
    let mut request = update_request(&body).map_err(ApiError::bad_parameter)?;
    request.id = id;
    let r = containers(&s).update(s.req(request)).await?.into_inner();
    Ok(json_body(&json!({ "Warnings": r.warnings })).into_response())
}

/// The fields of Docker's UpdateConfig berth supports; 0 (or absent) keeps a value, as in
/// Docker. Any other field with a value is refused, named.
pub fn update_request(body: &Value) -> Result<api::UpdateContainerRequest, String> {
    let obj = body
        .as_object()
        .ok_or("the update body must be a JSON object")?;
    let int = |k: &str| -> Result<Option<i64>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("{k} must be an integer")),
        }
    };
    let mut r = api::UpdateContainerRequest::default();
    let mut unsupported = Vec::new();
    for (k, v) in obj {
        let set = match v {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Bool(true) => true,
        };
        match k.as_str() {
            "Memory" | "NanoCpus" | "NanoCPUs" | "PidsLimit" | "RestartPolicy" | "CpuQuota"
            | "CpuPeriod" => {}
            "MemorySwap" if matches!(int(k)?, None | Some(0) | Some(-1)) => {}
            _ if set => unsupported.push(k.clone()),
            _ => {}
        }
    }
    if !unsupported.is_empty() {
        unsupported.sort();
        return Err(format!(
            "berth cannot update {} of a container; it updates Memory, NanoCpus (or CpuQuota and CpuPeriod), PidsLimit and RestartPolicy",
            unsupported.join(", ")
        ));
    }
    r.memory = int("Memory")?.filter(|m| *m != 0);
    r.nano_cpus = match (int("NanoCpus")?.or(int("NanoCPUs")?), int("CpuQuota")?) {
        (Some(n), _) if n != 0 => Some(n),
        (_, Some(q)) if q > 0 => {
            let period = int("CpuPeriod")?.filter(|p| *p > 0).unwrap_or(100_000);
            Some(q * 1_000_000_000 / period)
        }
        _ => None,
    };
    r.pids_limit = int("PidsLimit")?;
    if let Some(p) = obj.get("RestartPolicy").filter(|p| !p.is_null()) {
        let name = p.get("Name").and_then(Value::as_str).unwrap_or_default();
        if !name.is_empty() {
            r.restart_policy = Some(api::RestartPolicy {
                name: name.to_string(),
                maximum_retry_count: p
                    .get("MaximumRetryCount")
                    .and_then(Value::as_i64)
                    .unwrap_or(0) as i32,
            });
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_bodies_as_docker_cli_sends_them() {
        // docker 20.10's `update --memory 64m --pids-limit 20`: every field, zeros unset.
        let body = json!({"BlkioWeight":0,"CpuShares":0,"Memory":67108864,"MemorySwap":0,
            "NanoCpus":0,"CpuQuota":0,"KernelMemory":0,"PidsLimit":20,
            "RestartPolicy":{"Name":"","MaximumRetryCount":0},"CpusetCpus":""});
        let r = update_request(&body).unwrap();
        assert_eq!(r.memory, Some(64 << 20));
        assert_eq!(r.pids_limit, Some(20));
        assert_eq!(r.nano_cpus, None);
        assert!(r.restart_policy.is_none());
        let r = update_request(&json!({"CpuQuota":50000,"CpuPeriod":100000})).unwrap();
        assert_eq!(r.nano_cpus, Some(500_000_000));
        let r =
            update_request(&json!({"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}}))
                .unwrap();
        assert_eq!(r.restart_policy.unwrap().maximum_retry_count, 3);
    }

    #[test]
    fn unsupported_update_fields_are_named() {
        let e = update_request(&json!({"CpuShares":512,"BlkioWeight":300,"Memory":0})).unwrap_err();
        assert!(e.contains("BlkioWeight, CpuShares"), "{e}");
        let e = update_request(&json!({"MemorySwap":1000000})).unwrap_err();
        assert!(e.contains("MemorySwap"), "{e}");
        assert!(update_request(&json!([1])).is_err());
        assert!(update_request(&json!({"Memory":"x"})).is_err());
    }
}
