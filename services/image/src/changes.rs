//! `commit --change`: a Dockerfile instruction that only touches an image's config (CMD,
//! ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL), read with the
//! Dockerfile parser as Docker reads it, its variables expanded from the config's Env, and
//! turned into a [`Change`] that [`ContainerConfig::apply`] applies.

use crate::config::{Change, ContainerConfig};
use berth_dockerfile::dockerfile::{self, Args};

/// The instructions `--change` takes.
const COMMANDS: &[&str] = &[
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
    "STOPSIGNAL",
];

/// Docker's default escape character; a `--change` has no parser directives.
const ESCAPE: char = '\\';

/// Reads one `--change`, e.g. `CMD ["nginx", "-g", "daemon off;"]` or `ENV A=1 B="two"`,
/// against the config it will apply to (its Env, Shell and WorkingDir).
pub fn parse(change: &str, config: &ContainerConfig) -> Result<Change, String> {
    let change = change.trim();
    let (word, rest) = change
        .split_once(|c: char| c.is_whitespace())
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change, ""));
    let instruction = word.to_ascii_uppercase();
    if instruction.is_empty() {
        return Err("an empty change".into());
    }
    if !COMMANDS.contains(&instruction.as_str()) {
        return Err(format!(
            "{instruction} is not a valid change command ({})",
            COMMANDS.join(", ")
        ));
    }
    if rest.is_empty() {
        return Err(format!("{instruction} needs at least one argument"));
    }
    let inst = dockerfile::parse_instruction(change, 0, ESCAPE).map_err(|e| e.message)?;
    let lookup = |name: &str| config.env_var(name);
    let expand = |word: &str| dockerfile::expand(word, &lookup, ESCAPE);
    let expand_pairs = |pairs: Vec<(String, String)>| -> Result<Vec<(String, String)>, String> {
        pairs
            .into_iter()
            .map(|(k, v)| Ok((expand(&k)?, expand(&v)?)))
            .collect()
    };
    Ok(match inst.args {
        Args::Cmd(c) => Change::Cmd(c.argv(&config.shell_or_default())),
        Args::Entrypoint(c) => Change::Entrypoint {
            argv: c.argv(&config.shell_or_default()),
            keep_cmd: false,
        },
        Args::Env(pairs) => Change::Env(expand_pairs(pairs)?),
        Args::Label(pairs) => Change::Label(expand_pairs(pairs)?),
        Args::Expose(words) => {
            let mut ports = Vec::new();
            for w in words {
                for p in dockerfile::expand_words(&w, &lookup, ESCAPE)? {
                    ports.push(exposed_port(&p)?);
                }
            }
            Change::Expose(ports)
        }
        Args::Volume(paths) => {
            Change::Volume(paths.iter().map(|p| expand(p)).collect::<Result<_, _>>()?)
        }
        Args::User(u) => Change::User(expand(&u)?),
        Args::Workdir(w) => {
            let w = expand(&w)?;
            let current = config.working_dir.get().map_or("/", String::as_str);
            Change::Workdir(if w.starts_with('/') {
                w
            } else {
                format!("{}/{w}", current.trim_end_matches('/'))
            })
        }
        Args::StopSignal(s) => Change::StopSignal(expand(&s)?),
        Args::Onbuild(trigger) => Change::Onbuild(trigger),
        _ => unreachable!("the instruction is one of COMMANDS"),
    })
}

/// `80`, `53/udp`, `8000-8010/tcp` → its ExposedPorts key (`80/tcp`).
fn exposed_port(p: &str) -> Result<String, String> {
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
    Ok(format!("{port}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn apply(c: &mut ContainerConfig, change: &str) -> Result<(), String> {
        let change = parse(change, c)?;
        c.apply(change);
        Ok(())
    }

    fn run(changes: &[&str]) -> Value {
        let mut c = ContainerConfig::from_json(json!({"Env": ["PATH=/bin"]})).unwrap();
        for ch in changes {
            apply(&mut c, ch).unwrap();
        }
        c.to_json()
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
        let mut c = ContainerConfig::default();
        assert!(apply(&mut c, "RUN echo").unwrap_err().contains("RUN"));
        assert!(apply(&mut c, "EXPOSE http").is_err());
        assert!(apply(&mut c, "ENV").is_err());
        assert!(apply(&mut c, "ENV A=\"open").is_err());
    }

    #[test]
    fn read_as_docker_reads_them() {
        // Variables come from the config's Env, as in a Dockerfile; ENV replaces a variable of
        // the same name; ONBUILD triggers are checked by the parser.
        let c = run(&[
            "ENV HOME=/root",
            "WORKDIR $HOME/app",
            "ENV PATH=/usr/bin:$PATH",
        ]);
        assert_eq!(c["WorkingDir"], json!("/root/app"));
        assert_eq!(c["Env"], json!(["HOME=/root", "PATH=/usr/bin:/bin"]));
        let mut c = ContainerConfig::default();
        assert!(apply(&mut c, "ONBUILD ONBUILD RUN x").is_err());
        assert_eq!(
            apply(&mut c, "FROBNICATE x").unwrap_err(),
            "FROBNICATE is not a valid change command (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, \
             ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL)"
        );
        assert_eq!(
            apply(&mut c, "CMD").unwrap_err(),
            "CMD needs at least one argument"
        );
    }
}
