//! Image commands: pull, ls, inspect, import, rm, tag, history, prune.

use crate::client::{Context, Error};
use crate::format;
use berth_api::images::v1 as api;
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. busybox or registry:5000/app:1.0
    pub reference: String,
    /// Print only the pulled reference
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform os/arch (default linux and this host's architecture)
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Also show intermediate build images
    #[arg(short, long)]
    pub all: bool,
    /// Only show image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full ids
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove an image used by a stopped container, or an id with several names
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image: a name or an id
    pub source: String,
    /// The new name
    pub target: String,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub image: String,
    /// Only show image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Print sizes and dates in a machine-readable form
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all images no container uses, not only dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation (berth never prompts)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Pull an image
    Pull(PullArgs),
    /// Show an image's details as JSON
    Inspect {
        /// Format the output with a Go template, e.g. '{{json .RootFS.Layers}}'
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import an OCI layout archive or a `docker save` archive
    Import {
        /// The archive (tar, or tar.gz)
        file: std::path::PathBuf,
        /// Name for images the archive does not name
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove images
    #[command(alias = "remove", alias = "rmi")]
    Rm(RmArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Remove unused images
    Prune(PruneArgs),
    /// Push an image to a registry
    Push(crate::push::PushArgs),
    #[command(flatten)]
    Archive(crate::archive::ImageArchiveCommand),
}

pub async fn image(ctx: &Context, c: ImageCommand) -> Result<(), Error> {
    match c {
        ImageCommand::Ls(a) => ls(ctx, a).await,
        ImageCommand::Pull(a) => pull(ctx, a).await,
        // With a template, main sends it to inspect::inspect (which handles both).
        ImageCommand::Inspect { images, .. } => inspect(ctx, &images).await,
        ImageCommand::Import { file, name } => import(ctx, &file, name.as_deref()).await,
        ImageCommand::Rm(a) => rm(ctx, a).await,
        ImageCommand::Tag(a) => tag(ctx, a).await,
        ImageCommand::History(a) => history(ctx, a).await,
        ImageCommand::Prune(a) => prune(ctx, a).await,
        ImageCommand::Push(a) => crate::push::push(ctx, a).await,
        ImageCommand::Archive(c) => crate::archive::image(ctx, c).await,
    }
}

/// Renders pull/import progress: bars on a terminal, one line per change otherwise.
pub(crate) struct ProgressView {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
    last: HashMap<String, String>,
    quiet: bool,
}

impl ProgressView {
    pub(crate) fn new(quiet: bool) -> ProgressView {
        let tty = !quiet && std::io::stderr().is_terminal();
        ProgressView {
            bars: tty.then(|| (MultiProgress::new(), HashMap::new())),
            last: HashMap::new(),
            quiet,
        }
    }

    pub(crate) fn update(&mut self, p: &berth_api::types::v1::Progress) {
        if self.quiet {
            return;
        }
        let label = berth_docker::progress_label(&p.action);
        match &mut self.bars {
            Some((multi, bars)) => {
                let bar = bars.entry(p.id.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(p.total.max(0) as u64));
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {msg:20} {wide_bar} {bytes}/{total_bytes}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b.set_prefix(p.id.clone());
                    b
                });
                if p.total > 0 {
                    bar.set_length(p.total as u64);
                } else {
                    // Nothing to count (resolving a name): a status line, not a bar.
                    bar.set_style(
                        ProgressStyle::with_template("{prefix}: {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                bar.set_position(p.current.max(0) as u64);
                bar.set_message(label.to_string());
                if berth_docker::progress_final(&p.action) {
                    bar.finish();
                }
            }
            None => {
                if self.last.get(&p.id).map(String::as_str) != Some(label) {
                    eprintln!("{}: {label}", p.id);
                    self.last.insert(p.id.clone(), label.to_string());
                }
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some((multi, bars)) = self.bars.take() {
            for b in bars.values() {
                b.finish();
            }
            let _ = multi.clear();
        }
    }
}

pub(crate) async fn follow(
    mut stream: tonic::Streaming<api::PullResponse>,
    quiet: bool,
) -> Result<Vec<api::Image>, Error> {
    let mut view = ProgressView::new(quiet);
    let mut images = Vec::new();
    let r = loop {
        match stream.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(Error::from(e)),
            Some(Ok(m)) => match m.item {
                Some(api::pull_response::Item::Progress(p)) => view.update(&p),
                Some(api::pull_response::Item::Image(i)) => images.push(i),
                None => {}
            },
        }
    };
    view.finish();
    r.map(|()| images)
}

/// Pulls a reference; shared by `pull` and `run` of an image that is not here.
pub async fn pull_image(
    ctx: &Context,
    reference: &str,
    quiet: bool,
    platform: Option<&str>,
) -> Result<api::Image, Error> {
    let platform = berth_docker::platform(platform.unwrap_or(""));
    let stream = ctx
        .images()
        .pull(ctx.req(api::PullRequest {
            reference: reference.to_string(),
            platform,
            unpack: true,
            snapshotter: String::new(),
            // The login `berth login` stored is used.
            auth: None,
        }))
        .await?
        .into_inner();
    let images = follow(stream, quiet).await?;
    images
        .into_iter()
        .next()
        .ok_or_else(|| Error::Local(format!("the pull of {reference} ended without an image")))
}

pub async fn pull(ctx: &Context, a: PullArgs) -> Result<(), Error> {
    let image = pull_image(ctx, &a.reference, a.quiet, a.platform.as_deref()).await?;
    if !a.quiet {
        if let Some(t) = &image.target {
            eprintln!("Digest: {}", t.digest);
        }
    }
    println!("{}", image.name);
    Ok(())
}

pub async fn ls(ctx: &Context, a: LsArgs) -> Result<(), Error> {
    let list = ctx
        .images()
        .list(ctx.req(api::ListImagesRequest {
            filters: vec![],
            all: a.all,
        }))
        .await?
        .into_inner();
    let id_of = |s: &api::ImageSummary| {
        let hex = s.id.trim_start_matches("sha256:").to_string();
        if a.no_trunc {
            s.id.clone()
        } else {
            hex.chars().take(12).collect()
        }
    };
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for s in &list.images {
            let id = id_of(s);
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    let mut rows = vec![vec![
        "REPOSITORY".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for s in &list.images {
        let name = s
            .image
            .as_ref()
            .map(|i| i.name.as_str())
            .unwrap_or_default();
        let (repo, tag) = berth_docker::repo_tag(name);
        let created = s
            .created
            .as_ref()
            .map(|t| format::ago(t.seconds))
            .unwrap_or_else(|| "N/A".into());
        rows.push(vec![repo, tag, id_of(s), created, format::size(s.size)]);
    }
    print!("{}", format::table(&rows));
    Ok(())
}

pub async fn inspect(ctx: &Context, names: &[String]) -> Result<(), Error> {
    let mut out = Vec::new();
    let mut err = None;
    for n in names {
        match ctx
            .images()
            .inspect(ctx.req(api::InspectImageRequest { name: n.clone() }))
            .await
        {
            Ok(r) => out.push(berth_docker::image_inspect(r.get_ref())),
            Err(e) => err = Some(Error::from(e)),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    err.map_or(Ok(()), Err)
}

pub async fn import(
    ctx: &Context,
    file: &std::path::Path,
    name: Option<&str>,
) -> Result<(), Error> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| Error::Local(format!("cannot open {}: {e}", file.display())))?;
    for i in crate::archive::import_from(ctx, f, name.unwrap_or_default(), false).await? {
        println!("{}", i.name);
    }
    Ok(())
}

pub async fn rm(ctx: &Context, a: RmArgs) -> Result<(), Error> {
    let mut err = None;
    for n in &a.images {
        match ctx
            .images()
            .delete(ctx.req(api::DeleteImageRequest {
                name: n.clone(),
                force: a.force,
            }))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                for u in &r.untagged {
                    println!("Untagged: {u}");
                }
                for d in &r.deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(e) => {
                let e = Error::from(e);
                eprintln!("berth: {e}");
                err = Some(e);
            }
        }
    }
    err.map_or(Ok(()), Err)
}

pub async fn tag(ctx: &Context, a: TagArgs) -> Result<(), Error> {
    ctx.images()
        .tag(ctx.req(api::TagImageRequest {
            source: a.source,
            target: a.target,
        }))
        .await?;
    Ok(())
}

pub async fn history(ctx: &Context, a: HistoryArgs) -> Result<(), Error> {
    let entries = ctx
        .images()
        .history(ctx.req(api::HistoryRequest {
            name: a.image.clone(),
        }))
        .await?
        .into_inner()
        .entries;
    let id = |e: &api::HistoryEntry| {
        if e.id.starts_with("sha256:") && !a.no_trunc {
            e.id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect()
        } else {
            e.id.clone()
        }
    };
    if a.quiet {
        for e in &entries {
            println!("{}", id(e));
        }
        return Ok(());
    }
    let mut rows = vec![vec![
        "IMAGE".to_string(),
        "CREATED".into(),
        "CREATED BY".into(),
        "SIZE".into(),
        "COMMENT".into(),
    ]];
    for e in &entries {
        let created = match (&e.created, a.human) {
            (Some(t), true) => format::ago(t.seconds),
            (Some(t), false) => chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default(),
            (None, _) => "N/A".into(),
        };
        let created_by = if a.no_trunc {
            e.created_by.clone()
        } else {
            truncate(&e.created_by.replace('\t', " "), 45)
        };
        let size = if a.human {
            format::size(e.size)
        } else {
            e.size.to_string()
        };
        rows.push(vec![id(e), created, created_by, size, e.comment.clone()]);
    }
    print!("{}", format::table(&rows));
    Ok(())
}

/// Docker's truncation: at most `n` characters, the last one an ellipsis.
fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('…');
    t
}

pub async fn prune(ctx: &Context, a: PruneArgs) -> Result<(), Error> {
    let r = ctx
        .images()
        .prune(ctx.req(api::PruneImagesRequest { all: a.all }))
        .await?
        .into_inner();
    print_pruned(&r);
    println!("Total reclaimed space: {}", format::size(r.space_reclaimed));
    Ok(())
}

/// Docker's "Deleted Images:" section of a prune report (nothing when nothing went).
pub fn print_pruned(r: &api::PruneImagesResponse) {
    if !r.untagged.is_empty() || !r.deleted.is_empty() {
        println!("Deleted Images:");
        for u in &r.untagged {
            println!("untagged: {u}");
        }
        for d in &r.deleted {
            println!("deleted: {d}");
        }
        println!();
    }
}
