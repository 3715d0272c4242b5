//! Docker's `diff`: what a container's writable layer changed in its image, read from the
//! overlay upper folder and compared with the layers below it.
//!
//! Docker's rules (its overlay driver's): every entry of the upper folder is a change — a
//! whiteout (a 0/0 character device) or an opaque folder (`trusted.overlay.opaque=y`) deletes
//! its path; anything else is added, unless a lower layer has the path, when it is modified;
//! a folder present below with the same size, mode and mtime is no change by itself. The
//! parent of an added or deleted path is modified. Paths berth mounts over (`/etc/hosts`,
//! volumes, …) are left out, with the folders only they changed.
//!
//! The upper folder may belong to a running container that swaps entries for symlinks: it
//! is walked by descriptor, never following one.

use crate::copyup::{children, is, is_opaque, open_dir_at, open_dir_path, stat_at};
use nix::sys::stat::{FileStat, SFlag};
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Docker's kinds of change.
pub const MODIFIED: i32 = 0;
pub const ADDED: i32 = 1;
pub const DELETED: i32 = 2;

/// One change: an absolute path in the container and its kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: String,
    pub kind: i32,
}

/// The changes of `upper` over `lowers` (any order), sorted by path; `ignored` are absolute
/// paths berth mounts over, left out with the folders only they changed.
pub fn changes(upper: &Path, lowers: &[PathBuf], ignored: &[String]) -> io::Result<Vec<Change>> {
    let mut walk = Walk {
        lowers,
        out: Vec::new(),
        changed_dirs: HashSet::new(),
    };
    let root = open_dir_path(upper)?;
    walk.dir(&root, "")?;
    Ok(without_ignored(walk.out, ignored))
}

struct Walk<'a> {
    lowers: &'a [PathBuf],
    out: Vec<Change>,
    changed_dirs: HashSet<String>,
}

impl Walk<'_> {
    /// Walks folder `dir` (at container path `at`, "" for the root), children in name order.
    fn dir(&mut self, dir: &OwnedFd, at: &str) -> io::Result<()> {
        let mut names = children(dir)?;
        names.sort();
        for name in names {
            let Some(st) = stat_at(dir, &name)? else {
                continue;
            };
            let path = format!("{at}/{}", String::from_utf8_lossy(name.as_bytes()));
            let is_dir = is(&st, SFlag::S_IFDIR);
            let sub = if is_dir {
                Some(open_dir_at(dir, &name)?)
            } else {
                None
            };
            self.entry(&path, &st, sub.as_ref())?;
            if let Some(sub) = sub {
                self.dir(&sub, &path)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &str, st: &FileStat, dir: Option<&OwnedFd>) -> io::Result<()> {
        let whiteout = is(st, SFlag::S_IFCHR) && st.st_rdev == 0;
        let kind = if whiteout || dir.is_some_and(is_opaque) {
            DELETED
        } else {
            match self.lower_stat(path) {
                None => ADDED,
                Some(low) if dir.is_some() && is(&low, SFlag::S_IFDIR) && same_dir(st, &low) => {
                    return Ok(());
                }
                Some(_) => MODIFIED,
            }
        };
        self.out.push(Change {
            path: path.to_string(),
            kind,
        });
        if dir.is_some() {
            self.changed_dirs.insert(path.to_string());
        }
        if kind != MODIFIED {
            let parent = parent_of(path);
            if parent != "/" && self.changed_dirs.insert(parent.to_string()) {
                self.out.push(Change {
                    path: parent.to_string(),
                    kind: MODIFIED,
                });
            }
        }
        Ok(())
    }

    /// The path in the highest lower layer that has it, walked without following symlinks.
    fn lower_stat(&self, path: &str) -> Option<FileStat> {
        let comps: Vec<&OsStr> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(OsStr::new)
            .collect();
        let (last, parents) = comps.split_last()?;
        'layers: for layer in self.lowers {
            let Ok(mut dir) = open_dir_path(layer) else {
                continue;
            };
            for p in parents {
                match open_dir_at(&dir, p) {
                    Ok(d) => dir = d,
                    Err(_) => continue 'layers,
                }
            }
            if let Ok(Some(st)) = stat_at(&dir, last) {
                if !(is(&st, SFlag::S_IFCHR) && st.st_rdev == 0) {
                    return Some(st);
                }
            }
        }
        None
    }
}

fn same_dir(a: &FileStat, b: &FileStat) -> bool {
    a.st_size == b.st_size
        && a.st_mode == b.st_mode
        && (a.st_mtime, a.st_mtime_nsec) == (b.st_mtime, b.st_mtime_nsec)
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// `changes` sorted by path without the `ignored` paths (and what is under them), and
/// without a modified folder that holds nothing but ignored paths.
fn without_ignored(changes: Vec<Change>, ignored: &[String]) -> Vec<Change> {
    let hidden = |p: &str| ignored.iter().any(|i| p == i || is_under(p, i));
    let kept: BTreeSet<Change> = changes.into_iter().filter(|c| !hidden(&c.path)).collect();
    let paths: Vec<String> = kept.iter().map(|c| c.path.clone()).collect();
    kept.into_iter()
        .filter(|c| {
            let only_for_mounts = c.kind == MODIFIED
                && ignored.iter().any(|i| is_under(i, &c.path))
                && !paths.iter().any(|p| is_under(p, &c.path));
            !only_for_mounts
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn whiteout(path: &Path) {
        nix::sys::stat::mknod(path, SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
    }

    fn show(c: &[Change]) -> Vec<String> {
        let k = ["C", "A", "D"];
        c.iter()
            .map(|c| format!("{} {}", k[c.kind as usize], c.path))
            .collect()
    }

    #[test]
    fn dockers_rules_on_an_upper_lower_pair() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: whiteouts need root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        for d in ["etc", "tmp", "usr/lib", "var"] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        fs::write(lower.join("etc/passwd"), "root").unwrap();
        fs::write(lower.join("etc/group"), "root").unwrap();
        fs::write(lower.join("usr/lib/a"), "a").unwrap();
        // The writable layer: a new file in /tmp, a changed /etc/passwd, a deleted
        // /etc/group, an opaque /usr/lib, a mount target /etc/hosts, and /var copied up
        // unchanged (same metadata as below).
        fs::create_dir_all(upper.join("tmp")).unwrap();
        fs::write(upper.join("tmp/x"), "x").unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/passwd"), "root2").unwrap();
        whiteout(&upper.join("etc/group"));
        fs::write(upper.join("etc/hosts"), "").unwrap();
        fs::create_dir_all(upper.join("usr/lib")).unwrap();
        xattr::set(upper.join("usr/lib"), "trusted.overlay.opaque", b"y").unwrap();
        fs::write(upper.join("usr/lib/b"), "b").unwrap();
        fs::create_dir_all(upper.join("var")).unwrap();
        let low = fs::metadata(lower.join("var")).unwrap();
        fs::set_permissions(upper.join("var"), low.permissions()).unwrap();
        let mtime = filetime(&low);
        set_mtime(&upper.join("var"), mtime);

        let got = changes(&upper, &[lower], &["/etc/hosts".into()]).unwrap();
        assert_eq!(
            show(&got),
            [
                "C /etc",
                "D /etc/group",
                "C /etc/passwd",
                "C /tmp",
                "A /tmp/x",
                "C /usr",
                "D /usr/lib",
                "A /usr/lib/b",
            ]
        );
    }

    #[test]
    fn a_folder_changed_only_by_a_mount_target_is_no_change() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/resolv.conf"), "").unwrap();
        let got = changes(&upper, &[lower], &["/etc/resolv.conf".into()]).unwrap();
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn a_symlinked_folder_in_the_upper_layer_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir_all(&lower).unwrap();
        fs::create_dir_all(&upper).unwrap();
        std::os::unix::fs::symlink("/etc", upper.join("evil")).unwrap();
        let got = changes(&upper, &[lower], &[]).unwrap();
        assert_eq!(show(&got), ["A /evil"]);
    }

    fn filetime(m: &fs::Metadata) -> (i64, i64) {
        use std::os::unix::fs::MetadataExt;
        (m.mtime(), m.mtime_nsec())
    }

    fn set_mtime(p: &Path, (s, ns): (i64, i64)) {
        let t = nix::sys::time::TimeSpec::new(s, ns);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}
