//! A read-only view of an image's rootfs, for `COPY --from` and `--chown` by name: a
//! `Snapshots.View` over the image's chain id, mounted under `<root>/build/mnt/<key>` and
//! taken down again (unmount, remove the folder and the view) in every case. Views a crash
//! left behind are removed when the snapshot service opens (by their key prefix,
//! [`berth_core::snapshot::BUILD_VIEW_PREFIX`]), their mount points by [`clean_stale`].

use berth_api::images::v1 as iapi;
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::snapshots::v1 as sapi;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_core::grpc::request;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use tonic::Status;

/// A mounted view; [`View::close`] takes it down.
#[derive(Debug)]
pub struct View {
    path: PathBuf,
    mounted: bool,
    key: String,
    snapshotter: String,
    ns: String,
    snapshots: SnapshotsClient<Channel>,
}

impl View {
    pub async fn open(
        snapshots: &SnapshotsClient<Channel>,
        images: &ImagesClient<Channel>,
        ns: &str,
        image: &str,
        mnt_dir: &Path,
    ) -> Result<View, Status> {
        let info = images
            .clone()
            .inspect(request(
                ns,
                iapi::InspectImageRequest {
                    name: image.to_string(),
                },
            ))
            .await?
            .into_inner();
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        let key = format!(
            "{}{}",
            berth_core::snapshot::BUILD_VIEW_PREFIX,
            hex::encode(b)
        );
        let path = mnt_dir.join(&key);
        std::fs::create_dir_all(&path)
            .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
        let mut view = View {
            path,
            mounted: false,
            key,
            snapshotter: info.snapshotter.clone(),
            ns: ns.to_string(),
            snapshots: snapshots.clone(),
        };
        if info.chain_id.is_empty() {
            // No layers: an empty rootfs.
            view.key.clear();
            return Ok(view);
        }
        let mounts = match view
            .snapshots
            .view(request(
                ns,
                sapi::PrepareSnapshotRequest {
                    snapshotter: info.snapshotter.clone(),
                    key: view.key.clone(),
                    parent: info.chain_id.clone(),
                    labels: Default::default(),
                },
            ))
            .await
        {
            Ok(r) => r.into_inner().mounts,
            Err(e) => {
                view.key.clear();
                view.close().await;
                return Err(e);
            }
        };
        let p = view.path.clone();
        // Image content mounted on the host: its set-id programs and device nodes stay inert.
        let mounts: Vec<_> = mounts
            .into_iter()
            .map(|m| {
                let mut options = m.options;
                options.extend(["nosuid".to_string(), "nodev".to_string()]);
                berth_mount::Mount {
                    fstype: m.r#type,
                    source: m.source,
                    options,
                }
            })
            .collect();
        let r = tokio::task::spawn_blocking(move || berth_mount::mount_all(&mounts, &p))
            .await
            .map_err(|e| Status::internal(e.to_string()))
            .and_then(|r| {
                r.map_err(|e| Status::internal(format!("mounting the rootfs of {image}: {e}")))
            });
        match r {
            Ok(()) => {
                view.mounted = true;
                Ok(view)
            }
            Err(e) => {
                view.close().await;
                Err(e)
            }
        }
    }

    /// The rootfs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn close(self) {
        if self.mounted {
            if let Err(e) = berth_mount::unmount(&self.path) {
                tracing::warn!("cannot unmount {}: {e}", self.path.display());
                let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
        if !self.key.is_empty() {
            let _ = self
                .snapshots
                .clone()
                .remove(request(
                    &self.ns,
                    sapi::SnapshotKey {
                        snapshotter: self.snapshotter.clone(),
                        key: self.key.clone(),
                    },
                ))
                .await;
        }
    }
}

/// Takes down what a previous berthd left mounted under `mnt_dir`.
pub fn clean_stale(mnt_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(mnt_dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&p);
    }
}
