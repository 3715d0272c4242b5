//! The Build gRPC service, a thin shell over the [`executor`](crate::executor): it reads the
//! header (into [`BuildOptions`]) and the context tar (maybe compressed; the Dockerfile read
//! from it when the header names only its path), runs the [`Build`], streams its
//! [`Event`]s as `BuildResponse`s, and ends the stream with the [`BuildError`] it failed with
//! as a status whose code says why: InvalidArgument for a bad Dockerfile or argument, Aborted
//! for a RUN whose command failed, ResourceExhausted and DeadlineExceeded for `[limits]`, the
//! other services' own codes for what they refused, Internal for berthd's own faults only.

use crate::cache::BuildCache;
use crate::context::ContextError;
use crate::copy::CopyError;
use crate::error::{BuildError, StepError};
use crate::executor::{Build, BuildOptions, Clients, Event, Report};
use berth_api::build::v1::{
    build_request, build_response, build_server::Build as BuildRpc, BuildHeader, BuildRequest,
    BuildResponse, BuildResult, BuildStep, BuildStepDone, PruneBuildCacheRequest,
    PruneBuildCacheResponse,
};
use berth_core::config::Limits;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
pub struct BuildService {
    pub(crate) root: PathBuf,
    pub(crate) cache: BuildCache,
    pub(crate) clients: Clients,
    /// What a context or an ADD may unpack or fetch (`[limits]` of the config).
    pub(crate) limits: Limits,
}

type Out = Pin<Box<dyn futures::Stream<Item = Result<BuildResponse, Status>> + Send>>;

/// Removes a build's folder when the build ends, however it ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        // A context can be large: remove it off the async threads when there is a runtime.
        let dir = std::mem::take(&mut self.0);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(move || std::fs::remove_dir_all(&dir));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

impl BuildService {
    /// Receives the context tar into `dir/context`.
    async fn receive_context(
        &self,
        mut input: Streaming<BuildRequest>,
        dir: PathBuf,
    ) -> Result<PathBuf, Status> {
        let tar_path = dir.join("context.tar");
        let mut file = tokio::fs::File::create(&tar_path)
            .await
            .map_err(|e| Status::internal(format!("build context: {e}")))?;
        let mut total: u64 = 0;
        let max = crate::context::max_stream(&self.limits);
        while let Some(m) = input.next().await {
            if let Some(build_request::Item::Context(data)) = m?.item {
                total += data.len() as u64;
                if total > max {
                    return Err(Status::resource_exhausted(format!(
                        "the build context's tar is larger than {max} bytes, more than [limits] max_unpacked_size and max_entries in berthd's config allow"
                    )));
                }
                tokio::io::AsyncWriteExt::write_all(&mut file, &data)
                    .await
                    .map_err(|e| Status::internal(format!("build context: {e}")))?;
            }
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| Status::internal(format!("build context: {e}")))?;
        drop(file);
        let ctx = dir.join("context");
        let ctx2 = ctx.clone();
        let limits = self.limits;
        tokio::task::spawn_blocking(move || -> Result<(), ContextError> {
            std::fs::create_dir_all(&ctx2)?;
            // A compressed context (gzip, bzip2, xz, zstd: Docker's API allows them) is read
            // through its decoder; anything else as a plain tar.
            let reader: Box<dyn std::io::Read> = match crate::copy::open_archive(&tar_path)? {
                Some(r) => r,
                None => Box::new(std::fs::File::open(&tar_path)?),
            };
            crate::context::unpack(std::io::BufReader::new(reader), &ctx2, &limits)?;
            Ok(std::fs::remove_file(&tar_path)?)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(ctx)
    }
}

#[tonic::async_trait]
impl BuildRpc for BuildService {
    type BuildStream = Out;

    async fn prune(
        &self,
        req: Request<PruneBuildCacheRequest>,
    ) -> Result<Response<PruneBuildCacheResponse>, Status> {
        let ns = berth_core::grpc::namespace(&req)?;
        let mut images = self.clients.images.clone();
        crate::prune::prune(&mut images, &ns)
            .await
            .map(Response::new)
    }

    async fn build(&self, req: Request<Streaming<BuildRequest>>) -> Result<Response<Out>, Status> {
        let ns = berth_core::grpc::namespace(&req)?;
        let mut input = req.into_inner();
        let header: BuildHeader = match input.next().await {
            Some(m) => match m?.item {
                Some(build_request::Item::Header(h)) => h,
                _ => {
                    return Err(Status::invalid_argument(
                        "the first message of a build must be its header",
                    ))
                }
            },
            None => return Err(Status::invalid_argument("empty build request")),
        };
        let dir = self.root.join(format!("ctx-{}", random_hex()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
        let work = WorkDir(dir.clone());
        let context = self.receive_context(input, dir.clone()).await?;
        let mut header = header;
        if header.dockerfile.is_empty() {
            let (text, name) = dockerfile_in_context(&context, &header.dockerfile_path)?;
            header.dockerfile = text;
            if header.dockerfile_name.is_empty() {
                header.dockerfile_name = name;
            }
        }

        let (tx, rx) = mpsc::channel::<Event>(64);
        let build = Build {
            ns,
            options: build_options(header),
            context,
            work_dir: dir,
            mnt_dir: self.root.join("mnt"),
            cache: self.cache.clone(),
            clients: self.clients.clone(),
            limits: self.limits,
            report: Report::new(tx),
        };
        let (end_tx, end_rx) = oneshot::channel();
        tokio::spawn(async move {
            let _work = work;
            let _ = end_tx.send(build.run().await);
        });
        // The events while the build runs (it holds the sender), then its error if it failed.
        let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(|e| Ok(response(e)));
        let end = futures::stream::once(end_rx).filter_map(|r| match r {
            Ok(Err(e)) => Some(Err(Status::from(e))),
            _ => None,
        });
        Ok(Response::new(Box::pin(events.chain(end))))
    }
}

/// The most a Dockerfile read from the context may hold.
const MAX_DOCKERFILE: u64 = 4 << 20;

/// The Dockerfile at `path` in the unpacked `context` (default `Dockerfile`), and the name
/// messages call it by: a header without the Dockerfile's text names it in the context, as
/// Docker's API does. The path must stay inside the context, symbolic links included.
fn dockerfile_in_context(
    context: &std::path::Path,
    path: &str,
) -> Result<(String, String), Status> {
    let path = if path.is_empty() { "Dockerfile" } else { path };
    let rel = std::path::Path::new(path.trim_start_matches("./"));
    if rel.is_absolute()
        || rel.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(Status::invalid_argument(format!(
            "the Dockerfile {path:?} must be a path inside the build context"
        )));
    }
    let missing =
        || Status::invalid_argument(format!("Cannot locate specified Dockerfile: {path}"));
    let root = context
        .canonicalize()
        .map_err(|e| Status::internal(e.to_string()))?;
    let file = context.join(rel).canonicalize().map_err(|_| missing())?;
    if !file.starts_with(&root) || !file.is_file() {
        return Err(missing());
    }
    let len = file.metadata().map_err(|_| missing())?.len();
    if len > MAX_DOCKERFILE {
        return Err(Status::invalid_argument(format!(
            "the Dockerfile {path} is larger than {MAX_DOCKERFILE} bytes"
        )));
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Status::invalid_argument(format!("reading the Dockerfile {path}: {e}")))?;
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    Ok((text, name))
}

/// The header's options, with the defaults it leaves empty filled in.
fn build_options(h: BuildHeader) -> BuildOptions {
    BuildOptions {
        dockerfile: h.dockerfile,
        dockerfile_name: if h.dockerfile_name.is_empty() {
            "Dockerfile".to_string()
        } else {
            h.dockerfile_name
        },
        tags: h.tags,
        build_args: h.build_args,
        no_cache: h.no_cache,
        target: Some(h.target).filter(|t| !t.is_empty()),
        labels: h.labels.into_iter().collect(),
        snapshotter: h.snapshotter,
        network: h.network,
    }
}

fn response(e: Event) -> BuildResponse {
    let item = match e {
        Event::Step {
            number,
            total,
            instruction,
            line,
        } => build_response::Item::Step(BuildStep {
            number: number as i32,
            total: total as i32,
            instruction,
            line: line as u32,
        }),
        Event::Message(m) => build_response::Item::Message(m),
        Event::Stdout(b) => build_response::Item::Stdout(b),
        Event::Stderr(b) => build_response::Item::Stderr(b),
        Event::StepDone {
            image_id,
            cached,
            container_id,
        } => build_response::Item::Done(BuildStepDone {
            image_id,
            cached,
            container_id,
        }),
        Event::Built { image_id, tags } => {
            build_response::Item::Result(BuildResult { image_id, tags })
        }
    };
    BuildResponse { item: Some(item) }
}

impl From<BuildError> for Status {
    fn from(e: BuildError) -> Status {
        let code = match &e {
            BuildError::Step { error, .. } => step_code(error),
            BuildError::NoFrom { .. } | BuildError::NoTarget(_) => Code::InvalidArgument,
            // Passed on as the other service answered.
            BuildError::Service(s) => s.code(),
            BuildError::NoContainer
            | BuildError::Io(_)
            | BuildError::Task(_)
            | BuildError::Config(_) => Code::Internal,
        };
        match e {
            BuildError::Service(s) => s,
            e => Status::new(code, e.to_string()),
        }
    }
}

fn step_code(e: &StepError) -> Code {
    match e {
        StepError::Invalid(_) | StepError::DownloadFailed { .. } => Code::InvalidArgument,
        // The user's command ran and failed: the build stops there (the code it has always
        // had; gRPC clients and the per-code metrics may rely on it).
        StepError::CommandFailed { .. } => Code::Aborted,
        StepError::Copy { source, .. } => match source {
            CopyError::Io(_) => Code::Internal,
            CopyError::Archive(a) if a.is_limit() => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        },
        StepError::DownloadTimedOut { .. } => Code::DeadlineExceeded,
        StepError::DownloadTooLarge { .. } => Code::ResourceExhausted,
        StepError::Service(s) => s.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, error: StepError) -> Status {
        Status::from(BuildError::Step {
            dockerfile: "Dockerfile.run".into(),
            line,
            error,
        })
    }

    #[test]
    fn a_failed_run_keeps_its_message() {
        let s = at(
            2,
            StepError::CommandFailed {
                command: "/bin/sh -c echo before-failing && exit 3".into(),
                code: 3,
            },
        );
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(
            s.message(),
            "Dockerfile.run:2: The command '/bin/sh -c echo before-failing && exit 3' returned a non-zero code: 3"
        );
    }

    #[test]
    fn codes_say_why() {
        assert_eq!(
            at(1, StepError::invalid("bad")).code(),
            Code::InvalidArgument
        );
        let missing = CopyError::Missing("absent".into());
        let s = at(
            3,
            StepError::Copy {
                keyword: "COPY",
                source: missing,
            },
        );
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "Dockerfile.run:3: COPY failed: absent: no such file or directory"
        );
        let io = CopyError::Io(std::io::Error::other("disk"));
        let s = at(
            3,
            StepError::Copy {
                keyword: "ADD",
                source: io,
            },
        );
        assert_eq!(
            (s.code(), s.message()),
            (Code::Internal, "Dockerfile.run:3: ADD failed: disk")
        );
        let s = at(1, StepError::Service(Status::not_found("no such image")));
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "Dockerfile.run:1: no such image")
        );
        let s = Status::from(BuildError::NoTarget("x".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        let s = Status::from(BuildError::Io(std::io::Error::other("disk")));
        assert_eq!((s.code(), s.message()), (Code::Internal, "disk"));
    }

    #[test]
    fn another_services_status_passes_unchanged() {
        let s = Status::from(BuildError::Service(Status::unavailable("images: down")));
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "images: down"));
    }

    #[test]
    fn the_dockerfile_is_read_from_inside_the_context_only() {
        let dir = std::env::temp_dir().join(format!("berth-df-{}", random_hex()));
        std::fs::create_dir_all(dir.join("other")).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM a\n").unwrap();
        std::fs::write(dir.join("other/Dockerfile.dev"), "FROM b\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("out")).unwrap();
        let (text, name) = dockerfile_in_context(&dir, "").unwrap();
        assert_eq!((text.as_str(), name.as_str()), ("FROM a\n", "Dockerfile"));
        let (text, name) = dockerfile_in_context(&dir, "./other/Dockerfile.dev").unwrap();
        assert_eq!(
            (text.as_str(), name.as_str()),
            ("FROM b\n", "Dockerfile.dev")
        );
        for bad in ["../x", "/etc/hostname", "out", "absent"] {
            let e = dockerfile_in_context(&dir, bad).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_header_fills_the_defaults() {
        let o = build_options(BuildHeader::default());
        assert_eq!(o.dockerfile_name, "Dockerfile");
        assert_eq!(o.target, None);
        let o = build_options(BuildHeader {
            dockerfile_name: "Dockerfile.dev".into(),
            target: "base".into(),
            ..Default::default()
        });
        assert_eq!(o.dockerfile_name, "Dockerfile.dev");
        assert_eq!(o.target.as_deref(), Some("base"));
    }
}
