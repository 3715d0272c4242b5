//! berth-image: the content store, image names, pull, import.
//!
//! - [`content::ContentStore`]: blobs by digest; a blob is whole and verified or absent.
//! - [`metadata::ImageDb`]: the one module touching this service's sled database.
//! - [`manifest`]: parsing and checking manifests, indexes and configs.
//! - [`images::ImageStore`]: pull (through the registry service), unpack (through the snapshot
//!   service), import, and what `image ls` / `inspect` show.
//! - [`service`]: the Images and Content gRPC services over it; [`serve`] builds both.
//!
//! ```no_run
//! # async fn f(registry: tonic::transport::Channel, snapshots: tonic::transport::Channel) {
//! let (images, content) = berth_image::serve(std::path::Path::new("/var/lib/berth/image"), registry, snapshots, None, None, "overlayfs", Default::default()).unwrap();
//! # }
//! ```

pub mod changes;
pub mod commit;
pub mod content;
pub mod error;
pub mod export;
pub mod gc;
pub mod gzip;
pub mod images;
pub mod import;
pub mod manage;
pub mod manifest;
pub mod metadata;
pub mod push;
pub mod service;

pub use error::ImageError;
pub use images::ImageStore;

use berth_api::content::v1::content_server::ContentServer;
use berth_api::images::v1::images_server::ImagesServer;
use berth_api::registry::v1::registry_client::RegistryClient;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use std::path::Path;
use tonic::transport::Channel;

/// Opens the store under `root` (the image service's own folder) and builds the Images and
/// Content services. `registry` and `snapshots` reach the services it works through;
/// `events`, when given, the Events service its image events go to; `runtime`, when given,
/// the runtime service it asks which containers use an image before deleting it.
pub fn serve(
    root: &Path,
    registry: Channel,
    snapshots: Channel,
    events: Option<Channel>,
    runtime: Option<Channel>,
    default_snapshotter: &str,
    limits: berth_core::config::Limits,
) -> Result<
    (
        ImagesServer<service::ImagesService>,
        ContentServer<service::ContentService>,
    ),
    ImageError,
> {
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
    let images = service::ImagesService {
        store: store.clone(),
        tmp: root.join("tmp"),
    };
    Ok((
        ImagesServer::new(images).max_decoding_message_size(64 << 20),
        ContentServer::new(service::ContentService { store }),
    ))
}
