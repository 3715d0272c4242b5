//! Image records: the one module that touches the image service's database (sled), so the
//! store can be swapped. Two trees, values JSON:
//! - `images`: `<namespace>/<name>` → [`ImageRecord`];
//! - `namespaces`: `<namespace>` → [`NamespaceRecord`], the namespaces `namespace create`
//!   recorded (with their labels); namespaces also exist without a record, by holding objects.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DescriptorRecord {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    pub target: DescriptorRecord,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    pub updated: i64,
}

/// A namespace `namespace create` recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamespaceRecord {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub created: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("image metadata database: {0}")]
pub struct MetadataError(String);

impl From<sled::Error> for MetadataError {
    fn from(e: sled::Error) -> Self {
        MetadataError(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct ImageDb {
    images: sled::Tree,
    namespaces: sled::Tree,
    db: sled::Db,
}

fn key(ns: &str, name: &str) -> Vec<u8> {
    format!("{ns}/{name}").into_bytes()
}

impl ImageDb {
    pub fn open(path: &Path) -> Result<ImageDb, MetadataError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(4 << 20)
            .open()?;
        let images = db.open_tree("images")?;
        let namespaces = db.open_tree("namespaces")?;
        Ok(ImageDb {
            images,
            namespaces,
            db,
        })
    }

    pub fn get(&self, ns: &str, name: &str) -> Result<Option<ImageRecord>, MetadataError> {
        match self.images.get(key(ns, name))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| MetadataError(format!("corrupt record {name}: {e}"))),
        }
    }

    pub async fn put(&self, ns: &str, rec: &ImageRecord) -> Result<(), MetadataError> {
        let v = serde_json::to_vec(rec).map_err(|e| MetadataError(e.to_string()))?;
        self.images.insert(key(ns, &rec.name), v)?;
        self.db.flush_async().await?;
        Ok(())
    }

    pub async fn delete(&self, ns: &str, name: &str) -> Result<bool, MetadataError> {
        let had = self.images.remove(key(ns, name))?.is_some();
        self.db.flush_async().await?;
        Ok(had)
    }

    /// Every record of every namespace, as `(namespace, record)`; blobs are shared by all
    /// namespaces, so garbage collection looks at all of them.
    pub fn list_all(&self) -> Result<Vec<(String, ImageRecord)>, MetadataError> {
        let mut out = Vec::new();
        for kv in self.images.iter() {
            let (k, v) = kv?;
            let k = String::from_utf8_lossy(&k);
            let ns = k.split_once('/').map(|(ns, _)| ns).unwrap_or_default();
            let rec = serde_json::from_slice(&v)
                .map_err(|e| MetadataError(format!("corrupt record {k}: {e}")))?;
            out.push((ns.to_string(), rec));
        }
        Ok(out)
    }

    /// How many image records each namespace holds (namespaces without any are absent).
    pub fn image_counts(&self) -> Result<BTreeMap<String, i64>, MetadataError> {
        let mut out = BTreeMap::new();
        for k in self.images.iter().keys() {
            let k = k?;
            let k = String::from_utf8_lossy(&k);
            if let Some((ns, _)) = k.split_once('/') {
                *out.entry(ns.to_string()).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// Records namespace `name`; `false` (and nothing written) when it was recorded before.
    pub async fn create_namespace(
        &self,
        name: &str,
        rec: &NamespaceRecord,
    ) -> Result<bool, MetadataError> {
        let v = serde_json::to_vec(rec).map_err(|e| MetadataError(e.to_string()))?;
        let created = self
            .namespaces
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(v))?
            .is_ok();
        self.db.flush_async().await?;
        Ok(created)
    }

    /// The recorded namespaces, by name.
    pub fn namespaces(&self) -> Result<Vec<(String, NamespaceRecord)>, MetadataError> {
        let mut out = Vec::new();
        for kv in self.namespaces.iter() {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k).into_owned();
            let rec = serde_json::from_slice(&v)
                .map_err(|e| MetadataError(format!("corrupt namespace record {name}: {e}")))?;
            out.push((name, rec));
        }
        Ok(out)
    }

    /// Removes namespace `name`'s record; `false` when there was none.
    pub async fn delete_namespace(&self, name: &str) -> Result<bool, MetadataError> {
        let had = self.namespaces.remove(name.as_bytes())?.is_some();
        self.db.flush_async().await?;
        Ok(had)
    }

    pub fn list(&self, ns: &str) -> Result<Vec<ImageRecord>, MetadataError> {
        let mut out = Vec::new();
        for kv in self.images.scan_prefix(format!("{ns}/").as_bytes()) {
            let (_, v) = kv?;
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| MetadataError(format!("corrupt record: {e}")))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            target: DescriptorRecord {
                media_type: "m".into(),
                digest: "sha256:00".into(),
                size: 1,
            },
            labels: Default::default(),
            created: 1,
            updated: 1,
        }
    }

    #[tokio::test]
    async fn namespaces_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let db = ImageDb::open(&dir.path().join("db")).unwrap();
        db.put("default", &rec("a")).await.unwrap();
        db.put("other", &rec("b")).await.unwrap();
        assert_eq!(db.list("default").unwrap(), vec![rec("a")]);
        assert_eq!(db.get("other", "b").unwrap(), Some(rec("b")));
        assert!(db.get("default", "b").unwrap().is_none());
        assert_eq!(
            db.image_counts().unwrap(),
            BTreeMap::from([("default".to_string(), 1), ("other".to_string(), 1)])
        );
        assert!(db.delete("default", "a").await.unwrap());
        assert!(db.list("default").unwrap().is_empty());
        assert!(!db.image_counts().unwrap().contains_key("default"));
    }

    #[tokio::test]
    async fn namespace_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = ImageDb::open(&dir.path().join("db")).unwrap();
        let rec = NamespaceRecord {
            labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
            created: 5,
        };
        assert!(db.create_namespace("team-a", &rec).await.unwrap());
        let other = NamespaceRecord {
            labels: BTreeMap::new(),
            created: 6,
        };
        assert!(!db.create_namespace("team-a", &other).await.unwrap());
        assert_eq!(db.namespaces().unwrap(), vec![("team-a".to_string(), rec)]);
        assert!(db.delete_namespace("team-a").await.unwrap());
        assert!(!db.delete_namespace("team-a").await.unwrap());
        assert!(db.namespaces().unwrap().is_empty());
    }
}
