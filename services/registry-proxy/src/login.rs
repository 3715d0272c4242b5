//! `berth login`: which registry a name means, and whether credentials work there.
//!
//! A login is checked the way Docker checks one: `GET /v2/` on the registry itself (never a
//! mirror), answering its challenge with the credentials — sent as Basic, or traded for a
//! token at the Bearer realm. Nothing is cached: the check neither uses nor leaves tokens.

use crate::client::{
    basic, challenges_of, check_status, fetch_token, request, Call, RegistryClient,
};
use crate::credentials::Credential;
use crate::error::Error;
use reqwest::{Method, StatusCode, Url};

/// What a successful [`RegistryClient::check_login`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCheck {
    /// The registry took the credentials.
    Accepted,
    /// The registry asks for no credentials at `/v2/`, so they could not be checked.
    NotAsked,
}

/// The registry a `berth login` argument names, as credentials are keyed: `docker.io` for
/// Docker Hub (also the empty name, `index.docker.io` and `https://index.docker.io/v1/`),
/// else `host[:port]` without scheme or path.
pub fn login_host(name: &str) -> Result<String, Error> {
    let name = name.trim();
    let bare = name
        .strip_prefix("https://")
        .or_else(|| name.strip_prefix("http://"))
        .unwrap_or(name);
    let host = bare.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Ok("docker.io".to_string());
    }
    let invalid = || {
        Error::InvalidRequest(format!(
            "{name:?} is not a registry; give its host[:port], e.g. registry.example.com:5000"
        ))
    };
    let url = Url::parse(&format!("https://{host}/")).map_err(|_| invalid())?;
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid());
    }
    let host = host.to_ascii_lowercase();
    Ok(match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    })
}

impl RegistryClient {
    /// Checks `credential` against the registry: [`Error::LoginFailed`] when it refuses them.
    pub async fn check_login(&self, credential: &Credential) -> Result<LoginCheck, Error> {
        self.across_upstream(|ep| async move {
            let subject = format!("the login to {}", ep.login_host);
            let root = Call::new(Method::GET, ep.api_url(""));
            let refused = |detail: String| Error::LoginFailed {
                host: ep.login_host.clone(),
                detail,
            };
            let resp = request(&ep, &root, None).await?;
            if resp.status().is_success() {
                return Ok(LoginCheck::NotAsked);
            }
            if resp.status() != StatusCode::UNAUTHORIZED {
                // Not about credentials at all (404: not a registry, 5xx: broken): an error.
                return check_status(resp, &ep, &subject, false)
                    .await
                    .map(|_| LoginCheck::NotAsked);
            }
            let challenges = challenges_of(&resp);
            let authorization = if let Some(bearer) = challenges
                .iter()
                .find(|c| c.scheme == "bearer" && c.param("realm").is_some())
            {
                // No scope: the token only proves the account.
                match fetch_token(&ep, bearer, "", Some(credential)).await {
                    Ok((token, _)) => format!("Bearer {token}"),
                    Err(
                        Error::BadCredentials { detail, .. } | Error::Unauthorized { detail, .. },
                    ) => return Err(refused(detail)),
                    Err(e) => return Err(e),
                }
            } else if challenges.iter().any(|c| c.scheme == "basic") {
                basic(credential)
            } else {
                return Err(Error::InvalidResponse {
                    subject,
                    host: ep.name.clone(),
                    reason: format!(
                        "it asks for {} authentication, which berth does not speak",
                        challenges
                            .first()
                            .map(|c| c.scheme.as_str())
                            .unwrap_or("an unnamed kind of")
                    ),
                });
            };
            let resp = request(&ep, &root, Some(&authorization)).await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Err(refused(crate::client::error_detail(resp).await));
            }
            check_status(resp, &ep, &subject, true).await?;
            Ok(LoginCheck::Accepted)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_registries_like_docker_login() {
        for hub in [
            "",
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
            "registry-1.docker.io",
        ] {
            assert_eq!(login_host(hub).unwrap(), "docker.io", "{hub:?}");
        }
        assert_eq!(login_host("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(
            login_host("https://Reg.Example:5000/v2/").unwrap(),
            "reg.example:5000"
        );
        assert_eq!(login_host("http://[::1]:5000").unwrap(), "[::1]:5000");
        assert!(login_host("user@reg.example").is_err());
        assert!(login_host("reg example").is_err());
    }
}
