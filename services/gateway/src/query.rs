//! A query whose keys may repeat (`t=a&t=b` of `/build`, `changes=…` of `/commit`,
//! `names=…` of `/images/get`), which axum's `Query` cannot keep.

use crate::error::ApiError;
use std::collections::HashMap;

/// The pairs of a raw query, in order.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

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
        matches!(self.get(k), "1" | "true" | "True" | "TRUE")
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
