//! `berth`: the command-line client of berthd. It speaks gRPC only, with Docker's verbs and
//! exit codes (125 engine error, 126 cannot run, 127 not found, else the container's).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// The parsers and formatters are the library target (src/lib.rs), shared with fuzz/.
use berth_cli::{client, format, ports, template};

mod archive;
mod attach;
mod build;
mod commit;
mod completion;
mod containers;
mod content;
mod events;
mod exec;
mod files;
mod images;
mod import;
mod inspect;
mod leases;
mod logs;
mod man;
mod namespaces;
mod networks;
mod port;
mod ps;
mod push;
mod run;
mod snapshots;
mod stdio;
mod system;
mod tasks;
mod trace;
mod usage;
mod verbs;
mod volumes;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: a container engine",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// berthd's address: unix:///path, tcp://host:port, or https://host:port (TLS: see --tlscacert)
    #[arg(
        long,
        global = true,
        env = "BERTH_ADDRESS",
        default_value = "unix:///run/berth/berth.sock"
    )]
    address: String,
    /// Namespace to work in
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    #[command(flatten)]
    tls: client::TlsArgs,
    /// Client config file (reserved)
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// Debug output
    #[arg(long, global = true)]
    debug: bool,
    /// Send a trace of this command (its calls, the services' work and the shims') over
    /// OTLP/gRPC to this collector, e.g. http://127.0.0.1:4317
    #[arg(long, global = true, env = "BERTH_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show client and server versions
    Version,
    /// Pull an image from a registry
    Pull(images::PullArgs),
    /// List images
    Images(images::LsArgs),
    /// Remove images
    Rmi(images::RmArgs),
    /// Manage images
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Give an image another name
    Tag(images::TagArgs),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Push an image to a registry
    Push(push::PushArgs),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
    /// Create a new image from a container's changes
    Commit(commit::CommitArgs),
    /// Create a one-layer image from a rootfs tarball (tar or tar.gz, - for standard input)
    Import(import::ImportArgs),
    /// Log in to a registry
    Login(push::LoginArgs),
    /// Log out from a registry
    Logout(push::LogoutArgs),
    /// Save images to a tar archive (docker save's format), to standard output by default
    Save(archive::SaveArgs),
    /// Load images from a tar archive (docker save's or an OCI layout), from standard input by default
    Load(archive::LoadArgs),
    /// Run a command in a new container
    Run(Box<run::RunArgs>),
    /// Create a container without starting it
    Create(Box<run::RunArgs>),
    /// Start stopped containers
    Start(containers::StartArgs),
    /// Stop running containers
    Stop(containers::StopArgs),
    /// Restart containers
    Restart(containers::StopArgs),
    /// Send a signal to containers
    Kill(containers::KillArgs),
    /// Pause all processes within containers
    Pause(containers::NamesArgs),
    /// Unpause all processes within containers
    Unpause(containers::NamesArgs),
    /// Wait for containers to exit and print their exit codes
    Wait(containers::NamesArgs),
    /// Remove containers
    Rm(containers::RmArgs),
    /// List containers
    Ps(ps::PsArgs),
    /// Show a container's logs
    Logs(logs::LogsArgs),
    /// List a container's published ports, or the host side of one of them
    Port(port::PortArgs),
    /// Run a command in a running container
    Exec(exec::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(attach::AttachArgs),
    /// Show containers' or images' details as JSON
    Inspect(inspect::InspectArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(files::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(files::ExportArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(files::CpArgs),
    /// Rename a container
    Rename(files::RenameArgs),
    /// Update configuration of one or more containers
    Update(files::UpdateArgs),
    /// Stream container and image events
    Events(events::EventsArgs),
    /// Display the running processes of a container
    Top(usage::TopArgs),
    /// Display system-wide information
    Info,
    /// Manage the engine: disk usage, prune, events, info
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Manage builds: the build cache
    #[command(subcommand)]
    Builder(system::BuilderCommand),
    /// Display a live stream of containers' resource usage statistics
    Stats(usage::StatsArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(containers::ContainerCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Manage namespaces (ctr-style)
    #[command(subcommand, visible_alias = "ns", alias = "namespaces")]
    Namespace(namespaces::NamespaceCommand),
    /// Inspect and remove snapshots (ctr-style)
    #[command(alias = "snapshots")]
    Snapshot(snapshots::SnapshotArgs),
    /// Inspect and remove blobs of the content store (ctr-style)
    #[command(subcommand)]
    Content(content::ContentCommand),
    /// Inspect tasks: processes and cgroup metrics (ctr-style)
    #[command(subcommand, alias = "tasks")]
    Task(tasks::TaskCommand),
    /// List work in flight, stop it (ctr-style)
    #[command(subcommand, alias = "leases")]
    Lease(leases::LeaseCommand),
    /// Print berth's completion script for a shell
    Completion(completion::CompletionArgs),
    /// Write one man page per command into a folder
    #[command(hide = true)]
    Man(man::ManArgs),
}

fn main() -> ExitCode {
    // Usage errors exit 125 as Docker's CLI does (help and version: 0).
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                | ErrorKind::MissingSubcommand => 0,
                _ => 125,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Completion scripts and man pages come from the command tree alone: no daemon, no runtime.
    match cli.command {
        Command::Completion(a) => return ExitCode::from(completion::completion(&a)),
        Command::Man(a) => return ExitCode::from(man::man(&a)),
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start: {e}");
            return ExitCode::from(125);
        }
    };
    // One trace per command, only when asked for: nothing is set up otherwise.
    let traced = match cli.otlp_endpoint.as_deref() {
        Some(endpoint) => match trace::start(endpoint, &cli.namespace) {
            Ok(attached) => Some(attached),
            Err(e) => {
                eprintln!("berth: {e}");
                return ExitCode::from(125);
            }
        },
        None => None,
    };
    let code = rt.block_on(dispatch(cli));
    drop(traced);
    trace::finish(Some(code));
    // Stdin readers may still block in a thread; exit without waiting for them.
    rt.shutdown_background();
    ExitCode::from(code)
}

async fn dispatch(cli: Cli) -> u8 {
    let ctx = match client::Context::new(&cli.address, &cli.namespace, &cli.tls) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let r = match cli.command {
        Command::Version => version(&ctx).await,
        Command::Pull(a) => images::pull(&ctx, a).await,
        Command::Images(a) => images::ls(&ctx, a).await,
        Command::Rmi(a) => images::rm(&ctx, a).await,
        Command::Image(images::ImageCommand::Inspect {
            format: Some(format),
            images,
        }) => {
            let a = inspect::InspectArgs {
                format: Some(format),
                kind: Some("image".into()),
                names: images,
            };
            return inspect::inspect(&ctx, a).await;
        }
        Command::Image(c) => images::image(&ctx, c).await,
        Command::Tag(a) => images::tag(&ctx, a).await,
        Command::History(a) => images::history(&ctx, a).await,
        Command::Push(a) => push::push(&ctx, a).await,
        Command::Build(a) => return build::build(&ctx, a).await,
        Command::Commit(a) => commit::commit(&ctx, a).await,
        Command::Import(a) => import::import(&ctx, a).await,
        Command::Login(a) => push::login(&ctx, a).await,
        Command::Logout(a) => push::logout(&ctx, a).await,
        Command::Save(a) => archive::save(&ctx, a).await,
        Command::Load(a) => archive::load(&ctx, a).await,
        Command::Run(a) => return run::run(&ctx, *a).await,
        Command::Create(a) => containers::create(&ctx, &a).await,
        Command::Start(a) => return containers::start(&ctx, a).await,
        Command::Stop(a) => return containers::stop(&ctx, a).await,
        Command::Restart(a) => return containers::restart(&ctx, a).await,
        Command::Kill(a) => return containers::kill(&ctx, a).await,
        Command::Pause(a) => return containers::pause(&ctx, a, true).await,
        Command::Unpause(a) => return containers::pause(&ctx, a, false).await,
        Command::Wait(a) => return containers::wait(&ctx, a).await,
        Command::Rm(a) => return containers::rm(&ctx, a).await,
        Command::Ps(a) => ps::ps(&ctx, a).await,
        Command::Logs(a) => logs::logs(&ctx, a).await,
        Command::Port(a) => return port::port(&ctx, a).await,
        Command::Exec(a) => return exec::exec(&ctx, a).await,
        Command::Attach(a) => return attach::attach(&ctx, a).await,
        Command::Inspect(a) => return inspect::inspect(&ctx, a).await,
        Command::Diff(a) => files::diff(&ctx, a).await,
        Command::Export(a) => files::export(&ctx, a).await,
        Command::Cp(a) => files::cp(&ctx, a).await,
        Command::Rename(a) => files::rename(&ctx, a).await,
        Command::Update(a) => return files::update(&ctx, a).await,
        Command::Events(a) => events::events(&ctx, a).await,
        Command::Top(a) => usage::top(&ctx, a).await,
        Command::Info => system::info(&ctx).await,
        Command::System(c) => system::system(&ctx, c).await,
        Command::Builder(c) => system::builder(&ctx, c).await,
        Command::Stats(a) => usage::stats(&ctx, a).await,
        Command::Container(c) => return containers::container(&ctx, c).await,
        Command::Volume(c) => return volumes::volume(&ctx, c).await,
        Command::Network(c) => return networks::network(&ctx, c).await,
        Command::Namespace(c) => return namespaces::namespace(&ctx, c).await,
        Command::Snapshot(a) => return snapshots::snapshot(&ctx, a).await,
        Command::Content(c) => return content::content(&ctx, c).await,
        Command::Task(c) => return tasks::task(&ctx, c).await,
        Command::Lease(c) => return leases::lease(&ctx, c).await,
        // Answered in main, before the runtime starts.
        Command::Completion(_) | Command::Man(_) => return 0,
    };
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Prints an error for a person and gives the exit code it deserves.
pub fn fail(e: client::Error) -> u8 {
    eprintln!("berth: {e}");
    e.exit_code()
}

async fn version(ctx: &client::Context) -> Result<(), client::Error> {
    println!(
        "Client:\n Version:\t{}\n OS/Arch:\t{}/{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let v = ctx
        .version()
        .version(ctx.req(berth_api::version::v1::VersionRequest {}))
        .await?
        .into_inner();
    println!(
        "\nServer:\n Version:\t{}\n Services:\t{}\n OS/Arch:\t{}/{}\n Kernel:\t{}",
        v.version,
        v.services.join(", "),
        v.os,
        v.arch,
        v.kernel
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
