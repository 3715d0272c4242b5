//! Container verbs: create, start, stop, restart, kill, pause, unpause, wait, rm, prune, and
//! `berth container …`, which also reaches ps, logs, exec, inspect and port in their own rooms.
//! A container is named by full id, unique id prefix or name: the runtime resolves the string
//! as given. How a container reads as Docker shows it is berth-docker's
//! (`berth_docker::containers`), shared with the gateway.

use crate::client::{Context, Error};
use crate::exec::ExecArgs;
use crate::inspect::InspectArgs;
use crate::logs::LogsArgs;
use crate::ps::PsArgs;
use crate::run::{parse_signal, RunArgs};
use crate::verbs::{done, each, print_deleted};
use berth_api::containers::v1 as capi;
use berth_api::tasks::v1 as tapi;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach stdout/stderr and return the container's exit code
    #[arg(short, long)]
    pub attach: bool,
    /// Attach stdin
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(
        short = 't',
        long = "time",
        alias = "timeout",
        allow_negative_numbers = true
    )]
    pub time: Option<i32>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send (name like KILL or SIGTERM, or number)
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first
    #[arg(short, long)]
    pub force: bool,
    /// Remove the anonymous volumes of the container too
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers
    #[command(alias = "list", alias = "ps")]
    Ls(PsArgs),
    /// Create and run a container
    Run(Box<RunArgs>),
    /// Create a container
    Create(Box<RunArgs>),
    /// Start stopped containers
    Start(StartArgs),
    /// Stop running containers
    Stop(StopArgs),
    /// Restart containers
    Restart(StopArgs),
    /// Send a signal to containers
    Kill(KillArgs),
    /// Pause all processes within containers
    Pause(NamesArgs),
    /// Unpause all processes within containers
    Unpause(NamesArgs),
    /// Wait for containers to exit and print their exit codes
    Wait(NamesArgs),
    /// Remove containers
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove every stopped container
    Prune(PruneArgs),
    /// Show containers' details as JSON
    Inspect(InspectArgs),
    /// Show a container's logs
    Logs(LogsArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(crate::attach::AttachArgs),
    /// List a container's published ports, or the host side of one of them
    Port(crate::port::PortArgs),
}

/// Runs a container subcommand; gives the exit code.
pub async fn container(ctx: &Context, c: ContainerCommand) -> u8 {
    match c {
        ContainerCommand::Ls(a) => done(crate::ps::ps(ctx, a).await),
        ContainerCommand::Run(a) => crate::run::run(ctx, *a).await,
        ContainerCommand::Create(a) => done(create(ctx, &a).await),
        ContainerCommand::Start(a) => start(ctx, a).await,
        ContainerCommand::Stop(a) => stop(ctx, a).await,
        ContainerCommand::Restart(a) => restart(ctx, a).await,
        ContainerCommand::Kill(a) => kill(ctx, a).await,
        ContainerCommand::Pause(a) => pause(ctx, a, true).await,
        ContainerCommand::Unpause(a) => pause(ctx, a, false).await,
        ContainerCommand::Wait(a) => wait(ctx, a).await,
        ContainerCommand::Rm(a) => rm(ctx, a).await,
        ContainerCommand::Prune(a) => done(prune(ctx, a).await),
        ContainerCommand::Inspect(mut a) => {
            a.kind = Some("container".into());
            crate::inspect::inspect(ctx, a).await
        }
        ContainerCommand::Logs(a) => done(crate::logs::logs(ctx, a).await),
        ContainerCommand::Exec(a) => crate::exec::exec(ctx, a).await,
        ContainerCommand::Attach(a) => crate::attach::attach(ctx, a).await,
        ContainerCommand::Port(a) => crate::port::port(ctx, a).await,
    }
}

pub(crate) async fn get(ctx: &Context, name: &str) -> Result<capi::Container, Error> {
    ctx.containers()
        .get(ctx.req(capi::GetContainerRequest {
            id: name.to_string(),
        }))
        .await?
        .into_inner()
        .container
        .ok_or_else(|| Error::Local(format!("No such container: {name}")))
}

pub async fn create(ctx: &Context, a: &RunArgs) -> Result<(), Error> {
    let config = a.config()?;
    let c = crate::run::create(ctx, a.name.as_deref(), config).await?;
    println!("{}", c.id);
    Ok(())
}

/// Creates the task of a stopped (or never started) container; one that exists is kept.
async fn ensure_task(ctx: &Context, id: &str) -> Result<(), Error> {
    match ctx
        .tasks()
        .create(ctx.req(tapi::CreateTaskRequest {
            container_id: id.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(s.into()),
    }
}

async fn start_one(ctx: &Context, name: &str) -> Result<(), Error> {
    let c = get(ctx, name).await?;
    if c.state.as_ref().is_some_and(|s| s.status == "running") {
        return Ok(());
    }
    ensure_task(ctx, &c.id).await?;
    ctx.tasks()
        .start(ctx.req(tapi::StartTaskRequest {
            container_id: c.id.clone(),
        }))
        .await?;
    Ok(())
}

pub async fn start(ctx: &Context, a: StartArgs) -> u8 {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return crate::fail(Error::Local(
                "you cannot start and attach multiple containers at once".into(),
            ));
        }
        let name = &a.containers[0];
        let r = async {
            let c = get(ctx, name).await?;
            if c.state.as_ref().is_some_and(|s| s.status == "running") {
                return Err(Error::Local(format!(
                    "container {name} is already running; use `berth logs -f` or `berth exec`"
                )));
            }
            ensure_task(ctx, &c.id).await?;
            let tty = c.config.as_ref().is_some_and(|c| c.tty);
            crate::run::attach_and_start(ctx, &c.id, a.interactive, tty).await
        }
        .await;
        return match r {
            Ok(code) => (code & 0xff) as u8,
            Err(e) => crate::fail(e),
        };
    }
    each(&a.containers, |n| async move {
        start_one(ctx, &n).await?;
        println!("{n}");
        Ok(())
    })
    .await
}

async fn stop_one(ctx: &Context, name: &str, time: Option<i32>) -> Result<(), Error> {
    ctx.tasks()
        .stop(ctx.req(tapi::StopTaskRequest {
            container_id: name.to_string(),
            timeout: time.unwrap_or(0),
            has_timeout: time.is_some(),
        }))
        .await?;
    Ok(())
}

pub async fn stop(ctx: &Context, a: StopArgs) -> u8 {
    each(&a.containers, |n| async move {
        stop_one(ctx, &n, a.time).await?;
        println!("{n}");
        Ok(())
    })
    .await
}

pub async fn restart(ctx: &Context, a: StopArgs) -> u8 {
    each(&a.containers, |n| async move {
        let c = get(ctx, &n).await?;
        if c.state
            .as_ref()
            .is_some_and(|s| s.status == "running" || s.status == "restarting")
        {
            stop_one(ctx, &c.id, a.time).await?;
        }
        start_one(ctx, &c.id).await?;
        println!("{n}");
        Ok(())
    })
    .await
}

pub async fn kill(ctx: &Context, a: KillArgs) -> u8 {
    let signal = match parse_signal(&a.signal) {
        Ok(s) => s as u32,
        Err(e) => return crate::fail(Error::Local(e)),
    };
    each(&a.containers, |n| async move {
        ctx.tasks()
            .kill(ctx.req(tapi::KillTaskRequest {
                container_id: n.clone(),
                signal,
                all: false,
            }))
            .await?;
        println!("{n}");
        Ok(())
    })
    .await
}

/// Freezes a running container's processes (Tasks.Pause), or thaws a paused one's
/// (Tasks.Resume).
pub(crate) async fn set_paused(ctx: &Context, name: &str, paused: bool) -> Result<(), Error> {
    let container_id = name.to_string();
    if paused {
        ctx.tasks()
            .pause(ctx.req(tapi::PauseTaskRequest { container_id }))
            .await?;
    } else {
        ctx.tasks()
            .resume(ctx.req(tapi::ResumeTaskRequest { container_id }))
            .await?;
    }
    Ok(())
}

/// `pause` (`paused`) or `unpause` each container, printing its name as given.
pub async fn pause(ctx: &Context, a: NamesArgs, paused: bool) -> u8 {
    each(&a.containers, |n| async move {
        set_paused(ctx, &n, paused).await?;
        println!("{n}");
        Ok(())
    })
    .await
}

pub async fn wait(ctx: &Context, a: NamesArgs) -> u8 {
    each(&a.containers, |n| async move {
        let w = ctx
            .tasks()
            .wait(ctx.req(tapi::WaitTaskRequest { container_id: n }))
            .await?
            .into_inner();
        println!("{}", w.exit.map(|e| e.exit_code).unwrap_or(0));
        Ok(())
    })
    .await
}

pub async fn rm(ctx: &Context, a: RmArgs) -> u8 {
    each(&a.containers, |n| async move {
        ctx.containers()
            .delete(ctx.req(capi::DeleteContainerRequest {
                id: n.clone(),
                force: a.force,
                remove_volumes: a.volumes,
            }))
            .await?;
        println!("{n}");
        Ok(())
    })
    .await
}

pub async fn prune(ctx: &Context, a: PruneArgs) -> Result<(), Error> {
    if !a.force && !crate::stdio::confirm("This will remove all stopped containers.") {
        return Ok(());
    }
    let r = ctx
        .containers()
        .prune(ctx.req(capi::PruneContainersRequest {}))
        .await?
        .into_inner();
    print_deleted("Containers", &r.deleted);
    println!("Total reclaimed space: 0B");
    Ok(())
}

/// Containers that the tests of ps and inspect look at.
#[cfg(test)]
pub(crate) mod examples {
    use berth_api::containers::v1 as capi;

    pub(crate) fn container(name: &str, status: &str, image: &str) -> capi::Container {
        capi::Container {
            id: format!("{:0<64}", name.len()),
            name: name.into(),
            image: berth_core::Reference::parse(image).unwrap().to_string(),
            image_id: "sha256:abcdef0123".into(),
            config: Some(capi::ContainerConfig {
                image: image.into(),
                ..Default::default()
            }),
            state: Some(capi::ContainerState {
                status: status.into(),
                exit_code: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn binding(ip: &str, host: u32, container: u32) -> capi::PortBinding {
        capi::PortBinding {
            host_ip: ip.into(),
            host_port: host,
            container_port: container,
            protocol: "tcp".into(),
        }
    }

    /// A running container on the bridge and a user network, 80 published on 8080 and 5000
    /// exposed by its image.
    pub(crate) fn networked() -> capi::Container {
        let mut c = container("web", "running", "busybox");
        let cfg = c.config.as_mut().unwrap();
        cfg.port_bindings = vec![binding("", 8080, 80), binding("127.0.0.1", 0, 81)];
        cfg.dns = vec!["1.1.1.1".into()];
        cfg.extra_hosts = vec!["db:10.0.0.5".into()];
        c.networks = vec!["bridge".into(), "front".into()];
        let endpoint = |network: &str, ip: &str, gateway: &str| capi::Endpoint {
            network: network.into(),
            network_id: format!("{network}-id"),
            ip_address: ip.into(),
            ip_prefix_len: 16,
            gateway: gateway.into(),
            mac_address: "02:42:0a:58:00:02".into(),
            interface: "eth0".into(),
        };
        c.network_settings = Some(capi::NetworkSettings {
            endpoints: vec![
                endpoint("front", "10.77.0.2", "10.77.0.1"),
                endpoint("bridge", "10.88.0.2", "10.88.0.1"),
            ],
            ports: vec![
                binding("", 8080, 80),
                binding("127.0.0.1", 32768, 81),
                binding("", 0, 5000),
            ],
            sandbox_key: "/run/berth/netns/abc".into(),
        });
        c
    }
}
