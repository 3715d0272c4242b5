//! `berth info`, `berth system df|prune|events|info` and `berth builder prune`: the engine as
//! a whole, as Docker shows it. The figures and shapes are berth-docker's (the gateway's
//! `/info` and `/system/df` answer from the same functions).

use crate::client::{Context, Error};
use crate::format;
use crate::verbs::print_deleted;
use berth_api::containers::v1 as capi;
use berth_api::images::v1 as iapi;
use berth_api::networks::v1 as napi;
use berth_api::version::v1 as verapi;
use berth_api::volumes::v1 as vapi;
use berth_docker::system as ds;
use berth_docker::usage::human_size;
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show docker disk usage
    Df {
        /// Show detailed information on space usage
        #[arg(short, long)]
        verbose: bool,
    },
    /// Remove unused data
    Prune(PruneArgs),
    /// Get real time events from the server
    Events(crate::events::EventsArgs),
    /// Display system-wide information
    Info,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused images not just dangling ones (and all build cache)
    #[arg(short, long)]
    pub all: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    pub volumes: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune {
        /// Remove all unused build cache, not just dangling ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs a `system` subcommand.
pub async fn system(ctx: &Context, c: SystemCommand) -> Result<(), Error> {
    match c {
        SystemCommand::Df { verbose } => df(ctx, verbose).await,
        SystemCommand::Prune(a) => prune(ctx, a).await,
        SystemCommand::Events(a) => crate::events::events(ctx, a).await,
        SystemCommand::Info => info(ctx).await,
    }
}

/// Runs a `builder` subcommand.
pub async fn builder(ctx: &Context, c: BuilderCommand) -> Result<(), Error> {
    let BuilderCommand::Prune { all, force } = c;
    let what = if all {
        "This will remove all build cache."
    } else {
        "This will remove all dangling build cache."
    };
    if !force && !crate::stdio::confirm(what) {
        return Ok(());
    }
    let (deleted, reclaimed) = prune_build_cache(ctx, all).await?;
    if !deleted.is_empty() {
        println!("Deleted build cache objects:");
        for d in &deleted {
            println!("{d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(())
}

/// The build service's prune of the build cache no container uses (its intermediate images).
/// Gives the removed ids and the bytes they held.
async fn prune_build_cache(ctx: &Context, all: bool) -> Result<(Vec<String>, u64), Error> {
    let r = ctx
        .build()
        .prune(ctx.req(berth_api::build::v1::PruneBuildCacheRequest { all }))
        .await?
        .into_inner();
    Ok((r.caches_deleted, r.space_reclaimed))
}

/// `system prune`: stopped containers, unused networks, dangling (or all unused) images,
/// anonymous volumes when asked, the build cache; Docker's report.
async fn prune(ctx: &Context, a: PruneArgs) -> Result<(), Error> {
    let mut warning = String::from(
        "This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
    );
    if a.volumes {
        warning.push_str("  - all anonymous volumes not used by at least one container\n");
    }
    warning.push_str(if a.all {
        "  - all images without at least one container associated to them\n  - all build cache\n"
    } else {
        "  - all dangling images\n  - all dangling build cache\n"
    });
    if !a.force && !crate::stdio::confirm(&warning) {
        return Ok(());
    }
    let containers = ctx
        .containers()
        .prune(ctx.req(capi::PruneContainersRequest {}))
        .await?
        .into_inner();
    print_deleted("Containers", &containers.deleted);
    let networks = ctx
        .networks()
        .prune(ctx.req(napi::PruneNetworksRequest {}))
        .await?
        .into_inner();
    print_deleted("Networks", &networks.deleted);
    let mut reclaimed = 0u64;
    if a.volumes {
        let v = ctx
            .volumes()
            .prune(ctx.req(vapi::PruneVolumesRequest {
                all: false,
                filters: vec![],
            }))
            .await?
            .into_inner();
        print_deleted("Volumes", &v.deleted);
        reclaimed += v.space_reclaimed;
    }
    let images = ctx
        .images()
        .prune(ctx.req(iapi::PruneImagesRequest { all: a.all }))
        .await?
        .into_inner();
    crate::images::print_pruned(&images);
    reclaimed += images.space_reclaimed.max(0) as u64;
    let (cache, cache_bytes) = prune_build_cache(ctx, a.all).await?;
    print_deleted("build cache objects", &cache);
    reclaimed += cache_bytes;
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(())
}

async fn image_entries(ctx: &Context) -> Result<Vec<Value>, Error> {
    let images = ctx
        .images()
        .max_decoding_message_size(64 << 20)
        .list(ctx.req(iapi::ListImagesRequest {
            filters: vec![],
            all: false,
        }))
        .await?
        .into_inner()
        .images;
    Ok(berth_docker::image_list(&images))
}

async fn containers(ctx: &Context) -> Result<Vec<capi::Container>, Error> {
    Ok(ctx
        .containers()
        .list(ctx.req(capi::ListContainersRequest {}))
        .await?
        .into_inner()
        .containers)
}

/// `berth info`: the client's lines, then Docker's `Server:` text.
pub async fn info(ctx: &Context) -> Result<(), Error> {
    let v = ctx
        .version()
        .version(ctx.req(verapi::VersionRequest {}))
        .await?
        .into_inner();
    let containers = containers(ctx).await?;
    let state = |c: &capi::Container| c.state.clone().unwrap_or_default();
    let figures = ds::InfoFigures {
        containers: containers.len(),
        running: containers
            .iter()
            .filter(|c| state(c).status == "running")
            .count(),
        paused: containers.iter().filter(|c| state(c).paused).count(),
        images: image_entries(ctx).await?.len(),
        root: v.root,
        snapshotter: v.snapshotter,
        server_version: v.version,
    };
    print!(
        "Client:\n Version: {}\n Debug Mode: false\n\n{}",
        env!("CARGO_PKG_VERSION"),
        ds::info_text(&ds::info_json(&figures))
    );
    Ok(())
}

/// `berth system df [-v]`.
async fn df(ctx: &Context, verbose: bool) -> Result<(), Error> {
    let volumes = ctx
        .volumes()
        .list(ctx.req(vapi::ListVolumesRequest { usage: true }))
        .await?
        .into_inner()
        .volumes;
    let containers = containers(ctx).await?;
    let ids = containers.iter().map(|c| c.id.clone()).collect();
    let sizes = ctx
        .containers()
        .sizes(ctx.req(capi::ContainerSizesRequest { ids }))
        .await?
        .into_inner()
        .sizes;
    let df = ds::df_json(image_entries(ctx).await?, &containers, &sizes, &volumes);
    if !verbose {
        print!("{}", format::table(&ds::df_rows(&df)));
        return Ok(());
    }
    print!("{}", df_verbose(&df));
    Ok(())
}

/// `system df -v`: Docker's four sections.
fn df_verbose(df: &Value) -> String {
    let arr = |k: &str| df[k].as_array().cloned().unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let n = |v: &Value| v.as_i64().unwrap_or(0).max(0) as u64;
    let short = |id: &str| {
        id.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
    let mut images = vec![[
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "SIZE",
        "SHARED SIZE",
        "UNIQUE SIZE",
        "CONTAINERS",
    ]
    .map(String::from)
    .to_vec()];
    for i in arr("Images") {
        let tags: Vec<String> = i["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let first = tags
            .first()
            .cloned()
            .unwrap_or_else(|| "<none>:<none>".into());
        let (repo, tag) = first.rsplit_once(':').unwrap_or((&first, "<none>"));
        images.push(vec![
            repo.to_string(),
            tag.to_string(),
            short(&s(&i["Id"])),
            format::ago(i["Created"].as_i64().unwrap_or(0)),
            human_size(n(&i["Size"])),
            human_size(n(&i["SharedSize"])),
            human_size(n(&i["Size"])),
            n(&i["Containers"]).to_string(),
        ]);
    }
    let mut containers = vec![[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "LOCAL VOLUMES",
        "SIZE",
        "CREATED",
        "STATUS",
        "NAMES",
    ]
    .map(String::from)
    .to_vec()];
    for c in arr("Containers") {
        containers.push(vec![
            short(&s(&c["Id"])),
            s(&c["Image"]),
            format!("{:?}", format::ellipsis(&s(&c["Command"]), 20)),
            "0".into(),
            human_size(n(&c["SizeRw"])),
            format::ago(c["Created"].as_i64().unwrap_or(0)),
            s(&c["State"]),
            s(&c["Names"][0]).trim_start_matches('/').to_string(),
        ]);
    }
    let mut volumes = vec![["VOLUME NAME", "LINKS", "SIZE"].map(String::from).to_vec()];
    for v in arr("Volumes") {
        volumes.push(vec![
            s(&v["Name"]),
            n(&v["UsageData"]["RefCount"]).to_string(),
            human_size(n(&v["UsageData"]["Size"])),
        ]);
    }
    format!(
        "Images space usage:\n\n{}\nContainers space usage:\n\n{}\nLocal Volumes space usage:\n\n{}\nBuild cache usage: 0B\n\n{}",
        format::table(&images),
        format::table(&containers),
        format::table(&volumes),
        format::table(&[["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "SHARED"]
            .map(String::from)
            .to_vec()]),
    )
}
