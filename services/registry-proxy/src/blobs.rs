//! The proxy's content store: manifests, configs and layers by digest, in
//! `<root>/blobs/<algorithm>/<hex>`.
//!
//! Content is written to a file of its own under `<root>/ingest/` (downloads) or
//! `<root>/uploads/` (pushes), fsynced, checked against its digest, then renamed into place and
//! the folder fsynced: a blob under its digest is whole and verified, or absent. Whatever is
//! left in `ingest/` after a crash is removed when the store opens; upload sessions are the
//! HTTP registry's to expire (see `server`).

use berth_core::digest::{Algorithm, Hasher};
use berth_core::Digest;
use sha2::Digest as _;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Blobs by digest under one folder.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
}

/// Why content was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the content's digest is {got}, not {expected}")]
    Mismatch { expected: Digest, got: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl BlobStore {
    /// Opens (creating) the store under `root`, and removes unfinished downloads.
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        for d in ["blobs/sha256", "blobs/sha512", "ingest", "uploads"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        for entry in std::fs::read_dir(root.join("ingest"))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let algorithm = match digest.algorithm() {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        };
        self.root.join("blobs").join(algorithm).join(digest.hex())
    }

    /// The size of a stored blob, `None` when it is not stored.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.size(digest).is_some()
    }

    /// A whole small blob (a manifest), refusing more than `limit` bytes.
    pub async fn read_small(&self, digest: &Digest, limit: u64) -> io::Result<Vec<u8>> {
        let path = self.path(digest);
        tokio::task::spawn_blocking(move || {
            let mut data = Vec::new();
            File::open(path)?.take(limit + 1).read_to_end(&mut data)?;
            if data.len() as u64 > limit {
                return Err(io::Error::other(format!("more than {limit} bytes")));
            }
            Ok(data)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// A new empty file to download into, and its path.
    pub fn ingest_file(&self) -> io::Result<(PathBuf, File)> {
        let path = self.root.join("ingest").join(random_id());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// Where an upload session keeps its bytes.
    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// The ids of the files under `uploads/`.
    pub fn upload_ids(&self) -> io::Result<Vec<String>> {
        let entries = std::fs::read_dir(self.root.join("uploads"))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    /// Moves a file whose content was already checked (while it streamed) into place under
    /// `digest`. Blocking.
    pub fn commit_checked(&self, tmp: &Path, file: &File, digest: &Digest) -> io::Result<()> {
        file.sync_all()?;
        let dest = self.path(digest);
        std::fs::rename(tmp, &dest)?;
        if let Some(dir) = dest.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Hashes `tmp` and moves it into place when it is `digest`; otherwise removes it. Returns
    /// the size. Blocking.
    pub fn commit_file(&self, tmp: &Path, digest: &Digest) -> Result<u64, CommitError> {
        let mut file = File::open(tmp)?;
        let mut hashing = Hashing::new(digest);
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hashing.update(&buf[..n]);
            size += n as u64;
        }
        let got = hashing.finish();
        if got != digest.to_string() {
            let _ = std::fs::remove_file(tmp);
            return Err(CommitError::Mismatch {
                expected: digest.clone(),
                got,
            });
        }
        self.commit_checked(tmp, &file, digest)?;
        Ok(size)
    }

    /// Stores `data` under its sha256 digest (manifests pushed to the registry); returns it.
    pub async fn put_small(&self, data: Vec<u8>) -> io::Result<Digest> {
        let digest = Digest::sha256_of(&data);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let (tmp, mut file) = self.ingest_file()?;
        let dest = digest.clone();
        let me = BlobStore {
            root: self.root.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let result = io::Write::write_all(&mut file, &data)
                .and_then(|()| me.commit_checked(&tmp, &file, &dest));
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        })
        .await
        .map_err(io::Error::other)??;
        Ok(digest)
    }
}

/// A running sha256 or sha512, whichever the expected digest uses.
pub(crate) enum Hashing {
    Sha256(Hasher),
    Sha512(Box<sha2::Sha512>),
}

impl Hashing {
    pub fn new(like: &Digest) -> Hashing {
        match like.algorithm() {
            Algorithm::Sha256 => Hashing::Sha256(Hasher::new()),
            Algorithm::Sha512 => Hashing::Sha512(Box::default()),
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hashing::Sha256(h) => h.update(data),
            Hashing::Sha512(h) => h.update(data),
        }
    }
    /// `algorithm:hex`.
    pub fn finish(self) -> String {
        match self {
            Hashing::Sha256(h) => h.finish().to_string(),
            Hashing::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// 128 random bits as a UUID (version 4), for upload sessions and ingest files.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the kernel's random source");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_only_what_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let good = Digest::sha256_of(b"hello");
        let tmp = store.upload_path("u1");
        std::fs::write(&tmp, b"hello").unwrap();
        assert_eq!(store.commit_file(&tmp, &good).unwrap(), 5);
        assert_eq!(store.size(&good), Some(5));
        assert!(!tmp.exists());

        let tmp = store.upload_path("u2");
        std::fs::write(&tmp, b"hellO").unwrap();
        let other = Digest::sha256_of(b"other");
        let e = store.commit_file(&tmp, &other).unwrap_err();
        assert!(matches!(e, CommitError::Mismatch { .. }), "{e}");
        assert!(!store.contains(&other) && !tmp.exists());

        let d = store.put_small(b"{}".to_vec()).await.unwrap();
        assert_eq!(store.read_small(&d, 10).await.unwrap(), b"{}");
        assert!(store.read_small(&d, 1).await.is_err());
    }

    #[test]
    fn opening_clears_unfinished_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (path, _) = store.ingest_file().unwrap();
        assert!(path.exists());
        BlobStore::open(dir.path()).unwrap();
        assert!(!path.exists());
        let id = random_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
