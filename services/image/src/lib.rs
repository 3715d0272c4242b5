//! berth-image: the content store, image names, pull, import.
//!
//! - [`content::ContentStore`]: blobs by digest; a blob is whole and verified or absent.
//! - [`metadata::ImageDb`]: the one module touching this service's sled database (image
//!   records and the namespace registry).
//! - [`manifest`]: parsing and checking manifests, indexes and configs.
//! - [`images::ImageStore`]: pull (through the registry service), unpack (through the snapshot
//!   service), import, and what `image ls` / `inspect` show.
//! - [`commit`]: a container's changes (or a build step's) become an image; [`config`] is the
//!   typed `config` section of an image config and the one place that edits it (build steps,
//!   `commit --change` read by [`changes`], commit's run overrides); CommitLayer's tar may
//!   come gzip-compressed ([`gunzip`]: `docker import` of a `.tar.gz`).
//! - [`lease`]: the work in flight and what it keeps from [`gc`], the garbage collection.
//! - [`metrics`]: bytes pulled and pushed, garbage collections, the content store's size.
//! - [`namespaces`]: the namespace registry, and what every service holds of each namespace.
//! - [`service`]: the Images, Content, Namespaces and Leases gRPC services over it; [`serve`]
//!   builds them.
//!
//! ```no_run
//! # async fn f(registry: tonic::transport::Channel, snapshots: tonic::transport::Channel) {
//! let services = berth_image::serve(std::path::Path::new("/var/lib/berth/image"), registry, snapshots, None, None, "overlayfs", Default::default()).unwrap();
//! tonic::transport::Server::builder()
//!     .add_service(services.images)
//!     .add_service(services.content)
//!     .add_service(services.namespaces)
//!     .add_service(services.leases);
//! # }
//! ```

pub mod changes;
pub mod commit;
pub mod config;
pub mod content;
pub mod error;
pub mod export;
pub mod gc;
pub mod gunzip;
pub mod gzip;
pub mod images;
pub mod import;
pub mod lease;
pub mod manage;
pub mod manifest;
pub mod metadata;
pub mod metrics;
pub mod namespaces;
pub mod push;
pub mod service;

pub use error::ImageError;
pub use images::ImageStore;

use berth_api::content::v1::content_server::ContentServer;
use berth_api::images::v1::images_server::ImagesServer;
use berth_api::leases::v1::leases_server::LeasesServer;
use berth_api::namespaces::v1::namespaces_server::NamespacesServer;
use berth_api::registry::v1::registry_client::RegistryClient;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use std::path::Path;
use tonic::transport::Channel;

/// The gRPC services of the image service, ready for `Server::add_service`.
#[derive(Debug)]
pub struct Services {
    pub images: ImagesServer<service::ImagesService>,
    pub content: ContentServer<service::ContentService>,
    pub namespaces: NamespacesServer<service::NamespacesService>,
    pub leases: LeasesServer<service::LeasesService>,
    /// The service's Prometheus metrics, for berthd's registry.
    pub metrics: metrics::Collector,
}

/// Opens the store under `root` (the image service's own folder) and builds the Images,
/// Content, Namespaces and Leases services. `registry` and `snapshots` reach the services
/// it works through; `events`, when given, the Events service its image events go to;
/// `runtime`, when given, the runtime service it asks which containers use an image before
/// deleting it, and what containers and volumes a namespace holds before removing it.
pub fn serve(
    root: &Path,
    registry: Channel,
    snapshots: Channel,
    events: Option<Channel>,
    runtime: Option<Channel>,
    default_snapshotter: &str,
    limits: berth_core::config::Limits,
) -> Result<Services, ImageError> {
    let content = content::ContentStore::open(&root.join("content"))?;
    let db = metadata::ImageDb::open(&root.join("metadata.db"))?;
    let store = ImageStore::new(
        content,
        db,
        RegistryClient::new(registry).max_decoding_message_size(64 << 20),
        SnapshotsClient::new(snapshots),
        default_snapshotter.to_string(),
        berth_events::Publisher::new(events),
    )
    .with_limits(limits);
    let store = match runtime {
        Some(channel) => store.with_runtime(channel),
        None => store,
    };
    let metrics = metrics::Collector {
        counters: store.metrics.clone(),
        content: store.content.clone(),
    };
    let images = service::ImagesService {
        store: store.clone(),
        tmp: root.join("tmp"),
    };
    Ok(Services {
        images: ImagesServer::new(images).max_decoding_message_size(64 << 20),
        content: ContentServer::new(service::ContentService {
            store: store.clone(),
        }),
        namespaces: NamespacesServer::new(service::NamespacesService {
            store: store.clone(),
        }),
        leases: LeasesServer::new(service::LeasesService { store }),
        metrics,
    })
}
