//! `berth volume create|ls|rm|inspect|prune`: named volumes, as Docker shows them.

use crate::client::{Context, Error};
use crate::format;
use crate::verbs::{done, each, lookup_all, parse_labels, print_deleted, print_objects};
use berth_api::volumes::v1 as vapi;
use clap::Subcommand;

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
    /// Remove unused volumes (anonymous ones, or all with -a)
    Prune {
        /// Remove all unused volumes, not just anonymous ones
        #[arg(short, long)]
        all: bool,
        /// Filter: label=K, label=K=V, label!=K, label!=K=V
        #[arg(long = "filter")]
        filter: Vec<String>,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
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
                    .list(ctx.req(vapi::ListVolumesRequest { usage: false }))
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
                Ok(berth_docker::volumes::volume_inspect(v.get_ref()))
            })
            .await;
            print_objects(objects, format.as_deref(), errors)
        }
        VolumeCommand::Prune { all, filter, force } => done(prune(ctx, all, filter, force).await),
    }
}

/// `volume prune`: Docker's question, then Docker's report.
async fn prune(ctx: &Context, all: bool, filters: Vec<String>, force: bool) -> Result<(), Error> {
    let question = if all {
        "This will remove all local volumes not used by at least one container."
    } else {
        "This will remove anonymous local volumes not used by at least one container."
    };
    if !force && !crate::stdio::confirm(question) {
        return Ok(());
    }
    let r = ctx
        .volumes()
        .prune(ctx.req(vapi::PruneVolumesRequest { all, filters }))
        .await?
        .into_inner();
    print_deleted("Volumes", &r.deleted);
    println!(
        "Total reclaimed space: {}",
        format::size(r.space_reclaimed as i64)
    );
    Ok(())
}
