//! Building a container's OCI runtime spec from its image config and the request, under
//! Docker's rules (what `docker run` would have put in runc's `config.json`).
//!
//! The combination rules, as Docker documents them:
//! - command: `entrypoint + cmd`. A given cmd replaces the image's `Cmd`; `--entrypoint`
//!   replaces the image's `Entrypoint` *and* drops the image's `Cmd` (only a cmd given with it
//!   is kept); `--entrypoint ""` clears it. Nothing left is "no command specified".
//! - env: `PATH` (Docker's default), `HOSTNAME`, `TERM=xterm` with a tty, then the image's
//!   `Env`, then `-e`: `K=V` replaces or adds `K`; a bare `K` removes it.
//! - cwd: `-w`, else the image's `WorkingDir`, else `/`.
//! - user: `-u`, else the image's `User`; numeric `uid[:gid]` goes into `process.user`, a
//!   name (user or group) travels to the shim in the `io.berth.user` annotation.

use crate::error::{Error, Result};
use berth_api::containers::v1::ContainerConfig;
use oci_spec::runtime::{
    Linux, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, Mount,
    MountBuilder, Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Docker's default `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The annotations the shim reads (`docs/shim.md`): stdin is a pipe fed by attach clients; the
/// `--user` string when it names a user or group; `container.log` rotates after this many bytes.
pub use berth_shim::bundle::{ANNOTATION_LOG_MAX_SIZE, ANNOTATION_STDIN, ANNOTATION_USER};
/// Annotation: the image's `StopSignal`, for `stop`.
pub const ANNOTATION_STOP_SIGNAL: &str = "io.berth.stop-signal";
/// Annotation: the image's `Volumes`, comma separated (not mounted yet).
pub const ANNOTATION_VOLUMES: &str = "io.berth.volumes";
/// Annotation: the image's `ExposedPorts`, comma separated (`80/tcp,53/udp`).
pub const ANNOTATION_EXPOSED_PORTS: &str = "io.berth.exposed-ports";

/// Docker's masked paths.
const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's smallest memory limit.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// The CFS period Docker uses for `--cpus`.
const CPU_PERIOD: u64 = 100_000;

/// The runtime part of an image config (`config` in a Docker or OCI image config), read
/// leniently: every field may be absent or `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageConfig {
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<ImageConfig>,
}

impl ImageConfig {
    /// Reads the `config` object of an image config JSON document (as stored by the image
    /// service). An image without one (`FROM scratch` with nothing set) has all defaults.
    pub fn from_json(image: &str, json: &[u8]) -> Result<ImageConfig> {
        if json.is_empty() {
            return Ok(ImageConfig::default());
        }
        let file: ImageConfigFile =
            serde_json::from_slice(json).map_err(|source| Error::ImageConfig {
                image: image.to_string(),
                source,
            })?;
        Ok(file.config.unwrap_or_default())
    }
}

/// What the spec needs beyond the container's own config.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's hostname (for `--network host` without `--hostname`).
    pub host_hostname: String,
    /// `container.log` rotates at this size.
    pub log_max_size: u64,
    /// CPUs on the host, to validate `--cpus`.
    pub host_cpus: u32,
    /// The host's architecture, kernel and capabilities, for seccomp and `--cap-add`.
    pub security: crate::security::HostSecurity,
}

impl Options {
    /// Options from this host and the runtime config.
    pub fn from_host(log_max_size: u64) -> Options {
        Options {
            host_hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_string()),
            log_max_size,
            host_cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            security: crate::security::HostSecurity::current(),
        }
    }
}

/// How the container is networked, as far as the stored spec is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    /// A network namespace: a new one with only `lo` (`none`), or — its path filled in when
    /// the task is created — the one set up for its networks or another container's.
    Own,
    /// The host's network namespace.
    Host,
}

fn network(mode: &str) -> Result<Network> {
    match crate::network::Mode::of(mode) {
        crate::network::Mode::Host => Ok(Network::Host),
        crate::network::Mode::Container(c) if c.is_empty() => Err(Error::InvalidArgument(
            "invalid --network container: name the container (container:NAME|ID)".into(),
        )),
        _ => Ok(Network::Own),
    }
}

/// The process's argv under Docker's entrypoint/cmd rules.
pub fn command(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>> {
    let (entrypoint, cmd): (Vec<String>, Vec<String>) = if config.entrypoint_set {
        // `--entrypoint ""` arrives as `[""]` (or `[]`): it clears the entrypoint.
        let entrypoint = if config.entrypoint.iter().all(|s| s.is_empty()) {
            Vec::new()
        } else {
            config.entrypoint.clone()
        };
        (entrypoint, config.cmd.clone())
    } else {
        let cmd = if config.cmd.is_empty() {
            image.cmd.clone().unwrap_or_default()
        } else {
            config.cmd.clone()
        };
        (image.entrypoint.clone().unwrap_or_default(), cmd)
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::NoCommand);
    }
    Ok(args)
}

/// Docker's `ReplaceOrAppendEnvValues`: `K=V` replaces `K` or is appended; a bare `K`
/// removes `K`.
fn merge_env(base: Vec<String>, overrides: &[String]) -> Vec<String> {
    let mut env: Vec<Option<String>> = base.into_iter().map(Some).collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, e) in env.iter().enumerate() {
        if let Some(e) = e {
            let k = e.split_once('=').map(|(k, _)| k).unwrap_or(e);
            index.insert(k.to_string(), i);
        }
    }
    for o in overrides {
        match o.split_once('=') {
            None => {
                if let Some(&i) = index.get(o.as_str()) {
                    env[i] = None;
                }
            }
            Some((k, _)) => match index.get(k) {
                Some(&i) => env[i] = Some(o.clone()),
                None => {
                    index.insert(k.to_string(), env.len());
                    env.push(Some(o.clone()));
                }
            },
        }
    }
    env.into_iter().flatten().collect()
}

/// The process environment.
pub fn environment(config: &ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut base = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if config.tty {
        base.push("TERM=xterm".to_string());
    }
    let container_env = merge_env(image.env.clone().unwrap_or_default(), &config.env);
    merge_env(base, &container_env)
}

/// A parsed `--user`: the numeric ids, and the string when any part is a name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    /// Set when the shim must resolve a name against the rootfs' `/etc/passwd` and `/etc/group`.
    pub named: Option<String>,
}

/// Parses `user[:group]` where each part is a number or a name.
pub fn parse_user(user: &str) -> Result<UserSpec> {
    if user.is_empty() {
        return Ok(UserSpec::default());
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() || g == Some("") || g.is_some_and(|g| g.contains(':')) {
        return Err(Error::InvalidArgument(format!(
            "invalid user {user:?}: use user[:group], each a name or a number"
        )));
    }
    let uid = u.parse::<u32>().ok();
    let gid = g.map(|g| g.parse::<u32>().ok());
    // A uid alone is resolved too: its primary group is the one /etc/passwd gives it (as
    // Docker's), and its supplementary groups those /etc/group lists its name in.
    let named = uid.is_none() || !matches!(gid, Some(Some(_)));
    Ok(UserSpec {
        uid: uid.unwrap_or(0),
        gid: gid.flatten().unwrap_or(0),
        named: named.then(|| user.to_string()),
    })
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

/// Docker's default mounts.
/// Docker's mounts; `/sys` and the cgroups read-only unless privileged.
fn default_mounts(privileged: bool) -> Result<Vec<Mount>> {
    let ro = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=64m"],
        )?,
    ])
}

fn device_rule(
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().map_err(spec_err)
}

/// Docker's device cgroup allowlist: deny everything, then allow `mknod` of any device and
/// the few devices a container needs.
fn default_device_rules() -> Result<Vec<LinuxDeviceCgroup>> {
    use LinuxDeviceType::{B, C};
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(spec_err)?];
    rules.push(device_rule(C, None, None, "m")?);
    rules.push(device_rule(B, None, None, "m")?);
    for (major, minor) in [
        (1, Some(3)),    // null
        (1, Some(5)),    // zero
        (1, Some(7)),    // full
        (1, Some(8)),    // random
        (1, Some(9)),    // urandom
        (5, Some(0)),    // tty
        (5, Some(1)),    // console
        (5, Some(2)),    // ptmx
        (136, None),     // pts/*
        (10, Some(200)), // net/tun
    ] {
        rules.push(device_rule(C, Some(major), minor, "rwm")?);
    }
    Ok(rules)
}

fn spec_err(e: oci_spec::OciSpecError) -> Error {
    Error::Spec(e.to_string())
}

/// The image config parts that the spec does not act on but records (labels go to the
/// container record).
pub fn image_labels(image: &ImageConfig) -> BTreeMap<String, String> {
    image.labels.clone().unwrap_or_default()
}

/// Builds the OCI runtime spec of container `id` in `namespace`.
pub fn build(
    id: &str,
    namespace: &str,
    config: &ContainerConfig,
    image: &ImageConfig,
    options: &Options,
) -> Result<Spec> {
    let net = network(&config.network_mode)?;
    let args = command(config, image)?;
    let hostname = hostname(id, config, net, options)?;
    let env = environment(config, image, &hostname);
    let cwd = working_dir(config, image)?;
    let user_string = if config.user.is_empty() {
        image.user.clone().unwrap_or_default()
    } else {
        config.user.clone()
    };
    let user = parse_user(&user_string)?;
    let security = crate::security::Security::of(config, &options.security)?;
    let privileged = security.privileged;
    let process = process(config, args, env, cwd, &user, &security)?;
    let linux = linux(id, namespace, config, net, security, options)?;
    let annotations = annotations(config, image, options, user.named);
    SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(config.read_only)
                .build()
                .map_err(spec_err)?,
        )
        .mounts(default_mounts(privileged)?)
        .process(process)
        .hostname(hostname)
        .annotations(annotations)
        .linux(linux)
        .build()
        .map_err(spec_err)
}

/// `--hostname`, else the host's with `--network host`, else the id's first 12 characters.
fn hostname(id: &str, config: &ContainerConfig, net: Network, options: &Options) -> Result<String> {
    Ok(if !config.hostname.is_empty() {
        validate_hostname(&config.hostname)?;
        config.hostname.clone()
    } else if net == Network::Host {
        options.host_hostname.clone()
    } else {
        id.chars().take(12).collect()
    })
}

/// `-w`, else the image's, else `/`: absolute, and cleaned from the container's `/`.
fn working_dir(config: &ContainerConfig, image: &ImageConfig) -> Result<String> {
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else {
        image
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    };
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "the working directory {cwd:?} is invalid: it needs to be an absolute path"
        )));
    }
    // Cleaned from the container's `/` (`/../../x` is `/x`), as Docker does.
    Ok(crate::volumes::clean(&cwd))
}

/// The container's process: command, environment, user, capabilities.
fn process(
    config: &ContainerConfig,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: &UserSpec,
    security: &crate::security::Security,
) -> Result<Process> {
    let caps = security.oci_capabilities()?;
    // Inheritable and ambient are empty, as Docker's (since CVE-2022-24769); left unset, the
    // builder would fill them with oci-spec's defaults (AUDIT_WRITE, KILL, NET_BIND_SERVICE),
    // which the kernel refuses in the inheritable set once the bounding set lacks them
    // (`--cap-drop ALL`: capset fails with EPERM), and which a non-root process must not get.
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(spec_err)?;
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(config.additional_gids.clone())
                .build()
                .map_err(spec_err)?,
        )
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(security.no_new_privileges)
        .build()
        .map_err(spec_err)?;
    // The builder starts from oci-spec's defaults, which raise RLIMIT_NOFILE; a root without
    // CAP_SYS_RESOURCE cannot, so the container inherits the shim's limits instead.
    process.set_rlimits(None);
    process.set_oom_score_adj(crate::limits::oom_score_adj(config.oom_score_adj)?);
    Ok(process)
}

/// The Linux part: namespaces, cgroup (path and limits), devices, masked and read-only
/// paths, seccomp.
fn linux(
    id: &str,
    namespace: &str,
    config: &ContainerConfig,
    net: Network,
    security: crate::security::Security,
    options: &Options,
) -> Result<Linux> {
    let mut types = vec![LinuxNamespaceType::Mount, LinuxNamespaceType::Cgroup];
    for (typ, mode) in [
        (LinuxNamespaceType::Pid, &config.pid_mode),
        (LinuxNamespaceType::Ipc, &config.ipc_mode),
        (LinuxNamespaceType::Uts, &config.uts_mode),
    ] {
        // The host's: absent from the spec. Another container's: its path is filled in when
        // the task is created ([`crate::tasks`]).
        if shared_namespace(typ, mode)? != SharedNamespace::Host {
            types.push(typ);
        }
    }
    if net == Network::Own {
        types.push(LinuxNamespaceType::Network);
    }
    let namespaces = types
        .into_iter()
        .map(|typ| {
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(spec_err)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(config, security.privileged, options)?)
        .cgroups_path(crate::limits::cgroups_path(config, namespace, id)?)
        .build()
        .map_err(spec_err)?;
    let given = crate::devices::resolve(&config.devices)?;
    if security.privileged {
        // Every host device already, and every one allowed; a mapping adds its own path.
        let mut devices = crate::security::host_devices();
        devices.retain(|d| given.devices.iter().all(|g| g.path() != d.path()));
        devices.extend(given.devices);
        linux.set_devices(Some(devices));
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        let or_default = |given: &[String], default: &[&str]| -> Result<Vec<String>> {
            if given.is_empty() {
                return Ok(default.iter().map(|p| p.to_string()).collect());
            }
            match given.iter().find(|p| !p.starts_with('/')) {
                Some(bad) => Err(Error::InvalidArgument(format!(
                    "masked or read-only path {bad:?} must be absolute"
                ))),
                None => Ok(given.to_vec()),
            }
        };
        linux.set_masked_paths(Some(or_default(&config.masked_paths, &MASKED_PATHS)?));
        linux.set_readonly_paths(Some(or_default(&config.readonly_paths, &READONLY_PATHS)?));
        if !given.devices.is_empty() {
            linux.set_devices(Some(given.devices));
            let mut res = linux.resources().clone().unwrap_or_default();
            let mut rules = res.devices().clone().unwrap_or_default();
            rules.extend(given.rules);
            res.set_devices(Some(rules));
            linux.set_resources(Some(res));
        }
    }
    linux.set_seccomp(security.seccomp);
    if !config.sysctls.is_empty() {
        for k in config.sysctls.keys() {
            let ok = !k.is_empty()
                && k.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                });
            if !ok {
                return Err(Error::InvalidArgument(format!(
                    "sysctl {k:?} is not a kernel parameter name (e.g. net.ipv4.ip_forward)"
                )));
            }
        }
        linux.set_sysctl(Some(config.sysctls.clone().into_iter().collect()));
    }
    Ok(linux)
}

/// Where a container's pid, IPC or UTS namespace comes from (`--pid`, `--ipc`, `--uts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedNamespace {
    /// A namespace of its own (`""`, and Docker's `private`/`shareable` for IPC).
    Own,
    /// The host's.
    Host,
    /// Another running container's (`container:NAME|ID`).
    Container(String),
}

/// Reads the `--pid`/`--ipc`/`--uts` mode of namespace `typ`.
pub fn shared_namespace(typ: LinuxNamespaceType, mode: &str) -> Result<SharedNamespace> {
    match mode {
        "" => Ok(SharedNamespace::Own),
        "private" | "shareable" if typ == LinuxNamespaceType::Ipc => Ok(SharedNamespace::Own),
        "host" => Ok(SharedNamespace::Host),
        m => match m.strip_prefix("container:") {
            Some(c) if !c.is_empty() => Ok(SharedNamespace::Container(c.to_string())),
            _ => Err(Error::InvalidArgument(format!(
                "invalid {typ} mode {m:?}: use host or container:NAME|ID"
            ))),
        },
    }
}

/// The cgroup limits: devices, `--memory`, `--cpus`, `--pids-limit`, each checked as Docker
/// checks it.
fn resources(
    config: &ContainerConfig,
    privileged: bool,
    options: &Options,
) -> Result<LinuxResources> {
    let device_rules = if privileged {
        vec![LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .map_err(spec_err)?]
    } else {
        default_device_rules()?
    };
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules);
    if config.memory < 0 {
        return Err(Error::InvalidArgument(format!(
            "invalid memory limit {}: it cannot be negative",
            config.memory
        )));
    }
    if config.memory > 0 {
        if config.memory < MIN_MEMORY {
            return Err(Error::InvalidArgument(
                "Minimum memory limit allowed is 6MB".to_string(),
            ));
        }
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(config.memory)
                .build()
                .map_err(spec_err)?,
        );
    }
    if config.nano_cpus < 0 {
        return Err(Error::InvalidArgument(
            "invalid --cpus: it must be positive".to_string(),
        ));
    }
    if config.nano_cpus != 0 {
        let max = i64::from(options.host_cpus) * 1_000_000_000;
        if config.nano_cpus < 10_000_000 || config.nano_cpus > max {
            return Err(Error::InvalidArgument(format!(
                "Range of CPUs is from 0.01 to {}.00, as there are only {} CPUs available",
                options.host_cpus, options.host_cpus
            )));
        }
        let quota = cpu_quota(config.nano_cpus);
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD)
                .build()
                .map_err(spec_err)?,
        );
    }
    if config.pids_limit > 0 {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(config.pids_limit)
                .build()
                .map_err(spec_err)?,
        );
    }
    let mut resources = resources.build().map_err(spec_err)?;
    crate::limits::apply(config, &mut resources)?;
    Ok(resources)
}

/// The stored spec `spec_json` with the memory, cpu and pids limits of `config` (checked as
/// at create; the device rules are kept): `docker update`.
pub fn with_limits(
    spec_json: &[u8],
    config: &ContainerConfig,
    options: &Options,
) -> Result<Vec<u8>> {
    let mut spec: oci_spec::runtime::Spec =
        serde_json::from_slice(spec_json).map_err(|e| Error::Spec(e.to_string()))?;
    let limits = resources(config, false, options)?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut res = linux.resources().clone().unwrap_or_default();
    res.set_memory(*limits.memory());
    res.set_cpu(limits.cpu().clone());
    res.set_pids(*limits.pids());
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
    serde_json::to_vec(&spec).map_err(|e| Error::Spec(e.to_string()))
}

/// The CFS quota of `--cpus` (`nano_cpus`), -1 for none.
pub fn cpu_quota(nano_cpus: i64) -> i64 {
    if nano_cpus == 0 {
        -1
    } else {
        nano_cpus * CPU_PERIOD as i64 / 1_000_000_000
    }
}

/// The CFS period berth uses.
pub const fn cpu_period() -> u64 {
    CPU_PERIOD
}

/// What the shim and the runtime read back from the spec: log size, stdin, the user's name,
/// the image's stop signal, volumes, and the ports exposed by the image or `--expose`.
fn annotations(
    config: &ContainerConfig,
    image: &ImageConfig,
    options: &Options,
    named_user: Option<String>,
) -> HashMap<String, String> {
    let mut annotations = HashMap::new();
    annotations.insert(
        ANNOTATION_LOG_MAX_SIZE.to_string(),
        options.log_max_size.to_string(),
    );
    if config.open_stdin {
        annotations.insert(ANNOTATION_STDIN.to_string(), "true".to_string());
    }
    if let Some(named) = named_user {
        annotations.insert(ANNOTATION_USER.to_string(), named);
    }
    if let Some(sig) = image.stop_signal.as_ref().filter(|s| !s.is_empty()) {
        annotations.insert(ANNOTATION_STOP_SIGNAL.to_string(), sig.clone());
    }
    if let Some(v) = image.volumes.as_ref().filter(|v| !v.is_empty()) {
        let list: Vec<&str> = v.keys().map(String::as_str).collect();
        annotations.insert(ANNOTATION_VOLUMES.to_string(), list.join(","));
    }
    let exposed: std::collections::BTreeSet<&str> = image
        .exposed_ports
        .iter()
        .flat_map(|p| p.keys().map(String::as_str))
        .chain(config.exposed_ports.iter().map(String::as_str))
        .collect();
    if !exposed.is_empty() {
        let list: Vec<&str> = exposed.into_iter().collect();
        annotations.insert(ANNOTATION_EXPOSED_PORTS.to_string(), list.join(","));
    }
    annotations
}

/// A hostname the kernel takes: 1-64 characters of letters, digits, `-` and `.`.
fn validate_hostname(h: &str) -> Result<()> {
    let ok = h.len() <= 64
        && !h.starts_with('-')
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid hostname {h:?}: use at most 64 letters, digits, '-' and '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn opts() -> Options {
        Options {
            host_hostname: "thehost".into(),
            log_max_size: 1000,
            host_cpus: 2,
            security: crate::security::HostSecurity::current(),
        }
    }

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.map(|v| v.iter().map(|s| s.to_string()).collect()),
            cmd: cmd.map(|v| v.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn cfg() -> ContainerConfig {
        ContainerConfig {
            image: "busybox".into(),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn args(c: &ContainerConfig, i: &ImageConfig) -> Vec<String> {
        command(c, i).unwrap()
    }

    #[test]
    fn image_cmd_is_the_default() {
        let i = image(None, Some(&["sh"]));
        assert_eq!(args(&cfg(), &i), ["sh"]);
    }

    #[test]
    fn given_cmd_replaces_image_cmd_and_keeps_entrypoint() {
        let i = image(Some(&["/entry.sh"]), Some(&["serve"]));
        let mut c = cfg();
        c.cmd = strings(&["echo", "hi"]);
        assert_eq!(args(&c, &i), ["/entry.sh", "echo", "hi"]);
        assert_eq!(args(&cfg(), &i), ["/entry.sh", "serve"]);
    }

    #[test]
    fn entrypoint_flag_replaces_entrypoint_and_drops_image_cmd() {
        let i = image(Some(&["/entry.sh"]), Some(&["serve"]));
        let mut c = cfg();
        c.entrypoint_set = true;
        c.entrypoint = strings(&["/bin/date"]);
        assert_eq!(args(&c, &i), ["/bin/date"]);
        c.cmd = strings(&["-u"]);
        assert_eq!(args(&c, &i), ["/bin/date", "-u"]);
    }

    #[test]
    fn empty_entrypoint_flag_clears_it() {
        let i = image(Some(&["/entry.sh"]), Some(&["serve"]));
        let mut c = cfg();
        c.entrypoint_set = true;
        c.entrypoint = strings(&[""]);
        c.cmd = strings(&["ls", "-l"]);
        assert_eq!(args(&c, &i), ["ls", "-l"]);
        c.cmd.clear();
        assert!(matches!(command(&c, &i), Err(Error::NoCommand)));
        c.entrypoint.clear();
        assert!(matches!(command(&c, &i), Err(Error::NoCommand)));
    }

    #[test]
    fn no_command_at_all_is_an_error() {
        let err = command(&cfg(), &ImageConfig::default()).unwrap_err();
        assert_eq!(err.to_string(), "no command specified");
        let i = image(None, Some(&[]));
        assert!(matches!(command(&cfg(), &i), Err(Error::NoCommand)));
    }

    #[test]
    fn environment_rules() {
        let i = ImageConfig {
            env: Some(strings(&["PATH=/opt/bin:/bin", "A=image", "B=image"])),
            ..Default::default()
        };
        let mut c = cfg();
        c.env = strings(&["A=flag", "C=new", "B", "EMPTY="]);
        assert_eq!(
            environment(&c, &i, "h1"),
            [
                "PATH=/opt/bin:/bin",
                "HOSTNAME=h1",
                "A=flag",
                "C=new",
                "EMPTY="
            ]
        );
        c.tty = true;
        c.env = strings(&["TERM=vt100", "NOTSET"]);
        let empty = ImageConfig::default();
        assert_eq!(
            environment(&c, &empty, "h1"),
            [&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h1", "TERM=vt100"]
        );
        c.env.clear();
        assert_eq!(
            environment(&c, &empty, "h1"),
            [&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h1", "TERM=xterm"]
        );
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("").unwrap(), UserSpec::default());
        assert_eq!(
            parse_user("1000").unwrap(),
            UserSpec {
                uid: 1000,
                gid: 0,
                // Resolved by the shim: the primary group comes from /etc/passwd.
                named: Some("1000".into())
            }
        );
        assert_eq!(
            parse_user("1000:100").unwrap(),
            UserSpec {
                uid: 1000,
                gid: 100,
                named: None
            }
        );
        assert_eq!(
            parse_user("nobody").unwrap().named.as_deref(),
            Some("nobody")
        );
        let u = parse_user("1000:staff").unwrap();
        assert_eq!((u.uid, u.named.as_deref()), (1000, Some("1000:staff")));
        let u = parse_user("www:33").unwrap();
        assert_eq!((u.gid, u.named.as_deref()), (33, Some("www:33")));
        assert!(parse_user(":1").is_err());
        assert!(parse_user("1:").is_err());
        assert!(parse_user("1:2:3").is_err());
    }

    #[test]
    fn spec_from_image_and_flags() {
        let i = ImageConfig {
            env: Some(strings(&["FOO=bar"])),
            cmd: Some(strings(&["nginx", "-g", "daemon off;"])),
            working_dir: Some("/srv".into()),
            user: Some("nginx".into()),
            stop_signal: Some("SIGQUIT".into()),
            exposed_ports: Some([("80/tcp".to_string(), serde_json::json!({}))].into()),
            volumes: Some([("/data".to_string(), serde_json::json!({}))].into()),
            ..Default::default()
        };
        let s = build(ID, "default", &cfg(), &i, &opts()).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_ref().unwrap(),
            &strings(&["nginx", "-g", "daemon off;"])
        );
        assert_eq!(p.cwd().to_str(), Some("/srv"));
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.no_new_privileges(), Some(false));
        assert!(p.rlimits().is_none());
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"HOSTNAME=0123456789ab".to_string()));
        assert!(env.contains(&"FOO=bar".to_string()));
        assert_eq!(s.hostname().as_deref(), Some("0123456789ab"));

        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert!(caps.inheritable().as_ref().is_some_and(|c| c.is_empty()));
        assert!(caps.ambient().as_ref().is_some_and(|c| c.is_empty()));
        assert!(caps
            .effective()
            .as_ref()
            .unwrap()
            .contains(&Capability::NetBindService));
        assert!(!caps
            .permitted()
            .as_ref()
            .unwrap()
            .contains(&Capability::SysAdmin));

        let a = s.annotations().as_ref().unwrap();
        assert_eq!(a.get(ANNOTATION_USER).map(String::as_str), Some("nginx"));
        assert_eq!(
            a.get(ANNOTATION_LOG_MAX_SIZE).map(String::as_str),
            Some("1000")
        );
        assert_eq!(
            a.get(ANNOTATION_STOP_SIGNAL).map(String::as_str),
            Some("SIGQUIT")
        );
        assert_eq!(
            a.get(ANNOTATION_EXPOSED_PORTS).map(String::as_str),
            Some("80/tcp")
        );
        assert_eq!(a.get(ANNOTATION_VOLUMES).map(String::as_str), Some("/data"));
        assert!(!a.contains_key(ANNOTATION_STDIN));

        let root = s.root().as_ref().unwrap();
        assert_eq!(root.path().to_str(), Some("rootfs"));
        assert_eq!(root.readonly(), Some(false));

        let linux = s.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap().to_str(),
            Some(format!("/berth/default-{ID}").as_str())
        );
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(ns.len(), 6);
        assert!(ns.contains(&LinuxNamespaceType::Network));
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert!(linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string()));
        let res = linux.resources().as_ref().unwrap();
        assert!(res.memory().is_none() && res.cpu().is_none() && res.pids().is_none());
        let rules: Vec<String> = res
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(rules[0], "a *:* rwm");
        assert!(!res.devices().as_ref().unwrap()[0].allow());
        for r in [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 136:* rwm",
            "c 10:200 rwm",
            "c 5:2 rwm",
        ] {
            assert!(rules.contains(&r.to_string()), "missing {r} in {rules:?}");
        }

        let mounts: Vec<_> = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            mounts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
    }

    #[test]
    fn flags_override_image() {
        let i = ImageConfig {
            cmd: Some(strings(&["sh"])),
            working_dir: Some("/srv".into()),
            user: Some("nginx".into()),
            ..Default::default()
        };
        let mut c = cfg();
        c.working_dir = "/tmp".into();
        c.user = "1000:1000".into();
        c.hostname = "box".into();
        c.tty = true;
        c.open_stdin = true;
        c.read_only = true;
        c.memory = 64 << 20;
        c.nano_cpus = 500_000_000;
        c.pids_limit = 100;
        let s = build(ID, "ns1", &c, &i, &opts()).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.cwd().to_str(), Some("/tmp"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.terminal(), Some(true));
        assert!(p
            .env()
            .as_ref()
            .unwrap()
            .contains(&"TERM=xterm".to_string()));
        assert!(p
            .env()
            .as_ref()
            .unwrap()
            .contains(&"HOSTNAME=box".to_string()));
        assert_eq!(s.hostname().as_deref(), Some("box"));
        let a = s.annotations().as_ref().unwrap();
        assert!(!a.contains_key(ANNOTATION_USER));
        assert_eq!(a.get(ANNOTATION_STDIN).map(String::as_str), Some("true"));
        assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
        let res = s.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().unwrap().limit(), Some(64 << 20));
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(res.pids().unwrap().limit(), 100);
    }

    #[test]
    fn network_modes() {
        let i = image(None, Some(&["sh"]));
        let mut c = cfg();
        c.network_mode = "host".into();
        let s = build(ID, "default", &c, &i, &opts()).unwrap();
        let ns = s.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        assert_eq!(s.hostname().as_deref(), Some("thehost"));
        c.hostname = "mine".into();
        let s = build(ID, "default", &c, &i, &opts()).unwrap();
        assert_eq!(s.hostname().as_deref(), Some("mine"));

        c.network_mode = "none".into();
        let s = build(ID, "default", &c, &i, &opts()).unwrap();
        let ns = s.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));

        c.network_mode = "bridge".into();
        let s = build(ID, "default", &c, &i, &opts()).unwrap();
        let ns = s.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));

        c.network_mode = "container:".into();
        let err = build(ID, "default", &c, &i, &opts()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn bad_limits_are_refused() {
        let i = image(None, Some(&["sh"]));
        let mut c = cfg();
        c.memory = 1024;
        assert!(build(ID, "default", &c, &i, &opts())
            .unwrap_err()
            .to_string()
            .contains("Minimum memory limit"));
        c.memory = 0;
        c.nano_cpus = 3_000_000_000;
        assert!(build(ID, "default", &c, &i, &opts())
            .unwrap_err()
            .to_string()
            .contains("Range of CPUs is from 0.01 to 2.00"));
        c.nano_cpus = 0;
        c.working_dir = "relative".into();
        assert_eq!(
            build(ID, "default", &c, &i, &opts()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        c.working_dir = "/../../../srv/./x/..".into();
        let s = build(ID, "default", &c, &i, &opts()).unwrap();
        assert_eq!(s.process().as_ref().unwrap().cwd().to_str(), Some("/srv"));
    }

    #[test]
    fn image_config_json() {
        let j = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin"],
            "Cmd":["sh"],"Entrypoint":null,"WorkingDir":"","Labels":{"a":"b"},
            "ExposedPorts":{"80/tcp":{}},"Volumes":null},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::from_json("busybox", j).unwrap();
        assert_eq!(c.cmd, Some(strings(&["sh"])));
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.working_dir.as_deref(), Some(""));
        assert_eq!(image_labels(&c).get("a").map(String::as_str), Some("b"));
        assert_eq!(
            ImageConfig::from_json("x", br#"{"os":"linux"}"#).unwrap(),
            ImageConfig::default()
        );
        assert!(ImageConfig::from_json("x", b"{nope").is_err());
    }

    #[test]
    fn spec_serializes_as_oci_json() {
        let s = build(ID, "default", &cfg(), &image(None, Some(&["sh"])), &opts()).unwrap();
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["root"]["path"], "rootfs");
        assert_eq!(v["process"]["noNewPrivileges"], false);
        assert!(v["process"].get("rlimits").is_none());
        assert_eq!(v["linux"]["cgroupsPath"], format!("/berth/default-{ID}"));
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], false);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["linux"]["maskedPaths"][0], "/proc/asound");
    }

    #[test]
    fn masked_paths_sysctls_and_shared_namespaces() {
        let mut c = cfg();
        c.masked_paths = vec!["/bin/ls".into()];
        c.additional_gids = vec![50000];
        c.sysctls = HashMap::from([("kernel.shm_rmid_forced".into(), "1".into())]);
        c.ipc_mode = "container:pause".into();
        c.pid_mode = "host".into();
        let s = build(ID, "default", &c, &image(None, Some(&["sh"])), &opts()).unwrap();
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["linux"]["maskedPaths"], serde_json::json!(["/bin/ls"]));
        assert_eq!(v["linux"]["readonlyPaths"][0], "/proc/bus");
        assert_eq!(v["linux"]["sysctl"]["kernel.shm_rmid_forced"], "1");
        assert_eq!(
            v["process"]["user"]["additionalGids"],
            serde_json::json!([50000])
        );
        let types: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(
            types.contains(&"ipc") && !types.contains(&"pid"),
            "{types:?}"
        );
        c.masked_paths = vec!["relative".into()];
        assert!(build(ID, "default", &c, &image(None, Some(&["sh"])), &opts()).is_err());
        let mut c = cfg();
        c.uts_mode = "container:".into();
        assert!(build(ID, "default", &c, &image(None, Some(&["sh"])), &opts()).is_err());
        c.uts_mode = String::new();
        c.sysctls = HashMap::from([("bad key".into(), "1".into())]);
        assert!(build(ID, "default", &c, &image(None, Some(&["sh"])), &opts()).is_err());
    }

    #[test]
    fn privileged_containers_are_unconfined() {
        let mut c = cfg();
        c.privileged = true;
        let s = build(ID, "default", &c, &image(None, Some(&["sh"])), &opts()).unwrap();
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert!(v["linux"].get("seccomp").is_none());
        assert!(v["linux"].get("maskedPaths").is_none());
        assert!(v["linux"].get("readonlyPaths").is_none());
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
        assert!(v["linux"]["devices"]
            .as_array()
            .is_some_and(|d| !d.is_empty()));
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(sys["options"].as_array().unwrap().contains(&"rw".into()));
        let caps = &v["process"]["capabilities"]["bounding"];
        assert!(caps.as_array().unwrap().contains(&"CAP_SYS_ADMIN".into()));
    }
}
