//! The Kubernetes Container Runtime Interface (`runtime.v1`, vendored in
//! `proto/k8s/cri/v1/api.proto`) on its own unix socket (`[cri] socket`), for the kubelet,
//! `crictl` and `critest`.
//!
//! Like every front of berth (the CLI, the Docker gateway) it is a gRPC client of the
//! services: it imports no service crate and reaches them through [`Backends`]' channels. CRI
//! objects live in berth namespace [`NAMESPACE`] (`k8s.io`, as containerd's), so
//! `berth -n k8s.io images` lists what the kubelet pulled.
//!
//! - [`images`]: the whole `ImageService` over the image and snapshot services.
//! - [`runtime`]: `RuntimeService`: Version, Status, RuntimeConfig, UpdateRuntimeConfig, and
//!   the pod and container lifecycles of [`sandboxes`] and [`containers`]; streaming and
//!   the rest are the next slices of issue 15 and answer `Unimplemented` naming the RPC.
//! - [`sandboxes`]: pod sandboxes, each a berth container of the sandbox (pause) image that
//!   holds the pod's network; [`containers`]: the containers that join it.
//! - [`events`]: GetContainerEvents from berth's container events.
//! - [`exec`]: ExecSync over the runtime's Tasks.Exec; [`stats`]: containers' CPU, memory
//!   and writable layer; [`pod_stats`]: pods' CPU, memory, network and processes.
//! - [`stream`]: the streaming server of Exec, Attach and PortForward (`[cri]
//!   stream_address`): the URLs those RPCs answer, served over SPDY with `berth-spdy`.
//! - [`objects`]: how both are kept as berth containers (labels `io.berth.cri.*`).
//! - [`network`]: whether the CNI configuration makes pods' networks possible (NetworkReady).
//! - [`pod_network`]: the pods' CNI network (the default configuration written when none exists).
//! - [`convert`]: berth's image views in the CRI's terms.

use std::path::PathBuf;
use std::sync::Arc;
use tonic::transport::Channel;

pub mod containers;
pub mod convert;
pub mod events;
pub mod exec;
pub mod images;
pub mod log_rotation;
pub mod network;
pub mod objects;
pub mod pod_network;
pub mod pod_stats;
pub mod resources;
pub mod runtime;
pub mod sandboxes;
pub mod stats;
pub mod stream;

/// The berth namespace of CRI objects.
pub const NAMESPACE: &str = "k8s.io";

/// What the CRI answers from: the channels to the services and the parts of `[cri]` it uses.
#[derive(Debug, Clone)]
pub struct Backends {
    /// The image service (Images).
    pub image: Channel,
    /// The snapshot service (the image filesystem's usage).
    pub snapshot: Channel,
    /// The runtime service (its health is the CRI's RuntimeReady).
    pub runtime: Channel,
    /// The events service (GetContainerEvents).
    pub events: Channel,
    /// The berthd that hosts the snapshot service (its Version says its root).
    pub snapshot_host: Channel,
    /// The snapshotter images are unpacked with.
    pub snapshotter: String,
    /// The image of pod sandboxes (`[cri] sandbox_image`, default
    /// [`sandboxes::DEFAULT_SANDBOX_IMAGE`]).
    pub sandbox_image: String,
    /// CNI network configurations (`[cri] cni_conf_dir`).
    pub cni_conf_dir: PathBuf,
    /// Folders searched for CNI plugins, in order (`[cri] cni_bin_dir`, else Debian's then the
    /// upstream default).
    pub cni_bin_dirs: Vec<PathBuf>,
}

impl Backends {
    /// The CNI folders of `[cri]`, with their defaults.
    pub fn cni_dirs(config: &berth_core::config::CriConfig) -> (PathBuf, Vec<PathBuf>) {
        let conf = config
            .cni_conf_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/cni/net.d"));
        let bins = match &config.cni_bin_dir {
            Some(d) => vec![d.clone()],
            None => vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
        };
        (conf, bins)
    }
}

/// A request to one of berth's services in [`NAMESPACE`].
pub(crate) fn req<T>(message: T) -> tonic::Request<T> {
    berth_core::grpc::request(NAMESPACE, message)
}

/// A service's error as the CRI's answer: its code kept, its message said to come from it.
pub(crate) fn from_service(what: &str, e: tonic::Status) -> tonic::Status {
    tonic::Status::new(e.code(), format!("{what}: {}", e.message()))
}

/// Serves `runtime.v1.RuntimeService` and `runtime.v1.ImageService` on `listener`, and the
/// streaming server of Exec, Attach and PortForward on `stream_listener`, until `shutdown`
/// ends.
pub async fn serve(
    listener: tokio::net::UnixListener,
    stream_listener: stream::StreamListener,
    backends: Backends,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use berth_api::cri::v1::image_service_server::ImageServiceServer;
    use berth_api::cri::v1::runtime_service_server::RuntimeServiceServer;
    let backends = Arc::new(backends);
    let streaming = Arc::new(stream::Streaming::new(stream_listener.address()));
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    tokio::spawn(stream::serve(
        stream_listener,
        backends.clone(),
        streaming.clone(),
        shutdown.clone(),
    ));
    let runtime = runtime::Runtime::new(backends.clone(), streaming);
    let images = images::Images::new(backends);
    tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(runtime).max_decoding_message_size(16 << 20))
        .add_service(ImageServiceServer::new(images).max_decoding_message_size(16 << 20))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}
