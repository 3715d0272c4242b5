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
//! - **Lifecycle** ([`lifecycle`]): each container's state (status, exit code, pid, times,
//!   OOM, restart count, stopped by the user) lives in its record and is kept current by a
//!   monitor per running task, which waits on the shim, records the exit, publishes `die`/`oom`,
//!   deletes the task and applies the restart policy (Docker's back-off) or `auto_remove`.
//!   [`Runtime::recover`] finds everything again when berthd starts.
//! - **Logs** ([`logs`]): `<root>/containers/<ns>/<id>/container.log`, written by the shim of
//!   every run (annotation `io.berth.log-path`), read back by `Tasks.Logs`.
//! - **Usage** (`usage`): a task's processes and cgroup figures (`Tasks.ListPids`,
//!   `Tasks.Metrics`), read from its cgroup.
//! - **Volumes** ([`volumes`], [`VolumesService`]): `<root>/volumes/<ns>/<name>/_data`, bind
//!   mounts and named/anonymous volumes in the spec.
//! - **Events** ([`events`]): published to the Events service when a channel is given
//!   ([`serve_all`]); a failed publish is only logged.
//! - **Network** ([`network`], `Networks` service in [`grpc::networks`]): the networks of
//!   this instance (the default bridge, host, none and user bridge networks over the standard
//!   CNI plugins) and what each task gets from them: a namespace, addresses, published ports,
//!   its hosts/resolv.conf/hostname files; [`connections`] joins and leaves them.
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
pub mod error;
pub mod events;
pub mod grpc;
pub mod lifecycle;
pub mod logs;
pub mod metadata;
pub mod metrics;
pub mod network;
mod pause;
pub mod seccomp;
pub mod security;
pub mod shim;
pub mod spec;
pub mod tasks;
mod usage;
pub mod volumes;

pub use containers::ContainersService;
pub use error::Error;
pub use grpc::tasks::TasksService;
pub use volumes::VolumesService;

use berth_api::containers::v1::containers_server::ContainersServer;
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::tasks::v1::tasks_server::TasksServer;
use berth_api::volumes::v1::volumes_server::VolumesServer;
use berth_core::config::RuntimeConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use tonic::transport::Channel;

/// The state both services share: the container records, the state folder with the bundles,
/// and the clients of the services the runtime depends on.
#[derive(Debug)]
pub struct Runtime {
    /// This runtime itself, for the monitor tasks it spawns.
    me: Weak<Runtime>,
    store: metadata::Store,
    /// The runtime's persistent folder: `metadata.db`, `containers/` (logs), `volumes/`.
    root: PathBuf,
    state: PathBuf,
    shim_binary: PathBuf,
    spec_options: spec::Options,
    images: ImagesClient<Channel>,
    snapshots: SnapshotsClient<Channel>,
    events: berth_events::Publisher,
    /// One lock per container (`<ns>/<id>`): creating, starting, deleting its task and
    /// recording its exits never interleave.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `<ns>/<id>` → when a user last sent it a signal with `kill` (an exit soon after counts
    /// as stopped by the user).
    user_kills: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// `<ns>/<id>` → the rootfs mounts of the container's last task, for a start while the
    /// snapshot service cannot be reached (berthd starting up).
    last_mounts: std::sync::Mutex<HashMap<String, Vec<bundle::RootfsMount>>>,
    /// `<ns>/<id>` of containers a client attached to during their current run: their
    /// client (a foreground `run --rm`) removes them, not `auto_remove`.
    attached_runs: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The networks and the containers' attachments to them.
    networks: Arc<network::Networks>,
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
        let networks = Arc::new(network::Networks::new(
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
        Ok(Arc::new_cyclic(|me| Runtime {
            me: me.clone(),
            store,
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            shim_binary: shim::binary(config.shim.as_deref()),
            spec_options: spec::Options::from_host(config.log_max_size),
            images: ImagesClient::new(images),
            snapshots: SnapshotsClient::new(snapshots),
            events: berth_events::Publisher::new(events),
            locks: Default::default(),
            user_kills: Default::default(),
            last_mounts: Default::default(),
            attached_runs: Default::default(),
            networks,
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

    /// The Networks service over this runtime.
    pub fn networks_service(
        self: &Arc<Self>,
    ) -> berth_api::networks::v1::networks_server::NetworksServer<grpc::networks::NetworksService>
    {
        berth_api::networks::v1::networks_server::NetworksServer::new(
            grpc::networks::NetworksService::new(self.clone()),
        )
    }

    /// The Volumes service over this runtime.
    pub fn volumes_service(self: &Arc<Self>) -> VolumesServer<VolumesService> {
        VolumesServer::new(VolumesService::new(self.clone()))
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
    pub networks:
        berth_api::networks::v1::networks_server::NetworksServer<grpc::networks::NetworksService>,
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
        .sweep(|ns, id| runtime.bundle(ns, id).exists());
    // The published ports and peers of tasks that still run are held again before any
    // request can ask for them.
    for ns in runtime.store.namespaces().unwrap_or_default() {
        for c in runtime.store.list(&ns).unwrap_or_default() {
            if c.network_settings.is_some() && runtime.bundle(&ns, &c.id).exists() {
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
