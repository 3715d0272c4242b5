//! `berthd`: hosts any subset of berth's services on one socket.
//!
//! Services reach each other through gRPC clients at the addresses in `[services]` of the
//! config (default: this daemon's own socket), so any of them can run in another process.

use anyhow::{bail, Context, Result};
use berth_core::config::{ClientTls, Config, ServerTls, TlsConfig};
use berth_core::grpc::{in_process, server_span, server_tls, tls_channel, Address};
use berth_core::metrics::GrpcMetricsLayer;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::DuplexStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Server};
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};
use tracing::info;

mod cri;
mod gateway;
mod metrics;
mod version;

const ALL_SERVICES: &[&str] = &[
    "image", "snapshot", "runtime", "registry", "events", "build", "gateway", "cri",
];

#[derive(Debug, Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth daemon: hosts the image, snapshot, runtime, registry, events and build services, the Docker Engine API gateway and the Kubernetes CRI"
)]
struct Args {
    /// Config file (TOML)
    #[arg(long, default_value = berth_core::config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Persistent data folder (overrides the config's `root`)
    #[arg(long)]
    root: Option<PathBuf>,
    /// Volatile state folder: sockets, bundles (overrides the config's `state`)
    #[arg(long)]
    state: Option<PathBuf>,
    /// Where to listen: unix:///path or tcp://127.0.0.1:PORT (default unix://<state>/berth.sock)
    #[arg(long)]
    address: Option<String>,
    /// Services to host, comma-separated: image,snapshot,runtime,registry,events,build,gateway,cri
    /// (default: all; the gateway when `[gateway] socket` is set, the CRI when `[cri] socket` is)
    #[arg(long, value_delimiter = ',')]
    service: Vec<String>,
    /// Serve on a tcp:// address beyond loopback even without mutual TLS ([tls] cert, key
    /// and client_ca): whoever reaches it controls this host as root, so only on a network
    /// where every host is trusted
    #[arg(long)]
    insecure_tcp: bool,
    /// Debug logging
    #[arg(long)]
    debug: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let explicit = std::env::args().any(|a| a == "--config" || a.starts_with("--config="));
    let mut config = Config::load(if explicit { Some(&args.config) } else { None })?;
    if let Some(r) = args.root {
        config.root = r;
    }
    if let Some(s) = args.state {
        config.state = s;
    }
    if let Some(a) = args.address {
        config.address = Some(a);
    }
    let services: Vec<String> = if args.service.is_empty() {
        ALL_SERVICES.iter().map(|s| s.to_string()).collect()
    } else {
        args.service.clone()
    };
    for s in &services {
        if !ALL_SERVICES.contains(&s.as_str()) {
            bail!(
                "unknown service {s:?}: choose from {}",
                ALL_SERVICES.join(", ")
            );
        }
    }
    // The gateway and the CRI are served only where their socket is configured: asked for by
    // name without one is a mistake; among "all" they are simply not there.
    let mut services = services;
    for (front, socket) in [
        ("gateway", config.gateway.socket.is_some()),
        ("cri", config.cri.socket.is_some()),
    ] {
        if socket {
            continue;
        }
        if args.service.iter().any(|s| s == front) {
            bail!(
                "service {front} needs a socket: set [{front}] socket in {}",
                args.config.display()
            );
        }
        services.retain(|s| s != front);
    }
    // Two worker threads are plenty for a daemon that mostly waits; it keeps the RSS small.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()?;
    rt.block_on(run(config, services, args.debug, args.insecure_tcp))
}

/// Where berthd listens, refused when it is a TCP address beyond loopback that does not
/// authenticate its clients — no TLS, or TLS without `[tls] client_ca` — and the user did not
/// pass `--insecure-tcp`: the API runs containers as root, so anyone who could call it would
/// own the host. A TCP listener serves TLS whenever `[tls]` has a cert and key; `https://`
/// says that it must.
fn listener(address: &str, tls: &TlsConfig, insecure_tcp: bool) -> Result<Listener> {
    let (h, must_tls) = match Address::parse(address).map_err(anyhow::Error::msg)? {
        Address::Unix(path) => return Ok(Listener::Unix(path)),
        Address::Tcp(h) => (h, false),
        Address::Tls(h) => (h, true),
    };
    let sa: std::net::SocketAddr = h
        .parse()
        .with_context(|| format!("invalid listen address {h}: use an IP address and a port"))?;
    let server = tls.server().map_err(anyhow::Error::msg)?;
    if must_tls && server.is_none() {
        bail!("{address} serves TLS: set cert and key in the [tls] section of the config");
    }
    if !sa.ip().is_loopback() {
        let unauthenticated = match &server {
            None => "without TLS",
            Some(s) if s.client_ca.is_none() => {
                "over TLS without client certificates ([tls] client_ca)"
            }
            Some(_) => "",
        };
        if !unauthenticated.is_empty() {
            if !insecure_tcp {
                bail!(
                    "refusing to serve berthd's API on {address} {unauthenticated}: whoever reaches it can run containers as root on this host. \
                     Set [tls] cert, key and client_ca in the config (mutual TLS), \
                     listen on a unix socket or a loopback address (tcp://127.0.0.1:PORT) and reach it through an SSH tunnel, \
                     or pass --insecure-tcp if every host that can reach {sa} is trusted"
                );
            }
            tracing::warn!(%address, "serving the API beyond loopback {unauthenticated} (--insecure-tcp): anyone who reaches it controls this host");
        }
    }
    Ok(match server {
        Some(tls) => Listener::Tls(sa, tls),
        None => Listener::Tcp(sa),
    })
}

/// A checked listen address.
#[derive(Debug, PartialEq, Eq)]
enum Listener {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
    /// TCP, serving TLS only.
    Tls(std::net::SocketAddr, ServerTls),
}

/// Creates `dir` (berthd's root or state) readable by root alone, as Docker keeps its data root
/// since CVE-2021-41091: unpacked images hold set-id programs and volumes hold containers'
/// data, neither for the host's other users. An existing folder is made so too.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))
}

/// Serves the chosen services until SIGTERM or SIGINT: checks the listen address and the TLS
/// files, makes the data folders private, builds the routes of every hosted service, then
/// listens.
async fn run(config: Config, services: Vec<String>, debug: bool, insecure_tcp: bool) -> Result<()> {
    let _telemetry =
        berth_core::telemetry::init("berthd", config.telemetry.otlp_endpoint.as_deref(), debug)
            .map_err(anyhow::Error::msg)?;
    // Checked before any service starts, so a refused address leaves nothing behind.
    let own = config.address();
    let listen = listener(&own, &config.tls, insecure_tcp)?;
    let mut metrics = metrics::Metrics::new(&config.metrics)?;
    // The TLS files are read now too, so that a bad one stops berthd before any service runs.
    let server = match &listen {
        Listener::Tls(_, tls) => Server::builder()
            .tls_config(server_tls(tls).map_err(anyhow::Error::msg)?)
            .context("[tls] of the config")?,
        _ => Server::builder(),
    };
    let client_tls = config.tls.client();
    for d in [&config.root, &config.state] {
        private_dir(d)?;
    }
    let (channels, own_incoming) = Channels::new(&listen, &own, client_tls);
    let (health_reporter, routes) = common_routes(&services, &config)?;
    let routes = service_routes(routes, &config, &services, &channels, &mut metrics)?;
    for s in &services {
        health_reporter
            .set_service_status(format!("berth.{s}"), tonic_health::ServingStatus::Serving)
            .await;
    }

    let rpc_metrics = metrics.layer();
    metrics.serve()?;

    let wait = shutdown_signal();
    if let Some(incoming) = own_incoming {
        serve_in_process(incoming, routes.clone(), rpc_metrics.clone());
    }
    let gateway_socket = if services.iter().any(|s| s == "gateway") {
        gateway::start(&config, &channels, shutdown_signal())?
    } else {
        None
    };
    let cri_socket = if services.iter().any(|s| s == "cri") {
        cri::start(&config, &channels, shutdown_signal())?
    } else {
        None
    };
    let mut server = server.trace_fn(server_span).layer(rpc_metrics);
    let router = server.add_routes(routes);
    serve(router, listen, &own, &services.join(","), wait).await?;
    for path in gateway_socket.into_iter().chain(cri_socket) {
        let _ = std::fs::remove_file(path);
    }
    info!("berthd stopped");
    Ok(())
}

/// Serves `routes` to the hosted services' in-process connections (when berthd's own address
/// serves TLS).
fn serve_in_process(
    incoming: UnboundedReceiver<DuplexStream>,
    routes: Routes,
    rpc_metrics: GrpcMetricsLayer,
) {
    let internal = Server::builder()
        .trace_fn(server_span)
        .layer(rpc_metrics)
        .add_routes(routes);
    tokio::spawn(internal.serve_with_incoming(
        tokio_stream::wrappers::UnboundedReceiverStream::new(incoming).map(Ok::<_, std::io::Error>),
    ));
}

/// Serves the API on `listen` (berthd's address `own`) until `wait` ends; a unix socket is
/// removed after.
async fn serve(
    router: Router<Stack<GrpcMetricsLayer, Identity>>,
    listen: Listener,
    own: &str,
    services: &str,
    wait: impl std::future::Future<Output = ()>,
) -> Result<()> {
    match listen {
        Listener::Unix(path) => {
            let listener = bind_unix(&path)?;
            info!(address = %own, services = %services, "berthd ready");
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    wait,
                )
                .await?;
            let _ = std::fs::remove_file(&path);
        }
        Listener::Tcp(sa) => {
            info!(address = %own, tls = "none", services = %services, "berthd ready");
            router.serve_with_shutdown(sa, wait).await?;
        }
        Listener::Tls(sa, tls) => {
            let tls = if tls.client_ca.is_some() {
                "mutual"
            } else {
                "server only"
            };
            info!(address = %own, tls, services = %services, "berthd ready");
            router.serve_with_shutdown(sa, wait).await?;
        }
    }
    Ok(())
}

/// How the hosted services reach the others: at the address `[services]` gives one, else at
/// this berthd's own — in process when that serves TLS (berthd's certificate need not name the
/// address it listens on).
struct Channels {
    own: String,
    in_process: Option<Channel>,
    tls: ClientTls,
}

impl Channels {
    /// The channels, and the in-process connections to serve when berthd's address is TLS.
    fn new(
        listen: &Listener,
        own: &str,
        tls: ClientTls,
    ) -> (Channels, Option<UnboundedReceiver<DuplexStream>>) {
        let (in_process, incoming) = match listen {
            Listener::Tls(..) => {
                let (c, incoming) = in_process();
                (Some(c), Some(incoming))
            }
            _ => (None, None),
        };
        let channels = Channels {
            own: own.to_string(),
            in_process,
            tls,
        };
        (channels, incoming)
    }

    /// A channel to the service at `address` (None: hosted by this berthd).
    fn to(&self, address: &Option<String>) -> Result<Channel> {
        match (address, &self.in_process) {
            (None, Some(c)) => Ok(c.clone()),
            _ => tls_channel(address.as_ref().unwrap_or(&self.own), &self.tls)
                .map_err(anyhow::Error::msg),
        }
    }
}

/// The routes every berthd serves: health, server reflection and version.
fn common_routes(services: &[String], config: &Config) -> Result<(HealthReporter, Routes)> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Reflection v1, and v1alpha for the many tools that still speak only that.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(berth_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .context("server reflection")?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .context("server reflection")?;
    let routes = Routes::default()
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(version::serve(
            services.to_vec(),
            config.root.clone(),
            config.snapshotter.clone(),
        ));
    Ok((health_reporter, routes))
}

/// `routes` with those of the hosted services, each opened with its folder under the root and
/// its metrics registered.
fn service_routes(
    mut routes: Routes,
    config: &Config,
    services: &[String],
    channels: &Channels,
    metrics: &mut metrics::Metrics,
) -> Result<Routes> {
    let hosts = |s: &str| services.iter().any(|x| x == s);
    if hosts("events") {
        routes = routes.add_service(berth_events::serve());
    }
    if hosts("registry") {
        routes = routes.add_service(
            berth_registry_proxy::serve(config, &config.root.join("registry-proxy"))
                .context("registry service")?,
        );
    }
    if hosts("snapshot") {
        let snapshots =
            berth_snapshot::Snapshots::open(&config.root.join("snapshot"), &config.snapshotter)
                .context("snapshot service")?
                .with_limits(config.limits);
        let snapshots = Arc::new(snapshots);
        metrics.register(berth_snapshot::metrics::Collector::new(snapshots.clone()));
        routes = routes.add_service(berth_snapshot::service(snapshots));
    }
    if hosts("image") {
        routes = image_routes(routes, config, channels, metrics)?;
    }
    if hosts("runtime") {
        routes = runtime_routes(routes, config, channels, metrics)?;
    }
    if hosts("build") {
        routes = routes.add_service(
            berth_build::serve(
                &config.root.join("build"),
                channels.to(&config.services.image)?,
                channels.to(&config.services.snapshot)?,
                channels.to(&config.services.runtime)?,
                config.limits,
            )
            .context("build service")?,
        );
    }
    Ok(routes)
}

/// `routes` with the image service's: images, content, namespaces and leases.
fn image_routes(
    routes: Routes,
    config: &Config,
    channels: &Channels,
    metrics: &mut metrics::Metrics,
) -> Result<Routes> {
    let image = berth_image::serve(
        &config.root.join("image"),
        channels.to(&config.services.registry)?,
        channels.to(&config.services.snapshot)?,
        Some(channels.to(&config.services.events)?),
        Some(channels.to(&config.services.runtime)?),
        &config.snapshotter,
        config.limits,
    )
    .context("image service")?;
    metrics.register(image.metrics);
    Ok(routes
        .add_service(image.images)
        .add_service(image.content)
        .add_service(image.namespaces)
        .add_service(image.leases))
}

/// `routes` with the runtime service's: containers, tasks, volumes and networks.
fn runtime_routes(
    routes: Routes,
    config: &Config,
    channels: &Channels,
    metrics: &mut metrics::Metrics,
) -> Result<Routes> {
    // Shims detach from berthd; as a subreaper it adopts them and reaps them when they
    // end, instead of leaving zombies to an init that may not reap.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(
            "cannot become a child subreaper: {}",
            std::io::Error::last_os_error()
        );
    }
    let runtime = berth_runtime::serve_all(
        &config.root.join("runtime"),
        &config.state,
        config.runtime.clone(),
        channels.to(&config.services.image)?,
        channels.to(&config.services.snapshot)?,
        Some(channels.to(&config.services.events)?),
    )
    .context("runtime service")?;
    metrics.register(berth_runtime::metrics::Collector(runtime.runtime.clone()));
    Ok(routes
        .add_service(runtime.containers)
        .add_service(runtime.tasks)
        .add_service(runtime.volumes)
        .add_service(runtime.networks))
}

/// Watches for SIGTERM and SIGINT; the returned future ends when one comes.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let shutdown = Arc::new(tokio::sync::Notify::new());
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            shutdown.notify_waiters();
        });
    }
    async move { shutdown.notified().await }
}

/// Listens on the unix socket `path`, root only (mode 0600), in place of a stale one.
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))
        }
    }
    // Root only: the socket is created with mode 0600.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    listener.with_context(|| format!("cannot listen on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_beyond_loopback_needs_insecure_tcp() {
        let plain = TlsConfig::default();
        for address in [
            "tcp://0.0.0.0:7000",
            "tcp://10.1.2.3:7000",
            "tcp://[::]:7000",
        ] {
            let e = listener(address, &plain, false).unwrap_err().to_string();
            assert!(
                e.contains("--insecure-tcp") && e.contains(address) && e.contains("client_ca"),
                "{e}"
            );
            assert!(listener(address, &plain, true).is_ok(), "{address}");
        }
        let local = |a: &str| listener(a, &plain, false).unwrap();
        assert_eq!(
            local("tcp://127.0.0.1:7000"),
            Listener::Tcp("127.0.0.1:7000".parse().unwrap())
        );
        assert!(matches!(local("tcp://[::1]:7000"), Listener::Tcp(_)));
        assert_eq!(
            local("unix:///run/b.sock"),
            Listener::Unix("/run/b.sock".into())
        );
        assert!(
            listener("tcp://localhost:7000", &plain, true).is_err(),
            "an IP address"
        );
    }

    #[test]
    fn mutual_tls_serves_beyond_loopback() {
        let mutual = TlsConfig {
            cert: Some("/t/s.pem".into()),
            key: Some("/t/s.key".into()),
            client_ca: Some("/t/ca.pem".into()),
            ..TlsConfig::default()
        };
        let server = mutual.server().unwrap().unwrap();
        for address in ["tcp://0.0.0.0:7000", "https://10.1.2.3:7000"] {
            let sa = address.rsplit('/').next().unwrap().parse().unwrap();
            assert_eq!(
                listener(address, &mutual, false).unwrap(),
                Listener::Tls(sa, server.clone())
            );
        }
        assert!(
            matches!(
                listener("tcp://127.0.0.1:7000", &mutual, false).unwrap(),
                Listener::Tls(..)
            ),
            "configured TLS is served on loopback too"
        );
        assert_eq!(
            listener("unix:///run/b.sock", &mutual, false).unwrap(),
            Listener::Unix("/run/b.sock".into()),
            "never on a unix socket"
        );

        // TLS without client certificates lets anyone in: as plain TCP beyond loopback.
        let server_only = TlsConfig {
            client_ca: None,
            ..mutual.clone()
        };
        let e = listener("tcp://0.0.0.0:7000", &server_only, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("without client certificates") && e.contains("--insecure-tcp"),
            "{e}"
        );
        assert!(matches!(
            listener("tcp://0.0.0.0:7000", &server_only, true).unwrap(),
            Listener::Tls(..)
        ));
        assert!(matches!(
            listener("tcp://127.0.0.1:7000", &server_only, false).unwrap(),
            Listener::Tls(..)
        ));

        let e = listener("https://127.0.0.1:7000", &TlsConfig::default(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[tls]"), "{e}");
        let half = TlsConfig {
            key: None,
            ..mutual
        };
        assert!(listener("tcp://0.0.0.0:7000", &half, true).is_err());
    }
}
