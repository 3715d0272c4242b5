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

/// Pushes image `name` (with `tag` when given: Docker's CLI sends the tag apart). A
/// repository named without a tag pushes every tag berth holds of it, as Docker's API does
/// (`docker push --all-tags`).
pub async fn push(
    s: Services,
    headers: &HeaderMap,
    name: &str,
    tag: &str,
) -> Result<Response, ApiError> {
    // The request's own credentials, else berth's stored login.
    let auth = registry_auth(headers)?;
    let bad = |e: berth_core::reference::ReferenceError| ApiError::bad_parameter(e.to_string());
    let named = Reference::parse_name_only(name).map_err(bad)?;
    let references = if !tag.is_empty() {
        vec![Reference::parse(&format!("{name}:{tag}")).map_err(bad)?]
    } else if named.tag().is_some() || named.digest().is_some() {
        vec![named.clone()]
    } else {
        repository_tags(&s, &named).await?
    };
    if references.is_empty() {
        return Err(no_such_image(&named));
    }
    // A missing image is a 404 before the stream starts, as Docker answers.
    for reference in &references {
        images(&s)
            .get(s.req(api::GetImageRequest {
                name: reference.to_string(),
            }))
            .await
            .map_err(|e| match e.code() {
                tonic::Code::NotFound => no_such_image(reference),
                _ => ApiError::from(e),
            })?;
    }
    Ok(json_lines(move |lines| async move {
        // The repository's line opens the stream once, however many tags follow.
        let mut opening = None;
        for reference in references {
            stream_push(&s, reference, auth.clone(), &lines, &mut opening).await?;
        }
        Ok(())
    }))
}

/// Docker's 404 for a push of what berth does not hold.
fn no_such_image(reference: &Reference) -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        format!(
            "An image does not exist locally with the tag: {}",
            reference.familiar_repository()
        ),
    )
}

/// Every tagged name berth holds in `repository`'s repository, in tag order.
async fn repository_tags(s: &Services, repository: &Reference) -> Result<Vec<Reference>, ApiError> {
    let listed = images(s)
        .list(s.req(api::ListImagesRequest {
            filters: vec![],
            all: false,
        }))
        .await?
        .into_inner()
        .images;
    let names = listed
        .iter()
        .filter_map(|summary| summary.image.as_ref())
        .map(|image| image.name.as_str());
    Ok(tags_of(repository, names))
}

/// The names among `names` that are tags of `repository`'s repository, sorted by tag.
fn tags_of<'a>(repository: &Reference, names: impl Iterator<Item = &'a str>) -> Vec<Reference> {
    let wanted = repository.repository();
    let mut tags: Vec<Reference> = names
        .filter_map(|n| Reference::parse_name_only(n).ok())
        .filter(|r| r.tag().is_some() && r.digest().is_none() && r.repository() == wanted)
        .collect();
    tags.sort_by(|a, b| a.tag().cmp(&b.tag()));
    tags.dedup();
    tags
}

/// Pushes one tag, its progress sent as Docker's lines; `opening` keeps the stream's first
/// line (the repository's), which a later tag's push does not repeat.
async fn stream_push(
    s: &Services,
    reference: Reference,
    auth: Option<RegistryAuth>,
    lines: &Lines,
    opening: &mut Option<serde_json::Value>,
) -> Result<(), String> {
    let mut stream = images(s)
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
                    match opening {
                        None => *opening = Some(line.clone()),
                        Some(first) if *first == line => continue,
                        Some(_) => {}
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_push_takes_each_of_its_tags() {
        let repo = Reference::parse_name_only("127.0.0.1:5000/app").unwrap();
        let names = [
            "127.0.0.1:5000/app:b",
            "127.0.0.1:5000/app:a",
            "127.0.0.1:5000/other:a",
            "127.0.0.1:5000/app/sub:c",
            "docker.io/library/app:a",
            "sha256:0123",
        ];
        let tags: Vec<String> = tags_of(&repo, names.into_iter())
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(tags, ["127.0.0.1:5000/app:a", "127.0.0.1:5000/app:b"]);
    }
}
