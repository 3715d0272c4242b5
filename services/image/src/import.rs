//! `image import`: an OCI image layout archive (`skopeo copy … oci-archive:`, `berth image
//! export`) or a `docker save` archive. The archive is unpacked into a private temporary folder
//! with bounded memory (an entry with an absolute or `..` path is refused, and so is one that
//! a symlink would lead out of it),
//! every file read from it must stay inside it, and every blob is verified by digest as it goes
//! into the content store.

use crate::error::ImageError;
use crate::images::{
    progress, ImageStore, ProgressTx, LABEL_CREATED, LABEL_ID, LABEL_MANIFEST, LABEL_SIZE,
    LABEL_SNAPSHOTTER,
};
use crate::manifest::{self, Descriptor};
use crate::metadata::ImageRecord;
use berth_archive::Reader;
use berth_core::config::Limits;
use berth_core::{media, Digest, Reference};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn archive_err(e: impl std::fmt::Display) -> ImageError {
    ImageError::Archive(format!("cannot import the archive: {e}"))
}

/// A relative path of the archive as a path under its folder: an absolute name or one with
/// `..` is refused (tar would quietly make the first relative and skip the second; an archive
/// made by `docker save` or an OCI tool has neither).
fn archive_path(name: &[u8], what: &str) -> Result<PathBuf, ImageError> {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(std::ffi::OsStr::from_bytes(name));
    let shown = || String::from_utf8_lossy(name).into_owned();
    if path.has_root() {
        return Err(archive_err(format!(
            "{what} {:?} is an absolute path",
            shown()
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(archive_err(format!(
            "{what} {:?} escapes the archive",
            shown()
        )));
    }
    Ok(path.components().collect())
}

/// Makes the folders of `rel` under `dest` and gives the real path of its parent, which must
/// be inside `dest` (a symlink unpacked earlier cannot lead a later entry out).
fn parent_inside(dest: &Path, rel: &Path) -> Result<PathBuf, ImageError> {
    let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
    std::fs::create_dir_all(&parent).map_err(|e| archive_err(format!("{}: {e}", rel.display())))?;
    let real = parent.canonicalize().map_err(archive_err)?;
    if !real.starts_with(dest) {
        return Err(archive_err(format!(
            "entry {:?} escapes the archive through a symlink",
            rel.display().to_string()
        )));
    }
    Ok(real)
}

/// Unpacks the files, folders and links of the archive read from `reader` into `dest` (an
/// empty private folder, already canonical) with [`berth_archive::Reader`], which
/// refuses oversized GNU long-name and PAX headers from their size field and stops at the
/// `[limits]` of berthd's config — the `tar` crate would read such a header whole into memory.
/// Other entry kinds (devices, fifos) are skipped.
fn unpack_archive(reader: impl Read, dest: &Path, limits: Limits) -> Result<(), ImageError> {
    let mut r = Reader::new(reader, limits);
    while let Some(entry) = r.next_entry().map_err(archive_err)? {
        let kind = entry.kind();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            continue;
        }
        let rel = archive_path(&entry.path, "entry")?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = parent_inside(dest, &rel)?.join(rel.file_name().unwrap_or_default());
        let io = |e: std::io::Error| archive_err(format!("entry {:?}: {e}", entry.name()));
        if kind.is_dir() {
            if !target.is_dir() {
                std::fs::create_dir(&target).map_err(io)?;
            }
            continue;
        }
        // A later entry of the same name replaces an earlier one, as with tar.
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(io(std::io::ErrorKind::AlreadyExists.into())),
            Ok(_) => std::fs::remove_file(&target).map_err(io)?,
            Err(_) => {}
        }
        let link = || {
            entry
                .link
                .as_deref()
                .ok_or_else(|| io(std::io::ErrorKind::InvalidData.into()))
        };
        if kind.is_symlink() {
            // Followed only through `inside` and `parent_inside`, which keep reads and writes
            // in the folder.
            use std::os::unix::ffi::OsStrExt;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(link()?), &target)
                .map_err(io)?;
        } else if kind.is_hard_link() {
            let src = dest.join(archive_path(link()?, "link target")?);
            let real = src.canonicalize().map_err(io)?;
            if !real.starts_with(dest) {
                return Err(archive_err(format!(
                    "hard link {:?} points outside the archive",
                    entry.name()
                )));
            }
            std::fs::hard_link(&real, &target).map_err(io)?;
        } else {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                // O_EXCL: never through a symlink
                .create_new(true)
                .open(&target)
                .map_err(io)?;
            r.write_file(&entry, &mut f).map_err(archive_err)?;
        }
    }
    Ok(())
}

/// A path inside the unpacked archive; symlinks that lead out of it are refused.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let p = root.join(rel.trim_start_matches('/'));
    let real = p
        .canonicalize()
        .map_err(|e| archive_err(format!("{rel}: {e}")))?;
    let real_root = root.canonicalize().map_err(archive_err)?;
    if !real.starts_with(&real_root) {
        return Err(archive_err(format!("{rel} points outside the archive")));
    }
    Ok(real)
}

impl ImageStore {
    /// Imports the archive at `path` (already on disk in the service's temp folder);
    /// `unpack` names the snapshotter to unpack into (`""` for the default), None to skip.
    pub async fn import(
        &self,
        ns: &str,
        archive: &Path,
        name: &str,
        unpack: Option<&str>,
        tx: &ProgressTx,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        // Names nothing itself: what it writes is kept because it is newer than the lease.
        let lease = self.leases.acquire(ns, "import", Some(name));
        lease
            .guard(self.import_leased(ns, archive, name, unpack, tx))
            .await
    }

    async fn import_leased(
        &self,
        ns: &str,
        archive: &Path,
        name: &str,
        unpack: Option<&str>,
        tx: &ProgressTx,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(archive.parent().unwrap_or(Path::new("/tmp")))
            .map_err(archive_err)?;
        let dest = dir.path().canonicalize().map_err(archive_err)?;
        let archive_path = archive.to_path_buf();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            let f = std::fs::File::open(&archive_path).map_err(archive_err)?;
            let mut head = [0u8; 4];
            let compression = {
                use std::io::Read;
                let mut f2 = std::fs::File::open(&archive_path).map_err(archive_err)?;
                let n = f2.read(&mut head).map_err(archive_err)?;
                media::Compression::sniff(&head[..n])
            };
            let reader: Box<dyn std::io::Read> = match compression {
                media::Compression::Gzip => Box::new(flate2::read::GzDecoder::new(f)),
                _ => Box::new(std::io::BufReader::with_capacity(256 << 10, f)),
            };
            unpack_archive(reader, &dest, limits)
        })
        .await
        .map_err(archive_err)??;

        let root = dir.path();
        if root.join("index.json").exists() {
            self.import_oci(ns, root, name, unpack, tx).await
        } else if root.join("manifest.json").exists() {
            self.import_docker(ns, root, name, unpack, tx).await
        } else {
            Err(archive_err("it is neither an OCI image layout (no index.json) nor a `docker save` archive (no manifest.json)"))
        }
    }

    async fn copy_blob(
        &self,
        root: &Path,
        rel: &str,
        expected: Option<Digest>,
        what: &str,
    ) -> Result<(Digest, i64), ImageError> {
        let path = inside(root, rel)?;
        let size = std::fs::metadata(&path).map_err(archive_err)?.len();
        if let Some(d) = &expected {
            if self.content.contains(d) {
                return Ok((d.clone(), size as i64));
            }
        }
        let mut w = self.content.writer(what, expected, Some(size)).await?;
        let mut f = tokio::fs::File::open(&path).await.map_err(archive_err)?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            use tokio::io::AsyncReadExt;
            let n = f.read(&mut buf).await.map_err(archive_err)?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        Ok((w.commit().await?, size as i64))
    }

    async fn finish_image(
        &self,
        ns: &str,
        names: &[String],
        top: &Descriptor,
        manifest_digest: &Digest,
        unpack: Option<&str>,
        tx: &ProgressTx,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let mbytes = self
            .content
            .read_small(manifest_digest, media::MAX_MANIFEST_SIZE)?;
        let what = format!("manifest {manifest_digest}");
        let m = manifest::parse_manifest(&what, "", &mbytes)?;
        let config = self
            .content
            .read_small(&m.config.digest(&what)?, media::MAX_MANIFEST_SIZE)?;
        let (cfg, diff_ids) = manifest::parse_config("config", &config, m.layers.len())?;
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_ID.to_string(), m.config.digest.clone());
        labels.insert(LABEL_MANIFEST.to_string(), manifest_digest.to_string());
        labels.insert(
            LABEL_CREATED.to_string(),
            cfg.created.clone().unwrap_or_default(),
        );
        labels.insert(
            LABEL_SIZE.to_string(),
            m.layers.iter().map(|l| l.size).sum::<i64>().to_string(),
        );
        if let Some(snapshotter) = unpack {
            let sn = if snapshotter.is_empty() {
                self.default_snapshotter_name()
            } else {
                snapshotter.to_string()
            };
            let size = self.unpack(ns, &sn, &m, &diff_ids, tx).await?;
            labels.insert(LABEL_SIZE.to_string(), size.to_string());
            labels.insert(LABEL_SNAPSHOTTER.to_string(), sn);
        }
        let mut out = Vec::new();
        for n in names {
            out.push(self.store_name(ns, n, top, labels.clone()).await?);
            self.publish(ns, "import", n);
            progress(
                tx,
                &Reference::parse(n)
                    .map(|r| r.familiar())
                    .unwrap_or_else(|_| n.clone()),
                "imported",
                0,
                0,
            )
            .await;
        }
        Ok(out)
    }

    async fn import_oci(
        &self,
        ns: &str,
        root: &Path,
        name: &str,
        unpack: Option<&str>,
        tx: &ProgressTx,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let index_bytes = std::fs::read(inside(root, "index.json")?).map_err(archive_err)?;
        let index = manifest::parse_index("index.json of the archive", &index_bytes)?;
        let mut out = Vec::new();
        for (i, d) in index.manifests.iter().enumerate() {
            let ann = d.annotations.clone().unwrap_or_default();
            let ref_name = ann
                .get("io.containerd.image.name")
                .cloned()
                .or_else(|| {
                    ann.get("org.opencontainers.image.ref.name").map(|t| {
                        if t.contains('/') || t.contains(':') {
                            t.clone()
                        } else if !name.is_empty() {
                            format!("{}:{t}", name.split(':').next().unwrap_or(name))
                        } else {
                            format!("import:{t}")
                        }
                    })
                })
                .or_else(|| (!name.is_empty()).then(|| name.to_string()))
                .unwrap_or_else(|| format!("import:{i}"));
            let reference = Reference::parse(&ref_name)?;
            let top_digest = d.digest("index.json")?;
            self.copy_oci_tree(root, d).await?;
            let manifest_desc = if media::is_index(&d.media_type) {
                let b = self
                    .content
                    .read_small(&top_digest, media::MAX_MANIFEST_SIZE)?;
                let idx = manifest::parse_index("nested index", &b)?;
                manifest::select_platform(
                    "nested index",
                    &idx,
                    "linux",
                    crate::images::host_arch(),
                )?
                .clone()
            } else {
                d.clone()
            };
            let md = manifest_desc.digest("manifest")?;
            out.extend(
                self.finish_image(ns, &[reference.to_string()], d, &md, unpack, tx)
                    .await?,
            );
        }
        if out.is_empty() {
            return Err(archive_err("its index.json lists no image"));
        }
        Ok(out)
    }

    /// Copies a descriptor's blob and, for manifests and indexes, everything they point to.
    async fn copy_oci_tree(&self, root: &Path, d: &Descriptor) -> Result<(), ImageError> {
        let mut todo = vec![d.clone()];
        while let Some(d) = todo.pop() {
            let digest = d.digest("archive")?;
            let rel = format!("blobs/sha256/{}", digest.hex());
            let (stored, _) = self
                .copy_blob(
                    root,
                    &rel,
                    Some(digest.clone()),
                    &format!("blob {digest} of the archive"),
                )
                .await?;
            if media::is_index(&d.media_type) {
                let b = self.content.read_small(&stored, media::MAX_MANIFEST_SIZE)?;
                let idx = manifest::parse_index("archive index", &b)?;
                // Only the platform we run is needed; others may be absent from the archive.
                if let Ok(m) = manifest::select_platform(
                    "archive index",
                    &idx,
                    "linux",
                    crate::images::host_arch(),
                ) {
                    todo.push(m.clone());
                }
            } else if media::is_manifest(&d.media_type) || d.media_type.is_empty() {
                let b = self.content.read_small(&stored, media::MAX_MANIFEST_SIZE)?;
                let m = manifest::parse_manifest("archive manifest", "", &b)?;
                todo.push(m.config.clone());
                todo.extend(m.layers.iter().cloned());
            }
        }
        Ok(())
    }

    async fn import_docker(
        &self,
        ns: &str,
        root: &Path,
        name: &str,
        unpack: Option<&str>,
        tx: &ProgressTx,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let mf = std::fs::read(inside(root, "manifest.json")?).map_err(archive_err)?;
        let entries: Vec<DockerSaveEntry> =
            serde_json::from_slice(&mf).map_err(|e| archive_err(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for e in entries {
            let (config_digest, config_size) = self
                .copy_blob(root, &e.config, None, "image config of the archive")
                .await?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let id = format!("layer {l}");
                progress(tx, &id, "importing", 0, 0).await;
                let (d, size) = self.copy_blob(root, l, None, &id).await?;
                let head = {
                    use std::io::Read;
                    let mut h = [0u8; 4];
                    let n = std::fs::File::open(self.content.path(&d))
                        .and_then(|mut f| f.read(&mut h))
                        .unwrap_or(0);
                    media::Compression::sniff(&h[..n])
                };
                let media_type = match head {
                    media::Compression::Gzip => media::OCI_LAYER_GZIP,
                    media::Compression::Zstd => media::OCI_LAYER_ZSTD,
                    media::Compression::None => media::OCI_LAYER,
                };
                layers.push(Descriptor {
                    media_type: media_type.to_string(),
                    digest: d.to_string(),
                    size,
                    platform: None,
                    annotations: None,
                });
            }
            let m = manifest::Manifest {
                schema_version: 2,
                media_type: Some(media::OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: media::OCI_CONFIG.to_string(),
                    digest: config_digest.to_string(),
                    size: config_size,
                    platform: None,
                    annotations: None,
                },
                layers,
                annotations: None,
            };
            let mbytes = serde_json::to_vec(&m).map_err(archive_err)?;
            let md = self
                .content
                .write_all("generated manifest", &mbytes, None)
                .await?;
            let top = Descriptor {
                media_type: media::OCI_MANIFEST.to_string(),
                digest: md.to_string(),
                size: mbytes.len() as i64,
                platform: None,
                annotations: None,
            };
            let mut names = Vec::new();
            for t in e.repo_tags.unwrap_or_default() {
                names.push(Reference::parse(&t)?.to_string());
            }
            if names.is_empty() {
                let n = if name.is_empty() {
                    format!("import:{}", config_digest.short())
                } else {
                    name.to_string()
                };
                names.push(Reference::parse(&n)?.to_string());
            }
            out.extend(self.finish_image(ns, &names, &top, &md, unpack, tx).await?);
        }
        if out.is_empty() {
            return Err(archive_err("its manifest.json lists no image"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `(kind, name, link target or data)` entries, names written as given (the tar
    /// crate's builder would refuse `..`).
    fn archive(entries: &[(tar::EntryType, &str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for &(kind, name, arg) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            let data = if kind.is_symlink() || kind.is_hard_link() {
                gnu.linkname[..arg.len()].copy_from_slice(arg.as_bytes());
                ""
            } else {
                arg
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack(
        entries: &[(tar::EntryType, &str, &str)],
    ) -> (tempfile::TempDir, Result<(), ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().canonicalize().unwrap();
        let r = unpack_archive(&archive(entries)[..], &dest.join("d"), Limits::default());
        (dir, r)
    }

    use tar::EntryType::{Directory, Link, Regular, Symlink};

    #[test]
    fn files_folders_and_links_are_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().canonicalize().unwrap();
        let tar = archive(&[
            (Directory, "blobs/sha256", ""),
            (Regular, "blobs/sha256/ab", "layer"),
            (Symlink, "x/layer.tar", "../blobs/sha256/ab"),
            (Link, "copy", "blobs/sha256/ab"),
            (Regular, "index.json", "{}"),
        ]);
        unpack_archive(&tar[..], &dest, Limits::default()).unwrap();
        let read = |p: &str| std::fs::read_to_string(dest.join(p)).unwrap();
        assert_eq!(read("x/layer.tar"), "layer");
        assert_eq!(read("copy"), "layer");
        assert_eq!(read("index.json"), "{}");
    }

    #[test]
    fn nothing_is_written_outside_the_folder() {
        for (entries, says) in [
            (vec![(Regular, "../out", "x")], "escapes the archive"),
            (vec![(Regular, "/abs", "x")], "absolute path"),
            (
                vec![(Symlink, "up", ".."), (Regular, "up/out", "x")],
                "through a symlink",
            ),
            (
                vec![(Symlink, "up", "/etc/hostname"), (Link, "l", "up")],
                "outside the archive",
            ),
        ] {
            let (dir, r) = unpack(&entries);
            let err = r.unwrap_err().to_string();
            assert!(err.contains(says), "{entries:?}: {err}");
            let outside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| n != "d")
                .collect();
            assert!(outside.is_empty(), "{entries:?} wrote {outside:?}");
        }
    }

    #[test]
    fn an_oversized_long_name_is_refused_from_its_header() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_path("././@LongLink").unwrap();
        h.set_size(1 << 30);
        h.set_cksum();
        // The header alone: the 1 GiB it announces is never read.
        let err = unpack_archive(
            &h.as_bytes()[..],
            Path::new("/nonexistent"),
            Limits::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("GNU long name header of 1073741824 bytes"),
            "{err}"
        );
    }
}
