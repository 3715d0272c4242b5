//! Image records: the one module that touches the image service's database (sled), so the
//! store can be swapped. Keys are `<namespace>/<name>`; values JSON.

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
        Ok(ImageDb { images, db })
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
        assert!(db.delete("default", "a").await.unwrap());
        assert!(db.list("default").unwrap().is_empty());
    }
}
