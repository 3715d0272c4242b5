//! HTTP Basic authentication against an htpasswd file of bcrypt entries.
//!
//! `user:$2y$…` lines, as `htpasswd -B` writes them (`#` comments and blank lines allowed).
//! Other hash kinds (MD5 `$apr1$`, SHA1 `{SHA}`, crypt) are refused when the file is read, so
//! a weak file is noticed at start rather than silently half-working. bcrypt is slow on
//! purpose (tens of milliseconds), so credentials that passed are remembered, as a sha256 of
//! the pair, for a few minutes.

use base64::Engine as _;
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long checked credentials are taken without asking bcrypt again.
const REMEMBER: Duration = Duration::from_secs(300);

/// Users and their bcrypt hashes.
pub struct Htpasswd {
    users: HashMap<String, String>,
    checked: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the htpasswd file {}: {e}", path.display()))?;
        Htpasswd::parse(&text).map_err(|e| format!("htpasswd file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {}: expected user:hash", n + 1));
            };
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "line {}: the entry of {user:?} is not bcrypt; make it with `htpasswd -B`",
                    n + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err("no users in it".into());
        }
        Ok(Htpasswd {
            users,
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// Whether an `Authorization` header value holds Basic credentials of a user.
    pub async fn allows(self: &std::sync::Arc<Self>, authorization: Option<&str>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        let Some(hash) = self.users.get(&user).cloned() else {
            return false;
        };
        let key: [u8; 32] = sha2::Sha256::digest(format!("{user}\0{password}")).into();
        {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            match checked.get(&key) {
                Some(at) if at.elapsed() < REMEMBER => return true,
                Some(_) => {
                    checked.remove(&key);
                }
                None => {}
            }
        }
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            checked.retain(|_, at| at.elapsed() < REMEMBER);
            checked.insert(key, Instant::now());
        }
        ok
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn header(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[tokio::test]
    async fn checks_bcrypt_entries() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let h = Arc::new(Htpasswd::parse(&format!("# users\n\nalice:{hash}\n")).unwrap());
        assert!(h.allows(Some(&header("alice", "s3cret"))).await);
        assert!(
            h.allows(Some(&header("alice", "s3cret"))).await,
            "remembered"
        );
        assert!(!h.allows(Some(&header("alice", "wrong"))).await);
        assert!(!h.allows(Some(&header("bob", "s3cret"))).await);
        assert!(!h.allows(None).await);
        assert!(!h.allows(Some("Bearer x")).await);
        assert!(!h.allows(Some("Basic !!!")).await);
    }

    #[test]
    fn refuses_weak_or_empty_files() {
        let e = Htpasswd::parse("bob:$apr1$abc$def\n").unwrap_err();
        assert!(e.contains("not bcrypt"), "{e}");
        assert!(Htpasswd::parse("# nobody\n").is_err());
        assert!(Htpasswd::parse("no-colon\n").is_err());
    }
}
