//! The container records: the one module that touches the runtime's sled database
//! (`<root>/metadata.db`).
//!
//! Two trees, both keyed `<namespace>/<…>` (a namespace never contains `/`):
//! - `containers`: `<ns>/<id>` → the [`Container`] message, protobuf-encoded;
//! - `names`: `<ns>/<name>` → the id that holds the name.
//!
//! - `volumes`: `<ns>/<name>` → the [`Volume`] message, protobuf-encoded.
//! - `networks`: `<name>` → the [`Network`] message, protobuf-encoded (networks belong to the
//!   instance, not to a namespace).
//!
//! `containers` and `names` change together in one transaction, so a name is never held by two
//! containers and never points at a container that is gone, even after a crash.

use crate::error::{Error, Result};
use berth_api::containers::v1::Container;
use berth_api::networks::v1::Network;
use berth_api::volumes::v1::Volume;
use prost::Message;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The runtime's container records.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    containers: sled::Tree,
    names: sled::Tree,
    volumes: sled::Tree,
    networks: sled::Tree,
    path: PathBuf,
}

/// Why a create transaction gave up.
enum Abort {
    NameInUse(String),
    IdInUse,
}

fn key(namespace: &str, rest: &str) -> Vec<u8> {
    format!("{namespace}/{rest}").into_bytes()
}

impl Store {
    /// Opens (or creates) `<root>/metadata.db`.
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(|e| Error::io("cannot create folder", root, e))?;
        let path = root.join("metadata.db");
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|source| Error::Database {
                path: path.clone(),
                source,
            })?;
        let store_err = |source| Error::Database {
            path: path.clone(),
            source,
        };
        let containers = db.open_tree("containers").map_err(store_err)?;
        let names = db.open_tree("names").map_err(store_err)?;
        let volumes = db.open_tree("volumes").map_err(store_err)?;
        let networks = db.open_tree("networks").map_err(store_err)?;
        Ok(Store {
            db,
            containers,
            names,
            volumes,
            networks,
            path,
        })
    }

    fn db_err(&self, source: sled::Error) -> Error {
        Error::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// A stored record (container, volume, network); a record that does not decode is
    /// reported with its key.
    fn decode<M: Message + Default>(&self, key: &[u8], bytes: &[u8]) -> Result<M> {
        M::decode(bytes).map_err(|e| Error::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
    }

    /// Stores a new container. Fails with [`Error::NameInUse`] when its name is taken in the
    /// namespace; the check and the write are one transaction.
    pub fn create(&self, namespace: &str, container: &Container) -> Result<()> {
        let id_key = key(namespace, &container.id);
        let name_key = key(namespace, &container.name);
        let value = container.encode_to_vec();
        let result = (&self.containers, &self.names).transaction(|(containers, names)| {
            if let Some(owner) = names.get(&name_key)? {
                let owner = String::from_utf8_lossy(&owner).into_owned();
                return Err(ConflictableTransactionError::Abort(Abort::NameInUse(owner)));
            }
            if containers.get(&id_key)?.is_some() {
                return Err(ConflictableTransactionError::Abort(Abort::IdInUse));
            }
            containers.insert(id_key.as_slice(), value.as_slice())?;
            names.insert(name_key.as_slice(), container.id.as_bytes())?;
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(Abort::NameInUse(id))) => {
                return Err(Error::NameInUse {
                    name: container.name.clone(),
                    id,
                })
            }
            Err(TransactionError::Abort(Abort::IdInUse)) => {
                return Err(Error::FailedPrecondition(format!(
                    "a container with id {} already exists",
                    container.id
                )))
            }
            Err(TransactionError::Storage(e)) => return Err(self.db_err(e)),
        }
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// The container with exactly this id.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Option<Container>> {
        let k = key(namespace, id);
        match self.containers.get(&k).map_err(|e| self.db_err(e))? {
            Some(v) => Ok(Some(self.decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// The id that holds `name`, if any.
    pub fn name_owner(&self, namespace: &str, name: &str) -> Result<Option<String>> {
        let name = name.strip_prefix('/').unwrap_or(name);
        Ok(self
            .names
            .get(key(namespace, name))
            .map_err(|e| self.db_err(e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Finds a container the way Docker does: a full id, then a name (with or without the
    /// leading `/`), then a unique id prefix.
    pub fn resolve(&self, namespace: &str, reference: &str) -> Result<Container> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument(
                "no container given: name a container by id, id prefix or name".into(),
            ));
        }
        if let Some(c) = self.get(namespace, reference)? {
            return Ok(c);
        }
        if let Some(id) = self.name_owner(namespace, reference)? {
            if let Some(c) = self.get(namespace, &id)? {
                return Ok(c);
            }
        }
        let is_hex = reference.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex {
            let mut matches = self.containers.scan_prefix(key(namespace, reference));
            if let Some(first) = matches.next() {
                let (k, v) = first.map_err(|e| self.db_err(e))?;
                let others = matches.count();
                if others > 0 {
                    return Err(Error::AmbiguousPrefix {
                        prefix: reference.to_string(),
                        count: others + 1,
                    });
                }
                return self.decode(&k, &v);
            }
        }
        Err(Error::NoSuchContainer(reference.to_string()))
    }

    /// Every container of a namespace, oldest first.
    pub fn list(&self, namespace: &str) -> Result<Vec<Container>> {
        let mut out: Vec<Container> = Vec::new();
        for item in self.containers.scan_prefix(key(namespace, "")) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            out.push(self.decode(&k, &v)?);
        }
        out.sort_by_key(|c| {
            c.created_at
                .as_ref()
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default()
        });
        Ok(out)
    }

    /// Changes a stored container in place, atomically (compare-and-swap, retried on a
    /// concurrent change). Returns the new record; `None` when there is no such container.
    pub fn update(
        &self,
        namespace: &str,
        id: &str,
        mut change: impl FnMut(&mut Container),
    ) -> Result<Option<Container>> {
        let k = key(namespace, id);
        loop {
            let Some(old) = self.containers.get(&k).map_err(|e| self.db_err(e))? else {
                return Ok(None);
            };
            let mut c = self.decode(&k, &old)?;
            change(&mut c);
            let new = c.encode_to_vec();
            match self
                .containers
                .compare_and_swap(&k, Some(old), Some(new))
                .map_err(|e| self.db_err(e))?
            {
                Ok(()) => {
                    self.db.flush().map_err(|e| self.db_err(e))?;
                    return Ok(Some(c));
                }
                Err(_) => continue,
            }
        }
    }

    /// Every namespace that holds a container.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        Ok(self.container_counts()?.into_keys().collect())
    }

    /// How many containers each namespace holds (namespaces without any are absent).
    pub fn container_counts(&self) -> Result<BTreeMap<String, i64>> {
        self.count_by_namespace(&self.containers)
    }

    /// How many volumes each namespace holds (namespaces without any are absent).
    pub fn volume_counts(&self) -> Result<BTreeMap<String, i64>> {
        self.count_by_namespace(&self.volumes)
    }

    /// How many records of a `<ns>/<…>`-keyed tree each namespace holds.
    fn count_by_namespace(&self, tree: &sled::Tree) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for item in tree.iter().keys() {
            let k = item.map_err(|e| self.db_err(e))?;
            let k = String::from_utf8_lossy(&k);
            if let Some((ns, _)) = k.split_once('/') {
                *out.entry(ns.to_string()).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// Stores a volume; `false` (and nothing written) when the name is taken.
    pub fn create_volume(&self, namespace: &str, volume: &Volume) -> Result<bool> {
        let k = key(namespace, &volume.name);
        let done = self
            .volumes
            .compare_and_swap(&k, None as Option<&[u8]>, Some(volume.encode_to_vec()))
            .map_err(|e| self.db_err(e))?
            .is_ok();
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(done)
    }

    /// The volume with this name.
    pub fn get_volume(&self, namespace: &str, name: &str) -> Result<Option<Volume>> {
        let k = key(namespace, name);
        match self.volumes.get(&k).map_err(|e| self.db_err(e))? {
            Some(v) => self.decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every volume of a namespace, by name.
    pub fn list_volumes(&self, namespace: &str) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for item in self.volumes.scan_prefix(key(namespace, "")) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            out.push(self.decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Removes a volume record; `false` when there was none.
    pub fn delete_volume(&self, namespace: &str, name: &str) -> Result<bool> {
        let removed = self
            .volumes
            .remove(key(namespace, name))
            .map_err(|e| self.db_err(e))?
            .is_some();
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(removed)
    }

    /// Stores a network; `false` (and nothing written) when the name is taken.
    pub fn create_network(&self, network: &Network) -> Result<bool> {
        let done = self
            .networks
            .compare_and_swap(
                network.name.as_bytes(),
                None as Option<&[u8]>,
                Some(network.encode_to_vec()),
            )
            .map_err(|e| self.db_err(e))?
            .is_ok();
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(done)
    }

    /// Every network, by name.
    pub fn list_networks(&self) -> Result<Vec<Network>> {
        let mut out = Vec::new();
        for item in self.networks.iter() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            out.push(self.decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Removes a network record; `false` when there was none.
    pub fn delete_network(&self, name: &str) -> Result<bool> {
        let removed = self
            .networks
            .remove(name.as_bytes())
            .map_err(|e| self.db_err(e))?
            .is_some();
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(removed)
    }

    /// Gives container `id` the name `new_name`, freeing its old one, in one transaction.
    /// Fails with [`Error::NameInUse`] when another container holds the name; `None` when
    /// there is no such container.
    pub fn rename(&self, namespace: &str, id: &str, new_name: &str) -> Result<Option<Container>> {
        let id_key = key(namespace, id);
        let new_key = key(namespace, new_name);
        let result = (&self.containers, &self.names).transaction(|(containers, names)| {
            let Some(old) = containers.get(id_key.as_slice())? else {
                return Ok(None);
            };
            let mut c = Container::decode(old.as_ref())
                .map_err(|_| ConflictableTransactionError::Abort(Abort::IdInUse))?;
            if let Some(owner) = names.get(&new_key)? {
                if owner.as_ref() != id.as_bytes() {
                    let owner = String::from_utf8_lossy(&owner).into_owned();
                    return Err(ConflictableTransactionError::Abort(Abort::NameInUse(owner)));
                }
            }
            let old_key = key(namespace, &c.name);
            if names.get(&old_key)?.as_deref() == Some(id.as_bytes()) {
                names.remove(old_key)?;
            }
            c.name = new_name.to_string();
            containers.insert(id_key.as_slice(), c.encode_to_vec())?;
            names.insert(new_key.as_slice(), id.as_bytes())?;
            Ok(Some(c))
        });
        let renamed = match result {
            Ok(c) => c,
            Err(TransactionError::Abort(Abort::NameInUse(owner))) => {
                return Err(Error::NameInUse {
                    name: new_name.to_string(),
                    id: owner,
                })
            }
            Err(TransactionError::Abort(Abort::IdInUse)) => {
                return Err(Error::Corrupt {
                    key: String::from_utf8_lossy(&id_key).into_owned(),
                    reason: "the record does not decode".into(),
                })
            }
            Err(TransactionError::Storage(e)) => return Err(self.db_err(e)),
        };
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(renamed)
    }

    /// Removes a container and frees its name. `false` when there was no such container.
    pub fn delete(&self, namespace: &str, id: &str) -> Result<bool> {
        let id_key = key(namespace, id);
        let result = (&self.containers, &self.names).transaction(|(containers, names)| {
            let Some(old) = containers.remove(id_key.as_slice())? else {
                return Ok(false);
            };
            if let Ok(c) = Container::decode(old.as_ref()) {
                let name_key = key(namespace, &c.name);
                // Free the name only if it is still ours.
                if names.get(&name_key)?.as_deref() == Some(id.as_bytes()) {
                    names.remove(name_key)?;
                }
            }
            Ok::<_, ConflictableTransactionError<()>>(true)
        });
        let removed = match result {
            Ok(r) => r,
            Err(TransactionError::Storage(e)) => return Err(self.db_err(e)),
            Err(TransactionError::Abort(())) => false,
        };
        self.db.flush().map_err(|e| self.db_err(e))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str, secs: i64) -> Container {
        Container {
            id: id.to_string(),
            name: name.to_string(),
            image: "docker.io/library/busybox:latest".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_rename_frees_the_old_name_and_keeps_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create("default", &container("aaa1", "web", 1))
            .unwrap();
        store
            .create("default", &container("bbb2", "db", 2))
            .unwrap();
        let err = store.rename("default", "aaa1", "db").unwrap_err();
        assert!(
            matches!(&err, Error::NameInUse { id, .. } if id == "bbb2"),
            "{err}"
        );
        let c = store.rename("default", "aaa1", "front").unwrap().unwrap();
        assert_eq!(c.name, "front");
        assert_eq!(store.resolve("default", "front").unwrap().id, "aaa1");
        assert!(store.name_owner("default", "web").unwrap().is_none());
        store
            .create("default", &container("ccc3", "web", 3))
            .unwrap();
        assert!(store.rename("default", "nope", "x").unwrap().is_none());
    }

    #[test]
    fn names_are_unique_per_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create("default", &container("aaa1", "web", 1))
            .unwrap();
        let err = store
            .create("default", &container("bbb2", "web", 2))
            .unwrap_err();
        match &err {
            Error::NameInUse { name, id } => {
                assert_eq!((name.as_str(), id.as_str()), ("web", "aaa1"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err
            .to_string()
            .contains("is already in use by container \"aaa1\""));
        // The losing container left nothing behind.
        assert!(store.get("default", "bbb2").unwrap().is_none());
        // Another namespace has its own names.
        store.create("other", &container("bbb2", "web", 2)).unwrap();
        assert_eq!(store.list("default").unwrap().len(), 1);
        assert_eq!(store.list("other").unwrap().len(), 1);

        // Deleting frees the name.
        assert!(store.delete("default", "aaa1").unwrap());
        assert!(!store.delete("default", "aaa1").unwrap());
        assert_eq!(store.name_owner("default", "web").unwrap(), None);
        store
            .create("default", &container("ccc3", "web", 3))
            .unwrap();
        assert_eq!(
            store.name_owner("default", "/web").unwrap().as_deref(),
            Some("ccc3")
        );
    }

    #[test]
    fn lookup_by_id_prefix_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create("default", &container("abc123", "first", 2))
            .unwrap();
        store
            .create("default", &container("abd456", "second", 1))
            .unwrap();
        store
            .create("default", &container("ff0000", "abc", 3))
            .unwrap();

        assert_eq!(store.resolve("default", "abc123").unwrap().name, "first");
        assert_eq!(store.resolve("default", "abd").unwrap().name, "second");
        assert_eq!(store.resolve("default", "second").unwrap().id, "abd456");
        assert_eq!(store.resolve("default", "/second").unwrap().id, "abd456");
        // A name beats an id prefix, as in Docker.
        assert_eq!(store.resolve("default", "abc").unwrap().id, "ff0000");

        match store.resolve("default", "ab").unwrap_err() {
            Error::AmbiguousPrefix { prefix, count } => {
                assert_eq!((prefix.as_str(), count), ("ab", 2));
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = store.resolve("default", "0123").unwrap_err();
        assert_eq!(err.to_string(), "No such container: 0123");
        assert!(matches!(
            store.resolve("other", "abc123"),
            Err(Error::NoSuchContainer(_))
        ));

        let ids: Vec<_> = store
            .list("default")
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["abd456", "abc123", "ff0000"]);
    }

    #[test]
    fn updates_and_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create("b", &container("abc", "x", 1)).unwrap();
        store.create("a", &container("def", "y", 1)).unwrap();
        store.create("a", &container("fed", "z", 1)).unwrap();
        assert_eq!(store.namespaces().unwrap(), ["a", "b"]);
        assert_eq!(
            store.container_counts().unwrap(),
            BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
        );
        let c = store
            .update("b", "abc", |c| c.log_path = "/l".into())
            .unwrap()
            .unwrap();
        assert_eq!(c.log_path, "/l");
        assert_eq!(store.get("b", "abc").unwrap().unwrap().log_path, "/l");
        assert!(store.update("b", "nope", |_| {}).unwrap().is_none());

        let v = Volume {
            name: "data".into(),
            ..Default::default()
        };
        assert!(store.create_volume("a", &v).unwrap());
        assert!(!store.create_volume("a", &v).unwrap());
        assert_eq!(store.list_volumes("a").unwrap().len(), 1);
        assert_eq!(
            store.volume_counts().unwrap(),
            BTreeMap::from([("a".to_string(), 1)])
        );
        assert!(store.list_volumes("b").unwrap().is_empty());
        assert!(store.get_volume("a", "data").unwrap().is_some());
        assert!(store.delete_volume("a", "data").unwrap());
        assert!(!store.delete_volume("a", "data").unwrap());
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut c = container("abc", "keep", 1);
            c.spec = br#"{"ociVersion":"1.1.0"}"#.to_vec();
            store.create("default", &c).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let c = store.resolve("default", "keep").unwrap();
        assert_eq!(c.spec, br#"{"ociVersion":"1.1.0"}"#.to_vec());
    }
}
