//! The gRPC shell over [`Snapshots`]: `berth.snapshots.v1.Snapshots`. Each RPC reads the
//! namespace from metadata, runs the domain call on a blocking thread, and maps errors to
//! status codes ([`Error::code`]).
//!
//! `Apply` is client-streaming: a header, then the layer's bytes as stored. The bytes are
//! handed to the blocking unpacker through a bounded channel as they arrive (so a large layer
//! is never held in memory). A name that is already committed is answered at once with
//! `existed = true` and the data is not read. A header with neither name nor diff_id has the
//! layer committed under the chain id of what arrives. `ApplyResponse.size` is the disk use of
//! the committed snapshot's own folder, as `Usage` reports it; `name` and `diff_id` are always
//! filled. See [`Snapshots::apply`] for parents still being applied.
//!
//! `Diff` is server-streaming: the blocking writer ([`Snapshots::diff`]) fills chunks of
//! [`DIFF_CHUNK`] bytes into a bounded channel the response stream drains, so the tar is never
//! held whole and a slow client slows the walk. An error before the first byte is the RPC's
//! status; one later ends the stream with that status (the tar is then cut short).

use crate::error::Error;
use crate::metadata::Kind;
use crate::snapshots::{Info, Layer, Snapshots};
use berth_api::prost_types::Timestamp;
use berth_api::snapshots::v1 as pb;
use berth_api::snapshots::v1::apply_request::Item;
use berth_api::snapshots::v1::snapshots_server::Snapshots as SnapshotsApi;
use berth_api::types::v1::{NamespaceUsage, NamespaceUsageRequest, NamespaceUsageResponse};
use berth_core::digest::Algorithm;
use berth_core::grpc::namespace;
use berth_core::Digest;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

/// The tonic service; cheap to clone.
#[derive(Debug, Clone)]
pub struct SnapshotsService {
    snapshots: Arc<Snapshots>,
}

impl SnapshotsService {
    pub fn new(snapshots: Arc<Snapshots>) -> SnapshotsService {
        SnapshotsService { snapshots }
    }

    /// Runs a blocking domain call on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshots) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || f(&snapshots))
            .await
            .map_err(|e| Status::internal(format!("snapshot task failed: {e}")))?
            .map_err(Status::from)
    }
}

fn labels(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn optional(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn kind(k: Kind) -> pb::Kind {
    match k {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    }
}

fn info(i: Info) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        name: i.name,
        parent: i.parent.unwrap_or_default(),
        kind: kind(i.kind) as i32,
        labels: i.labels.into_iter().collect(),
        created_at: Some(timestamp(i.created)),
        updated_at: Some(timestamp(i.updated)),
    }
}

/// Bytes per Diff message: well under gRPC's usual 4 MiB message limit.
pub const DIFF_CHUNK: usize = 256 * 1024;

/// Diff chunks waiting for the client, at most.
const DIFF_QUEUE: usize = 4;

/// Collects the Diff tar into chunks and hands them to the response stream.
struct ChannelWriter {
    tx: mpsc::Sender<Result<pb::DiffResponse, Status>>,
    chunk: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.chunk, Vec::with_capacity(DIFF_CHUNK));
        self.tx
            .blocking_send(Ok(pb::DiffResponse { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the Diff client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(DIFF_CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == DIFF_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Reads the layer bytes the async side forwards. An empty chunk marks the client's clean
/// end of the stream; a channel closed without it (the call was cancelled and its handler
/// dropped) is an error, never a short layer.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the Apply call was cancelled before its data ended",
                    ))
                }
                Some(Ok(chunk)) if chunk.is_empty() => self.ended = true,
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[tonic::async_trait]
impl SnapshotsApi for SnapshotsService {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let mounts = self
            .run(move |s| {
                s.prepare(
                    &r.snapshotter,
                    &ns,
                    &r.key,
                    optional(r.parent).as_deref(),
                    labels(r.labels),
                )
            })
            .await?;
        Ok(Response::new(pb::MountsResponse { mounts }))
    }

    async fn view(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let mounts = self
            .run(move |s| {
                s.view(
                    &r.snapshotter,
                    &ns,
                    &r.key,
                    optional(r.parent).as_deref(),
                    labels(r.labels),
                )
            })
            .await?;
        Ok(Response::new(pb::MountsResponse { mounts }))
    }

    async fn mounts(
        &self,
        request: Request<pb::SnapshotKey>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let mounts = self
            .run(move |s| s.mounts(&r.snapshotter, &ns, &r.key))
            .await?;
        Ok(Response::new(pb::MountsResponse { mounts }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<pb::CommitSnapshotResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        self.run(move |s| s.commit(&r.snapshotter, &ns, &r.name, &r.key, labels(r.labels)))
            .await?;
        Ok(Response::new(pb::CommitSnapshotResponse {}))
    }

    async fn remove(
        &self,
        request: Request<pb::SnapshotKey>,
    ) -> Result<Response<pb::RemoveSnapshotResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        self.run(move |s| s.remove(&r.snapshotter, &ns, &r.key))
            .await?;
        Ok(Response::new(pb::RemoveSnapshotResponse {}))
    }

    async fn stat(
        &self,
        request: Request<pb::SnapshotKey>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let i = self
            .run(move |s| s.stat(&r.snapshotter, &ns, &r.key))
            .await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let all = self.run(move |s| s.list(&r.snapshotter, &ns)).await?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            info: all.into_iter().map(info).collect(),
        }))
    }

    async fn usage(
        &self,
        request: Request<pb::SnapshotKey>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let u = self
            .run(move |s| s.usage(&r.snapshotter, &ns, &r.key))
            .await?;
        Ok(Response::new(pb::UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn apply(
        &self,
        request: Request<Streaming<pb::ApplyRequest>>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let ns = namespace(&request)?;
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::ApplyRequest {
                item: Some(Item::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first Apply message must be the header (snapshotter, name, parent, media_type, diff_id)",
                ))
            }
        };
        if header.name.is_empty() != header.diff_id.is_empty() {
            return Err(Status::invalid_argument(
                "Apply: name and diff_id go together: give both, or leave both empty to have the layer committed under the chain id of what arrives",
            ));
        }
        let diff_id = match optional(header.diff_id) {
            None => None,
            Some(d) => {
                let d: Digest = d
                    .parse()
                    .map_err(|e| Status::invalid_argument(format!("diff_id: {e}")))?;
                if d.algorithm() != Algorithm::Sha256 {
                    return Err(Status::invalid_argument(format!(
                        "diff_id {d} is not sha256; layers are verified with sha256 only"
                    )));
                }
                Some(d)
            }
        };
        let layer = Layer {
            name: optional(header.name),
            parent: optional(header.parent),
            media_type: header.media_type,
            diff_id,
            labels: labels(header.labels),
        };
        let sn = header.snapshotter;

        // Already there: answer now and leave the data unread.
        if let (Some(name), Some(diff_id)) = (layer.name.clone(), layer.diff_id.clone()) {
            let (sn2, ns2, name2) = (sn.clone(), ns.clone(), name.clone());
            if let Some(size) = self.run(move |s| s.committed(&sn2, &ns2, &name2)).await? {
                return Ok(Response::new(pb::ApplyResponse {
                    existed: true,
                    size,
                    name,
                    diff_id: diff_id.to_string(),
                }));
            }
        }

        let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(16);
        let reader = ChannelReader::new(rx);
        let snapshots = self.snapshots.clone();
        let work = tokio::task::spawn_blocking(move || snapshots.apply(&sn, &ns, &layer, reader));
        loop {
            let item = match stream.message().await {
                Ok(Some(pb::ApplyRequest {
                    item: Some(Item::Data(d)),
                })) if d.is_empty() => continue,
                Ok(Some(pb::ApplyRequest {
                    item: Some(Item::Data(d)),
                })) => Ok(d),
                Ok(Some(pb::ApplyRequest {
                    item: Some(Item::Header(_)),
                })) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a second Apply header arrived in the middle of the data",
                )),
                Ok(Some(pb::ApplyRequest { item: None })) => continue,
                Ok(None) => {
                    // The end marker; the unpacker may be gone already.
                    let _ = tx.send(Ok(Vec::new())).await;
                    break;
                }
                Err(status) => Err(io::Error::other(format!(
                    "the client's stream broke off: {}",
                    status.message()
                ))),
            };
            let stop = item.is_err();
            // A closed channel means the unpacker is done (or failed); its result tells.
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
        drop(tx);
        let applied = work
            .await
            .map_err(|e| Status::internal(format!("apply task failed: {e}")))?
            .map_err(Status::from)?;
        Ok(Response::new(pb::ApplyResponse {
            existed: applied.existed,
            size: applied.size,
            name: applied.name,
            diff_id: applied.diff_id.to_string(),
        }))
    }

    async fn namespace_usage(
        &self,
        _request: Request<NamespaceUsageRequest>,
    ) -> Result<Response<NamespaceUsageResponse>, Status> {
        let usage = self.run(|s| s.namespace_usage()).await?;
        Ok(Response::new(NamespaceUsageResponse {
            namespaces: usage
                .into_iter()
                .map(|(namespace, objects)| NamespaceUsage {
                    namespace,
                    objects: objects.into_iter().collect(),
                })
                .collect(),
        }))
    }

    type DiffStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::DiffResponse, Status>> + Send>>;

    async fn diff(
        &self,
        request: Request<pb::DiffRequest>,
    ) -> Result<Response<Self::DiffStream>, Status> {
        let ns = namespace(&request)?;
        let r = request.into_inner();
        let (tx, mut rx) = mpsc::channel(DIFF_QUEUE);
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter {
                tx: tx.clone(),
                chunk: Vec::with_capacity(DIFF_CHUNK),
            };
            if let Err(e) = snapshots.diff(&r.snapshotter, &ns, &r.key, &mut out) {
                if tx.is_closed() {
                    tracing::debug!(key = r.key, "the Diff client went away");
                    return;
                }
                tracing::warn!(key = r.key, error = %e, "diff failed");
                // Whatever was collected is dropped: the tar is incomplete either way.
                let _ = tx.blocking_send(Err(Status::from(e)));
            }
        });
        // An error before any data is the call's own status.
        let first = match rx.recv().await {
            Some(Err(status)) => return Err(status),
            first => first,
        };
        let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
            tokio_stream::iter(first),
            rest,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut r: ChannelReader) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_layer_stream_ends_only_at_its_end_marker() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"ab".to_vec())).unwrap();
        tx.try_send(Ok(Vec::new())).unwrap();
        drop(tx);
        assert_eq!(read_all(ChannelReader::new(rx)).unwrap(), b"ab");

        // Dropped without the marker: a cancelled call, not a short layer.
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"ab".to_vec())).unwrap();
        drop(tx);
        let e = read_all(ChannelReader::new(rx)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
