//! Docker's commit of a container: what its run overrode of its image's config
//! ([`run_overrides`]), whether it is paused around the commit ([`commit_pauses`]), and the
//! image service's request built from both ([`commit_request`]), shared by `berth commit`
//! and `POST /commit`. The image service applies Docker's rules to what it is given.

use berth_api::containers::v1::{Container, ContainerConfig};
use berth_api::images::v1::{CommitRequest, RunOverrides};

/// What `run` overrode of the container's image config: the image service records the config
/// the container ran with, as Docker's commit does.
pub fn run_overrides(c: &ContainerConfig) -> RunOverrides {
    RunOverrides {
        entrypoint_set: c.entrypoint_set,
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
        stop_signal: c.stop_signal.clone(),
    }
}

/// Whether a commit freezes the container around it: asked to, and it runs unpaused
/// (a paused one stays paused; one that does not run has nothing to freeze).
pub fn commit_pauses(c: &Container, pause: bool) -> bool {
    pause
        && c.state
            .as_ref()
            .is_some_and(|s| s.status == "running" && !s.paused)
}

/// What a commit of a container says beyond the container itself.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The new image's name; empty: dangling.
    pub reference: String,
    pub comment: String,
    pub author: String,
    /// Dockerfile instructions applied to the config (`--change`).
    pub changes: Vec<String>,
    /// A config section to start from (JSON); empty: the image's.
    pub config: Vec<u8>,
}

/// The image service's Commit of container `c`'s changes, as Docker commits a container.
pub fn commit_request(c: &Container, o: CommitOptions) -> CommitRequest {
    let config = c.config.clone().unwrap_or_default();
    CommitRequest {
        reference: o.reference,
        parent: c.image_id.clone(),
        snapshotter: c.snapshotter.clone(),
        snapshot_key: c.snapshot_key.clone(),
        config: o.config,
        changes: o.changes,
        // The image service records the command the container ran.
        created_by: String::new(),
        comment: o.comment,
        author: o.author,
        empty_layer: false,
        intermediate: false,
        run: Some(run_overrides(&config)),
    }
}

/// The Dockerfile instructions that apply a Docker container config (`POST /commit`'s body:
/// `Cmd`, `Entrypoint`, `Env`, `WorkingDir`, `User`, `Labels`, `ExposedPorts`, `Volumes`,
/// `StopSignal`) over the config a commit records, as Docker merges it; null or absent
/// fields change nothing, and so do the fields an image config has not.
pub fn config_changes(config: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let quoted = |s: &str| Value::String(s.to_string()).to_string();
    let mut out = Vec::new();
    for (field, keyword) in [("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")] {
        match &config[field] {
            v @ Value::Array(_) => out.push(format!("{keyword} {v}")),
            Value::String(s) => out.push(format!("{keyword} {}", Value::from(vec![s.clone()]))),
            _ => {}
        }
    }
    for e in config["Env"].as_array().into_iter().flatten() {
        if let Some((k, v)) = e.as_str().and_then(|e| e.split_once('=')) {
            out.push(format!("ENV {k}={}", quoted(v)));
        }
    }
    for (field, keyword) in [
        ("WorkingDir", "WORKDIR"),
        ("User", "USER"),
        ("StopSignal", "STOPSIGNAL"),
    ] {
        if let Some(v) = config[field].as_str().filter(|v| !v.is_empty()) {
            out.push(format!("{keyword} {v}"));
        }
    }
    for (k, v) in config["Labels"].as_object().into_iter().flatten() {
        if let Some(v) = v.as_str() {
            out.push(format!("LABEL {}={}", quoted(k), quoted(v)));
        }
    }
    for p in config["ExposedPorts"].as_object().into_iter().flatten() {
        out.push(format!("EXPOSE {}", p.0));
    }
    for v in config["Volumes"].as_object().into_iter().flatten() {
        out.push(format!("VOLUME {}", Value::from(vec![v.0.clone()])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::containers::v1::ContainerState;

    #[test]
    fn only_a_running_unpaused_container_is_paused() {
        let with = |status: &str, paused: bool| Container {
            state: Some(ContainerState {
                status: status.into(),
                paused,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(commit_pauses(&with("running", false), true));
        assert!(!commit_pauses(&with("running", false), false));
        assert!(!commit_pauses(&with("running", true), true));
        assert!(!commit_pauses(&with("exited", false), true));
        assert!(!commit_pauses(&with("created", false), true));
        assert!(!commit_pauses(&Container::default(), true));
    }

    #[test]
    fn a_commits_config_becomes_changes() {
        let c = serde_json::json!({
            "Cmd": ["sh", "-c", "echo hi"],
            "Entrypoint": null,
            "Env": ["A=b c"],
            "WorkingDir": "/w",
            "User": "",
            "Labels": {"k": "v"},
            "ExposedPorts": {"80/tcp": {}},
        });
        assert_eq!(
            config_changes(&c),
            vec![
                r#"CMD ["sh","-c","echo hi"]"#,
                r#"ENV A="b c""#,
                "WORKDIR /w",
                r#"LABEL "k"="v""#,
                "EXPOSE 80/tcp",
            ]
        );
        assert!(config_changes(&serde_json::json!({})).is_empty());
        assert!(config_changes(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn the_request_carries_the_container_and_its_overrides() {
        let c = Container {
            image_id: "sha256:p".into(),
            snapshotter: "overlayfs".into(),
            snapshot_key: "k".into(),
            config: Some(ContainerConfig {
                cmd: vec!["sh".into()],
                env: vec!["A=1".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = commit_request(
            &c,
            CommitOptions {
                reference: "x:1".into(),
                comment: "m".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            (r.parent.as_str(), r.snapshot_key.as_str()),
            ("sha256:p", "k")
        );
        assert_eq!((r.reference.as_str(), r.comment.as_str()), ("x:1", "m"));
        let run = r.run.unwrap();
        assert_eq!(
            (run.cmd, run.env),
            (vec!["sh".to_string()], vec!["A=1".to_string()])
        );
    }
}
