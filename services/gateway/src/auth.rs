//! `POST /auth` (`docker login`): the registry service's Login, which checks the credentials
//! against the registry and stores them; and `X-Registry-Auth`, the credentials Docker's
//! clients send with a pull or push (base64url JSON).

use crate::error::{json_body, ApiError};
use crate::Services;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use berth_api::registry::v1 as reg;
use berth_api::registry::v1::registry_client::RegistryClient;
use berth_api::types::v1::RegistryAuth;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

/// Docker's AuthConfig: the body of `/auth` and the JSON inside `X-Registry-Auth`.
#[derive(Debug, Default, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default, alias = "serveraddress")]
    pub server_address: String,
    #[serde(default, alias = "identitytoken")]
    pub identity_token: String,
}

/// The credentials of `X-Registry-Auth` for the image service's Pull and Push, `None` when
/// absent or empty (`{}`); a header that is not base64 JSON is Docker's 400.
pub fn registry_auth(headers: &HeaderMap) -> Result<Option<RegistryAuth>, ApiError> {
    let Some(v) = headers.get("x-registry-auth") else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(None);
    }
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let json = engines
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or_else(|| ApiError::bad_parameter("X-Registry-Auth is not base64"))?;
    let auth: AuthConfig = serde_json::from_slice(&json)
        .map_err(|e| ApiError::bad_parameter(format!("X-Registry-Auth: {e}")))?;
    let empty = auth.username.is_empty() && auth.identity_token.is_empty();
    Ok((!empty).then_some(RegistryAuth {
        username: auth.username,
        password: auth.password,
        identity_token: auth.identity_token,
    }))
}

/// `POST /auth`: `{"Status":"Login Succeeded","IdentityToken":""}`, or 401 with the
/// registry's refusal.
pub async fn login(
    State(s): State<Services>,
    crate::request::Json(auth): crate::request::Json<AuthConfig>,
) -> Result<Response, ApiError> {
    let registry = match auth.server_address.as_str() {
        "" => "docker.io".to_string(),
        a => registry_host(a),
    };
    RegistryClient::new(s.registry.clone())
        .login(s.req(reg::LoginRequest {
            registry,
            username: auth.username,
            password: auth.password,
        }))
        .await
        .map_err(|e| match e.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                ApiError::new(StatusCode::UNAUTHORIZED, e.message())
            }
            _ => ApiError::from(e),
        })?;
    let answer = serde_json::json!({ "Status": "Login Succeeded", "IdentityToken": "" });
    Ok(json_body(&answer).into_response())
}

/// The registry's host of a server address as Docker's clients send it
/// (`https://index.docker.io/v1/`, `http://r:5000`, `r:5000`).
fn registry_host(address: &str) -> String {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_headers() {
        let mut h = HeaderMap::new();
        assert!(registry_auth(&h).unwrap().is_none());
        h.insert("x-registry-auth", "e30=".parse().unwrap());
        assert!(registry_auth(&h).unwrap().is_none(), "{{}} is none");
        let json = r#"{"username":"u","password":"p","serveraddress":"r:5000"}"#;
        let v = base64::engine::general_purpose::URL_SAFE.encode(json);
        h.insert("x-registry-auth", v.parse().unwrap());
        let a = registry_auth(&h).unwrap().unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        h.insert("x-registry-auth", "%%%".parse().unwrap());
        assert_eq!(registry_auth(&h).unwrap_err().status, 400);
    }

    #[test]
    fn server_addresses() {
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_host("http://r:5000"), "r:5000");
        assert_eq!(registry_host("r:5000"), "r:5000");
    }
}

#[cfg(test)]
mod body_tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    /// Bodies the gateway refuses before reaching any service: Docker's 400 JSON.
    #[tokio::test]
    async fn unreadable_bodies_are_400() {
        let services = crate::tests::nowhere();
        let huge = vec![b' '; 3 << 20];
        for (uri, body) in [
            ("/v1.41/auth", b"{bad".to_vec()),
            ("/v1.41/auth", huge.clone()),
            ("/v1.41/commit?container=c", huge),
            ("/v1.41/commit?container=c", b"[1,".to_vec()),
            ("/v1.41/build?pull=1", Vec::new()),
            (
                "/v1.41/images/create?fromImage=UPPER%2FCase&tag=%3Abad",
                Vec::new(),
            ),
            (
                "/v1.41/images/create?fromSrc=http%3A%2F%2Fx%2Fa.tar",
                Vec::new(),
            ),
            ("/v1.41/images/create?fromSrc=-&repo=Bad", Vec::new()),
            (
                "/v1.41/images/prune?filters=%7B%22until%22%3A%5B%221h%22%5D%7D",
                Vec::new(),
            ),
        ] {
            let req = http::Request::builder()
                .method("POST")
                .uri(uri)
                .body(Body::from(body))
                .unwrap();
            let resp = crate::router(services.clone()).oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            assert_eq!(status, 400, "{uri}: {}", String::from_utf8_lossy(&body));
            assert!(body.starts_with(br#"{"message":"#), "{uri}");
        }
    }
}
