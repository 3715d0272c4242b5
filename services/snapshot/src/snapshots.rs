//! [`Snapshots`]: the snapshot service's domain, usable in-process. It joins the records
//! ([`Metadata`]) with the folders of a snapshotter ([`Storage`]: overlayfs or native) and
//! applies layers ([`crate::apply`]). Every method blocks (sled, filesystem work); async
//! callers run them on a blocking thread.
//!
//! Work is ordered so that a crash at any point leaves the database consistent: a snapshot's
//! folder is made before its record and removed after it, and [`Snapshots::open`] deletes
//! folders without a record.

use crate::apply::{self, Lowers, Target, Whiteouts};
use crate::diff::{self, Changes};
use crate::error::{Error, Result};
use crate::inflight::{Flight, InFlight, LayerKey};
use crate::metadata::{Kind, Metadata, NewSnapshot, Record, Recovery};
use crate::native::{self, Native};
use crate::overlay::{self, Overlay};
use berth_api::types::v1::Mount;
use berth_core::config::Limits;
use berth_core::digest::chain_id;
use berth_core::Digest;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// Whether a snapshot's folder holds only its own changes (overlayfs: a layer can be
    /// unpacked before its parent is), rather than a full copy of its parent (native).
    fn holds_changes_only(&self) -> bool;
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
    /// The chain id to commit the result as; `None` (with `diff_id` `None` too): the chain id
    /// of what arrives on `parent`, see [`chain_name`].
    pub name: Option<String>,
    /// The chain id below, if any. It may still be being applied by another Apply.
    pub parent: Option<String>,
    /// The blob's media type; empty or unknown means "detect the compression".
    pub media_type: String,
    /// sha256 of the uncompressed tar; `None` (with `name` `None` too): not checked.
    pub diff_id: Option<Digest>,
    pub labels: BTreeMap<String, String>,
}

/// What an Apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The layer was already committed (or became so by another Apply meanwhile); this one
    /// committed nothing.
    pub existed: bool,
    /// Bytes on disk of the committed snapshot's own folder.
    pub size: i64,
    /// The committed chain id.
    pub name: String,
    /// sha256 of the uncompressed tar as received (the header's when nothing was read).
    pub diff_id: Digest,
}

/// What a Diff wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Diffed {
    /// Tar entries, whiteouts included.
    pub entries: u64,
    /// Bytes of the tar.
    pub size: u64,
}

/// The chain id of a layer with `diff_id` on `parent` (OCI: `sha256(parent + " " +
/// diff_id)`, or `diff_id` itself for a first layer). A parent that is not a digest (a
/// commit's own name) is used by its name in the same formula.
pub fn chain_name(parent: Option<&str>, diff_id: &Digest) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => match p.parse::<Digest>() {
            Ok(p) => chain_id([&p, diff_id])
                .map(|c| c.to_string())
                .unwrap_or_default(),
            Err(_) => Digest::sha256_of(format!("{p} {diff_id}").as_bytes()).to_string(),
        },
    }
}

/// The snapshots of every snapshotter and namespace under one root.
#[derive(Debug)]
pub struct Snapshots {
    root: PathBuf,
    metadata: Metadata,
    overlay: Arc<Overlay>,
    native: Arc<Native>,
    default: &'static str,
    in_flight: InFlight,
    /// What one layer may unpack (`[limits]` of the config).
    limits: Limits,
}

/// How long an Apply whose parent is neither committed nor being applied waits for an Apply
/// of it to start: Applies started together reach the service in any order.
pub const PARENT_GRACE: Duration = Duration::from_secs(5);

/// Marks the temporary snapshot an Apply unpacks into; its value is the layer's name.
pub const EXTRACTING_LABEL: &str = "berth.snapshot/extracting";

/// Keys of the build service's views; [`Snapshots::open`] removes those a crash left.
pub use berth_core::snapshot::BUILD_VIEW_PREFIX;

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
    /// The same snapshots, with layers unpacked within `limits` (default: [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> Snapshots {
        self.limits = limits;
        self
    }

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
            in_flight: InFlight::default(),
            limits: Limits::default(),
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
                } else if record.kind == Kind::View && key.starts_with(BUILD_VIEW_PREFIX) {
                    tracing::warn!(namespace = %ns, key, "removing a view an interrupted build left");
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

    /// How many snapshots each namespace holds, per snapshotter (`snapshots/overlayfs`,
    /// `snapshots/native`); namespaces without any are absent.
    pub fn namespace_usage(&self) -> Result<BTreeMap<String, BTreeMap<String, i64>>> {
        let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for sn in [overlay::NAME, native::NAME] {
            for (ns, _, _) in self.metadata.all(sn)? {
                *out.entry(ns)
                    .or_default()
                    .entry(format!("snapshots/{sn}"))
                    .or_default() += 1;
            }
        }
        Ok(out)
    }

    /// Every snapshot of every namespace: its snapshotter, kind, id and folder.
    pub fn inventory(&self) -> Result<Vec<(&'static str, Kind, u64, PathBuf)>> {
        let mut out = Vec::new();
        for sn in [overlay::NAME, native::NAME] {
            let (sn, storage) = self.storage(sn)?;
            for (_, _, r) in self.metadata.all(sn)? {
                out.push((sn, r.kind, r.id, storage.fs(r.id)));
            }
        }
        Ok(out)
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

    /// Unpacks `layer` read from `data` on top of its parent and commits it, as `layer.name`
    /// or, when that is `None`, under the chain id of what arrived. On any failure — a
    /// hostile entry, a truncated stream, a wrong diff_id — the half-made snapshot is removed
    /// and nothing is committed.
    ///
    /// - A named layer that is committed already is answered at once, `data` unread; one
    ///   another Apply is unpacking right now is waited for and then answered the same way
    ///   (if that Apply fails, this one unpacks it).
    /// - A parent that another Apply is unpacking right now is waited for by the native
    ///   snapshotter (it copies the parent); overlayfs unpacks beside it at once and commits
    ///   once the parent is committed. A parent that is neither committed nor being applied
    ///   is refused ([`Error::ParentMissing`]), and so is this layer when its parent's Apply
    ///   fails ([`Error::ParentFailed`]).
    pub fn apply(
        &self,
        snapshotter: &str,
        ns: &str,
        layer: &Layer,
        data: impl Read,
    ) -> Result<Applied> {
        match (&layer.name, &layer.diff_id) {
            (Some(name), Some(_)) => check_key("name", name)?,
            (None, None) => {}
            _ => {
                return Err(Error::InvalidArgument(
                    "name and diff_id go together: give both, or leave both empty to commit the layer under the chain id of what arrives".into(),
                ))
            }
        }
        if let Some(p) = &layer.parent {
            check_key("parent", p)?;
        }
        check_labels(&layer.labels)?;
        let (sn, storage) = self.storage(snapshotter)?;
        let claim = match (&layer.name, &layer.diff_id) {
            (Some(name), Some(diff_id)) => match self.claim(sn, ns, name)? {
                Ok(claim) => Some(claim),
                Err(size) => {
                    return Ok(Applied {
                        existed: true,
                        size,
                        name: name.clone(),
                        diff_id: diff_id.clone(),
                    })
                }
            },
            _ => None,
        };
        let me = claim.as_ref().map(|c| c.key().clone());
        let result = self.apply_claimed(sn, ns, storage, layer, data, me.as_ref());
        if let Some(claim) = claim {
            claim.finish(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
        result
    }

    /// Claims the name `name` for this Apply: `Ok(Ok(claim))`, or `Ok(Err(size))` when it is
    /// committed — at once, or after waiting for the Apply that held it.
    fn claim(
        &self,
        sn: &str,
        ns: &str,
        name: &str,
    ) -> Result<std::result::Result<crate::inflight::Claim<'_>, i64>> {
        let key = LayerKey::new(sn, ns, name);
        loop {
            if let Some(size) = self.committed(sn, ns, name)? {
                return Ok(Err(size));
            }
            match self.in_flight.claim(key.clone()) {
                Ok(claim) => {
                    // The Apply that held it may have committed just before letting go.
                    if let Some(size) = self.committed(sn, ns, name)? {
                        claim.finish(Ok(()));
                        return Ok(Err(size));
                    }
                    return Ok(Ok(claim));
                }
                // Then it is committed, or that Apply failed and this one tries.
                Err(theirs) => {
                    let _ = theirs.wait();
                }
            }
        }
    }

    fn apply_claimed(
        &self,
        sn: &str,
        ns: &str,
        storage: &dyn Storage,
        layer: &Layer,
        data: impl Read,
        me: Option<&LayerKey>,
    ) -> Result<Applied> {
        let Some(parent) = layer.parent.as_deref() else {
            return self.unpack_on_parent(sn, ns, storage, layer, data);
        };
        match self.parent_flight(sn, ns, parent, layer)? {
            None => self.unpack_on_parent(sn, ns, storage, layer, data),
            Some(flight) if storage.holds_changes_only() => {
                self.unpack_beside_parent(sn, ns, storage, layer, data, me, &flight)
            }
            Some(flight) => {
                self.wait_for_parent(sn, ns, parent, me, &flight)?;
                self.unpack_on_parent(sn, ns, storage, layer, data)
            }
        }
    }

    /// `None` when `parent` is committed, its flight when another Apply is making it, an
    /// error when neither is so within [`PARENT_GRACE`].
    fn parent_flight(
        &self,
        sn: &str,
        ns: &str,
        parent: &str,
        layer: &Layer,
    ) -> Result<Option<Arc<Flight>>> {
        let key = LayerKey::new(sn, ns, parent);
        let deadline = Instant::now() + PARENT_GRACE;
        loop {
            let (flight, seen) = self.in_flight.get(&key);
            // After the look at the flights: a flight ends only after its commit.
            if self.parent_committed(sn, ns, parent, layer)? {
                return Ok(None);
            }
            if let Some(flight) = flight {
                return Ok(Some(flight));
            }
            if !self.in_flight.wait_for_change(seen, deadline) {
                // A last look: an Apply without a name (not a flight) may have committed it.
                if self.parent_committed(sn, ns, parent, layer)? {
                    return Ok(None);
                }
                return Err(Error::ParentMissing {
                    name: layer_display(layer),
                    parent: parent.into(),
                });
            }
        }
    }

    /// Whether `parent` is committed; an error when it exists in another kind.
    fn parent_committed(&self, sn: &str, ns: &str, parent: &str, layer: &Layer) -> Result<bool> {
        match self.metadata.get(sn, ns, parent) {
            Ok(r) if r.kind == Kind::Committed => Ok(true),
            Ok(r) => Err(Error::ParentNotCommitted {
                key: layer_display(layer),
                parent: parent.into(),
                kind: r.kind.as_str(),
            }),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits for the Apply of `parent` to end; `Ok` when it committed.
    fn wait_for_parent(
        &self,
        sn: &str,
        ns: &str,
        parent: &str,
        me: Option<&LayerKey>,
        flight: &Flight,
    ) -> Result<()> {
        let pk = LayerKey::new(sn, ns, parent);
        let outcome = self.in_flight.wait_for_parent(me, &pk, flight)?;
        match self.metadata.get(sn, ns, parent) {
            Ok(r) if r.kind == Kind::Committed => Ok(()),
            _ => Err(Error::ParentFailed {
                parent: parent.into(),
                reason: outcome
                    .err()
                    .unwrap_or_else(|| "it was removed right after".into()),
            }),
        }
    }

    /// A temporary active snapshot to unpack into, on `parent`.
    fn staging(
        &self,
        sn: &str,
        ns: &str,
        layer: &Layer,
        parent: Option<&str>,
    ) -> Result<(String, Record)> {
        let name = layer.name.as_deref().unwrap_or("");
        let key = format!("extract-{}-{name}", random_hex());
        let mut labels = BTreeMap::new();
        labels.insert(EXTRACTING_LABEL.to_string(), name.to_string());
        match self.prepare(sn, ns, &key, parent, labels) {
            Ok(_) => {}
            // Removed since it was looked at.
            Err(Error::NotFound { key: missing, .. }) if Some(missing.as_str()) == parent => {
                return Err(Error::ParentMissing {
                    name: layer_display(layer),
                    parent: missing,
                })
            }
            Err(e) => return Err(e),
        }
        let r = self.metadata.get(sn, ns, &key)?;
        Ok((key, r))
    }

    /// Removes a staging snapshot after a failure, or when another Apply won.
    fn discard(&self, sn: &str, ns: &str, key: &str, result: &Result<Applied>) {
        if result.is_err() || matches!(result, Ok(Applied { existed: true, .. })) {
            if let Err(e) = self.remove(sn, ns, key) {
                tracing::warn!(key, error = %e, "could not remove a temporary extraction snapshot");
            }
        }
    }

    /// Unpacks `layer`'s `data` into `target` within the configured limits.
    fn unpack(&self, data: impl Read, layer: &Layer, target: &Target) -> Result<apply::Applied> {
        let expected = layer.diff_id.as_ref();
        apply::apply(data, &layer.media_type, expected, target, &self.limits)
    }

    /// Unpacks onto the committed parent (or none): the parent's layers are at hand.
    fn unpack_on_parent(
        &self,
        sn: &str,
        ns: &str,
        storage: &dyn Storage,
        layer: &Layer,
        data: impl Read,
    ) -> Result<Applied> {
        let (key, r) = self.staging(sn, ns, layer, layer.parent.as_deref())?;
        let result = (|| {
            let parents = self.parent_ids(sn, ns, r.parent.as_deref())?;
            let fs = storage.fs(r.id);
            let lowers = storage.lowers(&parents);
            let target = Target {
                root: &fs,
                lowers: Lowers::Ready(&lowers),
                whiteouts: storage.whiteouts(),
            };
            let unpacked = self.unpack(data, layer, &target)?;
            tracing::debug!(bytes = unpacked.size, diff_id = %unpacked.diff_id, "layer unpacked");
            self.commit_layer(sn, ns, &key, layer, unpacked.diff_id, None)
        })();
        self.discard(sn, ns, &key, &result);
        result
    }

    /// Unpacks while another Apply still makes the parent (overlayfs: a layer's folder does
    /// not depend on the content below), then waits for the parent and commits on it.
    #[allow(clippy::too_many_arguments)]
    fn unpack_beside_parent(
        &self,
        sn: &str,
        ns: &str,
        storage: &dyn Storage,
        layer: &Layer,
        data: impl Read,
        me: Option<&LayerKey>,
        flight: &Flight,
    ) -> Result<Applied> {
        let parent = layer.parent.as_deref().unwrap_or_default();
        let (key, r) = self.staging(sn, ns, layer, None)?;
        let result = (|| {
            let fs = storage.fs(r.id);
            let known: OnceCell<Vec<PathBuf>> = OnceCell::new();
            let lowers = || -> Result<Vec<PathBuf>> {
                if let Some(l) = known.get() {
                    return Ok(l.clone());
                }
                self.wait_for_parent(sn, ns, parent, me, flight)?;
                let parents = self.parent_ids(sn, ns, Some(parent))?;
                storage.check(Kind::Active, &parents)?;
                Ok(known.get_or_init(|| storage.lowers(&parents)).clone())
            };
            let target = Target {
                root: &fs,
                lowers: Lowers::Later(&lowers),
                whiteouts: storage.whiteouts(),
            };
            let unpacked = self.unpack(data, layer, &target)?;
            tracing::debug!(bytes = unpacked.size, diff_id = %unpacked.diff_id, parent, "layer unpacked before its parent was committed");
            let below = lowers()?;
            apply::settle(&fs, &below, &unpacked.pending)?;
            self.commit_layer(sn, ns, &key, layer, unpacked.diff_id, Some(parent))
        })();
        self.discard(sn, ns, &key, &result);
        result
    }

    /// Commits the unpacked staging snapshot `key` as the layer's name (given or computed),
    /// putting it on `onto` if it was unpacked without its parent. If that name is committed
    /// already, the answer is `existed` and the caller discards `key`.
    fn commit_layer(
        &self,
        sn: &str,
        ns: &str,
        key: &str,
        layer: &Layer,
        diff_id: Digest,
        onto: Option<&str>,
    ) -> Result<Applied> {
        let name = match &layer.name {
            Some(n) => n.clone(),
            None => chain_name(layer.parent.as_deref(), &diff_id),
        };
        match self
            .metadata
            .commit_onto(sn, ns, key, &name, onto, layer.labels.clone())
        {
            Ok(_) => {
                tracing::debug!(snapshotter = sn, namespace = ns, name, "layer committed");
                Ok(Applied {
                    existed: false,
                    size: self.usage(sn, ns, &name)?.size,
                    name,
                    diff_id,
                })
            }
            // Someone else committed the same layer meanwhile: theirs stays, ours goes.
            Err(Error::AlreadyExists { .. }) => match self.committed(sn, ns, &name)? {
                Some(size) => Ok(Applied {
                    existed: true,
                    size,
                    name,
                    diff_id,
                }),
                None => Err(Error::AlreadyExists {
                    snapshotter: sn.into(),
                    namespace: ns.into(),
                    key: name,
                }),
            },
            // The parent went between its commit and ours.
            Err(Error::NotFound { key: missing, .. }) if Some(missing.as_str()) == onto => {
                Err(Error::ParentMissing {
                    name,
                    parent: missing,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the changes of snapshot `key` over its parent to `out` as an uncompressed OCI
    /// layer tar (see [`crate::diff`]). Works on active snapshots — also while a container
    /// runs on them — and committed ones; a view has no changes (an empty tar). Nothing is
    /// mounted. If the snapshot is removed or committed while this runs, the tar is cut off
    /// before its end marker and [`Error::ChangedDuringDiff`] returned.
    pub fn diff(&self, snapshotter: &str, ns: &str, key: &str, out: impl Write) -> Result<Diffed> {
        check_key("key", key)?;
        let (sn, storage) = self.storage(snapshotter)?;
        let r = self.metadata.get(sn, ns, key)?;
        let parents = self.parent_ids(sn, ns, r.parent.as_deref())?;
        let fs = storage.fs(r.id);
        let parent_fs = parents.first().map(|&p| storage.fs(p));
        let changes = match r.kind {
            Kind::View => Changes::Nothing,
            _ if storage.holds_changes_only() => Changes::Upper(&fs),
            _ => Changes::Copy {
                dir: &fs,
                parent: parent_fs.as_deref(),
            },
        };
        // A folder being removed reads as emptied: only a record still there vouches for it.
        let unchanged = || match self.metadata.get(sn, ns, key) {
            Ok(now) if now.id == r.id => Ok(()),
            _ => Err(Error::ChangedDuringDiff { key: key.into() }),
        };
        let diffed = diff::write(changes, out, unchanged)?;
        tracing::debug!(
            snapshotter = sn,
            namespace = ns,
            key,
            entries = diffed.entries,
            bytes = diffed.size,
            "diff written"
        );
        Ok(diffed)
    }
}

/// How a layer is named in errors: its name, or what its name will be.
fn layer_display(layer: &Layer) -> String {
    layer
        .name
        .clone()
        .unwrap_or_else(|| "(chain id computed from its content)".into())
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
