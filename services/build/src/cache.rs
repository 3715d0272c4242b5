//! The build cache: which image a step made from a parent image, an instruction and (for
//! COPY/ADD) the files it copied. The one module touching the build service's sled database.

use sha2::{Digest as _, Sha256};
use std::path::Path;

/// What identifies a step for the cache.
#[derive(Debug, Clone, Default)]
pub struct StepKey<'a> {
    /// The image the step starts from (`""` for scratch).
    pub parent: &'a str,
    /// The instruction after substitution, as its history records it.
    pub instruction: &'a str,
    /// Build args in effect (RUN), `K=V`.
    pub build_args: &'a [String],
    /// The digest of the files a COPY/ADD copies.
    pub content: &'a str,
    /// The namespace: images live in one, so their cache entries do too.
    pub namespace: &'a str,
}

impl StepKey<'_> {
    /// The key as stored: a sha256 over every part, each length-prefixed.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        part(self.namespace);
        part(self.parent);
        part(self.instruction);
        for a in self.build_args {
            part(a);
        }
        part("\0content");
        part(self.content);
        hex::encode(h.finalize())
    }
}

#[derive(Debug, Clone)]
pub struct BuildCache {
    tree: sled::Tree,
}

impl BuildCache {
    pub fn open(path: &Path) -> Result<BuildCache, sled::Error> {
        let db = sled::open(path)?;
        Ok(BuildCache {
            tree: db.open_tree("steps")?,
        })
    }

    /// The image a step made before, if any.
    pub fn get(&self, key: &StepKey<'_>) -> Option<String> {
        self.tree
            .get(key.digest())
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    pub fn put(&self, key: &StepKey<'_>, image_id: &str) {
        if let Err(e) = self.tree.insert(key.digest(), image_id.as_bytes()) {
            tracing::warn!("build cache: cannot record a step: {e}");
        }
    }

    /// Forgets a step whose image is gone.
    pub fn forget(&self, key: &StepKey<'_>) {
        let _ = self.tree.remove(key.digest());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_changes_the_key() {
        let args = ["A=1".to_string()];
        let base = StepKey {
            parent: "sha256:aa",
            instruction: "RUN make",
            build_args: &args,
            content: "",
            namespace: "default",
        };
        let d = base.digest();
        assert_eq!(d, base.clone().digest());
        assert_ne!(
            d,
            StepKey {
                parent: "sha256:bb",
                ..base.clone()
            }
            .digest()
        );
        assert_ne!(
            d,
            StepKey {
                instruction: "RUN make all",
                ..base.clone()
            }
            .digest()
        );
        assert_ne!(
            d,
            StepKey {
                build_args: &[],
                ..base.clone()
            }
            .digest()
        );
        assert_ne!(
            d,
            StepKey {
                content: "ff",
                ..base.clone()
            }
            .digest()
        );
        assert_ne!(
            d,
            StepKey {
                namespace: "other",
                ..base.clone()
            }
            .digest()
        );
        // Parts cannot run into each other.
        let a = StepKey {
            parent: "ab",
            instruction: "c",
            ..Default::default()
        };
        let b = StepKey {
            parent: "a",
            instruction: "bc",
            ..Default::default()
        };
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn stores_and_forgets() {
        let d = tempfile::tempdir().unwrap();
        let c = BuildCache::open(&d.path().join("cache.db")).unwrap();
        let k = StepKey {
            parent: "p",
            instruction: "ENV A=1",
            ..Default::default()
        };
        assert_eq!(c.get(&k), None);
        c.put(&k, "sha256:11");
        assert_eq!(c.get(&k).as_deref(), Some("sha256:11"));
        c.forget(&k);
        assert_eq!(c.get(&k), None);
    }
}
