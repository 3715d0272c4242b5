//! berth-registry-proxy: the one component of berth that talks HTTP to image registries.
//!
//! Other services resolve references and fetch content through its gRPC service,
//! `berth.registry.v1.Registry`; they never hold a registry client themselves.
//!
//! - [`client::RegistryClient`]: the distribution API (`/v2/…`) of one registry host:
//!   [`resolve`](client::RegistryClient::resolve) a reference to its manifest
//!   [`Descriptor`](client::Descriptor) (HEAD, then GET), and
//!   [`fetch`](client::RegistryClient::fetch) a manifest or blob as a stream. It tries the
//!   host's mirrors first, then the registry (plain HTTP or unverified HTTPS for insecure
//!   registries), and answers `401` challenges with Bearer tokens or Basic credentials.
//! - [`credentials::CredentialStore`]: where credentials come from; today
//!   [`credentials::DockerConfig`], Docker's `config.json`.
//! - [`verify`]: checks content against its digest and size while it streams.
//! - [`service::RegistryService`]: one client per host, and the gRPC shell; errors become
//!   status codes a caller can act on ([`error::Error::code`]).
//!
//! berthd adds the service to its router:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = berth_core::config::Config::load(None)?;
//! let registry = berth_registry_proxy::serve(&config)?;
//! tonic::transport::Server::builder()
//!     .add_service(registry)
//!     .serve("127.0.0.1:7000".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod client;
pub mod credentials;
pub mod error;
pub mod service;
pub mod verify;

pub use berth_api::registry::v1::registry_server::RegistryServer;
pub use client::{Descriptor, Kind, RegistryClient};
pub use credentials::{Credential, CredentialStore, DockerConfig};
pub use error::Error;
pub use service::RegistryService;

use std::sync::Arc;

/// The Registry gRPC service under berthd's config, with credentials from Docker's
/// `config.json` (`$DOCKER_CONFIG`, else `~/.docker`).
pub fn serve(
    config: &berth_core::config::Config,
) -> Result<RegistryServer<RegistryService>, Error> {
    serve_with(config, Arc::new(DockerConfig::from_env()))
}

/// The Registry gRPC service with credentials from `credentials`.
pub fn serve_with(
    config: &berth_core::config::Config,
    credentials: Arc<dyn CredentialStore>,
) -> Result<RegistryServer<RegistryService>, Error> {
    Ok(RegistryServer::new(RegistryService::new(
        config,
        credentials,
    )?))
}
