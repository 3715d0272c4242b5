//! Applying a layer — a tar stream, gzip/zstd-compressed or plain — into a snapshot folder.
//!
//! [`apply`] decompresses (by media type, else by magic bytes), hashes the *uncompressed*
//! stream while it unpacks, and fails with [`Error::DigestMismatch`] when the result is not the
//! expected diff_id. The caller discards the folder on any error.
//!
//! # Path safety
//!
//! Nothing is ever written outside the target folder:
//! - an entry name is split into components; empty and `.` components are dropped, a leading
//!   `/` is dropped the way Docker does (`/etc/x` is `etc/x`), and **any** `..` component is
//!   refused (stricter than Docker, which allows `a/../b`; no layer builder writes those);
//! - every parent component is opened with `openat(O_PATH|O_NOFOLLOW)` from the folder's own
//!   file descriptor, one at a time; a parent that is a symlink — in this layer or in a layer
//!   below — is refused (the entry is named in the error), so `evil -> /etc` then
//!   `evil/passwd` cannot reach the host, nor can a link to a folder inside the rootfs be used
//!   to write somewhere unexpected;
//! - the last component is created with `*at` calls that never follow it (`O_EXCL|O_NOFOLLOW`,
//!   `AT_SYMLINK_NOFOLLOW`); an existing entry there is unlinked first, so a file replaces a
//!   symlink instead of writing through it;
//! - hard link targets follow the same rules and must already exist inside the folder (or, for
//!   overlay, in a layer below: the file is then copied up first);
//! - `trusted.overlay.*` xattrs in a layer are dropped: they would let a layer forge overlay's
//!   own metadata (opaque dirs, redirects).
//!
//! # Bounds
//!
//! The tar stream is read by [`berth_archive::Reader`], which caps extension headers, names and
//! sparse maps and applies the [`Limits`] (entries, bytes of data) before anything of an
//! entry is written; sparse files are written sparse. What the unpack remembers along the
//! way (folders whose times are set at the end, paths an opaque marker keeps) is capped by
//! [`MAX_TRACKED`], so no layer makes berthd's memory grow without bound.
//!
//! # Whiteouts
//!
//! `.wh.NAME` deletes NAME of the layers below and `.wh..wh..opq` makes its folder opaque.
//! [`Whiteouts::Overlay`] writes them as overlayfs expects in an upper dir (a 0/0 character
//! device; the xattr `trusted.overlay.opaque=y`); [`Whiteouts::Delete`] applies them to a full
//! copy (the native snapshotter): the path is deleted, an opaque folder loses the children
//! that did not come from this layer. Other `.wh..wh.*` entries (aufs metadata) are skipped.

use crate::error::{Error, Result};
use berth_archive::{Entry, Reader};
use berth_core::config::Limits;
use berth_core::digest::Hasher;
use berth_core::media::Compression;
use berth_core::Digest;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmodat, fstatat, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use xattr::FileExt as _;

/// How whiteout entries land in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// The target is an overlayfs upper dir: write overlay's whiteout devices and opaque xattrs.
    Overlay,
    /// The target is a full copy of the layers below: delete what the whiteouts name.
    Delete,
}

/// Where a layer is unpacked.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The snapshot's folder; nothing outside it is written.
    pub root: &'a Path,
    /// Folders of the layers below, nearest first (overlay only): consulted for the metadata of
    /// parent folders the layer does not list, for symlinked parents, and for hard-link targets.
    pub lowers: Lowers<'a>,
    pub whiteouts: Whiteouts,
}

/// The layers below the one being unpacked (overlay only).
#[derive(Clone, Copy)]
pub enum Lowers<'a> {
    /// Their folders, nearest first.
    Ready(&'a [PathBuf]),
    /// They are still being applied. The layer is unpacked without them: parent folders it
    /// does not list are made `0755 root` and listed in [`Applied::pending`] for [`settle`].
    /// An entry that cannot do without them (a hard link to a file below) calls this, which
    /// waits for them and returns their folders.
    Later(&'a dyn Fn() -> Result<Vec<PathBuf>>),
}

impl std::fmt::Debug for Lowers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lowers::Ready(l) => f.debug_tuple("Ready").field(l).finish(),
            Lowers::Later(_) => f.write_str("Later"),
        }
    }
}

/// What [`apply`] unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
    /// Parent folders the layer does not list, made while the layers below were unknown
    /// ([`Lowers::Later`]); [`settle`] gives them the owner and mode of the same folder below.
    pub pending: Vec<Vec<OsString>>,
}

pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
pub(crate) const OPAQUE: &str = ".wh..wh..opq";
pub(crate) const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Bytes of paths an unpack may remember (folders made or listed, paths written for an
/// opaque marker): far more than the folders of any real layer.
pub const MAX_TRACKED: usize = 256 << 20;

/// Unpacks the layer read from `layer` into `target` and, when `expected` is given, checks
/// that the uncompressed stream has that digest; when it is not, the tar must reach its
/// end-of-archive marker. `media_type` may be empty or unknown: then the compression is
/// detected from the first bytes. Past `limits` it stops with an error; the caller discards
/// the folder on any error.
pub fn apply(
    layer: impl Read,
    media_type: &str,
    expected: Option<&Digest>,
    target: &Target<'_>,
    limits: &Limits,
) -> Result<Applied> {
    let (head, rest) = peek(layer, 4).map_err(Error::CorruptLayer)?;
    let compression =
        Compression::of_layer(media_type).unwrap_or_else(|| Compression::sniff(&head));
    let raw = io::Cursor::new(head).chain(rest);
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(raw)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(raw).map_err(Error::CorruptLayer)?)
        }
    };
    let mut hashing = HashingReader {
        inner: decompressed,
        hasher: Hasher::new(),
        eof: false,
    };
    let pending = unpack(&mut hashing, target, limits)?;
    // Without a diff_id to check, a stream cut at an entry boundary would look like a whole
    // layer: only a tar that reached its end-of-archive marker (zero blocks, which stop the
    // reader before the stream ends) is taken.
    if expected.is_none() && hashing.eof {
        return Err(Error::CorruptLayer(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the tar ends without its end-of-archive marker, so it may have been cut short",
        )));
    }
    // The digest covers the whole stream, including the padding after the end-of-archive mark.
    io::copy(&mut hashing, &mut io::sink()).map_err(Error::CorruptLayer)?;
    let size = hashing.hasher.len();
    let actual = hashing.hasher.finish();
    if let Some(expected) = expected {
        if &actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    Ok(Applied {
        diff_id: actual,
        size,
        pending,
    })
}

/// Gives the folders [`apply`] made while the layers below were unknown (`pending`) the
/// owner and mode of the same folder in `lowers`, as an unpack with the layers at hand would
/// have; like that unpack, refuses a layer whose parent folder is a symlink or a file below.
pub fn settle(root: &Path, lowers: &[PathBuf], pending: &[Vec<OsString>]) -> Result<()> {
    let root_fd = open_path(root)?;
    for comps in pending {
        let entry = display(comps);
        let Some((last, parent)) = comps.split_last() else {
            continue;
        };
        // Only what is still the folder this layer made; a later entry may have replaced it.
        let Some(dir) = walk_dirs(&root_fd, parent) else {
            continue;
        };
        match stat_child(&dir, last) {
            Ok(Some(st)) if is(&st, SFlag::S_IFDIR) => {}
            _ => continue,
        }
        let Some(st) = lower_parent(lowers, comps, &entry)? else {
            continue;
        };
        adopt(&dir, last, &st)
            .map_err(|e| Error::io(format!("setting owner and mode of {entry:?}"), e.into()))?;
    }
    Ok(())
}

/// Opens the folders `comps` under `root`, never following a symlink; `None` if one is not
/// a folder (or missing).
fn walk_dirs(root: &OwnedFd, comps: &[OsString]) -> Option<OwnedFd> {
    let mut dir = root.try_clone().ok()?;
    for c in comps {
        match open_child(&dir, c) {
            Ok((fd, st)) if is(&st, SFlag::S_IFDIR) => dir = fd,
            _ => return None,
        }
    }
    Some(dir)
}

/// The stat of the folder `comps` in the layers below, for a parent folder the layer does
/// not list; an error when it is a symlink or not a folder there (writing through those is
/// refused); `None` when no layer below has it.
fn lower_parent(lowers: &[PathBuf], comps: &[OsString], entry: &str) -> Result<Option<FileStat>> {
    match lower_lookup(lowers, comps) {
        Some((_, st)) if is(&st, SFlag::S_IFLNK) => Err(Error::invalid_layer(
            entry,
            format!(
                "its parent {:?} is a symbolic link in a layer below; refusing to write through it",
                display(comps)
            ),
        )),
        Some((_, st)) if !is(&st, SFlag::S_IFDIR) => Err(Error::invalid_layer(
            entry,
            format!(
                "its parent {:?} is not a folder in a layer below",
                display(comps)
            ),
        )),
        Some((_, st)) => Ok(Some(st)),
        None => Ok(None),
    }
}

/// Owner and mode of `name` in `dir` from `st` (a folder below).
fn adopt(dir: &OwnedFd, name: &OsStr, st: &FileStat) -> nix::Result<()> {
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    // A folder this unpack made, never a symlink.
    fchmodat(
        dir,
        name,
        Mode::from_bits_truncate(st.st_mode & 0o7777),
        FchmodatFlags::FollowSymlink,
    )
}

/// Reads up to `n` bytes without losing them: returns them and the reader for the rest.
fn peek<R: Read>(mut r: R, n: usize) -> io::Result<(Vec<u8>, R)> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok((head, r))
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    /// Whether the stream has ended.
    eof: bool,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.eof |= n == 0 && !buf.is_empty();
        Ok(n)
    }
}

fn unpack(
    stream: &mut impl Read,
    target: &Target<'_>,
    limits: &Limits,
) -> Result<Vec<Vec<OsString>>> {
    let root = open_path(target.root)?;
    let lowers = match (target.whiteouts, target.lowers) {
        (Whiteouts::Delete, _) => Some(Vec::new()),
        (Whiteouts::Overlay, Lowers::Ready(l)) => Some(l.to_vec()),
        (Whiteouts::Overlay, Lowers::Later(_)) => None,
    };
    let mut unpacker = Unpacker {
        root,
        target,
        lowers,
        implicit: BTreeSet::new(),
        dir_times: Vec::new(),
        written: BTreeSet::new(),
        tracked: 0,
    };
    let mut reader = Reader::new(stream, *limits);
    while let Some(entry) = reader.next_entry()? {
        unpacker.entry(&entry, &mut reader)?;
    }
    unpacker.finish()
}

/// An entry name, split into safe components.
fn components(raw: &[u8], entry: &str) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::invalid_layer(
                    entry,
                    "the path has a `..` component, which could point outside the snapshot",
                ))
            }
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

fn display(comps: &[OsString]) -> String {
    let v: Vec<_> = comps.iter().map(|c| c.to_string_lossy()).collect();
    v.join("/")
}

pub(crate) fn open_path(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", path.display()), e.into()))
}

pub(crate) fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

pub(crate) fn is_whiteout_device(st: &FileStat) -> bool {
    is(st, SFlag::S_IFCHR) && st.st_rdev == 0
}

/// Opens the child `name` of `dir` without following it.
pub(crate) fn open_child(dir: &OwnedFd, name: &OsStr) -> nix::Result<(OwnedFd, FileStat)> {
    let fd = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = nix::sys::stat::fstat(&fd)?;
    Ok((fd, st))
}

pub(crate) fn stat_child(dir: &OwnedFd, name: &OsStr) -> nix::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `/proc/self/fd/<dir>/<name>`: a path for the xattr calls, which have no `*at` form. The
/// directory is pinned by its descriptor; `name` is one component, never followed (lsetxattr).
pub(crate) fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        p.push(name);
    }
    p
}

/// Removes `name` in `dir`, recursively, never following symlinks. Missing is fine.
pub(crate) fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let Some(st) = stat_child(dir, name)? else {
        return Ok(());
    };
    if is(&st, SFlag::S_IFDIR) {
        let fd = openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let pinned = fd.try_clone()?;
        for child in children(fd)? {
            remove_at(&pinned, &child)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// The names in a directory opened for reading.
pub(crate) fn children(fd: OwnedFd) -> io::Result<Vec<OsString>> {
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in dir.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

fn timespec(secs: i64, nanos: i64) -> TimeSpec {
    TimeSpec::new(secs, nanos)
}

/// 0 for a numeric header field of only NULs and spaces, else the parse error.
fn blank(field: &[u8], e: io::Error) -> io::Result<u64> {
    if field.iter().all(|&b| b == 0 || b == b' ') {
        Ok(0)
    } else {
        Err(e)
    }
}

/// Parses a PAX time (`1700000000.123456789`).
fn pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if secs < 0 && nanos > 0 {
        timespec(secs - 1, 1_000_000_000 - nanos)
    } else {
        timespec(secs, nanos)
    })
}

struct Unpacker<'a> {
    root: OwnedFd,
    target: &'a Target<'a>,
    /// The layers below, once known (at the start unless they come [`Lowers::Later`]).
    lowers: Option<Vec<PathBuf>>,
    /// Parent folders made while the layers below were unknown; they take the owner and mode
    /// of the folder below once it is known, unless an entry of the layer set them.
    implicit: BTreeSet<Vec<OsString>>,
    /// Folders whose times are set at the end, after their contents stopped changing them.
    dir_times: Vec<(Vec<OsString>, TimeSpec, TimeSpec)>,
    /// Paths this layer wrote, joined with `/`, so an opaque marker keeps them (native only).
    written: BTreeSet<Vec<u8>>,
    /// Bytes the three above hold, about; at most [`MAX_TRACKED`].
    tracked: usize,
}

/// Metadata of an entry, read from its header before its data is consumed.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Unpacker<'_> {
    /// Unpacks one entry: the layer's root, a whiteout or opaque marker, a hard link, or a
    /// new node whose metadata and times are then set.
    fn entry<R: Read>(&mut self, entry: &Entry, reader: &mut Reader<R>) -> Result<()> {
        let name = entry.name();
        let kind = entry.kind();
        let comps = components(&entry.path, &name)?;
        let meta = self.meta(entry, &name)?;

        let Some((last, parent)) = comps.split_last() else {
            return self.layer_root(kind, &meta, &name);
        };

        let last_bytes = last.as_bytes();
        if last_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            if last_bytes == OPAQUE.as_bytes() {
                return self.opaque(parent, &name);
            }
            if last_bytes.starts_with(b".wh..wh.") {
                return Ok(());
            }
            let victim = OsStr::from_bytes(&last_bytes[WHITEOUT_PREFIX.len()..]);
            return self.whiteout(parent, victim, &name);
        }

        let dir = self.parent_dir(parent, &name)?;
        let existing = stat_child(&dir, last).map_err(|e| self.err(&name, "inspecting", e))?;
        if let Some(st) = &existing {
            if !(kind.is_dir() && is(st, SFlag::S_IFDIR)) {
                remove_at(&dir, last).map_err(|e| Error::io(format!("replacing {name:?}"), e))?;
            }
        }

        if kind == tar::EntryType::Link {
            let link = entry
                .link
                .as_deref()
                .ok_or_else(|| Error::invalid_layer(&name, "hard link without a target"))?;
            self.hard_link(link, &dir, last, &name)?;
            // A hard link shares its target's inode, whose metadata is already set.
            self.mark_written(&comps)?;
            self.implicit.remove(&comps);
            return Ok(());
        }
        let was_dir = existing.as_ref().is_some_and(|st| is(st, SFlag::S_IFDIR));
        self.create_node(&dir, last, entry, reader, was_dir, &name)?;
        self.set_meta(&dir, last, &meta, kind == tar::EntryType::Symlink, &name)?;
        if kind.is_dir() {
            self.track(&comps)?;
            self.dir_times.push((comps.clone(), meta.atime, meta.mtime));
        } else {
            self.set_times(&dir, last, &meta, &name)?;
        }
        self.mark_written(&comps)?;
        self.implicit.remove(&comps);
        Ok(())
    }

    /// An entry for the layer's root itself: only a folder fits there.
    fn layer_root(&mut self, kind: tar::EntryType, meta: &Meta, name: &str) -> Result<()> {
        if !kind.is_dir() {
            return Err(Error::invalid_layer(
                name,
                "only a folder can be the root of a layer",
            ));
        }
        let root = self
            .root
            .try_clone()
            .map_err(|e| Error::io("duplicating a descriptor", e))?;
        self.set_meta(&root, OsStr::new(""), meta, false, name)?;
        self.track(&[])?;
        self.dir_times.push((Vec::new(), meta.atime, meta.mtime));
        Ok(())
    }

    /// Creates the file, folder (unless `was_dir`: one is there already), symlink or device
    /// `last` in `dir`, with private permissions until [`Self::set_meta`]; a regular file
    /// gets its data. Any other entry type is refused.
    fn create_node<R: Read>(
        &self,
        dir: &OwnedFd,
        last: &OsStr,
        entry: &Entry,
        reader: &mut Reader<R>,
        was_dir: bool,
        name: &str,
    ) -> Result<()> {
        let kind = entry.kind();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = openat(
                    dir,
                    last,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| self.err(name, "creating", e))?;
                let mut file = File::from(fd);
                reader.write_file(entry, &mut file)?;
            }
            tar::EntryType::Directory => {
                if !was_dir {
                    mkdirat(dir, last, Mode::from_bits_truncate(0o700))
                        .map_err(|e| self.err(name, "creating", e))?;
                }
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link
                    .as_deref()
                    .ok_or_else(|| Error::invalid_layer(name, "symlink without a target"))?;
                symlinkat(OsStr::from_bytes(link), dir, last)
                    .map_err(|e| self.err(name, "creating", e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Char | tar::EntryType::Block => {
                        let major = entry.header.device_major().ok().flatten().unwrap_or(0);
                        let minor = entry.header.device_minor().ok().flatten().unwrap_or(0);
                        let f = if kind == tar::EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (f, makedev(u64::from(major), u64::from(minor)))
                    }
                    _ => (SFlag::S_IFIFO, 0),
                };
                mknodat(dir, last, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| self.err(name, "creating", e))?;
            }
            other => {
                return Err(Error::invalid_layer(
                    name,
                    format!("unsupported tar entry type {other:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Records `comps` as coming from this layer (and so its parents, see [`Self::prune`]);
    /// only an opaque marker of a full copy needs to know.
    fn mark_written(&mut self, comps: &[OsString]) -> Result<()> {
        if self.target.whiteouts != Whiteouts::Delete {
            return Ok(());
        }
        let joined = joined(comps);
        if !self.written.contains(&joined) {
            self.tracked += joined.len() + 48;
            self.check_tracked(comps)?;
            self.written.insert(joined);
        }
        Ok(())
    }

    /// Counts a path the unpack keeps until its end against [`MAX_TRACKED`].
    fn track(&mut self, comps: &[OsString]) -> Result<()> {
        self.tracked += 48 + comps.iter().map(|c| c.len() + 40).sum::<usize>();
        self.check_tracked(comps)
    }

    fn check_tracked(&self, comps: &[OsString]) -> Result<()> {
        if self.tracked > MAX_TRACKED {
            return Err(Error::invalid_layer(
                display(comps),
                format!("the layer has so many folders with long paths that unpacking it would take more than {} MiB of memory to keep track of them", MAX_TRACKED >> 20),
            ));
        }
        Ok(())
    }

    fn err(&self, entry: &str, doing: &str, e: Errno) -> Error {
        Error::io(
            format!(
                "{doing} layer entry {entry:?} in {}",
                self.target.root.display()
            ),
            e.into(),
        )
    }

    fn meta(&self, entry: &Entry, name: &str) -> Result<Meta> {
        let h = &entry.header;
        let bad = |what: &str, e: io::Error| {
            Error::invalid_layer(name, format!("unreadable {what}: {e}"))
        };
        // Like Go's archive/tar (which wrote many layers), a blank numeric field reads as 0.
        let old = h.as_old();
        let uid = h
            .uid()
            .or_else(|e| blank(&old.uid, e))
            .map_err(|e| bad("uid", e))?;
        let gid = h
            .gid()
            .or_else(|e| blank(&old.gid, e))
            .map_err(|e| bad("gid", e))?;
        let mode = h
            .mode()
            .or_else(|e| blank(&old.mode, e).map(|m| m as u32))
            .map_err(|e| bad("mode", e))?;
        let mtime_secs = h
            .mtime()
            .or_else(|e| blank(&old.mtime, e))
            .map_err(|e| bad("mtime", e))?;
        let mut mtime = timespec(mtime_secs as i64, 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        for (key, value) in &entry.pax {
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                if x.starts_with(b"trusted.overlay.") {
                    tracing::warn!(entry = name, xattr = %String::from_utf8_lossy(x), "dropping an overlay xattr from a layer");
                    continue;
                }
                xattrs.push((OsStr::from_bytes(x).to_os_string(), value.clone()));
            } else if key == b"mtime" {
                if let Some(t) = pax_time(value) {
                    mtime = t;
                }
            } else if key == b"atime" {
                atime = pax_time(value);
            }
        }
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) => (u, g),
            _ => {
                return Err(Error::invalid_layer(
                    name,
                    format!("owner {uid}:{gid} is out of range"),
                ))
            }
        };
        Ok(Meta {
            uid,
            gid,
            mode: mode & 0o7777,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown clears file
    /// capabilities). `name` empty means `dir` itself.
    fn set_meta(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        symlink: bool,
        entry: &str,
    ) -> Result<()> {
        let flags = if name.is_empty() {
            AtFlags::AT_EMPTY_PATH
        } else {
            AtFlags::AT_SYMLINK_NOFOLLOW
        };
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            flags,
        )
        .map_err(|e| self.err(entry, "chown of", e))?;
        if !symlink {
            // fchmodat cannot refuse to follow, but `name` was just made by us and is no symlink.
            if name.is_empty() {
                fchmodat(
                    dir,
                    ".",
                    Mode::from_bits_truncate(meta.mode),
                    FchmodatFlags::FollowSymlink,
                )
            } else {
                fchmodat(
                    dir,
                    name,
                    Mode::from_bits_truncate(meta.mode),
                    FchmodatFlags::FollowSymlink,
                )
            }
            .map_err(|e| self.err(entry, "chmod of", e))?;
        }
        for (key, value) in &meta.xattrs {
            let path = proc_path(dir, name);
            let r = if name.is_empty() {
                xattr::set_deref(&path, key, value)
            } else {
                xattr::set(&path, key, value)
            };
            if let Err(e) = r {
                match e.raw_os_error() {
                    // Not every filesystem or file type takes every namespace (user.* on a
                    // symlink); Docker skips those too.
                    Some(libc::ENOTSUP) | Some(libc::EPERM) => {
                        tracing::warn!(entry, xattr = %key.to_string_lossy(), error = %e, "xattr not set")
                    }
                    _ => {
                        return Err(Error::io(
                            format!("setting xattr {key:?} on layer entry {entry:?}"),
                            e,
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn set_times(&self, dir: &OwnedFd, name: &OsStr, meta: &Meta, entry: &str) -> Result<()> {
        utimensat(
            dir,
            name,
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.err(entry, "setting times of", e))
    }

    /// Opens the folder `comps` (relative to the root), creating missing folders; refuses
    /// symlinks and non-folders on the way.
    fn parent_dir(&mut self, comps: &[OsString], entry: &str) -> Result<OwnedFd> {
        let mut dir = self
            .root
            .try_clone()
            .map_err(|e| Error::io("duplicating a descriptor", e))?;
        for (i, c) in comps.iter().enumerate() {
            let so_far = &comps[..=i];
            match open_child(&dir, c) {
                Ok((fd, st)) if is(&st, SFlag::S_IFDIR) => {
                    dir = fd;
                    continue;
                }
                Ok((_, st)) if is(&st, SFlag::S_IFLNK) => {
                    return Err(Error::invalid_layer(
                        entry,
                        format!(
                            "its parent {:?} is a symbolic link; refusing to write through it",
                            display(so_far)
                        ),
                    ))
                }
                Ok(_) => {
                    return Err(Error::invalid_layer(
                        entry,
                        format!("its parent {:?} is not a folder", display(so_far)),
                    ))
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(self.err(entry, "opening the parent of", e)),
            }
            // Missing here. In an overlay upper dir the folder may come from a lower layer: copy
            // its owner and mode, as overlay's own copy-up would, so the merged folder keeps
            // them; when the layers below are not known yet, that happens in `settle`.
            let lower = match &self.lowers {
                Some(lowers) => lower_parent(lowers, so_far, entry)?,
                None => None,
            };
            mkdirat(&dir, c.as_os_str(), Mode::from_bits_truncate(0o700))
                .map_err(|e| self.err(entry, "creating the parent of", e))?;
            let made = match &lower {
                Some(st) => adopt(&dir, c, st),
                None => fchmodat(
                    &dir,
                    c.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                    FchmodatFlags::FollowSymlink,
                ),
            };
            made.map_err(|e| self.err(entry, "setting owner and mode of the parent of", e))?;
            if self.lowers.is_none() {
                self.track(so_far)?;
                self.implicit.insert(so_far.to_vec());
            }
            let (fd, _) =
                open_child(&dir, c).map_err(|e| self.err(entry, "opening the parent of", e))?;
            dir = fd;
        }
        Ok(dir)
    }

    /// The layers below; waits for them when they come [`Lowers::Later`], and then settles the
    /// folders made without them so far.
    fn lowers(&mut self) -> Result<Vec<PathBuf>> {
        if let Some(l) = &self.lowers {
            return Ok(l.clone());
        }
        let Lowers::Later(wait) = self.target.lowers else {
            unreachable!("lowers are only unknown when they come later");
        };
        let lowers = wait()?;
        let pending: Vec<_> = std::mem::take(&mut self.implicit).into_iter().collect();
        settle(self.target.root, &lowers, &pending)?;
        self.lowers = Some(lowers.clone());
        Ok(lowers)
    }

    /// Like [`parent_dir`](Self::parent_dir) but creates nothing: `None` when a component is
    /// missing.
    fn existing_dir(&self, comps: &[OsString], entry: &str) -> Result<Option<OwnedFd>> {
        let mut dir = self
            .root
            .try_clone()
            .map_err(|e| Error::io("duplicating a descriptor", e))?;
        for (i, c) in comps.iter().enumerate() {
            match open_child(&dir, c) {
                Ok((fd, st)) if is(&st, SFlag::S_IFDIR) => dir = fd,
                Ok((_, st)) if is(&st, SFlag::S_IFLNK) => {
                    return Err(Error::invalid_layer(
                        entry,
                        format!(
                            "its parent {:?} is a symbolic link; refusing to go through it",
                            display(&comps[..=i])
                        ),
                    ))
                }
                Ok(_) | Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
                Err(e) => return Err(self.err(entry, "opening the parent of", e)),
            }
        }
        Ok(Some(dir))
    }

    fn hard_link(&mut self, link: &[u8], dir: &OwnedFd, last: &OsStr, entry: &str) -> Result<()> {
        let target = components(link, entry)?;
        let Some((tlast, tparent)) = target.split_last() else {
            return Err(Error::invalid_layer(entry, "hard link to the root folder"));
        };
        let missing = || {
            Error::invalid_layer(
                entry,
                format!(
                    "hard link target {:?} does not exist in this layer or below",
                    display(&target)
                ),
            )
        };
        let tdir = match self.existing_dir(tparent, entry)? {
            Some(d)
                if stat_child(&d, tlast)
                    .map_err(|e| self.err(entry, "inspecting", e))?
                    .is_some() =>
            {
                d
            }
            _ => {
                // Overlay: the target lives in a lower layer; copy it up, then link to the copy.
                let lowers = self.lowers()?;
                let Some((ldir, st)) = lower_lookup(&lowers, &target) else {
                    return Err(missing());
                };
                if !is(&st, SFlag::S_IFREG) {
                    return Err(Error::invalid_layer(
                        entry,
                        format!(
                            "hard link target {:?} in a layer below is not a regular file",
                            display(&target)
                        ),
                    ));
                }
                let tdir = self.parent_dir(tparent, entry)?;
                copy_up(&ldir, tlast, &st, &tdir).map_err(|e| {
                    Error::io(
                        format!("copying up {:?} for hard link {entry:?}", display(&target)),
                        e,
                    )
                })?;
                tdir
            }
        };
        let st = stat_child(&tdir, tlast)
            .map_err(|e| self.err(entry, "inspecting", e))?
            .ok_or_else(missing)?;
        if is(&st, SFlag::S_IFDIR) {
            return Err(Error::invalid_layer(entry, "hard link to a folder"));
        }
        linkat(&tdir, tlast.as_os_str(), dir, last, AtFlags::empty())
            .map_err(|e| self.err(entry, "linking", e))
    }

    fn whiteout(&mut self, parent: &[OsString], victim: &OsStr, entry: &str) -> Result<()> {
        if victim.is_empty() || victim == "." || victim == ".." {
            return Err(Error::invalid_layer(entry, "a whiteout must name a file"));
        }
        match self.target.whiteouts {
            Whiteouts::Overlay => {
                let dir = self.parent_dir(parent, entry)?;
                remove_at(&dir, victim)
                    .map_err(|e| Error::io(format!("replacing {entry:?}"), e))?;
                mknodat(&dir, victim, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|e| self.err(entry, "creating the whiteout device for", e))?;
            }
            Whiteouts::Delete => {
                if let Some(dir) = self.existing_dir(parent, entry)? {
                    remove_at(&dir, victim)
                        .map_err(|e| Error::io(format!("applying whiteout {entry:?}"), e))?;
                }
            }
        }
        Ok(())
    }

    fn opaque(&mut self, comps: &[OsString], entry: &str) -> Result<()> {
        match self.target.whiteouts {
            Whiteouts::Overlay => {
                let dir = self.parent_dir(comps, entry)?;
                xattr::set_deref(proc_path(&dir, OsStr::new("")), OVERLAY_OPAQUE_XATTR, b"y")
                    .map_err(|e| Error::io(format!("marking {entry:?} opaque"), e))?;
            }
            Whiteouts::Delete => {
                let dir = self.parent_dir(comps, entry)?;
                self.prune(&dir, comps, entry)?;
            }
        }
        Ok(())
    }

    /// Removes everything under `dir` (at `comps`) that this layer did not write, as the
    /// opaque folder hides all of it in an overlay.
    fn prune(&self, dir: &OwnedFd, comps: &[OsString], entry: &str) -> Result<()> {
        let readable = openat(
            dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(entry, "opening", e))?;
        let listed =
            children(readable).map_err(|e| Error::io(format!("listing for {entry:?}"), e))?;
        for child in listed {
            let mut path = comps.to_vec();
            path.push(child.clone());
            if !self.wrote(&path) {
                remove_at(dir, &child)
                    .map_err(|e| Error::io(format!("applying opaque {entry:?}"), e))?;
            } else if let Ok((fd, st)) = open_child(dir, &child) {
                if is(&st, SFlag::S_IFDIR) {
                    self.prune(&fd, &path, entry)?;
                }
            }
        }
        Ok(())
    }

    /// Whether this layer wrote `comps` or something below it.
    fn wrote(&self, comps: &[OsString]) -> bool {
        let mut path = joined(comps);
        if self.written.contains(&path) {
            return true;
        }
        path.push(b'/');
        self.written
            .range(path.clone()..)
            .next()
            .is_some_and(|w| w.starts_with(&path))
    }

    /// Sets folder times, and returns the folders still waiting for [`settle`].
    fn finish(self) -> Result<Vec<Vec<OsString>>> {
        // Deepest last in the list means contents came after; set in reverse order.
        for (comps, atime, mtime) in self.dir_times.iter().rev() {
            let entry = display(comps);
            let r = match comps.split_last() {
                // "." is the root folder itself, which is no symlink.
                None => utimensat(&self.root, ".", atime, mtime, UtimensatFlags::FollowSymlink),
                Some((last, parent)) => match self.existing_dir(parent, &entry)? {
                    Some(dir) => utimensat(
                        &dir,
                        last.as_os_str(),
                        atime,
                        mtime,
                        UtimensatFlags::NoFollowSymlink,
                    ),
                    // Deleted by a later whiteout.
                    None => Ok(()),
                },
            };
            match r {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(self.err(&entry, "setting times of", e)),
            }
        }
        Ok(self.implicit.into_iter().collect())
    }
}

/// Finds `comps` in the layers below, as overlay would show it: the nearest layer that has
/// it wins, a whiteout or an opaque folder on the way hides the layers under it. Returns the
/// folder holding the entry, and the entry's stat. Never follows symlinks.
fn lower_lookup(lowers: &[PathBuf], comps: &[OsString]) -> Option<(OwnedFd, FileStat)> {
    let (last, parents) = comps.split_last()?;
    'layers: for lower in lowers {
        let Ok(mut dir) = open_path(lower) else {
            continue;
        };
        let mut opaque = false;
        for c in parents {
            match open_child(&dir, c) {
                Ok((fd, st)) if is(&st, SFlag::S_IFDIR) => {
                    opaque |= is_opaque(&fd);
                    dir = fd;
                }
                Ok((_, st)) if is_whiteout_device(&st) => return None,
                // A symlink or file in a parent position hides the rest of the path below.
                Ok(_) => return None,
                Err(_) => {
                    if opaque {
                        return None;
                    }
                    continue 'layers;
                }
            }
        }
        match stat_child(&dir, last) {
            Ok(Some(st)) if is_whiteout_device(&st) => return None,
            Ok(Some(st)) => return Some((dir, st)),
            _ if opaque => return None,
            _ => {}
        }
    }
    None
}

fn is_opaque(dir: &OwnedFd) -> bool {
    matches!(
        xattr::get_deref(proc_path(dir, OsStr::new("")), OVERLAY_OPAQUE_XATTR),
        Ok(Some(v)) if v == b"y"
    )
}

/// Copies a regular file from a lower layer into `dst_dir` with its owner, mode, xattrs and
/// times.
fn copy_up(src_dir: &OwnedFd, name: &OsStr, st: &FileStat, dst_dir: &OwnedFd) -> io::Result<()> {
    let src = openat(
        src_dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let dst = openat(
        dst_dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut src = File::from(src);
    let mut dst = File::from(dst);
    io::copy(&mut src, &mut dst)?;
    nix::unistd::fchown(
        dst.as_fd(),
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )?;
    nix::sys::stat::fchmod(dst.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    let src_path = proc_path(src_dir, name);
    for key in xattr::list(&src_path)? {
        if key.as_bytes().starts_with(b"trusted.overlay.") {
            continue;
        }
        if let Some(v) = xattr::get(&src_path, &key)? {
            dst.set_xattr(&key, &v)?;
        }
    }
    nix::sys::stat::futimens(
        dst.as_fd(),
        &timespec(st.st_atime, st.st_atime_nsec),
        &timespec(st.st_mtime, st.st_mtime_nsec),
    )?;
    Ok(())
}

fn joined(comps: &[OsString]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c.as_bytes());
    }
    v
}

/// Device numbers as the tests read them back.
#[cfg(test)]
fn dev_of(st: &FileStat) -> (u64, u64) {
    (
        nix::sys::stat::major(st.st_rdev),
        nix::sys::stat::minor(st.st_rdev),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A tar built by hand, entry by entry, with full control over names.
    struct Layer {
        builder: tar::Builder<Vec<u8>>,
    }

    impl Layer {
        fn new() -> Layer {
            Layer {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_000_000_000);
            h.set_size(0);
            h
        }

        /// Writes the raw name into the header (no checks), so hostile names are possible.
        fn raw_name(h: &mut tar::Header, name: &str) {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        }

        fn raw_link(h: &mut tar::Header, link: &str) {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.linkname = [0; 100];
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }

        fn file(mut self, name: &str, data: &[u8]) -> Layer {
            self.file_with(name, data, 0o644, 0, 0);
            self
        }

        fn file_with(&mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) {
            let mut h = Self::header(tar::EntryType::Regular, mode);
            Self::raw_name(&mut h, name);
            h.set_size(data.len() as u64);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_cksum();
            self.builder.append(&h, data).unwrap();
        }

        fn dir(mut self, name: &str, mode: u32) -> Layer {
            let mut h = Self::header(tar::EntryType::Directory, mode);
            Self::raw_name(&mut h, name);
            h.set_cksum();
            self.builder.append(&h, io::empty()).unwrap();
            self
        }

        fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Layer {
            let mut h = Self::header(kind, 0o777);
            Self::raw_name(&mut h, name);
            Self::raw_link(&mut h, target);
            h.set_cksum();
            self.builder.append(&h, io::empty()).unwrap();
            self
        }

        fn device(mut self, kind: tar::EntryType, name: &str, major: u32, minor: u32) -> Layer {
            let mut h = Self::header(kind, 0o640);
            Self::raw_name(&mut h, name);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_cksum();
            self.builder.append(&h, io::empty()).unwrap();
            self
        }

        fn with_xattr(mut self, name: &str, key: &str, value: &[u8]) -> Layer {
            let k = format!("SCHILY.xattr.{key}");
            self.builder
                .append_pax_extensions([(k.as_str(), value)])
                .unwrap();
            self.file_with(name, b"x", 0o644, 0, 0);
            self
        }

        fn tar(self) -> Vec<u8> {
            self.builder.into_inner().unwrap()
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A root with an `outside` folder next to the snapshot folder, to watch for escapes.
    struct Sandbox {
        dir: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("snap")).unwrap();
            std::fs::create_dir(dir.path().join("outside")).unwrap();
            std::fs::write(dir.path().join("outside/passwd"), b"root:x:0:0").unwrap();
            Sandbox { dir }
        }
        fn snap(&self) -> PathBuf {
            self.dir.path().join("snap")
        }
        fn outside(&self) -> PathBuf {
            self.dir.path().join("outside")
        }
        fn apply(&self, tar: &[u8], whiteouts: Whiteouts) -> Result<Applied> {
            self.apply_on(tar, whiteouts, &[])
        }
        fn apply_on(
            &self,
            tar: &[u8],
            whiteouts: Whiteouts,
            lowers: &[PathBuf],
        ) -> Result<Applied> {
            let snap = self.snap();
            let target = Target {
                root: &snap,
                lowers: Lowers::Ready(lowers),
                whiteouts,
            };
            apply(
                tar,
                "",
                Some(&Digest::sha256_of(tar)),
                &target,
                &Limits::default(),
            )
        }
        fn outside_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(self.outside())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["passwd"]);
            assert_eq!(
                std::fs::read(self.outside().join("passwd")).unwrap(),
                b"root:x:0:0"
            );
            // Nothing appeared next to the snapshot either.
            let mut top: Vec<_> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            top.sort();
            assert_eq!(top, ["outside", "snap"]);
        }
    }

    fn refused(r: Result<Applied>, needle: &str) {
        match r {
            Err(Error::InvalidLayer { entry, reason }) => {
                assert!(
                    entry.contains(needle) || reason.contains(needle),
                    "{entry}: {reason}"
                )
            }
            other => panic!("expected an invalid layer error, got {other:?}"),
        }
    }

    #[test]
    fn dotdot_is_refused() {
        let s = Sandbox::new();
        let tar = Layer::new().file("../outside/passwd", b"pwned").tar();
        refused(s.apply(&tar, Whiteouts::Delete), "../outside/passwd");
        let tar = Layer::new()
            .dir("a/", 0o755)
            .file("a/../../outside/x", b"pwned")
            .tar();
        refused(s.apply(&tar, Whiteouts::Overlay), "..");
        s.outside_untouched();
    }

    #[test]
    fn absolute_paths_land_inside() {
        let s = Sandbox::new();
        let outside = s.outside();
        let abs = format!("{}/evil", outside.display());
        let tar = Layer::new()
            .file("/etc/hostname", b"box")
            .file(&abs, b"pwned")
            .tar();
        s.apply(&tar, Whiteouts::Delete).unwrap();
        assert_eq!(
            std::fs::read(s.snap().join("etc/hostname")).unwrap(),
            b"box"
        );
        assert!(s.snap().join(abs.trim_start_matches('/')).is_file());
        s.outside_untouched();
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        for wh in [Whiteouts::Delete, Whiteouts::Overlay] {
            let s = Sandbox::new();
            let outside = s.outside().display().to_string();
            let tar = Layer::new()
                .link(tar::EntryType::Symlink, "evil", &outside)
                .file("evil/passwd", b"pwned")
                .tar();
            refused(s.apply(&tar, wh), "evil/passwd");
            // The same with a relative link climbing out.
            let s2 = Sandbox::new();
            let tar = Layer::new()
                .link(tar::EntryType::Symlink, "up", "../outside")
                .file("up/new", b"pwned")
                .tar();
            refused(s2.apply(&tar, wh), "symbolic link");
            s.outside_untouched();
            s2.outside_untouched();
        }
    }

    #[test]
    fn a_file_replaces_a_symlink_instead_of_following_it() {
        let s = Sandbox::new();
        let target = s.outside().join("passwd").display().to_string();
        let tar = Layer::new()
            .link(tar::EntryType::Symlink, "passwd", &target)
            .file("passwd", b"inside")
            .tar();
        s.apply(&tar, Whiteouts::Delete).unwrap();
        let md = std::fs::symlink_metadata(s.snap().join("passwd")).unwrap();
        assert!(md.is_file());
        assert_eq!(std::fs::read(s.snap().join("passwd")).unwrap(), b"inside");
        s.outside_untouched();
    }

    #[test]
    fn a_symlink_in_a_lower_layer_is_not_followed() {
        let s = Sandbox::new();
        let lower = s.dir.path().join("lower");
        std::fs::create_dir(&lower).unwrap();
        std::os::unix::fs::symlink(s.outside(), lower.join("etc")).unwrap();
        let tar = Layer::new().file("etc/passwd", b"pwned").tar();
        let r = s.apply_on(&tar, Whiteouts::Overlay, std::slice::from_ref(&lower));
        refused(r, "layer below");
        std::fs::remove_file(lower.join("etc")).unwrap();
        std::fs::remove_dir(&lower).unwrap();
        s.outside_untouched();
    }

    #[test]
    fn hard_links_must_stay_inside() {
        let s = Sandbox::new();
        let outside = s.outside().join("passwd").display().to_string();
        let tar = Layer::new()
            .link(tar::EntryType::Link, "pw", &outside)
            .tar();
        refused(s.apply(&tar, Whiteouts::Delete), "does not exist");
        let tar = Layer::new()
            .link(tar::EntryType::Link, "pw", "../outside/passwd")
            .tar();
        refused(s.apply(&tar, Whiteouts::Delete), "..");
        let tar = Layer::new()
            .link(
                tar::EntryType::Symlink,
                "evil",
                &s.outside().display().to_string(),
            )
            .link(tar::EntryType::Link, "pw", "evil/passwd")
            .tar();
        refused(s.apply(&tar, Whiteouts::Delete), "symbolic link");
        s.outside_untouched();
        assert_eq!(
            std::fs::metadata(s.outside().join("passwd"))
                .unwrap()
                .nlink(),
            1
        );
    }

    #[test]
    fn hard_links_and_symlinks_and_devices() {
        let s = Sandbox::new();
        let tar = Layer::new()
            .dir("bin/", 0o755)
            .file("bin/busybox", b"elf")
            .link(tar::EntryType::Link, "bin/sh", "bin/busybox")
            .link(tar::EntryType::Symlink, "bin/ls", "busybox")
            .dir("dev/", 0o755)
            .device(tar::EntryType::Char, "dev/null", 1, 3)
            .device(tar::EntryType::Block, "dev/loop9", 7, 9)
            .device(tar::EntryType::Fifo, "dev/fifo", 0, 0)
            .tar();
        s.apply(&tar, Whiteouts::Delete).unwrap();
        let snap = s.snap();
        let a = std::fs::metadata(snap.join("bin/busybox")).unwrap();
        let b = std::fs::metadata(snap.join("bin/sh")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(
            std::fs::read_link(snap.join("bin/ls")).unwrap(),
            Path::new("busybox")
        );
        let root = open_path(&snap).unwrap();
        let dev = open_path(&snap.join("dev")).unwrap();
        let null = stat_child(&dev, OsStr::new("null")).unwrap().unwrap();
        assert!(is(&null, SFlag::S_IFCHR));
        assert_eq!(dev_of(&null), (1, 3));
        assert_eq!(null.st_mode & 0o7777, 0o640);
        let lp = stat_child(&dev, OsStr::new("loop9")).unwrap().unwrap();
        assert!(is(&lp, SFlag::S_IFBLK));
        assert_eq!(dev_of(&lp), (7, 9));
        assert!(is(
            &stat_child(&dev, OsStr::new("fifo")).unwrap().unwrap(),
            SFlag::S_IFIFO
        ));
        drop(root);
    }

    #[test]
    fn owners_modes_setuid_xattrs_and_times() {
        let s = Sandbox::new();
        let mut layer = Layer::new()
            .dir("./", 0o711)
            .dir("usr/", 0o755)
            .dir("usr/bin/", 0o755);
        layer.file_with("usr/bin/su", b"elf", 0o4755, 1000, 1001);
        let tar = layer
            .with_xattr("usr/bin/ping", "security.capability", &capability())
            .tar();
        s.apply(&tar, Whiteouts::Delete).unwrap();
        let su = std::fs::metadata(s.snap().join("usr/bin/su")).unwrap();
        assert_eq!((su.uid(), su.gid()), (1000, 1001));
        assert_eq!(
            su.permissions().mode() & 0o7777,
            0o4755,
            "setuid survives the chown"
        );
        assert_eq!(su.mtime(), 1_000_000_000);
        let cap = xattr::get(s.snap().join("usr/bin/ping"), "security.capability").unwrap();
        assert_eq!(cap, Some(capability()));
        let root = std::fs::metadata(s.snap()).unwrap();
        assert_eq!((root.mode() & 0o7777, root.mtime()), (0o711, 1_000_000_000));
        // Folder times are set after their contents were written.
        assert_eq!(
            std::fs::metadata(s.snap().join("usr/bin")).unwrap().mtime(),
            1_000_000_000
        );
        assert_eq!(
            std::fs::metadata(s.snap().join("usr")).unwrap().mtime(),
            1_000_000_000
        );
    }

    /// A version-2 file capability: cap_net_raw permitted+effective.
    fn capability() -> Vec<u8> {
        let mut v = vec![0u8; 20];
        v[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        v[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
        v
    }

    #[test]
    fn overlay_xattrs_from_a_layer_are_dropped() {
        let s = Sandbox::new();
        let tar = Layer::new()
            .with_xattr("f", "trusted.overlay.redirect", b"/etc")
            .tar();
        s.apply(&tar, Whiteouts::Overlay).unwrap();
        assert_eq!(
            xattr::get(s.snap().join("f"), "trusted.overlay.redirect").unwrap(),
            None
        );
    }

    #[test]
    fn whiteouts_for_overlay() {
        let s = Sandbox::new();
        let tar = Layer::new()
            .dir("etc/", 0o755)
            .file("etc/.wh.motd", b"")
            .dir("var/", 0o755)
            .file("var/.wh..wh..opq", b"")
            .file("var/new", b"n")
            .file(".wh..wh.plnk", b"")
            .tar();
        s.apply(&tar, Whiteouts::Overlay).unwrap();
        let etc = open_path(&s.snap().join("etc")).unwrap();
        let motd = stat_child(&etc, OsStr::new("motd")).unwrap().unwrap();
        assert!(is_whiteout_device(&motd));
        assert_eq!(
            xattr::get(s.snap().join("var"), OVERLAY_OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
        assert!(s.snap().join("var/new").is_file());
        assert!(!s.snap().join(".wh..wh.plnk").exists());
    }

    #[test]
    fn whiteouts_for_a_full_copy() {
        let s = Sandbox::new();
        let snap = s.snap();
        std::fs::create_dir_all(snap.join("etc")).unwrap();
        std::fs::write(snap.join("etc/motd"), b"hi").unwrap();
        std::fs::write(snap.join("etc/keep"), b"k").unwrap();
        std::fs::create_dir_all(snap.join("var/lib/deep")).unwrap();
        std::fs::write(snap.join("var/old"), b"o").unwrap();
        let tar = Layer::new()
            .file("etc/.wh.motd", b"")
            .file("etc/.wh.never-there", b"")
            .dir("var/", 0o755)
            .file("var/early", b"this layer")
            .file("var/lib/new", b"this layer, below an implicit folder")
            .file("var/.wh..wh..opq", b"")
            .file("var/late", b"this layer")
            .tar();
        s.apply(&tar, Whiteouts::Delete).unwrap();
        assert!(!snap.join("etc/motd").exists());
        assert!(snap.join("etc/keep").exists());
        let mut var: Vec<_> = std::fs::read_dir(snap.join("var"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        var.sort();
        assert_eq!(var, ["early", "late", "lib"]);
        assert!(snap.join("var/lib/new").exists() && !snap.join("var/lib/deep").exists());
        // A whiteout naming `..` is refused.
        let tar = Layer::new().file("etc/.wh...", b"").tar();
        refused(s.apply(&tar, Whiteouts::Delete), "whiteout");
        s.outside_untouched();
    }

    #[test]
    fn hard_link_to_a_lower_layer_copies_up() {
        let s = Sandbox::new();
        let lower = s.dir.path().join("lower");
        std::fs::create_dir_all(lower.join("bin")).unwrap();
        std::fs::write(lower.join("bin/busybox"), b"elf").unwrap();
        let tar = Layer::new()
            .link(tar::EntryType::Link, "bin/sh", "bin/busybox")
            .tar();
        s.apply_on(&tar, Whiteouts::Overlay, std::slice::from_ref(&lower))
            .unwrap();
        let a = std::fs::metadata(s.snap().join("bin/busybox")).unwrap();
        let b = std::fs::metadata(s.snap().join("bin/sh")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(std::fs::read(s.snap().join("bin/sh")).unwrap(), b"elf");
        assert_eq!(
            std::fs::metadata(lower.join("bin/busybox"))
                .unwrap()
                .nlink(),
            1
        );
    }

    #[test]
    fn wrong_diff_id_is_data_loss() {
        let s = Sandbox::new();
        let tar = Layer::new().file("a", b"a").tar();
        let snap = s.snap();
        let target = Target {
            root: &snap,
            lowers: Lowers::Ready(&[]),
            whiteouts: Whiteouts::Delete,
        };
        let wrong = Digest::sha256_of(b"something else");
        let e = apply(&tar[..], "", Some(&wrong), &target, &Limits::default()).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert_eq!(e.code(), tonic::Code::DataLoss);
    }

    #[test]
    fn compressed_layers_hash_the_uncompressed_stream() {
        let tar = Layer::new().file("a", b"a").tar();
        let diff_id = Digest::sha256_of(&tar);
        for (media_type, bytes) in [
            ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&tar)),
            ("", gzip(&tar)),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                zstd::encode_all(&tar[..], 3).unwrap(),
            ),
            ("", zstd::encode_all(&tar[..], 3).unwrap()),
            ("application/vnd.oci.image.layer.v1.tar", tar.clone()),
        ] {
            let s = Sandbox::new();
            let snap = s.snap();
            let target = Target {
                root: &snap,
                lowers: Lowers::Ready(&[]),
                whiteouts: Whiteouts::Overlay,
            };
            let applied = apply(
                &bytes[..],
                media_type,
                Some(&diff_id),
                &target,
                &Limits::default(),
            )
            .unwrap();
            assert_eq!(applied.size, tar.len() as u64);
            assert_eq!(std::fs::read(snap.join("a")).unwrap(), b"a");
        }
    }

    #[test]
    fn without_a_diff_id_a_tar_cut_at_an_entry_boundary_is_refused() {
        let tar = Layer::new().file("a", b"a").file("b", b"b").tar();
        // Header and one data block of the first entry: a clean cut before the second.
        let cut = &tar[..1024];
        let s = Sandbox::new();
        let snap = s.snap();
        let target = Target {
            root: &snap,
            lowers: Lowers::Ready(&[]),
            whiteouts: Whiteouts::Overlay,
        };
        let e = apply(cut, "", None, &target, &Limits::default()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::DataLoss, "{e}");
        let s = Sandbox::new();
        let snap = s.snap();
        let target = Target {
            root: &snap,
            lowers: Lowers::Ready(&[]),
            whiteouts: Whiteouts::Overlay,
        };
        let applied = apply(&tar[..], "", None, &target, &Limits::default()).unwrap();
        assert_eq!(applied.diff_id, Digest::sha256_of(&tar));
    }

    #[test]
    fn truncated_gzip_is_data_loss() {
        let tar = Layer::new().file("a", &[7u8; 100_000]).tar();
        let gz = gzip(&tar);
        let s = Sandbox::new();
        let snap = s.snap();
        let target = Target {
            root: &snap,
            lowers: Lowers::Ready(&[]),
            whiteouts: Whiteouts::Overlay,
        };
        let e = apply(
            &gz[..gz.len() / 2],
            "",
            Some(&Digest::sha256_of(&tar)),
            &target,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::DataLoss, "{e}");
    }

    fn target(snap: &Path) -> Target<'_> {
        Target {
            root: snap,
            lowers: Lowers::Ready(&[]),
            whiteouts: Whiteouts::Overlay,
        }
    }

    #[test]
    fn a_gzipped_gib_long_name_is_refused_without_reading_it() {
        let s = Sandbox::new();
        let snap = s.snap();
        let gz = flate2::read::GzEncoder::new(
            berth_archive::hostile::Stream::long_name_gib(),
            flate2::Compression::best(),
        );
        let e = apply(gz, "", None, &target(&snap), &Limits::default()).unwrap_err();
        assert!(matches!(e, Error::Layer(_)), "{e}");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let msg = e.to_string();
        assert!(
            msg.contains("GNU long name header of 1073741824 bytes")
                && msg.contains("nothing was committed"),
            "{msg}"
        );
    }

    #[test]
    fn a_sparse_tib_is_unpacked_sparse() {
        let tib = 1u64 << 40;
        let mut tar =
            berth_archive::hostile::sparse("disk.img", tib, &[(0, b"head"), (tib - 4, b"tail")]);
        tar.extend_from_slice(&[0; 1024]);
        let s = Sandbox::new();
        let snap = s.snap();
        apply(&tar[..], "", None, &target(&snap), &Limits::default()).unwrap();
        let path = snap.join("disk.img");
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.len(), tib);
        // Two 4-byte segments: a few blocks of 512 bytes, never the 2^31 a full file takes.
        assert!(md.blocks() <= 64, "{} blocks", md.blocks());
        let mut f = File::open(&path).unwrap();
        let mut buf = [0u8; 4];
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"head");
        std::io::Seek::seek(&mut f, io::SeekFrom::Start(tib - 4)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"tail");
        std::io::Seek::seek(&mut f, io::SeekFrom::Start(1 << 30)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0; 4], "the hole reads as zeros");
    }

    #[test]
    fn limits_stop_a_layer_with_resource_exhausted() {
        let tar = Layer::new()
            .dir("d/", 0o755)
            .file("d/a", b"a")
            .file("d/b", b"b")
            .tar();
        let s = Sandbox::new();
        let snap = s.snap();
        let limits = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let e = apply(&tar[..], "", None, &target(&snap), &limits).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        assert!(e.to_string().contains("max_entries"), "{e}");
        let limits = Limits {
            max_unpacked_size: 1,
            ..Limits::default()
        };
        let e = apply(&tar[..], "", None, &target(&snap), &limits).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        assert!(e.to_string().contains("\"d/b\""), "{e}");
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(pax_time(b"12.5"), Some(TimeSpec::new(12, 500_000_000)));
        assert_eq!(pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(pax_time(b"x"), None);
    }
}
