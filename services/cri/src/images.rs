//! `runtime.v1.ImageService` over the image service (names, pulls, removal) and the snapshot
//! service (the image filesystem's usage), in namespace [`NAMESPACE`](crate::NAMESPACE).
//!
//! CRI's rules, from api.proto's comments: ImageStatus of an absent image answers an empty
//! status, not an error; RemoveImage of an absent image succeeds, and removing one name of an
//! image removes the image with all its names.

use crate::{convert, from_service, req, Backends};
use berth_api::cri::v1 as cri;
use berth_api::cri::v1::image_service_server::ImageService;
use berth_api::images::v1 as api;
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::snapshots::v1 as snap;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tracing::info;

/// The CRI's ImageService.
#[derive(Debug, Clone)]
pub struct Images {
    backends: Arc<Backends>,
}

impl Images {
    pub fn new(backends: Arc<Backends>) -> Images {
        Images { backends }
    }

    fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.backends.image.clone()).max_decoding_message_size(64 << 20)
    }

    /// The image `name` (a reference, an image id or a `repo@digest` of one of its names)
    /// inspected; `None` when there is none.
    async fn lookup(&self, name: &str) -> Result<Option<api::InspectImageResponse>, Status> {
        if name.trim().is_empty() {
            return Err(Status::invalid_argument(
                "an image is required (ImageSpec.image is empty)",
            ));
        }
        match self.inspect(name).await? {
            Some(found) => return Ok(Some(found)),
            None if !name.contains('@') => return Ok(None),
            None => {}
        }
        // A digest reference of an image pulled by tag: the repository and the manifest
        // digest of one of its names.
        let Ok(wanted) = berth_core::Reference::parse(name) else {
            return Ok(None);
        };
        let digest = name.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let hit = self.list().await?.into_iter().find(|s| {
            let image = s.image.clone().unwrap_or_default();
            let same_repo = berth_core::Reference::parse(&image.name)
                .is_ok_and(|r| r.repository() == wanted.repository());
            same_repo && image.target.is_some_and(|t| t.digest == digest)
        });
        match hit {
            Some(s) => self.inspect(&s.id).await,
            None => Ok(None),
        }
    }

    /// Images.List: one summary per name.
    async fn list(&self) -> Result<Vec<api::ImageSummary>, Status> {
        Ok(self
            .images()
            .list(req(api::ListImagesRequest::default()))
            .await
            .map_err(|e| from_service("listing images", e))?
            .into_inner()
            .images)
    }

    /// Images.Inspect of `name`; `None` when the image service knows no such image.
    async fn inspect(&self, name: &str) -> Result<Option<api::InspectImageResponse>, Status> {
        match self
            .images()
            .inspect(req(api::InspectImageRequest { name: name.into() }))
            .await
        {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(e) if e.code() == Code::NotFound => Ok(None),
            Err(e) if e.code() == Code::InvalidArgument => Err(Status::invalid_argument(format!(
                "invalid image {name:?}: {}",
                e.message()
            ))),
            Err(e) => Err(from_service(&format!("inspecting image {name}"), e)),
        }
    }

    /// Every image once (by id), as the CRI shows them.
    async fn all_images(&self) -> Result<Vec<cri::Image>, Status> {
        let ids: BTreeSet<String> = self.list().await?.into_iter().map(|s| s.id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            // An image removed since the listing is simply not shown.
            if let Some(found) = self.inspect(&id).await? {
                out.push(convert::image(&found));
            }
        }
        Ok(out)
    }

    /// The image filesystem's usage: the committed snapshots (unpacked layers) of the
    /// namespace, and the snapshotter's folder on the host of the snapshot service.
    async fn filesystem_usage(&self) -> Result<cri::FilesystemUsage, Status> {
        let snapshotter = self.backends.snapshotter.clone();
        let mut snapshots = SnapshotsClient::new(self.backends.snapshot.clone());
        let infos = snapshots
            .list(req(snap::ListSnapshotsRequest {
                snapshotter: snapshotter.clone(),
            }))
            .await
            .map_err(|e| from_service("listing snapshots", e))?
            .into_inner()
            .info;
        let (mut bytes, mut inodes) = (0u64, 0u64);
        for info in infos
            .into_iter()
            .filter(|i| i.kind == snap::Kind::Committed as i32)
        {
            let usage = snapshots
                .usage(req(snap::SnapshotKey {
                    snapshotter: snapshotter.clone(),
                    key: info.name.clone(),
                }))
                .await;
            match usage {
                Ok(u) => {
                    let u = u.into_inner();
                    bytes += u.size.max(0) as u64;
                    inodes += u.inodes.max(0) as u64;
                }
                // Removed since the listing.
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => return Err(from_service(&format!("usage of snapshot {}", info.name), e)),
            }
        }
        let root = berth_api::version::v1::version_client::VersionClient::new(
            self.backends.snapshot_host.clone(),
        )
        .version(berth_api::version::v1::VersionRequest {})
        .await
        .map_err(|e| from_service("asking the snapshot service's berthd for its root", e))?
        .into_inner()
        .root;
        let mountpoint = std::path::Path::new(&root)
            .join("snapshot")
            .join(&snapshotter);
        Ok(cri::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: mountpoint.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        })
    }

    /// The image `name` present: pulled (without credentials) when it is not there yet, as
    /// the sandbox image is.
    pub(crate) async fn ensure(&self, name: &str) -> Result<(), Status> {
        if self.lookup(name).await?.is_none() {
            self.pull(name, None).await?;
        }
        Ok(())
    }

    /// Images.Pull of `reference` to its end; the pulled image's name.
    async fn pull(
        &self,
        reference: &str,
        auth: Option<berth_api::types::v1::RegistryAuth>,
    ) -> Result<String, Status> {
        let mut stream = self
            .images()
            .pull(req(api::PullRequest {
                reference: reference.to_string(),
                unpack: true,
                snapshotter: self.backends.snapshotter.clone(),
                auth,
                ..Default::default()
            }))
            .await
            .map_err(|e| pull_error(reference, e))?
            .into_inner();
        let mut pulled = None;
        while let Some(m) = stream.next().await {
            if let Some(api::pull_response::Item::Image(image)) =
                m.map_err(|e| pull_error(reference, e))?.item
            {
                pulled = Some(image.name);
            }
        }
        pulled.ok_or_else(|| {
            Status::internal(format!(
                "pulling {reference}: the image service ended without the image"
            ))
        })
    }
}

/// A failed pull, its code kept (InvalidArgument, NotFound, Unauthenticated, Unavailable…).
fn pull_error(reference: &str, e: Status) -> Status {
    Status::new(
        e.code(),
        format!("pulling image {reference}: {}", e.message()),
    )
}

/// Now, in nanoseconds since the epoch.
fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(1)
}

/// The image named by a request's spec.
fn spec_image(spec: Option<&cri::ImageSpec>) -> &str {
    spec.map(|s| s.image.as_str()).unwrap_or_default()
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = request.into_inner().filter;
        let wanted = spec_image(filter.as_ref().and_then(|f| f.image.as_ref()));
        let images = if wanted.is_empty() {
            self.all_images().await?
        } else {
            self.lookup(wanted)
                .await?
                .iter()
                .map(convert::image)
                .collect()
        };
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let r = request.into_inner();
        let found = self.lookup(spec_image(r.image.as_ref())).await?;
        let info = match (&found, r.verbose) {
            (Some(f), true) => convert::verbose_info(f),
            _ => Default::default(),
        };
        Ok(Response::new(cri::ImageStatusResponse {
            image: found.as_ref().map(convert::image),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let r = request.into_inner();
        let reference = spec_image(r.image.as_ref()).trim().to_string();
        if reference.is_empty() {
            return Err(Status::invalid_argument(
                "an image is required (ImageSpec.image is empty)",
            ));
        }
        berth_core::Reference::parse(&reference).map_err(|e| {
            Status::invalid_argument(format!("invalid image reference {reference:?}: {e}"))
        })?;
        let auth = convert::registry_auth(r.auth.as_ref())?;
        let name = self.pull(&reference, auth).await?;
        let image = self.inspect(&name).await?.ok_or_else(|| {
            Status::not_found(format!("image {name} was removed right after its pull"))
        })?;
        let id = image.summary.map(|s| s.id).unwrap_or_default();
        info!(image = %reference, %id, "CRI pulled an image");
        Ok(Response::new(cri::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let r = request.into_inner();
        let Some(found) = self.lookup(spec_image(r.image.as_ref())).await? else {
            return Ok(Response::new(cri::RemoveImageResponse {}));
        };
        let id = found.summary.map(|s| s.id).unwrap_or_default();
        // By id and forced: every name of the image goes, as the CRI asks; containers that
        // use it keep their snapshots.
        match self
            .images()
            .delete(req(api::DeleteImageRequest {
                name: id.clone(),
                force: true,
            }))
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Code::NotFound => {}
            Err(e) => return Err(from_service(&format!("removing image {id}"), e)),
        }
        info!(%id, "CRI removed an image");
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![self.filesystem_usage().await?],
            container_filesystems: vec![],
        }))
    }
}
