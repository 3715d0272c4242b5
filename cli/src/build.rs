//! `berth build`: sends the Dockerfile and the build context (a tar, without what
//! `.dockerignore` leaves out) to the build service and prints the steps as they run.

use crate::client::{Context, Error};
use berth_api::build::v1::{build_request, build_response, BuildHeader, BuildRequest};
use berth_dockerfile::dockerignore::DockerIgnore;
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag for the image (name:tag); may be given more than once
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); relative to the current folder
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variables (K=V, or K to take it from here)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Do not use the cache
    #[arg(long)]
    pub no_cache: bool,
    /// Build up to this stage
    #[arg(long)]
    pub target: Option<String>,
    /// Set metadata on the image (K=V)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Print only the image id
    #[arg(short, long)]
    pub quiet: bool,
    /// The network of RUN steps: default (the bridge), host, none, or a network's name
    #[arg(long, default_value = "default")]
    pub network: String,
    /// The build context folder
    pub context: PathBuf,
}

/// Writes what it is given to a channel, in chunks.
struct ChunkWriter {
    tx: mpsc::Sender<BuildRequest>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(BuildRequest {
                item: Some(build_request::Item::Context(data)),
            })
            .map_err(|_| std::io::Error::other("the build service stopped reading"))
    }
}

/// Adds `dir` (relative name `rel`) and what is below it to the tar, skipping ignored paths.
fn add_tree(
    t: &mut tar::Builder<ChunkWriter>,
    root: &Path,
    rel: &str,
    ignore: &Option<DockerIgnore>,
) -> std::io::Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let name = n.to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let path = root.join(&child);
        let meta = std::fs::symlink_metadata(&path)?;
        if let Some(ig) = ignore {
            if ig.excluded(&child, meta.is_dir()) {
                if meta.is_dir() && !ig.skip_dir(&child) {
                    add_tree(t, root, &child, ignore)?;
                }
                continue;
            }
        }
        if meta.is_dir() {
            t.append_dir(&child, &path)?;
            add_tree(t, root, &child, ignore)?;
        } else if meta.is_file() || meta.file_type().is_symlink() {
            t.append_path_with_name(&path, &child)?;
        }
    }
    Ok(())
}

fn context_tar(root: PathBuf, tx: mpsc::Sender<BuildRequest>) -> std::io::Result<()> {
    let ignore = match std::fs::read_to_string(root.join(".dockerignore")) {
        Ok(text) => Some(DockerIgnore::parse(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("invalid .dockerignore: {e}"),
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut t = tar::Builder::new(ChunkWriter {
        tx,
        buf: Vec::new(),
    });
    t.follow_symlinks(false);
    add_tree(&mut t, &root, "", &ignore)?;
    let mut w = t.into_inner()?;
    w.flush()
}

fn key_value(s: &str) -> (String, String) {
    match s.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (s.to_string(), std::env::var(s).unwrap_or_default()),
    }
}

pub async fn build(ctx: &Context, a: BuildArgs) -> u8 {
    match run(ctx, a).await {
        Ok(code) => code,
        Err(e) => crate::fail(e),
    }
}

async fn run(ctx: &Context, a: BuildArgs) -> Result<u8, Error> {
    if !a.context.is_dir() {
        return Err(Error::Local(format!(
            "unable to prepare context: path {:?} not found",
            a.context.display().to_string()
        )));
    }
    let dockerfile_path = a
        .file
        .clone()
        .unwrap_or_else(|| a.context.join("Dockerfile"));
    let dockerfile = if dockerfile_path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&dockerfile_path).map_err(|e| {
            Error::Local(format!(
                "unable to prepare context: cannot read {}: {e}",
                dockerfile_path.display()
            ))
        })?
    };
    let dockerfile_name = dockerfile_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    for t in &a.tags {
        berth_core::Reference::parse(t).map_err(|e| {
            Error::Local(format!(
                "invalid argument {t:?} for \"-t, --tag\" flag: {e}"
            ))
        })?;
    }
    let header = BuildHeader {
        tags: a.tags.clone(),
        dockerfile,
        dockerfile_name,
        build_args: a.build_args.iter().map(|s| key_value(s)).collect(),
        no_cache: a.no_cache,
        target: a.target.clone().unwrap_or_default(),
        labels: a.labels.iter().map(|s| key_value(s)).collect(),
        snapshotter: String::new(),
        network: a.network.clone(),
        // The CLI sends the Dockerfile's text: it may lie outside the context (-f).
        dockerfile_path: String::new(),
    };
    let (tx, rx) = mpsc::channel::<BuildRequest>(8);
    tx.send(BuildRequest {
        item: Some(build_request::Item::Header(header)),
    })
    .await
    .map_err(|_| Error::Local("build stream closed".into()))?;
    let root = a.context.clone();
    let sender = tokio::task::spawn_blocking(move || context_tar(root, tx));
    let mut client = ctx.build();
    let call = client
        .build(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await;
    let sent = sender
        .await
        .map_err(|e| Error::Local(e.to_string()))
        .and_then(|r| r.map_err(|e| Error::Local(format!("sending the build context: {e}"))));
    let mut stream = match (call, sent) {
        (_, Err(e)) => return Err(e),
        (Err(s), _) => return Ok(build_failed(s)),
        (Ok(r), _) => r.into_inner(),
    };
    let quiet = a.quiet;
    while let Some(m) = stream.next().await {
        let item = match m {
            Ok(m) => m.item,
            Err(s) => return Ok(build_failed(s)),
        };
        match item {
            Some(build_response::Item::Step(s)) if !quiet => {
                println!(
                    "{}",
                    berth_docker::build_step(s.number, s.total, &s.instruction)
                )
            }
            Some(build_response::Item::Message(m)) if !quiet => println!("{m}"),
            Some(build_response::Item::Stdout(b)) if !quiet => {
                let mut o = std::io::stdout();
                let _ = o.write_all(&b);
                let _ = o.flush();
            }
            Some(build_response::Item::Stderr(b)) if !quiet => {
                let _ = std::io::stderr().write_all(&b);
            }
            Some(build_response::Item::Done(d)) if !quiet => {
                println!("{}", berth_docker::build_step_done(&d.image_id))
            }
            Some(build_response::Item::Result(r)) => {
                if quiet {
                    println!("{}", r.image_id);
                } else {
                    println!("{}", berth_docker::build_built(&r.image_id));
                    for t in &r.tags {
                        println!("{}", berth_docker::build_tagged(t));
                    }
                }
                return Ok(0);
            }
            _ => {}
        }
    }
    Err(Error::Local("the build ended without a result".into()))
}

/// A build that failed: exit 1 as Docker does; 125 when berthd could not be reached or
/// could not do the work itself.
fn build_failed(s: tonic::Status) -> u8 {
    use tonic::Code;
    let transport = std::error::Error::source(&s).is_some();
    match s.code() {
        Code::Unimplemented | Code::Internal => crate::fail(Error::Status(s)),
        Code::Unavailable | Code::Unknown if transport => crate::fail(Error::Status(s)),
        _ => {
            eprintln!("{}", s.message());
            1
        }
    }
}
