//! The Build gRPC service: reads the header and the context tar, then runs the
//! [`executor`](crate::executor) and streams what it reports.

use crate::cache::BuildCache;
use crate::context::ContextError;
use crate::executor::{Build, Clients, Report};
use berth_api::build::v1::{
    build_request, build_server::Build as BuildRpc, BuildHeader, BuildRequest, BuildResponse,
};
use berth_core::config::Limits;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

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
            let f = std::fs::File::open(&tar_path)?;
            crate::context::unpack(std::io::BufReader::new(f), &ctx2, &limits)?;
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

        let (tx, rx) = mpsc::channel::<Result<BuildResponse, Status>>(64);
        let build = Build {
            ns,
            header,
            context,
            work_dir: dir,
            mnt_dir: self.root.join("mnt"),
            cache: self.cache.clone(),
            clients: self.clients.clone(),
            limits: self.limits,
            report: Report::new(tx.clone()),
        };
        tokio::spawn(async move {
            let _work = work;
            let r = build.run().await;
            if let Err(s) = r {
                let _ = tx.send(Err(s)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
