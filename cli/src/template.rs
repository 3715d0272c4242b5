//! `-f/--format` templates: Go template syntax (gtmpl) over the Docker-shaped JSON of
//! inspect, with Docker's extra functions (`json`, `join`, `upper`, `lower`, `split`).
//!
//! gtmpl ranges over a map in hash order, and fails on nil where Go does nothing; Go ranges
//! over a map in key order. So every `range` is rewritten before parsing to range over
//! `__values` of its pipeline (a map's values in key order, an array as it is, nil as empty),
//! its key variable, if any, taken from `__keys` of the same pipeline.

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

/// A map's keys in order.
fn sorted_keys(m: &HashMap<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    keys
}

/// The values of a map in key order, an array as it is, nothing for nil: what `range` visits.
fn values(args: &[Value]) -> Result<Value, FuncError> {
    match one("__values", args)? {
        Value::Map(m) | Value::Object(m) => Ok(Value::Array(
            sorted_keys(m).into_iter().map(|k| m[k].clone()).collect(),
        )),
        Value::Array(a) => Ok(Value::Array(a.clone())),
        Value::Nil | Value::NoValue => Ok(Value::Array(Vec::new())),
        other => Err(FuncError::Generic(format!(
            "range can't iterate over {other}"
        ))),
    }
}

/// The keys `range` gives with `$k, $v :=`: a map's keys in order, an array's indexes.
fn keys(args: &[Value]) -> Result<Value, FuncError> {
    match one("__keys", args)? {
        Value::Map(m) | Value::Object(m) => Ok(Value::Array(
            sorted_keys(m)
                .into_iter()
                .map(|k| Value::String(k.clone()))
                .collect(),
        )),
        Value::Array(a) => Ok(Value::Array((0..a.len()).map(Value::from).collect())),
        _ => Ok(Value::Array(Vec::new())),
    }
}

/// Where the action that starts at `from` (just after its `{{`) ends: the index of its `}}`.
/// Strings, raw strings, characters and comments may hold `}}`. An action never closed is an
/// error (as in Go), and so is a non-ASCII character outside its strings and comments (Go
/// reads Unicode letters in names; Docker's fields have none): gtmpl's lexer loops forever on
/// some unclosed actions (`{{ -` at the end) and panics on a non-ASCII letter, so neither may
/// reach it.
fn action_end(t: &str, from: usize) -> Result<usize, String> {
    let unclosed = || "unclosed action".to_string();
    let b = t.as_bytes();
    let mut i = from;
    let rest = t[from..].trim_start_matches(['-', ' ']);
    if rest.starts_with("/*") {
        let start = t.len() - rest.len();
        let close = t[start..].find("*/").ok_or_else(unclosed)? + start + 2;
        return t[close..]
            .find("}}")
            .map(|j| j + close)
            .ok_or_else(unclosed);
    }
    while i + 1 < b.len() {
        match b[i] {
            b'}' if b[i + 1] == b'}' => return Ok(i),
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => i += t[i + 1..].find('`').ok_or_else(unclosed)? + 1,
            c if !c.is_ascii() => {
                let c = t[i..].chars().next().unwrap_or_default();
                return Err(format!("character {c:?} outside a string in an action"));
            }
            _ => {}
        }
        i += 1;
    }
    Err(unclosed())
}

/// A variable's name at the start of `s` (`$`, `$x`, `$__k1`) and the rest.
fn variable(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('$')?;
    let n = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some((&s[..n + 1], &rest[n..]))
}

/// The parts of a range action's text after `range`: (key variable, value variable, pipeline).
fn range_parts(s: &str) -> (Option<&str>, Option<&str>, &str) {
    let decl = (|| {
        let (a, rest) = variable(s.trim_start())?;
        let rest = rest.trim_start();
        if let Some(rest) = rest.strip_prefix(',') {
            let (b, rest) = variable(rest.trim_start())?;
            let pipe = rest.trim_start().strip_prefix(":=")?;
            return Some((Some(a), Some(b), pipe));
        }
        let pipe = rest.strip_prefix(":=")?;
        Some((None, Some(a), pipe))
    })();
    decl.unwrap_or((None, None, s))
}

/// A piece of a template: text, or an action (`{{…}}`) with its trim markers and its words.
enum Piece<'a> {
    Text(&'a str),
    Action {
        raw: &'a str,
        left: &'a str,
        right: &'a str,
        text: &'a str,
    },
}

impl Piece<'_> {
    /// The keyword an action starts with (`range`, `end`, …), if any.
    fn keyword(&self) -> &str {
        match self {
            Piece::Action { text, .. } => text.split_whitespace().next().unwrap_or_default(),
            Piece::Text(_) => "",
        }
    }
}

/// The pieces of a template; an action that gtmpl cannot read is an error (see action_end).
fn pieces(t: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(open) = t[pos..].find("{{").map(|i| i + pos) {
        let close = action_end(t, open + 2)?;
        let body = &t[open + 2..close];
        // Trim markers: a dash with any white space on its inner side, as Go's.
        let b = body.as_bytes();
        let left = if b.len() >= 2 && b[0] == b'-' && b[1].is_ascii_whitespace() {
            &body[..2]
        } else {
            ""
        };
        let n = b.len();
        let right = if n >= 2 && b[n - 1] == b'-' && b[n - 2].is_ascii_whitespace() {
            &body[n - 2..]
        } else {
            ""
        };
        // `{{- -}}` has both markers overlapping: no text (gtmpl reports the error).
        let text = if left.len() + right.len() <= n {
            body[left.len()..n - right.len()].trim()
        } else {
            ""
        };
        out.push(Piece::Text(&t[pos..open]));
        out.push(Piece::Action {
            raw: &t[open..close + 2],
            left,
            right,
            text,
        });
        pos = close + 2;
    }
    out.push(Piece::Text(&t[pos..]));
    Ok(out)
}

/// Rewrites every `range` of a template to visit maps in key order (see the module's doc).
/// A range with an `{{else}}` also goes inside an `if` of its values, as gtmpl would run the
/// else after every range.
fn ordered_ranges(t: &str) -> Result<String, String> {
    let pieces = pieces(t)?;
    // Which ranges have an else of their own, and which elses are a range's.
    let mut range_else = vec![false; pieces.len()];
    let mut else_of_range = vec![false; pieces.len()];
    let mut open: Vec<(usize, bool)> = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        match p.keyword() {
            "range" => open.push((i, true)),
            "if" | "with" | "define" | "block" => open.push((i, false)),
            "end" => {
                open.pop();
            }
            "else" => {
                if let Some(&(r, true)) = open.last() {
                    range_else[r] = true;
                    else_of_range[i] = true;
                }
            }
            _ => {}
        }
    }
    let mut out = String::with_capacity(t.len());
    let mut n = 0;
    for (i, p) in pieces.iter().enumerate() {
        let Piece::Action {
            raw,
            left,
            right,
            text,
        } = p
        else {
            if let Piece::Text(s) = p {
                out.push_str(s);
            }
            continue;
        };
        if else_of_range[i] {
            out.push_str(&format!("{{{{{left}end}}}}{{{{else{right}}}}}"));
            continue;
        }
        let rest = match text.strip_prefix("range") {
            Some(rest) if rest.starts_with(char::is_whitespace) => rest,
            _ => {
                out.push_str(raw);
                continue;
            }
        };
        n += 1;
        let (k, v, pipe) = range_parts(rest);
        let pipe = pipe.trim();
        let mut left = *left;
        if k.is_some() {
            out.push_str(&format!("{{{{{left}$__k{n} := __keys ({pipe})}}}}"));
            left = "";
        }
        if range_else[i] {
            out.push_str(&format!("{{{{{left}if __values ({pipe})}}}}"));
            left = "";
        }
        match (k, v) {
            (Some(k), v) => out.push_str(&format!(
                "{{{{{left}range $__i{n}, {v} := __values ({pipe})}}}}\
                 {{{{{k} := index $__k{n} $__i{n}{right}}}}}",
                v = v.unwrap_or("$_"),
            )),
            (None, v) => {
                let decl = v.map(|v| format!("{v} := ")).unwrap_or_default();
                out.push_str(&format!(
                    "{{{{{left}range {decl}__values ({pipe}){right}}}}}"
                ));
            }
        }
    }
    Ok(out)
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
        t.add_func("__values", values);
        t.add_func("__keys", keys);
        let s = ordered_ranges(s).map_err(|e| format!("template parsing error: {e}"))?;
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

/// The output flags of a listing (`ps`, `network ls`).
#[derive(Debug, Default, clap::Args)]
pub struct ListFormat {
    /// Only show ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format the output with a Go template over Docker's fields (.ID, .Names, …); `table …`
    /// for columns with a header; `json` for one JSON object a line
    #[arg(long)]
    pub format: Option<String>,
}

impl ListFormat {
    /// An id as the listing shows it: 12 characters unless --no-trunc.
    pub fn id(&self, id: &str) -> String {
        if self.no_trunc {
            id.to_string()
        } else {
            id.chars().take(12).collect()
        }
    }

    /// The listing's text: ids alone with -q, else through --format (`json`: each object as
    /// JSON, as Docker's `--format json`), else `default_table`.
    pub fn render(
        &self,
        default_table: &str,
        columns: &[(&str, &str)],
        objects: &[serde_json::Value],
    ) -> Result<String, String> {
        self.render_keyed("ID", default_table, columns, objects)
    }

    /// [`ListFormat::render`] of objects whose key, what -q prints, is the field `key`
    /// (`Name`, `Digest`, …) rather than `ID`.
    pub fn render_keyed(
        &self,
        key: &str,
        default_table: &str,
        columns: &[(&str, &str)],
        objects: &[serde_json::Value],
    ) -> Result<String, String> {
        let quiet = format!("{{{{.{key}}}}}");
        let format = match self.format.as_deref() {
            _ if self.quiet => quiet.as_str(),
            Some(f) if f.trim() == "json" => "{{json .}}",
            Some(f) if f.trim() != "table" => f,
            _ => default_table,
        };
        list(format, columns, objects)
    }

    /// Prints the listing (see render).
    pub fn print(
        &self,
        default_table: &str,
        columns: &[(&str, &str)],
        objects: &[serde_json::Value],
    ) -> Result<(), crate::client::Error> {
        self.print_keyed("ID", default_table, columns, objects)
    }

    /// Prints the listing (see render_keyed).
    pub fn print_keyed(
        &self,
        key: &str,
        default_table: &str,
        columns: &[(&str, &str)],
        objects: &[serde_json::Value],
    ) -> Result<(), crate::client::Error> {
        let out = self
            .render_keyed(key, default_table, columns, objects)
            .map_err(crate::client::Error::Local)?;
        print!("{out}");
        Ok(())
    }
}

/// Renders a listing's `--format` (`ps`, `network ls`) over its objects, one line each.
/// `table TEMPLATE` starts with a header line (the template over the column names of
/// `columns`: field, header) and aligns tab-separated cells as Docker's tables; `\t` and `\n`
/// written in the format stand for a tab and a newline, as Docker reads them.
pub fn list(
    format: &str,
    columns: &[(&str, &str)],
    objects: &[serde_json::Value],
) -> Result<String, String> {
    let format = format.replace("\\t", "\t").replace("\\n", "\n");
    let (table, body) = match format.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start_matches(' ')),
        None => (false, format.as_str()),
    };
    let t = Format::parse(body)?;
    let mut lines = Vec::new();
    if table {
        let headers: serde_json::Map<String, serde_json::Value> = columns
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        lines.push(t.render(&serde_json::Value::Object(headers))?);
    }
    for o in objects {
        lines.push(t.render(o)?);
    }
    if !table {
        return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect();
    Ok(crate::format::table(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz/ template): gtmpl's lexer never returned on an unclosed action
    /// ending in a trim marker.
    #[test]
    fn actions_gtmpl_cannot_read_are_errors() {
        for t in [
            "{ .DI{{{range $k, $v := .Con,{{end} -",
            "{{ -",
            "{{-",
            "{{ x - ",
            "{{ \"a}}\" -",
            "{{.ID}} {{ -",
        ] {
            let e = Format::parse(t).unwrap_err();
            assert!(e.contains("unclosed action"), "{t:?}: {e}");
        }
        assert!(Format::parse("{{ .ID -}}").is_ok());
        // gtmpl's lexer panicked on a non-ASCII letter in an action; in strings it is fine.
        for t in ["{{\u{4a9}ize}} {({.Ratio}", "{{ .Ün }}", "{{ x é }}"] {
            let e = Format::parse(t).unwrap_err();
            assert!(e.contains("outside a string"), "{t:?}: {e}");
        }
        let f = Format::parse("{{ \"é\" }}{{/* ü */}}{{ `ß` }}{{ 'ł' }} ω").unwrap();
        assert_eq!(f.render(&serde_json::json!({})).unwrap(), "éß322 ω");
    }
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
    fn trim_markers_never_panic() {
        let v = json!({"M": {"b": 2, "a": 1}});
        assert_eq!(r("{{- range .M -}} {{.}} {{- end}}", v), "12");
        // Both markers overlapping: an error from the template engine, not a panic.
        let _ = Format::parse("{{- -}}");
        let _ = Format::parse("{{-\t-}}");
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
    fn ranges_over_maps_go_in_key_order() {
        let v = json!({"NetworkSettings": {
            "Networks": {
                "zeta": {"IPAddress": "10.3.0.2"},
                "alpha": {"IPAddress": "10.1.0.2"},
                "mid": {"IPAddress": "10.2.0.2"},
                "bravo": {"IPAddress": "10.4.0.2"},
                "kilo": {"IPAddress": ""},
            },
            "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "5000/tcp": null},
        }});
        // Many times over: a hash order would show up.
        for _ in 0..20 {
            assert_eq!(
                r(
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                    v.clone()
                ),
                "10.1.0.2 10.4.0.2  10.2.0.2 10.3.0.2 "
            );
            assert_eq!(
                r(
                    "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}};{{end}}",
                    v.clone()
                ),
                "alpha=10.1.0.2;bravo=10.4.0.2;kilo=;mid=10.2.0.2;zeta=10.3.0.2;"
            );
        }
        assert_eq!(
            r(
                "{{range $n := .NetworkSettings.Networks}}{{$n.IPAddress}},{{end}}",
                v.clone()
            ),
            "10.1.0.2,10.4.0.2,,10.2.0.2,10.3.0.2,"
        );
        assert_eq!(
            r(
                "{{range $p, $conf := .NetworkSettings.Ports}}{{$p}} -> {{if $conf}}{{(index $conf 0).HostPort}}{{else}}none{{end}}\n{{end}}",
                v.clone()
            ),
            "5000/tcp -> none\n80/tcp -> 8080\n"
        );
        // Arrays keep their order and give indexes; nil ranges over nothing.
        let a =
            json!({"L": ["b", "a"], "N": null, "Nested": {"y": {"b": 2, "a": 1}, "x": {"c": 3}}});
        assert_eq!(
            r("{{range $i, $e := .L}}{{$i}}{{$e}} {{end}}", a.clone()),
            "0b 1a "
        );
        assert_eq!(r("{{range .N}}x{{end}}-", a.clone()), "-");
        assert_eq!(r("{{range .Missing}}x{{end}}-", a.clone()), "-");
        assert_eq!(
            r(
                "{{range $k, $m := .Nested}}{{$k}}:{{range $j, $n := $m}}{{$j}}{{$n}}{{end}};{{end}}",
                a.clone()
            ),
            "x:c3;y:a1b2;"
        );
        // else runs only for an empty range, nested or not.
        assert_eq!(
            r(
                "{{range .L}}a{{else}}b{{end}}|{{range .N}}a{{else}}b{{end}}",
                a.clone()
            ),
            "aa|b"
        );
        assert_eq!(
            r(
                "{{range $i, $e := .L}}{{if $i}}+{{else}}{{$e}}{{end}}{{range $.N}}x{{else}}-{{end}}{{else}}none{{end}}",
                a.clone()
            ),
            "b-+-"
        );
        assert_eq!(
            r(
                "{{with .L}}{{range .}}{{.}}{{end}}{{else}}no{{end}}",
                a.clone()
            ),
            "ba"
        );
        // Trim markers and strings holding braces survive the rewrite.
        assert_eq!(
            r("[ {{- range .L -}} ] {{.}} [ {{- end -}} ]", a.clone()),
            "[] b [] a []"
        );
        assert_eq!(
            r("{{\"}}{{range\"}}{{/* {{range .L}} */}}{{`}}`}}", a),
            "}}{{range}}"
        );
    }

    #[test]
    fn index_and_fields_of_ports() {
        let v = json!({"NetworkSettings": {
            "IPAddress": "10.88.0.2",
            "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "5000/tcp": null},
        }});
        assert_eq!(r("{{.NetworkSettings.IPAddress}}", v.clone()), "10.88.0.2");
        assert_eq!(
            r(
                "{{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}",
                v.clone()
            ),
            "8080"
        );
        assert_eq!(
            r("{{json .NetworkSettings.Ports}}", v),
            r#"{"5000/tcp":null,"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]}"#
        );
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

    #[test]
    fn listings_give_json_and_quiet_keys() {
        let objects = [
            json!({"Name": "a", "Labels": "x=1"}),
            json!({"Name": "b", "Labels": ""}),
        ];
        let columns = [("Name", "NAME"), ("Labels", "LABELS")];
        let table = "table {{.Name}}\t{{.Labels}}";
        let out = |f: ListFormat| f.render_keyed("Name", table, &columns, &objects).unwrap();
        assert_eq!(out(ListFormat::default()), "NAME   LABELS\na      x=1\nb\n");
        let quiet = ListFormat {
            quiet: true,
            ..Default::default()
        };
        assert_eq!(out(quiet), "a\nb\n");
        let json = ListFormat {
            format: Some(" json ".into()),
            ..Default::default()
        };
        assert_eq!(
            out(json),
            "{\"Labels\":\"x=1\",\"Name\":\"a\"}\n{\"Labels\":\"\",\"Name\":\"b\"}\n"
        );
    }
}
