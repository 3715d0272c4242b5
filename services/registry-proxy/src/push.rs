//! Pushing to a registry: whether a blob is already in a repository (or can be mounted from
//! another one of the same registry), uploading a blob while its bytes are checked against
//! its descriptor, and putting a manifest.
//!
//! Pushes go to the registry itself, never to a mirror, and ask tokens for
//! `repository:<path>:pull,push`. A blob goes up in one `PUT ?digest=` when it fits in a
//! chunk, else as `PATCH` chunks with `Content-Range`, each to the `Location` the previous
//! answer gave, then a closing `PUT ?digest=` without a body. The bytes stream from the
//! caller into the requests; the piece that completes the blob leaves only once the whole
//! blob matched its digest and size, so a blob that does not match is never completed: its
//! request is broken off and the upload deleted.

use crate::client::{
    challenges_of, check_status, header, push_scope, Call, Endpoint, Kind, RegistryClient,
    READ_IDLE_TIMEOUT,
};
use crate::error::Error;
use crate::verify::{Expected, Verifier};
use berth_core::media::MAX_MANIFEST_SIZE;
use berth_core::{Digest, Reference};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Blobs up to this size go up in one request; larger ones in chunks of it.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;

/// Pieces handed to the HTTP body are at most this large.
const MAX_PIECE: usize = 1 << 20;

/// How long a cancelled upload's `DELETE` may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`RegistryClient::check_blob`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPresence {
    /// The repository holds the blob.
    Exists,
    /// A cross-repository mount from this repository (`host/path`) put it there.
    Mounted(String),
    /// It is not there: push it.
    Missing,
}

/// What [`RegistryClient::push_blob`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub size: u64,
    /// Requests that carried bytes: 1 for a monolithic upload, else the `PATCH` chunks.
    pub chunks: u32,
}

impl RegistryClient {
    /// Whether `repository` holds the blob `digest` (HEAD); when it does not, tries to mount
    /// it from each of `mount_from` of the same registry, in order. A mount the registry
    /// refuses or cannot do (unknown repository or blob, no access) is no error, just not a
    /// mount.
    pub async fn check_blob(
        &self,
        repository: &Reference,
        digest: &Digest,
        mount_from: &[Reference],
    ) -> Result<BlobPresence, Error> {
        let subject = format!("blob {digest} of {}", repository.familiar_repository());
        let scope = push_scope(repository.path());
        let (subject, scope) = (&subject, &scope);
        self.across_upstream(|ep| async move {
            let url = ep.url(repository.path(), Kind::Blob, &digest.to_string());
            let (resp, with_credentials) = self
                .send_call(&ep, &Call::new(Method::HEAD, url), scope)
                .await?;
            if resp.status().is_success() {
                return Ok(BlobPresence::Exists);
            }
            if resp.status() != StatusCode::NOT_FOUND {
                return Err(push_status(resp, &ep, subject, with_credentials).await);
            }
            for from in mount_from {
                if from.domain() != repository.domain() {
                    tracing::debug!(from = %from.repository(), "not on the same registry: no mount");
                    continue;
                }
                if from.path() == repository.path() {
                    continue;
                }
                if self.mount(&ep, repository, digest, from, subject).await? {
                    return Ok(BlobPresence::Mounted(from.repository()));
                }
            }
            Ok(BlobPresence::Missing)
        })
        .await
    }

    /// `POST …/blobs/uploads/?mount=&from=`: `true` when the registry mounted the blob.
    async fn mount(
        &self,
        ep: &Endpoint,
        repository: &Reference,
        digest: &Digest,
        from: &Reference,
        subject: &str,
    ) -> Result<bool, Error> {
        let mut url = ep.api_url(&format!("{}/blobs/uploads/", repository.path()));
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from.path());
        let scope = format!(
            "{} repository:{}:pull",
            push_scope(repository.path()),
            from.path()
        );
        let (resp, with_credentials) = self
            .send_call(ep, &Call::new(Method::POST, url.clone()), &scope)
            .await?;
        match resp.status() {
            StatusCode::CREATED => {
                tracing::info!(%digest, from = %from.repository(), "mounted");
                Ok(true)
            }
            StatusCode::ACCEPTED => {
                // The registry could not mount and opened an upload instead: not wanted here.
                if let Ok(location) = location_of(&resp, &url, ep, subject) {
                    self.cancel(ep, &location, &push_scope(repository.path()))
                        .await;
                }
                Ok(false)
            }
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                tracing::debug!(%digest, from = %from.repository(), status = resp.status().as_u16(), "not mounted");
                Ok(false)
            }
            _ => Err(push_status(resp, ep, subject, with_credentials).await),
        }
    }

    /// Uploads the blob `digest` of `size` bytes to `repository` from `data`, verifying the
    /// bytes as they go: a blob that is not what the descriptor says is refused
    /// ([`Error::PushMismatch`]) and its upload deleted, never completed.
    pub async fn push_blob<S>(
        &self,
        repository: &Reference,
        digest: &Digest,
        size: u64,
        chunk_size: u64,
        data: S,
    ) -> Result<Pushed, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + Unpin,
    {
        let subject = format!("blob {digest} for {}", repository.familiar_repository());
        let scope = push_scope(repository.path());
        let (subject_ref, scope_ref) = (&subject, &scope);
        // The bytes can go only once: to where the upload started.
        let (ep, location) = self
            .across_upstream(|ep| async move {
                let url = ep.api_url(&format!("{}/blobs/uploads/", repository.path()));
                let (resp, with_credentials) = self
                    .send_call(&ep, &Call::new(Method::POST, url.clone()), scope_ref)
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(push_status(resp, &ep, subject_ref, with_credentials).await);
                }
                let location = location_of(&resp, &url, &ep, subject_ref)?;
                Ok((ep, location))
            })
            .await?;
        let mut upload = Upload {
            client: self,
            ep: &ep,
            scope: &scope,
            subject: &subject,
            location,
        };
        let mut source = Source::new(data, digest, size, &subject);
        let pushed = upload
            .send_all(&mut source, digest, size, chunk_size.max(1))
            .await;
        if pushed.is_err() {
            self.cancel(&ep, &upload.location, &scope).await;
        }
        pushed
    }

    /// Puts `manifest` under `repository`'s tag, else its digest, with `media_type` as its
    /// Content-Type. Returns its digest: the registry's `Docker-Content-Digest`, which must
    /// be the digest of the bytes sent.
    pub async fn push_manifest(
        &self,
        repository: &Reference,
        media_type: &str,
        manifest: Bytes,
    ) -> Result<Digest, Error> {
        let computed = Digest::sha256_of(&manifest);
        if let Some(d) = repository.digest() {
            if d.algorithm() == computed.algorithm() && *d != computed {
                return Err(Error::InvalidRequest(format!(
                    "the manifest to push is {computed}, not the {d} its reference names"
                )));
            }
        }
        let target = match (repository.tag(), repository.digest()) {
            (Some(t), _) => t.to_string(),
            (None, Some(d)) => d.to_string(),
            (None, None) => computed.to_string(),
        };
        let subject = format!(
            "manifest {computed} ({}:{target})",
            repository.familiar_repository()
        );
        if manifest.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge {
                subject,
                size: manifest.len() as u64,
            });
        }
        let scope = push_scope(repository.path());
        let (subject, scope, target) = (&subject, &scope, &target);
        let (manifest, computed) = (&manifest, &computed);
        self.across_upstream(|ep| async move {
            let mut call = Call::new(
                Method::PUT,
                ep.url(repository.path(), Kind::Manifest, target),
            );
            call.content_type = Some(media_type.to_string());
            call.body = Some(manifest.clone());
            let (resp, with_credentials) = self.send_call(&ep, &call, scope).await?;
            if !resp.status().is_success() {
                return Err(push_status(resp, &ep, subject, with_credentials).await);
            }
            match header(resp.headers(), "docker-content-digest").map(str::parse::<Digest>) {
                Some(Ok(d)) if d.algorithm() != computed.algorithm() => Ok(d),
                Some(Ok(d)) if d != *computed => Err(Error::InvalidResponse {
                    subject: subject.clone(),
                    host: ep.name.clone(),
                    reason: format!("it says it stored {d}, but the bytes sent are {computed}"),
                }),
                _ => Ok(computed.clone()),
            }
        })
        .await
    }

    /// Deletes an upload that will not be completed; failures only get logged (the
    /// registry drops stale uploads itself).
    async fn cancel(&self, ep: &Endpoint, location: &Url, scope: &str) {
        let call = Call::new(Method::DELETE, location.clone());
        let delete = self.send_call(ep, &call, scope);
        match tokio::time::timeout(CANCEL_TIMEOUT, delete).await {
            Ok(Ok((resp, _))) => {
                tracing::debug!(status = resp.status().as_u16(), %location, "upload cancelled")
            }
            Ok(Err(e)) => tracing::debug!(error = %e, %location, "cancelling the upload failed"),
            Err(_) => tracing::debug!(%location, "cancelling the upload timed out"),
        }
    }
}

/// An upload under way: where its next request goes.
struct Upload<'a> {
    client: &'a RegistryClient,
    ep: &'a Endpoint,
    scope: &'a str,
    subject: &'a str,
    /// The `Location` of the last answer.
    location: Url,
}

impl Upload<'_> {
    async fn send_all<S>(
        &mut self,
        source: &mut Source<'_, S>,
        digest: &Digest,
        size: u64,
        chunk_size: u64,
    ) -> Result<Pushed, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + Unpin,
    {
        if size == 0 {
            // No piece to hold back: check now that the caller sent nothing.
            source.finish().await?;
        }
        if size <= chunk_size {
            let url = with_digest(&self.location, digest);
            let (resp, with_credentials) = self
                .send_bytes(Method::PUT, url, source, size, None)
                .await?;
            self.check_committed(resp, with_credentials, digest).await?;
            return Ok(Pushed { size, chunks: 1 });
        }
        let mut offset = 0;
        let mut chunks = 0;
        while offset < size {
            let len = chunk_size.min(size - offset);
            let (resp, _) = self
                .send_bytes(
                    Method::PATCH,
                    self.location.clone(),
                    source,
                    len,
                    Some(offset),
                )
                .await?;
            let request_url = self.location.clone();
            self.location =
                location_of(&resp, &request_url, self.ep, self.subject).unwrap_or(request_url);
            if let Some(end) = header(resp.headers(), "range").and_then(range_end) {
                if end + 1 != offset + len {
                    return Err(Error::InvalidResponse {
                        subject: self.subject.to_string(),
                        host: self.ep.name.clone(),
                        reason: format!(
                            "after a chunk up to byte {} it holds {} bytes of the upload",
                            offset + len,
                            end + 1
                        ),
                    });
                }
            }
            offset += len;
            chunks += 1;
        }
        // Every byte went up, and the last one only after the whole blob was verified.
        source.finish().await?;
        let call = Call::new(Method::PUT, with_digest(&self.location, digest));
        let (resp, with_credentials) = self.client.send_call(self.ep, &call, self.scope).await?;
        self.check_committed(resp, with_credentials, digest).await?;
        Ok(Pushed { size, chunks })
    }

    /// Sends `len` bytes of `source` as the body of one request; `range_start` makes it a
    /// chunk with `Content-Range`. Errors of the source win over the request's: the request
    /// is dropped (its connection broken off) as soon as the source fails.
    async fn send_bytes<S>(
        &self,
        method: Method,
        url: Url,
        source: &mut Source<'_, S>,
        len: u64,
        range_start: Option<u64>,
    ) -> Result<(Response, bool), Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Send + Unpin,
    {
        let (authorization, with_credentials) = if self.ep.same_origin(&url) {
            self.client.authorization(self.ep, self.scope).await?
        } else {
            (None, false)
        };
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let mut rb = self
            .ep
            .upload
            .request(method, url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len);
        if let Some(start) = range_start {
            rb = rb.header(CONTENT_RANGE, format!("{start}-{}", start + len - 1));
        }
        if let Some(a) = &authorization {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        let request = rb
            .body(reqwest::Body::wrap_stream(ReceiverStream::new(rx)))
            .send();
        let feed = source.feed(tx, len);
        tokio::pin!(request, feed);
        let mut fed = false;
        let sent = loop {
            tokio::select! {
                r = &mut request => break r,
                f = &mut feed, if !fed => match f {
                    Ok(()) => fed = true,
                    Err(Fed::Source(e)) => return Err(e),
                    Err(Fed::Stalled) => return Err(Error::UploadStalled {
                        subject: self.subject.to_string(),
                        host: self.ep.name.clone(),
                        reason: format!("it took no data for {} s", READ_IDLE_TIMEOUT.as_secs()),
                    }),
                    // The request ended before its body: its result says why.
                    Err(Fed::Closed) => fed = true,
                },
                _ = tokio::time::sleep(READ_IDLE_TIMEOUT), if fed => {
                    return Err(Error::UploadStalled {
                        subject: self.subject.to_string(),
                        host: self.ep.name.clone(),
                        reason: format!("no answer {} s after the last byte", READ_IDLE_TIMEOUT.as_secs()),
                    });
                }
            }
        };
        let resp = sent.map_err(|e| crate::client::unreachable(self.ep, &e))?;
        tracing::debug!(
            status = resp.status().as_u16(),
            len,
            ?range_start,
            "upload request"
        );
        if !resp.status().is_success() {
            return Err(push_status(resp, self.ep, self.subject, with_credentials).await);
        }
        if !fed {
            return Err(Error::InvalidResponse {
                subject: self.subject.to_string(),
                host: self.ep.name.clone(),
                reason: "it answered before taking all the bytes".into(),
            });
        }
        Ok((resp, with_credentials))
    }

    /// The answer of the request that completes an upload: `201 Created`, and the digest the
    /// registry stored, when it says one, is ours.
    async fn check_committed(
        &self,
        resp: Response,
        with_credentials: bool,
        digest: &Digest,
    ) -> Result<(), Error> {
        if resp.status() != StatusCode::CREATED {
            if resp.status().is_success() {
                return Err(Error::InvalidResponse {
                    subject: self.subject.to_string(),
                    host: self.ep.name.clone(),
                    reason: format!(
                        "HTTP {} instead of 201 Created for the completed upload",
                        resp.status().as_u16()
                    ),
                });
            }
            return Err(push_status(resp, self.ep, self.subject, with_credentials).await);
        }
        if let Some(Ok(stored)) = header(resp.headers(), "docker-content-digest").map(str::parse) {
            let stored: Digest = stored;
            if stored != *digest {
                return Err(Error::InvalidResponse {
                    subject: self.subject.to_string(),
                    host: self.ep.name.clone(),
                    reason: format!("it stored the upload as {stored}"),
                });
            }
        }
        Ok(())
    }
}

/// Why feeding a request body stopped.
enum Fed {
    /// The source failed or its bytes do not match: the request must not complete.
    Source(Error),
    /// The request took no piece for [`READ_IDLE_TIMEOUT`].
    Stalled,
    /// The request no longer reads its body (it got an answer or failed).
    Closed,
}

/// The blob's bytes as the caller sends them, checked as they pass.
struct Source<'a, S> {
    incoming: S,
    /// Received, not yet handed on.
    pending: Bytes,
    verifier: Option<Verifier>,
    size: u64,
    received: u64,
    subject: &'a str,
}

impl<'a, S> Source<'a, S>
where
    S: Stream<Item = Result<Bytes, Error>> + Send + Unpin,
{
    fn new(incoming: S, digest: &Digest, size: u64, subject: &'a str) -> Source<'a, S> {
        Source {
            incoming,
            pending: Bytes::new(),
            verifier: Some(Verifier::new(Expected {
                digest: digest.clone(),
                size: Some(size),
                limit: None,
                subject: subject.to_string(),
                host: String::new(),
            })),
            size,
            received: 0,
            subject,
        }
    }

    /// The next piece of at most `max` bytes. The piece that completes the blob comes only
    /// after the caller's stream ended and the whole blob matched.
    async fn next_piece(&mut self, max: usize) -> Result<Bytes, Error> {
        while self.pending.is_empty() {
            match self.incoming.next().await {
                Some(Ok(chunk)) => self.take(chunk)?,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(self.mismatch(format!(
                        "{} bytes, the descriptor says {}",
                        self.received, self.size
                    )))
                }
            }
        }
        let piece = self.pending.split_to(max.min(self.pending.len()));
        if self.pending.is_empty() && self.received == self.size {
            self.finish().await?;
        }
        Ok(piece)
    }

    fn take(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.received += chunk.len() as u64;
        if self.received > self.size {
            return Err(self.mismatch(format!(
                "more than the {} bytes the descriptor says",
                self.size
            )));
        }
        if let Some(v) = &mut self.verifier {
            v.update(&chunk).map_err(|e| self.as_mismatch(e))?;
        }
        self.pending = chunk;
        Ok(())
    }

    /// Checks that the caller sent nothing more and that the blob matches; once.
    async fn finish(&mut self) -> Result<(), Error> {
        let Some(verifier) = self.verifier.take() else {
            return Ok(());
        };
        while let Some(item) = self.incoming.next().await {
            let chunk = item?;
            if !chunk.is_empty() {
                return Err(self.mismatch(format!(
                    "more than the {} bytes the descriptor says",
                    self.size
                )));
            }
        }
        verifier.finish().map_err(|e| self.as_mismatch(e))
    }

    /// Hands `len` bytes to a request body.
    async fn feed(
        &mut self,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
        len: u64,
    ) -> Result<(), Fed> {
        let mut left = len;
        while left > 0 {
            let max = usize::try_from(left).unwrap_or(usize::MAX).min(MAX_PIECE);
            let piece = self.next_piece(max).await.map_err(Fed::Source)?;
            left -= piece.len() as u64;
            match tokio::time::timeout(READ_IDLE_TIMEOUT, tx.send(Ok(piece))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Fed::Closed),
                Err(_) => return Err(Fed::Stalled),
            }
        }
        Ok(())
    }

    fn mismatch(&self, reason: String) -> Error {
        Error::PushMismatch {
            subject: self.subject.to_string(),
            reason,
        }
    }

    fn as_mismatch(&self, e: Error) -> Error {
        match e {
            Error::DigestMismatch { got, .. } => self.mismatch(format!("their digest is {got}")),
            Error::SizeMismatch { expected, got, .. } => {
                self.mismatch(format!("{got} bytes, the descriptor says {expected}"))
            }
            other => other,
        }
    }
}

/// A failed push request as an [`Error`]: refusals say who may not push and how to log in.
async fn push_status(
    resp: Response,
    ep: &Endpoint,
    subject: &str,
    with_credentials: bool,
) -> Error {
    let who = if with_credentials {
        "the account stored for it"
    } else {
        "anonymous users"
    };
    let insufficient_scope = resp.status() == StatusCode::UNAUTHORIZED
        && challenges_of(&resp)
            .iter()
            .any(|c| c.param("error") == Some("insufficient_scope"));
    if resp.status() == StatusCode::FORBIDDEN || insufficient_scope {
        return Error::PushDenied {
            subject: subject.to_string(),
            host: ep.login_host.clone(),
            who,
            detail: crate::client::error_detail(resp).await,
        };
    }
    match check_status(resp, ep, subject, with_credentials).await {
        Err(e) => e,
        Ok(resp) => Error::Unexpected {
            subject: subject.to_string(),
            host: ep.name.clone(),
            status: resp.status().as_u16(),
            detail: String::new(),
        },
    }
}

/// The `Location` of an answer, relative to the URL of the request it answers.
fn location_of(resp: &Response, request: &Url, ep: &Endpoint, subject: &str) -> Result<Url, Error> {
    let invalid = |reason: String| Error::InvalidResponse {
        subject: subject.to_string(),
        host: ep.name.clone(),
        reason,
    };
    let value = resp
        .headers()
        .get(LOCATION)
        .ok_or_else(|| invalid("no Location for the upload".into()))?
        .to_str()
        .map_err(|_| invalid("a Location that is not text".into()))?;
    resolve_location(request, value).map_err(invalid)
}

fn resolve_location(request: &Url, location: &str) -> Result<Url, String> {
    let url = request
        .join(location.trim())
        .map_err(|e| format!("an invalid Location {location:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("a Location that is not HTTP: {location:?}"));
    }
    Ok(url)
}

/// `url` with `digest=` added to the query it has (`_state` and the like stay).
fn with_digest(url: &Url, digest: &Digest) -> Url {
    let mut url = url.clone();
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

/// The last byte a `Range: 0-<end>` (or `bytes=0-<end>`) header says the registry holds.
fn range_end(range: &str) -> Option<u64> {
    let r = range.trim();
    let r = r.strip_prefix("bytes=").unwrap_or(r);
    let (_, end) = r.split_once('-')?;
    end.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn digest_of(data: &[u8]) -> Digest {
        Digest::sha256_of(data)
    }

    fn stream(
        chunks: Vec<&'static [u8]>,
    ) -> impl Stream<Item = Result<Bytes, Error>> + Send + Unpin {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    /// Feeds all of `size` through a body channel the way an upload does, in requests of
    /// `per_request` bytes; returns what went out and the error, if any.
    async fn run(
        chunks: Vec<&'static [u8]>,
        digest: Digest,
        size: u64,
        per_request: u64,
    ) -> (Vec<u8>, Option<Error>) {
        let mut source = Source::new(stream(chunks), &digest, size, "blob x");
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < size.max(1) {
            let len = per_request.min(size - offset);
            let (tx, mut rx) = mpsc::channel(64);
            let fed = source.feed(tx, len).await;
            while let Ok(Ok(piece)) = rx.try_recv() {
                out.extend_from_slice(&piece);
            }
            match fed {
                Ok(()) => {}
                Err(Fed::Source(e)) => return (out, Some(e)),
                Err(_) => panic!("the channel stays open"),
            }
            offset += len;
            if size == 0 {
                break;
            }
        }
        (out, source.finish().await.err())
    }

    #[tokio::test]
    async fn good_bytes_pass_in_chunks_that_cut_across_messages() {
        let data = b"hello world, this is a blob";
        let (out, err) = run(
            vec![b"hello ", b"world, this", b"", b" is a blob"],
            digest_of(data),
            data.len() as u64,
            4,
        )
        .await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, data);
        let (out, err) = run(vec![], digest_of(b""), 0, 4).await;
        assert!(err.is_none(), "{err:?}");
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn the_completing_piece_waits_for_the_digest() {
        // Same size, other bytes: everything but the last piece may go, never the last.
        let (out, err) = run(
            vec![b"hello ", b"there"],
            digest_of(b"hello world"),
            11,
            100,
        )
        .await;
        let err = err.expect("a mismatch");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.to_string()
                .contains(&format!("their digest is {}", digest_of(b"hello there"))),
            "{err}"
        );
        assert_eq!(
            out, b"hello ",
            "the piece that completes the blob stayed back"
        );
    }

    #[tokio::test]
    async fn sizes_that_differ_are_refused() {
        let (out, err) = run(
            vec![b"hello", b" world!"],
            digest_of(b"hello world"),
            11,
            100,
        )
        .await;
        assert!(err.unwrap().to_string().contains("more than the 11 bytes"));
        assert_eq!(out, b"hello");
        let (_, err) = run(vec![b"hello"], digest_of(b"hello world"), 11, 100).await;
        assert!(err
            .unwrap()
            .to_string()
            .contains("5 bytes, the descriptor says 11"));
        // Extra bytes after the last expected one, in a message of their own.
        let (out, err) = run(
            vec![b"hello world", b"!"],
            digest_of(b"hello world"),
            11,
            100,
        )
        .await;
        assert!(err.unwrap().to_string().contains("more than the 11 bytes"));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_failing_source_stops_the_feed() {
        let s = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(Error::SourceFailed {
                subject: "blob x".into(),
                reason: "cancelled".into(),
            }),
        ]);
        let mut source = Source::new(s, &digest_of(b"abcdef"), 6, "blob x");
        let (tx, _rx) = mpsc::channel(8);
        let r = source.feed(tx, 6).await;
        assert!(matches!(r, Err(Fed::Source(Error::SourceFailed { .. }))));
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let req = Url::parse("http://127.0.0.1:5000/v2/app/blobs/uploads/").unwrap();
        let abs = resolve_location(
            &req,
            "http://127.0.0.1:5000/v2/app/blobs/uploads/u1?_state=abc%3D",
        )
        .unwrap();
        assert_eq!(
            with_digest(&abs, &digest_of(b"")).as_str(),
            "http://127.0.0.1:5000/v2/app/blobs/uploads/u1?_state=abc%3D&digest=sha256%3Ae3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let rel = resolve_location(&req, "/v2/app/blobs/uploads/u2?x=1").unwrap();
        assert_eq!(
            rel.as_str(),
            "http://127.0.0.1:5000/v2/app/blobs/uploads/u2?x=1"
        );
        let rel = resolve_location(&req, "u3").unwrap();
        assert_eq!(
            rel.as_str(),
            "http://127.0.0.1:5000/v2/app/blobs/uploads/u3"
        );
        assert!(resolve_location(&req, "ftp://x/y").is_err());
    }

    #[tokio::test]
    async fn refusals_say_who_may_not_push_and_how_to_log_in() {
        let config = berth_core::config::Config::parse("").unwrap();
        let c = RegistryClient::new(
            "127.0.0.1:5000",
            &config,
            &crate::client::HttpClients::new().unwrap(),
            Arc::new(crate::credentials::Anonymous),
        )
        .unwrap();
        let ep = c.endpoint_for_tests();
        let answer = |status: u16, challenge: Option<&str>| {
            let mut b = http::Response::builder().status(status);
            if let Some(ch) = challenge {
                b = b.header("www-authenticate", ch);
            }
            Response::from(b.body("").unwrap())
        };
        let e = push_status(answer(403, None), &ep, "blob x", false).await;
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("anonymous users"), "{e}");
        assert!(
            e.to_string().contains("`berth login 127.0.0.1:5000`"),
            "{e}"
        );
        let scope = r#"Bearer realm="http://t/token",error="insufficient_scope""#;
        let e = push_status(answer(401, Some(scope)), &ep, "blob x", true).await;
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("the account stored for it"), "{e}");
        let e = push_status(answer(401, Some("Basic realm=x")), &ep, "blob x", false).await;
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(
            e.to_string().contains("`berth login 127.0.0.1:5000`"),
            "{e}"
        );
        let e = push_status(answer(401, Some("Basic realm=x")), &ep, "blob x", true).await;
        assert!(matches!(e, Error::BadCredentials { .. }), "{e}");
        let e = push_status(answer(503, None), &ep, "blob x", true).await;
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn ranges() {
        assert_eq!(range_end("0-1023"), Some(1023));
        assert_eq!(range_end("bytes=0-9"), Some(9));
        assert_eq!(range_end("junk"), None);
    }
}
