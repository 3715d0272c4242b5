//! berth-runtime: containers and tasks.
//!
//! Two gRPC services over one [`Runtime`]:
//! - **Containers** ([`ContainersService`]): the stored definition of a container. `Create`
//!   resolves the image through the Images service, prepares the container's writable snapshot
//!   (key = container id, parent = the image's chain id) through the Snapshots service, builds
//!   the OCI runtime spec ([`spec`]) and stores the record ([`metadata::Store`], the one module
//!   that touches sled).
//! - **Tasks** ([`TasksService`]): the running side. `Create` writes a [`bundle::Bundle`] under
//!   `<state>/tasks/<namespace>/<id>/` (the stored spec as `config.json`, the snapshot's mounts
//!   as `rootfs.json`) and starts one `berth-shim` for it ([`shim::spawn`]); every other call is
//!   one request on the shim's socket ([`shim::Shim`]). Nothing about a task is kept in memory:
//!   after a restart the bundle folders are the truth, and a task whose shim is gone reads as
//!   stopped with the exit status the shim left in `exit.json`.
//!
//! The shim contract (bundle files, socket protocol, frames) is `docs/shim.md`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use berth_core::{config::Config, grpc::channel};
//! let config = Config::default();
//! let images = channel("unix:///run/berth/berth.sock")?;
//! let snapshots = images.clone();
//! let (containers, tasks) = berth_runtime::serve(
//!     &config.root.join("runtime"),
//!     &config.state,
//!     config.runtime.clone(),
//!     images,
//!     snapshots,
//! )?;
//! tonic::transport::Server::builder()
//!     .add_service(containers)
//!     .add_service(tasks)
//!     .serve("127.0.0.1:7000".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```

pub mod bundle;
pub mod containers;
pub mod error;
pub mod metadata;
pub mod shim;
pub mod spec;
pub mod tasks;

pub use containers::ContainersService;
pub use error::Error;
pub use tasks::TasksService;

use berth_api::containers::v1::containers_server::ContainersServer;
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::tasks::v1::tasks_server::TasksServer;
use berth_core::config::RuntimeConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::Channel;

/// The state both services share: the container records, the state folder with the bundles,
/// and the clients of the services the runtime depends on.
#[derive(Debug)]
pub struct Runtime {
    store: metadata::Store,
    state: PathBuf,
    shim_binary: PathBuf,
    spec_options: spec::Options,
    images: ImagesClient<Channel>,
    snapshots: SnapshotsClient<Channel>,
}

impl Runtime {
    /// Opens the runtime's database under `root` (its own folder, e.g.
    /// `/var/lib/berth/runtime`); bundles go under `<state>/tasks`.
    pub fn open(
        root: &Path,
        state: &Path,
        config: RuntimeConfig,
        images: Channel,
        snapshots: Channel,
    ) -> Result<Arc<Runtime>, Error> {
        let store = metadata::Store::open(root)?;
        Ok(Arc::new(Runtime {
            store,
            state: state.to_path_buf(),
            shim_binary: shim::binary(config.shim.as_deref()),
            spec_options: spec::Options::from_host(config.log_max_size),
            images: ImagesClient::new(images),
            snapshots: SnapshotsClient::new(snapshots),
        }))
    }

    /// The container records.
    pub fn store(&self) -> &metadata::Store {
        &self.store
    }

    /// The folder that holds the bundles (`<state>/tasks/…`).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Both gRPC services over this runtime.
    pub fn services(
        self: &Arc<Self>,
    ) -> (
        ContainersServer<ContainersService>,
        TasksServer<TasksService>,
    ) {
        (
            ContainersServer::new(ContainersService::new(self.clone())),
            TasksServer::new(TasksService::new(self.clone())),
        )
    }
}

/// The Containers and Tasks services, ready for `tonic::transport::Server::add_service`.
///
/// `root` is the runtime's own persistent folder (it holds `metadata.db`), `state` the
/// volatile state folder (bundles under `state/tasks`); `images` and `snapshots` are channels
/// to those services (see `berth_core::grpc::channel`).
pub fn serve(
    root: &Path,
    state: &Path,
    config: RuntimeConfig,
    images: Channel,
    snapshots: Channel,
) -> Result<
    (
        ContainersServer<ContainersService>,
        TasksServer<TasksService>,
    ),
    Error,
> {
    Ok(Runtime::open(root, state, config, images, snapshots)?.services())
}
