//! Commit: the changes of an active snapshot become a new layer on top of a parent image.
//!
//! One pass over the snapshot service's diff: each chunk of the uncompressed tar goes to the
//! snapshot service (`Apply`, which names the new committed snapshot after the chain id) and
//! to a gzip encoder on a blocking thread whose output is written to the content store. The
//! parent's layers are shared, never copied: the new manifest lists their descriptors as
//! they are and the new snapshot's parent is the parent's top snapshot.

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

        // Gzip on a blocking thread, its output into the content store.
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
        let reference = if req.reference.is_empty() || req.intermediate {
            None
        } else {
            let r = Reference::parse(&req.reference)?;
            if r.digest().is_some() {
                return Err(ImageError::InvalidArgument(format!(
                    "refusing to name an image with a digest reference: {r}"
                )));
            }
            Some(r)
        };
        let mut base = self.commit_base(ns, &req.parent, &req.snapshotter)?;
        // The parent's layers end up in the new manifest: hold them until it is recorded.
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
        let mut section = if req.config.is_empty() {
            base.config
                .get("config")
                .and_then(|c| c.as_object())
                .cloned()
                .unwrap_or_default()
        } else {
            match serde_json::from_slice::<Value>(&req.config) {
                Ok(Value::Object(m)) => m,
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
        for change in &req.changes {
            crate::changes::apply(&mut section, change)
                .map_err(|e| ImageError::InvalidArgument(format!("--change {change:?}: {e}")))?;
        }

        let source = match tar {
            Some(t) => Some(t),
            None if req.empty_layer || req.snapshot_key.is_empty() => None,
            None => Some(
                self.diff_stream(ns, &base.snapshotter, &req.snapshot_key)
                    .await?,
            ),
        };
        let layer = if let Some(source) = source {
            let parent_chain = chain_id(&base.diff_ids)
                .map(|c| c.to_string())
                .unwrap_or_default();
            let media_type = if base.docker {
                media::DOCKER_LAYER_GZIP
            } else {
                media::OCI_LAYER_GZIP
            };
            Some(
                self.commit_layer(
                    ns,
                    &base.snapshotter,
                    source,
                    &parent_chain,
                    media_type,
                    lease,
                )
                .await?,
            )
        } else {
            None
        };
        // As Docker does, a diff that holds nothing (a RUN that changed no file, a commit of
        // an untouched container) adds no layer: the step is recorded as `empty_layer`.
        let layer = layer.filter(|l| l.diff_id.to_string() != EMPTY_TAR_DIFF_ID);

        let created = now_rfc3339();
        let cfg = &mut base.config;
        cfg.insert("config".into(), Value::Object(section));
        cfg.insert("created".into(), json!(created));
        cfg.remove("container");
        cfg.remove("container_config");
        if !req.author.is_empty() {
            cfg.insert("author".into(), json!(req.author));
        }
        let mut step = serde_json::Map::new();
        step.insert("created".into(), json!(created));
        if !req.author.is_empty() {
            step.insert("author".into(), json!(req.author));
        }
        if !req.created_by.is_empty() {
            step.insert("created_by".into(), json!(req.created_by));
        }
        if !req.comment.is_empty() {
            step.insert("comment".into(), json!(req.comment));
        }
        if layer.is_none() {
            step.insert("empty_layer".into(), json!(true));
        }
        let history = cfg.entry("history").or_insert_with(|| json!([]));
        if !history.is_array() {
            *history = json!([]);
        }
        history
            .as_array_mut()
            .expect("an array")
            .push(Value::Object(step));
        let mut diff_ids = base.diff_ids.clone();
        let mut layers = base.layers.clone();
        let mut size = base.size;
        if let Some(l) = &layer {
            diff_ids.push(l.diff_id.clone());
            layers.push(l.descriptor.clone());
            size += l.unpacked;
        }
        cfg.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
        );
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
            "layers": layers,
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
        labels.insert(LABEL_SIZE.to_string(), size.to_string());
        labels.insert(LABEL_SNAPSHOTTER.to_string(), base.snapshotter.clone());
        if req.intermediate {
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
