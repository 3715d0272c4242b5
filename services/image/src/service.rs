//! The gRPC shells over [`ImageStore`]: the Images, Content, Namespaces and Leases services.

use crate::content::ContentError;
use crate::error::ImageError;
use crate::images::{to_api_image, ImageStore};
use berth_api::content::v1 as capi;
use berth_api::images::v1 as api;
use berth_api::leases::v1 as lapi;
use berth_api::namespaces::v1 as napi;
use berth_core::grpc::namespace;
use berth_core::Digest;
use futures::Stream;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug, Clone)]
pub struct ImagesService {
    pub(crate) store: ImageStore,
    pub(crate) tmp: PathBuf,
}

fn parse_digest(s: &str) -> Result<Digest, Status> {
    s.parse()
        .map_err(|e: berth_core::digest::DigestError| Status::invalid_argument(e.to_string()))
}

/// Runs `work` in a task of its own, in the caller's span: the progress it sends and then its
/// result (or error) stream back to the client, who may go away without stopping it.
fn streamed<T, Fut>(work: impl FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut) -> BoxStream<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, ImageError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let work = work(tx.clone());
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        let last = work.await.map_err(Status::from);
        let _ = tx.send(last).await;
    }));
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl api::images_server::Images for ImagesService {
    async fn tag(
        &self,
        req: Request<api::TagImageRequest>,
    ) -> Result<Response<api::TagImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = self.store.tag(&ns, &r.source, &r.target).await?;
        info!(namespace = %ns, source = %r.source, target = %rec.name, "tagged");
        Ok(Response::new(api::TagImageResponse {
            image: Some(to_api_image(&rec)),
        }))
    }

    async fn history(
        &self,
        req: Request<api::HistoryRequest>,
    ) -> Result<Response<api::HistoryResponse>, Status> {
        let ns = namespace(&req)?;
        let entries = self.store.history(&ns, &req.get_ref().name).await?;
        Ok(Response::new(api::HistoryResponse { entries }))
    }

    type PushStream = BoxStream<api::PushResponse>;

    async fn push(
        &self,
        req: Request<api::PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        berth_core::Reference::parse(&req.reference).map_err(ImageError::from)?;
        let store = self.store.clone();
        Ok(Response::new(streamed(move |tx| async move {
            let reference = req.reference.clone();
            match store.push(&ns, req, &tx).await {
                Ok(d) => {
                    info!(namespace = %ns, image = %reference, digest = %d.digest, "pushed");
                    Ok(api::PushResponse {
                        item: Some(api::push_response::Item::Pushed(d)),
                    })
                }
                Err(e) => {
                    warn!(namespace = %ns, image = %reference, error = %e, "push failed");
                    Err(e)
                }
            }
        })))
    }

    async fn commit(
        &self,
        req: Request<api::CommitRequest>,
    ) -> Result<Response<api::CommitResponse>, Status> {
        let ns = namespace(&req)?;
        let (rec, id) = self.store.commit(&ns, req.into_inner(), None).await?;
        info!(namespace = %ns, image = %rec.name, id = %id, "committed");
        Ok(Response::new(api::CommitResponse {
            image: Some(to_api_image(&rec)),
            id: id.to_string(),
        }))
    }

    async fn commit_layer(
        &self,
        req: Request<Streaming<api::CommitLayerRequest>>,
    ) -> Result<Response<api::CommitResponse>, Status> {
        let ns = namespace(&req)?;
        let mut input = req.into_inner();
        let header = match input.next().await {
            Some(Ok(api::CommitLayerRequest {
                item: Some(api::commit_layer_request::Item::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "CommitLayer starts with a header message (a CommitRequest)",
                ))
            }
        };
        let tar = input.filter_map(|m| match m {
            Ok(api::CommitLayerRequest {
                item: Some(api::commit_layer_request::Item::Data(d)),
            }) => Some(Ok(d)),
            Ok(_) => Some(Err(ImageError::InvalidArgument(
                "a second header arrived in the middle of the layer".into(),
            ))),
            Err(s) => Some(Err(ImageError::from(s))),
        });
        // A rootfs to import may come gzip-compressed.
        let tar = crate::gunzip::plain(Box::pin(tar)).await?;
        let (rec, id) = self.store.commit(&ns, header, Some(tar)).await?;
        info!(namespace = %ns, image = %rec.name, id = %id, "committed a layer");
        Ok(Response::new(api::CommitResponse {
            image: Some(to_api_image(&rec)),
            id: id.to_string(),
        }))
    }

    type ExportStream = BoxStream<api::ExportResponse>;

    async fn export(
        &self,
        req: Request<api::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let format = crate::export::Format::parse(&req.format)?;
        // Every name is resolved (NotFound) before the stream starts.
        let archive = self.store.export_archive(&ns, &req.names, format)?;
        info!(namespace = %ns, images = ?req.names, ?format, "exporting");
        Ok(Response::new(archive.stream()))
    }

    async fn prune(
        &self,
        req: Request<api::PruneImagesRequest>,
    ) -> Result<Response<api::PruneImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let out = self.store.prune(&ns, req.get_ref().all).await?;
        info!(namespace = %ns, deleted = out.deleted.len(), bytes = out.space_reclaimed, "images pruned");
        Ok(Response::new(out))
    }

    async fn garbage_collect(
        &self,
        req: Request<api::GarbageCollectRequest>,
    ) -> Result<Response<api::GarbageCollectResponse>, Status> {
        let ns = namespace(&req)?;
        let c = self.store.collect_garbage(&ns).await?;
        Ok(Response::new(api::GarbageCollectResponse {
            blobs: c.blobs,
            snapshots: c.snapshots,
            bytes: c.bytes,
        }))
    }
    async fn get(
        &self,
        req: Request<api::GetImageRequest>,
    ) -> Result<Response<api::GetImageResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = self.store.find(&ns, &req.get_ref().name)?;
        Ok(Response::new(api::GetImageResponse {
            image: Some(to_api_image(&rec)),
        }))
    }

    async fn list(
        &self,
        req: Request<api::ListImagesRequest>,
    ) -> Result<Response<api::ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let all = req.get_ref().all;
        let mut recs = self.store.db.list(&ns).map_err(ImageError::from)?;
        recs.retain(|r| all || !r.labels.contains_key(crate::commit::LABEL_INTERMEDIATE));
        recs.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
        let images = recs.iter().map(|r| self.store.summary(r)).collect();
        Ok(Response::new(api::ListImagesResponse { images }))
    }

    async fn delete(
        &self,
        req: Request<api::DeleteImageRequest>,
    ) -> Result<Response<api::DeleteImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let (untagged, deleted) = self.store.remove(&ns, &r.name, r.force).await?;
        info!(namespace = %ns, image = %r.name, ?untagged, ?deleted, "image removed");
        if !deleted.is_empty() {
            if let Err(e) = self.store.collect_garbage(&ns).await {
                warn!(namespace = %ns, error = %e, "garbage collection after an image delete failed");
            }
        }
        Ok(Response::new(api::DeleteImageResponse {
            untagged,
            deleted,
        }))
    }

    async fn inspect(
        &self,
        req: Request<api::InspectImageRequest>,
    ) -> Result<Response<api::InspectImageResponse>, Status> {
        let ns = namespace(&req)?;
        Ok(Response::new(self.store.inspect(&ns, &req.get_ref().name)?))
    }

    type PullStream = BoxStream<api::PullResponse>;

    async fn pull(
        &self,
        req: Request<api::PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        // Refuse a malformed reference before the stream starts.
        berth_core::Reference::parse(&req.reference).map_err(ImageError::from)?;
        let store = self.store.clone();
        Ok(Response::new(streamed(move |tx| async move {
            let reference = req.reference.clone();
            match store.pull(&ns, req, &tx).await {
                Ok(rec) => {
                    info!(namespace = %ns, image = %rec.name, "pulled");
                    Ok(api::PullResponse {
                        item: Some(api::pull_response::Item::Image(to_api_image(&rec))),
                    })
                }
                Err(e) => {
                    warn!(namespace = %ns, image = %reference, error = %e, "pull failed");
                    Err(e)
                }
            }
        })))
    }

    type ImportStream = BoxStream<api::PullResponse>;

    async fn import(
        &self,
        req: Request<Streaming<api::ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let ns = namespace(&req)?;
        let mut input = req.into_inner();
        let header = match input.next().await {
            Some(Ok(api::ImportRequest {
                item: Some(api::import_request::Item::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "an import starts with a header message",
                ))
            }
        };
        if !header.name.is_empty() {
            berth_core::Reference::parse(&header.name).map_err(ImageError::from)?;
        }
        tokio::fs::create_dir_all(&self.tmp)
            .await
            .map_err(|e| Status::internal(format!("{}: {e}", self.tmp.display())))?;
        let file = tempfile::Builder::new()
            .prefix("archive-")
            .tempfile_in(&self.tmp)
            .map_err(|e| Status::internal(format!("{}: {e}", self.tmp.display())))?;
        {
            let mut f = tokio::fs::File::from_std(
                file.reopen().map_err(|e| Status::internal(e.to_string()))?,
            );
            while let Some(msg) = input.next().await {
                if let Some(api::import_request::Item::Data(d)) = msg?.item {
                    tokio::io::AsyncWriteExt::write_all(&mut f, &d)
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
            }
            tokio::io::AsyncWriteExt::flush(&mut f)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let (tx, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let r = store
                .import(
                    &ns,
                    file.path(),
                    &header.name,
                    header.unpack.then_some(header.snapshotter.as_str()),
                    &tx,
                )
                .await;
            drop(file);
            match r {
                Ok(recs) => {
                    for rec in recs {
                        let _ = tx
                            .send(Ok(api::PullResponse {
                                item: Some(api::pull_response::Item::Image(to_api_image(&rec))),
                            }))
                            .await;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                }
            }
        }));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[derive(Debug, Clone)]
pub struct ContentService {
    pub(crate) store: ImageStore,
}

/// A blob as the Content service shows it; `reachable` gives its labels (what it names).
fn blob_info(i: crate::content::BlobInfo, reachable: &crate::gc::Reachable) -> capi::BlobInfo {
    capi::BlobInfo {
        labels: reachable
            .refs
            .get(&i.digest)
            .map(|r| r.labels().into_iter().collect())
            .unwrap_or_default(),
        digest: i.digest.to_string(),
        size: i.size as i64,
        created_at: Some(prost_types::Timestamp::from(i.created)),
    }
}

#[tonic::async_trait]
impl capi::content_server::Content for ContentService {
    async fn info(
        &self,
        req: Request<capi::InfoRequest>,
    ) -> Result<Response<capi::InfoResponse>, Status> {
        let d = parse_digest(&req.get_ref().digest)?;
        let i = self.store.content.info(&d).map_err(ImageError::from)?;
        let reachable = self.store.reachable()?;
        Ok(Response::new(capi::InfoResponse {
            info: Some(blob_info(i, &reachable)),
        }))
    }

    async fn list(
        &self,
        _req: Request<capi::ListContentRequest>,
    ) -> Result<Response<capi::ListContentResponse>, Status> {
        let reachable = self.store.reachable()?;
        let blobs = self
            .store
            .content
            .list()
            .map_err(ImageError::from)?
            .into_iter()
            .map(|i| blob_info(i, &reachable))
            .collect();
        Ok(Response::new(capi::ListContentResponse { blobs }))
    }

    type ReadStream = BoxStream<capi::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<capi::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let r = req.into_inner();
        let d = parse_digest(&r.digest)?;
        let path = self.store.content.path(&d);
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(|_| Status::from(ImageError::from(ContentError::NotFound(d.clone()))))?;
        let offset = r.offset.max(0) as u64;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let limit = if r.size > 0 { r.size as u64 } else { u64::MAX };
        let s = async_stream::try_stream! {
            let mut pos = offset;
            let mut left = limit;
            let mut buf = vec![0u8; 256 << 10];
            while left > 0 {
                let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                let n = f.read(&mut buf[..want]).await.map_err(|e| Status::internal(e.to_string()))?;
                if n == 0 { break; }
                yield capi::ReadContentResponse { offset: pos as i64, data: buf[..n].to_vec() };
                pos += n as u64;
                left -= n as u64;
            }
        };
        Ok(Response::new(Box::pin(s)))
    }

    async fn write(
        &self,
        req: Request<Streaming<capi::WriteContentRequest>>,
    ) -> Result<Response<capi::WriteContentResponse>, Status> {
        let mut input = req.into_inner();
        let header = match input.next().await {
            Some(Ok(capi::WriteContentRequest {
                item: Some(capi::write_content_request::Item::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "a write starts with a header message",
                ))
            }
        };
        let expected = if header.expected_digest.is_empty() {
            None
        } else {
            Some(parse_digest(&header.expected_digest)?)
        };
        if let Some(d) = &expected {
            if self.store.content.contains(d) {
                return Ok(Response::new(capi::WriteContentResponse {
                    digest: d.to_string(),
                    size: self
                        .store
                        .content
                        .info(d)
                        .map(|i| i.size as i64)
                        .unwrap_or(0),
                    existed: true,
                }));
            }
        }
        let size = (header.expected_size > 0).then_some(header.expected_size as u64);
        let mut w = self
            .store
            .content
            .writer("written blob", expected, size)
            .await
            .map_err(ImageError::from)?;
        while let Some(msg) = input.next().await {
            if let Some(capi::write_content_request::Item::Data(d)) = msg?.item {
                w.write(&d).await.map_err(ImageError::from)?;
            }
        }
        let n = w.written();
        let d = w.commit().await.map_err(ImageError::from)?;
        Ok(Response::new(capi::WriteContentResponse {
            digest: d.to_string(),
            size: n as i64,
            existed: false,
        }))
    }

    async fn delete(
        &self,
        req: Request<capi::DeleteContentRequest>,
    ) -> Result<Response<capi::DeleteContentResponse>, Status> {
        let d = parse_digest(&req.get_ref().digest)?;
        self.store.delete_blob(&d).await?;
        info!(digest = %d, "content removed");
        Ok(Response::new(capi::DeleteContentResponse {}))
    }
}

/// `berth.namespaces.v1.Namespaces` over the registry in [`crate::namespaces`].
#[derive(Debug, Clone)]
pub struct NamespacesService {
    pub(crate) store: ImageStore,
}

#[tonic::async_trait]
impl napi::namespaces_server::Namespaces for NamespacesService {
    async fn create(
        &self,
        req: Request<napi::CreateNamespaceRequest>,
    ) -> Result<Response<napi::Namespace>, Status> {
        let r = req.into_inner();
        let ns = self
            .store
            .create_namespace(&r.name, r.labels.into_iter().collect())
            .await?;
        Ok(Response::new(ns))
    }

    async fn list(
        &self,
        _req: Request<napi::ListNamespacesRequest>,
    ) -> Result<Response<napi::ListNamespacesResponse>, Status> {
        let namespaces = self.store.list_namespaces().await?;
        Ok(Response::new(napi::ListNamespacesResponse { namespaces }))
    }

    async fn delete(
        &self,
        req: Request<napi::DeleteNamespaceRequest>,
    ) -> Result<Response<napi::DeleteNamespaceResponse>, Status> {
        self.store.delete_namespace(&req.get_ref().name).await?;
        Ok(Response::new(napi::DeleteNamespaceResponse {}))
    }
}

/// `berth.leases.v1.Leases` over the leases of work in flight ([`crate::lease`]).
#[derive(Debug, Clone)]
pub struct LeasesService {
    pub(crate) store: ImageStore,
}

/// How long `Leases.Delete` waits for the stopped work to let go of its lease.
const LEASE_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[tonic::async_trait]
impl lapi::leases_server::Leases for LeasesService {
    async fn list(
        &self,
        req: Request<lapi::ListLeasesRequest>,
    ) -> Result<Response<lapi::ListLeasesResponse>, Status> {
        let ns = namespace(&req)?;
        let leases = self
            .store
            .leases
            .list(&ns)
            .into_iter()
            .map(|l| lapi::Lease {
                id: l.id,
                created_at: Some(prost_types::Timestamp::from(l.created)),
                labels: l.labels.into_iter().collect(),
                blobs: l.blobs,
                snapshots: l.snapshots,
            })
            .collect();
        Ok(Response::new(lapi::ListLeasesResponse { leases }))
    }

    async fn delete(
        &self,
        req: Request<lapi::DeleteLeaseRequest>,
    ) -> Result<Response<lapi::DeleteLeaseResponse>, Status> {
        use crate::lease::ReleaseError;
        let ns = namespace(&req)?;
        let id = &req.get_ref().id;
        match self.store.leases.release(&ns, id, LEASE_RELEASE_WAIT).await {
            Ok(()) => {
                info!(namespace = %ns, lease = %id, "lease removed: its work was stopped");
                Ok(Response::new(lapi::DeleteLeaseResponse {}))
            }
            Err(e @ ReleaseError::NotFound { .. }) => Err(Status::not_found(e.to_string())),
            Err(e @ ReleaseError::StillRunning { .. }) => {
                Err(Status::deadline_exceeded(e.to_string()))
            }
        }
    }
}
