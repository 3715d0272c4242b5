//! `berth network create|ls|rm|inspect|connect|disconnect|prune`, with Docker's output.

use crate::client::{Context, Error};
use crate::template::ListFormat;
use crate::verbs::{done, lookup_all, parse_labels, print_deleted, print_objects};
use berth_api::networks::v1 as napi;
use clap::{Args, Subcommand};
#[cfg(test)]
use serde_json::json;
use serde_json::Value;
#[cfg(test)]
use std::net::Ipv4Addr;

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the network
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format (e.g. 10.77.0.0/24; default: a free one)
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway of the subnet (default: its first address)
    #[arg(long)]
    pub gateway: Option<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Set metadata on the network (K=V)
    #[arg(long = "label")]
    pub label: Vec<String>,
    /// The network's name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Filter: dangling=true|false, driver=…, id=…, label=…, name=…, scope=…, type=custom|builtin
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    #[command(flatten)]
    pub output: ListFormat,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm {
        /// Networks by name or id
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Display detailed information on one or more networks as JSON
    Inspect {
        /// Format the output with a Go template
        #[arg(short, long)]
        format: Option<String>,
        /// Networks by name or id
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Connect a container to a network (now if it runs, and whenever it starts)
    Connect {
        /// Add a network-scoped alias for the container (its peers reach it by this name)
        #[arg(long = "alias")]
        alias: Vec<String>,
        /// The network's name or id
        network: String,
        /// The container's name or id
        container: String,
    },
    /// Disconnect a container from a network
    Disconnect {
        /// Force the container to disconnect from a network
        #[arg(short, long)]
        force: bool,
        /// The network's name or id
        network: String,
        /// The container's name or id
        container: String,
    },
    /// Remove all unused networks
    Prune {
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs a network subcommand; gives the exit code.
pub async fn network(ctx: &Context, c: NetworkCommand) -> u8 {
    match c {
        NetworkCommand::Create(a) => done(create(ctx, a).await),
        NetworkCommand::Ls(a) => done(ls(ctx, a).await),
        NetworkCommand::Rm { networks } => rm(ctx, &networks).await,
        NetworkCommand::Inspect { format, networks } => {
            inspect(ctx, format.as_deref(), &networks).await
        }
        NetworkCommand::Connect {
            alias,
            network,
            container,
        } => done(
            async {
                ctx.networks()
                    .attach(ctx.req(napi::ConnectRequest {
                        network,
                        container,
                        aliases: alias,
                    }))
                    .await?;
                Ok(())
            }
            .await,
        ),
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => done(
            async {
                ctx.networks()
                    .detach(ctx.req(napi::DisconnectRequest {
                        network,
                        container,
                        force,
                    }))
                    .await?;
                Ok(())
            }
            .await,
        ),
        NetworkCommand::Prune { force } => done(prune(ctx, force).await),
    }
}

#[cfg(test)]
use berth_docker::networks::parse_subnet;

/// The create request, its subnet and gateway checked as Docker checks them.
pub fn create_request(a: &CreateArgs) -> Result<napi::CreateNetworkRequest, String> {
    berth_docker::networks::check_subnet_gateway(a.subnet.as_deref(), a.gateway.as_deref())?;
    Ok(napi::CreateNetworkRequest {
        name: a.name.clone(),
        driver: a.driver.clone(),
        subnet: a.subnet.clone().unwrap_or_default(),
        gateway: a.gateway.clone().unwrap_or_default(),
        internal: a.internal,
        labels: parse_labels(&a.label).into_iter().collect(),
        conflist: String::new(),
    })
}

async fn create(ctx: &Context, a: CreateArgs) -> Result<(), Error> {
    let req = create_request(&a).map_err(Error::Local)?;
    let n = ctx.networks().create(ctx.req(req)).await?.into_inner();
    println!("{}", n.id);
    Ok(())
}

/// `network ls` filters: which networks to keep (Docker's, in berth-docker).
pub fn filter(filters: &[String]) -> Result<impl Fn(&napi::Network) -> bool, String> {
    berth_docker::networks::network_filter(filters)
}

/// One network as `network ls --format` sees it (Docker's field names).
fn ls_json(n: &napi::Network, output: &ListFormat) -> Value {
    berth_docker::networks::network_row(n, &output.id(&n.id))
}

const LS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("IPv6", "IPV6"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
    ("CreatedAt", "CREATED"),
];

async fn ls(ctx: &Context, a: LsArgs) -> Result<(), Error> {
    let keep = filter(&a.filter).map_err(Error::Local)?;
    let mut list = ctx
        .networks()
        .list(ctx.req(napi::ListNetworksRequest {}))
        .await?
        .into_inner()
        .networks;
    if berth_docker::networks::needs_containers(&a.filter) {
        for n in &mut list {
            let name = n.id.clone();
            *n = ctx
                .networks()
                .get(ctx.req(napi::GetNetworkRequest { name }))
                .await?
                .into_inner();
        }
    }
    list.retain(|n| keep(n));
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let objects: Vec<Value> = list.iter().map(|n| ls_json(n, &a.output)).collect();
    let table = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";
    a.output.print(table, LS_COLUMNS, &objects)
}

/// Removes each network, printing its name; every failure is reported, exit 1 if any.
async fn rm(ctx: &Context, names: &[String]) -> u8 {
    let mut code = 0;
    for n in names {
        match ctx
            .networks()
            .remove(ctx.req(napi::RemoveNetworkRequest { name: n.clone() }))
            .await
        {
            Ok(_) => println!("{n}"),
            Err(e) => {
                crate::fail(e.into());
                code = 1;
            }
        }
    }
    code
}

/// Docker's `network inspect` object.
pub fn inspect_json(n: &napi::Network) -> Value {
    berth_docker::networks::network_inspect(n)
}

async fn inspect(ctx: &Context, format: Option<&str>, names: &[String]) -> u8 {
    let (objects, errors) = lookup_all(names, |name| async move {
        match ctx
            .networks()
            .get(ctx.req(napi::GetNetworkRequest { name: name.clone() }))
            .await
        {
            Ok(n) => Ok(inspect_json(n.get_ref())),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Err(Error::Local(format!("Error: No such network: {name}")))
            }
            Err(s) => Err(s.into()),
        }
    })
    .await;
    match print_objects(objects, format, errors) {
        0 => 0,
        _ => 1,
    }
}

async fn prune(ctx: &Context, force: bool) -> Result<(), Error> {
    if !force
        && !crate::stdio::confirm(
            "This will remove all custom networks not used by at least one container.",
        )
    {
        return Ok(());
    }
    let r = ctx
        .networks()
        .prune(ctx.req(napi::PruneNetworksRequest {}))
        .await?
        .into_inner();
    print_deleted("Networks", &r.deleted);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, driver: &str) -> napi::Network {
        napi::Network {
            id: format!("{:x<64}", name),
            name: name.into(),
            driver: driver.into(),
            scope: "local".into(),
            ..Default::default()
        }
    }

    fn args(subnet: Option<&str>, gateway: Option<&str>) -> CreateArgs {
        CreateArgs {
            driver: "bridge".into(),
            subnet: subnet.map(String::from),
            gateway: gateway.map(String::from),
            internal: true,
            label: vec!["a=1".into(), "b".into()],
            name: "front".into(),
        }
    }

    #[test]
    fn create_checks_subnet_and_gateway() {
        let r = create_request(&args(Some("10.77.0.0/24"), Some("10.77.0.254"))).unwrap();
        assert_eq!(r.subnet, "10.77.0.0/24");
        assert_eq!(r.gateway, "10.77.0.254");
        assert!(r.internal);
        assert_eq!(r.labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(r.labels.get("b").map(String::as_str), Some(""));
        assert!(create_request(&args(None, None)).is_ok());
        assert!(create_request(&args(None, Some("10.0.0.1")))
            .unwrap_err()
            .contains("corresponding subnet"));
        assert!(
            create_request(&args(Some("10.77.0.0/24"), Some("10.78.0.1")))
                .unwrap_err()
                .contains("no matching subnet")
        );
        assert!(create_request(&args(Some("10.77.0.0/24"), Some("x"))).is_err());
        for bad in [
            "10.77.0.0",
            "10.77.0/24",
            "10.77.0.0/33",
            "fd00::/64",
            "x/8",
        ] {
            assert!(create_request(&args(Some(bad), None)).is_err(), "{bad}");
        }
        assert!(parse_subnet("fd00::/64").unwrap_err().contains("IPv6"));
        assert_eq!(
            parse_subnet("0.0.0.0/0").unwrap(),
            (Ipv4Addr::new(0, 0, 0, 0), 0)
        );
    }

    #[test]
    fn ls_filters() {
        let mut front = net("front", "bridge");
        front.labels.insert("tier".into(), "web".into());
        let bridge = net("bridge", "bridge");
        let host = net("host", "host");
        let f = |fs: &[&str]| {
            let keep = filter(&fs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            [&front, &bridge, &host]
                .into_iter()
                .filter(|n| keep(n))
                .map(|n| n.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(f(&[]), ["front", "bridge", "host"]);
        assert_eq!(f(&["driver=bridge"]), ["front", "bridge"]);
        assert_eq!(f(&["type=custom"]), ["front"]);
        assert_eq!(f(&["type=builtin", "driver=host"]), ["host"]);
        assert_eq!(f(&["label=tier"]), ["front"]);
        assert_eq!(f(&["label=tier=db"]), Vec::<String>::new());
        assert_eq!(f(&["name=o", "name=ho"]), ["front", "host"]);
        assert_eq!(f(&["id=hostx"]), ["host"]);
        assert!(filter(&["type=other".into()]).is_err());
        assert!(filter(&["colour=red".into()]).is_err());
        assert!(filter(&["nonsense".into()]).is_err());
    }

    #[test]
    fn ls_table_like_docker() {
        let objects: Vec<Value> = [net("front", "bridge"), net("none", "null")]
            .iter()
            .map(|n| ls_json(n, &ListFormat::default()))
            .collect();
        let out = crate::template::list(
            "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
            LS_COLUMNS,
            &objects,
        )
        .unwrap();
        assert_eq!(
            out,
            "NETWORK ID     NAME    DRIVER   SCOPE\n\
             frontxxxxxxx   front   bridge   local\n\
             nonexxxxxxxx   none    null     local\n"
        );
        let quiet = ListFormat {
            quiet: true,
            ..Default::default()
        };
        let ids = quiet.render("table", LS_COLUMNS, &objects).unwrap();
        assert_eq!(ids, "frontxxxxxxx\nnonexxxxxxxx\n");
        let names = ListFormat {
            format: Some("{{.Name}}\\t{{.Driver}}".into()),
            ..Default::default()
        };
        assert_eq!(
            names.render("table", LS_COLUMNS, &objects).unwrap(),
            "front\tbridge\nnone\tnull\n"
        );
        let full = ListFormat {
            no_trunc: true,
            ..Default::default()
        };
        assert_eq!(
            ls_json(&net("front", "bridge"), &full)["ID"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }

    #[test]
    fn inspect_is_docker_shaped() {
        let mut n = net("front", "bridge");
        n.subnet = "10.77.0.0/24".into();
        n.gateway = "10.77.0.1".into();
        n.bridge = "br-0123456789ab".into();
        n.created_at = Some(berth_api::prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        });
        n.containers.push(napi::NetworkContainer {
            id: "c0ffee".into(),
            name: "web".into(),
            namespace: "default".into(),
            ip_address: "10.77.0.2/24".into(),
            mac_address: "02:42:0a:4d:00:02".into(),
        });
        let j = inspect_json(&n);
        assert_eq!(j["Name"], "front");
        assert_eq!(j["Created"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(
            j["IPAM"],
            json!({"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.1"}]})
        );
        assert_eq!(
            j["Containers"]["c0ffee"],
            json!({"Name": "web", "EndpointID": "", "MacAddress": "02:42:0a:4d:00:02",
                   "IPv4Address": "10.77.0.2/24", "IPv6Address": ""})
        );
        assert_eq!(
            j["Options"],
            json!({"com.docker.network.bridge.name": "br-0123456789ab"})
        );
        assert_eq!(j["Labels"], json!({}));
        assert_eq!(j["EnableIPv6"], false);
        assert_eq!(j["ConfigFrom"], json!({"Network": ""}));
        let host = inspect_json(&net("host", "host"));
        assert_eq!(host["IPAM"]["Config"], json!([]));
        assert_eq!(host["Options"], json!({}));
        let t = crate::template::Format::parse(
            "{{range .IPAM.Config}}{{.Subnet}}{{end}} {{range .Containers}}{{.IPv4Address}}{{end}}",
        )
        .unwrap();
        assert_eq!(t.render(&j).unwrap(), "10.77.0.0/24 10.77.0.2/24");
    }
}
