//! Container verbs: create, start, stop, restart, kill, pause, unpause, wait, rm, ps, logs,
//! exec, inspect, prune, plus `events` and `volume`. A container is named by full id, unique id prefix or
//! name: the runtime resolves the string as given.

use crate::client::{Context, Error};
use crate::filters::{label_matches, Filters};
use crate::format;
use crate::run::{parse_signal, RunArgs};
use crate::stdio::{relay_resizes, relay_stdin, write_stderr, write_stdout, RawTerminal};
use crate::template::{Format, ListFormat};
use berth_api::containers::v1 as capi;
use berth_api::events::v1 as eapi;
use berth_api::tasks::v1 as tapi;
use berth_api::volumes::v1 as vapi;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

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
pub struct PsArgs {
    /// Show all containers (default shows running ones)
    #[arg(short, long)]
    pub all: bool,
    /// Filter: status=…, name=…, ancestor=…, id=…, label=…, network=…, publish=…, expose=…
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    #[command(flatten)]
    pub output: crate::template::ListFormat,
}

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

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format the output with a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Only look for this kind of object: container or image
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Filter: type=…, event=…, container=…, image=…
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Events of every namespace
    #[arg(long)]
    pub all_namespaces: bool,
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
    /// List a container's published ports, or the host side of one of them
    Port(crate::port::PortArgs),
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create {
        name: Option<String>,
        /// Labels (K=V)
        #[arg(short, long = "label")]
        label: Vec<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove volumes
    #[command(alias = "remove")]
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show volumes' details as JSON
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs a container subcommand; gives the exit code.
pub async fn container(ctx: &Context, c: ContainerCommand) -> u8 {
    match c {
        ContainerCommand::Ls(a) => done(ps(ctx, a).await),
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
            inspect(ctx, a).await
        }
        ContainerCommand::Logs(a) => done(logs(ctx, a).await),
        ContainerCommand::Exec(a) => exec(ctx, a).await,
        ContainerCommand::Port(a) => crate::port::port(ctx, a).await,
    }
}

/// `--label K=V` values (a lone `K` is an empty label), later ones winning.
pub fn parse_labels(labels: &[String]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

pub fn done(r: Result<(), Error>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(e) => crate::fail(e),
    }
}

/// Runs `f` for every name, printing errors as they come; the exit code of the last error.
pub(crate) async fn each<F, Fut>(names: &[String], mut f: F) -> u8
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut code = 0;
    for n in names {
        if let Err(e) = f(n.clone()).await {
            code = crate::fail(e);
        }
    }
    code
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

/// Prints what a prune removed as Docker does: `Deleted KIND:`, one line each, a blank line;
/// nothing when it removed nothing.
pub fn print_deleted(kind: &str, deleted: &[String]) {
    if !deleted.is_empty() {
        println!("Deleted {kind}:");
        for d in deleted {
            println!("{d}");
        }
        println!();
    }
}

// ---- ps ----------------------------------------------------------------------------------

/// A container's state as Docker names it: "paused" for a running container that is paused
/// (berthd keeps it "running" with `paused` set), "created" when it never ran.
pub fn state_name(st: &capi::ContainerState) -> &str {
    match st.status.as_str() {
        "" => "created",
        "running" if st.paused => "paused",
        s => s,
    }
}

/// `ps` filters.
#[derive(Debug, Default, PartialEq)]
pub struct PsFilters(Filters);

const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

impl PsFilters {
    pub fn parse(filters: &[String]) -> Result<PsFilters, String> {
        Filters::parse(filters, |k, v| match k {
            "status" if !STATUSES.contains(&v) => Err(format!(
                "invalid filter 'status={v}' (use one of {})",
                STATUSES.join(", ")
            )),
            "publish" | "expose" => crate::ports::parse_port_filter(v).map(|_| ()),
            "status" | "name" | "ancestor" | "id" | "label" | "exited" | "network" => Ok(()),
            _ => Err(format!("invalid filter '{k}'")),
        })
        .map(PsFilters)
    }

    /// Whether a status filter is given (Docker then lists stopped containers too).
    pub fn has_status(&self) -> bool {
        self.0.has("status") || self.0.has("exited")
    }

    pub fn matches(&self, c: &capi::Container) -> bool {
        let st = c.state.clone().unwrap_or_default();
        let status = state_name(&st);
        self.0.matches(|k, v| match k {
            "status" => status == v,
            "exited" => status == "exited" && v.parse::<i32>() == Ok(st.exit_code),
            "name" => crate::filters::name_matches(&c.name, v),
            "id" => c.id.starts_with(v),
            "ancestor" => ancestor_matches(c, v),
            "network" => network_names(c).iter().any(|n| n == v),
            "publish" => live_ports(c).iter().any(|p| {
                p.host_port != 0 && crate::ports::port_filter_matches(v, p.host_port, &p.protocol)
            }),
            "expose" => live_ports(c)
                .iter()
                .chain(c.config.iter().flat_map(|c| c.port_bindings.iter()))
                .any(|p| crate::ports::port_filter_matches(v, p.container_port, &p.protocol)),
            "label" => label_matches(&c.labels, v),
            _ => false,
        })
    }
}

fn ancestor_matches(c: &capi::Container, want: &str) -> bool {
    let id = c.image_id.trim_start_matches("sha256:");
    let w = want.trim_start_matches("sha256:");
    if !w.is_empty()
        && w.len() >= 4
        && id.starts_with(w)
        && w.chars().all(|c| c.is_ascii_hexdigit())
    {
        return true;
    }
    let given = c.config.as_ref().map(|c| c.image.as_str()).unwrap_or("");
    for have in [c.image.as_str(), given] {
        if have.is_empty() {
            continue;
        }
        if have == want {
            return true;
        }
        let (Ok(h), Ok(w)) = (
            berth_core::Reference::parse(have),
            berth_core::Reference::parse_name_only(want),
        ) else {
            continue;
        };
        let same = if w.tag().is_none() && w.digest().is_none() {
            h.repository() == w.repository()
        } else {
            h.to_string() == w.to_string()
        };
        if same {
            return true;
        }
    }
    false
}

/// The command a container runs: the spec's process args, else entrypoint + cmd.
fn command_of(c: &capi::Container) -> Vec<String> {
    let spec: serde_json::Value = serde_json::from_slice(&c.spec).unwrap_or_default();
    if let Some(a) = spec.pointer("/process/args").and_then(|a| a.as_array()) {
        return a
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect();
    }
    let cfg = c.config.clone().unwrap_or_default();
    cfg.entrypoint.into_iter().chain(cfg.cmd).collect()
}

fn image_shown(c: &capi::Container) -> String {
    match c.config.as_ref().map(|c| c.image.as_str()) {
        Some(i) if !i.is_empty() => i.to_string(),
        _ => berth_core::Reference::parse(&c.image)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| c.image.clone()),
    }
}

fn secs(t: Option<&berth_api::prost_types::Timestamp>) -> i64 {
    t.map(|t| t.seconds).unwrap_or(0)
}

/// The networks a container is on, by name: those it joins, or the mode of a host or none
/// container (Docker lists those as networks too).
fn network_names(c: &capi::Container) -> Vec<String> {
    if !c.networks.is_empty() {
        return c.networks.clone();
    }
    match c.config.as_ref().map(|c| c.network_mode.as_str()) {
        Some(m @ ("host" | "none")) => vec![m.to_string()],
        _ => Vec::new(),
    }
}

/// The ports a running container has (none when it does not run).
fn live_ports(c: &capi::Container) -> &[capi::PortBinding] {
    c.network_settings
        .as_ref()
        .map(|n| n.ports.as_slice())
        .unwrap_or_default()
}

/// One container as `ps --format` sees it (Docker's field names).
fn ps_json(c: &capi::Container, output: &ListFormat, now: i64) -> serde_json::Value {
    let st = c.state.clone().unwrap_or_default();
    let labels: BTreeMap<_, _> = c.labels.iter().collect();
    let mounts: Vec<&str> = c
        .mounts
        .iter()
        .map(|m| {
            if m.name.is_empty() {
                &m.source
            } else {
                &m.name
            }
        })
        .map(String::as_str)
        .collect();
    serde_json::json!({
        "ID": output.id(&c.id),
        "Image": image_shown(c),
        "Command": format::command(&command_of(c), !output.no_trunc),
        "CreatedAt": format::created_at(c.created_at.as_ref()),
        "RunningFor": format::ago(secs(c.created_at.as_ref())),
        "Ports": crate::ports::ps_column(live_ports(c)),
        "State": state_name(&st),
        "Status": format::status_text(
            state_name(&st),
            st.exit_code,
            secs(st.started_at.as_ref()),
            secs(st.finished_at.as_ref()),
            now,
        ),
        "Names": c.name.trim_start_matches('/'),
        "Labels": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Mounts": mounts.join(","),
        "Networks": network_names(c).join(","),
    })
}

const PS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
];

pub async fn ps(ctx: &Context, a: PsArgs) -> Result<(), Error> {
    let filters = PsFilters::parse(&a.filter).map_err(Error::Local)?;
    let mut list = ctx
        .containers()
        .list(ctx.req(capi::ListContainersRequest {}))
        .await?
        .into_inner()
        .containers;
    let all = a.all || filters.has_status();
    list.retain(|c| {
        let status = c.state.as_ref().map(|s| s.status.as_str()).unwrap_or("");
        (all || matches!(status, "running" | "restarting" | "paused")) && filters.matches(c)
    });
    list.sort_by_key(|c| std::cmp::Reverse(secs(c.created_at.as_ref())));
    let now = chrono::Utc::now().timestamp();
    let objects: Vec<_> = list.iter().map(|c| ps_json(c, &a.output, now)).collect();
    let table = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
    a.output.print(table, PS_COLUMNS, &objects)
}

// ---- logs --------------------------------------------------------------------------------

pub async fn logs(ctx: &Context, a: LogsArgs) -> Result<(), Error> {
    let (tail, has_tail) = match a.tail.as_deref() {
        None | Some("all") => (0, false),
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n < 0 => (0, false),
            Ok(n) => (n, true),
            Err(_) => {
                return Err(Error::Local(format!(
                    "invalid --tail {n:?}: use a number or all"
                )))
            }
        },
    };
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
            let mut d = format::rfc3339_nano_fixed(e.time.as_ref()).into_bytes();
            d.push(b' ');
            d.extend_from_slice(&e.data);
            d
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

// ---- exec --------------------------------------------------------------------------------

pub async fn exec(ctx: &Context, a: ExecArgs) -> u8 {
    match exec_inner(ctx, a).await {
        Ok(code) => (code & 0xff) as u8,
        Err(e) => crate::fail(e),
    }
}

async fn exec_inner(ctx: &Context, a: ExecArgs) -> Result<i32, Error> {
    let env = a
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
    let _raw = (tty && std::io::stdin().is_terminal()).then(RawTerminal::enable);
    if tty {
        relay_resizes(&tx, &a.container, |r| tapi::ExecRequest {
            item: Some(tapi::exec_request::Item::Resize(r)),
        })
        .await;
    }
    if stdin {
        relay_stdin(
            tx.clone(),
            |b| tapi::ExecRequest {
                item: Some(tapi::exec_request::Item::Stdin(b)),
            },
            || tapi::ExecRequest {
                item: Some(tapi::exec_request::Item::CloseStdin(true)),
            },
        );
    }
    while let Some(m) = output.next().await {
        match m?.item {
            Some(tapi::exec_response::Item::Stdout(b)) => write_stdout(&b)?,
            Some(tapi::exec_response::Item::Stderr(b)) => write_stderr(&b)?,
            Some(tapi::exec_response::Item::Exit(e)) => return Ok(e.exit_code),
            Some(tapi::exec_response::Item::Pid(_)) | None => {}
        }
    }
    drop(tx);
    Err(Error::Local(
        "the exec stream ended without an exit status".into(),
    ))
}

// ---- inspect -----------------------------------------------------------------------------

/// The Docker-shaped JSON of a container; `image` is the image's config (for its defaults).
/// `network_ids` maps network names to ids, for the networks of a container that does not run.
pub fn container_json(
    c: &capi::Container,
    image: Option<&serde_json::Value>,
    network_ids: &BTreeMap<String, String>,
) -> serde_json::Value {
    use serde_json::{json, Value};
    let cfg = c.config.clone().unwrap_or_default();
    let st = c.state.clone().unwrap_or_default();
    let spec: Value = serde_json::from_slice(&c.spec).unwrap_or_default();
    let args = command_of(c);
    let img_cfg = image
        .and_then(|i| i.get("config"))
        .cloned()
        .unwrap_or_default();
    let img = |k: &str| img_cfg.get(k).cloned().unwrap_or(Value::Null);
    let list = |v: &[String]| {
        if v.is_empty() {
            Value::Null
        } else {
            json!(v)
        }
    };
    let cmd = if cfg.cmd.is_empty() {
        img("Cmd")
    } else {
        json!(cfg.cmd)
    };
    let entrypoint = if cfg.entrypoint_set {
        list(&cfg.entrypoint)
    } else {
        img("Entrypoint")
    };
    let env = spec
        .pointer("/process/env")
        .cloned()
        .unwrap_or_else(|| list(&cfg.env));
    let hostname = spec
        .get("hostname")
        .and_then(|h| h.as_str())
        .map(String::from)
        .unwrap_or_else(|| cfg.hostname.clone());
    let working_dir = spec
        .pointer("/process/cwd")
        .and_then(|h| h.as_str())
        .map(String::from)
        .unwrap_or_else(|| cfg.working_dir.clone());
    let stop_signal = if cfg.stop_signal.is_empty() {
        img("StopSignal")
    } else {
        json!(cfg.stop_signal)
    };
    let restart = cfg.restart_policy.clone().unwrap_or_default();
    let status = state_name(&st);
    let mut labels: BTreeMap<String, String> = c.labels.clone().into_iter().collect();
    labels.extend(cfg.labels.clone());
    let network_mode = if cfg.network_mode.is_empty() {
        "default".to_string()
    } else {
        cfg.network_mode.clone()
    };
    let mut exposed: BTreeMap<String, Value> = img_cfg
        .get("ExposedPorts")
        .and_then(|e| e.as_object())
        .map(|e| e.keys().map(|k| (k.clone(), json!({}))).collect())
        .unwrap_or_default();
    for p in &cfg.port_bindings {
        exposed.insert(crate::ports::key(p), json!({}));
    }
    let mut j = json!({
        "Id": c.id,
        "Created": format::rfc3339(c.created_at.as_ref()),
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": status,
            "Running": matches!(status, "running" | "restarting" | "paused"),
            "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": st.oom_killed,
            "Dead": status == "dead",
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": format::rfc3339(st.started_at.as_ref()),
            "FinishedAt": format::rfc3339(st.finished_at.as_ref()),
        },
        "Image": c.image_id,
        "LogPath": c.log_path,
        "Name": format!("/{}", c.name.trim_start_matches('/')),
        "RestartCount": st.restart_count,
        "Driver": c.snapshotter,
        "HostConfig": {
            "Binds": list(&cfg.binds),
            "NetworkMode": network_mode,
            "RestartPolicy": {
                "Name": if restart.name.is_empty() { "no".to_string() } else { restart.name.clone() },
                "MaximumRetryCount": restart.maximum_retry_count,
            },
            "AutoRemove": cfg.auto_remove,
            "ReadonlyRootfs": cfg.read_only,
            "Memory": cfg.memory,
            "NanoCpus": cfg.nano_cpus,
            "PidsLimit": if cfg.pids_limit > 0 { json!(cfg.pids_limit) } else { Value::Null },
            "PortBindings": crate::ports::bindings_json(&cfg.port_bindings, true),
            "PublishAllPorts": cfg.publish_all,
            "Dns": cfg.dns,
            "DnsOptions": cfg.dns_options,
            "DnsSearch": cfg.dns_search,
            "ExtraHosts": list(&cfg.extra_hosts),
            "CapAdd": list(&cfg.cap_add),
            "CapDrop": list(&cfg.cap_drop),
            "Privileged": cfg.privileged,
            "SecurityOpt": list(&cfg.security_opt),
            "Tmpfs": if cfg.tmpfs.is_empty() {
                Value::Null
            } else {
                cfg.tmpfs
                    .iter()
                    .map(|t| {
                        let (d, o) = t.split_once(':').unwrap_or((t, ""));
                        (d.to_string(), json!(o))
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            },
        },
        "Mounts": c.mounts.iter().map(|m| json!({
            "Type": m.r#type,
            "Name": m.name,
            "Source": m.source,
            "Destination": m.destination,
            "RW": m.rw,
        })).collect::<Vec<_>>(),
        "Config": {
            "Hostname": hostname,
            "User": if cfg.user.is_empty() { img("User") } else { json!(cfg.user) },
            "Tty": cfg.tty,
            "OpenStdin": cfg.open_stdin,
            "Env": env,
            "Cmd": cmd,
            "Image": image_shown(c),
            "WorkingDir": working_dir,
            "Entrypoint": entrypoint,
            "Labels": labels,
            "StopSignal": stop_signal,
            "StopTimeout": if cfg.stop_timeout > 0 { json!(cfg.stop_timeout) } else { Value::Null },
        },
        "NetworkSettings": network_settings_json(c, network_ids),
    });
    if !exposed.is_empty() {
        j["Config"]["ExposedPorts"] = json!(exposed);
    }
    j
}

/// Docker's NetworkSettings of a container: its endpoints while it runs (the top-level
/// addresses from the one on the network named bridge, as Docker fills them), and the
/// networks it joins with empty addresses when it does not run.
fn network_settings_json(
    c: &capi::Container,
    network_ids: &BTreeMap<String, String>,
) -> serde_json::Value {
    use serde_json::json;
    let ns = c.network_settings.clone().unwrap_or_default();
    let endpoint = |network_id: &str, e: &capi::Endpoint| {
        json!({
            "IPAMConfig": null,
            "Links": null,
            "Aliases": null,
            "NetworkID": network_id,
            "EndpointID": "",
            "Gateway": e.gateway,
            "IPAddress": e.ip_address,
            "IPPrefixLen": e.ip_prefix_len,
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "MacAddress": e.mac_address,
            "DriverOpts": null,
        })
    };
    let mut networks = serde_json::Map::new();
    for e in &ns.endpoints {
        networks.insert(e.network.clone(), endpoint(&e.network_id, e));
    }
    for n in network_names(c) {
        if !networks.contains_key(&n) {
            let id = network_ids.get(&n).map(String::as_str).unwrap_or_default();
            networks.insert(n, endpoint(id, &capi::Endpoint::default()));
        }
    }
    let bridge = ns
        .endpoints
        .iter()
        .find(|e| e.network == "bridge")
        .cloned()
        .unwrap_or_default();
    json!({
        "Bridge": "",
        "SandboxID": "",
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": crate::ports::bindings_json(&ns.ports, false),
        "SandboxKey": ns.sandbox_key,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": "",
        "Gateway": bridge.gateway,
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": bridge.ip_address,
        "IPPrefixLen": bridge.ip_prefix_len,
        "IPv6Gateway": "",
        "MacAddress": bridge.mac_address,
        "Networks": networks,
    })
}

/// Every network's id by name; none when the daemon has no network service.
async fn network_ids(ctx: &Context) -> BTreeMap<String, String> {
    let list = ctx
        .networks()
        .list(ctx.req(berth_api::networks::v1::ListNetworksRequest {}))
        .await;
    list.map(|r| {
        r.into_inner()
            .networks
            .into_iter()
            .map(|n| (n.name, n.id))
            .collect()
    })
    .unwrap_or_default()
}

async fn image_config(ctx: &Context, name: &str) -> Option<serde_json::Value> {
    let r = ctx
        .images()
        .inspect(ctx.req(berth_api::images::v1::InspectImageRequest {
            name: name.to_string(),
        }))
        .await
        .ok()?;
    serde_json::from_slice(&r.get_ref().config).ok()
}

/// One object by name: a container first, then an image (as Docker looks them up).
async fn inspect_one(
    ctx: &Context,
    name: &str,
    kind: Option<&str>,
) -> Result<serde_json::Value, Error> {
    if kind != Some("image") {
        match get(ctx, name).await {
            Ok(c) => {
                let image = if c.image_id.is_empty() {
                    image_config(ctx, &c.image).await
                } else {
                    match image_config(ctx, &c.image_id).await {
                        Some(i) => Some(i),
                        None => image_config(ctx, &c.image).await,
                    }
                };
                let live = c.network_settings.as_ref().map(|n| &n.endpoints);
                let ids = if network_names(&c)
                    .iter()
                    .all(|n| live.is_some_and(|l| l.iter().any(|e| e.network == *n)))
                {
                    BTreeMap::new()
                } else {
                    network_ids(ctx).await
                };
                return Ok(container_json(&c, image.as_ref(), &ids));
            }
            Err(e) if e.is_not_found() => {
                if kind == Some("container") {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    match ctx
        .images()
        .inspect(ctx.req(berth_api::images::v1::InspectImageRequest {
            name: name.to_string(),
        }))
        .await
    {
        Ok(r) => Ok(crate::images::inspect_json(r.get_ref())),
        Err(s) if s.code() == tonic::Code::NotFound && kind.is_none() => {
            Err(Error::Local(format!("Error: No such object: {name}")))
        }
        Err(s) => Err(s.into()),
    }
}

/// Looks every name up with `get`: the objects found and the errors, each in order.
pub async fn lookup_all<F, Fut>(
    names: &[String],
    mut get: F,
) -> (Vec<serde_json::Value>, Vec<Error>)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, Error>>,
{
    let (mut objects, mut errors) = (Vec::new(), Vec::new());
    for n in names {
        match get(n.clone()).await {
            Ok(o) => objects.push(o),
            Err(e) => errors.push(e),
        }
    }
    (objects, errors)
}

/// Prints objects as a JSON array, or each through a template; the exit code.
pub fn print_objects(
    objects: Vec<serde_json::Value>,
    format: Option<&str>,
    errors: Vec<Error>,
) -> u8 {
    let mut code = 0;
    match format {
        Some(f) => match Format::parse(f) {
            Ok(t) => {
                for o in &objects {
                    match t.render(o) {
                        Ok(s) => println!("{s}"),
                        Err(e) => code = crate::fail(Error::Local(e)),
                    }
                }
            }
            Err(e) => return crate::fail(Error::Local(e)),
        },
        None => println!(
            "{}",
            serde_json::to_string_pretty(&objects).unwrap_or_default()
        ),
    }
    for e in errors {
        code = crate::fail(e);
    }
    code
}

pub async fn inspect(ctx: &Context, a: InspectArgs) -> u8 {
    let kind = a.kind.as_deref();
    if let Some(k) = kind {
        if k != "container" && k != "image" {
            return crate::fail(Error::Local(format!(
                "\"{k}\" is not a valid value for --type (use container or image)"
            )));
        }
    }
    if let Some(f) = &a.format {
        if let Err(e) = Format::parse(f) {
            return crate::fail(Error::Local(e));
        }
    }
    let (objects, errors) = lookup_all(
        &a.names,
        |n| async move { inspect_one(ctx, &n, kind).await },
    )
    .await;
    print_objects(objects, a.format.as_deref(), errors)
}

// ---- events ------------------------------------------------------------------------------

/// One line of `berth events`, as Docker prints it.
pub fn event_line(e: &eapi::Envelope) -> String {
    let attrs: BTreeMap<_, _> = e.attributes.iter().collect();
    let attrs = attrs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut line = format!(
        "{} {} {} {}",
        format::rfc3339_nano_fixed(e.timestamp.as_ref()),
        e.r#type,
        e.action,
        e.id
    );
    if !attrs.is_empty() {
        line.push_str(&format!(" ({attrs})"));
    }
    line
}

pub async fn events(ctx: &Context, a: EventsArgs) -> Result<(), Error> {
    loop {
        let mut s = ctx
            .events()
            .subscribe(ctx.req(eapi::SubscribeRequest {
                filters: a.filter.clone(),
                all_namespaces: a.all_namespaces,
            }))
            .await?
            .into_inner();
        loop {
            match s.next().await {
                Some(Ok(e)) => write_stdout(format!("{}\n", event_line(&e)).as_bytes())?,
                Some(Err(st)) if st.code() == tonic::Code::ResourceExhausted => {
                    eprintln!("berth: warning: {}; subscribing again", st.message());
                    break;
                }
                Some(Err(st)) => return Err(st.into()),
                None => return Ok(()),
            }
        }
    }
}

// ---- volumes -----------------------------------------------------------------------------

fn volume_json(v: &vapi::Volume) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": format::rfc3339(v.created_at.as_ref()),
        "Driver": if v.driver.is_empty() { "local" } else { v.driver.as_str() },
        "Labels": v.labels.iter().collect::<BTreeMap<_, _>>(),
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": serde_json::Value::Null,
        "Scope": "local",
    })
}

pub async fn volume(ctx: &Context, c: VolumeCommand) -> u8 {
    match c {
        VolumeCommand::Create { name, label } => done(
            async {
                let labels = parse_labels(&label).into_iter().collect();
                let v = ctx
                    .volumes()
                    .create(ctx.req(vapi::CreateVolumeRequest {
                        name: name.unwrap_or_default(),
                        labels,
                    }))
                    .await?
                    .into_inner();
                println!("{}", v.name);
                Ok(())
            }
            .await,
        ),
        VolumeCommand::Ls { quiet } => done(
            async {
                let mut vs = ctx
                    .volumes()
                    .list(ctx.req(vapi::ListVolumesRequest {}))
                    .await?
                    .into_inner()
                    .volumes;
                vs.sort_by(|a, b| a.name.cmp(&b.name));
                if quiet {
                    for v in &vs {
                        println!("{}", v.name);
                    }
                    return Ok(());
                }
                let mut rows = vec![vec!["DRIVER".to_string(), "VOLUME NAME".to_string()]];
                for v in &vs {
                    let d = if v.driver.is_empty() {
                        "local"
                    } else {
                        &v.driver
                    };
                    rows.push(vec![d.to_string(), v.name.clone()]);
                }
                print!("{}", format::table(&rows));
                Ok(())
            }
            .await,
        ),
        VolumeCommand::Rm { force, names } => {
            each(&names, |n| async move {
                ctx.volumes()
                    .remove(ctx.req(vapi::RemoveVolumeRequest {
                        name: n.clone(),
                        force,
                    }))
                    .await?;
                println!("{n}");
                Ok(())
            })
            .await
        }
        VolumeCommand::Inspect { format, names } => {
            let (objects, errors) = lookup_all(&names, |name| async move {
                let v = ctx
                    .volumes()
                    .get(ctx.req(vapi::GetVolumeRequest { name }))
                    .await?;
                Ok(volume_json(v.get_ref()))
            })
            .await;
            print_objects(objects, format.as_deref(), errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, status: &str, image: &str) -> capi::Container {
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

    fn f(s: &[&str]) -> PsFilters {
        PsFilters::parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn ps_filters_parse() {
        assert!(PsFilters::parse(&["status=bogus".into()]).is_err());
        assert!(PsFilters::parse(&["colour=red".into()]).is_err());
        assert!(PsFilters::parse(&["nonsense".into()]).is_err());
        assert!(f(&["status=exited"]).has_status());
        assert!(!f(&["name=x"]).has_status());
    }

    #[test]
    fn ps_filters_match_like_docker() {
        let web = container("web", "running", "busybox");
        let db = container("db", "exited", "127.0.0.1:5000/busybox:1.0");
        assert!(f(&["status=running"]).matches(&web));
        assert!(!f(&["status=running"]).matches(&db));
        // The same key ORs.
        let either = f(&["status=running", "status=exited"]);
        assert!(either.matches(&web) && either.matches(&db));
        // Different keys AND.
        assert!(!f(&["status=running", "name=db"]).matches(&web));
        assert!(f(&["status=exited", "name=db"]).matches(&db));
        assert!(f(&["name=we"]).matches(&web));
        assert!(f(&["ancestor=busybox"]).matches(&web));
        assert!(f(&["ancestor=busybox:latest"]).matches(&web));
        assert!(!f(&["ancestor=busybox"]).matches(&db));
        assert!(f(&["ancestor=127.0.0.1:5000/busybox"]).matches(&db));
        assert!(f(&["ancestor=abcdef"]).matches(&db));
        assert!(f(&["exited=3"]).matches(&db));
        assert!(!f(&["exited=0"]).matches(&db));
    }

    #[test]
    fn inspect_is_docker_shaped() {
        let mut c = container("web", "running", "busybox");
        c.spec = br#"{"hostname":"abc","process":{"args":["sh","-c","echo hi"],"env":["A=1"],"cwd":"/"}}"#.to_vec();
        c.config.as_mut().unwrap().restart_policy = Some(capi::RestartPolicy {
            name: "on-failure".into(),
            maximum_retry_count: 3,
        });
        let image = serde_json::json!({"config": {"Cmd": ["sh"], "StopSignal": "SIGQUIT"}});
        let j = container_json(&c, Some(&image), &BTreeMap::new());
        assert_eq!(j["Name"], "/web");
        assert_eq!(j["Path"], "sh");
        assert_eq!(j["Args"], serde_json::json!(["-c", "echo hi"]));
        assert_eq!(j["State"]["Status"], "running");
        assert_eq!(j["State"]["Running"], true);
        assert_eq!(j["State"]["StartedAt"], "0001-01-01T00:00:00Z");
        assert_eq!(j["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
        assert_eq!(j["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
        assert_eq!(j["Config"]["Cmd"], serde_json::json!(["sh"]));
        assert_eq!(j["Config"]["StopSignal"], "SIGQUIT");
        assert_eq!(j["Config"]["Hostname"], "abc");
        let t = Format::parse("{{.State.Status}} {{json .Config.Env}}").unwrap();
        assert_eq!(t.render(&j).unwrap(), r#"running ["A=1"]"#);
    }

    #[test]
    fn a_paused_container_shows_as_docker_does() {
        let mut c = container("web", "running", "busybox");
        let st = c.state.as_mut().unwrap();
        st.paused = true;
        st.started_at = Some(berth_api::prost_types::Timestamp {
            seconds: 100,
            nanos: 0,
        });
        let j = ps_json(&c, &ListFormat::default(), 105);
        assert_eq!(j["State"], "paused");
        assert_eq!(j["Status"], "Up 5 seconds (Paused)");
        assert!(f(&["status=paused"]).matches(&c));
        assert!(!f(&["status=running"]).matches(&c));
        let i = container_json(&c, None, &BTreeMap::new());
        assert_eq!(i["State"]["Status"], "paused");
        assert_eq!(i["State"]["Paused"], true);
        assert_eq!(i["State"]["Running"], true);
        // Thawed, it is running again.
        c.state.as_mut().unwrap().paused = false;
        let j = ps_json(&c, &ListFormat::default(), 105);
        assert_eq!(j["State"], "running");
        assert_eq!(j["Status"], "Up 5 seconds");
        assert!(f(&["status=running"]).matches(&c) && !f(&["status=paused"]).matches(&c));
        let i = container_json(&c, None, &BTreeMap::new());
        assert_eq!(i["State"]["Paused"], false);
        assert_eq!(i["State"]["Status"], "running");
        // `paused` means nothing once the container stopped.
        let st = c.state.as_mut().unwrap();
        st.status = "exited".into();
        st.paused = true;
        assert_eq!(state_name(st), "exited");
        assert_eq!(state_name(&capi::ContainerState::default()), "created");
    }

    fn binding(ip: &str, host: u32, container: u32) -> capi::PortBinding {
        capi::PortBinding {
            host_ip: ip.into(),
            host_port: host,
            container_port: container,
            protocol: "tcp".into(),
        }
    }

    /// A running container on the bridge and a user network, 80 published on 8080 and 5000
    /// exposed by its image.
    fn networked() -> capi::Container {
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

    #[test]
    fn inspect_network_settings_like_docker() {
        use serde_json::json;
        let image = json!({"config": {"ExposedPorts": {"5000/tcp": {}}}});
        let j = container_json(&networked(), Some(&image), &BTreeMap::new());
        let ns = &j["NetworkSettings"];
        assert_eq!(ns["IPAddress"], "10.88.0.2");
        assert_eq!(ns["Gateway"], "10.88.0.1");
        assert_eq!(ns["IPPrefixLen"], 16);
        assert_eq!(ns["SandboxKey"], "/run/berth/netns/abc");
        assert_eq!(ns["SecondaryIPAddresses"], json!(null));
        assert_eq!(
            ns["Ports"],
            json!({
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}],
                "5000/tcp": null,
            })
        );
        assert_eq!(ns["Networks"]["front"]["IPAddress"], "10.77.0.2");
        assert_eq!(ns["Networks"]["front"]["NetworkID"], "front-id");
        assert_eq!(ns["Networks"]["bridge"]["DriverOpts"], json!(null));
        let hc = &j["HostConfig"];
        assert_eq!(hc["NetworkMode"], "default");
        assert_eq!(
            hc["PortBindings"],
            json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                   "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]})
        );
        assert_eq!(hc["PublishAllPorts"], false);
        assert_eq!(hc["Dns"], json!(["1.1.1.1"]));
        assert_eq!(hc["DnsSearch"], json!([]));
        assert_eq!(hc["ExtraHosts"], json!(["db:10.0.0.5"]));
        assert_eq!(hc["CapAdd"], serde_json::Value::Null);
        assert_eq!(hc["Privileged"], false);
        assert_eq!(hc["SecurityOpt"], serde_json::Value::Null);
        assert_eq!(
            j["Config"]["ExposedPorts"],
            json!({"5000/tcp": {}, "80/tcp": {}, "81/tcp": {}})
        );
        let render = |t: &str| Format::parse(t).unwrap().render(&j).unwrap();
        assert_eq!(
            render("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"),
            "10.88.0.2 10.77.0.2 "
        );
        assert_eq!(render("{{.NetworkSettings.IPAddress}}"), "10.88.0.2");
        assert_eq!(
            render("{{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}"),
            "8080"
        );
    }

    #[test]
    fn inspect_of_a_stopped_container_lists_its_networks() {
        use serde_json::json;
        let mut c = networked();
        c.state.as_mut().unwrap().status = "exited".into();
        c.network_settings = None;
        c.networks = vec!["front".into()];
        c.config.as_mut().unwrap().network_mode = "front".into();
        let ids = [("front".to_string(), "f1".to_string())].into();
        let j = container_json(&c, None, &ids);
        let ns = &j["NetworkSettings"];
        assert_eq!(ns["Ports"], json!({}));
        assert_eq!(ns["IPAddress"], "");
        assert_eq!(ns["Networks"]["front"]["NetworkID"], "f1");
        assert_eq!(ns["Networks"]["front"]["IPAddress"], "");
        assert_eq!(ns["Networks"].as_object().unwrap().len(), 1);
        assert_eq!(j["HostConfig"]["NetworkMode"], "front");
        assert_eq!(
            j["Config"].get("ExposedPorts"),
            Some(&json!({"80/tcp": {}, "81/tcp": {}}))
        );
        // host and none show as networks too; a container: one has none.
        c.networks.clear();
        c.config.as_mut().unwrap().network_mode = "host".into();
        let j = container_json(&c, None, &BTreeMap::new());
        assert!(j["NetworkSettings"]["Networks"].get("host").is_some());
        c.config.as_mut().unwrap().network_mode = "container:db".into();
        let j = container_json(&c, None, &BTreeMap::new());
        assert_eq!(j["NetworkSettings"]["Networks"], json!({}));
    }

    #[test]
    fn ps_shows_ports_and_networks() {
        let c = networked();
        let j = ps_json(&c, &ListFormat::default(), 0);
        assert_eq!(
            j["Ports"],
            "5000/tcp, 0.0.0.0:8080->80/tcp, 127.0.0.1:32768->81/tcp"
        );
        assert_eq!(j["Networks"], "bridge,front");
        let out = crate::template::list("{{.Names}}: {{.Ports}}", PS_COLUMNS, &[j]).unwrap();
        assert_eq!(
            out,
            "web: 5000/tcp, 0.0.0.0:8080->80/tcp, 127.0.0.1:32768->81/tcp\n"
        );
        assert!(f(&["network=front"]).matches(&c));
        assert!(!f(&["network=back"]).matches(&c));
        assert!(f(&["publish=8080"]).matches(&c));
        assert!(f(&["publish=8000-8100/tcp"]).matches(&c));
        assert!(!f(&["publish=80"]).matches(&c));
        assert!(!f(&["publish=8080/udp"]).matches(&c));
        assert!(f(&["expose=5000"]).matches(&c));
        assert!(f(&["expose=80"]).matches(&c));
        assert!(PsFilters::parse(&["publish=x".into()]).is_err());
        let stopped = container("db", "exited", "busybox");
        assert_eq!(ps_json(&stopped, &ListFormat::default(), 0)["Ports"], "");
    }

    #[test]
    fn event_lines_like_docker() {
        let e = eapi::Envelope {
            timestamp: Some(berth_api::prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            namespace: "default".into(),
            r#type: "container".into(),
            action: "die".into(),
            id: "abc".into(),
            attributes: [("name", "web"), ("exitCode", "0"), ("image", "busybox")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20.000000000Z container die abc (exitCode=0, image=busybox, name=web)"
        );
    }
}
