//! Where registry credentials come from and where `berth login` keeps them: a
//! [`CredentialStore`], today Docker's `config.json` ([`DockerConfig`]), so what `docker login`
//! stored works for berth and the other way round.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The key Docker keeps Docker Hub's credentials under, from the days of the v1 index.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

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

/// Looks up, saves and forgets the credential of a registry host (`host[:port]`, Docker Hub
/// as `docker.io`).
pub trait CredentialStore: Send + Sync + fmt::Debug {
    fn get(&self, host: &str) -> Option<Credential>;

    /// Saves `credential` for `host`, replacing what was there.
    fn store(&self, host: &str, credential: &Credential) -> Result<(), StoreError> {
        let _ = (host, credential);
        Err(StoreError::ReadOnly)
    }

    /// Forgets the credential of `host`; `false` when there was none.
    fn erase(&self, host: &str) -> Result<bool, StoreError> {
        let _ = host;
        Err(StoreError::ReadOnly)
    }

    /// Where credentials are kept, for messages (`/root/.docker/config.json`).
    fn location(&self) -> Option<String> {
        None
    }
}

/// Why credentials could not be saved or forgotten.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("this berthd keeps no credentials (its credential store is read-only)")]
    ReadOnly,

    #[error("cannot save registry credentials in {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot save registry credentials: {} is not a valid Docker config file ({reason}); fix or move it, then log in again", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// No credentials at all: every request is anonymous.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl CredentialStore for Anonymous {
    fn get(&self, _host: &str) -> Option<Credential> {
        None
    }
}

/// One request's own credentials (Docker's `X-Registry-Auth`, the `auth` of a registry
/// request): answers them for every host, and keeps nothing.
#[derive(Debug, Clone)]
pub struct ForOneRequest(pub Credential);

impl CredentialStore for ForOneRequest {
    fn get(&self, _host: &str) -> Option<Credential> {
        Some(self.0.clone())
    }
}

tokio::task_local! {
    /// The credentials of the request being served, when it brought its own: the
    /// registry service's [`client`](crate::service::RegistryService::client) then makes a
    /// client of their own (its tokens its own) instead of the shared one of the host.
    pub static REQUEST_CREDENTIAL: Credential;
}

/// The credential of a request's `auth`; `None` when it has none. An identity token (an
/// OAuth2 refresh token) is refused: the proxy answers Basic and Bearer challenges with a
/// user name and password.
pub fn of_request(
    auth: Option<&berth_api::types::v1::RegistryAuth>,
) -> Result<Option<Credential>, crate::Error> {
    let Some(a) = auth else { return Ok(None) };
    if !a.identity_token.is_empty() {
        return Err(crate::Error::InvalidRequest(
            "identity tokens are not supported in a request's registry auth; send a user name and password".into(),
        ));
    }
    if a.username.is_empty() && a.password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential {
        username: a.username.clone(),
        password: a.password.clone(),
    }))
}

/// Runs `work` with `credential` as its request's own (see [`REQUEST_CREDENTIAL`]).
pub async fn with_request_credential<T>(
    credential: Option<Credential>,
    work: impl std::future::Future<Output = T>,
) -> T {
    match credential {
        Some(c) => REQUEST_CREDENTIAL.scope(c, work).await,
        None => work.await,
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

    /// Changes the `auths` object of the file under a lock, keeping every other key, and
    /// writes the file back when `change` says it changed something.
    fn update_auths<T>(
        &self,
        change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>) -> (T, bool),
    ) -> Result<T, StoreError> {
        // Logins of one berthd do not race each other; other programs writing the file at the
        // same moment can still lose an update, as with Docker.
        static WRITING: Mutex<()> = Mutex::new(());
        let _writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        // A config.json that is a symlink (to a dotfiles repository, say) stays one.
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let invalid = |reason: String| StoreError::Invalid {
            path: path.clone(),
            reason,
        };
        let mut doc = match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => serde_json::Value::Object(Default::default()),
            Ok(text) => serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                serde_json::Value::Object(Default::default())
            }
            Err(e) => return Err(io(e)),
        };
        let top = doc
            .as_object_mut()
            .ok_or_else(|| invalid("it is not a JSON object".into()))?;
        let auths = top
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(Default::default()))
            .as_object_mut()
            .ok_or_else(|| invalid("\"auths\" is not an object".into()))?;
        let (result, changed) = change(auths);
        if changed {
            let mut text = serde_json::to_vec_pretty(&doc).map_err(|e| invalid(e.to_string()))?;
            text.push(b'\n');
            write_atomically(&path, &text).map_err(io)?;
        }
        Ok(result)
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

/// Replaces `path` with `data` in one step: a temporary file beside it (mode 0600, as
/// credentials deserve), synced, then renamed over it. Creates the folder (mode 0700).
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A leftover temporary file keeps its old mode: set it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename itself survives a crash once the folder is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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

/// The key `docker login` writes for a host: Docker Hub's is its historical index URL, any
/// other registry's its `host[:port]`.
pub fn config_key(host: &str) -> String {
    match key_host(host) {
        "docker.io" => DOCKER_HUB_KEY.to_string(),
        h => h.to_string(),
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

    /// Writes `{"auths":{KEY:{"auth":base64(user:password)}}}` and drops other spellings of
    /// the same host (`https://host`), which would otherwise shadow the new entry.
    fn store(&self, host: &str, credential: &Credential) -> Result<(), StoreError> {
        let want = key_host(host).to_string();
        let key = config_key(host);
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credential.username, credential.password));
        self.update_auths(|auths| {
            auths.retain(|k, _| key_host(k) != want);
            auths.insert(key, serde_json::json!({ "auth": auth }));
            ((), true)
        })
    }

    /// Removes every entry of the host, however spelled.
    fn erase(&self, host: &str) -> Result<bool, StoreError> {
        if !self.path.exists() {
            return Ok(false);
        }
        let want = key_host(host).to_string();
        self.update_auths(|auths| {
            let before = auths.len();
            auths.retain(|k, _| key_host(k) != want);
            let removed = auths.len() != before;
            (removed, removed)
        })
    }

    fn location(&self) -> Option<String> {
        Some(self.path.display().to_string())
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

    fn cred(u: &str, p: &str) -> Credential {
        Credential {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn store_writes_docker_format_and_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("new/.docker");
        let store = DockerConfig::in_dir(&conf);
        store
            .store("127.0.0.1:5000", &cred("user", "pa:ss"))
            .unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="}}})
        );

        std::fs::write(
            store.path(),
            r#"{"auths": {"https://reg.example": {"auth": "b2xkOm9sZA=="}, "keep.example": {"auth": "a2VlcDpr", "email": "x"}},
                "psFormat": "table {{.ID}}", "proxies": {"default": {"httpProxy": "http://p:3128"}}}"#,
        )
        .unwrap();
        store.store("reg.example", &cred("new", "pw")).unwrap();
        store.store("docker.io", &cred("hub", "secret")).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "table {{.ID}}");
        assert_eq!(v["proxies"]["default"]["httpProxy"], "http://p:3128");
        assert_eq!(v["auths"]["keep.example"]["email"], "x");
        assert!(
            v["auths"].get("https://reg.example").is_none(),
            "the old spelling would shadow the new entry: {v}"
        );
        assert_eq!(v["auths"][DOCKER_HUB_KEY]["auth"], "aHViOnNlY3JldA==");
        assert_eq!(store.get("reg.example"), Some(cred("new", "pw")));
        assert_eq!(store.get("docker.io"), Some(cred("hub", "secret")));
        assert_eq!(store.get("index.docker.io"), Some(cred("hub", "secret")));
        assert_eq!(
            std::fs::read_dir(&conf).unwrap().count(),
            1,
            "no temporary files left"
        );
    }

    #[test]
    fn erase_forgets_every_spelling_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = DockerConfig::in_dir(dir.path());
        assert!(
            !store.erase("docker.io").unwrap(),
            "no file: nothing to remove"
        );
        assert!(!store.path().exists(), "erasing creates nothing");
        std::fs::write(
            store.path(),
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="}, "registry-1.docker.io": {"auth": "aHViOnNlY3JldA=="}, "other": {"auth": "dTpw"}}, "x": 1}"#,
        )
        .unwrap();
        assert!(store.erase("docker.io").unwrap());
        assert_eq!(store.get("docker.io"), None);
        assert!(!store.erase("docker.io").unwrap());
        assert_eq!(store.get("other"), Some(cred("u", "p")));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(v["x"], 1);
    }

    #[test]
    fn broken_files_are_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = DockerConfig::in_dir(dir.path());
        std::fs::write(store.path(), "{not json").unwrap();
        let e = store.store("h", &cred("u", "p")).unwrap_err();
        assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("config.json"), "{e}");
        assert_eq!(std::fs::read_to_string(store.path()).unwrap(), "{not json");
        std::fs::write(store.path(), r#"{"auths": []}"#).unwrap();
        assert!(store.erase("h").is_err());
        assert!(super::Anonymous.store("h", &cred("u", "p")).is_err());
    }

    #[test]
    fn keys_like_docker_login() {
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("index.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("127.0.0.1:5000"), "127.0.0.1:5000");
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
