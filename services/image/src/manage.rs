//! Names and their removal, as Docker has them: `tag`, `rmi` (untag; delete an image only
//! when no name and no container holds it), dangling images (`<none>`), `history` and
//! `image prune`.
//!
//! An image whose last name moves to another image (a new pull, tag, commit or build of the
//! same name) is kept as a *dangling* record named by its id, `sha256:<hex>`, so that
//! containers made from it keep showing it and `image prune` can remove it later.

use crate::error::ImageError;
use crate::images::{ImageStore, LABEL_ID};
use crate::metadata::ImageRecord;
use berth_api::containers::v1::ListContainersRequest;
use berth_api::images::v1 as api;
use berth_core::digest::chain_id;
use berth_core::grpc::request;
use berth_core::Reference;
use tonic::Code;

/// The record name of an image no reference names.
pub fn dangling_name(id: &str) -> String {
    id.to_string()
}

/// A dangling record is named by the image id itself.
pub fn is_dangling(rec: &ImageRecord) -> bool {
    rec.name.starts_with("sha256:")
}

fn image_id(rec: &ImageRecord) -> String {
    rec.labels
        .get(LABEL_ID)
        .cloned()
        .unwrap_or_else(|| rec.target.digest.clone())
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn familiar(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

/// A container that uses an image, as the runtime service reports it.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub running: bool,
}

impl ImageStore {
    /// Containers using the image `id`. Without a runtime service (an image service hosted
    /// alone) no container can use it.
    pub async fn users(&self, ns: &str, id: &str) -> Result<Vec<User>, ImageError> {
        Ok(self
            .containers(ns)
            .await?
            .into_iter()
            .filter(|c| c.image_id == id)
            .map(|c| User {
                running: c.state.as_ref().is_some_and(|s| {
                    matches!(s.status.as_str(), "running" | "paused" | "restarting")
                }),
                id: c.id,
            })
            .collect())
    }

    /// The containers of namespace `ns`, as the runtime service lists them; none without a
    /// runtime service (an image service hosted alone, or one not reachable).
    async fn containers(
        &self,
        ns: &str,
    ) -> Result<Vec<berth_api::containers::v1::Container>, ImageError> {
        let Some(mut containers) = self.containers.clone() else {
            return Ok(Vec::new());
        };
        match containers.list(request(ns, ListContainersRequest {})).await {
            Ok(r) => Ok(r.into_inner().containers),
            Err(s) if s.code() == Code::Unavailable || s.code() == Code::Unimplemented => {
                tracing::warn!(error = %s.message(), "no runtime service to ask which containers use an image");
                Ok(Vec::new())
            }
            Err(s) => Err(s.into()),
        }
    }

    /// Other records (names and dangling) holding image `id`.
    fn holders(&self, ns: &str, id: &str) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self
            .db
            .list(ns)?
            .into_iter()
            .filter(|r| image_id(r) == id)
            .collect())
    }

    /// After `old` lost the name `name` (removed or moved to another image): keeps the image
    /// as a dangling record when nothing else names it and `keep` says so.
    async fn orphan(&self, ns: &str, old: &ImageRecord, keep: bool) -> Result<(), ImageError> {
        let id = image_id(old);
        let others = self.holders(ns, &id)?;
        if others.iter().any(|r| r.name != old.name) {
            return Ok(());
        }
        if keep {
            let mut rec = old.clone();
            rec.name = dangling_name(&id);
            self.db.put(ns, &rec).await?;
        }
        Ok(())
    }

    /// Stores `rec` under its name; the image the name held before, if another, becomes
    /// dangling when nothing else names it, and a dangling record of `rec`'s image goes.
    pub(crate) async fn put_name(&self, ns: &str, rec: &ImageRecord) -> Result<(), ImageError> {
        let previous = self.db.get(ns, &rec.name)?;
        self.db.put(ns, rec).await?;
        let id = image_id(rec);
        if !is_dangling(rec) {
            let dangling = dangling_name(&id);
            if dangling != rec.name && self.db.get(ns, &dangling)?.is_some() {
                self.db.delete(ns, &dangling).await?;
            }
        }
        if let Some(old) = previous.filter(|old| image_id(old) != id) {
            self.orphan(ns, &old, true).await?;
        }
        Ok(())
    }

    /// `berth tag SOURCE TARGET`.
    pub async fn tag(
        &self,
        ns: &str,
        source: &str,
        target: &str,
    ) -> Result<ImageRecord, ImageError> {
        let src = self.find(ns, source)?;
        let target = Reference::parse(target)?;
        if target.digest().is_some() {
            return Err(ImageError::InvalidArgument(format!(
                "refusing to create a tag with a digest reference: {target}"
            )));
        }
        let mut rec = src.clone();
        rec.name = target.to_string();
        // A build's last step is an intermediate image until it gets a name.
        rec.labels.remove(crate::commit::LABEL_INTERMEDIATE);
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        rec.created = self
            .db
            .get(ns, &rec.name)?
            .map(|r| r.created)
            .unwrap_or(now);
        rec.updated = now;
        self.put_name(ns, &rec).await?;
        self.publish(ns, "tag", &rec.name);
        Ok(rec)
    }

    /// `berth rmi [-f] NAME|ID` with Docker's rules: a name is untagged, and the image is
    /// deleted when no other name and no container holds it; an id deletes the image and all
    /// its names (several names or a stopped container need `force`; a running container
    /// stops it even then). Returns the names untagged and the image ids deleted.
    pub async fn remove(
        &self,
        ns: &str,
        name: &str,
        force: bool,
    ) -> Result<(Vec<String>, Vec<String>), ImageError> {
        let by_name = match Reference::parse(name) {
            Ok(r) if !name.starts_with("sha256:") => self.db.get(ns, &r.to_string())?,
            _ => None,
        };
        let mut untagged = Vec::new();
        let mut deleted = Vec::new();
        if let Some(rec) = by_name {
            let id = image_id(&rec);
            let others: Vec<_> = self
                .holders(ns, &id)?
                .into_iter()
                .filter(|r| r.name != rec.name && !is_dangling(r))
                .collect();
            if !others.is_empty() {
                self.db.delete(ns, &rec.name).await?;
                untagged.push(familiar(&rec.name));
                self.publish(ns, "untag", &rec.name);
                return Ok((untagged, deleted));
            }
            let users = self.users(ns, &id).await?;
            if let Some(u) = users.first() {
                if !force {
                    return Err(conflict(format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                        short(&u.id),
                        short(&id)
                    )));
                }
            }
            self.db.delete(ns, &rec.name).await?;
            untagged.push(familiar(&rec.name));
            self.publish(ns, "untag", &rec.name);
            if users.iter().any(|u| u.running) {
                // The image stays for its running container, without a name.
                self.orphan(ns, &rec, true).await?;
            } else {
                self.drop_dangling(ns, &id).await?;
                deleted.push(id.clone());
                self.publish(ns, "delete", &id);
            }
            return Ok((untagged, deleted));
        }

        let rec = self.find(ns, name)?;
        let id = image_id(&rec);
        let users = self.users(ns, &id).await?;
        if let Some(u) = users.iter().find(|u| u.running) {
            return Err(conflict(format!(
                "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                short(&id),
                short(&u.id)
            )));
        }
        if let Some(u) = users.first().filter(|_| !force) {
            return Err(conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is being used by stopped container {}",
                short(&id),
                short(&u.id)
            )));
        }
        let holders = self.holders(ns, &id)?;
        let names: Vec<_> = holders.iter().filter(|r| !is_dangling(r)).collect();
        if names.len() > 1 && !force {
            return Err(conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                short(&id)
            )));
        }
        for r in &holders {
            self.db.delete(ns, &r.name).await?;
            if !is_dangling(r) {
                untagged.push(familiar(&r.name));
                self.publish(ns, "untag", &r.name);
            }
        }
        deleted.push(id.clone());
        self.publish(ns, "delete", &id);
        Ok((untagged, deleted))
    }

    async fn drop_dangling(&self, ns: &str, id: &str) -> Result<(), ImageError> {
        let dangling = dangling_name(id);
        if self.db.get(ns, &dangling)?.is_some() {
            self.db.delete(ns, &dangling).await?;
        }
        Ok(())
    }

    /// `berth image prune [-a]`: dangling images no container uses (with `all`, every image
    /// no container uses), then garbage collection.
    pub async fn prune(&self, ns: &str, all: bool) -> Result<api::PruneImagesResponse, ImageError> {
        let mut untagged = Vec::new();
        let mut deleted = Vec::new();
        let used: std::collections::HashSet<String> = self
            .containers(ns)
            .await?
            .into_iter()
            .map(|c| c.image_id)
            .collect();
        let mut by_id: std::collections::BTreeMap<String, Vec<ImageRecord>> = Default::default();
        for r in self.db.list(ns)? {
            by_id.entry(image_id(&r)).or_default().push(r);
        }
        for (id, recs) in by_id {
            if used.contains(&id) {
                continue;
            }
            let dangling = recs.iter().all(is_dangling);
            if !dangling && !all {
                continue;
            }
            // Build steps are the build cache (and a build under way stands on them): only
            // `prune -a` takes them.
            let intermediate = recs
                .iter()
                .all(|r| r.labels.contains_key(crate::commit::LABEL_INTERMEDIATE));
            if intermediate && !all {
                continue;
            }
            for r in &recs {
                self.db.delete(ns, &r.name).await?;
                if !is_dangling(r) {
                    untagged.push(familiar(&r.name));
                }
            }
            self.publish(ns, "delete", &id);
            deleted.push(id);
        }
        let gc = self.collect_garbage(ns).await?;
        Ok(api::PruneImagesResponse {
            untagged,
            deleted,
            space_reclaimed: gc.bytes,
        })
    }

    /// `berth history`: the config's history, newest first; layer sizes are the unpacked sizes
    /// of the snapshots when the image is unpacked, else the compressed sizes.
    pub async fn history(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Vec<api::HistoryEntry>, ImageError> {
        let rec = self.find(ns, name)?;
        let r = self.resolve(rec.clone())?;
        let config: serde_json::Value = serde_json::from_slice(&r.config)
            .map_err(|e| ImageError::InvalidArgument(format!("config of {}: {e}", rec.name)))?;
        let id = r.config_digest.to_string();
        let tags: Vec<String> = self
            .holders(ns, &id)?
            .iter()
            .filter(|h| !is_dangling(h))
            .map(|h| familiar(&h.name))
            .collect();
        let snapshotter = rec
            .labels
            .get(crate::images::LABEL_SNAPSHOTTER)
            .cloned()
            .unwrap_or_else(|| self.default_snapshotter_name());
        let mut sizes = Vec::with_capacity(r.diff_ids.len());
        for (i, layer) in r.manifest.layers.iter().enumerate() {
            let chain = chain_id(&r.diff_ids[..=i])
                .map(|d| d.to_string())
                .unwrap_or_default();
            sizes.push(
                self.layer_size(ns, &snapshotter, &chain)
                    .await
                    .unwrap_or(layer.size),
            );
        }
        let steps = config
            .get("history")
            .and_then(|h| h.as_array())
            .cloned()
            .unwrap_or_default();
        let mut entries = Vec::new();
        let mut layer = 0usize;
        let text = |v: &serde_json::Value, k: &str| {
            v.get(k)
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_string()
        };
        for step in &steps {
            let empty = step
                .get("empty_layer")
                .and_then(|e| e.as_bool())
                .unwrap_or(false);
            let size = if empty {
                0
            } else {
                let s = sizes.get(layer).copied().unwrap_or(0);
                layer += 1;
                s
            };
            entries.push(api::HistoryEntry {
                id: "<missing>".into(),
                created: parse_time(&text(step, "created")),
                created_by: text(step, "created_by"),
                size,
                comment: text(step, "comment"),
                empty_layer: empty,
                tags: Vec::new(),
            });
        }
        // Layers the history does not describe (images made without history) still show.
        while layer < sizes.len() {
            entries.push(api::HistoryEntry {
                id: "<missing>".into(),
                created: parse_time(r.created.as_deref().unwrap_or_default()),
                size: sizes[layer],
                ..Default::default()
            });
            layer += 1;
        }
        entries.reverse();
        if let Some(top) = entries.first_mut() {
            top.id = id;
            top.tags = tags;
        }
        Ok(entries)
    }

    async fn layer_size(&self, ns: &str, snapshotter: &str, chain: &str) -> Option<i64> {
        let u = self
            .snapshots
            .clone()
            .usage(request(
                ns,
                berth_api::snapshots::v1::SnapshotKey {
                    snapshotter: snapshotter.to_string(),
                    key: chain.to_string(),
                },
            ))
            .await
            .ok()?;
        Some(u.into_inner().size)
    }
}

fn conflict(msg: String) -> ImageError {
    ImageError::Conflict(msg)
}

/// An RFC 3339 time (as image configs write them) as a protobuf timestamp.
pub(crate) fn parse_time(s: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}
