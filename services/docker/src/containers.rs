//! A berth container as Docker shows it: its state's name, its command, its image, its
//! networks, and the JSON of `docker inspect` / `GET /containers/{id}/json`
//! ([`container_json`]). The caller fetches what the JSON needs besides the container (the
//! image's config, the ids of its networks) and passes it in.

use crate::format;
use berth_api::containers::v1 as capi;
use std::collections::BTreeMap;

/// A container's state as Docker names it: "paused" for a running container that is paused
/// (berthd keeps it "running" with `paused` set), "created" when it never ran.
pub fn state_name(st: &capi::ContainerState) -> &str {
    match st.status.as_str() {
        "" => "created",
        "running" if st.paused => "paused",
        s => s,
    }
}

/// The command a container runs: the spec's process args, else entrypoint + cmd.
pub fn command_of(c: &capi::Container) -> Vec<String> {
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

pub fn image_shown(c: &capi::Container) -> String {
    match c.config.as_ref().map(|c| c.image.as_str()) {
        Some(i) if !i.is_empty() => i.to_string(),
        _ => berth_core::Reference::parse(&c.image)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| c.image.clone()),
    }
}

/// The networks a container is on, by name: those it joins, or the mode of a host or none
/// container (Docker lists those as networks too).
pub fn network_names(c: &capi::Container) -> Vec<String> {
    if !c.networks.is_empty() {
        return c.networks.clone();
    }
    match c.config.as_ref().map(|c| c.network_mode.as_str()) {
        Some(m @ ("host" | "none")) => vec![m.to_string()],
        _ => Vec::new(),
    }
}

/// The Docker-shaped JSON of a container; `image` is the image's config (for its defaults).
/// `network_ids` maps network names to ids, for the networks of a container that does not run.
pub fn container_json(
    c: &capi::Container,
    image: Option<&serde_json::Value>,
    network_ids: &BTreeMap<String, String>,
) -> serde_json::Value {
    use serde_json::json;
    let cfg = c.config.clone().unwrap_or_default();
    let st = c.state.clone().unwrap_or_default();
    let args = command_of(c);
    let img_cfg = image
        .and_then(|i| i.get("config"))
        .cloned()
        .unwrap_or_default();
    let mut j = json!({
        "Id": c.id,
        "Created": format::rfc3339(c.created_at.as_ref()),
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": state_json(&st),
        "Image": c.image_id,
        "LogPath": c.log_path,
        "Name": format!("/{}", c.name.trim_start_matches('/')),
        "RestartCount": st.restart_count,
        "Driver": c.snapshotter,
        "HostConfig": host_config_json(&cfg),
        "Mounts": c.mounts.iter().map(|m| json!({
            "Type": m.r#type,
            "Name": m.name,
            "Source": m.source,
            "Destination": m.destination,
            "RW": m.rw,
        })).collect::<Vec<_>>(),
        "Config": config_json(c, &cfg, &img_cfg),
        "NetworkSettings": network_settings_json(c, network_ids),
    });
    let exposed = exposed_ports(&cfg, &img_cfg);
    if !exposed.is_empty() {
        j["Config"]["ExposedPorts"] = json!(exposed);
    }
    j
}

/// A list as Docker shows an unset one: null when empty.
fn list_or_null(v: &[String]) -> serde_json::Value {
    if v.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!(v)
    }
}

/// Docker's State of a container, from its state as berthd keeps it.
fn state_json(st: &capi::ContainerState) -> serde_json::Value {
    let status = state_name(st);
    serde_json::json!({
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
    })
}

/// Docker's HostConfig: how the container was asked to run on this host.
fn host_config_json(cfg: &capi::ContainerConfig) -> serde_json::Value {
    use serde_json::{json, Value};
    let restart = cfg.restart_policy.clone().unwrap_or_default();
    let network_mode = if cfg.network_mode.is_empty() {
        "default".to_string()
    } else {
        cfg.network_mode.clone()
    };
    json!({
        "Binds": list_or_null(&cfg.binds),
        // berth keeps every container's output in a json-file log (docker-compose reads no
        // logs of a container without a log driver).
        "LogConfig": {"Type": "json-file", "Config": {}},
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
        "ExtraHosts": list_or_null(&cfg.extra_hosts),
        "CapAdd": list_or_null(&cfg.cap_add),
        "CapDrop": list_or_null(&cfg.cap_drop),
        "Privileged": cfg.privileged,
        "Devices": cfg.devices.iter().map(|d| json!({
            "PathOnHost": d.path_on_host,
            "PathInContainer": if d.path_in_container.is_empty() {
                &d.path_on_host
            } else {
                &d.path_in_container
            },
            "CgroupPermissions": if d.cgroup_permissions.is_empty() {
                "rwm"
            } else {
                &d.cgroup_permissions
            },
        })).collect::<Vec<_>>(),
        "SecurityOpt": list_or_null(&cfg.security_opt),
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
    })
}

/// Docker's Config of a container: what it runs and how, the container's own settings first
/// (its runtime spec, then its config), else the defaults of its image's config `img_cfg`.
/// ExposedPorts is left to the caller, since Docker leaves it out when there are none.
fn config_json(
    c: &capi::Container,
    cfg: &capi::ContainerConfig,
    img_cfg: &serde_json::Value,
) -> serde_json::Value {
    use serde_json::{json, Value};
    let spec: Value = serde_json::from_slice(&c.spec).unwrap_or_default();
    let img = |k: &str| img_cfg.get(k).cloned().unwrap_or(Value::Null);
    let or_image = |v: &str, k: &str| if v.is_empty() { img(k) } else { json!(v) };
    let cmd = if cfg.cmd.is_empty() {
        img("Cmd")
    } else {
        json!(cfg.cmd)
    };
    let entrypoint = if cfg.entrypoint_set {
        list_or_null(&cfg.entrypoint)
    } else {
        img("Entrypoint")
    };
    let env = spec
        .pointer("/process/env")
        .cloned()
        .unwrap_or_else(|| list_or_null(&cfg.env));
    let spec_str = |pointer: &str, otherwise: &str| {
        spec.pointer(pointer)
            .and_then(|h| h.as_str())
            .map(String::from)
            .unwrap_or_else(|| otherwise.to_string())
    };
    let mut labels: BTreeMap<String, String> = c.labels.clone().into_iter().collect();
    labels.extend(cfg.labels.clone());
    json!({
        "Hostname": spec_str("/hostname", &cfg.hostname),
        "User": or_image(&cfg.user, "User"),
        "Tty": cfg.tty,
        "OpenStdin": cfg.open_stdin,
        "StdinOnce": cfg.stdin_once,
        "Env": env,
        "Cmd": cmd,
        "Image": image_shown(c),
        "WorkingDir": spec_str("/process/cwd", &cfg.working_dir),
        "Entrypoint": entrypoint,
        "Labels": labels,
        "StopSignal": or_image(&cfg.stop_signal, "StopSignal"),
        "StopTimeout": if cfg.stop_timeout > 0 { json!(cfg.stop_timeout) } else { Value::Null },
    })
}

/// The ports a container exposes: its image's, its own (`--expose`) and every one it
/// publishes.
fn exposed_ports(
    cfg: &capi::ContainerConfig,
    img_cfg: &serde_json::Value,
) -> BTreeMap<String, serde_json::Value> {
    let mut exposed: BTreeMap<String, serde_json::Value> = img_cfg
        .get("ExposedPorts")
        .and_then(|e| e.as_object())
        .map(|e| {
            e.keys()
                .map(|k| (k.clone(), serde_json::json!({})))
                .collect()
        })
        .unwrap_or_default();
    for p in &cfg.port_bindings {
        exposed.insert(crate::ports::key(p), serde_json::json!({}));
    }
    for p in &cfg.exposed_ports {
        exposed.insert(p.clone(), serde_json::json!({}));
    }
    exposed
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

/// Whether [`container_json`] needs the ids of the container's networks: some network it
/// joins has no live endpoint (it does not run), so its id is not in the container.
pub fn needs_network_ids(c: &capi::Container) -> bool {
    let live = c.network_settings.as_ref().map(|n| &n.endpoints);
    !network_names(c)
        .iter()
        .all(|n| live.is_some_and(|l| l.iter().any(|e| e.network == *n)))
}

/// Docker's answer to a container prune: the ids removed and the bytes given back (berth
/// does not count them: 0).
pub fn container_prune_report(deleted: &[String]) -> serde_json::Value {
    serde_json::json!({ "ContainersDeleted": deleted, "SpaceReclaimed": 0 })
}
