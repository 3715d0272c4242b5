//! A container's files for its clients: `diff` (`Containers.Changes`), `export` and `cp`
//! (`Containers.Export`, `ArchiveStat`, `ArchiveGet`, `ArchivePut`), over [`crate::rootfs`].
//!
//! A running container is read and written through its init's `/proc/<pid>/root` (what it
//! sees, volumes included); a stopped one through its snapshot mounted for the request under
//! `<state>/fs/` — read-only to read, as it is to write while the container's lock keeps a
//! start out. A stopped container's path under one of its volumes or bind mounts is read and
//! written in that mount's source, resolved inside it (no path leaves it), as the running
//! container would see it. An export always mounts the snapshot read-only, so that it has no
//! volumes, binds or network files.

use super::Tasks;
use crate::error::{Error, Result};
use crate::rootfs::{self, changes::Change, extract, Root, SnapshotMount};
use crate::shim::Status as ShimStatus;
use berth_api::containers::v1::{Container, MountPoint};
use std::io::Read;

/// Files berth binds into every container with a network; no change of the container's.
const NETWORK_FILES: [&str; 3] = ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"];

/// A root opened for a request and the container's lock when it is written while stopped.
#[derive(Debug)]
pub struct OpenRoot {
    pub root: Root,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

fn io_error(what: &'static str, container: &Container, e: std::io::Error) -> Error {
    Error::io(what, format!("container {}", container.id), e)
}

impl Tasks {
    /// The pid of the container's init while it runs.
    async fn running_pid(&self, ns: &str, id: &str) -> Result<Option<u32>> {
        Ok(self
            .task_state(ns, id)
            .await?
            .filter(|t| t.status != ShimStatus::Stopped && t.pid > 0)
            .map(|t| t.pid))
    }

    /// Mounts the container's snapshot for one request (`read_only` as a lower-only overlay).
    async fn mount_snapshot(&self, ns: &str, c: &Container, read_only: bool) -> Result<Root> {
        let mounts = self.snapshot_mounts(ns, c).await?;
        let mounts = if read_only {
            rootfs::read_only(&mounts)
        } else {
            mounts
        };
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| Error::Spec(e.to_string()))?;
        let dir = self
            .state
            .join("fs")
            .join(format!("{ns}-{}-{}", c.id, hex::encode(suffix)));
        let c2 = c.clone();
        tokio::task::spawn_blocking(move || {
            let m = SnapshotMount::mount(&mounts, &dir)
                .map_err(|e| io_error("cannot mount the snapshot of", &c2, e))?;
            Root::of_mount(m).map_err(|e| io_error("cannot open the snapshot of", &c2, e))
        })
        .await
        .map_err(|e| Error::Spec(e.to_string()))?
    }

    /// The root of a container for `cp`: its running init's, else its snapshot mounted
    /// (read-write under its lock when `write`).
    pub async fn container_root(&self, ns: &str, reference: &str, write: bool) -> Result<OpenRoot> {
        let c = self.store.resolve(ns, reference)?;
        let guard = if write {
            Some(self.locks.lock(ns, &c.id).await)
        } else {
            None
        };
        if let Some(pid) = self.running_pid(ns, &c.id).await? {
            let root =
                Root::of_process(pid).map_err(|e| io_error("cannot open the root of", &c, e))?;
            return Ok(OpenRoot { root, _guard: None });
        }
        let root = self.mount_snapshot(ns, &c, !write).await?;
        Ok(OpenRoot {
            root,
            _guard: guard,
        })
    }

    /// The root that holds `path` of a container for `cp`, and the path inside it: a stopped
    /// container's volume or bind mount (the deepest one holding the path) when the path is
    /// under one, else [`Tasks::container_root`]'s. A write into a read-only mount is refused.
    pub async fn path_root(
        &self,
        ns: &str,
        reference: &str,
        path: &str,
        write: bool,
    ) -> Result<(OpenRoot, String)> {
        let c = self.store.resolve(ns, reference)?;
        if self.running_pid(ns, &c.id).await?.is_none() {
            if let Some((m, inside)) = mount_holding(&c.mounts, path) {
                if write && !m.rw {
                    return Err(Error::FailedPrecondition(format!(
                        "mounted volume is marked read-only: {} of container {}",
                        m.destination, c.id
                    )));
                }
                let guard = if write {
                    Some(self.locks.lock(ns, &c.id).await)
                } else {
                    None
                };
                let root = Root::of_dir(std::path::Path::new(&m.source))
                    .map_err(|e| io_error("cannot open a mount's source of", &c, e))?;
                return Ok((
                    OpenRoot {
                        root,
                        _guard: guard,
                    },
                    inside,
                ));
            }
        }
        let open = self.container_root(ns, &c.id, write).await?;
        Ok((open, path.to_string()))
    }

    /// The root of a container for `export`: its snapshot, read-only.
    pub async fn export_root(&self, ns: &str, reference: &str) -> Result<Root> {
        let c = self.store.resolve(ns, reference)?;
        self.mount_snapshot(ns, &c, true).await
    }

    /// Containers.Changes.
    pub async fn container_changes(&self, ns: &str, reference: &str) -> Result<Vec<Change>> {
        let c = self.store.resolve(ns, reference)?;
        let mounts = self.snapshot_mounts(ns, &c).await?;
        let Some((upper, lowers)) = rootfs::overlay_dirs(&mounts) else {
            return Err(Error::FailedPrecondition(format!(
                "the changes of container {} cannot be listed: its snapshotter {} is not overlayfs",
                c.id, c.snapshotter
            )));
        };
        let mut ignored: Vec<String> = NETWORK_FILES.iter().map(|s| s.to_string()).collect();
        if let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(&c.spec) {
            for m in spec.mounts().iter().flatten() {
                ignored.push(m.destination().display().to_string());
            }
        }
        tokio::task::spawn_blocking(move || rootfs::changes::changes(&upper, &lowers, &ignored))
            .await
            .map_err(|e| Error::Spec(e.to_string()))?
            .map_err(|e| io_error("cannot read the changes of", &c, e))
    }

    /// Containers.ArchivePut: unpacks `tar` into folder `path` of the container.
    pub async fn archive_put(
        &self,
        ns: &str,
        reference: &str,
        path: &str,
        tar: impl Read + Send + 'static,
        options: extract::Options,
    ) -> Result<()> {
        let (open, path) = self.path_root(ns, reference, path, true).await?;
        let result = tokio::task::spawn_blocking(move || {
            let r = extract::extract(&open.root.fd, &path, tar, options);
            drop(open);
            r
        })
        .await
        .map_err(|e| Error::Spec(e.to_string()))?;
        result.map_err(|e| match e {
            extract::ExtractError::NoDestination(p) => Error::NotFound(format!(
                "Could not find the file {p} in container {reference}"
            )),
            extract::ExtractError::Io { .. } => Error::FailedPrecondition(e.to_string()),
            e => Error::InvalidArgument(e.to_string()),
        })
    }
}

/// The mount of a stopped container that holds `path` (the deepest folder mount whose
/// destination is a prefix of it, by components) and the path inside its source, with the
/// trailing `/` kept (it means "the folder's contents").
fn mount_holding<'m>(mounts: &'m [MountPoint], path: &str) -> Option<(&'m MountPoint, String)> {
    let clean = crate::volumes::clean(path);
    let parts: Vec<&str> = clean.split('/').filter(|p| !p.is_empty()).collect();
    let (m, depth) = mounts
        .iter()
        .filter(|m| std::path::Path::new(&m.source).is_dir())
        .filter_map(|m| {
            let dest: Vec<&str> = m.destination.split('/').filter(|p| !p.is_empty()).collect();
            (!dest.is_empty() && parts.starts_with(&dest)).then_some((m, dest.len()))
        })
        .max_by_key(|(_, depth)| *depth)?;
    let mut inside = format!("/{}", parts[depth..].join("/"));
    if path.ends_with('/') && !inside.ends_with('/') {
        inside.push('/');
    }
    Some((m, inside))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_under_a_mount_resolves_in_its_source() {
        let dir = std::env::temp_dir();
        let src = dir.display().to_string();
        let mount = |dest: &str| MountPoint {
            r#type: "volume".into(),
            name: "v".into(),
            source: src.clone(),
            destination: dest.into(),
            rw: true,
            propagation: String::new(),
        };
        let mounts = [mount("/data"), mount("/data/deep"), mount("/")];
        let inside =
            |p: &str| mount_holding(&mounts[..2], p).map(|(m, i)| (m.destination.clone(), i));
        assert_eq!(inside("/data"), Some(("/data".into(), "/".into())));
        assert_eq!(inside("/data/"), Some(("/data".into(), "/".into())));
        assert_eq!(inside("/data/a/b"), Some(("/data".into(), "/a/b".into())));
        assert_eq!(
            inside("/data/deep/x/"),
            Some(("/data/deep".into(), "/x/".into()))
        );
        assert_eq!(
            inside("/data/./deep/../a"),
            Some(("/data".into(), "/a".into()))
        );
        assert_eq!(inside("/database"), None);
        assert_eq!(inside("/etc/data"), None);
        // `..` cannot climb out of a mount: it is cleaned before the match.
        assert_eq!(inside("/data/../etc"), None);
        // A mount of `/` itself is not taken for every path.
        assert_eq!(mount_holding(&mounts[2..], "/etc").map(|(_, i)| i), None);
    }
}
