//! `berth commit`: a container's changes become a new image layer on top of its image.

use crate::client::{Context, Error};
use berth_api::images::v1 as api;
use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The container: name, id or unique id prefix
    pub container: String,
    /// The new image's name: [REGISTRY/]REPOSITORY[:TAG]; without one the image is dangling
    pub repository: Option<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author, e.g. "Jane Doe <jane@example.com>"
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL)
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Pause the running container during the commit (--pause=false to not pause it)
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pause: bool,
}

/// The config a container runs with: its image's, with what `run` overrode.
fn effective_config(image_config: &[u8], c: &berth_api::containers::v1::ContainerConfig) -> Value {
    let full: Value = serde_json::from_slice(image_config).unwrap_or(Value::Null);
    let mut cfg = full.get("config").cloned().unwrap_or_else(|| json!({}));
    if !cfg.is_object() {
        cfg = json!({});
    }
    let obj = cfg.as_object_mut().expect("an object");
    if c.entrypoint_set {
        let ep: Vec<&String> = c.entrypoint.iter().filter(|s| !s.is_empty()).collect();
        obj.insert(
            "Entrypoint".into(),
            if ep.is_empty() {
                Value::Null
            } else {
                json!(ep)
            },
        );
        if c.cmd.is_empty() {
            obj.insert("Cmd".into(), Value::Null);
        }
    }
    if !c.cmd.is_empty() {
        obj.insert("Cmd".into(), json!(c.cmd));
    }
    if !c.env.is_empty() {
        let mut env: Vec<String> = obj
            .get("Env")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for kv in &c.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        obj.insert("Env".into(), json!(env));
    }
    if !c.working_dir.is_empty() {
        obj.insert("WorkingDir".into(), json!(c.working_dir));
    }
    if !c.user.is_empty() {
        obj.insert("User".into(), json!(c.user));
    }
    if !c.stop_signal.is_empty() {
        obj.insert("StopSignal".into(), json!(c.stop_signal));
    }
    cfg
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

/// Whether `commit` freezes the container around the commit: asked to, and it runs unpaused
/// (a paused one stays paused; one that does not run has nothing to freeze).
fn pauses(c: &berth_api::containers::v1::Container, pause: bool) -> bool {
    pause
        && c.state
            .as_ref()
            .is_some_and(|s| s.status == "running" && !s.paused)
}

pub async fn commit(ctx: &Context, a: CommitArgs) -> Result<(), Error> {
    let c = crate::containers::get(ctx, &a.container).await?;
    if !pauses(&c, a.pause) {
        return commit_container(ctx, &a, &c).await;
    }
    crate::containers::set_paused(ctx, &c.id, true).await?;
    let r = commit_container(ctx, &a, &c).await;
    let resumed = crate::containers::set_paused(ctx, &c.id, false).await;
    match (r, resumed) {
        (Err(e), Err(u)) => {
            eprintln!("berth: cannot unpause the container: {u}");
            Err(e)
        }
        (r, u) => r.and(u),
    }
}

async fn commit_container(
    ctx: &Context,
    a: &CommitArgs,
    c: &berth_api::containers::v1::Container,
) -> Result<(), Error> {
    let config = c.config.clone().unwrap_or_default();
    let image = ctx
        .images()
        .inspect(ctx.req(api::InspectImageRequest {
            name: c.image_id.clone(),
        }))
        .await?
        .into_inner();
    let cfg = effective_config(&image.config, &config);
    let mut run = words(cfg.get("Entrypoint"));
    run.extend(words(cfg.get("Cmd")));
    let r = ctx
        .images()
        .commit(ctx.req(api::CommitRequest {
            reference: a.repository.clone().unwrap_or_default(),
            parent: c.image_id.clone(),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: c.snapshot_key.clone(),
            config: serde_json::to_vec(&cfg).unwrap_or_default(),
            changes: a.change.clone(),
            created_by: run.join(" "),
            comment: a.message.clone().unwrap_or_default(),
            author: a.author.clone().unwrap_or_default(),
            empty_layer: false,
            intermediate: false,
        }))
        .await?
        .into_inner();
    println!("{}", r.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_unpaused_container_is_paused() {
        use berth_api::containers::v1::{Container, ContainerState};
        let with = |status: &str, paused: bool| Container {
            state: Some(ContainerState {
                status: status.into(),
                paused,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(pauses(&with("running", false), true));
        assert!(!pauses(&with("running", false), false));
        assert!(!pauses(&with("running", true), true));
        assert!(!pauses(&with("exited", false), true));
        assert!(!pauses(&with("created", false), true));
        assert!(!pauses(&Container::default(), true));
    }

    #[test]
    fn run_overrides_reach_the_committed_config() {
        let image = br#"{"config":{"Cmd":["sh"],"Env":["PATH=/bin","A=1"],"WorkingDir":"/"}}"#;
        let c = berth_api::containers::v1::ContainerConfig {
            cmd: vec!["echo".into(), "hi".into()],
            env: vec!["A=2".into()],
            working_dir: "/tmp".into(),
            ..Default::default()
        };
        let cfg = effective_config(image, &c);
        assert_eq!(cfg["Cmd"], json!(["echo", "hi"]));
        assert_eq!(cfg["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(cfg["WorkingDir"], json!("/tmp"));
    }

    #[test]
    fn an_empty_entrypoint_clears_the_image_one() {
        let image = br#"{"config":{"Entrypoint":["/init"],"Cmd":["x"]}}"#;
        let c = berth_api::containers::v1::ContainerConfig {
            entrypoint_set: true,
            entrypoint: vec!["".into()],
            ..Default::default()
        };
        let cfg = effective_config(image, &c);
        assert_eq!(cfg["Entrypoint"], Value::Null);
        assert_eq!(cfg["Cmd"], Value::Null);
    }
}
