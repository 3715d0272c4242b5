//! Manifests by tag or digest, tag lists and the catalog.
//!
//! A manifest is accepted when it is JSON of a media type berth knows (OCI or Docker schema 2
//! manifest or index; the `Content-Type` wins, the body's `mediaType` must agree with it) and
//! everything it names is already in the repository: a manifest's config and layers (layers
//! with `urls`, which live elsewhere, excepted), an index's manifests.

use super::blobs::parse_digest;
use super::errors::{ApiError, ApiResult};
use super::{respond, Params, Registry};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use berth_core::media::{self, MAX_MANIFEST_SIZE};
use berth_core::Digest;
use futures::StreamExt;
use http::{header, StatusCode};
use serde_json::Value;

fn is_known(media_type: &str) -> bool {
    media::is_manifest(media_type) || media::is_index(media_type)
}

/// A tag as the spec allows it: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// The digest a manifest reference (tag or digest) names in `name`, if any.
fn lookup(registry: &Registry, name: &str, reference: &str) -> ApiResult<Option<Digest>> {
    let m = &registry.metadata;
    if reference.contains(':') {
        let d = parse_digest(reference)?;
        Ok(m.has_manifest(name, &d)?.then_some(d))
    } else if valid_tag(reference) {
        Ok(m.resolve_tag(name, reference)?)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            "invalid tag",
        ))
    }
}

pub(super) async fn get(
    registry: &Registry,
    name: &str,
    reference: &str,
    head: bool,
) -> ApiResult<Response> {
    let Some(digest) = lookup(registry, name, reference)? else {
        if !registry.metadata.repository_exists(name)? {
            return Err(ApiError::name_unknown(name));
        }
        return Err(ApiError::manifest_unknown(reference));
    };
    let media_type = registry
        .metadata
        .media_type(&digest)?
        .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    let body = match registry.blobs.read_small(&digest, MAX_MANIFEST_SIZE).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::manifest_unknown(reference))
        }
        Err(e) => return Err(e.into()),
    };
    let size = body.len() as u64;
    Ok(manifest_response(
        &media_type,
        &digest,
        size,
        (!head).then_some(body),
    ))
}

/// A manifest as an HTTP answer, without a body for HEAD (also used by the mirror).
pub(super) fn manifest_response(
    media_type: &str,
    digest: &Digest,
    size: u64,
    body: Option<Vec<u8>>,
) -> Response {
    let headers = [
        ("content-type", media_type.to_string()),
        ("docker-content-digest", digest.to_string()),
        ("etag", format!("\"{digest}\"")),
        ("content-length", size.to_string()),
    ];
    respond(
        StatusCode::OK,
        &headers,
        body.map(Body::from).unwrap_or_else(Body::empty),
    )
}

pub(super) async fn put(
    registry: &Registry,
    name: &str,
    reference: &str,
    req: Request,
) -> ApiResult<Response> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let tag = if reference.contains(':') {
        None
    } else if valid_tag(reference) {
        Some(reference.to_string())
    } else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            "invalid tag",
        ));
    };
    let body = read_manifest(req.into_body()).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::manifest_invalid(format!("the manifest is not JSON: {e}")))?;
    let media_type = media_type_of(content_type.as_deref(), &value)?;
    check_references(registry, name, &media_type, &value)?;
    let digest = Digest::sha256_of(&body);
    if tag.is_none() {
        let named = parse_digest(reference)?;
        if named != digest {
            return Err(ApiError::digest_invalid(format!(
                "the manifest's digest is {digest}, not {named}"
            ))
            .detail(serde_json::json!({ "digest": named.to_string() })));
        }
    }
    registry.blobs.put_small(body).await?;
    registry.metadata.put_manifest(name, &digest, &media_type)?;
    if let Some(t) = &tag {
        registry.metadata.tag(name, t, &digest)?;
    }
    tracing::info!(repository = name, %digest, tag = tag.as_deref().unwrap_or(""), %media_type, "manifest pushed");
    Ok(respond(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/manifests/{digest}")),
            ("docker-content-digest", digest.to_string()),
            ("content-length", "0".into()),
        ],
        Body::empty(),
    ))
}

async fn read_manifest(body: Body) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::manifest_invalid(format!("the request body broke off: {e}")))?;
        out.extend_from_slice(&chunk);
        if out.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                "a manifest may be 4 MiB at most",
            ));
        }
    }
    Ok(out)
}

/// The manifest's media type: the `Content-Type` when it is one berth knows, else the body's
/// `mediaType`, else what an OCI body's shape says.
fn media_type_of(content_type: Option<&str>, value: &Value) -> ApiResult<String> {
    if !value.is_object() {
        return Err(ApiError::manifest_invalid(
            "the manifest is not a JSON object",
        ));
    }
    let declared = value.get("mediaType").and_then(Value::as_str);
    let sent = content_type.filter(|t| is_known(t));
    match (sent, declared) {
        (Some(s), Some(d)) if s != d => Err(ApiError::manifest_invalid(format!(
            "Content-Type is {s} but the manifest says mediaType {d}"
        ))),
        (Some(s), _) => Ok(s.to_string()),
        (None, Some(d)) if is_known(d) => Ok(d.to_string()),
        (None, None) if value.get("manifests").is_some() => Ok(media::OCI_INDEX.to_string()),
        (None, None) if value.get("config").is_some() && value.get("layers").is_some() => {
            Ok(media::OCI_MANIFEST.to_string())
        }
        (_, other) => Err(ApiError::manifest_invalid(format!(
            "unsupported manifest type {:?}; this registry takes OCI and Docker schema 2 manifests and indexes",
            other.or(content_type).unwrap_or("(none)")
        ))),
    }
}

/// Everything the manifest names must be in the repository already.
fn check_references(
    registry: &Registry,
    name: &str,
    media_type: &str,
    value: &Value,
) -> ApiResult<()> {
    if value.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(ApiError::manifest_invalid("schemaVersion must be 2"));
    }
    let digest_of = |d: &Value, field: &str| -> ApiResult<Digest> {
        let s = d.get("digest").and_then(Value::as_str).ok_or_else(|| {
            ApiError::manifest_invalid(format!("a descriptor in {field} has no digest"))
        })?;
        s.parse()
            .map_err(|e| ApiError::manifest_invalid(format!("{field}: {e}")))
    };
    let missing = |d: &Digest, what: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!("the manifest names {what} {d}, which is not in the repository; push it first"),
        )
        .detail(serde_json::json!({ "digest": d.to_string() }))
    };
    let m = &registry.metadata;
    if media::is_index(media_type) {
        let list = value
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::manifest_invalid("an index needs a manifests list"))?;
        for d in list {
            let digest = digest_of(d, "manifests")?;
            if !m.has_manifest(name, &digest)? {
                return Err(missing(&digest, "manifest"));
            }
        }
        return Ok(());
    }
    let config = value
        .get("config")
        .ok_or_else(|| ApiError::manifest_invalid("a manifest needs a config"))?;
    let config = digest_of(config, "config")?;
    if !m.has_blob(name, &config)? {
        return Err(missing(&config, "config"));
    }
    let layers = value
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::manifest_invalid("a manifest needs a layers list"))?;
    for layer in layers {
        let digest = digest_of(layer, "layers")?;
        let elsewhere = layer
            .get("urls")
            .and_then(Value::as_array)
            .is_some_and(|u| !u.is_empty());
        if !elsewhere && !m.has_blob(name, &digest)? {
            return Err(missing(&digest, "layer"));
        }
    }
    Ok(())
}

pub(super) fn delete(registry: &Registry, name: &str, reference: &str) -> ApiResult<Response> {
    let m = &registry.metadata;
    let removed = if reference.contains(':') {
        m.delete_manifest(name, &parse_digest(reference)?)?
    } else {
        m.untag(name, reference)?
    };
    if !removed {
        return Err(ApiError::manifest_unknown(reference));
    }
    tracing::info!(repository = name, reference, "manifest deleted");
    Ok(respond(
        StatusCode::ACCEPTED,
        &[("content-length", "0".into())],
        Body::empty(),
    ))
}

/// `n` and `last` of a paginated list: at most `n` (all when absent), after `last`.
fn page(params: &Params) -> ApiResult<(usize, Option<&str>)> {
    let n = match params.get("n") {
        Some(n) => n.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                "n must be a number",
            )
        })?,
        None => usize::MAX - 1,
    };
    Ok((n, params.get("last").map(String::as_str)))
}

/// A JSON list answer, with `Link: <…?n=&last=>; rel="next"` when there may be more.
fn listing(path: &str, value: Value, n: usize, more: Option<&str>) -> Response {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(last) = more {
        headers.push(("link", format!("<{path}?n={n}&last={last}>; rel=\"next\"")));
    }
    respond(StatusCode::OK, &headers, Body::from(value.to_string()))
}

pub(super) fn tags(registry: &Registry, name: &str, params: &Params) -> ApiResult<Response> {
    let (n, last) = page(params)?;
    if !registry.metadata.repository_exists(name)? {
        return Err(ApiError::name_unknown(name));
    }
    let mut tags = registry.metadata.tags(name, last, n.saturating_add(1))?;
    let more = tags.len() > n;
    tags.truncate(n);
    let next = more.then(|| tags.last().cloned()).flatten();
    let body = serde_json::json!({ "name": name, "tags": tags });
    Ok(listing(
        &format!("/v2/{name}/tags/list"),
        body,
        n,
        next.as_deref(),
    ))
}

pub(super) fn catalog(registry: &Registry, params: &Params) -> ApiResult<Response> {
    let (n, last) = page(params)?;
    let mut repos = registry.metadata.repositories(last, n.saturating_add(1))?;
    let more = repos.len() > n;
    repos.truncate(n);
    let next = more.then(|| repos.last().cloned()).flatten();
    let body = serde_json::json!({ "repositories": repos });
    Ok(listing("/v2/_catalog", body, n, next.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_from_header_or_body() {
        let oci = serde_json::json!({"schemaVersion": 2, "config": {}, "layers": []});
        assert_eq!(
            media_type_of(Some(media::DOCKER_MANIFEST), &oci).unwrap(),
            media::DOCKER_MANIFEST
        );
        assert_eq!(media_type_of(None, &oci).unwrap(), media::OCI_MANIFEST);
        assert_eq!(
            media_type_of(Some("application/json"), &oci).unwrap(),
            media::OCI_MANIFEST
        );
        let declared = serde_json::json!({"mediaType": media::OCI_INDEX, "manifests": []});
        assert_eq!(media_type_of(None, &declared).unwrap(), media::OCI_INDEX);
        let e = media_type_of(Some(media::OCI_MANIFEST), &declared).unwrap_err();
        assert_eq!(e.code, "MANIFEST_INVALID");
        let v1 = serde_json::json!({"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"});
        assert_eq!(
            media_type_of(None, &v1).unwrap_err().code,
            "MANIFEST_INVALID"
        );
        assert!(media_type_of(None, &serde_json::json!([1])).is_err());
    }

    #[test]
    fn tags_follow_the_spec() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d"] {
            assert!(valid_tag(good), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }
}
