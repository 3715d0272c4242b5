//! `berth run`: create a container from an image, attach its stdio, start it, and end with
//! its exit code.

use crate::client::{Context, Error};
use berth_api::containers::v1 as capi;
use berth_api::tasks::v1 as tapi;
use clap::Args;
use std::io::{IsTerminal, Read, Write};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open and feed it to the container
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Run in the background and print the container id
    #[arg(short, long)]
    pub detach: bool,
    /// Name the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (K=V, or K to take it from here)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir")]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container host name
    #[arg(long)]
    pub hostname: Option<String>,
    /// Override the image's entrypoint
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Memory limit (e.g. 32m, 1g)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPUs (e.g. 0.5)
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Network: none or host
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Mount the rootfs read-only
    #[arg(long)]
    pub read_only: bool,
    /// The image to run
    pub image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Docker's RAMInBytes: a number with an optional b/k/m/g/t suffix, binary units.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|x| !x.is_empty() && x.ends_with(['k', 'm', 'g', 't']))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: use a number with an optional unit b, k, m or g")
    })?;
    if v < 0.0 {
        return Err(format!("invalid size {s:?}: it is negative"));
    }
    Ok((v * mult as f64) as i64)
}

impl RunArgs {
    pub fn config(&self) -> Result<capi::ContainerConfig, Error> {
        let memory = match &self.memory {
            Some(m) => {
                let v = parse_memory(m).map_err(Error::Local)?;
                if v > 0 && v < 6 << 20 {
                    return Err(Error::Local("Minimum memory limit allowed is 6MB".into()));
                }
                v
            }
            None => 0,
        };
        let nano_cpus = match self.cpus {
            Some(c) if c < 0.0 => {
                return Err(Error::Local("invalid --cpus: it must be positive".into()))
            }
            Some(c) => (c * 1e9) as i64,
            None => 0,
        };
        let env = self
            .env
            .iter()
            .filter_map(|e| {
                if e.contains('=') {
                    Some(e.clone())
                } else {
                    std::env::var(e).ok().map(|v| format!("{e}={v}"))
                }
            })
            .collect();
        Ok(capi::ContainerConfig {
            image: self.image.clone(),
            cmd: self.command.clone(),
            entrypoint: self
                .entrypoint
                .iter()
                .filter(|e| !e.is_empty())
                .cloned()
                .collect(),
            entrypoint_set: self.entrypoint.is_some(),
            env,
            working_dir: self.workdir.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            hostname: self.hostname.clone().unwrap_or_default(),
            tty: self.tty,
            open_stdin: self.interactive,
            memory,
            nano_cpus,
            pids_limit: self.pids_limit.unwrap_or(0),
            network_mode: self.network.clone().unwrap_or_default(),
            labels: Default::default(),
            auto_remove: self.rm,
            read_only: self.read_only,
            snapshotter: String::new(),
        })
    }
}

/// Creates the container, pulling its image first when it is not here.
pub async fn create(
    ctx: &Context,
    name: Option<&str>,
    config: capi::ContainerConfig,
) -> Result<capi::Container, Error> {
    let req = capi::CreateContainerRequest {
        name: name.unwrap_or_default().to_string(),
        config: Some(config.clone()),
    };
    let r = match ctx.containers().create(ctx.req(req.clone())).await {
        Err(s) if s.code() == tonic::Code::NotFound && s.message().starts_with("No such image") => {
            let shown = berth_core::Reference::parse(&config.image)
                .map(|r| r.familiar())
                .unwrap_or_else(|_| config.image.clone());
            eprintln!("Unable to find image '{shown}' locally");
            crate::images::pull_image(ctx, &config.image, false, None).await?;
            ctx.containers().create(ctx.req(req)).await?
        }
        r => r?,
    };
    r.into_inner()
        .container
        .ok_or_else(|| Error::Local("berthd created no container".into()))
}

/// Puts the terminal in raw mode while it lives.
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enable() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        match tcgetattr(&stdin) {
            Ok(saved) => {
                let mut raw = saved.clone();
                cfmakeraw(&mut raw);
                let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
                RawTerminal(Some(saved))
            }
            Err(_) => RawTerminal(None),
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn terminal_size() -> Option<(u32, u32)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own; fd 1 or 0 is ours to query.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0
        || unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// Attaches to a created task, starts it, relays stdio and returns the exit code.
pub async fn attach_and_start(
    ctx: &Context,
    id: &str,
    stdin: bool,
    tty: bool,
) -> Result<i32, Error> {
    let (tx, rx) = mpsc::channel::<tapi::AttachRequest>(32);
    tx.send(tapi::AttachRequest {
        item: Some(tapi::attach_request::Item::Start(tapi::AttachStart {
            container_id: id.to_string(),
            stdin,
        })),
    })
    .await
    .map_err(|_| Error::Local("attach stream closed".into()))?;
    let mut output = ctx
        .tasks()
        .attach(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await?
        .into_inner();

    let _raw = (tty && std::io::stdin().is_terminal()).then(RawTerminal::enable);
    if tty {
        if let Some((w, h)) = terminal_size() {
            let _ = tx
                .send(tapi::AttachRequest {
                    item: Some(tapi::attach_request::Item::Resize(tapi::ResizeRequest {
                        container_id: id.to_string(),
                        width: w,
                        height: h,
                    })),
                })
                .await;
        }
        let (tx2, id2) = (tx.clone(), id.to_string());
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((w, h)) = terminal_size() {
                    let r = tapi::ResizeRequest {
                        container_id: id2.clone(),
                        width: w,
                        height: h,
                    };
                    if tx2
                        .send(tapi::AttachRequest {
                            item: Some(tapi::attach_request::Item::Resize(r)),
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
    }
    if stdin {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let m = tapi::AttachRequest {
                            item: Some(tapi::attach_request::Item::Stdin(buf[..n].to_vec())),
                        };
                        if tx.blocking_send(m).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.blocking_send(tapi::AttachRequest {
                item: Some(tapi::attach_request::Item::CloseStdin(true)),
            });
        });
    }

    ctx.tasks()
        .start(ctx.req(tapi::StartTaskRequest {
            container_id: id.to_string(),
        }))
        .await?;

    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(msg) = output.next().await {
        match msg?.item {
            Some(tapi::attach_response::Item::Stdout(b)) => {
                stdout.write_all(&b)?;
                stdout.flush()?;
            }
            Some(tapi::attach_response::Item::Stderr(b)) => {
                stderr.write_all(&b)?;
                stderr.flush()?;
            }
            Some(tapi::attach_response::Item::Exit(e)) => return Ok(e.exit_code),
            None => {}
        }
    }
    drop(tx);
    // The stream ended without an exit message: ask for the status.
    let w = ctx
        .tasks()
        .wait(ctx.req(tapi::WaitTaskRequest {
            container_id: id.to_string(),
        }))
        .await?
        .into_inner();
    Ok(w.exit.map(|e| e.exit_code).unwrap_or(125))
}

pub async fn run(ctx: &Context, a: RunArgs) -> u8 {
    let config = match a.config() {
        Ok(c) => c,
        Err(e) => return crate::fail(e),
    };
    let container = match create(ctx, a.name.as_deref(), config).await {
        Ok(c) => c,
        Err(e) => return crate::fail(e),
    };
    let id = container.id.clone();
    let cleanup = |ctx: Context, id: String| async move {
        let _ = ctx
            .tasks()
            .delete(ctx.req(tapi::DeleteTaskRequest {
                container_id: id.clone(),
            }))
            .await;
        let _ = ctx
            .containers()
            .delete(ctx.req(capi::DeleteContainerRequest { id }))
            .await;
    };
    if let Err(e) = ctx
        .tasks()
        .create(ctx.req(tapi::CreateTaskRequest {
            container_id: id.clone(),
        }))
        .await
    {
        if a.rm {
            cleanup(ctx.clone(), id).await;
        }
        return crate::fail(e.into());
    }
    if a.detach {
        if let Err(e) = ctx
            .tasks()
            .start(ctx.req(tapi::StartTaskRequest {
                container_id: id.clone(),
            }))
            .await
        {
            return crate::fail(e.into());
        }
        println!("{id}");
        return 0;
    }
    let r = attach_and_start(ctx, &id, a.interactive, a.tty).await;
    if a.rm {
        cleanup(ctx.clone(), id).await;
    } else {
        let _ = ctx
            .tasks()
            .delete(ctx.req(tapi::DeleteTaskRequest { container_id: id }))
            .await;
    }
    match r {
        Ok(code) => (code & 0xff) as u8,
        Err(e) => crate::fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("32m"), Ok(32 << 20));
        assert_eq!(parse_memory("32M"), Ok(32 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("1gb"), Ok(1 << 30));
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_memory("512k"), Ok(512 << 10));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("-1m").is_err());
    }
}
