//! berth-snapshot: layered filesystems for containers, and unpacking image layers into them.
//!
//! `berthd` adds the service to its router with [`serve`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let root = std::path::Path::new("/var/lib/berth/snapshot"); // the service's own folder
//! let limits = berth_core::config::Limits::default(); // `[limits]` of the config
//! let snapshots = berth_snapshot::serve(root, "overlayfs", limits)?;
//! tonic::transport::Server::builder()
//!     .add_service(snapshots)
//!     .serve("127.0.0.1:7000".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Core types
//!
//! - [`Snapshots`] is the domain: prepare / view / mounts / commit / remove / stat / list /
//!   usage, [`Snapshots::apply`] to unpack a layer and commit it under its chain id (given, or
//!   computed from what arrives; layers of one image may be applied in parallel), and
//!   [`Snapshots::diff`] to write a snapshot's changes as a layer tar. It is usable
//!   in-process; every method blocks.
//! - [`SnapshotsService`] is the thin tonic shell over it (`berth.snapshots.v1.Snapshots`).
//! - Two snapshotters lay snapshots out under the root: [`overlay`] (`overlayfs`, the default:
//!   one folder per layer, stacked by an overlay mount) and [`native`] (full copies, bind
//!   mounted; used where overlay does not work). Each snapshot is `<root>/<snapshotter>/snapshots/<id>`.
//! - [`metadata::Metadata`] holds the records (sled, `<root>/metadata.db`) per snapshotter,
//!   namespace and key, with parent/child integrity and crash recovery.
//! - [`apply`] unpacks a tar stream (gzip, zstd or plain) into a snapshot folder safely and
//!   verifies its diff_id, reading it with [`berth_archive::Reader`], which bounds what a hostile
//!   archive can make berthd hold in memory or write to disk; [`diff`] is its reverse: the changes of a snapshot over its parent
//!   (overlay's upper dir, or a native copy compared with its parent's) as an OCI layer tar.
//! - [`mount::mount_all`] mounts what Prepare/View/Mounts return.
//!
//! # Mounts returned
//!
//! In `mount(8)` terms ([`berth_api::types::v1::Mount`]: `type`, `source`, `options`,
//! `target` left empty for the caller):
//! - an active snapshot on layers: `overlay` / `overlay` with
//!   `[index=off, redirect_dir=off, metacopy=off,] workdir=<dir>/work, upperdir=<dir>/fs,
//!   lowerdir=<p1>/fs:<p2>/fs…`
//!   (nearest parent first, absolute paths);
//! - an active snapshot without parent, and every native active snapshot: `bind` of its `fs`,
//!   `rw, rbind`;
//! - a view: `bind`, `ro, rbind` of the layer for one layer; `overlay` with `ro, lowerdir=…`
//!   for several. A read-only bind needs a bind then a read-only remount (as `mount(8)` does).
//!
//! See [`overlay`] for the mount-data size limit and the layer counts supported.
//!
//! # Crash safety
//!
//! Every record change is one sled transaction, flushed. A snapshot's folder is created
//! before its record and deleted after it; [`Snapshots::open`] deletes folders that have no
//! record and drops records whose folder vanished. `kill -9` at any point leaves a consistent
//! state. An Apply unpacks into a temporary active snapshot (labelled
//! [`snapshots::EXTRACTING_LABEL`]) and commits it in one transaction once it is whole (and,
//! for a layer unpacked beside its parent, once the parent is committed); [`Snapshots::open`]
//! removes the temporary snapshots a crash left.

pub mod apply;
pub mod diff;
pub mod error;
mod inflight;
pub mod metadata;
pub mod metrics;
pub mod mount;
pub mod native;
pub mod overlay;
pub mod service;
pub mod snapshots;

pub use error::Error;
pub use metadata::Kind;
pub use service::SnapshotsService;
pub use snapshots::{chain_name, Applied, Diffed, Info, Layer, Snapshots, Usage};

use berth_api::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_core::config::Limits;
use std::path::Path;
use std::sync::Arc;

/// Layers arrive in Apply messages; allow chunks up to this size.
const MAX_MESSAGE: usize = 16 << 20;

/// Opens the snapshot root `root` (the service's own folder, e.g. `/var/lib/berth/snapshot`)
/// and returns the gRPC service for it. `default_snapshotter` is `overlayfs` (the default,
/// falling back to `native` when overlay does not work on `root`'s filesystem) or `native`;
/// `limits` bound what one layer may unpack. This blocks while it opens the database and
/// recovers from an earlier crash.
pub fn serve(
    root: &Path,
    default_snapshotter: &str,
    limits: Limits,
) -> Result<SnapshotsServer<SnapshotsService>, Error> {
    let snapshots = Arc::new(Snapshots::open(root, default_snapshotter)?.with_limits(limits));
    Ok(service(snapshots))
}

/// The gRPC service over an already opened [`Snapshots`] (to share it in-process).
pub fn service(snapshots: Arc<Snapshots>) -> SnapshotsServer<SnapshotsService> {
    SnapshotsServer::new(SnapshotsService::new(snapshots)).max_decoding_message_size(MAX_MESSAGE)
}
