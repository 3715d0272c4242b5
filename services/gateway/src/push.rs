//! `POST /images/{name}/push?tag=` (`docker push`): the image service's Push, streamed as
//! Docker's JSON progress, ending with the digest line and the `aux` record docker-py reads.

use crate::auth::registry_auth;
use crate::error::ApiError;
use crate::images::images;
use crate::stream::{json_lines, Lines};
use crate::Services;
use axum::response::Response;
use berth_api::images::v1 as api;
use berth_api::types::v1::RegistryAuth;
use berth_core::Reference;
use http::HeaderMap;
use tokio_stream::StreamExt as _;

/// Pushes image `name` (with `tag` when given: Docker's CLI sends the tag apart).
pub async fn push(
    s: Services,
    headers: &HeaderMap,
    name: &str,
    tag: &str,
) -> Result<Response, ApiError> {
    // The request's own credentials, else berth's stored login.
    let auth = registry_auth(headers)?;
    let full = if tag.is_empty() {
        name.to_string()
    } else {
        format!("{name}:{tag}")
    };
    let reference = Reference::parse(&full).map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    // A missing image is a 404 before the stream starts, as Docker answers.
    images(&s)
        .get(s.req(api::GetImageRequest {
            name: reference.to_string(),
        }))
        .await
        .map_err(|e| match e.code() {
            tonic::Code::NotFound => ApiError::new(
                http::StatusCode::NOT_FOUND,
                format!(
                    "An image does not exist locally with the tag: {}",
                    reference.familiar_repository()
                ),
            ),
            _ => ApiError::from(e),
        })?;
    Ok(json_lines(move |lines| async move {
        stream_push(s, reference, auth, lines).await
    }))
}

async fn stream_push(
    s: Services,
    reference: Reference,
    auth: Option<RegistryAuth>,
    lines: Lines,
) -> Result<(), String> {
    let mut stream = images(&s)
        .push(s.req(api::PushRequest {
            reference: reference.to_string(),
            source: String::new(),
            auth,
        }))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut pushed = None;
    while let Some(m) = stream.next().await {
        match m.map_err(|e| e.message().to_string())?.item {
            Some(api::push_response::Item::Progress(p)) => {
                if let Some(line) = berth_docker::push_progress(&p) {
                    if !lines.send(line).await {
                        return Ok(());
                    }
                }
            }
            Some(api::push_response::Item::Pushed(d)) => pushed = Some(d),
            None => {}
        }
    }
    let d = pushed.ok_or_else(|| format!("the push of {reference} ended without a manifest"))?;
    let tag = reference.tag().unwrap_or("latest");
    for line in berth_docker::push_trailer(tag, &d.digest, d.size) {
        lines.send(line).await;
    }
    Ok(())
}
