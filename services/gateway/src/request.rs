//! What the handlers read from Docker's requests: JSON bodies, `filters` queries and path
//! parameters, each refused with Docker's 400 when it does not parse.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use serde::Deserialize;

/// A body as axum read it: one it could not (too large, cut off) is a 400 in Docker's JSON.
pub fn read_body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| ApiError::bad_parameter(format!("cannot read the request body: {e}")))
}

/// A body Docker's clients send as JSON, read with Docker's 400 for what does not parse.
pub fn json_request<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}").map_err(|e| ApiError::bad_parameter(e.to_string()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_parameter(format!("invalid JSON: {e}")))
}

/// A request with Docker's `filters` JSON.
#[derive(Debug, Deserialize)]
pub struct FiltersQuery {
    pub filters: Option<String>,
}

/// The `filters` query as `KEY=VALUE` pairs.
pub fn filter_pairs(
    q: Result<Query<FiltersQuery>, QueryRejection>,
) -> Result<Vec<String>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    berth_docker::filters::json_pairs(q.filters.as_deref().unwrap_or(""))
        .map_err(ApiError::bad_parameter)
}

/// A path parameter; one that is not UTF-8 is a 400.
pub fn path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_parameter(e.to_string()))
}
