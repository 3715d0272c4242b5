//! `berth attach`: our terminal on a running container's stdio (Tasks.Attach), as `docker
//! attach` does it: stdin when the container keeps it open, the detach keys on a TTY
//! (berth-docker's, the gateway's too), signals passed on without one, and the container's
//! exit code at its end.

use crate::client::{Context, Error};
use crate::stdio::{print_output, relay_terminal};
use berth_api::containers::v1 as capi;
use berth_api::tasks::v1 as tapi;
use berth_docker::{DetachKeys, DetachMatcher};
use clap::Args;
use tokio::sync::mpsc;

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach stdin
    #[arg(long)]
    pub no_stdin: bool,
    /// Pass received signals on to the container (without a TTY)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sig_proxy: bool,
    /// The keys that detach from the container (Docker's format, e.g. "ctrl-p,ctrl-q")
    #[arg(long)]
    pub detach_keys: Option<String>,
    pub container: String,
}

pub async fn attach(ctx: &Context, a: AttachArgs) -> u8 {
    match attach_inner(ctx, a).await {
        Ok(code) => (code & 0xff) as u8,
        Err(e) => crate::fail(e),
    }
}

async fn attach_inner(ctx: &Context, a: AttachArgs) -> Result<i32, Error> {
    let keys = DetachKeys::parse_or_default(a.detach_keys.as_deref())
        .map_err(|e| Error::Local(format!("invalid --detach-keys: {e}")))?;
    let c = ctx
        .containers()
        .get(ctx.req(capi::GetContainerRequest {
            id: a.container.clone(),
        }))
        .await?
        .into_inner()
        .container
        .ok_or_else(|| Error::Local(format!("No such container: {}", a.container)))?;
    let st = c.state.clone().unwrap_or_default();
    if st.status != "running" {
        return Err(Error::Local(
            "You cannot attach to a stopped container, start it first".into(),
        ));
    }
    if st.paused {
        return Err(Error::Local(
            "You cannot attach to a paused container, unpause it first".into(),
        ));
    }
    let config = c.config.clone().unwrap_or_default();
    let (tty, stdin) = (config.tty, !a.no_stdin && config.open_stdin);

    let (tx, mut output) = crate::run::open_attach(ctx, &c.id, stdin).await?;

    // Our input passes the detach-key matcher on a TTY on its way to the stream.
    let (input_tx, input_rx) = mpsc::channel::<tapi::AttachRequest>(32);
    let (detached_tx, mut detached) = tokio::sync::oneshot::channel::<()>();
    let matcher = tty.then(|| DetachMatcher::new(&keys));
    tokio::spawn(watch_for_detach(input_rx, tx.clone(), matcher, detached_tx));
    let _raw = relay_terminal(&input_tx, &c.id, stdin, tty).await;
    if a.sig_proxy && !tty {
        proxy_signals(ctx.clone(), c.id.clone());
    }
    tokio::select! {
        code = print_output(&mut output) => match code? {
            Some(code) => Ok(code),
            None => Err(Error::Local("the attach stream ended without an exit status".into())),
        },
        Ok(()) = &mut detached => {
            drop(_raw);
            eprintln!("read escape sequence");
            Ok(0)
        }
    }
}

/// Passes our input on, until the detach keys come (then says so on `detached`).
async fn watch_for_detach(
    mut input: mpsc::Receiver<tapi::AttachRequest>,
    tx: mpsc::Sender<tapi::AttachRequest>,
    mut matcher: Option<DetachMatcher>,
    detached: tokio::sync::oneshot::Sender<()>,
) {
    use tapi::attach_request::Item;
    while let Some(mut m) = input.recv().await {
        let mut done = false;
        if let (Some(Item::Stdin(data)), Some(matcher)) = (&mut m.item, matcher.as_mut()) {
            let (pass, hit) = matcher.feed(data);
            *data = pass;
            done = hit;
        }
        let empty = matches!(&m.item, Some(Item::Stdin(d)) if d.is_empty());
        if !empty && tx.send(m).await.is_err() {
            return;
        }
        if done {
            let _ = detached.send(());
            return;
        }
    }
}

/// Sends the signals we receive to the container, as `docker attach --sig-proxy` does.
fn proxy_signals(ctx: Context, id: String) {
    use tokio::signal::unix::{signal, SignalKind};
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        let Ok(mut stream) = signal(SignalKind::from_raw(sig)) else {
            continue;
        };
        let (ctx, id) = (ctx.clone(), id.clone());
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let _ = ctx
                    .tasks()
                    .kill(ctx.req(tapi::KillTaskRequest {
                        container_id: id.clone(),
                        signal: sig as u32,
                        all: false,
                    }))
                    .await;
            }
        });
    }
}
