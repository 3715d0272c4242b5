//! `berth commit`: a container's changes become a new image layer on top of its image.
//!
//! The CLI gathers the inputs (the container, what its run overrode, the `--change`s) and
//! pauses the container around the call; the image service's Commit computes the config
//! to record, with Docker's rules, so that every client gets the same commit.

use crate::client::{Context, Error};
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

pub async fn commit(ctx: &Context, a: CommitArgs) -> Result<(), Error> {
    let c = crate::containers::get(ctx, &a.container).await?;
    if !berth_docker::commit_pauses(&c, a.pause) {
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
    let request = berth_docker::commit_request(
        c,
        berth_docker::CommitOptions {
            reference: a.repository.clone().unwrap_or_default(),
            comment: a.message.clone().unwrap_or_default(),
            author: a.author.clone().unwrap_or_default(),
            changes: a.change.clone(),
            config: Vec::new(),
        },
    );
    let r = ctx.images().commit(ctx.req(request)).await?.into_inner();
    println!("{}", r.id);
    Ok(())
}
