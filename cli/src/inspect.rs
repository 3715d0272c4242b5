//! `berth inspect`: containers and images as Docker's JSON (or through a `--format` template),
//! a container first when a name could be either, as Docker looks them up.

use crate::client::{Context, Error};
use crate::containers::get;
use crate::template::Format;
use crate::verbs::{lookup_all, print_objects};
use berth_docker::containers::{container_json, needs_network_ids};
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
                let ids = if needs_network_ids(&c) {
                    network_ids(ctx).await
                } else {
                    BTreeMap::new()
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
    use berth_api::containers::v1 as capi;

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
