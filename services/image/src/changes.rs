//! `commit --change`: the Dockerfile instructions that only touch an image's config (CMD,
//! ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL), applied to
//! the config's `config` section as Docker applies them.

use serde_json::{json, Map, Value};

/// Applies one instruction, e.g. `CMD ["nginx", "-g", "daemon off;"]` or `ENV A=1 B="two"`.
pub fn apply(config: &mut Map<String, Value>, change: &str) -> Result<(), String> {
    let change = change.trim();
    let (word, rest) = change
        .split_once(|c: char| c.is_whitespace())
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change, ""));
    let instruction = word.to_ascii_uppercase();
    let needs_args = || {
        if rest.is_empty() {
            Err(format!("{instruction} needs at least one argument"))
        } else {
            Ok(())
        }
    };
    match instruction.as_str() {
        "CMD" | "ENTRYPOINT" => {
            needs_args()?;
            let key = if instruction == "CMD" {
                "Cmd"
            } else {
                "Entrypoint"
            };
            let shell = words(config.get("Shell"));
            let shell = if shell.is_empty() {
                vec!["/bin/sh".to_string(), "-c".to_string()]
            } else {
                shell
            };
            config.insert(key.into(), json!(command(rest, &shell)));
            if instruction == "ENTRYPOINT" {
                // As in a Dockerfile, a new ENTRYPOINT resets the CMD.
                config.insert("Cmd".into(), Value::Null);
            }
        }
        "ENV" => {
            needs_args()?;
            let mut env = words(config.get("Env"));
            for (k, v) in pairs(rest, &instruction)? {
                env.retain(|e| e.split('=').next() != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
            config.insert("Env".into(), json!(env));
        }
        "LABEL" => {
            needs_args()?;
            let labels = object(config, "Labels");
            for (k, v) in pairs(rest, &instruction)? {
                labels.insert(k, json!(v));
            }
        }
        "EXPOSE" => {
            needs_args()?;
            let ports = object(config, "ExposedPorts");
            for p in rest.split_whitespace() {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                let proto = proto.to_ascii_lowercase();
                let valid = |s: &str| s.parse::<u16>().is_ok_and(|n| n > 0);
                let ok = match port.split_once('-') {
                    Some((a, b)) => valid(a) && valid(b),
                    None => valid(port),
                };
                if !ok || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                    return Err(format!("EXPOSE: invalid port {p:?}"));
                }
                ports.insert(format!("{port}/{proto}"), json!({}));
            }
        }
        "VOLUME" => {
            needs_args()?;
            let paths: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest).map_err(|e| format!("VOLUME: {e}"))?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            let volumes = object(config, "Volumes");
            for p in paths {
                if p.is_empty() {
                    return Err("VOLUME: an empty path".into());
                }
                volumes.insert(p, json!({}));
            }
        }
        "USER" => {
            needs_args()?;
            config.insert("User".into(), json!(rest));
        }
        "WORKDIR" => {
            needs_args()?;
            let current = config
                .get("WorkingDir")
                .and_then(|w| w.as_str())
                .unwrap_or("/")
                .to_string();
            let dir = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("{}/{rest}", current.trim_end_matches('/'))
            };
            config.insert("WorkingDir".into(), json!(dir));
        }
        "STOPSIGNAL" => {
            needs_args()?;
            config.insert("StopSignal".into(), json!(rest));
        }
        "ONBUILD" => {
            needs_args()?;
            let mut onbuild = words(config.get("OnBuild"));
            onbuild.push(rest.to_string());
            config.insert("OnBuild".into(), json!(onbuild));
        }
        "" => return Err("an empty change".into()),
        other => {
            return Err(format!(
                "{other} is not a valid change command (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL)"
            ))
        }
    }
    Ok(())
}

fn words(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = config.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

/// The exec form (a JSON array of strings) as it is; anything else is the shell form.
fn command(rest: &str, shell: &[String]) -> Vec<String> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return v;
        }
    }
    let mut c = shell.to_vec();
    c.push(rest.to_string());
    c
}

/// `K=V K2="v two"` pairs, or the legacy `K value with spaces` form of one pair.
fn pairs(rest: &str, instruction: &str) -> Result<Vec<(String, String)>, String> {
    let first = rest.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{instruction} {rest:?}: needs a value (K=V or K V)"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    for token in tokens(rest)? {
        let (k, v) = token
            .split_once('=')
            .ok_or_else(|| format!("{instruction}: {token:?} is not K=V"))?;
        if k.is_empty() {
            return Err(format!("{instruction}: {token:?} has no name"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Splits on unquoted whitespace; quotes group and are removed, `\` escapes.
fn tokens(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut have = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                have = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                have = true;
            }
            (_, c) => {
                cur.push(c);
                have = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unmatched quote in {s:?}"));
    }
    if have {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(changes: &[&str]) -> Value {
        let mut c = Map::new();
        c.insert("Env".into(), json!(["PATH=/bin"]));
        for ch in changes {
            apply(&mut c, ch).unwrap();
        }
        Value::Object(c)
    }

    #[test]
    fn docker_forms() {
        let c = run(&[
            r#"CMD ["nginx", "-g", "daemon off;"]"#,
            "ENV A=1 B=\"two words\"",
            "ENV C the rest",
            "EXPOSE 80 53/udp",
            "LABEL a=b",
            "WORKDIR /srv",
            "WORKDIR app",
            "USER nobody",
            "VOLUME /data",
        ]);
        assert_eq!(c["Cmd"], json!(["nginx", "-g", "daemon off;"]));
        assert_eq!(
            c["Env"],
            json!(["PATH=/bin", "A=1", "B=two words", "C=the rest"])
        );
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Labels"], json!({"a": "b"}));
        assert_eq!(c["WorkingDir"], json!("/srv/app"));
        assert_eq!(c["User"], json!("nobody"));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
    }

    #[test]
    fn shell_form_and_entrypoint_resets_cmd() {
        let c = run(&["CMD echo hi", "ENTRYPOINT /init"]);
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/init"]));
        assert_eq!(c["Cmd"], Value::Null);
    }

    #[test]
    fn bad_changes_are_refused() {
        let mut c = Map::new();
        assert!(apply(&mut c, "RUN echo").unwrap_err().contains("RUN"));
        assert!(apply(&mut c, "EXPOSE http").is_err());
        assert!(apply(&mut c, "ENV").is_err());
        assert!(apply(&mut c, "ENV A=\"open").is_err());
    }
}
