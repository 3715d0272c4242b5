//! The build context: the tar the client streams, unpacked into a private folder.
//!
//! The client is not trusted: an entry whose name is absolute or has a `..` component is
//! refused, a parent that is a symlink is never written through (an entry below it is
//! refused), devices and fifos are skipped, and the context is read with
//! [`berth_archive::Reader`]: headers and names capped, entries and bytes within
//! `[limits]`, sparse files written sparse. Symlinks themselves are kept as they are: COPY
//! resolves them inside the context.

use berth_archive::{ArchiveError, Reader};
use berth_core::config::Limits;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context: entry {0:?} is outside the context (absolute or with '..')")]
    Outside(String),
    #[error("build context: entry {0:?} lies below a symbolic link")]
    BelowSymlink(String),
    #[error("build context: {0}")]
    Archive(#[from] ArchiveError),
    #[error("build context: {0}")]
    Io(#[from] io::Error),
}

impl From<ContextError> for Status {
    fn from(e: ContextError) -> Status {
        let code = match &e {
            ContextError::Archive(a) if a.is_limit() => Code::ResourceExhausted,
            ContextError::Archive(ArchiveError::Write { .. }) | ContextError::Io(_) => {
                Code::Internal
            }
            _ => Code::InvalidArgument,
        };
        Status::new(code, e.to_string())
    }
}

/// The most bytes of tar the client may send for a context within `limits`: its data, plus
/// room for the headers and names of every entry.
pub fn max_stream(limits: &Limits) -> u64 {
    limits
        .max_unpacked_size
        .saturating_add(limits.max_entries.saturating_mul(4096))
}

/// The relative, `.`-free components of a tar entry name, or None when it escapes.
pub fn safe_components(name: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// Makes sure every parent of `comps` under `root` is a real folder (created 0755 when
/// missing), never a symlink, and gives the parent's path.
fn parent_dir(root: &Path, comps: &[String], name: &str) -> Result<PathBuf, ContextError> {
    let mut p = root.to_path_buf();
    for c in &comps[..comps.len() - 1] {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ContextError::BelowSymlink(name.to_string()))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&p)?;
                fs::create_dir(&p)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(p)
}

/// Removes what is at `p` (not following a symlink), unless it is a folder and `keep_dir`.
fn clear(p: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unpacks the context tar from `reader` into `dest` (an empty folder), within `limits`.
pub fn unpack(reader: impl Read, dest: &Path, limits: &Limits) -> Result<(), ContextError> {
    let mut archive = Reader::new(reader, *limits);
    let mut dirs: Vec<(PathBuf, u32, filetime::FileTime)> = Vec::new();
    while let Some(entry) = archive.next_entry()? {
        let name = entry.name();
        let comps = safe_components(&name).ok_or_else(|| ContextError::Outside(name.clone()))?;
        if comps.is_empty() {
            continue;
        }
        let parent = parent_dir(dest, &comps, &name)?;
        let path = parent.join(&comps[comps.len() - 1]);
        let header = &entry.header;
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = filetime::FileTime::from_unix_time(header.mtime().unwrap_or(0) as i64, 0);
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                clear(&path, true)?;
                if !path.exists() {
                    fs::create_dir(&path)?;
                }
                dirs.push((path, mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                clear(&path, false)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                archive.write_file(&entry, &mut f)?;
                drop(f);
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
                filetime::set_file_mtime(&path, mtime)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link
                    .as_deref()
                    .ok_or_else(|| ContextError::Outside(name.clone()))?;
                clear(&path, false)?;
                symlink(std::ffi::OsStr::from_bytes(target), &path)?;
                filetime::set_symlink_file_times(&path, mtime, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link
                    .as_deref()
                    .ok_or_else(|| ContextError::Outside(name.clone()))?;
                let tcomps = safe_components(&String::from_utf8_lossy(target))
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| ContextError::Outside(name.clone()))?;
                let tparent = parent_dir(dest, &tcomps, &name)?;
                let tpath = tparent.join(&tcomps[tcomps.len() - 1]);
                let meta = fs::symlink_metadata(&tpath)?;
                if !meta.is_file() {
                    return Err(ContextError::Outside(name));
                }
                clear(&path, false)?;
                fs::hard_link(&tpath, &path)?;
            }
            // Devices, fifos and the like have no place in a build context.
            _ => {}
        }
    }
    // Folder times last: writing into a folder changes its mtime.
    for (p, mode, mtime) in dirs.into_iter().rev() {
        // A later entry may have replaced the folder (with a symlink to anywhere): only a
        // folder that is still a real folder gets its mode and time, never a link's target.
        if !fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        filetime::set_symlink_file_times(&p, mtime, mtime)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            {
                // Write the name raw so that hostile names survive the builder's checks.
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            }
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacks_files_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let t = tar_with(&[
            ("a/", tar::EntryType::Directory, b"", None),
            ("a/f", tar::EntryType::Regular, b"hi", None),
            ("l", tar::EntryType::Symlink, b"", Some("/etc/passwd")),
            ("h", tar::EntryType::Link, b"", Some("a/f")),
        ]);
        unpack(&t[..], dir.path(), &Limits::default()).unwrap();
        assert_eq!(fs::read(dir.path().join("a/f")).unwrap(), b"hi");
        assert_eq!(fs::read(dir.path().join("h")).unwrap(), b"hi");
        assert!(fs::symlink_metadata(dir.path().join("l"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn refuses_dotdot_and_absolute() {
        for bad in ["../x", "a/../../x", "/etc/x"] {
            let dir = tempfile::tempdir().unwrap();
            let t = tar_with(&[(bad, tar::EntryType::Regular, b"x", None)]);
            let e = unpack(&t[..], dir.path(), &Limits::default()).unwrap_err();
            assert!(matches!(e, ContextError::Outside(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn a_folder_replaced_by_a_link_does_not_pass_its_mode_to_the_target() {
        use std::os::unix::fs::MetadataExt;
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = victim.to_str().unwrap().to_string();
        let mut t = tar_with(&[("x/", tar::EntryType::Directory, b"", None)]);
        // The folder entry asks for 0644, then the same name comes back as a link.
        t.truncate(t.len() - 1024);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path("x").unwrap();
        h.set_link_name(&target).unwrap();
        h.set_size(0);
        h.set_cksum();
        let mut b = tar::Builder::new(t);
        b.append(&h, &b""[..]).unwrap();
        let t = b.into_inner().unwrap();
        let _ = unpack(&t[..], dir.path(), &Limits::default());
        let mode = fs::metadata(&victim).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600, "the link's target was chmodded");
    }

    #[test]
    fn never_writes_through_a_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let t = tar_with(&[
            ("evil", tar::EntryType::Symlink, b"", Some(&target)),
            ("evil/pwned", tar::EntryType::Regular, b"x", None),
        ]);
        let e = unpack(&t[..], dir.path(), &Limits::default()).unwrap_err();
        assert!(matches!(e, ContextError::BelowSymlink(_)), "{e}");
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn limits_and_hostile_headers_are_refused() {
        let t = tar_with(&[
            ("a", tar::EntryType::Regular, b"12", None),
            ("b", tar::EntryType::Regular, b"34", None),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let few = Limits {
            max_entries: 1,
            ..Limits::default()
        };
        let e = unpack(&t[..], dir.path(), &few).unwrap_err();
        assert_eq!(Status::from(e).code(), Code::ResourceExhausted);
        // A GNU long name that claims 1 GiB: refused from its header.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_path("././@LongLink").unwrap();
        h.set_size(1 << 30);
        h.set_cksum();
        let e = unpack(&h.as_bytes()[..], dir.path(), &Limits::default()).unwrap_err();
        let st = Status::from(e);
        assert_eq!(st.code(), Code::InvalidArgument);
        assert!(
            st.message()
                .contains("GNU long name header of 1073741824 bytes"),
            "{st:?}"
        );
    }

    #[test]
    fn a_sparse_file_stays_sparse() {
        use std::os::unix::fs::MetadataExt;
        let tib = 1u64 << 40;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_path("big.img").unwrap();
        h.set_mode(0o644);
        h.set_size(512);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(tib);
        gnu.sparse[0].set_offset(tib - 512);
        gnu.sparse[0].set_length(512);
        h.set_cksum();
        let mut t = h.as_bytes().to_vec();
        t.extend_from_slice(&[b'z'; 512]);
        t.extend_from_slice(&[0; 1024]);
        let dir = tempfile::tempdir().unwrap();
        unpack(&t[..], dir.path(), &Limits::default()).unwrap();
        let md = fs::metadata(dir.path().join("big.img")).unwrap();
        assert_eq!(md.len(), tib);
        assert!(md.blocks() <= 64, "{} blocks", md.blocks());
    }

    #[test]
    fn a_hard_link_cannot_point_outside() {
        let dir = tempfile::tempdir().unwrap();
        let t = tar_with(&[("h", tar::EntryType::Link, b"", Some("../../etc/passwd"))]);
        assert!(unpack(&t[..], dir.path(), &Limits::default()).is_err());
    }
}
