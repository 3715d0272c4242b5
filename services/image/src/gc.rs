//! Garbage collection of blobs and snapshots, and the leases that protect work in flight.
//!
//! Mark: every image record of every namespace holds its index or manifest, the manifests an
//! index lists (those stored), and each manifest's config and layers; in the namespace being
//! collected, each image holds the snapshot of every chain of its layers. Sweep: blobs not
//! marked, and committed snapshots not marked that no other snapshot builds on (a container's
//! rw snapshot keeps its image's chain), repeated until nothing more goes. Active snapshots
//! belong to containers and builds and are never collected here.
//!
//! A [`Lease`] is taken by every operation that writes or reads content (pull, import,
//! commit, push): it names what it holds explicitly, and everything created after it began
//! is kept until it ends, so a blob written a moment before its image record is never lost.

use crate::error::ImageError;
use crate::images::{ImageStore, LABEL_MANIFEST, LABEL_SNAPSHOTTER};
use berth_api::snapshots::v1::{Kind, ListSnapshotsRequest, SnapshotKey};
use berth_core::digest::chain_id;
use berth_core::grpc::request;
use berth_core::{media, Digest};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, Default)]
struct Held {
    since: Option<SystemTime>,
    blobs: HashSet<Digest>,
    snapshots: HashSet<String>,
}

/// The leases of the image service (in memory: a restart ends all work in flight).
#[derive(Debug, Clone, Default)]
pub struct Leases {
    inner: Arc<Mutex<(u64, HashMap<u64, Held>)>>,
}

/// Work in flight; dropping it releases what it holds.
#[derive(Debug)]
pub struct Lease {
    id: u64,
    leases: Leases,
}

impl Leases {
    pub fn acquire(&self) -> Lease {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let id = g.0;
        g.1.insert(
            id,
            Held {
                since: Some(SystemTime::now()),
                ..Default::default()
            },
        );
        Lease {
            id,
            leases: self.clone(),
        }
    }
}

/// Whether the leases in `held` protect an object: held by name, or made after a lease began
/// (less a second, for the coarse clock file times come from).
fn protects(
    held: &HashMap<u64, Held>,
    digest: Option<&Digest>,
    snapshot: Option<&str>,
    created: Option<SystemTime>,
) -> bool {
    held.values().any(|h| {
        digest.is_some_and(|d| h.blobs.contains(d))
            || snapshot.is_some_and(|n| h.snapshots.contains(n))
            || matches!((h.since, created),
                (Some(since), Some(c)) if c + std::time::Duration::from_secs(1) >= since)
    })
}

impl Leases {
    /// Runs `f` unless the current leases protect the object, with the leases locked so that
    /// no lease can take the object while `f` removes it.
    fn unless_protected<T>(
        &self,
        digest: Option<&Digest>,
        snapshot: Option<&str>,
        created: Option<SystemTime>,
        f: impl FnOnce() -> T,
    ) -> Option<T> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if protects(&g.1, digest, snapshot, created) {
            return None;
        }
        Some(f())
    }
}

impl Lease {
    pub fn blob(&self, d: &Digest) {
        let mut g = self.leases.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = g.1.get_mut(&self.id) {
            h.blobs.insert(d.clone());
        }
    }

    pub fn snapshot(&self, name: &str) {
        let mut g = self.leases.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = g.1.get_mut(&self.id) {
            h.snapshots.insert(name.to_string());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut g = self.leases.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.remove(&self.id);
    }
}

/// What a collection removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Collected {
    pub blobs: i32,
    pub snapshots: i32,
    pub bytes: i64,
}

/// One collection at a time per service.
static GC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl ImageStore {
    /// Removes the blobs no record of any namespace holds and no lease protects; returns how
    /// many and their bytes.
    fn sweep_blobs(&self) -> Result<(i32, i64), ImageError> {
        let mut marked: HashSet<Digest> = HashSet::new();
        for (_, rec) in self.db.list_all()? {
            for d in [Some(&rec.target.digest), rec.labels.get(LABEL_MANIFEST)]
                .into_iter()
                .flatten()
            {
                if let Ok(d) = d.parse::<Digest>() {
                    self.mark(&d, &mut marked);
                }
            }
        }
        let (mut blobs, mut bytes) = (0, 0);
        for blob in self.content.list()? {
            if marked.contains(&blob.digest) {
                continue;
            }
            let removed =
                self.leases
                    .unless_protected(Some(&blob.digest), None, Some(blob.created), || {
                        self.content.delete(&blob.digest)
                    });
            match removed {
                None => {}
                Some(Ok(())) => {
                    blobs += 1;
                    bytes += blob.size as i64;
                    tracing::debug!(digest = %blob.digest, size = blob.size, "blob collected");
                }
                Some(Err(e)) => {
                    tracing::warn!(digest = %blob.digest, error = %e, "cannot remove blob")
                }
            }
        }
        Ok((blobs, bytes))
    }

    /// Marks what `digest` holds: itself, and when it is a stored manifest or index, what it
    /// names.
    fn mark(&self, digest: &Digest, marked: &mut HashSet<Digest>) {
        if !marked.insert(digest.clone()) {
            return;
        }
        let Ok(bytes) = self.content.read_small(digest, media::MAX_MANIFEST_SIZE) else {
            return;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return;
        };
        let digest_of = |d: &serde_json::Value| {
            d.get("digest")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse::<Digest>().ok())
        };
        if let Some(list) = v.get("manifests").and_then(|m| m.as_array()) {
            for d in list.iter().filter_map(digest_of) {
                self.mark(&d, marked);
            }
        }
        if let Some(c) = v.get("config").and_then(digest_of) {
            marked.insert(c);
        }
        if let Some(layers) = v.get("layers").and_then(|l| l.as_array()) {
            marked.extend(layers.iter().filter_map(digest_of));
        }
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
        let mut keep: HashSet<(String, String)> = HashSet::new();
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
        for sn in snapshotters {
            loop {
                let listed = match self
                    .snapshots
                    .clone()
                    .list(request(
                        ns,
                        ListSnapshotsRequest {
                            snapshotter: sn.clone(),
                        },
                    ))
                    .await
                {
                    Ok(l) => l.into_inner().info,
                    Err(s)
                        if s.code() == tonic::Code::InvalidArgument
                            || s.code() == tonic::Code::NotFound =>
                    {
                        break
                    }
                    Err(s) => return Err(s.into()),
                };
                let parents: HashSet<&str> = listed.iter().map(|i| i.parent.as_str()).collect();
                let doomed: Vec<_> = listed
                    .iter()
                    .filter(|i| i.kind == Kind::Committed as i32)
                    .filter(|i| !parents.contains(i.name.as_str()))
                    .filter(|i| !keep.contains(&(sn.clone(), i.name.clone())))
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
                    break;
                }
                let mut removed_any = false;
                for (name, created) in doomed {
                    // Leases taken since the listing count too.
                    if self
                        .leases
                        .unless_protected(None, Some(&name), created, || ())
                        .is_none()
                    {
                        continue;
                    }
                    let size = self
                        .snapshots
                        .clone()
                        .usage(request(
                            ns,
                            SnapshotKey {
                                snapshotter: sn.clone(),
                                key: name.clone(),
                            },
                        ))
                        .await
                        .map(|u| u.into_inner().size)
                        .unwrap_or(0);
                    match self
                        .snapshots
                        .clone()
                        .remove(request(
                            ns,
                            SnapshotKey {
                                snapshotter: sn.clone(),
                                key: name.clone(),
                            },
                        ))
                        .await
                    {
                        Ok(_) => {
                            removed_any = true;
                            out.snapshots += 1;
                            out.bytes += size;
                            tracing::debug!(snapshot = %name, "snapshot collected");
                        }
                        Err(s) => {
                            tracing::warn!(snapshot = %name, error = %s.message(), "cannot remove snapshot")
                        }
                    }
                }
                if !removed_any {
                    break;
                }
            }
        }
        if out.blobs > 0 || out.snapshots > 0 {
            tracing::info!(namespace = %ns, blobs = out.blobs, snapshots = out.snapshots, bytes = out.bytes, "garbage collected");
        }
        Ok(out)
    }
}
