//! `POST /images/create` (`docker pull`; `docker import` is [`crate::import`]): the image service's Pull, streamed as Docker's JSON
//! progress (berth-docker words every line), ending with the manifest's digest and whether
//! the image was new.

use crate::auth::registry_auth;
use crate::error::ApiError;
use crate::images::images;
use crate::request::Params;
use crate::request::Query;
use crate::stream::{json_lines, Lines};
use crate::Services;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use berth_api::images::v1 as api;
use berth_core::Reference;
use http::HeaderMap;
use serde::Deserialize;
use tokio_stream::StreamExt as _;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateQuery {
    from_image: Option<String>,
    from_src: Option<String>,
    tag: Option<String>,
    platform: Option<String>,
}

/// The reference `fromImage` and `tag` name: `tag` may be a tag or a digest, and `fromImage`
/// may carry either itself.
pub fn pull_reference(from_image: &str, tag: &str) -> Result<Reference, ApiError> {
    let name = match tag {
        "" => from_image.to_string(),
        t if t.contains(':') => format!("{from_image}@{t}"),
        t => format!("{from_image}:{t}"),
    };
    Reference::parse(&name).map_err(|e| ApiError::bad_parameter(e.to_string()))
}

/// `POST /images/create?fromImage=&tag=&platform=`.
/// With `fromSrc` it is `docker import` instead ([`crate::import`]).
pub async fn create(
    State(s): State<Services>,
    headers: HeaderMap,
    Query(q): Query<CreateQuery>,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    if q.from_src.is_some() {
        return crate::import::import(s, params, body).await;
    }
    let from = q.from_image.unwrap_or_default();
    if from.is_empty() {
        return Err(ApiError::bad_parameter("fromImage or fromSrc is required"));
    }
    let reference = pull_reference(&from, q.tag.as_deref().unwrap_or(""))?;
    // The request's own credentials, else berth's stored login.
    let auth = registry_auth(&headers)?;
    let before = images(&s)
        .get(s.req(api::GetImageRequest {
            name: reference.to_string(),
        }))
        .await
        .ok()
        .and_then(|r| r.into_inner().image)
        .and_then(|i| i.target)
        .map(|t| t.digest);
    let request = api::PullRequest {
        reference: reference.to_string(),
        platform: berth_docker::platform(q.platform.as_deref().unwrap_or("")),
        unpack: true,
        snapshotter: String::new(),
        auth,
    };
    Ok(json_lines(move |lines| async move {
        pull(s, reference, request, before, lines).await
    }))
}

async fn pull(
    s: Services,
    reference: Reference,
    request: api::PullRequest,
    before: Option<String>,
    lines: Lines,
) -> Result<(), String> {
    let shown_as = reference
        .tag()
        .map(str::to_string)
        .or_else(|| reference.digest().map(|d| d.to_string()))
        .unwrap_or_default();
    lines
        .send(berth_docker::pull_header(reference.path(), &shown_as))
        .await;
    let mut stream = images(&s)
        .pull(s.req(request))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut image = None;
    while let Some(m) = stream.next().await {
        match m.map_err(|e| e.message().to_string())?.item {
            Some(api::pull_response::Item::Progress(p)) => {
                if let Some(line) = berth_docker::pull_progress(&p) {
                    if !lines.send(line).await {
                        return Ok(());
                    }
                }
            }
            Some(api::pull_response::Item::Image(i)) => image = Some(i),
            None => {}
        }
    }
    let digest = image
        .and_then(|i| i.target)
        .map(|t| t.digest)
        .ok_or_else(|| format!("the pull of {reference} ended without an image"))?;
    let newer = before.as_deref() != Some(digest.as_str());
    for line in berth_docker::pull_trailer(&digest, &reference.familiar(), newer) {
        lines.send(line).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_or_digest() {
        let r = |f: &str, t: &str| pull_reference(f, t).map(|r| r.to_string());
        assert_eq!(
            r("busybox", "latest").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            r("busybox:1.36", "").unwrap(),
            "docker.io/library/busybox:1.36"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(r("r:5000/x", &d).unwrap(), format!("r:5000/x@{d}"));
        assert_eq!(r("UPPER/Case", ":bad").unwrap_err().status, 400);
    }
}
