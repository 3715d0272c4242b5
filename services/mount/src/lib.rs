//! berth-mount: mount options in `mount(8)` words, and mounting snapshot mounts on the host.
//!
//! Two pieces, used by the snapshot service, the build service and the shim:
//! - [`options`]: [`parse_options`] splits OCI/fstab-style options (`ro`, `rbind`, `nosuid`,
//!   `rslave`, `lowerdir=…`) into a [`MountOptions`]: the flags `mount(2)` takes, the
//!   propagation changes to apply after it, and the filesystem's data string.
//! - [`host`]: [`mount_all`] mounts a list of [`Mount`]s (what a snapshotter returns) on one
//!   target of the host, and [`unmount`] takes one down.
//!
//! The container side of mounting (inside a rootfs that may hold hostile symlinks) is the
//! shim's: it uses [`options`] only.
//!
//! ```no_run
//! let layers = berth_mount::Mount {
//!     fstype: "overlay".into(),
//!     source: "overlay".into(),
//!     options: vec!["ro".into(), "lowerdir=/l2:/l1".into()],
//! };
//! berth_mount::mount_all(&[layers], std::path::Path::new("/mnt/view"))?;
//! berth_mount::unmount(std::path::Path::new("/mnt/view"))?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod host;
pub mod options;

pub use host::{mount_all, unmount, Mount};
pub use options::{parse_options, parse_propagation, MountOptions};
