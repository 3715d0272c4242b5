//! Mirror mode, containerd's convention: a client configured with
//! `mirrors = ["http://PROXY"]` for registry `R` asks `PROXY/v2/<repo>/manifests/<ref>?ns=R`
//! and `…/blobs/<digest>?ns=R`. These are answered from the pull-through cache, and on a miss
//! fetched from `R` through the proxy's own [`RegistryService`](crate::RegistryService) (with
//! `R`'s credentials, TLS and insecure settings from berthd's config), verified while they
//! stream to the client, and kept.
//!
//! A tag is resolved upstream each time (a tag moves); when upstream cannot be reached, the
//! digest it last resolved to is served (see [`RegistryService::resolve`]). A digest is
//! answered from the cache without asking upstream only when upstream served it for the
//! same repository (`R/<repo>`) before ([`Reuse::Linked`]): content cached for another
//! repository, and what was pushed to the proxy's own registry, is never handed out under
//! a name that did not hold it. For such a digest upstream is asked, and decides.
//!
//! [`RegistryService::resolve`]: crate::RegistryService::resolve

use super::blobs::{parse_digest, serve_file};
use super::errors::{ApiError, ApiResult};
use super::manifests::manifest_response;
use super::{respond, Registry};
use crate::cache::Reuse;
use axum::body::Body;
use axum::response::Response;
use berth_api::types::v1 as types;
use berth_core::media::MAX_MANIFEST_SIZE;
use futures::StreamExt;
use http::{HeaderMap, StatusCode};

/// The upstream repository `ns/name`, checked as a reference and normalized
/// (`docker.io/busybox` is `docker.io/library/busybox`).
fn upstream(ns: &str, name: &str) -> ApiResult<String> {
    let repository =
        berth_core::Reference::parse_name_only(&format!("{ns}/{name}")).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                format!("?ns={ns}: {e}"),
            )
        })?;
    Ok(repository.repository())
}

pub(super) async fn manifest(
    registry: &Registry,
    ns: &str,
    name: &str,
    reference: &str,
    head: bool,
) -> ApiResult<Response> {
    let repository = upstream(ns, name)?;
    let full = if reference.contains(':') {
        parse_digest(reference)?;
        format!("{repository}@{reference}")
    } else {
        format!("{repository}:{reference}")
    };
    let (_, descriptor) = registry.service.resolve_with(&full, Reuse::Linked).await?;
    if head {
        return Ok(manifest_response(
            &descriptor.media_type,
            &descriptor.digest,
            descriptor.size,
            None,
        ));
    }
    let proto = types::Descriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.to_string(),
        size: i64::try_from(descriptor.size).unwrap_or(0),
        annotations: Default::default(),
    };
    let fetched = registry
        .service
        .fetch_with(&repository, &proto, true, Reuse::Linked)
        .await?;
    let mut body = Vec::new();
    let mut stream = fetched.stream;
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "MANIFEST_INVALID",
                "the upstream manifest is larger than 4 MiB",
            ));
        }
    }
    tracing::debug!(%full, digest = %descriptor.digest, "mirrored manifest");
    Ok(manifest_response(
        &descriptor.media_type,
        &descriptor.digest,
        body.len() as u64,
        Some(body),
    ))
}

pub(super) async fn blob(
    registry: &Registry,
    ns: &str,
    name: &str,
    digest: &str,
    head: bool,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let digest = parse_digest(digest)?;
    let repository = upstream(ns, name)?;
    let served = match registry.service.cache() {
        Some(cache) => cache.served(&repository, &digest)?,
        None => false,
    };
    if served && registry.blobs.contains(&digest) {
        return serve_file(&registry.blobs.path(&digest), &digest, head, headers).await;
    }
    let proto = types::Descriptor {
        digest: digest.to_string(),
        ..Default::default()
    };
    // A miss streams the whole blob (a Range is not honoured until it is cached for this
    // repository); a HEAD starts the download too, which goes on into the cache after the
    // answer, unless the digest is already stored for another repository.
    let fetched = registry
        .service
        .fetch_with(&repository, &proto, false, Reuse::Linked)
        .await
        .map_err(|e| match e {
            crate::Error::NotFound { .. } => ApiError::blob_unknown(&digest.to_string()),
            e => e.into(),
        })?;
    let mut h = vec![
        ("content-type", "application/octet-stream".to_string()),
        ("docker-content-digest", digest.to_string()),
    ];
    if let Some(total) = fetched.total {
        h.push(("content-length", total.to_string()));
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(fetched.stream)
    };
    tracing::debug!(%repository, %digest, "mirroring blob");
    Ok(respond(StatusCode::OK, &h, body))
}
