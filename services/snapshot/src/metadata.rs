//! Snapshot records, kept in sled (`<root>/metadata.db`). This is the only module that touches
//! the database.
//!
//! A record is stored under `snapshotter \0 namespace \0 key` (keys and namespaces cannot hold
//! NUL) as JSON. It carries the numeric id that names the snapshot's folder on disk, so a
//! commit renames a snapshot by moving its record, never its files.
//!
//! Every change is one sled transaction (or atomic batch) followed by a flush, so a `kill -9`
//! leaves either the old or the new state. The order of work makes the remaining gap safe: a
//! folder is created *before* its record and removed *after* it, so a crash leaves at worst a
//! folder without a record, which [`Metadata::recover`] deletes on the next start.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A read-only view of a committed snapshot.
    View,
    /// A writable layer, made by Prepare; becomes committed by Commit.
    Active,
    /// Read-only and shareable: the parent of actives and views.
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "a view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// One snapshot's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Names the snapshot's folder: `<snapshotter root>/snapshots/<id>`.
    pub id: u64,
    pub kind: Kind,
    pub parent: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub created: u64,
    pub updated: u64,
    /// How many actives and views name this snapshot as their parent.
    #[serde(default)]
    pub children: u64,
}

/// A snapshot about to be recorded by [`Metadata::create`].
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    /// Its folder's id, from [`Metadata::next_id`].
    pub id: u64,
    /// [`Kind::Active`] or [`Kind::View`].
    pub kind: Kind,
    /// Must be committed.
    pub parent: Option<&'a str>,
    pub labels: BTreeMap<String, String>,
}

/// What [`Metadata::recover`] cleaned up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Folders that had no record (work a crash interrupted); deleted.
    pub orphan_folders: Vec<PathBuf>,
    /// Records (namespace, key) whose folder was gone, with the snapshots built on them; removed.
    pub dangling_records: Vec<(String, String)>,
}

/// The snapshot database.
#[derive(Debug, Clone)]
pub struct Metadata {
    db: sled::Db,
    snapshots: sled::Tree,
}

type Abort = ConflictableTransactionError<Error>;

fn record_key(snapshotter: &str, namespace: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(snapshotter.len() + namespace.len() + key.len() + 2);
    k.extend_from_slice(snapshotter.as_bytes());
    k.push(0);
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn scope_prefix(snapshotter: &str, namespace: Option<&str>) -> Vec<u8> {
    let mut k = snapshotter.as_bytes().to_vec();
    k.push(0);
    if let Some(ns) = namespace {
        k.extend_from_slice(ns.as_bytes());
        k.push(0);
    }
    k
}

/// Splits a stored key back into (namespace, key).
fn split_key(snapshotter: &str, raw: &[u8]) -> Option<(String, String)> {
    let rest = raw.get(snapshotter.len() + 1..)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    Some((
        String::from_utf8_lossy(&rest[..nul]).into_owned(),
        String::from_utf8_lossy(&rest[nul + 1..]).into_owned(),
    ))
}

fn decode(key: &[u8], value: &[u8]) -> Result<Record> {
    serde_json::from_slice(value).map_err(|source| Error::Record {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        source,
    })
}

fn encode(record: &Record) -> Vec<u8> {
    serde_json::to_vec(record).expect("a record always serializes")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn tx_get(tree: &TransactionalTree, key: &[u8]) -> std::result::Result<Option<Record>, Abort> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => decode(key, &v).map(Some).map_err(Abort::Abort),
    }
}

fn tx_result<T>(r: std::result::Result<T, TransactionError<Error>>) -> Result<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::Db(e),
    })
}

impl Metadata {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Metadata> {
        let db = sled::Config::new().path(path).open()?;
        let snapshots = db.open_tree("snapshots")?;
        Ok(Metadata { db, snapshots })
    }

    /// A fresh id, unique for the life of the database, across crashes too.
    pub fn next_id(&self) -> Result<u64> {
        // generate_id persists its counter ahead of the ids it hands out; +1 keeps 0 unused.
        Ok(self.db.generate_id()? + 1)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Records a new active or view snapshot `key` on its committed parent.
    pub fn create(
        &self,
        snapshotter: &str,
        namespace: &str,
        key: &str,
        new: NewSnapshot<'_>,
    ) -> Result<Record> {
        let NewSnapshot {
            id,
            kind,
            parent,
            labels,
        } = new;
        let k = record_key(snapshotter, namespace, key);
        let t = now();
        let record = Record {
            id,
            kind,
            parent: parent.map(str::to_string),
            labels,
            created: t,
            updated: t,
            children: 0,
        };
        tx_result(self.snapshots.transaction(|tx| {
            if tx.get(&k)?.is_some() {
                return Err(Abort::Abort(Error::AlreadyExists {
                    snapshotter: snapshotter.into(),
                    namespace: namespace.into(),
                    key: key.into(),
                }));
            }
            if let Some(parent) = parent {
                let pk = record_key(snapshotter, namespace, parent);
                let Some(mut p) = tx_get(tx, &pk)? else {
                    return Err(Abort::Abort(Error::NotFound {
                        snapshotter: snapshotter.into(),
                        namespace: namespace.into(),
                        key: parent.into(),
                    }));
                };
                if p.kind != Kind::Committed {
                    return Err(Abort::Abort(Error::ParentNotCommitted {
                        key: key.into(),
                        parent: parent.into(),
                        kind: p.kind.as_str(),
                    }));
                }
                p.children += 1;
                tx.insert(pk, encode(&p))?;
            }
            tx.insert(k.as_slice(), encode(&record))?;
            Ok(())
        }))?;
        self.flush()?;
        Ok(record)
    }

    /// The record of `key`.
    pub fn get(&self, snapshotter: &str, namespace: &str, key: &str) -> Result<Record> {
        let k = record_key(snapshotter, namespace, key);
        match self.snapshots.get(&k)? {
            Some(v) => decode(&k, &v),
            None => Err(Error::NotFound {
                snapshotter: snapshotter.into(),
                namespace: namespace.into(),
                key: key.into(),
            }),
        }
    }

    /// The records below `parent`, nearest first, starting with `parent` itself.
    pub fn chain(
        &self,
        snapshotter: &str,
        namespace: &str,
        parent: &str,
    ) -> Result<Vec<(String, Record)>> {
        let mut out: Vec<(String, Record)> = Vec::new();
        let mut next = Some(parent.to_string());
        while let Some(name) = next {
            let r = self.get(snapshotter, namespace, &name)?;
            next = r.parent.clone();
            out.push((name, r));
            if out.len() > 100_000 {
                return Err(Error::InvalidArgument(format!(
                    "the parent chain of {parent:?} loops"
                )));
            }
        }
        Ok(out)
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`, in one step.
    pub fn commit(
        &self,
        snapshotter: &str,
        namespace: &str,
        key: &str,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Record> {
        self.commit_onto(snapshotter, namespace, key, name, None, labels)
    }

    /// Like [`commit`](Self::commit), and when `parent` is given, also puts the snapshot on
    /// it in the same step: for a layer unpacked while its parent was still being applied
    /// (overlayfs layers do not need their parent's content). `key` must have no parent yet,
    /// and `parent` must be committed by now; it gains a child.
    pub fn commit_onto(
        &self,
        snapshotter: &str,
        namespace: &str,
        key: &str,
        name: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Record> {
        let k = record_key(snapshotter, namespace, key);
        let n = record_key(snapshotter, namespace, name);
        let committed = tx_result(self.snapshots.transaction(|tx| {
            let Some(mut r) = tx_get(tx, &k)? else {
                return Err(Abort::Abort(Error::NotFound {
                    snapshotter: snapshotter.into(),
                    namespace: namespace.into(),
                    key: key.into(),
                }));
            };
            if r.kind != Kind::Active {
                return Err(Abort::Abort(Error::NotActive {
                    key: key.into(),
                    kind: r.kind.as_str(),
                    action: "commit",
                }));
            }
            if tx.get(&n)?.is_some() {
                return Err(Abort::Abort(Error::AlreadyExists {
                    snapshotter: snapshotter.into(),
                    namespace: namespace.into(),
                    key: name.into(),
                }));
            }
            if let Some(parent) = parent {
                if r.parent.is_some() {
                    return Err(Abort::Abort(Error::InvalidArgument(format!(
                        "snapshot {key:?} already has a parent"
                    ))));
                }
                let pk = record_key(snapshotter, namespace, parent);
                let Some(mut p) = tx_get(tx, &pk)? else {
                    return Err(Abort::Abort(Error::NotFound {
                        snapshotter: snapshotter.into(),
                        namespace: namespace.into(),
                        key: parent.into(),
                    }));
                };
                if p.kind != Kind::Committed {
                    return Err(Abort::Abort(Error::ParentNotCommitted {
                        key: name.into(),
                        parent: parent.into(),
                        kind: p.kind.as_str(),
                    }));
                }
                p.children += 1;
                tx.insert(pk, encode(&p))?;
                r.parent = Some(parent.to_string());
            }
            r.kind = Kind::Committed;
            r.labels = labels.clone();
            r.updated = now();
            tx.remove(k.as_slice())?;
            tx.insert(n.as_slice(), encode(&r))?;
            Ok(r)
        }))?;
        self.flush()?;
        Ok(committed)
    }

    /// Removes the record of `key`, unless snapshots are built on it.
    pub fn remove(&self, snapshotter: &str, namespace: &str, key: &str) -> Result<Record> {
        let k = record_key(snapshotter, namespace, key);
        let removed = tx_result(self.snapshots.transaction(|tx| {
            let Some(r) = tx_get(tx, &k)? else {
                return Err(Abort::Abort(Error::NotFound {
                    snapshotter: snapshotter.into(),
                    namespace: namespace.into(),
                    key: key.into(),
                }));
            };
            if r.children > 0 {
                return Err(Abort::Abort(Error::HasChildren {
                    key: key.into(),
                    count: r.children,
                    example: String::new(),
                }));
            }
            if let Some(parent) = &r.parent {
                let pk = record_key(snapshotter, namespace, parent);
                if let Some(mut p) = tx_get(tx, &pk)? {
                    p.children = p.children.saturating_sub(1);
                    tx.insert(pk, encode(&p))?;
                }
            }
            tx.remove(k.as_slice())?;
            Ok(r)
        }));
        let removed = match removed {
            Err(Error::HasChildren { key, count, .. }) => {
                // Name one child so the person knows where to start.
                let example = self
                    .list(snapshotter, namespace)?
                    .into_iter()
                    .find(|(_, r)| r.parent.as_deref() == Some(key.as_str()))
                    .map(|(k, _)| k)
                    .unwrap_or_default();
                return Err(Error::HasChildren {
                    key,
                    count,
                    example,
                });
            }
            other => other?,
        };
        self.flush()?;
        Ok(removed)
    }

    /// Every snapshot of one snapshotter in one namespace, ordered by key.
    pub fn list(&self, snapshotter: &str, namespace: &str) -> Result<Vec<(String, Record)>> {
        let prefix = scope_prefix(snapshotter, Some(namespace));
        self.snapshots
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((key, decode(&k, &v)?))
            })
            .collect()
    }

    /// Every snapshot of one snapshotter, in every namespace: (namespace, key, record).
    pub fn all(&self, snapshotter: &str) -> Result<Vec<(String, String, Record)>> {
        let mut out = Vec::new();
        for kv in self.snapshots.scan_prefix(scope_prefix(snapshotter, None)) {
            let (k, v) = kv?;
            if let Some((ns, key)) = split_key(snapshotter, &k) {
                out.push((ns, key, decode(&k, &v)?));
            }
        }
        Ok(out)
    }

    /// Reconciles the records of `snapshotter` with its folders in `snapshots_dir`
    /// (`<snapshots_dir>/<id>`): deletes folders without a record, and removes records whose
    /// folder is gone together with every snapshot built on them (they cannot work anymore).
    pub fn recover(&self, snapshotter: &str, snapshots_dir: &Path) -> Result<Recovery> {
        let mut recovery = Recovery::default();
        // (namespace, key) -> record, for every namespace.
        let mut all: HashMap<(String, String), Record> = HashMap::new();
        for kv in self.snapshots.scan_prefix(scope_prefix(snapshotter, None)) {
            let (k, v) = kv?;
            if let Some(nk) = split_key(snapshotter, &k) {
                all.insert(nk, decode(&k, &v)?);
            }
        }
        let ids: HashSet<u64> = all.values().map(|r| r.id).collect();

        let entries = match std::fs::read_dir(snapshots_dir) {
            Ok(e) => Some(e),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("reading {}", snapshots_dir.display()), e)),
        };
        for entry in entries.into_iter().flatten() {
            let entry =
                entry.map_err(|e| Error::io(format!("reading {}", snapshots_dir.display()), e))?;
            let known = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| ids.contains(&id));
            if !known {
                let path = entry.path();
                tracing::warn!(path = %path.display(), "removing a snapshot folder without a record (left by an interrupted operation)");
                remove_path(&path)?;
                recovery.orphan_folders.push(path);
            }
        }

        // Records whose folder is gone, then everything above them.
        let mut doomed: HashSet<(String, String)> = all
            .iter()
            .filter(|(_, r)| !snapshots_dir.join(r.id.to_string()).is_dir())
            .map(|(nk, _)| nk.clone())
            .collect();
        loop {
            let more: Vec<(String, String)> = all
                .iter()
                .filter(|(nk, r)| {
                    !doomed.contains(*nk)
                        && r.parent
                            .as_ref()
                            .is_some_and(|p| doomed.contains(&(nk.0.clone(), p.clone())))
                })
                .map(|(nk, _)| nk.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        if doomed.is_empty() {
            return Ok(recovery);
        }
        let mut batch = sled::Batch::default();
        let mut counts: HashMap<(String, String), u64> = HashMap::new();
        for nk in &doomed {
            let r = &all[nk];
            tracing::warn!(namespace = %nk.0, key = %nk.1, id = r.id, "removing a snapshot record whose folder is missing (or whose parent's is)");
            batch.remove(record_key(snapshotter, &nk.0, &nk.1));
            if let Some(p) = &r.parent {
                let pnk = (nk.0.clone(), p.clone());
                if !doomed.contains(&pnk) {
                    *counts.entry(pnk).or_default() += 1;
                }
            }
            let dir = snapshots_dir.join(r.id.to_string());
            remove_path(&dir)?;
            recovery.dangling_records.push(nk.clone());
        }
        for (pnk, n) in counts {
            if let Some(mut p) = all.get(&pnk).cloned() {
                p.children = p.children.saturating_sub(n);
                batch.insert(record_key(snapshotter, &pnk.0, &pnk.1), encode(&p));
            }
        }
        self.snapshots.apply_batch(batch)?;
        self.flush()?;
        recovery.dangling_records.sort();
        Ok(recovery)
    }
}

/// Removes a file or folder tree without following symlinks; a missing path is fine.
pub(crate) fn remove_path(path: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let md = Metadata::open(&dir.path().join("metadata.db")).unwrap();
        (dir, md)
    }

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn new(kind: Kind, parent: Option<&str>, id: u64) -> NewSnapshot<'_> {
        NewSnapshot {
            id,
            kind,
            parent,
            labels: labels(),
        }
    }

    #[test]
    fn prepare_commit_remove_keep_parents_consistent() {
        let (_d, md) = db();
        let a = md.next_id().unwrap();
        md.create("o", "default", "a-active", new(Kind::Active, None, a))
            .unwrap();
        md.commit("o", "default", "a-active", "a", labels())
            .unwrap();
        assert!(matches!(
            md.get("o", "default", "a-active"),
            Err(Error::NotFound { .. })
        ));
        let r = md.get("o", "default", "a").unwrap();
        assert_eq!((r.id, r.kind), (a, Kind::Committed));

        let b = md.next_id().unwrap();
        assert_ne!(a, b);
        md.create("o", "default", "b", new(Kind::Active, Some("a"), b))
            .unwrap();
        // An active snapshot cannot be a parent.
        let e = md
            .create("o", "default", "c", new(Kind::Active, Some("b"), 99))
            .unwrap_err();
        assert!(matches!(e, Error::ParentNotCommitted { .. }), "{e}");
        // Nor can a missing one.
        let e = md
            .create("o", "default", "c", new(Kind::Active, Some("zz"), 99))
            .unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        // Keys are unique.
        let e = md
            .create("o", "default", "b", new(Kind::Active, None, 99))
            .unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");

        let e = md.remove("o", "default", "a").unwrap_err();
        match e {
            Error::HasChildren { count, example, .. } => {
                assert_eq!((count, example.as_str()), (1, "b"))
            }
            e => panic!("{e}"),
        }
        // Committing onto an existing name fails and changes nothing.
        let e = md.commit("o", "default", "b", "a", labels()).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
        assert_eq!(md.get("o", "default", "b").unwrap().kind, Kind::Active);

        md.commit("o", "default", "b", "b2", labels()).unwrap();
        assert_eq!(md.get("o", "default", "a").unwrap().children, 1);
        let chain: Vec<String> = md
            .chain("o", "default", "b2")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(chain, ["b2", "a"]);
        md.remove("o", "default", "b2").unwrap();
        assert_eq!(md.get("o", "default", "a").unwrap().children, 0);
        md.remove("o", "default", "a").unwrap();
        assert!(md.list("o", "default").unwrap().is_empty());
    }

    #[test]
    fn scopes_are_separate() {
        let (_d, md) = db();
        md.create("o", "ns1", "k", new(Kind::Active, None, 1))
            .unwrap();
        md.create("o", "ns2", "k", new(Kind::Active, None, 2))
            .unwrap();
        md.create("n", "ns1", "k", new(Kind::Active, None, 3))
            .unwrap();
        assert_eq!(md.list("o", "ns1").unwrap().len(), 1);
        assert_eq!(md.get("o", "ns2", "k").unwrap().id, 2);
        assert!(md.list("o", "ns").unwrap().is_empty());
        // A view cannot be committed.
        md.create("o", "ns1", "v", new(Kind::View, None, 4))
            .unwrap();
        assert!(matches!(
            md.commit("o", "ns1", "v", "x", labels()),
            Err(Error::NotActive { .. })
        ));
    }

    #[test]
    fn recovery_removes_orphan_folders_and_dangling_records() {
        let (d, md) = db();
        let snaps = d.path().join("snapshots");
        std::fs::create_dir_all(snaps.join("1/fs")).unwrap();
        std::fs::create_dir_all(snaps.join("7/fs/deep")).unwrap(); // no record: a crashed prepare
        std::fs::write(snaps.join("junk"), b"x").unwrap();
        md.create("o", "default", "base-a", new(Kind::Active, None, 1))
            .unwrap();
        md.commit("o", "default", "base-a", "base", labels())
            .unwrap();
        // Record 2 lost its folder; 3 is built on it and must go too; 4 is fine.
        md.create("o", "default", "lost-a", new(Kind::Active, Some("base"), 2))
            .unwrap();
        md.commit("o", "default", "lost-a", "lost", labels())
            .unwrap();
        std::fs::create_dir_all(snaps.join("3/fs")).unwrap();
        md.create("o", "default", "above", new(Kind::Active, Some("lost"), 3))
            .unwrap();
        std::fs::create_dir_all(snaps.join("4/fs")).unwrap();
        md.create("o", "default", "fine", new(Kind::Active, Some("base"), 4))
            .unwrap();

        let r = md.recover("o", &snaps).unwrap();
        let mut orphans = r.orphan_folders.clone();
        orphans.sort();
        assert_eq!(orphans, [snaps.join("7"), snaps.join("junk")]);
        assert_eq!(
            r.dangling_records,
            [
                ("default".to_string(), "above".to_string()),
                ("default".into(), "lost".into())
            ]
        );
        assert!(!snaps.join("3").exists() && !snaps.join("7").exists());
        assert!(snaps.join("1").exists() && snaps.join("4").exists());
        let keys: Vec<String> = md
            .list("o", "default")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["base", "fine"]);
        assert_eq!(md.get("o", "default", "base").unwrap().children, 1);
        // A second pass finds nothing to do.
        assert_eq!(md.recover("o", &snaps).unwrap(), Recovery::default());
    }

    #[test]
    fn records_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("metadata.db");
        let id = {
            let md = Metadata::open(&path).unwrap();
            let id = md.next_id().unwrap();
            md.create("o", "default", "k", new(Kind::Active, None, id))
                .unwrap();
            id
        };
        let md = Metadata::open(&path).unwrap();
        assert_eq!(md.get("o", "default", "k").unwrap().id, id);
        assert!(md.next_id().unwrap() > id);
    }
}
