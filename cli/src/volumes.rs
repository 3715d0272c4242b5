//! `berth volume create|ls|rm|inspect`: named volumes, as Docker shows them.

use crate::client::Context;
use crate::format;
use crate::verbs::{done, each, lookup_all, parse_labels, print_objects};
use berth_api::volumes::v1 as vapi;
use clap::Subcommand;
use std::collections::BTreeMap;

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
