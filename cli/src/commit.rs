//! `berth commit`: a container's changes become a new image layer on top of its image.
//!
//! The CLI gathers the inputs (the container, what its run overrode, the `--change`s) and
//! pauses the container around the call; the image service's Commit computes the config
//! to record, with Docker's rules, so that every client gets the same commit.

use crate::client::{Context, Error};
use berth_api::images::v1 as api;
use clap::Args;

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

/// What `run` overrode of the container's image config: the image service records the config
/// the container ran with, as Docker's commit does.
fn run_overrides(c: &berth_api::containers::v1::ContainerConfig) -> api::RunOverrides {
    api::RunOverrides {
        entrypoint_set: c.entrypoint_set,
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
        stop_signal: c.stop_signal.clone(),
    }
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
    let r = ctx
        .images()
        .commit(ctx.req(api::CommitRequest {
            reference: a.repository.clone().unwrap_or_default(),
            parent: c.image_id.clone(),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: c.snapshot_key.clone(),
            config: Vec::new(),
            changes: a.change.clone(),
            // The image service records the command the container ran.
            created_by: String::new(),
            comment: a.message.clone().unwrap_or_default(),
            author: a.author.clone().unwrap_or_default(),
            empty_layer: false,
            intermediate: false,
            run: Some(run_overrides(&config)),
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
}
