//! Where registry credentials come from: a [`CredentialStore`], today Docker's `config.json`
//! ([`DockerConfig`]), so what `docker login` (and later `berth login`) stored works.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Looks up the credential for a registry host (`host[:port]`).
pub trait CredentialStore: Send + Sync + fmt::Debug {
    fn get(&self, host: &str) -> Option<Credential>;
}

/// No credentials at all: every request is anonymous.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl CredentialStore for Anonymous {
    fn get(&self, _host: &str) -> Option<Credential> {
        None
    }
}

/// Docker's `config.json`: `{"auths": {"HOST": {"auth": base64("user:pass")}}}`.
///
/// The file is read on every lookup, so a login takes effect without restarting berthd;
/// lookups happen once per registry challenge, not per request.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
}

#[derive(serde::Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`, else
    /// `/root/.docker/config.json`.
    pub fn from_env() -> DockerConfig {
        DockerConfig::in_dir(default_dir(
            std::env::var_os("DOCKER_CONFIG"),
            std::env::var_os("HOME"),
        ))
    }

    /// `DIR/config.json`.
    pub fn in_dir(dir: impl AsRef<Path>) -> DockerConfig {
        DockerConfig {
            path: dir.as_ref().join("config.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Option<ConfigFile> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read registry credentials");
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring invalid registry credentials file");
                None
            }
        }
    }
}

fn default_dir(
    docker_config: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    match (docker_config, home) {
        (Some(d), _) if !d.is_empty() => PathBuf::from(d),
        (_, Some(h)) if !h.is_empty() => PathBuf::from(h).join(".docker"),
        _ => PathBuf::from("/root/.docker"),
    }
}

/// The host a `config.json` key names: keys may be `host`, `https://host`, or Docker Hub's
/// historical `https://index.docker.io/v1/`.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        _ => k,
    }
}

fn decode(entry: &AuthEntry) -> Option<Credential> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        return Some(Credential {
            username: u.to_string(),
            password: p.to_string(),
        });
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Some(Credential {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    }
}

impl CredentialStore for DockerConfig {
    fn get(&self, host: &str) -> Option<Credential> {
        let file = self.read()?;
        let want = key_host(host);
        file.auths
            .iter()
            .filter(|(k, _)| key_host(k) == want)
            .find_map(|(_, e)| decode(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {
                "127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "other.example": {"username": "u", "password": "p"}
            }}"#,
        )
        .unwrap();
        let store = DockerConfig::in_dir(dir.path());
        let c = store.get("127.0.0.1:5000").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(store.get("docker.io").unwrap().username, "hub");
        assert_eq!(store.get("other.example").unwrap().password, "p");
        assert_eq!(store.get("127.0.0.1:5001"), None);
        assert!(!format!("{c:?}").contains("pa:ss"));
    }

    #[test]
    fn missing_or_broken_files_mean_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DockerConfig::in_dir(dir.path()).get("x"), None);
        std::fs::write(dir.path().join("config.json"), "not json").unwrap();
        assert_eq!(DockerConfig::in_dir(dir.path()).get("x"), None);
    }

    #[test]
    fn finds_the_config_dir_like_docker() {
        assert_eq!(
            default_dir(Some("/etc/dc".into()), Some("/home/u".into())),
            PathBuf::from("/etc/dc")
        );
        assert_eq!(
            default_dir(None, Some("/home/u".into())),
            PathBuf::from("/home/u/.docker")
        );
        assert_eq!(default_dir(None, None), PathBuf::from("/root/.docker"));
    }
}
