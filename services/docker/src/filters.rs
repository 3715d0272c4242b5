//! Filters of Docker's listings (`ps`, `network ls`, `volume ls`, …): the same key ORs,
//! different keys AND. The CLI gives them as `-f KEY=VALUE` ([`Filters::parse`]), the Engine
//! API as a JSON object ([`Filters::from_json`], [`json_pairs`]).

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, PartialEq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `KEY=VALUE` filters; `check` refuses keys and values the listing does not know.
    pub fn parse(
        filters: &[String],
        check: impl Fn(&str, &str) -> Result<(), String>,
    ) -> Result<Filters, String> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in filters {
            let Some((k, v)) = f.split_once('=') else {
                return Err(format!("bad format of filter (expected name=value): {f}"));
            };
            check(k, v)?;
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(Filters(m))
    }

    /// Docker's `filters` query parameter (see [`json_pairs`]), with `check` refusing keys
    /// and values as in [`Filters::parse`].
    pub fn from_json(
        filters: &str,
        check: impl Fn(&str, &str) -> Result<(), String>,
    ) -> Result<Filters, String> {
        Filters::parse(&json_pairs(filters)?, check)
    }

    /// The values given for `key`.
    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether a filter on `key` is given.
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Whether an object passes: `test(key, value)` says whether it matches one filter.
    pub fn matches(&self, test: impl Fn(&str, &str) -> bool) -> bool {
        self.0.iter().all(|(k, vs)| {
            let t = |v: &String| test(k.as_str(), v.as_str());
            // Labels are the exception, as in Docker (`MatchKVList`): every one given must
            // match (docker-compose finds a project's service by two labels at once).
            if k == "label" {
                vs.iter().all(t)
            } else {
                vs.iter().any(t)
            }
        })
    }
}

/// The `KEY=VALUE` pairs of the Docker API's `filters` JSON: `{"key":{"value":true}}`, or
/// `{"key":["value"]}` from old clients; empty or absent gives none. The error reads as
/// Docker's.
pub fn json_pairs(filters: &str) -> Result<Vec<String>, String> {
    if filters.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value =
        serde_json::from_str(filters).map_err(|e| format!("invalid filters {filters:?}: {e}"))?;
    let Some(o) = v.as_object() else {
        return Err(format!("invalid filters {filters:?}: not a JSON object"));
    };
    let mut out = Vec::new();
    for (key, values) in o {
        match values {
            serde_json::Value::Object(m) => out.extend(m.keys().map(|v| format!("{key}={v}"))),
            serde_json::Value::Array(a) => {
                for v in a {
                    let v = v
                        .as_str()
                        .ok_or_else(|| format!("invalid filter '{key}': values must be strings"))?;
                    out.push(format!("{key}={v}"));
                }
            }
            _ => return Err(format!("invalid filter '{key}'")),
        }
    }
    Ok(out)
}

/// A `name=PATTERN` filter, as Docker's: the pattern is a regular expression searched in
/// the name (Docker's container names start with `/`, so `^/web$` and `^web$` both work);
/// an invalid expression matches as plain text.
pub fn name_matches(name: &str, pattern: &str) -> bool {
    let bare = name.trim_start_matches('/');
    let slashed = format!("/{bare}");
    match regex::Regex::new(pattern) {
        Ok(re) => re.is_match(bare) || re.is_match(&slashed),
        Err(_) => bare.contains(pattern.trim_start_matches('/')),
    }
}

/// A `label=KEY` or `label=KEY=VALUE` filter against an object's labels.
pub fn label_matches(labels: &HashMap<String, String>, v: &str) -> bool {
    match v.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_json_becomes_pairs() {
        assert_eq!(
            json_pairs(r#"{"label":{"a=b":true},"name":["x","y"]}"#).unwrap(),
            ["label=a=b", "name=x", "name=y"]
        );
        assert!(json_pairs("").unwrap().is_empty());
        assert!(json_pairs("[").is_err());
        assert!(json_pairs(r#"{"a":1}"#).is_err());
    }

    #[test]
    fn every_label_must_match() {
        let f = Filters::parse(&["label=a=1".into(), "label=b".into()], |_, _| Ok(())).unwrap();
        let labels: HashMap<String, String> =
            [("a".to_string(), "1".to_string())].into_iter().collect();
        assert!(!f.matches(|k, v| k == "label" && label_matches(&labels, v)));
        let both: HashMap<String, String> = [("a", "1"), ("b", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(f.matches(|k, v| k == "label" && label_matches(&both, v)));
    }

    #[test]
    fn same_keys_or_different_keys_and() {
        let f = Filters::parse(
            &["a=1".into(), "a=2".into(), "b=x".into()],
            |k, _| match k {
                "a" | "b" => Ok(()),
                _ => Err(format!("invalid filter '{k}'")),
            },
        )
        .unwrap();
        assert!(f.has("a") && !f.has("c"));
        let obj = |a: &str, b: &str| f.matches(|k, v| if k == "a" { v == a } else { v == b });
        assert!(obj("1", "x") && obj("2", "x"));
        assert!(!obj("3", "x") && !obj("1", "y"));
        assert!(Filters::parse(&["c=1".into()], |_, _| Err("no".into())).is_err());
        assert!(Filters::parse(&["nonsense".into()], |_, _| Ok(())).is_err());
        let labels = [("tier".to_string(), "web".to_string())].into();
        assert!(label_matches(&labels, "tier"));
        assert!(label_matches(&labels, "tier=web"));
        assert!(!label_matches(&labels, "tier=db"));
        assert!(!label_matches(&labels, "zone"));
        assert!(name_matches("front", "^front$") && name_matches("front", "ron"));
        assert!(name_matches("web", "^/web$") && name_matches("/web", "^web$"));
        assert!(!name_matches("front2", "^front$"));
        assert!(
            name_matches("a(b", "a(b"),
            "an invalid pattern matches as text"
        );
    }

    #[test]
    fn the_apis_json_filters() {
        let ok = |_: &str, _: &str| Ok(());
        let a = Filters::from_json(
            r#"{"status":["exited","created"],"label":{"a=b":true}}"#,
            ok,
        )
        .unwrap();
        let b = Filters::parse(
            &[
                "status=exited".into(),
                "status=created".into(),
                "label=a=b".into(),
            ],
            ok,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.values("status"), ["exited", "created"]);
        assert_eq!(Filters::from_json("", ok).unwrap(), Filters::default());
        assert!(Filters::from_json("[1]", ok).is_err());
        assert!(Filters::from_json(r#"{"status":[1]}"#, ok).is_err());
        assert!(Filters::from_json(r#"{"x":["1"]}"#, |k, _| Err(format!(
            "invalid filter '{k}'"
        )))
        .is_err());
    }
}
