//! The pull-through cache: every manifest and blob fetched by digest through the proxy is
//! kept in its [`BlobStore`], and later fetches of the same digest are served from disk.
//!
//! A miss starts one *download*: a task that streams the upstream answer into a file under
//! `ingest/`, checks it against the digest (and size, and the manifest limit) as it goes, and
//! renames it into the store only when it is whole and right. Callers never read the upstream
//! answer themselves: each one *tails* the download's file, reading what has been written so
//! far and waiting for more, so the first caller gets its bytes while they arrive, and a
//! second caller asking for the same digest meanwhile joins the same download instead of
//! starting another. A download that fails verification ends every tail with the error and
//! leaves nothing under the digest. A download goes on when its callers go away, since the
//! bytes are wanted in the cache anyway.
//!
//! Content is stored by digest, and every download records which upstream repository
//! (`domain/path`) served it ([`Metadata::link_upstream`]). What a fetch may be answered with
//! from the store is its [`Reuse`]: berthd's own services (the root-only gRPC API) share
//! every digest, as containerd's content store does ([`Reuse::Any`]); the HTTP mirror's
//! clients get cached content only for a repository that served it ([`Reuse::Linked`]), and
//! otherwise the bytes come from upstream, which decides whether that repository holds them.
//! So knowing a digest is not enough to read it under another name.

use crate::blobs::BlobStore;
use crate::client::{Content, Descriptor};
use crate::error::Error;
use crate::metadata::{Metadata, Remembered};
use crate::service::Fetched;
use crate::verify::{verified, Expected, Verifier};
use berth_core::{Digest, Reference};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How much a tail reads from the download's file at once.
const TAIL_CHUNK: u64 = 1 << 20;
/// Where messages say cached content came from.
const CACHE: &str = "the registry-proxy's cache";

/// What a fetch must get.
#[derive(Debug, Clone)]
pub struct Want {
    pub digest: Digest,
    /// The descriptor's size, when it gives one.
    pub size: Option<u64>,
    /// Manifests: at most this many bytes.
    pub limit: Option<u64>,
    /// `blob sha256:…`, for messages.
    pub subject: String,
    /// A manifest's media type, recorded beside it so it can be served again without asking.
    pub media_type: Option<String>,
    /// The upstream repository (`domain/path`) it is fetched from.
    pub repository: String,
    pub reuse: Reuse,
}

impl Want {
    /// What content from `source` must be.
    fn expected(&self, source: String) -> Expected {
        Expected {
            digest: self.digest.clone(),
            size: self.size,
            limit: self.limit,
            subject: self.subject.clone(),
            host: source,
        }
    }

    /// The link to record once the content proved whole.
    fn link(&self, metadata: &Metadata) -> Link {
        Link {
            metadata: metadata.clone(),
            repository: self.repository.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// Which stored content may answer a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Any stored content of the digest: for berthd's own services.
    Any,
    /// Only content the same upstream repository served before (or is serving now); else it
    /// comes from upstream again: for the mirror's clients.
    Linked,
}

/// The blob store with its downloads under way.
#[derive(Debug)]
pub struct Cache {
    blobs: Arc<BlobStore>,
    metadata: Metadata,
    flights: Arc<Mutex<HashMap<Digest, Flight>>>,
    next_id: AtomicU64,
}

/// A download under way, as the map of flights knows it.
#[derive(Debug)]
struct Flight {
    id: u64,
    /// The upstream repository the download is for.
    repository: String,
    stage: watch::Receiver<Stage>,
}

#[derive(Debug, Clone)]
enum Stage {
    /// The first caller is asking upstream.
    Opening,
    Running(Arc<Download>),
    /// Upstream could not be opened (or the first caller went away): ask again.
    Abandoned,
}

#[derive(Debug)]
struct Download {
    /// The file under `ingest/`; tails read it at their own offsets.
    file: Arc<File>,
    total: Option<u64>,
    progress: watch::Receiver<Progress>,
    subject: String,
    source: String,
}

#[derive(Debug, Clone)]
enum Progress {
    /// This many bytes are in the file, checked so far.
    Written(u64),
    /// All of it, verified and in the store.
    Done(u64),
    Failed(Arc<Error>),
}

impl Cache {
    pub fn new(blobs: Arc<BlobStore>, metadata: Metadata) -> Cache {
        Cache {
            blobs,
            metadata,
            flights: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.blobs
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// `want`, from the store when it is there (and `want.reuse` allows), else from what
    /// `open` answers (the upstream registry), cached as it streams. `open` is called at most
    /// once per caller, and not at all when a download of the same digest that the caller may
    /// share is already under way.
    pub async fn fetch<F, Fut>(&self, want: &Want, open: F) -> Result<Fetched, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Content, Error>>,
    {
        let shared = self.may_reuse(want)?;
        loop {
            if shared {
                if let Some(stored) = self.stored(want).await? {
                    return Ok(stored);
                }
            }
            let role = {
                let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
                match flights.get(&want.digest) {
                    Some(f) if shared || f.repository == want.repository => {
                        Role::Follow(f.stage.clone())
                    }
                    Some(_) => Role::Upstream,
                    // It may have landed between the look above and taking the lock.
                    None if self.blobs.contains(&want.digest) => match shared {
                        true => continue,
                        false => Role::Upstream,
                    },
                    None => {
                        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                        let (tx, stage) = watch::channel(Stage::Opening);
                        let repository = want.repository.clone();
                        flights.insert(
                            want.digest.clone(),
                            Flight {
                                id,
                                repository,
                                stage,
                            },
                        );
                        Role::Lead(Lead {
                            flights: self.flights.clone(),
                            digest: want.digest.clone(),
                            id,
                            tx: Some(tx),
                        })
                    }
                }
            };
            match role {
                Role::Follow(mut stage) => {
                    let running = match stage.wait_for(|s| !matches!(s, Stage::Opening)).await {
                        Ok(s) => match &*s {
                            Stage::Running(d) => Some(d.clone()),
                            _ => None,
                        },
                        Err(_) => None,
                    };
                    if let Some(download) = running {
                        tracing::debug!(digest = %want.digest, "joining a download under way");
                        return Ok(tail(download));
                    }
                }
                Role::Lead(mut lead) => {
                    let content = open().await?;
                    let download = self.start(want, content, lead.id)?;
                    lead.started(download.clone());
                    return Ok(tail(download));
                }
                Role::Upstream => return Ok(self.relay(want, open().await?)),
            }
        }
    }

    /// Whether `want` may be answered with content this repository did not serve.
    fn may_reuse(&self, want: &Want) -> Result<bool, Error> {
        match want.reuse {
            Reuse::Any => Ok(true),
            Reuse::Linked => self.served(&want.repository, &want.digest),
        }
    }

    /// Whether the upstream repository `domain/path` served `digest` before.
    pub fn served(&self, repository: &str, digest: &Digest) -> Result<bool, Error> {
        self.metadata
            .upstream_has(repository, digest)
            .map_err(|e| Error::Store(format!("the cache's metadata: {e}")))
    }

    /// Upstream's answer for content that is stored (or being stored) for another repository:
    /// streamed through verified, not stored again, and linked to `want.repository` once it
    /// proved whole.
    fn relay(&self, want: &Want, content: Content) -> Fetched {
        tracing::debug!(digest = %want.digest, repository = %want.repository, "stored for another repository: relaying upstream's answer");
        let total = content.total.or(want.size);
        let link = want.link(&self.metadata);
        let expected = want.expected(content.source);
        let mut bytes = Box::pin(verified(content.stream, expected));
        let stream = async_stream::try_stream! {
            while let Some(chunk) = bytes.next().await {
                yield chunk?;
            }
            link.record();
        };
        Fetched {
            total,
            stream: stream.boxed(),
        }
    }

    /// A stored blob, streamed from disk.
    async fn stored(&self, want: &Want) -> Result<Option<Fetched>, Error> {
        let Some(size) = self.blobs.size(&want.digest) else {
            return Ok(None);
        };
        if let Some(expected) = want.size.filter(|s| *s != size) {
            return Err(Error::SizeMismatch {
                subject: want.subject.clone(),
                host: CACHE.into(),
                expected,
                got: size.to_string(),
            });
        }
        if want.limit.is_some_and(|l| size > l) {
            return Err(Error::ManifestTooLarge {
                subject: want.subject.clone(),
                size,
            });
        }
        let file = match tokio::fs::File::open(self.blobs.path(&want.digest)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_error(&want.subject, e)),
        };
        tracing::debug!(digest = %want.digest, size, "served from the cache");
        let subject = want.subject.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10)
            .map_err(move |e| store_error(&subject, e))
            .boxed();
        Ok(Some(Fetched {
            total: Some(size),
            stream,
        }))
    }

    /// Starts the task that moves `content` into the store.
    fn start(&self, want: &Want, content: Content, id: u64) -> Result<Arc<Download>, Error> {
        let (tmp, file) = self
            .blobs
            .ingest_file()
            .map_err(|e| store_error(&want.subject, e))?;
        let file = Arc::new(file);
        let (progress_tx, progress) = watch::channel(Progress::Written(0));
        let expected = want.expected(content.source.clone());
        let download = Arc::new(Download {
            file: file.clone(),
            total: content.total.or(want.size),
            progress,
            subject: want.subject.clone(),
            source: content.source.clone(),
        });
        let job = Job {
            blobs: self.blobs.clone(),
            link: want.link(&self.metadata),
            flights: self.flights.clone(),
            id,
            tmp,
            file,
            media_type: want.media_type.clone(),
            manifest: want.limit.is_some(),
            progress: progress_tx,
        };
        tokio::spawn(job.run(content, expected));
        Ok(download)
    }

    /// Notes what an upstream tag resolved to, for [`Cache::remembered`].
    pub fn remember(&self, reference: &Reference, descriptor: &Descriptor) {
        if reference.digest().is_some() || reference.tag().is_none() {
            return;
        }
        let r = Remembered {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.to_string(),
            size: descriptor.size,
        };
        if let Err(e) = self.metadata.remember_upstream(&reference.to_string(), &r) {
            tracing::warn!(error = %e, %reference, "cannot record the tag's digest");
        }
    }

    /// What a tag last resolved to upstream, when that manifest is still in the store.
    pub fn remembered(&self, reference: &Reference) -> Option<Descriptor> {
        let r = self
            .metadata
            .upstream(&reference.to_string())
            .ok()
            .flatten()?;
        let digest: Digest = r.digest.parse().ok()?;
        self.blobs.contains(&digest).then_some(Descriptor {
            media_type: r.media_type,
            digest,
            size: r.size,
        })
    }

    /// The descriptor of a manifest in the store whose media type is known.
    pub fn manifest(&self, digest: &Digest) -> Option<Descriptor> {
        let size = self.blobs.size(digest)?;
        let media_type = self.metadata.media_type(digest).ok().flatten()?;
        Some(Descriptor {
            media_type,
            digest: digest.clone(),
            size,
        })
    }
}

enum Role {
    Lead(Lead),
    Follow(watch::Receiver<Stage>),
    /// Not to be answered from the store: upstream's answer, relayed.
    Upstream,
}

/// That an upstream repository served a digest, to record once its content verified.
#[derive(Debug)]
struct Link {
    metadata: Metadata,
    repository: String,
    digest: Digest,
}

impl Link {
    fn record(&self) {
        if let Err(e) = self.metadata.link_upstream(&self.repository, &self.digest) {
            tracing::warn!(digest = %self.digest, repository = %self.repository, error = %e, "cannot record which repository served the content");
        }
    }
}

/// The first caller's hold on a flight: dropped before the download starts (upstream failed,
/// or the caller went away), it takes the flight off the map so others ask again.
struct Lead {
    flights: Arc<Mutex<HashMap<Digest, Flight>>>,
    digest: Digest,
    id: u64,
    tx: Option<watch::Sender<Stage>>,
}

impl Lead {
    fn started(&mut self, download: Arc<Download>) {
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Stage::Running(download));
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            remove_flight(&self.flights, &self.digest, self.id);
            tx.send_replace(Stage::Abandoned);
        }
    }
}

fn remove_flight(flights: &Mutex<HashMap<Digest, Flight>>, digest: &Digest, id: u64) {
    let mut flights = flights.lock().unwrap_or_else(|p| p.into_inner());
    if flights.get(digest).is_some_and(|f| f.id == id) {
        flights.remove(digest);
    }
}

/// One download's task.
struct Job {
    blobs: Arc<BlobStore>,
    /// Recorded when the content is in the store.
    link: Link,
    flights: Arc<Mutex<HashMap<Digest, Flight>>>,
    id: u64,
    tmp: PathBuf,
    file: Arc<File>,
    media_type: Option<String>,
    /// Manifests get their media type recorded, from the body when the caller did not say.
    manifest: bool,
    progress: watch::Sender<Progress>,
}

impl Job {
    async fn run(self, content: Content, expected: Expected) {
        let digest = expected.digest.clone();
        let subject = expected.subject.clone();
        let mut written = 0u64;
        let result = self.copy(content, expected, &mut written).await;
        let result = match result {
            Ok(()) => self.commit(&digest, &subject).await,
            Err(e) => Err(e),
        };
        remove_flight(&self.flights, &digest, self.id);
        match result {
            Ok(()) => {
                tracing::info!(%digest, bytes = written, "cached");
                self.progress.send_replace(Progress::Done(written));
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "download not cached");
                let _ = std::fs::remove_file(&self.tmp);
                self.progress.send_replace(Progress::Failed(Arc::new(e)));
            }
        }
    }

    /// Upstream bytes into the file, checked as they come; progress after each write.
    async fn copy(
        &self,
        content: Content,
        expected: Expected,
        written: &mut u64,
    ) -> Result<(), Error> {
        let subject = expected.subject.clone();
        let mut verifier = Verifier::new(expected);
        // Whatever has arrived goes to the file in one write.
        let mut batches = content.stream.ready_chunks(64);
        while let Some(batch) = batches.next().await {
            let mut chunks = Vec::with_capacity(batch.len());
            let mut failed = None;
            for item in batch {
                match item.and_then(|c| verifier.update(&c).map(|()| c)) {
                    Ok(c) => chunks.push(c),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            *written = write_at(&self.file, chunks, *written)
                .await
                .map_err(|e| store_error(&subject, e))?;
            if let Some(e) = failed {
                return Err(e);
            }
            self.progress.send_replace(Progress::Written(*written));
        }
        verifier.finish()
    }

    async fn commit(&self, digest: &Digest, subject: &str) -> Result<(), Error> {
        let blobs = self.blobs.clone();
        let (tmp, file, d) = (self.tmp.clone(), self.file.clone(), digest.clone());
        tokio::task::spawn_blocking(move || blobs.commit_checked(&tmp, &file, &d))
            .await
            .map_err(|e| Error::Store(e.to_string()))?
            .map_err(|e| store_error(subject, e))?;
        self.link.record();
        if !self.manifest {
            return Ok(());
        }
        let media_type = match self.media_type.clone().filter(|t| !t.is_empty()) {
            Some(t) => Some(t),
            None => self
                .blobs
                .read_small(digest, berth_core::media::MAX_MANIFEST_SIZE)
                .await
                .ok()
                .and_then(|body| crate::client::media_type_of_body(&body)),
        };
        if let Some(t) = media_type {
            if let Err(e) = self.link.metadata.set_media_type(digest, &t) {
                tracing::warn!(%digest, error = %e, "cannot record the manifest's media type");
            }
        }
        Ok(())
    }
}

async fn write_at(file: &Arc<File>, chunks: Vec<Bytes>, offset: u64) -> std::io::Result<u64> {
    if chunks.is_empty() {
        return Ok(offset);
    }
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        let mut at = offset;
        for c in chunks {
            file.write_all_at(&c, at)?;
            at += c.len() as u64;
        }
        Ok(at)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The bytes of a download as they land in its file, ending with its error if it fails.
fn tail(download: Arc<Download>) -> Fetched {
    let total = download.total;
    let stream = async_stream::try_stream! {
        let mut progress = download.progress.clone();
        let mut offset = 0u64;
        loop {
            let now = progress.borrow_and_update().clone();
            let (available, done) = match now {
                Progress::Written(n) => (n, false),
                Progress::Done(n) => (n, true),
                Progress::Failed(e) => Err::<(u64, bool), Error>(copy_error(&e))?,
            };
            while offset < available {
                let len = (available - offset).min(TAIL_CHUNK);
                let chunk = read_at(&download.file, offset, len)
                    .await
                    .map_err(|e| store_error(&download.subject, e))?;
                offset += len;
                yield Bytes::from(chunk);
            }
            if done {
                break;
            }
            if progress.changed().await.is_err() {
                Err(Error::Interrupted {
                    subject: download.subject.clone(),
                    host: download.source.clone(),
                    reason: "the download stopped".into(),
                })?;
            }
        }
    };
    Fetched {
        total,
        stream: stream.boxed(),
    }
}

async fn read_at(file: &Arc<File>, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn store_error(subject: &str, e: std::io::Error) -> Error {
    Error::Store(format!("{subject}: {e}"))
}

/// The same failure for each tail of a download (errors are not `Clone`).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::DigestMismatch { subject, host, got } => Error::DigestMismatch {
            subject: subject.clone(),
            host: host.clone(),
            got: got.clone(),
        },
        Error::SizeMismatch {
            subject,
            host,
            expected,
            got,
        } => Error::SizeMismatch {
            subject: subject.clone(),
            host: host.clone(),
            expected: *expected,
            got: got.clone(),
        },
        Error::ManifestTooLarge { subject, size } => Error::ManifestTooLarge {
            subject: subject.clone(),
            size: *size,
        },
        Error::Interrupted {
            subject,
            host,
            reason,
        } => Error::Interrupted {
            subject: subject.clone(),
            host: host.clone(),
            reason: reason.clone(),
        },
        Error::Store(s) => Error::Store(s.clone()),
        other => Error::Store(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream::BoxStream;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::mpsc;

    fn cache() -> (tempfile::TempDir, Arc<Cache>) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(BlobStore::open(&dir.path().join("store")).unwrap());
        let metadata = Metadata::open(&dir.path().join("metadata")).unwrap();
        (dir, Arc::new(Cache::new(blobs, metadata)))
    }

    fn want(data: &[u8]) -> Want {
        Want {
            digest: Digest::sha256_of(data),
            size: Some(data.len() as u64),
            limit: None,
            subject: format!("blob {}", Digest::sha256_of(data)),
            media_type: None,
            repository: "upstream.example/app".into(),
            reuse: Reuse::Any,
        }
    }

    fn content(stream: BoxStream<'static, Result<Bytes, Error>>) -> Content {
        Content {
            total: None,
            source: "upstream.example".into(),
            stream,
        }
    }

    /// An upstream answer fed by hand, one chunk at a time.
    fn fed() -> (
        mpsc::UnboundedSender<Bytes>,
        BoxStream<'static, Result<Bytes, Error>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let s = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
            .map(Ok)
            .boxed();
        (tx, s)
    }

    /// An upstream answer fed by hand that may be opened once.
    struct Once {
        stream: Mutex<Option<BoxStream<'static, Result<Bytes, Error>>>>,
        opens: AtomicUsize,
    }

    impl Once {
        fn new() -> (mpsc::UnboundedSender<Bytes>, Once) {
            let (tx, s) = fed();
            let once = Once {
                stream: Mutex::new(Some(s)),
                opens: AtomicUsize::new(0),
            };
            (tx, once)
        }

        fn open(&self) -> impl std::future::Future<Output = Result<Content, Error>> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            let s = self.stream.lock().unwrap().take().expect("opened once");
            async move { Ok(content(s)) }
        }

        fn opens(&self) -> usize {
            self.opens.load(Ordering::SeqCst)
        }
    }

    async fn collect(f: Fetched) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut s = f.stream;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_miss_streams_before_the_end_then_hits_from_disk() {
        let (_dir, cache) = cache();
        let data = b"hello world".to_vec();
        let w = want(&data);
        let (tx, upstream) = Once::new();
        let mut f = cache.fetch(&w, || upstream.open()).await.unwrap();
        tx.send(Bytes::from_static(b"hello ")).unwrap();
        let first = f.stream.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"hello ", "bytes come before the download ends");
        assert!(
            !cache.blobs().contains(&w.digest),
            "not visible half-written"
        );
        tx.send(Bytes::from_static(b"world")).unwrap();
        drop(tx);
        let rest = collect(f).await.unwrap();
        assert_eq!(rest, b"world");
        // The task commits right after the last bytes; wait for it.
        for _ in 0..100 {
            if cache.blobs().contains(&w.digest) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let hit = cache
            .fetch(&w, || async { panic!("a hit must not ask upstream") })
            .await
            .unwrap();
        assert_eq!(hit.total, Some(11));
        assert_eq!(collect(hit).await.unwrap(), data);
    }

    fn once(data: &'static [u8]) -> BoxStream<'static, Result<Bytes, Error>> {
        futures::stream::iter([Ok(Bytes::from_static(data))]).boxed()
    }

    fn not_found() -> Error {
        Error::NotFound {
            subject: "blob".into(),
        }
    }

    /// Waits (bounded by a count, not a clock) until the download's task has linked it.
    async fn until_served(cache: &Cache, repository: &str, digest: &Digest) {
        for _ in 0..1000 {
            if cache.served(repository, digest).unwrap() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{digest} never linked to {repository}");
    }

    #[tokio::test]
    async fn linked_fetches_reuse_only_what_their_repository_served() {
        let (_dir, cache) = cache();
        let data: &'static [u8] = b"a private layer";
        let mut a = want(data);
        a.repository = "upstream.example/team/private".into();
        a.reuse = Reuse::Linked;
        let f = cache.fetch(&a, || async { Ok(content(once(data))) }).await;
        assert_eq!(collect(f.unwrap()).await.unwrap(), data);
        until_served(&cache, &a.repository, &a.digest).await;
        assert!(cache.blobs().contains(&a.digest));

        // The same repository is answered from the store without asking upstream.
        let hit = cache.fetch(&a, || async { panic!("a hit must not ask upstream") });
        assert_eq!(collect(hit.await.unwrap()).await.unwrap(), data);

        // Another repository asks upstream, which does not have it there: refused.
        let mut b = a.clone();
        b.repository = "upstream.example/someone/else".into();
        let asked = AtomicUsize::new(0);
        let e = cache
            .fetch(&b, || {
                asked.fetch_add(1, Ordering::SeqCst);
                async { Err::<Content, _>(not_found()) }
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(asked.load(Ordering::SeqCst), 1, "upstream decided");
        assert!(!cache.served(&b.repository, &b.digest).unwrap());

        // berthd's own services share every digest.
        let mut any = b.clone();
        any.reuse = Reuse::Any;
        let hit = cache.fetch(&any, || async { panic!("a hit must not ask upstream") });
        assert_eq!(collect(hit.await.unwrap()).await.unwrap(), data);

        // Upstream serving it for that repository too: relayed, verified, then linked.
        let relayed = cache.fetch(&b, || async { Ok(content(once(data))) }).await;
        assert_eq!(collect(relayed.unwrap()).await.unwrap(), data);
        assert!(cache.served(&b.repository, &b.digest).unwrap());
    }

    #[tokio::test]
    async fn a_relay_of_forged_bytes_fails_and_links_nothing() {
        let (_dir, cache) = cache();
        let data: &'static [u8] = b"the real layer";
        let mut a = want(data);
        a.reuse = Reuse::Linked;
        let f = cache.fetch(&a, || async { Ok(content(once(data))) }).await;
        collect(f.unwrap()).await.unwrap();
        until_served(&cache, &a.repository, &a.digest).await;
        let mut b = a.clone();
        b.repository = "upstream.example/other".into();
        let forged = cache.fetch(&b, || async { Ok(content(once(b"a forged layer"))) });
        let e = collect(forged.await.unwrap()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DataLoss, "{e}");
        assert!(!cache.served(&b.repository, &b.digest).unwrap());
        assert_eq!(cache.blobs().size(&a.digest), Some(data.len() as u64));
    }

    #[tokio::test]
    async fn a_download_under_way_is_joined_by_its_own_repository_only() {
        let (_dir, cache) = cache();
        let data = vec![9u8; 2 << 20];
        let mut a = want(&data);
        a.reuse = Reuse::Linked;
        let (tx, upstream) = Once::new();
        let open = || upstream.open();
        let first = cache.fetch(&a, open).await.unwrap();
        tx.send(Bytes::copy_from_slice(&data[..1 << 20])).unwrap();
        let joined = cache.fetch(&a, open).await.unwrap();
        assert_eq!(upstream.opens(), 1, "the same repository joins");
        let mut b = a.clone();
        b.repository = "upstream.example/other".into();
        let e = cache
            .fetch(&b, || async { Err::<Content, _>(not_found()) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "another one asks upstream");
        let readers = (tokio::spawn(collect(first)), tokio::spawn(collect(joined)));
        tx.send(Bytes::copy_from_slice(&data[1 << 20..])).unwrap();
        drop(tx);
        assert_eq!(readers.0.await.unwrap().unwrap(), data);
        assert_eq!(readers.1.await.unwrap().unwrap(), data);
    }

    #[tokio::test]
    async fn concurrent_fetches_download_once() {
        let (_dir, cache) = cache();
        let data = vec![7u8; 3 << 20];
        let w = want(&data);
        let (tx, upstream) = Once::new();
        let open = || upstream.open();
        let a = cache.fetch(&w, open).await.unwrap();
        tx.send(Bytes::copy_from_slice(&data[..1 << 20])).unwrap();
        let b = cache.fetch(&w, open).await.unwrap();
        let reader_a = tokio::spawn(collect(a));
        let reader_b = tokio::spawn(collect(b));
        tx.send(Bytes::copy_from_slice(&data[1 << 20..])).unwrap();
        drop(tx);
        assert_eq!(reader_a.await.unwrap().unwrap(), data);
        assert_eq!(reader_b.await.unwrap().unwrap(), data);
        assert_eq!(upstream.opens(), 1);
    }

    #[tokio::test]
    async fn bad_content_fails_every_tail_and_stores_nothing() {
        let (dir, cache) = cache();
        let w = want(b"the real thing");
        let (tx, upstream) = Once::new();
        let open = || upstream.open();
        let a = cache.fetch(&w, open).await.unwrap();
        let b = cache.fetch(&w, open).await.unwrap();
        tx.send(Bytes::from_static(b"a forged thing")).unwrap();
        drop(tx);
        for f in [a, b] {
            let e = collect(f).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::DataLoss, "{e}");
        }
        assert!(!cache.blobs().contains(&w.digest));
        let ingest = std::fs::read_dir(dir.path().join("store/ingest")).unwrap();
        assert_eq!(ingest.count(), 0, "the partial file is removed");
        // The next fetch asks upstream again.
        let again = cache
            .fetch(&w, || async {
                Ok(content(
                    futures::stream::iter([Ok(Bytes::from_static(b"the real thing"))]).boxed(),
                ))
            })
            .await
            .unwrap();
        assert_eq!(collect(again).await.unwrap(), b"the real thing");
    }

    #[tokio::test]
    async fn a_failed_open_lets_the_next_caller_try() {
        let (_dir, cache) = cache();
        let w = want(b"x");
        let e = cache
            .fetch(&w, || async {
                Err::<Content, _>(Error::NotFound {
                    subject: "blob".into(),
                })
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let ok = cache
            .fetch(&w, || async {
                Ok(content(
                    futures::stream::iter([Ok(Bytes::from_static(b"x"))]).boxed(),
                ))
            })
            .await
            .unwrap();
        assert_eq!(collect(ok).await.unwrap(), b"x");
    }

    #[tokio::test]
    async fn manifests_keep_their_media_type() {
        let (_dir, cache) = cache();
        let body = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        let mut w = want(body);
        w.limit = Some(berth_core::media::MAX_MANIFEST_SIZE);
        let f = cache
            .fetch(&w, || async {
                Ok(content(
                    futures::stream::iter([Ok(Bytes::from_static(body))]).boxed(),
                ))
            })
            .await
            .unwrap();
        collect(f).await.unwrap();
        for _ in 0..100 {
            if cache.manifest(&w.digest).is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let d = cache.manifest(&w.digest).expect("cached with a media type");
        assert_eq!(d.media_type, berth_core::media::OCI_MANIFEST);
    }

    #[tokio::test]
    async fn remembered_tags_need_their_manifest() {
        let (_dir, cache) = cache();
        let r = Reference::parse("reg.example/app:1").unwrap();
        let manifest = br#"{"schemaVersion":2}"#.to_vec();
        let d = Descriptor {
            media_type: berth_core::media::OCI_MANIFEST.into(),
            digest: Digest::sha256_of(&manifest),
            size: manifest.len() as u64,
        };
        cache.remember(&r, &d);
        assert_eq!(cache.remembered(&r), None, "manifest not cached yet");
        cache.blobs().put_small(manifest).await.unwrap();
        assert_eq!(cache.remembered(&r), Some(d));
    }
}
