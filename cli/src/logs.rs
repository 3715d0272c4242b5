//! `berth logs`: a container's output as the shim recorded it, followed or from its tail.

use crate::client::{Context, Error};
use crate::stdio::{write_stderr, write_stdout};
use berth_api::tasks::v1 as tapi;
use clap::Args;
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output until the container exits
    #[arg(short, long)]
    pub follow: bool,
    /// Lines to show from the end ("all" for every line); -n is the namespace here
    #[arg(long)]
    pub tail: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

pub async fn logs(ctx: &Context, a: LogsArgs) -> Result<(), Error> {
    let (tail, has_tail) = berth_docker::parse_tail(a.tail.as_deref()).map_err(Error::Local)?;
    let mut s = ctx
        .tasks()
        .logs(ctx.req(tapi::LogsRequest {
            container_id: a.container.clone(),
            follow: a.follow,
            tail,
            has_tail,
        }))
        .await?
        .into_inner();
    while let Some(e) = s.next().await {
        let e = e?;
        let data = if a.timestamps {
            berth_docker::timestamped(e.time.as_ref(), e.data)
        } else {
            e.data
        };
        if e.stream == "stderr" {
            write_stderr(&data)?;
        } else {
            write_stdout(&data)?;
        }
    }
    Ok(())
}
