//! The body of Docker's `POST /containers/create` (Config, HostConfig and NetworkingConfig
//! in one JSON object) as the `ContainerConfig` berth's Containers.Create takes:
//! [`container_config`].
//!
//! Every field berth supports is mapped. A field berth does not support is refused with a
//! message naming it ("berth does not support HostConfig.CpusetCpus") when it holds anything
//! but its default — clients send many zeros, empty strings and empty objects, and those are
//! accepted — and never silently ignored. Fields Docker does not know are ignored, as Docker
//! ignores them. What the runtime service checks itself (names, memory minimum, restart
//! policies, bind syntax, conflicts between options) is left to it, so the gateway and the CLI
//! show its words.
//!
//! [`mount_spec`] is Docker's reading of one mount (`--mount`, `HostConfig.Mounts`) as a `-v`
//! or `--tmpfs` entry, shared with the CLI.

use berth_api::containers::v1 as capi;
use serde_json::{Map, Value};

/// A mount as berth takes it: a `-v` entry (bind or volume) or a `--tmpfs` one.
#[derive(Debug, PartialEq, Eq)]
pub enum MountSpec {
    Bind(String),
    Tmpfs(String),
}

/// One mount of type `bind`, `volume` or `tmpfs` from `src` to `dst`, as berth takes it;
/// `tmpfs_opts` are tmpfs options (`size=N`, `mode=O`). The error says why, for the caller to
/// name the mount.
pub fn mount_spec(
    typ: &str,
    src: &str,
    dst: &str,
    readonly: bool,
    mut tmpfs_opts: Vec<String>,
) -> Result<MountSpec, String> {
    if dst.is_empty() {
        return Err("target is required".into());
    }
    match typ {
        "bind" | "volume" => {
            if !tmpfs_opts.is_empty() {
                return Err(format!("tmpfs options do not apply to type={typ}"));
            }
            if typ == "bind" && !src.starts_with('/') {
                return Err("a bind's source must be an absolute host path".into());
            }
            if typ == "volume" && src.starts_with('/') {
                return Err("a volume's source is a volume name".into());
            }
            if src.is_empty() {
                if readonly {
                    return Err("an anonymous volume cannot be read-only".into());
                }
                return Ok(MountSpec::Bind(dst.to_string()));
            }
            let ro = if readonly { ":ro" } else { "" };
            Ok(MountSpec::Bind(format!("{src}:{dst}{ro}")))
        }
        "tmpfs" => {
            if !src.is_empty() {
                return Err("a tmpfs has no source".into());
            }
            if readonly {
                tmpfs_opts.push("ro".into());
            }
            Ok(MountSpec::Tmpfs(if tmpfs_opts.is_empty() {
                dst.to_string()
            } else {
                format!("{dst}:{}", tmpfs_opts.join(","))
            }))
        }
        t => Err(format!(
            "unsupported mount type {t:?} (bind, volume or tmpfs)"
        )),
    }
}

/// HostConfig fields of Docker's that berth does not have, with the values that mean "not
/// asked for" besides the empty ones (null, false, 0, "", [], {} and objects of those).
const HOST_CONFIG_UNSUPPORTED: &[(&str, &[&str])] = &[
    ("CpuShares", &[]),
    ("CgroupParent", &[]),
    ("BlkioWeight", &[]),
    ("BlkioWeightDevice", &[]),
    ("BlkioDeviceReadBps", &[]),
    ("BlkioDeviceWriteBps", &[]),
    ("BlkioDeviceReadIOps", &[]),
    ("BlkioDeviceWriteIOps", &[]),
    ("CpuRealtimePeriod", &[]),
    ("CpuRealtimeRuntime", &[]),
    ("CpusetCpus", &[]),
    ("CpusetMems", &[]),
    ("DeviceCgroupRules", &[]),
    ("DeviceRequests", &[]),
    ("KernelMemory", &[]),
    ("KernelMemoryTCP", &[]),
    ("MemoryReservation", &[]),
    ("MemorySwap", &["-1"]),
    ("MemorySwappiness", &["-1"]),
    ("OomKillDisable", &[]),
    ("Init", &[]),
    ("Ulimits", &[]),
    ("CpuCount", &[]),
    ("CpuPercent", &[]),
    ("IOMaximumIOps", &[]),
    ("IOMaximumBandwidth", &[]),
    ("LogConfig", &["json-file"]),
    ("VolumeDriver", &["local"]),
    ("VolumesFrom", &[]),
    ("CgroupnsMode", &["host", "private"]),
    ("GroupAdd", &[]),
    ("IpcMode", &["private", "shareable"]),
    ("Cgroup", &[]),
    ("Links", &[]),
    ("OomScoreAdj", &[]),
    ("PidMode", &[]),
    ("StorageOpt", &[]),
    ("UTSMode", &[]),
    ("UsernsMode", &[]),
    ("ShmSize", &["67108864"]),
    ("Sysctls", &[]),
    ("Runtime", &["runc"]),
    ("Isolation", &["default"]),
    ("MaskedPaths", &[]),
    ("ReadonlyPaths", &[]),
];

/// Config fields of Docker's that berth does not have (see [`HOST_CONFIG_UNSUPPORTED`]).
const CONFIG_UNSUPPORTED: &[(&str, &[&str])] = &[
    ("Domainname", &[]),
    ("Healthcheck", &[]),
    ("NetworkDisabled", &[]),
    ("MacAddress", &[]),
    ("OnBuild", &[]),
];

/// Whether a JSON value is a default one: null, false, 0, "", or an array or object of
/// defaults (`{"Type":"","Config":{}}`, `[0,0]`).
fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_default),
        Value::Object(o) => o.values().all(is_default),
    }
}

/// Refuses a field of `section` berth does not support when it is set to something else than
/// a default or one of the `accepted` values (for LogConfig: its Type).
fn refuse_unsupported(
    section: &str,
    o: &Map<String, Value>,
    fields: &[(&str, &[&str])],
) -> Result<(), String> {
    for (field, accepted) in fields {
        let Some(v) = o.get(*field) else { continue };
        let shown = match v {
            Value::String(s) => s.clone(),
            Value::Object(m) if *field == "LogConfig" => {
                let mut m = m.clone();
                let typ = m.remove("Type").unwrap_or_default();
                if !m.values().all(is_default) {
                    return Err(format!("berth does not support {section}.{field}.Config"));
                }
                typ.as_str().unwrap_or_default().to_string()
            }
            other => other.to_string(),
        };
        if !is_default(v) && !accepted.contains(&shown.as_str()) && !shown.is_empty() {
            return Err(format!("berth does not support {section}.{field}"));
        }
    }
    Ok(())
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{what} must be a list of strings")),
        // Docker takes a lone string for Cmd and Entrypoint.
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(_) => Err(format!("{what} must be a list of strings")),
    }
}

/// HostConfig.Devices: `[{PathOnHost, PathInContainer, CgroupPermissions}]`; the runtime
/// checks the paths and permissions.
fn devices(v: Option<&Value>) -> Result<Vec<capi::DeviceMapping>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("HostConfig.Devices must be a list of objects".into()),
    };
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            let what = |field: &str| format!("HostConfig.Devices[{i}].{field}");
            let Value::Object(d) = d else {
                return Err(format!("HostConfig.Devices[{i}] must be an object"));
            };
            Ok(capi::DeviceMapping {
                path_on_host: string(d.get("PathOnHost"), &what("PathOnHost"))?,
                path_in_container: string(d.get("PathInContainer"), &what("PathInContainer"))?,
                cgroup_permissions: string(d.get("CgroupPermissions"), &what("CgroupPermissions"))?,
            })
        })
        .collect()
}

fn string(v: Option<&Value>, what: &str) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{what} must be a string")),
    }
}

fn boolean(v: Option<&Value>, what: &str) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("{what} must be true or false")),
    }
}

fn integer(v: Option<&Value>, what: &str) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("{what} must be an integer")),
        Some(_) => Err(format!("{what} must be an integer")),
    }
}

fn object<'a>(v: Option<&'a Value>, what: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("{what} must be an object")),
    }
}

/// `{"K": "V"}` maps (Labels).
fn string_map(
    v: Option<&Value>,
    what: &str,
) -> Result<std::collections::HashMap<String, String>, String> {
    let Some(o) = object(v, what)? else {
        return Ok(Default::default());
    };
    o.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!("{what} values must be strings")),
        })
        .collect()
}

/// `80/tcp` → (80, "tcp").
fn port_key(k: &str, what: &str) -> Result<(u32, String), String> {
    let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
    let proto = if proto.is_empty() { "tcp" } else { proto };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {k:?} in {what}"))?;
    if proto != "tcp" && proto != "udp" {
        return Err(format!(
            "invalid port {k:?} in {what}: berth publishes tcp and udp ports"
        ));
    }
    Ok((u32::from(port), proto.to_string()))
}

/// HostConfig.PortBindings: `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`.
fn port_bindings(v: Option<&Value>) -> Result<Vec<capi::PortBinding>, String> {
    let what = "HostConfig.PortBindings";
    let mut out = Vec::new();
    let Some(o) = object(v, what)? else {
        return Ok(out);
    };
    for (k, hosts) in o {
        let (container_port, protocol) = port_key(k, what)?;
        let hosts = match hosts {
            Value::Null => vec![],
            Value::Array(a) => a.clone(),
            _ => return Err(format!("{what}[{k:?}] must be a list")),
        };
        let hosts = if hosts.is_empty() {
            vec![Value::Null]
        } else {
            hosts
        };
        for h in hosts {
            let host_ip = string(h.get("HostIp"), what)?;
            let host_port = string(h.get("HostPort"), what)?;
            let host_port = if host_port.is_empty() {
                0
            } else {
                host_port
                    .parse::<u16>()
                    .map_err(|_| format!("invalid host port {host_port:?} in {what}"))?
            };
            out.push(capi::PortBinding {
                host_ip,
                host_port: u32::from(host_port),
                container_port,
                protocol: protocol.clone(),
            });
        }
    }
    Ok(out)
}

/// HostConfig.Mounts: bind, volume and tmpfs mounts, as `-v` and `--tmpfs` entries.
fn mounts(
    v: Option<&Value>,
    binds: &mut Vec<String>,
    tmpfs: &mut Vec<String>,
) -> Result<(), String> {
    let what = "HostConfig.Mounts";
    let list = match v {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(format!("{what} must be a list")),
    };
    for m in list {
        let typ = string(m.get("Type"), what)?;
        let src = string(m.get("Source"), what)?;
        let dst = string(m.get("Target"), what)?;
        let readonly = boolean(m.get("ReadOnly"), what)?;
        let mut opts = Vec::new();
        if let Some(t) = object(m.get("TmpfsOptions"), what)? {
            let size = integer(t.get("SizeBytes"), what)?;
            if size > 0 {
                opts.push(format!("size={size}"));
            }
            let mode = integer(t.get("Mode"), what)?;
            if mode > 0 {
                opts.push(format!("mode={mode:o}"));
            }
        }
        if let Some(b) = object(m.get("BindOptions"), what)? {
            let propagation = string(b.get("Propagation"), what)?;
            if !matches!(propagation.as_str(), "" | "rprivate") {
                return Err(format!(
                    "berth does not support {what}.BindOptions.Propagation"
                ));
            }
            if boolean(b.get("NonRecursive"), what)? {
                return Err(format!(
                    "berth does not support {what}.BindOptions.NonRecursive"
                ));
            }
        }
        if let Some(vo) = object(m.get("VolumeOptions"), what)? {
            if boolean(vo.get("NoCopy"), what)? {
                return Err(format!(
                    "berth does not support {what}.VolumeOptions.NoCopy"
                ));
            }
            for field in ["Labels", "DriverConfig"] {
                let driver = vo
                    .get(field)
                    .and_then(|d| d.get("Name"))
                    .and_then(Value::as_str);
                if vo.get(field).is_some_and(|v| !is_default(v)) && driver != Some("local") {
                    return Err(format!(
                        "berth does not support {what}.VolumeOptions.{field}"
                    ));
                }
            }
        }
        let spec = mount_spec(&typ, &src, &dst, readonly, opts)
            .map_err(|why| format!("invalid mount {}: {why}", Value::clone(m)))?;
        match spec {
            MountSpec::Bind(b) => binds.push(b),
            MountSpec::Tmpfs(t) => tmpfs.push(t),
        }
    }
    Ok(())
}

/// The network a container starts on: HostConfig.NetworkMode ("default" is the default
/// bridge), which NetworkingConfig.EndpointsConfig must agree with, and the endpoint's
/// Aliases (the names the others on a user network know it by, beside its own name); other
/// endpoint settings are refused.
fn network_mode(host: &Map<String, Value>, body: &Value) -> Result<(String, Vec<String>), String> {
    let mode = string(host.get("NetworkMode"), "HostConfig.NetworkMode")?;
    let mode = if mode == "default" {
        String::new()
    } else {
        mode
    };
    let what = "NetworkingConfig.EndpointsConfig";
    let endpoints = object(body.pointer("/NetworkingConfig/EndpointsConfig"), what)?;
    let Some(endpoints) = endpoints else {
        return Ok((mode, Vec::new()));
    };
    let mut aliases = Vec::new();
    if endpoints.len() > 1 {
        let names: Vec<&str> = endpoints.keys().map(String::as_str).collect();
        return Err(format!(
            "Container cannot be connected to network endpoints: {}",
            names.join(", ")
        ));
    }
    for (name, e) in endpoints {
        let same =
            *name == mode || (mode.is_empty() && matches!(name.as_str(), "bridge" | "default"));
        if !same {
            return Err(format!(
                "{what} names network {name:?} but HostConfig.NetworkMode is {:?}",
                if mode.is_empty() { "default" } else { &mode }
            ));
        }
        let Some(e) = e.as_object() else { continue };
        aliases = strings(e.get("Aliases"), &format!("{what}.{name}.Aliases"))?;
        for (field, v) in e {
            let allowed = matches!(
                field.as_str(),
                "Aliases" | "NetworkID" | "EndpointID" | "Gateway" | "IPAddress" | "IPPrefixLen"
            );
            if !allowed && !is_default(v) {
                return Err(format!("berth does not support {what}.{name}.{field}"));
            }
        }
    }
    Ok((mode, aliases))
}

/// Docker's `POST /containers/create` body as berth's `ContainerConfig`; the error is a
/// message for a 400 answer.
pub fn container_config(body: &Value) -> Result<capi::ContainerConfig, String> {
    let Some(cfg) = body.as_object() else {
        return Err("the request body must be a JSON object".into());
    };
    let empty = Map::new();
    let host = object(cfg.get("HostConfig"), "HostConfig")?.unwrap_or(&empty);
    refuse_unsupported("Config", cfg, CONFIG_UNSUPPORTED)?;
    refuse_unsupported("HostConfig", host, HOST_CONFIG_UNSUPPORTED)?;

    let image = string(cfg.get("Image"), "Image")?;
    if image.is_empty() {
        return Err("Config.Image is required".into());
    }
    let entrypoint_value = cfg.get("Entrypoint").filter(|v| !v.is_null());
    let entrypoint: Vec<String> = strings(entrypoint_value, "Entrypoint")?
        .into_iter()
        .filter(|e| !e.is_empty())
        .collect();
    let port_bindings = port_bindings(host.get("PortBindings"))?;
    let publish_all = boolean(host.get("PublishAllPorts"), "HostConfig.PublishAllPorts")?;
    let exposed_ports = exposed_ports(cfg.get("ExposedPorts"))?;

    let mut binds = strings(host.get("Binds"), "HostConfig.Binds")?;
    let mut tmpfs: Vec<String> = match object(host.get("Tmpfs"), "HostConfig.Tmpfs")? {
        None => Vec::new(),
        Some(t) => t
            .iter()
            .map(|(dst, o)| match o.as_str() {
                Some("") | None => dst.clone(),
                Some(o) => format!("{dst}:{o}"),
            })
            .collect(),
    };
    mounts(host.get("Mounts"), &mut binds, &mut tmpfs)?;
    anonymous_volumes(cfg.get("Volumes"), &mut binds, &tmpfs)?;

    let restart = object(host.get("RestartPolicy"), "HostConfig.RestartPolicy")?;
    let restart_policy = match restart {
        Some(r) => {
            let name = string(r.get("Name"), "HostConfig.RestartPolicy.Name")?;
            let count = integer(
                r.get("MaximumRetryCount"),
                "HostConfig.RestartPolicy.MaximumRetryCount",
            )?;
            (!name.is_empty()).then(|| capi::RestartPolicy {
                name,
                maximum_retry_count: count.clamp(0, i64::from(i32::MAX)) as i32,
            })
        }
        None => None,
    };
    let stop_timeout = integer(cfg.get("StopTimeout"), "StopTimeout")?;
    let (network_mode, network_aliases) = network_mode(host, body)?;
    Ok(capi::ContainerConfig {
        image,
        cmd: strings(cfg.get("Cmd"), "Cmd")?,
        entrypoint,
        entrypoint_set: entrypoint_value.is_some(),
        env: strings(cfg.get("Env"), "Env")?,
        working_dir: string(cfg.get("WorkingDir"), "WorkingDir")?,
        user: string(cfg.get("User"), "User")?,
        hostname: string(cfg.get("Hostname"), "Hostname")?,
        tty: boolean(cfg.get("Tty"), "Tty")?,
        open_stdin: boolean(cfg.get("OpenStdin"), "OpenStdin")?,
        stdin_once: boolean(cfg.get("StdinOnce"), "StdinOnce")?,
        memory: integer(host.get("Memory"), "HostConfig.Memory")?,
        nano_cpus: nano_cpus(host)?,
        pids_limit: integer(host.get("PidsLimit"), "HostConfig.PidsLimit")?.max(0),
        network_mode,
        network_aliases,
        exposed_ports,
        labels: string_map(cfg.get("Labels"), "Labels")?,
        auto_remove: boolean(host.get("AutoRemove"), "HostConfig.AutoRemove")?,
        read_only: boolean(host.get("ReadonlyRootfs"), "HostConfig.ReadonlyRootfs")?,
        snapshotter: String::new(),
        restart_policy,
        binds,
        stop_signal: string(cfg.get("StopSignal"), "StopSignal")?,
        stop_timeout: stop_timeout.clamp(0, i64::from(i32::MAX)) as i32,
        port_bindings,
        publish_all,
        dns: strings(host.get("Dns"), "HostConfig.Dns")?,
        dns_search: strings(host.get("DnsSearch"), "HostConfig.DnsSearch")?,
        dns_options: strings(host.get("DnsOptions"), "HostConfig.DnsOptions")?,
        extra_hosts: strings(host.get("ExtraHosts"), "HostConfig.ExtraHosts")?,
        cap_add: strings(host.get("CapAdd"), "HostConfig.CapAdd")?,
        cap_drop: strings(host.get("CapDrop"), "HostConfig.CapDrop")?,
        privileged: boolean(host.get("Privileged"), "HostConfig.Privileged")?,
        devices: devices(host.get("Devices"))?,
        security_opt: strings(host.get("SecurityOpt"), "HostConfig.SecurityOpt")?,
        tmpfs,
        // The runtime's own json-file log; no --ipc/--uts/--pid/--sysctl yet.
        ..Default::default()
    })
}

/// The warnings Docker gives for a config it runs anyway (the CLI prints them, the API
/// answers them in `Warnings`).
pub fn create_warnings(config: &capi::ContainerConfig) -> Vec<String> {
    let mut w = Vec::new();
    if config.network_mode == "host" && (!config.port_bindings.is_empty() || config.publish_all) {
        w.push("Published ports are discarded when using host network mode".to_string());
    }
    w
}

/// NanoCpus, or CpuQuota/CpuPeriod as NanoCpus (Docker refuses both at once).
fn nano_cpus(host: &Map<String, Value>) -> Result<i64, String> {
    let nano = integer(host.get("NanoCpus"), "HostConfig.NanoCpus")?;
    let quota = integer(host.get("CpuQuota"), "HostConfig.CpuQuota")?;
    let period = integer(host.get("CpuPeriod"), "HostConfig.CpuPeriod")?;
    if nano != 0 && (quota != 0 || period != 0) {
        return Err("Conflicting options: Nano CPUs and CPU Period cannot both be set".into());
    }
    if quota == 0 {
        if period != 0 {
            return Err("berth does not support HostConfig.CpuPeriod without CpuQuota".into());
        }
        return Ok(nano);
    }
    let period = if period == 0 { 100_000 } else { period };
    if quota < 0 || !(1_000..=1_000_000).contains(&period) {
        return Err("CPU period must be between 1ms and 1s, and the quota positive".into());
    }
    Ok(quota * 1_000_000_000 / period)
}

/// Config.ExposedPorts (`{"80/tcp": {}}`) as `80/tcp` entries.
fn exposed_ports(v: Option<&Value>) -> Result<Vec<String>, String> {
    let Some(o) = object(v, "ExposedPorts")? else {
        return Ok(Vec::new());
    };
    o.keys()
        .map(|k| port_key(k, "ExposedPorts").map(|(port, proto)| format!("{port}/{proto}")))
        .collect()
}

/// Config.Volumes: an anonymous volume on each path that no bind, mount or tmpfs covers.
fn anonymous_volumes(
    v: Option<&Value>,
    binds: &mut Vec<String>,
    tmpfs: &[String],
) -> Result<(), String> {
    let Some(o) = object(v, "Volumes")? else {
        return Ok(());
    };
    for dst in o.keys() {
        let covered = binds
            .iter()
            .map(|b| b.split(':').nth(1).unwrap_or(b))
            .chain(tmpfs.iter().map(|t| t.split(':').next().unwrap_or(t)))
            .any(|d| d.trim_end_matches('/') == dst.trim_end_matches('/'));
        if !covered {
            binds.push(dst.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `docker create --name x busybox` (20.10) sends.
    fn cli_body() -> Value {
        json!({
            "Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
            "AttachStdout": true, "AttachStderr": true, "Tty": false, "OpenStdin": false,
            "StdinOnce": false, "Env": null, "Cmd": null, "Image": "busybox", "Volumes": {},
            "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": {},
            "HostConfig": {
                "Binds": null, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
                "NetworkMode": "default", "PortBindings": {},
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "AutoRemove": false,
                "VolumeDriver": "", "VolumesFrom": null, "CapAdd": null, "CapDrop": null,
                "CgroupnsMode": "", "Dns": [], "DnsOptions": [], "DnsSearch": [],
                "ExtraHosts": null, "GroupAdd": null, "IpcMode": "", "Cgroup": "", "Links": null,
                "OomScoreAdj": 0, "PidMode": "", "Privileged": false, "PublishAllPorts": false,
                "ReadonlyRootfs": false, "SecurityOpt": null, "UTSMode": "", "UsernsMode": "",
                "ShmSize": 0, "ConsoleSize": [0, 0], "Isolation": "", "CpuShares": 0,
                "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
                "BlkioWeightDevice": [], "CpuPeriod": 0, "CpuQuota": 0, "CpusetCpus": "",
                "Devices": [], "DeviceCgroupRules": null, "DeviceRequests": null,
                "KernelMemory": 0, "MemoryReservation": 0, "MemorySwap": 0,
                "MemorySwappiness": null, "OomKillDisable": false, "PidsLimit": null,
                "Ulimits": null, "MaskedPaths": null, "ReadonlyPaths": null
            },
            "NetworkingConfig": {"EndpointsConfig": {}}
        })
    }

    #[test]
    fn a_plain_cli_body_is_accepted_with_defaults() {
        let c = container_config(&cli_body()).unwrap();
        assert_eq!(c.image, "busybox");
        assert!(c.cmd.is_empty() && !c.entrypoint_set && c.network_mode.is_empty());
        assert_eq!(c.restart_policy.unwrap().name, "no");
        assert_eq!((c.memory, c.nano_cpus, c.pids_limit), (0, 0, 0));
    }

    #[test]
    fn supported_fields_are_mapped() {
        let mut b = cli_body();
        b["Cmd"] = json!(["sleep", "30"]);
        b["Entrypoint"] = json!([""]);
        b["Env"] = json!(["V=1"]);
        b["WorkingDir"] = json!("/tmp");
        b["User"] = json!("1000:1000");
        b["Hostname"] = json!("h");
        b["Tty"] = json!(true);
        b["OpenStdin"] = json!(true);
        b["StopSignal"] = json!("SIGINT");
        b["StopTimeout"] = json!(3);
        b["Labels"] = json!({"a": "b"});
        b["ExposedPorts"] = json!({"80/tcp": {}});
        b["Volumes"] = json!({"/data": {}, "/mnt": {}});
        let h = &mut b["HostConfig"];
        h["Memory"] = json!(33554432);
        h["PidsLimit"] = json!(8);
        h["CpuQuota"] = json!(50000);
        h["PortBindings"] = json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "53/udp": [{"HostIp": "", "HostPort": ""}]});
        h["Binds"] = json!(["/srv:/mnt:ro"]);
        h["Mounts"] = json!([{"Type": "volume", "Source": "v1", "Target": "/v"},
                              {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 65536, "Mode": 0o1777}}]);
        h["Tmpfs"] = json!({"/run": "size=1m"});
        h["RestartPolicy"] = json!({"Name": "on-failure", "MaximumRetryCount": 2});
        h["NetworkMode"] = json!("front");
        h["Dns"] = json!(["1.1.1.1"]);
        h["ExtraHosts"] = json!(["db:10.0.0.5"]);
        h["CapAdd"] = json!(["NET_ADMIN"]);
        h["SecurityOpt"] = json!(["no-new-privileges"]);
        h["ReadonlyRootfs"] = json!(true);
        h["CgroupnsMode"] = json!("host");
        h["LogConfig"] = json!({"Type": "json-file", "Config": {}});
        b["NetworkingConfig"] = json!({"EndpointsConfig": {"front": {"Aliases": ["web"]}}});
        let c = container_config(&b).unwrap();
        assert_eq!(c.network_aliases, ["web"]);
        assert_eq!(c.cmd, ["sleep", "30"]);
        assert!(c.entrypoint_set && c.entrypoint.is_empty());
        assert_eq!(
            (c.env.as_slice(), c.working_dir.as_str()),
            (&["V=1".to_string()][..], "/tmp")
        );
        assert_eq!((c.user.as_str(), c.hostname.as_str()), ("1000:1000", "h"));
        assert!(c.tty && c.open_stdin && c.read_only);
        assert_eq!((c.stop_signal.as_str(), c.stop_timeout), ("SIGINT", 3));
        assert_eq!(c.labels["a"], "b");
        assert_eq!(
            (c.memory, c.pids_limit, c.nano_cpus),
            (32 << 20, 8, 500_000_000)
        );
        assert_eq!(c.port_bindings.len(), 2);
        let p = c
            .port_bindings
            .iter()
            .find(|p| p.container_port == 80)
            .unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.protocol.as_str()),
            ("127.0.0.1", 8080, "tcp")
        );
        let p = c
            .port_bindings
            .iter()
            .find(|p| p.container_port == 53)
            .unwrap();
        assert_eq!((p.host_port, p.protocol.as_str()), (0, "udp"));
        assert_eq!(c.binds, ["/srv:/mnt:ro", "v1:/v", "/data"]);
        assert_eq!(c.tmpfs, ["/run:size=1m", "/t:size=65536,mode=1777"]);
        let r = c.restart_policy.unwrap();
        assert_eq!((r.name.as_str(), r.maximum_retry_count), ("on-failure", 2));
        assert_eq!(c.network_mode, "front");
        assert_eq!(c.dns, ["1.1.1.1"]);
        assert_eq!(c.extra_hosts, ["db:10.0.0.5"]);
        assert_eq!(c.cap_add, ["NET_ADMIN"]);
        assert_eq!(c.security_opt, ["no-new-privileges"]);
    }

    #[test]
    fn devices_are_mapped() {
        let mut body = cli_body();
        body["HostConfig"]["Devices"] = json!([
            {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z", "CgroupPermissions": "r"},
            {"PathOnHost": "/dev/null"}
        ]);
        let c = container_config(&body).unwrap();
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.devices[0].path_on_host, "/dev/zero");
        assert_eq!(c.devices[0].path_in_container, "/dev/z");
        assert_eq!(c.devices[0].cgroup_permissions, "r");
        assert_eq!(c.devices[1].path_in_container, "");
        body["HostConfig"]["Devices"] = json!([{"PathOnHost": 3}]);
        let err = container_config(&body).unwrap_err();
        assert!(err.contains("HostConfig.Devices[0].PathOnHost"), "{err}");
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        for (field, value, message) in [
            (
                "CpusetCpus",
                json!("0"),
                "berth does not support HostConfig.CpusetCpus",
            ),
            (
                "LogConfig",
                json!({"Type": "syslog"}),
                "berth does not support HostConfig.LogConfig",
            ),
            (
                "IpcMode",
                json!("host"),
                "berth does not support HostConfig.IpcMode",
            ),
            (
                "MemorySwap",
                json!(1 << 30),
                "berth does not support HostConfig.MemorySwap",
            ),
            (
                "Ulimits",
                json!([{"Name": "nofile", "Soft": 1, "Hard": 2}]),
                "berth does not support HostConfig.Ulimits",
            ),
        ] {
            let mut b = cli_body();
            b["HostConfig"][field] = value;
            assert_eq!(container_config(&b).unwrap_err(), message);
        }
        let mut b = cli_body();
        b["Healthcheck"] = json!({"Test": ["CMD", "true"]});
        assert_eq!(
            container_config(&b).unwrap_err(),
            "berth does not support Config.Healthcheck"
        );
        let mut b = cli_body();
        b["HostConfig"]["MemorySwap"] = json!(-1);
        b["HostConfig"]["MemorySwappiness"] = json!(-1);
        b["HostConfig"]["IpcMode"] = json!("private");
        b["Unknown"] = json!("ignored as Docker does");
        container_config(&b).unwrap();
        let mut b = cli_body();
        b["ExposedPorts"] = json!({"5000/tcp": {}, "53/udp": {}, "7": {}});
        assert_eq!(
            container_config(&b).unwrap().exposed_ports,
            ["5000/tcp", "53/udp", "7/tcp"]
        );
        b["ExposedPorts"] = json!({"x/tcp": {}});
        assert!(container_config(&b).unwrap_err().contains("ExposedPorts"));
    }

    #[test]
    fn bad_values_and_networks_are_refused() {
        let mut b = cli_body();
        b["HostConfig"]["Memory"] = json!("lots");
        assert_eq!(
            container_config(&b).unwrap_err(),
            "HostConfig.Memory must be an integer"
        );
        assert!(container_config(&json!([])).is_err());
        assert!(container_config(&json!({})).unwrap_err().contains("Image"));
        let mut b = cli_body();
        b["HostConfig"]["NetworkMode"] = json!("front");
        b["NetworkingConfig"] = json!({"EndpointsConfig": {"back": {}}});
        assert!(container_config(&b).is_err());
        b["NetworkingConfig"] =
            json!({"EndpointsConfig": {"front": {"IPAMConfig": {"IPv4Address": "10.0.0.9"}}}});
        assert_eq!(
            container_config(&b).unwrap_err(),
            "berth does not support NetworkingConfig.EndpointsConfig.front.IPAMConfig"
        );
        let mut b = cli_body();
        b["HostConfig"]["NanoCpus"] = json!(1_000_000_000);
        b["HostConfig"]["CpuQuota"] = json!(50000);
        assert!(container_config(&b)
            .unwrap_err()
            .starts_with("Conflicting options"));
        let mut b = cli_body();
        b["HostConfig"]["PortBindings"] = json!({"80/sctp": []});
        assert!(container_config(&b).is_err());
        b["HostConfig"]["PortBindings"] = json!({"80/tcp": [{"HostPort": "x"}]});
        assert!(container_config(&b).is_err());
    }

    #[test]
    fn mount_specs() {
        assert_eq!(
            mount_spec("bind", "/a", "/b", true, vec![]),
            Ok(MountSpec::Bind("/a:/b:ro".into()))
        );
        assert_eq!(
            mount_spec("volume", "", "/b", false, vec![]),
            Ok(MountSpec::Bind("/b".into()))
        );
        assert_eq!(
            mount_spec("tmpfs", "", "/t", true, vec!["size=1".into()]),
            Ok(MountSpec::Tmpfs("/t:size=1,ro".into()))
        );
        assert!(mount_spec("bind", "rel", "/b", false, vec![]).is_err());
        assert!(mount_spec("npipe", "", "/b", false, vec![]).is_err());
    }
}
