//! The content store: blobs by digest under `blobs/sha256/<hex>`.
//!
//! A blob is written to `ingest/` while its digest is computed, fsynced, checked against the
//! expected size and digest, then renamed into place: it is either whole and verified or
//! absent. Leftovers in `ingest/` (a crash mid-write) are removed when the store opens.

use berth_core::digest::{Digest, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content {0} not found")]
    NotFound(Digest),
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("content store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub created: std::time::SystemTime,
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let ingest = root.join("ingest");
        // Whatever is in ingest/ was being written when the daemon stopped: never visible, drop it.
        if ingest.exists() {
            std::fs::remove_dir_all(&ingest).map_err(io_err(&ingest))?;
        }
        std::fs::create_dir_all(&ingest).map_err(io_err(&ingest))?;
        Ok(ContentStore {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        let alg = match d.algorithm() {
            berth_core::digest::Algorithm::Sha256 => "sha256",
            berth_core::digest::Algorithm::Sha512 => "sha512",
        };
        self.root.join("blobs").join(alg).join(d.hex())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn info(&self, d: &Digest) -> Result<BlobInfo, ContentError> {
        let p = self.path(d);
        match std::fs::metadata(&p) {
            Ok(m) => Ok(BlobInfo {
                digest: d.clone(),
                size: m.len(),
                created: m.modified().unwrap_or(std::time::UNIX_EPOCH),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound(d.clone())),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    pub fn list(&self) -> Result<Vec<BlobInfo>, ContentError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|h| Digest::from_sha256_hex(h).ok())
            {
                if let Ok(i) = self.info(&d) {
                    out.push(i);
                }
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Reads a whole blob that must be at most `limit` bytes (manifests, configs).
    pub fn read_small(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, ContentError> {
        let info = self.info(d)?;
        if info.size > limit {
            return Err(ContentError::TooLarge {
                what: d.to_string(),
                size: info.size,
                limit,
            });
        }
        let p = self.path(d);
        std::fs::read(&p).map_err(io_err(&p))
    }

    pub fn delete(&self, d: &Digest) -> Result<(), ContentError> {
        let p = self.path(d);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound(d.clone())),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Starts writing a blob. `what` names it in errors (e.g. "layer sha256:… of busybox").
    pub async fn writer(
        &self,
        what: impl Into<String>,
        expected: Option<Digest>,
        expected_size: Option<u64>,
    ) -> Result<Writer, ContentError> {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| ContentError::Io {
            path: self.root.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let tmp = self.root.join("ingest").join(hex::encode(rnd));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(io_err(&tmp))?;
        Ok(Writer {
            store: self.clone(),
            what: what.into(),
            file: Some(tokio::io::BufWriter::with_capacity(256 << 10, file)),
            tmp,
            hasher: Hasher::new(),
            expected,
            expected_size,
            committed: false,
        })
    }

    /// Writes a small blob in one go.
    pub async fn write_all(
        &self,
        what: &str,
        data: &[u8],
        expected: Option<Digest>,
    ) -> Result<Digest, ContentError> {
        let d = expected.clone().unwrap_or_else(|| Digest::sha256_of(data));
        if self.contains(&d) {
            return Ok(d);
        }
        let mut w = self.writer(what, expected, Some(data.len() as u64)).await?;
        w.write(data).await?;
        w.commit().await
    }
}

/// A blob being written; dropped without `commit`, it leaves nothing behind.
#[derive(Debug)]
pub struct Writer {
    store: ContentStore,
    what: String,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    tmp: PathBuf,
    hasher: Hasher,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    committed: bool,
}

impl Writer {
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), ContentError> {
        if let Some(max) = self.expected_size {
            let now = self.hasher.len() + data.len() as u64;
            if now > max {
                return Err(ContentError::SizeMismatch {
                    what: self.what.clone(),
                    expected: max,
                    actual: now,
                });
            }
        }
        self.hasher.update(data);
        let f = self.file.as_mut().expect("writer is open until commit");
        f.write_all(data).await.map_err(io_err(&self.tmp))
    }

    /// Verifies size and digest, makes the blob durable and visible under its digest.
    pub async fn commit(mut self) -> Result<Digest, ContentError> {
        let mut f = self.file.take().expect("writer is open until commit");
        f.flush().await.map_err(io_err(&self.tmp))?;
        let f = f.into_inner();
        let size = self.hasher.len();
        if let Some(want) = self.expected_size {
            if want != size {
                return Err(ContentError::SizeMismatch {
                    what: self.what.clone(),
                    expected: want,
                    actual: size,
                });
            }
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if let Some(want) = &self.expected {
            if want.algorithm() == actual.algorithm() && *want != actual {
                return Err(ContentError::DigestMismatch {
                    what: self.what.clone(),
                    expected: want.clone(),
                    actual,
                });
            }
        }
        f.sync_all().await.map_err(io_err(&self.tmp))?;
        drop(f);
        let dest = self.store.path(&actual);
        tokio::fs::rename(&self.tmp, &dest)
            .await
            .map_err(io_err(&dest))?;
        self.committed = true;
        if let Some(dir) = dest.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(actual)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verified_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let good = Digest::sha256_of(b"hello");
        let d = store
            .write_all("greeting", b"hello", Some(good.clone()))
            .await
            .unwrap();
        assert_eq!(d, good);
        assert_eq!(store.read_small(&d, 100).unwrap(), b"hello");

        let wrong = Digest::sha256_of(b"other");
        let err = store
            .write_all("bad", b"hello!", Some(wrong.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&wrong));
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );

        let mut w = store.writer("lying size", None, Some(3)).await.unwrap();
        assert!(w.write(b"toolong").await.is_err());
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
        assert!(matches!(
            store.read_small(&d, 2),
            Err(ContentError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn leftovers_are_cleaned_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut w = store.writer("half", None, None).await.unwrap();
        w.write(b"half a blob").await.unwrap();
        std::mem::forget(w); // as if the daemon died mid-write
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            1
        );
        ContentStore::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }
}
