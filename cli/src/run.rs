//! `berth run`: create a container from an image, attach its stdio, start it, and end with
//! its exit code.

use crate::client::{Context, Error};
use crate::stdio::{print_output, relay_terminal};
use berth_api::containers::v1 as capi;
use berth_api::tasks::v1 as tapi;
use clap::Args;
use tokio::sync::mpsc;

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
    /// Connect to a network: bridge (the default), host, none, container:NAME|ID, or a
    /// network's name or id (see `berth network ls`)
    #[arg(long = "network", alias = "net", value_name = "NETWORK")]
    pub network: Option<String>,
    /// Add a network-scoped alias for the container (on its user network)
    #[arg(long = "network-alias", value_name = "ALIAS")]
    pub network_alias: Vec<String>,
    /// Publish a container's port(s) to the host: [IP:][HOST:]CONTAINER[/tcp|/udp], ports or
    /// ranges (8000-8001:80-81); no HOST = a free port
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on free host ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports (PORT[-PORT][/tcp|/udp]) beside the image's: -P
    /// publishes them, inspect lists them
    #[arg(long = "expose", value_name = "PORT")]
    pub expose: Vec<String>,
    /// Set a custom DNS server (instead of the host's)
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// Set a custom DNS search domain
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// Set a DNS option (resolv.conf's options, e.g. ndots:2)
    #[arg(long = "dns-option", alias = "dns-opt", value_name = "OPTION")]
    pub dns_option: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Mount the rootfs read-only
    #[arg(long)]
    pub read_only: bool,
    /// Add Linux capabilities (NET_ADMIN, CAP_SYS_TIME, ALL)
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (MKNOD, ALL)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Add a host device: HOST[:CONTAINER][:PERMISSIONS] (r, w, m; default rwm)
    #[arg(long = "device", value_name = "DEVICE")]
    pub device: Vec<String>,
    /// Give extended privileges: every capability, no seccomp filter, the host's devices
    #[arg(long)]
    pub privileged: bool,
    /// Security options: seccomp=unconfined, seccomp=PROFILE.json (Docker's format),
    /// no-new-privileges
    #[arg(long = "security-opt", value_name = "OPTION")]
    pub security_opt: Vec<String>,
    /// Restart policy: no, always, on-failure[:max-retries], unless-stopped
    #[arg(long)]
    pub restart: Option<String>,
    /// Bind mount or volume: SRC:DST[:ro|rw][,PROPAGATION] (SRC absolute = host path, else a
    /// volume name; PROPAGATION of a host path: rprivate, rslave, rshared…)
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Mount a tmpfs: DST[:OPTIONS] (size=64m, mode=1777, exec, …)
    #[arg(long = "tmpfs", value_name = "DST[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=SRC,target=DST[,readonly]
    /// [,tmpfs-size=BYTES][,tmpfs-mode=MODE]
    #[arg(long = "mount", value_name = "SPEC")]
    pub mount: Vec<String>,
    /// Signal to stop the container (default the image's, else SIGTERM)
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds to wait before killing the container on stop
    #[arg(long)]
    pub stop_timeout: Option<i32>,
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

/// Docker's restart policies: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
pub fn parse_restart(s: &str) -> Result<capi::RestartPolicy, String> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (s, None),
    };
    let name = match name {
        "" | "no" => "no",
        "always" | "unless-stopped" | "on-failure" => name,
        _ => {
            return Err(format!(
                "invalid restart policy {s:?}: use no, always, on-failure[:max-retries] or unless-stopped"
            ))
        }
    };
    let maximum_retry_count = match count {
        None => 0,
        Some(_) if name != "on-failure" => {
            return Err(format!(
                "invalid restart policy {s:?}: maximum retry count can only be used with on-failure"
            ))
        }
        Some(c) => c.parse::<i32>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            format!("invalid restart policy {s:?}: maximum retry count must be a number >= 0")
        })?,
    };
    Ok(capi::RestartPolicy {
        name: name.to_string(),
        maximum_retry_count,
    })
}

/// Checks `-v SRC:DST[:ro|rw]` (or a lone `DST`, an anonymous volume) and gives it back.
pub fn parse_bind(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("invalid volume specification: '{s}': {why}");
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, mode] => (*src, *dst, *mode),
        _ => return Err(bad("use SRC:DST[:ro|rw]")),
    };
    if parts.len() > 1 && src.is_empty() {
        return Err(bad("the source is empty"));
    }
    if !dst.starts_with('/') {
        return Err(bad("the destination must be an absolute path"));
    }
    if dst == "/" {
        return Err(bad("the destination cannot be /"));
    }
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        let propagation = matches!(
            m,
            "rprivate" | "private" | "rslave" | "slave" | "rshared" | "shared"
        );
        if !propagation && !matches!(m, "ro" | "rw" | "z" | "Z" | "nocopy") {
            return Err(bad(&format!(
                "unknown mode {m:?} (use ro or rw, and a propagation: rprivate, rslave, rshared…)"
            )));
        }
    }
    if !src.is_empty() && !src.starts_with('/') {
        let ok = src
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && src
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(bad(
                "a volume name is [a-zA-Z0-9][a-zA-Z0-9_.-]; a host path must be absolute",
            ));
        }
    }
    Ok(s.to_string())
}

/// A signal by name (`KILL`, `SIGTERM`, `sigint`) or number (`9`); gives its number.
/// `--expose PORT[-PORT][/tcp|/udp]` as `PORT/PROTO` entries, one per port of a range.
pub fn parse_expose(s: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    if proto != "tcp" && proto != "udp" {
        return Err(format!(
            "invalid --expose {s:?}: the protocol is tcp or udp"
        ));
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid --expose {s:?}: {p:?} is not a port"))
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if last < first {
        return Err(format!(
            "invalid --expose {s:?}: the range ends before it starts"
        ));
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

pub fn parse_signal(s: &str) -> Result<i32, String> {
    berth_core::signal::parse(s).map_err(|e| e.to_string())
}

/// Checks `--add-host NAME:IP` (the address may be IPv6: the name ends at the first colon).
pub fn parse_add_host(s: &str) -> Result<String, String> {
    let bad = |why: String| format!("invalid argument {s:?} for \"--add-host\" flag: {why}");
    let Some((name, ip)) = s.split_once(':') else {
        return Err(bad("use NAME:IP".into()));
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
        return Err(bad(format!("invalid host name {name:?}")));
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(format!("invalid IP address in add-host: {ip:?}")));
    }
    Ok(format!("{name}:{ip}"))
}

/// Checks `--dns IP`.
pub fn parse_dns(s: &str) -> Result<String, String> {
    s.trim()
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| format!("invalid argument {s:?} for \"--dns\" flag: {s} is not an ip address"))
}

/// Checks `--dns-search DOMAIN` as Docker does (`.` alone means none).
pub fn parse_dns_search(s: &str) -> Result<String, String> {
    let d = s.strip_suffix('.').filter(|d| !d.is_empty()).unwrap_or(s);
    let ok = d == "."
        || (!d.is_empty()
            && d.len() <= 255
            && !d.starts_with(['.', '-'])
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)));
    if ok {
        Ok(d.to_string())
    } else {
        Err(format!(
            "invalid argument {s:?} for \"--dns-search\" flag: {s} is not a valid domain"
        ))
    }
}

/// Parses every value of a repeated flag with `f`.
/// One `--device HOST[:CONTAINER][:PERMISSIONS]`, read as Docker reads it: a second part made
/// of r/w/m letters is the permissions. The runtime checks the paths and the letters.
pub fn parse_device(s: &str) -> Result<capi::DeviceMapping, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let is_mode = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, "", ""),
        [h, p] if is_mode(p) => (*h, "", *p),
        [h, c] => (*h, *c, ""),
        [h, c, p] => (*h, *c, *p),
        _ => (s, "", ""),
    };
    if host.is_empty() || parts.len() > 3 {
        return Err(format!(
            "invalid --device {s:?}: use HOST[:CONTAINER][:PERMISSIONS]"
        ));
    }
    Ok(capi::DeviceMapping {
        path_on_host: host.to_string(),
        path_in_container: container.to_string(),
        cgroup_permissions: perms.to_string(),
    })
}

fn all<T>(values: &[String], f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, Error> {
    values
        .iter()
        .map(|v| f(v))
        .collect::<Result<_, _>>()
        .map_err(Error::Local)
}

impl RunArgs {
    /// The network flags (the runtime checks Docker's conflicts between them).
    fn network_config(&self) -> Result<NetworkConfig, Error> {
        let port_bindings = crate::ports::parse_publishes(&self.publish).map_err(Error::Local)?;
        // `default` (what inspect shows as the mode) is the default bridge network.
        let network_mode = self
            .network
            .clone()
            .filter(|n| n != "default")
            .unwrap_or_default();
        Ok(NetworkConfig {
            network_mode,
            port_bindings,
            dns: all(&self.dns, parse_dns)?,
            dns_search: all(&self.dns_search, parse_dns_search)?,
            extra_hosts: all(&self.add_host, parse_add_host)?,
        })
    }

    pub fn config(&self) -> Result<capi::ContainerConfig, Error> {
        let net = self.network_config()?;
        let restart_policy = match &self.restart {
            Some(r) => Some(parse_restart(r).map_err(Error::Local)?),
            None => None,
        };
        let mut binds = self
            .volume
            .iter()
            .map(|v| parse_bind(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Local)?;
        let mut tmpfs = self.tmpfs.clone();
        for m in &self.mount {
            match parse_mount(m).map_err(Error::Local)? {
                MountSpec::Bind(b) => binds.push(parse_bind(&b).map_err(Error::Local)?),
                MountSpec::Tmpfs(t) => tmpfs.push(t),
            }
        }
        if let Some(s) = &self.stop_signal {
            parse_signal(s).map_err(Error::Local)?;
        }
        let memory = match &self.memory {
            Some(m) => parse_memory(m).map_err(Error::Local)?,
            None => 0,
        };
        let nano_cpus = self.cpus.map_or(0, |c| (c * 1e9) as i64);
        let security_opt = self
            .security_opt
            .iter()
            .map(|o| read_security_opt(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Local)?;
        let env = environment(&self.env);
        let config = capi::ContainerConfig {
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
            // As Docker's CLI: an attached -i (run without -d, create) closes stdin at its end.
            stdin_once: self.interactive && !self.detach,
            memory,
            nano_cpus,
            pids_limit: self.pids_limit.unwrap_or(0),
            network_mode: net.network_mode,
            network_aliases: self.network_alias.clone(),
            labels: Default::default(),
            auto_remove: self.rm,
            read_only: self.read_only,
            snapshotter: String::new(),
            restart_policy,
            binds,
            stop_signal: self.stop_signal.clone().unwrap_or_default(),
            stop_timeout: self.stop_timeout.unwrap_or(0),
            port_bindings: net.port_bindings,
            publish_all: self.publish_all,
            exposed_ports: all(&self.expose, parse_expose)?.concat(),
            dns: net.dns,
            dns_search: net.dns_search,
            dns_options: self.dns_option.clone(),
            extra_hosts: net.extra_hosts,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            privileged: self.privileged,
            devices: all(&self.device, parse_device)?,
            security_opt,
            tmpfs,
            // The runtime's own json-file log; no --ipc/--uts/--pid/--sysctl yet.
            ..Default::default()
        };
        for w in berth_docker::create::create_warnings(&config) {
            eprintln!("WARNING: {w}");
        }
        Ok(config)
    }
}

pub use berth_docker::create::MountSpec;

/// Docker's `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]` (CSV of key=value;
/// `src`, `dst`/`destination`, `ro` are accepted too). Options berth does not have are refused,
/// never ignored.
pub fn parse_mount(spec: &str) -> Result<MountSpec, String> {
    let bad = |why: String| format!("invalid argument \"{spec}\" for \"--mount\" flag: {why}");
    let (mut typ, mut src, mut dst) = ("volume".to_string(), String::new(), String::new());
    let (mut readonly, mut tmpfs_opts) = (false, Vec::<String>::new());
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let flag = |v: Option<&str>| match v {
            None | Some("1") | Some("true") => Ok(true),
            Some("0") | Some("false") => Ok(false),
            Some(o) => Err(bad(format!("invalid value for {k}: {o}"))),
        };
        match (k.as_str(), v) {
            ("type", Some(t)) => typ = t.to_string(),
            ("source" | "src", Some(s)) => src = s.to_string(),
            ("target" | "destination" | "dst", Some(d)) => dst = d.to_string(),
            ("readonly" | "ro", v) => readonly = flag(v)?,
            ("tmpfs-size", Some(s)) => {
                tmpfs_opts.push(format!("size={}", parse_memory(s).map_err(bad)?))
            }
            ("tmpfs-mode", Some(m)) => {
                let mode = u32::from_str_radix(m, 8)
                    .map_err(|_| bad(format!("invalid tmpfs-mode {m:?} (octal)")))?;
                tmpfs_opts.push(format!("mode={mode:o}"));
            }
            _ => return Err(bad(format!("unsupported option {field:?}"))),
        }
    }
    berth_docker::create::mount_spec(&typ, &src, &dst, readonly, tmpfs_opts).map_err(bad)
}

/// A `--security-opt` as berthd takes it: `seccomp=FILE` becomes `seccomp=<the file's JSON>`
/// (as Docker's CLI sends it), checked to be JSON here so a typo fails before anything is made.
pub fn read_security_opt(opt: &str) -> Result<String, String> {
    let Some((key, value)) = opt.split_once(['=', ':']) else {
        return Ok(opt.to_string());
    };
    if key != "seccomp" || matches!(value, "unconfined" | "builtin" | "default") {
        return Ok(opt.to_string());
    }
    let text = std::fs::read_to_string(value)
        .map_err(|e| format!("opening seccomp profile ({value}) failed: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("decoding seccomp profile ({value}) failed: {e}"))?;
    Ok(format!("seccomp={json}"))
}

/// The environment `-e` flags give, as Docker reads them: `K=V` as it is, a bare `K` with its
/// value here (left out when it is not set here). `run`, `create` and `exec` share it.
pub fn environment(flags: &[String]) -> Vec<String> {
    flags
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

/// The network part of a container's config, checked.
struct NetworkConfig {
    network_mode: String,
    port_bindings: Vec<capi::PortBinding>,
    dns: Vec<String>,
    dns_search: Vec<String>,
    extra_hosts: Vec<String>,
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

/// Opens Tasks.Attach to container `id`: the sender of its input, and its output.
pub async fn open_attach(
    ctx: &Context,
    id: &str,
    stdin: bool,
) -> Result<
    (
        mpsc::Sender<tapi::AttachRequest>,
        tonic::Streaming<tapi::AttachResponse>,
    ),
    Error,
> {
    let (tx, rx) = mpsc::channel::<tapi::AttachRequest>(32);
    tx.send(tapi::AttachRequest {
        item: Some(tapi::attach_request::Item::Start(tapi::AttachStart {
            container_id: id.to_string(),
            stdin,
        })),
    })
    .await
    .map_err(|_| Error::Local("attach stream closed".into()))?;
    let output = ctx
        .tasks()
        .attach(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await?
        .into_inner();
    Ok((tx, output))
}

/// Attaches to a created task, starts it, relays stdio and returns the exit code.
pub async fn attach_and_start(
    ctx: &Context,
    id: &str,
    stdin: bool,
    tty: bool,
) -> Result<i32, Error> {
    let (tx, mut output) = open_attach(ctx, id, stdin).await?;

    let _raw = relay_terminal(&tx, id, stdin, tty).await;

    ctx.tasks()
        .start(ctx.req(tapi::StartTaskRequest {
            container_id: id.to_string(),
        }))
        .await?;

    if let Some(code) = print_output(&mut output).await? {
        return Ok(code);
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
            .delete(ctx.req(capi::DeleteContainerRequest {
                id,
                force: false,
                remove_volumes: false,
            }))
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
    fn device_reads_dockers_syntax() {
        let d = |s: &str| {
            let m = parse_device(s).unwrap();
            (m.path_on_host, m.path_in_container, m.cgroup_permissions)
        };
        let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(d("/dev/zero"), t("/dev/zero", "", ""));
        assert_eq!(d("/dev/zero:/dev/z"), t("/dev/zero", "/dev/z", ""));
        assert_eq!(d("/dev/zero:r"), t("/dev/zero", "", "r"));
        assert_eq!(d("/dev/zero:/dev/z:rw"), t("/dev/zero", "/dev/z", "rw"));
        for bad in ["", ":/dev/z", "/a:/b:r:x"] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expose_takes_ports_and_ranges() {
        assert_eq!(parse_expose("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_expose("53/udp").unwrap(), ["53/udp"]);
        assert_eq!(
            parse_expose("8000-8002").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        for bad in ["x", "0", "80/sctp", "9-8", "70000"] {
            assert!(parse_expose(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_reads_bare_names_here() {
        let path = std::env::var("PATH").unwrap();
        let flags = ["A=1", "PATH", "BERTH_SURELY_UNSET_VARIABLE", "B="].map(String::from);
        assert_eq!(
            environment(&flags),
            ["A=1".to_string(), format!("PATH={path}"), "B=".into()]
        );
    }

    #[test]
    fn mounts_become_binds_and_tmpfs() {
        use MountSpec::{Bind, Tmpfs};
        assert_eq!(
            parse_mount("type=bind,source=/srv,target=/data,readonly"),
            Ok(Bind("/srv:/data:ro".into()))
        );
        assert_eq!(
            parse_mount("type=volume,src=v1,dst=/data"),
            Ok(Bind("v1:/data".into()))
        );
        assert_eq!(parse_mount("target=/cache"), Ok(Bind("/cache".into())));
        assert_eq!(
            parse_mount("type=tmpfs,destination=/run,tmpfs-size=64m,tmpfs-mode=1770"),
            Ok(Tmpfs(format!("/run:size={},mode=1770", 64 << 20)))
        );
        for bad in [
            "type=bind,source=rel,target=/x",
            "type=volume,source=/abs,target=/x",
            "type=tmpfs,source=x,target=/x",
            "type=npipe,target=/x",
            "type=bind,source=/a",
            "type=bind,source=/a,target=/b,bind-propagation=rshared",
            "type=volume,target=/x,readonly",
            "type=bind,source=/a,target=/b,readonly=maybe",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

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

    #[test]
    fn restart_policies() {
        let p = |s: &str| parse_restart(s).map(|p| (p.name, p.maximum_retry_count));
        assert_eq!(p("no"), Ok(("no".into(), 0)));
        assert_eq!(p("always"), Ok(("always".into(), 0)));
        assert_eq!(p("unless-stopped"), Ok(("unless-stopped".into(), 0)));
        assert_eq!(p("on-failure"), Ok(("on-failure".into(), 0)));
        assert_eq!(p("on-failure:5"), Ok(("on-failure".into(), 5)));
        assert!(p("on-failure:x").is_err());
        assert!(p("on-failure:-1").is_err());
        assert!(p("always:3").is_err());
        assert!(p("sometimes")
            .unwrap_err()
            .contains("invalid restart policy"));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("SIGKILL"), Ok(9));
        assert_eq!(parse_signal("sigterm"), Ok(15));
        assert_eq!(parse_signal("hup"), Ok(1));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("RTMIN+1"), Ok(libc::SIGRTMIN() + 1));
        assert_eq!(parse_signal("SIGRTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        assert_eq!(
            parse_signal("NOPE"),
            Err("invalid signal: NOPE".to_string())
        );
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("99").is_err());
        assert!(parse_signal("NOPE").is_err());
    }

    fn args(flags: &[&str]) -> Result<capi::ContainerConfig, Error> {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let argv = ["run"].iter().chain(flags).chain(&["busybox"]);
        Cli::try_parse_from(argv).unwrap().run.config()
    }

    #[test]
    fn network_flags() {
        let c = args(&[
            "-p",
            "8080:80",
            "--publish=127.0.0.1::53/udp",
            "-p",
            "9000-9001:90-91",
            "-P",
            "--dns",
            "1.1.1.1",
            "--dns-search",
            "example.com",
            "--dns-option",
            "ndots:2",
            "--add-host",
            "db:10.0.0.5",
            "--add-host=v6:::1",
            "--net",
            "front",
        ])
        .unwrap();
        let ports: Vec<_> = c
            .port_bindings
            .iter()
            .map(|p| {
                (
                    p.host_ip.as_str(),
                    p.host_port,
                    p.container_port,
                    p.protocol.as_str(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("", 8080, 80, "tcp"),
                ("127.0.0.1", 0, 53, "udp"),
                ("", 9000, 90, "tcp"),
                ("", 9001, 91, "tcp")
            ]
        );
        assert!(c.publish_all);
        assert_eq!(c.dns, ["1.1.1.1"]);
        assert_eq!(c.dns_search, ["example.com"]);
        assert_eq!(c.dns_options, ["ndots:2"]);
        assert_eq!(c.extra_hosts, ["db:10.0.0.5", "v6:::1"]);
        assert_eq!(c.network_mode, "front");
        assert_eq!(args(&[]).unwrap().network_mode, "");
        assert_eq!(
            args(&["--network", "bridge"]).unwrap().network_mode,
            "bridge"
        );
    }

    #[test]
    fn bad_network_flags_are_local_errors() {
        let err = |flags: &[&str]| match args(flags) {
            Err(Error::Local(m)) => m,
            other => panic!("{flags:?}: {other:?}"),
        };
        assert_eq!(
            err(&["-p", "abc"]),
            "invalid port specification: \"abc\": container port \"abc\" is not a number"
        );
        assert!(err(&["-p", "[::1]:80:80"]).contains("IPv6 host addresses are not supported"));
        assert!(err(&["--add-host", "db:nope"]).contains("invalid IP address"));
        assert!(err(&["--add-host", "db"]).contains("NAME:IP"));
        assert!(err(&["--dns", "one.one"]).contains("not an ip address"));
        assert!(err(&["--dns-search=-bad"]).contains("not a valid domain"));
        // Conflicts with a container: network are the runtime's to refuse (Containers.Create),
        // for every client: see berth-runtime's check_network_options.
        assert!(args(&["--network", "container:db"]).is_ok());
        let e = args(&["-p", "abc"]).unwrap_err();
        assert_eq!(e.exit_code(), 125);
    }

    #[test]
    fn add_hosts_and_dns() {
        assert_eq!(parse_add_host("db:10.0.0.5"), Ok("db:10.0.0.5".into()));
        assert_eq!(parse_add_host("db:[::1]"), Ok("db:::1".into()));
        assert!(parse_add_host(":10.0.0.5").is_err());
        assert!(parse_add_host("db:10.0.0.256").is_err());
        assert_eq!(parse_dns("8.8.8.8"), Ok("8.8.8.8".into()));
        assert!(parse_dns("8.8.8").is_err());
        assert_eq!(parse_dns_search("."), Ok(".".into()));
        assert_eq!(parse_dns_search("example.com."), Ok("example.com".into()));
    }

    #[test]
    fn binds() {
        assert!(parse_bind("/host:/data").is_ok());
        assert!(parse_bind("/host:/data:ro").is_ok());
        assert!(parse_bind("/host:/data:ro,rshared").is_ok());
        assert!(parse_bind("myvol:/data:rw").is_ok());
        assert!(parse_bind("/data").is_ok());
        assert!(parse_bind("rel/path:/data").is_err());
        assert!(parse_bind("/host:data").is_err());
        assert!(parse_bind("/host:/data:rx").is_err());
        assert!(parse_bind("a:b:c:d").is_err());
        assert!(parse_bind(":/data").is_err());
    }
}
