//! Push: an image's blobs and manifest to the registry its name points at, through the
//! registry service.
//!
//! Blobs go as they are stored (compressed layers are never recompressed, so digests stay
//! and nothing is spent on CPU): each is checked first (HEAD, then a cross-repository mount
//! from another repository of the same registry that holds it), uploaded only when the
//! registry lacks it, up to four at a time; the manifest goes last, byte for byte as stored.

use crate::error::ImageError;
use crate::images::{to_api_desc, ImageStore};
use crate::manifest::Descriptor;
use berth_api::images::v1 as api;
use berth_api::registry::v1::{
    push_blob_request, CheckBlobRequest, PushBlobHeader, PushBlobRequest, PushManifestRequest,
};
use berth_api::types::v1 as types;
use berth_core::grpc::request;
use berth_core::{media, Digest, Reference};
use futures::StreamExt;
use std::collections::HashMap;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

pub type PushTx = mpsc::Sender<Result<api::PushResponse, tonic::Status>>;

async fn progress(tx: &PushTx, id: &str, action: &str, current: i64, total: i64, message: &str) {
    let _ = tx
        .send(Ok(api::PushResponse {
            item: Some(api::push_response::Item::Progress(types::Progress {
                id: id.to_string(),
                action: action.to_string(),
                current,
                total,
                message: message.to_string(),
            })),
        }))
        .await;
}

/// Bytes per message of a blob upload (well under gRPC's 4 MiB).
const CHUNK: usize = 1 << 20;

impl ImageStore {
    /// Repositories of the same registry (other than `target`'s) whose images hold each
    /// blob: where the registry can mount a blob from instead of receiving it again.
    fn mount_sources(&self, ns: &str, target: &Reference) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        let Ok(records) = self.db.list(ns) else {
            return out;
        };
        for rec in records {
            let Ok(r) = Reference::parse(&rec.name) else {
                continue;
            };
            if r.domain() != target.domain() || r.repository() == target.repository() {
                continue;
            }
            let Ok(resolved) = self.resolve(rec) else {
                continue;
            };
            let repo = r.repository().to_string();
            for d in resolved
                .manifest
                .layers
                .iter()
                .chain(std::iter::once(&resolved.manifest.config))
            {
                let v = out.entry(d.digest.clone()).or_default();
                if !v.contains(&repo) && v.len() < 3 {
                    v.push(repo.clone());
                }
            }
        }
        out
    }

    async fn push_blob(
        &self,
        ns: &str,
        target: &Reference,
        desc: &Descriptor,
        mount_from: Vec<String>,
        auth: Option<&types::RegistryAuth>,
        tx: &PushTx,
    ) -> Result<(), ImageError> {
        let digest: Digest = desc.digest("blob to push")?;
        let id = digest.short().to_string();
        progress(tx, &id, "preparing", 0, desc.size, "").await;
        let check = self
            .registry
            .clone()
            .check_blob(request(
                ns,
                CheckBlobRequest {
                    reference: target.to_string(),
                    descriptor: Some(to_api_desc(desc)),
                    mount_from,
                    auth: auth.cloned(),
                },
            ))
            .await?
            .into_inner();
        if check.exists {
            progress(tx, &id, "layer-exists", desc.size, desc.size, "").await;
            return Ok(());
        }
        if !check.mounted_from.is_empty() {
            let from = Reference::parse_name_only(&check.mounted_from)
                .map(|r| r.familiar_repository())
                .unwrap_or(check.mounted_from);
            progress(tx, &id, "mounted", desc.size, desc.size, &from).await;
            return Ok(());
        }
        let path = self.content.path(&digest);
        let mut file = tokio::fs::File::open(&path).await.map_err(|source| {
            crate::content::ContentError::Io {
                path: path.clone(),
                source,
            }
        })?;
        let header = PushBlobRequest {
            item: Some(push_blob_request::Item::Header(PushBlobHeader {
                reference: target.to_string(),
                descriptor: Some(to_api_desc(desc)),
                chunk_size: 0,
                auth: auth.cloned(),
            })),
        };
        let (data_tx, data_rx) = mpsc::channel::<PushBlobRequest>(4);
        data_tx
            .send(header)
            .await
            .map_err(|_| ImageError::InvalidArgument("push stream closed".into()))?;
        let mut registry = self.registry.clone();
        let ns2 = ns.to_string();
        let upload = tokio::spawn(async move {
            registry
                .push_blob(request(
                    &ns2,
                    tokio_stream::wrappers::ReceiverStream::new(data_rx),
                ))
                .await
        });
        let mut sent: i64 = 0;
        let mut last_shown: i64 = 0;
        progress(tx, &id, "pushing", 0, desc.size, "").await;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n =
                file.read(&mut buf)
                    .await
                    .map_err(|source| crate::content::ContentError::Io {
                        path: path.clone(),
                        source,
                    })?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if data_tx
                .send(PushBlobRequest {
                    item: Some(push_blob_request::Item::Data(buf)),
                })
                .await
                .is_err()
            {
                // The upload ended early; its result says why.
                break;
            }
            sent += n as i64;
            self.metrics.pushed(n);
            if sent - last_shown >= 1 << 20 {
                last_shown = sent;
                progress(tx, &id, "pushing", sent, desc.size, "").await;
            }
        }
        drop(data_tx);
        upload
            .await
            .map_err(|e| ImageError::InvalidArgument(format!("upload task failed: {e}")))??;
        progress(tx, &id, "pushed", desc.size, desc.size, "").await;
        Ok(())
    }

    /// `Images.Push`: returns the manifest's descriptor as the registry stored it.
    pub async fn push(
        &self,
        ns: &str,
        req: api::PushRequest,
        tx: &PushTx,
    ) -> Result<types::Descriptor, ImageError> {
        let lease = self.leases.acquire(ns, "push", Some(&req.reference));
        lease.guard(self.push_leased(ns, req, tx, &lease)).await
    }

    async fn push_leased(
        &self,
        ns: &str,
        req: api::PushRequest,
        tx: &PushTx,
        lease: &crate::lease::Lease,
    ) -> Result<types::Descriptor, ImageError> {
        let target = Reference::parse(&req.reference)?;
        if target.digest().is_some() {
            return Err(ImageError::InvalidArgument(format!(
                "cannot push to a digest reference ({target}): name a tag"
            )));
        }
        let source = if req.source.is_empty() {
            req.reference.clone()
        } else {
            req.source.clone()
        };
        let rec = self.find(ns, &source).map_err(|e| match e {
            ImageError::NotFound(_) => ImageError::NotFound(format!(
                "{source} (an image does not exist locally with that name; tag one first: berth tag IMAGE {source})"
            )),
            e => e,
        })?;
        let r = self.resolve(rec)?;
        let manifest_digest: Digest = r.manifest_desc.digest("manifest")?;
        lease.blob(&manifest_digest);
        for d in r
            .manifest
            .layers
            .iter()
            .chain(std::iter::once(&r.manifest.config))
        {
            lease.blob(&d.digest("blob")?);
        }
        progress(
            tx,
            &target.familiar(),
            "preparing",
            0,
            0,
            &format!("The push refers to repository [{}]", target.repository()),
        )
        .await;
        let mounts = self.mount_sources(ns, &target);
        let auth = req.auth.as_ref();

        // Layers (then the config) up to four at a time.
        let blobs: Vec<Descriptor> = r
            .manifest
            .layers
            .iter()
            .cloned()
            .chain(std::iter::once(r.manifest.config.clone()))
            .collect();
        let results: Vec<Result<(), ImageError>> =
            futures::stream::iter(blobs.into_iter().map(|d| {
                let from = mounts.get(&d.digest).cloned().unwrap_or_default();
                let target = target.clone();
                async move { self.push_blob(ns, &target, &d, from, auth, tx).await }
            }))
            .buffer_unordered(4)
            .collect()
            .await;
        for r in results {
            r?;
        }

        let manifest = self
            .content
            .read_small(&manifest_digest, media::MAX_MANIFEST_SIZE)?;
        let pushed = self
            .registry
            .clone()
            .push_manifest(request(
                ns,
                PushManifestRequest {
                    reference: target.to_string(),
                    media_type: r.manifest_desc.media_type.clone(),
                    manifest: manifest.clone(),
                    auth: req.auth.clone(),
                },
            ))
            .await?
            .into_inner();
        if !pushed.digest.is_empty() && pushed.digest != manifest_digest.to_string() {
            return Err(ImageError::InvalidArgument(format!(
                "the registry stored the manifest of {target} as {} but it is {manifest_digest}",
                pushed.digest
            )));
        }
        self.publish(ns, "push", &target.to_string());
        Ok(types::Descriptor {
            media_type: r.manifest_desc.media_type.clone(),
            digest: manifest_digest.to_string(),
            size: manifest.len() as i64,
            annotations: Default::default(),
        })
    }
}
