//! Commit: the changes of an active snapshot become a new layer on top of a parent image.
//!
//! One pass over the snapshot service's diff: each chunk of the uncompressed tar goes to the
//! snapshot service (`Apply`, which names the new committed snapshot after the chain id) and
//! to a gzip encoder on a blocking thread whose output is written to the content store. The
//! parent's layers are shared, never copied: the new manifest lists their descriptors as
//! they are and the new snapshot's parent is the parent's top snapshot.

use crate::config::ContainerConfig;
use crate::error::ImageError;
use crate::images::{
    host_arch, ImageStore, LABEL_CREATED, LABEL_ID, LABEL_MANIFEST, LABEL_SIZE, LABEL_SNAPSHOTTER,
};
use crate::manage::dangling_name;
use crate::manifest::Descriptor;
use berth_api::images::v1 as api;
use berth_api::snapshots::v1::{apply_request, ApplyHeader, ApplyRequest, DiffRequest};
use berth_core::digest::{chain_id, Hasher};
use berth_core::grpc::request;
use berth_core::{media, Digest, Reference};
use serde_json::{json, Value};

/// The diff id of a tar with no entries (two zero blocks), Docker's `DigestSHA256EmptyTar`.
const EMPTY_TAR_DIFF_ID: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
use std::collections::BTreeMap;
use std::io::Write;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// An uncompressed layer tar as it arrives.
pub type TarStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, ImageError>> + Send>>;

/// The snapshot service's `Apply` of a new layer, under way.
type ApplyTask = tokio::task::JoinHandle<
    Result<tonic::Response<berth_api::snapshots::v1::ApplyResponse>, tonic::Status>,
>;
/// Gzip of a layer, under way: the diff id of what it read.
type CompressTask = tokio::task::JoinHandle<std::io::Result<Digest>>;
/// The compressed layer's write to the content store, under way: its digest and size.
type StoreTask = tokio::task::JoinHandle<Result<(Digest, u64), crate::content::ContentError>>;

/// Build steps' images carry this label; `image ls` shows them only with `-a`.
pub const LABEL_INTERMEDIATE: &str = "berth.image.intermediate";

/// What a commit starts from.
struct Base {
    config: serde_json::Map<String, Value>,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    docker: bool,
    snapshotter: String,
    size: i64,
}

/// A layer made from a diff.
struct Layer {
    descriptor: Descriptor,
    diff_id: Digest,
    unpacked: i64,
}

/// Gzip output goes to a channel as it is produced.
struct ChannelWriter(mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| std::io::Error::other("the content writer stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl ImageStore {
    fn commit_base(&self, ns: &str, parent: &str, snapshotter: &str) -> Result<Base, ImageError> {
        if parent.is_empty() {
            let config = json!({
                "architecture": host_arch(),
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            });
            return Ok(Base {
                config: config.as_object().cloned().unwrap_or_default(),
                layers: Vec::new(),
                diff_ids: Vec::new(),
                docker: true,
                snapshotter: if snapshotter.is_empty() {
                    self.default_snapshotter_name()
                } else {
                    snapshotter.to_string()
                },
                size: 0,
            });
        }
        let rec = self.find(ns, parent)?;
        let size = rec
            .labels
            .get(LABEL_SIZE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let sn = if !snapshotter.is_empty() {
            snapshotter.to_string()
        } else {
            rec.labels
                .get(LABEL_SNAPSHOTTER)
                .cloned()
                .unwrap_or_else(|| self.default_snapshotter_name())
        };
        let r = self.resolve(rec)?;
        let config: Value = serde_json::from_slice(&r.config).map_err(|e| {
            ImageError::InvalidArgument(format!("config of {parent} is not JSON: {e}"))
        })?;
        Ok(Base {
            config: config.as_object().cloned().unwrap_or_default(),
            layers: r.manifest.layers.clone(),
            diff_ids: r.diff_ids.clone(),
            docker: r.manifest_desc.media_type == media::DOCKER_MANIFEST,
            snapshotter: sn,
            size,
        })
    }

    /// The changes of the active snapshot `key`, as an uncompressed layer tar.
    async fn diff_stream(
        &self,
        ns: &str,
        snapshotter: &str,
        key: &str,
    ) -> Result<TarStream, ImageError> {
        let diff = self
            .snapshots
            .clone()
            .diff(request(
                ns,
                DiffRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.to_string(),
                },
            ))
            .await?
            .into_inner();
        Ok(Box::pin(
            diff.map(|m| m.map(|m| m.data).map_err(ImageError::from)),
        ))
    }

    /// Starts the snapshot service's `Apply` of a layer over `parent`: the bytes sent on the
    /// channel become the new committed snapshot when the channel closes after the whole tar.
    async fn start_apply(
        &self,
        ns: &str,
        snapshotter: &str,
        parent: &str,
    ) -> Result<(mpsc::Sender<ApplyRequest>, ApplyTask), ImageError> {
        let (apply_tx, apply_rx) = mpsc::channel::<ApplyRequest>(8);
        apply_tx
            .send(ApplyRequest {
                item: Some(apply_request::Item::Header(ApplyHeader {
                    snapshotter: snapshotter.to_string(),
                    name: String::new(),
                    parent: parent.to_string(),
                    media_type: media::OCI_LAYER.to_string(),
                    diff_id: String::new(),
                    labels: Default::default(),
                })),
            })
            .await
            .map_err(|_| ImageError::InvalidArgument("apply stream closed".into()))?;
        let mut snapshots = self.snapshots.clone();
        let ns_apply = ns.to_string();
        let apply = tokio::spawn(async move {
            snapshots
                .apply(request(
                    &ns_apply,
                    tokio_stream::wrappers::ReceiverStream::new(apply_rx),
                ))
                .await
        });
        Ok((apply_tx, apply))
    }

    /// Starts gzip on a blocking thread (it gives the diff id of what it read) and the content
    /// store's writer of its output (it gives the blob's digest and size).
    fn start_compress(&self) -> (mpsc::Sender<Vec<u8>>, CompressTask, StoreTask) {
        let (raw_tx, mut raw_rx) = mpsc::channel::<Vec<u8>>(8);
        let (gz_tx, mut gz_rx) = mpsc::channel::<Vec<u8>>(8);
        let compress = tokio::task::spawn_blocking(move || -> std::io::Result<Digest> {
            let mut hasher = Hasher::new();
            let mut gz = crate::gzip::AdaptiveGzip::new(std::io::BufWriter::with_capacity(
                256 << 10,
                ChannelWriter(gz_tx),
            ));
            while let Some(chunk) = raw_rx.blocking_recv() {
                hasher.update(&chunk);
                gz.write_all(&chunk)?;
            }
            gz.finish()?.flush()?;
            Ok(hasher.finish())
        });
        let content = self.content.clone();
        let store = tokio::spawn(async move {
            let mut w = content.writer("committed layer", None, None).await?;
            while let Some(chunk) = gz_rx.recv().await {
                w.write(&chunk).await?;
            }
            let size = w.written();
            let digest = w.commit().await?;
            Ok::<_, crate::content::ContentError>((digest, size))
        });
        (raw_tx, compress, store)
    }

    /// Streams an uncompressed layer tar into a gzip blob and a committed snapshot over
    /// `parent` (a chain id, empty for the first layer).
    async fn commit_layer(
        &self,
        ns: &str,
        snapshotter: &str,
        mut diff: TarStream,
        parent: &str,
        media_type: &str,
        lease: &crate::lease::Lease,
    ) -> Result<Layer, ImageError> {
        // The snapshot service unpacks the same bytes as the new committed snapshot.
        let (apply_tx, apply) = self.start_apply(ns, snapshotter, parent).await?;
        let (raw_tx, compress, store) = self.start_compress();

        let mut failed: Option<ImageError> = None;
        while let Some(item) = diff.next().await {
            match item {
                Ok(data) => {
                    let sent_raw = raw_tx.send(data.clone()).await.is_ok();
                    let sent_apply = apply_tx
                        .send(ApplyRequest {
                            item: Some(apply_request::Item::Data(data)),
                        })
                        .await
                        .is_ok();
                    if !sent_raw || !sent_apply {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(raw_tx);
        // The apply stream ends cleanly only when the whole tar arrived and its blob is stored;
        // otherwise the apply call is cancelled, so that no snapshot is committed for a layer
        // that has no blob or is incomplete.
        let diff_id = compress
            .await
            .map_err(|e| ImageError::InvalidArgument(format!("compression task: {e}")))
            .and_then(|r| {
                r.map_err(|e| ImageError::InvalidArgument(format!("compressing the layer: {e}")))
            });
        let stored = store
            .await
            .map_err(|e| ImageError::InvalidArgument(format!("content task: {e}")))
            .and_then(|r| r.map_err(ImageError::from));
        let (diff_id, (digest, size)) = match (failed, diff_id, stored) {
            (None, Ok(d), Ok(s)) => {
                drop(apply_tx);
                (d, s)
            }
            (Some(e), _, _) | (None, Err(e), _) | (None, Ok(_), Err(e)) => {
                apply.abort();
                return Err(e);
            }
        };
        lease.blob(&digest);
        let applied = apply
            .await
            .map_err(|e| ImageError::InvalidArgument(format!("apply task: {e}")))??
            .into_inner();
        lease.snapshot(&applied.name);
        if !applied.diff_id.is_empty() && applied.diff_id != diff_id.to_string() {
            return Err(ImageError::InvalidArgument(format!(
                "the snapshot service read the layer as {} but it was {diff_id}",
                applied.diff_id
            )));
        }
        Ok(Layer {
            descriptor: Descriptor {
                media_type: media_type.to_string(),
                digest: digest.to_string(),
                size: size as i64,
                platform: None,
                annotations: None,
            },
            diff_id,
            unpacked: applied.size,
        })
    }

    /// `Images.Commit`: see the proto. Returns the new record and its image id.
    pub async fn commit(
        &self,
        ns: &str,
        req: api::CommitRequest,
        tar: Option<TarStream>,
    ) -> Result<(crate::metadata::ImageRecord, Digest), ImageError> {
        let image = (!req.intermediate).then_some(req.reference.as_str());
        let lease = self.leases.acquire(ns, "commit", image);
        lease.guard(self.commit_leased(ns, req, tar, &lease)).await
    }

    async fn commit_leased(
        &self,
        ns: &str,
        req: api::CommitRequest,
        tar: Option<TarStream>,
        lease: &crate::lease::Lease,
    ) -> Result<(crate::metadata::ImageRecord, Digest), ImageError> {
        let reference = commit_reference(&req)?;
        let mut base = self.commit_base(ns, &req.parent, &req.snapshotter)?;
        hold_parent(&base, lease);
        let (section, created_by) = committed_section(&base, &req)?;
        let layer = self.commit_diff(ns, &base, &req, tar, lease).await?;
        // As Docker does, a diff that holds nothing (a RUN that changed no file, a commit of
        // an untouched container) adds no layer: the step is recorded as `empty_layer`.
        let layer = layer.filter(|l| l.diff_id.to_string() != EMPTY_TAR_DIFF_ID);
        let created = now_rfc3339();
        let step = history_step(&created, &req, &created_by, layer.is_none());
        if let Some(l) = layer {
            base.diff_ids.push(l.diff_id);
            base.layers.push(l.descriptor);
            base.size += l.unpacked;
        }
        new_image_config(&mut base, &section, &created, &req.author, step);
        self.record_commit(ns, &base, created, reference, req.intermediate, lease)
            .await
    }

    /// The new layer: from `tar`, or the diff of the snapshot `req.snapshot_key`; none for a
    /// step without one.
    async fn commit_diff(
        &self,
        ns: &str,
        base: &Base,
        req: &api::CommitRequest,
        tar: Option<TarStream>,
        lease: &crate::lease::Lease,
    ) -> Result<Option<Layer>, ImageError> {
        let source = match tar {
            Some(t) => t,
            None if req.empty_layer || req.snapshot_key.is_empty() => return Ok(None),
            None => {
                self.diff_stream(ns, &base.snapshotter, &req.snapshot_key)
                    .await?
            }
        };
        let parent_chain = chain_id(&base.diff_ids)
            .map(|c| c.to_string())
            .unwrap_or_default();
        let media_type = if base.docker {
            media::DOCKER_LAYER_GZIP
        } else {
            media::OCI_LAYER_GZIP
        };
        self.commit_layer(
            ns,
            &base.snapshotter,
            source,
            &parent_chain,
            media_type,
            lease,
        )
        .await
        .map(Some)
    }

    /// Writes the new config and manifest to the content store and names the image: `reference`,
    /// or a dangling name after its id.
    async fn record_commit(
        &self,
        ns: &str,
        base: &Base,
        created: String,
        reference: Option<Reference>,
        intermediate: bool,
        lease: &crate::lease::Lease,
    ) -> Result<(crate::metadata::ImageRecord, Digest), ImageError> {
        let config_bytes = serde_json::to_vec(&Value::Object(base.config.clone()))
            .map_err(|e| ImageError::InvalidArgument(e.to_string()))?;
        let config_digest = self
            .content
            .write_all("committed config", &config_bytes, None)
            .await?;
        lease.blob(&config_digest);
        let (manifest_type, config_type) = if base.docker {
            (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
        } else {
            (media::OCI_MANIFEST, media::OCI_CONFIG)
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": config_type,
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": base.layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::InvalidArgument(e.to_string()))?;
        let manifest_digest = self
            .content
            .write_all("committed manifest", &manifest_bytes, None)
            .await?;
        let target = Descriptor {
            media_type: manifest_type.to_string(),
            digest: manifest_digest.to_string(),
            size: manifest_bytes.len() as i64,
            platform: None,
            annotations: None,
        };
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_ID.to_string(), config_digest.to_string());
        labels.insert(LABEL_MANIFEST.to_string(), manifest_digest.to_string());
        labels.insert(LABEL_CREATED.to_string(), created);
        labels.insert(LABEL_SIZE.to_string(), base.size.to_string());
        labels.insert(LABEL_SNAPSHOTTER.to_string(), base.snapshotter.clone());
        if intermediate {
            labels.insert(LABEL_INTERMEDIATE.to_string(), "true".to_string());
        }
        let name = match &reference {
            Some(r) => r.to_string(),
            None => dangling_name(&config_digest.to_string()),
        };
        let rec = self.store_name(ns, &name, &target, labels).await?;
        self.publish(ns, "commit", &rec.name);
        Ok((rec, config_digest))
    }
}

/// The name the commit asks for, if any: never a digest reference; none for a build step's
/// image.
fn commit_reference(req: &api::CommitRequest) -> Result<Option<Reference>, ImageError> {
    if req.reference.is_empty() || req.intermediate {
        return Ok(None);
    }
    let r = Reference::parse(&req.reference)?;
    if r.digest().is_some() {
        return Err(ImageError::InvalidArgument(format!(
            "refusing to name an image with a digest reference: {r}"
        )));
    }
    Ok(Some(r))
}

/// The parent's layers end up in the new manifest: hold them until it is recorded.
fn hold_parent(base: &Base, lease: &crate::lease::Lease) {
    for l in &base.layers {
        if let Ok(d) = l.digest.parse() {
            lease.blob(&d);
        }
    }
    for i in 0..base.diff_ids.len() {
        if let Some(c) = chain_id(&base.diff_ids[..=i]) {
            lease.snapshot(&c.to_string());
        }
    }
}

/// The `config` section to record — `req.config`, or the parent's, with the run's overrides
/// and then the `--change`s applied — and the step's `created_by`: as asked, or for a
/// container's commit the command it ran.
fn committed_section(
    base: &Base,
    req: &api::CommitRequest,
) -> Result<(ContainerConfig, String), ImageError> {
    let section = if req.config.is_empty() {
        base.config
            .get("config")
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}))
    } else {
        match serde_json::from_slice::<Value>(&req.config) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return Err(ImageError::InvalidArgument(
                    "the config to commit must be a JSON object".into(),
                ))
            }
            Err(e) => {
                return Err(ImageError::InvalidArgument(format!(
                    "the config to commit is not JSON: {e}"
                )))
            }
        }
    };
    let mut section = ContainerConfig::from_json(section).map_err(|e| {
        ImageError::InvalidArgument(format!("the config to commit is not an image's: {e}"))
    })?;
    let mut created_by = req.created_by.clone();
    if let Some(run) = &req.run {
        section.apply_run(run);
        if created_by.is_empty() {
            created_by = section.command_line().join(" ");
        }
    }
    for change in &req.changes {
        let parsed = crate::changes::parse(change, &section)
            .map_err(|e| ImageError::InvalidArgument(format!("--change {change:?}: {e}")))?;
        section.apply(parsed);
    }
    Ok((section, created_by))
}

/// The history entry of the commit.
fn history_step(
    created: &str,
    req: &api::CommitRequest,
    created_by: &str,
    empty_layer: bool,
) -> Value {
    let mut step = serde_json::Map::new();
    step.insert("created".into(), json!(created));
    if !req.author.is_empty() {
        step.insert("author".into(), json!(req.author));
    }
    if !created_by.is_empty() {
        step.insert("created_by".into(), json!(created_by));
    }
    if !req.comment.is_empty() {
        step.insert("comment".into(), json!(req.comment));
    }
    if empty_layer {
        step.insert("empty_layer".into(), json!(true));
    }
    Value::Object(step)
}

/// Makes `base.config` the new image config: the parent's, with `section`, the creation time,
/// the author, one more history step and the layers' diff ids.
fn new_image_config(
    base: &mut Base,
    section: &ContainerConfig,
    created: &str,
    author: &str,
    step: Value,
) {
    let cfg = &mut base.config;
    cfg.insert("config".into(), section.to_json());
    cfg.insert("created".into(), json!(created));
    cfg.remove("container");
    cfg.remove("container_config");
    if !author.is_empty() {
        cfg.insert("author".into(), json!(author));
    }
    let history = cfg.entry("history").or_insert_with(|| json!([]));
    if !history.is_array() {
        *history = json!([]);
    }
    history.as_array_mut().expect("an array").push(step);
    let diff_ids: Vec<String> = base.diff_ids.iter().map(|d| d.to_string()).collect();
    cfg.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );
}
