//! Registry authentication: `WWW-Authenticate` challenges, the Bearer token answer, and a
//! cache of `Authorization` values per registry and scope.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`, lowercase.
    pub scheme: String,
    /// Parameter names lowercased: `realm`, `service`, `scope`, `error`.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): one or more challenges, each a scheme and
/// comma-separated `name=value` or `name="quoted \" value"` parameters.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim_start();
    while !rest.is_empty() {
        let (word, after) = take_token(rest);
        if word.is_empty() {
            // Not a token: skip one character (a stray comma) and go on.
            rest = after.get(1..).unwrap_or("").trim_start();
            continue;
        }
        let after_ws = after.trim_start();
        if let Some(value_part) = after_ws.strip_prefix('=') {
            // A parameter of the current challenge.
            let (value, next) = take_value(value_part.trim_start());
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
            rest = next.trim_start();
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            rest = after_ws;
        }
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    out
}

fn take_token(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn take_value(s: &str) -> (String, &str) {
    if let Some(q) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = q.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => return (value, &q[i + 1..]),
                _ => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find(',').unwrap_or(s.len());
        (s[..end].trim().to_string(), &s[end..])
    }
}

/// The answer of a token endpoint (Docker's token spec; OAuth2 servers say `access_token`).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn token(&self) -> Option<&str> {
        self.token
            .as_deref()
            .filter(|t| !t.is_empty())
            .or(self.access_token.as_deref().filter(|t| !t.is_empty()))
    }
    /// How long to use the token: its `expires_in` (60 s when absent, as the spec says),
    /// less a margin so a request never goes out with a token about to expire.
    pub fn lifetime(&self) -> Duration {
        let secs = self.expires_in.unwrap_or(60).max(10);
        Duration::from_secs(secs - secs / 10)
    }
}

/// `Authorization` values that worked, per (registry base URL, scope): requests after the
/// first go out authorized and skip the 401 round trip.
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    entries: Mutex<HashMap<(String, String), Cached>>,
}

/// An `Authorization` value, and when it stops being good (never, for Basic).
type Cached = (String, Option<Instant>);

impl AuthCache {
    pub fn get(&self, base: &str, scope: &str) -> Option<String> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (base.to_string(), scope.to_string());
        match entries.get(&key) {
            Some((_, Some(expiry))) if *expiry <= Instant::now() => {
                entries.remove(&key);
                None
            }
            Some((value, _)) => Some(value.clone()),
            None => None,
        }
    }

    pub fn put(&self, base: &str, scope: &str, value: String, lifetime: Option<Duration>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(
            (base.to_string(), scope.to_string()),
            (value, lifetime.map(|l| Instant::now() + l)),
        );
    }

    pub fn forget(&self, base: &str, scope: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&(base.to_string(), scope.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));
    }

    #[test]
    fn parses_basic_and_odd_spacing() {
        let c = parse_challenges(r#"Basic realm="basic-realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("basic-realm"));

        let c = parse_challenges(
            r#"bearer  Realm = "https://r/t" , service=reg , error="insufficient_scope", scope="a:b:pull,push""#,
        );
        assert_eq!(c[0].param("realm"), Some("https://r/t"));
        assert_eq!(c[0].param("service"), Some("reg"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        assert_eq!(c[0].param("scope"), Some("a:b:pull,push"));
    }

    #[test]
    fn parses_several_challenges_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="a \"quoted\" realm", Bearer realm="https://t",service="s""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("service"), Some("s"));
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Negotiate")[0].scheme, "negotiate");
    }

    #[test]
    fn tokens_expire() {
        let cache = AuthCache::default();
        cache.put("https://r", "s", "Bearer a".into(), Some(Duration::ZERO));
        assert_eq!(cache.get("https://r", "s"), None);
        cache.put(
            "https://r",
            "s",
            "Bearer b".into(),
            Some(Duration::from_secs(60)),
        );
        assert_eq!(cache.get("https://r", "s").as_deref(), Some("Bearer b"));
        assert_eq!(cache.get("https://r", "other"), None);
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"x","expires_in":300}"#).unwrap();
        assert_eq!(t.token(), Some("x"));
        assert_eq!(t.lifetime(), Duration::from_secs(270));
    }
}
