//! `berth exec`: a command in a running container, over one bidirectional stream (start,
//! stdin, resizes out; pid, output, exit status back).

use crate::client::{Context, Error};
use crate::stdio::{print_output, relay_terminal};
use berth_api::tasks::v1 as tapi;
use clap::Args;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Run in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Environment variables (K=V)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir")]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid])
    #[arg(short, long)]
    pub user: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub async fn exec(ctx: &Context, a: ExecArgs) -> u8 {
    match exec_inner(ctx, a).await {
        Ok(code) => (code & 0xff) as u8,
        Err(e) => crate::fail(e),
    }
}

async fn exec_inner(ctx: &Context, a: ExecArgs) -> Result<i32, Error> {
    let env = crate::run::environment(&a.env);
    let stdin = a.interactive && !a.detach;
    let tty = a.tty && !a.detach;
    let (tx, rx) = mpsc::channel::<tapi::ExecRequest>(32);
    tx.send(tapi::ExecRequest {
        item: Some(tapi::exec_request::Item::Start(tapi::ExecStart {
            container_id: a.container.clone(),
            args: a.command.clone(),
            env,
            working_dir: a.workdir.clone().unwrap_or_default(),
            user: a.user.clone().unwrap_or_default(),
            tty: a.tty,
            stdin,
            detach: a.detach,
            timeout: 0,
        })),
    })
    .await
    .map_err(|_| Error::Local("exec stream closed".into()))?;
    let mut output = ctx
        .tasks()
        .exec(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await?
        .into_inner();
    if a.detach {
        // The process runs once its pid comes back (or the stream ends without error).
        while let Some(m) = output.next().await {
            if let Some(tapi::exec_response::Item::Pid(_)) = m?.item {
                break;
            }
        }
        return Ok(0);
    }
    let _raw = relay_terminal(&tx, &a.container, stdin, tty).await;
    if let Some(code) = print_output(&mut output).await? {
        return Ok(code);
    }
    drop(tx);
    Err(Error::Local(
        "the exec stream ended without an exit status".into(),
    ))
}
