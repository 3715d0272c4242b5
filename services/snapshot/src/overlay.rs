//! The `overlayfs` snapshotter, as containerd's: every snapshot is a folder
//! `<root>/overlayfs/snapshots/<id>/{fs,work}`; a committed snapshot's `fs` is one layer, and
//! an active snapshot is an overlay mount of its parents' `fs` folders (read-only lowers,
//! nearest first) under its own `fs` (upper) with `work` as overlay's work dir.
//!
//! Mounts returned:
//!
//! | snapshot | mount |
//! |---|---|
//! | active, no parent | `bind` of its `fs`, options `rw, rbind` |
//! | active on parents | `overlay`, options `[index=off, redirect_dir=off, metacopy=off,] workdir=…/work, upperdir=…/fs, lowerdir=P1/fs:P2/fs…` |
//! | view, no parent | `bind` of its (empty) `fs`, `ro, rbind` |
//! | view of one layer | `bind` of the parent's `fs`, `ro, rbind` |
//! | view of layers | `overlay`, options `ro, lowerdir=…` (no upper: overlay is then read-only) |
//!
//! # The mount data limit
//!
//! mount(2) takes at most one page (4096 bytes, including the final NUL) of options. Paths here
//! are short — numeric ids, not digests — so with the default root
//! (`/var/lib/berth/snapshot`) about 75 layers fit with absolute paths. Longer chains are
//! still accepted as long as the options fit with paths *relative to the snapshots folder*
//! (`lowerdir=12/fs:11/fs…`, roughly 450–800 layers depending on the id width) and stay within
//! overlayfs' own maximum of 500 lower layers: [`crate::mount::mount_all`] mounts those from a
//! child process that first changes into the snapshots folder. Anything beyond is refused at
//! Prepare/View with [`Error::TooManyLayers`].
//!
//! At startup [`Overlay::open`] mounts a real two-layer overlay in a scratch folder under the
//! root to learn whether the root's filesystem can hold overlay upper dirs (it cannot on
//! overlayfs itself, for instance); berth falls back to the native snapshotter otherwise.

use crate::apply::Whiteouts;
use crate::error::{Error, Result};
use crate::metadata::Kind;
use crate::snapshots::{bind_mount, Storage};
use berth_api::types::v1::Mount;
use std::fs;
use std::path::{Path, PathBuf};

pub const NAME: &str = "overlayfs";

/// overlayfs refuses more lower layers than this (OVL_MAX_STACK).
pub const MAX_LOWERS: usize = 500;

/// mount(2) copies at most a page of option data, NUL included.
pub const MAX_MOUNT_DATA: usize = 4095;

/// The overlayfs snapshotter.
#[derive(Debug)]
pub struct Overlay {
    root: PathBuf,
    snapshots: PathBuf,
    /// Whether the kernel knows overlay's `index` feature; it is turned off so an upper dir can
    /// be mounted again on the same lowers after a copy (as containerd does).
    index_off: bool,
    /// Overlay features that would leave an upper dir that is not a plain list of changes
    /// (renamed folders pointing into the layers below, files whose data stays below), which
    /// Diff could not turn into a layer; turned off where the kernel knows them.
    features_off: Vec<&'static str>,
    /// Why overlay mounts do not work here, if they do not.
    unsupported: Option<String>,
}

impl Overlay {
    /// Uses (and creates) `<root>/overlayfs/snapshots`, and probes whether overlay works there.
    pub fn open(root: &Path) -> Result<Overlay> {
        let base = root.join(NAME);
        let snapshots = base.join("snapshots");
        fs::create_dir_all(&snapshots)
            .map_err(|e| Error::io(format!("creating {}", snapshots.display()), e))?;
        let unsupported = probe(&base).err();
        if let Some(reason) = &unsupported {
            tracing::warn!(root = %base.display(), reason, "overlayfs does not work here");
        }
        let param = |p: &str| Path::new("/sys/module/overlay/parameters").join(p).exists();
        let index_off = param("index");
        let features_off = [
            ("redirect_dir", "redirect_dir=off"),
            ("metacopy", "metacopy=off"),
        ]
        .into_iter()
        .filter(|(p, _)| param(p))
        .map(|(_, o)| o)
        .collect();
        Ok(Overlay {
            root: base,
            snapshots,
            index_off,
            features_off,
            unsupported,
        })
    }

    /// `Err(reason)` when overlay mounts do not work on this root.
    pub fn supported(&self) -> Result<(), Error> {
        match &self.unsupported {
            None => Ok(()),
            Some(reason) => Err(Error::OverlayUnavailable {
                root: self.root.clone(),
                reason: reason.clone(),
            }),
        }
    }

    fn lowerdir(&self, parents: &[u64], relative: bool) -> String {
        let dirs: Vec<String> = parents
            .iter()
            .map(|&p| {
                if relative {
                    format!("{p}/fs")
                } else {
                    self.fs(p).display().to_string()
                }
            })
            .collect();
        format!("lowerdir={}", dirs.join(":"))
    }

    fn options(&self, id: u64, kind: Kind, parents: &[u64], relative: bool) -> Vec<String> {
        let mut options = Vec::new();
        if kind == Kind::Active {
            if self.index_off {
                options.push("index=off".to_string());
            }
            options.extend(self.features_off.iter().map(|o| o.to_string()));
            let (work, upper) = if relative {
                (format!("{id}/work"), format!("{id}/fs"))
            } else {
                (
                    self.dir(id).join("work").display().to_string(),
                    self.fs(id).display().to_string(),
                )
            };
            options.push(format!("workdir={work}"));
            options.push(format!("upperdir={upper}"));
        } else {
            options.push("ro".to_string());
        }
        options.push(self.lowerdir(parents, relative));
        options
    }
}

/// The length of the option string mount(2) would get.
fn data_len(options: &[String]) -> usize {
    options
        .iter()
        .map(|o| o.len() + 1)
        .sum::<usize>()
        .saturating_sub(1)
}

impl Storage for Overlay {
    fn name(&self) -> &'static str {
        NAME
    }

    fn snapshots_dir(&self) -> &Path {
        &self.snapshots
    }

    fn check(&self, kind: Kind, parents: &[u64]) -> Result<()> {
        self.supported()?;
        let overlaid = match kind {
            Kind::Active => !parents.is_empty(),
            _ => parents.len() > 1,
        };
        if !overlaid {
            return Ok(());
        }
        // The new snapshot's id is not known yet; assume it is as wide as any id can get soon.
        let widest = u64::MAX / 1_000_000;
        let fits = data_len(&self.options(widest, kind, parents, true)) <= MAX_MOUNT_DATA;
        if parents.len() > MAX_LOWERS || !fits {
            let per_layer = parents
                .iter()
                .map(|p| p.to_string().len() + 4)
                .max()
                .unwrap_or(8);
            let max = ((MAX_MOUNT_DATA - 100) / per_layer).min(MAX_LOWERS);
            return Err(Error::TooManyLayers {
                layers: parents.len(),
                max,
            });
        }
        Ok(())
    }

    fn create(&self, id: u64, _kind: Kind, _parents: &[u64]) -> Result<()> {
        let dir = self.dir(id);
        let mk = |p: &Path, mode: u32| {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .mode(mode)
                .create(p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))
        };
        mk(&dir, 0o700)?;
        mk(&dir.join("fs"), 0o755)?;
        mk(&dir.join("work"), 0o700)
    }

    fn mounts(&self, id: u64, kind: Kind, parents: &[u64]) -> Vec<Mount> {
        match (kind, parents.len()) {
            (Kind::Active, 0) => vec![bind_mount(&self.fs(id), false)],
            (Kind::Active, _) | (Kind::View, 2..) => vec![Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: self.options(id, kind, parents, false),
            }],
            (Kind::View, 1) => vec![bind_mount(&self.fs(parents[0]), true)],
            _ => vec![bind_mount(&self.fs(id), true)],
        }
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Overlay
    }

    fn lowers(&self, parents: &[u64]) -> Vec<PathBuf> {
        parents.iter().map(|&p| self.fs(p)).collect()
    }

    fn holds_changes_only(&self) -> bool {
        true
    }
}

/// Mounts a two-layer overlay in a scratch folder under `base`, writes through it, and cleans
/// up. Scratch folders of an earlier, interrupted probe are removed first.
fn probe(base: &Path) -> Result<(), String> {
    if let Ok(entries) = fs::read_dir(base) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("probe-") {
                let _ =
                    nix::mount::umount2(&e.path().join("merged"), nix::mount::MntFlags::MNT_DETACH);
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let scratch = base.join(format!("probe-{}", std::process::id()));
    let result = probe_in(&scratch);
    let _ = nix::mount::umount2(&scratch.join("merged"), nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn probe_in(scratch: &Path) -> Result<(), String> {
    for d in ["l1", "l2", "upper", "work", "merged"] {
        fs::create_dir_all(scratch.join(d))
            .map_err(|e| format!("creating {}: {e}", scratch.join(d).display()))?;
    }
    fs::write(scratch.join("l1/a"), b"a").map_err(|e| e.to_string())?;
    let s = |d: &str| scratch.join(d).display().to_string();
    let data = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        s("l2"),
        s("l1"),
        s("upper"),
        s("work")
    );
    let merged = scratch.join("merged");
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| format!("mounting a test overlay failed: {e}"))?;
    let check = (|| {
        if fs::read(merged.join("a")).map_err(|e| e.to_string())? != b"a" {
            return Err("a test overlay does not show its lower layer".to_string());
        }
        fs::write(merged.join("b"), b"b")
            .map_err(|e| format!("writing into a test overlay: {e}"))?;
        if !scratch.join("upper/b").exists() {
            return Err("a test overlay does not write into its upper dir".to_string());
        }
        Ok(())
    })();
    nix::mount::umount2(&merged, nix::mount::MntFlags::empty())
        .map_err(|e| format!("unmounting a test overlay: {e}"))?;
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_by_kind_and_depth() {
        let t = tempfile::tempdir().unwrap();
        let o = Overlay::open(t.path()).unwrap();
        let snaps = t.path().join("overlayfs/snapshots");
        assert_eq!(o.mounts(5, Kind::Active, &[])[0].r#type, "bind");
        assert_eq!(o.mounts(5, Kind::Active, &[])[0].options, ["rw", "rbind"]);
        let v = &o.mounts(5, Kind::View, &[3])[0];
        assert_eq!(
            (v.r#type.as_str(), v.source.clone()),
            ("bind", snaps.join("3/fs").display().to_string())
        );
        assert_eq!(v.options, ["ro", "rbind"]);
        let m = &o.mounts(5, Kind::Active, &[3, 2, 1])[0];
        assert_eq!(m.r#type, "overlay");
        let lower = format!(
            "lowerdir={}:{}:{}",
            snaps.join("3/fs").display(),
            snaps.join("2/fs").display(),
            snaps.join("1/fs").display()
        );
        assert_eq!(m.options.last().unwrap(), &lower);
        assert!(m
            .options
            .contains(&format!("upperdir={}", snaps.join("5/fs").display())));
        assert!(m
            .options
            .contains(&format!("workdir={}", snaps.join("5/work").display())));
        let v = &o.mounts(5, Kind::View, &[3, 2])[0];
        assert_eq!(v.r#type, "overlay");
        assert!(
            v.options.contains(&"ro".to_string())
                && !v.options.iter().any(|o| o.starts_with("upperdir"))
        );
    }

    #[test]
    fn probe_works_on_this_host_and_cleans_up() {
        let t = tempfile::tempdir().unwrap();
        let o = Overlay::open(t.path()).unwrap();
        // The test host's /tmp is a real filesystem; when it is not, the reason is explained.
        if let Err(e) = o.supported() {
            eprintln!("overlay unsupported here: {e}");
        }
        let left: Vec<_> = fs::read_dir(t.path().join(NAME))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["snapshots"]);
    }

    #[test]
    fn too_many_layers_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let o = Overlay::open(t.path()).unwrap();
        if o.supported().is_err() {
            return;
        }
        let ok: Vec<u64> = (1..=120).rev().collect();
        o.check(Kind::Active, &ok).unwrap();
        let too_many: Vec<u64> = (1..=501).rev().collect();
        assert!(matches!(
            o.check(Kind::Active, &too_many),
            Err(Error::TooManyLayers { .. })
        ));
        let wide: Vec<u64> = (1_000_000_000_000..1_000_000_000_400).collect();
        assert!(matches!(
            o.check(Kind::Active, &wide),
            Err(Error::TooManyLayers { .. })
        ));
    }
}
