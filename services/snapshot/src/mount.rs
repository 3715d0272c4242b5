//! Mounting what the snapshotters return: a list of [`Mount`]s in `mount(8)` terms
//! (`type`, `source`, `options`), mounted in order on one target by [`berth_mount`], which
//! owns option parsing and the mount calls (see [`berth_mount::host`]).

use berth_api::types::v1::Mount;
use std::io;
use std::path::Path;

pub use berth_mount::unmount;

/// Mounts `mounts`, in order, on `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> io::Result<()> {
    let mounts: Vec<berth_mount::Mount> = mounts.iter().map(host_mount).collect();
    berth_mount::mount_all(&mounts, target)
}

/// An API mount as [`berth_mount`] takes it.
pub fn host_mount(m: &Mount) -> berth_mount::Mount {
    berth_mount::Mount {
        fstype: m.r#type.clone(),
        source: m.source.clone(),
        options: m.options.clone(),
    }
}
