//! berth-runtime: containers and tasks.
//!
//! [`Runtime`] is what berthd constructs: a few types, each owning its part, wired together;
//! the gRPC services ([`grpc`]: Containers, Tasks, Volumes, Networks) are thin shells over the
//! ones they need.
//! - [`containers::Containers`]: the stored definition of a container. Creating one resolves
//!   the image through the Images service, prepares the container's writable snapshot (key =
//!   container id, parent = the image's chain id) through the Snapshots service, builds the
//!   OCI runtime spec ([`spec`]) and stores the record ([`metadata::Store`], the one module
//!   that touches sled); removing one gives back its snapshot, folder and anonymous volumes.
//! - [`tasks::Tasks`]: the running side, every task's life. Creating a task writes a
//!   [`bundle::Bundle`] under `<state>/tasks/<namespace>/<id>/` (the stored spec as
//!   `config.json`, the snapshot's mounts as `rootfs.json`) and starts one `berth-shim` for it
//!   ([`shim::spawn`]); every other call is one request on the shim's socket ([`shim::Shim`]):
//!   start, kill, stop, pause, its processes and figures. Nothing about a task is kept in
//!   memory: after a restart the bundle folders are the truth, and a task whose shim is gone
//!   reads as stopped with the exit status the shim left in `exit.json`. A monitor per running
//!   task waits on the shim, records the exit, publishes `die`/`oom`, deletes the task and
//!   applies the restart policy (Docker's back-off) or `auto_remove`; [`Runtime::recover`]
//!   finds everything again when berthd starts. Deleting a container is the task lifecycle's
//!   too: its task ends first.
//! - [`lifecycle`]: each container's recorded state (status, exit code, pid, times, OOM,
//!   restart count, stopped by the user) in its record, and the restart policies; the task
//!   lifecycle writes it, everyone reads it, and it calls nothing back.
//! - [`locks::ContainerLocks`]: one lock per container, so that the changes to its task never
//!   interleave.
//! - [`logs::Logs`]: the containers' own folders and `<root>/containers/<ns>/<id>/container.log`,
//!   written by the shim of every run (annotation `io.berth.log-path`), read back by
//!   `Tasks.Logs`.
//! - [`volumes::Volumes`]: `<root>/volumes/<ns>/<name>/_data`, bind mounts and named/anonymous
//!   volumes in the spec.
//! - [`events::Events`]: published to the Events service when a channel is given
//!   ([`serve_all`]); a failed publish is only logged.
//! - [`network::Networks`]: the networks of this instance (the default bridge, host, none and
//!   user bridge networks over the standard CNI plugins) and what each task gets from them: a
//!   namespace, addresses, published ports, its hosts/resolv.conf/hostname files;
//!   [`connections::Connections`] joins and leaves them.
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
pub mod connections;
pub mod containers;
pub mod copyup;
pub mod devices;
pub mod error;
pub mod events;
pub mod grpc;
pub mod lifecycle;
pub mod limits;
pub mod locks;
pub mod logs;
pub mod metadata;
pub mod metrics;
pub mod network;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod shim;
pub mod spec;
pub mod tasks;
pub mod volumes;

pub use error::Error;
pub use grpc::containers::ContainersService;
pub use grpc::tasks::TasksService;
pub use grpc::volumes::VolumesService;

use berth_api::containers::v1::containers_server::ContainersServer;
use berth_api::containers::v1::MountPoint;
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::networks::v1::networks_server::NetworksServer;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::tasks::v1::tasks_server::TasksServer;
use berth_api::volumes::v1::volumes_server::VolumesServer;
use berth_core::config::RuntimeConfig;
use connections::Connections;
use containers::Containers;
use events::Events;
use grpc::networks::NetworksService;
use locks::ContainerLocks;
use logs::Logs;
use network::Networks;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tasks::{TaskParts, Tasks};
use tonic::transport::Channel;
use volumes::{Bind, Volumes};

/// The runtime berthd constructs: the rooms, each owning its part, wired together. Each gRPC
/// service is a shell over the rooms it needs ([`Runtime::services`]).
#[derive(Debug)]
pub struct Runtime {
    /// The runtime's persistent folder: `metadata.db`, `containers/` (logs), `volumes/`.
    root: PathBuf,
    /// The volatile state folder (bundles under `tasks/`).
    state: PathBuf,
    /// The container and volume records.
    store: metadata::Store,
    /// The containers' folders and logs.
    logs: Logs,
    volumes: Arc<Volumes>,
    /// The networks and the containers' attachments to them.
    networks: Arc<Networks>,
    /// Container definitions: create, and remove what a deleted one leaves.
    containers: Arc<Containers>,
    /// Every task's life: the shims, the monitors, the per-container bookkeeping.
    tasks: Arc<Tasks>,
    /// Containers joining and leaving networks.
    connections: Arc<Connections>,
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
        Runtime::open_with_events(root, state, config, images, snapshots, None)
    }

    /// [`Runtime::open`] with a channel to the Events service, where the runtime publishes
    /// container events (`create`, `start`, `die`, `oom`, `kill`, `stop`, `destroy`, …). A
    /// publish that fails is logged, never fatal.
    pub fn open_with_events(
        root: &Path,
        state: &Path,
        config: RuntimeConfig,
        images: Channel,
        snapshots: Channel,
        events: Option<Channel>,
    ) -> Result<Arc<Runtime>, Error> {
        let store = metadata::Store::open(root)?;
        let networks = Arc::new(Networks::new(
            store.clone(),
            root,
            state,
            network::Options {
                bridge: config.bridge.clone(),
                subnet: config.bridge_subnet.clone(),
                plugin_dir: config.cni_plugin_dir.clone(),
            },
        ));
        if let Err(e) = networks.init() {
            tracing::warn!(error = %e, "cannot set up the networks; containers on them will not start");
        }
        let events = Arc::new(Events::new(
            berth_events::Publisher::new(events),
            store.clone(),
        ));
        let spec_options = spec::Options::from_host(config.log_max_size);
        let logs = Logs::new(root, store.clone(), spec_options.log_max_size);
        let volumes = Arc::new(Volumes::new(root, store.clone(), events.clone()));
        let snapshots = SnapshotsClient::new(snapshots);
        let containers = Arc::new(Containers::new(
            store.clone(),
            ImagesClient::new(images),
            snapshots.clone(),
            volumes.clone(),
            networks.clone(),
            spec_options,
            logs.clone(),
            events.clone(),
        ));
        let locks = Arc::new(ContainerLocks::default());
        let tasks = Tasks::new(TaskParts {
            state: state.to_path_buf(),
            shim_binary: shim::binary(config.shim.as_deref()),
            store: store.clone(),
            snapshots,
            containers: containers.clone(),
            networks: networks.clone(),
            logs: logs.clone(),
            events: events.clone(),
            locks: locks.clone(),
        });
        let connections = Arc::new(Connections::new(
            store.clone(),
            networks.clone(),
            locks,
            events,
        ));
        Ok(Arc::new(Runtime {
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            store,
            logs,
            volumes,
            networks,
            containers,
            tasks,
            connections,
        }))
    }

    /// The runtime's persistent folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container records.
    pub fn store(&self) -> &metadata::Store {
        &self.store
    }

    /// The folder that holds the bundles (`<state>/tasks/…`).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Container definitions.
    pub fn containers(&self) -> &Arc<Containers> {
        &self.containers
    }

    /// Every task's life.
    pub fn tasks(&self) -> &Arc<Tasks> {
        &self.tasks
    }

    /// The volumes.
    pub fn volumes(&self) -> &Arc<Volumes> {
        &self.volumes
    }

    /// The networks.
    pub fn networks(&self) -> &Arc<Networks> {
        &self.networks
    }

    /// The folder of a container's own files ([`Logs::container_dir`]).
    pub fn container_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.logs.container_dir(ns, id)
    }

    /// The container's log file ([`Logs::log_path`]).
    pub fn log_path(&self, ns: &str, id: &str) -> PathBuf {
        self.logs.log_path(ns, id)
    }

    /// The mounts of a new container ([`Volumes::container_mounts`]).
    pub fn container_mounts(
        &self,
        ns: &str,
        binds: &[Bind],
        image_volumes: &[String],
    ) -> Result<Vec<MountPoint>, Error> {
        self.volumes.container_mounts(ns, binds, image_volumes)
    }

    /// Creates the task of a container with its rootfs mounts known
    /// ([`Tasks::create_task_with_mounts`]).
    pub async fn create_task_with_mounts(
        &self,
        ns: &str,
        container: &berth_api::containers::v1::Container,
        mounts: &[bundle::RootfsMount],
    ) -> Result<u32, Error> {
        self.tasks
            .create_task_with_mounts(ns, container, mounts)
            .await
    }

    /// Starts a container ([`Tasks::start_container`]).
    pub async fn start_container(&self, ns: &str, reference: &str) -> Result<u32, Error> {
        self.tasks.start_container(ns, reference).await
    }

    /// Stops a container ([`Tasks::stop_container`]).
    pub async fn stop_container(
        &self,
        ns: &str,
        reference: &str,
        timeout: Option<i32>,
    ) -> Result<shim::ExitStatus, Error> {
        self.tasks.stop_container(ns, reference, timeout).await
    }

    /// Finds what ran before berthd started ([`Tasks::recover`]).
    pub async fn recover(&self) {
        self.tasks.recover().await
    }

    /// Both gRPC services over this runtime.
    pub fn services(
        self: &Arc<Self>,
    ) -> (
        ContainersServer<ContainersService>,
        TasksServer<TasksService>,
    ) {
        (
            ContainersServer::new(ContainersService::new(
                self.containers.clone(),
                self.tasks.clone(),
            )),
            TasksServer::new(TasksService::new(self.tasks.clone())),
        )
    }

    /// The Networks service over this runtime.
    pub fn networks_service(self: &Arc<Self>) -> NetworksServer<NetworksService> {
        NetworksServer::new(NetworksService::new(
            self.networks.clone(),
            self.connections.clone(),
        ))
    }

    /// The Volumes service over this runtime.
    pub fn volumes_service(self: &Arc<Self>) -> VolumesServer<VolumesService> {
        VolumesServer::new(VolumesService::new(self.volumes.clone()))
    }
}

/// A NamespaceUsage answer: `kind` objects per namespace, from `counts`.
pub(crate) fn namespace_usage(
    kind: &str,
    counts: std::collections::BTreeMap<String, i64>,
) -> berth_api::types::v1::NamespaceUsageResponse {
    berth_api::types::v1::NamespaceUsageResponse {
        namespaces: counts
            .into_iter()
            .map(|(namespace, n)| berth_api::types::v1::NamespaceUsage {
                namespace,
                objects: [(kind.to_string(), n)].into_iter().collect(),
            })
            .collect(),
    }
}

/// Everything [`serve_all`] returns, ready for `tonic::transport::Server::add_service`.
#[derive(Debug)]
pub struct Services {
    pub containers: ContainersServer<ContainersService>,
    pub tasks: TasksServer<TasksService>,
    pub volumes: VolumesServer<VolumesService>,
    pub networks: NetworksServer<NetworksService>,
    /// The runtime behind them.
    pub runtime: Arc<Runtime>,
}

/// The Containers, Tasks and Volumes services, with container events published to `events`
/// (a channel to the Events service; `None` publishes nothing).
///
/// Called inside a tokio runtime, it also starts the recovery of what ran before berthd
/// started ([`Runtime::recover`]): monitors for live shims, exits recorded for dead ones,
/// `always`/`unless-stopped` containers started again.
pub fn serve_all(
    root: &Path,
    state: &Path,
    config: RuntimeConfig,
    images: Channel,
    snapshots: Channel,
    events: Option<Channel>,
) -> Result<Services, Error> {
    let runtime = Runtime::open_with_events(root, state, config, images, snapshots, events)?;
    // Before anything can start a task: the network of tasks that are gone is released.
    runtime
        .networks
        .sweep(|ns, id| runtime.tasks.bundle(ns, id).exists());
    // The published ports and peers of tasks that still run are held again before any
    // request can ask for them.
    for ns in runtime.store.namespaces().unwrap_or_default() {
        for c in runtime.store.list(&ns).unwrap_or_default() {
            if c.network_settings.is_some() && runtime.tasks.bundle(&ns, &c.id).exists() {
                runtime.networks.restore(&ns, &c);
            }
        }
    }
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let rt = runtime.clone();
        handle.spawn(async move { rt.recover().await });
    }
    let (containers, tasks) = runtime.services();
    Ok(Services {
        containers,
        tasks,
        volumes: runtime.volumes_service(),
        networks: runtime.networks_service(),
        runtime,
    })
}

/// The Containers and Tasks services, ready for `tonic::transport::Server::add_service`
/// (without Volumes and events: see [`serve_all`]).
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
    let s = serve_all(root, state, config, images, snapshots, None)?;
    Ok((s.containers, s.tasks))
}
