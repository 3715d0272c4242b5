//! `image export` and `save`: stored images as one tar stream, in one of two layouts.
//!
//! - [`Format::Oci`]: an OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!   Each name is one manifest descriptor of `index.json` carrying the full reference
//!   (`docker.io/library/busybox:latest`) both as `org.opencontainers.image.ref.name` and as
//!   containerd's `io.containerd.image.name`. Docker and containerd put only the tag in
//!   `ref.name`; the full name keeps `a:latest` and `b:latest` apart in one archive, and it is
//!   what skopeo (`oci-archive:FILE:NAME`), umoci (`--image DIR:NAME`) and podman look up.
//! - [`Format::Docker`]: what `docker save` of Docker 25 writes: the same OCI layout plus
//!   `manifest.json` (`Config`, `RepoTags`, `Layers` as paths into `blobs/`) and
//!   `repositories`. Docker 20.10's `docker load` reads `manifest.json` and takes layers
//!   compressed as they are stored (it decompresses each and checks it against the config's
//!   `diff_ids`), so no layer is rewritten and the image id stays the same.
//!
//! A Docker schema 2 manifest goes into the layout as an OCI manifest, as `skopeo copy` to
//! `oci:` does (skopeo 1.9 and umoci 0.4 refuse Docker media types there): only media types
//! change; the config and the layers are the same bytes, so the image id is the same.
//!
//! [`ImageStore::export_archive`] resolves every name and checks every blob before anything is
//! sent, so an unknown name fails with NotFound and no stream; [`Archive::stream`] then writes
//! each blob once, however many names share it, straight from the content store into the tar
//! stream, which leaves in chunks over a bounded channel.

use crate::content::ContentStore;
use crate::error::ImageError;
use crate::images::ImageStore;
use crate::lease::Lease;
use crate::manifest::{Descriptor, Index, ManifestError};
use crate::metadata::ImageRecord;
use berth_api::images::v1 as api;
use berth_core::{media, Digest, Reference};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// containerd's annotation with the image's full name; berth's importer reads it first.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation tools look an image of a layout up by.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What [`Archive::stream`] gives: the archive's chunks, then its error if it failed.
pub type ExportStream =
    Pin<Box<dyn futures::Stream<Item = Result<api::ExportResponse, Status>> + Send>>;

/// The stream goes out in messages of this size (the last one shorter).
const CHUNK: usize = 1 << 20;
/// Chunks waiting for a slow client: at most this many, so at most 8 MiB held in memory.
const CHUNKS_IN_FLIGHT: usize = 8;

/// The layout of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout.
    Oci,
    /// `docker save`'s archive (Docker 25's: an OCI layout with `manifest.json`).
    Docker,
}

impl Format {
    /// `"oci"` (also the empty string) or `"docker"`.
    pub fn parse(s: &str) -> Result<Format, ImageError> {
        match s {
            "" | "oci" => Ok(Format::Oci),
            "docker" => Ok(Format::Docker),
            other => Err(ImageError::InvalidArgument(format!(
                "unknown export format {other:?}: use \"oci\" or \"docker\""
            ))),
        }
    }
}

/// One entry of the archive, in order.
#[derive(Debug)]
enum Entry {
    Dir(&'static str),
    /// A file made here: `oci-layout`, `index.json`, a converted manifest…
    File {
        path: String,
        data: Vec<u8>,
    },
    /// A blob of the content store, copied as it is.
    Blob {
        digest: Digest,
        size: u64,
    },
}

/// An export planned from the store: every name resolved, every blob known to be present
/// and held from garbage collection until the archive is dropped.
#[derive(Debug)]
pub struct Archive {
    entries: Vec<Entry>,
    content: ContentStore,
    lease: Lease,
}

/// One line of `docker save`'s `manifest.json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// What the archive holds so far.
#[derive(Debug)]
struct Plan {
    lease: Lease,
    entries: Vec<Entry>,
    seen: HashSet<Digest>,
    index: Vec<Descriptor>,
    /// `manifest.json`, one line per manifest, with the manifest's digest.
    docker: Vec<(Digest, DockerSaveEntry)>,
    /// `repositories`: familiar repository → tag → the top layer's hex.
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn incomplete(name: &str, reason: String) -> ImageError {
    ManifestError::Invalid {
        what: format!("image {name}"),
        reason,
    }
    .into()
}

/// The OCI form of a manifest: a Docker schema 2 manifest with its media types mapped to
/// OCI's, anything else (an OCI manifest) as it is. None when nothing changes.
fn oci_manifest(bytes: &[u8]) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let mut m: serde_json::Value = serde_json::from_slice(bytes)?;
    if m.get("mediaType").and_then(|t| t.as_str()) != Some(media::DOCKER_MANIFEST) {
        return Ok(None);
    }
    fn map(t: &str) -> &str {
        match t {
            media::DOCKER_CONFIG => media::OCI_CONFIG,
            media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
            media::DOCKER_LAYER_FOREIGN_GZIP => media::OCI_LAYER_NONDIST_GZIP,
            "application/vnd.docker.image.rootfs.diff.tar" => media::OCI_LAYER,
            other => other,
        }
    }
    let set = |d: &mut serde_json::Value| {
        if let Some(t) = d.get("mediaType").and_then(|t| t.as_str()) {
            let t = map(t).to_string();
            d["mediaType"] = t.into();
        }
    };
    m["mediaType"] = media::OCI_MANIFEST.into();
    if let Some(c) = m.get_mut("config") {
        set(c);
    }
    if let Some(layers) = m.get_mut("layers").and_then(|l| l.as_array_mut()) {
        layers.iter_mut().for_each(set);
    }
    serde_json::to_vec(&m).map(Some)
}

impl Plan {
    fn add_bytes(&mut self, digest: &Digest, data: Vec<u8>) {
        if self.seen.insert(digest.clone()) {
            self.entries.push(Entry::File {
                path: blob_path(digest),
                data,
            });
        }
    }

    fn add_blob(&mut self, digest: &Digest, size: u64) {
        if self.seen.insert(digest.clone()) {
            self.entries.push(Entry::Blob {
                digest: digest.clone(),
                size,
            });
        }
    }

    /// Adds the image of `rec`, under `name` (None: by id, without a name).
    fn add(
        &mut self,
        store: &ImageStore,
        name: Option<&str>,
        rec: ImageRecord,
    ) -> Result<(), ImageError> {
        let shown = name.unwrap_or(&rec.name).to_string();
        let r = store.resolve(rec)?;
        let manifest_digest = r.manifest_desc.digest(&shown)?;
        let stored = store
            .content
            .read_small(&manifest_digest, media::MAX_MANIFEST_SIZE)?;
        let converted = oci_manifest(&stored)
            .map_err(|e| incomplete(&shown, format!("its manifest {manifest_digest}: {e}")))?;
        let (digest, size) = match converted {
            Some(bytes) => {
                let d = Digest::sha256_of(&bytes);
                let n = bytes.len();
                self.add_bytes(&d, bytes);
                (d, n)
            }
            None => {
                let n = stored.len();
                self.add_bytes(&manifest_digest, stored);
                (manifest_digest, n)
            }
        };
        self.add_bytes(&r.config_digest, r.config.clone());
        let mut layers = Vec::new();
        for l in &r.manifest.layers {
            let d = l.digest(&shown)?;
            // Held before it is checked, so garbage collection cannot take it from under us.
            self.lease.blob(&d);
            let info = store.content.info(&d).map_err(|_| {
                incomplete(
                    &shown,
                    format!("its layer {d} is not in the content store; pull the image again"),
                )
            })?;
            if info.size != l.size as u64 {
                return Err(incomplete(
                    &shown,
                    format!(
                        "its layer {d} is {} bytes in the content store, its manifest says {}",
                        info.size, l.size
                    ),
                ));
            }
            self.add_blob(&d, info.size);
            layers.push(d);
        }

        let annotations = name.map(|n| {
            [
                (ANNOTATION_IMAGE_NAME.to_string(), n.to_string()),
                (ANNOTATION_REF_NAME.to_string(), n.to_string()),
            ]
            .into_iter()
            .collect()
        });
        let desc = Descriptor {
            media_type: media::OCI_MANIFEST.to_string(),
            digest: digest.to_string(),
            size: size as i64,
            platform: None,
            annotations,
        };
        // A name given twice is one entry; an image by id only when no name carries it.
        let dup = self.index.iter().any(|d| {
            d.digest == desc.digest && (d.annotations == desc.annotations || name.is_none())
        });
        if !dup {
            self.index.push(desc);
        }

        let tag = name
            .and_then(|n| Reference::parse(n).ok())
            .filter(|r| r.tag().is_some() && r.digest().is_none());
        if let (Some(t), Some(top)) = (&tag, layers.last()) {
            self.repositories
                .entry(t.familiar_repository())
                .or_default()
                .insert(
                    t.tag().unwrap_or(berth_core::reference::DEFAULT_TAG).into(),
                    top.hex().to_string(),
                );
        }
        let at = match self.docker.iter().position(|(d, _)| *d == digest) {
            Some(at) => at,
            None => {
                self.docker.push((
                    digest.clone(),
                    DockerSaveEntry {
                        config: blob_path(&r.config_digest),
                        repo_tags: None,
                        layers: layers.iter().map(blob_path).collect(),
                    },
                ));
                self.docker.len() - 1
            }
        };
        let line = &mut self.docker[at].1;
        if let Some(t) = tag {
            let tags = line.repo_tags.get_or_insert_with(Vec::new);
            if !tags.contains(&t.familiar()) {
                tags.push(t.familiar());
            }
        }
        Ok(())
    }

    fn finish(self, format: Format, content: ContentStore) -> Result<Archive, ImageError> {
        let mut entries = vec![
            Entry::File {
                path: "oci-layout".into(),
                data: br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            },
            Entry::Dir("blobs/"),
            Entry::Dir("blobs/sha256/"),
        ];
        entries.extend(self.entries);
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests: self.index,
        };
        entries.push(Entry::File {
            path: "index.json".into(),
            data: json("index.json", &index)?,
        });
        if format == Format::Docker {
            let lines: Vec<&DockerSaveEntry> = self.docker.iter().map(|(_, l)| l).collect();
            entries.push(Entry::File {
                path: "manifest.json".into(),
                data: json("manifest.json", &lines)?,
            });
            entries.push(Entry::File {
                path: "repositories".into(),
                data: json("repositories", &self.repositories)?,
            });
        }
        Ok(Archive {
            entries,
            content,
            lease: self.lease,
        })
    }
}

fn json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(v)
        .map_err(|e| ImageError::InvalidArgument(format!("cannot write {what}: {e}")))
}

impl ImageStore {
    /// The images `name` stands for in an export: a reference is one image under that name;
    /// an id (or a unique prefix of one) is the image without a name; for the docker format a
    /// bare repository (`busybox`) is every name of that repository, as `docker save` does.
    fn export_selection(
        &self,
        ns: &str,
        name: &str,
        format: Format,
    ) -> Result<Vec<(Option<String>, ImageRecord)>, ImageError> {
        if format == Format::Docker {
            let bare = Reference::parse_name_only(name)
                .ok()
                .filter(|r| r.tag().is_none() && r.digest().is_none());
            if let Some(repo) = bare.map(|r| r.repository()) {
                let mut all: Vec<_> = self
                    .db
                    .list(ns)?
                    .into_iter()
                    .filter(|rec| Reference::parse(&rec.name).is_ok_and(|r| r.repository() == repo))
                    .map(|rec| (Some(rec.name.clone()), rec))
                    .collect();
                if !all.is_empty() {
                    all.sort_by(|a, b| a.0.cmp(&b.0));
                    return Ok(all);
                }
            }
        }
        let rec = self.find(ns, name)?;
        let named = Reference::parse(name).is_ok_and(|r| r.to_string() == rec.name);
        Ok(vec![(named.then(|| rec.name.clone()), rec)])
    }

    /// Plans the export of `names` (references or image ids) in `format`: fails with NotFound
    /// for an unknown name, and before anything is written when a blob is missing.
    pub fn export_archive(
        &self,
        ns: &str,
        names: &[String],
        format: Format,
    ) -> Result<Archive, ImageError> {
        if names.is_empty() {
            return Err(ImageError::InvalidArgument(
                "name at least one image to export".into(),
            ));
        }
        let mut plan = Plan {
            lease: self.leases.acquire(ns, "export", Some(&names.join(","))),
            entries: Vec::new(),
            seen: HashSet::new(),
            index: Vec::new(),
            docker: Vec::new(),
            repositories: BTreeMap::new(),
        };
        for n in names {
            for (name, rec) in self.export_selection(ns, n, format)? {
                plan.add(self, name.as_deref(), rec)?;
            }
        }
        plan.finish(format, self.content.clone())
    }
}

/// A writer that sends what it is given as ExportResponse chunks down a bounded channel,
/// blocking while the channel is full: the tar stream goes no faster than the client reads.
/// A removed lease (`berth lease rm`) stops it even then.
#[derive(Debug)]
struct Chunks {
    tx: mpsc::Sender<Result<api::ExportResponse, Status>>,
    buf: Vec<u8>,
    /// The client went away: nothing more to send, errors included.
    closed: bool,
    /// The runtime the blocking writer waits on.
    runtime: tokio::runtime::Handle,
    /// Turns `true` when the export's lease is removed; the message says so.
    stop: (watch::Receiver<bool>, String),
    /// Set when the lease was removed.
    stopped: Option<String>,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let tx = &self.tx;
        let (stop, why) = &mut self.stop;
        let sent = self.runtime.block_on(async {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Err(why.clone()),
                r = tx.send(Ok(api::ExportResponse { data })) => Ok(r.is_ok()),
            }
        });
        match sent {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.closed = true;
                Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the client stopped reading",
                ))
            }
            Err(why) => {
                self.stopped = Some(why.clone());
                Err(io::Error::other(why))
            }
        }
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Archive {
    /// The paths of the archive's entries, in order.
    pub fn paths(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| match e {
                Entry::Dir(p) => p.to_string(),
                Entry::File { path, .. } => path.clone(),
                Entry::Blob { digest, .. } => blob_path(digest),
            })
            .collect()
    }

    /// Writes the archive as a tar stream into `w`.
    pub fn write_to(&self, w: impl Write) -> io::Result<()> {
        let mut tar = tar::Builder::new(w);
        let header = |kind: tar::EntryType, mode: u32, size: u64| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            // A fixed time: the same images give the same archive, byte for byte.
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h
        };
        for e in &self.entries {
            match e {
                Entry::Dir(path) => {
                    let mut h = header(tar::EntryType::Directory, 0o755, 0);
                    tar.append_data(&mut h, path, io::empty())?;
                }
                Entry::File { path, data } => {
                    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())?;
                }
                Entry::Blob { digest, size } => {
                    let path = self.content.path(digest);
                    let f = std::fs::File::open(&path).map_err(|e| {
                        io::Error::new(e.kind(), format!("blob {digest}: {}: {e}", path.display()))
                    })?;
                    let len = f.metadata()?.len();
                    if len != *size {
                        return Err(io::Error::other(format!(
                            "blob {digest} changed size while exported ({size} → {len} bytes)"
                        )));
                    }
                    let mut h = header(tar::EntryType::Regular, 0o644, *size);
                    tar.append_data(&mut h, blob_path(digest), io::Read::take(f, *size))?;
                }
            }
        }
        tar.into_inner()?.flush()
    }

    /// Streams the archive as ExportResponse chunks, written by a blocking task. An error on
    /// the way (a removed lease: Aborted) ends the stream after the chunks already queued,
    /// even when the queue is full; the lease is released before the client hears the end.
    pub fn stream(self) -> ExportStream {
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let (end_tx, end_rx) = oneshot::channel::<Result<(), Status>>();
        let span = tracing::Span::current();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let mut out = Chunks {
                tx,
                buf: Vec::with_capacity(CHUNK),
                closed: false,
                runtime,
                stop: self.lease.stop_signal(),
                stopped: None,
            };
            let end = match self.write_to(&mut out) {
                Ok(()) => Ok(()),
                Err(_) if out.closed => {
                    tracing::info!("export stopped: the client went away");
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "export failed");
                    Err(match out.stopped.take() {
                        Some(why) => Status::aborted(why),
                        None => Status::internal(format!("export failed: {e}")),
                    })
                }
            };
            drop(out);
            drop(self);
            let _ = end_tx.send(end);
        });
        let end = futures::stream::once(async move {
            end_rx
                .await
                .unwrap_or_else(|_| Err(Status::internal("the export task ended without a word")))
        });
        let end = futures::StreamExt::filter_map(end, |r| async move { r.err().map(Err) });
        Box::pin(futures::StreamExt::chain(ReceiverStream::new(rx), end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{DescriptorRecord, ImageDb};
    use std::collections::BTreeMap;
    use std::io::Read;

    /// A store with no registry or snapshot service behind it (nothing here calls them).
    fn store(dir: &std::path::Path) -> ImageStore {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        ImageStore::new(
            ContentStore::open(&dir.join("content")).unwrap(),
            ImageDb::open(&dir.join("db")).unwrap(),
            berth_api::registry::v1::registry_client::RegistryClient::new(channel.clone()),
            berth_api::snapshots::v1::snapshots_client::SnapshotsClient::new(channel),
            "overlayfs".into(),
            berth_events::Publisher::new(None),
        )
    }

    fn gzip_layer(file: &str, body: &[u8]) -> (Vec<u8>, Digest) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, file, body).unwrap();
        let raw = tar.into_inner().unwrap();
        let diff_id = Digest::sha256_of(&raw);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        (gz.finish().unwrap(), diff_id)
    }

    /// Stores an image of `layers` under `names`; the manifest in `manifest_type`'s kind.
    async fn add_image(
        s: &ImageStore,
        names: &[&str],
        layers: &[(Vec<u8>, Digest)],
        manifest_type: &str,
        created: &str,
    ) -> (Digest, Digest) {
        let docker = manifest_type == media::DOCKER_MANIFEST;
        let diff_ids: Vec<String> = layers.iter().map(|l| l.1.to_string()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "created": created, "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_digest = s.content.write_all("config", &config, None).await.unwrap();
        let mut descs = Vec::new();
        for (blob, _) in layers {
            let d = s.content.write_all("layer", blob, None).await.unwrap();
            descs.push(serde_json::json!({
                "mediaType": if docker { media::DOCKER_LAYER_GZIP } else { media::OCI_LAYER_GZIP },
                "digest": d.to_string(), "size": blob.len(),
            }));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": manifest_type,
            "config": {
                "mediaType": if docker { media::DOCKER_CONFIG } else { media::OCI_CONFIG },
                "digest": config_digest.to_string(), "size": config.len(),
            },
            "layers": descs,
        }))
        .unwrap();
        let md = s
            .content
            .write_all("manifest", &manifest, None)
            .await
            .unwrap();
        for n in names {
            let mut labels = BTreeMap::new();
            labels.insert(crate::images::LABEL_ID.into(), config_digest.to_string());
            labels.insert(crate::images::LABEL_MANIFEST.into(), md.to_string());
            let rec = ImageRecord {
                name: Reference::parse(n).unwrap().to_string(),
                target: DescriptorRecord {
                    media_type: manifest_type.into(),
                    digest: md.to_string(),
                    size: manifest.len() as i64,
                },
                labels,
                created: 1,
                updated: 1,
            };
            s.db.put("default", &rec).await.unwrap();
        }
        (md, config_digest)
    }

    /// The archive's files by path, as `tar -x` would give them.
    fn unpack(a: &Archive) -> BTreeMap<String, Vec<u8>> {
        let mut bytes = Vec::new();
        a.write_to(&mut bytes).unwrap();
        let mut out = BTreeMap::new();
        let mut t = tar::Archive::new(bytes.as_slice());
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            assert!(!out.contains_key(&path), "{path} is in the archive twice");
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(path, data);
        }
        out
    }

    fn json(files: &BTreeMap<String, Vec<u8>>, path: &str) -> serde_json::Value {
        serde_json::from_slice(&files[path]).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[tokio::test]
    async fn oci_layout_names_each_image_and_holds_each_blob_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let base = gzip_layer("bin/sh", b"shell");
        let top = gzip_layer("app", b"app");
        let (m1, c1) = add_image(
            &s,
            &["busybox:latest", "busybox:1.36"],
            std::slice::from_ref(&base),
            media::OCI_MANIFEST,
            "2024-01-01T00:00:00Z",
        )
        .await;
        add_image(
            &s,
            &["localhost:5000/app:v1"],
            &[base.clone(), top],
            media::OCI_MANIFEST,
            "2024-01-02T00:00:00Z",
        )
        .await;
        let names = [
            "busybox",
            "busybox:1.36",
            "localhost:5000/app:v1",
            "busybox",
        ];
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let a = s.export_archive("default", &names, Format::Oci).unwrap();
        let files = unpack(&a);
        assert_eq!(
            json(&files, "oci-layout"),
            serde_json::json!({"imageLayoutVersion": "1.0.0"})
        );
        let blobs: Vec<_> = files
            .keys()
            .filter(|p| p.starts_with("blobs/sha256/") && p.len() > 13)
            .collect();
        // Two manifests, two configs, two layers: the base layer once for three names.
        assert_eq!(blobs.len(), 6, "{blobs:?}");
        for p in &blobs {
            assert_eq!(Digest::sha256_of(&files[p.as_str()]).hex(), &p[13..]);
        }
        let index = json(&files, "index.json");
        let entries = index["manifests"].as_array().unwrap();
        let named: Vec<(&str, &str)> = entries
            .iter()
            .map(|d| {
                (
                    d["annotations"][ANNOTATION_REF_NAME].as_str().unwrap(),
                    d["digest"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(named.len(), 3, "{index}");
        assert!(named.contains(&("docker.io/library/busybox:latest", m1.to_string().as_str())));
        assert!(named.contains(&("docker.io/library/busybox:1.36", m1.to_string().as_str())));
        assert_eq!(named[2].0, "localhost:5000/app:v1");
        for d in entries {
            assert_eq!(
                d["annotations"][ANNOTATION_IMAGE_NAME],
                d["annotations"][ANNOTATION_REF_NAME]
            );
            assert_eq!(d["mediaType"], media::OCI_MANIFEST);
        }
        assert!(!files.contains_key("manifest.json"));
        assert!(files.contains_key(&blob_path(&c1)));
        assert!(a.paths().starts_with(&[
            "oci-layout".into(),
            "blobs/".into(),
            "blobs/sha256/".into()
        ]));
    }

    #[tokio::test]
    async fn docker_format_is_a_docker_save_archive() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let base = gzip_layer("bin/sh", b"shell");
        let (m1, c1) = add_image(
            &s,
            &["busybox:latest", "busybox:1.36"],
            std::slice::from_ref(&base),
            media::DOCKER_MANIFEST,
            "2024-01-01T00:00:00Z",
        )
        .await;
        let (_, c2) = add_image(
            &s,
            &["other:1"],
            &[base.clone(), gzip_layer("x", b"x")],
            media::OCI_MANIFEST,
            "2024-01-02T00:00:00Z",
        )
        .await;
        // `busybox` is every tag of the repository; an id is the image without a name.
        let names = vec!["busybox".to_string(), c2.hex()[..12].to_string()];
        let files = unpack(&s.export_archive("default", &names, Format::Docker).unwrap());
        let lines = json(&files, "manifest.json");
        assert_eq!(lines.as_array().unwrap().len(), 2, "{lines}");
        assert_eq!(lines[0]["Config"], blob_path(&c1));
        assert_eq!(
            lines[0]["RepoTags"],
            serde_json::json!(["busybox:1.36", "busybox:latest"])
        );
        assert_eq!(
            lines[0]["Layers"][0],
            blob_path(&Digest::sha256_of(&base.0))
        );
        assert_eq!(lines[1]["RepoTags"], serde_json::Value::Null);
        assert_eq!(lines[1]["Layers"].as_array().unwrap().len(), 2);
        for l in lines.as_array().unwrap() {
            for p in l["Layers"].as_array().unwrap().iter().chain([&l["Config"]]) {
                assert!(files.contains_key(p.as_str().unwrap()), "{p} is missing");
            }
        }
        let top = Digest::sha256_of(&base.0);
        assert_eq!(
            json(&files, "repositories"),
            serde_json::json!({"busybox": {"latest": top.hex(), "1.36": top.hex()}})
        );
        // The Docker manifest became an OCI one around the same config and layers.
        let index = json(&files, "index.json");
        let busybox = &index["manifests"][0];
        assert_ne!(busybox["digest"], m1.to_string());
        let m = json(
            &files,
            &format!("blobs/sha256/{}", &busybox["digest"].as_str().unwrap()[7..]),
        );
        assert_eq!(m["mediaType"], media::OCI_MANIFEST);
        assert_eq!(m["config"]["mediaType"], media::OCI_CONFIG);
        assert_eq!(m["config"]["digest"], c1.to_string());
        assert_eq!(m["layers"][0]["mediaType"], media::OCI_LAYER_GZIP);
        assert!(!files.contains_key(&blob_path(&m1)));
        // The image by id has no name in index.json either.
        assert!(
            index["manifests"][2].get("annotations").is_none(),
            "{index}"
        );
    }

    #[tokio::test]
    async fn unknown_names_and_missing_blobs_fail_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let layer = gzip_layer("f", b"f");
        add_image(
            &s,
            &["a:1"],
            std::slice::from_ref(&layer),
            media::OCI_MANIFEST,
            "2024-01-01T00:00:00Z",
        )
        .await;
        let err = s
            .export_archive("default", &["a:1".into(), "nothere:1".into()], Format::Oci)
            .unwrap_err();
        assert_eq!(Status::from(err).code(), tonic::Code::NotFound);
        let err = s
            .export_archive("other", &["a:1".into()], Format::Oci)
            .unwrap_err();
        assert_eq!(Status::from(err).code(), tonic::Code::NotFound);
        assert!(s.export_archive("default", &[], Format::Oci).is_err());
        assert!(Format::parse("tgz").is_err());
        s.content.delete(&Digest::sha256_of(&layer.0)).unwrap();
        let err = s
            .export_archive("default", &["a:1".into()], Format::Docker)
            .unwrap_err();
        assert!(
            err.to_string().contains("not in the content store"),
            "{err}"
        );
        assert_eq!(Status::from(err).code(), tonic::Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn blobs_being_exported_outlive_their_image() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let layer = gzip_layer("f", b"f");
        let layer_digest = Digest::sha256_of(&layer.0);
        add_image(
            &s,
            &["a:1"],
            std::slice::from_ref(&layer),
            media::OCI_MANIFEST,
            "2024-01-01T00:00:00Z",
        )
        .await;
        let a = s
            .export_archive("default", &["a:1".into()], Format::Oci)
            .unwrap();
        s.db.delete("default", "docker.io/library/a:1")
            .await
            .unwrap();
        // Blobs are collected before snapshots, which fail here (no snapshot service).
        let _ = s.collect_garbage("default").await;
        assert!(
            s.content.contains(&layer_digest),
            "the export holds its layer"
        );
        let files = unpack(&a);
        assert_eq!(files[&blob_path(&layer_digest)], layer.0);
        drop(a);
        let _ = s.collect_garbage("default").await;
        assert!(
            !s.content.contains(&layer_digest),
            "released with the archive"
        );
    }

    /// Stores `big:1`, one layer of `size` bytes of noise (it does not compress); returns it.
    async fn noise_image(s: &ImageStore, size: usize) -> (Vec<u8>, Digest) {
        let mut noise = vec![0u8; size];
        getrandom::fill(&mut noise).unwrap();
        let big = gzip_layer("noise", &noise);
        add_image(
            s,
            &["big:1"],
            std::slice::from_ref(&big),
            media::OCI_MANIFEST,
            "2024-01-01T00:00:00Z",
        )
        .await;
        big
    }

    #[tokio::test]
    async fn streams_in_chunks_and_stops_when_the_client_goes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        // A layer of 3 MiB of noise: several chunks.
        noise_image(&s, 3 << 20).await;
        let a = s
            .export_archive("default", &["big:1".into()], Format::Oci)
            .unwrap();
        let mut whole = Vec::new();
        a.write_to(&mut whole).unwrap();
        let mut stream = s
            .export_archive("default", &["big:1".into()], Format::Oci)
            .unwrap()
            .stream();
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(c) = tokio_stream::StreamExt::next(&mut stream).await {
            let c = c.unwrap();
            assert!(c.data.len() <= CHUNK);
            got.extend_from_slice(&c.data);
            chunks += 1;
        }
        assert_eq!(got, whole, "the stream is the archive");
        assert!(chunks >= 3, "{chunks} chunks");
        // A client that reads one chunk and leaves: the writer stops instead of blocking.
        let mut stream = s
            .export_archive("default", &["big:1".into()], Format::Oci)
            .unwrap()
            .stream();
        tokio_stream::StreamExt::next(&mut stream)
            .await
            .unwrap()
            .unwrap();
        drop(stream);
    }

    #[tokio::test]
    async fn a_removed_lease_stops_an_export_nobody_reads() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        // More than the chunks the channel holds, so the writer must wait for the reader.
        let big = noise_image(&s, (CHUNKS_IN_FLIGHT + 4) * CHUNK).await;
        let mut stream = s
            .export_archive("default", &["big:1".into()], Format::Oci)
            .unwrap()
            .stream();
        let leases = s.leases.list("default");
        assert_eq!(leases.len(), 1, "{leases:?}");
        assert_eq!(
            leases[0]
                .labels
                .get(crate::lease::LABEL_IMAGE)
                .map(String::as_str),
            Some("big:1")
        );
        s.leases
            .release("default", &leases[0].id, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert!(s.leases.list("default").is_empty());
        // What was queued still arrives, then the error: never a short archive that looks whole.
        let mut got = 0;
        let mut end = None;
        while let Some(c) = tokio_stream::StreamExt::next(&mut stream).await {
            match c {
                Ok(c) => got += c.data.len(),
                Err(e) => end = Some(e),
            }
        }
        let end = end.expect("the stream ends with an error");
        assert_eq!(end.code(), tonic::Code::Aborted);
        assert!(end.message().contains("was removed"), "{}", end.message());
        assert!(
            got < big.0.len(),
            "{got} bytes of a {} byte layer",
            big.0.len()
        );
    }
}
