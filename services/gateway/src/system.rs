//! `/_ping`, `/version`, `/info` and `/system/df`.

use crate::error::{json_body, ApiError};
use crate::version::{API_VERSION, MIN_API_VERSION};
use crate::Services;
use axum::extract::State;
use axum::response::IntoResponse;
use berth_api::containers::v1::{
    containers_client::ContainersClient, Container, ContainerSizesRequest, ListContainersRequest,
};
use berth_api::images::v1::{images_client::ImagesClient, ListImagesRequest};
use berth_api::version::v1::{version_client::VersionClient, VersionRequest};
use berth_api::volumes::v1::{volumes_client::VolumesClient, ListVolumesRequest};
use berth_docker::host;
use serde_json::json;

/// `/_ping`, `/version`, `/info`, `/system/df`.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::get;
    axum::Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/system/df", get(df))
}

/// `GET|HEAD /_ping`: "OK", never cached.
pub async fn ping() -> impl IntoResponse {
    (
        [
            (
                http::header::CACHE_CONTROL,
                "no-cache, no-store, must-revalidate",
            ),
            (http::header::PRAGMA, "no-cache"),
            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::HeaderName::from_static("builder-version"), "1"),
        ],
        "OK",
    )
}

/// `GET /version`.
pub async fn version(State(s): State<Services>) -> Result<impl IntoResponse, ApiError> {
    let v = VersionClient::new(s.version.clone())
        .version(s.req(VersionRequest {}))
        .await?
        .into_inner();
    let kernel = if v.kernel.is_empty() {
        host::kernel_version()
    } else {
        v.kernel
    };
    // The engine's fields, shown at the top and again as its component's details (as
    // Docker does).
    let engine = json!({
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": v.revision,
        "GoVersion": "n/a (Rust)",
        "Os": "linux",
        "Arch": host::go_arch(),
        "KernelVersion": kernel,
        "BuildTime": "",
    });
    let mut details = engine.clone();
    details["Experimental"] = json!("false");
    let mut out = engine;
    out["Platform"] = json!({"Name": format!("berth {}", v.version)});
    out["Components"] = json!([{"Name": "Engine", "Version": v.version, "Details": details}]);
    out["Version"] = json!(v.version);
    Ok(json_body(&out))
}

/// The containers (every one) and how many of them run, and how many are paused.
async fn containers(s: &Services) -> Result<(Vec<Container>, usize, usize), ApiError> {
    let containers = ContainersClient::new(s.runtime.clone())
        .list(s.req(ListContainersRequest {}))
        .await?
        .into_inner()
        .containers;
    let state = |c: &Container| c.state.clone().unwrap_or_default();
    let running = containers
        .iter()
        .filter(|c| state(c).status == "running")
        .count();
    let paused = containers.iter().filter(|c| state(c).paused).count();
    Ok((containers, running, paused))
}

/// Docker's image list entries.
async fn image_entries(s: &Services) -> Result<Vec<serde_json::Value>, ApiError> {
    let images = ImagesClient::new(s.image.clone())
        .max_decoding_message_size(64 << 20)
        .list(s.req(ListImagesRequest {
            filters: vec![],
            all: false,
        }))
        .await?
        .into_inner()
        .images;
    Ok(berth_docker::image_list(&images))
}

/// `GET /info`: the counts come from the runtime and image services; berth-docker shapes
/// them as the CLI's `berth info` does.
pub async fn info(State(s): State<Services>) -> Result<impl IntoResponse, ApiError> {
    let (containers, running, paused) = containers(&s).await?;
    let figures = berth_docker::system::InfoFigures {
        containers: containers.len(),
        running,
        paused,
        images: image_entries(&s).await?.len(),
        root: s.root.display().to_string(),
        snapshotter: s.snapshotter.clone(),
        server_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok(json_body(&berth_docker::system::info_json(&figures)))
}

/// `GET /system/df`: images with their users, containers, volumes with their sizes.
pub async fn df(State(s): State<Services>) -> Result<impl IntoResponse, ApiError> {
    let (containers, _, _) = containers(&s).await?;
    let volumes = VolumesClient::new(s.runtime.clone())
        .list(s.req(ListVolumesRequest { usage: true }))
        .await?
        .into_inner()
        .volumes;
    let ids = containers.iter().map(|c| c.id.clone()).collect();
    let sizes = ContainersClient::new(s.runtime.clone())
        .sizes(s.req(ContainerSizesRequest { ids }))
        .await?
        .into_inner()
        .sizes;
    let df = berth_docker::system::df_json(image_entries(&s).await?, &containers, &sizes, &volumes);
    Ok(json_body(&df))
}
