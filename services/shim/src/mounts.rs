//! Mounting inside the container's rootfs: path resolution that never leaves it, `mount(2)`
//! with readable errors, bind mounts. Options are parsed by [`berth_mount::options`].
//!
//! # Mount points by descriptor
//!
//! A mount point inside the rootfs is a [`Place`]: the rootfs's descriptor and a path cleaned
//! of `..`. Every operation on it (creating it, mounting on it, remounting it) resolves the path
//! again with `openat2(RESOLVE_IN_ROOT)` — symlinks in the image are followed as if the rootfs
//! were `/`, never out of it — and acts on `/proc/self/fd/N` of the descriptor it got. So an
//! image or a volume shared with a running container cannot redirect a mount to the host by
//! swapping a symlink in between the check and the mount (the CVE-2021-30465 class). Folders
//! that are missing are made one component at a time with `mkdirat` from the descriptor of the
//! folder above.

use crate::error::{Context, Error, Result};
use berth_mount::MountOptions;
use nix::errno::Errno;
use nix::fcntl::{OFlag, ResolveFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// Joins `unsafe_path` onto `root`, resolving symlinks as if `root` were `/`, so the result
/// never points outside `root` (like filepath-securejoin). Missing components are kept as is.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut pending: VecDeque<OsString> = unsafe_path
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut current = PathBuf::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == "/" || c == "." || c.is_empty() {
            continue;
        }
        if c == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&c);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::io(
                        format!("resolve {} in {}", unsafe_path.display(), root.display()),
                        std::io::Error::from_raw_os_error(libc::ELOOP),
                    ));
                }
                let target =
                    std::fs::read_link(&full).ctx(|| format!("readlink {}", full.display()))?;
                if target.is_absolute() {
                    current = PathBuf::new();
                }
                for comp in target.components().rev() {
                    pending.push_front(comp.as_os_str().to_owned());
                }
            }
            _ => current = candidate,
        }
    }
    Ok(root.join(current))
}

/// A path inside the container's rootfs, cleaned lexically from its `/` (`/../../etc` is
/// `/etc`); `None` for the root itself.
pub fn clean_in_root(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// What to make at a mount point that is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// A mount point inside the rootfs, resolved by the kernel inside it at each use (see the
/// module's overview), or a plain path (the rootfs itself, paths after `pivot_root`).
#[derive(Debug)]
pub struct Place<'a> {
    root: Option<BorrowedFd<'a>>,
    path: PathBuf,
}

impl<'a> Place<'a> {
    /// `path` inside the rootfs open as `root`.
    pub fn in_root(root: BorrowedFd<'a>, path: &Path) -> Place<'a> {
        Place {
            root: Some(root),
            path: clean_in_root(path),
        }
    }

    /// A path used as it is.
    pub fn host(path: &Path) -> Place<'static> {
        Place {
            root: None,
            path: path.to_path_buf(),
        }
    }

    /// The child `name` of this place.
    pub fn join(&self, name: impl AsRef<Path>) -> Place<'a> {
        Place {
            root: self.root,
            path: self.path.join(name),
        }
    }

    /// The folder this place is in.
    pub fn parent(&self) -> Place<'a> {
        Place {
            root: self.root,
            path: self
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// The last component of the path.
    pub fn file_name(&self) -> &std::ffi::OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// How errors name this place.
    pub fn display(&self) -> String {
        match self.root {
            Some(_) => format!("/{}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// Runs `f` with a path that names this place now: `/proc/self/fd/N` of a descriptor that
    /// the kernel resolved inside the root.
    pub fn with<T>(&self, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let Some(root) = self.root else {
            return f(&self.path);
        };
        let fd = open_in_root(root, &self.path, OFlag::empty())
            .ctx(|| format!("open {} in the rootfs", self.display()))?;
        f(&proc_fd(&fd))
    }

    /// Whether something is there (symlinks inside the root followed).
    pub fn exists(&self) -> bool {
        match self.root {
            Some(root) => open_in_root(root, &self.path, OFlag::empty()).is_ok(),
            None => self.path.exists(),
        }
    }

    /// Makes the place (and the folders above it) when missing, as a folder or an empty file.
    /// Each missing component is made with `mkdirat` from the descriptor of the folder above,
    /// which the kernel resolved inside the root; a dangling symlink on the way is followed
    /// inside the root and its target made, as `mkdir -p` does.
    pub fn create(&self, kind: Kind) -> Result<()> {
        let Some(root) = self.root else {
            return create_host(&self.path, kind);
        };
        let what = || format!("create {} in the rootfs", self.display());
        let mut todo: VecDeque<OsString> = self.path.iter().map(OsString::from).collect();
        let mut cur = PathBuf::new();
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                cur.pop();
                continue;
            }
            let candidate = cur.join(&name);
            match open_in_root(root, &candidate, OFlag::empty()) {
                Ok(_) => {
                    cur = candidate;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(Error::io(what(), e.into())),
            }
            let dir =
                reopen_dir(&open_in_root(root, &cur, OFlag::O_DIRECTORY).ctx(what)?).ctx(what)?;
            if let Ok(target) = nix::fcntl::readlinkat(&dir, name.as_os_str()) {
                links += 1;
                if links > 40 {
                    return Err(Error::io(what(), Errno::ELOOP.into()));
                }
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for c in target.iter().rev() {
                    if c != "/" && c != "." {
                        todo.push_front(c.to_os_string());
                    }
                }
                continue;
            }
            let made = if todo.is_empty() && kind == Kind::File {
                let new = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
                nix::fcntl::openat(
                    &dir,
                    name.as_os_str(),
                    new | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .map(drop)
            } else {
                nix::sys::stat::mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o755))
            };
            match made {
                // Made meanwhile: the next open resolves whatever is there, inside the root.
                Ok(()) | Err(Errno::EEXIST) => cur = candidate,
                Err(e) => return Err(Error::io(what(), e.into())),
            }
        }
        Ok(())
    }
}

/// `/proc/self/fd/N`.
fn proc_fd(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// An `O_PATH` descriptor of a folder, opened for reading (`mkdirat` takes either, `openat`
/// of a new file needs a real one).
fn reopen_dir(fd: &OwnedFd) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `path` (relative, cleaned) with the root as `/`: symlinks are followed inside it, `..`
/// stops at it, `/proc` magic links are refused. Kernels before 5.6 lack `openat2`: there the
/// path is resolved by [`secure_join`] and opened without following its last component.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_PATH | OFlag::O_CLOEXEC;
    let rel = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = nix::fcntl::OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // openat2 with RESOLVE_IN_ROOT fails with EAGAIN when a rename or a mount happened
    // anywhere on the system during the lookup (openat2(2)): another container starting is
    // enough. The kernel asks the caller to retry; a bounded number of times, since the
    // lookup is short and such races are rare.
    let mut attempts = 0;
    let opened = loop {
        match nix::fcntl::openat2(root, rel, how) {
            Err(Errno::EAGAIN) if attempts < 64 => attempts += 1,
            other => break other,
        }
    };
    match opened {
        Err(Errno::ENOSYS) => {
            let base = proc_fd_borrowed(root);
            let joined = secure_join(&base, rel).map_err(|_| Errno::ELOOP)?;
            nix::fcntl::open(&joined, flags | OFlag::O_NOFOLLOW, Mode::empty())
        }
        other => other,
    }
}

fn proc_fd_borrowed(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn create_host(path: &Path, kind: Kind) -> Result<()> {
    match kind {
        Kind::Dir => std::fs::create_dir_all(path).ctx(|| format!("create {}", path.display())),
        Kind::File => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
            }
            if std::fs::symlink_metadata(path).is_err() {
                std::fs::File::create(path).ctx(|| format!("create {}", path.display()))?;
            }
            Ok(())
        }
    }
}

/// `mount(2)` with a readable error.
pub fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).ctx(|| {
        format!(
            "mount {} on {} (type {}, flags {:?}, data {:?})",
            source
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| "none".into()),
            target.display(),
            fstype.unwrap_or("none"),
            flags,
            data.unwrap_or("")
        )
    })
}

/// Flags of an existing mount that a bind remount must keep (nosuid, nodev, noexec, …).
pub fn locked_flags(path: &Path) -> MsFlags {
    let mut out = MsFlags::empty();
    if let Ok(st) = nix::sys::statvfs::statvfs(path) {
        use nix::sys::statvfs::FsFlags;
        let f = st.flags();
        if f.contains(FsFlags::ST_NOSUID) {
            out |= MsFlags::MS_NOSUID;
        }
        if f.contains(FsFlags::ST_NODEV) {
            out |= MsFlags::MS_NODEV;
        }
        if f.contains(FsFlags::ST_NOEXEC) {
            out |= MsFlags::MS_NOEXEC;
        }
        if f.contains(FsFlags::ST_RDONLY) {
            out |= MsFlags::MS_RDONLY;
        }
        if f.contains(FsFlags::ST_NOATIME) {
            out |= MsFlags::MS_NOATIME;
        }
        if f.contains(FsFlags::ST_NODIRATIME) {
            out |= MsFlags::MS_NODIRATIME;
        }
        if f.contains(FsFlags::ST_RELATIME) {
            out |= MsFlags::MS_RELATIME;
        }
    }
    out
}

/// Bind-mounts `source` on `target` and applies the non-bind flags with a remount. A read-only
/// `rbind` is read-only all the way down: the mounts under it too (`mount_setattr` with
/// `AT_RECURSIVE`, kernel 5.12; older kernels make only the top one read-only).
pub fn bind_mount(source: &Path, target: &Place<'_>, opts: &MountOptions) -> Result<()> {
    let bind_flags = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
    target.with(|t| do_mount(Some(source), t, None, bind_flags | MsFlags::MS_BIND, None))?;
    finish_bind(target, opts)
}

/// A copy of the mount tree at `source` (recursive with `MS_REC` in `opts`), detached, made
/// with `open_tree(2)`: unlike a bind mount it stays in the peer group of a shared source
/// after the mount namespace turned slave, so [`attach_tree`] can later place a mount that
/// propagates both ways with the host.
pub fn detached_copy(source: &Path, opts: &MountOptions) -> Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let recursive = if opts.flags.contains(MsFlags::MS_REC) {
        AT_RECURSIVE
    } else {
        0
    };
    let c = std::ffi::CString::new(source.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Invalid(format!("path {} contains NUL", source.display())))?;
    // SAFETY: a NUL-terminated path alive for the call; the kernel answers a new descriptor
    // (or -1), which is owned by nothing else.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | recursive,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("copy the mount tree at {}", source.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just returned by open_tree and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches a tree from [`detached_copy`] on `target` (`move_mount(2)`), then applies the
/// rest of `opts` as [`bind_mount`] does.
pub fn attach_tree(tree: &OwnedFd, target: &Place<'_>, opts: &MountOptions) -> Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_SYMLINKS: libc::c_uint = 0x10;
    target.with(|t| {
        let c = std::ffi::CString::new(t.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Invalid(format!("path {} contains NUL", t.display())))?;
        // SAFETY: the tree's descriptor and two NUL-terminated strings, all alive for the
        // call; the kernel only reads them. T_SYMLINKS follows the /proc/self/fd link.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                c.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_SYMLINKS,
            )
        };
        if r != 0 {
            return Err(Error::io(
                format!("attach a mount tree on {}", target.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    })?;
    finish_bind(target, opts)
}

/// The flags a bind mount cannot take at once (read-only, nosuid, …: a remount) and the
/// propagation changes of `opts`, on the bind at `target`.
fn finish_bind(target: &Place<'_>, opts: &MountOptions) -> Result<()> {
    let bind_flags = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
    let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        target.with(|t| {
            let keep = locked_flags(t) - MsFlags::MS_RDONLY;
            do_mount(
                None,
                t,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | keep,
                None,
            )
        })?;
        if extra.contains(MsFlags::MS_RDONLY) && bind_flags.contains(MsFlags::MS_REC) {
            target.with(|t| set_recursive_attr(t, MOUNT_ATTR_RDONLY))?;
        }
    }
    for p in &opts.propagation {
        target.with(|t| do_mount(None, t, None, *p, None))?;
    }
    Ok(())
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `attr` on the mount at `path` and every mount below it. A kernel without
/// `mount_setattr` (before 5.12) is left as it is.
fn set_recursive_attr(path: &Path, attr: u64) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Invalid(format!("path {} contains NUL", path.display())))?;
    let mut a = MountAttr {
        attr_set: attr,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a NUL-terminated path and a mount_attr of the size passed, both alive for the
    // call; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &mut a as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno::ENOSYS => Ok(()),
        e => Err(Error::io(
            format!("make the mounts under {} read-only", path.display()),
            e.into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn secure_join_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/usr/lib", root.join("lib")).unwrap();
        symlink("../../../../etc", root.join("usr/evil")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/lib/x")).unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            secure_join(root, Path::new("/usr/evil/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../a")).unwrap(),
            root.join("a")
        );
        assert!(secure_join(root, Path::new("/loop")).is_err());
    }
}
