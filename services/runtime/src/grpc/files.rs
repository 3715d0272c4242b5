//! The file RPCs of `berth.containers.v1.Containers` — Changes, Export, ArchiveStat,
//! ArchiveGet, ArchivePut — over [`crate::tasks::files`]: a tar goes out as a stream of
//! chunks written by a blocking thread, and comes in as one read by another.

use crate::rootfs::{archive, extract, PathStat};
use crate::tasks::Tasks;
use berth_api::containers::v1 as api;
use std::io::{self, Read, Write};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// Chunks of a tar as the client receives them.
pub type ChunkStream = ReceiverStream<Result<api::ArchiveChunk, Status>>;

const CHUNK: usize = 256 * 1024;

/// A `Write` that sends what it is given as chunks; fails once the client is gone.
struct ChunkWriter {
    tx: mpsc::Sender<Result<api::ArchiveChunk, Status>>,
    buf: Vec<u8>,
    stat: Option<api::PathStat>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = api::ArchiveChunk {
            data: std::mem::take(&mut self.buf),
            stat: self.stat.take(),
        };
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() || self.stat.is_some() {
            self.send()?;
        }
        Ok(())
    }
}

/// Runs `write` on a blocking thread into a chunk stream; an error ends the stream with it.
fn stream_tar(
    stat: Option<api::PathStat>,
    write: impl FnOnce(&mut ChunkWriter) -> io::Result<()> + Send + 'static,
) -> ChunkStream {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::new(),
            stat,
        };
        let r = write(&mut w).and_then(|()| w.flush());
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::BrokenPipe {
                let _ =
                    tx.blocking_send(Err(Status::internal(format!("cannot write the tar: {e}"))));
            }
        }
    });
    ReceiverStream::new(rx)
}

fn api_stat(s: PathStat) -> api::PathStat {
    api::PathStat {
        name: s.name,
        size: s.size,
        mode: s.mode,
        mtime: Some(prost_types::Timestamp {
            seconds: s.mtime.0,
            nanos: s.mtime.1 as i32,
        }),
        link_target: s.link_target,
    }
}

/// A path error as Docker words it.
fn path_error(e: io::Error, path: &str, reference: &str) -> Status {
    if e.kind() == io::ErrorKind::NotFound {
        Status::not_found(format!(
            "Could not find the file {path} in container {reference}"
        ))
    } else {
        Status::failed_precondition(format!("{path} in container {reference}: {e}"))
    }
}

pub async fn changes(
    tasks: &Tasks,
    ns: &str,
    id: &str,
) -> Result<api::ContainerChangesResponse, Status> {
    let changes = tasks.container_changes(ns, id).await?;
    Ok(api::ContainerChangesResponse {
        changes: changes
            .into_iter()
            .map(|c| api::Change {
                path: c.path,
                kind: c.kind,
            })
            .collect(),
    })
}

pub async fn export(tasks: &Tasks, ns: &str, id: &str) -> Result<ChunkStream, Status> {
    let root = tasks.export_root(ns, id).await?;
    Ok(stream_tar(None, move |w| {
        archive::write_root(&root.fd, w).map(|_| ())
    }))
}

pub async fn archive_stat(
    tasks: &Tasks,
    ns: &str,
    r: api::ArchivePathRequest,
) -> Result<api::PathStat, Status> {
    let asked = absolute(&r.path);
    let (open, path) = tasks.path_root(ns, &r.id, &asked, false).await?;
    tokio::task::spawn_blocking(move || {
        archive::stat(&open.root.fd, &path)
            .map(|s| as_asked(s, &asked))
            .map_err(|e| path_error(e, &asked, &r.id))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map(api_stat)
}

pub async fn archive_get(
    tasks: &Tasks,
    ns: &str,
    r: api::ArchivePathRequest,
) -> Result<ChunkStream, Status> {
    let asked = absolute(&r.path);
    let (open, path) = tasks.path_root(ns, &r.id, &asked, false).await?;
    let (open, stat) = tokio::task::spawn_blocking(move || {
        let s = archive::stat(&open.root.fd, &path)
            .map(|s| as_asked(s, &asked))
            .map_err(|e| path_error(e, &asked, &r.id));
        (open, s.map(|s| (s, path)))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?;
    let (stat, path) = stat?;
    let name = stat.name.clone();
    Ok(stream_tar(Some(api_stat(stat)), move |w| {
        archive::write_tree(&open.root.fd, &path, &name, w).map(|_| ())
    }))
}

/// The tar of a PUT, read from the request stream by a blocking thread.
struct StreamReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

pub async fn archive_put(
    tasks: Arc<Tasks>,
    ns: &str,
    mut stream: Streaming<api::ArchivePutRequest>,
) -> Result<api::ArchivePutResponse, Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("an ArchivePut stream needs a first message"))?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let first_data = first.data.clone();
    // The client's chunks feed the reader while the tar is unpacked.
    let feed = tokio::spawn(async move {
        if !first_data.is_empty() && tx.send(first_data).await.is_err() {
            return Ok(());
        }
        while let Some(m) = stream.message().await? {
            if tx.send(m.data).await.is_err() {
                break;
            }
        }
        Ok::<(), Status>(())
    });
    let reader = StreamReader {
        rx,
        buf: Vec::new(),
        at: 0,
    };
    let options = extract::Options {
        no_overwrite_dir_non_dir: first.no_overwrite_dir_non_dir,
        copy_uid_gid: first.copy_uid_gid,
    };
    let result = tasks
        .archive_put(ns, &first.id, &absolute(&first.path), reader, options)
        .await;
    feed.abort();
    result.map_err(Status::from)?;
    Ok(api::ArchivePutResponse {})
}

/// A stat of a path reached inside a mount's source, named as the path asked for (the mount
/// point itself is `/` in its source, but `data` to the client).
fn as_asked(mut stat: PathStat, asked: &str) -> PathStat {
    let base = asked.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if !base.is_empty() && base != "." && base != ".." {
        stat.name = base.to_string();
    }
    stat
}

fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}
