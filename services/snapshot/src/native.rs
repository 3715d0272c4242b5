//! The `native` snapshotter: plain folders and full copies. Slow and space-hungry, but works on
//! any filesystem, including where overlayfs cannot (overlay on overlay, some network fs).
//!
//! Layout: `<root>/native/snapshots/<id>/fs`. Prepare copies the parent's `fs` into the new
//! snapshot, preserving owners, modes, xattrs, hard links, symlinks, devices, fifos, sockets and
//! times. Mounts are a bind mount of the snapshot's `fs` (rw), or, for a view, a read-only bind
//! of the parent's `fs` (committed snapshots never change, so a view needs no copy).

use crate::apply::Whiteouts;
use crate::error::{Error, Result};
use crate::metadata::Kind;
use crate::snapshots::{bind_mount, Storage};
use berth_api::types::v1::Mount;
use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const NAME: &str = "native";

/// The copy-based snapshotter.
#[derive(Debug)]
pub struct Native {
    snapshots: PathBuf,
}

impl Native {
    /// Uses (and creates) `<root>/native/snapshots`.
    pub fn open(root: &Path) -> Result<Native> {
        let snapshots = root.join(NAME).join("snapshots");
        fs::create_dir_all(&snapshots)
            .map_err(|e| Error::io(format!("creating {}", snapshots.display()), e))?;
        Ok(Native { snapshots })
    }
}

impl Storage for Native {
    fn name(&self) -> &'static str {
        NAME
    }

    fn snapshots_dir(&self) -> &Path {
        &self.snapshots
    }

    fn check(&self, _kind: Kind, _parents: &[u64]) -> Result<()> {
        Ok(())
    }

    fn create(&self, id: u64, kind: Kind, parents: &[u64]) -> Result<()> {
        let dir = self.dir(id);
        fs::create_dir(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
        let fs_dir = self.fs(id);
        match (kind, parents.first()) {
            (Kind::Active, Some(&parent)) => copy_tree(&self.fs(parent), &fs_dir).map_err(|e| {
                Error::io(
                    format!("copying snapshot {parent} into {}", fs_dir.display()),
                    e,
                )
            }),
            _ => fs::create_dir(&fs_dir)
                .map_err(|e| Error::io(format!("creating {}", fs_dir.display()), e)),
        }
    }

    fn mounts(&self, id: u64, kind: Kind, parents: &[u64]) -> Vec<Mount> {
        match (kind, parents.first()) {
            (Kind::Active, _) => vec![bind_mount(&self.fs(id), false)],
            (_, Some(&parent)) => vec![bind_mount(&self.fs(parent), true)],
            (_, None) => vec![bind_mount(&self.fs(id), true)],
        }
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Delete
    }

    fn lowers(&self, _parents: &[u64]) -> Vec<PathBuf> {
        Vec::new()
    }

    fn holds_changes_only(&self) -> bool {
        false
    }
}

/// Copies the tree `src` to the new folder `dst` with all metadata. Never follows symlinks;
/// files hard-linked together in `src` are hard-linked together in `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let mut copier = Copier {
        links: HashMap::new(),
        dirs: Vec::new(),
    };
    let md = fs::symlink_metadata(src)?;
    if !md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a folder", src.display()),
        ));
    }
    fs::create_dir(dst)?;
    copier.contents(src, dst)?;
    copy_metadata(src, dst, &md)?;
    copier.dirs.push((dst.to_path_buf(), md));
    // Folder times last: creating their entries changed them.
    for (dir, md) in copier.dirs.iter().rev() {
        set_times(dir, md)?;
    }
    Ok(())
}

struct Copier {
    /// (dev, inode) of a multiply-linked source -> its first copy.
    links: HashMap<(u64, u64), PathBuf>,
    dirs: Vec<(PathBuf, fs::Metadata)>,
}

impl Copier {
    fn contents(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            let (from, to) = (entry.path(), dst.join(entry.file_name()));
            let md = fs::symlink_metadata(&from)?;
            let ft = md.file_type();
            if ft.is_dir() {
                fs::create_dir(&to)?;
                self.contents(&from, &to)?;
                copy_metadata(&from, &to, &md)?;
                self.dirs.push((to, md));
                continue;
            }
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    fs::hard_link(first, &to)?;
                    continue;
                }
                self.links.insert((md.dev(), md.ino()), to.clone());
            }
            if ft.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            } else if ft.is_file() {
                copy_file(&from, &to)?;
            } else {
                // Devices, fifos, sockets.
                nix::sys::stat::mknod(
                    &to,
                    nix::sys::stat::SFlag::from_bits_truncate(md.mode() & libc::S_IFMT),
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    md.rdev(),
                )?;
            }
            copy_metadata(&from, &to, &md)?;
            set_times(&to, &md)?;
        }
        Ok(())
    }
}

fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    let md = src.metadata()?;
    if md.blocks() * 512 >= md.len() {
        // std's copy uses copy_file_range, which shares extents where the filesystem can.
        io::copy(&mut src, &mut dst)?;
        return Ok(());
    }
    // Holes: copy_file_range would write them out as zeros (a sparse 1 TiB file from a layer
    // would fill the disk), so copy only the data ranges and keep the holes.
    let mut pos = 0;
    loop {
        let start = match lseek(&src, pos as i64, Whence::SeekData) {
            Ok(s) => s as u64,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(&src, start as i64, Whence::SeekHole)? as u64;
        src.seek(SeekFrom::Start(start))?;
        dst.seek(SeekFrom::Start(start))?;
        io::copy(&mut (&mut src).take(end - start), &mut dst)?;
        pos = end;
    }
    dst.set_len(md.len())
}

/// Owner, then mode (chown clears setuid), then xattrs (chown clears capabilities).
fn copy_metadata(from: &Path, to: &Path, md: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()))?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    let names = match xattr::list(from) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        if let Some(value) = xattr::get(from, &name)? {
            if let Err(e) = xattr::set(to, &name, &value) {
                if !matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                    return Err(e);
                }
                tracing::warn!(path = %to.display(), xattr = ?name, error = %e, "xattr not copied");
            }
        }
    }
    Ok(())
}

fn set_times(path: &Path, md: &fs::Metadata) -> io::Result<()> {
    let atime = filetime::FileTime::from_last_access_time(md);
    let mtime = filetime::FileTime::from_last_modification_time(md);
    filetime::set_symlink_file_times(path, atime, mtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_is_copied_sparse() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        let tib = 1u64 << 40;
        let f = fs::File::create(&src).unwrap();
        f.set_len(tib).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"head", 0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"tail", tib - 4).unwrap();
        copy_file(&src, &dst).unwrap();
        let md = fs::metadata(&dst).unwrap();
        assert_eq!(md.len(), tib);
        assert!(md.blocks() <= 64, "{} blocks", md.blocks());
        let mut buf = [0u8; 4];
        let out = fs::File::open(&dst).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&out, &mut buf, tib - 4).unwrap();
        assert_eq!(&buf, b"tail");
        std::os::unix::fs::FileExt::read_exact_at(&out, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"head");
    }

    #[test]
    fn copies_every_kind_of_entry_with_metadata() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/busybox"), b"elf").unwrap();
        fs::hard_link(src.join("bin/busybox"), src.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("busybox", src.join("bin/ls")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
        fs::set_permissions(src.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::lchown(src.join("bin/busybox"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(src.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
        xattr::set(src.join("bin/busybox"), "user.note", b"hi").unwrap();
        nix::sys::stat::mknod(
            &src.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        fs::set_permissions(src.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_file_mtime(src.join("bin"), old).unwrap();

        let dst = t.path().join("dst");
        copy_tree(&src, &dst).unwrap();

        let a = fs::metadata(dst.join("bin/busybox")).unwrap();
        let b = fs::metadata(dst.join("bin/sh")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_ne!(
            a.ino(),
            fs::metadata(src.join("bin/busybox")).unwrap().ino()
        );
        assert_eq!((a.uid(), a.gid(), a.mode() & 0o7777), (1000, 1000, 0o4755));
        assert_eq!(
            xattr::get(dst.join("bin/busybox"), "user.note").unwrap(),
            Some(b"hi".to_vec())
        );
        assert_eq!(
            fs::read_link(dst.join("bin/ls")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(dst.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        let null = fs::symlink_metadata(dst.join("null")).unwrap();
        assert_eq!(
            (null.rdev(), null.mode() & 0o7777),
            (nix::sys::stat::makedev(1, 3), 0o666)
        );
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &fs::symlink_metadata(dst.join("fifo")).unwrap().file_type()
        ));
        assert_eq!(
            fs::metadata(dst.join("bin")).unwrap().mtime(),
            1_000_000_000
        );
    }
}
