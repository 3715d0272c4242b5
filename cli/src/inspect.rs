//! `berth inspect`: containers and images as Docker's JSON (or through a `--format` template),
//! a container first when a name could be either, as Docker looks them up.

use crate::client::{Context, Error};
use crate::containers::{command_of, get, image_shown, network_names, state_name};
use crate::format;
use crate::template::Format;
use crate::verbs::{lookup_all, print_objects};
use berth_api::containers::v1 as capi;
use clap::Args;
use std::collections::BTreeMap;

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

/// The ports a container exposes: its image's, and every one it publishes.
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
        Ok(r) => Ok(berth_docker::image_inspect(r.get_ref())),
        Err(s) if s.code() == tonic::Code::NotFound && kind.is_none() => {
            Err(Error::Local(format!("Error: No such object: {name}")))
        }
        Err(s) => Err(s.into()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::examples::{container, networked};

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
}
