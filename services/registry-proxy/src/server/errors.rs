//! Errors as the distribution spec writes them: a status and
//! `{"errors":[{"code","message","detail"}]}`.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// One failed request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The spec's code: `BLOB_UNKNOWN`, `MANIFEST_INVALID`, …
    pub code: &'static str,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra headers (`WWW-Authenticate`, `Range`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: &str) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn blob_unknown(digest: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        )
        .detail(serde_json::json!({ "digest": digest }))
    }

    pub fn manifest_unknown(reference: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        )
        .detail(serde_json::json!({ "reference": reference }))
    }

    pub fn name_unknown(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        )
        .detail(serde_json::json!({ "name": name }))
    }

    pub fn upload_unknown(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
        )
        .detail(serde_json::json!({ "id": id }))
    }

    pub fn digest_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }

    pub fn manifest_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message)
    }

    pub fn unsupported(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
    }

    /// The proxy's own store failed: logged here, since the client only sees a 500.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "{what}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("{what}: {e}"),
        )
    }
}

impl From<sled::Error> for ApiError {
    fn from(e: sled::Error) -> ApiError {
        ApiError::internal("the registry's metadata", e)
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        ApiError::internal("the registry's store", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut entry = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(d) = self.detail {
            entry["detail"] = d;
        }
        let body = serde_json::json!({ "errors": [entry] }).to_string();
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response();
        for (k, v) in self.headers {
            r.headers_mut().append(k, v);
        }
        r
    }
}

/// An upstream failure met while serving as a mirror, as the client of the mirror should
/// see it: not found stays not found, everything else is the mirror's failure to help (a
/// client then falls back to the upstream registry itself).
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        use crate::Error as E;
        let message = e.to_string();
        match e {
            E::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message),
            E::InvalidReference(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", message)
            }
            E::InvalidDigest(_) => ApiError::digest_invalid(message),
            E::TooManyRequests { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
            }
            E::Unauthorized { .. } | E::BadCredentials { .. } | E::Denied { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "DENIED", message)
            }
            E::Store(_) => ApiError::internal("the registry-proxy's cache", message),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, "UNKNOWN", message),
        }
    }
}
