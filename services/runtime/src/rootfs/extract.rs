//! Unpacking a client's tar into a folder of a container (`docker cp SRC CT:DST`).
//!
//! The tar comes from a stranger and the container may be hostile too, so:
//! - the archive is read by [`berth_archive::Reader`] (bounded headers, names, entries and
//!   bytes);
//! - an entry name is split into components: empty and `.` ones dropped, a leading `/`
//!   dropped, and any `..` refused;
//! - the folder an entry goes in is opened with `openat2(RESOLVE_IN_ROOT)` from the
//!   container's root ([`open_in_root`]), so a symlink in the container or one the archive
//!   made earlier (`evil -> /`, then `evil/etc/passwd`) resolves inside the container, never
//!   on the host;
//! - the entry itself is made with `*at` calls that never follow its last component
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`, `symlinkat`, `mkdirat`); what was there is removed first;
//! - a hard link's target is resolved the same way, inside the root.

use crate::copyup::{is, remove_at, stat_at, NEW_FILE};
use berth_archive::{ArchiveError, Entry, Reader};
use berth_core::config::Limits;
use berth_shim::mounts::open_in_root;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmodat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, linkat, symlinkat, Gid, Uid};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// How a PUT unpacks (Docker's query parameters).
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `noOverwriteDirNonDir`: a folder is never replaced by a non-folder, nor the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// `copyUIDGID`: owners from the archive; else root's.
    pub copy_uid_gid: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The destination folder is missing.
    #[error("Could not find the file {0} in container")]
    NoDestination(String),
    #[error("extraction point is not a directory: {0}")]
    NotADirectory(String),
    /// The archive is hostile or malformed: the request is at fault.
    #[error("refused archive entry {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    #[error("cannot {action} {entry:?} in the container's {dest}: {source}")]
    Io {
        action: &'static str,
        entry: String,
        dest: String,
        source: io::Error,
    },
    #[error("the archive is unreadable: {0}")]
    Archive(#[from] ArchiveError),
}

/// Unpacks `tar` into folder `dest` of `root`.
pub fn extract<R: Read>(
    root: &OwnedFd,
    dest: &str,
    tar: R,
    options: Options,
) -> Result<(), ExtractError> {
    let dest_rel = super::relative(dest);
    match open_in_root(root.as_fd(), &dest_rel, OFlag::empty()) {
        Err(nix::errno::Errno::ENOENT) => return Err(ExtractError::NoDestination(dest.into())),
        Err(e) => {
            return Err(ExtractError::Io {
                action: "open",
                entry: String::new(),
                dest: dest.into(),
                source: e.into(),
            })
        }
        Ok(fd) => {
            let st = nix::sys::stat::fstat(&fd).map_err(|e| ExtractError::Io {
                action: "stat",
                entry: String::new(),
                dest: dest.into(),
                source: e.into(),
            })?;
            if !is(&st, SFlag::S_IFDIR) {
                return Err(ExtractError::NotADirectory(dest.into()));
            }
        }
    }
    let mut reader = Reader::new(tar, Limits::default());
    let unpack = Unpack {
        root,
        dest_rel,
        dest,
        options,
    };
    while let Some(entry) = reader.next_entry()? {
        unpack.entry(&mut reader, &entry)?;
    }
    Ok(())
}

/// The components of an entry name; `..` anywhere is refused.
fn components(entry: &Entry) -> Result<Vec<OsString>, ExtractError> {
    let mut out = Vec::new();
    for c in entry.path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(ExtractError::Refused {
                    entry: entry.name(),
                    reason: "its name climbs out of the destination with `..`".into(),
                })
            }
            c => out.push(std::ffi::OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

struct Unpack<'a> {
    root: &'a OwnedFd,
    dest_rel: PathBuf,
    dest: &'a str,
    options: Options,
}

impl Unpack<'_> {
    fn io(
        &self,
        action: &'static str,
        entry: &Entry,
    ) -> impl Fn(nix::errno::Errno) -> ExtractError {
        let (entry, dest) = (entry.name(), self.dest.to_string());
        move |e| ExtractError::Io {
            action,
            entry: entry.clone(),
            dest: dest.clone(),
            source: e.into(),
        }
    }

    fn entry<R: Read>(&self, reader: &mut Reader<R>, entry: &Entry) -> Result<(), ExtractError> {
        let comps = components(entry)?;
        let Some((name, parents)) = comps.split_last() else {
            return Ok(()); // the destination itself (`./`)
        };
        let parent = self
            .parent_dir(parents)
            .map_err(self.io("open the folder of", entry))?;
        // A real descriptor: `openat` of a new file needs one.
        let parent = openat(
            &parent,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.io("open the folder of", entry))?;
        let kind = entry.kind();
        let is_dir = kind == tar::EntryType::Directory;
        if let Some(old) = stat_at(&parent, name).map_err(|e| self.io_err("stat", entry, e))? {
            let old_dir = is(&old, SFlag::S_IFDIR);
            if old_dir && is_dir {
                return self.finish(&parent, name, entry, false);
            }
            if self.options.no_overwrite_dir_non_dir && old_dir != is_dir {
                let (a, b) = if old_dir {
                    ("directory", "non-directory")
                } else {
                    ("non-directory", "directory")
                };
                return Err(ExtractError::Refused {
                    entry: entry.name(),
                    reason: format!("cannot overwrite {a} with {b}"),
                });
            }
            remove_at(&parent, name).map_err(|e| self.io_err("replace", entry, e))?;
        }
        self.create(reader, &parent, name, entry)
    }

    /// The folder `parents` of the destination, resolved inside the root; a missing one is
    /// made (0755), as Docker makes the parents an archive does not list.
    fn parent_dir(&self, parents: &[OsString]) -> nix::Result<OwnedFd> {
        let mut rel = self.dest_rel.clone();
        let mut dir = open_in_root(self.root.as_fd(), &rel, OFlag::O_DIRECTORY)?;
        for p in parents {
            rel.push(p);
            dir = match open_in_root(self.root.as_fd(), &rel, OFlag::O_DIRECTORY) {
                Err(nix::errno::Errno::ENOENT) => {
                    // Made from the folder above, resolved in the root, never through `p`.
                    let real = openat(
                        &dir,
                        ".",
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )?;
                    match mkdirat(&real, p.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    open_in_root(self.root.as_fd(), &rel, OFlag::O_DIRECTORY)?
                }
                other => other?,
            };
        }
        Ok(dir)
    }

    fn io_err(&self, action: &'static str, entry: &Entry, e: io::Error) -> ExtractError {
        ExtractError::Io {
            action,
            entry: entry.name(),
            dest: self.dest.to_string(),
            source: e,
        }
    }

    fn create<R: Read>(
        &self,
        reader: &mut Reader<R>,
        parent: &OwnedFd,
        name: &OsString,
        entry: &Entry,
    ) -> Result<(), ExtractError> {
        let mode = Mode::from_bits_truncate((entry.header.mode().unwrap_or(0o644) & 0o7777) as _);
        let make = self.io("create", entry);
        match entry.kind() {
            tar::EntryType::Directory => {
                mkdirat(parent, name.as_os_str(), Mode::from_bits_truncate(0o700)).map_err(make)?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = openat(
                    parent,
                    name.as_os_str(),
                    NEW_FILE,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(make)?;
                reader.write_file(entry, &mut File::from(fd))?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link.clone().unwrap_or_default();
                symlinkat(
                    std::ffi::OsStr::from_bytes(&target),
                    parent,
                    name.as_os_str(),
                )
                .map_err(make)?;
                return self.finish(parent, name, entry, true);
            }
            tar::EntryType::Link => {
                let target = entry.link.clone().unwrap_or_default();
                let rel: PathBuf = self
                    .dest_rel
                    .join(super::relative(&String::from_utf8_lossy(&target)));
                let src = open_in_root(self.root.as_fd(), &rel, OFlag::O_NOFOLLOW)
                    .map_err(self.io("find the link target of", entry))?;
                linkat(&src, "", parent, name.as_os_str(), AtFlags::AT_EMPTY_PATH).map_err(make)?;
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let k = match entry.kind() {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = nix::sys::stat::makedev(
                    entry
                        .header
                        .device_major()
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                        .into(),
                    entry
                        .header
                        .device_minor()
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                        .into(),
                );
                mknodat(parent, name.as_os_str(), k, mode, dev).map_err(make)?;
            }
            _ => return Ok(()), // PAX globals and the like carry no file
        }
        self.finish(parent, name, entry, false)
    }

    /// Owner, mode and mtime of a made entry (a symlink: owner only).
    fn finish(
        &self,
        parent: &OwnedFd,
        name: &OsString,
        entry: &Entry,
        symlink: bool,
    ) -> Result<(), ExtractError> {
        let (uid, gid) = if self.options.copy_uid_gid {
            (
                entry.header.uid().unwrap_or(0) as u32,
                entry.header.gid().unwrap_or(0) as u32,
            )
        } else {
            (0, 0)
        };
        fchownat(
            parent,
            name.as_os_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(self.io("set the owner of", entry))?;
        if symlink {
            return Ok(());
        }
        let mode = Mode::from_bits_truncate((entry.header.mode().unwrap_or(0o644) & 0o7777) as _);
        fchmodat(
            parent,
            name.as_os_str(),
            mode,
            FchmodatFlags::NoFollowSymlink,
        )
        .or_else(|e| match e {
            // Older kernels lack fchmodat2: the entry is not a symlink, follow is the same.
            nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOSYS => {
                fchmodat(parent, name.as_os_str(), mode, FchmodatFlags::FollowSymlink)
            }
            e => Err(e),
        })
        .map_err(self.io("set the mode of", entry))?;
        let t = nix::sys::time::TimeSpec::new(entry.header.mtime().unwrap_or(0) as i64, 0);
        nix::sys::stat::utimensat(
            parent,
            name.as_os_str(),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(self.io("set the time of", entry))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn open_root(p: &Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap()
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            // Names as a hostile client writes them, unchecked by the tar crate.
            let n = name.as_bytes();
            h.as_old_mut().name[..n.len()].copy_from_slice(n);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn files_and_folders_land_in_the_destination() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("tmp")).unwrap();
        let tar = tar_of(&[
            ("d/", tar::EntryType::Directory, ""),
            ("d/f", tar::EntryType::Regular, "hello"),
            ("/abs", tar::EntryType::Regular, "rooted"),
            ("implicit/parents/f", tar::EntryType::Regular, "made"),
        ]);
        extract(
            &open_root(t.path()),
            "/tmp",
            tar.as_slice(),
            Options::default(),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("tmp/d/f")).unwrap(),
            "hello"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("tmp/abs")).unwrap(),
            "rooted"
        );
        let made = t.path().join("tmp/implicit/parents/f");
        assert_eq!(fs::read_to_string(made).unwrap(), "made");
        let e = extract(
            &open_root(t.path()),
            "/nope",
            tar.as_slice(),
            Options::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ExtractError::NoDestination(_)), "{e}");
    }

    #[test]
    fn hostile_archives_write_nothing_outside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let (root, outside) = (t.path().join("root"), t.path().join("outside"));
        fs::create_dir_all(root.join("tmp")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // The container's own symlink to `/` and one out with `..`.
        std::os::unix::fs::symlink("/", root.join("tmp/evil")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("tmp/host")).unwrap();
        let fd = open_root(&root);
        let dotdot = tar_of(&[("../../outside/x", tar::EntryType::Regular, "bad")]);
        let e = extract(&fd, "/tmp", dotdot.as_slice(), Options::default()).unwrap_err();
        assert!(matches!(e, ExtractError::Refused { .. }), "{e}");
        // Through the container's symlinks, and through one the archive makes.
        for hostile in [
            tar_of(&[("evil/x", tar::EntryType::Regular, "in root")]),
            tar_of(&[("host/y", tar::EntryType::Regular, "in root")]),
            tar_of(&[
                ("mine", tar::EntryType::Symlink, "../../../../.."),
                ("mine/z", tar::EntryType::Regular, "in root"),
            ]),
        ] {
            let _ = extract(&fd, "/tmp", hostile.as_slice(), Options::default());
        }
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing lands outside"
        );
        assert_eq!(fs::read_to_string(root.join("x")).unwrap(), "in root");
        assert_eq!(fs::read_to_string(root.join("z")).unwrap(), "in root");
        // Into the destination when it is itself a symlink out of the root.
        let one = tar_of(&[("w", tar::EntryType::Regular, "in root")]);
        let e = extract(&fd, "/tmp/host", one.as_slice(), Options::default());
        assert!(e.is_err() || fs::read_dir(&outside).unwrap().count() == 0);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert!(!t.path().join("x").exists() && !Path::new("/x").exists());
    }
}
