//! [`Snapshots`]: the snapshot service's domain, usable in-process. It joins the records
//! ([`Metadata`]) with the folders of a snapshotter ([`Storage`]: overlayfs or native) and
//! applies layers ([`crate::apply`]). Every method blocks (sled, filesystem work); async
//! callers run them on a blocking thread.
//!
//! Work is ordered so that a crash at any point leaves the database consistent: a snapshot's
//! folder is made before its record and removed after it, and [`Snapshots::open`] deletes
//! folders without a record.

use crate::apply::{self, Target, Whiteouts};
use crate::error::{Error, Result};
use crate::metadata::{Kind, Metadata, NewSnapshot, Record, Recovery};
use crate::native::{self, Native};
use crate::overlay::{self, Overlay};
use berth_api::types::v1::Mount;
use berth_core::Digest;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How one snapshotter lays snapshots out on disk: `<snapshots_dir>/<id>/fs` plus whatever
/// else it needs, and which mounts make a snapshot.
pub(crate) trait Storage: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn snapshots_dir(&self) -> &Path;
    fn dir(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }
    /// The folder that holds the snapshot's own files.
    fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }
    /// Whether a snapshot of `kind` on `parents` (nearest first) can be made and mounted.
    fn check(&self, kind: Kind, parents: &[u64]) -> Result<()>;
    /// Makes the folder of a new snapshot.
    fn create(&self, id: u64, kind: Kind, parents: &[u64]) -> Result<()>;
    fn mounts(&self, id: u64, kind: Kind, parents: &[u64]) -> Vec<Mount>;
    fn whiteouts(&self) -> Whiteouts;
    /// The layers below a new layer, as [`apply`] consults them.
    fn lowers(&self, parents: &[u64]) -> Vec<PathBuf>;
}

/// A bind mount of `source`.
pub(crate) fn bind_mount(source: &Path, read_only: bool) -> Mount {
    Mount {
        r#type: "bind".into(),
        source: source.display().to_string(),
        target: String::new(),
        options: vec![if read_only { "ro" } else { "rw" }.into(), "rbind".into()],
    }
}

/// A snapshot as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

impl Info {
    fn new(name: String, r: Record) -> Info {
        let t = |n: u64| UNIX_EPOCH + Duration::from_nanos(n);
        Info {
            name,
            parent: r.parent,
            kind: r.kind,
            labels: r.labels,
            created: t(r.created),
            updated: t(r.updated),
        }
    }
}

/// Disk space of a snapshot's own files (not its parents'), hard links counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// A layer to apply: the header of an Apply call.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The chain id to commit the result as.
    pub name: String,
    /// The chain id below, if any.
    pub parent: Option<String>,
    /// The blob's media type; empty or unknown means "detect the compression".
    pub media_type: String,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    pub labels: BTreeMap<String, String>,
}

/// What an Apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The layer was already committed; nothing was unpacked.
    pub existed: bool,
    /// Bytes on disk of the committed snapshot's own folder.
    pub size: i64,
}

/// The snapshots of every snapshotter and namespace under one root.
#[derive(Debug)]
pub struct Snapshots {
    root: PathBuf,
    metadata: Metadata,
    overlay: Arc<Overlay>,
    native: Arc<Native>,
    default: &'static str,
}

/// Marks the temporary snapshot an Apply unpacks into; its value is the layer's name.
pub const EXTRACTING_LABEL: &str = "berth.snapshot/extracting";

/// Longest key, parent or label accepted (as containerd).
const MAX_KEY: usize = 4096;

fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    if key.len() > MAX_KEY || key.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "{what} {:?} must be at most {MAX_KEY} bytes without NUL characters",
            key.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() || k.len() + v.len() > MAX_KEY {
            return Err(Error::InvalidArgument(format!(
                "label {:?}: keys must be non-empty and key plus value at most {MAX_KEY} bytes",
                k.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = (n ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    hex::encode(b)
}

impl Snapshots {
    /// Opens the snapshot root (`<root>/metadata.db`, `<root>/overlayfs`, `<root>/native`),
    /// probes overlayfs, and cleans up after a crash. `default_snapshotter` is `overlayfs`
    /// (falls back to `native` where overlay does not work) or `native`.
    pub fn open(root: &Path, default_snapshotter: &str) -> Result<Snapshots> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        let metadata = Metadata::open(&root.join("metadata.db"))?;
        let overlay = Arc::new(Overlay::open(root)?);
        let native = Arc::new(Native::open(root)?);
        let default = match default_snapshotter {
            "" | overlay::NAME => match overlay.supported() {
                Ok(()) => overlay::NAME,
                Err(e) => {
                    tracing::warn!(error = %e, "falling back to the native snapshotter");
                    native::NAME
                }
            },
            native::NAME => native::NAME,
            other => return Err(Error::UnknownSnapshotter(other.to_string())),
        };
        let snapshots = Snapshots {
            root: root.to_path_buf(),
            metadata,
            overlay,
            native,
            default,
        };
        for storage in [
            snapshots.overlay.clone() as Arc<dyn Storage>,
            snapshots.native.clone(),
        ] {
            let r: Recovery = snapshots
                .metadata
                .recover(storage.name(), storage.snapshots_dir())?;
            // Extractions a crash interrupted: nobody else can own them while we hold the db.
            for (ns, key, record) in snapshots.metadata.all(storage.name())? {
                if record.kind == Kind::Active && record.labels.contains_key(EXTRACTING_LABEL) {
                    tracing::warn!(namespace = %ns, key, "removing an interrupted layer extraction");
                    snapshots.remove(storage.name(), &ns, &key)?;
                }
            }
            if r != Recovery::default() {
                tracing::warn!(
                    snapshotter = storage.name(),
                    orphan_folders = r.orphan_folders.len(),
                    dangling_records = r.dangling_records.len(),
                    "recovered from an interrupted run"
                );
            }
        }
        Ok(snapshots)
    }

    /// The snapshotter used when a request names none.
    pub fn default_snapshotter(&self) -> &'static str {
        self.default
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn storage(&self, snapshotter: &str) -> Result<(&'static str, &dyn Storage)> {
        match snapshotter {
            "" => self.storage(self.default),
            overlay::NAME => Ok((overlay::NAME, self.overlay.as_ref())),
            native::NAME => Ok((native::NAME, self.native.as_ref())),
            other => Err(Error::UnknownSnapshotter(other.to_string())),
        }
    }

    /// Ids of `parent` and the snapshots below it, nearest first.
    fn parent_ids(&self, sn: &str, ns: &str, parent: Option<&str>) -> Result<Vec<u64>> {
        match parent {
            None => Ok(Vec::new()),
            Some(p) => Ok(self
                .metadata
                .chain(sn, ns, p)?
                .into_iter()
                .map(|(_, r)| r.id)
                .collect()),
        }
    }

    /// A writable snapshot `key` on the committed `parent`; returns its mounts.
    pub fn prepare(
        &self,
        snapshotter: &str,
        namespace: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(snapshotter, namespace, key, parent, labels, Kind::Active)
    }

    /// A read-only view `key` of the committed `parent`; returns its mounts.
    pub fn view(
        &self,
        snapshotter: &str,
        namespace: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(snapshotter, namespace, key, parent, labels, Kind::View)
    }

    fn create(
        &self,
        snapshotter: &str,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        if let Some(p) = parent {
            check_key("parent", p)?;
        }
        check_labels(&labels)?;
        let (sn, storage) = self.storage(snapshotter)?;
        if self.metadata.get(sn, ns, key).is_ok() {
            return Err(Error::AlreadyExists {
                snapshotter: sn.into(),
                namespace: ns.into(),
                key: key.into(),
            });
        }
        let parents = self.parent_ids(sn, ns, parent)?;
        if let Some(p) = parent {
            let r = self.metadata.get(sn, ns, p)?;
            if r.kind != Kind::Committed {
                return Err(Error::ParentNotCommitted {
                    key: key.into(),
                    parent: p.into(),
                    kind: r.kind.as_str(),
                });
            }
        }
        storage.check(kind, &parents)?;
        let id = self.metadata.next_id()?;
        let made = storage.create(id, kind, &parents).and_then(|()| {
            self.metadata.create(
                sn,
                ns,
                key,
                NewSnapshot {
                    id,
                    kind,
                    parent,
                    labels,
                },
            )
        });
        if let Err(e) = made {
            // The record re-checks the parent in its transaction; undo the folder on any failure.
            if let Err(cleanup) = crate::metadata::remove_path(&storage.dir(id)) {
                tracing::warn!(error = %cleanup, "a half-made snapshot folder stays until the next start");
            }
            return Err(e);
        }
        tracing::debug!(
            snapshotter = sn,
            namespace = ns,
            key,
            id,
            kind = kind.as_str(),
            "snapshot created"
        );
        Ok(storage.mounts(id, kind, &parents))
    }

    /// The mounts of an active snapshot or a view.
    pub fn mounts(&self, snapshotter: &str, ns: &str, key: &str) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        let (sn, storage) = self.storage(snapshotter)?;
        let r = self.metadata.get(sn, ns, key)?;
        if r.kind == Kind::Committed {
            return Err(Error::Committed { key: key.into() });
        }
        let parents = self.parent_ids(sn, ns, r.parent.as_deref())?;
        storage.check(r.kind, &parents)?;
        Ok(storage.mounts(r.id, r.kind, &parents))
    }

    /// Makes the active snapshot `key` the committed, read-only snapshot `name`.
    pub fn commit(
        &self,
        snapshotter: &str,
        ns: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        check_key("name", name)?;
        check_key("key", key)?;
        check_labels(&labels)?;
        let (sn, _) = self.storage(snapshotter)?;
        self.metadata.commit(sn, ns, key, name, labels)?;
        tracing::debug!(
            snapshotter = sn,
            namespace = ns,
            key,
            name,
            "snapshot committed"
        );
        Ok(())
    }

    /// Removes a snapshot that nothing is built on.
    pub fn remove(&self, snapshotter: &str, ns: &str, key: &str) -> Result<()> {
        check_key("key", key)?;
        let (sn, storage) = self.storage(snapshotter)?;
        let r = self.metadata.remove(sn, ns, key)?;
        // The record is gone; if the folder cannot go now, the next start removes it.
        if let Err(e) = crate::metadata::remove_path(&storage.dir(r.id)) {
            tracing::warn!(error = %e, "snapshot folder left for the next start to remove");
        }
        tracing::debug!(
            snapshotter = sn,
            namespace = ns,
            key,
            id = r.id,
            "snapshot removed"
        );
        Ok(())
    }

    pub fn stat(&self, snapshotter: &str, ns: &str, key: &str) -> Result<Info> {
        check_key("key", key)?;
        let (sn, _) = self.storage(snapshotter)?;
        Ok(Info::new(key.to_string(), self.metadata.get(sn, ns, key)?))
    }

    pub fn list(&self, snapshotter: &str, ns: &str) -> Result<Vec<Info>> {
        let (sn, _) = self.storage(snapshotter)?;
        Ok(self
            .metadata
            .list(sn, ns)?
            .into_iter()
            .map(|(k, r)| Info::new(k, r))
            .collect())
    }

    /// Disk use of the snapshot's own folder (for native: the full copy).
    pub fn usage(&self, snapshotter: &str, ns: &str, key: &str) -> Result<Usage> {
        check_key("key", key)?;
        let (sn, storage) = self.storage(snapshotter)?;
        let r = self.metadata.get(sn, ns, key)?;
        let fs = storage.fs(r.id);
        disk_usage(&fs).map_err(|e| Error::io(format!("measuring {}", fs.display()), e))
    }

    /// Whether `name` is committed: `Some(size)` if so; an error if it exists in another kind.
    pub fn committed(&self, snapshotter: &str, ns: &str, name: &str) -> Result<Option<i64>> {
        check_key("name", name)?;
        let (sn, _) = self.storage(snapshotter)?;
        match self.metadata.get(sn, ns, name) {
            Ok(r) if r.kind == Kind::Committed => Ok(Some(self.usage(sn, ns, name)?.size)),
            Ok(r) => Err(Error::NameTaken {
                name: name.into(),
                kind: r.kind.as_str(),
            }),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Unpacks `layer` read from `data` on top of its parent and commits it as `layer.name`.
    /// When the name is already committed nothing is read. On any failure — a hostile entry,
    /// a truncated stream, a wrong diff_id — the half-made snapshot is removed.
    pub fn apply(
        &self,
        snapshotter: &str,
        ns: &str,
        layer: &Layer,
        data: impl Read,
    ) -> Result<Applied> {
        check_key("name", &layer.name)?;
        let (sn, storage) = self.storage(snapshotter)?;
        if let Some(size) = self.committed(sn, ns, &layer.name)? {
            return Ok(Applied {
                existed: true,
                size,
            });
        }
        let key = format!("extract-{}-{}", random_hex(), layer.name);
        let mut labels = BTreeMap::new();
        labels.insert(EXTRACTING_LABEL.to_string(), layer.name.clone());
        self.prepare(sn, ns, &key, layer.parent.as_deref(), labels)?;
        let result = self.unpack_and_commit(sn, ns, storage, &key, layer, data);
        if result.is_err() || matches!(result, Ok(Applied { existed: true, .. })) {
            if let Err(e) = self.remove(sn, ns, &key) {
                tracing::warn!(key, error = %e, "could not remove a temporary extraction snapshot");
            }
        }
        result
    }

    fn unpack_and_commit(
        &self,
        sn: &str,
        ns: &str,
        storage: &dyn Storage,
        key: &str,
        layer: &Layer,
        data: impl Read,
    ) -> Result<Applied> {
        let r = self.metadata.get(sn, ns, key)?;
        let parents = self.parent_ids(sn, ns, r.parent.as_deref())?;
        let fs = storage.fs(r.id);
        let lowers = storage.lowers(&parents);
        let target = Target {
            root: &fs,
            lowers: &lowers,
            whiteouts: storage.whiteouts(),
        };
        let unpacked = apply::apply(data, &layer.media_type, &layer.diff_id, &target)?;
        tracing::debug!(name = %layer.name, bytes = unpacked.size, "layer unpacked");
        match self.commit(sn, ns, &layer.name, key, layer.labels.clone()) {
            Ok(()) => Ok(Applied {
                existed: false,
                size: self.usage(sn, ns, &layer.name)?.size,
            }),
            // Someone else committed the same layer meanwhile: theirs stays, ours goes.
            Err(Error::AlreadyExists { .. }) => match self.committed(sn, ns, &layer.name)? {
                Some(size) => Ok(Applied {
                    existed: true,
                    size,
                }),
                None => Err(Error::AlreadyExists {
                    snapshotter: sn.into(),
                    namespace: ns.into(),
                    key: layer.name.clone(),
                }),
            },
            Err(e) => Err(e),
        }
    }
}

/// Bytes allocated (st_blocks) and inodes under `path`, each inode once; no symlink followed.
pub(crate) fn disk_usage(path: &Path) -> std::io::Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        if seen.insert((md.dev(), md.ino())) {
            usage.inodes += 1;
            usage.size += (md.blocks() * 512) as i64;
        }
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(usage)
}
