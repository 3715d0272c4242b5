//! Diff: the changes of a snapshot over its parent, written as an uncompressed OCI layer tar
//! that [`crate::apply`] (or any OCI tool) can unpack onto the parent.
//!
//! Where the changes come from ([`Changes`]):
//! - **overlayfs** ([`Changes::Upper`]): the snapshot's own folder — a container's upper dir,
//!   or a committed layer — holds exactly its changes. Every entry in it is written; overlay's
//!   whiteouts (a 0:0 character device, or a file marked `trusted.overlay.whiteout` /
//!   `user.overlay.whiteout`) become `.wh.NAME`, and an opaque folder
//!   (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) is written followed by
//!   `.wh..wh..opq`. A renamed-folder redirect or a metacopy file (data left below) cannot be
//!   told from the upper dir alone and fails the diff; berth's mounts turn both features off.
//! - **native** ([`Changes::Copy`]): the snapshot is a full copy; it is walked side by side
//!   with its parent's copy. An entry is written when it is new, or differs in type, mode,
//!   owner, size, mtime, link count, device number, link target or xattrs, or — when all of
//!   those are equal — in content (compared byte by byte, so a rewrite that kept size and
//!   mtime is still found). A name only the parent has becomes a whiteout.
//!
//! In both, the folders above a written entry are written first, with their metadata, and the
//! root itself is left out unless its own metadata changed (native). Entries come in a fixed
//! order (depth first, names by bytes), whiteouts carry the time of their folder (the epoch at
//! the root, whose own time a layer need not carry: the parent's and an applied copy's differ), and
//! atime/ctime and user/group names are left out, so the same change gives the same tar and
//! the same diff_id. An inode met twice is written once, then as hard links to that name.
//! Times are whole seconds, as Docker writes them. Sockets cannot be in a tar and are
//! skipped, as are names that start with `.wh.` (they would read as whiteouts).
//!
//! The tar is ustar, with PAX records where ustar falls short: names and link targets that do
//! not fit, sizes from 8 GiB and ids from 2^21 (also set in the header in GNU's base-256
//! form, for readers without PAX), and xattrs (`SCHILY.xattr.NAME`). `trusted.overlay.*`
//! xattrs (overlay's own bookkeeping) and `security.selinux` (a host label) are not written.
//!
//! # Safety and live snapshots
//!
//! Nothing is mounted. The walk goes from folder descriptor to folder descriptor with
//! `*at` calls that never follow a symlink (`O_NOFOLLOW`), so a container that swaps a folder
//! for a link to `/` while the diff runs cannot make it read the host. Entries that vanish
//! while being read are skipped; a file that shrinks is padded with zeros and one that grows
//! is cut at the size its header announced, so the tar is always well formed. (A container
//! that keeps writing gets a tar of some moment during the walk, as with any live copy.)

use crate::apply::{children, is, is_whiteout_device, proc_path, OPAQUE, WHITEOUT_PREFIX};
use crate::error::{Error, Result};
use crate::snapshots::Diffed;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, major, minor, FileStat, Mode, SFlag};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use xattr::FileExt as _;

/// Where the changes of a snapshot are read from.
#[derive(Debug, Clone, Copy)]
pub enum Changes<'a> {
    /// None at all (a view): an empty tar.
    Nothing,
    /// An overlayfs upper dir or layer folder: every entry in it is a change.
    Upper(&'a Path),
    /// A full copy, compared with its parent's full copy (`None`: with an empty folder).
    Copy {
        dir: &'a Path,
        parent: Option<&'a Path>,
    },
}

/// Writes the tar of `changes` to `out`. `unchanged` runs after the walk, before the end
/// marker: an error from it (the snapshot went away meanwhile) leaves the tar unfinished.
pub fn write(
    changes: Changes<'_>,
    out: impl Write,
    unchanged: impl FnOnce() -> Result<()>,
) -> Result<Diffed> {
    let mut differ = Differ {
        tar: TarWriter {
            out,
            size: 0,
            entries: 0,
        },
        pending: Vec::new(),
        links: HashMap::new(),
        upper: matches!(changes, Changes::Upper(_)),
    };
    match changes {
        Changes::Nothing => {}
        Changes::Upper(dir) | Changes::Copy { dir, parent: None } => {
            let (fd, st) = open_root(dir)?;
            differ.all(&fd, b"", &st)?;
        }
        Changes::Copy {
            dir,
            parent: Some(parent),
        } => {
            let (new, new_st) = open_root(dir)?;
            let (old, _) = open_root(parent)?;
            let now = read_entry(&new, OsStr::new("."), false).map_err(|e| read_error(b".", e))?;
            let was = read_entry(&old, OsStr::new("."), false)
                .map_err(|e| Error::io("reading the parent snapshot", e))?;
            if let (Some((now, _)), Some((was, _))) = (now, was) {
                if !same_owner_mode_xattrs(&now, &was) {
                    differ.entry(b"./".to_vec(), &now, None)?;
                }
            }
            differ.compare(&new, &old, b"", &new_st)?;
        }
    }
    unchanged()?;
    differ.tar.finish()
}

fn open_root(dir: &Path) -> Result<(OwnedFd, FileStat)> {
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", dir.display()), e.into()))?;
    let st = fstat(&fd).map_err(|e| Error::io(format!("stat of {}", dir.display()), e.into()))?;
    Ok((fd, st))
}

/// An entry as read from disk.
#[derive(Debug, Clone)]
struct Meta {
    st: FileStat,
    /// Sorted by name; overlay's own and `security.selinux` left out.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// A symlink's target.
    target: Option<Vec<u8>>,
    /// Overlay's own markers (upper dirs only).
    marks: Marks,
}

#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    opaque: bool,
    whiteout: bool,
    /// A redirect or metacopy xattr: the upper dir alone does not tell the change.
    unsupported: Option<&'static str>,
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Reads the entry `name` of `dir` without following it; opens folders and regular files
/// (returned with it). `None` when it vanished meanwhile. `upper`: read overlay's markers.
fn read_entry(
    dir: &OwnedFd,
    name: &OsStr,
    upper: bool,
) -> io::Result<Option<(Meta, Option<File>)>> {
    // An entry swapped for another kind between the stat and the open is read again.
    for _ in 0..8 {
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let k = kind(&st);
        let (st, file, target) = if k == SFlag::S_IFDIR || k == SFlag::S_IFREG {
            let mut flags = OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY;
            if k == SFlag::S_IFDIR {
                flags |= OFlag::O_DIRECTORY;
            }
            match openat(dir, name, flags, Mode::empty()) {
                Ok(fd) => {
                    let opened = fstat(&fd)?;
                    if kind(&opened) != k {
                        continue;
                    }
                    (opened, Some(File::from(fd)), None)
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => continue,
                Err(e) => return Err(e.into()),
            }
        } else if k == SFlag::S_IFLNK {
            match readlinkat(dir, name) {
                Ok(t) => (st, None, Some(t.into_vec())),
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::EINVAL) => continue,
                Err(e) => return Err(e.into()),
            }
        } else {
            (st, None, None)
        };
        let Some(raw) = read_xattrs(file.as_ref(), dir, name)? else {
            return Ok(None);
        };
        let mut marks = Marks::default();
        let mut xattrs = Vec::new();
        for (key, value) in raw {
            let overlay = key
                .strip_prefix(b"trusted.overlay.")
                .or_else(|| upper.then(|| key.strip_prefix(b"user.overlay.")).flatten());
            match overlay {
                Some(b"opaque") if upper => marks.opaque |= value == b"y",
                Some(b"whiteout") if upper => marks.whiteout = true,
                Some(b"redirect") if upper => {
                    marks.unsupported = Some("a renamed folder (overlay redirect_dir)")
                }
                Some(b"metacopy") if upper => {
                    marks.unsupported =
                        Some("a file whose data stays in a layer below (overlay metacopy)")
                }
                Some(_) => {}
                None if key == b"security.selinux" => {}
                None => xattrs.push((key, value)),
            }
        }
        xattrs.sort();
        return Ok(Some((
            Meta {
                st,
                xattrs,
                target,
                marks,
            },
            file,
        )));
    }
    Err(io::Error::other(
        "it kept changing its kind while being read",
    ))
}

/// Every xattr of an entry; `None` when the entry vanished.
#[allow(clippy::type_complexity)]
fn read_xattrs(
    file: Option<&File>,
    dir: &OwnedFd,
    name: &OsStr,
) -> io::Result<Option<Vec<(Vec<u8>, Vec<u8>)>>> {
    // Entries without a descriptor are reached through the folder's; the name is not followed.
    let path = proc_path(dir, if name == "." { OsStr::new("") } else { name });
    let listed: io::Result<Vec<OsString>> = match file {
        Some(f) => f.list_xattr().map(|l| l.collect()),
        None => xattr::list(&path).map(|l| l.collect()),
    };
    let names = match listed {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let value = match file {
            Some(f) => f.get_xattr(&n),
            None => xattr::get(&path, &n),
        };
        match value {
            Ok(Some(v)) => out.push((n.into_vec(), v)),
            // Removed meanwhile.
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(out))
}

/// The names in the folder `dir`, sorted by bytes.
fn sorted_children(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    // A fresh open file description: listing moves its offset.
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = children(fd)?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn same_owner_mode_xattrs(a: &Meta, b: &Meta) -> bool {
    a.st.st_mode == b.st.st_mode
        && a.st.st_uid == b.st.st_uid
        && a.st.st_gid == b.st.st_gid
        && a.xattrs == b.xattrs
}

/// Whether two folders' own metadata is the same.
fn same_dir(a: &Meta, b: &Meta) -> bool {
    same_owner_mode_xattrs(a, b)
        && a.st.st_mtime == b.st.st_mtime
        && a.st.st_mtime_nsec == b.st.st_mtime_nsec
}

/// Whether two non-folders have the same metadata (content is compared separately).
fn same_meta(a: &Meta, b: &Meta) -> bool {
    let sized = kind(&a.st) == SFlag::S_IFREG;
    let device = matches!(kind(&a.st), SFlag::S_IFCHR | SFlag::S_IFBLK);
    same_dir(a, b)
        && a.st.st_nlink == b.st.st_nlink
        && (!sized || a.st.st_size == b.st.st_size)
        && (!device || a.st.st_rdev == b.st.st_rdev)
        && a.target == b.target
}

/// Whether two open regular files of the same size have the same bytes; both are rewound.
fn same_content(a: &mut File, b: &mut File) -> io::Result<bool> {
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let same = loop {
        let n = read_full(a, &mut x)?;
        let m = read_full(b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            break false;
        }
        if n == 0 {
            break true;
        }
    };
    a.rewind()?;
    b.rewind()?;
    Ok(same)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_error(path: &[u8], e: impl Into<io::Error>) -> Error {
    Error::io(
        format!(
            "reading {:?} of the snapshot",
            String::from_utf8_lossy(path).trim_end_matches('/')
        ),
        e.into(),
    )
}

fn joined(prefix: &[u8], name: &OsStr) -> Vec<u8> {
    let mut p = Vec::with_capacity(prefix.len() + name.len() + 1);
    p.extend_from_slice(prefix);
    p.extend_from_slice(name.as_bytes());
    p
}

struct Differ<W: Write> {
    tar: TarWriter<W>,
    /// Folders walked into whose header is not written yet; written before the first change
    /// found below them (native: an unchanged folder above a change).
    pending: Vec<(Vec<u8>, Meta)>,
    /// (device, inode) of a multiply-linked entry written -> the name it was written as.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Whether overlay's markers mean whiteouts and opaque folders.
    upper: bool,
}

impl<W: Write> Differ<W> {
    /// Writes every entry under the folder `dir` (at `prefix`, "" or ending in `/`).
    fn all(&mut self, dir: &OwnedFd, prefix: &[u8], dir_st: &FileStat) -> Result<()> {
        for name in sorted_children(dir).map_err(|e| read_error(prefix, e))? {
            let path = joined(prefix, &name);
            if self.skipped(&path, &name) {
                continue;
            }
            let Some((meta, file)) =
                read_entry(dir, &name, self.upper).map_err(|e| read_error(&path, e))?
            else {
                continue;
            };
            if self.upper && (is_whiteout_device(&meta.st) || meta.marks.whiteout) {
                self.whiteout(prefix, &name, dir_st)?;
                continue;
            }
            if let Some(what) = meta.marks.unsupported.filter(|_| self.upper) {
                return Err(Error::Undiffable {
                    path: String::from_utf8_lossy(&path).into_owned(),
                    reason: format!("it is {what}, which a layer cannot express"),
                });
            }
            self.added(path, meta, file)?;
        }
        Ok(())
    }

    /// Writes an entry and, for a folder, everything under it.
    fn added(&mut self, mut path: Vec<u8>, meta: Meta, file: Option<File>) -> Result<()> {
        if is(&meta.st, SFlag::S_IFDIR) {
            path.push(b'/');
            // `etc/` may be in the upper only for the engine's mount points: written only
            // with something else under it.
            let deferred = path == b"etc/" && !meta.marks.opaque;
            let depth = self.pending.len();
            if deferred {
                self.pending.push((path.clone(), meta.clone()));
            } else {
                self.entry(path.clone(), &meta, None)?;
            }
            if self.upper && meta.marks.opaque {
                let mut marker = path.clone();
                marker.extend_from_slice(OPAQUE.as_bytes());
                self.marker(marker, &meta.st)?;
            }
            let Some(fd) = file else {
                self.pending.truncate(depth);
                return Ok(());
            };
            let walked = self.all(&OwnedFd::from(fd), &path, &meta.st);
            self.pending.truncate(depth);
            walked
        } else {
            self.entry(path, &meta, file)
        }
    }

    /// Walks the copy `new` beside its parent's copy `old` (both folders at `prefix`).
    fn compare(
        &mut self,
        new: &OwnedFd,
        old: &OwnedFd,
        prefix: &[u8],
        new_st: &FileStat,
    ) -> Result<()> {
        let now = sorted_children(new).map_err(|e| read_error(prefix, e))?;
        let was = sorted_children(old).map_err(|e| read_error(prefix, e))?;
        let (mut i, mut j) = (0, 0);
        while i < now.len() || j < was.len() {
            let order = match (now.get(i), was.get(j)) {
                (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let name = &now[i];
                    i += 1;
                    let path = joined(prefix, name);
                    if self.skipped(&path, name) {
                        continue;
                    }
                    if let Some((meta, file)) =
                        read_entry(new, name, false).map_err(|e| read_error(&path, e))?
                    {
                        self.added(path, meta, file)?;
                    }
                }
                std::cmp::Ordering::Greater => {
                    let name = &was[j];
                    j += 1;
                    self.whiteout(prefix, name, new_st)?;
                }
                std::cmp::Ordering::Equal => {
                    let name = &now[i];
                    i += 1;
                    j += 1;
                    let path = joined(prefix, name);
                    if self.skipped(&path, name) {
                        continue;
                    }
                    self.compare_entry(new, old, prefix, name, path, new_st)?;
                }
            }
        }
        Ok(())
    }

    /// One name both copies have.
    fn compare_entry(
        &mut self,
        new: &OwnedFd,
        old: &OwnedFd,
        prefix: &[u8],
        name: &OsStr,
        path: Vec<u8>,
        new_st: &FileStat,
    ) -> Result<()> {
        let Some((now, now_file)) =
            read_entry(new, name, false).map_err(|e| read_error(&path, e))?
        else {
            // Deleted while being looked at.
            return self.whiteout(prefix, name, new_st);
        };
        let Some((was, was_file)) =
            read_entry(old, name, false).map_err(|e| read_error(&path, e))?
        else {
            return self.added(path, now, now_file);
        };
        let (dir_now, dir_was) = (is(&now.st, SFlag::S_IFDIR), is(&was.st, SFlag::S_IFDIR));
        if dir_now && dir_was {
            let (Some(now_fd), Some(was_fd)) = (now_file, was_file) else {
                return Ok(());
            };
            let mut dir = path;
            dir.push(b'/');
            let depth = self.pending.len();
            // `etc/` changes its time when the engine adds its mount points under it.
            if same_dir(&now, &was) || dir == b"etc/" {
                self.pending.push((dir.clone(), now.clone()));
            } else {
                self.entry(dir.clone(), &now, None)?;
            }
            let (now_fd, was_fd) = (OwnedFd::from(now_fd), OwnedFd::from(was_fd));
            self.compare(&now_fd, &was_fd, &dir, &now.st)?;
            self.pending.truncate(depth);
            return Ok(());
        }
        // A changed kind is a new entry: unpacking it replaces what the parent had.
        if kind(&now.st) != kind(&was.st) || !same_meta(&now, &was) {
            return self.added(path, now, now_file);
        }
        if let (Some(mut a), Some(mut b)) = (now_file, was_file) {
            if !same_content(&mut a, &mut b).map_err(|e| read_error(&path, e))? {
                return self.entry(path, &now, Some(a));
            }
        }
        Ok(())
    }

    /// Names that cannot go into a layer as they are.
    fn skipped(&self, path: &[u8], name: &OsStr) -> bool {
        if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
            tracing::warn!(path = %String::from_utf8_lossy(path), "left out of the diff: a name starting with .wh. would read as a whiteout");
            return true;
        }
        false
    }

    fn flush_pending(&mut self) -> Result<()> {
        for (name, meta) in std::mem::take(&mut self.pending) {
            self.tar
                .append(&name, &meta, tar::EntryType::Directory, 0, None, None)?;
        }
        Ok(())
    }

    /// Writes one entry (a folder's name ends in `/`); `file` is a regular file's content.
    fn entry(&mut self, name: Vec<u8>, meta: &Meta, file: Option<File>) -> Result<()> {
        let k = kind(&meta.st);
        if k == SFlag::S_IFREG
            && meta.st.st_size == 0
            && ENGINE_MOUNT_POINTS.contains(&name.as_slice())
        {
            // The empty file the shim made to bind the container's own over (Docker keeps
            // these in its init layer): never part of the container's changes.
            return Ok(());
        }
        if k == SFlag::S_IFSOCK {
            tracing::debug!(path = %String::from_utf8_lossy(&name), "a socket cannot be in a layer; left out");
            return Ok(());
        }
        self.flush_pending()?;
        if k != SFlag::S_IFDIR && meta.st.st_nlink > 1 {
            let inode = (meta.st.st_dev, meta.st.st_ino);
            if let Some(first) = self.links.get(&inode) {
                let first = first.clone();
                return self
                    .tar
                    .append(&name, meta, tar::EntryType::Link, 0, Some(&first), None);
            }
            self.links.insert(inode, name.clone());
        }
        let size = meta.st.st_size.max(0) as u64;
        match k {
            SFlag::S_IFDIR => {
                self.tar
                    .append(&name, meta, tar::EntryType::Directory, 0, None, None)
            }
            SFlag::S_IFREG => {
                let Some(mut f) = file else {
                    return Err(read_error(&name, io::Error::other("not opened")));
                };
                self.tar.append(
                    &name,
                    meta,
                    tar::EntryType::Regular,
                    size,
                    None,
                    Some(&mut f),
                )
            }
            SFlag::S_IFLNK => {
                let target = meta.target.clone().unwrap_or_default();
                self.tar
                    .append(&name, meta, tar::EntryType::Symlink, 0, Some(&target), None)
            }
            SFlag::S_IFCHR => self
                .tar
                .append(&name, meta, tar::EntryType::Char, 0, None, None),
            SFlag::S_IFBLK => self
                .tar
                .append(&name, meta, tar::EntryType::Block, 0, None, None),
            _ => self
                .tar
                .append(&name, meta, tar::EntryType::Fifo, 0, None, None),
        }
    }

    /// `.wh.NAME` in the folder at `prefix`, with the folder's time.
    fn whiteout(&mut self, prefix: &[u8], name: &OsStr, dir_st: &FileStat) -> Result<()> {
        let mut path = prefix.to_vec();
        path.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
        path.extend_from_slice(name.as_bytes());
        self.marker(path, dir_st)
    }

    /// An empty marker file (whiteout, opaque) with the time of `dir_st`, or the epoch at the
    /// root: the root is not in the tar, so its time would make the same change give another
    /// tar once applied (an applied layer's root has the time of the apply).
    fn marker(&mut self, path: Vec<u8>, dir_st: &FileStat) -> Result<()> {
        self.flush_pending()?;
        let mut st = *dir_st;
        if !path.contains(&b'/') {
            st.st_mtime = 0;
            st.st_mtime_nsec = 0;
        }
        st.st_mode = libc::S_IFREG;
        st.st_uid = 0;
        st.st_gid = 0;
        st.st_size = 0;
        st.st_nlink = 1;
        let meta = Meta {
            st,
            xattrs: Vec::new(),
            target: None,
            marks: Marks::default(),
        };
        self.tar
            .append(&path, &meta, tar::EntryType::Regular, 0, None, None)
    }
}

/// Largest value of an octal ustar field of `digits` digits.
/// Files the runtime bind-mounts into every container, created empty when the image lacks
/// them.
const ENGINE_MOUNT_POINTS: [&[u8]; 3] = [b"etc/hosts", b"etc/resolv.conf", b"etc/hostname"];

const fn octal_max(digits: u32) -> u64 {
    (1 << (3 * digits)) - 1
}

const BLOCK: usize = 512;

/// Writes tar entries as ustar headers, with PAX records where those fall short.
struct TarWriter<W: Write> {
    out: W,
    size: u64,
    entries: u64,
}

impl<W: Write> TarWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("writing the diff", e))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        let rest = (BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64;
        self.write(&[0u8; BLOCK][..rest as usize])
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        name: &[u8],
        meta: &Meta,
        kind: tar::EntryType,
        size: u64,
        link: Option<&[u8]>,
        data: Option<&mut File>,
    ) -> Result<()> {
        let st = &meta.st;
        let mut h = tar::Header::new_ustar();
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if !put_name(&mut h, name) {
            pax.push((b"path".to_vec(), name.to_vec()));
        }
        if let Some(link) = link {
            let ustar = h.as_ustar_mut().expect("a ustar header");
            if link.len() <= ustar.linkname.len() {
                ustar.linkname[..link.len()].copy_from_slice(link);
            } else {
                ustar.linkname.copy_from_slice(&link[..100]);
                pax.push((b"linkpath".to_vec(), link.to_vec()));
            }
        }
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        for (key, id, set) in [
            (
                "uid",
                u64::from(st.st_uid),
                tar::Header::set_uid as fn(&mut _, u64),
            ),
            ("gid", u64::from(st.st_gid), tar::Header::set_gid),
        ] {
            set(&mut h, id);
            if id > octal_max(7) {
                pax.push((key.as_bytes().to_vec(), id.to_string().into_bytes()));
            }
        }
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(size);
        if size > octal_max(11) {
            pax.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            let (ma, mi) = (major(st.st_rdev), minor(st.st_rdev));
            h.set_device_major(ma.min(octal_max(7)) as u32)
                .and_then(|()| h.set_device_minor(mi.min(octal_max(7)) as u32))
                .map_err(|e| Error::io("writing a device entry", e))?;
        }
        if kind != tar::EntryType::Link {
            for (k, v) in &meta.xattrs {
                let mut key = b"SCHILY.xattr.".to_vec();
                key.extend_from_slice(k);
                pax.push((key, v.clone()));
            }
        }
        h.set_cksum();
        if !pax.is_empty() {
            pax.sort();
            let records = pax_records(&pax);
            let mut x = tar::Header::new_ustar();
            put_name(&mut x, b"pax_header");
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_mode(0o644);
            x.set_mtime(0);
            x.set_size(records.len() as u64);
            x.set_cksum();
            self.write(x.as_bytes())?;
            self.write(&records)?;
            self.pad(records.len() as u64)?;
        }
        self.write(h.as_bytes())?;
        self.entries += 1;
        if let Some(file) = data {
            self.data(file, size, name)?;
        }
        Ok(())
    }

    /// Exactly `size` bytes of `file`: zeros when it shrank, cut when it grew meanwhile.
    fn data(&mut self, file: &mut File, size: u64, name: &[u8]) -> Result<()> {
        let mut buf = vec![0u8; 128 * 1024];
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = read_full(file, &mut buf[..want]).map_err(|e| read_error(name, e))?;
            if n == 0 {
                tracing::warn!(path = %String::from_utf8_lossy(name), missing = left, "a file shrank while being diffed; padded with zeros");
                buf.fill(0);
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    self.write(&buf[..k])?;
                    left -= k as u64;
                }
                break;
            }
            self.write(&buf[..n])?;
            left -= n as u64;
        }
        self.pad(size)
    }

    /// The end-of-archive marker: two zero blocks.
    fn finish(mut self) -> Result<Diffed> {
        self.write(&[0u8; 2 * BLOCK])?;
        self.out
            .flush()
            .map_err(|e| Error::io("writing the diff", e))?;
        Ok(Diffed {
            entries: self.entries,
            size: self.size,
        })
    }
}

/// Puts `name` in the ustar name field, or split over prefix and name at a `/`; `false`
/// (with the name cut to fit) when it needs a PAX `path` record.
fn put_name(h: &mut tar::Header, name: &[u8]) -> bool {
    let ustar = h.as_ustar_mut().expect("a ustar header");
    if name.len() <= ustar.name.len() {
        ustar.name[..name.len()].copy_from_slice(name);
        return true;
    }
    // The last `/` that leaves at most 155 bytes before it (a folder's own trailing `/`
    // stays with its name).
    let search = &name[..name.len().saturating_sub(1).min(ustar.prefix.len() + 1)];
    if let Some(i) = search.iter().rposition(|&b| b == b'/') {
        let (prefix, rest) = (&name[..i], &name[i + 1..]);
        if !rest.is_empty() && rest.len() <= ustar.name.len() && prefix.len() <= ustar.prefix.len()
        {
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..rest.len()].copy_from_slice(rest);
            return true;
        }
    }
    ustar.name.copy_from_slice(&name[..100]);
    false
}

/// PAX records: `LEN KEY=VALUE\n`, LEN counting the whole record.
fn pax_records(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // space, '=', newline
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in a diff of `changes`.
    fn names(changes: Changes<'_>) -> Vec<String> {
        let mut out = Vec::new();
        write(changes, &mut out, || Ok(())).unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn the_engines_mount_points_are_not_changes() {
        let t = tempfile::tempdir().unwrap();
        let upper = t.path().join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        for f in ["hosts", "resolv.conf", "hostname"] {
            std::fs::write(upper.join("etc").join(f), "").unwrap();
        }
        assert!(names(Changes::Upper(&upper)).is_empty());
        // A real change under etc/ brings the folder with it; a hosts file with content
        // (not a mount point) is a change too.
        std::fs::write(upper.join("etc/motd"), "hi").unwrap();
        assert_eq!(names(Changes::Upper(&upper)), ["etc/", "etc/motd"]);
        std::fs::write(upper.join("etc/hosts"), "1.2.3.4 x\n").unwrap();
        assert_eq!(
            names(Changes::Upper(&upper)),
            ["etc/", "etc/hosts", "etc/motd"]
        );

        // A full copy beside its parent: the same.
        let (old, new) = (t.path().join("old"), t.path().join("new"));
        std::fs::create_dir_all(old.join("etc")).unwrap();
        std::fs::write(old.join("etc/passwd"), "root").unwrap();
        std::fs::create_dir_all(new.join("etc")).unwrap();
        std::fs::write(new.join("etc/passwd"), "root").unwrap();
        std::fs::write(new.join("etc/resolv.conf"), "").unwrap();
        // Times set, not left to the clock: a copy keeps its parent's times, and two writes
        // a clock tick apart (a busy machine) must not read as a change. `etc/` itself is
        // a second newer, as when the shim makes the mount point in it: not a change.
        let t0 = filetime::FileTime::from_unix_time(1_700_000_000, 0);
        let t1 = filetime::FileTime::from_unix_time(1_700_000_001, 0);
        for (p, t) in [
            (old.join("etc/passwd"), t0),
            (new.join("etc/passwd"), t0),
            (old.join("etc"), t0),
            (new.join("etc"), t1),
        ] {
            filetime::set_file_times(&p, t, t).unwrap();
        }
        let copy = || Changes::Copy {
            dir: &new,
            parent: Some(&old),
        };
        assert!(names(copy()).is_empty());
        // A real change under it still brings etc/ with it.
        filetime::set_file_times(new.join("etc/passwd"), t1, t1).unwrap();
        assert_eq!(names(copy()), ["etc/", "etc/passwd"]);
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let r = pax_records(&[(b"path".to_vec(), b"a".to_vec())]);
        assert_eq!(r, b"9 path=a\n");
        // 98 + 2 digits = 100, which needs 3 digits: 101.
        let v = vec![b'x'; 91];
        let r = pax_records(&[(b"path".to_vec(), v)]);
        assert!(
            r.starts_with(b"101 path="),
            "{}",
            String::from_utf8_lossy(&r[..4])
        );
        assert_eq!(r.len(), 101);
    }

    #[test]
    fn names_use_the_ustar_prefix_before_pax() {
        let mut h = tar::Header::new_ustar();
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(90));
        assert!(put_name(&mut h, long.as_bytes()));
        assert_eq!(h.path_bytes().as_ref(), long.as_bytes());
        let mut h = tar::Header::new_ustar();
        let dir = format!("{}/{}/", "d".repeat(150), "e".repeat(99));
        assert!(put_name(&mut h, dir.as_bytes()));
        assert_eq!(h.path_bytes().as_ref(), dir.as_bytes());
        let mut h = tar::Header::new_ustar();
        let too_long = "x".repeat(300);
        assert!(!put_name(&mut h, too_long.as_bytes()));
    }

    #[test]
    fn big_sizes_and_ids_get_pax_records_and_base_256_fields() {
        let t = tempfile::tempdir().unwrap();
        let (fd, st) = open_root(t.path()).unwrap();
        drop(fd);
        let mut st = st;
        st.st_mode = libc::S_IFREG | 0o644;
        st.st_uid = 5_000_000;
        let meta = Meta {
            st,
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
            target: None,
            marks: Marks::default(),
        };
        let mut w = TarWriter {
            out: Vec::new(),
            size: 0,
            entries: 0,
        };
        let size = 9 << 30;
        w.append(b"huge", &meta, tar::EntryType::Regular, size, None, None)
            .unwrap();
        // A PAX header, its records, then the entry's header.
        let out = w.out;
        let x = tar::Header::from_byte_slice(&out[..BLOCK]);
        assert_eq!(x.entry_type(), tar::EntryType::XHeader);
        let len = x.size().unwrap() as usize;
        let records = String::from_utf8_lossy(&out[BLOCK..BLOCK + len]).into_owned();
        assert!(records.contains(" size=9663676416\n"), "{records}");
        assert!(records.contains(" uid=5000000\n"), "{records}");
        assert!(records.contains(" SCHILY.xattr.user.k=v\n"), "{records}");
        let h = tar::Header::from_byte_slice(&out[out.len() - BLOCK..]);
        assert_eq!(
            h.size().unwrap(),
            size,
            "base-256 size for readers without PAX"
        );
        assert_eq!(h.uid().unwrap(), 5_000_000);
        assert_eq!(h.path_bytes().as_ref(), b"huge");
    }

    #[test]
    fn octal_limits() {
        assert_eq!(octal_max(7), 0o7777777);
        assert_eq!(octal_max(11), 0o77777777777);
    }
}
