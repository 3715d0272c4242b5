//! API versions: routes are served unversioned and under `/v{major}.{minor}/`; a version the
//! gateway does not speak gets Docker's 400, and every answer carries Docker's headers (a
//! client negotiates down to `Api-Version`, as the docker 28 CLI does).

use crate::error::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

/// The API version served (Docker 20.10's).
pub const API_VERSION: &str = "1.41";
/// The oldest API version accepted (Docker's minimum).
pub const MIN_API_VERSION: &str = "1.12";

/// `Server: berth/<version> (linux)`.
pub fn server_header() -> String {
    format!("berth/{} (linux)", env!("CARGO_PKG_VERSION"))
}

/// `(major, minor)` of "1.41".
fn parse(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The version a path asks for and the path without it: `/v1.41/info` → `("1.41", "/info")`.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v")?;
    let slash = rest.find('/')?;
    let (v, p) = rest.split_at(slash);
    parse(v)?;
    Some((v, p))
}

/// Docker's refusal of a version out of range, or `None` when it is served.
pub fn check(v: &str) -> Option<ApiError> {
    let asked = parse(v)?;
    let too = if asked > parse(API_VERSION)? {
        format!("client version {v} is too new. Maximum supported API version is {API_VERSION}")
    } else if asked < parse(MIN_API_VERSION)? {
        format!("client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version")
    } else {
        return None;
    };
    Some(ApiError::new(StatusCode::BAD_REQUEST, too))
}

/// The middleware: strips and checks the version prefix, then stamps Docker's headers.
pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let mut refused = None;
    if let Some((v, rest)) = split(req.uri().path()) {
        refused = check(v);
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        if let Ok(uri) = format!("{rest}{query}").parse() {
            *req.uri_mut() = uri;
        }
    }
    let mut resp = match refused {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    if let Ok(v) = HeaderValue::from_str(&server_header()) {
        h.insert(http::header::SERVER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_the_path() {
        assert_eq!(split("/v1.41/info"), Some(("1.41", "/info")));
        assert_eq!(
            split("/v1.24/images/a/b:1/json"),
            Some(("1.24", "/images/a/b:1/json"))
        );
        assert_eq!(split("/version"), None);
        assert_eq!(split("/vx.1/info"), None);
    }

    #[test]
    fn out_of_range_versions_are_refused_as_docker_does() {
        assert!(check("1.41").is_none());
        assert!(check("1.12").is_none());
        assert!(check("1.9").unwrap().message.contains("too old"));
        assert_eq!(
            check("1.99").unwrap().message,
            "client version 1.99 is too new. Maximum supported API version is 1.41"
        );
        assert_eq!(check("2.0").unwrap().status, StatusCode::BAD_REQUEST);
    }
}
