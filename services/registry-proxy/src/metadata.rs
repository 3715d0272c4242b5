//! What the proxy knows about its blobs, in one sled database: which repositories of the
//! served registry hold which blobs and manifests, their tags, the media type of each
//! manifest, open upload sessions, which upstream repositories served which digests (so the
//! mirror hands cached content only to a repository that holds it), and the last digest each
//! upstream tag resolved to (so a pull can go on while the upstream registry is down).
//!
//! Keys under a repository are `repository \0 item`: repository names never hold a NUL, so a
//! repository's entries are one contiguous range, and repositories sort by name.

use berth_core::Digest;
use std::path::Path;

/// One sled database with a tree per relation.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// `repo\0digest` → size: the blobs pushed to (or mounted into) a repository.
    blobs: sled::Tree,
    /// `repo\0digest` → (): the manifests of a repository.
    manifests: sled::Tree,
    /// `repo\0tag` → digest.
    tags: sled::Tree,
    /// digest → media type, of every stored manifest.
    media_types: sled::Tree,
    /// upload id → repository.
    uploads: sled::Tree,
    /// `domain/path\0digest` → (): content an upstream repository served, verified.
    upstream_links: sled::Tree,
    /// `domain/path:tag` → JSON [`Remembered`]: what an upstream tag last resolved to.
    upstream: sled::Tree,
}

/// An upstream tag's last resolution.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Remembered {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

pub type Result<T> = std::result::Result<T, sled::Error>;

fn key(repo: &str, item: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(repo.len() + 1 + item.len());
    k.extend_from_slice(repo.as_bytes());
    k.push(0);
    k.extend_from_slice(item.as_bytes());
    k
}

fn prefix(repo: &str) -> Vec<u8> {
    key(repo, "")
}

/// The item of a `repo\0item` key.
fn item(k: &[u8]) -> String {
    let i = k.iter().position(|b| *b == 0).map(|i| i + 1).unwrap_or(0);
    String::from_utf8_lossy(&k[i..]).into_owned()
}

fn repo_of(k: &[u8]) -> String {
    let i = k.iter().position(|b| *b == 0).unwrap_or(k.len());
    String::from_utf8_lossy(&k[..i]).into_owned()
}

impl Metadata {
    pub fn open(path: &Path) -> Result<Metadata> {
        let db = sled::open(path)?;
        Ok(Metadata {
            blobs: db.open_tree("blobs")?,
            manifests: db.open_tree("manifests")?,
            tags: db.open_tree("tags")?,
            media_types: db.open_tree("media_types")?,
            uploads: db.open_tree("uploads")?,
            upstream_links: db.open_tree("upstream_links")?,
            upstream: db.open_tree("upstream")?,
        })
    }

    /// Whether anything was ever pushed to the repository (and not all deleted).
    pub fn repository_exists(&self, repo: &str) -> Result<bool> {
        let p = prefix(repo);
        Ok(self.manifests.scan_prefix(&p).next().transpose()?.is_some()
            || self.blobs.scan_prefix(&p).next().transpose()?.is_some())
    }

    pub fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        self.blobs
            .insert(key(repo, &digest.to_string()), &size.to_be_bytes())?;
        Ok(())
    }

    pub fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.blobs.contains_key(key(repo, &digest.to_string()))
    }

    pub fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        Ok(self.blobs.remove(key(repo, &digest.to_string()))?.is_some())
    }

    /// Records a manifest of `repo` and its media type.
    pub fn put_manifest(&self, repo: &str, digest: &Digest, media_type: &str) -> Result<()> {
        self.set_media_type(digest, media_type)?;
        self.manifests.insert(key(repo, &digest.to_string()), &[])?;
        Ok(())
    }

    pub fn has_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.manifests.contains_key(key(repo, &digest.to_string()))
    }

    /// Removes a manifest from `repo` with every tag that points at it.
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let d = digest.to_string();
        for entry in self.tags.scan_prefix(prefix(repo)) {
            let (k, v) = entry?;
            if v.as_ref() == d.as_bytes() {
                self.tags.remove(k)?;
            }
        }
        Ok(self.manifests.remove(key(repo, &d))?.is_some())
    }

    pub fn media_type(&self, digest: &Digest) -> Result<Option<String>> {
        Ok(self
            .media_types
            .get(digest.to_string())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_media_type(&self, digest: &Digest, media_type: &str) -> Result<()> {
        self.media_types
            .insert(digest.to_string(), media_type.as_bytes())?;
        Ok(())
    }

    pub fn tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<()> {
        self.tags
            .insert(key(repo, tag), digest.to_string().as_bytes())?;
        Ok(())
    }

    pub fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<Digest>> {
        Ok(self
            .tags
            .get(key(repo, tag))?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }

    pub fn untag(&self, repo: &str, tag: &str) -> Result<bool> {
        Ok(self.tags.remove(key(repo, tag))?.is_some())
    }

    /// Tags of `repo` in lexical order, after `last` when given, at most `n`.
    pub fn tags(&self, repo: &str, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in self.tags.scan_prefix(prefix(repo)) {
            let (k, _) = entry?;
            let t = item(&k);
            if last.is_some_and(|l| t.as_str() <= l) {
                continue;
            }
            if out.len() == n {
                break;
            }
            out.push(t);
        }
        Ok(out)
    }

    /// Repositories that hold a manifest, in lexical order, after `last`, at most `n`.
    pub fn repositories(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        // `repo\x01` sorts after every `repo\0…` key and before any longer repository name.
        let mut from = match last {
            Some(l) => format!("{l}\x01").into_bytes(),
            None => Vec::new(),
        };
        while out.len() < n {
            let Some(entry) = self.manifests.range(from.clone()..).next() else {
                break;
            };
            let (k, _) = entry?;
            let repo = repo_of(&k);
            from = format!("{repo}\x01").into_bytes();
            out.push(repo);
        }
        Ok(out)
    }

    pub fn start_upload(&self, id: &str, repo: &str) -> Result<()> {
        self.uploads.insert(id, repo.as_bytes())?;
        Ok(())
    }

    /// The repository an upload session belongs to.
    pub fn upload(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .uploads
            .get(id)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn end_upload(&self, id: &str) -> Result<()> {
        self.uploads.remove(id)?;
        Ok(())
    }

    /// How many upload sessions are open.
    pub fn upload_count(&self) -> usize {
        self.uploads.len()
    }

    /// Every open upload session: id and repository.
    pub fn uploads(&self) -> Result<Vec<(String, String)>> {
        self.uploads
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                Ok((text(&k), text(&v)))
            })
            .collect()
    }

    /// Records that the upstream repository `domain/path` served `digest` (and it verified).
    pub fn link_upstream(&self, repository: &str, digest: &Digest) -> Result<()> {
        self.upstream_links
            .insert(key(repository, &digest.to_string()), &[])?;
        Ok(())
    }

    /// Whether the upstream repository `domain/path` ever served `digest`.
    pub fn upstream_has(&self, repository: &str, digest: &Digest) -> Result<bool> {
        self.upstream_links
            .contains_key(key(repository, &digest.to_string()))
    }

    pub fn remember_upstream(&self, reference: &str, r: &Remembered) -> Result<()> {
        let v = serde_json::to_vec(r).expect("plain struct serializes");
        self.upstream.insert(reference, v)?;
        Ok(())
    }

    pub fn upstream(&self, reference: &str) -> Result<Option<Remembered>> {
        Ok(self
            .upstream
            .get(reference)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[test]
    fn upstream_links_are_per_repository() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metadata::open(dir.path()).unwrap();
        m.link_upstream("docker.io/library/a", &d("x")).unwrap();
        assert!(m.upstream_has("docker.io/library/a", &d("x")).unwrap());
        assert!(!m.upstream_has("docker.io/library/a", &d("y")).unwrap());
        assert!(!m.upstream_has("docker.io/library/ab", &d("x")).unwrap());
        assert!(!m.upstream_has("docker.io/library", &d("x")).unwrap());
        // The served registry's own repositories are another relation.
        assert!(!m.has_blob("docker.io/library/a", &d("x")).unwrap());
    }

    #[test]
    fn repositories_page_in_order_including_nested_names() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metadata::open(dir.path()).unwrap();
        for repo in ["b", "a/b/c", "a/b", "a", "a-b", "a/b"] {
            m.put_manifest(repo, &d(repo), "t").unwrap();
            m.put_manifest(repo, &d("x"), "t").unwrap();
        }
        let all = m.repositories(None, 100).unwrap();
        assert_eq!(all, ["a", "a-b", "a/b", "a/b/c", "b"]);
        assert_eq!(m.repositories(None, 2).unwrap(), ["a", "a-b"]);
        assert_eq!(m.repositories(Some("a-b"), 2).unwrap(), ["a/b", "a/b/c"]);
        assert_eq!(m.repositories(Some("a/b/c"), 2).unwrap(), ["b"]);
        assert!(m.repositories(Some("b"), 2).unwrap().is_empty());
    }

    #[test]
    fn tags_follow_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metadata::open(dir.path()).unwrap();
        m.put_manifest("r", &d("1"), "t").unwrap();
        m.put_manifest("r/sub", &d("2"), "t").unwrap();
        m.tag("r", "v1", &d("1")).unwrap();
        m.tag("r", "latest", &d("1")).unwrap();
        m.tag("r/sub", "v2", &d("2")).unwrap();
        assert_eq!(m.tags("r", None, 10).unwrap(), ["latest", "v1"]);
        assert_eq!(m.tags("r", Some("latest"), 10).unwrap(), ["v1"]);
        assert_eq!(m.tags("r", None, 1).unwrap(), ["latest"]);
        assert_eq!(m.resolve_tag("r", "v1").unwrap(), Some(d("1")));
        assert!(m.delete_manifest("r", &d("1")).unwrap());
        assert!(m.tags("r", None, 10).unwrap().is_empty());
        assert_eq!(m.tags("r/sub", None, 10).unwrap(), ["v2"]);
        assert!(!m.repository_exists("r").unwrap());
        assert!(m.repository_exists("r/sub").unwrap());
        assert_eq!(m.media_type(&d("2")).unwrap().as_deref(), Some("t"));
    }

    #[test]
    fn blobs_and_uploads_and_upstream_tags() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metadata::open(dir.path()).unwrap();
        m.link_blob("r", &d("b"), 3).unwrap();
        assert!(m.has_blob("r", &d("b")).unwrap());
        assert!(!m.has_blob("r2", &d("b")).unwrap());
        assert!(m.unlink_blob("r", &d("b")).unwrap());
        assert!(!m.unlink_blob("r", &d("b")).unwrap());
        m.start_upload("u", "r").unwrap();
        assert_eq!(m.upload("u").unwrap().as_deref(), Some("r"));
        m.start_upload("v", "r/s").unwrap();
        assert_eq!(
            m.uploads().unwrap(),
            [
                ("u".to_string(), "r".to_string()),
                ("v".into(), "r/s".into())
            ]
        );
        m.end_upload("u").unwrap();
        assert_eq!(m.upload("u").unwrap(), None);
        assert_eq!(m.upload_count(), 1);
        let r = Remembered {
            media_type: "t".into(),
            digest: d("m").to_string(),
            size: 9,
        };
        m.remember_upstream("docker.io/library/busybox:latest", &r)
            .unwrap();
        assert_eq!(
            m.upstream("docker.io/library/busybox:latest").unwrap(),
            Some(r)
        );
    }
}
