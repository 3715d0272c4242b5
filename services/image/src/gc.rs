//! Garbage collection of blobs and snapshots.
//!
//! Mark: every image record of every namespace holds its index or manifest, the manifests an
//! index lists (those stored), and each manifest's config and layers; in the namespace being
//! collected, each image holds the snapshot of every chain of its layers. Sweep: blobs not
//! marked, and committed snapshots not marked that no other snapshot builds on (a container's
//! rw snapshot keeps its image's chain), repeated until nothing more goes. Active snapshots
//! belong to containers and builds and are never collected here.
//!
//! What work in flight holds is kept as long as it runs: see [`crate::lease`].
//!
//! The same walk ([`ImageStore::reachable`]) tells which images hold a blob, so that
//! `Content.Delete` can refuse to remove one ([`ImageStore::delete_blob`]), and what a
//! manifest or index names, which `Content.List` shows as containerd's gc.ref labels.

use crate::error::ImageError;
use crate::images::{ImageStore, LABEL_MANIFEST, LABEL_SNAPSHOTTER};
use berth_api::snapshots::v1::{Kind, ListSnapshotsRequest, SnapshotKey};
use berth_core::digest::chain_id;
use berth_core::grpc::request;
use berth_core::{media, Digest};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

/// What the walk from the image records found.
#[derive(Debug, Default)]
pub(crate) struct Reachable {
    /// Every blob an image record holds, with the records (namespace, name) holding it.
    pub holders: HashMap<Digest, Vec<(String, String)>>,
    /// The manifests and indexes met on the way, with what each names.
    pub refs: HashMap<Digest, Refs>,
}

/// What one manifest (config, layers) or index (manifests) names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Refs {
    pub manifests: Vec<Digest>,
    pub config: Option<Digest>,
    pub layers: Vec<Digest>,
}

impl Refs {
    /// containerd's garbage collection labels of a content blob: `…content.m.<i>` for an
    /// index's manifests, `…content.config` and `…content.l.<i>` for a manifest's blobs.
    pub fn labels(&self) -> BTreeMap<String, String> {
        const PREFIX: &str = "berth.gc.ref.content";
        let mut out = BTreeMap::new();
        for (i, m) in self.manifests.iter().enumerate() {
            out.insert(format!("{PREFIX}.m.{i}"), m.to_string());
        }
        if let Some(c) = &self.config {
            out.insert(format!("{PREFIX}.config"), c.to_string());
        }
        for (i, l) in self.layers.iter().enumerate() {
            out.insert(format!("{PREFIX}.l.{i}"), l.to_string());
        }
        out
    }
}

/// The refusal of `Content.Delete` for a blob `images` hold.
fn held_by_images(digest: &Digest, images: &[(String, String)]) -> String {
    let mut images = images.to_vec();
    images.sort();
    let (ns, name) = &images[0];
    let more = match images.len() - 1 {
        0 => String::new(),
        1 => " and 1 more image".to_string(),
        n => format!(" and {n} more images"),
    };
    format!(
        "content {digest} is part of image {name} (namespace {ns}){more}: remove the image \
         instead (berth rmi); its blobs go with it once no image holds them"
    )
}

/// What a collection removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Collected {
    pub blobs: i32,
    pub snapshots: i32,
    pub bytes: i64,
}

/// Committed snapshots images hold: (snapshotter, chain id).
type HeldSnapshots = HashSet<(String, String)>;

/// One collection at a time per service.
static GC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl ImageStore {
    /// Removes the blobs no record of any namespace holds and no lease protects; returns how
    /// many and their bytes.
    fn sweep_blobs(&self) -> Result<(i32, i64), ImageError> {
        let held = self.reachable()?.holders;
        let (mut blobs, mut bytes) = (0, 0);
        for blob in self.content.list()? {
            if held.contains_key(&blob.digest) {
                continue;
            }
            let removed =
                self.leases
                    .unless_protected(Some(&blob.digest), None, Some(blob.created), || {
                        self.content.delete(&blob.digest)
                    });
            match removed {
                Err(_) => {}
                Ok(Ok(())) => {
                    blobs += 1;
                    bytes += blob.size as i64;
                    tracing::debug!(digest = %blob.digest, size = blob.size, "blob collected");
                }
                Ok(Err(e)) => {
                    tracing::warn!(digest = %blob.digest, error = %e, "cannot remove blob")
                }
            }
        }
        Ok((blobs, bytes))
    }

    /// What a stored manifest or index names; nothing for a blob that is neither (or absent).
    fn refs_of(&self, digest: &Digest) -> Refs {
        let Ok(bytes) = self.content.read_small(digest, media::MAX_MANIFEST_SIZE) else {
            return Refs::default();
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Refs::default();
        };
        let digest_of = |d: &serde_json::Value| {
            d.get("digest")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse::<Digest>().ok())
        };
        let list = |key: &str| -> Vec<Digest> {
            v.get(key)
                .and_then(|m| m.as_array())
                .map(|l| l.iter().filter_map(digest_of).collect())
                .unwrap_or_default()
        };
        Refs {
            manifests: list("manifests"),
            config: v.get("config").and_then(digest_of),
            layers: list("layers"),
        }
    }

    /// Walks from every image record of every namespace: its index or manifest, the
    /// manifests an index lists, each manifest's config and layers.
    pub(crate) fn reachable(&self) -> Result<Reachable, ImageError> {
        let mut out = Reachable::default();
        for (ns, rec) in self.db.list_all()? {
            let mut held: HashSet<Digest> = HashSet::new();
            let mut todo: Vec<Digest> = [Some(&rec.target.digest), rec.labels.get(LABEL_MANIFEST)]
                .into_iter()
                .flatten()
                .filter_map(|d| d.parse().ok())
                .collect();
            while let Some(d) = todo.pop() {
                if !held.insert(d.clone()) {
                    continue;
                }
                let refs = out
                    .refs
                    .entry(d.clone())
                    .or_insert_with(|| self.refs_of(&d));
                todo.extend(refs.manifests.iter().cloned());
                held.extend(refs.config.iter().cloned());
                held.extend(refs.layers.iter().cloned());
            }
            for d in held {
                out.holders
                    .entry(d)
                    .or_default()
                    .push((ns.clone(), rec.name.clone()));
            }
        }
        Ok(out)
    }

    /// `Content.Delete`: removes a blob unless an image holds it (in any namespace: blobs are
    /// shared) or a lease protects it; both are FailedPrecondition, naming who holds it.
    pub async fn delete_blob(&self, digest: &Digest) -> Result<(), ImageError> {
        // No collection meanwhile: they would race for the same files.
        let _one = GC.lock().await;
        let store = self.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            let info = store.content.info(&digest)?;
            if let Some(images) = store.reachable()?.holders.get(&digest) {
                return Err(ImageError::Conflict(held_by_images(&digest, images)));
            }
            store
                .leases
                .unless_protected(Some(&digest), None, Some(info.created), || {
                    store.content.delete(&digest)
                })
                .map_err(|lease| {
                    ImageError::Conflict(format!(
                        "content {digest} is in use by work in flight (lease {lease}): wait \
                         for it to end, or stop it with `berth lease rm {lease}`"
                    ))
                })?
                .map_err(ImageError::from)
        })
        .await
        .map_err(|e| ImageError::InvalidArgument(format!("content delete task: {e}")))?
    }

    /// Removes blobs no image holds, and in namespace `ns` committed snapshots no image holds.
    pub async fn collect_garbage(&self, ns: &str) -> Result<Collected, ImageError> {
        let _one = GC.lock().await;
        let mut out = Collected::default();

        // Blobs: file-system work, on a blocking thread.
        let store = self.clone();
        let (blobs, bytes) = tokio::task::spawn_blocking(move || store.sweep_blobs())
            .await
            .map_err(|e| ImageError::InvalidArgument(format!("garbage collection task: {e}")))??;
        out.blobs = blobs;
        out.bytes = bytes;

        // Snapshots of this namespace.
        let (keep, snapshotters) = self.snapshots_in_use(ns)?;
        for sn in snapshotters {
            self.sweep_snapshots(ns, &sn, &keep, &mut out).await?;
        }
        if out.blobs > 0 || out.snapshots > 0 {
            tracing::info!(namespace = %ns, blobs = out.blobs, snapshots = out.snapshots, bytes = out.bytes, "garbage collected");
        }
        self.metrics.collected(&out);
        Ok(out)
    }

    /// The committed snapshots the images of `ns` hold, as (snapshotter, chain id), and the
    /// snapshotters to look in (the images' and the default).
    fn snapshots_in_use(&self, ns: &str) -> Result<(HeldSnapshots, HashSet<String>), ImageError> {
        let mut keep: HeldSnapshots = HashSet::new();
        let mut snapshotters: HashSet<String> = HashSet::from([self.default_snapshotter_name()]);
        for rec in self.db.list(ns)? {
            let sn = rec
                .labels
                .get(LABEL_SNAPSHOTTER)
                .cloned()
                .unwrap_or_else(|| self.default_snapshotter_name());
            snapshotters.insert(sn.clone());
            let Ok(r) = self.resolve(rec) else { continue };
            for i in 0..r.diff_ids.len() {
                if let Some(c) = chain_id(&r.diff_ids[..=i]) {
                    keep.insert((sn.clone(), c.to_string()));
                }
            }
        }
        Ok((keep, snapshotters))
    }

    /// Removes the committed snapshots of snapshotter `sn` that no image, child snapshot or
    /// lease holds, in rounds: removing a layer can free its parent for the next round.
    async fn sweep_snapshots(
        &self,
        ns: &str,
        sn: &str,
        keep: &HeldSnapshots,
        out: &mut Collected,
    ) -> Result<(), ImageError> {
        loop {
            let listed = match self
                .snapshots
                .clone()
                .list(request(
                    ns,
                    ListSnapshotsRequest {
                        snapshotter: sn.to_string(),
                    },
                ))
                .await
            {
                Ok(l) => l.into_inner().info,
                Err(s)
                    if s.code() == tonic::Code::InvalidArgument
                        || s.code() == tonic::Code::NotFound =>
                {
                    return Ok(())
                }
                Err(s) => return Err(s.into()),
            };
            let parents: HashSet<&str> = listed.iter().map(|i| i.parent.as_str()).collect();
            let doomed: Vec<_> = listed
                .iter()
                .filter(|i| i.kind == Kind::Committed as i32)
                .filter(|i| !parents.contains(i.name.as_str()))
                .filter(|i| !keep.contains(&(sn.to_string(), i.name.clone())))
                .map(|i| {
                    let created = i.created_at.as_ref().map(|t| {
                        SystemTime::UNIX_EPOCH
                            + std::time::Duration::new(
                                t.seconds.max(0) as u64,
                                t.nanos.max(0) as u32,
                            )
                    });
                    (i.name.clone(), created)
                })
                .collect();
            if doomed.is_empty() {
                return Ok(());
            }
            let mut removed_any = false;
            for (name, created) in doomed {
                if let Some(size) = self.remove_snapshot(ns, sn, &name, created).await {
                    removed_any = true;
                    out.snapshots += 1;
                    out.bytes += size;
                }
            }
            if !removed_any {
                return Ok(());
            }
        }
    }

    /// Removes one snapshot unless a lease holds it; its size when it was removed.
    async fn remove_snapshot(
        &self,
        ns: &str,
        sn: &str,
        name: &str,
        created: Option<SystemTime>,
    ) -> Option<i64> {
        // Leases taken since the listing count too.
        if self
            .leases
            .unless_protected(None, Some(name), created, || ())
            .is_err()
        {
            return None;
        }
        let key = || {
            request(
                ns,
                SnapshotKey {
                    snapshotter: sn.to_string(),
                    key: name.to_string(),
                },
            )
        };
        let size = self
            .snapshots
            .clone()
            .usage(key())
            .await
            .map(|u| u.into_inner().size)
            .unwrap_or(0);
        match self.snapshots.clone().remove(key()).await {
            Ok(_) => {
                tracing::debug!(snapshot = %name, "snapshot collected");
                Some(size)
            }
            Err(s) => {
                tracing::warn!(snapshot = %name, error = %s.message(), "cannot remove snapshot");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_labels_as_containerd_names_them() {
        let d = |s: &str| Digest::sha256_of(s.as_bytes());
        let manifest = Refs {
            manifests: vec![],
            config: Some(d("c")),
            layers: vec![d("l0"), d("l1")],
        };
        let labels = manifest.labels();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels["berth.gc.ref.content.config"], d("c").to_string());
        assert_eq!(labels["berth.gc.ref.content.l.1"], d("l1").to_string());
        let index = Refs {
            manifests: vec![d("m")],
            ..Default::default()
        };
        assert_eq!(
            index.labels(),
            BTreeMap::from([("berth.gc.ref.content.m.0".to_string(), d("m").to_string())])
        );
        assert!(Refs::default().labels().is_empty());
    }

    #[test]
    fn refusals_name_an_image() {
        let d = Digest::sha256_of(b"x");
        let one = held_by_images(&d, &[("default".into(), "docker.io/library/a:1".into())]);
        assert!(
            one.contains("is part of image docker.io/library/a:1 (namespace default): remove"),
            "{one}"
        );
        let three = held_by_images(
            &d,
            &[
                ("team".into(), "b".into()),
                ("default".into(), "c".into()),
                ("default".into(), "a".into()),
            ],
        );
        assert!(
            three.contains("image a (namespace default) and 2 more images"),
            "{three}"
        );
    }
}
