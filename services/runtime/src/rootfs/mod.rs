//! A container's files seen from berthd: Docker's `diff`, `export` and `cp`.
//!
//! - [`changes`]: what the writable layer changed, from the overlay upper folder and the
//!   layers below (`Containers.Changes`).
//! - [`archive`]: a path's [`PathStat`] and a tar of a tree, written by descriptor so that a
//!   symlink swapped in by a running container is never followed out of it
//!   (`Containers.Export`, `ArchiveStat`, `ArchiveGet`).
//! - [`extract`]: a tar from a client unpacked into a folder of the container with
//!   [`berth_archive::Reader`] (bounded), every path resolved inside the container's root
//!   (`ArchivePut`).
//!
//! A request works on a [`Root`]: a descriptor of the container's `/`. A running container's
//! is `/proc/<pid>/root` (its mounts, volumes included, are seen as inside it, as with
//! Docker); a stopped container's — and every export's — is its snapshot mounted for the
//! request in a folder of berthd's state ([`SnapshotMount`], read-only unless it is written
//! to), so that an export has neither volumes nor the files berth binds over.
//! Paths inside a root are opened with `openat2(RESOLVE_IN_ROOT)`
//! ([`berth_shim::mounts::open_in_root`]): symlinks and `..` stay inside the container.

pub mod archive;
pub mod changes;
pub mod extract;

use crate::bundle::RootfsMount;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use archive::PathStat;

/// The overlay folders of a snapshot's mounts: its upper folder and its lower ones (top
/// first); `None` for a snapshot that is not an overlay.
pub fn overlay_dirs(mounts: &[RootfsMount]) -> Option<(PathBuf, Vec<PathBuf>)> {
    let m = mounts.iter().find(|m| m.typ == "overlay")?;
    let mut upper = None;
    let mut lowers = Vec::new();
    for o in &m.options {
        if let Some(l) = o.strip_prefix("lowerdir=") {
            lowers.extend(l.split(':').map(PathBuf::from));
        } else if let Some(u) = o.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(u));
        }
    }
    Some((upper?, lowers))
}

/// The mounts of a snapshot made read-only: an overlay becomes one of lower folders only
/// (its upper folder on top), so it can be mounted beside a running container's.
pub fn read_only(mounts: &[RootfsMount]) -> Vec<RootfsMount> {
    mounts
        .iter()
        .map(|m| match overlay_dirs(std::slice::from_ref(m)) {
            Some((upper, lowers)) if m.typ == "overlay" => {
                let mut all = vec![upper.display().to_string()];
                all.extend(lowers.iter().map(|l| l.display().to_string()));
                RootfsMount {
                    typ: m.typ.clone(),
                    source: m.source.clone(),
                    options: vec!["ro".into(), format!("lowerdir={}", all.join(":"))],
                }
            }
            _ => {
                let mut m = m.clone();
                m.options.retain(|o| o != "rw");
                m.options.push("ro".into());
                m
            }
        })
        .collect()
}

/// A snapshot mounted in a folder of berthd's own for one request; unmounted (lazily) and
/// the folder removed when dropped.
#[derive(Debug)]
pub struct SnapshotMount {
    dir: PathBuf,
}

impl SnapshotMount {
    /// Mounts `mounts` on a new folder `dir`.
    pub fn mount(mounts: &[RootfsMount], dir: &Path) -> io::Result<SnapshotMount> {
        std::fs::create_dir_all(dir)?;
        let list: Vec<berth_mount::Mount> = mounts
            .iter()
            .map(|m| berth_mount::Mount {
                fstype: m.typ.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        if let Err(e) = berth_mount::mount_all(&list, dir) {
            let _ = std::fs::remove_dir(dir);
            return Err(e);
        }
        Ok(SnapshotMount {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SnapshotMount {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot unmount a container's snapshot");
            return;
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A container's `/` opened for one request, and the mount that holds it (when it is not
/// a running container's).
#[derive(Debug)]
pub struct Root {
    pub fd: OwnedFd,
    _mount: Option<SnapshotMount>,
}

impl Root {
    /// A running container's root: `/proc/<pid>/root` of its init.
    pub fn of_process(pid: u32) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            format!("/proc/{pid}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd, _mount: None })
    }

    /// The root of a snapshot mounted for the request.
    pub fn of_mount(mount: SnapshotMount) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            mount.dir(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            _mount: Some(mount),
        })
    }
}

impl Root {
    /// A folder of the host that a stopped container mounts (a volume's or a bind's source),
    /// for paths under its mount point: resolved inside it, as a rootfs is.
    pub fn of_dir(dir: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd, _mount: None })
    }
}

/// A container path made relative to its root, cleaned: `/a/./b/` → `a/b`. `..` is kept
/// (resolution in the root stops it at `/`).
pub fn relative(path: &str) -> PathBuf {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay() -> RootfsMount {
        RootfsMount {
            typ: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                "lowerdir=/l/2:/l/1".into(),
                "upperdir=/s/fs".into(),
                "workdir=/s/work".into(),
            ],
        }
    }

    #[test]
    fn overlay_folders_and_their_read_only_view() {
        let (upper, lowers) = overlay_dirs(&[overlay()]).unwrap();
        assert_eq!(upper, PathBuf::from("/s/fs"));
        assert_eq!(lowers, [PathBuf::from("/l/2"), "/l/1".into()]);
        let ro = read_only(&[overlay()]);
        assert_eq!(ro[0].options, ["ro", "lowerdir=/s/fs:/l/2:/l/1"]);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative("/a/./b/"), PathBuf::from("a/b"));
        assert_eq!(relative("/"), PathBuf::from(""));
        assert_eq!(relative("../x"), PathBuf::from("../x"));
    }
}
