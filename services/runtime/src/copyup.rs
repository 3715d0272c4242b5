//! Docker's copy-up: a volume that is empty when a container is created with it is filled with
//! what the image has at the volume's destination, read from the snapshot's layer folders —
//! bottom layer first, overlay whiteouts and opaque folders honoured.
//!
//! # Nothing reaches the host
//!
//! The volume may already be mounted in a running container (a named volume shared by several),
//! which can swap any entry of it for a symlink while berthd copies. So every step works by
//! descriptor: the volume's folder is opened once (`O_DIRECTORY|O_NOFOLLOW`), each child is
//! made with `mkdirat`/`openat(O_CREAT|O_EXCL|O_NOFOLLOW)`/`symlinkat` from its parent's
//! descriptor and changed through its own (`fchmod`, `fchown`), and a folder is entered with
//! `openat(O_DIRECTORY|O_NOFOLLOW)`. A symlink swapped in anywhere makes the copy fail (the
//! volume keeps what was copied so far); it is never followed. The layers are berthd's own
//! folders, walked the same way so that a symlink in a layer is never followed out of it.

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The folders that make a rootfs, bottom layer first: an overlay's lower folders (listed top
/// first in `lowerdir`) then its upper folder; a bind mount's source.
pub fn layer_dirs(mounts: &[crate::bundle::RootfsMount]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in mounts {
        if m.typ == "overlay" {
            let mut upper = None;
            for o in &m.options {
                if let Some(l) = o.strip_prefix("lowerdir=") {
                    out.extend(l.split(':').rev().map(PathBuf::from));
                } else if let Some(u) = o.strip_prefix("upperdir=") {
                    upper = Some(PathBuf::from(u));
                }
            }
            out.extend(upper);
        } else if m.typ == "bind" || berth_mount::parse_options(&m.options).is_bind() {
            out.push(PathBuf::from(&m.source));
        }
    }
    out
}

/// Fills `target` (a new volume's folder) with the content of the rootfs at `destination`
/// (an absolute path already cleaned of `..`), layer by layer, when `target` is empty.
pub fn copy_up_if_empty(layers: &[PathBuf], destination: &str, target: &Path) -> io::Result<()> {
    let dst = open_dir_path(target)?;
    if !children(&dst)?.is_empty() {
        return Ok(());
    }
    let rel: Vec<&OsStr> = Path::new(destination)
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            Component::RootDir | Component::CurDir => Ok(OsStr::new("")),
            Component::ParentDir | Component::Prefix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("volume destination {destination:?} is not a clean absolute path"),
            )),
        })
        .filter(|c| !c.as_ref().is_ok_and(|n| n.is_empty()))
        .collect::<io::Result<_>>()?;
    let mut copied: Option<FileStat> = None;
    for layer in layers {
        match walk_layer(layer, &rel)? {
            Walk::Absent => {}
            Walk::Hidden => {
                // Deleted (or replaced by a non-folder) in this layer.
                clear(&dst)?;
                copied = None;
            }
            Walk::Dir(src) => {
                if is_opaque(&src) {
                    clear(&dst)?;
                }
                merge(&src, &dst)?;
                copied = Some(fstat(&src)?);
            }
        }
    }
    if let Some(st) = copied {
        fchmod(&dst, mode_of(&st))?;
        let _ = fchown(
            &dst,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        );
    }
    Ok(())
}

/// What a layer has at the volume's path.
enum Walk {
    /// Nothing: the layers below decide.
    Absent,
    /// A whiteout, a file or a symlink on the way: the path does not exist in this layer's view.
    Hidden,
    /// The folder, opened for reading.
    Dir(OwnedFd),
}

fn walk_layer(layer: &Path, rel: &[&OsStr]) -> io::Result<Walk> {
    let mut dir = match open_dir_path(layer) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Walk::Absent),
        Err(e) => return Err(e),
    };
    for name in rel {
        let Some(st) = stat_at(&dir, name)? else {
            return Ok(Walk::Absent);
        };
        if !is(&st, SFlag::S_IFDIR) {
            return Ok(Walk::Hidden);
        }
        dir = open_dir_at(&dir, name)?;
    }
    Ok(Walk::Dir(dir))
}

/// Copies one layer's folder `src` onto `dst`, applying its whiteouts and opaque folders.
fn merge(src: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    for name in children(src)? {
        let Some(st) = stat_at(src, &name)? else {
            continue;
        };
        if is(&st, SFlag::S_IFCHR) && st.st_rdev == 0 {
            remove_at(dst, &name)?;
        } else if is(&st, SFlag::S_IFDIR) {
            let s = open_dir_at(src, &name)?;
            let existing = stat_at(dst, &name)?;
            if !existing.is_some_and(|e| is(&e, SFlag::S_IFDIR)) {
                remove_at(dst, &name)?;
                mkdirat(dst, name.as_os_str(), Mode::from_bits_truncate(0o700))?;
            }
            let d = open_dir_at(dst, &name)?;
            if existing.is_some() && is_opaque(&s) {
                clear(&d)?;
            }
            merge(&s, &d)?;
            own(&d, &st)?;
        } else if is(&st, SFlag::S_IFREG) {
            remove_at(dst, &name)?;
            let mut from = File::from(openat(
                src,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?);
            let mut to = File::from(openat(
                dst,
                name.as_os_str(),
                NEW_FILE,
                Mode::from_bits_truncate(0o600),
            )?);
            io::copy(&mut from, &mut to)?;
            own(to.as_fd(), &st)?;
        } else if is(&st, SFlag::S_IFLNK) {
            remove_at(dst, &name)?;
            let target = nix::fcntl::readlinkat(src, name.as_os_str())?;
            symlinkat(target.as_os_str(), dst, name.as_os_str())?;
            let _ = fchownat(
                dst,
                name.as_os_str(),
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
        // Device nodes, fifos and sockets are not copied.
    }
    Ok(())
}

/// Gives an entry made by the copy its owner and mode from the layer (owner first: chown
/// clears set-id bits).
fn own(fd: impl AsFd, st: &FileStat) -> io::Result<()> {
    let _ = fchown(
        fd.as_fd(),
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    );
    fchmod(fd.as_fd(), mode_of(st))?;
    Ok(())
}

fn mode_of(st: &FileStat) -> Mode {
    Mode::from_bits_truncate(st.st_mode & 0o7777)
}

pub(crate) fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

pub(crate) fn stat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A file made by the copy: never an existing one, never through a symlink.
pub(crate) const NEW_FILE: OFlag = OFlag::O_WRONLY
    .union(OFlag::O_CREAT)
    .union(OFlag::O_EXCL)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

pub(crate) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(path, DIR_FLAGS, Mode::empty())?)
}

/// Opens the folder `name` of `dir`; a symlink there is an error (`ELOOP`/`ENOTDIR`), never
/// followed.
pub(crate) fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

pub(crate) fn is_opaque(dir: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4];
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the given length.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// The names in a folder (its descriptor is duplicated, so `dir` stays usable).
pub(crate) fn children(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    // The duplicate shares the offset: start from the top whoever read it before.
    nix::unistd::lseek(dir, 0, nix::unistd::Whence::SeekSet)?;
    let mut d = nix::dir::Dir::from_fd(dir.try_clone()?)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(&n).to_os_string());
        }
    }
    Ok(out)
}

fn clear(dir: &OwnedFd) -> io::Result<()> {
    for name in children(dir)? {
        remove_at(dir, &name)?;
    }
    Ok(())
}

/// Removes `name` in `dir`, recursively, never following symlinks. Missing is fine.
pub(crate) fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if is(&st, SFlag::S_IFDIR) {
        clear(&open_dir_at(dir, name)?)?;
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts_give_their_source() {
        let mount = |typ: &str, source: &str, options: &[&str]| crate::bundle::RootfsMount {
            typ: typ.into(),
            source: source.into(),
            options: options.iter().map(|o| o.to_string()).collect(),
        };
        let mounts = [
            mount("bind", "/a", &[]),
            mount("none", "/b", &["rbind", "ro"]),
            mount("none", "/c", &["bind"]),
            mount("tmpfs", "tmpfs", &["nosuid", "mode=755"]),
        ];
        assert_eq!(
            layer_dirs(&mounts),
            [PathBuf::from("/a"), "/b".into(), "/c".into()]
        );
    }

    #[test]
    fn copy_up_merges_layers() {
        let dir = tempfile::tempdir().unwrap();
        let (l1, l2, up) = (
            dir.path().join("l1"),
            dir.path().join("l2"),
            dir.path().join("up"),
        );
        std::fs::create_dir_all(l1.join("data/sub")).unwrap();
        std::fs::write(l1.join("data/a"), "a1").unwrap();
        std::fs::write(l1.join("data/gone"), "x").unwrap();
        std::fs::write(l1.join("data/sub/s"), "s").unwrap();
        std::fs::create_dir_all(l2.join("data")).unwrap();
        std::fs::write(l2.join("data/a"), "a2").unwrap();
        std::os::unix::fs::symlink("a", l2.join("data/link")).unwrap();
        // A whiteout (char 0/0) deletes `gone` in the upper layer.
        nix::sys::stat::mknod(
            &l2.join("data/gone"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o000),
            0,
        )
        .ok();
        std::fs::create_dir_all(&up).unwrap();
        let mounts = vec![crate::bundle::RootfsMount {
            typ: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}:{}", l2.display(), l1.display()),
                format!("upperdir={}", up.display()),
            ],
        }];
        let layers = layer_dirs(&mounts);
        assert_eq!(layers, [l1.clone(), l2.clone(), up.clone()]);
        let target = dir.path().join("vol");
        std::fs::create_dir(&target).unwrap();
        copy_up_if_empty(&layers, "/data", &target).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "a2");
        assert_eq!(std::fs::read_to_string(target.join("sub/s")).unwrap(), "s");
        assert_eq!(
            std::fs::read_link(target.join("link")).unwrap(),
            Path::new("a")
        );
        if std::fs::symlink_metadata(l2.join("data/gone")).is_ok() {
            assert!(!target.join("gone").exists());
        }
        // A volume that has content keeps it.
        std::fs::write(target.join("a"), "mine").unwrap();
        copy_up_if_empty(&layers, "/data", &target).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "mine");
        // A path the image does not have leaves it empty.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        copy_up_if_empty(&layers, "/nothing/here", &empty).unwrap();
        assert!(std::fs::read_dir(&empty).unwrap().next().is_none());
        // A destination with `..` is refused, not walked.
        assert!(copy_up_if_empty(&layers, "/../../etc", &empty).is_err());
    }

    #[test]
    fn symlinks_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host").unwrap();
        // A layer whose path crosses a symlink out of it: nothing copied from there.
        let l1 = dir.path().join("l1");
        std::fs::create_dir_all(&l1).unwrap();
        std::os::unix::fs::symlink(&outside, l1.join("data")).unwrap();
        let target = dir.path().join("vol");
        std::fs::create_dir(&target).unwrap();
        copy_up_if_empty(std::slice::from_ref(&l1), "/data", &target).unwrap();
        assert!(children(&open_dir_path(&target).unwrap())
            .unwrap()
            .is_empty());
        // A volume folder that is itself a symlink is refused.
        let link = dir.path().join("vol-link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let l2 = dir.path().join("l2");
        std::fs::create_dir_all(l2.join("data")).unwrap();
        std::fs::write(l2.join("data/secret"), "image").unwrap();
        assert!(copy_up_if_empty(std::slice::from_ref(&l2), "/data", &link).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "host"
        );
        // An entry of the volume swapped for a symlink is replaced, not written through.
        let vol = dir.path().join("vol2");
        std::fs::create_dir(&vol).unwrap();
        let dst = open_dir_path(&vol).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), vol.join("secret")).unwrap();
        merge(&open_dir_path(&l2.join("data")).unwrap(), &dst).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "host"
        );
        assert_eq!(
            std::fs::read_to_string(vol.join("secret")).unwrap(),
            "image"
        );
    }
}
