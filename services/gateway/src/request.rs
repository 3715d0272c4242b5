//! How the gateway reads Docker's requests, the one way every handler uses: each extractor
//! here refuses what it cannot read with Docker's 400 `{"message": …}` ([`ApiError`]), never
//! with axum's plain-text rejection.
//!
//! - [`Path`] and [`Query`]: a path parameter and a query deserialized into a type.
//! - [`Params`]: a raw query whose keys may repeat (`t=a&t=b` of `/build`, `changes=…` of
//!   `/commit`, `names=…` of `/images/get`), which [`Query`] cannot keep.
//! - [`Filters`]: Docker's `filters` JSON query, as `KEY=VALUE` pairs or its JSON text.
//! - [`Json`]: a JSON body; an empty one is the type's default (Docker's clients send none
//!   for "no options"), a malformed one or one of the wrong shape is a 400, and so is one over
//!   [`BODY_LIMIT`] (Docker reads any size and refuses what does not parse, a 400).
//! - [`take_json`]: the same for a handler that keeps the request itself (exec's start, which
//!   hijacks the connection afterwards).

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// The largest JSON body the gateway reads (axum's default limit): Docker's JSON bodies are
/// configs of a few kilobytes.
pub const BODY_LIMIT: usize = 2 << 20;

/// A path parameter (or a tuple of them); one that is not UTF-8 is a 400.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| Path(p))
            .map_err(|e| ApiError::bad_parameter(e.body_text()))
    }
}

/// A query deserialized into `T`; a value of the wrong type is a 400.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|e| ApiError::bad_parameter(e.body_text()))
    }
}

/// The pairs of a raw query, in order.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Params::parse(parts.uri.query()))
    }
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value of `k`, "" when absent.
    pub fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Every non-empty value of `k`, in order.
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, v)| key == k && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Docker's truthy values ("1", "true", "True").
    pub fn truthy(&self, k: &str) -> bool {
        truthy_text(self.get(k))
    }

    /// A JSON object of strings (`buildargs`, `labels`); a null value (Docker's "take it
    /// from the environment", which the daemon has not) is left out.
    pub fn string_map(&self, k: &str) -> Result<HashMap<String, String>, ApiError> {
        match self.get(k) {
            "" | "null" => Ok(HashMap::new()),
            text => {
                let m: HashMap<String, Option<String>> = serde_json::from_str(text)
                    .map_err(|e| ApiError::bad_parameter(format!("{k}: {e}")))?;
                Ok(m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
            }
        }
    }
}

/// Docker's truthy query values ("1", "true", "True").
pub fn truthy(v: &Option<String>) -> bool {
    truthy_text(v.as_deref().unwrap_or(""))
}

fn truthy_text(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE")
}

/// Docker's `filters` query: its JSON text ("" when absent), read by [`Filters::pairs`] or
/// by a view of berth-docker that parses the JSON itself.
#[derive(Debug, Default)]
pub struct Filters {
    pub json: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Filters {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let json = Params::parse(parts.uri.query()).get("filters").to_string();
        Ok(Filters { json })
    }
}

impl Filters {
    /// The filters as `KEY=VALUE` pairs; JSON that is not Docker's filters is a 400.
    pub fn pairs(&self) -> Result<Vec<String>, ApiError> {
        filter_pairs(&self.json)
    }
}

/// A `filters` JSON text as `KEY=VALUE` pairs; "" is none.
pub fn filter_pairs(filters: &str) -> Result<Vec<String>, ApiError> {
    berth_docker::filters::json_pairs(filters).map_err(ApiError::bad_parameter)
}

/// A JSON body read Docker's way (see the module's overview).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let body = read_body(req.into_body()).await?;
        json(&body).map(Json)
    }
}

/// The JSON body of `req`, taken out of it, for a handler that keeps the request.
pub async fn take_json<T: DeserializeOwned + Default>(req: &mut Request) -> Result<T, ApiError> {
    let body = read_body(std::mem::take(req.body_mut())).await?;
    json(&body)
}

async fn read_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        ApiError::bad_parameter(format!(
            "cannot read the request body (at most {} MiB of JSON): {e}",
            BODY_LIMIT >> 20
        ))
    })
}

/// `body` as JSON: blank is `T`'s default, anything that does not parse into `T` a 400.
pub fn json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_parameter(format!("invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn repeated_keys_are_kept() {
        let p = Params::parse(Some(
            "t=a&t=&t=b&q=1&m=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D",
        ));
        assert_eq!(p.all("t"), vec!["a", "b"]);
        assert!(p.truthy("q") && !p.truthy("x"));
        assert_eq!(p.string_map("m").unwrap().len(), 1);
        assert_eq!(p.get("t"), "b");
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    struct Body {
        name: String,
    }

    #[test]
    fn json_bodies_blank_malformed_and_of_the_wrong_shape() {
        assert_eq!(json::<Body>(b"").unwrap().name, "");
        assert_eq!(json::<Body>(b" \n").unwrap().name, "");
        assert_eq!(json::<Body>(br#"{"Name":"a"}"#).unwrap().name, "a");
        for bad in [&b"{nope"[..], br#"{"Name":5}"#, b"[1,"] {
            let e = json::<Body>(bad).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.starts_with("invalid JSON: "), "{}", e.message);
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_400() {
        let huge = axum::body::Body::from(vec![b' '; BODY_LIMIT + 1]);
        let req = Request::builder().body(huge).unwrap();
        let e = Json::<Body>::from_request(req, &()).await.unwrap_err();
        assert_eq!(e.status, 400);
    }
}
