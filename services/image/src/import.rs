//! `image import`: an OCI image layout archive (`skopeo copy … oci-archive:`, `berth image
//! export`) or a `docker save` archive. The archive is unpacked into a private temporary folder
//! (an entry with an absolute or `..` path is refused; tar's own checks keep links inside it),
//! every file read from it must stay inside it, and every blob is verified by digest as it goes
//! into the content store.

use crate::error::ImageError;
use crate::images::{
    progress, ImageStore, ProgressTx, LABEL_CREATED, LABEL_ID, LABEL_MANIFEST, LABEL_SIZE,
    LABEL_SNAPSHOTTER,
};
use crate::manifest::{self, Descriptor};
use crate::metadata::ImageRecord;
use berth_core::{media, Digest, Reference};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// A tar error on `entry` with its causes: tar says what failed (`failed to unpack …`) and
/// only its causes say why (`trying to unpack outside of destination path`).
fn tar_err(entry: &Path, e: std::io::Error) -> ImageError {
    let mut msg = format!("entry {:?}: {e}", entry.display().to_string());
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg = format!("{msg}: {s}");
        }
        cause = c.source();
    }
    archive_err(msg)
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
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(archive.parent().unwrap_or(Path::new("/tmp")))
            .map_err(archive_err)?;
        let (archive_path, dest) = (archive.to_path_buf(), dir.path().to_path_buf());
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
                _ => Box::new(f),
            };
            let mut a = tar::Archive::new(reader);
            a.set_preserve_permissions(false);
            a.set_unpack_xattrs(false);
            for entry in a.entries().map_err(archive_err)? {
                let mut entry = entry.map_err(archive_err)?;
                let t = entry.header().entry_type();
                if !(t.is_file() || t.is_dir() || t.is_symlink() || t.is_hard_link()) {
                    continue;
                }
                // tar would quietly make an absolute name relative and skip a `..` one: an
                // archive made by `docker save` or an OCI tool has neither, so refuse it.
                let path = entry.path().map_err(archive_err)?.into_owned();
                if path.has_root() {
                    return Err(archive_err(format!(
                        "entry {:?} has an absolute path",
                        path.display().to_string()
                    )));
                }
                if path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                    || !entry.unpack_in(&dest).map_err(|e| tar_err(&path, e))?
                {
                    return Err(archive_err(format!(
                        "entry {:?} escapes the archive",
                        path.display().to_string()
                    )));
                }
            }
            Ok(())
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
