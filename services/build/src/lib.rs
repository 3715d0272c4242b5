//! berth's build service: Dockerfile builds as a client of the other services.
//!
//! - [`dockerfile`], [`dockerignore`]: the Dockerfile front end (parser, variable
//!   substitution, history text) and `.dockerignore` rules, from the `berth-dockerfile` crate,
//!   re-exported here so that the executor's `crate::dockerfile` paths read as before.
//! - [`context`]: the context tar the client streams, unpacked safely into a private folder.
//! - [`copy`]: COPY/ADD path rules, and the layer tar (plus a content digest) they make.
//! - [`cache`]: the build cache (parent image + instruction + content → image id), in sled.
//! - [`rootfs`]: read-only views of an image's rootfs (`COPY --from`, `--chown` by name).
//! - [`executor`]: runs a Dockerfile step by step through the image, snapshot and runtime
//!   services, from plain options, reporting progress events and failing with an
//!   [`error::BuildError`]; [`service`] is the `berth.build.v1.Build` gRPC shell over it;
//!   [`serve`] builds it.
//! - [`prune`]: removes the build cache no container uses (`berth builder prune`).

pub mod cache;
pub mod context;
pub mod copy;
pub mod error;
pub mod executor;
pub mod prune;
pub mod rootfs;
pub mod service;

pub use berth_dockerfile::{dockerfile, dockerignore};

use berth_api::build::v1::build_server::BuildServer;
use berth_core::config::Limits;
use std::path::Path;
use tonic::transport::Channel;

/// Opens the build service's folder `root` (its cache database, temporary contexts, mount
/// points) and builds the Build gRPC service; the channels reach the image, snapshot and
/// runtime services it drives; `limits` bound what a context or an ADD may unpack or fetch.
pub fn serve(
    root: &Path,
    images: Channel,
    snapshots: Channel,
    runtime: Channel,
    limits: Limits,
) -> Result<BuildServer<service::BuildService>, std::io::Error> {
    // Contexts and mounted image rootfs: root's alone (0700), as berthd's root is.
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
    let mnt = root.join("mnt");
    rootfs::clean_stale(&mnt);
    // Contexts of builds a previous berthd did not finish.
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ctx-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    std::fs::create_dir_all(&mnt)?;
    let cache = cache::BuildCache::open(&root.join("cache.db")).map_err(std::io::Error::other)?;
    let clients = executor::Clients {
        images: berth_api::images::v1::images_client::ImagesClient::new(images)
            .max_decoding_message_size(64 << 20),
        snapshots: berth_api::snapshots::v1::snapshots_client::SnapshotsClient::new(snapshots),
        containers: berth_api::containers::v1::containers_client::ContainersClient::new(
            runtime.clone(),
        ),
        tasks: berth_api::tasks::v1::tasks_client::TasksClient::new(runtime)
            .max_decoding_message_size(64 << 20),
    };
    Ok(BuildServer::new(service::BuildService {
        root: root.to_path_buf(),
        cache,
        clients,
        limits,
    })
    .max_decoding_message_size(64 << 20))
}
