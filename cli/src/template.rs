//! `-f/--format` templates: Go template syntax (gtmpl) over the Docker-shaped JSON of
//! inspect, with Docker's extra functions (`json`, `join`, `upper`, `lower`, `split`).

use gtmpl::{Context, Template};
use gtmpl_value::{FuncError, Number, Value};
use std::collections::HashMap;

/// Converts inspect JSON into a template value.
pub fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(Number::from(i))
            } else if let Some(u) = n.as_u64() {
                Value::Number(Number::from(u))
            } else {
                Value::Number(Number::from(n.as_f64().unwrap_or(0.0)))
            }
        }
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// Back to JSON, for `{{json …}}` (object keys come out sorted).
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            }
        }
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Compact JSON, like Go's json.Marshal.
fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = one("json", args)?;
    Ok(Value::String(
        serde_json::to_string(&to_json(v)).map_err(|e| FuncError::Generic(e.to_string()))?,
    ))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let [list, sep] = args else {
        return Err(FuncError::ExactlyXArgs("join".into(), 2));
    };
    let items: Vec<String> = match list {
        Value::Array(a) => a.iter().map(text).collect(),
        Value::Nil | Value::NoValue => Vec::new(),
        other => vec![text(other)],
    };
    Ok(Value::String(items.join(&text(sep))))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let [s, sep] = args else {
        return Err(FuncError::ExactlyXArgs("split".into(), 2));
    };
    Ok(Value::Array(
        text(s)
            .split(text(sep).as_str())
            .map(|p| Value::String(p.to_string()))
            .collect(),
    ))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(one("upper", args)?).to_uppercase()))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(one("lower", args)?).to_lowercase()))
}

/// A parsed `--format` template.
pub struct Format(Template);

impl std::fmt::Debug for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Format")
    }
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut t = Template::default();
        t.add_func("json", json);
        t.add_func("join", join);
        t.add_func("split", split);
        t.add_func("upper", upper);
        t.add_func("lower", lower);
        t.parse(s)
            .map_err(|e| format!("template parsing error: {e}"))?;
        Ok(Format(t))
    }

    /// Renders one object (without the newline Docker adds after each).
    pub fn render(&self, v: &serde_json::Value) -> Result<String, String> {
        self.0
            .render(&Context::from(to_value(v)))
            .map_err(|e| format!("template: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: serde_json::Value) -> String {
        Format::parse(t).unwrap().render(&v).unwrap()
    }

    #[test]
    fn fields() {
        let v = json!({"Name": "/web", "State": {"Status": "running", "Pid": 42, "Running": true}});
        assert_eq!(r("{{.State.Status}}", v.clone()), "running");
        assert_eq!(r("{{.Name}}", v.clone()), "/web");
        assert_eq!(r("{{.State.Pid}}", v.clone()), "42");
        assert_eq!(r("{{.State.Running}}", v.clone()), "true");
        assert_eq!(r("{{.Name}} is {{.State.Status}}", v), "/web is running");
    }

    #[test]
    fn json_is_compact() {
        let v = json!({"RootFS": {"Layers": ["sha256:a", "sha256:b"]}, "C": {"b": 1, "a": [true, null]}});
        assert_eq!(
            r("{{json .RootFS.Layers}}", v.clone()),
            r#"["sha256:a","sha256:b"]"#
        );
        assert_eq!(r("{{json .C}}", v), r#"{"a":[true,null],"b":1}"#);
    }

    #[test]
    fn ranges() {
        let v = json!({"Mounts": [{"Destination": "/a"}, {"Destination": "/b"}],
                       "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "10.88.0.2"}}},
                       "Empty": {}});
        assert_eq!(
            r("{{range .Mounts}}{{.Destination}} {{end}}", v.clone()),
            "/a /b "
        );
        assert_eq!(
            r(
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                v.clone()
            ),
            "10.88.0.2"
        );
        assert_eq!(r("{{range .Empty}}x{{end}}", v), "");
    }

    #[test]
    fn docker_functions() {
        let v = json!({"Args": ["-c", "echo hi"], "Name": "Web"});
        assert_eq!(r("{{join .Args \",\"}}", v.clone()), "-c,echo hi");
        assert_eq!(r("{{upper .Name}} {{lower .Name}}", v), "WEB web");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Format::parse("{{.State.Status").is_err());
        assert!(Format::parse("{{nosuchfunc .X}}").is_err());
    }
}
