//! Reading a container's files: a path's [`PathStat`] (Docker's
//! `X-Docker-Container-Path-Stat`) and tars of trees ([`write_tree`], [`write_root`]).
//!
//! The path a client names is resolved inside the root ([`open_in_root`]); below it, a tree
//! is walked by descriptor — `fstatat(AT_SYMLINK_NOFOLLOW)`, then `openat(O_NOFOLLOW)` — so a
//! symlink is stored as a symlink and never followed, whatever a running container swaps in
//! meanwhile.

use crate::copyup::{children, is, open_dir_at, stat_at};
use berth_shim::mounts::open_in_root;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Go's `os.FileMode` type bits, which Docker's path stat carries.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHAR: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;

/// A path's stat, as Docker shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits.
    pub mode: u32,
    pub mtime: (i64, i64),
    /// A symlink's target, absolute in the container.
    pub link_target: String,
}

/// Go's `os.FileMode` of a `st_mode`.
pub fn go_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    for (bit, go) in [
        (libc::S_ISUID, GO_SETUID),
        (libc::S_ISGID, GO_SETGID),
        (libc::S_ISVTX, GO_STICKY),
    ] {
        if st_mode & bit != 0 {
            m |= go;
        }
    }
    m | match SFlag::from_bits_truncate(st_mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => GO_DIR,
        SFlag::S_IFLNK => GO_SYMLINK,
        SFlag::S_IFBLK => GO_DEVICE,
        SFlag::S_IFCHR => GO_DEVICE | GO_CHAR,
        SFlag::S_IFIFO => GO_PIPE,
        SFlag::S_IFSOCK => GO_SOCKET,
        _ => 0,
    }
}

/// The base name Docker gives a path (`/` for the root).
fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit('/').next() {
        Some("") | None => "/".into(),
        Some(b) => b.to_string(),
    }
}

/// The folder that holds `path` (inside the root) and the name in it; `None` name for `/`.
fn split(path: &str) -> (PathBuf, Option<String>) {
    let rel = super::relative(path);
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), Some(n.to_string_lossy().into_owned())),
        _ => (PathBuf::new(), None),
    }
}

/// An open path: the folder that holds it and its name there (`.` for the root itself).
#[derive(Debug)]
pub struct Located {
    pub parent: OwnedFd,
    pub name: std::ffi::OsString,
    pub stat: FileStat,
}

/// Finds `path` in `root`: its parents resolved inside the root, its last component not
/// followed (a symlink is itself), unless the path ends in `/` or `/.`. `NotFound` when
/// missing.
pub fn locate(root: &OwnedFd, path: &str) -> io::Result<Located> {
    let follow = path.ends_with('/') || path.ends_with("/.");
    let (parent_rel, name) = split(path);
    let (parent, name) = match name {
        Some(n) if !follow => (
            open_in_root(root.as_fd(), &parent_rel, OFlag::O_DIRECTORY)?,
            std::ffi::OsString::from(n),
        ),
        _ => (
            open_in_root(root.as_fd(), &super::relative(path), OFlag::empty())?,
            ".".into(),
        ),
    };
    let stat = fstatat(
        &parent,
        name.as_os_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .or_else(|e| match e {
        // An O_PATH descriptor of a non-folder: stat it through itself.
        nix::errno::Errno::ENOTDIR => nix::sys::stat::fstat(&parent),
        e => Err(e),
    })?;
    Ok(Located { parent, name, stat })
}

/// The stat of `path` in `root`.
pub fn stat(root: &OwnedFd, path: &str) -> io::Result<PathStat> {
    let at = locate(root, path)?;
    let link_target = if is(&at.stat, SFlag::S_IFLNK) {
        let target = readlinkat(&at.parent, at.name.as_os_str())?;
        let target = target.to_string_lossy();
        if target.starts_with('/') {
            target.into_owned()
        } else {
            let (parent, _) = split(path);
            crate::volumes::clean(&format!("/{}/{target}", parent.display()))
        }
    } else {
        String::new()
    };
    Ok(PathStat {
        name: base_name(path),
        size: at.stat.st_size,
        mode: go_mode(at.stat.st_mode),
        mtime: (at.stat.st_mtime, at.stat.st_mtime_nsec),
        link_target,
    })
}

/// Writes the tree at `path` of `root` as a tar whose entries start with `name`.
pub fn write_tree<W: Write>(root: &OwnedFd, path: &str, name: &str, out: W) -> io::Result<W> {
    let at = locate(root, path)?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    if at.name == "." {
        // The path itself is open (a folder reached through a trailing `/`).
        let dir = openat(&at.parent, ".", DIR_READ, Mode::empty())?;
        append_dir(&mut tar, &dir, &at.stat, Path::new(name))?;
    } else {
        append(&mut tar, &at.parent, &at.name, Path::new(name))?;
    }
    tar.into_inner()
}

/// Writes the whole tree of `root` as a tar, entries named from the root (`bin/busybox`).
pub fn write_root<W: Write>(root: &OwnedFd, out: W) -> io::Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let dir = openat(root, ".", DIR_READ, Mode::empty())?;
    append_children(&mut tar, &dir, Path::new(""))?;
    tar.into_inner()
}

const DIR_READ: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn header_of(st: &FileStat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid.into());
    h.set_gid(st.st_gid.into());
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// Appends `name` of folder `dir` as `as_name`, and what it holds when it is a folder.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &OsStr,
    as_name: &Path,
) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(()); // gone meanwhile
    };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    match kind {
        SFlag::S_IFDIR => append_dir(tar, &open_dir_at(dir, name)?, &st, as_name),
        SFlag::S_IFREG => {
            let fd = openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let mut h = header_of(&st, tar::EntryType::Regular);
            h.set_size(st.st_size as u64);
            let file = File::from(fd);
            tar.append_data(&mut h, as_name, io::Read::take(file, st.st_size as u64))
        }
        SFlag::S_IFLNK => {
            let target = readlinkat(dir, name)?;
            let mut h = header_of(&st, tar::EntryType::Symlink);
            tar.append_link(&mut h, as_name, target)
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK => {
            let t = if kind == SFlag::S_IFCHR {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut h = header_of(&st, t);
            h.set_device_major(nix::sys::stat::major(st.st_rdev) as u32)?;
            h.set_device_minor(nix::sys::stat::minor(st.st_rdev) as u32)?;
            tar.append_data(&mut h, as_name, io::empty())
        }
        SFlag::S_IFIFO => {
            let mut h = header_of(&st, tar::EntryType::Fifo);
            tar.append_data(&mut h, as_name, io::empty())
        }
        _ => Ok(()), // sockets are not archived
    }
}

fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &OwnedFd,
    st: &FileStat,
    as_name: &Path,
) -> io::Result<()> {
    let mut h = header_of(st, tar::EntryType::Directory);
    tar.append_data(&mut h, as_name, io::empty())?;
    append_children(tar, dir, as_name)
}

fn append_children<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &OwnedFd,
    as_name: &Path,
) -> io::Result<()> {
    let mut names = children(dir)?;
    names.sort();
    for n in names {
        append(
            tar,
            dir,
            &n,
            &as_name.join(Path::new(OsStr::from_bytes(n.as_bytes()))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn open_root(p: &Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap()
    }

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        tar::Archive::new(tar_bytes)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn go_modes() {
        assert_eq!(go_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(go_mode(libc::S_IFREG | 0o4755), (1 << 23) | 0o755);
        assert_eq!(
            go_mode(libc::S_IFCHR | 0o666),
            (1 << 26) | (1 << 21) | 0o666
        );
        assert_eq!(
            go_mode(libc::S_IFDIR | 0o1777),
            (1 << 31) | (1 << 20) | 0o777
        );
    }

    #[test]
    fn hostile_symlinks_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "container").unwrap();
        // A container's symlinks to `/` and out with `..`: resolved in the container.
        std::os::unix::fs::symlink("/", root.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("up")).unwrap();
        let fd = open_root(&root);
        for p in ["/evil/etc/passwd", "/up/passwd", "/../../etc/passwd"] {
            let tar = write_tree(&fd, p, "passwd", Vec::new()).unwrap();
            let mut a = tar::Archive::new(tar.as_slice());
            let mut e = a.entries().unwrap().next().unwrap().unwrap();
            let mut s = String::new();
            io::Read::read_to_string(&mut e, &mut s).unwrap();
            assert_eq!(s, "container", "{p}");
        }
        let st = stat(&fd, "/evil").unwrap();
        assert_eq!((st.name.as_str(), st.link_target.as_str()), ("evil", "/"));
        assert_eq!(st.mode & GO_SYMLINK, GO_SYMLINK);
        let st = stat(&fd, "/up").unwrap();
        assert_eq!(st.link_target, "/etc", "../ stops at the root");
        // A symlink in a tree is archived as one, not followed.
        let tar = write_tree(&fd, "/", "root", Vec::new()).unwrap();
        let got = names(&tar);
        assert!(got.contains(&"root/evil".to_string()), "{got:?}");
        assert!(!got.iter().any(|n| n.starts_with("root/evil/")), "{got:?}");
    }

    #[test]
    fn stat_of_a_folder_and_a_missing_path() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        let fd = open_root(t.path());
        let st = stat(&fd, "/etc").unwrap();
        assert_eq!(st.name, "etc");
        assert_eq!(st.mode & GO_DIR, GO_DIR);
        assert_eq!(stat(&fd, "/").unwrap().name, "/");
        assert_eq!(stat(&fd, "/etc/.").unwrap().name, ".");
        let e = stat(&fd, "/nope/x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let root = write_root(&fd, Vec::new()).unwrap();
        assert_eq!(names(&root), ["etc"]);
    }
}
