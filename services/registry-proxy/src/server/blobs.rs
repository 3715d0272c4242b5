//! Blobs and their uploads.
//!
//! An upload session is a file `uploads/<id>` and a row naming its repository; chunks are
//! appended to the file in order (a PATCH whose `Content-Range` does not start where the
//! session ends is refused with 416), and the closing PUT hashes the whole file and renames it
//! into the store only when it is the digest the client named. Sessions live on disk, so they
//! survive a restart of berthd.
//!
//! Uploads are bounded ([`UploadLimits`], from `[registry_proxy]`): so many open at once (a
//! monolithic POST counts while it runs; past it `429 TOOMANYREQUESTS`), so many bytes each
//! (past it `413 SIZE_INVALID`, and the request's bytes are dropped), and an upload that no
//! byte reached for `upload_expiry` is removed by [`sweep_uploads`], which the server runs
//! while it serves.

use super::errors::{ApiError, ApiResult};
use super::{respond, Params, Registry};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use berth_core::Digest;
use futures::StreamExt;
use http::{header, HeaderMap, StatusCode};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// How many uploads, how large, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Uploads open at once.
    pub open: usize,
    /// Bytes one upload may hold.
    pub size: u64,
    /// An upload no byte reached for this long is removed.
    pub expiry: Duration,
}

impl UploadLimits {
    pub fn of(config: &berth_core::config::RegistryProxyConfig) -> UploadLimits {
        UploadLimits {
            open: config.max_uploads(),
            size: config.max_upload_size(),
            expiry: config.upload_expiry(),
        }
    }
}

impl Default for UploadLimits {
    fn default() -> UploadLimits {
        UploadLimits::of(&Default::default())
    }
}

pub(super) fn parse_digest(s: &str) -> ApiResult<Digest> {
    s.parse()
        .map_err(|e: berth_core::digest::DigestError| ApiError::digest_invalid(e.to_string()))
}

fn blob_location(name: &str, digest: &Digest) -> String {
    format!("/v2/{name}/blobs/{digest}")
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The `Range` header of an upload: the bytes received, inclusive (`0-0` when none).
fn received(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

pub(super) async fn get(
    registry: &Registry,
    name: &str,
    digest: &str,
    head: bool,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let digest = parse_digest(digest)?;
    let m = &registry.metadata;
    if !(m.has_blob(name, &digest)? || m.has_manifest(name, &digest)?) {
        if !m.repository_exists(name)? {
            return Err(ApiError::name_unknown(name));
        }
        return Err(ApiError::blob_unknown(&digest.to_string()));
    }
    serve_file(&registry.blobs.path(&digest), &digest, head, headers).await
}

/// A stored blob as an HTTP answer: whole, or the one byte range the request asks for.
pub(super) async fn serve_file(
    path: &Path,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ApiError::blob_unknown(&digest.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let size = file.metadata().await?.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| byte_range(v, size));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Err(())) => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                "the requested range is not in the blob",
            )
            .header(header::CONTENT_RANGE, &format!("bytes */{size}")))
        }
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
    };
    let mut h = vec![
        ("content-type", "application/octet-stream".to_string()),
        ("docker-content-digest", digest.to_string()),
        ("etag", format!("\"{digest}\"")),
        ("accept-ranges", "bytes".to_string()),
        ("content-length", len.to_string()),
    ];
    if status == StatusCode::PARTIAL_CONTENT {
        h.push((
            "content-range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        ));
    }
    let body = if head {
        Body::empty()
    } else {
        if start > 0 {
            file.seek(io::SeekFrom::Start(start)).await?;
        }
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(len),
            256 << 10,
        ))
    };
    Ok(respond(status, &h, body))
}

/// One `bytes=` range of a `Range` header as inclusive offsets: `None` when there is none
/// to honour (absent, malformed, several), `Err` when it lies outside the blob.
fn byte_range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            if n == 0 || size == 0 {
                return Some(Err(()));
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, _) => {
            let start: u64 = a.parse().ok()?;
            let end: u64 = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                b.parse::<u64>().ok()?.min(size.saturating_sub(1))
            };
            if start >= size || end < start {
                return Some(Err(()));
            }
            (start, end)
        }
        (true, true) => return None,
    };
    Some(Ok(range))
}

pub(super) fn delete(registry: &Registry, name: &str, digest: &str) -> ApiResult<Response> {
    let digest = parse_digest(digest)?;
    if !registry.metadata.unlink_blob(name, &digest)? {
        return Err(ApiError::blob_unknown(&digest.to_string()));
    }
    tracing::info!(repository = name, %digest, "blob deleted");
    Ok(respond(
        StatusCode::ACCEPTED,
        &[("content-length", "0".into())],
        Body::empty(),
    ))
}

fn created(name: &str, digest: &Digest) -> Response {
    respond(
        StatusCode::CREATED,
        &[
            ("location", blob_location(name, digest)),
            ("docker-content-digest", digest.to_string()),
            ("content-length", "0".into()),
        ],
        Body::empty(),
    )
}

/// `POST /v2/<name>/blobs/uploads/`: a cross-repository mount (`?mount=&from=`), a whole
/// blob in one request (`?digest=`), or a new session.
pub(super) async fn start_upload(
    registry: &Registry,
    name: &str,
    params: &Params,
    req: Request,
) -> ApiResult<Response> {
    let m = &registry.metadata;
    if let Some(mount) = params.get("mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = params.get("from").filter(|f| super::valid_name(f)) {
            if let (true, Some(size)) = (m.has_blob(from, &digest)?, registry.blobs.size(&digest)) {
                m.link_blob(name, &digest, size)?;
                tracing::info!(repository = name, from = %from, %digest, "blob mounted");
                return Ok(created(name, &digest));
            }
        }
        // Not mountable: the client gets a session and uploads instead.
    } else if let Some(digest) = params.get("digest") {
        let digest = parse_digest(digest)?;
        // An upload of its own while it runs, so that it counts and is swept like one.
        let id = open_upload(registry, name).await?;
        let tmp = registry.blobs.upload_path(&id);
        let lock = registry.upload_lock(&id);
        let _held = lock.lock().await;
        let appended = match too_large(registry, 0, declared_length(req.headers())) {
            Some(e) => Err(e),
            None => append(registry, &tmp, 0, req.into_body()).await,
        };
        let size = match appended {
            Ok(_) => commit(registry, &tmp, &digest).await,
            Err(e) => Err(e),
        };
        close_upload(registry, &id);
        let size = size?;
        m.link_blob(name, &digest, size)?;
        tracing::info!(repository = name, %digest, size, "blob pushed");
        return Ok(created(name, &digest));
    }
    let id = open_upload(registry, name).await?;
    Ok(respond(
        StatusCode::ACCEPTED,
        &[
            ("location", upload_location(name, &id)),
            ("range", received(0)),
            ("docker-upload-uuid", id),
            ("content-length", "0".into()),
        ],
        Body::empty(),
    ))
}

/// Hashes an uploaded file and moves it into the store when it is `digest`.
async fn commit(registry: &Registry, tmp: &Path, digest: &Digest) -> ApiResult<u64> {
    let blobs = registry.blobs.clone();
    let (tmp, d) = (tmp.to_path_buf(), digest.clone());
    let committed = tokio::task::spawn_blocking(move || blobs.commit_file(&tmp, &d))
        .await
        .map_err(|e| ApiError::internal("committing a blob", e))?;
    match committed {
        Ok(size) => Ok(size),
        Err(crate::blobs::CommitError::Mismatch { expected, got }) => {
            Err(ApiError::digest_invalid(format!(
                "the uploaded content is {got}, not {expected}; nothing was stored"
            ))
            .detail(serde_json::json!({ "digest": expected.to_string(), "got": got })))
        }
        Err(crate::blobs::CommitError::Io(e)) => Err(e.into()),
    }
}

/// A new upload of `name`: its empty file and its row, unless as many uploads as the limits
/// allow are open already. Returns its id.
async fn open_upload(registry: &Registry, name: &str) -> ApiResult<String> {
    let id = crate::blobs::random_id();
    let path = registry.blobs.upload_path(&id);
    // The file comes first: a sweep removes a row without a file, never a fresh file.
    tokio::fs::File::create(&path).await?;
    let admitted = {
        let _one_at_a_time = registry.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let open = registry.metadata.upload_count();
        if open >= registry.limits.open {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                format!(
                    "{open} uploads are open, as many as this registry takes ([registry_proxy] max_uploads); finish or cancel one, or try again later"
                ),
            ))
        } else {
            registry
                .metadata
                .start_upload(&id, name)
                .map_err(ApiError::from)
        }
    };
    if let Err(e) = admitted {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(id)
}

/// Ends an upload: its row, its lock and its file (gone already when it was committed).
fn close_upload(registry: &Registry, id: &str) {
    if let Err(e) = registry.metadata.end_upload(id) {
        tracing::warn!(upload = id, error = %e, "cannot remove the upload's record");
    }
    registry.forget_upload_lock(id);
    let _ = std::fs::remove_file(registry.blobs.upload_path(id));
}

/// How many bytes the request says its body has: its `Content-Length`.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `413 SIZE_INVALID` when an upload of `size` bytes would grow past the limit by `more`.
fn too_large(registry: &Registry, size: u64, more: Option<u64>) -> Option<ApiError> {
    let max = registry.limits.size;
    let over = size.saturating_add(more.unwrap_or(0)) > max;
    over.then(|| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            format!(
                "a blob upload may hold {max} bytes at most ([registry_proxy] max_upload_size)"
            ),
        )
        .detail(serde_json::json!({ "limit": max }))
    })
}

/// Appends a request body to an upload's file that holds `size` bytes; returns how many bytes
/// the body had. A body that breaks off, or would take the upload past its limit, is an
/// error (the caller cuts the file back).
async fn append(registry: &Registry, path: &Path, size: u64, body: Body) -> ApiResult<u64> {
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await?;
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| broken_body(io::Error::other(e)))?;
        n += chunk.len() as u64;
        if let Some(e) = too_large(registry, size, Some(n)) {
            return Err(e);
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(n)
}

fn broken_body(e: io::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BLOB_UPLOAD_INVALID",
        format!("the request body broke off: {e}"),
    )
}

/// The file of an upload session of `name`, and its size.
fn session(registry: &Registry, name: &str, id: &str) -> ApiResult<(PathBuf, u64)> {
    let safe =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if !safe || registry.metadata.upload(id)?.as_deref() != Some(name) {
        return Err(ApiError::upload_unknown(id));
    }
    let path = registry.blobs.upload_path(id);
    match std::fs::metadata(&path) {
        Ok(m) => Ok((path, m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ApiError::upload_unknown(id)),
        Err(e) => Err(e.into()),
    }
}

fn session_headers(name: &str, id: &str, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("location", upload_location(name, id)),
        ("range", received(size)),
        ("docker-upload-uuid", id.to_string()),
        ("content-length", "0".into()),
    ]
}

pub(super) fn upload_status(registry: &Registry, name: &str, id: &str) -> ApiResult<Response> {
    let (_, size) = session(registry, name, id)?;
    Ok(respond(
        StatusCode::NO_CONTENT,
        &session_headers(name, id, size),
        Body::empty(),
    ))
}

/// `Content-Range: <start>-<end>` (inclusive; `bytes ` and `/total` tolerated).
fn content_range(headers: &HeaderMap) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            "Content-Range must be <start>-<end>",
        )
    };
    let text = v.to_str().map_err(|_| invalid())?.trim();
    let text = text.strip_prefix("bytes").unwrap_or(text).trim();
    let text = text.split('/').next().unwrap_or_default();
    let (a, b) = text.split_once('-').ok_or_else(invalid)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| invalid())?,
        b.trim().parse().map_err(|_| invalid())?,
    );
    if b < a {
        return Err(invalid());
    }
    Ok(Some((a, b)))
}

/// Appends a chunk to a session after checking it starts where the session ends; a chunk
/// that breaks off, is not as long as its `Content-Range` says, or takes the upload past its
/// limit, is cut off again.
async fn append_chunk(
    registry: &Registry,
    name: &str,
    id: &str,
    path: &Path,
    size: u64,
    req: Request,
) -> ApiResult<u64> {
    let range = content_range(req.headers())?;
    let declared = range
        .map(|(start, end)| end - start + 1)
        .or_else(|| declared_length(req.headers()));
    if let Some(e) = too_large(registry, size, declared) {
        return Err(e);
    }
    if let Some((start, _)) = range.filter(|(start, _)| *start != size) {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("the chunk starts at {start}, but the upload has {size} bytes"),
        )
        .header(header::RANGE, &received(size))
        .header(header::LOCATION, &upload_location(name, id)));
    }
    let result = match append(registry, path, size, req.into_body()).await {
        Ok(n) => match range {
            Some((start, end)) if n != end - start + 1 => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BLOB_UPLOAD_INVALID",
                format!(
                    "Content-Range {start}-{end} says {} bytes, the body had {n}",
                    end - start + 1
                ),
            )),
            _ => Ok(size + n),
        },
        Err(e) => Err(e),
    };
    if result.is_err() {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(size)?;
    }
    result
}

pub(super) async fn patch_upload(
    registry: &Arc<Registry>,
    name: &str,
    id: &str,
    req: Request,
) -> ApiResult<Response> {
    // An unknown session is refused before it gets a lock (a lock per made-up id would pile
    // up); the session is read again under the lock.
    session(registry, name, id)?;
    let lock = registry.upload_lock(id);
    let _held = lock.lock().await;
    let (path, size) = session(registry, name, id)?;
    let size = append_chunk(registry, name, id, &path, size, req).await?;
    Ok(respond(
        StatusCode::ACCEPTED,
        &session_headers(name, id, size),
        Body::empty(),
    ))
}

/// `PUT …/uploads/<id>?digest=`: the last chunk (optional), then the check and the commit.
/// A wrong digest ends the session with nothing stored.
pub(super) async fn finish_upload(
    registry: &Arc<Registry>,
    name: &str,
    id: &str,
    params: &Params,
    req: Request,
) -> ApiResult<Response> {
    // An unknown session is refused before it gets a lock (a lock per made-up id would pile
    // up); the session is read again under the lock.
    session(registry, name, id)?;
    let lock = registry.upload_lock(id);
    let _held = lock.lock().await;
    let (path, size) = session(registry, name, id)?;
    let digest = parse_digest(
        params
            .get("digest")
            .ok_or_else(|| ApiError::digest_invalid("the closing PUT needs ?digest="))?,
    )?;
    append_chunk(registry, name, id, &path, size, req).await?;
    let committed = commit(registry, &path, &digest).await;
    if !matches!(&committed, Err(e) if e.status.is_server_error()) {
        close_upload(registry, id);
    }
    let size = committed?;
    registry.metadata.link_blob(name, &digest, size)?;
    tracing::info!(repository = name, %digest, size, "blob pushed");
    Ok(created(name, &digest))
}

pub(super) fn cancel_upload(registry: &Registry, name: &str, id: &str) -> ApiResult<Response> {
    session(registry, name, id)?;
    close_upload(registry, id);
    Ok(respond(
        StatusCode::NO_CONTENT,
        &[("content-length", "0".into())],
        Body::empty(),
    ))
}

/// Removes the uploads no byte reached for `limits.expiry` (their rows and files), rows whose
/// file is gone, and files no row names that are as old; an upload a request is writing to
/// is left alone. Returns how many it removed. Blocking.
pub fn sweep_uploads(registry: &Registry) -> ApiResult<usize> {
    let expiry = registry.limits.expiry;
    let idle = |path: &Path| -> Option<Duration> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        Some(modified.elapsed().unwrap_or_default())
    };
    let mut removed = 0;
    let rows = registry.metadata.uploads()?;
    for (id, repository) in &rows {
        let lock = registry.upload_lock(id);
        let Ok(_writing_excluded) = lock.try_lock() else {
            continue;
        };
        match idle(&registry.blobs.upload_path(id)) {
            Some(i) if i < expiry => continue,
            _ => {}
        }
        close_upload(registry, id);
        tracing::info!(upload = %id, %repository, "stale upload removed");
        removed += 1;
    }
    for id in registry.blobs.upload_ids()? {
        let path = registry.blobs.upload_path(&id);
        let known = rows.iter().any(|(r, _)| *r == id) || registry.metadata.upload(&id)?.is_some();
        if !known && idle(&path).is_some_and(|i| i >= expiry) {
            let _ = std::fs::remove_file(&path);
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(byte_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(byte_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(byte_range("bytes=50-500", 100), Some(Ok((50, 99))));
        assert_eq!(byte_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(byte_range("bytes=0-1,5-6", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
        assert_eq!(byte_range("bytes=x-1", 100), None);
    }
}
