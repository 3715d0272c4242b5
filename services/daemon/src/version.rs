//! The Version service: what this daemon is and hosts.

use berth_api::version::v1::{
    version_server::{Version, VersionServer},
    VersionRequest, VersionResponse,
};
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub struct VersionService {
    services: Vec<String>,
    root: std::path::PathBuf,
    snapshotter: String,
}

/// The Version service of a berthd hosting `services`, with its persistent `root` and the
/// `snapshotter` it unpacks images with.
pub fn serve(
    services: Vec<String>,
    root: std::path::PathBuf,
    snapshotter: String,
) -> VersionServer<VersionService> {
    VersionServer::new(VersionService {
        services,
        root,
        snapshotter,
    })
}

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Response::new(VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: option_env!("BERTH_REVISION").unwrap_or("").to_string(),
            services: self.services.clone(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            kernel,
            root: self.root.display().to_string(),
            snapshotter: self.snapshotter.clone(),
        }))
    }
}
